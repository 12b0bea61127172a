/* rtnetlink on libmnl (see rtnl.h). */
#include "net/rtnl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Big enough for a dump batch (the kernel sends at most a page-sized
 * batch per read unless asked for more) and for any request we build. */
#define RTNL_BUF 32768

int rtnl_open(struct rtnl *r)
{
	r->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!r->nl)
		return -errno;
	if (mnl_socket_bind(r->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		int ret = -errno;
		mnl_socket_close(r->nl);
		r->nl = NULL;
		return ret;
	}
	r->portid = mnl_socket_get_portid(r->nl);
	r->seq = (uint32_t)time(NULL);
	return 0;
}

void rtnl_close(struct rtnl *r)
{
	if (r->nl)
		mnl_socket_close(r->nl);
	r->nl = NULL;
}

/* Sends nlh and reads answers until the kernel's ack or the end of a dump,
 * passing each message to cb. */
static int rtnl_talk(struct rtnl *r, struct nlmsghdr *nlh, mnl_cb_t cb, void *arg)
{
	char buf[RTNL_BUF];
	ssize_t n;
	int ret;

	nlh->nlmsg_seq = ++r->seq;
	/* A dump ends with NLMSG_DONE; anything else is asked for an ack.
	 * NLM_F_EXCL shares a bit with NLM_F_DUMP, so only a GET (RTM_GET*
	 * types are 2 mod 4) is a dump. */
	bool dump = (nlh->nlmsg_type & 3) == 2 && (nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
	if (!dump)
		nlh->nlmsg_flags |= NLM_F_ACK;
	if (mnl_socket_sendto(r->nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	for (;;) {
		n = mnl_socket_recvfrom(r->nl, buf, sizeof(buf));
		if (n < 0)
			return -errno;
		ret = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, r->portid, cb, arg);
		if (ret < 0)
			return -errno;
		if (ret == MNL_CB_STOP)
			return 0;
	}
}

/* Starts a request of type with flags in buf, with its family header of
 * hdrlen bytes (zeroed), which it returns. */
static void *request(char *buf, uint16_t type, uint16_t flags, size_t hdrlen,
		     struct nlmsghdr **nlh)
{
	*nlh = mnl_nlmsg_put_header(buf);
	(*nlh)->nlmsg_type = type;
	(*nlh)->nlmsg_flags = NLM_F_REQUEST | flags;
	return mnl_nlmsg_put_extra_header(*nlh, hdrlen);
}

static struct nlmsghdr *link_msg(char *buf, uint16_t type, uint16_t flags, struct ifinfomsg **ifm)
{
	struct nlmsghdr *nlh;

	*ifm = request(buf, type, flags, sizeof(**ifm), &nlh);
	(*ifm)->ifi_family = AF_UNSPEC;
	return nlh;
}

static int attr_cb(const struct nlattr *a, void *data)
{
	const struct nlattr **tb = data;
	int type = mnl_attr_get_type(a);

	if (mnl_attr_type_valid(a, IFLA_MAX) > 0)
		tb[type] = a;
	return MNL_CB_OK;
}

static void copy_str(char *dst, size_t len, const struct nlattr *a)
{
	size_t n = mnl_attr_get_payload_len(a);
	const char *s = mnl_attr_get_payload(a);

	if (n >= len)
		n = len - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

static int link_cb(const struct nlmsghdr *nlh, void *data)
{
	struct rtnl_link *out = data;
	struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *tb[IFLA_MAX + 1] = { 0 };
	const struct nlattr *a;

	mnl_attr_parse(nlh, sizeof(*ifm), attr_cb, tb);
	out->ifindex = ifm->ifi_index;
	out->flags = ifm->ifi_flags;
	if (tb[IFLA_IFNAME])
		copy_str(out->name, sizeof(out->name), tb[IFLA_IFNAME]);
	if (tb[IFLA_MASTER])
		out->master = (int)mnl_attr_get_u32(tb[IFLA_MASTER]);
	if (tb[IFLA_IFALIAS])
		copy_str(out->alias, sizeof(out->alias), tb[IFLA_IFALIAS]);
	if (tb[IFLA_ADDRESS] && mnl_attr_get_payload_len(tb[IFLA_ADDRESS]) == 6)
		memcpy(out->mac, mnl_attr_get_payload(tb[IFLA_ADDRESS]), 6);
	if (tb[IFLA_LINKINFO]) {
		mnl_attr_for_each_nested(a, tb[IFLA_LINKINFO]) {
			if (mnl_attr_get_type(a) == IFLA_INFO_KIND)
				copy_str(out->kind, sizeof(out->kind), a);
		}
	}
	return MNL_CB_OK;
}

int rtnl_link_get(struct rtnl *r, const char *name, struct rtnl_link *out)
{
	char buf[RTNL_BUF];
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh;
	int ret;

	if (strlen(name) >= IFNAMSIZ)
		return -ENAMETOOLONG;
	nlh = link_msg(buf, RTM_GETLINK, 0, &ifm);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	memset(out, 0, sizeof(*out));
	/* A GETLINK answers with the link, not an ack: do not ask for one. */
	nlh->nlmsg_seq = ++r->seq;
	if (mnl_socket_sendto(r->nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	ret = (int)mnl_socket_recvfrom(r->nl, buf, sizeof(buf));
	if (ret < 0)
		return -errno;
	ret = mnl_cb_run(buf, (size_t)ret, r->seq, r->portid, link_cb, out);
	if (ret < 0)
		return -errno;
	return 0;
}

int rtnl_bridge_add(struct rtnl *r, const char *name, const char *alias)
{
	char buf[RTNL_BUF];
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh;
	struct nlattr *info;
	int ret;

	if (strlen(name) >= IFNAMSIZ)
		return -ENAMETOOLONG;
	nlh = link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifm);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
	mnl_attr_nest_end(nlh, info);
	ret = rtnl_talk(r, nlh, NULL, NULL);
	if (ret || !alias)
		return ret;
	return rtnl_link_set_alias(r, name, alias);
}

int rtnl_link_del(struct rtnl *r, const char *name)
{
	char buf[RTNL_BUF];
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh;

	if (strlen(name) >= IFNAMSIZ)
		return -ENAMETOOLONG;
	nlh = link_msg(buf, RTM_DELLINK, 0, &ifm);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	return rtnl_talk(r, nlh, NULL, NULL);
}

/* An RTM_NEWLINK on an existing link that changes one attribute. */
static int link_change(struct rtnl *r, const char *name, uint16_t attr, const void *val, size_t len,
		       unsigned flags, unsigned change)
{
	char buf[RTNL_BUF];
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh;

	if (strlen(name) >= IFNAMSIZ)
		return -ENAMETOOLONG;
	nlh = link_msg(buf, RTM_NEWLINK, 0, &ifm);
	ifm->ifi_flags = flags;
	ifm->ifi_change = change;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	if (val)
		mnl_attr_put(nlh, attr, len, val);
	return rtnl_talk(r, nlh, NULL, NULL);
}

int rtnl_link_set_master(struct rtnl *r, const char *name, int master_ifindex)
{
	uint32_t m = (uint32_t)master_ifindex;

	return link_change(r, name, IFLA_MASTER, &m, sizeof(m), 0, 0);
}

int rtnl_link_set_up(struct rtnl *r, const char *name, bool up)
{
	return link_change(r, name, 0, NULL, 0, up ? IFF_UP : 0, IFF_UP);
}

int rtnl_link_set_alias(struct rtnl *r, const char *name, const char *alias)
{
	return link_change(r, name, IFLA_IFALIAS, alias, strlen(alias) + 1, 0, 0);
}

static int addr4_msg(struct rtnl *r, uint16_t type, uint16_t flags, int ifindex, struct in_addr addr,
		     unsigned len)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct ifaddrmsg *ifa;

	ifa = request(buf, type, flags, sizeof(*ifa), &nlh);
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = (uint8_t)len;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (unsigned)ifindex;
	mnl_attr_put(nlh, IFA_LOCAL, sizeof(addr), &addr);
	mnl_attr_put(nlh, IFA_ADDRESS, sizeof(addr), &addr);
	return rtnl_talk(r, nlh, NULL, NULL);
}

int rtnl_addr4_add(struct rtnl *r, int ifindex, struct in_addr addr, unsigned len)
{
	int ret = addr4_msg(r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, addr, len);

	return ret == -EEXIST ? 0 : ret;
}

int rtnl_addr4_del(struct rtnl *r, int ifindex, struct in_addr addr, unsigned len)
{
	return addr4_msg(r, RTM_DELADDR, 0, ifindex, addr, len);
}

struct addr_list {
	int ifindex;
	struct ip4_prefix *out;
	size_t max, n;
	bool overflow;
};

static int addr_attr_cb(const struct nlattr *a, void *data)
{
	const struct nlattr **tb = data;

	if (mnl_attr_type_valid(a, IFA_MAX) > 0)
		tb[mnl_attr_get_type(a)] = a;
	return MNL_CB_OK;
}

static int addr_cb(const struct nlmsghdr *nlh, void *data)
{
	struct addr_list *l = data;
	struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *tb[IFA_MAX + 1] = { 0 };

	if (ifa->ifa_family != AF_INET || (int)ifa->ifa_index != l->ifindex)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(*ifa), addr_attr_cb, tb);
	if (!tb[IFA_LOCAL])
		return MNL_CB_OK;
	if (l->n == l->max) {
		l->overflow = true;
		return MNL_CB_OK;
	}
	memcpy(&l->out[l->n].addr, mnl_attr_get_payload(tb[IFA_LOCAL]), 4);
	l->out[l->n++].len = ifa->ifa_prefixlen;
	return MNL_CB_OK;
}

static int addr6_msg(struct rtnl *r, uint16_t type, uint16_t flags, int ifindex,
		     const struct in6_addr *addr, unsigned len)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct ifaddrmsg *ifa;

	ifa = request(buf, type, flags, sizeof(*ifa), &nlh);
	ifa->ifa_family = AF_INET6;
	ifa->ifa_prefixlen = (uint8_t)len;
	ifa->ifa_flags = IFA_F_NODAD;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (unsigned)ifindex;
	mnl_attr_put(nlh, IFA_LOCAL, sizeof(*addr), addr);
	mnl_attr_put(nlh, IFA_ADDRESS, sizeof(*addr), addr);
	return rtnl_talk(r, nlh, NULL, NULL);
}

int rtnl_addr6_add(struct rtnl *r, int ifindex, const struct in6_addr *addr, unsigned len)
{
	int ret = addr6_msg(r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, addr, len);

	return ret == -EEXIST ? 0 : ret;
}

int rtnl_addr6_del(struct rtnl *r, int ifindex, const struct in6_addr *addr, unsigned len)
{
	return addr6_msg(r, RTM_DELADDR, 0, ifindex, addr, len);
}

struct addr6_list {
	int ifindex;
	struct ip6_prefix *out;
	size_t max, n;
	bool overflow;
};

static int addr6_cb(const struct nlmsghdr *nlh, void *data)
{
	struct addr6_list *l = data;
	struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *tb[IFA_MAX + 1] = { 0 };
	uint32_t flags;

	if (ifa->ifa_family != AF_INET6 || (int)ifa->ifa_index != l->ifindex ||
	    ifa->ifa_scope != RT_SCOPE_UNIVERSE)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(*ifa), addr_attr_cb, tb);
	flags = tb[IFA_FLAGS] ? mnl_attr_get_u32(tb[IFA_FLAGS]) : ifa->ifa_flags;
	if (!tb[IFA_ADDRESS] || !(flags & IFA_F_PERMANENT))
		return MNL_CB_OK;
	if (l->n == l->max) {
		l->overflow = true;
		return MNL_CB_OK;
	}
	memcpy(&l->out[l->n].addr, mnl_attr_get_payload(tb[IFA_ADDRESS]), 16);
	l->out[l->n++].len = ifa->ifa_prefixlen;
	return MNL_CB_OK;
}

