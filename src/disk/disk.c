/* The public face of the disk library: format probing, dispatch to the
 * per-format ops tables, and the parent chains of differencing disks.
 *
 * Thread safety: nothing here keeps mutable state after disk_open, so the
 * I/O entry points only validate their arguments and call the format; each
 * format protects its own metadata (see vhd.c, vhdx.c). Opening, closing and
 * the maintenance verbs are single-threaded per struct disk. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "disk/disk_impl.h"

#define PROBE_HEAD (64 * 1024)
#define MAX_CANDIDATES 8

/* The formats we probe for, most specific first; raw matches anything. */
static const struct disk_ops *const probe_order[] = {
#ifdef DISK_HAVE_VHDX
	&disk_vhdx_ops,
#endif
	&disk_vhd_ops,
	&disk_raw_ops,
};

/* The files of the chain opened so far, to catch a parent pointing back
 * at one of its children. */
struct chain_ids {
	int count;
	dev_t dev[DISK_MAX_CHAIN];
	ino_t ino[DISK_MAX_CHAIN];
	char path[DISK_MAX_CHAIN][PATH_MAX];
	/* disk_open_fds: the chain's files, top first, already open */
	const char *const *given_path;
	const int *given_fd;
	int ngiven;
};

int disk_fail(struct disk_error *err, int ret, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return ret;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return ret;
}

const char *disk_format_name(enum disk_format f)
{
	switch (f) {
	case DISK_FORMAT_RAW:
		return "raw";
	case DISK_FORMAT_VHDX:
		return "vhdx";
	case DISK_FORMAT_VHD:
		return "vhd";
	}
	return "unknown";
}

const char *disk_type_name(enum disk_type t)
{
	switch (t) {
	case DISK_TYPE_FIXED:
		return "fixed";
	case DISK_TYPE_DYNAMIC:
		return "dynamic";
	case DISK_TYPE_DIFFERENCING:
		return "differencing";
	}
	return "unknown";
}

static const struct disk_ops *ops_for_format(enum disk_format f)
{
	for (size_t i = 0; i < ARRAY_SIZE(probe_order); i++)
		if (probe_order[i]->format == f)
			return probe_order[i];
	return NULL;
}

/* Size of a regular file or a block device. */
static int fd_size(int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, size) < 0)
			return -errno;
		return 0;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

/* A file that no format claims is raw, unless it looks like something
 * else cut short. A VHD keeps its footer in the last 512 bytes, so a fixed
 * VHD that lost 2 to 511 of them ends in a partial footer that starts on a
 * sector boundary (one that lost exactly 1 is still read: Virtual PC's
 * 511-byte footer). One byte of it, "c", is weak evidence, but a raw image
 * whose size is not a whole number of sectors is itself suspect. Taking such a file as raw would hide the damage and
 * let a write extend it past its own footer's remains. A file shorter than
 * one sector holds no disk at all. DISK_OPEN_FORMAT_RAW skips both checks
 * for callers that know better. */
static int check_raw_guess(int fd, const char *path, uint64_t size, struct disk_error *err)
{
	static const char cookie[] = "conectix";
	size_t partial = size % 512, n = partial < 8 ? partial : 8;
	char got[8];
	int ret;

	if (size < 512)
		return disk_fail(err, -EINVAL, "%s: %" PRIu64 " bytes is too small for a disk "
				 "image (a disk holds at least one 512-byte sector)", path, size);
	if (!partial)
		return 0;
	ret = pread_full(fd, got, n, (off_t)(size - partial));
	if (ret)
		return disk_fail(err, ret, "%s: cannot read: %s", path, strerror(-ret));
	if (memcmp(got, cookie, n))
		return 0;
	return disk_fail(err, -EINVAL, "%s: this looks like a VHD cut short: its last %zu "
			 "byte%s the start of a VHD footer, and the %zu bytes that complete it "
			 "are missing. Restore the image from a copy; to use what is left as a "
			 "raw disk, cut it to whole sectors (truncate -s %" PRIu64 " '%s')", path,
			 partial, partial == 1 ? " is" : "s are", 512 - partial, size - partial,
			 path);
}

static int probe_format(int fd, const char *path, unsigned flags, const struct disk_ops **ops,
			struct disk_error *err)
{
	uint8_t tail[512] = { 0 };
	uint64_t size;
	uint8_t *head;
	size_t head_len;
	int ret;

