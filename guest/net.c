/* A ring-3 virtio-net driver for `ip=ADDR/PREFIX` or `ip=dhcp`: answers
 * ARP for its address, ICMP echo, and echoes UDP port 7, for as long as
 * the guest runs. Replies are built in place from the request and sent to
 * the requester's MAC, so no routing or ARP cache is needed. With ip=dhcp
 * a DHCP client (RFC 2131: DISCOVER, OFFER, REQUEST, ACK) takes the
 * address, prefix and router first; netbench to a peer off the subnet
 * goes through that router. */
#include "virtio.h"

#define VIRTIO_NET_F_MAC (1ULL << 5)
#define VIRTIO_NET_F_STATUS (1ULL << 16)
#define NET_CFG_STATUS 6 /* le16 status after mac[6]; bit 0 VIRTIO_NET_S_LINK_UP */
#define LINK_CHECK_NS 100000000ULL
#define NET_HDR 12 /* struct virtio_net_hdr_v1 (num_buffers always there in 1.x) */
#define BUF_SIZE 2048
#define RX_BUFS 128
#define TX_BUFS 64
#define ETH_HLEN 14
#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define UDP_ECHO_PORT 7
#define BENCH_PORT 40007 /* netbench's own UDP port (not 7: replies must not bounce) */
#define BENCH_ICMP_ID 0xc105
#define BENCH_WINDOW 32
#define NS_PER_S ((uint64_t)1000000000)
#define BENCH_PINGS 200
#define BENCH_PING_GAP_NS 5000000ULL /* as the host side's ping -i 0.005 */
#define BENCH_WAIT_NS 200000000ULL   /* a lost datagram: refill after this */
#define DHCP_CLIENT_PORT 68
#define DHCP_SERVER_PORT 67
#define DHCP_COOKIE 0x63825363
#define DHCP_TRIES 10 /* one DISCOVER or REQUEST a second */
#define BOOTP_LEN 236 /* the fixed BOOTP part, before the cookie */

/* netbench=PEER: the client side, toward another guest's ip= server. */
struct net_bench {
	bool on, have_mac, got_seq;
	uint32_t peer, hop; /* hop: the peer, or the router to it */
	uint8_t peer_mac[6];
	uint16_t seq, size; /* the reply waited for; UDP payload size */
	uint64_t echoed;
	uint8_t *frame;
};

struct net_dev {
	struct guest *g;
	struct virtio_dev v;
	uint8_t mac[6];
	uint32_t ip;
	unsigned prefix;
	uint32_t gw; /* the router DHCP gave, 0 if none */
	struct {
		bool on;
		uint32_t xid, offered, server, mask, router;
		uint8_t type; /* of the last answer: 2 OFFER, 5 ACK, 6 NAK; 0 none */
	} dhcp;
	uint8_t *rx[RX_BUFS];
	uint8_t *tx[TX_BUFS];
	bool tx_busy[TX_BUFS];
	int16_t rx_of_head[VQ_MAX_SIZE], tx_of_head[VQ_MAX_SIZE];
	uint64_t arp, icmp, udp, dropped;
	unsigned link; /* last VIRTIO_NET_S_LINK_UP seen (with F_STATUS) */
	uint64_t link_checked; /* timer_ns() of the last look */
	struct net_bench b;
};

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

