/* libFuzzer target for virtio-console (src/vmm/virtio/console.c): its
 * receive and transmit queues built by the fuzz input in a small guest RAM
 * (fuzz_virtio.h), with the host side a real unix socket in a private
 * directory (the worker listens, clients come and go) or a file
 * (/dev/null). Device operations: a client connects (the newest one wins),
 * sends bytes, reads what the guest wrote, or hangs up. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_virtio.h"
#include "vmm/virtio/console.h"
#include "vmm/virtio/virtio.h"

#define MAX_CLIENTS 3

static int clients[MAX_CLIENTS] = { -1, -1, -1 };
static bool connected; /* a client connected during this input */
static struct console_spec spec;

/* Key: bit 0 of the set-up byte (a file, or the unix socket). */
static unsigned setup(struct fuzz_in *in)
{
	return fin_u8(in) & 1;
}

static void fill_spec(unsigned key)
{
	memset(&spec, 0, sizeof(spec));
	if (key) {
		spec.kind = CONSOLE_FILE;
		snprintf(spec.path, sizeof(spec.path), "/dev/null");
	} else {
		spec.kind = CONSOLE_UNIX;
		snprintf(spec.path, sizeof(spec.path), "%s/console.sock", fuzz_tmpdir());
	}
}

static int create(struct vm *vm, unsigned key, struct virtio_dev **out)
{
	char err[256];

	fill_spec(key);
	return virtio_console_create(vm, &spec, 0, out, err, sizeof(err));
}

static void begin(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	fill_spec(key);
	connected = false;
}

static void op(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in)
{
	uint8_t what = fin_u8(in), buf[1024];
	unsigned c = (what >> 2) % MAX_CLIENTS;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;

	switch (what & 3) {
	case 0: /* connect */
		if (spec.kind != CONSOLE_UNIX || clients[c] >= 0)
			break;
		clients[c] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", spec.path);
		if (clients[c] >= 0 && connect(clients[c], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			close(clients[c]);
			clients[c] = -1;
		}
		connected |= clients[c] >= 0;
		break;
	case 1: /* send */
		len = fin_u16(in) % sizeof(buf);
		len = len > in->n ? in->n : len;
		memcpy(buf, in->p, len);
		in->p += len;
		in->n -= len;
		if (clients[c] >= 0 && send(clients[c], buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			break;
		break;
	case 2: /* read */
		if (clients[c] >= 0)
			while (recv(clients[c], buf, sizeof(buf), MSG_DONTWAIT) > 0)
				;
		break;
	default: /* hang up */
		if (clients[c] >= 0)
			close(clients[c]);
		clients[c] = -1;
		break;
	}
	fuzz_loop_run(vm->loop, 4);
}

static void cleanup(unsigned key)
{
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		if (clients[i] >= 0)
			close(clients[i]);
		clients[i] = -1;
	}
}

/* A device that had a client (accepted or still in the listen backlog)
 * is not what a new one is: it is made again. */
static bool end(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	return !connected;
}

static const struct fuzz_virtio_target target = { .setup = setup, .create = create,
						   .begin = begin, .op = op, .end = end,
						   .cleanup = cleanup };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_virtio_run(data, size, &target);
}
