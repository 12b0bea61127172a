/* dnsmasq supervisor and leases reader (see dnsmasq.h). */
#include "net/dnsmasq.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NARGS 24

struct argv_buf {
	char *argv[NARGS + 1];
	char s[NARGS][160];
	unsigned n;
};

static void argf(struct argv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void argf(struct argv_buf *b, const char *fmt, ...)
{
	va_list ap;

	assert(b->n < NARGS);
	va_start(ap, fmt);
	vsnprintf(b->s[b->n], sizeof(b->s[0]), fmt, ap);
	va_end(ap);
	b->argv[b->n] = b->s[b->n];
	b->n++;
}

static void ntop_plus(struct in_addr a, uint32_t n, char out[INET_ADDRSTRLEN])
{
	a.s_addr = htonl(ntohl(a.s_addr) + n);
	inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN);
}

static void build_argv(const struct dnsmasq_config *c, struct argv_buf *b)
{
	char gw[INET_ADDRSTRLEN], lo[INET_ADDRSTRLEN], hi[INET_ADDRSTRLEN], mask[INET_ADDRSTRLEN];
	uint32_t size = 1u << (32 - c->subnet.len);
	struct in_addr m = { htonl(~0u << (32 - c->subnet.len)) };

	ntop_plus(c->subnet.addr, 1, gw);
	ntop_plus(c->subnet.addr, 2, lo);
	ntop_plus(c->subnet.addr, size - 2, hi);
	inet_ntop(AF_INET, &m, mask, sizeof(mask));
	memset(b, 0, sizeof(*b));
	argf(b, "%s", c->binary ? c->binary : DNSMASQ_BINARY);
	argf(b, "--keep-in-foreground");
	argf(b, "--conf-file=/dev/null");
	argf(b, "--pid-file=");
	argf(b, "--log-facility=-");
	argf(b, "--bind-interfaces");
	argf(b, "--interface=%s", c->bridge);
	argf(b, "--except-interface=lo");
	argf(b, "--listen-address=%s", gw);
	argf(b, "--dhcp-range=%s,%s,%s,%u", lo, hi, mask, c->lease_secs ? c->lease_secs : 3600);
	argf(b, "--dhcp-leasefile=%s", c->leases_path);
	argf(b, "--dhcp-authoritative");
	argf(b, "--dhcp-option=option:router,%s", gw);
	if (c->dns)
		argf(b, "--dhcp-option=option:dns-server,%s", gw);
	else
		argf(b, "--port=0");
	/* dnsmasq drops root after binding: to its own user where there is one. */
	argf(b, "--user=%s", getpwnam("dnsmasq") ? "dnsmasq" : "nobody");
	b->argv[b->n] = NULL;
}

static int check_config(const struct dnsmasq_config *c, char *err, size_t errlen)
{
	const char *bin = c->binary ? c->binary : DNSMASQ_BINARY;

	if (!c->bridge || !*c->bridge || !c->leases_path || !*c->leases_path) {
		snprintf(err, errlen, "dnsmasq needs a bridge and a leases file");
		return -EINVAL;
	}
	if (c->subnet.len < 8 || c->subnet.len > 30) {
		snprintf(err, errlen, "bad DHCP subnet length /%u: use /8 to /30", c->subnet.len);
		return -EINVAL;
	}
	if (access(bin, X_OK)) {
		snprintf(err, errlen, "%s not found: install dnsmasq-base", bin);
		return -ENOENT;
	}
	return 0;
}

static void child_exec(const struct dnsmasq_config *c, struct argv_buf *b)
{
	int fd = open(c->log_path ? c->log_path : "/dev/null",
		      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);

	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
		dup2(fd, STDIN_FILENO);
	/* Its own session: a signal to the caller's group is not dnsmasq's. */
	setsid();
	execv(b->argv[0], b->argv);
	_exit(127);
}

static int exit_reason(int status, char *err, size_t errlen, const struct dnsmasq_config *c)
{
	if (WIFEXITED(status))
		snprintf(err, errlen, "dnsmasq exited with status %d (see %s)", WEXITSTATUS(status),
			 c->log_path ? c->log_path : "its log");
	else
		snprintf(err, errlen, "dnsmasq was killed by signal %d", WTERMSIG(status));
	return -ECHILD;
}

int dnsmasq_start(struct dnsmasq *d, const struct dnsmasq_config *cfg, char *err, size_t errlen)
{
	struct argv_buf b;
	struct stat st;
	int status, ret;
	pid_t pid;

	ret = check_config(cfg, err, errlen);
	if (ret)
		return ret;
	build_argv(cfg, &b);
	/* A lease file left by a previous dnsmasq is kept; wait for a new one. */
	bool had_file = stat(cfg->leases_path, &st) == 0;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot fork dnsmasq: %s", strerror(-ret));
		return ret;
	}
	if (pid == 0)
		child_exec(cfg, &b);
	d->pid = pid;
	d->cfg = *cfg;
	/* Ready once it runs with its lease file open; give it 5 s. A bind
	 * failure (no such interface, port taken) ends it within that time. */
	for (int i = 0; i < 100; i++) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			d->pid = 0;
			return exit_reason(status, err, errlen, cfg);
		}
		if (i >= 6 && (had_file || stat(cfg->leases_path, &st) == 0))
			return 0;
		nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
	}
	dnsmasq_stop(d);
	snprintf(err, errlen, "dnsmasq did not open %s within 5 s", cfg->leases_path);
	return -ETIMEDOUT;
}

int dnsmasq_stop(struct dnsmasq *d)
{
	int status;

	if (d->pid <= 0)
		return 0;
	if (kill(d->pid, SIGTERM) && errno != ESRCH)
		return -errno;
	for (int i = 0; i < 40; i++) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			return 0;
		}
		nanosleep(&(struct timespec){ 0, 50 * 1000 * 1000 }, NULL);
	}
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &status, 0);
	d->pid = 0;
	return 0;
}

int dnsmasq_poll(struct dnsmasq *d, char *err, size_t errlen)
{
	struct dnsmasq_config cfg = d->cfg;
	int status;

	if (d->pid > 0 && waitpid(d->pid, &status, WNOHANG) == 0)
		return 0;
	d->pid = 0;
	d->restarts++;
	return dnsmasq_start(d, &cfg, err, errlen);
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char tail;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

int dnsmasq_lease_parse(const char *line, struct dnsmasq_lease *out)
{
	char mac[64], ip[64], host[64];
	long long expiry;

	memset(out, 0, sizeof(*out));
	/* "EXPIRY MAC IP HOSTNAME CLIENTID"; "*" for an unknown hostname. */
	if (sscanf(line, "%lld %63s %63s %63s", &expiry, mac, ip, host) != 4 || expiry < 0)
		return -EINVAL;
	if (parse_mac(mac, out->mac) || inet_pton(AF_INET, ip, &out->addr) != 1)
		return -EINVAL;
	out->expiry = expiry;
	if (strcmp(host, "*") != 0)
		snprintf(out->hostname, sizeof(out->hostname), "%s", host);
	return 0;
}

int dnsmasq_leases_read(const char *path, struct dnsmasq_lease **out, size_t *n)
{
	struct dnsmasq_lease *v = NULL, l, *nv;
	size_t cap = 0;
	char line[512];
	FILE *f;

	*out = NULL;
	*n = 0;
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), f)) {
		if (dnsmasq_lease_parse(line, &l))
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 8;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				fclose(f);
				return -ENOMEM;
			}
			v = nv;
		}
		v[(*n)++] = l;
	}
	fclose(f);
	*out = v;
	return 0;
}
