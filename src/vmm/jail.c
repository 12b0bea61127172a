/* The --jail sandbox (see jail.h and docs/sandbox.md). Two phases because
 * the kernel wants some steps single-threaded and others after set-up:
 * a PID namespace only takes effect for children and a mount namespace
 * cannot be entered by a threaded process (the disk library starts its
 * threads while devices are created), so jail_fork does those first; the
 * network namespace must come after the taps are opened, the new root
 * after every path was opened, and the uid switch after the last
 * privileged step, so jail_enter does those last. */
#include "vmm/jail.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <seccomp.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/seccomp.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#include <stdatomic.h>

/* LeakSanitizer's exit check needs ptrace and /proc, which the jail takes
 * away (seccomp kills its prctl), and a tracer thread, which the
 * supervisor cannot clone once the worker's PID namespace is gone: both
 * skip it in sanitizer builds. */
static atomic_bool lsan_off;

int __lsan_is_turned_off(void)
{
	return atomic_load(&lsan_off);
}
#endif

/* Where the new root is built: any directory works, the mount on it is
 * private to the worker's mount namespace. */
#define JAIL_BUILD_DIR "/tmp"
#define MiB_ (1ULL << 20)

static int jail_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int jail_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < errlen)
		snprintf(err + n, errlen - (size_t)n, ": %s", strerror(-ret));
	return ret;
}

/* ---- phase 1: fork into a PID namespace ---------------------------- */

pid_t jail_host_pid;

pid_t jail_fork(int *ready_fd, char *err, size_t errlen)
{
	int p[2], ret;
	pid_t pid;

	/* Both ways: the supervisor sends the network namespace it made, the
	 * worker reports that the VM runs. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0)
		return jail_fail(err, errlen, -errno, "--jail: creating a socket pair");
	if (unshare(CLONE_NEWPID) < 0) {
		ret = -errno;
		close(p[0]);
		close(p[1]);
		return jail_fail(err, errlen, ret,
				 "--jail: creating a PID namespace (needs root or CAP_SYS_ADMIN; "
				 "--no-sandbox runs without)");
	}
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		close(p[0]);
		close(p[1]);
		return jail_fail(err, errlen, ret, "--jail: fork");
	}
	if (pid > 0) {
		close(p[1]);
		*ready_fd = p[0];
		return pid;
	}
	close(p[0]);
	*ready_fd = p[1];
	/* The worker must not outlive its supervisor (a kill -9 of the pid
	 * the daemon knows ends the VM too). */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		return jail_fail(err, errlen, -errno, "--jail: PR_SET_PDEATHSIG");
	if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
		return jail_fail(err, errlen, -errno, "--jail: creating mount, IPC and UTS namespaces");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return jail_fail(err, errlen, -errno, "--jail: making mounts private");
	/* The host's /proc still answers for the host's PID namespace: its
	 * "self" is this process's pid as the host (and the daemon) see it. */
	{
		char self[32];
		ssize_t n = readlink("/proc/self", self, sizeof(self) - 1);
		if (n > 0) {
			self[n] = 0;
			jail_host_pid = (pid_t)strtol(self, NULL, 10);
		}
	}
	/* A /proc of the new PID namespace, so that pids under /proc/self
	 * are ours (LeakSanitizer walks /proc/self/task); it goes with the
	 * host's tree at the pivot. */
#if defined(__SANITIZE_ADDRESS__)
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		return jail_fail(err, errlen, -errno, "--jail: mounting /proc");
#endif
	if (sethostname("cloison", 7) < 0)
		return jail_fail(err, errlen, -errno, "--jail: sethostname");
	return 0;
}

/* ---- the supervisor -------------------------------------------------- */

/* The forwarding handler's target; set before the handler is installed. */
static volatile pid_t forward_to;

static void forward_signal(int sig)
{
	int saved = errno;

	if (forward_to > 0)
		kill(forward_to, sig);
	errno = saved;
}

static void write_pid(const char *pidfile, pid_t pid)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)pid);
	int ret = atomic_write_file(pidfile, buf, (size_t)n, 0644);

	if (ret)
		fprintf(stderr, "cloison-vmm: error: --pidfile %s: %s\n", pidfile, strerror(-ret));
}

/* The system call that got the worker killed, from the kernel's audit line
 * (type=1326 ... pid=PID ... syscall=N) in /dev/kmsg, as "execve (59)";
 * false where the log is not readable (no root, or auditd takes the
 * lines). */
