/* `agent`: the cloison agent protocol (docs/agent.md) in ring 3, over the
 * test guest's vsock driver, for the system tests. It listens on vsock
 * port AGENT_PORT; the host connects, says HELLO, and the agent answers
 * with its own HELLO and the guest's KVP items. Every service prints
 * what it did as RESULT agent_* lines:
 *
 *   shutdown   RESULT agent_shutdown=1, then ACPI S5 (with acpi=ignore
 *              this is the only clean way the guest stops)
 *   heartbeat  answered, until agent_hb_stop=SECS seconds after start
 *   timesync   RESULT agent_time_set=<unix ns>, agent_time_jump_ms=N
 *   kvp        RESULT agent_kvp=KEY=VALUE for each host item
 *   copy       RESULT agent_file=dest:PATH,size:N,sha256:HEX (the guest has
 *              no file system: it hashes what arrives)
 *   backup     RESULT agent_frozen=1, then agent_thawed=host or, when no
 *              THAW comes within the FREEZE's timeout, agent_thawed=timeout
 *
 * The guest's clock is the TSC since boot plus the offset TIME_SET gave. */
#include "vsock.h"

#define IN_CAP (AGENT_FRAME_HDR + AGENT_FRAME_MAX)

struct agent {
	struct guest *g;
	struct vsock_dev *vs;
	uint8_t *in;
	uint32_t in_len;
	uint8_t *outbuf;
	bool busy;
	int64_t clock_offset_ns; /* unix ns = timer_ns + this */
	uint64_t hb_stop_ns;	 /* 0: always answer */
	/* copy */
	bool file_open;
	char file_dest[256];
	uint64_t file_size;
	struct sha256 file_sha;
	/* backup */
	bool frozen;
	uint64_t thaw_deadline_ns;
};

static void send_msg(struct agent *a, uint16_t type, const char *body, uint32_t len)
{
	uint8_t *b = a->outbuf;

	if (len > AGENT_FRAME_MAX)
		return;
	b[0] = (uint8_t)type;
	b[1] = (uint8_t)(type >> 8);
	b[2] = b[3] = 0;
	for (unsigned i = 0; i < 4; i++)
		b[4 + i] = (uint8_t)(len >> (8 * i));
	memcpy(b + AGENT_FRAME_HDR, body, len);
	if (!vsock_send(a->vs, b, AGENT_FRAME_HDR + len))
		out("agent: send of message %u dropped (no room)\n", type);
}

static void send_text(struct agent *a, uint16_t type, const char *body)
{
	send_msg(a, type, body, (uint32_t)strlen(body));
}

/* The value of KEY= in a "key=value\n" body, copied into out. */
static bool field(const uint8_t *body, uint32_t len, const char *key, char *outv, size_t cap)
{
	size_t klen = strlen(key);
	uint32_t i = 0;

	while (i < len) {
		uint32_t end = i;

		while (end < len && body[end] != '\n')
			end++;
		if (end - i > klen && !memcmp(body + i, key, klen) && body[i + klen] == '=') {
			size_t n = end - i - klen - 1;

			if (n >= cap)
				n = cap - 1;
			memcpy(outv, body + i + klen + 1, n);
			outv[n] = 0;
			return true;
		}
		i = end + 1;
	}
	return false;
}

static uint64_t field_num(const uint8_t *body, uint32_t len, const char *key, bool *ok)
{
	char v[32];

	if (!field(body, len, key, v, sizeof(v))) {
		*ok = false;
		return 0;
	}
	return parse_dec(v, strlen(v), ok);
}

static uint64_t unix_ns(struct agent *a)
{
	return (uint64_t)((int64_t)timer_ns(a->g) + a->clock_offset_ns);
}

