/* VHDX maintenance: create, resize, set-parent, check, and the parent
 * locator as paths (Windows forms converted to candidates here). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/fileutil.h"
#include "common/util.h"
#include "disk/vhdx.h"

#define LOG_LEN (1024 * 1024)
#define META_LEN (1024 * 1024)
#define CHUNK_PAGES 56 /* pages per log entry when an update is split */

/* ---- paths ---- */

static void dir_of(const char *path, char out[PATH_MAX])
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		snprintf(out, PATH_MAX, ".");
	else if (slash == path)
		snprintf(out, PATH_MAX, "/");
	else
		snprintf(out, PATH_MAX, "%.*s", (int)(slash - path), path);
}

/* Windows path to POSIX: backslashes become slashes; "\\?\" and a drive
 * letter are dropped; a volume path keeps what follows its GUID. */
static void win_to_posix(const char *in, char out[PATH_MAX])
{
	const char *s = in;
	size_t o = 0;

	if (!strncmp(s, "\\\\?\\", 4))
		s += 4;
	if (!strncasecmp(s, "Volume{", 7)) {
		const char *end = strchr(s, '}');
		s = end ? end + 1 : s + strlen(s);
	}
	if (((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z') && s[1] == ':')
		s += 2;
	for (; *s && o + 1 < PATH_MAX; s++)
		out[o++] = *s == '\\' ? '/' : *s;
	out[o] = 0;
}

/* dir + "/" + name into out (truncated paths are dropped: empty). */
static void join_path(const char *dir, const char *name, char *out)
{
	size_t dl = strlen(dir), nl = strlen(name);

	out[0] = 0;
	if (dl + 1 + nl + 1 > PATH_MAX)
		return;
	memcpy(out, dir, dl);
	out[dl] = '/';
	memcpy(out + dl + 1, name, nl + 1);
}

static int add_candidate(char (*paths)[PATH_MAX], int n, int max, const char *p)
{
	if (!p[0] || n >= max)
		return n;
	for (int i = 0; i < n; i++)
		if (!strcmp(paths[i], p))
			return n;
	snprintf(paths[n], PATH_MAX, "%s", p);
	return n + 1;
}

int vhdx_parent_candidates(struct disk *d, char (*paths)[PATH_MAX], int max)
{
	struct vhdx *v = d->priv;
	char *dir = malloc(PATH_MAX), *conv = malloc(PATH_MAX), *tmp = malloc(PATH_MAX);
	const char *base = NULL;
	int n = 0;

	if (!dir || !conv || !tmp || !v->has_parent)
		goto out;
	dir_of(d->path, dir);
	if (v->loc.relative[0]) {
		const char *r = conv;

		win_to_posix(v->loc.relative, conv);
		while (!strncmp(r, "./", 2))
			r += 2;
		if (r[0] == '/')
			snprintf(tmp, PATH_MAX, "%s", r);
		else
			join_path(dir, r, tmp);
		n = add_candidate(paths, n, max, tmp);
	}
	const char *abs_forms[2] = { v->loc.absolute, v->loc.volume };
	for (int i = 0; i < 2; i++) {
		if (!abs_forms[i][0])
			continue;
		win_to_posix(abs_forms[i], conv);
		if (conv[0] == '/')
			n = add_candidate(paths, n, max, conv);
	}
	/* moved together: the parent's file name next to the child */
	for (int i = 0; i < 3 && !base; i++) {
		const char *src = i == 0 ? v->loc.relative : i == 1 ? v->loc.absolute : v->loc.volume;
		if (src[0]) {
			win_to_posix(src, conv);
			base = strrchr(conv, '/') ? strrchr(conv, '/') + 1 : conv;
		}
	}
	if (base && base[0]) {
		join_path(dir, base, tmp);
		n = add_candidate(paths, n, max, tmp);
	}
out:
	free(dir);
	free(conv);
	free(tmp);
	return n;
}

int vhdx_check_parent(struct disk *d, struct disk *parent, struct disk_error *err)
{
	struct vhdx *v = d->priv, *pv;
	char a[GUID_STR_LEN], b[GUID_STR_LEN];

	if (parent->ops != &disk_vhdx_ops)
		return disk_fail(err, -EINVAL, "%s: parent %s is not a VHDX image", d->path,
				 parent->path);
	pv = parent->priv;
	if (pv->lsec != v->lsec)
		return disk_fail(err, -EINVAL, "%s: parent %s has %u-byte sectors, the child %u",
				 d->path, parent->path, pv->lsec, v->lsec);
	if (guid_equal(&pv->hdr.data_write, &v->loc.linkage) ||
	    (v->loc.has_linkage2 && guid_equal(&pv->hdr.data_write, &v->loc.linkage2)))
		return 0;
	return disk_fail(err, -EINVAL, "%s: parent %s does not match: its DataWriteGuid is {%s} "
			 "but the child expects {%s} (the parent was modified since, or it is "
			 "another disk)", d->path, parent->path,
			 guid_to_string(&pv->hdr.data_write, a), guid_to_string(&v->loc.linkage, b));
}

/* Relative path from directory from_dir to file to (both absolute), in
 * the Windows form Hyper-V writes: ".\name" or "..\dir\name". */
static void relative_win(const char *from_dir, const char *to, char out[PATH_MAX])
{
	size_t common = 0, i = 0, o = 0;

	for (;; i++) {
		char a = from_dir[i], b = to[i];
		if ((a == 0 || a == '/') && b == '/')
			common = i;
		if (!a || a != b)
			break;
	}
	if (!strcmp(from_dir, "/"))
		common = 0;
	if (from_dir[common] == 0 || !strcmp(from_dir, "/")) {
		o += (size_t)snprintf(out, PATH_MAX, ".");
	} else {
		for (const char *p = from_dir + common; *p && o + 4 < PATH_MAX; p++)
			if (*p == '/') {
				o += (size_t)snprintf(out + o, PATH_MAX - o, "%s..", o ? "\\" : "");
			}
	}
	for (const char *p = to + common; *p && o + 1 < PATH_MAX; p++)
		out[o++] = *p == '/' ? '\\' : *p;
	out[o] = 0;
}

/* ---- create ---- */

struct create_layout {
	uint32_t bs, lsec, psec;
	uint64_t size, entries, bat_off, bat_len, data_off, file_size;
	bool fixed, diff;
};

static int layout_for(const char *path, const struct disk_create_opts *o, struct disk *parent,
		      struct create_layout *l, struct disk_error *err)
{
	l->diff = o->type == DISK_TYPE_DIFFERENCING;
	l->fixed = o->type == DISK_TYPE_FIXED;
	/* differencing: 2 MiB, as Hyper-V makes .avhdx files (small blocks keep
	 * copy-on-write cheap); else 32 MiB */
	l->bs = o->block_size ? o->block_size : l->diff ? 2 * 1024 * 1024 : VHDX_DEFAULT_BLOCK;
	l->lsec = o->logical_sector ? o->logical_sector
				    : parent ? ((struct vhdx *)parent->priv)->lsec : 512;
	l->psec = o->physical_sector ? o->physical_sector : 4096;
	l->size = o->size;
	if (l->bs < VHDX_MIN_BLOCK || l->bs > VHDX_MAX_BLOCK || (l->bs & (l->bs - 1)))
		return disk_fail(err, -EINVAL, "%s: block size %u is not a power of two between "
				 "1 MiB and 256 MiB", path, l->bs);
	if ((l->lsec != 512 && l->lsec != 4096) || (l->psec != 512 && l->psec != 4096))
		return disk_fail(err, -EINVAL, "%s: sector sizes must be 512 or 4096 (got %u/%u)",
				 path, l->lsec, l->psec);
	if (!l->size || l->size > VHDX_MAX_SIZE || l->size % l->lsec)
		return disk_fail(err, -EINVAL, "%s: size %llu is 0, above 64 TiB or not a "
				 "multiple of the %u-byte sector", path,
				 (unsigned long long)l->size, l->lsec);
	if (l->diff && (!parent || parent->ops != &disk_vhdx_ops))
		return disk_fail(err, -EINVAL, "%s: a VHDX differencing disk needs a VHDX parent",
				 path);
	if (l->diff && ((struct vhdx *)parent->priv)->lsec != l->lsec)
		return disk_fail(err, -EINVAL, "%s: sector size %u differs from the parent's", path,
				 l->lsec);
	l->entries = vhdx_bat_count(l->size, l->bs, l->lsec, l->diff);
	l->bat_off = VHDX_HEADER_SECTION + LOG_LEN + META_LEN;
	l->bat_len = ALIGN_UP(l->entries * 8, VHDX_ALIGN);
	l->data_off = l->bat_off + l->bat_len;
	l->file_size = l->data_off;
	if (l->fixed)
		l->file_size += (l->size + l->bs - 1) / l->bs * l->bs;
	return 0;
}

static int write_header_section(int fd, const struct create_layout *l)
{
	struct vhdx_header h = { .version = 1, .log_length = LOG_LEN,
				 .log_offset = VHDX_HEADER_SECTION };
	uint8_t *buf = disk_alloc_aligned(VHDX_HEADER_SECTION);
	const char *creator = "cloison " CLOISON_VERSION;
	int ret;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, "vhdxfile", 8);
	for (size_t i = 0; creator[i] && i < 255; i++)
		vhdx_put16(buf + 8 + 2 * i, (uint8_t)creator[i]);
	if (guid_generate(&h.file_write) || guid_generate(&h.data_write)) {
		free(buf);
		return -EIO;
	}
	h.seq = 1;
	vhdx_header_encode(&h, buf + VHDX_HEADER1_OFF);
	h.seq = 2;
	vhdx_header_encode(&h, buf + VHDX_HEADER2_OFF);
	vhdx_region_table_build(buf + VHDX_RT1_OFF, l->bat_off, (uint32_t)l->bat_len,
				VHDX_HEADER_SECTION + LOG_LEN, META_LEN);
	memcpy(buf + VHDX_RT2_OFF, buf + VHDX_RT1_OFF, VHDX_RT_SIZE);
	ret = pwrite_full(fd, buf, VHDX_HEADER_SECTION, 0);
	free(buf);
	return ret;
}

static int write_bat(int fd, const struct create_layout *l)
{
	size_t chunk = 1024 * 1024;
	uint8_t *buf = disk_alloc_aligned(chunk);
	uint64_t cr = ((uint64_t)1 << 23) * l->lsec / l->bs;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	if (!l->fixed)
		goto out; /* all zero: NOT_PRESENT; ftruncate gives that */
	for (uint64_t i = 0; i < l->entries && !ret; i += chunk / 8) {
		memset(buf, 0, chunk);
		for (uint64_t k = 0; k < chunk / 8 && i + k < l->entries; k++) {
			uint64_t idx = i + k;
			if ((idx + 1) % (cr + 1) == 0)
				continue;
			uint64_t b = idx - idx / (cr + 1);
			vhdx_put64(buf + 8 * k, VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT,
							       l->data_off + b * l->bs));
		}
		ret = pwrite_full(fd, buf, chunk, (off_t)(l->bat_off + i * 8));
	}
out:
	free(buf);
	return ret;
}

int vhdx_create(const char *path, const struct disk_create_opts *opts, struct disk *parent,
		struct disk_error *err)
{
	struct vhdx_meta_params mp = { 0 };
	struct create_layout l = { 0 };
	char *pabs = NULL, *dir = NULL, *cdir = NULL, *rel = NULL;
	uint8_t *meta = NULL;
	int fd, ret;

	ret = layout_for(path, opts, parent, &l, err);
	if (ret)
		return ret;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return disk_fail(err, -errno, "%s: cannot create: %s", path, strerror(errno));
	meta = disk_alloc_aligned(META_LEN);
	pabs = malloc(PATH_MAX);
	dir = malloc(PATH_MAX);
	cdir = malloc(PATH_MAX);
	rel = malloc(PATH_MAX);
	if (!meta || !pabs || !dir || !cdir || !rel) {
		ret = disk_fail(err, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	mp = (struct vhdx_meta_params){ .block_size = l.bs, .lsec = l.lsec, .psec = l.psec,
					.vsize = l.size, .leave_allocated = l.fixed,
					.has_parent = l.diff };
	guid_generate(&mp.disk_id);
	if (l.diff) {
		dir_of(path, dir);
		if (!realpath(parent->path, pabs) || !realpath(dir, cdir)) {
			ret = disk_fail(err, -errno, "%s: cannot resolve the parent's path: %s", path,
					strerror(errno));
			goto out;
		}
		relative_win(cdir, pabs, rel);
		mp.linkage = ((struct vhdx *)parent->priv)->hdr.data_write;
		mp.relative = rel;
		mp.absolute = pabs;
	}
	ret = vhdx_metadata_build(meta, META_LEN, &mp);
	if (ret) {
		disk_fail(err, ret, "%s: the parent's path is too long for a locator", path);
		goto out;
	}
	ret = write_header_section(fd, &l);
	if (!ret)
		ret = pwrite_full(fd, meta, META_LEN, VHDX_HEADER_SECTION + LOG_LEN);
	if (!ret && ftruncate(fd, (off_t)l.file_size) < 0)
		ret = -errno;
	if (!ret)
		ret = write_bat(fd, &l);
	if (!ret && l.fixed && fallocate(fd, 0, (off_t)l.data_off,
					 (off_t)(l.file_size - l.data_off)) < 0 &&
	    errno != EOPNOTSUPP)
		ret = -errno;
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (!ret)
		ret = fsync_parent_dir(path);
	if (ret)
		disk_fail(err, ret, "%s: cannot write the new image: %s", path, strerror(-ret));
out:
	close(fd);
	free(meta);
	free(pabs);
	free(dir);
	free(cdir);
	free(rel);
	return ret;
}

/* ---- resize ---- */

static void encode_bat_page(const uint64_t *bat, uint64_t pg, uint8_t *out)
{
	for (int i = 0; i < VHDX_LOG_SECTOR / 8; i++)
		vhdx_put64(out + 8 * i, bat[pg * (VHDX_LOG_SECTOR / 8) + (uint64_t)i]);
}

/* Region table pages (both copies) with the BAT moved to off/len. */
static int txn_region_tables(struct vhdx *v, struct vhdx_txn *t, uint64_t off, uint32_t len)
{
	uint8_t *rt = disk_alloc_aligned(VHDX_RT_SIZE);
	int ret = -ENOMEM;

	if (!rt)
		return ret;
	ret = vhdx_meta_read(v, rt, VHDX_RT_SIZE, v->rt_bad[0] ? VHDX_RT2_OFF : VHDX_RT1_OFF);
	if (ret)
		goto out;
	for (uint32_t i = 0; i < vhdx_le32(rt + 8); i++) {
		uint8_t *e = rt + 16 + 32 * i;
		struct guid g;

		guid_from_le(&g, e);
		if (guid_equal(&g, &vhdx_guid_bat)) {
			vhdx_put64(e + 16, off);
			vhdx_put32(e + 24, len);
		}
	}
	vhdx_put32(rt + 4, 0);
	vhdx_put32(rt + 4, crc32c(0, rt, VHDX_RT_SIZE));
	ret = -ENOSPC;
	for (int c = 0; c < 2; c++)
		for (int pg = 0; pg < VHDX_RT_SIZE / VHDX_LOG_SECTOR; pg++)
			if (!vhdx_txn_page(t, (c ? VHDX_RT2_OFF : VHDX_RT1_OFF) +
					   (uint64_t)pg * VHDX_LOG_SECTOR,
					   rt + pg * VHDX_LOG_SECTOR, NULL))
				goto out;
	ret = 0;
out:
	free(rt);
	return ret;
}

static int txn_vsize(struct vhdx *v, struct vhdx_txn *t, uint64_t new_size)
{
	uint64_t pg = ALIGN_DOWN((uint64_t)v->vsize_item_off, VHDX_LOG_SECTOR);
	uint8_t *p;

	/* the 8-byte item never straddles pages when 8-aligned; copy_back
	 * keeps v->meta in step */
	if (v->vsize_item_off % 8)
		return -EOPNOTSUPP;
	p = vhdx_txn_page(t, v->meta_off + pg, v->meta + pg, v->meta + pg);
	if (!p)
		return -ENOSPC;
	vhdx_put64(p + (v->vsize_item_off - pg), new_size);
	return 0;
}

static int resize_check(struct vhdx *v, uint64_t new_size, struct disk_error *err)
{
	const char *path = v->d->path;

	if (new_size > VHDX_MAX_SIZE || !new_size || new_size % v->lsec)
		return disk_fail(err, -EINVAL, "%s: new size %llu is 0, above 64 TiB or not a "
				 "multiple of %u", path, (unsigned long long)new_size, v->lsec);
	if (new_size >= v->vsize)
		return 0;
	if (v->leave_allocated)
		return disk_fail(err, -ENOTEMPTY, "%s: a fixed disk holds every block; it cannot "
				 "shrink (convert it to dynamic first)", path);
	for (uint64_t b = new_size / v->block_size; b < v->nblocks; b++) {
		unsigned st = VHDX_BAT_STATE(vhdx_bat_get(v, vhdx_bat_index(v, b)));
		if (st == VHDX_PB_FULLY_PRESENT || st == VHDX_PB_PARTIALLY_PRESENT)
			return disk_fail(err, -ENOTEMPTY, "%s: cannot shrink to %llu bytes: block "
					 "%llu (from byte %llu) holds data", path,
					 (unsigned long long)new_size, (unsigned long long)b,
					 (unsigned long long)b * v->block_size);
	}
	return 0;
}

/* Builds the BAT for new_size (fixed: new blocks allocated at the end). */
static int build_new_bat(struct vhdx *v, uint64_t new_size, uint64_t **out, uint64_t *cap_out)
{
	uint64_t entries = vhdx_bat_count(new_size, v->block_size, v->lsec, v->has_parent);
	uint64_t keep = MIN(entries, v->bat_entries);
	uint64_t cap = ALIGN_UP(MAX(entries, v->bat_entries) + 1, VHDX_LOG_SECTOR / 8);
	uint64_t nblocks = (new_size + v->block_size - 1) / v->block_size, base = 0;
	uint64_t *nb = calloc(cap, 8);
	int ret;

	if (!nb)
		return -ENOMEM;
	memcpy(nb, v->bat, keep * 8);
	if (v->leave_allocated && nblocks > v->nblocks) {
		ret = vhdx_alloc_space(v, (nblocks - v->nblocks) * v->block_size, &base);
		if (ret) {
			free(nb);
			return ret;
		}
		if (fallocate(v->fd, 0, (off_t)base, (off_t)((nblocks - v->nblocks) * v->block_size)))
			(void)0; /* a sparse fixed block still reads as zeroes */
		for (uint64_t b = v->nblocks; b < nblocks; b++)
			nb[vhdx_bat_index(v, b)] = VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT,
							base + (b - v->nblocks) * v->block_size);
	}
	*out = nb;
	*cap_out = cap;
	return 0;
}

static int resize_in_place(struct vhdx *v, const uint64_t *nb, uint64_t new_entries,
			   uint64_t new_size)
{
	uint64_t loaded = ALIGN_UP(v->bat_entries * 8, VHDX_LOG_SECTOR) / VHDX_LOG_SECTOR;
	uint64_t pages = ALIGN_UP(MAX(new_entries, v->bat_entries) * 8, VHDX_LOG_SECTOR) /
			 VHDX_LOG_SECTOR;
	uint8_t old[VHDX_LOG_SECTOR], *nw = disk_alloc_aligned(VHDX_LOG_SECTOR);
	struct vhdx_txn t;
	int ret = 0;

	if (!nw)
		return -ENOMEM;
	vhdx_txn_init(&t);
	for (uint64_t pg = 0; pg < pages && !ret; pg++) {
		encode_bat_page(nb, pg, nw);
		if (pg < loaded) {
			encode_bat_page(v->bat, pg, old);
			if (!memcmp(old, nw, VHDX_LOG_SECTOR))
				continue;
		} else if (!v->leave_allocated) {
			break; /* beyond what was loaded: one zero range below */
		}
		if (!vhdx_txn_page(&t, v->bat_off + pg * VHDX_LOG_SECTOR, nw, NULL))
			ret = -ENOSPC;
		if (!ret && t.n >= CHUNK_PAGES) {
			ret = vhdx_txn_commit(v, &t);
			vhdx_txn_free(&t);
		}
	}
	if (!ret && !v->leave_allocated && pages > loaded)
		ret = vhdx_txn_zero(&t, v->bat_off + loaded * VHDX_LOG_SECTOR,
				    (pages - loaded) * VHDX_LOG_SECTOR);
	if (!ret)
		ret = txn_vsize(v, &t, new_size);
	if (!ret)
		ret = vhdx_txn_commit(v, &t);
	vhdx_txn_free(&t);
	free(nw);
	return ret;
}

static int resize_relocate(struct vhdx *v, const uint64_t *nb, uint64_t new_entries,
			   uint64_t new_size, uint64_t *new_off, uint32_t *new_len)
{
	uint64_t len = ALIGN_UP(new_entries * 8, VHDX_ALIGN), off;
	uint8_t *buf;
	struct vhdx_txn t;
	int ret;

	if (len >= VHDX_MAX_REGION)
		return -EFBIG;
	buf = disk_alloc_aligned(len);
	if (!buf)
		return -ENOMEM;
	for (uint64_t i = 0; i < new_entries; i++)
		vhdx_put64(buf + 8 * i, nb[i]);
	vhdx_txn_init(&t);
	ret = vhdx_alloc_space(v, len, &off);
	if (!ret)
		ret = pwrite_full(v->fd, buf, len, (off_t)off);
	if (!ret)
		ret = txn_region_tables(v, &t, off, (uint32_t)len);
	if (!ret)
		ret = txn_vsize(v, &t, new_size);
	if (!ret)
		ret = vhdx_txn_commit(v, &t); /* syncs the new BAT before the entry */
	vhdx_txn_free(&t);
	free(buf);
	*new_off = off;
	*new_len = (uint32_t)len;
	return ret;
}

int vhdx_resize(struct disk *d, uint64_t new_size, struct disk_error *err)
{
	struct vhdx *v = d->priv;
	uint64_t new_entries, *nb = NULL, cap, old_bat_off = v->bat_off;
	uint32_t old_bat_len = v->bat_len;
	int ret;

	if (v->rdonly)
		return disk_fail(err, -EROFS, "%s: opened read-only", d->path);
	pthread_mutex_lock(&v->lock);
	ret = resize_check(v, new_size, err);
	if (ret)
		goto out;
	new_entries = vhdx_bat_count(new_size, v->block_size, v->lsec, v->has_parent);
	ret = vhdx_mark_dirty(v, true); /* the virtual disk changes: children must notice */
	if (!ret)
		ret = build_new_bat(v, new_size, &nb, &cap);
	if (ret)
		goto fail;
	if (new_entries * 8 > v->bat_len) {
		uint64_t off;
		uint32_t len;

		ret = resize_relocate(v, nb, new_entries, new_size, &off, &len);
		if (ret)
			goto fail;
		v->bat_off = off;
		v->bat_len = len;
	} else {
		ret = resize_in_place(v, nb, new_entries, new_size);
		if (ret)
			goto fail;
	}
	ret = vhdx_set_geometry(v, new_size);
	if (ret)
		goto fail;
	for (uint64_t i = 0; i < MIN(cap, v->bat_cap); i++)
		__atomic_store_n(&v->bat[i], nb[i], __ATOMIC_RELEASE);
	if (v->bat_off != old_bat_off) /* give the old BAT's space back */
		fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)old_bat_off,
			  (off_t)old_bat_len);
	goto out;
fail:
	disk_fail(err, ret, "%s: resize failed: %s", d->path, strerror(-ret));
out:
	free(nb);
	pthread_mutex_unlock(&v->lock);
	return ret;
}

