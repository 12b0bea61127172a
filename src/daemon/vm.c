/* The VM state machine, with Hyper-V's semantics:
 *
 *   off/crashed --start--> starting --> running <--pause/resume--> paused
 *   running --stop--> stopping --(guest powers off, or turn-off after the
 *   timeout)--> off;  running/paused/stopping --turn-off--> off
 *   running --restart--> running (hard reset);  a worker that dies on its
 *   own --> crashed, with the reason.
 *
 * Operations on one VM are serialized by vm->op_lock; the monitor thread of
 * the worker (worker.c) moves the state when the worker reports or exits. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/cgroup.h"
#include "daemon/agent.h"
#include "daemon/daemon.h"
#ifdef CLOISON_HAVE_DISK_LIB
#include "disk/disk.h"
#endif

#define START_TIMEOUT_S 60
#define POWEROFF_TIMEOUT_S 10
#define KILL_TIMEOUT_S 5

static const char *const state_names[] = {
	[VM_OFF] = "off",	  [VM_STARTING] = "starting", [VM_RUNNING] = "running",
	[VM_PAUSED] = "paused",	  [VM_STOPPING] = "stopping", [VM_CRASHED] = "crashed",
	[VM_SAVING] = "saving",	  [VM_SAVED] = "saved",
};

const char *vm_state_name(enum vm_state s)
{
	return state_names[s];
}

bool vm_state_has_worker(enum vm_state s)
{
	return s != VM_OFF && s != VM_CRASHED && s != VM_SAVED;
}

int vm_state_check(enum vm_state s, enum vm_op op, const char **why)
{
	bool ok;

	switch (op) {
	case VM_OP_START:
		ok = s == VM_OFF || s == VM_CRASHED || s == VM_SAVED;
		*why = "only a VM that is off, crashed or saved can be started";
		break;
	case VM_OP_STOP:
		ok = s == VM_RUNNING;
		*why = s == VM_PAUSED ? "a paused VM cannot shut down: resume it first, or turn it "
					"off (--turn-off)"
				      : "only a running VM can be shut down";
		break;
	case VM_OP_TURN_OFF:
		ok = s == VM_RUNNING || s == VM_PAUSED || s == VM_STOPPING || s == VM_STARTING;
		*why = "the VM is not running";
		break;
	case VM_OP_PAUSE:
		ok = s == VM_RUNNING;
		*why = "only a running VM can be paused";
		break;
	case VM_OP_RESUME:
		ok = s == VM_PAUSED;
		*why = "only a paused VM can be resumed";
		break;
	case VM_OP_RESTART:
		ok = s == VM_RUNNING;
		*why = "only a running VM can be restarted";
		break;
	case VM_OP_REMOVE:
		ok = s == VM_OFF || s == VM_CRASHED || s == VM_SAVED;
		*why = "a VM must be off before it is removed: stop it first";
		break;
	case VM_OP_SET_HARDWARE:
		ok = s == VM_OFF || s == VM_CRASHED;
		*why = s == VM_SAVED ? "its saved state holds the processors, memory, disks and "
				       "network adapters it was saved with: discard the saved state "
				       "first ('cloison vm discard-saved-state NAME'), or start it"
				     : "processors, memory, boot files, disks and network adapters "
				       "can only change while the VM is off";
		break;
	case VM_OP_SAVE:
		ok = s == VM_RUNNING || s == VM_PAUSED;
		*why = "only a running or paused VM can be saved";
		break;
	case VM_OP_DISCARD_SAVED:
		ok = s == VM_SAVED;
		*why = "only a saved VM has a saved state to discard";
		break;
	default:
		ok = false;
		*why = "unknown operation";
	}
	return ok ? 0 : -EBUSY;
}

void vm_set_state_locked(struct vm *vm, enum vm_state s, const char *reason)
{
	enum vm_state prev = vm->state;
	char id[GUID_STR_LEN];

	vm->state = s;
	snprintf(vm->reason, sizeof(vm->reason), "%s", reason ? reason : "");
	if (s == VM_RUNNING && prev == VM_STARTING)
		vm->started_ns = now_ns();
	if (!vm->removed)
		inventory_save_status(vm);
	json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s}", "vm", vm->cfg.name, "id",
			       guid_to_string(&vm->cfg.id, id), "state", vm_state_name(s),
			       "previous", vm_state_name(prev), "reason", vm->reason);
	events_push_locked(vm->d, "state", ev);
	if (vm_state_has_worker(prev) && !vm_state_has_worker(s))
		vswitch_vm_ports_release_locked(vm);
	/* the agent channel lives while a worker runs (agent.c) */
	if (s == VM_RUNNING && prev == VM_PAUSED)
		agent_vm_resumed_locked(vm);
	if (s == VM_RUNNING)
		agent_vm_started_locked(vm);
	else if (!vm_state_has_worker(s) || s == VM_SAVING)
		agent_vm_stopped_locked(vm);
	if (s != prev)
		log_info("vm %s: %s -> %s%s%s", vm->cfg.name, vm_state_name(prev),
			 vm_state_name(s), vm->reason[0] ? ": " : "", vm->reason);
}

/* ---- what supervision reports (worker.c) ----
 * The worker's process is supervised in worker.c, which only reports what
 * happened; every state the VM goes to is decided here. */

