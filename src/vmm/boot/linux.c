/* Linux loaders: bzImage (boot protocol >= 2.06, 64-bit entry when the
 * kernel advertises XLF_KERNEL_64, else the 32-bit protected-mode entry)
 * and vmlinux ELF (64-bit entry). Also the ELF segment loader and the
 * pieces every entry mode shares: GDT, identity page tables, command line,
 * initrd placement. The image is untrusted: every offset is checked. */
#include "vmm/boot/boot.h"

#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "vmm/fail.h"
#include "vmm/guest_mem.h"
#include "vmm/layout.h"

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/* A flat descriptor: base 0, limit 4 GiB, granularity 4 KiB. */
static uint64_t gdt_flat(unsigned type, int code64, int db)
{
	uint64_t d = 0xffffULL | 0xfULL << 48; /* limit 0xfffff */

	d |= (uint64_t)(type & 0xf) << 40;
	d |= 1ULL << 44; /* S: code/data */
	d |= 1ULL << 47; /* present */
	d |= (uint64_t)(code64 ? 1 : 0) << 53;
	d |= (uint64_t)(db ? 1 : 0) << 54;
	d |= 1ULL << 55; /* G */
	return d;
}

static int setup_gdt(struct guest_mem *mem, enum boot_entry_mode mode)
{
	uint64_t *gdt = guest_mem_ptr(mem, LAYOUT_GDT, BOOT_GDT_ENTRIES * 8);
	uint64_t tss;

	if (!gdt)
		return -ENOMEM;
	gdt[0] = 0;
	gdt[1] = gdt_flat(0xb, 1, 0);
	/* __BOOT_CS: long-mode code for the 64-bit entry, 32-bit code else. */
	gdt[2] = mode == BOOT_ENTRY_LINUX64 ? gdt_flat(0xb, 1, 0) : gdt_flat(0xb, 0, 1);
	gdt[3] = gdt_flat(0x3, 0, 1);
	/* A busy TSS, base 0, limit 0x67: what vcpu.c loads into TR. */
	tss = 0x67ULL | 0xbULL << 40 | 1ULL << 47;
	gdt[4] = tss;
	return 0;
}

/* Identity-maps the first 4 GiB with 2 MiB pages: the kernel, zero page,
 * command line and initrd all lie there. */
