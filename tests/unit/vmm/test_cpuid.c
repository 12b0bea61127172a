/* The CPUID builder on a made-up "KVM supported" table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/cpuid.h"

#define INTEL 0x756e6547
#define AMD 0x68747541

static unsigned nsup;
static struct kvm_cpuid_entry2 sup[32];
static struct kvm_cpuid_entry2 out[CPUID_MAX_ENTRIES];

static void add(uint32_t fn, uint32_t idx, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx)
{
	struct kvm_cpuid_entry2 *e = &sup[nsup++];

	memset(e, 0, sizeof(*e));
	e->function = fn;
	e->index = idx;
	e->eax = eax;
	e->ebx = ebx;
	e->ecx = ecx;
	e->edx = edx;
}

static void make_table(uint32_t vendor)
{
	nsup = 0;
	add(0, 0, 0x1f, vendor, 0x6c65746e, 0x49656e69);
	add(1, 0, 0x806f8, 0x00010800 | 0x07000000, 0x7ffefbff, 0x1f8bfbff & ~(1u << 28));
	/* leaf 4: L1d, L1i, L2, L3, end */
	add(4, 0, 0x121 | (7u << 26), 0, 0, 0);
	add(4, 1, 0x122, 0, 0, 0);
	add(4, 2, 0x143, 0, 0, 0);
	add(4, 3, 0x163 | (3u << 14), 0, 0, 0);
	add(4, 4, 0, 0, 0, 0);
	add(0xb, 0, 1, 2, 0x100, 5);
	add(0xb, 1, 4, 16, 0x201, 5);
	add(0x1f, 0, 1, 2, 0x100, 5);
	add(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d);
	add(0x40000001, 0, 0x1234, 0, 0, 0);
	add(0x80000000, 0, 0x80000008, 0, 0, 0);
	add(0x80000008, 0, 0x3028, 0, 0xffff, 0);
}

static const struct kvm_cpuid_entry2 *get(int n, uint32_t fn, uint32_t idx)
{
	for (int i = 0; i < n; i++)
		if (out[i].function == fn && out[i].index == idx)
			return &out[i];
	print_error("leaf 0x%x.%u missing\n", fn, idx);
	abort();
}

static void check_intel(unsigned index, unsigned ncpus, unsigned bits)
{
	int n = cpuid_build_vcpu(sup, nsup, index, ncpus, out, CPUID_MAX_ENTRIES);
	const struct kvm_cpuid_entry2 *e;
	unsigned cores = 1u << bits;

	assert_true(n > 0);
	e = get(n, 1, 0);
	assert_non_null(e);
	assert_int_equal(e->ebx >> 24, index);
	assert_int_equal((e->ebx >> 16) & 0xff, cores > 255 ? 255 : cores);
	assert_int_equal(e->ebx & 0xffff, 0x0800); /* CLFLUSH size kept */
	assert_int_equal(!!(e->edx & (1u << 28)), ncpus > 1);
	assert_true(e->ecx & (1u << 31)); /* hypervisor */
	/* leaf 4: cores per package, sharing per level */
	e = get(n, 4, 0);
	assert_int_equal(e->eax >> 26, (cores > 64 ? 64 : cores) - 1);
	assert_int_equal((e->eax >> 14) & 0xfff, 0);
	assert_int_equal(e->eax & 0x3ff, 0x121);
	e = get(n, 4, 3);
	assert_int_equal((e->eax >> 14) & 0xfff, cores - 1);
	e = get(n, 4, 4);
	assert_int_equal(e->eax, 0);
	/* leaf 0xB and 0x1F: SMT level then core level */
	for (uint32_t fn = 0xb; fn <= 0x1f; fn += 0x14) {
		e = get(n, fn, 0);
		assert_non_null(e);
		assert_int_equal(e->ebx, 1);
		assert_int_equal(e->eax, 0);
		assert_int_equal((e->ecx >> 8) & 0xff, 1);
		assert_int_equal(e->edx, index);
		assert_true(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
		e = get(n, fn, 1);
		assert_int_equal(e->ebx, ncpus);
		assert_int_equal(e->eax, bits);
		assert_int_equal((e->ecx >> 8) & 0xff, 2);
		assert_int_equal(e->edx, index);
		e = get(n, fn, 2);
		assert_int_equal((e->ecx >> 8) & 0xff, 0);
	}
	/* paravirt leaves untouched */
	e = get(n, 0x40000000, 0);
	assert_non_null(e);
	assert_int_equal(e->ebx, 0x4b4d564b);
	assert_non_null(get(n, 0x40000001, 0));
	/* Intel: 0x80000008 ECX left alone */
	assert_int_equal(get(n, 0x80000008, 0)->ecx, 0xffff);
}

static void test_intel_topology(void **state)
{
	make_table(INTEL);
	check_intel(0, 1, 0);
	check_intel(1, 2, 1);
	check_intel(3, 4, 2);
	check_intel(5, 6, 3);
	check_intel(64, 65, 7);
	check_intel(254, 255, 8);
}

static void test_amd(void **state)
{
	int n;
	const struct kvm_cpuid_entry2 *e;

	make_table(AMD);
	n = cpuid_build_vcpu(sup, nsup, 2, 6, out, CPUID_MAX_ENTRIES);
	assert_true(n > 0);
	e = get(n, 0x80000008, 0);
	assert_int_equal(e->ecx & 0xff, 5);
	assert_int_equal((e->ecx >> 12) & 0xf, 3);
	assert_int_equal(get(n, 4, 0)->eax, 0x121 | (7u << 26)); /* leaf 4 is Intel's */
	assert_int_equal(get(n, 1, 0)->ebx >> 24, 2);
}

static void test_bad(void **state)
{
	make_table(INTEL);
	assert_int_equal(cpuid_build_vcpu(sup, nsup, 0, 0, out, CPUID_MAX_ENTRIES), -EINVAL);
	assert_int_equal(cpuid_build_vcpu(sup, nsup, 4, 4, out, CPUID_MAX_ENTRIES), -EINVAL);
	assert_int_equal(cpuid_build_vcpu(sup, nsup, 0, 256, out, CPUID_MAX_ENTRIES), -EINVAL);
	assert_int_equal(cpuid_build_vcpu(sup, nsup, 0, 2, out, 5), -E2BIG);
}

static void test_core_bits(void **state)
{
	assert_int_equal(cpuid_core_bits(1), 0);
	assert_int_equal(cpuid_core_bits(2), 1);
	assert_int_equal(cpuid_core_bits(3), 2);
	assert_int_equal(cpuid_core_bits(4), 2);
	assert_int_equal(cpuid_core_bits(5), 3);
	assert_int_equal(cpuid_core_bits(255), 8);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_intel_topology),
		cmocka_unit_test(test_amd),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_core_bits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
