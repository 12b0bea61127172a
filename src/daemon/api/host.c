/* GET /v1/host: host facts (host.c), for `cloison host info`. An operator
 * sees the VM counts and the processors and memory assigned of the VMs
 * delegated to them only, not the host's whole inventory. */
#include "common/util.h"
#include "daemon/api/api.h"

static void restrict_to_peer(struct api_request *req, json_t *info)
{
	static const char *const states[] = { "off", "starting", "running", "paused",
					      "stopping", "crashed", "saving", "saved" };
	unsigned counts[ARRAY_SIZE(states)] = { 0 }, n = 0, vcpus = 0;
	uint64_t assigned = 0;
	struct daemon *d = req->d;

	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm; vm = vm->next) {
		if (!auth_may_operate(&req->peer, vm))
			continue;
		n++;
		if ((size_t)vm->state < ARRAY_SIZE(states))
			counts[vm->state]++;
		if (vm_state_has_worker(vm->state)) {
			assigned += vm->cfg.memory;
			vcpus += vm->cfg.cpus;
		}
	}
	pthread_mutex_unlock(&d->lock);
	json_t *vmc = json_object();
	json_object_set_new(vmc, "total", json_integer(n));
	for (size_t i = 0; i < ARRAY_SIZE(states); i++)
		json_object_set_new(vmc, states[i], json_integer(counts[i]));
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
