/* Crash-consistency helper for tests/system/test_disk_crash.py.
 *
 *   disk_crash_writer write IMAGE SEED COUNT FLUSH_EVERY
 *       Opens IMAGE read-write through the disk library and does COUNT
 *       writes (4-64 KiB at 4 KiB-aligned offsets picked from SEED), each
 *       sector stamped with the write's index. After every FLUSH_EVERY
 *       writes it calls disk_flush and then prints the index of the last
 *       write covered ("F <index>") with an unbuffered write(2), so a
 *       killer knows exactly what was acknowledged as durable.
 *
 *   disk_crash_writer verify IMAGE SEED COUNT FLUSHED [--rw]
 *       Replays the same sequence and checks every 512-byte sector of the
 *       image: a sector last written by a write <= FLUSHED must hold that
 *       write's data (or zeroes if none touched it); it may instead hold
 *       any later write (> FLUSHED) that touched it; anything else is
 *       garbage. FLUSHED = -1 means nothing was acknowledged. Opens
 *       read-only unless --rw (which makes the library replay a pending
 *       log into the file). Exit 0 when consistent, 1 with the first bad
 *       sectors described, 2 for a usage or open error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/disk.h"

#define SECTOR 512u
#define ALIGN 4096u
#define MAX_LEN (64u * 1024)
#define MAGIC 0x43524153485752ULL /* "CRASHWR" */

struct write_op {
	uint64_t off;
	uint32_t len;
};

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The COUNT writes of run SEED on a disk of size bytes. */
static struct write_op *plan_writes(uint64_t seed, long count, uint64_t size)
{
	struct write_op *ops = calloc((size_t)count, sizeof(*ops));
	uint64_t st = seed, slots = size / ALIGN;

	if (!ops)
		return NULL;
	for (long i = 0; i < count; i++) {
		uint32_t len = (uint32_t)(1 + splitmix64(&st) % (MAX_LEN / ALIGN)) * ALIGN;
		uint64_t slot = splitmix64(&st) % slots;
		if ((slot + len / ALIGN) > slots)
			slot = slots - len / ALIGN;
		ops[i].off = slot * ALIGN;
		ops[i].len = len;
	}
	return ops;
}

/* Fills one sector as write idx would leave it at disk offset off. */
static void stamp_sector(uint8_t *s, uint64_t seed, long idx, uint64_t off)
{
	uint64_t st = seed ^ ((uint64_t)idx << 32) ^ off;
	uint64_t *w = (uint64_t *)(void *)s;

	w[0] = MAGIC;
	w[1] = (uint64_t)idx;
	w[2] = off;
	w[3] = seed;
	for (unsigned i = 4; i < SECTOR / 8; i++)
		w[i] = splitmix64(&st);
}

static int do_write(const char *path, uint64_t seed, long count, long flush_every)
{
	struct disk_error err = { { 0 } };
	struct write_op *ops;
	struct disk *d;
	uint8_t *buf;
	char line[64];
	int ret;

	ret = disk_open(path, 0, &d, &err);
	if (ret) {
		fprintf(stderr, "open: %s\n", err.msg);
		return 2;
	}
	ops = plan_writes(seed, count, disk_size(d));
	if (!ops || posix_memalign((void **)&buf, ALIGN, MAX_LEN)) {
		fprintf(stderr, "out of memory\n");
		return 2;
	}
	for (long i = 0; i < count; i++) {
		for (uint32_t s = 0; s < ops[i].len; s += SECTOR)
			stamp_sector(buf + s, seed, i, ops[i].off + s);
		ret = disk_pwrite(d, buf, ops[i].len, ops[i].off);
		if (ret) {
			fprintf(stderr, "write %ld: %s\n", i, strerror(-ret));
			return 1;
		}
		if ((i + 1) % flush_every == 0 || i + 1 == count) {
			ret = disk_flush(d);
			if (ret) {
				fprintf(stderr, "flush after %ld: %s\n", i, strerror(-ret));
				return 1;
			}
			int n = snprintf(line, sizeof(line), "F %ld\n", i);
			if (write(STDOUT_FILENO, line, (size_t)n) != n)
				return 1;
		}
	}
	ret = disk_close(d);
	if (ret) {
		fprintf(stderr, "close: %s\n", strerror(-ret));
		return 1;
	}
	free(buf);
	free(ops);
	return 0;
}

/* For each sector: the last write <= flushed that touched it (-1: none). */
static int32_t *last_flushed_writer(const struct write_op *ops, long flushed, uint64_t size)
{
	int32_t *last = malloc((size / SECTOR) * sizeof(*last));

	if (!last)
		return NULL;
	memset(last, 0xff, (size / SECTOR) * sizeof(*last));
	for (long i = 0; i <= flushed; i++)
		for (uint64_t s = ops[i].off / SECTOR; s < (ops[i].off + ops[i].len) / SECTOR; s++)
			last[s] = (int32_t)i;
	return last;
}

