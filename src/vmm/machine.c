/* Builds the machine (see machine.h): the devices live in bus/, hw/,
 * boot/acpi.c and virtio/; this file only assembles and sequences them. */
#include "vmm/machine.h"
#include "vmm/machine_hotplug.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/boot/acpi.h"
#include "vmm/bus/pci.h"
#include "vmm/control.h"
#include "vmm/hw/hw.h"
#include "vmm/hw/vmgenid.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"
#include "vmm/virtio/devices.h"
#include "vmm/vm_internal.h"

static int fail(char *err, size_t errlen, int ret, const char *what)
{
	snprintf(err, errlen, "%s: %s", what, strerror(-ret));
	return ret;
}

/* ---- the device registry ----
 *
 * Every device of the machine, platform and virtio alike, is one entry:
 * machine set-up walks the table forward, teardown backward, and reset,
 * pause, resume, save and restore walk it in order (the PCI bus first, so
 * that config space is back at power-on, or has its saved BARs mapped,
 * before the device models behind it). An entry without an operation has
 * nothing to do for it. */
struct machine_device {
	const char *name;
	int (*create)(struct vm *vm, char *err, size_t errlen);
	void (*reset)(struct vm *vm);
	void (*pause)(struct vm *vm);
	void (*resume)(struct vm *vm);
	void (*save)(struct vm *vm, struct state_writer *w);
	int (*restore)(struct vm *vm, const struct state_file *f, char *err, size_t errlen);
	void (*destroy)(struct vm *vm);
};

static int fail_create(char *err, size_t errlen, int ret, const char *what)
{
	return ret ? fail(err, errlen, ret, what) : 0;
}

/* A platform device's record, found by its section type (instance 0). */
static int find_record(const struct state_file *f, uint32_t type, const char *what,
		       struct state_reader *r, char *err, size_t errlen)
{
	if (state_file_find(f, type, 0, r) == 0)
		return 0;
	snprintf(err, errlen, "the state has no %s record", what);
	return -ENOENT;
}

static int refused(int ret, const char *what, char *err, size_t errlen)
{
	if (ret)
		snprintf(err, errlen, "the saved %s state does not fit the device: %s", what,
			 ret == -EINVAL ? "a value out of range, or the wrong length" : strerror(-ret));
	return ret;
}

/* PCI host bridge */
static int pci_create(struct vm *vm, char *err, size_t errlen)
{
	return fail_create(err, errlen, pci_bus_create(vm, vm->pio, vm->mmio, &vm->pci),
			   "creating the PCI host bridge");
}
static void pci_reset(struct vm *vm)
{
	pci_bus_reset(vm->pci);
}
static void pci_save(struct vm *vm, struct state_writer *w)
{
	pci_bus_save(vm->pci, w);
}
static int pci_restore(struct vm *vm, const struct state_file *f, char *err, size_t errlen)
{
	return pci_bus_restore(vm->pci, f, err, errlen);
}
static void pci_destroy(struct vm *vm)
{
	pci_bus_destroy(vm->pci);
	vm->pci = NULL;
}

/* The platform devices share one shape: create, reset, save, restore by
 * their section type, destroy. */
