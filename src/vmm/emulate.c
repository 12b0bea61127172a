/* The instructions KVM's own emulator gives up on, done here instead.
 *
 * On a host without VT-x/AMD-V, KVM runs guest ring-0 code through its
 * instruction emulator (DESIGN.md §6), which lacks a few instructions a
 * stock Linux kernel executes early: INT3 (the kernel's INT3 self-test and
 * every text_poke of a static key), LOCK CMPXCHG16B (SLUB's lockless
 * freelists), POPCNT (bitmap weights) and CLAC/STAC (every
 * kernel entry when the CPU has SMAP). KVM reports such an instruction as an emulation failure with
 * its bytes; this file finishes it and lets the vCPU go on. Anything else
 * is still a crash, reported with the registers as before.
 *
 * Only what the guest could do itself is done: INT3 delivers #BP through
 * the guest's IDT exactly as the CPU would, and CMPXCHG16B acts on guest
 * memory the guest's page tables map (translated by KVM), atomically on
 * the host. A guest cannot reach outside its RAM through this path. */
#include "vmm/emulate.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/vm_internal.h"

#define EXC_BP 3
#define EXC_GP 13
#define RFLAGS_ZF (1ULL << 6)

/* Delivers exception nr to the guest, with RIP already where the CPU
 * would leave it (after the instruction for INT3, on it for faults). */
