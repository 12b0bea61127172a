/* Worker supervision: spawning cloison-vmm for a VM, talking to its control
 * socket (docs/vmm.md), following its events on one long-lived connection
 * (the monitor thread) and turning its end into a VM state with a reason.
 *
 * The worker is started in its own session (setsid) with its runtime dir as
 * working directory, so the daemon's death does not touch it and its
 * sockets have short relative names. Its pid and start time are recorded in
 * worker.json so that the next daemon can adopt it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/agent.h"
#include "daemon/cgroup.h"
#include "daemon/daemon.h"
#include "net/tap.h"

#define CONNECT_TIMEOUT_S 30
#define COMMAND_TIMEOUT_S 15
#define LOG_ROTATE_BYTES (1 << 20)
#define LINE_MAX_BYTES 65536
/* The connected adapters' taps reach the worker as fds 3, 4, ... */
#define WORKER_TAP_FD0 3u
/* struct virtio_net_hdr_v1, what the worker's virtio-net uses */
#define WORKER_VNET_HDR_LEN 12

extern char **environ;

int unix_connect_path(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int dirfd = -1, fd, r;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		/* Too long for sun_path: go through the directory's fd. */
		char dir[4096];
		const char *slash = strrchr(path, '/');
		if (!slash)
			return -ENAMETOOLONG;
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
		dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0)
			return -errno;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dirfd, slash + 1);
		if (strlen(slash + 1) + 30 >= sizeof(sa.sun_path)) {
			close(dirfd);
			return -ENAMETOOLONG;
		}
	} else {
		memcpy(sa.sun_path, path, strlen(path) + 1);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		goto out;
	}
	r = fd;
out:
	if (dirfd >= 0)
		close(dirfd);
	return r;
}

static void runtime_path(const struct vm *vm, const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", vm->rundir, name);
}

/* Fields of /proc/<pid>/stat: the state letter, the parent's pid and the
 * start time (clock ticks since boot). 0, or -1 if there is no such
 * process. */
static int proc_stat(pid_t pid, char *state, pid_t *ppid, unsigned long long *start)
{
	char path[64], buf[1024];
	int fd, parent = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	/* After "(comm)": state is the 3rd field, ppid the 4th, starttime
	 * the 22nd. */
	char *p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%c %d %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
				"%*s %*s %*s %llu",
			 state, &parent, start) != 3)
		return -1;
	*ppid = (pid_t)parent;
	return 0;
}

static bool pid_alive(pid_t pid, unsigned long long starttime)
{
	unsigned long long st;
	pid_t ppid;
	char state;

	if (proc_stat(pid, &state, &ppid, &st) || state == 'Z' || state == 'X')
		return false;
	return starttime == 0 || st == starttime;
}

static unsigned long long pid_starttime(pid_t pid)
{
	unsigned long long st;
	pid_t ppid;
	char state;

	return proc_stat(pid, &state, &ppid, &st) ? 0 : st;
}

static pid_t parent_pid(pid_t pid)
{
	unsigned long long st;
	pid_t ppid;
	char state;

	return proc_stat(pid, &state, &ppid, &st) ? -1 : ppid;
}

/* ---- the sandbox (docs/sandbox.md) ---- */

/* Each running VM's worker gets its own uid and gid from this range;
 * none is a user of the host (useradd stops at 60000 by default). */
#define SANDBOX_UID_BASE 900000u
#define SANDBOX_UIDS 65536u

/* The lowest uid of the range that no other VM's worker has; caller
 * holds d->lock. 0 if all are taken. */
static uid_t pick_sandbox_uid_locked(const struct vm *vm)
{
	for (uid_t u = SANDBOX_UID_BASE; u < SANDBOX_UID_BASE + SANDBOX_UIDS; u++) {
		bool taken = false;
		for (const struct vm *o = vm->d->vms; o && !taken; o = o->next)
			taken = o != vm && o->sandbox_uid == u;
		if (!taken)
			return u;
	}
	return 0;
}

/* The worker's one writable directory (<vm>/Sandbox, its --jail-dir):
 * made if missing, owned by uid, mode 0700, and emptied of what an
 * earlier worker left (a save that did not finish). */
static int prepare_sandbox_dir(const struct vm *vm, uid_t uid, char *err, size_t errlen)
{
	char dir[2300], saved[2400];
	int r;

	inventory_sandbox_dir(vm, dir, sizeof(dir));
	snprintf(saved, sizeof(saved), "%s/Saved", dir);
	if ((r = remove_flat_dir(saved)) ||
	    (mkdir(dir, 0700) < 0 && errno != EEXIST && (r = -errno)) ||
	    (chown(dir, uid, uid) < 0 && (r = -errno)) || (chmod(dir, 0700) < 0 && (r = -errno))) {
		snprintf(err, errlen, "cannot prepare the sandbox directory %s: %s", dir,
			 strerror(-r));
		return r;
	}
	return 0;
}

int worker_save_dir(struct vm *vm, char *path, size_t len, char *err, size_t errlen)
{
	char dir[2300];
	uid_t uid;
	int r;

	pthread_mutex_lock(&vm->d->lock);
	uid = vm->sandbox_uid;
	pthread_mutex_unlock(&vm->d->lock);
	if (!uid) {
		snprintf(path, len, "%s", vm->saved_dir);
		if (mkdir(vm->saved_dir, 0750) < 0) {
			snprintf(err, errlen, "cannot make the directory %.300s: %s", vm->saved_dir,
				 strerror(errno));
			return -errno;
		}
		fsync_parent_dir(vm->saved_dir);
		return 0;
	}
	inventory_sandbox_dir(vm, dir, sizeof(dir));
	snprintf(path, len, "%s/Saved", dir);
	if ((r = remove_flat_dir(path)) || (mkdir(path, 0700) < 0 && (r = -errno)) ||
	    (chown(path, uid, uid) < 0 && (r = -errno))) {
		snprintf(err, errlen, "cannot make the directory %.300s: %s", path, strerror(-r));
		return r;
	}
	return 0;
}

/* A sandboxed worker saved into <vm>/Sandbox/Saved: move that to the
 * VM's Saved directory, where a start finds it. Until the rename, the
 * previous saved state (none: a save removes it first) is what there is;
 * after it, the new one. Caller holds d->lock (a rename is quick). */
