/* Differencing chains: reads through several levels, missing and
 * mismatched parents, cycles, depth, mixed formats, set-parent, discard. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/util.h"
#include "disk/disk.h"
#include "disk/disk_impl.h"
#include "diskcore_util.h"

#define SIZE (24 * MiB)

/* Each test runs for VHD and for VHDX (the prestate picks the format). */
struct chain_state {
	struct scratch s; /* first: tests use it as their scratch */
	enum disk_format fmt;
};

static enum disk_format fmt_vhd = DISK_FORMAT_VHD, fmt_vhdx = DISK_FORMAT_VHDX;

/* The format under test, for the helpers (set by setup). */
static enum disk_format cur_fmt;

static int setup(void **state)
{
	struct chain_state *st = calloc(1, sizeof(*st));

	if (!st || scratch_make(&st->s, "test_chain"))
		return -1;
	st->fmt = *state ? *(enum disk_format *)*state : DISK_FORMAT_VHD;
	cur_fmt = st->fmt;
	*state = st;
	return 0;
}

static int teardown(void **state)
{
	struct chain_state *st = *state;
	int ret = scratch_remove(&st->s);

	free(st);
	return ret;
}

/* "<dir>/<stem>.vhd" or ".vhdx" for the format under test. */
static const char *img(struct scratch *s, const char *stem)
{
	char name[64];

	snprintf(name, sizeof(name), "%s.%s", stem, disk_format_name(cur_fmt));
	return scratch_path(s, name);
}

