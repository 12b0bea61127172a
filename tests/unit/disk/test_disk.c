/* The disk library's core: probing, names, flags, argument checks and
 * create's promises (no overwrite, nothing left behind on failure). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/resource.h>

#include "common/util.h"
#include "disk/disk.h"
#include "disk/disk_impl.h"
#include "diskcore_util.h"

static int setup(void **state)
{
	return scratch_setup(state, "test_disk");
}

static int teardown(void **state)
{
	return scratch_teardown(state);
}

static enum disk_format probe(const char *path, unsigned flags)
{
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d;

	assert_int_equal(disk_open(path, DISK_OPEN_RDONLY | flags, &d, &err), 0);
	disk_get_info(d, &info);
	assert_int_equal(disk_close(d), 0);
	return info.format;
}

static void test_names(void **state)
{
	assert_string_equal(disk_format_name(DISK_FORMAT_RAW), "raw");
	assert_string_equal(disk_format_name(DISK_FORMAT_VHD), "vhd");
	assert_string_equal(disk_format_name(DISK_FORMAT_VHDX), "vhdx");
	assert_string_equal(disk_format_name((enum disk_format)42), "unknown");
	assert_string_equal(disk_type_name(DISK_TYPE_FIXED), "fixed");
	assert_string_equal(disk_type_name(DISK_TYPE_DYNAMIC), "dynamic");
	assert_string_equal(disk_type_name(DISK_TYPE_DIFFERENCING), "differencing");
	assert_string_equal(disk_type_name((enum disk_type)42), "unknown");
	struct disk_error err;
	assert_int_equal(disk_fail(&err, -EIO, "x %d", 5), -EIO);
	assert_string_equal(err.msg, "x 5");
	assert_int_equal(disk_fail(NULL, -EIO, "x"), -EIO);
}

static void test_probe(void **state)
{
	struct scratch *s = *state;
	const char *raw = scratch_path(s, "data.img");
	const char *fixed = scratch_path(s, "f.vhd");
	const char *dyn = scratch_path(s, "d.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_FIXED,
				      .size = 1 * MiB };
	struct disk_error err = { 0 };
	uint8_t junk[4096];
	struct disk_info info;
	struct disk *d;

	/* random bytes are raw */
	fill_random(junk, sizeof(junk), 3);
	assert_int_equal(write_file(raw, junk, sizeof(junk)), 0);
	assert_int_equal(probe(raw, 0), DISK_FORMAT_RAW);
	/* a raw file that merely contains "conectix" in the middle is raw */
	memcpy(junk + 1000, "conectix", 8);
	assert_int_equal(write_file(raw, junk, sizeof(junk)), 0);
	assert_int_equal(probe(raw, 0), DISK_FORMAT_RAW);

	/* fixed VHD: found by the footer at the end (no copy at offset 0) */
	assert_int_equal(disk_create(fixed, &o, &err), 0);
	assert_int_equal(probe(fixed, 0), DISK_FORMAT_VHD);
	/* FORMAT_RAW skips probing: the footer is then data past the size */
	assert_int_equal(probe(fixed, DISK_OPEN_FORMAT_RAW), DISK_FORMAT_RAW);
	assert_int_equal(disk_open(fixed, DISK_OPEN_RDONLY | DISK_OPEN_FORMAT_RAW, &d, &err), 0);
	assert_int_equal(disk_size(d), 1 * MiB + 512);
	assert_int_equal(disk_close(d), 0);

	/* dynamic VHD: by its footer, or by the copy at 0 when the end is lost */
	o.type = DISK_TYPE_DYNAMIC;
	assert_int_equal(disk_create(dyn, &o, &err), 0);
	assert_int_equal(probe(dyn, 0), DISK_FORMAT_VHD);
	struct stat st;
	assert_int_equal(stat(dyn, &st), 0);
	memset(junk, 0, 512);
	assert_int_equal(patch_file(dyn, (uint64_t)st.st_size - 512, junk, 512), 0);
	assert_int_equal(probe(dyn, 0), DISK_FORMAT_VHD);

	/* a file shorter than one sector is no disk; as forced raw it has none */
	const char *empty = scratch_path(s, "empty.img");
	uint8_t sec[512];
	for (size_t len = 0; len < 512; len += 511) {
		assert_int_equal(write_file(empty, junk, len), 0);
		err.msg[0] = 0;
		assert_int_equal(disk_open(empty, DISK_OPEN_RDONLY, &d, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "too small for a disk image"));
	}
	assert_int_equal(write_file(empty, "", 0), 0);
	assert_int_equal(disk_open(empty, DISK_OPEN_RDONLY | DISK_OPEN_FORMAT_RAW, &d, &err), 0);
	assert_int_equal(disk_size(d), 0);
	assert_int_equal(disk_pread(d, sec, 512, 0), -EINVAL);
	assert_int_equal(disk_close(d), 0);

	/* a fixed VHD that lost 2..511 bytes of its footer is reported as a
	 * VHD cut short, not taken as raw; 1 lost byte is Virtual PC's 511-byte
	 * footer, still a VHD; a whole footer lost leaves a raw disk */
	o.type = DISK_TYPE_FIXED;
	assert_int_equal(unlink(fixed), 0);
	assert_int_equal(disk_create(fixed, &o, &err), 0);
	static const int cuts[] = { 1, 2, 8, 100, 504, 505, 511, 512 };
	uint64_t whole = 1 * MiB + 512;
	for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
		assert_int_equal(truncate(fixed, (off_t)(whole - (uint64_t)cuts[i])), 0);
		err.msg[0] = 0;
		int ret = disk_open(fixed, DISK_OPEN_RDONLY, &d, &err);
		if (cuts[i] == 1 || cuts[i] == 512) {
			assert_int_equal(ret, 0);
			disk_get_info(d, &info);
			assert_int_equal(info.format, cuts[i] == 1 ? DISK_FORMAT_VHD : DISK_FORMAT_RAW);
			assert_int_equal(disk_close(d), 0);
		} else {
			assert_int_equal(ret, -EINVAL);
			assert_non_null(strstr(err.msg, "looks like a VHD cut short"));
		}
		/* put the cut bytes back for the next, shorter cut */
		assert_int_equal(unlink(fixed), 0);
		assert_int_equal(disk_create(fixed, &o, &err), 0);
	}
	assert_int_equal(disk_close(NULL), 0);
}

