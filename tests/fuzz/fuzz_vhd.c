/* libFuzzer target for the VHD parser (src/disk/vhd.c, vhd_meta.c).
 *
 * Two modes, chosen by the first byte:
 *  - even: the rest of the input is the whole image file;
 *  - odd: the rest patches a valid image made at start-up (fixed, dynamic
 *    with data, differencing), so mutations land in real structures:
 *    records of (u8 template-ish selector, u32 offset, u8 len, bytes), and
 *    a final truncation.
 * Each image is opened (read-write, parent not followed), inspected, read
 * at a few places, written once (allocation on corrupt metadata), flushed
 * and checked. Nothing may crash; errors are fine. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk/disk.h"

struct template {
	uint8_t *data;
	size_t len;
};

static struct template templates[3];
static char dir[64];

static int slurp_file(const char *path, struct template *t)
{
	struct stat st;
	int fd = open(path, O_RDONLY);

	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	t->len = (size_t)st.st_size;
	t->data = malloc(t->len);
	if (!t->data || pread(fd, t->data, t->len, 0) != (ssize_t)t->len)
		return -1;
	close(fd);
	return 0;
}

static int make_templates(void)
{
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .size = 4 * 1024 * 1024,
				      .block_size = 64 * 1024 };
	struct disk_error err;
	char paths[3][128];
	uint8_t buf[4096];
	struct disk *d;

	snprintf(dir, sizeof(dir), "/tmp/fuzz_vhd.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(paths[0], sizeof(paths[0]), "%s/fixed.vhd", dir);
	snprintf(paths[1], sizeof(paths[1]), "%s/dyn.vhd", dir);
	snprintf(paths[2], sizeof(paths[2]), "%s/diff.vhd", dir);
	o.type = DISK_TYPE_FIXED;
	o.size = 64 * 1024;
	if (disk_create(paths[0], &o, &err))
		return -1;
	o.type = DISK_TYPE_DYNAMIC;
	o.size = 4 * 1024 * 1024;
	if (disk_create(paths[1], &o, &err) || disk_open(paths[1], 0, &d, &err))
		return -1;
	memset(buf, 0xa5, sizeof(buf));
	disk_pwrite(d, buf, sizeof(buf), 0);
	disk_pwrite(d, buf, sizeof(buf), 3 * 1024 * 1024);
	disk_close(d);
	o.type = DISK_TYPE_DIFFERENCING;
	o.size = 0;
	o.parent = paths[1];
	if (disk_create(paths[2], &o, &err) || disk_open(paths[2], 0, &d, &err))
		return -1;
	disk_pwrite(d, buf, 1024, 65536 + 512);
	disk_close(d);
	for (int i = 0; i < 3; i++) {
		if (slurp_file(paths[i], &templates[i]))
			return -1;
		unlink(paths[i]);
	}
	rmdir(dir);
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (make_templates()) {
		fprintf(stderr, "fuzz_vhd: cannot make the template images\n");
		abort();
	}
	return 0;
}

static void exercise(const char *path)
{
	struct disk_error err;
	struct disk_info info;
	struct disk_extent ext;
	char report[1024];
	uint8_t buf[8192];
	struct disk *d;
	uint64_t run;
	bool alloc;

	disk_check(path, false, report, sizeof(report), &err);
	if (disk_open(path, DISK_OPEN_NO_PARENT, &d, &err))
		return;
	disk_get_info(d, &info);
	uint64_t size = disk_size(d);
	uint64_t offs[] = { 0, size / 2, size > 8192 ? size - 8192 : 0, 65536 };
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		uint64_t off = offs[i] & ~511ULL;
		size_t len = (size_t)(size - off < sizeof(buf) ? size - off : sizeof(buf));
		if (off >= size)
			continue;
		disk_pread(d, buf, len, off);
		disk_block_status(d, off, len ? len : 512, &alloc, &run);
		if (len)
			disk_map(d, off, len, &ext);
	}
	memset(buf, 0x5a, sizeof(buf));
	if (size >= 4096) {
		disk_pwrite(d, buf, 4096, (size / 3) & ~511ULL);
		disk_discard(d, 0, 512);
		/* whole blocks too (they leave the BAT of a dynamic disk) */
		disk_discard(d, 0, (size < (8u << 20) ? size : (8u << 20)) & ~511ULL);
		disk_pwrite(d, buf, 512, 0);
	}
	disk_flush(d);
	disk_close(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int memfd = -1;
	char path[64];
	uint8_t *img;
	size_t len;

	if (size < 1)
		return 0;
	if (!(data[0] & 1)) {
		img = malloc(size);
		if (!img)
			return 0;
		memcpy(img, data + 1, size - 1);
		len = size - 1;
	} else {
		const struct template *t = &templates[(data[0] >> 1) % 3];
		size_t i = 1;

		len = t->len;
		img = malloc(len);
		if (!img)
			return 0;
		memcpy(img, t->data, len);
		while (i + 6 <= size) {
			uint32_t off;
			uint8_t n;

			memcpy(&off, data + i, 4);
			n = data[i + 4] % 9;
			i += 5;
			if (n == 0) { /* truncate */
				len = off % (len + 1);
				continue;
			}
			if (!len)
				break;
			off %= (uint32_t)len;
			for (uint8_t k = 0; k < n && i < size && off + k < len; k++)
				img[off + k] = data[i++];
		}
	}
	/* One memfd for every input, emptied and refilled (a new one per
	 * input cost a shmem inode and two system calls more). */
	if (memfd < 0)
		memfd = memfd_create("fuzz_vhd", 0);
	if (memfd < 0) {
		free(img);
		return 0;
	}
	if (ftruncate(memfd, 0) == 0 && pwrite(memfd, img, len, 0) == (ssize_t)len) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
		exercise(path);
	}
	free(img);
	return 0;
}
