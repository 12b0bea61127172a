/* The HTTP server: libmicrohttpd on the unix socket cloisond bound, fed by
 * the gate (gate.c) once a connection's request head has arrived, one
 * thread per such connection (operations may wait for a guest to shut
 * down, and event streams stay open); the head checks (framing, declared
 * size, percent-decoded path), the route table, and the JSON reply
 * helpers. */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/api/api.h"
#include "daemon/api/checkpoints.h"
#include "daemon/api/gate.h"

struct route {
	const char *method;
	const char *pattern; /* '*' matches one path segment */
	void (*handler)(struct api_request *req);
};

static const struct route routes[] = {
	{ "GET", "/v1/vms", api_vms_list },
	{ "POST", "/v1/vms", api_vms_create },
	{ "POST", "/v1/vms/import", api_vms_import },
	{ "GET", "/v1/vms/*", api_vm_show },
	{ "PATCH", "/v1/vms/*", api_vm_set },
	{ "DELETE", "/v1/vms/*", api_vm_remove },
	{ "DELETE", "/v1/vms/*/saved-state", api_vm_discard_saved },
	{ "POST", "/v1/vms/*/console", api_vm_console },
	{ "POST", "/v1/vms/*/kvp", api_vm_kvp },
	{ "POST", "/v1/vms/*/copy-file", api_vm_copy_file },
	{ "POST", "/v1/vms/*/freeze", api_vm_freeze },
	{ "POST", "/v1/vms/*/thaw", api_vm_thaw },
	{ "GET", "/v1/vms/*/checkpoints", api_checkpoints_list },
	{ "POST", "/v1/vms/*/checkpoints", api_checkpoints_create },
	{ "PATCH", "/v1/vms/*/checkpoints", api_checkpoints_settings },
	{ "POST", "/v1/vms/*/checkpoints/*/apply", api_checkpoint_apply },
	{ "PATCH", "/v1/vms/*/checkpoints/*", api_checkpoint_rename },
	{ "DELETE", "/v1/vms/*/checkpoints/*", api_checkpoint_remove },
	{ "POST", "/v1/vms/*/upgrade-version", api_vm_upgrade_version },
	{ "POST", "/v1/vms/*/*", api_vm_action },
	{ "GET", "/v1/events", api_events },
	{ "GET", "/v1/jobs", api_jobs_list },
	{ "GET", "/v1/jobs/*", api_job_show },
	{ "DELETE", "/v1/jobs/*", api_job_cancel },
	{ "GET", "/v1/host", api_host },
	{ "GET", "/v1/host/versions", api_host_versions },
	{ "PATCH", "/v1/host", api_host_set },
	{ "GET", "/v1/switches", api_switches_list },
	{ "POST", "/v1/switches", api_switches_create },
	{ "GET", "/v1/switches/*", api_switch_show },
	{ "PATCH", "/v1/switches/*", api_switch_set },
	{ "DELETE", "/v1/switches/*", api_switch_remove },
	{ "GET", "/v1/switches/*/forwards", api_switch_forwards },
	{ "POST", "/v1/switches/*/forwards", api_switch_forward_add },
	{ "DELETE", "/v1/switches/*/forwards/*/*", api_switch_forward_remove },
	{ "GET", "/v1/switches/*/leases", api_switch_leases },
	{ "POST", "/v1/vms/*/network-adapters/*/connect", api_vm_nic_connect },
	{ NULL, NULL, NULL },
};

/* One request: created by the URI callback when the request line arrives,
 * freed when the request completes. */
struct request_ctx {
	char *raw_uri;	/* as sent: not yet percent-decoded */
	bool started;	/* the head was checked (first handler call) */
	bool too_large; /* the body is read and dropped, then 413 */
	bool identified;
	struct peer peer;
	char path[API_PATH_MAX];
	char *segs[API_MAX_SEGMENTS];
	unsigned n_segs;
	char *body;
	size_t len;
	void *owned; /* api_request_own */
	void (*owned_free)(void *);
};

/* The HTTP server's own state (d->http). */
struct api_server {
	struct MHD_Daemon *mhd;
	struct api_gate *gate;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned sessions; /* console threads still running */
};

void api_reply(struct api_request *req, unsigned status, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		text = strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}");
	size_t len = strlen(text);
	text[len] = 0;
	char *withnl = realloc(text, len + 2);
	if (withnl) {
		withnl[len++] = '\n';
		text = withnl;
	}
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(resp, "Content-Type", "application/json");
	req->result = MHD_queue_response(req->conn, status, resp);
	MHD_destroy_response(resp);
	req->answered = true;
}

