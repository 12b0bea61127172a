/* What switch.c, port.c and nat.c share; not for the daemon (switch.h is). */
#ifndef CLOISON_NET_SWITCH_INTERNAL_H
#define CLOISON_NET_SWITCH_INTERNAL_H

#include "net/switch.h"

/* Puts a sentence in sn->err and returns ret. */
int switch_fail(struct switch_net *sn, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* 0, or -EINVAL with a message, for a bad switch or port name. */
int switch_check_name(struct switch_net *sn, const char *name);
int switch_check_port(struct switch_net *sn, const char *ifname);

/* "cls-NAME". */
void switch_bridge_name(const char *name, char out[IFNAMSIZ]);

/* Writes val to a /proc/sys file. 0 or -errno. */
int switch_write_sysctl(const char *path, const char *val);

/* Fills *l with switch NAME's bridge. -ENOENT: none; -EEXIST (with a
 * message): a link of that name without our marker. */
int switch_find_bridge(struct switch_net *sn, const char *name, struct rtnl_link *l);

/* The elements of set or map (kind) WHAT of switch NAME's bridge table,
 * with a map element's value (0 for a set's). 0 or nftables' error. */
struct switch_nft_elem {
	char name[IFNAMSIZ];
	uint64_t value;
};
int switch_nft_elements(struct switch_net *sn, const char *name, const char *kind,
			const char *what, struct switch_nft_elem *out, size_t max, size_t *n);

/* Minimum bandwidth weights (weight.c). The uplink and its speed (bits/s;
 * 0: the adapter's own) go into the bridge table; -ENOENT from
 * switch_uplink_get() for a switch without one. switch_weights_sync()
 * rebuilds the uplink's HTB tree from the ports' weights, release takes it
 * away. switch_weight_class() is a port's class, false for an ifindex
 * beyond what a class id holds. */
int switch_uplink_record(struct switch_net *sn, const char *name, const char *adapter,
			 uint64_t bps);
int switch_uplink_get(struct switch_net *sn, const char *name, char ifname[IFNAMSIZ],
		      uint64_t *bps);
int switch_weights_sync(struct switch_net *sn, const char *name);
void switch_weights_release(struct switch_net *sn, const char *name);
bool switch_weight_class(int ifindex, uint32_t *classid);

#endif