#define PLATFORM_DEVICE(dev, field, type, what, create_call)                            \
	static int dev##_entry_create(struct vm *vm, char *err, size_t errlen)            \
	{                                                                               \
		return fail_create(err, errlen, create_call, "creating the " what);     \
	}                                                                               \
	static void dev##_entry_reset(struct vm *vm)                                      \
	{                                                                               \
		dev##_reset(vm->field);                                                 \
	}                                                                               \
	static void dev##_entry_save(struct vm *vm, struct state_writer *w)               \
	{                                                                               \
		dev##_save(vm->field, w, 0);                                            \
	}                                                                               \
	static int dev##_entry_restore(struct vm *vm, const struct state_file *f, char *err, \
				       size_t errlen)                                   \
	{                                                                               \
		struct state_reader r;                                                  \
		int ret = find_record(f, type, what, &r, err, errlen);                  \
		return ret ? ret : refused(dev##_restore(vm->field, &r), what, err, errlen); \
	}                                                                               \
	static void dev##_entry_destroy(struct vm *vm)                                    \
	{                                                                               \
		dev##_destroy(vm->field);                                               \
		vm->field = NULL;                                                       \
	}

PLATFORM_DEVICE(serial, serial, STATE_SECTION_SERIAL, "COM1",
		serial_create(vm, PORT_COM1, IRQ_COM1, &vm->serial))
PLATFORM_DEVICE(i8042, i8042, STATE_SECTION_I8042, "i8042", i8042_create(vm, &vm->i8042))
PLATFORM_DEVICE(rtc, rtc, STATE_SECTION_RTC, "RTC",
		rtc_create(vm, vm->mem.regions[0].size, vm->mem.total - vm->mem.regions[0].size,
			   &vm->rtc))
PLATFORM_DEVICE(acpi_pm, acpi_pm, STATE_SECTION_ACPI_PM, "ACPI power management",
		acpi_pm_create(vm, &vm->acpi_pm))

/* Pausing reaches the devices that raise interrupts on their own (from
 * the event loop: input, timers, the power button); the i8042 only
 * answers the guest. */
#define PAUSABLE(dev, field)                                                             \
	static void dev##_entry_pause(struct vm *vm)                                      \
	{                                                                               \
		dev##_pause(vm->field);                                                 \
	}                                                                               \
	static void dev##_entry_resume(struct vm *vm)                                     \
	{                                                                               \
		dev##_resume(vm->field);                                                \
	}

PAUSABLE(serial, serial)
PAUSABLE(rtc, rtc)
PAUSABLE(acpi_pm, acpi_pm)

#define PLATFORM_ENTRY(dev, label, pause, resume)                                        \
	{ label, dev##_entry_create, dev##_entry_reset, pause, resume, dev##_entry_save,   \
	  dev##_entry_restore, dev##_entry_destroy }

/* virtio: every device from the command line, then the entropy source */
static int virtio_create(struct vm *vm, char *err, size_t errlen)
{
	int ret;

	vm->have_virtio = true;
	for (unsigned i = 0; i < vm->cfg.ndisks; i++) {
		ret = virtio_add_disk(vm, vm->cfg.disks[i], err, errlen);
		if (ret)
			return ret;
	}
	for (unsigned i = 0; i < vm->cfg.nnets; i++) {
		ret = virtio_add_net(vm, vm->cfg.nets[i], err, errlen);
		if (ret)
			return ret;
	}
	if (vm->cfg.console) {
		ret = virtio_add_console(vm, vm->cfg.console, err, errlen);
		if (ret)
			return ret;
	}
	if (vm->cfg.vsock) {
		ret = virtio_add_vsock(vm, vm->cfg.vsock, err, errlen);
		if (ret)
			return ret;
	}
	ret = virtio_add_rng(vm, err, errlen);
	if (ret || !vm->cfg.balloon)
		return ret;
	return virtio_add_balloon(vm, vm->cfg.balloon, vm->cfg.memory, err, errlen);
}

/* kvmclock stops while the VM is paused, so that the guest's clock does
 * not jump by the pause (as QEMU's kvmclock does); KVM's own state is
 * saved with the vCPUs (state/kvm_state.c). */
static void clock_pause(struct vm *vm)
{
	struct kvm_clock_data c = { 0 };

	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &c) == 0) {
		vm->paused_clock = c.clock;
		vm->clock_paused = true;
	}
}

static void clock_resume(struct vm *vm)
{
	struct kvm_clock_data c = { .clock = vm->paused_clock };

	if (vm->clock_paused && ioctl(vm->vm_fd, KVM_SET_CLOCK, &c) < 0)
		log_debug("kvmclock: cannot set it back after the pause: %s", strerror(errno));
	vm->clock_paused = false;
}

/* VM Generation ID (hw/vmgenid.h): only with --generation-id. A restore
 * whose id differs from the saved one tells the guest (GPE, then Notify
 * 0x80 from \_GPE._E02); one saved without the device keeps none. */
static int vmgenid_entry_create(struct vm *vm, char *err, size_t errlen)
{
	if (!vm->cfg.has_generation_id)
		return 0;
	return fail_create(err, errlen,
			   vmgenid_create(&vm->mem, &vm->cfg.generation_id, &vm->vmgenid),
			   "creating the VM Generation ID");
}
static void vmgenid_entry_reset(struct vm *vm)
{
	if (vm->vmgenid)
		vmgenid_reset(vm->vmgenid);
}
static void vmgenid_entry_save(struct vm *vm, struct state_writer *w)
{
	if (vm->vmgenid)
		vmgenid_save(vm->vmgenid, w);
}
static int vmgenid_entry_restore(struct vm *vm, const struct state_file *f, char *err,
				 size_t errlen)
{
	struct state_reader r;
	bool changed;
	int ret;

	if (!vm->vmgenid)
		return 0;
	if (state_file_find(f, STATE_SECTION_VMGENID, 0, &r)) {
		log_info("vmgenid: the state was saved without the device; the guest's "
			 "tables have none, so it goes on without one until its next boot");
		return 0;
	}
	ret = refused(vmgenid_restore(vm->vmgenid, &r, &changed), "VM Generation ID", err,
		      errlen);
	if (!ret && changed && vm->acpi_pm)
		acpi_pm_raise_gpe(vm->acpi_pm, VMGENID_GPE);
	return ret;
}
static void vmgenid_entry_destroy(struct vm *vm)
{
	vmgenid_destroy(vm->vmgenid);
	vm->vmgenid = NULL;
}

static void virtio_destroy(struct vm *vm)
{
	virtio_devices_destroy(vm);
	vm->have_virtio = false;
}


