/* vCPUs: one thread each, running KVM_RUN and dispatching exits to the
 * port and MMIO buses. Crashes (triple fault, emulation failure, internal
 * error, failed entry) print the registers and ask the VM to stop. */
#include "vmm/vm_internal.h"
#include "vmm/emulate.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/boot/boot.h"
#include "vmm/bus/bus.h"
#include "vmm/cpuid.h"
#include "vmm/layout.h"
#include "vmm/seccomp.h"

#define CR0_PE 0x1ULL
#define CR0_MP 0x2ULL
#define CR0_ET 0x10ULL
#define CR0_NE 0x20ULL
#define CR0_PG 0x80000000ULL
#define CR4_PAE 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_EXTINT 0x7
#define APIC_MODE_NMI 0x4

struct msr_init {
	uint32_t index;
	uint64_t value;
	const char *name;
};

/* The MSRs a freshly reset CPU gets from us; each is set only when KVM
 * lists it (KVM_GET_MSR_INDEX_LIST). */
#define MSR_IA32_TSC 0x10
static const struct msr_init boot_msrs[] = {
	{ 0x174, 0, "IA32_SYSENTER_CS" },
	{ 0x175, 0, "IA32_SYSENTER_ESP" },
	{ 0x176, 0, "IA32_SYSENTER_EIP" },
	{ 0xc0000081, 0, "STAR" },
	{ 0xc0000082, 0, "LSTAR" },
	{ 0xc0000083, 0, "CSTAR" },
	{ 0xc0000084, 0, "SYSCALL_MASK" },
	{ 0xc0000102, 0, "KERNEL_GS_BASE" },
	{ MSR_IA32_TSC, 0, "IA32_TSC" },
	{ 0x1a0, 1, "IA32_MISC_ENABLE" },	    /* fast strings */
	{ 0x2ff, (1 << 11) | 6, "MTRRdefType" }, /* MTRRs on, default write-back */
};

static void kick_handler(int sig)
{
	(void)sig;
}

int vcpu_install_kick_signal(int sig)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: KVM_RUN must return EINTR. */
	if (sigaction(sig, &sa, NULL) < 0)
		return -errno;
	return 0;
}

void vcpu_kick(struct vcpu *vcpu)
{
	/* immediate_exit covers a kick that lands just before KVM_RUN. */
	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	pthread_kill(vcpu->thread, vcpu->vm->kick_signal);
}

static bool msr_listed(const struct vm *vm, uint32_t index)
{
	for (unsigned i = 0; i < vm->msr_list->nmsrs; i++)
		if (vm->msr_list->indices[i] == index)
			return true;
	return false;
}

/* Sets the boot MSRs KVM lists; a refused one is reported by name and the
 * rest are still set. IA32_TSC only when with_tsc (see vcpu_reset). */
static int set_boot_msrs(struct vcpu *vcpu, bool with_tsc)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[ARRAY_SIZE(boot_msrs)];
	} m;
	const struct msr_init *which[ARRAY_SIZE(boot_msrs)];
	unsigned n = 0, done = 0;

	for (unsigned i = 0; i < ARRAY_SIZE(boot_msrs); i++) {
		if (!msr_listed(vcpu->vm, boot_msrs[i].index))
			continue;
		if (boot_msrs[i].index == MSR_IA32_TSC && !with_tsc)
			continue;
		which[n++] = &boot_msrs[i];
	}
	while (done < n) {
		int ret;
		memset(&m, 0, sizeof(m));
		m.hdr.nmsrs = n - done;
		for (unsigned i = done; i < n; i++) {
			m.e[i - done].index = which[i]->index;
			m.e[i - done].data = which[i]->value;
		}
		ret = ioctl(vcpu->fd, KVM_SET_MSRS, &m);
		if (ret < 0)
			return -errno;
		done += (unsigned)ret;
		if (done < n) {
			if (vcpu->index == 0)
				log_warn("KVM refused MSR %s (0x%x); continuing without it",
					 which[done]->name, which[done]->index);
			done++;
		}
	}
	return 0;
}

/* The LAPIC of every reset (vcpu_reset sets it; a restore sets the
 * saved one): KVM's power-on state with LINT0 and LINT1 wired as a PC
 * BIOS leaves them. */
