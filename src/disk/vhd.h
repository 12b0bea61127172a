/* VHD on-disk structures (Microsoft's "Virtual Hard Disk Image Format
 * Specification"), private to src/disk. All fields are big-endian on disk;
 * these structs hold them decoded. */
#ifndef CLOISON_DISK_VHD_H
#define CLOISON_DISK_VHD_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHD_FOOTER_SIZE 512
#define VHD_HEADER_SIZE 1024
#define VHD_SECTOR 512
#define VHD_BAT_UNUSED 0xffffffffu
#define VHD_TYPE_FIXED 2
#define VHD_TYPE_DYNAMIC 3
#define VHD_TYPE_DIFF 4
#define VHD_VERSION 0x00010000u
#define VHD_FEATURES_RESERVED 0x00000002u
#define VHD_DEFAULT_BLOCK (2u * 1024 * 1024)
#define VHD_MAX_BLOCK (256u * 1024 * 1024)
/* The largest size a VHD may have (Hyper-V's and QEMU's limit). */
#define VHD_MAX_SIZE (2040ULL * 1024 * 1024 * 1024)
/* CHS geometry tops out at 65535 cylinders, 16 heads, 255 sectors. */
#define VHD_MAX_CHS_SECTORS (65535ULL * 16 * 255)
/* VHD time stamps count seconds from 2000-01-01 00:00:00 UTC. */
#define VHD_EPOCH_OFFSET 946684800LL
#define VHD_MAX_LOCATORS 8
/* Platform codes of parent locators. */
#define VHD_PLAT_W2RU 0x57327275u /* "W2ru": relative, UTF-16LE */
#define VHD_PLAT_W2KU 0x57326b75u /* "W2ku": absolute, UTF-16LE */
#define VHD_PLAT_WI2R 0x57693272u /* "Wi2r": relative, deprecated (ANSI) */
#define VHD_PLAT_WI2K 0x5769326bu /* "Wi2k": absolute, deprecated (ANSI) */
#define VHD_PLAT_MAC 0x4d616320u  /* "Mac ": Mac OS alias blob */
#define VHD_PLAT_MACX 0x4d616358u /* "MacX": file URL, UTF-8 */
/* A locator path longer than this is not a path we can use. */
#define VHD_LOCATOR_MAX 8192

struct vhd_footer {
	uint8_t cookie[8];
	uint32_t features;
	uint32_t version;
	uint64_t data_offset;
	uint32_t timestamp;
	uint8_t creator_app[4];
	uint32_t creator_version;
	uint32_t creator_os;
	uint64_t original_size;
	uint64_t current_size;
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors_per_track;
	uint32_t disk_type;
	uint32_t checksum;
	uint8_t unique_id[16];
	uint8_t saved_state;
};

struct vhd_locator {
	uint32_t code;
	uint32_t space;	 /* bytes as Hyper-V writes it (the spec says sectors) */
	uint32_t length; /* bytes of path data */
	uint64_t offset; /* absolute file offset of the path data */
};

struct vhd_header {
	uint8_t cookie[8];
	uint64_t data_offset;
	uint64_t table_offset;
	uint32_t version;
	uint32_t max_entries;
	uint32_t block_size;
	uint32_t checksum;
	uint8_t parent_id[16];
	uint32_t parent_timestamp;
	uint8_t parent_name[512]; /* UTF-16BE */
	struct vhd_locator loc[VHD_MAX_LOCATORS];
};

/* In-memory bitmap of one block of a differencing disk. */
struct vhd_bitmap {
	uint8_t *bits;	/* bitmap_size bytes, NULL until loaded */
	bool dirty;	/* changed since it was last written */
};

/* Per-open state (struct disk.priv). lock guards bat, bat_dirty, bitmaps,
 * free_off and ndirty; data I/O to allocated blocks runs without it. */
struct vhd {
	int mfd; /* metadata fd (not O_DIRECT) */
	bool own_mfd;
	struct vhd_footer footer;
	uint8_t footer_raw[VHD_FOOTER_SIZE];
	bool footer_recovered; /* the one at the end was bad; using the copy */
	bool footer_511;       /* an old 511-byte footer */
	uint64_t footer_pos;   /* where the footer is (or belongs) */
	uint64_t data_end;     /* fixed: bytes of data before the footer */
	struct vhd_header hdr;
	uint8_t hdr_raw[VHD_HEADER_SIZE];
	uint64_t hdr_off;
	uint32_t entries;
	uint32_t block_size;
	uint32_t bitmap_size;
	unsigned block_shift;
	uint32_t *bat;	    /* host order */
	bool *bat_dirty;     /* per 512-byte BAT sector: changed since written */
	struct vhd_bitmap *bitmaps; /* differencing only */
	uint64_t free_off;  /* the next block goes here; the footer follows */
	uint64_t ndirty;    /* dirty bitmaps + BAT sectors */
	uint64_t meta_end;  /* end of header/BAT/locator data */
	pthread_mutex_t lock;
};

/* Geometry per the VHD specification (the algorithm Virtual PC and
 * Hyper-V use); sizes past the CHS limit get the maximum geometry. */
void vhd_chs_geometry(uint64_t sectors, uint16_t *cyl, uint8_t *heads, uint8_t *spt);
/* Ones' complement of the byte sum, the checksum field counted as zero. */
uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off);

/* Big-endian field access. */
uint16_t vhd_get16(const uint8_t *p);
uint32_t vhd_get32(const uint8_t *p);
uint64_t vhd_get64(const uint8_t *p);
void vhd_put16(uint8_t *p, uint16_t v);
void vhd_put32(uint8_t *p, uint32_t v);
void vhd_put64(uint8_t *p, uint64_t v);

/* Decode/encode the on-disk forms; encode also sets the checksum. */
void vhd_footer_decode(struct vhd_footer *f, const uint8_t *raw);
void vhd_footer_encode(const struct vhd_footer *f, uint8_t *raw);
void vhd_header_decode(struct vhd_header *h, const uint8_t *raw);
void vhd_header_encode(const struct vhd_header *h, uint8_t *raw);
/* The guest-visible size by the creator's convention (see vhd.c). */
uint64_t vhd_visible_size(const struct vhd_footer *f);

struct disk;
struct disk_create_opts;
struct disk_error;
/* vhd_meta.c: the maintenance side of disk_vhd_ops (creation, parents,
 * resize, check), with the same contracts as struct disk_ops. */
int vhd_create(const char *path, const struct disk_create_opts *opts, struct disk *parent,
	       struct disk_error *err);
int vhd_parent_candidates(struct disk *d, char (*paths)[PATH_MAX], int max);
int vhd_check_parent(struct disk *d, struct disk *parent, struct disk_error *err);
int vhd_set_parent(struct disk *d, struct disk *parent, const char *stored_path,
		   struct disk_error *err);
int vhd_resize(struct disk *d, uint64_t new_size, struct disk_error *err);
int vhd_check(struct disk *d, bool repair, char *report, size_t len);

#endif
