/* CPU and memory controls in cgroups (cgroup.h). */
#include "daemon/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/guid.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"

static const char *const v1_controllers[CGROUP_DIRS] = { "cpu", "cpuacct", "memory" };

static int fail(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ret;
}

static bool file_has_word(const char *path, const char *word)
{
	char buf[1024];
	FILE *f = fopen(path, "re");
	bool found = false;

	if (!f)
		return false;
	while (!found && fscanf(f, "%1023s", buf) == 1)
		found = !strcmp(buf, word);
	fclose(f);
	return found;
}

static int write_file(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX + 64];
	int fd, r = 0;
	size_t len = strlen(value);

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, value, len) != (ssize_t)len)
		r = -errno;
	close(fd);
	return r;
}

/* The daemon's path in the hierarchy whose /proc/self/cgroup line lists
 * controller (v1), or the "0::" line's (controller NULL, v2). */
static bool self_path(const char *self_cgroup, const char *controller, char *out, size_t len)
{
	char line[4096];
	FILE *f = fopen(self_cgroup, "re");
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
		if (!path)
			continue;
		*path++ = 0;
		path[strcspn(path, "\n")] = 0;
		ctl++;
		if (!controller) {
			found = !strcmp(line, "0") && !*ctl;
		} else {
			for (char *save = NULL, *c = strtok_r(ctl, ",", &save); c && !found;
			     c = strtok_r(NULL, ",", &save))
				found = !strcmp(c, controller);
		}
		if (found)
			snprintf(out, len, "%s", path);
	}
	fclose(f);
	return found;
}