static int setup_lapic(struct vcpu *vcpu)
{
	struct kvm_lapic_state *l = &vcpu->lapic0;
	uint32_t v;

	if (ioctl(vcpu->fd, KVM_GET_LAPIC, l) < 0)
		return -errno;
	/* LINT0 = ExtINT (the PIC), LINT1 = NMI, as a PC BIOS leaves them. */
	memcpy(&v, &l->regs[APIC_LVT0], 4);
	v = (v & ~0x700u & ~0x10000u) | APIC_MODE_EXTINT << 8;
	memcpy(&l->regs[APIC_LVT0], &v, 4);
	memcpy(&v, &l->regs[APIC_LVT1], 4);
	v = (v & ~0x700u & ~0x10000u) | APIC_MODE_NMI << 8;
	memcpy(&l->regs[APIC_LVT1], &v, 4);
	return 0;
}

static int setup_cpuid(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;
	struct kvm_cpuid2 *c;
	int n;

	c = calloc(1, sizeof(*c) + CPUID_MAX_ENTRIES * sizeof(c->entries[0]));
	if (!c)
		return -ENOMEM;
	n = cpuid_build_vcpu(vm->cpuid_supported->entries, vm->cpuid_supported->nent,
			     vcpu->index, vm->cfg.ncpus, c->entries, CPUID_MAX_ENTRIES);
	if (n < 0) {
		free(c);
		return n;
	}
	c->nent = (uint32_t)n;
	vcpu->cpuid = c;
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0)
		return -errno;
	return 0;
}

int vcpu_create(struct vm *vm, unsigned index, char *err, size_t errlen)
{
	struct vcpu *vcpu = &vm->vcpus[index];
	int mmap_size, ret;
	const char *step;

	vcpu->vm = vm;
	vcpu->index = index;
	step = "KVM_CREATE_VCPU";
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (vcpu->fd < 0)
		goto fail_errno;
	step = "KVM_GET_VCPU_MMAP_SIZE";
	mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < (int)sizeof(struct kvm_run))
		goto fail_errno;
	step = "mapping kvm_run";
	vcpu->run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		goto fail_errno;
	}
	vcpu->run_size = (size_t)mmap_size;
	step = "KVM_SET_CPUID2";
	ret = setup_cpuid(vcpu);
	if (ret)
		goto fail;
	step = "KVM_GET_LAPIC";
	ret = setup_lapic(vcpu);
	if (ret)
		goto fail;
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0 &&
	    ioctl(vcpu->fd, KVM_GET_XCRS, &vcpu->xcrs0) == 0)
		vcpu->have_xcrs = true;
	return 0;
fail_errno:
	ret = -errno;
fail:
	snprintf(err, errlen, "vCPU %u: %s: %s", index, step, strerror(-ret));
	return ret;
}

static void set_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, int code64, int db)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->l = (uint8_t)code64;
	s->db = (uint8_t)db;
	s->g = 1;
}

static int set_boot_registers(struct vcpu *vcpu)
{
	const struct boot_entry *b = &vcpu->vm->boot;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	int long_mode = b->mode == BOOT_ENTRY_LINUX64;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return -errno;
	set_segment(&sregs.cs, BOOT_GDT_CS, 0xb, long_mode, !long_mode);
	set_segment(&sregs.ds, BOOT_GDT_DS, 0x3, 0, 1);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	memset(&sregs.tr, 0, sizeof(sregs.tr));
	sregs.tr.selector = BOOT_GDT_TSS;
	sregs.tr.limit = 0x67;
	sregs.tr.type = 0xb;
	sregs.tr.present = 1;
	sregs.gdt.base = LAYOUT_GDT;
	sregs.gdt.limit = BOOT_GDT_ENTRIES * 8 - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_MP;
	sregs.cr2 = 0;
	sregs.cr3 = 0;
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (long_mode) {
		sregs.cr0 |= CR0_PG;
		sregs.cr3 = LAYOUT_PAGE_TABLES;
		sregs.cr4 = CR4_PAE;
		sregs.efer = EFER_LME | EFER_LMA;
	}
	memset(sregs.interrupt_bitmap, 0, sizeof(sregs.interrupt_bitmap));
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return -errno;

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = b->rip;
	regs.rsi = b->rsi;
	regs.rbx = b->rbx;
	regs.rsp = LAYOUT_PVH_START_INFO; /* a scratch stack below the boot data */
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return -errno;
	return 0;
}

