/* Builds the machine (see machine.h). Devices that other parts of the tree
 * provide are compiled in as their sources exist (meson defines
 * CLOISON_HAVE_*), so the worker builds at every step of the project. */
#include "vmm/machine.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "vmm/boot/acpi.h"
#include "vmm/bus/pci.h"
#include "vmm/control.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"
#include "vmm/virtio/devices.h"
#include "vmm/vm_internal.h"

static int fail(char *err, size_t errlen, int ret, const char *what)
{
	snprintf(err, errlen, "%s: %s", what, strerror(-ret));
	return ret;
}

static int create_platform(struct vm *vm, char *err, size_t errlen)
{
	uint64_t below = vm->mem.regions[0].size;
	uint64_t above = vm->mem.total - below;
	int ret = 0;

	(void)below;
	(void)above;
#ifdef CLOISON_HAVE_PCI
	ret = pci_bus_create(vm, vm->pio, vm->mmio, &vm->pci);
	if (ret)
		return fail(err, errlen, ret, "creating the PCI host bridge");
#endif
#ifdef CLOISON_HAVE_SERIAL
	ret = serial_create(vm, PORT_COM1, IRQ_COM1, &vm->serial);
	if (ret)
		return fail(err, errlen, ret, "creating COM1");
#endif
#ifdef CLOISON_HAVE_I8042
	ret = i8042_create(vm, &vm->i8042);
	if (ret)
		return fail(err, errlen, ret, "creating the i8042");
#endif
#ifdef CLOISON_HAVE_RTC
	ret = rtc_create(vm, below, above, &vm->rtc);
	if (ret)
		return fail(err, errlen, ret, "creating the RTC");
#endif
#ifdef CLOISON_HAVE_ACPI_PM
	ret = acpi_pm_create(vm, &vm->acpi_pm);
	if (ret)
		return fail(err, errlen, ret, "creating ACPI power management");
#endif
	return ret;
}

static int create_virtio(struct vm *vm, char *err, size_t errlen)
{
#if defined(CLOISON_HAVE_VIRTIO) && defined(CLOISON_HAVE_PCI)
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
	ret = virtio_add_rng(vm, err, errlen);
	if (ret)
		return ret;
#else
	if (vm->cfg.ndisks || vm->cfg.nnets) {
		snprintf(err, errlen, "--disk and --net need virtio, which this build lacks");
		return -ENOTSUP;
	}
#endif
	return 0;
}

int machine_create_devices(struct vm *vm, char *err, size_t errlen)
{
	int ret = create_platform(vm, err, errlen);

	if (ret)
		return ret;
	return create_virtio(vm, err, errlen);
}

int machine_build_acpi(struct vm *vm, char *err, size_t errlen)
{
#ifdef CLOISON_HAVE_ACPI
	struct acpi_config cfg = {
		.ncpus = vm->nvcpus,
		.ram_below_4g = vm->mem.regions[0].size,
		.ram_above_4g = vm->mem.total - vm->mem.regions[0].size,
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
#else
	(void)err;
	(void)errlen;
	vm->rsdp_gpa = 0;
#endif
	return 0;
}

void machine_pause(struct vm *vm)
{
#if defined(CLOISON_HAVE_VIRTIO) && defined(CLOISON_HAVE_PCI)
	if (vm->have_virtio)
		virtio_devices_pause(vm);
#else
	(void)vm;
#endif
}

void machine_resume(struct vm *vm)
{
#if defined(CLOISON_HAVE_VIRTIO) && defined(CLOISON_HAVE_PCI)
	if (vm->have_virtio)
		virtio_devices_resume(vm);
#else
	(void)vm;
#endif
}

void machine_reset_devices(struct vm *vm)
{
#ifdef CLOISON_HAVE_SERIAL
	if (vm->serial)
		serial_reset(vm->serial);
#endif
#ifdef CLOISON_HAVE_I8042
	if (vm->i8042)
		i8042_reset(vm->i8042);
#endif
#ifdef CLOISON_HAVE_RTC
	if (vm->rtc)
		rtc_reset(vm->rtc);
#endif
#ifdef CLOISON_HAVE_ACPI_PM
	if (vm->acpi_pm)
		acpi_pm_reset(vm->acpi_pm);
#endif
#if defined(CLOISON_HAVE_VIRTIO) && defined(CLOISON_HAVE_PCI)
	if (vm->have_virtio)
		virtio_devices_reset(vm);
#endif
}

void machine_destroy_devices(struct vm *vm)
{
#if defined(CLOISON_HAVE_VIRTIO) && defined(CLOISON_HAVE_PCI)
	if (vm->have_virtio)
		virtio_devices_destroy(vm);
#endif
#ifdef CLOISON_HAVE_ACPI_PM
	if (vm->acpi_pm)
		acpi_pm_destroy(vm->acpi_pm);
#endif
#ifdef CLOISON_HAVE_RTC
	if (vm->rtc)
		rtc_destroy(vm->rtc);
#endif
#ifdef CLOISON_HAVE_I8042
	if (vm->i8042)
		i8042_destroy(vm->i8042);
#endif
#ifdef CLOISON_HAVE_SERIAL
	if (vm->serial)
		serial_destroy(vm->serial);
#endif
#ifdef CLOISON_HAVE_PCI
	if (vm->pci)
		pci_bus_destroy(vm->pci);
#endif
	vm->acpi_pm = NULL;
	vm->rtc = NULL;
	vm->i8042 = NULL;
	vm->serial = NULL;
	vm->pci = NULL;
}

int machine_press_power_button(struct vm *vm)
{
#ifdef CLOISON_HAVE_ACPI_PM
	if (vm->acpi_pm) {
		acpi_pm_press_power_button(vm->acpi_pm);
		return 0;
	}
#else
	(void)vm;
#endif
	return -ENODEV;
}

void machine_emit_event(struct vm *vm, const char *json)
{
	if (vm->control)
		control_broadcast(vm->control, json);
}
