/* VHDX through the public disk API: Hyper-V's own files, qemu-img as the
 * independent peer in both directions, differencing chains, resize. */
#include <sys/stat.h>

#include "test_vhdx_util.h"
#include "disk/vhdx.h"

#define HYPERV_FIXED_SHA "bc0be4623b15aa84216fb31ba24e3b621ec7f1c72d198c990ac0eced222d9f62"
#define HYPERV_DYNAMIC_SHA "8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac"
#define HYPERV_PARENT "Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx"

static void check_guid(const struct guid *g, const char *want)
{
	char s[GUID_STR_LEN];

	assert_string_equal(guid_to_string(g, s), want);
}

static void test_hyperv_fixed(void **state)
{
	struct vt *t = *state;
	char *img = vt_hyperv(t, "fixed.vhdx"), sha[65];
	struct disk_info info;
	uint8_t sec[512];
	size_t before_len, after_len;
	uint8_t *before = vt_slurp(img, &before_len), *after;
	struct disk *d = vt_open(img, DISK_OPEN_RDONLY);

	disk_get_info(d, &info);
	assert_int_equal(info.format, DISK_FORMAT_VHDX);
	assert_int_equal(info.type, DISK_TYPE_FIXED);
	assert_int_equal(info.virtual_size, 10485760);
	assert_int_equal(info.block_size, 2 * MiB);
	assert_int_equal(info.logical_sector, 512);
	assert_int_equal(info.allocated, 10485760);
	check_guid(&info.disk_id, "4a49d245-db0a-4634-9818-9f93db5ba6c1");
	assert_int_equal(disk_pread(d, sec, 512, 0), 0);
	assert_int_equal(sec[510], 0x55);
	assert_int_equal(sec[511], 0xaa);
	assert_int_equal(disk_pread(d, sec, 512, 0x200000), 0);
	for (int i = 0; i < 512; i++)
		assert_int_equal(sec[i], 0xff);
	vt_dump(d, vt_path(t, "fixed.raw"));
	disk_close(d);
	vt_sha256(vt_path(t, "fixed.raw"), sha);
	assert_string_equal(sha, HYPERV_FIXED_SHA);
	after = vt_slurp(img, &after_len);
	assert_int_equal(before_len, after_len);
	assert_memory_equal(before, after, before_len);
	free(before);
	free(after);
}

static void test_hyperv_dynamic(void **state)
{
	struct vt *t = *state;
	char *img = vt_hyperv(t, "dynamic.vhdx"), sha[65];
	struct disk_info info;
	struct disk *d = vt_open(img, DISK_OPEN_RDONLY);

	disk_get_info(d, &info);
	assert_int_equal(info.type, DISK_TYPE_DYNAMIC);
	assert_int_equal(info.virtual_size, 10485760);
	assert_int_equal(info.block_size, 32 * MiB);
	assert_int_equal(info.logical_sector, 512);
	check_guid(&info.disk_id, "788015f0-5e93-4bd2-a5de-b0cd8459db11");
	vt_dump(d, vt_path(t, "dynamic.raw"));
	disk_close(d);
	vt_sha256(vt_path(t, "dynamic.raw"), sha);
	assert_string_equal(sha, HYPERV_DYNAMIC_SHA);
	/* a read-write open of a Windows file works too (and leaves it valid) */
	d = vt_open(img, 0);
	assert_int_equal(disk_close(d), 0);
	d = vt_open(img, DISK_OPEN_RDONLY);
	vt_dump(d, vt_path(t, "dynamic2.raw"));
	disk_close(d);
	vt_sha256(vt_path(t, "dynamic2.raw"), sha);
	assert_string_equal(sha, HYPERV_DYNAMIC_SHA);
}

