/* Corrupt VHDX input: truncations, bad checksums, overlapping regions, BAT
 * entries past the end, unknown required regions and metadata, absurd
 * sizes, a damaged log, random damage. Each gives a clear error (or a
 * usable image where a good copy remains) and never a crash. */
#include "test_vhdx_util.h"
#include "common/crc32c.h"
#include "disk/vhdx.h"

#define IMG_SIZE (8 * MiB)
#define BAT_OFF (3 * MiB)  /* our create layout: header, log, metadata, BAT */
#define META_OFF (2 * MiB)
#define LOG_OFF (1 * MiB)

static uint8_t *base_img;
static size_t base_len;

/* Our image: three allocated blocks, 1 MiB block size. */
static void make_base(const struct vt *t)
{
	char *p = vt_path(t, "base.vhdx");
	struct disk *d;
	uint8_t buf[4096];

	vt_create(p, DISK_TYPE_DYNAMIC, IMG_SIZE, 1 * MiB, 512, NULL);
	d = vt_open(p, 0);
	for (int i = 0; i < 3; i++) {
		vt_fill(buf, sizeof(buf), (unsigned)i);
		assert_int_equal(disk_pwrite(d, buf, sizeof(buf), (uint64_t)(i * 3) * MiB), 0);
	}
	assert_int_equal(disk_close(d), 0);
	free(base_img);
	base_img = vt_slurp(p, &base_len);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static void fix_crc(uint8_t *img, size_t off, size_t len)
{
	put32(img + off + 4, 0);
	put32(img + off + 4, crc32c(0, img + off, len));
}

static void fix_all_crcs(uint8_t *img)
{
	fix_crc(img, VHDX_HEADER1_OFF, VHDX_HEADER_SIZE);
	fix_crc(img, VHDX_HEADER2_OFF, VHDX_HEADER_SIZE);
	fix_crc(img, VHDX_RT1_OFF, VHDX_RT_SIZE);
	fix_crc(img, VHDX_RT2_OFF, VHDX_RT_SIZE);
}

/* Writes img as a file and opens it; returns the error (0 = opened, then
 * reads everything, asks for info/status/check and closes). */
static int try_open(const struct vt *t, const uint8_t *img, size_t len, struct disk_error *err)
{
	char *p = vt_path(t, "try.vhdx");
	struct disk *d = NULL;
	int ret;

	vt_spew(p, img, len);
	memset(err, 0, sizeof(*err));
	ret = disk_open(p, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &d, err);
	if (ret) {
		assert_true(ret < 0);
		assert_true(err->msg[0] != 0);
		return ret;
	}
	struct disk_info info;
	uint8_t buf[64 * 1024];
	uint64_t size = disk_size(d), run;
	bool alloc;

	disk_get_info(d, &info);
	for (uint64_t off = 0; off < size && off < 64 * MiB; off += 512 * KiB)
		(void)disk_pread(d, buf, (size_t)MIN((uint64_t)sizeof(buf), size - off), off);
	(void)disk_block_status(d, 0, size, &alloc, &run);
	disk_close(d);
	char report[512];
	(void)disk_check(p, false, report, sizeof(report), err);
	memset(err, 0, sizeof(*err));
	return 0;
}

static uint8_t *copy_base(void)
{
	uint8_t *c = malloc(base_len);

	memcpy(c, base_img, base_len);
	return c;
}

static void expect_error(const struct vt *t, const uint8_t *img, size_t len, const char *needle)
{
	struct disk_error err;
	int ret = try_open(t, img, len, &err);

	if (!ret || (needle && !strstr(err.msg, needle)))
		fprintf(stderr, "expected an error with '%s', got %d '%s'\n", needle ? needle : "",
			ret, err.msg);
	assert_true(ret < 0);
	if (needle)
		assert_non_null(strstr(err.msg, needle));
}

static void test_truncated(void **state)
{
	struct vt *t = *state;
	struct disk_error err;
	size_t odd[] = { 8, 9, 511, 4096, 64 * KiB + 100, 128 * KiB + 4096, 192 * KiB,
			 256 * KiB + 10, MiB - 1 };

	make_base(t);
	for (size_t len = 0; len < base_len; len += 64 * KiB) {
		int ret = try_open(t, base_img, len, &err);
		if (len >= 8)
			assert_true(ret < 0);
	}
	for (size_t i = 0; i < ARRAY_SIZE(odd); i++)
		expect_error(t, base_img, odd[i], NULL);
	expect_error(t, base_img, base_len - 512, "past the end");
	expect_error(t, base_img, 3 * MiB + 512, "past the end");
	assert_int_equal(try_open(t, base_img, base_len, &err), 0);
}

static void test_headers(void **state)
{
	struct vt *t = *state;
	char report[1024] = "";
	struct disk_error err;
	char *p = vt_path(t, "h.vhdx");
	uint8_t *img;

	make_base(t);
	img = copy_base();
	img[VHDX_HEADER1_OFF + 100] ^= 0x10; /* one bad copy: the other serves */
	vt_spew(p, img, base_len);
	struct disk *d = vt_open(p, DISK_OPEN_RDONLY);
	disk_close(d);
	assert_int_equal(disk_check(p, false, report, sizeof(report), &err), 1);
	assert_non_null(strstr(report, "header copy 1"));
	report[0] = 0;
	assert_int_equal(disk_check(p, true, report, sizeof(report), &err), 0);
	assert_int_equal(disk_check(p, false, report, sizeof(report), &err), 0);
	img[VHDX_HEADER2_OFF + 3000] ^= 0x01;
	expect_error(t, img, base_len, "neither header");
	/* a valid CRC but a wrong version */
	free(img);
	img = copy_base();
	img[VHDX_HEADER1_OFF + 66] = 2;
	img[VHDX_HEADER2_OFF + 66] = 2;
	fix_all_crcs(img);
	expect_error(t, img, base_len, "neither header");
	/* the log placed over the header section */
	free(img);
	img = copy_base();
	put64(img + VHDX_HEADER1_OFF + 72, 4096);
	put64(img + VHDX_HEADER2_OFF + 72, 4096);
	fix_all_crcs(img);
	expect_error(t, img, base_len, "log");
	free(img);
}

static void test_region_tables(void **state)
{
	struct vt *t = *state;
	char report[1024] = "";
	struct disk_error err;
	char *p = vt_path(t, "r.vhdx"), gs[GUID_STR_LEN];
	uint8_t *img;
	struct guid g;

	make_base(t);
	img = copy_base();
	img[VHDX_RT1_OFF + 40] ^= 0x80;
	vt_spew(p, img, base_len);
	assert_int_equal(disk_check(p, false, report, sizeof(report), &err), 1);
	assert_non_null(strstr(report, "region table"));
	assert_int_equal(disk_check(p, true, report, sizeof(report), &err), 0);
	assert_int_equal(disk_check(p, false, report, sizeof(report), &err), 0);
	img[VHDX_RT2_OFF + 5000] ^= 0x01;
	expect_error(t, img, base_len, "region table");
	free(img);

	/* overlapping regions: metadata moved onto the BAT */
	img = copy_base();
	put64(img + VHDX_RT1_OFF + 64, BAT_OFF);
	memcpy(img + VHDX_RT2_OFF, img + VHDX_RT1_OFF, VHDX_RT_SIZE);
	fix_all_crcs(img);
	expect_error(t, img, base_len, "overlap");
	free(img);

	/* the BAT region past the end of the file */
	img = copy_base();
	put64(img + VHDX_RT1_OFF + 32, 64 * MiB);
	memcpy(img + VHDX_RT2_OFF, img + VHDX_RT1_OFF, VHDX_RT_SIZE);
	fix_all_crcs(img);
	expect_error(t, img, base_len, "past the end");
	free(img);

	/* an unknown region: refused when required, ignored when not */
	size_t len = base_len + MiB;
	img = calloc(1, len);
	memcpy(img, base_img, base_len);
	guid_generate(&g);
	guid_to_string(&g, gs);
	put32(img + VHDX_RT1_OFF + 8, 3);
	guid_to_le(&g, img + VHDX_RT1_OFF + 16 + 64);
	put64(img + VHDX_RT1_OFF + 16 + 64 + 16, base_len);
	put32(img + VHDX_RT1_OFF + 16 + 64 + 24, MiB);
	put32(img + VHDX_RT1_OFF + 16 + 64 + 28, 1);
	memcpy(img + VHDX_RT2_OFF, img + VHDX_RT1_OFF, VHDX_RT_SIZE);
	fix_all_crcs(img);
	expect_error(t, img, len, gs);
	put32(img + VHDX_RT1_OFF + 16 + 64 + 28, 0);
	memcpy(img + VHDX_RT2_OFF, img + VHDX_RT1_OFF, VHDX_RT_SIZE);
	fix_all_crcs(img);
	assert_int_equal(try_open(t, img, len, &err), 0);
	/* entry count beyond the maximum */
	put32(img + VHDX_RT1_OFF + 8, 5000);
	memcpy(img + VHDX_RT2_OFF, img + VHDX_RT1_OFF, VHDX_RT_SIZE);
	fix_all_crcs(img);
	expect_error(t, img, len, "region table");
	free(img);
}

/* Metadata item value offset (our layout: items at 64 KiB in the region). */
#define ITEM(off) (META_OFF + 0x10000 + (off))

static void test_metadata(void **state)
{
	struct vt *t = *state;
	struct {
		size_t off;
		int width;
		uint64_t value;
		const char *needle;
	} cases[] = {
		{ META_OFF, 1, 'X', "signature" },
		{ ITEM(0), 4, 3 * MiB, "block size" },
		{ ITEM(0), 4, 512 * MiB, "block size" },
		{ ITEM(0), 4, 0, "block size" },
		{ ITEM(8), 8, 1ULL << 60, "virtual size" },
		{ ITEM(8), 8, 0, "virtual size" },
		{ ITEM(8), 8, 1000, "virtual size" },
		{ ITEM(0x20), 4, 1024, "logical sector" },
		{ ITEM(0x24), 4, 0, "physical sector" },
		{ META_OFF + 10, 2, 3000, "entries" },
		{ META_OFF + 32 + 16, 4, 0x100, "outside" },       /* item offset inside the table */
		{ META_OFF + 32 + 20, 4, 0x7fffffff, "outside" },  /* item length past the region */
		{ META_OFF + 32 + 32 + 20, 4, 4, "length" },       /* vsize item of 4 bytes */
		{ ITEM(8), 8, 400ULL * GiB, "BAT region" },         /* BAT too small for it */
	};
	uint8_t *img;

	make_base(t);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		img = copy_base();
		if (cases[i].width == 1)
			img[cases[i].off] = (uint8_t)cases[i].value;
		else if (cases[i].width == 2)
			img[cases[i].off] = (uint8_t)cases[i].value,
			img[cases[i].off + 1] = (uint8_t)(cases[i].value >> 8);
		else if (cases[i].width == 4)
			put32(img + cases[i].off, (uint32_t)cases[i].value);
		else
			put64(img + cases[i].off, cases[i].value);
		expect_error(t, img, base_len, cases[i].needle);
		free(img);
	}

	/* an unknown metadata item: refused when required, ignored when not */
	struct guid g;
	char gs[GUID_STR_LEN];
	struct disk_error err;

	guid_generate(&g);
	guid_to_string(&g, gs);
	img = copy_base();
	img[META_OFF + 10] = 6;
	guid_to_le(&g, img + META_OFF + 32 + 5 * 32);
	put32(img + META_OFF + 32 + 5 * 32 + 16, 0x30000);
	put32(img + META_OFF + 32 + 5 * 32 + 20, 8);
	put32(img + META_OFF + 32 + 5 * 32 + 24, 4);
	expect_error(t, img, base_len, gs);
	put32(img + META_OFF + 32 + 5 * 32 + 24, 0);
	assert_int_equal(try_open(t, img, base_len, &err), 0);
	/* a missing required item */
	img[META_OFF + 10] = 4;
	expect_error(t, img, base_len, "missing");
	free(img);
}