void worker_collect_saved_state(struct vm *vm)
{
	char dir[2300], from[2400], state[2500];

	inventory_sandbox_dir(vm, dir, sizeof(dir));
	snprintf(from, sizeof(from), "%s/Saved", dir);
	snprintf(state, sizeof(state), "%s/state.bin", from);
	if (access(state, F_OK) < 0)
		return;
	if (remove_flat_dir(vm->saved_dir) || rename(from, vm->saved_dir) < 0) {
		log_error("vm %s: cannot move the saved state from %s to %s: %s", vm->cfg.name,
			  from, vm->saved_dir, strerror(errno));
		return;
	}
	fsync_parent_dir(vm->saved_dir);
	fsync_parent_dir(from);
}

pid_t worker_vmm_pid(const struct vm *vm)
{
	char path[2400], *text = NULL;
	size_t len;
	long pid = 0;

	if (!vm->sandbox_uid || vm->worker_pid <= 0)
		return vm->worker_pid;
	/* The supervisor writes its worker's pid (as the host sees it). */
	runtime_path(vm, "worker.pid", path, sizeof(path));
	if (read_file(path, 32, &text, &len) == 0)
		pid = strtol(text, NULL, 10);
	free(text);
	if (pid <= 0 || parent_pid((pid_t)pid) != vm->worker_pid)
		return vm->worker_pid;
	return (pid_t)pid;
}

void worker_kill_locked(struct vm *vm)
{
	pid_t vmm = worker_vmm_pid(vm);

	/* The worker first: its supervisor then ends once it is gone, disks
	 * unlocked; killing the supervisor alone leaves the worker dying
	 * (PR_SET_PDEATHSIG) after the supervisor is reaped. */
	if (vmm > 0 && vmm != vm->worker_pid)
		kill(vmm, SIGKILL);
	if (vm->worker_pid > 0)
		kill(vm->worker_pid, SIGKILL);
}

/* Reads one '\n'-terminated line into buf (NUL-terminated, without '\n');
 * a simple byte-at-a-time reader is fine for the control protocol's rate.
 * Returns its length, 0 at EOF, or -errno. */
static ssize_t read_line(int fd, char *buf, size_t len)
{
	size_t n = 0;

	for (;;) {
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return n ? (ssize_t)n : 0;
		if (c == '\n') {
			buf[n] = 0;
			return (ssize_t)n + (n == 0); /* an empty line is not EOF */
		}
		if (n + 1 < len)
			buf[n++] = c;
	}
}

static void set_timeouts(int fd, unsigned s)
{
	struct timeval tv = { .tv_sec = s };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* The request line, with nfds descriptors (SCM_RIGHTS) on its first byte. */
static int send_line(int fd, const char *line, size_t n, const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * WORKER_MAX_FDS)];
	} u;
	struct iovec iov = { .iov_base = (void *)line, .iov_len = n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t w;

	if (!nfds)
		return write_full(fd, line, n);
	if (nfds > WORKER_MAX_FDS)
		return -E2BIG;
	memset(&u, 0, sizeof(u));
	mh.msg_control = u.buf;
	mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	do
		w = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return -errno;
	return write_full(fd, line + w, n - (size_t)w);
}

/* Sends {"id":id,"cmd":cmd} on fd and reads until the matching reply
 * (events that arrive in between are skipped: the monitor sees them). */
static int command_args_on(int fd, int id, const char *cmd, json_t *args, const int *fds,
			   unsigned nfds, json_t **result, char *err, size_t errlen)
{
	char line[LINE_MAX_BYTES];
	json_t *req = json_pack("{s:i, s:s}", "id", id, "cmd", cmd);
	char *text = NULL;

	if (req && args)
		json_object_update(req, args);
	if (req)
		text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!text) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int n = snprintf(line, sizeof(line), "%s\n", text);
	free(text);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		snprintf(err, errlen, "the command is too long");
		return -E2BIG;
	}
	if (send_line(fd, line, (size_t)n, fds, nfds)) {
		snprintf(err, errlen, "cannot write to the control socket: %s", strerror(errno));
		return -EIO;
	}
	for (;;) {
		ssize_t r = read_line(fd, line, sizeof(line));
		if (r <= 0) {
			snprintf(err, errlen, "the control socket %s",
				 r == 0 ? "closed before replying" : "timed out");
			return r == 0 ? -EPIPE : (int)r;
		}
		json_t *j = json_loads(line, 0, NULL);
		json_t *jid = json_object_get(j, "id");
		if (!json_is_integer(jid) || json_integer_value(jid) != id) {
			json_decref(j);
			continue;
		}
		int ret = 0;
		if (!json_is_true(json_object_get(j, "ok"))) {
			json_t *e = json_object_get(j, "error");
			snprintf(err, errlen, "%s", json_string_value(json_object_get(e, "message"))
							   ?: "the worker refused the command");
			ret = -EPROTO;
		} else if (result) {
			*result = json_incref(json_object_get(j, "result"));
		}
		json_decref(j);
		return ret;
	}
}

static int command_on(int fd, int id, const char *cmd, json_t **result, char *err, size_t errlen)
{
	return command_args_on(fd, id, cmd, NULL, NULL, 0, result, err, errlen);
}

int worker_command(struct vm *vm, const char *cmd, json_t **result, char *err, size_t errlen)
{
	return worker_command_args(vm, cmd, NULL, COMMAND_TIMEOUT_S, result, err, errlen);
}

int worker_command_args(struct vm *vm, const char *cmd, json_t *args, unsigned timeout_s,
			json_t **result, char *err, size_t errlen)
{
	return worker_command_fds(vm, cmd, args, NULL, 0, timeout_s, result, err, errlen);
}

int worker_command_fds(struct vm *vm, const char *cmd, json_t *args, const int *fds,
		       unsigned nfds, unsigned timeout_s, json_t **result, char *err, size_t errlen)
{
	char path[4200];
	static const int id = 1;

	runtime_path(vm, "control.sock", path, sizeof(path));
	int fd = unix_connect_path(path);
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to the worker's control socket: %s",
			 strerror(-fd));
		return fd;
	}
	set_timeouts(fd, timeout_s);
	int r = command_args_on(fd, id, cmd, args, fds, nfds, result, err, errlen);
	close(fd);
	return r;
}

