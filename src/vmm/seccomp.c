/* The worker's seccomp allow-lists (see seccomp.h and docs/sandbox.md).
 * The lists name system calls, not libc functions: find what a new code
 * path needs with `strace -f` on a jailed run (docs/sandbox.md says how). */
#include "vmm/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>

#include "common/log.h"
#include "common/util.h"

/* Every thread: memory, locks, signals, time, plain I/O on fds it holds,
 * eventfds and io_uring submission, KVM and tap ioctls, and thread
 * creation (a new thread inherits its creator's filters, so that is no
 * way out). Device resets that a vCPU's MMIO write triggers run here too,
 * which is why fd-closing and epoll_ctl are common. */
static const char *const common_calls[] = {
	"read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
	"preadv2", "pwritev2", "close", "fcntl", "fstat", "lseek", "ioctl",
	"futex", "mmap", "munmap", "mprotect", "madvise", "mremap", "brk",
	"rt_sigprocmask", "rt_sigreturn", "sigaltstack", "exit", "exit_group",
	"restart_syscall", "getpid", "gettid", "tgkill", "clock_gettime", "clock_nanosleep",
	"nanosleep", "gettimeofday", "sched_yield", "getrandom", "eventfd2", "epoll_ctl",
	"io_uring_enter", "fdatasync", "fsync", "timerfd_settime", "timerfd_gettime", "sendmsg", "sendto", "recvmsg", "recvfrom",
	"set_robust_list", "rseq", "sched_getaffinity", "seccomp", NULL,
};

/* vCPU threads need nothing beyond the common list. */
static const char *const vcpu_calls[] = { NULL };

/* The event loop: waiting, control and console clients, timers, and the
 * disk operations the io_uring backend's completion path does. */
static const char *const evloop_calls[] = {
	"epoll_wait", "epoll_pwait", "accept4", "shutdown", "timerfd_create", "poll", "ppoll", "getsockopt", "fallocate",
	"ftruncate", NULL,
};

/* Disk-library worker threads: images grow and discard. */
static const char *const io_calls[] = { "fallocate", "ftruncate", NULL };

/* The main thread: in-place reset (punches guest RAM, reloads the kernel
 * and initrd read-only from the paths bind-mounted into the jail) and
 * teardown (image headers, locks, the control socket's name). */
static const char *const main_calls[] = {
	"fallocate", "ftruncate", "flock", "unlink", "epoll_wait", "epoll_pwait",
	"io_uring_register", "rt_sigaction", NULL,
};

static const char *const *const kind_calls[] = {
	[SECCOMP_THREAD_MAIN] = main_calls,
	[SECCOMP_THREAD_VCPU] = vcpu_calls,
	[SECCOMP_THREAD_EVLOOP] = evloop_calls,
	[SECCOMP_THREAD_IO] = io_calls,
};

static const char *const kind_names[] = {
	[SECCOMP_THREAD_MAIN] = "main",
	[SECCOMP_THREAD_VCPU] = "vcpu",
	[SECCOMP_THREAD_EVLOOP] = "event loop",
	[SECCOMP_THREAD_IO] = "I/O",
};

/* Set once by seccomp_install_base (before the threads that read it
 * exist or while they wait to be unparked); seccomp is process state. */
static atomic_bool armed;

static int add_list(scmp_filter_ctx ctx, const char *const *names)
{
	for (; *names; names++) {
		int nr = seccomp_syscall_resolve_name(*names);
		int ret;

		if (nr == __NR_SCMP_ERROR) {
			log_error("seccomp: unknown system call %s", *names);
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

/* Read-only opens: no write access, no creation, no O_TMPFILE. */
static int allow_read_only_open(scmp_filter_ctx ctx)
{
	return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
				SCMP_A2(SCMP_CMP_MASKED_EQ,
					O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | __O_TMPFILE, 0));
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

static int build_and_load(bool base, enum seccomp_thread_kind kind)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	int ret;

	if (!ctx)
		return -ENOMEM;
	ret = add_list(ctx, common_calls);
	if (!ret)
		ret = add_restricted(ctx);
	for (unsigned k = 0; !ret && k < ARRAY_SIZE(kind_calls); k++)
		if (base || k == (unsigned)kind)
			ret = add_list(ctx, kind_calls[k]);
	if (!ret && kind_opens_files(base, kind))
		ret = allow_read_only_open(ctx);
	/* no_new_privs is set once, by the base filter; TSYNC copies it and
	 * the base filter to every thread. */
	if (!ret)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, base ? 1 : 0);
	if (!ret && base)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (!ret)
		ret = seccomp_load(ctx);
	seccomp_release(ctx);
	return ret;
}

int seccomp_install_base(void)
{
	int ret = build_and_load(true, SECCOMP_THREAD_MAIN);

	if (ret)
		return ret;
	atomic_store(&armed, true);
	return 0;
}

int seccomp_thread_enter(enum seccomp_thread_kind kind)
{
	int ret;

	if (!atomic_load(&armed))
		return 0;
	ret = build_and_load(false, kind);
	if (ret)
		log_error("seccomp: cannot install the %s thread's filter: %s", kind_names[kind],
			  strerror(-ret));
	return ret;
}

int seccomp_armed(void)
{
	return atomic_load(&armed);
}
