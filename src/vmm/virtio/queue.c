/* The split virtqueue, device side. See queue.h for the trust model. */
#include "vmm/virtio/queue.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ring layouts (virtio 1.x 2.7.6 and 2.7.8), in bytes. */
#define AVAIL_IDX_OFF 2
#define AVAIL_RING_OFF 4
#define USED_IDX_OFF 2
#define USED_RING_OFF 4
#define USED_ELEM_SIZE 8
#define DESC_SIZE 16

static size_t min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

static uint64_t desc_table_bytes(uint16_t size)
{
	return (uint64_t)DESC_SIZE * size;
}

static uint64_t avail_bytes(uint16_t size)
{
	return AVAIL_RING_OFF + 2ULL * size + 2; /* + used_event */
}

static uint64_t used_bytes(uint16_t size)
{
	return USED_RING_OFF + (uint64_t)USED_ELEM_SIZE * size + 2; /* + avail_event */
}

/* The rings are shared with a driver running on other CPUs: every shared
 * field is read and written exactly once with an atomic access. */
static uint16_t load16(const uint8_t *p)
{
	return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_RELAXED);
}

static uint16_t load16_acquire(const uint8_t *p)
{
	return __atomic_load_n((const uint16_t *)(const void *)p, __ATOMIC_ACQUIRE);
}

static void store16(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELAXED);
}

static void store16_release(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)(void *)p, v, __ATOMIC_RELEASE);
}

static void store32(uint8_t *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)(void *)p, v, __ATOMIC_RELAXED);
}

__attribute__((format(printf, 2, 3))) static int fail(struct virtq *q, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q->error, sizeof(q->error), fmt, ap);
	va_end(ap);
	return -EIO;
}

struct virtq_elem *virtq_elem_alloc(unsigned cap)
{
	struct virtq_elem *e;

	if (cap == 0 || cap > 65535)
		return NULL;
	e = calloc(1, sizeof(*e) + cap * sizeof(struct iovec));
	if (e)
		e->cap = (uint16_t)cap;
	return e;
}

void virtq_init(struct virtq *q, const struct guest_mem *mem, uint16_t max_size)
{
	memset(q, 0, sizeof(*q));
	q->mem = mem;
	q->max_size = max_size;
	q->size = max_size;
}

void virtq_reset(struct virtq *q)
{
	virtq_init(q, q->mem, q->max_size);
}

static uint8_t *map_ring(struct virtq *q, const char *what, uint64_t gpa, uint64_t len,
			 uint64_t align)
{
	uint8_t *p;

	if (gpa % align) {
		fail(q, "%s ring address 0x%llx is not %llu-byte aligned", what,
		     (unsigned long long)gpa, (unsigned long long)align);
		return NULL;
	}
	p = guest_mem_ptr(q->mem, gpa, len);
	if (!p)
		fail(q, "%s ring [0x%llx, +0x%llx) is outside guest RAM", what,
		     (unsigned long long)gpa, (unsigned long long)len);
	return p;
}

int virtq_enable(struct virtq *q, bool event_idx, bool indirect)
{
	uint16_t n = q->size;

	q->enabled = false;
	if (n == 0 || n > q->max_size || (n & (n - 1))) {
		fail(q, "queue size %u is not a power of two in 1..%u", n, q->max_size);
		return -EINVAL;
	}
	q->desc = map_ring(q, "descriptor", q->desc_gpa, desc_table_bytes(n), 16);
	if (!q->desc)
		return -EINVAL;
	q->avail = map_ring(q, "available", q->avail_gpa, avail_bytes(n), 2);
	if (!q->avail)
		return -EINVAL;
	q->used = map_ring(q, "used", q->used_gpa, used_bytes(n), 4);
	if (!q->used)
		return -EINVAL;
	q->event_idx = event_idx;
	q->indirect = indirect;
	q->last_avail = 0;
	q->used_idx = 0;
	q->signalled_used = 0;
	q->signalled_valid = false;
	q->no_notify = false;
	q->error[0] = '\0';
	q->enabled = true;
	return 0;
}

static uint16_t avail_idx(const struct virtq *q)
{
	return load16_acquire(q->avail + AVAIL_IDX_OFF);
}

bool virtq_has_avail(const struct virtq *q)
{
	return q->enabled && avail_idx(q) != q->last_avail;
}

