/* libFuzzer target for the VHDX parser (src/disk/vhdx*.c).
 *
 * A VHDX file is at least 4 MiB of mostly zeroes, too big to mutate
 * blindly, so the input is a list of patches onto a valid image this
 * harness makes at start-up with the library itself (a dynamic disk with
 * allocated blocks and a pending log entry, and a differencing disk):
 *
 *   byte 0: flags: bit 0 base = differencing disk; bit 1 refresh header and
 *           region table CRCs after patching; bit 2 refresh the log entry
 *           CRC; bit 3 open read-write and write/discard; bit 4 raw mode:
 *           the rest of the input is the whole file
 *   then records: area (1 byte), offset (2 bytes LE), length (1 byte), bytes
 *
 * The patched file goes to a memfd, opened as /proc/self/fd/N with
 * DISK_OPEN_NO_PARENT; then a few reads, info, block status and map. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/util.h"
#include "disk/disk.h"
#include "disk/vhdx.h"

struct base {
	uint8_t *img;
	size_t len;
};

static struct base bases[2];
static int memfd = -1;

static const uint64_t areas[] = {
	0,		       /* file identifier */
	VHDX_HEADER1_OFF, VHDX_HEADER2_OFF, VHDX_RT1_OFF, VHDX_RT2_OFF,
	1 * MiB,	       /* log */
	1 * MiB + 4096,	       /* log data sector */
	2 * MiB,	       /* metadata table */
	2 * MiB + 0x10000,     /* metadata items */
	2 * MiB + 0x20000,     /* parent locator */
	3 * MiB,	       /* BAT */
	4 * MiB,	       /* first block / sector bitmap */
};

static void load(const char *path, struct base *b)
{
	FILE *f = fopen(path, "rb");

	if (!f)
		abort();
	fseek(f, 0, SEEK_END);
	b->len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	b->img = malloc(b->len);
	if (!b->img || fread(b->img, 1, b->len, f) != b->len)
		abort();
	fclose(f);
}

static void make_bases(void)
{
	char dir[] = "/tmp/fuzz_vhdx.XXXXXX", p[64], c[64];
	struct disk_create_opts o = { .format = DISK_FORMAT_VHDX, .type = DISK_TYPE_DYNAMIC,
				      .size = 4 * MiB, .block_size = 1 * MiB };
	struct disk_error err;
	struct disk *d;
	uint8_t buf[4096];

	if (!mkdtemp(dir))
		abort();
	snprintf(p, sizeof(p), "%s/p.vhdx", dir);
	snprintf(c, sizeof(c), "%s/c.vhdx", dir);
	memset(buf, 0x5A, sizeof(buf));
	if (disk_create(p, &o, &err) || disk_open(p, 0, &d, &err))
		abort();
	disk_pwrite(d, buf, sizeof(buf), 0);
	disk_close(d);
	o.type = DISK_TYPE_DIFFERENCING;
	o.size = 0;
	o.parent = p;
	if (disk_create(c, &o, &err) || disk_open(c, 0, &d, &err))
		abort();
	disk_pwrite(d, buf, 1024, 512);
	disk_close(d);
	if (disk_open(p, 0, &d, &err))
		abort();
	vhdx_test_crash_at(d, 1); /* leaves a log entry to replay */
	disk_pwrite(d, buf, sizeof(buf), 2 * MiB);
	disk_close(d);
	load(p, &bases[0]);
	load(c, &bases[1]);
	unlink(p);
	unlink(c);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	make_bases();
	memfd = memfd_create("fuzz_vhdx", 0);
	return memfd < 0 ? -1 : 0;
}

static void fix_crc(uint8_t *img, size_t len, size_t off, size_t n)
{
	if (off + n > len)
		return;
	memset(img + off + 4, 0, 4);
	uint32_t c = crc32c(0, img + off, n);
	memcpy(img + off + 4, &c, 4);
}

