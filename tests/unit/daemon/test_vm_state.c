/* The state machine: the whole table of allowed operations, so a change to
 * it is a deliberate change to this test. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "daemon/daemon.h"

/* allowed[state][op], in enum order. */
static const bool allowed[6][8] = {
	/*               start  stop   toff   pause  resume restart remove sethw */
	[VM_OFF] = { true, false, false, false, false, false, true, true },
	[VM_STARTING] = { false, false, true, false, false, false, false, false },
	[VM_RUNNING] = { false, true, true, true, false, true, false, false },
	[VM_PAUSED] = { false, false, true, false, true, false, false, false },
	[VM_STOPPING] = { false, false, true, false, false, false, false, false },
	[VM_CRASHED] = { true, false, false, false, false, false, true, true },
};

static void test_table(void **state)
{
	for (int s = VM_OFF; s <= VM_CRASHED; s++)
		for (int op = VM_OP_START; op <= VM_OP_SET_HARDWARE; op++) {
			const char *why = NULL;
			int r = vm_state_check((enum vm_state)s, (enum vm_op)op, &why);
			if ((r == 0) != allowed[s][op])
				fail_msg("state %s op %d: got %d", vm_state_name((enum vm_state)s), op, r);
			if (r) {
				assert_int_equal(r, -EBUSY);
				assert_non_null(why);
				assert_true(strlen(why) > 10);
			}
		}
}

static void test_messages_say_what_to_do(void **state)
{
	const char *why;

	assert_int_equal(vm_state_check(VM_PAUSED, VM_OP_STOP, &why), -EBUSY);
	assert_non_null(strstr(why, "resume it first"));
	assert_int_equal(vm_state_check(VM_RUNNING, VM_OP_REMOVE, &why), -EBUSY);
	assert_non_null(strstr(why, "stop it first"));
}

static void test_names(void **state)
{
	assert_string_equal(vm_state_name(VM_OFF), "off");
	assert_string_equal(vm_state_name(VM_STARTING), "starting");
	assert_string_equal(vm_state_name(VM_RUNNING), "running");
	assert_string_equal(vm_state_name(VM_PAUSED), "paused");
	assert_string_equal(vm_state_name(VM_STOPPING), "stopping");
	assert_string_equal(vm_state_name(VM_CRASHED), "crashed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_messages_say_what_to_do),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
