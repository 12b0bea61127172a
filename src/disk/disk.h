/* The virtual-disk library: one interface for raw, VHDX and VHD images.
 * Depends on libc and CRC-32C only, so it can be fuzzed and reused.
 *
 * Errors are 0 or -errno; an open/create failure also fills a struct
 * disk_error with a sentence naming the file and the problem. Thread
 * safety: after disk_open, disk_pread/pwrite/flush/discard may be called
 * from many threads at once; data I/O runs outside the metadata lock. */
#ifndef CLOISON_DISK_DISK_H
#define CLOISON_DISK_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/guid.h"

struct disk;

enum disk_format { DISK_FORMAT_RAW, DISK_FORMAT_VHDX, DISK_FORMAT_VHD };
enum disk_type { DISK_TYPE_FIXED, DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING };

struct disk_error {
	char msg[512];
};

/* disk_open flags */
#define DISK_OPEN_RDONLY 0x1
#define DISK_OPEN_DIRECT 0x2	 /* O_DIRECT on the data file(s) */
#define DISK_OPEN_NO_PARENT 0x4	 /* inspect a differencing disk without its parent;
				    data reads of unallocated blocks fail -ENXIO */
#define DISK_OPEN_FORMAT_RAW 0x8 /* do not probe: treat as raw */
#define DISK_OPEN_NO_LOCK 0x20	 /* with RDONLY|NO_PARENT: no lock at all, to read
				    what never changes under a writer (the
				    parent locator) of an image a worker holds */
#define DISK_OPEN_SHARED_LOCK 0x10 /* written, but under a shared lock: only to
				      merge a child into this image while a
				      worker reads it through that child (it
				      never reads what the merge writes) */

/* Opens an image, probing its format (VHDX by file identifier, VHD by
 * footer "conectix", else raw), and opens parents of differencing disks
 * (always read-only) through their locators. Replays a pending VHDX log
 * (in memory only when read-only). 0 or -errno with err filled. */
int disk_open(const char *path, unsigned flags, struct disk **out, struct disk_error *err);
/* Lets another process open d read-only while d is written, to make a
 * differencing child of it (a live checkpoint), or to read it (a live
 * merge): flushes it (what it defers reaches the file), fixes the identity
 * a child records (VHDX: its DataWriteGuid is set now, not at the next
 * first write), then holds a shared lock where an exclusive one was. No
 * I/O may be in flight. 0 or -errno. */
int disk_share(struct disk *d);
/* The same from files the caller opened (a sandboxed worker cannot open
 * paths): paths[i] and fds[i] are the chain's files, the top first, each
 * parent the next one (checked as disk_open checks a found parent; paths
 * name them in messages). The fds are duplicated, the caller keeps its
 * own. n must be the whole chain. 0 or -errno with err filled. */
int disk_open_fds(const char *const *paths, const int *fds, unsigned n, unsigned flags,
		  struct disk **out, struct disk_error *err);
/* Flushes and closes; for VHDX marks the file clean. 0 or -errno. */
int disk_close(struct disk *d);
/* Drops (hold false) or takes again (hold true) the lock of every image of
 * d's chain, as disk_open took it: a worker switching its chain lets the
 * new chain lock the same files (the old one is idle), and takes its locks
 * back if the new chain fails to open. 0 or -errno (-EBUSY: another
 * process took one meanwhile). */
int disk_lock_chain(struct disk *d, bool hold);

/* Guest-visible I/O. off and len must be multiples of the logical sector
 * size. Reads past what a differencing disk holds come from the parent;
 * unallocated blocks of a dynamic disk read as zeroes. */
int disk_pread(struct disk *d, void *buf, size_t len, uint64_t off);
int disk_pwrite(struct disk *d, const void *buf, size_t len, uint64_t off);
/* Makes every completed write durable (data and metadata). */
int disk_flush(struct disk *d);
/* Drops the range: later reads return zeroes (or the parent's data for a
 * differencing disk, as Hyper-V does for unmap). May keep the space. */
int disk_discard(struct disk *d, uint64_t off, uint64_t len);
/* Writes zeroes; with may_unmap the library may deallocate instead. */
int disk_write_zeroes(struct disk *d, uint64_t off, uint64_t len, bool may_unmap);

/* Where guest range [off, off+len) lives, for callers that do their own
 * data I/O (the virtio-blk io_uring path, benchmarks). Fills the first
 * extent starting at off (ext->len <= len). Never allocates. */
enum disk_extent_kind {
	DISK_EXTENT_DATA,   /* in file fd at file_off, this image */
	DISK_EXTENT_ZERO,   /* reads as zeroes */
	DISK_EXTENT_PARENT, /* not in this image: ask the parent (disk_parent) */
};
struct disk_extent {
	enum disk_extent_kind kind;
	int fd;
	uint64_t file_off;
	uint64_t len;
};
int disk_map(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext);

