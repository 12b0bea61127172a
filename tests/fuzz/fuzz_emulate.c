/* libFuzzer target for the instruction decoder of src/vmm/emulate.c
 * (vcpu_emulate_failed): the bytes KVM hands over after an emulation
 * failure, the vCPU's registers and segment state, and the guest's page
 * mapping all come from the fuzz input.
 *
 * emulate.c is compiled into this target with -Dioctl=fuzz_ioctl, so its
 * KVM calls land in fuzz_ioctl() below, which answers KVM_GET_REGS,
 * KVM_GET_SREGS, KVM_TRANSLATE (gva + a fuzzed whole number of pages, valid and writable
 * as the input says), KVM_GET_XSAVE and the vCPU events from the input,
 * and can fail any call. Guest RAM is 64 KiB at 0. Checked: the decoder
 * never moves RIP further than the instruction bytes it was given, and
 * never touches memory outside guest RAM (ASan).
 *
 * Input: mode (1), insn_size (1), 15 instruction bytes, the 18 registers
 * (8 each), cr0, efer, fs.base, gs.base, cs (selector 2, l 1), the
 * translation offset (8), xsave words; then guest RAM. */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/emulate.h"
#include "vmm/vm_internal.h"

#define RAM_SIZE 0x10000u

static struct {
	uint8_t mode;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint64_t xlate;
	uint32_t xsave[4];
	uint64_t rip0;
	unsigned insn_len;
	unsigned calls;
} st;

struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static uint64_t fin_take(struct fuzz_in *in, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes && in->n; i++, in->p++, in->n--)
		v |= (uint64_t)*in->p << (8 * i);
	return v;
}

static uint8_t fin_u8(struct fuzz_in *in)
{
	return (uint8_t)fin_take(in, 1);
}

int fuzz_ioctl(int fd, unsigned long req, ...);

int fuzz_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	/* Bit 7 of the mode: the third and later calls fail. */
	if ((st.mode & 0x80) && ++st.calls > 2) {
		errno = EFAULT;
		return -1;
	}
	switch (req) {
	case KVM_GET_REGS:
		memcpy(arg, &st.regs, sizeof(st.regs));
		return 0;
	case KVM_SET_REGS: {
		const struct kvm_regs *r = arg;

		assert(r->rip - st.rip0 <= st.insn_len);
		return 0;
	}
	case KVM_GET_SREGS:
		memcpy(arg, &st.sregs, sizeof(st.sregs));
		return 0;
	case KVM_TRANSLATE: {
		struct kvm_translation *t = arg;

		/* Page-granular, as the MMU's: the offset within the page stays. */
		t->physical_address = t->linear_address + (st.xlate & ~0xfffULL);
		t->valid = (st.mode & 2) ? 1 : 0;
		t->writeable = (st.mode & 4) ? 1 : 0;
		return 0;
	}
	case KVM_GET_XSAVE: {
		struct kvm_xsave *x = arg;

		memset(x, 0, sizeof(*x));
		memcpy(x->region, st.xsave, sizeof(st.xsave));
		return 0;
	}
	case KVM_GET_VCPU_EVENTS:
		memset(arg, 0, sizeof(struct kvm_vcpu_events));
		return 0;
	case KVM_SET_XSAVE:
	case KVM_SET_VCPU_EVENTS:
		return 0;
	default:
		abort(); /* a call emulate.c is not expected to make */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vm vm;
	static struct vcpu vcpu;
	static struct kvm_run *run;
	static uint8_t *ram;
	struct fuzz_in in = { data, size };
	__u64 *regs = (__u64 *)&st.regs;

	if (!ram) {
		ram = aligned_alloc(4096, RAM_SIZE);
		run = calloc(1, sizeof(*run));
		vm.mem.nregions = 1;
		vm.mem.total = RAM_SIZE;
		vm.mem.memfd = -1;
		vm.mem.regions[0] = (struct guest_mem_region){ .gpa = 0, .size = RAM_SIZE, .hva = ram };
		vcpu.vm = &vm;
		vcpu.fd = -1;
		vcpu.run = run;
	}
	memset(&st, 0, sizeof(st));
	memset(run, 0, sizeof(*run));
	st.mode = fin_u8(&in);
	run->exit_reason = KVM_EXIT_INTERNAL_ERROR;
	run->emulation_failure.suberror = (st.mode & 8) ? fin_u8(&in) : KVM_INTERNAL_ERROR_EMULATION;
	run->emulation_failure.ndata = (st.mode & 16) ? fin_u8(&in) : 3;
	run->emulation_failure.flags = (st.mode & 32) ? fin_take(&in, 8)
			: KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES;
	run->emulation_failure.insn_size = fin_u8(&in);
	for (unsigned i = 0; i < sizeof(run->emulation_failure.insn_bytes); i++)
		run->emulation_failure.insn_bytes[i] = fin_u8(&in);
	st.insn_len = run->emulation_failure.insn_size < 15 ? run->emulation_failure.insn_size : 15;
	for (unsigned i = 0; i < sizeof(st.regs) / 8; i++)
		regs[i] = fin_take(&in, 8);
	st.rip0 = st.regs.rip;
	st.sregs.cr0 = fin_take(&in, 8);
	st.sregs.efer = fin_take(&in, 8);
	st.sregs.fs.base = fin_take(&in, 8);
	st.sregs.gs.base = fin_take(&in, 8);
	st.sregs.cs.selector = (uint16_t)fin_take(&in, 2);
	st.sregs.cs.l = fin_u8(&in) & 1;
	/* Bit 0 of the mode: a 64-bit ring-0 vCPU (what emulate.c serves). */
	if (st.mode & 1) {
		st.sregs.efer |= 1 << 10;
		st.sregs.cs.l = 1;
		st.sregs.cs.selector &= ~3;
	}
	st.xlate = fin_take(&in, 8);
	if (st.mode & 64)
		st.xlate &= 0xffff; /* mostly into RAM */
	for (unsigned i = 0; i < 4; i++)
		st.xsave[i] = (uint32_t)fin_take(&in, 4);
	memset(ram, 0, RAM_SIZE);
	memcpy(ram, in.p, in.n < RAM_SIZE ? in.n : RAM_SIZE);
	vcpu_emulate_failed(&vcpu);
	return 0;
}
