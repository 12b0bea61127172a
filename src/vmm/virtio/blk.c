/* virtio-blk (virtio 1.x 5.2): requests from the guest's queues to a
 * storage backend. Runs on the VM's event loop with the device lock held;
 * the backend completes requests from its reap() callback. */
#include "vmm/virtio/blk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/vm.h"
#include "vmm/virtio/virtio.h"

/* Feature bits (5.2.3). */
#define BLK_F_SEG_MAX 2
#define BLK_F_RO 5
#define BLK_F_BLK_SIZE 6
#define BLK_F_FLUSH 9
#define BLK_F_TOPOLOGY 10
#define BLK_F_MQ 12
#define BLK_F_DISCARD 13
#define BLK_F_WRITE_ZEROES 14

/* Request types and status values (5.2.6). */
#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_T_DISCARD 11
#define BLK_T_WRITE_ZEROES 13
#define BLK_S_OK 0
#define BLK_S_IOERR 1
#define BLK_S_UNSUPP 2

#define BLK_QUEUE_SIZE 256
#define BLK_SEG_MAX 126
#define BLK_MAX_QUEUES 16
#define BLK_ID_BYTES 20
#define SECTOR 512ULL
/* How long the event loop may keep looking for a completion before it
 * goes back to sleep (adaptive per queue, like QEMU's poll-max-ns: doubled
 * when a poll finds something, halved when it does not), and how many such
 * rounds one wake-up may run before other devices get the loop. */
#define BLK_POLL_MAX_NS 32000
#define BLK_POLL_MIN_NS 1000
#define BLK_POLL_ROUNDS 64

/* struct virtio_blk_config offsets (5.2.4). */
enum {
	CFG_CAPACITY = 0,
	CFG_SEG_MAX = 12,
	CFG_BLK_SIZE = 20,
	CFG_PHYS_EXP = 24,
	CFG_MIN_IO = 26,
	CFG_OPT_IO = 28,
	CFG_NUM_QUEUES = 34,
	CFG_MAX_DISCARD_SECTORS = 36,
	CFG_MAX_DISCARD_SEG = 40,
	CFG_DISCARD_ALIGN = 44,
	CFG_MAX_WZ_SECTORS = 48,
	CFG_MAX_WZ_SEG = 52,
	CFG_WZ_MAY_UNMAP = 56,
	CFG_LEN = 60,
};

struct blk;

struct blk_queue {
	struct blk *blk;
	unsigned index;
	struct blk_req *free;
	unsigned allocated;
	unsigned inflight; /* requests in the backend */
	uint32_t poll_ns;  /* current completion-polling window */
	bool watched;
};

struct blk {
	struct virtio_dev vdev;
	struct blk_backend *be;
	struct blk_spec spec;
	uint8_t config[CFG_LEN];
	uint64_t dirty; /* queues with used buffers not yet signalled */
	struct blk_queue queues[BLK_MAX_QUEUES];
};

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct blk_range {
	uint64_t sector;
	uint32_t num_sectors;
	uint32_t flags;
};
#define BLK_RANGE_F_UNMAP 1

static struct blk *to_blk(struct virtio_dev *vdev)
{
	return vdev->opaque;
}

static struct blk_req *req_get(struct blk_queue *bq)
{
	struct blk_req *r = bq->free;

	if (r) {
		bq->free = r->next;
		return r;
	}
	/* Chains are at most the queue size long (2.7.5.3.1). */
	r = calloc(1, sizeof(*r) + BLK_QUEUE_SIZE * sizeof(struct iovec));
	if (!r)
		return NULL;
	r->elem = virtq_elem_alloc(BLK_QUEUE_SIZE);
	if (!r->elem) {
		free(r);
		return NULL;
	}
	r->iov = (struct iovec *)(r + 1);
	bq->allocated++;
	return r;
}

static void req_put(struct blk_queue *bq, struct blk_req *r)
{
	r->next = bq->free;
	bq->free = r;
}

static void signal_dirty(struct blk *b)
{
	for (unsigned i = 0; b->dirty && i < b->vdev.nqueues; i++) {
		if (b->dirty & (1ULL << i))
			virtio_dev_queue_done(&b->vdev, i);
	}
	b->dirty = 0;
}

