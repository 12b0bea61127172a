/* The control socket. Each line from a client is parsed once into a
 * struct request, then dispatched through a static command table. Replies
 * and events are written with MSG_DONTWAIT: a client that stops reading is
 * disconnected rather than allowed to stall the VM. Clients are freed only
 * on the event loop thread; other threads just shut a bad one down. */
#include "vmm/control.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "vmm/seccomp.h"
#include "vmm/state/vm_state.h"
#include "vmm/unixsock.h"
#include "vmm/vm_internal.h"

#define MAX_CLIENTS 32
#define LINE_MAX_BYTES (64 * 1024)

struct control;

struct client {
	struct control *ctl;
	int fd;
	size_t len;
	char buf[LINE_MAX_BYTES];
};

struct control {
	struct vm *vm;
	struct evloop *loop;
	int listen_fd;
	char *path;
	pthread_mutex_t lock; /* clients[] and writes to them */
	struct client *clients[MAX_CLIENTS];
	json_t *msg; /* the request being run, for commands that take arguments */
};

struct request {
	json_t *id; /* borrowed from the parsed message; NULL when absent */
	const char *cmd;
};

struct command {
	const char *name;
	/* Returns a result object (new reference) or NULL after setting
	 * *code and *message. */
	json_t *(*run)(struct control *ctl, const char **code, char *message, size_t mlen);
	/* Runs after the reply went out (poweroff, reset). */
	void (*after)(struct control *ctl);
};

/* ---- writing -------------------------------------------------------- */

/* Caller holds ctl->lock. */
static void send_line_locked(struct client *c, const char *line)
{
	size_t len = strlen(line);
	char *buf = malloc(len + 1);

	if (!buf)
		return;
	memcpy(buf, line, len);
	buf[len] = '\n';
	if (!unixsock_send_all(c->fd, buf, len + 1))
		shutdown(c->fd, SHUT_RDWR); /* the loop thread will free it */
	free(buf);
}

void control_broadcast(struct control *ctl, const char *line)
{
	pthread_mutex_lock(&ctl->lock);
	for (unsigned i = 0; i < MAX_CLIENTS; i++)
		if (ctl->clients[i])
			send_line_locked(ctl->clients[i], line);
	pthread_mutex_unlock(&ctl->lock);
}

static void reply(struct client *c, json_t *id, json_t *result, const char *code,
		  const char *message)
{
	json_t *o = json_object();
	char *s;

	if (id)
		json_object_set(o, "id", id);
	if (result) {
		json_object_set_new(o, "ok", json_true());
		json_object_set_new(o, "result", result);
	} else {
		json_t *e = json_object();
		json_object_set_new(e, "code", json_string(code));
		json_object_set_new(e, "message", json_string(message));
		json_object_set_new(o, "ok", json_false());
		json_object_set_new(o, "error", e);
	}
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s)
		return;
	pthread_mutex_lock(&c->ctl->lock);
	send_line_locked(c, s);
	pthread_mutex_unlock(&c->ctl->lock);
	free(s);
}

/* ---- commands ------------------------------------------------------- */

static json_t *invalid_state(struct control *ctl, const char *what, const char **code,
			     char *message, size_t mlen)
{
	*code = "invalid-state";
	snprintf(message, mlen, "cannot %s: the VM is %s", what,
		 vm_state_name(vm_get_state(ctl->vm)));
	return NULL;
}

static json_t *cmd_status(struct control *ctl, const char **code, char *message, size_t mlen)
{
	struct vm *vm = ctl->vm;

	(void)code;
	(void)message;
	(void)mlen;
	return json_pack("{s:s, s:s, s:i, s:I, s:i, s:I}", "state",
			 vm_state_name(vm_get_state(vm)), "name", vm->cfg.name ? vm->cfg.name : "",
			 "vcpus", (int)vm->nvcpus, "memory", (json_int_t)vm->cfg.memory, "pid",
			 (int)getpid(), "uptime_ms", (json_int_t)vm_uptime_ms(vm));
}

static json_t *cmd_pause(struct control *ctl, const char **code, char *message, size_t mlen)
{
	if (vm_pause(ctl->vm))
		return invalid_state(ctl, "pause", code, message, mlen);
	return json_object();
}

