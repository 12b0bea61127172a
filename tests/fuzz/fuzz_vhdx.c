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

/* The memfd holds bases[file_base] exactly (-1: something else, after a
 * read-write or raw run), with holes where the base is all zero. A patch
 * run writes only the pages it changed and puts the base's pages back
 * afterwards, so no input pays for copying megabytes of zeroes. */
#define PAGE 4096u
static int file_base = -1;
static uint8_t *work[2];     /* bases[i].img, patched in place, then put back */
static uint8_t *touched[2];  /* a byte per page: changed by this input */
static uint32_t *nonzero[2]; /* the base's non-zero pages */
static size_t nnonzero[2];

static void init_work(void)
{
	for (int i = 0; i < 2; i++) {
		size_t pages = (bases[i].len + PAGE - 1) / PAGE;

		work[i] = malloc(bases[i].len);
		touched[i] = calloc(pages, 1);
		nonzero[i] = calloc(pages, sizeof(uint32_t));
		if (!work[i] || !touched[i] || !nonzero[i])
			abort();
		memcpy(work[i], bases[i].img, bases[i].len);
		for (size_t p = 0; p < pages; p++) {
			size_t n = MIN((size_t)PAGE, bases[i].len - p * PAGE);
			const uint8_t *q = bases[i].img + p * PAGE;

			for (size_t k = 0; k < n; k++)
				if (q[k]) {
					nonzero[i][nnonzero[i]++] = (uint32_t)p;
					break;
				}
		}
	}
}

static void touch(int bi, size_t off, size_t n)
{
	for (size_t p = off / PAGE; n && p <= (off + n - 1) / PAGE; p++)
		touched[bi][p] = 1;
}

/* The memfd becomes bases[bi]: a hole-punched truncate, then its
 * non-zero pages. */
static int write_base(int bi)
{
	const struct base *b = &bases[bi];

	if (ftruncate(memfd, 0) || ftruncate(memfd, (off_t)b->len))
		return -1;
	for (size_t i = 0; i < nnonzero[bi]; i++) {
		size_t off = (size_t)nonzero[bi][i] * PAGE;

		if (pwrite_full(memfd, b->img + off, MIN((size_t)PAGE, b->len - off), (off_t)off))
			return -1;
	}
	file_base = bi;
	return 0;
}

/* Writes the touched pages of work[bi] (from == work) or of the base
 * (from == the base: the patches undone). */
static int write_touched(int bi, const uint8_t *from)
{
	size_t len = bases[bi].len, pages = (len + PAGE - 1) / PAGE;

	for (size_t p = 0; p < pages; p++) {
		size_t off = p * PAGE;

		if (touched[bi][p] && pwrite_full(memfd, from + off, MIN((size_t)PAGE, len - off),
						  (off_t)off))
			return -1;
	}
	return 0;
}

/* Puts work[bi] back to the base and forgets the touched pages. */
static void untouch(int bi)
{
	size_t len = bases[bi].len, pages = (len + PAGE - 1) / PAGE;

	for (size_t p = 0; p < pages; p++) {
		size_t off = p * PAGE;

		if (touched[bi][p])
			memcpy(work[bi] + off, bases[bi].img + off, MIN((size_t)PAGE, len - off));
	}
	memset(touched[bi], 0, pages);
}

/* FUZZ_VERIFY=1: the memfd is read back before each open and must be
 * exactly the image meant (len bytes of img): a check of the page
 * bookkeeping above. */
static void verify(const uint8_t *img, size_t len)
{
	static int on = -1;
	uint8_t *back;

	if (on < 0)
		on = getenv("FUZZ_VERIFY") != NULL;
	if (!on)
		return;
	back = malloc(len + 1);
	if (!back || lseek(memfd, 0, SEEK_END) != (off_t)len ||
	    (len && pread(memfd, back, len, 0) != (ssize_t)len) || memcmp(back, img, len)) {
		fprintf(stderr, "fuzz_vhdx: the memfd is not the image meant\n");
		abort();
	}
	free(back);
}

static void open_and_exercise(bool rw)
{
	struct disk_error err;
	struct disk *d = NULL;
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	if (disk_open(path, DISK_OPEN_NO_PARENT | (rw ? 0 : DISK_OPEN_RDONLY), &d, &err) == 0) {
		exercise(d, rw);
		disk_close(d);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t flags = size ? data[0] : 0;
	int bi = flags & 1;
	bool rw = flags & 8;
	uint8_t *img = work[bi];
	size_t len = bases[bi].len;

	if (!work[0])
		init_work();
	img = work[bi];
	if (flags & 16) {
		/* raw: the rest of the input is the whole file */
		file_base = -1;
		if (ftruncate(memfd, 0) || pwrite_full(memfd, data + 1, size - 1, 0))
			return 0;
		verify(data + 1, size - 1);
		open_and_exercise(rw);
		return 0;
	}
	for (size_t i = 1; i + 4 <= size;) {
		uint8_t area = data[i], n = data[i + 3];
		uint64_t off = areas[area % ARRAY_SIZE(areas)] + (uint64_t)(data[i + 1] | data[i + 2] << 8);

		i += 4;
		for (uint8_t k = 0; k < n && i < size; k++, i++)
			if (off + k < len) {
				img[off + k] = data[i];
				touch(bi, off + k, 1);
			}
	}
	if (flags & 2) {
		fix_crc(img, len, VHDX_HEADER1_OFF, VHDX_HEADER_SIZE);
		fix_crc(img, len, VHDX_HEADER2_OFF, VHDX_HEADER_SIZE);
		fix_crc(img, len, VHDX_RT1_OFF, VHDX_RT_SIZE);
		fix_crc(img, len, VHDX_RT2_OFF, VHDX_RT_SIZE);
		touch(bi, VHDX_HEADER1_OFF, 8);
		touch(bi, VHDX_HEADER2_OFF, 8);
		touch(bi, VHDX_RT1_OFF, 8);
		touch(bi, VHDX_RT2_OFF, 8);
	}
	if (flags & 4) {
		fix_crc(img, len, 1 * MiB, 8192);
		touch(bi, 1 * MiB, 8);
	}
	if ((file_base != bi && write_base(bi)) || write_touched(bi, img)) {
		file_base = -1;
		untouch(bi);
		return 0;
	}
	verify(img, len);
	open_and_exercise(rw);
	/* A read-write run may have changed any page: the next input writes
	 * the base again. Otherwise only the patched pages go back. */
	if (rw || write_touched(bi, bases[bi].img))
		file_base = -1;
	untouch(bi);
	return 0;
}
