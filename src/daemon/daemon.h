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

struct vm_nic {
	char *tap;
	char mac[18];
	bool mac_auto; /* allocated from the MAC pool */
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
	struct vm_image *images; /* what the worker opens; set at start, kept while it runs */
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

struct daemon {
	char state_dir[2048];
	char socket_path[108];
	char vmm_path[4200];
	char config_path[4096];

	/* Daemon configuration (cloisond.json). */
	char *admins[DAEMON_MAX_ADMINS];
	unsigned n_admins;
	char admin_group[64];
	char socket_group[64];
	unsigned default_stop_timeout;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct vm *vms;
	bool shutting_down;
	unsigned n_monitors; /* live monitor threads */
	struct event ring[EVENT_RING_SIZE];
	uint64_t next_seq;

	int listen_fd;
	void *http; /* struct api_server (api/http.c) */
	int stop_pipe[2];
};

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

/* ---- MAC pool (macpool.c) ---- */
/* Picks a MAC in cloison's locally administered range 02:c1:05:xx:xx:xx
 * that no VM in d uses (caller holds d->lock); 0 or -ENOSPC. */
int macpool_allocate(struct daemon *d, char mac[18]);
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
/* Removes the config and runtime files (never disks) and unlinks vm. */
int inventory_remove(struct daemon *d, struct vm *vm);
/* Frees every VM (daemon exit; no monitor thread may run). */
void inventory_free_all(struct daemon *d);
/* Persists the runtime status (state, reason) of vm; caller holds d->lock. */
void inventory_save_status(struct vm *vm);

/* ---- lifecycle (vm.c) ---- */
/* Changes state under d->lock, persists it and queues an event. */
void vm_set_state_locked(struct vm *vm, enum vm_state s, const char *reason);
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
/* Connects to a unix socket path of any length (via /proc/self/fd for long
 * paths). Returns a connected fd or -errno. */
int unix_connect_path(const char *path);
/* Stops the monitor threads without touching the workers (daemon exit). */
void worker_detach_all(struct daemon *d);

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
