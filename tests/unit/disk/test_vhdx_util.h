/* Helpers shared by the VHDX unit tests (header-only: each test is one
 * program). Temp directories, shell tools (gunzip, qemu-img, sha256sum),
 * whole-disk dumps and patterns. */
#ifndef TEST_VHDX_UTIL_H
#define TEST_VHDX_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "disk/disk.h"

struct vt {
	char dir[64];
};

static inline int vt_setup(void **state)
{
	struct vt *t = calloc(1, sizeof(*t));

	snprintf(t->dir, sizeof(t->dir), "/tmp/test_vhdx.XXXXXX");
	if (!t || !mkdtemp(t->dir))
		return -1;
	*state = t;
	return 0;
}

static inline int vt_teardown(void **state)
{
	struct vt *t = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	if (system(cmd) != 0)
		return -1;
	free(t);
	return 0;
}

static inline char *vt_path(const struct vt *t, const char *name)
{
	static __thread char buf[32][PATH_MAX];
	static __thread int k;
	char *p = buf[k++ % 32];

	snprintf(p, PATH_MAX, "%s/%s", t->dir, name);
	return p;
}

/* Runs a shell command; returns its exit status (or -1). */
static inline int vt_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int vt_run(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return st < 0 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static inline bool vt_have_qemu_img(void)
{
	return vt_run("qemu-img --version >/dev/null 2>&1") == 0;
}

static inline const char *vt_testdata(void)
{
	const char *e = getenv("CLOISON_TESTDATA");
	return e ? e : "../shared/testdata";
}

/* Gunzips testdata/hyperv/<name>.gz into the temp dir; returns its path. */
static inline char *vt_hyperv(const struct vt *t, const char *name)
{
	char *out = vt_path(t, name);

	assert_int_equal(vt_run("gunzip -c '%s/hyperv/%s.gz' > '%s'", vt_testdata(), name, out), 0);
	return out;
}

/* Writes the whole virtual disk to out (a raw file). */
static inline void vt_dump(struct disk *d, const char *out)
{
	size_t chunk = 1024 * 1024;
	uint8_t *buf = malloc(chunk);
	uint64_t size = disk_size(d);
	int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_non_null(buf);
	assert_true(fd >= 0);
	for (uint64_t off = 0; off < size; off += chunk) {
		size_t n = (size_t)MIN((uint64_t)chunk, size - off);
		assert_int_equal(disk_pread(d, buf, n, off), 0);
		assert_int_equal(pwrite_full(fd, buf, n, (off_t)off), 0);
	}
	close(fd);
	free(buf);
}

static inline void vt_sha256(const char *path, char out[65])
{
	char cmd[PATH_MAX + 32];
	FILE *p;

	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_int_equal(fscanf(p, "%64s", out), 1);
	pclose(p);
}

static inline void vt_fill(uint8_t *buf, size_t len, unsigned seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
}

/* Reads a whole file into memory. */
static inline uint8_t *vt_slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread_full(fd, buf, (size_t)st.st_size, 0), 0);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static inline void vt_spew(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(pwrite_full(fd, buf, len, 0), 0);
	close(fd);
}

static inline void vt_create(const char *path, enum disk_type type, uint64_t size, uint32_t bs,
			     uint32_t lsec, const char *parent)
{
	struct disk_create_opts o = { .format = DISK_FORMAT_VHDX, .type = type, .size = size,
				      .block_size = bs, .logical_sector = lsec, .parent = parent };
	struct disk_error err = { 0 };
	int ret = disk_create(path, &o, &err);

	if (ret)
		fprintf(stderr, "create %s: %s\n", path, err.msg);
	assert_int_equal(ret, 0);
}

static inline struct disk *vt_open(const char *path, unsigned flags)
{
	struct disk_error err = { 0 };
	struct disk *d = NULL;
	int ret = disk_open(path, flags, &d, &err);

	if (ret)
		fprintf(stderr, "open %s: %s\n", path, err.msg);
	assert_int_equal(ret, 0);
	return d;
}

#endif