	if (flags & DISK_OPEN_FORMAT_RAW) {
		*ops = &disk_raw_ops;
		return 0;
	}
	ret = fd_size(fd, &size);
	if (ret)
		return disk_fail(err, ret, "%s: cannot get the size: %s", path, strerror(-ret));
	head_len = size < PROBE_HEAD ? (size_t)size : PROBE_HEAD;
	head = calloc(1, PROBE_HEAD);
	if (!head)
		return disk_fail(err, -ENOMEM, "%s: out of memory", path);
	ret = head_len ? pread_full(fd, head, head_len, 0) : 0;
	if (!ret && size >= 512)
		ret = pread_full(fd, tail, 512, (off_t)(size - 512));
	if (ret) {
		free(head);
		return disk_fail(err, ret, "%s: cannot read: %s", path, strerror(-ret));
	}
	for (size_t i = 0; i < ARRAY_SIZE(probe_order); i++) {
		if (probe_order[i]->probe(head, head_len, tail, size)) {
			*ops = probe_order[i];
			break;
		}
	}
	free(head);
	if (*ops == &disk_raw_ops)
		return check_raw_guess(fd, path, size, err);
	return 0;
}

static const char *file_kind(mode_t m)
{
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISDIR(m))
		return "a directory";
	return "a special file";
}

/* Opens an image file without blocking on a FIFO (or a device that waits
 * for a peer): O_NONBLOCK first, refuse anything that is not a regular file
 * or a block device, then back to blocking I/O. Returns the fd or -errno
 * (message in err). */
