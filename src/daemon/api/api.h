/* The REST API's plumbing shared by the route files: a parsed request and
 * the helpers that answer it. Every error leaves as
 * {"error":{"code":"...","message":"..."}} with a 4xx/5xx status. */
#ifndef CLOISON_DAEMON_API_API_H
#define CLOISON_DAEMON_API_API_H

#include <jansson.h>
#include <microhttpd.h>

#include "daemon/daemon.h"

#define API_BODY_MAX (1 << 20)
#define API_DRAIN_MAX (16 << 20) /* a larger declared body: 413 before reading it */
#define API_MAX_SEGMENTS 8
#define API_PATH_MAX 2048
#define API_IDLE_TIMEOUT_S 30 /* no byte from a client between or within requests */

struct api_request {
	struct daemon *d;
	struct MHD_Connection *conn;
	const char *method;
	const char *url;
	char *segs[API_MAX_SEGMENTS]; /* the path split at '/' and decoded, "v1" first;
				       * never holding a NUL, '/' or invalid UTF-8 */
	unsigned n_segs;
	const char *body;
	size_t body_len;
	struct peer peer;
	bool answered;
	enum MHD_Result result;
	void *ctx; /* http.c's per-request state (the MHD con_cls) */
};

/* Queues a JSON response (takes ownership of body). */
void api_reply(struct api_request *req, unsigned status, json_t *body);
/* Queues an error object; code is a stable machine word ("not-found"). */
void api_error(struct api_request *req, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Maps a -errno from an operation to the matching HTTP error. */
void api_error_errno(struct api_request *req, int err, const char *msg);
/* Answers 404 for VM name: it does not exist or the caller may not see it
 * (the two answers are the same). */
void api_error_no_vm(struct api_request *req, const char *name);
/* Parses the body as a JSON object; on failure answers 400 (naming the
 * line and column) and returns NULL. An empty body gives {} if allowed. */
json_t *api_parse_body(struct api_request *req, bool empty_ok);
/* A query-string argument or NULL. */
const char *api_query(struct api_request *req, const char *key);
/* Replaces each byte of s that does not belong to valid UTF-8 with '?'. */
void api_sanitize_utf8(char *s);
/* Hands obj to the request: free_fn(obj) runs when the request ends,
 * unless api_request_disown(con_cls) was called first (for the console:
 * the upgrade may never happen if the client goes away). */
void api_request_own(struct api_request *req, void *obj, void (*free_fn)(void *));
/* Takes back what api_request_own gave; con_cls as the upgrade handler got it. */
void api_request_disown(void *con_cls);
/* A console session starts or ends: api_stop waits for them to end
 * (they see d->shutting_down) before it stops libmicrohttpd. */
void api_session_hold(struct daemon *d);
void api_session_release(struct daemon *d);

/* Route handlers. */
void api_vms_list(struct api_request *req);
void api_vms_create(struct api_request *req);
void api_vm_show(struct api_request *req);
void api_vm_set(struct api_request *req);
void api_vm_remove(struct api_request *req);
void api_vm_action(struct api_request *req);
void api_vm_discard_saved(struct api_request *req);
/* POST /v1/vms/{vm}/upgrade-version: admin only, the VM off. */
void api_vm_upgrade_version(struct api_request *req);
void api_vm_console(struct api_request *req);
/* api/agent.c: the integration services' requests. */
void api_vm_kvp(struct api_request *req);
void api_vm_copy_file(struct api_request *req);
void api_vm_freeze(struct api_request *req);
void api_vm_thaw(struct api_request *req);
void api_events(struct api_request *req);
void api_jobs_list(struct api_request *req);
void api_job_show(struct api_request *req);
void api_job_cancel(struct api_request *req);
/* POST /v1/vms/{vm}/save: runs a save job on vm (looked up and checked by
 * the caller); body {"wait": bool}. */
void api_vm_save(struct api_request *req, struct vm *vm, json_t *body);
/* Parses a job-starting body {"wait": bool} (default true); answers 400
 * and returns -EINVAL on anything else. */
int api_parse_wait(struct api_request *req, json_t *body, const char *action, bool *wait);
/* POST /v1/vms/{vm}/export {"dir", "wait"} on vm (looked up by the
 * caller) and POST /v1/vms/import (api/export.c): jobs, admin only. */
void api_vm_export(struct api_request *req, struct vm *vm, json_t *body);
void api_vms_import(struct api_request *req);
void api_host(struct api_request *req);
/* GET /v1/host/versions: the configuration versions this build supports. */
void api_host_versions(struct api_request *req);
/* PATCH /v1/host {"mac_range": "MIN-MAX"}: admin only. */
void api_host_set(struct api_request *req);
/* /v1/switches (api/switches.c): admin only. */
void api_switches_list(struct api_request *req);
void api_switches_create(struct api_request *req);
void api_switch_show(struct api_request *req);
void api_switch_set(struct api_request *req);
void api_switch_remove(struct api_request *req);
void api_switch_forwards(struct api_request *req);
void api_switch_forward_add(struct api_request *req);
void api_switch_forward_remove(struct api_request *req);
void api_switch_leases(struct api_request *req);
void api_vm_nic_connect(struct api_request *req);

#endif
