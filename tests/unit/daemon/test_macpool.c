/* MAC pool: parsing refuses what a NIC cannot use; allocation stays in the
 * pool's range and avoids addresses in use. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"

static void test_parse(void **state)
{
	char mac[18];

	assert_int_equal(macpool_parse("02:AB:cd:00:11:22", mac), 0);
	assert_string_equal(mac, "02:ab:cd:00:11:22");
	assert_int_equal(macpool_parse("02-ab-cd-00-11-22", mac), 0);
	assert_string_equal(mac, "02:ab:cd:00:11:22");
	assert_int_equal(macpool_parse("01:00:5e:00:00:01", mac), -EINVAL); /* multicast */
	assert_int_equal(macpool_parse("00:00:00:00:00:00", mac), -EINVAL);
	assert_int_equal(macpool_parse("02:ab:cd:00:11", mac), -EINVAL);
	assert_int_equal(macpool_parse("02:ab:cd:00:11:2233", mac), -EINVAL);
	assert_int_equal(macpool_parse("02:ab:cd:00:11:zz", mac), -EINVAL);
	assert_int_equal(macpool_parse("02:ab:cd:00:11:2", mac), -EINVAL);
	assert_int_equal(macpool_parse("", mac), -EINVAL);
}

static void test_allocate_unique(void **state)
{
	struct daemon *d = calloc(1, sizeof(*d));
	struct vm *vms = calloc(200, sizeof(*vms));

	for (int i = 0; i < 200; i++) {
		struct vm *vm = &vms[i];
		vm->cfg.n_nics = 1;
		assert_int_equal(macpool_allocate(d, vm->cfg.nics[0].mac), 0);
		assert_int_equal(strncmp(vm->cfg.nics[0].mac, "02:c1:05:", 9), 0);
		char back[18];
		assert_int_equal(macpool_parse(vm->cfg.nics[0].mac, back), 0);
		for (struct vm *o = d->vms; o; o = o->next)
			assert_string_not_equal(o->cfg.nics[0].mac, vm->cfg.nics[0].mac);
		vm->next = d->vms;
		d->vms = vm;
	}
	free(vms);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_allocate_unique),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
