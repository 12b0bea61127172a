/* virtio-vsock (virtio 1.x 5.10) in user space: this host has no
 * /dev/vhost-vsock. The host side is unix sockets, as Firecracker's
 * hybrid vsock has it:
 *
 *   host -> guest  connect to PATH, send "CONNECT <port>\n"; once the
 *                  guest accepts, the device answers "OK <hostport>\n"
 *                  and the socket carries the stream;
 *   guest -> host  a connection to the host's (CID 2) port P is a
 *                  connection to the unix socket PATH_P (refused with a
 *                  RST under host-only, as a sandboxed worker needs:
 *                  its filter has no socket() or connect()).
 *
 * Stream sockets only, with the spec's credit-based flow control both
 * ways: the device gives each connection a CONN_BUF buffer for what the
 * guest sends and the socket has not taken yet, and never sends the guest
 * more than the buf_alloc/fwd_cnt the guest advertised. A driver that
 * breaks the rules (a packet shorter than its header, a wrong source CID,
 * a length that is not there, an unknown operation, more data than its
 * credit, credit counters going backwards) puts the device into
 * DEVICE_NEEDS_RESET; the worker goes on. A packet that is merely for
 * nobody (a port without a listener, an unknown connection) is answered
 * with a RST, as a peer would.
 *
 * Connections do not survive a save: restore tells the driver with a
 * TRANSPORT_RESET event (5.10.6.6) and the guest opens new ones. */
#include "vmm/virtio/vsock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/state/record.h"
#include "vmm/unixsock.h"
#include "vmm/virtio/virtio.h"

#define VIRTIO_ID_VSOCK 19
#define VQ_RX 0
#define VQ_TX 1
#define VQ_EVENT 2
#define VSOCK_QUEUE_SIZE 128
#define CFG_LEN 8 /* le64 guest_cid */

#define HOST_CID 2
#define HDR_LEN 44
#define TYPE_STREAM 1
#define MAX_PAYLOAD (64u << 10) /* Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE */
#define CONN_BUF (64u << 10)	/* our buf_alloc per connection */
#define MAX_CONNS 64
#define MAX_LONE_RSTS 32
#define LINE_MAX_LEN 24 /* "CONNECT 4294967295\n" */
#define TX_BUDGET 256
#define HOST_PORT_BASE (1u << 30) /* ports for host-initiated connections */
#define EVENT_TRANSPORT_RESET 0

enum vsock_op {
	OP_INVALID,
	OP_REQUEST,
	OP_RESPONSE,
	OP_RST,
	OP_SHUTDOWN,
	OP_RW,
	OP_CREDIT_UPDATE,
	OP_CREDIT_REQUEST,
};

#define SHUT_FLAG_RCV 1
#define SHUT_FLAG_SEND 2

/* The packet header, decoded (the wire form is 44 packed bytes, LE). */
struct pkt_hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
};

enum conn_state {
	CONN_FREE,
	CONN_HOST_LINE,	 /* a host client: reading its CONNECT line */
	CONN_REQUESTED,	 /* REQUEST sent to the guest, no answer yet */
	CONN_OPEN,
	CONN_CLOSING, /* SHUTDOWN sent: waiting for the guest's RST */
};

/* Control packets a connection owes the guest. */
#define PEND_REQUEST 1u
#define PEND_RESPONSE 2u
#define PEND_CREDIT 4u
#define PEND_SHUTDOWN 8u
#define PEND_RST 16u

struct vsock;

struct vsock_conn {
	struct vsock *dev;
	enum conn_state state;
	int fd;
	uint32_t local_port; /* the host's side */
	uint32_t peer_port;  /* the guest's side */
	unsigned pending;    /* PEND_* */
	uint32_t events;     /* watched on fd now */
	bool readable;	     /* EPOLLIN seen, not yet read dry */
	bool unwatched;	     /* hung up: off the loop, read until EOF */
	bool host_eof;
	bool peer_shut_send, peer_shut_rcv;
	/* guest -> host: buf[] holds what the socket has not taken */
	uint8_t *buf;
	uint32_t head, used;
	uint32_t fwd_cnt, fwd_told; /* bytes handed on; what the guest heard */
	/* host -> guest */
	uint32_t peer_buf_alloc, peer_fwd_cnt, rx_cnt;
};

struct lone_rst {
	uint32_t local_port, peer_port;
};

struct vsock {
	struct virtio_dev vdev;
	struct vsock_spec spec;
	int listen_fd;
	uint8_t config[CFG_LEN];
	struct virtq_elem *rx_elem, *tx_elem, *ev_elem;
	bool rx_wait;	    /* no receive buffers: stop reading sockets */
	bool reset_event;   /* a TRANSPORT_RESET the driver has yet to get */
	bool listen_watched;
	uint32_t next_port;
	unsigned rr; /* where the receive round starts */
	struct lone_rst rsts[MAX_LONE_RSTS];
	unsigned nrsts;
	struct vsock_conn conns[MAX_CONNS];
};

