/* The integration services' routes (docs/api.yaml):
 *   POST /v1/vms/{vm}/kvp        {"key": K, "value": V}  host -> guest item
 *   POST /v1/vms/{vm}/copy-file  {"source": HOST, "destination": GUEST}
 *   POST /v1/vms/{vm}/freeze     {"timeout": S}  the backup hook
 *   POST /v1/vms/{vm}/thaw       {}
 * Each body is parsed into its fields here, then the agent does the rest
 * (daemon/agent.c). A copy reads a host file as cloisond, so it is for
 * administrators only. */
#include <errno.h>
#include <string.h>

#include "daemon/agent.h"
#include "daemon/api/api.h"

#define ERR_LEN 512

static struct vm *lookup(struct api_request *req)
{
	struct vm *vm = inventory_get(req->d, req->segs[2]);
	bool ok;

	if (!vm) {
		api_error_no_vm(req, req->segs[2]);
		return NULL;
	}
	pthread_mutex_lock(&req->d->lock);
	ok = auth_may_operate(&req->peer, vm);
	pthread_mutex_unlock(&req->d->lock);
	if (!ok) {
		api_error_no_vm(req, req->segs[2]);
		inventory_put(req->d, vm);
		return NULL;
	}
	return vm;
}

/* Reads the named string fields of body (and nothing else) into out[]. */
static int string_fields(struct api_request *req, json_t *body, const char *const *names,
			 unsigned n, const char **out)
{
	const char *key;
	json_t *v;

	for (unsigned i = 0; i < n; i++)
		out[i] = NULL;
	json_object_foreach(body, key, v) {
		unsigned i;

		for (i = 0; i < n && strcmp(key, names[i]); i++)
			;
		if (i == n) {
			api_error(req, 400, "bad-request", "unknown field '%s' (known: %s%s%s)", key,
				  names[0], n > 1 ? ", " : "", n > 1 ? names[1] : "");
			return -EINVAL;
		}
		if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
			api_error(req, 400, "bad-request", "field '%s' must be a string without NUL",
				  key);
			return -EINVAL;
		}
		out[i] = json_string_value(v);
	}
	for (unsigned i = 0; i < n; i++)
		if (!out[i]) {
			api_error(req, 400, "bad-request", "field '%s' is required", names[i]);
			return -EINVAL;
		}
	return 0;
}

static void answer(struct api_request *req, struct vm *vm, int r, const char *err)
{
	if (r == -ENOTCONN) {
		api_error(req, 409, "no-agent", "%s", err);
	} else if (r) {
		api_error_errno(req, r, err);
	} else {
		api_reply(req, 200, vm_to_json(vm));
	}
}

void api_vm_kvp(struct api_request *req)
{
	static const char *const names[] = { "key", "value" };
	const char *f[2];
	char err[ERR_LEN] = "";
	json_t *body = api_parse_body(req, false);
	struct vm *vm;

	if (!body)
		return;
	if (string_fields(req, body, names, 2, f) == 0 && (vm = lookup(req))) {
		answer(req, vm, agent_kvp_set(vm, f[0], f[1], err, sizeof(err)), err);
		inventory_put(req->d, vm);
	}
	json_decref(body);
}

void api_vm_copy_file(struct api_request *req)
{
	static const char *const names[] = { "source", "destination" };
	const char *f[2];
	char err[ERR_LEN] = "";
	json_t *body = api_parse_body(req, false);
	struct vm *vm;

	if (!body)
		return;
	if (string_fields(req, body, names, 2, f) == 0 && (vm = lookup(req))) {
		if (!req->peer.admin)
			api_error(req, 403, "forbidden", "copy-file reads host files as cloisond: "
				  "it is for administrators only");
		else
			answer(req, vm, agent_copy_file(vm, f[0], f[1], err, sizeof(err)), err);
		inventory_put(req->d, vm);
	}
	json_decref(body);
}

void api_vm_freeze(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *body = api_parse_body(req, true), *t;
	const char *key;
	struct vm *vm;
	unsigned timeout = 10;

	if (!body)
		return;
	json_object_foreach(body, key, t) {
		if (strcmp(key, "timeout")) {
			api_error(req, 400, "bad-request", "unknown field '%s' (known: timeout)", key);
			goto out;
		}
		if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > 600) {
			api_error(req, 400, "bad-request", "field 'timeout' must be a whole number of "
				  "seconds from 1 to 600");
			goto out;
		}
		timeout = (unsigned)json_integer_value(t);
	}
	if ((vm = lookup(req))) {
		answer(req, vm, agent_freeze(vm, timeout, err, sizeof(err)), err);
		inventory_put(req->d, vm);
	}
out:
	json_decref(body);
}

void api_vm_thaw(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *body = api_parse_body(req, true);
	struct vm *vm;

	if (!body)
		return;
	if (json_object_size(body))
		api_error(req, 400, "bad-request", "unknown field '%s' (thaw takes no fields)",
			  json_object_iter_key(json_object_iter(body)));
	else if ((vm = lookup(req))) {
		answer(req, vm, agent_thaw(vm, err, sizeof(err)), err);
		inventory_put(req->d, vm);
	}
	json_decref(body);
}
