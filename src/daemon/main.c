/* cloisond: the management service. One per host; serves the REST API on a
 * unix socket, keeps the inventory in the state directory, spawns one
 * cloison-vmm per running VM and adopts them again after a restart.
 *
 *   cloisond --state-dir DIR --socket PATH [--daemon] [--vmm PATH] [--config FILE]
 *
 * Signals: SIGTERM/SIGINT stop the daemon after applying each VM's
 * automatic stop action (host shutdown); SIGQUIT stops it leaving every VM
 * running (restart/upgrade of the service, like restarting VMMS). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "daemon/daemon.h"
#include "daemon/job.h"

#define CPUID_CACHE_DIR "/var/cache/cloison"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cloisond [--state-dir DIR] [--socket PATH] [--daemon] [--vmm PATH]\n"
		"                [--config FILE] [--log-level error|warn|info|debug] [--no-sandbox]\n\n"
		"The cloison management service. Serves the REST API (docs/api.yaml) on a unix\n"
		"socket and runs one cloison-vmm worker per running VM.\n\n"
		"  --state-dir DIR  VM configurations and runtime files (default /var/lib/cloison)\n"
		"  --socket PATH    API socket (default /run/cloison/cloisond.sock), root:cloison 0660\n"
		"  --daemon         detach from the terminal once the socket is ready\n"
		"  --vmm PATH       the VM worker (default: $CLOISON_VMM, or next to cloisond)\n"
		"  --config FILE    daemon settings (default <state-dir>/cloisond.json)\n"
		"  --no-sandbox     run workers as root with every capability and system call,\n"
		"                   for debugging only (docs/sandbox.md); by default each\n"
		"                   worker runs in its own sandbox under its own uid\n\n"
		"SIGTERM/SIGINT: apply the VMs' automatic stop actions, then exit.\n"
		"SIGQUIT: exit leaving every VM running (the next cloisond adopts them).\n");
}

/* The worker binary: --vmm, $CLOISON_VMM, then next to cloisond (installed)
 * or in the build tree's src/vmm. */
static void find_vmm(struct daemon *d, const char *opt)
{
	char self[PATH_MAX], cand[PATH_MAX + 64];
	const char *env = getenv("CLOISON_VMM");
	ssize_t n;

	if (opt || env) {
		snprintf(d->vmm_path, sizeof(d->vmm_path), "%s", opt ? opt : env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash)
			*slash = 0;
		snprintf(cand, sizeof(cand), "%s/cloison-vmm", self);
		if (access(cand, X_OK) == 0) {
			snprintf(d->vmm_path, sizeof(d->vmm_path), "%s", cand);
			return;
		}
		snprintf(cand, sizeof(cand), "%s/../vmm/cloison-vmm", self);
		char *real = realpath(cand, NULL);
		if (real) {
			snprintf(d->vmm_path, sizeof(d->vmm_path), "%s", real);
			free(real);
			return;
		}
	}
	snprintf(d->vmm_path, sizeof(d->vmm_path), "/usr/local/bin/cloison-vmm");
}

/* Binds the API socket: refuses a live one, replaces a stale one, and
 * gives it to root and the cloison group with mode 0660. */
static int bind_socket(struct daemon *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[sizeof(d->socket_path)];
	int fd, r;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->socket_path);
	snprintf(dir, sizeof(dir), "%s", d->socket_path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		mkdir_p(dir, 0755);
	}
	struct stat st;
	if (lstat(d->socket_path, &st) == 0) {
		/* Only a socket may be replaced; anything else is left alone. */
		if (!S_ISSOCK(st.st_mode)) {
			log_error("%s: exists and is not a socket; refusing to replace it",
				  d->socket_path);
			return -EEXIST;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			log_error("%s: another cloisond is already serving this socket",
				  d->socket_path);
			return -EADDRINUSE;
		}
		close(fd);
		if (unlink(d->socket_path) < 0 && errno != ENOENT) {
			r = -errno;
			log_error("%s: cannot remove the stale socket: %s", d->socket_path,
				  strerror(errno));
			return r;
		}
	} else if (errno != ENOENT) {
		r = -errno;
		log_error("%s: %s", d->socket_path, strerror(errno));
		return r;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	mode_t old = umask(0117);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0 || listen(fd, 512) < 0) {
		r = -errno;
		log_error("%s: cannot listen: %s", d->socket_path, strerror(errno));
		close(fd);
		return r;
	}
	struct group *g = getgrnam(d->socket_group);
	if (g) {
		if (chown(d->socket_path, geteuid() == 0 ? 0 : (uid_t)-1, g->gr_gid) < 0)
			log_warn("%s: cannot give the socket to group '%s': %s", d->socket_path,
				 d->socket_group, strerror(errno));
	} else {
		log_warn("group '%s' does not exist: only root can use %s (groupadd %s)",
			 d->socket_group, d->socket_path, d->socket_group);
	}
	chmod(d->socket_path, 0660);
	d->listen_fd = fd;
	return 0;
}

