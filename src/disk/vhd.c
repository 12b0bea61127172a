/* VHD images: fixed, dynamic and differencing, per Microsoft's Virtual
 * Hard Disk Image Format Specification, reading what Hyper-V, Virtual PC
 * and QEMU write.
 *
 * Crash consistency: a block is allocated at the end of the file by writing
 * the new footer past it first (so the file always ends in a valid footer),
 * then its sector bitmap over the old footer; data goes in next. The BAT
 * entries and sector bitmaps that make new data visible are kept in memory
 * and written only by flush, after an fdatasync of the data, so the on-disk
 * metadata never points at data that is not durable. A kill at any point
 * leaves a consistent image holding every flushed write; unflushed
 * allocations are at worst leaked space past the last referenced block.
 *
 * Locking: v->lock guards the in-memory BAT, bitmaps and the end of file.
 * Reads and writes of allocated blocks run outside it. */
#include <errno.h>
#include <fcntl.h>
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

/* ---- byte order and checksums ---- */

uint16_t vhd_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint32_t vhd_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t vhd_get64(const uint8_t *p)
{
	return (uint64_t)vhd_get32(p) << 32 | vhd_get32(p + 4);
}

void vhd_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

void vhd_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void vhd_put64(uint8_t *p, uint64_t v)
{
	vhd_put32(p, (uint32_t)(v >> 32));
	vhd_put32(p + 4, (uint32_t)v);
}

uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < csum_off || i >= csum_off + 4)
			sum += buf[i];
	return ~sum;
}

void vhd_chs_geometry(uint64_t sectors, uint16_t *cyl, uint8_t *heads, uint8_t *spt)
{
	uint64_t cyl_times_heads;
	unsigned s, h;

	if (sectors > VHD_MAX_CHS_SECTORS)
		sectors = VHD_MAX_CHS_SECTORS;
	if (sectors >= 65535ULL * 16 * 63) {
		s = 255;
		h = 16;
		cyl_times_heads = sectors / s;
	} else {
		s = 17;
		cyl_times_heads = sectors / s;
		h = (unsigned)((cyl_times_heads + 1023) / 1024);
		if (h < 4)
			h = 4;
		if (cyl_times_heads >= h * 1024ULL || h > 16) {
			s = 31;
			h = 16;
			cyl_times_heads = sectors / s;
		}
		if (cyl_times_heads >= h * 1024ULL) {
			s = 63;
			h = 16;
			cyl_times_heads = sectors / s;
		}
	}
	*cyl = (uint16_t)(cyl_times_heads / h);
	*heads = (uint8_t)h;
	*spt = (uint8_t)s;
}

/* ---- footer and header ---- */

void vhd_footer_decode(struct vhd_footer *f, const uint8_t *b)
{
	memcpy(f->cookie, b, 8);
	f->features = vhd_get32(b + 8);
	f->version = vhd_get32(b + 12);
	f->data_offset = vhd_get64(b + 16);
	f->timestamp = vhd_get32(b + 24);
	memcpy(f->creator_app, b + 28, 4);
	f->creator_version = vhd_get32(b + 32);
	f->creator_os = vhd_get32(b + 36);
	f->original_size = vhd_get64(b + 40);
	f->current_size = vhd_get64(b + 48);
	f->cylinders = vhd_get16(b + 56);
	f->heads = b[58];
	f->sectors_per_track = b[59];
	f->disk_type = vhd_get32(b + 60);
	f->checksum = vhd_get32(b + 64);
	memcpy(f->unique_id, b + 68, 16);
	f->saved_state = b[84];
}

void vhd_footer_encode(const struct vhd_footer *f, uint8_t *b)
{
	memset(b, 0, VHD_FOOTER_SIZE);
	memcpy(b, f->cookie, 8);
	vhd_put32(b + 8, f->features);
	vhd_put32(b + 12, f->version);
	vhd_put64(b + 16, f->data_offset);
	vhd_put32(b + 24, f->timestamp);
	memcpy(b + 28, f->creator_app, 4);
	vhd_put32(b + 32, f->creator_version);
	vhd_put32(b + 36, f->creator_os);
	vhd_put64(b + 40, f->original_size);
	vhd_put64(b + 48, f->current_size);
	vhd_put16(b + 56, f->cylinders);
	b[58] = f->heads;
	b[59] = f->sectors_per_track;
	vhd_put32(b + 60, f->disk_type);
	memcpy(b + 68, f->unique_id, 16);
	b[84] = f->saved_state;
	vhd_put32(b + 64, vhd_checksum(b, VHD_FOOTER_SIZE, 64));
}

void vhd_header_decode(struct vhd_header *h, const uint8_t *b)
{
	memcpy(h->cookie, b, 8);
	h->data_offset = vhd_get64(b + 8);
	h->table_offset = vhd_get64(b + 16);
	h->version = vhd_get32(b + 24);
	h->max_entries = vhd_get32(b + 28);
	h->block_size = vhd_get32(b + 32);
	h->checksum = vhd_get32(b + 36);
	memcpy(h->parent_id, b + 40, 16);
	h->parent_timestamp = vhd_get32(b + 56);
	memcpy(h->parent_name, b + 64, 512);
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		const uint8_t *l = b + 576 + 24 * i;
		h->loc[i].code = vhd_get32(l);
		h->loc[i].space = vhd_get32(l + 4);
		h->loc[i].length = vhd_get32(l + 8);
		h->loc[i].offset = vhd_get64(l + 16);
	}
}

