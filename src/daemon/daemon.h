/* cloisond's internal interfaces: the daemon, its inventory of VMs, the VM
 * state machine and the worker supervision. All daemon state hangs off
 * struct daemon (no mutable globals).
 *
 * Locking: d->lock protects the VM list, every VM's runtime fields (state,
 * reason, worker) and the event ring; d->cond is broadcast on every change
 * of those. vm->op_lock serializes the operations on one VM (start, stop,
 * set, remove, ...); it is taken before d->lock, never after. Operations on
 * different VMs run in parallel (one thread per HTTP connection). */
#ifndef CLOISON_DAEMON_DAEMON_H
#define CLOISON_DAEMON_DAEMON_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/guid.h"

#define CONFIG_SCHEMA_VERSION 1
#define VM_NAME_MAX 64
#define VM_MAX_DISKS 16
#define VM_MAX_NICS 8
#define VM_MAX_OPERATORS 32
#define DAEMON_MAX_ADMINS 32
#define EVENT_RING_SIZE 1024
#define VM_VERSION_LEN 8 /* "255.255" */

enum vm_state {
	VM_OFF,
	VM_STARTING,
	VM_RUNNING,
	VM_PAUSED,
	VM_STOPPING,
	VM_CRASHED,
	VM_SAVING,	/* the worker writes the VM's state into <dir>/Saved */
	VM_SAVED,	/* no worker; a start goes on from <dir>/Saved */
};
#define VM_STATE_LAST VM_SAVED

/* Operations checked against the state machine. */
enum vm_op {
	VM_OP_START,
	VM_OP_STOP,	/* graceful: ACPI power button */
	VM_OP_TURN_OFF,
	VM_OP_PAUSE,
	VM_OP_RESUME,
	VM_OP_RESTART,
	VM_OP_REMOVE,
	VM_OP_SET_HARDWARE,
	VM_OP_SAVE,
	VM_OP_DISCARD_SAVED,
};

enum vm_start_action { VM_START_NOTHING, VM_START_ALWAYS };
enum vm_stop_action { VM_STOP_KEEP_RUNNING, VM_STOP_SHUTDOWN, VM_STOP_TURN_OFF, VM_STOP_SAVE };

struct vm_disk {
	char *path;
	bool readonly;
};

/* A network adapter: on a tap someone made (tap), or on a cloisond switch
 * (sw), whose tap the daemon makes at start (vswitch_tap_name) with the
 * port settings below, Hyper-V's names and defaults. */
struct vm_nic {
	char *tap;
	char *sw;
	char mac[18];
	bool mac_auto; /* allocated from the MAC pool */
	bool mac_spoofing;
	bool dhcp_guard;
	bool router_guard;
	unsigned vlan;		/* 0: untagged */
	uint64_t bandwidth_max; /* bits/s, 0: no cap */
	unsigned bandwidth_weight; /* 0-100, the minimum share of an external uplink; 0: none */
	unsigned port_mirroring; /* 0 none, 1 source, 2 destination (enum switch_mirror) */
};

/* The persistent configuration: what `<GUID>.json` holds. */
struct vm_config {
	struct guid id;
	char name[VM_NAME_MAX + 1];
	unsigned generation;
	unsigned cpus;
	uint64_t memory; /* bytes */
	char *kernel;
	char *initrd;	 /* NULL = none */
	char *cmdline;	 /* never NULL */
	struct vm_disk disks[VM_MAX_DISKS];
	unsigned n_disks;
	struct vm_nic nics[VM_MAX_NICS];
	unsigned n_nics;
	enum vm_start_action start_action;
	unsigned start_delay; /* seconds */
	enum vm_stop_action stop_action;
	char *notes;
	char *operators[VM_MAX_OPERATORS];
	unsigned n_operators;
	char created[32];
	uint32_t integration;	     /* enabled integration services (agent.h) */
	unsigned heartbeat_interval; /* seconds without an answer: heartbeat lost */
	/* Hyper-V's processor resource controls (cgroup.h) */
	unsigned cpu_reserve; /* percent of the vCPUs held for it: admission at start */
	unsigned cpu_limit;   /* percent of the vCPUs' capacity it may use (100: all) */
	unsigned cpu_weight;  /* relative weight, 1-10000 (100) */
	/* Hyper-V's dynamic memory (balancer.c): `memory` is the startup
	 * memory; the worker boots with memory_maximum and a balloon holding
	 * the difference, and the balancer moves the target between
	 * memory_minimum and memory_maximum. */
	bool dynamic_memory;
	uint64_t memory_minimum, memory_maximum; /* bytes */
	unsigned memory_buffer;			 /* percent of the demand added, 5-2000 (20) */
	unsigned memory_weight;			 /* 0-100 (50): who keeps memory under pressure */
	char version[VM_VERSION_LEN]; /* configuration version, "5.0" (config.c) */
	struct guid generation_id;    /* the VM Generation ID; zero = none yet */
};

