/* VHDX images (MS-VHDX): open, data I/O, allocation, mapping.
 *
 * Data I/O runs without the lock: a FULLY_PRESENT block is read and written
 * with pread/pwrite straight away. Allocation, bitmap updates and every
 * other metadata change take v->lock and go through the log
 * (vhdx_log_commit), after the data they point at is durable. BAT entries
 * are read and published atomically, so readers never see half an entry. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "disk/vhdx.h"

#define ZERO_BUF (64 * 1024)
static const uint8_t zero_buf[ZERO_BUF] __attribute__((aligned(4096)));

uint64_t vhdx_bat_get(const struct vhdx *v, uint64_t idx)
{
	return __atomic_load_n(&v->bat[idx], __ATOMIC_ACQUIRE);
}

/* ---- transactions ---- */

void vhdx_txn_init(struct vhdx_txn *t)
{
	memset(t, 0, sizeof(*t));
}

void vhdx_txn_free(struct vhdx_txn *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->pages[i].data);
	t->n = 0;
}

uint8_t *vhdx_txn_page(struct vhdx_txn *t, uint64_t off, const uint8_t *init, uint8_t *copy_back)
{
	for (int i = 0; i < t->n; i++)
		if (!t->pages[i].zero_len && t->pages[i].off == off)
			return t->pages[i].data;
	if (t->n == VHDX_TXN_MAX)
		return NULL;
	uint8_t *p = disk_alloc_aligned(VHDX_LOG_SECTOR);
	if (!p)
		return NULL;
	if (init)
		memcpy(p, init, VHDX_LOG_SECTOR);
	t->pages[t->n] = (struct vhdx_page){ .off = off, .data = p };
	t->copy_back[t->n++] = copy_back;
	return p;
}

int vhdx_txn_zero(struct vhdx_txn *t, uint64_t off, uint64_t len)
{
	if (t->n == VHDX_TXN_MAX)
		return -ENOSPC;
	t->pages[t->n] = (struct vhdx_page){ .off = off, .zero_len = len };
	t->copy_back[t->n++] = NULL;
	return 0;
}

int vhdx_txn_bat(struct vhdx_txn *t, struct vhdx *v, uint64_t idx, uint64_t val)
{
	uint64_t first = ALIGN_DOWN(idx, VHDX_LOG_SECTOR / 8);
	uint8_t init[VHDX_LOG_SECTOR], *p;

	if (t->nbat == (int)ARRAY_SIZE(t->bat))
		return -ENOSPC;
	for (int i = 0; i < VHDX_LOG_SECTOR / 8; i++)
		vhdx_put64(init + 8 * i, vhdx_bat_get(v, first + (uint64_t)i));
	p = vhdx_txn_page(t, v->bat_off + first * 8, init, NULL);
	if (!p)
		return -ENOSPC;
	vhdx_put64(p + (idx - first) * 8, val);
	t->bat[t->nbat].idx = idx;
	t->bat[t->nbat++].val = val;
	return 0;
}

static void txn_apply(struct vhdx *v, struct vhdx_txn *t)
{
	for (int i = 0; i < t->n; i++)
		if (t->copy_back[i])
			memcpy(t->copy_back[i], t->pages[i].data, VHDX_LOG_SECTOR);
	for (int i = 0; i < t->nbat; i++)
		__atomic_store_n(&v->bat[t->bat[i].idx], t->bat[i].val, __ATOMIC_RELEASE);
}

int vhdx_txn_commit(struct vhdx *v, struct vhdx_txn *t)
{
	/* deferred pages first: t may have been built on top of them */
	int ret = vhdx_pend_commit(v);

	if (!ret)
		ret = vhdx_log_commit(v, t->pages, t->n);
	if (ret)
		return ret;
	txn_apply(v, t);
	return 0;
}

static bool is_bat_page(const struct vhdx *v, uint64_t off)
{
	return off >= v->bat_off && off < v->bat_off + v->bat_len;
}

static int pend_find(const struct vhdx *v, uint64_t off)
{
	for (int i = 0; i < v->npend; i++)
		if (v->pend[i].off == off)
			return i;
	return -1;
}

int vhdx_txn_defer(struct vhdx *v, struct vhdx_txn *t)
{
	int fresh = 0;

	for (int i = 0; i < t->n; i++) {
		if (t->pages[i].zero_len || (!t->copy_back[i] && !is_bat_page(v, t->pages[i].off)))
			return vhdx_txn_commit(v, t);
		fresh += pend_find(v, t->pages[i].off) < 0;
	}
	if (v->npend + fresh > VHDX_PEND_MAX) {
		int ret = vhdx_pend_commit(v);
		if (ret)
			return ret;
	}
	if (v->crashed)
		return -EIO;
	txn_apply(v, t);
	for (int i = 0; i < t->n; i++) {
		if (pend_find(v, t->pages[i].off) >= 0)
			continue;
		v->pend[v->npend].off = t->pages[i].off;
		v->pend[v->npend++].mem = t->copy_back[i];
	}
	return 0;
}

int vhdx_pend_commit(struct vhdx *v)
{
	struct vhdx_txn t;
	int ret = 0;

	if (!v->npend)
		return 0;
	vhdx_txn_init(&t);
	for (int i = 0; i < v->npend && !ret; i++) {
		uint64_t off = v->pend[i].off;
		uint8_t init[VHDX_LOG_SECTOR];
		const uint8_t *src = v->pend[i].mem;

		if (!src) {
			uint64_t first = (off - v->bat_off) / 8;
			for (int k = 0; k < VHDX_LOG_SECTOR / 8; k++)
				vhdx_put64(init + 8 * k, vhdx_bat_get(v, first + (uint64_t)k));
			src = init;
		}
		if (!vhdx_txn_page(&t, off, src, NULL))
			ret = -ENOMEM;
	}
	if (!ret)
		ret = vhdx_log_commit(v, t.pages, t.n);
	if (!ret)
		v->npend = 0;
	vhdx_txn_free(&t);
	return ret;
}

