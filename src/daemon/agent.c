/* cloisond's side of the agent protocol (agent.h, docs/agent.md).
 *
 * One thread per running VM owns the channel: it connects to the worker's
 * vsock socket (<rundir>/vsock.sock, "CONNECT 5300"), says HELLO, sets
 * the guest clock, sends a heartbeat every quarter of the configured
 * interval and calls the heartbeat lost when no answer came for a whole
 * interval. When the connection drops (the guest rebooted, the worker was
 * replaced by a restore) it connects again, and the clock is set again.
 * Requests from API threads write their message and wait for the answer
 * the thread hands them; one request at a time per VM.
 *
 * Locking: a->lock guards the agent's fields; it is taken after d->lock,
 * never before. a->wlock serializes writes on the socket. */
#include "daemon/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/api/api.h"
#include "daemon/daemon.h"

#define CONNECT_RETRY_MS 1000
#define REPLY_TIMEOUT_MS 5000
#define COPY_CHUNK (60u << 10)
#define FREEZE_GRACE_MS 2000 /* the guest's own thaw comes after the host's */

enum hb_status { HB_NO_CONTACT, HB_OK, HB_LOST };

struct vm_agent {
	struct vm *vm; /* a reference, dropped when the thread ends */
	pthread_t thread;
	pthread_mutex_t lock, wlock, op_lock;
	pthread_cond_t cond;
	bool stop, resync;
	int fd;
	int wake[2];
	enum hb_status hb;
	uint64_t hb_sent, hb_answered; /* monotonic ns */
	uint64_t last_hb_wall;	       /* wall-clock ns of the last answer, 0 none */
	uint64_t hb_seq;
	char version[16], name[128];
	uint32_t guest_services;
	json_t *guest_kvp, *host_kvp;
	uint64_t time_set_wall;
	int64_t time_offset_ms;
	/* the request waiting for its answer */
	uint16_t want;
	bool got;
	char *reply;
	/* backup */
	bool frozen;
	uint64_t thaw_at; /* monotonic ns */
	uint8_t in[AGENT_FRAME_HDR + AGENT_FRAME_MAX];
	uint32_t in_len;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static json_t *iso_time(uint64_t ns)
{
	time_t t = (time_t)(ns / 1000000000ull);
	struct tm tm;
	char buf[64];

	if (!ns)
		return json_null();
	gmtime_r(&t, &tm);
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (unsigned)(ns / 1000000 % 1000));
	return json_string(buf);
}

/* ---- the wire ---- */

static bool enabled(struct vm_agent *a, enum agent_service s)
{
	struct daemon *d = a->vm->d;
	bool on;

	pthread_mutex_lock(&d->lock);
	on = a->vm->cfg.integration & (1u << s);
	pthread_mutex_unlock(&d->lock);
	return on;
}

static int send_msg(struct vm_agent *a, uint16_t type, const void *body, uint32_t len)
{
	uint8_t hdr[AGENT_FRAME_HDR] = { (uint8_t)type, (uint8_t)(type >> 8), 0, 0, (uint8_t)len,
				   (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24) };
	int r = 0;

	pthread_mutex_lock(&a->wlock);
	if (a->fd < 0 || send(a->fd, hdr, sizeof(hdr), MSG_NOSIGNAL) != (ssize_t)sizeof(hdr))
		r = -ENOTCONN;
	for (uint32_t off = 0; !r && off < len;) {
		ssize_t n = send(a->fd, (const uint8_t *)body + off, len - off, MSG_NOSIGNAL);

		if (n <= 0)
			r = -ENOTCONN;
		else
			off += (uint32_t)n;
	}
	pthread_mutex_unlock(&a->wlock);
	return r;
}

static int send_text(struct vm_agent *a, uint16_t type, const char *body)
{
	return send_msg(a, type, body, (uint32_t)strlen(body));
}

/* The value of KEY in a "key=value\n" body (malloc'd), or NULL. */
static char *field(const char *body, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, key, klen) && p[klen] == '=') {
			const char *e = strchr(p, '\n');

			return strndup(p + klen + 1, e ? (size_t)(e - p - klen - 1) : strlen(p + klen + 1));
		}
	}
	return NULL;
}

