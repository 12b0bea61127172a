/* GET /v1/host: host facts (host.c), for `cloison host info`. An operator
 * sees the VM counts and the processors and memory assigned of the VMs
 * delegated to them only, not the host's whole inventory. */
#include <string.h>

#include "daemon/api/api.h"

static void restrict_to_peer(struct api_request *req, json_t *info)
{
	uint64_t assigned;
	unsigned vcpus;
	json_t *vmc = host_vm_counts(req->d, &req->peer, &assigned, &vcpus);

	json_object_set_new(info, "vms", vmc);
	json_object_set_new(info, "vms_scope", json_string("delegated"));
	json_t *res = json_object_get(info, "resources");
	if (json_is_object(res)) {
		json_object_set_new(res, "memory_assigned_to_vms", json_integer((json_int_t)assigned));
		json_object_set_new(res, "vcpus_assigned_to_vms", json_integer(vcpus));
	}
}

void api_host(struct api_request *req)
{
	json_t *info = host_info_json(req->d);

	if (!info) {
		api_error(req, 500, "internal", "out of memory");
		return;
	}
	pthread_mutex_lock(&req->d->lock);
	json_object_set_new(info, "mac_pool", macpool_json_locked(req->d));
	pthread_mutex_unlock(&req->d->lock);
	if (req->peer.admin)
		json_object_set_new(info, "vms_scope", json_string("host"));
	else
		restrict_to_peer(req, info);
	api_reply(req, 200, info);
}

void api_host_set(struct api_request *req)
{
	char err[512];
	const char *key;
	json_t *v;
	int r = 0;

	if (!req->peer.admin) {
		api_error(req, 403, "forbidden", "user '%s' may not change host settings: that needs a "
			  "host administrator", req->peer.user);
		return;
	}
	json_t *body = api_parse_body(req, false);
	if (!body)
		return;
	json_object_foreach(body, key, v) {
		if (strcmp(key, "mac_range") || !json_is_string(v)) {
			api_error(req, 400, "bad-request", "field '%s' %s", key,
				  strcmp(key, "mac_range") ? "is unknown (known: mac_range)"
							   : "must be a string MIN-MAX");
			json_decref(body);
			return;
		}
	}
	v = json_object_get(body, "mac_range");
	if (v)
		r = macpool_set_range(req->d, json_string_value(v), err, sizeof(err));
	json_decref(body);
	if (r) {
		api_error_errno(req, r, err);
		return;
	}
	api_host(req);
}

/* GET /v1/host/versions (Get-VMHostSupportedVersion): the configuration
 * versions this build reads and writes; anyone who may connect sees them. */
void api_host_versions(struct api_request *req)
{
	api_reply(req, 200, vm_versions_json());
}
