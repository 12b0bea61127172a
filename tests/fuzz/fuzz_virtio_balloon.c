/* libFuzzer target for virtio-balloon (src/vmm/virtio/balloon.c): its
 * inflate, deflate, statistics and free page reporting queues built by the
 * fuzz input in a small guest RAM (fuzz_virtio.h): page numbers in and
 * out of RAM, reported ranges across region ends, statistics buffers of
 * any length, and the driver's writes to `actual`. Device operations
 * (opcode 10, then one byte):
 *   0  the control socket's "balloon" (info; hands the statistics back)
 *   1  a new target: 4 more bytes, the assigned bytes / 256 (the stand-in
 *      RAM is under the 1 MiB floor: these are refusals)
 *   2  save and restore the device's own record
 * Inflated pages cannot be punched here (the stand-in RAM is no memfd);
 * what is checked is that nothing the guest sends makes the device read
 * or return memory outside RAM, and that the counters stay in bounds.
 * Set-up byte bit 0: created with "on" or "assigned=" half of RAM. The
 * device is made anew for every input (its target and counters are its
 * own state, which a reset keeps). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_virtio.h"
#include "vmm/state/record.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/virtio.h"

static unsigned setup(struct fuzz_in *in)
{
	return fin_u8(in) & 1;
}

static int create(struct vm *vm, unsigned key, struct virtio_dev **out)
{
	struct balloon_spec s = { .assigned = key ? (vm->mem.total / 2) & ~4095ULL : 0 };
	char err[256];

	return virtio_balloon_create(vm, &s, out, err, sizeof(err));
}

static void check(const struct vm *vm, struct virtio_dev *vdev)
{
	struct balloon_info in;

	virtio_balloon_info(vdev, &in);
	if (in.memory != vm->mem.total || in.target > in.memory || in.assigned > in.memory ||
	    in.reported > in.discarded) {
		fprintf(stderr, "fuzz: balloon state out of bounds: memory %llu target %llu "
			"assigned %llu reported %llu discarded %llu\n",
			(unsigned long long)in.memory, (unsigned long long)in.target,
			(unsigned long long)in.assigned, (unsigned long long)in.reported,
			(unsigned long long)in.discarded);
		abort();
	}
}

static void save_restore(struct virtio_dev *vdev)
{
	char err[256] = "";

	if (fuzz_virtio_save_restore(vdev, virtio_balloon_save, virtio_balloon_restore, err,
				     sizeof(err)) < 0) {
		fprintf(stderr, "fuzz: the balloon refused its own record: %s\n", err);
		abort();
	}
}

static void op(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in)
{
	uint8_t what = fin_u8(in);

	switch (what % 3) {
	case 0:
		check(vm, vdev);
		break;
	case 1:
		virtio_balloon_set_target(vdev, fin_take(in, 4) << 8);
		break;
	default:
		save_restore(vdev);
		break;
	}
	fuzz_loop_run(vm->loop, 4);
	check(vm, vdev);
}

static bool end(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	check(vm, vdev);
	return false;
}

static const struct fuzz_virtio_target target = { .setup = setup, .create = create,
						   .op = op, .end = end };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_virtio_run(data, size, &target);
}
