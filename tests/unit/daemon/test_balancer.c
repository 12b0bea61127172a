/* balancer_plan (src/daemon/balancer.c), dynamic memory's arithmetic:
 * demand plus buffer within minimum and maximum, the shortfall of a small
 * pool shared in inverse proportion to weight, minimums held, an unknown
 * demand keeping what it has. The thread and the workers are exercised by
 * tests/system/test_daemon_memory.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/daemon.h"

#define MiB (1ULL << 20)

static struct balancer_vm vm(uint64_t demand, uint64_t assigned, unsigned weight)
{
	return (struct balancer_vm){ .demand = demand * MiB, .assigned = assigned * MiB,
				     .minimum = 128 * MiB, .maximum = 1024 * MiB, .buffer = 20,
				     .weight = weight };
}

static void test_demand_plus_buffer_within_range(void **state)
{
	struct balancer_vm in[] = { vm(500, 512, 50), vm(50, 512, 50), vm(2000, 512, 50) };
	uint64_t out[3];

	(void)state;
	assert_int_equal(balancer_plan(in, 3, 0, out), (600 + 128 + 1024) * MiB);
	assert_int_equal(out[0], 600 * MiB); /* 500 + 20 % */
	assert_int_equal(out[1], 128 * MiB); /* the minimum */
	assert_int_equal(out[2], 1024 * MiB); /* the maximum */
}

static void test_unknown_demand_keeps_what_it_has(void **state)
{
	struct balancer_vm in[] = { vm(0, 300, 50) };
	uint64_t out[1];

	(void)state;
	balancer_plan(in, 1, 0, out);
	assert_int_equal(out[0], 300 * MiB);
}

static void test_shortfall_by_inverse_weight(void **state)
{
	/* both want 600 MiB; the pool has 900: 300 short, taken 1:2 */
	struct balancer_vm in[] = { vm(500, 512, 100), vm(500, 512, 50) };
	uint64_t out[2];

	(void)state;
	assert_true(balancer_plan(in, 2, 900 * MiB, out) <= 900 * MiB);
	assert_int_equal(out[0], 500 * MiB);
	assert_int_equal(out[1], 400 * MiB);
}

static void test_minimum_holds_and_the_rest_is_shared(void **state)
{
	/* the light one would go below its minimum: it stops there and the
	 * heavy one gives the rest */
	struct balancer_vm in[] = { vm(500, 512, 100), vm(150, 512, 1) };
	uint64_t out[2];

	(void)state;
	balancer_plan(in, 2, 500 * MiB, out);
	assert_int_equal(out[1], 128 * MiB);
	assert_int_equal(out[0], 372 * MiB);
}

static void test_everyone_at_minimum(void **state)
{
	struct balancer_vm in[] = { vm(500, 512, 100), vm(500, 512, 0) };
	uint64_t out[2];

	(void)state;
	assert_int_equal(balancer_plan(in, 2, 64 * MiB, out), 256 * MiB);
	assert_int_equal(out[0], 128 * MiB);
	assert_int_equal(out[1], 128 * MiB);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_demand_plus_buffer_within_range),
		cmocka_unit_test(test_unknown_demand_keeps_what_it_has),
		cmocka_unit_test(test_shortfall_by_inverse_weight),
		cmocka_unit_test(test_minimum_holds_and_the_rest_is_shared),
		cmocka_unit_test(test_everyone_at_minimum),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
