/* cloison-agent's protocol side (agent.c, docs/agent.md): one connection,
 * frames in, answers out, with what touches the system behind an ops
 * table so the tests can run it over a socketpair. */
#ifndef CLOISON_AGENT_AGENT_H
#define CLOISON_AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/agent_proto.h"

#define AGENT_VERSION "0.1"
#define AGENT_MAX_FREEZE 32

struct agent_ops {
	/* Sets CLOCK_REALTIME; 0 or -errno. */
	int (*set_clock)(void *opaque, uint64_t unix_ns);
	/* Starts a clean shutdown (after the ACK went out). */
	void (*shutdown)(void *opaque);
	void *opaque;
};

struct agent_config {
	const char *kvp_dir;		       /* host KVP items land here, one file each */
	const char *freeze[AGENT_MAX_FREEZE]; /* mount points to FIFREEZE; NULL-ended */
	bool freeze_all;		       /* none listed: every block-backed one but / */
	struct agent_ops ops;
};

/* Serves one connection on fd until the peer goes, a frame is malformed,
 * or a shutdown was asked for (returns 1 then). 0, 1, or -errno. Frozen
 * file systems are thawed before it returns. */
int agent_serve(const struct agent_config *cfg, int fd);

#endif
