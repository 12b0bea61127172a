/* VHDX header section and metadata region: parsing (untrusted input,
 * bounds-checked here once) and building for create/set-parent. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "disk/vhdx.h"

const struct guid vhdx_guid_bat = {
	0x2DC27766, 0xF623, 0x4200, { 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08 } };
const struct guid vhdx_guid_metadata = {
	0x8B7CA206, 0x4790, 0x4B9A, { 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E } };
const struct guid vhdx_guid_file_params = {
	0xCAA16737, 0xFA36, 0x4D43, { 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B } };
const struct guid vhdx_guid_vsize = {
	0x2FA54224, 0xCD1B, 0x4876, { 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8 } };
const struct guid vhdx_guid_page83 = {
	0xBECA12AB, 0xB2E6, 0x4523, { 0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46 } };
const struct guid vhdx_guid_lsec = {
	0x8141BF1D, 0xA96F, 0x4709, { 0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F } };
const struct guid vhdx_guid_psec = {
	0xCDA348C7, 0x445D, 0x4471, { 0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56 } };
const struct guid vhdx_guid_parent_locator = {
	0xA8D35F2D, 0xB30B, 0x454D, { 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C } };
const struct guid vhdx_guid_locator_type = {
	0xB04AEFB7, 0xD19E, 0x4A81, { 0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13 } };

#define META_MAX_REGION (64u * 1024 * 1024) /* far above the 1 MiB Hyper-V uses */
#define META_FLAG_USER 1u
#define META_FLAG_VIRTUAL 2u
#define META_FLAG_REQUIRED 4u

uint64_t vhdx_bat_count(uint64_t vsize, uint32_t block_size, uint32_t lsec, bool has_parent)
{
	uint64_t cr = ((uint64_t)1 << 23) * lsec / block_size;
	uint64_t nblocks = (vsize + block_size - 1) / block_size;
	uint64_t nsb = (nblocks + cr - 1) / cr;

	if (has_parent)
		return nsb * (cr + 1);
	return nblocks ? nblocks + (nblocks - 1) / cr : 0;
}

/* Applies the read-only replay overlay to [off, off+len). */
static void overlay_apply(const struct vhdx *v, uint8_t *buf, size_t len, uint64_t off)
{
	for (size_t i = 0; i < v->noverlay; i++) {
		const struct vhdx_page *p = &v->overlay[i];
		uint64_t plen = p->zero_len ? p->zero_len : VHDX_LOG_SECTOR;
		uint64_t lo = MAX(off, p->off), hi = MIN(off + len, p->off + plen);

		if (lo >= hi)
			continue;
		if (p->zero_len)
			memset(buf + (lo - off), 0, hi - lo);
		else
			memcpy(buf + (lo - off), p->data + (lo - p->off), hi - lo);
	}
}

/* Reads file bytes as the (possibly replayed-in-memory) image has them.
 * Bytes between the real end of file and v->file_size read as zeroes. */
int vhdx_meta_read(struct vhdx *v, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	if (off > v->file_size || len > v->file_size - off)
		return -EIO;
	while (done < len) {
		ssize_t n = pread(v->fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			memset((uint8_t *)buf + done, 0, len - done);
			break;
		}
		done += (size_t)n;
	}
	if (v->noverlay)
		overlay_apply(v, buf, len, off);
	return 0;
}

/* ---- headers ---- */

void vhdx_header_encode(const struct vhdx_header *h, uint8_t buf[VHDX_HEADER_SIZE])
{
	memset(buf, 0, VHDX_HEADER_SIZE);
	memcpy(buf, "head", 4);
	vhdx_put64(buf + 8, h->seq);
	guid_to_le(&h->file_write, buf + 16);
	guid_to_le(&h->data_write, buf + 32);
	guid_to_le(&h->log_guid, buf + 48);
	vhdx_put16(buf + 64, h->log_version);
	vhdx_put16(buf + 66, h->version);
	vhdx_put32(buf + 68, h->log_length);
	vhdx_put64(buf + 72, h->log_offset);
	vhdx_put32(buf + 4, crc32c(0, buf, VHDX_HEADER_SIZE));
}

