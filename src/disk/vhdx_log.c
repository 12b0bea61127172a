/* The VHDX metadata log (MS-VHDX 2.3): finding and replaying the active
 * sequence on open, and writing every metadata update through it.
 *
 * Writing protocol (vhdx_log_commit): fdatasync (data and earlier in-place
 * updates become durable), write one log entry whose tail is itself,
 * fdatasync, then update in place. Since everything before an entry is
 * durable when it is written, each entry is a complete sequence and the
 * log can wrap freely. Headers use the spec's two-copy update instead. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "disk/vhdx.h"

#define LOG_MAX_LEN (256u * 1024 * 1024)
#define LOG_MAX_FILE_OFFSET (1ULL << 47)
#define ENTRY_HDR 64
#define DESC_SIZE 32

struct log_entry_info {
	bool valid;
	uint32_t len, tail;
	uint64_t seq, flushed, last;
};

/* Reads len bytes at log position pos of the in-memory log, wrapping. */
static void log_copy(const uint8_t *log, uint32_t log_len, uint32_t pos, uint8_t *out, uint32_t len)
{
	uint32_t first = MIN(len, log_len - pos);

	memcpy(out, log + pos, first);
	memcpy(out + first, log, len - first);
}

static uint32_t desc_sectors(uint32_t count)
{
	return (count + 2 + 127) / 128;
}

/* Validates the entry at pos; fills info. entry: scratch of log_len bytes. */
static void validate_entry(const struct vhdx *v, const uint8_t *log, uint32_t pos, uint8_t *entry,
			   struct log_entry_info *info)
{
	uint8_t h[ENTRY_HDR];
	uint32_t len, count, ds, ndata = 0;
	struct guid g;

	info->valid = false;
	log_copy(log, v->log_len, pos, h, ENTRY_HDR);
	if (memcmp(h, "loge", 4))
		return;
	len = vhdx_le32(h + 8);
	count = vhdx_le32(h + 24);
	guid_from_le(&g, h + 32);
	if (!len || len % VHDX_LOG_SECTOR || len > v->log_len || !guid_equal(&g, &v->hdr.log_guid))
		return;
	if (vhdx_le32(h + 12) % VHDX_LOG_SECTOR || vhdx_le32(h + 12) >= v->log_len)
		return;
	if (count > len / DESC_SIZE)
		return;
	ds = desc_sectors(count);
	if ((uint64_t)ds * VHDX_LOG_SECTOR > len)
		return;
	log_copy(log, v->log_len, pos, entry, len);
	if (vhdx_le32(entry + 4) != crc32c(crc32c(crc32c(0, entry, 4), "\0\0\0\0", 4), entry + 8,
					 len - 8))
		return;
	info->seq = vhdx_le64(h + 16);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *d = entry + ENTRY_HDR + DESC_SIZE * i;
		bool data = !memcmp(d, "desc", 4);

		if ((!data && memcmp(d, "zero", 4)) || vhdx_le64(d + 24) != info->seq ||
		    vhdx_le64(d + 16) % VHDX_LOG_SECTOR)
			return;
		if (data) {
			const uint8_t *s = entry + (uint64_t)(ds + ndata) * VHDX_LOG_SECTOR;

			if ((uint64_t)(ds + ndata + 1) * VHDX_LOG_SECTOR > len || memcmp(s, "data", 4) ||
			    vhdx_le32(s + 4) != (uint32_t)(info->seq >> 32) ||
			    vhdx_le32(s + 4092) != (uint32_t)info->seq)
				return;
			ndata++;
		} else if (vhdx_le64(d + 8) % VHDX_LOG_SECTOR) {
			return;
		}
	}
	if ((uint64_t)(ds + ndata) * VHDX_LOG_SECTOR != len)
		return;
	info->valid = true;
	info->len = len;
	info->tail = vhdx_le32(h + 12);
	info->flushed = vhdx_le64(h + 48);
	info->last = vhdx_le64(h + 56);
}

