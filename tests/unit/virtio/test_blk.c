/* virtio-blk through the modern PCI transport, driven by a test driver
 * over the vm/pci test double: feature negotiation, reads and writes that
 * reach a real raw file through io_uring (and a VHD through the disk
 * library), flush/discard/write-zeroes, GET_ID, read-only disks, bad
 * requests, and a hostile ring that must put the device into
 * DEVICE_NEEDS_RESET without stopping anything else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk/disk.h"
#include "virtio_driver.h"
#include "vmm/virtio/devices.h"
#include "vmm/virtio/queue.h"

#define DISK_SIZE (1u << 20)
#define F_VERSION_1 (1ULL << 32)
#define F_EVENT_IDX (1ULL << 29)
#define F_INDIRECT (1ULL << 28)
#define BLK_F_RO (1ULL << 5)
#define BLK_F_FLUSH (1ULL << 9)
#define BLK_F_MQ (1ULL << 12)
#define BLK_F_DISCARD (1ULL << 13)
#define BLK_F_WZ (1ULL << 14)

#define HDR_GPA 0x100000ULL
#define DATA_GPA 0x200000ULL
#define STATUS_GPA 0x180000ULL
#define TABLE_GPA 0x190000ULL

struct fixture {
	struct vm *vm;
	struct vdrv d;
	char path[64];
	int fd;
};

static int make_file(struct fixture *f)
{
	uint8_t *buf = malloc(DISK_SIZE);

	snprintf(f->path, sizeof(f->path), "/tmp/test_virtio_blk_XXXXXX");
	f->fd = mkstemp(f->path);
	if (f->fd < 0 || !buf)
		return -1;
	for (unsigned i = 0; i < DISK_SIZE; i++)
		buf[i] = (uint8_t)(i * 7 + i / 512);
	if (pwrite(f->fd, buf, DISK_SIZE, 0) != DISK_SIZE)
		return -1;
	free(buf);
	return 0;
}

static int setup_with(void **state, unsigned ncpus, const char *opts)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char spec[256], err[256] = "";

	assert_non_null(f);
	assert_int_equal(make_file(f), 0);
	f->vm = vd_create(ncpus);
	assert_non_null(f->vm);
	snprintf(spec, sizeof(spec), "path=%s%s", f->path, opts);
	if (virtio_add_disk(f->vm, spec, err, sizeof(err))) {
		fprintf(stderr, "virtio_add_disk: %s\n", err);
		fail();
	}
	vdrv_attach(&f->d, f->vm, 0);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_with(state, 1, ",serial=SN-1234");
}

static int setup_ro(void **state)
{
	return setup_with(state, 1, ",readonly");
}

static int setup_mq(void **state)
{
	return setup_with(state, 2, "");
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	vd_stop_loop(f->vm);
	virtio_devices_destroy(f->vm);
	vd_destroy(f->vm);
	close(f->fd);
	unlink(f->path);
	free(f);
	return 0;
}

static void start(struct fixture *f, unsigned nq)
{
	uint64_t want = F_VERSION_1 | F_EVENT_IDX | F_INDIRECT | BLK_F_FLUSH | BLK_F_DISCARD |
			BLK_F_WZ | BLK_F_MQ | BLK_F_RO;

	assert_int_not_equal(vdrv_init(&f->d, want & vdrv_device_features(&f->d), nq) & 8, 0);
	assert_int_equal(vdrv_status(&f->d), 1 | 2 | 4 | 8);
}

/* One request: header, optional data, status. Returns the status byte or
 * -1 when the device never answered. */
