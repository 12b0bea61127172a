/* VHD: Hyper-V's own files, qemu-img as the peer in both directions,
 * geometry, I/O, resize, corrupt input and crash consistency. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>

#include "common/util.h"
#include "disk/disk.h"
#include "diskcore_util.h"

static int setup(void **state)
{
	return scratch_setup(state, "test_vhd");
}

static int teardown(void **state)
{
	return scratch_teardown(state);
}

/* Reads the whole disk into a raw file; returns the malloc'd content. */
static uint8_t *read_all(struct disk *d)
{
	uint64_t size = disk_size(d);
	uint8_t *buf = malloc(size);

	assert_non_null(buf);
	for (uint64_t off = 0; off < size; off += 1 * MiB) {
		size_t n = (size_t)MIN((uint64_t)MiB, size - off);
		assert_int_equal(disk_pread(d, buf + off, n, off), 0);
	}
	return buf;
}

static void check_hyperv(struct scratch *s, const char *name, enum disk_type type,
			 const char *sha, uint32_t block_size)
{
	const char *gz = scratch_path(s, "in.gz");
	const char *img = scratch_path(s, name);
	const char *raw = scratch_path(s, "out.raw");
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk *d;
	char hash[65];
	uint8_t *buf;

	(void)gz;
	hyperv_file(name, img); /* skips when the Hyper-V files are absent */
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	disk_get_info(d, &info);
	assert_int_equal(info.format, DISK_FORMAT_VHD);
	assert_int_equal(info.type, type);
	assert_int_equal(info.virtual_size, 10 * MiB);
	assert_int_equal(info.logical_sector, 512);
	assert_int_equal(info.block_size, block_size);
	if (type == DISK_TYPE_FIXED) /* data + the 512-byte footer */
		assert_int_equal(info.file_size, 10486272);
	assert_int_equal(info.allocated, type == DISK_TYPE_FIXED ? 10 * MiB : 6 * MiB);
	uint8_t footer[512];
	assert_int_equal(read_at(img, info.file_size - 512, footer, 512), 0);
	assert_memory_equal(footer + 28, "win ", 4); /* made by Hyper-V */
	buf = read_all(d);
	assert_int_equal(write_file(raw, buf, 10 * MiB), 0);
	assert_int_equal(file_sha256(raw, hash), 0);
	assert_string_equal(hash, sha);
	free(buf);
	assert_int_equal(disk_close(d), 0);
	/* our check finds nothing wrong with Microsoft's files */
	char report[1024];
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
}

static void test_hyperv_fixed(void **state)
{
	check_hyperv(*state, "fixed.vhd", DISK_TYPE_FIXED,
		     "459325ab1fcd1d5ec9854cba790ee26378317cda177ffc1072008a1df88e6463", 0);
}

static void test_hyperv_dynamic(void **state)
{
	check_hyperv(*state, "dynamic.vhd", DISK_TYPE_DYNAMIC,
		     "ecff2ef6615a3cddc6a6885f1c6d9cf13a232697e1dc6575f2c2f01f57247784",
		     2 * MiB);
}

static uint64_t qemu_virtual_size(const char *img)
{
	char cmd[512];
	unsigned long long size = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "qemu-img info -f vpc --output=json '%s' | "
		 "sed -n 's/.*\"virtual-size\": \\([0-9]*\\).*/\\1/p'", img);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (fscanf(p, "%llu", &size) != 1)
		size = 0;
	pclose(p);
	return size;
}

/* Our view of img must equal qemu-img's raw export of it. */
static void compare_with_qemu(struct scratch *s, const char *img)
{
	const char *out = scratch_path(s, "qemu-view.raw");
	struct disk_error err = { 0 };
	uint8_t *ours, *theirs;
	struct disk *d;
	size_t len;

	unlink(out);
	assert_int_equal(run_cmd("qemu-img convert -f vpc -O raw '%s' '%s'", img, out), 0);
	theirs = slurp(out, &len);
	assert_non_null(theirs);
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_size(d), len);
	assert_int_equal(qemu_virtual_size(img), len);
	ours = read_all(d);
	assert_memory_equal(ours, theirs, len);
	assert_int_equal(disk_close(d), 0);
	free(ours);
	free(theirs);
}

static void test_qemu_images(void **state)
{
	struct scratch *s = *state;
	const char *src = scratch_path(s, "src.raw");
	size_t size = 9 * MiB + 7 * 512; /* not a CHS size: qemu rounds up */
	uint8_t *data = malloc(size);
	const char *sub[] = { "fixed", "dynamic" };

	if (!have_tool("qemu-img") || !have_tool("qemu-io"))
		skip(); /* the peer is not installed */
	fill_random(data, size, 7);
	memset(data + 3 * MiB, 0, 2 * MiB + 4096); /* a hole qemu leaves unallocated */
	assert_int_equal(write_file(src, data, size), 0);
	for (int i = 0; i < 2; i++) {
		const char *img = scratch_path(s, "conv.vhd");
		struct disk_error err = { 0 };
		struct disk *d;
		uint8_t *buf;

		unlink(img);
		assert_int_equal(run_cmd("qemu-img convert -f raw -O vpc -o subformat=%s '%s' '%s'",
					 sub[i], src, img), 0);
		compare_with_qemu(s, img);
		/* and the content is the source's, the tail rounded up with zeroes */
		assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
		assert_true(disk_size(d) >= size);
		buf = read_all(d);
		assert_memory_equal(buf, data, size);
		for (uint64_t k = size; k < disk_size(d); k++)
			assert_int_equal(buf[k], 0);
		free(buf);
		assert_int_equal(disk_close(d), 0);

		/* qemu-img create, then data written by qemu-io */
		unlink(img);
		assert_int_equal(run_cmd("qemu-img create -q -f vpc -o subformat=%s '%s' 64M",
					 sub[i], img), 0);
		assert_int_equal(run_cmd("qemu-io -f vpc -c 'write -P 0xa5 1M 3M' "
					 "-c 'write -P 0x3c 40M 512' -c 'write -P 0x11 63M 64k' "
					 "'%s' >/dev/null", img), 0);
		compare_with_qemu(s, img);
	}
	free(data);
}