static int setup_page_tables(struct guest_mem *mem)
{
	uint64_t *pml4 = guest_mem_ptr(mem, LAYOUT_PAGE_TABLES, 6 * 4096);
	uint64_t *pdpt, *pd;

	if (!pml4)
		return -ENOMEM;
	memset(pml4, 0, 6 * 4096);
	pdpt = pml4 + 512;
	pd = pdpt + 512;
	pml4[0] = (LAYOUT_PAGE_TABLES + 0x1000) | 0x3;
	for (unsigned i = 0; i < 4; i++)
		pdpt[i] = (LAYOUT_PAGE_TABLES + 0x2000 + i * 0x1000ULL) | 0x3;
	for (unsigned i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | 0x83; /* present, writable, 2 MiB */
	return 0;
}

static int copy_cmdline(struct guest_mem *mem, const char *cmdline, uint64_t limit, char *err,
			size_t errlen)
{
	size_t len = strlen(cmdline);
	char *dst;

	if (len + 1 > limit)
		return vmm_fail(err, errlen, -E2BIG,
			    "the command line is %zu bytes; this kernel takes at most %llu",
			    len, (unsigned long long)(limit - 1));
	dst = guest_mem_ptr(mem, LAYOUT_CMDLINE, len + 1);
	if (!dst)
		return vmm_fail(err, errlen, -ENOMEM, "no room for the command line");
	memcpy(dst, cmdline, len + 1);
	return 0;
}

int boot_place_initrd(struct guest_mem *mem, const struct boot_input *in, uint64_t kernel_end,
		      uint64_t max_addr, uint64_t *gpa, char *err, size_t errlen)
{
	uint64_t top = MIN(max_addr, mem->regions[0].size - 1) + 1;
	uint64_t addr;
	void *dst;

	*gpa = 0;
	if (!in->initrd)
		return 0;
	if (in->initrd_len == 0)
		return vmm_fail(err, errlen, -ENOEXEC, "the initrd is empty");
	if (in->initrd_len > top)
		goto too_big;
	addr = ALIGN_DOWN(top - in->initrd_len, 4096);
	if (addr < ALIGN_UP(kernel_end, 4096))
		goto too_big;
	dst = guest_mem_ptr(mem, addr, in->initrd_len);
	if (!dst)
		goto too_big;
	memcpy(dst, in->initrd, in->initrd_len);
	*gpa = addr;
	return 0;
too_big:
	return vmm_fail(err, errlen, -ENOMEM,
		    "the initrd (%zu bytes) does not fit between the kernel's end (0x%llx) and 0x%llx: "
		    "give the VM more --memory",
		    in->initrd_len, (unsigned long long)kernel_end, (unsigned long long)top);
}

static void fill_e820(uint8_t *bp, const struct e820_map *map)
{
	unsigned n = MIN(map->n, BP_E820_MAX);

	for (unsigned i = 0; i < n; i++) {
		uint8_t *e = bp + BP_E820_TABLE + i * 20;
		put64(e, map->e[i].addr);
		put64(e + 8, map->e[i].size);
		put32(e + 16, map->e[i].type);
	}
	bp[BP_E820_ENTRIES] = (uint8_t)n;
}

/* What every zero page gets, whatever the image kind. */
static void fill_zero_page(uint8_t *bp, const struct boot_input *in, uint64_t initrd_gpa)
{
	bp[BP_TYPE_OF_LOADER] = 0xff;
	bp[BP_LOADFLAGS] |= LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP;
	put16(bp + BP_HEAP_END_PTR, 0xfe00);
	put16(bp + BP_VID_MODE, 0xffff);
	put32(bp + BP_CMD_LINE_PTR, (uint32_t)LAYOUT_CMDLINE);
	put32(bp + BP_EXT_CMD_LINE_PTR, 0);
	if (initrd_gpa) {
		put32(bp + BP_RAMDISK_IMAGE, (uint32_t)initrd_gpa);
		put32(bp + BP_RAMDISK_SIZE, (uint32_t)in->initrd_len);
		put32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd_gpa >> 32));
		put32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)in->initrd_len >> 32));
	}
	put64(bp + BP_ACPI_RSDP_ADDR, in->rsdp_gpa);
	fill_e820(bp, in->e820);
}

static int load_bzimage(struct guest_mem *mem, const struct boot_input *in,
			struct boot_entry *out, char *err, size_t errlen)
{
	const uint8_t *k = in->kernel;
	size_t hdr_end, setup_size, pm_size;
	uint32_t init_size, cmdline_size, initrd_max;
	uint16_t version, xloadflags;
	uint8_t *bp, *dst;
	uint64_t kernel_end, initrd_gpa;
	int ret;

	if (in->kernel_len < 0x264)
		return vmm_fail(err, errlen, -ENOEXEC, "bzImage truncated: %zu bytes", in->kernel_len);
	version = get16(k + BP_VERSION);
	if (version < 0x206)
		return vmm_fail(err, errlen, -ENOEXEC,
			    "bzImage boot protocol %u.%02u is too old; 2.06 or later is needed",
			    version >> 8, version & 0xff);
	if (!(k[BP_LOADFLAGS] & LOADFLAG_LOADED_HIGH))
		return vmm_fail(err, errlen, -ENOEXEC, "a zImage (loaded low) is not supported");
	setup_size = ((size_t)(k[BP_SETUP_SECTS] ? k[BP_SETUP_SECTS] : 4) + 1) * 512;
	if (setup_size >= in->kernel_len)
		return vmm_fail(err, errlen, -ENOEXEC,
			    "bzImage truncated: %zu bytes, the setup code alone is %zu",
			    in->kernel_len, setup_size);
	pm_size = in->kernel_len - setup_size;
	init_size = version >= 0x20a ? get32(k + BP_INIT_SIZE) : 0;
	xloadflags = version >= 0x20c ? get16(k + BP_XLOADFLAGS) : 0;
	cmdline_size = get32(k + BP_CMDLINE_SIZE);
	initrd_max = get32(k + BP_INITRD_ADDR_MAX);

