/* The inventory: VM configurations on disk in Hyper-V's layout
 * (DESIGN.md §5) and the in-memory list of VMs.
 *
 *   <state>/<name>/Virtual Machines/<GUID>.json   the configuration
 *   <state>/<name>/Virtual Machines/<GUID>/       runtime: status.json,
 *        worker.json (pid), control.sock, serial.sock, worker.log
 *   <state>/<name>/Virtual Hard Disks/            disks made for the VM
 *
 * Every file is replaced atomically (atomic_write_file), so a crash at any
 * point leaves either the old or the new configuration. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "daemon/daemon.h"

#define CONFIG_MAX (1 << 20)

static struct vm *vm_new(struct daemon *d, const struct vm_config *cfg)
{
	char id[GUID_STR_LEN];
	struct vm *vm = calloc(1, sizeof(*vm));

	if (!vm)
		return NULL;
	vm->d = d;
	vm->cfg = *cfg;
	vm->refs = 1; /* the list's */
	vm->monitor_fd = -1;
	pthread_mutex_init(&vm->cfg_lock, NULL);
	guid_to_string(&cfg->id, id);
	snprintf(vm->dir, sizeof(vm->dir), "%s/%s", d->state_dir, cfg->name);
	snprintf(vm->rundir, sizeof(vm->rundir), "%s/Virtual Machines/%s", vm->dir, id);
	snprintf(vm->cfg_path, sizeof(vm->cfg_path), "%s/Virtual Machines/%s.json", vm->dir, id);
	snprintf(vm->saved_dir, sizeof(vm->saved_dir), "%s/Saved", vm->dir);
	pthread_mutex_init(&vm->op_lock, NULL);
	return vm;
}

static void vm_free(struct vm *vm)
{
	vm_config_clear(&vm->cfg);
	vm_images_free(vm->images, vm->n_images);
	pthread_mutex_destroy(&vm->op_lock);
	pthread_mutex_destroy(&vm->cfg_lock);
	free(vm);
}

struct vm *inventory_get(struct daemon *d, const char *name_or_id)
{
	struct guid g;
	bool by_id = guid_parse(name_or_id, &g) == 0;

	pthread_mutex_lock(&d->lock);
	struct vm *vm = d->vms;
	for (; vm; vm = vm->next)
		if (!strcmp(vm->cfg.name, name_or_id) || (by_id && guid_equal(&g, &vm->cfg.id)))
			break;
	if (vm)
		vm->refs++;
	pthread_mutex_unlock(&d->lock);
	return vm;
}

void inventory_free_all(struct daemon *d)
{
	while (d->vms) {
		struct vm *vm = d->vms;
		d->vms = vm->next;
		vm_free(vm);
	}
}

void inventory_put(struct daemon *d, struct vm *vm)
{
	pthread_mutex_lock(&d->lock);
	bool last = --vm->refs == 0;
	pthread_mutex_unlock(&d->lock);
	if (last)
		vm_free(vm);
}

/* Writes cfg as vm's configuration file, atomically and durably. */
static int save_config(struct vm *vm, const struct vm_config *cfg)
{
	json_t *j = vm_config_to_json(cfg);
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	int r;

	json_decref(j);
	if (!text)
		return -ENOMEM;
	size_t len = strlen(text);
	char *withnl = realloc(text, len + 2);
	if (!withnl) {
		free(text);
		return -ENOMEM;
	}
	withnl[len] = '\n';
	withnl[len + 1] = 0;
	r = atomic_write_file(vm->cfg_path, withnl, len + 1, 0640);
	free(withnl);
	return r;
}

int inventory_save(struct vm *vm)
{
	struct vm_config copy;
	int r;

	pthread_mutex_lock(&vm->d->lock);
	r = vm_config_copy(&copy, &vm->cfg);
	pthread_mutex_unlock(&vm->d->lock);
	if (r)
		return r;
	r = save_config(vm, &copy);
	vm_config_clear(&copy);
	return r;
}

