/* `hostile=DEV`: a misbehaving driver. Posts malformed chains to the first
 * device of the kind (blk, net, rng, console, vsock, balloon) — a descriptor loop, a
 * buffer outside RAM, an overlong chain, a garbage avail index, broken
 * indirect tables — re-initialising the device between steps, and after
 * each checks that ANOTHER device (virtio-rng, else a virtio-blk disk that
 * is not the target) still serves requests. The VMM must survive all of it. */
#include "virtio.h"

#define WAIT_NS 200000000ULL
#define FAR_AWAY 0xfff00000000ULL /* ~16 TiB: outside any test guest's RAM */

#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_VSOCK 19

/* What a step is aimed at: virtio-blk goes through blk.c's driver (its
 * requests have a header and a status byte); the others are opened here
 * and hit on one queue with plain buffers, device-writable where the
 * device writes into that queue. */
struct target {
	const char *name;
	unsigned type;
	unsigned nqueues;
	uint16_t queue;	     /* the queue the steps post to */
	bool device_writes;  /* its buffers are written by the device (rng) */
};

static const struct target targets[] = {
	{ "blk", VIRTIO_ID_BLK, 1, 0, false },
	{ "net", VIRTIO_ID_NET, 2, 1, false },	   /* transmitq */
	{ "rng", VIRTIO_ID_RNG, 1, 0, true },	   /* requestq */
	{ "console", VIRTIO_ID_CONSOLE, 2, 1, false }, /* port 0 transmitq */
	{ "vsock", VIRTIO_ID_VSOCK, 3, 1, false }, /* tx */
	{ "balloon", 5, 2, 0, false },		   /* inflateq */
	{ NULL, 0, 0, 0, false },
};