static void hello(struct agent *a, const uint8_t *body, uint32_t len)
{
	char v[16] = "", kvp[256];
	size_t n = 0;

	field(body, len, "version", v, sizeof(v));
	out("RESULT agent_host_version=%s\n", v);
	fmt(a->g->line, sizeof(a->g->line),
	    "version=%u\nservices=" AGENT_SERVICES "\nagent=cloison-testguest " GUEST_VERSION "\n",
	    AGENT_PROTO_VERSION);
	send_text(a, MSG_HELLO, a->g->line);
	n += fmt(kvp + n, sizeof(kvp) - n, "hostname=cloison-testguest\nos=cloison-testguest "
		 GUEST_VERSION "\nkernel=cloison-testguest " GUEST_VERSION "\n");
	if (a->g->opt_have_ip) {
		uint32_t ip = a->g->opt_ip;

		n += fmt(kvp + n, sizeof(kvp) - n, "ip.eth0=%u.%u.%u.%u\n", (ip >> 24) & 255,
			 (ip >> 16) & 255, (ip >> 8) & 255, ip & 255);
	}
	send_msg(a, MSG_KVP_GUEST, kvp, (uint32_t)n);
}

static void time_set(struct agent *a, const uint8_t *body, uint32_t len)
{
	bool ok = true;
	uint64_t host = field_num(body, len, "unix_ns", &ok), before = unix_ns(a);
	int64_t jump;
	char reply[96];

	if (!ok) {
		send_text(a, MSG_ERROR, "type=6\nerror=TIME_SET needs unix_ns=N\n");
		return;
	}
	a->clock_offset_ns = (int64_t)host - (int64_t)timer_ns(a->g);
	jump = (int64_t)host - (int64_t)before;
	out("RESULT agent_time_set=%lu\n", unix_ns(a));
	out("RESULT agent_time_jump_ms=%ld\n", jump / 1000000);
	fmt(reply, sizeof(reply), "guest_before_ns=%lu\nguest_after_ns=%lu\n", before, unix_ns(a));
	send_text(a, MSG_TIME_ACK, reply);
}

static void kvp_set(struct agent *a, const uint8_t *body, uint32_t len)
{
	char key[256], value[2048];

	if (!field(body, len, "key", key, sizeof(key)) ||
	    !field(body, len, "value", value, sizeof(value))) {
		send_text(a, MSG_ERROR, "type=9\nerror=KVP_SET needs key= and value=\n");
		return;
	}
	out("RESULT agent_kvp=%s=%s\n", key, value);
	send_text(a, MSG_KVP_ACK, "ok=1\n");
}

static void file_msg(struct agent *a, uint16_t type, const uint8_t *body, uint32_t len)
{
	uint8_t sum[32];
	char hex[65], reply[400];

	if (type == MSG_FILE_BEGIN) {
		a->file_open = field(body, len, "dest", a->file_dest, sizeof(a->file_dest));
		a->file_size = 0;
		sha256_init(&a->file_sha);
		if (!a->file_open)
			send_text(a, MSG_FILE_RESULT, "ok=0\nerror=FILE_BEGIN needs dest=\n");
		return;
	}
	if (!a->file_open) {
		send_text(a, MSG_FILE_RESULT, "ok=0\nerror=no FILE_BEGIN before this\n");
		return;
	}
	if (type == MSG_FILE_DATA) {
		sha256_update(&a->file_sha, body, len);
		a->file_size += len;
		return;
	}
	a->file_open = false;
	sha256_final(&a->file_sha, sum);
	for (int i = 0; i < 32; i++)
		fmt(hex + 2 * i, 3, "%02x", sum[i]);
	out("RESULT agent_file=dest:%s,size:%lu,sha256:%s\n", a->file_dest, a->file_size, hex);
	fmt(reply, sizeof(reply), "ok=1\nsize=%lu\nsha256=%s\n", a->file_size, hex);
	send_text(a, MSG_FILE_RESULT, reply);
}

static void freeze(struct agent *a, const uint8_t *body, uint32_t len)
{
	bool ok = true;
	uint64_t ms = field_num(body, len, "timeout_ms", &ok);

	if (!ok || !ms || ms > 600000) {
		send_text(a, MSG_FREEZE_RESULT, "ok=0\nerror=FREEZE needs timeout_ms=1..600000\n");
		return;
	}
	a->frozen = true;
	a->thaw_deadline_ns = timer_ns(a->g) + ms * 1000000;
	out("RESULT agent_frozen=1\n");
	send_text(a, MSG_FREEZE_RESULT, "ok=1\nfrozen=1\n");
}