static void services_body(uint32_t mask, char *buf, size_t len)
{
	size_t n = 0;

	buf[0] = 0;
	for (unsigned i = 0; i < AGENT_SVC_COUNT; i++)
		if (mask & (1u << i))
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "," : "", agent_service_name(i));
}

static uint32_t parse_services(const char *list)
{
	uint32_t m = 0;

	for (unsigned i = 0; list && i < AGENT_SVC_COUNT; i++) {
		size_t l = strlen(agent_service_name(i));

		for (const char *p = list; (p = strstr(p, agent_service_name(i))); p += l)
			if ((p == list || p[-1] == ',') && (p[l] == ',' || !p[l]))
				m |= 1u << i;
	}
	return m;
}

/* ---- the channel ---- */

static void time_set(struct vm_agent *a)
{
	char body[64];

	snprintf(body, sizeof(body), "unix_ns=%" PRIu64 "\n", wall_ns());
	send_text(a, MSG_TIME_SET, body);
}

static void on_hello(struct vm_agent *a, const char *body)
{
	char *v = field(body, "version"), *s = field(body, "services"), *n = field(body, "agent");

	pthread_mutex_lock(&a->lock);
	snprintf(a->version, sizeof(a->version), "%s", v ? v : "");
	snprintf(a->name, sizeof(a->name), "%s", n ? n : "");
	a->guest_services = parse_services(s);
	a->hb = HB_OK;
	a->hb_answered = mono_ns();
	a->last_hb_wall = wall_ns();
	pthread_mutex_unlock(&a->lock);
	log_info("vm %s: agent %s, protocol version %s, services %s", a->vm->cfg.name,
		 n ? n : "?", v ? v : "?", s ? s : "");
	free(v);
	free(s);
	free(n);
	if ((a->guest_services & (1u << AGENT_SVC_TIMESYNC)) && enabled(a, AGENT_SVC_TIMESYNC))
		time_set(a);
}

/* KVP_GUEST: "key=value" lines; ip.IFACE=A,B become ip_addresses. */
static void on_guest_kvp(struct vm_agent *a, const char *body)
{
	json_t *kvp = json_object(), *ips = json_object();

	for (const char *p = body; *p;) {
		const char *e = strchr(p, '\n'), *eq;
		size_t len = e ? (size_t)(e - p) : strlen(p);
		char line[AGENT_KVP_KEY_MAX + AGENT_KVP_VALUE_MAX + 2];

		if (len < sizeof(line)) {
			memcpy(line, p, len);
			line[len] = 0;
			api_sanitize_utf8(line);
			eq = strchr(line, '=');
			if (eq && !strncmp(line, "ip.", 3) && eq > line + 3) {
				json_t *list = json_array();
				char *save = NULL, *vals = strdup(eq + 1);

				line[eq - line] = 0;
				for (char *t = strtok_r(vals, ",", &save); t; t = strtok_r(NULL, ",", &save))
					json_array_append_new(list, json_string(t));
				free(vals);
				json_object_set_new(ips, line + 3, list);
			} else if (eq && json_object_size(kvp) < AGENT_KVP_MAX_ITEMS) {
				line[eq - line] = 0;
				json_object_set_new(kvp, line, json_string(eq + 1));
			}
		}
		p += len + (e ? 1 : 0);
	}
	json_object_set_new(kvp, "ip_addresses", ips);
	pthread_mutex_lock(&a->lock);
	json_decref(a->guest_kvp);
	a->guest_kvp = kvp;
	pthread_mutex_unlock(&a->lock);
}

static void on_time_ack(struct vm_agent *a, const char *body)
{
	char *before = field(body, "guest_before_ns");
	uint64_t now = wall_ns();

	pthread_mutex_lock(&a->lock);
	a->time_set_wall = now;
	a->time_offset_ms = before ? ((int64_t)strtoull(before, NULL, 10) - (int64_t)now) / 1000000
				   : 0;
	pthread_mutex_unlock(&a->lock);
	free(before);
}

