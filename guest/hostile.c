/* `hostile=blk`: a misbehaving driver. Posts malformed chains to the first
 * virtio-blk device — a descriptor loop, a buffer outside RAM, an overlong
 * chain, a garbage avail index — re-initialising the device between steps,
 * and after each checks that ANOTHER device (virtio-rng, else a second
 * disk) still serves requests. The VMM must survive all of it. */
#include "virtio.h"

#define WAIT_NS 200000000ULL
#define FAR_AWAY 0xfff00000000ULL /* ~16 TiB: outside any test guest's RAM */

struct hostile {
	struct guest *g;
	struct blk_dev *other_disk;
	bool have_rng;
	uint8_t *buf;
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} *hdr;
	volatile uint8_t *status;
};

static bool other_ok(struct hostile *h)
{
	uint32_t got = 0;

	if (h->have_rng)
		return rng_read(h->g, 0, h->buf, 64, &got) == 0 && got == 64;
	if (h->other_disk)
		return blk_rw(h->other_disk, 0, 0, h->buf, 512) == 0;
	return false;
}

static void set_desc(struct virtq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	q->desc[i].addr = addr;
	q->desc[i].len = len;
	q->desc[i].flags = flags;
	q->desc[i].next = next;
}

static void publish(struct virtq *q, uint16_t head)
{
	q->avail->ring[q->avail_idx % q->size] = head;
	q->avail_idx++;
	virtq_kick(q);
}

static void step_loop(struct hostile *h, struct virtq *q)
{
	/* Readable only, so the loop itself is the first thing wrong. */
	set_desc(q, 0, (uint64_t)(uintptr_t)h->hdr, 16, VRING_DESC_F_NEXT, 1);
	set_desc(q, 1, (uint64_t)(uintptr_t)h->buf, 512, VRING_DESC_F_NEXT, 0);
	publish(q, 0);
}