/* Writes scattered patterns through our library and returns the model. */
static uint8_t *write_pattern(const char *img, uint64_t size, uint64_t seed)
{
	struct disk_error err = { 0 };
	uint8_t *model = calloc(1, size);
	struct disk *d;
	uint64_t x = seed;

	assert_int_equal(disk_open(img, 0, &d, &err), 0);
	for (int i = 0; i < 60; i++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t sectors = size / 512;
		uint64_t off = (x >> 20) % sectors * 512;
		uint64_t len = ((x >> 8) % 300 + 1) * 512;
		if (off + len > size)
			len = size - off;
		fill_random(model + off, len, x);
		assert_int_equal(disk_pwrite(d, model + off, len, off), 0);
	}
	/* the last sector and a block boundary */
	fill_random(model + size - 512, 512, seed + 1);
	assert_int_equal(disk_pwrite(d, model + size - 512, 512, size - 512), 0);
	fill_random(model + 2 * MiB - 1024, 2048, seed + 2);
	assert_int_equal(disk_pwrite(d, model + 2 * MiB - 1024, 2048, 2 * MiB - 1024), 0);
	assert_int_equal(disk_close(d), 0);
	return model;
}

static void test_ours_in_qemu(void **state)
{
	struct scratch *s = *state;
	enum disk_type types[] = { DISK_TYPE_FIXED, DISK_TYPE_DYNAMIC };
	uint64_t size = 21 * MiB + 3 * 512;

	if (!have_tool("qemu-img"))
		skip(); /* the peer is not installed */
	for (int i = 0; i < 2; i++) {
		const char *img = scratch_path(s, i ? "ours-dyn.vhd" : "ours-fixed.vhd");
		const char *out = scratch_path(s, "qemu.raw");
		struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = types[i],
					      .size = size };
		struct disk_error err = { 0 };
		uint8_t *model, *theirs;
		size_t len;

		assert_int_equal(disk_create(img, &o, &err), 0);
		model = write_pattern(img, size, 100 + (uint64_t)i);
		assert_int_equal(qemu_virtual_size(img), size);
		unlink(out);
		assert_int_equal(run_cmd("qemu-img convert -f vpc -O raw '%s' '%s'", img, out), 0);
		theirs = slurp(out, &len);
		assert_int_equal(len, size);
		assert_memory_equal(model, theirs, size);
		free(theirs);
		free(model);
		compare_with_qemu(s, img);
	}
}

static void test_geometry(void **state)
{
	struct scratch *s = *state;
	struct {
		uint64_t size;
		uint16_t c;
		uint8_t h, spt;
	} cases[] = {
		{ 10 * MiB, 301, 4, 17 },	/* as Hyper-V's fixed.vhd has it */
		{ 127 * GiB, 65278, 16, 255 },
		{ 65535ULL * 16 * 255 * 512, 65535, 16, 255 },
		{ 1 * GiB, 2080, 16, 63 },
		{ 40 * MiB, 963, 5, 17 },
		{ 2040 * GiB, 65535, 16, 255 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const char *img = scratch_path(s, "geo.vhd");
		struct disk_create_opts o = { .format = DISK_FORMAT_VHD,
					      .type = DISK_TYPE_DYNAMIC, .size = cases[i].size };
		struct disk_error err = { 0 };
		uint8_t f[512];
		struct disk *d;

		unlink(img);
		assert_int_equal(disk_create(img, &o, &err), 0);
		assert_int_equal(read_at(img, 0, f, 512), 0);
		assert_memory_equal(f, "conectix", 8);
		assert_memory_equal(f + 28, "win ", 4);
		assert_int_equal(f[56] << 8 | f[57], cases[i].c);
		assert_int_equal(f[58], cases[i].h);
		assert_int_equal(f[59], cases[i].spt);
		assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
		assert_int_equal(disk_size(d), cases[i].size);
		assert_int_equal(disk_close(d), 0);
	}
	/* the Windows file agrees with our geometry for its size */
	if (hyperv_present("fixed.vhd")) {
		uint8_t f[512];
		const char *img = scratch_path(s, "w.vhd");
		hyperv_file("fixed.vhd", img);
		assert_int_equal(read_at(img, 10 * MiB, f, 512), 0);
		assert_int_equal(f[56] << 8 | f[57], 301);
		assert_int_equal(f[58], 4);
		assert_int_equal(f[59], 17);
	}
	/* past 2040 GiB is refused and leaves nothing */
	const char *big = scratch_path(s, "big.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 2040 * GiB + 512 };
	struct disk_error err = { 0 };
	assert_int_equal(disk_create(big, &o, &err), -EFBIG);
	assert_non_null(strstr(err.msg, "2040 GiB"));
	assert_int_equal(access(big, F_OK), -1);
	o.size = 10 * MiB + 100;
	assert_int_equal(disk_create(big, &o, &err), -EINVAL);
	o.size = 10 * MiB;
	o.block_size = 3 * MiB;
	assert_int_equal(disk_create(big, &o, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "power of two"));
	o.block_size = 0;
	o.logical_sector = 4096;
	assert_int_equal(disk_create(big, &o, &err), -EINVAL);
	assert_int_equal(access(big, F_OK), -1);
}

static void test_dynamic_rw(void **state)
{
	struct scratch *s = *state;
	const char *img = scratch_path(s, "rw.vhd");
	uint64_t size = 16 * MiB;
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = size, .block_size = 1 * MiB };
	struct disk_error err = { 0 };
	struct disk_info info;
	struct disk_extent ext;
	uint8_t *model, *buf;
	struct disk *d;
	uint64_t run;
	bool alloc;

	assert_int_equal(disk_create(img, &o, &err), 0);
	assert_int_equal(disk_open(img, 0, &d, &err), 0);
	disk_get_info(d, &info);
	assert_int_equal(info.allocated, 0);
	assert_int_equal(info.block_size, 1 * MiB);
	assert_int_equal(disk_block_status(d, 0, size, &alloc, &run), 0);
	assert_false(alloc);
	assert_int_equal(run, size);
	assert_int_equal(disk_map(d, 0, 4096, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_ZERO);
	assert_int_equal(disk_close(d), 0);

	model = write_pattern(img, size, 5);
	assert_int_equal(disk_open(img, 0, &d, &err), 0);
	buf = read_all(d);
	assert_memory_equal(buf, model, size);
	free(buf);
	/* a mapped extent reads the same through the fd */
	assert_int_equal(disk_map(d, size - 512, 512, &ext), 0);
	assert_int_equal(ext.kind, DISK_EXTENT_DATA);
	uint8_t sec[512];
	assert_int_equal(pread(ext.fd, sec, 512, (off_t)ext.file_off), 512);
	assert_memory_equal(sec, model + size - 512, 512);
	assert_int_equal(ext.file_off % 512, 0);
	/* discard reads back zeroes */
	assert_int_equal(disk_discard(d, 2 * MiB - 1024, 2048), 0);
	memset(model + 2 * MiB - 1024, 0, 2048);
	assert_int_equal(disk_write_zeroes(d, size - 512, 512, false), 0);
	memset(model + size - 512, 0, 512);
	buf = read_all(d);
	assert_memory_equal(buf, model, size);
	free(buf);
	disk_get_info(d, &info);
	assert_true(info.allocated > 0 && info.allocated <= size);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	buf = read_all(d);
	assert_memory_equal(buf, model, size);
	free(buf);
	assert_int_equal(disk_close(d), 0);
	char report[1024];
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);

	/* a block discarded whole is unallocated again */
	uint64_t before_alloc;
	assert_int_equal(disk_open(img, 0, &d, &err), 0);
	fill_random(model + 4 * MiB, 1 * MiB, 31);
	assert_int_equal(disk_pwrite(d, model + 4 * MiB, 1 * MiB, 4 * MiB), 0);
	disk_get_info(d, &info);
	before_alloc = info.allocated;
	assert_int_equal(disk_discard(d, 4 * MiB, 1 * MiB), 0);
	memset(model + 4 * MiB, 0, 1 * MiB);
	assert_int_equal(disk_block_status(d, 4 * MiB, 1 * MiB, &alloc, &run), 0);
	assert_false(alloc);
	disk_get_info(d, &info);
	assert_int_equal(info.allocated, before_alloc - 1 * MiB);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_block_status(d, 4 * MiB, 1 * MiB, &alloc, &run), 0);
	assert_false(alloc);
	buf = read_all(d);
	assert_memory_equal(buf, model, size);
	free(buf);
	assert_int_equal(disk_close(d), 0);
	/* writing there again allocates a fresh block */
	assert_int_equal(disk_open(img, 0, &d, &err), 0);
	fill_random(model + 4 * MiB + 512, 512, 32);
	assert_int_equal(disk_pwrite(d, model + 4 * MiB + 512, 512, 4 * MiB + 512), 0);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	buf = read_all(d);
	assert_memory_equal(buf, model, size);
	free(buf);
	assert_int_equal(disk_close(d), 0);
	if (have_tool("qemu-img"))
		compare_with_qemu(s, img);
	free(model);
}