static const char *signal_name(int sig)
{
	static const char *const names[] = { [SIGKILL] = "SIGKILL", [SIGSEGV] = "SIGSEGV",
					     [SIGABRT] = "SIGABRT", [SIGTERM] = "SIGTERM",
					     [SIGBUS] = "SIGBUS",   [SIGINT] = "SIGINT",
					     [SIGSYS] = "SIGSYS" };
	if (sig > 0 && sig < (int)ARRAY_SIZE(names) && names[sig])
		return names[sig];
	return "a signal";
}

void vm_worker_ended_locked(struct vm *vm, const struct worker_end *e)
{
	char why[512];
	const char *tail = e->log_tail;
	enum vm_state s = VM_CRASHED;
	bool starting = vm->state == VM_STARTING;
	int status = e->status;

	if (status == 0 || (status < 0 && status != INT32_MIN && vm->turning_off)) {
		s = VM_OFF;
		snprintf(why, sizeof(why), "%s",
			 vm->turning_off		 ? "turned off"
			 : vm->state == VM_STOPPING ? "the guest shut down"
						    : "the guest powered off");
	} else if (status == 5) {
		/* docs/vmm.md: the VM was saved; it waits in saved_dir. */
		s = VM_SAVED;
		snprintf(why, sizeof(why), "saved in %.400s", vm->saved_dir);
	} else if (status == 3) {
		s = VM_OFF;
		snprintf(why, sizeof(why), "the guest reset and the worker does not reboot");
	} else if (status == 4) {
		snprintf(why, sizeof(why), "the guest crashed: %s",
			 vm->exit_detail[0] ? vm->exit_detail : tail);
	} else if (status == 1 || status == 2) {
		if (starting) {
			/* A refused restore leaves the state as it was. */
			s = vm->restoring ? VM_SAVED : VM_OFF;
			vm->start_failed = true;
		}
		snprintf(why, sizeof(why), "the worker failed (exit status %d): %s", status,
			 tail[0] ? tail : "see its log");
	} else if (status == INT32_MIN && e->saved) {
		s = VM_SAVED;
		snprintf(why, sizeof(why), "saved in %.400s (the worker, adopted after a cloisond "
			 "restart, ended after writing it)", vm->saved_dir);
	} else if (status == INT32_MIN) {
		snprintf(why, sizeof(why), "the worker (pid %d) exited without reporting why",
			 (int)e->pid);
	} else if (status == -SIGSYS && strstr(tail, "seccomp")) {
		/* The supervisor's line names the call the filter refused. */
		snprintf(why, sizeof(why), "the sandbox killed the worker (pid %d): %s",
			 (int)e->vmm_pid, strstr(tail, "system call") ?: tail);
	} else if (status < 0) {
		snprintf(why, sizeof(why), "the worker (pid %d) was killed by signal %d (%s)",
			 (int)e->pid, -status, signal_name(-status));
	} else {
		snprintf(why, sizeof(why), "the worker exited with unexpected status %d: %s",
			 status, tail);
	}
	vm_set_state_locked(vm, s, why);
}

void vm_worker_reported_locked(struct vm *vm, bool paused)
{
	enum vm_state s = paused ? VM_PAUSED : VM_RUNNING;

	/* A starting worker is paused until the monitor resumes it. */
	if (vm->state == VM_STARTING && paused)
		return;
	if ((vm->state == VM_STARTING || vm->state == VM_RUNNING || vm->state == VM_PAUSED) &&
	    s != vm->state)
		vm_set_state_locked(vm, s, NULL);
}

void vm_worker_adopted_locked(struct vm *vm, bool paused, enum vm_state was)
{
	vm_set_state_locked(vm, paused ? VM_PAUSED : VM_RUNNING,
			    was == VM_STOPPING ? "adopted after a cloisond restart; the graceful "
						 "stop in progress was not followed (stop it "
						 "again to wait for it)"
					       : "adopted after a cloisond restart");
}

/* At start, after inventory_load: the state each VM is in, from its
 * status.json and the worker the last daemon left (adopted when it
 * answers, ended when it runs without a record or does not answer). */