int inventory_replace_config(struct vm *vm, struct vm_config *next, char *err, size_t errlen)
{
	struct daemon *d = vm->d;
	int r;

	pthread_mutex_lock(&d->lock);
	bool removed = vm->removed;
	pthread_mutex_unlock(&d->lock);
	if (removed) {
		snprintf(err, errlen, "VM '%s' was removed", vm->cfg.name);
		return -ENOENT;
	}
	r = save_config(vm, next);
	if (r) {
		snprintf(err, errlen, "cannot write %.900s: %s; nothing was changed", vm->cfg_path,
			 strerror(-r));
		return r;
	}
	pthread_mutex_lock(&d->lock);
	struct vm_config old = vm->cfg;
	vm->cfg = *next;
	*next = old;
	events_push_locked(d, "config", json_pack("{s:s}", "vm", vm->cfg.name));
	pthread_mutex_unlock(&d->lock);
	return 0;
}

void inventory_save_status(struct vm *vm)
{
	char path[4200];
	json_t *j = json_pack("{s:s, s:s}", "state", vm_state_name(vm->state), "reason",
			      vm->reason);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (!text)
		return;
	snprintf(path, sizeof(path), "%s/status.json", vm->rundir);
	/* under d->lock: replaced whole now, made durable by the syncer */
	int r = atomic_replace_file(path, text, strlen(text), 0640, false);
	if (r)
		log_warn("%s: cannot record the VM state: %s", path, strerror(-r));
	else
		syncer_queue(vm->d, path);
	free(text);
}

static void link_vm(struct daemon *d, struct vm *vm)
{
	struct vm **pp = &d->vms;

	/* Keep the list sorted by name: `vm list` is then stable. */
	while (*pp && strcmp((*pp)->cfg.name, vm->cfg.name) < 0)
		pp = &(*pp)->next;
	vm->next = *pp;
	*pp = vm;
}

static bool name_taken(struct daemon *d, const char *name)
{
	for (struct vm *vm = d->vms; vm; vm = vm->next)
		if (!strcmp(vm->cfg.name, name))
			return true;
	return false;
}

int inventory_create(struct daemon *d, struct vm_config *cfg, struct vm **out, char *err,
		     size_t errlen)
{
	struct vm *vm;
	char path[4200];
	int r;

	if ((r = guid_generate(&cfg->id)))
		return r;
	vm_config_stamp(cfg);
	pthread_mutex_lock(&d->lock);
	if (name_taken(d, cfg->name)) {
		pthread_mutex_unlock(&d->lock);
		snprintf(err, errlen, "a VM named '%s' already exists", cfg->name);
		return -EEXIST;
	}
	for (unsigned i = 0; i < cfg->n_nics; i++)
		if (cfg->nics[i].mac_auto && (r = macpool_allocate(d, cfg->nics[i].mac))) {
			if (r == -ENOSPC)
				macpool_exhausted(d, err, errlen);
			else
				snprintf(err, errlen, "cannot record the VM's MAC address: %s", strerror(-r));
			pthread_mutex_unlock(&d->lock);
			return r;
		}
	vm = vm_new(d, cfg);
	if (!vm) {
		pthread_mutex_unlock(&d->lock);
		return -ENOMEM;
	}
	memset(cfg, 0, sizeof(*cfg)); /* vm owns the strings now */
	vm->state = VM_OFF;
	vm->refs++; /* the caller's */
	link_vm(d, vm);
	pthread_mutex_unlock(&d->lock);

	/* The VM is listed but its op_lock is ours: nobody can start it before
	 * its files exist. */
	pthread_mutex_lock(&vm->op_lock);
	snprintf(path, sizeof(path), "%s/Virtual Hard Disks", vm->dir);
	r = mkdir_p(path, 0750);
	if (!r)
		r = mkdir_p(vm->rundir, 0750);
	if (!r)
		r = inventory_save(vm);
	if (!r) {
		pthread_mutex_lock(&d->lock);
		inventory_save_status(vm);
		pthread_mutex_unlock(&d->lock);
	}
	pthread_mutex_unlock(&vm->op_lock);
	if (r) {
		snprintf(err, errlen, "cannot write the configuration of '%s' under %s: %s",
			 vm->cfg.name, vm->dir, strerror(-r));
		inventory_remove(d, vm);
		inventory_put(d, vm);
		return r;
	}
	*out = vm;
	return 0;
}

