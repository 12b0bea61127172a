/* ACPI PCI hotplug for bus 0, the kind Linux's acpiphp driver handles (as
 * QEMU's "acpi-pcihp" does): a register block in I/O space that the DSDT
 * (boot/acpi.c) reads from a GPE method, and the slot bookkeeping behind
 * it. The device models themselves are the owner's (machine.c): this file
 * tells the guest that a slot filled or should be emptied, and tells the
 * owner when the guest has let go of a device.
 *
 * Registers at HOTPLUG_PORT, 32 bits each, any access width:
 *   +0x00 UP     slots that got a device since the last read (read clears)
 *   +0x04 DOWN   slots the host asked the guest to release (read-only;
 *                a slot's bit clears when it is ejected)
 *   +0x08 EJECT  write 1s: the guest has released those slots (_EJ0)
 *   +0x0c SLOTS  slots that can be hot-plugged (read-only)
 *   +0x10 SEL    bus selector: only bus 0 has slots; on any other value
 *                UP/DOWN/SLOTS read 0 and EJECT does nothing
 * Any change of UP or DOWN sets GPE0 status bit HOTPLUG_GPE (the SCI
 * follows the guest's GPE0 enable), whose _E01 method notifies the slot
 * Devices: 1 (device check) for UP bits, 3 (eject request) for DOWN bits.
 *
 * Threads: the registers are accessed on vCPU threads, the rest on the
 * event loop's thread in the worker (control commands, the eject and timer
 * callbacks), though any thread is safe. The owner's eject and done run on
 * the event loop thread with no hotplug lock held: a device is only torn
 * down there, never under a vCPU. */
#ifndef CLOISON_VMM_BUS_HOTPLUG_H
#define CLOISON_VMM_BUS_HOTPLUG_H

#include <stdbool.h>
#include <stdint.h>

#define HOTPLUG_PORT 0xae00
#define HOTPLUG_PORT_LEN 0x14
#define HOTPLUG_REG_UP 0x00
#define HOTPLUG_REG_DOWN 0x04
#define HOTPLUG_REG_EJECT 0x08
#define HOTPLUG_REG_SLOTS 0x0c
#define HOTPLUG_REG_SEL 0x10
#define HOTPLUG_GPE 1 /* GPE0 bit: \_GPE._E01 */

struct vm;
struct hotplug;
struct state_writer;
struct state_reader;

enum hotplug_outcome {
	HOTPLUG_EJECTED, /* the guest released the device; it is gone */
	HOTPLUG_PENDING, /* the timeout passed; the device stays, the request too */
};

/* The owner's side. eject runs on the event loop thread once the guest
 * wrote a slot's EJECT bit (or the VM was reset with a release pending):
 * it tears the device down. */
struct hotplug_owner {
	void (*eject)(void *owner, unsigned slot);
	/* Sets the GPE0 status bit HOTPLUG_GPE (any thread, no hotplug lock
	 * held). */
	void (*raise_gpe)(void *owner);
	void *owner;
};

/* The end of one hotplug_request_eject: on the event loop thread. */
typedef void (*hotplug_done_fn)(void *opaque, unsigned slot, enum hotplug_outcome outcome);

/* Registers the block on the VM's port bus and an eventfd and a timerfd
 * on its event loop. capable: the slots (bit n = slot n) that may take a
 * device at runtime, fixed for the VM's life because the DSDT lists them.
 * 0 or -errno. */
int hotplug_create(struct vm *vm, uint32_t capable, const struct hotplug_owner *owner,
		   struct hotplug **out);
/* Unregisters and frees; requests still waiting are dropped without their
 * done (the event loop has stopped). NULL is fine. */
void hotplug_destroy(struct hotplug *hp);

uint32_t hotplug_capable_slots(const struct hotplug *hp);
/* Slots holding a device added at runtime / with a release asked of the
 * guest and not done yet. */
uint32_t hotplug_present_slots(struct hotplug *hp);
uint32_t hotplug_releasing_slots(struct hotplug *hp);

/* A device was put in slot: marks the slot hot-added and tells the guest
 * (UP, GPE). 0, or -EINVAL when slot is not capable or already taken. */
int hotplug_announce(struct hotplug *hp, unsigned slot);

/* Asks the guest to release slot's device (DOWN, GPE). done is called once:
 * HOTPLUG_EJECTED after the owner's eject ran, or HOTPLUG_PENDING when
 * timeout_ms passed first (the request stays up; a later eject still
 * removes the device, with no further done). 0; -ENOENT when the slot has
 * no hot-added device; -EBUSY when a request for it is already waiting. */
int hotplug_request_eject(struct hotplug *hp, unsigned slot, unsigned timeout_ms,
			  hotplug_done_fn done, void *opaque);

/* VM reset: UP and SEL back to power-on; a release the guest was asked
 * for is taken as given (a rebooting guest holds no device) and ejected
 * from the event loop. */
void hotplug_reset(struct hotplug *hp);

/* The registers and the hot-added slots, as one STATE_SECTION_HOTPLUG
 * record. Restore checks every value as guest input: the slots it names
 * must be the ones this VM has hot-added devices in (the caller
 * recreated them first). 0 or -EINVAL (nothing changed). */
void hotplug_save(struct hotplug *hp, struct state_writer *w);
int hotplug_restore(struct hotplug *hp, struct state_reader *r);

/* Guest accesses to the block, as the port bus makes them (for tests and
 * the fuzz target): off relative to HOTPLUG_PORT. */
void hotplug_io_read(void *opaque, uint64_t off, void *data, unsigned len);
void hotplug_io_write(void *opaque, uint64_t off, const void *data, unsigned len);

#endif