static void recover_runtime(struct vm *vm)
{
	char path[4200], why[512] = "", pids[128];
	json_t *j;

	snprintf(path, sizeof(path), "%s/status.json", vm->rundir);
	j = json_load_file(path, 0, NULL);
	const char *state = json_string_value(json_object_get(j, "state"));
	const char *reason = json_string_value(json_object_get(j, "reason"));
	bool starting = state && !strcmp(state, "starting"), unresponsive = false;
	enum vm_state was = VM_RUNNING;
	for (int s = VM_OFF; s <= VM_STATE_LAST; s++)
		if (state && !strcmp(state, vm_state_name((enum vm_state)s)))
			was = (enum vm_state)s;
	vm->state = VM_OFF;
	/* An off VM keeps its reason ("the guest shut down") across restarts. */
	snprintf(vm->reason, sizeof(vm->reason), "%s", reason ? reason : "");
	if (state && !strcmp(state, "crashed")) {
		vm->state = VM_CRASHED;
	} else if (state && !strcmp(state, "saved")) {
		/* No worker runs; the state waits in Saved for the next start. */
		char sb[2400];
		snprintf(sb, sizeof(sb), "%s/state.bin", vm->saved_dir);
		if (access(sb, F_OK) == 0) {
			vm->state = VM_SAVED;
		} else {
			snprintf(why, sizeof(why), "the saved state %.400s is gone", sb);
			pthread_mutex_lock(&vm->d->lock);
			vm_set_state_locked(vm, VM_OFF, why);
			pthread_mutex_unlock(&vm->d->lock);
		}
	} else if (state && strcmp(state, "off")) {
		/* It was running when the last daemon went away. */
		int r = worker_adopt(vm, was, reason, why, sizeof(why));
		char sb[2400];
		snprintf(sb, sizeof(sb), "%s/state.bin", vm->saved_dir);
		if (r == -ESRCH && was == VM_SAVING)
			worker_collect_saved_state(vm); /* a jailed worker's finished save */
		if (r == -ESRCH && (was == VM_SAVING || was == VM_STARTING) &&
		    access(sb, F_OK) == 0) {
			/* A save that finished, or a start from a saved state that
			 * never got a worker: the state is whole (a save removes a
			 * stale one first, a start removes it once it is used). */
			char first[512];
			snprintf(first, sizeof(first), "%s", why);
			snprintf(why, sizeof(why), "cloisond stopped while the VM was %s (%.300s); its "
				 "saved state is whole: 'cloison vm start %s' goes on from it",
				 vm_state_name(was), first, vm->cfg.name);
			pthread_mutex_lock(&vm->d->lock);
			vm_set_state_locked(vm, VM_SAVED, why);
			pthread_mutex_unlock(&vm->d->lock);
		} else if (r == -ESRCH && was == VM_STOPPING && reason &&
			   !strcmp(reason, VM_REASON_TURNING_OFF)) {
			/* A turn-off the last daemon sent: the worker was killed
			 * (nothing reports a SIGKILL), as asked. */
			pthread_mutex_lock(&vm->d->lock);
			vm_set_state_locked(vm, VM_OFF, "turned off (the worker ended while cloisond "
					    "was not running)");
			pthread_mutex_unlock(&vm->d->lock);
		} else if (r < 0) {
			pthread_mutex_lock(&vm->d->lock);
			vm_set_state_locked(vm, VM_CRASHED, why);
			pthread_mutex_unlock(&vm->d->lock);
			unresponsive = r == -EPROTO;
		}
	}
	json_decref(j);

	/* A worker with no record: the last daemon died between spawning it
	 * and writing worker.json, so it never let the guest run (--paused).
	 * Or a recorded one that does not answer. It holds the disks; end it. */
	pthread_mutex_lock(&vm->d->lock);
	pid_t keep = vm->worker_pid;
	pthread_mutex_unlock(&vm->d->lock);
	if (worker_end_strays(vm, keep, pids, sizeof(pids)) > 0 && keep == 0) {
		char first[256];
		snprintf(first, sizeof(first), "%s", why);
		if (unresponsive)
			snprintf(why, sizeof(why), "%s; cloisond ended it (pid %s): a worker it "
				 "cannot control would go on holding the disks", first, pids);
		else if (starting)
			snprintf(why, sizeof(why), "cloisond stopped while starting the VM; its "
				 "worker (pid %s), which it had not recorded yet, was ended before "
				 "the guest ran", pids);
		else
			snprintf(why, sizeof(why), "a worker (pid %s) ran without a record in "
				 "worker.json and was ended when cloisond started", pids);
		pthread_mutex_lock(&vm->d->lock);
		vm_set_state_locked(vm, starting ? VM_OFF : VM_CRASHED, why);
		pthread_mutex_unlock(&vm->d->lock);
	}
}

void vm_recover_all(struct daemon *d)
{
	for (struct vm *vm = d->vms; vm; vm = vm->next)
		recover_runtime(vm);
}

void vm_imported(struct vm *vm)
{
	char sb[2400];

	snprintf(sb, sizeof(sb), "%s/state.bin", vm->saved_dir);
	bool saved = access(sb, F_OK) == 0;
	pthread_mutex_lock(&vm->d->lock);
	vm_set_state_locked(vm, saved ? VM_SAVED : VM_OFF, "imported");
	pthread_mutex_unlock(&vm->d->lock);
}

static int refuse(struct vm *vm, enum vm_op op, char *err, size_t errlen)
{
	const char *why;

	if (vm->removed) {
		snprintf(err, errlen, "VM '%s' was removed", vm->cfg.name);
		return -ENOENT;
	}
	if (vm_state_check(vm->state, op, &why) == 0)
		return 0;
	snprintf(err, errlen, "VM '%s' is %s: %s", vm->cfg.name, vm_state_name(vm->state), why);
	return -EBUSY;
}

/* Waits (d->lock held) until the state is none of the listed ones or the
 * deadline passes; returns false on timeout. */
static bool wait_state_leaves(struct vm *vm, enum vm_state a, enum vm_state b, enum vm_state c,
			      unsigned timeout_s, bool stop_on_turn_off)
{
	struct timespec dl;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += timeout_s;
	while (vm->state == a || vm->state == b || vm->state == c) {
		if (stop_on_turn_off && vm->turn_off_requested)
			return false;
		if (pthread_cond_timedwait(&vm->d->cond, &vm->d->lock, &dl) == ETIMEDOUT)
			return !(vm->state == a || vm->state == b || vm->state == c);
	}
	return true;
}

/* ---- the images a VM uses ---- */

void vm_images_free(struct vm_image *imgs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		free(imgs[i].path);
		free(imgs[i].child);
	}
	free(imgs);
}

struct image_list {
	struct vm_image *v;
	unsigned n, cap;
};