/* One image a running VM's worker opens: an attached disk (depth 0) or a
 * differencing parent of one (depth >= 1). Only an attached disk that is
 * not read-only is written; parents are always read-only. */
struct vm_image {
	dev_t dev;
	ino_t ino;
	unsigned depth;
	bool writable;
	char *path;
	char *child; /* the image this one is the parent of; NULL at depth 0 */
};

struct vm {
	/* Set at creation, then constant. */
	struct daemon *d;
	char dir[2200];	   /* <state>/<name> */
	char rundir[2300]; /* <state>/<name>/Virtual Machines/<GUID> */
	char cfg_path[2300];
	char saved_dir[2300]; /* <state>/<name>/Saved: the saved state */
	pthread_mutex_t op_lock;
	/* Serializes changes of the configuration file (vm set, remove). A set
	 * that needs the VM off takes op_lock first; notes, operators and the
	 * automatic actions take only this, so they never wait for a start or
	 * a graceful stop in progress. */
	pthread_mutex_t cfg_lock;

	/* Under d->lock. */
	struct vm_config cfg;
	unsigned refs;
	bool removed;
	enum vm_state state;
	char reason[512];	  /* why the VM is in its state (crash, stop) */
	pid_t worker_pid;	  /* 0 = none */
	bool worker_is_child;	  /* spawned by this daemon: waitpid works */
	bool monitor_running;
	pthread_t monitor;
	int monitor_fd;		  /* event connection to the worker, -1 */
	bool turning_off;	  /* we asked for poweroff / sent SIGKILL */
	bool turn_off_requested;  /* a turn-off arrived during a graceful stop */
	bool exit_seen;		  /* the worker's exit event arrived */
	bool start_failed;	  /* the worker ended before the guest ran */
	bool restoring;		  /* this start goes on from the saved state */
	int exit_status;
	char exit_detail[256];
	uint64_t started_ns;
	uid_t sandbox_uid;	  /* the worker's uid and gid in the sandbox; 0 = none */
	struct vm_image *images; /* what the worker opens; set at start, kept while it runs */
	struct vm_agent *agent;	 /* the agent channel while a worker runs (agent.c) */
	/* dynamic memory as the balancer last saw it (balancer.c) */
	bool mem_known;
	uint64_t mem_assigned, mem_demand, mem_target;
	unsigned n_images;
	struct vm *next;
};

struct event {
	uint64_t seq;
	char *json; /* the data line */
	/* Who may see it, fixed when it is queued (a VM's `removed` event is
	 * queued as the VM goes): about_vm says it concerns VM vm; then the
	 * administrators and the operators in audience ("a\0b\0\0", NULL =
	 * none) may see it. */
	bool about_vm;
	char vm[VM_NAME_MAX + 1];
	char *audience;
};

struct daemon_options {
	const char *state_dir;
	const char *socket_path;
	const char *vmm_path;	/* NULL = next to cloisond, or $CLOISON_VMM */
	const char *config_path; /* NULL = <state>/cloisond.json */
	bool detach;
};

struct job_table;