static void step_badaddr(struct hostile *h, struct virtq *q)
{
	set_desc(q, 0, (uint64_t)(uintptr_t)h->hdr, 16, VRING_DESC_F_NEXT, 1);
	set_desc(q, 1, FAR_AWAY, 4096, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
	set_desc(q, 2, (uint64_t)(uintptr_t)h->status, 1, VRING_DESC_F_WRITE, 0);
	publish(q, 0);
}

static void step_overlong(struct hostile *h, struct virtq *q)
{
	uint16_t last = (uint16_t)(q->size - 1);

	set_desc(q, 0, (uint64_t)(uintptr_t)h->hdr, 16, VRING_DESC_F_NEXT, 1);
	for (uint16_t i = 1; i < last; i++)
		set_desc(q, i, (uint64_t)(uintptr_t)h->buf, 0xfffff000u,
			 VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, (uint16_t)(i + 1));
	set_desc(q, last, (uint64_t)(uintptr_t)h->status, 1, VRING_DESC_F_WRITE, 0);
	publish(q, 0);
}

static void step_badidx(struct hostile *h, struct virtq *q)
{
	(void)h;
	q->avail_idx = (uint16_t)(q->avail_idx + 3 * q->size + 7);
	virtq_kick(q);
}

/* With INDIRECT_DESC negotiated (the `indirect` word): broken tables. */
static void indirect_head(struct hostile *h, struct virtq *q, uint32_t table_len)
{
	(void)h;
	set_desc(q, 0, (uint64_t)(uintptr_t)q->ind, table_len, VRING_DESC_F_INDIRECT, 0);
	publish(q, 0);
}

static void step_ind_loop(struct hostile *h, struct virtq *q)
{
	volatile struct vring_desc *t = q->ind;

	t[0] = (struct vring_desc){ (uint64_t)(uintptr_t)h->hdr, 16, VRING_DESC_F_NEXT, 1 };
	t[1] = (struct vring_desc){ (uint64_t)(uintptr_t)h->buf, 512, VRING_DESC_F_NEXT, 0 };
	indirect_head(h, q, 32);
}

static void step_ind_nested(struct hostile *h, struct virtq *q)
{
	volatile struct vring_desc *t = q->ind;

	t[0] = (struct vring_desc){ (uint64_t)(uintptr_t)h->hdr, 16, VRING_DESC_F_NEXT, 1 };
	t[1] = (struct vring_desc){ (uint64_t)(uintptr_t)q->ind, 32, VRING_DESC_F_INDIRECT, 0 };
	indirect_head(h, q, 32);
}

static void step_ind_badlen(struct hostile *h, struct virtq *q)
{
	volatile struct vring_desc *t = q->ind;

	t[0] = (struct vring_desc){ (uint64_t)(uintptr_t)h->hdr, 16, VRING_DESC_F_NEXT, 1 };
	t[1] = (struct vring_desc){ (uint64_t)(uintptr_t)h->status, 1, VRING_DESC_F_WRITE, 0 };
	indirect_head(h, q, 20); /* not a multiple of 16 */
}

struct step {
	const char *name;
	void (*post)(struct hostile *h, struct virtq *q);
	bool needs_indirect;
};

static const struct step steps[] = {
	{ "loop", step_loop, false },
	{ "badaddr", step_badaddr, false },
	{ "overlong", step_overlong, false },
	{ "badidx", step_badidx, false },
	{ "indirect_loop", step_ind_loop, true },
	{ "indirect_nested", step_ind_nested, true },
	{ "indirect_badlen", step_ind_badlen, true },
	{ NULL, NULL, false },
};

static void run_step(struct hostile *h, const struct step *s)
{
	struct blk_dev *target;
	struct virtq *q;
	uint64_t until;
	uint8_t st;
	bool used;

	/* Each step starts from a freshly reset device (the last one may have
	 * been left needing a reset). */
	if (blk_open(h->g, 0, &target)) {
		out("RESULT hostile_%s=no-device\n", s->name);
		return;
	}
	q = blk_queue(target);
	if (s->needs_indirect && !q->indirect) {
		virtio_reset(blk_virtio(target));
		return;
	}
	h->hdr->type = 0;
	h->hdr->reserved = 0;
	h->hdr->sector = 0;
	*h->status = 0xff;
	s->post(h, q);
	until = timer_ns(h->g) + WAIT_NS;
	while (q->used->idx == q->last_used && timer_ns(h->g) < until)
		cpu_relax();
	used = q->used->idx != q->last_used;
	st = virtio_status(blk_virtio(target));
	out("RESULT hostile_%s_used=%d\n", s->name, used ? 1 : 0);
	if (used)
		out("RESULT hostile_%s_req_status=%u\n", s->name, *h->status);
	out("RESULT hostile_%s_device_status=0x%x\n", s->name, st);
	out("RESULT hostile_%s_needs_reset=%d\n", s->name, (st & VIRTIO_STATUS_NEEDS_RESET) ? 1 : 0);
	out("RESULT hostile_%s_other_ok=%d\n", s->name, other_ok(h) ? 1 : 0);
	virtio_reset(blk_virtio(target));
}

int hostile_run(struct guest *g, const char *target)
{
	struct hostile h = { .g = g };
	uint32_t got;

	(void)target;
	h.buf = mm_alloc(g, PAGE_SIZE, PAGE_SIZE);
	h.hdr = mm_alloc(g, 64, 64);
	h.status = mm_alloc(g, 64, 64);
	if (!h.buf || !h.hdr || !h.status)
		return -1;
	h.have_rng = rng_read(g, 0, h.buf, 16, &got) == 0;
	if (!h.have_rng && blk_open(g, 1, &h.other_disk))
		h.other_disk = NULL;
	out("RESULT hostile_other=%s\n", h.have_rng ? "rng" : h.other_disk ? "blk1" : "none");
	out("RESULT hostile_other_baseline_ok=%d\n", other_ok(&h) ? 1 : 0);
	for (const struct step *s = steps; s->name; s++)
		run_step(&h, s);
	out("RESULT hostile_done=1\n");
	return 0;
}