static const struct machine_device machine_devices[] = {
	{ "pci", pci_create, pci_reset, NULL, NULL, pci_save, pci_restore, pci_destroy },
	PLATFORM_ENTRY(serial, "serial", serial_entry_pause, serial_entry_resume),
	PLATFORM_ENTRY(i8042, "i8042", NULL, NULL),
	PLATFORM_ENTRY(rtc, "rtc", rtc_entry_pause, rtc_entry_resume),
	PLATFORM_ENTRY(acpi_pm, "acpi-pm", acpi_pm_entry_pause, acpi_pm_entry_resume),
	{ "kvmclock", NULL, NULL, clock_pause, clock_resume, NULL, NULL, NULL },
	/* after acpi-pm, whose restored GPE0 a changed id adds to */
	{ "vmgenid", vmgenid_entry_create, vmgenid_entry_reset, NULL, NULL, vmgenid_entry_save,
	  vmgenid_entry_restore, vmgenid_entry_destroy },
	{ "virtio", virtio_create, virtio_devices_reset, virtio_devices_pause,
	  virtio_devices_resume, virtio_devices_save, virtio_devices_restore, virtio_destroy },
	/* after every device of the command line: the slots left are the
	 * hot-pluggable ones */
	{ "hotplug", machine_hot_create, machine_hot_reset, machine_hot_pause, machine_hot_resume,
	  machine_hot_save, machine_hot_restore, machine_hot_destroy },
};

int machine_create_devices(struct vm *vm, char *err, size_t errlen)
{
	for (size_t i = 0; i < ARRAY_SIZE(machine_devices); i++) {
		int ret;

		/* counted before it is made: a create that fails half way
		 * (two disks of three) is undone by its destroy */
		vm->ndevices_created = i + 1;
		ret = machine_devices[i].create ? machine_devices[i].create(vm, err, errlen) : 0;
		if (ret)
			return ret;
	}
	return 0;
}

int machine_build_acpi(struct vm *vm, char *err, size_t errlen)
{
	struct acpi_config cfg = {
		.ncpus = vm->nvcpus,
		.ram_below_4g = vm->mem.regions[0].size,
		.ram_above_4g = vm->mem.total - vm->mem.regions[0].size,
		.hotplug_slots = machine_hot_capable_slots(vm),
		.vmgenid = vm->cfg.has_generation_id,
	};
	struct acpi_tables t;
	uint8_t *buf = guest_mem_ptr(&vm->mem, LAYOUT_ACPI_BASE, LAYOUT_ACPI_MAX);
	int ret;

	if (!buf)
		return fail(err, errlen, -ENOMEM, "no RAM for the ACPI tables");
	memset(buf, 0, LAYOUT_ACPI_MAX);
	ret = acpi_build(&cfg, buf, LAYOUT_ACPI_MAX, LAYOUT_ACPI_BASE, &t);
	if (ret)
		return fail(err, errlen, ret, "building the ACPI tables");
	vm->rsdp_gpa = t.rsdp_gpa;
	return 0;
}

void machine_pause(struct vm *vm)
{
	for (size_t i = 0; i < vm->ndevices_created; i++)
		if (machine_devices[i].pause)
			machine_devices[i].pause(vm);
}

void machine_resume(struct vm *vm)
{
	for (size_t i = 0; i < vm->ndevices_created; i++)
		if (machine_devices[i].resume)
			machine_devices[i].resume(vm);
}

void machine_reset_devices(struct vm *vm)
{
	for (size_t i = 0; i < vm->ndevices_created; i++)
		if (machine_devices[i].reset)
			machine_devices[i].reset(vm);
}

void machine_save_devices(struct vm *vm, struct state_writer *w)
{
	for (size_t i = 0; i < vm->ndevices_created; i++)
		if (machine_devices[i].save)
			machine_devices[i].save(vm, w);
}

int machine_restore_devices(struct vm *vm, const struct state_file *f, char *err, size_t errlen)
{
	int hot = machine_hot_recreate(vm, f, err, errlen);

	if (hot)
		return hot;
	for (size_t i = 0; i < vm->ndevices_created; i++) {
		int ret = machine_devices[i].restore ? machine_devices[i].restore(vm, f, err, errlen)
						     : 0;

		if (ret)
			return ret;
	}
	return 0;
}

void machine_destroy_devices(struct vm *vm)
{
	while (vm->ndevices_created) {
		const struct machine_device *d = &machine_devices[--vm->ndevices_created];

		if (d->destroy)
			d->destroy(vm);
	}
}

int machine_press_power_button(struct vm *vm)
{
	if (vm->acpi_pm) {
		acpi_pm_press_power_button(vm->acpi_pm);
		return 0;
	}
	return -ENODEV;
}

void machine_emit_event(struct vm *vm, const char *json)
{
	if (vm->control)
		control_broadcast(vm->control, json);
}
