/* libFuzzer target for saved-state files (src/vmm/state/record.c) and the
 * platform devices' restores (serial.c, i8042.c, rtc.c and acpi_pm.c in
 * src/vmm/hw), which take their records as untrusted input.
 *
 * The first byte picks the mode:
 *  - even: the rest is a whole state file; it is parsed and, if the
 *    structure holds, every section is walked and handed to the device
 *    whose record type it has;
 *  - odd: the rest is one section's payload (byte 1: which device, byte 2:
 *    record version), wrapped into a well-formed file so that the fuzzer's
 *    mutations reach the devices' own checks instead of stopping at the
 *    CRC.
 * Devices live on the platform test double (real port bus, recorded IRQ
 * lines). Nothing may crash or read outside the file; a refused record is
 * fine. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/vmm/platform_vm_double.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"

static struct vm *vm;
static struct serial *serial;
static struct i8042 *kbd;
static struct rtc *rtc;
static struct acpi_pm *pm;

static void setup(void)
{
	vm = vmd_create();
	if (!vm || serial_create(vm, PORT_COM1, IRQ_COM1, &serial) || i8042_create(vm, &kbd) ||
	    rtc_create(vm, 256 << 20, 0, &rtc) || acpi_pm_create(vm, &pm))
		abort();
}

static void restore_section(struct state_reader *r)
{
	switch (r->type) {
	case STATE_SECTION_SERIAL:
		serial_restore(serial, r);
		break;
	case STATE_SECTION_I8042:
		i8042_restore(kbd, r);
		break;
	case STATE_SECTION_RTC:
		rtc_restore(rtc, r);
		break;
	case STATE_SECTION_ACPI_PM:
		acpi_pm_restore(pm, r);
		break;
	default:
		/* any other record: read it to its end through every getter */
		while (!r->bad && r->off < r->len) {
			uint8_t buf[3];

			switch (r->off % 5) {
			case 0: (void)state_get_u64(r); break;
			case 1: (void)state_get_u8(r); break;
			case 2: (void)state_get_u16(r); break;
			case 3: (void)state_get_u32(r); break;
			default: state_get_bytes(r, buf, sizeof(buf)); break;
			}
		}
		(void)state_reader_done(r);
		break;
	}
}

static void walk(const uint8_t *data, size_t len)
{
	struct state_file f;
	struct state_reader r;
	char err[256];

	if (state_file_parse(&f, data, len, 0, err, sizeof(err)))
		return;
	for (uint32_t i = 0; state_file_section(&f, i, &r) == 0; i++) {
		struct state_reader again;

		restore_section(&r);
		/* find() must land on the same record */
		if (state_file_find(&f, r.type, r.instance, &again) || again.p != r.p)
			abort();
	}
}

static const uint32_t device_types[] = {
	STATE_SECTION_SERIAL, STATE_SECTION_I8042, STATE_SECTION_RTC, STATE_SECTION_ACPI_PM,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state_writer w;
	const void *file;
	size_t len;

	if (!vm)
		setup();
	if (size < 1)
		return 0;
	if (!(data[0] & 1)) {
		walk(data + 1, size - 1);
		return 0;
	}
	if (size < 3)
		return 0;
	state_writer_init(&w, 0);
	state_begin(&w, device_types[data[1] % 4], 0, data[2] % 4);
	state_put_bytes(&w, data + 3, size - 3);
	state_end(&w);
	if (state_writer_finish(&w, &file, &len) == 0)
		walk(file, len);
	state_writer_free(&w);
	return 0;
}
