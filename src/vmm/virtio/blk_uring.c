/* The raw-file backend of virtio-blk: io_uring, one ring per queue. A
 * batch of guest requests becomes one io_uring_submit(); completions
 * raise an eventfd registered with the ring, which the event loop watches.
 * Guest buffers are read and written in place (readv/writev on the
 * guest's own iovecs), so data is never copied.
 *
 * Reads and writes of one batch are merged: they wait in the queue's
 * pending list until the batch ends (or another kind of request comes),
 * are sorted by offset, and runs of adjacent requests of the same kind
 * become one host readv/writev over all their buffers. A sequential
 * stream of 1 MiB guest requests at depth 8 thus reaches the file as a
 * few large I/Os, as it does under QEMU. If a merged I/O fails or comes
 * back short, its requests are sent again one by one, so each gets its
 * own exact result.
 *
 * Over a mapper (VHDX and VHD images, blk_disk.c) a request goes where
 * the image's block map says: one host I/O when it lies in one place in a
 * file (merged like a raw request, by file offset), else one per piece,
 * with zeroes filled in directly; what needs metadata work first or after
 * goes to the mapper and comes back through take_back. */
#include "vmm/virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/* The most one merged host I/O carries: the kernel's iovec limit, and
 * 4 MiB. Larger merges serialize writes that the host could run side by
 * side: 1 MiB guest writes at depth 8 ran at 1705-1987 IOPS with a 16 MiB
 * cap and 2159-2190 with 4 MiB (reads: no difference measured). */
#define MERGE_MAX_IOV IOV_MAX
#define MERGE_MAX_BYTES (4ULL << 20)
/* user_data of an SQE: a struct blk_req, or with these low bits a struct
 * merge, a struct blk_piece, or a request whose plan needs no host I/O. */
#define TAG_MERGE 1ULL
#define TAG_PIECE 2ULL
#define TAG_NOP 3ULL
#define TAG_MASK 3ULL

/* One host I/O standing for several guest requests (linked by ->next). */
struct merge {
	struct blk_req *reqs;
	uint64_t len;
	struct merge *next_free;
	unsigned niov;
	struct iovec iov[MERGE_MAX_IOV];
};

struct uring_queue {
	struct io_uring ring;
	int efd;
	unsigned inflight; /* SQEs prepared, not yet reaped */
	unsigned queued;   /* SQEs prepared but not submitted */
	unsigned npending; /* reads and writes waiting for the batch end */
	struct blk_req **pending;
	struct merge *free_merges;
};

struct uring_backend {
	struct blk_backend be;
	int fd; /* raw; -1 over a mapper */
	struct blk_mapper *mapper;
	unsigned nqueues;
	unsigned queue_size;
	struct blk_uring_stats stats;
	struct uring_queue q[];
};

static struct uring_backend *to_ub(struct blk_backend *be)
{
	return (struct uring_backend *)be;
}

static int submit_queued(struct uring_queue *uq)
{
	int ret = 0;

	while (uq->queued) {
		ret = io_uring_submit(&uq->ring);
		if (ret < 0) {
			if (ret == -EINTR || ret == -EAGAIN)
				continue;
			return ret;
		}
		uq->queued -= MIN((unsigned)ret, uq->queued);
		if (ret == 0)
			break;
	}
	return 0;
}

static struct io_uring_sqe *get_sqe(struct uring_queue *uq)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&uq->ring);

	if (!sqe) {
		submit_queued(uq);
		sqe = io_uring_get_sqe(&uq->ring);
	}
	return sqe;
}

static void prep(struct uring_backend *ub, struct io_uring_sqe *sqe, const struct blk_req *req)
{
	switch (req->op) {
	case BLK_OP_READ:
		io_uring_prep_readv(sqe, req->host_fd, req->iov, req->niov, req->host_off);
		break;
	case BLK_OP_WRITE:
		io_uring_prep_writev(sqe, req->host_fd, req->iov, req->niov, req->host_off);
		break;
	case BLK_OP_FLUSH:
		io_uring_prep_fsync(sqe, ub->fd, IORING_FSYNC_DATASYNC);
		break;
	case BLK_OP_DISCARD:
	case BLK_OP_WRITE_ZEROES_UNMAP:
		io_uring_prep_fallocate(sqe, ub->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					req->offset, req->len);
		break;
	case BLK_OP_WRITE_ZEROES:
		io_uring_prep_fallocate(sqe, ub->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
					req->offset, req->len);
		break;
	}
}