void api_error(struct api_request *req, unsigned status, const char *code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	api_sanitize_utf8(msg); /* JSON strings are UTF-8; a name may not be */
	api_reply(req, status,
		  json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

void api_error_errno(struct api_request *req, int err, const char *msg)
{
	switch (err) {
	case -EINVAL:
		api_error(req, 400, "bad-request", "%s", msg);
		break;
	case -ENOENT:
		api_error(req, 404, "not-found", "%s", msg);
		break;
	case -EEXIST:
		api_error(req, 409, "already-exists", "%s", msg);
		break;
	case -EBUSY:
		api_error(req, 409, "invalid-state", "%s", msg);
		break;
	case -EACCES:
	case -EPERM:
		api_error(req, 403, "forbidden", "%s", msg);
		break;
	case -ETIMEDOUT:
		api_error(req, 504, "timeout", "%s", msg);
		break;
	default:
		api_error(req, 500, "failed", "%s", msg);
	}
}

json_t *api_parse_body(struct api_request *req, bool empty_ok)
{
	json_error_t jerr;

	if (req->body_len == 0) {
		if (empty_ok)
			return json_object();
		api_error(req, 400, "bad-request", "this request needs a JSON object as its body");
		return NULL;
	}
	json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		api_error(req, 400, "malformed-json",
			  "malformed JSON in the request body at line %d, column %d (byte %d): %s",
			  jerr.line, jerr.column, jerr.position, jerr.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		api_error(req, 400, "bad-request", "the request body must be a JSON object");
		return NULL;
	}
	return j;
}

const char *api_query(struct api_request *req, const char *key)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* The length of the well-formed UTF-8 sequence at s[0..n), 0 if there is
 * none (no overlong forms, surrogates or code points above U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0], need;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n <= need)
		return 0;
	for (unsigned k = 1; k <= need; k++) {
		if ((s[k] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[k] & 0x3f);
	}
	if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return need + 1;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = utf8_seq_len(s + i, n - i)))
			return false;
	return true;
}

void api_sanitize_utf8(char *s)
{
	unsigned char *u = (unsigned char *)s;
	size_t n = strlen(s);

	for (size_t i = 0, k; i < n; i += k)
		if (!(k = utf8_seq_len(u + i, n - i))) {
			u[i] = '?';
			k = 1;
		}
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes one path segment in place. A segment that decodes to a
 * NUL or a '/' or is not UTF-8 is refused: it could never be a VM name, and
 * as a C string it would name something else (a NUL cuts it short). */
static int decode_segment(char *seg, unsigned idx, char *why, size_t whylen)
{
	char *out = seg;

	for (const char *in = seg; *in; in++) {
		if (*in != '%') {
			*out++ = *in;
			continue;
		}
		int hi = hex_value(in[1]), lo = hi < 0 ? -1 : hex_value(in[2]);
		if (lo < 0) {
			snprintf(why, whylen, "path segment %u holds a '%%' that is not followed "
				 "by two hex digits (write %%25 for a '%%')", idx + 1);
			return -EINVAL;
		}
		char c = (char)(hi << 4 | lo);
		if (c == 0 || c == '/') {
			snprintf(why, whylen, "path segment %u holds an encoded %s (%%%c%c): a VM "
				 "name is 1-64 of A-Z a-z 0-9 . _ -", idx + 1,
				 c ? "'/'" : "NUL byte", in[1], in[2]);
			return -EINVAL;
		}
		*out++ = c;
		in += 2;
	}
	*out = 0;
	if (!utf8_valid((unsigned char *)seg, (size_t)(out - seg))) {
		snprintf(why, whylen, "path segment %u is not valid UTF-8 once decoded: a VM "
			 "name is 1-64 of A-Z a-z 0-9 . _ -", idx + 1);
		return -EINVAL;
	}
	return 0;
}

/* Splits the raw path (up to '?') at '/' into segs and decodes each.
 * 0, -ENAMETOOLONG, -E2BIG (too many segments) or -EINVAL (why says). */
static int split_path(const char *raw, char *buf, size_t buflen, char **segs, unsigned *n,
		      char *why, size_t whylen)
{
	size_t len = strcspn(raw, "?");
	char *save = NULL;

	*n = 0;
	if (len >= buflen)
		return -ENAMETOOLONG;
	memcpy(buf, raw, len);
	buf[len] = 0;
	for (char *s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (*n == API_MAX_SEGMENTS)
			return -E2BIG;
		int r = decode_segment(s, *n, why, whylen);
		if (r)
			return r;
		segs[(*n)++] = s;
	}
	return 0;
}

static bool pattern_matches(const char *pattern, char **segs, unsigned n)
{
	char buf[128], *psegs[API_MAX_SEGMENTS], why[8];
	unsigned pn;

	if (split_path(pattern, buf, sizeof(buf), psegs, &pn, why, sizeof(why)) || pn != n)
		return false;
	for (unsigned i = 0; i < n; i++)
		if (strcmp(psegs[i], "*") && strcmp(psegs[i], segs[i]))
			return false;
	return true;
}

static void dispatch(struct api_request *req)
{
	bool path_known = false;

	for (const struct route *r = routes; r->method; r++) {
		if (!pattern_matches(r->pattern, req->segs, req->n_segs))
			continue;
		path_known = true;
		if (strcmp(r->method, req->method))
			continue;
		r->handler(req);
		return;
	}
	if (path_known)
		api_error(req, 405, "method-not-allowed", "%s is not allowed on %s", req->method,
			  req->url);
	else
		api_error(req, 404, "no-such-endpoint",
			  "no API endpoint %s %s (see docs/api.yaml; the API lives under /v1)",
			  req->method, req->url);
}

struct header_count {
	unsigned content_length, transfer_encoding;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
				    const char *value)
{
	struct header_count *hc = cls;

	if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
		hc->content_length++;
	else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING))
		hc->transfer_encoding++;
	return MHD_YES;
}

