/* Assembles the machine around the KVM VM: the PCI host bridge, the
 * platform devices (hw.h), the ACPI tables and the virtio devices from the
 * command line; forwards pause/resume/reset to them. vm.c calls these; the
 * devices themselves live in bus/, hw/, boot/acpi.c and virtio/. */
#ifndef CLOISON_VMM_MACHINE_H
#define CLOISON_VMM_MACHINE_H

#include <stdbool.h>
#include <stddef.h>

struct vm;
struct state_writer;
struct state_file;

/* Creates every device; 0, -EINVAL for a bad --disk/--net (usage), other
 * -errno for host failures; err says what. */
int machine_create_devices(struct vm *vm, char *err, size_t errlen);
/* Writes the ACPI tables at LAYOUT_ACPI_BASE and sets vm->rsdp_gpa. */
int machine_build_acpi(struct vm *vm, char *err, size_t errlen);
void machine_pause(struct vm *vm);
void machine_resume(struct vm *vm);
void machine_reset_devices(struct vm *vm);
/* Every device's state records, in registry order (the VM is paused, so
 * nothing is in flight). */
void machine_save_devices(struct vm *vm, struct state_writer *w);
/* Restores every device of a VM built with the same configuration from
 * f; stops at the first record that does not fit, with err naming the
 * device. 0 or -errno. */
int machine_restore_devices(struct vm *vm, const struct state_file *f, char *err, size_t errlen);
void machine_destroy_devices(struct vm *vm);
/* 0, or -ENODEV when the machine has no ACPI power button. */
int machine_press_power_button(struct vm *vm);
/* ---- hot add and hot remove (ACPI PCI hotplug, bus/hotplug.h) ----
 * All on the event loop's thread (control commands). */

/* Adds a device at runtime: kind "disk" takes a --disk spec, "net" a
 * --net spec. The guest is told (GPE). 0 with *slot set; -EINVAL for a
 * bad spec or kind, -ENOSPC when no hotplug slot is free, -ENOTSUP when
 * the machine has no hotplug, other -errno from opening the backend; err
 * says what and what to do. */
int machine_device_add(struct vm *vm, const char *kind, const char *spec, unsigned *slot,
		       char *err, size_t errlen);
/* Asks the guest to release slot's hot-added device: done runs when the
 * guest ejected it (the device is destroyed then) or after timeout_ms
 * (the device stays attached and working). 0; -ENOENT (no device there),
 * -EPERM (a device from the command line), -EBUSY (a remove already
 * waits), with err filled. */
int machine_device_remove(struct vm *vm, unsigned slot, unsigned timeout_ms,
			  void (*done)(void *opaque, unsigned slot, bool removed), void *opaque,
			  char *err, size_t errlen);

struct machine_device_info {
	unsigned slot;
	const char *name; /* "virtio-blk0"; valid until the device goes */
	const char *kind; /* "disk", "net", "console", "rng", "bridge", "other" */
	bool hot_added;
	bool releasing; /* the guest was asked to release it */
};
/* The PCI devices in slot order; returns how many (at most max). */
unsigned machine_list_devices(struct vm *vm, struct machine_device_info *out, unsigned max);

/* Sends one event line to every control client (any thread). */
void machine_emit_event(struct vm *vm, const char *json);

#endif
