#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "common/util.h"

static void test_parse_size(void **state)
{
	uint64_t v;

	assert_int_equal(parse_size("512", 1, &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(parse_size("64M", 1, &v), 0);
	assert_int_equal(v, 64 * MiB);
	assert_int_equal(parse_size("5G", 1, &v), 0);
	assert_int_equal(v, 5 * GiB);
	assert_int_equal(parse_size("1.5GiB", 1, &v), 0);
	assert_int_equal(v, 3 * GiB / 2);
	assert_int_equal(parse_size("128", MiB, &v), 0);
	assert_int_equal(v, 128 * MiB);
	assert_int_equal(parse_size("4k", 1, &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_size("", 1, &v), -EINVAL);
	assert_int_equal(parse_size("abc", 1, &v), -EINVAL);
	assert_int_equal(parse_size("12Q", 1, &v), -EINVAL);
	assert_int_equal(parse_size("-5", 1, &v), -EINVAL);
	assert_int_equal(parse_size("99999999999999999999", 1, &v), -ERANGE);
	assert_int_equal(parse_size("99999999999T", 1, &v), -ERANGE);
}

static void test_format_size(void **state)
{
	char buf[32];

	assert_string_equal(format_size(512, buf, sizeof(buf)), "512 B");
	assert_string_equal(format_size(64 * MiB, buf, sizeof(buf)), "64 MiB");
	assert_string_equal(format_size(3 * GiB / 2, buf, sizeof(buf)), "1.5 GiB");
}

static void test_align(void **state)
{
	assert_int_equal(ALIGN_UP(5ULL, 4096), 4096);
	assert_int_equal(ALIGN_UP(4096ULL, 4096), 4096);
	assert_int_equal(ALIGN_DOWN(8191ULL, 4096), 4096);
	assert_true(IS_ALIGNED(8192ULL, 4096));
	assert_false(IS_ALIGNED(8193ULL, 4096));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_format_size),
		cmocka_unit_test(test_align),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
