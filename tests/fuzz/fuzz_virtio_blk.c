/* libFuzzer target for virtio-blk (src/vmm/virtio/blk.c) over the virtio
 * PCI transport and the split virtqueue: fuzz-built descriptor tables,
 * indirect tables and avail rings in a small guest RAM (fuzz_virtio.h),
 * with loops, addresses outside RAM, huge lengths and every request type.
 *
 * The backend is a 64 KiB RAM disk defined here in place of
 * blk_backend_open() (blk_open.c, blk_uring.c and blk_disk.c are not
 * linked): it completes from reap(), poll() and drain() like the io_uring
 * one, and checks what blk.c hands it. Every request must lie inside the
 * disk, carry exactly len bytes of guest buffers inside guest RAM, and
 * have its status byte in guest RAM; a request must never be completed
 * twice or left behind. Set-up byte: bit 0 read-only disk, bit 1 the
 * backend can discard, bit 2 two vCPUs (two queues), bit 3 a slow disk
 * (requests finish only when the input says), bits 4-5 how completions
 * fail (none, -EIO, -EOPNOTSUPP, -ENOSPC). At most queue-size requests
 * may be in flight on a queue. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fuzz_virtio.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/virtio.h"

#define DISK_SIZE 0x10000u
#define MAX_Q 16

struct mem_be {
	struct blk_backend be;
	struct virtio_dev *vdev; /* once made */
	const struct guest_mem *mem;
	unsigned key;
	bool written; /* the disk is not all zeroes */
	uint8_t *data;
	unsigned nqueues;
	int efd[MAX_Q];
	struct blk_req *pending[MAX_Q];
	unsigned npending, npending_q[MAX_Q];
	int fail;     /* what completions report */
	bool slow;    /* a slow disk: nothing finishes until the input says */
	bool release; /* the input said: reap() completes what is pending */
};

static struct mem_be *bes[FV_MAX_KEYS]; /* each key's disk */
static struct mem_be *cur_be;		/* this input's */

static bool in_ram(const struct guest_mem *mem, const void *p, size_t len)
{
	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		const uint8_t *b = p;

		if (b >= r->hva && len <= r->size && (size_t)(b - r->hva) <= r->size - len)
			return true;
	}
	return false;
}

static void check_req(struct mem_be *m, const struct blk_req *req)
{
	uint64_t total = 0;

	assert(in_ram(m->mem, req->status, 1));
	assert(req->offset <= DISK_SIZE && req->len <= DISK_SIZE - req->offset);
	if (req->op == BLK_OP_READ || req->op == BLK_OP_WRITE) {
		assert(req->offset % 512 == 0 && req->len % 512 == 0);
		for (unsigned i = 0; i < req->niov; i++) {
			assert(in_ram(m->mem, req->iov[i].iov_base, req->iov[i].iov_len));
			total += req->iov[i].iov_len;
		}
		assert(total == req->len);
	}
	if (req->op != BLK_OP_READ && req->op != BLK_OP_FLUSH)
		assert(!m->be.read_only);
}

static void finish(struct mem_be *m, struct blk_req *req)
{
	size_t done = 0;

	switch (req->op) {
	case BLK_OP_READ:
		for (unsigned i = 0; i < req->niov; i++) {
			memcpy(req->iov[i].iov_base, m->data + req->offset + done,
			       req->iov[i].iov_len);
			done += req->iov[i].iov_len;
		}
		break;
	case BLK_OP_WRITE:
		m->written = true;
		for (unsigned i = 0; i < req->niov; i++) {
			memcpy(m->data + req->offset + done, req->iov[i].iov_base,
			       req->iov[i].iov_len);
			done += req->iov[i].iov_len;
		}
		break;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES:
	case BLK_OP_WRITE_ZEROES_UNMAP:
		memset(m->data + req->offset, 0, req->len);
		break;
	case BLK_OP_FLUSH:
		break;
	}
	blk_req_complete(&m->be, req, m->fail);
}

/* Completes every pending request of qidx; true if there were any. */
static bool complete_queue(struct mem_be *m, unsigned qidx)
{
	struct blk_req *r = m->pending[qidx];
	uint64_t n;

	if (read(m->efd[qidx], &n, sizeof(n)) < 0)
		n = 0;
	m->pending[qidx] = NULL;
	m->npending_q[qidx] = 0;
	while (r) {
		struct blk_req *next = r->next;

		m->npending--;
		finish(m, r);
		r = next;
	}
	return true;
}

static void be_submit(struct blk_backend *be, unsigned qidx, struct blk_req *req)
{
	struct mem_be *m = (struct mem_be *)be;
	uint64_t one = 1;

	assert(qidx < m->nqueues && req->qidx == qidx);
	for (struct blk_req *r = m->pending[qidx]; r; r = r->next)
		assert(r != req); /* submitted twice */
	check_req(m, req);
	req->next = m->pending[qidx];
	m->pending[qidx] = req;
	m->npending++;
	/* A driver has at most queue-size chains to give: more in flight
	 * means the device took a chain it already holds again (a head the
	 * driver re-published), and each costs the worker memory. */
	if (m->vdev && ++m->npending_q[qidx] > virtio_dev_vq(m->vdev, qidx)->size) {
		fprintf(stderr, "fuzz: %u requests in flight on a queue of %u\n",
			m->npending_q[qidx], virtio_dev_vq(m->vdev, qidx)->size);
		abort();
	}
	if (write(m->efd[qidx], &one, sizeof(one)) < 0)
		abort();
}

