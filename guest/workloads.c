/* The command-line words that drive virtio devices (docs/testguest.md):
 * options first (bs=, qd=, secs=, ip=), then actions in order. */
#include "virtio.h"
#include "vsock.h"

static bool parse_ip(const char *s, size_t len, uint32_t *ip, unsigned *prefix)
{
	uint32_t v = 0;
	unsigned part = 0, octets = 0;
	size_t i = 0;
	bool digit = false;

	for (; i < len && s[i] != '/'; i++) {
		if (s[i] == '.') {
			if (!digit || part > 255 || ++octets > 3)
				return false;
			v = v << 8 | part;
			part = 0;
			digit = false;
		} else if (s[i] >= '0' && s[i] <= '9') {
			part = part * 10 + (unsigned)(s[i] - '0');
			digit = true;
		} else {
			return false;
		}
	}
	if (!digit || part > 255 || octets != 3)
		return false;
	*ip = v << 8 | part;
	*prefix = 24;
	if (i < len) {
		bool ok;
		uint64_t p = parse_dec(s + i + 1, len - i - 1, &ok);
		if (!ok || p > 32)
			return false;
		*prefix = (unsigned)p;
	}
	return true;
}

static const char *const option_prefixes[] = { "acpi=", "bs=", "qd=", "secs=", "ip=", "idle=",
						"agent_hb_stop=", NULL };

bool workloads_is_option(const char *w, size_t wlen)
{
	if (word_is(w, wlen, "eventidx") || word_is(w, wlen, "indirect") || word_is(w, wlen, "blkmq"))
		return true;
	for (const char *const *p = option_prefixes; *p; p++)
		if (word_has_prefix(w, wlen, *p))
			return true;
	return false;
}

void workloads_option(struct guest *g, const char *w, size_t wlen)
{
	const char *end;
	bool ok;

	if (word_has_prefix(w, wlen, "bs=")) {
		g->opt_bs = parse_size(w + 3, &end);
		if ((size_t)(end - w) != wlen)
			g->opt_bs = 0;
	} else if (word_has_prefix(w, wlen, "qd=")) {
		g->opt_qd = (unsigned)parse_dec(w + 3, wlen - 3, &ok);
	} else if (word_has_prefix(w, wlen, "secs=")) {
		g->opt_secs = parse_dec(w + 5, wlen - 5, &ok);
	} else if (word_is(w, wlen, "blkmq")) {
		g->opt_blk_mq = true;
	} else if (word_is(w, wlen, "eventidx")) {
		g->opt_virtio_features |= VIRTIO_F_EVENT_IDX;
	} else if (word_is(w, wlen, "indirect")) {
		g->opt_virtio_features |= VIRTIO_F_INDIRECT_DESC;
	} else if (word_has_prefix(w, wlen, "agent_hb_stop=")) {
		g->opt_agent_hb_stop_s = parse_dec(w + 14, wlen - 14, &ok);
	} else if (word_is(w, wlen, "idle=poll")) {
		g->opt_idle_poll = true;
	} else if (word_is(w, wlen, "ip=dhcp")) {
		g->opt_have_ip = g->opt_dhcp = true;
		g->opt_ip = 0;
	} else if (word_has_prefix(w, wlen, "ip=")) {
		g->opt_have_ip = parse_ip(w + 3, wlen - 3, &g->opt_ip, &g->opt_prefix);
		if (!g->opt_have_ip)
			out("RESULT bad_word=ip\n");
	}
}

static int act_blkfill(struct guest *g, const char *arg, size_t len)
{
	bool ok;
	uint64_t v = parse_dec(arg, len, &ok);

	if (!ok || v > 255)
		return -1;
	return blk_fill(g, (uint8_t)v);
}

static int act_blkbench(struct guest *g, const char *arg, size_t len)
{
	static const char *const modes[] = { "randread", "randwrite", "seqread", "seqwrite", NULL };

	for (const char *const *m = modes; *m; m++)
		if (word_is(arg, len, *m))
			return blk_bench(g, *m, g->opt_bs ? g->opt_bs : 4096, g->opt_qd ? g->opt_qd : 1,
					 g->opt_secs ? g->opt_secs : 5);
	return -1;
}

/* blkrec=SEED[,EVERY]: records for crash trials, a flush every EVERY
 * (default 8) completed records, qd= (default 4) in flight. */
static int act_blkrec(struct guest *g, const char *arg, size_t len)
{
	size_t comma = 0;
	uint64_t seed, every = 8;
	bool ok = true;

	while (comma < len && arg[comma] != ',')
		comma++;
	seed = parse_dec(arg, comma, &ok);
	if (ok && comma < len)
		every = parse_dec(arg + comma + 1, len - comma - 1, &ok);
	if (!ok || !every || every > 1000000)
		return -1;
	return blk_records(g, seed, (unsigned)every, g->opt_qd ? g->opt_qd : 4);
}

/* insntest: ring-0 instructions that software-nested hosts cannot
 * emulate (abi.h SYS_INSNTEST), one RESULT line each: 1 passed, 0 failed,
 * "absent" when the CPU does not claim the instruction. */
