/* The kernel loaders, run on a malloc'd "guest" (no KVM): hand-made
 * bzImage, vmlinux and PVH images, good and malformed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "vmm/boot/boot.h"
#include "vmm/guest_mem.h"
#include "vmm/layout.h"

#define GUEST_SIZE (64 * MiB)

struct fixture {
	struct guest_mem mem;
	struct e820_map e820;
	struct boot_input in;
	struct boot_entry out;
	char err[256];
	uint8_t *img;
	size_t len;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->mem.nregions = 1;
	f->mem.total = GUEST_SIZE;
	f->mem.regions[0].size = GUEST_SIZE;
	f->mem.regions[0].hva = calloc(1, GUEST_SIZE);
	e820_build(GUEST_SIZE, &f->e820);
	f->in.cmdline = "console=ttyS0 hello";
	f->in.e820 = &f->e820;
	f->in.rsdp_gpa = LAYOUT_ACPI_BASE;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->mem.regions[0].hva);
	free(f->img);
	free(f);
	return 0;
}

static uint8_t *gp(struct fixture *f, uint64_t gpa)
{
	return f->mem.regions[0].hva + gpa;
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static int load(struct fixture *f)
{
	f->in.kernel = f->img;
	f->in.kernel_len = f->len;
	return boot_load_kernel(&f->mem, &f->in, &f->out, f->err, sizeof(f->err));
}

/* ---- bzImage -------------------------------------------------------- */

#define SETUP_SECTS 4
#define PM_SIZE 8192

static void make_bzimage(struct fixture *f, uint16_t version, uint16_t xloadflags)
{
	size_t setup = (SETUP_SECTS + 1) * 512;

	f->len = setup + PM_SIZE;
	f->img = calloc(1, f->len);
	f->img[BP_SETUP_SECTS] = SETUP_SECTS;
	memcpy(f->img + BP_BOOT_FLAG, &(uint16_t){ BOOT_FLAG_MAGIC }, 2);
	f->img[BP_JUMP] = 0xeb;
	f->img[BP_JUMP + 1] = 0x66; /* header ends at 0x268 */
	memcpy(f->img + BP_HEADER, &(uint32_t){ BOOT_HDR_MAGIC }, 4);
	memcpy(f->img + BP_VERSION, &version, 2);
	f->img[BP_LOADFLAGS] = LOADFLAG_LOADED_HIGH;
	memcpy(f->img + BP_XLOADFLAGS, &xloadflags, 2);
	memcpy(f->img + BP_CMDLINE_SIZE, &(uint32_t){ 2047 }, 4);
	memcpy(f->img + BP_INITRD_ADDR_MAX, &(uint32_t){ 0x7fffffff }, 4);
	memcpy(f->img + BP_INIT_SIZE, &(uint32_t){ 0x200000 }, 4);
	for (size_t i = 0; i < PM_SIZE; i++)
		f->img[setup + i] = (uint8_t)(i * 7 + 3);
}

