/* virtio-console (virtio 1.x 5.3) with one port (no MULTIPORT): a second
 * console next to COM1 that costs no exits per byte. The host side is a
 * unix socket the worker listens on (one client at a time: it receives
 * the guest's output and its input goes to the guest) or a file the
 * output is appended to. */
#include "vmm/virtio/console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/unixsock.h"
#include "vmm/virtio/virtio.h"

#define CONS_QUEUE_SIZE 64
#define CONS_RX 0
#define CONS_TX 1
#define CFG_LEN 12 /* cols, rows, max_nr_ports, emerg_wr */

struct console {
	struct virtio_dev vdev;
	struct console_spec spec;
	int listen_fd; /* unix: */
	int out_fd;    /* the client, or the file; -1 when nobody listens */
	bool is_file;
	bool rx_wait; /* no guest buffers: stop reading the client */
	uint32_t events;
	uint8_t config[CFG_LEN];
	struct virtq_elem *rx_elem, *tx_elem;
};

static struct console *to_cons(struct virtio_dev *vdev)
{
	return vdev->opaque;
}

static void watch_client(struct console *c)
{
	uint32_t want = (!c->rx_wait && virtio_dev_active(&c->vdev)) ? EPOLLIN : 0;

	if (c->is_file || c->out_fd < 0 || want == c->events)
		return;
	if (evloop_mod_fd(c->vdev.loop, c->out_fd, want) == 0)
		c->events = want;
}

static void drop_client(struct console *c)
{
	evloop_del_fd(c->vdev.loop, c->out_fd);
	close(c->out_fd);
	c->out_fd = -1;
}

static void cons_tx(struct console *c)
{
	struct virtq *vq = virtio_dev_vq(&c->vdev, CONS_TX);
	bool pushed = false;

	while (virtio_dev_active(&c->vdev)) {
		int ret = virtq_pop(vq, c->tx_elem);

		if (ret < 0) {
			virtio_dev_fail(&c->vdev, "transmit queue: %s", vq->error);
			break;
		}
		if (ret == 0)
			break;
		/* Output nobody reads, or that the reader cannot take now, is
		 * dropped: a console must never stall the guest. */
		if (c->out_fd >= 0) {
			struct msghdr msg = { .msg_iov = c->tx_elem->iov,
					      .msg_iovlen = c->tx_elem->nout };
			ssize_t n = c->is_file ? writev(c->out_fd, msg.msg_iov, (int)msg.msg_iovlen)
					       : sendmsg(c->out_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);

			if (n < 0 && (errno == EPIPE || errno == ECONNRESET) && !c->is_file)
				drop_client(c);
		}
		virtq_push(vq, c->tx_elem->head, 0);
		pushed = true;
	}
	if (pushed)
		virtio_dev_queue_done(&c->vdev, CONS_TX);
}

static void cons_rx(struct console *c)
{
	struct virtq *vq = virtio_dev_vq(&c->vdev, CONS_RX);
	bool pushed = false;

	while (c->out_fd >= 0 && !c->is_file && virtio_dev_active(&c->vdev)) {
		int ret = virtq_pop(vq, c->rx_elem);
		ssize_t n;

		if (ret < 0) {
			virtio_dev_fail(&c->vdev, "receive queue: %s", vq->error);
			break;
		}
		if (ret == 0) {
			c->rx_wait = true;
			break;
		}
		n = readv(c->out_fd, c->rx_elem->iov + c->rx_elem->nout, c->rx_elem->nin);
		if (n <= 0) {
			virtq_unpop(vq);
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				drop_client(c);
			break;
		}
		virtq_push(vq, c->rx_elem->head, (uint32_t)n);
		pushed = true;
	}
	if (pushed)
		virtio_dev_queue_done(&c->vdev, CONS_RX);
}

static void client_cb(void *opaque, uint32_t events)
{
	struct console *c = opaque;

	virtio_dev_lock(&c->vdev);
	if (events & (EPOLLHUP | EPOLLERR))
		drop_client(c);
	else
		cons_rx(c);
	watch_client(c);
	virtio_dev_unlock(&c->vdev);
}

static void accept_cb(void *opaque, uint32_t events)
{
	struct console *c = opaque;
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0)
		return;
	virtio_dev_lock(&c->vdev);
	if (c->out_fd >= 0)
		drop_client(c); /* the newest client wins */
	c->events = 0;
	if (evloop_add_fd(c->vdev.loop, fd, 0, client_cb, c)) {
		close(fd);
	} else {
		c->out_fd = fd;
		c->rx_wait = false;
		watch_client(c);
	}
	virtio_dev_unlock(&c->vdev);
}