static void test_hyperv_differencing(void **state)
{
	struct vt *t = *state;
	char *img = vt_hyperv(t, "differencing.avhdx");
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d = NULL;
	uint8_t *buf = malloc(2 * MiB);
	const char *tail;
	int ret;

	d = vt_open(img, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT);
	disk_get_info(d, &info);
	assert_int_equal(info.type, DISK_TYPE_DIFFERENCING);
	assert_true(info.has_parent);
	assert_int_equal(info.virtual_size, 8 * GiB);
	assert_int_equal(info.block_size, 2 * MiB);
	assert_int_equal(info.logical_sector, 512);
	assert_int_equal(info.physical_sector, 4096);
	check_guid(&info.disk_id, "89ca62b5-b00d-4b8e-b79a-87e20cad5a40");
	check_guid(&info.parent_linkage, "ff34003b-11ed-4cf8-a166-b2be05e20b80");
	tail = strrchr(info.parent_path, '/');
	assert_non_null(tail);
	assert_string_equal(tail + 1, HYPERV_PARENT);
	assert_string_equal(info.parent_path, vt_path(t, HYPERV_PARENT));
	/* data of a block not in this file needs the parent */
	bool alloc = true;
	uint64_t run = 0;
	assert_int_equal(disk_block_status(d, 0, 8 * GiB, &alloc, &run), 0);
	uint64_t hole = alloc ? run : 0;
	if (hole < 8 * GiB)
		assert_int_equal(disk_pread(d, buf, 512, hole), -ENXIO);
	/* what this file holds (partially present blocks: sector bitmaps)
	 * reads without the parent */
	uint64_t off = 0, held = 0;
	while (off < 8 * GiB) {
		assert_int_equal(disk_block_status(d, off, 8 * GiB - off, &alloc, &run), 0);
		for (uint64_t o = off; alloc && o < off + run; o += MIN(run - (o - off), 2 * MiB))
			assert_int_equal(disk_pread(d, buf, (size_t)MIN(run - (o - off), 2 * MiB), o), 0);
		held += alloc ? run : 0;
		off += run;
	}
	assert_true(held > 0);
	assert_int_equal(held, info.allocated);
	disk_close(d);

	ret = disk_open(img, DISK_OPEN_RDONLY, &d, &err);
	assert_int_equal(ret, -ENOENT);
	assert_non_null(strstr(err.msg, HYPERV_PARENT));
	free(buf);
}

/* A raw file with random data in some ranges and zero holes elsewhere. */
static void make_raw(const char *path, uint64_t size, unsigned seed)
{
	uint8_t *buf = calloc(1, size);
	uint64_t x = seed;

	assert_non_null(buf);
	for (int i = 0; i < 12; i++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t off = (x >> 16) % size & ~511ULL;
		uint64_t len = MIN(size - off, (uint64_t)((x >> 40) % (3 * MiB)) & ~511ULL);
		vt_fill(buf + off, (size_t)len, seed + (unsigned)i);
	}
	vt_fill(buf + size - 4096, 4096, seed); /* the last sector too */
	vt_spew(path, buf, size);
	free(buf);
}

static void assert_same_as_raw(const struct vt *t, const char *img, const char *raw)
{
	char a[65], b[65];
	struct disk *d = vt_open(img, DISK_OPEN_RDONLY);

	vt_dump(d, vt_path(t, "dump.raw"));
	disk_close(d);
	vt_sha256(vt_path(t, "dump.raw"), a);
	vt_sha256(raw, b);
	assert_string_equal(a, b);
}

static void test_qemu_made(void **state)
{
	struct vt *t = *state;
	const char *bs[] = { "1M", "8M", "32M" };
	char *raw = vt_path(t, "src.raw");

	if (!vt_have_qemu_img())
		skip(); /* qemu-img is not installed on this host */
	make_raw(raw, 45 * MiB + 3 * 512, 7);
	for (size_t i = 0; i < ARRAY_SIZE(bs); i++) {
		char *img = vt_path(t, "q.vhdx"), *empty = vt_path(t, "e.vhdx");
		struct disk_info info;
		struct disk *d;
		uint8_t z[4096];

		unlink(img);
		unlink(empty);
		assert_int_equal(run_cmd("qemu-img convert -f raw -O vhdx -o block_size=%s '%s' '%s'",
					bs[i], raw, img), 0);
		assert_same_as_raw(t, img, raw);
		assert_int_equal(run_cmd("qemu-img create -q -f vhdx -o block_size=%s '%s' 20M",
					bs[i], empty), 0);
		d = vt_open(empty, DISK_OPEN_RDONLY);
		disk_get_info(d, &info);
		assert_int_equal(info.virtual_size, 20 * MiB);
		assert_int_equal(info.allocated, 0);
		assert_int_equal(disk_pread(d, z, sizeof(z), 19 * MiB), 0);
		for (size_t k = 0; k < sizeof(z); k++)
			assert_int_equal(z[k], 0);
		disk_close(d);
	}
}

