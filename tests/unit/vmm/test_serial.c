#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "platform_vm_double.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"

#define COM PORT_COM1
enum { RX = 0, IER, IIR, LCR, MCR, LSR, MSR, SCR };
#define FCR IIR
#define EFR IIR

struct fixture {
	struct vm *vm;
	struct serial *s;
	uint8_t out[8192];
	size_t nout;
};

static void capture(void *opaque, const uint8_t *buf, size_t len)
{
	struct fixture *f = opaque;

	memcpy(f->out + f->nout, buf, len);
	f->nout += len;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->vm = vmd_create();
	assert_int_equal(serial_create(f->vm, COM, IRQ_COM1, &f->s), 0);
	serial_set_output(f->s, capture, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	serial_destroy(f->s);
	vmd_destroy(f->vm);
	free(f);
	return 0;
}

static uint8_t in(struct fixture *f, unsigned reg)
{
	return (uint8_t)vmd_inb(f->vm, COM + reg);
}

static void out(struct fixture *f, unsigned reg, uint8_t v)
{
	vmd_outb(f->vm, COM + reg, v);
}

/* Emulates the bytes-counting loopback probe of Linux's size_fifo(). */
static unsigned size_fifo(struct fixture *f)
{
	unsigned count = 0;

	out(f, FCR, 0x01);
	out(f, FCR, 0x07);
	out(f, MCR, 0x10);
	out(f, LCR, 0x80);
	out(f, RX, 1);
	out(f, IER, 0);
	out(f, LCR, 0x03);
	for (unsigned i = 0; i < 256; i++)
		out(f, RX, (uint8_t)i);
	for (count = 0; (in(f, LSR) & 0x01) && count < 256; count++)
		in(f, RX);
	out(f, MCR, 0);
	out(f, FCR, 0);
	return count;
}

/* The probe steps of Linux's 8250 autoconfig() and autoconfig_16550a(),
 * each with the answer that leads to PORT_16550A. */
static void test_linux_autoconfig_16550a(void **state)
{
	struct fixture *f = *state;
	uint8_t save, s1, s2;

	/* IER holds its low nibble. */
	out(f, IER, 0);
	assert_int_equal(in(f, IER) & 0x0f, 0);
	out(f, IER, 0x0f);
	assert_int_equal(in(f, IER) & 0x0f, 0x0f);
	out(f, IER, 0);
	/* Loopback: MCR RTS+OUT2 appear as CTS+DCD. */
	save = in(f, MCR);
	out(f, MCR, 0x10 | 0x0a);
	assert_int_equal(in(f, MSR) & 0xf0, 0x90);
	out(f, MCR, save);
	/* FIFO type from IIR bits 7:6 after enabling the FIFO. */
	out(f, LCR, 0xbf);
	out(f, EFR, 0);
	out(f, LCR, 0);
	out(f, FCR, 0x01);
	assert_int_equal(in(f, IIR) >> 6, 3);
	/* No EFR (the "EFR" port reads IIR, never 0), in both config modes. */
	out(f, LCR, 0x80);
	assert_int_not_equal(in(f, EFR), 0);
	out(f, LCR, 0xbf);
	assert_int_not_equal(in(f, EFR), 0);
	/* Not an NS SuperIO: "EXCR1" does not follow MCR's loop bit. */
	out(f, LCR, 0);
	s1 = in(f, MCR);
	out(f, LCR, 0xe0);
	s2 = in(f, 2);
	assert_int_equal((s1 ^ s2) & 0x10, 0);
	out(f, LCR, 0);
	out(f, MCR, s1 ^ 0x10);
	out(f, LCR, 0xe0);
	s2 = in(f, 2);
	out(f, LCR, 0);
	out(f, MCR, s1);
	assert_int_equal((s1 ^ s2) & 0x10, 0);
	/* Not a 16750: no 64-byte FIFO bit with or without DLAB. */
	out(f, FCR, 0x21);
	assert_int_equal(in(f, IIR) & 0xe0, 0xc0);
	out(f, FCR, 0);
	out(f, LCR, 0x80);
	out(f, FCR, 0x21);
	assert_int_equal(in(f, IIR) & 0xe0, 0xc0);
	out(f, FCR, 0);
	out(f, LCR, 0);
	/* Not an XScale: IER bit 6 does not stick. */
	out(f, IER, 0x40);
	assert_int_equal(in(f, IER) & 0x40, 0);
	out(f, IER, 0);
	/* 16 bytes of FIFO, counted through loopback; nothing reached the host. */
	assert_int_equal(size_fifo(f), 16);
	assert_int_equal(f->nout, 0);
	/* The startup safety check. */
	assert_int_not_equal(in(f, LSR), 0xff);
}

/* serial8250_do_startup's THRE test: enabling THRI with THR empty raises
 * the interrupt, reading IIR clears it, a re-enable raises it again. */
static void test_thre_interrupt(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	uint8_t iir1, iir2;

	out(f, FCR, 0x07);
	assert_int_equal(vm->irq_level[IRQ_COM1], 0);
	out(f, IER, 0x02);
	assert_int_equal(vm->irq_level[IRQ_COM1], 1);
	iir1 = in(f, IIR);
	assert_int_equal(iir1, 0xc2);
	assert_int_equal(vm->irq_level[IRQ_COM1], 0);
	assert_int_equal(in(f, IIR), 0xc1);
	out(f, IER, 0);
	out(f, IER, 0x02);
	iir2 = in(f, IIR);
	assert_int_equal(iir2 & 0x01, 0);
	/* Transmitting with THRI on: byte out, THRE raised again. */
	out(f, RX, 'A');
	assert_int_equal(vm->irq_level[IRQ_COM1], 1);
	assert_int_equal(in(f, IIR), 0xc2);
	assert_int_equal(vm->irq_level[IRQ_COM1], 0);
	out(f, IER, 0);
	assert_int_equal(f->nout, 1);
	assert_int_equal(f->out[0], 'A');
	assert_int_equal(in(f, LSR) & 0x60, 0x60);
}

static void test_polled_output(void **state)
{
	struct fixture *f = *state;
	const char *msg = "Linux version 6.1\n";

	for (const char *p = msg; *p; p++) {
		while (!(in(f, LSR) & 0x20))
			;
		out(f, RX, (uint8_t)*p);
	}
	assert_int_equal(f->nout, strlen(msg));
	assert_memory_equal(f->out, msg, strlen(msg));
	assert_int_equal(f->vm->irq_rises[IRQ_COM1], 0);
}

static void test_receive_fifo_and_interrupts(void **state)
{
	struct fixture *f = *state;
	struct vm *vm = f->vm;
	uint8_t buf[40];

	for (unsigned i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)('a' + i % 26);
	out(f, FCR, 0xc7);
	out(f, IER, 0x01);
	assert_int_equal(in(f, LSR) & 0x01, 0);
	assert_int_equal(serial_receive(f->s, buf, sizeof(buf)), sizeof(buf));
	assert_int_equal(vm->irq_level[IRQ_COM1], 1);
	assert_int_equal(in(f, IIR) & 0x0f, 0x04);
	for (unsigned i = 0; i < sizeof(buf); i++) {
		assert_true(in(f, LSR) & 0x01);
		assert_int_equal(in(f, RX), buf[i]);
	}
	assert_int_equal(in(f, LSR) & 0x01, 0);
	assert_int_equal(in(f, LSR) & 0x02, 0); /* no overrun from host input */
	assert_int_equal(in(f, IIR), 0xc1);
	assert_int_equal(vm->irq_level[IRQ_COM1], 0);
	/* Reading an empty RBR is harmless. */
	in(f, RX);
	assert_int_equal(vm->irq_level[IRQ_COM1], 0);
}

static void test_receive_without_fifo(void **state)
{
	struct fixture *f = *state;
	const uint8_t buf[3] = { 'x', 'y', 'z' };

	assert_int_equal(serial_receive(f->s, buf, 3), 3);
	assert_int_equal(in(f, IIR), 0x01); /* FIFO off: bits 7:6 clear */
	for (unsigned i = 0; i < 3; i++) {
		assert_true(in(f, LSR) & 0x01);
		assert_int_equal(in(f, RX), buf[i]);
	}
	assert_int_equal(in(f, LSR) & 0x01, 0);
}

static void test_receive_backlog_limit(void **state)
{
	struct fixture *f = *state;
	static uint8_t big[10000];
	size_t n;

	n = serial_receive(f->s, big, sizeof(big));
	assert_true(n > 16 && n < sizeof(big));
	n += serial_receive(f->s, big, sizeof(big));
	assert_true(n < sizeof(big));
	assert_int_equal(serial_receive(f->s, big, 10), 0);
	in(f, RX);
	assert_int_equal(serial_receive(f->s, big, 10), 1);
	/* FCR clear-RX drops what is in the FIFO, not the waiting backlog. */
	out(f, FCR, 0x01);
	out(f, FCR, 0x03);
	assert_true(in(f, LSR) & 0x01);
	serial_reset(f->s);
	assert_int_equal(in(f, LSR) & 0x01, 0);
}

static void test_divisor_latch_and_scratch(void **state)
{
	struct fixture *f = *state;

	out(f, LCR, 0x83);
	out(f, RX, 0x01);
	out(f, IER, 0x00);
	assert_int_equal(in(f, RX), 0x01);
	assert_int_equal(in(f, IER), 0x00);
	out(f, LCR, 0x03);
	assert_int_equal(in(f, LCR), 0x03);
	assert_int_equal(f->nout, 0); /* DLL writes are not data */
	out(f, SCR, 0x5a);
	assert_int_equal(in(f, SCR), 0x5a);
	/* A word access is two byte accesses: DLL and DLM. */
	out(f, LCR, 0x80);
	vmd_outw(f->vm, COM, 0x0201);
	assert_int_equal(in(f, RX), 0x01);
	assert_int_equal(in(f, IER), 0x02);
	assert_int_equal(vmd_inw(f->vm, COM), 0x0201);
	out(f, LCR, 0x03);
}

static void test_modem_status_interrupt(void **state)
{
	struct fixture *f = *state;

	out(f, IER, 0x08);
	in(f, MSR);
	assert_int_equal(f->vm->irq_level[IRQ_COM1], 0);
	out(f, MCR, 0x10 | 0x02); /* loopback: DSR and DCD drop, CTS stays */
	assert_int_equal(f->vm->irq_level[IRQ_COM1], 1);
	assert_int_equal(in(f, IIR) & 0x0f, 0x00);
	assert_int_equal(in(f, MSR), 0x10 | 0x02 | 0x08);
	assert_int_equal(f->vm->irq_level[IRQ_COM1], 0);
	assert_int_equal(in(f, MSR), 0x10);
}

static void test_reset(void **state)
{
	struct fixture *f = *state;

	out(f, FCR, 0x07);
	out(f, IER, 0x0f);
	out(f, MCR, 0x0b);
	out(f, LCR, 0x1b);
	assert_int_equal(f->vm->irq_level[IRQ_COM1], 1);
	serial_reset(f->s);
	assert_int_equal(f->vm->irq_level[IRQ_COM1], 0);
	assert_int_equal(in(f, IER), 0);
	assert_int_equal(in(f, IIR), 0x01);
	assert_int_equal(in(f, LCR), 0);
	assert_int_equal(in(f, MCR), 0);
	assert_int_equal(in(f, LSR), 0x60);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_linux_autoconfig_16550a, setup, teardown),
		cmocka_unit_test_setup_teardown(test_thre_interrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_polled_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receive_fifo_and_interrupts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receive_without_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receive_backlog_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_divisor_latch_and_scratch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_modem_status_interrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