/* A block of space discard freed, when it may be reused now. Locked. */
static bool take_freed(struct vhdx *v, uint64_t len, uint64_t *off)
{
	if (!v->nfreed || len != v->block_size || __atomic_load_n(&v->mapped, __ATOMIC_ACQUIRE))
		return false;
	/* the BAT no longer names it (stored before it was freed): an I/O
	 * that starts now cannot find it; one that started before is counted */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&v->io_active, __ATOMIC_SEQ_CST))
		return false;
	*off = v->freed[--v->nfreed];
	return true;
}

/* Remembers a discarded block's space [off, off + block_size), already
 * zeroed and no longer in the BAT on disk. Locked. */
static void give_back(struct vhdx *v, uint64_t off)
{
	if (v->nfreed == v->freed_cap) {
		size_t nc = v->freed_cap ? v->freed_cap * 2 : 64;
		uint64_t *nf = realloc(v->freed, nc * sizeof(*nf));
		if (!nf)
			return; /* the space stays unused, as before */
		v->freed = nf;
		v->freed_cap = nc;
	}
	v->freed[v->nfreed++] = off;
}

int vhdx_alloc_space(struct vhdx *v, uint64_t len, uint64_t *off)
{
	uint64_t at = ALIGN_UP(v->file_size, VHDX_ALIGN);

	if (v->crashed)
		return -EIO;
	if (take_freed(v, len, off))
		return 0;
	if (ftruncate(v->fd, (off_t)(at + len)) < 0)
		return -errno;
	v->file_size = at + len;
	*off = at;
	return 0;
}

int vhdx_sb_load(struct vhdx *v, uint64_t c)
{
	uint64_t e;
	uint8_t *p;
	int ret;

	if (v->sb[c])
		return 0;
	p = disk_alloc_aligned(VHDX_SB_BLOCK);
	if (!p)
		return -ENOMEM;
	e = vhdx_bat_get(v, vhdx_sb_index(v, c));
	if (VHDX_BAT_STATE(e) == VHDX_SB_PRESENT) {
		ret = vhdx_meta_read(v, p, VHDX_SB_BLOCK, VHDX_BAT_OFFSET(e));
		if (ret) {
			free(p);
			return ret;
		}
	}
	v->sb[c] = p;
	return 0;
}

/* Bits of block b's sectors start at this bit of its chunk's bitmap. */
static uint64_t sb_bit(const struct vhdx *v, uint64_t b)
{
	return (b % v->chunk_ratio) * (v->block_size / v->lsec);
}

static bool bit_get(const uint8_t *bm, uint64_t bit)
{
	return bm[bit / 8] >> (bit % 8) & 1;
}

/* Length in sectors of the run of equal bits at bit, at most max. */
static uint64_t bit_run(const uint8_t *bm, uint64_t bit, uint64_t max, bool *val)
{
	uint64_t n = 1;

	*val = bit_get(bm, bit);
	while (n < max && bit_get(bm, bit + n) == *val)
		n++;
	return n;
}

int vhdx_set_geometry(struct vhdx *v, uint64_t vsize)
{
	uint64_t entries = vhdx_bat_count(vsize, v->block_size, v->lsec, v->has_parent);
	uint64_t cap = ALIGN_UP(entries ? entries : 1, VHDX_LOG_SECTOR / 8);
	uint64_t old_cap = v->bat_cap;
	uint64_t nblocks = (vsize + v->block_size - 1) / v->block_size;
	uint64_t nsb = (nblocks + v->chunk_ratio - 1) / v->chunk_ratio;

	if (cap > old_cap) {
		uint64_t *nb = realloc(v->bat, cap * 8);
		if (!nb)
			return -ENOMEM;
		memset(nb + old_cap, 0, (cap - old_cap) * 8);
		v->bat = nb;
		v->bat_cap = cap;
	}
	if (nsb > v->nsb || !v->sb) {
		uint8_t **ns = realloc(v->sb, (nsb ? nsb : 1) * sizeof(*ns));
		if (!ns)
			return -ENOMEM;
		for (uint64_t i = v->sb ? v->nsb : 0; i < nsb; i++)
			ns[i] = NULL;
		v->sb = ns;
	} else {
		for (uint64_t i = nsb; i < v->nsb; i++) {
			free(v->sb[i]);
			v->sb[i] = NULL;
		}
	}
	v->vsize = vsize;
	v->nblocks = nblocks;
	v->nsb = nsb;
	v->bat_entries = entries;
	if (v->d)
		v->d->size = vsize;
	return 0;
}

/* ---- open / close ---- */

static bool vhdx_probe(const uint8_t *head, size_t head_len, const uint8_t tail[512],
		       uint64_t file_size)
{
	return head_len >= 8 && !memcmp(head, "vhdxfile", 8);
}