static uint16_t csum(const uint8_t *p, size_t len)
{
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += be16(p + i);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void post_rx(struct net_dev *n, unsigned i)
{
	struct virtio_buf b = { (uint64_t)(uintptr_t)n->rx[i], BUF_SIZE, true };
	int head = virtq_add(&n->v.vq[0], &b, 1);

	if (head >= 0)
		n->rx_of_head[head] = (int16_t)i;
}

static void reap_tx(struct net_dev *n)
{
	int head;

	while ((head = virtq_get(&n->v.vq[1], NULL)) >= 0)
		n->tx_busy[n->tx_of_head[head]] = false;
}

/* Sends len bytes of frame (without the virtio-net header). */
static void send_frame(struct net_dev *n, const uint8_t *frame, uint32_t len)
{
	struct virtio_buf b;
	int head;

	reap_tx(n);
	for (unsigned i = 0; i < TX_BUFS; i++) {
		if (n->tx_busy[i])
			continue;
		memset(n->tx[i], 0, NET_HDR);
		memcpy(n->tx[i] + NET_HDR, frame, len);
		b = (struct virtio_buf){ (uint64_t)(uintptr_t)n->tx[i], NET_HDR + len, false };
		head = virtq_add(&n->v.vq[1], &b, 1);
		if (head < 0)
			break;
		n->tx_of_head[head] = (int16_t)i;
		n->tx_busy[i] = true;
		virtq_kick(&n->v.vq[1]);
		return;
	}
	n->dropped++;
}

static void answer_arp(struct net_dev *n, uint8_t *f, uint32_t len)
{
	uint8_t *a = f + ETH_HLEN;

	if (len < ETH_HLEN + 28 || be16(a) != 1 || be16(a + 2) != ETH_IP || a[4] != 6 || a[5] != 4 ||
	    be16(a + 6) != 1 || be32(a + 24) != n->ip)
		return;
	memcpy(f, f + 6, 6); /* to the asker */
	memcpy(f + 6, n->mac, 6);
	put16(a + 6, 2); /* reply */
	memcpy(a + 18, a + 8, 10); /* their sha+spa become tha+tpa */
	memcpy(a + 8, n->mac, 6);
	put32(a + 14, n->ip);
	n->arp++;
	send_frame(n, f, ETH_HLEN + 28);
}

static void answer_ip(struct net_dev *n, uint8_t *f, uint32_t len)
{
	uint8_t *ip = f + ETH_HLEN, *l4, tmp[4];
	unsigned ihl, total, l4len;

	if (len < ETH_HLEN + 20 || ip[0] >> 4 != 4)
		return;
	ihl = (ip[0] & 0xfu) * 4;
	total = be16(ip + 2);
	if (ihl < 20 || total < ihl || ETH_HLEN + total > len || be32(ip + 16) != n->ip ||
	    (be16(ip + 6) & 0x3fff)) /* fragments are not echoed */
		return;
	l4 = ip + ihl;
	l4len = total - ihl;
	if (ip[9] == 1 && l4len >= 8 && l4[0] == 8) { /* ICMP echo request */
		l4[0] = 0;
		put16(l4 + 2, 0);
		put16(l4 + 2, csum(l4, l4len));
		n->icmp++;
	} else if (ip[9] == 17 && l4len >= 8 && be16(l4 + 2) == UDP_ECHO_PORT) {
		memcpy(tmp, l4, 2);
		memcpy(l4, l4 + 2, 2);
		memcpy(l4 + 2, tmp, 2);
		put16(l4 + 6, 0); /* no UDP checksum: allowed over IPv4 */
		n->udp++;
	} else {
		return;
	}
	memcpy(tmp, ip + 12, 4); /* swap addresses */
	memcpy(ip + 12, ip + 16, 4);
	memcpy(ip + 16, tmp, 4);
	ip[8] = 64;
	put16(ip + 10, 0);
	put16(ip + 10, csum(ip, ihl));
	memcpy(f, f + 6, 6);
	memcpy(f + 6, n->mac, 6);
	send_frame(n, f, ETH_HLEN + total);
}

/* netbench: takes the peer's ARP reply and its echo replies. */
static bool bench_rx(struct net_dev *n, const uint8_t *f, uint32_t len)
{
	const uint8_t *a = f + ETH_HLEN, *l4;
	unsigned ihl;

	if (be16(f + 12) == ETH_ARP) {
		if (len >= ETH_HLEN + 28 && be16(a + 6) == 2 && be32(a + 14) == n->b.hop) {
			memcpy(n->b.peer_mac, a + 8, 6);
			n->b.have_mac = true;
		}
		return false;
	}
	if (be16(f + 12) != ETH_IP || len < ETH_HLEN + 28 || a[0] >> 4 != 4 || be32(a + 12) != n->b.peer ||
	    be32(a + 16) != n->ip)
		return false;
	ihl = (a[0] & 0xfu) * 4;
	l4 = a + ihl;
	if (ETH_HLEN + ihl + 8 > len)
		return false;
	if (a[9] == 1 && l4[0] == 0 && be16(l4 + 4) == BENCH_ICMP_ID) {
		n->b.got_seq |= be16(l4 + 6) == n->b.seq;
		return true;
	}
	if (a[9] == 17 && be16(l4) == UDP_ECHO_PORT && be16(l4 + 2) == BENCH_PORT) {
		if (be16(l4 + 4) == 8 + n->b.size && ETH_HLEN + ihl + 10 <= len) {
			n->b.echoed++;
			n->b.got_seq |= be16(l4 + 8) == n->b.seq;
		}
		return true;
	}
	return false;
}

/* ---- DHCP client (ip=dhcp) ---- */

/* A DHCP answer for us (UDP to port 68 with our xid): its type, address,
 * server, mask and router go to n->dhcp. */
static bool dhcp_rx(struct net_dev *n, const uint8_t *f, uint32_t len)
{
	const uint8_t *ip = f + ETH_HLEN, *u, *b, *o, *end;
	unsigned ihl;

	if (be16(f + 12) != ETH_IP || len < ETH_HLEN + 20 || ip[0] >> 4 != 4 || ip[9] != 17)
		return false;
	ihl = (ip[0] & 0xfu) * 4;
	if (ihl < 20 || len < ETH_HLEN + ihl + 8 + BOOTP_LEN + 4)
		return false;
	u = ip + ihl;
	if (be16(u + 2) != DHCP_CLIENT_PORT)
		return false;
	b = u + 8;
	end = f + len;
	if (b[0] != 2 || be32(b + 4) != n->dhcp.xid || memcmp(b + 28, n->mac, 6) != 0 ||
	    be32(b + BOOTP_LEN) != DHCP_COOKIE)
		return true; /* to port 68, not ours */
	uint8_t type = 0;
	uint32_t server = 0, mask = 0, router = 0;
	for (o = b + BOOTP_LEN + 4; o < end && *o != 255;) {
		if (*o == 0) {
			o++;
			continue;
		}
		if (o + 2 > end || o + 2 + o[1] > end)
			break;
		if (o[0] == 53 && o[1] == 1)
			type = o[2];
		else if (o[0] == 54 && o[1] == 4)
			server = be32(o + 2);
		else if (o[0] == 1 && o[1] == 4)
			mask = be32(o + 2);
		else if (o[0] == 3 && o[1] >= 4)
			router = be32(o + 2);
		o += 2 + o[1];
	}
	if (type != 2 && type != 5 && type != 6)
		return true;
	n->dhcp.type = type;
	n->dhcp.offered = be32(b + 16); /* yiaddr */
	if (server)
		n->dhcp.server = server;
	if (mask)
		n->dhcp.mask = mask;
	if (router)
		n->dhcp.router = router;
	return true;
}

/* DISCOVER (type 1) or REQUEST (type 3) for n->dhcp.offered, broadcast
 * from 0.0.0.0 with the broadcast flag, so the answer comes to ff:ff:.. */
static void dhcp_send(struct net_dev *n, uint8_t type)
{
	uint8_t f[ETH_HLEN + 20 + 8 + BOOTP_LEN + 4 + 32], *ip = f + ETH_HLEN, *u = ip + 20,
		*b = u + 8, *o = b + BOOTP_LEN + 4;

	memset(f, 0, sizeof(f));
	memset(f, 0xff, 6);
	memcpy(f + 6, n->mac, 6);
	put16(f + 12, ETH_IP);
	b[0] = 1; /* BOOTREQUEST */
	b[1] = 1; /* Ethernet */
	b[2] = 6;
	put32(b + 4, n->dhcp.xid);
	put16(b + 10, 0x8000); /* broadcast: we cannot take unicast before we have the address */
	memcpy(b + 28, n->mac, 6);
	put32(b + BOOTP_LEN, DHCP_COOKIE);
	*o++ = 53, *o++ = 1, *o++ = type;
	if (type == 3) {
		*o++ = 50, *o++ = 4, put32(o, n->dhcp.offered), o += 4;
		*o++ = 54, *o++ = 4, put32(o, n->dhcp.server), o += 4;
	}
	*o++ = 55, *o++ = 2, *o++ = 1, *o++ = 3; /* ask for the mask and the router */
	*o++ = 255;
	unsigned udp_len = (unsigned)(o - u), total = 20 + udp_len;
	put16(u, DHCP_CLIENT_PORT);
	put16(u + 2, DHCP_SERVER_PORT);
	put16(u + 4, (uint16_t)udp_len);
	put16(u + 6, 0); /* no UDP checksum: allowed over IPv4 */
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)total);
	ip[8] = 64;
	ip[9] = 17;
	put32(ip + 12, 0);
	put32(ip + 16, 0xffffffff);
	put16(ip + 10, csum(ip, 20));
	send_frame(n, f, ETH_HLEN + total);
}

