/* Hot add and hot remove (machine.h, machine_hotplug.h): the devices a
 * running VM takes through ACPI PCI hotplug (bus/hotplug.c), and their
 * place in the machine's device registry (machine.c) for pause, resume,
 * reset, save and restore. */
#include "vmm/machine_hotplug.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "vmm/bus/hotplug.h"
#include "vmm/bus/pci.h"
#include "vmm/hw/hw.h"
#include "vmm/machine.h"
#include "vmm/state/record.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/net.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm_internal.h"

static int fail(char *err, size_t errlen, int ret, const char *what)
{
	if (ret)
		snprintf(err, errlen, "%s: %s", what, strerror(-ret));
	return ret;
}

/* Every slot left free by the command line's devices is hot-pluggable
 * (the DSDT, built after this entry, lists them). A hot-added device is a
 * virtio function like the others, but owned here rather than by
 * virtio/devices.c's list: it comes and goes while the VM runs. Its spec
 * is kept so that a restore can build it again in the same slot. */

/* Names apart from the command line's devices: virtio-blk1NN, NN = slot. */
#define HOT_NAME_INDEX 100

enum hot_kind { HOT_NONE, HOT_DISK, HOT_NET };

struct hot_device {
	enum hot_kind kind;
	struct virtio_dev *dev;
	char spec[4200];
};

struct machine_hotplug {
	struct hotplug *hp;
	struct hot_device slots[PCI_MAX_DEVICES];
};

static void hot_raise_gpe(void *owner)
{
	struct vm *vm = owner;

	if (vm->acpi_pm)
		acpi_pm_raise_gpe(vm->acpi_pm, HOTPLUG_GPE);
}

/* The guest let go of slot's device: with every vCPU parked, nothing can
 * be inside its BAR handlers when it goes (bus.c). */
static void hot_eject(void *owner, unsigned slot)
{
	struct vm *vm = owner;
	struct hot_device *h = &vm->hot->slots[slot];
	char ev[96];

	if (h->kind == HOT_NONE)
		return;
	vm_park_vcpus(vm);
	virtio_dev_destroy(h->dev);
	vm_unpark_vcpus(vm);
	log_info("hotplug: slot %u released by the guest and removed", slot);
	h->kind = HOT_NONE;
	h->dev = NULL;
	snprintf(ev, sizeof(ev), "{\"event\":\"device-removed\",\"slot\":%u}", slot);
	machine_emit_event(vm, ev);
}

int machine_hot_create(struct vm *vm, char *err, size_t errlen)
{
	struct hotplug_owner owner = { hot_eject, hot_raise_gpe, vm };
	int ret;

	vm->hot = calloc(1, sizeof(*vm->hot));
	if (!vm->hot)
		return fail(err, errlen, -ENOMEM, "creating the PCI hotplug controller");
	ret = hotplug_create(vm, ~pci_bus_used_slots(vm->pci), &owner, &vm->hot->hp);
	return fail(err, errlen, ret, "creating the PCI hotplug controller");
}

static void hot_each(struct vm *vm, void (*fn)(struct virtio_dev *))
{
	for (unsigned s = 0; s < PCI_MAX_DEVICES; s++)
		if (vm->hot->slots[s].kind != HOT_NONE)
			fn(vm->hot->slots[s].dev);
}

void machine_hot_reset(struct vm *vm)
{
	hot_each(vm, virtio_dev_reset);
	hotplug_reset(vm->hot->hp);
}

void machine_hot_pause(struct vm *vm)
{
	hot_each(vm, virtio_dev_pause);
}

void machine_hot_resume(struct vm *vm)
{
	hot_each(vm, virtio_dev_resume);
}

void machine_hot_destroy(struct vm *vm)
{
	if (!vm->hot)
		return;
	hot_each(vm, virtio_dev_destroy);
	hotplug_destroy(vm->hot->hp);
	free(vm->hot);
	vm->hot = NULL;
}

/* Creates the device of kind from spec; it lands in the lowest free slot,
 * or in want (a restore) when that is free. */
static int hot_build(struct vm *vm, enum hot_kind kind, const char *spec, unsigned want,
		     struct virtio_dev **dev, char *err, size_t errlen)
{
	uint32_t before = pci_bus_used_slots(vm->pci);
	unsigned index = HOT_NAME_INDEX;
	int ret;

	for (unsigned s = 1; s < PCI_MAX_DEVICES; s++)
		if (!(before & (1u << s))) {
			index += want ? want : s;
			break;
		}
	if (want)
		pci_bus_want_slot(vm->pci, want);
	if (kind == HOT_DISK) {
		struct blk_spec *b = malloc(sizeof(*b));

		if (!b)
			return -ENOMEM;
		ret = blk_spec_parse(spec, b, err, errlen);
		if (!ret)
			ret = virtio_blk_create(vm, b, index, dev, err, errlen);
		free(b);
	} else {
		struct net_spec n;

		ret = net_spec_parse(spec, &n, err, errlen);
		if (!ret && n.fd >= 0) {
			snprintf(err, errlen, "a hot-added NIC needs tap=NAME (an inherited fd "
					      "cannot be opened again on restore)");
			ret = -EINVAL;
		}
		if (!ret)
			ret = virtio_net_create(vm, &n, index, dev, err, errlen);
	}
	pci_bus_want_slot(vm->pci, 0);
	return ret;
}

