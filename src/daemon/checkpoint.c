/* Checkpoints (checkpoint.h): create, apply, rename and remove, the tree in
 * <vm>/Snapshots/checkpoints.json, and the recovery of a job a crash cut.
 *
 * The order of every operation is the same: make the new files, then one
 * atomic replace of the tree (the commit point), then the VM's
 * configuration, then remove what is no longer used. A recovery finds
 * which side of the commit point the crash was on: before it, it removes
 * the new files (the plan names them); after it, it finishes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/agent.h"
#include "daemon/checkpoint.h"
#include "disk/disk.h"

#define TREE_MAX (4 << 20)
#define MERGE_CHUNK (1 << 20)
#define FREEZE_TIMEOUT_S 60 /* the guest thaws by itself after this */

static const char *const type_names[] = { "production", "production-only", "standard",
					  "disabled", NULL };

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

/* ---- the tree file ---- */

static void tree_path(const struct vm *vm, char *buf, size_t len)
{
	snprintf(buf, len, "%s/Snapshots/checkpoints.json", vm->dir);
}

static json_t *tree_new(void)
{
	return json_pack("{s:i, s:s, s:n, s:n, s:[]}", "version", 1, "checkpoint_type",
			 "production", "folder", "current", "checkpoints");
}

/* Loads and checks the tree (a missing file is an empty tree). NULL with
 * err on a damaged file: nothing is changed then. */
static json_t *tree_load(const struct vm *vm, char *err, size_t errlen)
{
	char path[2400];
	json_error_t jerr;
	size_t i;
	json_t *cp;

	tree_path(vm, path, sizeof(path));
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return tree_new();
	json_t *t = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	json_t *cps = json_object_get(t, "checkpoints");
	bool ok = json_is_object(t) && json_integer_value(json_object_get(t, "version")) == 1 &&
		  json_is_array(cps);
	json_array_foreach(cps, i, cp) ok = ok && json_is_string(json_object_get(cp, "id")) &&
					    json_is_string(json_object_get(cp, "name")) &&
					    json_is_array(json_object_get(cp, "disks"));
	if (!ok) {
		snprintf(err, errlen, "%.2000s is damaged (%s); nothing was changed: restore it or "
			 "move it away", path, t ? "not a checkpoint tree" : jerr.text);
		json_decref(t);
		return NULL;
	}
	return t;
}

static int tree_save(const struct vm *vm, json_t *t, char *err, size_t errlen)
{
	char path[2400];
	char *text = json_dumps(t, JSON_INDENT(2) | JSON_SORT_KEYS);
	int r;

	tree_path(vm, path, sizeof(path));
	char *dir = strdup(path);
	r = !text || !dir ? -ENOMEM : mkdir_p(dirname(dir), 0750);
	free(dir);
	if (!r)
		r = atomic_write_file(path, text, strlen(text), 0640);
	free(text);
	if (r)
		snprintf(err, errlen, "cannot write %.2000s: %s", path, strerror(-r));
	return r;
}

static json_t *cp_by_id(json_t *t, const char *id)
{
	size_t i;
	json_t *cp;

	json_array_foreach(json_object_get(t, "checkpoints"), i, cp)
		if (!strcasecmp(jstr(cp, "id"), id))
			return cp;
	return NULL;
}

/* By id, else by name (which must be unique). NULL with err. */
static json_t *cp_find(json_t *t, const struct vm *vm, const char *what, int *code, char *err,
		       size_t errlen)
{
	json_t *found = cp_by_id(t, what), *cp;
	size_t i, n = 0;

	if (found)
		return found;
	json_array_foreach(json_object_get(t, "checkpoints"), i, cp)
		if (!strcmp(jstr(cp, "name"), what)) {
			found = cp;
			n++;
		}
	if (n == 1)
		return found;
	*code = n ? -EINVAL : -ENOENT;
	if (n)
		snprintf(err, errlen, "%zu checkpoints of VM '%s' are named '%s': give its id "
			 "(see 'cloison checkpoint list %s')", n, vm->cfg.name, what, vm->cfg.name);
	else
		snprintf(err, errlen, "VM '%s' has no checkpoint '%s' (see 'cloison checkpoint "
			 "list %s')", vm->cfg.name, what, vm->cfg.name);
	return NULL;
}

static void folder_of(const struct vm *vm, json_t *t, const char *id, char *buf, size_t len)
{
	const char *f = json_string_value(json_object_get(t, "folder"));

	if (f && *f)
		snprintf(buf, len, "%s/%s", f, id);
	else
		snprintf(buf, len, "%s/Snapshots/%s", vm->dir, id);
}

/* ---- disks ---- */

/* <dir>/<stem>_<GUID>.avhdx (.avhd for VHD), Hyper-V's names; a stem that
 * ends in _<GUID> already (a child of a child) loses it first. */
static int child_path_for(const char *parent, char *out, size_t len, char *err, size_t errlen)
{
	struct disk *dk;
	struct disk_error derr = { { 0 } };
	struct disk_info info;
	char dir[PATH_MAX], base[PATH_MAX], id[GUID_STR_LEN];
	struct guid g;

	int r = disk_open(parent, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &dk, &derr);
	const char *ext = strrchr(parent, '.');
	if (r && ext && (!strcasecmp(ext, ".vhdx") || !strcasecmp(ext, ".avhdx"))) {
		info.format = DISK_FORMAT_VHDX; /* a running worker holds it locked */
	} else if (r && ext && (!strcasecmp(ext, ".vhd") || !strcasecmp(ext, ".avhd"))) {
		info.format = DISK_FORMAT_VHD;
	} else if (r) {
		snprintf(err, errlen, "disk '%.1000s' cannot be opened: %s", parent,
			 derr.msg[0] ? derr.msg : strerror(-r));
		return r;
	} else {
		disk_get_info(dk, &info);
		disk_close(dk);
	}
	if (info.format == DISK_FORMAT_RAW) {
		snprintf(err, errlen, "disk '%.1000s' is a raw image, which cannot have a "
			 "differencing child: a checkpoint needs VHDX or VHD disks (convert it with "
			 "'cloison disk convert', or attach it read-only)", parent);
		return -EINVAL;
	}
	snprintf(dir, sizeof(dir), "%s", parent);
	snprintf(base, sizeof(base), "%s", basename(dir));
	snprintf(dir, sizeof(dir), "%s", parent);
	char *dot = strrchr(base, '.');
	if (dot)
		*dot = 0;
	size_t bl = strlen(base);
	struct guid tmp;
	if (bl > GUID_STR_LEN && base[bl - GUID_STR_LEN] == '_' &&
	    guid_parse(base + bl - GUID_STR_LEN + 1, &tmp) == 0)
		base[bl - GUID_STR_LEN] = 0;
	if (guid_generate(&g))
		return -EIO;
	guid_to_string(&g, id);
	for (char *p = id; *p; p++)
		*p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
	snprintf(out, len, "%.2000s/%.1000s_%s.%s", dirname(dir), base, id,
		 info.format == DISK_FORMAT_VHDX ? "avhdx" : "avhd");
	return 0;
}

static int make_child(const char *parent, const char *child, char *err, size_t errlen)
{
	struct disk *dk;
	struct disk_error derr = { { 0 } };
	struct disk_info info;

	int r = disk_open(parent, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &dk, &derr);
	if (!r) {
		disk_get_info(dk, &info);
		disk_close(dk);
		struct disk_create_opts o = { .format = info.format,
					      .type = DISK_TYPE_DIFFERENCING,
					      .parent = parent };
		r = disk_create(child, &o, &derr);
	}
	if (r)
		snprintf(err, errlen, "cannot make the differencing disk %.1000s: %s", child,
			 derr.msg[0] ? derr.msg : strerror(-r));
	else
		fsync_parent_dir(child);
	return r;
}

/* The parent a differencing image names, resolved; "" if none. Read
 * without a lock: the locator does not change under the worker that may
 * be writing the image. 0, or -errno when the image cannot be read. */
static int parent_of(const char *path, char *out, size_t len)
{
	struct disk *dk;
	struct disk_error derr = { { 0 } };
	struct disk_info info;

	out[0] = 0;
	int r = disk_open(path, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT | DISK_OPEN_NO_LOCK, &dk,
			  &derr);
	if (r)
		return r;
	disk_get_info(dk, &info);
	disk_close(dk);
	if (info.has_parent && !realpath(info.parent_path, out))
		snprintf(out, len, "%s", info.parent_path);
	return 0;
}

/* Copies every run child holds itself into parent (in place, as `cloison
 * disk merge`). Idempotent: after a crash it is run again. */
static int merge_into_parent(const char *child_path, const char *parent_path, bool shared,
			     struct job *job, char *err, size_t errlen)
{
	struct disk *child, *parent;
	struct disk_error derr = { { 0 } };
	uint8_t *buf = NULL;
	int r;

