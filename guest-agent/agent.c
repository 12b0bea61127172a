/* cloison-agent: the agent protocol (docs/agent.md) for Linux guests, one
 * connection at a time. See agent.h. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <mntent.h>
#include <net/if.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "hosted/virtio.h" /* struct sha256 (guest/sha256.c) */

#define BODY_TEXT_MAX 8192

struct conn {
	const struct agent_config *cfg;
	int fd;
	/* copy */
	int file_fd;
	char file_dest[PATH_MAX], file_tmp[PATH_MAX + 16];
	uint64_t file_size;
	struct sha256 file_sha;
	/* backup */
	int frozen_fd[AGENT_MAX_FREEZE];
	unsigned nfrozen;
	uint64_t thaw_at; /* CLOCK_MONOTONIC ns, 0 = not frozen */
	bool shutdown;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int write_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == ENOTSOCK)
			w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EPIPE;
		p = (const uint8_t *)p + w;
		n -= (size_t)w;
	}
	return 0;
}

static int send_msg(struct conn *c, uint16_t type, const void *body, uint32_t len)
{
	uint8_t h[AGENT_FRAME_HDR] = { (uint8_t)type, (uint8_t)(type >> 8), 0, 0, (uint8_t)len,
				 (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24) };
	int r = write_all(c->fd, h, sizeof(h));

	return r ? r : write_all(c->fd, body, len);
}

static int send_text(struct conn *c, uint16_t type, const char *text)
{
	return send_msg(c, type, text, (uint32_t)strlen(text));
}

/* The value of key in a "key=value\n" body, copied into out; false if
 * missing or too long. */
static bool field(const char *body, const char *key, char *out, size_t cap)
{
	size_t klen = strlen(key);

	for (const char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, klen) || p[klen] != '=')
			continue;
		const char *v = p + klen + 1, *e = strchr(v, '\n');
		size_t n = e ? (size_t)(e - v) : strlen(v);

		if (n >= cap)
			return false;
		memcpy(out, v, n);
		out[n] = 0;
		return true;
	}
	return false;
}

static int error_reply(struct conn *c, uint16_t type, uint16_t reply, const char *why)
{
	char body[1024];

	snprintf(body, sizeof(body), "ok=0\ntype=%u\nerror=%.900s\n", type, why);
	return send_text(c, reply, body);
}

/* ---- KVP: what the guest tells the host ---- */

static void os_name(char *out, size_t cap)
{
	FILE *f = fopen("/etc/os-release", "re");
	char line[512];

	snprintf(out, cap, "Linux");
	while (f && fgets(line, sizeof(line), f)) {
		char *v = line + 12, *e;

		if (strncmp(line, "PRETTY_NAME=", 12))
			continue;
		if (*v == '"')
			v++;
		e = v + strcspn(v, "\"\n");
		*e = 0;
		snprintf(out, cap, "%.*s", (int)(cap - 1), v);
	}
	if (f)
		fclose(f);
}

static size_t ip_lines(char *out, size_t cap)
{
	struct ifaddrs *ifa, *i;
	size_t n = 0;

	if (getifaddrs(&ifa))
		return 0;
	for (i = ifa; i; i = i->ifa_next) {
		char host[NI_MAXHOST];
		bool first = true;

		if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) ||
		    (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
			continue;
		/* one line per interface: skip if an earlier entry had it */
		for (struct ifaddrs *j = ifa; j != i; j = j->ifa_next)
			if (j->ifa_addr && !strcmp(j->ifa_name, i->ifa_name) &&
			    (j->ifa_addr->sa_family == AF_INET || j->ifa_addr->sa_family == AF_INET6))
				first = false;
		if (!first)
			continue;
		n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "ip.%s=", i->ifa_name);
		bool any = false;
		for (struct ifaddrs *j = i; j; j = j->ifa_next) {
			socklen_t sl;

			if (!j->ifa_addr || strcmp(j->ifa_name, i->ifa_name) ||
			    (j->ifa_addr->sa_family != AF_INET && j->ifa_addr->sa_family != AF_INET6))
				continue;
			sl = j->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
							       : sizeof(struct sockaddr_in6);
			if (getnameinfo(j->ifa_addr, sl, host, sizeof(host), NULL, 0, NI_NUMERICHOST))
				continue;
			*strchrnul(host, '%') = 0;
			n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", any ? "," : "",
					      host);
			any = true;
		}
		n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "\n");
	}
	freeifaddrs(ifa);
	return n < cap ? n : cap - 1;
}

