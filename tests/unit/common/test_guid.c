#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "common/guid.h"

static void test_roundtrip(void **state)
{
	struct guid g, h;
	char s[GUID_STR_LEN];
	uint8_t raw[16];

	assert_int_equal(guid_parse("{4A49D245-DB0A-4634-9818-9F93DB5BA6C1}", &g), 0);
	assert_string_equal(guid_to_string(&g, s), "4a49d245-db0a-4634-9818-9f93db5ba6c1");
	guid_to_le(&g, raw);
	/* Microsoft's layout: data1..3 little-endian. */
	assert_int_equal(raw[0], 0x45);
	assert_int_equal(raw[3], 0x4a);
	assert_int_equal(raw[4], 0x0a);
	assert_int_equal(raw[8], 0x98);
	guid_from_le(&h, raw);
	assert_true(guid_equal(&g, &h));
	guid_to_be(&g, raw);
	assert_int_equal(raw[0], 0x4a);
	guid_from_be(&h, raw);
	assert_true(guid_equal(&g, &h));
}

static void test_bad_input(void **state)
{
	struct guid g;

	assert_int_equal(guid_parse("", &g), -EINVAL);
	assert_int_equal(guid_parse("4a49d245-db0a-4634-9818-9f93db5ba6c", &g), -EINVAL);
	assert_int_equal(guid_parse("4a49d245xdb0a-4634-9818-9f93db5ba6c1", &g), -EINVAL);
	assert_int_equal(guid_parse("4a49d245-db0a-4634-9818-9f93db5ba6cg", &g), -EINVAL);
}

static void test_generate(void **state)
{
	struct guid a, b;
	char s[GUID_STR_LEN];

	assert_int_equal(guid_generate(&a), 0);
	assert_int_equal(guid_generate(&b), 0);
	assert_false(guid_equal(&a, &b));
	assert_false(guid_is_zero(&a));
	guid_to_string(&a, s);
	assert_int_equal(s[14], '4'); /* version 4 */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_generate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