/* Writes a pattern through the library and into a raw shadow file. */
static void write_both(struct disk *d, int raw, uint64_t off, size_t len, unsigned seed)
{
	uint8_t *buf = malloc(len);

	vt_fill(buf, len, seed);
	assert_int_equal(disk_pwrite(d, buf, len, off), 0);
	assert_int_equal(pwrite_full(raw, buf, len, (off_t)off), 0);
	free(buf);
}

static void zero_raw(int raw, uint64_t off, uint64_t len)
{
	uint8_t *z = calloc(1, len);

	assert_int_equal(pwrite_full(raw, z, len, (off_t)off), 0);
	free(z);
}

static void exercise(const struct vt *t, const char *img, const char *raw_path, uint32_t lsec)
{
	struct disk *d = vt_open(img, 0);
	uint64_t size = disk_size(d);
	int raw = open(raw_path, O_RDWR | O_CREAT | O_TRUNC, 0644);

	assert_true(raw >= 0);
	assert_int_equal(ftruncate(raw, (off_t)size), 0);
	write_both(d, raw, 0, lsec, 1);
	write_both(d, raw, 3 * MiB - lsec, 2 * lsec + 8192, 2); /* crosses blocks */
	write_both(d, raw, 10 * MiB, 4 * MiB, 3);
	write_both(d, raw, size - lsec, lsec, 4);
	write_both(d, raw, 20 * MiB + 7 * lsec, 5 * lsec, 5);
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(disk_discard(d, 10 * MiB, 1 * MiB), 0); /* a whole 1 MiB block or part */
	zero_raw(raw, 10 * MiB, 1 * MiB);
	assert_int_equal(disk_write_zeroes(d, 12 * MiB + lsec, 3 * lsec, false), 0);
	zero_raw(raw, 12 * MiB + lsec, 3 * lsec);
	write_both(d, raw, 10 * MiB + 2 * lsec, lsec, 6); /* write into the discarded range */
	assert_int_equal(disk_close(d), 0);
	close(raw);
}

static void test_ours_with_qemu(void **state)
{
	struct vt *t = *state;
	struct {
		enum disk_type type;
		uint32_t bs, lsec;
	} cases[] = {
		{ DISK_TYPE_DYNAMIC, 1 * MiB, 512 },  { DISK_TYPE_DYNAMIC, 32 * MiB, 512 },
		{ DISK_TYPE_FIXED, 1 * MiB, 512 },    { DISK_TYPE_FIXED, 8 * MiB, 512 },
		{ DISK_TYPE_DYNAMIC, 1 * MiB, 4096 }, { DISK_TYPE_FIXED, 2 * MiB, 4096 },
	};
	bool qemu = vt_have_qemu_img();

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char *img = vt_path(t, "ours.vhdx"), *raw = vt_path(t, "ours.raw");
		char report[1024] = "";
		struct disk_error err = { 0 };

		unlink(img);
		vt_create(img, cases[i].type, 40 * MiB + 3 * 4096, cases[i].bs, cases[i].lsec, NULL);
		exercise(t, img, raw, cases[i].lsec);
		assert_same_as_raw(t, img, raw);
		assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
		if (qemu && cases[i].lsec == 512) {
			assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);
			assert_int_equal(run_cmd("qemu-img compare -q -f vhdx -F raw '%s' '%s'", img,
						raw), 0);
		}
	}
}