/* ---- concurrency ---- */

struct thread_arg {
	struct disk *d;
	int id;
	int ret;
};

static void *writer(void *p)
{
	struct thread_arg *a = p;
	uint8_t buf[8192], back[8192];

	for (int i = 0; i < 200 && !a->ret; i++) {
		/* each thread owns its own 8 KiB slots, spread over all blocks */
		uint64_t off = ((uint64_t)i * 4 + (uint64_t)a->id) * 40960;
		fill_random(buf, sizeof(buf), off);
		a->ret = disk_pwrite(a->d, buf, sizeof(buf), off);
		if (!a->ret)
			a->ret = disk_pread(a->d, back, sizeof(back), off);
		if (!a->ret && memcmp(buf, back, sizeof(buf)))
			a->ret = -EIO;
		if (!a->ret && i % 50 == 0)
			a->ret = disk_flush(a->d);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct scratch *s = *state;
	const char *img = scratch_path(s, "mt.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 40 * MiB, .block_size = 512 * 1024 };
	struct disk_error err = { 0 };
	struct thread_arg a[4];
	pthread_t t[4];
	struct disk *d;

	assert_int_equal(disk_create(img, &o, &err), 0);
	assert_int_equal(disk_open(img, 0, &d, &err), 0);
	for (int i = 0; i < 4; i++) {
		a[i] = (struct thread_arg){ d, i, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, writer, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].ret, 0);
	}
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	for (int id = 0; id < 4; id++) {
		for (int i = 0; i < 200; i++) {
			uint8_t buf[8192], back[8192];
			uint64_t off = ((uint64_t)i * 4 + (uint64_t)id) * 40960;
			fill_random(buf, sizeof(buf), off);
			assert_int_equal(disk_pread(d, back, sizeof(back), off), 0);
			assert_memory_equal(buf, back, sizeof(buf));
		}
	}
	assert_int_equal(disk_close(d), 0);
}

/* ---- resize ---- */

static void test_resize(void **state)
{
	struct scratch *s = *state;
	const char *fx = scratch_path(s, "rs-fixed.vhd");
	const char *dy = scratch_path(s, "rs-dyn.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_FIXED,
				      .size = 4 * MiB };
	struct disk_error err = { 0 };
	uint8_t sec[512], back[512];
	struct disk *d;

	memset(sec, 0x5a, sizeof(sec));
	assert_int_equal(disk_create(fx, &o, &err), 0);
	assert_int_equal(disk_open(fx, 0, &d, &err), 0);
	assert_int_equal(disk_pwrite(d, sec, 512, 4 * MiB - 512), 0);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_resize(fx, 6 * MiB, &err), 0);
	assert_int_equal(disk_open(fx, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_size(d), 6 * MiB);
	assert_int_equal(disk_pread(d, back, 512, 4 * MiB - 512), 0);
	assert_memory_equal(back, sec, 512);
	assert_int_equal(disk_pread(d, back, 512, 4 * MiB), 0); /* the old footer is gone */
	for (int i = 0; i < 512; i++)
		assert_int_equal(back[i], 0);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_resize(fx, 3 * MiB, &err), -ENOTEMPTY);
	assert_non_null(strstr(err.msg, fx));
	assert_int_equal(disk_resize(fx, 4 * MiB, &err), 0);
	struct stat st;
	assert_int_equal(stat(fx, &st), 0);
	assert_int_equal(st.st_size, 4 * MiB + 512);

	/* dynamic: grows inside its padded table, and past it while empty */
	o.type = DISK_TYPE_DYNAMIC;
	o.size = 4 * MiB;
	assert_int_equal(disk_create(dy, &o, &err), 0);
	assert_int_equal(disk_resize(dy, 300 * MiB, &err), 0); /* past 128 entries: moves */
	assert_int_equal(disk_open(dy, 0, &d, &err), 0);
	assert_int_equal(disk_size(d), 300 * MiB);
	assert_int_equal(disk_pwrite(d, sec, 512, 300 * MiB - 512), 0);
	assert_int_equal(disk_pwrite(d, sec, 512, 0), 0);
	assert_int_equal(disk_close(d), 0);
	/* data now follows the table: growing past it is refused, clearly */
	assert_int_equal(disk_resize(dy, 1200 * MiB, &err), -ENOSPC);
	assert_non_null(strstr(err.msg, "block table"));
	assert_int_equal(disk_resize(dy, 310 * MiB, &err), 0); /* inside the padding */
	assert_int_equal(disk_resize(dy, 100 * MiB, &err), -ENOTEMPTY);
	assert_int_equal(disk_open(dy, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_size(d), 310 * MiB);
	assert_int_equal(disk_pread(d, back, 512, 300 * MiB - 512), 0);
	assert_memory_equal(back, sec, 512);
	assert_int_equal(disk_close(d), 0);
	if (have_tool("qemu-img")) {
		compare_with_qemu(s, dy);
		compare_with_qemu(s, fx);
	}
}

/* ---- corrupt input ---- */

static const char *make_dynamic(struct scratch *s, const char *name)
{
	const char *img = scratch_path(s, name);
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 8 * MiB };
	struct disk_error err = { 0 };
	uint8_t buf[4096];
	struct disk *d;

	unlink(img);
	assert_int_equal(disk_create(img, &o, &err), 0);
	assert_int_equal(disk_open(img, 0, &d, &err), 0);
	fill_random(buf, sizeof(buf), 1);
	assert_int_equal(disk_pwrite(d, buf, sizeof(buf), 0), 0);
	assert_int_equal(disk_pwrite(d, buf, sizeof(buf), 6 * MiB), 0);
	assert_int_equal(disk_close(d), 0);
	return img;
}

