/* The worker's entry points for virtio devices (devices.h): option specs
 * to devices on the VM's PCI bus, and VM-wide pause/resume/reset/destroy.
 * The list of a VM's devices hangs off the VM (vm_virtio_slot), created
 * with the first device and freed by virtio_devices_destroy. */
#include "vmm/virtio/devices.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/virtio/balloon.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/console.h"
#include "vmm/virtio/net.h"
#include "vmm/virtio/rng.h"
#include "vmm/virtio/virtio.h"
#include "vmm/virtio/vsock.h"
#include "vmm/vm.h"

#define MAX_DEVICES 64

struct virtio_devices {
	pthread_mutex_t lock; /* the list; adds vs. pause/resume/reset */
	unsigned ndevs, ndisks, nnics, nconsoles;
	struct virtio_dev *devs[MAX_DEVICES];
	struct virtio_dev *vsock; /* the one virtio-vsock, or NULL */
	struct virtio_dev *balloon; /* the one virtio-balloon, or NULL */
};

/* The VM's list, created when create is set (adds run on the thread
 * that builds the VM, before any vCPU or control thread exists). */
static struct virtio_devices *devices_of(struct vm *vm, bool create)
{
	struct virtio_devices **slot = vm_virtio_slot(vm);

	if (!*slot && create) {
		struct virtio_devices *d = calloc(1, sizeof(*d));

		if (!d)
			return NULL;
		pthread_mutex_init(&d->lock, NULL);
		*slot = d;
	}
	return *slot;
}

/* The VM's list with its lock held and room for one more device; NULL
 * (err filled, ret set) otherwise. */
static struct virtio_devices *reserve(struct vm *vm, int *ret, char *err, size_t errlen)
{
	struct virtio_devices *d = devices_of(vm, true);

	if (!d) {
		snprintf(err, errlen, "out of memory for the virtio device list");
		*ret = -ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&d->lock);
	if (d->ndevs == MAX_DEVICES) {
		pthread_mutex_unlock(&d->lock);
		snprintf(err, errlen, "too many virtio devices (at most %d)", MAX_DEVICES);
		*ret = -ENOSPC;
		return NULL;
	}
	return d;
}

int virtio_add_disk(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	struct virtio_devices *d;
	struct virtio_dev *dev;
	struct blk_spec *s;
	int ret;

	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	ret = blk_spec_parse(spec, s, err, errlen);
	if (ret)
		goto out;
	d = reserve(vm, &ret, err, errlen);
	if (!d)
		goto out;
	ret = virtio_blk_create(vm, s, d->ndisks, &dev, err, errlen);
	if (!ret) {
		d->devs[d->ndevs++] = dev;
		d->ndisks++;
	}
	pthread_mutex_unlock(&d->lock);
out:
	free(s);
	return ret;
}

