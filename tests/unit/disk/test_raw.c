/* Raw images through the public disk API: create, I/O, discard/holes,
 * block status, resize. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "disk/disk.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_raw.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/disk.img", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static void test_create_io(void **state)
{
	struct fixture *f = *state;
	struct disk_create_opts o = { .format = DISK_FORMAT_RAW, .type = DISK_TYPE_FIXED,
				      .size = 4 * MiB };
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d;
	uint8_t *a = malloc(65536), *b = malloc(65536);
	struct stat st;

	assert_int_equal(disk_create(f->path, &o, &err), 0);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_size, 4 * MiB);
	/* refuses an existing path and leaves it alone */
	assert_int_equal(disk_create(f->path, &o, &err), -EEXIST);
	assert_non_null(strstr(err.msg, f->path));
	assert_int_equal(stat(f->path, &st), 0);

	assert_int_equal(disk_open(f->path, 0, &d, &err), 0);
	assert_int_equal(disk_size(d), 4 * MiB);
	assert_int_equal(disk_sector_size(d), 512);
	disk_get_info(d, &info);
	assert_int_equal(info.format, DISK_FORMAT_RAW);
	assert_int_equal(info.type, DISK_TYPE_FIXED);
	assert_string_equal(disk_format_name(info.format), "raw");
	assert_string_equal(disk_type_name(DISK_TYPE_DIFFERENCING), "differencing");
	assert_null(disk_parent(d));

	fill(a, 65536, 1);
	assert_int_equal(disk_pwrite(d, a, 65536, 1 * MiB + 512), 0);
	assert_int_equal(disk_pread(d, b, 65536, 1 * MiB + 512), 0);
	assert_memory_equal(a, b, 65536);
	/* unaligned and out-of-range requests are refused */
	assert_int_equal(disk_pread(d, b, 100, 0), -EINVAL);
	assert_int_equal(disk_pread(d, b, 512, 7), -EINVAL);
	assert_int_equal(disk_pread(d, b, 1024, 4 * MiB - 512), -EINVAL);
	assert_int_equal(disk_pwrite(d, b, 512, 4 * MiB), -EINVAL);
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(disk_close(d), 0);

	/* read-only refuses writes */
	assert_int_equal(disk_open(f->path, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_pwrite(d, a, 512, 0), -EROFS);
	assert_int_equal(disk_discard(d, 0, 512), -EROFS);
	assert_int_equal(disk_pread(d, b, 65536, 1 * MiB + 512), 0);
	assert_memory_equal(a, b, 65536);
	assert_int_equal(disk_close(d), 0);
	free(a);
	free(b);
}

