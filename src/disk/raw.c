/* Raw images: the file (or block device) is the disk, byte for byte.
 * No metadata, so no lock: every call is a plain positional syscall and
 * any number of threads may use it at once. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "disk/disk_impl.h"

static bool raw_probe(const uint8_t *head, size_t head_len, const uint8_t tail[512],
		      uint64_t file_size)
{
	return true; /* anything that is nothing else */
}

static int raw_open(struct disk *d, struct disk_error *err)
{
	struct stat st;

	if (fstat(d->fd, &st) < 0)
		return disk_fail(err, -errno, "%s: cannot stat: %s", d->path, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(d->fd, 0, SEEK_END);
		d->size = end > 0 ? (uint64_t)end : 0;
	} else {
		d->size = (uint64_t)st.st_size;
	}
	/* A tail that is not a whole sector cannot be addressed by the guest. */
	d->size = ALIGN_DOWN(d->size, 512ULL);
	d->sector = 512;
	d->type = DISK_TYPE_FIXED;
	d->priv = NULL;
	return 0;
}

static void raw_close(struct disk *d)
{
}

static int raw_pread(struct disk *d, void *buf, size_t len, uint64_t off)
{
	return pread_full(d->fd, buf, len, (off_t)off);
}

static int raw_pwrite(struct disk *d, const void *buf, size_t len, uint64_t off)
{
	return pwrite_full(d->fd, buf, len, (off_t)off);
}

static int raw_flush(struct disk *d)
{
	if (fdatasync(d->fd) < 0)
		return -errno;
	return 0;
}

static bool fallocate_unsupported(int e)
{
	return e == EOPNOTSUPP || e == ENOSYS || e == EINVAL || e == ENODEV;
}

/* Zeroes a range keeping its allocation; plain writes when the file system
 * cannot zero ranges. */
static int raw_zero_range(struct disk *d, uint64_t off, uint64_t len)
{
	if (fallocate(d->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) == 0)
		return 0;
	if (!fallocate_unsupported(errno))
		return -errno;
	return disk_write_zero_buffer(d, off, len);
}

static int raw_discard(struct disk *d, uint64_t off, uint64_t len)
{
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len) == 0)
		return 0;
	if (!fallocate_unsupported(errno))
		return -errno;
	/* The contract says later reads return zeroes: keep it without holes. */
	return raw_zero_range(d, off, len);
}

static int raw_write_zeroes(struct disk *d, uint64_t off, uint64_t len, bool may_unmap)
{
	if (may_unmap)
		return raw_discard(d, off, len);
	return raw_zero_range(d, off, len);
}

static int raw_map(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext)
{
	ext->kind = DISK_EXTENT_DATA;
	ext->fd = d->fd;
	ext->file_off = off;
	ext->len = len;
	return 0;
}

/* Holes (SEEK_HOLE) are unallocated; a file system without hole
 * reporting makes everything look allocated, which is the safe answer. */
static int raw_block_status(struct disk *d, uint64_t off, uint64_t len, bool *allocated,
			    uint64_t *run_len)
{
	uint64_t end = off + len;
	off_t data, hole;

	data = lseek(d->fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) { /* only a hole from off to EOF */
			*allocated = false;
			*run_len = len;
			return 0;
		}
		*allocated = true;
		*run_len = len;
		return 0;
	}
	if ((uint64_t)data > off) {
		*allocated = false;
		*run_len = MIN((uint64_t)data, end) - off;
		return 0;
	}
	hole = lseek(d->fd, (off_t)off, SEEK_HOLE);
	if (hole < 0 || (uint64_t)hole <= off) {
		*allocated = true;
		*run_len = len;
		return 0;
	}
	*allocated = true;
	*run_len = MIN((uint64_t)hole, end) - off;
	return 0;
}

static void raw_info(struct disk *d, struct disk_info *info)
{
	struct stat st;

	info->block_size = 0;
	info->logical_sector = 512;
	info->physical_sector = 512;
	if (fstat(d->fd, &st) == 0 && S_ISREG(st.st_mode))
		info->allocated = MIN((uint64_t)st.st_blocks * 512, d->size);
	else
		info->allocated = d->size;
}

static int raw_create(const char *path, const struct disk_create_opts *opts, struct disk *parent,
		      struct disk_error *err)
{
	int fd, ret = 0;

