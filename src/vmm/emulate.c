/* The instructions KVM's own emulator gives up on, done here instead.
 *
 * On a host without VT-x/AMD-V, KVM runs guest ring-0 code through its
 * instruction emulator (DESIGN.md §6), which lacks a few instructions a
 * stock Linux kernel executes early: INT3 (the kernel's INT3 self-test and
 * every text_poke of a static key), LOCK CMPXCHG16B (SLUB's lockless
 * freelists), POPCNT (bitmap weights), CLAC/STAC (every kernel entry
 * when the CPU has SMAP), FWAIT and LDMXCSR/STMXCSR (FPU set-up and
 * context switches). KVM reports such an instruction as an emulation failure with
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

/* Copies len bytes between buf and a guest-virtual address, across a
 * page boundary if need be (write: into the guest). */
static int copy_linear(struct vcpu *vcpu, uint64_t gva, void *buf, unsigned len, bool write)
{
	for (unsigned done = 0; done < len;) {
		unsigned n = (unsigned)MIN((uint64_t)(len - done), 4096 - ((gva + done) & 4095));
		uint8_t *g = guest_linear(vcpu, gva + done, n, write);

		if (!g)
			return -EFAULT;
		if (write)
			memcpy(g, (uint8_t *)buf + done, n);
		else
			memcpy((uint8_t *)buf + done, g, n);
		done += n;
	}
	return 0;
}

/* General-purpose register n (0-15, the encoding's order). */
static __u64 *gpr(struct kvm_regs *r, unsigned n)
{
	__u64 *regs[16] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp,
			    &r->rsi, &r->rdi, &r->r8,  &r->r9,  &r->r10, &r->r11,
			    &r->r12, &r->r13, &r->r14, &r->r15 };
	return regs[n & 15];
}

static uint64_t gpr_value(const struct kvm_regs *r, unsigned n)
{
	return *gpr((struct kvm_regs *)r, n);
}

/* One instruction as KVM handed it over, prefixes parsed, with the vCPU's
 * registers (written back by finish()). */
struct insn {
	const uint8_t *b;
	unsigned len;
	unsigned op;	/* index of the opcode's first byte after 0F, or of a one-byte opcode */
	uint8_t rex;
	int seg;	/* 0x64 (FS), 0x65 (GS) or 0 */
	bool lock, rep, opsize16;
	struct kvm_regs r;
	struct kvm_sregs s;
};

static uint32_t le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The ModRM byte at b[at]: its reg field (with REX.R). */
static unsigned modrm_reg(const struct insn *in, unsigned at)
{
	return ((in->b[at] >> 3) & 7) | ((in->rex & 4) << 1);
}

/* The linear address of the memory operand whose ModRM byte is b[at], in
 * 64-bit mode; *end is where the instruction ends. -ENOTSUP for a
 * register operand or bytes we do not have. Only FS and GS have a base in
 * 64-bit mode (per-CPU data, TLS). */
static int mem_operand(const struct insn *in, unsigned at, uint64_t *ea, unsigned *end)
{
	uint8_t modrm, mod, rm;
	unsigned p = at + 1;
	uint64_t a;

	if (at >= in->len)
		return -ENOTSUP;
	modrm = in->b[at];
	mod = modrm >> 6;
	rm = modrm & 7;
	if (mod == 3)
		return -ENOTSUP;
	if (rm == 4) { /* SIB */
		uint8_t sib, index, base;

		if (p >= in->len)
			return -ENOTSUP;
		sib = in->b[p++];
		index = ((sib >> 3) & 7) | ((in->rex & 2) << 2);
		base = (sib & 7) | ((in->rex & 1) << 3);
		a = index == 4 ? 0 : gpr_value(&in->r, index) << (sib >> 6);
		if ((sib & 7) == 5 && mod == 0) {
			if (p + 4 > in->len)
				return -ENOTSUP;
			a += (uint64_t)(int64_t)(int32_t)le32(in->b + p);
			p += 4;
		} else {
			a += gpr_value(&in->r, base);
		}
	} else if (rm == 5 && mod == 0) { /* RIP-relative: from the next instruction */
		if (p + 4 > in->len)
			return -ENOTSUP;
		*end = p + 4;
		*ea = in->r.rip + *end + (uint64_t)(int64_t)(int32_t)le32(in->b + p);
		goto segment;
	} else {
		a = gpr_value(&in->r, rm | ((in->rex & 1) << 3));
	}
	if (mod == 1) {
		if (p + 1 > in->len)
			return -ENOTSUP;
		a += (uint64_t)(int64_t)(int8_t)in->b[p++];
	} else if (mod == 2) {
		if (p + 4 > in->len)
			return -ENOTSUP;
		a += (uint64_t)(int64_t)(int32_t)le32(in->b + p);
		p += 4;
	}
	*ea = a;
	*end = p;
segment:
	*ea += in->seg == 0x64 ? in->s.fs.base : in->seg == 0x65 ? in->s.gs.base : 0;
	return 0;
}