/* ---- the end of a worker ---- */

/* The line of worker.log that says why the worker ended: of what the
 * last run wrote (after cloisond's "--- cloisond starts" marker), the last
 * line with "error:", else its last line. The worker ends a usage error
 * with a hint "(see cloison-vmm --help)", which is not the reason. */
static void log_tail(const struct vm *vm, char *buf, size_t len)
{
	char path[4200], data[8192];
	int fd;

	buf[0] = 0;
	runtime_path(vm, "worker.log", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t end = lseek(fd, 0, SEEK_END);
	off_t start = end > (off_t)sizeof(data) - 1 ? end - (off_t)sizeof(data) + 1 : 0;
	ssize_t n = pread(fd, data, sizeof(data) - 1, start);
	close(fd);
	if (n <= 0)
		return;
	data[n] = 0;
	char *run = data, *m;
	while ((m = strstr(run, "--- cloisond starts the worker")))
		run = m + 1;
	if (run != data)
		run = strchr(run, '\n') ? strchr(run, '\n') + 1 : run + strlen(run);
	const char *pick = NULL, *last = NULL;
	for (char *line = run; *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		size_t l = strlen(line);
		while (l && (line[l - 1] == '\r' || line[l - 1] == ' '))
			line[--l] = 0;
		if (l) {
			last = line;
			if (strstr(line, "error:"))
				pick = line;
		}
		if (!nl)
			break;
		line = nl + 1;
	}
	if (!pick)
		pick = last;
	if (pick)
		snprintf(buf, len, "%s", pick);
}

/* Whether the saved state (moved out of the sandbox first) was written by
 * the worker that just ended: its state.bin is newer than that worker's
 * start. Anything older is not this run's and must not be resumed. */
static bool saved_by_this_worker(struct vm *vm)
{
	char sb[2400];
	struct stat st;

	if (!vm->started_ns)
		return false;
	worker_collect_saved_state(vm);
	snprintf(sb, sizeof(sb), "%s/state.bin", vm->saved_dir);
	if (stat(sb, &st) < 0)
		return false;
	time_t started = time(NULL) - (time_t)((now_ns() - vm->started_ns) / 1000000000ULL);
	return st.st_mtime > started;
}

/* The end of vm's worker, d->lock held: its files and cgroup go, and the
 * state machine hears what happened (vm_worker_ended_locked). status is
 * the exit status, or -sig for a signal, or INT32_MIN when unknown. */
static void worker_ended_locked(struct vm *vm, int status)
{
	struct worker_end e = { .status = status, .vmm_pid = worker_vmm_pid(vm),
				.pid = vm->worker_pid };

	log_tail(vm, e.log_tail, sizeof(e.log_tail));
	/* an adopted worker (no exit status) may have been saving */
	e.saved = status == INT32_MIN && saved_by_this_worker(vm);
	if (status == 5 && vm->sandbox_uid)
		worker_collect_saved_state(vm);
	static const char *const leftovers[] = { "worker.json", "worker.pid", "worker.exit",
						 "worker.watch", "control.sock", "serial.sock" };
	for (size_t i = 0; i < ARRAY_SIZE(leftovers); i++) {
		char path[4200];
		runtime_path(vm, leftovers[i], path, sizeof(path));
		unlink(path);
	}
	vm->worker_pid = 0;
	vm->sandbox_uid = 0;
	{
		char idbuf[GUID_STR_LEN];
		cgroup_vm_remove(cgroup_host(), guid_to_string(&vm->cfg.id, idbuf));
	}
	vm_worker_ended_locked(vm, &e);
}

/* ---- workers the daemon does not know ---- */

/* Whether pid is a cloison-vmm whose working directory is dir: the daemon
 * starts every worker of a VM in its runtime dir, so that is how a worker
 * without a record (a daemon killed before it wrote worker.json) is found. */
static bool is_worker_in(pid_t pid, const char *dir)
{
	char path[64], buf[4200], comm[32] = "";
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/cwd", (int)pid);
	n = readlink(path, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = 0;
	if (strcmp(buf, dir))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	if (n <= 0)
		return false;
	comm[n] = 0;
	comm[strcspn(comm, "\n")] = 0;
	return !strcmp(comm, "cloison-vmm") && pid_alive(pid, 0);
}

int worker_end_strays(struct vm *vm, pid_t except, char *what, size_t len)
{
	pid_t pids[16];
	int n = 0;
	struct dirent *de;
	DIR *proc = opendir("/proc");

	if (what && len)
		what[0] = 0;
	if (!proc)
		return 0;
	while ((de = readdir(proc)) && n < (int)ARRAY_SIZE(pids)) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);
		if (*end || pid <= 0 || pid == except || pid == getpid())
			continue;
		if (is_worker_in((pid_t)pid, vm->rundir))
			pids[n++] = (pid_t)pid;
	}
	closedir(proc);
	/* A sandboxed worker runs under its supervisor (the one whose working
	 * directory is the runtime dir): it goes first, and is waited for too. */
	for (int i = 0, all = n; i < all && n < (int)ARRAY_SIZE(pids); i++) {
		char path[96], *text = NULL;
		size_t tlen;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pids[i],
			 (int)pids[i]);
		if (read_file(path, 256, &text, &tlen) == 0) {
			long child = strtol(text, NULL, 10);
			if (child > 0) {
				kill((pid_t)child, SIGKILL);
				pids[n++] = (pid_t)child;
			}
		}
		free(text);
	}
	for (int i = 0; i < n; i++) {
		log_warn("vm %s: worker pid %d runs without cloisond knowing it; ending it",
			 vm->cfg.name, (int)pids[i]);
		kill(pids[i], SIGKILL);
		if (what) {
			size_t used = strlen(what);
			snprintf(what + used, len - used, "%s%d", used ? ", " : "", (int)pids[i]);
		}
	}
	/* It holds the VM's disks until it is gone. A worker that is our
	 * child is reaped here; any other is reaped by its new parent. */
	for (int i = 0; i < n; i++)
		for (int t = 0; t < 500 && pid_alive(pids[i], 0); t++) {
			waitpid(pids[i], NULL, WNOHANG);
			usleep(10000);
		}
	return n;
}

