/* cloisond's side of the agent protocol (docs/agent.md): one channel per
 * running VM, over the worker's virtio-vsock socket, to the guest agent
 * on vsock port AGENT_PORT. Hyper-V's integration services: shutdown,
 * heartbeat, time synchronization, key-value pairs, guest services (file
 * copy) and the backup freeze/thaw hook. */
#ifndef CLOISON_DAEMON_AGENT_H
#define CLOISON_DAEMON_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/agent_proto.h"

#define AGENT_KVP_KEY_MAX 255
#define AGENT_KVP_VALUE_MAX 2047
#define AGENT_KVP_MAX_ITEMS 64
#define AGENT_COPY_MAX (256ull << 20)
#define AGENT_HB_DEFAULT_S 5
#define AGENT_HB_MAX_S 3600

enum agent_service {
	AGENT_SVC_SHUTDOWN,
	AGENT_SVC_HEARTBEAT,
	AGENT_SVC_TIMESYNC,
	AGENT_SVC_KVP,
	AGENT_SVC_COPY,
	AGENT_SVC_BACKUP,
	AGENT_SVC_COUNT,
};
/* Hyper-V's defaults: everything on but guest services. */
#define AGENT_SVC_DEFAULTS (((1u << AGENT_SVC_COUNT) - 1) & ~(1u << AGENT_SVC_COPY))

struct vm;
struct vm_config;

/* The worker's vsock socket, relative to the VM's runtime directory, and
 * the --vsock value the worker is given. */
#define AGENT_VSOCK_SOCKET "vsock.sock"
#define AGENT_VSOCK_SPEC "cid=3,socket=" AGENT_VSOCK_SOCKET ",host-only"

const char *agent_service_name(enum agent_service s);

/* The configuration's "integration" object ({"shutdown": true, ...}) and
 * its parser: a partial object changes only the services it names.
 * 0 or -EINVAL with err naming the field and what is expected. */
json_t *agent_integration_json(uint32_t mask);
int agent_integration_parse(json_t *v, uint32_t *mask, char *err, size_t errlen);

/* The VM's worker runs (state running): starts the channel's thread,
 * which connects, says HELLO, keeps the heartbeat and reconnects when the
 * worker is replaced (a restore). Idempotent. Caller holds d->lock. */
void agent_vm_started_locked(struct vm *vm);
/* The worker is gone: the thread ends. Caller holds d->lock. */
void agent_vm_stopped_locked(struct vm *vm);
/* After a resume: the guest clock is set again. Caller holds d->lock. */
void agent_vm_resumed_locked(struct vm *vm);
/* The "integration_services" view for vm show; caller holds d->lock. */
json_t *agent_json_locked(struct vm *vm);

/* Requests; each waits for the guest's answer. 0, -ENOTCONN (no agent),
 * -EPERM (the service is off for this VM, or the agent does not offer
 * it), -ETIMEDOUT, -EINVAL (bad arguments), -EIO, with err. No lock. */
int agent_shutdown(struct vm *vm, char *err, size_t errlen);
int agent_kvp_set(struct vm *vm, const char *key, const char *value, char *err, size_t errlen);
int agent_copy_file(struct vm *vm, const char *src, const char *dest, char *err, size_t errlen);
/* Freezes the guest's file systems; unless agent_thaw comes first, the
 * daemon thaws them after timeout_s (the host enforces it). */
int agent_freeze(struct vm *vm, unsigned timeout_s, char *err, size_t errlen);
int agent_thaw(struct vm *vm, char *err, size_t errlen);

#endif