static int make_dir(const char *path)
{
	return mkdir(path, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

int cgroup_host_init(struct cgroup_host *h, const char *root, const char *self_cgroup, char *err,
		     size_t errlen)
{
	char path[PATH_MAX], own[PATH_MAX];
	int r;

	memset(h, 0, sizeof(*h));
	snprintf(path, sizeof(path), "%s/cgroup.controllers", root);
	if (file_has_word(path, "cpu")) {
		/* v2: the VMs' tree sits at the root, where processes do not
		 * stop a subtree from having controllers */
		snprintf(h->base[0], sizeof(h->base[0]), "%s/cloison", root);
		if ((r = make_dir(h->base[0])))
			return fail(err, errlen, r, "cgroup v2: cannot create %s: %s", h->base[0],
				    strerror(-r));
		const char *want = file_has_word(path, "memory") ? "+cpu +memory" : "+cpu";
		if ((r = write_file(root, "cgroup.subtree_control", want)) ||
		    (r = write_file(h->base[0], "cgroup.subtree_control", want)))
			return fail(err, errlen, r,
				    "cgroup v2: cannot delegate the cpu controller under %s: %s",
				    root, strerror(-r));
		h->nbase = 1;
		h->mode = CGROUP_V2;
		return 0;
	}
	for (unsigned i = 0; i < CGROUP_DIRS; i++) {
		char real[PATH_MAX], b[PATH_MAX];
		unsigned j;
		int len;

		snprintf(path, sizeof(path), "%s/%s", root, v1_controllers[i]);
		if (!self_path(self_cgroup, v1_controllers[i], own, sizeof(own)) ||
		    access(path, W_OK) < 0)
			return fail(err, errlen, -ENOENT,
				    "no cgroup v2 tree with the cpu controller at %s, and no v1 %s "
				    "hierarchy mounted at %s",
				    root, v1_controllers[i], path);
		/* cpu and cpuacct may be one hierarchy (cpu,cpuacct, with
		 * symlinks for each name): one directory serves both */
		len = snprintf(b, sizeof(b), "%.2000s%.2000s%scloison",
			       realpath(path, real) ? real : path, own,
			       own[strlen(own) - 1] == '/' ? "" : "/");
		if (len < 0 || (size_t)len >= sizeof(b))
			return fail(err, errlen, -ENAMETOOLONG, "cgroup v1: %s: path too long", path);
		for (j = 0; j < h->nbase && strcmp(h->base[j], b); j++)
			;
		if (j == h->nbase) {
			if ((r = make_dir(b)))
				return fail(err, errlen, r, "cgroup v1: cannot create %s: %s", b,
					    strerror(-r));
			snprintf(h->base[j], sizeof(h->base[j]), "%s", b);
			h->nbase++;
		}
		h->kinds[j] |= 1u << i;
	}
	h->mode = CGROUP_V1;
	return 0;
}

static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static struct cgroup_host host;

static void host_setup(void)
{
	char err[512];

	if (cgroup_host_init(&host, "/sys/fs/cgroup", "/proc/self/cgroup", err, sizeof(err)))
		log_warn("VM CPU and memory controls are off: %s", err);
	else
		log_info("VM CPU and memory controls: cgroup %s under %s",
			 host.mode == CGROUP_V2 ? "v2" : "v1", host.base[0]);
}

const struct cgroup_host *cgroup_host(void)
{
	pthread_once(&host_once, host_setup);
	return &host;
}

static int apply_one(const struct cgroup_host *h, unsigned i, const char *dir,
		     const struct cgroup_limits *l)
{
	char v[64];
	uint64_t quota = (uint64_t)l->cpus * l->cpu_limit * (CPU_CFS_PERIOD_US / 100);
	bool limited = l->cpu_limit < CPU_LIMIT_NONE;
	unsigned kinds = h->kinds[i];
	int r = 0;

	if (h->mode == CGROUP_V2) {
		if (limited)
			snprintf(v, sizeof(v), "%" PRIu64 " %u", quota, CPU_CFS_PERIOD_US);
		else
			snprintf(v, sizeof(v), "max %u", CPU_CFS_PERIOD_US);
		r = write_file(dir, "cpu.max", v);
		snprintf(v, sizeof(v), "%u", l->cpu_weight);
		if (!r)
			r = write_file(dir, "cpu.weight", v);
		if (l->memory_max)
			snprintf(v, sizeof(v), "%" PRIu64, l->memory_max);
		else
			snprintf(v, sizeof(v), "max");
		if (!r && access(dir, F_OK) == 0) {
			int m = write_file(dir, "memory.max", v);
			if (m != -ENOENT) /* no memory controller delegated: no limit */
				r = m;
		}
		return r;
	}
	if (kinds & CGROUP_CPU) {
		snprintf(v, sizeof(v), "%u", CPU_CFS_PERIOD_US);
		r = write_file(dir, "cpu.cfs_period_us", v);
		snprintf(v, sizeof(v), "%" PRId64, limited ? (int64_t)quota : (int64_t)-1);
		if (!r)
			r = write_file(dir, "cpu.cfs_quota_us", v);
		/* v1 shares: 1024 is the default weight, as 100 is Hyper-V's */
		snprintf(v, sizeof(v), "%u", MAX(2u, l->cpu_weight * 1024u / CPU_WEIGHT_DEFAULT));
		if (!r)
			r = write_file(dir, "cpu.shares", v);
	}
	if (!r && (kinds & CGROUP_MEMORY)) {
		snprintf(v, sizeof(v), "%" PRId64, l->memory_max ? (int64_t)l->memory_max : (int64_t)-1);
		r = write_file(dir, "memory.limit_in_bytes", v);
	}
	return r;
}

int cgroup_vm_apply(const struct cgroup_host *h, const char *vm_id, const struct cgroup_limits *l,
		    char dirs[CGROUP_DIRS][PATH_MAX], unsigned *n, char *err, size_t errlen)
{
	*n = 0;
	if (h->mode == CGROUP_NONE) {
		if (l->cpu_limit < CPU_LIMIT_NONE || l->cpu_weight != CPU_WEIGHT_DEFAULT)
			return fail(err, errlen, -EOPNOTSUPP,
				    "this host's cgroups are not usable by cloisond (see its log), so "
				    "a CPU limit or weight cannot be applied; set them back to 100");
		return 0;
	}
	for (unsigned i = 0; i < h->nbase; i++) {
		char *dir = dirs[*n];
		int r;

		int len = snprintf(dir, PATH_MAX, "%.3900s/%.150s", h->base[i], vm_id);
		if (len < 0 || len >= PATH_MAX)
			return fail(err, errlen, -ENAMETOOLONG, "the VM's cgroup path is too long");
		if ((r = make_dir(dir)))
			return fail(err, errlen, r, "cannot create the VM's cgroup %s: %s", dir,
				    strerror(-r));
		if ((r = apply_one(h, i, dir, l)))
			return fail(err, errlen, r, "cannot set the VM's limits in %s: %s", dir,
				    strerror(-r));
		(*n)++;
	}
	return 0;
}

void cgroup_vm_remove(const struct cgroup_host *h, const char *vm_id)
{
	char dir[PATH_MAX + 64];

	for (unsigned i = 0; i < h->nbase; i++) {
		snprintf(dir, sizeof(dir), "%s/%s", h->base[i], vm_id);
		if (rmdir(dir) < 0 && errno != ENOENT)
			log_debug("cgroup %s stays: %s", dir, strerror(errno));
	}
}

int cgroup_vm_cpu_usage(const struct cgroup_host *h, const char *vm_id, uint64_t *ns)
{
	char path[PATH_MAX + 64], key[64];
	unsigned long long v = 0;
	FILE *f = NULL;

	for (unsigned i = 0; i < h->nbase && !f; i++) {
		if (h->mode == CGROUP_V2)
			snprintf(path, sizeof(path), "%s/%s/cpu.stat", h->base[i], vm_id);
		else if (h->kinds[i] & CGROUP_CPUACCT)
			snprintf(path, sizeof(path), "%s/%s/cpuacct.usage", h->base[i], vm_id);
		else
			continue;
		f = fopen(path, "re");
	}
	if (!f)
		return -ENOENT;
	if (h->mode == CGROUP_V2) {
		while (fscanf(f, "%63s %llu", key, &v) == 2 && strcmp(key, "usage_usec"))
			;
		v *= 1000;
	} else if (fscanf(f, "%llu", &v) != 1) {
		v = 0;
	}
	fclose(f);
	*ns = v;
	return 0;
}

int cgroup_check_reserve(const char *doing, const char *name, unsigned cpus, unsigned reserve,
			 uint64_t others, unsigned host_cpus, char *err, size_t errlen)
{
	uint64_t mine = (uint64_t)cpus * reserve, cap = (uint64_t)host_cpus * 100;

	if (!reserve || mine + others <= cap)
		return 0;
	return fail(err, errlen, -EBUSY,
		    "%s '%s': its CPU reserve (%u%% of %u vCPUs, %" PRIu64 ".%02" PRIu64
		    " CPUs) and the running VMs' reserves (%" PRIu64 ".%02" PRIu64 " CPUs) add up to "
		    "more than this host's %u CPUs; lower a reserve ('cloison vm set NAME "
		    "--cpu-reserve PCT') or stop a VM",
		    doing, name, reserve, cpus, mine / 100, mine % 100, others / 100, others % 100,
		    host_cpus);
}

/* ---- the daemon's side ---- */

void vm_cgroup_limits(const struct vm_config *c, struct cgroup_limits *l)
{
	/* with dynamic memory the guest may grow to its maximum */
	uint64_t ram = c->dynamic_memory ? vm_config_memory_maximum(c) : c->memory;
	uint64_t slack = MAX(WORKER_MEMORY_SLACK, ram / 4);

	*l = (struct cgroup_limits){ .cpus = c->cpus, .cpu_limit = c->cpu_limit,
				     .cpu_weight = c->cpu_weight, .memory_max = ram + slack };
}

int vm_check_cpu_reserve_locked(struct vm *vm, const struct vm_config *c, const char *doing,
				char *err, size_t errlen)
{
	uint64_t others = 0;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	for (struct vm *o = vm->d->vms; o; o = o->next)
		if (o != vm && vm_state_has_worker(o->state))
			others += (uint64_t)o->cfg.cpus * o->cfg.cpu_reserve;
	return cgroup_check_reserve(doing, c->name, c->cpus, c->cpu_reserve, others,
				    cpus > 0 ? (unsigned)cpus : 1, err, errlen);
}
