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

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

/* Where BARs go when the firmware left them unassigned (QEMU with qboot):
 * 32-bit ones above low RAM and ECAM, from 3 GiB, below the IOAPIC; 64-bit
 * ones just above RAM at a 1 GiB boundary, where QEMU's 64-bit PCI hole
 * starts. */
static void windows_init(struct guest *g)
{
	uint64_t low = 0xc0000000ULL;

	if (g->pci_next32)
		return;
	for (unsigned i = 0; i < g->n_e820; i++) {
		uint64_t end = g->e820[i].addr + g->e820[i].size;
		if (g->e820[i].type == 1 && end <= (4ULL << 30) && end > low)
			low = end;
	}
	if (g->acpi.have_ecam && g->acpi.ecam_base < (4ULL << 30)) {
		uint64_t end = g->acpi.ecam_base + ((uint64_t)g->acpi.ecam_bus_end + 1) * (1ULL << 20);
		if (end > low && g->acpi.ecam_base < 0xfec00000ULL)
			low = end;
	}
	g->pci_next32 = align_up(low, 1ULL << 24);
	g->pci_next64 = align_up(g->ram_end > (4ULL << 30) ? g->ram_end : (4ULL << 30), 1ULL << 30);
}

int pci_assign_bars(struct guest *g, struct pci_addr a)
{
	uint32_t cmd = pci_read32(g, a, 4);
	bool changed = false;

	windows_init(g);
	for (unsigned bar = 0; bar < 6; bar++) {
		unsigned off = 0x10 + 4 * bar;
		uint32_t lo = pci_read32(g, a, off), hi = 0, szlo, szhi = 0xffffffffu;
		bool is64 = !(lo & 1) && ((lo >> 1) & 3) == 2 && bar < 5;
		uint64_t size, addr, *next;

		if (lo & 1) /* I/O BAR: not needed by a modern driver */
			continue;
		if (is64)
			hi = pci_read32(g, a, off + 4);
		if ((lo & ~0xfu) || hi) { /* already placed */
			bar += is64;
			continue;
		}
		pci_write32(g, a, 4, cmd & ~3u); /* no decoding while sizing */
		pci_write32(g, a, off, 0xffffffffu);
		szlo = pci_read32(g, a, off) & ~0xfu;
		if (is64) {
			pci_write32(g, a, off + 4, 0xffffffffu);
			szhi = pci_read32(g, a, off + 4);
		}
		size = ~((uint64_t)szhi << 32 | szlo) + 1;
		if (!szlo && !(is64 && szhi)) { /* not implemented */
			pci_write32(g, a, off, 0);
			bar += is64;
			continue;
		}
		next = is64 ? &g->pci_next64 : &g->pci_next32;
		addr = align_up(*next, size);
		if (!is64 && addr + size > 0xfec00000ULL)
			return -1;
		*next = addr + size;
		pci_write32(g, a, off, (uint32_t)addr | (lo & 0xf));
		if (is64)
			pci_write32(g, a, off + 4, (uint32_t)(addr >> 32));
		changed = true;
		bar += is64;
	}
	if (changed)
		out("pci %02x:%02x.%x: BARs placed by the guest (the firmware left them unassigned)\n",
		    a.bus, a.dev, a.fn);
	pci_write32(g, a, 4, (cmd & 0xffff) | 0x6); /* memory space, bus master */
	return 0;
}
