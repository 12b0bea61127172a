/* The long-lived endpoints: GET /v1/events (server-sent events of state
 * changes) and POST /v1/vms/{vm}/console (an HTTP upgrade to a raw byte
 * stream spliced to the worker's serial socket). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/api/api.h"

#define KEEPALIVE_S 15

struct follower {
	struct daemon *d;
	struct peer peer;
	uint64_t next;	    /* next sequence number to send */
	char vm[VM_NAME_MAX + 1]; /* filter, "" = all */
	char *pending;	    /* formatted but not yet fully sent */
	size_t pending_len, pending_off;
};

/* Whether the follower may see event e (d->lock held): its filter, and
 * who could operate the VM when the event was queued. */
static bool visible(struct follower *f, const struct event *e)
{
	if (e->about_vm && f->vm[0] && strcmp(e->vm, f->vm))
		return false;
	return events_visible(e, &f->peer);
}

/* Formats the next visible event(s) into f->pending; waits for one up to
 * the keepalive interval. Returns false when the daemon shuts down. */
static bool fill(struct follower *f)
{
	struct daemon *d = f->d;
	struct timespec dl;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += KEEPALIVE_S;
	pthread_mutex_lock(&d->lock);
	for (;;) {
		if (d->shutting_down) {
			pthread_mutex_unlock(&d->lock);
			return false;
		}
		if (f->next + EVENT_RING_SIZE <= d->next_seq)
			f->next = d->next_seq - EVENT_RING_SIZE + 1; /* fell behind: skip */
		while (f->next <= d->next_seq) {
			struct event *e = &d->ring[f->next % EVENT_RING_SIZE];
			uint64_t seq = f->next++;
			if (e->seq != seq || !e->json || !visible(f, e))
				continue;
			json_t *j = json_loads(e->json, 0, NULL);
			const char *type = json_string_value(json_object_get(j, "type"));
			size_t len = strlen(e->json) + 128;
			f->pending = malloc(len);
			if (f->pending)
				f->pending_len = (size_t)snprintf(f->pending, len,
								  "id: %llu\nevent: %s\ndata: %s\n\n",
								  (unsigned long long)seq,
								  type ? type : "message", e->json);
			f->pending_off = 0;
			json_decref(j);
			pthread_mutex_unlock(&d->lock);
			return true;
		}
		if (pthread_cond_timedwait(&d->cond, &d->lock, &dl) == ETIMEDOUT) {
			pthread_mutex_unlock(&d->lock);
			f->pending = strdup(": keepalive\n\n");
			f->pending_len = f->pending ? strlen(f->pending) : 0;
			f->pending_off = 0;
			return true;
		}
	}
}

static ssize_t events_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct follower *f = cls;

	if (!f->pending && !fill(f))
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (!f->pending)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	size_t n = MIN(max, f->pending_len - f->pending_off);
	memcpy(buf, f->pending + f->pending_off, n);
	f->pending_off += n;
	if (f->pending_off == f->pending_len) {
		free(f->pending);
		f->pending = NULL;
	}
	return (ssize_t)n;
}

static void events_free(void *cls)
{
	struct follower *f = cls;

	free(f->pending);
	free(f);
}

void api_events(struct api_request *req)
{
	struct follower *f = calloc(1, sizeof(*f));
	const char *vm = api_query(req, "vm");
	const char *since = api_query(req, "since");
	const char *last = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Last-Event-ID");

	if (!f) {
		api_error(req, 500, "internal", "out of memory");
		return;
	}
	f->d = req->d;
	f->peer = req->peer;
	if (vm)
		snprintf(f->vm, sizeof(f->vm), "%s", vm);
	pthread_mutex_lock(&req->d->lock);
	f->next = req->d->next_seq + 1; /* only new events, unless asked */
	pthread_mutex_unlock(&req->d->lock);
	if (last || since) {
		uint64_t s;
		if (parse_u64(last ? last : since, &s)) {
			free(f);
			api_error(req, 400, "bad-request",
				  "'since' (or Last-Event-ID) must be an event sequence number");
			return;
		}
		f->next = s + 1;
	}
	struct MHD_Response *resp =
		MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, events_reader, f, events_free);
	MHD_add_response_header(resp, "Content-Type", "text/event-stream");
	MHD_add_response_header(resp, "Cache-Control", "no-cache");
	req->result = MHD_queue_response(req->conn, 200, resp);
	MHD_destroy_response(resp);
	req->answered = true;
}

/* ---- console ---- */

struct console {
	struct daemon *d;
	struct vm *vm;	  /* a reference, put when the session ends */
	struct peer peer; /* who attached: checked again while it lasts */
	int serial_fd;
	MHD_socket client;
	struct MHD_UpgradeResponseHandle *urh;
	char extra[4096];
	size_t extra_len;
};

#define CONSOLE_CHECK_MS 250 /* how soon a withdrawn delegation ends a session */

static bool pump(int from, int to)
{
	char buf[16384];
	ssize_t n = read(from, buf, sizeof(buf));

	if (n <= 0)
		return false;
	return write_full(to, buf, (size_t)n) == 0;
}

/* Whether the session may go on: the daemon runs, the VM exists, and the
 * user who attached may still operate it (a delegation can be withdrawn). */
