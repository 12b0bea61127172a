/* Export and import of a VM as jobs (export.h). Both follow the same
 * order: check everything first (the plan), then make every file under a
 * temporary name, then one rename (the commit point). A recovery after a
 * crash removes what the temporary name holds, or sees that the rename
 * happened. Disks are copied file by file with their holes kept (SEEK_DATA
 * and SEEK_HOLE), so a dynamic VHDX stays small and a sparse raw image
 * stays sparse, and each differencing child is then re-pointed at its
 * copied parent through the disk library (disk_set_parent). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "common/util.h"
#include "daemon/checkpoint.h"
#include "daemon/export.h"
#include "disk/disk.h"

#define COPY_CHUNK (1 << 20)
#define CHAIN_MAX 64 /* files in one VM's disk chains */
#define CONFIG_MAX (1 << 20)

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

/* ---- files ---- */

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	int r = flag == FTW_DP ? rmdir(path) : unlink(path);
	return r < 0 && errno != ENOENT ? -1 : 0;
}

/* Removes path and everything below it (never following a symlink); a
 * missing path is 0. 0 or -errno. */
static int remove_tree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return -errno;
	fsync_parent_dir(path);
	return 0;
}

static uint64_t file_usage(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

/* Progress and cancellation of one job's copies. */
struct copy_ctx {
	struct job *job;
	uint64_t done, total;
	uint8_t *buf;
};

static int copy_range(int in, int out, off_t from, off_t to, struct copy_ctx *c)
{
	while (from < to) {
		size_t n = (size_t)MIN((off_t)COPY_CHUNK, to - from);
		ssize_t got = pread(in, c->buf, n, from);
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		for (ssize_t w = 0; w < got;) {
			ssize_t put = pwrite(out, c->buf + w, (size_t)(got - w), from + w);
			if (put < 0)
				return -errno;
			w += put;
		}
		from += got;
		c->done += (uint64_t)got;
		job_set_progress(c->job, MIN(c->done, c->total), c->total);
		if (job_cancelled(c->job))
			return -ECANCELED;
	}
	return 0;
}

/* Copies src to the new file dst (which must not exist) with its holes,
 * and fsyncs it. On failure dst is removed. 0 or -errno with err filled. */
static int copy_sparse(const char *src, const char *dst, struct copy_ctx *c, char *err,
		       size_t errlen)
{
	struct stat st;
	int r = 0;
	int in = open(src, O_RDONLY | O_CLOEXEC);

	if (in < 0 || fstat(in, &st) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot read '%.1500s': %s", src, strerror(-r));
		if (in >= 0)
			close(in);
		return r;
	}
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (out < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot create '%.1500s': %s", dst, strerror(-r));
		close(in);
		return r;
	}
	if (ftruncate(out, st.st_size) < 0)
		r = -errno;
	for (off_t off = 0; !r && off < st.st_size;) {
		off_t data = lseek(in, off, SEEK_DATA);
		if (data < 0) {
			r = errno == ENXIO ? 0 : -errno;
			break;
		}
		off_t hole = lseek(in, data, SEEK_HOLE);
		if (hole < 0)
			hole = st.st_size;
		r = copy_range(in, out, data, hole, c);
		off = hole;
	}
	if (!r && fsync(out) < 0)
		r = -errno;
	close(in);
	close(out);
	if (r) {
		if (r != -ECANCELED)
			snprintf(err, errlen, "cannot copy '%.1000s' to '%.1000s': %s", src, dst,
				 strerror(-r));
		unlink(dst);
	}
	return r;
}

/* Copies the regular files of directory src (a saved state) into dst,
 * which is made. 0 or -errno with err filled. */
static int copy_flat_dir(const char *src, const char *dst, struct copy_ctx *c, char *err,
			 size_t errlen)
{
	struct dirent *de;
	int r = mkdir(dst, 0750) < 0 && errno != EEXIST ? -errno : 0;
	DIR *dp = r ? NULL : opendir(src);

	if (!r && !dp)
		r = -errno;
	if (r) {
		snprintf(err, errlen, "cannot copy the saved state %.1000s: %s", src, strerror(-r));
		return r;
	}
	while (!r && (de = readdir(dp))) {
		char from[PATH_MAX], to[PATH_MAX];
		struct stat st;
		if (de->d_name[0] == '.' || fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
		    !S_ISREG(st.st_mode))
			continue;
		snprintf(from, sizeof(from), "%.2000s/%s", src, de->d_name);
		snprintf(to, sizeof(to), "%.2000s/%s", dst, de->d_name);
		r = copy_sparse(from, to, c, err, errlen);
	}
	closedir(dp);
	return r;
}

static uint64_t flat_dir_usage(const char *dir)
{
	struct dirent *de;
	uint64_t n = 0;
	DIR *dp = opendir(dir);

	while (dp && (de = readdir(dp))) {
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%.3000s/%s", dir, de->d_name);
		if (de->d_name[0] != '.')
			n += file_usage(p);
	}
	if (dp)
		closedir(dp);
	return n;
}

static int make_dirs(const char *base, const char *const *subs, char *err, size_t errlen)
{
	char p[PATH_MAX];
	int r = mkdir(base, 0750) < 0 ? -errno : 0;

	for (unsigned i = 0; !r && subs[i]; i++) {
		snprintf(p, sizeof(p), "%.3000s/%s", base, subs[i]);
		r = mkdir_p(p, 0750);
	}
	if (r)
		snprintf(err, errlen, "cannot make '%.2000s': %s", base, strerror(-r));
	return r;
}

/* ---- disk chains ---- */

/* The files of a VM's disks: each chain from its base up, every file once.
 * As JSON: [{"src": path, "name": file name in the destination, "parent":
 * index or -1}], and per disk the index of its top. */
static int chain_add(json_t *files, const char *src, int parent)
{
	size_t i;
	json_t *f;
	char tmp[PATH_MAX], name[300];

	json_array_foreach(files, i, f)
		if (!strcmp(jstr(f, "src"), src))
			return (int)i;
	snprintf(tmp, sizeof(tmp), "%s", src);
	snprintf(name, sizeof(name), "%.250s", basename(tmp));
	/* Two different files with one name (from two folders) get -2, -3. */
	for (unsigned n = 2;; n++) {
		bool clash = false;
		json_array_foreach(files, i, f) clash = clash || !strcmp(jstr(f, "name"), name);
		if (!clash)
			break;
		snprintf(tmp, sizeof(tmp), "%s", src);
		char *b = basename(tmp), *dot = strrchr(b, '.');
		if (dot)
			*dot = 0;
		const char *ext = strrchr(src, '.');
		snprintf(name, sizeof(name), "%.200s-%u%.20s", b, n,
			 ext && !strchr(ext, '/') ? ext : "");
	}
	json_array_append_new(files, json_pack("{s:s, s:s, s:i}", "src", src, "name", name,
					       "parent", parent));
	return (int)json_array_size(files) - 1;
}

/* Opens disk path with its whole chain (the disk library finds the parents
 * as a worker would) and adds its files to files, base first. Returns the
 * top's index, or -errno with err naming the file that is missing or bad. */
static int chain_collect(const char *path, json_t *files, char *err, size_t errlen)
{
	struct disk *dk;
	struct disk_error derr = { { 0 } };
	char paths[16][PATH_MAX];
	unsigned n = 0;

	int r = disk_open(path, DISK_OPEN_RDONLY, &dk, &derr);
	if (r) {
		snprintf(err, errlen, "disk '%.1000s' or one of its parents cannot be opened: %s",
			 path, derr.msg[0] ? derr.msg : strerror(-r));
		return r;
	}
	for (struct disk *p = dk; p && n < ARRAY_SIZE(paths); p = disk_parent(p)) {
		if (!realpath(disk_path(p), paths[n]))
			snprintf(paths[n], PATH_MAX, "%s", disk_path(p));
		n++;
	}
	disk_close(dk);
	int parent = -1;
	for (unsigned i = n; i-- > 0;) {
		if (json_array_size(files) >= CHAIN_MAX) {
			snprintf(err, errlen, "the VM's disks are more than %d files", CHAIN_MAX);
			return -E2BIG;
		}
		parent = chain_add(files, paths[i], parent);
	}
	return parent;
}

static uint64_t files_usage(json_t *files)
{
	size_t i;
	json_t *f;
	uint64_t n = 0;

	json_array_foreach(files, i, f) n += file_usage(jstr(f, "src"));
	return n;
}

/* Copies the chain files into dir (dst names from "name"), parents first,
 * and re-points every child at its copy. With tmp_prefix, each is written
 * under "<prefix><name>" and renamed to its name once whole (for a folder
 * that is not itself temporary). 0 or -errno with err filled. */
static int copy_chains(json_t *files, const char *dir, const char *tmp_prefix,
		       struct copy_ctx *c, char *err, size_t errlen)
{
	size_t i;
	json_t *f;

	json_array_foreach(files, i, f) {
		char dst[PATH_MAX], tmp[PATH_MAX], parent[PATH_MAX];
		struct disk_error derr = { { 0 } };
		snprintf(dst, sizeof(dst), "%.3000s/%s", dir, jstr(f, "name"));
		snprintf(tmp, sizeof(tmp), "%.3000s/%s%s", dir, tmp_prefix ? tmp_prefix : "",
			 jstr(f, "name"));
		int r = copy_sparse(jstr(f, "src"), tmp, c, err, errlen);
		if (r)
			return r;
		int p = (int)json_integer_value(json_object_get(f, "parent"));
		if (p >= 0) {
			snprintf(parent, sizeof(parent), "%.3000s/%s", dir,
				 jstr(json_array_get(files, (size_t)p), "name"));
			r = disk_set_parent(tmp, parent, &derr);
			if (r) {
				snprintf(err, errlen, "cannot point the copy '%.1000s' at its parent: "
					 "%s", tmp, derr.msg[0] ? derr.msg : strerror(-r));
				unlink(tmp);
				return r;
			}
		}
		if (tmp_prefix && rename(tmp, dst) < 0) {
			r = -errno;
			snprintf(err, errlen, "cannot rename '%.1000s': %s", tmp, strerror(-r));
			unlink(tmp);
			return r;
		}
	}
	return 0;
}

/* Writes cfg as <dir>/<GUID>.json, durably. 0 or -errno with err. */
static int write_config(const char *dir, const struct vm_config *cfg, char *err, size_t errlen)
{
	char path[PATH_MAX], id[GUID_STR_LEN];
	json_t *j = vm_config_to_json(cfg);
	char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	int r = text ? 0 : -ENOMEM;

	json_decref(j);
	snprintf(path, sizeof(path), "%.3000s/%s.json", dir, guid_to_string(&cfg->id, id));
	if (!r)
		r = atomic_write_file(path, text, strlen(text), 0640);
	free(text);
	if (r)
		snprintf(err, errlen, "cannot write '%.2000s': %s", path, strerror(-r));
	return r;
}

/* Commits tmp as final: rename, then the parent directory is made durable. */
static int commit_rename(const char *tmp, const char *final, char *err, size_t errlen)
{
	if (rename(tmp, final) < 0) {
		int r = -errno;
		snprintf(err, errlen, "cannot rename '%.1000s' to '%.1000s': %s", tmp, final,
			 strerror(-r));
		return r;
	}
	fsync_parent_dir(final);
	return 0;
}

static int check_dir(const char *what, const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (dir[0] != '/') {
		snprintf(err, errlen, "the %s '%.1500s' must be an absolute path", what, dir);
		return -EINVAL;
	}
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "the %s '%.1500s' %s", what, dir,
			 errno == ENOENT || !S_ISDIR(st.st_mode) ? "does not exist or is not a "
								   "folder: make it first"
								 : strerror(errno));
		return -ENOENT;
	}
	return 0;
}

