/* The io_uring backend of virtio-blk on a real file: requests of one
 * batch that touch adjacent sectors are merged into one host I/O, in any
 * order they come; requests of different kinds, with gaps between them,
 * or across a flush are not; a merged I/O that comes back short is sent
 * again request by request so each gets its own result; the kernel's
 * iovec limit splits a long run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm/virtio/blk.h"

#define FILE_SIZE (4u << 20)
#define MAX_REQS 512
#define IOV_PER_REQ 4

struct fixture {
	char path[64];
	int fd;
	struct blk_backend *be;
	struct blk_req reqs[MAX_REQS];
	struct iovec iov[MAX_REQS][IOV_PER_REQ];
	uint8_t status[MAX_REQS];
	int err[MAX_REQS];
	unsigned completed;
	uint8_t *bufs;
};

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 13 + off / 4096);
}

static void on_complete(void *owner, struct blk_req *req, int err)
{
	struct fixture *f = owner;
	unsigned i = (unsigned)(req - f->reqs);

	assert_true(i < MAX_REQS);
	f->err[i] = err;
	f->completed++;
}

/* backend_size: what the backend is told the disk holds (may exceed the
 * file, to make reads come back short). */
static struct fixture *open_backend(uint64_t backend_size)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct blk_open_opts o = { .nqueues = 1, .queue_size = MAX_REQS };
	uint8_t *data = malloc(FILE_SIZE);

	assert_non_null(f);
	assert_non_null(data);
	snprintf(f->path, sizeof(f->path), "/tmp/test_blk_uring_XXXXXX");
	f->fd = mkstemp(f->path);
	assert_true(f->fd >= 0);
	for (unsigned i = 0; i < FILE_SIZE; i++)
		data[i] = pattern(i);
	assert_int_equal(pwrite(f->fd, data, FILE_SIZE, 0), FILE_SIZE);
	free(data);
	o.path = f->path;
	assert_int_equal(blk_uring_open(dup(f->fd), backend_size, &o, &f->be), 0);
	f->be->complete = on_complete;
	f->be->owner = f;
	f->bufs = calloc(MAX_REQS, 4096);
	assert_non_null(f->bufs);
	return f;
}

static void close_backend(struct fixture *f)
{
	f->be->ops->close(f->be);
	close(f->fd);
	unlink(f->path);
	free(f->bufs);
	free(f);
}

/* Request i: op on [off, off + 4096) into buffer i, split into niov
 * pieces (1 to IOV_PER_REQ) so merged iovec arrays are really joined. */
static void submit(struct fixture *f, unsigned i, enum blk_op op, uint64_t off, unsigned niov)
{
	struct blk_req *r = &f->reqs[i];
	uint8_t *buf = f->bufs + (size_t)i * 4096;
	size_t piece = 4096 / niov;

	memset(r, 0, sizeof(*r));
	r->op = op;
	r->offset = off;
	r->len = op == BLK_OP_FLUSH ? 0 : 4096;
	r->iov = f->iov[i];
	r->niov = op == BLK_OP_FLUSH ? 0 : niov;
	r->status = &f->status[i];
	for (unsigned k = 0; k < niov; k++)
		f->iov[i][k] = (struct iovec){ buf + k * piece, k + 1 == niov ? 4096 - k * piece : piece };
	f->err[i] = 1; /* not completed */
	f->be->ops->submit(f->be, 0, r);
}

static void finish(struct fixture *f)
{
	f->be->ops->flush_batch(f->be, 0);
	f->be->ops->drain(f->be);
}

static void assert_buf_holds(struct fixture *f, unsigned i, uint64_t off)
{
	const uint8_t *buf = f->bufs + (size_t)i * 4096;

	for (unsigned k = 0; k < 4096; k++) {
		if (buf[k] != pattern(off + k))
			fail_msg("request %u: byte %u is %u, want %u", i, k, buf[k],
				 pattern(off + k));
	}
}

static struct blk_uring_stats stats(struct fixture *f)
{
	struct blk_uring_stats s;

