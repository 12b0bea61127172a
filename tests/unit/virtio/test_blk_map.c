/* The virtio-blk backend of VHDX and VHD images (blk_disk.c over
 * blk_uring.c) against a plain in-memory model: random reads, writes,
 * discards, write-zeroes (with and without unmap) and flushes, several in
 * flight at once, across block boundaries and (VHDX) a sector-bitmap
 * page boundary, on the top of a differencing chain three deep whose
 * lower images hold data in whole and partial blocks. Every read is
 * checked as it completes; at the end the image is closed, checked clean
 * and read back whole through the disk library, so metadata the backend
 * did not commit shows as a difference.
 *
 * CLOISON_SEED=n repeats a run (the seed is printed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "disk/disk.h"
#include "vmm/virtio/blk.h"

#define SECTOR 512
#define INFLIGHT 8
#define MAX_IOV 4
#define MAX_REQ_BYTES (3 * MiB)
#define OPS 600

struct layout {
	enum disk_format format;
	uint64_t size;
	uint32_t block_size;
};

struct slot {
	struct blk_req req;
	struct iovec iov[MAX_IOV];
	uint8_t status;
	uint8_t *buf;
	int err; /* 1 until completed */
};

struct fixture {
	char dir[64];
	char paths[3][96];
	struct layout lay;
	uint8_t *model;	 /* what the top image must read as */
	uint8_t *parent; /* what its parent (read-only below it) reads as */
	struct blk_backend *be;
	struct slot slots[INFLIGHT];
	unsigned completed;
	uint64_t rng;
	unsigned counts[6];
};

static uint64_t rnd(struct fixture *f)
{
	/* xorshift64*: reproducible from the printed seed */
	f->rng ^= f->rng >> 12;
	f->rng ^= f->rng << 25;
	f->rng ^= f->rng >> 27;
	return f->rng * 2685821657736338717ULL;
}

static uint64_t rnd_below(struct fixture *f, uint64_t n)
{
	return rnd(f) % n;
}

static void fill_random(struct fixture *f, uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = rnd(f);
		memcpy(p + i, &v, MIN(8, len - i));
	}
}

static void on_complete(void *owner, struct blk_req *req, int err)
{
	struct fixture *f = owner;
	struct slot *s = (struct slot *)((uint8_t *)req - offsetof(struct slot, req));

	assert_int_equal(s->err, 1);
	s->err = err;
	f->completed++;
}

/* A range of whole sectors that likes to start or end near a block
 * boundary, so requests cross them. */
static void pick_range(struct fixture *f, uint64_t max_len, uint64_t *off, uint64_t *len)
{
	uint64_t bs = f->lay.block_size, sectors = f->lay.size / SECTOR;
	uint64_t n = 1 + rnd_below(f, rnd_below(f, 4) ? 16 : max_len / SECTOR);
	uint64_t s;

	if (rnd_below(f, 2)) {
		uint64_t b = 1 + rnd_below(f, f->lay.size / bs - 1);
		s = b * bs / SECTOR - rnd_below(f, MIN(n, 8) + 1);
	} else {
		s = rnd_below(f, sectors);
	}
	if (s >= sectors)
		s = sectors - 1;
	n = MIN(n, sectors - s);
	*off = s * SECTOR;
	*len = n * SECTOR;
}

/* Writes random data at random places through the disk library. */
static void scatter(struct fixture *f, const char *path, unsigned nwrites)
{
	struct disk_error derr = { { 0 } };
	struct disk *d;
	uint8_t *buf = malloc(MAX_REQ_BYTES);

	assert_non_null(buf);
	if (disk_open(path, 0, &d, &derr))
		fail_msg("disk_open(%s): %s", path, derr.msg);
	for (unsigned i = 0; i < nwrites; i++) {
		uint64_t off, len;

		pick_range(f, rnd_below(f, 3) ? 64 * 1024 : 2 * MiB, &off, &len);
		fill_random(f, buf, len);
		assert_int_equal(disk_pwrite(d, buf, len, off), 0);
	}
	assert_int_equal(disk_close(d), 0);
	free(buf);
}

static void read_all(const char *path, uint8_t *out, uint64_t size)
{
	struct disk_error derr = { { 0 } };
	struct disk *d;

	if (disk_open(path, DISK_OPEN_RDONLY, &d, &derr))
		fail_msg("disk_open(%s): %s", path, derr.msg);
	assert_int_equal(disk_pread(d, out, size, 0), 0);
	assert_int_equal(disk_close(d), 0);
}

