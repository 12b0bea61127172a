/* Helpers shared by every disk unit test (test_vhdx_util.h builds on this
 * one): a scratch folder, running peer tools (qemu-img, sha256sum, gunzip),
 * Hyper-V's test files (skipped with a message when absent), deterministic
 * data. Header-only: each test is one program. */
#ifndef CLOISON_TESTS_DISKCORE_UTIL_H
#define CLOISON_TESTS_DISKCORE_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct scratch {
	char dir[64];
};

static inline int scratch_make(struct scratch *s, const char *name)
{
	snprintf(s->dir, sizeof(s->dir), "/tmp/%s.XXXXXX", name);
	return mkdtemp(s->dir) ? 0 : -errno;
}

static inline int scratch_remove(struct scratch *s)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* cmocka setup/teardown giving each test a struct scratch as its state. */
static inline int scratch_setup(void **state, const char *name)
{
	struct scratch *s = calloc(1, sizeof(*s));

	if (!s || scratch_make(s, name)) {
		free(s);
		return -1;
	}
	*state = s;
	return 0;
}

static inline int scratch_teardown(void **state)
{
	struct scratch *s = *state;
	int ret = scratch_remove(s);

	free(s);
	return ret;
}

/* "<dir>/<name>" in a static rotating buffer: valid for the next 63 calls. */
static inline const char *scratch_path(struct scratch *s, const char *name)
{
	static char bufs[64][256];
	static int next;
	char *b = bufs[next++ % 64];

	snprintf(b, 256, "%s/%s", s->dir, name);
	return b;
}

/* Runs a shell command quietly; returns its exit status (or -1). */
static inline int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int run_cmd(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static inline int have_tool(const char *tool)
{
	return run_cmd("command -v %s >/dev/null 2>&1", tool) == 0;
}

/* The shared test data folder ($CLOISON_TESTDATA, set by meson, else
 * ../shared/testdata relative to the source tree). */
static inline const char *disk_testdata(void)
{
	const char *e = getenv("CLOISON_TESTDATA");
	return e ? e : "../shared/testdata";
}

/* Whether Hyper-V's file <testdata>/hyperv/<name>.gz is there; says so
 * (with the path) when it is not. */
static inline bool hyperv_present(const char *name)
{
	if (run_cmd("test -f '%s/hyperv/%s.gz'", disk_testdata(), name) == 0)
		return true;
	print_message("the Hyper-V test files are not present at %s/hyperv (%s.gz)\n",
		      disk_testdata(), name);
	return false;
}

/* Gunzips Hyper-V's <name>.gz to out; skips the test (never fails it) when
 * the Hyper-V files are not present. */
static inline void hyperv_file(const char *name, const char *out)
{
	if (!hyperv_present(name))
		skip();
	assert_int_equal(run_cmd("gunzip -c '%s/hyperv/%s.gz' > '%s'", disk_testdata(), name,
				 out), 0);
}

/* sha256 of a file as 64 hex chars; 0 or -1. */
static inline int file_sha256(const char *path, char out[65])
{
	char cmd[512];
	FILE *p;
	int ok;

	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	ok = fscanf(p, "%64s", out) == 1;
	pclose(p);
	return ok ? 0 : -1;
}

/* A deterministic pseudo-random stream (xorshift) so failures replay. */
static inline void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)(x >> 24);
	}
}

static inline int write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

/* Reads a whole file into a malloc'd buffer. */
static inline uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	*len = 0;
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf && pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		free(buf);
		buf = NULL;
	}
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static inline int patch_file(const char *path, uint64_t off, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pwrite(fd, buf, len, (off_t)off);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

static inline int read_at(const char *path, uint64_t off, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pread(fd, buf, len, (off_t)off);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

static inline uint32_t be32_at(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void put_be32_at(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void put_be64_at(uint8_t *p, uint64_t v)
{
	put_be32_at(p, (uint32_t)(v >> 32));
	put_be32_at(p + 4, (uint32_t)v);
}

/* VHD checksum: ones' complement of the byte sum without the field. */
static inline void vhd_test_fix_checksum(uint8_t *buf, size_t len, size_t off)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < off || i >= off + 4)
			sum += buf[i];
	put_be32_at(buf + off, ~sum);
}

#endif
