/* The vm.h / pci.h test double for the virtio unit tests (virtio_double.h). */
#include "virtio_double.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/evloop.h"
#include "vmm/irq_stats.h"

static void *loop_main(void *opaque)
{
	evloop_run(opaque);
	return NULL;
}

struct vm *vd_create(unsigned ncpus)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->ram = aligned_alloc(4096, VD_RAM_SIZE);
	if (!vm->ram)
		goto err;
	memset(vm->ram, 0, VD_RAM_SIZE);
	vm->mem.nregions = 1;
	vm->mem.total = VD_RAM_SIZE;
	vm->mem.memfd = -1;
	vm->mem.regions[0] =
		(struct guest_mem_region){ .gpa = 0, .size = VD_RAM_SIZE, .hva = vm->ram };
	vm->ncpus = ncpus;
	if (evloop_create(&vm->loop))
		goto err;
	if (pthread_create(&vm->loop_thread, NULL, loop_main, vm->loop)) {
		evloop_destroy(vm->loop);
		goto err;
	}
	vm->loop_running = true;
	return vm;
err:
	free(vm->ram);
	free(vm);
	return NULL;
}

void vd_stop_loop(struct vm *vm)
{
	if (!vm->loop_running)
		return;
	evloop_stop(vm->loop);
	pthread_join(vm->loop_thread, NULL);
	vm->loop_running = false;
}

void vd_destroy(struct vm *vm)
{
	vd_stop_loop(vm);
	evloop_destroy(vm->loop);
	for (unsigned i = 0; i < vm->ndevs; i++)
		free(vm->msix[i]); /* devices that failed before removal */
	free(vm->ram);
	free(vm);
}

uint64_t vd_read(struct vm *vm, unsigned dev, uint64_t off, unsigned len)
{
	struct pci_bar *bar = &vm->devs[dev]->bars[0];
	uint64_t v = 0;

	bar->ops->read(bar->opaque, off, &v, len);
	return v;
}

void vd_write(struct vm *vm, unsigned dev, uint64_t off, uint64_t v, unsigned len)
{
	struct pci_bar *bar = &vm->devs[dev]->bars[0];

	bar->ops->write(bar->opaque, off, &v, len);
}

/* Config cycles as the real bus does them (bus/pci.c): the device's
 * read hook first; writes through wmask, then config_written. */
uint32_t vd_config_read(struct vm *vm, unsigned dev, unsigned off, unsigned len)
{
	struct pci_device *d = vm->devs[dev];
	uint32_t v = 0;

	if (d->config_before_read)
		d->config_before_read(d, off, len);
	pthread_mutex_lock(&d->lock);
	memcpy(&v, d->config + off, len);
	pthread_mutex_unlock(&d->lock);
	return v;
}

void vd_config_write(struct vm *vm, unsigned dev, unsigned off, uint32_t v, unsigned len)
{
	struct pci_device *d = vm->devs[dev];

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < len; i++) {
		uint8_t m = d->wmask[off + i], b = (uint8_t)(v >> (8 * i));

		d->config[off + i] = (uint8_t)((d->config[off + i] & ~m) | (b & m));
	}
	pthread_mutex_unlock(&d->lock);
	if (d->config_written)
		d->config_written(d, off, len);
}

unsigned vd_vector_count(struct vm *vm, unsigned dev, unsigned vec)
{
	return __atomic_load_n(&vm->devs[dev]->msix->delivered[vec], __ATOMIC_SEQ_CST);
}

unsigned vd_find_virtio_cap(struct vm *vm, unsigned dev, uint8_t cfg_type)
{
	const uint8_t *c = vm->devs[dev]->config;

	for (unsigned off = c[0x34]; off; off = c[off + 1]) {
		if (c[off] == 0x09 && c[off + 3] == cfg_type)
			return off;
	}
	return 0;
}

/* vm.h */
struct guest_mem *vm_guest_mem(struct vm *vm)
{
	return &vm->mem;
}

struct evloop *vm_evloop(struct vm *vm)
{
	return vm->loop;
}

struct pci_bus *vm_pci_bus(struct vm *vm)
{
	return (struct pci_bus *)vm;
}

struct virtio_devices **vm_virtio_slot(struct vm *vm)
{
	return &vm->virtio;
}

unsigned vm_vcpu_count(const struct vm *vm)
{
	return vm->ncpus;
}

void vm_count_msi(struct vm *vm)
{
	__atomic_add_fetch(&vm->msi_count, 1, __ATOMIC_RELAXED);
}

int vm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, bool mmio, int eventfd, bool assign)
{
	if (!vm->ioeventfd_ok)
		return -ENOSYS;
	if (assign) {
		if (vd_ioeventfd_at(vm, addr) >= 0 || vm->nioeventfds == 64)
			return -EEXIST;
		vm->ioeventfds[vm->nioeventfds].addr = addr;
		vm->ioeventfds[vm->nioeventfds++].fd = eventfd;
		return 0;
	}
	for (unsigned i = 0; i < vm->nioeventfds; i++) {
		if (vm->ioeventfds[i].addr == addr && vm->ioeventfds[i].fd == eventfd) {
			vm->ioeventfds[i] = vm->ioeventfds[--vm->nioeventfds];
			return 0;
		}
	}
	return -ENOENT;
}