/* ---- the exit record ---- */

/* The worker's exit status reaches the daemon as an "exit" event on the
 * control socket. A daemon that is down misses it, and the worker, not
 * being the next daemon's child, cannot be waited for. So next to every
 * worker runs a watcher (cloisond --watch-worker RUNDIR, outside the
 * daemon's process tree) that follows the events too and writes the exit
 * event to worker.exit; the next daemon decides the state from it. */
int worker_watch_main(const char *rundir)
{
	char path[4200], line[LINE_MAX_BYTES];
	pid_t pid = fork();

	if (pid < 0)
		return 1;
	if (pid > 0)
		return 0; /* the daemon reaps this at once; the watcher goes on */
	setsid();
	/* Held until the record is written: a daemon that finds the worker
	 * gone waits on it rather than read a record still being written. */
	snprintf(path, sizeof(path), "%s/worker.watch", rundir);
	int lock = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (lock < 0 || flock(lock, LOCK_EX) < 0)
		_exit(1);
	snprintf(path, sizeof(path), "%s/control.sock", rundir);
	int fd = unix_connect_path(path);
	if (fd < 0)
		_exit(1);
	for (;;) {
		ssize_t n = read_line(fd, line, sizeof(line));
		if (n <= 0)
			_exit(0);
		json_t *j = json_loads(line, 0, NULL);
		const char *ev = json_string_value(json_object_get(j, "event"));
		bool exit_ev = ev && !strcmp(ev, "exit");
		json_decref(j);
		if (exit_ev) {
			snprintf(path, sizeof(path), "%s/worker.exit", rundir);
			_exit(atomic_write_file(path, line, strlen(line), 0640) ? 1 : 0);
		}
	}
}

static void start_watcher(const struct vm *vm)
{
	char *argv[] = { "cloisond", "--watch-worker", (char *)vm->rundir, NULL };
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int ws;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	int r = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r) {
		log_warn("vm %s: cannot start the exit watcher: %s (if cloisond is down when the "
			 "worker ends, its exit status is lost)", vm->cfg.name, strerror(r));
		return;
	}
	while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
		;
}

/* Reads worker.exit: 0 with *status and detail, or -ENOENT. A watcher
 * that still runs (it holds worker.watch) is given a few seconds to write
 * it: the worker may have ended just now. */
static int read_exit_record(const struct vm *vm, int *status, char *detail, size_t len)
{
	char path[4200];

	runtime_path(vm, "worker.watch", path, sizeof(path));
	int lock = open(path, O_RDONLY | O_CLOEXEC);
	if (lock >= 0) {
		for (int i = 0; i < 300 && flock(lock, LOCK_SH | LOCK_NB) < 0; i++)
			usleep(10000);
		close(lock);
	}

	runtime_path(vm, "worker.exit", path, sizeof(path));
	json_t *j = json_load_file(path, 0, NULL);
	json_t *st = json_object_get(j, "status");
	int r = -ENOENT;
	if (json_is_integer(st)) {
		*status = (int)json_integer_value(st);
		snprintf(detail, len, "%s", json_string_value(json_object_get(j, "detail")) ?: "");
		r = 0;
	}
	json_decref(j);
	return r;
}

/* ---- the monitor thread ---- */

static void handle_line(struct vm *vm, const char *line)
{
	struct daemon *d = vm->d;
	json_t *j = json_loads(line, 0, NULL);
	const char *ev = json_string_value(json_object_get(j, "event"));
	const char *st = NULL;

	if (!j)
		return;
	if (json_object_get(j, "id") && json_is_true(json_object_get(j, "ok")))
		st = json_string_value(json_object_get(json_object_get(j, "result"), "state"));
	else if (ev && !strcmp(ev, "state"))
		st = json_string_value(json_object_get(j, "state"));
	pthread_mutex_lock(&d->lock);
	if (st && (!strcmp(st, "running") || !strcmp(st, "paused")))
		vm_worker_reported_locked(vm, !strcmp(st, "paused"));
	if (ev && !strcmp(ev, "exit")) {
		vm->exit_seen = true;
		vm->exit_status = (int)json_integer_value(json_object_get(j, "status"));
		snprintf(vm->exit_detail, sizeof(vm->exit_detail), "%s",
			 json_string_value(json_object_get(j, "detail")) ?: "");
	}
	if (ev && !strcmp(ev, "reset")) {
		json_t *e = json_pack("{s:s, s:s}", "vm", vm->cfg.name, "reason",
				      json_string_value(json_object_get(j, "reason")) ?: "");
		events_push_locked(d, "reset", e);
	}
	pthread_mutex_unlock(&d->lock);
	json_decref(j);
}

/* Connects to a freshly spawned worker's control socket, waiting for it to
 * appear; returns the fd, or -ECHILD with *status when the worker ended. */
static int wait_connect(struct vm *vm, pid_t pid, int *status)
{
	char path[4200];
	uint64_t deadline = now_ns() + CONNECT_TIMEOUT_S * 1000000000ULL;

	runtime_path(vm, "control.sock", path, sizeof(path));
	for (;;) {
		int fd = unix_connect_path(path);
		if (fd >= 0)
			return fd;
		int ws;
		if (waitpid(pid, &ws, WNOHANG) == pid) {
			*status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -WTERMSIG(ws);
			return -ECHILD;
		}
		if (vm->d->shutting_down)
			return -ECANCELED;
		if (now_ns() > deadline) {
			log_error("vm %s: the worker's control socket did not appear in %d s; "
				  "killing it", vm->cfg.name, CONNECT_TIMEOUT_S);
			kill(pid, SIGKILL);
			waitpid(pid, &ws, 0);
			*status = -SIGKILL;
			return -ECHILD;
		}
		usleep(2000);
	}
}

