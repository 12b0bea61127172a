/* VM configuration: the create/set body parser refuses what it must (by
 * field name) and the stored schema round-trips. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "daemon/daemon.h"

static int apply(struct vm_config *c, const char *body, bool create, char *err, size_t len)
{
	json_error_t jerr;
	json_t *j = json_loads(body, JSON_ALLOW_NUL, &jerr);
	bool hw;

	assert_non_null(j);
	int r = vm_config_apply_json(c, j, create, &hw, err, len);
	json_decref(j);
	return r;
}

static void expect_refused(const char *body, bool create, const char *needle)
{
	struct vm_config c = { 0 };
	char err[512] = "";

	assert_int_equal(apply(&c, body, create, err, sizeof(err)), -EINVAL);
	if (!strstr(err, needle))
		fail_msg("body %s: error '%s' does not mention '%s'", body, err, needle);
	vm_config_clear(&c);
}

static void test_create_defaults(void **state)
{
	struct vm_config c = { 0 };
	char err[512];

	assert_int_equal(apply(&c, "{\"name\":\"a\",\"kernel\":\"/k\"}", true, err, sizeof(err)), 0);
	assert_string_equal(c.name, "a");
	assert_int_equal(c.cpus, 1);
	assert_int_equal(c.memory, 256ULL << 20);
	assert_int_equal(c.generation, 1);
	assert_string_equal(c.cmdline, "");
	assert_null(c.initrd);
	vm_config_clear(&c);
}

static void test_create_refusals(void **state)
{
	expect_refused("{\"kernel\":\"/k\"}", true, "'name' is required");
	expect_refused("{\"name\":\"a\"}", true, "'kernel' is required");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"x\":1}", true, "unknown field 'x'");
	expect_refused("{\"name\":\"a\",\"kernel\":\"k\"}", true, "absolute path");
	expect_refused("{\"name\":\"a\",\"kernel\":5}", true, "'kernel' must be a string");
	expect_refused("{\"name\":\"a/b\",\"kernel\":\"/k\"}", true, "not a valid VM name");
	expect_refused("{\"name\":\"\",\"kernel\":\"/k\"}", true, "not a valid VM name");
	expect_refused("{\"name\":\"-a\",\"kernel\":\"/k\"}", true, "not a valid VM name");
	expect_refused("{\"name\":\"cloisond.json\",\"kernel\":\"/k\"}", true, "reserved");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"cpus\":0}", true, "between 1 and 255");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"cpus\":256}", true, "between 1 and 255");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"cpus\":1.5}", true, "must be an integer");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"memory\":1048576}", true, "'memory'");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"memory\":134217729}", true, "multiple of 1 MiB");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"generation\":2}", true, "generation");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"disks\":{}}", true, "must be an array");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"disks\":[\"/d\",\"/d\"]}", true, "attached twice");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"disks\":[{\"readonly\":true}]}", true,
		       "'disks[0].path' is required");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"disks\":[{\"path\":\"/d\",\"ro\":1}]}", true,
		       "unknown field 'disks[0].ro'");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"network_adapters\":[{\"mac\":\"auto\"}]}", true,
		       "'network_adapters[0].tap' is required");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"network_adapters\":[{\"tap\":\"t\",\"mac\":\"01:00:00:00:00:01\"}]}",
		       true, "unicast MAC");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"network_adapters\":[{\"tap\":\"a/b\"}]}", true,
		       "tap device name");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"automatic_stop_action\":\"hibernate\"}", true,
		       "keep-running, shutdown, turn-off");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"operators\":[\"bad user\"]}", true,
		       "user name");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"cmdline\":\"a\\u0000b\"}", true, "NUL");
	expect_refused("[]", true, "must be a JSON object");
	/* Set-only fields are not create fields. */
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"add_disks\":[]}", true, "unknown field 'add_disks'");
	/* Name and id cannot change through set. */
	expect_refused("{\"name\":\"b\"}", false, "unknown field 'name'");
}

static void test_set_lists_and_hw_flag(void **state)
{
	struct vm_config c = { 0 };
	char err[512];
	bool hw;
	json_t *j;

	assert_int_equal(apply(&c, "{\"name\":\"a\",\"kernel\":\"/k\",\"disks\":[\"/d1\"],"
				   "\"operators\":[\"alice\"]}", true, err, sizeof(err)), 0);
	j = json_loads("{\"notes\":\"n\",\"add_operators\":[\"bob\",\"alice\"]}", 0, NULL);
	assert_int_equal(vm_config_apply_json(&c, j, false, &hw, err, sizeof(err)), 0);
	json_decref(j);
	assert_false(hw);
	assert_int_equal(c.n_operators, 2);
	j = json_loads("{\"remove_operators\":[\"alice\"],\"add_disks\":[{\"path\":\"/d2\",\"readonly\":true}]}", 0, NULL);
	assert_int_equal(vm_config_apply_json(&c, j, false, &hw, err, sizeof(err)), 0);
	json_decref(j);
	assert_true(hw);
	assert_int_equal(c.n_operators, 1);
	assert_string_equal(c.operators[0], "bob");
	assert_int_equal(c.n_disks, 2);
	assert_true(c.disks[1].readonly);
	j = json_loads("{\"remove_disks\":[\"/nope\"]}", 0, NULL);
	assert_int_equal(vm_config_apply_json(&c, j, false, &hw, err, sizeof(err)), -EINVAL);
	json_decref(j);
	assert_non_null(strstr(err, "not attached"));
	j = json_loads("{\"remove_operators\":[\"carol\"]}", 0, NULL);
	assert_int_equal(vm_config_apply_json(&c, j, false, &hw, err, sizeof(err)), -EINVAL);
	json_decref(j);
	vm_config_clear(&c);
}

