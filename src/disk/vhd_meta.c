/* VHD maintenance: creating images, parent locators and linkage,
 * resizing and checking. The I/O side is in vhd.c. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/util.h"
#include "disk/disk_impl.h"
#include "disk/vhd.h"

/* ---- text: UTF-16 <-> UTF-8 ---- */

static size_t put_utf8(char *out, size_t cap, size_t o, uint32_t c)
{
	char tmp[4];
	size_t n;

	if (c < 0x80) {
		tmp[0] = (char)c;
		n = 1;
	} else if (c < 0x800) {
		tmp[0] = (char)(0xc0 | c >> 6);
		tmp[1] = (char)(0x80 | (c & 0x3f));
		n = 2;
	} else if (c < 0x10000) {
		tmp[0] = (char)(0xe0 | c >> 12);
		tmp[1] = (char)(0x80 | ((c >> 6) & 0x3f));
		tmp[2] = (char)(0x80 | (c & 0x3f));
		n = 3;
	} else {
		tmp[0] = (char)(0xf0 | c >> 18);
		tmp[1] = (char)(0x80 | ((c >> 12) & 0x3f));
		tmp[2] = (char)(0x80 | ((c >> 6) & 0x3f));
		tmp[3] = (char)(0x80 | (c & 0x3f));
		n = 4;
	}
	if (o + n >= cap)
		return 0;
	memcpy(out + o, tmp, n);
	return n;
}

/* UTF-16 (le or be) to NUL-terminated UTF-8; stops at a NUL unit.
 * -EINVAL for bad surrogates or a result that does not fit. */
static int utf16_to_utf8(const uint8_t *src, size_t bytes, bool be, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i + 1 < bytes; i += 2) {
		uint32_t c = be ? (uint32_t)(src[i] << 8 | src[i + 1])
				: (uint32_t)(src[i] | src[i + 1] << 8);
		size_t n;

		if (!c)
			break;
		if (c >= 0xd800 && c < 0xdc00) {
			uint32_t lo;
			if (i + 3 >= bytes)
				return -EINVAL;
			lo = be ? (uint32_t)(src[i + 2] << 8 | src[i + 3])
				: (uint32_t)(src[i + 2] | src[i + 3] << 8);
			if (lo < 0xdc00 || lo >= 0xe000)
				return -EINVAL;
			c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
			i += 2;
		} else if (c >= 0xdc00 && c < 0xe000) {
			return -EINVAL;
		}
		n = put_utf8(out, cap, o, c);
		if (!n)
			return -EINVAL;
		o += n;
	}
	out[o] = 0;
	return 0;
}

/* UTF-8 to UTF-16 (le or be), no terminator; -EINVAL on bad UTF-8 or
 * when out (cap bytes) is too small. */
static int utf8_to_utf16(const char *s, bool be, uint8_t *out, size_t cap, size_t *len)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t o = 0;

	while (*p) {
		uint32_t c;
		int extra;

		if (*p < 0x80) {
			c = *p;
			extra = 0;
		} else if ((*p & 0xe0) == 0xc0) {
			c = *p & 0x1f;
			extra = 1;
		} else if ((*p & 0xf0) == 0xe0) {
			c = *p & 0x0f;
			extra = 2;
		} else if ((*p & 0xf8) == 0xf0) {
			c = *p & 0x07;
			extra = 3;
		} else {
			return -EINVAL;
		}
		p++;
		for (int k = 0; k < extra; k++, p++) {
			if ((*p & 0xc0) != 0x80)
				return -EINVAL;
			c = c << 6 | (*p & 0x3f);
		}
		uint16_t units[2];
		int nu = 1;
		if (c >= 0x10000) {
			c -= 0x10000;
			units[0] = (uint16_t)(0xd800 + (c >> 10));
			units[1] = (uint16_t)(0xdc00 + (c & 0x3ff));
			nu = 2;
		} else {
			units[0] = (uint16_t)c;
		}
		for (int k = 0; k < nu; k++) {
			if (o + 2 > cap)
				return -EINVAL;
			out[o + (be ? 0 : 1)] = (uint8_t)(units[k] >> 8);
			out[o + (be ? 1 : 0)] = (uint8_t)units[k];
			o += 2;
		}
	}
	*len = o;
	return 0;
}

/* ---- parent locators ---- */

