/* Routes for export and import (export.h): POST /v1/vms/{vm}/export
 * {"dir", "wait"} and POST /v1/vms/import {"path", "mode", "name",
 * "vhd_dir", "wait"}. Both write files anywhere on the host as cloisond
 * (root), so both are for administrators. A request that cannot begin is
 * refused at once with nothing written; one that can runs as a job. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "daemon/api/api.h"
#include "daemon/export.h"
#include "daemon/job.h"

#define ERR_LEN 1024

static bool admin_only(struct api_request *req, const char *what)
{
	if (req->peer.admin)
		return true;
	api_error(req, 403, "forbidden",
		  "user '%s' may not %s: that needs a host administrator (root, a member of "
		  "'%s' or one listed in cloisond.json), since it writes files as cloisond",
		  req->peer.user, what, req->d->admin_group);
	return false;
}

/* Starts kind on vm; without wait answers 202 with the job, with wait
 * the finished job (its "result") or the operation's error. */
static void run_job(struct api_request *req, struct vm *vm, const struct job_kind *kind,
		    json_t *args, bool wait)
{
	char err[ERR_LEN];
	struct job *job;
	int r = job_start(req->d, kind, vm, args, &job, err, sizeof(err));

	if (r) {
		api_error_errno(req, r, err);
		return;
	}
	if (wait) {
		job_wait(job);
		r = job_status(job, err, sizeof(err));
	}
	if (r)
		api_error_errno(req, r, err);
	else
		api_reply(req, wait ? 200 : 202, job_to_json(job));
	job_put(job);
}

void api_vm_export(struct api_request *req, struct vm *vm, json_t *body)
{
	char err[ERR_LEN];
	bool wait;
	int code;

	if (!admin_only(req, "export VMs"))
		return;
	json_t *args = export_plan(vm, body, &wait, &code, err, sizeof(err));
	if (!args) {
		api_error_errno(req, code, err);
		return;
	}
	run_job(req, vm, &job_kind_export, args, wait);
	json_decref(args);
}

void api_vms_import(struct api_request *req)
{
	char err[ERR_LEN];
	struct vm *vm;
	bool wait;
	int code;

	if (!admin_only(req, "import VMs"))
		return;
	json_t *body = api_parse_body(req, false);
	if (!body)
		return;
	json_t *args = import_plan(req->d, body, &wait, &vm, &code, err, sizeof(err));
	json_decref(body);
	if (!args) {
		api_error_errno(req, code, err);
		return;
	}
	run_job(req, vm, &job_kind_import, args, wait);
	json_decref(args);
	inventory_put(req->d, vm);
}