void vhd_header_encode(const struct vhd_header *h, uint8_t *b)
{
	memset(b, 0, VHD_HEADER_SIZE);
	memcpy(b, h->cookie, 8);
	vhd_put64(b + 8, h->data_offset);
	vhd_put64(b + 16, h->table_offset);
	vhd_put32(b + 24, h->version);
	vhd_put32(b + 28, h->max_entries);
	vhd_put32(b + 32, h->block_size);
	memcpy(b + 40, h->parent_id, 16);
	vhd_put32(b + 56, h->parent_timestamp);
	memcpy(b + 64, h->parent_name, 512);
	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		uint8_t *l = b + 576 + 24 * i;
		vhd_put32(l, h->loc[i].code);
		vhd_put32(l + 4, h->loc[i].space);
		vhd_put32(l + 8, h->loc[i].length);
		vhd_put64(l + 16, h->loc[i].offset);
	}
	vhd_put32(b + 36, vhd_checksum(b, VHD_HEADER_SIZE, 36));
}

/* The size the guest sees. Virtual PC and old QEMU ("vpc ", "qemu") go by
 * the CHS geometry; Hyper-V, disk2vhd, XenServer and QEMU's "qem2" by the
 * current size field. A maximal geometry means the size outgrew CHS, so
 * the current size rules there too (QEMU's reading, block/vpc.c). */
uint64_t vhd_visible_size(const struct vhd_footer *f)
{
	uint64_t chs = (uint64_t)f->cylinders * f->heads * f->sectors_per_track;
	bool chs_creator = !memcmp(f->creator_app, "vpc ", 4) || !memcmp(f->creator_app, "qemu", 4);

	if (chs_creator && chs && chs != VHD_MAX_CHS_SECTORS &&
	    chs * VHD_SECTOR <= f->current_size)
		return chs * VHD_SECTOR;
	return ALIGN_DOWN(f->current_size, (uint64_t)VHD_SECTOR);
}

static bool vhd_probe(const uint8_t *head, size_t head_len, const uint8_t tail[512],
		      uint64_t file_size)
{
	if (file_size < VHD_FOOTER_SIZE - 1)
		return false;
	if (!memcmp(tail, "conectix", 8) || !memcmp(tail + 1, "conectix", 8))
		return true;
	/* a dynamic disk whose footer at the end is damaged: the copy */
	return head_len >= 8 && !memcmp(head, "conectix", 8);
}

/* Reads and verifies a footer at off. -EINVAL: no cookie; -EBADMSG: bad
 * checksum. len is 512, or 511 for Virtual PC's old fixed disks. */
static int read_footer(int fd, uint64_t off, size_t len, struct vhd_footer *f, uint8_t *raw)
{
	int ret;

	memset(raw, 0, VHD_FOOTER_SIZE);
	ret = pread_full(fd, raw, len, (off_t)off);
	if (ret)
		return ret;
	if (memcmp(raw, "conectix", 8))
		return -EINVAL;
	vhd_footer_decode(f, raw);
	if (vhd_checksum(raw, VHD_FOOTER_SIZE, 64) != f->checksum)
		return -EBADMSG;
	return 0;
}

static int load_footer(struct disk *d, struct vhd *v, uint64_t fsize, struct disk_error *err)
{
	struct vhd_footer copy;
	uint8_t raw[VHD_FOOTER_SIZE];
	int ret, ret_copy;

	ret = read_footer(v->mfd, fsize - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, &v->footer,
			  v->footer_raw);
	if (ret == 0) {
		v->footer_pos = fsize - VHD_FOOTER_SIZE;
		return 0;
	}
	if (ret == -EINVAL &&
	    read_footer(v->mfd, fsize - 511, 511, &v->footer, v->footer_raw) == 0) {
		v->footer_pos = fsize - 511;
		v->footer_511 = true;
		return 0;
	}
	if (ret != -EINVAL && ret != -EBADMSG)
		return disk_fail(err, ret, "%s: cannot read the VHD footer: %s", d->path,
				 strerror(-ret));
	/* Dynamic disks keep a copy of the footer at offset 0. */
	ret_copy = read_footer(v->mfd, 0, VHD_FOOTER_SIZE, &copy, raw);
	if (ret_copy == 0 && copy.disk_type != VHD_TYPE_FIXED) {
		v->footer = copy;
		memcpy(v->footer_raw, raw, sizeof(raw));
		v->footer_recovered = true;
		v->footer_pos = ALIGN_UP(fsize, (uint64_t)VHD_SECTOR);
		return 0;
	}
	if (ret == -EBADMSG)
		return disk_fail(err, -EINVAL,
				 "%s: VHD footer checksum mismatch (stored 0x%08x, computed 0x%08x) "
				 "and no good copy at offset 0", d->path, v->footer.checksum,
				 vhd_checksum(v->footer_raw, VHD_FOOTER_SIZE, 64));
	return disk_fail(err, -EINVAL, "%s: no valid VHD footer (missing \"conectix\" cookie at "
			 "the end of the file%s)", d->path,
			 ret_copy == -EBADMSG ? "; the copy at offset 0 has a bad checksum" : "");
}

static int check_footer(struct disk *d, struct vhd *v, uint64_t fsize, struct disk_error *err)
{
	const struct vhd_footer *f = &v->footer;

	if (f->version >> 16 != 1)
		return disk_fail(err, -EINVAL, "%s: unsupported VHD version %u.%u", d->path,
				 f->version >> 16, f->version & 0xffff);
	if (f->disk_type != VHD_TYPE_FIXED && f->disk_type != VHD_TYPE_DYNAMIC &&
	    f->disk_type != VHD_TYPE_DIFF)
		return disk_fail(err, -EINVAL, "%s: unknown VHD disk type %u", d->path,
				 f->disk_type);
	d->size = vhd_visible_size(f);
	if (d->size == 0 || d->size > VHD_MAX_SIZE)
		return disk_fail(err, -EINVAL, "%s: absurd VHD size %llu bytes (the limit is "
				 "2040 GiB)", d->path, (unsigned long long)f->current_size);
	if (f->disk_type == VHD_TYPE_FIXED) {
		if (v->footer_pos < d->size)
			return disk_fail(err, -EINVAL, "%s: fixed VHD of %llu bytes but the file "
					 "holds only %llu bytes of data (truncated?)", d->path,
					 (unsigned long long)d->size,
					 (unsigned long long)v->footer_pos);
		v->data_end = v->footer_pos;
	}
	(void)fsize;
	return 0;
}

