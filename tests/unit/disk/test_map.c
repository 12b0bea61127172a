/* The block map for callers that move data themselves (disk_map_read,
 * disk_map_write, disk_commit_write), VHDX and VHD: a write is mapped
 * without allocation only where the block exists; allocation happens only
 * when asked; in a differencing disk, data written but not committed stays
 * invisible (the parent shows, also after reopening) and commit makes it
 * visible and durable; reads follow a chain down to the image that holds
 * the data. */
#include <stdbool.h>

#include "diskcore_util.h"

#include "disk/disk.h"

#define MiB (1024ULL * 1024)
#define SIZE (8 * MiB)
#define BLOCK (1 * MiB)

static int setup(void **state)
{
	return scratch_setup(state, "test_disk_map");
}

static int teardown(void **state)
{
	return scratch_teardown(state);
}

static void make(const char *path, enum disk_format fmt, const char *parent)
{
	struct disk_create_opts o = {
		.format = fmt,
		.type = parent ? DISK_TYPE_DIFFERENCING : DISK_TYPE_DYNAMIC,
		.size = parent ? 0 : SIZE,
		.block_size = BLOCK,
		.parent = parent,
	};
	struct disk_error err = { { 0 } };

	if (disk_create(path, &o, &err))
		fail_msg("disk_create(%s): %s", path, err.msg);
}

static struct disk *open_rw(const char *path)
{
	struct disk_error err = { { 0 } };
	struct disk *d;

	if (disk_open(path, 0, &d, &err))
		fail_msg("disk_open(%s): %s", path, err.msg);
	return d;
}

static void fill(uint8_t *buf, size_t len, uint8_t v)
{
	memset(buf, v, len);
}

static void assert_reads(struct disk *d, uint64_t off, size_t len, uint8_t v)
{
	uint8_t *buf = malloc(len);

	assert_non_null(buf);
	assert_int_equal(disk_pread(d, buf, len, off), 0);
	for (size_t i = 0; i < len; i++)
		if (buf[i] != v)
			fail_msg("byte %llu reads %#x, want %#x", (unsigned long long)(off + i),
				 buf[i], v);
	free(buf);
}

