/* The VHDX log: an update stopped after its log entry and before the
 * in-place write is replayed (in memory read-only, on disk read-write);
 * QEMU agrees our entries are valid; the log wraps; concurrent writers;
 * kill -9 during allocating writes loses nothing that was flushed. */
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "test_vhdx_util.h"
#include "disk/vhdx.h"

static void check_block(struct disk *d, uint64_t off, size_t len, unsigned seed)
{
	uint8_t *a = malloc(len), *b = malloc(len);

	vt_fill(a, len, seed);
	assert_int_equal(disk_pread(d, b, len, off), 0);
	assert_memory_equal(a, b, len);
	free(a);
	free(b);
}

static void write_seed(struct disk *d, uint64_t off, size_t len, unsigned seed)
{
	uint8_t *a = malloc(len);

	vt_fill(a, len, seed);
	assert_int_equal(disk_pwrite(d, a, len, off), 0);
	free(a);
}

static bool log_replayed(const char *path)
{
	struct disk_info info;
	struct disk *d = vt_open(path, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT);

	disk_get_info(d, &info);
	disk_close(d);
	return info.log_replayed;
}

static void test_replay_dynamic(void **state)
{
	struct vt *t = *state;
	char *img = vt_path(t, "l.vhdx"), *copy = vt_path(t, "qcopy.vhdx");
	char report[1024] = "";
	struct disk_error err = { 0 };
	size_t n0, n1;
	uint8_t *before, *after;
	bool qemu = vt_have_qemu_img();
	struct disk *d;

	vt_create(img, DISK_TYPE_DYNAMIC, 8 * MiB, 1 * MiB, 512, NULL);
	d = vt_open(img, 0);
	write_seed(d, 0, 64 * KiB, 1);
	assert_int_equal(disk_flush(d), 0);
	vhdx_test_crash_at(d, 1);
	write_seed(d, 3 * MiB + 4096, 8192, 2); /* allocates: log entry only */
	disk_close(d);
	before = vt_slurp(img, &n0);
	if (qemu) {
		/* QEMU parses our log: it refuses a read-only open that needs replay */
		assert_int_not_equal(run_cmd("qemu-img info '%s' >/dev/null 2>&1", img), 0);
		assert_int_equal(run_cmd("cp '%s' '%s' && qemu-img check -q -r all '%s' >/dev/null 2>&1",
					img, copy, copy), 0);
		d = vt_open(copy, DISK_OPEN_RDONLY);
		assert_false(log_replayed(copy));
		check_block(d, 3 * MiB + 4096, 8192, 2);
		disk_close(d);
	}

	/* read-only: replayed in memory; the file is not touched */
	d = vt_open(img, DISK_OPEN_RDONLY);
	check_block(d, 0, 64 * KiB, 1);
	check_block(d, 3 * MiB + 4096, 8192, 2);
	disk_close(d);
	assert_true(log_replayed(img));
	/* a valid pending log is the designed state after a crash: a note,
	 * not a problem; the metadata is checked as it is after the replay */
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
	assert_non_null(strstr(report, "note: log has 1 pending entry; they are replayed on "
				   "the next read-write open or with --repair"));
	after = vt_slurp(img, &n1);
	assert_int_equal(n0, n1);
	assert_memory_equal(before, after, n0);
	free(after);

	/* read-write: replayed into the file, log cleared */
	d = vt_open(img, 0);
	check_block(d, 3 * MiB + 4096, 8192, 2);
	assert_int_equal(disk_close(d), 0);
	after = vt_slurp(img, &n1);
	assert_memory_not_equal(before + 64 * KiB, after + 64 * KiB, 128 * KiB); /* headers */
	free(after);
	assert_false(log_replayed(img));
	d = vt_open(img, DISK_OPEN_RDONLY);
	check_block(d, 0, 64 * KiB, 1);
	check_block(d, 3 * MiB + 4096, 8192, 2);
	disk_close(d);
	if (qemu) {
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);
		assert_int_equal(run_cmd("qemu-img compare -q '%s' '%s'", img, copy), 0);
	}
	free(before);
}