/* Whether name is a temporary file of atomic_write_file ("X.tmp.<pid>");
 * *pid gets the writer's pid. */
static bool is_tmp_name(const char *name, pid_t *pid)
{
	const char *t = strstr(name, ".tmp.");
	char *end;

	if (!t)
		return false;
	while (strstr(t + 1, ".tmp."))
		t = strstr(t + 1, ".tmp.");
	long n = strtol(t + 5, &end, 10);
	if (t[5] < '0' || t[5] > '9' || *end || n <= 0)
		return false;
	*pid = (pid_t)n;
	return true;
}

/* Removes the temporary files a writer killed mid-write left in dir: with
 * all, every one; else only those whose writer is gone (a live worker may
 * be writing its pidfile right now). */
static void remove_tmp_files(const char *dir, bool all)
{
	struct dirent *de;
	DIR *dp = opendir(dir);
	pid_t pid;

	if (!dp)
		return;
	while ((de = readdir(dp))) {
		if (!is_tmp_name(de->d_name, &pid))
			continue;
		if (!all && pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM))
			continue;
		char path[4600];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlinkat(dirfd(dp), de->d_name, 0) == 0)
			log_info("%s: removed a stale temporary file", path);
	}
	closedir(dp);
}

static void remove_runtime_files(const struct vm *vm)
{
	static const char *const names[] = { "status.json",  "worker.json",  "worker.pid",
					     "worker.exit",  "worker.watch", "control.sock",
					     "serial.sock",  "worker.log",   "worker.log.1",
					     "vsock.sock" };
	char path[4200];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", vm->rundir, names[i]);
		unlink(path);
	}
	remove_tmp_files(vm->rundir, true);
	rmdir(vm->rundir);
}

void inventory_sandbox_dir(const struct vm *vm, char *buf, size_t len)
{
	snprintf(buf, len, "%s/Sandbox", vm->dir);
}

int inventory_remove(struct daemon *d, struct vm *vm)
{
	char path[4200];
	int r = 0;

	/* A set of notes or operators (which does not wait for op_lock) must
	 * not write the file back after it is gone. */
	pthread_mutex_lock(&vm->cfg_lock);
	if (unlink(vm->cfg_path) < 0 && errno != ENOENT)
		r = -errno;
	if (r) {
		pthread_mutex_unlock(&vm->cfg_lock);
		return r;
	}
	pthread_mutex_lock(&d->lock);
	vm->removed = true;
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_unlock(&vm->cfg_lock);
	fsync_parent_dir(vm->cfg_path);
	remove_runtime_files(vm);
	if (vm_saved_dir_remove(vm))
		log_warn("vm %s: cannot remove the saved state in %s: %s", vm->cfg.name,
			 vm->saved_dir, strerror(errno));
	/* The sandbox's directory holds only what a worker wrote (a save that
	 * did not finish). */
	inventory_sandbox_dir(vm, path, sizeof(path));
	size_t plen = strlen(path);
	snprintf(path + plen, sizeof(path) - plen, "/Saved");
	remove_flat_dir(path);
	path[plen] = 0;
	rmdir(path);
	/* Directories go only when empty: virtual disks are never deleted. */
	snprintf(path, sizeof(path), "%s/Virtual Machines", vm->dir);
	remove_tmp_files(path, true);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/Virtual Hard Disks", vm->dir);
	rmdir(path);
	rmdir(vm->dir);

	pthread_mutex_lock(&d->lock);
	/* Queued while the VM is listed: its operators see it (events.c). */
	json_t *ev = json_pack("{s:s, s:s}", "vm", vm->cfg.name, "state", "removed");
	events_push_locked(d, "removed", ev);
	for (struct vm **pp = &d->vms; *pp; pp = &(*pp)->next)
		if (*pp == vm) {
			*pp = vm->next;
			break;
		}
	vm->removed = true;
	bool last = --vm->refs == 0;
	pthread_mutex_unlock(&d->lock);
	if (last)
		vm_free(vm);
	return 0;
}