static int load_header(struct disk *d, struct vhd *v, uint64_t fsize, struct disk_error *err)
{
	struct vhd_header *h = &v->hdr;
	uint64_t bat_bytes, limit = v->footer_recovered ? fsize : v->footer_pos;
	int ret;

	v->hdr_off = v->footer.data_offset;
	if (v->hdr_off < VHD_FOOTER_SIZE || v->hdr_off > limit ||
	    limit - v->hdr_off < VHD_HEADER_SIZE)
		return disk_fail(err, -EINVAL, "%s: VHD dynamic header offset %llu is outside the "
				 "file (%llu bytes)", d->path, (unsigned long long)v->hdr_off,
				 (unsigned long long)fsize);
	ret = pread_full(v->mfd, v->hdr_raw, VHD_HEADER_SIZE, (off_t)v->hdr_off);
	if (ret)
		return disk_fail(err, ret, "%s: cannot read the VHD header: %s", d->path,
				 strerror(-ret));
	vhd_header_decode(h, v->hdr_raw);
	if (memcmp(h->cookie, "cxsparse", 8))
		return disk_fail(err, -EINVAL, "%s: VHD dynamic header has no \"cxsparse\" cookie",
				 d->path);
	if (vhd_checksum(v->hdr_raw, VHD_HEADER_SIZE, 36) != h->checksum)
		return disk_fail(err, -EINVAL, "%s: VHD dynamic header checksum mismatch (stored "
				 "0x%08x, computed 0x%08x)", d->path, h->checksum,
				 vhd_checksum(v->hdr_raw, VHD_HEADER_SIZE, 36));
	if (h->version >> 16 != 1)
		return disk_fail(err, -EINVAL, "%s: unsupported VHD header version %u.%u",
				 d->path, h->version >> 16, h->version & 0xffff);
	if (h->block_size < VHD_SECTOR || h->block_size > VHD_MAX_BLOCK ||
	    (h->block_size & (h->block_size - 1)))
		return disk_fail(err, -EINVAL, "%s: invalid VHD block size %u (must be a power of "
				 "two from 512 bytes to 256 MiB)", d->path, h->block_size);
	v->block_size = h->block_size;
	v->block_shift = (unsigned)__builtin_ctz(h->block_size);
	v->bitmap_size = (uint32_t)ALIGN_UP(h->block_size / VHD_SECTOR / 8, VHD_SECTOR);
	v->entries = h->max_entries;
	if ((uint64_t)v->entries << v->block_shift < d->size)
		return disk_fail(err, -EINVAL, "%s: the VHD block table (%u entries of %u bytes) "
				 "does not cover the disk size %llu", d->path, v->entries,
				 v->block_size, (unsigned long long)d->size);
	bat_bytes = (uint64_t)v->entries * 4;
	if (h->table_offset < VHD_FOOTER_SIZE || h->table_offset % VHD_SECTOR ||
	    h->table_offset > limit || limit - h->table_offset < bat_bytes)
		return disk_fail(err, -EINVAL, "%s: the VHD block table (%u entries at offset "
				 "%llu) lies outside the file (%llu bytes)", d->path, v->entries,
				 (unsigned long long)h->table_offset, (unsigned long long)fsize);
	if (h->table_offset < v->hdr_off + VHD_HEADER_SIZE &&
	    v->hdr_off < h->table_offset + bat_bytes)
		return disk_fail(err, -EINVAL, "%s: the VHD block table overlaps the header",
				 d->path);
	v->meta_end = MAX(v->hdr_off + VHD_HEADER_SIZE, h->table_offset + bat_bytes);
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

/* Does a block at [off, off+span) cover the footer copy, the header, the
 * BAT or (differencing) parent locator data? */
static bool block_hits_metadata(struct disk *d, struct vhd *v, uint64_t off, uint64_t span)
{
	if (overlaps(off, span, 0, VHD_FOOTER_SIZE) ||
	    overlaps(off, span, v->hdr_off, VHD_HEADER_SIZE) ||
	    overlaps(off, span, v->hdr.table_offset, (uint64_t)v->entries * 4))
		return true;
	for (int i = 0; d->type == DISK_TYPE_DIFFERENCING && i < VHD_MAX_LOCATORS; i++) {
		const struct vhd_locator *l = &v->hdr.loc[i];
		if (l->code && l->length && overlaps(off, span, l->offset, l->length))
			return true;
	}
	return false;
}

/* Reads the BAT and checks every entry: inside the file, clear of the
 * metadata, no two blocks overlapping. */
static int load_bat(struct disk *d, struct vhd *v, uint64_t fsize, struct disk_error *err)
{
	uint64_t limit = v->footer_recovered ? fsize : v->footer_pos;
	uint64_t span = (uint64_t)v->bitmap_size + v->block_size;
	uint64_t bat_bytes = (uint64_t)v->entries * 4;
	uint32_t *sorted = NULL;
	uint8_t *raw;
	size_t nsorted = 0;
	int ret;

	raw = malloc(bat_bytes ? bat_bytes : 1);
	v->bat = calloc(v->entries ? v->entries : 1, sizeof(*v->bat));
	v->bat_dirty = calloc(v->entries / 128 + 1, sizeof(*v->bat_dirty));
	sorted = calloc(v->entries ? v->entries : 1, sizeof(*sorted));
	if (!raw || !v->bat || !v->bat_dirty || !sorted) {
		ret = disk_fail(err, -ENOMEM, "%s: out of memory for a %u-entry block table",
				d->path, v->entries);
		goto out;
	}
	ret = bat_bytes ? pread_full(v->mfd, raw, bat_bytes, (off_t)v->hdr.table_offset) : 0;
	if (ret) {
		disk_fail(err, ret, "%s: cannot read the VHD block table: %s", d->path,
			  strerror(-ret));
		goto out;
	}
	for (uint32_t i = 0; i < v->entries; i++) {
		uint32_t e = vhd_get32(raw + 4 * (size_t)i);
		uint64_t off = (uint64_t)e * VHD_SECTOR;

		v->bat[i] = e;
		if (e == VHD_BAT_UNUSED)
			continue;
		if (off + span > limit) {
			ret = disk_fail(err, -EINVAL, "%s: VHD block table entry %u points past the "
					"end of the file (block at %llu, file %llu bytes)", d->path,
					i, (unsigned long long)off, (unsigned long long)fsize);
			goto out;
		}
		if (block_hits_metadata(d, v, off, span)) {
			ret = disk_fail(err, -EINVAL, "%s: VHD block table entry %u (offset %llu) "
					"overlaps the header, the block table or a parent "
					"locator", d->path, i, (unsigned long long)off);
			goto out;
		}
		sorted[nsorted++] = e;
	}
	qsort(sorted, nsorted, sizeof(*sorted), cmp_u32);
	for (size_t i = 1; i < nsorted; i++) {
		if ((uint64_t)(sorted[i] - sorted[i - 1]) * VHD_SECTOR < span) {
			ret = disk_fail(err, -EINVAL, "%s: two VHD blocks overlap (at sectors %u "
					"and %u)", d->path, sorted[i - 1], sorted[i]);
			goto out;
		}
	}
	ret = 0;
out:
	free(raw);
	free(sorted);
	return ret;
}

/* Parent locators must lie inside the file and clear of the end, since
 * new blocks are appended there. */
static int check_locators(struct disk *d, struct vhd *v, uint64_t fsize, struct disk_error *err)
{
	uint64_t limit = v->footer_recovered ? fsize : v->footer_pos;

	for (int i = 0; i < VHD_MAX_LOCATORS; i++) {
		const struct vhd_locator *l = &v->hdr.loc[i];

		if (!l->code || !l->length)
			continue;
		if (l->offset > limit || limit - l->offset < l->length)
			return disk_fail(err, -EINVAL, "%s: VHD parent locator %d (offset %llu, %u "
					 "bytes) lies outside the file", d->path, i,
					 (unsigned long long)l->offset, l->length);
		v->meta_end = MAX(v->meta_end, l->offset + l->length);
	}
	return 0;
}

static void vhd_free(struct vhd *v)
{
	if (!v)
		return;
	if (v->bitmaps) {
		for (uint32_t i = 0; i < v->entries; i++)
			free(v->bitmaps[i].bits);
		free(v->bitmaps);
	}
	free(v->bat);
	free(v->bat_dirty);
	if (v->own_mfd && v->mfd >= 0)
		close(v->mfd);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

static int vhd_open(struct disk *d, struct disk_error *err)
{
	struct vhd *v = calloc(1, sizeof(*v));
	struct stat st;
	uint64_t fsize;
	int ret;

	if (!v)
		return disk_fail(err, -ENOMEM, "%s: out of memory", d->path);
	pthread_mutex_init(&v->lock, NULL);
	v->mfd = d->fd;
	if (d->flags & DISK_OPEN_DIRECT) {
		/* metadata goes through the page cache: small, unaligned I/O */
		v->mfd = disk_open_file(d->path, (d->flags & DISK_OPEN_RDONLY ? O_RDONLY : O_RDWR) |
					O_CLOEXEC, &st, err);
		if (v->mfd < 0) {
			ret = v->mfd;
			goto fail;
		}
		v->own_mfd = true;
	}
	if (fstat(v->mfd, &st) < 0) {
		ret = disk_fail(err, -errno, "%s: cannot stat: %s", d->path, strerror(errno));
		goto fail;
	}
	fsize = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode)) { /* a VHD on a block device (an LV, say) */
		off_t end = lseek(v->mfd, 0, SEEK_END);
		fsize = end > 0 ? (uint64_t)end : 0;
	}
	if (fsize < VHD_FOOTER_SIZE) {
		ret = disk_fail(err, -EINVAL, "%s: too small (%llu bytes) to be a VHD", d->path,
				(unsigned long long)fsize);
		goto fail;
	}
	ret = load_footer(d, v, fsize, err);
	if (!ret)
		ret = check_footer(d, v, fsize, err);
	if (ret)
		goto fail;
	d->sector = VHD_SECTOR;
	if (v->footer.disk_type == VHD_TYPE_FIXED) {
		d->type = DISK_TYPE_FIXED;
		d->priv = v;
		return 0;
	}
	d->type = v->footer.disk_type == VHD_TYPE_DIFF ? DISK_TYPE_DIFFERENCING
						       : DISK_TYPE_DYNAMIC;
	ret = load_header(d, v, fsize, err);
	if (!ret && d->type == DISK_TYPE_DIFFERENCING)
		ret = check_locators(d, v, fsize, err);
	if (!ret)
		ret = load_bat(d, v, fsize, err);
	if (ret)
		goto fail;
	if (d->type == DISK_TYPE_DIFFERENCING) {
		v->bitmaps = calloc(v->entries ? v->entries : 1, sizeof(*v->bitmaps));
		if (!v->bitmaps) {
			ret = disk_fail(err, -ENOMEM, "%s: out of memory", d->path);
			goto fail;
		}
	}
	v->free_off = v->footer_pos;
	d->priv = v;
	return 0;
fail:
	vhd_free(v);
	d->priv = NULL;
	return ret;
}