/* Sends one request to the kernel as it is. */
static void submit_one(struct uring_backend *ub, struct uring_queue *uq, struct blk_req *req)
{
	struct io_uring_sqe *sqe = get_sqe(uq);

	if (!sqe) {
		blk_req_complete(&ub->be, req, -EBUSY);
		return;
	}
	prep(ub, sqe, req);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)req);
	uq->queued++;
	uq->inflight++;
	ub->stats.host_ops++;
}

static struct merge *merge_get(struct uring_queue *uq)
{
	struct merge *m = uq->free_merges;

	if (m) {
		uq->free_merges = m->next_free;
		return m;
	}
	return malloc(sizeof(*m));
}

static void merge_put(struct uring_queue *uq, struct merge *m)
{
	m->next_free = uq->free_merges;
	uq->free_merges = m;
}

/* Sends pending[0..n) (adjacent, same kind, in offset order) as one I/O;
 * falls back to one I/O each if there is no memory for the merge. */
static void submit_run(struct uring_backend *ub, struct uring_queue *uq, struct blk_req **run,
		       unsigned n)
{
	struct io_uring_sqe *sqe;
	struct merge *m;

	if (n == 1 || !(m = merge_get(uq))) {
		for (unsigned i = 0; i < n; i++)
			submit_one(ub, uq, run[i]);
		return;
	}
	sqe = get_sqe(uq);
	if (!sqe) {
		merge_put(uq, m);
		for (unsigned i = 0; i < n; i++)
			blk_req_complete(&ub->be, run[i], -EBUSY);
		return;
	}
	m->len = 0;
	m->niov = 0;
	m->reqs = NULL;
	for (unsigned i = n; i-- > 0;) {
		run[i]->next = m->reqs;
		m->reqs = run[i];
	}
	for (unsigned i = 0; i < n; i++) {
		memcpy(m->iov + m->niov, run[i]->iov, run[i]->niov * sizeof(struct iovec));
		m->niov += run[i]->niov;
		m->len += run[i]->len;
	}
	if (run[0]->op == BLK_OP_READ)
		io_uring_prep_readv(sqe, run[0]->host_fd, m->iov, m->niov, run[0]->host_off);
	else
		io_uring_prep_writev(sqe, run[0]->host_fd, m->iov, m->niov, run[0]->host_off);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)m | TAG_MERGE);
	uq->queued++;
	uq->inflight++;
	ub->stats.host_ops++;
	ub->stats.merged_ops++;
	ub->stats.merged_reqs += n;
}

static int cmp_pending(const void *a, const void *b)
{
	const struct blk_req *x = *(struct blk_req *const *)a, *y = *(struct blk_req *const *)b;

	if (x->op != y->op)
		return x->op < y->op ? -1 : 1;
	if (x->host_fd != y->host_fd)
		return x->host_fd < y->host_fd ? -1 : 1;
	if (x->host_off != y->host_off)
		return x->host_off < y->host_off ? -1 : 1;
	return 0;
}

/* Sends the queue's pending reads and writes, adjacent ones merged. */
static void submit_pending(struct uring_backend *ub, struct uring_queue *uq)
{
	unsigned n = uq->npending, i = 0;
	struct blk_req **p = uq->pending;

	uq->npending = 0;
	if (n > 1)
		qsort(p, n, sizeof(*p), cmp_pending);
	while (i < n) {
		uint64_t end = p[i]->host_off + p[i]->len, len = p[i]->len;
		unsigned niov = p[i]->niov, j = i + 1;

		while (j < n && p[j]->op == p[i]->op && p[j]->host_fd == p[i]->host_fd &&
		       p[j]->host_off == end &&
		       niov + p[j]->niov <= MERGE_MAX_IOV && len + p[j]->len <= MERGE_MAX_BYTES) {
			end += p[j]->len;
			len += p[j]->len;
			niov += p[j]->niov;
			j++;
		}
		submit_run(ub, uq, p + i, j - i);
		i = j;
	}
}

