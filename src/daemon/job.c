/* The job table (job.h): start, follow, cancel and recover the long
 * operations. A job runs in a detached thread of its own; its record in
 * <state>/.jobs/<id>.json is written when it starts and when it ends, so
 * a record that is still "running" at the next start is a job a crash
 * interrupted. */
#include <dirent.h>
#include <errno.h>
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
#include "daemon/checkpoint.h"
#include "daemon/export.h"
#include "daemon/job.h"

#define JOB_RECORD_MAX (1 << 20)

struct job_table {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *jobs; /* newest first */
	unsigned running;
	char dir[2100]; /* <state>/.jobs */
};

struct job {
	struct daemon *d;
	const struct job_kind *kind; /* NULL for a record of an unknown kind */
	char kind_name[40];
	char id[GUID_STR_LEN];
	char vm_name[VM_NAME_MAX + 1];
	char vm_id[GUID_STR_LEN];
	struct vm *vm; /* a reference while the job runs */
	json_t *args;
	uint64_t created_ns; /* CLOCK_REALTIME, orders the list */
	char created[32];

	/* Under the table's lock. */
	unsigned refs;
	enum job_state state;
	uint64_t done, total;
	bool cancel;
	unsigned probing; /* probes using vm: the thread keeps its reference until 0 */
	int status; /* 0 or the -errno run returned */
	char error_code[32];
	char error[1024];
	char note[512];
	json_t *result;
	char finished[32];
	struct job *next;
};

static const struct job_kind *const job_kinds[] = {
	&job_kind_save,
	&job_kind_checkpoint_create,
	&job_kind_checkpoint_apply,
	&job_kind_checkpoint_remove,
	&job_kind_export,
	&job_kind_import,
	NULL,
};

static const char *const job_state_names[] = {
	[JOB_RUNNING] = "running",
	[JOB_COMPLETED] = "completed",
	[JOB_FAILED] = "failed",
	[JOB_CANCELLED] = "cancelled",
};

static struct job_table *table(struct daemon *d)
{
	return d->jobs;
}

static void stamp(char buf[32], uint64_t *ns)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ns)
		*ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	gmtime_r(&ts.tv_sec, &tm);
	strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const struct job_kind *kind_by_name(const char *name)
{
	for (unsigned i = 0; job_kinds[i]; i++)
		if (!strcmp(job_kinds[i]->name, name))
			return job_kinds[i];
	return NULL;
}

/* The machine word for an operation's -errno, as the API maps it. */
static const char *errno_code(int r)
{
	switch (r) {
	case -EINVAL: return "bad-request";
	case -ENOENT: return "not-found";
	case -EEXIST: return "already-exists";
	case -EBUSY: return "invalid-state";
	case -EACCES:
	case -EPERM: return "forbidden";
	case -ETIMEDOUT: return "timeout";
	case -ECANCELED: return "cancelled";
	default: return "failed";
	}
}

static unsigned percent_locked(const struct job *j)
{
	if (j->state == JOB_COMPLETED)
		return 100;
	if (!j->total)
		return 0;
	uint64_t p = j->done >= j->total ? 100 : j->done * 100 / j->total;
	/* 100 means done: a running job that wrote everything is finishing. */
	return j->state == JOB_RUNNING && p >= 100 ? 99 : (unsigned)p;
}

static json_t *to_json_locked(struct job *j)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:b, s:s}", "id", j->id,
			      "kind", j->kind_name, "vm", j->vm_name, "vm_id", j->vm_id, "state",
			      job_state_names[j->state], "percent", (int)percent_locked(j),
			      "bytes_done", (json_int_t)j->done, "bytes_total",
			      (json_int_t)j->total, "cancellable", j->kind && j->kind->cancellable,
			      "created", j->created);
	if (!o)
		return NULL;
	json_object_set_new(o, "finished", j->finished[0] ? json_string(j->finished) : json_null());
	json_object_set_new(o, "error",
			    j->state == JOB_FAILED || j->state == JOB_CANCELLED
				    ? json_pack("{s:s, s:s}", "code", j->error_code, "message",
						j->error)
				    : json_null());
	json_object_set_new(o, "note", j->note[0] ? json_string(j->note) : json_null());
	json_object_set_new(o, "result", j->result ? json_incref(j->result) : json_null());
	return o;
}

