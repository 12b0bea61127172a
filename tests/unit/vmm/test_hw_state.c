/* Save and restore of the platform devices (serial, i8042, RTC, ACPI PM):
 * a device brought into a non-trivial state is saved, restored into a new
 * one on another VM, and both answer the guest the same way afterwards. A
 * record with any value the device cannot take is refused, all or
 * nothing: the device it was given to is unchanged. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "platform_vm_double.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"

#define COM PORT_COM1
enum { RX = 0, IER, IIR, LCR, MCR, LSR, MSR, SCR };

/* A finished state file holding whatever save() appended. */
struct saved {
	struct state_writer w;
	struct state_file f;
	const void *data;
	size_t len;
};

static void saved_finish(struct saved *s)
{
	assert_int_equal(state_writer_finish(&s->w, &s->data, &s->len), 0);
	assert_int_equal(state_file_parse(&s->f, s->data, s->len, 0, NULL, 0), 0);
}

static void find(struct saved *s, uint32_t type, struct state_reader *r)
{
	assert_int_equal(state_file_find(&s->f, type, 0, r), 0);
}

/* Rewrites the one section of s with one payload byte changed (and the
 * CRC made good), so that the device's own checks are what refuse it. */
static void corrupt_payload(struct saved *s, size_t at, uint8_t value, struct saved *out)
{
	struct state_reader r;
	uint8_t *payload;

	assert_int_equal(state_file_section(&s->f, 0, &r), 0);
	assert_true(at < r.len);
	payload = malloc(r.len);
	assert_non_null(payload);
	memcpy(payload, r.p, r.len);
	payload[at] = value;
	state_writer_init(&out->w, 0);
	state_begin(&out->w, r.type, r.instance, r.version);
	state_put_bytes(&out->w, payload, r.len);
	state_end(&out->w);
	saved_finish(out);
	free(payload);
}

/* The same record with its last byte missing. */
static void truncate_payload(struct saved *s, struct saved *out)
{
	struct state_reader r;

	assert_int_equal(state_file_section(&s->f, 0, &r), 0);
	state_writer_init(&out->w, 0);
	state_begin(&out->w, r.type, r.instance, r.version);
	state_put_bytes(&out->w, r.p, r.len - 1);
	state_end(&out->w);
	saved_finish(out);
}

/* ---- serial ------------------------------------------------------------ */

static void test_serial(void **state)
{
	struct vm *va = vmd_create(), *vb = vmd_create();
	struct serial *a, *b;
	struct saved s, bad;
	struct state_reader r;

	assert_int_equal(serial_create(va, COM, IRQ_COM1, &a), 0);
	assert_int_equal(serial_create(vb, COM, IRQ_COM1, &b), 0);
	/* divisor 12, 8N1, FIFO on, RX interrupt on, scratch 0x5a, and
	 * three bytes waiting */
	vmd_outb(va, COM + LCR, 0x80);
	vmd_outb(va, COM + RX, 12);
	vmd_outb(va, COM + IER, 0);
	vmd_outb(va, COM + LCR, 0x03);
	vmd_outb(va, COM + IIR, 0x07);
	vmd_outb(va, COM + IER, 0x01);
	vmd_outb(va, COM + SCR, 0x5a);
	assert_int_equal(serial_receive(a, (const uint8_t *)"xyz", 3), 3);
	assert_int_equal(va->irq_level[IRQ_COM1], 1);

	state_writer_init(&s.w, 0);
	serial_save(a, &s.w, 0);
	saved_finish(&s);
	find(&s, STATE_SECTION_SERIAL, &r);
	assert_int_equal(serial_restore(b, &r), 0);

	/* the restored UART raised its line for the waiting data */
	assert_int_equal(vb->irq_level[IRQ_COM1], 1);
	assert_int_equal(vmd_inb(vb, COM + SCR), 0x5a);
	assert_int_equal(vmd_inb(vb, COM + LCR), 0x03);
	vmd_outb(vb, COM + LCR, 0x83);
	assert_int_equal(vmd_inb(vb, COM + RX), 12);
	vmd_outb(vb, COM + LCR, 0x03);
	for (const char *c = "xyz"; *c; c++) {
		assert_true(vmd_inb(vb, COM + LSR) & 0x01);
		assert_int_equal(vmd_inb(vb, COM + RX), *c);
		assert_int_equal(vmd_inb(va, COM + RX), *c);
	}
	assert_false(vmd_inb(vb, COM + LSR) & 0x01);
	assert_int_equal(vb->irq_level[IRQ_COM1], 0);

	/* values no UART can hold: a bool of 2, a FIFO head past the FIFO */
	vmd_outb(vb, COM + SCR, 0x11);
	corrupt_payload(&s, 10, 2, &bad); /* thr_pending */
	find(&bad, STATE_SECTION_SERIAL, &r);
	assert_int_equal(serial_restore(b, &r), -EINVAL);
	state_writer_free(&bad.w);
	corrupt_payload(&s, 11 + 16, 16, &bad); /* fifo_head: after the FIFO */
	find(&bad, STATE_SECTION_SERIAL, &r);
	assert_int_equal(serial_restore(b, &r), -EINVAL);
	state_writer_free(&bad.w);
	truncate_payload(&s, &bad);
	find(&bad, STATE_SECTION_SERIAL, &r);
	assert_int_equal(serial_restore(b, &r), -EINVAL);
	state_writer_free(&bad.w);
	/* all or nothing: b is as it was */
	assert_int_equal(vmd_inb(vb, COM + SCR), 0x11);

	state_writer_free(&s.w);
	serial_destroy(a);
	serial_destroy(b);
	vmd_destroy(va);
	vmd_destroy(vb);
}

