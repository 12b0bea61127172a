/* virtio-net (virtio 1.x 5.1) on a tap device: one receive and one
 * transmit queue. Frames go between the guest's buffers and the tap with
 * readv/writev straight on guest memory; the tap speaks the same 12-byte
 * virtio-net header, so checksum and segmentation offloads pass through
 * (negotiated with the tap by TUNSETOFFLOAD). */
#include "vmm/virtio/net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "net/tap.h"
#include "vmm/virtio/virtio.h"
#include "vmm/vm.h"

/* Feature bits (5.1.3). */
#define NET_F_CSUM 0
#define NET_F_GUEST_CSUM 1
#define NET_F_MAC 5
#define NET_F_GUEST_TSO4 7
#define NET_F_GUEST_TSO6 8
#define NET_F_GUEST_ECN 9
#define NET_F_HOST_TSO4 11
#define NET_F_HOST_TSO6 12
#define NET_F_HOST_ECN 13
#define NET_F_STATUS 16

#define NET_S_LINK_UP 1
#define NET_HDR_LEN 12 /* struct virtio_net_hdr with num_buffers (VERSION_1) */
#define NET_HDR_NUM_BUFFERS 10
#define NET_QUEUE_SIZE 256
#define NET_RX 0
#define NET_TX 1
#define NET_BUDGET 256 /* frames per callback before we let others run */
#define CFG_LEN 10     /* mac[6], status, max_virtqueue_pairs */

struct net {
	struct virtio_dev vdev;
	struct net_spec spec;
	char ifname[IFNAMSIZ];
	int tap;
	uint8_t config[CFG_LEN];
	struct virtq_elem *rx_elem, *tx_elem;
	bool rx_wait;	 /* no guest buffers: stop reading the tap */
	bool tx_blocked; /* the tap said EAGAIN: wait for EPOLLOUT */
	uint32_t events; /* what we watch on the tap now */
	bool watched;
	bool gone; /* the tap went away (deleted under us): link down for good */
	uint64_t rx_dropped, tx_dropped;
};

static struct net *to_net(struct virtio_dev *vdev)
{
	return vdev->opaque;
}

/* What the tap should wake us for, given the device's state. */
static void update_events(struct net *n)
{
	uint32_t want = 0;

	if (n->gone)
		return; /* not watched any more */
	if (virtio_dev_active(&n->vdev)) {
		if (!n->rx_wait && n->vdev.queues[NET_RX].vq.enabled)
			want |= EPOLLIN;
		if (n->tx_blocked)
			want |= EPOLLOUT;
	}
	if (n->watched && want != n->events && evloop_mod_fd(n->vdev.loop, n->tap, want) == 0)
		n->events = want;
}

/* The backend is gone (the tap was deleted: reads fail with EBADFD and
 * epoll reports EPOLLERR even with no events asked for, so watching it any
 * longer would spin the event loop). Stop watching it, take the link down
 * and tell the driver; frames sent from now on are dropped. Lock held. */
static void tap_gone(struct net *n, const char *why)
{
	uint16_t status = 0;

	if (n->gone)
		return;
	n->gone = true;
	log_warn("%s: tap %s is gone (%s): link down, frames dropped", n->vdev.name, n->ifname,
		 why);
	if (n->watched) {
		evloop_del_fd(n->vdev.loop, n->tap);
		n->watched = false;
	}
	memcpy(n->config + 6, &status, 2); /* VIRTIO_NET_S_LINK_UP cleared */
	virtio_dev_config_changed(&n->vdev);
	if (n->tx_blocked) {
		/* No EPOLLOUT will come: drain what the guest queued. */
		n->tx_blocked = false;
		virtio_dev_kick(&n->vdev, NET_TX);
	}
}

/* A failed read or write: true when the tap itself is unusable (deleted
 * under us: EBADFD), false when only that frame was refused or dropped
 * (EIO from a tap that is merely down, EMSGSIZE, ENOBUFS, ...). */
static bool tap_lost(int err)
{
	return err == EBADFD || err == EBADF || err == ENODEV || err == ENXIO || err == EPIPE;
}