static int parse_wait(json_t *v, bool *wait, char *err, size_t errlen)
{
	if (!v)
		return 0;
	if (!json_is_boolean(v)) {
		snprintf(err, errlen, "field 'wait' must be a boolean");
		return -EINVAL;
	}
	*wait = json_is_true(v);
	return 0;
}

static int new_tmp_name(const char *dir, const char *name, const char *what, char *out,
			size_t len)
{
	struct guid g;
	char id[GUID_STR_LEN];

	if (guid_generate(&g))
		return -EIO;
	guid_to_string(&g, id);
	snprintf(out, len, "%.2000s/.%s.%s-%.8s", dir, name, what, id);
	return 0;
}

/* ---- export ---- */

json_t *export_plan(struct vm *vm, json_t *body, bool *wait, int *code, char *err,
		    size_t errlen)
{
	const char *key, *dir = NULL, *why;
	char final[PATH_MAX], tmp[PATH_MAX], name[VM_NAME_MAX + 1];
	json_t *v;

	*wait = true;
	*code = -EINVAL;
	json_object_foreach(body, key, v) {
		if (!strcmp(key, "dir") && json_is_string(v)) {
			dir = json_string_value(v);
		} else if (!strcmp(key, "wait")) {
			if (parse_wait(v, wait, err, errlen))
				return NULL;
		} else {
			snprintf(err, errlen, "%s '%s' (known for export: dir (a string), wait)",
				 strcmp(key, "dir") ? "unknown field" : "wrong type of field", key);
			return NULL;
		}
	}
	if (!dir) {
		snprintf(err, errlen, "field 'dir' is missing: the folder to export into");
		return NULL;
	}
	if ((*code = check_dir("export folder", dir, err, errlen)))
		return NULL;
	pthread_mutex_lock(&vm->d->lock);
	snprintf(name, sizeof(name), "%s", vm->cfg.name);
	enum vm_state s = vm->state;
	pthread_mutex_unlock(&vm->d->lock);
	(void)why;
	/* A running or paused VM is exported from a temporary checkpoint
	 * (Hyper-V's live export), planned now like any checkpoint: its
	 * checks (raw disks, checkpoints disabled) refuse the export. */
	json_t *cp_plan = NULL;
	if (s == VM_RUNNING || s == VM_PAUSED) {
		char cname[96], cerr[1024];
		time_t now = time(NULL);
		struct tm tm;

		gmtime_r(&now, &tm);
		strftime(cname, sizeof(cname), "Export (temporary) %Y-%m-%dT%H:%M:%SZ", &tm);
		json_t *cbody = json_pack("{s:s}", "name", cname);
		cp_plan = cbody ? checkpoint_plan_create(vm, cbody, code, cerr, sizeof(cerr)) : NULL;
		json_decref(cbody);
		if (!cp_plan) {
			snprintf(err, errlen, "VM '%s' is %s, and a running VM is exported from a "
				 "temporary checkpoint, which cannot be taken: %s (or stop or save "
				 "the VM first)", name, vm_state_name(s), cerr);
			return NULL;
		}
	} else if (s != VM_OFF && s != VM_SAVED && s != VM_CRASHED) {
		snprintf(err, errlen, "VM '%s' is %s: an export needs it off, saved or running "
			 "(wait for it, or stop it with 'cloison vm stop %s')", name,
			 vm_state_name(s), name);
		*code = -EBUSY;
		return NULL;
	}
	snprintf(final, sizeof(final), "%.3000s/%s", dir, name);
	if (access(final, F_OK) == 0 || errno != ENOENT) {
		snprintf(err, errlen, "'%.2000s' exists already: export into another folder, or "
			 "remove it first", final);
		*code = -EEXIST;
		return NULL;
	}
	if ((*code = new_tmp_name(dir, name, "export", tmp, sizeof(tmp)))) {
		snprintf(err, errlen, "no randomness for a temporary name");
		json_decref(cp_plan);
		return NULL;
	}
	*code = 0;
	return json_pack("{s:s, s:s, s:s, s:o*}", "dir", dir, "final", final, "tmp", tmp,
			 "checkpoint", cp_plan);
}

