/* Serial back ends. Output arrives on vCPU threads through the UART's
 * output callback; input is read on the event loop thread and handed to
 * serial_receive(). When the UART cannot take more, input waits in a small
 * buffer and a timer retries, so no byte is lost or reordered.
 *
 * unix: keeps the last 64 KiB of output in a ring; a new client gets the
 * ring, then live output. A client that cannot keep up (its socket buffer
 * is full) is disconnected rather than stalling the vCPU. */
#include "vmm/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/hw/hw.h"
#include "vmm/unixsock.h"
#include "vmm/vm_internal.h"

#define RING_SIZE (64 * 1024)
#define MAX_CLIENTS 16
#define PENDING_MAX 4096
#define CTRL_A 0x01

enum chardev_kind { CD_STDIO, CD_FILE, CD_UNIX, CD_PTY, CD_NONE };

struct chardev {
	enum chardev_kind kind;
	struct vm *vm;
	struct evloop *loop;
	pthread_mutex_t lock;
	int out_fd;		/* stdio, file, pty master */
	int in_fd;		/* stdin or pty master; -1 if none */
	int pty_slave;		/* kept open so the master never hangs up */
	bool tty_raw;		/* stdin was put in raw mode */
	struct termios saved_tty;
	bool escape;		/* stdio tty: last input byte was Ctrl-A */
	int listen_fd;
	char *path;		/* unix socket path, unlinked at the end */
	int clients[MAX_CLIENTS];
	uint8_t ring[RING_SIZE];
	size_t ring_head;	/* next write position */
	size_t ring_used;
	int timer_fd;		/* retries pending input */
	uint8_t pending[PENDING_MAX];
	size_t npending;
	int pending_src;	/* fd whose reads are suspended while pending */
};