static int reap(struct vm *vm, pid_t pid, bool child)
{
	int ws;

	if (child) {
		while (waitpid(pid, &ws, 0) < 0)
			if (errno != EINTR)
				return INT32_MIN;
		return WIFEXITED(ws) ? WEXITSTATUS(ws) : -WTERMSIG(ws);
	}
	/* Not our child: only its exit event tells how it ended. */
	for (int i = 0; i < 200 && pid_alive(pid, 0); i++)
		usleep(10000);
	return vm->exit_seen ? vm->exit_status : INT32_MIN;
}

/* Reads the worker's replies and events until it goes away. While the VM
 * is starting the worker may still report "starting" (not yet running its
 * vCPUs), so status is asked again every few milliseconds until it runs. */
static void monitor_follow(struct vm *vm, int fd, bool resume, char *line, size_t len)
{
	static const char status_req[] = "{\"id\":0,\"cmd\":\"status\"}\n";
	static const char resume_req[] = "{\"id\":2,\"cmd\":\"resume\"}\n";

	/* A fresh worker waits paused (--paused) until it is recorded, which
	 * worker_spawn did before this thread started. */
	if (resume && write_full(fd, resume_req, sizeof(resume_req) - 1))
		return;
	if (write_full(fd, status_req, sizeof(status_req) - 1))
		return;
	for (;;) {
		pthread_mutex_lock(&vm->d->lock);
		bool starting = vm->state == VM_STARTING;
		pthread_mutex_unlock(&vm->d->lock);
		if (starting) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int n = poll(&p, 1, 10);
			if (n == 0) {
				if (write_full(fd, status_req, sizeof(status_req) - 1))
					return;
				continue;
			}
		}
		if (read_line(fd, line, len) <= 0)
			return;
		handle_line(vm, line);
	}
}

struct monitor_args {
	struct vm *vm;
	pid_t pid;
	bool child;
	int fd; /* already connected (adoption), or -1 */
};

static void *monitor_main(void *arg)
{
	struct monitor_args a = *(struct monitor_args *)arg;
	struct vm *vm = a.vm;
	struct daemon *d = vm->d;
	char line[LINE_MAX_BYTES];
	int status = INT32_MIN;
	int fd = a.fd;

	free(arg);
	if (fd < 0) {
		fd = wait_connect(vm, a.pid, &status);
		if (fd == -ECANCELED)
			goto out_detached;
	}
	if (fd >= 0) {
		if (a.child)
			start_watcher(vm);
		pthread_mutex_lock(&d->lock);
		vm->monitor_fd = fd;
		pthread_mutex_unlock(&d->lock);
		monitor_follow(vm, fd, a.child, line, sizeof(line));
		pthread_mutex_lock(&d->lock);
		vm->monitor_fd = -1;
		bool detached = d->shutting_down;
		pthread_mutex_unlock(&d->lock);
		close(fd);
		if (detached)
			goto out_detached;
		status = reap(vm, a.pid, a.child);
	}
	pthread_mutex_lock(&d->lock);
	worker_ended_locked(vm, status);
	goto out_locked;
out_detached:
	pthread_mutex_lock(&d->lock);
out_locked:
	vm->monitor_running = false;
	d->n_monitors--;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	inventory_put(d, vm);
	return NULL;
}

