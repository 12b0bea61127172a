/* A ring-3 virtio-net driver for `ip=ADDR/PREFIX`: answers ARP for its
 * address, ICMP echo, and echoes UDP port 7, for as long as the guest runs.
 * Replies are built in place from the request and sent to the requester's
 * MAC, so no routing or ARP cache is needed. */
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

struct net_dev {
	struct guest *g;
	struct virtio_dev v;
	uint8_t mac[6];
	uint32_t ip;
	unsigned prefix;
	uint8_t *rx[RX_BUFS];
	uint8_t *tx[TX_BUFS];
	bool tx_busy[TX_BUFS];
	int16_t rx_of_head[VQ_MAX_SIZE], tx_of_head[VQ_MAX_SIZE];
	uint64_t arp, icmp, udp, dropped;
	unsigned link; /* last VIRTIO_NET_S_LINK_UP seen (with F_STATUS) */
	uint64_t link_checked; /* timer_ns() of the last look */
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

static void handle_frame(struct net_dev *n, uint8_t *f, uint32_t len)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	if (len < ETH_HLEN || (memcmp(f, n->mac, 6) != 0 && memcmp(f, bcast, 6) != 0))
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
	announce(n);
	out("RESULT net_mac=%02x:%02x:%02x:%02x:%02x:%02x\n", n->mac[0], n->mac[1], n->mac[2],
	    n->mac[3], n->mac[4], n->mac[5]);
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