static int request(struct fixture *f, unsigned q, uint32_t type, uint64_t sector,
		   uint32_t len, bool indirect, uint32_t *used_len)
{
	struct { uint32_t type, reserved; uint64_t sector; } hdr = { type, 0, sector };
	bool data_in = type == 0 || type == 8;
	struct vdrv_seg segs[3];
	unsigned n = 0;
	uint32_t id, ulen;
	uint8_t *status = vdrv_ptr(&f->d, STATUS_GPA);

	memcpy(vdrv_ptr(&f->d, HDR_GPA), &hdr, sizeof(hdr));
	*status = 0xee;
	segs[n++] = (struct vdrv_seg){ HDR_GPA, sizeof(hdr), false };
	if (len)
		segs[n++] = (struct vdrv_seg){ DATA_GPA, len, data_in };
	segs[n++] = (struct vdrv_seg){ STATUS_GPA, 1, true };
	vdrv_post(&f->d, q, segs, n, indirect ? TABLE_GPA : 0);
	vdrv_kick(&f->d, q);
	if (!vdrv_wait_used(&f->d, q, 5000, &id, &ulen))
		return -1;
	if (used_len)
		*used_len = ulen;
	return *status;
}

static void test_negotiation_and_config(void **state)
{
	struct fixture *f = *state;
	uint64_t features = vdrv_device_features(&f->d);

	assert_true(features & F_VERSION_1);
	assert_true(features & F_EVENT_IDX);
	assert_true(features & F_INDIRECT);
	assert_true(features & BLK_F_FLUSH);
	assert_false(features & BLK_F_RO);
	assert_int_equal(vdrv_cfg_read(&f->d, 0, 8), DISK_SIZE / 512);
	assert_int_equal(vdrv_cfg_read(&f->d, 20, 4), 512);
	/* A driver without VERSION_1 is refused: FEATURES_OK does not stick. */
	assert_int_equal(vdrv_init(&f->d, BLK_F_FLUSH, 1) & 8, 0);
	/* Features the device never offered are refused too. */
	assert_int_equal(vdrv_init(&f->d, F_VERSION_1 | (1ULL << 40), 1) & 8, 0);
	start(f, 1);
	/* PCI identity: a modern virtio-blk (0x1af4:0x1042, revision >= 1). */
	assert_int_equal(f->vm->devs[0]->config[0] | f->vm->devs[0]->config[1] << 8, 0x1af4);
	assert_int_equal(f->vm->devs[0]->config[2] | f->vm->devs[0]->config[3] << 8, 0x1042);
	assert_true(f->vm->devs[0]->config[8] >= 1);
}

static void test_read_write(void **state)
{
	struct fixture *f = *state;
	uint8_t *data = vdrv_ptr(&f->d, DATA_GPA), file[4096];
	uint32_t used_len;

	start(f, 1);
	/* Read sector 3..10 and compare with the file. */
	assert_int_equal(request(f, 0, 0, 3, 4096, false, &used_len), 0);
	assert_int_equal(used_len, 4097);
	assert_int_equal(pread(f->fd, file, 4096, 3 * 512), 4096);
	assert_memory_equal(data, file, 4096);
	/* Write a pattern to sector 100 and find it in the file. */
	memset(data, 0x5a, 4096);
	assert_int_equal(request(f, 0, 1, 100, 4096, false, NULL), 0);
	assert_int_equal(pread(f->fd, file, 4096, 100 * 512), 4096);
	for (unsigned i = 0; i < 4096; i++)
		assert_int_equal(file[i], 0x5a);
	/* Host writes, guest reads back (through an indirect table). */
	memset(file, 0xc3, sizeof(file));
	assert_int_equal(pwrite(f->fd, file, 4096, 200 * 512), 4096);
	memset(data, 0, 4096);
	assert_int_equal(request(f, 0, 0, 200, 4096, true, NULL), 0);
	assert_memory_equal(data, file, 4096);
	/* The driver asked for interrupts on vector 1. */
	assert_true(vd_vector_count(f->vm, 0, 1) >= 3);
	assert_int_equal(request(f, 0, 4, 0, 0, false, NULL), 0); /* flush */
}