/* ---- loading at daemon start ---- */

static int load_one(struct daemon *d, const char *dirname, const char *file)
{
	char path[4200], err[512];
	json_error_t jerr;
	struct vm_config cfg;
	json_t *j;

	snprintf(path, sizeof(path), "%s/%s/Virtual Machines/%s", d->state_dir, dirname, file);
	j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		log_error("%s: skipped, malformed JSON at line %d: %s", path, jerr.line, jerr.text);
		return -EINVAL;
	}
	int r = vm_config_from_json(j, &cfg, err, sizeof(err));
	json_decref(j);
	if (r) {
		log_error("%s: skipped: %s", path, err);
		vm_config_clear(&cfg);
		return r;
	}
	if (strcmp(cfg.name, dirname)) {
		log_warn("%s: the VM is named '%s' but lives in '%s'; using '%s'", path, cfg.name,
			 dirname, dirname);
		snprintf(cfg.name, sizeof(cfg.name), "%s", dirname);
	}
	pthread_mutex_lock(&d->lock);
	if (name_taken(d, cfg.name)) {
		pthread_mutex_unlock(&d->lock);
		log_error("%s: skipped, a second configuration for VM '%s'", path, cfg.name);
		vm_config_clear(&cfg);
		return -EEXIST;
	}
	for (unsigned i = 0; i < cfg.n_nics; i++)
		if (!cfg.nics[i].mac[0] && macpool_allocate(d, cfg.nics[i].mac))
			log_warn("%s: no MAC address left for adapter %u", path, i);
	struct vm *vm = vm_new(d, &cfg);
	if (!vm) {
		pthread_mutex_unlock(&d->lock);
		vm_config_clear(&cfg);
		return -ENOMEM;
	}
	link_vm(d, vm);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static void load_vm_dir(struct daemon *d, const char *name)
{
	char path[4200];
	struct dirent *de;
	struct guid g;

	snprintf(path, sizeof(path), "%s/%s/Virtual Machines", d->state_dir, name);
	remove_tmp_files(path, false);
	DIR *dir = opendir(path);
	if (!dir)
		return;
	while ((de = readdir(dir))) {
		size_t n = strlen(de->d_name);
		char base[64];
		if (n == 36 && guid_parse(de->d_name, &g) == 0) {
			char run[4400];
			snprintf(run, sizeof(run), "%s/%s", path, de->d_name);
			remove_tmp_files(run, false);
			continue;
		}
		if (n != 36 + 5 || strcmp(de->d_name + 36, ".json"))
			continue; /* also skips a leftover "x.json.tmp.<pid>" */
		snprintf(base, sizeof(base), "%.36s", de->d_name);
		if (guid_parse(base, &g))
			continue;
		load_one(d, name, de->d_name);
	}
	closedir(dir);
}

int inventory_load(struct daemon *d)
{
	struct dirent *de;
	DIR *dir = opendir(d->state_dir);

	if (!dir)
		return -errno;
	remove_tmp_files(d->state_dir, false);
	while ((de = readdir(dir)))
		if (vm_name_valid(de->d_name))
			load_vm_dir(d, de->d_name);
	closedir(dir);

	return 0;
}

struct vm *inventory_vm_unlisted(struct daemon *d, struct vm_config *cfg)
{
	struct vm *vm = vm_new(d, cfg);

	if (vm)
		memset(cfg, 0, sizeof(*cfg)); /* vm owns the strings now */
	return vm;
}

int inventory_add_dir(struct daemon *d, const char *name, struct vm **out, char *err,
		      size_t errlen)
{
	load_vm_dir(d, name);
	struct vm *vm = inventory_get(d, name);
	if (!vm) {
		snprintf(err, errlen, "the configuration put in %.1000s/%s could not be read (see "
			 "cloisond's log)", d->state_dir, name);
		return -EIO;
	}
	*out = vm;
	return 0;
}
