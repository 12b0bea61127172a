/* The split virtqueue (virtio 1.x, 2.7): the device side of the descriptor
 * table, the available ring and the used ring, over untrusted guest memory.
 *
 * Every guest address goes through guest_mem_ptr(); every descriptor is
 * copied once before it is looked at, so a driver changing the rings under
 * us cannot make us read anything twice. A malformed ring (index out of
 * range, loop, chain longer than allowed, nested indirect table, address
 * outside RAM, an avail index that jumps further than the queue size, ...)
 * makes the call return -EIO and leaves a one-line reason in q->error; the
 * transport then puts the device into DEVICE_NEEDS_RESET. The queue itself
 * never touches anything outside guest RAM.
 *
 * Depends on guest_mem.h only (plus libc), so its fuzz target needs
 * nothing else. Not thread-safe: one thread (or a lock) per queue. */
#ifndef CLOISON_VMM_VIRTIO_QUEUE_H
#define CLOISON_VMM_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/guest_mem.h"

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

#define VIRTQ_MAX_SIZE 32768 /* the largest queue size virtio allows */

/* The wire layout of one descriptor (little-endian, 16 bytes). */
struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq {
	const struct guest_mem *mem;
	uint16_t max_size; /* what the device offers */
	uint16_t size;	   /* what the driver chose (power of two) */
	bool enabled;
	bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;	/* VIRTIO_F_INDIRECT_DESC negotiated */
	uint64_t desc_gpa, avail_gpa, used_gpa;
	/* Host views of the rings, resolved and checked by virtq_enable(). */
	uint8_t *desc;
	uint8_t *avail;
	uint8_t *used;
	uint16_t last_avail;	 /* next avail entry to consume */
	uint16_t used_idx;	 /* our copy of used->idx */
	uint16_t signalled_used; /* used_idx at the last interrupt */
	bool signalled_valid;
	bool no_notify; /* the device asked not to be kicked */
	char error[160]; /* why the last call failed with -EIO */
};

/* One descriptor chain: nout device-readable segments in iov[0..nout),
 * then nin device-writable ones in iov[nout..nout+nin). Segments point
 * straight into guest memory. Zero-length descriptors are skipped. */
struct virtq_elem {
	uint16_t head;
	uint16_t nout, nin;
	uint16_t cap; /* entries in iov[] */
	uint64_t out_len, in_len;
	struct iovec iov[];
};

/* Allocates an element for chains of up to cap segments (1..65535).
 * NULL on allocation failure. Free with free(). */
struct virtq_elem *virtq_elem_alloc(unsigned cap);

/* Sets up a disabled queue offering max_size (a power of two). */
void virtq_init(struct virtq *q, const struct guest_mem *mem, uint16_t max_size);
/* Back to the just-initialized state (device reset). */
void virtq_reset(struct virtq *q);

/* Checks size and the three ring addresses set by the driver, and maps
 * them. 0, or -EINVAL with q->error filled (the queue stays disabled). */
int virtq_enable(struct virtq *q, bool event_idx, bool indirect);

/* Takes the next available chain into elem. Returns 1 with elem filled,
 * 0 when the ring is empty (with EVENT_IDX, having asked the driver to
 * notify on its next buffer), -EIO when the ring is malformed (q->error
 * says why; the queue must not be used again until reset). */
int virtq_pop(struct virtq *q, struct virtq_elem *elem);

/* Gives back the chain taken by the last virtq_pop (the device could not
 * use it yet, e.g. no packet to receive after all). */
void virtq_unpop(struct virtq *q);

/* Asks the driver to kick us when it adds buffers (on), or not to bother
 * (off: the device will look at the ring anyway, e.g. when in-flight
 * requests complete). Uses VIRTQ_USED_F_NO_NOTIFY, or with EVENT_IDX stops
 * moving avail_event. After turning kicks back on, check virtq_has_avail():
 * a buffer may have arrived while they were off. */
void virtq_set_notify(struct virtq *q, bool on);

/* True if the driver has made buffers available we have not taken. */
bool virtq_has_avail(const struct virtq *q);

/* Returns a used chain: head and the number of bytes the device wrote
 * into it. Published to the driver at once. */
void virtq_push(struct virtq *q, uint16_t head, uint32_t written);

/* After one or more pushes: whether the driver wants an interrupt now
 * (EVENT_IDX used_event, or the NO_INTERRUPT flag). Records that it was
 * asked, so call it once per batch and then signal if true. */
bool virtq_should_notify(struct virtq *q);

/* Copies up to len bytes starting at byte off of the segments iov[0..n)
 * into buf / from buf; returns the number copied. */
size_t iov_to_buf(const struct iovec *iov, unsigned n, size_t off, void *buf, size_t len);
size_t iov_from_buf(const struct iovec *iov, unsigned n, size_t off, const void *buf,
		    size_t len);
/* Describes bytes [off, off+len) of iov[0..n) as up to cap segments in dst;
 * returns how many, or -1 if they do not fit / the range is short. */
int iov_slice(const struct iovec *iov, unsigned n, size_t off, size_t len,
	      struct iovec *dst, unsigned cap);

#endif