static void test_last_sector_and_out_of_range(void **state)
{
	struct fixture *f = *state;

	start(f, 1);
	assert_int_equal(request(f, 0, 0, DISK_SIZE / 512 - 1, 512, false, NULL), 0);
	assert_int_equal(request(f, 0, 0, DISK_SIZE / 512 - 1, 1024, false, NULL), 1);
	assert_int_equal(request(f, 0, 0, DISK_SIZE / 512, 512, false, NULL), 1);
	assert_int_equal(request(f, 0, 1, UINT64_MAX / 256, 512, false, NULL), 1);
	assert_int_equal(request(f, 0, 0, 0, 100, false, NULL), 1); /* not whole sectors */
	assert_int_equal(request(f, 0, 77, 0, 0, false, NULL), 2); /* unknown type: UNSUPP */
	/* The device still serves after all that. */
	assert_int_equal(request(f, 0, 0, 0, 512, false, NULL), 0);
}

static void test_get_id(void **state)
{
	struct fixture *f = *state;
	uint32_t used_len;

	start(f, 1);
	memset(vdrv_ptr(&f->d, DATA_GPA), 0xff, 20);
	assert_int_equal(request(f, 0, 8, 0, 20, false, &used_len), 0);
	assert_int_equal(used_len, 21);
	assert_memory_equal(vdrv_ptr(&f->d, DATA_GPA), "SN-1234\0\0\0", 10);
}

static void test_discard_and_write_zeroes(void **state)
{
	struct fixture *f = *state;
	struct { uint64_t sector; uint32_t num, flags; } range = { 16, 16, 0 };
	uint8_t file[8192], zero[8192] = { 0 };

	start(f, 1);
	memcpy(vdrv_ptr(&f->d, DATA_GPA), &range, sizeof(range));
	/* discard, data in the readable part */
	{
		struct vdrv_seg segs[3] = { { HDR_GPA, 16, false }, { DATA_GPA, 16, false },
					    { STATUS_GPA, 1, true } };
		struct { uint32_t type, reserved; uint64_t sector; } hdr = { 13, 0, 0 };

		memcpy(vdrv_ptr(&f->d, HDR_GPA), &hdr, sizeof(hdr));
		vdrv_post(&f->d, 0, segs, 3, 0);
		vdrv_kick(&f->d, 0);
		assert_true(vdrv_wait_used(&f->d, 0, 5000, NULL, NULL));
		assert_int_equal(*(uint8_t *)vdrv_ptr(&f->d, STATUS_GPA), 0);
		assert_int_equal(pread(f->fd, file, 8192, 16 * 512), 8192);
		assert_memory_equal(file, zero, 8192);

		range.sector = 64;
		range.flags = 1; /* unmap allowed */
		memcpy(vdrv_ptr(&f->d, DATA_GPA), &range, sizeof(range));
		hdr.type = 11; /* discard */
		memcpy(vdrv_ptr(&f->d, HDR_GPA), &hdr, sizeof(hdr));
		vdrv_post(&f->d, 0, segs, 3, 0);
		vdrv_kick(&f->d, 0);
		assert_true(vdrv_wait_used(&f->d, 0, 5000, NULL, NULL));
		/* discard takes no flags */
		assert_int_equal(*(uint8_t *)vdrv_ptr(&f->d, STATUS_GPA), 2);
	}
}

static void test_read_only(void **state)
{
	struct fixture *f = *state;
	uint8_t before[512], after[512];

	assert_true(vdrv_device_features(&f->d) & BLK_F_RO);
	start(f, 1);
	assert_int_equal(pread(f->fd, before, 512, 0), 512);
	memset(vdrv_ptr(&f->d, DATA_GPA), 0x11, 512);
	assert_int_equal(request(f, 0, 1, 0, 512, false, NULL), 1); /* IOERR */
	assert_int_equal(pread(f->fd, after, 512, 0), 512);
	assert_memory_equal(before, after, 512);
	assert_int_equal(request(f, 0, 0, 0, 512, false, NULL), 0); /* reads still work */
}

static void test_multiqueue(void **state)
{
	struct fixture *f = *state;
	uint8_t file[512];

	assert_true(vdrv_device_features(&f->d) & BLK_F_MQ);
	assert_int_equal(vdrv_cfg_read(&f->d, 34, 2), 2);
	start(f, 2);
	assert_int_equal(request(f, 1, 0, 9, 512, false, NULL), 0);
	assert_int_equal(pread(f->fd, file, 512, 9 * 512), 512);
	assert_memory_equal(vdrv_ptr(&f->d, DATA_GPA), file, 512);
	assert_true(vd_vector_count(f->vm, 0, 2) >= 1);
	assert_int_equal(request(f, 0, 0, 9, 512, false, NULL), 0);
}