int rtnl_addr6_list(struct rtnl *r, int ifindex, struct ip6_prefix *out, size_t max, size_t *n)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct addr6_list l = { ifindex, out, max, 0, false };
	struct ifaddrmsg *ifa;
	int ret;

	ifa = request(buf, RTM_GETADDR, NLM_F_DUMP, sizeof(*ifa), &nlh);
	ifa->ifa_family = AF_INET6;
	ret = rtnl_talk(r, nlh, addr6_cb, &l);
	*n = l.n;
	if (ret)
		return ret;
	return l.overflow ? -ENOSPC : 0;
}

int rtnl_addr4_list(struct rtnl *r, int ifindex, struct ip4_prefix *out, size_t max, size_t *n)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct addr_list l = { ifindex, out, max, 0, false };
	struct ifaddrmsg *ifa;
	int ret;

	ifa = request(buf, RTM_GETADDR, NLM_F_DUMP, sizeof(*ifa), &nlh);
	ifa->ifa_family = AF_INET;
	ret = rtnl_talk(r, nlh, addr_cb, &l);
	*n = l.n;
	if (ret)
		return ret;
	return l.overflow ? -ENOSPC : 0;
}

struct route_walk {
	rtnl_route_fn fn;
	void *arg;
	int ret;
};