/* Writes len bytes of v where disk_map_write says (one extent). */
static bool map_and_write(struct disk *d, uint64_t off, size_t len, uint8_t v)
{
	struct disk_extent ext;
	uint8_t buf[4096];
	bool commit;

	assert_true(len <= sizeof(buf));
	assert_int_equal(disk_map_write(d, off, len, DISK_MAP_ALLOC, &ext, &commit), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	assert_true(ext.len >= len);
	fill(buf, len, v);
	assert_int_equal(pwrite(ext.fd, buf, len, (off_t)ext.file_off), (ssize_t)len);
	return commit;
}

static void write_allocates_only_when_asked(struct scratch *s, enum disk_format fmt)
{
	char path[128];
	struct disk_extent ext, again;
	struct disk *d;
	bool commit;

	snprintf(path, sizeof(path), "%s/dyn", s->dir);
	make(path, fmt, NULL);
	d = open_rw(path);
	assert_int_equal(disk_map_write(d, BLOCK + 4096, 4096, 0, &ext, &commit),
			 -EWOULDBLOCK);
	assert_false(map_and_write(d, BLOCK + 4096, 4096, 0x5a));
	assert_reads(d, BLOCK, 4096, 0);	/* the rest of a new block: zeroes */
	assert_reads(d, BLOCK + 4096, 4096, 0x5a);
	/* now mapped without allocation, to the same place */
	assert_int_equal(disk_map_write(d, BLOCK + 4096, 4096, 0, &again, &commit), 0);
	assert_int_equal(disk_map_write(d, BLOCK + 4096, 4096, DISK_MAP_ALLOC, &ext, &commit), 0);
	assert_true(again.file_off == ext.file_off);
	assert_false(commit);
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(disk_close(d), 0);
	d = open_rw(path);
	assert_reads(d, BLOCK + 4096, 4096, 0x5a);
	assert_reads(d, 0, 4096, 0); /* other blocks untouched */
	assert_int_equal(disk_close(d), 0);
}

static void test_vhdx_write_allocates_only_when_asked(void **state)
{
	write_allocates_only_when_asked(*state, DISK_FORMAT_VHDX);
}

static void test_vhd_write_allocates_only_when_asked(void **state)
{
	write_allocates_only_when_asked(*state, DISK_FORMAT_VHD);
}

/* A base full of 0x11 in its first two blocks, a child of it. */
static void make_pair(struct scratch *s, enum disk_format fmt, char *base, char *child,
		      size_t len)
{
	uint8_t *buf = malloc(2 * BLOCK);
	struct disk *d;

	assert_non_null(buf);
	snprintf(base, len, "%s/base", s->dir);
	snprintf(child, len, "%s/child", s->dir);
	make(base, fmt, NULL);
	d = open_rw(base);
	fill(buf, 2 * BLOCK, 0x11);
	assert_int_equal(disk_pwrite(d, buf, 2 * BLOCK, 0), 0);
	assert_int_equal(disk_close(d), 0);
	make(child, fmt, base);
	free(buf);
}

static void uncommitted_data_stays_invisible(struct scratch *s, enum disk_format fmt)
{
	char base[128], child[128];
	uint64_t off = BLOCK / 2 + 512;
	struct disk *d;

	make_pair(s, fmt, base, child, sizeof(base));
	d = open_rw(child);
	assert_true(map_and_write(d, off, 4096, 0x22));
	assert_reads(d, off, 4096, 0x11); /* not committed: the parent shows */
	assert_reads(d, 0, BLOCK, 0x11);  /* and around it too, not zeroes */
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(disk_close(d), 0);
	d = open_rw(child);
	assert_reads(d, 0, 2 * BLOCK, 0x11);
	/* the same write, committed */
	assert_true(map_and_write(d, off, 4096, 0x33));
	assert_int_equal(disk_commit_write(d, off, 4096), 0);
	assert_reads(d, off, 4096, 0x33);
	assert_reads(d, off - 512, 512, 0x11);
	assert_reads(d, off + 4096, 512, 0x11);
	assert_int_equal(disk_commit_write(d, off, 4096), 0); /* idempotent */
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(disk_close(d), 0);
	d = open_rw(child);
	assert_reads(d, off, 4096, 0x33);
	assert_reads(d, off + 4096, BLOCK, 0x11);
	assert_int_equal(disk_close(d), 0);
}

static void test_vhdx_uncommitted_data_stays_invisible(void **state)
{
	uncommitted_data_stays_invisible(*state, DISK_FORMAT_VHDX);
}

static void test_vhd_uncommitted_data_stays_invisible(void **state)
{
	uncommitted_data_stays_invisible(*state, DISK_FORMAT_VHD);
}

static void read_map_follows_chain(struct scratch *s, enum disk_format fmt)
{
	char base[128], mid[128], top[128];
	struct disk_extent ext;
	uint8_t buf[512];
	struct disk *d;

	make_pair(s, fmt, base, mid, sizeof(base));
	d = open_rw(mid);
	fill(buf, sizeof(buf), 0x44);
	assert_int_equal(disk_pwrite(d, buf, sizeof(buf), BLOCK + 512), 0);
	assert_int_equal(disk_close(d), 0);
	snprintf(top, sizeof(top), "%s/top", s->dir);
	make(top, fmt, mid);
	d = open_rw(top);
	/* block 0: in the base, two images down */
	assert_int_equal(disk_map_read(d, 4096, 8192, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	assert_int_equal(ext.len, 8192);
	assert_int_equal(pread(ext.fd, buf, sizeof(buf), (off_t)ext.file_off), sizeof(buf));
	assert_int_equal(buf[0], 0x11);
	/* block 1: the base's sector, then the middle's */
	assert_int_equal(disk_map_read(d, BLOCK, 4096, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	assert_int_equal(ext.len, 512);
	assert_int_equal(disk_map_read(d, BLOCK + 512, 4096, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	assert_int_equal(ext.len, 512);
	assert_int_equal(pread(ext.fd, buf, sizeof(buf), (off_t)ext.file_off), sizeof(buf));
	assert_int_equal(buf[0], 0x44);
	/* nowhere in the chain: zeroes */
	assert_int_equal(disk_map_read(d, 5 * BLOCK, BLOCK, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_ZERO);
	assert_int_equal(disk_close(d), 0);
}

static void test_vhdx_read_map_follows_chain(void **state)
{
	read_map_follows_chain(*state, DISK_FORMAT_VHDX);
}

static void test_vhd_read_map_follows_chain(void **state)
{
	read_map_follows_chain(*state, DISK_FORMAT_VHD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_vhdx_write_allocates_only_when_asked, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vhd_write_allocates_only_when_asked, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vhdx_uncommitted_data_stays_invisible, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vhd_uncommitted_data_stays_invisible, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vhdx_read_map_follows_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vhd_read_map_follows_chain, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
