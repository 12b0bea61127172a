/* The worker's seccomp allow-lists as libseccomp rules (see seccomp.h and
 * docs/sandbox.md). They are compiled to BPF at build time by
 * seccomp_gen.c (into seccomp_bpf.h), so a jailed worker loads finished
 * programs and never runs libseccomp's compiler: that took 1.8 ms of every
 * sandboxed start. The lists name system calls, not libc functions: find
 * what a new code path needs with `strace -f` on a jailed run
 * (docs/sandbox.md says how). */
#include "vmm/seccomp_rules.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <termios.h>

#include "common/util.h"

/* Every thread, the disk threads too: memory, locks, signals, time, plain
 * I/O on fds it holds (a disk thread writes its queue's completion
 * eventfd), syncs, and thread creation (a new thread inherits its
 * creator's filters, so that is no way out). */
static const char *const basic_calls[] = {
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
	"preadv2", "pwritev2", "close", "fcntl", "fstat", "lseek",
	"futex", "mmap", "munmap", "mprotect", "madvise", "mremap", "brk",
	"rt_sigprocmask", "rt_sigreturn", "sigaltstack", "exit", "exit_group",
	"restart_syscall", "getpid", "gettid", "tgkill", "clock_gettime", "clock_nanosleep",
	"nanosleep", "gettimeofday", "sched_yield", "getrandom", "fdatasync", "fsync",
	"set_robust_list", "rseq", "sched_getaffinity", "seccomp", NULL,
};

/* Every thread but the disk threads: eventfds and io_uring submission,
 * sockets it holds, timers; ioctl is apart (ioctl_allowed()). Device
 * resets that a vCPU's MMIO write triggers run on the vCPU, which is why
 * these are on every such thread. */
static const char *const device_calls[] = {
	"eventfd2", "epoll_ctl", "io_uring_enter", "timerfd_settime", "timerfd_gettime",
	"sendmsg", "sendto", "recvmsg", "recvfrom",
	/* control_broadcast runs on the thread whose event it reports (a
	 * vCPU's power-off, the main thread's exit) and cuts a client it
	 * cannot write to */
	"shutdown", NULL,
};

/* vCPU threads need nothing beyond the common list. */
static const char *const vcpu_calls[] = { NULL };

/* The event loop: waiting, control and console clients, timers, and the
 * disk operations the io_uring backend's completion path does. */
static const char *const evloop_calls[] = {
	"epoll_wait", "epoll_pwait", "accept4", "shutdown", "timerfd_create", "poll", "ppoll", "getsockopt", "fallocate",
	"ftruncate",
	/* disk-switch opens the chain the daemon sent (disk_open_fds): each
	 * image is locked as at start */
	"flock", NULL,
};

/* Disk-library worker threads (virtio/blk_disk.c): images grow and
 * discard. Only basic_calls besides: no ioctl, no sockets, no eventfds,
 * no io_uring. */
static const char *const io_calls[] = { "fallocate", "ftruncate", NULL };

/* The main thread: in-place reset (punches guest RAM, reloads the kernel
 * and initrd read-only from the paths bind-mounted into the jail) and
 * teardown (image headers, locks, the control socket's name). */
static const char *const main_calls[] = {
	"fallocate", "ftruncate", "flock", "unlink", "epoll_wait", "epoll_pwait",
	"io_uring_register", "rt_sigaction", NULL,
};

/* The event loop's "save" into the jail's one writable directory
 * (--jail-dir): state and memory files created, renamed into place,
 * stale ones removed. Only with a --jail-dir: without one the root is
 * all there is, read-only, and these calls are not on any list. */
static const char *const state_write_calls[] = {
	"mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
	"getdents64", "newfstatat", "fallocate", "ftruncate", NULL,
};

static const char *const *const kind_calls[] = {
	[SECCOMP_THREAD_MAIN] = main_calls,
	[SECCOMP_THREAD_VCPU] = vcpu_calls,
	[SECCOMP_THREAD_EVLOOP] = evloop_calls,
	[SECCOMP_THREAD_IO] = io_calls,
};

/* ioctl requests, by what they are for. The filter compares the low 32
 * bits (the kernel takes the request as an unsigned int). */
#define IOCTL_KVM_RUNTIME                                                                \
	KVM_CHECK_EXTENSION, KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_GET_DEBUGREGS,              \
		KVM_SET_DEBUGREGS, KVM_GET_FPU, KVM_SET_FPU, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, \
		KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_GET_MP_STATE, KVM_SET_MP_STATE,            \
		KVM_GET_MSRS, KVM_SET_MSRS, KVM_GET_MSR_INDEX_LIST, KVM_GET_PIT2,            \
		KVM_SET_PIT2, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS,      \
		KVM_GET_TSC_KHZ, KVM_SET_TSC_KHZ, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS,  \
		KVM_GET_XCRS, KVM_SET_XCRS, KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_IOEVENTFD,     \
		KVM_IRQFD, KVM_IRQ_LINE, KVM_SIGNAL_MSI, KVM_SET_GSI_ROUTING,                \
		KVM_SET_USER_MEMORY_REGION, KVM_TRANSLATE
/* A tap's offloads follow the guest's features (a vCPU's DRIVER_OK);
 * a tap handed over at hot-plug is asked its name and header size. */
