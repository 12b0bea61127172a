/* The control socket. Each line from a client is parsed once into a
 * struct request, then dispatched through a static command table. Replies
 * and events are written with MSG_DONTWAIT: a client that stops reading is
 * disconnected rather than allowed to stall the VM. Clients are freed only
 * on the event loop thread; other threads just shut a bad one down. */
#include "vmm/control.h"
#include "vmm/irq_stats.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/machine.h"
#include "vmm/seccomp.h"
#include "vmm/state/vm_state.h"
#include "vmm/unixsock.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/devices.h"
#include "vmm/vm_internal.h"

#define MAX_CLIENTS 32
#define LINE_MAX_BYTES (64 * 1024)

struct control;

#define MAX_PASSED_FDS 16

struct client {
	struct control *ctl;
	int fd;
	uint64_t serial; /* tells a later client in the same clients[] entry apart */
	size_t len;
	/* descriptors the client sent (SCM_RIGHTS), oldest first, for the
	 * commands that take files: a jailed worker cannot open paths */
	int fds[MAX_PASSED_FDS];
	unsigned nfds;
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
	struct client *current; /* the client whose request is being run */
	uint64_t next_serial;
	struct deferred *deferred; /* replies that come later (device-remove) */
};

/* A reply that a command sends later, from the event loop: to the client
 * that asked, if it is still connected. */
struct deferred {
	struct control *ctl;
	uint64_t serial;
	json_t *id;
	struct deferred *next;
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

static json_t *status_devices(struct vm *vm)
{
	struct machine_device_info info[32];
	unsigned n = machine_list_devices(vm, info, 32);
	json_t *a = json_array();

	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:i, s:s, s:s, s:b, s:b}", "slot",
						   (int)info[i].slot, "name", info[i].name, "kind",
						   info[i].kind, "hot_added", info[i].hot_added,
						   "releasing", info[i].releasing));
	return a;
}

/* {"msi": N, "lines": {"4": N, ...}}: only the lines raised so far. */
static json_t *status_interrupts(struct vm *vm)
{
	struct irq_stats st;
	json_t *lines = json_object();
	char key[8];

	vm_irq_stats(vm, &st);
	for (unsigned i = 0; i < IRQ_STATS_LINES; i++) {
		if (!st.lines[i])
			continue;
		snprintf(key, sizeof(key), "%u", i);
		json_object_set_new(lines, key, json_integer((json_int_t)st.lines[i]));
	}
	return json_pack("{s:I, s:o}", "msi", (json_int_t)st.msi, "lines", lines);
}

static json_t *cmd_status(struct control *ctl, const char **code, char *message, size_t mlen)
{
	struct vm *vm = ctl->vm;

	(void)code;
	(void)message;
	(void)mlen;
	return json_pack("{s:s, s:s, s:i, s:I, s:i, s:I, s:o, s:o}", "state",
			 vm_state_name(vm_get_state(vm)), "name", vm->cfg.name ? vm->cfg.name : "",
			 "vcpus", (int)vm->nvcpus, "memory", (json_int_t)vm->cfg.memory, "pid",
			 (int)(vm->cfg.host_pid ? vm->cfg.host_pid : getpid()), "uptime_ms", (json_int_t)vm_uptime_ms(vm), "devices",
			 status_devices(vm), "interrupts", status_interrupts(vm));
}

/* ---- deferred replies ---- */

static struct deferred *defer_reply(struct control *ctl)
{
	struct deferred *d = calloc(1, sizeof(*d));
	json_t *id = json_object_get(ctl->msg, "id");

	if (!d)
		return NULL;
	d->ctl = ctl;
	d->serial = ctl->current->serial;
	d->id = id ? json_incref(id) : NULL;
	d->next = ctl->deferred;
	ctl->deferred = d;
	return d;
}

static void deferred_free(struct deferred *d)
{
	struct deferred **p;

	for (p = &d->ctl->deferred; *p && *p != d; p = &(*p)->next)
		;
	if (*p)
		*p = d->next;
	json_decref(d->id);
	free(d);
}

/* Sends the reply (result, or code and message) and frees d. */
static void deferred_finish(struct deferred *d, json_t *result, const char *code,
			    const char *message)
{
	struct control *ctl = d->ctl;
	struct client *c = NULL;

	for (unsigned i = 0; i < MAX_CLIENTS && !c; i++)
		if (ctl->clients[i] && ctl->clients[i]->serial == d->serial)
			c = ctl->clients[i];
	if (c)
		reply(c, d->id, result, code, message);
	else
		json_decref(result);
	deferred_free(d);
}