static void test_differencing_chain(void **state)
{
	struct vt *t = *state;
	char *base = vt_path(t, "base.vhdx"), *mid = vt_path(t, "mid.vhdx");
	char *top = vt_path(t, "top.vhdx"), *raw = vt_path(t, "chain.raw");
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d;
	int rawfd;

	vt_create(base, DISK_TYPE_DYNAMIC, 16 * MiB, 1 * MiB, 512, NULL);
	rawfd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_int_equal(ftruncate(rawfd, 16 * MiB), 0);
	d = vt_open(base, 0);
	write_both(d, rawfd, 0, 4 * MiB, 11);
	disk_close(d);
	vt_create(mid, DISK_TYPE_DIFFERENCING, 0, 0, 0, base);
	d = vt_open(mid, 0);
	write_both(d, rawfd, 512, 1024, 12);		/* partial: sector bitmap */
	write_both(d, rawfd, 2 * MiB, 2 * MiB, 13);	/* a whole block */
	write_both(d, rawfd, 5 * MiB + 4096, 4096, 14); /* over a parent hole */
	disk_close(d);
	vt_create(top, DISK_TYPE_DIFFERENCING, 0, 0, 0, mid);
	d = vt_open(top, 0);
	write_both(d, rawfd, 1024, 512, 15);
	write_both(d, rawfd, 3 * MiB - 512, 1024, 16);
	assert_int_equal(disk_discard(d, 3 * MiB - 512, 512), 0); /* back to mid's data */
	{
		/* mid wrote seed 13 over [2M, 4M): the discarded sector shows that */
		uint8_t *m = malloc(2 * MiB);
		vt_fill(m, 2 * MiB, 13);
		assert_int_equal(pwrite_full(rawfd, m + MiB - 512, 512, 3 * MiB - 512), 0);
		free(m);
	}
	disk_get_info(d, &info);
	assert_true(info.has_parent);
	assert_string_equal(info.parent_path, mid);
	disk_close(d);
	close(rawfd);
	assert_same_as_raw(t, top, raw);

	/* the parent changes: linkage no longer matches */
	d = vt_open(base, 0);
	uint8_t sec[512] = { 1 };
	assert_int_equal(disk_pwrite(d, sec, 512, 15 * MiB), 0);
	disk_close(d);
	assert_int_equal(disk_open(mid, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "does not match"));

	/* moving the child's parent: found again through set-parent */
	assert_int_equal(run_cmd("mkdir -p '%s/moved' && mv '%s' '%s/moved/'", t->s.dir, top, t->s.dir), 0);
	d = vt_open(vt_path(t, "moved/top.vhdx"), DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT);
	disk_close(d);
	assert_int_equal(disk_set_parent(vt_path(t, "moved/top.vhdx"), base, &err), -EINVAL);
}

static void test_set_parent(void **state)
{
	struct vt *t = *state;
	char *base = vt_path(t, "p.vhdx"), *child = vt_path(t, "c.vhdx");
	struct disk_error err = { 0 };
	struct disk *d;
	uint8_t a[4096], b[4096];

	vt_create(base, DISK_TYPE_DYNAMIC, 8 * MiB, 1 * MiB, 512, NULL);
	d = vt_open(base, 0);
	vt_fill(a, sizeof(a), 21);
	assert_int_equal(disk_pwrite(d, a, sizeof(a), 4096), 0);
	disk_close(d);
	vt_create(child, DISK_TYPE_DIFFERENCING, 0, 0, 0, base);
	assert_int_equal(run_cmd("mkdir -p '%s/elsewhere' && mv '%s' '%s/elsewhere/renamed.vhdx'",
				t->s.dir, base, t->s.dir), 0);
	assert_int_equal(disk_open(child, DISK_OPEN_RDONLY, &d, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "p.vhdx"));
	assert_int_equal(disk_set_parent(child, vt_path(t, "elsewhere/renamed.vhdx"), &err), 0);
	d = vt_open(child, DISK_OPEN_RDONLY);
	assert_int_equal(disk_pread(d, b, sizeof(b), 4096), 0);
	assert_memory_equal(a, b, sizeof(a));
	disk_close(d);
	/* a different disk of the same size is refused */
	vt_create(vt_path(t, "other.vhdx"), DISK_TYPE_DYNAMIC, 8 * MiB, 1 * MiB, 512, NULL);
	assert_int_equal(disk_set_parent(child, vt_path(t, "other.vhdx"), &err), -EINVAL);
	assert_non_null(strstr(err.msg, "does not match"));
}