static void dispatch(struct vm_agent *a, uint16_t type, const char *body)
{
	switch (type) {
	case MSG_HELLO:
		on_hello(a, body);
		return;
	case MSG_KVP_GUEST:
		on_guest_kvp(a, body);
		return;
	case MSG_HEARTBEAT_REPLY:
		pthread_mutex_lock(&a->lock);
		a->hb = HB_OK;
		a->hb_answered = mono_ns();
		a->last_hb_wall = wall_ns();
		pthread_mutex_unlock(&a->lock);
		return;
	case MSG_TIME_ACK:
		on_time_ack(a, body);
		return;
	default:
		break;
	}
	pthread_mutex_lock(&a->lock);
	if (a->want && (a->want == type || type == MSG_ERROR) && !a->got) {
		free(a->reply);
		a->reply = strdup(body);
		a->got = true;
		pthread_cond_broadcast(&a->cond);
	}
	pthread_mutex_unlock(&a->lock);
}

/* Reads what the socket has and dispatches whole frames; false on EOF. */
static bool read_frames(struct vm_agent *a)
{
	ssize_t n = recv(a->fd, a->in + a->in_len, sizeof(a->in) - a->in_len, MSG_DONTWAIT);
	uint32_t off = 0;

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return false;
	if (n < 0)
		return true;
	a->in_len += (uint32_t)n;
	while (a->in_len - off >= AGENT_FRAME_HDR) {
		const uint8_t *h = a->in + off;
		uint16_t type = (uint16_t)(h[0] | h[1] << 8);
		uint32_t len = h[4] | h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
		char *body;

		if (len > AGENT_FRAME_MAX) {
			log_warn("vm %s: the agent sent a %" PRIu32 "-byte frame; dropping the "
				 "connection", a->vm->cfg.name, len);
			return false;
		}
		if (a->in_len - off < AGENT_FRAME_HDR + len)
			break;
		body = strndup((const char *)h + AGENT_FRAME_HDR, len);
		if (body)
			dispatch(a, type, body);
		free(body);
		off += AGENT_FRAME_HDR + len;
	}
	memmove(a->in, a->in + off, a->in_len - off);
	a->in_len -= off;
	return true;
}

/* Connects through the worker's socket; true with a->fd set. */
static bool try_connect(struct vm_agent *a)
{
	char path[2400], line[32] = "", services[128];
	struct pollfd p;
	size_t n = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/" AGENT_VSOCK_SOCKET, a->vm->rundir);
	fd = unix_connect_path(path);
	if (fd < 0)
		return false;
	int cl = snprintf(line, sizeof(line), "CONNECT %u\n", AGENT_PORT);
	if (send(fd, line, (size_t)cl, MSG_NOSIGNAL) != cl)
		goto fail;
	line[0] = 0;
	p = (struct pollfd){ .fd = fd, .events = POLLIN };
	while (n < sizeof(line) - 1 && !strchr(line, '\n')) {
		if (poll(&p, 1, 2000) != 1 || recv(fd, line + n, 1, 0) != 1)
			goto fail;
		line[++n] = 0;
	}
	if (strncmp(line, "OK ", 3))
		goto fail;
	pthread_mutex_lock(&a->wlock);
	a->fd = fd;
	pthread_mutex_unlock(&a->wlock);
	a->in_len = 0;
	pthread_mutex_lock(&a->vm->d->lock);
	services_body(a->vm->cfg.integration, services, sizeof(services));
	pthread_mutex_unlock(&a->vm->d->lock);
	snprintf(path, sizeof(path), "version=%d\nservices=%s\nhost=cloisond " CLOISON_VERSION "\n",
		 AGENT_PROTO_VERSION, services);
	send_text(a, MSG_HELLO, path);
	return true;
fail:
	close(fd);
	return false;
}

static void disconnect(struct vm_agent *a)
{
	pthread_mutex_lock(&a->wlock);
	close(a->fd);
	a->fd = -1;
	pthread_mutex_unlock(&a->wlock);
	pthread_mutex_lock(&a->lock);
	if (a->hb == HB_OK)
		a->hb = HB_LOST;
	a->frozen = false;
	pthread_cond_broadcast(&a->cond); /* a waiting request gives up */
	pthread_mutex_unlock(&a->lock);
}