static void vhd_close(struct disk *d)
{
	vhd_free(d->priv);
	d->priv = NULL;
}

/* ---- the block layer ---- */

enum vhd_run_kind { RUN_DATA, RUN_ZERO, RUN_PARENT };

struct vhd_run {
	enum vhd_run_kind kind;
	uint64_t file_off;
	uint64_t len;
};

static bool bit_get(const uint8_t *bits, uint64_t i)
{
	return bits[i / 8] & (0x80 >> (i % 8));
}

static void bit_set(uint8_t *bits, uint64_t i, bool on)
{
	if (on)
		bits[i / 8] = (uint8_t)(bits[i / 8] | (0x80 >> (i % 8)));
	else
		bits[i / 8] = (uint8_t)(bits[i / 8] & ~(0x80 >> (i % 8)));
}

/* The sector bitmap of an allocated block of a differencing disk, read on
 * first use. Lock held. */
static int bitmap_get(struct vhd *v, uint32_t blk, uint8_t **bits)
{
	struct vhd_bitmap *bm = &v->bitmaps[blk];
	int ret;

	if (!bm->bits) {
		uint8_t *b = malloc(v->bitmap_size);
		if (!b)
			return -ENOMEM;
		ret = pread_full(v->mfd, b, v->bitmap_size, (off_t)v->bat[blk] * VHD_SECTOR);
		if (ret) {
			free(b);
			return ret;
		}
		bm->bits = b;
	}
	*bits = bm->bits;
	return 0;
}