static int start_monitor(struct vm *vm, pid_t pid, bool child, int fd)
{
	struct daemon *d = vm->d;
	struct monitor_args *a = malloc(sizeof(*a));
	pthread_attr_t attr;
	int r;

	if (!a)
		return -ENOMEM;
	*a = (struct monitor_args){ .vm = vm, .pid = pid, .child = child, .fd = fd };
	pthread_mutex_lock(&d->lock);
	vm->refs++;
	vm->monitor_running = true;
	vm->worker_pid = pid;
	vm->worker_is_child = child;
	d->n_monitors++;
	pthread_mutex_unlock(&d->lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	r = -pthread_create(&vm->monitor, &attr, monitor_main, a);
	pthread_attr_destroy(&attr);
	if (r) {
		free(a);
		pthread_mutex_lock(&d->lock);
		vm->monitor_running = false;
		d->n_monitors--;
		vm->refs--;
		pthread_mutex_unlock(&d->lock);
	}
	return r;
}

/* ---- spawning ---- */

static int open_log(const struct vm *vm)
{
	char path[4200], old[4200];
	struct stat st;

	runtime_path(vm, "worker.log", path, sizeof(path));
	if (stat(path, &st) == 0 && st.st_size > LOG_ROTATE_BYTES) {
		runtime_path(vm, "worker.log.1", old, sizeof(old));
		rename(path, old);
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	return fd < 0 ? -errno : fd;
}

/* 38 fixed (with their values and the NULL), two per disk, NIC and cgroup */
#define MAX_FIXED_ARGS 38
#define MAX_ARGS (MAX_FIXED_ARGS + 2 * (VM_MAX_DISKS + VM_MAX_NICS + CGROUP_DIRS))

/* Builds the worker's argv into args (strings in pool). */
static int build_argv(const struct vm *vm, const struct vm_config *c, const char *vmm,
		      const char *restore_dir, uid_t uid, char **args, char *pool, size_t poolsz,
		      char *err, size_t errlen)
{
	size_t used = 0;
	int n = 0;

#define ARG(...)                                                                        \
	do {                                                                            \
		int len_ = snprintf(pool + used, poolsz - used, __VA_ARGS__);           \
		if (len_ < 0 || (size_t)len_ >= poolsz - used ||                        \
		    n >= MAX_ARGS - 2 * CGROUP_DIRS - 1)                                \
			return -E2BIG;                                                  \
		args[n++] = pool + used;                                                \
		used += (size_t)len_ + 1;                                               \
	} while (0)

	ARG("%s", vmm);
	ARG("--name");
	ARG("%s", c->name);
	ARG("--kernel");
	ARG("%s", c->kernel);
	if (c->initrd) {
		ARG("--initrd");
		ARG("%s", c->initrd);
	}
	ARG("--cmdline");
	ARG("%s", c->cmdline);
	ARG("--memory");
	if (c->dynamic_memory) {
		/* Dynamic memory boots at the maximum with the balloon holding
		 * all but the startup memory (docs/decisions.md) */
		ARG("%lluM", (unsigned long long)(vm_config_memory_maximum(c) >> 20));
		ARG("--balloon");
		ARG("assigned=%lluM", (unsigned long long)(c->memory >> 20));
	} else {
		ARG("%lluM", (unsigned long long)(c->memory >> 20));
	}
	ARG("--cpus");
	ARG("%u", c->cpus);
	ARG("--serial");
	ARG("unix:serial.sock");
	ARG("--control");
	ARG("control.sock");
	ARG("--pidfile");
	ARG("worker.pid");
	ARG("--vsock"); /* the integration services' channel (agent.c) */
	ARG(AGENT_VSOCK_SPEC);
	/* A worker is the one to go under memory pressure, not cloisond (whose
	 * score main.c lowers): one VM ends instead of the supervision of all. */
	ARG("--oom-score-adj");
	ARG("300");
	/* The guest runs only once the worker is recorded (worker.json): a
	 * daemon killed in between leaves a paused worker the next one finds. */
	ARG("--paused");
	/* The VM Generation ID device, from the version that brings it */
	if (vm_config_has_feature(c, VM_FEATURE_GENERATION_ID) && !guid_is_zero(&c->generation_id)) {
		char idbuf[GUID_STR_LEN];

		ARG("--generation-id");
		ARG("%s", guid_to_string(&c->generation_id, idbuf));
	}
	if (restore_dir) {
		ARG("--restore");
		ARG("%s", restore_dir);
	}
	/* KVM's supported CPUID, which costs a worker ~1 ms to ask on a nested
	 * host, is kept for all of them; the file says which /dev/kvm and
	 * kernel it was made for, and a worker replaces one that does not fit */
	if (vm->d->cpuid_cache[0]) {
		ARG("--cpuid-cache");
		ARG("%s", vm->d->cpuid_cache);
	}
	if (uid) {
		char dir[2300];
		inventory_sandbox_dir(vm, dir, sizeof(dir));
		ARG("--jail");
		ARG("--jail-uid");
		ARG("%u", (unsigned)uid);
		ARG("--jail-gid");
		ARG("%u", (unsigned)uid);
		ARG("--jail-dir");
		ARG("%s", dir);
	} else {
		ARG("--no-sandbox");
	}
	for (unsigned i = 0; i < c->n_disks; i++) {
		if (strchr(c->disks[i].path, ',')) {
			snprintf(err, errlen, "disk path '%s' contains a comma, which the worker's "
					      "--disk option cannot carry", c->disks[i].path);
			return -EINVAL;
		}
		ARG("--disk");
		ARG("path=%s%s", c->disks[i].path, c->disks[i].readonly ? ",readonly" : "");
	}
	/* The taps are opened here, by the daemon, and inherited (open_taps):
	 * the worker needs no network privilege for them. */
	for (unsigned i = 0, k = 0; i < c->n_nics; i++) {
		if (!c->nics[i].tap)
			continue; /* not connected (a switch adapter's tap is set at start) */
		ARG("--net");
		ARG("fd=%u,mac=%s", WORKER_TAP_FD0 + k++, c->nics[i].mac);
	}
	args[n] = NULL;
#undef ARG
	return 0;
}

/* The images the worker opens, so that the next daemon checks disk
 * conflicts against an adopted worker too (it cannot read the images the
 * worker holds locked). */
static json_t *images_to_json(const struct vm *vm)
{
	json_t *a = json_array();

	for (unsigned i = 0; i < vm->n_images; i++) {
		const struct vm_image *im = &vm->images[i];
		json_array_append_new(a, json_pack("{s:I, s:I, s:i, s:b, s:s, s:s?}", "dev",
						   (json_int_t)im->dev, "ino", (json_int_t)im->ino,
						   "depth", (int)im->depth, "writable",
						   im->writable, "path", im->path, "child",
						   im->child));
	}
	return a;
}

static void images_from_json(struct vm *vm, json_t *a)
{
	size_t n = json_array_size(a), i;
	json_t *e;

	struct vm_image *v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return;
	unsigned k = 0;
	json_array_foreach(a, i, e) {
		const char *path = json_string_value(json_object_get(e, "path"));
		const char *child = json_string_value(json_object_get(e, "child"));
		if (!path)
			continue;
		v[k] = (struct vm_image){
			.dev = (dev_t)json_integer_value(json_object_get(e, "dev")),
			.ino = (ino_t)json_integer_value(json_object_get(e, "ino")),
			.depth = (unsigned)json_integer_value(json_object_get(e, "depth")),
			.writable = json_is_true(json_object_get(e, "writable")),
			.path = strdup(path),
			.child = child ? strdup(child) : NULL,
		};
		k++;
	}
	pthread_mutex_lock(&vm->d->lock);
	vm_images_free(vm->images, vm->n_images);
	vm->images = v;
	vm->n_images = k;
	pthread_mutex_unlock(&vm->d->lock);
}

static int record_worker(const struct vm *vm, pid_t pid, uid_t uid)
{
	char path[4200];
	json_t *j = json_pack("{s:i, s:I, s:s, s:s, s:o, s:I}", "pid", (int)pid, "starttime",
			      (json_int_t)pid_starttime(pid), "control", "control.sock", "serial",
			      "serial.sock", "images", images_to_json(vm), "sandbox_uid",
			      (json_int_t)uid);
	char *text = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	if (!text)
		return -ENOMEM;
	runtime_path(vm, "worker.json", path, sizeof(path));
	int r = atomic_write_file(path, text, strlen(text), 0640);
	free(text);
	return r;
}

void worker_images_refresh(struct vm *vm)
{
	struct vm_config cfg;
	struct vm_image *images = NULL;
	unsigned n = 0;
	char path[4200];

	pthread_mutex_lock(&vm->d->lock);
	int r = vm_config_copy(&cfg, &vm->cfg);
	pthread_mutex_unlock(&vm->d->lock);
	if (r)
		return;
	r = vm_images_collect(&cfg, &images, &n);
	vm_config_clear(&cfg);
	if (r)
		return;
	pthread_mutex_lock(&vm->d->lock);
	vm_images_free(vm->images, vm->n_images);
	vm->images = images;
	vm->n_images = n;
	json_t *a = images_to_json(vm);
	pthread_mutex_unlock(&vm->d->lock);
	runtime_path(vm, "worker.json", path, sizeof(path));
	json_t *rec = json_load_file(path, 0, NULL);
	if (rec && json_is_object(rec)) {
		json_object_set(rec, "images", a);
		char *text = json_dumps(rec, JSON_COMPACT);
		if (!text || atomic_write_file(path, text, strlen(text), 0640))
			log_warn("%s: cannot record the worker's images", path);
		free(text);
	}
	json_decref(rec);
	json_decref(a);
}

/* Opens the tap of every connected adapter, in the order build_argv
 * numbers them, each moved to an fd of 64 or more so that the spawn's
 * dup2s onto WORKER_TAP_FD0.. cannot overwrite one another. Returns how
 * many, or -errno with err naming the adapter (none left open). */
static int open_taps(const struct vm_config *c, int fds[VM_MAX_NICS], char *err, size_t errlen)
{
	int n = 0;

	for (unsigned i = 0; i < c->n_nics; i++) {
		char ifname[IFNAMSIZ];
		int fd, high;

		if (!c->nics[i].tap)
			continue;
		fd = tap_open(c->nics[i].tap, WORKER_VNET_HDR_LEN, ifname);
		high = fd < 0 ? fd : fcntl(fd, F_DUPFD_CLOEXEC, 64);
		if (fd >= 0)
			close(fd);
		if (high < 0) {
			int r = fd < 0 ? fd : -errno;
			snprintf(err, errlen, "cannot open the tap %s of network adapter %u: %s",
				 c->nics[i].tap, i, strerror(-r));
			while (n > 0)
				close(fds[--n]);
			return r;
		}
		fds[n++] = high;
	}
	return n;
}

static int spawn(struct vm *vm, const struct vm_config *cfg, const char *restore_dir, uid_t uid,
		 char *err, size_t errlen)
{
	const char *vmm = vm->d->vmm_path;
	char *args[MAX_ARGS], pool[3 * 65536 + 8192], path[4200];
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	pid_t pid;
	int logfd, r;

	if (access(vmm, X_OK) < 0) {
		snprintf(err, errlen, "the VM worker %s cannot be run: %s", vmm, strerror(errno));
		return -ENOENT;
	}
	/* The files may have changed since the VM was created. */
	if ((r = vm_config_check_boot_files(cfg, err, errlen)))
		return r;
	if ((r = mkdir_p(vm->rundir, 0750))) {
		snprintf(err, errlen, "cannot create %s: %s", vm->rundir, strerror(-r));
		return r;
	}
	if (uid && (r = prepare_sandbox_dir(vm, uid, err, errlen)))
		return r;
	if ((r = build_argv(vm, cfg, vmm, restore_dir, uid, args, pool, sizeof(pool), err,
			    errlen))) {
		if (r == -E2BIG)
			snprintf(err, errlen, "the worker's command line is too long");
		return r;
	}
	/* The CPU and memory controls: the worker joins its cgroups first
	 * thing, before its jail forks (cgroup.h). */
	char cgdirs[CGROUP_DIRS][PATH_MAX], idbuf[GUID_STR_LEN];
	struct cgroup_limits limits;
	unsigned ncg = 0, nargs = 0;
	vm_cgroup_limits(cfg, &limits);
	if ((r = cgroup_vm_apply(cgroup_host(), guid_to_string(&cfg->id, idbuf), &limits, cgdirs,
				 &ncg, err, errlen)))
		return r;
	while (args[nargs])
		nargs++;
	for (unsigned i = 0; i < ncg; i++) {
		static char cgroup_opt[] = "--cgroup";
		args[nargs++] = cgroup_opt;
		args[nargs++] = cgdirs[i];
	}
	args[nargs] = NULL;
	runtime_path(vm, "control.sock", path, sizeof(path));
	unlink(path);
	runtime_path(vm, "worker.exit", path, sizeof(path));
	unlink(path);
	logfd = open_log(vm);
	if (logfd < 0) {
		snprintf(err, errlen, "cannot open the worker log in %s: %s", vm->rundir,
			 strerror(-logfd));
		return logfd;
	}
	dprintf(logfd, "--- cloisond starts the worker for '%s'\n", vm->cfg.name);
	int taps[VM_MAX_NICS], ntaps = open_taps(cfg, taps, err, errlen);
	if (ntaps < 0) {
		close(logfd);
		return ntaps;
	}

	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
						POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, logfd, 1);
	posix_spawn_file_actions_adddup2(&fa, logfd, 2);
	posix_spawn_file_actions_addchdir_np(&fa, vm->rundir);
	for (int k = 0; k < ntaps; k++)
		posix_spawn_file_actions_adddup2(&fa, taps[k], WORKER_TAP_FD0 + k);
	posix_spawn_file_actions_addclosefrom_np(&fa, WORKER_TAP_FD0 + ntaps);
	r = -posix_spawn(&pid, vmm, &fa, &attr, args, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(logfd);
	for (int k = 0; k < ntaps; k++)
		close(taps[k]);
	if (r) {
		snprintf(err, errlen, "cannot start the VM worker %s: %s", vmm, strerror(-r));
		return r;
	}
	log_info("vm %s: worker pid %d started (paused until recorded)", vm->cfg.name, (int)pid);
	if ((r = record_worker(vm, pid, uid))) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		snprintf(err, errlen, "cannot record the worker in %s/worker.json: %s (the VM was "
			 "not started)", vm->rundir, strerror(-r));
		return r;
	}
	r = start_monitor(vm, pid, true, -1);
	if (r) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		snprintf(err, errlen, "cannot start a monitor thread: %s", strerror(-r));
	}
	return r;
}