/* Heartbeats, the lost verdict, the enforced thaw, a pending time set. */
static void timers(struct vm_agent *a)
{
	uint64_t now = mono_ns(), interval;
	bool beat = false, thaw = false, resync, paused;

	pthread_mutex_lock(&a->vm->d->lock);
	interval = (uint64_t)a->vm->cfg.heartbeat_interval * 1000000000ull;
	paused = a->vm->state != VM_RUNNING;
	pthread_mutex_unlock(&a->vm->d->lock);
	pthread_mutex_lock(&a->lock);
	if (paused) /* a paused guest cannot answer: that is not a lost heartbeat */
		a->hb_answered = now;
	if (a->version[0] && !paused && now - a->hb_sent >= interval / 4) {
		beat = true;
		a->hb_sent = now;
	}
	if (a->hb == HB_OK && now - a->hb_answered > interval) {
		a->hb = HB_LOST;
		log_warn("vm %s: heartbeat lost (no answer for %u s)", a->vm->cfg.name,
			 (unsigned)(interval / 1000000000ull));
	}
	if (a->frozen && now >= a->thaw_at) {
		a->frozen = false;
		thaw = true;
	}
	resync = a->resync && a->version[0];
	a->resync = false;
	pthread_mutex_unlock(&a->lock);
	if (beat && enabled(a, AGENT_SVC_HEARTBEAT)) {
		char body[32];

		snprintf(body, sizeof(body), "seq=%" PRIu64 "\n", ++a->hb_seq);
		send_text(a, MSG_HEARTBEAT, body);
	}
	if (thaw) {
		log_warn("vm %s: no thaw came within the freeze's timeout; thawing", a->vm->cfg.name);
		send_text(a, MSG_THAW, "reason=timeout\n");
	}
	if (resync && enabled(a, AGENT_SVC_TIMESYNC))
		time_set(a);
}

static void *agent_thread(void *arg)
{
	struct vm_agent *a = arg;
	struct daemon *d = a->vm->d;

	for (;;) {
		struct pollfd p[2] = { { .fd = a->wake[0], .events = POLLIN },
				       { .fd = a->fd, .events = POLLIN } };
		char drain[64];

		pthread_mutex_lock(&a->lock);
		bool stop = a->stop;
		pthread_mutex_unlock(&a->lock);
		if (stop)
			break;
		if (a->fd < 0 && !try_connect(a)) {
			poll(p, 1, CONNECT_RETRY_MS);
			if (p[0].revents && read(a->wake[0], drain, sizeof(drain)) < 0)
				continue;
			continue;
		}
		poll(p, 2, 100);
		if (p[0].revents && read(a->wake[0], drain, sizeof(drain)) < 0)
			continue;
		if (p[1].revents && !read_frames(a)) {
			disconnect(a);
			pthread_mutex_lock(&a->lock);
			a->version[0] = 0;
			pthread_mutex_unlock(&a->lock);
			continue;
		}
		timers(a);
	}
	if (a->fd >= 0)
		disconnect(a);
	pthread_mutex_lock(&d->lock);
	if (a->vm->agent == a)
		a->vm->agent = NULL;
	pthread_mutex_unlock(&d->lock);
	inventory_put(d, a->vm);
	close(a->wake[0]);
	close(a->wake[1]);
	json_decref(a->guest_kvp);
	json_decref(a->host_kvp);
	free(a->reply);
	pthread_mutex_destroy(&a->lock);
	pthread_mutex_destroy(&a->wlock);
	pthread_mutex_destroy(&a->op_lock);
	pthread_cond_destroy(&a->cond);
	free(a);
	return NULL;
}

static void wake(struct vm_agent *a)
{
	if (write(a->wake[1], "x", 1) < 0)
		log_debug("agent: wake-up write: %s", strerror(errno));
}

void agent_vm_started_locked(struct vm *vm)
{
	struct vm_agent *a;
	pthread_attr_t attr;

	if (vm->agent)
		return;
	a = calloc(1, sizeof(*a));
	if (!a)
		return;
	a->vm = vm;
	a->fd = -1;
	a->host_kvp = json_object();
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->wlock, NULL);
	pthread_mutex_init(&a->op_lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	if (pipe2(a->wake, O_CLOEXEC | O_NONBLOCK)) {
		free(a);
		return;
	}
	vm->refs++; /* the thread's */
	vm->agent = a;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&a->thread, &attr, agent_thread, a)) {
		vm->refs--;
		vm->agent = NULL;
		close(a->wake[0]);
		close(a->wake[1]);
		json_decref(a->host_kvp);
		free(a);
	}
	pthread_attr_destroy(&attr);
}

