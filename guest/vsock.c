/* A ring-3 virtio-vsock driver for the test guest (virtio 1.x 5.10):
 * stream sockets, one listening port, one connection at a time, with
 * the credit-based flow control both ways. Receive buffers hold header
 * and data together (as Linux posts them); every packet we send is one
 * device-readable buffer. A TRANSPORT_RESET event (after the host
 * restored the VM) drops the connection: the host connects again. */
#include "vsock.h"

#define VQ_RX 0
#define VQ_TX 1
#define VQ_EV 2
#define NBUF 16
#define BUF_SIZE 4096
#define HDR 44
#define HOST_CID 2
#define OUR_BUF_ALLOC (64u << 10)
#define SEND_RING (64u << 10)

enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE,
       OP_CREDIT_REQUEST };

struct pkt {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

struct vsock_dev {
	struct virtio_dev v;
	struct guest *g;
	uint64_t cid;
	uint32_t port;
	uint8_t *rx[NBUF], *tx[NBUF], *ev[4];
	bool tx_busy[NBUF];
	int16_t rx_of[VQ_MAX_SIZE], tx_of[VQ_MAX_SIZE], ev_of[VQ_MAX_SIZE];
	/* the connection */
	bool up;
	uint32_t peer_port;
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
	uint32_t fwd_cnt, fwd_told;
	uint8_t *ring; /* what waits for the host's credit */
	uint32_t ring_head, ring_used;
	bool resets_seen;
};

static void post(struct virtq *q, uint8_t *buf, uint32_t len, int16_t *of, unsigned i)
{
	struct virtio_buf b = { (uint64_t)(uintptr_t)buf, len, true };
	int head = virtq_add(q, &b, 1);

	if (head >= 0)
		of[head] = (int16_t)i;
}

static void reap_tx(struct vsock_dev *v)
{
	int head;

	while ((head = virtq_get(&v->v.vq[VQ_TX], NULL)) >= 0)
		v->tx_busy[v->tx_of[head]] = false;
}

/* One packet to the host; false when every buffer is in flight. */
static bool send_pkt(struct vsock_dev *v, uint16_t op, uint32_t dst_port, uint32_t flags,
		     const uint8_t *data, uint32_t len)
{
	reap_tx(v);
	for (unsigned i = 0; i < NBUF; i++) {
		struct pkt h = { v->cid, HOST_CID, v->port, dst_port, len, 1, op, flags,
				 OUR_BUF_ALLOC, v->fwd_cnt };
		struct virtio_buf b = { (uint64_t)(uintptr_t)v->tx[i], HDR + len, false };
		int head;

		if (v->tx_busy[i])
			continue;
		memcpy(v->tx[i], &h, HDR);
		if (len)
			memcpy(v->tx[i] + HDR, data, len);
		head = virtq_add(&v->v.vq[VQ_TX], &b, 1);
		if (head < 0)
			return false;
		v->tx_of[head] = (int16_t)i;
		v->tx_busy[i] = true;
		v->fwd_told = v->fwd_cnt;
		virtq_kick(&v->v.vq[VQ_TX]);
		return true;
	}
	return false;
}

/* Sends what the ring holds, as far as the host's credit goes. */
static void flush(struct vsock_dev *v)
{
	while (v->up && v->ring_used) {
		uint32_t credit = v->peer_buf_alloc - (v->tx_cnt - v->peer_fwd_cnt);
		uint32_t n = v->ring_used, first = SEND_RING - v->ring_head;

		if (v->tx_cnt - v->peer_fwd_cnt >= v->peer_buf_alloc || !credit)
			return;
		if (n > credit)
			n = credit;
		if (n > BUF_SIZE - HDR)
			n = BUF_SIZE - HDR;
		if (n > first)
			n = first; /* contiguous part first */
		if (!send_pkt(v, OP_RW, v->peer_port, 0, v->ring + v->ring_head, n))
			return;
		v->ring_head = (v->ring_head + n) % SEND_RING;
		v->ring_used -= n;
		v->tx_cnt += n;
	}
}

bool vsock_send(struct vsock_dev *v, const void *data, uint32_t len)
{
	const uint8_t *p = data;

	if (!v->up || len > SEND_RING - v->ring_used)
		return false;
	for (uint32_t i = 0; i < len; i++)
		v->ring[(v->ring_head + v->ring_used + i) % SEND_RING] = p[i];
	v->ring_used += len;
	flush(v);
	return true;
}

static void drop(struct vsock_dev *v, void (*on_conn)(void *, bool), void *arg)
{
	if (!v->up)
		return;
	v->up = false;
	v->ring_used = 0;
	on_conn(arg, false);
}

static void packet(struct vsock_dev *v, const struct pkt *h, const uint8_t *data,
		   void (*on_data)(void *, const uint8_t *, uint32_t),
		   void (*on_conn)(void *, bool), void *arg)
{
	bool ours = v->up && h->src_port == v->peer_port && h->dst_port == v->port;

	if (h->dst_port != v->port || h->src_cid != HOST_CID) {
		if (h->op != OP_RST)
			send_pkt(v, OP_RST, h->src_port, 0, NULL, 0);
		return;
	}
	if (h->op == OP_REQUEST) {
		drop(v, on_conn, arg); /* the newest host connection wins */
		v->up = true;
		v->peer_port = h->src_port;
		v->peer_buf_alloc = h->buf_alloc;
		v->peer_fwd_cnt = h->fwd_cnt;
		v->tx_cnt = v->fwd_cnt = v->fwd_told = 0;
		v->ring_head = v->ring_used = 0;
		send_pkt(v, OP_RESPONSE, h->src_port, 0, NULL, 0);
		on_conn(arg, true);
		return;
	}
	if (!ours) {
		if (h->op != OP_RST)
			send_pkt(v, OP_RST, h->src_port, 0, NULL, 0);
		return;
	}
	v->peer_buf_alloc = h->buf_alloc;
	v->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case OP_RW:
		v->fwd_cnt += h->len; /* consumed at once by on_data */
		on_data(arg, data, h->len);
		if (v->fwd_cnt - v->fwd_told >= OUR_BUF_ALLOC / 4)
			send_pkt(v, OP_CREDIT_UPDATE, v->peer_port, 0, NULL, 0);
		break;
	case OP_SHUTDOWN:
		send_pkt(v, OP_RST, v->peer_port, 0, NULL, 0);
		drop(v, on_conn, arg);
		break;
	case OP_RST:
		drop(v, on_conn, arg);
		break;
	case OP_CREDIT_REQUEST:
		send_pkt(v, OP_CREDIT_UPDATE, v->peer_port, 0, NULL, 0);
		break;
	default:
		break;
	}
}

