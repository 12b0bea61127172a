/* Virtual switches on Linux bridges and nftables (see switch.h and
 * docs/switch.md for the rule layout). */
#include "net/switch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/rtnetlink.h>

#include "net/switch_internal.h"

int switch_fail(struct switch_net *sn, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sn->err, sizeof(sn->err), fmt, ap);
	va_end(ap);
	return ret;
}

static const char *const type_names[] = {
	[SWITCH_PRIVATE] = "private",
	[SWITCH_INTERNAL] = "internal",
	[SWITCH_EXTERNAL] = "external",
	[SWITCH_NAT] = "nat",
};

const char *switch_type_name(enum switch_type t)
{
	return (unsigned)t < sizeof(type_names) / sizeof(type_names[0]) ? type_names[t] : "?";
}

int switch_type_parse(const char *s, enum switch_type *out)
{
	for (unsigned i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
		if (strcmp(s, type_names[i]) == 0) {
			*out = (enum switch_type)i;
			return 0;
		}
	}
	return -EINVAL;
}

void switch_port_config_default(struct switch_port_config *pc, const uint8_t mac[6])
{
	memset(pc, 0, sizeof(*pc));
	memcpy(pc->mac, mac, 6);
}

int switch_net_open(struct switch_net *sn)
{
	int ret;

	sn->err[0] = '\0';
	ret = rtnl_open(&sn->rtnl);
	if (ret)
		return switch_fail(sn, ret, "cannot open an rtnetlink socket: %s", strerror(-ret));
	ret = nft_open(&sn->nft);
	if (ret) {
		rtnl_close(&sn->rtnl);
		return switch_fail(sn, ret, "cannot make an nftables context: %s", strerror(-ret));
	}
	return 0;
}

void switch_net_close(struct switch_net *sn)
{
	nft_close(&sn->nft);
	rtnl_close(&sn->rtnl);
}

static bool name_ok(const char *s, size_t max, bool extra)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '_' || (extra && (c == '-' || c == '.'));
		if (!ok)
			return false;
	}
	return true;
}

int switch_check_name(struct switch_net *sn, const char *name)
{
	if (!name || !name_ok(name, SWITCH_NAME_MAX, false))
		return switch_fail(sn, -EINVAL,
			    "bad switch name \"%s\": use 1 to %d letters, digits or '_'",
			    name ? name : "", SWITCH_NAME_MAX);
	return 0;
}

int switch_check_port(struct switch_net *sn, const char *ifname)
{
	if (!ifname || !name_ok(ifname, IFNAMSIZ - 1, true))
		return switch_fail(sn, -EINVAL,
			    "bad interface name \"%s\": use 1 to %d letters, digits, '_', '-' or '.'",
			    ifname ? ifname : "", IFNAMSIZ - 1);
	return 0;
}

void switch_bridge_name(const char *name, char out[IFNAMSIZ])
{
	snprintf(out, IFNAMSIZ, SWITCH_BRIDGE_PREFIX "%s", name);
}