static void cons_queue_notify(struct virtio_dev *vdev, unsigned qidx)
{
	struct console *c = to_cons(vdev);

	if (qidx == CONS_RX) {
		c->rx_wait = false;
		cons_rx(c);
	} else {
		cons_tx(c);
	}
	watch_client(c);
}

static int cons_start(struct virtio_dev *vdev)
{
	to_cons(vdev)->rx_wait = false;
	watch_client(to_cons(vdev));
	return 0;
}

static void cons_stop(struct virtio_dev *vdev)
{
	watch_client(to_cons(vdev));
}

static void cons_config_read(struct virtio_dev *vdev, uint32_t off, void *data, unsigned len)
{
	memcpy(data, to_cons(vdev)->config + off, len);
}

static void cons_destroy(struct virtio_dev *vdev)
{
	struct console *c = to_cons(vdev);

	if (c->listen_fd >= 0) {
		evloop_del_fd(vdev->loop, c->listen_fd);
		close(c->listen_fd);
		unlink(c->spec.path);
	}
	if (c->out_fd >= 0) {
		if (!c->is_file)
			evloop_del_fd(vdev->loop, c->out_fd);
		close(c->out_fd);
	}
	free(c->rx_elem);
	free(c->tx_elem);
	free(c);
}

static const struct virtio_dev_ops cons_ops = {
	.config_read = cons_config_read,
	.start = cons_start,
	.queue_notify = cons_queue_notify,
	.stop = cons_stop,
	.pause = cons_stop,
	.resume = cons_stop,
	.destroy = cons_destroy,
};

static int open_host_side(struct console *c, char *err, size_t errlen)
{
	int fd;

	if (c->spec.kind == CONSOLE_FILE) {
		fd = open(c->spec.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		c->is_file = true;
		c->out_fd = fd;
	} else {
		fd = unixsock_listen(c->spec.path, 4);
		c->listen_fd = fd;
	}
	if (fd < 0) {
		snprintf(err, errlen, "--console %s: %s", c->spec.path,
			 fd == -EADDRINUSE ? "a live socket is already there" : strerror(-fd));
		return fd;
	}
	return 0;
}

int virtio_console_create(struct vm *vm, const struct console_spec *spec, unsigned index,
			  struct virtio_dev **out, char *err, size_t errlen)
{
	struct virtio_dev_params p = {
		.device_id = VIRTIO_ID_CONSOLE,
		.class_code = 0x078000, /* simple communication controller, other */
		.nqueues = 2,
		.queue_size = CONS_QUEUE_SIZE,
		.config_len = CFG_LEN,
		.ops = &cons_ops,
	};
	uint32_t max_ports = 1;
	char name[32];
	struct console *c;
	int ret;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->spec = *spec;
	c->listen_fd = c->out_fd = -1;
	c->rx_elem = virtq_elem_alloc(CONS_QUEUE_SIZE);
	c->tx_elem = virtq_elem_alloc(CONS_QUEUE_SIZE);
	ret = (!c->rx_elem || !c->tx_elem) ? -ENOMEM : open_host_side(c, err, errlen);
	if (ret)
		goto err_free;
	memcpy(c->config + 4, &max_ports, 4);
	snprintf(name, sizeof(name), "virtio-console%u", index);
	p.name = name;
	p.opaque = c;
	ret = virtio_dev_init(&c->vdev, vm, &p);
	if (ret) {
		snprintf(err, errlen, "virtio-console: cannot create the PCI function: %s",
			 strerror(-ret));
		goto err_host;
	}
	ret = c->listen_fd >= 0 ? evloop_add_fd(c->vdev.loop, c->listen_fd, EPOLLIN, accept_cb, c)
				: 0;
	if (!ret)
		ret = virtio_dev_attach(&c->vdev);
	if (ret) {
		snprintf(err, errlen, "virtio-console: cannot attach: %s", strerror(-ret));
		virtio_dev_destroy(&c->vdev);
		return ret;
	}
	*out = &c->vdev;
	return 0;
err_host:
	if (c->listen_fd >= 0) {
		close(c->listen_fd);
		unlink(c->spec.path);
	}
	if (c->out_fd >= 0)
		close(c->out_fd);
err_free:
	free(c->rx_elem);
	free(c->tx_elem);
	free(c);
	return ret;
}