/* The host's MAC address pool (macpool.c); under d->lock. */
#define MACPOOL_INTERVALS 256
struct mac_pool {
	bool loaded;
	uint64_t min, max;			/* the range, as 48-bit numbers */
	uint64_t handed[MACPOOL_INTERVALS][2]; /* addresses handed out, [first, last] */
	unsigned n_handed;
};

struct daemon {
	char state_dir[2048];
	char socket_path[108];
	char vmm_path[4200];
	char config_path[4096];
	bool no_sandbox; /* --no-sandbox: workers run as root, unfiltered */
	char cpuid_cache[64]; /* the workers' --cpuid-cache, "" none (main.c) */

	/* Daemon configuration (cloisond.json). */
	char *admins[DAEMON_MAX_ADMINS];
	unsigned n_admins;
	char admin_group[64];
	char socket_group[64];
	unsigned default_stop_timeout;
	/* Dynamic memory (balancer.c): what the dynamic-memory VMs may have in
	 * all (0: what the host has, less memory_reserve), what the host
	 * keeps, and how often the balancer looks. */
	uint64_t memory_pool, memory_reserve;
	unsigned balancer_interval_ms;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct vm *vms;
	bool shutting_down;
	unsigned n_monitors; /* live monitor threads */
	struct event ring[EVENT_RING_SIZE];
	uint64_t next_seq;

	int listen_fd;
	void *http; /* struct api_server (api/http.c) */
	struct job_table *jobs; /* job.c */
	struct vswitch_registry *switches; /* switch.c; NULL until vswitch_load */
	struct mac_pool macpool;
	int stop_pipe[2];
	struct syncer *syncer; /* syncer.c; NULL: files are synced at once */
	struct balancer *balancer; /* balancer.c; NULL: not running */
};

/* ---- dynamic memory (balancer.c) ----
 * A thread that, every balancer_interval_ms, asks each running
 * dynamic-memory VM's worker for its balloon and statistics and sets its
 * target: its demand plus its buffer, within minimum and maximum, cut by
 * weight when the pool is short. */
struct balancer;
int balancer_start(struct daemon *d);
void balancer_stop(struct daemon *d);

/* The plan for one round, apart for the unit tests: in[i] is a VM's
 * demand (bytes in use, 0 = not known), what it keeps when its demand is
 * not known (its current target), its minimum, maximum, buffer (percent) and weight (0-100); out[i]
 * its target. pool: what they may have in all (0: no limit). Targets are
 * whole MiB. Returns the sum of the targets. */
struct balancer_vm {
	uint64_t demand, assigned, minimum, maximum;
	unsigned buffer, weight;
};
uint64_t balancer_plan(const struct balancer_vm *in, unsigned n, uint64_t pool, uint64_t *out);

/* ---- durability off d->lock (syncer.c) ----
 * A file replaced under d->lock without fsync (atomic_replace_file) is
 * queued here; a thread fsyncs it and its directory with no lock held. */
int syncer_start(struct daemon *d);
void syncer_queue(struct daemon *d, const char *path);
/* Waits until everything queued is durable (daemon exit, tests). */
void syncer_flush(struct daemon *d);
/* Flushes, then ends the thread. */
void syncer_stop(struct daemon *d);

/* ---- state machine (vm.c) ---- */
const char *vm_state_name(enum vm_state s);
/* Whether a worker may run (or be about to) in state s: not off, crashed
 * or saved. */
bool vm_state_has_worker(enum vm_state s);
/* 0 if op is allowed in state s, else -EBUSY and *why names the rule. */
int vm_state_check(enum vm_state s, enum vm_op op, const char **why);

/* ---- configuration (config.c) ---- */
/* Frees the strings a config owns; the struct itself is the caller's. */
void vm_config_clear(struct vm_config *c);

/* Dynamic memory's range: an unset minimum or maximum is the startup
 * memory. */
