#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "platform_vm_double.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"

#define PM1_STS PORT_ACPI_PM1A_EVT
#define PM1_EN (PORT_ACPI_PM1A_EVT + 2)
#define PWRBTN (1u << 8)

struct fixture {
	struct vm *vm;
	struct acpi_pm *pm;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->vm = vmd_create();
	assert_int_equal(acpi_pm_create(f->vm, &f->pm), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	acpi_pm_destroy(f->pm);
	vmd_destroy(f->vm);
	free(f);
	return 0;
}

static void test_power_on_state(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(vmd_inw(f->vm, PM1_STS), 0);
	assert_int_equal(vmd_inw(f->vm, PM1_EN), 0);
	/* SCI_EN reads 1: there is no SMI_CMD to switch ACPI mode on. */
	assert_int_equal(vmd_inw(f->vm, PORT_ACPI_PM1A_CNT) & 1, 1);
	assert_int_equal(vmd_inl(f->vm, PORT_ACPI_GPE0), 0);
	/* A second instance on the same ports is refused. */
	{
		struct acpi_pm *other;
		assert_int_equal(acpi_pm_create(f->vm, &other), -EEXIST);
	}
}

static void test_power_button_sci(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;

	/* Not enabled: status latches, no SCI. */
	acpi_pm_press_power_button(f->pm);
	assert_int_equal(vmd_inw(vm, PM1_STS) & PWRBTN, PWRBTN);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 0);
	/* Enabling with the status set raises the SCI (level). */
	vmd_outw(vm, PM1_EN, PWRBTN);
	assert_int_equal(vmd_inw(vm, PM1_EN), PWRBTN);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 1);
	/* Writing 0 to status changes nothing; writing 1 clears. */
	vmd_outw(vm, PM1_STS, 0);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 1);
	vmd_outw(vm, PM1_STS, PWRBTN);
	assert_int_equal(vmd_inw(vm, PM1_STS) & PWRBTN, 0);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 0);
	/* Pressed while enabled: SCI at once. */
	acpi_pm_press_power_button(f->pm);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 1);
	assert_int_equal(vm->irq_rises[IRQ_ACPI_SCI], 2);
	/* Byte-wise clear of the high status byte works too. */
	vmd_outb(vm, PM1_STS + 1, 0x01);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 0);
	assert_int_equal(vm->nstops, 0);
}

static void test_s5_powers_off(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	uint16_t cnt = vmd_inw(vm, PORT_ACPI_PM1A_CNT);

	/* ACPICA writes SLP_TYP first, then SLP_TYP|SLP_EN. */
	cnt = (uint16_t)((cnt & ~(7u << 10)) | (ACPI_S5_SLP_TYP << 10));
	vmd_outw(vm, PORT_ACPI_PM1A_CNT, cnt);
	assert_int_equal(vm->nstops, 0);
	vmd_outw(vm, PORT_ACPI_PM1A_CNT, (uint16_t)(cnt | (1u << 13)));
	assert_int_equal(vm->nstops, 1);
	assert_int_equal(vm->stop, VM_STOP_POWEROFF);
	/* SLP_EN does not read back. */
	assert_int_equal(vmd_inw(vm, PORT_ACPI_PM1A_CNT) & (1u << 13), 0);
}

static void test_other_sleep_states_ignored(void **state)
{
	struct fixture *f = *state;

	for (unsigned typ = 0; typ < 8; typ++) {
		if (typ == ACPI_S5_SLP_TYP)
			continue;
		vmd_outw(f->vm, PORT_ACPI_PM1A_CNT, (uint16_t)((typ << 10) | (1u << 13) | 1));
	}
	assert_int_equal(f->vm->nstops, 0);
}

static void test_reset_register(void **state)
{
	struct fixture *f = *state;

	vmd_outb(f->vm, PORT_ACPI_RESET, 0x00);
	vmd_outb(f->vm, PORT_ACPI_RESET, 0x06);
	assert_int_equal(f->vm->nstops, 0);
	vmd_outb(f->vm, PORT_ACPI_RESET, ACPI_RESET_VALUE);
	assert_int_equal(f->vm->nstops, 1);
	assert_int_equal(f->vm->stop, VM_STOP_RESET);
}

