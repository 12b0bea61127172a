/* A test double of the VM services in src/vmm/vm.h for the platform-device
 * unit tests: real port and MMIO buses, and a record of what the devices
 * asked the VM to do (IRQ line levels, stop requests, MSIs, MSI routes and
 * irqfd bindings). Not linked into the worker. */
#ifndef CLOISON_TESTS_PLATFORM_VM_DOUBLE_H
#define CLOISON_TESTS_PLATFORM_VM_DOUBLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/bus/bus.h"
#include "vmm/vm.h"

#define VMD_GSIS 24
#define VMD_MAX_MSI 256
#define VMD_MAX_ROUTES 64

struct vmd_msi {
	uint64_t addr;
	uint32_t data;
};

struct vmd_route {
	bool used;
	uint64_t addr;
	uint32_t data;
	int irqfd; /* eventfd bound to this GSI, -1 if none */
};

struct vm {
	pthread_mutex_t lock; /* the recording functions may race (random test) */
	struct io_bus *pio;
	struct io_bus *mmio;
	struct pci_bus *pci;
	struct evloop *loop; /* NULL unless a test runs one */
	unsigned ncpus;
	int irq_level[VMD_GSIS];
	unsigned irq_rises[VMD_GSIS]; /* 0 -> 1 transitions */
	enum vm_stop_reason stop;
	unsigned nstops;
	struct vmd_msi msi[VMD_MAX_MSI];
	unsigned nmsi;
	struct vmd_route routes[VMD_MAX_ROUTES]; /* GSI = 24 + index */
	int fail_routes; /* vm_msi_route_add fails with this when nonzero */
};

struct vm *vmd_create(void);
void vmd_destroy(struct vm *vm);
/* The MSI route index bound to eventfd fd, or -1. */
int vmd_route_of_irqfd(struct vm *vm, int fd);
/* Port and MMIO accesses as a vCPU would make them. */
uint32_t vmd_inb(struct vm *vm, uint16_t port);
uint32_t vmd_inw(struct vm *vm, uint16_t port);
uint32_t vmd_inl(struct vm *vm, uint16_t port);
void vmd_outb(struct vm *vm, uint16_t port, uint8_t v);
void vmd_outw(struct vm *vm, uint16_t port, uint16_t v);
void vmd_outl(struct vm *vm, uint16_t port, uint32_t v);
uint64_t vmd_mmio_read(struct vm *vm, uint64_t addr, unsigned len);
void vmd_mmio_write(struct vm *vm, uint64_t addr, uint64_t v, unsigned len);

#endif