int vcpu_reset(struct vcpu *vcpu, bool in_place)
{
	struct kvm_mp_state mp = {
		.mp_state = vcpu->index == 0 ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED,
	};
	struct kvm_vcpu_events events;
	struct kvm_fpu fpu;
	int ret;

	memset(&events, 0, sizeof(events));
	if (ioctl(vcpu->fd, KVM_SET_VCPU_EVENTS, &events) < 0)
		return -errno;
	if (ioctl(vcpu->fd, KVM_SET_LAPIC, &vcpu->lapic0) < 0)
		return -errno;
	if (vcpu->have_xcrs && ioctl(vcpu->fd, KVM_SET_XCRS, &vcpu->xcrs0) < 0)
		return -errno;
	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	if (ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0)
		return -errno;
	/* The TSC is zeroed only at power-on. Rewinding it on an in-place
	 * reset, one vCPU after another while KVM treats each host write of
	 * 0 as a resynchronisation, intermittently left a 2-vCPU test guest
	 * halted for good in its TSC-deadline sleep during AP bring-up (about
	 * 1 reset in 90 under load; none in 270 without the rewind). A guest
	 * must not assume the TSC restarts at 0 (kexec does not either). */
	ret = set_boot_msrs(vcpu, !in_place);
	if (ret)
		return ret;
	if (vcpu->index == 0) {
		ret = set_boot_registers(vcpu);
		if (ret)
			return ret;
	}
	if (ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp) < 0)
		return -errno;
	vcpu->reset_gen = vcpu->vm->reset_gen;
	return 0;
}

static void print_segment(FILE *f, const char *name, const struct kvm_segment *s)
{
	fprintf(f, "  %-3s sel=%04x base=%016llx limit=%08x type=%x dpl=%u p=%u db=%u l=%u g=%u\n",
		name, s->selector, (unsigned long long)s->base, s->limit, s->type, s->dpl,
		s->present, s->db, s->l, s->g);
}

/* The bytes at the faulting instruction, when its address translates. */
static void print_code(FILE *f, struct vcpu *vcpu, uint64_t linear)
{
	struct kvm_translation tr = { .linear_address = linear };
	const uint8_t *code;

	if (ioctl(vcpu->fd, KVM_TRANSLATE, &tr) < 0 || !tr.valid)
		return;
	code = guest_mem_ptr(&vcpu->vm->mem, tr.physical_address, 16);
	if (!code)
		return;
	fprintf(f, "  code at rip (phys %016llx):", (unsigned long long)tr.physical_address);
	for (unsigned i = 0; i < 16; i++)
		fprintf(f, " %02x", code[i]);
	fprintf(f, "\n");
}

void vcpu_dump_registers(struct vcpu *vcpu)
{
	struct kvm_regs r;
	struct kvm_sregs s;
	char buf[4096];
	FILE *f = fmemopen(buf, sizeof(buf), "w");

	if (!f)
		return;
	fprintf(f, "vCPU %u registers:\n", vcpu->index);
	memset(&r, 0, sizeof(r));
	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) == 0) {
		fprintf(f, "  rip=%016llx rsp=%016llx rflags=%016llx\n", r.rip, r.rsp, r.rflags);
		fprintf(f, "  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n", r.rax, r.rbx,
			r.rcx, r.rdx);
		fprintf(f, "  rsi=%016llx rdi=%016llx rbp=%016llx\n", r.rsi, r.rdi, r.rbp);
		fprintf(f, "  r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n", r.r8, r.r9,
			r.r10, r.r11);
		fprintf(f, "  r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n", r.r12, r.r13,
			r.r14, r.r15);
	}
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &s) == 0) {
		fprintf(f, "  cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx efer=%016llx\n",
			s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
		print_segment(f, "cs", &s.cs);
		print_segment(f, "ss", &s.ss);
		print_segment(f, "ds", &s.ds);
		print_segment(f, "tr", &s.tr);
		fprintf(f, "  gdt base=%016llx limit=%04x  idt base=%016llx limit=%04x\n",
			s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
		print_code(f, vcpu, s.cs.base + r.rip);
	}
	fclose(f);
	buf[sizeof(buf) - 1] = 0;
	fputs(buf, stderr);
}

static void crash(struct vcpu *vcpu, const char *what)
{
	char detail[160];

	snprintf(detail, sizeof(detail), "%s on vCPU %u", what, vcpu->index);
	fprintf(stderr, "cloison-vmm: guest crash: %s\n", detail);
	vcpu_dump_registers(vcpu);
	vm_request_stop(vcpu->vm, VM_STOP_CRASH, detail);
}

static void handle_internal_error(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	char what[96];

	if (vcpu_emulate_failed(vcpu) == 0)
		return;
	switch (run->internal.suberror) {
	case KVM_INTERNAL_ERROR_EMULATION:
		snprintf(what, sizeof(what), "KVM emulation failure");
		break;
	case KVM_INTERNAL_ERROR_SIMUL_EX:
		snprintf(what, sizeof(what), "KVM internal error (exception while delivering one)");
		break;
	case KVM_INTERNAL_ERROR_DELIVERY_EV:
		snprintf(what, sizeof(what), "KVM internal error (event delivery)");
		break;
	default:
		snprintf(what, sizeof(what), "KVM internal error %u", run->internal.suberror);
		break;
	}
	if (run->internal.ndata > 0) {
		fprintf(stderr, "cloison-vmm: internal error data:");
		for (unsigned i = 0; i < run->internal.ndata && i < 16; i++)
			fprintf(stderr, " %llx", (unsigned long long)run->internal.data[i]);
		fprintf(stderr, "\n");
	}
	crash(vcpu, what);
}

static void handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *p = (uint8_t *)run + run->io.data_offset;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

	for (uint32_t i = 0; i < run->io.count; i++) {
		io_bus_access(vcpu->vm->pio, run->io.port, p, run->io.size, is_write);
		p += run->io.size;
	}
}

