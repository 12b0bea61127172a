/* The virtio-blk backend for VHDX and VHD images: the io_uring backend
 * (blk_uring.c) over the disk library's block map. Reads and writes that
 * need no metadata work are planned on the event loop (disk_map_read,
 * disk_map_write without DISK_MAP_ALLOC) and their data moves through
 * io_uring, merged like a raw file's. What needs the library's metadata
 * lock and syncs runs on a few threads here:
 *  - a write into a block not yet allocated (disk_map_write with
 *    DISK_MAP_ALLOC, then back to the ring for the data);
 *  - marking a differencing disk's sectors present once their data is
 *    written (disk_commit_write), before the guest sees the write done;
 *  - flush, discard and write-zeroes (the library's own calls);
 *  - anything the map cannot say (a read-only VHDX with its log replayed
 *    in memory, a request in too many pieces): disk_pread/disk_pwrite.
 * Threads hand requests back on a per-queue list and wake the event loop
 * through the queue's completion eventfd. In a jailed worker each thread
 * narrows itself to the I/O seccomp list (SECCOMP_THREAD_IO): at start if
 * the jail is already in place (a hot-added disk), else when
 * seccomp_install_base() calls this mapper's waker. */
#include "vmm/virtio/blk.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "disk/disk.h"
#include "vmm/seccomp.h"

#define DISK_THREADS 4

/* What a thread is to do with a request (req->stage while it waits). */
enum job {
	JOB_PLAN = 16, /* READ/WRITE: plan with allocation, or do it here */
	JOB_COMMIT,    /* WRITE: data written, mark its sectors present */
	JOB_OTHER,     /* FLUSH, DISCARD, WRITE_ZEROES* */
};

struct back_list {
	struct blk_req *head, *tail;
};

struct disk_mapper {
	struct blk_mapper m;
	struct blk_backend *be;
	struct disk *d;
	pthread_mutex_t lock;
	pthread_cond_t work_cv;
	struct blk_req *todo_head, *todo_tail;
	unsigned outstanding;
	bool stopping;
	unsigned nthreads;
	pthread_t threads[DISK_THREADS];
	/* seccomp: the waker asks each thread to narrow itself and waits. */
	struct seccomp_waker waker;
	pthread_cond_t narrow_cv;
	bool narrow;		   /* the waker asked */
	unsigned narrowed, failed; /* threads that did, that could not */
	unsigned nqueues;
	struct back_list q[];
};

static struct disk_mapper *to_dm(struct blk_mapper *m)
{
	return (struct disk_mapper *)m;
}

static void append(struct blk_req **head, struct blk_req **tail, struct blk_req *r)
{
	r->next = NULL;
	if (*tail)
		(*tail)->next = r;
	else
		*head = r;
	*tail = r;
}

/* Copies into out the iovecs covering bytes [skip, skip+len) of iov.
 * Returns how many; out has room for niov. */
static unsigned slice_iov(const struct iovec *iov, unsigned niov, uint64_t skip, uint64_t len,
			  struct iovec *out)
{
	unsigned n = 0;

	for (unsigned i = 0; i < niov && len; i++) {
		uint64_t l = iov[i].iov_len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		out[n].iov_base = (uint8_t *)iov[i].iov_base + skip;
		out[n].iov_len = (size_t)MIN(l - skip, len);
		len -= out[n].iov_len;
		skip = 0;
		n++;
	}
	return n;
}

static void zero_iov(const struct iovec *iov, unsigned niov, uint64_t skip, uint64_t len)
{
	for (unsigned i = 0; i < niov && len; i++) {
		uint64_t l = iov[i].iov_len;

		if (skip >= l) {
			skip -= l;
			continue;
		}
		l = MIN(l - skip, len);
		memset((uint8_t *)iov[i].iov_base + skip, 0, (size_t)l);
		len -= l;
		skip = 0;
	}
}

static void free_plan(struct blk_req *req)
{
	while (req->pieces) {
		struct blk_piece *p = req->pieces;

		req->pieces = p->next;
		free(p);
	}
	req->parts_left = 0;
}