static void test_roundtrip(void **state)
{
	struct vm_config c = { 0 }, back, copy;
	char err[512];

	assert_int_equal(apply(&c, "{\"name\":\"rt\",\"kernel\":\"/k\",\"initrd\":\"/i\",\"cmdline\":\"x y\","
				   "\"cpus\":4,\"memory\":536870912,\"disks\":[{\"path\":\"/d\",\"readonly\":true}],"
				   "\"network_adapters\":[{\"tap\":\"tap0\",\"mac\":\"02:AA:bb:00:00:01\"}],"
				   "\"automatic_start_action\":\"start\",\"automatic_start_delay\":5,"
				   "\"automatic_stop_action\":\"turn-off\",\"notes\":\"hello\",\"operators\":[\"op\"]}",
			       true, err, sizeof(err)), 0);
	assert_int_equal(guid_generate(&c.id), 0);
	vm_config_stamp(&c);
	json_t *j = vm_config_to_json(&c);
	assert_int_equal(json_integer_value(json_object_get(j, "schema_version")), CONFIG_SCHEMA_VERSION);
	assert_int_equal(vm_config_from_json(j, &back, err, sizeof(err)), 0);
	json_t *j2 = vm_config_to_json(&back);
	assert_true(json_equal(j, j2));
	assert_string_equal(back.nics[0].mac, "02:aa:bb:00:00:01");
	assert_false(back.nics[0].mac_auto);
	assert_int_equal(vm_config_copy(&copy, &back), 0);
	json_t *j3 = vm_config_to_json(&copy);
	assert_true(json_equal(j, j3));
	json_decref(j);
	json_decref(j2);
	json_decref(j3);
	vm_config_clear(&c);
	vm_config_clear(&back);
	vm_config_clear(&copy);
}

static void test_stored_schema_checks(void **state)
{
	struct vm_config c;
	char err[512];
	json_t *j = json_loads("{\"schema_version\":2,\"id\":\"00000000-0000-4000-8000-000000000001\"}", 0, NULL);

	assert_int_equal(vm_config_from_json(j, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "schema_version"));
	json_decref(j);
	j = json_loads("{\"schema_version\":1,\"id\":\"nope\"}", 0, NULL);
	assert_int_equal(vm_config_from_json(j, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'id'"));
	json_decref(j);
	vm_config_clear(&c);
}

/* Configuration versions: what a create gets, what a stored file without
 * one is, which strings are refused and how, and the one-way upgrade. */
static void test_versions(void **state)
{
	struct vm_config c = { 0 }, old;
	char err[512];
	bool changed;

	assert_int_equal(apply(&c, "{\"name\":\"v\",\"kernel\":\"/k\"}", true, err, sizeof(err)), 0);
	assert_string_equal(c.version, vm_version_default());
	assert_true(vm_config_has_feature(&c, VM_FEATURE_GENERATION_ID));
	assert_false(guid_is_zero(&c.generation_id));
	/* a stored file of before versions: the oldest, without the device */
	assert_int_equal(guid_generate(&c.id), 0);
	vm_config_stamp(&c);
	json_t *j = vm_config_to_json(&c);
	json_object_del(j, "version");
	json_object_del(j, "generation_id");
	assert_int_equal(vm_config_from_json(j, &old, err, sizeof(err)), 0);
	assert_string_equal(old.version, VM_VERSION_OLDEST);
	assert_true(guid_is_zero(&old.generation_id));
	assert_false(vm_config_has_feature(&old, VM_FEATURE_GENERATION_ID));
	assert_int_equal(vm_config_upgrade_version(&old, &changed), 0);
	assert_true(changed);
	assert_string_equal(old.version, vm_version_default());
	assert_false(guid_is_zero(&old.generation_id));
	struct guid kept = old.generation_id;
	assert_int_equal(vm_config_upgrade_version(&old, &changed), 0);
	assert_false(changed);
	assert_true(guid_equal(&kept, &old.generation_id));
	vm_config_clear(&old);
	/* a newer file is refused for its version, whatever else it holds */
	json_object_set_new(j, "version", json_string("200.1"));
	json_object_set_new(j, "field_of_the_future", json_true());
	assert_int_equal(vm_config_from_json(j, &old, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "newer than this cloisond supports"));
	vm_config_clear(&old);
	json_decref(j);
	vm_config_clear(&c);

	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"version\":\"9.0\"}", true, "newer");
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"version\":\"6.0\"}", true,
		       "not one this cloisond knows");
	static const char *const bad[] = { "8", "8.", ".0", "8.0.0", "08.0", "8.00", "256.0",
					   "8.0 ", "+8.0", "-1.0", "8.256", "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char body[128];

		snprintf(body, sizeof(body), "{\"name\":\"a\",\"kernel\":\"/k\",\"version\":\"%s\"}",
			 bad[i]);
		expect_refused(body, true, "not a configuration version");
	}
	expect_refused("{\"name\":\"a\",\"kernel\":\"/k\",\"version\":5}", true, "must be a string");
	expect_refused("{\"version\":\"8.0\"}", false, "cannot be set");
	expect_refused("{\"generation_id\":null}", false, "cannot be set");
	/* an older version on purpose: no device, no id */
	struct vm_config five = { 0 };
	assert_int_equal(apply(&five, "{\"name\":\"f\",\"kernel\":\"/k\",\"version\":\"5.0\"}",
			       true, err, sizeof(err)), 0);
	assert_string_equal(five.version, "5.0");
	assert_true(guid_is_zero(&five.generation_id));
	vm_config_clear(&five);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_defaults),
		cmocka_unit_test(test_create_refusals),
		cmocka_unit_test(test_set_lists_and_hw_flag),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_stored_schema_checks),
		cmocka_unit_test(test_versions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
