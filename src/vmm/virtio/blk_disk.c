/* The virtio-blk backend for VHDX and VHD images: a small pool of worker
 * threads calling the disk library (which does its own metadata locking
 * and runs data I/O in parallel). Finished requests go on a per-queue
 * list and raise that queue's eventfd; blk.c reaps them on the event loop. */
#include "vmm/virtio/blk.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "disk/disk.h"

#define DISK_THREADS 8

struct done_list {
	int efd;
	struct blk_req *head, *tail;
};

struct disk_backend {
	struct blk_backend be;
	struct disk *d;
	pthread_mutex_t lock;
	pthread_cond_t work_cv, idle_cv;
	struct blk_req *todo_head, *todo_tail;
	unsigned inflight;
	bool stopping;
	unsigned nthreads;
	pthread_t threads[DISK_THREADS];
	unsigned nqueues;
	struct done_list q[];
};

static struct disk_backend *to_db(struct blk_backend *be)
{
	return (struct disk_backend *)be;
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

/* Reads or writes the guest's segments. Sector-multiple segments go to
 * the library one run at a time (adjacent host buffers merged); anything
 * else through one bounce buffer. */
static int rw_segments(struct disk_backend *db, struct blk_req *req, uint8_t **bounce,
		       size_t *bounce_len)
{
	bool write = req->op == BLK_OP_WRITE;
	uint32_t sector = db->be.logical_sector;
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
			return disk_pwrite(db->d, *bounce, req->len, off);
		}
		ret = disk_pread(db->d, *bounce, req->len, off);
		if (!ret)
			iov_from_buf(req->iov, req->niov, 0, *bounce, req->len);
		return ret;
	}
	for (unsigned i = 0; i < req->niov;) {
		uint8_t *base = req->iov[i].iov_base;
		size_t len = req->iov[i].iov_len;

		for (i++; i < req->niov && (uint8_t *)req->iov[i].iov_base == base + len; i++)
			len += req->iov[i].iov_len;
		ret = write ? disk_pwrite(db->d, base, len, off) : disk_pread(db->d, base, len, off);
		if (ret)
			return ret;
		off += len;
	}
	return 0;
}

static int do_req(struct disk_backend *db, struct blk_req *req, uint8_t **bounce,
		  size_t *bounce_len)
{
	switch (req->op) {
	case BLK_OP_READ:
	case BLK_OP_WRITE:
		return rw_segments(db, req, bounce, bounce_len);
	case BLK_OP_FLUSH:
		return disk_flush(db->d);
	case BLK_OP_DISCARD:
		return disk_discard(db->d, req->offset, req->len);
	case BLK_OP_WRITE_ZEROES:
		return disk_write_zeroes(db->d, req->offset, req->len, false);
	case BLK_OP_WRITE_ZEROES_UNMAP:
		return disk_write_zeroes(db->d, req->offset, req->len, true);
	}
	return -EINVAL;
}

static void *worker(void *opaque)
{
	struct disk_backend *db = opaque;
	uint8_t *bounce = NULL;
	size_t bounce_len = 0;
	uint64_t one = 1;

	pthread_mutex_lock(&db->lock);
	for (;;) {
		struct blk_req *req;
		struct done_list *dl;

		while (!db->todo_head && !db->stopping)
			pthread_cond_wait(&db->work_cv, &db->lock);
		if (!db->todo_head)
			break;
		req = db->todo_head;
		db->todo_head = req->next;
		if (!db->todo_head)
			db->todo_tail = NULL;
		pthread_mutex_unlock(&db->lock);

		req->result = do_req(db, req, &bounce, &bounce_len);

		pthread_mutex_lock(&db->lock);
		dl = &db->q[req->qidx];
		append(&dl->head, &dl->tail, req);
		db->inflight--;
		if (!db->inflight)
			pthread_cond_broadcast(&db->idle_cv);
		if (write(dl->efd, &one, sizeof(one)) < 0)
			log_warn("virtio-blk: completion eventfd: %s", strerror(errno));
	}
	pthread_mutex_unlock(&db->lock);
	free(bounce);
	return NULL;
}

static void disk_submit(struct blk_backend *be, unsigned qidx, struct blk_req *req)
{
	struct disk_backend *db = to_db(be);

	pthread_mutex_lock(&db->lock);
	append(&db->todo_head, &db->todo_tail, req);
	db->inflight++;
	pthread_cond_signal(&db->work_cv);
	pthread_mutex_unlock(&db->lock);
}