/* With EVENT_IDX, avail_event tells the driver which avail index should
 * make it kick us: the next one we have not seen. */
static void set_avail_event(struct virtq *q, uint16_t v)
{
	store16(q->used + USED_RING_OFF + (uint64_t)USED_ELEM_SIZE * q->size, v);
}

/* Appends one segment; checks it lies in RAM and that the writable ones
 * come last (2.7.4.2: the driver MUST place writable descriptors after
 * readable ones). */
static int add_segment(struct virtq *q, struct virtq_elem *e, const struct virtq_desc *d)
{
	bool writable = d->flags & VIRTQ_DESC_F_WRITE;
	void *p;

	if (d->len == 0)
		return 0;
	p = guest_mem_ptr(q->mem, d->addr, d->len);
	if (!p)
		return fail(q, "descriptor [0x%llx, +0x%x) is outside guest RAM",
			    (unsigned long long)d->addr, d->len);
	if (!writable && e->nin)
		return fail(q, "readable descriptor after a writable one in chain %u", e->head);
	if ((unsigned)e->nout + e->nin >= e->cap)
		return fail(q, "chain %u has more than %u segments", e->head, e->cap);
	e->iov[e->nout + e->nin].iov_base = p;
	e->iov[e->nout + e->nin].iov_len = d->len;
	if (writable) {
		e->nin++;
		e->in_len += d->len;
	} else {
		e->nout++;
		e->out_len += d->len;
	}
	return 0;
}

/* Walks an indirect table (2.7.5.3): a flat chain of its own that may not
 * point to another indirect table. */
static int walk_indirect(struct virtq *q, struct virtq_elem *e, const struct virtq_desc *top)
{
	const uint8_t *table;
	uint32_t n, i, count = 0;
	struct virtq_desc d;
	int ret;

	if (!q->indirect)
		return fail(q, "indirect descriptor in chain %u but INDIRECT_DESC not negotiated",
			    e->head);
	if (top->flags & VIRTQ_DESC_F_NEXT)
		return fail(q, "descriptor in chain %u has both INDIRECT and NEXT", e->head);
	if (top->len == 0 || top->len % DESC_SIZE)
		return fail(q, "indirect table length %u in chain %u is not a multiple of 16",
			    top->len, e->head);
	n = top->len / DESC_SIZE;
	if (n > q->size)
		return fail(q, "indirect table of %u entries exceeds the queue size %u", n,
			    q->size);
	table = guest_mem_ptr(q->mem, top->addr, top->len);
	if (!table)
		return fail(q, "indirect table [0x%llx, +0x%x) is outside guest RAM",
			    (unsigned long long)top->addr, top->len);
	i = 0;
	for (;;) {
		if (++count > n)
			return fail(q, "indirect table of chain %u loops", e->head);
		memcpy(&d, table + (uint64_t)i * DESC_SIZE, sizeof(d));
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return fail(q, "indirect table inside an indirect table in chain %u",
				    e->head);
		ret = add_segment(q, e, &d);
		if (ret)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		i = d.next;
		if (i >= n)
			return fail(q, "indirect next index %u out of range (table of %u)", i, n);
	}
}

static int walk_chain(struct virtq *q, struct virtq_elem *e)
{
	uint32_t i = e->head, count = 0;
	struct virtq_desc d;
	int ret;

	for (;;) {
		if (++count > q->size)
			return fail(q, "chain %u is longer than the queue size %u (a loop?)",
				    e->head, q->size);
		memcpy(&d, q->desc + (uint64_t)i * DESC_SIZE, sizeof(d));
		if (d.flags & VIRTQ_DESC_F_INDIRECT) {
			/* Only the head may name a table (what every driver
			 * does; the table is the whole chain then). */
			if (count > 1)
				return fail(q, "indirect descriptor inside chain %u, not at its head",
					    e->head);
			return walk_indirect(q, e, &d);
		}
		ret = add_segment(q, e, &d);
		if (ret)
			return ret;
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			return 0;
		i = d.next;
		if (i >= q->size)
			return fail(q, "next index %u out of range (queue size %u)", i, q->size);
	}
}

