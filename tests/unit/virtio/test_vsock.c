/* virtio-vsock (src/vmm/virtio/vsock.c) through the PCI transport, driven
 * by the test driver over the vm/pci double, with real unix sockets on
 * the host side: connections both ways, data both ways with credit,
 * RST for a port nobody listens on, needs-reset for a bad header and for
 * a credit overflow (the device is usable again after a reset), and the
 * TRANSPORT_RESET event and closed host sockets after a restore, and a
 * restored worker's host ports apart from the saved one's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "virtio_driver.h"
#include "vmm/state/record.h"
#include "vmm/virtio/devices.h"

#define F_VERSION_1 (1ULL << 32)
#define GUEST_CID 7
#define HDR 44
#define RX_GPA 0x100000ULL
#define RX_LEN 4096
#define TX_GPA 0x200000ULL
#define TX_STRIDE 0x11000ULL
#define EV_GPA 0x300000ULL
#define NEEDS_RESET 0x40

enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE };

struct hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
};

struct fixture {
	struct vm *vm;
	struct vdrv d;
	char dir[32], path[64];
	unsigned ntx;
	unsigned nrx_posted;
};

static void put(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

static void encode(const struct hdr *h, uint8_t *b)
{
	put(b, h->src_cid, 8);
	put(b + 8, h->dst_cid, 8);
	put(b + 16, h->src_port, 4);
	put(b + 20, h->dst_port, 4);
	put(b + 24, h->len, 4);
	put(b + 28, h->type, 2);
	put(b + 30, h->op, 2);
	put(b + 32, h->flags, 4);
	put(b + 36, h->buf_alloc, 4);
	put(b + 40, h->fwd_cnt, 4);
}

static void decode(const uint8_t *b, struct hdr *h)
{
	h->src_cid = get(b, 8);
	h->dst_cid = get(b + 8, 8);
	h->src_port = (uint32_t)get(b + 16, 4);
	h->dst_port = (uint32_t)get(b + 20, 4);
	h->len = (uint32_t)get(b + 24, 4);
	h->type = (uint16_t)get(b + 28, 2);
	h->op = (uint16_t)get(b + 30, 2);
	h->flags = (uint32_t)get(b + 32, 4);
	h->buf_alloc = (uint32_t)get(b + 36, 4);
	h->fwd_cnt = (uint32_t)get(b + 40, 4);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char spec[256], err[256] = "";

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_vsock.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/v.sock", f->dir);
	snprintf(spec, sizeof(spec), "cid=%d,socket=%s", GUEST_CID, f->path);
	f->vm = vd_create(1);
	assert_non_null(f->vm);
	if (virtio_add_vsock(f->vm, spec, err, sizeof(err))) {
		fprintf(stderr, "virtio_add_vsock: %s\n", err);
		fail();
	}
	vdrv_attach(&f->d, f->vm, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	vd_stop_loop(f->vm);
	virtio_devices_destroy(f->vm);
	vd_destroy(f->vm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void post_rx(struct fixture *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct vdrv_seg s = { RX_GPA + (f->nrx_posted++ % 16) * RX_LEN, RX_LEN, true };

		vdrv_post(&f->d, 0, &s, 1, 0);
	}
	vdrv_kick(&f->d, 0);
}

static void start(struct fixture *f)
{
	struct vdrv_seg ev = { EV_GPA, 4, true };

	f->ntx = f->nrx_posted = 0;
	assert_int_not_equal(vdrv_init(&f->d, F_VERSION_1, 3) & 8, 0);
	memset(vdrv_ptr(&f->d, EV_GPA), 0xff, 4);
	vdrv_post(&f->d, 2, &ev, 1, 0);
	vdrv_kick(&f->d, 2);
	post_rx(f, 8);
}

/* The guest sends a packet (header h with len bytes of data). */
static void send_pkt(struct fixture *f, struct hdr h, const void *data, uint32_t len)
{
	uint64_t gpa = TX_GPA + (f->ntx++ % 15) * TX_STRIDE;
	struct vdrv_seg segs[2] = { { gpa, HDR, false }, { gpa + HDR, len, false } };

	h.src_cid = h.src_cid ? h.src_cid : GUEST_CID;
	h.dst_cid = h.dst_cid ? h.dst_cid : 2;
	h.type = h.type ? h.type : 1;
	h.len = h.len ? h.len : len;
	encode(&h, vdrv_ptr(&f->d, gpa));
	if (data)
		memcpy(vdrv_ptr(&f->d, gpa + HDR), data, len);
	vdrv_post(&f->d, 1, segs, len ? 2 : 1, 0);
	vdrv_kick(&f->d, 1);
	assert_true(vdrv_wait_used(&f->d, 1, 3000, NULL, NULL));
}