static json_t *cmd_resume(struct control *ctl, const char **code, char *message, size_t mlen)
{
	if (vm_resume(ctl->vm))
		return invalid_state(ctl, "resume", code, message, mlen);
	return json_object();
}

static json_t *cmd_shutdown(struct control *ctl, const char **code, char *message, size_t mlen)
{
	if (vm_get_state(ctl->vm) != VM_STATE_RUNNING)
		return invalid_state(ctl, "press the power button", code, message, mlen);
	if (vm_press_power_button(ctl->vm)) {
		*code = "unsupported";
		snprintf(message, mlen, "this VM has no ACPI power button; use poweroff");
		return NULL;
	}
	return json_object();
}

static json_t *cmd_stop_ok(struct control *ctl, const char *what, const char **code,
			   char *message, size_t mlen)
{
	enum vm_state s = vm_get_state(ctl->vm);
	bool poweroff = !strcmp(what, "power off");

	if (s != VM_STATE_RUNNING && s != VM_STATE_PAUSED &&
	    !(poweroff && s == VM_STATE_RESETTING))
		return invalid_state(ctl, what, code, message, mlen);
	return json_object();
}

static json_t *cmd_poweroff(struct control *ctl, const char **code, char *message, size_t mlen)
{
	return cmd_stop_ok(ctl, "power off", code, message, mlen);
}

static void after_poweroff(struct control *ctl)
{
	vm_request_stop(ctl->vm, VM_STOP_POWEROFF, "control");
}

static json_t *cmd_reset(struct control *ctl, const char **code, char *message, size_t mlen)
{
	return cmd_stop_ok(ctl, "reset", code, message, mlen);
}

static void after_reset(struct control *ctl)
{
	vm_request_stop(ctl->vm, VM_STOP_RESET, "control");
}

/* {"cmd":"save","path":DIR}: pauses the VM (if it runs), writes its
 * memory and state into DIR (vm_state.h), and then the worker ends with
 * exit status 5 ("saved"). A failed save changes nothing: the VM goes on
 * as it was. */
static json_t *cmd_save(struct control *ctl, const char **code, char *message, size_t mlen)
{
	struct vm *vm = ctl->vm;
	const char *dir = json_string_value(json_object_get(ctl->msg, "path"));
	struct vm_save_stats st;
	enum vm_state s = vm_get_state(vm);
	char err[256];
	bool paused_here = false;
	int ret;

	if (!dir || !*dir) {
		*code = "bad-request";
		snprintf(message, mlen, "save needs \"path\": the directory to save into");
		return NULL;
	}
	/* The jail has no host directory to write to and its filters no
	 * file-creating calls (docs/state.md: the daemon will pass one). */
	if (seccomp_armed()) {
		*code = "unsupported";
		snprintf(message, mlen, "a worker in --jail cannot save yet: it sees no host "
			 "directory; run it without --jail to save");
		return NULL;
	}
	if (s == VM_STATE_RUNNING) {
		if (vm_pause(vm))
			return invalid_state(ctl, "save", code, message, mlen);
		paused_here = true;
	} else if (s != VM_STATE_PAUSED) {
		return invalid_state(ctl, "save", code, message, mlen);
	}
	ret = vm_state_save(vm, dir, &st, err, sizeof(err));
	if (ret) {
		if (paused_here)
			vm_resume(vm);
		*code = "failed";
		snprintf(message, mlen, "%s", err);
		return NULL;
	}
	return json_pack("{s:s, s:I, s:I, s:I, s:I}", "path", dir, "memory_bytes",
			 (json_int_t)st.memory_bytes, "data_bytes", (json_int_t)st.data_bytes,
			 "state_bytes", (json_int_t)st.state_bytes, "elapsed_us",
			 (json_int_t)st.elapsed_us);
}

static void after_save(struct control *ctl)
{
	vm_request_stop(ctl->vm, VM_STOP_SAVED, "control");
}

#ifdef CLOISON_TEST_HOOKS
/* Test builds only (meson -Dtest_hooks): proofs for the sandbox tests. */

