/* Differencing chains: reads through several levels, missing and
 * mismatched parents, cycles, depth, mixed formats, set-parent, discard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/util.h"
#include "disk/disk.h"
#include "disk/disk_impl.h"
#include "diskcore_util.h"

#define SIZE (24 * MiB)

static int setup(void **state)
{
	struct scratch *s = calloc(1, sizeof(*s));

	if (!s || scratch_make(s, "test_chain"))
		return -1;
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	struct scratch *s = *state;
	int ret = scratch_remove(s);

	free(s);
	return ret;
}

static void create(const char *path, enum disk_type type, const char *parent)
{
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = type,
				      .size = parent ? 0 : SIZE, .parent = parent };
	struct disk_error err = { 0 };
	int ret = disk_create(path, &o, &err);

	if (ret)
		print_message("create %s: %s\n", path, err.msg);
	assert_int_equal(ret, 0);
}

/* Writes len bytes of pattern seed at off into path and the model. */
static void put(const char *path, uint8_t *model, uint64_t off, uint64_t len, uint64_t seed)
{
	struct disk_error err = { 0 };
	struct disk *d;
	int ret = disk_open(path, 0, &d, &err);

	if (ret)
		print_message("open %s: %s\n", path, err.msg);
	assert_int_equal(ret, 0);
	fill_random(model + off, len, seed);
	assert_int_equal(disk_pwrite(d, model + off, len, off), 0);
	assert_int_equal(disk_close(d), 0);
}

static void verify(const char *path, const uint8_t *model)
{
	struct disk_error err = { 0 };
	uint8_t *buf = malloc(SIZE);
	struct disk *d;
	int ret = disk_open(path, DISK_OPEN_RDONLY, &d, &err);

	if (ret)
		print_message("open %s: %s\n", path, err.msg);
	assert_int_equal(ret, 0);
	for (uint64_t off = 0; off < SIZE; off += 4 * MiB)
		assert_int_equal(disk_pread(d, buf + off, 4 * MiB, off), 0);
	assert_memory_equal(buf, model, SIZE);
	free(buf);
	assert_int_equal(disk_close(d), 0);
}

/* base <- mid <- top, each written at overlapping and separate places. */
static void make_chain(struct scratch *s, uint8_t *m_base, uint8_t *m_mid, uint8_t *m_top)
{
	const char *base = scratch_path(s, "base.vhd");
	const char *mid = scratch_path(s, "mid.vhd");
	const char *top = scratch_path(s, "top.vhd");

	create(base, DISK_TYPE_DYNAMIC, NULL);
	put(base, m_base, 0, 6 * MiB, 1);
	put(base, m_base, 10 * MiB, 512, 2);
	create(mid, DISK_TYPE_DIFFERENCING, base);
	memcpy(m_mid, m_base, SIZE);
	put(mid, m_mid, 1 * MiB + 512, 4096, 3);     /* a few sectors of a block */
	put(mid, m_mid, 8 * MiB, 3 * MiB, 4);	     /* across blocks, over the parent's */
	put(mid, m_mid, SIZE - 512, 512, 5);
	create(top, DISK_TYPE_DIFFERENCING, mid);
	memcpy(m_top, m_mid, SIZE);
	put(top, m_top, 1 * MiB, 1024, 6);	     /* next to mid's sectors */
	put(top, m_top, 2 * MiB - 512, 1024, 7);     /* across a block boundary */
	put(top, m_top, 10 * MiB, 64 * 1024, 8);
}