/* A hostile ring: the device must go to NEEDS_RESET, tell the driver on
 * the config vector, and come back after a reset. */
static void test_loop_needs_reset(void **state)
{
	struct fixture *f = *state;
	unsigned cfg_irqs;

	start(f, 1);
	cfg_irqs = vd_vector_count(f->vm, 0, 0);
	vdrv_raw_desc(&f->d, 0, 0, HDR_GPA, 16, 1, 1);
	vdrv_raw_desc(&f->d, 0, 1, DATA_GPA, 512, 1, 0);
	vdrv_raw_avail(&f->d, 0, 0);
	vdrv_kick(&f->d, 0);
	assert_true(vdrv_wait_status(&f->d, 0x40, 5000));
	assert_int_equal(vd_vector_count(f->vm, 0, 0), cfg_irqs + 1);
	assert_false(vdrv_wait_used(&f->d, 0, 50, NULL, NULL));
	/* Reset brings it back. */
	start(f, 1);
	assert_int_equal(request(f, 0, 0, 0, 512, false, NULL), 0);
}

static void test_outside_ram_needs_reset(void **state)
{
	struct fixture *f = *state;

	start(f, 1);
	vdrv_raw_desc(&f->d, 0, 0, HDR_GPA, 16, 1, 1);
	vdrv_raw_desc(&f->d, 0, 1, VD_RAM_SIZE - 256, 512, 3, 2);
	vdrv_raw_desc(&f->d, 0, 2, STATUS_GPA, 1, 2, 0);
	vdrv_raw_avail(&f->d, 0, 0);
	vdrv_kick(&f->d, 0);
	assert_true(vdrv_wait_status(&f->d, 0x40, 5000));
}

static void test_no_status_byte_needs_reset(void **state)
{
	struct fixture *f = *state;

	start(f, 1);
	vdrv_raw_desc(&f->d, 0, 0, HDR_GPA, 16, 0, 0);
	vdrv_raw_avail(&f->d, 0, 0);
	vdrv_kick(&f->d, 0);
	assert_true(vdrv_wait_status(&f->d, 0x40, 5000));
}

static void test_garbage_avail_index_needs_reset(void **state)
{
	struct fixture *f = *state;
	uint8_t *avail;

	start(f, 1);
	avail = vdrv_ptr(&f->d, f->d.q[0].avail);
	avail[2] = 0x00;
	avail[3] = 0x80; /* idx 0x8000: far more than 16 entries */
	vdrv_kick(&f->d, 0);
	assert_true(vdrv_wait_status(&f->d, 0x40, 5000));
}

static void test_bad_queue_address_needs_reset(void **state)
{
	struct fixture *f = *state;

	vdrv_set_status(&f->d, 0);
	vdrv_init(&f->d, F_VERSION_1, 0);
	/* queue 0 with its used ring outside RAM */
	vd_write(f->vm, 0, f->d.common + 22, 0, 2);
	vd_write(f->vm, 0, f->d.common + 24, 16, 2);
	vd_write(f->vm, 0, f->d.common + 32, 0x10000, 8);
	vd_write(f->vm, 0, f->d.common + 40, 0x11000, 8);
	vd_write(f->vm, 0, f->d.common + 48, (uint64_t)VD_RAM_SIZE, 8);
	vd_write(f->vm, 0, f->d.common + 28, 1, 2);
	assert_true(vdrv_status(&f->d) & 0x40);
}