/* Plans req from the block map: one host I/O, or pieces (zeroes filled
 * in at once). Returns the plan or -errno: -EWOULDBLOCK when a write
 * needs metadata work first (and alloc is false), -E2BIG when there would
 * be more than BLK_MAX_PIECES pieces. */
static int build_plan(struct disk_mapper *dm, struct blk_req *req, bool alloc)
{
	struct blk_piece **tail = &req->pieces;
	bool write = req->op == BLK_OP_WRITE;
	uint64_t done = 0;

	req->pieces = NULL;
	req->parts_left = 0;
	req->commit = false;
	while (done < req->len) {
		uint64_t off = req->offset + done, left = req->len - done;
		struct disk_extent ext;
		struct blk_piece *p;
		bool commit = false;
		int ret = write ? disk_map_write(dm->d, off, left, alloc ? DISK_MAP_ALLOC : 0, &ext,
						 &commit)
				: disk_map_read(dm->d, off, left, &ext);

		if (ret)
			goto fail;
		assert(ext.len > 0 && ext.len <= left);
		req->commit |= commit;
		if (!done && ext.len == req->len && ext.kind == DISK_EXTENT_DATA) {
			req->host_fd = ext.fd;
			req->host_off = ext.file_off;
			return BLK_PLAN_ONE;
		}
		done += ext.len;
		if (ext.kind == DISK_EXTENT_ZERO) {
			zero_iov(req->iov, req->niov, done - ext.len, ext.len);
			continue;
		}
		ret = -E2BIG;
		if (req->parts_left == BLK_MAX_PIECES)
			goto fail;
		ret = -ENOMEM;
		p = malloc(sizeof(*p) + req->niov * sizeof(struct iovec));
		if (!p)
			goto fail;
		p->next = NULL;
		p->req = req;
		p->fd = ext.fd;
		p->file_off = ext.file_off;
		p->len = ext.len;
		p->niov = slice_iov(req->iov, req->niov, done - ext.len, ext.len, p->iov);
		*tail = p;
		tail = &p->next;
		req->parts_left++;
		continue;
fail:
		free_plan(req);
		req->commit = false;
		return ret;
	}
	return BLK_PLAN_PIECES;
}

/* ---- the threads ---- */

static void take(struct disk_mapper *dm, struct blk_req *req, enum job job)
{
	req->stage = (uint8_t)job;
	pthread_mutex_lock(&dm->lock);
	append(&dm->todo_head, &dm->todo_tail, req);
	dm->outstanding++;
	pthread_cond_signal(&dm->work_cv);
	pthread_mutex_unlock(&dm->lock);
}

/* The library's own read or write of the guest's segments: adjacent
 * sector-multiple buffers go as one call, anything else through a bounce
 * buffer. */
static int rw_whole(struct disk_mapper *dm, struct blk_req *req, uint8_t **bounce,
		    size_t *bounce_len)
{
	bool write = req->op == BLK_OP_WRITE;
	uint32_t sector = disk_sector_size(dm->d);
	uint64_t off = req->offset;
	bool aligned = true;
	int ret;

	for (unsigned i = 0; i < req->niov; i++)
		aligned &= req->iov[i].iov_len % sector == 0;
	if (!aligned) {
		if (*bounce_len < req->len) {
			uint8_t *nb = realloc(*bounce, req->len);
			if (!nb)
				return -ENOMEM;
			*bounce = nb;
			*bounce_len = req->len;
		}
		if (write) {
			iov_to_buf(req->iov, req->niov, 0, *bounce, req->len);
			return disk_pwrite(dm->d, *bounce, req->len, off);
		}
		ret = disk_pread(dm->d, *bounce, req->len, off);
		if (!ret)
			iov_from_buf(req->iov, req->niov, 0, *bounce, req->len);
		return ret;
	}
	for (unsigned i = 0; i < req->niov;) {
		uint8_t *base = req->iov[i].iov_base;
		size_t len = req->iov[i].iov_len;

		for (i++; i < req->niov && (uint8_t *)req->iov[i].iov_base == base + len; i++)
			len += req->iov[i].iov_len;
		ret = write ? disk_pwrite(dm->d, base, len, off) : disk_pread(dm->d, base, len, off);
		if (ret)
			return ret;
		off += len;
	}
	return 0;
}