/* Backend completion (lock held, from reap or drain). */
static void blk_complete(void *owner, struct blk_req *req, int err)
{
	struct blk *b = owner;
	uint8_t status = BLK_S_OK;

	if (err == -EOPNOTSUPP)
		status = BLK_S_UNSUPP;
	else if (err)
		status = BLK_S_IOERR;
	if (err && err != -EOPNOTSUPP)
		log_debug("%s: request at %llu (+%llu) failed: %s", b->vdev.name,
			  (unsigned long long)req->offset, (unsigned long long)req->len,
			  strerror(-err));
	*req->status = status;
	virtq_push(virtio_dev_vq(&b->vdev, req->qidx), req->elem->head, req->written);
	b->dirty |= 1ULL << req->qidx;
	if (req->in_backend) {
		req->in_backend = false;
		b->queues[req->qidx].inflight--;
	}
	req_put(&b->queues[req->qidx], req);
}

static bool range_ok(const struct blk *b, uint64_t sector, uint64_t bytes)
{
	uint64_t size = b->be->size;

	return sector <= size / SECTOR && bytes <= size - sector * SECTOR;
}

static void serve_get_id(struct blk *b, struct blk_req *req, const struct virtq_elem *e)
{
	char id[BLK_ID_BYTES] = { 0 };
	size_t n = MIN((uint64_t)BLK_ID_BYTES, e->in_len - 1);

	memcpy(id, b->spec.serial, strnlen(b->spec.serial, BLK_ID_BYTES));
	req->written = (uint32_t)iov_from_buf(e->iov + e->nout, e->nin, 0, id, n) + 1;
}

/* Discard and write-zeroes carry one range (we offer max_*_seg = 1). */
static int parse_range(struct blk *b, struct blk_req *req, const struct virtq_elem *e,
		       uint32_t type)
{
	struct blk_range r;

	if (e->out_len - sizeof(struct blk_hdr) != sizeof(r))
		return BLK_S_UNSUPP;
	iov_to_buf(e->iov, e->nout, sizeof(struct blk_hdr), &r, sizeof(r));
	if (!range_ok(b, r.sector, (uint64_t)r.num_sectors * SECTOR))
		return BLK_S_IOERR;
	if (r.flags & ~(uint32_t)BLK_RANGE_F_UNMAP ||
	    (type == BLK_T_DISCARD && r.flags))
		return BLK_S_UNSUPP;
	req->offset = r.sector * SECTOR;
	req->len = (uint64_t)r.num_sectors * SECTOR;
	if (type == BLK_T_DISCARD)
		req->op = BLK_OP_DISCARD;
	else
		req->op = (r.flags & BLK_RANGE_F_UNMAP) ? BLK_OP_WRITE_ZEROES_UNMAP
							 : BLK_OP_WRITE_ZEROES;
	return -1;
}

/* Turns a chain into a backend request. Returns -1 when req should go to
 * the backend, else the status to answer at once. */
static int parse_req(struct blk *b, struct blk_req *req, const struct virtq_elem *e,
		     const struct blk_hdr *h)
{
	bool ro = b->be->read_only || b->spec.read_only;
	uint64_t len;
	int n;

	switch (h->type) {
	case BLK_T_IN:
	case BLK_T_OUT:
		if (h->type == BLK_T_IN) {
			len = e->in_len - 1;
			n = iov_slice(e->iov + e->nout, e->nin, 0, len, req->iov, BLK_QUEUE_SIZE);
			req->written = (uint32_t)MIN(len + 1, (uint64_t)UINT32_MAX);
		} else {
			if (ro)
				return BLK_S_IOERR;
			len = e->out_len - sizeof(*h);
			n = iov_slice(e->iov, e->nout, sizeof(*h), len, req->iov, BLK_QUEUE_SIZE);
		}
		if (n < 0 || len % SECTOR || !range_ok(b, h->sector, len))
			return BLK_S_IOERR;
		req->op = h->type == BLK_T_IN ? BLK_OP_READ : BLK_OP_WRITE;
		req->niov = (unsigned)n;
		req->offset = h->sector * SECTOR;
		req->len = len;
		return -1;
	case BLK_T_FLUSH:
		req->op = BLK_OP_FLUSH;
		return -1;
	case BLK_T_GET_ID:
		serve_get_id(b, req, e);
		return BLK_S_OK;
	case BLK_T_DISCARD:
	case BLK_T_WRITE_ZEROES:
		if (ro)
			return BLK_S_IOERR;
		if (h->type == BLK_T_DISCARD && !b->be->can_discard)
			return BLK_S_UNSUPP;
		return parse_range(b, req, e, h->type);
	default:
		return BLK_S_UNSUPP;
	}
}

