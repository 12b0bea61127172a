/* Byte-level access to an image through the disk library, for the system
 * tests (writing through differencing chains, reading back):
 *
 *   disk_io write IMAGE OFFSET FILE   copies FILE's bytes to IMAGE at OFFSET
 *   disk_io read IMAGE OFFSET LENGTH  prints LENGTH bytes from OFFSET to stdout
 *   disk_io discard IMAGE OFFSET LENGTH
 *
 * OFFSET and lengths must be multiples of the image's logical sector size.
 * Exit 0 on success, 1 on an I/O error, 2 on a usage or open error. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/util.h"
#include "disk/disk.h"

static int open_image(const char *path, bool rw, struct disk **d)
{
	struct disk_error err = { { 0 } };
	int ret = disk_open(path, rw ? 0 : DISK_OPEN_RDONLY, d, &err);

	if (ret)
		fprintf(stderr, "disk_io: %s\n", err.msg[0] ? err.msg : strerror(-ret));
	return ret;
}

static int finish(struct disk *d, int ret)
{
	int r = disk_close(d);

	if (ret || r) {
		fprintf(stderr, "disk_io: %s\n", strerror(-(ret ? ret : r)));
		return 1;
	}
	return 0;
}

static int cmd_write(const char *image, uint64_t off, const char *file)
{
	struct disk *d;
	size_t len;
	char *data;
	int ret = read_file(file, 1UL << 31, &data, &len);

	if (ret) {
		fprintf(stderr, "disk_io: %s: %s\n", file, strerror(-ret));
		return 2;
	}
	if (open_image(image, true, &d))
		return 2;
	ret = disk_pwrite(d, data, len, off);
	if (!ret)
		ret = disk_flush(d);
	free(data);
	return finish(d, ret);
}

static int cmd_read(const char *image, uint64_t off, uint64_t len)
{
	struct disk *d;
	char *buf;
	int ret;

	if (open_image(image, false, &d))
		return 2;
	buf = malloc(len ? len : 1);
	if (!buf)
		return finish(d, -ENOMEM);
	ret = disk_pread(d, buf, len, off);
	if (!ret)
		ret = write_full(STDOUT_FILENO, buf, len);
	free(buf);
	return finish(d, ret);
}

static int cmd_discard(const char *image, uint64_t off, uint64_t len)
{
	struct disk *d;
	int ret;

	if (open_image(image, true, &d))
		return 2;
	ret = disk_discard(d, off, len);
	if (!ret)
		ret = disk_flush(d);
	return finish(d, ret);
}

int main(int argc, char **argv)
{
	uint64_t off, len;

	if (argc != 5 || parse_u64(argv[3], &off))
		goto usage;
	if (!strcmp(argv[1], "write"))
		return cmd_write(argv[2], off, argv[4]);
	if (parse_u64(argv[4], &len))
		goto usage;
	if (!strcmp(argv[1], "read"))
		return cmd_read(argv[2], off, len);
	if (!strcmp(argv[1], "discard"))
		return cmd_discard(argv[2], off, len);
usage:
	fprintf(stderr, "usage: disk_io write IMAGE OFFSET FILE\n"
			"       disk_io read IMAGE OFFSET LENGTH\n"
			"       disk_io discard IMAGE OFFSET LENGTH\n");
	return 2;
}