/* The next packet the device gives the guest; its data in data. */
static bool recv_pkt(struct fixture *f, struct hdr *h, void *data, size_t cap)
{
	uint32_t id, len;
	uint8_t *buf;

	if (!vdrv_wait_used(&f->d, 0, 3000, &id, &len))
		return false;
	buf = vdrv_ptr(&f->d, RX_GPA + (id % 16) * RX_LEN);
	assert_true(len >= HDR);
	decode(buf, h);
	assert_int_equal(h->len, len - HDR);
	if (data)
		memcpy(data, buf + HDR, h->len < cap ? h->len : cap);
	post_rx(f, 1);
	return true;
}

static int listen_port(struct fixture *f, unsigned port)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", f->path, port);
	unlink(sa.sun_path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static bool readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

static void test_config_and_ids(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(vdrv_cfg_read(&f->d, 0, 8), GUEST_CID);
	assert_int_equal(f->vm->devs[0]->config[2] | f->vm->devs[0]->config[3] << 8, 0x1040 + 19);
}

/* Guest connects to host port 5000: PATH_5000 gets the connection, a
 * RESPONSE comes back, and bytes go both ways with the credit fields. */
static int guest_connect(struct fixture *f, int lfd, uint32_t gport)
{
	struct hdr h = { .op = OP_REQUEST, .src_port = gport, .dst_port = 5000,
			 .buf_alloc = 65536 };
	int afd;

	send_pkt(f, h, NULL, 0);
	assert_true(readable(lfd, 3000));
	afd = accept(lfd, NULL, NULL);
	assert_true(afd >= 0);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_RESPONSE);
	assert_int_equal(h.src_port, 5000);
	assert_int_equal(h.dst_port, gport);
	assert_int_equal(h.dst_cid, GUEST_CID);
	assert_int_equal(h.src_cid, 2);
	assert_int_equal(h.buf_alloc, 65536);
	return afd;
}

static void test_guest_to_host(void **state)
{
	struct fixture *f = *state;
	int lfd = listen_port(f, 5000), afd;
	struct hdr h = { .op = OP_RW, .src_port = 1025, .dst_port = 5000, .buf_alloc = 65536 };
	char buf[64] = "";

	start(f);
	afd = guest_connect(f, lfd, 1025);
	send_pkt(f, h, "hello", 5);
	assert_true(readable(afd, 3000));
	assert_int_equal(read(afd, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "hello", 5);
	/* the 5 bytes handed on come back as credit */
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_CREDIT_UPDATE);
	assert_int_equal(h.fwd_cnt, 5);
	assert_int_equal(write(afd, "world!", 6), 6);
	assert_true(recv_pkt(f, &h, buf, sizeof(buf)));
	assert_int_equal(h.op, OP_RW);
	assert_int_equal(h.len, 6);
	assert_memory_equal(buf, "world!", 6);
	/* the host closes: the guest hears SHUTDOWN, answers RST */
	close(afd);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_SHUTDOWN);
	assert_int_equal(h.flags, 3);
	h = (struct hdr){ .op = OP_RST, .src_port = 1025, .dst_port = 5000 };
	send_pkt(f, h, NULL, 0);
	assert_int_equal(vdrv_status(&f->d) & NEEDS_RESET, 0);
	close(lfd);
}

/* The guest may not get more than its buf_alloc: with 10 bytes of
 * credit, 10 bytes come, the rest waits for the guest's fwd_cnt. */
