/* The CPUID table each vCPU gets: KVM's supported set with the topology
 * leaves rewritten for N vCPUs (one package, one thread per core, APIC id =
 * vCPU index). Pure, so tests run it on a made-up supported set. */
#ifndef CLOISON_VMM_CPUID_H
#define CLOISON_VMM_CPUID_H

#include <linux/kvm.h>

#define CPUID_MAX_ENTRIES 256

/* Writes into out (room for max entries) the table of vCPU index out of
 * nvcpus, built from the nsup entries KVM supports. Returns the number of
 * entries, or -E2BIG when max is too small, -EINVAL for index >= nvcpus or
 * nvcpus outside 1..255. */
int cpuid_build_vcpu(const struct kvm_cpuid_entry2 *sup, unsigned nsup, unsigned index,
		     unsigned nvcpus, struct kvm_cpuid_entry2 *out, unsigned max);

/* KVM_GET_SUPPORTED_CPUID on /dev/kvm: a malloc'd struct kvm_cpuid2 the
 * caller frees. 0 or -errno. */
int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out);

/* Bits needed to number nvcpus cores (ceil(log2(nvcpus))). */
unsigned cpuid_core_bits(unsigned nvcpus);

#endif
