/* The HTTP server: libmicrohttpd on the unix socket cloisond bound, one
 * thread per connection (operations may wait for a guest to shut down, and
 * event streams stay open), the route table, and the JSON reply helpers. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/api/api.h"

struct route {
	const char *method;
	const char *pattern; /* '*' matches one path segment */
	void (*handler)(struct api_request *req);
};

static const struct route routes[] = {
	{ "GET", "/v1/vms", api_vms_list },
	{ "POST", "/v1/vms", api_vms_create },
	{ "GET", "/v1/vms/*", api_vm_show },
	{ "PATCH", "/v1/vms/*", api_vm_set },
	{ "DELETE", "/v1/vms/*", api_vm_remove },
	{ "POST", "/v1/vms/*/console", api_vm_console },
	{ "POST", "/v1/vms/*/*", api_vm_action },
	{ "GET", "/v1/events", api_events },
	{ "GET", "/v1/host", api_host },
	{ NULL, NULL, NULL },
};

struct request_ctx {
	char *body;
	size_t len;
	bool too_large;
	bool identified;
	struct peer peer;
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

static unsigned split_path(char *path, char **segs)
{
	unsigned n = 0;
	char *save = NULL;

	for (char *s = strtok_r(path, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (n == API_MAX_SEGMENTS)
			return API_MAX_SEGMENTS + 1;
		segs[n++] = s;
	}
	return n;
}

static bool pattern_matches(const char *pattern, char **segs, unsigned n)
{
	char buf[128], *psegs[API_MAX_SEGMENTS];

	snprintf(buf, sizeof(buf), "%s", pattern);
	unsigned pn = split_path(buf, psegs);
	if (pn != n)
		return false;
	for (unsigned i = 0; i < n; i++)
		if (strcmp(psegs[i], "*") && strcmp(psegs[i], segs[i]))
			return false;
	return true;
}

static void dispatch(struct api_request *req)
{
	char path[2048];
	bool path_known = false;

	if (strlen(req->url) >= sizeof(path)) {
		api_error(req, 414, "uri-too-long", "the request path is too long");
		return;
	}
	snprintf(path, sizeof(path), "%s", req->url);
	req->n_segs = split_path(path, req->segs);
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct daemon *d = cls;
	struct request_ctx *ctx = *con_cls;

	if (!ctx) {
		ctx = calloc(1, sizeof(*ctx));
		if (!ctx)
			return MHD_NO;
		*con_cls = ctx;
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (ci && auth_identify(d, ci->connect_fd, &ctx->peer) == 0)
			ctx->identified = true;
		return MHD_YES;
	}
	if (*upload_size) {
		if (ctx->len + *upload_size > API_BODY_MAX) {
			ctx->too_large = true;
		} else {
			char *nb = realloc(ctx->body, ctx->len + *upload_size + 1);
			if (!nb)
				return MHD_NO;
			memcpy(nb + ctx->len, upload, *upload_size);
			ctx->body = nb;
			ctx->len += *upload_size;
			ctx->body[ctx->len] = 0;
		}
		*upload_size = 0;
		return MHD_YES;
	}

	struct api_request req = {
		.d = d, .conn = conn, .method = method, .url = url,
		.body = ctx->body, .body_len = ctx->len, .peer = ctx->peer,
	};
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

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct request_ctx *ctx = *con_cls;

	if (ctx) {
		free(ctx->body);
		free(ctx);
		*con_cls = NULL;
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

int api_start(struct daemon *d)
{
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE | MHD_USE_ITC;
	struct MHD_Daemon *mhd = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, d, MHD_OPTION_LISTEN_SOCKET, d->listen_fd,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, d, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)4096, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, d, MHD_OPTION_THREAD_STACK_SIZE,
		(size_t)(512 * 1024), MHD_OPTION_END);

	if (!mhd)
		return -EIO;
	d->http = mhd;
	return 0;
}

void api_stop(struct daemon *d)
{
	if (d->http) {
		MHD_stop_daemon(d->http);
		d->http = NULL;
	}
}