#define MEMORY_BUFFER_DEFAULT 20
#define MEMORY_WEIGHT_DEFAULT 50
static inline uint64_t vm_config_memory_minimum(const struct vm_config *c)
{
	return c->memory_minimum ? c->memory_minimum : c->memory;
}
static inline uint64_t vm_config_memory_maximum(const struct vm_config *c)
{
	return c->memory_maximum ? c->memory_maximum : c->memory;
}
/* Deep copy; 0 or -ENOMEM. */
int vm_config_copy(struct vm_config *dst, const struct vm_config *src);
/* Serializes to the versioned on-disk/API form (new reference). */
json_t *vm_config_to_json(const struct vm_config *c);
/* Parses a stored config (`<GUID>.json`); 0 or -EINVAL with err filled. */
int vm_config_from_json(json_t *j, struct vm_config *c, char *err, size_t errlen);
/* Applies a create (POST /v1/vms) or set (PATCH) body to c: every field is
 * checked for type and range, unknown fields are refused. hw_changed says
 * whether a field that needs the VM off was in the body. 0 or -EINVAL with
 * err naming the field. */
int vm_config_apply_json(struct vm_config *c, json_t *body, bool create, bool *hw_changed,
			 char *err, size_t errlen);
/* Whether a set (PATCH) body names a field that needs the VM off
 * (processors, memory, boot files, disks, network adapters). */
bool vm_config_body_needs_off(json_t *body);
/* Checks that the kernel and initrd are readable, non-empty regular files
 * (a directory, a device or a FIFO is refused; nothing blocks). 0 or
 * -EINVAL with err naming the file and what it is. */
int vm_config_check_boot_files(const struct vm_config *c, char *err, size_t errlen);
/* Checks name syntax: 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool vm_name_valid(const char *name);
/* Sets c->created to the current time (ISO 8601, UTC). */
void vm_config_stamp(struct vm_config *c);
const char *vm_stop_action_name(enum vm_stop_action a);
const char *vm_start_action_name(enum vm_start_action a);

/* ---- configuration versions (config.c), Hyper-V's: Get-VMHostSupportedVersion,
 * New-VM -Version, Update-VMVersion ---- */
/* A configuration without a version is of the oldest one. */
#define VM_VERSION_OLDEST "5.0"
/* The features a version brings. */
enum vm_feature {
	VM_FEATURE_GENERATION_ID, /* the VM Generation ID device */
};
/* {"versions": [{"name", "description", "default"}...]}: what this build
 * reads and writes, oldest first. */
json_t *vm_versions_json(void);
/* The version new VMs get (the newest). */
const char *vm_version_default(void);
/* 0 if v is a version this build supports; else -EINVAL with err saying
 * whether it is newer than this build (and what to do) or unknown. */
int vm_version_check(const char *v, char *err, size_t errlen);
/* Whether c's version has feature f. */
bool vm_config_has_feature(const struct vm_config *c, enum vm_feature f);
/* The version that brings f ("8.0"). */
const char *vm_feature_version(enum vm_feature f);
/* {"generation_id_device": {"present": bool, "why": "..."}}: each
 * version-gated feature and, when it is absent, why (for vm show). */
json_t *vm_config_features_json(const struct vm_config *c);
/* Moves c to the default version, making what the new version needs (a
 * generation id). *changed says whether it was older. 0 or -errno. A
 * version cannot go down: nothing here lowers it. */
int vm_config_upgrade_version(struct vm_config *c, bool *changed);
/* Gives c a new VM Generation ID (a checkpoint applied, an import as a
 * copy: the VM goes on from a copy of itself). 0 or -errno. */
int vm_config_new_generation_id(struct vm_config *c);

/* ---- MAC pool (macpool.c) ---- */
/* Hands out the next MAC of the pool's range that was never handed out
 * and no VM in d uses, recording it durably first (caller holds d->lock;
 * a pool not loaded gets the default range, kept in memory only without
 * a state dir). 0, -ENOSPC (exhausted) or -EIO. */
int macpool_allocate(struct daemon *d, char mac[18]);
/* Reads <state>/macpool.json, or makes it with the default range
 * (02:c1:05, two bytes of the host's IPv4 address, 00-ff). 0 or -errno. */
