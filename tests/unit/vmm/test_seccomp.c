/* The worker's seccomp lists (src/vmm/seccomp.c), each in a forked child:
 * the base filter, then one thread kind's, then one call. A call off the
 * kind's list must kill the child with SIGSYS; a call on it must come back
 * (with EBADF: every call here is on fd -1, so none does anything).
 * ioctl is allowed by request number: the vCPU, event-loop and main lists
 * differ, the disk threads' (I/O) has none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "vmm/seccomp.h"

#define IOCTL(req) (-(long)(req) - 1) /* an ioctl request, not a system call */

/* In a child: base filter, then kind's, then call (a system call number,
 * or IOCTL(req)). Returns the child's wait status. */
static int try_call(enum seccomp_thread_kind kind, long call)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		long r;

		if (seccomp_install_base(false) || seccomp_thread_enter(kind))
			_exit(3);
		if (call < 0)
			r = syscall(SYS_ioctl, -1, (unsigned long)(-call - 1), 0);
		else
			r = syscall(call, -1, 0, 0, 0);
		/* Came back: it was allowed (and failed on fd -1). */
		_exit(r < 0 && errno == EBADF ? 0 : 4);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

static void assert_allowed(enum seccomp_thread_kind kind, long call)
{
	int st = try_call(kind, call);

	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("kind %d, call %ld: expected allowed, wait status 0x%x", kind, call, st);
}

static void assert_killed(enum seccomp_thread_kind kind, long call)
{
	int st = try_call(kind, call);

	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
		fail_msg("kind %d, call %ld: expected SIGSYS, wait status 0x%x", kind, call, st);
}

static void test_vcpu_ioctls(void **state)
{
	(void)state;
	assert_allowed(SECCOMP_THREAD_VCPU, IOCTL(KVM_RUN));
	assert_allowed(SECCOMP_THREAD_VCPU, IOCTL(KVM_GET_REGS));
	assert_allowed(SECCOMP_THREAD_VCPU, IOCTL(KVM_SIGNAL_MSI));
	/* Set-up's KVM calls are done before the filters: on no list. */
	assert_killed(SECCOMP_THREAD_VCPU, IOCTL(KVM_CREATE_VCPU));
	assert_killed(SECCOMP_THREAD_VCPU, IOCTL(KVM_CREATE_VM));
	/* A terminal's input queue is no worker's business. */
	assert_killed(SECCOMP_THREAD_VCPU, IOCTL(TIOCSTI));
	assert_killed(SECCOMP_THREAD_VCPU, IOCTL(TCSETS));
}

static void test_evloop_ioctls(void **state)
{
	(void)state;
	assert_allowed(SECCOMP_THREAD_EVLOOP, IOCTL(KVM_GET_REGS)); /* save */
	assert_allowed(SECCOMP_THREAD_EVLOOP, IOCTL(KVM_IOEVENTFD));
	assert_allowed(SECCOMP_THREAD_EVLOOP, IOCTL(TCGETS));
	assert_killed(SECCOMP_THREAD_EVLOOP, IOCTL(KVM_RUN));
	assert_killed(SECCOMP_THREAD_EVLOOP, IOCTL(KVM_CREATE_VCPU));
	assert_killed(SECCOMP_THREAD_EVLOOP, IOCTL(TIOCSTI));
}

static void test_main_ioctls(void **state)
{
	(void)state;
	assert_allowed(SECCOMP_THREAD_MAIN, IOCTL(KVM_SET_REGS)); /* in-place reset */
	assert_allowed(SECCOMP_THREAD_MAIN, IOCTL(TCSETS));	  /* the tty put back */
	assert_killed(SECCOMP_THREAD_MAIN, IOCTL(KVM_CREATE_VM));
	assert_killed(SECCOMP_THREAD_MAIN, IOCTL(TIOCSTI));
}