int disk_open_file(const char *path, int oflags, struct stat *st, struct disk_error *err)
{
	int fd, fl, ret;

	fd = open(path, oflags | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		return disk_fail(err, ret, "%s: cannot open: %s", path, strerror(-ret));
	}
	if (fstat(fd, st) < 0) {
		ret = -errno;
		disk_fail(err, ret, "%s: cannot stat: %s", path, strerror(-ret));
		goto fail;
	}
	if (!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) {
		ret = disk_fail(err, -EINVAL, "%s is %s, not a disk image", path,
				file_kind(st->st_mode));
		goto fail;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		ret = -errno;
		disk_fail(err, ret, "%s: cannot set blocking I/O: %s", path, strerror(-ret));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return ret;
}

/* Frees one image; opened says whether ops->open succeeded on it. */
static void disk_free_one(struct disk *d, bool opened)
{
	if (opened && d->ops->close)
		d->ops->close(d);
	if (d->fd >= 0)
		close(d->fd);
	free(d);
}

/* Opens path as one image (no parent). Records its identity in ids. */
/* One writer or many readers per image; a merge target shares (disk.h). */
static int lock_kind(unsigned flags)
{
	return flags & (DISK_OPEN_RDONLY | DISK_OPEN_SHARED_LOCK) ? LOCK_SH : LOCK_EX;
}

static int open_one(const char *path, unsigned flags, struct chain_ids *ids, struct disk **out,
		    struct disk_error *err)
{
	int oflags = (flags & DISK_OPEN_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	const struct disk_ops *ops = &disk_raw_ops;
	struct disk *d;
	struct stat st;
	int ret;

	if (strlen(path) >= PATH_MAX)
		return disk_fail(err, -ENAMETOOLONG, "%.200s...: path too long", path);
	d = calloc(1, sizeof(*d));
	if (!d)
		return disk_fail(err, -ENOMEM, "%s: out of memory", path);
	if (ids->given_fd) {
		/* disk_open_fds: the caller opened it (a sandbox has no path) */
		int acc = fcntl(ids->given_fd[ids->count], F_GETFL);
		d->fd = fcntl(ids->given_fd[ids->count], F_DUPFD_CLOEXEC, 3);
		if (d->fd < 0 || acc < 0) {
			ret = disk_fail(err, -errno, "%s: the descriptor given for it is not open",
					path);
			goto fail;
		}
		if (!(flags & DISK_OPEN_RDONLY) && (acc & O_ACCMODE) != O_RDWR) {
			ret = disk_fail(err, -EBADF, "%s: it is to be written, but the descriptor "
					"given for it is read-only", path);
			goto fail;
		}
		if (fstat(d->fd, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))) {
			ret = disk_fail(err, -EINVAL, "%s: the descriptor given for it is not a "
					"regular file or block device", path);
			goto fail;
		}
	} else {
		d->fd = disk_open_file(path, oflags, &st, err);
	}
	if (d->fd < 0) {
		ret = d->fd;
		goto fail;
	}
	for (int i = 0; i < ids->count; i++) {
		if (ids->dev[i] == st.st_dev && ids->ino[i] == st.st_ino) {
			ret = disk_fail(err, -ELOOP,
					"%s: the chain of differencing disks loops: %s is its own "
					"ancestor (it comes back as the parent of %s)",
					ids->path[0], ids->path[i], ids->path[ids->count - 1]);
			goto fail;
		}
	}
	if (ids->count >= DISK_MAX_CHAIN) {
		ret = disk_fail(err, -ELOOP,
				"%s: the chain of differencing disks is deeper than %d images "
				"(at %s)", ids->path[0], DISK_MAX_CHAIN, path);
		goto fail;
	}
	ids->dev[ids->count] = st.st_dev;
	ids->ino[ids->count] = st.st_ino;
	snprintf(ids->path[ids->count], PATH_MAX, "%s", path);
	ids->count++;

	/* One writer or many readers per image, across processes (the worker
	 * and every `cloison disk` verb): an advisory lock on the whole file. */
	if (!(flags & DISK_OPEN_NO_LOCK && flags & DISK_OPEN_RDONLY) &&
	    flock(d->fd, lock_kind(flags) | LOCK_NB) < 0) {
		ret = -errno;
		if (ret == -EWOULDBLOCK)
			ret = disk_fail(err, -EBUSY, "%s: the image is in use by another process "
					"(it holds a lock on it %s)", path,
					flags & DISK_OPEN_RDONLY ? "for writing" :
					"for reading or writing");
		else
			disk_fail(err, ret, "%s: cannot lock: %s", path, strerror(-ret));
		goto fail;
	}

	ret = probe_format(d->fd, path, flags, &ops, err);
	if (ret)
		goto fail;
	d->ops = ops;
	snprintf(d->path, sizeof(d->path), "%s", path);
	d->flags = flags;
	d->sector = 512;
	if (flags & DISK_OPEN_DIRECT) {
		int fl = fcntl(d->fd, F_GETFL);
		if (fl < 0 || fcntl(d->fd, F_SETFL, fl | O_DIRECT) < 0) {
			ret = -errno;
			disk_fail(err, ret, "%s: cannot use O_DIRECT: %s", path, strerror(-ret));
			goto fail;
		}
	}
	ret = ops->open(d, err);
	if (ret) {
		if (err && !err->msg[0])
			disk_fail(err, ret, "%s: cannot open as %s: %s", path,
				  disk_format_name(ops->format), strerror(-ret));
		goto fail;
	}
	*out = d;
	return 0;
fail:
	disk_free_one(d, false);
	return ret;
}

static int open_chain(const char *path, unsigned flags, struct chain_ids *ids, struct disk **out,
		      struct disk_error *err);

/* Finds, opens and checks the parent of d through its locators. Tries each
 * existing candidate; if none is there, names every path tried. */
static int open_parent(struct disk *d, struct chain_ids *ids, struct disk_error *err)
{
	unsigned pflags = DISK_OPEN_RDONLY | (d->flags & DISK_OPEN_DIRECT);
	char (*paths)[PATH_MAX];
	struct disk_error perr;
	char tried[384] = "";
	int n, ret = -ENOENT, found = 0;
	int saved = ids->count;

	if (ids->given_fd) {
		/* disk_open_fds: the parent is the next file given, checked as
		 * a found one would be */
		struct disk *p = NULL;
		if (ids->count >= ids->ngiven)
			return disk_fail(err, -ENOENT, "%s: its parent was not among the files "
					 "given", d->path);
		const char *pp = ids->given_path[ids->count];
		ret = open_chain(pp, pflags, ids, &p, err);
		if (ret)
			return ret;
		if (p->ops != d->ops)
			ret = disk_fail(err, -EINVAL, "%s: its parent %s is a %s image, not %s",
					d->path, pp, disk_format_name(p->ops->format),
					disk_format_name(d->ops->format));
		else if (d->ops->check_parent)
			ret = d->ops->check_parent(d, p, err);
		if (ret) {
			disk_close(p);
			return ret;
		}
		d->parent = p;
		return 0;
	}
	paths = calloc(MAX_CANDIDATES, PATH_MAX);
	if (!paths)
		return disk_fail(err, -ENOMEM, "%s: out of memory", d->path);
	n = d->ops->parent_candidates ? d->ops->parent_candidates(d, paths, MAX_CANDIDATES) : 0;
	if (n > MAX_CANDIDATES)
		n = MAX_CANDIDATES;
	for (int i = 0; i < n; i++) {
		struct disk *p = NULL;
		struct stat st;

		if (!paths[i][0])
			continue;
		if (stat(paths[i], &st) < 0) {
			size_t used = strlen(tried);
			snprintf(tried + used, sizeof(tried) - used, "%s'%s'", used ? ", " : "",
				 paths[i]);
			continue;
		}
		found++;
		perr.msg[0] = 0;
		ids->count = saved;
		ret = open_chain(paths[i], pflags, ids, &p, &perr);
		if (ret) {
			if (ret == -ELOOP)
				break; /* another candidate cannot fix a loop */
			continue;
		}
		if (p->ops != d->ops) {
			ret = disk_fail(&perr, -EINVAL,
					"%s: its parent %s is a %s image; a %s differencing disk "
					"needs a %s parent (formats cannot be mixed in a chain)",
					d->path, paths[i], disk_format_name(p->ops->format),
					disk_format_name(d->ops->format),
					disk_format_name(d->ops->format));
			disk_close(p);
			continue;
		}
		ret = d->ops->check_parent ? d->ops->check_parent(d, p, &perr) : 0;
		if (ret) {
			disk_close(p);
			continue;
		}
		d->parent = p;
		free(paths);
		return 0;
	}
	free(paths);
	if (!found) {
		if (!n)
			return disk_fail(err, -ENOENT, "%s: differencing disk without a usable parent "
					 "locator", d->path);
		return disk_fail(err, -ENOENT, "%s: parent disk not found; tried %s", d->path,
				 tried);
	}
	if (err)
		*err = perr;
	return ret;
}

static int open_chain(const char *path, unsigned flags, struct chain_ids *ids, struct disk **out,
		      struct disk_error *err)
{
	struct disk *d;
	int ret;

	ret = open_one(path, flags, ids, &d, err);
	if (ret)
		return ret;
	if (d->type == DISK_TYPE_DIFFERENCING && !(flags & DISK_OPEN_NO_PARENT)) {
		ret = open_parent(d, ids, err);
		if (ret) {
			disk_free_one(d, true);
			return ret;
		}
	}
	*out = d;
	return 0;
}

int disk_open(const char *path, unsigned flags, struct disk **out, struct disk_error *err)
{
	struct chain_ids *ids;
	int ret;

	if (err)
		err->msg[0] = 0;
	*out = NULL;
	ids = calloc(1, sizeof(*ids));
	if (!ids)
		return disk_fail(err, -ENOMEM, "%s: out of memory", path);
	ret = open_chain(path, flags, ids, out, err);
	free(ids);
	return ret;
}

int disk_open_fds(const char *const *paths, const int *fds, unsigned n, unsigned flags,
		  struct disk **out, struct disk_error *err)
{
	struct chain_ids *ids;
	int ret;

	if (err)
		err->msg[0] = 0;
	*out = NULL;
	if (!n || n > DISK_MAX_CHAIN)
		return disk_fail(err, -EINVAL, "a chain of 1 to %d files is needed, not %u",
				 DISK_MAX_CHAIN, n);
	ids = calloc(1, sizeof(*ids));
	if (!ids)
		return disk_fail(err, -ENOMEM, "%s: out of memory", paths[0]);
	ids->given_path = paths;
	ids->given_fd = fds;
	ids->ngiven = (int)n;
	ret = open_chain(paths[0], flags, ids, out, err);
	if (!ret && ids->count != ids->ngiven) {
		disk_close(*out);
		*out = NULL;
		ret = disk_fail(err, -EINVAL, "%s: its chain is %d files, but %u were given",
				paths[0], ids->count, n);
	}
	free(ids);
	return ret;
}

int disk_share(struct disk *d)
{
	int ret;

	if (d->flags & DISK_OPEN_RDONLY)
		return 0;
	/* what it defers (VHDX metadata) goes to the file for readers to see */
	if ((ret = d->ops->flush(d)))
		return ret;
	if (d->ops->fix_identity && (ret = d->ops->fix_identity(d)))
		return ret;
	if (flock(d->fd, LOCK_SH | LOCK_NB) < 0)
		return -errno;
	d->flags |= DISK_OPEN_SHARED_LOCK; /* disk_lock_chain keeps it shared */
	return 0;
}

int disk_lock_chain(struct disk *d, bool hold)
{
	for (struct disk *i = d; i; i = i->parent)
		if (flock(i->fd, (hold ? lock_kind(i->flags) : LOCK_UN) | LOCK_NB) < 0)
			return errno == EWOULDBLOCK ? -EBUSY : -errno;
	return 0;
}

int disk_close(struct disk *d)
{
	int ret = 0;

	if (!d)
		return 0;
	if (!(d->flags & DISK_OPEN_RDONLY))
		ret = d->ops->flush(d);
	if (d->parent)
		disk_close(d->parent);
	d->parent = NULL;
	disk_free_one(d, true);
	return ret;
}

/* Guest-visible ranges must be whole sectors inside the disk. */
static int check_range(struct disk *d, uint64_t off, uint64_t len)
{
	if (off % d->sector || len % d->sector)
		return -EINVAL;
	if (off > d->size || len > d->size - off)
		return -EINVAL;
	return 0;
}

int disk_pread(struct disk *d, void *buf, size_t len, uint64_t off)
{
	int ret = check_range(d, off, len);

	if (ret || !len)
		return ret;
	return d->ops->pread(d, buf, len, off);
}

int disk_pwrite(struct disk *d, const void *buf, size_t len, uint64_t off)
{
	int ret = check_range(d, off, len);

	if (ret || !len)
		return ret;
	if (d->flags & DISK_OPEN_RDONLY)
		return -EROFS;
	return d->ops->pwrite(d, buf, len, off);
}

int disk_flush(struct disk *d)
{
	if (d->flags & DISK_OPEN_RDONLY)
		return 0;
	return d->ops->flush(d);
}

void disk_report_add(char *report, size_t len, const char *fmt, ...)
{
	size_t used = report ? strnlen(report, len) : 0;
	va_list ap;

	if (!report || used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(report + used, len - used, fmt, ap);
	va_end(ap);
	used = strnlen(report, len);
	if (used + 1 < len) {
		report[used] = '\n';
		report[used + 1] = 0;
	}
}

void *disk_alloc_aligned(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, 4096, len ? len : 1))
		return NULL;
	memset(p, 0, len);
	return p;
}