json_t *job_to_json(struct job *job)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	json_t *o = to_json_locked(job);
	pthread_mutex_unlock(&t->lock);
	return o;
}

static void record_path(const struct job *j, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.json", table(j->d)->dir, j->id);
}

/* Writes the job's record durably (never under a lock). */
static int persist(struct job *j)
{
	char path[2200];
	json_t *o = job_to_json(j);
	int r = -ENOMEM;

	if (o) {
		json_object_set_new(o, "created_ns", json_integer((json_int_t)j->created_ns));
		json_object_set(o, "args", j->args ? j->args : json_null());
		char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
		if (text) {
			record_path(j, path, sizeof(path));
			r = atomic_write_file(path, text, strlen(text), 0640);
			free(text);
		}
		json_decref(o);
	}
	if (r)
		log_warn("job %s: cannot write its record: %s", j->id, strerror(-r));
	return r;
}

static void job_free(struct job *j)
{
	json_decref(j->args);
	json_decref(j->result);
	free(j);
}

void job_put(struct job *job)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	bool last = --job->refs == 0;
	pthread_mutex_unlock(&t->lock);
	if (last)
		job_free(job);
}

/* Drops the oldest finished jobs past JOB_HISTORY_MAX from the list;
 * their paths go to unlink (caller unlinks outside the lock). */