/* BAT entries change only from unused to a block, under the lock, with a
 * release store; readers of dynamic disks load them without the lock. */
static uint32_t bat_entry(struct vhd *v, uint32_t blk)
{
	return __atomic_load_n(&v->bat[blk], __ATOMIC_ACQUIRE);
}

/* Where [off, off+len) starts: fills the longest uniform run inside one
 * block. Lock held for differencing disks (their bitmaps). */
static int vhd_lookup(struct disk *d, struct vhd *v, uint64_t off, uint64_t len,
		      struct vhd_run *run)
{
	uint32_t blk = (uint32_t)(off >> v->block_shift);
	uint64_t in = off & (v->block_size - 1);
	uint64_t n = MIN(len, v->block_size - in);
	uint8_t *bits;
	int ret;

	uint32_t entry = bat_entry(v, blk);

	run->len = n;
	if (entry == VHD_BAT_UNUSED) {
		run->kind = d->type == DISK_TYPE_DIFFERENCING ? RUN_PARENT : RUN_ZERO;
		return 0;
	}
	run->file_off = (uint64_t)entry * VHD_SECTOR + v->bitmap_size + in;
	run->kind = RUN_DATA;
	/* Dynamic disks: allocated blocks are read whole, as QEMU and Hyper-V
	 * do; only differencing disks mean "parent" by a clear bit. */
	if (d->type != DISK_TYPE_DIFFERENCING)
		return 0;
	ret = bitmap_get(v, blk, &bits);
	if (ret)
		return ret;
	uint64_t s = in / VHD_SECTOR, end = (in + n) / VHD_SECTOR, i;
	bool first = bit_get(bits, s);
	for (i = s + 1; i < end && bit_get(bits, i) == first; i++)
		;
	run->len = (i - s) * VHD_SECTOR;
	run->kind = first ? RUN_DATA : RUN_PARENT;
	return 0;
}

/* vhd_lookup with the lock when the format needs it. */
static int lookup(struct disk *d, struct vhd *v, uint64_t off, uint64_t len, struct vhd_run *run)
{
	int ret;

	if (d->type == DISK_TYPE_DYNAMIC)
		return vhd_lookup(d, v, off, len, run);
	pthread_mutex_lock(&v->lock);
	ret = vhd_lookup(d, v, off, len, run);
	pthread_mutex_unlock(&v->lock);
	return ret;
}

static int read_parent(struct disk *d, uint8_t *buf, uint64_t len, uint64_t off)
{
	struct disk *p = d->parent;
	uint64_t n;

	if (!p)
		return -ENXIO; /* opened with DISK_OPEN_NO_PARENT */
	n = off < p->size ? MIN(len, p->size - off) : 0;
	if (n) {
		int ret = disk_pread(p, buf, n, off);
		if (ret)
			return ret;
	}
	memset(buf + n, 0, len - n);
	return 0;
}

static int vhd_pread(struct disk *d, void *buf, size_t len, uint64_t off)
{
	struct vhd *v = d->priv;
	uint8_t *p = buf;
	int ret = 0;

	if (d->type == DISK_TYPE_FIXED)
		return pread_full(d->fd, buf, len, (off_t)off);
	while (len && !ret) {
		struct vhd_run run;

		ret = lookup(d, v, off, len, &run);
		if (ret)
			break;
		switch (run.kind) {
		case RUN_DATA:
			ret = pread_full(d->fd, p, run.len, (off_t)run.file_off);
			break;
		case RUN_ZERO:
			memset(p, 0, run.len);
			break;
		case RUN_PARENT:
			ret = read_parent(d, p, run.len, off);
			break;
		}
		p += run.len;
		off += run.len;
		len -= run.len;
	}
	return ret;
}

static void mark_bat_dirty(struct vhd *v, uint32_t blk)
{
	if (!v->bat_dirty[blk / 128]) {
		v->bat_dirty[blk / 128] = true;
		v->ndirty++;
	}
}

/* Appends a block for blk at the end of the file. Lock held. The new
 * footer goes first, past the block, so the file never ends without one;
 * the block's data is placed on a 4 KiB boundary as Hyper-V does. */