/* CRC of buf with its 4-byte checksum field (at csum) taken as zero. */
static uint32_t crc_without(const uint8_t *buf, size_t len, size_t csum)
{
	static const uint8_t zero[4];
	uint32_t c = crc32c(0, buf, csum);

	c = crc32c(c, zero, 4);
	return crc32c(c, buf + csum + 4, len - csum - 4);
}

bool vhdx_header_decode(const uint8_t buf[VHDX_HEADER_SIZE], struct vhdx_header *h)
{
	if (memcmp(buf, "head", 4) || vhdx_le32(buf + 4) != crc_without(buf, VHDX_HEADER_SIZE, 4))
		return false;
	h->seq = vhdx_le64(buf + 8);
	guid_from_le(&h->file_write, buf + 16);
	guid_from_le(&h->data_write, buf + 32);
	guid_from_le(&h->log_guid, buf + 48);
	h->log_version = vhdx_le16(buf + 64);
	h->version = vhdx_le16(buf + 66);
	h->log_length = vhdx_le32(buf + 68);
	h->log_offset = vhdx_le64(buf + 72);
	return h->version == 1 && h->log_version == 0;
}

int vhdx_parse_headers(struct vhdx *v, struct disk_error *err)
{
	const char *path = v->d->path;
	struct vhdx_header h[2];
	bool ok[2];
	uint8_t *buf;
	int ret;

	buf = disk_alloc_aligned(VHDX_HEADER_SIZE);
	if (!buf)
		return disk_fail(err, -ENOMEM, "%s: out of memory", path);
	for (int i = 0; i < 2; i++) {
		ret = vhdx_meta_read(v, buf, VHDX_HEADER_SIZE, i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
		ok[i] = !ret && vhdx_header_decode(buf, &h[i]);
		v->hdr_bad[i] = !ok[i];
	}
	free(buf);
	if (!ok[0] && !ok[1])
		return disk_fail(err, -EINVAL, "%s: VHDX: neither header is valid (bad signature, "
				 "CRC-32C or version in both copies)", path);
	v->hdr_slot = (ok[0] && ok[1]) ? (h[1].seq > h[0].seq) : ok[1];
	v->hdr = h[v->hdr_slot];
	if (ok[0] && ok[1]) {
		struct vhdx_header other = h[1 - v->hdr_slot];
		other.seq = v->hdr.seq;
		v->hdr_stale = memcmp(&other, &v->hdr, sizeof(other)) != 0;
	}
	if (v->hdr.log_length % VHDX_ALIGN || v->hdr.log_offset % VHDX_ALIGN ||
	    (v->hdr.log_length && v->hdr.log_offset < VHDX_HEADER_SECTION))
		return disk_fail(err, -EINVAL, "%s: VHDX: log at %llu (%u bytes) is not 1 MiB "
				 "aligned or overlaps the header section", path,
				 (unsigned long long)v->hdr.log_offset, v->hdr.log_length);
	if (v->hdr.log_length && v->hdr.log_offset + v->hdr.log_length > v->file_size)
		return disk_fail(err, -EINVAL, "%s: VHDX: the log (%llu + %u) lies past the end of "
				 "the file (%llu bytes)", path,
				 (unsigned long long)v->hdr.log_offset, v->hdr.log_length,
				 (unsigned long long)v->file_size);
	v->log_off = v->hdr.log_offset;
	v->log_len = v->hdr.log_length;
	return 0;
}

/* ---- region table ---- */

void vhdx_region_table_build(uint8_t *buf, uint64_t bat_off, uint32_t bat_len,
			     uint64_t meta_off, uint32_t meta_len)
{
	memset(buf, 0, VHDX_RT_SIZE);
	memcpy(buf, "regi", 4);
	vhdx_put32(buf + 8, 2);
	guid_to_le(&vhdx_guid_bat, buf + 16);
	vhdx_put64(buf + 32, bat_off);
	vhdx_put32(buf + 40, bat_len);
	vhdx_put32(buf + 44, 1);
	guid_to_le(&vhdx_guid_metadata, buf + 48);
	vhdx_put64(buf + 64, meta_off);
	vhdx_put32(buf + 72, meta_len);
	vhdx_put32(buf + 76, 1);
	vhdx_put32(buf + 4, crc32c(0, buf, VHDX_RT_SIZE));
}

static bool region_table_valid(const uint8_t *buf)
{
	return !memcmp(buf, "regi", 4) && vhdx_le32(buf + 4) == crc_without(buf, VHDX_RT_SIZE, 4) &&
	       vhdx_le32(buf + 8) <= VHDX_RT_MAX_ENTRIES;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

static int check_region(struct vhdx *v, const uint8_t *rt, uint32_t i, struct disk_error *err)
{
	const uint8_t *e = rt + 16 + 32 * i;
	uint64_t off = vhdx_le64(e + 16);
	uint32_t len = vhdx_le32(e + 24);
	char gs[GUID_STR_LEN];
	struct guid g;

	guid_from_le(&g, e);
	guid_to_string(&g, gs);
	if (off % VHDX_ALIGN || len % VHDX_ALIGN || !len || off < VHDX_HEADER_SECTION)
		return disk_fail(err, -EINVAL, "%s: VHDX: region {%s} at %llu (%u bytes) is not "
				 "1 MiB aligned or overlaps the header section", v->d->path, gs,
				 (unsigned long long)off, len);
	if (off > v->file_size || len > v->file_size - off)
		return disk_fail(err, -EINVAL, "%s: VHDX: region {%s} (%llu + %u) lies past the end "
				 "of the file (%llu bytes)", v->d->path, gs,
				 (unsigned long long)off, len, (unsigned long long)v->file_size);
	if (v->log_len && ranges_overlap(off, len, v->log_off, v->log_len))
		return disk_fail(err, -EINVAL, "%s: VHDX: region {%s} overlaps the log", v->d->path,
				 gs);
	for (uint32_t j = 0; j < i; j++) {
		const uint8_t *o = rt + 16 + 32 * j;
		struct guid og;

		guid_from_le(&og, o);
		if (guid_equal(&g, &og))
			return disk_fail(err, -EINVAL, "%s: VHDX: region {%s} is listed twice",
					 v->d->path, gs);
		if (ranges_overlap(off, len, vhdx_le64(o + 16), vhdx_le32(o + 24)))
			return disk_fail(err, -EINVAL, "%s: VHDX: regions overlap: {%s} at %llu "
					 "overlaps an earlier region", v->d->path, gs,
					 (unsigned long long)off);
	}
	if (guid_equal(&g, &vhdx_guid_bat)) {
		v->bat_off = off;
		v->bat_len = len;
	} else if (guid_equal(&g, &vhdx_guid_metadata)) {
		v->meta_off = off;
		v->meta_len = len;
	} else if (vhdx_le32(e + 28) & 1) {
		return disk_fail(err, -EOPNOTSUPP, "%s: VHDX: unknown required region {%s}",
				 v->d->path, gs);
	}
	return 0;
}

int vhdx_parse_regions(struct vhdx *v, struct disk_error *err)
{
	uint8_t *rt[2] = { disk_alloc_aligned(VHDX_RT_SIZE), disk_alloc_aligned(VHDX_RT_SIZE) };
	bool ok[2];
	const uint8_t *use;
	int ret = 0;

	if (!rt[0] || !rt[1]) {
		ret = disk_fail(err, -ENOMEM, "%s: out of memory", v->d->path);
		goto out;
	}
	for (int i = 0; i < 2; i++) {
		ok[i] = !vhdx_meta_read(v, rt[i], VHDX_RT_SIZE, i ? VHDX_RT2_OFF : VHDX_RT1_OFF) &&
			region_table_valid(rt[i]);
		v->rt_bad[i] = !ok[i];
	}
	if (!ok[0] && !ok[1]) {
		ret = disk_fail(err, -EINVAL, "%s: VHDX: neither region table is valid (bad "
				"signature, CRC-32C or entry count in both copies)", v->d->path);
		goto out;
	}
	v->rt_differ = ok[0] && ok[1] && memcmp(rt[0], rt[1], VHDX_RT_SIZE);
	use = ok[0] ? rt[0] : rt[1];
	v->bat_len = v->meta_len = 0;
	for (uint32_t i = 0; i < vhdx_le32(use + 8); i++) {
		ret = check_region(v, use, i, err);
		if (ret)
			goto out;
	}
	if (!v->bat_len || !v->meta_len)
		ret = disk_fail(err, -EINVAL, "%s: VHDX: the region table has no %s region",
				v->d->path, v->bat_len ? "metadata" : "BAT");
out:
	free(rt[0]);
	free(rt[1]);
	return ret;
}

/* ---- UTF-16LE <-> UTF-8 ---- */

static int utf16_to_utf8(const uint8_t *in, size_t bytes, char *out, size_t cap)
{
	size_t o = 0;

	if (bytes % 2)
		return -EINVAL;
	for (size_t i = 0; i < bytes; i += 2) {
		uint32_t c = vhdx_le16(in + i);
		uint8_t tmp[4];
		int n;

		if (c >= 0xD800 && c < 0xDC00 && i + 2 < bytes) {
			uint32_t lo = vhdx_le16(in + i + 2);
			if (lo >= 0xDC00 && lo < 0xE000) {
				c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
				i += 2;
			}
		}
		if (c == 0)
			return -EINVAL;
		if (c < 0x80) {
			tmp[0] = (uint8_t)c;
			n = 1;
		} else if (c < 0x800) {
			tmp[0] = (uint8_t)(0xC0 | c >> 6);
			tmp[1] = (uint8_t)(0x80 | (c & 0x3F));
			n = 2;
		} else if (c < 0x10000) {
			tmp[0] = (uint8_t)(0xE0 | c >> 12);
			tmp[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
			tmp[2] = (uint8_t)(0x80 | (c & 0x3F));
			n = 3;
		} else {
			tmp[0] = (uint8_t)(0xF0 | c >> 18);
			tmp[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
			tmp[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
			tmp[3] = (uint8_t)(0x80 | (c & 0x3F));
			n = 4;
		}
		if (o + (size_t)n >= cap)
			return -ENAMETOOLONG;
		memcpy(out + o, tmp, (size_t)n);
		o += (size_t)n;
	}
	out[o] = 0;
	return 0;
}

/* Returns the number of bytes written or -ENOSPC. */
static int utf8_to_utf16(const char *s, uint8_t *out, size_t cap)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t o = 0;

	while (*p) {
		uint32_t c = *p++;
		int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;

		if (more)
			c &= 0x3Fu >> more;
		for (int k = 0; k < more && (*p & 0xC0) == 0x80; k++)
			c = c << 6 | (*p++ & 0x3F);
		if (c >= 0x10000) {
			if (o + 4 > cap)
				return -ENOSPC;
			c -= 0x10000;
			vhdx_put16(out + o, (uint16_t)(0xD800 | c >> 10));
			vhdx_put16(out + o + 2, (uint16_t)(0xDC00 | (c & 0x3FF)));
			o += 4;
		} else {
			if (o + 2 > cap)
				return -ENOSPC;
			vhdx_put16(out + o, (uint16_t)c);
			o += 2;
		}
	}
	return (int)o;
}

/* ---- parent locator ---- */

static int parse_linkage(const char *s, struct guid *g)
{
	return guid_parse(s, g);
}

static int parse_locator(struct vhdx *v, const uint8_t *p, uint32_t len, struct disk_error *err)
{
	struct vhdx_locator *loc = &v->loc;
	const char *path = v->d->path;
	char key[64], *val;
	struct guid type;
	uint16_t count;
	int ret = 0;

	memset(loc, 0, sizeof(*loc));
	if (len < 20)
		return disk_fail(err, -EINVAL, "%s: VHDX: parent locator too short (%u bytes)",
				 path, len);
	guid_from_le(&type, p);
	if (!guid_equal(&type, &vhdx_guid_locator_type)) {
		char gs[GUID_STR_LEN];
		return disk_fail(err, -EOPNOTSUPP, "%s: VHDX: unknown parent locator type {%s}",
				 path, guid_to_string(&type, gs));
	}
	count = vhdx_le16(p + 18);
	if (count > VHDX_MAX_LOCATOR_ENTRIES || 20 + (uint32_t)count * 12 > len)
		return disk_fail(err, -EINVAL, "%s: VHDX: parent locator holds %u entries, more "
				 "than fit in its %u bytes", path, count, len);
	val = malloc(PATH_MAX);
	if (!val)
		return disk_fail(err, -ENOMEM, "%s: out of memory", path);
	for (uint16_t i = 0; i < count && !ret; i++) {
		const uint8_t *e = p + 20 + 12 * i;
		uint32_t koff = vhdx_le32(e), voff = vhdx_le32(e + 4);
		uint16_t klen = vhdx_le16(e + 8), vlen = vhdx_le16(e + 10);
		char *dst = NULL;

		if (koff > len || klen > len - koff || voff > len || vlen > len - voff ||
		    !klen || !vlen) {
			ret = disk_fail(err, -EINVAL, "%s: VHDX: parent locator entry %u lies outside "
					"the locator or is empty", path, i);
			break;
		}
		if (utf16_to_utf8(p + koff, klen, key, sizeof(key)))
			continue; /* not a key we know */
		if (utf16_to_utf8(p + voff, vlen, val, PATH_MAX)) {
			ret = disk_fail(err, -EINVAL, "%s: VHDX: parent locator value of '%s' is "
					"not valid UTF-16", path, key);
			break;
		}
		if (!strcmp(key, "parent_linkage")) {
			if (loc->has_linkage || parse_linkage(val, &loc->linkage))
				ret = disk_fail(err, -EINVAL, "%s: VHDX: bad or repeated parent_linkage "
						"'%s'", path, val);
			loc->has_linkage = true;
		} else if (!strcmp(key, "parent_linkage2")) {
			if (loc->has_linkage2 || parse_linkage(val, &loc->linkage2))
				ret = disk_fail(err, -EINVAL, "%s: VHDX: bad or repeated "
						"parent_linkage2 '%s'", path, val);
			loc->has_linkage2 = true;
		} else if (!strcmp(key, "relative_path")) {
			dst = loc->relative;
		} else if (!strcmp(key, "volume_path")) {
			dst = loc->volume;
		} else if (!strcmp(key, "absolute_win32_path")) {
			dst = loc->absolute;
		}
		if (dst) {
			if (dst[0])
				ret = disk_fail(err, -EINVAL, "%s: VHDX: parent locator key '%s' is "
						"repeated", path, key);
			snprintf(dst, PATH_MAX, "%s", val);
		}
	}
	free(val);
	if (!ret && !loc->has_linkage)
		ret = disk_fail(err, -EINVAL, "%s: VHDX: parent locator has no parent_linkage",
				path);
	return ret;
}

int vhdx_locator_build(uint8_t *buf, size_t cap, const struct guid *linkage,
		       const char *relative, const char *absolute)
{
	const char *keys[3] = { "parent_linkage", "relative_path", "absolute_win32_path" };
	char lk[GUID_STR_LEN + 2], gs[GUID_STR_LEN];
	const char *vals[3] = { lk, relative, absolute };
	uint32_t pos, n = 0;

	snprintf(lk, sizeof(lk), "{%s}", guid_to_string(linkage, gs));
	if (cap < 20 + 3 * 12)
		return -ENOSPC;
	memset(buf, 0, 20 + 3 * 12);
	guid_to_le(&vhdx_guid_locator_type, buf);
	pos = 20 + 3 * 12;
	for (int i = 0; i < 3; i++) {
		uint8_t *e = buf + 20 + 12 * n;
		int kl, vl;

		if (!vals[i] || !vals[i][0])
			continue;
		kl = utf8_to_utf16(keys[i], buf + pos, cap - pos);
		if (kl < 0)
			return kl;
		vhdx_put32(e, pos);
		vhdx_put16(e + 8, (uint16_t)kl);
		pos += (uint32_t)kl;
		vl = utf8_to_utf16(vals[i], buf + pos, cap - pos);
		if (vl < 0 || vl > 0xFFFF)
			return -ENOSPC;
		vhdx_put32(e + 4, pos);
		vhdx_put16(e + 10, (uint16_t)vl);
		pos += (uint32_t)vl;
		n++;
	}
	vhdx_put16(buf + 18, (uint16_t)n);
	return (int)pos;
}

/* ---- metadata region ---- */

struct meta_item {
	const struct guid *id;
	uint32_t len; /* expected length, 0 = variable */
	uint32_t off, got_len;
	bool found;
};

enum { MI_PARAMS, MI_VSIZE, MI_PAGE83, MI_LSEC, MI_PSEC, MI_LOCATOR, MI_COUNT };

static int parse_table(struct vhdx *v, struct meta_item *items, struct disk_error *err)
{
	const uint8_t *m = v->meta;
	const char *path = v->d->path;
	uint16_t count;

	if (memcmp(m, "metadata", 8))
		return disk_fail(err, -EINVAL, "%s: VHDX: metadata table signature is wrong", path);
	count = vhdx_le16(m + 10);
	if (count > VHDX_META_MAX_ENTRIES)
		return disk_fail(err, -EINVAL, "%s: VHDX: metadata table has %u entries (max %u)",
				 path, count, VHDX_META_MAX_ENTRIES);
	for (uint16_t i = 0; i < count; i++) {
		const uint8_t *e = m + 32 + 32 * i;
		uint32_t off = vhdx_le32(e + 16), len = vhdx_le32(e + 20), flags = vhdx_le32(e + 24);
		char gs[GUID_STR_LEN];
		struct guid g;
		int k;

		guid_from_le(&g, e);
		guid_to_string(&g, gs);
		if (len && (off < VHDX_META_TABLE_SIZE || off > v->meta_len || len > v->meta_len - off))
			return disk_fail(err, -EINVAL, "%s: VHDX: metadata item {%s} (%u + %u) lies "
					 "outside the metadata region", path, gs, off, len);
		for (uint16_t j = 0; j < i; j++) {
			const uint8_t *o = m + 32 + 32 * j;
			struct guid og;

			guid_from_le(&og, o);
			if (guid_equal(&g, &og) && !(flags & META_FLAG_USER))
				return disk_fail(err, -EINVAL, "%s: VHDX: metadata item {%s} is listed "
						 "twice", path, gs);
			if (len && ranges_overlap(off, len, vhdx_le32(o + 16), vhdx_le32(o + 20)))
				return disk_fail(err, -EINVAL, "%s: VHDX: metadata item {%s} overlaps "
						 "another item", path, gs);
		}
		if (flags & META_FLAG_USER)
			continue;
		for (k = 0; k < MI_COUNT; k++)
			if (guid_equal(&g, items[k].id))
				break;
		if (k == MI_COUNT) {
			if (flags & META_FLAG_REQUIRED)
				return disk_fail(err, -EOPNOTSUPP, "%s: VHDX: unknown required "
						 "metadata item {%s}", path, gs);
			continue;
		}
		if ((items[k].len && len != items[k].len) || (!items[k].len && !len))
			return disk_fail(err, -EINVAL, "%s: VHDX: metadata item {%s} has length %u",
					 path, gs, len);
		items[k].found = true;
		items[k].off = off;
		items[k].got_len = len;
	}
	return 0;
}

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static int check_values(struct vhdx *v, struct disk_error *err)
{
	const char *path = v->d->path;

	if (!is_pow2(v->block_size) || v->block_size < VHDX_MIN_BLOCK ||
	    v->block_size > VHDX_MAX_BLOCK)
		return disk_fail(err, -EINVAL, "%s: VHDX: block size %u is not a power of two "
				 "between 1 MiB and 256 MiB", path, v->block_size);
	if (v->lsec != 512 && v->lsec != 4096)
		return disk_fail(err, -EINVAL, "%s: VHDX: logical sector size %u (must be 512 or "
				 "4096)", path, v->lsec);
	if (v->psec != 512 && v->psec != 4096)
		return disk_fail(err, -EINVAL, "%s: VHDX: physical sector size %u (must be 512 or "
				 "4096)", path, v->psec);
	if (!v->vsize || v->vsize > VHDX_MAX_SIZE || v->vsize % v->lsec)
		return disk_fail(err, -EINVAL, "%s: VHDX: virtual size %llu is 0, above 64 TiB or "
				 "not a multiple of the %u-byte sector", path,
				 (unsigned long long)v->vsize, v->lsec);
	return 0;
}

int vhdx_parse_metadata(struct vhdx *v, struct disk_error *err)
{
	struct meta_item items[MI_COUNT] = {
		[MI_PARAMS] = { &vhdx_guid_file_params, 8 },
		[MI_VSIZE] = { &vhdx_guid_vsize, 8 },
		[MI_PAGE83] = { &vhdx_guid_page83, 16 },
		[MI_LSEC] = { &vhdx_guid_lsec, 4 },
		[MI_PSEC] = { &vhdx_guid_psec, 4 },
		[MI_LOCATOR] = { &vhdx_guid_parent_locator, 0 },
	};
	static const char *const names[MI_COUNT] = { "file parameters", "virtual disk size",
		"page 83 data", "logical sector size", "physical sector size", "parent locator" };
	const char *path = v->d->path;
	const uint8_t *m;
	uint32_t flags;
	int ret;

	if (v->meta_len > META_MAX_REGION)
		return disk_fail(err, -EINVAL, "%s: VHDX: metadata region of %u bytes is absurdly "
				 "large", path, v->meta_len);
	free(v->meta);
	v->meta = disk_alloc_aligned(v->meta_len);
	if (!v->meta)
		return disk_fail(err, -ENOMEM, "%s: out of memory", path);
	ret = vhdx_meta_read(v, v->meta, v->meta_len, v->meta_off);
	if (ret)
		return disk_fail(err, ret, "%s: VHDX: cannot read the metadata region: %s", path,
				 strerror(-ret));
	ret = parse_table(v, items, err);
	if (ret)
		return ret;
	for (int k = 0; k < MI_LOCATOR; k++)
		if (!items[k].found)
			return disk_fail(err, -EINVAL, "%s: VHDX: the %s metadata item is missing",
					 path, names[k]);
	m = v->meta;
	v->block_size = vhdx_le32(m + items[MI_PARAMS].off);
	flags = vhdx_le32(m + items[MI_PARAMS].off + 4);
	v->has_parent = flags & 2;
	v->leave_allocated = (flags & 1) && !v->has_parent; /* ignored with a parent */
	v->vsize = vhdx_le64(m + items[MI_VSIZE].off);
	v->vsize_item_off = items[MI_VSIZE].off;
	guid_from_le(&v->disk_id, m + items[MI_PAGE83].off);
	v->lsec = vhdx_le32(m + items[MI_LSEC].off);
	v->psec = vhdx_le32(m + items[MI_PSEC].off);
	ret = check_values(v, err);
	if (ret)
		return ret;
	if (v->has_parent) {
		if (!items[MI_LOCATOR].found)
			return disk_fail(err, -EINVAL, "%s: VHDX: differencing disk without a parent "
					 "locator", path);
		v->loc_item_off = items[MI_LOCATOR].off;
		v->loc_item_len = items[MI_LOCATOR].got_len;
		ret = parse_locator(v, m + v->loc_item_off, v->loc_item_len, err);
		if (ret)
			return ret;
	}
	v->chunk_ratio = (uint32_t)(((uint64_t)1 << 23) * v->lsec / v->block_size);
	v->nblocks = (v->vsize + v->block_size - 1) / v->block_size;
	v->nsb = (v->nblocks + v->chunk_ratio - 1) / v->chunk_ratio;
	v->bat_entries = vhdx_bat_count(v->vsize, v->block_size, v->lsec, v->has_parent);
	if (v->bat_entries > v->bat_len / 8)
		return disk_fail(err, -EINVAL, "%s: VHDX: the BAT region (%u bytes) is too small "
				 "for %llu entries", path, v->bat_len,
				 (unsigned long long)v->bat_entries);
	return 0;
}

int vhdx_metadata_build(uint8_t *buf, uint32_t len, const struct vhdx_meta_params *p)
{
	struct {
		const struct guid *id;
		uint32_t off, len, flags;
	} items[6] = {
		{ &vhdx_guid_file_params, 0x10000, 8, META_FLAG_REQUIRED },
		{ &vhdx_guid_vsize, 0x10008, 8, META_FLAG_REQUIRED | META_FLAG_VIRTUAL },
		{ &vhdx_guid_page83, 0x10010, 16, META_FLAG_REQUIRED | META_FLAG_VIRTUAL },
		{ &vhdx_guid_lsec, 0x10020, 4, META_FLAG_REQUIRED | META_FLAG_VIRTUAL },
		{ &vhdx_guid_psec, 0x10024, 4, META_FLAG_REQUIRED | META_FLAG_VIRTUAL },
		{ &vhdx_guid_parent_locator, 0x20000, 0, META_FLAG_REQUIRED | META_FLAG_VIRTUAL },
	};
	int n = p->has_parent ? 6 : 5;

	if (len < 0x30000)
		return -ENOSPC;
	memcpy(buf, "metadata", 8);
	vhdx_put32(buf + 0x10000, p->block_size);
	vhdx_put32(buf + 0x10004, (p->leave_allocated ? 1u : 0) | (p->has_parent ? 2u : 0));
	vhdx_put64(buf + 0x10008, p->vsize);
	guid_to_le(&p->disk_id, buf + 0x10010);
	vhdx_put32(buf + 0x10020, p->lsec);
	vhdx_put32(buf + 0x10024, p->psec);
	if (p->has_parent) {
		int l = vhdx_locator_build(buf + 0x20000, len - 0x20000, &p->linkage, p->relative,
					   p->absolute);
		if (l < 0)
			return l;
		items[5].len = (uint32_t)l;
	}
	vhdx_put16(buf + 10, (uint16_t)n);
	for (int i = 0; i < n; i++) {
		uint8_t *e = buf + 32 + 32 * i;

		guid_to_le(items[i].id, e);
		vhdx_put32(e + 16, items[i].off);
		vhdx_put32(e + 20, items[i].len);
		vhdx_put32(e + 24, items[i].flags);
	}
	return 0;
}