static unsigned trim_locked(struct job_table *t, char (*unlink_paths)[2200], unsigned max)
{
	unsigned kept = 0, n = 0;
	struct job **pp = &t->jobs;

	while (*pp) {
		struct job *j = *pp;
		if (j->state == JOB_RUNNING || kept < JOB_HISTORY_MAX || n == max) {
			if (j->state != JOB_RUNNING)
				kept++;
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		record_path(j, unlink_paths[n++], sizeof(unlink_paths[0]));
		if (--j->refs == 0)
			job_free(j);
	}
	return n;
}

static void add_and_trim(struct job_table *t, struct job *j)
{
	char paths[8][2200];

	pthread_mutex_lock(&t->lock);
	j->next = t->jobs;
	t->jobs = j;
	unsigned n = trim_locked(t, paths, ARRAY_SIZE(paths));
	pthread_mutex_unlock(&t->lock);
	for (unsigned i = 0; i < n; i++)
		unlink(paths[i]);
}

static void *job_thread(void *arg)
{
	struct job *j = arg;
	struct job_table *t = table(j->d);
	char err[1024] = "";

	int r = j->kind->run(j, err, sizeof(err));
	pthread_mutex_lock(&t->lock);
	j->status = r;
	j->state = r == 0 ? JOB_COMPLETED : r == -ECANCELED ? JOB_CANCELLED : JOB_FAILED;
	if (r) {
		if (!j->error_code[0])
			snprintf(j->error_code, sizeof(j->error_code), "%s", errno_code(r));
		snprintf(j->error, sizeof(j->error), "%s", err[0] ? err : strerror(-r));
	}
	if (r == 0 && j->total)
		j->done = j->total;
	stamp(j->finished, NULL);
	pthread_mutex_unlock(&t->lock);
	persist(j);
	log_info("job %s (%s of VM %s): %s%s%s", j->id, j->kind_name, j->vm_name,
		 job_state_names[j->state], r ? ": " : "", r ? j->error : "");

	struct vm *vm = j->vm;
	pthread_mutex_lock(&t->lock);
	while (j->probing)
		pthread_cond_wait(&t->cond, &t->lock);
	j->vm = NULL;
	t->running--;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	inventory_put(vm->d, vm);
	job_put(j);
	return NULL;
}

int job_start(struct daemon *d, const struct job_kind *k, struct vm *vm, json_t *args,
	      struct job **out, char *err, size_t errlen)
{
	struct job_table *t = table(d);
	struct guid g;
	pthread_t th;
	int r;

	struct job *j = calloc(1, sizeof(*j));
	if (!j || guid_generate(&g)) {
		free(j);
		snprintf(err, errlen, "out of memory or randomness");
		return -ENOMEM;
	}
	j->d = d;
	j->kind = k;
	snprintf(j->kind_name, sizeof(j->kind_name), "%s", k->name);
	guid_to_string(&g, j->id);
	pthread_mutex_lock(&d->lock);
	snprintf(j->vm_name, sizeof(j->vm_name), "%s", vm->cfg.name);
	guid_to_string(&vm->cfg.id, j->vm_id);
	vm->refs++;
	pthread_mutex_unlock(&d->lock);
	j->vm = vm;
	j->args = args ? json_incref(args) : NULL;
	j->refs = 2; /* the list's and the thread's */
	stamp(j->created, &j->created_ns);
	snprintf(j->error_code, sizeof(j->error_code), "%s", "");

	/* One job at a time per VM: a second would wait for the first's
	 * op_lock anyway, and its progress would mean nothing meanwhile. */
	pthread_mutex_lock(&t->lock);
	for (struct job *o = t->jobs; o; o = o->next)
		if (o->state == JOB_RUNNING && !strcmp(o->vm_id, j->vm_id)) {
			snprintf(err, errlen,
				 "VM '%s' has a job in progress (%s, id %s): wait for it ('cloison "
				 "job wait %s') or cancel it",
				 j->vm_name, o->kind_name, o->id, o->id);
			pthread_mutex_unlock(&t->lock);
			inventory_put(d, vm);
			job_free(j);
			return -EBUSY;
		}
	t->running++;
	pthread_mutex_unlock(&t->lock);

	r = persist(j);
	if (r) {
		snprintf(err, errlen, "cannot record the job in %.1500s: %s", t->dir, strerror(-r));
		goto fail;
	}
	add_and_trim(t, j);
	pthread_mutex_lock(&t->lock);
	j->refs++; /* the caller's */
	pthread_mutex_unlock(&t->lock);
	r = -pthread_create(&th, NULL, job_thread, j);
	if (r) {
		/* Never started: finish it as failed so the record says so. */
		snprintf(err, errlen, "cannot start a thread for the job: %s", strerror(-r));
		pthread_mutex_lock(&t->lock);
		j->state = JOB_FAILED;
		j->status = r;
		snprintf(j->error_code, sizeof(j->error_code), "failed");
		snprintf(j->error, sizeof(j->error), "%s", err);
		stamp(j->finished, NULL);
		j->vm = NULL;
		j->refs -= 2; /* the thread's and the caller's */
		t->running--;
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
		persist(j);
		inventory_put(d, vm);
		return r;
	}
	pthread_detach(th);
	*out = j;
	return 0;
fail:
	pthread_mutex_lock(&t->lock);
	t->running--;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	inventory_put(d, vm);
	job_free(j);
	return r;
}

struct job *job_get(struct daemon *d, const char *id)
{
	struct job_table *t = table(d);
	struct job *found = NULL;

	pthread_mutex_lock(&t->lock);
	for (struct job *j = t->jobs; j; j = j->next)
		if (!strcasecmp(j->id, id)) {
			found = j;
			j->refs++;
			break;
		}
	pthread_mutex_unlock(&t->lock);
	return found;
}

void job_wait(struct job *job)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	while (job->state == JOB_RUNNING)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
}

int job_cancel(struct job *job, char *err, size_t errlen)
{
	struct job_table *t = table(job->d);
	int r = 0;

	pthread_mutex_lock(&t->lock);
	if (job->state != JOB_RUNNING) {
		snprintf(err, errlen, "job %s (%s of VM '%s') is %s already: nothing to cancel",
			 job->id, job->kind_name, job->vm_name, job_state_names[job->state]);
		r = -EBUSY;
	} else if (!job->kind->cancellable) {
		snprintf(err, errlen,
			 "a %s job cannot be cancelled: once begun it must finish for the VM to be "
			 "consistent; wait for it ('cloison job wait %s')",
			 job->kind_name, job->id);
		r = -EBUSY;
	} else {
		job->cancel = true;
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

bool job_running(struct job *job)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	bool r = job->state == JOB_RUNNING;
	pthread_mutex_unlock(&t->lock);
	return r;
}

int job_status(struct job *job, char *err, size_t errlen)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	int r = job->state == JOB_RUNNING ? -EINPROGRESS
		: job->state == JOB_COMPLETED ? 0
		: job->status ? job->status : -EIO;
	snprintf(err, errlen, "%s", job->error);
	pthread_mutex_unlock(&t->lock);
	return r;
}