static int route_attr_cb(const struct nlattr *a, void *data)
{
	const struct nlattr **tb = data;

	if (mnl_attr_type_valid(a, RTA_MAX) > 0)
		tb[mnl_attr_get_type(a)] = a;
	return MNL_CB_OK;
}

static int route_cb(const struct nlmsghdr *nlh, void *data)
{
	struct route_walk *w = data;
	struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *tb[RTA_MAX + 1] = { 0 };
	struct rtnl_route4 rt = { .dst.len = rtm->rtm_dst_len };

	if (w->ret || rtm->rtm_family != AF_INET)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(*rtm), route_attr_cb, tb);
	if (tb[RTA_DST])
		memcpy(&rt.dst.addr, mnl_attr_get_payload(tb[RTA_DST]), 4);
	if (tb[RTA_GATEWAY])
		memcpy(&rt.gateway, mnl_attr_get_payload(tb[RTA_GATEWAY]), 4);
	if (tb[RTA_PREFSRC])
		memcpy(&rt.prefsrc, mnl_attr_get_payload(tb[RTA_PREFSRC]), 4);
	if (tb[RTA_OIF])
		rt.oif = (int)mnl_attr_get_u32(tb[RTA_OIF]);
	if (tb[RTA_PRIORITY])
		rt.metric = mnl_attr_get_u32(tb[RTA_PRIORITY]);
	rt.table = tb[RTA_TABLE] ? mnl_attr_get_u32(tb[RTA_TABLE]) : rtm->rtm_table;
	rt.protocol = rtm->rtm_protocol;
	rt.scope = rtm->rtm_scope;
	rt.type = rtm->rtm_type;
	w->ret = w->fn(&rt, w->arg);
	return MNL_CB_OK;
}