static void make_chain(struct fixture *f)
{
	const char *ext = f->lay.format == DISK_FORMAT_VHDX ? "vhdx" : "vhd";
	struct disk_error derr = { { 0 } };

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_blk_map_XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	for (int i = 0; i < 3; i++) {
		struct disk_create_opts o = {
			.format = f->lay.format,
			.type = i ? DISK_TYPE_DIFFERENCING : DISK_TYPE_DYNAMIC,
			.size = i ? 0 : f->lay.size,
			.block_size = f->lay.block_size,
			.parent = i ? f->paths[i - 1] : NULL,
		};

		snprintf(f->paths[i], sizeof(f->paths[i]), "%s/layer%d.%s", f->dir, i, ext);
		if (disk_create(f->paths[i], &o, &derr))
			fail_msg("disk_create(%s): %s", f->paths[i], derr.msg);
		scatter(f, f->paths[i], i == 2 ? 10 : 25);
	}
	f->model = malloc(f->lay.size);
	f->parent = malloc(f->lay.size);
	assert_non_null(f->model);
	assert_non_null(f->parent);
	read_all(f->paths[2], f->model, f->lay.size);
	read_all(f->paths[1], f->parent, f->lay.size);
}

static void open_backend(struct fixture *f)
{
	struct blk_open_opts o = { .path = f->paths[2], .nqueues = 1, .queue_size = 64 };
	char err[512] = "";

	if (blk_backend_open(&o, &f->be, err, sizeof(err)))
		fail_msg("blk_backend_open(%s): %s", f->paths[2], err);
	assert_non_null(strstr(f->be->kind, "io_uring"));
	f->be->complete = on_complete;
	f->be->owner = f;
}

static bool overlaps_inflight(struct fixture *f, unsigned n, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < n; i++) {
		const struct blk_req *r = &f->slots[i].req;

		if (r->op != BLK_OP_FLUSH && off < r->offset + r->len && r->offset < off + len)
			return true;
	}
	return false;
}

/* Splits the slot's buffer into 1..MAX_IOV iovecs, not always of whole
 * sectors (the backend must cope with any guest buffer layout). */
static void split_iov(struct fixture *f, struct slot *s, uint64_t len)
{
	unsigned n = 1 + (unsigned)rnd_below(f, MAX_IOV);
	uint64_t done = 0;

	s->req.niov = 0;
	for (unsigned k = 0; k < n && done < len; k++) {
		uint64_t piece = k + 1 == n ? len - done : 1 + rnd_below(f, len - done);

		s->iov[k] = (struct iovec){ s->buf + done, (size_t)piece };
		done += piece;
		s->req.niov++;
	}
	if (done < len)
		s->iov[s->req.niov - 1].iov_len += (size_t)(len - done);
}

/* Prepares slot i with a random request that does not overlap the ones
 * before it in this batch (their order is the backend's to choose). */
static void prepare(struct fixture *f, unsigned i)
{
	struct slot *s = &f->slots[i];
	struct blk_req *r = &s->req;
	uint64_t off, len;
	unsigned kind;

	do {
		kind = (unsigned)rnd_below(f, 100);
		pick_range(f, MAX_REQ_BYTES, &off, &len);
	} while (overlaps_inflight(f, i, off, len));
	memset(r, 0, sizeof(*r));
	r->offset = off;
	r->len = len;
	r->status = &s->status;
	r->iov = s->iov;
	if (kind < 40) {
		r->op = BLK_OP_READ;
		memset(s->buf, 0xa5, len);
		split_iov(f, s, len);
	} else if (kind < 80) {
		r->op = BLK_OP_WRITE;
		fill_random(f, s->buf, len);
		split_iov(f, s, len);
	} else if (kind < 87) {
		r->op = BLK_OP_DISCARD;
	} else if (kind < 92) {
		r->op = BLK_OP_WRITE_ZEROES;
	} else if (kind < 97) {
		r->op = BLK_OP_WRITE_ZEROES_UNMAP;
	} else {
		r->op = BLK_OP_FLUSH;
		r->offset = r->len = 0;
	}
	s->err = 1;
}

/* What the request did to the model, or (a read) whether it saw it. */
static void apply(struct fixture *f, struct slot *s, unsigned seq)
{
	struct blk_req *r = &s->req;

	if (s->err)
		fail_msg("op %u (kind %d at %llu +%llu): error %s", seq, r->op,
			 (unsigned long long)r->offset, (unsigned long long)r->len,
			 strerror(-s->err));
	f->counts[r->op]++;
	switch (r->op) {
	case BLK_OP_READ:
		for (uint64_t k = 0; k < r->len; k++) {
			if (s->buf[k] != f->model[r->offset + k])
				fail_msg("op %u: read at %llu +%llu: byte %llu (disk offset %llu) "
					 "is %#x, model %#x", seq, (unsigned long long)r->offset,
					 (unsigned long long)r->len, (unsigned long long)k,
					 (unsigned long long)(r->offset + k), s->buf[k],
					 f->model[r->offset + k]);
		}
		break;
	case BLK_OP_WRITE:
		memcpy(f->model + r->offset, s->buf, r->len);
		break;
	case BLK_OP_DISCARD:
		/* a differencing disk shows its parent again where discarded */
		memcpy(f->model + r->offset, f->parent + r->offset, r->len);
		break;
	case BLK_OP_WRITE_ZEROES:
	case BLK_OP_WRITE_ZEROES_UNMAP:
		memset(f->model + r->offset, 0, r->len);
		break;
	case BLK_OP_FLUSH:
		break;
	}
}