/* Sends type until an answer of want (or a NAK) came, DHCP_TRIES times. */
static uint8_t dhcp_exchange(struct net_dev *n, uint8_t type, uint8_t want)
{
	n->dhcp.type = 0;
	for (unsigned i = 0; i < DHCP_TRIES; i++) {
		uint64_t end = timer_ns(n->g) + NS_PER_S;

		dhcp_send(n, type);
		while (timer_ns(n->g) < end) {
			if (n->dhcp.type == want || n->dhcp.type == 6)
				return n->dhcp.type;
			if (!net_poll(n))
				cpu_relax();
		}
	}
	return 0;
}

static unsigned prefix_of(uint32_t mask)
{
	unsigned p = 0;

	while (p < 32 && (mask & (0x80000000u >> p)))
		p++;
	return p;
}

static int dhcp_run(struct net_dev *n)
{
	n->dhcp.on = true;
	n->dhcp.xid = (uint32_t)timer_ns(n->g) ^ be32(n->mac + 2);
	uint8_t got = dhcp_exchange(n, 1, 2);
	if (got == 2)
		got = dhcp_exchange(n, 3, 5);
	n->dhcp.on = false;
	if (got != 5 || !n->dhcp.offered) {
		out("RESULT net_dhcp=%s\n", got == 6 ? "nak" : "no answer");
		return -1;
	}
	n->ip = n->dhcp.offered;
	n->prefix = n->dhcp.mask ? prefix_of(n->dhcp.mask) : 24;
	n->gw = n->dhcp.router;
	out("RESULT net_dhcp=ok\n");
	out("RESULT net_gw=%u.%u.%u.%u\n", n->gw >> 24, n->gw >> 16 & 0xff, n->gw >> 8 & 0xff,
	    n->gw & 0xff);
	return 0;
}