/* Takes one chain off queue qidx and starts or answers it. Returns false
 * when the queue is empty or the device failed. */
static bool handle_one(struct blk *b, unsigned qidx)
{
	struct blk_queue *bq = &b->queues[qidx];
	struct virtq *vq = virtio_dev_vq(&b->vdev, qidx);
	struct blk_req *req;
	struct virtq_elem *e;
	struct blk_hdr h;
	int ret, status;

	/* A driver has at most the queue size of chains to give: one more
	 * is a chain it made available again while we still hold it, and
	 * each would cost a request until the backend finishes. Completions
	 * bring us back. */
	if (bq->inflight >= vq->size)
		return false;
	req = req_get(bq);
	if (!req) {
		log_error("%s: out of memory for requests", b->vdev.name);
		return false;
	}
	e = req->elem;
	ret = virtq_pop(vq, e);
	if (ret <= 0) {
		req_put(bq, req);
		if (ret < 0)
			virtio_dev_fail(&b->vdev, "queue %u: %s", qidx, vq->error);
		return false;
	}
	if (e->out_len < sizeof(h) || e->in_len < 1 || e->iov[e->nout + e->nin - 1].iov_len < 1) {
		/* No header or no status byte: nothing to answer with. */
		req_put(bq, req);
		virtio_dev_fail(&b->vdev, "queue %u: request %u has no header or status byte",
				qidx, e->head);
		return false;
	}
	iov_to_buf(e->iov, e->nout, 0, &h, sizeof(h));
	req->qidx = qidx;
	req->written = 1;
	req->niov = 0;
	req->status = (uint8_t *)e->iov[e->nout + e->nin - 1].iov_base +
		      e->iov[e->nout + e->nin - 1].iov_len - 1;
	status = parse_req(b, req, e, &h);
	if (status < 0) {
		req->in_backend = true;
		bq->inflight++;
		b->be->ops->submit(b->be, qidx, req);
		return true;
	}
	if (status != BLK_S_OK)
		req->written = 1;
	blk_complete(b, req, status == BLK_S_OK ? 0 : status == BLK_S_UNSUPP ? -EOPNOTSUPP : -EIO);
	return true;
}

static bool completions_ready(struct blk *b, unsigned qidx)
{
	return b->be->ops->poll(b->be, qidx);
}

/* Delivers the interrupts asked for so far (drops and retakes the device
 * lock): a driver waiting for one should not wait for our polling. */
static void deliver_now(struct blk *b)
{
	signal_dirty(b);
	if (b->vdev.irq_pending || b->vdev.config_irq_pending) {
		virtio_dev_unlock(&b->vdev);
		virtio_dev_lock(&b->vdev);
	}
}

/* Busy-waits up to the queue's window for completions: a wake-up through
 * the event loop costs more than that on a loaded host. The window adapts
 * so a device slower than it does not make us burn a CPU for nothing. */
static bool spin(struct blk *b, unsigned qidx)
{
	struct blk_queue *bq = &b->queues[qidx];
	uint64_t end = now_ns() + bq->poll_ns;

	do {
		if (completions_ready(b, qidx)) {
			bq->poll_ns = MIN(bq->poll_ns * 2, (uint32_t)BLK_POLL_MAX_NS);
			return true;
		}
		__builtin_ia32_pause();
	} while (now_ns() < end);
	bq->poll_ns = MAX(bq->poll_ns / 2, (uint32_t)BLK_POLL_MIN_NS);
	return false;
}

/* Takes every available request of qidx to the backend. While requests
 * are in flight the driver need not kick: their completions bring us back
 * here to look at the ring again (what a kick costs a guest — an exit —
 * is worth saving at high queue depths). With a backend that can be
 * polled, the loop also waits a little for completions before sleeping.
 * (Waiting for the guest's next request as well was tried: on a host with
 * more runnable threads than CPUs it takes the CPU the guest needs.) */
static void service_queue(struct blk *b, unsigned qidx)
{
	struct virtq *vq = virtio_dev_vq(&b->vdev, qidx);
	bool can_poll = b->be->ops->poll != NULL;

	for (unsigned round = 0;; round++) {
		while (virtio_dev_active(&b->vdev) && handle_one(b, qidx))
			;
		b->be->ops->flush_batch(b->be, qidx);
		if (!virtio_dev_active(&b->vdev))
			return;
		if (b->queues[qidx].inflight) {
			virtq_set_notify(vq, false);
			if (!can_poll || round >= BLK_POLL_ROUNDS || !spin(b, qidx))
				return; /* the completion eventfd brings us back */
			deliver_now(b);
			if (!virtio_dev_active(&b->vdev))
				return;
			continue;
		}
		virtq_set_notify(vq, true);
		if (!virtq_has_avail(vq))
			return;
	}
}