static int inject_exception(struct vcpu *vcpu, uint8_t nr, bool has_error, uint32_t error)
{
	struct kvm_vcpu_events ev;

	if (ioctl(vcpu->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
		return -errno;
	ev.exception.injected = 1;
	ev.exception.nr = nr;
	ev.exception.has_error_code = has_error;
	ev.exception.error_code = error;
	ev.flags = 0;
	return ioctl(vcpu->fd, KVM_SET_VCPU_EVENTS, &ev) < 0 ? -errno : 0;
}

/* Guest-virtual to host pointer for len bytes that do not cross a page
 * (the callers check), or NULL if the guest has not mapped it in RAM
 * (writable, if write). */
static void *guest_linear(struct vcpu *vcpu, uint64_t gva, uint64_t len, bool write)
{
	struct kvm_translation t = { .linear_address = gva };

	if ((gva & 4095) + len > 4096)
		return NULL;
	if (ioctl(vcpu->fd, KVM_TRANSLATE, &t) < 0 || !t.valid || (write && !t.writeable))
		return NULL;
	return guest_mem_ptr(&vcpu->vm->mem, t.physical_address, len);
}

/* Reads len (<= 8) bytes at a guest-virtual address, across a page
 * boundary if need be. */
static int read_linear(struct vcpu *vcpu, uint64_t gva, void *out, unsigned len)
{
	unsigned first = (unsigned)MIN((uint64_t)len, 4096 - (gva & 4095));
	const void *a = guest_linear(vcpu, gva, first, false);

	if (!a)
		return -EFAULT;
	memcpy(out, a, first);
	if (first < len) {
		const void *b = guest_linear(vcpu, gva + first, len - first, false);

		if (!b)
			return -EFAULT;
		memcpy((uint8_t *)out + first, b, len - first);
	}
	return 0;
}

static __u64 *gpr(struct kvm_regs *r, unsigned n)
{
	__u64 *regs[16] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp,
			       &r->rsi, &r->rdi, &r->r8,  &r->r9,  &r->r10, &r->r11,
			       &r->r12, &r->r13, &r->r14, &r->r15 };
	return regs[n & 15];
}

/* The memory operand of a ModRM byte in 64-bit mode (no RIP-relative
 * forms with a SIB, as the architecture has none). Returns the number of
 * bytes after the opcode it used (ModRM, SIB, displacement), or 0 if it
 * is a register operand or does not fit in the bytes we have. */
static unsigned modrm_address(const uint8_t *p, unsigned avail, uint8_t rex, uint64_t next_rip,
			      struct kvm_regs *r, uint64_t *ea)
{
	uint8_t modrm, mod, rm, sib;
	unsigned used = 1;
	int64_t disp = 0;

	if (avail < 1)
		return 0;
	modrm = p[0];
	mod = modrm >> 6;
	rm = modrm & 7;
	if (mod == 3)
		return 0;
	if (rm == 4) { /* SIB */
		uint8_t base, index, scale;

		if (avail < 2)
			return 0;
		sib = p[1];
		used++;
		scale = sib >> 6;
		index = ((sib >> 3) & 7) | ((rex & 2) << 2);
		base = (sib & 7) | ((rex & 1) << 3);
		*ea = index == 4 ? 0 : *gpr(r, index) << scale;
		if ((sib & 7) == 5 && mod == 0) {
			if (avail < used + 4)
				return 0;
			disp = (int32_t)(p[used] | p[used + 1] << 8 | p[used + 2] << 16 |
					 (uint32_t)p[used + 3] << 24);
			used += 4;
		} else {
			*ea += *gpr(r, base);
		}
	} else if (rm == 5 && mod == 0) { /* RIP-relative */
		if (avail < 5)
			return 0;
		disp = (int32_t)(p[1] | p[2] << 8 | p[3] << 16 | (uint32_t)p[4] << 24);
		used += 4;
		*ea = next_rip; /* fixed up by the caller once the length is known */
		*ea += (uint64_t)disp;
		return used | 0x100; /* flag: RIP-relative */
	} else {
		*ea = *gpr(r, rm | ((rex & 1) << 3));
	}
	if (mod == 1) {
		if (avail < used + 1)
			return 0;
		disp = (int8_t)p[used];
		used += 1;
	} else if (mod == 2) {
		if (avail < used + 4)
			return 0;
		disp = (int32_t)(p[used] | p[used + 1] << 8 | p[used + 2] << 16 |
				 (uint32_t)p[used + 3] << 24);
		used += 4;
	}
	*ea += (uint64_t)disp;
	return used;
}

/* Only FS and GS have a base in 64-bit mode (per-CPU data, TLS). */
static uint64_t segment_base(const struct kvm_sregs *s, int seg)
{
	return seg == 0x64 ? s->fs.base : seg == 0x65 ? s->gs.base : 0;
}

/* The host's own LOCK CMPXCHG16B on the guest's memory: atomic against
 * the guest's other vCPUs too. (gcc would call libatomic for a 16-byte
 * __atomic_compare_exchange, which a static worker does not link.) */
static bool cmpxchg16b_host(unsigned __int128 *p, unsigned __int128 *expected,
			    unsigned __int128 desired)
{
	uint64_t lo = (uint64_t)*expected, hi = (uint64_t)(*expected >> 64);
	bool ok;

	__asm__ volatile("lock cmpxchg16b %1"
			 : "=@ccz"(ok), "+m"(*p), "+a"(lo), "+d"(hi)
			 : "b"((uint64_t)desired), "c"((uint64_t)(desired >> 64))
			 : "memory");
	*expected = (unsigned __int128)hi << 64 | lo;
	return ok;
}

/* [LOCK] REX.W 0F C7 /1: CMPXCHG16B m128. */
static int emulate_cmpxchg16b(struct vcpu *vcpu, const uint8_t *insn, unsigned len,
			      unsigned at, uint8_t rex, int seg)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	uint64_t ea = 0;
	unsigned used;
	unsigned __int128 *mem, expected, desired;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	if (!(s.efer & (1 << 10)) || !s.cs.l) /* long mode, 64-bit code only */
		return -ENOTSUP;
	used = modrm_address(insn + at, len - at, rex, 0, &r, &ea);
	if (!used || ((insn[at] >> 3) & 7) != 1)
		return -ENOTSUP;
	if (used & 0x100) { /* RIP-relative: from the next instruction */
		used &= 0xff;
		ea += r.rip + at + used;
	}
	ea += segment_base(&s, seg);
	if (ea & 15)
		return inject_exception(vcpu, EXC_GP, true, 0);
	r.rip += at + used;
	mem = guest_linear(vcpu, ea, 16, true);
	if (!mem)
		return -EFAULT; /* unmapped: the crash report says where */
	expected = (unsigned __int128)r.rdx << 64 | r.rax;
	desired = (unsigned __int128)r.rcx << 64 | r.rbx;
	if (cmpxchg16b_host(mem, &expected, desired)) {
		r.rflags |= RFLAGS_ZF;
	} else {
		r.rflags &= ~RFLAGS_ZF;
		r.rax = (uint64_t)expected;
		r.rdx = (uint64_t)(expected >> 64);
	}
	return ioctl(vcpu->fd, KVM_SET_REGS, &r) < 0 ? -errno : 0;
}

/* POPCNT sets ZF and clears the other arithmetic flags. */
#define RFLAGS_ARITH 0x8d5ULL /* CF PF AF ZF SF OF */

/* F3 [REX] 0F B8 /r: POPCNT r, r/m (16, 32 or 64 bit). (KVM's emulator
 * runs TZCNT and LZCNT itself, as BSF and BSR.) */
