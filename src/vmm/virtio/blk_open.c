/* Picks the virtio-blk backend for an image: raw files and block devices
 * go to io_uring; VHDX and VHD images to the disk library. */
#include "vmm/virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/virtio/blk_config.h"
#if BLK_HAVE_DISK_LIB
#include "disk/disk.h"
#endif

static int file_size(int fd, uint64_t *size)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
		return 0;
	}
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
	return -EINVAL;
}

/* Opens a raw image for the io_uring backend. Takes an advisory lock so
 * two workers do not write one image (shared for read-only users). */
static int open_raw(const struct blk_open_opts *o, struct blk_backend **out, char *err,
		    size_t errlen)
{
	int flags = (o->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (o->direct ? O_DIRECT : 0);
	uint64_t size;
	int fd, ret;

	fd = open(o->path, flags);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: cannot open%s: %s", o->path,
			 o->read_only ? " for reading" : " for reading and writing", strerror(-ret));
		return ret;
	}
	if (flock(fd, (o->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: the image is in use by another process (%s)", o->path,
			 strerror(-ret));
		goto err_close;
	}
	ret = file_size(fd, &size);
	if (ret) {
		snprintf(err, errlen, "%s: %s", o->path,
			 ret == -EINVAL ? "not a regular file or block device" : strerror(-ret));
		goto err_close;
	}
	ret = blk_uring_open(fd, size, o, out);
	if (ret) {
		snprintf(err, errlen, "%s: cannot set up io_uring: %s", o->path, strerror(-ret));
		goto err_close;
	}
	return 0;
err_close:
	close(fd);
	return ret;
}

#if BLK_HAVE_DISK_LIB
int blk_backend_open(const struct blk_open_opts *o, struct blk_backend **out, char *err,
		     size_t errlen)
{
	unsigned flags = (o->read_only ? DISK_OPEN_RDONLY : 0) | (o->direct ? DISK_OPEN_DIRECT : 0);
	struct disk_error derr = { { 0 } };
	struct disk_info info;
	struct disk *d;
	int ret;

	ret = disk_open(o->path, flags, &d, &derr);
	if (ret) {
		snprintf(err, errlen, "%s", derr.msg[0] ? derr.msg : strerror(-ret));
		return ret;
	}
	disk_get_info(d, &info);
	if (info.format == DISK_FORMAT_RAW) {
		disk_close(d);
		return open_raw(o, out, err, errlen);
	}
	ret = blk_disk_open(d, o, out);
	if (ret) {
		snprintf(err, errlen, "%s: cannot start the %s backend: %s", o->path,
			 disk_format_name(info.format), strerror(-ret));
		disk_close(d);
	}
	return ret;
}
#else
/* Without the disk library only raw images work; say so for the others
 * rather than showing the guest a VHDX's metadata as its disk. */
static const char *sniff_format(const char *path)
{
	char head[8] = { 0 }, foot[8] = { 0 };
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	const char *fmt = NULL;

	if (fd < 0)
		return NULL;
	if (pread(fd, head, sizeof(head), 0) == sizeof(head) && !memcmp(head, "vhdxfile", 8))
		fmt = "VHDX";
	else if (fstat(fd, &st) == 0 && st.st_size >= 512 &&
		 pread(fd, foot, sizeof(foot), st.st_size - 512) == sizeof(foot) &&
		 !memcmp(foot, "conectix", 8))
		fmt = "VHD";
	close(fd);
	return fmt;
}

int blk_backend_open(const struct blk_open_opts *o, struct blk_backend **out, char *err,
		     size_t errlen)
{
	const char *fmt = sniff_format(o->path);

	if (fmt) {
		snprintf(err, errlen, "%s: a %s image, but this build has no disk library", o->path,
			 fmt);
		return -ENOTSUP;
	}
	return open_raw(o, out, err, errlen);
}
#endif