int macpool_load(struct daemon *d, char *err, size_t errlen);
/* Sets the range from "MIN-MAX" (takes d->lock); what was handed out stays
 * handed out. 0 or -EINVAL / -errno with err filled. */
int macpool_set_range(struct daemon *d, const char *range, char *err, size_t errlen);
/* {"min","max","remaining"}; caller holds d->lock. */
json_t *macpool_json_locked(struct daemon *d);
/* The sentence for an exhausted pool, naming its range and what to do. */
void macpool_exhausted(struct daemon *d, char *err, size_t errlen);
/* Checks and normalizes (lower case, colons) a MAC; 0 or -EINVAL. Refuses
 * multicast and all-zero addresses. */
int macpool_parse(const char *s, char mac[18]);

/* ---- inventory (inventory.c) ---- */
/* Loads every `<state>/<name>/Virtual Machines/<GUID>.json`, then the
 * runtime records, adopting live workers. 0 or -errno. */
int inventory_load(struct daemon *d);
/* Finds a VM by name or GUID and takes a reference; NULL if none. */
struct vm *inventory_get(struct daemon *d, const char *name_or_id);
void inventory_put(struct daemon *d, struct vm *vm);
/* Creates the directories and config of a new VM and adds it (one ref
 * returned in *out). 0, -EEXIST (name taken) or -errno. */
int inventory_create(struct daemon *d, struct vm_config *cfg, struct vm **out, char *err,
		     size_t errlen);
/* Writes vm's config atomically (caller holds op_lock). 0 or -errno. */
int inventory_save(struct vm *vm);
/* Makes *next vm's configuration: writes it durably first, and only once
 * the file is replaced does the in-memory configuration change (a failed
 * write changes nothing). On success *next holds the old configuration for
 * the caller to clear, and a "config" event is queued. Caller holds
 * vm->cfg_lock. 0, -ENOENT (removed) or -errno, with err filled. */
int inventory_replace_config(struct vm *vm, struct vm_config *next, char *err, size_t errlen);
/* A VM that is in no list (one reference returned): what an import's job
 * runs on before the VM exists. Takes the strings of cfg (zeroed). NULL
 * when out of memory. */
struct vm *inventory_vm_unlisted(struct daemon *d, struct vm_config *cfg);
/* Adds the VM whose folder <state>/<name> was just put in place (an
 * import): its configuration is read as at start; *out gets a reference
 * (vm_imported sets its state). 0 or -errno with err filled. */
int inventory_add_dir(struct daemon *d, const char *name, struct vm **out, char *err,
		      size_t errlen);
/* <vm>/Sandbox: the one host directory a sandboxed worker may write. */
void inventory_sandbox_dir(const struct vm *vm, char *buf, size_t len);
/* Removes the config and runtime files (never disks) and unlinks vm; the
 * caller has ended any worker (worker_end_strays). */
int inventory_remove(struct daemon *d, struct vm *vm);
/* Frees every VM (daemon exit; no monitor thread may run). */
void inventory_free_all(struct daemon *d);
/* Persists the runtime status (state, reason) of vm; caller holds d->lock. */
void inventory_save_status(struct vm *vm);

/* ---- lifecycle (vm.c) ---- */
/* Changes state under d->lock, persists it and queues an event. */
void vm_set_state_locked(struct vm *vm, enum vm_state s, const char *reason);
/* What supervision (worker.c) reports, d->lock held; the state machine
 * decides the VM's state from it. */
/* The reason a turn-off records in status.json: the next cloisond tells
 * from it a worker killed as asked from one that crashed. */
#define VM_REASON_TURNING_OFF "turning off"
struct worker_end {
	int status;	    /* exit status, -signal, or INT32_MIN when unknown */
	bool saved;	    /* (unknown status) a saved state it wrote is in saved_dir */
	pid_t pid, vmm_pid; /* the worker (its supervisor when jailed), the VMM */
	char log_tail[256]; /* the line of its log that says why it ended */
};
void vm_worker_ended_locked(struct vm *vm, const struct worker_end *e);
/* The worker said it runs (paused false) or is paused. */
void vm_worker_reported_locked(struct vm *vm, bool paused);
/* A worker found alive at start was adopted; was: the state recorded. */
void vm_worker_adopted_locked(struct vm *vm, bool paused, enum vm_state was);
/* At start, after inventory_load: each VM's state from what the last
 * daemon recorded and the workers it left (adopted or ended). */
