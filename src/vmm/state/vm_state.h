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

#include "vmm/state/record.h"

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

/* A restore, in two steps inside vm_create() (cfg.restore set: no guest
 * is loaded). vm_state_open reads state.bin from dir and checks it whole
 * against the VM's configuration and memory layout, and opens the memory
 * file it names: before guest memory is made, which with a lazy restore
 * maps that file (mem_fd) copy-on-write from the start. vm_state_restore,
 * once the vCPUs and devices exist, reads guest RAM in (eager) or keeps
 * the file (lazy), and restores KVM, the vCPUs and the devices. Each is 0,
 * or -errno with err saying what does not fit (-EBADMSG for a state that
 * is damaged or not this VM's, never -EINVAL, which the worker reports as
 * a usage error); a failed restore leaves the files in dir untouched.
 * vm_state_close frees what is left (init first, close always). */
struct vm_restore {
	struct state_file f;
	char *data; /* state.bin, which f reads */
	int mem_fd;
	uint32_t tsc_khz;
	char mem_path[4096];
};
void vm_state_init(struct vm_restore *rs);
int vm_state_open(struct vm *vm, const char *dir, struct vm_restore *rs, char *err,
		  size_t errlen);
int vm_state_restore(struct vm *vm, struct vm_restore *rs, char *err, size_t errlen);
void vm_state_close(struct vm_restore *rs);

/* After a lazy restore, guest RAM maps the saved memory file; this maps
 * the VM's own memory back in place (its pages are not brought along: the
 * caller is resetting the machine). 0 when RAM is not lazy. */
struct guest_mem;
int vm_state_drop_lazy(struct guest_mem *m);

#endif
