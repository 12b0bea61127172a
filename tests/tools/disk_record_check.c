/* The host-side reader for the test guest's blkrec= records
 * (docs/testguest.md, guest/blk.c), for tests/system/test_disk_crash_guest.py.
 *
 *   disk_record_check IMAGE SEED FLUSHED [--base BASE]
 *
 * Opens IMAGE read-only through the disk library (a pending VHDX log is
 * replayed in memory) and reads the whole disk. Every sector of a record
 * below FLUSHED (the n of the last RESULT flushed=n the guest printed) must
 * hold exactly what the guest wrote; a later record may hold its data, the
 * old content, or a mix of the two sector by sector (a write cut short);
 * every sector outside the records must hold the old content. The old
 * content is zeroes, or what BASE (opened read-only, e.g. the parent of a
 * differencing disk) holds at the same offset. Prints one summary line;
 * exit 0 when all holds, 1 with the first bad sectors described, 2 for a
 * usage or open error. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blkrec.h" /* guest/: the records' layout, as the guest writes them */
#include "disk/disk.h"

#define SECTOR REC_SECTOR
#define MAX_REPORTS 10

struct tally {
	uint64_t flushed, intact_flushed, intact_later, torn, untouched, bad;
};

static void report(struct tally *t, const char *what, uint64_t rec, uint64_t off, const uint8_t *s)
{
	const uint64_t *w = (const void *)s;

	if (t->bad++ < MAX_REPORTS)
		fprintf(stderr,
			"disk_record_check: %s: record %lld, sector at byte %llu holds magic %#llx "
			"record %lld offset %llu\n",
			what, (long long)rec, (unsigned long long)off, (unsigned long long)w[0],
			(long long)w[1], (unsigned long long)w[2]);
}

/* Checks one slot's bytes (img) against the old content (old) and the
 * record that lives there. */
static void check_slot(const struct rec_layout *l, struct tally *t, uint64_t slot,
		       uint64_t rec, const uint8_t *img, const uint8_t *old)
{
	uint64_t base = slot * REC_SLOT, off;
	uint32_t len;
	uint8_t want[SECTOR];
	unsigned fresh = 0, stale = 0;

	rec_place(l, rec, &off, &len);
	for (uint32_t s = 0; s < REC_SLOT; s += SECTOR) {
		uint64_t o = base + s;
		bool in_rec = o >= off && o < off + len;

		if (in_rec) {
			rec_sector(l, rec, o, want);
			if (!memcmp(img + s, want, SECTOR)) {
				fresh++;
				continue;
			}
		}
		if (!memcmp(img + s, old + s, SECTOR)) {
			stale += in_rec;
			continue;
		}
		report(t, in_rec ? "neither the record nor the old data" : "garbage outside the records",
		       rec, o, img + s);
	}
	if (rec < t->flushed) {
		if (stale)
			report(t, "flushed record lost", rec, off, img + (off - base));
		else
			t->intact_flushed++;
	} else if (!stale) {
		t->intact_later++;
	} else if (fresh) {
		t->torn++;
	} else {
		t->untouched++;
	}
}

static int read_all(struct disk *d, uint8_t *buf, size_t len, uint64_t off, uint64_t size)
{
	size_t have = off >= size ? 0 : (size_t)(size - off < len ? size - off : len);

	memset(buf + have, 0, len - have);
	return have ? disk_pread(d, buf, have, off) : 0;
}

static int open_ro(const char *path, struct disk **d)
{
	struct disk_error err;
	int ret = disk_open(path, DISK_OPEN_RDONLY, d, &err);

	if (ret)
		fprintf(stderr, "disk_record_check: %s\n", err.msg);
	return ret;
}

static int check_disk(struct disk *d, struct disk *base, uint64_t seed, struct tally *t)
{
	uint64_t size = disk_size(d), bsize = base ? disk_size(base) : 0;
	struct rec_layout l;
	uint64_t *rec_of = NULL;
	uint8_t *img = malloc(REC_SLOT), *old = calloc(1, REC_SLOT);
	int ret = -ENOMEM;

	rec_layout_init(&l, seed, size);
	if (t->flushed > l.slots) {
		fprintf(stderr, "disk_record_check: FLUSHED %llu is more than the %llu records\n",
			(unsigned long long)t->flushed, (unsigned long long)l.slots);
		ret = -EINVAL;
		goto out;
	}
	rec_of = calloc(l.slots ? l.slots : 1, sizeof(*rec_of));
	if (!img || !old || !rec_of)
		goto out;
	for (uint64_t i = 0; i < l.slots; i++)
		rec_of[rec_slot(&l, i)] = i;
	for (uint64_t slot = 0; slot < l.slots; slot++) {
		ret = disk_pread(d, img, REC_SLOT, slot * REC_SLOT);
		if (!ret && base)
			ret = read_all(base, old, REC_SLOT, slot * REC_SLOT, bsize);
		if (ret) {
			fprintf(stderr, "disk_record_check: read at %llu: %s\n",
				(unsigned long long)(slot * REC_SLOT), strerror(-ret));
			goto out;
		}
		check_slot(&l, t, slot, rec_of[slot], img, old);
	}
	ret = 0;
out:
	free(rec_of);
	free(old);
	free(img);
	return ret;
}

int main(int argc, char **argv)
{
	struct disk *d = NULL, *base = NULL;
	struct tally t = { 0 };
	uint64_t seed;
	int ret;

	if (argc != 4 && !(argc == 6 && !strcmp(argv[4], "--base"))) {
		fprintf(stderr, "usage: disk_record_check IMAGE SEED FLUSHED [--base BASE]\n");
		return 2;
	}
	seed = strtoull(argv[2], NULL, 0);
	t.flushed = strtoull(argv[3], NULL, 0);
	if (open_ro(argv[1], &d) || (argc == 6 && open_ro(argv[5], &base))) {
		if (d)
			disk_close(d);
		return 2;
	}
	ret = check_disk(d, base, seed, &t);
	if (base)
		disk_close(base);
	disk_close(d);
	if (ret)
		return 2;
	printf("records below %llu intact: %llu; later: %llu intact, %llu torn, %llu untouched; "
	       "problems: %llu\n",
	       (unsigned long long)t.flushed, (unsigned long long)t.intact_flushed,
	       (unsigned long long)t.intact_later, (unsigned long long)t.torn,
	       (unsigned long long)t.untouched, (unsigned long long)t.bad);
	return t.bad ? 1 : 0;
}
