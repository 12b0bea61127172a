/* A whole VM's saved state on disk: guest RAM and the state records of
 * KVM, every vCPU and every device (vm_state.c).
 *
 * A save directory holds
 *   memory-<id>.bin  guest RAM, byte for byte, a sparse file (what the
 *                    guest never touched is a hole);
 *   state.bin        the records (record.h): the machine record names
 *                    the memory file and its size, then KVM's VM-wide
 *                    state, one record per vCPU and one per device.
 * state.bin is written last and atomically: it is the commit point. A
 * kill at any moment leaves the previous save (its state.bin and the
 * memory file it names) whole; memory files no state.bin names are
 * removed by the next save. */
#ifndef CLOISON_VMM_STATE_VM_STATE_H
#define CLOISON_VMM_STATE_VM_STATE_H

#include <stddef.h>
#include <stdint.h>

struct vm;
struct vm_config;

struct vm_save_stats {
	uint64_t memory_bytes; /* guest RAM */
	uint64_t data_bytes;   /* of it, written (not holes) */
	uint64_t state_bytes;  /* state.bin */
	uint64_t elapsed_us;
};

/* The fingerprint a VM's state carries: what must be the same for a
 * restore (vCPUs, memory, the device set), not paths or the command
 * line. */
uint64_t vm_state_fingerprint(const struct vm_config *cfg);

/* Saves the paused VM into dir (created if missing). The vCPUs must be
 * parked and the devices quiesced (vm_pause). 0, or -errno with err
 * saying what failed; the previous save in dir is then still whole. */
int vm_state_save(struct vm *vm, const char *dir, struct vm_save_stats *stats, char *err,
		  size_t errlen);

/* Restores a VM that vm_create() built from the same configuration (with
 * cfg.restore set: no guest loaded) from dir: checks state.bin whole
 * before anything changes, then loads guest RAM and restores KVM, the
 * vCPUs and the devices. 0, or -errno with err saying what does not fit
 * (-EBADMSG for a state that is damaged or not this VM's, never -EINVAL,
 * which the worker reports as a usage error); a failed restore leaves the
 * files in dir untouched. */
int vm_state_restore(struct vm *vm, const char *dir, char *err, size_t errlen);

/* After a lazy restore, guest RAM maps the saved memory file; this maps
 * the VM's own memory back in place (its pages are not brought along: the
 * caller is resetting the machine). 0 when RAM is not lazy. */
struct guest_mem;
int vm_state_drop_lazy(struct guest_mem *m);

#endif
