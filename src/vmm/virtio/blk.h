/* virtio-blk and its storage backends. blk.c speaks virtio (requests,
 * status bytes, config space); a backend moves bytes: blk_uring.c (io_uring,
 * one ring per queue) for raw files and block devices, and for VHDX/VHD
 * images over blk_disk.c, which asks the disk library's block map where
 * the data lives and does metadata work on a few threads. blk.c does not
 * know which one it has. */
#ifndef CLOISON_VMM_VIRTIO_BLK_H
#define CLOISON_VMM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vmm/virtio/devices.h"
#include "vmm/virtio/queue.h"

struct vm;

enum blk_op {
	BLK_OP_READ,
	BLK_OP_WRITE,
	BLK_OP_FLUSH,
	BLK_OP_DISCARD,
	BLK_OP_WRITE_ZEROES,	   /* the zeroes must be written */
	BLK_OP_WRITE_ZEROES_UNMAP, /* the backend may deallocate instead */
};

/* One guest request on its way through a backend. */
struct blk_req {
	enum blk_op op;
	uint64_t offset; /* bytes */
	uint64_t len;	 /* bytes */
	struct iovec *iov; /* READ/WRITE: the guest's data buffers */
	unsigned niov;
	unsigned qidx;
	uint8_t *status;  /* the guest's status byte */
	uint32_t written; /* bytes written into the guest's buffers */
	int result;	  /* backend scratch: 0 or -errno once done */
	bool in_backend;  /* counted in its queue's in-flight requests */
	struct virtq_elem *elem;
	struct blk_req *next; /* free list, backend lists */
	/* The io_uring backend's plan for a READ/WRITE: one host I/O at
	 * host_off in host_fd, or (a request of a VHDX/VHD image that maps to
	 * several places) its pieces. */
	int host_fd;
	uint64_t host_off;
	struct blk_piece *pieces;
	unsigned parts_left;
	bool commit;	/* a mapped write: its sectors are marked present after it */
	uint8_t stage;	/* enum blk_plan once planned; mapper scratch before */
};

/* One host read or write of part of a request; a mapper plans at most
 * BLK_MAX_PIECES per request (more go through its threads). */
#define BLK_MAX_PIECES 8
struct blk_piece {
	struct blk_piece *next;
	struct blk_req *req;
	int fd;
	uint64_t file_off;
	uint64_t len;
	unsigned niov;
	struct iovec iov[];
};

struct blk_backend;

struct blk_backend_ops {
	/* Starts req on queue qidx. The backend later reports it through
	 * blk_req_complete() from reap() (never from submit itself). */
	void (*submit)(struct blk_backend *be, unsigned qidx, struct blk_req *req);
	/* End of a batch on qidx: push queued submissions to the kernel. */
	void (*flush_batch)(struct blk_backend *be, unsigned qidx);
	/* The fd that becomes readable when qidx has completions. */
	int (*completion_fd)(struct blk_backend *be, unsigned qidx);
	/* Reports every finished request of qidx. */
	void (*reap)(struct blk_backend *be, unsigned qidx);
	/* Optional, cheap (no system call): reports what has finished on
	 * qidx, if anything; true if it reported something. */
	bool (*poll)(struct blk_backend *be, unsigned qidx);
	/* Waits for every request in flight and reports them. */
	void (*drain)(struct blk_backend *be);
	void (*close)(struct blk_backend *be);
	/* Optional: replaces the image under a drained backend with the chain
	 * of the n files paths/fds (top first; disk_open_fds), of the same
	 * virtual size and logical sector. 0 or -errno with err filled; on
	 * failure nothing changed. */
	int (*switch_chain)(struct blk_backend *be, const char *const *paths, const int *fds,
			    unsigned n, char *err, size_t errlen);
	/* Optional: disk_share of the image under a drained backend. */
	int (*share)(struct blk_backend *be, char *err, size_t errlen);
};

struct blk_backend {
	const struct blk_backend_ops *ops;
	const char *kind;   /* "raw (io_uring)", "vhdx", ... for logs */
	uint64_t size;	    /* bytes, a multiple of 512 */
	uint32_t logical_sector;
	uint32_t physical_sector;
	bool read_only;
	bool can_discard;
	/* Where completions go: the device (set by blk.c before any I/O). */
	void (*complete)(void *owner, struct blk_req *req, int err);
	void *owner;
};

struct blk_open_opts {
	const char *path;
	bool read_only;
	bool direct;
	unsigned nqueues;
	unsigned queue_size;
};

/* Opens path with the right backend (raw → io_uring; VHDX/VHD → disk
 * library). 0 or -errno with err saying which file and why. */