static void test_bzimage_64(void **state)
{
	struct fixture *f = *state;
	static uint8_t initrd[3 * 4096 + 100];
	uint8_t *bp;
	uint64_t rd;

	memset(initrd, 0x5a, sizeof(initrd));
	f->in.initrd = initrd;
	f->in.initrd_len = sizeof(initrd);
	make_bzimage(f, 0x20f, XLF_KERNEL_64);
	assert_int_equal(load(f), 0);
	assert_int_equal(f->out.mode, BOOT_ENTRY_LINUX64);
	assert_int_equal(f->out.rip, 0x100200);
	assert_int_equal(f->out.rsi, LAYOUT_BOOT_PARAMS);
	assert_string_equal(f->out.format, "bzImage");
	assert_memory_equal(gp(f, LAYOUT_KERNEL_START), f->img + (SETUP_SECTS + 1) * 512, PM_SIZE);

	bp = gp(f, LAYOUT_BOOT_PARAMS);
	assert_int_equal(bp[BP_TYPE_OF_LOADER], 0xff);
	assert_true(bp[BP_LOADFLAGS] & LOADFLAG_CAN_USE_HEAP);
	assert_int_equal(rd32(bp + BP_HEADER), BOOT_HDR_MAGIC);
	assert_int_equal(rd32(bp + BP_CMD_LINE_PTR), LAYOUT_CMDLINE);
	assert_string_equal((char *)gp(f, LAYOUT_CMDLINE), "console=ttyS0 hello");
	assert_int_equal(rd32(bp + BP_INIT_SIZE), 0x200000);
	assert_int_equal(rd64(bp + BP_ACPI_RSDP_ADDR), LAYOUT_ACPI_BASE);
	/* initrd: page aligned, as high as it goes, after the kernel. */
	rd = rd32(bp + BP_RAMDISK_IMAGE);
	assert_int_equal(rd, f->out.initrd_gpa);
	assert_int_equal(rd32(bp + BP_RAMDISK_SIZE), sizeof(initrd));
	assert_int_equal(rd % 4096, 0);
	assert_true(rd + sizeof(initrd) <= GUEST_SIZE);
	assert_true(rd + sizeof(initrd) + 4096 > GUEST_SIZE);
	assert_true(rd >= LAYOUT_KERNEL_START + 0x200000);
	assert_memory_equal(gp(f, rd), initrd, sizeof(initrd));
	/* e820 copied entry for entry. */
	assert_int_equal(bp[BP_E820_ENTRIES], f->e820.n);
	for (unsigned i = 0; i < f->e820.n; i++) {
		uint8_t *e = bp + BP_E820_TABLE + i * 20;
		assert_int_equal(rd64(e), f->e820.e[i].addr);
		assert_int_equal(rd64(e + 8), f->e820.e[i].size);
		assert_int_equal(rd32(e + 16), f->e820.e[i].type);
	}
	/* GDT: __BOOT_CS is long-mode code, __BOOT_DS flat data. */
	assert_int_equal(rd64(gp(f, LAYOUT_GDT + BOOT_GDT_CS)) >> 53 & 1, 1);
	assert_int_equal(rd64(gp(f, LAYOUT_GDT + BOOT_GDT_DS)) >> 40 & 0xf, 0x3);
	/* Identity map: PML4 -> PDPT -> PD with 2 MiB pages. */
	assert_int_equal(rd64(gp(f, LAYOUT_PAGE_TABLES)) & ~0xfffULL, LAYOUT_PAGE_TABLES + 0x1000);
	assert_int_equal(rd64(gp(f, LAYOUT_PAGE_TABLES + 0x2000 + 8 * 5)), (5ULL << 21) | 0x83);
}

static void test_bzimage_32(void **state)
{
	struct fixture *f = *state;

	make_bzimage(f, 0x20a, 0);
	assert_int_equal(load(f), 0);
	assert_int_equal(f->out.mode, BOOT_ENTRY_LINUX32);
	assert_int_equal(f->out.rip, LAYOUT_KERNEL_START);
	/* 32-bit entry: __BOOT_CS is 32-bit code. */
	assert_int_equal(rd64(gp(f, LAYOUT_GDT + BOOT_GDT_CS)) >> 53 & 1, 0);
	assert_int_equal(rd64(gp(f, LAYOUT_GDT + BOOT_GDT_CS)) >> 54 & 1, 1);
	/* 2.10 has no acpi_rsdp_addr. */
	assert_int_equal(rd64(gp(f, LAYOUT_BOOT_PARAMS) + BP_ACPI_RSDP_ADDR), 0);
}

