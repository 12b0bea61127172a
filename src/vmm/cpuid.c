#include "vmm/cpuid.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/util.h"

#define VENDOR_INTEL_EBX 0x756e6547 /* "Genu" */
#define VENDOR_AMD_EBX 0x68747541   /* "Auth" */
#define VENDOR_HYGON_EBX 0x6f677948 /* "Hygo" */

#define LEAF1_EDX_HTT (1u << 28)
#define LEAF1_ECX_HYPERVISOR (1u << 31)
#define TOPO_LEVEL_SMT 1
#define TOPO_LEVEL_CORE 2

unsigned cpuid_core_bits(unsigned nvcpus)
{
	unsigned bits = 0;

	while ((1u << bits) < nvcpus)
		bits++;
	return bits;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid_entry2 *sup, unsigned nsup,
					   uint32_t fn)
{
	for (unsigned i = 0; i < nsup; i++)
		if (sup[i].function == fn)
			return &sup[i];
	return NULL;
}

/* Leaf 0xB / 0x1F: level 0 = threads (1 per core), level 1 = cores. */
static int add_topology_leaf(struct kvm_cpuid_entry2 *out, unsigned *n, unsigned max,
			     uint32_t fn, unsigned index, unsigned nvcpus)
{
	unsigned core_bits = cpuid_core_bits(nvcpus);

	for (uint32_t sub = 0; sub < 3; sub++) {
		struct kvm_cpuid_entry2 *e;
		if (*n >= max)
			return -E2BIG;
		e = &out[(*n)++];
		memset(e, 0, sizeof(*e));
		e->function = fn;
		e->index = sub;
		e->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
		e->edx = index;
		if (sub == 0) {
			e->eax = 0;
			e->ebx = 1;
			e->ecx = sub | TOPO_LEVEL_SMT << 8;
		} else if (sub == 1) {
			e->eax = core_bits;
			e->ebx = nvcpus;
			e->ecx = sub | TOPO_LEVEL_CORE << 8;
		} else {
			e->ecx = sub; /* level type 0: no more levels */
		}
	}
	return 0;
}

static void fix_leaf1(struct kvm_cpuid_entry2 *e, unsigned index, unsigned nvcpus)
{
	unsigned logical = MIN(1u << cpuid_core_bits(nvcpus), 255u);

	e->ebx = (e->ebx & 0xffff) | logical << 16 | index << 24;
	if (nvcpus > 1)
		e->edx |= LEAF1_EDX_HTT;
	else
		e->edx &= ~LEAF1_EDX_HTT;
	e->ecx |= LEAF1_ECX_HYPERVISOR;
}

/* Deterministic cache parameters: L1/L2 per core, L3 shared by the package. */
static void fix_leaf4(struct kvm_cpuid_entry2 *e, unsigned nvcpus)
{
	unsigned cores = 1u << cpuid_core_bits(nvcpus);
	unsigned level = (e->eax >> 5) & 7;
	unsigned sharing = level >= 3 ? cores : 1;

	if ((e->eax & 0x1f) == 0)
		return; /* the null entry that ends the list */
	e->eax &= 0x3ff;
	e->eax |= (MIN(sharing, 4096u) - 1) << 14;
	e->eax |= (MIN(cores, 64u) - 1) << 26;
}

int cpuid_build_vcpu(const struct kvm_cpuid_entry2 *sup, unsigned nsup, unsigned index,
		     unsigned nvcpus, struct kvm_cpuid_entry2 *out, unsigned max)
{
	const struct kvm_cpuid_entry2 *leaf0 = find(sup, nsup, 0);
	unsigned n = 0, core_bits = cpuid_core_bits(nvcpus);
	int amd, have_b = 0, have_1f = 0;
	int ret;

	if (nvcpus < 1 || nvcpus > 255 || index >= nvcpus)
		return -EINVAL;
	amd = leaf0 && (leaf0->ebx == VENDOR_AMD_EBX || leaf0->ebx == VENDOR_HYGON_EBX);
	for (unsigned i = 0; i < nsup; i++) {
		struct kvm_cpuid_entry2 *e;

		if (sup[i].function == 0xb) {
			have_b = 1;
			continue;
		}
		if (sup[i].function == 0x1f) {
			have_1f = 1;
			continue;
		}
		if (n >= max)
			return -E2BIG;
		e = &out[n++];
		*e = sup[i];
		switch (e->function) {
		case 1:
			fix_leaf1(e, index, nvcpus);
			break;
		case 4:
			if (!amd)
				fix_leaf4(e, nvcpus);
			break;
		case 0x80000008:
			if (amd)
				e->ecx = (e->ecx & ~0xf0ffu) | core_bits << 12 | (nvcpus - 1);
			break;
		case 0x8000001e:
			e->eax = index;
			e->ebx = index & 0xff; /* core id; one thread per core */
			e->ecx = 0;
			break;
		default:
			break;
		}
	}
	/* x2APIC topology is always described when the CPU knows the leaf. */
	if (have_b || (leaf0 && leaf0->eax >= 0xb)) {
		ret = add_topology_leaf(out, &n, max, 0xb, index, nvcpus);
		if (ret)
			return ret;
	}
	if (have_1f) {
		ret = add_topology_leaf(out, &n, max, 0x1f, index, nvcpus);
		if (ret)
			return ret;
	}
	return (int)n;
}

int cpuid_get_supported(int kvm_fd, struct kvm_cpuid2 **out)
{
	/* 256 is KVM's own limit (KVM_MAX_CPUID_ENTRIES) today: one ioctl,
	 * which on a nested host is worth saving */
	for (unsigned nent = 256; nent <= 1024; nent *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		if (!c)
			return -ENOMEM;
		c->nent = nent;
		if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			*out = c;
			return 0;
		}
		free(c);
		if (errno != E2BIG)
			return -errno;
	}
	return -E2BIG;
}
