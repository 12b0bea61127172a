/* The VHDX unit tests' layer over diskcore_util.h (header-only: each test
 * is one program): a per-test temp directory as cmocka state, thread-safe
 * paths, Hyper-V files, whole-disk dumps, patterns, and create/open/slurp
 * variants that fail the test instead of returning an error. */
#ifndef TEST_VHDX_UTIL_H
#define TEST_VHDX_UTIL_H

#include <limits.h>

#include "common/util.h"
#include "disk/disk.h"
#include "diskcore_util.h"

struct vt {
	struct scratch s;
};

static inline int vt_setup(void **state)
{
	return scratch_setup(state, "test_vhdx");
}

static inline int vt_teardown(void **state)
{
	return scratch_teardown(state);
}

/* Like scratch_path, but thread-safe (the concurrency tests build paths
 * from several threads). */
static inline char *vt_path(const struct vt *t, const char *name)
{
	static __thread char buf[32][PATH_MAX];
	static __thread int k;
	char *p = buf[k++ % 32];

	snprintf(p, PATH_MAX, "%s/%s", t->s.dir, name);
	return p;
}

static inline bool vt_have_qemu_img(void)
{
	return have_tool("qemu-img");
}

/* Gunzips testdata/hyperv/<name>.gz into the temp dir and returns its path;
 * skips the test when the Hyper-V files are not present. */
static inline char *vt_hyperv(const struct vt *t, const char *name)
{
	char *out = vt_path(t, name);

	hyperv_file(name, out);
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
	assert_int_equal(file_sha256(path, out), 0);
}

/* Not fill_random: a different stream (the low byte of each step); the
 * VHDX tests use it throughout. */
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

/* slurp and write_file that fail the test instead of returning an error. */
static inline uint8_t *vt_slurp(const char *path, size_t *len)
{
	uint8_t *buf = slurp(path, len);

	assert_non_null(buf);
	return buf;
}

static inline void vt_spew(const char *path, const uint8_t *buf, size_t len)
{
	assert_int_equal(write_file(path, buf, len), 0);
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