	r = disk_open(child_path, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &child, &derr);
	if (r) {
		snprintf(err, errlen, "cannot open %.1000s: %s", child_path,
			 derr.msg[0] ? derr.msg : strerror(-r));
		return r;
	}
	/* shared: the worker reads parent through child, never where child
	 * has data, which is all the merge writes */
	r = disk_open(parent_path, shared ? DISK_OPEN_SHARED_LOCK : 0, &parent, &derr);
	if (r) {
		disk_close(child);
		snprintf(err, errlen, "cannot open %.1000s for writing: %s", parent_path,
			 derr.msg[0] ? derr.msg : strerror(-r));
		return r;
	}
	uint64_t size = MIN(disk_size(child), disk_size(parent)), off = 0;
	if (posix_memalign((void **)&buf, 4096, MERGE_CHUNK))
		r = -ENOMEM;
	while (!r && off < size) {
		bool alloc;
		uint64_t run, len = MIN(MERGE_CHUNK - off % MERGE_CHUNK, size - off);
		r = disk_block_status(child, off, len, &alloc, &run);
		if (r)
			break;
		if (!run || run > len)
			run = len;
		if (alloc) {
			r = disk_pread(child, buf, run, off);
			if (!r)
				r = disk_pwrite(parent, buf, run, off);
		}
		off += run;
		if (job)
			job_set_progress(job, off, size);
	}
	free(buf);
	if (!r)
		r = disk_flush(parent);
	int c = disk_close(parent);
	if (!r)
		r = c;
	disk_close(child);
	if (r)
		snprintf(err, errlen, "merging %.1000s into %.1000s failed: %s", child_path,
			 parent_path, strerror(-r));
	return r;
}

/* Hard links every file of from into to (made); the saved state's files
 * are only read by a restore, so the two copies can share them. */
static int link_files(const char *from, const char *to, char *err, size_t errlen)
{
	struct dirent *de;
	int r = 0;

	if (mkdir(to, 0750) < 0 && errno != EEXIST)
		r = -errno;
	DIR *dp = r ? NULL : opendir(from);
	if (!r && !dp)
		r = -errno;
	while (dp && !r && (de = readdir(dp))) {
		char a[4400], b[4400];
		if (de->d_name[0] == '.')
			continue;
		snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
		snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
		if (link(a, b) < 0 && errno != EEXIST)
			r = -errno;
	}
	if (dp)
		closedir(dp);
	if (!r)
		fsync_parent_dir(to);
	if (r)
		snprintf(err, errlen, "cannot link the saved state from %.1000s into %.1000s: %s",
			 from, to, strerror(-r));
	return r;
}

/* ---- settings, list, rename ---- */

static bool type_valid(const char *s)
{
	for (unsigned i = 0; type_names[i]; i++)
		if (!strcmp(s, type_names[i]))
			return true;
	return false;
}

json_t *checkpoint_list(struct vm *vm, char *err, size_t errlen)
{
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen);
	pthread_mutex_unlock(&vm->cfg_lock);
	if (!t)
		return NULL;
	json_t *out = json_pack("{s:{s:O, s:O}, s:O, s:O}", "settings", "checkpoint_type",
				json_object_get(t, "checkpoint_type"), "folder",
				json_object_get(t, "folder"), "current",
				json_object_get(t, "current"), "checkpoints",
				json_object_get(t, "checkpoints"));
	json_decref(t);
	return out;
}

int checkpoint_rename(struct vm *vm, const char *what, const char *name, char *err,
		      size_t errlen)
{
	int r = 0;

	if (!*name || strlen(name) > 100) {
		snprintf(err, errlen, "a checkpoint name has 1 to 100 characters");
		return -EINVAL;
	}
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen), *cp = NULL;
	if (!t)
		r = -EIO;
	else if (!(cp = cp_find(t, vm, what, &r, err, errlen)))
		;
	else {
		json_object_set_new(cp, "name", json_string(name));
		r = tree_save(vm, t, err, errlen);
	}
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
	return r;
}

int checkpoint_settings(struct vm *vm, json_t *body, char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	int r = 0;

	json_object_foreach(body, key, v) {
		if (!strcmp(key, "checkpoint_type")) {
			if (!json_is_string(v) || !type_valid(json_string_value(v))) {
				snprintf(err, errlen, "checkpoint_type must be one of production, "
					 "production-only, standard, disabled");
				return -EINVAL;
			}
		} else if (!strcmp(key, "folder")) {
			if (!json_is_null(v) && (!json_is_string(v) || json_string_value(v)[0] != '/')) {
				snprintf(err, errlen, "folder must be an absolute path (or null for "
					 "the default, the VM's Snapshots folder)");
				return -EINVAL;
			}
		} else {
			snprintf(err, errlen, "unknown field '%s' (known: checkpoint_type, folder)",
				 key);
			return -EINVAL;
		}
	}
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen);
	if (!t) {
		r = -EIO;
	} else {
		json_object_update_existing(t, body);
		const char *f = json_string_value(json_object_get(t, "folder"));
		if (f && mkdir_p(f, 0750)) {
			snprintf(err, errlen, "cannot make the checkpoint folder %.1000s: %s", f,
				 strerror(errno));
			r = -EINVAL;
		}
		if (!r)
			r = tree_save(vm, t, err, errlen);
	}
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
	return r;
}

/* ---- plans ---- */

static bool worker_state(struct vm *vm, enum vm_state *s)
{
	pthread_mutex_lock(&vm->d->lock);
	*s = vm->state;
	pthread_mutex_unlock(&vm->d->lock);
	return vm_state_has_worker(*s);
}

/* A live merge's spare child (K2) for each writable disk of vm, named
 * when the removal is planned so that a recovery knows the file; null for
 * a read-only or raw disk. A child of the VM's disk has its directory and
 * stem, so names made before a checkpoint serve for its removal. */
json_t *checkpoint_spares(struct vm *vm)
{
	json_t *spares = json_array();

	pthread_mutex_lock(&vm->d->lock);
	unsigned nd = vm->cfg.n_disks;
	char (*paths)[PATH_MAX] = calloc(nd ? nd : 1, PATH_MAX);
	bool *ro = calloc(nd ? nd : 1, sizeof(bool));
	for (unsigned k = 0; paths && ro && k < nd; k++) {
		snprintf(paths[k], PATH_MAX, "%s", vm->cfg.disks[k].path);
		ro[k] = vm->cfg.disks[k].readonly;
	}
	pthread_mutex_unlock(&vm->d->lock);
	for (unsigned k = 0; paths && ro && k < nd; k++) {
		char sp[PATH_MAX], serr[256];
		bool ok = !ro[k] && !child_path_for(paths[k], sp, sizeof(sp), serr, sizeof(serr));
		json_array_append_new(spares, ok ? json_string(sp) : json_null());
	}
	free(paths);
	free(ro);
	return spares;
}

json_t *checkpoint_plan_create(struct vm *vm, json_t *body, int *code, char *err, size_t errlen)
{
	const char *key, *name = NULL;
	json_t *v, *children = json_array();
	char id[GUID_STR_LEN], dflt[160], dir[2400], child[4200], note[512] = "";
	struct guid g;
	struct vm_config cfg;
	enum vm_state s;

	*code = -EINVAL;
	json_object_foreach(body, key, v) {
		if (!strcmp(key, "name") && json_is_string(v) && json_string_length(v) &&
		    json_string_length(v) <= 100) {
			name = json_string_value(v);
		} else if (strcmp(key, "wait")) {
			snprintf(err, errlen, "unknown or bad field '%s' (known: name, a string of 1 "
				 "to 100 characters; wait)", key);
			json_decref(children);
			return NULL;
		}
	}
	json_t *t = tree_load(vm, err, errlen);
	if (!t) {
		*code = -EIO;
		json_decref(children);
		return NULL;
	}
	const char *type = jstr(t, "checkpoint_type");
	const char *made = "standard";
	bool running = worker_state(vm, &s);
	*code = -EBUSY;
	if (!strcmp(type, "disabled")) {
		snprintf(err, errlen, "checkpoints are disabled for VM '%s' (enable them with "
			 "'cloison checkpoint settings %s --type production')", vm->cfg.name,
			 vm->cfg.name);
		goto fail;
	}
	if (s == VM_STARTING || s == VM_STOPPING || s == VM_SAVING) {
		snprintf(err, errlen, "VM '%s' is %s: wait until it is running, off or saved",
			 vm->cfg.name, vm_state_name(s));
		goto fail;
	}
	/* A production checkpoint of a running VM asks the guest to freeze its
	 * file systems (the backup integration service); whether it can is
	 * known when the job asks (create_run). */
	bool freeze = running && strncmp(type, "production", 10) == 0;
	if (!running)
		made = strcmp(type, "standard") ? "production" : "standard";
	pthread_mutex_lock(&vm->d->lock);
	int r = vm_config_copy(&cfg, &vm->cfg);
	pthread_mutex_unlock(&vm->d->lock);
	if (r) {
		*code = r;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < cfg.n_disks; i++) {
		if (cfg.disks[i].readonly) {
			json_array_append_new(children, json_null());
			continue;
		}
		if ((r = child_path_for(cfg.disks[i].path, child, sizeof(child), err, errlen))) {
			*code = r == -EINVAL ? -EINVAL : -EIO;
			vm_config_clear(&cfg);
			goto fail;
		}
		json_array_append_new(children, json_string(child));
	}
	vm_config_clear(&cfg);
	guid_generate(&g);
	guid_to_string(&g, id);
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	char when[64];
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(dflt, sizeof(dflt), "%.64s - (%s)", vm->cfg.name, when);
	folder_of(vm, t, id, dir, sizeof(dir));
	json_t *plan = json_pack("{s:s, s:s, s:o, s:s, s:s, s:s, s:b, s:b}", "id", id, "name",
				 name ? name : dflt, "children", children, "dir", dir, "type",
				 running || s == VM_SAVED ? "standard" : made, "note", note,
				 "freeze", freeze, "freeze_only", !strcmp(type, "production-only"));
	if (plan)
		json_object_set_new(plan, "spares", checkpoint_spares(vm));
	json_decref(t);
	return plan;
fail:
	json_decref(children);
	json_decref(t);
	return NULL;
}