static void test_three_levels(void **state)
{
	struct scratch *s = *state;
	uint8_t *mb = calloc(1, SIZE), *mm = calloc(1, SIZE), *mt = calloc(1, SIZE);
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d;

	make_chain(s, mb, mm, mt);
	verify(scratch_path(s, "top.vhd"), mt);
	verify(scratch_path(s, "mid.vhd"), mm);
	verify(scratch_path(s, "base.vhd"), mb);

	assert_int_equal(disk_open(scratch_path(s, "top.vhd"), DISK_OPEN_RDONLY, &d, &err), 0);
	disk_get_info(d, &info);
	assert_int_equal(info.type, DISK_TYPE_DIFFERENCING);
	assert_true(info.has_parent);
	assert_non_null(strstr(info.parent_path, "mid.vhd"));
	assert_non_null(disk_parent(d));
	assert_non_null(disk_parent(disk_parent(d)));
	assert_null(disk_parent(disk_parent(disk_parent(d))));
	/* allocation: top holds only its own sectors */
	bool alloc;
	uint64_t run;
	assert_int_equal(disk_block_status(d, 1 * MiB, 4096, &alloc, &run), 0);
	assert_true(alloc);
	assert_int_equal(run, 1024);
	assert_int_equal(disk_block_status(d, 1 * MiB + 1024, 4096, &alloc, &run), 0);
	assert_false(alloc);
	struct disk_extent ext;
	assert_int_equal(disk_map(d, 1 * MiB + 1024, 4096, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_PARENT);
	assert_int_equal(disk_map(d, 0, 4096, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_PARENT);
	assert_int_equal(disk_close(d), 0);

	/* discard in a child brings the parent's data back; write_zeroes hides it */
	const char *top = scratch_path(s, "top.vhd");
	assert_int_equal(disk_open(top, 0, &d, &err), 0);
	assert_int_equal(disk_discard(d, 10 * MiB, 64 * 1024), 0);
	memcpy(mt + 10 * MiB, mm + 10 * MiB, 64 * 1024);
	assert_int_equal(disk_write_zeroes(d, 0, 8192, true), 0);
	memset(mt, 0, 8192);
	assert_int_equal(disk_close(d), 0);
	verify(top, mt);
	char report[1024];
	assert_int_equal(disk_check(top, false, report, sizeof(report), &err), 0);

	/* the parent-less view qemu has of the child: what the child wrote is
	 * in its allocated blocks */
	if (have_tool("qemu-img")) {
		const char *out = scratch_path(s, "q.raw");
		size_t len;
		assert_int_equal(run_cmd("qemu-img convert -f vpc -O raw '%s' '%s'",
					 scratch_path(s, "mid.vhd"), out), 0);
		uint8_t *q = slurp(out, &len);
		assert_int_equal(len, SIZE);
		assert_memory_equal(q + 1 * MiB + 512, mm + 1 * MiB + 512, 4096);
		assert_memory_equal(q + 8 * MiB, mm + 8 * MiB, 3 * MiB);
		free(q);
	}
	free(mb);
	free(mm);
	free(mt);
}

static void test_missing_parent(void **state)
{
	struct scratch *s = *state;
	uint8_t *mb = calloc(1, SIZE), *mm = calloc(1, SIZE), *mt = calloc(1, SIZE);
	const char *top = scratch_path(s, "top.vhd");
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d = NULL;
	uint8_t buf[4096];

	make_chain(s, mb, mm, mt);
	assert_int_equal(rename(scratch_path(s, "base.vhd"), scratch_path(s, "gone.vhd")), 0);
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY, &d, &err), -ENOENT);
	assert_null(d);
	print_message("%s\n", err.msg);
	assert_non_null(strstr(err.msg, "mid.vhd"));  /* whose parent */
	assert_non_null(strstr(err.msg, "base.vhd")); /* the paths tried */
	assert_non_null(strstr(err.msg, "not found"));
	/* inspecting without the parent works; unallocated reads say so */
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &d, &err), 0);
	disk_get_info(d, &info);
	assert_true(info.has_parent);
	assert_non_null(strstr(info.parent_path, "mid.vhd"));
	assert_int_equal(disk_pread(d, buf, 1024, 1 * MiB), 0);
	assert_memory_equal(buf, mt + 1 * MiB, 1024);
	assert_int_equal(disk_pread(d, buf, 4096, 0), -ENXIO);
	assert_int_equal(disk_close(d), 0);
	/* check reports the broken chain */
	char report[1024];
	assert_int_equal(disk_check(top, false, report, sizeof(report), &err), 1);
	assert_non_null(strstr(report, "not found"));
	/* set-parent re-points mid at the moved base */
	assert_int_equal(disk_set_parent(scratch_path(s, "mid.vhd"), scratch_path(s, "gone.vhd"),
					 &err), 0);
	verify(top, mt);
	assert_int_equal(disk_check(top, false, report, sizeof(report), &err), 0);
	free(mb);
	free(mm);
	free(mt);
}

