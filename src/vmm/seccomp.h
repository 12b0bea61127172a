/* Per-thread seccomp allow-lists for the jailed worker (docs/sandbox.md).
 *
 * The lists stack: seccomp_install_base() puts the union of every list on
 * all threads at once (the disk library's threads already exist by then),
 * and each thread kind then narrows itself with seccomp_thread_enter().
 * A call outside a thread's lists kills the whole worker with SIGSYS
 * (SECCOMP_RET_KILL_PROCESS). */
#ifndef CLOISON_VMM_SECCOMP_H
#define CLOISON_VMM_SECCOMP_H

#include <stdbool.h>

enum seccomp_thread_kind {
	SECCOMP_THREAD_MAIN,   /* main(): vm_run, in-place reset, teardown */
	SECCOMP_THREAD_VCPU,   /* KVM_RUN and the port/MMIO handlers */
	SECCOMP_THREAD_EVLOOP, /* the device event loop: control socket, queues, taps */
	SECCOMP_THREAD_IO,     /* disk-library and other I/O helper threads */
};
#define SECCOMP_THREAD_KINDS 4

/* Installs the union of all lists on every thread of the process (TSYNC)
 * and arms seccomp_thread_enter(). Needs no_new_privs or CAP_SYS_ADMIN.
 * writable_dir: the jail has a --jail-dir, and the event loop may create,
 * write, rename and remove files (what "save" does; the mount namespace
 * keeps that to the directory). 0 or -errno. */
int seccomp_install_base(bool writable_dir);
/* Narrows the calling thread to its kind's list. A no-op returning 0
 * unless seccomp_install_base() ran (so unjailed workers call it too).
 * 0 or -errno. */
int seccomp_thread_enter(enum seccomp_thread_kind kind);
/* Whether seccomp_install_base() ran in this process. */
int seccomp_armed(void);

/* Threads made before seccomp_install_base() (the disk threads, started
 * when their image is opened) cannot be narrowed by the thread that
 * installs it: their owner registers a waker, which seccomp_install_base()
 * calls once the base filter is in. wake() returns when each of its
 * threads has called seccomp_thread_enter() (0), or -errno if one could
 * not (the jail then fails). Remove the waker before its threads go. */
struct seccomp_waker {
	int (*wake)(struct seccomp_waker *w);
	struct seccomp_waker *next;
};
void seccomp_waker_add(struct seccomp_waker *w);
void seccomp_waker_remove(struct seccomp_waker *w);

#endif