json_t *checkpoint_plan_apply(struct vm *vm, const char *what, int *code, char *err,
			      size_t errlen)
{
	char child[4200];
	size_t i;
	json_t *d, *children = json_array(), *old = json_array();
	json_t *t = tree_load(vm, err, errlen), *cp;
	enum vm_state s;

	*code = -EIO;
	if (!t || !(cp = cp_find(t, vm, what, code, err, errlen)))
		goto fail;
	worker_state(vm, &s);
	if (s == VM_STARTING || s == VM_STOPPING || s == VM_SAVING) {
		*code = -EBUSY;
		snprintf(err, errlen, "VM '%s' is %s: wait until it is running, off or saved",
			 vm->cfg.name, vm_state_name(s));
		goto fail;
	}
	json_array_foreach(json_object_get(cp, "disks"), i, d) {
		if (json_is_true(json_object_get(d, "readonly"))) {
			json_array_append_new(children, json_null());
			continue;
		}
		int r = child_path_for(jstr(d, "path"), child, sizeof(child), err, errlen);
		if (r) {
			*code = r;
			goto fail;
		}
		json_array_append_new(children, json_string(child));
	}
	pthread_mutex_lock(&vm->d->lock);
	for (unsigned k = 0; k < vm->cfg.n_disks; k++)
		if (!vm->cfg.disks[k].readonly)
			json_array_append_new(old, json_string(vm->cfg.disks[k].path));
	pthread_mutex_unlock(&vm->d->lock);
	json_t *plan = json_pack("{s:s, s:s, s:o, s:o}", "id", jstr(cp, "id"), "name",
				 jstr(cp, "name"), "children", children, "old", old);
	json_decref(t);
	return plan;
fail:
	json_decref(children);
	json_decref(old);
	json_decref(t);
	return NULL;
}

/* Appends cp's descendants (leaves first), then cp. */
static void subtree_ids(json_t *t, const char *id, json_t *ids)
{
	size_t i;
	json_t *c;

	json_array_foreach(json_object_get(t, "checkpoints"), i, c)
		if (!strcasecmp(jstr(c, "parent"), id))
			subtree_ids(t, jstr(c, "id"), ids);
	json_array_append_new(ids, json_string(id));
}

json_t *checkpoint_plan_remove(struct vm *vm, const char *what, bool subtree, int *code,
			       char *err, size_t errlen)
{
	json_t *t = tree_load(vm, err, errlen), *cp, *ids = json_array();
	enum vm_state s;

	*code = -EIO;
	if (!t || !(cp = cp_find(t, vm, what, code, err, errlen))) {
		json_decref(ids);
		json_decref(t);
		return NULL;
	}
	worker_state(vm, &s);
	if (s == VM_STARTING || s == VM_STOPPING || s == VM_SAVING) {
		*code = -EBUSY;
		snprintf(err, errlen, "VM '%s' is %s: wait until it is running, off or saved",
			 vm->cfg.name, vm_state_name(s));
		json_decref(ids);
		json_decref(t);
		return NULL;
	}
	if (subtree)
		subtree_ids(t, jstr(cp, "id"), ids);
	else
		json_array_append_new(ids, json_string(jstr(cp, "id")));
	json_t *plan = json_pack("{s:o, s:s, s:o}", "ids", ids, "name", jstr(cp, "name"), "spares",
				 checkpoint_spares(vm));
	json_decref(t);
	return plan;
}

/* ---- the VM's side ---- */

/* The chain of path, path first: n files, resolved. */
static int chain_of(const char *path, char (*out)[PATH_MAX], unsigned max, unsigned *n,
		    char *err, size_t errlen)
{
	*n = 0;
	if (!realpath(path, out[0])) {
		snprintf(err, errlen, "%.1000s: %s", path, strerror(errno));
		return -errno;
	}
	for (*n = 1;; (*n)++) {
		char par[PATH_MAX];
		int r = parent_of(out[*n - 1], par, sizeof(par));
		if (r) {
			snprintf(err, errlen, "cannot read %.1000s: %s", out[*n - 1], strerror(-r));
			return r;
		}
		if (!par[0])
			return 0;
		if (*n == max) {
			snprintf(err, errlen, "the chain of %.1000s is too deep", path);
			return -ELOOP;
		}
		snprintf(out[*n], PATH_MAX, "%s", par);
	}
}

/* Asks the worker to go on with disk index on top and the chain of below
 * (top written, the rest read; below "" for top's own chain). */
static int switch_to(struct vm *vm, int index, const char *top, const char *below, char *err,
		     size_t errlen)
{
	char (*files)[PATH_MAX] = calloc(WORKER_MAX_FDS, PATH_MAX);
	int fds[WORKER_MAX_FDS];
	unsigned n = 0, k = 0;
	int r;

	if (!files) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (below[0]) {
		snprintf(files[0], PATH_MAX, "%s", top);
		r = chain_of(below, files + 1, WORKER_MAX_FDS - 1, &n, err, errlen);
		n++;
	} else {
		r = chain_of(top, files, WORKER_MAX_FDS, &n, err, errlen);
	}
	json_t *list = json_array();
	for (; !r && k < n; k++) {
		fds[k] = open(files[k], (k ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (fds[k] < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot open %.1000s: %s", files[k], strerror(errno));
			break;
		}
		json_array_append_new(list, json_string(files[k]));
	}
	if (!r) {
		json_t *args = json_pack("{s:i, s:o}", "disk", index, "files", list);
		list = NULL;
		r = worker_command_fds(vm, "disk-switch", args, fds, n, 60, NULL, err, errlen);
		json_decref(args);
	}
	json_decref(list);
	while (k--)
		close(fds[k]);
	free(files);
	return r;
}

static int share(struct vm *vm, int index, char *err, size_t errlen)
{
	json_t *args = json_pack("{s:i}", "disk", index);
	int r = worker_command_args(vm, "disk-share", args, 60, NULL, err, errlen);

	json_decref(args);
	return r;
}


/* Points the VM's configuration at the disks in paths (a JSON array, one
 * per disk, null = unchanged) and, when hw is not NULL, at the processors,
 * memory and boot files it holds. Caller holds vm->cfg_lock. */
static int point_config(struct vm *vm, json_t *disks, json_t *hw, char *err, size_t errlen)
{
	struct vm_config next;
	size_t i;
	json_t *p;
	int r;

	pthread_mutex_lock(&vm->d->lock);
	r = vm_config_copy(&next, &vm->cfg);
	pthread_mutex_unlock(&vm->d->lock);
	if (r) {
		snprintf(err, errlen, "out of memory");
		return r;
	}
	if (json_array_size(disks) <= VM_MAX_DISKS) {
		for (unsigned k = 0; k < next.n_disks; k++) {
			free(next.disks[k].path);
			next.disks[k].path = NULL;
		}
		next.n_disks = 0;
		json_array_foreach(disks, i, p) {
			next.disks[i].path = strdup(jstr(p, "path"));
			next.disks[i].readonly = json_is_true(json_object_get(p, "readonly"));
			next.n_disks++;
		}
	}
	if (hw) {
		next.cpus = (unsigned)json_integer_value(json_object_get(hw, "cpus"));
		next.memory = (uint64_t)json_integer_value(json_object_get(hw, "memory"));
		free(next.kernel);
		next.kernel = strdup(jstr(hw, "kernel"));
		free(next.cmdline);
		next.cmdline = strdup(jstr(hw, "cmdline"));
		free(next.initrd);
		next.initrd = json_is_string(json_object_get(hw, "initrd"))
				      ? strdup(jstr(hw, "initrd"))
				      : NULL;
		/* Only apply restores the hardware: the VM goes on from an
		 * earlier copy of itself, so it gets a new VM Generation ID
		 * (the guest reseeds; a restored worker notifies it). */
		if (vm_config_has_feature(&next, VM_FEATURE_GENERATION_ID) &&
		    vm_config_new_generation_id(&next)) {
			vm_config_clear(&next);
			snprintf(err, errlen, "no randomness for the VM's generation id");
			return -EIO;
		}
	}
	r = inventory_replace_config(vm, &next, err, errlen);
	vm_config_clear(&next);
	return r;
}

/* The VM's disks as {"path", "readonly"} objects, with the writable ones
 * replaced by children (null entries keep the disk). */
static json_t *disks_with(struct vm *vm, json_t *children)
{
	json_t *out = json_array();

	pthread_mutex_lock(&vm->d->lock);
	for (unsigned i = 0; i < vm->cfg.n_disks; i++) {
		json_t *c = json_array_get(children, i);
		json_array_append_new(out, json_pack("{s:s, s:b}", "path",
						     json_is_string(c) ? json_string_value(c)
								       : vm->cfg.disks[i].path,
						     "readonly", vm->cfg.disks[i].readonly));
	}
	pthread_mutex_unlock(&vm->d->lock);
	return out;
}

/* Whether path (resolved) is in the chain of a disk of the VM or of a
 * checkpoint of t: a rollback never deletes an image something reads
 * through (an export's temporary checkpoint, made then removed by a live
 * merge, leaves its child under the merge's spare). An image whose chain
 * cannot be read counts as used. */
static bool chain_uses(struct vm *vm, json_t *t, const char *path)
{
	char (*chain)[PATH_MAX] = calloc(WORKER_MAX_FDS, PATH_MAX);
	json_t *none = json_array(), *now = disks_with(vm, none), *all = json_array(), *d, *o;
	size_t i, k;
	bool used = !chain;

	json_decref(none);
	json_array_extend(all, now);
	json_array_foreach(json_object_get(t, "checkpoints"), k, o)
		json_array_extend(all, json_object_get(o, "disks"));
	json_array_foreach(all, i, d) {
		unsigned n = 0;
		char e[256];
		if (used)
			break;
		int r = chain_of(jstr(d, "path"), chain, WORKER_MAX_FDS, &n, e, sizeof(e));
		if (r && !n)
			continue; /* a missing disk holds nothing */
		if (r) {
			used = true; /* a chain cut short may go through path */
			break;
		}
		for (unsigned j = 0; j < n && !used; j++)
			used = !strcmp(chain[j], path);
	}
	json_decref(all);
	json_decref(now);
	free(chain);
	return used;
}

/* Deletes the children of a rolled-back create or apply that nothing
 * uses. */
static void unlink_children(struct vm *vm, json_t *children)
{
	char e[256], pr[PATH_MAX];
	size_t i;
	json_t *c;

	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, e, sizeof(e));
	pthread_mutex_unlock(&vm->cfg_lock);
	json_array_foreach(children, i, c) {
		const char *p = json_string_value(c);
		if (!p || !realpath(p, pr))
			continue;
		if (!t || chain_uses(vm, t, pr)) {
			log_warn("%s: %s stays: the VM or a checkpoint reads through it", vm->cfg.name,
				 p);
			continue;
		}
		if (unlink(p) == 0)
			fsync_parent_dir(p);
	}
	json_decref(t);
}

static int start_again(struct vm *vm, char *note, size_t len)
{
	char err[1024];
	int r = vm_op_start(vm, err, sizeof(err));

	if (r) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "the VM could not go on running (%.600s); it stays "
			 "saved, start it with 'cloison vm start %.64s'", err, vm->cfg.name);
		snprintf(note, len, "%s", msg);
	}
	return r;
}

