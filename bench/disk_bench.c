/* disk_bench: the disk library's side of bench/disk_lib.py, doing what
 * `qemu-img bench` does so the two can be compared request for request:
 *
 *   disk_bench [-w] [-c COUNT] [-d DEPTH] [-s BUFSIZE] [-S STEP] [-o OFFSET]
 *              [--pattern BYTE] [--raw] [--direct] IMAGE
 *
 * COUNT requests (default 75000) of BUFSIZE bytes (default 4096) at
 * offsets OFFSET, OFFSET+STEP, ... wrapped modulo the image size (qemu-img
 * 7.2's rule; STEP defaults to BUFSIZE), reads unless -w. DEPTH requests
 * are in flight at once (default 64, qemu-img's default): DEPTH threads
 * each take the next request number, since the library's calls are
 * synchronous. Each queue slot (thread) has its own buffer, filled before
 * the clock starts, as qemu-img bench gives each of its DEPTH requests its
 * own part of one DEPTH*BUFSIZE allocation. Threads are started before the clock
 * starts (a barrier releases them). Like qemu-img bench, the time ends when
 * the last request completes; the final disk_flush of a write run happens
 * after that (qemu-img flushes when it closes the image) and is printed
 * separately.
 * Written data is BYTE (default 0, qemu-img bench's default --pattern).
 * --raw opens IMAGE as raw without probing; --direct uses O_DIRECT.
 * Prints "Run completed in S seconds." like qemu-img bench, then
 * "ops/s N MiB/s M". */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "disk/disk.h"

struct bench {
	struct disk *d;
	bool write;
	uint64_t count, bufsize, step, offset, size;
	atomic_uint_fast64_t next;
	atomic_int error;
	pthread_barrier_t ready, start;
	uint8_t *buf; /* depth * bufsize bytes: slot i uses buf + i * bufsize */
	atomic_uint slots;
};

static uint64_t request_offset(const struct bench *b, uint64_t i)
{
	return (uint64_t)(((unsigned __int128)i * b->step + b->offset) % b->size);
}

static void *worker(void *arg)
{
	struct bench *b = arg;
	uint8_t *buf = b->buf + (uint64_t)atomic_fetch_add(&b->slots, 1) * b->bufsize;

	pthread_barrier_wait(&b->ready);
	pthread_barrier_wait(&b->start);
	for (;;) {
		uint64_t i = atomic_fetch_add(&b->next, 1);
		int ret;
		if (i >= b->count || atomic_load(&b->error))
			break;
		if (b->write)
			ret = disk_pwrite(b->d, buf, b->bufsize, request_offset(b, i));
		else
			ret = disk_pread(b->d, buf, b->bufsize, request_offset(b, i));
		if (ret) {
			atomic_store(&b->error, ret);
			break;
		}
	}
	return NULL;
}

static int parse_num(const char *s, uint64_t *out)
{
	return parse_size(s, 1, out);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "raw", no_argument, NULL, 'R' },
		{ "direct", no_argument, NULL, 'D' },
		{ "pattern", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench b = { .count = 75000, .bufsize = 4096 };
	struct disk_error err = { { 0 } };
	unsigned flags = 0;
	uint64_t depth = 64, pattern = 0, t0, t1, t2;
	pthread_t *th;
	int c, ret;

	while ((c = getopt_long(argc, argv, "wc:d:s:S:o:", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'w': b.write = true; break;
		case 'c': bad = parse_num(optarg, &b.count); break;
		case 'd': bad = parse_num(optarg, &depth); break;
		case 's': bad = parse_num(optarg, &b.bufsize); break;
		case 'S': bad = parse_num(optarg, &b.step); break;
		case 'o': bad = parse_num(optarg, &b.offset); break;
		case 'R': flags |= DISK_OPEN_FORMAT_RAW; break;
		case 'D': flags |= DISK_OPEN_DIRECT; break;
		case 'P': bad = parse_num(optarg, &pattern) || pattern > 255; break;
		default: bad = 1;
		}
		if (bad)
			goto usage;
	}
	if (optind != argc - 1 || !depth || !b.bufsize || depth > 1024)
		goto usage;
	if (!b.step)
		b.step = b.bufsize;
	ret = disk_open(argv[optind], flags | (b.write ? 0 : DISK_OPEN_RDONLY), &b.d, &err);
	if (ret) {
		fprintf(stderr, "disk_bench: %s\n", err.msg);
		return 1;
	}
	b.size = disk_size(b.d);
	if (posix_memalign((void **)&b.buf, 4096, depth * b.bufsize))
		return 1;
	memset(b.buf, (int)pattern, depth * b.bufsize);
	th = calloc(depth, sizeof(*th));
	if (!th)
		return 1;
	printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset "
	       "%llu, step size %llu)\n",
	       (unsigned long long)b.count, b.write ? "write" : "read",
	       (unsigned long long)b.bufsize, (unsigned long long)depth,
	       (unsigned long long)b.offset, (unsigned long long)b.step);
	pthread_barrier_init(&b.ready, NULL, (unsigned)depth + 1);
	pthread_barrier_init(&b.start, NULL, (unsigned)depth + 1);
	for (uint64_t i = 0; i < depth; i++)
		pthread_create(&th[i], NULL, worker, &b);
	pthread_barrier_wait(&b.ready);
	/* The clock starts before the release: a descheduled main thread
	 * must not shorten the measured time. */
	t0 = now_ns();
	pthread_barrier_wait(&b.start);
	for (uint64_t i = 0; i < depth; i++)
		pthread_join(th[i], NULL);
	t1 = now_ns();
	ret = atomic_load(&b.error);
	if (!ret && b.write)
		ret = disk_flush(b.d);
	t2 = now_ns();
	if (ret) {
		fprintf(stderr, "disk_bench: request failed: %s\n", strerror(-ret));
		return 1;
	}
	ret = disk_close(b.d);
	if (ret) {
		fprintf(stderr, "disk_bench: close: %s\n", strerror(-ret));
		return 1;
	}
	double s = (double)(t1 - t0) / 1e9;
	printf("Run completed in %.3f seconds.\n", s);
	printf("ops/s %.0f MiB/s %.1f\n", (double)b.count / s,
	       (double)b.count * (double)b.bufsize / s / (1024.0 * 1024.0));
	if (b.write)
		printf("final flush %.3f seconds\n", (double)(t2 - t1) / 1e9);
	free(th);
	free(b.buf);
	return 0;
usage:
	fprintf(stderr, "usage: disk_bench [-w] [-c COUNT] [-d DEPTH] [-s BUFSIZE] [-S STEP] "
			"[-o OFFSET] [--pattern BYTE] [--raw] [--direct] IMAGE\n");
	return 2;
}
