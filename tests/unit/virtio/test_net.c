/* virtio-net and virtio-rng through the PCI transport, driven by the test
 * driver over the vm/pci double. The NIC sits on a real tap device inside
 * a private network namespace (unshare), whose other end is a packet
 * socket: frames go both ways, with the virtio-net header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "virtio_driver.h"
#include "vmm/virtio/devices.h"

#define F_VERSION_1 (1ULL << 32)
#define F_EVENT_IDX (1ULL << 29)
#define NET_F_MAC (1ULL << 5)
#define NET_F_STATUS (1ULL << 16)
#define ETHERTYPE_TEST 0x88b5
#define RXBUF_GPA 0x100000ULL
#define TXBUF_GPA 0x200000ULL
#define RXBUF_LEN 2048
#define HDR_LEN 12
#define TAP "vnt0"

static bool have_netns;

struct fixture {
	struct vm *vm;
	struct vdrv d;
	int pkt; /* the host's end: a packet socket on the tap */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256] = "";
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };

	if (!have_netns) {
		free(f);
		skip(); /* reason printed by main() */
	}
	f->vm = vd_create(1);
	assert_non_null(f->vm);
	if (virtio_add_net(f->vm, "tap=" TAP ",mac=02:11:22:33:44:55", err, sizeof(err))) {
		fprintf(stderr, "virtio_add_net: %s\n", err);
		fail();
	}
	vdrv_attach(&f->d, f->vm, 0);
	f->pkt = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
	assert_true(f->pkt >= 0);
	sll.sll_ifindex = (int)if_nametoindex(TAP);
	assert_int_not_equal(sll.sll_ifindex, 0);
	assert_int_equal(bind(f->pkt, (struct sockaddr *)&sll, sizeof(sll)), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	close(f->pkt);
	vd_stop_loop(f->vm);
	virtio_devices_destroy(f->vm);
	vd_destroy(f->vm);
	free(f);
	return 0;
}

static size_t make_frame(uint8_t *buf, uint8_t seed, size_t payload)
{
	static const uint8_t dst[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };
	static const uint8_t src[6] = { 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee };
	uint16_t type = htons(ETHERTYPE_TEST);

	memcpy(buf, dst, 6);
	memcpy(buf + 6, src, 6);
	memcpy(buf + 12, &type, 2);
	for (size_t i = 0; i < payload; i++)
		buf[14 + i] = (uint8_t)(seed + i);
	return 14 + payload;
}

static bool is_test_frame(const uint8_t *frame, size_t len)
{
	return len >= 14 && frame[12] == (ETHERTYPE_TEST >> 8) && frame[13] == (ETHERTYPE_TEST & 0xff);
}

static void start(struct fixture *f, uint64_t features)
{
	assert_int_not_equal(vdrv_init(&f->d, features, 2) & 8, 0);
}

static void post_rx(struct fixture *f, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct vdrv_seg s = { RXBUF_GPA + i * RXBUF_LEN, RXBUF_LEN, true };

		vdrv_post(&f->d, 0, &s, 1, 0);
	}
	vdrv_kick(&f->d, 0);
}

static void test_config(void **state)
{
	struct fixture *f = *state;
	static const uint8_t mac[6] = { 2, 0x11, 0x22, 0x33, 0x44, 0x55 };
	uint64_t feat = vdrv_device_features(&f->d);

	assert_true(feat & NET_F_MAC);
	assert_true(feat & NET_F_STATUS);
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(vdrv_cfg_read(&f->d, i, 1), mac[i]);
	assert_int_equal(vdrv_cfg_read(&f->d, 6, 2), 1); /* link up */
	assert_int_equal(f->vm->devs[0]->config[2] | f->vm->devs[0]->config[3] << 8, 0x1041);
}