/* ---- create ---- */

int checkpoint_create_now(struct job *job, struct vm *vm, json_t *plan, json_t **result,
			  char *err, size_t errlen)
{
	json_t *children = json_object_get(plan, "children");
	const char *id = jstr(plan, "id"), *dir = jstr(plan, "dir");
	char note[1024];
	enum vm_state s;
	size_t i;
	json_t *c;
	int r;

	snprintf(note, sizeof(note), "%s", jstr(plan, "note"));
	bool was_running = worker_state(vm, &s), frozen = false;
	if (was_running && json_is_true(json_object_get(plan, "freeze"))) {
		char ferr[512];
		r = agent_freeze(vm, FREEZE_TIMEOUT_S, ferr, sizeof(ferr));
		frozen = r == 0;
		if (r && json_is_true(json_object_get(plan, "freeze_only"))) {
			snprintf(err, errlen, "VM '%.64s' takes production checkpoints only, and its "
				 "guest cannot freeze its file systems (%.300s): turn it off to "
				 "checkpoint it, or allow standard checkpoints ('cloison checkpoint "
				 "settings %.64s --type production')", vm->cfg.name, ferr, vm->cfg.name);
			job_set_error_code(job, "invalid-state");
			return -EBUSY;
		}
		if (r)
			snprintf(note, sizeof(note), "a standard checkpoint was made: a production "
				 "one needs the guest to freeze its file systems through the integration "
				 "services, and it cannot (%.300s)", ferr);
	}
	/* Frozen, the guest's disks are consistent and the checkpoint keeps
	 * no memory: the split is live. The worker shares each disk, its
	 * child is made, the tree and the configuration commit, and the
	 * worker switches to the children; the guest thaws. Otherwise a
	 * running VM is saved for the split (a standard checkpoint keeps its
	 * memory) and goes on from that state. */
	bool live = was_running && frozen;
	if (was_running && !live && (r = vm_op_save(vm, err, errlen)))
		return r;
	worker_state(vm, &s);
	bool saved = s == VM_SAVED && !frozen;
	json_t *none = json_array(), *old = disks_with(vm, none);
	json_decref(none);
	json_t *cfgj = NULL;
	r = 0;
	json_array_foreach(children, i, c)
		if (!r && json_is_string(c) && (!live || !(r = share(vm, (int)i, err, errlen))))
			r = make_child(jstr(json_array_get(old, i), "path"), json_string_value(c), err,
				       errlen);
	if (!r && (r = mkdir_p(dir, 0750)))
		snprintf(err, errlen, "cannot make %.1000s: %s", dir, strerror(-r));
	if (!r) {
		pthread_mutex_lock(&vm->d->lock);
		cfgj = vm_config_to_json(&vm->cfg);
		pthread_mutex_unlock(&vm->d->lock);
		char path[2500], *text = json_dumps(cfgj, JSON_INDENT(2) | JSON_SORT_KEYS);
		snprintf(path, sizeof(path), "%s/config.json", dir);
		r = text ? atomic_write_file(path, text, strlen(text), 0640) : -ENOMEM;
		free(text);
		if (r)
			snprintf(err, errlen, "cannot write %.1000s: %s", path, strerror(-r));
	}
	if (!r && saved)
		r = link_files(vm->saved_dir, dir, err, errlen);
	if (!r) {
		/* The commit point: the tree, then the configuration. */
		pthread_mutex_lock(&vm->cfg_lock);
		json_t *t = tree_load(vm, err, errlen);
		if (!t) {
			r = -EIO;
		} else {
			char created[32];
			time_t now = time(NULL);
			struct tm tm;
			gmtime_r(&now, &tm);
			strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
			json_t *cp = json_pack(
				"{s:s, s:s, s:O, s:s, s:s, s:b, s:O, s:s, s:{s:O, s:O, s:O, s:O, s:O}}",
				"id", id, "name", jstr(plan, "name"), "parent",
				json_object_get(t, "current"), "created", created, "type",
				frozen ? "production" : saved ? "standard" : jstr(plan, "type"),
				"saved_state", saved,
				"disks", old, "dir", dir, "hardware", "cpus",
				json_object_get(cfgj, "cpus"), "memory",
				json_object_get(cfgj, "memory"), "kernel",
				json_object_get(cfgj, "kernel"), "initrd",
				json_object_get(cfgj, "initrd"), "cmdline",
				json_object_get(cfgj, "cmdline"));
			json_array_append_new(json_object_get(t, "checkpoints"), cp);
			json_object_set_new(t, "current", json_string(id));
			r = tree_save(vm, t, err, errlen);
			if (!r) {
				json_t *nd = disks_with(vm, children);
				r = point_config(vm, nd, NULL, err, errlen);
				json_decref(nd);
			}
			json_decref(t);
		}
		pthread_mutex_unlock(&vm->cfg_lock);
	}
	json_decref(cfgj);
	if (r) {
		json_decref(old);
		unlink_children(vm, children);
		remove_flat_dir(dir);
		if (was_running && !live)
			start_again(vm, note, sizeof(note));
		if (frozen) {
			char terr[256];
			agent_thaw(vm, terr, sizeof(terr));
		}
		return r;
	}
	if (live) {
		/* Committed: the checkpoint's disks must not change any more, so
		 * a worker that does not switch is saved (and goes on from its
		 * state on the children). */
		char serr[512];
		int sr = 0;
		json_array_foreach(children, i, c)
			if (!sr && json_is_string(c))
				sr = switch_to(vm, (int)i, json_string_value(c),
					       jstr(json_array_get(old, i), "path"), serr, sizeof(serr));
		worker_images_refresh(vm);
		if (sr) {
			log_warn("%s: the worker could not switch to the checkpoint's children (%s); "
				 "saving it", vm->cfg.name, serr);
			snprintf(note + strlen(note), sizeof(note) - strlen(note),
				 "%sthe worker could not go on in the new disks (%.300s): the VM was "
				 "saved and started again", note[0] ? "; " : "", serr);
			if (!vm_op_save(vm, serr, sizeof(serr)))
				start_again(vm, note + strlen(note), sizeof(note) - strlen(note));
			else
				log_error("%s: cannot save it either: %s", vm->cfg.name, serr);
		}
	} else if (was_running) {
		start_again(vm, note + strlen(note), sizeof(note) - strlen(note));
	}
	json_decref(old);
	if (frozen) {
		char terr[256];
		agent_thaw(vm, terr, sizeof(terr));
	}
	const char *type = frozen ? "production" : saved ? "standard" : jstr(plan, "type");
	*result = json_pack("{s:s, s:s, s:s, s:b, s:s}", "checkpoint", id, "name",
			    jstr(plan, "name"), "type", type, "saved_state", saved, "note", note);
	return 0;
}