/* Forks into the background; the parent exits once the child reports
 * through the pipe that it serves (or failed). */
static int detach(struct daemon *d, int *ready_fd)
{
	int p[2];
	char logpath[4200];

	if (pipe(p) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		char c = 1;
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			c = 1;
		_exit(c);
	}
	close(p[0]);
	setsid();
	snprintf(logpath, sizeof(logpath), "%s/cloisond.log", d->state_dir);
	int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	int null = open("/dev/null", O_RDWR);
	if (log >= 0) {
		dup2(null, 0);
		dup2(log, 1);
		dup2(log, 2);
		close(log);
	}
	if (null > 2)
		close(null);
	*ready_fd = p[1];
	return 0;
}

static void report_ready(int *ready_fd, char status)
{
	if (*ready_fd >= 0) {
		if (write(*ready_fd, &status, 1) < 0)
			log_warn("cannot tell the parent that the daemon is ready");
		close(*ready_fd);
		*ready_fd = -1;
	}
}

static void *autostart_main(void *arg)
{
	vm_run_start_actions(arg);
	return NULL;
}

static int lock_state_dir(struct daemon *d)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/cloisond.lock", d->state_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);
		return -EBUSY;
	}
	return fd; /* held until exit */
}

/* Under memory pressure the kernel should end a worker (one VM) before the
 * daemon that supervises them all; workers get WORKER_OOM_SCORE_ADJ
 * (worker.c). Lowering the score needs CAP_SYS_RESOURCE. */
#define DAEMON_OOM_SCORE_ADJ (-500)