static int hello(struct conn *c)
{
	char body[BODY_TEXT_MAX], host[256] = "", os[256];
	struct utsname u;
	size_t n;
	int r;

	snprintf(body, sizeof(body), "version=%d\nservices=" AGENT_SERVICES "\nagent=cloison-agent "
		 AGENT_VERSION "\n", AGENT_PROTO_VERSION);
	r = send_text(c, MSG_HELLO, body);
	if (r)
		return r;
	gethostname(host, sizeof(host) - 1);
	os_name(os, sizeof(os));
	if (uname(&u))
		snprintf(u.release, sizeof(u.release), "unknown");
	n = (size_t)snprintf(body, sizeof(body), "hostname=%s\nos=%s\nkernel=Linux %s\n", host, os,
			     u.release);
	if (n < sizeof(body))
		n += ip_lines(body + n, sizeof(body) - n);
	return send_msg(c, MSG_KVP_GUEST, body, (uint32_t)(n < sizeof(body) ? n : sizeof(body) - 1));
}

/* ---- the services ---- */

static int time_set(struct conn *c, const char *body)
{
	char v[32], reply[128], *end;
	struct timespec before;
	uint64_t ns;
	int r;

	errno = 0;
	if (!field(body, "unix_ns", v, sizeof(v)) || !(ns = strtoull(v, &end, 10)) || *end || errno)
		return error_reply(c, MSG_TIME_SET, MSG_ERROR, "TIME_SET needs unix_ns=N");
	clock_gettime(CLOCK_REALTIME, &before);
	r = c->cfg->ops.set_clock(c->cfg->ops.opaque, ns);
	if (r)
		return error_reply(c, MSG_TIME_SET, MSG_ERROR, strerror(-r));
	snprintf(reply, sizeof(reply), "guest_before_ns=%" PRIu64 "\nguest_after_ns=%" PRIu64 "\n",
		 (uint64_t)((uint64_t)before.tv_sec * 1000000000ull + (uint64_t)before.tv_nsec), ns);
	return send_text(c, MSG_TIME_ACK, reply);
}

static bool name_ok(const char *k)
{
	return *k && strlen(k) <= 255 && !strchr(k, '/') && strcmp(k, ".") && strcmp(k, "..");
}

static int kvp_set(struct conn *c, const char *body)
{
	char key[256], value[2048], path[PATH_MAX], tmp[PATH_MAX + 8];
	int fd;

	if (!c->cfg->kvp_dir)
		return error_reply(c, MSG_KVP_SET, MSG_ERROR, "no KVP directory (--kvp-dir)");
	if (!field(body, "key", key, sizeof(key)) || !field(body, "value", value, sizeof(value)) ||
	    !name_ok(key))
		return error_reply(c, MSG_KVP_SET, MSG_ERROR, "KVP_SET needs key= (a file name) and "
				   "value=");
	snprintf(path, sizeof(path), "%s/%s", c->cfg->kvp_dir, key);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0 || write_all(fd, value, strlen(value)) || fsync(fd) || rename(tmp, path)) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		unlink(tmp);
		return error_reply(c, MSG_KVP_SET, MSG_ERROR, strerror(e));
	}
	close(fd);
	return send_text(c, MSG_KVP_ACK, "ok=1\n");
}

static void file_abort(struct conn *c)
{
	if (c->file_fd < 0)
		return;
	close(c->file_fd);
	unlink(c->file_tmp);
	c->file_fd = -1;
}