int rtnl_route4_walk(struct rtnl *r, rtnl_route_fn fn, void *arg)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct route_walk w = { fn, arg, 0 };
	struct rtmsg *rtm;
	int ret;

	rtm = request(buf, RTM_GETROUTE, NLM_F_DUMP, sizeof(*rtm), &nlh);
	rtm->rtm_family = AF_INET;
	ret = rtnl_talk(r, nlh, route_cb, &w);
	return ret ? ret : w.ret;
}

int rtnl_route4_add(struct rtnl *r, const struct rtnl_route4 *rt, int oif)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct rtmsg *rtm;
	int ret;

	rtm = request(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, sizeof(*rtm), &nlh);
	rtm->rtm_family = AF_INET;
	rtm->rtm_dst_len = (uint8_t)rt->dst.len;
	rtm->rtm_table = rt->table < 256 ? (uint8_t)rt->table : RT_TABLE_UNSPEC;
	rtm->rtm_protocol = rt->protocol ? rt->protocol : RTPROT_BOOT;
	rtm->rtm_scope = rt->scope;
	rtm->rtm_type = rt->type ? rt->type : RTN_UNICAST;
	if (rt->dst.len)
		mnl_attr_put(nlh, RTA_DST, 4, &rt->dst.addr);
	if (rt->gateway.s_addr)
		mnl_attr_put(nlh, RTA_GATEWAY, 4, &rt->gateway);
	if (rt->prefsrc.s_addr)
		mnl_attr_put(nlh, RTA_PREFSRC, 4, &rt->prefsrc);
	if (rt->metric)
		mnl_attr_put_u32(nlh, RTA_PRIORITY, rt->metric);
	mnl_attr_put_u32(nlh, RTA_TABLE, rt->table);
	mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)oif);
	ret = rtnl_talk(r, nlh, NULL, NULL);
	return ret == -EEXIST ? 0 : ret;
}