int chardev_spec_check(const char *spec, char *err, size_t errlen)
{
	if (!strcmp(spec, "stdio") || !strcmp(spec, "pty") || !strcmp(spec, "none"))
		return 0;
	if (!strncmp(spec, "file:", 5) && spec[5])
		return 0;
	if (!strncmp(spec, "unix:", 5) && spec[5]) {
		if (strlen(spec + 5) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			snprintf(err, errlen, "--serial: the socket path '%s' is too long (at most %zu bytes)",
				 spec + 5, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
			return -EINVAL;
		}
		return 0;
	}
	snprintf(err, errlen,
		 "--serial: '%s' is not a serial back end; expected stdio, file:PATH, unix:PATH, "
		 "pty or none",
		 spec);
	return -EINVAL;
}

/* ---- output (vCPU threads) ------------------------------------------ */

static void ring_append(struct chardev *cd, const uint8_t *buf, size_t len)
{
	if (len >= RING_SIZE) {
		buf += len - RING_SIZE;
		len = RING_SIZE;
	}
	for (size_t i = 0; i < len; i++) {
		cd->ring[cd->ring_head] = buf[i];
		cd->ring_head = (cd->ring_head + 1) % RING_SIZE;
	}
	cd->ring_used = MIN(cd->ring_used + len, (size_t)RING_SIZE);
}

static void drop_client(struct chardev *cd, unsigned i)
{
	evloop_del_fd(cd->loop, cd->clients[i]);
	close(cd->clients[i]);
	cd->clients[i] = -1;
}

static void serial_out(void *opaque, const uint8_t *buf, size_t len)
{
	struct chardev *cd = opaque;

	switch (cd->kind) {
	case CD_STDIO:
	case CD_FILE:
		write_full(cd->out_fd, buf, len);
		break;
	case CD_PTY:
		/* Nobody reading: the bytes are dropped, the guest never waits. */
		while (len) {
			ssize_t n = write(cd->out_fd, buf, len);
			if (n <= 0)
				break;
			buf += n;
			len -= (size_t)n;
		}
		break;
	case CD_UNIX:
		pthread_mutex_lock(&cd->lock);
		ring_append(cd, buf, len);
		for (unsigned i = 0; i < MAX_CLIENTS; i++)
			if (cd->clients[i] >= 0 && !unixsock_send_all(cd->clients[i], buf, len))
				drop_client(cd, i);
		pthread_mutex_unlock(&cd->lock);
		break;
	case CD_NONE:
		break;
	}
}

/* ---- input (event loop thread) -------------------------------------- */

static void set_src_enabled(struct chardev *cd, int fd, bool on)
{
	evloop_mod_fd(cd->loop, fd, on ? EPOLLIN : 0);
}

static void arm_timer(struct chardev *cd, bool on)
{
	struct itimerspec its = { 0 };

	if (on) {
		its.it_value.tv_nsec = 2000000;
		its.it_interval.tv_nsec = 2000000;
	}
	timerfd_settime(cd->timer_fd, 0, &its, NULL);
}

/* Hands bytes to the UART; what does not fit waits and the source fd is
 * not read again until it has gone in. */
static void feed(struct chardev *cd, int src, const uint8_t *buf, size_t len)
{
	size_t took = 0;

	if (cd->vm->serial)
		took = serial_receive(cd->vm->serial, buf, len);
	else
		took = len;
	if (took < len) {
		memcpy(cd->pending, buf + took, len - took);
		cd->npending = len - took;
		cd->pending_src = src;
		set_src_enabled(cd, src, false);
		arm_timer(cd, true);
	}
}

static void on_timer(void *opaque, uint32_t events)
{
	struct chardev *cd = opaque;
	uint64_t ticks;
	size_t took;

	(void)events;
	if (read(cd->timer_fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		return;
	if (!cd->npending)
		return;
	took = serial_receive(cd->vm->serial, cd->pending, cd->npending);
	memmove(cd->pending, cd->pending + took, cd->npending - took);
	cd->npending -= took;
	if (!cd->npending) {
		arm_timer(cd, false);
		if (cd->pending_src >= 0)
			set_src_enabled(cd, cd->pending_src, true);
		cd->pending_src = -1;
	}
}

/* Ctrl-A x on a raw terminal turns the VM off, as in QEMU; Ctrl-A Ctrl-A
 * sends one Ctrl-A. */
static size_t filter_escape(struct chardev *cd, uint8_t *buf, size_t len)
{
	size_t out = 0;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = buf[i];
		if (cd->escape) {
			cd->escape = false;
			if (c == 'x' || c == 'X') {
				fprintf(stderr, "\r\ncloison-vmm: Ctrl-A x: powering off\r\n");
				vm_request_stop(cd->vm, VM_STOP_POWEROFF, "console");
				continue;
			}
			if (c != CTRL_A)
				buf[out++] = CTRL_A;
		} else if (c == CTRL_A) {
			cd->escape = true;
			continue;
		}
		buf[out++] = c;
	}
	return out;
}

static void on_input(void *opaque, uint32_t events)
{
	struct chardev *cd = opaque;
	uint8_t buf[PENDING_MAX];
	ssize_t n = read(cd->in_fd, buf, sizeof(buf));

	(void)events;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* End of input (stdin closed): the guest keeps running. */
		evloop_del_fd(cd->loop, cd->in_fd);
		return;
	}
	if (cd->tty_raw)
		n = (ssize_t)filter_escape(cd, buf, (size_t)n);
	if (n > 0)
		feed(cd, cd->in_fd, buf, (size_t)n);
}

static void on_client(void *opaque, uint32_t events)
{
	struct chardev *cd = opaque;
	uint8_t buf[PENDING_MAX];

	(void)events;
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		ssize_t n;
		int fd;

		pthread_mutex_lock(&cd->lock);
		fd = cd->clients[i];
		pthread_mutex_unlock(&cd->lock);
		if (fd < 0)
			continue;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0) {
			pthread_mutex_lock(&cd->lock);
			if (cd->clients[i] == fd)
				drop_client(cd, i);
			pthread_mutex_unlock(&cd->lock);
			continue;
		}
		feed(cd, fd, buf, (size_t)n);
		if (cd->npending)
			break;
	}
}

static void on_accept(void *opaque, uint32_t events)
{
	struct chardev *cd = opaque;
	int fd = accept4(cd->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	unsigned slot;

	(void)events;
	if (fd < 0)
		return;
	pthread_mutex_lock(&cd->lock);
	for (slot = 0; slot < MAX_CLIENTS && cd->clients[slot] >= 0; slot++)
		;
	if (slot == MAX_CLIENTS) {
		pthread_mutex_unlock(&cd->lock);
		log_warn("serial socket: too many clients, refusing one");
		close(fd);
		return;
	}
	/* Replay the ring, oldest byte first, before any live output. */
	if (cd->ring_used) {
		size_t start = (cd->ring_head + RING_SIZE - cd->ring_used) % RING_SIZE;
		size_t first = MIN(cd->ring_used, (size_t)RING_SIZE - start);
		if (!unixsock_send_all(fd, cd->ring + start, first) ||
		    !unixsock_send_all(fd, cd->ring, cd->ring_used - first)) {
			pthread_mutex_unlock(&cd->lock);
			close(fd);
			return;
		}
	}
	cd->clients[slot] = fd;
	pthread_mutex_unlock(&cd->lock);
	evloop_add_fd(cd->loop, fd, EPOLLIN, on_client, cd);
}

/* ---- set up --------------------------------------------------------- */

static int open_stdio(struct chardev *cd)
{
	cd->out_fd = STDOUT_FILENO;
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &cd->saved_tty) == 0) {
		struct termios raw = cd->saved_tty;
		cfmakeraw(&raw);
		raw.c_oflag |= OPOST | ONLCR; /* keep host-side newlines sane */
		if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0)
			cd->tty_raw = true;
	}
	cd->in_fd = STDIN_FILENO;
	return 0;
}

