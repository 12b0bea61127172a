/* Private to the VHDX driver (vhdx.c, vhdx_meta.c, vhdx_log.c) and its
 * tests. On-disk layout per MS-VHDX; all fields little-endian. */
#ifndef CLOISON_DISK_VHDX_H
#define CLOISON_DISK_VHDX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/guid.h"
#include "disk/disk_impl.h"

#define VHDX_HEADER_SECTION (1024 * 1024)
#define VHDX_HEADER1_OFF (64 * 1024)
#define VHDX_HEADER2_OFF (128 * 1024)
#define VHDX_RT1_OFF (192 * 1024)
#define VHDX_RT2_OFF (256 * 1024)
#define VHDX_HEADER_SIZE 4096
#define VHDX_RT_SIZE (64 * 1024)
#define VHDX_RT_MAX_ENTRIES 2047
#define VHDX_META_TABLE_SIZE (64 * 1024)
#define VHDX_META_MAX_ENTRIES 2047
#define VHDX_ALIGN (1024 * 1024) /* regions, blocks, log: 1 MiB units */
#define VHDX_LOG_SECTOR 4096
#define VHDX_SB_BLOCK (1024 * 1024) /* one sector-bitmap block */
#define VHDX_MIN_BLOCK (1024 * 1024)
#define VHDX_MAX_BLOCK (256 * 1024 * 1024)
#define VHDX_MAX_SIZE (64ULL << 40)
#define VHDX_DEFAULT_BLOCK (32 * 1024 * 1024)
#define VHDX_MAX_REGION (1ULL << 32) /* region lengths are 32-bit on disk */
#define VHDX_MAX_LOCATOR_ENTRIES 256

/* BAT entry states (bits 0-2); FileOffsetMB is bits 20-63. */
enum vhdx_bat_state {
	VHDX_PB_NOT_PRESENT = 0,
	VHDX_PB_UNDEFINED = 1,
	VHDX_PB_ZERO = 2,
	VHDX_PB_UNMAPPED = 3,
	VHDX_PB_FULLY_PRESENT = 6,
	VHDX_PB_PARTIALLY_PRESENT = 7,
	VHDX_SB_NOT_PRESENT = 0,
	VHDX_SB_PRESENT = 6,
};
#define VHDX_BAT_STATE(e) ((unsigned)((e)&7))
#define VHDX_BAT_OFFSET(e) ((e) >> 20 << 20)
#define VHDX_BAT_ENTRY(state, off) ((uint64_t)(state) | ((off) >> 20 << 20))

struct vhdx_header {
	uint64_t seq;
	struct guid file_write;
	struct guid data_write;
	struct guid log_guid;
	uint16_t log_version;
	uint16_t version;
	uint32_t log_length;
	uint64_t log_offset;
};

/* Parent locator, converted to UTF-8. Empty strings where absent. */
struct vhdx_locator {
	bool has_linkage, has_linkage2;
	struct guid linkage, linkage2;
	char relative[PATH_MAX];
	char volume[PATH_MAX];
	char absolute[PATH_MAX];
};

/* One 4 KiB page (or zero range) a log entry holds; also the in-memory
 * overlay when a log is replayed on a read-only open. */
struct vhdx_page {
	uint64_t off;
	uint64_t zero_len;   /* > 0: zero descriptor of this length, data NULL */
	uint8_t *data;	     /* VHDX_LOG_SECTOR bytes */
};

#define VHDX_PEND_MAX 48 /* deferred pages; one entry is at most 49 log sectors */

struct vhdx {
	struct disk *d;
	int fd;
	bool rdonly;
	pthread_mutex_t lock; /* metadata: BAT, bitmaps, headers, log */

	struct vhdx_header hdr; /* the current header */
	int hdr_slot;		/* 0 or 1: where hdr was read from */
	bool hdr_bad[2];	/* a copy failed its checks (for check) */
	bool hdr_stale;		/* the other copy is valid but older and different */
	bool rt_bad[2];
	bool rt_differ;

	uint64_t bat_off, meta_off;
	uint32_t bat_len, meta_len;
	uint8_t *meta;		/* the whole metadata region */

	uint32_t block_size, lsec, psec;
	uint64_t vsize;
	bool leave_allocated, has_parent;
	struct guid disk_id;
	struct vhdx_locator loc;
	uint32_t loc_item_off, loc_item_len; /* within the metadata region */
	uint32_t vsize_item_off;