static void add_pending(struct uring_backend *ub, struct uring_queue *uq, struct blk_req *req)
{
	if (uq->npending == ub->queue_size)
		submit_pending(ub, uq);
	uq->pending[uq->npending++] = req;
}

/* An SQE that does nothing, so a request finished without host I/O is
 * still reported from reap. */
static void submit_nop(struct uring_backend *ub, struct uring_queue *uq, struct blk_req *req)
{
	struct io_uring_sqe *sqe = get_sqe(uq);

	if (!sqe) {
		blk_req_complete(&ub->be, req, -EBUSY);
		return;
	}
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)req | TAG_NOP);
	uq->queued++;
	uq->inflight++;
}

static void free_pieces(struct blk_req *req)
{
	while (req->pieces) {
		struct blk_piece *p = req->pieces;

		req->pieces = p->next;
		free(p);
	}
}

/* The data of a mapped request is done: the mapper may want it back to
 * mark its sectors present before the guest hears of it. */
static void data_done(struct uring_backend *ub, struct blk_req *req, int err)
{
	if (ub->mapper && ub->mapper->ops->data_done(ub->mapper, req, err))
		return;
	blk_req_complete(&ub->be, req, err);
}

static void submit_pieces(struct uring_backend *ub, struct uring_queue *uq, struct blk_req *req)
{
	req->result = 0;
	if (!req->parts_left) {
		submit_nop(ub, uq, req);
		return;
	}
	for (struct blk_piece *p = req->pieces; p; p = p->next) {
		struct io_uring_sqe *sqe = get_sqe(uq);

		if (!sqe) {
			/* the pieces already sent finish; these count as failed */
			req->result = -EBUSY;
			for (; p; p = p->next)
				req->parts_left--;
			if (!req->parts_left) {
				free_pieces(req);
				blk_req_complete(&ub->be, req, -EBUSY);
			}
			return;
		}
		if (req->op == BLK_OP_READ)
			io_uring_prep_readv(sqe, p->fd, p->iov, p->niov, p->file_off);
		else
			io_uring_prep_writev(sqe, p->fd, p->iov, p->niov, p->file_off);
		io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)p | TAG_PIECE);
		uq->queued++;
		uq->inflight++;
		ub->stats.host_ops++;
	}
}

static void piece_done(struct uring_backend *ub, struct blk_piece *p, int res)
{
	struct blk_req *req = p->req;

	if ((res < 0 || (uint64_t)res != p->len) && !req->result)
		req->result = res < 0 ? res : -EIO;
	if (--req->parts_left)
		return;
	free_pieces(req);
	data_done(ub, req, req->result);
}

/* Starts a request as its plan says (mapped images). */
static void start_planned(struct uring_backend *ub, struct uring_queue *uq, struct blk_req *req,
			  enum blk_plan plan)
{
	switch (plan) {
	case BLK_PLAN_ONE:
		add_pending(ub, uq, req);
		break;
	case BLK_PLAN_PIECES:
		submit_pieces(ub, uq, req);
		break;
	case BLK_PLAN_DONE:
		submit_nop(ub, uq, req);
		break;
	case BLK_PLAN_DEFER:
		break;
	}
}

static void uring_submit(struct blk_backend *be, unsigned qidx, struct blk_req *req)
{
	struct uring_backend *ub = to_ub(be);
	struct uring_queue *uq = &ub->q[qidx];

	if (req->op != BLK_OP_READ && req->op != BLK_OP_WRITE) {
		/* Not merged, and not reordered before the reads and writes
		 * that came first. */
		submit_pending(ub, uq);
		if (ub->mapper)
			ub->mapper->ops->submit_other(ub->mapper, req);
		else
			submit_one(ub, uq, req);
		return;
	}
	req->pieces = NULL;
	req->commit = false;
	if (!ub->mapper) {
		req->host_fd = ub->fd;
		req->host_off = req->offset;
		add_pending(ub, uq, req);
		return;
	}
	start_planned(ub, uq, req, ub->mapper->ops->plan(ub->mapper, req));
}

