/* dnsmasq for a NAT switch: DHCP (and DNS when asked) on the switch's
 * bridge only, leases in a file the daemon reads. The daemon starts one
 * per NAT switch, polls it with dnsmasq_poll() from its loop and restarts
 * it when it died; the lease file survives restarts, so leases do too. */
#ifndef CLOISON_NET_DNSMASQ_H
#define CLOISON_NET_DNSMASQ_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "net/rtnl.h"

#define DNSMASQ_BINARY "/usr/sbin/dnsmasq"

struct dnsmasq_config {
	const char *binary;        /* NULL: DNSMASQ_BINARY */
	const char *bridge;        /* the interface it binds to */
	struct ip4_prefix subnet;  /* the switch's subnet; the gateway is its first address */
	const char *leases_path;   /* its directory must exist */
	const char *log_path;      /* stdout+stderr of dnsmasq; NULL: /dev/null */
	bool dns;                  /* serve DNS on the gateway (forwarding to the host's) */
	unsigned lease_secs;       /* 0: one hour */
};

struct dnsmasq {
	pid_t pid;                 /* 0: not running */
	unsigned restarts;
	struct dnsmasq_config cfg; /* strings borrowed from the caller */
};

/* Starts dnsmasq and waits (up to 5 s) until it has opened its leases file
 * and is still running. 0, or -errno with a sentence in err. The child is
 * the caller's: stop it with dnsmasq_stop(). */
int dnsmasq_start(struct dnsmasq *d, const struct dnsmasq_config *cfg, char *err, size_t errlen);

/* SIGTERM, then SIGKILL after 2 s; reaps it. 0 or -errno. */
int dnsmasq_stop(struct dnsmasq *d);

/* Reaps a dead dnsmasq and starts it again. Returns 0 when it runs (was or
 * is again), -errno when the restart failed. */
int dnsmasq_poll(struct dnsmasq *d, char *err, size_t errlen);

struct dnsmasq_lease {
	int64_t expiry;            /* seconds since the epoch, 0: infinite */
	uint8_t mac[6];
	struct in_addr addr;
	char hostname[64];         /* "" when the client gave none */
};

/* Reads a dnsmasq leases file (IPv4 lines; IPv6 and malformed lines are
 * skipped). *out is malloc'd (caller frees), *n its count. A missing file
 * is no leases. 0 or -errno. */
int dnsmasq_leases_read(const char *path, struct dnsmasq_lease **out, size_t *n);

/* Parses one leases-file line. 0, or -EINVAL for a line that is not an
 * IPv4 lease. */
int dnsmasq_lease_parse(const char *line, struct dnsmasq_lease *out);

#endif