void vm_recover_all(struct daemon *d);
/* An imported VM: off, or saved when its folder holds a saved state. */
void vm_imported(struct vm *vm);
/* The operations; each takes vm->op_lock. 0 or -errno with err filled:
 * -EBUSY illegal in the current state, -EIO worker failure, -ETIMEDOUT. */
int vm_op_start(struct vm *vm, char *err, size_t errlen);
int vm_op_stop(struct vm *vm, bool turn_off, unsigned timeout_s, bool *forced, char *err,
	       size_t errlen);
int vm_op_pause(struct vm *vm, char *err, size_t errlen);
int vm_op_resume(struct vm *vm, char *err, size_t errlen);
int vm_op_restart(struct vm *vm, char *err, size_t errlen);
/* Saves a running or paused VM into vm->saved_dir: saving, then saved once
 * the worker has written it and exited 5. A failed save leaves the VM as it
 * was and returns the worker's error. */
int vm_op_save(struct vm *vm, char *err, size_t errlen);
/* Drops the saved state of a saved VM (the directory goes): off. */
int vm_op_discard_saved(struct vm *vm, char *err, size_t errlen);
/* Update-VMVersion: moves an off VM's configuration to the default version
 * (irreversible). *from gets the version it had; *changed whether it was
 * older. -EBUSY unless the VM is off. */
int vm_op_upgrade_version(struct vm *vm, char from[VM_VERSION_LEN], bool *changed, char *err,
			  size_t errlen);
/* Removes vm->saved_dir and what the worker wrote in it; 0 or -errno. */
int vm_saved_dir_remove(const struct vm *vm);
/* Runs the start actions (autostart) and, at shutdown, the stop actions. */
void vm_run_start_actions(struct daemon *d);
void vm_run_stop_actions(struct daemon *d);
/* Lists the images the worker of config c will open: each attached disk
 * and, for a differencing disk, its parents at every depth (read through
 * the disk library, with shared locks that are released at once). A file
 * that cannot be read ends its chain there: the worker will name the
 * problem. *out is malloc'd (vm_images_free). 0 or -ENOMEM. */
int vm_images_collect(const struct vm_config *c, struct vm_image **out, unsigned *n);
void vm_images_free(struct vm_image *imgs, unsigned n);
/* JSON view of a VM for the API (config + runtime); caller holds d->lock. */
json_t *vm_to_json_locked(struct vm *vm);
/* The same, taking and dropping the daemon lock around it. */
json_t *vm_to_json(struct vm *vm);

/* ---- worker (worker.c) ---- */
/* Spawns cloison-vmm for vm with configuration cfg (the caller's copy:
 * vm->cfg may be replaced meanwhile by a set of notes), with --restore
 * restore_dir unless it is NULL, and a monitor
 * thread; caller holds op_lock (not d->lock). 0 or -errno with err filled. */
int worker_spawn(struct vm *vm, const struct vm_config *cfg, const char *restore_dir, char *err,
		 size_t errlen);
/* Re-attaches to a live worker recorded in the runtime dir at daemon start;
 * was/was_reason are the state the last daemon recorded. 0 if adopted; 1
 * if the worker ended while no daemon ran and its exit record set the
 * state (as the monitor would have); -ESRCH if the worker is gone without
 * a record, -EPROTO if it lives but does not answer on its control socket
 * (*why says what is known). A worker whose start was in progress
 * and that still waits paused is resumed. */
int worker_adopt(struct vm *vm, enum vm_state was, const char *was_reason, char *why,
		 size_t whylen);
/* A jailed worker saves into its sandbox: moves a complete save (its
 * state.bin written) from there into vm->saved_dir. */
void worker_collect_saved_state(struct vm *vm);
/* cloisond --watch-worker RUNDIR: forks a watcher that follows the
 * worker's control socket and writes its exit event to worker.exit. */