	blk_uring_get_stats(f->be, &s);
	return s;
}

static void test_adjacent_reads_merge_in_any_order(void **state)
{
	struct fixture *f = open_backend(FILE_SIZE);
	static const unsigned order[16] = { 7, 3, 15, 0, 9, 1, 12, 5, 2, 14, 8, 11, 4, 10, 6, 13 };
	struct blk_uring_stats s;

	(void)state;
	for (unsigned k = 0; k < 16; k++)
		submit(f, k, BLK_OP_READ, 65536 + order[k] * 4096ULL, 1 + k % IOV_PER_REQ);
	finish(f);
	assert_int_equal(f->completed, 16);
	for (unsigned k = 0; k < 16; k++) {
		assert_int_equal(f->err[k], 0);
		assert_buf_holds(f, k, 65536 + order[k] * 4096ULL);
	}
	s = stats(f);
	assert_int_equal(s.host_ops, 1);
	assert_int_equal(s.merged_ops, 1);
	assert_int_equal(s.merged_reqs, 16);
	assert_int_equal(s.merge_retries, 0);
	close_backend(f);
}

static void test_gaps_kinds_and_flush_split_runs(void **state)
{
	struct fixture *f = open_backend(FILE_SIZE);
	uint8_t check[4096];
	struct blk_uring_stats s;

	(void)state;
	/* Writes at 0..3 and reads at 4..7 (adjacent, but not one kind),
	 * then a flush, then writes at 8, 9 and (a gap) 11. */
	for (unsigned k = 0; k < 4; k++) {
		memset(f->bufs + k * 4096, 0xc0 + k, 4096);
		submit(f, k, BLK_OP_WRITE, k * 4096ULL, 2);
	}
	for (unsigned k = 4; k < 8; k++)
		submit(f, k, BLK_OP_READ, k * 4096ULL, 1);
	submit(f, 8, BLK_OP_FLUSH, 0, 1);
	for (unsigned k = 9; k < 12; k++) {
		memset(f->bufs + k * 4096, 0xd0 + k, 4096);
		submit(f, k, BLK_OP_WRITE, (k == 11 ? 11 : k - 1) * 4096ULL, 4);
	}
	finish(f);
	assert_int_equal(f->completed, 12);
	for (unsigned k = 0; k < 12; k++)
		assert_int_equal(f->err[k], 0);
	for (unsigned k = 4; k < 8; k++)
		assert_buf_holds(f, k, k * 4096ULL);
	for (unsigned k = 0; k < 4; k++) {
		assert_int_equal(pread(f->fd, check, 4096, k * 4096), 4096);
		for (unsigned b = 0; b < 4096; b++)
			assert_int_equal(check[b], 0xc0 + k);
	}
	for (unsigned k = 9; k < 12; k++) {
		assert_int_equal(pread(f->fd, check, 4096, (k == 11 ? 11 : k - 1) * 4096), 4096);
		for (unsigned b = 0; b < 4096; b++)
			assert_int_equal(check[b], 0xd0 + k);
	}
	/* Sector 10 lies in the gap and is untouched. */
	assert_int_equal(pread(f->fd, check, 4096, 10 * 4096), 4096);
	for (unsigned b = 0; b < 4096; b++)
		assert_int_equal(check[b], pattern(10 * 4096 + b));
	/* writes 0-3, reads 4-7, flush, writes 8-9, write 11. */
	s = stats(f);
	assert_int_equal(s.host_ops, 5);
	assert_int_equal(s.merged_ops, 3);
	assert_int_equal(s.merged_reqs, 10);
	close_backend(f);
}

