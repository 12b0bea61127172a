/* The block map for callers that do their own data I/O: disk_map_read
 * (following a differencing chain down to file data or zeroes),
 * disk_map_write and disk_commit_write. The formats implement the ops;
 * this file checks ranges and walks the chain. */
#include <errno.h>

#include "common/util.h"
#include "disk/disk_impl.h"

static int check_range(const struct disk *d, uint64_t off, uint64_t len)
{
	if (!len || off % d->sector || len % d->sector)
		return -EINVAL;
	if (off > d->size || len > d->size - off)
		return -EINVAL;
	return 0;
}

static int map_one(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext)
{
	return d->ops->map_read ? d->ops->map_read(d, off, len, ext) : d->ops->map(d, off, len, ext);
}

int disk_map_read(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext)
{
	int ret = check_range(d, off, len);

	if (!ret)
		ret = map_one(d, off, len, ext);
	while (!ret && ext->kind == DISK_EXTENT_PARENT) {
		struct disk *p = d->parent;
		uint64_t n = ext->len;

		if (!p)
			return -ENXIO; /* opened with DISK_OPEN_NO_PARENT */
		if (off >= p->size) {
			/* a parent smaller than its child reads as zeroes past its end */
			ext->kind = DISK_EXTENT_ZERO;
			ext->fd = -1;
			ext->file_off = 0;
			return 0;
		}
		d = p;
		ret = map_one(d, off, MIN(n, p->size - off), ext);
	}
	return ret;
}

int disk_map_write(struct disk *d, uint64_t off, uint64_t len, unsigned flags,
		   struct disk_extent *ext, bool *commit)
{
	int ret = check_range(d, off, len);

	*commit = false;
	if (ret)
		return ret;
	if (d->flags & DISK_OPEN_RDONLY)
		return -EROFS;
	if (!d->ops->map_write)
		return -EOPNOTSUPP;
	return d->ops->map_write(d, off, len, flags, ext, commit);
}

int disk_commit_write(struct disk *d, uint64_t off, uint64_t len)
{
	int ret = check_range(d, off, len);

	if (ret)
		return ret;
	if (d->flags & DISK_OPEN_RDONLY)
		return -EROFS;
	return d->ops->commit_write ? d->ops->commit_write(d, off, len) : 0;
}
