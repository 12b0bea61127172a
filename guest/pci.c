/* PCI configuration space from ring 3: ECAM (MCFG) through the identity map,
 * or the 0xCF8/0xCFC ports through the I/O system call when the machine has
 * no MCFG (QEMU's -M pc). */
#include "virtio.h"

#define PCI_VENDOR_VIRTIO 0x1af4

static uint64_t ecam_addr(const struct guest *g, struct pci_addr a, unsigned off)
{
	return g->acpi.ecam_base + ((uint64_t)a.bus << 20 | (uint64_t)a.dev << 15 |
				    (uint64_t)a.fn << 12 | (off & 0xffc));
}

static uint32_t cf8(struct pci_addr a, unsigned off)
{
	return 0x80000000u | (uint32_t)a.bus << 16 | (uint32_t)a.dev << 11 | (uint32_t)a.fn << 8 |
	       (off & 0xfc);
}

uint32_t pci_read32(struct guest *g, struct pci_addr a, unsigned off)
{
	if (g->acpi.have_ecam)
		return mmio_read32(ecam_addr(g, a, off));
	io_out32(0xcf8, cf8(a, off));
	return io_in32(0xcfc);
}

void pci_write32(struct guest *g, struct pci_addr a, unsigned off, uint32_t v)
{
	if (g->acpi.have_ecam) {
		mmio_write32(ecam_addr(g, a, off), v);
		return;
	}
	io_out32(0xcf8, cf8(a, off));
	io_out32(0xcfc, v);
}

unsigned pci_find_virtio(struct guest *g, struct pci_addr *out, unsigned *types, unsigned max)
{
	unsigned n = 0;

	for (uint8_t dev = 0; dev < 32 && n < max; dev++) {
		struct pci_addr a = { 0, dev, 0 };
		uint32_t id = pci_read32(g, a, 0);
		unsigned device = id >> 16, type;

		if ((id & 0xffff) != PCI_VENDOR_VIRTIO)
			continue;
		if (device >= 0x1040 && device <= 0x107f)
			type = device - 0x1040;
		else if (device >= 0x1000 && device <= 0x103f)
			type = pci_read32(g, a, 0x2c) >> 16; /* transitional: subsystem id */
		else
			continue;
		out[n] = a;
		types[n] = type;
		n++;
	}
	return n;
}
