/* The CPUID table each vCPU gets: KVM's supported set with the topology
 * leaves rewritten for N vCPUs (one package, one thread per core, APIC id =
 * vCPU index). Pure, so tests run it on a made-up supported set. */
#ifndef CLOISON_VMM_CPUID_H
#define CLOISON_VMM_CPUID_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

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

/* The same through the cache file at path (cpuid_cache.c): the file's
 * answer when it was made for this /dev/kvm and kernel, else KVM's, which
 * then replaces the file. path NULL: KVM's. 0 or -errno. */
int cpuid_get_supported_cached(int kvm_fd, const char *path, struct kvm_cpuid2 **out);

/* What a cache file must match: the /dev/kvm node kvm_fd is open on and
 * a hash of uname's release and version. */
struct cpuid_cache_key {
	uint64_t dev, ino, ctime_sec, ctime_nsec;
	uint32_t kernel, zero;
};
int cpuid_cache_key(int kvm_fd, struct cpuid_cache_key *key);
/* The file for c (c->nent <= CPUID_MAX_ENTRIES) is cpuid_cache_size(nent)
 * bytes; decode gives 0 and a malloc'd table, -ESTALE for another key,
 * -EINVAL for anything else than such a file, -ENOMEM. */
size_t cpuid_cache_size(unsigned nent);
void cpuid_cache_encode(const struct cpuid_cache_key *key, const struct kvm_cpuid2 *c, void *buf);
int cpuid_cache_decode(const void *buf, size_t len, const struct cpuid_cache_key *key,
		       struct kvm_cpuid2 **out);

/* Bits needed to number nvcpus cores (ceil(log2(nvcpus))). */
unsigned cpuid_core_bits(unsigned nvcpus);

#endif