static void test_pause_resume(void **state)
{
	struct fixture *f = *state;
	struct { uint32_t type, reserved; uint64_t sector; } hdr = { 0, 0, 5 };
	struct vdrv_seg segs[3] = { { HDR_GPA, 16, false }, { DATA_GPA, 512, true },
				    { STATUS_GPA, 1, true } };

	start(f, 1);
	virtio_devices_pause(f->vm);
	memcpy(vdrv_ptr(&f->d, HDR_GPA), &hdr, sizeof(hdr));
	vdrv_post(&f->d, 0, segs, 3, 0);
	vdrv_kick(&f->d, 0);
	assert_false(vdrv_wait_used(&f->d, 0, 100, NULL, NULL));
	virtio_devices_resume(f->vm);
	assert_true(vdrv_wait_used(&f->d, 0, 5000, NULL, NULL));
	/* A VM reset returns the device to its just-created state. */
	virtio_devices_reset(f->vm);
	assert_int_equal(vdrv_status(&f->d), 0);
}

/* Transport details a driver relies on. */
static void test_transport_registers(void **state)
{
	struct fixture *f = *state;
	struct vdrv *d = &f->d;
	uint64_t desc;

	start(f, 1);
	/* num_queues, queue_notify_off, the maximum queue size */
	assert_int_equal(vd_read(f->vm, 0, d->common + 18, 2), 1);
	vd_write(f->vm, 0, d->common + 22, 0, 2);
	assert_int_equal(vd_read(f->vm, 0, d->common + 30, 2), 0);
	assert_int_equal(vd_read(f->vm, 0, d->common + 24, 2), VDRV_QSIZE);
	/* An enabled queue's size and addresses can no longer change. */
	vd_write(f->vm, 0, d->common + 24, 8, 2);
	assert_int_equal(vd_read(f->vm, 0, d->common + 24, 2), VDRV_QSIZE);
	desc = vd_read(f->vm, 0, d->common + 32, 8);
	vd_write(f->vm, 0, d->common + 32, 0x12340000, 4);
	assert_int_equal(vd_read(f->vm, 0, d->common + 32, 8), desc);
	assert_int_equal(vd_read(f->vm, 0, d->common + 28, 2), 1);
	/* A vector the device does not have reads back as NO_VECTOR. */
	vd_write(f->vm, 0, d->common + 16, 999, 2);
	assert_int_equal(vd_read(f->vm, 0, d->common + 16, 2), 0xffff);
	vd_write(f->vm, 0, d->common + 26, 1, 2);
	assert_int_equal(vd_read(f->vm, 0, d->common + 26, 2), 1);
	/* A queue that does not exist: size 0, NO_VECTOR, writes ignored. */
	vd_write(f->vm, 0, d->common + 22, 7, 2);
	assert_int_equal(vd_read(f->vm, 0, d->common + 24, 2), 0);
	assert_int_equal(vd_read(f->vm, 0, d->common + 26, 2), 0xffff);
	vd_write(f->vm, 0, d->common + 28, 1, 2);
	/* Features cannot change after FEATURES_OK. */
	vd_write(f->vm, 0, d->common + 8, 0, 4);
	vd_write(f->vm, 0, d->common + 12, 0, 4);
	assert_int_not_equal(vd_read(f->vm, 0, d->common + 12, 4), 0);
	/* Device config is read-only for virtio-blk; accesses past it read 0. */
	vd_write(f->vm, 0, d->devcfg, 0, 8);
	assert_int_equal(vdrv_cfg_read(d, 0, 8), DISK_SIZE / 512);
	assert_int_equal(vd_read(f->vm, 0, d->devcfg + 0x800, 4), 0);
	/* The ISR is read-to-clear. */
	assert_int_equal(request(f, 0, 0, 0, 512, false, NULL), 0);
	assert_int_equal(vd_read(f->vm, 0, d->isr, 1) & 1, 1);
	assert_int_equal(vd_read(f->vm, 0, d->isr, 1), 0);
	/* Writing 0 resets everything. */
	vdrv_set_status(d, 0);
	assert_int_equal(vdrv_status(d), 0);
	vd_write(f->vm, 0, d->common + 22, 0, 2);
	assert_int_equal(vd_read(f->vm, 0, d->common + 28, 2), 0);
	assert_int_equal(vd_read(f->vm, 0, d->common + 24, 2), 256);
	/* DRIVER_OK without FEATURES_OK does not stick. */
	vdrv_set_status(d, 1 | 2 | 4);
	assert_int_equal(vdrv_status(d) & 4, 0);
}