struct vm *job_vm(struct job *job)
{
	return job->vm;
}

json_t *job_args(struct job *job)
{
	return job->args;
}

const char *job_id(const struct job *job)
{
	return job->id;
}

const char *job_vm_name(const struct job *job)
{
	return job->vm_name;
}

bool job_cancelled(struct job *job)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	bool c = job->cancel;
	pthread_mutex_unlock(&t->lock);
	return c;
}

void job_set_progress(struct job *job, uint64_t done, uint64_t total)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	/* Progress never goes back: a probe may look between two places the
	 * data lives (a sandboxed worker's saved state is moved at its exit). */
	job->done = total == job->total ? MAX(done, job->done) : done;
	job->total = total;
	pthread_mutex_unlock(&t->lock);
}

void job_set_result(struct job *job, json_t *result)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	json_decref(job->result);
	job->result = result;
	pthread_mutex_unlock(&t->lock);
}

void job_set_error_code(struct job *job, const char *code)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	snprintf(job->error_code, sizeof(job->error_code), "%s", code);
	pthread_mutex_unlock(&t->lock);
}

void job_refresh(struct job *job)
{
	struct job_table *t = table(job->d);

	pthread_mutex_lock(&t->lock);
	bool probe = job->state == JOB_RUNNING && job->kind && job->kind->probe && job->vm;
	if (probe)
		job->probing++;
	pthread_mutex_unlock(&t->lock);
	if (!probe)
		return;
	job->kind->probe(job);
	pthread_mutex_lock(&t->lock);
	job->probing--;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

void jobs_foreach(struct daemon *d, void (*fn)(struct job *job, void *opaque), void *opaque)
{
	struct job_table *t = table(d);
	struct job *list[JOB_HISTORY_MAX + 256];
	unsigned n = 0;

	pthread_mutex_lock(&t->lock);
	for (struct job *j = t->jobs; j && n < ARRAY_SIZE(list); j = j->next) {
		j->refs++;
		list[n++] = j;
	}
	pthread_mutex_unlock(&t->lock);
	for (unsigned i = 0; i < n; i++) {
		job_refresh(list[i]);
		fn(list[i], opaque);
		job_put(list[i]);
	}
}

/* ---- start-up: load the records, recover the interrupted ones ---- */

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static enum job_state state_by_name(const char *s)
{
	for (unsigned i = 0; i < ARRAY_SIZE(job_state_names); i++)
		if (!strcmp(s, job_state_names[i]))
			return (enum job_state)i;
	return JOB_FAILED;
}

/* Builds a finished job from its record; recovers it first if it was
 * running. NULL if the record is unreadable (it is left for a person to
 * look at, and logged). */
static struct job *load_record(struct daemon *d, const char *path)
{
	json_error_t jerr;
	json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	struct guid g;

	if (!json_is_object(o) || guid_parse(jstr(o, "id"), &g)) {
		log_warn("%s: not a job record (%s); ignored", path, o ? "no id" : jerr.text);
		json_decref(o);
		return NULL;
	}
	struct job *j = calloc(1, sizeof(*j));
	if (!j) {
		json_decref(o);
		return NULL;
	}
	j->d = d;
	j->refs = 1;
	snprintf(j->id, sizeof(j->id), "%s", jstr(o, "id"));
	snprintf(j->kind_name, sizeof(j->kind_name), "%s", jstr(o, "kind"));
	j->kind = kind_by_name(j->kind_name);
	snprintf(j->vm_name, sizeof(j->vm_name), "%s", jstr(o, "vm"));
	snprintf(j->vm_id, sizeof(j->vm_id), "%s", jstr(o, "vm_id"));
	snprintf(j->created, sizeof(j->created), "%s", jstr(o, "created"));
	snprintf(j->finished, sizeof(j->finished), "%s", jstr(o, "finished"));
	snprintf(j->note, sizeof(j->note), "%s", jstr(o, "note"));
	j->created_ns = (uint64_t)json_integer_value(json_object_get(o, "created_ns"));
	j->done = (uint64_t)json_integer_value(json_object_get(o, "bytes_done"));
	j->total = (uint64_t)json_integer_value(json_object_get(o, "bytes_total"));
	json_t *a = json_object_get(o, "args");
	j->args = json_is_null(a) ? NULL : json_incref(a);
	json_t *res = json_object_get(o, "result");
	j->result = json_is_null(res) ? NULL : json_incref(res);
	json_t *e = json_object_get(o, "error");
	snprintf(j->error_code, sizeof(j->error_code), "%s", jstr(e, "code"));
	snprintf(j->error, sizeof(j->error), "%s", jstr(e, "message"));
	j->state = state_by_name(jstr(o, "state"));
	bool interrupted = j->state == JOB_RUNNING;
	if (interrupted) {
		char note[512] = "";
		enum job_state s = JOB_FAILED;
		if (j->kind && j->kind->recover)
			s = j->kind->recover(d, o, note, sizeof(note));
		else
			snprintf(note, sizeof(note), "this cloisond does not know %s jobs; nothing "
				 "was undone", j->kind_name[0] ? j->kind_name : "such");
		j->state = s;
		snprintf(j->note, sizeof(j->note), "%s", note);
		if (s != JOB_COMPLETED) {
			snprintf(j->error_code, sizeof(j->error_code), "interrupted");
			snprintf(j->error, sizeof(j->error),
				 "cloisond stopped (it was killed or the host went down) while the "
				 "job ran; at its next start: %s",
				 note);
		} else if (j->total) {
			j->done = j->total;
		}
		stamp(j->finished, NULL);
		log_warn("job %s (%s of VM %s) was interrupted by a cloisond restart: %s", j->id,
			 j->kind_name, j->vm_name, note);
	}
	json_decref(o);
	if (interrupted)
		persist(j);
	return j;
}

static int by_created_desc(const void *a, const void *b)
{
	const struct job *x = *(struct job *const *)a, *y = *(struct job *const *)b;
	return x->created_ns < y->created_ns ? 1 : x->created_ns > y->created_ns ? -1 : 0;
}

int jobs_init(struct daemon *d)
{
	struct job_table *t = calloc(1, sizeof(*t));
	pthread_condattr_t ca;
	struct job **list = NULL;
	unsigned n = 0, cap = 0;
	struct dirent *de;

	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cond, &ca);
	pthread_condattr_destroy(&ca);
	snprintf(t->dir, sizeof(t->dir), "%s/.jobs", d->state_dir);
	d->jobs = t;
	if (mkdir(t->dir, 0750) < 0 && errno != EEXIST)
		return -errno;
	DIR *dp = opendir(t->dir);
	if (!dp)
		return -errno;
	while ((de = readdir(dp))) {
		size_t len = strlen(de->d_name);
		char path[2400];
		snprintf(path, sizeof(path), "%s/%s", t->dir, de->d_name);
		if (strstr(de->d_name, ".tmp.")) {
			unlink(path); /* a record write a crash cut short */
			continue;
		}
		if (len < 6 || strcmp(de->d_name + len - 5, ".json"))
			continue;
		struct job *j = load_record(d, path);
		if (!j)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			struct job **nl = realloc(list, cap * sizeof(*nl));
			if (!nl) {
				job_free(j);
				break;
			}
			list = nl;
		}
		list[n++] = j;
	}
	closedir(dp);
	if (n) /* qsort's base may not be NULL, even for none */
		qsort(list, n, sizeof(*list), by_created_desc);
	for (unsigned i = n; i-- > 0;)
		add_and_trim(t, list[i]);
	free(list);
	return 0;
}

