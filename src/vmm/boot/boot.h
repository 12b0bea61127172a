/* Kernel loaders (bzImage, vmlinux ELF, PVH ELF) and the e820 map. Pure:
 * they write into a struct guest_mem and describe the entry state, so unit
 * tests run them on a malloc'd "guest" without KVM. vcpu.c turns a struct
 * boot_entry into registers. */
#ifndef CLOISON_VMM_BOOT_BOOT_H
#define CLOISON_VMM_BOOT_BOOT_H

#include <stddef.h>
#include <stdint.h>

struct guest_mem;

#define E820_RAM 1
#define E820_RESERVED 2
#define E820_ACPI 3
#define E820_MAX_ENTRIES 8

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

struct e820_map {
	unsigned n;
	struct e820_entry e[E820_MAX_ENTRIES];
};

/* Builds the map of a VM with mem bytes of RAM laid out as layout.h says:
 * RAM [0, EBDA), reserved EBDA..ACPI area, the ACPI tables area, RAM from
 * 1 MiB to min(mem, 3 GiB), the PCI ECAM window reserved, RAM above 4 GiB
 * for the rest. The hole is not listed. Sorted, non-overlapping.
 * 0, or -EINVAL when mem is below 2 MiB or not 4 KiB aligned. */
int e820_build(uint64_t mem, struct e820_map *out);

/* Bytes of type E820_RAM in map. */
uint64_t e820_ram_bytes(const struct e820_map *map);

enum boot_entry_mode {
	BOOT_ENTRY_LINUX64, /* long mode, paging on (identity), RSI = zero page */
	BOOT_ENTRY_LINUX32, /* flat protected mode, paging off, ESI = zero page */
	BOOT_ENTRY_PVH,	    /* flat protected mode, paging off, EBX = start info */
};

enum boot_protocol {
	BOOT_PROTO_AUTO = 0, /* by content: bzImage, PVH note, else vmlinux */
	BOOT_PROTO_LINUX,    /* Linux boot protocol even when a PVH note exists */
	BOOT_PROTO_PVH,	     /* PVH entry; an image without the note is refused */
};

struct boot_input {
	enum boot_protocol protocol;
	const uint8_t *kernel;
	size_t kernel_len;
	const uint8_t *initrd; /* NULL when there is none */
	size_t initrd_len;
	const char *cmdline; /* never NULL; "" for none */
	const struct e820_map *e820;
	uint64_t rsdp_gpa; /* 0 when there are no ACPI tables */
};

struct boot_entry {
	enum boot_entry_mode mode;
	uint64_t rip;
	uint64_t rsi;		/* Linux: the zero page */
	uint64_t rbx;		/* PVH: struct hvm_start_info */
	const char *format;	/* "bzImage", "vmlinux", "PVH ELF" for messages */
	uint64_t kernel_start;	/* lowest and highest+1 guest address of the image */
	uint64_t kernel_end;
	uint64_t initrd_gpa;	/* 0 when there is no initrd */
};

/* Probes the image (bzImage by its setup header, otherwise ELF: PVH when it
 * has a XEN_ELFNOTE_PHYS32_ENTRY note, else a 64-bit vmlinux), copies it,
 * the initrd and the command line into mem, writes the zero page or the
 * PVH start info with the e820 map, the GDT and the identity page tables,
 * and fills *out. Returns 0; -ENOEXEC for a malformed or unsupported image,
 * -E2BIG for a command line the kernel cannot take, -ENOMEM when the image
 * or initrd does not fit in RAM. err always says what was wrong. */
int boot_load_kernel(struct guest_mem *mem, const struct boot_input *in, struct boot_entry *out,
		     char *err, size_t errlen);

/* The zero page offsets (Linux Documentation/arch/x86/boot.rst and
 * zero-page.rst); exported for the unit tests. */
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1 /* setup header start */
#define BP_SETUP_SECTS 0x1f1
#define BP_VID_MODE 0x1fa
#define BP_BOOT_FLAG 0x1fe
#define BP_JUMP 0x200
#define BP_HEADER 0x202
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS 0x211
#define BP_CODE32_START 0x214
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_HEAP_END_PTR 0x224
#define BP_CMD_LINE_PTR 0x228
#define BP_INITRD_ADDR_MAX 0x22c
#define BP_KERNEL_ALIGNMENT 0x230
#define BP_RELOCATABLE 0x234
#define BP_XLOADFLAGS 0x236
#define BP_CMDLINE_SIZE 0x238
#define BP_PAYLOAD_OFFSET 0x248
#define BP_PAYLOAD_LENGTH 0x24c
#define BP_PREF_ADDRESS 0x258
#define BP_INIT_SIZE 0x260
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
#define BP_SIZE 0x1000

#define BOOT_HDR_MAGIC 0x53726448 /* "HdrS" */
#define BOOT_FLAG_MAGIC 0xaa55
#define LOADFLAG_LOADED_HIGH 0x01
#define LOADFLAG_KEEP_SEGMENTS 0x40
#define LOADFLAG_CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01

/* PVH start info (xen/include/public/arch-x86/hvm/start_info.h, v1). */
#define HVM_START_MAGIC 0x336ec578
#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr;
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

struct hvm_modlist_entry {
	uint64_t paddr;
	uint64_t size;
	uint64_t cmdline_paddr;
	uint64_t reserved;
};

/* GDT selectors the loaders set up (Linux's boot protocol wants __BOOT_CS
 * 0x10 and __BOOT_DS 0x18). */
#define BOOT_GDT_CS 0x10
#define BOOT_GDT_DS 0x18
#define BOOT_GDT_TSS 0x20
#define BOOT_GDT_ENTRIES 5

/* Internal to boot/, shared between linux.c and pvh.c. */
struct boot_elf_image {
	uint64_t entry;
	uint64_t lo, hi; /* guest-physical extent of the PT_LOAD segments */
	int is64;
};
int boot_elf_load(struct guest_mem *mem, const uint8_t *img, size_t len,
		  struct boot_elf_image *out, char *err, size_t errlen);
/* An ELF file's header and program headers with the class (32/64-bit)
 * folded away. boot_elf_header checks the program header table lies
 * inside the file: 0 or -ENOEXEC. boot_elf_phdr reads entry i < phnum. */
struct boot_elf_header {
	int is64;
	uint16_t machine;
	uint64_t entry, phoff;
	unsigned phnum;
};
struct boot_elf_phdr {
	uint32_t type;
	uint64_t offset, filesz, paddr, memsz;
};
int boot_elf_header(const uint8_t *img, size_t len, struct boot_elf_header *h);
void boot_elf_phdr(const uint8_t *img, const struct boot_elf_header *h, unsigned i,
		   struct boot_elf_phdr *ph);
/* Finds the PVH 32-bit entry note; 0 with *entry, -ENOENT when absent,
 * -ENOEXEC when malformed. img must already have passed boot_elf_load. */
int pvh_find_entry(const uint8_t *img, size_t len, uint64_t *entry);
int pvh_setup(struct guest_mem *mem, const struct boot_input *in, const struct boot_elf_image *elf,
	      struct boot_entry *out, char *err, size_t errlen);
int boot_place_initrd(struct guest_mem *mem, const struct boot_input *in, uint64_t kernel_end,
		      uint64_t max_addr, uint64_t *gpa, char *err, size_t errlen);

#endif
