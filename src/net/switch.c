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

#include "net/tap.h"

static int fail(struct switch_net *sn, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct switch_net *sn, int ret, const char *fmt, ...)
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
		return fail(sn, ret, "cannot open an rtnetlink socket: %s", strerror(-ret));
	ret = nft_open(&sn->nft);
	if (ret) {
		rtnl_close(&sn->rtnl);
		return fail(sn, ret, "cannot make an nftables context: %s", strerror(-ret));
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

static int check_name(struct switch_net *sn, const char *name)
{
	if (!name || !name_ok(name, SWITCH_NAME_MAX, false))
		return fail(sn, -EINVAL,
			    "bad switch name \"%s\": use 1 to %d letters, digits or '_'",
			    name ? name : "", SWITCH_NAME_MAX);
	return 0;
}

static int check_port(struct switch_net *sn, const char *ifname)
{
	if (!ifname || !name_ok(ifname, IFNAMSIZ - 1, true))
		return fail(sn, -EINVAL,
			    "bad interface name \"%s\": use 1 to %d letters, digits, '_', '-' or '.'",
			    ifname ? ifname : "", IFNAMSIZ - 1);
	return 0;
}

static void bridge_name(const char *name, char out[IFNAMSIZ])
{
	snprintf(out, IFNAMSIZ, SWITCH_BRIDGE_PREFIX "%s", name);
}

static int write_sysctl(const char *path, const char *val)
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
static int find_bridge(struct switch_net *sn, const char *name, struct rtnl_link *l)
{
	char br[IFNAMSIZ], alias[128];
	int ret;

	bridge_name(name, br);
	ret = rtnl_link_get(&sn->rtnl, br, l);
	if (ret == -ENODEV)
		return -ENOENT;
	if (ret)
		return fail(sn, ret, "cannot read link %s: %s", br, strerror(-ret));
	snprintf(alias, sizeof(alias), SWITCH_ALIAS_PREFIX "%s", name);
	size_t n = strlen(alias);
	/* The marker, then optionally " uplink=IF" (management OS shared). */
	if (strcmp(l->kind, "bridge") != 0 || strncmp(l->alias, alias, n) != 0 ||
	    (l->alias[n] != '\0' && l->alias[n] != ' '))
		return fail(sn, -EEXIST,
			    "a link named %s exists and is not cloison's switch \"%s\" (no alias "
			    "\"%s\"): remove it or pick another name",
			    br, name, alias);
	return 0;
}

/* The bridge-family table: guards and VLANs of every port (docs/switch.md). */
static int bridge_table(struct switch_net *sn, const char *name)
{
	return nft_run(&sn->nft,
		       "add table bridge cloison_%1$s\n"
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

	bridge_name(name, br);
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
	if (!nft_table_exists(&sn->nft, "bridge", t) || !nft_table_exists(&sn->nft, "inet", t))
		return false;
	if (host_isolated(cfg) && !nft_table_exists(&sn->nft, "arp", t))
		return false;
	return cfg->type != SWITCH_NAT || nft_table_exists(&sn->nft, "ip", t);
}

static int check_config(struct switch_net *sn, const struct switch_config *cfg)
{
	int ret = check_name(sn, cfg->name);

	if (ret)
		return ret;
	switch (cfg->type) {
	case SWITCH_PRIVATE:
		return 0;
	case SWITCH_INTERNAL:
		if (cfg->addr.len && (cfg->addr.len < 8 || cfg->addr.len > 30))
			return fail(sn, -EINVAL, "bad host address length /%u: use /8 to /30",
				    cfg->addr.len);
		return 0;
	case SWITCH_EXTERNAL:
		if (!cfg->adapter || !*cfg->adapter)
			return fail(sn, -EINVAL, "an external switch needs an adapter (--adapter IF)");
		return check_port(sn, cfg->adapter);
	case SWITCH_NAT:
		if (cfg->addr.len < 8 || cfg->addr.len > 30)
			return fail(sn, -EINVAL, "a NAT switch needs a subnet of /8 to /30");
		return 0;
	}
	return fail(sn, -EINVAL, "unknown switch type %d", (int)cfg->type);
}

static int attach_adapter(struct switch_net *sn, const struct switch_config *cfg, int br_ifindex)
{
	struct rtnl_link l;
	int ret = rtnl_link_get(&sn->rtnl, cfg->adapter, &l);

	if (ret == -ENODEV)
		return fail(sn, -ENODEV, "adapter %s does not exist (see ip link)", cfg->adapter);
	if (ret)
		return fail(sn, ret, "cannot read adapter %s: %s", cfg->adapter, strerror(-ret));
	if (l.master && l.master != br_ifindex)
		return fail(sn, -EBUSY, "adapter %s is already a port of another bridge",
			    cfg->adapter);
	if (strcmp(l.kind, "bridge") == 0)
		return fail(sn, -EINVAL, "adapter %s is a bridge: name a physical adapter",
			    cfg->adapter);
	ret = rtnl_link_set_master(&sn->rtnl, cfg->adapter, br_ifindex);
	if (!ret)
		ret = rtnl_link_set_up(&sn->rtnl, cfg->adapter, true);
	if (ret)
		return fail(sn, ret, "cannot enslave %s: %s", cfg->adapter, strerror(-ret));
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
		ret = rtnl_route4_walk(&sn->rtnl, collect_route, &st);
	if (!ret && st.overflow)
		ret = -ENOSPC;
	if (ret)
		return fail(sn, ret, "cannot read the addresses and routes of %s: %s", from_name,
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
		return fail(sn, ret, "cannot move %s/%u from %s to %s (it stays on %s): %s", a, len,
			    from_name, to_name, from_name, strerror(-ret));
	}
	for (i = 0; i < st.naddrs; i++)
		rtnl_addr4_del(&sn->rtnl, from, st.addrs[i].addr, st.addrs[i].len);
	int first = 0;
	for (i = 0; i < st.nroutes; i++) {
		ret = rtnl_route4_add(&sn->rtnl, &st.routes[i], to);
		if (ret && !first) {
			first = ret;
			inet_ntop(AF_INET, &st.routes[i].dst.addr, a, sizeof(a));
			fail(sn, ret, "addresses moved to %s, but the route to %s/%u did not: %s",
			     to_name, a, st.routes[i].dst.len, strerror(-ret));
		}
	}
	return first;
}

static int setup_bridge(struct switch_net *sn, const struct switch_config *cfg, struct switch_info *out,
			bool fresh)
{
	char path[128];
	int ret;

	if (host_isolated(cfg)) {
		snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", out->bridge);
		write_sysctl(path, "1"); /* absent when the host has no IPv6: fine */
	}
	if (fresh) {
		ret = bridge_table(sn, cfg->name);
		if (!ret)
			ret = host_tables(sn, cfg);
		if (ret)
			return fail(sn, ret, "cannot make the switch's nftables tables: %s", sn->nft.err);
	}
	if (cfg->type == SWITCH_INTERNAL || cfg->type == SWITCH_NAT) {
		if (cfg->addr.len) {
			struct in_addr a = cfg->addr.addr;
			if (cfg->type == SWITCH_NAT)
				a.s_addr = htonl(ntohl(a.s_addr) + 1);
			ret = rtnl_addr4_add(&sn->rtnl, out->ifindex, a, cfg->addr.len);
			if (ret)
				return fail(sn, ret, "cannot give %s its address: %s", out->bridge,
					    strerror(-ret));
			out->gateway = a;
		}
	}
	if (cfg->type == SWITCH_NAT) {
		ret = write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
		if (ret)
			return fail(sn, ret, "cannot turn on IPv4 forwarding: %s", strerror(-ret));
	}
	if (cfg->type == SWITCH_EXTERNAL) {
		ret = attach_adapter(sn, cfg, out->ifindex);
		if (ret)
			return ret;
	}
	ret = rtnl_link_set_up(&sn->rtnl, out->bridge, true);
	if (ret)
		return fail(sn, ret, "cannot set %s up: %s", out->bridge, strerror(-ret));
	if (cfg->type == SWITCH_EXTERNAL && cfg->share_management) {
		struct rtnl_link ad;
		ret = rtnl_link_get(&sn->rtnl, cfg->adapter, &ad);
		if (!ret)
			ret = move_l3(sn, ad.ifindex, cfg->adapter, out->ifindex, out->bridge);
		if (ret)
			return sn->err[0] ? ret : fail(sn, ret, "cannot move %s's addresses: %s",
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
	bridge_name(cfg->name, out->bridge);
	ret = find_bridge(sn, cfg->name, &l);
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
				return fail(sn, ret, "cannot rebuild the tables of %s: %s", out->bridge,
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
		return fail(sn, ret, "cannot create bridge %s: %s", out->bridge, strerror(-ret));
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
		fail(sn, ret, "cannot set up bridge %s: %s", out->bridge, strerror(-ret));
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
	ret = check_name(sn, name);
	if (ret)
		return ret;
	ret = find_bridge(sn, name, &l);
	if (ret == -ENOENT)
		return fail(sn, -ENOENT, "no switch \"%s\" on this host", name);
	if (ret)
		return ret;
	bridge_name(name, br);
	const char *up = strstr(l.alias, " uplink=");
	struct rtnl_link ad;
	if (up && rtnl_link_get(&sn->rtnl, up + 8, &ad) == 0) {
		/* The management OS's addresses go back to the adapter first. */
		ret = rtnl_link_set_master(&sn->rtnl, ad.name, 0);
		if (!ret)
			ret = rtnl_link_set_up(&sn->rtnl, ad.name, true);
		if (!ret)
			ret = move_l3(sn, l.ifindex, br, ad.ifindex, ad.name);
		if (ret) {
			if (!sn->err[0])
				fail(sn, ret, "cannot give %s its addresses back: %s", ad.name,
				     strerror(-ret));
			return ret;
		}
	}
	ret = rtnl_link_del(&sn->rtnl, br);
	if (ret)
		return fail(sn, ret, "cannot delete bridge %s: %s", br, strerror(-ret));
	drop_tables(sn, name);
	return 0;
}

/* The access VLAN a port's VLAN chain names, or -1 when it has none. */
static int port_vlan(struct switch_net *sn, const char *name, const char *ifname)
{
	char *out, *p;
	int vlan = -1;

	if (nft_list(&sn->nft, false, &out, "list chain bridge cloison_%s v_%s", name, ifname))
		return -1;
	p = strstr(out, "@vlan_");
	if (p)
		vlan = atoi(p + 6);
	free(out);
	return vlan;
}

static int mirror_set(struct switch_net *sn, const char *name, const char *ifname,
		      enum switch_mirror m);

static void port_rules_remove(struct switch_net *sn, const char *name, const char *ifname)
{
	int vlan = port_vlan(sn, name, ifname);

	/* One command each: any may be absent after a half-done attach. */
	nft_run(&sn->nft, "delete element bridge cloison_%s guards { \"%s\" }", name, ifname);
	nft_run(&sn->nft, "delete element bridge cloison_%s vlans { \"%s\" }", name, ifname);
	nft_run(&sn->nft, "delete element bridge cloison_%s tagged { \"%s\" }", name, ifname);
	if (vlan >= 0)
		nft_run(&sn->nft, "delete element bridge cloison_%s vlan_%d { \"%s\" }", name, vlan,
			ifname);
	nft_run(&sn->nft, "delete element bridge cloison_%s limits { \"%s\" }", name, ifname);
	nft_run(&sn->nft, "delete chain bridge cloison_%s p_%s", name, ifname);
	nft_run(&sn->nft, "delete chain bridge cloison_%s l_%s", name, ifname);
	mirror_set(sn, name, ifname, SWITCH_MIRROR_NONE);
	nft_run(&sn->nft, "delete chain bridge cloison_%s v_%s", name, ifname);
	sn->nft.err[0] = '\0';
}

#define MIRROR_MAX 64

/* The quoted elements of set SET of the switch's bridge table. */
static int set_elements(struct switch_net *sn, const char *name, const char *set,
			char (*out)[IFNAMSIZ], size_t max, size_t *n)
{
	char *text, *p, *end;
	int ret = nft_list(&sn->nft, false, &text, "list set bridge cloison_%s %s", name, set);

	*n = 0;
	if (ret)
		return ret;
	p = strstr(text, "elements = {");
	while (p && (p = strchr(p, '"')) && (end = strchr(p + 1, '"'))) {
		size_t len = (size_t)(end - p - 1);
		if (*n < max && len < IFNAMSIZ) {
			memcpy(out[*n], p + 1, len);
			out[(*n)++][len] = '\0';
		}
		p = end + 1;
	}
	free(text);
	return 0;
}

static bool in_set(struct switch_net *sn, const char *name, const char *set, const char *ifname)
{
	char *out;
	bool ok = nft_list(&sn->nft, false, &out, "get element bridge cloison_%s %s { \"%s\" }", name,
			   set, ifname) == 0;

	free(out);
	sn->nft.err[0] = '\0';
	return ok;
}

/* Rebuilds the netdev table from the mirror sets in one batch: for each
 * source port an ingress and an egress chain that copy every frame to each
 * destination port. */
static int mirror_sync(struct switch_net *sn, const char *name)
{
	char src[MIRROR_MAX][IFNAMSIZ], dst[MIRROR_MAX][IFNAMSIZ];
	static const char *const hooks[] = { "ingress", "egress" };
	size_t ns, nd, len;
	char *cmd;
	FILE *f;
	int ret;

	ret = set_elements(sn, name, "mirror_src", src, MIRROR_MAX, &ns);
	if (!ret)
		ret = set_elements(sn, name, "mirror_dst", dst, MIRROR_MAX, &nd);
	if (ret)
		return ret;
	f = open_memstream(&cmd, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "add table netdev cloison_%s\ndelete table netdev cloison_%s\n", name, name);
	if (ns && nd) {
		fprintf(f, "add table netdev cloison_%s\n", name);
		for (size_t i = 0; i < ns; i++) {
			for (int h = 0; h < 2; h++) {
				fprintf(f,
					"add chain netdev cloison_%s m%c_%s { type filter hook %s device "
					"\"%s\" priority filter; policy accept; }\n",
					name, hooks[h][0], src[i], hooks[h], src[i]);
				for (size_t j = 0; j < nd; j++)
					fprintf(f, "add rule netdev cloison_%s m%c_%s dup to \"%s\"\n",
						name, hooks[h][0], src[i], dst[j]);
			}
		}
	}
	if (fclose(f))
		return -ENOMEM;
	ret = nft_run(&sn->nft, "%s", cmd);
	free(cmd);
	return ret;
}

/* Puts a port in the mirror set its config names (and out of the other). */
static int mirror_set(struct switch_net *sn, const char *name, const char *ifname,
		      enum switch_mirror m)
{
	static const char *const sets[] = { "mirror_src", "mirror_dst" };

	for (int i = 0; i < 2; i++) {
		bool want = (int)m == i + 1, have = in_set(sn, name, sets[i], ifname);
		int ret = 0;
		if (want && !have)
			ret = nft_run(&sn->nft, "add element bridge cloison_%s %s { \"%s\" }", name,
				      sets[i], ifname);
		else if (!want && have)
			ret = nft_run(&sn->nft, "delete element bridge cloison_%s %s { \"%s\" }", name,
				      sets[i], ifname);
		if (ret)
			return ret;
	}
	return mirror_sync(sn, name);
}

/* Installs or replaces a port's rules in one batch, so a re-attach (as a
 * restarted daemon does) never leaves the port unguarded for a moment. */
static int port_rules_set(struct switch_net *sn, const char *name, const char *ifname,
			  const struct switch_port_config *pc)
{
	const char *t = name, *p = ifname;
	int old = port_vlan(sn, name, ifname);
	const uint8_t *m = pc->mac;
	size_t len;
	char *cmd;
	FILE *f;
	int ret;

	f = open_memstream(&cmd, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "add chain bridge cloison_%s p_%s\nflush chain bridge cloison_%s p_%s\n", t, p, t, p);
	/* Guests do not tag: a tagged frame would be a VLAN hop. */
	fprintf(f, "add rule bridge cloison_%s p_%s ether type { 8021q, 8021ad } counter drop\n", t, p);
	if (!pc->mac_spoofing)
		fprintf(f,
			"add rule bridge cloison_%s p_%s ether saddr != "
			"%02x:%02x:%02x:%02x:%02x:%02x counter drop\n",
			t, p, m[0], m[1], m[2], m[3], m[4], m[5]);
	if (pc->dhcp_guard)
		fprintf(f, "add rule bridge cloison_%s p_%s udp sport { 67, 547 } counter drop\n", t, p);
	if (pc->router_guard) {
		fprintf(f,
			"add rule bridge cloison_%s p_%s icmpv6 type { nd-router-advert, nd-redirect } "
			"counter drop\n",
			t, p);
		fprintf(f, "add rule bridge cloison_%s p_%s icmp type redirect counter drop\n", t, p);
	}
	fprintf(f, "add chain bridge cloison_%s v_%s\nflush chain bridge cloison_%s v_%s\n", t, p, t, p);
	fprintf(f, "add set bridge cloison_%s vlan_%u { type ifname; }\n", t, pc->vlan);
	fprintf(f, "add rule bridge cloison_%s v_%s oifname != @vlan_%u counter drop\n", t, p, pc->vlan);
	if (old >= 0 && (unsigned)old != pc->vlan)
		fprintf(f, "delete element bridge cloison_%s vlan_%d { \"%s\" }\n", t, old, p);
	if (old > 0 && pc->vlan == 0)
		fprintf(f, "delete element bridge cloison_%s tagged { \"%s\" }\n", t, p);
	fprintf(f, "add element bridge cloison_%s vlan_%u { \"%s\" }\n", t, pc->vlan, p);
	if (pc->vlan)
		fprintf(f, "add element bridge cloison_%s tagged { \"%s\" }\n", t, p);
	fprintf(f, "add chain bridge cloison_%s l_%s\nflush chain bridge cloison_%s l_%s\n", t, p, t, p);
	if (pc->bandwidth_max) {
		/* nftables' bucket holds a second of the rate plus the burst: keep
		 * the burst small, a few full frames. */
		unsigned long long rate = pc->bandwidth_max / 8, burst = rate / 50;
		if (burst < 3028)
			burst = 3028;
		fprintf(f,
			"add rule bridge cloison_%s l_%s limit rate over %llu bytes/second burst %llu "
			"bytes counter drop\n",
			t, p, rate, burst);
	}
	fprintf(f, "add element bridge cloison_%s limits { \"%s\" : jump l_%s }\n", t, p, p);
	fprintf(f, "add element bridge cloison_%s guards { \"%s\" : jump p_%s }\n", t, p, p);
	fprintf(f, "add element bridge cloison_%s vlans { \"%s\" : jump v_%s }\n", t, p, p);
	if (fclose(f))
		return -ENOMEM;
	ret = nft_run(&sn->nft, "%s", cmd);
	free(cmd);
	return ret;
}

int switch_port_attach(struct switch_net *sn, const char *name, const char *ifname,
		       const struct switch_port_config *pc)
{
	struct rtnl_link br, l;
	char path[128];
	int ret;

	sn->err[0] = '\0';
	ret = check_name(sn, name);
	if (!ret)
		ret = check_port(sn, ifname);
	if (ret)
		return ret;
	if (pc->bandwidth_max && pc->bandwidth_max < 8000)
		return fail(sn, -EINVAL, "bad bandwidth_max %llu bit/s: use at least 8000, or 0 for none",
			    (unsigned long long)pc->bandwidth_max);
	if (pc->vlan > SWITCH_VLAN_MAX)
		return fail(sn, -EINVAL, "bad VLAN id %u: use 1 to %d, or 0 for none", pc->vlan,
			    SWITCH_VLAN_MAX);
	ret = find_bridge(sn, name, &br);
	if (ret == -ENOENT)
		return fail(sn, -ENOENT, "no switch \"%s\" on this host", name);
	if (ret)
		return ret;
	ret = rtnl_link_get(&sn->rtnl, ifname, &l);
	if (ret == -ENODEV)
		return fail(sn, -ENODEV, "interface %s does not exist", ifname);
	if (ret)
		return fail(sn, ret, "cannot read interface %s: %s", ifname, strerror(-ret));
	if (l.master && l.master != br.ifindex)
		return fail(sn, -EBUSY, "interface %s is a port of another bridge", ifname);
	/* A port is a wire, not a host interface: no IPv6 link-local on it. */
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifname);
	write_sysctl(path, "1");
	/* Rules first, then the port: no frame passes unguarded. A failed
	 * batch changes nothing, so the old rules (if any) stay. */
	ret = port_rules_set(sn, name, ifname, pc);
	if (ret)
		return fail(sn, ret, "cannot set the rules of port %s: %s", ifname, sn->nft.err);
	ret = mirror_set(sn, name, ifname, pc->mirror);
	if (ret)
		return fail(sn, ret, "cannot set port mirroring of %s: %s", ifname, sn->nft.err);
	ret = rtnl_link_set_master(&sn->rtnl, ifname, br.ifindex);
	if (!ret)
		ret = rtnl_link_set_up(&sn->rtnl, ifname, true);
	if (ret) {
		fail(sn, ret, "cannot attach %s to %s: %s", ifname, br.name, strerror(-ret));
		port_rules_remove(sn, name, ifname);
		return ret;
	}
	return 0;
}

int switch_port_detach(struct switch_net *sn, const char *name, const char *ifname)
{
	struct rtnl_link br, l;
	int ret;

	sn->err[0] = '\0';
	ret = check_name(sn, name);
	if (!ret)
		ret = check_port(sn, ifname);
	if (ret)
		return ret;
	ret = find_bridge(sn, name, &br);
	if (ret == -ENOENT)
		return fail(sn, -ENOENT, "no switch \"%s\" on this host", name);
	if (ret)
		return ret;
	if (rtnl_link_get(&sn->rtnl, ifname, &l) == 0 && l.master == br.ifindex) {
		ret = rtnl_link_set_master(&sn->rtnl, ifname, 0);
		if (ret)
			return fail(sn, ret, "cannot take %s off %s: %s", ifname, br.name,
				    strerror(-ret));
	}
	port_rules_remove(sn, name, ifname);
	return 0;
}

int switch_tap_create(struct switch_net *sn, const char *name, const char *tapname,
		      const struct switch_port_config *pc, int vnet_hdr_len)
{
	char ifname[IFNAMSIZ];
	struct rtnl_link l;
	int fd, ret;

	sn->err[0] = '\0';
	ret = check_port(sn, tapname);
	if (ret)
		return ret;
	if (rtnl_link_get(&sn->rtnl, tapname, &l) == 0)
		return fail(sn, -EEXIST, "interface %s exists already", tapname);
	fd = tap_create_persistent(tapname, vnet_hdr_len, ifname);
	if (fd < 0)
		return fail(sn, fd, "cannot create tap %s: %s", tapname, strerror(-fd));
	ret = switch_port_attach(sn, name, ifname, pc);
	if (ret) {
		tap_set_persist(fd, false);
		close(fd);
		rtnl_link_del(&sn->rtnl, ifname);
		return ret;
	}
	return fd;
}

int switch_tap_remove(struct switch_net *sn, const char *name, const char *tapname)
{
	int ret = switch_port_detach(sn, name, tapname);

	if (ret && ret != -ENOENT)
		return ret;
	ret = rtnl_link_del(&sn->rtnl, tapname);
	if (ret == -ENODEV)
		return fail(sn, -ENODEV, "tap %s does not exist", tapname);
	if (ret)
		return fail(sn, ret, "cannot delete tap %s: %s", tapname, strerror(-ret));
	return 0;
}

static int check_proto(struct switch_net *sn, const char *proto, unsigned port)
{
	if (!proto || (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0))
		return fail(sn, -EINVAL, "bad protocol \"%s\": use tcp or udp", proto ? proto : "");
	if (port == 0 || port > 65535)
		return fail(sn, -EINVAL, "bad port %u: use 1 to 65535", port);
	return 0;
}

static bool forward_exists(struct switch_net *sn, const char *name, const char *proto, unsigned hostport)
{
	char *out;
	bool ok = nft_list(&sn->nft, false, &out, "get element ip cloison_%s fwd_%s { %u }", name,
			   proto, hostport) == 0;

	free(out);
	sn->nft.err[0] = '\0';
	return ok;
}

int switch_nat_forward_add(struct switch_net *sn, const char *name, const char *proto,
			   unsigned hostport, struct in_addr vmaddr, unsigned vmport)
{
	char ip[INET_ADDRSTRLEN], t[32];
	int ret;

	sn->err[0] = '\0';
	ret = check_name(sn, name);
	if (!ret)
		ret = check_proto(sn, proto, hostport);
	if (!ret)
		ret = check_proto(sn, proto, vmport);
	if (ret)
		return ret;
	snprintf(t, sizeof(t), "cloison_%s", name);
	if (!nft_table_exists(&sn->nft, "ip", t))
		return fail(sn, -ENOENT, "no NAT switch \"%s\" on this host", name);
	if (forward_exists(sn, name, proto, hostport))
		return fail(sn, -EEXIST, "%s port %u is forwarded already on switch %s", proto,
			    hostport, name);
	inet_ntop(AF_INET, &vmaddr, ip, sizeof(ip));
	ret = nft_run(&sn->nft, "add element ip cloison_%s fwd_%s { %u : %s . %u }", name, proto,
		      hostport, ip, vmport);
	if (ret)
		return fail(sn, ret, "cannot add the forward: %s", sn->nft.err);
	return 0;
}

int switch_nat_forward_remove(struct switch_net *sn, const char *name, const char *proto,
			      unsigned hostport)
{
	int ret;

	sn->err[0] = '\0';
	ret = check_name(sn, name);
	if (!ret)
		ret = check_proto(sn, proto, hostport);
	if (ret)
		return ret;
	if (!forward_exists(sn, name, proto, hostport))
		return fail(sn, -ENOENT, "no %s forward of port %u on switch %s", proto, hostport,
			    name);
	ret = nft_run(&sn->nft, "delete element ip cloison_%s fwd_%s { %u }", name, proto, hostport);
	if (ret)
		return fail(sn, ret, "cannot remove the forward: %s", sn->nft.err);
	return 0;
}

struct overlap_walk {
	const struct ip4_prefix *p;
	struct ip4_prefix hit;
};

static int overlap_cb(const struct rtnl_route4 *rt, void *arg)
{
	struct overlap_walk *w = arg;
	const struct ip4_prefix *dst = &rt->dst;

	if (rt->type != RTN_UNICAST)
		return 0; /* local, broadcast: the host's own addresses' entries */

	if (dst->len == 0)
		return 0; /* the default route covers everything: not a collision */
	if (ip4_prefix_overlap(dst, w->p)) {
		w->hit = *dst;
		return 1;
	}
	return 0;
}

int switch_subnet_check(struct switch_net *sn, const struct ip4_prefix *p)
{
	struct overlap_walk w = { .p = p };
	char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];
	int ret = rtnl_route4_walk(&sn->rtnl, overlap_cb, &w);

	if (ret < 0)
		return fail(sn, ret, "cannot read the host's routes: %s", strerror(-ret));
	if (ret == 0)
		return 0;
	inet_ntop(AF_INET, &p->addr, a, sizeof(a));
	inet_ntop(AF_INET, &w.hit.addr, b, sizeof(b));
	return fail(sn, -EADDRINUSE,
		    "subnet %s/%u overlaps the host's route to %s/%u: pick another subnet", a, p->len,
		    b, w.hit.len);
}

int switch_subnet_choose(struct switch_net *sn, struct ip4_prefix *out)
{
	uint32_t base;
	int ret;

	for (unsigned i = 0; i < 155 + 16 * 256; i++) {
		if (i < 155)
			base = (192u << 24) | (168u << 16) | ((100u + i) << 8);
		else
			base = (172u << 24) | ((16u + (i - 155) / 256) << 16) | (((i - 155) % 256) << 8);
		out->addr.s_addr = htonl(base);
		out->len = 24;
		ret = switch_subnet_check(sn, out);
		if (ret == 0)
			return 0;
		if (ret != -EADDRINUSE)
			return ret;
	}
	return fail(sn, -EADDRNOTAVAIL,
		    "every candidate subnet overlaps a host route: give one with --subnet");
}