/* Opening must fail with -EINVAL and a message naming the file and
 * containing what. */
static void expect_bad(const char *img, const char *what)
{
	struct disk_error err = { 0 };
	struct disk *d = NULL;
	int ret = disk_open(img, DISK_OPEN_RDONLY, &d, &err);

	if (ret == 0) {
		print_message("opened a corrupt image (expected: %s)\n", what);
		disk_close(d);
	}
	assert_int_equal(ret, -EINVAL);
	assert_null(d);
	assert_non_null(strstr(err.msg, img));
	if (!strstr(err.msg, what))
		print_message("message: %s\n", err.msg);
	assert_non_null(strstr(err.msg, what));
}

/* Changes a header field and re-signs the header, so only the field's
 * own check can catch it. */
static void patch_header(const char *img, size_t off, const void *val, size_t len)
{
	uint8_t h[1024];

	assert_int_equal(read_at(img, 512, h, sizeof(h)), 0);
	memcpy(h + off, val, len);
	vhd_test_fix_checksum(h, sizeof(h), 36);
	assert_int_equal(patch_file(img, 512, h, sizeof(h)), 0);
}

static void patch_footers(const char *img, size_t off, const void *val, size_t len)
{
	uint8_t f[512];
	struct stat st;

	assert_int_equal(stat(img, &st), 0);
	assert_int_equal(read_at(img, 0, f, sizeof(f)), 0);
	memcpy(f + off, val, len);
	vhd_test_fix_checksum(f, sizeof(f), 64);
	assert_int_equal(patch_file(img, 0, f, sizeof(f)), 0);
	assert_int_equal(patch_file(img, (uint64_t)st.st_size - 512, f, sizeof(f)), 0);
}

static void test_corrupt(void **state)
{
	struct scratch *s = *state;
	uint8_t v4[4], v8[8];
	const char *img;
	struct stat st;

	/* truncated: the BAT points past the end (footer copy used) */
	img = make_dynamic(s, "trunc.vhd");
	assert_int_equal(stat(img, &st), 0);
	assert_int_equal(truncate(img, st.st_size - 600 * 1024), 0);
	expect_bad(img, "past the end");
	/* truncated into the metadata */
	img = make_dynamic(s, "trunc2.vhd");
	assert_int_equal(truncate(img, 1000), 0);
	expect_bad(img, "outside the file");
	img = make_dynamic(s, "trunc3.vhd");
	assert_int_equal(truncate(img, 100), 0);
	{
		struct disk_error err = { 0 };
		struct disk *d;
		/* too short to be anything but raw: opens as raw of 0 sectors */
		int ret = disk_open(img, DISK_OPEN_RDONLY, &d, &err);
		if (!ret) {
			struct disk_info info;
			disk_get_info(d, &info);
			assert_int_equal(info.format, DISK_FORMAT_RAW);
			disk_close(d);
		}
	}

	/* bad checksums: both footers */
	img = make_dynamic(s, "csum.vhd");
	assert_int_equal(stat(img, &st), 0);
	v4[0] = 0x77;
	assert_int_equal(patch_file(img, 0, "conectix\0\0\0\3", 12), 0);
	assert_int_equal(patch_file(img, (uint64_t)st.st_size - 512, "conectix\0\0\0\3", 12), 0);
	expect_bad(img, "checksum");
	/* header checksum */
	img = make_dynamic(s, "hcsum.vhd");
	assert_int_equal(patch_file(img, 512 + 100, v4, 1), 0);
	expect_bad(img, "checksum");
	/* a fixed disk with a bad checksum has no copy */
	{
		const char *fx = scratch_path(s, "fx.vhd");
		struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_FIXED,
					      .size = MiB };
		struct disk_error err = { 0 };
		assert_int_equal(disk_create(fx, &o, &err), 0);
		assert_int_equal(patch_file(fx, MiB + 40, v4, 1), 0);
		expect_bad(fx, "checksum");
		/* and a truncated fixed disk */
		unlink(fx);
		assert_int_equal(disk_create(fx, &o, &err), 0);
		uint8_t f[512];
		assert_int_equal(read_at(fx, MiB, f, 512), 0);
		assert_int_equal(truncate(fx, 1000 * 512), 0);
		assert_int_equal(patch_file(fx, 999 * 512, f, 512), 0);
		expect_bad(fx, "truncated");
	}

	/* BAT entry past the end of the file */
	img = make_dynamic(s, "batpast.vhd");
	put_be32_at(v4, 0x00100000);
	assert_int_equal(patch_file(img, 1536 + 4, v4, 4), 0);
	expect_bad(img, "past the end");
	/* BAT entry over the header */
	img = make_dynamic(s, "batover.vhd");
	put_be32_at(v4, 1);
	assert_int_equal(patch_file(img, 1536 + 4, v4, 4), 0);
	expect_bad(img, "overlaps");
	/* two entries on one block */
	img = make_dynamic(s, "batdup.vhd");
	assert_int_equal(read_at(img, 1536, v4, 4), 0);
	assert_int_equal(patch_file(img, 1536 + 8, v4, 4), 0);
	expect_bad(img, "overlap");

	/* block size not a power of two, zero, absurd */
	uint32_t sizes[] = { 3 * 1024 * 1024, 0, 256, 0x80000000u };
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		img = make_dynamic(s, "bs.vhd");
		put_be32_at(v4, sizes[i]);
		patch_header(img, 32, v4, 4);
		expect_bad(img, "block size");
	}
	/* too few BAT entries for the size */
	img = make_dynamic(s, "few.vhd");
	put_be32_at(v4, 2);
	patch_header(img, 28, v4, 4);
	expect_bad(img, "does not cover");
	/* absurd entry count: the table would lie outside the file */
	img = make_dynamic(s, "many.vhd");
	put_be32_at(v4, 0x7fffffff);
	patch_header(img, 28, v4, 4);
	expect_bad(img, "outside the file");
	/* table offset beyond the file */
	img = make_dynamic(s, "tbl.vhd");
	put_be64_at(v8, 1ULL << 40);
	patch_header(img, 16, v8, 8);
	expect_bad(img, "outside the file");
	/* header offset beyond the file */
	img = make_dynamic(s, "hoff.vhd");
	patch_footers(img, 16, v8, 8);
	expect_bad(img, "header offset");
	/* absurd sizes */
	img = make_dynamic(s, "size.vhd");
	put_be64_at(v8, 1ULL << 50);
	patch_footers(img, 48, v8, 8);
	expect_bad(img, "absurd");
	img = make_dynamic(s, "size0.vhd");
	put_be64_at(v8, 0);
	patch_footers(img, 48, v8, 8);
	expect_bad(img, "absurd");
	/* unknown disk type and version */
	img = make_dynamic(s, "type.vhd");
	put_be32_at(v4, 9);
	patch_footers(img, 60, v4, 4);
	expect_bad(img, "disk type");
	img = make_dynamic(s, "ver.vhd");
	put_be32_at(v4, 0x00020000);
	patch_footers(img, 12, v4, 4);
	expect_bad(img, "version");
	/* header cookie */
	img = make_dynamic(s, "cookie.vhd");
	patch_header(img, 0, "notspars", 8);
	expect_bad(img, "cxsparse");

	/* differencing: a block over the parent locator data, and locator
	 * data past the end of the file */
	const char *parent = make_dynamic(s, "parent.vhd");
	const char *child = scratch_path(s, "child.vhd");
	struct disk_create_opts co = { .format = DISK_FORMAT_VHD,
				       .type = DISK_TYPE_DIFFERENCING, .parent = parent };
	struct disk_error err = { 0 };
	uint8_t h[1024];
	assert_int_equal(disk_create(child, &co, &err), 0);
	assert_int_equal(read_at(child, 512, h, sizeof(h)), 0);
	uint32_t loc_sector = (uint32_t)(((uint64_t)be32_at(h + 576 + 16) << 32 |
					  be32_at(h + 576 + 20)) / 512);
	put_be32_at(v4, loc_sector);
	assert_int_equal(patch_file(child, 1536, v4, 4), 0);
	assert_int_equal(stat(child, &st), 0);
	assert_int_equal(truncate(child, st.st_size + 8 * MiB), 0); /* room for the block */
	assert_int_equal(patch_file(child, (uint64_t)st.st_size + 8 * MiB - 512,
				    "conectix", 0), 0);
	{
		uint8_t f[512];
		assert_int_equal(read_at(child, 0, f, 512), 0);
		assert_int_equal(patch_file(child, (uint64_t)st.st_size + 8 * MiB - 512, f, 512),
				 0);
	}
	expect_bad(child, "locator");
	unlink(child);
	assert_int_equal(disk_create(child, &co, &err), 0);
	put_be64_at(v8, 1ULL << 40);
	patch_header(child, 576 + 16, v8, 8);
	expect_bad(child, "locator");
}