/* The checkpoints of tree (checkpoint_list's form) but skip, each with
 * the index in files of each of its disks' tops (chain_collect), as
 * [{"cp": checkpoint, "tops": [i...]}]; *usage gets their folders' bytes.
 * NULL with err when a disk of one cannot be opened. */
static json_t *tree_collect(json_t *tree, const char *skip, json_t *files, uint64_t *usage,
			    char *err, size_t errlen)
{
	json_t *out = json_array(), *cp, *dk;
	size_t i, k;

	*usage = 0;
	json_array_foreach(json_object_get(tree, "checkpoints"), i, cp) {
		if (skip && !strcmp(jstr(cp, "id"), skip))
			continue;
		json_t *tops = json_array();
		json_array_append_new(out, json_pack("{s:O, s:o}", "cp", cp, "tops", tops));
		json_array_foreach(json_object_get(cp, "disks"), k, dk) {
			int t = chain_collect(jstr(dk, "path"), files, err, errlen);
			if (t < 0) {
				snprintf(err + strlen(err), errlen - strlen(err), " (of checkpoint "
					 "'%.100s')", jstr(cp, "name"));
				json_decref(out);
				return NULL;
			}
			json_array_append_new(tops, json_integer(t));
		}
		*usage += flat_dir_usage(jstr(cp, "dir"));
	}
	return out;
}

/* Points a configuration file's disks (in order) at paths. */
static int repoint_config_file(const char *path, json_t *paths, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr), *dk;
	size_t i;

	if (!j) {
		snprintf(err, errlen, "%.2000s does not load: %s", path, jerr.text);
		return -EIO;
	}
	json_array_foreach(json_object_get(j, "disks"), i, dk)
		if (i < json_array_size(paths))
			json_object_set(dk, "path", json_array_get(paths, i));
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	int r = text ? atomic_write_file(path, text, strlen(text), 0640) : -ENOMEM;
	free(text);
	json_decref(j);
	if (r)
		snprintf(err, errlen, "cannot write %.2000s: %s", path, strerror(-r));
	return r;
}

/* Writes the checkpoint tree for a VM whose folder will be vm_final:
 * each checkpoint's folder (src_root/Snapshots/<id> when src_root has it,
 * else its own "dir") copied to stage/Snapshots/<id> (copy true) or left
 * where it is, its disks at disk_dir/<name of its top in files> (disk_dir
 * NULL: where they are), the temporary checkpoint skip left out (its
 * children and "now" move up to its parent); then
 * stage/Snapshots/checkpoints.json. */
static int tree_write(json_t *tree, const char *skip, json_t *collected, json_t *files,
		      const char *disk_dir, const char *stage, const char *vm_final,
		      const char *src_root, bool copy, struct copy_ctx *c, char *err, size_t errlen)
{
	json_t *cps = json_array(), *e, *cur = json_object_get(tree, "current");
	const char *skip_parent = NULL;
	char p[PATH_MAX];
	size_t i, k;
	int r = 0;

	snprintf(p, sizeof(p), "%.3000s/Snapshots", stage);
	if ((r = mkdir_p(p, 0750))) {
		snprintf(err, errlen, "cannot make %.2000s: %s", p, strerror(-r));
		json_decref(cps);
		return r;
	}
	json_array_foreach(json_object_get(tree, "checkpoints"), i, e)
		if (skip && !strcmp(jstr(e, "id"), skip))
			skip_parent = json_string_value(json_object_get(e, "parent"));
	if (skip && json_is_string(cur) && !strcmp(json_string_value(cur), skip))
		cur = skip_parent ? json_string(skip_parent) : json_null();
	else
		json_incref(cur);
	json_array_foreach(collected, i, e) {
		json_t *cp = json_deep_copy(json_object_get(e, "cp")), *paths = json_array(), *dk;
		const char *id = jstr(cp, "id");
		json_array_append_new(cps, cp);
		if (skip && !strcmp(jstr(cp, "parent"), skip))
			json_object_set_new(cp, "parent", skip_parent ? json_string(skip_parent)
								      : json_null());
		json_array_foreach(json_object_get(cp, "disks"), k, dk) {
			size_t t = (size_t)json_integer_value(
				json_array_get(json_object_get(e, "tops"), k));
			if (disk_dir)
				snprintf(p, sizeof(p), "%.3000s/%s", disk_dir,
					 jstr(json_array_get(files, t), "name"));
			else
				snprintf(p, sizeof(p), "%s", jstr(json_array_get(files, t), "src"));
			json_object_set_new(dk, "path", json_string(p));
			json_array_append_new(paths, json_string(p));
		}
		/* where the folder comes from: the export's Snapshots/<id>, or
		 * the checkpoint's own folder */
		char src[PATH_MAX];
		struct stat st;
		snprintf(src, sizeof(src), "%s", jstr(cp, "dir"));
		if (src_root) {
			char in_export[PATH_MAX];
			snprintf(in_export, sizeof(in_export), "%.3000s/Snapshots/%s", src_root, id);
			if (stat(in_export, &st) == 0 && S_ISDIR(st.st_mode))
				snprintf(src, sizeof(src), "%s", in_export);
		}
		if (copy) {
			char dst[PATH_MAX];
			snprintf(dst, sizeof(dst), "%.3000s/Snapshots/%s", stage, id);
			if (!r)
				r = copy_flat_dir(src, dst, c, err, errlen);
			snprintf(p, sizeof(p), "%.3000s/config.json", dst);
			if (!r && access(p, F_OK) == 0)
				r = repoint_config_file(p, paths, err, errlen);
			snprintf(p, sizeof(p), "%.3000s/Snapshots/%s", vm_final, id);
			json_object_set_new(cp, "dir", json_string(p));
		} else {
			json_object_set_new(cp, "dir", json_string(src));
		}
		json_decref(paths);
	}
	json_t *out = json_pack("{s:i, s:O, s:n, s:o, s:o}", "version", 1, "checkpoint_type",
				json_object_get(json_object_get(tree, "settings"), "checkpoint_type"),
				"folder", "current", cur, "checkpoints", cps);
	snprintf(p, sizeof(p), "%.3000s/Snapshots/checkpoints.json", stage);
	char *text = out ? json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	if (!r)
		r = text ? atomic_write_file(p, text, strlen(text), 0640) : -ENOMEM;
	if (r && !err[0])
		snprintf(err, errlen, "cannot write %.2000s: %s", p, strerror(-r));
	free(text);
	json_decref(out);
	return r;
}

