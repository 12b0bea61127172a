/* The state KVM holds for a VM: every vCPU's registers, FPU/XSAVE, XCRs,
 * MSRs, LAPIC, pending events, MP state and debug registers, and the
 * VM-wide in-kernel devices (PIC, IOAPIC, PIT) and clock, saved into and
 * restored from state records (record.h).
 *
 * Restore hands the values back to KVM, which checks what it can (a
 * reserved CR bit, a non-canonical base, an unknown MSR all fail the
 * ioctl); what KVM would take but the record cannot mean (a length that
 * does not match, a vCPU that is not there) is refused here first. */
#ifndef CLOISON_VMM_STATE_KVM_STATE_H
#define CLOISON_VMM_STATE_KVM_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/state/record.h"

#define KVM_STATE_VCPU_VERSION 1
#define KVM_STATE_VM_VERSION 1

/* The MSRs worth saving on this host: KVM_GET_MSR_INDEX_LIST, less the
 * ones KVM_GET_MSRS refuses on a vCPU of this VM (vcpu_fd). *list is
 * malloc'd. 0 or -errno. */
int kvm_state_msr_list(int kvm_fd, int vcpu_fd, uint32_t **list, size_t *count);

/* Appends a STATE_SECTION_VCPU record (instance = index) for the vCPU,
 * which must not be running. `xsave` says whether KVM_GET_XSAVE is
 * available (KVM_CAP_XSAVE); otherwise the FPU is saved through
 * KVM_GET_FPU. 0 or -errno (which ioctl failed is in err). */
int kvm_state_save_vcpu(struct state_writer *w, int vcpu_fd, uint32_t index, int xsave,
			const uint32_t *msrs, size_t nmsrs, char *err, size_t errlen);

/* Restores vCPU `index` from f into the (new, not yet run) vCPU. 0, or
 * -ENOENT (no record for it), -EINVAL (a record that does not hold
 * together), -errno of the ioctl KVM refused; err says which. */
int kvm_state_restore_vcpu(const struct state_file *f, int vcpu_fd, uint32_t index, int xsave,
			   char *err, size_t errlen);

/* The VM-wide parts: PIC master and slave, IOAPIC, PIT and the kvmclock
 * (STATE_SECTION_IRQCHIP, _PIT, _CLOCK). The VM must have an in-kernel
 * irqchip and PIT. 0 or -errno. */
int kvm_state_save_vm(struct state_writer *w, int vm_fd, char *err, size_t errlen);
int kvm_state_restore_vm(const struct state_file *f, int vm_fd, char *err, size_t errlen);

#endif
