/* Minimum bandwidth weights (Hyper-V's MinimumBandwidthWeight) on an
 * external switch's uplink, see docs/switch.md "bandwidth_weight".
 *
 * The state is in the kernel, as the rest of a switch's is, so a restarted
 * daemon finds it: the bridge table's map `uplink` holds the uplink and its
 * speed (kbit/s), the map `weights` each port's weight. From them
 * switch_weights_sync() builds, on the uplink's egress, an HTB tree:
 *
 *   1:   htb, unclassified traffic to 1:2
 *   1:1  the link: rate = ceil = its speed
 *   1:2  the default flow: the host and ports without a weight
 *   1:(0x1000 + port ifindex)  one class per weighted port
 *
 * Each class is guaranteed speed × weight / total and may borrow up to the
 * whole link, so a weight is a minimum share under contention and costs
 * nothing when the link is idle. The total is the ports' weights plus the
 * default flow's, which is what they leave of 100 (at least 1). A port's
 * frames are put in its class by its l_PORT chain (`meta priority set`),
 * which HTB reads before any filter. With no weighted port the uplink gets
 * its own qdisc back. */
#include <errno.h>
#include <inttypes.h>
#include <linux/pkt_sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "net/switch.h"
#include "net/switch_internal.h"

#define HTB_MAJOR 1
#define CLASS_LINK TC_H_MAKE(HTB_MAJOR << 16, 1)
#define DEFAULT_MINOR 2
#define PORT_MINOR0 0x1000
#define WEIGHTED_MAX 256
#define MIN_RATE 8000 /* bits/s: HTB needs a rate above zero */

bool switch_weight_class(int ifindex, uint32_t *classid)
{
	if (ifindex <= 0 || ifindex > 0xffff - PORT_MINOR0)
		return false;
	*classid = TC_H_MAKE(HTB_MAJOR << 16, PORT_MINOR0 + (unsigned)ifindex);
	return true;
}

/* The elements of one of the bridge table's maps; a table without it
 * (made before weights) has none. */
static size_t map_entries(struct switch_net *sn, const char *name, const char *map,
			  struct switch_nft_elem *out, size_t max)
{
	size_t n;

	if (switch_nft_elements(sn, name, "map", map, out, max, &n)) {
		sn->nft.err[0] = '\0';
		return 0;
	}
	return n;
}

/* Takes the tree away, if the uplink carries ours (its link class):
 * a root qdisc someone else put there stays. */
static void drop_tree(struct switch_net *sn, int ifindex)
{
	uint32_t have[WEIGHTED_MAX + 8];
	size_t n;

	if (rtnl_tc_class_list(&sn->rtnl, ifindex, have, sizeof(have) / sizeof(have[0]), &n))
		return;
	for (size_t i = 0; i < n; i++)
		if (have[i] == CLASS_LINK) {
			rtnl_qdisc_root_del(&sn->rtnl, ifindex);
			return;
		}
}

int switch_uplink_record(struct switch_net *sn, const char *name, const char *adapter,
			 uint64_t bps)
{
	uint64_t kbps = bps / 1000;

	if (!bps) {
		/* the adapter's own speed, in Mbit/s; a link that does not say
		 * (some virtual ones) counts as 1 Gbit/s */
		char path[96];
		long mbps = 0;
		FILE *f;
		snprintf(path, sizeof(path), "/sys/class/net/%s/speed", adapter);
		f = fopen(path, "re");
		if (f) {
			if (fscanf(f, "%ld", &mbps) != 1)
				mbps = 0;
			fclose(f);
		}
		kbps = mbps > 0 ? (uint64_t)mbps * 1000 : 1000000;
	}
	if (kbps < MIN_RATE / 1000 || kbps > UINT32_MAX)
		return switch_fail(sn, -EINVAL, "bad uplink bandwidth %" PRIu64 " bit/s: use %d to %"
				   PRIu64, bps, MIN_RATE, (uint64_t)UINT32_MAX * 1000);
	return nft_run(&sn->nft,
		       "add map bridge cloison_%1$s uplink { type ifname : mark; }\n"
		       "flush map bridge cloison_%1$s uplink\n"
		       "add element bridge cloison_%1$s uplink { \"%2$s\" : %3$" PRIu64 " }\n",
		       name, adapter, kbps);
}