/* ---- hot add and remove ---- */

/* {"cmd":"device-add","kind":"disk","path":FILE[,"readonly":true]} or
 * {"cmd":"device-add","kind":"net","tap":NAME[,"mac":MAC]}: the device goes
 * into a free hotplug slot and the guest is told; the result names the
 * slot. */
static int device_spec(json_t *msg, const char *kind, char *spec, size_t len, char *message,
		       size_t mlen)
{
	const char *path = json_string_value(json_object_get(msg, "path"));
	const char *tap = json_string_value(json_object_get(msg, "tap"));
	const char *mac = json_string_value(json_object_get(msg, "mac"));
	json_t *ro = json_object_get(msg, "readonly");

	if (!strcmp(kind, "disk")) {
		if (!path || !*path || strchr(path, ',')) {
			snprintf(message, mlen, "a disk needs \"path\": the image file (without ',')");
			return -EINVAL;
		}
		if (ro && !json_is_boolean(ro)) {
			snprintf(message, mlen, "\"readonly\" must be true or false");
			return -EINVAL;
		}
		snprintf(spec, len, "path=%s%s", path, json_is_true(ro) ? ",readonly" : "");
		return 0;
	}
	if (!tap || !*tap || strchr(tap, ',') || (mac && strchr(mac, ','))) {
		snprintf(message, mlen, "a NIC needs \"tap\": the name of an existing tap device "
			 "(and optionally \"mac\")");
		return -EINVAL;
	}
	snprintf(spec, len, "tap=%s%s%s", tap, mac ? ",mac=" : "", mac ? mac : "");
	return 0;
}

static json_t *cmd_device_add(struct control *ctl, const char **code, char *message,
			      size_t mlen)
{
	const char *kind = json_string_value(json_object_get(ctl->msg, "kind"));
	char spec[4200], err[256];
	unsigned slot;
	int ret;

	*code = "bad-request";
	if (!kind || (strcmp(kind, "disk") && strcmp(kind, "net"))) {
		snprintf(message, mlen, "device-add needs \"kind\": \"disk\" or \"net\"");
		return NULL;
	}
	if (device_spec(ctl->msg, kind, spec, sizeof(spec), message, mlen))
		return NULL;
	/* The jail holds no host files and its filters none of the calls a
	 * new backend makes (io_uring set-up, opening a tap): a try would
	 * kill the worker. */
	if (seccomp_armed()) {
		*code = "unsupported";
		snprintf(message, mlen, "a worker in --jail cannot open a new disk or tap: hot add "
			 "needs a worker without --jail");
		return NULL;
	}
	ret = machine_device_add(ctl->vm, kind, spec, &slot, err, sizeof(err));
	if (ret) {
		*code = ret == -ENOSPC ? "no-slot" : ret == -ENOTSUP ? "unsupported" : "bad-request";
		snprintf(message, mlen, "%s", err);
		return NULL;
	}
	return json_pack("{s:i, s:s}", "slot", (int)slot, "kind", kind);
}

static void remove_done(void *opaque, unsigned slot, bool removed)
{
	struct deferred *d = opaque;

	if (removed) {
		deferred_finish(d, json_pack("{s:i, s:b}", "slot", (int)slot, "removed", 1), NULL,
				NULL);
		return;
	}
	deferred_finish(d, json_pack("{s:i, s:b, s:b, s:s}", "slot", (int)slot, "removed", 0,
				     "pending", 1, "message",
				     "the guest has not released the device: it stays attached "
				     "and working until the guest ejects it"),
			NULL, NULL);
}

#define REMOVE_TIMEOUT_MS 10000
#define REMOVE_TIMEOUT_MAX_MS 600000

/* {"cmd":"device-remove","slot":N[,"timeout_ms":T]}: asks the guest to
 * release the device; the reply comes when it has (the device is gone),
 * or after T ms (default 10 s) with "pending": nothing is torn out from
 * under the guest. */