static void disk_flush_batch(struct blk_backend *be, unsigned qidx)
{
}

static int disk_completion_fd(struct blk_backend *be, unsigned qidx)
{
	return to_db(be)->q[qidx].efd;
}

static void reap_list(struct disk_backend *db, unsigned qidx)
{
	struct done_list *dl = &db->q[qidx];
	struct blk_req *req;
	uint64_t v;

	if (read(dl->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("virtio-blk: completion eventfd: %s", strerror(errno));
	pthread_mutex_lock(&db->lock);
	req = dl->head;
	dl->head = dl->tail = NULL;
	pthread_mutex_unlock(&db->lock);
	while (req) {
		struct blk_req *next = req->next;

		blk_req_complete(&db->be, req, req->result);
		req = next;
	}
}

static void disk_reap(struct blk_backend *be, unsigned qidx)
{
	reap_list(to_db(be), qidx);
}

static void disk_drain(struct blk_backend *be)
{
	struct disk_backend *db = to_db(be);

	pthread_mutex_lock(&db->lock);
	while (db->inflight)
		pthread_cond_wait(&db->idle_cv, &db->lock);
	pthread_mutex_unlock(&db->lock);
	for (unsigned i = 0; i < db->nqueues; i++)
		reap_list(db, i);
}

static void stop_threads(struct disk_backend *db)
{
	pthread_mutex_lock(&db->lock);
	db->stopping = true;
	pthread_cond_broadcast(&db->work_cv);
	pthread_mutex_unlock(&db->lock);
	for (unsigned i = 0; i < db->nthreads; i++)
		pthread_join(db->threads[i], NULL);
	db->nthreads = 0;
}

static void free_backend(struct disk_backend *db)
{
	for (unsigned i = 0; i < db->nqueues; i++) {
		if (db->q[i].efd >= 0)
			close(db->q[i].efd);
	}
	pthread_cond_destroy(&db->idle_cv);
	pthread_cond_destroy(&db->work_cv);
	pthread_mutex_destroy(&db->lock);
	free(db);
}

static void disk_backend_close(struct blk_backend *be)
{
	struct disk_backend *db = to_db(be);
	int ret;

	disk_drain(be);
	stop_threads(db);
	ret = disk_close(db->d);
	if (ret)
		log_error("virtio-blk: closing the image: %s", strerror(-ret));
	free_backend(db);
}

static const struct blk_backend_ops disk_ops = {
	.submit = disk_submit,
	.flush_batch = disk_flush_batch,
	.completion_fd = disk_completion_fd,
	.reap = disk_reap,
	.drain = disk_drain,
	.close = disk_backend_close,
};

int blk_disk_open(struct disk *d, const struct blk_open_opts *o, struct blk_backend **out)
{
	struct disk_backend *db;
	struct disk_info info;
	int ret = 0;

	db = calloc(1, sizeof(*db) + o->nqueues * sizeof(struct done_list));
	if (!db)
		return -ENOMEM;
	pthread_mutex_init(&db->lock, NULL);
	pthread_cond_init(&db->work_cv, NULL);
	pthread_cond_init(&db->idle_cv, NULL);
	db->nqueues = o->nqueues;
	for (unsigned i = 0; i < o->nqueues; i++)
		db->q[i].efd = -1;
	for (unsigned i = 0; i < o->nqueues; i++) {
		db->q[i].efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (db->q[i].efd < 0) {
			ret = -errno;
			goto err_free;
		}
	}
	disk_get_info(d, &info);
	db->d = d;
	db->be.ops = &disk_ops;
	db->be.kind = disk_format_name(info.format);
	db->be.size = info.virtual_size & ~511ULL;
	db->be.logical_sector = info.logical_sector;
	db->be.physical_sector = info.physical_sector;
	db->be.read_only = o->read_only || info.read_only;
	db->be.can_discard = true;
	for (unsigned i = 0; i < DISK_THREADS; i++) {
		ret = -pthread_create(&db->threads[i], NULL, worker, db);
		if (ret)
			goto err_threads;
		db->nthreads++;
	}
	*out = &db->be;
	return 0;
err_threads:
	stop_threads(db);
err_free:
	free_backend(db);
	return ret;
}
