/* The services a VM gives its devices. struct vm itself is private to
 * vm.c/vcpu.c; devices see only these calls. */
#ifndef CLOISON_VMM_VM_H
#define CLOISON_VMM_VM_H

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct guest_mem;
struct io_bus;
struct pci_bus;
struct evloop;
struct virtio_devices;

enum vm_stop_reason {
	VM_STOP_NONE = 0,
	VM_STOP_POWEROFF,   /* guest S5 or control "poweroff": exit 0 */
	VM_STOP_RESET,	    /* guest asked for a reset (i8042, ACPI reset, control "reset") */
	VM_STOP_CRASH,	    /* triple fault, emulation failure, internal error */
	VM_STOP_VMM_ERROR,  /* a host-side failure */
	VM_STOP_SAVED,	    /* control "save" wrote the VM's state: exit 5 */
};

struct guest_mem *vm_guest_mem(struct vm *vm);
struct io_bus *vm_pio_bus(struct vm *vm);
struct io_bus *vm_mmio_bus(struct vm *vm);
struct pci_bus *vm_pci_bus(struct vm *vm);
/* Where the virtio part keeps this VM's device list (virtio/devices.c):
 * NULL until it stores something; the VM never looks inside and frees
 * nothing there (virtio_devices_destroy does). */
struct virtio_devices **vm_virtio_slot(struct vm *vm);
/* The device event loop (one thread); device fds are watched here. */
struct evloop *vm_evloop(struct vm *vm);
unsigned vm_vcpu_count(const struct vm *vm);

/* Drives a legacy interrupt line (IOAPIC pin / PIC line, 0..23) to level.
 * Edge-triggered ISA devices pulse it: 1 then 0. 0 or -errno. */
int vm_set_irq_line(struct vm *vm, unsigned gsi, int level);

/* Injects one MSI now (KVM_SIGNAL_MSI). 0 or -errno. */
int vm_signal_msi(struct vm *vm, uint64_t addr, uint32_t data);

/* MSI routes for irqfds. add allocates a GSI routed to (addr, data);
 * update re-points it; remove frees it. 0 or -errno. */
int vm_msi_route_add(struct vm *vm, uint64_t addr, uint32_t data, unsigned *gsi);
int vm_msi_route_update(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data);
void vm_msi_route_remove(struct vm *vm, unsigned gsi);

/* Binds (assign=true) or unbinds an eventfd to a GSI: writing the eventfd
 * raises the interrupt without a trip through user space. */
int vm_irqfd(struct vm *vm, int eventfd, unsigned gsi, bool assign);

/* Binds an eventfd to guest writes of addr (len bytes; mmio or port); the
 * vCPU does not exit to user space for them. 0 or -errno. */
int vm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, bool mmio, int eventfd, bool assign);

/* Asks the VM to stop all vCPUs for reason; returns at once, thread-safe.
 * The worker then powers off, resets or reports the crash. */
void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, const char *detail);

#endif