static json_t *cmd_device_remove(struct control *ctl, const char **code, char *message,
				 size_t mlen)
{
	json_t *jslot = json_object_get(ctl->msg, "slot");
	json_t *jtimeout = json_object_get(ctl->msg, "timeout_ms");
	json_int_t slot = json_is_integer(jslot) ? json_integer_value(jslot) : -1;
	json_int_t timeout = jtimeout ? (json_is_integer(jtimeout) ? json_integer_value(jtimeout)
								  : -1)
				      : REMOVE_TIMEOUT_MS;
	struct deferred *d;
	char err[256];
	int ret;

	*code = "bad-request";
	if (slot < 0 || slot > 255) {
		snprintf(message, mlen, "device-remove needs \"slot\": a slot number from "
			 "\"status\" devices");
		return NULL;
	}
	if (timeout < 0 || timeout > REMOVE_TIMEOUT_MAX_MS) {
		snprintf(message, mlen, "\"timeout_ms\" must be 0..%d", REMOVE_TIMEOUT_MAX_MS);
		return NULL;
	}
	d = defer_reply(ctl);
	if (!d) {
		*code = "failed";
		snprintf(message, mlen, "out of memory");
		return NULL;
	}
	ret = machine_device_remove(ctl->vm, (unsigned)slot, (unsigned)timeout, remove_done, d,
				    err, sizeof(err));
	if (ret) {
		deferred_free(d);
		*code = ret == -ENOENT ? "no-device" : ret == -EPERM ? "not-removable"
				     : ret == -EBUSY ? "busy" : "unsupported";
		snprintf(message, mlen, "%s", err);
		return NULL;
	}
	*code = NULL; /* the reply comes later */
	return NULL;
}

/* The n oldest descriptors the current client sent; they are the caller's
 * to close. false (nothing taken) if it sent fewer. */
static bool take_fds(struct control *ctl, unsigned n, int *out)
{
	struct client *c = ctl->current;

	if (!c || c->nfds < n)
		return false;
	memcpy(out, c->fds, n * sizeof(int));
	memmove(c->fds, c->fds + n, (c->nfds - n) * sizeof(int));
	c->nfds -= n;
	return true;
}

#define SWITCH_MAX_FILES 16

/* {"cmd":"disk-switch","disk":N,"files":[TOP, PARENT, ...]} with one
 * descriptor per file sent with it (SCM_RIGHTS, in that order): disk N
 * goes on with that chain while the guest runs (a checkpoint's new child,
 * or what a merge left). The paths name the files in messages; the
 * worker uses the descriptors. */
static json_t *cmd_disk_switch(struct control *ctl, const char **code, char *message,
			       size_t mlen)
{
	json_t *disk = json_object_get(ctl->msg, "disk"), *files = json_object_get(ctl->msg, "files");
	const char *paths[SWITCH_MAX_FILES];
	int fds[SWITCH_MAX_FILES];
	char err[512];
	size_t n = json_array_size(files), i;
	json_t *f;

	*code = "bad-request";
	if (!json_is_integer(disk) || json_integer_value(disk) < 0 ||
	    json_integer_value(disk) > 255 || !json_is_array(files) || !n ||
	    n > SWITCH_MAX_FILES) {
		snprintf(message, mlen, "disk-switch needs \"disk\": the disk's index, and "
			 "\"files\": 1 to %d paths, the new chain top first, each sent as a "
			 "descriptor with the request", SWITCH_MAX_FILES);
		return NULL;
	}
	json_array_foreach(files, i, f) {
		paths[i] = json_string_value(f);
		if (!paths[i] || !*paths[i]) {
			snprintf(message, mlen, "\"files\"[%zu] must be a path", i);
			return NULL;
		}
	}
	if (!take_fds(ctl, (unsigned)n, fds)) {
		snprintf(message, mlen, "disk-switch names %zu files but fewer descriptors came "
			 "with it (send them with SCM_RIGHTS on this connection)", n);
		return NULL;
	}
	int ret = virtio_disk_chain(ctl->vm, (unsigned)json_integer_value(disk), BLK_CHAIN_SWITCH,
				    paths, fds, (unsigned)n, err, sizeof(err));
	for (i = 0; i < n; i++)
		close(fds[i]);
	if (ret) {
		*code = ret == -ENODEV ? "no-device" : ret == -EOPNOTSUPP ? "unsupported" : "failed";
		snprintf(message, mlen, "%s", err);
		return NULL;
	}
	return json_pack("{s:I, s:s}", "disk", json_integer_value(disk), "top", paths[0]);
}