static int export_files(const struct vm_config *cfg, const char *saved_dir, json_t *tree,
			const char *skip, json_t *args, struct copy_ctx *c, char *err,
			size_t errlen)
{
	static const char *const subs[] = { "Virtual Machines", "Virtual Hard Disks", "Snapshots",
					    NULL };
	const char *tmp = jstr(args, "tmp"), *final = jstr(args, "final");
	char p[PATH_MAX], id[GUID_STR_LEN];
	json_t *files = json_array(), *collected = NULL;
	int tops[VM_MAX_DISKS], r = 0;
	struct vm_config out;
	uint64_t cp_usage = 0;

	for (unsigned i = 0; !r && i < cfg->n_disks; i++)
		if ((tops[i] = chain_collect(cfg->disks[i].path, files, err, errlen)) < 0)
			r = tops[i];
	if (!r && tree && !(collected = tree_collect(tree, skip, files, &cp_usage, err, errlen)))
		r = -ENOENT;
	if (r)
		goto done;
	c->total = files_usage(files) + (saved_dir ? flat_dir_usage(saved_dir) : 0) + cp_usage;
	job_set_progress(c->job, 0, c->total);
	if ((r = make_dirs(tmp, subs, err, errlen)))
		goto done;
	snprintf(p, sizeof(p), "%.3000s/Virtual Hard Disks", tmp);
	if ((r = copy_chains(files, p, NULL, c, err, errlen)))
		goto done;
	guid_to_string(&cfg->id, id);
	if (saved_dir) {
		snprintf(p, sizeof(p), "%.3000s/Virtual Machines/%s", tmp, id);
		if ((r = copy_flat_dir(saved_dir, p, c, err, errlen)))
			goto done;
	}
	if ((r = vm_config_copy(&out, cfg)))
		goto done;
	for (unsigned i = 0; i < out.n_disks; i++) {
		snprintf(p, sizeof(p), "%.3000s/Virtual Hard Disks/%s", final,
			 jstr(json_array_get(files, (size_t)tops[i]), "name"));
		free(out.disks[i].path);
		out.disks[i].path = strdup(p);
		if (!out.disks[i].path)
			r = -ENOMEM;
	}
	snprintf(p, sizeof(p), "%.3000s/Virtual Machines", tmp);
	if (!r)
		r = write_config(p, &out, err, errlen);
	vm_config_clear(&out);
	if (!r && collected && json_array_size(collected)) {
		char vhd[PATH_MAX];
		snprintf(vhd, sizeof(vhd), "%.3000s/Virtual Hard Disks", final);
		r = tree_write(tree, skip, collected, files, vhd, tmp, final, NULL, true, c, err,
			       errlen);
	}
	if (!r)
		r = fsync_parent_dir(p) < 0 ? 0 : 0;
	if (!r)
		r = commit_rename(tmp, final, err, errlen);
done:
	json_decref(collected);
	json_decref(files);
	return r;
}

/* The export from checkpoint cp: its configuration (config.json, whose
 * disks are the checkpoint's, read-only from now on) and, for a standard
 * one, its saved state. */
static int export_checkpoint(struct vm *vm, json_t *cp, json_t *args, struct copy_ctx *c,
			     char *err, size_t errlen)
{
	char path[2600], perr[1024];
	json_error_t jerr;
	struct vm_config cfg;

	snprintf(path, sizeof(path), "%.2500s/config.json", jstr(cp, "dir"));
	json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		snprintf(err, errlen, "the temporary checkpoint's %.2500s does not load: %s", path,
			 jerr.text);
		return -EIO;
	}
	int r = vm_config_from_json(j, &cfg, perr, sizeof(perr));
	json_decref(j);
	if (r) {
		snprintf(err, errlen, "the temporary checkpoint's configuration does not parse: %s",
			 perr);
		return r;
	}
	json_t *tree = checkpoint_list(vm, err, errlen);
	r = tree ? export_files(&cfg, json_is_true(json_object_get(cp, "saved_state"))
					      ? jstr(cp, "dir")
					      : NULL,
				tree, jstr(cp, "id"), args, c, err, errlen)
		 : -EIO;
	json_decref(tree);
	vm_config_clear(&cfg);
	return r;
}

/* A running VM (Hyper-V's live export): a temporary checkpoint, taken as
 * any other (the VM goes on, in new differencing disks); the export copies
 * what the checkpoint holds, which nothing writes any more; then the
 * checkpoint is removed (its disks merged back) and the VM goes on. */
static int export_running(struct job *job, struct vm *vm, json_t *args, struct copy_ctx *c,
			  char *err, size_t errlen)
{
	json_t *plan = json_object_get(args, "checkpoint"), *res = NULL;
	const char *id = jstr(plan, "id");
	char note[1024] = "", rerr[1024];
	int r = checkpoint_create_now(job, vm, plan, &res, err, errlen);

	if (r)
		return r;
	json_t *cp = checkpoint_get(vm, id, err, errlen);
	r = cp ? export_checkpoint(vm, cp, args, c, err, errlen) : -EIO;
	if (r)
		remove_tree(jstr(args, "tmp"));
	bool saved = cp && json_is_true(json_object_get(cp, "saved_state"));
	json_decref(cp);
	int code;
	json_t *rplan = checkpoint_plan_remove(vm, id, false, &code, rerr, sizeof(rerr));
	if (rplan) /* the names a recovery knows (checkpoint_recover_temporary) */
		json_object_set(rplan, "spares", json_object_get(plan, "spares"));
	int rr = rplan ? checkpoint_remove_now(NULL, vm, rplan, note, sizeof(note), rerr,
					       sizeof(rerr))
		       : code;
	json_decref(rplan);
	if (rr)
		snprintf(note, sizeof(note), "the temporary checkpoint '%s' (%s) could not be "
			 "removed: %.500s; remove it with 'cloison checkpoint remove %s %s'",
			 jstr(plan, "name"), id, rerr, vm->cfg.name, id);
	if (!r)
		job_set_result(job, json_pack("{s:s, s:I, s:b, s:s, s:s, s:s}", "path",
					      jstr(args, "final"), "bytes", (json_int_t)c->done,
					      "saved_state", saved, "checkpoint_type",
					      jstr(res, "type"), "checkpoint_note", jstr(res, "note"),
					      "note", note));
	else if (rr)
		log_warn("vm %s: %s", vm->cfg.name, note);
	json_decref(res);
	return r;
}