int disk_write_zero_buffer(struct disk *d, uint64_t off, uint64_t len)
{
	size_t chunk = 1024 * 1024;
	void *zero = disk_alloc_aligned(chunk);
	int ret = 0;

	if (!zero)
		return -ENOMEM;
	while (len && !ret) {
		size_t n = len < chunk ? (size_t)len : chunk;
		ret = d->ops->pwrite(d, zero, n, off);
		off += n;
		len -= n;
	}
	free(zero);
	return ret;
}

int disk_discard(struct disk *d, uint64_t off, uint64_t len)
{
	int ret = check_range(d, off, len);

	if (ret || !len)
		return ret;
	if (d->flags & DISK_OPEN_RDONLY)
		return -EROFS;
	if (d->ops->discard)
		return d->ops->discard(d, off, len);
	if (d->ops->write_zeroes)
		return d->ops->write_zeroes(d, off, len, true);
	return disk_write_zero_buffer(d, off, len);
}

int disk_write_zeroes(struct disk *d, uint64_t off, uint64_t len, bool may_unmap)
{
	int ret = check_range(d, off, len);

	if (ret || !len)
		return ret;
	if (d->flags & DISK_OPEN_RDONLY)
		return -EROFS;
	if (d->ops->write_zeroes)
		return d->ops->write_zeroes(d, off, len, may_unmap);
	return disk_write_zero_buffer(d, off, len);
}