static int insn_test_run(void)
{
	static const struct {
		const char *name;
		uint64_t bit;
		uint32_t leaf, reg, feature; /* CPUID bit that says it exists */
	} checks[] = {
		{ "int3", INSN_INT3, 0, 0, 0 },
		{ "cmpxchg16b_eq", INSN_CMPXCHG16B_EQ, 1, 2, 1u << 13 },
		{ "cmpxchg16b_ne", INSN_CMPXCHG16B_NE, 1, 2, 1u << 13 },
		{ "cmpxchg16b_gs", INSN_CMPXCHG16B_GS, 1, 2, 1u << 13 },
		{ "popcnt", INSN_POPCNT, 1, 2, 1u << 23 },
		{ "stac_clac", INSN_STAC_CLAC, 7, 1, 1u << 20 },
		{ "fwait", INSN_FWAIT, 0, 0, 0 },
		{ "mxcsr", INSN_MXCSR, 0, 0, 0 },
	};
	uint64_t ok = sys_call(SYS_INSNTEST, 0, 0, 0, 0);

	for (unsigned i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
		uint32_t r[4];

		if (checks[i].feature) {
			cpuid(checks[i].leaf, 0, r);
			if (!(r[checks[i].reg] & checks[i].feature)) {
				out("RESULT insn_%s=absent\n", checks[i].name);
				continue;
			}
		}
		out("RESULT insn_%s=%d\n", checks[i].name, (ok & checks[i].bit) ? 1 : 0);
	}
	return 0;
}

int workloads_run(struct guest *g, const char *w, size_t wlen, bool *keep_running)
{
	if (word_has_prefix(w, wlen, "blkfill="))
		return act_blkfill(g, w + 8, wlen - 8);
	if (word_is(w, wlen, "blksum"))
		return blk_sum(g);
	if (word_is(w, wlen, "blkverify"))
		return blk_verify(g);
	if (word_is(w, wlen, "blkro"))
		return blk_readonly_check(g);
	if (word_has_prefix(w, wlen, "blkbench="))
		return act_blkbench(g, w + 9, wlen - 9);
	if (word_has_prefix(w, wlen, "blkrec="))
		return act_blkrec(g, w + 7, wlen - 7);
	if (word_is(w, wlen, "rng"))
		return rng_run(g);
	if (word_has_prefix(w, wlen, "balloon="))
		return balloon_run(g, w + 8, wlen - 8);
	if (word_has_prefix(w, wlen, "dynmem=")) {
		if (g->dynmem)
			return 0;
		int r = dynmem_start(g, w + 7, wlen - 7);
		if (g->dynmem)
			*keep_running = true;
		return r;
	}
	if (word_has_prefix(w, wlen, "netbench=")) {
		uint32_t peer;
		unsigned prefix;
		if (!parse_ip(w + 9, wlen - 9, &peer, &prefix))
			return -1;
		if (!g->net) {
			out("RESULT netbench_error=needs ip= and a virtio-net NIC\n");
			return 0;
		}
		return net_bench(g->net, peer, g->opt_secs ? g->opt_secs : 4);
	}
	if (word_has_prefix(w, wlen, "netflood=")) {
		uint32_t peer;
		unsigned prefix;
		if (!parse_ip(w + 9, wlen - 9, &peer, &prefix))
			return -1;
		if (!g->net) {
			out("RESULT netflood_error=needs ip= and a virtio-net NIC\n");
			return 0;
		}
		return net_flood(g->net, peer, g->opt_secs ? g->opt_secs : 4);
	}
	if (word_has_prefix(w, wlen, "netsend=")) {
		if (!g->net) {
			out("RESULT netsend_error=needs ip= and a virtio-net NIC\n");
			return 0;
		}
		return net_send_test(g->net, w + 8, wlen - 8);
	}
	if (word_is(w, wlen, "insntest"))
		return insn_test_run();
	if (word_is(w, wlen, "console")) {
		if (!g->console && console_start(g, &g->console) == 0)
			*keep_running = true;
		return 0;
	}
	if (word_is(w, wlen, "agent")) {
		if (!g->agent && agent_start(g, &g->agent) == 0)
			*keep_running = true;
		return 0;
	}
	if (word_has_prefix(w, wlen, "dirty=")) {
		const char *end;
		uint64_t size = parse_size(w + 6, &end);
		if ((size_t)(end - w) != wlen || !size)
			return -1;
		if (dirty_start(g, size) == 0)
			*keep_running = true;
		return 0;
	}
	if (word_is(w, wlen, "hotplug") || word_is(w, wlen, "hotplug=keep")) {
		if (hotplug_start(g, wlen > 7) == 0)
			*keep_running = true;
		return 0;
	}
	if (word_has_prefix(w, wlen, "hostile="))
		return hostile_run(g, w + 8, wlen - 8);
	return -2;
}

void workloads_start(struct guest *g, bool *keep_running)
{
	if (!g->opt_have_ip)
		return;
	if (net_start(g, g->opt_ip, g->opt_prefix, &g->net) == 0)
		*keep_running = true;
}

void workloads_serve(struct guest *g)
{
	g->net_busy = g->net ? net_poll(g->net) : false;
	g->dirty_busy = dirty_poll(g);
	g->console_busy = g->console ? console_poll(g->console) : false;
	g->hotplug_busy = hotplug_poll(g);
	g->agent_busy = g->agent ? agent_poll(g->agent) : false;
	g->dynmem_busy = dynmem_poll(g);
}

bool workloads_busy(struct guest *g)
{
	return g->net_busy || g->dirty_busy || g->console_busy || g->hotplug_busy ||
	       g->agent_busy || g->dynmem_busy;
}
uint64_t workloads_idle_ns(struct guest *g)
{
	if (g->opt_idle_poll)
		return 0;
	if ((g->net && !net_wakes(g->net)) || (g->console && !console_wakes(g->console)) ||
	    (g->agent && !agent_wakes(g->agent)))
		return 1000000;
	return 10000000;
}