/* The path a locator holds, as UTF-8 with '/' separators. */
static int locator_path(struct disk *d, const struct vhd_locator *l, char *out, size_t cap)
{
	struct vhd *v = d->priv;
	bool windows = true;
	uint8_t *raw;
	int ret;

	if (!l->length || l->length > VHD_LOCATOR_MAX)
		return -EINVAL;
	raw = calloc(1, l->length + 2);
	if (!raw)
		return -ENOMEM;
	ret = pread_full(v->mfd, raw, l->length, (off_t)l->offset);
	if (ret)
		goto out;
	switch (l->code) {
	case VHD_PLAT_W2RU:
	case VHD_PLAT_W2KU:
		ret = utf16_to_utf8(raw, l->length, false, out, cap);
		break;
	case VHD_PLAT_WI2R:
	case VHD_PLAT_WI2K:
		snprintf(out, cap, "%s", (const char *)raw);
		break;
	case VHD_PLAT_MACX: {
		const char *p = (const char *)raw;
		windows = false;
		if (!strncmp(p, "file://", 7))
			p += 7;
		if (!strncmp(p, "localhost", 9))
			p += 9;
		snprintf(out, cap, "%s", p);
		break;
	}
	default: /* "Mac " aliases and unknown codes carry nothing usable */
		ret = -EINVAL;
		goto out;
	}
	if (!ret && windows)
		for (char *c = out; *c; c++)
			if (*c == '\\')
				*c = '/';
	if (!ret && !out[0])
		ret = -EINVAL;
out:
	free(raw);
	return ret;
}

static bool locator_is_relative(uint32_t code)
{
	return code == VHD_PLAT_W2RU || code == VHD_PLAT_WI2R;
}

static int add_candidate(char (*paths)[PATH_MAX], int n, int max, const char *dir,
			 const char *p)
{
	char buf[PATH_MAX];

	if (n >= max || !p[0])
		return n;
	if (dir) {
		while (p[0] == '.' && p[1] == '/')
			p += 2;
		if (snprintf(buf, sizeof(buf), "%s/%s", dir, p) >= (int)sizeof(buf))
			return n;
	} else {
		snprintf(buf, sizeof(buf), "%s", p);
	}
	for (int i = 0; i < n; i++)
		if (!strcmp(paths[i], buf))
			return n;
	memcpy(paths[n], buf, sizeof(buf));
	return n + 1;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

/* Relative locators first (resolved against the child's folder), then
 * absolute POSIX paths, then the parent's file name next to the child:
 * what Hyper-V does, plus the last for disks moved together. */
int vhd_parent_candidates(struct disk *d, char (*paths)[PATH_MAX], int max)
{
	struct vhd *v = d->priv;
	char dirbuf[PATH_MAX], *dir, *p;
	char names[VHD_MAX_LOCATORS + 1][PATH_MAX / 4];
	int n = 0, nn = 0;

	p = malloc(PATH_MAX);
	if (!p)
		return 0;
	snprintf(dirbuf, sizeof(dirbuf), "%s", d->path);
	dir = dirname(dirbuf);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
			const struct vhd_locator *l = &v->hdr.loc[i];

			if (!l->code || locator_is_relative(l->code) != (pass == 0))
				continue;
			if (locator_path(d, l, p, PATH_MAX))
				continue;
			if (pass == 0 && p[0] != '/')
				n = add_candidate(paths, n, max, dir, p);
			else if (pass == 1 && p[0] == '/' && p[1] != '/')
				n = add_candidate(paths, n, max, NULL, p);
			snprintf(names[nn++], sizeof(names[0]), "%s", base_name(p));
		}
	}
	if (!utf16_to_utf8(v->hdr.parent_name, sizeof(v->hdr.parent_name), true, p, PATH_MAX)) {
		for (char *c = p; *c; c++)
			if (*c == '\\')
				*c = '/';
		snprintf(names[nn++], sizeof(names[0]), "%s", base_name(p));
	}
	for (int i = 0; i < nn; i++)
		if (strcmp(names[i], ".") && strcmp(names[i], ".."))
			n = add_candidate(paths, n, max, dir, names[i]);
	free(p);
	return n;
}

