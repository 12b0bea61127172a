/* Switch ports: taps and other links, their guards, access VLANs,
 * policers and mirroring (see switch.h, docs/switch.md). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/pkt_sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/switch.h"
#include "net/switch_internal.h"
#include "net/tap.h"

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
	nft_run(&sn->nft, "delete element bridge cloison_%s weights { \"%s\" }", name, ifname);
	mirror_set(sn, name, ifname, SWITCH_MIRROR_NONE);
	nft_run(&sn->nft, "delete chain bridge cloison_%s v_%s", name, ifname);
	sn->nft.err[0] = '\0';
}

#define MIRROR_MAX 64

int switch_nft_elements(struct switch_net *sn, const char *name, const char *kind,
			const char *what, struct switch_nft_elem *out, size_t max, size_t *n)
{
	char *text, *p, *end;
	int ret = nft_list(&sn->nft, false, &text, "list %s bridge cloison_%s %s", kind, name, what);

	*n = 0;
	if (ret)
		return ret;
	p = strstr(text, "elements = {");
	while (p && (p = strchr(p, '"')) && (end = strchr(p + 1, '"'))) {
		size_t len = (size_t)(end - p - 1);
		/* a map's element: "name" : value */
		char *q = end + 1 + strspn(end + 1, " ");
		bool mapped = *q == ':';
		if (*n < max && len < IFNAMSIZ) {
			memcpy(out[*n].name, p + 1, len);
			out[*n].name[len] = '\0';
			out[(*n)++].value = mapped ? strtoull(q + 1, NULL, 0) : 0;
		}
		p = mapped ? q + 1 : end + 1;
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
	struct switch_nft_elem src[MIRROR_MAX], dst[MIRROR_MAX];
	static const char *const hooks[] = { "ingress", "egress" };
	size_t ns, nd, len;
	char *cmd;
	FILE *f;
	int ret;

	ret = switch_nft_elements(sn, name, "set", "mirror_src", src, MIRROR_MAX, &ns);
	if (!ret)
		ret = switch_nft_elements(sn, name, "set", "mirror_dst", dst, MIRROR_MAX, &nd);
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
					name, hooks[h][0], src[i].name, hooks[h], src[i].name);
				for (size_t j = 0; j < nd; j++)
					fprintf(f, "add rule netdev cloison_%s m%c_%s dup to \"%s\"\n",
						name, hooks[h][0], src[i].name, dst[j].name);
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
	/* The weight, and on a switch with an uplink the port's class there */
	fprintf(f, "add map bridge cloison_%s weights { type ifname : mark; }\n", t);
	if (in_set(sn, name, "weights", ifname))
		fprintf(f, "delete element bridge cloison_%s weights { \"%s\" }\n", t, p);
	if (pc->bandwidth_weight) {
		char up[IFNAMSIZ];
		struct rtnl_link l;
		uint64_t bps;
		uint32_t cls;
		fprintf(f, "add element bridge cloison_%s weights { \"%s\" : %u }\n", t, p,
			pc->bandwidth_weight);
		if (!switch_uplink_get(sn, name, up, &bps) && !rtnl_link_get(&sn->rtnl, ifname, &l) &&
		    switch_weight_class(l.ifindex, &cls))
			fprintf(f, "add rule bridge cloison_%s l_%s meta priority set %x:%x\n", t, p,
				TC_H_MAJ(cls) >> 16, TC_H_MIN(cls));
	}
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

/* The port is attached (or gone) whatever the uplink's tree does: a
 * failure there is a warning in sn->err, not a port without a network. */
static void weights_sync_or_warn(struct switch_net *sn, const char *name)
{
	if (switch_weights_sync(sn, name)) {
		char why[sizeof(sn->err)];
		memcpy(why, sn->err, sizeof(why));
		switch_fail(sn, 0, "warning: %.500s", why);
	}
}

