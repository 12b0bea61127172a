/* libFuzzer target for cloisond's REST API (src/daemon/api/): request
 * methods, paths, query strings, headers and bodies go through the route
 * dispatch, the guards on a request's head, the body parsers and every
 * handler, without a socket or libmicrohttpd.
 *
 * http.c is compiled into this file (#include below), so its access
 * handler on_request() and on_completed() are called directly, in the
 * order libmicrohttpd calls them: (on_uri), the head, each body chunk, the
 * end, completion. The few MHD_* functions the API code calls are defined
 * here over a fake connection (they take precedence over the library's);
 * every queued response is checked: a status from 100 to 599, exactly one
 * response per request, and, for the JSON ones, an object or a list, whose
 * errors carry a code and a message.
 *
 * The daemon is real (inventory, state machine, config parser, events) on
 * a state directory in /dev/shm; its worker binary does not exist, so a
 * start fails before any process is spawned. The caller is root (an
 * administrator) or, with bit 0 of the first byte, "nobody" (SO_PEERCRED
 * is answered by fuzz_getsockopt through -Dgetsockopt=). VMs made by one
 * input are forgotten before the next.
 *
 * Input: a set-up byte, then up to 8 requests, each: method (1 byte: an
 * index, or 0xf0+n for n raw bytes), URL (1 length byte, bytes; '?'
 * starts the query string), headers (a count byte, then per header a
 * name index and a length-prefixed value), body (2 length bytes, bytes)
 * and the body's chunk size (1 byte). */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_loop.h"

/* The access handler and its helpers, static in http.c. */
#include "../../src/daemon/api/http.c"

#define MAX_REQUESTS 8
#define MAX_HEADERS 4
#define MAX_ARGS 8
#define FUZZ_DIR "/dev/shm/cloison-fuzz"

/* ---- a fake connection ------------------------------------------------- */

struct kv {
	char key[64];
	char value[256];
};

struct MHD_Connection {
	int fd;
	struct kv headers[MAX_HEADERS];
	unsigned nheaders;
	struct kv args[MAX_ARGS];
	unsigned nargs;
	unsigned queued; /* responses queued for the current request */
};

struct MHD_Response {
	char *body;
	size_t len;
	bool json;
	MHD_ContentReaderFreeCallback free_cb;
	void *free_cls;
};

static uid_t caller_uid;

int fuzz_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
#undef getsockopt
extern int getsockopt(int fd, int level, int name, void *val, socklen_t *len);

int fuzz_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	int r = getsockopt(fd, level, name, val, len);

	if (!r && level == SOL_SOCKET && name == SO_PEERCRED)
		((struct ucred *)val)->uid = caller_uid;
	return r;
}

const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *c,
							enum MHD_ConnectionInfoType type, ...)
{
	static union MHD_ConnectionInfo ci;

	if (type != MHD_CONNECTION_INFO_CONNECTION_FD)
		return NULL;
	ci.connect_fd = c->fd;
	return &ci;
}

const char *MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind,
					const char *key)
{
	struct kv *list = kind == MHD_GET_ARGUMENT_KIND ? c->args : c->headers;
	unsigned n = kind == MHD_GET_ARGUMENT_KIND ? c->nargs : kind == MHD_HEADER_KIND ? c->nheaders
											 : 0;

	for (unsigned i = 0; i < n; i++)
		if (key && !strcasecmp(list[i].key, key))
			return list[i].value;
	return NULL;
}

int MHD_get_connection_values(struct MHD_Connection *c, enum MHD_ValueKind kind,
			      MHD_KeyValueIterator it, void *cls)
{
	struct kv *list = kind == MHD_GET_ARGUMENT_KIND ? c->args : c->headers;
	unsigned n = kind == MHD_GET_ARGUMENT_KIND ? c->nargs : kind == MHD_HEADER_KIND ? c->nheaders
											 : 0;

	for (unsigned i = 0; i < n; i++)
		if (it && it(cls, kind, list[i].key, list[i].value) != MHD_YES)
			return (int)i + 1;
	return (int)n;
}

enum MHD_Result MHD_set_connection_option(struct MHD_Connection *c,
					  enum MHD_CONNECTION_OPTION option, ...)
{
	return MHD_YES;
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer,
						     enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = calloc(1, sizeof(*r));

	r->body = malloc(size + 1);
	memcpy(r->body, buffer, size);
	r->body[size] = 0;
	r->len = size;
	if (mode == MHD_RESPMEM_MUST_FREE)
		free(buffer);
	return r;
}