static struct vsock *to_vsock(struct virtio_dev *vdev)
{
	return vdev->opaque;
}

/* ---- the spec ---- */

int vsock_spec_parse(const char *spec, struct vsock_spec *out, char *err, size_t errlen)
{
	static const char *usage = "expected cid=N,socket=PATH[,host-only]";
	char buf[512], *save = NULL, *tok;
	bool have_cid = false;

	memset(out, 0, sizeof(*out));
	if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf)) {
		snprintf(err, errlen, "--vsock: the spec is too long; %s", usage);
		return -EINVAL;
	}
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (!strncmp(tok, "cid=", 4)) {
			if (parse_u64(tok + 4, &v) || v < VSOCK_CID_MIN || v > VSOCK_CID_MAX) {
				snprintf(err, errlen, "--vsock: cid '%s' is not a whole number from "
					 "%u to %u (0-2 and 4294967295 are reserved)", tok + 4,
					 VSOCK_CID_MIN, VSOCK_CID_MAX);
				return -EINVAL;
			}
			out->cid = (uint32_t)v;
			have_cid = true;
		} else if (!strncmp(tok, "socket=", 7)) {
			if (!tok[7] || strlen(tok + 7) > VSOCK_PATH_MAX) {
				snprintf(err, errlen, "--vsock: socket path must be 1 to %d bytes "
					 "(PATH_<port> must fit a unix socket address)", VSOCK_PATH_MAX);
				return -EINVAL;
			}
			snprintf(out->path, sizeof(out->path), "%s", tok + 7);
		} else if (!strcmp(tok, "host-only")) {
			out->host_only = true;
		} else {
			snprintf(err, errlen, "--vsock: unknown option '%s'; %s", tok, usage);
			return -EINVAL;
		}
	}
	if (!have_cid || !out->path[0]) {
		snprintf(err, errlen, "--vsock: missing %s; %s", have_cid ? "socket=PATH" : "cid=N",
			 usage);
		return -EINVAL;
	}
	return 0;
}

/* ---- packets ---- */

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = (v << 8) | p[n];
	return v;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static void hdr_decode(const uint8_t *b, struct pkt_hdr *h)
{
	h->src_cid = get_le(b, 8);
	h->dst_cid = get_le(b + 8, 8);
	h->src_port = (uint32_t)get_le(b + 16, 4);
	h->dst_port = (uint32_t)get_le(b + 20, 4);
	h->len = (uint32_t)get_le(b + 24, 4);
	h->type = (uint16_t)get_le(b + 28, 2);
	h->op = (uint16_t)get_le(b + 30, 2);
	h->flags = (uint32_t)get_le(b + 32, 4);
	h->buf_alloc = (uint32_t)get_le(b + 36, 4);
	h->fwd_cnt = (uint32_t)get_le(b + 40, 4);
}

static void hdr_encode(const struct pkt_hdr *h, uint8_t *b)
{
	put_le(b, h->src_cid, 8);
	put_le(b + 8, h->dst_cid, 8);
	put_le(b + 16, h->src_port, 4);
	put_le(b + 20, h->dst_port, 4);
	put_le(b + 24, h->len, 4);
	put_le(b + 28, h->type, 2);
	put_le(b + 30, h->op, 2);
	put_le(b + 32, h->flags, 4);
	put_le(b + 36, h->buf_alloc, 4);
	put_le(b + 40, h->fwd_cnt, 4);
}

/* A header from the host to the guest; conn supplies our credit. */
static void hdr_to_guest(struct vsock *v, const struct vsock_conn *c, uint32_t local,
			 uint32_t peer, uint16_t op, struct pkt_hdr *h)
{
	*h = (struct pkt_hdr){ .src_cid = HOST_CID, .dst_cid = v->spec.cid, .src_port = local,
			       .dst_port = peer, .type = TYPE_STREAM, .op = op };
	if (c) {
		h->buf_alloc = CONN_BUF;
		h->fwd_cnt = c->fwd_cnt;
	}
}

/* ---- connections ---- */

static struct vsock_conn *conn_find(struct vsock *v, uint32_t local, uint32_t peer)
{
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];

		if (c->state != CONN_FREE && c->state != CONN_HOST_LINE &&
		    c->local_port == local && c->peer_port == peer)
			return c;
	}
	return NULL;
}