int vhd_check_parent(struct disk *d, struct disk *parent, struct disk_error *err)
{
	struct vhd *v = d->priv, *pv = parent->priv;
	struct guid want, have;
	char ws[GUID_STR_LEN], hs[GUID_STR_LEN];

	guid_from_be(&want, v->hdr.parent_id);
	guid_from_be(&have, pv->footer.unique_id);
	if (!guid_equal(&want, &have))
		return disk_fail(err, -EINVAL,
				 "%s: parent %s does not match: the child was made from the disk "
				 "with id %s, but %s has id %s", d->path, parent->path,
				 guid_to_string(&want, ws), parent->path,
				 guid_to_string(&have, hs));
	if (v->hdr.parent_timestamp != pv->footer.timestamp)
		return disk_fail(err, -EINVAL,
				 "%s: parent %s (id %s) does not match: its time stamp %u differs "
				 "from the %u the child recorded (the parent was changed after the "
				 "child was made)", d->path, parent->path,
				 guid_to_string(&have, hs), pv->footer.timestamp,
				 v->hdr.parent_timestamp);
	return 0;
}

/* ---- building locators and the header's parent fields ---- */

/* The relative path from directory from to file to (both absolute, no
 * symlinks), with Windows separators as W2ru wants: ".\x.vhd",
 * "..\dir\x.vhd". */
static int relative_path(const char *from, const char *to, char *out, size_t cap)
{
	size_t common = 0, i = 0, o = 0;
	int ups = 0;

	/* longest common prefix that ends at a separator */
	while (from[i] && to[i] && from[i] == to[i]) {
		if (from[i] == '/')
			common = i;
		i++;
	}
	if (!from[i] && to[i] == '/')
		common = i;
	for (const char *c = from + common; *c; c++)
		if (*c == '/' && c[1])
			ups++;
	if (!strcmp(from, "/"))
		ups = 0;
	if (ups == 0)
		o = (size_t)snprintf(out, cap, ".");
	for (int k = 0; k < ups && o < cap; k++)
		o += (size_t)snprintf(out + o, cap - o, "%s..", k ? "\\" : "");
	if (o >= cap || o + strlen(to + common) + 1 > cap)
		return -ENAMETOOLONG;
	for (const char *c = to + common; *c; c++)
		out[o++] = *c == '/' ? '\\' : *c;
	out[o] = 0;
	return 0;
}

/* Fills the parent fields of h (id, time stamp, name, two locators whose
 * data starts at file offset base) and the locator data in blob. */
static int build_parent(const char *child, struct disk *parent, struct vhd_header *h,
			uint64_t base, uint8_t **blob, size_t *blob_len, struct disk_error *err)
{
	struct vhd *pv = parent->priv;
	char *abs_parent = NULL, *abs_dir = NULL, *rel = NULL, *tmp = NULL;
	uint8_t *rel16 = NULL, *abs16 = NULL;
	size_t rel_len, abs_len, len16 = 2 * PATH_MAX;
	int ret;

	abs_parent = realpath(parent->path, NULL);
	tmp = strdup(child);
	if (!abs_parent || !tmp) {
		ret = disk_fail(err, -errno, "%s: cannot resolve the parent path %s: %s", child,
				parent->path, strerror(errno));
		goto out;
	}
	abs_dir = realpath(dirname(tmp), NULL);
	rel = malloc(PATH_MAX);
	rel16 = malloc(len16);
	abs16 = malloc(len16);
	if (!abs_dir || !rel || !rel16 || !abs16) {
		ret = disk_fail(err, -errno ? -errno : -ENOMEM, "%s: cannot resolve its folder: %s",
				child, strerror(errno));
		goto out;
	}
	ret = relative_path(abs_dir, abs_parent, rel, PATH_MAX);
	if (!ret)
		ret = utf8_to_utf16(rel, false, rel16, len16, &rel_len);
	if (!ret)
		ret = utf8_to_utf16(abs_parent, false, abs16, len16, &abs_len);
	if (ret) {
		disk_fail(err, -EINVAL, "%s: the parent path %s cannot be stored", child,
			  abs_parent);
		goto out;
	}
	memcpy(h->parent_id, pv->footer.unique_id, 16);
	h->parent_timestamp = pv->footer.timestamp;
	memset(h->parent_name, 0, sizeof(h->parent_name));
	if (utf8_to_utf16(abs_parent, true, h->parent_name, sizeof(h->parent_name) - 2,
			  &(size_t){ 0 }))
		utf8_to_utf16(base_name(abs_parent), true, h->parent_name,
			      sizeof(h->parent_name) - 2, &(size_t){ 0 });
	memset(h->loc, 0, sizeof(h->loc));
	size_t rel_space = ALIGN_UP(rel_len, (size_t)VHD_SECTOR);
	size_t abs_space = ALIGN_UP(abs_len, (size_t)VHD_SECTOR);
	h->loc[0] = (struct vhd_locator){ VHD_PLAT_W2RU, (uint32_t)rel_space, (uint32_t)rel_len,
					  base };
	h->loc[1] = (struct vhd_locator){ VHD_PLAT_W2KU, (uint32_t)abs_space, (uint32_t)abs_len,
					  base + rel_space };
	*blob_len = rel_space + abs_space;
	*blob = calloc(1, *blob_len);
	if (!*blob) {
		ret = disk_fail(err, -ENOMEM, "%s: out of memory", child);
		goto out;
	}
	memcpy(*blob, rel16, rel_len);
	memcpy(*blob + rel_space, abs16, abs_len);
	ret = 0;
out:
	free(abs_parent);
	free(abs_dir);
	free(rel);
	free(tmp);
	free(rel16);
	free(abs16);
	return ret;
}