static void handle_mmio(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	unsigned len = run->mmio.len;

	if (len == 1 || len == 2 || len == 4 || len == 8)
		io_bus_access(vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, len,
			      run->mmio.is_write);
	else if (!run->mmio.is_write)
		memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
}

static void handle_system_event(struct vcpu *vcpu)
{
	switch (vcpu->run->system_event.type) {
	case KVM_SYSTEM_EVENT_SHUTDOWN:
		vm_request_stop(vcpu->vm, VM_STOP_POWEROFF, "guest");
		break;
	case KVM_SYSTEM_EVENT_RESET:
		vm_request_stop(vcpu->vm, VM_STOP_RESET, "guest");
		break;
	default:
		crash(vcpu, "system crash event");
		break;
	}
}

/* Returns false when the thread must end. */
static bool park_if_asked(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;
	bool keep = true;

	if (!atomic_load(&vm->want_park))
		return true;
	/* KVM finishes a PIO/MMIO read (register write, RIP advance) only on
	 * the next KVM_RUN; do that now with immediate_exit, so that a reset
	 * or register dump while parked sees consistent state. */
	if (vcpu->io_pending) {
		__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		ioctl(vcpu->fd, KVM_RUN, 0);
		vcpu->io_pending = false;
	}
	pthread_mutex_lock(&vm->lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->cond);
	while (atomic_load(&vm->want_park) && !vm->quit)
		pthread_cond_wait(&vm->cond, &vm->lock);
	vm->parked--;
	if (vm->quit)
		keep = false;
	else
		__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->lock);
	return keep;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%u", vcpu->index);
	pthread_setname_np(pthread_self(), name);
	/* Before the first KVM_RUN: the guest never runs on an unfiltered
	 * thread. On failure the stop request keeps this vCPU parked. */
	if (seccomp_thread_enter(SECCOMP_THREAD_VCPU))
		vm_request_stop(vm, VM_STOP_VMM_ERROR, "cannot install a vCPU's seccomp filter");
	while (park_if_asked(vcpu)) {
		struct kvm_run *run = vcpu->run;

		vcpu->io_pending = false;
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			char detail[128];
			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(detail, sizeof(detail), "KVM_RUN failed on vCPU %u: %s",
				 vcpu->index, strerror(errno));
			vm_request_stop(vm, VM_STOP_VMM_ERROR, detail);
			continue;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			handle_io(vcpu);
			vcpu->io_pending = true;
			break;
		case KVM_EXIT_MMIO:
			handle_mmio(vcpu);
			vcpu->io_pending = true;
			break;
		case KVM_EXIT_HLT:
		case KVM_EXIT_INTR:
		case KVM_EXIT_IRQ_WINDOW_OPEN:
			break;
		case KVM_EXIT_SHUTDOWN:
			crash(vcpu, "triple fault");
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			handle_internal_error(vcpu);
			break;
		case KVM_EXIT_FAIL_ENTRY: {
			char what[96];
			snprintf(what, sizeof(what), "VM entry failure (reason 0x%llx)",
				 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			crash(vcpu, what);
			break;
		}
		case KVM_EXIT_SYSTEM_EVENT:
			handle_system_event(vcpu);
			break;
		default: {
			char what[64];
			snprintf(what, sizeof(what), "unexpected KVM exit %u", run->exit_reason);
			crash(vcpu, what);
			break;
		}
		}
	}
	return NULL;
}

int vcpu_start_thread(struct vcpu *vcpu)
{
	int ret = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);

	if (ret)
		return -ret;
	vcpu->thread_started = true;
	return 0;
}

void vcpu_destroy(struct vcpu *vcpu)
{
	if (vcpu->run)
		munmap(vcpu->run, vcpu->run_size);
	if (vcpu->fd >= 0)
		close(vcpu->fd);
	free(vcpu->cpuid);
}