static void set_oom_score(void)
{
	char v[16];
	int n = snprintf(v, sizeof(v), "%d", DAEMON_OOM_SCORE_ADJ);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);

	if (fd < 0 || write(fd, v, (size_t)n) != n)
		log_warn("cannot lower cloisond's OOM score to %d: %s (workers are still "
			 "scored higher)", DAEMON_OOM_SCORE_ADJ, strerror(errno));
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 's' }, { "socket", required_argument, NULL, 'S' },
		{ "daemon", no_argument, NULL, 'd' },	       { "vmm", required_argument, NULL, 'v' },
		{ "config", required_argument, NULL, 'c' },    { "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },	       { "version", no_argument, NULL, 'V' },
		{ "no-sandbox", no_argument, NULL, 'N' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon *d = calloc(1, sizeof(*d));
	const char *state = "/var/lib/cloison", *sock = "/run/cloison/cloisond.sock";
	const char *vmm = NULL, *config = NULL;
	bool background = false;
	int ready_fd = -1, c, r, status = 1, sig = 0;
	char err[1024];
	sigset_t set;

	log_init("cloisond", LOG_INFO);
	if (argc == 3 && !strcmp(argv[1], "--watch-worker")) {
		free(d);
		return worker_watch_main(argv[2]);
	}
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': state = optarg; break;
		case 'S': sock = optarg; break;
		case 'd': background = true; break;
		case 'v': vmm = optarg; break;
		case 'c': config = optarg; break;
		case 'N': d->no_sandbox = true; break;
		case 'l':
			if (!strcmp(optarg, "debug")) log_init("cloisond", LOG_DEBUG);
			else if (!strcmp(optarg, "info")) log_init("cloisond", LOG_INFO);
			else if (!strcmp(optarg, "warn")) log_init("cloisond", LOG_WARN);
			else if (!strcmp(optarg, "error")) log_init("cloisond", LOG_ERROR);
			else { usage(stderr); return 2; }
			break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("cloisond %s\n", CLOISON_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || !d) {
		usage(stderr);
		return 2;
	}
	if (strlen(sock) >= sizeof(d->socket_path)) {
		log_error("--socket %s: a unix socket path has at most %zu bytes", sock,
			  sizeof(d->socket_path) - 1);
		return 2;
	}
	snprintf(d->socket_path, sizeof(d->socket_path), "%s", sock);
	if ((r = mkdir_p(state, 0750))) {
		log_error("--state-dir %s: %s", state, strerror(-r));
		return 1;
	}
	char *real = realpath(state, NULL);
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", real ? real : state);
	free(real);
	if (config)
		snprintf(d->config_path, sizeof(d->config_path), "%s", config);
	else
		snprintf(d->config_path, sizeof(d->config_path), "%s/cloisond.json", d->state_dir);
	find_vmm(d, vmm);
	if (d->no_sandbox)
		log_warn("--no-sandbox: WORKERS RUN AS ROOT WITH EVERY CAPABILITY AND SYSTEM CALL; a "
			 "guest that breaks a device model owns this host. For debugging only.");
	d->listen_fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->cond, &ca);

	if (daemon_config_load(d, err, sizeof(err))) {
		log_error("%s", err);
		return 1;
	}
	set_oom_score();
	if (lock_state_dir(d) < 0) {
		log_error("%s: another cloisond uses this state directory", d->state_dir);
		return 1;
	}
	if (bind_socket(d))
		return 1;
	if (background && detach(d, &ready_fd)) {
		log_error("cannot detach: %s", strerror(errno));
		return 1;
	}

	/* Signals are taken synchronously by this thread only. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGQUIT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	/* After the signal mask: the syncer's thread takes no signal. */
	if ((r = syncer_start(d))) {
		log_error("cannot start the syncer thread: %s", strerror(-r));
		goto out;
	}
	if ((r = macpool_load(d, err, sizeof(err)))) {
		log_error("cannot load the MAC address pool: %s", err);
		goto out;
	}
	/* Switches before the VMs: a VM found stopped gives its taps back. */
	if ((r = vswitch_load(d, err, sizeof(err)))) {
		log_error("cannot load the virtual switches: %s", err);
		goto out;
	}
	/* KVM's supported CPUID is the host's, not this state directory's:
	 * one cache for every cloisond and worker on the host (cpuid_cache.c
	 * keys it to the /dev/kvm node and kernel). Without it, each worker
	 * asks KVM. */
	if (mkdir_p(CPUID_CACHE_DIR, 0755) == 0)
		snprintf(d->cpuid_cache, sizeof(d->cpuid_cache), "%s/kvm-cpuid.cache",
			 CPUID_CACHE_DIR);
	else
		log_warn("cannot create %s: workers ask KVM for its CPUID each time (~1 ms)",
			 CPUID_CACHE_DIR);
	if ((r = inventory_load(d))) {
		log_error("%s: cannot read the state directory: %s", d->state_dir, strerror(-r));
		goto out;
	}
	vm_recover_all(d);
	vswitch_adopt_ports(d);
	/* After the inventory: recovering a job a crash interrupted looks at
	 * the VM it concerned. */
	if ((r = jobs_init(d))) {
		log_error("%s/.jobs: cannot read the job records: %s", d->state_dir, strerror(-r));
		goto out;
	}
	if ((r = api_start(d))) {
		log_error("cannot start the HTTP server on %s", d->socket_path);
		goto out;
	}
	log_info("serving %s (state %s, worker %s)", d->socket_path, d->state_dir, d->vmm_path);
	report_ready(&ready_fd, 0);
	if ((r = balancer_start(d)))
		log_warn("cannot start the dynamic memory balancer: %s (targets stay as they are)",
			 strerror(-r));
	pthread_t t;
	if (pthread_create(&t, NULL, autostart_main, d) == 0)
		pthread_detach(t);

	while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
		log_info("SIGHUP ignored (the configuration is read at start)");
	if (sig == SIGTERM || sig == SIGINT) {
		log_info("signal %d: applying the VMs' automatic stop actions", sig);
		vm_run_stop_actions(d);
	} else {
		log_info("SIGQUIT: leaving the VMs running");
	}
	status = 0;
	pthread_mutex_lock(&d->lock);
	d->shutting_down = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	api_stop(d);
	balancer_stop(d);
	jobs_shutdown(d); /* a job in progress finishes first */
	worker_detach_all(d);
	vswitch_shutdown(d);
out:
	syncer_stop(d); /* what it holds is made durable first */
	report_ready(&ready_fd, 1);
	if (d->listen_fd >= 0)
		close(d->listen_fd);
	unlink(d->socket_path);
	log_info("stopped");
	if (status == 0) {
		inventory_free_all(d);
		events_free_all(d);
		for (unsigned i = 0; i < d->n_admins; i++)
			free(d->admins[i]);
		free(d);
	}
	return status;
}