static bool port_in_use(struct vsock *v, uint32_t port)
{
	for (unsigned i = 0; i < MAX_CONNS; i++)
		if (v->conns[i].state != CONN_FREE && v->conns[i].local_port == port)
			return true;
	return false;
}

static void conn_cb(void *opaque, uint32_t events);

/* A free slot for a connection on socket fd, watched (for nothing yet);
 * NULL when there is none (the caller closes fd). */
static struct vsock_conn *conn_alloc(struct vsock *v, int fd)
{
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[i];

		if (c->state != CONN_FREE)
			continue;
		if (!c->buf)
			c->buf = malloc(CONN_BUF);
		if (!c->buf || evloop_add_fd(v->vdev.loop, fd, 0, conn_cb, c))
			return NULL;
		memset(c, 0, offsetof(struct vsock_conn, buf));
		c->dev = v;
		c->head = c->used = c->fwd_cnt = c->fwd_told = 0;
		c->peer_buf_alloc = c->peer_fwd_cnt = c->rx_cnt = 0;
		c->fd = fd;
		return c;
	}
	return NULL;
}

static void conn_free(struct vsock *v, struct vsock_conn *c)
{
	if (c->state == CONN_FREE)
		return;
	if (!c->unwatched)
		evloop_del_fd(v->vdev.loop, c->fd);
	close(c->fd);
	c->fd = -1;
	c->state = CONN_FREE;
	c->pending = 0;
}

static void drop_all(struct vsock *v)
{
	for (unsigned i = 0; i < MAX_CONNS; i++)
		conn_free(v, &v->conns[i]);
	v->nrsts = 0;
}

static uint32_t peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->rx_cnt - c->peer_fwd_cnt;

	return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* What the socket should wake us for. */
static void conn_watch(struct vsock *v, struct vsock_conn *c)
{
	uint32_t want = 0;
	bool active = virtio_dev_active(&v->vdev);

	if (c->unwatched)
		return;
	if (c->state == CONN_HOST_LINE)
		want = active ? EPOLLIN : 0;
	else if ((c->state == CONN_OPEN) && active) {
		if (!c->readable && !c->host_eof && !c->peer_shut_rcv && !v->rx_wait &&
		    peer_credit(c) > 0)
			want |= EPOLLIN;
		if (c->used)
			want |= EPOLLOUT;
	}
	if (want != c->events && evloop_mod_fd(v->vdev.loop, c->fd, want) == 0)
		c->events = want;
}

static void watch_all(struct vsock *v)
{
	bool want = virtio_dev_active(&v->vdev);

	for (unsigned i = 0; i < MAX_CONNS; i++)
		if (v->conns[i].state != CONN_FREE)
			conn_watch(v, &v->conns[i]);
	if (v->listen_fd >= 0 && want != v->listen_watched &&
	    evloop_mod_fd(v->vdev.loop, v->listen_fd, want ? EPOLLIN : 0) == 0)
		v->listen_watched = want;
}

static void lone_rst(struct vsock *v, uint32_t local, uint32_t peer)
{
	/* Overflow drops the RST: the guest's connect then times out. */
	if (v->nrsts < MAX_LONE_RSTS)
		v->rsts[v->nrsts++] = (struct lone_rst){ local, peer };
}

/* Resets a connection: the guest hears RST, the host socket is closed. */
static void conn_reset(struct vsock *v, struct vsock_conn *c)
{
	lone_rst(v, c->local_port, c->peer_port);
	conn_free(v, c);
}

/* Hands buffered guest data to the socket. */
static void conn_flush(struct vsock *v, struct vsock_conn *c)
{
	while (c->used) {
		struct iovec iov[2];
		unsigned n = 1;
		uint32_t first = CONN_BUF - c->head < c->used ? CONN_BUF - c->head : c->used;
		ssize_t w;

		iov[0] = (struct iovec){ c->buf + c->head, first };
		if (first < c->used) {
			iov[1] = (struct iovec){ c->buf, c->used - first };
			n = 2;
		}
		w = sendmsg(c->fd, &(struct msghdr){ .msg_iov = iov, .msg_iovlen = n },
			    MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			conn_reset(v, c); /* the host peer is gone */
			return;
		}
		c->head = (c->head + (uint32_t)w) % CONN_BUF;
		c->used -= (uint32_t)w;
		c->fwd_cnt += (uint32_t)w;
	}
	/* Linux drivers do not ask for credit: tell them when a good part
	 * of the buffer came free, or all of it. */
	if (c->fwd_cnt != c->fwd_told && (!c->used || c->fwd_cnt - c->fwd_told >= CONN_BUF / 4))
		c->pending |= PEND_CREDIT;
	if (!c->used && c->peer_shut_send && c->peer_shut_rcv) {
		conn_reset(v, c); /* the guest closed both ways: done */
		return;
	}
	if (!c->used && c->peer_shut_send)
		shutdown(c->fd, SHUT_WR);
}