static bool console_allowed(struct console *c, char *why, size_t whylen)
{
	bool ok = true;

	pthread_mutex_lock(&c->d->lock);
	if (c->d->shutting_down) {
		ok = false;
		snprintf(why, whylen, "cloisond is shutting down");
	} else if (c->vm->removed) {
		ok = false;
		snprintf(why, whylen, "VM '%s' was removed", c->vm->cfg.name);
	} else if (!auth_may_operate(&c->peer, c->vm)) {
		ok = false;
		snprintf(why, whylen, "user '%s' is no longer an operator of VM '%s'", c->peer.user,
			 c->vm->cfg.name);
	}
	pthread_mutex_unlock(&c->d->lock);
	return ok;
}

static void *console_main(void *arg)
{
	struct console *c = arg;
	struct pollfd p[2] = { { .fd = c->client, .events = POLLIN },
			       { .fd = c->serial_fd, .events = POLLIN } };
	bool client_open = true;
	char why[200], notice[300];

	if (c->extra_len)
		write_full(c->serial_fd, c->extra, c->extra_len);
	for (;;) {
		p[0].fd = client_open ? c->client : -1;
		int n = poll(p, 2, CONSOLE_CHECK_MS);
		if (n < 0 && errno != EINTR)
			break;
		if (!console_allowed(c, why, sizeof(why))) {
			int len = snprintf(notice, sizeof(notice), "\r\n[cloison: console closed: %s]\r\n",
					   why);
			write_full(c->client, notice, (size_t)MIN(len, (int)sizeof(notice) - 1));
			break;
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR))
			if (!pump(c->serial_fd, c->client))
				break;
		if (client_open && p[0].revents & (POLLIN | POLLHUP | POLLERR))
			if (!pump(c->client, c->serial_fd)) {
				/* The client closed its sending side (stdin at EOF):
				 * keep showing the guest's output, and do not pass the
				 * half-close on (the worker would drop us). */
				client_open = false;
			}
	}
	close(c->serial_fd);
	MHD_upgrade_action(c->urh, MHD_UPGRADE_ACTION_CLOSE);
	inventory_put(c->d, c->vm);
	api_session_release(c->d);
	free(c);
	return NULL;
}

static void console_free(void *arg)
{
	struct console *c = arg;

	close(c->serial_fd);
	inventory_put(c->d, c->vm);
	free(c);
}

static void on_upgrade(void *cls, struct MHD_Connection *conn, void *con_cls,
		       const char *extra, size_t extra_len, MHD_socket sock,
		       struct MHD_UpgradeResponseHandle *urh)
{
	struct console *c = cls;
	pthread_t t;
	pthread_attr_t attr;

	api_request_disown(con_cls); /* the session owns it from here */
	c->client = sock;
	c->urh = urh;
	if (extra && extra_len) {
		c->extra_len = MIN(extra_len, sizeof(c->extra));
		memcpy(c->extra, extra, c->extra_len);
	}
	api_session_hold(c->d);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, console_main, c)) {
		MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
		api_session_release(c->d);
		console_free(c);
	}
	pthread_attr_destroy(&attr);
}

void api_vm_console(struct api_request *req)
{
	struct vm *vm = inventory_get(req->d, req->segs[2]);
	char path[4200];

	if (!vm) {
		api_error_no_vm(req, req->segs[2]);
		return;
	}
	pthread_mutex_lock(&req->d->lock);
	bool ok = auth_may_operate(&req->peer, vm);
	enum vm_state st = vm->state;
	pthread_mutex_unlock(&req->d->lock);
	snprintf(path, sizeof(path), "%s/serial.sock", vm->rundir);
	if (!ok) {
		inventory_put(req->d, vm);
		api_error_no_vm(req, req->segs[2]);
		return;
	}
	if (st != VM_RUNNING && st != VM_PAUSED && st != VM_STOPPING) {
		inventory_put(req->d, vm);
		api_error(req, 409, "invalid-state", "VM '%s' is %s: its console exists only while "
			  "it runs", req->segs[2], vm_state_name(st));
		return;
	}
	const char *up = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Upgrade");
	if (!up || strcmp(up, "cloison-console")) {
		inventory_put(req->d, vm);
		api_error(req, 400, "bad-request",
			  "the console is a byte stream: send 'Connection: Upgrade' and "
			  "'Upgrade: cloison-console' (cloison vm console does)");
		return;
	}
	int fd = unix_connect_path(path);
	if (fd < 0) {
		inventory_put(req->d, vm);
		api_error(req, 500, "failed", "cannot connect to the serial console of '%s': %s",
			  req->segs[2], strerror(-fd));
		return;
	}
	struct console *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		inventory_put(req->d, vm);
		api_error(req, 500, "internal", "out of memory");
		return;
	}
	c->d = req->d;
	c->vm = vm;
	c->peer = req->peer;
	c->serial_fd = fd;
	struct MHD_Response *resp = MHD_create_response_for_upgrade(on_upgrade, c);
	if (!resp) {
		console_free(c);
		api_error(req, 500, "internal", "cannot create the upgrade response");
		return;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, "cloison-console");
	req->result = MHD_queue_response(req->conn, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
	MHD_destroy_response(resp);
	if (req->result != MHD_YES)
		console_free(c);
	else /* freed at the request's end if the client goes before the upgrade */
		api_request_own(req, c, console_free);
	req->answered = true;
}