static int create_run(struct job *job, char *err, size_t errlen)
{
	json_t *res = NULL;
	int r = checkpoint_create_now(job, job_vm(job), job_args(job), &res, err, errlen);

	if (!r)
		job_set_result(job, res);
	return r;
}

json_t *checkpoint_get(struct vm *vm, const char *id, char *err, size_t errlen)
{
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen), *cp = t ? cp_by_id(t, id) : NULL;
	if (t && !cp)
		snprintf(err, errlen, "VM '%s' has no checkpoint %s", vm->cfg.name, id);
	json_incref(cp);
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
	return cp;
}

static struct vm *recover_vm(struct daemon *d, json_t *record, char *note, size_t len)
{
	struct vm *vm = inventory_get(d, jstr(record, "vm_id"));

	if (!vm)
		snprintf(note, len, "VM '%s' no longer exists", jstr(record, "vm"));
	return vm;
}

/* Whether the VM's configuration names path as a disk. */
static bool config_uses(struct vm *vm, const char *path)
{
	bool used = false;

	pthread_mutex_lock(&vm->d->lock);
	for (unsigned i = 0; i < vm->cfg.n_disks; i++)
		used = used || !strcmp(vm->cfg.disks[i].path, path);
	pthread_mutex_unlock(&vm->d->lock);
	return used;
}

static enum job_state create_recover(struct daemon *d, json_t *record, char *note, size_t len)
{
	json_t *plan = json_object_get(record, "args"), *children = json_object_get(plan, "children");
	char err[1024];
	struct vm *vm = recover_vm(d, record, note, len);
	enum job_state js = JOB_FAILED;

	if (!vm)
		return JOB_FAILED;
	json_t *t = tree_load(vm, err, sizeof(err));
	if (t && cp_by_id(t, jstr(plan, "id"))) {
		/* Past the commit point: the configuration follows the tree. */
		json_t *cp = cp_by_id(t, jstr(plan, "id")), *nd = disks_with(vm, children);
		pthread_mutex_lock(&vm->cfg_lock);
		int r = point_config(vm, nd, NULL, err, sizeof(err));
		pthread_mutex_unlock(&vm->cfg_lock);
		json_decref(nd);
		/* A live split cut before the worker switched: it does now (a
		 * worker on its children already switches to the same chain). */
		enum vm_state ws;
		size_t i;
		json_t *c;
		if (!r && worker_state(vm, &ws) && (ws == VM_RUNNING || ws == VM_PAUSED)) {
			json_array_foreach(children, i, c)
				if (!r && json_is_string(c))
					r = switch_to(vm, (int)i, json_string_value(c),
						      jstr(json_array_get(json_object_get(cp, "disks"),
									  i),
							   "path"),
						      err, sizeof(err));
			worker_images_refresh(vm);
			char terr[256];
			agent_thaw(vm, terr, sizeof(terr));
		}
		snprintf(note, len, "the checkpoint '%s' had been made; %s", jstr(plan, "name"),
			 r ? err : "the VM uses its new differencing disks");
		js = r ? JOB_FAILED : JOB_COMPLETED;
	} else if (t) {
		unlink_children(vm, children);
		remove_flat_dir(jstr(plan, "dir"));
		snprintf(note, len, "the checkpoint '%s' was not made: its differencing disks and "
			 "folder were removed, and the VM uses its disks as before",
			 jstr(plan, "name"));
	} else {
		snprintf(note, len, "%s", err);
	}
	enum vm_state s;
	worker_state(vm, &s);
	if (s == VM_SAVED)
		snprintf(note + strlen(note), len - strlen(note),
			 "; the VM is saved: 'cloison vm start %s' goes on", vm->cfg.name);
	json_decref(t);
	inventory_put(d, vm);
	return js;
}

/* ---- apply ---- */

/* Removes the old "now" disks that no checkpoint holds and that the
 * configuration no longer names. */
static void drop_old(struct vm *vm, json_t *t, json_t *old)
{
	size_t i, k, m;
	json_t *o, *cp, *dk;

	json_array_foreach(old, i, o) {
		const char *p = json_string_value(o);
		bool held = !p || config_uses(vm, p);
		json_array_foreach(json_object_get(t, "checkpoints"), k, cp)
			json_array_foreach(json_object_get(cp, "disks"), m, dk)
				held = held || !strcmp(jstr(dk, "path"), p);
		size_t pl = p ? strlen(p) : 0;
		bool ours = pl > 6 && (!strcmp(p + pl - 6, ".avhdx") || !strcmp(p + pl - 5, ".avhd"));
		if (!held && ours && unlink(p) == 0)
			fsync_parent_dir(p);
	}
}

/* After the commit: the VM is off with the checkpoint's disks, or saved
 * with its state. */
static int settle_applied(struct vm *vm, json_t *cp, char *err, size_t errlen)
{
	char why[256];
	bool saved = json_is_true(json_object_get(cp, "saved_state"));

	snprintf(why, sizeof(why), "checkpoint '%.200s' applied", jstr(cp, "name"));
	vm_saved_dir_remove(vm);
	int r = saved ? link_files(jstr(cp, "dir"), vm->saved_dir, err, errlen) : 0;
	pthread_mutex_lock(&vm->d->lock);
	vm_set_state_locked(vm, saved && !r ? VM_SAVED : VM_OFF, why);
	pthread_mutex_unlock(&vm->d->lock);
	return r;
}

static int apply_commit(struct vm *vm, json_t *plan, json_t **cp_out, char *err, size_t errlen)
{
	int r;

	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen), *cp = NULL;
	if (!t) {
		r = -EIO;
	} else if (!(cp = cp_by_id(t, jstr(plan, "id")))) {
		snprintf(err, errlen, "the checkpoint was removed meanwhile");
		r = -ENOENT;
	} else {
		json_object_set_new(t, "current", json_string(jstr(plan, "id")));
		r = tree_save(vm, t, err, errlen);
		json_t *nd = json_array(), *children = json_object_get(plan, "children"), *d;
		size_t i;
		json_array_foreach(json_object_get(cp, "disks"), i, d) {
			json_t *c = json_array_get(children, i);
			json_array_append_new(nd, json_pack("{s:s, s:O}", "path",
							    json_is_string(c) ? json_string_value(c)
									      : jstr(d, "path"),
							    "readonly", json_object_get(d, "readonly")
									? json_object_get(d, "readonly")
									: json_false()));
		}
		if (!r)
			r = point_config(vm, nd, json_object_get(cp, "hardware"), err, errlen);
		json_decref(nd);
		if (!r)
			drop_old(vm, t, json_object_get(plan, "old"));
	}
	pthread_mutex_unlock(&vm->cfg_lock);
	if (!r && cp_out)
		*cp_out = json_incref(cp);
	json_decref(t);
	return r;
}

static int apply_run(struct job *job, char *err, size_t errlen)
{
	struct vm *vm = job_vm(job);
	json_t *plan = job_args(job), *children = json_object_get(plan, "children");
	char note[1024] = "";
	enum vm_state s;
	size_t i;
	json_t *c, *cp = NULL;
	bool forced;
	int r = 0;

	bool was_running = worker_state(vm, &s);
	if (was_running && (r = vm_op_stop(vm, true, 0, &forced, err, errlen)))
		return r;
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen), *tcp = t ? cp_by_id(t, jstr(plan, "id")) : NULL;
	json_t *disks = tcp ? json_incref(json_object_get(tcp, "disks")) : NULL;
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
	if (!disks) {
		snprintf(err, errlen, "the checkpoint '%s' is gone", jstr(plan, "name"));
		return -ENOENT;
	}
	json_array_foreach(children, i, c)
		if (!r && json_is_string(c))
			r = make_child(jstr(json_array_get(disks, i), "path"), json_string_value(c),
				       err, errlen);
	json_decref(disks);
	if (!r)
		r = apply_commit(vm, plan, &cp, err, errlen);
	if (r) {
		unlink_children(vm, children);
		return r;
	}
	r = settle_applied(vm, cp, err, errlen);
	if (!r && was_running && json_is_true(json_object_get(cp, "saved_state")))
		start_again(vm, note, sizeof(note));
	else if (was_running)
		snprintf(note, sizeof(note), "the checkpoint holds no memory (it was taken while "
			 "the VM was off): the VM is off");
	job_set_result(job, json_pack("{s:s, s:s, s:b, s:s}", "checkpoint", jstr(plan, "id"),
				      "name", jstr(plan, "name"), "saved_state",
				      json_is_true(json_object_get(cp, "saved_state")), "note",
				      note));
	json_decref(cp);
	return r;
}

