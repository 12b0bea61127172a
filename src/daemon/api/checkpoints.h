/* Routes for a VM's checkpoints (api/checkpoints.c) and the job runner
 * they share with save (api/jobs.c). */
#ifndef CLOISON_DAEMON_API_CHECKPOINTS_H
#define CLOISON_DAEMON_API_CHECKPOINTS_H

#include "daemon/api/api.h"
#include "daemon/job.h"

/* Starts kind on vm with args. Without wait: 202 with the job. With wait:
 * waits for its end and answers the operation's error, or on success the
 * VM (reply_vm, with "job": its id) or the finished job (its "result"). */
void api_run_job(struct api_request *req, struct vm *vm, const struct job_kind *kind,
		 json_t *args, bool wait, bool reply_vm);

/* GET, POST (create: {"name", "wait"}) and PATCH (settings) of
 * /v1/vms/{vm}/checkpoints. */
void api_checkpoints_list(struct api_request *req);
void api_checkpoints_create(struct api_request *req);
void api_checkpoints_settings(struct api_request *req);
/* POST /v1/vms/{vm}/checkpoints/{cp}/apply {"wait"} */
void api_checkpoint_apply(struct api_request *req);
/* PATCH /v1/vms/{vm}/checkpoints/{cp} {"name"} */
void api_checkpoint_rename(struct api_request *req);
/* DELETE /v1/vms/{vm}/checkpoints/{cp}?subtree=1&wait=0 */
void api_checkpoint_remove(struct api_request *req);

#endif
