/* Routes for /v1/vms: list, create, show, set, remove and the lifecycle
 * actions. Each handler parses its body into typed values first (config.c
 * for VM settings), checks the caller's role, then calls into vm.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CLOISON_HAVE_DISK_LIB
#include "disk/disk.h"
#endif
#include "common/util.h"
#include "daemon/cgroup.h"
#include "daemon/api/api.h"

#define ERR_LEN 1024

static bool require_admin(struct api_request *req, const char *what)
{
	if (req->peer.admin)
		return true;
	api_error(req, 403, "forbidden",
		  "user '%s' may not %s: that needs a host administrator (root, a member of "
		  "group '%s', or a user listed in cloisond's configuration)",
		  req->peer.user, what, req->d->admin_group);
	return false;
}

/* The answer to a VM the caller may not see: the same as for a VM that
 * does not exist, so an operator cannot probe which names are taken. */
void api_error_no_vm(struct api_request *req, const char *name)
{
	if (req->peer.admin)
		api_error(req, 404, "not-found", "no VM named '%s' (see 'cloison vm list')", name);
	else
		api_error(req, 404, "not-found", "no VM named '%s' is delegated to user '%s'", name,
			  req->peer.user);
}

/* Looks up segs[2] and checks that the caller may act on it; answers the
 * request and returns NULL when not. The caller puts the reference. */
static struct vm *lookup_vm(struct api_request *req)
{
	const char *name = req->segs[2];
	struct vm *vm = inventory_get(req->d, name);

	if (!vm) {
		api_error_no_vm(req, name);
		return NULL;
	}
	pthread_mutex_lock(&req->d->lock);
	bool ok = auth_may_operate(&req->peer, vm);
	pthread_mutex_unlock(&req->d->lock);
	if (!ok) {
		api_error_no_vm(req, name);
		inventory_put(req->d, vm);
		return NULL;
	}
	return vm;
}

static void reply_vm(struct api_request *req, unsigned status, struct vm *vm)
{
	api_reply(req, status, vm_to_json(vm));
}

void api_vms_list(struct api_request *req)
{
	json_t *arr = json_array();

	pthread_mutex_lock(&req->d->lock);
	for (struct vm *vm = req->d->vms; vm; vm = vm->next)
		if (auth_may_operate(&req->peer, vm))
			json_array_append_new(arr, vm_to_json_locked(vm));
	pthread_mutex_unlock(&req->d->lock);
	api_reply(req, 200, arr);
}

/* Checks that the boot files and disks the config names can be used. */
static int check_files(const struct vm_config *c, char *err, size_t errlen)
{
	if (vm_config_check_boot_files(c, err, errlen))
		return -EINVAL;
	if (access(c->kernel, R_OK) < 0) {
		snprintf(err, errlen, "cannot read the kernel '%s': %s", c->kernel, strerror(errno));
		return -EINVAL;
	}
	if (c->initrd && access(c->initrd, R_OK) < 0) {
		snprintf(err, errlen, "cannot read the initrd '%s': %s", c->initrd, strerror(errno));
		return -EINVAL;
	}
	for (unsigned i = 0; i < c->n_disks; i++) {
		const struct vm_disk *disk = &c->disks[i];
		if (access(disk->path, disk->readonly ? R_OK : R_OK | W_OK) < 0) {
			snprintf(err, errlen, "cannot use the disk '%s': %s", disk->path,
				 strerror(errno));
			return -EINVAL;
		}
		if (strchr(disk->path, ',')) {
			snprintf(err, errlen, "disk path '%s' contains a comma, which is not supported",
				 disk->path);
			return -EINVAL;
		}
#ifdef CLOISON_HAVE_DISK_LIB
		struct disk *dk;
		struct disk_error derr = { { 0 } };
		int r = disk_open(disk->path, DISK_OPEN_RDONLY, &dk, &derr);
		if (r) {
			snprintf(err, errlen, "disk '%s' cannot be opened: %s", disk->path,
				 derr.msg[0] ? derr.msg : strerror(-r));
			return -EINVAL;
		}
		disk_close(dk);
#endif
	}
	return 0;
}