static enum job_state apply_recover(struct daemon *d, json_t *record, char *note, size_t len)
{
	json_t *plan = json_object_get(record, "args"), *children = json_object_get(plan, "children");
	char err[1024];
	struct vm *vm = recover_vm(d, record, note, len);
	enum job_state js = JOB_FAILED;

	if (!vm)
		return JOB_FAILED;
	json_t *t = tree_load(vm, err, sizeof(err));
	bool committed = t && !strcasecmp(jstr(t, "current"), jstr(plan, "id"));
	json_t *ch0 = json_array_get(children, 0);
	/* "current" may name the checkpoint from before (applied twice): the
	 * configuration then names the children, or their files are gone. */
	if (committed && json_is_string(ch0) && access(json_string_value(ch0), F_OK) < 0)
		committed = false;
	json_t *cp = NULL;
	if (committed && apply_commit(vm, plan, &cp, err, sizeof(err)) == 0 &&
	    settle_applied(vm, cp, err, sizeof(err)) == 0) {
		snprintf(note, len, "the checkpoint '%s' had been applied; the VM is %s with its "
			 "disks", jstr(plan, "name"),
			 json_is_true(json_object_get(cp, "saved_state")) ? "saved" : "off");
		js = JOB_COMPLETED;
	} else if (committed) {
		snprintf(note, len, "the checkpoint '%s' had been applied but cannot be finished: "
			 "%s", jstr(plan, "name"), err);
	} else if (t) {
		unlink_children(vm, children);
		snprintf(note, len, "the checkpoint '%s' was not applied: its new differencing "
			 "disks were removed; the VM is %s with its disks as before",
			 jstr(plan, "name"), vm_state_name(vm->state));
	} else {
		snprintf(note, len, "%s", err);
	}
	json_decref(cp);
	json_decref(t);
	inventory_put(d, vm);
	return js;
}

/* ---- remove ---- */

/* After a removal's commit: the configuration takes the disks the tree's
 * "pending" names, the files it drops go (unless the configuration still
 * names one), then "pending" is cleared. Caller holds cfg_lock. */
static int finish_pending(struct vm *vm, json_t *t, char *err, size_t errlen)
{
	json_t *p = json_object_get(t, "pending"), *f;
	size_t k;

	if (!p)
		return 0;
	int r = point_config(vm, json_object_get(p, "disks"), NULL, err, errlen);
	if (r)
		return r;
	json_array_foreach(json_object_get(p, "drop"), k, f)
		if (!config_uses(vm, json_string_value(f)) && unlink(json_string_value(f)) == 0)
			fsync_parent_dir(json_string_value(f));
	remove_flat_dir(jstr(p, "dir"));
	json_object_del(t, "pending");
	return tree_save(vm, t, err, errlen);
}

/* Finishes a removal a crash cut after its commit. */
static int finish_pending_of(struct vm *vm, char *err, size_t errlen)
{
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen);
	int r = t ? finish_pending(vm, t, err, errlen) : -EIO;
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
	return r;
}

/* ---- remove ----
 * A checkpoint's disk P whose only child is the disk K the VM runs on is
 * merged: K's data is copied into P and the VM goes on in P. With the VM
 * running this is a live merge, the guest writing all along:
 *  1. the worker shares K, a spare child K2 of K is made (the plan named
 *     it), the configuration points at K2, and the worker switches to
 *     K2 <- K <- P...: the guest's writes go to K2 from then on;
 *  2. K is merged into P with the guest running (P opened under a shared
 *     lock: the worker reads P only where K has no data, and the merge
 *     writes only where it has);
 *  3. the VM is paused, the worker shares K2 (flushed), K2 is merged into
 *     P, the tree commits the removal (pending: the VM on P; K and K2
 *     dropped), the worker switches to P, written, and the VM goes on.
 * A failure or a crash before the commit leaves the VM on K2 <- K <- P with
 * P partly merged: merging K then K2 again, with no worker, finishes it
 * (merge_disk); after the commit, finish_pending does. */

struct merge {
	int index;		/* the VM's disk */
	char into[PATH_MAX];	/* P, the checkpoint's disk */
	char top[PATH_MAX];	/* K, the disk the VM is on */
	char via[PATH_MAX];	/* "" or the image between (a live merge's K) */
	char spare[PATH_MAX];	/* live: K2 */
};

static bool is_ours(const char *p)
{
	size_t pl = strlen(p);

	return pl > 6 && (!strcmp(p + pl - 6, ".avhdx") || !strcmp(p + pl - 5, ".avhd"));
}

/* Whether any checkpoint of t names path (resolved) as one of its disks. */
static bool tree_names(json_t *t, const char *path)
{
	char pr[PATH_MAX];
	size_t k, m;
	json_t *o, *od;

	json_array_foreach(json_object_get(t, "checkpoints"), k, o)
		json_array_foreach(json_object_get(o, "disks"), m, od)
			if (realpath(jstr(od, "path"), pr) && !strcmp(pr, path))
				return true;
	return false;
}

/* The merges of m, offline: the image between first, then the top. */
static int merge_disk(const struct merge *m, struct job *job, char *err, size_t errlen)
{
	int r = m->via[0] ? merge_into_parent(m->via, m->into, false, job, err, errlen) : 0;

	return r ? r : merge_into_parent(m->top, m->into, false, job, err, errlen);
}

/* Whether a live merge paused the VM (the tree's "merge_paused"): a
 * recovery resumes a VM that only the merge paused. */
static void mark_merge_paused(struct vm *vm, bool on)
{
	char e[256];

	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, e, sizeof(e));
	if (t && on != json_is_true(json_object_get(t, "merge_paused"))) {
		if (on)
			json_object_set_new(t, "merge_paused", json_true());
		else
			json_object_del(t, "merge_paused");
		if (tree_save(vm, t, e, sizeof(e)))
			log_warn("%s: %s", vm->cfg.name, e);
	}
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
}

static bool merge_paused(struct vm *vm)
{
	char e[256];

	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, e, sizeof(e));
	bool on = t && json_is_true(json_object_get(t, "merge_paused"));
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
	return on;
}

/* Resumes a VM that a live merge paused (and only then: a VM the user
 * paused stays paused), and forgets the mark. */
static void resume_after_merge(struct vm *vm)
{
	enum vm_state s;
	char perr[256];

	if (!merge_paused(vm))
		return;
	if (worker_state(vm, &s) && s == VM_PAUSED && vm_op_resume(vm, perr, sizeof(perr)))
		log_warn("%s: cannot resume after the merge: %s", vm->cfg.name, perr);
	mark_merge_paused(vm, false);
}

/* Points the VM's disks of ms at their spares (K2), or at what they merge into. */
static int point_disks(struct vm *vm, const struct merge *ms, unsigned n, bool spare,
		       char *err, size_t errlen)
{
	json_t *kids = json_array();

	for (unsigned i = 0; i < VM_MAX_DISKS; i++)
		json_array_append_new(kids, json_null());
	for (unsigned i = 0; i < n; i++)
		json_array_set_new(kids, (size_t)ms[i].index,
				   json_string(spare ? ms[i].spare : ms[i].into));
	json_t *nd = disks_with(vm, kids);
	pthread_mutex_lock(&vm->cfg_lock);
	int r = point_config(vm, nd, NULL, err, errlen);
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(nd);
	json_decref(kids);
	if (!r)
		worker_images_refresh(vm);
	return r;
}

/* Steps 1 and 2, and of 3 the pause and K2's merge. *paused: this paused
 * the VM (the caller resumes it), at *paused_at (now_ns). */
static int live_prepare(struct vm *vm, struct merge *ms, unsigned n, struct job *job,
			bool *paused, uint64_t *paused_at, char *err, size_t errlen)
{
	enum vm_state s;
	int r = 0;

	*paused = false;
	for (unsigned i = 0; !r && i < n; i++)
		if (!(r = share(vm, ms[i].index, err, errlen)))
			r = make_child(ms[i].top, ms[i].spare, err, errlen);
	if (!r)
		r = point_disks(vm, ms, n, true, err, errlen);
	for (unsigned i = 0; !r && i < n; i++) {
		r = switch_to(vm, ms[i].index, ms[i].spare, ms[i].top, err, errlen);
		snprintf(ms[i].via, PATH_MAX, "%s", ms[i].top);
		snprintf(ms[i].top, PATH_MAX, "%s", ms[i].spare);
	}
	for (unsigned i = 0; !r && i < n; i++)
		r = merge_into_parent(ms[i].via, ms[i].into, true, job, err, errlen);
	if (!r && worker_state(vm, &s) && s == VM_RUNNING) {
		mark_merge_paused(vm, true);
		*paused_at = now_ns();
		r = vm_op_pause(vm, err, errlen);
		*paused = r == 0;
		if (r)
			mark_merge_paused(vm, false);
	}
	for (unsigned i = 0; !r && i < n; i++)
		if (!(r = share(vm, ms[i].index, err, errlen)))
			r = merge_into_parent(ms[i].top, ms[i].into, true, job, err, errlen);
	return r;
}