bool vsock_poll(struct vsock_dev *v, void (*on_data)(void *, const uint8_t *, uint32_t),
		void (*on_conn)(void *, bool), void *arg)
{
	bool any = false;
	uint32_t len;
	int head;

	while ((head = virtq_get(&v->v.vq[VQ_RX], &len)) >= 0) {
		unsigned i = (unsigned)v->rx_of[head];
		struct pkt h;

		if (len >= HDR) {
			memcpy(&h, v->rx[i], HDR);
			if (h.len <= len - HDR)
				packet(v, &h, v->rx[i] + HDR, on_data, on_conn, arg);
		}
		post(&v->v.vq[VQ_RX], v->rx[i], BUF_SIZE, v->rx_of, i);
		any = true;
	}
	if (any)
		virtq_kick(&v->v.vq[VQ_RX]);
	while ((head = virtq_get(&v->v.vq[VQ_EV], &len)) >= 0) {
		unsigned i = (unsigned)v->ev_of[head];
		uint32_t id;

		memcpy(&id, v->ev[i], 4);
		if (len >= 4 && id == 0) { /* VIRTIO_VSOCK_EVENT_TRANSPORT_RESET */
			out("RESULT vsock_transport_reset=1\n");
			v->cid = virtio_cfg64(&v->v, 0);
			drop(v, on_conn, arg);
		}
		post(&v->v.vq[VQ_EV], v->ev[i], 8, v->ev_of, i);
		virtq_kick(&v->v.vq[VQ_EV]);
		any = true;
	}
	reap_tx(v);
	flush(v);
	return any;
}

bool vsock_wakes(const struct vsock_dev *v)
{
	return v->v.wake;
}

int vsock_start(struct guest *g, uint32_t port, struct vsock_dev **res)
{
	struct vsock_dev *v = mm_alloc(g, sizeof(*v), 64);

	if (!v || virtio_open(g, VIRTIO_ID_VSOCK, 0, 0, 3, 1u << VQ_RX, &v->v)) {
		out("RESULT vsock_error=no usable virtio-vsock device\n");
		return -1;
	}
	v->g = g;
	v->port = port;
	v->ring = mm_alloc(g, SEND_RING, PAGE_SIZE);
	for (unsigned i = 0; i < NBUF; i++)
		if (!(v->rx[i] = mm_alloc(g, BUF_SIZE, 64)) || !(v->tx[i] = mm_alloc(g, BUF_SIZE, 64)))
			return -1;
	for (unsigned i = 0; i < 4; i++)
		if (!(v->ev[i] = mm_alloc(g, 8, 8)))
			return -1;
	if (!v->ring)
		return -1;
	v->cid = virtio_cfg64(&v->v, 0);
	virtio_ready(&v->v);
	for (unsigned i = 0; i < NBUF && i < v->v.vq[VQ_RX].size; i++)
		post(&v->v.vq[VQ_RX], v->rx[i], BUF_SIZE, v->rx_of, i);
	virtq_kick(&v->v.vq[VQ_RX]);
	for (unsigned i = 0; i < 4 && i < v->v.vq[VQ_EV].size; i++)
		post(&v->v.vq[VQ_EV], v->ev[i], 8, v->ev_of, i);
	virtq_kick(&v->v.vq[VQ_EV]);
	out("RESULT vsock_cid=%lu\n", v->cid);
	out("RESULT vsock_listen=%u\n", port);
	*res = v;
	return 0;
}