int switch_port_attach(struct switch_net *sn, const char *name, const char *ifname,
		       const struct switch_port_config *pc)
{
	struct rtnl_link br, l;
	char path[128];
	int ret;

	sn->err[0] = '\0';
	ret = switch_check_name(sn, name);
	if (!ret)
		ret = switch_check_port(sn, ifname);
	if (ret)
		return ret;
	if (pc->bandwidth_max && pc->bandwidth_max < 8000)
		return switch_fail(sn, -EINVAL, "bad bandwidth_max %llu bit/s: use at least 8000, or 0 for none",
			    (unsigned long long)pc->bandwidth_max);
	if (pc->bandwidth_weight > 100)
		return switch_fail(sn, -EINVAL, "bad bandwidth_weight %u: use 0 to 100 (0: none)",
				   pc->bandwidth_weight);
	if (pc->vlan > SWITCH_VLAN_MAX)
		return switch_fail(sn, -EINVAL, "bad VLAN id %u: use 1 to %d, or 0 for none", pc->vlan,
			    SWITCH_VLAN_MAX);
	ret = switch_find_bridge(sn, name, &br);
	if (ret == -ENOENT)
		return switch_fail(sn, -ENOENT, "no switch \"%s\" on this host", name);
	if (ret)
		return ret;
	ret = rtnl_link_get(&sn->rtnl, ifname, &l);
	if (ret == -ENODEV)
		return switch_fail(sn, -ENODEV, "interface %s does not exist", ifname);
	if (ret)
		return switch_fail(sn, ret, "cannot read interface %s: %s", ifname, strerror(-ret));
	if (l.master && l.master != br.ifindex)
		return switch_fail(sn, -EBUSY, "interface %s is a port of another bridge", ifname);
	/* A port is a wire, not a host interface: no IPv6 link-local on it. */
	snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifname);
	switch_write_sysctl(path, "1");
	/* Rules first, then the port: no frame passes unguarded. A failed
	 * batch changes nothing, so the old rules (if any) stay. */
	ret = port_rules_set(sn, name, ifname, pc);
	if (ret)
		return switch_fail(sn, ret, "cannot set the rules of port %s: %s", ifname, sn->nft.err);
	ret = mirror_set(sn, name, ifname, pc->mirror);
	if (ret)
		return switch_fail(sn, ret, "cannot set port mirroring of %s: %s", ifname, sn->nft.err);
	ret = rtnl_link_set_master(&sn->rtnl, ifname, br.ifindex);
	if (!ret)
		ret = rtnl_link_set_up(&sn->rtnl, ifname, true);
	if (ret) {
		switch_fail(sn, ret, "cannot attach %s to %s: %s", ifname, br.name, strerror(-ret));
		port_rules_remove(sn, name, ifname);
		return ret;
	}
	weights_sync_or_warn(sn, name);
	return 0;
}

int switch_port_detach(struct switch_net *sn, const char *name, const char *ifname)
{
	struct rtnl_link br, l;
	int ret;

	sn->err[0] = '\0';
	ret = switch_check_name(sn, name);
	if (!ret)
		ret = switch_check_port(sn, ifname);
	if (ret)
		return ret;
	ret = switch_find_bridge(sn, name, &br);
	if (ret == -ENOENT)
		return switch_fail(sn, -ENOENT, "no switch \"%s\" on this host", name);
	if (ret)
		return ret;
	if (rtnl_link_get(&sn->rtnl, ifname, &l) == 0 && l.master == br.ifindex) {
		ret = rtnl_link_set_master(&sn->rtnl, ifname, 0);
		if (ret)
			return switch_fail(sn, ret, "cannot take %s off %s: %s", ifname, br.name,
				    strerror(-ret));
	}
	port_rules_remove(sn, name, ifname);
	weights_sync_or_warn(sn, name);
	return 0;
}

int switch_tap_create(struct switch_net *sn, const char *name, const char *tapname,
		      const struct switch_port_config *pc, int vnet_hdr_len)
{
	char ifname[IFNAMSIZ];
	struct rtnl_link l;
	int fd, ret;

	sn->err[0] = '\0';
	ret = switch_check_port(sn, tapname);
	if (ret)
		return ret;
	if (rtnl_link_get(&sn->rtnl, tapname, &l) == 0)
		return switch_fail(sn, -EEXIST, "interface %s exists already", tapname);
	fd = tap_create_persistent(tapname, vnet_hdr_len, ifname);
	if (fd < 0)
		return switch_fail(sn, fd, "cannot create tap %s: %s", tapname, strerror(-fd));
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
		return switch_fail(sn, -ENODEV, "tap %s does not exist", tapname);
	if (ret)
		return switch_fail(sn, ret, "cannot delete tap %s: %s", tapname, strerror(-ret));
	return 0;
}
