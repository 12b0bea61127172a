/* Routes for /v1/switches: the host's virtual switches (daemon/switch.c),
 * their NAT port forwards and DHCP leases. Switches are host-level
 * objects: every route needs a host administrator, reading included (a
 * switch's adapters name VMs an operator may not see). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/api/api.h"

#define ERR_LEN 1024

static bool require_admin(struct api_request *req)
{
	if (req->peer.admin)
		return true;
	api_error(req, 403, "forbidden",
		  "user '%s' may not use virtual switches: they are host objects and need a host "
		  "administrator (root, a member of group '%s', or a user listed in cloisond's "
		  "configuration)",
		  req->peer.user, req->d->admin_group);
	return false;
}

/* Answers r: out with status ok, or the error. */
static void finish(struct api_request *req, int r, unsigned ok, json_t *out, const char *err)
{
	if (r)
		api_error_errno(req, r, err);
	else
		api_reply(req, ok, out);
}

void api_switches_list(struct api_request *req)
{
	if (require_admin(req))
		api_reply(req, 200, vswitch_list_json(req->d));
}

void api_switches_create(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *out = NULL;

	if (!require_admin(req))
		return;
	json_t *body = api_parse_body(req, false);
	if (!body)
		return;
	int r = vswitch_create_json(req->d, body, &out, err, sizeof(err));
	json_decref(body);
	finish(req, r, 201, out, err);
}

void api_switch_show(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *out = NULL;

	if (!require_admin(req))
		return;
	int r = vswitch_show_json(req->d, req->segs[2], &out, err, sizeof(err));
	finish(req, r, 200, out, err);
}

void api_switch_set(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *out = NULL;

	if (!require_admin(req))
		return;
	json_t *body = api_parse_body(req, false);
	if (!body)
		return;
	int r = vswitch_set_json(req->d, req->segs[2], body, &out, err, sizeof(err));
	json_decref(body);
	finish(req, r, 200, out, err);
}

/* DELETE /v1/switches/{name}[?force=true] */
void api_switch_remove(struct api_request *req)
{
	const char *force = api_query(req, "force");
	char err[ERR_LEN] = "";
	json_t *out = NULL;

	if (!require_admin(req))
		return;
	if (force && strcmp(force, "true") && strcmp(force, "false")) {
		api_error(req, 400, "bad-request", "query 'force' must be true or false");
		return;
	}
	int r = vswitch_remove(req->d, req->segs[2], force && !strcmp(force, "true"), &out, err,
			       sizeof(err));
	finish(req, r, 200, out, err);
}

void api_switch_forwards(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *out = NULL;

	if (!require_admin(req))
		return;
	int r = vswitch_forwards_json(req->d, req->segs[2], &out, err, sizeof(err));
	finish(req, r, 200, out, err);
}

void api_switch_forward_add(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *out = NULL;

	if (!require_admin(req))
		return;
	json_t *body = api_parse_body(req, false);
	if (!body)
		return;
	int r = vswitch_forward_add(req->d, req->segs[2], body, &out, err, sizeof(err));
	json_decref(body);
	finish(req, r, 201, out, err);
}

/* DELETE /v1/switches/{name}/forwards/{proto}/{host_port} */
void api_switch_forward_remove(struct api_request *req)
{
	char err[ERR_LEN] = "";

	if (!require_admin(req))
		return;
	int r = vswitch_forward_remove(req->d, req->segs[2], req->segs[4], req->segs[5], err,
				       sizeof(err));
	finish(req, r, 200,
	       r ? NULL : json_pack("{s:s, s:s, s:s}", "switch", req->segs[2], "removed_proto",
				    req->segs[4], "removed_host_port", req->segs[5]),
	       err);
}

void api_switch_leases(struct api_request *req)
{
	char err[ERR_LEN] = "";
	json_t *out = NULL;

	if (!require_admin(req))
		return;
	int r = vswitch_leases_json(req->d, req->segs[2], &out, err, sizeof(err));
	finish(req, r, 200, out, err);
}

/* POST /v1/vms/{vm}/network-adapters/{n}/connect {"switch": NAME|null} */
void api_vm_nic_connect(struct api_request *req)
{
	char err[ERR_LEN] = "", *end;
	unsigned long idx = strtoul(req->segs[4], &end, 10);
	const char *sw = NULL;
	json_t *v;

	if (!require_admin(req))
		return;
	if (*end || !*req->segs[4] || idx >= VM_MAX_NICS) {
		api_error(req, 400, "bad-request", "'%s' is not a network adapter number (0 to %d)",
			  req->segs[4], VM_MAX_NICS - 1);
		return;
	}
	json_t *body = api_parse_body(req, false);
	if (!body)
		return;
	v = json_object_get(body, "switch");
	if (json_object_size(body) != 1 || !v || !(json_is_string(v) || json_is_null(v))) {
		api_error(req, 400, "bad-request", "the body is {\"switch\": NAME} to connect, or "
			  "{\"switch\": null} to disconnect");
		json_decref(body);
		return;
	}
	sw = json_string_value(v);
	struct vm *vm = inventory_get(req->d, req->segs[2]);
	if (!vm) {
		api_error_no_vm(req, req->segs[2]);
		json_decref(body);
		return;
	}
	int r = vswitch_vm_connect(vm, (unsigned)idx, sw, err, sizeof(err));
	json_decref(body);
	if (r) {
		api_error_errno(req, r, err);
	} else {
		api_reply(req, 200, vm_to_json(vm));
	}
	inventory_put(req->d, vm);
}