int vd_ioeventfd_at(struct vm *vm, uint64_t addr)
{
	for (unsigned i = 0; i < vm->nioeventfds; i++) {
		if (vm->ioeventfds[i].addr == addr)
			return vm->ioeventfds[i].fd;
	}
	return -1;
}

/* pci.h */
void pci_device_init(struct pci_device *dev, const char *name, uint16_t vendor,
		     uint16_t device, uint32_t class_code, uint16_t subsys_vendor,
		     uint16_t subsys_id)
{
	void *opaque = dev->opaque;

	memset(dev->config, 0, sizeof(dev->config));
	dev->name = name;
	memcpy(dev->config, &vendor, 2);
	memcpy(dev->config + 2, &device, 2);
	dev->config[9] = (uint8_t)class_code;
	dev->config[10] = (uint8_t)(class_code >> 8);
	dev->config[11] = (uint8_t)(class_code >> 16);
	memcpy(dev->config + 0x2c, &subsys_vendor, 2);
	memcpy(dev->config + 0x2e, &subsys_id, 2);
	dev->config[6] = 0x10; /* capability list */
	dev->last_cap = 0;
	dev->opaque = opaque;
}

int pci_device_set_bar(struct pci_device *dev, unsigned n, enum pci_bar_kind kind,
		       uint64_t size, const struct io_ops *ops, void *opaque)
{
	if (n >= PCI_NUM_BARS)
		return -EINVAL;
	dev->bars[n] = (struct pci_bar){ .kind = kind, .size = size, .ops = ops, .opaque = opaque };
	return 0;
}

int pci_device_add_cap(struct pci_device *dev, const void *cap, unsigned len)
{
	unsigned off = dev->last_cap ? ((dev->last_cap + dev->config[dev->last_cap + 2] + 3) & ~3u)
				     : 0x40;

	if (off + len > 256)
		return -ENOSPC;
	memcpy(dev->config + off, cap, len);
	dev->config[off + 1] = 0;
	if (dev->last_cap)
		dev->config[dev->last_cap + 1] = (uint8_t)off;
	else
		dev->config[0x34] = (uint8_t)off;
	/* cap_len is byte 2 for vendor caps; give MSI-X its 12 bytes. */
	if (dev->config[off] == 0x11)
		dev->config[off + 2] = 12;
	dev->last_cap = (uint8_t)off;
	return (int)off;
}

int pci_bus_add_device(struct pci_bus *bus, struct pci_device *dev)
{
	struct vm *vm = (struct vm *)bus;

	if (vm->ndevs == VD_MAX_DEVS)
		return -ENOSPC;
	dev->slot = (uint8_t)(vm->ndevs + 1);
	dev->bars[0].addr = 0xc0000000ULL + 0x10000ULL * vm->ndevs;
	dev->bars[0].mapped = true;
	vm->msix[vm->ndevs] = dev->msix;
	vm->devs[vm->ndevs++] = dev;
	return 0;
}

void pci_bus_remove_device(struct pci_bus *bus, struct pci_device *dev)
{
	struct vm *vm = (struct vm *)bus;

	for (unsigned i = 0; i < vm->ndevs; i++) {
		if (vm->devs[i] == dev) {
			free(vm->msix[i]);
			vm->msix[i] = NULL;
			vm->devs[i] = NULL;
		}
	}
}

int pci_msix_init(struct pci_device *dev, struct vm *vm, unsigned bar, unsigned nvec,
		  uint32_t table_off, uint32_t pba_off)
{
	uint8_t cap[12] = { 0x11 };

	if (nvec > VD_MAX_VEC)
		return -EINVAL;
	dev->msix = calloc(1, sizeof(*dev->msix));
	if (!dev->msix)
		return -ENOMEM;
	dev->msix->nvec = nvec;
	return pci_device_add_cap(dev, cap, sizeof(cap)) < 0 ? -ENOSPC : 0;
}

bool pci_msix_access(struct pci_device *dev, uint64_t bar_off, void *data, unsigned len,
		     bool is_write)
{
	return false;
}

int pci_msix_notify(struct pci_device *dev, unsigned vec)
{
	if (!dev->msix || vec >= dev->msix->nvec)
		return -EINVAL;
	__atomic_fetch_add(&dev->msix->delivered[vec], 1, __ATOMIC_SEQ_CST);
	return 0;
}

int pci_msix_vector_eventfd(struct pci_device *dev, unsigned vec)
{
	return -1;
}

bool pci_msix_enabled(const struct pci_device *dev)
{
	return dev->msix != NULL;
}
