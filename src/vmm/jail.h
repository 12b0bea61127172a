/* The worker's sandbox for --jail (docs/sandbox.md): a supervisor outside,
 * the worker as PID 1 of its own PID namespace inside, in new mount, IPC,
 * UTS and network namespaces, on an empty read-only tmpfs root, as an
 * unprivileged uid/gid without capabilities, with no_new_privs, resource
 * limits and the seccomp lists of seccomp.h. */
#ifndef CLOISON_VMM_JAIL_H
#define CLOISON_VMM_JAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define JAIL_DEFAULT_UID 900000
#define JAIL_DEFAULT_GID 900000

struct jail_config {
	uid_t uid;
	gid_t gid;
	bool core_dump;		   /* leave RLIMIT_CORE alone and stay dumpable */
	const char *keep[2];	   /* files bind-mounted read-only (kernel, initrd) */
	unsigned nkeep;
	unsigned ncpus;		   /* for the address-space limit's headroom */
	const char *dir;	   /* the one writable host directory, or NULL */
	int sync_fd;		   /* jail_fork's *ready_fd: the supervisor's netns comes on it */
};

/* Phase 1, first thing in the worker (single-threaded): forks the worker
 * into a new PID namespace. Returns 0 in the worker, which is then PID 1
 * in new mount, IPC and UTS namespaces with private mount propagation; a
 * pid > 0 in the supervisor (the caller then runs jail_supervise); or
 * -errno with err set. *ready_fd (worker side) is the pipe to
 * jail_report_running. */
pid_t jail_fork(int *ready_fd, char *err, size_t errlen);
/* In the worker after jail_fork: its pid as the host sees it (0 before). */
extern pid_t jail_host_pid;

/* Supervisor: forwards SIGTERM, SIGINT and SIGHUP to the worker, writes
 * pidfile (the worker's pid as the host sees it; NULL for none) once the
 * worker reports it runs, waits for it and removes the pidfile and the
 * sockets the worker listened on (sockets[0..nsockets), each removed only
 * if it still is a socket; the jailed worker cannot reach their names). Returns the
 * worker's exit status; a worker killed by a signal is reported on stderr
 * (SIGSYS: a call outside the seccomp lists) and the supervisor dies of
 * the same signal. */
int jail_supervise(pid_t worker, int ready_fd, const char *pidfile,
		   const char *const *sockets, unsigned nsockets);

/* Phase 2, after every file, tap, KVM fd and socket is open and before any
 * vCPU runs: network namespace, tmpfs root with cfg->keep bind-mounted,
 * limits, uid/gid, capabilities, no_new_privs, the base seccomp filter.
 * 0 or -errno with err set. */
int jail_enter(const struct jail_config *cfg, char *err, size_t errlen);

/* Worker: tells the supervisor the VM runs (the pidfile can be written). */
void jail_report_running(int ready_fd);

#endif