static int listen_unix(struct chardev *cd, const char *path, char *err, size_t errlen)
{
	int fd = unixsock_listen(path, 8);

	if (fd < 0) {
		snprintf(err, errlen, "--serial unix:%s: %s", path,
			 fd == -EADDRINUSE ? "a live socket is already there"
			 : fd == -EEXIST ? "exists and is not a socket" : strerror(-fd));
		return fd;
	}
	cd->listen_fd = fd;
	cd->path = strdup(path);
	return 0;
}

static int open_pty(struct chardev *cd, char *err, size_t errlen)
{
	struct termios t;
	char *name;
	int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 || grantpt(fd) < 0 || unlockpt(fd) < 0 || !(name = ptsname(fd))) {
		snprintf(err, errlen, "--serial pty: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	cd->pty_slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (cd->pty_slave >= 0 && tcgetattr(cd->pty_slave, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(cd->pty_slave, TCSANOW, &t);
	}
	cd->out_fd = cd->in_fd = fd;
	fprintf(stderr, "cloison-vmm: serial console on %s\n", name);
	return 0;
}

int chardev_create(const char *spec, struct vm *vm, struct chardev **out, char *err,
		   size_t errlen)
{
	struct chardev *cd;
	int ret = chardev_spec_check(spec, err, errlen);

	if (ret)
		return ret;
	cd = calloc(1, sizeof(*cd));
	if (!cd)
		return -ENOMEM;
	pthread_mutex_init(&cd->lock, NULL);
	cd->vm = vm;
	cd->loop = vm->loop;
	cd->out_fd = cd->in_fd = cd->listen_fd = cd->pty_slave = cd->timer_fd = -1;
	cd->pending_src = -1;
	for (unsigned i = 0; i < MAX_CLIENTS; i++)
		cd->clients[i] = -1;
	*out = cd;

	cd->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (cd->timer_fd < 0) {
		snprintf(err, errlen, "timerfd: %s", strerror(errno));
		return -errno;
	}
	if (!strcmp(spec, "stdio")) {
		cd->kind = CD_STDIO;
		ret = open_stdio(cd);
	} else if (!strcmp(spec, "none")) {
		cd->kind = CD_NONE;
	} else if (!strcmp(spec, "pty")) {
		cd->kind = CD_PTY;
		ret = open_pty(cd, err, errlen);
	} else if (!strncmp(spec, "file:", 5)) {
		cd->kind = CD_FILE;
		cd->out_fd = open(spec + 5, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (cd->out_fd < 0) {
			ret = -errno;
			snprintf(err, errlen, "--serial file:%s: %s", spec + 5, strerror(errno));
		}
	} else {
		cd->kind = CD_UNIX;
		ret = listen_unix(cd, spec + 5, err, errlen);
	}
	if (ret)
		return ret;
	if (cd->in_fd >= 0) {
		fd_set_nonblock(cd->in_fd, true);
		if (evloop_add_fd(cd->loop, cd->in_fd, EPOLLIN, on_input, cd) < 0)
			cd->in_fd = -1; /* e.g. stdin is a regular file: no input */
	}
	if (cd->listen_fd >= 0)
		evloop_add_fd(cd->loop, cd->listen_fd, EPOLLIN, on_accept, cd);
	evloop_add_fd(cd->loop, cd->timer_fd, EPOLLIN, on_timer, cd);
	if (vm->serial)
		serial_set_output(vm->serial, serial_out, cd);
	return 0;
}

void chardev_destroy(struct chardev *cd)
{
	if (!cd)
		return;
	if (cd->vm->serial)
		serial_set_output(cd->vm->serial, NULL, NULL);
	if (cd->tty_raw)
		tcsetattr(STDIN_FILENO, TCSANOW, &cd->saved_tty);
	if (cd->kind == CD_STDIO && cd->in_fd >= 0)
		fd_set_nonblock(cd->in_fd, false);
	for (unsigned i = 0; i < MAX_CLIENTS; i++)
		if (cd->clients[i] >= 0)
			close(cd->clients[i]);
	if (cd->listen_fd >= 0)
		close(cd->listen_fd);
	if (cd->path) {
		unlink(cd->path);
		free(cd->path);
	}
	if (cd->kind == CD_FILE || cd->kind == CD_PTY)
		close(cd->out_fd);
	if (cd->pty_slave >= 0)
		close(cd->pty_slave);
	if (cd->timer_fd >= 0)
		close(cd->timer_fd);
	pthread_mutex_destroy(&cd->lock);
	free(cd);
}