int ip4_prefix_parse(const char *s, bool allow_host, struct ip4_prefix *out)
{
	char addr[INET_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	char *end;
	unsigned long len;
	uint32_t mask;

	if (!slash || (size_t)(slash - s) >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, (size_t)(slash - s));
	addr[slash - s] = '\0';
	if (inet_pton(AF_INET, addr, &out->addr) != 1)
		return -EINVAL;
	errno = 0;
	len = strtoul(slash + 1, &end, 10);
	if (errno || *end || end == slash + 1 || len < 8 || len > 30)
		return -EINVAL;
	out->len = (unsigned)len;
	mask = htonl(~0u << (32 - len));
	if (!allow_host && (out->addr.s_addr & ~mask))
		return -EINVAL;
	return 0;
}

bool ip4_prefix_overlap(const struct ip4_prefix *a, const struct ip4_prefix *b)
{
	unsigned len = a->len < b->len ? a->len : b->len;
	uint32_t mask = len ? ~0u << (32 - len) : 0;

	return ((ntohl(a->addr.s_addr) ^ ntohl(b->addr.s_addr)) & mask) == 0;
}

/* ---- traffic control: the HTB tree of minimum bandwidth weights ---- */

static struct nlmsghdr *tc_msg(char *buf, uint16_t type, uint16_t flags, int ifindex,
			       uint32_t handle, uint32_t parent)
{
	struct nlmsghdr *nlh;
	struct tcmsg *t;

	t = request(buf, type, flags, sizeof(*t), &nlh);
	t->tcm_family = AF_UNSPEC;
	t->tcm_ifindex = ifindex;
	t->tcm_handle = handle;
	t->tcm_parent = parent;
	return nlh;
}

int rtnl_htb_qdisc_set(struct rtnl *r, int ifindex, uint32_t handle, uint32_t default_minor)
{
	struct tc_htb_glob g = { .version = 3, .rate2quantum = 10, .defcls = default_minor };
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct nlattr *opt;

	nlh = tc_msg(buf, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, ifindex, handle, TC_H_ROOT);
	mnl_attr_put_strz(nlh, TCA_KIND, "htb");
	opt = mnl_attr_nest_start(nlh, TCA_OPTIONS);
	mnl_attr_put(nlh, TCA_HTB_INIT, sizeof(g), &g);
	mnl_attr_nest_end(nlh, opt);
	return rtnl_talk(r, nlh, NULL, NULL);
}

int rtnl_qdisc_root_del(struct rtnl *r, int ifindex)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh = tc_msg(buf, RTM_DELQDISC, 0, ifindex, 0, TC_H_ROOT);
	int ret = rtnl_talk(r, nlh, NULL, NULL);

	/* the device's default qdisc cannot be deleted: nothing was ours */
	return ret == -ENOENT || ret == -EINVAL ? 0 : ret;
}