/* {"cmd":"disk-share","disk":N}: before a disk-switch onto a new child of
 * disk N's image, the image is shared (its identity fixed, its lock made
 * shared) so that the child can be made of it while the guest writes. */
static json_t *cmd_disk_share(struct control *ctl, const char **code, char *message,
			      size_t mlen)
{
	json_t *disk = json_object_get(ctl->msg, "disk");
	char err[512];

	*code = "bad-request";
	if (!json_is_integer(disk) || json_integer_value(disk) < 0 ||
	    json_integer_value(disk) > 255) {
		snprintf(message, mlen, "disk-share needs \"disk\": the disk's index");
		return NULL;
	}
	int ret = virtio_disk_chain(ctl->vm, (unsigned)json_integer_value(disk), BLK_CHAIN_SHARE,
				    NULL, NULL, 0, err, sizeof(err));
	if (ret) {
		*code = ret == -ENODEV ? "no-device" : ret == -EOPNOTSUPP ? "unsupported" : "failed";
		snprintf(message, mlen, "%s", err);
		return NULL;
	}
	return json_pack("{s:I}", "disk", json_integer_value(disk));
}

/* {"cmd":"set-link","tap":NAME,"up":bool}: the link of the NIC on that tap
 * goes down or up, and the guest is told (a config-change interrupt). */
static json_t *cmd_set_link(struct control *ctl, const char **code, char *message, size_t mlen)
{
	const char *tap = json_string_value(json_object_get(ctl->msg, "tap"));
	json_t *up = json_object_get(ctl->msg, "up");
	int ret;

	*code = "bad-request";
	if (!tap || !json_is_boolean(up)) {
		snprintf(message, mlen, "set-link needs \"tap\": the NIC's tap, and \"up\": a "
			 "boolean");
		return NULL;
	}
	ret = virtio_devices_set_link(ctl->vm, tap, json_is_true(up));
	if (ret) {
		*code = ret == -ENODEV ? "no-device" : "failed";
		snprintf(message, mlen, ret == -ENODEV ? "no network adapter on tap %s"
						     : "tap %s is gone: its link stays down", tap);
		return NULL;
	}
	return json_pack("{s:s, s:b}", "tap", tap, "up", json_is_true(up));
}

/* The driver's statistics by name: only those it sent. */
static json_t *balloon_stats(const struct balloon_info *in)
{
	static const char *const names[BALLOON_S_NR] = {
		[BALLOON_S_SWAP_IN] = "swap_in",     [BALLOON_S_SWAP_OUT] = "swap_out",
		[BALLOON_S_MAJFLT] = "major_faults", [BALLOON_S_MINFLT] = "minor_faults",
		[BALLOON_S_MEMFREE] = "free",	     [BALLOON_S_MEMTOT] = "total",
		[BALLOON_S_AVAIL] = "available",     [BALLOON_S_CACHES] = "caches",
		[BALLOON_S_HTLB_PGALLOC] = "hugetlb_allocations",
		[BALLOON_S_HTLB_PGFAIL] = "hugetlb_failures",
	};
	json_t *o = json_object();

	for (unsigned i = 0; i < BALLOON_S_NR; i++)
		if (in->stats_present & (1u << i))
			json_object_set_new(o, names[i], json_integer((json_int_t)in->stats[i]));
	return o;
}

/* {"cmd":"balloon"[,"assigned":BYTES]}: dynamic memory. With "assigned",
 * the guest's target becomes BYTES (the balloon takes the rest). The
 * reply is the device's state: memory, target, assigned (what the guest
 * has, by its driver), the driver's last statistics (asking for fresh
 * ones) and the bytes given back. */