static void test_mismatched_parent(void **state)
{
	struct scratch *s = *state;
	uint8_t *mb = calloc(1, SIZE), *mm = calloc(1, SIZE), *mt = calloc(1, SIZE);
	const char *top = scratch_path(s, "top.vhd");
	const char *mid = scratch_path(s, "mid.vhd");
	const char *base = scratch_path(s, "base.vhd");
	const char *other = scratch_path(s, "other.vhd");
	struct disk_error err = { 0 };
	uint8_t *before, *after;
	size_t blen, alen;
	struct disk *d = NULL;

	make_chain(s, mb, mm, mt);
	/* another disk of the same size takes the parent's place */
	assert_int_equal(rename(base, scratch_path(s, "real-base.vhd")), 0);
	create(other, DISK_TYPE_DYNAMIC, NULL);
	assert_int_equal(rename(other, base), 0);
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
	assert_null(d);
	print_message("%s\n", err.msg);
	assert_non_null(strstr(err.msg, "does not match"));
	assert_non_null(strstr(err.msg, "base.vhd"));
	/* both ids are named */
	struct disk *real, *fake;
	struct disk_info ri, fi;
	char rs[GUID_STR_LEN], fs[GUID_STR_LEN];
	assert_int_equal(disk_open(scratch_path(s, "real-base.vhd"), DISK_OPEN_RDONLY, &real, &err),
			 0);
	assert_int_equal(disk_open(base, DISK_OPEN_RDONLY, &fake, &err), 0);
	disk_get_info(real, &ri);
	disk_get_info(fake, &fi);
	disk_close(real);
	disk_close(fake);
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, guid_to_string(&ri.disk_id, rs)));
	assert_non_null(strstr(err.msg, guid_to_string(&fi.disk_id, fs)));
	/* set-parent to the wrong disk is refused and changes nothing */
	before = slurp(mid, &blen);
	assert_int_equal(disk_set_parent(mid, base, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "does not match"));
	after = slurp(mid, &alen);
	assert_int_equal(blen, alen);
	assert_memory_equal(before, after, blen);
	free(before);
	free(after);
	/* a parent whose time stamp changed is refused too */
	assert_int_equal(rename(scratch_path(s, "real-base.vhd"), base), 0);
	verify(top, mt);
	uint8_t f[512];
	struct stat st;
	assert_int_equal(stat(base, &st), 0);
	assert_int_equal(read_at(base, (uint64_t)st.st_size - 512, f, 512), 0);
	f[27] ^= 1;
	vhd_test_fix_checksum(f, 512, 64);
	assert_int_equal(patch_file(base, (uint64_t)st.st_size - 512, f, 512), 0);
	assert_int_equal(patch_file(base, 0, f, 512), 0);
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "time stamp"));
	free(mb);
	free(mm);
	free(mt);
}

static void test_cycle(void **state)
{
	struct scratch *s = *state;
	const char *p = scratch_path(s, "p.vhd");
	const char *a = scratch_path(s, "a.vhd");
	const char *b = scratch_path(s, "b.vhd");
	struct disk_error err = { 0 };
	struct disk *d = NULL;

	create(p, DISK_TYPE_DYNAMIC, NULL);
	create(a, DISK_TYPE_DIFFERENCING, p);
	create(b, DISK_TYPE_DIFFERENCING, a);
	/* b takes p's name: a's parent is now b, whose parent is a */
	assert_int_equal(rename(b, p), 0);
	assert_int_equal(disk_open(p, DISK_OPEN_RDONLY, &d, &err), -ELOOP);
	assert_null(d);
	print_message("%s\n", err.msg);
	assert_non_null(strstr(err.msg, "loops"));
	assert_int_equal(disk_open(a, DISK_OPEN_RDONLY, &d, &err), -ELOOP);
	/* and a disk that is its own parent */
	assert_int_equal(rename(a, scratch_path(s, "a2.vhd")), 0);
	assert_int_equal(symlink(p, a), 0); /* a.vhd -> p.vhd (b), b's parent is a */
	assert_int_equal(disk_open(p, DISK_OPEN_RDONLY, &d, &err), -ELOOP);
}