/* The instruction is done: RIP past its end bytes, registers back. */
static int finish(struct vcpu *vcpu, struct insn *in, unsigned end)
{
	in->r.rip += end;
	return ioctl(vcpu->fd, KVM_SET_REGS, &in->r) < 0 ? -errno : 0;
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
static int emulate_cmpxchg16b(struct vcpu *vcpu, struct insn *in)
{
	unsigned __int128 *mem, expected, desired;
	unsigned at = in->op + 1, end;
	uint64_t ea;

	if (modrm_reg(in, at) != 1 || mem_operand(in, at, &ea, &end))
		return -ENOTSUP;
	if (ea & 15)
		return inject_exception(vcpu, EXC_GP, true, 0);
	mem = guest_linear(vcpu, ea, 16, true);
	if (!mem)
		return -EFAULT; /* unmapped: the crash report says where */
	expected = (unsigned __int128)in->r.rdx << 64 | in->r.rax;
	desired = (unsigned __int128)in->r.rcx << 64 | in->r.rbx;
	if (cmpxchg16b_host(mem, &expected, desired)) {
		in->r.rflags |= RFLAGS_ZF;
	} else {
		in->r.rflags &= ~RFLAGS_ZF;
		in->r.rax = (uint64_t)expected;
		in->r.rdx = (uint64_t)(expected >> 64);
	}
	return finish(vcpu, in, end);
}

/* POPCNT sets ZF and clears the other arithmetic flags. */
#define RFLAGS_ARITH 0x8d5ULL /* CF PF AF ZF SF OF */

/* F3 [REX] 0F B8 /r: POPCNT r, r/m (16, 32 or 64 bit). (KVM's emulator
 * runs TZCNT and LZCNT itself, as BSF and BSR.) */
static int emulate_popcnt(struct vcpu *vcpu, struct insn *in)
{
	unsigned bits = (in->rex & 8) ? 64 : in->opsize16 ? 16 : 32, at = in->op + 1, end;
	uint64_t src = 0, ea, result;
	__u64 *dst;
	int ret;

	if (at >= in->len)
		return -ENOTSUP;
	if ((in->b[at] >> 6) == 3) {
		src = *gpr(&in->r, (in->b[at] & 7) | ((in->rex & 1) << 3));
		end = at + 1;
	} else {
		if (mem_operand(in, at, &ea, &end))
			return -ENOTSUP;
		ret = copy_linear(vcpu, ea, &src, bits / 8, false);
		if (ret)
			return ret;
	}
	if (bits < 64)
		src &= (1ULL << bits) - 1;
	result = (uint64_t)__builtin_popcountll(src);
	in->r.rflags &= ~RFLAGS_ARITH;
	if (!src)
		in->r.rflags |= RFLAGS_ZF;
	dst = gpr(&in->r, modrm_reg(in, at));
	if (bits == 16)
		*dst = (*dst & ~0xffffULL) | result;
	else
		*dst = result; /* 32-bit results zero the upper half */
	return finish(vcpu, in, end);
}

#define EXC_NM 7
#define EXC_MF 16
#define CR0_MP (1ULL << 1)
#define CR0_TS (1ULL << 3)
#define CR0_NE (1ULL << 5)
#define FSW_ES (1u << 7)
#define RFLAGS_AC (1ULL << 18)
#define MXCSR_VALID 0xffffu /* the bits LDMXCSR accepts (MXCSR_MASK) */
/* The x87/SSE state comes from the XSAVE image (KVM_GET_XSAVE): KVM_GET_FPU's
 * copy is not kept up to date by every KVM. Indexes into its region[]: */
#define XSAVE_MXCSR 6	     /* byte 24 */
#define XSAVE_XSTATE_BV 128 /* byte 512, XSTATE_BV's low half */
#define XSTATE_SSE 2

/* [REX] 0F AE /2 and /3: LDMXCSR m32, STMXCSR m32. */

static int emulate_mxcsr(struct vcpu *vcpu, struct insn *in, bool load)
{
	unsigned at = in->op + 1, end;
	struct kvm_xsave xs;
	uint32_t v;
	uint64_t ea;
	int ret;

	if (mem_operand(in, at, &ea, &end))
		return -ENOTSUP;
	if ((in->s.cr0 & CR0_TS))
		return inject_exception(vcpu, EXC_NM, false, 0);
	if (ioctl(vcpu->fd, KVM_GET_XSAVE, &xs) < 0)
		return -errno;
	if (load) {
		ret = copy_linear(vcpu, ea, &v, 4, false);
		if (ret)
			return ret;
		if (v & ~MXCSR_VALID)
			return inject_exception(vcpu, EXC_GP, true, 0);
		xs.region[XSAVE_MXCSR] = v;
		/* KVM takes MXCSR only with SSE in XSTATE_BV (byte 512); the
		 * XMM registers in the image are the current ones (zero when
		 * the bit was clear, which is their init state). */
		xs.region[XSAVE_XSTATE_BV] |= XSTATE_SSE;
		if (ioctl(vcpu->fd, KVM_SET_XSAVE, &xs) < 0)
			return -errno;
	} else {
		ret = copy_linear(vcpu, ea, &xs.region[XSAVE_MXCSR], 4, true);
		if (ret)
			return ret;
	}
	return finish(vcpu, in, end);
}

/* 9B: FWAIT. #NM if CR0.MP and CR0.TS; #MF if an unmasked x87 exception
 * is pending (FSW.ES, bytes 2-3 of the XSAVE image) and CR0.NE asks for
 * #MF; else nothing. */
static int emulate_fwait(struct vcpu *vcpu, struct insn *in)
{
	struct kvm_xsave xs;

	if ((in->s.cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS))
		return inject_exception(vcpu, EXC_NM, false, 0);
	if (ioctl(vcpu->fd, KVM_GET_XSAVE, &xs) < 0)
		return -errno;
	if (((xs.region[0] >> 16) & FSW_ES) && (in->s.cr0 & CR0_NE))
		return inject_exception(vcpu, EXC_MF, false, 0);
	return finish(vcpu, in, in->op + 1);
}

/* CC: INT3, a trap: #BP with RIP after the instruction. */
static int emulate_int3(struct vcpu *vcpu, struct insn *in)
{
	int ret = finish(vcpu, in, in->op + 1);

	return ret ? ret : inject_exception(vcpu, EXC_BP, false, 0);
}

/* The instruction's prefixes, then which of ours it is. */
static int dispatch(struct vcpu *vcpu, struct insn *in)
{
	const uint8_t *b = in->b;
	unsigned at = 0;

	for (; at < in->len; at++) {
		if (b[at] == 0x64 || b[at] == 0x65)
			in->seg = b[at];
		else if (b[at] == 0xf0)
			in->lock = true;
		else if (b[at] == 0xf3)
			in->rep = true;
		else if (b[at] == 0x66)
			in->opsize16 = true;
		else if (b[at] != 0x2e && b[at] != 0x3e && b[at] != 0x26 && b[at] != 0x36)
			break;
	}
	if (at < in->len && (b[at] & 0xf0) == 0x40)
		in->rex = b[at++];
	if (at >= in->len)
		return -ENOTSUP;
	in->op = at;
	if (b[at] == 0xcc && at == 0)
		return emulate_int3(vcpu, in);
	if (b[at] == 0x9b && at == 0)
		return emulate_fwait(vcpu, in);
	if (b[at] != 0x0f || at + 1 >= in->len)
		return -ENOTSUP;
	in->op = at + 1;
	switch (b[at + 1]) {
	case 0x01: /* CLAC, STAC */
		if (at + 2 < in->len && (b[at + 2] == 0xca || b[at + 2] == 0xcb) && at == 0) {
			in->r.rflags = b[at + 2] == 0xcb ? in->r.rflags | RFLAGS_AC
							 : in->r.rflags & ~RFLAGS_AC;
			return finish(vcpu, in, 3);
		}
		return -ENOTSUP;
	case 0xc7:
		if (at + 2 < in->len && modrm_reg(in, at + 2) == 1 && (in->rex & 8) && !in->rep &&
		    !in->opsize16)
			return emulate_cmpxchg16b(vcpu, in);
		return -ENOTSUP;
	case 0xb8:
		if (in->rep && !in->lock)
			return emulate_popcnt(vcpu, in);
		return -ENOTSUP;
	case 0xae:
		if (at + 2 < in->len && !in->rep && !in->lock && !in->opsize16 &&
		    (in->b[at + 2] >> 6) != 3 &&
		    (((in->b[at + 2] >> 3) & 7) == 2 || ((in->b[at + 2] >> 3) & 7) == 3))
			return emulate_mxcsr(vcpu, in, ((in->b[at + 2] >> 3) & 7) == 2);
		return -ENOTSUP;
	default:
		return -ENOTSUP;
	}
}

int vcpu_emulate_failed(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	struct insn in = { 0 };

	if (run->emulation_failure.suberror != KVM_INTERNAL_ERROR_EMULATION ||
	    run->emulation_failure.ndata < 3 ||
	    !(run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))
		return -ENOTSUP;
	in.b = run->emulation_failure.insn_bytes;
	in.len = MIN(run->emulation_failure.insn_size, sizeof(run->emulation_failure.insn_bytes));
	if (ioctl(vcpu->fd, KVM_GET_REGS, &in.r) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &in.s) < 0)
		return -errno;
	/* 64-bit ring-0 code only: that is what KVM's emulator runs on these
	 * hosts (ring 3 runs on the CPU), and it spares us privilege and
	 * user/supervisor page checks that KVM_TRANSLATE does not make. */
	if (!(in.s.efer & (1 << 10)) || !in.s.cs.l || (in.s.cs.selector & 3))
		return -ENOTSUP;
	return dispatch(vcpu, &in);
}
