/* cloison-agent's protocol (guest-agent/agent.c) over a socketpair standing
 * in for vsock, one test per service: HELLO and the guest's KVP items,
 * heartbeat, time (through a recording clock), host KVP into files, a
 * file copy byte for byte, shutdown, unknown and oversized frames, and
 * FIFREEZE/FITHAW on a loop-mounted ext4 (root and a loop device: skipped
 * only when the host has no loop devices), with the agent's own thaw when
 * the host never sends one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "agent.h"
#include "hosted/virtio.h"

struct fixture {
	int fd; /* the host's end */
	pthread_t thread;
	bool running; /* thread started and not joined */
	int serve_ret;
	int agent_fd;
	struct agent_config cfg;
	char dir[64], kvp[96];
	uint64_t clock_set;
	int shutdowns;
};

static int fake_clock(void *opaque, uint64_t ns)
{
	((struct fixture *)opaque)->clock_set = ns;
	return 0;
}

static void fake_shutdown(void *opaque)
{
	((struct fixture *)opaque)->shutdowns++;
}

static void *serve(void *arg)
{
	struct fixture *f = arg;

	f->serve_ret = agent_serve(&f->cfg, f->agent_fd);
	close(f->agent_fd);
	return NULL;
}

static void start(struct fixture *f)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	f->fd = sv[0];
	f->agent_fd = sv[1];
	assert_int_equal(pthread_create(&f->thread, NULL, serve, f), 0);
	f->running = true;
}

static void join(struct fixture *f)
{
	pthread_join(f->thread, NULL);
	f->running = false;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->fd = -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_agent.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->kvp, sizeof(f->kvp), "%s/kvp", f->dir);
	assert_int_equal(mkdir(f->kvp, 0755), 0);
	f->cfg.kvp_dir = f->kvp;
	f->cfg.ops = (struct agent_ops){ fake_clock, fake_shutdown, f };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[256];

	if (f->fd >= 0)
		close(f->fd);
	if (f->running)
		join(f);
	snprintf(cmd, sizeof(cmd), "umount -q %s/mnt 2>/dev/null; rm -rf %s", f->dir, f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void send_frame(struct fixture *f, uint16_t type, const void *body, uint32_t len)
{
	uint8_t h[8] = { (uint8_t)type, (uint8_t)(type >> 8), 0, 0, (uint8_t)len,
			 (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24) };

	assert_int_equal(write(f->fd, h, 8), 8);
	for (uint32_t off = 0; off < len;) {
		ssize_t n = write(f->fd, (const uint8_t *)body + off, len - off);

		assert_true(n > 0);
		off += (uint32_t)n;
	}
}

static void send_text(struct fixture *f, uint16_t type, const char *body)
{
	send_frame(f, type, body, (uint32_t)strlen(body));
}

static bool read_full(int fd, void *p, size_t n)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };

	for (size_t off = 0; off < n;) {
		ssize_t r;

		if (poll(&pf, 1, 5000) != 1)
			return false;
		r = read(fd, (uint8_t *)p + off, n - off);
		if (r <= 0)
			return false;
		off += (size_t)r;
	}
	return true;
}

/* The next frame: its type, body NUL-terminated in buf. */
static uint16_t recv_frame(struct fixture *f, char *buf, size_t cap)
{
	uint8_t h[8];
	uint32_t len;

	assert_true(read_full(f->fd, h, 8));
	len = h[4] | h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;
	assert_true(len < cap);
	assert_true(read_full(f->fd, buf, len));
	buf[len] = 0;
	return (uint16_t)(h[0] | h[1] << 8);
}

static void test_hello_and_guest_kvp(void **state)
{
	struct fixture *f = *state;
	char buf[9000], host[256] = "", want[512];
	struct utsname u;

	start(f);
	send_text(f, 1, "version=1\nservices=shutdown,heartbeat\nhost=test\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 1);
	assert_non_null(strstr(buf, "version=1\n"));
	assert_non_null(strstr(buf, "services=shutdown,heartbeat,timesync,kvp,copy,backup\n"));
	assert_non_null(strstr(buf, "agent=cloison-agent "));
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 8);
	gethostname(host, sizeof(host) - 1);
	snprintf(want, sizeof(want), "hostname=%s\n", host);
	assert_non_null(strstr(buf, want));
	assert_int_equal(uname(&u), 0);
	snprintf(want, sizeof(want), "kernel=Linux %s\n", u.release);
	assert_non_null(strstr(buf, want));
	assert_non_null(strstr(buf, "os="));
	assert_null(strstr(buf, "ip.lo=")); /* loopback is not reported */
}