static void test_depth(void **state)
{
	struct scratch *s = *state;
	struct disk_error err = { 0 };
	char prev[256], cur[256];
	struct disk *d = NULL;
	uint8_t sec[512], back[512];

	snprintf(prev, sizeof(prev), "%s", scratch_path(s, "d0.vhd"));
	create(prev, DISK_TYPE_DYNAMIC, NULL);
	memset(sec, 0x42, sizeof(sec));
	uint8_t *model = calloc(1, SIZE);
	put(prev, model, 0, 512, 9);
	free(model);
	for (int i = 1; i < DISK_MAX_CHAIN; i++) {
		snprintf(cur, sizeof(cur), "%s/d%d.vhd", s->dir, i);
		create(cur, DISK_TYPE_DIFFERENCING, prev);
		snprintf(prev, sizeof(prev), "%s", cur);
	}
	/* DISK_MAX_CHAIN images: allowed, and data from the bottom shows */
	assert_int_equal(disk_open(prev, DISK_OPEN_RDONLY, &d, &err), 0);
	uint8_t want[512];
	fill_random(want, 512, 9);
	assert_int_equal(disk_pread(d, back, 512, 0), 0);
	assert_memory_equal(back, want, 512);
	assert_int_equal(disk_close(d), 0);
	/* one more is refused */
	snprintf(cur, sizeof(cur), "%s/d%d.vhd", s->dir, DISK_MAX_CHAIN);
	create(cur, DISK_TYPE_DIFFERENCING, prev);
	assert_int_equal(disk_open(cur, DISK_OPEN_RDONLY, &d, &err), -ELOOP);
	print_message("%s\n", err.msg);
	assert_non_null(strstr(err.msg, "deeper"));
	/* the top alone can still be inspected */
	assert_int_equal(disk_open(cur, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &d, &err), 0);
	assert_int_equal(disk_close(d), 0);
}

static void test_mixed_formats(void **state)
{
	struct scratch *s = *state;
	const char *raw = scratch_path(s, "p.img");
	const char *p = scratch_path(s, "p.vhd");
	const char *c = scratch_path(s, "c.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_RAW, .type = DISK_TYPE_FIXED,
				      .size = SIZE };
	struct disk_error err = { 0 };
	struct disk *d = NULL;

	assert_int_equal(disk_create(raw, &o, &err), 0);
	/* a VHD child of a raw parent is refused at creation */
	o.format = DISK_FORMAT_VHD;
	o.type = DISK_TYPE_DIFFERENCING;
	o.size = 0;
	o.parent = raw;
	assert_int_equal(disk_create(c, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "mixed"));
	assert_int_equal(access(c, F_OK), -1);
	/* and at open, when another format takes the parent's place */
	create(p, DISK_TYPE_DYNAMIC, NULL);
	create(c, DISK_TYPE_DIFFERENCING, p);
	assert_int_equal(rename(raw, p), 0);
	assert_int_equal(disk_open(c, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
	print_message("%s\n", err.msg);
	assert_non_null(strstr(err.msg, "mixed"));
	/* a child must have its parent's size */
	o.parent = c;
	o.size = SIZE * 2;
	/* c cannot be opened (its parent is raw now): an error, and no file */
	assert_int_equal(disk_create(scratch_path(s, "x.vhd"), &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "mixed"));
	assert_int_equal(access(scratch_path(s, "x.vhd"), F_OK), -1);
}

static void test_child_size(void **state)
{
	struct scratch *s = *state;
	const char *p = scratch_path(s, "p.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DIFFERENCING,
				      .size = SIZE * 2, .parent = p };
	struct disk_error err = { 0 };

	create(p, DISK_TYPE_DYNAMIC, NULL);
	assert_int_equal(disk_create(scratch_path(s, "c.vhd"), &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "differs"));
	assert_int_equal(access(scratch_path(s, "c.vhd"), F_OK), -1);
	/* the relative locator wins when the pair moves together */
	create(scratch_path(s, "c.vhd"), DISK_TYPE_DIFFERENCING, p);
	assert_int_equal(run_cmd("mkdir '%s/moved' && mv '%s' '%s' '%s/moved/'", s->dir, p,
				 scratch_path(s, "c.vhd"), s->dir), 0);
	struct disk *d;
	char moved[256];
	snprintf(moved, sizeof(moved), "%s/moved/c.vhd", s->dir);
	assert_int_equal(disk_open(moved, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_non_null(strstr(disk_path(disk_parent(d)), "/moved/"));
	assert_int_equal(disk_close(d), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_three_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_parent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mismatched_parent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_depth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mixed_formats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_child_size, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