	if (opts->type == DISK_TYPE_DIFFERENCING)
		return disk_fail(err, -EINVAL, "%s: raw images cannot be differencing disks",
				 path);
	if (opts->logical_sector && opts->logical_sector != 512)
		return disk_fail(err, -EINVAL, "%s: raw images have 512-byte sectors (asked for %u)",
				 path, opts->logical_sector);
	if (opts->size % 512)
		return disk_fail(err, -EINVAL, "%s: size %llu is not a multiple of 512", path,
				 (unsigned long long)opts->size);
	if (opts->size > (uint64_t)INT64_MAX)
		return disk_fail(err, -EFBIG, "%s: size too large", path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return disk_fail(err, -errno, "%s: cannot create: %s", path, strerror(errno));
	if (ftruncate(fd, (off_t)opts->size) < 0) {
		ret = disk_fail(err, -errno, "%s: cannot set the size: %s", path, strerror(errno));
		goto out;
	}
	if (opts->type == DISK_TYPE_FIXED && opts->size &&
	    fallocate(fd, 0, 0, (off_t)opts->size) < 0 && !fallocate_unsupported(errno)) {
		ret = disk_fail(err, -errno, "%s: cannot allocate %llu bytes: %s", path,
				(unsigned long long)opts->size, strerror(errno));
		goto out;
	}
	if (fsync(fd) < 0)
		ret = disk_fail(err, -errno, "%s: fsync: %s", path, strerror(errno));
out:
	if (close(fd) < 0 && !ret)
		ret = disk_fail(err, -errno, "%s: close: %s", path, strerror(errno));
	return ret;
}

/* Offset of the first non-zero byte in [off, end), or end. Only the
 * allocated runs are read. */
static int raw_first_data(struct disk *d, uint64_t off, uint64_t end, uint64_t *at)
{
	size_t chunk = 1024 * 1024;
	uint8_t *buf = malloc(chunk);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	*at = end;
	while (off < end && !ret) {
		uint64_t run;
		bool alloc;

		raw_block_status(d, off, end - off, &alloc, &run);
		for (uint64_t p = off; alloc && p < off + run && !ret; p += chunk) {
			size_t n = (size_t)MIN((uint64_t)chunk, off + run - p);
			ret = pread_full(d->fd, buf, n, (off_t)p);
			for (size_t i = 0; !ret && i < n; i++) {
				if (buf[i]) {
					*at = p + i;
					goto out;
				}
			}
		}
		off += run;
	}
out:
	free(buf);
	return ret;
}

static int raw_resize(struct disk *d, uint64_t new_size, struct disk_error *err)
{
	if (new_size > (uint64_t)INT64_MAX)
		return disk_fail(err, -EFBIG, "%s: size too large", d->path);
	if (new_size < d->size) {
		/* Shrinking is refused while the cut tail holds data. */
		uint64_t at;
		int ret = raw_first_data(d, new_size, d->size, &at);

		if (ret)
			return disk_fail(err, ret, "%s: %s", d->path, strerror(-ret));
		if (at < d->size)
			return disk_fail(err, -ENOTEMPTY,
					 "%s: cannot shrink to %llu bytes: the part cut off "
					 "holds data (at offset %llu)", d->path,
					 (unsigned long long)new_size, (unsigned long long)at);
	}
	if (ftruncate(d->fd, (off_t)new_size) < 0)
		return disk_fail(err, -errno, "%s: cannot resize: %s", d->path, strerror(errno));
	d->size = new_size;
	return 0;
}

/* A raw image has no metadata to damage; what check can see is a size that
 * is not a whole number of sectors, which no tool that makes raw images
 * writes: the tail is unreachable by the guest, and the file was most
 * likely cut short (or is not a disk image at all). */
static int raw_check(struct disk *d, bool repair, char *report, size_t len)
{
	struct stat st;

	if (fstat(d->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size % 512 == 0)
		return 0;
	disk_report_add(report, len, "the file's size (%lld bytes) is not a multiple of 512: "
			"its last %lld bytes are not part of the disk; was it cut short?",
			(long long)st.st_size, (long long)(st.st_size % 512));
	return 1;
}

const struct disk_ops disk_raw_ops = {
	.format = DISK_FORMAT_RAW,
	.probe = raw_probe,
	.open = raw_open,
	.close = raw_close,
	.pread = raw_pread,
	.pwrite = raw_pwrite,
	.flush = raw_flush,
	.discard = raw_discard,
	.write_zeroes = raw_write_zeroes,
	.map = raw_map,
	.block_status = raw_block_status,
	.info = raw_info,
	.check = raw_check,
	.create = raw_create,
	.resize = raw_resize,
};
