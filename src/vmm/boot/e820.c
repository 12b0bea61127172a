#include "vmm/boot/boot.h"

#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "vmm/layout.h"

static void add(struct e820_map *map, uint64_t addr, uint64_t size, uint32_t type)
{
	if (size == 0)
		return;
	map->e[map->n].addr = addr;
	map->e[map->n].size = size;
	map->e[map->n].type = type;
	map->n++;
}

int e820_build(uint64_t mem, struct e820_map *out)
{
	uint64_t low;

	if (mem < 2 * LAYOUT_KERNEL_START || !IS_ALIGNED(mem, 4096))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	low = MIN(mem, LAYOUT_LOWMEM_END);
	add(out, 0, LAYOUT_EBDA, E820_RAM);
	/* EBDA, VGA memory and option ROMs, as on a PC. */
	add(out, LAYOUT_EBDA, LAYOUT_ACPI_BASE - LAYOUT_EBDA, E820_RESERVED);
	/* The BIOS area holds the RSDP and the tables acpi.c builds. */
	add(out, LAYOUT_ACPI_BASE, LAYOUT_ACPI_MAX, E820_ACPI);
	add(out, LAYOUT_KERNEL_START, low - LAYOUT_KERNEL_START, E820_RAM);
	/* Linux only trusts MCFG's ECAM window when e820 reserves it. */
	add(out, LAYOUT_PCI_ECAM_BASE, LAYOUT_PCI_ECAM_SIZE, E820_RESERVED);
	if (mem > low)
		add(out, LAYOUT_HIGHMEM_START, mem - low, E820_RAM);
	return 0;
}

uint64_t e820_ram_bytes(const struct e820_map *map)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < map->n; i++)
		if (map->e[i].type == E820_RAM)
			sum += map->e[i].size;
	return sum;
}