static void be_flush_batch(struct blk_backend *be, unsigned qidx)
{
}

static int be_completion_fd(struct blk_backend *be, unsigned qidx)
{
	return ((struct mem_be *)be)->efd[qidx];
}

static void be_reap(struct blk_backend *be, unsigned qidx)
{
	struct mem_be *m = (struct mem_be *)be;
	uint64_t n;

	if (m->slow && !m->release) {
		if (read(m->efd[qidx], &n, sizeof(n)) < 0)
			n = 0;
		return;
	}
	complete_queue(m, qidx);
}

static bool be_poll(struct blk_backend *be, unsigned qidx)
{
	struct mem_be *m = (struct mem_be *)be;

	if (!m->pending[qidx] || m->slow)
		return false;
	return complete_queue(m, qidx);
}

static void be_drain(struct blk_backend *be)
{
	struct mem_be *m = (struct mem_be *)be;

	for (unsigned i = 0; i < m->nqueues; i++)
		complete_queue(m, i);
}

static void be_close(struct blk_backend *be)
{
	struct mem_be *m = (struct mem_be *)be;

	m->vdev = NULL;
	be_drain(be);
	assert(m->npending == 0);
	for (unsigned i = 0; i < m->nqueues; i++)
		close(m->efd[i]);
	if (cur_be == m)
		cur_be = NULL;
	bes[m->key] = NULL;
	free(m->data);
	free(m);
}

static const struct blk_backend_ops mem_ops = {
	.submit = be_submit,
	.flush_batch = be_flush_batch,
	.completion_fd = be_completion_fd,
	.reap = be_reap,
	.poll = be_poll,
	.drain = be_drain,
	.close = be_close,
};

static uint8_t setup_byte;   /* this input's */
static unsigned making;	     /* the key of the device being made */
static const struct guest_mem *making_mem;

/* In place of blk_open.c's: every disk is a RAM disk. */
int blk_backend_open(const struct blk_open_opts *o, struct blk_backend **out, char *err,
		     size_t errlen)
{
	static const int fails[4] = { 0, -EIO, -EOPNOTSUPP, -ENOSPC };
	struct mem_be *m = calloc(1, sizeof(*m));

	if (!m || o->nqueues > MAX_Q)
		abort();
	m->data = calloc(1, DISK_SIZE);
	m->nqueues = o->nqueues;
	for (unsigned i = 0; i < o->nqueues; i++) {
		m->efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (m->efd[i] < 0)
			abort();
	}
	m->be.ops = &mem_ops;
	m->be.kind = "ram (fuzz)";
	m->be.size = DISK_SIZE;
	m->be.logical_sector = 512;
	m->be.physical_sector = 4096;
	m->be.read_only = making & 1;
	m->be.can_discard = making & 2;
	m->fail = fails[(setup_byte >> 4) & 3];
	m->slow = setup_byte & 8;
	m->key = making;
	m->mem = making_mem;
	bes[making] = cur_be = m;
	*out = &m->be;
	return 0;
}

/* Key: bits 0-2 of the set-up byte (what the device is made with: a
 * read-only disk, discard, two queues); bits 3-5 are this input's (a slow
 * disk, how completions fail). */
static unsigned setup(struct fuzz_in *in)
{
	setup_byte = fin_u8(in);
	return setup_byte & 7;
}

static int create(struct vm *vm, unsigned key, struct virtio_dev **out)
{
	struct blk_spec spec = { .path = "fuzz.img", .serial = "fuzz-serial-01234567" };
	char err[256];

	vm->ncpus = (key & 4) ? 2 : 1;
	making = key;
	making_mem = &vm->mem;
	if (virtio_blk_create(vm, &spec, 0, out, err, sizeof(err)))
		return -EIO;
	bes[key]->vdev = *out;
	return 0;
}

static void begin(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	static const int fails[4] = { 0, -EIO, -EOPNOTSUPP, -ENOSPC };
	struct mem_be *m = bes[key];

	vm->ncpus = (key & 4) ? 2 : 1;
	cur_be = m;
	m->fail = fails[(setup_byte >> 4) & 3];
	m->slow = setup_byte & 8;
	m->release = false;
	if (m->written)
		memset(m->data, 0, DISK_SIZE);
	m->written = false;
}

/* The device's reset drains the disk (blk_stop): nothing may be left. */
static void after_reset(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	assert(bes[key]->npending == 0);
	for (unsigned i = 0; i < bes[key]->nqueues; i++)
		assert(!bes[key]->pending[i] && bes[key]->npending_q[i] == 0);
}

/* Device op: how the next completions fail; with bit 2, a slow disk
 * finishes what it holds (through reap, on the event loop). */
static void op(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in)
{
	static const int fails[4] = { 0, -EIO, -EOPNOTSUPP, -ENOSPC };
	uint8_t what = fin_u8(in);
	uint64_t one = 1;

	if (!cur_be)
		return;
	cur_be->fail = fails[what & 3];
	if (what & 4) {
		cur_be->release = true;
		for (unsigned i = 0; i < cur_be->nqueues; i++)
			if (cur_be->pending[i] && write(cur_be->efd[i], &one, sizeof(one)) < 0)
				abort();
		fuzz_loop_run(vm->loop, 8);
		cur_be->release = false;
	}
}

static const struct fuzz_virtio_target target = { .setup = setup, .create = create,
						   .begin = begin, .op = op, .after_reset = after_reset };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_virtio_run(data, size, &target);
}