/* execve is on no seccomp list: a jailed worker dies here of SIGSYS. An
 * unjailed one gets ENOENT (the path does not exist) and answers. */
static json_t *cmd_debug_execve(struct control *ctl, const char **code, char *message,
				size_t mlen)
{
	static char *const argv[] = { "cloison-debug-execve", NULL };

	(void)ctl;
	execve("/nonexistent/cloison-debug-execve", argv, argv + 1);
	*code = "failed";
	snprintf(message, mlen, "execve: %s", strerror(errno));
	return NULL;
}

/* Opens a host file every Linux host has; the jail's root has no such
 * path. Answers whether it opened and why not. */
static json_t *cmd_debug_open_host(struct control *ctl, const char **code, char *message,
				   size_t mlen)
{
	const char *path = "/etc/passwd";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int e = errno;

	(void)ctl;
	(void)code;
	(void)message;
	(void)mlen;
	if (fd >= 0)
		close(fd);
	return json_pack("{s:s, s:b, s:s?}", "path", path, "opened", fd >= 0, "error",
			 fd >= 0 ? NULL : strerror(e));
}
#endif

static const struct command commands[] = {
	{ "status", cmd_status, NULL },
	{ "pause", cmd_pause, NULL },
	{ "resume", cmd_resume, NULL },
	{ "shutdown", cmd_shutdown, NULL },
	{ "poweroff", cmd_poweroff, after_poweroff },
	{ "reset", cmd_reset, after_reset },
	{ "save", cmd_save, after_save },
#ifdef CLOISON_TEST_HOOKS
	{ "debug-execve", cmd_debug_execve, NULL },
	{ "debug-open-host", cmd_debug_open_host, NULL },
#endif
	{ NULL, NULL, NULL },
};

/* ---- parsing and dispatch ------------------------------------------- */

/* 0 with req filled, or -EINVAL with message set. */
static int parse_request(json_t *msg, struct request *req, char *message, size_t mlen)
{
	json_t *cmd;

	req->id = NULL;
	req->cmd = NULL;
	if (!json_is_object(msg)) {
		snprintf(message, mlen, "a request must be a JSON object");
		return -EINVAL;
	}
	req->id = json_object_get(msg, "id");
	cmd = json_object_get(msg, "cmd");
	if (!cmd) {
		snprintf(message, mlen, "the request has no \"cmd\"");
		return -EINVAL;
	}
	if (!json_is_string(cmd)) {
		snprintf(message, mlen, "\"cmd\" must be a string");
		return -EINVAL;
	}
	req->cmd = json_string_value(cmd);
	return 0;
}

static void handle_line(struct client *c, const char *line, size_t len)
{
	char message[256];
	const char *code = NULL;
	const struct command *cmd;
	struct request req;
	json_error_t jerr;
	json_t *msg, *result;

	msg = json_loadb(line, len, 0, &jerr);
	if (!msg) {
		snprintf(message, sizeof(message), "not JSON: %s", jerr.text);
		reply(c, NULL, NULL, "bad-request", message);
		return;
	}
	if (parse_request(msg, &req, message, sizeof(message))) {
		reply(c, req.id, NULL, "bad-request", message);
		json_decref(msg);
		return;
	}
	for (cmd = commands; cmd->name && strcmp(cmd->name, req.cmd); cmd++)
		;
	if (!cmd->name) {
		char known[200] = "";
		for (const struct command *k = commands; k->name; k++) {
			strcat(known, k == commands ? "" : ", ");
			strcat(known, k->name);
		}
		snprintf(message, sizeof(message), "unknown command '%.64s'; known: %s", req.cmd,
			 known);
		reply(c, req.id, NULL, "unknown-command", message);
		json_decref(msg);
		return;
	}
	c->ctl->msg = msg;
	result = cmd->run(c->ctl, &code, message, sizeof(message));
	c->ctl->msg = NULL;
	reply(c, req.id, result, code, message);
	json_decref(msg);
	if (result && cmd->after)
		cmd->after(c->ctl);
}

