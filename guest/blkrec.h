/* The blkrec record layout (docs/testguest.md, `blkrec=`): shared by the
 * test guest, which writes the records (guest/blk.c), and the host-side
 * checker of crash trials (tests/tools/disk_record_check.c), so both
 * compute the same places and contents. Header-only, freestanding.
 *
 * The disk is cut into slots of REC_SLOT bytes; record i (0 <= i < slots)
 * goes into slot (start + i * step) % slots, at a sector offset inside it,
 * 512 B to 64 KiB long, all three picked from the seed. Each of its sectors
 * holds REC_MAGIC, i, the sector's disk offset, the seed, 59 words from a
 * generator seeded by those, and a checksum of the other 63 words. The slot
 * size is not a power of two, so records straddle image blocks and sector
 * bitmap boundaries. */
#ifndef CLOISON_GUEST_BLKREC_H
#define CLOISON_GUEST_BLKREC_H

#include <stdint.h>

#define REC_SECTOR 512u
#define REC_SLOT (68u * 1024)
#define REC_MAX (64u * 1024)
#define REC_MAGIC 0x44524f4345524c43ULL /* "CLRECORD" */

struct rec_layout {
	uint64_t seed, slots, start, step;
};

static inline uint64_t rec_mix(uint64_t *st)
{
	uint64_t z = (*st += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t rec_gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

static inline void rec_layout_init(struct rec_layout *l, uint64_t seed, uint64_t capacity)
{
	l->seed = seed;
	l->slots = capacity / REC_SLOT;
	l->start = l->slots ? seed % l->slots : 0;
	l->step = l->slots * 5 / 8 | 1;
	while (l->slots > 1 && rec_gcd(l->step, l->slots) != 1)
		l->step += 2;
}

/* The slot record i lives in. */
static inline uint64_t rec_slot(const struct rec_layout *l, uint64_t i)
{
	return (l->start + i * l->step) % l->slots;
}

/* Record i's disk offset and length. */
static inline void rec_place(const struct rec_layout *l, uint64_t i, uint64_t *off,
			     uint32_t *len)
{
	uint64_t st = l->seed ^ (i * 0xd1b54a32d192ed03ULL);

	*len = (uint32_t)(1 + rec_mix(&st) % (REC_MAX / REC_SECTOR)) * REC_SECTOR;
	*off = rec_slot(l, i) * REC_SLOT +
	       rec_mix(&st) % ((REC_SLOT - *len) / REC_SECTOR + 1) * REC_SECTOR;
}

/* The sector of record i at disk offset o, into s (REC_SECTOR bytes). */
static inline void rec_sector(const struct rec_layout *l, uint64_t i, uint64_t o, uint8_t *s)
{
	uint64_t *w = (uint64_t *)(void *)s;
	uint64_t st = l->seed ^ (i << 32) ^ o, sum = 0xcbf29ce484222325ULL;

	w[0] = REC_MAGIC;
	w[1] = i;
	w[2] = o;
	w[3] = l->seed;
	for (unsigned k = 4; k < 63; k++)
		w[k] = rec_mix(&st);
	for (unsigned k = 0; k < 63; k++)
		sum = (sum ^ w[k]) * 0x100000001b3ULL;
	w[63] = sum;
}

#endif