static bool is_sb_index(const struct vhdx *v, uint64_t i)
{
	return (i + 1) % (v->chunk_ratio + 1) == 0;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* A block (or bitmap block) at off must lie in the file, past the header
 * section and clear of the log, BAT and metadata regions. */
static bool placement_ok(const struct vhdx *v, uint64_t off, uint64_t len)
{
	return off >= VHDX_HEADER_SECTION && off <= v->file_size && len <= v->file_size - off &&
	       !overlaps(off, len, v->log_off, v->log_len) &&
	       !overlaps(off, len, v->bat_off, v->bat_len) &&
	       !overlaps(off, len, v->meta_off, v->meta_len);
}

static int load_bat(struct vhdx *v, struct disk_error *err)
{
	const char *path = v->d->path;
	uint64_t bytes = ALIGN_UP(v->bat_entries * 8, VHDX_LOG_SECTOR);
	uint8_t *raw;
	int ret;

	ret = vhdx_set_geometry(v, v->vsize);
	if (ret)
		return disk_fail(err, ret, "%s: out of memory for the BAT", path);
	bytes = MIN(bytes, v->bat_len);
	raw = disk_alloc_aligned(bytes);
	if (!raw)
		return disk_fail(err, -ENOMEM, "%s: out of memory for the BAT", path);
	ret = vhdx_meta_read(v, raw, bytes, v->bat_off);
	if (ret) {
		free(raw);
		return disk_fail(err, ret, "%s: VHDX: cannot read the BAT: %s", path, strerror(-ret));
	}
	for (uint64_t i = 0; i < bytes / 8; i++)
		v->bat[i] = vhdx_le64(raw + 8 * i);
	free(raw);
	/* Read-only, the image may be one a worker goes on writing (shared
	 * for a live checkpoint or merge, disk_share): it grows a block before
	 * the BAT points at it, so the size after the BAT was read covers
	 * every entry read, where the size seen at open may not. */
	struct stat now;
	if (v->rdonly && fstat(v->fd, &now) == 0 && (uint64_t)now.st_size > v->file_size)
		v->file_size = (uint64_t)now.st_size;
	for (uint64_t i = 0; i < v->bat_entries; i++) {
		uint64_t e = v->bat[i], off = VHDX_BAT_OFFSET(e);
		unsigned st = VHDX_BAT_STATE(e);

		if (is_sb_index(v, i)) {
			if (st != VHDX_SB_NOT_PRESENT && st != VHDX_SB_PRESENT)
				return disk_fail(err, -EINVAL, "%s: VHDX: BAT entry %llu: invalid "
						 "sector bitmap state %u", path,
						 (unsigned long long)i, st);
			if (st == VHDX_SB_PRESENT && v->has_parent &&
			    !placement_ok(v, off, VHDX_SB_BLOCK))
				return disk_fail(err, -EINVAL, "%s: VHDX: BAT entry %llu: sector "
						 "bitmap at %llu lies past the end of the file or "
						 "on metadata", path, (unsigned long long)i,
						 (unsigned long long)off);
			continue;
		}
		uint64_t b = i - i / (v->chunk_ratio + 1);
		uint64_t len = MIN((uint64_t)v->block_size, v->vsize - b * v->block_size);
		if (st == 4 || st == 5 || (st == VHDX_PB_PARTIALLY_PRESENT && !v->has_parent))
			return disk_fail(err, -EINVAL, "%s: VHDX: BAT entry %llu: invalid payload "
					 "block state %u", path, (unsigned long long)i, st);
		if ((st == VHDX_PB_FULLY_PRESENT || st == VHDX_PB_PARTIALLY_PRESENT) &&
		    !placement_ok(v, off, len))
			return disk_fail(err, -EINVAL, "%s: VHDX: BAT entry %llu: block at %llu lies "
					 "past the end of the file (%llu bytes) or on metadata",
					 path, (unsigned long long)i, (unsigned long long)off,
					 (unsigned long long)v->file_size);
	}
	return 0;
}

static void vhdx_free(struct vhdx *v)
{
	if (!v)
		return;
	for (uint64_t i = 0; v->sb && i < v->nsb; i++)
		free(v->sb[i]);
	free(v->sb);
	free(v->bat);
	free(v->meta);
	free(v->freed);
	vhdx_overlay_free(v);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

static int vhdx_open(struct disk *d, struct disk_error *err)
{
	struct vhdx *v;
	struct stat st;
	uint8_t *ident = NULL;
	int ret;

	v = calloc(1, sizeof(*v));
	if (!v)
		return disk_fail(err, -ENOMEM, "%s: out of memory", d->path);
	pthread_mutex_init(&v->lock, NULL);
	v->d = d;
	v->fd = d->fd;
	v->rdonly = d->flags & DISK_OPEN_RDONLY;
	if (fstat(d->fd, &st) < 0) {
		ret = disk_fail(err, -errno, "%s: cannot stat: %s", d->path, strerror(errno));
		goto fail;
	}
	v->file_size = v->durable_size = (uint64_t)st.st_size;
	ident = disk_alloc_aligned(4096); /* aligned: the file may be O_DIRECT */
	if (!ident || v->file_size < VHDX_HEADER_SECTION || pread_full(d->fd, ident, 4096, 0) ||
	    memcmp(ident, "vhdxfile", 8)) {
		free(ident);
		ret = disk_fail(err, -EINVAL, "%s: VHDX: not a VHDX file or truncated (%llu bytes, "
				"the header section alone is 1 MiB)", d->path,
				(unsigned long long)v->file_size);
		goto fail;
	}
	free(ident);
	ret = vhdx_parse_headers(v, err);
	if (!ret)
		ret = vhdx_log_replay(v, err);
	if (!ret)
		ret = vhdx_parse_regions(v, err);
	if (!ret)
		ret = vhdx_parse_metadata(v, err);
	if (!ret)
		ret = load_bat(v, err);
	if (ret)
		goto fail;
	if (!v->rdonly && !v->log_len) {
		ret = disk_fail(err, -EOPNOTSUPP, "%s: VHDX: the file has no log, so it cannot be "
				"written safely; open it read-only", d->path);
		goto fail;
	}
	d->priv = v;
	d->size = v->vsize;
	d->sector = v->lsec;
	d->type = v->has_parent ? DISK_TYPE_DIFFERENCING
				: v->leave_allocated ? DISK_TYPE_FIXED : DISK_TYPE_DYNAMIC;
	return 0;
fail:
	vhdx_free(v);
	d->priv = NULL;
	return ret;
}

static void vhdx_close(struct disk *d)
{
	struct vhdx *v = d->priv;

	if (!v)
		return;
	/* disk_close flushed: pages still deferred mean that failed */
	if (!v->rdonly && !v->crashed && v->file_guid_done && !v->npend) {
		struct vhdx_header h = v->hdr;

		/* mark clean: everything applied, log empty; both copies current */
		if (fdatasync(v->fd) == 0) {
			memset(&h.log_guid, 0, sizeof(h.log_guid));
			if (vhdx_header_update(v, &h) == 0)
				vhdx_header_update(v, &h);
		}
	}
	vhdx_free(v);
	d->priv = NULL;
}

/* ---- data I/O ---- */

static int data_read(struct vhdx *v, void *buf, size_t len, uint64_t off)
{
	if (v->noverlay)
		return vhdx_meta_read(v, buf, len, off);
	return pread_full(v->fd, buf, len, (off_t)off);
}

static int parent_read(struct vhdx *v, uint8_t *buf, size_t len, uint64_t off)
{
	struct disk *p = v->d->parent;
	uint64_t psize;

	if (!p)
		return -ENXIO;
	psize = disk_size(p);
	if (off >= psize) {
		memset(buf, 0, len);
		return 0;
	}
	if (len > psize - off) {
		memset(buf + (psize - off), 0, len - (psize - off));
		len = (size_t)(psize - off);
	}
	return disk_pread(p, buf, len, off);
}

/* Reads [off, off+n) of block b, which is PARTIALLY_PRESENT. */
static int read_partial(struct vhdx *v, uint8_t *buf, size_t n, uint64_t off, uint64_t e)
{
	uint64_t b = off / v->block_size, in = off % v->block_size, c = b / v->chunk_ratio;

	while (n) {
		uint64_t sectors;
		bool present;
		int ret;

		pthread_mutex_lock(&v->lock);
		ret = vhdx_sb_load(v, c);
		if (!ret)
			sectors = bit_run(v->sb[c], sb_bit(v, b) + in / v->lsec, n / v->lsec, &present);
		pthread_mutex_unlock(&v->lock);
		if (ret)
			return ret;
		size_t len = (size_t)(sectors * v->lsec);
		ret = present ? data_read(v, buf, len, VHDX_BAT_OFFSET(e) + in)
			      : parent_read(v, buf, len, off);
		if (ret)
			return ret;
		buf += len;
		off += len;
		in += len;
		n -= len;
	}
	return 0;
}

static int read_segment(struct vhdx *v, uint8_t *buf, size_t n, uint64_t off)
{
	uint64_t b = off / v->block_size, e = vhdx_bat_get(v, vhdx_bat_index(v, b));

	switch (VHDX_BAT_STATE(e)) {
	case VHDX_PB_FULLY_PRESENT:
		return data_read(v, buf, n, VHDX_BAT_OFFSET(e) + off % v->block_size);
	case VHDX_PB_PARTIALLY_PRESENT:
		return read_partial(v, buf, n, off, e);
	case VHDX_PB_ZERO:
		memset(buf, 0, n);
		return 0;
	default:
		if (v->has_parent)
			return parent_read(v, buf, n, off);
		memset(buf, 0, n);
		return 0;
	}
}

static bool range_ok(struct vhdx *v, size_t len, uint64_t off)
{
	return off % v->lsec == 0 && len % v->lsec == 0 && off <= v->vsize && len <= v->vsize - off;
}

static int write_segment(struct vhdx *v, const uint8_t *buf, size_t n, uint64_t off);

/* Splits [off, off+len) at block boundaries and reads each piece into rbuf
 * or writes it from wbuf (exactly one of them is set). */
static int by_block(struct vhdx *v, uint8_t *rbuf, const uint8_t *wbuf, size_t len, uint64_t off)
{
	int ret = 0;

	if (!range_ok(v, len, off))
		return -EINVAL;
	/* counted from before the first BAT look-up to after the last data
	 * I/O: discarded space is not reused under us (take_freed) */
	__atomic_add_fetch(&v->io_active, 1, __ATOMIC_SEQ_CST);
	while (len && !ret) {
		size_t n = (size_t)MIN((uint64_t)len, v->block_size - off % v->block_size);
		ret = rbuf ? read_segment(v, rbuf, n, off) : write_segment(v, wbuf, n, off);
		rbuf = rbuf ? rbuf + n : NULL;
		wbuf = wbuf ? wbuf + n : NULL;
		off += n;
		len -= n;
	}
	__atomic_sub_fetch(&v->io_active, 1, __ATOMIC_SEQ_CST);
	return ret;
}

static int vhdx_pread(struct disk *d, void *buf, size_t len, uint64_t off)
{
	return by_block(d->priv, buf, NULL, len, off);
}

/* Sets (val) the bits of sectors [first, first+count) of block b in txn
 * copies of the bitmap pages of its chunk. The SB block must be present. */
static int txn_bits(struct vhdx_txn *t, struct vhdx *v, uint64_t b, uint64_t first,
		    uint64_t count, bool val)
{
	uint64_t c = b / v->chunk_ratio;
	uint64_t sb_off = VHDX_BAT_OFFSET(vhdx_bat_get(v, vhdx_sb_index(v, c)));
	uint64_t bit = sb_bit(v, b) + first, end = bit + count;

	for (uint64_t pg = bit / 8 / VHDX_LOG_SECTOR; pg * VHDX_LOG_SECTOR * 8 < end; pg++) {
		uint8_t *mem = v->sb[c] + pg * VHDX_LOG_SECTOR;
		uint8_t *p = vhdx_txn_page(t, sb_off + pg * VHDX_LOG_SECTOR, mem, mem);
		uint64_t lo = MAX(bit, pg * VHDX_LOG_SECTOR * 8);
		uint64_t hi = MIN(end, (pg + 1) * VHDX_LOG_SECTOR * 8);

		if (!p)
			return -ENOSPC;
		for (uint64_t k = lo - pg * VHDX_LOG_SECTOR * 8; k < hi - pg * VHDX_LOG_SECTOR * 8;
		     k++) {
			if (val)
				p[k / 8] |= (uint8_t)(1u << (k % 8));
			else
				p[k / 8] &= (uint8_t)~(1u << (k % 8));
		}
	}
	return 0;
}

/* Makes the sector bitmap block of block b's chunk present (in txn when
 * newly allocated) and loaded. Locked. */
static int ensure_sb(struct vhdx_txn *t, struct vhdx *v, uint64_t b)
{
	uint64_t c = b / v->chunk_ratio, idx = vhdx_sb_index(v, c), off;
	int ret = vhdx_sb_load(v, c);

	if (ret || VHDX_BAT_STATE(vhdx_bat_get(v, idx)) == VHDX_SB_PRESENT)
		return ret;
	ret = vhdx_alloc_space(v, VHDX_SB_BLOCK, &off);
	if (ret)
		return ret;
	memset(v->sb[c], 0, VHDX_SB_BLOCK);
	/* the bitmap pages are written at their new place, so the in-memory
	 * BAT must point there before txn_bits looks it up */
	ret = vhdx_txn_bat(t, v, idx, VHDX_BAT_ENTRY(VHDX_SB_PRESENT, off));
	if (!ret)
		__atomic_store_n(&v->bat[idx], VHDX_BAT_ENTRY(VHDX_SB_PRESENT, off),
				 __ATOMIC_RELEASE);
	return ret;
}

static uint64_t block_len(const struct vhdx *v, uint64_t b)
{
	return MIN((uint64_t)v->block_size, v->vsize - b * v->block_size);
}

static bool bits_all(struct vhdx *v, uint64_t b, uint64_t first, uint64_t count)
{
	const uint8_t *bm = v->sb[b / v->chunk_ratio];
	uint64_t bit = sb_bit(v, b) + first;

	for (uint64_t k = 0; k < count; k++)
		if (!bit_get(bm, bit + k))
			return false;
	return true;
}

/* The slow path of a write into block b: allocates or updates bitmaps.
 * Locked. */
static int write_locked(struct vhdx *v, const uint8_t *buf, size_t n, uint64_t off)
{
	uint64_t b = off / v->block_size, in = off % v->block_size;
	uint64_t idx = vhdx_bat_index(v, b), e = vhdx_bat_get(v, idx), boff;
	unsigned st = VHDX_BAT_STATE(e);
	bool whole = in == 0 && n == block_len(v, b);
	uint64_t first = in / v->lsec, count = n / v->lsec;
	struct vhdx_txn t;
	int ret;

	ret = vhdx_mark_dirty(v, true);
	if (ret)
		return ret;
	if (st == VHDX_PB_FULLY_PRESENT)
		return pwrite_full(v->fd, buf, n, (off_t)(VHDX_BAT_OFFSET(e) + in));
	vhdx_txn_init(&t);
	if (st == VHDX_PB_PARTIALLY_PRESENT) {
		ret = vhdx_sb_load(v, b / v->chunk_ratio);
		if (ret)
			goto out;
		boff = VHDX_BAT_OFFSET(e);
		ret = pwrite_full(v->fd, buf, n, (off_t)(boff + in));
		if (ret || bits_all(v, b, first, count))
			goto out;
		ret = whole ? vhdx_txn_bat(&t, v, idx, VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT, boff))
			    : txn_bits(&t, v, b, first, count, true);
	} else if (!v->has_parent || st == VHDX_PB_ZERO || whole) {
		/* the rest of a new block reads as zeroes: right unless the
		 * parent shows through, which whole covers */
		ret = vhdx_alloc_space(v, v->block_size, &boff);
		if (!ret)
			ret = pwrite_full(v->fd, buf, n, (off_t)(boff + in));
		if (!ret)
			ret = vhdx_txn_bat(&t, v, idx, VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT, boff));
	} else {
		ret = ensure_sb(&t, v, b);
		if (!ret)
			ret = vhdx_alloc_space(v, v->block_size, &boff);
		if (!ret)
			ret = pwrite_full(v->fd, buf, n, (off_t)(boff + in));
		if (!ret)
			ret = txn_bits(&t, v, b, 0, v->block_size / v->lsec, false);
		if (!ret)
			ret = txn_bits(&t, v, b, first, count, true);
		if (!ret)
			ret = vhdx_txn_bat(&t, v, idx,
					   VHDX_BAT_ENTRY(VHDX_PB_PARTIALLY_PRESENT, boff));
	}
	/* made durable by the next flush, which syncs the data first */
	if (!ret)
		ret = vhdx_txn_defer(v, &t);
out:
	vhdx_txn_free(&t);
	return ret;
}