static void test_bzimage_bad(void **state)
{
	struct fixture *f = *state;
	static uint8_t big_initrd[8 * 4096];
	char longcmd[3000];

	make_bzimage(f, 0x205, XLF_KERNEL_64);
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "2.06"));

	f->img[BP_VERSION] = 0x0f;
	f->img[BP_LOADFLAGS] = 0;
	assert_int_equal(load(f), -ENOEXEC); /* zImage */
	f->img[BP_LOADFLAGS] = LOADFLAG_LOADED_HIGH;

	memset(longcmd, 'a', sizeof(longcmd) - 1);
	longcmd[sizeof(longcmd) - 1] = 0;
	f->in.cmdline = longcmd;
	assert_int_equal(load(f), -E2BIG);
	f->in.cmdline = "";

	memcpy(f->img + BP_INIT_SIZE, &(uint32_t){ GUEST_SIZE }, 4);
	assert_int_equal(load(f), -ENOMEM);
	memcpy(f->img + BP_INIT_SIZE, &(uint32_t){ 0x200000 }, 4);

	/* An initrd that cannot sit below initrd_addr_max above the kernel. */
	memcpy(f->img + BP_INITRD_ADDR_MAX, &(uint32_t){ 0x300fff }, 4);
	f->in.initrd = big_initrd;
	f->in.initrd_len = sizeof(big_initrd);
	assert_int_equal(load(f), -ENOMEM);
	f->in.initrd = NULL;

	f->len = 0x300; /* truncated in the setup code */
	assert_int_equal(load(f), -ENOEXEC);
	f->len = 0x100; /* shorter than the header: not recognised */
	assert_int_equal(load(f), -ENOEXEC);
	f->len = 0;
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "empty"));
}

static void test_garbage(void **state)
{
	struct fixture *f = *state;

	f->len = 4096;
	f->img = malloc(f->len);
	for (size_t i = 0; i < f->len; i++)
		f->img[i] = (uint8_t)(i * 31 + 7);
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "not a kernel"));
}

/* ---- ELF ------------------------------------------------------------ */

#define CODE_SIZE 256

/* One PT_LOAD (filesz CODE_SIZE, memsz + 4 KiB of bss) at paddr and, when
 * pvh_entry is not 0, a PT_NOTE with the Xen PVH entry (desc desc_size). */
static void make_elf64(struct fixture *f, uint64_t paddr, uint64_t entry, uint64_t pvh_entry,
		       unsigned desc_size)
{
	size_t note_off = sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr);
	size_t code_off = 0x1000;
	Elf64_Ehdr *eh;
	Elf64_Phdr *ph;
	uint8_t *note;

	f->len = code_off + CODE_SIZE;
	f->img = calloc(1, f->len);
	eh = (Elf64_Ehdr *)f->img;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_entry = entry;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = pvh_entry ? 2 : 1;
	ph = (Elf64_Phdr *)(f->img + eh->e_phoff);
	ph[0].p_type = PT_LOAD;
	ph[0].p_offset = code_off;
	ph[0].p_paddr = paddr;
	ph[0].p_vaddr = paddr;
	ph[0].p_filesz = CODE_SIZE;
	ph[0].p_memsz = CODE_SIZE + 4096;
	for (size_t i = 0; i < CODE_SIZE; i++)
		f->img[code_off + i] = (uint8_t)(0x90 + i);
	if (pvh_entry) {
		ph[1].p_type = PT_NOTE;
		ph[1].p_offset = note_off;
		ph[1].p_filesz = 12 + 4 + ALIGN_UP(desc_size, 4);
		note = f->img + note_off;
		memcpy(note, &(uint32_t){ 4 }, 4);
		memcpy(note + 4, &(uint32_t){ desc_size }, 4);
		memcpy(note + 8, &(uint32_t){ XEN_ELFNOTE_PHYS32_ENTRY }, 4);
		memcpy(note + 12, "Xen", 4);
		memcpy(note + 16, &pvh_entry, desc_size > 8 ? 8 : desc_size);
	}
}