static void test_footer_recovery(void **state)
{
	struct scratch *s = *state;
	const char *img = make_dynamic(s, "rec.vhd");
	struct disk_error err = { 0 };
	char report[2048];
	uint8_t junk[512], buf[4096], want[4096];
	struct stat st;
	struct disk *d;

	assert_int_equal(stat(img, &st), 0);
	memset(junk, 0xee, sizeof(junk));
	assert_int_equal(patch_file(img, (uint64_t)st.st_size - 512, junk, sizeof(junk)), 0);
	/* reads work from the copy */
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	fill_random(want, sizeof(want), 1);
	assert_int_equal(disk_pread(d, buf, sizeof(buf), 6 * MiB), 0);
	assert_memory_equal(buf, want, sizeof(buf));
	assert_int_equal(disk_close(d), 0);
	/* check reports it; repair fixes it; then clean */
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 1);
	assert_non_null(strstr(report, "damaged"));
	assert_int_equal(disk_check(img, true, report, sizeof(report), &err), 0);
	assert_non_null(strstr(report, "repaired"));
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
	/* a damaged copy at offset 0 is found and fixed too */
	assert_int_equal(patch_file(img, 100, junk, 8), 0);
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 1);
	assert_non_null(strstr(report, "offset 0"));
	assert_int_equal(disk_check(img, true, report, sizeof(report), &err), 0);
	assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
	if (have_tool("qemu-img"))
		compare_with_qemu(s, img);
}

/* ---- crash consistency: SIGKILL during allocating writes ---- */

#define CRASH_SLOTS (32 * MiB / 4096)

/* The child writes sector-sized records (seq, pattern) to random sectors
 * and, after each flush, reports through the pipe how many records are
 * durable. */
static void crash_writer(const char *img, int fd_out, uint64_t seed)
{
	struct disk_error err = { 0 };
	struct disk *d;
	uint8_t buf[4096];
	uint32_t seq = 0;

	if (disk_open(img, 0, &d, &err))
		_exit(2);
	for (;;) {
		for (int i = 0; i < 16; i++, seq++) {
			uint64_t slot = (seed + seq * 2654435761ULL) % CRASH_SLOTS;
			fill_random(buf, sizeof(buf), seq);
			memcpy(buf, &seq, sizeof(seq));
			if (disk_pwrite(d, buf, sizeof(buf), slot * 4096))
				_exit(3);
		}
		if (disk_flush(d))
			_exit(4);
		if (write(fd_out, &seq, sizeof(seq)) != sizeof(seq))
			_exit(5);
	}
}

/* A slot either holds what was there before the writer ran (zeroes, or
 * the base's pattern under a differencing disk) or one whole record. */
static uint32_t slot_record(const uint8_t *buf, bool *valid)
{
	uint8_t want[4096];
	uint32_t got;

	memcpy(&got, buf, sizeof(got));
	fill_random(want, sizeof(want), got);
	memcpy(want, &got, sizeof(got));
	*valid = !memcmp(buf, want, sizeof(want));
	return got;
}