/* psched ticks (64 ns, PSCHED_SHIFT 6) to send bytes at rate bytes/s */
static uint32_t xmit_ticks(uint64_t rate, uint64_t bytes)
{
	uint64_t t = bytes * (UINT64_C(1000000000) >> 6) / (rate ? rate : 1);

	return t > UINT32_MAX ? UINT32_MAX : (uint32_t)t;
}

int rtnl_htb_class_set(struct rtnl *r, int ifindex, uint32_t classid, uint32_t parent,
		       uint64_t rate_bps, uint64_t ceil_bps)
{
	uint64_t rate = rate_bps / 8, ceil = ceil_bps / 8;
	/* a burst of 10 ms at the rate, and at least a full frame */
	uint64_t burst = rate / 100 + 1600, cburst = ceil / 100 + 1600;
	struct tc_htb_opt o = {
		.rate = { .rate = rate > UINT32_MAX ? UINT32_MAX : (uint32_t)rate,
			  .linklayer = TC_LINKLAYER_ETHERNET },
		.ceil = { .rate = ceil > UINT32_MAX ? UINT32_MAX : (uint32_t)ceil,
			  .linklayer = TC_LINKLAYER_ETHERNET },
		.buffer = xmit_ticks(rate, burst),
		.cbuffer = xmit_ticks(ceil, cburst),
	};
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh;
	struct nlattr *opt;

	if (!rate || !ceil)
		return -EINVAL;
	nlh = tc_msg(buf, RTM_NEWTCLASS, NLM_F_CREATE, ifindex, classid, parent);
	mnl_attr_put_strz(nlh, TCA_KIND, "htb");
	opt = mnl_attr_nest_start(nlh, TCA_OPTIONS);
	mnl_attr_put(nlh, TCA_HTB_PARMS, sizeof(o), &o);
	if (rate > UINT32_MAX)
		mnl_attr_put_u64(nlh, TCA_HTB_RATE64, rate);
	if (ceil > UINT32_MAX)
		mnl_attr_put_u64(nlh, TCA_HTB_CEIL64, ceil);
	mnl_attr_nest_end(nlh, opt);
	return rtnl_talk(r, nlh, NULL, NULL);
}

int rtnl_tc_class_del(struct rtnl *r, int ifindex, uint32_t classid)
{
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh = tc_msg(buf, RTM_DELTCLASS, 0, ifindex, classid, 0);

	return rtnl_talk(r, nlh, NULL, NULL);
}

struct class_list {
	int ifindex;
	uint32_t *out;
	size_t max, n;
};

static int class_cb(const struct nlmsghdr *nlh, void *data)
{
	struct class_list *cl = data;
	const struct tcmsg *t = mnl_nlmsg_get_payload(nlh);

	if (nlh->nlmsg_type == RTM_NEWTCLASS && t->tcm_ifindex == cl->ifindex && cl->n < cl->max)
		cl->out[cl->n++] = t->tcm_handle;
	return MNL_CB_OK;
}

int rtnl_tc_class_list(struct rtnl *r, int ifindex, uint32_t *out, size_t max, size_t *n)
{
	struct class_list cl = { .ifindex = ifindex, .out = out, .max = max };
	char buf[RTNL_BUF];
	struct nlmsghdr *nlh = tc_msg(buf, RTM_GETTCLASS, NLM_F_DUMP, ifindex, 0, 0);
	int ret = rtnl_talk(r, nlh, class_cb, &cl);

	*n = cl.n;
	return ret;
}