static int export_run(struct job *job, char *err, size_t errlen)
{
	struct vm *vm = job_vm(job);
	json_t *args = job_args(job);
	struct vm_config cfg;
	struct copy_ctx c = { .job = job };
	int r;

	c.buf = malloc(COPY_CHUNK);
	if (!c.buf)
		return -ENOMEM;
	if (json_object_get(args, "checkpoint")) {
		r = export_running(job, vm, args, &c, err, errlen);
		free(c.buf);
		return r;
	}
	/* The op_lock keeps the VM off (or saved) for the whole copy: a start
	 * waits for the export, so the copied disks are never written. */
	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&vm->d->lock);
	enum vm_state s = vm->state;
	r = vm_config_copy(&cfg, &vm->cfg);
	pthread_mutex_unlock(&vm->d->lock);
	if (!r && s != VM_OFF && s != VM_SAVED && s != VM_CRASHED) {
		snprintf(err, errlen, "VM '%s' became %s before the export began: nothing was "
			 "exported", cfg.name, vm_state_name(s));
		job_set_error_code(job, "invalid-state");
		r = -EBUSY;
	} else if (!r) {
		json_t *tree = checkpoint_list(vm, err, errlen);
		r = tree ? export_files(&cfg, s == VM_SAVED ? vm->saved_dir : NULL, tree, NULL, args,
					&c, err, errlen)
			 : -EIO;
		json_decref(tree);
		if (r)
			remove_tree(jstr(args, "tmp"));
	}
	pthread_mutex_unlock(&vm->op_lock);
	if (!r)
		job_set_result(job, json_pack("{s:s, s:I, s:b}", "path", jstr(args, "final"),
					      "bytes", (json_int_t)c.done, "saved_state",
					      s == VM_SAVED));
	vm_config_clear(&cfg);
	free(c.buf);
	return r;
}


static enum job_state export_recover(struct daemon *d, json_t *record, char *note, size_t len)
{
	json_t *args = json_object_get(record, "args");
	const char *tmp = jstr(args, "tmp"), *final = jstr(args, "final");
	struct stat st;

	char cnote[1200] = "";
	enum job_state js = JOB_FAILED;

	if (!tmp[0] || !final[0]) {
		snprintf(note, len, "the job's record names no folder; nothing was done");
		return JOB_FAILED;
	}
	if (lstat(tmp, &st) < 0 && errno == ENOENT && access(final, F_OK) == 0) {
		snprintf(note, len, "the export had finished: %.400s", final);
		js = JOB_COMPLETED;
	} else {
		int r = remove_tree(tmp);
		if (r)
			snprintf(note, len, "the export did not finish; its partial folder %.300s "
				 "could not be removed: %s", tmp, strerror(-r));
		else
			snprintf(note, len, "the export did not finish; its partial folder %.300s "
				 "was removed", tmp);
	}
	/* a running VM's export: its temporary checkpoint goes too */
	if (json_is_object(json_object_get(args, "checkpoint"))) {
		checkpoint_recover_temporary(d, record, json_object_get(args, "checkpoint"), cnote,
					     sizeof(cnote));
		snprintf(note + strlen(note), len - strlen(note), "; %s", cnote);
	}
	return js;
}

const struct job_kind job_kind_export = {
	.name = "export",
	.cancellable = true,
	.run = export_run,
	.probe = NULL,
	.recover = export_recover,
};

/* ---- import ---- */

static const char *const import_modes[] = { "register", "restore", "copy", NULL };

struct import_req {
	const char *path, *mode, *name, *vhd_dir;
	bool wait;
};

static int import_parse(json_t *body, struct import_req *q, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	memset(q, 0, sizeof(*q));
	q->wait = true;
	q->mode = "register";
	json_object_foreach(body, key, v) {
		if (!strcmp(key, "wait")) {
			if (parse_wait(v, &q->wait, err, errlen))
				return -EINVAL;
			continue;
		}
		const char **dst = !strcmp(key, "path")	   ? &q->path
				   : !strcmp(key, "mode")    ? &q->mode
				   : !strcmp(key, "name")    ? &q->name
				   : !strcmp(key, "vhd_dir") ? &q->vhd_dir
							     : NULL;
		if (!dst || !json_is_string(v)) {
			snprintf(err, errlen, "%s '%s' (known for import: path, mode, name, vhd_dir "
				 "(strings), wait)", dst ? "field must be a string:" : "unknown field",
				 key);
			return -EINVAL;
		}
		*dst = json_string_value(v);
	}
	if (!q->path) {
		snprintf(err, errlen, "field 'path' is missing: the exported VM's folder");
		return -EINVAL;
	}
	unsigned i = 0;
	while (import_modes[i] && strcmp(import_modes[i], q->mode))
		i++;
	if (!import_modes[i]) {
		snprintf(err, errlen, "mode '%.100s' is not one of register, restore, copy", q->mode);
		return -EINVAL;
	}
	if (q->name && !vm_name_valid(q->name)) {
		snprintf(err, errlen, "name '%.100s' is not a valid VM name (1-64 of A-Z a-z 0-9 . _ "
			 "-, not starting with . or -)", q->name);
		return -EINVAL;
	}
	if (q->vhd_dir && !strcmp(q->mode, "register")) {
		snprintf(err, errlen, "vhd_dir is for a restore or a copy: a register leaves the "
			 "disks where they are");
		return -EINVAL;
	}
	return 0;
}

/* Finds the one Virtual Machines/<GUID>.json of dir; its GUID in id. */
static int find_config(const char *dir, char *path, size_t len, char *id, char *err,
		       size_t errlen)
{
	char vmdir[PATH_MAX];
	struct dirent *de;
	struct guid g;
	unsigned n = 0;

	snprintf(vmdir, sizeof(vmdir), "%.3000s/Virtual Machines", dir);
	DIR *dp = opendir(vmdir);
	while (dp && (de = readdir(dp))) {
		char base[40];
		if (strlen(de->d_name) != 36 + 5 || strcmp(de->d_name + 36, ".json"))
			continue;
		snprintf(base, sizeof(base), "%.36s", de->d_name);
		if (guid_parse(base, &g))
			continue;
		if (!n++) {
			snprintf(path, len, "%.3000s/%.60s", vmdir, de->d_name);
			memcpy(id, base, 36);
			id[36] = 0;
		}
	}
	if (dp)
		closedir(dp);
	if (n == 1)
		return 0;
	if (n)
		snprintf(err, errlen, "'%.1500s' holds %u VM configurations: an import takes a "
			 "folder with one", vmdir, n);
	else
		snprintf(err, errlen, "'%.1500s' holds no VM configuration (Virtual "
			 "Machines/<GUID>.json): give the folder of one exported VM (DIR/NAME)",
			 dir);
	return n ? -EINVAL : -ENOENT;
}