static int image_add(struct image_list *l, const char *path, const char *child, unsigned depth,
		     bool writable)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return 1; /* nothing there: the chain ends */
	for (unsigned i = 0; i < l->n; i++)
		if (l->v[i].dev == st.st_dev && l->v[i].ino == st.st_ino && l->v[i].depth == depth &&
		    !strcmp(l->v[i].child ? l->v[i].child : "", child ? child : ""))
			return 1; /* seen: a loop, or two disks sharing a parent */
	if (l->n == l->cap) {
		unsigned cap = l->cap ? 2 * l->cap : 16;
		struct vm_image *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	struct vm_image *im = &l->v[l->n];
	*im = (struct vm_image){ .dev = st.st_dev, .ino = st.st_ino, .depth = depth,
				 .writable = writable, .path = strdup(path),
				 .child = child ? strdup(child) : NULL };
	if (!im->path || (child && !im->child)) {
		free(im->path);
		free(im->child);
		return -ENOMEM;
	}
	l->n++;
	return 0;
}

#ifdef CLOISON_HAVE_DISK_LIB
/* One image at a time, without its parent: an image another process
 * writes (locked) still ends up in the list, and a broken chain is listed
 * as far as it can be read. */
static int chain_walk(struct image_list *l, const char *top, bool writable)
{
	char path[4096], child[4096] = "";
	int r;

	snprintf(path, sizeof(path), "%s", top);
	for (unsigned depth = 0; depth < 64; depth++) {
		r = image_add(l, path, depth ? child : NULL, depth, writable && depth == 0);
		if (r)
			return r < 0 ? r : 0;
		struct disk *dk;
		struct disk_error derr = { { 0 } };
		if (disk_open(path, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &dk, &derr))
			return 0;
		struct disk_info info;
		disk_get_info(dk, &info);
		disk_close(dk);
		if (!info.has_parent || !info.parent_path[0])
			return 0;
		snprintf(child, sizeof(child), "%s", path);
		snprintf(path, sizeof(path), "%s", info.parent_path);
	}
	return 0;
}
#endif

int vm_images_collect(const struct vm_config *c, struct vm_image **out, unsigned *n)
{
	struct image_list l = { 0 };
	int r = 0;

	for (unsigned i = 0; !r && i < c->n_disks; i++) {
		const struct vm_disk *disk = &c->disks[i];
#ifdef CLOISON_HAVE_DISK_LIB
		/* The parents the worker will use are the ones a full open finds;
		 * when that fails (an image is locked), follow the locators. */
		struct disk *dk;
		struct disk_error derr = { { 0 } };
		if (disk_open(disk->path, DISK_OPEN_RDONLY, &dk, &derr) == 0) {
			const char *child = NULL;
			unsigned depth = 0;
			for (struct disk *p = dk; p && r >= 0; p = disk_parent(p), depth++) {
				r = image_add(&l, disk_path(p), child, depth,
					      depth == 0 && !disk->readonly);
				child = disk_path(p);
			}
			disk_close(dk);
			r = r < 0 ? r : 0;
			continue;
		}
		r = chain_walk(&l, disk->path, !disk->readonly);
#else
		r = image_add(&l, disk->path, NULL, 0, !disk->readonly);
		r = r < 0 ? r : 0;
#endif
	}
	if (r) {
		vm_images_free(l.v, l.n);
		return r;
	}
	*out = l.v;
	*n = l.n;
	return 0;
}

/* Hyper-V refuses to start a VM whose disk another running VM writes (or
 * reads while this one would write): two writers corrupt an image. The
 * same holds for a differencing chain: the parent, at any depth, of a disk
 * a VM uses is read-only for every VM, because one write to it makes every
 * child unusable. Files are compared by device and inode, so two paths to
 * one file are caught. Caller holds d->lock. */
static int check_disks_free_locked(struct vm *vm, const struct vm_image *mine, unsigned n,
				   char *err, size_t errlen)
{
	for (unsigned i = 0; i < n; i++) {
		const struct vm_image *a = &mine[i];
		for (struct vm *o = vm->d->vms; o; o = o->next) {
			if (o == vm || !vm_state_has_worker(o->state))
				continue;
			for (unsigned k = 0; k < o->n_images; k++) {
				const struct vm_image *b = &o->images[k];
				if (a->dev != b->dev || a->ino != b->ino ||
				    (!a->writable && !b->writable))
					continue;
				if (a->depth == 0 && b->depth == 0)
					snprintf(err, errlen,
						 "disk '%s' is in use by VM '%s', which is %s",
						 a->path, o->cfg.name, vm_state_name(o->state));
				else if (a->writable)
					snprintf(err, errlen,
						 "disk '%s' is the differencing parent of '%s', which "
						 "VM '%s' uses (%s): a parent is read-only while a "
						 "child of it is in use; attach it read-only or stop "
						 "'%s' first",
						 a->path, b->child, o->cfg.name, vm_state_name(o->state),
						 o->cfg.name);
				else
					snprintf(err, errlen,
						 "disk '%s' is the differencing parent of '%s' of this "
						 "VM, and VM '%s' (%s) writes it: a parent is read-only "
						 "while a child of it is in use; stop '%s' or attach "
						 "'%s' to it read-only",
						 b->path, a->child, o->cfg.name, vm_state_name(o->state),
						 o->cfg.name, b->path);
				return -EBUSY;
			}
		}
	}
	return 0;
}

/* ---- memory admission ---- */

#define MEMORY_RESERVE_MIN (256ULL << 20)
#define MEMORY_RESERVE_MAX (2ULL << 30)