/* ---- set-parent ---- */

static int locator_entry(const struct vhdx *v)
{
	uint16_t count = vhdx_le16(v->meta + 10);

	for (int i = 0; i < count; i++) {
		struct guid g;

		guid_from_le(&g, v->meta + 32 + 32 * i);
		if (guid_equal(&g, &vhdx_guid_parent_locator))
			return i;
	}
	return -1;
}

/* Room for the locator: up to the next item or the end of the region. */
static uint32_t locator_room(const struct vhdx *v)
{
	uint16_t count = vhdx_le16(v->meta + 10);
	uint32_t end = v->meta_len;

	for (int i = 0; i < count; i++) {
		uint32_t off = vhdx_le32(v->meta + 32 + 32 * i + 16);
		if (off > v->loc_item_off && off < end)
			end = off;
	}
	return end - v->loc_item_off;
}

int vhdx_set_parent(struct disk *d, struct disk *parent, const char *stored_path,
		    struct disk_error *err)
{
	struct vhdx *v = d->priv;
	char *dir = malloc(PATH_MAX), *cdir = malloc(PATH_MAX), *rel = malloc(PATH_MAX);
	uint8_t *nm = disk_alloc_aligned(v->meta_len);
	int idx = locator_entry(v), len, ret;
	uint32_t old_len = v->loc_item_len;
	struct vhdx_txn t;