static void net_rx(struct net *n)
{
	struct virtq *vq = virtio_dev_vq(&n->vdev, NET_RX);
	struct virtq_elem *e = n->rx_elem;
	uint16_t one = 1;
	unsigned done = 0, tries = 0;

	/* tries counts failed reads too: a tap that keeps failing must not
	 * keep us here (with the device lock held) forever. */
	while (tries++ < NET_BUDGET && !n->gone && virtio_dev_active(&n->vdev)) {
		int ret = virtq_pop(vq, e);
		ssize_t len;

		if (ret < 0) {
			virtio_dev_fail(&n->vdev, "receive queue: %s", vq->error);
			break;
		}
		if (ret == 0) {
			n->rx_wait = true;
			break;
		}
		if (e->nout || e->in_len < NET_HDR_LEN) {
			virtio_dev_fail(&n->vdev, "receive buffer %u is not a writable buffer of at "
					"least %d bytes", e->head, NET_HDR_LEN);
			break;
		}
		len = readv(n->tap, e->iov, e->nin);
		if (len < 0) {
			int err = errno;

			virtq_unpop(vq);
			if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
				break; /* nothing more now: the round is over */
			if (tap_lost(err)) {
				tap_gone(n, strerror(err));
				break;
			}
			/* The tap dropped a frame that did not fit the buffer. */
			n->rx_dropped++;
			continue;
		}
		iov_from_buf(e->iov, e->nin, NET_HDR_NUM_BUFFERS, &one, sizeof(one));
		virtq_push(vq, e->head, (uint32_t)len);
		done++;
	}
	if (done)
		virtio_dev_queue_done(&n->vdev, NET_RX);
}

/* Sends what the guest queued. No kicks are asked for while we work (each
 * one is an exit for the guest); once the ring looks empty they are turned
 * back on and the ring looked at once more, so a frame queued in between
 * is not left behind (QEMU's virtio-net does the same). */
static void net_tx(struct net *n)
{
	struct virtq *vq = virtio_dev_vq(&n->vdev, NET_TX);
	struct virtq_elem *e = n->tx_elem;
	unsigned done = 0;

	virtq_set_notify(vq, false);
	while (!n->tx_blocked && virtio_dev_active(&n->vdev)) {
		int ret;

		if (done == NET_BUDGET) {
			virtio_dev_kick(&n->vdev, NET_TX); /* the rest after others ran */
			break;
		}
		ret = virtq_pop(vq, e);

		if (ret < 0) {
			virtio_dev_fail(&n->vdev, "transmit queue: %s", vq->error);
			break;
		}
		if (ret == 0) {
			virtq_set_notify(vq, true);
			if (!virtq_has_avail(vq))
				break;
			virtq_set_notify(vq, false);
			continue;
		}
		if (e->nin || e->out_len <= NET_HDR_LEN) {
			virtio_dev_fail(&n->vdev, "transmit buffer %u is not a readable header and "
					"frame", e->head);
			break;
		}
		if (n->gone) {
			n->tx_dropped++; /* no wire any more: complete without sending */
		} else if (writev(n->tap, e->iov, e->nout) < 0) {
			int err = errno;

			if (err == EAGAIN || err == EWOULDBLOCK) {
				virtq_unpop(vq);
				n->tx_blocked = true; /* EPOLLOUT brings us back */
				break;
			}
			if (tap_lost(err))
				tap_gone(n, strerror(err));
			n->tx_dropped++; /* a frame the tap refused: drop it like a wire */
		}
		virtq_push(vq, e->head, 0);
		done++;
	}
	if (done)
		virtio_dev_queue_done(&n->vdev, NET_TX);
}

static void tap_cb(void *opaque, uint32_t events)
{
	struct net *n = opaque;

	virtio_dev_lock(&n->vdev);
	/* Reported whatever we asked for, even with no events watched. */
	if (events & (EPOLLERR | EPOLLHUP))
		tap_gone(n, events & EPOLLERR ? "EPOLLERR" : "EPOLLHUP");
	if (!n->gone && virtio_dev_active(&n->vdev)) {
		if (events & EPOLLOUT) {
			n->tx_blocked = false;
			net_tx(n);
		}
		if (events & EPOLLIN)
			net_rx(n);
	}
	update_events(n);
	virtio_dev_unlock(&n->vdev);
}