static void handle_frame(struct net_dev *n, uint8_t *f, uint32_t len)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	if (len < ETH_HLEN || (memcmp(f, n->mac, 6) != 0 && memcmp(f, bcast, 6) != 0))
		return;
	if (n->b.on && bench_rx(n, f, len))
		return;
	if (n->dhcp.on && dhcp_rx(n, f, len))
		return;
	if (be16(f + 12) == ETH_ARP)
		answer_arp(n, f, len);
	else if (be16(f + 12) == ETH_IP)
		answer_ip(n, f, len);
}

bool net_wakes(const struct net_dev *n) { return n->v.wake; }

bool net_poll(struct net_dev *n)
{
	bool any = false;
	uint32_t len;
	int head;

	while ((head = virtq_get(&n->v.vq[0], &len)) >= 0) {
		unsigned i = (unsigned)n->rx_of_head[head];
		if (len > NET_HDR && len <= BUF_SIZE)
			handle_frame(n, n->rx[i] + NET_HDR, len - NET_HDR);
		post_rx(n, i);
		any = true;
	}
	if (any)
		virtq_kick(&n->v.vq[0]);
	reap_tx(n);
	/* The link status, looked at every 100 ms (each look is an exit), and
	 * reported when it changes. */
	if ((n->v.features & VIRTIO_NET_F_STATUS) && timer_ns(n->g) - n->link_checked >= LINK_CHECK_NS) {
		unsigned link = virtio_cfg8(&n->v, NET_CFG_STATUS) & 1;

		n->link_checked = timer_ns(n->g);
		if (link != n->link) {
			n->link = link;
			out("RESULT net_link=%u\n", link);
		}
	}
	return any;
}

