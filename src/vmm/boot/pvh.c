/* The Xen PVH boot ABI, as Linux and the test guest use it without Xen: a
 * XEN_ELFNOTE_PHYS32_ENTRY note names a 32-bit protected-mode entry; EBX
 * points to struct hvm_start_info, which carries the command line, the
 * memory map, the RSDP and the initrd as module 0. */
#include "vmm/boot/boot.h"

#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "vmm/guest_mem.h"
#include "vmm/layout.h"

/* Walks the notes in [off, off+size) of img; 0 with the entry, -ENOENT if
 * the PVH note is not there, -ENOEXEC for a malformed note. */
static int scan_notes(const uint8_t *img, size_t len, uint64_t off, uint64_t size,
		      uint64_t *entry)
{
	uint64_t end;

	if (off > len || size > len - off)
		return -ENOEXEC;
	end = off + size;
	while (end - off >= 12) {
		uint32_t namesz, descsz, type;
		uint64_t name_off, desc_off, next;

		memcpy(&namesz, img + off, 4);
		memcpy(&descsz, img + off + 4, 4);
		memcpy(&type, img + off + 8, 4);
		name_off = off + 12;
		desc_off = name_off + ALIGN_UP((uint64_t)namesz, 4);
		next = desc_off + ALIGN_UP((uint64_t)descsz, 4);
		if (next > end)
			return -ENOEXEC;
		if (namesz == 4 && !memcmp(img + name_off, "Xen", 4) &&
		    type == XEN_ELFNOTE_PHYS32_ENTRY) {
			uint32_t e32;
			uint64_t e64;
			if (descsz == 4) {
				memcpy(&e32, img + desc_off, 4);
				*entry = e32;
			} else if (descsz == 8) {
				memcpy(&e64, img + desc_off, 8);
				*entry = e64;
			} else {
				return -ENOEXEC;
			}
			return 0;
		}
		off = next;
	}
	return -ENOENT;
}

int pvh_find_entry(const uint8_t *img, size_t len, uint64_t *entry)
{
	struct boot_elf_header h;

	if (boot_elf_header(img, len, &h))
		return -ENOEXEC;
	for (unsigned i = 0; i < h.phnum; i++) {
		struct boot_elf_phdr ph;
		int ret;

		boot_elf_phdr(img, &h, i, &ph);
		if (ph.type != PT_NOTE)
			continue;
		ret = scan_notes(img, len, ph.offset, ph.filesz, entry);
		if (ret != -ENOENT)
			return ret;
	}
	return -ENOENT;
}

int pvh_setup(struct guest_mem *mem, const struct boot_input *in, const struct boot_elf_image *elf,
	      struct boot_entry *out, char *err, size_t errlen)
{
	struct hvm_start_info *si;
	struct hvm_memmap_entry *mm;
	struct hvm_modlist_entry *mod;
	size_t cmdlen = strlen(in->cmdline);
	uint64_t mm_gpa = LAYOUT_PVH_START_INFO + 64;
	uint64_t mod_gpa = mm_gpa + E820_MAX_ENTRIES * sizeof(*mm);
	uint64_t initrd_gpa;
	char *cmd;
	int ret;

	if (elf->entry >= 1ULL << 32 || elf->entry < elf->lo || elf->entry >= elf->hi) {
		snprintf(err, errlen, "PVH entry 0x%llx is not inside the loaded image [0x%llx, 0x%llx)",
			 (unsigned long long)elf->entry, (unsigned long long)elf->lo,
			 (unsigned long long)elf->hi);
		return -ENOEXEC;
	}
	if (cmdlen + 1 > LAYOUT_CMDLINE_MAX) {
		snprintf(err, errlen, "the command line is %zu bytes; at most %llu are allowed",
			 cmdlen, (unsigned long long)(LAYOUT_CMDLINE_MAX - 1));
		return -E2BIG;
	}
	ret = boot_place_initrd(mem, in, elf->hi, UINT32_MAX, &initrd_gpa, err, errlen);
	if (ret)
		return ret;
	cmd = guest_mem_ptr(mem, LAYOUT_CMDLINE, cmdlen + 1);
	si = guest_mem_ptr(mem, LAYOUT_PVH_START_INFO, 0x1000);
	if (!cmd || !si) {
		snprintf(err, errlen, "no room for the PVH start info");
		return -ENOMEM;
	}
	memcpy(cmd, in->cmdline, cmdlen + 1);
	memset(si, 0, 0x1000);
	mm = (struct hvm_memmap_entry *)((uint8_t *)si + (mm_gpa - LAYOUT_PVH_START_INFO));
	mod = (struct hvm_modlist_entry *)((uint8_t *)si + (mod_gpa - LAYOUT_PVH_START_INFO));
	for (unsigned i = 0; i < in->e820->n; i++) {
		mm[i].addr = in->e820->e[i].addr;
		mm[i].size = in->e820->e[i].size;
		mm[i].type = in->e820->e[i].type;
	}
	si->magic = HVM_START_MAGIC;
	si->version = 1;
	si->cmdline_paddr = LAYOUT_CMDLINE;
	si->rsdp_paddr = in->rsdp_gpa;
	si->memmap_paddr = mm_gpa;
	si->memmap_entries = in->e820->n;
	if (initrd_gpa) {
		mod->paddr = initrd_gpa;
		mod->size = in->initrd_len;
		si->nr_modules = 1;
		si->modlist_paddr = mod_gpa;
	}
	out->mode = BOOT_ENTRY_PVH;
	out->rip = elf->entry;
	out->rbx = LAYOUT_PVH_START_INFO;
	out->format = "PVH ELF";
	out->kernel_start = elf->lo;
	out->kernel_end = elf->hi;
	out->initrd_gpa = initrd_gpa;
	return 0;
}