static int ensure_data_guid(struct vhdx *v)
{
	int ret;

	if (__atomic_load_n(&v->data_guid_done, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&v->lock);
	ret = vhdx_mark_dirty(v, true);
	pthread_mutex_unlock(&v->lock);
	return ret;
}

static int write_segment(struct vhdx *v, const uint8_t *buf, size_t n, uint64_t off)
{
	uint64_t b = off / v->block_size, e = vhdx_bat_get(v, vhdx_bat_index(v, b));
	int ret;

	if (VHDX_BAT_STATE(e) == VHDX_PB_FULLY_PRESENT) {
		ret = ensure_data_guid(v);
		if (!ret)
			ret = pwrite_full(v->fd, buf, n, (off_t)(VHDX_BAT_OFFSET(e) + off % v->block_size));
		return ret;
	}
	/* under the lock this thread holds no BAT look-up of its own: it may
	 * reuse discarded space itself */
	__atomic_sub_fetch(&v->io_active, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&v->lock);
	ret = v->crashed ? -EIO : write_locked(v, buf, n, off);
	pthread_mutex_unlock(&v->lock);
	__atomic_add_fetch(&v->io_active, 1, __ATOMIC_SEQ_CST);
	return ret;
}

static int vhdx_pwrite(struct disk *d, const void *buf, size_t len, uint64_t off)
{
	struct vhdx *v = d->priv;

	if (v->rdonly)
		return -EROFS;
	return by_block(v, NULL, buf, len, off);
}

static int vhdx_flush(struct disk *d)
{
	struct vhdx *v = d->priv;

	int ret = 0;

	if (v->rdonly)
		return 0;
	pthread_mutex_lock(&v->lock);
	if (v->crashed)
		ret = -EIO;
	else if (v->npend)
		ret = vhdx_pend_commit(v); /* syncs the data, then logs the pages */
	else if (fdatasync(v->fd) < 0)
		ret = -errno;
	pthread_mutex_unlock(&v->lock);
	return ret;
}

/* ---- discard / write zeroes ---- */

/* Zeroes file bytes [off, off+len): a hole where the filesystem can. */
static int zero_file_range(struct vhdx *v, uint64_t off, uint64_t len)
{
	/* a fixed disk keeps its space allocated (LeaveBlockAllocated) */
	int mode = v->leave_allocated ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
				      : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

	if (fallocate(v->fd, mode, (off_t)off, (off_t)len) == 0)
		return 0;
	for (uint64_t done = 0; done < len;) {
		size_t n = (size_t)MIN(len - done, (uint64_t)ZERO_BUF);
		int ret = pwrite_full(v->fd, zero_buf, n, (off_t)(off + done));
		if (ret)
			return ret;
		done += n;
	}
	return 0;
}

/* Drops [off, off+n) of one block. zero: later reads return zeroes (even
 * in a differencing disk); else a differencing disk shows its parent.
 * Locked. */
static int drop_locked(struct vhdx *v, uint64_t off, uint64_t n, bool zero, bool may_unmap)
{
	uint64_t b = off / v->block_size, in = off % v->block_size;
	uint64_t idx = vhdx_bat_index(v, b), e = vhdx_bat_get(v, idx);
	unsigned st = VHDX_BAT_STATE(e);
	bool whole = in == 0 && n == block_len(v, b);
	bool present = st == VHDX_PB_FULLY_PRESENT || st == VHDX_PB_PARTIALLY_PRESENT;
	uint64_t first = in / v->lsec, count = n / v->lsec;
	struct vhdx_txn t;
	int ret;

	ret = vhdx_mark_dirty(v, true);
	if (ret)
		return ret;
	vhdx_txn_init(&t);
	if (whole && may_unmap && !v->leave_allocated) {
		unsigned ns = zero || !v->has_parent ? VHDX_PB_ZERO : VHDX_PB_NOT_PRESENT;
		if (st == ns)
			goto out;
		ret = vhdx_txn_bat(&t, v, idx, VHDX_BAT_ENTRY(ns, 0));
		if (!ret)
			ret = vhdx_txn_commit(v, &t);
		/* the entry is durably gone: the zeroed space may take a new block */
		if (!ret && present && !zero_file_range(v, VHDX_BAT_OFFSET(e), v->block_size))
			give_back(v, VHDX_BAT_OFFSET(e));
		goto out;
	}
	if (!v->has_parent || (zero && st == VHDX_PB_FULLY_PRESENT)) {
		if (present) /* (partially present needs a parent: not here) */
			ret = zero_file_range(v, VHDX_BAT_OFFSET(e) + in, n);
		goto out;
	}
	if (zero && st == VHDX_PB_ZERO)
		goto out;
	if (zero) {
		/* differencing, not fully present: write real zeroes */
		for (uint64_t done = 0; done < n && !ret;) {
			size_t k = (size_t)MIN(n - done, (uint64_t)ZERO_BUF);
			ret = write_locked(v, zero_buf, k, off + done);
			done += k;
		}
		goto out;
	}
	/* differencing discard of part of a block: clear its bitmap bits */
	if (st == VHDX_PB_FULLY_PRESENT) {
		ret = ensure_sb(&t, v, b);
		if (!ret)
			ret = txn_bits(&t, v, b, 0, v->block_size / v->lsec, true);
		if (!ret)
			ret = vhdx_txn_bat(&t, v, idx, VHDX_BAT_ENTRY(VHDX_PB_PARTIALLY_PRESENT,
								   VHDX_BAT_OFFSET(e)));
	} else if (st == VHDX_PB_PARTIALLY_PRESENT) {
		ret = vhdx_sb_load(v, b / v->chunk_ratio);
	} else if (st == VHDX_PB_ZERO) {
		/* zeroes except where the parent shows again: a fresh (zero)
		 * block with every other sector present */
		uint64_t boff;

		ret = ensure_sb(&t, v, b);
		if (!ret)
			ret = vhdx_alloc_space(v, v->block_size, &boff);
		if (!ret)
			ret = txn_bits(&t, v, b, 0, v->block_size / v->lsec, true);
		if (!ret)
			ret = vhdx_txn_bat(&t, v, idx,
					   VHDX_BAT_ENTRY(VHDX_PB_PARTIALLY_PRESENT, boff));
	} else {
		goto out;
	}
	if (!ret)
		ret = txn_bits(&t, v, b, first, count, false);
	if (!ret)
		ret = vhdx_txn_commit(v, &t);
out:
	vhdx_txn_free(&t);
	return ret;
}

static int drop_range(struct disk *d, uint64_t off, uint64_t len, bool zero, bool may_unmap)
{
	struct vhdx *v = d->priv;

	if (v->rdonly)
		return -EROFS;
	if (!range_ok(v, (size_t)len, off) || len > SIZE_MAX)
		return -EINVAL;
	while (len) {
		uint64_t n = MIN(len, v->block_size - off % v->block_size);
		int ret;

		pthread_mutex_lock(&v->lock);
		ret = v->crashed ? -EIO : drop_locked(v, off, n, zero, may_unmap);
		pthread_mutex_unlock(&v->lock);
		if (ret)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

static int vhdx_discard(struct disk *d, uint64_t off, uint64_t len)
{
	return drop_range(d, off, len, false, true);
}

static int vhdx_write_zeroes(struct disk *d, uint64_t off, uint64_t len, bool may_unmap)
{
	return drop_range(d, off, len, true, may_unmap);
}

/* ---- mapping ---- */

/* Classifies the run at off within one block: kind, file offset, length. */
static int classify(struct vhdx *v, uint64_t off, uint64_t max, enum disk_extent_kind *kind,
		    uint64_t *file_off, uint64_t *len)
{
	uint64_t b = off / v->block_size, in = off % v->block_size;
	uint64_t e = vhdx_bat_get(v, vhdx_bat_index(v, b));
	uint64_t n = MIN(max, v->block_size - in);

	*len = n;
	*file_off = 0;
	switch (VHDX_BAT_STATE(e)) {
	case VHDX_PB_FULLY_PRESENT:
		*kind = DISK_EXTENT_DATA;
		*file_off = VHDX_BAT_OFFSET(e) + in;
		return 0;
	case VHDX_PB_PARTIALLY_PRESENT: {
		uint64_t c = b / v->chunk_ratio, sectors = 0;
		bool present = false;
		int ret;

		pthread_mutex_lock(&v->lock);
		ret = vhdx_sb_load(v, c);
		if (!ret)
			sectors = bit_run(v->sb[c], sb_bit(v, b) + in / v->lsec,
					  (n + v->lsec - 1) / v->lsec, &present);
		pthread_mutex_unlock(&v->lock);
		if (ret)
			return ret;
		*len = MIN(n, sectors * v->lsec);
		*kind = present ? DISK_EXTENT_DATA : DISK_EXTENT_PARENT;
		*file_off = present ? VHDX_BAT_OFFSET(e) + in : 0;
		return 0;
	}
	case VHDX_PB_ZERO:
		*kind = DISK_EXTENT_ZERO;
		return 0;
	default:
		*kind = v->has_parent ? DISK_EXTENT_PARENT : DISK_EXTENT_ZERO;
		return 0;
	}
}

static int vhdx_map(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext)
{
	struct vhdx *v = d->priv;
	uint64_t foff, n;
	enum disk_extent_kind kind;
	int ret;

	if (off >= v->vsize || !len)
		return -EINVAL;
	len = MIN(len, v->vsize - off);
	ret = classify(v, off, len, &kind, &foff, &n);
	if (ret)
		return ret;
	if (kind == DISK_EXTENT_DATA) /* the caller's I/O is out of our sight */
		__atomic_store_n(&v->mapped, true, __ATOMIC_RELEASE);
	ext->kind = kind;
	ext->fd = v->fd;
	ext->file_off = foff;
	ext->len = n;
	/* merge following blocks of the same kind (contiguous in the file) */
	while (ext->len < len) {
		uint64_t f2, n2;
		enum disk_extent_kind k2;

		ret = classify(v, off + ext->len, len - ext->len, &k2, &f2, &n2);
		if (ret || k2 != kind || (kind == DISK_EXTENT_DATA && f2 != foff + ext->len))
			break;
		ext->len += n2;
	}
	return 0;
}

static int vhdx_block_status(struct disk *d, uint64_t off, uint64_t len, bool *allocated,
			     uint64_t *run_len)
{
	struct vhdx *v = d->priv;
	uint64_t done = 0;

	if (off >= v->vsize || !len)
		return -EINVAL;
	len = MIN(len, v->vsize - off);
	while (done < len) {
		enum disk_extent_kind kind;
		uint64_t foff, n;
		int ret = classify(v, off + done, len - done, &kind, &foff, &n);
		bool a = kind == DISK_EXTENT_DATA;

		if (ret)
			return ret;
		if (done && a != *allocated)
			break;
		*allocated = a;
		done += n;
	}
	*run_len = done;
	return 0;
}

/* ---- the block map for callers' own writes (disk_map_write) ---- */

/* Readies block b for a write whose data the caller moves itself. A new
 * block that reads as zeroes where it is not written (no parent shows
 * through) becomes FULLY_PRESENT at once: until the data lands it still
 * reads as zeroes, as before. In a differencing disk it starts
 * PARTIALLY_PRESENT with no sector present, so the parent shows through
 * until vhdx_commit_write marks what was written. Locked. */
static int prepare_locked(struct vhdx *v, uint64_t b)
{
	uint64_t idx = vhdx_bat_index(v, b), boff;
	unsigned st = VHDX_BAT_STATE(vhdx_bat_get(v, idx));
	struct vhdx_txn t;
	int ret;

	if (st == VHDX_PB_FULLY_PRESENT || st == VHDX_PB_PARTIALLY_PRESENT)
		return 0;
	vhdx_txn_init(&t);
	if (!v->has_parent || st == VHDX_PB_ZERO) {
		ret = vhdx_alloc_space(v, v->block_size, &boff);
		if (!ret)
			ret = vhdx_txn_bat(&t, v, idx, VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT, boff));
	} else {
		ret = ensure_sb(&t, v, b);
		if (!ret)
			ret = vhdx_alloc_space(v, v->block_size, &boff);
		if (!ret)
			ret = txn_bits(&t, v, b, 0, v->block_size / v->lsec, false);
		if (!ret)
			ret = vhdx_txn_bat(&t, v, idx,
					   VHDX_BAT_ENTRY(VHDX_PB_PARTIALLY_PRESENT, boff));
	}
	/* logged by the next flush: until then the block reads as before
	 * (zeroes, or the parent) wherever its data has not landed */
	if (!ret)
		ret = vhdx_txn_defer(v, &t);
	vhdx_txn_free(&t);
	return ret;
}

static bool block_present(uint64_t e)
{
	return VHDX_BAT_STATE(e) == VHDX_PB_FULLY_PRESENT ||
	       VHDX_BAT_STATE(e) == VHDX_PB_PARTIALLY_PRESENT;
}

static int vhdx_map_write(struct disk *d, uint64_t off, uint64_t len, unsigned flags,
			  struct disk_extent *ext, bool *commit)
{
	struct vhdx *v = d->priv;
	uint64_t b = off / v->block_size, in = off % v->block_size;
	uint64_t n = MIN(len, v->block_size - in), e;
	int ret = 0;

	if (v->rdonly)
		return -EROFS;
	/* a discard racing with us may drop the block again: a few rounds */
	for (int round = 0;; round++) {
		e = vhdx_bat_get(v, vhdx_bat_index(v, b));
		if (block_present(e) && __atomic_load_n(&v->data_guid_done, __ATOMIC_ACQUIRE))
			break;
		if (!(flags & DISK_MAP_ALLOC))
			return -EWOULDBLOCK;
		if (round == 4)
			return -EAGAIN;
		pthread_mutex_lock(&v->lock);
		ret = v->crashed ? -EIO : vhdx_mark_dirty(v, true);
		if (!ret)
			ret = prepare_locked(v, b);
		pthread_mutex_unlock(&v->lock);
		if (ret)
			return ret;
	}
	__atomic_store_n(&v->mapped, true, __ATOMIC_RELEASE);
	ext->kind = DISK_EXTENT_DATA;
	ext->fd = v->fd;
	ext->file_off = VHDX_BAT_OFFSET(e) + in;
	ext->len = n;
	if (VHDX_BAT_STATE(e) == VHDX_PB_PARTIALLY_PRESENT) {
		pthread_mutex_lock(&v->lock);
		ret = vhdx_sb_load(v, b / v->chunk_ratio);
		if (!ret)
			*commit = !bits_all(v, b, in / v->lsec, n / v->lsec);
		pthread_mutex_unlock(&v->lock);
		return ret;
	}
	/* following whole blocks that lie right after it in the file */
	while (ext->len < len) {
		uint64_t e2 = vhdx_bat_get(v, vhdx_bat_index(v, ++b));

		if (VHDX_BAT_STATE(e2) != VHDX_PB_FULLY_PRESENT ||
		    VHDX_BAT_OFFSET(e2) != ext->file_off + ext->len)
			break;
		ext->len += MIN(len - ext->len, (uint64_t)v->block_size);
	}
	return 0;
}

/* Marks sectors [in, in+n) of block b present after their data was
 * written; a whole block becomes FULLY_PRESENT. Locked. */
static int commit_locked(struct vhdx *v, uint64_t b, uint64_t in, uint64_t n)
{
	uint64_t idx = vhdx_bat_index(v, b), e = vhdx_bat_get(v, idx);
	struct vhdx_txn t;
	int ret;

	if (VHDX_BAT_STATE(e) != VHDX_PB_PARTIALLY_PRESENT)
		return 0; /* fully present already, or dropped by a racing discard */
	ret = vhdx_sb_load(v, b / v->chunk_ratio);
	if (ret || bits_all(v, b, in / v->lsec, n / v->lsec))
		return ret;
	vhdx_txn_init(&t);
	if (in == 0 && n == block_len(v, b))
		ret = vhdx_txn_bat(&t, v, idx,
				   VHDX_BAT_ENTRY(VHDX_PB_FULLY_PRESENT, VHDX_BAT_OFFSET(e)));
	else
		ret = txn_bits(&t, v, b, in / v->lsec, n / v->lsec, true);
	/* the data is written; the next flush syncs it before it logs the
	 * bits, so a bit on disk never covers missing data */
	if (!ret)
		ret = vhdx_txn_defer(v, &t);
	vhdx_txn_free(&t);
	return ret;
}

static int vhdx_commit_write(struct disk *d, uint64_t off, uint64_t len)
{
	struct vhdx *v = d->priv;

	if (v->rdonly)
		return -EROFS;
	while (len) {
		uint64_t b = off / v->block_size, in = off % v->block_size;
		uint64_t n = MIN(len, v->block_size - in);
		uint64_t e = vhdx_bat_get(v, vhdx_bat_index(v, b));

		if (VHDX_BAT_STATE(e) == VHDX_PB_PARTIALLY_PRESENT) {
			int ret;

			pthread_mutex_lock(&v->lock);
			ret = v->crashed ? -EIO : commit_locked(v, b, in, n);
			pthread_mutex_unlock(&v->lock);
			if (ret)
				return ret;
		}
		off += n;
		len -= n;
	}
	return 0;
}

/* A log replayed in memory (read-only open) may hold newer copies of file
 * pages than the file: then only vhdx_pread knows where the data is. */
static int vhdx_map_read(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext)
{
	struct vhdx *v = d->priv;

	if (v->noverlay)
		return -EOPNOTSUPP;
	return vhdx_map(d, off, len, ext);
}

static void vhdx_info(struct disk *d, struct disk_info *info)
{
	struct vhdx *v = d->priv;
	uint64_t alloc = 0;

	pthread_mutex_lock(&v->lock);
	for (uint64_t b = 0; b < v->nblocks; b++) {
		uint64_t e = vhdx_bat_get(v, vhdx_bat_index(v, b));
		uint64_t c = b / v->chunk_ratio;

		if (VHDX_BAT_STATE(e) == VHDX_PB_FULLY_PRESENT)
			alloc += block_len(v, b);
		else if (VHDX_BAT_STATE(e) == VHDX_PB_PARTIALLY_PRESENT && !vhdx_sb_load(v, c))
			for (uint64_t s = 0; s < block_len(v, b) / v->lsec; s++)
				alloc += bit_get(v->sb[c], sb_bit(v, b) + s) ? v->lsec : 0;
	}
	pthread_mutex_unlock(&v->lock);
	info->format = DISK_FORMAT_VHDX;
	info->type = d->type;
	info->virtual_size = v->vsize;
	info->file_size = v->file_size;
	info->allocated = alloc;
	info->block_size = v->block_size;
	info->logical_sector = v->lsec;
	info->physical_sector = v->psec;
	info->disk_id = v->disk_id;
	info->read_only = v->rdonly;
	info->has_parent = v->has_parent;
	info->parent_linkage = v->loc.linkage;
	info->log_replayed = v->log_replayed;
	info->parent_path[0] = 0;
	if (d->parent) {
		snprintf(info->parent_path, sizeof(info->parent_path), "%s", d->parent->path);
	} else if (v->has_parent) {
		char (*paths)[PATH_MAX] = calloc(1, PATH_MAX);
		if (paths && vhdx_parent_candidates(d, paths, 1) > 0)
			snprintf(info->parent_path, sizeof(info->parent_path), "%s", paths[0]);
		free(paths);
	}
}

static int vhdx_fix_identity(struct disk *d)
{
	return vhdx_mark_dirty(d->priv, true);
}

const struct disk_ops disk_vhdx_ops = {
	.format = DISK_FORMAT_VHDX,
	.probe = vhdx_probe,
	.open = vhdx_open,
	.fix_identity = vhdx_fix_identity,
	.close = vhdx_close,
	.pread = vhdx_pread,
	.pwrite = vhdx_pwrite,
	.flush = vhdx_flush,
	.discard = vhdx_discard,
	.write_zeroes = vhdx_write_zeroes,
	.map = vhdx_map,
	.map_read = vhdx_map_read,
	.map_write = vhdx_map_write,
	.commit_write = vhdx_commit_write,
	.block_status = vhdx_block_status,
	.info = vhdx_info,
	.create = vhdx_create,
	.parent_candidates = vhdx_parent_candidates,
	.check_parent = vhdx_check_parent,
	.set_parent = vhdx_set_parent,
	.resize = vhdx_resize,
	.check = vhdx_check,
};
