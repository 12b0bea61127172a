/* A test double of the services virtio devices use from vm.h and
 * bus/pci.h: guest RAM from a buffer, a real event loop on its own thread,
 * a PCI "bus" that records the functions added, and MSI-X that counts the
 * vectors delivered. ioeventfds are refused, so kicks take the path
 * through the notify area that a worker without them would take.
 * Not linked into the worker. */
#ifndef CLOISON_TESTS_VIRTIO_DOUBLE_H
#define CLOISON_TESTS_VIRTIO_DOUBLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/bus/pci.h"
#include "vmm/guest_mem.h"
#include "vmm/vm.h"

#define VD_RAM_SIZE (8u << 20)
#define VD_MAX_DEVS 8
#define VD_MAX_VEC 70

struct pci_msix {
	unsigned nvec;
	unsigned delivered[VD_MAX_VEC];
};

struct vm {
	struct guest_mem mem;
	uint8_t *ram;
	struct evloop *loop;
	pthread_t loop_thread;
	bool loop_running;
	unsigned ncpus;
	struct pci_device *devs[VD_MAX_DEVS];
	struct pci_msix *msix[VD_MAX_DEVS]; /* owned here, like a bus would */
	/* ioeventfds: refused unless ioeventfd_ok; else recorded here. */
	bool ioeventfd_ok;
	struct { uint64_t addr; int fd; } ioeventfds[64];
	unsigned nioeventfds;
	unsigned ndevs;
	struct virtio_devices *virtio; /* vm_virtio_slot */
	unsigned msi_count; /* vm_count_msi */
};

struct vm *vd_create(unsigned ncpus);
/* Stops and joins the event loop thread (as the worker does before it
 * destroys devices). vd_destroy does it too if not done yet. */
void vd_stop_loop(struct vm *vm);
void vd_destroy(struct vm *vm);

/* BAR 0 accesses of device i, as a vCPU would make them. */
uint64_t vd_read(struct vm *vm, unsigned dev, uint64_t off, unsigned len);
void vd_write(struct vm *vm, unsigned dev, uint64_t off, uint64_t v, unsigned len);
/* Times vector vec of device dev was delivered. */
unsigned vd_vector_count(struct vm *vm, unsigned dev, unsigned vec);
/* The eventfd bound at addr, or -1. */
int vd_ioeventfd_at(struct vm *vm, uint64_t addr);
/* Finds a virtio vendor capability of cfg_type; its offset or 0. */
unsigned vd_find_virtio_cap(struct vm *vm, unsigned dev, uint8_t cfg_type);
/* Config space cycles with the semantics of the real bus. */
uint32_t vd_config_read(struct vm *vm, unsigned dev, unsigned off, unsigned len);
void vd_config_write(struct vm *vm, unsigned dev, unsigned off, uint32_t v, unsigned len);

#endif
