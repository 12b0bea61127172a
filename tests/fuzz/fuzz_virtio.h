/* The shared part of the virtio device fuzz targets (fuzz_virtio_*.c): a
 * deterministic, single-threaded stand-in for the worker around one device
 * model, and a small "driver" that turns fuzz input into what a hostile
 * guest can do.
 *
 * - vm.h / bus/pci.h: guest RAM is a 64 KiB region at 0 and a 4 KiB region
 *   at 4 GiB; the PCI bus records the one function; MSI-X counts vectors;
 *   ioeventfds are refused (every kick comes through the notify area).
 * - common/evloop.h: a poll(2)-based loop run only when the input says so
 *   (fuzz_loop_run), so no thread races the input.
 * - common/log.h: messages are formatted and dropped (FUZZ_VERBOSE=1 in
 *   the environment prints them).
 *
 * The input is a stream of operations (fuzz_virtio.c says which): raw BAR
 * and config-space reads and writes, guest RAM writes, descriptor and
 * avail-ring writes, kicks, a full driver initialisation, VMM pause,
 * resume, reset and unplug, and device-specific operations (frames from
 * the "tap", console clients, backend errors). Not linked into the worker.
 *
 * A device is made once per set-up key (each key has its own stand-in VM,
 * RAM and loop) and kept between inputs: after an input it goes through
 * the device's own reset path (what a driver's status write of 0 does),
 * and then must equal what it was just after it was made (transport
 * state, queues, watched fds), so an input sees the same device whether
 * it runs alone or after thousands of others. A device whose state a
 * reset does not cover (a tap closed, console clients) is destroyed as
 * the worker does it, and made again for the next input. */
#ifndef CLOISON_TESTS_FUZZ_VIRTIO_H
#define CLOISON_TESTS_FUZZ_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz_loop.h"
#include "vmm/bus/pci.h"
#include "vmm/guest_mem.h"
#include "vmm/vm.h"

#define FV_LOW_SIZE 0x10000u
#define FV_HIGH_GPA 0x100000000ULL
#define FV_HIGH_SIZE 0x1000u
#define FV_QSIZE 16 /* the queue size the driver picks */
#define FV_MAX_KEYS 8

struct virtio_dev;

struct vm {
	struct guest_mem mem;
	uint8_t *low, *high;
	struct evloop *loop;
	unsigned ncpus;
	struct pci_device *dev; /* the one function on the bus */
};

/* One target: how it makes its device, and its own operations. */
struct fuzz_virtio_target {
	/* Reads the set-up bytes from in and returns the key (< FV_MAX_KEYS)
	 * of the device they ask for; what they say about this input only
	 * (failure modes) the target keeps for begin. */
	unsigned (*setup)(struct fuzz_in *in);
	/* Creates the device for key on vm. 0 or -errno. */
	int (*create)(struct vm *vm, unsigned key, struct virtio_dev **out);
	/* Optional: before the input's operations, on the (new or kept)
	 * device for key. */
	void (*begin)(struct vm *vm, struct virtio_dev *vdev, unsigned key);
	/* A device-specific operation (opcode 10). */
	void (*op)(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in);
	/* Optional: after the input, before the device's reset: undo what
	 * the target's operations did outside the device. false: the device
	 * cannot be kept (it is destroyed). */
	bool (*end)(struct vm *vm, struct virtio_dev *vdev, unsigned key);
	/* Optional: checks after the device's reset (what it must have let
	 * go of). */
	void (*after_reset)(struct vm *vm, struct virtio_dev *vdev, unsigned key);
	/* Optional: after the device for key is destroyed: close what create
	 * opened. */
	void (*cleanup)(unsigned key);
};

/* A device record's round trip: save writes it, restore reads it back from
 * the parsed file. Returns restore's result (0 when it took the record),
 * or 1 when the writer or the parser failed; err says why. */
struct state_writer;
struct state_file;
int fuzz_virtio_save_restore(struct virtio_dev *vdev,
			     void (*save)(struct virtio_dev *, struct state_writer *),
			     int (*restore)(struct virtio_dev *, const struct state_file *, char *,
					    size_t),
			     char *err, size_t errlen);

/* Runs one input against the device for its key (made on first use). */
int fuzz_virtio_run(const uint8_t *data, size_t size, const struct fuzz_virtio_target *t);

#endif
