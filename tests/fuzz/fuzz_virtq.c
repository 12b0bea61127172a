/* libFuzzer target for the split virtqueue (src/vmm/virtio/queue.c): the
 * input becomes a small guest RAM (two regions, like below 3 GiB and above
 * 4 GiB) holding random descriptor tables, available rings and indexes;
 * the device side pops, pushes and decides on interrupts until the ring
 * runs dry or is found malformed. It must never crash, and every segment
 * it hands out must lie inside guest RAM. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/queue.h"

#define LOW_SIZE 0x10000
#define HIGH_GPA 0x100000000ULL
#define HIGH_SIZE 0x4000

static int in_ram(const struct guest_mem *mem, const void *p, size_t len)
{
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		const uint8_t *b = p;

		if (b >= r->hva && len <= r->size && b - r->hva <= (ptrdiff_t)(r->size - len))
			return 1;
	}
	return 0;
}

static uint64_t take(const uint8_t **data, size_t *size, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes && *size; i++, (*data)++, (*size)--)
		v |= (uint64_t)**data << (8 * i);
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *low, *high;
	struct guest_mem mem = { 0 };
	struct virtq_elem *e;
	struct virtq q;
	uint8_t flags;
	size_t n;

	if (!low) {
		low = aligned_alloc(4096, LOW_SIZE);
		high = aligned_alloc(4096, HIGH_SIZE);
	}
	memset(low, 0, LOW_SIZE);
	memset(high, 0, HIGH_SIZE);
	mem.nregions = 2;
	mem.regions[0] = (struct guest_mem_region){ .gpa = 0, .size = LOW_SIZE, .hva = low };
	mem.regions[1] = (struct guest_mem_region){ .gpa = HIGH_GPA, .size = HIGH_SIZE, .hva = high };

	/* Header: flags, queue size, the three ring addresses (mostly small
	 * so they land in RAM), element capacity. */
	flags = (uint8_t)take(&data, &size, 1);
	virtq_init(&q, &mem, 256);
	q.size = (uint16_t)(1u << (take(&data, &size, 1) % 10)); /* 1..512: 512 is refused */
	q.desc_gpa = take(&data, &size, 2) & ~0xfULL;
	q.avail_gpa = take(&data, &size, 2) & ~0x1ULL;
	q.used_gpa = take(&data, &size, 2) & ~0x3ULL;
	if (flags & 0x80)
		q.desc_gpa += HIGH_GPA;
	if (flags & 0x40)
		q.used_gpa = take(&data, &size, 8); /* anything, even garbage */
	e = virtq_elem_alloc(1 + (unsigned)take(&data, &size, 1));

	/* The rest is guest RAM: low region first, then high. */
	n = size < LOW_SIZE ? size : LOW_SIZE;
	memcpy(low, data, n);
	data += n;
	size -= n;
	memcpy(high, data, size < HIGH_SIZE ? size : HIGH_SIZE);

	if (e && virtq_enable(&q, flags & 1, flags & 2) == 0) {
		for (unsigned round = 0; round < 1024; round++) {
			int ret = virtq_pop(&q, e);

			if (ret <= 0) {
				assert(ret == 0 || q.error[0]);
				break;
			}
			assert(e->head < q.size);
			for (unsigned i = 0; i < (unsigned)e->nout + e->nin; i++) {
				assert(in_ram(&mem, e->iov[i].iov_base, e->iov[i].iov_len));
				/* The device writes what it may write. */
				if (i >= e->nout)
					memset(e->iov[i].iov_base, 0xa5, e->iov[i].iov_len);
			}
			if ((flags & 4) && round == 0)
				virtq_unpop(&q);
			else
				virtq_push(&q, e->head, (uint32_t)e->in_len);
			virtq_should_notify(&q);
		}
	}
	free(e);
	return 0;
}