static int alloc_block(struct disk *d, struct vhd *v, uint32_t blk)
{
	uint64_t off = ALIGN_UP(v->free_off + v->bitmap_size, 4096ULL) - v->bitmap_size;
	uint64_t end = off + v->bitmap_size + v->block_size;
	uint8_t *bitmap;
	int ret;

	if (end / VHD_SECTOR >= VHD_BAT_UNUSED)
		return -EFBIG; /* BAT entries are 32-bit sector numbers */
	bitmap = malloc(v->bitmap_size);
	if (!bitmap)
		return -ENOMEM;
	/* Dynamic disks mark every sector present (unwritten ones read as the
	 * zeroes the new space holds); differencing disks only what is written. */
	memset(bitmap, d->type == DISK_TYPE_DIFFERENCING ? 0 : 0xff, v->bitmap_size);
	/* The old footer is left where it is when the alignment gap holds it:
	 * no block refers to that space. */
	ret = pwrite_full(v->mfd, v->footer_raw, VHD_FOOTER_SIZE, (off_t)end);
	if (!ret)
		ret = pwrite_full(v->mfd, bitmap, v->bitmap_size, (off_t)off);
	if (ret) {
		free(bitmap);
		return ret;
	}
	v->free_off = end;
	v->footer_pos = end;
	v->footer_recovered = false;
	__atomic_store_n(&v->bat[blk], (uint32_t)(off / VHD_SECTOR), __ATOMIC_RELEASE);
	mark_bat_dirty(v, blk);
	if (d->type == DISK_TYPE_DIFFERENCING) {
		free(v->bitmaps[blk].bits);
		v->bitmaps[blk].bits = bitmap;
		v->bitmaps[blk].dirty = false; /* on disk already */
	} else {
		free(bitmap);
	}
	return 0;
}

/* Marks sectors [s, s+n) of blk present (or absent). Lock held. */
static int mark_sectors(struct vhd *v, uint32_t blk, uint64_t s, uint64_t n, bool present)
{
	uint8_t *bits;
	bool changed = false;
	int ret = bitmap_get(v, blk, &bits);

	if (ret)
		return ret;
	for (uint64_t i = s; i < s + n; i++) {
		if (bit_get(bits, i) != present) {
			bit_set(bits, i, present);
			changed = true;
		}
	}
	if (changed && !v->bitmaps[blk].dirty) {
		v->bitmaps[blk].dirty = true;
		v->ndirty++;
	}
	return 0;
}

static bool sectors_present(struct vhd *v, uint32_t blk, uint64_t s, uint64_t n)
{
	uint8_t *bits;

	if (bitmap_get(v, blk, &bits))
		return false;
	for (uint64_t i = s; i < s + n; i++)
		if (!bit_get(bits, i))
			return false;
	return true;
}

static int vhd_pwrite(struct disk *d, const void *buf, size_t len, uint64_t off)
{
	struct vhd *v = d->priv;
	const uint8_t *p = buf;
	int ret = 0;

	if (d->type == DISK_TYPE_FIXED)
		return pwrite_full(d->fd, buf, len, (off_t)off);
	while (len && !ret) {
		uint32_t blk = (uint32_t)(off >> v->block_shift);
		uint64_t in = off & (v->block_size - 1);
		uint64_t n = MIN((uint64_t)len, v->block_size - in);
		bool need_bits = false;
		uint64_t file_off;
		uint32_t entry = bat_entry(v, blk);

		if (d->type == DISK_TYPE_DYNAMIC && entry != VHD_BAT_UNUSED) {
			/* the common case: an allocated block, no lock */
			ret = pwrite_full(d->fd, p, n,
					  (off_t)((uint64_t)entry * VHD_SECTOR + v->bitmap_size + in));
			p += n;
			off += n;
			len -= n;
			continue;
		}
		pthread_mutex_lock(&v->lock);
		if (v->bat[blk] == VHD_BAT_UNUSED)
			ret = alloc_block(d, v, blk);
		if (!ret && d->type == DISK_TYPE_DIFFERENCING)
			need_bits = !sectors_present(v, blk, in / VHD_SECTOR, n / VHD_SECTOR);
		file_off = (uint64_t)v->bat[blk] * VHD_SECTOR + v->bitmap_size + in;
		pthread_mutex_unlock(&v->lock);
		if (ret)
			break;
		ret = pwrite_full(d->fd, p, n, (off_t)file_off);
		if (!ret && need_bits) {
			/* after the data: a present bit never covers missing data */
			pthread_mutex_lock(&v->lock);
			ret = mark_sectors(v, blk, in / VHD_SECTOR, n / VHD_SECTOR, true);
			pthread_mutex_unlock(&v->lock);
		}
		p += n;
		off += n;
		len -= n;
	}
	return ret;
}

static int sync_fds(struct vhd *v, int fd)
{
	if (fdatasync(fd) < 0)
		return -errno;
	if (v->mfd != fd && fdatasync(v->mfd) < 0)
		return -errno;
	return 0;
}

/* Writes the dirty bitmaps and BAT sectors. Lock held. */
static int write_metadata(struct vhd *v)
{
	uint32_t nsec = v->entries / 128 + 1;
	uint8_t sec[VHD_SECTOR];
	int ret;

	for (uint32_t i = 0; v->bitmaps && i < v->entries && v->ndirty; i++) {
		struct vhd_bitmap *bm = &v->bitmaps[i];
		if (!bm->dirty)
			continue;
		ret = pwrite_full(v->mfd, bm->bits, v->bitmap_size,
				  (off_t)v->bat[i] * VHD_SECTOR);
		if (ret)
			return ret;
		bm->dirty = false;
		v->ndirty--;
	}
	for (uint32_t s = 0; s < nsec && v->ndirty; s++) {
		uint64_t first = (uint64_t)s * 128;
		uint64_t count = MIN(128ULL, v->entries - first);
		if (!v->bat_dirty[s])
			continue;
		memset(sec, 0xff, sizeof(sec));
		for (uint64_t i = 0; i < count; i++)
			vhd_put32(sec + 4 * i, v->bat[first + i]);
		ret = pwrite_full(v->mfd, sec, count * 4,
				  (off_t)(v->hdr.table_offset + first * 4));
		if (ret)
			return ret;
		v->bat_dirty[s] = false;
		v->ndirty--;
	}
	return 0;
}