/* ---- create ---- */

static uint32_t vhd_now(void)
{
	time_t t = time(NULL);

	return t > VHD_EPOCH_OFFSET ? (uint32_t)(t - VHD_EPOCH_OFFSET) : 0;
}

static int make_footer(struct vhd_footer *f, uint32_t type, uint64_t size)
{
	struct guid id;
	int ret = guid_generate(&id);

	if (ret)
		return ret;
	memset(f, 0, sizeof(*f));
	memcpy(f->cookie, "conectix", 8);
	f->features = VHD_FEATURES_RESERVED;
	f->version = VHD_VERSION;
	f->data_offset = type == VHD_TYPE_FIXED ? ~0ULL : VHD_FOOTER_SIZE;
	f->timestamp = vhd_now();
	/* "win " makes Hyper-V, QEMU and others take current_size as the size
	 * rather than the CHS geometry, which cannot express every size. */
	memcpy(f->creator_app, "win ", 4);
	f->creator_version = 0x000a0000;
	f->creator_os = 0x5769326b; /* "Wi2k" */
	f->original_size = size;
	f->current_size = size;
	vhd_chs_geometry(size / VHD_SECTOR, &f->cylinders, &f->heads, &f->sectors_per_track);
	f->disk_type = type;
	guid_to_be(&id, f->unique_id);
	return 0;
}

static int create_fixed(int fd, const char *path, const struct vhd_footer *f,
			struct disk_error *err)
{
	uint8_t raw[VHD_FOOTER_SIZE];

	vhd_footer_encode(f, raw);
	if (ftruncate(fd, (off_t)f->current_size) < 0)
		return disk_fail(err, -errno, "%s: cannot size the file: %s", path,
				 strerror(errno));
	if (fallocate(fd, 0, 0, (off_t)f->current_size) < 0 && errno != EOPNOTSUPP &&
	    errno != ENOSYS)
		return disk_fail(err, -errno, "%s: cannot allocate %llu bytes: %s", path,
				 (unsigned long long)f->current_size, strerror(errno));
	int ret = pwrite_full(fd, raw, sizeof(raw), (off_t)f->current_size);
	if (ret)
		return disk_fail(err, ret, "%s: cannot write the footer: %s", path,
				 strerror(-ret));
	return 0;
}