static json_t *cmd_balloon(struct control *ctl, const char **code, char *message, size_t mlen)
{
	struct virtio_dev *dev = virtio_devices_balloon(ctl->vm);
	json_t *assigned = json_object_get(ctl->msg, "assigned");
	struct balloon_info in;

	if (!dev) {
		*code = "no-device";
		snprintf(message, mlen, "the VM has no balloon: start it with --balloon on");
		return NULL;
	}
	if (assigned) {
		json_int_t v = json_is_integer(assigned) ? json_integer_value(assigned) : -1;

		if (v < 0 || virtio_balloon_set_target(dev, (uint64_t)v)) {
			*code = "bad-request";
			snprintf(message, mlen, "\"assigned\" must be a number of bytes from 1 MiB "
				 "to the VM's memory (%" PRIu64 ")", ctl->vm->cfg.memory);
			return NULL;
		}
	}
	virtio_balloon_info(dev, &in);
	return json_pack("{s:I, s:I, s:I, s:b, s:o, s:o?, s:I, s:I}", "memory",
			 (json_int_t)in.memory, "target", (json_int_t)in.target, "assigned",
			 (json_int_t)in.assigned, "driver", in.driver, "stats", balloon_stats(&in),
			 "stats_age_ms",
			 in.have_stats ? json_integer((json_int_t)(in.stats_age_ns / 1000000))
				       : NULL,
			 "reported", (json_int_t)in.reported, "discarded", (json_int_t)in.discarded);
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

/* Whether path names dir or something below it (no "..", no "//"). */
static bool path_within(const char *path, const char *dir)
{
	size_t n = dir ? strlen(dir) : 0;

	if (!n || strncmp(path, dir, n) || (path[n] && path[n] != '/') || strstr(path, "/..") ||
	    strstr(path, "//"))
		return false;
	return true;
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
	/* In the jail only the --jail-dir is there to write into. */
	if (seccomp_armed() && !path_within(dir, vm->cfg.jail_dir)) {
		*code = "unsupported";
		snprintf(message, mlen, "this worker runs in --jail and can save only into its "
			 "--jail-dir%s%s", vm->cfg.jail_dir ? " " : " (it has none)",
			 vm->cfg.jail_dir ? vm->cfg.jail_dir : "");
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

/* ioctl is allowed by request number (src/vmm/seccomp.c): TIOCSTI, which
 * pushes bytes into a terminal's input, is on no list, so a jailed worker
 * dies here of SIGSYS. An unjailed one gets EBADF (fd -1) and answers. */
static json_t *cmd_debug_ioctl(struct control *ctl, const char **code, char *message,
			       size_t mlen)
{
	char c = 'x';

	(void)ctl;
	ioctl(-1, TIOCSTI, &c);
	*code = "failed";
	snprintf(message, mlen, "ioctl TIOCSTI: %s", strerror(errno));
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
	{ "device-add", cmd_device_add, NULL },
	{ "device-remove", cmd_device_remove, NULL },
	{ "set-link", cmd_set_link, NULL },
	{ "balloon", cmd_balloon, NULL },
	{ "disk-switch", cmd_disk_switch, NULL },
	{ "disk-share", cmd_disk_share, NULL },
#ifdef CLOISON_TEST_HOOKS
	{ "debug-execve", cmd_debug_execve, NULL },
	{ "debug-open-host", cmd_debug_open_host, NULL },
	{ "debug-ioctl", cmd_debug_ioctl, NULL },
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
	c->ctl->current = c;
	code = "failed";
	result = cmd->run(c->ctl, &code, message, sizeof(message));
	c->ctl->msg = NULL;
	c->ctl->current = NULL;
	if (result || code) /* no result and no code: deferred */
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
	for (unsigned i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	free(c);
}

/* recv with the descriptors that come along (SCM_RIGHTS) queued on c;
 * beyond MAX_PASSED_FDS they are closed. */
static ssize_t recv_with_fds(struct client *c)
{
	union {
		char buf[CMSG_SPACE(MAX_PASSED_FDS * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = c->buf + c->len, .iov_len = sizeof(c->buf) - c->len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf) };
	ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);

	if (n < 0)
		return n;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int fdv[MAX_PASSED_FDS];
		memcpy(fdv, CMSG_DATA(cm), MIN(k, (size_t)MAX_PASSED_FDS) * sizeof(int));
		for (size_t i = 0; i < k && i < MAX_PASSED_FDS; i++) {
			if (c->nfds < MAX_PASSED_FDS)
				c->fds[c->nfds++] = fdv[i];
			else
				close(fdv[i]);
		}
	}
	return n;
}

static void on_client(void *opaque, uint32_t events)
{
	struct client *c = opaque;
	ssize_t n;
	char *nl;

	(void)events;
	n = recv_with_fds(c);
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
	c->serial = ++ctl->next_serial;
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
	while (ctl->deferred)
		deferred_free(ctl->deferred);
	close(ctl->listen_fd);
	if (ctl->path) {
		unlink(ctl->path);
		free(ctl->path);
	}
	pthread_mutex_destroy(&ctl->lock);
	free(ctl);
}