/* The PCI configuration access capability (virtio 4.1.4.9): BAR 0
 * through config space, as firmware reaches it. */
static void test_pci_cfg_window(void **state)
{
	struct fixture *f = *state;
	struct vdrv *d = &f->d;
	unsigned cap = vd_find_virtio_cap(f->vm, 0, 5);

	start(f, 1);
	assert_int_not_equal(cap, 0);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 2, 1), 20); /* cap_len */
	/* Read num_queues (2 bytes at common + 18) through the window. */
	vd_config_write(f->vm, 0, cap + 4, 0, 1);
	vd_config_write(f->vm, 0, cap + 8, (uint32_t)d->common + 18, 4);
	vd_config_write(f->vm, 0, cap + 12, 2, 4);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 16, 4) & 0xffff, 1);
	/* Write queue_select through it; the BAR sees the change. */
	vd_config_write(f->vm, 0, cap + 8, (uint32_t)d->common + 22, 4);
	vd_config_write(f->vm, 0, cap + 16, 5, 4);
	assert_int_equal(vd_read(f->vm, 0, d->common + 22, 2), 5);
	vd_write(f->vm, 0, d->common + 22, 0, 2);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 16, 2), 0);
	/* The capacity in device config, 4 bytes at a time. */
	vd_config_write(f->vm, 0, cap + 8, (uint32_t)d->devcfg, 4);
	vd_config_write(f->vm, 0, cap + 12, 4, 4);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 16, 4), DISK_SIZE / 512);
	/* Ignored (4.1.4.9.1): a length other than 1, 2 or 4, an offset not
	 * aligned to it, a BAR the device does not have, past the BAR. */
	vd_config_write(f->vm, 0, cap + 16, 0xdeadbeef, 4);
	vd_config_write(f->vm, 0, cap + 12, 3, 4);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 16, 4), 0xdeadbeef);
	vd_config_write(f->vm, 0, cap + 12, 4, 4);
	vd_config_write(f->vm, 0, cap + 8, (uint32_t)d->devcfg + 2, 4);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 16, 4), 0xdeadbeef);
	vd_config_write(f->vm, 0, cap + 8, 0xfffffffc, 4);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 16, 4), 0xdeadbeef);
	vd_config_write(f->vm, 0, cap + 8, (uint32_t)d->devcfg, 4);
	vd_config_write(f->vm, 0, cap + 4, 3, 1);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 16, 4), 0xdeadbeef);
	/* The rest of the capability is read-only. */
	vd_config_write(f->vm, 0, cap + 3, 0x77, 1);
	assert_int_equal(vd_config_read(f->vm, 0, cap + 3, 1), 5);
}

static void test_discard_and_wz_on_read_only(void **state)
{
	struct fixture *f = *state;
	struct { uint64_t sector; uint32_t num, flags; } range = { 0, 8, 0 };
	struct { uint32_t type, reserved; uint64_t sector; } hdr = { 13, 0, 0 };
	struct vdrv_seg segs[3] = { { HDR_GPA, 16, false }, { DATA_GPA, 16, false },
				    { STATUS_GPA, 1, true } };

	start(f, 1);
	memcpy(vdrv_ptr(&f->d, DATA_GPA), &range, sizeof(range));
	memcpy(vdrv_ptr(&f->d, HDR_GPA), &hdr, sizeof(hdr));
	vdrv_post(&f->d, 0, segs, 3, 0);
	vdrv_kick(&f->d, 0);
	assert_true(vdrv_wait_used(&f->d, 0, 5000, NULL, NULL));
	assert_int_equal(*(uint8_t *)vdrv_ptr(&f->d, STATUS_GPA), 1);
	assert_int_equal(request(f, 0, 4, 0, 0, false, NULL), 0); /* flush is fine */
}