	kernel_end = LAYOUT_KERNEL_START + MAX((uint64_t)pm_size, (uint64_t)init_size);
	dst = guest_mem_ptr(mem, LAYOUT_KERNEL_START, kernel_end - LAYOUT_KERNEL_START);
	if (!dst)
		return vmm_fail(err, errlen, -ENOMEM,
			    "the kernel needs %llu bytes from 1 MiB: give the VM more --memory",
			    (unsigned long long)(kernel_end - LAYOUT_KERNEL_START));
	memcpy(dst, k + setup_size, pm_size);

	ret = copy_cmdline(mem, in->cmdline, MIN((uint64_t)cmdline_size + 1, LAYOUT_CMDLINE_MAX),
			   err, errlen);
	if (ret)
		return ret;
	ret = boot_place_initrd(mem, in, kernel_end, initrd_max, &initrd_gpa, err, errlen);
	if (ret)
		return ret;

	bp = guest_mem_ptr(mem, LAYOUT_BOOT_PARAMS, BP_SIZE);
	if (!bp)
		return vmm_fail(err, errlen, -ENOMEM, "no room for the zero page");
	memset(bp, 0, BP_SIZE);
	hdr_end = MIN((size_t)0x202 + k[BP_JUMP + 1], in->kernel_len);
	hdr_end = MIN(hdr_end, (size_t)BP_E820_TABLE);
	memcpy(bp + BP_HDR, k + BP_HDR, hdr_end - BP_HDR);
	put32(bp + BP_CODE32_START, (uint32_t)LAYOUT_KERNEL_START);
	fill_zero_page(bp, in, initrd_gpa);
	if (version < 0x20e)
		put64(bp + BP_ACPI_RSDP_ADDR, 0); /* field not defined before 2.14 */

	if (xloadflags & XLF_KERNEL_64) {
		out->mode = BOOT_ENTRY_LINUX64;
		out->rip = LAYOUT_KERNEL_START + 0x200;
	} else {
		out->mode = BOOT_ENTRY_LINUX32;
		out->rip = LAYOUT_KERNEL_START;
	}
	out->rsi = LAYOUT_BOOT_PARAMS;
	out->format = "bzImage";
	out->kernel_start = LAYOUT_KERNEL_START;
	out->kernel_end = kernel_end;
	out->initrd_gpa = initrd_gpa;
	return 0;
}

/* Copies [off, off+filesz) of the image to paddr and zeroes up to memsz. */
static int load_segment(struct guest_mem *mem, const uint8_t *img, size_t len, uint64_t off,
			uint64_t filesz, uint64_t paddr, uint64_t memsz, char *err, size_t errlen)
{
	uint8_t *dst;

	if (filesz > memsz || off > len || filesz > len - off)
		return vmm_fail(err, errlen, -ENOEXEC,
			    "ELF segment at file offset 0x%llx (%llu bytes) lies outside the file",
			    (unsigned long long)off, (unsigned long long)filesz);
	dst = guest_mem_ptr(mem, paddr, memsz);
	if (!dst || paddr < LAYOUT_KERNEL_START)
		return vmm_fail(err, errlen, -ENOEXEC,
			    "ELF segment [0x%llx, +0x%llx) lies outside guest RAM from 1 MiB "
			    "(the boot data and ACPI tables live below)",
			    (unsigned long long)paddr, (unsigned long long)memsz);
	memcpy(dst, img + off, filesz);
	memset(dst + filesz, 0, memsz - filesz);
	return 0;
}

int boot_elf_header(const uint8_t *img, size_t len, struct boot_elf_header *h)
{
	size_t phentsize;
	unsigned entsize;

	if (len < EI_NIDENT || (img[EI_CLASS] != ELFCLASS64 && img[EI_CLASS] != ELFCLASS32))
		return -ENOEXEC;
	h->is64 = img[EI_CLASS] == ELFCLASS64;
	if (h->is64) {
		Elf64_Ehdr eh;
		if (len < sizeof(eh))
			return -ENOEXEC;
		memcpy(&eh, img, sizeof(eh));
		h->machine = eh.e_machine;
		h->entry = eh.e_entry;
		h->phoff = eh.e_phoff;
		h->phnum = eh.e_phnum;
		entsize = eh.e_phentsize;
		phentsize = sizeof(Elf64_Phdr);
	} else {
		Elf32_Ehdr eh;
		if (len < sizeof(eh))
			return -ENOEXEC;
		memcpy(&eh, img, sizeof(eh));
		h->machine = eh.e_machine;
		h->entry = eh.e_entry;
		h->phoff = eh.e_phoff;
		h->phnum = eh.e_phnum;
		entsize = eh.e_phentsize;
		phentsize = sizeof(Elf32_Phdr);
	}
	if (entsize != phentsize || h->phnum == 0 || h->phoff > len ||
	    (uint64_t)h->phnum * phentsize > len - h->phoff)
		return -ENOEXEC;
	return 0;
}