int disk_map(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext)
{
	int ret = check_range(d, off, len);

	if (ret)
		return ret;
	if (!len)
		return -EINVAL;
	return d->ops->map(d, off, len, ext);
}

int disk_block_status(struct disk *d, uint64_t off, uint64_t len, bool *allocated,
		      uint64_t *run_len)
{
	int ret = check_range(d, off, len);

	if (ret)
		return ret;
	if (!len)
		return -EINVAL;
	return d->ops->block_status(d, off, len, allocated, run_len);
}

void disk_get_info(struct disk *d, struct disk_info *info)
{
	uint64_t fsize = 0;

	memset(info, 0, sizeof(*info));
	info->format = d->ops->format;
	info->type = d->type;
	info->virtual_size = d->size;
	if (fd_size(d->fd, &fsize) == 0)
		info->file_size = fsize;
	info->logical_sector = d->sector;
	info->physical_sector = d->sector;
	info->read_only = d->flags & DISK_OPEN_RDONLY;
	info->has_parent = d->type == DISK_TYPE_DIFFERENCING;
	if (d->ops->info)
		d->ops->info(d, info);
	if (d->parent)
		snprintf(info->parent_path, sizeof(info->parent_path), "%s", d->parent->path);
}

uint64_t disk_size(struct disk *d)
{
	return d->size;
}