/* ---- guest -> host ---- */

/* A known connection's packet: the guest's credit, then the operation.
 * false when the driver broke the rules (the caller fails the device). */
static bool conn_packet(struct vsock *v, struct vsock_conn *c, const struct pkt_hdr *h,
			const struct virtq_elem *e, const char **why)
{
	if (h->op == OP_RST) { /* its credit fields no longer matter */
		conn_free(v, c);
		return true;
	}
	if (c->rx_cnt - h->fwd_cnt > c->rx_cnt - c->peer_fwd_cnt) {
		*why = "its fwd_cnt went backwards or past what it was sent";
		return false;
	}
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case OP_REQUEST:
		conn_reset(v, c); /* a second REQUEST for a live connection */
		break;
	case OP_RESPONSE: {
		char line[LINE_MAX_LEN];
		int n = snprintf(line, sizeof(line), "OK %" PRIu32 "\n", c->local_port);

		if (c->state != CONN_REQUESTED || !unixsock_send_all(c->fd, line, (size_t)n)) {
			conn_reset(v, c);
			break;
		}
		c->state = CONN_OPEN;
		break;
	}
	case OP_SHUTDOWN:
		c->peer_shut_rcv |= !!(h->flags & SHUT_FLAG_RCV);
		c->peer_shut_send |= !!(h->flags & SHUT_FLAG_SEND);
		conn_flush(v, c);
		break;
	case OP_RW:
		if (c->state != CONN_OPEN || c->peer_shut_send) {
			conn_reset(v, c);
			break;
		}
		if (h->len > CONN_BUF - c->used) {
			*why = "it sent more than its credit";
			return false;
		}
		for (uint32_t off = 0; off < h->len;) {
			uint32_t tail = (c->head + c->used) % CONN_BUF;
			uint32_t room = CONN_BUF - tail;
			uint32_t n = h->len - off < room ? h->len - off : room;

			iov_to_buf(e->iov, e->nout, HDR_LEN + off, c->buf + tail, n);
			c->used += n;
			off += n;
		}
		conn_flush(v, c);
		break;
	case OP_CREDIT_REQUEST:
		c->pending |= PEND_CREDIT;
		break;
	default: /* CREDIT_UPDATE: taken above */
		break;
	}
	return true;
}

/* A guest REQUEST for host port dst: connect to PATH_<dst>. */
static void guest_connect(struct vsock *v, const struct pkt_hdr *h)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vsock_conn *c;
	int fd;

	if (v->spec.host_only) {
		/* a sandboxed worker has no socket() or connect() */
		lone_rst(v, h->dst_port, h->src_port);
		return;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%" PRIu32, v->spec.path, h->dst_port);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    !(c = conn_alloc(v, fd))) {
		if (fd >= 0)
			close(fd);
		lone_rst(v, h->dst_port, h->src_port);
		return;
	}
	c->state = CONN_OPEN;
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->pending = PEND_RESPONSE;
}

/* Checks a transmitted packet's header; NULL when it is well formed. */
static const char *hdr_check(const struct vsock *v, const struct pkt_hdr *h,
			     const struct virtq_elem *e)
{
	if (h->src_cid != v->spec.cid)
		return "its source CID is not the guest's";
	if (h->op == OP_INVALID || h->op > OP_CREDIT_REQUEST)
		return "an unknown operation";
	if (h->len > MAX_PAYLOAD || h->len > e->out_len - HDR_LEN)
		return "its length is more than the packet carries";
	if (h->op != OP_RW && h->len)
		return "a control packet with a payload";
	return NULL;
}

static void vsock_tx_one(struct vsock *v, struct virtq_elem *e)
{
	uint8_t raw[HDR_LEN];
	struct pkt_hdr h;
	struct vsock_conn *c;
	const char *why = NULL;

	if (e->out_len < HDR_LEN) {
		virtio_dev_fail(&v->vdev, "transmit packet %u is shorter than its header", e->head);
		return;
	}
	iov_to_buf(e->iov, e->nout, 0, raw, HDR_LEN);
	hdr_decode(raw, &h);
	why = hdr_check(v, &h, e);
	if (why) {
		virtio_dev_fail(&v->vdev, "transmit packet %u: %s", e->head, why);
		return;
	}
	if (h.dst_cid != HOST_CID || h.type != TYPE_STREAM) {
		if (h.op != OP_RST)
			lone_rst(v, h.dst_port, h.src_port);
		return;
	}
	c = conn_find(v, h.dst_port, h.src_port);
	if (c) {
		if (!conn_packet(v, c, &h, e, &why))
			virtio_dev_fail(&v->vdev, "transmit packet %u (port %" PRIu32 "): %s",
					e->head, h.src_port, why);
		return;
	}
	if (h.op == OP_REQUEST)
		guest_connect(v, &h);
	else if (h.op != OP_RST)
		lone_rst(v, h.dst_port, h.src_port);
}