static void test_replay_differencing(void **state)
{
	struct vt *t = *state;
	char *base = vt_path(t, "b.vhdx"), *child = vt_path(t, "c.vhdx");
	size_t n0, n1;
	uint8_t *before, *after;
	struct disk *d;

	vt_create(base, DISK_TYPE_DYNAMIC, 8 * MiB, 1 * MiB, 512, NULL);
	d = vt_open(base, 0);
	write_seed(d, 0, 8 * MiB, 40);
	disk_close(d);
	vt_create(child, DISK_TYPE_DIFFERENCING, 0, 1 * MiB, 0, base);
	d = vt_open(child, 0);
	write_seed(d, 1 * MiB + 512, 1024, 41);
	vhdx_test_crash_at(d, 1);
	write_seed(d, 5 * MiB + 2048, 512, 42); /* block + bitmap + bitmap block */
	disk_close(d);
	before = vt_slurp(child, &n0);
	d = vt_open(child, DISK_OPEN_RDONLY);
	check_block(d, 1 * MiB + 512, 1024, 41);
	check_block(d, 5 * MiB + 2048, 512, 42);
	{
		uint8_t *p = malloc(8 * MiB), q[2048];
		vt_fill(p, 8 * MiB, 40);
		assert_int_equal(disk_pread(d, q, 2048, 5 * MiB), 0);
		assert_memory_equal(q, p + 5 * MiB, 2048); /* parent shows through */
		assert_int_equal(disk_pread(d, q, 512, 5 * MiB + 2560), 0);
		assert_memory_equal(q, p + 5 * MiB + 2560, 512);
		free(p);
	}
	disk_close(d);
	after = vt_slurp(child, &n1);
	assert_int_equal(n0, n1);
	assert_memory_equal(before, after, n0);
	free(after);
	free(before);
	d = vt_open(child, 0);
	disk_close(d);
	assert_false(log_replayed(child));
	d = vt_open(child, DISK_OPEN_RDONLY);
	check_block(d, 5 * MiB + 2048, 512, 42);
	disk_close(d);
}

/* Allocations are logged by the flush that follows them, all in one
 * entry: none before it, one at it. The file as a kill before the flush
 * leaves it opens clean with those blocks absent (zeroes, or the parent),
 * and what was flushed earlier intact; after the flush everything is there. */
static void alloc_batched(struct vt *t, const char *name, const char *parent)
{
	char *img = vt_path(t, name), *cut = vt_path(t, "cut.vhdx");
	const int blocks = 40;
	uint64_t seq0;
	uint8_t *snap, *zero = calloc(1, 4096), *p = malloc(4096), *want = malloc(4096);
	size_t n;
	struct disk *d;

	vt_create(img, parent ? DISK_TYPE_DIFFERENCING : DISK_TYPE_DYNAMIC, 64 * MiB, 1 * MiB, 512,
		  parent);
	d = vt_open(img, 0);
	write_seed(d, 0, 4096, 7);
	assert_int_equal(disk_flush(d), 0);
	seq0 = ((struct vhdx *)d->priv)->log_seq;
	for (int i = 1; i <= blocks; i++)
		write_seed(d, (uint64_t)i * MiB + 512 * (i % 5), 4096, 200 + (unsigned)i);
	assert_true(((struct vhdx *)d->priv)->log_seq == seq0); /* nothing logged yet */
	snap = vt_slurp(img, &n); /* what a SIGKILL here would leave */
	assert_int_equal(disk_flush(d), 0);
	assert_true(((struct vhdx *)d->priv)->log_seq == seq0 + 1); /* one entry for all */
	disk_close(d);

	vt_spew(cut, snap, n); /* finds its parent next to it, as the child does */
	{
		char report[4096];
		struct disk_error err;
		int problems = disk_check(cut, false, report, sizeof(report), &err);
		if (problems)
			fprintf(stderr, "check %s: %d\n%s\n", cut, problems, report);
		assert_int_equal(problems, 0);
	}
	d = vt_open(cut, DISK_OPEN_RDONLY);
	check_block(d, 0, 4096, 7);
	for (int i = 1; i <= blocks; i++) {
		uint64_t off = (uint64_t)i * MiB + 512 * (i % 5);
		assert_int_equal(disk_pread(d, p, 4096, off), 0);
		if (parent) {
			struct disk *pd = vt_open(parent, DISK_OPEN_RDONLY);
			assert_int_equal(disk_pread(pd, want, 4096, off), 0);
			disk_close(pd);
			assert_memory_equal(p, want, 4096);
		} else {
			assert_memory_equal(p, zero, 4096);
		}
	}
	disk_close(d);
	d = vt_open(img, DISK_OPEN_RDONLY);
	for (int i = 1; i <= blocks; i++)
		check_block(d, (uint64_t)i * MiB + 512 * (i % 5), 4096, 200 + (unsigned)i);
	disk_close(d);
	/* (the cut copy holds the first flush's log entry, not yet cleared:
	 * qemu-img would only open it to replay it) */
	if (!parent && vt_have_qemu_img())
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);
	free(snap);
	free(zero);
	free(p);
	free(want);
}