	vhdx_txn_init(&t);
	if (!dir || !cdir || !rel || !nm) {
		ret = disk_fail(err, -ENOMEM, "%s: out of memory", d->path);
		goto out;
	}
	if (idx < 0 || v->rdonly) {
		ret = disk_fail(err, -EINVAL, "%s: no parent locator to rewrite (or read-only)",
				d->path);
		goto out;
	}
	dir_of(d->path, dir);
	if (!realpath(dir, cdir)) {
		ret = disk_fail(err, -errno, "%s: %s", dir, strerror(errno));
		goto out;
	}
	relative_win(cdir, stored_path, rel);
	memcpy(nm, v->meta, v->meta_len);
	len = vhdx_locator_build(nm + v->loc_item_off, locator_room(v),
				 &((struct vhdx *)parent->priv)->hdr.data_write, rel, stored_path);
	if (len < 0) {
		ret = disk_fail(err, -ENOSPC, "%s: the new parent path does not fit the locator",
				d->path);
		goto out;
	}
	if ((uint32_t)len < old_len)
		memset(nm + v->loc_item_off + len, 0, old_len - (uint32_t)len);
	vhdx_put32(nm + 32 + 32 * idx + 20, (uint32_t)len);
	pthread_mutex_lock(&v->lock);
	ret = 0;
	for (uint64_t pg = 0; pg < v->meta_len && !ret; pg += VHDX_LOG_SECTOR)
		if (memcmp(nm + pg, v->meta + pg, VHDX_LOG_SECTOR) &&
		    !vhdx_txn_page(&t, v->meta_off + pg, nm + pg, v->meta + pg))
			ret = -ENOSPC;
	if (!ret)
		ret = vhdx_txn_commit(v, &t);
	if (!ret) {
		struct vhdx_locator keep = v->loc;
		v->loc_item_len = (uint32_t)len;
		ret = vhdx_parse_metadata(v, err);
		if (ret)
			v->loc = keep;
	}
	pthread_mutex_unlock(&v->lock);
	if (ret && err && !err->msg[0])
		disk_fail(err, ret, "%s: set-parent failed: %s", d->path, strerror(-ret));
out:
	vhdx_txn_free(&t);
	free(dir);
	free(cdir);
	free(rel);
	free(nm);
	return ret;
}

