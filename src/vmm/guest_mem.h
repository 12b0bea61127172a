/* Guest RAM as the host sees it: a memfd mapped MAP_SHARED, in at most two
 * regions (below 3 GiB and from 4 GiB). Header-only so the virtqueue code
 * and its fuzz target need nothing else. */
#ifndef CLOISON_VMM_GUEST_MEM_H
#define CLOISON_VMM_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_MEM_MAX_REGIONS 2

struct guest_mem_region {
	uint64_t gpa;	   /* guest-physical start */
	uint64_t size;	   /* bytes */
	uint8_t *hva;	   /* host mapping */
	uint64_t memfd_off; /* offset of this region in the memfd */
};

struct guest_mem {
	int memfd; /* a memfd, or an unnamed file on a huge-page tmpfs */
	bool huge; /* transparent huge pages are allowed */
	unsigned nregions;
	uint64_t total; /* bytes of RAM */
	struct guest_mem_region regions[GUEST_MEM_MAX_REGIONS];
	/* A lazy restore (state/vm_state.c): the regions map the saved
	 * memory file copy-on-write instead of the memfd. */
	bool lazy;
	int lazy_fd;	/* that file (its data extents are guest data) */
	int pagemap_fd; /* /proc/self/pagemap: which pages were copied */
};

/* Returns a host pointer to [gpa, gpa+len) when the whole range lies inside
 * one RAM region, else NULL. Overflow-safe: this is the one check every
 * guest-supplied address goes through. len 0 is allowed (any gpa in RAM). */
static inline void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->hva + (gpa - r->gpa);
	}
	return NULL;
}

static inline bool guest_mem_range_ok(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	return guest_mem_ptr(mem, gpa, len) != NULL;
}

#endif
