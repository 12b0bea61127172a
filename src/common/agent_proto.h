/* The agent protocol's wire constants (docs/agent.md), one definition for
 * its three speakers: cloisond (src/daemon/agent.c), cloison-agent
 * (guest-agent/) and the test guest's ring-3 agent (guest/agent.c), so
 * they cannot drift apart. No includes: the test guest is freestanding. */
#ifndef CLOISON_COMMON_AGENT_PROTO_H
#define CLOISON_COMMON_AGENT_PROTO_H

#define AGENT_PORT 5300		      /* the guest agent's vsock port */
#define AGENT_PROTO_VERSION 1
#define AGENT_FRAME_HDR 8	      /* u16 type, u16 flags (0), u32 length */
#define AGENT_FRAME_MAX (64u << 10)   /* the largest body */
#define AGENT_SERVICES "shutdown,heartbeat,timesync,kvp,copy,backup"

enum agent_msg {
	MSG_HELLO = 1,
	MSG_HEARTBEAT = 2,
	MSG_HEARTBEAT_REPLY = 3,
	MSG_SHUTDOWN = 4,
	MSG_SHUTDOWN_ACK = 5,
	MSG_TIME_SET = 6,
	MSG_TIME_ACK = 7,
	MSG_KVP_GUEST = 8,
	MSG_KVP_SET = 9,
	MSG_KVP_ACK = 10,
	MSG_FILE_BEGIN = 11,
	MSG_FILE_DATA = 12,
	MSG_FILE_END = 13,
	MSG_FILE_RESULT = 14,
	MSG_FREEZE = 15,
	MSG_FREEZE_RESULT = 16,
	MSG_THAW = 17,
	MSG_THAW_RESULT = 18,
	MSG_ERROR = 255,
};

#endif
