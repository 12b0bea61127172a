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

/* In order from the range's start; never twice, even once the VM that had
 * an address is gone; a static MAC in the range is skipped. */
static void test_range_never_twice(void **state)
{
	struct daemon *d = calloc(1, sizeof(*d));
	struct vm *vm = calloc(1, sizeof(*vm));
	char mac[18], err[256];

	assert_int_equal(macpool_set_range(d, "02:aa:00:00:00:00-02:aa:00:00:00:03", err,
					   sizeof(err)), 0);
	vm->cfg.n_nics = 1;
	strcpy(vm->cfg.nics[0].mac, "02:aa:00:00:00:01"); /* static */
	d->vms = vm;
	assert_int_equal(macpool_allocate(d, mac), 0);
	assert_string_equal(mac, "02:aa:00:00:00:00");
	assert_int_equal(macpool_allocate(d, mac), 0);
	assert_string_equal(mac, "02:aa:00:00:00:02");
	d->vms = NULL; /* the VMs go: their addresses are not handed out again */
	assert_int_equal(macpool_allocate(d, mac), 0);
	assert_string_equal(mac, "02:aa:00:00:00:01");
	assert_int_equal(macpool_allocate(d, mac), 0);
	assert_string_equal(mac, "02:aa:00:00:00:03");
	assert_int_equal(macpool_allocate(d, mac), -ENOSPC);
	macpool_exhausted(d, err, sizeof(err));
	assert_non_null(strstr(err, "02:aa:00:00:00:00-02:aa:00:00:00:03 is exhausted"));
	/* A wider range hands out only what is new. */
	assert_int_equal(macpool_set_range(d, "02:aa:00:00:00:00-02:aa:00:00:00:04", err,
					   sizeof(err)), 0);
	assert_int_equal(macpool_allocate(d, mac), 0);
	assert_string_equal(mac, "02:aa:00:00:00:04");
	assert_int_equal(macpool_set_range(d, "02:aa:00:00:00:05-02:aa:00:00:00:04", err,
					   sizeof(err)), -EINVAL);
	assert_int_equal(macpool_set_range(d, "03:aa:00:00:00:00-03:aa:00:00:00:04", err,
					   sizeof(err)), -EINVAL);
	assert_int_equal(macpool_set_range(d, "02:aa:00:00:00:00", err, sizeof(err)), -EINVAL);
	free(vm);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_allocate_unique),
		cmocka_unit_test(test_range_never_twice),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