void jobs_shutdown(struct daemon *d)
{
	struct job_table *t = table(d);

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	while (t->running)
		pthread_cond_wait(&t->cond, &t->lock);
	struct job *j = t->jobs;
	t->jobs = NULL;
	pthread_mutex_unlock(&t->lock);
	while (j) {
		struct job *next = j->next;
		if (--j->refs == 0)
			job_free(j);
		j = next;
	}
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	free(t);
	d->jobs = NULL;
}

/* ---- the save job (Hyper-V's Save): vm_op_save, with its progress ---- */

static int save_run(struct job *job, char *err, size_t errlen)
{
	return vm_op_save(job_vm(job), err, errlen);
}

/* Where the worker of vm writes its saved state: the VM's Saved, or for a
 * sandboxed worker <vm>/Sandbox/Saved (moved to Saved when it exits). */
static void save_target(struct vm *vm, char *buf, size_t len)
{
	char dir[2300];

	pthread_mutex_lock(&vm->d->lock);
	bool sandboxed = vm->sandbox_uid != 0;
	pthread_mutex_unlock(&vm->d->lock);
	if (!sandboxed) {
		snprintf(buf, len, "%s", vm->saved_dir);
		return;
	}
	inventory_sandbox_dir(vm, dir, sizeof(dir));
	snprintf(buf, len, "%s/Saved", dir);
}

