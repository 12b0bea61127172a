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

#endif
