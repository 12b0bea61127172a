/* Host side of cloison's virtual switches: one Linux bridge per switch, its
 * nftables tables, its ports (taps, or any link such as a veth), per-port
 * guards and access VLANs, and for NAT switches masquerade and port
 * forwards. The daemon keeps the inventory; this layer keeps the kernel
 * objects and can rebuild or adopt them from what the kernel holds.
 *
 * Names. A switch NAME is [A-Za-z0-9_]{1,11}; its bridge is "cls-NAME", its
 * ifalias "cloison-switch:NAME" (the marker that lets a restarted daemon
 * adopt it), and its nftables tables are "cloison_NAME" in the bridge, inet,
 * arp and (NAT) ip families. Port names are [A-Za-z0-9_.-]{1,15}.
 *
 * Errors are 0 or -errno; every failure also leaves a sentence a person can
 * act on in sn->err. A success leaves sn->err empty, or a sentence starting
 * "warning:" (e.g. a route that did not follow the management OS's
 * addresses). */
#ifndef CLOISON_NET_SWITCH_H
#define CLOISON_NET_SWITCH_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/nft.h"
#include "net/rtnl.h"

#define SWITCH_NAME_MAX 11
#define SWITCH_BRIDGE_PREFIX "cls-"
#define SWITCH_ALIAS_PREFIX "cloison-switch:"
#define SWITCH_VLAN_MAX 4094

enum switch_type {
	SWITCH_PRIVATE,
	SWITCH_INTERNAL,
	SWITCH_EXTERNAL,
	SWITCH_NAT,
};

/* One handle per caller (the daemon holds one): sockets and the last error. */
struct switch_net {
	struct rtnl rtnl;
	struct nft nft;
	char err[640];
};

struct switch_config {
	const char *name;
	enum switch_type type;
	const char *adapter;          /* external: the physical link to enslave */
	/* external: the host keeps using the adapter's network (Hyper-V's
	 * AllowManagementOS): its IPv4 addresses and routes move to the
	 * bridge, and back when the switch is removed. */
	bool share_management;
	/* internal: the host side's address/len (len 0: none).
	 * nat: the subnet; the host takes its first address (the gateway). */
	struct ip4_prefix addr;
	/* external: the uplink's speed in bits/s, what minimum bandwidth
	 * weights share; 0: the adapter's own (1 Gbit/s if it gives none) */
	uint64_t uplink_bandwidth;
};

struct switch_info {
	char bridge[IFNAMSIZ];
	int ifindex;
	bool adopted;                 /* it was there with our marker */
	struct in_addr gateway;       /* nat/internal: the host's address */
};

/* Hyper-V's port mirroring: a destination port gets a copy of every frame
 * a source port sends or receives. */
enum switch_mirror {
	SWITCH_MIRROR_NONE,
	SWITCH_MIRROR_SOURCE,
	SWITCH_MIRROR_DESTINATION,
};

/* Per-port settings, with Hyper-V's names. */
struct switch_port_config {
	bool mac_spoofing;            /* false: drop frames not from mac */
	uint8_t mac[6];               /* the adapter's (the guest's) MAC */
	bool dhcp_guard;              /* drop DHCP server messages from the port */
	bool router_guard;            /* drop RAs and redirects from the port */
	unsigned vlan;                /* access VLAN, 0: untagged */
	uint64_t bandwidth_max;       /* bits/s the VM may send, 0: no cap */
	/* Hyper-V's MinimumBandwidthWeight, 0 to 100: the port's minimum share
	 * of an external switch's uplink under contention; 0: none */
	unsigned bandwidth_weight;
	enum switch_mirror mirror;
};

/* A port config with Hyper-V's defaults: spoofing off, guards off, VLAN 0. */
void switch_port_config_default(struct switch_port_config *pc, const uint8_t mac[6]);

int switch_net_open(struct switch_net *sn);
void switch_net_close(struct switch_net *sn);

const char *switch_type_name(enum switch_type t);
/* 0 and *out, or -EINVAL for an unknown name. */
int switch_type_parse(const char *s, enum switch_type *out);

/* Creates the switch's bridge, addresses and tables, or adopts them when a
 * bridge of that name carries our marker (then only what is missing is
 * added; nothing that works is torn down, so traffic keeps flowing).
 * -EEXIST: a link of that name without our marker; -ENODEV: no such
 * adapter; -EBUSY: the adapter is already a port of some bridge. On failure
 * nothing new is left behind. */
int switch_create(struct switch_net *sn, const struct switch_config *cfg, struct switch_info *out);

/* Deletes the bridge (its ports are released, taps survive) and the
 * tables. A switch that does not exist is -ENOENT. */
int switch_destroy(struct switch_net *sn, const char *name);

/* Makes link IFNAME a port of switch NAME with pc's guards and VLAN, and
 * sets it up. Re-attaching replaces the previous settings. */
int switch_port_attach(struct switch_net *sn, const char *name, const char *ifname,
		       const struct switch_port_config *pc);

/* Removes IFNAME's rules and takes it off the bridge (if it still exists). */
int switch_port_detach(struct switch_net *sn, const char *name, const char *ifname);

/* Creates persistent tap TAPNAME (IFF_VNET_HDR, header vnet_hdr_len) and
 * attaches it to switch NAME. Returns the tap's fd (close-on-exec,
 * non-blocking; the caller owns it and passes it to the worker), or -errno;
 * on failure the tap is gone. */
int switch_tap_create(struct switch_net *sn, const char *name, const char *tapname,
		      const struct switch_port_config *pc, int vnet_hdr_len);

/* Detaches and deletes a tap made by switch_tap_create(). */
int switch_tap_remove(struct switch_net *sn, const char *name, const char *tapname);

/* NAT port forward: PROTO ("tcp"/"udp") HOSTPORT on the host's addresses to
 * VMADDR:VMPORT. -EEXIST: that host port is forwarded already. */
int switch_nat_forward_add(struct switch_net *sn, const char *name, const char *proto,
			   unsigned hostport, struct in_addr vmaddr, unsigned vmport);
/* -ENOENT: no such forward. */
int switch_nat_forward_remove(struct switch_net *sn, const char *name, const char *proto,
			      unsigned hostport);

/* Chooses a /24 for a NAT switch that overlaps none of the host's IPv4
 * routes (the default route aside): 192.168.100.0/24 … 192.168.254.0/24,
 * then 172.16.0.0/24 … 172.31.255.0/24. -EADDRNOTAVAIL when all collide. */
int switch_subnet_choose(struct switch_net *sn, struct ip4_prefix *out);

/* -EADDRINUSE (with a message naming the route) when p overlaps one of the
 * host's routes other than the default route; 0 when it is free. */
int switch_subnet_check(struct switch_net *sn, const struct ip4_prefix *p);

#endif