/* The disk threads: their own I/O calls, nothing a device model needs. */
static void test_io_thread_list(void **state)
{
	(void)state;
	assert_allowed(SECCOMP_THREAD_IO, SYS_pwrite64);
	assert_allowed(SECCOMP_THREAD_IO, SYS_fdatasync);
	assert_allowed(SECCOMP_THREAD_IO, SYS_fallocate);
	assert_killed(SECCOMP_THREAD_IO, IOCTL(KVM_RUN));
	assert_killed(SECCOMP_THREAD_IO, IOCTL(TCGETS));
	assert_killed(SECCOMP_THREAD_IO, SYS_io_uring_enter);
	assert_killed(SECCOMP_THREAD_IO, SYS_sendmsg);
	assert_killed(SECCOMP_THREAD_IO, SYS_epoll_ctl);
	/* ... which the other kinds have */
	assert_allowed(SECCOMP_THREAD_EVLOOP, SYS_io_uring_enter);
	assert_allowed(SECCOMP_THREAD_VCPU, SYS_sendmsg);
}

/* A thread made before the base filter narrows itself when the waker
 * its owner registered asks, before seccomp_install_base() returns. */
struct waiter {
	struct seccomp_waker w;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool asked, done;
	int ret;
};

static void *waiter_main(void *opaque)
{
	struct waiter *x = opaque;

	pthread_mutex_lock(&x->lock);
	while (!x->asked)
		pthread_cond_wait(&x->cv, &x->lock);
	pthread_mutex_unlock(&x->lock);
	x->ret = seccomp_thread_enter(SECCOMP_THREAD_IO);
	pthread_mutex_lock(&x->lock);
	x->done = true;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->lock);
	/* Narrowed: an ioctl kills the process. */
	ioctl(-1, TCGETS, NULL);
	return NULL;
}

static int waiter_wake(struct seccomp_waker *w)
{
	struct waiter *x = (struct waiter *)w;

	pthread_mutex_lock(&x->lock);
	x->asked = true;
	pthread_cond_broadcast(&x->cv);
	while (!x->done)
		pthread_cond_wait(&x->cv, &x->lock);
	pthread_mutex_unlock(&x->lock);
	return x->ret;
}

static void test_waker_narrows_an_earlier_thread(void **state)
{
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static struct waiter x = { .w = { .wake = waiter_wake },
					   .lock = PTHREAD_MUTEX_INITIALIZER,
					   .cv = PTHREAD_COND_INITIALIZER };
		pthread_t t;

		if (pthread_create(&t, NULL, waiter_main, &x))
			_exit(5);
		seccomp_waker_add(&x.w);
		if (seccomp_install_base(false) || !x.done || x.ret)
			_exit(3);
		/* The main thread may still make the call the thread died of. */
		pthread_join(t, NULL);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
		fail_msg("the narrowed thread's ioctl: wait status 0x%x", st);
}

static int failing_wake(struct seccomp_waker *w)
{
	(void)w;
	return -EPERM;
}

static int removed_wake(struct seccomp_waker *w)
{
	(void)w;
	_exit(6); /* a removed waker must not be called */
}

/* A waker that cannot narrow its threads fails the install (the jail);
 * a removed one (its disk closed) is not called. */
static void test_failed_waker_fails_install(void **state)
{
	pid_t pid;
	int st;

	(void)state;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static struct seccomp_waker w = { .wake = failing_wake };
		static struct seccomp_waker gone = { .wake = removed_wake };

		seccomp_waker_add(&gone);
		seccomp_waker_add(&w);
		seccomp_waker_remove(&gone);
		_exit(seccomp_install_base(false) == -EPERM ? 0 : 3);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vcpu_ioctls),
		cmocka_unit_test(test_evloop_ioctls),
		cmocka_unit_test(test_main_ioctls),
		cmocka_unit_test(test_io_thread_list),
		cmocka_unit_test(test_waker_narrows_an_earlier_thread),
		cmocka_unit_test(test_failed_waker_fails_install),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