static void announce(struct net_dev *n)
{
	uint8_t f[ETH_HLEN + 28], *a = f + ETH_HLEN;

	memset(f, 0xff, 6);
	memcpy(f + 6, n->mac, 6);
	put16(f + 12, ETH_ARP);
	put16(a, 1);
	put16(a + 2, ETH_IP);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, 1);
	memcpy(a + 8, n->mac, 6);
	put32(a + 14, n->ip);
	memset(a + 18, 0, 6);
	put32(a + 24, n->ip); /* gratuitous: who-has our own address */
	send_frame(n, f, sizeof(f));
}

int net_start(struct guest *g, uint32_t ip, unsigned prefix, struct net_dev **res)
{
	struct net_dev *n = mm_alloc(g, sizeof(*n), 64);

	if (!n || virtio_open(g, VIRTIO_ID_NET, 0, VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS, 2, 1u << 0, &n->v)) {
		out("RESULT net_error=no usable virtio-net device\n");
		return -1;
	}
	n->g = g;
	n->ip = ip;
	n->prefix = prefix;
	if (n->v.features & VIRTIO_NET_F_MAC) {
		for (unsigned i = 0; i < 6; i++)
			n->mac[i] = virtio_cfg8(&n->v, i);
	} else {
		static const uint8_t fallback[6] = { 0x52, 0x54, 0x00, 0xc1, 0x05, 0x01 };
		memcpy(n->mac, fallback, 6);
	}
	for (unsigned i = 0; i < RX_BUFS; i++)
		if (!(n->rx[i] = mm_alloc(g, BUF_SIZE, BUF_SIZE)))
			return -1;
	for (unsigned i = 0; i < TX_BUFS; i++)
		if (!(n->tx[i] = mm_alloc(g, BUF_SIZE, BUF_SIZE)))
			return -1;
	virtio_ready(&n->v);
	for (unsigned i = 0; i < RX_BUFS && i < n->v.vq[0].size; i++)
		post_rx(n, i);
	virtq_kick(&n->v.vq[0]);
	out("RESULT net_mac=%02x:%02x:%02x:%02x:%02x:%02x\n", n->mac[0], n->mac[1], n->mac[2],
	    n->mac[3], n->mac[4], n->mac[5]);
	if (g->opt_dhcp) {
		if (dhcp_run(n))
			return -1;
		ip = n->ip;
		prefix = n->prefix;
		g->opt_ip = ip; /* what the agent reports */
		g->opt_prefix = prefix;
	}
	announce(n);
	out("net: %s\n", n->v.wake ? "MSI-X wake-ups" : "polling every 1 ms");
	if (n->v.features & VIRTIO_NET_F_STATUS) {
		n->link = virtio_cfg8(&n->v, NET_CFG_STATUS) & 1;
		n->link_checked = timer_ns(g);
		out("RESULT net_link=%u\n", n->link);
	}
	out("RESULT net_ip=%u.%u.%u.%u/%u\n", ip >> 24, ip >> 16 & 0xff, ip >> 8 & 0xff, ip & 0xff,
	    prefix);
	*res = n;
	return 0;
}

/* One IPv4 packet to the peer: proto 1 (ICMP echo request, seq) or 17
 * (UDP from BENCH_PORT to port 7), with payload bytes after the 8-byte
 * header; the payload starts with seq. */
static void bench_send(struct net_dev *n, unsigned proto, uint16_t seq, unsigned payload)
{
	uint8_t *f = n->b.frame, *ip = f + ETH_HLEN, *l4 = ip + 20;
	unsigned total = 20 + 8 + payload;

	memcpy(f, n->b.peer_mac, 6);
	memcpy(f + 6, n->mac, 6);
	put16(f + 12, ETH_IP);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)total);
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = (uint8_t)proto;
	put32(ip + 12, n->ip);
	put32(ip + 16, n->b.peer);
	put16(ip + 10, csum(ip, 20));
	put16(l4 + 8, seq);
	if (proto == 1) {
		l4[0] = 8;
		l4[1] = 0;
		put16(l4 + 2, 0);
		put16(l4 + 4, BENCH_ICMP_ID);
		put16(l4 + 6, seq);
		put16(l4 + 2, csum(l4, 8 + payload));
	} else {
		put16(l4, BENCH_PORT);
		put16(l4 + 2, UDP_ECHO_PORT);
		put16(l4 + 4, (uint16_t)(8 + payload));
		put16(l4 + 6, 0);
	}
	send_frame(n, f, ETH_HLEN + total);
}