static void blk_queue_notify(struct virtio_dev *vdev, unsigned qidx)
{
	struct blk *b = to_blk(vdev);

	service_queue(b, qidx);
	signal_dirty(b);
}

static void completion_cb(void *opaque, uint32_t events)
{
	struct blk_queue *bq = opaque;
	struct blk *b = bq->blk;

	virtio_dev_lock(&b->vdev);
	b->be->ops->reap(b->be, bq->index);
	/* Signal first: the guest can work on what completed while we look
	 * for what it queued meanwhile. */
	signal_dirty(b);
	if (virtio_dev_active(&b->vdev) && virtio_dev_vq(&b->vdev, bq->index)->enabled)
		service_queue(b, bq->index);
	signal_dirty(b);
	virtio_dev_unlock(&b->vdev);
}

static void blk_stop(struct virtio_dev *vdev)
{
	struct blk *b = to_blk(vdev);

	b->be->ops->drain(b->be);
	for (unsigned i = 0; i < vdev->nqueues; i++)
		b->queues[i].inflight = 0;
	signal_dirty(b);
}

/* A chain operation on the backend, run once every request the guest gave
 * is answered, so none is in flight on the image it changes. */
int virtio_blk_chain(struct virtio_dev *vdev, enum blk_chain_op op, const char *const *paths,
		     const int *fds, unsigned n, char *err, size_t errlen)
{
	struct blk *b = to_blk(vdev);
	const struct blk_backend_ops *ops = b->be->ops;
	int ret;

	virtio_dev_lock(vdev);
	ops->drain(b->be);
	signal_dirty(b);
	if (op == BLK_CHAIN_SWITCH && ops->switch_chain) {
		ret = ops->switch_chain(b->be, paths, fds, n, err, errlen);
	} else if (op == BLK_CHAIN_SHARE && ops->share) {
		ret = ops->share(b->be, err, errlen);
	} else {
		snprintf(err, errlen, "this disk's backend cannot %s",
			 op == BLK_CHAIN_SWITCH ? "switch its chain" : "share its image");
		ret = -EOPNOTSUPP;
	}
	virtio_dev_unlock(vdev);
	if (!ret && op == BLK_CHAIN_SWITCH)
		log_info("%s: now on %s", vdev->name, paths[0]);
	return ret;
}

static void blk_config_read(struct virtio_dev *vdev, uint32_t off, void *data, unsigned len)
{
	memcpy(data, to_blk(vdev)->config + off, len);
}

static void blk_destroy(struct virtio_dev *vdev)
{
	struct blk *b = to_blk(vdev);

	for (unsigned i = 0; i < vdev->nqueues; i++) {
		if (b->queues[i].watched)
			evloop_del_fd(vdev->loop, b->be->ops->completion_fd(b->be, i));
	}
	/* Closing drains the backend: every request is back on a free list. */
	b->be->ops->close(b->be);
	for (unsigned i = 0; i < vdev->nqueues; i++) {
		struct blk_queue *bq = &b->queues[i];

		while (bq->free) {
			struct blk_req *r = bq->free;

			bq->free = r->next;
			free(r->elem);
			free(r);
		}
	}
	free(b);
}

static const struct virtio_dev_ops blk_ops = {
	.config_read = blk_config_read,
	.queue_notify = blk_queue_notify,
	.stop = blk_stop,
	.pause = blk_stop,
	.destroy = blk_destroy,
};

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static void build_config(struct blk *b, unsigned nqueues)
{
	uint64_t sectors = b->be->size / SECTOR;
	uint16_t nq = (uint16_t)nqueues, min_io = 1;
	uint32_t phys = b->be->physical_sector ? b->be->physical_sector : 512;
	uint32_t logical = b->be->logical_sector ? b->be->logical_sector : 512;
	uint8_t exp = 0;

	while ((logical << exp) < phys && exp < 16)
		exp++;
	memcpy(b->config + CFG_CAPACITY, &sectors, 8);
	put32(b->config + CFG_SEG_MAX, BLK_SEG_MAX);
	put32(b->config + CFG_BLK_SIZE, logical);
	b->config[CFG_PHYS_EXP] = exp;
	memcpy(b->config + CFG_MIN_IO, &min_io, 2);
	put32(b->config + CFG_OPT_IO, 0);
	memcpy(b->config + CFG_NUM_QUEUES, &nq, 2);
	put32(b->config + CFG_MAX_DISCARD_SECTORS, 0x3fffff);
	put32(b->config + CFG_MAX_DISCARD_SEG, 1);
	put32(b->config + CFG_DISCARD_ALIGN, logical / 512);
	put32(b->config + CFG_MAX_WZ_SECTORS, 0x3fffff);
	put32(b->config + CFG_MAX_WZ_SEG, 1);
	b->config[CFG_WZ_MAY_UNMAP] = 1;
}