static void test_resize(void **state)
{
	struct vt *t = *state;
	char *img = vt_path(t, "r.vhdx");
	struct disk_error err = { 0 };
	struct disk *d;
	uint8_t a[4096], b[4096];

	vt_create(img, DISK_TYPE_DYNAMIC, 64 * MiB, 1 * MiB, 512, NULL);
	d = vt_open(img, 0);
	vt_fill(a, sizeof(a), 31);
	assert_int_equal(disk_pwrite(d, a, sizeof(a), 10 * MiB), 0);
	disk_close(d);
	assert_int_equal(disk_resize(img, 8 * MiB, &err), -ENOTEMPTY);
	assert_int_equal(disk_resize(img, 32 * MiB, &err), 0);
	assert_int_equal(disk_resize(img, 96 * MiB, &err), 0);
	/* far enough that the BAT region must move */
	assert_int_equal(disk_resize(img, 300 * GiB, &err), 0);
	d = vt_open(img, 0);
	assert_int_equal(disk_size(d), 300 * GiB);
	assert_int_equal(disk_pread(d, b, sizeof(b), 10 * MiB), 0);
	assert_memory_equal(a, b, sizeof(a));
	assert_int_equal(disk_pread(d, b, sizeof(b), 299 * GiB), 0);
	for (size_t i = 0; i < sizeof(b); i++)
		assert_int_equal(b[i], 0);
	assert_int_equal(disk_pwrite(d, a, sizeof(a), 299 * GiB), 0);
	disk_close(d);
	d = vt_open(img, DISK_OPEN_RDONLY);
	assert_int_equal(disk_pread(d, b, sizeof(b), 299 * GiB), 0);
	assert_memory_equal(a, b, sizeof(a));
	disk_close(d);
	if (vt_have_qemu_img())
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);
	/* a fixed disk grows with allocated blocks */
	img = vt_path(t, "rf.vhdx");
	vt_create(img, DISK_TYPE_FIXED, 8 * MiB, 1 * MiB, 512, NULL);
	assert_int_equal(disk_resize(img, 20 * MiB, &err), 0);
	d = vt_open(img, 0);
	struct disk_info info;
	disk_get_info(d, &info);
	assert_int_equal(info.allocated, 20 * MiB);
	disk_close(d);
	assert_int_equal(disk_resize(img, 4 * MiB, &err), -ENOTEMPTY);
	if (vt_have_qemu_img())
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);
}

static void test_create_errors(void **state)
{
	struct vt *t = *state;
	struct disk_create_opts o = { .format = DISK_FORMAT_VHDX, .type = DISK_TYPE_DYNAMIC,
				      .size = 8 * MiB, .block_size = 3 * MiB };
	struct disk_error err = { 0 };

	assert_int_equal(disk_create(vt_path(t, "bad.vhdx"), &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "block size"));
	assert_int_equal(access(vt_path(t, "bad.vhdx"), F_OK), -1);
	o.block_size = 0;
	o.size = 65 * TiB;
	assert_int_equal(disk_create(vt_path(t, "bad.vhdx"), &o, &err), -EINVAL);
	o.size = 8 * MiB;
	o.logical_sector = 1024;
	assert_int_equal(disk_create(vt_path(t, "bad.vhdx"), &o, &err), -EINVAL);
	/* 64 TiB itself is fine, and sparse */
	o.logical_sector = 4096;
	o.size = 64 * TiB;
	o.block_size = 256 * MiB;
	assert_int_equal(disk_create(vt_path(t, "big.vhdx"), &o, &err), 0);
	struct disk *d = vt_open(vt_path(t, "big.vhdx"), 0);
	uint8_t a[4096], b[4096];
	vt_fill(a, sizeof(a), 3);
	assert_int_equal(disk_pwrite(d, a, sizeof(a), 64 * TiB - 4096), 0);
	assert_int_equal(disk_pread(d, b, sizeof(b), 64 * TiB - 4096), 0);
	assert_memory_equal(a, b, sizeof(a));
	disk_close(d);
}


/* O_DIRECT: every buffer the driver reads or writes metadata with must be
 * aligned; allocation, bitmaps and log replay all run here. */
