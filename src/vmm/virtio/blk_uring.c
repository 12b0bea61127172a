/* The raw-file backend of virtio-blk: io_uring, one ring per queue. A
 * batch of guest requests becomes one io_uring_submit(); completions
 * raise an eventfd registered with the ring, which the event loop watches.
 * Guest buffers are read and written in place (readv/writev on the
 * guest's own iovecs), so data is never copied. */
#include "vmm/virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

struct uring_queue {
	struct io_uring ring;
	int efd;
	unsigned inflight;
	unsigned queued; /* SQEs prepared but not submitted */
};

struct uring_backend {
	struct blk_backend be;
	int fd;
	unsigned nqueues;
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

static void uring_submit(struct blk_backend *be, unsigned qidx, struct blk_req *req)
{
	struct uring_backend *ub = to_ub(be);
	struct uring_queue *uq = &ub->q[qidx];
	struct io_uring_sqe *sqe = get_sqe(uq);

	if (!sqe) {
		blk_req_complete(be, req, -EBUSY);
		return;
	}
	switch (req->op) {
	case BLK_OP_READ:
		io_uring_prep_readv(sqe, ub->fd, req->iov, req->niov, req->offset);
		break;
	case BLK_OP_WRITE:
		io_uring_prep_writev(sqe, ub->fd, req->iov, req->niov, req->offset);
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
	io_uring_sqe_set_data(sqe, req);
	uq->queued++;
	uq->inflight++;
}

static void uring_flush_batch(struct blk_backend *be, unsigned qidx)
{
	struct uring_queue *uq = &to_ub(be)->q[qidx];
	int ret = submit_queued(uq);

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

static void reap_queue(struct blk_backend *be, struct uring_queue *uq)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&uq->ring, head, cqe) {
		struct blk_req *req = io_uring_cqe_get_data(cqe);

		n++;
		uq->inflight--;
		blk_req_complete(be, req, result_to_err(req, cqe->res));
	}
	io_uring_cq_advance(&uq->ring, n);
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
	struct uring_queue *uq = &to_ub(be)->q[qidx];

	if (!io_uring_cq_ready(&uq->ring))
		return false;
	reap_queue(be, uq);
	return true;
}

static void uring_drain(struct blk_backend *be)
{
	struct uring_backend *ub = to_ub(be);

	for (unsigned i = 0; i < ub->nqueues; i++) {
		struct uring_queue *uq = &ub->q[i];

		submit_queued(uq);
		while (uq->inflight) {
			struct io_uring_cqe *cqe;
			int ret = io_uring_wait_cqe(&uq->ring, &cqe);

			if (ret < 0 && ret != -EINTR) {
				log_error("virtio-blk: waiting for I/O: %s", strerror(-ret));
				break;
			}
			reap_queue(be, uq);
		}
	}
}

static void uring_close(struct blk_backend *be)
{
	struct uring_backend *ub = to_ub(be);

	uring_drain(be);
	for (unsigned i = 0; i < ub->nqueues; i++) {
		io_uring_queue_exit(&ub->q[i].ring);
		close(ub->q[i].efd);
	}
	close(ub->fd);
	free(ub);
}

static const struct blk_backend_ops uring_ops = {
	.submit = uring_submit,
	.flush_batch = uring_flush_batch,
	.completion_fd = uring_completion_fd,
	.reap = uring_reap,
	.poll = uring_poll,
	.drain = uring_drain,
	.close = uring_close,
};

static int queue_init(struct uring_queue *uq, unsigned entries)
{
	int ret;

	uq->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (uq->efd < 0)
		return -errno;
	ret = io_uring_queue_init(entries, &uq->ring, 0);
	if (ret < 0)
		goto err_efd;
	ret = io_uring_register_eventfd(&uq->ring, uq->efd);
	if (ret < 0)
		goto err_ring;
	return 0;
err_ring:
	io_uring_queue_exit(&uq->ring);
err_efd:
	close(uq->efd);
	return ret;
}

int blk_uring_open(int fd, uint64_t size, const struct blk_open_opts *o,
		   struct blk_backend **out)
{
	struct uring_backend *ub;
	unsigned i;
	int ret;

	ub = calloc(1, sizeof(*ub) + o->nqueues * sizeof(struct uring_queue));
	if (!ub)
		return -ENOMEM;
	for (i = 0; i < o->nqueues; i++) {
		ret = queue_init(&ub->q[i], o->queue_size);
		if (ret)
			goto err_queues;
	}
	ub->fd = fd;
	ub->nqueues = o->nqueues;
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
	while (i-- > 0) {
		io_uring_queue_exit(&ub->q[i].ring);
		close(ub->q[i].efd);
	}
	free(ub);
	return ret;
}