static int create_dynamic(int fd, const char *path, const struct vhd_footer *f,
			  uint32_t block_size, struct disk *parent, struct disk_error *err)
{
	uint64_t entries = (f->current_size + block_size - 1) / block_size;
	uint64_t bat_bytes = ALIGN_UP(entries * 4, (uint64_t)VHD_SECTOR);
	uint64_t table_off = VHD_FOOTER_SIZE + VHD_HEADER_SIZE;
	uint8_t fraw[VHD_FOOTER_SIZE], hraw[VHD_HEADER_SIZE];
	struct vhd_header h = { 0 };
	uint8_t *bat = NULL, *blob = NULL;
	size_t blob_len = 0;
	uint64_t end;
	int ret;

	memcpy(h.cookie, "cxsparse", 8);
	h.data_offset = ~0ULL;
	h.table_offset = table_off;
	h.version = VHD_VERSION;
	h.max_entries = (uint32_t)entries;
	h.block_size = block_size;
	end = table_off + bat_bytes;
	if (parent) {
		ret = build_parent(path, parent, &h, end, &blob, &blob_len, err);
		if (ret)
			return ret;
		end += blob_len;
	}
	bat = malloc(bat_bytes);
	if (!bat) {
		ret = disk_fail(err, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	memset(bat, 0xff, bat_bytes);
	vhd_footer_encode(f, fraw);
	vhd_header_encode(&h, hraw);
	ret = pwrite_full(fd, fraw, sizeof(fraw), 0);
	if (!ret)
		ret = pwrite_full(fd, hraw, sizeof(hraw), VHD_FOOTER_SIZE);
	if (!ret)
		ret = pwrite_full(fd, bat, bat_bytes, (off_t)table_off);
	if (!ret && blob_len)
		ret = pwrite_full(fd, blob, blob_len, (off_t)(table_off + bat_bytes));
	if (!ret)
		ret = pwrite_full(fd, fraw, sizeof(fraw), (off_t)end);
	if (ret)
		disk_fail(err, ret, "%s: cannot write: %s", path, strerror(-ret));
out:
	free(bat);
	free(blob);
	return ret;
}

int vhd_create(const char *path, const struct disk_create_opts *opts, struct disk *parent,
	       struct disk_error *err)
{
	uint32_t block_size = opts->block_size ? opts->block_size : VHD_DEFAULT_BLOCK;
	uint32_t type = opts->type == DISK_TYPE_FIXED	  ? VHD_TYPE_FIXED
			: opts->type == DISK_TYPE_DYNAMIC ? VHD_TYPE_DYNAMIC
							  : VHD_TYPE_DIFF;
	struct vhd_footer f;
	int fd, ret;

	if (opts->logical_sector && opts->logical_sector != VHD_SECTOR)
		return disk_fail(err, -EINVAL, "%s: VHD has 512-byte logical sectors (asked for "
				 "%u); use VHDX for 4096", path, opts->logical_sector);
	if (opts->physical_sector && opts->physical_sector != 512 &&
	    opts->physical_sector != 4096)
		return disk_fail(err, -EINVAL, "%s: physical sector size must be 512 or 4096",
				 path);
	if (opts->size % VHD_SECTOR)
		return disk_fail(err, -EINVAL, "%s: size %llu is not a multiple of 512", path,
				 (unsigned long long)opts->size);
	if (opts->size > VHD_MAX_SIZE)
		return disk_fail(err, -EFBIG, "%s: size %llu is larger than the VHD limit of "
				 "2040 GiB (use VHDX)", path, (unsigned long long)opts->size);
	if (block_size < 4096 || block_size > VHD_MAX_BLOCK || (block_size & (block_size - 1)))
		return disk_fail(err, -EINVAL, "%s: VHD block size %u must be a power of two from "
				 "4 KiB to 256 MiB", path, block_size);
	if (parent && parent->ops->format != DISK_FORMAT_VHD)
		return disk_fail(err, -EINVAL, "%s: a VHD differencing disk needs a VHD parent",
				 path);
	ret = make_footer(&f, type, opts->size);
	if (ret)
		return disk_fail(err, ret, "%s: cannot make a disk id: %s", path, strerror(-ret));
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return disk_fail(err, -errno, "%s: cannot create: %s", path, strerror(errno));
	if (type == VHD_TYPE_FIXED)
		ret = create_fixed(fd, path, &f, err);
	else
		ret = create_dynamic(fd, path, &f, block_size, parent, err);
	if (!ret && fsync(fd) < 0)
		ret = disk_fail(err, -errno, "%s: fsync: %s", path, strerror(errno));
	if (close(fd) < 0 && !ret)
		ret = disk_fail(err, -errno, "%s: close: %s", path, strerror(errno));
	if (!ret)
		fsync_parent_dir(path);
	return ret;
}

/* ---- set-parent ---- */

/* Writes buf at the end of the file (where the next block would go) and
 * moves the footer past it. Returns the offset used. */
static int append_meta(struct vhd *v, const void *buf, size_t len, uint64_t *at)
{
	uint64_t off = v->free_off, end = off + ALIGN_UP(len, (size_t)VHD_SECTOR);
	int ret;

	ret = pwrite_full(v->mfd, v->footer_raw, VHD_FOOTER_SIZE, (off_t)end);
	if (!ret)
		ret = pwrite_full(v->mfd, buf, len, (off_t)off);
	if (ret)
		return ret;
	v->free_off = end;
	v->footer_pos = end;
	v->footer_recovered = false;
	*at = off;
	return 0;
}

static int write_header(struct vhd *v)
{
	int ret;

	vhd_header_encode(&v->hdr, v->hdr_raw);
	ret = pwrite_full(v->mfd, v->hdr_raw, VHD_HEADER_SIZE, (off_t)v->hdr_off);
	if (!ret && fdatasync(v->mfd) < 0)
		ret = -errno;
	return ret;
}

/* New locator data goes to fresh space and becomes live with one header
 * write, so a crash leaves either the old or the new parent recorded. */
int vhd_set_parent(struct disk *d, struct disk *parent, const char *stored_path,
		   struct disk_error *err)
{
	struct vhd *v = d->priv;
	struct vhd_header h = v->hdr;
	uint8_t *blob = NULL;
	size_t blob_len;
	uint64_t at;
	int ret;

	(void)stored_path; /* build_parent resolves parent->path itself */
	pthread_mutex_lock(&v->lock);
	ret = build_parent(d->path, parent, &h, v->free_off, &blob, &blob_len, err);
	if (ret)
		goto out;
	ret = append_meta(v, blob, blob_len, &at);
	if (!ret && fdatasync(v->mfd) < 0)
		ret = -errno;
	if (ret) {
		disk_fail(err, ret, "%s: cannot write the parent locators: %s", d->path,
			  strerror(-ret));
		goto out;
	}
	v->hdr = h;
	ret = write_header(v);
	if (ret)
		disk_fail(err, ret, "%s: cannot write the header: %s", d->path, strerror(-ret));
out:
	pthread_mutex_unlock(&v->lock);
	free(blob);
	return ret;
}

/* ---- resize ---- */

/* Fails with -ENOTEMPTY if [from, to) holds anything but zeroes in this
 * image. */
static int range_unused(struct disk *d, uint64_t from, uint64_t to, struct disk_error *err)
{
	size_t chunk = 1024 * 1024;
	uint8_t *buf = malloc(chunk);
	int ret = 0;

	if (!buf)
		return disk_fail(err, -ENOMEM, "%s: out of memory", d->path);
	while (from < to && !ret) {
		uint64_t run;
		bool alloc;

		ret = d->ops->block_status(d, from, to - from, &alloc, &run);
		if (ret || !run)
			break;
		for (uint64_t p = from; alloc && p < from + run && !ret; p += chunk) {
			size_t n = (size_t)MIN((uint64_t)chunk, from + run - p);
			ret = d->ops->pread(d, buf, n, p);
			for (size_t i = 0; !ret && i < n; i++)
				if (buf[i])
					ret = disk_fail(err, -ENOTEMPTY,
							"%s: cannot shrink: the part cut off holds "
							"data (at offset %llu)", d->path,
							(unsigned long long)(p + i));
		}
		from += run;
	}
	free(buf);
	return ret;
}

static void set_size(struct vhd *v, uint64_t size)
{
	v->footer.current_size = size;
	vhd_chs_geometry(size / VHD_SECTOR, &v->footer.cylinders, &v->footer.heads,
			 &v->footer.sectors_per_track);
	vhd_footer_encode(&v->footer, v->footer_raw);
}

static int resize_fixed(struct disk *d, struct vhd *v, uint64_t size, struct disk_error *err)
{
	static const uint8_t zero[VHD_FOOTER_SIZE];
	uint64_t old = v->footer_pos;
	int ret;

	set_size(v, size);
	/* the new footer first: the file always ends in a valid one */
	ret = pwrite_full(v->mfd, v->footer_raw, VHD_FOOTER_SIZE, (off_t)size);
	if (!ret && fdatasync(v->mfd) < 0)
		ret = -errno;
	if (!ret && size > old)
		ret = pwrite_full(v->mfd, zero, sizeof(zero), (off_t)old);
	if (!ret && size < old && ftruncate(v->mfd, (off_t)(size + VHD_FOOTER_SIZE)) < 0)
		ret = -errno;
	if (!ret && fdatasync(v->mfd) < 0)
		ret = -errno;
	if (ret)
		return disk_fail(err, ret, "%s: resize failed: %s", d->path, strerror(-ret));
	v->footer_pos = v->data_end = size;
	d->size = size;
	return 0;
}

/* Grows the BAT in place when nothing but the footer follows it. */
static int grow_bat(struct disk *d, struct vhd *v, uint32_t entries, struct disk_error *err)
{
	uint64_t old_bytes = ALIGN_UP((uint64_t)v->entries * 4, (uint64_t)VHD_SECTOR);
	uint64_t new_bytes = ALIGN_UP((uint64_t)entries * 4, (uint64_t)VHD_SECTOR);
	uint64_t bat_end = v->hdr.table_offset + new_bytes, limit = v->free_off;
	uint32_t *bat;
	bool *dirty;
	struct vhd_bitmap *bms = NULL;
	uint8_t *fill;
	int ret;

	for (uint32_t i = 0; i < v->entries; i++)
		if (v->bat[i] != VHD_BAT_UNUSED)
			limit = MIN(limit, (uint64_t)v->bat[i] * VHD_SECTOR);
	for (int i = 0; i < VHD_MAX_LOCATORS; i++)
		if (v->hdr.loc[i].code && v->hdr.loc[i].length &&
		    v->hdr.loc[i].offset >= v->hdr.table_offset)
			limit = MIN(limit, v->hdr.loc[i].offset);
	if (v->hdr_off > v->hdr.table_offset)
		limit = MIN(limit, v->hdr_off);
	if (limit < v->free_off && bat_end > limit)
		return disk_fail(err, -ENOSPC,
				 "%s: cannot grow: the block table has room for %u blocks "
				 "(%llu bytes) and data follows it; convert the disk to a new "
				 "file of the larger size instead", d->path,
				 (unsigned)(old_bytes / 4),
				 (unsigned long long)(old_bytes / 4 * v->block_size));
	bat = realloc(v->bat, (size_t)entries * sizeof(*bat));
	if (bat)
		v->bat = bat;
	dirty = calloc(entries / 128 + 1, sizeof(*dirty));
	if (d->type == DISK_TYPE_DIFFERENCING)
		bms = calloc(entries, sizeof(*bms));
	fill = malloc(new_bytes - v->entries * 4ULL);
	if (!bat || !dirty || (d->type == DISK_TYPE_DIFFERENCING && !bms) || !fill) {
		free(dirty);
		free(bms);
		free(fill);
		return disk_fail(err, -ENOMEM, "%s: out of memory", d->path);
	}
	memset(fill, 0xff, new_bytes - v->entries * 4ULL);
	if (bat_end > v->free_off) {
		uint64_t at;
		/* the footer moves past the grown table */
		v->free_off = bat_end - 0; /* append_meta writes nothing at free_off */
		ret = append_meta(v, "", 0, &at);
	} else {
		ret = 0;
	}
	if (!ret)
		ret = pwrite_full(v->mfd, fill, new_bytes - v->entries * 4ULL,
				  (off_t)(v->hdr.table_offset + v->entries * 4ULL));
	if (!ret && fdatasync(v->mfd) < 0)
		ret = -errno;
	free(fill);
	if (ret) {
		free(dirty);
		free(bms);
		return disk_fail(err, ret, "%s: cannot grow the block table: %s", d->path,
				 strerror(-ret));
	}
	for (uint32_t i = v->entries; i < entries; i++)
		v->bat[i] = VHD_BAT_UNUSED;
	memcpy(dirty, v->bat_dirty, (v->entries / 128 + 1) * sizeof(*dirty));
	free(v->bat_dirty);
	v->bat_dirty = dirty;
	if (bms) {
		memcpy(bms, v->bitmaps, v->entries * sizeof(*bms));
		free(v->bitmaps);
		v->bitmaps = bms;
	}
	v->entries = entries;
	v->hdr.max_entries = entries;
	v->meta_end = MAX(v->meta_end, bat_end);
	return write_header(v);
}

int vhd_resize(struct disk *d, uint64_t new_size, struct disk_error *err)
{
	struct vhd *v = d->priv;
	uint64_t need;
	int ret;

	if (new_size > VHD_MAX_SIZE)
		return disk_fail(err, -EFBIG, "%s: %llu bytes is larger than the VHD limit of "
				 "2040 GiB", d->path, (unsigned long long)new_size);
	if (v->footer_511)
		return disk_fail(err, -EOPNOTSUPP, "%s: old 511-byte footer; convert the disk "
				 "first", d->path);
	if (new_size < d->size) {
		ret = range_unused(d, new_size, d->size, err);
		if (ret)
			return ret;
	}
	if (d->type == DISK_TYPE_FIXED)
		return resize_fixed(d, v, new_size, err);
	/* flush first: the table must be on disk before it is extended */
	ret = d->ops->flush(d);
	if (ret)
		return disk_fail(err, ret, "%s: flush failed: %s", d->path, strerror(-ret));
	need = (new_size + v->block_size - 1) / v->block_size;
	if (need > v->entries) {
		ret = grow_bat(d, v, (uint32_t)need, err);
		if (ret)
			return ret;
	}
	set_size(v, new_size);
	/* the footer at the end rules; then its copy */
	ret = pwrite_full(v->mfd, v->footer_raw, VHD_FOOTER_SIZE, (off_t)v->footer_pos);
	if (!ret && fdatasync(v->mfd) < 0)
		ret = -errno;
	if (!ret)
		ret = pwrite_full(v->mfd, v->footer_raw, VHD_FOOTER_SIZE, 0);
	if (!ret && fdatasync(v->mfd) < 0)
		ret = -errno;
	if (ret)
		return disk_fail(err, ret, "%s: cannot write the footer: %s", d->path,
				 strerror(-ret));
	v->footer_recovered = false;
	d->size = new_size;
	return 0;
}

/* ---- check ---- */

int vhd_check(struct disk *d, bool repair, char *report, size_t len)
{
	struct vhd *v = d->priv;
	uint8_t raw[VHD_FOOTER_SIZE];
	int problems = 0, ret;

	if (d->type == DISK_TYPE_FIXED)
		return 0; /* open verified the footer; there is nothing else */
	if (v->footer_recovered) {
		disk_report_add(report, len, "%s: the footer at the end of the file is damaged or "
			    "missing; the copy at offset 0 is good%s", d->path,
			    repair ? "" : " (repair rewrites it)");
		if (repair) {
			ret = pwrite_full(v->mfd, v->footer_raw, VHD_FOOTER_SIZE,
					  (off_t)v->footer_pos);
			if (!ret && fdatasync(v->mfd) < 0)
				ret = -errno;
			if (ret)
				return ret;
			v->free_off = v->footer_pos;
			v->footer_recovered = false;
			disk_report_add(report, len, "%s: repaired: footer rewritten at offset %llu",
				    d->path, (unsigned long long)v->footer_pos);
		} else {
			problems++;
		}
	}
	ret = pread_full(v->mfd, raw, sizeof(raw), 0);
	if (ret)
		return ret;
	if (memcmp(raw, v->footer_raw, sizeof(raw))) {
		disk_report_add(report, len, "%s: the footer copy at offset 0 is damaged or differs "
			    "from the footer at the end%s", d->path,
			    repair ? "" : " (repair rewrites it)");
		if (repair) {
			ret = pwrite_full(v->mfd, v->footer_raw, VHD_FOOTER_SIZE, 0);
			if (!ret && fdatasync(v->mfd) < 0)
				ret = -errno;
			if (ret)
				return ret;
			disk_report_add(report, len, "%s: repaired: footer copy rewritten", d->path);
		} else {
			problems++;
		}
	}
	/* Space between the last referenced block and the footer is what an
	 * interrupted allocation leaves: harmless, reported for information. */
	uint64_t last = v->meta_end;
	for (uint32_t i = 0; i < v->entries; i++)
		if (v->bat[i] != VHD_BAT_UNUSED)
			last = MAX(last, (uint64_t)v->bat[i] * VHD_SECTOR + v->bitmap_size +
						 v->block_size);
	if (v->footer_pos > ALIGN_UP(last, 4096ULL) + 4096)
		disk_report_add(report, len, "%s: note: %llu bytes before the footer belong to no "
			    "block (left by an interrupted write; harmless)", d->path,
			    (unsigned long long)(v->footer_pos - last));
	return problems;
}
