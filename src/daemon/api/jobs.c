/* Routes for /v1/jobs (list, show, cancel) and the start of the
 * operations that run as jobs (save). A caller sees the jobs of the VMs it
 * may operate; an administrator sees every job. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/api/api.h"
#include "daemon/api/checkpoints.h"
#include "daemon/job.h"

#define ERR_LEN 1024

/* Whether peer may see job: an administrator, or an operator of its VM. */
static bool may_see(struct api_request *req, struct job *job)
{
	if (req->peer.admin)
		return true;
	struct vm *vm = inventory_get(req->d, job_vm_name(job));
	if (!vm)
		return false;
	pthread_mutex_lock(&req->d->lock);
	bool ok = auth_may_operate(&req->peer, vm);
	pthread_mutex_unlock(&req->d->lock);
	inventory_put(req->d, vm);
	return ok;
}

struct list_ctx {
	struct api_request *req;
	json_t *arr;
	const char *vm; /* ?vm= filter, or NULL */
};

static void list_one(struct job *job, void *opaque)
{
	struct list_ctx *c = opaque;

	if (c->vm && strcmp(c->vm, job_vm_name(job)))
		return;
	if (may_see(c->req, job))
		json_array_append_new(c->arr, job_to_json(job));
}

void api_jobs_list(struct api_request *req)
{
	struct list_ctx c = { req, json_array(), api_query(req, "vm") };

	jobs_foreach(req->d, list_one, &c);
	api_reply(req, 200, c.arr);
}

/* Looks up segs[2]; answers 404 (the same for a job the caller may not
 * see) and returns NULL when there is none. */
static struct job *lookup_job(struct api_request *req)
{
	struct job *job = job_get(req->d, req->segs[2]);

	if (job && !may_see(req, job)) {
		job_put(job);
		job = NULL;
	}
	if (!job)
		api_error(req, 404, "not-found", "no job with id '%s' (see 'cloison job list')",
			  req->segs[2]);
	return job;
}

void api_job_show(struct api_request *req)
{
	struct job *job = lookup_job(req);

	if (!job)
		return;
	job_refresh(job);
	api_reply(req, 200, job_to_json(job));
	job_put(job);
}

void api_job_cancel(struct api_request *req)
{
	char err[ERR_LEN];
	struct job *job = lookup_job(req);

	if (!job)
		return;
	int r = job_cancel(job, err, sizeof(err));
	if (r)
		api_error_errno(req, r, err);
	else
		api_reply(req, 202, job_to_json(job));
	job_put(job);
}

void api_run_job(struct api_request *req, struct vm *vm, const struct job_kind *kind,
		 json_t *args, bool wait, bool reply_vm)
{
	char err[ERR_LEN];
	struct job *job;
	int r = job_start(req->d, kind, vm, args, &job, err, sizeof(err));

	if (r) {
		api_error_errno(req, r, err);
		return;
	}
	if (!wait) {
		api_reply(req, 202, job_to_json(job));
		job_put(job);
		return;
	}
	job_wait(job);
	r = job_status(job, err, sizeof(err));
	if (r) {
		api_error_errno(req, r, err);
	} else if (!reply_vm) {
		api_reply(req, 200, job_to_json(job));
	} else {
		json_t *j = vm_to_json(vm);
		json_object_set_new(j, "job", json_string(job_id(job)));
		api_reply(req, 200, j);
	}
	job_put(job);
}

/* Parses {"wait": bool} (default true), refusing any other field. */
int api_parse_wait(struct api_request *req, json_t *body, const char *action, bool *wait)
{
	const char *key;
	json_t *v;

	*wait = true;
	json_object_foreach(body, key, v) {
		if (strcmp(key, "wait")) {
			api_error(req, 400, "bad-request", "unknown field '%s' (known for %s: wait)",
				  key, action);
			return -EINVAL;
		}
		if (!json_is_boolean(v)) {
			api_error(req, 400, "bad-request", "field 'wait' must be a boolean");
			return -EINVAL;
		}
		*wait = json_is_true(v);
	}
	return 0;
}

void api_vm_save(struct api_request *req, struct vm *vm, json_t *body)
{
	const char *why;
	bool wait;

	if (api_parse_wait(req, body, "save", &wait))
		return;
	/* Refused at once, not as a failed job: nothing was begun. */
	pthread_mutex_lock(&req->d->lock);
	int r = vm_state_check(vm->state, VM_OP_SAVE, &why);
	if (r)
		api_error(req, 409, "invalid-state", "VM '%s' is %s: %s", vm->cfg.name,
			  vm_state_name(vm->state), why);
	pthread_mutex_unlock(&req->d->lock);
	if (!r)
		api_run_job(req, vm, &job_kind_save, NULL, wait, true);
}
