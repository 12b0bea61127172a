/* Between machine.c and machine_hotplug.c: the hot-added devices' entry in
 * the machine's device registry. The control-socket side (add, remove,
 * list) is in machine.h. */
#ifndef CLOISON_VMM_MACHINE_HOTPLUG_H
#define CLOISON_VMM_MACHINE_HOTPLUG_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct state_writer;
struct state_file;

/* The hotplug controller, after every device of the command line: the
 * slots they left free are the hot-pluggable ones. 0 or -errno (err). */
int machine_hot_create(struct vm *vm, char *err, size_t errlen);
/* Hot-added devices reset with the VM; a release the guest was asked for
 * is taken as given. */
void machine_hot_reset(struct vm *vm);
void machine_hot_pause(struct vm *vm);
void machine_hot_resume(struct vm *vm);
/* One record per hot-added device (kind and spec), the devices' virtio
 * records, and the hotplug registers. */
void machine_hot_save(struct vm *vm, struct state_writer *w);
/* Before any device's restore: builds the hot-added devices the state
 * names, each in its slot, so that the PCI bus finds them. 0 or -errno. */
int machine_hot_recreate(struct vm *vm, const struct state_file *f, char *err, size_t errlen);
/* The registers and the hot-added devices' virtio state. 0 or -errno. */
int machine_hot_restore(struct vm *vm, const struct state_file *f, char *err, size_t errlen);
void machine_hot_destroy(struct vm *vm);
/* For the DSDT: bit n = slot n takes devices at runtime (0: no hotplug). */
uint32_t machine_hot_capable_slots(struct vm *vm);

#endif