int blk_backend_open(const struct blk_open_opts *o, struct blk_backend **out, char *err,
		     size_t errlen);

/* The backends behind blk_backend_open. fd is an open raw file or block
 * device (taken over); size in bytes. */
int blk_uring_open(int fd, uint64_t size, const struct blk_open_opts *o,
		   struct blk_backend **out);
/* What the io_uring backend did with the requests it was given. */
struct blk_uring_stats {
	uint64_t host_ops;	/* readv/writev/fsync/fallocate sent to the kernel */
	uint64_t merged_ops;	/* host reads and writes that carried several requests */
	uint64_t merged_reqs;	/* the requests those carried */
	uint64_t merge_retries; /* merged I/Os that failed or came back short */
};
void blk_uring_get_stats(struct blk_backend *be, struct blk_uring_stats *out);

/* A block map under the io_uring backend (blk_disk.c for VHDX and VHD):
 * the backend asks it on the event loop where a request's data lives,
 * moves the data itself, and hands it whatever needs metadata work, which
 * it does on its own threads and hands back through take_back. */
enum blk_plan {
	BLK_PLAN_DONE,	 /* finished: req->result holds the outcome */
	BLK_PLAN_ONE,	 /* one host I/O: req->host_fd, req->host_off */
	BLK_PLAN_PIECES, /* req->pieces, req->parts_left of them (0: all zeroes) */
	BLK_PLAN_DEFER,	 /* the mapper took it */
};
struct blk_mapper;
struct blk_mapper_ops {
	/* A READ or WRITE, on the event loop, never waiting for a sync. */
	enum blk_plan (*plan)(struct blk_mapper *m, struct blk_req *req);
	/* req's data I/O ended with err: true if the mapper took it (to mark
	 * its sectors present first), false to complete it now. */
	bool (*data_done)(struct blk_mapper *m, struct blk_req *req, int err);
	/* FLUSH, DISCARD, WRITE_ZEROES*: always taken. */
	void (*submit_other)(struct blk_mapper *m, struct blk_req *req);
	/* What the mapper hands back for queue qidx, linked by ->next, each
	 * with req->stage an enum blk_plan other than DEFER; has_back says
	 * cheaply whether there is any. */
	struct blk_req *(*take_back)(struct blk_mapper *m, unsigned qidx);
	bool (*has_back)(struct blk_mapper *m, unsigned qidx);
	/* Requests the mapper holds (taken, not handed back). */
	unsigned (*outstanding)(struct blk_mapper *m);
	void (*close)(struct blk_mapper *m);
	/* Optional: switch_chain of the backend over it. */
	int (*switch_disk)(struct blk_mapper *m, bool read_only, const char *const *paths,
			   const int *fds, unsigned n, char *err, size_t errlen);
	int (*share_disk)(struct blk_mapper *m, char *err, size_t errlen);
};
struct blk_mapper {
	const struct blk_mapper_ops *ops;
};
/* The io_uring backend over a mapper instead of one file. It wakes the
 * event loop through completion_fd(qidx), which the mapper writes to when
 * it has something for take_back. Closing it closes the mapper. */
int blk_uring_open_mapped(uint64_t size, const struct blk_open_opts *o, struct blk_mapper *m,
			  struct blk_backend **out);

struct disk;
/* VHDX/VHD: the disk library's block map under io_uring. Takes over d. */
int blk_disk_open(struct disk *d, const struct blk_open_opts *o, struct blk_backend **out);


/* Backends report a finished request (err 0 or -errno). */
static inline void blk_req_complete(struct blk_backend *be, struct blk_req *req, int err)
{
	be->complete(be->owner, req, err);
}

/* The whole device: parses the spec and attaches a virtio-blk function. */
/* virtio_blk_chain (blk.c), with the guest running and its requests
 * drained first: SWITCH replaces the device's open chain with the n files
 * paths/fds, top first; SHARE shares its image for a child to be made of it
 * (disk_share), before a switch. */
struct virtio_dev;
int virtio_blk_chain(struct virtio_dev *vdev, enum blk_chain_op op, const char *const *paths,
		     const int *fds, unsigned n, char *err, size_t errlen);

struct blk_spec {
	char path[4096];
	char serial[21];
	bool read_only;
	bool direct;
};
int blk_spec_parse(const char *spec, struct blk_spec *out, char *err, size_t errlen);

struct virtio_dev;
int virtio_blk_create(struct vm *vm, const struct blk_spec *spec, unsigned index,
		      struct virtio_dev **out, char *err, size_t errlen);

#endif