struct MHD_Response *MHD_create_response_from_callback(uint64_t size, size_t block_size,
						       MHD_ContentReaderCallback crc, void *crc_cls,
						       MHD_ContentReaderFreeCallback crfc)
{
	struct MHD_Response *r = calloc(1, sizeof(*r));

	r->free_cb = crfc;
	r->free_cls = crc_cls;
	return r;
}

struct MHD_Response *MHD_create_response_for_upgrade(MHD_UpgradeHandler upgrade_handler,
						     void *upgrade_handler_cls)
{
	/* Never upgraded here: the handler's state is the caller's to free
	 * when the connection fails, which is what happens. */
	return calloc(1, sizeof(struct MHD_Response));
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *r, const char *header,
					const char *content)
{
	if (!strcasecmp(header, "Content-Type") && !strcmp(content, "application/json"))
		r->json = true;
	return MHD_YES;
}

void MHD_destroy_response(struct MHD_Response *r)
{
	if (!r)
		return;
	if (r->free_cb)
		r->free_cb(r->free_cls);
	free(r->body);
	free(r);
}

static void check_json(const struct MHD_Response *r)
{
	json_error_t e;
	json_t *j = json_loadb(r->body, r->len, 0, &e), *err;

	if (!json_is_object(j) && !json_is_array(j)) {
		fprintf(stderr, "fuzz: a JSON response that is not an object or a list: %.*s\n",
			(int)r->len,
			r->body);
		abort();
	}
	err = json_is_object(j) ? json_object_get(j, "error") : NULL;
	if (err) {
		assert(json_is_string(json_object_get(err, "code")));
		assert(json_is_string(json_object_get(err, "message")));
	}
	json_decref(j);
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *c, unsigned int status,
				   struct MHD_Response *r)
{
	assert(status >= 100 && status <= 599);
	assert(r);
	c->queued++;
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz: %u %.*s\n", status, (int)r->len, r->body ? r->body : "");
	if (r->json)
		check_json(r);
	return MHD_YES;
}

/* ---- the daemon -------------------------------------------------------- */

static struct daemon fuzz_daemon;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (ftw->level > 0)
		remove(path);
	return 0;
}

static void daemon_init(void)
{
	static char state[] = FUZZ_DIR "/state-XXXXXX";

	mkdir(FUZZ_DIR, 0755);
	if (!mkdtemp(state))
		abort();
	snprintf(fuzz_daemon.state_dir, sizeof(fuzz_daemon.state_dir), "%s", state);
	snprintf(fuzz_daemon.socket_path, sizeof(fuzz_daemon.socket_path), "%s/api.sock", fuzz_tmpdir());
	snprintf(fuzz_daemon.vmm_path, sizeof(fuzz_daemon.vmm_path), "%s/no-such-cloison-vmm", state);
	snprintf(fuzz_daemon.admin_group, sizeof(fuzz_daemon.admin_group), "cloison-fuzz-admins");
	fuzz_daemon.default_stop_timeout = 1;
	fuzz_daemon.listen_fd = -1;
	fuzz_daemon.stop_pipe[0] = fuzz_daemon.stop_pipe[1] = -1;
	pthread_mutex_init(&fuzz_daemon.lock, NULL);
	pthread_cond_init(&fuzz_daemon.cond, NULL);
	/* A small raw disk the bodies may name. */
	FILE *f = fopen(FUZZ_DIR "/disk.raw", "w");
	if (f) {
		if (ftruncate(fileno(f), 1 << 20))
			perror("fuzz: " FUZZ_DIR "/disk.raw");
		fclose(f);
	}
}

/* Forgets every VM and file an input made (without the /proc scan of
 * inventory_remove), and the events it pushed: only their ring slots are
 * freed (events_free_all frees all 1024, which cost a sanitizer stack
 * trace each and was a fifth of every run). */