static int do_other(struct disk_mapper *dm, struct blk_req *req)
{
	switch (req->op) {
	case BLK_OP_FLUSH:
		return disk_flush(dm->d);
	case BLK_OP_DISCARD:
		return disk_discard(dm->d, req->offset, req->len);
	case BLK_OP_WRITE_ZEROES:
		return disk_write_zeroes(dm->d, req->offset, req->len, false);
	case BLK_OP_WRITE_ZEROES_UNMAP:
		return disk_write_zeroes(dm->d, req->offset, req->len, true);
	default:
		return -EINVAL;
	}
}

/* Does one job; leaves req->stage the plan to hand back. */
static void do_job(struct disk_mapper *dm, struct blk_req *req, uint8_t **bounce,
		   size_t *bounce_len)
{
	int plan;

	switch (req->stage) {
	case JOB_PLAN:
		plan = build_plan(dm, req, true);
		if (plan >= 0) {
			req->stage = (uint8_t)plan;
			return;
		}
		req->result = rw_whole(dm, req, bounce, bounce_len);
		break;
	case JOB_COMMIT:
		req->result = disk_commit_write(dm->d, req->offset, req->len);
		break;
	default:
		req->result = do_other(dm, req);
		break;
	}
	req->stage = BLK_PLAN_DONE;
}

/* Lock held. Narrows the calling thread to the I/O list (once). */
static void narrow_self(struct disk_mapper *dm, bool *done)
{
	int ret;

	pthread_mutex_unlock(&dm->lock);
	ret = seccomp_thread_enter(SECCOMP_THREAD_IO);
	pthread_mutex_lock(&dm->lock);
	*done = true;
	if (ret)
		dm->failed++;
	else
		dm->narrowed++;
	pthread_cond_broadcast(&dm->narrow_cv);
}

static void *worker(void *opaque)
{
	struct disk_mapper *dm = opaque;
	uint8_t *bounce = NULL;
	size_t bounce_len = 0;
	uint64_t one = 1;
	bool narrowed = false;

	pthread_setname_np(pthread_self(), "disk-io");
	pthread_mutex_lock(&dm->lock);
	if (seccomp_armed())
		narrow_self(dm, &narrowed); /* made in a jailed worker: no waker */
	for (;;) {
		struct blk_req *req;
		int efd;

		while (!dm->todo_head && !dm->stopping && (narrowed || !dm->narrow))
			pthread_cond_wait(&dm->work_cv, &dm->lock);
		if (!narrowed && dm->narrow) {
			narrow_self(dm, &narrowed);
			continue;
		}
		if (!dm->todo_head)
			break;
		req = dm->todo_head;
		dm->todo_head = req->next;
		if (!dm->todo_head)
			dm->todo_tail = NULL;
		pthread_mutex_unlock(&dm->lock);

		do_job(dm, req, &bounce, &bounce_len);

		pthread_mutex_lock(&dm->lock);
		append(&dm->q[req->qidx].head, &dm->q[req->qidx].tail, req);
		efd = dm->be->ops->completion_fd(dm->be, req->qidx);
		if (write(efd, &one, sizeof(one)) < 0)
			log_warn("virtio-blk: completion eventfd: %s", strerror(errno));
	}
	pthread_mutex_unlock(&dm->lock);
	free(bounce);
	return NULL;
}

/* ---- the mapper ops (event loop) ---- */

static enum blk_plan map_plan(struct blk_mapper *m, struct blk_req *req)
{
	struct disk_mapper *dm = to_dm(m);
	int plan = build_plan(dm, req, false);

	if (plan >= 0)
		return (enum blk_plan)plan;
	take(dm, req, JOB_PLAN);
	return BLK_PLAN_DEFER;
}