static void wait_all(struct fixture *f, unsigned n)
{
	int efd = f->be->ops->completion_fd(f->be, 0);

	f->be->ops->flush_batch(f->be, 0);
	for (int rounds = 0; f->completed < n; rounds++) {
		struct pollfd p = { .fd = efd, .events = POLLIN };

		if (rounds > 3000)
			fail_msg("%u of %u requests still in flight after 30 s", n - f->completed, n);
		if (!f->be->ops->poll || !f->be->ops->poll(f->be, 0)) {
			if (poll(&p, 1, 10) > 0)
				f->be->ops->reap(f->be, 0);
		}
	}
}

static void run_model(struct fixture *f)
{
	unsigned seq = 0;

	while (seq < OPS) {
		unsigned n = 1 + (unsigned)rnd_below(f, INFLIGHT);

		f->completed = 0;
		for (unsigned i = 0; i < n; i++)
			prepare(f, i);
		for (unsigned i = 0; i < n; i++)
			f->be->ops->submit(f->be, 0, &f->slots[i].req);
		wait_all(f, n);
		for (unsigned i = 0; i < n; i++)
			apply(f, &f->slots[i], seq + i);
		seq += n;
	}
}

/* After close: the image's metadata is clean and says what the model
 * says, read through the library's own paths. */
static void check_persisted(struct fixture *f)
{
	struct disk_error derr = { { 0 } };
	uint8_t *got = malloc(f->lay.size);
	char report[4096] = "";
	int problems;

	assert_non_null(got);
	problems = disk_check(f->paths[2], false, report, sizeof(report), &derr);
	if (problems)
		fail_msg("check %s: %d: %s%s", f->paths[2], problems, report, derr.msg);
	read_all(f->paths[2], got, f->lay.size);
	for (uint64_t k = 0; k < f->lay.size; k++)
		if (got[k] != f->model[k])
			fail_msg("after reopening: byte %llu is %#x, model %#x",
				 (unsigned long long)k, got[k], f->model[k]);
	free(got);
}

static void run_layout(const struct layout *lay)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *env = getenv("CLOISON_SEED");
	struct blk_uring_stats st;
	uint64_t seed;

	assert_non_null(f);
	seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
	print_message("%s chain: CLOISON_SEED=%llu\n", lay->format == DISK_FORMAT_VHDX ? "VHDX" : "VHD",
		      (unsigned long long)seed);
	f->rng = seed | 1;
	f->lay = *lay;
	for (unsigned i = 0; i < INFLIGHT; i++) {
		f->slots[i].buf = malloc(MAX_REQ_BYTES);
		assert_non_null(f->slots[i].buf);
	}
	make_chain(f);
	open_backend(f);
	run_model(f);
	/* the data went through io_uring, not the library's own reads and writes */
	blk_uring_get_stats(f->be, &st);
	print_message("  %llu host I/Os through io_uring\n", (unsigned long long)st.host_ops);
	assert_true(st.host_ops > OPS / 2);
	f->be->ops->close(f->be);
	check_persisted(f);
	print_message("  reads %u writes %u discards %u zeroes %u+%u flushes %u\n", f->counts[0],
		      f->counts[1], f->counts[3], f->counts[4], f->counts[5], f->counts[2]);
	for (int i = 2; i >= 0; i--)
		unlink(f->paths[i]);
	rmdir(f->dir);
	for (unsigned i = 0; i < INFLIGHT; i++)
		free(f->slots[i].buf);
	free(f->model);
	free(f->parent);
	free(f);
}

static void test_vhdx_chain_against_model(void **state)
{
	/* 1 MiB blocks; one bitmap page covers 16 of them, so 40 MiB crosses
	 * two page boundaries */
	const struct layout lay = { DISK_FORMAT_VHDX, 40 * MiB, 1 * MiB };

	run_layout(&lay);
}

static void test_vhd_chain_against_model(void **state)
{
	const struct layout lay = { DISK_FORMAT_VHD, 12 * MiB, 256 * 1024 };

	run_layout(&lay);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vhdx_chain_against_model),
		cmocka_unit_test(test_vhd_chain_against_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