static void test_bat(void **state)
{
	struct vt *t = *state;
	uint8_t *img;

	make_base(t);
	img = copy_base();
	put64(img + BAT_OFF, 4); /* an undefined state */
	expect_error(t, img, base_len, "state");
	put64(img + BAT_OFF, VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT, 512 * MiB));
	expect_error(t, img, base_len, "past the end");
	put64(img + BAT_OFF, VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT, BAT_OFF)); /* on the BAT */
	expect_error(t, img, base_len, "metadata");
	put64(img + BAT_OFF, VHDX_BAT_ENTRY(VHDX_PB_PARTIALLY_PRESENT, 4 * MiB));
	expect_error(t, img, base_len, "state"); /* partial without a parent */
	free(img);

	/* two blocks on the same space: opens, and check reports it */
	char *p = vt_path(t, "b.vhdx"), report[1024] = "";
	struct disk_error err;
	img = copy_base();
	memcpy(img + BAT_OFF + 8, img + BAT_OFF, 8);
	vt_spew(p, img, base_len);
	assert_true(disk_check(p, false, report, sizeof(report), &err) > 0);
	assert_non_null(strstr(report, "share"));
	free(img);
}

static void test_bad_log(void **state)
{
	struct vt *t = *state;
	char *p = vt_path(t, "log.vhdx");
	struct disk *d;
	size_t len;
	uint8_t buf[512], *img;
	struct disk_error err;

	vt_create(p, DISK_TYPE_DYNAMIC, IMG_SIZE, 1 * MiB, 512, NULL);
	d = vt_open(p, 0);
	vhdx_test_crash_at(d, 1);
	memset(buf, 0xAB, sizeof(buf));
	assert_int_equal(disk_pwrite(d, buf, sizeof(buf), 5 * MiB), 0);
	disk_close(d);
	img = vt_slurp(p, &len);
	/* intact: replayed in memory */
	d = vt_open(p, DISK_OPEN_RDONLY);
	assert_int_equal(disk_pread(d, buf, 512, 5 * MiB), 0);
	assert_int_equal(buf[0], 0xAB);
	disk_close(d);
	/* and check calls a valid pending log a note, not a problem */
	char report[1024];
	assert_int_equal(disk_check(p, false, report, sizeof(report), &err), 0);
	assert_non_null(strstr(report, "note: log has 1 pending entry"));
	/* a flipped bit in the entry: its CRC fails, nothing is replayed */
	img[LOG_OFF + 4096 + 100] ^= 1;
	vt_spew(p, img, len);
	d = vt_open(p, DISK_OPEN_RDONLY);
	assert_int_equal(disk_pread(d, buf, 512, 5 * MiB), 0);
	assert_int_equal(buf[0], 0);
	disk_close(d);
	img[LOG_OFF + 4096 + 100] ^= 1;
	/* an entry that claims a longer flushed file than there is */
	put64(img + LOG_OFF + 48, 1ULL << 40);
	fix_crc(img, LOG_OFF, 8192);
	expect_error(t, img, len, "truncated");
	put64(img + LOG_OFF + 48, 0);
	/* an entry that writes into the log itself */
	put64(img + LOG_OFF + 64 + 16, LOG_OFF);
	fix_crc(img, LOG_OFF, 8192);
	expect_error(t, img, len, "log entry");
	/* an unreplayable log stays a problem for check */
	vt_spew(p, img, len);
	assert_true(disk_check(p, false, report, sizeof(report), &err) < 0);
	assert_non_null(strstr(err.msg, "log entry"));
	free(img);
	(void)err;
}

