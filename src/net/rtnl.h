/* A small rtnetlink client on libmnl: links (bridges, enslaving, up/down,
 * alias, delete), IPv4 addresses and the IPv4 route dump the subnet chooser
 * reads. One request at a time on one socket; every call waits for the
 * kernel's answer and returns 0 or -errno. The caller owns struct rtnl and
 * closes it with rtnl_close(). */
#ifndef CLOISON_NET_RTNL_H
#define CLOISON_NET_RTNL_H

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

struct mnl_socket;

struct rtnl {
	struct mnl_socket *nl;
	uint32_t seq;
	uint32_t portid;
};

/* What rtnl_link_get() reports about one link. */
struct rtnl_link {
	int ifindex;
	int master;           /* ifindex of the bridge it is a port of, 0: none */
	unsigned flags;       /* IFF_* */
	char name[IFNAMSIZ];
	char kind[16];        /* IFLA_INFO_KIND: "bridge", "tun", "veth", "" */
	char alias[128];      /* IFLA_IFALIAS, "" when unset */
	uint8_t mac[6];
};

/* An IPv4 prefix: address in network byte order and its length. */
struct ip4_prefix {
	struct in_addr addr;
	unsigned len;
};

/* Opens a NETLINK_ROUTE socket in the caller's network namespace. */
int rtnl_open(struct rtnl *r);
void rtnl_close(struct rtnl *r);

/* Fills *out for link NAME. -ENODEV: no such link. */
int rtnl_link_get(struct rtnl *r, const char *name, struct rtnl_link *out);

/* Creates a bridge NAME (down, no ports) with alias ALIAS (may be NULL).
 * -EEXIST when a link of that name exists. */
int rtnl_bridge_add(struct rtnl *r, const char *name, const char *alias);

/* Deletes link NAME (any kind). -ENODEV: no such link. */
int rtnl_link_del(struct rtnl *r, const char *name);

/* Sets or clears (master_ifindex 0) the bridge NAME is a port of. */
int rtnl_link_set_master(struct rtnl *r, const char *name, int master_ifindex);

/* Sets the link administratively up or down. */
int rtnl_link_set_up(struct rtnl *r, const char *name, bool up);

/* Sets the link's alias (ifalias), the marker switches carry. */
int rtnl_link_set_alias(struct rtnl *r, const char *name, const char *alias);

/* Adds IPv4 address ADDR/LEN to ifindex; an address already there is 0. */
int rtnl_addr4_add(struct rtnl *r, int ifindex, struct in_addr addr, unsigned len);

/* Deletes IPv4 address ADDR/LEN from ifindex. */
int rtnl_addr4_del(struct rtnl *r, int ifindex, struct in_addr addr, unsigned len);

/* Lists ifindex's IPv4 addresses (with their prefix lengths) into out[max];
 * *n gets the count. -ENOSPC when there are more than max. */
int rtnl_addr4_list(struct rtnl *r, int ifindex, struct ip4_prefix *out, size_t max, size_t *n);

/* An IPv6 prefix. */
struct ip6_prefix {
	struct in6_addr addr;
	unsigned len;
};

/* Lists ifindex's permanent global IPv6 addresses (the ones configured by
 * hand or by the distribution, not SLAAC's or link-local ones, which a link
 * makes for itself). -ENOSPC when there are more than max. */
int rtnl_addr6_list(struct rtnl *r, int ifindex, struct ip6_prefix *out, size_t max, size_t *n);

/* Adds (without duplicate address detection: the address is moving, not
 * new) or deletes an IPv6 address. An address already there is 0. */
int rtnl_addr6_add(struct rtnl *r, int ifindex, const struct in6_addr *addr, unsigned len);
int rtnl_addr6_del(struct rtnl *r, int ifindex, const struct in6_addr *addr, unsigned len);

/* One IPv4 route, as much of it as moving it to another link needs. */
struct rtnl_route4 {
	struct ip4_prefix dst;   /* len 0: default route */
	struct in_addr gateway;  /* 0: none (on-link) */
	struct in_addr prefsrc;  /* 0: none */
	int oif;
	uint32_t table, metric;
	uint8_t protocol, scope, type;
};

/* Calls fn for every IPv4 route of every table (the chooser must avoid
 * them all). fn returns 0 to go on, anything else stops the walk and is
 * returned. */
typedef int (*rtnl_route_fn)(const struct rtnl_route4 *rt, void *arg);
int rtnl_route4_walk(struct rtnl *r, rtnl_route_fn fn, void *arg);

/* Adds route rt through link oif (rt->oif is ignored). An identical route
 * already there is 0. */
int rtnl_route4_add(struct rtnl *r, const struct rtnl_route4 *rt, int oif);

/* Traffic control, for the minimum bandwidth weights of an external
 * switch's uplink (docs/switch.md): an HTB qdisc as the link's root
 * (unclassified traffic goes to class
 * handle:default_minor; -EEXIST when the root has that handle already),
 * its classes (created or changed; rates in bits/s,
 * the ceiling what a class may borrow up to), their removal and a list of
 * the link's class handles. Deleting a root the kernel gave the link
 * itself is not an error. */
int rtnl_htb_qdisc_set(struct rtnl *r, int ifindex, uint32_t handle, uint32_t default_minor);
int rtnl_qdisc_root_del(struct rtnl *r, int ifindex);
int rtnl_htb_class_set(struct rtnl *r, int ifindex, uint32_t classid, uint32_t parent,
		       uint64_t rate_bps, uint64_t ceil_bps);
int rtnl_tc_class_del(struct rtnl *r, int ifindex, uint32_t classid);
int rtnl_tc_class_list(struct rtnl *r, int ifindex, uint32_t *out, size_t max, size_t *n);

/* Parses "A.B.C.D/LEN" (LEN 8..30); the host bits must be zero unless
 * allow_host is set. 0 or -EINVAL. */
int ip4_prefix_parse(const char *s, bool allow_host, struct ip4_prefix *out);

/* True when the two prefixes share an address. */
bool ip4_prefix_overlap(const struct ip4_prefix *a, const struct ip4_prefix *b);

#endif
