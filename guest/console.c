/* `console`: a ring-3 virtio-console driver for port 0 (no MULTIPORT:
 * receiveq0 and transmitq0). It writes a greeting line to the host side and
 * then, for as long as the guest runs, echoes back whatever it receives. */
#include "virtio.h"

#define VIRTIO_ID_CONSOLE 3
#define CON_BUFS 16
#define CON_BUF_SIZE 512
#define GREETING "cloison-testguest console: echoing\n"

struct console_dev {
	struct virtio_dev v;
	uint8_t *rx[CON_BUFS], *tx[CON_BUFS];
	bool tx_busy[CON_BUFS];
	int16_t rx_of_head[VQ_MAX_SIZE], tx_of_head[VQ_MAX_SIZE];
	uint64_t echoed;
};

static void post_rx(struct console_dev *c, unsigned i)
{
	struct virtio_buf b = { (uint64_t)(uintptr_t)c->rx[i], CON_BUF_SIZE, true };
	int head = virtq_add(&c->v.vq[0], &b, 1);

	if (head >= 0)
		c->rx_of_head[head] = (int16_t)i;
}

static void reap_tx(struct console_dev *c)
{
	int head;

	while ((head = virtq_get(&c->v.vq[1], NULL)) >= 0)
		c->tx_busy[c->tx_of_head[head]] = false;
}

/* Queues len (<= CON_BUF_SIZE) bytes; false when every buffer is in flight. */
static bool con_write(struct console_dev *c, const void *data, uint32_t len)
{
	reap_tx(c);
	for (unsigned i = 0; i < CON_BUFS; i++) {
		struct virtio_buf b = { (uint64_t)(uintptr_t)c->tx[i], len, false };
		int head;

		if (c->tx_busy[i])
			continue;
		memcpy(c->tx[i], data, len);
		head = virtq_add(&c->v.vq[1], &b, 1);
		if (head < 0)
			return false;
		c->tx_of_head[head] = (int16_t)i;
		c->tx_busy[i] = true;
		virtq_kick(&c->v.vq[1]);
		return true;
	}
	return false;
}

int console_start(struct guest *g, struct console_dev **res)
{
	struct console_dev *c = mm_alloc(g, sizeof(*c), 64);

	if (!c || virtio_open(g, VIRTIO_ID_CONSOLE, 0, 0, 2, 1u << 0, &c->v)) {
		out("RESULT console_error=no usable virtio-console device\n");
		return -1;
	}
	for (unsigned i = 0; i < CON_BUFS; i++)
		if (!(c->rx[i] = mm_alloc(g, CON_BUF_SIZE, 64)) ||
		    !(c->tx[i] = mm_alloc(g, CON_BUF_SIZE, 64)))
			return -1;
	virtio_ready(&c->v);
	for (unsigned i = 0; i < CON_BUFS && i < c->v.vq[0].size; i++)
		post_rx(c, i);
	virtq_kick(&c->v.vq[0]);
	if (!con_write(c, GREETING, sizeof(GREETING) - 1))
		return -1;
	out("RESULT console_ready=1\n");
	*res = c;
	return 0;
}

bool console_wakes(const struct console_dev *c) { return c->v.wake; }

bool console_poll(struct console_dev *c)
{
	bool any = false;
	uint32_t len;
	int head;

	while ((head = virtq_get(&c->v.vq[0], &len)) >= 0) {
		unsigned i = (unsigned)c->rx_of_head[head];
		if (len && len <= CON_BUF_SIZE && con_write(c, c->rx[i], len))
			c->echoed += len;
		post_rx(c, i);
		any = true;
	}
	if (any)
		virtq_kick(&c->v.vq[0]);
	reap_tx(c);
	return any;
}