static bool touches(const struct write_op *op, uint64_t off)
{
	return off >= op->off && off < op->off + op->len;
}

/* Checks one sector; returns NULL when fine, else what is wrong. */
static const char *judge_sector(const uint8_t *got, uint64_t off, uint64_t seed, long count,
				long flushed, int32_t last, const struct write_op *ops,
				uint8_t *expect)
{
	const uint64_t *w = (const uint64_t *)(const void *)got;
	long idx;

	if (got[0] == 0 && !memcmp(got, got + 1, SECTOR - 1))
		return last < 0 ? NULL : "zeroes where a flushed write should be";
	if (w[0] != MAGIC || w[2] != off || w[3] != seed)
		return "garbage (not a stamp of this run for this sector)";
	if (w[1] >= (uint64_t)count)
		return "stamp with an impossible write index";
	idx = (long)w[1];
	stamp_sector(expect, seed, idx, off);
	if (memcmp(expect, got, SECTOR))
		return "torn sector (stamp correct, body wrong)";
	if (!touches(&ops[idx], off))
		return "data of a write that never touched this sector";
	if (idx == last)
		return NULL;
	if (idx > flushed)
		return NULL; /* an unacknowledged write that may or may not land */
	return "older data than the last flushed write (a flushed write was lost)";
}

/* Does any member of d's chain hold data in [off, off+len)? Unallocated
 * ranges read as zeroes by construction, so they need no reading. */
static bool chain_has_data(struct disk *d, uint64_t off, uint64_t len)
{
	for (struct disk *m = d; m; m = disk_parent(m)) {
		for (uint64_t pos = off; pos < off + len;) {
			bool alloc;
			uint64_t run;
			if (disk_block_status(m, pos, off + len - pos, &alloc, &run) || alloc || !run)
				return true;
			pos += run;
		}
	}
	return false;
}

static int do_verify(const char *path, uint64_t seed, long count, long flushed, bool rw)
{
	struct disk_error err = { { 0 } };
	uint8_t expect[SECTOR], *buf;
	struct write_op *ops;
	int32_t *last;
	uint64_t size, bad = 0;
	struct disk *d;
	int ret;

	ret = disk_open(path, rw ? 0 : DISK_OPEN_RDONLY, &d, &err);
	if (ret) {
		fprintf(stderr, "open: %s\n", err.msg);
		return 2;
	}
	size = disk_size(d);
	ops = plan_writes(seed, count, size);
	last = ops ? last_flushed_writer(ops, flushed, size) : NULL;
	if (!last || posix_memalign((void **)&buf, ALIGN, 1024 * 1024)) {
		fprintf(stderr, "out of memory\n");
		return 2;
	}
	for (uint64_t off = 0; off < size; off += 1024 * 1024) {
		uint64_t len = size - off < 1024 * 1024 ? size - off : 1024 * 1024;
		if (!chain_has_data(d, off, len)) {
			for (uint64_t s = off / SECTOR; s < (off + len) / SECTOR; s++)
				if (last[s] >= 0 && bad++ < 10)
					printf("sector at %llu: unallocated where write %d was flushed\n",
					       (unsigned long long)(s * SECTOR), last[s]);
			continue;
		}
		ret = disk_pread(d, buf, len, off);
		if (ret) {
			fprintf(stderr, "read at %llu: %s\n", (unsigned long long)off, strerror(-ret));
			return 1;
		}
		for (uint64_t s = 0; s < len; s += SECTOR) {
			const char *why = judge_sector(buf + s, off + s, seed, count, flushed,
						       last[(off + s) / SECTOR], ops, expect);
			if (why && bad++ < 10)
				printf("sector at %llu: %s (last flushed writer %d)\n",
				       (unsigned long long)(off + s), why, last[(off + s) / SECTOR]);
		}
	}
	ret = disk_close(d);
	if (ret)
		fprintf(stderr, "close: %s\n", strerror(-ret));
	free(buf);
	free(last);
	free(ops);
	if (bad)
		printf("%llu bad sectors\n", (unsigned long long)bad);
	return bad || ret ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc >= 6 && !strcmp(argv[1], "write"))
		return do_write(argv[2], strtoull(argv[3], NULL, 0), atol(argv[4]),
				atol(argv[5]) > 0 ? atol(argv[5]) : 1);
	if (argc >= 6 && !strcmp(argv[1], "verify"))
		return do_verify(argv[2], strtoull(argv[3], NULL, 0), atol(argv[4]), atol(argv[5]),
				 argc > 6 && !strcmp(argv[6], "--rw"));
	fprintf(stderr, "usage: disk_crash_writer write IMAGE SEED COUNT FLUSH_EVERY\n"
			"       disk_crash_writer verify IMAGE SEED COUNT FLUSHED [--rw]\n");
	return 2;
}
