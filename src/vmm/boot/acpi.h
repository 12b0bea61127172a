/* ACPI tables for a cloison VM: RSDP, XSDT, FADT (+FACS), MADT, MCFG and a
 * DSDT with the PCI host bridge (_CRS with the MMIO window and I/O), COM1,
 * the power button, \_S5, ACPI PCI hotplug slots and the VM Generation ID.
 * Pure: builds into a buffer, so tests can run `iasl -d` on the result. */
#ifndef CLOISON_VMM_BOOT_ACPI_H
#define CLOISON_VMM_BOOT_ACPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct acpi_config {
	unsigned ncpus;		/* APIC ids 0..ncpus-1 */
	uint64_t ram_below_4g;	/* bytes */
	uint64_t ram_above_4g;	/* bytes (from 4 GiB) */
	/* PCI slots (bit n = slot n) that take devices at runtime through
	 * ACPI PCI hotplug (bus/hotplug.h): each gets a Device with _ADR,
	 * _SUN and _EJ0 under \_SB.PCI0, and \_GPE._E01 notifies them.
	 * 0: no hotplug. */
	uint32_t hotplug_slots;
	/* A VM Generation ID device \_SB.VGEN whose ADDR returns
	 * LAYOUT_VMGENID, and \_GPE._E02 that notifies it (hw/vmgenid.h). */
	bool vmgenid;
};

struct acpi_tables {
	uint64_t rsdp_gpa;	/* where the RSDP ended up */
	size_t used;		/* bytes of buf used */
	/* Offsets in buf of each table, for tests (0 = absent). */
	size_t xsdt_off, fadt_off, facs_off, madt_off, mcfg_off, dsdt_off;
};

/* Builds all tables into buf, which the guest will see at buf_gpa (so
 * pointers between tables are buf_gpa + offset). The RSDP is placed first,
 * 16-byte aligned, within the BIOS area (buf_gpa is LAYOUT_ACPI_BASE).
 * 0, -ENOSPC if buf is too small, -EINVAL for ncpus 0 or > 255. */
int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t len, uint64_t buf_gpa,
	       struct acpi_tables *out);

#endif