static void test_heartbeat(void **state)
{
	struct fixture *f = *state;
	char buf[64];

	start(f);
	send_text(f, 2, "seq=41\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 3);
	assert_string_equal(buf, "seq=41\n");
}

static void test_time_set(void **state)
{
	struct fixture *f = *state;
	char buf[256];

	start(f);
	send_text(f, 6, "unix_ns=1796000000123456789\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 7);
	assert_non_null(strstr(buf, "guest_after_ns=1796000000123456789\n"));
	assert_non_null(strstr(buf, "guest_before_ns="));
	assert_true(f->clock_set == 1796000000123456789ull);
	send_text(f, 6, "unix_ns=soon\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 255);
	assert_non_null(strstr(buf, "unix_ns"));
}

static void test_host_kvp(void **state)
{
	struct fixture *f = *state;
	char buf[256], path[160], got[64] = "";
	int fd;

	start(f);
	send_text(f, 9, "key=role\nvalue=web server\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 10);
	snprintf(path, sizeof(path), "%s/role", f->kvp);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, got, sizeof(got)), 10);
	close(fd);
	assert_string_equal(got, "web server");
	send_text(f, 9, "key=../escape\nvalue=x\n"); /* not a file name */
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 255);
	snprintf(path, sizeof(path), "%s/escape", f->dir);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_copy_file(void **state)
{
	struct fixture *f = *state;
	static uint8_t data[150 * 1024 + 3], back[sizeof(data)];
	char buf[512], dest[128], want[80];
	struct sha256 s;
	uint8_t sum[32];
	int fd;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + (i >> 9));
	start(f);
	snprintf(dest, sizeof(dest), "dest=%s/copied.bin\nsize=%zu\n", f->dir, sizeof(data));
	send_text(f, 11, dest);
	for (size_t off = 0; off < sizeof(data); off += 60 * 1024)
		send_frame(f, 12, data + off,
			   (uint32_t)(sizeof(data) - off < 60 * 1024 ? sizeof(data) - off : 60 * 1024));
	send_text(f, 13, "");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 14);
	sha256_init(&s);
	sha256_update(&s, data, sizeof(data));
	sha256_final(&s, sum);
	memcpy(want, "sha256=", 7);
	for (int i = 0; i < 32; i++)
		snprintf(want + 7 + 2 * i, 3, "%02x", sum[i]);
	assert_non_null(strstr(buf, "ok=1\n"));
	assert_non_null(strstr(buf, want));
	snprintf(dest, sizeof(dest), "%s/copied.bin", f->dir);
	fd = open(dest, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, back, sizeof(back)), (ssize_t)sizeof(data));
	close(fd);
	assert_memory_equal(back, data, sizeof(data));
	/* an end with no begin, and a destination that cannot be written */
	send_text(f, 13, "");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 14);
	assert_non_null(strstr(buf, "ok=0"));
	send_text(f, 11, "dest=/nonexistent-dir/x\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 14);
	assert_non_null(strstr(buf, "ok=0"));
}

static void test_shutdown(void **state)
{
	struct fixture *f = *state;
	char buf[64];

	start(f);
	send_text(f, 4, "reason=stop\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 5);
	join(f);
	assert_int_equal(f->serve_ret, 1);
	assert_int_equal(f->shutdowns, 1);
}

static void test_unknown_and_oversized(void **state)
{
	struct fixture *f = *state;
	uint8_t h[8] = { 2, 0, 0, 0, 0x01, 0x00, 0x01, 0x00 }; /* 65537 bytes */
	char buf[128];

	start(f);
	send_text(f, 77, "");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 255);
	assert_non_null(strstr(buf, "type=77"));
	assert_int_equal(write(f->fd, h, 8), 8);
	assert_false(read_full(f->fd, buf, 1)); /* the agent hung up */
	join(f);
	assert_int_equal(f->serve_ret, -EPROTO);
}

/* ---- FIFREEZE on a loop-mounted ext4 ---- */

static bool mount_loop(struct fixture *f)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd),
		 "truncate -s 32M %1$s/fs.img && mkfs.ext4 -q -F %1$s/fs.img && mkdir %1$s/mnt && "
		 "mount -o loop %1$s/fs.img %1$s/mnt", f->dir);
	return system(cmd) == 0;
}

/* Whether the file system at mnt is frozen now: a second FIFREEZE says
 * EBUSY (ours is then thawed again). */
static bool is_frozen(const char *mnt)
{
	int fd = open(mnt, O_RDONLY | O_DIRECTORY);
	bool frozen;

	assert_true(fd >= 0);
	frozen = ioctl(fd, FIFREEZE, 0) && errno == EBUSY;
	if (!frozen)
		assert_int_equal(ioctl(fd, FITHAW, 0), 0);
	close(fd);
	return frozen;
}

static void test_freeze_thaw_loop_mount(void **state)
{
	struct fixture *f = *state;
	char buf[512], mnt[96];

	if (access("/dev/loop-control", F_OK)) {
		print_message("skipped: this host has no loop devices (/dev/loop-control)\n");
		skip();
	}
	assert_true(mount_loop(f)); /* a failed set-up is a failure, not a skip */
	snprintf(mnt, sizeof(mnt), "%s/mnt", f->dir);
	f->cfg.freeze[0] = mnt;
	start(f);
	assert_false(is_frozen(mnt));
	send_text(f, 15, "timeout_ms=10000\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 16);
	assert_non_null(strstr(buf, "ok=1\nfrozen=1\n"));
	assert_true(is_frozen(mnt));
	send_text(f, 17, "reason=host\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 18);
	assert_non_null(strstr(buf, "thawed=1"));
	assert_false(is_frozen(mnt));
	/* no THAW: the agent thaws on its own when the timeout runs out */
	send_text(f, 15, "timeout_ms=300\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 16);
	assert_true(is_frozen(mnt));
	usleep(700 * 1000);
	assert_false(is_frozen(mnt));
	/* and a connection that ends thaws too */
	send_text(f, 15, "timeout_ms=60000\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 16);
	assert_true(is_frozen(mnt));
	close(f->fd);
	f->fd = -1;
	join(f);
	assert_false(is_frozen(mnt));
	start(f);
	send_text(f, 15, "timeout_ms=0\n");
	assert_int_equal(recv_frame(f, buf, sizeof(buf)), 16);
	assert_non_null(strstr(buf, "ok=0"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hello_and_guest_kvp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_heartbeat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_time_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_kvp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_and_oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(test_freeze_thaw_loop_mount, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
