/* The host's own io_uring figure on a file: the ceiling virtio-blk is
 * measured against (bench/disk_io.py compiles and runs this).
 *
 *   uring_ceiling FILE randread|randwrite|read|write BLOCK QD SECONDS [direct]
 *
 * Keeps QD requests of BLOCK bytes in flight for SECONDS (random offsets
 * aligned to BLOCK for rand*, sequential wrapping otherwise) and prints one
 * line: `ops=N bytes=N seconds=F iops=F mbps=F`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

int main(int argc, char **argv)
{
	struct io_uring ring;
	struct stat st;
	uint64_t bs, qd, blocks, seq = 0, seed = 0x9e3779b97f4a7c15ULL, ops = 0;
	double secs, t0, t;
	int fd, write, rnd, direct;
	char **bufs;

	if (argc < 6) {
		fprintf(stderr, "usage: %s FILE randread|randwrite|read|write BLOCK QD SECONDS [direct]\n",
			argv[0]);
		return 2;
	}
	write = strstr(argv[2], "write") != NULL;
	rnd = !strncmp(argv[2], "rand", 4);
	bs = strtoull(argv[3], NULL, 0);
	qd = strtoull(argv[4], NULL, 0);
	secs = atof(argv[5]);
	direct = argc > 6 && !strcmp(argv[6], "direct");
	fd = open(argv[1], (write ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0));
	if (fd < 0 || fstat(fd, &st) < 0 || bs == 0 || qd == 0 || qd > 256) {
		fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	blocks = (uint64_t)st.st_size / bs;
	if (!blocks || io_uring_queue_init((unsigned)qd, &ring, 0) < 0) {
		fprintf(stderr, "%s: too small, or no io_uring\n", argv[1]);
		return 1;
	}
	bufs = calloc(qd, sizeof(*bufs));
	for (uint64_t i = 0; i < qd; i++) {
		if (posix_memalign((void **)&bufs[i], 4096, bs))
			return 1;
		memset(bufs[i], 0x5a, bs);
	}
	t0 = now();
	for (uint64_t i = 0; i < qd; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		uint64_t blk = rnd ? rng_next(&seed) % blocks : seq++ % blocks;

		if (write)
			io_uring_prep_write(sqe, fd, bufs[i], (unsigned)bs, blk * bs);
		else
			io_uring_prep_read(sqe, fd, bufs[i], (unsigned)bs, blk * bs);
		io_uring_sqe_set_data(sqe, (void *)(uintptr_t)i);
	}
	io_uring_submit(&ring);
	for (;;) {
		struct io_uring_cqe *cqe;
		uint64_t i, blk;
		struct io_uring_sqe *sqe;

		if (io_uring_wait_cqe(&ring, &cqe) < 0)
			return 1;
		if (cqe->res != (int)bs) {
			fprintf(stderr, "I/O failed: %s\n", strerror(-cqe->res));
			return 1;
		}
		i = (uint64_t)(uintptr_t)io_uring_cqe_get_data(cqe);
		io_uring_cqe_seen(&ring, cqe);
		ops++;
		t = now();
		if (t - t0 >= secs)
			break;
		sqe = io_uring_get_sqe(&ring);
		blk = rnd ? rng_next(&seed) % blocks : seq++ % blocks;
		if (write)
			io_uring_prep_write(sqe, fd, bufs[i], (unsigned)bs, blk * bs);
		else
			io_uring_prep_read(sqe, fd, bufs[i], (unsigned)bs, blk * bs);
		io_uring_sqe_set_data(sqe, (void *)(uintptr_t)i);
		io_uring_submit(&ring);
	}
	t = now() - t0;
	printf("ops=%llu bytes=%llu seconds=%.3f iops=%.0f mbps=%.1f\n", (unsigned long long)ops,
	       (unsigned long long)(ops * bs), t, ops / t, ops * bs / t / 1e6);
	return 0;
}