static void test_discard_holes(void **state)
{
	struct fixture *f = *state;
	struct disk_create_opts o = { .format = DISK_FORMAT_RAW, .type = DISK_TYPE_DYNAMIC,
				      .size = 8 * MiB };
	struct disk_error err = { 0 };
	uint8_t *a = malloc(MiB), *b = malloc(MiB), *z = calloc(1, MiB);
	struct disk *d;
	bool alloc;
	uint64_t run;

	assert_int_equal(disk_create(f->path, &o, &err), 0);
	assert_int_equal(disk_open(f->path, 0, &d, &err), 0);
	/* a sparse new file is one hole */
	assert_int_equal(disk_block_status(d, 0, 8 * MiB, &alloc, &run), 0);
	assert_false(alloc);
	assert_int_equal(run, 8 * MiB);

	fill(a, MiB, 3);
	assert_int_equal(disk_pwrite(d, a, MiB, 2 * MiB), 0);
	assert_int_equal(disk_pwrite(d, a, MiB, 3 * MiB), 0);
	assert_int_equal(disk_block_status(d, 0, 8 * MiB, &alloc, &run), 0);
	assert_false(alloc);
	assert_int_equal(run, 2 * MiB);
	assert_int_equal(disk_block_status(d, 2 * MiB, 6 * MiB, &alloc, &run), 0);
	assert_true(alloc);
	assert_int_equal(run, 2 * MiB);
	assert_int_equal(disk_block_status(d, 4 * MiB, 4 * MiB, &alloc, &run), 0);
	assert_false(alloc);
	assert_int_equal(run, 4 * MiB);

	/* discard a whole MiB: reads back zeroes and becomes a hole */
	assert_int_equal(disk_discard(d, 2 * MiB, MiB), 0);
	assert_int_equal(disk_pread(d, b, MiB, 2 * MiB), 0);
	assert_memory_equal(b, z, MiB);
	assert_int_equal(disk_block_status(d, 2 * MiB, MiB, &alloc, &run), 0);
	assert_false(alloc);
	assert_int_equal(disk_pread(d, b, MiB, 3 * MiB), 0);
	assert_memory_equal(a, b, MiB);

	/* write_zeroes without unmap keeps the range allocated */
	assert_int_equal(disk_write_zeroes(d, 3 * MiB, 4096, false), 0);
	assert_int_equal(disk_pread(d, b, 4096, 3 * MiB), 0);
	assert_memory_equal(b, z, 4096);
	assert_int_equal(disk_pread(d, b + 4096, MiB - 4096, 3 * MiB + 4096), 0);
	assert_memory_equal(a + 4096, b + 4096, MiB - 4096);
	assert_int_equal(disk_block_status(d, 3 * MiB, MiB, &alloc, &run), 0);
	assert_true(alloc);
	assert_int_equal(disk_write_zeroes(d, 3 * MiB, MiB, true), 0);
	assert_int_equal(disk_pread(d, b, MiB, 3 * MiB), 0);
	assert_memory_equal(b, z, MiB);

	/* a small unaligned-to-page discard still reads back zeroes */
	assert_int_equal(disk_pwrite(d, a, 4096, 5 * MiB), 0);
	assert_int_equal(disk_discard(d, 5 * MiB + 512, 1024), 0);
	assert_int_equal(disk_pread(d, b, 4096, 5 * MiB), 0);
	assert_memory_equal(b, a, 512);
	assert_memory_equal(b + 512, z, 1024);
	assert_memory_equal(b + 1536, a + 1536, 4096 - 1536);

	struct disk_extent ext;
	assert_int_equal(disk_map(d, 5 * MiB, 4096, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	assert_int_equal(ext.file_off, 5 * MiB);
	assert_int_equal(ext.len, 4096);
	assert_int_equal(disk_close(d), 0);
	free(a);
	free(b);
	free(z);
}

static void test_resize(void **state)
{
	struct fixture *f = *state;
	struct disk_create_opts o = { .format = DISK_FORMAT_RAW, .type = DISK_TYPE_DYNAMIC,
				      .size = 4 * MiB };
	struct disk_error err = { 0 };
	uint8_t sector[512];
	struct disk *d;

	assert_int_equal(disk_create(f->path, &o, &err), 0);
	assert_int_equal(disk_resize(f->path, 8 * MiB, &err), 0);
	assert_int_equal(disk_open(f->path, 0, &d, &err), 0);
	assert_int_equal(disk_size(d), 8 * MiB);
	memset(sector, 0xab, sizeof(sector));
	assert_int_equal(disk_pwrite(d, sector, 512, 7 * MiB), 0);
	assert_int_equal(disk_close(d), 0);
	/* shrinking over data is refused and changes nothing */
	assert_int_equal(disk_resize(f->path, 6 * MiB, &err), -ENOTEMPTY);
	assert_non_null(strstr(err.msg, "holds data"));
	assert_int_equal(disk_open(f->path, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_size(d), 8 * MiB);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_resize(f->path, 7 * MiB + 512, &err), 0);
	assert_int_equal(disk_resize(f->path, 1000, &err), -EINVAL);
}

static void test_bad_create(void **state)
{
	struct fixture *f = *state;
	struct disk_create_opts o = { .format = DISK_FORMAT_RAW, .type = DISK_TYPE_FIXED,
				      .size = 1000 };
	struct disk_error err = { 0 };
	struct stat st;

	assert_int_equal(disk_create(f->path, &o, &err), -EINVAL);
	assert_int_equal(stat(f->path, &st), -1); /* nothing left behind */
	o.size = 0;
	assert_int_equal(disk_create(f->path, &o, &err), -EINVAL);
	o.size = MiB;
	o.type = DISK_TYPE_DIFFERENCING;
	o.parent = "/nonexistent/parent.img";
	assert_int_equal(disk_create(f->path, &o, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent/parent.img"));
	assert_int_equal(stat(f->path, &st), -1);
	/* a path in a missing directory */
	o.type = DISK_TYPE_FIXED;
	o.parent = NULL;
	assert_int_equal(disk_create("/nonexistent/dir/x.img", &o, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent/dir/x.img"));
}

static void test_open_errors(void **state)
{
	struct fixture *f = *state;
	struct disk_error err = { 0 };
	struct disk *d = NULL;

	assert_int_equal(disk_open("/nonexistent/x.img", 0, &d, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent/x.img"));
	assert_null(d);
	assert_int_equal(disk_open(f->dir, 0, &d, &err), -EISDIR);
	assert_non_null(strstr(err.msg, f->dir));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_io, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard_holes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_create, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