static void test_host_respects_guest_credit(void **state)
{
	struct fixture *f = *state;
	int lfd = listen_port(f, 5000), afd;
	struct hdr h = { .op = OP_REQUEST, .src_port = 1026, .dst_port = 5000, .buf_alloc = 10 };
	char buf[64] = "";

	start(f);
	send_pkt(f, h, NULL, 0);
	assert_true(readable(lfd, 3000));
	afd = accept(lfd, NULL, NULL);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_RESPONSE);
	assert_int_equal(write(afd, "0123456789abcdef", 16), 16);
	assert_true(recv_pkt(f, &h, buf, sizeof(buf)));
	assert_int_equal(h.op, OP_RW);
	assert_int_equal(h.len, 10);
	assert_memory_equal(buf, "0123456789", 10);
	assert_false(recv_pkt(f, &h, NULL, 0)); /* no credit: nothing more */
	h = (struct hdr){ .op = OP_CREDIT_UPDATE, .src_port = 1026, .dst_port = 5000,
			  .buf_alloc = 10, .fwd_cnt = 10 };
	send_pkt(f, h, NULL, 0);
	assert_true(recv_pkt(f, &h, buf, sizeof(buf)));
	assert_int_equal(h.op, OP_RW);
	assert_int_equal(h.len, 6);
	assert_memory_equal(buf, "abcdef", 6);
	close(afd);
	close(lfd);
}

/* Host connects with CONNECT 1234: the guest sees a REQUEST, accepts,
 * the host reads OK <port>, and the stream follows. */
static void test_host_to_guest(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct hdr h;
	char buf[64] = "", want[32];
	uint32_t local;

	start(f);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	/* the line and the first bytes of the stream in one write */
	assert_int_equal(write(fd, "CONNECT 1234\nping", 17), 17);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_REQUEST);
	assert_int_equal(h.dst_port, 1234);
	assert_true(h.src_port >= (1u << 30));
	local = h.src_port;
	h = (struct hdr){ .op = OP_RESPONSE, .src_port = 1234, .dst_port = local,
			  .buf_alloc = 65536 };
	send_pkt(f, h, NULL, 0);
	assert_true(readable(fd, 3000));
	snprintf(want, sizeof(want), "OK %u\n", local);
	assert_int_equal(read(fd, buf, strlen(want)), (ssize_t)strlen(want));
	assert_memory_equal(buf, want, strlen(want));
	assert_true(recv_pkt(f, &h, buf, sizeof(buf)));
	assert_int_equal(h.op, OP_RW);
	assert_int_equal(h.len, 4);
	assert_memory_equal(buf, "ping", 4);
	h = (struct hdr){ .op = OP_RW, .src_port = 1234, .dst_port = local, .buf_alloc = 65536,
			  .fwd_cnt = 4 };
	send_pkt(f, h, "pong", 4);
	assert_true(readable(fd, 3000));
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "pong", 4);
	close(fd);
}

/* A guest port that refuses: the host client sees EOF and no OK. */
static void test_host_connect_refused(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct hdr h;
	char buf[16];

	start(f);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, "CONNECT 99\n", 11), 11);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_REQUEST);
	h = (struct hdr){ .op = OP_RST, .src_port = 99, .dst_port = h.src_port };
	send_pkt(f, h, NULL, 0);
	assert_true(readable(fd, 3000));
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);
	close(fd);
	/* and a line that is not CONNECT is closed without a word */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(fd, "HELLO 1\n", 8), 8);
	assert_true(readable(fd, 3000));
	assert_int_equal(read(fd, buf, sizeof(buf)), 0);
	close(fd);
	assert_int_equal(vdrv_status(&f->d) & NEEDS_RESET, 0);
}