uint32_t disk_sector_size(struct disk *d)
{
	return d->sector;
}

struct disk *disk_parent(struct disk *d)
{
	return d->parent;
}

const char *disk_path(struct disk *d)
{
	return d->path;
}

int disk_create(const char *path, const struct disk_create_opts *opts, struct disk_error *err)
{
	const struct disk_ops *ops = ops_for_format(opts->format);
	struct disk_create_opts o = *opts;
	struct disk *parent = NULL;
	struct stat st;
	int ret;

	if (err)
		err->msg[0] = 0;
	if (!ops || !ops->create)
		return disk_fail(err, -EOPNOTSUPP, "%s: creating %s images is not supported", path,
				 disk_format_name(opts->format));
	if (lstat(path, &st) == 0)
		return disk_fail(err, -EEXIST, "%s: already exists; refusing to overwrite it",
				 path);
	if (o.type == DISK_TYPE_DIFFERENCING) {
		if (!o.parent || !o.parent[0])
			return disk_fail(err, -EINVAL, "%s: a differencing disk needs a parent",
					 path);
		ret = disk_open(o.parent, DISK_OPEN_RDONLY, &parent, err);
		if (ret)
			return ret;
		if (parent->ops != ops) {
			ret = disk_fail(err, -EINVAL,
					"%s: the parent %s is a %s image; a %s differencing disk "
					"needs a %s parent (formats cannot be mixed in a chain)",
					path, o.parent, disk_format_name(parent->ops->format),
					disk_format_name(o.format), disk_format_name(o.format));
			goto out;
		}
		int depth = 1;
		for (struct disk *p = parent; p->parent; p = p->parent)
			depth++;
		if (depth >= DISK_MAX_CHAIN) {
			ret = disk_fail(err, -ELOOP,
					"%s: the parent %s heads a chain of %d images; a child "
					"would make it deeper than %d", path, o.parent, depth,
					DISK_MAX_CHAIN);
			goto out;
		}
		if (!o.size)
			o.size = parent->size;
		if (o.size != parent->size) {
			ret = disk_fail(err, -EINVAL,
					"%s: size %llu differs from the parent's (%s, %llu bytes)",
					path, (unsigned long long)o.size, o.parent,
					(unsigned long long)parent->size);
			goto out;
		}
	} else if (o.parent) {
		return disk_fail(err, -EINVAL, "%s: only a differencing disk has a parent", path);
	}
	if (!o.size)
		return disk_fail(err, -EINVAL, "%s: the size must be given (and not 0)", path);
	ret = ops->create(path, &o, parent, err);
	if (ret && ret != -EEXIST)
		unlink(path);
	if (ret && err && !err->msg[0])
		disk_fail(err, ret, "%s: cannot create: %s", path, strerror(-ret));
out:
	disk_close(parent);
	return ret;
}

/* The path to record as a parent: absolute, with symlinks resolved. */
static int absolute_path(const char *path, char out[PATH_MAX])
{
	if (!realpath(path, out))
		return -errno;
	return 0;
}