/* Polls until the reply to n->b.seq came or the deadline passed. */
static bool bench_wait(struct net_dev *n, uint64_t deadline)
{
	while (!n->b.got_seq && timer_ns(n->g) < deadline)
		if (!net_poll(n))
			cpu_relax();
	return n->b.got_seq;
}

/* Round trips of one packet in flight for secs: how many came back. */
static uint64_t bench_rtt(struct net_dev *n, unsigned proto, unsigned payload, uint64_t secs,
			  uint64_t *ns)
{
	uint64_t t0 = timer_ns(n->g), end = t0 + secs * NS_PER_S, done = 0;

	n->b.size = (uint16_t)payload;
	while (timer_ns(n->g) < end) {
		n->b.seq++;
		n->b.got_seq = false;
		bench_send(n, proto, n->b.seq, payload);
		done += bench_wait(n, timer_ns(n->g) + BENCH_WAIT_NS);
	}
	*ns = timer_ns(n->g) - t0;
	return done;
}

/* Points the bench at peer and ARPs for it (or for the router to it, when
 * it is off our subnet): true once its MAC is known (up to 5 s). */
static bool bench_resolve(struct net_dev *n, uint32_t peer)
{
	struct guest *g = n->g;

	if (!n->b.frame && !(n->b.frame = mm_alloc(g, BUF_SIZE, 64)))
		return false;
	n->b.peer = peer;
	n->b.on = true;
	/* A peer off our subnet is reached through the router, whose MAC
	 * frames to it carry. */
	uint32_t mask = n->prefix ? 0xffffffffu << (32 - n->prefix) : 0;
	n->b.hop = (n->gw && (peer & mask) != (n->ip & mask)) ? n->gw : peer;
	for (unsigned i = 0; i < 50 && !n->b.have_mac; i++) { /* ARP, up to 5 s */
		uint8_t f[ETH_HLEN + 28], *a = f + ETH_HLEN;

		memset(f, 0xff, 6);
		memcpy(f + 6, n->mac, 6);
		put16(f + 12, ETH_ARP);
		put16(a, 1);
		put16(a + 2, ETH_IP);
		a[4] = 6;
		a[5] = 4;
		put16(a + 6, 1);
		memcpy(a + 8, n->mac, 6);
		put32(a + 14, n->ip);
		memset(a + 18, 0, 6);
		put32(a + 24, n->b.hop);
		send_frame(n, f, sizeof(f));
		uint64_t end = timer_ns(g) + NS_PER_S / 10;
		while (!n->b.have_mac && timer_ns(g) < end)
			if (!net_poll(n))
				cpu_relax();
	}
	return n->b.have_mac;
}