int switch_write_sysctl(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int ret = 0;

	if (fd < 0)
		return -errno;
	n = write(fd, val, strlen(val));
	if (n < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* The switch's bridge with our marker, or -ENOENT / -EEXIST (not ours). */
int switch_find_bridge(struct switch_net *sn, const char *name, struct rtnl_link *l)
{
	char br[IFNAMSIZ], alias[128];
	int ret;

	switch_bridge_name(name, br);
	ret = rtnl_link_get(&sn->rtnl, br, l);
	if (ret == -ENODEV)
		return -ENOENT;
	if (ret)
		return switch_fail(sn, ret, "cannot read link %s: %s", br, strerror(-ret));
	snprintf(alias, sizeof(alias), SWITCH_ALIAS_PREFIX "%s", name);
	size_t n = strlen(alias);
	/* The marker, then optionally " uplink=IF" (management OS shared). */
	if (strcmp(l->kind, "bridge") != 0 || strncmp(l->alias, alias, n) != 0 ||
	    (l->alias[n] != '\0' && l->alias[n] != ' '))
		return switch_fail(sn, -EEXIST,
			    "a link named %s exists and is not cloison's switch \"%s\" (no alias "
			    "\"%s\"): remove it or pick another name",
			    br, name, alias);
	return 0;
}

/* Written into the bridge table's comment; a table without it was made by
 * an older layout and is rebuilt on adoption (the daemon then re-attaches
 * the ports). Bump it when the layout changes. */
#define SWITCH_TABLE_LAYOUT "cloison-switch layout 2"

/* The bridge-family table: guards and VLANs of every port (docs/switch.md). */
static int bridge_table(struct switch_net *sn, const char *name)
{
	return nft_run(&sn->nft,
		       "add table bridge cloison_%1$s { comment \"" SWITCH_TABLE_LAYOUT "\"; }\n"
		       "add map bridge cloison_%1$s guards { type ifname : verdict; }\n"
		       "add map bridge cloison_%1$s vlans { type ifname : verdict; }\n"
		       "add set bridge cloison_%1$s tagged { type ifname; }\n"
		       "add map bridge cloison_%1$s limits { type ifname : verdict; }\n"
		       /* Port mirroring's state; the netdev table is made from it. */
		       "add set bridge cloison_%1$s mirror_src { type ifname; }\n"
		       "add set bridge cloison_%1$s mirror_dst { type ifname; }\n"
		       /* Once per frame as it enters from a port: the policers. */
		       "add chain bridge cloison_%1$s prerouting { type filter hook prerouting priority filter; policy accept; }\n"
		       "add rule bridge cloison_%1$s prerouting iifname vmap @limits\n"
		       "add chain bridge cloison_%1$s forward { type filter hook forward priority filter; policy accept; }\n"
		       "add chain bridge cloison_%1$s input { type filter hook input priority filter; policy accept; }\n"
		       "add chain bridge cloison_%1$s output { type filter hook output priority filter; policy accept; }\n"
		       "add rule bridge cloison_%1$s forward iifname vmap @guards\n"
		       "add rule bridge cloison_%1$s forward iifname vmap @vlans\n"
		       "add rule bridge cloison_%1$s input iifname vmap @guards\n"
		       /* The host side is untagged: tagged ports do not reach it. */
		       "add rule bridge cloison_%1$s input iifname @tagged counter drop\n"
		       "add rule bridge cloison_%1$s output oifname @tagged counter drop\n",
		       name);
}

/* The inet and arp tables: the host's own reach into the switch. */
static bool host_isolated(const struct switch_config *cfg)
{
	return cfg->type == SWITCH_PRIVATE ||
	       (cfg->type == SWITCH_EXTERNAL && !cfg->share_management);
}

static int host_tables(struct switch_net *sn, const struct switch_config *cfg)
{
	const char *name = cfg->name;
	enum switch_type type = cfg->type;
	const struct ip4_prefix *subnet = &cfg->addr;
	char br[IFNAMSIZ];
	int ret;

	switch_bridge_name(name, br);
	if (host_isolated(cfg))
		/* No address on the bridge is not enough: the host still answers
		 * ARP for its other addresses and talks IPv6 link-local. */
		return nft_run(&sn->nft,
			       "add table inet cloison_%1$s\n"
			       "add chain inet cloison_%1$s input { type filter hook input priority filter; policy accept; }\n"
			       "add chain inet cloison_%1$s output { type filter hook output priority filter; policy accept; }\n"
			       "add chain inet cloison_%1$s forward { type filter hook forward priority filter; policy accept; }\n"
			       "add rule inet cloison_%1$s input iifname \"%2$s\" counter drop\n"
			       "add rule inet cloison_%1$s output oifname \"%2$s\" counter drop\n"
			       "add rule inet cloison_%1$s forward iifname \"%2$s\" oifname != \"%2$s\" counter drop\n"
			       "add rule inet cloison_%1$s forward oifname \"%2$s\" iifname != \"%2$s\" counter drop\n"
			       "add table arp cloison_%1$s\n"
			       "add chain arp cloison_%1$s input { type filter hook input priority filter; policy accept; }\n"
			       "add chain arp cloison_%1$s output { type filter hook output priority filter; policy accept; }\n"
			       "add rule arp cloison_%1$s input iifname \"%2$s\" counter drop\n"
			       "add rule arp cloison_%1$s output oifname \"%2$s\" counter drop\n",
			       name, br);
	/* No routing between switches, as in Hyper-V. Where br_netfilter is
	 * loaded, frames bridged within the switch also pass the inet forward
	 * hook (iif and oif both the bridge): every rule leaves those alone. */
	ret = nft_run(&sn->nft,
		      "add table inet cloison_%1$s\n"
		      "add chain inet cloison_%1$s forward { type filter hook forward priority filter; policy accept; }\n"
		      "add rule inet cloison_%1$s forward iifname \"%2$s\" oifname \"" SWITCH_BRIDGE_PREFIX
		      "*\" oifname != \"%2$s\" counter drop\n",
		      name, br);
	if (ret || type != SWITCH_NAT)
		return ret;
	char net[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &subnet->addr, net, sizeof(net));
	/* Outside in: only answers and port forwards, as libvirt's NAT. */
	ret = nft_run(&sn->nft,
		      "add rule inet cloison_%1$s forward oifname \"%2$s\" iifname != \"%2$s\" ct state established,related accept\n"
		      "add rule inet cloison_%1$s forward oifname \"%2$s\" iifname != \"%2$s\" ct status dnat accept\n"
		      "add rule inet cloison_%1$s forward oifname \"%2$s\" iifname != \"%2$s\" counter drop\n"
		      "add table ip cloison_%1$s\n"
		      "add map ip cloison_%1$s fwd_tcp { type inet_service : ipv4_addr . inet_service; }\n"
		      "add map ip cloison_%1$s fwd_udp { type inet_service : ipv4_addr . inet_service; }\n"
		      "add chain ip cloison_%1$s prerouting { type nat hook prerouting priority dstnat; policy accept; }\n"
		      "add chain ip cloison_%1$s output { type nat hook output priority -100; policy accept; }\n"
		      "add chain ip cloison_%1$s postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
		      "add rule ip cloison_%1$s prerouting iifname != \"%2$s\" fib daddr type local dnat ip to tcp dport map @fwd_tcp\n"
		      "add rule ip cloison_%1$s prerouting iifname != \"%2$s\" fib daddr type local dnat ip to udp dport map @fwd_udp\n"
		      "add rule ip cloison_%1$s output fib daddr type local dnat ip to tcp dport map @fwd_tcp\n"
		      "add rule ip cloison_%1$s output fib daddr type local dnat ip to udp dport map @fwd_udp\n"
		      "add rule ip cloison_%1$s postrouting ip saddr %3$s/%4$u ip daddr != %3$s/%4$u counter masquerade\n",
		      name, br, net, subnet->len);
	return ret;
}

static void drop_tables(struct switch_net *sn, const char *name)
{
	static const char *const families[] = { "bridge", "inet", "arp", "ip", "netdev" };
	char table[32];

	snprintf(table, sizeof(table), "cloison_%s", name);
	for (unsigned i = 0; i < 5; i++)
		nft_table_delete(&sn->nft, families[i], table);
}

/* Are all the tables this type of switch has there? */
static bool tables_present(struct switch_net *sn, const struct switch_config *cfg)
{
	char t[32];

	snprintf(t, sizeof(t), "cloison_%s", cfg->name);
	char *text;
	if (nft_list(&sn->nft, false, &text, "list table bridge %s", t))
		return false;
	bool current = strstr(text, "comment \"" SWITCH_TABLE_LAYOUT "\"") != NULL;
	free(text);
	if (!current || !nft_table_exists(&sn->nft, "inet", t))
		return false;
	if (host_isolated(cfg) && !nft_table_exists(&sn->nft, "arp", t))
		return false;
	return cfg->type != SWITCH_NAT || nft_table_exists(&sn->nft, "ip", t);
}

static int check_config(struct switch_net *sn, const struct switch_config *cfg)
{
	int ret = switch_check_name(sn, cfg->name);

	if (ret)
		return ret;
	switch (cfg->type) {
	case SWITCH_PRIVATE:
		return 0;
	case SWITCH_INTERNAL:
		if (cfg->addr.len && (cfg->addr.len < 8 || cfg->addr.len > 30))
			return switch_fail(sn, -EINVAL, "bad host address length /%u: use /8 to /30",
				    cfg->addr.len);
		return 0;
	case SWITCH_EXTERNAL:
		if (!cfg->adapter || !*cfg->adapter)
			return switch_fail(sn, -EINVAL, "an external switch needs an adapter (--adapter IF)");
		return switch_check_port(sn, cfg->adapter);
	case SWITCH_NAT:
		if (cfg->addr.len < 8 || cfg->addr.len > 30)
			return switch_fail(sn, -EINVAL, "a NAT switch needs a subnet of /8 to /30");
		return 0;
	}
	return switch_fail(sn, -EINVAL, "unknown switch type %d", (int)cfg->type);
}

static int attach_adapter(struct switch_net *sn, const struct switch_config *cfg, int br_ifindex)
{
	struct rtnl_link l;
	int ret = rtnl_link_get(&sn->rtnl, cfg->adapter, &l);

	if (ret == -ENODEV)
		return switch_fail(sn, -ENODEV, "adapter %s does not exist (see ip link)", cfg->adapter);
	if (ret)
		return switch_fail(sn, ret, "cannot read adapter %s: %s", cfg->adapter, strerror(-ret));
	if (l.master && l.master != br_ifindex)
		return switch_fail(sn, -EBUSY, "adapter %s is already a port of another bridge",
			    cfg->adapter);
	if (strcmp(l.kind, "bridge") == 0)
		return switch_fail(sn, -EINVAL, "adapter %s is a bridge: name a physical adapter",
			    cfg->adapter);
	ret = rtnl_link_set_master(&sn->rtnl, cfg->adapter, br_ifindex);
	if (!ret)
		ret = rtnl_link_set_up(&sn->rtnl, cfg->adapter, true);
	if (ret)
		return switch_fail(sn, ret, "cannot enslave %s: %s", cfg->adapter, strerror(-ret));
	/* What minimum bandwidth weights share (weight.c) */
	ret = switch_uplink_record(sn, cfg->name, cfg->adapter, cfg->uplink_bandwidth);
	if (ret)
		return sn->err[0] ? ret : switch_fail(sn, ret, "cannot record uplink %s: %s",
						       cfg->adapter, sn->nft.err);
	/* The uplink is untagged (no 802.1Q here): it is in VLAN 0. */
	return nft_run(&sn->nft,
		       "add set bridge cloison_%1$s vlan_0 { type ifname; }\n"
		       "add element bridge cloison_%1$s vlan_0 { \"%2$s\" }\n",
		       cfg->name, cfg->adapter);
}

#define MOVE_MAX 32

/* What moves with the management OS: a link's IPv4 addresses and the
 * main-table routes through it that the kernel did not make itself (those
 * come back with the addresses). */
struct l3_state {
	struct ip4_prefix addrs[MOVE_MAX];
	size_t naddrs;
	struct ip6_prefix addrs6[MOVE_MAX];
	size_t naddrs6;
	struct rtnl_route4 routes[MOVE_MAX];
	size_t nroutes;
	int oif;
	bool overflow;
};

static int collect_route(const struct rtnl_route4 *rt, void *arg)
{
	struct l3_state *st = arg;

	if (rt->oif != st->oif || rt->table != RT_TABLE_MAIN || rt->type != RTN_UNICAST ||
	    rt->protocol == RTPROT_KERNEL)
		return 0;
	if (st->nroutes == MOVE_MAX) {
		st->overflow = true;
		return 0;
	}
	st->routes[st->nroutes++] = *rt;
	return 0;
}

/* The IPv6 part of a move, after IPv4's has succeeded: each address is
 * added to `to` before it leaves `from`; one that will not move stays
 * where it was, with a warning. (IPv6 routes mostly come from router
 * advertisements, which the bridge hears itself: they are not moved.) */
static void move_l3_v6(struct switch_net *sn, const struct l3_state *st, int from, int to,
		       const char *to_name)
{
	char a[INET6_ADDRSTRLEN];

	for (size_t i = 0; i < st->naddrs6; i++) {
		int ret = rtnl_addr6_add(&sn->rtnl, to, &st->addrs6[i].addr, st->addrs6[i].len);
		if (!ret) {
			rtnl_addr6_del(&sn->rtnl, from, &st->addrs6[i].addr, st->addrs6[i].len);
		} else if (!sn->err[0]) {
			inet_ntop(AF_INET6, &st->addrs6[i].addr, a, sizeof(a));
			switch_fail(sn, ret, "warning: %s/%u did not move to %s: %s", a,
				    st->addrs6[i].len, to_name, strerror(-ret));
		}
	}
}

/* Moves IPv4 addresses and routes from link `from` to link `to`. The
 * addresses are added to `to` before any leaves `from`, so a failure half
 * way leaves the host with its addresses (on `from`, where they were). */
static int move_l3(struct switch_net *sn, int from, const char *from_name, int to, const char *to_name)
{
	struct l3_state st = { .oif = from };
	char a[INET_ADDRSTRLEN];
	size_t i;
	int ret;

	ret = rtnl_addr4_list(&sn->rtnl, from, st.addrs, MOVE_MAX, &st.naddrs);
	if (!ret)
		ret = rtnl_addr6_list(&sn->rtnl, from, st.addrs6, MOVE_MAX, &st.naddrs6);
	if (!ret)
		ret = rtnl_route4_walk(&sn->rtnl, collect_route, &st);
	if (!ret && st.overflow)
		ret = -ENOSPC;
	if (ret)
		return switch_fail(sn, ret, "cannot read the addresses and routes of %s: %s", from_name,
			    strerror(-ret));
	for (i = 0; i < st.naddrs; i++) {
		ret = rtnl_addr4_add(&sn->rtnl, to, st.addrs[i].addr, st.addrs[i].len);
		if (ret)
			break;
	}
	if (ret) {
		unsigned len = st.addrs[i].len;
		inet_ntop(AF_INET, &st.addrs[i].addr, a, sizeof(a));
		while (i-- > 0)
			rtnl_addr4_del(&sn->rtnl, to, st.addrs[i].addr, st.addrs[i].len);
		return switch_fail(sn, ret, "cannot move %s/%u from %s to %s (it stays on %s): %s", a, len,
			    from_name, to_name, from_name, strerror(-ret));
	}
	for (i = 0; i < st.naddrs; i++)
		rtnl_addr4_del(&sn->rtnl, from, st.addrs[i].addr, st.addrs[i].len);
	move_l3_v6(sn, &st, from, to, to_name);
	/* The addresses have moved: a route that will not follow is a warning
	 * (left in sn->err), not a reason to undo the move. */
	for (i = 0; i < st.nroutes; i++) {
		ret = rtnl_route4_add(&sn->rtnl, &st.routes[i], to);
		if (ret && !sn->err[0]) {
			inet_ntop(AF_INET, &st.routes[i].dst.addr, a, sizeof(a));
			switch_fail(sn, ret, "warning: addresses moved to %s, but the route to %s/%u did not: %s",
				    to_name, a, st.routes[i].dst.len, strerror(-ret));
		}
	}
	return 0;
}

/* Releases the uplink recorded in the bridge's alias and moves the
 * management OS's addresses back to it. No uplink (or none recorded) is 0. */
static int give_back_uplink(struct switch_net *sn, const struct rtnl_link *br)
{
	const char *up = strstr(br->alias, " uplink=");
	struct rtnl_link ad;
	int ret;

	if (!up || rtnl_link_get(&sn->rtnl, up + 8, &ad) != 0)
		return 0;
	if (ad.master != br->ifindex)
		return 0; /* never enslaved here (e.g. another bridge's port): not ours */
	ret = rtnl_link_set_master(&sn->rtnl, ad.name, 0);
	if (!ret)
		ret = rtnl_link_set_up(&sn->rtnl, ad.name, true);
	if (ret)
		return switch_fail(sn, ret, "cannot release %s from %s: %s", ad.name, br->name,
				   strerror(-ret));
	return move_l3(sn, br->ifindex, br->name, ad.ifindex, ad.name);
}

static int setup_bridge(struct switch_net *sn, const struct switch_config *cfg, struct switch_info *out,
			bool fresh)
{
	char path[128];
	int ret;

	if (host_isolated(cfg)) {
		snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", out->bridge);
		switch_write_sysctl(path, "1"); /* absent when the host has no IPv6: fine */
	}
	if (fresh) {
		ret = bridge_table(sn, cfg->name);
		if (!ret)
			ret = host_tables(sn, cfg);
		if (ret)
			return switch_fail(sn, ret, "cannot make the switch's nftables tables: %s", sn->nft.err);
	}
	if (cfg->type == SWITCH_INTERNAL || cfg->type == SWITCH_NAT) {
		if (cfg->addr.len) {
			struct in_addr a = cfg->addr.addr;
			if (cfg->type == SWITCH_NAT)
				a.s_addr = htonl(ntohl(a.s_addr) + 1);
			ret = rtnl_addr4_add(&sn->rtnl, out->ifindex, a, cfg->addr.len);
			if (ret)
				return switch_fail(sn, ret, "cannot give %s its address: %s", out->bridge,
					    strerror(-ret));
			out->gateway = a;
		}
	}
	if (cfg->type == SWITCH_NAT) {
		ret = switch_write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
		if (ret)
			return switch_fail(sn, ret, "cannot turn on IPv4 forwarding: %s", strerror(-ret));
	}
	if (cfg->type == SWITCH_EXTERNAL) {
		ret = attach_adapter(sn, cfg, out->ifindex);
		if (ret)
			return ret;
	}
	ret = rtnl_link_set_up(&sn->rtnl, out->bridge, true);
	if (ret)
		return switch_fail(sn, ret, "cannot set %s up: %s", out->bridge, strerror(-ret));
	if (cfg->type == SWITCH_EXTERNAL && cfg->share_management) {
		struct rtnl_link ad;
		ret = rtnl_link_get(&sn->rtnl, cfg->adapter, &ad);
		if (!ret)
			ret = move_l3(sn, ad.ifindex, cfg->adapter, out->ifindex, out->bridge);
		if (ret)
			return sn->err[0] ? ret : switch_fail(sn, ret, "cannot move %s's addresses: %s",
						       cfg->adapter, strerror(-ret));
	}
	return 0;
}

int switch_create(struct switch_net *sn, const struct switch_config *cfg, struct switch_info *out)
{
	char alias[128];
	struct rtnl_link l;
	int ret;

	memset(out, 0, sizeof(*out));
	sn->err[0] = '\0';
	ret = check_config(sn, cfg);
	if (ret)
		return ret;
	switch_bridge_name(cfg->name, out->bridge);
	ret = switch_find_bridge(sn, cfg->name, &l);
	if (ret == 0) {
		/* Adopt: add only what is missing, tear nothing down. */
		out->adopted = true;
		out->ifindex = l.ifindex;
		if (!tables_present(sn, cfg)) {
			/* Ports lose their rules here; the daemon re-attaches them. */
			drop_tables(sn, cfg->name);
			ret = bridge_table(sn, cfg->name);
			if (!ret)
				ret = host_tables(sn, cfg);
			if (ret)
				return switch_fail(sn, ret, "cannot rebuild the tables of %s: %s", out->bridge,
					    sn->nft.err);
		}
		return setup_bridge(sn, cfg, out, false);
	}
	if (ret != -ENOENT)
		return ret;
	if (cfg->type == SWITCH_NAT) {
		ret = switch_subnet_check(sn, &cfg->addr);
		if (ret)
			return ret;
	}
	if (cfg->type == SWITCH_EXTERNAL && cfg->share_management)
		snprintf(alias, sizeof(alias), SWITCH_ALIAS_PREFIX "%s uplink=%s", cfg->name,
			 cfg->adapter);
	else
		snprintf(alias, sizeof(alias), SWITCH_ALIAS_PREFIX "%s", cfg->name);
	ret = rtnl_bridge_add(&sn->rtnl, out->bridge, alias);
	if (ret) {
		rtnl_link_del(&sn->rtnl, out->bridge);
		return switch_fail(sn, ret, "cannot create bridge %s: %s", out->bridge, strerror(-ret));
	}
	ret = rtnl_link_get(&sn->rtnl, out->bridge, &l);
	if (ret)
		goto err;
	out->ifindex = l.ifindex;
	drop_tables(sn, cfg->name); /* leftovers of a switch whose bridge went away */
	ret = setup_bridge(sn, cfg, out, true);
	if (ret)
		goto err;
	return 0;
err:
	if (!sn->err[0])
		switch_fail(sn, ret, "cannot set up bridge %s: %s", out->bridge, strerror(-ret));
	/* Whatever moved to the bridge goes back before the bridge goes. */
	char why[sizeof(sn->err)];
	memcpy(why, sn->err, sizeof(why));
	sn->err[0] = '\0';
	if (rtnl_link_get(&sn->rtnl, out->bridge, &l) == 0)
		give_back_uplink(sn, &l);
	memcpy(sn->err, why, sizeof(why));
	drop_tables(sn, cfg->name);
	rtnl_link_del(&sn->rtnl, out->bridge);
	return ret;
}

int switch_destroy(struct switch_net *sn, const char *name)
{
	char br[IFNAMSIZ];
	struct rtnl_link l;
	int ret;

	sn->err[0] = '\0';
	ret = switch_check_name(sn, name);
	if (ret)
		return ret;
	ret = switch_find_bridge(sn, name, &l);
	if (ret == -ENOENT)
		return switch_fail(sn, -ENOENT, "no switch \"%s\" on this host", name);
	if (ret)
		return ret;
	switch_bridge_name(name, br);
	/* The management OS's addresses go back to the adapter first; if they
	 * cannot, the switch stays, so the host keeps them on the bridge. */
	switch_weights_release(sn, name);
	ret = give_back_uplink(sn, &l);
	if (ret)
		return ret;
	ret = rtnl_link_del(&sn->rtnl, br);
	if (ret)
		return switch_fail(sn, ret, "cannot delete bridge %s: %s", br, strerror(-ret));
	drop_tables(sn, name);
	return 0;
}
