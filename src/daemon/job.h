/* Jobs: the long operations of cloisond (save, checkpoint create, apply and
 * remove; later export, import and migration) run in a thread of their own
 * and are visible under /v1/jobs with their progress.
 *
 * Each job is recorded durably in <state>/.jobs/<id>.json when it starts
 * and when it ends. A record still "running" at the next start means
 * cloisond was killed during the job: the job's kind then finishes or rolls
 * back what the job left (recover), and the job is shown as failed with the
 * reason, or completed when the operation had in fact finished. The
 * directory starts with a dot, which no VM name may, so it never collides
 * with a VM's folder.
 *
 * Locking: the table's own lock protects every job's runtime fields; it is
 * never held while d->lock or a vm->op_lock is taken, and no file is
 * written under it. */
#ifndef CLOISON_DAEMON_JOB_H
#define CLOISON_DAEMON_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/daemon.h"

#define JOB_HISTORY_MAX 64 /* finished jobs kept (memory and disk) */

enum job_state { JOB_RUNNING, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED };

struct job;

/* One kind of job: a static const table entry (job_kinds in job.c). */
struct job_kind {
	const char *name; /* "save", "checkpoint-create", ... */
	bool cancellable;
	/* Does the work in the job's thread. 0, or -errno with err filled
	 * (-ECANCELED after job_cancelled() said so and everything was undone).
	 * It may set the result with job_set_result. */
	int (*run)(struct job *job, char *err, size_t errlen);
	/* Updates the progress while the job runs (may be NULL); called from
	 * GET /v1/jobs without any lock held. */
	void (*probe)(struct job *job);
	/* At the next start after a crash of cloisond during the job: undoes
	 * what it left, or sees that it finished. record is the job as
	 * persisted (its "args" name what it was doing). Returns JOB_FAILED
	 * (rolled back) or JOB_COMPLETED, with note saying what was found and
	 * done. */
	enum job_state (*recover)(struct daemon *d, json_t *record, char *note, size_t notelen);
};

/* Creates and starts a job of kind k on vm (a reference is taken for the
 * job's life). args (may be NULL; a reference is taken) is persisted with
 * the record and read by run and recover. The record is written durably
 * before the thread starts. *out gets a reference (job_put). 0 or -errno
 * with err filled. */
int job_start(struct daemon *d, const struct job_kind *k, struct vm *vm, json_t *args,
	      struct job **out, char *err, size_t errlen);
/* Finds a job by id and takes a reference; NULL if none. */
struct job *job_get(struct daemon *d, const char *id);
void job_put(struct job *job);
/* Blocks until the job is no longer running. */
void job_wait(struct job *job);
/* Asks a running, cancellable job to stop. 0; -EBUSY (err says why) if the
 * job is finished or its kind cannot be cancelled. */
int job_cancel(struct job *job, char *err, size_t errlen);

/* For run and probe. */
struct vm *job_vm(struct job *job);
json_t *job_args(struct job *job); /* borrowed */
bool job_cancelled(struct job *job);
void job_set_progress(struct job *job, uint64_t done, uint64_t total);
/* Takes ownership of result. */
void job_set_result(struct job *job, json_t *result);
/* Sets the machine word of the error the job failed with ("invalid-state",
 * "not-found", ...; "failed" by default); run calls it before returning. */
void job_set_error_code(struct job *job, const char *code);

/* Asks a running job's kind for its progress (probe). */
void job_refresh(struct job *job);
/* Whether the job still runs; its result code once finished (0 or the
 * -errno run returned) and its error message. */
bool job_running(struct job *job);
int job_status(struct job *job, char *err, size_t errlen);
/* JSON view (GET /v1/jobs/{id}); takes the table lock itself. */
json_t *job_to_json(struct job *job);
/* The job's id (constant). */
const char *job_id(const struct job *job);
/* The VM name a job concerns (constant). */
const char *job_vm_name(const struct job *job);
/* Calls fn for every job, newest first, with a reference held. */
void jobs_foreach(struct daemon *d, void (*fn)(struct job *job, void *opaque), void *opaque);

/* Daemon start, after inventory_load: loads the records, recovers the jobs
 * a crash interrupted. 0 or -errno. */
int jobs_init(struct daemon *d);
/* Daemon exit: waits for the running jobs to end, then frees the table. */
void jobs_shutdown(struct daemon *d);

/* The kinds. */
extern const struct job_kind job_kind_save;

#endif