/* Checks a request's head before any of its body is read: framing, the
 * declared size and the path. 0, or answers the request and returns -1. */
static int check_head(struct api_request *req, struct request_ctx *ctx)
{
	struct header_count hc = { 0 };
	char why[300];
	uint64_t clen = UINT64_MAX;

	for (const char *m = req->method; *m; m++)
		if (*m < 'A' || *m > 'Z') {
			api_error(req, 400, "bad-request", "the request method is not a word "
				  "of capital letters (GET, POST, PATCH, DELETE)");
			return -1;
		}
	MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_header, &hc);
	if (hc.content_length > 1 || hc.transfer_encoding > 1) {
		api_error(req, 400, "bad-request", "the request has %u Content-Length and %u "
			  "Transfer-Encoding headers: send at most one of each",
			  hc.content_length, hc.transfer_encoding);
		return -1;
	}
	if (hc.content_length && hc.transfer_encoding) {
		api_error(req, 400, "bad-request", "the request has both Content-Length and "
			  "Transfer-Encoding: send only Content-Length");
		return -1;
	}
	const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl && (parse_u64(cl, &clen) || clen > API_BODY_MAX)) {
		const char *expect = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
								 MHD_HTTP_HEADER_EXPECT);
		if (clen <= API_DRAIN_MAX && !expect) {
			/* A client that sends its body without waiting reads no
			 * answer until it has sent it: take it, drop it, then 413. */
			ctx->too_large = true;
			return 0;
		}
		/* Answered before any of the body is read; libmicrohttpd then
		 * closes the connection rather than read what follows. */
		api_error(req, 413, "too-large", "the request body (Content-Length %s) is larger "
			  "than %d bytes", cl, API_BODY_MAX);
		return -1;
	}
	int r = ctx->raw_uri ? split_path(ctx->raw_uri, ctx->path, sizeof(ctx->path), ctx->segs,
					  &ctx->n_segs, why, sizeof(why))
			     : -ENOMEM;
	if (r == -EINVAL)
		api_error(req, 400, "invalid-name", "%s", why);
	else if (r == -ENOMEM)
		api_error(req, 500, "internal", "out of memory");
	else if (r)
		api_error(req, 414, "uri-too-long", "the request path is too long");
	return r ? -1 : 0;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct request_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx)
		ctx->raw_uri = strdup(uri);
	return ctx;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct daemon *d = cls;
	struct request_ctx *ctx = *con_cls;
	struct api_request req = {
		.d = d, .conn = conn, .method = method, .url = url,
	};

	if (!ctx) {
		ctx = calloc(1, sizeof(*ctx));
		if (!ctx)
			return MHD_NO;
		*con_cls = ctx;
	}
	req.ctx = ctx;
	if (!ctx->started) {
		/* The head is complete, no body byte read yet. */
		ctx->started = true;
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci && auth_identify(d, ci->connect_fd, &ctx->peer) == 0)
			ctx->identified = true;
		if (ctx->raw_uri)
			req.url = ctx->raw_uri;
		if (check_head(&req, ctx))
			return req.result;
		return MHD_YES;
	}
	if (*upload_size && ctx->too_large) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size) {
		if (ctx->len + *upload_size > API_BODY_MAX)
			return MHD_NO; /* chunked: no size was declared */
		char *nb = realloc(ctx->body, ctx->len + *upload_size + 1);
		if (!nb)
			return MHD_NO;
		memcpy(nb + ctx->len, upload, *upload_size);
		ctx->body = nb;
		ctx->len += *upload_size;
		ctx->body[ctx->len] = 0;
		*upload_size = 0;
		return MHD_YES;
	}

	/* The handlers may wait (a guest shutting down, an event stream):
	 * that is not the client being idle. */
	MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
	memcpy(req.segs, ctx->segs, sizeof(req.segs));
	req.n_segs = ctx->n_segs;
	req.url = ctx->raw_uri ? ctx->raw_uri : url;
	req.body = ctx->body;
	req.body_len = ctx->len;
	req.peer = ctx->peer;
	if (!ctx->identified)
		api_error(&req, 403, "forbidden",
			  "cannot identify the caller (SO_PEERCRED failed on the connection)");
	else if (ctx->too_large)
		api_error(&req, 413, "too-large", "the request body is larger than %d bytes",
			  API_BODY_MAX);
	else
		dispatch(&req);
	if (!req.answered)
		api_error(&req, 500, "internal", "the request was not answered");
	return req.result;
}