void api_vms_create(struct api_request *req)
{
	struct vm_config cfg = { 0 };
	char err[ERR_LEN];
	struct vm *vm;
	bool hw;
	int r;

	if (!require_admin(req, "create VMs"))
		return;
	json_t *body = api_parse_body(req, false);
	if (!body)
		return;
	r = vm_config_apply_json(&cfg, body, true, &hw, err, sizeof(err));
	json_decref(body);
	if (!r)
		r = check_files(&cfg, err, sizeof(err));
	if (!r)
		r = vswitch_check_config(req->d, &cfg, err, sizeof(err));
	if (!r)
		r = inventory_create(req->d, &cfg, &vm, err, sizeof(err));
	if (r) {
		vm_config_clear(&cfg);
		api_error_errno(req, r, err);
		return;
	}
	reply_vm(req, 201, vm);
	inventory_put(req->d, vm);
}

void api_vm_show(struct api_request *req)
{
	struct vm *vm = lookup_vm(req);

	if (!vm)
		return;
	reply_vm(req, 200, vm);
	inventory_put(req->d, vm);
}

static int apply_set(struct api_request *req, struct vm *vm, json_t *body, char *err,
		     size_t errlen)
{
	struct daemon *d = req->d;
	struct vm_config next;
	const char *why;
	bool hw;
	int r;

	pthread_mutex_lock(&d->lock);
	r = vm->removed ? -ENOENT : vm_config_copy(&next, &vm->cfg);
	pthread_mutex_unlock(&d->lock);
	if (r) {
		snprintf(err, errlen, "VM '%s' was removed", vm->cfg.name);
		return r;
	}
	r = vm_config_apply_json(&next, body, false, &hw, err, errlen);
	if (!r && hw)
		r = check_files(&next, err, errlen);
	if (!r && hw)
		r = vswitch_check_config(d, &next, err, errlen);
	if (r)
		goto out;
	pthread_mutex_lock(&d->lock);
	if (hw && vm_state_check(vm->state, VM_OP_SET_HARDWARE, &why)) {
		snprintf(err, errlen, "VM '%s' is %s: %s", vm->cfg.name, vm_state_name(vm->state),
			 why);
		r = -EBUSY;
	}
	for (unsigned i = 0; !r && i < next.n_nics; i++)
		if (next.nics[i].mac_auto && !next.nics[i].mac[0] &&
		    macpool_allocate(d, next.nics[i].mac)) {
			macpool_exhausted(d, err, errlen);
			r = -ENOSPC;
		}
	bool running = vm_state_has_worker(vm->state);
	/* a running VM's reserve is held now: more of it must fit too */
	if (!r && running && next.cpu_reserve > vm->cfg.cpu_reserve)
		r = vm_check_cpu_reserve_locked(vm, &next, "cannot raise the CPU reserve of running "
						"VM", err, errlen);
	pthread_mutex_unlock(&d->lock);
	/* A running VM's CPU controls change at once (Hyper-V allows it) */
	if (!r && running &&
	    (next.cpu_limit != vm->cfg.cpu_limit || next.cpu_weight != vm->cfg.cpu_weight)) {
		char dirs[CGROUP_DIRS][PATH_MAX], idbuf[GUID_STR_LEN];
		struct cgroup_limits l;
		unsigned n;
		vm_cgroup_limits(&next, &l);
		r = cgroup_vm_apply(cgroup_host(), guid_to_string(&next.id, idbuf), &l, dirs, &n, err,
				    errlen);
	}
	if (!r) /* the file first: a failed write changes nothing */
		r = inventory_replace_config(vm, &next, err, errlen);
out:
	vm_config_clear(&next);
	return r;
}