static bool seccomp_victim_call(pid_t worker, char *out, size_t len)
{
	char rec[2048], pidpat[32];
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	long nr = -1;
	ssize_t n;

	if (fd < 0)
		return false;
	snprintf(pidpat, sizeof(pidpat), " pid=%d ", (int)worker);
	while ((n = read(fd, rec, sizeof(rec) - 1)) != 0) {
		const char *sc;
		if (n < 0) {
			if (errno == EPIPE || errno == EINTR)
				continue; /* a record was overwritten meanwhile */
			break;
		}
		rec[n] = 0;
		sc = strstr(rec, " syscall=");
		if (strstr(rec, "type=1326") && strstr(rec, pidpat) && sc)
			nr = strtol(sc + 9, NULL, 10);
	}
	close(fd);
	if (nr < 0)
		return false;
	{
		char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, (int)nr);
		snprintf(out, len, "%s (%ld)", name ? name : "?", nr);
		free(name);
	}
	return true;
}

/* The supervisor makes the worker's network namespace while the worker
 * sets up (creating one costs about a millisecond, which is then not on
 * the way to the guest's first instruction): it moves itself into a new
 * one, which it never uses, and passes it over the socket pair. Without
 * it (an error) the worker makes its own at jail_enter. */
static void send_network_namespace(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	char b = 'n';
	struct iovec iov = { &b, 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	int ns = -1;
	cpu_set_t all, others;
	int here = sched_getcpu();
	bool moved = false;

	/* The worker was just forked onto this CPU and waits while we run:
	 * making the namespace on another CPU (when there is one) takes that
	 * wait, 0.6 ms here, off the worker's start. */
	if (here >= 0 && sched_getaffinity(0, sizeof(all), &all) == 0 && CPU_COUNT(&all) > 1) {
		others = all;
		CPU_CLR(here, &others);
		moved = CPU_COUNT(&others) > 0 && sched_setaffinity(0, sizeof(others), &others) == 0;
	}
	if (unshare(CLONE_NEWNET) == 0)
		ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns >= 0) {
		msg.msg_control = cbuf;
		msg.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &ns, sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) {
		/* the worker is gone; waitpid says why */
	}
	if (ns >= 0)
		close(ns);
	if (moved)
		sched_setaffinity(0, sizeof(all), &all);
}