static void test_kill_consistency(void **state)
{
	struct scratch *s = *state;
	const char *img = scratch_path(s, "crash.vhd");
	const char *base = scratch_path(s, "crash-base.vhd");
	int trials = 15;
	uint64_t total_durable = 0;
	uint8_t *base_data = malloc(32 * MiB);
	struct disk_create_opts bo = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				       .size = 32 * MiB };
	struct disk_error err = { 0 };
	struct disk *d;

	/* the parent of the differencing trials: a pattern in every slot */
	fill_random(base_data, 32 * MiB, 99);
	assert_int_equal(disk_create(base, &bo, &err), 0);
	assert_int_equal(disk_open(base, 0, &d, &err), 0);
	assert_int_equal(disk_pwrite(d, base_data, 32 * MiB, 0), 0);
	assert_int_equal(disk_close(d), 0);

	for (int t = 0; t < trials; t++) {
		enum disk_type type = t % 3 == 2 ? DISK_TYPE_DIFFERENCING : DISK_TYPE_DYNAMIC;
		struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = type,
					      .size = type == DISK_TYPE_DIFFERENCING ? 0 : 32 * MiB,
					      .block_size = (t % 3 == 1) ? 64 * 1024 : 0,
					      .parent = type == DISK_TYPE_DIFFERENCING ? base : NULL };
		uint32_t durable = 0, v;
		int p[2];
		pid_t pid;

		unlink(img);
		assert_int_equal(disk_create(img, &o, &err), 0);
		assert_int_equal(pipe(p), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			crash_writer(img, p[1], (uint64_t)t * 77);
		}
		close(p[1]);
		struct timespec ts = { 0, (long)(20 + t * 13) * 1000000L };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		while (read(p[0], &v, sizeof(v)) == sizeof(v))
			durable = v;
		close(p[0]);
		total_durable += durable;

		/* every flushed record is there (or a later one), and nothing
		 * anywhere is torn or foreign */
		assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
		uint32_t *last = calloc(CRASH_SLOTS, sizeof(*last));
		for (uint32_t q = 0; q < durable; q++)
			last[((uint64_t)t * 77 + q * 2654435761ULL) % CRASH_SLOTS] = q + 1;
		for (uint64_t slot = 0; slot < CRASH_SLOTS; slot++) {
			uint8_t buf[4096];
			bool valid;
			assert_int_equal(disk_pread(d, buf, sizeof(buf), slot * 4096), 0);
			uint32_t got = slot_record(buf, &valid);
			if (last[slot]) {
				assert_true(valid);
				assert_true(got >= last[slot] - 1);
				continue;
			}
			const uint8_t *before = type == DISK_TYPE_DIFFERENCING
						    ? base_data + slot * 4096 : NULL;
			bool untouched = before ? !memcmp(buf, before, 4096)
						: !buf[0] && !memcmp(buf, buf + 1, 4095);
			assert_true(untouched || valid);
		}
		free(last);
		assert_int_equal(disk_close(d), 0);
		char report[1024];
		assert_int_equal(disk_check(img, false, report, sizeof(report), &err), 0);
		if (t == trials - 2 && have_tool("qemu-img"))
			compare_with_qemu(s, img);
	}
	/* the writer got far enough to make the test mean something */
	print_message("%llu records flushed over %d trials\n", (unsigned long long)total_durable,
		      trials);
	assert_true(total_durable > 0);
	free(base_data);
}

/* A failing create (the file-size limit stops its writes) leaves nothing. */
static void test_create_failure_cleans_up(void **state)
{
	struct scratch *s = *state;
	const char *img = scratch_path(s, "fail.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_FIXED,
				      .size = 64 * MiB };
	struct disk_error err = { 0 };
	struct rlimit old, lim = { 1 * MiB, 1 * MiB };
	int ret;

	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim.rlim_max = old.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	ret = disk_create(img, &o, &err);
	setrlimit(RLIMIT_FSIZE, &old);
	assert_true(ret < 0);
	assert_non_null(strstr(err.msg, img));
	assert_int_equal(access(img, F_OK), -1);
}

/* The size conventions QEMU reads by (block/vpc.c): "qemu"/"vpc " go by
 * CHS unless the geometry is maximal; "qem2" (force_size), "win " and
 * others by current_size. Whatever qemu-img sees, we see. */
