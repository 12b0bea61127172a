/* The unit tests' virtio driver (virtio_driver.h). */
#include "virtio_driver.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vmm/virtio/queue.h"

#define RING_BASE 0x10000ULL
#define RING_STRIDE 0x4000ULL

static uint32_t cap_offset(struct vdrv *d, uint8_t type)
{
	unsigned c = vd_find_virtio_cap(d->vm, d->dev, type);
	uint32_t off;

	if (!c)
		return UINT32_MAX;
	memcpy(&off, d->vm->devs[d->dev]->config + c + 8, 4);
	if (type == 2)
		memcpy(&d->notify_mult, d->vm->devs[d->dev]->config + c + 16, 4);
	return off;
}

void vdrv_attach(struct vdrv *d, struct vm *vm, unsigned dev)
{
	memset(d, 0, sizeof(*d));
	d->vm = vm;
	d->dev = dev;
	d->common = cap_offset(d, 1);
	d->notify = cap_offset(d, 2);
	d->isr = cap_offset(d, 3);
	d->devcfg = cap_offset(d, 4);
}

void *vdrv_ptr(struct vdrv *d, uint64_t gpa)
{
	return d->vm->ram + gpa;
}

static uint64_t cc_read(struct vdrv *d, unsigned off, unsigned len)
{
	return vd_read(d->vm, d->dev, d->common + off, len);
}

static void cc_write(struct vdrv *d, unsigned off, uint64_t v, unsigned len)
{
	vd_write(d->vm, d->dev, d->common + off, v, len);
}

uint8_t vdrv_status(struct vdrv *d)
{
	return (uint8_t)cc_read(d, 20, 1);
}

void vdrv_set_status(struct vdrv *d, uint8_t s)
{
	cc_write(d, 20, s, 1);
}

uint64_t vdrv_cfg_read(struct vdrv *d, uint32_t off, unsigned len)
{
	return vd_read(d->vm, d->dev, d->devcfg + off, len);
}

uint64_t vdrv_device_features(struct vdrv *d)
{
	uint64_t f;

	cc_write(d, 0, 0, 4);
	f = cc_read(d, 4, 4);
	cc_write(d, 0, 1, 4);
	return f | cc_read(d, 4, 4) << 32;
}

static void setup_queue(struct vdrv *d, unsigned q)
{
	struct vdrv_queue *vq = &d->q[q];

	vq->desc = RING_BASE + RING_STRIDE * q;
	vq->avail = vq->desc + 0x1000;
	vq->used = vq->desc + 0x2000;
	memset(vdrv_ptr(d, vq->desc), 0, RING_STRIDE);
	vq->avail_idx = vq->used_seen = vq->next_desc = 0;
	cc_write(d, 22, q, 2);
	cc_write(d, 24, VDRV_QSIZE, 2);
	cc_write(d, 32, vq->desc & 0xffffffff, 4); /* 64-bit fields in halves */
	cc_write(d, 36, vq->desc >> 32, 4);
	cc_write(d, 40, vq->avail, 8);
	cc_write(d, 48, vq->used, 8);
	cc_write(d, 26, q + 1, 2);
	cc_write(d, 28, 1, 2);
}

uint8_t vdrv_init(struct vdrv *d, uint64_t features, unsigned nq)
{
	uint8_t st;

	vdrv_set_status(d, 0);
	vdrv_set_status(d, 1);
	vdrv_set_status(d, 3);
	cc_write(d, 8, 0, 4);
	cc_write(d, 12, features & 0xffffffff, 4);
	cc_write(d, 8, 1, 4);
	cc_write(d, 12, features >> 32, 4);
	d->features = features;
	vdrv_set_status(d, 3 | 8);
	st = vdrv_status(d);
	if (!(st & 8))
		return st;
	cc_write(d, 16, 0, 2); /* config changes on vector 0 */
	for (unsigned q = 0; q < nq; q++)
		setup_queue(d, q);
	vdrv_set_status(d, 3 | 8 | 4);
	return st;
}