static int load_config(const char *path, struct vm_config *cfg, char *err, size_t errlen)
{
	char *text = NULL, perr[768] = "";
	size_t len;
	json_error_t jerr;

	memset(cfg, 0, sizeof(*cfg));
	int r = read_file(path, CONFIG_MAX, &text, &len);
	if (r) {
		snprintf(err, errlen, "cannot read '%.1500s': %s", path, strerror(-r));
		return r;
	}
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (!j) {
		snprintf(err, errlen, "'%.1500s' is not valid JSON (line %d: %s); nothing was "
			 "imported", path, jerr.line, jerr.text);
		return -EINVAL;
	}
	r = vm_config_from_json(j, cfg, perr, sizeof(perr));
	json_decref(j);
	if (r)
		snprintf(err, errlen, "'%.1000s' is not a VM configuration this cloisond reads: %s; "
			 "nothing was imported", path, perr);
	return r;
}

/* Where disk i of an exported config is now: <dir>/Virtual Hard Disks/
 * <its file name>, else the path the config names (a folder that was not
 * exported). -ENOENT with err when neither exists. */
static int locate_disk(const char *dir, const struct vm_config *cfg, unsigned i, char *out,
		       size_t len, char *err, size_t errlen)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", cfg->disks[i].path);
	snprintf(out, len, "%.3000s/Virtual Hard Disks/%s", dir, basename(tmp));
	if (access(out, F_OK) == 0)
		return 0;
	if (access(cfg->disks[i].path, F_OK) == 0) {
		snprintf(out, len, "%s", cfg->disks[i].path);
		return 0;
	}
	snprintf(err, errlen, "disk %u of the VM, '%.200s', is missing: it is neither in "
		 "'%.1000s' nor at '%.1000s'; nothing was imported", i, basename(tmp), out,
		 cfg->disks[i].path);
	return -ENOENT;
}

/* The new configuration's disk paths and the files to copy (args). */
static int import_disks(const struct import_req *q, struct vm_config *cfg, const char *final,
			json_t *files, char *err, size_t errlen)
{
	bool copying = strcmp(q->mode, "register") != 0;
	char src[PATH_MAX], dst[PATH_MAX];
	int tops[VM_MAX_DISKS];

	for (unsigned i = 0; i < cfg->n_disks; i++) {
		int r = locate_disk(q->path, cfg, i, src, sizeof(src), err, errlen);
		if (r)
			return r;
		if ((tops[i] = chain_collect(src, files, err, errlen)) < 0)
			return tops[i];
		if (!copying) {
			snprintf(dst, sizeof(dst), "%s",
				 jstr(json_array_get(files, (size_t)tops[i]), "src"));
		} else {
			const char *name = jstr(json_array_get(files, (size_t)tops[i]), "name");
			if (q->vhd_dir)
				snprintf(dst, sizeof(dst), "%.3000s/%s", q->vhd_dir, name);
			else
				snprintf(dst, sizeof(dst), "%.3000s/Virtual Hard Disks/%s", final,
					 name);
		}
		char *p = strdup(dst);
		if (!p)
			return -ENOMEM;
		free(cfg->disks[i].path);
		cfg->disks[i].path = p;
	}
	if (!copying || !q->vhd_dir)
		return 0;
	size_t i;
	json_t *f;
	json_array_foreach(files, i, f) {
		snprintf(dst, sizeof(dst), "%.3000s/%s", q->vhd_dir, jstr(f, "name"));
		if (access(dst, F_OK) == 0) {
			snprintf(err, errlen, "'%.2000s' exists already: give another --vhd-dir, or "
				 "move it away; nothing was imported", dst);
			return -EEXIST;
		}
	}
	return 0;
}

/* An export's checkpoint tree (path/Snapshots/checkpoints.json, if any)
 * in checkpoint_list's form (new ref in *tree), its checkpoints' disks
 * collected into files (*collected), or 0 with both NULL when there is
 * none. Each disk is looked up as a VM's disk is. -errno with err when
 * the tree is damaged or a disk is missing. */
static int import_tree(const char *path, json_t *files, json_t **tree, json_t **collected,
		       char *err, size_t errlen)
{
	char tp[PATH_MAX], src[PATH_MAX], tmp[PATH_MAX];
	json_error_t jerr;
	size_t i, k;
	json_t *cp, *dk;
	uint64_t usage;

	*tree = *collected = NULL;
	snprintf(tp, sizeof(tp), "%.3000s/Snapshots/checkpoints.json", path);
	if (access(tp, F_OK) < 0 && errno == ENOENT)
		return 0;
	json_t *t = json_load_file(tp, JSON_REJECT_DUPLICATES, &jerr);
	json_t *cps = json_object_get(t, "checkpoints");
	bool ok = json_integer_value(json_object_get(t, "version")) == 1 && json_is_array(cps);
	json_array_foreach(cps, i, cp) {
		struct guid g;
		json_t *par = json_object_get(cp, "parent");
		ok = ok && json_is_string(json_object_get(cp, "id")) &&
		     !guid_parse(jstr(cp, "id"), &g) && json_is_string(json_object_get(cp, "name")) &&
		     (json_is_null(par) || json_is_string(par)) &&
		     json_is_array(json_object_get(cp, "disks")) &&
		     json_array_size(json_object_get(cp, "disks")) <= VM_MAX_DISKS;
		json_array_foreach(json_object_get(cp, "disks"), k, dk)
			ok = ok && json_is_string(json_object_get(dk, "path"));
	}
	if (!ok) {
		snprintf(err, errlen, "%.2000s is not a checkpoint tree cloison reads (%s): nothing "
			 "was imported; move the Snapshots folder away to import the VM without its "
			 "checkpoints", tp, t ? "a field is missing or has the wrong type" : jerr.text);
		json_decref(t);
		return -EINVAL;
	}
	/* the disks as an import finds a VM's: in Virtual Hard Disks, else
	 * where the tree names them */
	json_array_foreach(cps, i, cp) json_array_foreach(json_object_get(cp, "disks"), k, dk) {
		snprintf(tmp, sizeof(tmp), "%s", jstr(dk, "path"));
		snprintf(src, sizeof(src), "%.3000s/Virtual Hard Disks/%s", path, basename(tmp));
		if (access(src, F_OK) == 0)
			json_object_set_new(dk, "path", json_string(src));
	}
	*tree = json_pack("{s:{s:O}, s:O, s:O}", "settings", "checkpoint_type",
			  json_object_get(t, "checkpoint_type"), "current",
			  json_object_get(t, "current"), "checkpoints", cps);
	json_decref(t);
	*collected = *tree ? tree_collect(*tree, NULL, files, &usage, err, errlen) : NULL;
	if (!*collected) {
		json_decref(*tree);
		*tree = NULL;
		return -ENOENT;
	}
	return 0;
}