static void test_alloc_batched(void **state)
{
	struct vt *t = *state;
	char *base = vt_path(t, "base.vhdx");
	struct disk *d;

	alloc_batched(t, "dyn.vhdx", NULL);
	vt_create(base, DISK_TYPE_DYNAMIC, 64 * MiB, 1 * MiB, 512, NULL);
	d = vt_open(base, 0);
	for (int i = 0; i < 64; i++)
		write_seed(d, (uint64_t)i * MiB, 1 * MiB, 900 + (unsigned)i);
	disk_close(d);
	alloc_batched(t, "child.vhdx", base);
}

/* Hundreds of allocations in one open, each flushed (allocations are
 * logged by the flush that follows them): the log wraps many times; the
 * last entry is still found among the stale ones. */
static void test_log_wraps(void **state)
{
	struct vt *t = *state;
	char *img = vt_path(t, "w.vhdx");
	const int blocks = 300;
	struct disk *d;

	vt_create(img, DISK_TYPE_DYNAMIC, (uint64_t)blocks * MiB, 1 * MiB, 512, NULL);
	d = vt_open(img, 0);
	for (int i = 0; i < blocks - 1; i++) {
		write_seed(d, (uint64_t)i * MiB + 512 * (i % 7), 512, 100 + (unsigned)i);
		assert_int_equal(disk_flush(d), 0);
	}
	vhdx_test_crash_at(d, 1);
	write_seed(d, (uint64_t)(blocks - 1) * MiB, 512, 99);
	disk_close(d);
	assert_true(log_replayed(img));
	d = vt_open(img, 0);
	for (int i = 0; i < blocks - 1; i++)
		check_block(d, (uint64_t)i * MiB + 512 * (i % 7), 512, 100 + (unsigned)i);
	check_block(d, (uint64_t)(blocks - 1) * MiB, 512, 99);
	disk_close(d);
	if (vt_have_qemu_img())
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);
}

struct writer {
	struct disk *d;
	int id, nthreads;
};

#define CONC_SIZE (16 * MiB)
#define CONC_CHUNK (16 * KiB)

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t buf[CONC_CHUNK];

	for (uint64_t off = (uint64_t)w->id * CONC_CHUNK; off < CONC_SIZE;
	     off += (uint64_t)w->nthreads * CONC_CHUNK) {
		vt_fill(buf, sizeof(buf), (unsigned)(off / CONC_CHUNK));
		if (disk_pwrite(w->d, buf, sizeof(buf), off))
			return (void *)1;
	}
	return NULL;
}

static void run_concurrent(const char *img)
{
	struct writer w[4];
	pthread_t th[4];
	struct disk *d = vt_open(img, 0);

	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){ d, i, 4 };
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		void *r;
		assert_int_equal(pthread_join(th[i], &r), 0);
		assert_null(r);
	}
	disk_close(d);
	d = vt_open(img, DISK_OPEN_RDONLY);
	for (uint64_t off = 0; off < CONC_SIZE; off += CONC_CHUNK)
		check_block(d, off, CONC_CHUNK, (unsigned)(off / CONC_CHUNK));
	disk_close(d);
}

