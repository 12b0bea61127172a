#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>

#include "platform_vm_double.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"

#define DATA PORT_I8042_DATA
#define CMD PORT_I8042_CMD

struct fixture {
	struct vm *vm;
	struct i8042 *k;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->vm = vmd_create();
	assert_int_equal(i8042_create(f->vm, &f->k), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	i8042_destroy(f->k);
	vmd_destroy(f->vm);
	free(f);
	return 0;
}

/* Like Linux's i8042_command(): command, optional argument, then read the
 * expected number of reply bytes, each only once OBF says it is there. */
static int command(struct fixture *f, uint8_t cmd, int arg, uint8_t *reply, unsigned nreply)
{
	vmd_outb(f->vm, CMD, cmd);
	if (arg >= 0)
		vmd_outb(f->vm, DATA, (uint8_t)arg);
	for (unsigned i = 0; i < nreply; i++) {
		if (!(vmd_inb(f->vm, CMD) & 0x01))
			return -ETIMEDOUT;
		reply[i] = (uint8_t)vmd_inb(f->vm, DATA);
	}
	return 0;
}

static void test_linux_controller_probe(void **state)
{
	struct fixture *f = *state;
	uint8_t r[3] = { 0 }, ctr;

	/* Flush: nothing pending at power-on. */
	assert_int_equal(vmd_inb(f->vm, CMD) & 0x01, 0);
	assert_int_equal(command(f, 0xaa, -1, r, 1), 0);
	assert_int_equal(r[0], 0x55);
	assert_true(vmd_inb(f->vm, CMD) & 0x04); /* system flag */
	/* Two reads of the command byte agree. */
	assert_int_equal(command(f, 0x20, -1, r, 1), 0);
	assert_int_equal(command(f, 0x20, -1, r + 1, 1), 0);
	assert_int_equal(r[0], r[1]);
	ctr = r[0];
	/* Write it back with interrupts off and AUX disabled. */
	ctr = (uint8_t)((ctr & ~0x03) | 0x20);
	assert_int_equal(command(f, 0x60, ctr, r, 0), 0);
	assert_int_equal(command(f, 0x20, -1, r, 1), 0);
	assert_int_equal(r[0], ctr);
	/* Keyboard interface test. */
	assert_int_equal(command(f, 0xab, -1, r, 1), 0);
	assert_int_equal(r[0], 0x00);
	/* AUX loopback with the AUX interrupt on: the byte comes back marked
	 * as AUX data and IRQ 12 fires (Linux's AUX IRQ test). */
	assert_int_equal(command(f, 0x60, ctr | 0x02, r, 0), 0);
	assert_int_equal(f->vm->irq_rises[12], 0);
	vmd_outb(f->vm, CMD, 0xd3);
	vmd_outb(f->vm, DATA, 0xa5);
	assert_int_equal(f->vm->irq_rises[12], 1);
	assert_int_equal(vmd_inb(f->vm, CMD) & 0x21, 0x21);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xa5);
	/* An edge, not a level: the line went back down. */
	assert_int_equal(f->vm->irq_level[12], 0);
	/* The MUX probe's third loop byte comes back unchanged: no MUX. */
	assert_int_equal(command(f, 0xd3, 0xf0, r, 1), 0);
	assert_int_equal(command(f, 0xd3, 0x56, r + 1, 1), 0);
	assert_int_equal(command(f, 0xd3, 0xa4, r + 2, 1), 0);
	assert_int_equal(r[2], 0xa4);
	assert_int_equal(f->vm->nstops, 0);
}

static void test_keyboard_protocol(void **state)
{
	struct fixture *f = *state;
	uint8_t r[3];

	/* Keyboard interrupts are on at power-on: every reply byte pulses
	 * IRQ 1 when it reaches the output buffer. */
	vmd_outb(f->vm, DATA, 0xff);
	assert_int_equal(f->vm->irq_rises[1], 1);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xfa);
	assert_int_equal(f->vm->irq_rises[1], 2);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xaa);
	assert_int_equal(vmd_inb(f->vm, CMD) & 0x01, 0);
	/* Identify with translation off: MF2 keyboard 0xab 0x83. */
	assert_int_equal(command(f, 0x60, 0x05, r, 0), 0);
	vmd_outb(f->vm, DATA, 0xf2);
	for (unsigned i = 0; i < 3; i++)
		r[i] = (uint8_t)vmd_inb(f->vm, DATA);
	assert_int_equal(r[0], 0xfa);
	assert_int_equal(r[1], 0xab);
	assert_int_equal(r[2], 0x83);
	/* Set LEDs: ACK for the command and for its argument. */
	vmd_outb(f->vm, DATA, 0xed);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xfa);
	vmd_outb(f->vm, DATA, 0x07);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xfa);
	assert_int_equal(vmd_inb(f->vm, CMD) & 0x01, 0);
	/* Get scancode set. */
	vmd_outb(f->vm, DATA, 0xf0);
	vmd_outb(f->vm, DATA, 0x00);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xfa);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xfa);
	assert_int_equal(vmd_inb(f->vm, DATA), 0x02);
	/* Unknown: resend. Echo: echo. */
	vmd_outb(f->vm, DATA, 0x12);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xfe);
	vmd_outb(f->vm, DATA, 0xee);
	assert_int_equal(vmd_inb(f->vm, DATA), 0xee);
	/* Writes to the (absent) mouse get no answer. */
	vmd_outb(f->vm, CMD, 0xd4);
	vmd_outb(f->vm, DATA, 0xff);
	assert_int_equal(vmd_inb(f->vm, CMD) & 0x01, 0);
}

static void test_reset_line(void **state)
{
	struct fixture *f = *state;

	vmd_outb(f->vm, CMD, 0xff); /* pulse nothing */
	assert_int_equal(f->vm->nstops, 0);
	vmd_outb(f->vm, CMD, 0xfe);
	assert_int_equal(f->vm->nstops, 1);
	assert_int_equal(f->vm->stop, VM_STOP_RESET);
	/* Output port with the reset bit clear resets too. */
	vmd_outb(f->vm, CMD, 0xd1);
	vmd_outb(f->vm, DATA, 0x03);
	assert_int_equal(f->vm->nstops, 1);
	vmd_outb(f->vm, CMD, 0xd1);
	vmd_outb(f->vm, DATA, 0x02);
	assert_int_equal(f->vm->nstops, 2);
}

static void test_queue_overflow_and_reset(void **state)
{
	struct fixture *f = *state;

	for (unsigned i = 0; i < 100; i++)
		vmd_outb(f->vm, CMD, 0xaa);
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(vmd_inb(f->vm, DATA), 0x55);
	assert_int_equal(vmd_inb(f->vm, CMD) & 0x01, 0);
	/* An empty read is harmless. */
	vmd_inb(f->vm, DATA);
	vmd_outb(f->vm, CMD, 0x20);
	i8042_reset(f->k);
	assert_int_equal(vmd_inb(f->vm, CMD) & 0x01, 0);
	/* A wider access touching port 0x61 is not the controller's. */
	assert_int_equal(vmd_inw(f->vm, DATA), 0xffff);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_linux_controller_probe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keyboard_protocol, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_overflow_and_reset, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