int worker_watch_main(const char *rundir);
/* Ends (SIGKILL, then waits until gone) every cloison-vmm that runs in
 * vm's runtime dir but is not except: a worker the daemon has no record of.
 * what (may be NULL) gets their pids. Returns how many were ended. */
int worker_end_strays(struct vm *vm, pid_t except, char *what, size_t len);
/* Sends one control command and waits for its reply; *result (may be NULL)
 * gets the result object. 0, -EPROTO (worker said no: err has its message),
 * or -errno. */
int worker_command(struct vm *vm, const char *cmd, json_t **result, char *err, size_t errlen);
/* The same with arguments (the members of args, which may be NULL, join
 * "id" and "cmd") and a reply timeout of timeout_s seconds. */
int worker_command_args(struct vm *vm, const char *cmd, json_t *args, unsigned timeout_s,
			json_t **result, char *err, size_t errlen);
/* The same with nfds descriptors sent along (SCM_RIGHTS), at most
 * WORKER_MAX_FDS: disk-switch's chain. The caller keeps its own. */
#define WORKER_MAX_FDS 16
int worker_command_fds(struct vm *vm, const char *cmd, json_t *args, const int *fds,
		       unsigned nfds, unsigned timeout_s, json_t **result, char *err, size_t errlen);
/* After the worker switched its disks (a live merge): what it holds is
 * collected again from vm->cfg, in memory and in worker.json. */
void worker_images_refresh(struct vm *vm);
/* Connects to a unix socket path of any length (via /proc/self/fd for long
 * paths). Returns a connected fd or -errno. */
int unix_connect_path(const char *path);
/* Stops the monitor threads without touching the workers (daemon exit). */
void worker_detach_all(struct daemon *d);
/* Makes the directory a save writes into and puts its path in path: the
 * VM's Saved directory, or for a sandboxed worker <vm>/Sandbox/Saved
 * (owned by its uid), which moves to Saved when the worker exits saved.
 * 0 or -errno with err filled. */
int worker_save_dir(struct vm *vm, char *path, size_t len, char *err, size_t errlen);
/* The pid of the process that runs the VM: for a sandboxed worker the one
 * its supervisor (worker_pid) forked, as worker.pid names it; else
 * worker_pid. Caller holds d->lock. */
pid_t worker_vmm_pid(const struct vm *vm);
/* SIGKILL to the worker (and its supervisor); caller holds d->lock. */
void worker_kill_locked(struct vm *vm);

/* ---- events (events.c) ---- */
/* Queues an event (caller holds d->lock); takes ownership of j. An event
 * with a "vm" member is visible to the administrators and to the operators
 * that VM has now; queue a VM's last event before unlinking it. */
void events_push_locked(struct daemon *d, const char *type, json_t *j);
/* Whether the event may be shown to peer p (caller holds d->lock). */
struct peer;
bool events_visible(const struct event *e, const struct peer *p);
/* Frees the ring (daemon exit). */
void events_free_all(struct daemon *d);

/* ---- roles (auth.c) ---- */
struct peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	char user[64];
	bool admin;
};
/* Fills p from the connection's SO_PEERCRED; 0 or -errno. */
int auth_identify(struct daemon *d, int fd, struct peer *p);
/* Whether p may operate vm (admin, or delegated as an operator); caller
 * holds d->lock. */
bool auth_may_operate(const struct peer *p, const struct vm *vm);
/* Loads cloisond.json (admins, groups); a missing file means defaults.
 * 0 or -EINVAL with err filled. */
int daemon_config_load(struct daemon *d, char *err, size_t errlen);

/* ---- HTTP API (api/) ---- */
/* Starts serving on d->listen_fd; 0 or -errno. */
int api_start(struct daemon *d);
void api_stop(struct daemon *d);

/* ---- virtual switches (switch.c) ---- */
/* The registry has its own lock, taken after d->lock, never before: a
 * caller holding it never takes d->lock. */
