/* The VMs' CPU and memory controls in cgroups (Hyper-V's processor
 * "Virtual machine reserve", "limit" and "relative weight", and a memory
 * limit on the worker), on cgroup v2 or on the v1 controllers.
 *
 * Each running VM gets cgroup cloison/<vm id> under the daemon's own
 * cgroup of each hierarchy it uses (v1: cpu, cpuacct, memory; v2: the one
 * tree, under its root, with +cpu +memory delegated). The worker joins
 * them itself, first thing (cloison-vmm --cgroup DIR), so its jail and
 * every thread are inside. The reserve is an admission rule, not a
 * cgroup setting: the reserves of the running VMs may not add up to more
 * than the host's CPUs (cgroup_check_reserve). */
#ifndef CLOISON_DAEMON_CGROUP_H
#define CLOISON_DAEMON_CGROUP_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cgroup_mode { CGROUP_NONE, CGROUP_V1, CGROUP_V2 };

#define CGROUP_DIRS 3 /* v1: cpu, cpuacct, memory */

struct cgroup_host {
	enum cgroup_mode mode;
	/* the cloison/ directory of each hierarchy; v2 uses base[0] */
	char base[CGROUP_DIRS][PATH_MAX];
	unsigned kinds[CGROUP_DIRS]; /* v1: CGROUP_CPU | CGROUP_CPUACCT | CGROUP_MEMORY */
	unsigned nbase;
};

#define CGROUP_CPU 1u
#define CGROUP_CPUACCT 2u
#define CGROUP_MEMORY 4u

/* Hyper-V's defaults and ranges */
#define CPU_WEIGHT_DEFAULT 100
#define CPU_WEIGHT_MAX 10000
#define CPU_LIMIT_NONE 100 /* percent of the VM's vCPUs: no limit */
#define CPU_CFS_PERIOD_US 100000

struct cgroup_limits {
	unsigned cpus;	      /* the VM's vCPUs */
	unsigned cpu_limit;   /* 1..100 percent of the vCPUs' capacity */
	unsigned cpu_weight;  /* 1..10000, 100 by default */
	uint64_t memory_max;  /* bytes the worker may use (guest RAM included); 0: no limit */
};

/* Finds the hierarchies under root (normally /sys/fs/cgroup) and the
 * daemon's place in each from self_cgroup (normally /proc/self/cgroup),
 * and makes their cloison/ directories. v2 when root is a cgroup2 tree
 * with the cpu controller; else v1 with cpu, cpuacct and memory mounted.
 * 0, or -errno with err saying what is missing (h->mode is then NONE). */
int cgroup_host_init(struct cgroup_host *h, const char *root, const char *self_cgroup, char *err,
		     size_t errlen);
/* The host's, set up on first use from /sys/fs/cgroup and /proc/self/cgroup;
 * mode NONE (with the reason logged once) if it cannot be. */
const struct cgroup_host *cgroup_host(void);

/* Makes (or keeps) the VM's cgroups and writes the limits into them; the
 * worker's --cgroup directories go to dirs (n of them). Also what a
 * change of the settings on a running VM calls. 0 or -errno with err. */
int cgroup_vm_apply(const struct cgroup_host *h, const char *vm_id, const struct cgroup_limits *l,
		    char dirs[CGROUP_DIRS][PATH_MAX], unsigned *n, char *err, size_t errlen);
/* Removes the VM's cgroups once no process is left in them (best effort:
 * a cgroup still busy is left for the next start, which reuses it). */
void cgroup_vm_remove(const struct cgroup_host *h, const char *vm_id);
/* CPU time the VM's processes used so far, in ns. 0 or -errno. */
int cgroup_vm_cpu_usage(const struct cgroup_host *h, const char *vm_id, uint64_t *ns);

/* Reserve admission: a VM with cpus vCPUs and reserve percent fits if,
 * with the reserves others already hold (in CPU hundredths: percent times
 * vCPUs), the total stays within host_cpus. 0, or -EBUSY with err naming
 * the figures and what to do. */
int cgroup_check_reserve(const char *doing, const char *name, unsigned cpus, unsigned reserve,
			 uint64_t others, unsigned host_cpus, char *err, size_t errlen);

/* ---- the daemon's side ---- */

struct vm;
struct vm_config;

/* A worker may use its guest RAM plus this much (or a quarter of the RAM,
 * whichever is more): its own overhead, I/O buffers and the page cache of
 * its disks, which the kernel reclaims before it reaches the limit. */
#define WORKER_MEMORY_SLACK (512ULL << 20)

/* The limits of a VM's configuration. */
void vm_cgroup_limits(const struct vm_config *c, struct cgroup_limits *l);
/* cgroup_check_reserve for vm with configuration c (its own, or the one a
 * set would give it) against the other running VMs; doing begins the
 * message ("cannot start"). Caller holds d->lock. */
int vm_check_cpu_reserve_locked(struct vm *vm, const struct vm_config *c, const char *doing,
				char *err, size_t errlen);

#endif
