/* The guest-physical and I/O-port map of a cloison VM. One place, so the
 * loaders, the e820 builder, the ACPI tables and the devices agree. */
#ifndef CLOISON_VMM_LAYOUT_H
#define CLOISON_VMM_LAYOUT_H

/* Low memory used by the loaders (all below 1 MiB, inside RAM). */
#define LAYOUT_GDT 0x500ULL
#define LAYOUT_PVH_START_INFO 0x6000ULL /* struct hvm_start_info + memmap */
#define LAYOUT_BOOT_PARAMS 0x7000ULL	/* Linux zero page */
#define LAYOUT_PAGE_TABLES 0x9000ULL	/* identity map for 64-bit entry */
#define LAYOUT_CMDLINE 0x20000ULL
#define LAYOUT_CMDLINE_MAX 0x10000ULL
#define LAYOUT_EBDA 0x9fc00ULL		/* end of conventional RAM */
#define LAYOUT_BIOS_START 0xa0000ULL	/* VGA + ROM area: reserved */
#define LAYOUT_VMGENID 0xdf000ULL	/* VM Generation ID buffer (hw/vmgenid.h): the last
					 * page below the ACPI tables, e820-reserved */
#define LAYOUT_ACPI_BASE 0xe0000ULL	/* RSDP is found by scanning here */
#define LAYOUT_ACPI_MAX 0x20000ULL
#define LAYOUT_KERNEL_START 0x100000ULL /* 1 MiB */

/* Guest RAM: [0, min(mem, 3 GiB)) and, for the rest, [4 GiB, ...). */
#define LAYOUT_LOWMEM_END 0xc0000000ULL
#define LAYOUT_HIGHMEM_START 0x100000000ULL

/* The 32-bit hole, 3 GiB .. 4 GiB. */
#define LAYOUT_PCI_MMIO_BASE 0xc0000000ULL /* 32-bit BARs */
#define LAYOUT_PCI_MMIO_SIZE 0x20000000ULL
#define LAYOUT_PCI_ECAM_BASE 0xe0000000ULL /* bus 0 only: 1 MiB */
#define LAYOUT_PCI_ECAM_SIZE 0x100000ULL
#define LAYOUT_IOAPIC_BASE 0xfec00000ULL
#define LAYOUT_LAPIC_BASE 0xfee00000ULL

/* I/O ports. */
#define PORT_COM1 0x3f8
#define IRQ_COM1 4
#define PORT_I8042_DATA 0x60
#define PORT_I8042_CMD 0x64
#define PORT_RTC 0x70
#define IRQ_RTC 8
#define PORT_PCI_CONFIG_ADDR 0xcf8
#define PORT_PCI_CONFIG_DATA 0xcfc
#define PORT_ACPI_PM1A_EVT 0x600 /* 4 bytes: PM1_STS, PM1_EN */
#define PORT_ACPI_PM1A_CNT 0x604 /* 2 bytes */
#define PORT_ACPI_PM_TMR 0x608	 /* 4 bytes */
#define PORT_ACPI_RESET 0x610	 /* 1 byte, FADT RESET_REG, value 0x01 */
#define PORT_ACPI_GPE0 0x620	 /* 4 bytes: GPE0_STS, GPE0_EN */
#define VMGENID_GPE 2		 /* GPE0 bit: \_GPE._E02 notifies \_SB.VGEN */
#define IRQ_ACPI_SCI 9
#define ACPI_RESET_VALUE 0x01
#define ACPI_S5_SLP_TYP 5 /* the value in DSDT's \_S5 package */

#endif