int virtq_pop(struct virtq *q, struct virtq_elem *elem)
{
	uint16_t avail, pending, head;
	int ret;

	if (!q->enabled)
		return 0;
	avail = avail_idx(q);
	if (avail == q->last_avail) {
		if (!q->event_idx || q->no_notify)
			return 0;
		set_avail_event(q, q->last_avail);
		/* The driver may have added a buffer before it saw the new
		 * avail_event: look again after a full barrier. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		avail = avail_idx(q);
		if (avail == q->last_avail)
			return 0;
	}
	pending = (uint16_t)(avail - q->last_avail);
	if (pending > q->size)
		return fail(q, "available index jumped from %u to %u (queue size %u)",
			    q->last_avail, avail, q->size);
	head = load16(q->avail + AVAIL_RING_OFF + 2ULL * (q->last_avail % q->size));
	if (head >= q->size)
		return fail(q, "available ring entry %u names descriptor %u (queue size %u)",
			    q->last_avail, head, q->size);
	elem->head = head;
	elem->nout = elem->nin = 0;
	elem->out_len = elem->in_len = 0;
	ret = walk_chain(q, elem);
	if (ret)
		return ret;
	q->last_avail++;
	if (q->event_idx && !q->no_notify)
		set_avail_event(q, q->last_avail);
	return 1;
}

void virtq_unpop(struct virtq *q)
{
	q->last_avail--;
	if (q->event_idx && !q->no_notify)
		set_avail_event(q, q->last_avail);
}

void virtq_set_notify(struct virtq *q, bool on)
{
	q->no_notify = !on;
	if (!q->enabled)
		return;
	if (q->event_idx) {
		if (on)
			set_avail_event(q, q->last_avail);
	} else {
		store16(q->used, on ? 0 : VIRTQ_USED_F_NO_NOTIFY);
	}
	if (on)
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void virtq_push(struct virtq *q, uint16_t head, uint32_t written)
{
	uint8_t *slot = q->used + USED_RING_OFF + (uint64_t)USED_ELEM_SIZE * (q->used_idx % q->size);

	if (!q->enabled)
		return;
	store32(slot, head);
	store32(slot + 4, written);
	q->used_idx++;
	store16_release(q->used + USED_IDX_OFF, q->used_idx);
}

bool virtq_should_notify(struct virtq *q)
{
	uint16_t old, now, event;
	bool valid;

	if (!q->enabled)
		return false;
	/* Our used index store must be visible before we read the driver's
	 * wishes, or we could miss a notification it now expects. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!q->event_idx)
		return !(load16(q->avail) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	old = q->signalled_used;
	now = q->used_idx;
	valid = q->signalled_valid;
	q->signalled_used = now;
	q->signalled_valid = true;
	if (!valid)
		return true;
	event = load16(q->avail + AVAIL_RING_OFF + 2ULL * q->size);
	/* vring_need_event(): did used_idx step over event since old? */
	return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}

size_t iov_to_buf(const struct iovec *iov, unsigned n, size_t off, void *buf, size_t len)
{
	size_t done = 0;

	for (unsigned i = 0; i < n && done < len; i++) {
		size_t seg = iov[i].iov_len, chunk;

		if (off >= seg) {
			off -= seg;
			continue;
		}
		chunk = min_size(seg - off, len - done);
		memcpy((uint8_t *)buf + done, (const uint8_t *)iov[i].iov_base + off, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

size_t iov_from_buf(const struct iovec *iov, unsigned n, size_t off, const void *buf,
		    size_t len)
{
	size_t done = 0;

	for (unsigned i = 0; i < n && done < len; i++) {
		size_t seg = iov[i].iov_len, chunk;

		if (off >= seg) {
			off -= seg;
			continue;
		}
		chunk = min_size(seg - off, len - done);
		memcpy((uint8_t *)iov[i].iov_base + off, (const uint8_t *)buf + done, chunk);
		done += chunk;
		off = 0;
	}
	return done;
}

int iov_slice(const struct iovec *iov, unsigned n, size_t off, size_t len,
	      struct iovec *dst, unsigned cap)
{
	unsigned out = 0;

	for (unsigned i = 0; i < n && len > 0; i++) {
		size_t seg = iov[i].iov_len, chunk;

		if (off >= seg) {
			off -= seg;
			continue;
		}
		if (out == cap)
			return -1;
		chunk = min_size(seg - off, len);
		dst[out].iov_base = (uint8_t *)iov[i].iov_base + off;
		dst[out].iov_len = chunk;
		out++;
		len -= chunk;
		off = 0;
	}
	return len ? -1 : (int)out;
}