int net_bench(struct net_dev *n, uint32_t peer, uint64_t secs)
{
	struct guest *g = n->g;
	uint64_t t0, min = ~0ULL, sum = 0, got = 0, ns, out_n, end;

	if (!bench_resolve(n, peer)) {
		out("RESULT netbench_error=no ARP reply from the peer\n");
		n->b.on = false;
		return 0;
	}
	/* ICMP echo, 56 bytes of data as ping sends, one every 5 ms. */
	for (unsigned i = 0; i < BENCH_PINGS; i++) {
		t0 = timer_ns(g);
		n->b.seq++;
		n->b.got_seq = false;
		bench_send(n, 1, n->b.seq, 56);
		if (bench_wait(n, t0 + NS_PER_S)) {
			ns = timer_ns(g) - t0;
			min = ns < min ? ns : min;
			sum += ns;
			got++;
		}
		while (timer_ns(g) < t0 + BENCH_PING_GAP_NS)
			if (!net_poll(n))
				cpu_relax();
	}
	out("RESULT netbench_ping_min_ns=%lu\n", got ? min : 0);
	out("RESULT netbench_ping_avg_ns=%lu\n", got ? sum / got : 0);
	out("RESULT netbench_ping_lost=%lu\n", BENCH_PINGS - got);
	got = bench_rtt(n, 17, 64, secs, &ns);
	out("RESULT netbench_udp_rtt_per_s=%lu\n", got * NS_PER_S / ns);
	/* 1400-byte datagrams, BENCH_WINDOW in flight. */
	n->b.size = 1400;
	n->b.echoed = 0;
	n->b.seq++; /* no reply carries it: got_seq stays false */
	out_n = 0;
	t0 = timer_ns(g);
	end = t0 + secs * NS_PER_S;
	for (uint64_t last = t0, now = t0; now < end; now = timer_ns(g)) {
		while (out_n - n->b.echoed < BENCH_WINDOW) {
			bench_send(n, 17, 0, 1400);
			out_n++;
		}
		if (net_poll(n)) {
			last = now;
		} else if (now - last > BENCH_WAIT_NS) {
			out_n = n->b.echoed; /* lost ones: refill the window */
			last = now;
		} else {
			cpu_relax();
		}
	}
	ns = timer_ns(g) - t0;
	out("RESULT netbench_udp_per_s=%lu\n", n->b.echoed * NS_PER_S / ns);
	out("RESULT netbench_udp_bytes_per_s=%lu\n", n->b.echoed * 1400 * NS_PER_S / ns);
	out("RESULT netbench_dropped=%lu\n", n->dropped);
	out("RESULT netbench_done=1\n");
	n->b.on = false;
	return 0;
}

/* netflood=PEER: 1400-byte UDP datagrams to PEER's port 9 (discard) as
 * fast as the transmit ring takes them, for secs; what a bandwidth cap is
 * measured against on the other side. */
int net_flood(struct net_dev *n, uint32_t peer, uint64_t secs)
{
	struct guest *g = n->g;
	uint64_t sent = 0, t0, end;

	if (!bench_resolve(n, peer)) {
		out("RESULT netflood_error=no ARP reply from the peer\n");
		n->b.on = false;
		return 0;
	}
	n->b.on = false;
	t0 = timer_ns(g);
	end = t0 + secs * NS_PER_S;
	uint64_t dropped0 = n->dropped;
	while (timer_ns(g) < end) {
		uint8_t *f = n->b.frame, *ip = f + ETH_HLEN, *u = ip + 20;
		unsigned total = 20 + 8 + 1400;

		memcpy(f, n->b.peer_mac, 6);
		memcpy(f + 6, n->mac, 6);
		put16(f + 12, ETH_IP);
		memset(ip, 0, 28);
		ip[0] = 0x45;
		put16(ip + 2, (uint16_t)total);
		put16(ip + 6, 0x4000);
		ip[8] = 64;
		ip[9] = 17;
		put32(ip + 12, n->ip);
		put32(ip + 16, peer);
		put16(ip + 10, csum(ip, 20));
		put16(u, BENCH_PORT);
		put16(u + 2, 9);
		put16(u + 4, 8 + 1400);
		uint64_t before = n->dropped;
		send_frame(n, f, ETH_HLEN + total);
		if (n->dropped == before)
			sent++;
		else
			net_poll(n); /* ring full: reap and go on */
	}
	out("RESULT netflood_sent=%lu\n", sent);
	out("RESULT netflood_ring_full=%lu\n", n->dropped - dropped0);
	out("RESULT netflood_done=1\n");
	return 0;
}

/* ---- netsend=KIND: frames for a switch port's guards ---- */

#define GUARD_FRAMES 5
#define ETH_TEST 0x88b5 /* IEEE local experimental */
#define ETH_IP6 0x86dd

static const char guard_marker[] = "cloison-test-frame";

/* An IPv6 link-local address from the MAC (modified EUI-64). */
static void link_local(const uint8_t mac[6], uint8_t out[16])
{
	memset(out, 0, 16);
	out[0] = 0xfe;
	out[1] = 0x80;
	out[8] = mac[0] ^ 0x02;
	out[9] = mac[1];
	out[10] = mac[2];
	out[11] = 0xff;
	out[12] = 0xfe;
	out[13] = mac[3];
	out[14] = mac[4];
	out[15] = mac[5];
}