struct vswitch_registry;
/* Reads <state>/switches.json and creates each switch, or adopts it when
 * its bridge is there (nothing that carries traffic is rebuilt), starts
 * dnsmasq for the NAT switches and the thread that restarts it. 0 or
 * -errno with err filled (a switch that cannot be made is logged and kept
 * in the file, not fatal). */
int vswitch_load(struct daemon *d, char *err, size_t errlen);
/* Re-attaches the ports of the VMs that have a worker (after
 * inventory_load), removes the taps of the others. */
void vswitch_adopt_ports(struct daemon *d);
/* Stops the supervisor and dnsmasq (daemon exit; switches and taps stay). */
void vswitch_shutdown(struct daemon *d);
/* The tap of adapter idx of VM c: "cl" + 8 hex digits of its id + "-" idx. */
void vswitch_tap_name(const struct vm_config *c, unsigned idx, char out[16]);
/* Checks that every switch c's adapters name exists. 0 or -ENOENT, err
 * naming it. */
int vswitch_check_config(struct daemon *d, const struct vm_config *c, char *err, size_t errlen);
/* Whether this host has a switch named name. */
bool vswitch_exists(struct daemon *d, const char *name);
/* At VM start (no d->lock held): makes the tap of each switch adapter of
 * c, attached with its settings, and points c->nics[i].tap at it (c is
 * the start's copy). On failure nothing is left. 0 or -errno. */
int vswitch_vm_ports_up(struct daemon *d, struct vm_config *c, char *err, size_t errlen);
/* When the VM's worker is gone (caller holds d->lock): its taps go. */
void vswitch_vm_ports_release_locked(struct vm *vm);
/* The addresses dnsmasq leased to MAC on switch sw (new array). Takes the
 * registry's lock. */
json_t *vswitch_leases_for_mac(struct daemon *d, const char *sw, const char *mac);
/* Adds to each switch adapter of vm's JSON view (j) its "ip_addresses"
 * (nat: dnsmasq's leases) and its "tap" while a worker runs; caller holds
 * d->lock. */
void vswitch_vm_json_locked(struct vm *vm, json_t *j);
/* Connects network adapter idx of vm to switch sw, or disconnects it (sw
 * NULL). While the VM runs the guest sees its link go down and, on the
 * new switch, up again (the worker's set-link). 0 or -errno with err. */
int vswitch_vm_connect(struct vm *vm, unsigned idx, const char *sw, char *err, size_t errlen);
/* The REST handlers (api/switches.c) call these; err says why. */
json_t *vswitch_list_json(struct daemon *d);
int vswitch_show_json(struct daemon *d, const char *name, json_t **out, char *err, size_t errlen);
int vswitch_create_json(struct daemon *d, json_t *body, json_t **out, char *err, size_t errlen);
int vswitch_set_json(struct daemon *d, const char *name, json_t *body, json_t **out, char *err,
		     size_t errlen);
int vswitch_remove(struct daemon *d, const char *name, bool force, json_t **out, char *err,
		   size_t errlen);
int vswitch_forward_add(struct daemon *d, const char *name, json_t *body, json_t **out, char *err,
			size_t errlen);
int vswitch_forward_remove(struct daemon *d, const char *name, const char *proto,
			   const char *port, char *err, size_t errlen);
int vswitch_forwards_json(struct daemon *d, const char *name, json_t **out, char *err,
			  size_t errlen);
int vswitch_leases_json(struct daemon *d, const char *name, json_t **out, char *err,
			size_t errlen);

/* ---- host facts (host.c) ---- */
json_t *host_info_json(struct daemon *d);
/* MemTotal and MemAvailable from /proc/meminfo, in bytes; 0 when unknown. */
void host_meminfo(uint64_t *total, uint64_t *avail);
/* {"total": N, "off": N, ...}: the VMs by state, of those `only` may
 * operate (every VM when NULL), and the memory and vCPUs assigned to the
 * ones with a worker. Takes d->lock. */
json_t *host_vm_counts(struct daemon *d, const struct peer *only, uint64_t *assigned,
		       unsigned *vcpus);

#endif