/* ---- check ---- */

struct extent {
	uint64_t off, len, idx;
};

static int cmp_extent(const void *a, const void *b)
{
	const struct extent *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* Blocks that share file space with each other. */
static int check_overlaps(struct vhdx *v, char *report, size_t len)
{
	struct extent *ex = calloc(v->bat_entries + 1, sizeof(*ex));
	uint64_t n = 0;
	int problems = 0;

	if (!ex)
		return -ENOMEM;
	for (uint64_t i = 0; i < v->bat_entries; i++) {
		uint64_t e = vhdx_bat_get(v, i);
		unsigned st = VHDX_BAT_STATE(e);
		bool sb = (i + 1) % (v->chunk_ratio + 1) == 0;

		if (sb ? st == VHDX_SB_PRESENT
		       : (st == VHDX_PB_FULLY_PRESENT || st == VHDX_PB_PARTIALLY_PRESENT))
			ex[n++] = (struct extent){ VHDX_BAT_OFFSET(e), sb ? VHDX_SB_BLOCK : v->block_size,
						   i };
	}
	qsort(ex, n, sizeof(*ex), cmp_extent);
	for (uint64_t i = 1; i < n; i++)
		if (ex[i].off < ex[i - 1].off + ex[i - 1].len) {
			disk_report_add(report, len, "BAT entries %llu and %llu share file space at %llu",
			    (unsigned long long)ex[i - 1].idx, (unsigned long long)ex[i].idx,
			    (unsigned long long)ex[i].off);
			problems++;
		}
	free(ex);
	return problems;
}

static int repair_copies(struct vhdx *v, bool repair, char *report, size_t len)
{
	int left = 0;

	for (int i = 0; i < 2; i++) {
		if (!v->hdr_bad[i])
			continue;
		disk_report_add(report, len, "header copy %d is invalid (bad signature or CRC-32C)%s", i + 1,
		    repair ? "; rewritten from the good copy" : "");
		if (!repair || vhdx_mark_dirty(v, false) || vhdx_header_update(v, &v->hdr))
			left++;
	}
	if (repair && v->hdr_stale && !v->hdr_bad[0] && !v->hdr_bad[1]) {
		/* normal (e.g. after a crash): not a finding, but repair makes
		 * both copies current */
		disk_report_add(report, len, "header copy %d was older than copy %d; brought up to date",
		    2 - v->hdr_slot, v->hdr_slot + 1);
		if (!vhdx_mark_dirty(v, false) && !vhdx_header_update(v, &v->hdr))
			v->hdr_stale = false;
	}
	if (v->rt_bad[0] || v->rt_bad[1] || v->rt_differ) {
		int good = v->rt_bad[0] ? 1 : 0;
		uint8_t *rt = disk_alloc_aligned(VHDX_RT_SIZE);
		struct vhdx_txn t;
		int ret = -ENOMEM;

		disk_report_add(report, len, "region table copy %d is %s%s", 2 - good,
		    v->rt_differ ? "different from copy 1" : "invalid",
		    repair ? "; rewritten from the good copy" : "");
		vhdx_txn_init(&t);
		if (repair && rt) {
			ret = vhdx_meta_read(v, rt, VHDX_RT_SIZE, good ? VHDX_RT2_OFF : VHDX_RT1_OFF);
			for (int pg = 0; !ret && pg < VHDX_RT_SIZE / VHDX_LOG_SECTOR; pg++)
				if (!vhdx_txn_page(&t, (good ? VHDX_RT1_OFF : VHDX_RT2_OFF) +
						   (uint64_t)pg * VHDX_LOG_SECTOR,
						   rt + pg * VHDX_LOG_SECTOR, NULL))
					ret = -ENOSPC;
			if (!ret)
				ret = vhdx_txn_commit(v, &t);
		}
		if (!repair || ret)
			left++;
		else
			v->rt_bad[0] = v->rt_bad[1] = v->rt_differ = false;
		vhdx_txn_free(&t);
		free(rt);
	}
	return left;
}

int vhdx_check(struct disk *d, bool repair, char *report, size_t len)
{
	struct vhdx *v = d->priv;
	int left = 0, ret;

	repair = repair && !v->rdonly;
	pthread_mutex_lock(&v->lock);
	/* A pending log is the designed state after a crash: the open already
	 * validated it (entries, CRC-32C, sequence) and replayed it (in memory
	 * when read-only), so everything below checks the metadata as it will
	 * be after the replay. A log that cannot be replayed fails the open. */
	if (v->log_replayed) {
		if (v->rdonly)
			disk_report_add(report, len, "note: log has %u pending entr%s; they are replayed on the "
			    "next read-write open or with --repair", v->log_pending,
			    v->log_pending == 1 ? "y" : "ies");
		else
			disk_report_add(report, len, "note: the log held %u pending entr%s; replayed into the file",
			    v->log_pending, v->log_pending == 1 ? "y" : "ies");
	}
	left += repair_copies(v, repair, report, len);
	for (uint64_t i = 0; i < v->bat_entries; i++) {
		uint64_t e = vhdx_bat_get(v, i);
		bool sb = (i + 1) % (v->chunk_ratio + 1) == 0;

		if (sb && !v->has_parent && VHDX_BAT_STATE(e) != VHDX_SB_NOT_PRESENT) {
			disk_report_add(report, len, "BAT entry %llu: a sector bitmap in a disk without a parent",
			    (unsigned long long)i);
			left++;
		}
		if ((e & 0xFFFF8) != 0) {
			disk_report_add(report, len, "BAT entry %llu: reserved bits set", (unsigned long long)i);
			left++;
		}
	}
	ret = check_overlaps(v, report, len);
	pthread_mutex_unlock(&v->lock);
	if (ret < 0)
		return ret;
	left += ret;
	return left;
}