/* honest/spoof: a broadcast frame of ethertype 0x88b5 carrying the marker,
 * from our MAC or from a forged one. dhcpoffer: a DHCP OFFER from port 67
 * to 68, broadcast, as a rogue server would send it. ra: an ICMPv6 router
 * advertisement to all nodes. */
static uint32_t guard_frame(struct net_dev *n, const char *kind, size_t len, uint8_t *f)
{
	static const uint8_t forged[6] = { 0x52, 0x54, 0x00, 0x66, 0x66, 0x66 };
	uint8_t *p = f + ETH_HLEN;

	memset(f, 0, 400);
	memset(f, 0xff, 6);
	memcpy(f + 6, n->mac, 6);
	if (word_is(kind, len, "honest") || word_is(kind, len, "spoof")) {
		if (kind[0] == 's')
			memcpy(f + 6, forged, 6);
		put16(f + 12, ETH_TEST);
		memcpy(p, guard_marker, sizeof(guard_marker) - 1);
		return ETH_HLEN + (uint32_t)sizeof(guard_marker) - 1 + 40;
	}
	if (word_is(kind, len, "dhcpoffer")) {
		uint8_t *u = p + 20, *b = u + 8, *o = b + BOOTP_LEN;
		put16(f + 12, ETH_IP);
		b[0] = 2; /* BOOTREPLY */
		b[1] = 1;
		b[2] = 6;
		put32(o, DHCP_COOKIE);
		o[4] = 53, o[5] = 1, o[6] = 2, o[7] = 255; /* OFFER */
		unsigned udp_len = 8 + BOOTP_LEN + 8;
		put16(u, DHCP_SERVER_PORT);
		put16(u + 2, DHCP_CLIENT_PORT);
		put16(u + 4, (uint16_t)udp_len);
		p[0] = 0x45;
		put16(p + 2, (uint16_t)(20 + udp_len));
		p[8] = 64;
		p[9] = 17;
		put32(p + 12, n->ip);
		put32(p + 16, 0xffffffff);
		put16(p + 10, csum(p, 20));
		return ETH_HLEN + 20 + udp_len;
	}
	if (word_is(kind, len, "ra")) {
		static const uint8_t all_nodes[16] = { 0xff, 0x02, [15] = 1 };
		uint8_t *icmp = p + 40, pseudo[40 + 16];
		f[0] = 0x33, f[1] = 0x33, f[2] = 0, f[3] = 0, f[4] = 0, f[5] = 1;
		put16(f + 12, ETH_IP6);
		p[0] = 0x60;
		put16(p + 4, 16); /* payload: the 16-byte RA */
		p[6] = 58;	  /* ICMPv6 */
		p[7] = 255;
		link_local(n->mac, p + 8);
		memcpy(p + 24, all_nodes, 16);
		icmp[0] = 134; /* router advertisement */
		icmp[4] = 64;  /* current hop limit */
		put16(icmp + 6, 1800); /* router lifetime */
		/* checksum over the pseudo-header (source, destination, length,
		 * next header) and the message */
		memset(pseudo, 0, sizeof(pseudo));
		memcpy(pseudo, p + 8, 32);
		put32(pseudo + 32, 16);
		pseudo[39] = 58;
		memcpy(pseudo + 40, icmp, 16);
		put16(icmp + 2, csum(pseudo, sizeof(pseudo)));
		return ETH_HLEN + 40 + 16;
	}
	return 0;
}

int net_send_test(struct net_dev *n, const char *kind, size_t len)
{
	uint8_t f[400];
	uint32_t flen = guard_frame(n, kind, len, f);

	if (!flen)
		return -1;
	for (unsigned i = 0; i < GUARD_FRAMES; i++) {
		send_frame(n, f, flen);
		uint64_t end = timer_ns(n->g) + NS_PER_S / 20;
		while (timer_ns(n->g) < end)
			if (!net_poll(n))
				cpu_relax();
	}
	char name[16];
	memcpy(name, kind, len < sizeof(name) ? len : sizeof(name) - 1);
	name[len < sizeof(name) ? len : sizeof(name) - 1] = 0;
	out("RESULT netsend=%s:%u\n", name, GUARD_FRAMES);
	return 0;
}

void net_stop(struct net_dev *n)
{
	virtio_reset(&n->v);
}