/* Removes one checkpoint: for each of its disks, the only child image, if
 * it is a disk the VM runs on, is merged into it and the VM goes on in
 * it; a disk no image depends on any more is deleted; a disk with
 * several children, or whose child is another checkpoint's, stays in the
 * chain (no data is lost either way). Then the tree forgets it. live: the
 * VM runs, and its merges are live (above); spares names each disk's K2. */
static int remove_one(struct vm *vm, const char *id, bool live, json_t *spares, struct job *job,
		      char *note, size_t len, char *err, size_t errlen)
{
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen), *cp = t ? cp_by_id(t, id) : NULL;
	json_t *disks = cp ? json_incref(json_object_get(cp, "disks")) : NULL;
	pthread_mutex_unlock(&vm->cfg_lock);
	if (!cp) {
		json_decref(t);
		return t ? 0 : -EIO; /* gone already */
	}
	json_t *none = json_array(), *now = disks_with(vm, none), *drop = json_array(), *d;
	json_decref(none);
	struct merge *ms = calloc(VM_MAX_DISKS, sizeof(*ms));
	unsigned kept = 0, nms = 0;
	bool paused = false;
	size_t i, k, m;
	int r = ms ? 0 : -ENOMEM;
	json_array_foreach(disks, i, d) {
		const char *p = jstr(d, "path");
		char pr[PATH_MAX], par[PATH_MAX], via[PATH_MAX];
		if (r)
			break;
		if (json_is_true(json_object_get(d, "readonly")) || !realpath(p, pr))
			continue;
		/* The images whose parent is p: other checkpoints' disks, and
		 * the VM's, directly or through an image of a live merge. */
		unsigned n = 0;
		int now_at = -1;
		via[0] = 0;
		json_t *o, *od;
		json_array_foreach(json_object_get(t, "checkpoints"), k, o)
			json_array_foreach(json_object_get(o, "disks"), m, od)
				if (!r && !(r = parent_of(jstr(od, "path"), par, sizeof(par))) &&
				    !strcmp(par, pr))
					n++;
		json_array_foreach(now, k, od) {
			char mid[PATH_MAX];
			if (r || (r = parent_of(jstr(od, "path"), par, sizeof(par))) || !par[0])
				continue;
			if (!strcmp(par, pr)) {
				n++;
				now_at = (int)k;
				via[0] = 0;
			} else if (is_ours(par) && !tree_names(t, par) &&
				   !(r = parent_of(par, mid, sizeof(mid))) && !strcmp(mid, pr)) {
				n++;
				now_at = (int)k;
				snprintf(via, sizeof(via), "%s", par);
			}
		}
		if (r) {
			snprintf(err, errlen, "cannot read the chain of checkpoint '%s''s disk "
				 "%.1000s: %s", jstr(cp, "name"), p, strerror(-r));
			break;
		}
		if (n == 0 && is_ours(p)) {
			json_array_append_new(drop, json_string(p));
		} else if (n == 1 && now_at >= 0) {
			struct merge *x = &ms[nms++];
			x->index = now_at;
			snprintf(x->into, PATH_MAX, "%s", p);
			snprintf(x->top, PATH_MAX, "%s", jstr(json_array_get(now, (size_t)now_at),
							      "path"));
			snprintf(x->via, PATH_MAX, "%s", via);
			const char *sp = json_string_value(json_array_get(spares, (size_t)now_at));
			snprintf(x->spare, PATH_MAX, "%s", sp ? sp : "");
			if (live && (via[0] || !sp)) {
				snprintf(err, errlen, "disk %d is in the middle of a merge: it is "
					 "finished with the VM saved", now_at);
				r = -EAGAIN;
			} else if (!live) {
				r = merge_disk(x, job, err, errlen);
			}
		} else if (n) {
			kept++;
		}
	}
	uint64_t paused_at = 0;
	if (!r && live && nms)
		r = live_prepare(vm, ms, nms, job, &paused, &paused_at, err, errlen);
	for (unsigned x = 0; !r && x < nms; x++) {
		if (ms[x].via[0])
			json_array_append_new(drop, json_string(ms[x].via));
		json_array_append_new(drop, json_string(ms[x].top));
		json_object_set_new(json_array_get(now, (size_t)ms[x].index), "path",
				    json_string(ms[x].into));
	}
	bool committed = false;
	if (!r) {
		pthread_mutex_lock(&vm->cfg_lock);
		json_decref(t);
		t = tree_load(vm, err, errlen);
		cp = t ? cp_by_id(t, id) : NULL;
		if (!cp) {
			r = -EIO;
		} else {
			json_t *parent = json_incref(json_object_get(cp, "parent")), *o;
			json_array_foreach(json_object_get(t, "checkpoints"), k, o)
				if (!strcasecmp(jstr(o, "parent"), id))
					json_object_set(o, "parent", parent);
			if (!strcasecmp(jstr(t, "current"), id))
				json_object_set(t, "current", parent);
			json_decref(parent);
			char dir[2400];
			snprintf(dir, sizeof(dir), "%s", jstr(cp, "dir"));
			json_t *cps = json_object_get(t, "checkpoints");
			json_array_foreach(cps, k, o)
				if (o == cp)
					break;
			json_array_remove(cps, k);
			/* What follows the commit goes with it, for a recovery to
			 * finish (finish_pending). */
			json_object_set_new(t, "pending", json_pack("{s:O, s:O, s:s}", "disks", now,
								     "drop", drop, "dir", dir));
			r = tree_save(vm, t, err, errlen);
			committed = r == 0;
		}
		pthread_mutex_unlock(&vm->cfg_lock);
	}
	/* The worker leaves K2 for P before K2 is deleted. */
	for (unsigned x = 0; committed && live && x < nms; x++)
		if ((r = switch_to(vm, ms[x].index, ms[x].into, "", err, errlen)))
			break;
	if (committed && !r) {
		r = finish_pending_of(vm, err, errlen);
		if (!r && live && nms)
			worker_images_refresh(vm);
	}
	/* Committed, the worker not on P: it stays paused for the caller to
	 * save it (anything it wrote now would go to K2, which is dropped). */
	if (paused && !(committed && r))
		resume_after_merge(vm);
	if (!r && live && nms)
		snprintf(note + strlen(note), len - strlen(note),
			 "%smerged while the VM ran (paused %.1f ms for its last writes)",
			 note[0] ? "; " : "", paused ? (double)(now_ns() - paused_at) / 1e6 : 0.0);
	if (!r && kept)
		snprintf(note + strlen(note), len - strlen(note),
			 "%s%u of its differencing disks stay in the chain: another checkpoint "
			 "is made on them (merging such a disk is left to do)",
			 note[0] ? "; " : "", kept);
	free(ms);
	json_decref(now);
	json_decref(drop);
	json_decref(disks);
	json_decref(t);
	return r;
}

static int remove_all(struct vm *vm, json_t *plan, bool live, struct job *job, char *note,
		      size_t len, char *err, size_t errlen)
{
	size_t i;
	json_t *id;
	int r = finish_pending_of(vm, err, errlen);

	json_array_foreach(json_object_get(plan, "ids"), i, id) {
		if (r)
			break;
		if (job && job_cancelled(job)) {
			snprintf(err, errlen, "cancelled before checkpoint %s was merged; the ones "
				 "before it are removed", json_string_value(id));
			return -ECANCELED;
		}
		r = remove_one(vm, json_string_value(id), live, json_object_get(plan, "spares"), job,
			       note, len, err, errlen);
	}
	return r;
}

/* The offline way, for a running VM whose live merge failed or was cut:
 * the VM is saved, the merges done or finished with no worker, and it goes
 * on from its saved state. */
static int remove_saved(struct vm *vm, json_t *plan, struct job *job, char *note, size_t len,
			char *err, size_t errlen)
{
	int r = vm_op_save(vm, err, errlen);

	if (r)
		return r;
	r = remove_all(vm, plan, false, job, note, len, err, errlen);
	start_again(vm, note + strlen(note), len - strlen(note));
	/* saved while the merge had paused it, it comes back paused */
	resume_after_merge(vm);
	return r;
}

int checkpoint_remove_now(struct job *job, struct vm *vm, json_t *plan, char *note, size_t len,
			  char *err, size_t errlen)
{
	enum vm_state s;

	note[0] = 0;
	if (!worker_state(vm, &s))
		return remove_all(vm, plan, false, job, note, len, err, errlen);
	int r = remove_all(vm, plan, true, job, note, len, err, errlen);
	if (!r || r == -ECANCELED || !worker_state(vm, &s))
		return r;
	/* The live merge did not go through: the VM is on its disks, maybe
	 * half way (K2 <- K <- P, P partly merged); the offline way finishes. */
	log_warn("%s: the live merge failed (%s); merging with the VM saved", vm->cfg.name, err);
	snprintf(note, len, "the live merge failed (%.300s): the VM was saved during the "
		 "merge and went on after it", err);
	return remove_saved(vm, plan, job, note, len, err, errlen);
}