int disk_set_parent(const char *path, const char *parent_path, struct disk_error *err)
{
	struct disk *d = NULL, *parent = NULL;
	char *stored;
	int ret;

	stored = malloc(PATH_MAX);
	if (!stored)
		return disk_fail(err, -ENOMEM, "%s: out of memory", path);
	ret = disk_open(path, DISK_OPEN_NO_PARENT, &d, err);
	if (ret)
		goto out;
	if (d->type != DISK_TYPE_DIFFERENCING) {
		ret = disk_fail(err, -EINVAL, "%s: not a differencing disk", path);
		goto out;
	}
	if (!d->ops->set_parent) {
		ret = disk_fail(err, -EOPNOTSUPP, "%s: set-parent is not supported for %s", path,
				disk_format_name(d->ops->format));
		goto out;
	}
	ret = disk_open(parent_path, DISK_OPEN_RDONLY, &parent, err);
	if (ret)
		goto out;
	if (parent->ops != d->ops) {
		ret = disk_fail(err, -EINVAL,
				"%s: %s is a %s image; a %s differencing disk needs a %s parent",
				path, parent_path, disk_format_name(parent->ops->format),
				disk_format_name(d->ops->format), disk_format_name(d->ops->format));
		goto out;
	}
	ret = absolute_path(parent_path, stored);
	if (ret) {
		disk_fail(err, ret, "%s: %s", parent_path, strerror(-ret));
		goto out;
	}
	if (d->ops->check_parent) {
		ret = d->ops->check_parent(d, parent, err);
		if (ret)
			goto out;
	}
	ret = d->ops->set_parent(d, parent, stored, err);
	if (!ret)
		ret = d->ops->flush(d);
out:
	disk_close(parent);
	if (d) {
		int r = disk_close(d);
		if (!ret && r)
			ret = disk_fail(err, r, "%s: flush failed: %s", path, strerror(-r));
	}
	free(stored);
	return ret;
}

int disk_resize(const char *path, uint64_t new_size, struct disk_error *err)
{
	struct disk *d = NULL;
	int ret;

	ret = disk_open(path, DISK_OPEN_NO_PARENT, &d, err);
	if (ret)
		return ret;
	if (!d->ops->resize) {
		ret = disk_fail(err, -EOPNOTSUPP, "%s: resizing %s images is not supported", path,
				disk_format_name(d->ops->format));
	} else if (new_size == 0 || new_size % d->sector) {
		ret = disk_fail(err, -EINVAL, "%s: new size %llu is not a positive multiple of "
				"the %u-byte sector", path, (unsigned long long)new_size,
				d->sector);
	} else if (new_size != d->size) {
		ret = d->ops->resize(d, new_size, err);
	}
	int r = disk_close(d);
	if (!ret && r)
		ret = disk_fail(err, r, "%s: flush failed: %s", path, strerror(-r));
	return ret;
}

int disk_check(const char *path, bool repair, char *report, size_t len, struct disk_error *err)
{
	unsigned flags = DISK_OPEN_NO_PARENT | (repair ? 0 : DISK_OPEN_RDONLY);
	struct disk *d = NULL;
	int ret;

	if (report && len)
		report[0] = 0;
	ret = disk_open(path, flags, &d, err);
	if (ret)
		return ret;
	if (d->ops->check)
		ret = d->ops->check(d, repair, report, len);
	if (ret < 0)
		disk_fail(err, ret, "%s: check failed: %s", path, strerror(-ret));
	bool diff = d->type == DISK_TYPE_DIFFERENCING;
	int r = disk_close(d);
	if (ret >= 0 && r)
		ret = disk_fail(err, r, "%s: flush failed: %s", path, strerror(-r));
	if (ret >= 0 && diff) {
		/* the chain is part of the disk: a missing or wrong parent is a
		 * problem check reports (repair cannot fix it; set-parent can).
		 * Opened after closing d, whose lock would refuse this open. */
		struct disk_error perr = { { 0 } };
		struct disk *full = NULL;

		if (disk_open(path, DISK_OPEN_RDONLY, &full, &perr) == 0) {
			disk_close(full);
		} else {
			disk_report_add(report, len, "%s", perr.msg);
			ret++;
		}
	}
	return ret;
}