static void test_direct_io(void **state)
{
	struct vt *t = *state;
	char *base = vt_path(t, "db.vhdx"), *child = vt_path(t, "dc.vhdx");
	struct disk_error err = { 0 };
	uint8_t *a = NULL, *b = NULL;
	struct disk *d;
	int ret;

	vt_create(base, DISK_TYPE_DYNAMIC, 16 * MiB, 1 * MiB, 512, NULL);
	ret = disk_open(base, DISK_OPEN_DIRECT, &d, &err);
	if (ret == -EINVAL && strstr(err.msg, "O_DIRECT"))
		skip(); /* this filesystem has no O_DIRECT */
	assert_int_equal(ret, 0);
	assert_int_equal(posix_memalign((void **)&a, 4096, 64 * KiB), 0);
	assert_int_equal(posix_memalign((void **)&b, 4096, 64 * KiB), 0);
	vt_fill(a, 64 * KiB, 51);
	assert_int_equal(disk_pwrite(d, a, 64 * KiB, 5 * MiB), 0);
	assert_int_equal(disk_pread(d, b, 64 * KiB, 5 * MiB), 0);
	assert_memory_equal(a, b, 64 * KiB);
	disk_close(d);
	vt_create(child, DISK_TYPE_DIFFERENCING, 0, 1 * MiB, 0, base);
	d = vt_open(child, DISK_OPEN_DIRECT);
	assert_int_equal(disk_pwrite(d, a, 4096, 5 * MiB + 8192), 0); /* partial: bitmap */
	vhdx_test_crash_at(d, 1);
	assert_int_equal(disk_pwrite(d, a + 4096, 4096, 9 * MiB), 0);
	disk_close(d);
	d = vt_open(child, DISK_OPEN_DIRECT); /* replays the log with O_DIRECT */
	assert_int_equal(disk_pread(d, b, 64 * KiB, 5 * MiB), 0);
	assert_memory_equal(b, a, 8192);	 /* the parent's */
	assert_memory_equal(b + 8192, a, 4096); /* the child's */
	assert_int_equal(disk_pread(d, b, 4096, 9 * MiB), 0);
	assert_memory_equal(b, a + 4096, 4096);
	disk_close(d);
	free(a);
	free(b);
}