#define IOCTL_TAP TUNSETOFFLOAD, TUNSETVNETHDRSZ, TUNGETIFF
/* isatty() and the terminal a stdio console restores. */
#define IOCTL_TTY TCGETS, TCSETS, TCSETSW, TCSETSF

static const unsigned long vcpu_ioctls[] = { KVM_RUN, IOCTL_KVM_RUNTIME, IOCTL_TAP, TCGETS, 0 };
/* The event loop: devices, save (which reads every vCPU's state), hot-plug
 * (a disk image may be a block device). No KVM_RUN. */
static const unsigned long evloop_ioctls[] = { IOCTL_KVM_RUNTIME, IOCTL_TAP, IOCTL_TTY,
					       BLKGETSIZE64, 0 };
/* The main thread: in-place reset and teardown; the base filter (every
 * thread, before it narrows) has the same. Set-up's KVM calls (creating
 * the VM, its vCPUs and irqchips, CPUID, tap creation) are done by then
 * and are on no list. */
static const unsigned long main_ioctls[] = { KVM_RUN, IOCTL_KVM_RUNTIME, IOCTL_TAP, IOCTL_TTY,
					     BLKGETSIZE64, 0 };
static const unsigned long no_ioctls[] = { 0 };

static const unsigned long *const kind_ioctls[] = {
	[SECCOMP_THREAD_MAIN] = main_ioctls,
	[SECCOMP_THREAD_VCPU] = vcpu_ioctls,
	[SECCOMP_THREAD_EVLOOP] = evloop_ioctls,
	[SECCOMP_THREAD_IO] = no_ioctls,
};

static int add_ioctls(scmp_filter_ctx ctx, const unsigned long *reqs)
{
	for (; *reqs; reqs++) {
		int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
					   SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL,
						   (scmp_datum_t)(uint32_t)*reqs));
		if (ret)
			return ret;
	}
	return 0;
}

static int add_list(scmp_filter_ctx ctx, const char *const *names)
{
	for (; *names; names++) {
		int nr = seccomp_syscall_resolve_name(*names);
		int ret;

		if (nr == __NR_SCMP_ERROR) {
			fprintf(stderr, "seccomp_gen: unknown system call %s\n", *names);
			return -EINVAL;
		}
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (ret)
			return ret;
	}
	return 0;
}

/* The calls allowed only with some arguments, on every thread. */
static int add_restricted(scmp_filter_ctx ctx)
{
	int ret;

	/* glibc's pthread_create tries clone3 first, whose flags sit in
	 * memory where a filter cannot look: ENOSYS sends it to clone. */
	ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				       SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	/* pthread_setname_np and seccomp_load itself. */
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				       SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
				       SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS));
	/* fstat() is newfstatat(fd, "", AT_EMPTY_PATH) in glibc. */
	if (!ret)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(newfstatat), 1,
				       SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
	return ret;
}

/* O_TMPFILE's own bit: glibc's __O_TMPFILE includes O_DIRECTORY, and
 * masking that would refuse every opendir(). */
#define TMPFILE_BIT (O_TMPFILE & ~O_DIRECTORY)

/* Opens that may create and write a file (never O_TMPFILE). */
static int allow_write_open(scmp_filter_ctx ctx)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
				SCMP_A2(SCMP_CMP_MASKED_EQ, TMPFILE_BIT, 0));
}

/* Read-only opens: no write access, no creation, no O_TMPFILE. */
static int allow_read_only_open(scmp_filter_ctx ctx)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
				SCMP_A2(SCMP_CMP_MASKED_EQ,
					O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | TMPFILE_BIT, 0));
}

/* The main thread reopens the kernel and initrd at each in-place reset.
 * Test builds also let the event loop try, so that the debug-open-host
 * command shows the empty root (not seccomp) keeps host files away;
 * production lists do not have it. */
static bool kind_opens_files(bool base, enum seccomp_thread_kind kind)
{
#ifdef CLOISON_TEST_HOOKS
	if (kind == SECCOMP_THREAD_EVLOOP)
		return true;
#endif
	return base || kind == SECCOMP_THREAD_MAIN;
}

int seccomp_rules_build(bool base, enum seccomp_thread_kind kind, bool state_writes,
			scmp_filter_ctx *out)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	int ret;

	if (!ctx)
		return -ENOMEM;
	ret = add_list(ctx, basic_calls);
	if (!ret && (base || kind != SECCOMP_THREAD_IO))
		ret = add_list(ctx, device_calls);
	if (!ret)
		ret = add_restricted(ctx);
	for (unsigned k = 0; !ret && k < ARRAY_SIZE(kind_calls); k++)
		if (base || k == (unsigned)kind)
			ret = add_list(ctx, kind_calls[k]);
	/* The base filter's ioctls are the main thread's, a superset of the
	 * others'. */
	if (!ret)
		ret = add_ioctls(ctx, kind_ioctls[base ? SECCOMP_THREAD_MAIN : kind]);
	bool writes = state_writes && (base || kind == SECCOMP_THREAD_EVLOOP);
	if (!ret && writes)
		ret = add_list(ctx, state_write_calls);
	if (!ret && writes)
		ret = allow_write_open(ctx);
	else if (!ret && kind_opens_files(base, kind))
		ret = allow_read_only_open(ctx);
	/* The BPF is loaded by seccomp.c, which sets no_new_privs itself. */
	if (!ret)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
	if (ret) {
		seccomp_release(ctx);
		return ret;
	}
	*out = ctx;
	return 0;
}