static void uring_flush_batch(struct blk_backend *be, unsigned qidx)
{
	struct uring_backend *ub = to_ub(be);
	struct uring_queue *uq = &ub->q[qidx];
	int ret;

	submit_pending(ub, uq);
	ret = submit_queued(uq);
	if (ret)
		log_error("virtio-blk: io_uring submit failed: %s", strerror(-ret));
}

static int uring_completion_fd(struct blk_backend *be, unsigned qidx)
{
	return to_ub(be)->q[qidx].efd;
}

static int result_to_err(const struct blk_req *req, int res)
{
	if (res < 0)
		return res;
	if ((req->op == BLK_OP_READ || req->op == BLK_OP_WRITE) && (uint64_t)res != req->len)
		return -EIO; /* a short transfer: the file shrank under us */
	return 0;
}

/* A merged I/O is done: every request in it succeeded, or each is sent
 * again alone to learn its own result. */
static bool merge_done(struct uring_backend *ub, struct uring_queue *uq, struct merge *m, int res)
{
	struct blk_req *r = m->reqs, *next;
	bool ok = res >= 0 && (uint64_t)res == m->len;

	merge_put(uq, m);
	if (!ok)
		ub->stats.merge_retries++;
	for (; r; r = next) {
		next = r->next; /* completing a request reuses its link */
		if (ok)
			data_done(ub, r, 0);
		else
			submit_one(ub, uq, r);
	}
	return ok;
}

/* What the mapper hands back: finished, or planned after metadata work. */
static bool take_back(struct uring_backend *ub, struct uring_queue *uq)
{
	unsigned qidx = (unsigned)(uq - ub->q);
	struct blk_req *req, *next;

	if (!ub->mapper || !ub->mapper->ops->has_back(ub->mapper, qidx))
		return false;
	req = ub->mapper->ops->take_back(ub->mapper, qidx);
	for (; req; req = next) {
		next = req->next;
		if (req->stage == BLK_PLAN_DONE)
			blk_req_complete(&ub->be, req, req->result);
		else
			start_planned(ub, uq, req, (enum blk_plan)req->stage);
	}
	submit_pending(ub, uq);
	return true;
}

static void reap_cqe(struct uring_backend *ub, struct uring_queue *uq, uint64_t data, int res,
		     bool *resent)
{
	void *p = (void *)(uintptr_t)(data & ~TAG_MASK);

	switch (data & TAG_MASK) {
	case TAG_MERGE:
		*resent |= !merge_done(ub, uq, p, res);
		break;
	case TAG_PIECE:
		piece_done(ub, p, res);
		break;
	case TAG_NOP:
		data_done(ub, p, ((struct blk_req *)p)->result);
		break;
	default:
		data_done(ub, p, result_to_err(p, res));
		break;
	}
}

static void reap_queue(struct blk_backend *be, struct uring_queue *uq)
{
	struct uring_backend *ub = to_ub(be);
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	bool resent = false;

	io_uring_for_each_cqe(&uq->ring, head, cqe) {
		n++;
		uq->inflight--;
		reap_cqe(ub, uq, io_uring_cqe_get_data64(cqe), cqe->res, &resent);
	}
	io_uring_cq_advance(&uq->ring, n);
	resent |= take_back(ub, uq);
	if (resent && submit_queued(uq))
		log_error("virtio-blk: io_uring submit failed while retrying a merged request");
}