/* Appends the entry at pos to the page list (data pages copied). */
static int collect_entry(struct vhdx *v, const uint8_t *entry, struct vhdx_page **pages, size_t *n,
			 size_t *cap)
{
	uint32_t count = vhdx_le32(entry + 24), ds = desc_sectors(count), ndata = 0;

	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *d = entry + ENTRY_HDR + DESC_SIZE * i;
		struct vhdx_page p = { .off = vhdx_le64(d + 16) };
		uint64_t end;

		if (!memcmp(d, "desc", 4)) {
			const uint8_t *s = entry + (uint64_t)(ds + ndata++) * VHDX_LOG_SECTOR;

			if (posix_memalign((void **)&p.data, 4096, VHDX_LOG_SECTOR))
				return -ENOMEM; /* aligned: the file may be O_DIRECT */
			memcpy(p.data, d + 8, 8);
			memcpy(p.data + 8, s + 8, 4084);
			memcpy(p.data + 4092, d + 4, 4);
			end = p.off + VHDX_LOG_SECTOR;
		} else {
			p.zero_len = vhdx_le64(d + 8);
			end = p.off + p.zero_len;
		}
		if (end < p.off || end > LOG_MAX_FILE_OFFSET ||
		    (v->log_len && p.off < v->log_off + v->log_len && v->log_off < end)) {
			free(p.data);
			return -EINVAL;
		}
		if (*n == *cap) {
			size_t nc = *cap ? *cap * 2 : 16;
			struct vhdx_page *np = realloc(*pages, nc * sizeof(*np));
			if (!np) {
				free(p.data);
				return -ENOMEM;
			}
			*pages = np;
			*cap = nc;
		}
		(*pages)[(*n)++] = p;
	}
	return 0;
}

static void pages_free(struct vhdx_page *pages, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(pages[i].data);
	free(pages);
}

void vhdx_overlay_free(struct vhdx *v)
{
	pages_free(v->overlay, v->noverlay);
	v->overlay = NULL;
	v->noverlay = 0;
}

/* Writes zero_len zero bytes at off. */
static int write_zeroes(int fd, uint64_t off, uint64_t len)
{
	static const uint8_t zero[VHDX_LOG_SECTOR] __attribute__((aligned(4096)));

	for (uint64_t done = 0; done < len; done += VHDX_LOG_SECTOR) {
		int ret = pwrite_full(fd, zero, VHDX_LOG_SECTOR, (off_t)(off + done));
		if (ret)
			return ret;
	}
	return 0;
}

static int apply_pages(struct vhdx *v, const struct vhdx_page *pages, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int ret = pages[i].zero_len ? write_zeroes(v->fd, pages[i].off, pages[i].zero_len)
					    : pwrite_full(v->fd, pages[i].data, VHDX_LOG_SECTOR,
							  (off_t)pages[i].off);
		if (ret)
			return ret;
	}
	return 0;
}

/* Finds the active sequence: the valid chain with the highest head sequence
 * number whose head's tail lies in the chain. Returns the tail position in
 * *start and the entry count in *count (0: none). */
static void find_active(const struct vhdx *v, const struct log_entry_info *info, uint32_t *start,
			uint32_t *count, uint64_t *head_seq)
{
	uint32_t nsect = v->log_len / VHDX_LOG_SECTOR;
	bool *cont = calloc(nsect, 1);

	*count = 0;
	*head_seq = 0;
	for (uint32_t s = 0; s < nsect; s++) {
		uint32_t pos = s, n = 0, tail_idx = UINT32_MAX;
		uint32_t tail_pos = 0;
		const struct log_entry_info *e = &info[s], *head = NULL;

		if (!e->valid || (cont && cont[s]))
			continue;
		while (e->valid && n < nsect) {
			if (head && e->seq != head->seq + 1)
				break;
			if (n && cont)
				cont[pos] = true;
			head = e;
			n++;
			pos = (uint32_t)(((uint64_t)pos * VHDX_LOG_SECTOR + e->len) % v->log_len /
					 VHDX_LOG_SECTOR);
			if (pos == s)
				break;
			e = &info[pos];
		}
		/* the head's tail must be one of the chain's entries */
		pos = s;
		for (uint32_t k = 0; k < n; k++) {
			if (pos * VHDX_LOG_SECTOR == head->tail) {
				tail_idx = k;
				tail_pos = pos * VHDX_LOG_SECTOR;
			}
			pos = (uint32_t)(((uint64_t)pos * VHDX_LOG_SECTOR + info[pos].len) %
					 v->log_len / VHDX_LOG_SECTOR);
		}
		if (tail_idx == UINT32_MAX || head->seq <= *head_seq)
			continue;
		*head_seq = head->seq;
		*start = tail_pos;
		*count = n - tail_idx;
	}
	free(cont);
}