static void test_short_merged_read_is_retried_alone(void **state)
{
	/* The backend believes the disk is 64 KiB longer than the file: a
	 * merged read across the end comes back short. */
	struct fixture *f = open_backend(FILE_SIZE + 65536);
	struct blk_uring_stats s;

	(void)state;
	for (unsigned k = 0; k < 8; k++)
		submit(f, k, BLK_OP_READ, FILE_SIZE - 4 * 4096 + k * 4096ULL, 2);
	finish(f);
	assert_int_equal(f->completed, 8);
	for (unsigned k = 0; k < 4; k++) {
		assert_int_equal(f->err[k], 0);
		assert_buf_holds(f, k, FILE_SIZE - 4 * 4096 + k * 4096ULL);
	}
	for (unsigned k = 4; k < 8; k++)
		assert_int_equal(f->err[k], -EIO);
	s = stats(f);
	assert_int_equal(s.merged_ops, 1);
	assert_int_equal(s.merge_retries, 1);
	assert_int_equal(s.host_ops, 1 + 8);
	close_backend(f);
}

static void test_iovec_limit_splits_a_run(void **state)
{
	/* 300 adjacent requests of 4 iovecs each: 1200 iovecs, more than
	 * one readv may carry (1024). */
	struct fixture *f = open_backend(FILE_SIZE);
	struct blk_uring_stats s;

	(void)state;
	for (unsigned k = 0; k < 300; k++)
		submit(f, k, BLK_OP_READ, k * 4096ULL, IOV_PER_REQ);
	finish(f);
	assert_int_equal(f->completed, 300);
	for (unsigned k = 0; k < 300; k++) {
		assert_int_equal(f->err[k], 0);
		assert_buf_holds(f, k, k * 4096ULL);
	}
	s = stats(f);
	assert_int_equal(s.host_ops, 2);
	assert_int_equal(s.merged_ops, 2);
	assert_int_equal(s.merged_reqs, 300);
	close_backend(f);
}

/* The io_uring fds this process holds (anon_inode:[io_uring]). */
static unsigned uring_fds(int *fds, unsigned max)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) && n < max) {
		char link[300], target[64] = "";

		snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
		if (readlink(link, target, sizeof(target) - 1) > 0 &&
		    !strcmp(target, "anon_inode:[io_uring]"))
			fds[n++] = atoi(e->d_name);
	}
	closedir(d);
	return n;
}

/* The backend's rings carry restrictions (so io_uring cannot open files
 * or sockets behind seccomp's back): once a ring is restricted, every
 * io_uring_register call not on its list, here a probe, is refused. A
 * ring made here without restrictions answers the same probe. */
static void test_rings_are_restricted(void **state)
{
	struct io_uring_params p = { 0 };
	struct io_uring_probe *probe = calloc(1, sizeof(*probe) + 256 * sizeof(probe->ops[0]));
	int before[16], after[16], plain;
	unsigned nb = uring_fds(before, 16), na, found = 0;
	struct fixture *f;

	assert_non_null(probe);
	plain = (int)syscall(__NR_io_uring_setup, 4, &p);
	assert_true(plain >= 0);
	assert_int_equal(syscall(__NR_io_uring_register, plain, IORING_REGISTER_PROBE, probe, 256), 0);
	close(plain);

	f = open_backend(FILE_SIZE);
	na = uring_fds(after, 16);
	for (unsigned i = 0; i < na; i++) {
		bool old = false;

		for (unsigned k = 0; k < nb; k++)
			old |= before[k] == after[i];
		if (old)
			continue;
		found++;
		memset(probe, 0, sizeof(*probe) + 256 * sizeof(probe->ops[0]));
		errno = 0;
		assert_int_equal(syscall(__NR_io_uring_register, after[i], IORING_REGISTER_PROBE, probe,
					 256), -1);
		assert_int_equal(errno, EACCES);
	}
	assert_true(found >= 1);
	/* and the restricted ring still does its work */
	submit(f, 0, BLK_OP_READ, 8192, 1);
	finish(f);
	assert_int_equal(f->err[0], 0);
	assert_buf_holds(f, 0, 8192);
	close_backend(f);
	free(probe);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_adjacent_reads_merge_in_any_order),
		cmocka_unit_test(test_gaps_kinds_and_flush_split_runs),
		cmocka_unit_test(test_short_merged_read_is_retried_alone),
		cmocka_unit_test(test_iovec_limit_splits_a_run),
		cmocka_unit_test(test_rings_are_restricted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
