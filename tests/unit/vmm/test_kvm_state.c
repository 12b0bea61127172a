/* vCPU and VM state through KVM (src/vmm/state/kvm_state.c), on real KVM:
 * a real-mode loop counts in memory and reports each count on an I/O
 * port; its state and memory are saved after 5 counts and restored into
 * a second, new VM, which goes on counting from 6. Damaged records are
 * refused before KVM sees them. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "common/crc32c.h"
#include "vmm/state/kvm_state.h"

#define MEM_SIZE 0x10000
#define CODE 0x1000
#define COUNTER 0x500
#define PORT 0x10
#define MSR_SYSENTER_ESP 0x175

/* loop: mov ax,[0x500]; inc ax; mov [0x500],ax; out 0x10,al; jmp loop */
static const uint8_t program[] = { 0xa1, 0x00, 0x05, 0x40, 0xa3, 0x00, 0x05,
				   0xe6, PORT, 0xeb, 0xf5 };

struct test_vm {
	int kvm, vm, vcpu;
	uint8_t *mem;
	struct kvm_run *run;
	size_t run_size;
};

static int kvm_fd = -1;

static void vm_make(struct test_vm *t)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	struct kvm_userspace_memory_region region = { 0 };
	struct kvm_cpuid2 *cpuid;

	memset(t, 0, sizeof(*t));
	t->kvm = kvm_fd;
	t->vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	assert_true(t->vm >= 0);
	assert_int_equal(ioctl(t->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL), 0);
	assert_int_equal(ioctl(t->vm, KVM_CREATE_IRQCHIP, 0), 0);
	assert_int_equal(ioctl(t->vm, KVM_CREATE_PIT2, &pit), 0);
	t->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(t->mem != MAP_FAILED);
	region.memory_size = MEM_SIZE;
	region.userspace_addr = (uintptr_t)t->mem;
	assert_int_equal(ioctl(t->vm, KVM_SET_USER_MEMORY_REGION, &region), 0);
	t->vcpu = ioctl(t->vm, KVM_CREATE_VCPU, 0);
	assert_true(t->vcpu >= 0);
	/* MSRs follow the CPUID the vCPU is given: the same on both VMs */
	cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(cpuid->entries[0]));
	assert_non_null(cpuid);
	cpuid->nent = 256;
	assert_int_equal(ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid), 0);
	assert_int_equal(ioctl(t->vcpu, KVM_SET_CPUID2, cpuid), 0);
	free(cpuid);
	t->run_size = (size_t)ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	t->run = mmap(NULL, t->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, t->vcpu, 0);
	assert_true(t->run != MAP_FAILED);
}

static void vm_free(struct test_vm *t)
{
	munmap(t->run, t->run_size);
	munmap(t->mem, MEM_SIZE);
	close(t->vcpu);
	close(t->vm);
}

/* Runs until the next OUT to PORT and returns the byte written. */
static int next_count(struct test_vm *t)
{
	for (int i = 0; i < 100; i++) {
		assert_int_equal(ioctl(t->vcpu, KVM_RUN, 0), 0);
		if (t->run->exit_reason == KVM_EXIT_IO && t->run->io.port == PORT &&
		    t->run->io.direction == KVM_EXIT_IO_OUT)
			return ((uint8_t *)t->run)[t->run->io.data_offset];
		if (t->run->exit_reason != KVM_EXIT_INTR)
			fail_msg("unexpected exit %u", t->run->exit_reason);
	}
	fail_msg("no OUT in 100 runs");
	return -1;
}

static void start_real_mode(struct test_vm *t)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = CODE, .rflags = 2 };
	struct {
		struct kvm_msrs m;
		struct kvm_msr_entry e;
	} msr = { .m.nmsrs = 1, .e = { .index = MSR_SYSENTER_ESP, .data = 0xabcdef12 } };

	memcpy(t->mem + CODE, program, sizeof(program));
	assert_int_equal(ioctl(t->vcpu, KVM_GET_SREGS, &sregs), 0);
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	sregs.ds.base = 0;
	sregs.ds.selector = 0;
	assert_int_equal(ioctl(t->vcpu, KVM_SET_SREGS, &sregs), 0);
	regs.rbx = 0x1122334455667788ULL; /* untouched by the loop: must survive */
	assert_int_equal(ioctl(t->vcpu, KVM_SET_REGS, &regs), 0);
	assert_int_equal(ioctl(t->vcpu, KVM_SET_MSRS, &msr), 1);
}

static int has_xsave(void)
{
	return ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
}

/* Saves VM a (state and memory) into a finished writer. */
static void save(struct test_vm *a, struct state_writer *w, const void **data, size_t *len)
{
	uint32_t *msrs;
	size_t n;
	char err[256] = "";

	assert_int_equal(kvm_state_msr_list(kvm_fd, a->vcpu, &msrs, &n), 0);
	assert_true(n > 0);
	state_writer_init(w, 1);
	if (kvm_state_save_vm(w, a->vm, err, sizeof(err)) ||
	    kvm_state_save_vcpu(w, a->vcpu, 0, has_xsave(), msrs, n, err, sizeof(err)))
		fail_msg("save: %s", err);
	free(msrs);
	assert_int_equal(state_writer_finish(w, data, len), 0);
}