/* Records the device in its slot and tells the guest. */
static int hot_attach(struct vm *vm, enum hot_kind kind, const char *spec,
		      struct virtio_dev *dev, unsigned *slot, char *err, size_t errlen)
{
	struct hot_device *h;
	int ret;

	*slot = dev->pci.slot;
	ret = hotplug_announce(vm->hot->hp, *slot);
	if (ret) {
		/* a slot the DSDT does not list: the guest would never see it
		 * (its BARs are on the buses already, hence the parking) */
		vm_park_vcpus(vm);
		virtio_dev_destroy(dev);
		vm_unpark_vcpus(vm);
		snprintf(err, errlen, "no free hotplug slot (slot %u is not hot-pluggable)", *slot);
		return -ENOSPC;
	}
	h = &vm->hot->slots[*slot];
	h->kind = kind;
	h->dev = dev;
	snprintf(h->spec, sizeof(h->spec), "%s", spec);
	return 0;
}

static int hot_kind_of(const char *kind, enum hot_kind *out, char *err, size_t errlen)
{
	if (kind && !strcmp(kind, "disk"))
		*out = HOT_DISK;
	else if (kind && !strcmp(kind, "net"))
		*out = HOT_NET;
	else {
		snprintf(err, errlen, "unknown device kind '%.32s': use \"disk\" or \"net\"",
			 kind ? kind : "");
		return -EINVAL;
	}
	return 0;
}

int machine_device_add(struct vm *vm, const char *kind, const char *spec, unsigned *slot,
		       char *err, size_t errlen)
{
	struct virtio_dev *dev;
	enum hot_kind k;
	uint32_t free_slots;
	int ret;

	if (!vm->hot) {
		snprintf(err, errlen, "this machine has no PCI hotplug");
		return -ENOTSUP;
	}
	ret = hot_kind_of(kind, &k, err, errlen);
	if (ret)
		return ret;
	if (strlen(spec) >= sizeof(vm->hot->slots[0].spec)) {
		snprintf(err, errlen, "the device spec is too long");
		return -EINVAL;
	}
	free_slots = hotplug_capable_slots(vm->hot->hp) & ~pci_bus_used_slots(vm->pci);
	if (!free_slots) {
		snprintf(err, errlen, "every hotplug slot is in use (%d slots); remove a device "
			 "first", __builtin_popcount(hotplug_capable_slots(vm->hot->hp)));
		return -ENOSPC;
	}
	ret = hot_build(vm, k, spec, 0, &dev, err, errlen);
	if (ret)
		return ret;
	ret = hot_attach(vm, k, spec, dev, slot, err, errlen);
	if (!ret)
		log_info("hotplug: %s added in slot %u", dev->name, *slot);
	return ret;
}

struct hot_wait {
	void (*done)(void *opaque, unsigned slot, bool removed);
	void *opaque;
};

static void hot_done(void *opaque, unsigned slot, enum hotplug_outcome outcome)
{
	struct hot_wait *w = opaque;

	w->done(w->opaque, slot, outcome == HOTPLUG_EJECTED);
	free(w);
}

int machine_device_remove(struct vm *vm, unsigned slot, unsigned timeout_ms,
			  void (*done)(void *opaque, unsigned slot, bool removed), void *opaque,
			  char *err, size_t errlen)
{
	struct hot_wait *w;
	const char *name;
	uint16_t vendor, device;
	int ret;

	if (!vm->hot) {
		snprintf(err, errlen, "this machine has no PCI hotplug");
		return -ENOTSUP;
	}
	if (slot >= PCI_MAX_DEVICES ||
	    pci_bus_slot_info(vm->pci, slot, &name, &vendor, &device)) {
		snprintf(err, errlen, "no device in slot %u (see \"status\" for the devices)", slot);
		return -ENOENT;
	}
	if (vm->hot->slots[slot].kind == HOT_NONE) {
		snprintf(err, errlen, "slot %u holds %s from the command line; only hot-added "
			 "devices can be removed", slot, name);
		return -EPERM;
	}
	w = malloc(sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct hot_wait){ done, opaque };
	ret = hotplug_request_eject(vm->hot->hp, slot, timeout_ms, hot_done, w);
	if (ret) {
		free(w);
		snprintf(err, errlen, "slot %u: a remove is already waiting for the guest", slot);
	}
	return ret;
}