static int file_begin(struct conn *c, const char *body)
{
	file_abort(c);
	if (!field(body, "dest", c->file_dest, sizeof(c->file_dest)) || c->file_dest[0] != '/')
		return error_reply(c, MSG_FILE_BEGIN, MSG_FILE_RESULT, "FILE_BEGIN needs dest=/path");
	snprintf(c->file_tmp, sizeof(c->file_tmp), "%s.cloison-tmp", c->file_dest);
	c->file_fd = open(c->file_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (c->file_fd < 0) {
		char why[PATH_MAX + 64];

		snprintf(why, sizeof(why), "%.800s: %s", c->file_tmp, strerror(errno));
		return error_reply(c, MSG_FILE_BEGIN, MSG_FILE_RESULT, why);
	}
	c->file_size = 0;
	sha256_init(&c->file_sha);
	return 0;
}

static int file_data(struct conn *c, const uint8_t *p, uint32_t n)
{
	if (c->file_fd < 0)
		return 0; /* the error went with FILE_BEGIN (or comes with FILE_END) */
	if (write_all(c->file_fd, p, n)) {
		file_abort(c);
		return error_reply(c, MSG_FILE_DATA, MSG_FILE_RESULT, "write failed");
	}
	sha256_update(&c->file_sha, p, n);
	c->file_size += n;
	return 0;
}

static int file_end(struct conn *c)
{
	uint8_t sum[32];
	char hex[65], reply[160];

	if (c->file_fd < 0)
		return error_reply(c, MSG_FILE_END, MSG_FILE_RESULT, "no FILE_BEGIN before this");
	if (fsync(c->file_fd) || rename(c->file_tmp, c->file_dest)) {
		int e = errno;

		file_abort(c);
		return error_reply(c, MSG_FILE_END, MSG_FILE_RESULT, strerror(e));
	}
	close(c->file_fd);
	c->file_fd = -1;
	sha256_final(&c->file_sha, sum);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", sum[i]);
	snprintf(reply, sizeof(reply), "ok=1\nsize=%" PRIu64 "\nsha256=%s\n", c->file_size, hex);
	return send_text(c, MSG_FILE_RESULT, reply);
}

static unsigned thaw_all(struct conn *c)
{
	unsigned n = 0;

	while (c->nfrozen) {
		int fd = c->frozen_fd[--c->nfrozen];

		if (ioctl(fd, FITHAW, 0) == 0)
			n++;
		close(fd);
	}
	c->thaw_at = 0;
	return n;
}

/* The mount points to freeze: the configured ones, or every one on a
 * block device but the root (freezing / would stop the agent's own
 * writes, as the Linux VSS agents leave it out too). */
static unsigned freeze_list(const struct conn *c, char list[][PATH_MAX])
{
	unsigned n = 0;
	FILE *f;
	struct mntent me, *m;
	char buf[4096];

	for (; n < AGENT_MAX_FREEZE && c->cfg->freeze[n]; n++)
		snprintf(list[n], PATH_MAX, "%s", c->cfg->freeze[n]);
	if (n || !c->cfg->freeze_all || !(f = setmntent("/proc/self/mounts", "re")))
		return n;
	while (n < AGENT_MAX_FREEZE && (m = getmntent_r(f, &me, buf, sizeof(buf))))
		if (!strncmp(m->mnt_fsname, "/dev/", 5) && strcmp(m->mnt_dir, "/"))
			snprintf(list[n++], PATH_MAX, "%s", m->mnt_dir);
	endmntent(f);
	return n;
}

static int freeze(struct conn *c, const char *body)
{
	static char list[AGENT_MAX_FREEZE][PATH_MAX];
	char v[32], reply[PATH_MAX + 64], *end;
	unsigned long ms;
	unsigned n;

	errno = 0;
	if (!field(body, "timeout_ms", v, sizeof(v)) || !(ms = strtoul(v, &end, 10)) || *end ||
	    errno || ms > 600000)
		return error_reply(c, MSG_FREEZE, MSG_FREEZE_RESULT, "FREEZE needs timeout_ms=1..600000");
	thaw_all(c);
	n = freeze_list(c, list);
	for (unsigned i = 0; i < n; i++) {
		int fd = open(list[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd < 0 || ioctl(fd, FIFREEZE, 0)) {
			snprintf(reply, sizeof(reply), "FIFREEZE %.800s: %s", list[i], strerror(errno));
			if (fd >= 0)
				close(fd);
			thaw_all(c);
			return error_reply(c, MSG_FREEZE, MSG_FREEZE_RESULT, reply);
		}
		c->frozen_fd[c->nfrozen++] = fd;
	}
	c->thaw_at = mono_ns() + (uint64_t)ms * 1000000ull;
	snprintf(reply, sizeof(reply), "ok=1\nfrozen=%u\n", c->nfrozen);
	return send_text(c, MSG_FREEZE_RESULT, reply);
}

static int thaw(struct conn *c)
{
	char reply[64];

	snprintf(reply, sizeof(reply), "ok=1\nthawed=%u\n", thaw_all(c));
	return send_text(c, MSG_THAW_RESULT, reply);
}

static int dispatch(struct conn *c, uint16_t type, const uint8_t *body, uint32_t len)
{
	char text[BODY_TEXT_MAX];
	char err[64];

	if (type == MSG_FILE_DATA)
		return file_data(c, body, len);
	if (len >= sizeof(text) || memchr(body, 0, len))
		return error_reply(c, type, MSG_ERROR, "body too long or not text");
	memcpy(text, body, len);
	text[len] = 0;
	switch (type) {
	case MSG_HELLO:
		return hello(c);
	case MSG_HEARTBEAT:
		return send_msg(c, MSG_HEARTBEAT_REPLY, body, len);
	case MSG_SHUTDOWN:
		c->shutdown = true;
		return send_text(c, MSG_SHUTDOWN_ACK, "ok=1\n");
	case MSG_TIME_SET:
		return time_set(c, text);
	case MSG_KVP_SET:
		return kvp_set(c, text);
	case MSG_FILE_BEGIN:
		return file_begin(c, text);
	case MSG_FILE_END:
		return file_end(c);
	case MSG_FREEZE:
		return freeze(c, text);
	case MSG_THAW:
		return thaw(c);
	default:
		snprintf(err, sizeof(err), "ok=0\ntype=%u\nerror=unknown message type\n", type);
		return send_text(c, MSG_ERROR, err);
	}
}

/* Whole frames from buf; *used gets what was consumed. -EPROTO on a frame
 * larger than the protocol allows. */
static int frames(struct conn *c, const uint8_t *buf, size_t len, size_t *used)
{
	size_t off = 0;
	int r = 0;

	while (!r && len - off >= AGENT_FRAME_HDR) {
		const uint8_t *h = buf + off;
		uint32_t n = h[4] | h[5] << 8 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 24;

		if (n > AGENT_FRAME_MAX)
			return -EPROTO;
		if (len - off < AGENT_FRAME_HDR + n)
			break;
		r = dispatch(c, (uint16_t)(h[0] | h[1] << 8), h + AGENT_FRAME_HDR, n);
		off += AGENT_FRAME_HDR + n;
	}
	*used = off;
	return r;
}

int agent_serve(const struct agent_config *cfg, int fd)
{
	static uint8_t buf[AGENT_FRAME_HDR + AGENT_FRAME_MAX];
	struct conn *c = calloc(1, sizeof(*c));
	size_t have = 0;
	int r = 0;

	if (!c)
		return -ENOMEM;
	c->cfg = cfg;
	c->fd = fd;
	c->file_fd = -1;
	while (!r && !c->shutdown) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int timeout = -1;
		ssize_t n;
		size_t used = 0;

		if (c->thaw_at) {
			uint64_t now = mono_ns();

			if (now >= c->thaw_at) {
				unsigned t = thaw_all(c);

				fprintf(stderr, "cloison-agent: no thaw came in time: thawed %u file "
					"system(s)\n", t);
				continue;
			}
			timeout = (int)((c->thaw_at - now) / 1000000 + 1);
		}
		if (poll(&p, 1, timeout) == 0)
			continue;
		n = read(fd, buf + have, sizeof(buf) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		r = frames(c, buf, have, &used);
		memmove(buf, buf + used, have - used);
		have -= used;
	}
	thaw_all(c);
	file_abort(c);
	if (c->shutdown && !r) {
		cfg->ops.shutdown(cfg->ops.opaque);
		r = 1;
	}
	free(c);
	return r;
}
