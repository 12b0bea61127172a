/* libFuzzer target for the virtio modern PCI transport
 * (src/vmm/virtio/pci.c): the common configuration (feature selects,
 * status transitions, queue set-up with any size and ring address, MSI-X
 * vectors), the ISR, the notify area, the device configuration window and
 * the PCI configuration access capability, driven through BAR 0 and
 * config-space cycles by the fuzz input against a virtio-rng (bit 0 of
 * the set-up byte clear) or a virtio-console on /dev/null (set: a device
 * with a configuration space). The operations are fuzz_virtio.c's; a
 * device op here is a burst of raw BAR writes. */
#include <stdio.h>
#include <string.h>

#include "fuzz_virtio.h"
#include "vmm/virtio/console.h"
#include "vmm/virtio/rng.h"
#include "vmm/virtio/virtio.h"

static unsigned setup(struct fuzz_in *in)
{
	return fin_u8(in) & 1;
}

static int create(struct vm *vm, unsigned key, struct virtio_dev **out)
{
	struct console_spec spec = { .kind = CONSOLE_FILE, .path = "/dev/null" };
	char err[256];

	if (key)
		return virtio_console_create(vm, &spec, 0, out, err, sizeof(err));
	return virtio_rng_create(vm, out, err, sizeof(err));
}

/* Up to 8 raw writes anywhere in BAR 0 (through its io_ops). */
static void op(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in)
{
	unsigned n = fin_u8(in) % 8 + 1;

	for (unsigned i = 0; i < n && vm->dev; i++) {
		uint16_t off = fin_u16(in) % 0x8000;
		unsigned len = 1u << (fin_u8(in) & 3);
		uint64_t v = fin_take(in, len);

		vm->dev->bars[0].ops->write(vm->dev->bars[0].opaque, off, &v, len);
	}
}

static const struct fuzz_virtio_target target = { .setup = setup, .create = create, .op = op };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_virtio_run(data, size, &target);
}