int vhdx_log_replay(struct vhdx *v, struct disk_error *err)
{
	const char *path = v->d->path;
	struct log_entry_info *info = NULL, *head = NULL;
	struct vhdx_page *pages = NULL;
	size_t npages = 0, cap = 0;
	uint8_t *log = NULL, *entry = NULL;
	uint32_t start, count, nsect, pos;
	uint64_t head_seq;
	struct stat st;
	int ret = 0;

	if (guid_is_zero(&v->hdr.log_guid) || !v->log_len)
		return 0;
	if (v->log_len > LOG_MAX_LEN)
		return disk_fail(err, -EINVAL, "%s: VHDX: log of %u bytes is absurdly large", path,
				 v->log_len);
	nsect = v->log_len / VHDX_LOG_SECTOR;
	if (posix_memalign((void **)&log, 4096, v->log_len))
		log = NULL;
	entry = malloc(v->log_len);
	info = calloc(nsect, sizeof(*info));
	if (!log || !entry || !info) {
		ret = disk_fail(err, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	ret = pread_full(v->fd, log, v->log_len, (off_t)v->log_off);
	if (ret) {
		disk_fail(err, ret, "%s: VHDX: cannot read the log: %s", path, strerror(-ret));
		goto out;
	}
	for (uint32_t s = 0; s < nsect; s++)
		validate_entry(v, log, s * VHDX_LOG_SECTOR, entry, &info[s]);
	find_active(v, info, &start, &count, &head_seq);
	if (!count)
		goto out; /* nothing to replay: the log is empty */
	pos = start;
	for (uint32_t k = 0; k < count; k++) {
		head = &info[pos / VHDX_LOG_SECTOR];
		log_copy(log, v->log_len, pos, entry, head->len);
		ret = collect_entry(v, entry, &pages, &npages, &cap);
		if (ret) {
			disk_fail(err, ret, "%s: VHDX: log entry %llu writes outside the file or "
				  "into the log", path, (unsigned long long)head->seq);
			goto out;
		}
		pos = (uint32_t)(((uint64_t)pos + head->len) % v->log_len);
	}
	if (fstat(v->fd, &st) < 0) {
		ret = disk_fail(err, -errno, "%s: cannot stat: %s", path, strerror(errno));
		goto out;
	}
	if (head->flushed > (uint64_t)st.st_size || head->last > LOG_MAX_FILE_OFFSET) {
		ret = disk_fail(err, -EINVAL, "%s: VHDX: the file is shorter (%llu bytes) than its "
				"log says was flushed (%llu): it was truncated", path,
				(unsigned long long)st.st_size, (unsigned long long)head->flushed);
		goto out;
	}
	v->log_seq = head_seq;
	v->log_replayed = true;
	v->log_pending = count;
	if (v->rdonly) {
		v->overlay = pages;
		v->noverlay = npages;
		pages = NULL;
		npages = 0;
		v->file_size = MAX(v->file_size, head->last);
		goto out;
	}
	ret = apply_pages(v, pages, npages);
	if (!ret && (uint64_t)st.st_size < head->last &&
	    ftruncate(v->fd, (off_t)ALIGN_UP(head->last, VHDX_ALIGN)) < 0)
		ret = -errno;
	if (!ret && fdatasync(v->fd) < 0)
		ret = -errno;
	if (!ret) {
		struct vhdx_header h = v->hdr;

		v->file_size = MAX(v->file_size, ALIGN_UP(head->last, VHDX_ALIGN));
		guid_generate(&h.file_write);
		memset(&h.log_guid, 0, sizeof(h.log_guid));
		ret = vhdx_header_update(v, &h);
		v->file_guid_done = true;
	}
	if (ret)
		disk_fail(err, ret, "%s: VHDX: replaying the log failed: %s", path, strerror(-ret));
out:
	pages_free(pages, npages);
	free(info);
	free(entry);
	free(log);
	return ret;
}

int vhdx_header_update(struct vhdx *v, const struct vhdx_header *hdr)
{
	struct vhdx_header h = *hdr;
	uint8_t *buf = NULL;
	int slot = 1 - v->hdr_slot, ret;

	if (v->crashed)
		return -EIO;
	if (posix_memalign((void **)&buf, 4096, VHDX_HEADER_SIZE))
		return -ENOMEM;
	h.seq = v->hdr.seq + 1;
	vhdx_header_encode(&h, buf);
	ret = pwrite_full(v->fd, buf, VHDX_HEADER_SIZE, slot ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF);
	if (!ret && fdatasync(v->fd) < 0)
		ret = -errno;
	if (!ret) {
		v->hdr = h;
		v->hdr_slot = slot;
		v->hdr_bad[slot] = false;
	}
	free(buf);
	return ret;
}

int vhdx_mark_dirty(struct vhdx *v, bool data)
{
	struct vhdx_header h = v->hdr;
	int ret;

	if (v->rdonly)
		return -EROFS;
	if (v->file_guid_done && (!data || v->data_guid_done))
		return 0;
	if (!v->file_guid_done)
		guid_generate(&h.file_write);
	if (data && !v->data_guid_done)
		guid_generate(&h.data_write);
	/* this open's LogGuid in the same update, saving the log's first
	 * commit a header write and a sync: a LogGuid no entry carries yet
	 * means an empty log to us and to QEMU */
	if (!v->log_ours && v->log_len)
		guid_generate(&h.log_guid);
	ret = vhdx_header_update(v, &h);
	if (ret)
		return ret;
	if (!v->log_ours && v->log_len) {
		v->log_head = 0;
		v->log_ours = true;
	}
	v->file_guid_done = true;
	if (data)
		__atomic_store_n(&v->data_guid_done, true, __ATOMIC_RELEASE);
	return 0;
}

/* Writes buf (len bytes) at log position pos, wrapping at the end. */
static int log_write_wrapped(struct vhdx *v, const uint8_t *buf, uint32_t len, uint32_t pos)
{
	uint32_t first = MIN(len, v->log_len - pos);
	int ret = pwrite_full(v->fd, buf, first, (off_t)(v->log_off + pos));

	if (!ret && len > first)
		ret = pwrite_full(v->fd, buf + first, len - first, (off_t)v->log_off);
	return ret;
}

static uint8_t *build_entry(struct vhdx *v, const struct vhdx_page *pages, int n, uint32_t *len_out)
{
	uint32_t ndata = 0, ds = desc_sectors((uint32_t)n), len;
	uint64_t seq = v->log_seq + 1;
	uint8_t *e;

	for (int i = 0; i < n; i++)
		ndata += !pages[i].zero_len;
	len = (ds + ndata) * VHDX_LOG_SECTOR;
	if (len > v->log_len || posix_memalign((void **)&e, 4096, len))
		return NULL;
	memset(e, 0, len);
	memcpy(e, "loge", 4);
	vhdx_put32(e + 8, len);
	vhdx_put32(e + 12, v->log_head);
	vhdx_put64(e + 16, seq);
	vhdx_put32(e + 24, (uint32_t)n);
	guid_to_le(&v->hdr.log_guid, e + 32);
	vhdx_put64(e + 48, v->durable_size);
	vhdx_put64(e + 56, v->file_size);
	ndata = 0;
	for (int i = 0; i < n; i++) {
		uint8_t *d = e + ENTRY_HDR + DESC_SIZE * i;

		vhdx_put64(d + 16, pages[i].off);
		vhdx_put64(d + 24, seq);
		if (pages[i].zero_len) {
			memcpy(d, "zero", 4);
			vhdx_put64(d + 8, pages[i].zero_len);
		} else {
			uint8_t *s = e + (uint64_t)(ds + ndata++) * VHDX_LOG_SECTOR;

			memcpy(d, "desc", 4);
			memcpy(d + 4, pages[i].data + 4092, 4);
			memcpy(d + 8, pages[i].data, 8);
			memcpy(s, "data", 4);
			vhdx_put32(s + 4, (uint32_t)(seq >> 32));
			memcpy(s + 8, pages[i].data + 8, 4084);
			vhdx_put32(s + 4092, (uint32_t)seq);
		}
	}
	vhdx_put32(e + 4, crc32c(0, e, len));
	*len_out = len;
	return e;
}

int vhdx_log_commit(struct vhdx *v, const struct vhdx_page *pages, int n)
{
	uint8_t *e;
	uint32_t len;
	int ret;

	if (v->crashed)
		return -EIO;
	if (!v->log_len)
		return -EOPNOTSUPP;
	ret = vhdx_mark_dirty(v, false);
	if (ret)
		return ret;
	if (!v->log_ours) {
		/* a fresh LogGuid per open: entries left by anyone before
		 * (valid or not) can never join our sequences */
		struct vhdx_header h = v->hdr;

		guid_generate(&h.log_guid);
		ret = vhdx_header_update(v, &h);
		if (ret)
			return ret;
		v->log_head = 0;
		v->log_ours = true;
	}
	if (fdatasync(v->fd) < 0)
		return -errno;
	v->durable_size = v->file_size;
	e = build_entry(v, pages, n, &len);
	if (!e)
		return -ENOSPC;
	ret = log_write_wrapped(v, e, len, v->log_head);
	free(e);
	if (!ret && fdatasync(v->fd) < 0)
		ret = -errno;
	if (ret)
		return ret;
	v->log_seq++;
	v->log_head = (uint32_t)(((uint64_t)v->log_head + len) % v->log_len);
	if (v->crash_point == 1) {
		v->crashed = true;
		return 0;
	}
	return apply_pages(v, pages, (size_t)n);
}

void vhdx_test_crash_at(struct disk *d, int point)
{
	struct vhdx *v = d->priv;

	v->crash_point = point;
}