static void vsock_rx(struct vsock *v);

static void vsock_tx(struct vsock *v)
{
	struct virtq *vq = virtio_dev_vq(&v->vdev, VQ_TX);
	unsigned done = 0;

	while (virtio_dev_active(&v->vdev)) {
		int ret;

		if (done == TX_BUDGET) {
			virtio_dev_kick(&v->vdev, VQ_TX);
			break;
		}
		ret = virtq_pop(vq, v->tx_elem);
		if (ret < 0) {
			virtio_dev_fail(&v->vdev, "transmit queue: %s", vq->error);
			break;
		}
		if (ret == 0)
			break;
		vsock_tx_one(v, v->tx_elem);
		virtq_push(vq, v->tx_elem->head, 0);
		done++;
	}
	if (done)
		virtio_dev_queue_done(&v->vdev, VQ_TX);
	vsock_rx(v); /* answers (RESPONSE, RST, credit) and new credit */
}

/* ---- host -> guest ---- */

/* Fills the popped receive chain e with header h and, for OP_RW, up to
 * h->len bytes read from the connection's socket. The bytes written, or
 * 0 when the chain was given back (nothing to read after all), -1 when
 * the driver's buffer is unusable (device failed). */
static int rx_fill(struct vsock *v, struct virtq_elem *e, struct pkt_hdr *h,
		   struct vsock_conn *c)
{
	uint8_t raw[HDR_LEN];

	if (e->nout || e->in_len < HDR_LEN) {
		virtio_dev_fail(&v->vdev, "receive buffer %u is not a writable buffer of at least "
				"%d bytes", e->head, HDR_LEN);
		return -1;
	}
	if (h->op == OP_RW) {
		struct iovec seg[VSOCK_QUEUE_SIZE];
		uint64_t room = e->in_len - HDR_LEN;
		uint32_t want = h->len < room ? h->len : (uint32_t)room;
		int nseg = iov_slice(e->iov, e->nin, HDR_LEN, want, seg, VSOCK_QUEUE_SIZE);
		ssize_t n = nseg > 0 ? readv(c->fd, seg, nseg) : -1;

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			c->readable = false;
			return 0;
		}
		if (n <= 0) {
			/* EOF or a dead socket: the guest hears SHUTDOWN */
			c->host_eof = true;
			c->readable = false;
			c->pending |= PEND_SHUTDOWN;
			return 0;
		}
		h->len = (uint32_t)n;
		c->rx_cnt += (uint32_t)n;
	}
	if (c)
		c->fwd_told = c->fwd_cnt;
	hdr_encode(h, raw);
	iov_from_buf(e->iov, e->nin, 0, raw, HDR_LEN);
	return (int)(HDR_LEN + h->len);
}

/* The next packet connection c owes the guest, if any: a header in h. */
static bool conn_next_packet(struct vsock *v, struct vsock_conn *c, struct pkt_hdr *h)
{
	static const struct {
		unsigned bit;
		uint16_t op;
	} order[] = { { PEND_REQUEST, OP_REQUEST }, { PEND_RESPONSE, OP_RESPONSE },
		      { PEND_SHUTDOWN, OP_SHUTDOWN }, { PEND_CREDIT, OP_CREDIT_UPDATE } };

	for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
		if (!(c->pending & order[i].bit))
			continue;
		hdr_to_guest(v, c, c->local_port, c->peer_port, order[i].op, h);
		if (order[i].op == OP_SHUTDOWN)
			h->flags = SHUT_FLAG_RCV | SHUT_FLAG_SEND;
		return true;
	}
	if (c->state != CONN_OPEN || !c->readable || c->host_eof || peer_credit(c) == 0)
		return false;
	hdr_to_guest(v, c, c->local_port, c->peer_port, OP_RW, h);
	h->len = peer_credit(c) < MAX_PAYLOAD ? peer_credit(c) : MAX_PAYLOAD;
	return true;
}

/* What a control packet just delivered changes. */
static void conn_sent(struct vsock *v, struct vsock_conn *c, uint16_t op)
{
	switch (op) {
	case OP_REQUEST:
		c->pending &= ~PEND_REQUEST;
		break;
	case OP_RESPONSE:
		c->pending &= ~PEND_RESPONSE;
		break;
	case OP_SHUTDOWN:
		c->pending &= ~PEND_SHUTDOWN;
		c->state = CONN_CLOSING;
		break;
	case OP_CREDIT_UPDATE:
		c->pending &= ~PEND_CREDIT;
		break;
	default:
		break;
	}
	(void)v;
}