static void test_restore_goes_on_counting(void **state)
{
	struct test_vm a, b;
	struct state_writer w;
	struct state_file f;
	const void *data;
	size_t len;
	char err[256] = "";

	vm_make(&a);
	start_real_mode(&a);
	for (int i = 1; i <= 5; i++)
		assert_int_equal(next_count(&a), i);
	save(&a, &w, &data, &len);

	vm_make(&b);
	memcpy(b.mem, a.mem, MEM_SIZE);
	assert_int_equal(state_file_parse(&f, data, len, 1, err, sizeof(err)), 0);
	if (kvm_state_restore_vm(&f, b.vm, err, sizeof(err)) ||
	    kvm_state_restore_vcpu(&f, b.vcpu, 0, has_xsave(), err, sizeof(err)))
		fail_msg("restore: %s", err);
	/* The saved vCPU had just written count 5 and stopped on its OUT;
	 * the restored one continues after it. */
	for (int i = 6; i <= 10; i++)
		assert_int_equal(next_count(&b), i);
	assert_int_equal(b.mem[COUNTER], 10);
	/* the original, unaffected, is still at 5 and goes on by itself */
	assert_int_equal(next_count(&a), 6);

	struct kvm_regs regs;
	assert_int_equal(ioctl(b.vcpu, KVM_GET_REGS, &regs), 0);
	assert_true(regs.rbx == 0x1122334455667788ULL);
	struct {
		struct kvm_msrs m;
		struct kvm_msr_entry e;
	} msr = { .m.nmsrs = 1, .e = { .index = MSR_SYSENTER_ESP } };
	assert_int_equal(ioctl(b.vcpu, KVM_GET_MSRS, &msr), 1);
	assert_true(msr.e.data == 0xabcdef12);

	state_writer_free(&w);
	vm_free(&a);
	vm_free(&b);
}

/* A file that carries a vCPU record of the wrong shape. */
static void bad_vcpu_record(struct state_writer *w, uint32_t flags, uint32_t regs_len)
{
	uint8_t zero[4096] = { 0 };

	state_writer_init(w, 1);
	state_begin(w, STATE_SECTION_VCPU, 0, KVM_STATE_VCPU_VERSION);
	state_put_u32(w, flags);
	state_put_u32(w, regs_len);
	state_put_bytes(w, zero, regs_len);
	state_end(w);
}

static void test_bad_records_refused(void **state)
{
	struct test_vm b;
	struct state_writer w;
	struct state_file f;
	const void *data;
	size_t len;
	char err[256] = "";
	int xsave = has_xsave();

	vm_make(&b);
	/* no record for vCPU 0 */
	state_writer_init(&w, 1);
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	assert_int_equal(state_file_parse(&f, data, len, 0, NULL, 0), 0);
	assert_int_equal(kvm_state_restore_vcpu(&f, b.vcpu, 0, xsave, err, sizeof(err)), -ENOENT);
	assert_int_equal(kvm_state_restore_vm(&f, b.vm, err, sizeof(err)), -ENOENT);
	state_writer_free(&w);

	/* a register block of the wrong size */
	bad_vcpu_record(&w, xsave ? 1 : 0, sizeof(struct kvm_regs) - 8);
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	assert_int_equal(state_file_parse(&f, data, len, 0, NULL, 0), 0);
	assert_int_equal(kvm_state_restore_vcpu(&f, b.vcpu, 0, xsave, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "does not hold together"));
	state_writer_free(&w);

	/* unknown flags, and an FPU kind this host does not have */
	bad_vcpu_record(&w, 0x80, sizeof(struct kvm_regs));
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	assert_int_equal(state_file_parse(&f, data, len, 0, NULL, 0), 0);
	assert_int_equal(kvm_state_restore_vcpu(&f, b.vcpu, 0, xsave, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unknown flags"));
	assert_int_equal(kvm_state_restore_vcpu(&f, b.vcpu, 0, !xsave, err, sizeof(err)), -EINVAL);
	state_writer_free(&w);

	/* a well-formed record whose values KVM refuses: CR0.PG without PE */
	struct test_vm a;
	vm_make(&a);
	start_real_mode(&a);
	save(&a, &w, &data, &len);
	uint8_t *copy = malloc(len);
	assert_non_null(copy);
	memcpy(copy, data, len);
	state_writer_free(&w);
	/* find the sregs blob: after the record's flags and the regs blob */
	assert_int_equal(state_file_parse(&f, copy, len, 0, NULL, 0), 0);
	struct state_reader r;
	assert_int_equal(state_file_find(&f, STATE_SECTION_VCPU, 0, &r), 0);
	size_t sregs_at = (size_t)(r.p - copy) + 4 + 4 + sizeof(struct kvm_regs) + 4;
	struct kvm_sregs sregs;
	memcpy(&sregs, copy + sregs_at, sizeof(sregs));
	sregs.cr0 = (sregs.cr0 | 0x80000000ULL) & ~1ULL;
	memcpy(copy + sregs_at, &sregs, sizeof(sregs));
	/* the file's CRC now fails: a damaged file is refused outright */
	assert_int_equal(state_file_parse(&f, copy, len, 0, err, sizeof(err)), -EINVAL);
	/* and with the CRC made good, KVM's own check refuses the value */
	uint32_t c = crc32c(0, copy, len - 4);
	memcpy(copy + len - 4, &c, 4);
	assert_int_equal(state_file_parse(&f, copy, len, 0, NULL, 0), 0);
	int ret = kvm_state_restore_vcpu(&f, b.vcpu, 0, xsave, err, sizeof(err));
	assert_true(ret < 0);
	assert_non_null(strstr(err, "special registers"));
	free(copy);
	vm_free(&a);
	vm_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restore_goes_on_counting),
		cmocka_unit_test(test_bad_records_refused),
	};

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0) {
		/* the facility itself is missing: say so and skip */
		printf("SKIP: /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
