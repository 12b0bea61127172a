#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>

#include "common/util.h"
#include "vmm/boot/boot.h"
#include "vmm/layout.h"

/* Invariants every map must keep, whatever the size. */
static void check_map(uint64_t mem)
{
	struct e820_map m;
	uint64_t ram = 0, high = 0;

	assert_int_equal(e820_build(mem, &m), 0);
	assert_true(m.n >= 5 && m.n <= E820_MAX_ENTRIES);
	for (unsigned i = 0; i < m.n; i++) {
		const struct e820_entry *e = &m.e[i];
		assert_true(e->size > 0);
		if (i > 0)
			assert_true(m.e[i - 1].addr + m.e[i - 1].size <= e->addr);
		if (e->type == E820_RAM) {
			ram += e->size;
			/* No RAM in the 32-bit hole. */
			assert_false(e->addr < LAYOUT_HIGHMEM_START &&
				     e->addr + e->size > LAYOUT_LOWMEM_END);
			if (e->addr >= LAYOUT_HIGHMEM_START)
				high += e->size;
		}
	}
	/* All RAM but the 640 KiB..1 MiB window is usable. */
	assert_int_equal(ram, mem - (LAYOUT_KERNEL_START - LAYOUT_EBDA));
	assert_int_equal(e820_ram_bytes(&m), ram);
	assert_int_equal(high, mem > LAYOUT_LOWMEM_END ? mem - LAYOUT_LOWMEM_END : 0);
}

static void test_sizes(void **state)
{
	check_map(64 * MiB);
	check_map(256 * MiB);
	check_map(3 * GiB - 4096);
	check_map(3 * GiB);
	check_map(3 * GiB + 4096);
	check_map(5 * GiB);
	check_map(64 * GiB);
	check_map(1 * TiB);
}

static void test_layout_512m(void **state)
{
	struct e820_map m;

	assert_int_equal(e820_build(512 * MiB, &m), 0);
	assert_int_equal(m.n, 5);
	assert_int_equal(m.e[0].addr, 0);
	assert_int_equal(m.e[0].size, 0x9fc00);
	assert_int_equal(m.e[0].type, E820_RAM);
	assert_int_equal(m.e[1].addr, 0x9fc00);
	assert_int_equal(m.e[1].type, E820_RESERVED);
	assert_int_equal(m.e[2].addr, LAYOUT_ACPI_BASE);
	assert_int_equal(m.e[2].size, LAYOUT_ACPI_MAX);
	assert_int_equal(m.e[2].type, E820_ACPI);
	assert_int_equal(m.e[3].addr, 0x100000);
	assert_int_equal(m.e[3].addr + m.e[3].size, 512 * MiB);
	assert_int_equal(m.e[4].addr, LAYOUT_PCI_ECAM_BASE);
	assert_int_equal(m.e[4].type, E820_RESERVED);
}

static void test_layout_5g(void **state)
{
	struct e820_map m;

	assert_int_equal(e820_build(5 * GiB, &m), 0);
	assert_int_equal(m.n, 6);
	assert_int_equal(m.e[3].addr + m.e[3].size, 3 * GiB);
	assert_int_equal(m.e[5].addr, 4 * GiB);
	assert_int_equal(m.e[5].size, 2 * GiB);
	assert_int_equal(m.e[5].type, E820_RAM);
}

static void test_bad(void **state)
{
	struct e820_map m;

	assert_int_equal(e820_build(0, &m), -EINVAL);
	assert_int_equal(e820_build(1 * MiB, &m), -EINVAL);
	assert_int_equal(e820_build(64 * MiB + 1, &m), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_layout_512m),
		cmocka_unit_test(test_layout_5g),
		cmocka_unit_test(test_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
