/* libFuzzer target for the worker's control socket (src/vmm/control.c):
 * what clients send on it, JSON lines in any chunking, through the real
 * socket code. control_create() listens in a private directory once; each
 * input connects up to three clients (the first input byte: how many),
 * sends the rest of the input split among them at fuzz-chosen points,
 * runs the event loop (fuzz_loop.c) and reads every reply. Checked: each
 * reply is one line of a JSON object with a boolean "ok" (and "error"
 * with "code" and "message" strings when false) or an event, and the worker lets go
 * of clients that hang up.
 *
 * The VM is a stand-in (the vm_* calls control.c makes, and machine.h's
 * hot-plug calls, are defined here):
 * its state follows pause, resume and the stop requests, as the worker's
 * would, so every command's success and refusal paths run; "save" writes
 * nothing; "balloon" has a stand-in device. (The test-build debug commands are not compiled in here.) */
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/evloop.h"
#include "fuzz_loop.h"
#include "vmm/control.h"
#include "vmm/irq_stats.h"
#include "vmm/machine.h"
#include "vmm/seccomp.h"
#include "vmm/state/vm_state.h"
#include "vmm/virtio/balloon.h"
#include "vmm/virtio/devices.h"
#include "vmm/vm_internal.h"

#define NCLIENTS 3

static struct vm vm;

enum vm_state vm_get_state(struct vm *v)
{
	return v->state;
}

const char *vm_state_name(enum vm_state s)
{
	static const char *const names[] = { "created", "running", "paused", "shutting-down",
					     "resetting" };
	return (unsigned)s < 5 ? names[s] : "?";
}

uint64_t vm_uptime_ms(struct vm *v)
{
	return 1234;
}

void vm_irq_stats(struct vm *v, struct irq_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->msi = 7;
	out->lines[4] = 3;
}

int vm_pause(struct vm *v)
{
	if (v->state != VM_STATE_RUNNING)
		return -EBUSY;
	v->state = VM_STATE_PAUSED;
	return 0;
}

int vm_resume(struct vm *v)
{
	if (v->state != VM_STATE_PAUSED)
		return -EBUSY;
	v->state = VM_STATE_RUNNING;
	return 0;
}

int vm_press_power_button(struct vm *v)
{
	return v->cfg.no_reboot ? -ENODEV : 0; /* no_reboot: "no ACPI" here */
}

/* Saving writes nothing here: it succeeds or fails as the input's path
 * says, so both replies and the stop after a save run. */
int vm_state_save(struct vm *v, const char *dir, struct vm_save_stats *stats, char *err,
		  size_t errlen)
{
	if (dir[0] != '/') {
		snprintf(err, errlen, "fuzz: '%s' is not an absolute path", dir);
		return -EINVAL;
	}
	memset(stats, 0, sizeof(*stats));
	stats->memory_bytes = 64 << 20;
	return 0;
}

/* Hot-plug (machine.h): two devices; an add succeeds on slot 5 when the
 * spec names a path; a remove of slot 3 is pending until the harness
 * finishes it (the guest ejected it, or the wait timed out), 1 is a
 * command-line device, 2 has a remove pending already. */
static void (*remove_cb)(void *opaque, unsigned slot, bool removed);
static void *remove_opaque;

unsigned machine_list_devices(struct vm *v, struct machine_device_info *out, unsigned max)
{
	static const struct machine_device_info devs[] = {
		{ .slot = 1, .name = "virtio-blk0", .kind = "disk" },
		{ .slot = 3, .name = "virtio-net0", .kind = "net", .hot_added = true },
	};
	unsigned n = max < 2 ? max : 2;

	memcpy(out, devs, n * sizeof(devs[0]));
	return n;
}

int machine_device_add(struct vm *v, const char *kind, const char *spec, unsigned *slot,
		       char *err, size_t errlen)
{
	if (!strstr(spec, "path=") && !strstr(spec, "tap=")) {
		snprintf(err, errlen, "fuzz: '%s' names nothing to open", spec);
		return -EINVAL;
	}
	*slot = 5;
	return 0;
}

