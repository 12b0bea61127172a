/* Builds the machine (see machine.h): the devices live in bus/, hw/,
 * boot/acpi.c and virtio/; this file only assembles and sequences them. */
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
	int ret;

	ret = pci_bus_create(vm, vm->pio, vm->mmio, &vm->pci);
	if (ret)
		return fail(err, errlen, ret, "creating the PCI host bridge");
	ret = serial_create(vm, PORT_COM1, IRQ_COM1, &vm->serial);
	if (ret)
		return fail(err, errlen, ret, "creating COM1");
	ret = i8042_create(vm, &vm->i8042);
	if (ret)
		return fail(err, errlen, ret, "creating the i8042");
	ret = rtc_create(vm, below, above, &vm->rtc);
	if (ret)
		return fail(err, errlen, ret, "creating the RTC");
	ret = acpi_pm_create(vm, &vm->acpi_pm);
	if (ret)
		return fail(err, errlen, ret, "creating ACPI power management");
	return ret;
}

static int create_virtio(struct vm *vm, char *err, size_t errlen)
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
	ret = virtio_add_rng(vm, err, errlen);
	if (ret)
		return ret;
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
	return 0;
}

void machine_pause(struct vm *vm)
{
	if (vm->have_virtio)
		virtio_devices_pause(vm);
}

void machine_resume(struct vm *vm)
{
	if (vm->have_virtio)
		virtio_devices_resume(vm);
}

void machine_reset_devices(struct vm *vm)
{
	if (vm->serial)
		serial_reset(vm->serial);
	if (vm->i8042)
		i8042_reset(vm->i8042);
	if (vm->rtc)
		rtc_reset(vm->rtc);
	if (vm->acpi_pm)
		acpi_pm_reset(vm->acpi_pm);
	/* Config space first (BARs, command, MSI-X off and masked) so the
	 * device models reset behind a bus that looks freshly powered on. */
	if (vm->pci)
		pci_bus_reset(vm->pci);
	if (vm->have_virtio)
		virtio_devices_reset(vm);
}

void machine_destroy_devices(struct vm *vm)
{
	if (vm->have_virtio)
		virtio_devices_destroy(vm);
	if (vm->acpi_pm)
		acpi_pm_destroy(vm->acpi_pm);
	if (vm->rtc)
		rtc_destroy(vm->rtc);
	if (vm->i8042)
		i8042_destroy(vm->i8042);
	if (vm->serial)
		serial_destroy(vm->serial);
	if (vm->pci)
		pci_bus_destroy(vm->pci);
	vm->acpi_pm = NULL;
	vm->rtc = NULL;
	vm->i8042 = NULL;
	vm->serial = NULL;
	vm->pci = NULL;
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