void boot_elf_phdr(const uint8_t *img, const struct boot_elf_header *h, unsigned i,
		   struct boot_elf_phdr *ph)
{
	if (h->is64) {
		Elf64_Phdr p;
		memcpy(&p, img + h->phoff + (uint64_t)i * sizeof(p), sizeof(p));
		*ph = (struct boot_elf_phdr){ .type = p.p_type, .offset = p.p_offset,
					      .filesz = p.p_filesz, .paddr = p.p_paddr,
					      .memsz = p.p_memsz };
	} else {
		Elf32_Phdr p;
		memcpy(&p, img + h->phoff + (uint64_t)i * sizeof(p), sizeof(p));
		*ph = (struct boot_elf_phdr){ .type = p.p_type, .offset = p.p_offset,
					      .filesz = p.p_filesz, .paddr = p.p_paddr,
					      .memsz = p.p_memsz };
	}
}

int boot_elf_load(struct guest_mem *mem, const uint8_t *img, size_t len,
		  struct boot_elf_image *out, char *err, size_t errlen)
{
	struct boot_elf_header h;
	unsigned nload = 0;
	int ret;

	if (len < EI_NIDENT || memcmp(img, ELFMAG, SELFMAG))
		return vmm_fail(err, errlen, -ENOEXEC, "not an ELF file");
	if (img[EI_DATA] != ELFDATA2LSB)
		return vmm_fail(err, errlen, -ENOEXEC, "ELF file is not little-endian");
	if (img[EI_CLASS] != ELFCLASS64 && img[EI_CLASS] != ELFCLASS32)
		return vmm_fail(err, errlen, -ENOEXEC, "unknown ELF class %u", img[EI_CLASS]);
	if (len < (img[EI_CLASS] == ELFCLASS64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr)))
		return vmm_fail(err, errlen, -ENOEXEC, "ELF file truncated: %zu bytes", len);
	if (boot_elf_header(img, len, &h))
		return vmm_fail(err, errlen, -ENOEXEC, "ELF program headers are missing or truncated");
	if (h.machine != EM_X86_64 && (h.is64 || h.machine != EM_386))
		return vmm_fail(err, errlen, -ENOEXEC, "ELF machine %u is not %s", h.machine,
			    h.is64 ? "x86-64" : "x86");
	out->lo = UINT64_MAX;
	out->hi = 0;
	for (unsigned i = 0; i < h.phnum; i++) {
		struct boot_elf_phdr ph;

		boot_elf_phdr(img, &h, i, &ph);
		if (ph.type != PT_LOAD || ph.memsz == 0)
			continue;
		ret = load_segment(mem, img, len, ph.offset, ph.filesz, ph.paddr, ph.memsz, err,
				   errlen);
		if (ret)
			return ret;
		out->lo = MIN(out->lo, ph.paddr);
		out->hi = MAX(out->hi, ph.paddr + ph.memsz);
		nload++;
	}
	if (!nload)
		return vmm_fail(err, errlen, -ENOEXEC, "ELF file has no loadable segment");
	out->entry = h.entry;
	out->is64 = h.is64;
	return 0;
}