int worker_spawn(struct vm *vm, const struct vm_config *cfg, const char *restore_dir, char *err,
		 size_t errlen)
{
	struct daemon *d = vm->d;
	uid_t uid = 0;
	int r;

	if (!d->no_sandbox) {
		pthread_mutex_lock(&d->lock);
		uid = vm->sandbox_uid = pick_sandbox_uid_locked(vm);
		pthread_mutex_unlock(&d->lock);
		if (!uid) {
			snprintf(err, errlen, "every sandbox uid (%u from %u) is in use: stop a VM "
				 "first", SANDBOX_UIDS, SANDBOX_UID_BASE);
			return -ENOSPC;
		}
	}
	r = spawn(vm, cfg, restore_dir, uid, err, errlen);
	if (r && uid) {
		pthread_mutex_lock(&d->lock);
		if (vm->sandbox_uid == uid && vm->worker_pid <= 0)
			vm->sandbox_uid = 0;
		pthread_mutex_unlock(&d->lock);
	}
	return r;
}

int worker_adopt(struct vm *vm, enum vm_state was, const char *was_reason, char *why,
		 size_t whylen)
{
	bool was_starting = was == VM_STARTING;
	char path[4200], err[256];
	json_t *j, *result = NULL;
	int fd, r;

	runtime_path(vm, "worker.json", path, sizeof(path));
	j = json_load_file(path, 0, NULL);
	pid_t pid = (pid_t)json_integer_value(json_object_get(j, "pid"));
	unsigned long long st = (unsigned long long)json_integer_value(json_object_get(j, "starttime"));
	json_int_t uid = json_integer_value(json_object_get(j, "sandbox_uid"));
	images_from_json(vm, json_object_get(j, "images"));
	pthread_mutex_lock(&vm->d->lock);
	vm->sandbox_uid = uid > 0 && uid < UINT32_MAX ? (uid_t)uid : 0;
	pthread_mutex_unlock(&vm->d->lock);
	json_decref(j);
	if (pid <= 0) {
		snprintf(why, whylen, "the worker's record is missing; it ended while cloisond "
				      "was not running");
		return -ESRCH;
	}
	int status;
	char detail[256];
	runtime_path(vm, "control.sock", path, sizeof(path));
	bool was_alive = pid_alive(pid, st);
	fd = was_alive ? unix_connect_path(path) : -ESRCH;
	if (fd == -ECONNREFUSED || fd == -ENOENT) {
		/* A worker that closed its control socket is on its way out (a
		 * save ends that way): give it a moment to end, and its watcher
		 * to record how. */
		for (int i = 0; i < 100 && pid_alive(pid, st); i++)
			usleep(50 * 1000);
		if (pid_alive(pid, st))
			fd = unix_connect_path(path);
	}
	if (fd >= 0 && !pid_alive(pid, st)) {
		close(fd);
		fd = -ESRCH;
	}
	if (fd < 0 && was_alive && !pid_alive(pid, st)) {
		/* it ended just now: the watcher writes its record as it ends */
		for (int i = 0; i < 40 && read_exit_record(vm, &status, detail, sizeof(detail)); i++)
			usleep(50 * 1000);
	}
	if (fd < 0 && !pid_alive(pid, st) &&
	    read_exit_record(vm, &status, detail, sizeof(detail)) == 0) {
		/* It ended while no daemon ran, and its watcher kept the exit
		 * status: decide as if the monitor had seen it, in the state the
		 * VM was in (a graceful stop in progress ends in off). */
		pthread_mutex_lock(&vm->d->lock);
		vm->state = was;
		vm->turning_off = was_reason && !strcmp(was_reason, VM_REASON_TURNING_OFF);
		vm->exit_seen = true;
		vm->exit_status = status;
		snprintf(vm->exit_detail, sizeof(vm->exit_detail), "%s", detail);
		vm->worker_pid = pid;
		worker_ended_locked(vm, status);
		pthread_mutex_unlock(&vm->d->lock);
		log_info("vm %s: worker pid %d ended with status %d while cloisond was not running",
			 vm->cfg.name, (int)pid, status);
		return 1;
	}
	if (fd < 0 && !pid_alive(pid, st)) {
		char tail[256];
		log_tail(vm, tail, sizeof(tail));
		snprintf(why, whylen, "the worker (pid %d) ended while cloisond was not running%s%s",
			 (int)pid, tail[0] ? "; its log ends: " : "", tail);
		runtime_path(vm, "worker.json", path, sizeof(path));
		unlink(path);
		return -ESRCH;
	}
	if (fd < 0) {
		snprintf(why, whylen, "the worker (pid %d) is alive but its control socket does "
				      "not answer (%s)", (int)pid, strerror(-fd));
		return -EPROTO;
	}
	set_timeouts(fd, COMMAND_TIMEOUT_S);
	r = command_on(fd, 99, "status", &result, err, sizeof(err));
	if (r) {
		close(fd);
		snprintf(why, whylen, "the worker (pid %d) does not answer 'status': %s", (int)pid,
			 err);
		return -EPROTO;
	}
	const char *state = json_string_value(json_object_get(result, "state"));
	if (was_starting && state && !strcmp(state, "paused")) {
		/* The last daemon recorded the worker but died before it let the
		 * guest run: finish the start it began. */
		if (command_on(fd, 98, "resume", NULL, err, sizeof(err)) == 0)
			state = "running";
		else
			log_warn("vm %s: cannot resume the adopted worker: %s", vm->cfg.name, err);
	}
	set_timeouts(fd, 0);
	json_t *up = json_object_get(result, "uptime_ms");
	pthread_mutex_lock(&vm->d->lock);
	vm->started_ns = now_ns() - (uint64_t)json_integer_value(up) * 1000000ULL;
	vm_worker_adopted_locked(vm, state && !strcmp(state, "paused"), was);
	pthread_mutex_unlock(&vm->d->lock);
	log_info("vm %s: adopted worker pid %d (%s)", vm->cfg.name, (int)pid, state ?: "?");
	json_decref(result);
	r = start_monitor(vm, pid, false, fd);
	if (r) {
		close(fd);
		snprintf(why, whylen, "cannot start a monitor thread: %s", strerror(-r));
	}
	return r;
}

void worker_detach_all(struct daemon *d)
{
	pthread_mutex_lock(&d->lock);
	d->shutting_down = true;
	for (struct vm *vm = d->vms; vm; vm = vm->next)
		if (vm->monitor_fd >= 0)
			shutdown(vm->monitor_fd, SHUT_RDWR);
	pthread_cond_broadcast(&d->cond);
	while (d->n_monitors > 0)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}
