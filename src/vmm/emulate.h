/* Instructions KVM's emulator cannot do on hosts without hardware
 * virtualization, finished in user space (emulate.c). */
#ifndef CLOISON_VMM_EMULATE_H
#define CLOISON_VMM_EMULATE_H

struct vcpu;

/* After a KVM_EXIT_INTERNAL_ERROR: completes the instruction if it is
 * one we know, and returns 0 (the vCPU may run on); -ENOTSUP if it is
 * not, or -errno. */
int vcpu_emulate_failed(struct vcpu *vcpu);

#endif