static int emulate_popcnt(struct vcpu *vcpu, const uint8_t *insn, unsigned len, unsigned at,
			    uint8_t rex, bool opsize16, int seg)
{
	unsigned bits = (rex & 8) ? 64 : opsize16 ? 16 : 32, used, reg;
	uint64_t src = 0, result, mask = bits == 64 ? ~0ULL : (1ULL << bits) - 1, ea = 0;
	struct kvm_regs r;
	__u64 *dst;
	int ret;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0)
		return -errno;
	if (at >= len)
		return -ENOTSUP;
	reg = ((insn[at] >> 3) & 7) | ((rex & 4) << 1);
	if ((insn[at] >> 6) == 3) {
		src = *gpr(&r, (insn[at] & 7) | ((rex & 1) << 3));
		used = 1;
	} else {
		used = modrm_address(insn + at, len - at, rex, 0, &r, &ea);
		if (!used)
			return -ENOTSUP;
		if (used & 0x100) {
			used &= 0xff;
			ea += r.rip + at + used;
		}
		if (seg) {
			struct kvm_sregs s;

			if (ioctl(vcpu->fd, KVM_GET_SREGS, &s) < 0)
				return -errno;
			ea += segment_base(&s, seg);
		}
		ret = read_linear(vcpu, ea, &src, bits / 8);
		if (ret)
			return ret;
	}
	src &= mask;
	result = (uint64_t)__builtin_popcountll(src);
	r.rflags &= ~RFLAGS_ARITH;
	if (!src)
		r.rflags |= RFLAGS_ZF;
	dst = gpr(&r, reg);
	if (bits == 16)
		*dst = (*dst & ~0xffffULL) | result;
	else
		*dst = result; /* 32-bit results zero the upper half */
	r.rip += at + used;
	return ioctl(vcpu->fd, KVM_SET_REGS, &r) < 0 ? -errno : 0;
}

#define RFLAGS_AC (1ULL << 18)

/* 0F 01 CA / CB: CLAC, STAC. */
static int emulate_ac(struct vcpu *vcpu, bool set)
{
	struct kvm_regs r;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0)
		return -errno;
	r.rflags = set ? r.rflags | RFLAGS_AC : r.rflags & ~RFLAGS_AC;
	r.rip += 3;
	return ioctl(vcpu->fd, KVM_SET_REGS, &r) < 0 ? -errno : 0;
}

static int emulate_int3(struct vcpu *vcpu)
{
	struct kvm_regs r;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0)
		return -errno;
	r.rip += 1;
	if (ioctl(vcpu->fd, KVM_SET_REGS, &r) < 0)
		return -errno;
	return inject_exception(vcpu, EXC_BP, false, 0);
}

int vcpu_emulate_failed(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	const uint8_t *insn;
	unsigned len, at = 0;
	bool lock = false, rep = false, opsize16 = false;
	uint8_t rex = 0;
	int seg = 0;

	if (run->emulation_failure.suberror != KVM_INTERNAL_ERROR_EMULATION ||
	    run->emulation_failure.ndata < 3 ||
	    !(run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))
		return -ENOTSUP;
	insn = run->emulation_failure.insn_bytes;
	len = MIN(run->emulation_failure.insn_size, sizeof(run->emulation_failure.insn_bytes));
	if (len >= 1 && insn[0] == 0xcc)
		return emulate_int3(vcpu);
	if (len >= 3 && insn[0] == 0x0f && insn[1] == 0x01 && (insn[2] == 0xca || insn[2] == 0xcb))
		return emulate_ac(vcpu, insn[2] == 0xcb);
	/* Legacy prefixes, then an optional REX. */
	for (; at < len; at++) {
		if (insn[at] == 0x64 || insn[at] == 0x65)
			seg = insn[at];
		else if (insn[at] == 0xf0)
			lock = true;
		else if (insn[at] == 0xf3)
			rep = true;
		else if (insn[at] == 0x66)
			opsize16 = true;
		else if (insn[at] != 0x2e && insn[at] != 0x3e && insn[at] != 0x26 &&
			 insn[at] != 0x36)
			break;
	}
	if (at < len && (insn[at] & 0xf0) == 0x40)
		rex = insn[at++];
	if (at + 2 > len || insn[at] != 0x0f)
		return -ENOTSUP;
	if (insn[at + 1] == 0xc7 && (rex & 8) && !rep && !opsize16)
		return emulate_cmpxchg16b(vcpu, insn, len, at + 2, rex, seg);
	if (rep && !lock && insn[at + 1] == 0xb8)
		return emulate_popcnt(vcpu, insn, len, at + 2, rex, opsize16, seg);
	return -ENOTSUP;
}
