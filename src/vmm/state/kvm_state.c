/* Save and restore of the state KVM holds (kvm_state.h).
 *
 * The kernel's structures (struct kvm_regs, kvm_sregs, kvm_xsave, …) are
 * a stable ABI on x86-64, so each one goes into the record as a sized
 * blob: a u32 length and the bytes. A restore refuses a blob whose length
 * is not the structure's, and leaves the values to KVM's own checks. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include <linux/kvm.h>

#include "vmm/fail.h"
#include "vmm/state/kvm_state.h"

/* vCPU record flags */
#define VCPU_XSAVE 0x1 /* the FPU part is struct kvm_xsave, not kvm_fpu */
#define VCPU_XCRS 0x2
#define VCPU_DEBUGREGS 0x4

/* The most MSRs a record may carry: KVM lists a few hundred at most. */
#define MAX_MSRS 1024

static void put_blob(struct state_writer *w, const void *p, size_t n)
{
	state_put_u32(w, (uint32_t)n);
	state_put_bytes(w, p, n);
}

/* Reads a blob that must be exactly n bytes long. */
static void get_blob(struct state_reader *r, void *p, size_t n)
{
	if (state_get_u32(r) != n) {
		state_reader_fail(r);
		memset(p, 0, n);
		return;
	}
	state_get_bytes(r, p, n);
}

static struct kvm_msrs *msrs_alloc(size_t n)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(m->entries[0]));

	if (m)
		m->nmsrs = (uint32_t)n;
	return m;
}

int kvm_state_msr_list(int kvm_fd, int vcpu_fd, uint32_t **list, size_t *count)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *all;
	struct kvm_msrs *one;
	uint32_t *keep;
	size_t n = 0;

	*list = NULL;
	*count = 0;
	/* the first call fails with E2BIG and says how many there are */
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return -errno;
	if (probe.nmsrs > MAX_MSRS)
		return -E2BIG;
	all = calloc(1, sizeof(*all) + probe.nmsrs * sizeof(uint32_t));
	keep = calloc(probe.nmsrs ? probe.nmsrs : 1, sizeof(uint32_t));
	one = msrs_alloc(1);
	if (!all || !keep || !one) {
		free(all);
		free(keep);
		free(one);
		return -ENOMEM;
	}
	all->nmsrs = probe.nmsrs;
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, all) < 0) {
		int ret = -errno;

		free(all);
		free(keep);
		free(one);
		return ret;
	}
	/* KVM lists MSRs of features this vCPU's CPUID may not have; those
	 * cannot be read back, so they are not state. */
	for (uint32_t i = 0; i < all->nmsrs; i++) {
		one->nmsrs = 1;
		one->entries[0].index = all->indices[i];
		if (ioctl(vcpu_fd, KVM_GET_MSRS, one) == 1)
			keep[n++] = all->indices[i];
	}
	free(all);
	free(one);
	*list = keep;
	*count = n;
	return 0;
}

static int save_msrs(struct state_writer *w, int vcpu_fd, const uint32_t *msrs, size_t n,
		     char *err, size_t errlen)
{
	struct kvm_msrs *m;
	int got;

	if (n > MAX_MSRS)
		return vmm_fail(err, errlen, -E2BIG, "%zu MSRs is more than a record holds", n);
	m = msrs_alloc(n);
	if (!m)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		m->entries[i].index = msrs[i];
	got = ioctl(vcpu_fd, KVM_GET_MSRS, m);
	if (got < 0 || (size_t)got != n) {
		int ret = got < 0 ? -errno : -EIO;

		free(m);
		return vmm_fail(err, errlen, ret, "KVM_GET_MSRS: read %d of %zu (MSR %#x)", got, n,
			    got >= 0 && (size_t)got < n ? msrs[got] : 0);
	}
	state_put_u32(w, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		state_put_u32(w, m->entries[i].index);
		state_put_u64(w, m->entries[i].data);
	}
	free(m);
	return 0;
}

#define GET(fd, req, p, what)                                                            \
	do {                                                                             \
		if (ioctl(fd, req, p) < 0)                                               \
			return vmm_fail(err, errlen, -errno, "%s: %s", what, strerror(errno)); \
	} while (0)

