/* The worker's seccomp filters at run time (see seccomp.h and
 * docs/sandbox.md). The allow-lists are in seccomp_rules.c; the build
 * compiles them to BPF (seccomp_gen.c writes seccomp_bpf.h), so a worker
 * loads finished programs: no libseccomp in the worker's start, where
 * compiling five filters took 1.8 ms. */
#include "vmm/seccomp.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/seccomp_bpf.h"

static const char *const kind_names[] = {
	[SECCOMP_THREAD_MAIN] = "main",
	[SECCOMP_THREAD_VCPU] = "vcpu",
	[SECCOMP_THREAD_EVLOOP] = "event loop",
	[SECCOMP_THREAD_IO] = "I/O",
};

/* The programs of this worker: [kind], the base filter last; chosen by
 * seccomp_install_base (before any thread reads them). */
static const struct sock_fprog *progs;

/* Set once by seccomp_install_base (before the threads that read it
 * exist or while they wait to be unparked); seccomp is process state. */
static atomic_bool armed;

static int load(const struct sock_fprog *prog)
{
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) < 0 ? -errno : 0;
}

/* Owners of threads made before the base filter (seccomp_waker_add). */
static pthread_mutex_t wakers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct seccomp_waker *wakers;

void seccomp_waker_add(struct seccomp_waker *w)
{
	pthread_mutex_lock(&wakers_lock);
	w->next = wakers;
	wakers = w;
	pthread_mutex_unlock(&wakers_lock);
}

void seccomp_waker_remove(struct seccomp_waker *w)
{
	pthread_mutex_lock(&wakers_lock);
	for (struct seccomp_waker **p = &wakers; *p; p = &(*p)->next) {
		if (*p == w) {
			*p = w->next;
			break;
		}
	}
	pthread_mutex_unlock(&wakers_lock);
}

int seccomp_install_base(bool writable_dir)
{
	int ret = 0;

	progs = seccomp_bpf_progs[writable_dir ? 1 : 0];
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	/* TSYNC: every thread at once; a thread that cannot take it (one
	 * with a filter of its own already) makes the call return its id. */
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC,
			 &progs[SECCOMP_THREAD_KINDS]);
	if (r < 0)
		return -errno;
	if (r > 0)
		return -ESRCH;
	atomic_store(&armed, true);
	/* The threads that exist already narrow themselves now, before the
	 * guest runs. */
	pthread_mutex_lock(&wakers_lock);
	for (struct seccomp_waker *w = wakers; w && !ret; w = w->next)
		ret = w->wake(w);
	pthread_mutex_unlock(&wakers_lock);
	return ret;
}

int seccomp_thread_enter(enum seccomp_thread_kind kind)
{
	int ret;

	if (!atomic_load(&armed))
		return 0;
	ret = load(&progs[kind]);
	if (ret)
		log_error("seccomp: cannot install the %s thread's filter: %s", kind_names[kind],
			  strerror(-ret));
	return ret;
}

int seccomp_armed(void)
{
	return atomic_load(&armed);
}