	uint32_t chunk_ratio;
	uint64_t nblocks, nsb, bat_entries;
	uint64_t *bat;		/* host order, bat_cap entries (whole pages) */
	uint64_t bat_cap;
	uint8_t **sb;		/* sector bitmap blocks, loaded on demand */

	uint64_t file_size;	/* logical size (grows on allocation) */
	uint64_t durable_size;	/* size at the last fdatasync */

	/* the log */
	uint64_t log_off;
	uint32_t log_len;
	uint32_t log_head;	/* next write position within the log */
	uint64_t log_seq;	/* last sequence number used */
	bool log_replayed;
	uint32_t log_pending;	/* entries the last replay applied */
	bool log_ours;		/* the header's LogGuid was set by this open */
	struct vhdx_page *overlay; /* read-only replay, in log order */
	size_t noverlay;

	/* Metadata pages an allocation changed in memory and not yet logged
	 * (vhdx_txn_defer): the next flush or close commits them in one log
	 * entry, after syncing the data they point at. mem is the page's
	 * in-memory copy (a sector bitmap), NULL for a BAT page (encoded
	 * from bat). */
	struct {
		uint64_t off;
		uint8_t *mem;
	} pend[VHDX_PEND_MAX];
	int npend;

	/* Whole blocks of file space discard gave back in this open (zeroed,
	 * their BAT entries durably gone): reused by new blocks once no data
	 * I/O that may have looked the old entry up is running (io_active,
	 * the lock-free reads and writes in progress). Not while a caller of
	 * the block map (mapped) moves data the library cannot see. */
	uint64_t *freed;
	size_t nfreed, freed_cap;
	unsigned io_active;
	bool mapped;

	bool file_guid_done;	/* FileWriteGuid changed in this open */
	bool data_guid_done;	/* DataWriteGuid changed in this open */
	int crash_point;	/* tests: simulate a crash (see vhdx_test_crash_at) */
	bool crashed;
};

static inline uint16_t vhdx_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t vhdx_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t vhdx_le64(const uint8_t *p)
{
	return (uint64_t)vhdx_le32(p) | (uint64_t)vhdx_le32(p + 4) << 32;
}
static inline void vhdx_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void vhdx_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void vhdx_put64(uint8_t *p, uint64_t v)
{
	vhdx_put32(p, (uint32_t)v);
	vhdx_put32(p + 4, (uint32_t)(v >> 32));
}

/* Well-known GUIDs (MS-VHDX 2.2.2, 2.6.2). */
extern const struct guid vhdx_guid_bat, vhdx_guid_metadata, vhdx_guid_file_params,
	vhdx_guid_vsize, vhdx_guid_page83, vhdx_guid_lsec, vhdx_guid_psec,
	vhdx_guid_parent_locator, vhdx_guid_locator_type;

/* BAT index of payload block b, and of the sector bitmap of chunk c. */
static inline uint64_t vhdx_bat_index(const struct vhdx *v, uint64_t b)
{
	return b + b / v->chunk_ratio;
}
static inline uint64_t vhdx_sb_index(const struct vhdx *v, uint64_t c)
{
	return c * (v->chunk_ratio + 1) + v->chunk_ratio;
}
/* Number of BAT entries for a disk of these parameters. */
uint64_t vhdx_bat_count(uint64_t vsize, uint32_t block_size, uint32_t lsec, bool has_parent);

/* vhdx_meta.c: parsing and building the header section and metadata. */
int vhdx_meta_read(struct vhdx *v, void *buf, size_t len, uint64_t off);
int vhdx_parse_headers(struct vhdx *v, struct disk_error *err);
int vhdx_parse_regions(struct vhdx *v, struct disk_error *err);
int vhdx_parse_metadata(struct vhdx *v, struct disk_error *err);
void vhdx_header_encode(const struct vhdx_header *h, uint8_t buf[VHDX_HEADER_SIZE]);
bool vhdx_header_decode(const uint8_t buf[VHDX_HEADER_SIZE], struct vhdx_header *h);
/* Region table with BAT and metadata entries, CRC filled. buf: 64 KiB. */
void vhdx_region_table_build(uint8_t *buf, uint64_t bat_off, uint32_t bat_len,
			     uint64_t meta_off, uint32_t meta_len);
struct vhdx_meta_params {
	uint32_t block_size, lsec, psec;
	uint64_t vsize;
	bool leave_allocated;
	struct guid disk_id;
	bool has_parent;
	struct guid linkage;
	const char *relative, *absolute; /* UTF-8 */
};
/* Builds the whole metadata region (len bytes, zeroed by the caller). */
int vhdx_metadata_build(uint8_t *buf, uint32_t len, const struct vhdx_meta_params *p);
/* Encodes a parent locator item; returns its length or -ENOSPC. */
int vhdx_locator_build(uint8_t *buf, size_t cap, const struct guid *linkage,
		       const char *relative, const char *absolute);