/* ---- i8042 ------------------------------------------------------------- */

static void test_i8042(void **state)
{
	struct vm *va = vmd_create(), *vb = vmd_create();
	struct i8042 *a, *b;
	struct saved s, bad;
	struct state_reader r;

	assert_int_equal(i8042_create(va, &a), 0);
	assert_int_equal(i8042_create(vb, &b), 0);
	/* write the command byte, then ask for it back: one byte waits */
	vmd_outb(va, PORT_I8042_CMD, 0x60);
	vmd_outb(va, PORT_I8042_DATA, 0x47);
	vmd_outb(va, PORT_I8042_CMD, 0x20);
	assert_true(vmd_inb(va, PORT_I8042_CMD) & 0x01);

	state_writer_init(&s.w, 0);
	i8042_save(a, &s.w, 0);
	saved_finish(&s);
	find(&s, STATE_SECTION_I8042, &r);
	assert_int_equal(i8042_restore(b, &r), 0);
	assert_true(vmd_inb(vb, PORT_I8042_CMD) & 0x01);
	assert_int_equal(vmd_inb(vb, PORT_I8042_DATA), 0x47);
	assert_int_equal(vmd_inb(va, PORT_I8042_DATA), 0x47);

	/* a data target past the last one */
	corrupt_payload(&s, 3, 99, &bad);
	find(&bad, STATE_SECTION_I8042, &r);
	assert_int_equal(i8042_restore(b, &r), -EINVAL);
	state_writer_free(&bad.w);

	state_writer_free(&s.w);
	i8042_destroy(a);
	i8042_destroy(b);
	vmd_destroy(va);
	vmd_destroy(vb);
}

/* ---- RTC --------------------------------------------------------------- */

static uint8_t cmos_read(struct vm *vm, uint8_t reg)
{
	vmd_outb(vm, PORT_RTC, reg);
	return (uint8_t)vmd_inb(vm, PORT_RTC + 1);
}

static void cmos_write(struct vm *vm, uint8_t reg, uint8_t v)
{
	vmd_outb(vm, PORT_RTC, reg);
	vmd_outb(vm, PORT_RTC + 1, v);
}