struct hostile {
	struct guest *g;
	const struct target *t;
	struct virtio_dev *dev; /* the target when it is not blk */
	uint16_t wflag;		/* VRING_DESC_F_WRITE for a device-writes queue */
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

static bool is_blk(const struct hostile *h)
{
	return h->t->type == VIRTIO_ID_BLK;
}

/* The chain's first buffer: a blk request header, or a plain buffer. */
static void first_desc(struct hostile *h, struct virtq *q, uint16_t flags, uint16_t next)
{
	if (is_blk(h))
		set_desc(q, 0, (uint64_t)(uintptr_t)h->hdr, 16, flags, next);
	else
		set_desc(q, 0, (uint64_t)(uintptr_t)h->buf, 512, (uint16_t)(flags | h->wflag), next);
}

/* The chain's last buffer: a blk status byte, or a plain buffer. */
static void last_desc(struct hostile *h, struct virtq *q, uint16_t i)
{
	if (is_blk(h))
		set_desc(q, i, (uint64_t)(uintptr_t)h->status, 1, VRING_DESC_F_WRITE, 0);
	else
		set_desc(q, i, (uint64_t)(uintptr_t)h->buf, 64, h->wflag, 0);
}

static void step_loop(struct hostile *h, struct virtq *q)
{
	/* Readable only (for blk), so the loop itself is the first thing wrong. */
	first_desc(h, q, VRING_DESC_F_NEXT, 1);
	set_desc(q, 1, (uint64_t)(uintptr_t)h->buf, 512, (uint16_t)(VRING_DESC_F_NEXT | h->wflag), 0);
	publish(q, 0);
}

static void step_badaddr(struct hostile *h, struct virtq *q)
{
	first_desc(h, q, VRING_DESC_F_NEXT, 1);
	set_desc(q, 1, FAR_AWAY, 4096,
		 (uint16_t)(VRING_DESC_F_NEXT | (is_blk(h) ? VRING_DESC_F_WRITE : h->wflag)), 2);
	last_desc(h, q, 2);
	publish(q, 0);
}

static void step_overlong(struct hostile *h, struct virtq *q)
{
	uint16_t last = (uint16_t)(q->size - 1);

	first_desc(h, q, VRING_DESC_F_NEXT, 1);
	for (uint16_t i = 1; i < last; i++)
		set_desc(q, i, (uint64_t)(uintptr_t)h->buf, 0xfffff000u,
			 (uint16_t)(VRING_DESC_F_NEXT | (is_blk(h) ? VRING_DESC_F_WRITE : h->wflag)),
			 (uint16_t)(i + 1));
	last_desc(h, q, last);
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

/* The first entry of an indirect table: a blk header or a plain buffer. */
static struct vring_desc ind_first(struct hostile *h, uint16_t flags, uint16_t next)
{
	if (is_blk(h))
		return (struct vring_desc){ (uint64_t)(uintptr_t)h->hdr, 16, flags, next };
	return (struct vring_desc){ (uint64_t)(uintptr_t)h->buf, 512, (uint16_t)(flags | h->wflag),
				    next };
}

static void step_ind_loop(struct hostile *h, struct virtq *q)
{
	volatile struct vring_desc *t = q->ind;

	t[0] = ind_first(h, VRING_DESC_F_NEXT, 1);
	t[1] = (struct vring_desc){ (uint64_t)(uintptr_t)h->buf, 512,
				    (uint16_t)(VRING_DESC_F_NEXT | h->wflag), 0 };
	indirect_head(h, q, 32);
}

static void step_ind_nested(struct hostile *h, struct virtq *q)
{
	volatile struct vring_desc *t = q->ind;

	t[0] = ind_first(h, VRING_DESC_F_NEXT, 1);
	t[1] = (struct vring_desc){ (uint64_t)(uintptr_t)q->ind, 32, VRING_DESC_F_INDIRECT, 0 };
	indirect_head(h, q, 32);
}

static void step_ind_badlen(struct hostile *h, struct virtq *q)
{
	volatile struct vring_desc *t = q->ind;

	t[0] = ind_first(h, VRING_DESC_F_NEXT, 1);
	t[1] = is_blk(h) ? (struct vring_desc){ (uint64_t)(uintptr_t)h->status, 1,
						VRING_DESC_F_WRITE, 0 }
			 : (struct vring_desc){ (uint64_t)(uintptr_t)h->buf, 64, h->wflag, 0 };
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

/* Opens the target afresh (reset, features, queues, DRIVER_OK) and returns
 * the queue the steps post to; NULL if there is no such device. */
static struct virtq *open_target(struct hostile *h, struct blk_dev **blk)
{
	if (is_blk(h)) {
		if (blk_open(h->g, 0, blk))
			return NULL;
		return blk_queue(*blk);
	}
	/* `indirect` (g->opt_virtio_features) asks for INDIRECT_DESC */
	if (virtio_open(h->g, h->t->type, 0, 0, h->t->nqueues, 0, h->dev))
		return NULL;
	virtio_ready(h->dev);
	return &h->dev->vq[h->t->queue];
}

static struct virtio_dev *target_virtio(struct hostile *h, struct blk_dev *blk)
{
	return is_blk(h) ? blk_virtio(blk) : h->dev;
}

static void run_step(struct hostile *h, const struct step *s)
{
	struct blk_dev *target = NULL;
	struct virtq *q;
	uint64_t until;
	uint8_t st;
	bool used;

	/* Each step starts from a freshly reset device (the last one may have
	 * been left needing a reset). */
	q = open_target(h, &target);
	if (!q) {
		out("RESULT hostile_%s=no-device\n", s->name);
		return;
	}
	if (s->needs_indirect && !q->indirect) {
		virtio_reset(target_virtio(h, target));
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
	st = virtio_status(target_virtio(h, target));
	out("RESULT hostile_%s_used=%d\n", s->name, used ? 1 : 0);
	if (used && is_blk(h))
		out("RESULT hostile_%s_req_status=%u\n", s->name, *h->status);
	out("RESULT hostile_%s_device_status=0x%x\n", s->name, st);
	out("RESULT hostile_%s_needs_reset=%d\n", s->name, (st & VIRTIO_STATUS_NEEDS_RESET) ? 1 : 0);
	out("RESULT hostile_%s_other_ok=%d\n", s->name, other_ok(h) ? 1 : 0);
	virtio_reset(target_virtio(h, target));
}

int hostile_run(struct guest *g, const char *target, size_t len)
{
	struct hostile h = { .g = g };
	uint32_t got;

	for (const struct target *t = targets; t->name; t++)
		if (word_is(target, len, t->name))
			h.t = t;
	if (!h.t)
		return -1;
	h.wflag = h.t->device_writes ? VRING_DESC_F_WRITE : 0;
	h.buf = mm_alloc(g, PAGE_SIZE, PAGE_SIZE);
	h.hdr = mm_alloc(g, 64, 64);
	h.status = mm_alloc(g, 64, 64);
	h.dev = is_blk(&h) ? NULL : mm_alloc(g, sizeof(*h.dev), 64);
	if (!h.buf || !h.hdr || !h.status || (!is_blk(&h) && !h.dev))
		return -1;
	out("RESULT hostile_target=%s\n", h.t->name);
	/* The watched device: rng unless that is the target, else the first
	 * disk that is not (disk 1 when disk 0 is). */
	h.have_rng = h.t->type != VIRTIO_ID_RNG && rng_read(g, 0, h.buf, 16, &got) == 0;
	if (!h.have_rng && blk_open(g, is_blk(&h) ? 1 : 0, &h.other_disk))
		h.other_disk = NULL;
	out("RESULT hostile_other=%s\n",
	    h.have_rng ? "rng" : h.other_disk ? (is_blk(&h) ? "blk1" : "blk0") : "none");
	out("RESULT hostile_other_baseline_ok=%d\n", other_ok(&h) ? 1 : 0);
	for (const struct step *s = steps; s->name; s++)
		run_step(&h, s);
	out("RESULT hostile_done=1\n");
	return 0;
}