void api_request_own(struct api_request *req, void *obj, void (*free_fn)(void *))
{
	struct request_ctx *ctx = req->ctx;

	assert(ctx && !ctx->owned);
	ctx->owned = obj;
	ctx->owned_free = free_fn;
}

void api_request_disown(void *con_cls)
{
	struct request_ctx *ctx = con_cls;

	if (ctx)
		ctx->owned = NULL;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct request_ctx *ctx = *con_cls;

	if (ctx) {
		if (ctx->owned)
			ctx->owned_free(ctx->owned);
		free(ctx->raw_uri);
		free(ctx->body);
		free(ctx);
		*con_cls = NULL;
	}
	/* Kept alive: idle until the next request. */
	MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
				  (unsigned)API_IDLE_TIMEOUT_S);
}

/* Counts the connections libmicrohttpd holds per user (the gate counted
 * them from accept), so a user's slot is given back when it closes. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct api_server *srv = cls;
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci && getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			*socket_context = (void *)((uintptr_t)cred.uid + 1);
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
		api_gate_release(srv->gate, (uid_t)((uintptr_t)*socket_context - 1));
		*socket_context = NULL;
	}
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = 0;
	log_debug("http: %s", msg);
}

void api_session_hold(struct daemon *d)
{
	struct api_server *srv = d->http;

	pthread_mutex_lock(&srv->lock);
	srv->sessions++;
	pthread_mutex_unlock(&srv->lock);
}

void api_session_release(struct daemon *d)
{
	struct api_server *srv = d->http;

	pthread_mutex_lock(&srv->lock);
	srv->sessions--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

int api_start(struct daemon *d)
{
	/* A thread per connection that has sent its head (operations may wait
	 * for a guest to shut down, event streams stay open); idle ones wait
	 * in the gate. poll(), not select(): descriptors pass FD_SETSIZE. */
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_POLL | MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE | MHD_USE_ITC |
			 MHD_USE_NO_LISTEN_SOCKET;
	struct api_server *srv = calloc(1, sizeof(*srv));
	int r;

	if (!srv)
		return -ENOMEM;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	srv->mhd = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, d, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, d,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, d, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
		d, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)(GATE_MAX + 64), MHD_OPTION_CONNECTION_TIMEOUT,
		(unsigned)API_IDLE_TIMEOUT_S, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024),
		MHD_OPTION_END);
	if (!srv->mhd) {
		r = -EIO;
		goto fail;
	}
	d->http = srv;
	r = api_gate_start(srv->mhd, d->listen_fd, &srv->gate);
	if (r)
		goto fail_mhd;
	return 0;
fail_mhd:
	MHD_stop_daemon(srv->mhd);
	d->http = NULL;
fail:
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
	return r;
}

void api_stop(struct daemon *d)
{
	struct api_server *srv = d->http;
	struct timespec dl;

	if (!srv)
		return;
	api_gate_stop(srv->gate);
	/* Console threads see d->shutting_down within a poll interval; the
	 * upgraded sockets must be closed before libmicrohttpd stops. */
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	pthread_mutex_lock(&srv->lock);
	while (srv->sessions && pthread_cond_timedwait(&srv->cond, &srv->lock, &dl) == 0)
		;
	pthread_mutex_unlock(&srv->lock);
	MHD_stop_daemon(srv->mhd);
	api_gate_free(srv->gate);
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
	d->http = NULL;
}