void agent_vm_stopped_locked(struct vm *vm)
{
	struct vm_agent *a = vm->agent;

	if (!a)
		return;
	vm->agent = NULL; /* a new start gets a new channel */
	pthread_mutex_lock(&a->lock);
	a->stop = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	wake(a);
}

void agent_vm_resumed_locked(struct vm *vm)
{
	struct vm_agent *a = vm->agent;

	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->resync = true;
	pthread_mutex_unlock(&a->lock);
	wake(a);
}

json_t *agent_json_locked(struct vm *vm)
{
	static const char *const hb_names[] = { "no_contact", "ok", "lost" };
	struct vm_agent *a = vm->agent;
	json_t *j = json_pack("{s:o, s:i}", "enabled", agent_integration_json(vm->cfg.integration),
			      "heartbeat_interval", (int)vm->cfg.heartbeat_interval);
	json_t *svc = json_array();

	if (!a) {
		json_decref(svc);
		json_object_set_new(j, "heartbeat", json_string("no_contact"));
		return j;
	}
	pthread_mutex_lock(&a->lock);
	for (unsigned i = 0; i < AGENT_SVC_COUNT; i++)
		if (a->guest_services & (1u << i))
			json_array_append_new(svc, json_string(agent_service_name(i)));
	json_object_set_new(j, "heartbeat", json_string(hb_names[a->hb]));
	json_object_set_new(j, "last_heartbeat", iso_time(a->last_hb_wall));
	json_object_set_new(j, "agent_version", a->version[0] ? json_string(a->version)
							       : json_null());
	json_object_set_new(j, "agent", a->name[0] ? json_string(a->name) : json_null());
	json_object_set_new(j, "agent_services", svc);
	json_object_set_new(j, "guest", a->guest_kvp ? json_deep_copy(a->guest_kvp)
						     : json_object());
	json_object_set_new(j, "host_kvp", json_deep_copy(a->host_kvp));
	json_object_set_new(j, "time_set", iso_time(a->time_set_wall));
	json_object_set_new(j, "guest_clock_offset_ms", json_integer(a->time_offset_ms));
	json_object_set_new(j, "frozen", json_boolean(a->frozen));
	pthread_mutex_unlock(&a->lock);
	return j;
}

/* ---- requests ---- */

/* The agent of vm with a reference on its VM, if the service may be used;
 * NULL with *r and err set. Release with agent_put(). */
static struct vm_agent *agent_get(struct vm *vm, enum agent_service s, int *r, char *err,
				  size_t errlen)
{
	struct daemon *d = vm->d;
	struct vm_agent *a;

	pthread_mutex_lock(&d->lock);
	a = vm->agent;
	*r = 0;
	if (!(vm->cfg.integration & (1u << s))) {
		snprintf(err, errlen, "the %s integration service is off for '%s' (turn it on "
			 "with: cloison vm set %s --integration %s=on)", agent_service_name(s),
			 vm->cfg.name, vm->cfg.name, agent_service_name(s));
		*r = -EPERM;
	} else if (!a) {
		snprintf(err, errlen, "'%s' is not running", vm->cfg.name);
		*r = -ENOTCONN;
	} else {
		pthread_mutex_lock(&a->lock);
		if (!a->version[0]) {
			snprintf(err, errlen, "no agent answers in '%s' (is cloison-agent running in "
				 "the guest?)", vm->cfg.name);
			*r = -ENOTCONN;
		} else if (!(a->guest_services & (1u << s))) {
			snprintf(err, errlen, "the agent in '%s' (version %s) does not offer the %s "
				 "service", vm->cfg.name, a->version, agent_service_name(s));
			*r = -EPERM;
		}
		pthread_mutex_unlock(&a->lock);
	}
	if (!*r)
		vm->refs++;
	pthread_mutex_unlock(&d->lock);
	if (*r)
		return NULL;
	pthread_mutex_lock(&a->op_lock);
	return a;
}

static void agent_put(struct vm *vm, struct vm_agent *a)
{
	pthread_mutex_unlock(&a->op_lock);
	inventory_put(vm->d, vm);
}