/* Kicks through ioeventfds, which follow the BAR when the guest moves it. */
static void test_ioeventfd_follows_bar(void **state)
{
	struct vm *vm = vd_create(2);
	struct fixture f = { 0 };
	char spec[128], err[256];
	uint64_t one = 1, old_base, new_base = 0xd0000000ULL;
	struct pci_device *dev;
	int fd0, fd1;

	(void)state;
	assert_int_equal(make_file(&f), 0);
	f.vm = vm;
	vm->ioeventfd_ok = true;
	snprintf(spec, sizeof(spec), "path=%s", f.path);
	assert_int_equal(virtio_add_disk(vm, spec, err, sizeof(err)), 0);
	dev = vm->devs[0];
	old_base = dev->bars[0].addr;
	fd0 = vd_ioeventfd_at(vm, old_base + 0x3000);
	fd1 = vd_ioeventfd_at(vm, old_base + 0x3004);
	assert_true(fd0 >= 0 && fd1 >= 0 && fd0 != fd1);
	assert_int_equal(vm->nioeventfds, 2);

	/* The guest moves the BAR: the bindings move with it. */
	dev->bars[0].addr = new_base;
	dev->config_written(dev, 0x10, 4);
	assert_int_equal(vd_ioeventfd_at(vm, old_base + 0x3000), -1);
	assert_int_equal(vd_ioeventfd_at(vm, new_base + 0x3000), fd0);
	assert_int_equal(vd_ioeventfd_at(vm, new_base + 0x3004), fd1);
	/* Decoding off: nothing bound. */
	dev->bars[0].mapped = false;
	dev->config_written(dev, 0x04, 2);
	assert_int_equal(vm->nioeventfds, 0);
	dev->bars[0].mapped = true;
	dev->config_written(dev, 0x04, 2);
	assert_int_equal(vm->nioeventfds, 2);

	/* A kick is a write to the bound eventfd (what KVM does). */
	vdrv_attach(&f.d, vm, 0);
	start(&f, 2);
	{
		struct { uint32_t type, reserved; uint64_t sector; } hdr = { 0, 0, 2 };
		struct vdrv_seg segs[3] = { { HDR_GPA, 16, false }, { DATA_GPA, 512, true },
					    { STATUS_GPA, 1, true } };
		uint8_t file[512];

		memcpy(vdrv_ptr(&f.d, HDR_GPA), &hdr, sizeof(hdr));
		vdrv_post(&f.d, 1, segs, 3, 0);
		assert_int_equal(write(vd_ioeventfd_at(vm, new_base + 0x3004), &one, 8), 8);
		assert_true(vdrv_wait_used(&f.d, 1, 5000, NULL, NULL));
		assert_int_equal(pread(f.fd, file, 512, 1024), 512);
		assert_memory_equal(vdrv_ptr(&f.d, DATA_GPA), file, 512);
	}
	vd_stop_loop(vm);
	virtio_devices_destroy(vm);
	assert_int_equal(vm->nioeventfds, 0); /* unbound on destroy */
	vd_destroy(vm);
	close(f.fd);
	unlink(f.path);
}