/* Refuses an id or a name that is taken (naming the VM that has it). */
static int import_check_free(struct daemon *d, const struct vm_config *cfg, bool new_id,
			     const char *final, char *err, size_t errlen)
{
	char id[GUID_STR_LEN];
	struct vm *other;

	guid_to_string(&cfg->id, id);
	if (!new_id && (other = inventory_get(d, id))) {
		pthread_mutex_lock(&d->lock);
		snprintf(err, errlen, "a VM with id %s exists already: '%s' (remove it first, or "
			 "import with --copy, which gives the import a new id)", id, other->cfg.name);
		pthread_mutex_unlock(&d->lock);
		inventory_put(d, other);
		return -EEXIST;
	}
	if ((other = inventory_get(d, cfg->name))) {
		inventory_put(d, other);
		snprintf(err, errlen, "a VM named '%s' exists already: import under another name "
			 "(--name NEW)", cfg->name);
		return -EEXIST;
	}
	if (access(final, F_OK) == 0) {
		snprintf(err, errlen, "'%.2000s' exists already (not a VM cloisond knows): import "
			 "under another name (--name NEW) or move it away", final);
		return -EEXIST;
	}
	return 0;
}

json_t *import_plan(struct daemon *d, json_t *body, bool *wait, struct vm **vmp, int *code,
		    char *err, size_t errlen)
{
	struct import_req q;
	struct vm_config cfg;
	char cfg_path[PATH_MAX], file_id[GUID_STR_LEN], id[GUID_STR_LEN], final[PATH_MAX];
	char stage[PATH_MAX], saved[PATH_MAX];
	json_t *files = NULL, *args = NULL, *tree = NULL, *collected = NULL, *warnings = NULL;

	*vmp = NULL;
	memset(&cfg, 0, sizeof(cfg));
	if ((*code = import_parse(body, &q, err, errlen)))
		return NULL;
	*wait = q.wait;
	if ((*code = check_dir("import folder", q.path, err, errlen)) ||
	    (q.vhd_dir && (*code = check_dir("VHD folder", q.vhd_dir, err, errlen))) ||
	    (*code = find_config(q.path, cfg_path, sizeof(cfg_path), file_id, err, errlen)) ||
	    (*code = load_config(cfg_path, &cfg, err, errlen)))
		goto fail;
	bool copy = !strcmp(q.mode, "copy");
	if (copy && (*code = guid_generate(&cfg.id)) < 0) {
		snprintf(err, errlen, "no randomness for a new id");
		goto fail;
	}
	if (q.name)
		snprintf(cfg.name, sizeof(cfg.name), "%s", q.name);
	/* Hyper-V's import: an adapter whose switch this host lacks comes in
	 * disconnected, with a warning (its switch settings go with it). */
	warnings = json_array();
	for (unsigned i = 0; i < cfg.n_nics; i++) {
		struct vm_nic *n = &cfg.nics[i];
		if (!n->sw || vswitch_exists(d, n->sw))
			continue;
		char w[512];
		snprintf(w, sizeof(w), "network adapter %u was connected to switch '%.64s', which "
			 "this host does not have: it is imported disconnected ('cloison vm set "
			 "%s --connect %u=SWITCH' connects it)", i, n->sw, cfg.name, i);
		json_array_append_new(warnings, json_string(w));
		free(n->sw);
		n->sw = NULL;
	}
	snprintf(final, sizeof(final), "%.1900s/%s", d->state_dir, cfg.name);
	if ((*code = import_check_free(d, &cfg, copy, final, err, errlen)))
		goto fail;
	files = json_array();
	/* the tree's disks first: the --vhd-dir check covers every file */
	if ((*code = import_tree(q.path, files, &tree, &collected, err, errlen)) ||
	    (*code = import_disks(&q, &cfg, final, files, err, errlen)))
		goto fail;
	snprintf(saved, sizeof(saved), "%.3000s/Virtual Machines/%s/state.bin", q.path, file_id);
	bool has_saved = access(saved, F_OK) == 0;
	snprintf(saved, sizeof(saved), "%.3000s/Virtual Machines/%s", q.path, file_id);
	if ((*code = new_tmp_name(d->state_dir, cfg.name, "import", stage, sizeof(stage)))) {
		snprintf(err, errlen, "no randomness for a temporary name");
		goto fail;
	}
	guid_to_string(&cfg.id, id);
	args = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:o, s:o, s:o, s:O*, s:O*}", "mode",
			 q.mode, "path", q.path, "name", cfg.name, "id", id, "stage", stage, "final",
			 final, "files", files, "vhd_dir",
			 q.vhd_dir ? json_string(q.vhd_dir) : json_null(), "saved",
			 has_saved ? json_string(saved) : json_null(), "config",
			 vm_config_to_json(&cfg), "tree", tree, "tree_disks", collected);
	if (args)
		json_object_set(args, "warnings", warnings);
	*vmp = inventory_vm_unlisted(d, &cfg);
	if (!args || !*vmp) {
		*code = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	json_decref(files);
	json_decref(tree);
	json_decref(collected);
	json_decref(warnings);
	return args;
fail:
	if (*vmp)
		inventory_put(d, *vmp);
	*vmp = NULL;
	json_decref(args);
	json_decref(files);
	json_decref(tree);
	json_decref(collected);
	json_decref(warnings);
	vm_config_clear(&cfg);
	return NULL;
}

/* The file prefix of an import's disk copies in a --vhd-dir. */
static void vhd_tmp_prefix(json_t *args, char *out, size_t len)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", jstr(args, "stage"));
	snprintf(out, len, "%.200s.", basename(tmp));
}

/* Removes the disks an import made in its --vhd-dir (before its commit). */
static void remove_vhd_copies(json_t *args)
{
	const char *vd = json_string_value(json_object_get(args, "vhd_dir"));
	char prefix[300], p[PATH_MAX];
	size_t i;
	json_t *f;

	if (!vd || !strcmp(jstr(args, "mode"), "register"))
		return;
	vhd_tmp_prefix(args, prefix, sizeof(prefix));
	json_array_foreach(json_object_get(args, "files"), i, f) {
		snprintf(p, sizeof(p), "%.3000s/%s%s", vd, prefix, jstr(f, "name"));
		unlink(p);
		snprintf(p, sizeof(p), "%.3000s/%s", vd, jstr(f, "name"));
		unlink(p);
	}
}