/* Sends a message and waits for the answer of type want; *reply (may be
 * NULL) gets its body. 0, -EIO (an ERROR answer, or ok=0: err has the
 * agent's words), -ETIMEDOUT, -ENOTCONN. */
static int request(struct vm_agent *a, uint16_t type, const char *body, uint32_t len,
		   uint16_t want, char **reply, char *err, size_t errlen)
{
	struct timespec until;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += REPLY_TIMEOUT_MS / 1000;
	pthread_mutex_lock(&a->lock);
	a->want = want;
	a->got = false;
	pthread_mutex_unlock(&a->lock);
	if (send_msg(a, type, body, len)) {
		snprintf(err, errlen, "the agent's connection is gone");
		r = -ENOTCONN;
	}
	pthread_mutex_lock(&a->lock);
	while (!r && !a->got && !a->stop && a->fd >= 0)
		if (pthread_cond_timedwait(&a->cond, &a->lock, &until) == ETIMEDOUT)
			r = -ETIMEDOUT;
	if (!r && !a->got) {
		snprintf(err, errlen, "the agent's connection is gone");
		r = -ENOTCONN;
	} else if (r == -ETIMEDOUT) {
		snprintf(err, errlen, "the agent did not answer within %d s", REPLY_TIMEOUT_MS / 1000);
	} else if (!r) {
		char *e = field(a->reply, "error"), *ok = field(a->reply, "ok");

		if (e || (ok && strcmp(ok, "1"))) {
			snprintf(err, errlen, "the agent refused: %s", e ? e : "no reason given");
			r = -EIO;
		} else if (reply) {
			*reply = a->reply;
			a->reply = NULL;
		}
		free(e);
		free(ok);
	}
	a->want = 0;
	pthread_mutex_unlock(&a->lock);
	return r;
}

int agent_shutdown(struct vm *vm, char *err, size_t errlen)
{
	int r;
	struct vm_agent *a = agent_get(vm, AGENT_SVC_SHUTDOWN, &r, err, errlen);

	if (!a)
		return r;
	r = request(a, MSG_SHUTDOWN, "reason=stop\n", 12, MSG_SHUTDOWN_ACK, NULL, err, errlen);
	agent_put(vm, a);
	return r;
}

/* A key or value is text without '=' (keys) or newlines or NUL. */
static bool kvp_text_ok(const char *s, bool key)
{
	for (; *s; s++)
		if (*s == '\n' || *s == '\r' || (key && *s == '='))
			return false;
	return true;
}

int agent_kvp_set(struct vm *vm, const char *key, const char *value, char *err, size_t errlen)
{
	char *body;
	int r;
	struct vm_agent *a;

	if (!*key || strlen(key) > AGENT_KVP_KEY_MAX || !kvp_text_ok(key, true)) {
		snprintf(err, errlen, "a KVP key is 1 to %d bytes, without '=' or line breaks",
			 AGENT_KVP_KEY_MAX);
		return -EINVAL;
	}
	if (strlen(value) > AGENT_KVP_VALUE_MAX || !kvp_text_ok(value, false)) {
		snprintf(err, errlen, "a KVP value is at most %d bytes, without line breaks",
			 AGENT_KVP_VALUE_MAX);
		return -EINVAL;
	}
	a = agent_get(vm, AGENT_SVC_KVP, &r, err, errlen);
	if (!a)
		return r;
	pthread_mutex_lock(&a->lock);
	if (json_object_size(a->host_kvp) >= AGENT_KVP_MAX_ITEMS &&
	    !json_object_get(a->host_kvp, key)) {
		pthread_mutex_unlock(&a->lock);
		agent_put(vm, a);
		snprintf(err, errlen, "at most %d host KVP items per VM", AGENT_KVP_MAX_ITEMS);
		return -EINVAL;
	}
	pthread_mutex_unlock(&a->lock);
	if (asprintf(&body, "key=%s\nvalue=%s\n", key, value) < 0) {
		agent_put(vm, a);
		return -ENOMEM;
	}
	r = request(a, MSG_KVP_SET, body, (uint32_t)strlen(body), MSG_KVP_ACK, NULL, err, errlen);
	free(body);
	if (!r) {
		pthread_mutex_lock(&a->lock);
		json_object_set_new(a->host_kvp, key, json_string(value));
		pthread_mutex_unlock(&a->lock);
	}
	agent_put(vm, a);
	return r;
}

