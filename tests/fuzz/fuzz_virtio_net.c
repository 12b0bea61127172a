/* libFuzzer target for virtio-net (src/vmm/virtio/net.c): receive and
 * transmit queues built by the fuzz input in a small guest RAM
 * (fuzz_virtio.h), virtio-net headers and frames in both directions.
 *
 * The "tap" is one end of a non-blocking SOCK_SEQPACKET socketpair (frame
 * boundaries kept, like a tap's reads and writes); tap_adopt_fd() and
 * tap_set_offload() are defined here in place of src/net/tap.c's. Device
 * operations: inject a frame (what the host sends the guest), read what
 * the guest sent, fill the socket until it would block (EAGAIN, then
 * EPOLLOUT), or close the host end (the tap going away).
 *
 * (net.c has no control queue: VIRTIO_NET_F_CTRL_VQ is not offered, so
 * there is nothing of it to fuzz.) */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_virtio.h"
#include "net/tap.h"
#include "vmm/virtio/net.h"
#include "vmm/virtio/virtio.h"

static int peers[FV_MAX_KEYS] = { -1, -1, -1, -1, -1, -1, -1, -1 }; /* the host's ends */
static int taps[FV_MAX_KEYS] = { -1, -1, -1, -1, -1, -1, -1, -1 };  /* the device's */
static int peer = -1;   /* this input's (peers[cur]) */
static unsigned cur;
static bool dirty;      /* the socket was filled, or closed: make the device again */

int tap_open(const char *name, int vnet_hdr_len, char ifname[IFNAMSIZ])
{
	return -EPERM;
}

int tap_adopt_fd(int fd, int vnet_hdr_len, char ifname[IFNAMSIZ])
{
	snprintf(ifname, IFNAMSIZ, "fuzztap%d", fd);
	return 0;
}

int tap_set_offload(int fd, unsigned offloads)
{
	return 0;
}

int tap_set_up(const char *ifname, bool up)
{
	return 0;
}

/* Key: bits 0-1 of the set-up byte (a small socket buffer, a MAC). */
static unsigned setup(struct fuzz_in *in)
{
	return fin_u8(in) & 3;
}

static int create(struct vm *vm, unsigned key, struct virtio_dev **out)
{
	struct net_spec spec = { .fd = -1 };
	uint8_t setup = (uint8_t)key;
	char err[256];
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	/* A small buffer so the guest can fill it. */
	if (setup & 1) {
		int sz = 4096;

		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	}
	spec.fd = sv[0];
	if (setup & 2) {
		memcpy(spec.mac, "\x52\x54\x00\xab\xcd\xef", 6);
		spec.has_mac = true;
	}
	peers[key] = sv[1];
	taps[key] = sv[0];
	if (virtio_net_create(vm, &spec, 0, out, err, sizeof(err))) {
		close(sv[0]);
		taps[key] = -1;
		return -EIO;
	}
	return 0;
}

static void begin(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	cur = key;
	peer = peers[key];
	dirty = false;
}

/* Frames either way that nobody read are dropped, as a new socketpair
 * has none; a filled or closed socket is not worth emptying: the device
 * is made again. */
static bool end(struct vm *vm, struct virtio_dev *vdev, unsigned key)
{
	uint8_t buf[2048];

	if (dirty || peer < 0)
		return false;
	while (recv(peer, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		;
	while (recv(taps[key], buf, sizeof(buf), MSG_DONTWAIT) >= 0)
		;
	return true;
}

static void op(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in)
{
	uint8_t what = fin_u8(in), buf[2048];
	size_t len;

	if (peer < 0)
		return;
	switch (what & 3) {
	case 0: /* a frame from the host: a header and bytes, any length */
		len = fin_u16(in) % sizeof(buf);
		len = len > in->n ? in->n : len;
		memcpy(buf, in->p, len);
		in->p += len;
		in->n -= len;
		if (send(peer, buf, len, MSG_DONTWAIT) < 0 && errno != EAGAIN)
			break;
		fuzz_loop_run(vm->loop, 4);
		break;
	case 1: /* the host reads what the guest sent */
		while (recv(peer, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
			;
		fuzz_loop_run(vm->loop, 4);
		break;
	case 2: /* the host stops reading: fill the socket */
		dirty = true;
		memset(buf, 0, 64);
		while (send(peer, buf, 64, MSG_DONTWAIT) >= 0)
			;
		fuzz_loop_run(vm->loop, 4);
		break;
	default: /* the tap goes away */
		close(peer);
		peer = peers[cur] = -1;
		dirty = true;
		fuzz_loop_run(vm->loop, 4);
		break;
	}
}

static void cleanup(unsigned key)
{
	if (peers[key] >= 0)
		close(peers[key]);
	if (peer == peers[key])
		peer = -1;
	peers[key] = -1;
	taps[key] = -1; /* the device closed it */
}

static const struct fuzz_virtio_target target = { .setup = setup, .create = create,
						   .begin = begin, .op = op, .end = end,
						   .cleanup = cleanup };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_virtio_run(data, size, &target);
}