static void test_rtc(void **state)
{
	struct vm *va = vmd_create(), *vb = vmd_create();
	struct rtc *a, *b;
	struct saved s, bad;
	struct state_reader r;

	assert_int_equal(rtc_create(va, 256 << 20, 0, &a), 0);
	assert_int_equal(rtc_create(vb, 512 << 20, 0, &b), 0);
	/* CMOS RAM, binary 24-hour mode, and a clock set to 2001 */
	cmos_write(va, 0x40, 0xab);
	cmos_write(va, 0x0b, 0x06);
	cmos_write(va, 0x09, 1);
	assert_int_equal(cmos_read(va, 0x09), 1);

	state_writer_init(&s.w, 0);
	rtc_save(a, &s.w, 0);
	saved_finish(&s);
	find(&s, STATE_SECTION_RTC, &r);
	assert_int_equal(rtc_restore(b, &r), 0);
	assert_int_equal(cmos_read(vb, 0x40), 0xab);
	assert_int_equal(cmos_read(vb, 0x0b), 0x06);
	assert_int_equal(cmos_read(vb, 0x09), 1);
	/* the memory-size bytes are the saved VM's (256 MiB), not b's */
	assert_int_equal(cmos_read(vb, 0x34), cmos_read(va, 0x34));
	assert_int_equal(cmos_read(vb, 0x35), cmos_read(va, 0x35));

	/* an index past CMOS */
	cmos_write(vb, 0x40, 0x11);
	corrupt_payload(&s, 0, 200, &bad);
	find(&bad, STATE_SECTION_RTC, &r);
	assert_int_equal(rtc_restore(b, &r), -EINVAL);
	state_writer_free(&bad.w);
	truncate_payload(&s, &bad);
	find(&bad, STATE_SECTION_RTC, &r);
	assert_int_equal(rtc_restore(b, &r), -EINVAL);
	state_writer_free(&bad.w);
	assert_int_equal(cmos_read(vb, 0x40), 0x11);

	state_writer_free(&s.w);
	rtc_destroy(a);
	rtc_destroy(b);
	vmd_destroy(va);
	vmd_destroy(vb);
}

/* ---- ACPI PM ----------------------------------------------------------- */

static void test_acpi_pm(void **state)
{
	struct vm *va = vmd_create(), *vb = vmd_create();
	struct acpi_pm *a, *b;
	struct saved s, bad;
	struct state_reader r;
	uint32_t t_saved, t_restored;

	assert_int_equal(acpi_pm_create(va, &a), 0);
	assert_int_equal(acpi_pm_create(vb, &b), 0);
	/* the power button enabled and pressed: SCI up */
	vmd_outw(va, PORT_ACPI_PM1A_EVT + 2, 1u << 8);
	acpi_pm_press_power_button(a);
	assert_int_equal(va->irq_level[IRQ_ACPI_SCI], 1);
	usleep(20000); /* the PM timer moves */

	state_writer_init(&s.w, 0);
	t_saved = vmd_inl(va, PORT_ACPI_PM_TMR);
	acpi_pm_save(a, &s.w, 0);
	saved_finish(&s);
	usleep(50000); /* time that passes while saved does not count */
	find(&s, STATE_SECTION_ACPI_PM, &r);
	assert_int_equal(acpi_pm_restore(b, &r), 0);
	t_restored = vmd_inl(vb, PORT_ACPI_PM_TMR);
	assert_int_equal(vb->irq_level[IRQ_ACPI_SCI], 1);
	assert_true(vmd_inw(vb, PORT_ACPI_PM1A_EVT) & (1u << 8));
	/* within 20 ms of ticks (3.58 MHz) of where it was saved, not 50 ms on */
	int32_t delta = (int32_t)(t_restored - t_saved);
	assert_true(delta >= 0 && delta < 3579545 / 50);

	/* a sleep request left pending */
	corrupt_payload(&s, 5, 0x20, &bad); /* pm1_cnt high byte: SLP_EN */
	find(&bad, STATE_SECTION_ACPI_PM, &r);
	assert_int_equal(acpi_pm_restore(b, &r), -EINVAL);
	state_writer_free(&bad.w);

	state_writer_free(&s.w);
	acpi_pm_destroy(a);
	acpi_pm_destroy(b);
	vmd_destroy(va);
	vmd_destroy(vb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_serial),
		cmocka_unit_test(test_i8042),
		cmocka_unit_test(test_rtc),
		cmocka_unit_test(test_acpi_pm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