/* The same requests through the disk library (a dynamic VHD). */
static void test_vhd_backend(void **state)
{
	struct disk_create_opts o = { .format = DISK_FORMAT_VHD, .type = DISK_TYPE_DYNAMIC,
				      .size = 8 << 20 };
	char path[] = "/tmp/test_virtio_vhd_XXXXXX.vhd", spec[128], err[256] = "";
	struct disk_error derr;
	struct fixture f = { 0 };
	struct disk *d;
	uint8_t buf[4096];
	int fd = mkstemps(path, 4);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	/* The disk library always has VHD: a create failure is a failure. */
	if (disk_create(path, &o, &derr))
		fail_msg("disk_create(%s, VHD dynamic 8 MiB): %s", path, derr.msg);
	f.vm = vd_create(1);
	snprintf(spec, sizeof(spec), "path=%s", path);
	assert_int_equal(virtio_add_disk(f.vm, spec, err, sizeof(err)), 0);
	vdrv_attach(&f.d, f.vm, 0);
	start(&f, 1);
	assert_int_equal(vdrv_cfg_read(&f.d, 0, 8), (8 << 20) / 512);
	memset(vdrv_ptr(&f.d, DATA_GPA), 0xab, 4096);
	assert_int_equal(request(&f, 0, 1, 4096, 4096, false, NULL), 0);
	memset(vdrv_ptr(&f.d, DATA_GPA), 0, 4096);
	assert_int_equal(request(&f, 0, 0, 4096, 4096, true, NULL), 0);
	assert_int_equal(((uint8_t *)vdrv_ptr(&f.d, DATA_GPA))[4095], 0xab);
	assert_int_equal(request(&f, 0, 4, 0, 0, false, NULL), 0);
	vd_stop_loop(f.vm);
	virtio_devices_destroy(f.vm);
	vd_destroy(f.vm);
	/* What the guest wrote is in the image, as the library reads it. */
	assert_int_equal(disk_open(path, DISK_OPEN_RDONLY, &d, &derr), 0);
	assert_int_equal(disk_pread(d, buf, 4096, 4096 * 512ULL), 0);
	for (unsigned i = 0; i < 4096; i++)
		assert_int_equal(buf[i], 0xab);
	disk_close(d);
	unlink(path);
}

static void test_bad_specs(void **state)
{
	char err[256];
	struct vm *vm = vd_create(1);

	(void)state;
	assert_int_equal(virtio_disk_spec_check("readonly", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "path="));
	assert_int_equal(virtio_disk_spec_check("path=/x,bogus", err, sizeof(err)), -EINVAL);
	assert_int_equal(virtio_disk_spec_check("path=/x,serial=123456789012345678901", err,
						sizeof(err)),
			 -EINVAL);
	assert_int_equal(virtio_disk_spec_check("path=/x,readonly,direct,serial=abc", err,
						sizeof(err)),
			 0);
	assert_true(virtio_add_disk(vm, "path=/nonexistent/disk.img", err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "/nonexistent/disk.img"));
	assert_true(virtio_add_disk(vm, "path=/dev/null", err, sizeof(err)) < 0);
	assert_int_equal(virtio_net_spec_check("tap=tap0,mac=02:00:00:00:00:01", err, sizeof(err)),
			 0);
	assert_int_equal(virtio_net_spec_check("fd=3", err, sizeof(err)), 0);
	assert_int_equal(virtio_net_spec_check("tap=a,fd=3", err, sizeof(err)), -EINVAL);
	assert_int_equal(virtio_net_spec_check("mac=02:00:00:00:00:01", err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(virtio_net_spec_check("tap=t,mac=01:00:00:00:00:01", err, sizeof(err)),
			 -EINVAL); /* multicast */
	assert_int_equal(virtio_net_spec_check("tap=t,mac=02:00:00:00:00", err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(virtio_net_spec_check("tap=averyveryverylongname", err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(virtio_net_spec_check("fd=x", err, sizeof(err)), -EINVAL);
	/* fd 0 is not a tap */
	assert_int_equal(virtio_add_net(vm, "fd=0", err, sizeof(err)), -ENOTTY);
	assert_non_null(strstr(err, "not a tap"));
	/* As the worker does after a failed add: the (empty) device list
	 * hanging off the VM goes too. */
	virtio_devices_destroy(vm);
	vd_destroy(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_negotiation_and_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_last_sector_and_out_of_range, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_get_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard_and_write_zeroes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_only, setup_ro, teardown),
		cmocka_unit_test_setup_teardown(test_discard_and_wz_on_read_only, setup_ro, teardown),
		cmocka_unit_test_setup_teardown(test_transport_registers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pci_cfg_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_multiqueue, setup_mq, teardown),
		cmocka_unit_test_setup_teardown(test_loop_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_outside_ram_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_status_byte_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_avail_index_needs_reset, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_queue_address_needs_reset, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
		cmocka_unit_test(test_ioeventfd_follows_bar),
		cmocka_unit_test(test_vhd_backend),
		cmocka_unit_test(test_bad_specs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
