/* The worker's entry points for virtio devices (devices.h): option specs
 * to devices on the VM's PCI bus, and VM-wide pause/resume/reset/destroy.
 *
 * devices.h hands us only a struct vm, whose insides are private to
 * vm.c, so the devices of each VM are kept here in a small table keyed by
 * the vm pointer (the one piece of state not hanging off struct vm; a
 * worker runs one VM, so the table has one entry in practice). */
#include "vmm/virtio/devices.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/blk.h"
#include "vmm/virtio/console.h"
#include "vmm/virtio/net.h"
#include "vmm/virtio/rng.h"
#include "vmm/virtio/virtio.h"

#define MAX_VMS 8
#define MAX_DEVICES 64

struct vm_devices {
	struct vm *vm;
	unsigned ndevs, ndisks, nnics, nconsoles;
	struct virtio_dev *devs[MAX_DEVICES];
};

static struct {
	pthread_mutex_t lock;
	struct vm_devices vms[MAX_VMS];
} registry = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* The entry for vm; created when create is set. Registry lock held. */
static struct vm_devices *lookup(struct vm *vm, bool create)
{
	struct vm_devices *free_slot = NULL;

	for (unsigned i = 0; i < MAX_VMS; i++) {
		if (registry.vms[i].vm == vm)
			return &registry.vms[i];
		if (!registry.vms[i].vm && !free_slot)
			free_slot = &registry.vms[i];
	}
	if (create && free_slot) {
		memset(free_slot, 0, sizeof(*free_slot));
		free_slot->vm = vm;
		return free_slot;
	}
	return NULL;
}

/* Reserves a place for one more device; NULL if full (err filled). */
static struct vm_devices *reserve(struct vm *vm, char *err, size_t errlen)
{
	struct vm_devices *d = lookup(vm, true);

	if (!d || d->ndevs == MAX_DEVICES) {
		snprintf(err, errlen, "too many virtio devices (at most %d)", MAX_DEVICES);
		return NULL;
	}
	return d;
}

int virtio_add_disk(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	struct vm_devices *d;
	struct virtio_dev *dev;
	struct blk_spec *s;
	int ret;

	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	ret = blk_spec_parse(spec, s, err, errlen);
	if (ret)
		goto out;
	pthread_mutex_lock(&registry.lock);
	d = reserve(vm, err, errlen);
	ret = d ? virtio_blk_create(vm, s, d->ndisks, &dev, err, errlen) : -ENOSPC;
	if (!ret) {
		d->devs[d->ndevs++] = dev;
		d->ndisks++;
	}
	pthread_mutex_unlock(&registry.lock);
out:
	free(s);
	return ret;
}

int virtio_add_net(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	struct vm_devices *d;
	struct virtio_dev *dev;
	struct net_spec s;
	int ret;

	ret = net_spec_parse(spec, &s, err, errlen);
	if (ret)
		return ret;
	pthread_mutex_lock(&registry.lock);
	d = reserve(vm, err, errlen);
	ret = d ? virtio_net_create(vm, &s, d->nnics, &dev, err, errlen) : -ENOSPC;
	if (!ret) {
		d->devs[d->ndevs++] = dev;
		d->nnics++;
	}
	pthread_mutex_unlock(&registry.lock);
	return ret;
}

int virtio_add_rng(struct vm *vm, char *err, size_t errlen)
{
	struct vm_devices *d;
	struct virtio_dev *dev;
	int ret;

	pthread_mutex_lock(&registry.lock);
	d = reserve(vm, err, errlen);
	ret = d ? virtio_rng_create(vm, &dev, err, errlen) : -ENOSPC;
	if (!ret)
		d->devs[d->ndevs++] = dev;
	pthread_mutex_unlock(&registry.lock);
	return ret;
}

int virtio_add_console(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	struct console_spec s;
	struct vm_devices *d;
	struct virtio_dev *dev;
	int ret;

	ret = console_spec_parse(spec, &s, err, errlen);
	if (ret)
		return ret;
	pthread_mutex_lock(&registry.lock);
	d = reserve(vm, err, errlen);
	ret = d ? virtio_console_create(vm, &s, d->nconsoles, &dev, err, errlen) : -ENOSPC;
	if (!ret) {
		d->devs[d->ndevs++] = dev;
		d->nconsoles++;
	}
	pthread_mutex_unlock(&registry.lock);
	return ret;
}

/* Runs fn on every device of vm, in creation order or in reverse. */
static void for_each(struct vm *vm, bool reverse, void (*fn)(struct virtio_dev *))
{
	struct vm_devices *d;

	pthread_mutex_lock(&registry.lock);
	d = lookup(vm, false);
	for (unsigned i = 0; d && i < d->ndevs; i++)
		fn(d->devs[reverse ? d->ndevs - 1 - i : i]);
	pthread_mutex_unlock(&registry.lock);
}

void virtio_devices_pause(struct vm *vm)
{
	for_each(vm, false, virtio_dev_pause);
}

void virtio_devices_resume(struct vm *vm)
{
	for_each(vm, false, virtio_dev_resume);
}

void virtio_devices_reset(struct vm *vm)
{
	for_each(vm, false, virtio_dev_reset);
}

void virtio_devices_destroy(struct vm *vm)
{
	struct vm_devices *d;

	for_each(vm, true, virtio_dev_destroy);
	pthread_mutex_lock(&registry.lock);
	d = lookup(vm, false);
	if (d)
		memset(d, 0, sizeof(*d));
	pthread_mutex_unlock(&registry.lock);
}