static uint64_t resident_bytes(pid_t pid)
{
	char path[64];
	unsigned long long size, rss = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &size, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A start must fit in what the host has: its available memory, less a
 * reserve for the host itself (5% of its memory, 256 MiB to 2 GiB), less
 * what the other VMs are assigned but have not touched yet (guest memory
 * is allocated as the guest uses it, so MemAvailable alone would admit
 * the same memory twice). Caller holds d->lock. */
static int check_memory_locked(struct vm *vm, char *err, size_t errlen)
{
	uint64_t total, avail, pending = 0;

	host_meminfo(&total, &avail);
	if (!total)
		return 0; /* no /proc/meminfo: nothing to go by */
	uint64_t reserve = total / 20;
	if (reserve < MEMORY_RESERVE_MIN)
		reserve = MEMORY_RESERVE_MIN;
	if (reserve > MEMORY_RESERVE_MAX)
		reserve = MEMORY_RESERVE_MAX;
	for (struct vm *o = vm->d->vms; o; o = o->next) {
		if (o == vm || !vm_state_has_worker(o->state))
			continue;
		pid_t pid = worker_vmm_pid(o);
		uint64_t rss = pid > 0 ? resident_bytes(pid) : 0;
		if (o->cfg.memory > rss)
			pending += o->cfg.memory - rss;
	}
	uint64_t room = avail > reserve + pending ? avail - reserve - pending : 0;
	if (vm->cfg.memory <= room)
		return 0;
	snprintf(err, errlen,
		 "not enough memory to start '%s': it needs %llu MiB, and the host has %llu MiB "
		 "available, less %llu MiB kept for the host and %llu MiB that running VMs are "
		 "assigned but do not use yet, which leaves %llu MiB; give it less memory "
		 "('cloison vm set %s --memory SIZE') or stop another VM",
		 vm->cfg.name, (unsigned long long)(vm->cfg.memory >> 20),
		 (unsigned long long)(avail >> 20), (unsigned long long)(reserve >> 20),
		 (unsigned long long)(pending >> 20), (unsigned long long)(room >> 20),
		 vm->cfg.name);
	return -EBUSY;
}

int vm_op_start(struct vm *vm, char *err, size_t errlen)
{
	struct daemon *d = vm->d;
	struct vm_config cfg;
	struct vm_image *images = NULL;
	unsigned n_images = 0;
	bool restore = false;
	int r;

	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&d->lock);
	r = refuse(vm, VM_OP_START, err, errlen);
	if (!r)
		r = vm_config_copy(&cfg, &vm->cfg);
	pthread_mutex_unlock(&d->lock);
	if (r) {
		if (r == -ENOMEM)
			snprintf(err, errlen, "out of memory");
		pthread_mutex_unlock(&vm->op_lock);
		return r;
	}
	r = vm_images_collect(&cfg, &images, &n_images);
	pthread_mutex_lock(&d->lock);
	if (r)
		snprintf(err, errlen, "out of memory");
	if (!r)
		r = refuse(vm, VM_OP_START, err, errlen);
	if (!r)
		r = check_disks_free_locked(vm, images, n_images, err, errlen);
	if (!r)
		r = check_memory_locked(vm, err, errlen);
	if (!r)
		r = vm_check_cpu_reserve_locked(vm, &vm->cfg, "cannot start", err, errlen);
	if (r) {
		vm_images_free(images, n_images);
		goto out_unlock;
	}
	vm_images_free(vm->images, vm->n_images);
	vm->images = images;
	vm->n_images = n_images;
	restore = vm->state == VM_SAVED;
	vm->restoring = restore;
	vm->start_failed = false;
	vm->turning_off = false;
	vm->turn_off_requested = false;
	vm->exit_seen = false;
	vm->exit_detail[0] = 0;
	vm_set_state_locked(vm, VM_STARTING, NULL);
	pthread_mutex_unlock(&d->lock);

	/* The VM is off, so any worker in its runtime dir is one nobody
	 * recorded: it would be a second writer of the disks. */
	worker_end_strays(vm, 0, NULL, 0);
	/* Switch adapters get their taps now; a failure below takes them away
	 * again as the state leaves starting. */
	r = vswitch_vm_ports_up(d, &cfg, err, errlen);
	if (!r)
		r = worker_spawn(vm, &cfg, restore ? vm->saved_dir : NULL, err, errlen);
	pthread_mutex_lock(&d->lock);
	if (r) {
		/* A restore that cannot begin keeps the saved state. */
		vm_set_state_locked(vm, restore ? VM_SAVED : VM_OFF, err);
		vm->restoring = false;
		goto out_unlock;
	}
	if (!wait_state_leaves(vm, VM_STARTING, VM_STARTING, VM_STARTING, START_TIMEOUT_S,
			       false)) {
		snprintf(err, errlen, "the worker of '%s' did not report running within %d s",
			 vm->cfg.name, START_TIMEOUT_S);
		vm->turning_off = true;
		worker_kill_locked(vm);
		r = -ETIMEDOUT;
		goto out_unlock;
	}
	if (vm->start_failed || vm->state == VM_CRASHED || vm->state == VM_SAVED) {
		snprintf(err, errlen, "VM '%s' failed to %s: %s", vm->cfg.name,
			 restore ? "start from its saved state" : "start", vm->reason);
		r = -EIO;
	}
	bool consumed = restore && !r;
	vm->restoring = false;
out_unlock:
	pthread_mutex_unlock(&d->lock);
	/* The guest goes on from the state, which is now behind it: a later
	 * start boots, as after Hyper-V's resume from saved. The memory was
	 * loaded eagerly, so the files are no longer needed. */
	if (r == 0 && consumed && vm_saved_dir_remove(vm))
		log_warn("vm %s: cannot remove the saved state in %s: %s", vm->cfg.name,
			 vm->saved_dir, strerror(errno));
	pthread_mutex_unlock(&vm->op_lock);
	vm_config_clear(&cfg);
	return r;
}