static void uring_reap(struct blk_backend *be, unsigned qidx)
{
	struct uring_queue *uq = &to_ub(be)->q[qidx];
	uint64_t v;

	if (read(uq->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("virtio-blk: completion eventfd: %s", strerror(errno));
	reap_queue(be, uq);
}

static bool uring_poll(struct blk_backend *be, unsigned qidx)
{
	struct uring_backend *ub = to_ub(be);
	struct uring_queue *uq = &ub->q[qidx];

	if (!io_uring_cq_ready(&uq->ring) &&
	    !(ub->mapper && ub->mapper->ops->has_back(ub->mapper, qidx)))
		return false;
	reap_queue(be, uq);
	return true;
}

static bool busy(struct uring_backend *ub)
{
	for (unsigned i = 0; i < ub->nqueues; i++)
		if (ub->q[i].inflight || ub->q[i].npending)
			return true;
	return ub->mapper && ub->mapper->ops->outstanding(ub->mapper);
}

/* Until nothing is in flight: requests may go back and forth between the
 * ring and the mapper, so every queue is looked at until all are idle. */
static void uring_drain(struct blk_backend *be)
{
	struct uring_backend *ub = to_ub(be);

	for (;;) {
		for (unsigned i = 0; i < ub->nqueues; i++) {
			struct uring_queue *uq = &ub->q[i];

			submit_pending(ub, uq);
			submit_queued(uq);
			reap_queue(be, uq);
			submit_pending(ub, uq);
			submit_queued(uq);
		}
		if (!busy(ub))
			return;
		for (unsigned i = 0; i < ub->nqueues; i++) {
			struct io_uring_cqe *cqe;
			struct __kernel_timespec ts = { .tv_nsec = 2000000 };

			if (ub->q[i].inflight)
				io_uring_wait_cqe_timeout(&ub->q[i].ring, &cqe, &ts);
		}
		if (ub->mapper && ub->mapper->ops->outstanding(ub->mapper))
			usleep(200); /* its threads wake us through the eventfd, not the ring */
	}
}

static void queue_exit(struct uring_queue *uq)
{
	while (uq->free_merges) {
		struct merge *m = uq->free_merges;

		uq->free_merges = m->next_free;
		free(m);
	}
	free(uq->pending);
	io_uring_queue_exit(&uq->ring);
	close(uq->efd);
}

static void uring_close(struct blk_backend *be)
{
	struct uring_backend *ub = to_ub(be);

	uring_drain(be);
	log_debug("virtio-blk: %s: %llu host I/Os, %llu of them merging %llu requests, "
		  "%llu merges retried",
		  be->kind, (unsigned long long)ub->stats.host_ops,
		  (unsigned long long)ub->stats.merged_ops, (unsigned long long)ub->stats.merged_reqs,
		  (unsigned long long)ub->stats.merge_retries);
	if (ub->mapper)
		ub->mapper->ops->close(ub->mapper);
	for (unsigned i = 0; i < ub->nqueues; i++)
		queue_exit(&ub->q[i]);
	if (ub->fd >= 0)
		close(ub->fd);
	free(ub);
}

static int uring_switch_chain(struct blk_backend *be, const char *const *paths, const int *fds,
			      unsigned n, char *err, size_t errlen)
{
	struct uring_backend *ub = to_ub(be);

	if (!ub->mapper || !ub->mapper->ops->switch_disk) {
		snprintf(err, errlen, "the disk is a raw image: it has no chain to switch");
		return -EOPNOTSUPP;
	}
	return ub->mapper->ops->switch_disk(ub->mapper, be->read_only, paths, fds, n, err,
					    errlen);
}

static int uring_share(struct blk_backend *be, char *err, size_t errlen)
{
	struct uring_backend *ub = to_ub(be);

	if (!ub->mapper || !ub->mapper->ops->share_disk) {
		snprintf(err, errlen, "the disk is a raw image: no child can be made of it");
		return -EOPNOTSUPP;
	}
	return ub->mapper->ops->share_disk(ub->mapper, err, errlen);
}

static const struct blk_backend_ops uring_ops = {
	.submit = uring_submit,
	.flush_batch = uring_flush_batch,
	.completion_fd = uring_completion_fd,
	.reap = uring_reap,
	.poll = uring_poll,
	.drain = uring_drain,
	.close = uring_close,
	.switch_chain = uring_switch_chain,
	.share = uring_share,
};

/* cq_factor: completion-queue entries per submission entry; a mapped
 * request may take several host I/Os. */
/* The only operations a queue's ring may carry. io_uring requests are
 * not system calls, so the worker's seccomp lists (docs/sandbox.md) do
 * not see them: a ring that would take any opcode would let code running
 * in the worker open files or sockets behind the filter's back. The ring
 * is created disabled, restricted to these, and only then enabled. */
static const uint8_t allowed_ops[] = {
	IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC, IORING_OP_FALLOCATE, IORING_OP_NOP,
};

static int restrict_ring(struct io_uring *ring)
{
	struct io_uring_restriction r[ARRAY_SIZE(allowed_ops)];
	int ret;

	memset(r, 0, sizeof(r));
	for (size_t i = 0; i < ARRAY_SIZE(allowed_ops); i++) {
		r[i].opcode = IORING_RESTRICTION_SQE_OP;
		r[i].sqe_op = allowed_ops[i];
	}
	/* the system call itself: Debian's liburing 2.3 declares the
	 * wrappers but its library does not export them */
	ret = (int)syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_RESTRICTIONS, r,
			   (unsigned)ARRAY_SIZE(r));
	if (ret < 0)
		return -errno;
	ret = (int)syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS,
			   NULL, 0);
	return ret < 0 ? -errno : 0;
}