/* disk_map: where guest ranges live, for callers doing their own I/O. */
static void test_map(void **state)
{
	struct vt *t = *state;
	char *img = vt_path(t, "m.vhdx"), *child = vt_path(t, "mc.vhdx");
	struct disk_extent ext;
	uint8_t a[4096], b[4096];
	struct disk *d;

	vt_create(img, DISK_TYPE_DYNAMIC, 8 * MiB, 1 * MiB, 512, NULL);
	d = vt_open(img, 0);
	vt_fill(a, sizeof(a), 61);
	assert_int_equal(disk_pwrite(d, a, sizeof(a), 1 * MiB + 4096), 0);
	assert_int_equal(disk_map(d, 0, 8 * MiB, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_ZERO);
	assert_int_equal(ext.len, 1 * MiB);
	assert_int_equal(disk_map(d, 1 * MiB + 4096, 8 * MiB - (1 * MiB + 4096), &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	assert_int_equal(ext.len, 1 * MiB - 4096);
	assert_int_equal(pread_full(ext.fd, b, sizeof(b), (off_t)ext.file_off), 0);
	assert_memory_equal(a, b, sizeof(a));
	assert_int_equal(disk_map(d, 2 * MiB, 100 * 512, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_ZERO);
	assert_int_equal(ext.len, 100 * 512);
	disk_close(d);

	vt_create(child, DISK_TYPE_DIFFERENCING, 0, 1 * MiB, 0, img);
	d = vt_open(child, 0);
	assert_int_equal(disk_pwrite(d, a, 1024, 3 * MiB + 512), 0);
	assert_int_equal(disk_map(d, 3 * MiB, 8 * MiB - (3 * MiB), &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_PARENT);
	assert_int_equal(ext.len, 512);
	assert_int_equal(disk_map(d, 3 * MiB + 512, 8 * MiB - (3 * MiB + 512), &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	assert_int_equal(ext.len, 1024);
	assert_int_equal(pread_full(ext.fd, b, 1024, (off_t)ext.file_off), 0);
	assert_memory_equal(a, b, 1024);
	assert_int_equal(disk_map(d, 3 * MiB + 1536, 8 * MiB - (3 * MiB + 1536), &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_PARENT);
	assert_int_equal(ext.len, 5 * MiB - 1536);
	bool alloc;
	uint64_t run;
	assert_int_equal(disk_block_status(d, 0, 8 * MiB, &alloc, &run), 0);
	assert_false(alloc);
	assert_int_equal(run, 3 * MiB + 512);
	disk_close(d);
}

/* A header copy that is valid but older: no finding; repair brings it up to date. */
static void test_stale_header(void **state)
{
	struct vt *t = *state;
	char *img = vt_path(t, "s.vhdx"), report[1024] = "";
	struct disk_error err = { 0 };
	size_t len;
	uint8_t *before, *after;
	struct disk *d;

	vt_create(img, DISK_TYPE_DYNAMIC, 8 * MiB, 1 * MiB, 512, NULL);
	before = vt_slurp(img, &len);
	d = vt_open(img, 0);
	uint8_t a[512] = { 9 };
	assert_int_equal(disk_pwrite(d, a, 512, 0), 0);
	disk_close(d);
	after = vt_slurp(img, &len);
	/* put back one old header copy: valid CRC, lower sequence, old guids */
	memcpy(after + 64 * KiB, before + 64 * KiB, 4096);
	vt_spew(img, after, len);
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
	assert_null(strstr(report, "older")); /* a normal state: no finding */
	report[0] = 0;
	assert_int_equal(disk_check(img, true, report, sizeof(report), &err), 0);
	assert_non_null(strstr(report, "up to date"));
	report[0] = 0;
	assert_int_equal(disk_check(img, true, report, sizeof(report), &err), 0);
	assert_null(strstr(report, "older"));
	free(before);
	free(after);
}

/* Random writes, discards, write-zeroes and reopens against a model of the
 * disk (the parent's data for a differencing disk). */
static void random_ops(const struct vt *t, const char *img, uint8_t *model, const uint8_t *parent,
		       uint64_t size, uint32_t lsec, unsigned seed)
{
	uint64_t x = (seed + (getenv("VT_SEED") ? (unsigned)atoi(getenv("VT_SEED")) : 0)) *
			     2654435761ULL + 1;
	uint8_t *buf = malloc(3 * MiB), *got = malloc(size);
	struct disk *d = vt_open(img, 0);

	for (int op = 0; op < 300; op++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t sectors = size / lsec;
		uint64_t off = (x >> 17) % sectors * lsec;
		uint64_t len = MIN(((x >> 45) % (3 * MiB / lsec) + 1) * lsec, size - off);
		int kind = (int)((x >> 3) % 10);

		if (kind < 5) {
			vt_fill(buf, (size_t)len, (unsigned)op);
			assert_int_equal(disk_pwrite(d, buf, (size_t)len, off), 0);
			memcpy(model + off, buf, (size_t)len);
		} else if (kind < 7) {
			assert_int_equal(disk_discard(d, off, len), 0);
			if (parent)
				memcpy(model + off, parent + off, (size_t)len);
			else
				memset(model + off, 0, (size_t)len);
		} else if (kind < 9) {
			assert_int_equal(disk_write_zeroes(d, off, len, x & 1), 0);
			memset(model + off, 0, (size_t)len);
		} else {
			assert_int_equal(disk_close(d), 0);
			d = vt_open(img, 0);
		}
		if (getenv("VT_EVERY") || op % 50 == 49 || op == 299) {
			assert_int_equal(disk_pread(d, got, (size_t)size, 0), 0);
			for (uint64_t i = 0; i < size; i++)
				if (got[i] != model[i]) {
					fprintf(stderr, "%s: op %d (kind %d off %llu len %llu): byte %llu differs: %02x, want %02x\n", img, op, kind,
						(unsigned long long)off, (unsigned long long)len, (unsigned long long)i, got[i], model[i]);
					fail();
				}
		}
	}
	assert_int_equal(disk_close(d), 0);
	free(buf);
	free(got);
	(void)t;
}

/* Blocks freed by discard take new blocks instead of the file growing:
 * 32 blocks written, 16 discarded, 16 others written; the file keeps its
 * size, each block reads what it should (the discarded ones zeroes, the
 * new ones their data, nothing of what the reused space held before), and
 * both checks are clean. Through the block map nothing is reused: the
 * library cannot see the caller's I/O still using the old place. */
static uint64_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

static void fill_blocks(struct disk *d, uint8_t *buf, int from, int to, unsigned seed)
{
	for (int i = from; i < to; i++) {
		vt_fill(buf, MiB, seed + (unsigned)i);
		assert_int_equal(disk_pwrite(d, buf, MiB, (uint64_t)i * MiB), 0);
	}
}

static void test_discard_reuse(void **state)
{
	struct vt *t = *state;
	char *img = vt_path(t, "reuse.vhdx"), report[1024];
	uint8_t *buf = malloc(MiB), *want = malloc(MiB);
	struct disk_error err;
	struct disk_extent ext;
	bool commit;
	uint64_t size;
	struct disk *d;

	vt_create(img, DISK_TYPE_DYNAMIC, 64 * MiB, 1 * MiB, 512, NULL);
	d = vt_open(img, 0);
	fill_blocks(d, buf, 0, 32, 500);
	assert_int_equal(disk_flush(d), 0);
	size = file_size(img);
	for (int i = 0; i < 32; i += 2)
		assert_int_equal(disk_discard(d, (uint64_t)i * MiB, MiB), 0);
	fill_blocks(d, buf, 32, 48, 600);
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(file_size(img), size); /* no growth: 16 blocks reused */
	disk_close(d);
	assert_int_equal(file_size(img), size);

	d = vt_open(img, DISK_OPEN_RDONLY);
	memset(want, 0, MiB);
	for (int i = 0; i < 48; i++) {
		assert_int_equal(disk_pread(d, buf, MiB, (uint64_t)i * MiB), 0);
		if (i < 32 && i % 2 == 0) {
			assert_memory_equal(buf, want, MiB);
			continue;
		}
		vt_fill(want, MiB, (i < 32 ? 500 : 600) + (unsigned)i);
		assert_memory_equal(buf, want, MiB);
		memset(want, 0, MiB);
	}
	disk_close(d);
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
	if (vt_have_qemu_img())
		assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", img), 0);

	/* a block-map user: discarded space is not handed out again */
	d = vt_open(img, 0);
	assert_int_equal(disk_map_write(d, 1 * MiB, 4096, DISK_MAP_ALLOC, &ext, &commit), 0);
	for (int i = 32; i < 48; i += 2)
		assert_int_equal(disk_discard(d, (uint64_t)i * MiB, MiB), 0);
	fill_blocks(d, buf, 48, 50, 700);
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(file_size(img), size + 2 * MiB);
	disk_close(d);
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
	free(buf);
	free(want);
}

static void test_random_ops(void **state)
{
	struct vt *t = *state;
	const uint64_t size = 12 * MiB + 4096;
	uint8_t *model = calloc(1, size), *parent = malloc(size);
	char report[1024];
	struct disk_error err;

	for (uint32_t lsec = 512; lsec <= 4096; lsec *= 8) {
		char *dyn = vt_path(t, lsec == 512 ? "rd512.vhdx" : "rd4k.vhdx");
		char *fix = vt_path(t, lsec == 512 ? "rf512.vhdx" : "rf4k.vhdx");
		char *dif = vt_path(t, lsec == 512 ? "rc512.vhdx" : "rc4k.vhdx");

		memset(model, 0, size);
		vt_create(dyn, DISK_TYPE_DYNAMIC, size, 1 * MiB, lsec, NULL);
		random_ops(t, dyn, model, NULL, size, lsec, 1 + lsec);
		memcpy(parent, model, size); /* the dynamic disk is the next one's parent */
		memset(model, 0, size);
		vt_create(fix, DISK_TYPE_FIXED, size, 2 * MiB, lsec, NULL);
		random_ops(t, fix, model, NULL, size, lsec, 2 + lsec);
		memcpy(model, parent, size);
		vt_create(dif, DISK_TYPE_DIFFERENCING, 0, 1 * MiB, 0, dyn);
		random_ops(t, dif, model, parent, size, lsec, 3 + lsec);
		assert_int_equal(disk_check(dyn, false, report, sizeof(report), &err), 0);
		assert_int_equal(disk_check(fix, false, report, sizeof(report), &err), 0);
		assert_int_equal(disk_check(dif, false, report, sizeof(report), &err), 0);
		if (lsec == 512 && vt_have_qemu_img()) {
			assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", dyn), 0);
			assert_int_equal(run_cmd("qemu-img check -q -f vhdx '%s'", fix), 0);
		}
	}
	free(model);
	free(parent);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hyperv_fixed, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_hyperv_dynamic, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_hyperv_differencing, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_qemu_made, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_ours_with_qemu, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_differencing_chain, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_set_parent, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_resize, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_create_errors, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_direct_io, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_map, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_stale_header, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_discard_reuse, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_random_ops, vt_setup, vt_teardown),
	};
	if (getenv("VT_ONLY")) /* run one test: VT_ONLY=test_name */
		cmocka_set_test_filter(getenv("VT_ONLY"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