static int import_files(struct daemon *d, json_t *args, struct copy_ctx *c, char *err,
			size_t errlen)
{
	const char *stage = jstr(args, "stage"), *id = jstr(args, "id");
	const char *vd = json_string_value(json_object_get(args, "vhd_dir"));
	const char *saved = json_string_value(json_object_get(args, "saved"));
	json_t *files = json_object_get(args, "files");
	bool copying = strcmp(jstr(args, "mode"), "register") != 0;
	char p[PATH_MAX], prefix[300], perr[512];
	const char *subs[] = { "Virtual Machines", "Virtual Hard Disks", NULL, NULL };
	struct vm_config cfg;
	int r;

	snprintf(p, sizeof(p), "Virtual Machines/%s", id);
	subs[2] = p;
	json_t *tree = json_object_get(args, "tree"), *tdisks = json_object_get(args, "tree_disks");
	c->total = (copying ? files_usage(files) : 0) + (saved ? flat_dir_usage(saved) : 0);
	if (copying && json_is_array(tdisks)) {
		size_t k;
		json_t *e;
		json_array_foreach(tdisks, k, e) {
			char in_export[PATH_MAX];
			snprintf(in_export, sizeof(in_export), "%.3000s/Snapshots/%s", jstr(args, "path"),
				 jstr(json_object_get(e, "cp"), "id"));
			c->total += flat_dir_usage(access(in_export, F_OK) == 0
							   ? in_export
							   : jstr(json_object_get(e, "cp"), "dir"));
		}
	}
	job_set_progress(c->job, 0, c->total);
	if ((r = make_dirs(stage, subs, err, errlen)))
		return r;
	if (copying) {
		vhd_tmp_prefix(args, prefix, sizeof(prefix));
		if (vd)
			r = copy_chains(files, vd, prefix, c, err, errlen);
		else {
			snprintf(p, sizeof(p), "%.3000s/Virtual Hard Disks", stage);
			r = copy_chains(files, p, NULL, c, err, errlen);
		}
		if (r)
			return r;
	}
	if (saved) {
		snprintf(p, sizeof(p), "%.3000s/Saved", stage);
		if ((r = copy_flat_dir(saved, p, c, err, errlen)))
			return r;
	}
	if (json_is_object(tree) && json_is_array(tdisks)) {
		char vhd[PATH_MAX];
		if (vd)
			snprintf(vhd, sizeof(vhd), "%s", vd);
		else
			snprintf(vhd, sizeof(vhd), "%.3000s/Virtual Hard Disks", jstr(args, "final"));
		if ((r = tree_write(tree, NULL, tdisks, files, copying ? vhd : NULL, stage,
				    jstr(args, "final"), jstr(args, "path"), copying, c, err, errlen)))
			return r;
	}
	if ((r = vm_config_from_json(json_object_get(args, "config"), &cfg, perr, sizeof(perr)))) {
		snprintf(err, errlen, "the planned configuration does not parse: %s", perr);
		return r;
	}
	if (!strcmp(jstr(args, "mode"), "copy")) {
		/* A copy is a new VM on the network too: new MAC addresses. */
		pthread_mutex_lock(&d->lock);
		for (unsigned i = 0; !r && i < cfg.n_nics; i++) {
			r = macpool_allocate(d, cfg.nics[i].mac);
			cfg.nics[i].mac_auto = true;
			if (r == -ENOSPC)
				macpool_exhausted(d, err, errlen);
			else if (r)
				snprintf(err, errlen, "cannot record a new MAC address: %s",
					 strerror(-r));
		}
		pthread_mutex_unlock(&d->lock);
		/* ... and to its guest: a new VM Generation ID. */
		if (!r && vm_config_has_feature(&cfg, VM_FEATURE_GENERATION_ID) &&
		    vm_config_new_generation_id(&cfg)) {
			snprintf(err, errlen, "no randomness for the VM's generation id");
			r = -EIO;
		}
	}
	snprintf(p, sizeof(p), "%.3000s/Virtual Machines", stage);
	if (!r)
		r = write_config(p, &cfg, err, errlen);
	vm_config_clear(&cfg);
	if (r)
		return r;
	json_t *st = json_pack("{s:s, s:s}", "state", saved ? "saved" : "off", "reason", "");
	char *text = st ? json_dumps(st, JSON_COMPACT) : NULL;
	json_decref(st);
	snprintf(p, sizeof(p), "%.3000s/Virtual Machines/%s/status.json", stage, id);
	r = text ? atomic_write_file(p, text, strlen(text), 0640) : -ENOMEM;
	free(text);
	if (r) {
		snprintf(err, errlen, "cannot write '%.2000s': %s", p, strerror(-r));
		return r;
	}
	return commit_rename(stage, jstr(args, "final"), err, errlen);
}

static int import_run(struct job *job, char *err, size_t errlen)
{
	struct vm *vm = job_vm(job);
	struct daemon *d = vm->d;
	json_t *args = job_args(job);
	struct copy_ctx c = { .job = job };
	struct vm *other;
	int r;

	c.buf = malloc(COPY_CHUNK);
	if (!c.buf)
		return -ENOMEM;
	/* The plan checked the id and the name; they may have been taken since. */
	if ((other = inventory_get(d, jstr(args, "name"))) ||
	    (strcmp(jstr(args, "mode"), "copy") && (other = inventory_get(d, jstr(args, "id"))))) {
		inventory_put(d, other);
		snprintf(err, errlen, "a VM with the name '%s' or the id %s was made meanwhile: "
			 "nothing was imported", jstr(args, "name"), jstr(args, "id"));
		free(c.buf);
		return -EEXIST;
	}
	struct vm *added;
	r = import_files(d, args, &c, err, errlen);
	if (r) {
		remove_tree(jstr(args, "stage"));
		remove_vhd_copies(args);
	} else if ((r = inventory_add_dir(d, jstr(args, "name"), &added, err, errlen)) == 0) {
		vm_imported(added);
		inventory_put(d, added);
		json_t *w = json_object_get(args, "warnings");
		size_t k;
		json_t *e;
		json_array_foreach(w, k, e)
			log_warn("import of VM %s: %s", jstr(args, "name"), json_string_value(e));
		job_set_result(job, json_pack("{s:s, s:s, s:s, s:I, s:o}", "vm", jstr(args, "name"),
					      "id", jstr(args, "id"), "mode", jstr(args, "mode"),
					      "bytes", (json_int_t)c.done, "warnings",
					      json_is_array(w) ? json_incref(w) : json_array()));
	}
	free(c.buf);
	return r;
}

static enum job_state import_recover(struct daemon *d, json_t *record, char *note, size_t len)
{
	json_t *args = json_object_get(record, "args");
	const char *stage = jstr(args, "stage"), *name = jstr(args, "name");

	if (!stage[0]) {
		snprintf(note, len, "the job's record names no folder; nothing was done");
		return JOB_FAILED;
	}
	struct vm *vm = inventory_get(d, jstr(args, "id"));
	if (vm) {
		pthread_mutex_lock(&d->lock);
		bool same = !strcmp(vm->cfg.name, name);
		pthread_mutex_unlock(&d->lock);
		inventory_put(d, vm);
		if (same) {
			snprintf(note, len, "the import had finished: VM '%s' is there", name);
			return JOB_COMPLETED;
		}
	}
	int r = remove_tree(stage);
	remove_vhd_copies(args);
	if (r)
		snprintf(note, len, "the import did not finish; its partial folder %.300s could not "
			 "be removed: %s", stage, strerror(-r));
	else
		snprintf(note, len, "the import did not finish; what it had copied was removed "
			 "and no VM '%s' was made", name);
	return JOB_FAILED;
}

const struct job_kind job_kind_import = {
	.name = "import",
	.cancellable = true,
	.run = import_run,
	.probe = NULL,
	.recover = import_recover,
};
