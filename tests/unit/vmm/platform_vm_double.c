#include "platform_vm_double.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct vm *vmd_create(void)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	assert(vm);
	pthread_mutex_init(&vm->lock, NULL);
	assert(io_bus_create(&vm->pio, "pio") == 0);
	assert(io_bus_create(&vm->mmio, "mmio") == 0);
	vm->ncpus = 1;
	for (unsigned i = 0; i < VMD_MAX_ROUTES; i++)
		vm->routes[i].irqfd = -1;
	return vm;
}

void vmd_destroy(struct vm *vm)
{
	io_bus_destroy(vm->pio);
	io_bus_destroy(vm->mmio);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

struct guest_mem *vm_guest_mem(struct vm *vm)
{
	return NULL;
}

struct io_bus *vm_pio_bus(struct vm *vm)
{
	return vm->pio;
}

struct io_bus *vm_mmio_bus(struct vm *vm)
{
	return vm->mmio;
}

struct pci_bus *vm_pci_bus(struct vm *vm)
{
	return vm->pci;
}

struct evloop *vm_evloop(struct vm *vm)
{
	return vm->loop;
}

unsigned vm_vcpu_count(const struct vm *vm)
{
	return vm->ncpus;
}

int vm_set_irq_line(struct vm *vm, unsigned gsi, int level)
{
	if (gsi >= VMD_GSIS)
		return -EINVAL;
	pthread_mutex_lock(&vm->lock);
	if (level && !vm->irq_level[gsi])
		vm->irq_rises[gsi]++;
	vm->irq_level[gsi] = level ? 1 : 0;
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

int vm_signal_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->nmsi < VMD_MAX_MSI)
		vm->msi[vm->nmsi++] = (struct vmd_msi){ addr, data };
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

static int vm_msi_route_add_locked(struct vm *vm, uint64_t addr, uint32_t data, unsigned *gsi)
{
	if (vm->fail_routes)
		return vm->fail_routes;
	for (unsigned i = 0; i < VMD_MAX_ROUTES; i++) {
		if (!vm->routes[i].used) {
			vm->routes[i] = (struct vmd_route){ true, addr, data, -1 };
			*gsi = VMD_GSIS + i;
			return 0;
		}
	}
	return -ENOSPC;
}

static struct vmd_route *route_of(struct vm *vm, unsigned gsi)
{
	if (gsi < VMD_GSIS || gsi >= VMD_GSIS + VMD_MAX_ROUTES)
		return NULL;
	if (!vm->routes[gsi - VMD_GSIS].used)
		return NULL;
	return &vm->routes[gsi - VMD_GSIS];
}

static int vm_msi_route_update_locked(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data)
{
	struct vmd_route *r = route_of(vm, gsi);

	if (!r)
		return -ENOENT;
	r->addr = addr;
	r->data = data;
	return 0;
}

static void vm_msi_route_remove_locked(struct vm *vm, unsigned gsi)
{
	struct vmd_route *r = route_of(vm, gsi);

	assert(r);
	assert(r->irqfd < 0); /* KVM would keep a bound irqfd pointing nowhere */
	r->used = false;
}

static int vm_irqfd_locked(struct vm *vm, int eventfd, unsigned gsi, bool assign)
{
	struct vmd_route *r = route_of(vm, gsi);

	if (!r)
		return -EINVAL;
	if (assign) {
		if (r->irqfd >= 0)
			return -EBUSY;
		r->irqfd = eventfd;
	} else {
		if (r->irqfd != eventfd)
			return -ENOENT;
		r->irqfd = -1;
	}
	return 0;
}

int vm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, bool mmio, int eventfd, bool assign)
{
	return -ENOSYS;
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, const char *detail)
{
	pthread_mutex_lock(&vm->lock);
	vm->stop = reason;
	vm->nstops++;
	pthread_mutex_unlock(&vm->lock);
}

int vmd_route_of_irqfd(struct vm *vm, int fd)
{
	for (unsigned i = 0; i < VMD_MAX_ROUTES; i++)
		if (vm->routes[i].used && vm->routes[i].irqfd == fd)
			return (int)i;
	return -1;
}

static uint64_t pio_in(struct vm *vm, uint16_t port, unsigned len)
{
	uint64_t v = 0;

	io_bus_access(vm->pio, port, &v, len, false);
	return v;
}

static void pio_out(struct vm *vm, uint16_t port, uint64_t v, unsigned len)
{
	io_bus_access(vm->pio, port, &v, len, true);
}

uint32_t vmd_inb(struct vm *vm, uint16_t port)
{
	return (uint32_t)pio_in(vm, port, 1);
}

uint32_t vmd_inw(struct vm *vm, uint16_t port)
{
	return (uint32_t)pio_in(vm, port, 2);
}

uint32_t vmd_inl(struct vm *vm, uint16_t port)
{
	return (uint32_t)pio_in(vm, port, 4);
}

void vmd_outb(struct vm *vm, uint16_t port, uint8_t v)
{
	pio_out(vm, port, v, 1);
}

void vmd_outw(struct vm *vm, uint16_t port, uint16_t v)
{
	pio_out(vm, port, v, 2);
}

void vmd_outl(struct vm *vm, uint16_t port, uint32_t v)
{
	pio_out(vm, port, v, 4);
}

uint64_t vmd_mmio_read(struct vm *vm, uint64_t addr, unsigned len)
{
	uint64_t v = 0;

	io_bus_access(vm->mmio, addr, &v, len, false);
	return v;
}

void vmd_mmio_write(struct vm *vm, uint64_t addr, uint64_t v, unsigned len)
{
	io_bus_access(vm->mmio, addr, &v, len, true);
}

/* The exported versions serialize on the double's lock. */
int vm_msi_route_add(struct vm *vm, uint64_t addr, uint32_t data, unsigned *gsi)
{
	int ret;

	pthread_mutex_lock(&vm->lock);
	ret = vm_msi_route_add_locked(vm, addr, data, gsi);
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

int vm_msi_route_update(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data)
{
	int ret;

	pthread_mutex_lock(&vm->lock);
	ret = vm_msi_route_update_locked(vm, gsi, addr, data);
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

void vm_msi_route_remove(struct vm *vm, unsigned gsi)
{
	pthread_mutex_lock(&vm->lock);
	vm_msi_route_remove_locked(vm, gsi);
	pthread_mutex_unlock(&vm->lock);
}

int vm_irqfd(struct vm *vm, int eventfd, unsigned gsi, bool assign)
{
	int ret;

	pthread_mutex_lock(&vm->lock);
	ret = vm_irqfd_locked(vm, eventfd, gsi, assign);
	pthread_mutex_unlock(&vm->lock);
	return ret;
}