static void daemon_reset(uint64_t seq0)
{
	jobs_shutdown(&fuzz_daemon); /* waits for the jobs an input started */
	inventory_free_all(&fuzz_daemon);
	fuzz_daemon.vms = NULL;
	nftw(fuzz_daemon.state_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	if (fuzz_daemon.next_seq - seq0 >= EVENT_RING_SIZE) {
		events_free_all(&fuzz_daemon);
		return;
	}
	for (uint64_t seq = seq0 + 1; seq <= fuzz_daemon.next_seq; seq++) {
		struct event *e = &fuzz_daemon.ring[seq % EVENT_RING_SIZE];

		free(e->json);
		free(e->audience);
		e->json = NULL;
		e->audience = NULL;
	}
}

/* ---- requests ------------------------------------------------------------ */

static const char *const methods[] = { "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD",
				       "OPTIONS", "get" };
static const char *const header_names[] = { "Content-Length", "Transfer-Encoding",
					    "Content-Type", "Last-Event-ID", "Upgrade",
					    "Expect", "Connection", "Host" };

static void take_str(struct fuzz_in *in, char *buf, size_t cap, size_t len)
{
	len = len > in->n ? in->n : len;
	len = len >= cap ? cap - 1 : len;
	memcpy(buf, in->p, len);
	buf[len] = 0;
	in->p += len;
	in->n -= len;
}

static void parse_query(struct MHD_Connection *c, char *q)
{
	for (char *save = NULL, *kv = strtok_r(q, "&", &save); kv && c->nargs < MAX_ARGS;
	     kv = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(kv, '=');

		if (eq)
			*eq = 0;
		snprintf(c->args[c->nargs].key, sizeof(c->args[0].key), "%s", kv);
		snprintf(c->args[c->nargs].value, sizeof(c->args[0].value), "%s", eq ? eq + 1 : "");
		c->nargs++;
	}
}

static void one_request(struct MHD_Connection *c, struct fuzz_in *in)
{
	char method[16], url[256], *q;
	void *con_cls = NULL;
	size_t zero = 0, body_len, chunk;
	uint8_t m = fin_u8(in);
	enum MHD_Result r;
	const uint8_t *body;

	if (m >= 0xf0)
		take_str(in, method, sizeof(method), m & 15);
	else
		snprintf(method, sizeof(method), "%s", methods[m % 8]);
	take_str(in, url, sizeof(url), fin_u8(in));
	c->nargs = c->nheaders = 0;
	c->queued = 0;
	if ((q = strchr(url, '?'))) {
		*q = 0;
		parse_query(c, q + 1);
	}
	for (unsigned n = fin_u8(in) % (MAX_HEADERS + 1); c->nheaders < n; c->nheaders++) {
		snprintf(c->headers[c->nheaders].key, sizeof(c->headers[0].key), "%s",
			 header_names[fin_u8(in) % 8]);
		take_str(in, c->headers[c->nheaders].value, sizeof(c->headers[0].value),
			 fin_u8(in));
	}
	body_len = fin_u16(in);
	body_len = body_len > in->n ? in->n : body_len;
	body = in->p;
	in->p += body_len;
	in->n -= body_len;
	chunk = (size_t)fin_u8(in) * 64 + 1;

#ifdef FUZZ_API_ON_URI
	con_cls = on_uri(&fuzz_daemon, url, c);
#endif
	r = on_request(&fuzz_daemon, c, url, method, "HTTP/1.1", NULL, &zero, &con_cls);
	if (r == MHD_YES && !c->queued) {
		for (size_t off = 0; off < body_len && r == MHD_YES;) {
			size_t n = body_len - off < chunk ? body_len - off : chunk, left = n;

			r = on_request(&fuzz_daemon, c, url, method, "HTTP/1.1", (const char *)body + off,
				       &left, &con_cls);
			assert(r != MHD_YES || left == 0); /* took it all */
			off += n;
		}
		if (r == MHD_YES) {
			r = on_request(&fuzz_daemon, c, url, method, "HTTP/1.1", NULL, &zero, &con_cls);
			/* The end of a request is always answered. */
			assert(r != MHD_YES || c->queued == 1);
		}
	}
	on_completed(&fuzz_daemon, c, &con_cls, MHD_REQUEST_TERMINATED_COMPLETED_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct MHD_Connection conn = { .fd = -1 };
	struct fuzz_in in = { data, size };
	uint64_t seq0;
	uint8_t setup;

	if (conn.fd < 0) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			abort();
		conn.fd = sv[0];
		daemon_init();
	}
	seq0 = fuzz_daemon.next_seq;
	/* The job table as cloisond has it after start-up (GET /v1/jobs and
	 * every job-starting route use it); made afresh for each input. */
	if (jobs_init(&fuzz_daemon))
		abort();
	setup = fin_u8(&in);
	caller_uid = (setup & 1) ? 65534 : 0;
	for (unsigned i = 0; i < MAX_REQUESTS && in.n; i++)
		one_request(&conn, &in);
	daemon_reset(seq0);
	return 0;
}
