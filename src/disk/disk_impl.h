/* Private to src/disk: the table each format implements and the common
 * struct disk. disk.c does probing, parent chains and dispatch; raw.c,
 * vhdx.c and vhd.c implement the formats. */
#ifndef CLOISON_DISK_DISK_IMPL_H
#define CLOISON_DISK_DISK_IMPL_H

#include <limits.h>
#include <pthread.h>

#include "disk/disk.h"

#define DISK_MAX_CHAIN 64 /* deeper chains are refused (and cycles caught) */

struct disk_ops {
	enum disk_format format;
	/* Does this file look like this format? head: first 64 KiB (or less),
	 * tail: last 512 bytes (zeros if the file is smaller). */
	bool (*probe)(const uint8_t *head, size_t head_len, const uint8_t tail[512],
		      uint64_t file_size);
	/* d->fd, d->path, d->flags are set; fills d->size, d->sector,
	 * d->priv, d->type. For a differencing disk leave d->parent NULL:
	 * disk.c opens it through parent_candidates/check_parent. */
	int (*open)(struct disk *d, struct disk_error *err);
	/* Optional: fix the identity a child records for this open of a
	 * writable image (VHDX: DataWriteGuid, which a first write changes). */
	int (*fix_identity)(struct disk *d);
	void (*close)(struct disk *d); /* frees priv; disk.c closes fd */
	int (*pread)(struct disk *d, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct disk *d, const void *buf, size_t len, uint64_t off);
	int (*flush)(struct disk *d);
	int (*discard)(struct disk *d, uint64_t off, uint64_t len);	      /* optional */
	int (*write_zeroes)(struct disk *d, uint64_t off, uint64_t len, bool may_unmap); /* optional */
	int (*map)(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext);
	/* Optional: disk_map_read's view of this image (PARENT is followed by
	 * disk_map.c); map is used when absent. */
	int (*map_read)(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext);
	/* Optional (disk_map_write/disk_commit_write; see disk.h). */
	int (*map_write)(struct disk *d, uint64_t off, uint64_t len, unsigned flags,
			 struct disk_extent *ext, bool *commit);
	int (*commit_write)(struct disk *d, uint64_t off, uint64_t len);
	int (*block_status)(struct disk *d, uint64_t off, uint64_t len, bool *allocated,
			    uint64_t *run_len);
	void (*info)(struct disk *d, struct disk_info *info);
	int (*create)(const char *path, const struct disk_create_opts *opts,
		      struct disk *parent, struct disk_error *err);
	/* Differencing: candidate parent paths, best first, resolved against
	 * the directory of d->path for relative locators. Returns the count. */
	int (*parent_candidates)(struct disk *d, char (*paths)[PATH_MAX], int max);
	/* 0 if parent is the disk d was made from, else -EINVAL with err. */
	int (*check_parent)(struct disk *d, struct disk *parent, struct disk_error *err);
	/* Re-points d (opened read-write) at parent: rewrites locators and
	 * linkage ids through the log where the format has one. Optional. */
	int (*set_parent)(struct disk *d, struct disk *parent, const char *stored_path,
			  struct disk_error *err);
	int (*resize)(struct disk *d, uint64_t new_size, struct disk_error *err); /* optional */
	/* Verifies metadata; with repair, fixes what is safe. Appends one line
	 * per finding to report (NUL-terminated, truncated at len). Returns the
	 * number of problems left (0 = clean) or -errno. Optional. */
	int (*check)(struct disk *d, bool repair, char *report, size_t len);
};

struct disk {
	const struct disk_ops *ops;
	char path[PATH_MAX];
	int fd;
	unsigned flags;
	enum disk_type type;
	uint64_t size;	   /* virtual size, bytes */
	uint32_t sector;   /* logical sector size */
	struct disk *parent;
	void *priv;
};

extern const struct disk_ops disk_raw_ops;
extern const struct disk_ops disk_vhdx_ops;
extern const struct disk_ops disk_vhd_ops;

struct stat;
/* open(2) for image files: refuses FIFOs, sockets and other special files
 * without blocking on them. Returns the fd or -errno (message in err). */
int disk_open_file(const char *path, int oflags, struct stat *st, struct disk_error *err);

/* printf into err (if non-NULL); returns ret so callers can
 * `return disk_fail(err, -EINVAL, "...")`. */
int disk_fail(struct disk_error *err, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Appends one printf-formatted line (a newline is added) to the check
 * report of len bytes, truncating when full; report may be NULL. */
void disk_report_add(char *report, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A zeroed buffer of len bytes aligned to 4096 (for O_DIRECT-safe I/O);
 * NULL when out of memory. Free with free(). */
void *disk_alloc_aligned(size_t len);

/* Writes zeroes over [off, off+len) through d->ops->pwrite, a buffer at a
 * time: the fallback when nothing cheaper can zero a range. 0 or -errno. */
int disk_write_zero_buffer(struct disk *d, uint64_t off, uint64_t len);

#endif