/* The worker's side: the namespace the supervisor sent, or -1. */
static int receive_network_namespace(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	char b;
	struct iovec iov = { &b, 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	ssize_t n;
	int fd = -1;

	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

int jail_supervise(pid_t worker, int ready_fd, const char *pidfile,
		   const char *const *sockets, unsigned nsockets)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };
	struct sigaction sa;
	struct rlimit none = { 0, 0 };
	struct stat st;
	bool wrote = false;
	ssize_t n;
	int status, sig;
	char b, call[64];

#if defined(__SANITIZE_ADDRESS__)
	/* Our PID namespace for children dies with the worker, and with it
	 * LeakSanitizer's tracer thread (clone gets ENOMEM). */
	atomic_store(&lsan_off, true);
#endif
	forward_to = worker;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	for (unsigned i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	send_network_namespace(ready_fd);
	do
		n = read(ready_fd, &b, 1);
	while (n < 0 && errno == EINTR);
	close(ready_fd);
	if (n == 1 && pidfile) {
		write_pid(pidfile, worker);
		wrote = true;
	}
	while (waitpid(worker, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	if (wrote)
		unlink(pidfile);
	/* Only a socket: never a file someone put there since. */
	for (unsigned i = 0; i < nsockets; i++)
		if (lstat(sockets[i], &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(sockets[i]);
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	sig = WTERMSIG(status);
	if (sig == SIGSYS && seccomp_victim_call(worker, call, sizeof(call)))
		fprintf(stderr, "cloison-vmm: error: the jailed worker was killed by signal SYS: "
			"system call %s is outside its seccomp allow-list\n", call);
	else
		fprintf(stderr, "cloison-vmm: error: the jailed worker was killed by signal %s%s\n",
			sigabbrev_np(sig) ? sigabbrev_np(sig) : "?",
			sig == SIGSYS ? " (a system call outside its seccomp allow-list; the "
					"kernel log's audit line type=1326 names it)"
				      : "");
	/* Die the same way, so whoever started us sees the signal; without
	 * a core of our own. */
	setrlimit(RLIMIT_CORE, &none);
	signal(sig, SIG_DFL);
	{
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, sig);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
	}
	raise(sig);
	return 128 + sig;
}

void jail_report_running(int ready_fd)
{
	char b = 1;

	if (ready_fd < 0)
		return;
	if (write(ready_fd, &b, 1) < 0) {
		/* the supervisor is gone; PDEATHSIG ends us */
	}
	close(ready_fd);
}

/* ---- phase 2 --------------------------------------------------------- */

static int highest_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int max = 2;

	if (!d)
		return 1023;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			max = MAX(max, atoi(e->d_name));
	closedir(d);
	return max;
}

/* What is mapped now: /proc/self/statm's first field (pages), which the
 * kernel makes far faster than status's text. */
static uint64_t vm_size_bytes(void)
{
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	char buf[128];
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return (uint64_t)strtoull(buf, NULL, 10) * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Open files: what is open now plus room for control and console
 * clients. Address space: what is mapped now (guest RAM included) plus,
 * per thread still to come, its stack and a malloc arena (glibc reserves
 * 128 MiB while it aligns one), plus slack. No core dump holds guest
 * memory unless --core-dump. */
static int set_limits(const struct jail_config *cfg, char *err, size_t errlen)
{
	struct rlimit nofile, as, core = { 0, 0 };
	uint64_t threads = cfg->ncpus + 1;

	nofile.rlim_cur = nofile.rlim_max = (rlim_t)highest_fd() + 1 + 64;
	as.rlim_cur = as.rlim_max = (rlim_t)(vm_size_bytes() + threads * 136 * MiB_ + 256 * MiB_);
	if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
		return jail_fail(err, errlen, -errno, "--jail: RLIMIT_NOFILE");
	if (as.rlim_cur > 256 * MiB_ && setrlimit(RLIMIT_AS, &as) < 0)
		return jail_fail(err, errlen, -errno, "--jail: RLIMIT_AS");
	if (!cfg->core_dump && setrlimit(RLIMIT_CORE, &core) < 0)
		return jail_fail(err, errlen, -errno, "--jail: RLIMIT_CORE");
	log_debug("jail: RLIMIT_NOFILE %" PRIu64 ", RLIMIT_AS %" PRIu64 " MiB",
		  (uint64_t)nofile.rlim_cur, (uint64_t)as.rlim_cur >> 20);
	return 0;
}

/* Bind-mounts the file behind fd read-only at JAIL_BUILD_DIR + path. */
static int keep_file(int fd, const char *path, char *err, size_t errlen)
{
	char target[PATH_MAX + 16], dir[PATH_MAX + 16], src[64];
	char *slash;
	int tfd, ret;

	snprintf(target, sizeof(target), "%s%s", JAIL_BUILD_DIR, path);
	snprintf(dir, sizeof(dir), "%s", target);
	slash = strrchr(dir, '/');
	*slash = 0;
	ret = mkdir_p(dir, 0755);
	if (ret)
		return jail_fail(err, errlen, ret, "--jail: creating %s in the new root", path);
	tfd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
	if (tfd < 0)
		return jail_fail(err, errlen, -errno, "--jail: creating %s in the new root", path);
	close(tfd);
	snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
	if (mount(src, target, NULL, MS_BIND, NULL) < 0 ||
	    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
		  NULL) < 0)
		return jail_fail(err, errlen, -errno, "--jail: bind-mounting %s", path);
	return 0;
}

/* Bind-mounts the directory behind fd read-write (no devices, set-uid or
 * executables) at JAIL_BUILD_DIR + dir. */
static int keep_dir(int fd, const char *dir, char *err, size_t errlen)
{
	char target[PATH_MAX + 16], src[64];
	int ret;

	snprintf(target, sizeof(target), "%s%s", JAIL_BUILD_DIR, dir);
	ret = mkdir_p(target, 0755);
	if (ret)
		return jail_fail(err, errlen, ret, "--jail-dir: creating %s in the new root", dir);
	snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
	if (mount(src, target, NULL, MS_BIND, NULL) < 0 ||
	    mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  NULL) < 0)
		return jail_fail(err, errlen, -errno, "--jail-dir: bind-mounting %s", dir);
	return 0;
}

/* An empty tmpfs with only cfg->keep (and cfg->dir) in it becomes / and
 * the host's tree is detached: no path the worker can name reaches a host
 * file outside them. */
static int new_root(const struct jail_config *cfg, char *err, size_t errlen)
{
	char *paths[2] = { NULL, NULL };
	int fds[2] = { -1, -1 }, dirfd = -1, ret = 0;

	for (unsigned i = 0; i < cfg->nkeep; i++) {
		/* The name vm.c opens, symbolic links and all (the fd
		 * follows them to the file). */
		paths[i] = cfg->keep[i][0] == '/' ? strdup(cfg->keep[i]) : NULL;
		errno = paths[i] ? 0 : EINVAL;
		fds[i] = paths[i] ? open(paths[i], O_PATH | O_CLOEXEC) : -1;
		if (fds[i] < 0) {
			ret = jail_fail(err, errlen, -errno, "--jail: %s", cfg->keep[i]);
			goto out;
		}
	}
	/* opened before the tmpfs may cover it */
	if (cfg->dir && (dirfd = open(cfg->dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		ret = jail_fail(err, errlen, -errno, "--jail-dir %s", cfg->dir);
		goto out;
	}
	if (mount("cloison-jail", JAIL_BUILD_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "mode=0755,size=1m") < 0) {
		ret = jail_fail(err, errlen, -errno, "--jail: mounting the tmpfs root");
		goto out;
	}
	for (unsigned i = 0; i < cfg->nkeep && !ret; i++)
		ret = keep_file(fds[i], paths[i], err, errlen);
	if (!ret && cfg->dir)
		ret = keep_dir(dirfd, cfg->dir, err, errlen);
	if (ret)
		goto out;
	/* The host's tree goes to /.host and an empty read-only tmpfs is
	 * mounted over it: no path reaches it, and taking the cover off needs
	 * CAP_SYS_ADMIN and umount(), which the worker has neither of. It is
	 * not unmounted here because a detach waits for an RCU grace period
	 * (1.5-3.6 ms on a nested host, most of the sandbox's start cost);
	 * the tree goes with the namespace when the worker exits. */
	if (chdir(JAIL_BUILD_DIR) < 0 || mkdir(JAIL_BUILD_DIR "/.host", 0) < 0 ||
	    syscall(SYS_pivot_root, ".", ".host") < 0 || chdir("/") < 0) {
		ret = jail_fail(err, errlen, -errno, "--jail: pivot_root");
		goto out;
	}
	if (mount("cloison-jail-cover", "/.host", "tmpfs",
		  MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0,size=4k") < 0) {
		ret = jail_fail(err, errlen, -errno, "--jail: covering the host's tree");
		goto out;
	}
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV |
		  MS_NOEXEC, NULL) < 0)
		ret = jail_fail(err, errlen, -errno, "--jail: making the root read-only");
out:
	if (dirfd >= 0)
		close(dirfd);
	for (unsigned i = 0; i < 2; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		free(paths[i]);
	}
	return ret;
}

static int drop_privileges(const struct jail_config *cfg, char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	for (int cap = 0; prctl(PR_CAPBSET_READ, cap) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap) < 0)
			return jail_fail(err, errlen, -errno, "--jail: dropping capability %d", cap);
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	/* glibc applies these to every thread of the process. */
	if (setgroups(0, NULL) < 0 || setresgid(cfg->gid, cfg->gid, cfg->gid) < 0 ||
	    setresuid(cfg->uid, cfg->uid, cfg->uid) < 0)
		return jail_fail(err, errlen, -errno, "--jail: switching to uid %u gid %u",
				 (unsigned)cfg->uid, (unsigned)cfg->gid);
	/* Leaving uid 0 cleared the capabilities; this makes it explicit. */
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		return jail_fail(err, errlen, -errno, "--jail: capset");
	/* A uid change clears the parent-death signal. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		return jail_fail(err, errlen, -errno, "--jail: PR_SET_PDEATHSIG");
	if (cfg->core_dump)
		prctl(PR_SET_DUMPABLE, 1);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return jail_fail(err, errlen, -errno, "--jail: PR_SET_NO_NEW_PRIVS");
	return 0;
}

int jail_enter(const struct jail_config *cfg, char *err, size_t errlen)
{
	int ret;

#if defined(__SANITIZE_ADDRESS__)
	atomic_store(&lsan_off, true);
#endif
	/* Only this thread and those it creates from now on (vCPUs, the event
	 * loop) move; the disk library's threads keep the host's network
	 * namespace, which they cannot use: their seccomp list has no socket
	 * call. */
	int ns = cfg->sync_fd >= 0 ? receive_network_namespace(cfg->sync_fd) : -1;
	if (ns >= 0) {
		ret = setns(ns, CLONE_NEWNET) < 0 ? -errno : 0;
		close(ns);
		if (ret)
			return jail_fail(err, errlen, ret, "--jail: entering the network namespace");
	} else if (unshare(CLONE_NEWNET) < 0) {
		return jail_fail(err, errlen, -errno, "--jail: creating a network namespace");
	}
	ret = set_limits(cfg, err, errlen);
	if (!ret)
		ret = new_root(cfg, err, errlen);
	if (!ret)
		ret = drop_privileges(cfg, err, errlen);
	if (ret)
		return ret;
	ret = seccomp_install_base(cfg->dir != NULL);
	if (ret)
		return jail_fail(err, errlen, ret, "--jail: installing the seccomp filter");
	return 0;
}