static int queue_init(struct uring_queue *uq, unsigned entries, unsigned cq_factor)
{
	struct io_uring_params p = { .flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED,
				     .cq_entries = entries * cq_factor };
	int ret;

	uq->pending = calloc(entries, sizeof(*uq->pending));
	if (!uq->pending)
		return -ENOMEM;
	uq->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (uq->efd < 0) {
		ret = -errno;
		goto err_pending;
	}
	ret = io_uring_queue_init_params(entries, &uq->ring, &p);
	if (ret < 0)
		goto err_efd;
	ret = io_uring_register_eventfd(&uq->ring, uq->efd);
	if (ret < 0)
		goto err_ring;
	ret = restrict_ring(&uq->ring);
	if (ret < 0)
		goto err_ring;
	return 0;
err_ring:
	io_uring_queue_exit(&uq->ring);
err_efd:
	close(uq->efd);
err_pending:
	free(uq->pending);
	return ret;
}

static int uring_create(int fd, struct blk_mapper *m, uint64_t size,
			const struct blk_open_opts *o, struct blk_backend **out)
{
	struct uring_backend *ub;
	unsigned i;
	int ret;

	ub = calloc(1, sizeof(*ub) + o->nqueues * sizeof(struct uring_queue));
	if (!ub)
		return -ENOMEM;
	for (i = 0; i < o->nqueues; i++) {
		ret = queue_init(&ub->q[i], o->queue_size, m ? 2 * BLK_MAX_PIECES : 2);
		if (ret)
			goto err_queues;
	}
	ub->fd = fd;
	ub->mapper = m;
	ub->nqueues = o->nqueues;
	ub->queue_size = o->queue_size;
	ub->be.ops = &uring_ops;
	ub->be.kind = o->direct ? "raw (io_uring, O_DIRECT)" : "raw (io_uring)";
	ub->be.size = size & ~511ULL;
	ub->be.logical_sector = 512;
	ub->be.physical_sector = 4096;
	ub->be.read_only = o->read_only;
	ub->be.can_discard = true;
	*out = &ub->be;
	return 0;
err_queues:
	while (i-- > 0)
		queue_exit(&ub->q[i]);
	free(ub);
	return ret;
}

int blk_uring_open(int fd, uint64_t size, const struct blk_open_opts *o,
		   struct blk_backend **out)
{
	return uring_create(fd, NULL, size, o, out);
}

int blk_uring_open_mapped(uint64_t size, const struct blk_open_opts *o, struct blk_mapper *m,
			  struct blk_backend **out)
{
	return uring_create(-1, m, size, o, out);
}

void blk_uring_get_stats(struct blk_backend *be, struct blk_uring_stats *out)
{
	*out = to_ub(be)->stats;
}