/* set-link: the one NIC is on tap "tap0". */
int virtio_devices_set_link(struct vm *v, const char *tap, bool up)
{
	(void)v;
	(void)up;
	return strcmp(tap, "tap0") ? -ENODEV : 0;
}

/* balloon: a 256 MiB VM's balloon whose driver holds what it is asked */
#define FAKE_RAM (256ULL << 20)
static uint64_t fake_target = FAKE_RAM;
static char fake_balloon;

struct virtio_dev *virtio_devices_balloon(struct vm *v)
{
	(void)v;
	return (struct virtio_dev *)(void *)&fake_balloon;
}

int virtio_balloon_set_target(struct virtio_dev *vdev, uint64_t assigned)
{
	assert(vdev == (struct virtio_dev *)(void *)&fake_balloon);
	if (assigned < (1ULL << 20) || assigned > FAKE_RAM)
		return -EINVAL;
	fake_target = assigned & ~4095ULL;
	return 0;
}

void virtio_balloon_info(struct virtio_dev *vdev, struct balloon_info *info)
{
	assert(vdev == (struct virtio_dev *)(void *)&fake_balloon);
	memset(info, 0, sizeof(*info));
	info->memory = FAKE_RAM;
	info->target = info->assigned = fake_target;
	info->driver = true;
	info->have_stats = fake_target < FAKE_RAM;
	info->stats_present = 1u << BALLOON_S_MEMTOT;
	info->stats[BALLOON_S_MEMTOT] = FAKE_RAM;
	info->discarded = FAKE_RAM - fake_target;
}

/* disk-switch and disk-share: disk 0 exists; the descriptors (none come
 * through the fuzzer's pipe) are never used */
int virtio_disk_chain(struct vm *v, unsigned index, enum blk_chain_op op,
		      const char *const *paths, const int *fds, unsigned n, char *err, size_t errlen)
{
	(void)v;
	(void)op;
	(void)fds;
	for (unsigned i = 0; i < n; i++)
		if (!paths[i][0])
			return -EINVAL;
	if (index) {
		snprintf(err, errlen, "fuzz: no disk %u", index);
		return -ENODEV;
	}
	return 0;
}

int machine_device_remove(struct vm *v, unsigned slot, unsigned timeout_ms,
			  void (*done)(void *opaque, unsigned slot, bool removed), void *opaque,
			  char *err, size_t errlen)
{
	if (slot != 1 && slot != 2 && slot != 3) {
		snprintf(err, errlen, "fuzz: no device in slot %u", slot);
		return -ENOENT;
	}
	if (slot == 1 || slot == 2 || remove_cb) {
		snprintf(err, errlen, "fuzz: slot %u cannot go now", slot);
		return slot == 1 ? -EPERM : -EBUSY;
	}
	remove_cb = done;
	remove_opaque = opaque;
	return 0;
}

/* The guest ejects the device (or the wait ends): the deferred reply. */
static void finish_remove(bool removed)
{
	void (*cb)(void *, unsigned, bool) = remove_cb;

	remove_cb = NULL;
	if (cb)
		cb(remove_opaque, 3, removed);
}

/* No sandbox in the harness: save goes on to vm_state_save above. */
int seccomp_armed(void)
{
	return 0;
}

void vm_request_stop(struct vm *v, enum vm_stop_reason reason, const char *detail)
{
	v->state = reason == VM_STOP_RESET ? VM_STATE_RESETTING : VM_STATE_SHUTTING_DOWN;
}

