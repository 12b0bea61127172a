/* NAT switches' port forwards and the subnet chooser (see switch.h). */
#include <linux/rtnetlink.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/switch.h"
#include "net/switch_internal.h"

static int check_proto(struct switch_net *sn, const char *proto, unsigned port)
{
	if (!proto || (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0))
		return switch_fail(sn, -EINVAL, "bad protocol \"%s\": use tcp or udp", proto ? proto : "");
	if (port == 0 || port > 65535)
		return switch_fail(sn, -EINVAL, "bad port %u: use 1 to 65535", port);
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
	ret = switch_check_name(sn, name);
	if (!ret)
		ret = check_proto(sn, proto, hostport);
	if (!ret)
		ret = check_proto(sn, proto, vmport);
	if (ret)
		return ret;
	snprintf(t, sizeof(t), "cloison_%s", name);
	if (!nft_table_exists(&sn->nft, "ip", t))
		return switch_fail(sn, -ENOENT, "no NAT switch \"%s\" on this host", name);
	if (forward_exists(sn, name, proto, hostport))
		return switch_fail(sn, -EEXIST, "%s port %u is forwarded already on switch %s", proto,
			    hostport, name);
	inet_ntop(AF_INET, &vmaddr, ip, sizeof(ip));
	ret = nft_run(&sn->nft, "add element ip cloison_%s fwd_%s { %u : %s . %u }", name, proto,
		      hostport, ip, vmport);
	if (ret)
		return switch_fail(sn, ret, "cannot add the forward: %s", sn->nft.err);
	return 0;
}

int switch_nat_forward_remove(struct switch_net *sn, const char *name, const char *proto,
			      unsigned hostport)
{
	int ret;

	sn->err[0] = '\0';
	ret = switch_check_name(sn, name);
	if (!ret)
		ret = check_proto(sn, proto, hostport);
	if (ret)
		return ret;
	if (!forward_exists(sn, name, proto, hostport))
		return switch_fail(sn, -ENOENT, "no %s forward of port %u on switch %s", proto, hostport,
			    name);
	ret = nft_run(&sn->nft, "delete element ip cloison_%s fwd_%s { %u }", name, proto, hostport);
	if (ret)
		return switch_fail(sn, ret, "cannot remove the forward: %s", sn->nft.err);
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
		return switch_fail(sn, ret, "cannot read the host's routes: %s", strerror(-ret));
	if (ret == 0)
		return 0;
	inet_ntop(AF_INET, &p->addr, a, sizeof(a));
	inet_ntop(AF_INET, &w.hit.addr, b, sizeof(b));
	return switch_fail(sn, -EADDRINUSE,
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
	return switch_fail(sn, -EADDRNOTAVAIL,
		    "every candidate subnet overlaps a host route: give one with --subnet");
}