static void test_qemu_size_conventions(void **state)
{
	struct scratch *s = *state;
	const char *a = scratch_path(s, "qem2.vhd");
	const char *b = scratch_path(s, "chs.vhd");
	uint8_t f[512];
	struct stat st;

	if (!have_tool("qemu-img") || !have_tool("qemu-io"))
		skip(); /* the peer is not installed */
	/* force_size: a size CHS cannot express, creator "qem2" */
	assert_int_equal(run_cmd("qemu-img create -q -f vpc -o subformat=dynamic,force_size=on "
				 "'%s' 10001k", a), 0);
	assert_int_equal(run_cmd("qemu-io -f vpc -c 'write -P 0x77 9M 700k' '%s' >/dev/null",
				 a), 0);
	assert_int_equal(read_at(a, 0, f, 512), 0);
	assert_memory_equal(f + 28, "qem2", 4);
	compare_with_qemu(s, a);
	/* creator "qemu" whose current_size is larger than its CHS size: the
	 * guest saw the CHS size, and so do we */
	assert_int_equal(run_cmd("qemu-img create -q -f vpc -o subformat=dynamic '%s' 20M", b),
			 0);
	assert_int_equal(run_cmd("qemu-io -f vpc -c 'write -P 0x21 0 20M' '%s' >/dev/null", b),
			 0);
	assert_int_equal(stat(b, &st), 0);
	assert_int_equal(read_at(b, 0, f, 512), 0);
	assert_memory_equal(f + 28, "qemu", 4);
	uint64_t chs = (uint64_t)(f[56] << 8 | f[57]) * f[58] * f[59] * 512;
	put_be64_at(f + 48, chs + 64 * 1024);
	vhd_test_fix_checksum(f, 512, 64);
	assert_int_equal(patch_file(b, 0, f, 512), 0);
	assert_int_equal(patch_file(b, (uint64_t)st.st_size - 512, f, 512), 0);
	compare_with_qemu(s, b);
	struct disk_error err = { 0 };
	struct disk *d;
	assert_int_equal(disk_open(b, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_size(d), chs);
	assert_int_equal(disk_close(d), 0);
	/* the same bytes from Hyper-V ("win ") mean current_size */
	memcpy(f + 28, "win ", 4);
	vhd_test_fix_checksum(f, 512, 64);
	assert_int_equal(patch_file(b, 0, f, 512), 0);
	assert_int_equal(patch_file(b, (uint64_t)st.st_size - 512, f, 512), 0);
	compare_with_qemu(s, b);
	assert_int_equal(disk_open(b, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_size(d), chs + 64 * 1024);
	assert_int_equal(disk_close(d), 0);
}

/* Virtual PC's old fixed disks end in a 511-byte footer. */
static void test_footer_511(void **state)
{
	struct scratch *s = *state;
	const char *img = scratch_path(s, "vpc511.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_FIXED,
				      .size = MiB };
	struct disk_error err = { 0 };
	uint8_t buf[512], back[512];
	struct disk *d;

	assert_int_equal(disk_create(img, &o, &err), 0);
	fill_random(buf, sizeof(buf), 4);
	assert_int_equal(patch_file(img, MiB - 512, buf, 512), 0);
	assert_int_equal(truncate(img, MiB + 511), 0); /* the last byte is reserved, 0 */
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_size(d), MiB);
	assert_int_equal(disk_pread(d, back, 512, MiB - 512), 0);
	assert_memory_equal(buf, back, 512);
	assert_int_equal(disk_close(d), 0);
}

/* Parent locators of every platform code we read, each the only way to
 * the parent (which lives in another folder). */
static void test_locator_codes(void **state)
{
	struct scratch *s = *state;
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 4 * MiB };
	struct disk_error err = { 0 };
	char pdir[200], cdir[200], parent[256], child[256], abs_parent[4096];
	struct {
		const char *code;
		bool relative, utf16;
	} codes[] = {
		{ "W2ru", true, true }, { "W2ku", false, true }, { "Wi2r", true, false },
		{ "Wi2k", false, false }, { "MacX", false, false },
	};
	uint8_t sec[512], back[512];

	snprintf(pdir, sizeof(pdir), "%s/parents", s->dir);
	snprintf(cdir, sizeof(cdir), "%s/children", s->dir);
	assert_int_equal(mkdir(pdir, 0755), 0);
	assert_int_equal(mkdir(cdir, 0755), 0);
	snprintf(parent, sizeof(parent), "%s/p.vhd", pdir);
	snprintf(child, sizeof(child), "%s/c.vhd", cdir);
	assert_int_equal(disk_create(parent, &o, &err), 0);
	struct disk *d;
	fill_random(sec, sizeof(sec), 8);
	assert_int_equal(disk_open(parent, 0, &d, &err), 0);
	assert_int_equal(disk_pwrite(d, sec, 512, 4096), 0);
	assert_int_equal(disk_close(d), 0);
	assert_non_null(realpath(parent, abs_parent));

	for (size_t i = 0; i < ARRAY_SIZE(codes); i++) {
		struct disk_create_opts c = { .format = DISK_FORMAT_VHD,
					      .type = DISK_TYPE_DIFFERENCING, .parent = parent };
		uint8_t h[1024], data[8400] = { 0 };
		char text[4200];
		size_t len = 0;

		unlink(child);
		assert_int_equal(disk_create(child, &c, &err), 0);
		if (codes[i].relative)
			snprintf(text, sizeof(text), "..\\parents\\p.vhd");
		else if (!strcmp(codes[i].code, "MacX"))
			snprintf(text, sizeof(text), "file://%s", abs_parent);
		else
			snprintf(text, sizeof(text), "%s", abs_parent);
		for (const char *t = text; *t; t++) {
			data[len++] = (uint8_t)*t;
			if (codes[i].utf16)
				data[len++] = 0;
		}
		/* one locator, at the old W2ku data (room for the UTF-16 path) */
		assert_int_equal(read_at(child, 512, h, sizeof(h)), 0);
		uint64_t off = 0;
		for (int k = 0; k < 8; k++)
			off = off ? off : ((uint64_t)be32_at(h + 576 + 24 * k + 16) << 32 |
					   be32_at(h + 576 + 24 * k + 20));
		memset(h + 576, 0, 24 * 8);
		memset(h + 64, 0, 512); /* no parent name either */
		memcpy(h + 576, codes[i].code, 4);
		put_be32_at(h + 576 + 4, 1024);
		put_be32_at(h + 576 + 8, (uint32_t)len);
		put_be64_at(h + 576 + 16, off);
		vhd_test_fix_checksum(h, sizeof(h), 36);
		assert_int_equal(patch_file(child, off, data, len + 2), 0);
		assert_int_equal(patch_file(child, 512, h, sizeof(h)), 0);
		int ret = disk_open(child, DISK_OPEN_RDONLY, &d, &err);
		if (ret)
			print_message("%s: %s\n", codes[i].code, err.msg);
		assert_int_equal(ret, 0);
		assert_int_equal(disk_pread(d, back, 512, 4096), 0);
		assert_memory_equal(sec, back, 512);
		assert_int_equal(disk_close(d), 0);
	}
	/* a Mac alias blob alone leads nowhere: a clear error */
	uint8_t h[1024];
	assert_int_equal(read_at(child, 512, h, sizeof(h)), 0);
	memcpy(h + 576, "Mac ", 4);
	vhd_test_fix_checksum(h, sizeof(h), 36);
	assert_int_equal(patch_file(child, 512, h, sizeof(h)), 0);
	assert_int_equal(disk_open(child, DISK_OPEN_RDONLY, &d, &err), -ENOENT);
	assert_non_null(strstr(err.msg, child));
}