static int remove_run(struct job *job, char *err, size_t errlen)
{
	char note[1024];
	int r = checkpoint_remove_now(job, job_vm(job), job_args(job), note, sizeof(note), err,
				      errlen);

	if (!r)
		job_set_result(job, json_pack("{s:O, s:s}", "removed",
					      json_object_get(job_args(job), "ids"), "note", note));
	return r;
}

/* The spares of plan that nothing uses: a crash between making one and
 * pointing the VM at it leaves it. */
static void drop_unused_spares(struct vm *vm, json_t *plan)
{
	size_t i;
	json_t *sp;

	json_array_foreach(json_object_get(plan, "spares"), i, sp) {
		const char *p = json_string_value(sp);
		if (!p || config_uses(vm, p))
			continue;
		pthread_mutex_lock(&vm->cfg_lock);
		char e[256];
		json_t *t = tree_load(vm, e, sizeof(e));
		char pr[PATH_MAX];
		bool named = !t || (realpath(p, pr) && tree_names(t, pr));
		pthread_mutex_unlock(&vm->cfg_lock);
		json_decref(t);
		if (!named && unlink(p) == 0)
			fsync_parent_dir(p);
	}
}

/* Whether a disk of vm is a live merge's K2: its parent is an image of
 * ours that no checkpoint names, whose parent a checkpoint names. */
static bool in_live_merge(struct vm *vm)
{
	char e[256];
	bool found = false;

	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, e, sizeof(e)), *none = json_array();
	json_t *now = disks_with(vm, none), *d;
	size_t i;
	json_array_foreach(now, i, d) {
		char k[PATH_MAX], p[PATH_MAX];
		if (t && !parent_of(jstr(d, "path"), k, sizeof(k)) && k[0] && is_ours(k) &&
		    !tree_names(t, k) && !parent_of(k, p, sizeof(p)) && p[0] && tree_names(t, p))
			found = true;
	}
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(none);
	json_decref(now);
	json_decref(t);
	return found;
}

/* After a crash during a removal (plan: its args), finishes it. With no
 * worker the merges are done again or finished (merging again is
 * harmless). An adopted worker may be in the middle of a live merge: if
 * nothing was changed yet (the VM on its own disks, no pending commit),
 * nothing is done and *begun is false when the checkpoints are all still
 * there; else the VM is saved, the removal finished without a worker, and
 * the VM goes on from its saved state. */
static int recover_removal(struct vm *vm, json_t *plan, bool *begun, char *note, size_t len,
			   char *err, size_t errlen)
{
	enum vm_state s;
	size_t i;
	json_t *x;
	int r;

	*begun = true;
	if (!worker_state(vm, &s)) {
		r = remove_all(vm, plan, false, NULL, note, len, err, errlen);
		drop_unused_spares(vm, plan);
		return r;
	}
	bool in_tree = false, pending = false, on_spare = false;
	pthread_mutex_lock(&vm->cfg_lock);
	json_t *t = tree_load(vm, err, errlen);
	json_array_foreach(json_object_get(plan, "ids"), i, x)
		in_tree = in_tree || (t && cp_by_id(t, json_string_value(x)));
	pending = t && json_object_get(t, "pending");
	pthread_mutex_unlock(&vm->cfg_lock);
	json_decref(t);
	json_array_foreach(json_object_get(plan, "spares"), i, x)
		on_spare = on_spare || (json_is_string(x) && config_uses(vm, json_string_value(x)));
	on_spare = on_spare || in_live_merge(vm);
	if (!on_spare && !pending) {
		drop_unused_spares(vm, plan);
		*begun = !in_tree;
		resume_after_merge(vm); /* cut between the switch to P and the resume */
		return 0;
	}
	r = remove_saved(vm, plan, NULL, note, len, err, errlen);
	drop_unused_spares(vm, plan);
	return r;
}

static enum job_state remove_recover(struct daemon *d, json_t *record, char *note, size_t len)
{
	char err[1024];
	struct vm *vm = recover_vm(d, record, note, len);

	if (!vm)
		return JOB_FAILED;
	bool begun;
	int r = recover_removal(vm, json_object_get(record, "args"), &begun, note, len, err,
				sizeof(err));
	if (!begun) {
		snprintf(note, len, "the removal of '%s' had not begun (the VM was still running, "
			 "and runs on): nothing was changed; remove the checkpoint again",
			 jstr(json_object_get(record, "args"), "name"));
		inventory_put(d, vm);
		return JOB_FAILED;
	}
	if (r)
		snprintf(note + strlen(note), len - strlen(note), "%sthe removal could not be "
			 "finished: %s", note[0] ? "; " : "", err);
	else
		snprintf(note + strlen(note), len - strlen(note), "%sthe removal of '%s' was "
			 "finished at this start", note[0] ? "; " : "",
			 jstr(json_object_get(record, "args"), "name"));
	enum vm_state s;
	worker_state(vm, &s);
	if (s == VM_SAVED)
		snprintf(note + strlen(note), len - strlen(note),
			 "; the VM is saved: 'cloison vm start %s' goes on", vm->cfg.name);
	inventory_put(d, vm);
	return r ? JOB_FAILED : JOB_COMPLETED;
}

void checkpoint_recover_temporary(struct daemon *d, json_t *record, json_t *plan, char *note,
				  size_t len)
{
	json_t *rec = json_pack("{s:O, s:O?, s:O?}", "args", plan, "vm_id",
				json_object_get(record, "vm_id"), "vm", json_object_get(record, "vm"));
	char cnote[1024] = "", err[1024] = "", rnote[1024] = "";
	const char *id = jstr(plan, "id");
	enum vm_state s;

	note[0] = 0;
	if (!rec)
		return;
	create_recover(d, rec, cnote, sizeof(cnote));
	struct vm *vm = recover_vm(d, rec, note, len);
	json_decref(rec);
	if (!vm)
		return;
	json_t *cp = checkpoint_get(vm, id, err, sizeof(err));
	if (!cp) {
		/* Gone from the tree: never made, removed, or removed with its
		 * merge cut (a pending commit, or the VM on a live merge's spare):
		 * the removal is finished as a remove job's recovery does. */
		bool begun;
		json_t *rplan = json_pack("{s:[s], s:s, s:O?}", "ids", id, "name", jstr(plan, "name"),
					  "spares", json_object_get(plan, "spares"));
		int r = rplan ? recover_removal(vm, rplan, &begun, rnote, sizeof(rnote), err,
						sizeof(err))
			      : -ENOMEM;
		json_decref(rplan);
		if (r)
			snprintf(note, len, "no temporary checkpoint is left, but its merge could not be "
				 "finished: %.600s", err);
		else
			snprintf(note, len, "no temporary checkpoint is left%s%.600s",
				 rnote[0] ? "; " : "", rnote);
	} else {
		/* The removal's plan, with the spares the create's plan named:
		 * merging back under a worker that runs on is left to the user
		 * when it had not begun (recover_removal does nothing then). */
		int code;
		bool begun = false;
		json_t *rplan = checkpoint_plan_remove(vm, id, false, &code, err, sizeof(err));
		if (rplan && json_object_get(plan, "spares"))
			json_object_set(rplan, "spares", json_object_get(plan, "spares"));
		int r = rplan ? recover_removal(vm, rplan, &begun, rnote, sizeof(rnote), err,
						sizeof(err))
			      : code;
		json_decref(rplan);
		worker_state(vm, &s);
		if (!r && !begun)
			snprintf(note, len, "the temporary checkpoint '%s' stays: remove it with "
				 "'cloison checkpoint remove %s %s'", jstr(cp, "name"), vm->cfg.name,
				 id);
		else if (r)
			snprintf(note, len, "the temporary checkpoint '%s' could not be removed (%.400s): "
				 "remove it with 'cloison checkpoint remove %s %s'", jstr(cp, "name"),
				 err, vm->cfg.name, id);
		else
			snprintf(note, len, "the temporary checkpoint was removed, its disks merged "
				 "back%s", s == VM_SAVED ? "; the VM is saved: 'cloison vm start' goes "
							   "on" : "");
	}
	json_decref(cp);
	inventory_put(d, vm);
}

const struct job_kind job_kind_checkpoint_create = {
	.name = "checkpoint-create",
	.run = create_run,
	.recover = create_recover,
};

const struct job_kind job_kind_checkpoint_apply = {
	.name = "checkpoint-apply",
	.run = apply_run,
	.recover = apply_recover,
};

const struct job_kind job_kind_checkpoint_remove = {
	.name = "checkpoint-remove",
	.cancellable = true,
	.run = remove_run,
	.recover = remove_recover,
};