/* Every complete line read so far must be a well-formed reply. */
static void check_replies(char *buf, size_t *len)
{
	char *nl;

	while ((nl = memchr(buf, '\n', *len))) {
		size_t n = (size_t)(nl - buf);
		json_error_t e;
		json_t *o = json_loadb(buf, n, 0, &e), *ok, *err;

		if (!o || !json_is_object(o)) {
			fprintf(stderr, "fuzz: a reply that is not a JSON object: %.*s\n", (int)n,
				buf);
			abort();
		}
		ok = json_object_get(o, "ok");
		assert(json_is_boolean(ok) || json_is_string(json_object_get(o, "event")));
		if (json_is_false(ok)) {
			err = json_object_get(o, "error");
			assert(json_is_string(json_object_get(err, "code")));
			assert(json_is_string(json_object_get(err, "message")));
		}
		json_decref(o);
		*len -= n + 1;
		memmove(buf, nl + 1, *len);
	}
}

static void drain(int fd, char *buf, size_t *len, size_t cap)
{
	ssize_t n;

	while (*len < cap && (n = recv(fd, buf + *len, cap - *len, MSG_DONTWAIT)) > 0) {
		*len += (size_t)n;
		check_replies(buf, len);
	}
	if (*len == cap)
		*len = 0; /* one over-long line: the next ones are checked */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct control *ctl;
	static struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static char rbuf[NCLIENTS][8192];
	size_t rlen[NCLIENTS] = { 0 };
	int fds[NCLIENTS] = { -1, -1, -1 };
	struct fuzz_in in = { data, size };
	uint8_t setup;
	unsigned n;

	if (!ctl) {
		char err[256];

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/control.sock", fuzz_tmpdir());
		if (evloop_create(&vm.loop) ||
		    control_create(sa.sun_path, &vm, &ctl, err, sizeof(err))) {
			fprintf(stderr, "fuzz: %s\n", err);
			abort();
		}
		vm.cfg.name = "fuzz";
		vm.cfg.memory = 64 << 20;
		vm.nvcpus = 1;
	}
	setup = fin_u8(&in);
	vm.state = (enum vm_state)(setup % 5);
	vm.cfg.no_reboot = setup & 0x80;
	n = 1 + (setup >> 4) % NCLIENTS;
	for (unsigned i = 0; i < n; i++) {
		fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
			abort();
	}
	fuzz_loop_run(vm.loop, 4); /* accept them */
	/* Chunks: a 2-byte header (client, length) then the bytes; bit 7 of
	 * the client byte sends 64 KiB without a newline instead (a line
	 * longer than the worker takes). */
	while (in.n) {
		uint8_t cb = fin_u8(&in);
		unsigned c = (cb & 0x7f) % n;
		size_t len = fin_u8(&in) * 16 + 1;

		if (cb & 0x80) {
			static char filler[64 * 1024 + 1];

			memset(filler, 'x', sizeof(filler));
			if (send(fds[c], filler, sizeof(filler), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
			    errno != EAGAIN)
				break;
			fuzz_loop_run(vm.loop, 16);
			drain(fds[c], rbuf[c], &rlen[c], sizeof(rbuf[c]));
			continue;
		}
		len = len > in.n ? in.n : len;
		if (send(fds[c], in.p, len, MSG_NOSIGNAL) < 0)
			break;
		in.p += len;
		in.n -= len;
		fuzz_loop_run(vm.loop, 4);
		for (unsigned i = 0; i < n; i++)
			drain(fds[i], rbuf[i], &rlen[i], sizeof(rbuf[i]));
	}
	finish_remove(setup & 8);
	fuzz_loop_run(vm.loop, 4);
	control_broadcast(ctl, "{\"event\":\"fuzz\"}");
	for (unsigned i = 0; i < n; i++) {
		drain(fds[i], rbuf[i], &rlen[i], sizeof(rbuf[i]));
		close(fds[i]);
	}
	fuzz_loop_run(vm.loop, 4); /* the worker sees them go */
	if (fuzz_loop_count(vm.loop) != 1) {
		fprintf(stderr, "fuzz: %u fds watched, only the listening socket should be\n",
			fuzz_loop_count(vm.loop));
		abort();
	}
	return 0;
}