/* Random damage in the metadata part of the file, CRCs fixed half the time
 * so the damage reaches the parsers behind them. */
static void test_random_damage(void **state)
{
	struct vt *t = *state;
	uint64_t x = 0x1234567;
	struct disk_error err;
	int opened = 0;

	make_base(t);
	for (int iter = 0; iter < 1500; iter++) {
		uint8_t *img = copy_base();
		int flips = 1 + (int)(x % 8);

		for (int k = 0; k < flips; k++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			size_t area[] = { VHDX_HEADER1_OFF, VHDX_RT1_OFF, META_OFF, META_OFF + 0x10000,
					  BAT_OFF, LOG_OFF, VHDX_HEADER2_OFF, VHDX_RT2_OFF };
			size_t off = area[(x >> 20) % ARRAY_SIZE(area)] + (size_t)((x >> 33) % 256);
			img[off] ^= (uint8_t)(1u << ((x >> 8) % 8));
		}
		if (x & 1)
			fix_all_crcs(img);
		opened += try_open(t, img, base_len, &err) == 0;
		free(img);
	}
	fprintf(stderr, "  %d of 1500 damaged images still opened\n", opened);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_truncated, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_headers, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_region_tables, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_metadata, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_bat, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_bad_log, vt_setup, vt_teardown),
		cmocka_unit_test_setup_teardown(test_random_damage, vt_setup, vt_teardown),
	};
	if (getenv("VT_ONLY")) /* run one test: VT_ONLY=test_name */
		cmocka_set_test_filter(getenv("VT_ONLY"));
	int ret = cmocka_run_group_tests(tests, NULL, NULL);

	free(base_img);
	return ret;
}