/* O_DIRECT data I/O (metadata keeps using the page cache). */
static void test_direct(void **state)
{
	struct scratch *s = *state;
	const char *img = scratch_path(s, "direct.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 8 * MiB };
	struct disk_error err = { 0 };
	struct disk *d;
	void *buf = NULL, *back = NULL;
	int fd;

	/* tmpfs and some others have no O_DIRECT */
	fd = open(scratch_path(s, "probe"), O_CREAT | O_RDWR | O_DIRECT, 0644);
	if (fd < 0) {
		print_message("no O_DIRECT on %s\n", s->dir);
		skip();
	}
	close(fd);
	assert_int_equal(posix_memalign(&buf, 4096, 65536), 0);
	assert_int_equal(posix_memalign(&back, 4096, 65536), 0);
	fill_random(buf, 65536, 12);
	assert_int_equal(disk_create(img, &o, &err), 0);
	assert_int_equal(disk_open(img, DISK_OPEN_DIRECT, &d, &err), 0);
	assert_int_equal(disk_pwrite(d, buf, 65536, 2 * MiB - 32768), 0);
	assert_int_equal(disk_flush(d), 0);
	assert_int_equal(disk_pread(d, back, 65536, 2 * MiB - 32768), 0);
	assert_memory_equal(buf, back, 65536);
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_open(img, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_pread(d, back, 65536, 2 * MiB - 32768), 0);
	assert_memory_equal(buf, back, 65536);
	assert_int_equal(disk_close(d), 0);
	free(buf);
	free(back);
}

/* set-parent after the parent moved to another folder: the new locators
 * work, and the relative one keeps working when both move together. */
static void test_set_parent_moves(void **state)
{
	struct scratch *s = *state;
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 4 * MiB };
	struct disk_error err = { 0 };
	char a[200], b[200], p[256], c[256], p2[256], c2[256];
	uint8_t sec[512], back[512];
	struct disk *d;

	snprintf(a, sizeof(a), "%s/a", s->dir);
	snprintf(b, sizeof(b), "%s/b", s->dir);
	assert_int_equal(mkdir(a, 0755), 0);
	assert_int_equal(mkdir(b, 0755), 0);
	snprintf(p, sizeof(p), "%s/p.vhd", a);
	snprintf(c, sizeof(c), "%s/c.vhd", a);
	snprintf(p2, sizeof(p2), "%s/moved-p.vhd", b);
	assert_int_equal(disk_create(p, &o, &err), 0);
	fill_random(sec, sizeof(sec), 21);
	assert_int_equal(disk_open(p, 0, &d, &err), 0);
	assert_int_equal(disk_pwrite(d, sec, 512, 8192), 0);
	assert_int_equal(disk_close(d), 0);
	o.type = DISK_TYPE_DIFFERENCING;
	o.size = 0;
	o.parent = p;
	assert_int_equal(disk_create(c, &o, &err), 0);
	/* the parent moves (and is renamed) into b */
	assert_int_equal(rename(p, p2), 0);
	assert_int_equal(disk_open(c, DISK_OPEN_RDONLY, &d, &err), -ENOENT);
	assert_int_equal(disk_set_parent(c, p2, &err), 0);
	assert_int_equal(disk_open(c, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_int_equal(disk_pread(d, back, 512, 8192), 0);
	assert_memory_equal(sec, back, 512);
	assert_int_equal(disk_close(d), 0);
	/* both move under a new root: only the relative locator still works */
	assert_int_equal(run_cmd("mv '%s' '%s/a2' && mv '%s' '%s/b2'", a, s->dir, b, s->dir), 0);
	snprintf(c2, sizeof(c2), "%s/a2/c.vhd", s->dir);
	assert_int_equal(disk_open(c2, DISK_OPEN_RDONLY, &d, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "moved-p.vhd"));
	assert_int_equal(run_cmd("mkdir '%s/root' && mv '%s/a2' '%s/root/a' && mv '%s/b2' "
				 "'%s/root/b'", s->dir, s->dir, s->dir, s->dir, s->dir), 0);
	snprintf(c2, sizeof(c2), "%s/root/a/c.vhd", s->dir);
	assert_int_equal(disk_open(c2, DISK_OPEN_RDONLY, &d, &err), 0);
	assert_non_null(strstr(disk_path(disk_parent(d)), "/root/a/../b/moved-p.vhd"));
	assert_int_equal(disk_pread(d, back, 512, 8192), 0);
	assert_memory_equal(sec, back, 512);
	assert_int_equal(disk_close(d), 0);
	char report[512];
	assert_int_equal(disk_check(c2, false, report, sizeof(report), &err), 0);
}

/* Threads writing interleaved sectors of the same blocks of a differencing
 * disk: every bitmap update must survive the others, and the sectors no
 * one wrote must still show the parent. */
struct diff_arg {
	struct disk *d;
	int id;
	int ret;
};

#define DIFF_SECTORS (4 * MiB / 512)

static void *diff_writer(void *p)
{
	struct diff_arg *a = p;
	uint8_t buf[512], back[512];

	for (uint64_t sec = (uint64_t)a->id; sec < DIFF_SECTORS && !a->ret; sec += 8) {
		fill_random(buf, sizeof(buf), 1000 + sec);
		a->ret = disk_pwrite(a->d, buf, 512, sec * 512);
		if (!a->ret)
			a->ret = disk_pread(a->d, back, 512, sec * 512);
		if (!a->ret && memcmp(buf, back, 512))
			a->ret = -EIO;
		if (!a->ret && sec % 512 == (uint64_t)a->id)
			a->ret = disk_flush(a->d);
	}
	return NULL;
}

static void test_threads_differencing(void **state)
{
	struct scratch *s = *state;
	const char *base = scratch_path(s, "tb.vhd");
	const char *child = scratch_path(s, "tc.vhd");
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 4 * MiB, .block_size = 256 * 1024 };
	struct disk_error err = { 0 };
	uint8_t *parent = malloc(4 * MiB);
	struct diff_arg a[4];
	pthread_t t[4];
	struct disk *d;

	fill_random(parent, 4 * MiB, 77);
	assert_int_equal(disk_create(base, &o, &err), 0);
	assert_int_equal(disk_open(base, 0, &d, &err), 0);
	assert_int_equal(disk_pwrite(d, parent, 4 * MiB, 0), 0);
	assert_int_equal(disk_close(d), 0);
	o.type = DISK_TYPE_DIFFERENCING;
	o.size = 0;
	o.parent = base;
	assert_int_equal(disk_create(child, &o, &err), 0);
	assert_int_equal(disk_open(child, 0, &d, &err), 0);
	for (int i = 0; i < 4; i++) {
		a[i] = (struct diff_arg){ d, i * 2, 0 }; /* even sectors only */
		assert_int_equal(pthread_create(&t[i], NULL, diff_writer, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].ret, 0);
	}
	assert_int_equal(disk_close(d), 0);
	assert_int_equal(disk_open(child, DISK_OPEN_RDONLY, &d, &err), 0);
	for (uint64_t sec = 0; sec < DIFF_SECTORS; sec++) {
		uint8_t want[512], back[512];
		bool written = sec % 2 == 0; /* the threads took the even ones */
		if (written)
			fill_random(want, sizeof(want), 1000 + sec);
		else
			memcpy(want, parent + sec * 512, 512);
		assert_int_equal(disk_pread(d, back, 512, sec * 512), 0);
		assert_memory_equal(want, back, 512);
	}
	assert_int_equal(disk_close(d), 0);
	free(parent);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hyperv_fixed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hyperv_dynamic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qemu_images, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ours_in_qemu, setup, teardown),
		cmocka_unit_test_setup_teardown(test_geometry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dynamic_rw, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_footer_recovery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kill_consistency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_failure_cleans_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_qemu_size_conventions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_footer_511, setup, teardown),
		cmocka_unit_test_setup_teardown(test_locator_codes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_direct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_parent_moves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads_differencing, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
