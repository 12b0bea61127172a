/* libFuzzer target for virtio-vsock (src/vmm/virtio/vsock.c): its receive,
 * transmit and event queues built by the fuzz input in a small guest RAM
 * (fuzz_virtio.h), packets whose headers the input writes, and the host
 * side real unix sockets in a private directory: host clients that
 * connect and send "CONNECT <port>\n" (or anything else), send and read
 * bytes and hang up; listeners on PATH_<port> for the guest's
 * connections; and a save and restore of the device's record.
 *
 * Set-up byte: the key; the guest CID is 3 + key (key = byte % 4). Device operations (one
 * byte `what`, then arguments):
 *   what & 7 = 0  client (what >> 3) % 3 connects, sends CONNECT u16
 *              1  client sends u16 length, then that many bytes
 *              2  client reads what is there
 *              3  client hangs up
 *              4  listener (what >> 3) % 2 on port 1000 + that index:
 *                 on if off; accepts what waits (up to 3 clients)
 *              5  listener off
 *              6  save and restore the device's own record
 *              7  run the loop */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_virtio.h"
#include "vmm/state/record.h"
#include "vmm/virtio/virtio.h"
#include "vmm/virtio/vsock.h"

#define MAX_CLIENTS 3
#define MAX_LISTENERS 2

static int clients[MAX_CLIENTS] = { -1, -1, -1 };
static int accepted[MAX_CLIENTS] = { -1, -1, -1 };
static int listeners[MAX_LISTENERS] = { -1, -1 };
static struct vsock_spec spec;
static bool connected; /* a host client connected during this input */

static unsigned setup(struct fuzz_in *in)
{
	return fin_u8(in) % 4;
}

static void fill_spec(unsigned key)
{
	memset(&spec, 0, sizeof(spec));
	spec.cid = 3 + key;
	snprintf(spec.path, sizeof(spec.path), "%s/v%u.sock", fuzz_tmpdir(), key);
}

static int create(struct vm *vm, unsigned key, struct virtio_dev **out)
{
	char err[256];

	fill_spec(key);
	return virtio_vsock_create(vm, &spec, out, err, sizeof(err));
}

static void begin(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	fill_spec(key);
	connected = false;
}

static void addr_of(struct sockaddr_un *sa, int port)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (port < 0)
		snprintf(sa->sun_path, sizeof(sa->sun_path), "%s", spec.path);
	else
		snprintf(sa->sun_path, sizeof(sa->sun_path), "%s_%d", spec.path, port);
}

static void client_connect(unsigned c, uint16_t port)
{
	struct sockaddr_un sa;
	char line[32];
	int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);

	if (clients[c] >= 0)
		return;
	connected = true;
	addr_of(&sa, -1);
	clients[c] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (clients[c] < 0)
		return;
	if (connect(clients[c], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(clients[c]);
		clients[c] = -1;
		return;
	}
	if (send(clients[c], line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		return;
}

static void listener_on(unsigned l)
{
	struct sockaddr_un sa;

	if (listeners[l] < 0) {
		addr_of(&sa, 1000 + (int)l);
		unlink(sa.sun_path);
		listeners[l] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (listeners[l] >= 0 && (bind(listeners[l], (struct sockaddr *)&sa, sizeof(sa)) ||
					  listen(listeners[l], 4))) {
			close(listeners[l]);
			listeners[l] = -1;
		}
		return;
	}
	for (unsigned i = 0; i < MAX_CLIENTS; i++)
		if (accepted[i] < 0)
			accepted[i] = accept4(listeners[l], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static void listener_off(unsigned l)
{
	struct sockaddr_un sa;

	if (listeners[l] < 0)
		return;
	close(listeners[l]);
	listeners[l] = -1;
	addr_of(&sa, 1000 + (int)l);
	unlink(sa.sun_path);
}

static void save_restore(struct virtio_dev *vdev)
{
	char err[256];

	fuzz_virtio_save_restore(vdev, virtio_vsock_save, virtio_vsock_restore, err, sizeof(err));
}

/* A client fd: a host client that connected, or one a listener took. */
static int *client_slot(unsigned what)
{
	unsigned i = (what >> 3) % (2 * MAX_CLIENTS);

	return i < MAX_CLIENTS ? &clients[i] : &accepted[i - MAX_CLIENTS];
}

static void op(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in)
{
	uint8_t what = fin_u8(in), buf[1024];
	int *fd = client_slot(what);
	size_t len;

	switch (what & 7) {
	case 0:
		client_connect((what >> 3) % MAX_CLIENTS, fin_u16(in));
		break;
	case 1:
		len = fin_u16(in) % sizeof(buf);
		len = len > in->n ? in->n : len;
		memcpy(buf, in->p, len);
		in->p += len;
		in->n -= len;
		if (*fd >= 0 && send(*fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			break;
		break;
	case 2:
		if (*fd >= 0)
			while (recv(*fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
				;
		break;
	case 3:
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		break;
	case 4:
		listener_on((what >> 3) % MAX_LISTENERS);
		break;
	case 5:
		listener_off((what >> 3) % MAX_LISTENERS);
		break;
	case 6:
		save_restore(vdev);
		break;
	default:
		break;
	}
	fuzz_loop_run(vm->loop, 4);
}

static void close_all(void)
{
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		if (clients[i] >= 0)
			close(clients[i]);
		if (accepted[i] >= 0)
			close(accepted[i]);
		clients[i] = accepted[i] = -1;
	}
	for (unsigned i = 0; i < MAX_LISTENERS; i++)
		listener_off(i);
}

static void cleanup(unsigned key)
{
	close_all();
}

/* The guest's connections go with the device's reset; the host's
 * sockets are closed here. A device that had a host client (maybe still
 * in its listen backlog) is made again. */
static bool end(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	close_all();
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