/* One packet for the guest: a lone RST, a reset event's companion, or
 * the next connection's (round robin). false when nothing is owed. */
static bool rx_next(struct vsock *v, struct pkt_hdr *h, struct vsock_conn **conn)
{
	*conn = NULL;
	if (v->nrsts) {
		hdr_to_guest(v, NULL, v->rsts[0].local_port, v->rsts[0].peer_port, OP_RST, h);
		return true;
	}
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		struct vsock_conn *c = &v->conns[(v->rr + i) % MAX_CONNS];

		if (c->state == CONN_FREE || c->state == CONN_HOST_LINE)
			continue;
		if (conn_next_packet(v, c, h)) {
			*conn = c;
			v->rr = (unsigned)(c - v->conns + 1) % MAX_CONNS;
			return true;
		}
	}
	return false;
}

static void vsock_rx(struct vsock *v)
{
	struct virtq *vq = virtio_dev_vq(&v->vdev, VQ_RX);
	struct virtq_elem *e = v->rx_elem;
	unsigned done = 0, tries = 0;
	struct pkt_hdr h;
	struct vsock_conn *c;

	while (tries++ < TX_BUDGET && virtio_dev_active(&v->vdev) && rx_next(v, &h, &c)) {
		int ret = virtq_pop(vq, e), n;

		if (ret < 0) {
			virtio_dev_fail(&v->vdev, "receive queue: %s", vq->error);
			break;
		}
		if (ret == 0) {
			v->rx_wait = true;
			break;
		}
		n = rx_fill(v, e, &h, c);
		if (n < 0)
			break;
		if (n == 0) {
			virtq_unpop(vq);
			continue;
		}
		virtq_push(vq, e->head, (uint32_t)n);
		done++;
		if (!c)
			memmove(v->rsts, v->rsts + 1, --v->nrsts * sizeof(v->rsts[0]));
		else if (h.op != OP_RW)
			conn_sent(v, c, h.op);
	}
	if (tries > TX_BUDGET)
		virtio_dev_kick(&v->vdev, VQ_RX);
	if (done)
		virtio_dev_queue_done(&v->vdev, VQ_RX);
	watch_all(v);
}

/* The TRANSPORT_RESET event after a restore, once the driver has an
 * event buffer for it. */
static void vsock_event(struct vsock *v)
{
	struct virtq *vq = virtio_dev_vq(&v->vdev, VQ_EVENT);
	uint8_t ev[4] = { EVENT_TRANSPORT_RESET, 0, 0, 0 };
	int ret;

	if (!v->reset_event || !virtio_dev_active(&v->vdev))
		return;
	ret = virtq_pop(vq, v->ev_elem);
	if (ret < 0) {
		virtio_dev_fail(&v->vdev, "event queue: %s", vq->error);
		return;
	}
	if (ret == 0)
		return;
	if (v->ev_elem->nout || v->ev_elem->in_len < sizeof(ev)) {
		virtio_dev_fail(&v->vdev, "event buffer %u is not a writable buffer of 4 bytes",
				v->ev_elem->head);
		return;
	}
	iov_from_buf(v->ev_elem->iov, v->ev_elem->nin, 0, ev, sizeof(ev));
	virtq_push(vq, v->ev_elem->head, sizeof(ev));
	v->reset_event = false;
	virtio_dev_queue_done(&v->vdev, VQ_EVENT);
}

/* ---- host sockets ---- */

/* A host client's "CONNECT <port>\n", read without taking a byte past
 * the newline (the stream that follows is the guest's). */
static void host_line(struct vsock *v, struct vsock_conn *c)
{
	char line[LINE_MAX_LEN + 1], *nl, *end;
	ssize_t n = recv(c->fd, line, LINE_MAX_LEN, MSG_PEEK | MSG_DONTWAIT);
	unsigned long port;
	uint32_t local;

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_free(v, c);
		return;
	}
	line[n] = '\0';
	nl = memchr(line, '\n', (size_t)n);
	if (!nl) {
		if (n == LINE_MAX_LEN)
			conn_free(v, c); /* not a CONNECT line */
		return;
	}
	if (recv(c->fd, line, (size_t)(nl - line + 1), MSG_DONTWAIT) != nl - line + 1) {
		conn_free(v, c);
		return;
	}
	*nl = '\0';
	errno = 0;
	port = strncmp(line, "CONNECT ", 8) ? 0 : strtoul(line + 8, &end, 10);
	if (!port || line[8] < '0' || line[8] > '9' || *end || errno || port > UINT32_MAX) {
		log_debug("%s: host client: not \"CONNECT <port>\"", v->vdev.name);
		conn_free(v, c);
		return;
	}
	do
		local = v->next_port++ | HOST_PORT_BASE;
	while (port_in_use(v, local));
	c->local_port = local;
	c->peer_port = (uint32_t)port;
	c->state = CONN_REQUESTED;
	c->pending = PEND_REQUEST;
}