static void free_client(struct control *ctl, struct client *c)
{
	pthread_mutex_lock(&ctl->lock);
	for (unsigned i = 0; i < MAX_CLIENTS; i++)
		if (ctl->clients[i] == c)
			ctl->clients[i] = NULL;
	pthread_mutex_unlock(&ctl->lock);
	evloop_del_fd(ctl->loop, c->fd);
	close(c->fd);
	free(c);
}

static void on_client(void *opaque, uint32_t events)
{
	struct client *c = opaque;
	ssize_t n;
	char *nl;

	(void)events;
	n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		free_client(c->ctl, c);
		return;
	}
	c->len += (size_t)n;
	while ((nl = memchr(c->buf, '\n', c->len))) {
		size_t linelen = (size_t)(nl - c->buf);
		if (linelen && c->buf[linelen - 1] == '\r')
			linelen--;
		if (linelen)
			handle_line(c, c->buf, linelen);
		c->len -= (size_t)(nl + 1 - c->buf);
		memmove(c->buf, nl + 1, c->len);
	}
	if (c->len == sizeof(c->buf)) {
		reply(c, NULL, NULL, "bad-request", "request line longer than 64 KiB");
		free_client(c->ctl, c);
	}
}

static void on_accept(void *opaque, uint32_t events)
{
	struct control *ctl = opaque;
	struct client *c;
	unsigned slot;
	int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	(void)events;
	if (fd < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->ctl = ctl;
	c->fd = fd;
	pthread_mutex_lock(&ctl->lock);
	for (slot = 0; slot < MAX_CLIENTS && ctl->clients[slot]; slot++)
		;
	if (slot < MAX_CLIENTS)
		ctl->clients[slot] = c;
	pthread_mutex_unlock(&ctl->lock);
	if (slot == MAX_CLIENTS) {
		log_warn("control socket: more than %d clients, refusing one", MAX_CLIENTS);
		close(fd);
		free(c);
		return;
	}
	if (evloop_add_fd(ctl->loop, fd, EPOLLIN, on_client, c))
		free_client(ctl, c);
}

/* ---- set up --------------------------------------------------------- */

static int fill_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		snprintf(err, errlen, "--control: the path '%s' is too long (at most %zu bytes)",
			 path, sizeof(sa->sun_path) - 1);
		return -EINVAL;
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

int control_check_path(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd, ret = fill_addr(path, &sa, err, errlen);

	if (ret)
		return ret;
	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "--control: '%s' exists and is not a socket", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	ret = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (ret == 0) {
		snprintf(err, errlen,
			 "--control: '%s' is in use by a running process (another cloison-vmm?)",
			 path);
		return -EADDRINUSE;
	}
	return 0;
}

int control_create(const char *path, struct vm *vm, struct control **out, char *err,
		   size_t errlen)
{
	struct sockaddr_un sa;
	struct control *ctl;
	int ret = control_check_path(path, err, errlen);

	if (ret)
		return ret;
	fill_addr(path, &sa, err, errlen);
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	pthread_mutex_init(&ctl->lock, NULL);
	ctl->vm = vm;
	ctl->loop = vm->loop;
	ctl->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (ctl->listen_fd < 0)
		goto fail_errno;
	unlink(path); /* stale: control_check_path found nobody listening */
	if (bind(ctl->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(ctl->listen_fd, 16) < 0)
		goto fail_errno;
	ctl->path = strdup(path);
	ret = evloop_add_fd(ctl->loop, ctl->listen_fd, EPOLLIN, on_accept, ctl);
	if (ret) {
		snprintf(err, errlen, "--control %s: %s", path, strerror(-ret));
		control_destroy(ctl);
		return ret;
	}
	*out = ctl;
	return 0;
fail_errno:
	ret = -errno;
	snprintf(err, errlen, "--control %s: %s", path, strerror(errno));
	if (ctl->listen_fd >= 0)
		close(ctl->listen_fd);
	free(ctl);
	return ret;
}

void control_destroy(struct control *ctl)
{
	if (!ctl)
		return;
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		if (ctl->clients[i]) {
			close(ctl->clients[i]->fd);
			free(ctl->clients[i]);
		}
	}
	close(ctl->listen_fd);
	if (ctl->path) {
		unlink(ctl->path);
		free(ctl->path);
	}
	pthread_mutex_destroy(&ctl->lock);
	free(ctl);
}