static void test_concurrent(void **state)
{
	struct vt *t = *state;

	vt_create(vt_path(t, "cc.vhdx"), DISK_TYPE_DYNAMIC, CONC_SIZE, 1 * MiB, 512, NULL);
	run_concurrent(vt_path(t, "cc.vhdx"));
	vt_create(vt_path(t, "cp.vhdx"), DISK_TYPE_DYNAMIC, CONC_SIZE, 1 * MiB, 512, NULL);
	vt_create(vt_path(t, "cd.vhdx"), DISK_TYPE_DIFFERENCING, 0, 1 * MiB, 0,
		  vt_path(t, "cp.vhdx"));
	run_concurrent(vt_path(t, "cd.vhdx"));
	if (vt_have_qemu_img())
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", vt_path(t, "cc.vhdx")), 0);
}

/* kill -9 at a random point of allocating writes. Slot i (1 sector at a
 * unique offset) holds seed i once written; the child reports, after each
 * flush, how many writes are durable. */
#define KILL_SLOTS 4093u

static uint64_t slot_off(unsigned i, uint64_t size)
{
	/* 4093 is prime: i -> i * 2053 mod 4093 visits every slot once */
	return ((uint64_t)i * 2053 % KILL_SLOTS) * (size / KILL_SLOTS / 512) * 512;
}

static void child_writer(const char *img, int out)
{
	struct disk_error err;
	struct disk *d;
	uint8_t buf[512];

	if (disk_open(img, 0, &d, &err))
		_exit(2);
	for (unsigned i = 0; i < KILL_SLOTS; i++) {
		vt_fill(buf, sizeof(buf), 1000 + i);
		if (disk_pwrite(d, buf, sizeof(buf), slot_off(i, disk_size(d))))
			_exit(3);
		if (i % 8 == 7) {
			if (disk_flush(d))
				_exit(4);
			unsigned done = i + 1;
			if (write(out, &done, sizeof(done)) != sizeof(done))
				_exit(5);
		}
	}
	disk_close(d);
	_exit(0);
}

static void kill_trial(const struct vt *t, const char *img, unsigned seed)
{
	int p[2];
	unsigned flushed = 0, v;
	pid_t pid;
	struct disk *d;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		child_writer(img, p[1]);
	}
	close(p[1]);
	struct timespec ts = { 0, (long)(20 + seed * 37 % 200) * 1000000L };
	nanosleep(&ts, NULL);
	int status = 0;
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	while (read(p[0], &v, sizeof(v)) == sizeof(v))
		flushed = v;
	close(p[0]);
	fprintf(stderr, "  %s: %s after %u flushed writes\n", img,
		WIFSIGNALED(status) ? "killed" : "finished", flushed);
	assert_true(WIFSIGNALED(status) || WEXITSTATUS(status) == 0);
	d = vt_open(img, 0); /* replays whatever is pending */
	for (unsigned i = 0; i < flushed; i++)
		check_block(d, slot_off(i, disk_size(d)), 512, 1000 + i);
	assert_int_equal(disk_close(d), 0);
	if (vt_have_qemu_img() && !strstr(img, "diff"))
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);
	(void)t;
}

static void test_kill9(void **state)
{
	struct vt *t = *state;
	char *img = vt_path(t, "k.vhdx"), *base = vt_path(t, "kb.vhdx");
	char *diff = vt_path(t, "kdiff.vhdx");

	for (unsigned trial = 0; trial < 6; trial++) {
		unlink(img);
		vt_create(img, DISK_TYPE_DYNAMIC, 512 * MiB, 1 * MiB, 512, NULL);
		kill_trial(t, img, trial);
	}
	vt_create(base, DISK_TYPE_DYNAMIC, 512 * MiB, 1 * MiB, 512, NULL);
	for (unsigned trial = 0; trial < 4; trial++) {
		unlink(diff);
		vt_create(diff, DISK_TYPE_DIFFERENCING, 0, 2 * MiB, 0, base);
		kill_trial(t, diff, 100 + trial);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_replay_dynamic, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_replay_differencing, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_alloc_batched, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_log_wraps, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_kill9, vt_setup, vt_teardown),
	};
	if (getenv("VT_ONLY")) /* run one test: VT_ONLY=test_name */
		cmocka_set_test_filter(getenv("VT_ONLY"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