static void test_receive(void **state)
{
	struct fixture *f = *state;
	uint8_t frame[256];
	size_t len = make_frame(frame, 7, 100);
	uint32_t id, used_len;
	bool found = false;

	start(f, F_VERSION_1 | F_EVENT_IDX | NET_F_MAC | NET_F_STATUS);
	post_rx(f, 8);
	assert_int_equal(send(f->pkt, frame, len, 0), (ssize_t)len);
	/* The host may send its own frames (IPv6 neighbour discovery): look
	 * for ours among what arrives. */
	while (!found && vdrv_wait_used(&f->d, 0, 3000, &id, &used_len)) {
		uint8_t *buf = vdrv_ptr(&f->d, RXBUF_GPA + id * RXBUF_LEN);
		uint16_t num_buffers;

		assert_true(used_len >= HDR_LEN);
		memcpy(&num_buffers, buf + 10, 2);
		assert_int_equal(num_buffers, 1);
		if (is_test_frame(buf + HDR_LEN, used_len - HDR_LEN)) {
			assert_int_equal(used_len, HDR_LEN + len);
			assert_memory_equal(buf + HDR_LEN, frame, len);
			found = true;
		}
	}
	assert_true(found);
}

static void test_transmit(void **state)
{
	struct fixture *f = *state;
	uint8_t *hdr = vdrv_ptr(&f->d, TXBUF_GPA), *frame = hdr + 64, got[2048];
	size_t len = make_frame(frame, 42, 300);
	struct vdrv_seg segs[2] = { { TXBUF_GPA, HDR_LEN, false }, { TXBUF_GPA + 64, 0, false } };
	bool found = false;

	start(f, F_VERSION_1 | NET_F_MAC);
	memset(hdr, 0, HDR_LEN);
	segs[1].len = (uint32_t)len;
	vdrv_post(&f->d, 1, segs, 2, 0);
	vdrv_kick(&f->d, 1);
	assert_true(vdrv_wait_used(&f->d, 1, 3000, NULL, NULL));
	for (int tries = 0; tries < 20 && !found; tries++) {
		struct pollfd p = { .fd = f->pkt, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 200) <= 0)
			continue;
		n = recv(f->pkt, got, sizeof(got), 0);
		if (n > 0 && is_test_frame(got, (size_t)n)) {
			assert_int_equal(n, (ssize_t)len);
			assert_memory_equal(got, frame, len);
			found = true;
		}
	}
	assert_true(found);
}

static void test_readable_rx_buffer_needs_reset(void **state)
{
	struct fixture *f = *state;
	struct vdrv_seg s = { RXBUF_GPA, RXBUF_LEN, false };
	uint8_t frame[128];
	size_t len = make_frame(frame, 1, 50);

	start(f, F_VERSION_1);
	vdrv_post(&f->d, 0, &s, 1, 0);
	vdrv_kick(&f->d, 0);
	assert_int_equal(send(f->pkt, frame, len, 0), (ssize_t)len);
	assert_true(vdrv_wait_status(&f->d, 0x40, 3000));
	/* The driver resets and everything works again. */
	start(f, F_VERSION_1);
	post_rx(f, 4);
	assert_int_equal(send(f->pkt, frame, len, 0), (ssize_t)len);
	assert_true(vdrv_wait_used(&f->d, 0, 3000, NULL, NULL));
}

static void test_tx_without_frame_needs_reset(void **state)
{
	struct fixture *f = *state;
	struct vdrv_seg s = { TXBUF_GPA, HDR_LEN, true };

	start(f, F_VERSION_1);
	vdrv_post(&f->d, 1, &s, 1, 0);
	vdrv_kick(&f->d, 1);
	assert_true(vdrv_wait_status(&f->d, 0x40, 3000));
}