/* Data first, then the metadata that makes it visible. The lock is held
 * from the last data sync to the metadata write, so no allocation or
 * bitmap change whose data is not yet durable can slip in between; a sync
 * without the lock first keeps that window short. */
static int vhd_flush(struct disk *d)
{
	struct vhd *v = d->priv;
	int ret;

	if (d->type == DISK_TYPE_FIXED) {
		if (fdatasync(d->fd) < 0)
			return -errno;
		return 0;
	}
	ret = sync_fds(v, d->fd);
	if (ret)
		return ret;
	pthread_mutex_lock(&v->lock);
	if (v->ndirty) {
		ret = sync_fds(v, d->fd);
		if (!ret)
			ret = write_metadata(v);
		if (!ret)
			ret = sync_fds(v, d->fd);
	}
	pthread_mutex_unlock(&v->lock);
	return ret;
}

/* ---- discard, zeroes, map, status ---- */

static bool falloc_unsupported(int e)
{
	return e == EOPNOTSUPP || e == ENOSYS || e == EINVAL || e == ENODEV;
}

/* Makes a range of the file read as zeroes, giving space back if it can. */
static int zero_file_range(int fd, uint64_t off, uint64_t len, bool punch)
{
	static const uint8_t zero[64 * 1024];

	if (punch && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			       (off_t)len) == 0)
		return 0;
	if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
		return 0;
	if (!falloc_unsupported(errno))
		return -errno;
	while (len) {
		size_t n = (size_t)MIN(len, (uint64_t)sizeof(zero));
		int ret = pwrite_full(fd, zero, n, (off_t)off);
		if (ret)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

/* A dynamic disk's block discarded whole becomes unallocated again (it
 * reads as zeroes either way), so allocation figures and compaction see it.
 * Its data is punched at once; should the new BAT entry not reach the disk
 * before a crash, the old entry points at zeroes, which is the same. */
static int unmap_block(struct vhd *v, uint32_t blk, int fd)
{
	uint32_t entry;

	pthread_mutex_lock(&v->lock);
	entry = v->bat[blk];
	if (entry != VHD_BAT_UNUSED) {
		__atomic_store_n(&v->bat[blk], VHD_BAT_UNUSED, __ATOMIC_RELEASE);
		mark_bat_dirty(v, blk);
	}
	pthread_mutex_unlock(&v->lock);
	if (entry == VHD_BAT_UNUSED)
		return 0;
	return zero_file_range(fd, (uint64_t)entry * VHD_SECTOR + v->bitmap_size, v->block_size,
			       true);
}

static int vhd_zero_range(struct disk *d, uint64_t off, uint64_t len, bool punch)
{
	struct vhd *v = d->priv;
	int ret = 0;

	if (d->type == DISK_TYPE_FIXED)
		return zero_file_range(d->fd, off, len, punch);
	while (len && !ret) {
		struct vhd_run run;

		if (punch && d->type == DISK_TYPE_DYNAMIC && !(off & (v->block_size - 1)) &&
		    len >= v->block_size) {
			ret = unmap_block(v, (uint32_t)(off >> v->block_shift), d->fd);
			off += v->block_size;
			len -= v->block_size;
			continue;
		}
		ret = lookup(d, v, off, len, &run);
		if (ret)
			break;
		if (run.kind == RUN_DATA)
			ret = zero_file_range(d->fd, run.file_off, run.len, punch);
		off += run.len;
		len -= run.len;
	}
	return ret;
}

/* Differencing: discarded sectors fall back to the parent's data, as
 * Hyper-V does for unmap. The space is kept: punching it before the
 * cleared bits are durable could expose zeroes after a crash. */
static int vhd_discard(struct disk *d, uint64_t off, uint64_t len)
{
	struct vhd *v = d->priv;
	int ret = 0;

	if (d->type != DISK_TYPE_DIFFERENCING)
		return vhd_zero_range(d, off, len, true);
	pthread_mutex_lock(&v->lock);
	while (len && !ret) {
		uint32_t blk = (uint32_t)(off >> v->block_shift);
		uint64_t in = off & (v->block_size - 1);
		uint64_t n = MIN(len, v->block_size - in);

		if (v->bat[blk] != VHD_BAT_UNUSED)
			ret = mark_sectors(v, blk, in / VHD_SECTOR, n / VHD_SECTOR, false);
		off += n;
		len -= n;
	}
	pthread_mutex_unlock(&v->lock);
	return ret;
}

static int vhd_write_zeroes(struct disk *d, uint64_t off, uint64_t len, bool may_unmap)
{
	size_t chunk = 256 * 1024;
	uint8_t *zero;
	int ret = 0;

	if (d->type != DISK_TYPE_DIFFERENCING)
		return vhd_zero_range(d, off, len, may_unmap);
	/* zeroes must hide the parent's data: write them */
	zero = calloc(1, chunk);
	if (!zero)
		return -ENOMEM;
	while (len && !ret) {
		size_t n = (size_t)MIN(len, (uint64_t)chunk);
		ret = vhd_pwrite(d, zero, n, off);
		off += n;
		len -= n;
	}
	free(zero);
	return ret;
}

static int vhd_map(struct disk *d, uint64_t off, uint64_t len, struct disk_extent *ext)
{
	struct vhd *v = d->priv;
	struct vhd_run run;
	int ret;

	ext->fd = d->fd;
	if (d->type == DISK_TYPE_FIXED) {
		ext->kind = DISK_EXTENT_DATA;
		ext->file_off = off;
		ext->len = len;
		return 0;
	}
	ret = lookup(d, v, off, len, &run);
	if (ret)
		return ret;
	ext->kind = run.kind == RUN_DATA ? DISK_EXTENT_DATA
		  : run.kind == RUN_ZERO ? DISK_EXTENT_ZERO : DISK_EXTENT_PARENT;
	ext->file_off = run.kind == RUN_DATA ? run.file_off : 0;
	ext->len = run.len;
	return 0;
}

/* Blocks are appended (alloc_block) before the caller writes into them:
 * until then a dynamic disk's new block reads as the zeroes it held, and
 * a differencing disk's bitmap says "parent" until vhd_commit_write. The
 * BAT entry and bitmap reach the file at the next flush, after the data. */
static int vhd_map_write(struct disk *d, uint64_t off, uint64_t len, unsigned flags,
			 struct disk_extent *ext, bool *commit)
{
	struct vhd *v = d->priv;
	uint32_t blk = (uint32_t)(off >> v->block_shift), entry;
	uint64_t in = off & (v->block_size - 1), n = MIN(len, v->block_size - in);
	int ret = 0;

	ext->kind = DISK_EXTENT_DATA;
	ext->fd = d->fd;
	if (d->type == DISK_TYPE_FIXED) {
		ext->file_off = off;
		ext->len = len;
		return 0;
	}
	entry = bat_entry(v, blk);
	if (entry == VHD_BAT_UNUSED) {
		if (!(flags & DISK_MAP_ALLOC))
			return -EWOULDBLOCK;
		pthread_mutex_lock(&v->lock);
		if (v->bat[blk] == VHD_BAT_UNUSED)
			ret = alloc_block(d, v, blk);
		entry = v->bat[blk];
		pthread_mutex_unlock(&v->lock);
		if (ret)
			return ret;
		if (entry == VHD_BAT_UNUSED)
			return -EAGAIN;
	}
	ext->file_off = (uint64_t)entry * VHD_SECTOR + v->bitmap_size + in;
	ext->len = n;
	if (d->type == DISK_TYPE_DIFFERENCING) {
		pthread_mutex_lock(&v->lock);
		*commit = !sectors_present(v, blk, in / VHD_SECTOR, n / VHD_SECTOR);
		pthread_mutex_unlock(&v->lock);
	}
	return 0;
}

static int vhd_commit_write(struct disk *d, uint64_t off, uint64_t len)
{
	struct vhd *v = d->priv;
	int ret = 0;

	if (d->type != DISK_TYPE_DIFFERENCING)
		return 0;
	pthread_mutex_lock(&v->lock);
	while (len && !ret) {
		uint32_t blk = (uint32_t)(off >> v->block_shift);
		uint64_t in = off & (v->block_size - 1);
		uint64_t n = MIN(len, v->block_size - in);

		if (v->bat[blk] != VHD_BAT_UNUSED)
			ret = mark_sectors(v, blk, in / VHD_SECTOR, n / VHD_SECTOR, true);
		off += n;
		len -= n;
	}
	pthread_mutex_unlock(&v->lock);
	return ret;
}

static int vhd_block_status(struct disk *d, uint64_t off, uint64_t len, bool *allocated,
			    uint64_t *run_len)
{
	struct vhd *v = d->priv;
	uint64_t done = 0;
	int ret = 0;

	if (d->type == DISK_TYPE_FIXED) {
		*allocated = true;
		*run_len = len;
		return 0;
	}
	pthread_mutex_lock(&v->lock);
	while (done < len) {
		struct vhd_run run;
		bool a;

		ret = vhd_lookup(d, v, off + done, len - done, &run);
		if (ret)
			break;
		a = run.kind == RUN_DATA;
		if (done == 0)
			*allocated = a;
		else if (a != *allocated)
			break;
		done += run.len;
	}
	pthread_mutex_unlock(&v->lock);
	*run_len = done;
	return ret;
}

static void vhd_info(struct disk *d, struct disk_info *info)
{
	struct vhd *v = d->priv;
	uint64_t used = 0;

	info->logical_sector = VHD_SECTOR;
	info->physical_sector = VHD_SECTOR;
	guid_from_be(&info->disk_id, v->footer.unique_id);
	if (d->type == DISK_TYPE_FIXED) {
		info->allocated = d->size;
		return;
	}
	info->block_size = v->block_size;
	pthread_mutex_lock(&v->lock);
	for (uint32_t i = 0; i < v->entries; i++)
		if (v->bat[i] != VHD_BAT_UNUSED)
			used += v->block_size;
	pthread_mutex_unlock(&v->lock);
	info->allocated = MIN(used, d->size);
	if (d->type == DISK_TYPE_DIFFERENCING) {
		char (*paths)[PATH_MAX] = calloc(1, PATH_MAX);

		guid_from_be(&info->parent_linkage, v->hdr.parent_id);
		if (paths && vhd_parent_candidates(d, paths, 1) > 0)
			snprintf(info->parent_path, sizeof(info->parent_path), "%s", paths[0]);
		free(paths);
	}
}

const struct disk_ops disk_vhd_ops = {
	.format = DISK_FORMAT_VHD,
	.probe = vhd_probe,
	.open = vhd_open,
	.close = vhd_close,
	.pread = vhd_pread,
	.pwrite = vhd_pwrite,
	.flush = vhd_flush,
	.discard = vhd_discard,
	.write_zeroes = vhd_write_zeroes,
	.map = vhd_map,
	.map_write = vhd_map_write,
	.commit_write = vhd_commit_write,
	.block_status = vhd_block_status,
	.info = vhd_info,
	.create = vhd_create,
	.parent_candidates = vhd_parent_candidates,
	.check_parent = vhd_check_parent,
	.set_parent = vhd_set_parent,
	.resize = vhd_resize,
	.check = vhd_check,
};