static void net_queue_notify(struct virtio_dev *vdev, unsigned qidx)
{
	struct net *n = to_net(vdev);

	if (qidx == NET_RX) {
		/* New buffers: take frames waiting in the tap now. */
		n->rx_wait = false;
		net_rx(n);
	} else {
		net_tx(n);
	}
	update_events(n);
}

static unsigned offloads_for(const struct virtio_dev *vdev)
{
	unsigned o = 0;

	if (virtio_dev_has(vdev, NET_F_GUEST_CSUM)) {
		o |= TAP_OFFLOAD_CSUM;
		if (virtio_dev_has(vdev, NET_F_GUEST_TSO4))
			o |= TAP_OFFLOAD_TSO4;
		if (virtio_dev_has(vdev, NET_F_GUEST_TSO6))
			o |= TAP_OFFLOAD_TSO6;
		if (virtio_dev_has(vdev, NET_F_GUEST_ECN))
			o |= TAP_OFFLOAD_TSO_ECN;
	}
	return o;
}

static int net_start(struct virtio_dev *vdev)
{
	struct net *n = to_net(vdev);
	int ret = tap_set_offload(n->tap, offloads_for(vdev));

	if (ret)
		log_warn("%s: %s refuses offloads 0x%x: %s", vdev->name, n->ifname,
			 offloads_for(vdev), strerror(-ret));
	n->rx_wait = false;
	n->tx_blocked = false;
	update_events(n);
	return 0;
}

static void net_stop(struct virtio_dev *vdev)
{
	struct net *n = to_net(vdev);

	n->rx_wait = false;
	n->tx_blocked = false;
	update_events(n); /* not active any more: watches nothing */
}

static void net_pause(struct virtio_dev *vdev)
{
	update_events(to_net(vdev));
}

static void net_config_read(struct virtio_dev *vdev, uint32_t off, void *data, unsigned len)
{
	memcpy(data, to_net(vdev)->config + off, len);
}

static void net_destroy(struct virtio_dev *vdev)
{
	struct net *n = to_net(vdev);

	if (n->watched)
		evloop_del_fd(vdev->loop, n->tap);
	if (n->rx_dropped || n->tx_dropped)
		log_info("%s: dropped %llu received and %llu sent frames", vdev->name,
			 (unsigned long long)n->rx_dropped, (unsigned long long)n->tx_dropped);
	close(n->tap);
	free(n->rx_elem);
	free(n->tx_elem);
	free(n);
}

static const struct virtio_dev_ops net_ops = {
	.config_read = net_config_read,
	.start = net_start,
	.queue_notify = net_queue_notify,
	.stop = net_stop,
	.pause = net_pause,
	.resume = net_pause, /* update_events sees the new state */
	.destroy = net_destroy,
};

int virtio_net_set_link(struct virtio_dev *vdev, const char *tap, bool up)
{
	uint16_t status = up ? NET_S_LINK_UP : 0, old;
	struct net *n;
	int ret = 0;

	if (vdev->ops != &net_ops)
		return -ENODEV;
	n = to_net(vdev);
	if (strcmp(n->ifname, tap))
		return -ENODEV;
	virtio_dev_lock(vdev);
	memcpy(&old, n->config + 6, 2);
	if (up && n->gone)
		ret = -EPIPE; /* the tap is gone: the link stays down */
	else if (old != status) {
		memcpy(n->config + 6, &status, 2);
		virtio_dev_config_changed(vdev);
		log_info("%s: tap %s: link %s", vdev->name, n->ifname, up ? "up" : "down");
	}
	virtio_dev_unlock(vdev);
	return ret;
}