/* Progress: what the worker has written so far, against the guest's
 * memory (the memory file is most of a saved state). */
static void save_probe(struct job *job)
{
	struct vm *vm = job_vm(job);
	char path[2400];
	uint64_t done = 0;
	struct dirent *de;

	pthread_mutex_lock(&vm->d->lock);
	uint64_t total = vm->cfg.memory;
	bool saved = vm->state == VM_SAVED;
	pthread_mutex_unlock(&vm->d->lock);
	if (saved)
		snprintf(path, sizeof(path), "%s", vm->saved_dir);
	else
		save_target(vm, path, sizeof(path));
	DIR *dp = opendir(path);
	while (dp && (de = readdir(dp))) {
		struct stat st;
		if (de->d_name[0] != '.' && fstatat(dirfd(dp), de->d_name, &st, 0) == 0 &&
		    S_ISREG(st.st_mode))
			done += (uint64_t)st.st_blocks * 512;
	}
	if (dp)
		closedir(dp);
	job_set_progress(job, MIN(done, total), total);
}

/* Removes what a save that did not finish wrote: the VM's Saved and the
 * sandbox's (a save removes the old state before it begins). */
static int remove_partial_save(struct vm *vm)
{
	char dir[2300], sb[2400];

	inventory_sandbox_dir(vm, dir, sizeof(dir));
	snprintf(sb, sizeof(sb), "%s/Saved", dir);
	if (remove_flat_dir(sb) < 0)
		return -1;
	return vm_saved_dir_remove(vm);
}

static enum job_state save_recover(struct daemon *d, json_t *record, char *note, size_t len)
{
	struct vm *vm = inventory_get(d, jstr(record, "vm_id"));

	if (!vm) {
		snprintf(note, len, "VM '%s' no longer exists", jstr(record, "vm"));
		return JOB_FAILED;
	}
	pthread_mutex_lock(&d->lock);
	enum vm_state s = vm->state;
	pthread_mutex_unlock(&d->lock);
	enum job_state js = JOB_FAILED;
	if (s == VM_SAVED) {
		snprintf(note, len, "the worker had finished the save: VM '%s' is saved",
			 vm->cfg.name);
		js = JOB_COMPLETED;
	} else if (vm_state_has_worker(s)) {
		snprintf(note, len, "the save did not finish; VM '%s' goes on %s (save it again)",
			 vm->cfg.name, vm_state_name(s));
	} else if (remove_partial_save(vm) == 0) {
		snprintf(note, len, "the save did not finish and the worker is gone (VM '%s' is "
			 "%s); the partial saved state was removed", vm->cfg.name, vm_state_name(s));
	} else {
		snprintf(note, len, "the save did not finish (VM '%s' is %s); its partial saved "
			 "state in %.300s could not be removed: %s", vm->cfg.name, vm_state_name(s),
			 vm->saved_dir, strerror(errno));
	}
	inventory_put(d, vm);
	return js;
}

const struct job_kind job_kind_save = {
	.name = "save",
	.cancellable = false,
	.run = save_run,
	.probe = save_probe,
	.recover = save_recover,
};