int virtio_disk_chain(struct vm *vm, unsigned index, enum blk_chain_op op,
		      const char *const *paths, const int *fds, unsigned n, char *err, size_t errlen)
{
	struct virtio_devices *d = devices_of(vm, false);
	struct virtio_dev *dev = NULL;
	char name[32];
	int ret;

	snprintf(name, sizeof(name), "virtio-blk%u", index);

	if (!d) {
		snprintf(err, errlen, "the VM has no disks");
		return -ENODEV;
	}
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < d->ndevs && !dev; i++)
		if (!strcmp(d->devs[i]->name, name))
			dev = d->devs[i];
	if (!dev) {
		pthread_mutex_unlock(&d->lock);
		snprintf(err, errlen, "the VM has no disk %u (it has %u)", index, d->ndisks);
		return -ENODEV;
	}
	ret = virtio_blk_chain(dev, op, paths, fds, n, err, errlen);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int virtio_add_net(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	struct virtio_devices *d;
	struct virtio_dev *dev;
	struct net_spec s;
	int ret;

	ret = net_spec_parse(spec, &s, err, errlen);
	if (ret)
		return ret;
	d = reserve(vm, &ret, err, errlen);
	if (!d)
		return ret;
	ret = virtio_net_create(vm, &s, d->nnics, &dev, err, errlen);
	if (!ret) {
		d->devs[d->ndevs++] = dev;
		d->nnics++;
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int virtio_devices_set_link(struct vm *vm, const char *tap, bool up)
{
	struct virtio_devices *d = devices_of(vm, false);
	int ret = -ENODEV;

	if (!d)
		return ret;
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < d->ndevs && ret == -ENODEV; i++)
		ret = virtio_net_set_link(d->devs[i], tap, up);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int virtio_add_rng(struct vm *vm, char *err, size_t errlen)
{
	struct virtio_devices *d;
	struct virtio_dev *dev;
	int ret;

	d = reserve(vm, &ret, err, errlen);
	if (!d)
		return ret;
	ret = virtio_rng_create(vm, &dev, err, errlen);
	if (!ret)
		d->devs[d->ndevs++] = dev;
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int virtio_add_console(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	struct console_spec s;
	struct virtio_devices *d;
	struct virtio_dev *dev;
	int ret;

	ret = console_spec_parse(spec, &s, err, errlen);
	if (ret)
		return ret;
	d = reserve(vm, &ret, err, errlen);
	if (!d)
		return ret;
	ret = virtio_console_create(vm, &s, d->nconsoles, &dev, err, errlen);
	if (!ret) {
		d->devs[d->ndevs++] = dev;
		d->nconsoles++;
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int virtio_vsock_spec_check(const char *spec, char *err, size_t errlen)
{
	struct vsock_spec s;

	return vsock_spec_parse(spec, &s, err, errlen);
}

int virtio_add_vsock(struct vm *vm, const char *spec, char *err, size_t errlen)
{
	struct virtio_devices *d;
	struct virtio_dev *dev;
	struct vsock_spec s;
	int ret;

	ret = vsock_spec_parse(spec, &s, err, errlen);
	if (ret)
		return ret;
	d = reserve(vm, &ret, err, errlen);
	if (!d)
		return ret;
	if (d->vsock) {
		snprintf(err, errlen, "--vsock: a VM has one vsock device");
		ret = -EINVAL;
	} else {
		ret = virtio_vsock_create(vm, &s, &dev, err, errlen);
	}
	if (!ret)
		d->devs[d->ndevs++] = d->vsock = dev;
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int virtio_balloon_spec_check(const char *spec, char *err, size_t errlen)
{
	struct balloon_spec s;

	return balloon_spec_parse(spec, 0, &s, err, errlen);
}

int virtio_add_balloon(struct vm *vm, const char *spec, uint64_t memory, char *err,
		       size_t errlen)
{
	struct virtio_devices *d;
	struct virtio_dev *dev;
	struct balloon_spec s;
	int ret;

	ret = balloon_spec_parse(spec, memory, &s, err, errlen);
	if (ret)
		return ret;
	d = reserve(vm, &ret, err, errlen);
	if (!d)
		return ret;
	if (d->balloon) {
		snprintf(err, errlen, "--balloon: a VM has one balloon device");
		ret = -EINVAL;
	} else {
		ret = virtio_balloon_create(vm, &s, &dev, err, errlen);
	}
	if (!ret)
		d->devs[d->ndevs++] = d->balloon = dev;
	pthread_mutex_unlock(&d->lock);
	return ret;
}

struct virtio_dev *virtio_devices_balloon(struct vm *vm)
{
	struct virtio_devices *d = devices_of(vm, false);
	struct virtio_dev *dev;

	if (!d)
		return NULL;
	pthread_mutex_lock(&d->lock);
	dev = d->balloon;
	pthread_mutex_unlock(&d->lock);
	return dev;
}

/* Runs fn on every device of vm, in creation order or in reverse. */
static void for_each(struct vm *vm, bool reverse, void (*fn)(struct virtio_dev *))
{
	struct virtio_devices *d = devices_of(vm, false);

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < d->ndevs; i++)
		fn(d->devs[reverse ? d->ndevs - 1 - i : i]);
	pthread_mutex_unlock(&d->lock);
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
	struct virtio_devices **slot = vm_virtio_slot(vm);
	struct virtio_devices *d = *slot;

	if (!d)
		return;
	for_each(vm, true, virtio_dev_destroy);
	*slot = NULL;
	pthread_mutex_destroy(&d->lock);
	free(d);
}

void virtio_devices_save(struct vm *vm, struct state_writer *w)
{
	struct virtio_devices *d = devices_of(vm, false);

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < d->ndevs; i++)
		virtio_dev_save(d->devs[i], w);
	if (d->vsock)
		virtio_vsock_save(d->vsock, w);
	if (d->balloon)
		virtio_balloon_save(d->balloon, w);
	pthread_mutex_unlock(&d->lock);
}

int virtio_devices_restore(struct vm *vm, const struct state_file *f, char *err, size_t errlen)
{
	struct virtio_devices *d = devices_of(vm, false);
	int ret = 0;

	if (!d)
		return 0;
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < d->ndevs && !ret; i++)
		ret = virtio_dev_restore(d->devs[i], f, err, errlen);
	if (!ret && d->vsock)
		ret = virtio_vsock_restore(d->vsock, f, err, errlen);
	if (!ret && d->balloon)
		ret = virtio_balloon_restore(d->balloon, f, err, errlen);
	pthread_mutex_unlock(&d->lock);
	return ret;
}