static void test_pm_timer_rate(void **state)
{
	struct fixture *f = *state;
	struct timespec d = { 0, 50 * 1000 * 1000 };
	uint32_t t0, t1, lo, b[4];

	t0 = vmd_inl(f->vm, PORT_ACPI_PM_TMR);
	nanosleep(&d, NULL);
	t1 = vmd_inl(f->vm, PORT_ACPI_PM_TMR);
	/* 50 ms at 3.579545 MHz is ~178977 ticks; allow scheduling slack. */
	assert_true(t1 - t0 >= 170000);
	assert_true(t1 - t0 < 3579545);
	/* Byte reads give the same counter, a byte at a time. */
	lo = vmd_inl(f->vm, PORT_ACPI_PM_TMR);
	for (unsigned i = 0; i < 4; i++)
		b[i] = vmd_inb(f->vm, (uint16_t)(PORT_ACPI_PM_TMR + i));
	assert_true(((b[3] << 24) | (b[2] << 16)) - (lo & 0xffff0000u) <= 0x10000u);
	/* Writes do nothing. */
	vmd_outl(f->vm, PORT_ACPI_PM_TMR, 0);
	assert_true(vmd_inl(f->vm, PORT_ACPI_PM_TMR) - t1 < 3579545);
}

static void test_gpe0(void **state)
{
	struct fixture *f = *state;

	vmd_outw(f->vm, PORT_ACPI_GPE0 + 2, 0xffff);
	assert_int_equal(vmd_inw(f->vm, PORT_ACPI_GPE0 + 2), 0xffff);
	assert_int_equal(vmd_inw(f->vm, PORT_ACPI_GPE0), 0);
	assert_int_equal(f->vm->irq_level[IRQ_ACPI_SCI], 0);
	acpi_pm_reset(f->pm);
	assert_int_equal(vmd_inw(f->vm, PORT_ACPI_GPE0 + 2), 0);
}

/* The hotplug GPE (bus/hotplug.c): status latches whether or not the
 * guest enabled it; the SCI follows the enable bit, and a write of 1
 * clears. */
static void test_gpe_raised(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;

	acpi_pm_raise_gpe(f->pm, 1);
	assert_int_equal(vmd_inw(vm, PORT_ACPI_GPE0), 0x2);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 0);
	vmd_outw(vm, PORT_ACPI_GPE0 + 2, 0x2);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 1);
	vmd_outw(vm, PORT_ACPI_GPE0, 0x2);
	assert_int_equal(vmd_inw(vm, PORT_ACPI_GPE0), 0);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 0);
	acpi_pm_raise_gpe(f->pm, 1);
	assert_int_equal(vm->irq_level[IRQ_ACPI_SCI], 1);
	assert_int_equal(vm->irq_rises[IRQ_ACPI_SCI], 2);
	/* bits past the 16-bit block are not there */
	acpi_pm_raise_gpe(f->pm, 16);
	assert_int_equal(vmd_inw(vm, PORT_ACPI_GPE0), 0x2);
}

static void test_reset_clears(void **state)
{
	struct fixture *f = *state;

	vmd_outw(f->vm, PM1_EN, PWRBTN);
	acpi_pm_press_power_button(f->pm);
	assert_int_equal(f->vm->irq_level[IRQ_ACPI_SCI], 1);
	acpi_pm_reset(f->pm);
	assert_int_equal(f->vm->irq_level[IRQ_ACPI_SCI], 0);
	assert_int_equal(vmd_inw(f->vm, PM1_STS), 0);
	assert_int_equal(vmd_inw(f->vm, PM1_EN), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_power_on_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_power_button_sci, setup, teardown),
		cmocka_unit_test_setup_teardown(test_s5_powers_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_sleep_states_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_register, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pm_timer_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gpe0, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gpe_raised, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_clears, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