/* ---- saved state ---- */

int vm_saved_dir_remove(const struct vm *vm)
{
	return remove_flat_dir(vm->saved_dir) ? -1 : 0;
}

#define SAVE_TIMEOUT_S 300
#define SAVE_EXIT_TIMEOUT_S 30

int vm_op_save(struct vm *vm, char *err, size_t errlen)
{
	struct daemon *d = vm->d;
	char cerr[512];
	int r;

	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&d->lock);
	r = refuse(vm, VM_OP_SAVE, err, errlen);
	enum vm_state was = vm->state;
	if (!r)
		vm_set_state_locked(vm, VM_SAVING, NULL);
	pthread_mutex_unlock(&d->lock);
	if (r)
		goto out;
	/* A state left from an earlier save that was never used is stale. */
	char into[2400];
	if (vm_saved_dir_remove(vm)) {
		snprintf(cerr, sizeof(cerr), "cannot remove the stale saved state in %.300s: %s",
			 vm->saved_dir, strerror(errno));
		r = -EIO;
	} else if (worker_save_dir(vm, into, sizeof(into), cerr, sizeof(cerr))) {
		r = -EIO;
	} else {
		json_t *args = json_pack("{s:s}", "path", into);
		r = worker_command_args(vm, "save", args, SAVE_TIMEOUT_S, NULL, cerr, sizeof(cerr));
		json_decref(args);
	}
	pthread_mutex_lock(&d->lock);
	if (r) {
		/* The worker goes on as it was (docs/state.md); so does the VM. */
		if (vm->state == VM_SAVING)
			vm_set_state_locked(vm, was, NULL);
		snprintf(err, errlen, "cannot save VM '%s': %s", vm->cfg.name, cerr);
		r = -EIO;
		pthread_mutex_unlock(&d->lock);
		vm_saved_dir_remove(vm);
		goto out;
	}
	/* The worker replied; its exit (status 5) makes the VM saved. */
	if (!wait_state_leaves(vm, VM_SAVING, VM_SAVING, VM_SAVING, SAVE_EXIT_TIMEOUT_S, false)) {
		snprintf(err, errlen, "the worker of '%s' saved the VM but did not exit within %d s",
			 vm->cfg.name, SAVE_EXIT_TIMEOUT_S);
		r = -ETIMEDOUT;
	} else if (vm->state != VM_SAVED) {
		snprintf(err, errlen, "the worker of '%s' ended during the save: %s", vm->cfg.name,
			 vm->reason);
		r = -EIO;
	}
	pthread_mutex_unlock(&d->lock);
out:
	pthread_mutex_unlock(&vm->op_lock);
	return r;
}

int vm_op_discard_saved(struct vm *vm, char *err, size_t errlen)
{
	struct daemon *d = vm->d;
	int r;

	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&d->lock);
	r = refuse(vm, VM_OP_DISCARD_SAVED, err, errlen);
	pthread_mutex_unlock(&d->lock);
	if (r)
		goto out;
	/* The files first: a crash in between leaves a saved VM whose state is
	 * gone, which the next daemon turns off. */
	if (vm_saved_dir_remove(vm)) {
		snprintf(err, errlen, "cannot remove the saved state in %.300s: %s", vm->saved_dir,
			 strerror(errno));
		r = -EIO;
		goto out;
	}
	pthread_mutex_lock(&d->lock);
	vm_set_state_locked(vm, VM_OFF, "the saved state was discarded");
	pthread_mutex_unlock(&d->lock);
out:
	pthread_mutex_unlock(&vm->op_lock);
	return r;
}

/* Update-VMVersion. Only an off VM: a worker runs (or a saved state
 * waits) with the machine of its version, and the new version's devices
 * would change that machine under the guest. */
int vm_op_upgrade_version(struct vm *vm, char from[VM_VERSION_LEN], bool *changed, char *err,
			  size_t errlen)
{
	struct daemon *d = vm->d;
	struct vm_config next;
	int r;

	*changed = false;
	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&vm->cfg_lock);
	pthread_mutex_lock(&d->lock);
	snprintf(from, VM_VERSION_LEN, "%s", vm->cfg.version);
	if (vm->removed) {
		snprintf(err, errlen, "VM '%s' was removed", vm->cfg.name);
		r = -ENOENT;
	} else if (vm->state != VM_OFF && vm->state != VM_CRASHED) {
		snprintf(err, errlen, "VM '%s' is %s: its configuration version can change only "
			 "while it is off (%s)", vm->cfg.name, vm_state_name(vm->state),
			 vm->state == VM_SAVED ? "discard its saved state, or start it and shut it "
						 "down, first"
					       : "shut it down first");
		r = -EBUSY;
	} else {
		r = vm_config_copy(&next, &vm->cfg);
	}
	pthread_mutex_unlock(&d->lock);
	if (r)
		goto out;
	r = vm_config_upgrade_version(&next, changed);
	if (r)
		snprintf(err, errlen, "no randomness for the VM's generation id");
	else if (*changed || !guid_equal(&next.generation_id, &vm->cfg.generation_id))
		r = inventory_replace_config(vm, &next, err, errlen);
	vm_config_clear(&next);
out:
	pthread_mutex_unlock(&vm->cfg_lock);
	pthread_mutex_unlock(&vm->op_lock);
	return r;
}

/* Ends the worker: poweroff on the control socket, then SIGKILL. Called
 * with d->lock held and the VM in a running-ish state. */
