/* GET /v1/host: host facts (host.c), for `cloison host info`. An operator
 * sees the VM counts and the processors and memory assigned of the VMs
 * delegated to them only, not the host's whole inventory. */
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
	if (req->peer.admin)
		json_object_set_new(info, "vms_scope", json_string("host"));
	else
		restrict_to_peer(req, info);
	api_reply(req, 200, info);
}