int kvm_state_save_vcpu(struct state_writer *w, int vcpu_fd, uint32_t index, int xsave,
			const uint32_t *msrs, size_t nmsrs, char *err, size_t errlen)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp;
	struct kvm_debugregs dbg;
	uint32_t flags = 0;
	void *fpu;
	size_t fpu_len = xsave ? sizeof(struct kvm_xsave) : sizeof(struct kvm_fpu);
	int ret;

	GET(vcpu_fd, KVM_GET_REGS, &regs, "KVM_GET_REGS");
	GET(vcpu_fd, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	GET(vcpu_fd, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
	GET(vcpu_fd, KVM_GET_VCPU_EVENTS, &events, "KVM_GET_VCPU_EVENTS");
	GET(vcpu_fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE");
	memset(&xcrs, 0, sizeof(xcrs));
	if (ioctl(vcpu_fd, KVM_GET_XCRS, &xcrs) == 0)
		flags |= VCPU_XCRS;
	memset(&dbg, 0, sizeof(dbg));
	if (ioctl(vcpu_fd, KVM_GET_DEBUGREGS, &dbg) == 0)
		flags |= VCPU_DEBUGREGS;
	fpu = calloc(1, fpu_len);
	if (!fpu)
		return -ENOMEM;
	if (ioctl(vcpu_fd, xsave ? KVM_GET_XSAVE : KVM_GET_FPU, fpu) < 0) {
		ret = -errno;
		free(fpu);
		return vmm_fail(err, errlen, ret, "%s: %s", xsave ? "KVM_GET_XSAVE" : "KVM_GET_FPU",
			    strerror(-ret));
	}
	if (xsave)
		flags |= VCPU_XSAVE;

	state_begin(w, STATE_SECTION_VCPU, index, KVM_STATE_VCPU_VERSION);
	state_put_u32(w, flags);
	put_blob(w, &regs, sizeof(regs));
	put_blob(w, &sregs, sizeof(sregs));
	put_blob(w, fpu, fpu_len);
	put_blob(w, &xcrs, sizeof(xcrs));
	ret = save_msrs(w, vcpu_fd, msrs, nmsrs, err, errlen);
	put_blob(w, &lapic, sizeof(lapic));
	put_blob(w, &events, sizeof(events));
	put_blob(w, &mp, sizeof(mp));
	put_blob(w, &dbg, sizeof(dbg));
	state_end(w);
	free(fpu);
	return ret ? ret : w->err;
}

/* Reads the MSR list of a record into a kvm_msrs for KVM_SET_MSRS. */
static struct kvm_msrs *get_msrs(struct state_reader *r)
{
	uint32_t n = state_get_u32(r);
	struct kvm_msrs *m;

	if (n > MAX_MSRS) {
		state_reader_fail(r);
		return NULL;
	}
	m = msrs_alloc(n);
	if (!m) {
		state_reader_fail(r);
		return NULL;
	}
	for (uint32_t i = 0; i < n; i++) {
		m->entries[i].index = state_get_u32(r);
		m->entries[i].data = state_get_u64(r);
	}
	return m;
}

#define MSR_TSC_DEADLINE 0x6e0

/* Takes IA32_TSC_DEADLINE out of m (if it is there) into a list of its
 * own; NULL when m has none (or on allocation failure, when it stays). */
static struct kvm_msrs *split_tsc_deadline(struct kvm_msrs *m)
{
	for (uint32_t i = 0; i < m->nmsrs; i++) {
		struct kvm_msrs *d;

		if (m->entries[i].index != MSR_TSC_DEADLINE)
			continue;
		d = msrs_alloc(1);
		if (!d)
			return NULL;
		d->entries[0] = m->entries[i];
		m->entries[i] = m->entries[--m->nmsrs];
		return d;
	}
	return NULL;
}

static int set_msrs(int vcpu_fd, uint32_t index, struct kvm_msrs *m, char *err, size_t errlen)
{
	int ret = ioctl(vcpu_fd, KVM_SET_MSRS, m);

	if (ret >= 0 && (uint32_t)ret == m->nmsrs)
		return 0;
	return vmm_fail(err, errlen, ret < 0 ? -errno : -EINVAL,
		    "vCPU %u: KVM refused saved MSR %#x (%d of %u taken)", index,
		    ret >= 0 && (uint32_t)ret < m->nmsrs ? m->entries[ret].index : 0, ret,
		    m->nmsrs);
}

#define SET(fd, req, p, what)                                                            \
	do {                                                                             \
		if (ioctl(fd, req, p) < 0) {                                             \
			ret = vmm_fail(err, errlen, -errno, "vCPU %u: KVM refused the saved %s: %s", \
				   index, what, strerror(errno));                        \
			goto out;                                                        \
		}                                                                        \
	} while (0)

int kvm_state_restore_vcpu(const struct state_file *f, int vcpu_fd, uint32_t index, int xsave,
			   char *err, size_t errlen)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	struct kvm_mp_state mp;
	struct kvm_debugregs dbg;
	struct kvm_msrs *msrs = NULL, *deadline = NULL;
	struct state_reader r;
	uint32_t flags;
	void *fpu = NULL;
	size_t fpu_len;
	int ret;

	if (state_file_find(f, STATE_SECTION_VCPU, index, &r))
		return vmm_fail(err, errlen, -ENOENT, "the state has no record for vCPU %u", index);
	if (r.version != KVM_STATE_VCPU_VERSION)
		return vmm_fail(err, errlen, -EINVAL, "vCPU %u: record version %u (this build reads %u)",
			    index, r.version, KVM_STATE_VCPU_VERSION);
	flags = state_get_u32(&r);
	if (flags & ~(uint32_t)(VCPU_XSAVE | VCPU_XCRS | VCPU_DEBUGREGS))
		return vmm_fail(err, errlen, -EINVAL, "vCPU %u: unknown flags %#x", index, flags);
	if (!!(flags & VCPU_XSAVE) != !!xsave)
		return vmm_fail(err, errlen, -EINVAL, "vCPU %u: the FPU state was saved %s XSAVE; this "
			    "host's KVM has %s", index, flags & VCPU_XSAVE ? "with" : "without",
			    xsave ? "it" : "none");
	fpu_len = xsave ? sizeof(struct kvm_xsave) : sizeof(struct kvm_fpu);
	fpu = calloc(1, fpu_len);
	if (!fpu)
		return -ENOMEM;
	get_blob(&r, &regs, sizeof(regs));
	get_blob(&r, &sregs, sizeof(sregs));
	get_blob(&r, fpu, fpu_len);
	get_blob(&r, &xcrs, sizeof(xcrs));
	msrs = get_msrs(&r);
	get_blob(&r, &lapic, sizeof(lapic));
	get_blob(&r, &events, sizeof(events));
	get_blob(&r, &mp, sizeof(mp));
	get_blob(&r, &dbg, sizeof(dbg));
	if (state_reader_done(&r)) {
		ret = vmm_fail(err, errlen, -EINVAL, "vCPU %u: the record does not hold together "
			   "(a field of the wrong size, or bytes missing or left over)", index);
		goto out;
	}
	/* The order KVM needs: special registers (CR0/CR4/EFER, APIC base)
	 * before what depends on them, the LAPIC before the events and MP
	 * state that refer to it. */
	SET(vcpu_fd, KVM_SET_SREGS, &sregs, "special registers");
	SET(vcpu_fd, KVM_SET_REGS, &regs, "registers");
	SET(vcpu_fd, xsave ? KVM_SET_XSAVE : KVM_SET_FPU, fpu, "FPU state");
	if (flags & VCPU_XCRS)
		SET(vcpu_fd, KVM_SET_XCRS, &xcrs, "XCRs");
	deadline = split_tsc_deadline(msrs);
	ret = set_msrs(vcpu_fd, index, msrs, err, errlen);
	if (ret)
		goto out;
	SET(vcpu_fd, KVM_SET_LAPIC, &lapic, "LAPIC");
	SET(vcpu_fd, KVM_SET_VCPU_EVENTS, &events, "pending events");
	SET(vcpu_fd, KVM_SET_MP_STATE, &mp, "MP state");
	if (flags & VCPU_DEBUGREGS)
		SET(vcpu_fd, KVM_SET_DEBUGREGS, &dbg, "debug registers");
	/* KVM drops a TSC deadline written while the LAPIC timer is not in
	 * TSC-deadline mode: it goes last, as QEMU puts it */
	ret = deadline ? set_msrs(vcpu_fd, index, deadline, err, errlen) : 0;
out:
	free(deadline);
	free(msrs);
	free(fpu);
	return ret;
}

int kvm_state_save_vm(struct state_writer *w, int vm_fd, char *err, size_t errlen)
{
	struct kvm_irqchip chips[3];
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;

	for (uint32_t i = 0; i < 3; i++) {
		memset(&chips[i], 0, sizeof(chips[i]));
		chips[i].chip_id = i; /* KVM_IRQCHIP_PIC_MASTER, _SLAVE, _IOAPIC */
		GET(vm_fd, KVM_GET_IRQCHIP, &chips[i], "KVM_GET_IRQCHIP");
	}
	GET(vm_fd, KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
	memset(&clock, 0, sizeof(clock));
	GET(vm_fd, KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK");

	state_begin(w, STATE_SECTION_IRQCHIP, 0, KVM_STATE_VM_VERSION);
	for (int i = 0; i < 3; i++)
		put_blob(w, &chips[i], sizeof(chips[i]));
	state_end(w);
	state_begin(w, STATE_SECTION_PIT, 0, KVM_STATE_VM_VERSION);
	put_blob(w, &pit, sizeof(pit));
	state_end(w);
	state_begin(w, STATE_SECTION_CLOCK, 0, KVM_STATE_VM_VERSION);
	state_put_u64(w, clock.clock);
	state_end(w);
	return w->err;
}

static int vm_section(const struct state_file *f, uint32_t type, const char *what,
		      struct state_reader *r, char *err, size_t errlen)
{
	if (state_file_find(f, type, 0, r))
		return vmm_fail(err, errlen, -ENOENT, "the state has no %s record", what);
	if (r->version != KVM_STATE_VM_VERSION)
		return vmm_fail(err, errlen, -EINVAL, "%s record version %u (this build reads %u)",
			    what, r->version, KVM_STATE_VM_VERSION);
	return 0;
}

int kvm_state_restore_vm(const struct state_file *f, int vm_fd, char *err, size_t errlen)
{
	struct kvm_irqchip chips[3];
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct state_reader r;
	int ret;

	ret = vm_section(f, STATE_SECTION_IRQCHIP, "interrupt controller", &r, err, errlen);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < 3; i++) {
		get_blob(&r, &chips[i], sizeof(chips[i]));
		if (chips[i].chip_id != i)
			state_reader_fail(&r);
	}
	if (state_reader_done(&r))
		return vmm_fail(err, errlen, -EINVAL, "the interrupt controller record does not hold "
			    "together");
	ret = vm_section(f, STATE_SECTION_PIT, "PIT", &r, err, errlen);
	if (ret)
		return ret;
	get_blob(&r, &pit, sizeof(pit));
	if (state_reader_done(&r))
		return vmm_fail(err, errlen, -EINVAL, "the PIT record does not hold together");
	ret = vm_section(f, STATE_SECTION_CLOCK, "clock", &r, err, errlen);
	if (ret)
		return ret;
	memset(&clock, 0, sizeof(clock));
	clock.clock = state_get_u64(&r);
	if (state_reader_done(&r))
		return vmm_fail(err, errlen, -EINVAL, "the clock record does not hold together");

	for (int i = 0; i < 3; i++)
		if (ioctl(vm_fd, KVM_SET_IRQCHIP, &chips[i]) < 0)
			return vmm_fail(err, errlen, -errno, "KVM refused the saved %s: %s",
				    i < 2 ? "PIC" : "IOAPIC", strerror(errno));
	if (ioctl(vm_fd, KVM_SET_PIT2, &pit) < 0)
		return vmm_fail(err, errlen, -errno, "KVM refused the saved PIT: %s", strerror(errno));
	if (ioctl(vm_fd, KVM_SET_CLOCK, &clock) < 0)
		return vmm_fail(err, errlen, -errno, "KVM refused the saved clock: %s",
			    strerror(errno));
	return 0;
}