static void test_no_listener_gets_rst(void **state)
{
	struct fixture *f = *state;
	struct hdr h = { .op = OP_REQUEST, .src_port = 1027, .dst_port = 4444, .buf_alloc = 1 };

	start(f);
	send_pkt(f, h, NULL, 0);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_RST);
	assert_int_equal(h.src_port, 4444);
	assert_int_equal(h.dst_port, 1027);
	/* data for a connection that does not exist: RST as well */
	h = (struct hdr){ .op = OP_RW, .src_port = 1027, .dst_port = 4444 };
	send_pkt(f, h, "x", 1);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_RST);
	assert_int_equal(vdrv_status(&f->d) & NEEDS_RESET, 0);
}

/* host-only (what a sandboxed worker runs with): a guest connection to
 * the host is answered with RST even when PATH_<port> listens. */
static void test_host_only_refuses_guest_connections(void **state)
{
	struct fixture *f = *state;
	char spec[160], err[256] = "";
	int lfd;
	struct hdr h = { .op = OP_REQUEST, .src_port = 1050, .dst_port = 5000, .buf_alloc = 1 };
	struct pollfd p;

	vd_stop_loop(f->vm);
	virtio_devices_destroy(f->vm);
	vd_destroy(f->vm);
	f->vm = vd_create(1);
	snprintf(spec, sizeof(spec), "cid=%d,socket=%s,host-only", GUEST_CID, f->path);
	assert_int_equal(virtio_add_vsock(f->vm, spec, err, sizeof(err)), 0);
	vdrv_attach(&f->d, f->vm, 0);
	lfd = listen_port(f, 5000);
	start(f);
	send_pkt(f, h, NULL, 0);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_RST);
	p = (struct pollfd){ .fd = lfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 100), 0); /* nobody connected */
	close(lfd);
}

static void expect_needs_reset_then_usable(struct fixture *f)
{
	int lfd;

	assert_true(vdrv_wait_status(&f->d, NEEDS_RESET, 3000));
	/* reset, and the device works again */
	start(f);
	assert_int_equal(vdrv_status(&f->d) & NEEDS_RESET, 0);
	lfd = listen_port(f, 5000);
	close(guest_connect(f, lfd, 2000));
	close(lfd);
}

static void test_bad_headers_need_reset(void **state)
{
	struct fixture *f = *state;
	static const struct hdr bad[] = {
		{ .src_cid = 9, .op = OP_REQUEST, .dst_port = 1 },	  /* not the guest's CID */
		{ .op = 0, .dst_port = 1 },				  /* OP_INVALID */
		{ .op = 42, .dst_port = 1 },				  /* no such operation */
		{ .op = OP_REQUEST, .dst_port = 1, .len = 8 },		  /* payload on control */
		{ .op = OP_RW, .dst_port = 1, .len = 100 },		  /* length not there */
		{ .op = OP_RW, .dst_port = 1, .len = (64u << 10) + 1 }, /* too long */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t gpa = TX_GPA;
		struct vdrv_seg seg = { gpa, HDR + 8, false };
		struct hdr h = bad[i];

		start(f);
		h.src_cid = h.src_cid ? h.src_cid : GUEST_CID;
		h.dst_cid = 2;
		h.type = 1;
		encode(&h, vdrv_ptr(&f->d, gpa));
		vdrv_post(&f->d, 1, &seg, 1, 0);
		vdrv_kick(&f->d, 1);
		assert_true(vdrv_wait_status(&f->d, NEEDS_RESET, 3000));
	}
	/* a packet shorter than its header */
	start(f);
	{
		struct vdrv_seg seg = { TX_GPA, HDR - 1, false };

		vdrv_post(&f->d, 1, &seg, 1, 0);
		vdrv_kick(&f->d, 1);
	}
	expect_needs_reset_then_usable(f);
}

/* The host peer reads nothing: once the socket and the device's buffer
 * are full, one more packet is more than the guest's credit. */
static void test_credit_overflow_needs_reset(void **state)
{
	struct fixture *f = *state;
	int lfd = listen_port(f, 5000), afd;
	static uint8_t chunk[64 << 10];
	unsigned sent = 0;

	start(f);
	afd = guest_connect(f, lfd, 1030);
	for (; sent < 64 && !(vdrv_status(&f->d) & NEEDS_RESET); sent++) {
		struct hdr h = { .op = OP_RW, .src_port = 1030, .dst_port = 5000,
				 .buf_alloc = 65536 };

		send_pkt(f, h, chunk, sizeof(chunk));
	}
	assert_true(sent < 64);
	assert_true(sent > 1); /* the first packets fit */
	close(afd);
	close(lfd);
	expect_needs_reset_then_usable(f);
}