static void test_vmlinux(void **state)
{
	struct fixture *f = *state;
	uint8_t *bp, zero[4096] = { 0 };

	make_elf64(f, 0x1000000, 0x1000010, 0, 0);
	memset(gp(f, 0x1000000 + CODE_SIZE), 0xee, 4096); /* bss must be cleared */
	assert_int_equal(load(f), 0);
	assert_int_equal(f->out.mode, BOOT_ENTRY_LINUX64);
	assert_string_equal(f->out.format, "vmlinux");
	assert_int_equal(f->out.rip, 0x1000010);
	assert_int_equal(f->out.rsi, LAYOUT_BOOT_PARAMS);
	assert_memory_equal(gp(f, 0x1000000), f->img + 0x1000, CODE_SIZE);
	assert_memory_equal(gp(f, 0x1000000 + CODE_SIZE), zero, 4096);
	bp = gp(f, LAYOUT_BOOT_PARAMS);
	assert_int_equal(rd32(bp + BP_HEADER), BOOT_HDR_MAGIC);
	assert_int_equal(bp[BP_BOOT_FLAG] | bp[BP_BOOT_FLAG + 1] << 8, BOOT_FLAG_MAGIC);
	assert_int_equal(bp[BP_TYPE_OF_LOADER], 0xff);
	assert_int_equal(bp[BP_E820_ENTRIES], f->e820.n);
	assert_string_equal((char *)gp(f, LAYOUT_CMDLINE), "console=ttyS0 hello");
}

static void test_elf_bad(void **state)
{
	struct fixture *f = *state;
	Elf64_Phdr *ph;

	make_elf64(f, 0x10000000, 0x10000000, 0, 0); /* beyond 64 MiB of RAM */
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "outside guest RAM"));
	free(f->img);

	make_elf64(f, 0x8000, 0x8000, 0, 0); /* over the boot area */
	assert_int_equal(load(f), -ENOEXEC);
	free(f->img);

	make_elf64(f, 0x1000000, 0x2000000, 0, 0); /* entry outside the image */
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "entry"));
	free(f->img);

	make_elf64(f, 0x1000000, 0x1000000, 0, 0);
	ph = (Elf64_Phdr *)(f->img + sizeof(Elf64_Ehdr));
	ph->p_filesz = 1 << 20; /* past the end of the file */
	assert_int_equal(load(f), -ENOEXEC);
	ph->p_filesz = CODE_SIZE;
	f->len = 60; /* program headers cut off */
	assert_int_equal(load(f), -ENOEXEC);
	f->len = 0x1000 + CODE_SIZE;
	((Elf64_Ehdr *)f->img)->e_machine = EM_AARCH64;
	assert_int_equal(load(f), -ENOEXEC);
	((Elf64_Ehdr *)f->img)->e_machine = EM_X86_64;
	ph->p_type = PT_DYNAMIC; /* nothing to load */
	assert_int_equal(load(f), -ENOEXEC);
	ph->p_type = PT_LOAD;
	f->img[EI_CLASS] = ELFCLASS32; /* 32-bit ELF: headers no longer make sense */
	assert_int_equal(load(f), -ENOEXEC);
}

static void test_elf32_without_pvh(void **state)
{
	struct fixture *f = *state;
	Elf32_Ehdr *eh;
	Elf32_Phdr *ph;

	f->len = 0x1000 + CODE_SIZE;
	f->img = calloc(1, f->len);
	eh = (Elf32_Ehdr *)f->img;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS32;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_machine = EM_386;
	eh->e_entry = 0x100000;
	eh->e_phoff = sizeof(*eh);
	eh->e_phentsize = sizeof(Elf32_Phdr);
	eh->e_phnum = 1;
	ph = (Elf32_Phdr *)(f->img + sizeof(*eh));
	ph->p_type = PT_LOAD;
	ph->p_offset = 0x1000;
	ph->p_paddr = 0x100000;
	ph->p_filesz = ph->p_memsz = CODE_SIZE;
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "32-bit ELF"));
}