static void test_rng(void **state)
{
	struct vm *vm = vd_create(1);
	struct vdrv d;
	char err[256];
	uint8_t zero[256] = { 0 };
	struct vdrv_seg s = { RXBUF_GPA, 256, true };
	uint32_t used_len;

	(void)state;
	assert_int_equal(virtio_add_rng(vm, err, sizeof(err)), 0);
	vdrv_attach(&d, vm, 0);
	assert_int_equal(vm->devs[0]->config[2] | vm->devs[0]->config[3] << 8, 0x1044);
	assert_int_not_equal(vdrv_init(&d, F_VERSION_1, 1) & 8, 0);
	vdrv_post(&d, 0, &s, 1, 0);
	vdrv_kick(&d, 0);
	assert_true(vdrv_wait_used(&d, 0, 3000, NULL, &used_len));
	assert_int_equal(used_len, 256);
	assert_memory_not_equal(vdrv_ptr(&d, RXBUF_GPA), zero, 256);
	vd_stop_loop(vm);
	virtio_devices_destroy(vm);
	vd_destroy(vm);
}

static void test_console(void **state)
{
	struct vm *vm = vd_create(1);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vdrv d;
	char err[256], path[48], got[64] = "";
	struct vdrv_seg rx = { RXBUF_GPA, 64, true }, tx = { TXBUF_GPA, 11, false };
	uint32_t used_len;
	int client;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/test_vcons_%d.sock", (int)getpid());
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(virtio_console_spec_check("tcp:1234", err, sizeof(err)), -EINVAL);
	assert_int_equal(virtio_console_spec_check("unix:", err, sizeof(err)), -EINVAL);
	snprintf(got, sizeof(got), "unix:%s", path);
	assert_int_equal(virtio_add_console(vm, got, err, sizeof(err)), 0);
	/* A second console on a live socket is refused. */
	assert_int_equal(virtio_add_console(vm, got, err, sizeof(err)), -EADDRINUSE);
	vdrv_attach(&d, vm, 0);
	assert_int_equal(vm->devs[0]->config[2] | vm->devs[0]->config[3] << 8, 0x1043);
	assert_int_not_equal(vdrv_init(&d, F_VERSION_1, 2) & 8, 0);
	client = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(client, (struct sockaddr *)&sa, sizeof(sa)), 0);
	usleep(50000); /* the event loop accepts */
	/* guest -> host */
	memcpy(vdrv_ptr(&d, TXBUF_GPA), "hello host\n", 11);
	vdrv_post(&d, 1, &tx, 1, 0);
	vdrv_kick(&d, 1);
	assert_true(vdrv_wait_used(&d, 1, 3000, NULL, NULL));
	memset(got, 0, sizeof(got));
	assert_int_equal(recv(client, got, sizeof(got), 0), 11);
	assert_string_equal(got, "hello host\n");
	/* host -> guest */
	vdrv_post(&d, 0, &rx, 1, 0);
	vdrv_kick(&d, 0);
	assert_int_equal(send(client, "hi guest", 8, 0), 8);
	assert_true(vdrv_wait_used(&d, 0, 3000, NULL, &used_len));
	assert_int_equal(used_len, 8);
	assert_memory_equal(vdrv_ptr(&d, RXBUF_GPA), "hi guest", 8);
	close(client);
	vd_stop_loop(vm);
	virtio_devices_destroy(vm);
	vd_destroy(vm);
	assert_int_not_equal(access(path, F_OK), 0); /* the socket is removed */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_config, setup, teardown),
		cmocka_unit_test_setup_teardown(test_receive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transmit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readable_rx_buffer_needs_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tx_without_frame_needs_reset, setup, teardown),
		cmocka_unit_test(test_rng),
		cmocka_unit_test(test_console),
	};
	int fd;

	/* A private network namespace: the tap never touches the host's. */
	have_netns = unshare(CLONE_NEWNET) == 0 && access("/dev/net/tun", R_OK | W_OK) == 0;
	if (!have_netns)
		fprintf(stderr, "skipping the NIC tests: cannot create a network namespace with "
				"a tap (%s; needs root and /dev/net/tun)\n", strerror(errno));
	fd = open("/proc/sys/net/ipv6/conf/default/disable_ipv6", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "1", 1) != 1)
			fprintf(stderr, "cannot disable IPv6 in the test namespace\n");
		close(fd);
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