static void test_create_rules(void **state)
{
	struct scratch *s = *state;
	const char *p = scratch_path(s, "x.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 1 * MiB };
	struct disk_error err = { 0 };
	uint8_t before[16] = "precious data!!", after[16];

	/* never overwrites, not even a non-image */
	assert_int_equal(write_file(p, before, sizeof(before)), 0);
	assert_int_equal(disk_create(p, &o, &err), -EEXIST);
	assert_non_null(strstr(err.msg, p));
	assert_int_equal(read_at(p, 0, after, sizeof(after)), 0);
	assert_memory_equal(before, after, sizeof(before));
	/* nor through a dangling symlink */
	const char *link = scratch_path(s, "link.vhd");
	assert_int_equal(symlink(scratch_path(s, "nowhere.vhd"), link), 0);
	assert_int_equal(disk_create(link, &o, &err), -EEXIST);
	assert_int_equal(access(scratch_path(s, "nowhere.vhd"), F_OK), -1);
	/* a parent only for differencing disks, and a size */
	const char *q = scratch_path(s, "q.vhd");
	o.parent = p;
	assert_int_equal(disk_create(q, &o, &err), -EINVAL);
	o.parent = NULL;
	o.size = 0;
	assert_int_equal(disk_create(q, &o, &err), -EINVAL);
	o.type = DISK_TYPE_DIFFERENCING;
	assert_int_equal(disk_create(q, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "parent"));
	assert_int_equal(access(q, F_OK), -1);
	/* unknown format */
	o.format = (enum disk_format)9;
	o.type = DISK_TYPE_FIXED;
	o.size = MiB;
	assert_int_equal(disk_create(q, &o, &err), -EOPNOTSUPP);
	assert_int_equal(access(q, F_OK), -1);
}

/* A create that fails half-way (the file-size limit stops its writes)
 * removes what it wrote. */
static void test_create_partial_removed(void **state)
{
	struct scratch *s = *state;
	enum disk_format fmts[] = { DISK_FORMAT_RAW, DISK_FORMAT_VHD, DISK_FORMAT_VHD };
	enum disk_type types[] = { DISK_TYPE_FIXED, DISK_TYPE_FIXED, DISK_TYPE_DYNAMIC };
	struct rlimit old, lim;

	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	for (int i = 0; i < 3; i++) {
		const char *p = scratch_path(s, "partial");
		struct disk_create_opts o = { .format = fmts[i], .type = types[i],
					      .size = 64 * GiB };
		struct disk_error err = { 0 };
		int ret;

		lim.rlim_cur = 1024; /* past the first sectors: a half-written file */
		lim.rlim_max = old.rlim_max;
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
		ret = disk_create(p, &o, &err);
		setrlimit(RLIMIT_FSIZE, &old);
		assert_true(ret < 0);
		assert_non_null(strstr(err.msg, p));
		assert_int_equal(access(p, F_OK), -1);
	}
}

static void test_maintenance_errors(void **state)
{
	struct scratch *s = *state;
	const char *raw = scratch_path(s, "r.img");
	const char *dyn = scratch_path(s, "d.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_RAW, .type = DISK_TYPE_FIXED,
				      .size = MiB };
	struct disk_error err = { 0 };
	char report[256];

	assert_int_equal(disk_create(raw, &o, &err), 0);
	o.format = DISK_FORMAT_VHD;
	o.type = DISK_TYPE_DYNAMIC;
	assert_int_equal(disk_create(dyn, &o, &err), 0);
	/* set-parent on a disk that has none */
	assert_int_equal(disk_set_parent(dyn, raw, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a differencing disk"));
	assert_int_equal(disk_set_parent("/nonexistent.vhd", raw, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent.vhd"));
	/* resize arguments */
	assert_int_equal(disk_resize(dyn, 1000, &err), -EINVAL);
	assert_int_equal(disk_resize(dyn, 0, &err), -EINVAL);
	assert_int_equal(disk_resize(dyn, 3000 * GiB, &err), -EFBIG);
	assert_non_null(strstr(err.msg, "2040 GiB"));
	assert_int_equal(disk_resize("/nonexistent.vhd", MiB, &err), -ENOENT);
	/* check of a raw image: nothing to find */
	assert_int_equal(disk_check(raw, false, report, sizeof(report), &err), 0);
	assert_int_equal(disk_check(dyn, false, report, sizeof(report), &err), 0);
	assert_int_equal(disk_check("/nonexistent.vhd", false, report, sizeof(report), &err),
			 -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test_setup_teardown(test_probe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_partial_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_maintenance_errors, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