static const char *kind_of_pci(uint16_t vendor, uint16_t device)
{
	if (vendor == 0x1af4) {
		switch (device) {
		case 0x1041:
			return "net";
		case 0x1042:
			return "disk";
		case 0x1043:
			return "console";
		case 0x1044:
			return "rng";
		}
	}
	return vendor == 0x8086 ? "bridge" : "other";
}

unsigned machine_list_devices(struct vm *vm, struct machine_device_info *out, unsigned max)
{
	uint32_t releasing = vm->hot ? hotplug_releasing_slots(vm->hot->hp) : 0;
	unsigned n = 0;

	for (unsigned s = 0; s < PCI_MAX_DEVICES && n < max && vm->pci; s++) {
		uint16_t vendor, device;
		const char *name;

		if (pci_bus_slot_info(vm->pci, s, &name, &vendor, &device))
			continue;
		out[n++] = (struct machine_device_info){
			.slot = s,
			.name = name,
			.kind = kind_of_pci(vendor, device),
			.hot_added = vm->hot && vm->hot->slots[s].kind != HOT_NONE,
			.releasing = (releasing >> s) & 1,
		};
	}
	return n;
}

/* Saved state: one record per hot-added device (its kind and spec, so a
 * restore builds it again in the same slot before the PCI bus takes its
 * record), then the hotplug registers; the devices' PCI and virtio
 * records are written by the PCI bus and here. */
#define HOT_DEVICE_VERSION 1
#define HOT_DEVICE_INSTANCE_BASE 1 /* instance 0 is the registers */

void machine_hot_save(struct vm *vm, struct state_writer *w)
{
	for (unsigned s = 0; s < PCI_MAX_DEVICES; s++) {
		struct hot_device *h = &vm->hot->slots[s];
		uint32_t len = (uint32_t)strlen(h->spec);

		if (h->kind == HOT_NONE)
			continue;
		state_begin(w, STATE_SECTION_HOTPLUG, HOT_DEVICE_INSTANCE_BASE + s,
			    HOT_DEVICE_VERSION);
		state_put_u8(w, (uint8_t)h->kind);
		state_put_u32(w, len);
		state_put_bytes(w, h->spec, len);
		state_end(w);
		virtio_dev_save(h->dev, w);
	}
	hotplug_save(vm->hot->hp, w);
}

/* Before any device restores: builds the hot-added devices the state
 * names, each in its slot. */
int machine_hot_recreate(struct vm *vm, const struct state_file *f, char *err, size_t errlen)
{
	for (unsigned s = 1; s < PCI_MAX_DEVICES && vm->hot; s++) {
		struct state_reader r;
		struct virtio_dev *dev;
		char spec[sizeof(vm->hot->slots[0].spec)];
		unsigned slot;
		uint8_t kind;
		uint32_t len;
		int ret;

		if (state_file_find(f, STATE_SECTION_HOTPLUG, HOT_DEVICE_INSTANCE_BASE + s, &r))
			continue;
		kind = state_get_u8(&r);
		len = state_get_u32(&r);
		if (r.version != HOT_DEVICE_VERSION || (kind != HOT_DISK && kind != HOT_NET) ||
		    len >= sizeof(spec) || !(hotplug_capable_slots(vm->hot->hp) & (1u << s))) {
			snprintf(err, errlen, "the saved hot-added device of slot %u does not fit", s);
			return -EINVAL;
		}
		state_get_bytes(&r, spec, len);
		spec[len] = 0;
		if (state_reader_done(&r) || memchr(spec, 0, len)) {
			snprintf(err, errlen, "the saved hot-added device of slot %u does not fit", s);
			return -EINVAL;
		}
		ret = hot_build(vm, (enum hot_kind)kind, spec, s, &dev, err, errlen);
		if (ret)
			return ret;
		ret = hot_attach(vm, (enum hot_kind)kind, spec, dev, &slot, err, errlen);
		if (!ret && slot != s) {
			snprintf(err, errlen, "the hot-added device of slot %u came back in slot %u", s,
				 slot);
			ret = -EINVAL;
		}
		if (ret)
			return ret;
	}
	return 0;
}

int machine_hot_restore(struct vm *vm, const struct state_file *f, char *err, size_t errlen)
{
	struct state_reader r;
	int ret;

	/* state saved before hotplug existed: power-on registers */
	if (state_file_find(f, STATE_SECTION_HOTPLUG, 0, &r))
		return 0;
	ret = hotplug_restore(vm->hot->hp, &r);
	if (ret)
		snprintf(err, errlen, "the saved PCI hotplug state does not fit the device: a value "
			 "out of range, or the wrong length");
	for (unsigned s = 0; s < PCI_MAX_DEVICES && !ret; s++)
		if (vm->hot->slots[s].kind != HOT_NONE)
			ret = virtio_dev_restore(vm->hot->slots[s].dev, f, err, errlen);
	return ret;
}

uint32_t machine_hot_capable_slots(struct vm *vm)
{
	return vm->hot ? hotplug_capable_slots(vm->hot->hp) : 0;
}