static int turn_off_locked(struct vm *vm, char *err, size_t errlen)
{
	struct daemon *d = vm->d;
	char cerr[256];

	vm->turning_off = true;
	if (vm->state != VM_STOPPING)
		vm_set_state_locked(vm, VM_STOPPING, VM_REASON_TURNING_OFF);
	pthread_mutex_unlock(&d->lock);
	int r = worker_command(vm, "poweroff", NULL, cerr, sizeof(cerr));
	pthread_mutex_lock(&d->lock);
	if (r)
		log_warn("vm %s: poweroff on the control socket failed (%s); killing the worker",
			 vm->cfg.name, cerr);
	if (!r && wait_state_leaves(vm, VM_STOPPING, VM_RUNNING, VM_PAUSED, POWEROFF_TIMEOUT_S,
				    false))
		return 0;
	worker_kill_locked(vm);
	if (wait_state_leaves(vm, VM_STOPPING, VM_RUNNING, VM_PAUSED, KILL_TIMEOUT_S, false))
		return 0;
	snprintf(err, errlen, "the worker of '%s' (pid %d) did not end after SIGKILL", vm->cfg.name,
		 (int)vm->worker_pid);
	return -EIO;
}

/* A turn-off while a graceful stop waits: cut the wait short. */
static int turn_off_during_stop(struct vm *vm)
{
	struct daemon *d = vm->d;

	pthread_mutex_lock(&d->lock);
	if (vm->state != VM_STOPPING || vm->turning_off) {
		pthread_mutex_unlock(&d->lock);
		return -EAGAIN;
	}
	vm->turn_off_requested = true;
	pthread_cond_broadcast(&d->cond);
	wait_state_leaves(vm, VM_STOPPING, VM_STOPPING, VM_STOPPING,
			  POWEROFF_TIMEOUT_S + KILL_TIMEOUT_S + 5, false);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int vm_op_stop(struct vm *vm, bool turn_off, unsigned timeout_s, bool *forced, char *err,
	       size_t errlen)
{
	struct daemon *d = vm->d;
	char cerr[256];
	int r;

	*forced = turn_off;
	if (turn_off && turn_off_during_stop(vm) == 0)
		return 0;
	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&d->lock);
	r = refuse(vm, turn_off ? VM_OP_TURN_OFF : VM_OP_STOP, err, errlen);
	if (r)
		goto out;
	if (turn_off) {
		r = turn_off_locked(vm, err, errlen);
		goto out;
	}
	vm->turn_off_requested = false;
	/* The agent first, as Hyper-V's shutdown service; the power button
	 * when there is none, it is off, or it does not answer. */
	pthread_mutex_unlock(&d->lock);
	r = agent_shutdown(vm, cerr, sizeof(cerr));
	pthread_mutex_lock(&d->lock);
	if (r && r != -ENOTCONN && r != -EPERM)
		log_info("vm %s: agent shutdown: %s; pressing the power button", vm->cfg.name, cerr);
	if (!r) {
		if (vm->state == VM_RUNNING || vm->state == VM_PAUSED)
			vm_set_state_locked(vm, VM_STOPPING, "shutting down (integration services)");
	} else {
		vm_set_state_locked(vm, VM_STOPPING, "shutting down (ACPI power button)");
		pthread_mutex_unlock(&d->lock);
		r = worker_command(vm, "shutdown", NULL, cerr, sizeof(cerr));
		pthread_mutex_lock(&d->lock);
	}
	if (r) {
		if (vm->state == VM_STOPPING)
			vm_set_state_locked(vm, VM_RUNNING, NULL);
		snprintf(err, errlen, "cannot press the power button of '%s': %s", vm->cfg.name,
			 cerr);
		r = -EIO;
		goto out;
	}
	if (wait_state_leaves(vm, VM_STOPPING, VM_STOPPING, VM_STOPPING, timeout_s, true))
		goto out;
	/* The guest ignored the button (or a turn-off came in): Hyper-V turns
	 * the VM off once the caller's patience runs out. */
	*forced = true;
	log_info("vm %s: %s; turning it off", vm->cfg.name,
		 vm->turn_off_requested ? "turn-off requested during shutdown"
					: "the guest did not shut down in time");
	r = turn_off_locked(vm, err, errlen);
	if (!r && !vm->turn_off_requested && vm->state == VM_OFF) {
		char why[128];
		snprintf(why, sizeof(why), "turned off: the guest did not shut down within %u s",
			 timeout_s);
		snprintf(vm->reason, sizeof(vm->reason), "%s", why);
		inventory_save_status(vm);
	}
out:
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_unlock(&vm->op_lock);
	return r;
}

static int simple_op(struct vm *vm, enum vm_op op, const char *cmd, enum vm_state to, char *err,
		     size_t errlen)
{
	struct daemon *d = vm->d;
	char cerr[256];
	int r;

	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&d->lock);
	r = refuse(vm, op, err, errlen);
	pthread_mutex_unlock(&d->lock);
	if (r)
		goto out;
	r = worker_command(vm, cmd, NULL, cerr, sizeof(cerr));
	pthread_mutex_lock(&d->lock);
	if (r) {
		snprintf(err, errlen, "the worker of '%s' refused '%s': %s", vm->cfg.name, cmd, cerr);
		r = r == -EPROTO ? -EBUSY : -EIO;
	} else if (vm->state == VM_RUNNING || vm->state == VM_PAUSED) {
		if (vm->state != to || op == VM_OP_RESTART)
			vm_set_state_locked(vm, to, op == VM_OP_RESTART ? "restarted" : NULL);
	}
	pthread_mutex_unlock(&d->lock);
