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
 * resume and reset, and device-specific operations (frames from the
 * "tap", console clients, backend errors). Not linked into the worker. */
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
	/* Creates the device (reading set-up bytes from in). 0 or -errno. */
	int (*create)(struct vm *vm, struct fuzz_in *in, struct virtio_dev **out);
	/* A device-specific operation (opcode 10). */
	void (*op)(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in);
	/* After the device is destroyed: close what create opened. */
	void (*cleanup)(void);
};

/* Runs one input against a fresh device. */
int fuzz_virtio_run(const uint8_t *data, size_t size, const struct fuzz_virtio_target *t);

#endif