void api_vm_set(struct api_request *req)
{
	char err[ERR_LEN];

	if (!require_admin(req, "change VM settings"))
		return;
	struct vm *vm = lookup_vm(req);
	if (!vm)
		return;
	json_t *body = api_parse_body(req, false);
	if (body) {
		/* Notes, operators and automatic actions do not wait for an
		 * operation in progress (e.g. a graceful stop). */
		bool hw = vm_config_body_needs_off(body);
		if (hw)
			pthread_mutex_lock(&vm->op_lock);
		pthread_mutex_lock(&vm->cfg_lock);
		int r = apply_set(req, vm, body, err, sizeof(err));
		pthread_mutex_unlock(&vm->cfg_lock);
		if (hw)
			pthread_mutex_unlock(&vm->op_lock);
		json_decref(body);
		if (r)
			api_error_errno(req, r, err);
		else
			reply_vm(req, 200, vm);
	}
	inventory_put(req->d, vm);
}

void api_vm_remove(struct api_request *req)
{
	char err[ERR_LEN];
	const char *why;
	int r;

	if (!require_admin(req, "remove VMs"))
		return;
	struct vm *vm = lookup_vm(req);
	if (!vm)
		return;
	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&req->d->lock);
	r = vm->removed ? -ENOENT : vm_state_check(vm->state, VM_OP_REMOVE, &why);
	json_t *kept = json_array();
	for (unsigned i = 0; i < vm->cfg.n_disks; i++)
		json_array_append_new(kept, json_string(vm->cfg.disks[i].path));
	if (r == -EBUSY)
		snprintf(err, sizeof(err), "VM '%s' is %s: %s", vm->cfg.name,
			 vm_state_name(vm->state), why);
	else if (r)
		snprintf(err, sizeof(err), "VM '%s' was removed", vm->cfg.name);
	pthread_mutex_unlock(&req->d->lock);
	if (!r) {
		/* No worker may outlive its VM (a stray would go on writing the
		 * disks of a VM that no longer exists). */
		worker_end_strays(vm, 0, NULL, 0);
		r = inventory_remove(req->d, vm);
		if (r)
			snprintf(err, sizeof(err), "cannot remove %.900s: %s", vm->cfg_path, strerror(-r));
	}
	pthread_mutex_unlock(&vm->op_lock);
	if (r) {
		json_decref(kept);
		api_error_errno(req, r, err);
	} else {
		api_reply(req, 200, json_pack("{s:s, s:o}", "removed", req->segs[2], "disks_kept",
					      kept));
	}
	inventory_put(req->d, vm);
}

/* The body of POST /v1/vms/{vm}/stop: {"turn_off": bool, "timeout": s}. */
static int parse_stop(struct api_request *req, json_t *body, bool *turn_off, unsigned *timeout)
{
	const char *key;
	json_t *v;

	*turn_off = false;
	*timeout = req->d->default_stop_timeout;
	json_object_foreach(body, key, v) {
		if (!strcmp(key, "turn_off") && json_is_boolean(v)) {
			*turn_off = json_is_true(v);
		} else if (!strcmp(key, "timeout") && json_is_integer(v) &&
			   json_integer_value(v) >= 0 && json_integer_value(v) <= 86400) {
			*timeout = (unsigned)json_integer_value(v);
		} else if (!strcmp(key, "turn_off") || !strcmp(key, "timeout")) {
			api_error(req, 400, "bad-request",
				  "field '%s' must be %s", key,
				  key[0] == 't' && key[1] == 'u' ? "a boolean"
								 : "an integer from 0 to 86400 (seconds)");
			return -EINVAL;
		} else {
			api_error(req, 400, "bad-request",
				  "unknown field '%s' (known for stop: turn_off, timeout)", key);
			return -EINVAL;
		}
	}
	return 0;
}