/* The block map for callers that move guest data themselves (the
 * virtio-blk io_uring backend). All three take whole sectors inside the
 * disk and are safe to call from several threads at once.
 *
 * disk_map_read: like disk_map, but a PARENT extent is followed down the
 * chain, so the extent is DATA (ext->fd is the image that holds it) or
 * ZERO (past a smaller parent too). -EOPNOTSUPP when the data cannot be
 * read from the file as it is (a read-only VHDX whose log was replayed
 * in memory): use disk_pread then. Never allocates, never blocks on I/O
 * except to load a sector bitmap. */
int disk_map_read(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext);

#define DISK_MAP_ALLOC 0x1 /* disk_map_write may change metadata */
/* Where a write of [off, off+len) goes: fills ext with the DATA extent at
 * off in this image (ext->len <= len). Without DISK_MAP_ALLOC it fails
 * -EWOULDBLOCK when metadata must change before the data may be written
 * (a new block, the first write of this open); with it, it makes that
 * change first, in memory (logged by the next disk_flush for VHDX, written
 * by it for VHD, after the data is synced); the first change of an open
 * writes the header and syncs.
 * *commit comes back true when the caller must call disk_commit_write for
 * [off, off+ext->len) once its data write has completed, before it reports
 * the write done: a differencing disk's sector bitmap says "present" only
 * for data that is there. -EOPNOTSUPP: the format has no block map for
 * writes; use disk_pwrite. */
int disk_map_write(struct disk *d, uint64_t off, uint64_t len, unsigned flags,
		   struct disk_extent *ext, bool *commit);
/* After a write mapped by disk_map_write has completed: marks its sectors
 * present, in memory; the next disk_flush syncs the data and then logs
 * (VHDX) or writes (VHD) the bitmap. Idempotent, and a no-op where nothing
 * needs marking. 0 or -errno. */
int disk_commit_write(struct disk *d, uint64_t off, uint64_t len);

struct disk_info {
	enum disk_format format;
	enum disk_type type;
	uint64_t virtual_size;	 /* bytes */
	uint64_t file_size;	 /* bytes on the host, this file only */
	uint64_t allocated;	 /* bytes of the virtual disk allocated in this file */
	uint32_t block_size;	 /* VHDX/VHD block size, 0 for raw */
	uint32_t logical_sector; /* 512 or 4096 */
	uint32_t physical_sector;
	struct guid disk_id;	 /* VHDX DiskIdentifier / VHD unique id */
	bool read_only;
	bool has_parent;
	char parent_path[4096];	 /* as resolved (or the best locator if absent) */
	struct guid parent_linkage; /* VHDX parent_linkage / VHD parent UUID */
	bool log_replayed;	 /* VHDX: a pending log was replayed on open */
};
void disk_get_info(struct disk *d, struct disk_info *info);
uint64_t disk_size(struct disk *d);
uint32_t disk_sector_size(struct disk *d); /* logical */
/* The parent of a differencing disk (owned by d), else NULL. */
struct disk *disk_parent(struct disk *d);
const char *disk_path(struct disk *d);

/* Allocation map: fills *len with the length of the run starting at off
 * that is uniformly allocated in this image (true) or not (false). */
int disk_block_status(struct disk *d, uint64_t off, uint64_t len, bool *allocated,
		      uint64_t *run_len);

struct disk_create_opts {
	enum disk_format format;
	enum disk_type type;
	uint64_t size;		 /* virtual size; 0 with a parent = parent's size */
	uint32_t block_size;	 /* 0 = default (VHDX 32 MiB, 2 MiB for a differencing VHDX
				    as Hyper-V; VHD 2 MiB) */
	uint32_t logical_sector; /* 0 = 512 */
	uint32_t physical_sector; /* 0 = 4096 for VHDX, 512 for VHD */
	const char *parent;	 /* differencing: path to the parent */
};
/* Creates a new image; fails with -EEXIST if path exists. On failure no
 * file is left behind. 0 or -errno with err filled. */
int disk_create(const char *path, const struct disk_create_opts *opts, struct disk_error *err);


/* Maintenance operations (the `cloison disk` verbs build on these).
 * Each names the file and the problem in err; none modifies anything when
 * it fails. */
/* Re-points a differencing disk at parent_path (after a move), checking
 * that parent_path is the disk it was made from. */
int disk_set_parent(const char *path, const char *parent_path, struct disk_error *err);
/* Changes the virtual size; shrinking fails with -ENOTEMPTY if the cut
 * part holds allocated data. */
int disk_resize(const char *path, uint64_t new_size, struct disk_error *err);
/* Checks metadata (and with repair fixes what is safe); see disk_ops.check. */
int disk_check(const char *path, bool repair, char *report, size_t len, struct disk_error *err);

const char *disk_format_name(enum disk_format f);
const char *disk_type_name(enum disk_type t);

#endif