int switch_uplink_get(struct switch_net *sn, const char *name, char ifname[IFNAMSIZ],
		      uint64_t *bps)
{
	struct switch_nft_elem e;

	if (!map_entries(sn, name, "uplink", &e, 1))
		return -ENOENT;
	memcpy(ifname, e.name, IFNAMSIZ);
	*bps = e.value * 1000;
	return 0;
}

static int fail_tc(struct switch_net *sn, int ret, const char *what, const char *ifname)
{
	return switch_fail(sn, ret, "cannot set the minimum bandwidth tree on %s (%s): %s", ifname,
			   what, strerror(-ret));
}

int switch_weights_sync(struct switch_net *sn, const char *name)
{
	struct switch_nft_elem w[WEIGHTED_MAX];
	uint32_t keep[WEIGHTED_MAX], have[WEIGHTED_MAX + 8];
	uint64_t rate[WEIGHTED_MAX], bps, total = 0, dflt;
	char uplink[IFNAMSIZ];
	struct rtnl_link br, up, l;
	size_t n, k = 0, nh;
	int ret;

	if (switch_uplink_get(sn, name, uplink, &bps))
		return 0; /* not an external switch: no uplink to share */
	if (switch_find_bridge(sn, name, &br) || rtnl_link_get(&sn->rtnl, uplink, &up))
		return 0;
	n = map_entries(sn, name, "weights", w, WEIGHTED_MAX);
	for (size_t i = 0; i < n; i++) {
		/* ports still on this bridge, with a weight */
		if (!w[i].value || rtnl_link_get(&sn->rtnl, w[i].name, &l) || l.master != br.ifindex ||
		    !switch_weight_class(l.ifindex, &keep[k]))
			continue;
		rate[k++] = w[i].value;
		total += w[i].value;
	}
	if (!k) {
		drop_tree(sn, up.ifindex);
		return 0;
	}
	dflt = total < 100 ? 100 - total : 1;
	total += dflt;
	ret = rtnl_htb_qdisc_set(&sn->rtnl, up.ifindex, TC_H_MAKE(HTB_MAJOR << 16, 0), DEFAULT_MINOR);
	if (ret && ret != -EEXIST)
		return fail_tc(sn, ret, "qdisc", uplink);
	ret = rtnl_htb_class_set(&sn->rtnl, up.ifindex, CLASS_LINK, TC_H_ROOT, bps, bps);
	if (!ret)
		ret = rtnl_htb_class_set(&sn->rtnl, up.ifindex,
					 TC_H_MAKE(HTB_MAJOR << 16, DEFAULT_MINOR), CLASS_LINK,
					 MAX(bps * dflt / total, MIN_RATE), bps);
	for (size_t i = 0; !ret && i < k; i++)
		ret = rtnl_htb_class_set(&sn->rtnl, up.ifindex, keep[i], CLASS_LINK,
					 MAX(bps * rate[i] / total, MIN_RATE), bps);
	if (ret)
		return fail_tc(sn, ret, "class", uplink);
	/* the classes of ports that left or lost their weight */
	if (rtnl_tc_class_list(&sn->rtnl, up.ifindex, have, sizeof(have) / sizeof(have[0]), &nh))
		return 0;
	for (size_t i = 0; i < nh; i++) {
		bool wanted = TC_H_MAJ(have[i]) != (HTB_MAJOR << 16) || TC_H_MIN(have[i]) < PORT_MINOR0;
		for (size_t j = 0; !wanted && j < k; j++)
			wanted = have[i] == keep[j];
		if (!wanted)
			rtnl_tc_class_del(&sn->rtnl, up.ifindex, have[i]);
	}
	return 0;
}

void switch_weights_release(struct switch_net *sn, const char *name)
{
	char uplink[IFNAMSIZ];
	struct rtnl_link up;
	uint64_t bps;

	if (!switch_uplink_get(sn, name, uplink, &bps) && !rtnl_link_get(&sn->rtnl, uplink, &up))
		drop_tree(sn, up.ifindex);
}