/* A control packet whose fwd_cnt says the guest consumed more than it
 * was sent is a credit lie. */
static void test_fwd_cnt_past_sent_needs_reset(void **state)
{
	struct fixture *f = *state;
	int lfd = listen_port(f, 5000), afd;
	struct hdr h = { .op = OP_CREDIT_UPDATE, .src_port = 1031, .dst_port = 5000,
			 .buf_alloc = 65536, .fwd_cnt = 100 };

	start(f);
	afd = guest_connect(f, lfd, 1031);
	send_pkt(f, h, NULL, 0);
	close(afd);
	close(lfd);
	expect_needs_reset_then_usable(f);
}

/* An RST ends the connection whatever its credit fields say: the guest
 * is done with it, and nothing is left to account for. */
static void test_rst_ends_connection_whatever_its_credit(void **state)
{
	struct fixture *f = *state;
	int lfd = listen_port(f, 5000), afd;
	struct hdr h = { .op = OP_RST, .src_port = 1032, .dst_port = 5000,
			 .buf_alloc = 65536, .fwd_cnt = 100 };
	char buf[8];

	start(f);
	afd = guest_connect(f, lfd, 1032);
	send_pkt(f, h, NULL, 0);
	assert_true(readable(afd, 3000));
	assert_true(read(afd, buf, sizeof(buf)) <= 0);
	assert_int_equal(vdrv_status(&f->d) & NEEDS_RESET, 0);
	close(afd);
	close(lfd);
}

/* Save and restore: the record carries the CID; the restore closes the
 * host sockets and gives the driver a TRANSPORT_RESET event. */
static void test_restore_resets_connections(void **state)
{
	struct fixture *f = *state;
	int lfd = listen_port(f, 5000), afd;
	struct state_writer w;
	struct state_file sf;
	const void *data;
	size_t len;
	char err[256] = "", buf[8];
	uint32_t id, elen;

	start(f);
	afd = guest_connect(f, lfd, 1040);
	virtio_devices_pause(f->vm);
	state_writer_init(&w, 1);
	virtio_devices_save(f->vm, &w);
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	assert_int_equal(state_file_parse(&sf, data, len, 1, err, sizeof(err)), 0);
	assert_int_equal(virtio_devices_restore(f->vm, &sf, err, sizeof(err)), 0);
	virtio_devices_resume(f->vm);
	assert_true(vdrv_wait_used(&f->d, 2, 3000, &id, &elen));
	assert_int_equal(elen, 4);
	assert_int_equal(get(vdrv_ptr(&f->d, EV_GPA), 4), 0); /* TRANSPORT_RESET */
	assert_true(readable(afd, 3000));
	assert_true(read(afd, buf, sizeof(buf)) <= 0);
	state_writer_free(&w);
	close(afd);
	close(lfd);
}

/* Host side of "CONNECT 1234": returns the host port of the REQUEST the
 * guest sees; *fd is the host client. */