static int copy_body(struct vm_agent *a, int fd, uint64_t size, char *err, size_t errlen)
{
	uint8_t *buf = malloc(COPY_CHUNK);
	uint64_t done = 0;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	while (!r && done < size) {
		ssize_t n = read(fd, buf, COPY_CHUNK);

		if (n <= 0) {
			snprintf(err, errlen, "reading the source file: %s",
				 n ? strerror(errno) : "it got shorter");
			r = -EIO;
		} else if (send_msg(a, MSG_FILE_DATA, buf, (uint32_t)n)) {
			snprintf(err, errlen, "the agent's connection is gone");
			r = -ENOTCONN;
		}
		done += n > 0 ? (uint64_t)n : 0;
	}
	free(buf);
	return r;
}

int agent_copy_file(struct vm *vm, const char *src, const char *dest, char *err, size_t errlen)
{
	struct stat st;
	char *begin = NULL, *reply = NULL;
	int fd, r;
	struct vm_agent *a;

	if (!*dest || strlen(dest) > 255 || dest[0] != '/' || !kvp_text_ok(dest, false)) {
		snprintf(err, errlen, "the destination must be an absolute guest path of at most "
			 "255 bytes");
		return -EINVAL;
	}
	if (src[0] != '/') {
		snprintf(err, errlen, "the source must be an absolute host path");
		return -EINVAL;
	}
	fd = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > AGENT_COPY_MAX) {
		snprintf(err, errlen, "%s: %s", src,
			 fd < 0 ? strerror(errno)
				: !S_ISREG(st.st_mode) ? "not a regular file"
						       : "larger than the 256 MiB a copy may be");
		if (fd >= 0)
			close(fd);
		return -EINVAL;
	}
	a = agent_get(vm, AGENT_SVC_COPY, &r, err, errlen);
	if (!a) {
		close(fd);
		return r;
	}
	if (asprintf(&begin, "dest=%s\nsize=%lld\n", dest, (long long)st.st_size) < 0) {
		r = -ENOMEM;
		goto out;
	}
	r = send_text(a, MSG_FILE_BEGIN, begin) ? -ENOTCONN : 0;
	if (!r)
		r = copy_body(a, fd, (uint64_t)st.st_size, err, errlen);
	if (!r)
		r = request(a, MSG_FILE_END, "", 0, MSG_FILE_RESULT, &reply, err, errlen);
	if (!r)
		log_info("vm %s: copied %s to %s in the guest (%lld bytes)", vm->cfg.name, src, dest,
			 (long long)st.st_size);
out:
	free(begin);
	free(reply);
	close(fd);
	agent_put(vm, a);
	return r;
}

int agent_freeze(struct vm *vm, unsigned timeout_s, char *err, size_t errlen)
{
	char body[64];
	int r;
	struct vm_agent *a;

	if (timeout_s < 1 || timeout_s > 600) {
		snprintf(err, errlen, "the freeze timeout is 1 to 600 seconds");
		return -EINVAL;
	}
	a = agent_get(vm, AGENT_SVC_BACKUP, &r, err, errlen);
	if (!a)
		return r;
	snprintf(body, sizeof(body), "timeout_ms=%u\n", timeout_s * 1000 + FREEZE_GRACE_MS);
	r = request(a, MSG_FREEZE, body, (uint32_t)strlen(body), MSG_FREEZE_RESULT, NULL, err,
		    errlen);
	if (!r) {
		pthread_mutex_lock(&a->lock);
		a->frozen = true;
		a->thaw_at = mono_ns() + (uint64_t)timeout_s * 1000000000ull;
		pthread_mutex_unlock(&a->lock);
	}
	agent_put(vm, a);
	return r;
}

int agent_thaw(struct vm *vm, char *err, size_t errlen)
{
	int r;
	struct vm_agent *a = agent_get(vm, AGENT_SVC_BACKUP, &r, err, errlen);

	if (!a)
		return r;
	pthread_mutex_lock(&a->lock);
	a->frozen = false;
	pthread_mutex_unlock(&a->lock);
	r = request(a, MSG_THAW, "reason=host\n", 12, MSG_THAW_RESULT, NULL, err, errlen);
	agent_put(vm, a);
	return r;
}
