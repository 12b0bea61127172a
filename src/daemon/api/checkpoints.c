/* Routes for /v1/vms/{vm}/checkpoints: list, create, settings, and per
 * checkpoint apply, rename and remove. Create, apply and remove run as
 * jobs (api_run_job); the plan (checkpoint.c) is made and checked first,
 * so a request refused in the VM's state makes no job. Operators of a VM
 * may use its checkpoints; only an administrator changes its settings. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/api/checkpoints.h"
#include "daemon/checkpoint.h"

#define ERR_LEN 2048

static struct vm *lookup(struct api_request *req)
{
	struct vm *vm = inventory_get(req->d, req->segs[2]);

	if (vm) {
		pthread_mutex_lock(&req->d->lock);
		bool ok = auth_may_operate(&req->peer, vm) && !vm->removed;
		pthread_mutex_unlock(&req->d->lock);
		if (!ok) {
			inventory_put(req->d, vm);
			vm = NULL;
		}
	}
	if (!vm)
		api_error_no_vm(req, req->segs[2]);
	return vm;
}

void api_checkpoints_list(struct api_request *req)
{
	char err[ERR_LEN];
	struct vm *vm = lookup(req);

	if (!vm)
		return;
	json_t *j = checkpoint_list(vm, err, sizeof(err));
	if (j)
		api_reply(req, 200, j);
	else
		api_error(req, 500, "failed", "%s", err);
	inventory_put(req->d, vm);
}

static bool query_flag(struct api_request *req, const char *key, bool dflt)
{
	const char *v = api_query(req, key);

	if (!v)
		return dflt;
	return !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes");
}

void api_checkpoints_create(struct api_request *req)
{
	char err[ERR_LEN];
	bool wait = true;
	int code;
	struct vm *vm = lookup(req);

	if (!vm)
		return;
	json_t *body = api_parse_body(req, true);
	json_t *w = body ? json_object_get(body, "wait") : NULL;
	if (w && !json_is_boolean(w)) {
		api_error(req, 400, "bad-request", "field 'wait' must be a boolean");
	} else if (body) {
		wait = !w || json_is_true(w);
		json_t *plan = checkpoint_plan_create(vm, body, &code, err, sizeof(err));
		if (plan)
			api_run_job(req, vm, &job_kind_checkpoint_create, plan, wait, false);
		else
			api_error_errno(req, code, err);
		json_decref(plan);
	}
	json_decref(body);
	inventory_put(req->d, vm);
}

void api_checkpoints_settings(struct api_request *req)
{
	char err[ERR_LEN];

	if (!req->peer.admin) {
		api_error(req, 403, "forbidden", "user '%s' may not change checkpoint settings: "
			  "that needs a host administrator", req->peer.user);
		return;
	}
	struct vm *vm = lookup(req);
	if (!vm)
		return;
	json_t *body = api_parse_body(req, false);
	if (body) {
		int r = checkpoint_settings(vm, body, err, sizeof(err));
		if (r) {
			api_error_errno(req, r, err);
		} else {
			json_t *j = checkpoint_list(vm, err, sizeof(err));
			api_reply(req, 200, json_incref(json_object_get(j, "settings")));
			json_decref(j);
		}
		json_decref(body);
	}
	inventory_put(req->d, vm);
}

void api_checkpoint_apply(struct api_request *req)
{
	char err[ERR_LEN];
	bool wait;
	int code;
	struct vm *vm = lookup(req);

	if (!vm)
		return;
	json_t *body = api_parse_body(req, true);
	if (body && api_parse_wait(req, body, "apply", &wait) == 0) {
		json_t *plan = checkpoint_plan_apply(vm, req->segs[4], &code, err, sizeof(err));
		if (plan)
			api_run_job(req, vm, &job_kind_checkpoint_apply, plan, wait, false);
		else
			api_error_errno(req, code, err);
		json_decref(plan);
	}
	json_decref(body);
	inventory_put(req->d, vm);
}

void api_checkpoint_rename(struct api_request *req)
{
	char err[ERR_LEN];
	struct vm *vm = lookup(req);

	if (!vm)
		return;
	json_t *body = api_parse_body(req, false);
	if (body) {
		json_t *name = json_object_get(body, "name");
		if (json_object_size(body) != 1 || !json_is_string(name)) {
			api_error(req, 400, "bad-request", "a rename takes {\"name\": \"NEW\"} only");
		} else {
			int r = checkpoint_rename(vm, req->segs[4], json_string_value(name), err,
						  sizeof(err));
			if (r)
				api_error_errno(req, r, err);
			else
				api_reply(req, 200, json_pack("{s:s}", "name",
							      json_string_value(name)));
		}
		json_decref(body);
	}
	inventory_put(req->d, vm);
}

void api_checkpoint_remove(struct api_request *req)
{
	char err[ERR_LEN];
	int code;
	struct vm *vm = lookup(req);

	if (!vm)
		return;
	json_t *plan = checkpoint_plan_remove(vm, req->segs[4], query_flag(req, "subtree", false),
					      &code, err, sizeof(err));
	if (plan)
		api_run_job(req, vm, &job_kind_checkpoint_remove, plan,
			    query_flag(req, "wait", true), false);
	else
		api_error_errno(req, code, err);
	json_decref(plan);
	inventory_put(req->d, vm);
}