static void test_pvh(void **state)
{
	struct fixture *f = *state;
	static uint8_t initrd[5000];
	struct hvm_start_info si;
	struct hvm_modlist_entry mod;

	memset(initrd, 0xa5, sizeof(initrd));
	f->in.initrd = initrd;
	f->in.initrd_len = sizeof(initrd);
	make_elf64(f, 0x100000, 0xffffffff81000000ULL, 0x100020, 4);
	assert_int_equal(load(f), 0);
	assert_int_equal(f->out.mode, BOOT_ENTRY_PVH);
	assert_string_equal(f->out.format, "PVH ELF");
	assert_int_equal(f->out.rip, 0x100020);
	assert_int_equal(f->out.rbx, LAYOUT_PVH_START_INFO);
	memcpy(&si, gp(f, LAYOUT_PVH_START_INFO), sizeof(si));
	assert_int_equal(si.magic, HVM_START_MAGIC);
	assert_int_equal(si.version, 1);
	assert_int_equal(si.cmdline_paddr, LAYOUT_CMDLINE);
	assert_string_equal((char *)gp(f, si.cmdline_paddr), "console=ttyS0 hello");
	assert_int_equal(si.rsdp_paddr, LAYOUT_ACPI_BASE);
	assert_int_equal(si.memmap_entries, f->e820.n);
	for (unsigned i = 0; i < f->e820.n; i++) {
		struct hvm_memmap_entry e;
		memcpy(&e, gp(f, si.memmap_paddr + i * sizeof(e)), sizeof(e));
		assert_int_equal(e.addr, f->e820.e[i].addr);
		assert_int_equal(e.size, f->e820.e[i].size);
		assert_int_equal(e.type, f->e820.e[i].type);
	}
	assert_int_equal(si.nr_modules, 1);
	memcpy(&mod, gp(f, si.modlist_paddr), sizeof(mod));
	assert_int_equal(mod.size, sizeof(initrd));
	assert_memory_equal(gp(f, mod.paddr), initrd, sizeof(initrd));
	/* PVH starts in 32-bit protected mode: __BOOT_CS is 32-bit code. */
	assert_int_equal(rd64(gp(f, LAYOUT_GDT + BOOT_GDT_CS)) >> 54 & 1, 1);
}

static void test_pvh_bad(void **state)
{
	struct fixture *f = *state;

	make_elf64(f, 0x100000, 0x100000, 0x100020, 3); /* descsz 3 */
	assert_int_equal(load(f), -ENOEXEC);
	free(f->img);
	make_elf64(f, 0x100000, 0x100000, 0x900000, 4); /* entry outside the image */
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "PVH entry"));
	free(f->img);
	make_elf64(f, 0x100000, 0x100000, 0x100020, 8); /* 8-byte desc is fine */
	assert_int_equal(load(f), 0);
}

static void test_protocol_choice(void **state)
{
	struct fixture *f = *state;

	/* A PVH ELF entered through the Linux 64-bit protocol. */
	make_elf64(f, 0x100000, 0x100010, 0x100020, 4);
	f->in.protocol = BOOT_PROTO_LINUX;
	assert_int_equal(load(f), 0);
	assert_int_equal(f->out.mode, BOOT_ENTRY_LINUX64);
	assert_int_equal(f->out.rip, 0x100010);
	free(f->img);
	/* PVH asked for, but no note. */
	make_elf64(f, 0x100000, 0x100010, 0, 0);
	f->in.protocol = BOOT_PROTO_PVH;
	assert_int_equal(load(f), -ENOEXEC);
	assert_non_null(strstr(f->err, "PVH"));
	free(f->img);
	/* A bzImage has no PVH entry. */
	make_bzimage(f, 0x20f, XLF_KERNEL_64);
	assert_int_equal(load(f), -ENOEXEC);
	f->in.protocol = BOOT_PROTO_AUTO;
	assert_int_equal(load(f), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bzimage_64, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bzimage_32, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bzimage_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmlinux, setup, teardown),
		cmocka_unit_test_setup_teardown(test_elf_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_elf32_without_pvh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pvh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pvh_bad, setup, teardown),
		cmocka_unit_test_setup_teardown(test_protocol_choice, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