static int load_vmlinux(struct guest_mem *mem, const struct boot_input *in,
			const struct boot_elf_image *elf, struct boot_entry *out, char *err,
			size_t errlen)
{
	uint64_t initrd_gpa;
	uint8_t *bp;
	int ret;

	if (!elf->is64)
		return vmm_fail(err, errlen, -ENOEXEC,
			    "32-bit ELF without a PVH note: only 64-bit vmlinux or PVH ELF kernels "
			    "are supported");
	if (elf->entry < elf->lo || elf->entry >= elf->hi)
		return vmm_fail(err, errlen, -ENOEXEC,
			    "ELF entry 0x%llx is outside its loaded segments [0x%llx, 0x%llx)",
			    (unsigned long long)elf->entry, (unsigned long long)elf->lo,
			    (unsigned long long)elf->hi);
	ret = copy_cmdline(mem, in->cmdline, LAYOUT_CMDLINE_MAX, err, errlen);
	if (ret)
		return ret;
	ret = boot_place_initrd(mem, in, elf->hi, UINT32_MAX, &initrd_gpa, err, errlen);
	if (ret)
		return ret;
	bp = guest_mem_ptr(mem, LAYOUT_BOOT_PARAMS, BP_SIZE);
	if (!bp)
		return vmm_fail(err, errlen, -ENOMEM, "no room for the zero page");
	memset(bp, 0, BP_SIZE);
	/* No setup header in a vmlinux: present a minimal 2.15 one. */
	put16(bp + BP_BOOT_FLAG, BOOT_FLAG_MAGIC);
	put32(bp + BP_HEADER, BOOT_HDR_MAGIC);
	put16(bp + BP_VERSION, 0x20f);
	put32(bp + BP_KERNEL_ALIGNMENT, 0x1000000);
	put32(bp + BP_CMDLINE_SIZE, (uint32_t)(LAYOUT_CMDLINE_MAX - 1));
	put32(bp + BP_INITRD_ADDR_MAX, UINT32_MAX);
	fill_zero_page(bp, in, initrd_gpa);

	out->mode = BOOT_ENTRY_LINUX64;
	out->rip = elf->entry;
	out->rsi = LAYOUT_BOOT_PARAMS;
	out->format = "vmlinux";
	out->kernel_start = elf->lo;
	out->kernel_end = elf->hi;
	out->initrd_gpa = initrd_gpa;
	return 0;
}

static int is_bzimage(const uint8_t *k, size_t len)
{
	return len >= 0x206 && get16(k + BP_BOOT_FLAG) == BOOT_FLAG_MAGIC &&
	       get32(k + BP_HEADER) == BOOT_HDR_MAGIC;
}

int boot_load_kernel(struct guest_mem *mem, const struct boot_input *in, struct boot_entry *out,
		     char *err, size_t errlen)
{
	struct boot_elf_image elf;
	uint64_t pvh_entry;
	int ret;

	memset(out, 0, sizeof(*out));
	if (in->kernel_len == 0)
		return vmm_fail(err, errlen, -ENOEXEC, "the kernel file is empty");
	if (is_bzimage(in->kernel, in->kernel_len)) {
		if (in->protocol == BOOT_PROTO_PVH)
			return vmm_fail(err, errlen, -ENOEXEC,
				    "a bzImage has no PVH entry; use the Linux boot protocol");
		ret = load_bzimage(mem, in, out, err, errlen);
	} else if (in->kernel_len >= SELFMAG && !memcmp(in->kernel, ELFMAG, SELFMAG)) {
		ret = boot_elf_load(mem, in->kernel, in->kernel_len, &elf, err, errlen);
		if (ret)
			return ret;
		ret = pvh_find_entry(in->kernel, in->kernel_len, &pvh_entry);
		if (ret == -ENOENT && in->protocol == BOOT_PROTO_PVH)
			return vmm_fail(err, errlen, -ENOEXEC,
				    "the ELF file has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
		if (ret == 0 && in->protocol == BOOT_PROTO_LINUX)
			ret = -ENOENT;
		if (ret == 0) {
			elf.entry = pvh_entry;
			ret = pvh_setup(mem, in, &elf, out, err, errlen);
		} else if (ret == -ENOENT) {
			ret = load_vmlinux(mem, in, &elf, out, err, errlen);
		} else {
			return vmm_fail(err, errlen, ret, "the ELF file's notes are malformed");
		}
	} else {
		return vmm_fail(err, errlen, -ENOEXEC,
			    "not a kernel: neither a bzImage (no HdrS setup header) nor an ELF file");
	}
	if (ret)
		return ret;
	if (setup_gdt(mem, out->mode) || setup_page_tables(mem))
		return vmm_fail(err, errlen, -ENOMEM, "no room for the boot GDT and page tables");
	return 0;
}