static void thaw(struct agent *a, const char *why)
{
	if (!a->frozen)
		return;
	a->frozen = false;
	out("RESULT agent_thawed=%s\n", why);
}

static void dispatch(struct agent *a, uint16_t type, const uint8_t *body, uint32_t len)
{
	char err[64];

	switch (type) {
	case MSG_HELLO:
		hello(a, body, len);
		break;
	case MSG_HEARTBEAT:
		if (!a->hb_stop_ns || timer_ns(a->g) < a->hb_stop_ns)
			send_msg(a, MSG_HEARTBEAT_REPLY, (const char *)body, len);
		break;
	case MSG_SHUTDOWN:
		send_text(a, MSG_SHUTDOWN_ACK, "ok=1\n");
		out("RESULT agent_shutdown=1\n");
		acpi_poweroff(a->g);
	case MSG_TIME_SET:
		time_set(a, body, len);
		break;
	case MSG_KVP_SET:
		kvp_set(a, body, len);
		break;
	case MSG_FILE_BEGIN:
	case MSG_FILE_DATA:
	case MSG_FILE_END:
		file_msg(a, type, body, len);
		break;
	case MSG_FREEZE:
		freeze(a, body, len);
		break;
	case MSG_THAW:
		thaw(a, "host");
		send_text(a, MSG_THAW_RESULT, "ok=1\n");
		break;
	default:
		/* a newer host's message: say so, and keep going */
		fmt(err, sizeof(err), "type=%u\nerror=unknown message type\n", type);
		send_text(a, MSG_ERROR, err);
		break;
	}
}

static void on_data(void *arg, const uint8_t *p, uint32_t n)
{
	struct agent *a = arg;

	a->busy = true;
	while (n) {
		uint32_t take = IN_CAP - a->in_len < n ? IN_CAP - a->in_len : n;
		uint32_t off = 0;

		memcpy(a->in + a->in_len, p, take);
		a->in_len += take;
		p += take;
		n -= take;
		while (a->in_len - off >= AGENT_FRAME_HDR) {
			const uint8_t *h = a->in + off;
			uint16_t type = (uint16_t)(h[0] | h[1] << 8);
			uint32_t len = h[4] | h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;

			if (len > AGENT_FRAME_MAX) {
				out("agent: frame of %u bytes refused; dropping the input\n", len);
				a->in_len = off = 0;
				break;
			}
			if (a->in_len - off < AGENT_FRAME_HDR + len)
				break;
			dispatch(a, type, h + AGENT_FRAME_HDR, len);
			off += AGENT_FRAME_HDR + len;
		}
		memmove(a->in, a->in + off, a->in_len - off);
		a->in_len -= off;
	}
}

static void on_conn(void *arg, bool up)
{
	struct agent *a = arg;

	a->in_len = 0;
	a->file_open = false;
	out("RESULT agent_connected=%d\n", up ? 1 : 0);
}

int agent_start(struct guest *g, struct agent **res)
{
	struct agent *a = mm_alloc(g, sizeof(*a), 64);

	if (!a)
		return -1;
	a->g = g;
	a->in = mm_alloc(g, IN_CAP, PAGE_SIZE);
	a->outbuf = mm_alloc(g, IN_CAP, PAGE_SIZE);
	if (!a->in || !a->outbuf || vsock_start(g, AGENT_PORT, &a->vs))
		return -1;
	if (g->opt_agent_hb_stop_s)
		a->hb_stop_ns = timer_ns(g) + g->opt_agent_hb_stop_s * 1000000000ULL;
	out("RESULT agent_ready=%u\n", AGENT_PROTO_VERSION);
	*res = a;
	return 0;
}

bool agent_poll(struct agent *a)
{
	a->busy = false;
	if (vsock_poll(a->vs, on_data, on_conn, a))
		a->busy = true;
	if (a->frozen && timer_ns(a->g) >= a->thaw_deadline_ns)
		thaw(a, "timeout");
	return a->busy;
}

bool agent_wakes(const struct agent *a)
{
	return vsock_wakes(a->vs);
}