out:
	pthread_mutex_unlock(&vm->op_lock);
	return r;
}

int vm_op_pause(struct vm *vm, char *err, size_t errlen)
{
	return simple_op(vm, VM_OP_PAUSE, "pause", VM_PAUSED, err, errlen);
}

int vm_op_resume(struct vm *vm, char *err, size_t errlen)
{
	return simple_op(vm, VM_OP_RESUME, "resume", VM_RUNNING, err, errlen);
}

int vm_op_restart(struct vm *vm, char *err, size_t errlen)
{
	return simple_op(vm, VM_OP_RESTART, "reset", VM_RUNNING, err, errlen);
}

json_t *vm_to_json_locked(struct vm *vm)
{
	json_t *j = vm_config_to_json(&vm->cfg);

	json_object_del(j, "schema_version");
	json_object_set_new(j, "state", json_string(vm_state_name(vm->state)));
	json_object_set_new(j, "reason", json_string(vm->reason));
	pid_t vmm_pid = worker_vmm_pid(vm);
	json_object_set_new(j, "pid", vmm_pid > 0 ? json_integer(vmm_pid) : json_null());
	json_object_set_new(j, "sandbox",
			    vm->sandbox_uid ? json_pack("{s:b, s:I, s:i}", "enabled", 1, "uid",
							(json_int_t)vm->sandbox_uid, "supervisor_pid",
							(int)vm->worker_pid)
			    : vm->worker_pid > 0 ? json_pack("{s:b}", "enabled", 0)
						 : json_null());
	bool up = vm->state == VM_RUNNING || vm->state == VM_PAUSED || vm->state == VM_STOPPING;
	json_object_set_new(j, "uptime_ms",
			    up && vm->started_ns ? json_integer((json_int_t)((now_ns() - vm->started_ns) /
									 1000000))
					      : json_null());
	/* dynamic memory: Hyper-V Manager's "Assigned Memory" and "Memory
	 * Demand" columns, as the balancer last saw them */
	bool mem = up && vm->cfg.dynamic_memory && vm->mem_known;
	json_object_set_new(j, "memory_assigned",
			    mem ? json_integer((json_int_t)vm->mem_assigned) : json_null());
	json_object_set_new(j, "memory_demand", mem && vm->mem_demand
							? json_integer((json_int_t)vm->mem_demand)
							: json_null());
	json_object_set_new(j, "memory_target",
			    mem ? json_integer((json_int_t)vm->mem_target) : json_null());
	json_object_set_new(j, "config_path", json_string(vm->cfg_path));
	json_object_set_new(j, "runtime_dir", json_string(vm->rundir));
	vswitch_vm_json_locked(vm, j);
	json_object_set_new(j, "integration_services", agent_json_locked(vm));
	json_object_set_new(j, "features", vm_config_features_json(&vm->cfg));
	return j;
}

json_t *vm_to_json(struct vm *vm)
{
	pthread_mutex_lock(&vm->d->lock);
	json_t *j = vm_to_json_locked(vm);
	pthread_mutex_unlock(&vm->d->lock);
	return j;
}

/* ---- host start and stop actions ---- */

void vm_run_start_actions(struct daemon *d)
{
	struct vm *list[4096];
	unsigned n = 0;
	char err[512];

	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm && n < ARRAY_SIZE(list); vm = vm->next)
		if (vm->cfg.start_action == VM_START_ALWAYS &&
		    (vm->state == VM_OFF || vm->state == VM_CRASHED)) {
			vm->refs++;
			list[n++] = vm;
		}
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < n; i++) {
		if (list[i]->cfg.start_delay)
			sleep(list[i]->cfg.start_delay);
		log_info("vm %s: automatic start", list[i]->cfg.name);
		if (vm_op_start(list[i], err, sizeof(err)))
			log_error("vm %s: automatic start failed: %s", list[i]->cfg.name, err);
		inventory_put(d, list[i]);
	}
}

void vm_run_stop_actions(struct daemon *d)
{
	struct vm *list[4096];
	enum vm_stop_action action[4096];
	unsigned n = 0;
	char err[512];
	bool forced;

	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm && n < ARRAY_SIZE(list); vm = vm->next)
		if (vm->cfg.stop_action != VM_STOP_KEEP_RUNNING &&
		    (vm->state == VM_RUNNING || vm->state == VM_PAUSED)) {
			vm->refs++;
			action[n] = vm->cfg.stop_action;
			/* A paused guest cannot see the power button. */
			if (action[n] == VM_STOP_SHUTDOWN && vm->state == VM_PAUSED)
				action[n] = VM_STOP_TURN_OFF;
			list[n++] = vm;
		}
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < n; i++) {
		struct vm *vm = list[i];
		log_info("vm %s: automatic stop action: %s", vm->cfg.name,
			 action[i] == VM_STOP_SAVE	  ? "save"
			 : action[i] == VM_STOP_TURN_OFF ? "turn off"
							 : "shut down");
		int r;
		if (action[i] == VM_STOP_SAVE)
			/* A failed save leaves the VM running: the next cloisond
			 * adopts it, nothing is lost. */
			r = vm_op_save(vm, err, sizeof(err));
		else
			r = vm_op_stop(vm, action[i] == VM_STOP_TURN_OFF, d->default_stop_timeout,
				       &forced, err, sizeof(err));
		if (r)
			log_error("vm %s: automatic stop failed: %s", vm->cfg.name, err);
		inventory_put(d, vm);
	}
}
