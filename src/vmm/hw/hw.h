/* The emulated platform devices (one .c each). Each *_create registers its
 * ports on the VM's buses; *_reset returns it to power-on state (in-place
 * reboot); *_destroy frees it. All return 0 or -errno. */
#ifndef CLOISON_VMM_HW_HW_H
#define CLOISON_VMM_HW_HW_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct state_writer;
struct state_reader;

/* Every device here saves its state as one record (vmm/state/record.h):
 * *_save appends it (the VM is paused), *_restore takes it back all or
 * nothing after checking every value as it would guest input: 0, or
 * -EINVAL with the device unchanged. `instance` tells two of a kind
 * apart. */

/* 8250/16550A UART (COM1 at PORT_COM1, IRQ_COM1): THR/RBR with a 16-byte
 * receive FIFO, IER/IIR/LCR/MCR/LSR/MSR/SCR, DLAB divisor latch, interrupts
 * for received data and THR empty. */
struct serial;
typedef void (*serial_output_fn)(void *opaque, const uint8_t *buf, size_t len);
int serial_create(struct vm *vm, uint16_t port, unsigned irq, struct serial **out);
/* Where transmitted bytes go; called on vCPU threads, must not block long. */
void serial_set_output(struct serial *s, serial_output_fn fn, void *opaque);
/* Feeds received bytes (any thread); returns how many fit in the FIFO. */
size_t serial_receive(struct serial *s, const uint8_t *buf, size_t len);
void serial_reset(struct serial *s);
/* While the VM is paused nothing is raised (received bytes wait in the
 * FIFO and backlog); resume brings the interrupt line up to date. The
 * RTC also disarms its timer. */
void serial_pause(struct serial *s);
void serial_resume(struct serial *s);
void serial_save(struct serial *s, struct state_writer *w, uint32_t instance);
int serial_restore(struct serial *s, struct state_reader *r);
void serial_destroy(struct serial *s);

/* i8042 keyboard controller: enough for Linux's probe and the reset line
 * (0xFE to port 0x64 requests VM_STOP_RESET). */
struct i8042;
int i8042_create(struct vm *vm, struct i8042 **out);
void i8042_reset(struct i8042 *k);
void i8042_save(struct i8042 *k, struct state_writer *w, uint32_t instance);
int i8042_restore(struct i8042 *k, struct state_reader *r);
void i8042_destroy(struct i8042 *k);

/* MC146818 CMOS RTC at 0x70/0x71, IRQ 8: the host's UTC date and time,
 * BCD or binary and 12/24-hour per register B, update-in-progress flag,
 * CMOS memory size bytes (0x30/0x31, 0x34/0x35, 0x5b-0x5d) for firmware. */
struct rtc;
int rtc_create(struct vm *vm, uint64_t ram_below_4g, uint64_t ram_above_4g, struct rtc **out);
void rtc_reset(struct rtc *r);
void rtc_pause(struct rtc *r);
void rtc_resume(struct rtc *r);
void rtc_save(struct rtc *r, struct state_writer *w, uint32_t instance);
int rtc_restore(struct rtc *r, struct state_reader *rd);
void rtc_destroy(struct rtc *r);
/* UTC calendar conversions (gmtime_r and timegm without the time zone
 * files); out-of-range fields of tm carry over. */
struct tm;
void rtc_utc_from_unix(int64_t t, struct tm *tm);
int64_t rtc_unix_from_utc(const struct tm *tm);

/* ACPI fixed hardware (ports in layout.h): PM1a event/control, PM timer
 * (3.579545 MHz), GPE0, reset register. SLP_TYP=S5 with SLP_EN requests
 * VM_STOP_POWEROFF; the reset register requests VM_STOP_RESET. */
struct acpi_pm;
int acpi_pm_create(struct vm *vm, struct acpi_pm **out);
/* Sets PWRBTN_STS and raises the SCI if the guest enabled it (any thread). */
void acpi_pm_press_power_button(struct acpi_pm *pm);
/* Sets GPE0 status bit `bit` (0..15) and raises the SCI if the guest
 * enabled it (any thread). */
void acpi_pm_raise_gpe(struct acpi_pm *pm, unsigned bit);
void acpi_pm_reset(struct acpi_pm *pm);
void acpi_pm_pause(struct acpi_pm *pm);
void acpi_pm_resume(struct acpi_pm *pm);
void acpi_pm_save(struct acpi_pm *pm, struct state_writer *w, uint32_t instance);
int acpi_pm_restore(struct acpi_pm *pm, struct state_reader *r);
void acpi_pm_destroy(struct acpi_pm *pm);

#endif