static int open_tap(struct net *n, char *err, size_t errlen)
{
	int ret;

	if (n->spec.tap[0]) {
		ret = tap_open(n->spec.tap, NET_HDR_LEN, n->ifname);
		if (ret < 0) {
			snprintf(err, errlen, "tap %s: cannot open: %s%s", n->spec.tap,
				 strerror(-ret),
				 ret == -EPERM ? " (needs CAP_NET_ADMIN; or pass fd=N)" : "");
			return ret;
		}
		n->tap = ret;
		if (tap_set_up(n->ifname, true))
			log_warn("tap %s: cannot bring it up", n->ifname);
		return 0;
	}
	ret = tap_adopt_fd(n->spec.fd, NET_HDR_LEN, n->ifname);
	if (ret) {
		snprintf(err, errlen, "fd %d: %s", n->spec.fd,
			 ret == -ENOTTY ? "not a tap opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR"
					: strerror(-ret));
		return ret;
	}
	n->tap = n->spec.fd;
	return 0;
}

static void build_config(struct net *n)
{
	uint16_t status = NET_S_LINK_UP, pairs = 1;

	if (!n->spec.has_mac) {
		/* A random, locally administered unicast address. */
		if (getrandom(n->spec.mac, 6, 0) != 6)
			memcpy(n->spec.mac, "\x52\x54\x00\x12\x34\x56", 6);
		n->spec.mac[0] = (uint8_t)((n->spec.mac[0] & 0xfe) | 0x02);
	}
	memcpy(n->config, n->spec.mac, 6);
	memcpy(n->config + 6, &status, 2);
	memcpy(n->config + 8, &pairs, 2);
}

int virtio_net_create(struct vm *vm, const struct net_spec *spec, unsigned index,
		      struct virtio_dev **out, char *err, size_t errlen)
{
	struct virtio_dev_params p = {
		.device_id = VIRTIO_ID_NET,
		.class_code = 0x020000, /* ethernet */
		.nqueues = 2,
		.queue_size = NET_QUEUE_SIZE,
		.features = (1ULL << NET_F_CSUM) | (1ULL << NET_F_GUEST_CSUM) |
			    (1ULL << NET_F_MAC) | (1ULL << NET_F_GUEST_TSO4) |
			    (1ULL << NET_F_GUEST_TSO6) | (1ULL << NET_F_GUEST_ECN) |
			    (1ULL << NET_F_HOST_TSO4) | (1ULL << NET_F_HOST_TSO6) |
			    (1ULL << NET_F_HOST_ECN) | (1ULL << NET_F_STATUS),
		.config_len = CFG_LEN,
		.ops = &net_ops,
	};
	char name[32];
	struct net *n;
	int ret;

	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->spec = *spec;
	n->rx_elem = virtq_elem_alloc(NET_QUEUE_SIZE);
	n->tx_elem = virtq_elem_alloc(NET_QUEUE_SIZE);
	if (!n->rx_elem || !n->tx_elem) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = open_tap(n, err, errlen);
	if (ret)
		goto err_free;
	build_config(n);
	snprintf(name, sizeof(name), "virtio-net%u", index);
	p.name = name;
	p.opaque = n;
	ret = virtio_dev_init(&n->vdev, vm, &p);
	if (ret) {
		snprintf(err, errlen, "tap %s: cannot create the PCI function: %s", n->ifname,
			 strerror(-ret));
		goto err_tap;
	}
	ret = evloop_add_fd(n->vdev.loop, n->tap, 0, tap_cb, n);
	if (!ret) {
		n->watched = true;
		ret = virtio_dev_attach(&n->vdev);
	}
	if (ret) {
		snprintf(err, errlen, "tap %s: cannot attach the NIC: %s", n->ifname,
			 strerror(-ret));
		virtio_dev_destroy(&n->vdev); /* frees n */
		return ret;
	}
	log_info("%s: tap %s, mac %02x:%02x:%02x:%02x:%02x:%02x", name, n->ifname,
		 n->spec.mac[0], n->spec.mac[1], n->spec.mac[2], n->spec.mac[3], n->spec.mac[4],
		 n->spec.mac[5]);
	*out = &n->vdev;
	return 0;
err_tap:
	close(n->tap);
err_free:
	free(n->rx_elem);
	free(n->tx_elem);
	free(n);
	return ret;
}