static uint32_t host_request(struct fixture *f, int *fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct hdr h;

	*fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->path);
	assert_int_equal(connect(*fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(write(*fd, "CONNECT 1234\n", 13), 13);
	assert_true(recv_pkt(f, &h, NULL, 0));
	assert_int_equal(h.op, OP_REQUEST);
	assert_int_equal(h.dst_port, 1234);
	return h.src_port;
}

/* A restore into a new worker (a new device, the guest's RAM and rings
 * carried over) does not give its first host connection the port of one
 * the guest had before the save: a packet of the old connection that
 * the guest sends late (here a credit update with the old stream's
 * fwd_cnt) must not land in the new one, and the new one opens. */
static void test_restore_keeps_host_ports_apart(void **state)
{
	struct fixture *f = *state;
	struct state_writer w;
	struct state_file sf;
	struct vm *old = f->vm;
	const void *data;
	size_t len;
	char err[256] = "", buf[32] = "", want[32], spec[256];
	uint32_t before[2], after, id, elen;
	int fds[3];
	struct hdr h;

	start(f);
	for (unsigned i = 0; i < 2; i++)
		before[i] = host_request(f, &fds[i]);
	h = (struct hdr){ .op = OP_RESPONSE, .src_port = 1234, .dst_port = before[0],
			  .buf_alloc = 65536 };
	send_pkt(f, h, NULL, 0);
	virtio_devices_pause(old);
	state_writer_init(&w, 1);
	virtio_devices_save(old, &w);
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	assert_int_equal(state_file_parse(&sf, data, len, 1, err, sizeof(err)), 0);

	f->vm = vd_create(1);
	assert_non_null(f->vm);
	snprintf(f->path, sizeof(f->path), "%s/restored.sock", f->dir);
	snprintf(spec, sizeof(spec), "cid=%d,socket=%s", GUEST_CID, f->path);
	assert_int_equal(virtio_add_vsock(f->vm, spec, err, sizeof(err)), 0);
	memcpy(f->vm->ram, old->ram, VD_RAM_SIZE);
	f->d.vm = f->vm;
	virtio_devices_pause(f->vm);
	if (virtio_devices_restore(f->vm, &sf, err, sizeof(err))) {
		fprintf(stderr, "restore: %s\n", err);
		fail();
	}
	virtio_devices_resume(f->vm);
	assert_true(vdrv_wait_used(&f->d, 2, 3000, &id, &elen));
	assert_int_equal(get(vdrv_ptr(&f->d, EV_GPA), 4), 0); /* TRANSPORT_RESET */

	after = host_request(f, &fds[2]);
	assert_int_not_equal(after, before[0]);
	assert_int_not_equal(after, before[1]);
	h = (struct hdr){ .op = OP_CREDIT_UPDATE, .src_port = 1234, .dst_port = before[0],
			  .buf_alloc = 65536, .fwd_cnt = 100 };
	send_pkt(f, h, NULL, 0);
	assert_int_equal(vdrv_status(&f->d) & NEEDS_RESET, 0);
	h = (struct hdr){ .op = OP_RESPONSE, .src_port = 1234, .dst_port = after,
			  .buf_alloc = 65536 };
	send_pkt(f, h, NULL, 0);
	assert_true(readable(fds[2], 3000));
	snprintf(want, sizeof(want), "OK %u\n", after);
	assert_int_equal(read(fds[2], buf, strlen(want)), (ssize_t)strlen(want));
	assert_memory_equal(buf, want, strlen(want));
	assert_int_equal(vdrv_status(&f->d) & NEEDS_RESET, 0);

	state_writer_free(&w);
	for (unsigned i = 0; i < 3; i++)
		close(fds[i]);
	vd_stop_loop(old);
	virtio_devices_destroy(old);
	vd_destroy(old);
}

static void test_spec_errors(void **state)
{
	static const char *bad[] = {
		"",	"cid=7",	 "socket=/tmp/x",	  "cid=2,socket=/tmp/x",
		"cid=4294967295,socket=/tmp/x", "cid=x,socket=/tmp/x", "cid=7,socket=",
		"cid=7,socket=/tmp/x,extra",
	};
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(virtio_vsock_spec_check(bad[i], err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "--vsock"));
	}
	assert_int_equal(virtio_vsock_spec_check("cid=3,socket=/tmp/x", err, sizeof(err)), 0);
	assert_int_equal(virtio_vsock_spec_check("cid=3,socket=/tmp/x,host-only", err, sizeof(err)),
			 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config_and_ids, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guest_to_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_respects_guest_credit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_to_guest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_connect_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_listener_gets_rst, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_only_refuses_guest_connections, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_headers_need_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credit_overflow_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fwd_cnt_past_sent_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rst_ends_connection_whatever_its_credit, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_restore_resets_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_keeps_host_ports_apart, setup,
						teardown),
		cmocka_unit_test(test_spec_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