/* vhdx_log.c: the metadata log and header updates. */
/* Finds the active log sequence; replays it on disk (read-write) or into
 * v->overlay (read-only). */
int vhdx_log_replay(struct vhdx *v, struct disk_error *err);
/* Writes pages through the log: syncs prior writes, writes one log entry,
 * syncs it, then updates the pages in place (not synced). Caller holds
 * the lock. 0 or -errno. */
int vhdx_log_commit(struct vhdx *v, const struct vhdx_page *pages, int n);
/* Writes hdr as the next header (sequence + 1) into the other slot and
 * syncs it. 0 or -errno. */
int vhdx_header_update(struct vhdx *v, const struct vhdx_header *hdr);
/* Makes sure FileWriteGuid (and DataWriteGuid when data) changed in this
 * open, before the first modification. Caller holds the lock. */
int vhdx_mark_dirty(struct vhdx *v, bool data);
void vhdx_overlay_free(struct vhdx *v);


/* vhdx.c: a metadata transaction, committed through the log in one entry.
 * Pages are copies; in-memory BAT and bitmaps change only on success. */
#define VHDX_TXN_MAX 64
struct vhdx_txn {
	struct vhdx_page pages[VHDX_TXN_MAX];
	uint8_t *copy_back[VHDX_TXN_MAX]; /* in-memory copy to refresh, or NULL */
	int n;
	struct {
		uint64_t idx, val;
	} bat[8];
	int nbat;
};
void vhdx_txn_init(struct vhdx_txn *t);
void vhdx_txn_free(struct vhdx_txn *t);
/* A page of the txn for file offset off (4 KiB aligned), created from init
 * (4 KiB) if new; NULL when the txn is full or out of memory. */
uint8_t *vhdx_txn_page(struct vhdx_txn *t, uint64_t off, const uint8_t *init, uint8_t *copy_back);
int vhdx_txn_bat(struct vhdx_txn *t, struct vhdx *v, uint64_t idx, uint64_t val);
int vhdx_txn_zero(struct vhdx_txn *t, uint64_t off, uint64_t len);
/* Commits t through the log at once (after any deferred pages). Locked. */
int vhdx_txn_commit(struct vhdx *v, struct vhdx_txn *t);
/* Applies t to the in-memory BAT and bitmaps now and leaves its pages for
 * the next vhdx_pend_commit: for allocations, whose data is not durable
 * before the next flush anyway. A txn with a zero range or a page that is
 * neither a BAT nor a bitmap page is committed at once. Locked. */
int vhdx_txn_defer(struct vhdx *v, struct vhdx_txn *t);
/* Commits the deferred pages, as they are in memory now, in one log entry
 * (whose first fdatasync makes the data they point at durable). Locked. */
int vhdx_pend_commit(struct vhdx *v);
/* Grows the file by len bytes (1 MiB aligned) and returns where. Locked. */
int vhdx_alloc_space(struct vhdx *v, uint64_t len, uint64_t *off);
/* Loads the sector bitmap block of chunk c into v->sb[c] (zeroes if not
 * present). Locked. */
int vhdx_sb_load(struct vhdx *v, uint64_t c);
uint64_t vhdx_bat_get(const struct vhdx *v, uint64_t idx);
/* Recomputes derived geometry and grows v->bat for a new virtual size. */
int vhdx_set_geometry(struct vhdx *v, uint64_t vsize);

/* vhdx_create.c: create, resize, set-parent, check, parent locators. */
int vhdx_create(const char *path, const struct disk_create_opts *opts, struct disk *parent,
		struct disk_error *err);
int vhdx_resize(struct disk *d, uint64_t new_size, struct disk_error *err);
int vhdx_set_parent(struct disk *d, struct disk *parent, const char *stored_path,
		    struct disk_error *err);
int vhdx_check(struct disk *d, bool repair, char *report, size_t len);
int vhdx_parent_candidates(struct disk *d, char (*paths)[PATH_MAX], int max);
int vhdx_check_parent(struct disk *d, struct disk *parent, struct disk_error *err);

/* Tests only: simulate a kill at a point of the next metadata commit.
 * 1 = after the log entry is durable, before the in-place update. After
 * the point every file write fails and close leaves the file as is. */
void vhdx_test_crash_at(struct disk *d, int point);

#endif