static void exercise(struct disk *d, bool rw)
{
	uint64_t size = disk_size(d), run;
	uint32_t sec = disk_sector_size(d);
	struct disk_extent ext;
	struct disk_info info;
	uint8_t buf[8192];
	bool alloc;

	disk_get_info(d, &info);
	for (uint64_t off = 0; off + sec <= size && off < 8 * MiB; off += 512 * KiB)
		(void)disk_pread(d, buf, sec, off);
	(void)disk_block_status(d, 0, size, &alloc, &run);
	(void)disk_map(d, 0, size, &ext);
	if (rw && size >= 2 * sec) {
		memset(buf, 1, sizeof(buf));
		(void)disk_pwrite(d, buf, sec, size - sec);
		(void)disk_discard(d, 0, sec);
		(void)disk_write_zeroes(d, sec, sec, true);
		(void)disk_pread(d, buf, sec, size - sec);
	}
}

/* Brings the memfd to img, writing only the pages that differ from what
 * it held (a read-write run may change it: then everything is rewritten
 * next time). */
static uint8_t *file_now;
static size_t file_now_len;
static bool file_dirty = true;

static int sync_file(const uint8_t *img, size_t len, bool rw)
{
	if (file_dirty || len != file_now_len) {
		free(file_now);
		file_now = malloc(len + 1);
		if (!file_now || ftruncate(memfd, 0) || pwrite_full(memfd, img, len, 0))
			return -1;
		memcpy(file_now, img, len);
		file_now_len = len;
	} else {
		for (size_t off = 0; off < len; off += 4096) {
			size_t n = MIN((size_t)4096, len - off);
			if (memcmp(file_now + off, img + off, n)) {
				if (pwrite_full(memfd, img + off, n, (off_t)off))
					return -1;
				memcpy(file_now + off, img + off, n);
			}
		}
	}
	file_dirty = rw;
	return 0;
}

/* One buffer for the patched image, reused (page faults dominate else). */
static uint8_t *scratch(size_t len)
{
	static uint8_t *buf;
	static size_t cap;

	if (len + 1 > cap) {
		free(buf);
		cap = len + 1;
		buf = malloc(cap);
	}
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t flags = size ? data[0] : 0;
	const struct base *b = &bases[flags & 1];
	struct disk_error err;
	struct disk *d = NULL;
	char path[64];
	uint8_t *img;
	size_t len;

	if (flags & 16) {
		len = size - 1;
		img = scratch(len);
		if (!img)
			return 0;
		memcpy(img, data + 1, len);
	} else {
		len = b->len;
		img = scratch(len);
		if (!img)
			return 0;
		memcpy(img, b->img, len);
		for (size_t i = 1; i + 4 <= size;) {
			uint8_t area = data[i], n = data[i + 3];
			uint64_t off = areas[area % ARRAY_SIZE(areas)] + (uint64_t)(data[i + 1] | data[i + 2] << 8);

			i += 4;
			for (uint8_t k = 0; k < n && i < size; k++, i++)
				if (off + k < len)
					img[off + k] = data[i];
		}
		if (flags & 2) {
			fix_crc(img, len, VHDX_HEADER1_OFF, VHDX_HEADER_SIZE);
			fix_crc(img, len, VHDX_HEADER2_OFF, VHDX_HEADER_SIZE);
			fix_crc(img, len, VHDX_RT1_OFF, VHDX_RT_SIZE);
			fix_crc(img, len, VHDX_RT2_OFF, VHDX_RT_SIZE);
		}
		if (flags & 4)
			fix_crc(img, len, 1 * MiB, 8192);
	}
	if (sync_file(img, len, flags & 8))
		return 0;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	if (disk_open(path, DISK_OPEN_NO_PARENT | ((flags & 8) ? 0 : DISK_OPEN_RDONLY), &d,
		      &err) == 0) {
		exercise(d, flags & 8);
		disk_close(d);
	}
	return 0;
}