static void put_desc(uint8_t *table, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	struct virtq_desc desc = { addr, len, flags, next };

	memcpy(table + 16 * i, &desc, sizeof(desc));
}

void vdrv_raw_desc(struct vdrv *d, unsigned q, uint16_t i, uint64_t addr, uint32_t len,
		   uint16_t flags, uint16_t next)
{
	put_desc(vdrv_ptr(d, d->q[q].desc), i, addr, len, flags, next);
}

void vdrv_raw_avail(struct vdrv *d, unsigned q, uint16_t head)
{
	struct vdrv_queue *vq = &d->q[q];
	uint8_t *avail = vdrv_ptr(d, vq->avail);

	memcpy(avail + 4 + 2 * (vq->avail_idx % VDRV_QSIZE), &head, 2);
	vq->avail_idx++;
	__atomic_store_n((uint16_t *)(void *)(avail + 2), vq->avail_idx, __ATOMIC_RELEASE);
}

uint16_t vdrv_post(struct vdrv *d, unsigned q, const struct vdrv_seg *segs, unsigned n,
		   uint64_t table_gpa)
{
	struct vdrv_queue *vq = &d->q[q];
	uint16_t head = vq->next_desc % VDRV_QSIZE;

	if (table_gpa) {
		for (unsigned i = 0; i < n; i++)
			put_desc(vdrv_ptr(d, table_gpa), (uint16_t)i, segs[i].gpa, segs[i].len,
				 (uint16_t)((segs[i].writable ? VIRTQ_DESC_F_WRITE : 0) |
					    (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
				 (uint16_t)(i + 1));
		vdrv_raw_desc(d, q, head, table_gpa, 16 * n, VIRTQ_DESC_F_INDIRECT, 0);
		vq->next_desc++;
	} else {
		for (unsigned i = 0; i < n; i++) {
			uint16_t idx = vq->next_desc++ % VDRV_QSIZE;

			vdrv_raw_desc(d, q, idx, segs[i].gpa, segs[i].len,
				      (uint16_t)((segs[i].writable ? VIRTQ_DESC_F_WRITE : 0) |
						 (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
				      (uint16_t)(vq->next_desc % VDRV_QSIZE));
		}
	}
	vdrv_raw_avail(d, q, head);
	return head;
}

void vdrv_kick(struct vdrv *d, unsigned q)
{
	vd_write(d->vm, d->dev, d->notify + d->notify_mult * q, q, 2);
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool vdrv_wait_used(struct vdrv *d, unsigned q, unsigned ms, uint32_t *id, uint32_t *len)
{
	struct vdrv_queue *vq = &d->q[q];
	uint8_t *used = vdrv_ptr(d, vq->used);
	uint64_t end = ms_now() + ms;

	do {
		uint16_t idx = __atomic_load_n((uint16_t *)(void *)(used + 2), __ATOMIC_ACQUIRE);

		if (idx != vq->used_seen) {
			uint8_t *e = used + 4 + 8 * (vq->used_seen % VDRV_QSIZE);

			if (id)
				memcpy(id, e, 4);
			if (len)
				memcpy(len, e + 4, 4);
			vq->used_seen++;
			/* EVENT_IDX: interrupt me for the next one (as Linux's
			 * virtqueue_enable_cb does). */
			memcpy((uint8_t *)vdrv_ptr(d, vq->avail) + 4 + 2 * VDRV_QSIZE, &vq->used_seen, 2);
			return true;
		}
		usleep(500);
	} while (ms_now() < end);
	return false;
}

bool vdrv_wait_status(struct vdrv *d, uint8_t bit, unsigned ms)
{
	uint64_t end = ms_now() + ms;

	do {
		if (vdrv_status(d) & bit)
			return true;
		usleep(500);
	} while (ms_now() < end);
	return false;
}
