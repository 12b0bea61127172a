/* The test guest's virtio-vsock driver (vsock.c) and the ring-3 agent on
 * top of it (agent.c, docs/agent.md). */
#ifndef GUEST_VSOCK_H
#define GUEST_VSOCK_H

#include "virtio.h"

#define VIRTIO_ID_VSOCK 19
#include "common/agent_proto.h" /* AGENT_PORT, where the agent listens */

struct vsock_dev;

/* Opens the first virtio-vsock and listens on port (one connection at a
 * time: a new one from the host replaces the old). 0 or -1 (printed). */
int vsock_start(struct guest *g, uint32_t port, struct vsock_dev **res);
bool vsock_wakes(const struct vsock_dev *v);
/* One polling pass: packets in, credit out. Received stream bytes go to
 * on_data(arg, ...); a connection that comes or goes to on_conn(arg, up).
 * True when something happened. */
bool vsock_poll(struct vsock_dev *v, void (*on_data)(void *arg, const uint8_t *p, uint32_t n),
		void (*on_conn)(void *arg, bool up), void *arg);
/* Queues len bytes on the connection (sent as the host's credit allows).
 * False when there is no connection or no room. */
bool vsock_send(struct vsock_dev *v, const void *data, uint32_t len);

/* `agent`: the agent protocol over vsock port AGENT_PORT. */
struct agent;
int agent_start(struct guest *g, struct agent **res);
bool agent_poll(struct agent *a);
bool agent_wakes(const struct agent *a);

#endif