void api_vm_action(struct api_request *req)
{
	static const char *const actions[] = { "start", "stop", "pause", "resume", "restart",
					       "save", "export" };
	const char *action = req->segs[3];
	char err[ERR_LEN] = "";
	unsigned i, timeout = 0;
	bool turn_off = false, forced = false;
	int r;

	for (i = 0; i < ARRAY_SIZE(actions); i++)
		if (!strcmp(action, actions[i]))
			break;
	if (i == ARRAY_SIZE(actions)) {
		api_error(req, 404, "no-such-endpoint",
			  "unknown VM action '%s' (known: start, stop, pause, resume, restart, "
			  "save, export, console)",
			  action);
		return;
	}
	json_t *body = api_parse_body(req, true);
	if (!body)
		return;
	if (i >= 5) { /* a save or an export runs as a job (api/jobs.c, api/export.c) */
		struct vm *vm = lookup_vm(req);
		if (vm) {
			if (i == 5)
				api_vm_save(req, vm, body);
			else
				api_vm_export(req, vm, body);
			inventory_put(req->d, vm);
		}
		json_decref(body);
		return;
	}
	if (i == 1) {
		r = parse_stop(req, body, &turn_off, &timeout);
	} else if (json_object_size(body)) {
		api_error(req, 400, "bad-request", "unknown field '%s' (%s takes no fields)",
			  json_object_iter_key(json_object_iter(body)), action);
		r = -EINVAL;
	} else {
		r = 0;
	}
	json_decref(body);
	if (r)
		return;
	struct vm *vm = lookup_vm(req);
	if (!vm)
		return;
	switch (i) {
	case 0: r = vm_op_start(vm, err, sizeof(err)); break;
	case 1: r = vm_op_stop(vm, turn_off, timeout, &forced, err, sizeof(err)); break;
	case 2: r = vm_op_pause(vm, err, sizeof(err)); break;
	case 3: r = vm_op_resume(vm, err, sizeof(err)); break;
	default: r = vm_op_restart(vm, err, sizeof(err)); break;
	}
	if (r) {
		api_error_errno(req, r, err);
	} else {
		json_t *j = vm_to_json(vm);
		if (i == 1)
			json_object_set_new(j, "turned_off", json_boolean(forced));
		api_reply(req, 200, j);
	}
	inventory_put(req->d, vm);
}

/* DELETE /v1/vms/{vm}/saved-state: a saved VM goes off, its state dropped. */
void api_vm_discard_saved(struct api_request *req)
{
	char err[ERR_LEN] = "";

	struct vm *vm = lookup_vm(req);
	if (!vm)
		return;
	int r = vm_op_discard_saved(vm, err, sizeof(err));
	if (r) {
		api_error_errno(req, r, err);
	} else {
		api_reply(req, 200, vm_to_json(vm));
	}
	inventory_put(req->d, vm);
}

/* POST /v1/vms/{vm}/upgrade-version (Update-VMVersion): an off VM moves to
 * this build's default configuration version, irreversibly. The answer is
 * the VM, with "upgraded" and "previous_version". An administrator's
 * decision: the VM can then no longer go to a host of an older cloison. */
void api_vm_upgrade_version(struct api_request *req)
{
	char err[ERR_LEN] = "", from[VM_VERSION_LEN] = "";
	bool changed;

	json_t *body = api_parse_body(req, true);
	if (!body)
		return;
	if (json_object_size(body)) {
		api_error(req, 400, "bad-request", "unknown field '%s' (upgrade-version takes no "
			  "fields: it moves the VM to version %s, this host's default)",
			  json_object_iter_key(json_object_iter(body)), vm_version_default());
		json_decref(body);
		return;
	}
	json_decref(body);
	struct vm *vm = lookup_vm(req);
	if (!vm)
		return;
	if (!require_admin(req, "upgrade a VM's configuration version")) {
		inventory_put(req->d, vm);
		return;
	}
	int r = vm_op_upgrade_version(vm, from, &changed, err, sizeof(err));
	if (r) {
		api_error_errno(req, r, err);
	} else {
		json_t *j = vm_to_json(vm);
		json_object_set_new(j, "upgraded", json_boolean(changed));
		json_object_set_new(j, "previous_version", json_string(from));
		api_reply(req, 200, j);
	}
	inventory_put(req->d, vm);
}