static void create(const char *path, enum disk_type type, const char *parent)
{
	struct disk_create_opts o = { .format = cur_fmt, .type = type,
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
	const char *base = img(s, "base");
	const char *mid = img(s, "mid");
	const char *top = img(s, "top");

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
	verify(img(s, "top"), mt);
	verify(img(s, "mid"), mm);
	verify(img(s, "base"), mb);

	assert_int_equal(disk_open(img(s, "top"), DISK_OPEN_RDONLY, &d, &err), 0);
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
	const char *top = img(s, "top");
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
	if (cur_fmt == DISK_FORMAT_VHD && have_tool("qemu-img")) {
		const char *out = scratch_path(s, "q.raw");
		size_t len;
		assert_int_equal(run_cmd("qemu-img convert -f vpc -O raw '%s' '%s'",
					 img(s, "mid"), out), 0);
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
	const char *top = img(s, "top");
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d = NULL;
	uint8_t buf[4096];

	make_chain(s, mb, mm, mt);
	assert_int_equal(rename(img(s, "base"), img(s, "gone")), 0);
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
	assert_int_equal(disk_set_parent(img(s, "mid"), img(s, "gone"),
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
	const char *top = img(s, "top");
	const char *mid = img(s, "mid");
	const char *base = img(s, "base");
	const char *other = img(s, "other");
	struct disk_error err = { 0 };
	uint8_t *before, *after;
	size_t blen, alen;
	struct disk *d = NULL;

	make_chain(s, mb, mm, mt);
	/* another disk of the same size takes the parent's place */
	assert_int_equal(rename(base, img(s, "real-base")), 0);
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
	assert_int_equal(disk_open(img(s, "real-base"), DISK_OPEN_RDONLY, &real, &err),
			 0);
	assert_int_equal(disk_open(base, DISK_OPEN_RDONLY, &fake, &err), 0);
	disk_get_info(real, &ri);
	disk_get_info(fake, &fi);
	disk_close(real);
	disk_close(fake);
	/* the message names the id the child expects (VHD: the parent's unique
	 * id; VHDX: its DataWriteGuid), and for VHD the impostor's id */
	struct disk_info mi;
	assert_int_equal(disk_open(mid, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &d, &err), 0);
	disk_get_info(d, &mi);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, guid_to_string(&mi.parent_linkage, rs)));
	if (cur_fmt == DISK_FORMAT_VHD) {
		assert_non_null(strstr(err.msg, guid_to_string(&ri.disk_id, rs)));
		assert_non_null(strstr(err.msg, guid_to_string(&fi.disk_id, fs)));
	}
	/* set-parent to the wrong disk is refused and changes nothing */
	before = slurp(mid, &blen);
	assert_int_equal(disk_set_parent(mid, base, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "does not match"));
	after = slurp(mid, &alen);
	assert_int_equal(blen, alen);
	assert_memory_equal(before, after, blen);
	free(before);
	free(after);
	assert_int_equal(rename(img(s, "real-base"), base), 0);
	verify(top, mt);
	if (cur_fmt != DISK_FORMAT_VHD)
		goto out;
	/* VHD: a parent whose time stamp changed is refused too */
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
out:
	free(mb);
	free(mm);
	free(mt);
}

static void test_cycle(void **state)
{
	struct scratch *s = *state;
	const char *p = img(s, "p");
	const char *a = img(s, "a");
	const char *b = img(s, "b");
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
	assert_int_equal(rename(a, img(s, "a2")), 0);
	assert_int_equal(symlink(p, a), 0); /* a.vhd -> p.vhd (b), b's parent is a */
	assert_int_equal(disk_open(p, DISK_OPEN_RDONLY, &d, &err), -ELOOP);
}

/* Re-points a VHD differencing disk at parent by editing its header: the
 * parent's id and time stamp, and one MacX locator with its path. */
static void repoint_vhd(const char *child, const char *parent)
{
	uint8_t f[512], h[1024];
	char abs[4096], url[4200];
	struct stat st;

	assert_non_null(realpath(parent, abs));
	assert_int_equal(stat(parent, &st), 0);
	assert_int_equal(read_at(parent, (uint64_t)st.st_size - 512, f, 512), 0);
	assert_int_equal(read_at(child, 512, h, sizeof(h)), 0);
	uint64_t off = (uint64_t)be32_at(h + 576 + 24 + 16) << 32 | be32_at(h + 576 + 24 + 20);
	uint32_t space = be32_at(h + 576 + 24 + 4);
	snprintf(url, sizeof(url), "file://%s", abs);
	assert_true(strlen(url) <= space);
	memcpy(h + 40, f + 68, 16); /* parent unique id */
	memcpy(h + 56, f + 24, 4);  /* parent time stamp */
	memset(h + 64, 0, 512);
	memset(h + 576, 0, 24 * 8);
	memcpy(h + 576, "MacX", 4);
	put_be32_at(h + 576 + 4, space);
	put_be32_at(h + 576 + 8, (uint32_t)strlen(url));
	put_be64_at(h + 576 + 16, off);
	vhd_test_fix_checksum(h, sizeof(h), 36);
	assert_int_equal(patch_file(child, off, url, strlen(url)), 0);
	assert_int_equal(patch_file(child, 512, h, sizeof(h)), 0);
}

static void test_depth(void **state)
{
	struct scratch *s = *state;
	struct disk_error err = { 0 };
	char prev[256], cur[256];
	struct disk *d = NULL;
	uint8_t sec[512], back[512];

	snprintf(prev, sizeof(prev), "%s", img(s, "d0"));
	create(prev, DISK_TYPE_DYNAMIC, NULL);
	memset(sec, 0x42, sizeof(sec));
	uint8_t *model = calloc(1, SIZE);
	put(prev, model, 0, 512, 9);
	free(model);
	for (int i = 1; i < DISK_MAX_CHAIN; i++) {
		snprintf(cur, sizeof(cur), "%s/d%d.%s", s->dir, i, disk_format_name(cur_fmt));
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
	/* one more is refused: at creation ... */
	struct disk_create_opts o = { .format = cur_fmt, .type = DISK_TYPE_DIFFERENCING,
				      .parent = prev };
	snprintf(cur, sizeof(cur), "%s/d%d.%s", s->dir, DISK_MAX_CHAIN,
		 disk_format_name(cur_fmt));
	assert_int_equal(disk_create(cur, &o, &err), -ELOOP);
	assert_non_null(strstr(err.msg, "deeper"));
	assert_int_equal(access(cur, F_OK), -1);
	/* ... and at open (VHD, where the test can re-point a child by hand):
	 * a child of a shallower parent, re-pointed at the 64-deep top */
	if (cur_fmt == DISK_FORMAT_VHD) {
		char mid_path[256];
		snprintf(mid_path, sizeof(mid_path), "%s/d%d.vhd", s->dir, DISK_MAX_CHAIN - 2);
		o.parent = mid_path;
		assert_int_equal(disk_create(cur, &o, &err), 0); /* 64 images: allowed */
		repoint_vhd(cur, prev);
		assert_int_equal(disk_open(cur, DISK_OPEN_RDONLY, &d, &err), -ELOOP);
		print_message("%s\n", err.msg);
		assert_non_null(strstr(err.msg, "deeper"));
	} else {
		snprintf(cur, sizeof(cur), "%s", prev);
	}
	/* the top alone can still be inspected */
	assert_int_equal(disk_open(cur, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &d, &err), 0);
	assert_int_equal(disk_close(d), 0);
}

static void test_mixed_formats(void **state)
{
	struct scratch *s = *state;
	enum disk_format other = cur_fmt == DISK_FORMAT_VHD ? DISK_FORMAT_VHDX : DISK_FORMAT_VHD;
	enum disk_format others[] = { DISK_FORMAT_RAW, other };
	const char *p = img(s, "p");
	const char *c = img(s, "c");
	struct disk_error err = { 0 };
	struct disk *d = NULL;

	for (size_t i = 0; i < ARRAY_SIZE(others); i++) {
		const char *foreign = scratch_path(s, "foreign");
		struct disk_create_opts o = { .format = others[i], .type = DISK_TYPE_DYNAMIC,
					      .size = SIZE };

		unlink(foreign);
		unlink(c);
		unlink(p);
		assert_int_equal(disk_create(foreign, &o, &err), 0);
		/* a child of another format's parent is refused at creation */
		o.format = cur_fmt;
		o.type = DISK_TYPE_DIFFERENCING;
		o.size = 0;
		o.parent = foreign;
		assert_int_equal(disk_create(c, &o, &err), -EINVAL);
		print_message("%s\n", err.msg);
		assert_non_null(strstr(err.msg, "mixed"));
		assert_int_equal(access(c, F_OK), -1);
		/* and at open, when another format takes the parent's place */
		create(p, DISK_TYPE_DYNAMIC, NULL);
		create(c, DISK_TYPE_DIFFERENCING, p);
		assert_int_equal(rename(foreign, p), 0);
		assert_int_equal(disk_open(c, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
		print_message("%s\n", err.msg);
		assert_non_null(strstr(err.msg, "mixed"));
		assert_null(d);
		/* nor can a child be made on the broken chain */
		o.parent = c;
		assert_int_equal(disk_create(img(s, "x"), &o, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "mixed"));
		assert_int_equal(access(img(s, "x"), F_OK), -1);
	}
}

static void test_child_size(void **state)
{
	struct scratch *s = *state;
	const char *p = img(s, "p");
	struct disk_create_opts o = { .format = cur_fmt, .type = DISK_TYPE_DIFFERENCING,
				      .size = SIZE * 2, .parent = p };
	struct disk_error err = { 0 };

	create(p, DISK_TYPE_DYNAMIC, NULL);
	assert_int_equal(disk_create(img(s, "c"), &o, &err), -EINVAL);
	print_message("%s\n", err.msg);
	assert_non_null(strstr(err.msg, "differs"));
	assert_int_equal(access(img(s, "c"), F_OK), -1);
	/* the relative locator wins when the pair moves together */
	create(img(s, "c"), DISK_TYPE_DIFFERENCING, p);
	assert_int_equal(run_cmd("mkdir '%s/moved' && mv '%s' '%s' '%s/moved/'", s->dir, p,
				 img(s, "c"), s->dir), 0);
	struct disk *d;
	char moved[256];
	snprintf(moved, sizeof(moved), "%s/moved/c.%s", s->dir, disk_format_name(cur_fmt));
	assert_int_equal(disk_open(moved, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_non_null(strstr(disk_path(disk_parent(d)), "/moved/"));
	assert_int_equal(disk_close(d), 0);
}

/* disk_open_fds: the chain from descriptors the caller opened, as a
 * sandboxed worker gets them; the files are renamed away first, so no
 * path could be opened. The same data; a wrong or short list refused. */
static void test_open_from_fds(void **state)
{
	struct scratch *s = *state;
	uint8_t *mb = calloc(1, SIZE), *mm = calloc(1, SIZE), *mt = calloc(1, SIZE);
	uint8_t *buf = malloc(SIZE);
	struct disk_error err = { 0 };
	struct disk *d;
	char moved[3][PATH_MAX];
	const char *names[3] = { "top", "mid", "base" };
	const char *paths[3];
	int fds[3];

	make_chain(s, mb, mm, mt);
	for (int i = 0; i < 3; i++) {
		char orig[4000];
		snprintf(orig, sizeof(orig), "%.3990s", img(s, names[i]));
		fds[i] = open(orig, i ? O_RDONLY : O_RDWR);
		assert_true(fds[i] >= 0);
		snprintf(moved[i], sizeof(moved[i]), "%.4000s.moved", orig);
		assert_int_equal(rename(orig, moved[i]), 0);
		paths[i] = moved[i];
	}
	assert_int_equal(disk_open_fds(paths, fds, 3, 0, &d, &err), 0);
	for (uint64_t off = 0; off < SIZE; off += 4 * MiB)
		assert_int_equal(disk_pread(d, buf + off, 4 * MiB, off), 0);
	assert_memory_equal(buf, mt, SIZE);
	fill_random(mt, 4096, 99); /* the top is writable */
	assert_int_equal(disk_pwrite(d, mt, 4096, 0), 0);
	assert_int_equal(disk_close(d), 0);
	/* the caller's descriptors are its own still */
	assert_true(fcntl(fds[0], F_GETFD) >= 0);

	/* a short list: the chain is longer */
	assert_int_equal(disk_open_fds(paths, fds, 2, DISK_OPEN_RDONLY, &d, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "not among the files given"));
	/* the wrong parent: base given as mid's parent's place is mid's */
	const char *swapped[3] = { paths[0], paths[2], paths[1] };
	int sfds[3] = { fds[0], fds[2], fds[1] };
	assert_true(disk_open_fds(swapped, sfds, 3, DISK_OPEN_RDONLY, &d, &err) < 0);
	/* a read-only descriptor for a top to be written */
	assert_int_equal(disk_open_fds(paths + 1, fds + 1, 2, 0, &d, &err), -EBADF);
	assert_non_null(strstr(err.msg, "read-only"));
	/* more files than the chain has */
	assert_int_equal(disk_open_fds(paths + 1, fds + 1, 2, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_close(d), 0);
	int extra[4] = { fds[0], fds[1], fds[2], fds[2] };
	const char *ep[4] = { paths[0], paths[1], paths[2], paths[2] };
	assert_int_equal(disk_open_fds(ep, extra, 4, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "were given"));
	for (int i = 0; i < 3; i++) {
		close(fds[i]);
		char orig[4000];
		snprintf(orig, sizeof(orig), "%.3990s", img(s, names[i]));
		assert_int_equal(rename(moved[i], orig), 0);
	}
	free(mb);
	free(mm);
	free(mt);
	free(buf);
}

/* The locks a live merge relies on (docs/daemon.md, Remove): the worker
 * "w" writes top over mid over base. */
static void test_live_merge_locks(void **state)
{
	struct scratch *s = *state;
	uint8_t *mb = calloc(1, SIZE), *mm = calloc(1, SIZE), *mt = calloc(1, SIZE);
	uint8_t sector[512];
	struct disk_error err = { 0 };
	struct disk *w, *o;
	struct disk_info info;

	make_chain(s, mb, mm, mt);
	char top[4000], mid[4000];
	snprintf(top, sizeof(top), "%.3990s", img(s, "top"));
	snprintf(mid, sizeof(mid), "%.3990s", img(s, "mid"));
	assert_int_equal(disk_open(top, 0, &w, &err), 0);
	/* written: nobody else opens it, but its locator can be read unlocked */
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY, &o, &err), -EBUSY);
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT | DISK_OPEN_NO_LOCK,
				   &o, &err), 0);
	disk_get_info(o, &info);
	assert_true(info.has_parent);
	assert_int_equal(disk_close(o), 0);
	/* shared: readers may open it (to make a child, to merge it) */
	assert_int_equal(disk_share(w), 0);
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY, &o, &err), 0);
	assert_int_equal(disk_close(o), 0);
	/* the worker reads mid: a writer cannot have it, a merge into it can */
	assert_int_equal(disk_open(mid, 0, &o, &err), -EBUSY);
	assert_int_equal(disk_open(mid, DISK_OPEN_SHARED_LOCK, &o, &err), 0);
	fill_random(sector, sizeof(sector), 5);
	assert_int_equal(disk_pwrite(o, sector, sizeof(sector), 3 * MiB), 0);
	assert_int_equal(disk_close(o), 0);
	/* a switch: the idle chain lets go of its locks for a new one */
	assert_int_equal(disk_lock_chain(w, false), 0);
	assert_int_equal(disk_open(mid, 0, &o, &err), 0);
	assert_int_equal(disk_lock_chain(w, true), -EBUSY); /* mid is taken */
	assert_int_equal(disk_close(o), 0);
	assert_int_equal(disk_lock_chain(w, true), 0);
	/* taken back as they were: top still shared, mid still read (top
	 * alone: a VHDX child no longer matches the mid the merge wrote) */
	assert_int_equal(disk_open(top, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &o, &err), 0);
	assert_int_equal(disk_close(o), 0);
	assert_int_equal(disk_open(mid, 0, &o, &err), -EBUSY);
	assert_int_equal(disk_close(w), 0);
	free(mb);
	free(mm);
	free(mt);
}

#define BOTH(t)                                                                \
	{ #t "_vhd", t, setup, teardown, &fmt_vhd },                           \
	{ #t "_vhdx", t, setup, teardown, &fmt_vhdx }

int main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_three_levels),
		BOTH(test_missing_parent),
		BOTH(test_mismatched_parent),
		BOTH(test_cycle),
		BOTH(test_depth),
		BOTH(test_mixed_formats),
		BOTH(test_child_size),
		BOTH(test_open_from_fds),
		BOTH(test_live_merge_locks),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