static bool map_data_done(struct blk_mapper *m, struct blk_req *req, int err)
{
	if (err || !req->commit)
		return false;
	req->commit = false;
	take(to_dm(m), req, JOB_COMMIT);
	return true;
}

static void map_submit_other(struct blk_mapper *m, struct blk_req *req)
{
	take(to_dm(m), req, JOB_OTHER);
}

static struct blk_req *map_take_back(struct blk_mapper *m, unsigned qidx)
{
	struct disk_mapper *dm = to_dm(m);
	struct blk_req *head, *r;

	pthread_mutex_lock(&dm->lock);
	head = dm->q[qidx].head;
	dm->q[qidx].head = dm->q[qidx].tail = NULL;
	for (r = head; r; r = r->next)
		dm->outstanding--;
	pthread_mutex_unlock(&dm->lock);
	return head;
}

static bool map_has_back(struct blk_mapper *m, unsigned qidx)
{
	return __atomic_load_n(&to_dm(m)->q[qidx].head, __ATOMIC_ACQUIRE) != NULL;
}

static unsigned map_outstanding(struct blk_mapper *m)
{
	struct disk_mapper *dm = to_dm(m);
	unsigned n;

	pthread_mutex_lock(&dm->lock);
	n = dm->outstanding;
	pthread_mutex_unlock(&dm->lock);
	return n;
}

/* seccomp_install_base() is in: each thread narrows itself. */
static int wake_to_narrow(struct seccomp_waker *w)
{
	struct disk_mapper *dm = (struct disk_mapper *)((char *)w - offsetof(struct disk_mapper, waker));
	int ret;

	pthread_mutex_lock(&dm->lock);
	dm->narrow = true;
	pthread_cond_broadcast(&dm->work_cv);
	while (dm->narrowed + dm->failed < dm->nthreads)
		pthread_cond_wait(&dm->narrow_cv, &dm->lock);
	ret = dm->failed ? -EPERM : 0;
	pthread_mutex_unlock(&dm->lock);
	return ret;
}

static void stop_threads(struct disk_mapper *dm)
{
	pthread_mutex_lock(&dm->lock);
	dm->stopping = true;
	pthread_cond_broadcast(&dm->work_cv);
	pthread_mutex_unlock(&dm->lock);
	for (unsigned i = 0; i < dm->nthreads; i++)
		pthread_join(dm->threads[i], NULL);
	dm->nthreads = 0;
}

static void free_mapper(struct disk_mapper *dm)
{
	pthread_cond_destroy(&dm->narrow_cv);
	pthread_cond_destroy(&dm->work_cv);
	pthread_mutex_destroy(&dm->lock);
	free(dm);
}

/* Called by the io_uring backend's close, after it drained. */
static void map_close(struct blk_mapper *m)
{
	struct disk_mapper *dm = to_dm(m);
	int ret;

	seccomp_waker_remove(&dm->waker);
	stop_threads(dm);
	ret = dm->d ? disk_close(dm->d) : 0;
	if (ret)
		log_error("virtio-blk: closing the image: %s", strerror(-ret));
	free_mapper(dm);
}