static uint64_t blk_features(const struct blk *b, unsigned nqueues)
{
	uint64_t f = (1ULL << BLK_F_SEG_MAX) | (1ULL << BLK_F_BLK_SIZE) |
		     (1ULL << BLK_F_FLUSH) | (1ULL << BLK_F_TOPOLOGY) |
		     (1ULL << BLK_F_WRITE_ZEROES);

	if (nqueues > 1)
		f |= 1ULL << BLK_F_MQ;
	if (b->be->can_discard)
		f |= 1ULL << BLK_F_DISCARD;
	if (b->be->read_only || b->spec.read_only)
		f |= 1ULL << BLK_F_RO;
	return f;
}

static int watch_completions(struct blk *b, unsigned nqueues)
{
	for (unsigned i = 0; i < nqueues; i++) {
		int ret = evloop_add_fd(b->vdev.loop, b->be->ops->completion_fd(b->be, i),
					EPOLLIN, completion_cb, &b->queues[i]);
		if (ret)
			return ret;
		b->queues[i].watched = true;
	}
	return 0;
}

int virtio_blk_create(struct vm *vm, const struct blk_spec *spec, unsigned index,
		      struct virtio_dev **out, char *err, size_t errlen)
{
	unsigned nqueues = MAX(1u, MIN(vm_vcpu_count(vm), (unsigned)BLK_MAX_QUEUES));
	struct blk_open_opts o = {
		.path = spec->path,
		.read_only = spec->read_only,
		.direct = spec->direct,
		.nqueues = nqueues,
		.queue_size = BLK_QUEUE_SIZE,
	};
	struct virtio_dev_params p = {
		.device_id = VIRTIO_ID_BLOCK,
		.class_code = 0x018000, /* mass storage, other */
		.nqueues = nqueues,
		.queue_size = BLK_QUEUE_SIZE,
		.config_len = CFG_LEN,
		.ops = &blk_ops,
	};
	char name[32];
	struct blk *b;
	int ret;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->spec = *spec;
	ret = blk_backend_open(&o, &b->be, err, errlen);
	if (ret)
		goto err_free;
	b->be->complete = blk_complete;
	b->be->owner = b;
	for (unsigned i = 0; i < nqueues; i++) {
		b->queues[i].blk = b;
		b->queues[i].index = i;
		b->queues[i].poll_ns = BLK_POLL_MAX_NS / 4;
	}
	build_config(b, nqueues);
	snprintf(name, sizeof(name), "virtio-blk%u", index);
	p.name = name;
	p.features = blk_features(b, nqueues);
	p.opaque = b;
	ret = virtio_dev_init(&b->vdev, vm, &p);
	if (ret) {
		snprintf(err, errlen, "%s: cannot create the PCI function: %s", spec->path,
			 strerror(-ret));
		goto err_close;
	}
	ret = watch_completions(b, nqueues);
	if (!ret)
		ret = virtio_dev_attach(&b->vdev);
	if (ret) {
		snprintf(err, errlen, "%s: cannot attach the disk: %s", spec->path,
			 strerror(-ret));
		virtio_dev_destroy(&b->vdev); /* frees b through blk_destroy */
		return ret;
	}
	log_info("%s: %s, %s, %llu sectors, %u queue%s%s", name, spec->path, b->be->kind,
		 (unsigned long long)(b->be->size / SECTOR), nqueues, nqueues > 1 ? "s" : "",
		 (b->be->read_only || spec->read_only) ? ", read-only" : "");
	*out = &b->vdev;
	return 0;
err_close:
	b->be->ops->close(b->be);
err_free:
	free(b);
	return ret;
}