/* The host peer hung up (epoll keeps saying so, whatever we watch). An
 * open connection comes off the loop and is read until EOF, as the
 * guest's credit allows, so that nothing the peer wrote before it went
 * is lost; any other is reset. */
static void hang_up(struct vsock *v, struct vsock_conn *c)
{
	if (c->state == CONN_HOST_LINE) {
		conn_free(v, c);
	} else if (c->state != CONN_OPEN || c->host_eof) {
		conn_reset(v, c);
	} else {
		evloop_del_fd(v->vdev.loop, c->fd);
		c->unwatched = true;
		c->readable = true;
	}
}

static void conn_cb(void *opaque, uint32_t events)
{
	struct vsock_conn *c = opaque;
	struct vsock *v = c->dev;

	virtio_dev_lock(&v->vdev);
	if (c->state == CONN_HOST_LINE) {
		host_line(v, c);
	} else if (events & (EPOLLHUP | EPOLLERR)) {
		hang_up(v, c);
	} else if (c->state != CONN_FREE) {
		if (events & EPOLLOUT)
			conn_flush(v, c);
		if (c->state != CONN_FREE && (events & EPOLLIN))
			c->readable = true;
	}
	vsock_rx(v);
	virtio_dev_unlock(&v->vdev);
}

static void accept_cb(void *opaque, uint32_t events)
{
	struct vsock *v = opaque;
	int fd = accept4(v->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	struct vsock_conn *c;

	(void)events;
	if (fd < 0)
		return;
	virtio_dev_lock(&v->vdev);
	c = virtio_dev_active(&v->vdev) ? conn_alloc(v, fd) : NULL;
	if (c) {
		c->state = CONN_HOST_LINE;
		conn_watch(v, c);
	} else {
		close(fd); /* no driver, or no room: the client sees EOF */
	}
	virtio_dev_unlock(&v->vdev);
}

/* ---- the device ---- */

static void vsock_queue_notify(struct virtio_dev *vdev, unsigned qidx)
{
	struct vsock *v = to_vsock(vdev);

	if (qidx == VQ_TX) {
		vsock_tx(v);
	} else if (qidx == VQ_RX) {
		v->rx_wait = false;
		vsock_rx(v);
	} else {
		vsock_event(v);
	}
}

static int vsock_start(struct virtio_dev *vdev)
{
	struct vsock *v = to_vsock(vdev);

	v->rx_wait = false;
	watch_all(v);
	vsock_event(v);
	return 0;
}

/* Device reset (or a VM reset): the driver forgot every connection. */
static void vsock_stop(struct virtio_dev *vdev)
{
	struct vsock *v = to_vsock(vdev);

	drop_all(v);
	v->reset_event = false;
	watch_all(v);
}

static void vsock_pause(struct virtio_dev *vdev)
{
	watch_all(to_vsock(vdev)); /* not active: nothing is watched */
}

static void vsock_resume(struct virtio_dev *vdev)
{
	struct vsock *v = to_vsock(vdev);

	watch_all(v);
	vsock_event(v);
	vsock_rx(v);
}

static void vsock_config_read(struct virtio_dev *vdev, uint32_t off, void *data, unsigned len)
{
	memcpy(data, to_vsock(vdev)->config + off, len);
}

static void vsock_destroy(struct virtio_dev *vdev)
{
	struct vsock *v = to_vsock(vdev);

	drop_all(v);
	for (unsigned i = 0; i < MAX_CONNS; i++)
		free(v->conns[i].buf);
	if (v->listen_fd >= 0) {
		evloop_del_fd(vdev->loop, v->listen_fd);
		close(v->listen_fd);
		unlink(v->spec.path);
	}
	free(v->rx_elem);
	free(v->tx_elem);
	free(v->ev_elem);
	free(v);
}

static const struct virtio_dev_ops vsock_ops = {
	.config_read = vsock_config_read,
	.start = vsock_start,
	.queue_notify = vsock_queue_notify,
	.stop = vsock_stop,
	.pause = vsock_pause,
	.resume = vsock_resume,
	.destroy = vsock_destroy,
};

int virtio_vsock_create(struct vm *vm, const struct vsock_spec *spec, struct virtio_dev **out,
			char *err, size_t errlen)
{
	struct virtio_dev_params p = {
		.name = "virtio-vsock0",
		.device_id = VIRTIO_ID_VSOCK,
		.class_code = 0x078000, /* simple communication controller, other */
		.nqueues = 3,
		.queue_size = VSOCK_QUEUE_SIZE,
		.config_len = CFG_LEN,
		.ops = &vsock_ops,
	};
	struct vsock *v;
	int ret;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->spec = *spec;
	for (unsigned i = 0; i < MAX_CONNS; i++)
		v->conns[i].fd = -1;
	put_le(v->config, spec->cid, 8);
	v->rx_elem = virtq_elem_alloc(VSOCK_QUEUE_SIZE);
	v->tx_elem = virtq_elem_alloc(VSOCK_QUEUE_SIZE);
	v->ev_elem = virtq_elem_alloc(VSOCK_QUEUE_SIZE);
	if (!v->rx_elem || !v->tx_elem || !v->ev_elem) {
		ret = -ENOMEM;
		goto err_free;
	}
	v->listen_fd = unixsock_listen(spec->path, 16);
	if (v->listen_fd < 0) {
		ret = v->listen_fd;
		snprintf(err, errlen, "--vsock socket=%s: %s", spec->path,
			 ret == -EADDRINUSE ? "a live socket is already there" : strerror(-ret));
		goto err_free;
	}
	p.opaque = v;
	ret = virtio_dev_init(&v->vdev, vm, &p);
	if (ret) {
		snprintf(err, errlen, "virtio-vsock: cannot create the PCI function: %s",
			 strerror(-ret));
		close(v->listen_fd);
		unlink(spec->path);
		goto err_free;
	}
	ret = evloop_add_fd(v->vdev.loop, v->listen_fd, 0, accept_cb, v);
	if (!ret)
		ret = virtio_dev_attach(&v->vdev);
	if (ret) {
		snprintf(err, errlen, "virtio-vsock: cannot attach: %s", strerror(-ret));
		virtio_dev_destroy(&v->vdev);
		return ret;
	}
	*out = &v->vdev;
	return 0;
err_free:
	free(v->rx_elem);
	free(v->tx_elem);
	free(v->ev_elem);
	free(v);
	return ret;
}

/* ---- saved state ---- */

/* Version 2 adds the next host port: a restored worker must not give a
 * new connection the port pair of one the guest had before the save,
 * for the guest may still send that one's packets (queued before the
 * save, or sent before it takes the TRANSPORT_RESET) and they would
 * land in the new stream. */
#define VSOCK_STATE_VERSION 2
/* A version 1 record has no next port: its worker began at 0, so begin
 * half the port space away. */
#define V1_NEXT_PORT (HOST_PORT_BASE >> 1)

void virtio_vsock_save(struct virtio_dev *vdev, struct state_writer *w)
{
	struct vsock *v = to_vsock(vdev);

	virtio_dev_lock(vdev);
	state_begin(w, STATE_SECTION_VIRTIO_DEV, vdev->pci.slot, VSOCK_STATE_VERSION);
	state_put_u64(w, v->spec.cid);
	state_put_u32(w, v->next_port);
	state_end(w);
	virtio_dev_unlock(vdev);
}

int virtio_vsock_restore(struct virtio_dev *vdev, const struct state_file *f, char *err,
			 size_t errlen)
{
	struct vsock *v = to_vsock(vdev);
	struct state_reader r;
	uint32_t next_port = V1_NEXT_PORT;
	uint64_t cid;

	if (state_file_find(f, STATE_SECTION_VIRTIO_DEV, vdev->pci.slot, &r)) {
		snprintf(err, errlen, "%s: the state has no vsock record for it", vdev->name);
		return -ENOENT;
	}
	cid = state_get_u64(&r);
	if (r.version == VSOCK_STATE_VERSION)
		next_port = state_get_u32(&r);
	if (state_reader_done(&r) || (r.version != 1 && r.version != VSOCK_STATE_VERSION)) {
		snprintf(err, errlen, "%s: the saved vsock record has the wrong length or version",
			 vdev->name);
		return -EINVAL;
	}
	if (cid != v->spec.cid) {
		snprintf(err, errlen, "%s: the state was saved with guest CID %" PRIu64
			 ", this VM has %" PRIu32 "; give --vsock cid=%" PRIu64, vdev->name, cid,
			 v->spec.cid, cid);
		return -EINVAL;
	}
	virtio_dev_lock(vdev);
	/* The guest's connections were with the old worker's sockets. */
	drop_all(v);
	v->next_port = next_port;
	v->reset_event = true;
	vsock_event(v);
	virtio_dev_unlock(vdev);
	return 0;
}