static int map_switch_disk(struct blk_mapper *m, bool read_only, const char *const *paths,
			   const int *fds, unsigned n, char *err, size_t errlen)
{
	struct disk_mapper *dm = to_dm(m);
	struct disk_error derr = { { 0 } };
	struct disk_info now, next;
	struct disk *nd;
	int ret;

	pthread_mutex_lock(&dm->lock);
	if (dm->outstanding || dm->todo_head) {
		pthread_mutex_unlock(&dm->lock);
		snprintf(err, errlen, "requests are still in flight");
		return -EBUSY;
	}
	/* The new chain holds some of the old one's files (the parent a merge
	 * wrote into, now to be written by us): the idle old chain lets go of
	 * its locks for the new one to take them, and takes them back if the
	 * new one does not open. */
	ret = disk_lock_chain(dm->d, false);
	if (!ret)
		ret = disk_open_fds(paths, fds, n, read_only ? DISK_OPEN_RDONLY : 0, &nd, &derr);
	if (ret) {
		int relock = disk_lock_chain(dm->d, true);
		pthread_mutex_unlock(&dm->lock);
		if (relock)
			log_error("virtio-blk: the image's locks could not be taken back: %s",
				  strerror(-relock));
		snprintf(err, errlen, "%s", derr.msg[0] ? derr.msg : strerror(-ret));
		return ret;
	}
	disk_get_info(dm->d, &now);
	disk_get_info(nd, &next);
	if (next.virtual_size != now.virtual_size || next.logical_sector != now.logical_sector) {
		disk_close(nd);
		disk_lock_chain(dm->d, true);
		pthread_mutex_unlock(&dm->lock);
		snprintf(err, errlen, "%s: %llu bytes in %u-byte sectors, but the disk the guest "
			 "has is %llu bytes in %u-byte sectors", paths[0],
			 (unsigned long long)next.virtual_size, next.logical_sector,
			 (unsigned long long)now.virtual_size, now.logical_sector);
		return -EINVAL;
	}
	struct disk *old = dm->d;
	dm->d = nd;
	pthread_mutex_unlock(&dm->lock);
	ret = disk_close(old);
	if (ret)
		log_error("virtio-blk: closing the image switched from: %s", strerror(-ret));
	return 0;
}

static int map_share_disk(struct blk_mapper *m, char *err, size_t errlen)
{
	struct disk_mapper *dm = to_dm(m);

	pthread_mutex_lock(&dm->lock);
	int ret = dm->outstanding || dm->todo_head ? -EBUSY : disk_share(dm->d);
	pthread_mutex_unlock(&dm->lock);
	if (ret)
		snprintf(err, errlen, "%s", ret == -EBUSY ? "requests are still in flight"
							  : strerror(-ret));
	return ret;
}

static const struct blk_mapper_ops disk_mapper_ops = {
	.plan = map_plan,
	.data_done = map_data_done,
	.submit_other = map_submit_other,
	.take_back = map_take_back,
	.has_back = map_has_back,
	.outstanding = map_outstanding,
	.close = map_close,
	.switch_disk = map_switch_disk,
	.share_disk = map_share_disk,
};


int blk_disk_open(struct disk *d, const struct blk_open_opts *o, struct blk_backend **out)
{
	struct disk_mapper *dm;
	struct disk_info info;
	struct blk_backend *be;
	int ret;

	dm = calloc(1, sizeof(*dm) + o->nqueues * sizeof(struct back_list));
	if (!dm)
		return -ENOMEM;
	pthread_mutex_init(&dm->lock, NULL);
	pthread_cond_init(&dm->work_cv, NULL);
	pthread_cond_init(&dm->narrow_cv, NULL);
	dm->waker.wake = wake_to_narrow;
	dm->m.ops = &disk_mapper_ops;
	dm->d = d;
	dm->nqueues = o->nqueues;
	disk_get_info(d, &info);
	ret = blk_uring_open_mapped(info.virtual_size, o, &dm->m, &be);
	if (ret) {
		free_mapper(dm);
		return ret;
	}
	dm->be = be;
	be->kind = info.format == DISK_FORMAT_VHDX ? "vhdx (io_uring)" : "vhd (io_uring)";
	be->logical_sector = info.logical_sector;
	be->physical_sector = info.physical_sector;
	be->read_only = o->read_only || info.read_only;
	be->can_discard = true;
	for (unsigned i = 0; i < DISK_THREADS; i++) {
		ret = -pthread_create(&dm->threads[i], NULL, worker, dm);
		if (ret)
			break;
		dm->nthreads++;
	}
	if (!dm->nthreads) {
		/* closing the backend would close d, which the caller still owns */
		dm->d = NULL;
		be->ops->close(be);
		return ret;
	}
	seccomp_waker_add(&dm->waker);
	*out = be;
	return 0;
}
