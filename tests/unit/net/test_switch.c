/* Unit tests for src/net (switch.c, rtnl.c, nft.c, tap.c, dnsmasq.c). The
 * process moves into a network namespace of its own (unshare) so bridges,
 * taps and tables are made for real and never touch the host's; what they
 * leave is checked independently with `ip -j` and `nft -j`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/dnsmasq.h"
#include "net/switch.h"
#include "net/tap.h"

static bool have_netns;

/* The whole output of a shell command run in our namespace. */
static char *run(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	size_t cap = 1 << 16, n = 0, r;
	char *buf = malloc(cap);

	assert_non_null(p);
	assert_non_null(buf);
	while ((r = fread(buf + n, 1, cap - 1 - n, p)) > 0) {
		n += r;
		if (n + 1 >= cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	buf[n] = '\0';
	pclose(p);
	return buf;
}

static bool output_has(const char *cmd, const char *needle)
{
	char *out = run(cmd);
	bool has = strstr(out, needle) != NULL;

	free(out);
	return has;
}

static int setup(void **state)
{
	struct switch_net *sn = calloc(1, sizeof(*sn));

	if (!have_netns) {
		free(sn);
		skip(); /* reason printed by main() */
	}
	assert_int_equal(switch_net_open(sn), 0);
	*state = sn;
	return 0;
}

static int teardown(void **state)
{
	struct switch_net *sn = *state;

	switch_net_close(sn);
	free(sn);
	/* Nothing leaks into the next test. */
	assert_int_equal(system("nft flush ruleset; for l in $(ip -j link | "
				"python3 -c 'import json,sys; print(\" \".join(l[\"ifname\"] for l in "
				"json.load(sys.stdin) if l[\"ifname\"] != \"lo\"))'); do ip link del $l 2>/dev/null; done; true"),
			 0);
	return 0;
}

static void test_prefix_parse_and_overlap(void **state)
{
	struct ip4_prefix a, b;

	assert_int_equal(ip4_prefix_parse("10.1.2.0/24", false, &a), 0);
	assert_int_equal(a.len, 24);
	assert_int_equal(ip4_prefix_parse("10.1.2.3/24", false, &b), -EINVAL); /* host bits */
	assert_int_equal(ip4_prefix_parse("10.1.2.3/24", true, &b), 0);
	assert_true(ip4_prefix_overlap(&a, &b));
	assert_int_equal(ip4_prefix_parse("10.1.0.0/16", false, &b), 0);
	assert_true(ip4_prefix_overlap(&a, &b));
	assert_int_equal(ip4_prefix_parse("10.2.0.0/16", false, &b), 0);
	assert_false(ip4_prefix_overlap(&a, &b));
	assert_int_equal(ip4_prefix_parse("10.1.2.0/31", false, &b), -EINVAL);
	assert_int_equal(ip4_prefix_parse("10.1.2.0", false, &b), -EINVAL);
	assert_int_equal(ip4_prefix_parse("10.1.2.0/2x", false, &b), -EINVAL);
	assert_int_equal(ip4_prefix_parse("300.1.2.0/24", false, &b), -EINVAL);
}

static void test_lease_parse(void **state)
{
	struct dnsmasq_lease l;

	assert_int_equal(dnsmasq_lease_parse("1700000000 52:54:00:aa:bb:01 192.168.100.23 vm1 "
					     "01:52:54:00:aa:bb:01\n", &l), 0);
	assert_int_equal(l.expiry, 1700000000);
	assert_int_equal(l.mac[5], 0x01);
	assert_int_equal(ntohl(l.addr.s_addr), 0xc0a86417);
	assert_string_equal(l.hostname, "vm1");
	assert_int_equal(dnsmasq_lease_parse("0 52:54:00:aa:bb:02 192.168.100.24 * *\n", &l), 0);
	assert_string_equal(l.hostname, "");
	/* IPv6 leases and junk are not IPv4 leases. */
	assert_int_equal(dnsmasq_lease_parse("duid 00:01:00:01\n", &l), -EINVAL);
	assert_int_equal(dnsmasq_lease_parse("1 52:54:00:aa:bb:02 fd00::5 * *\n", &l), -EINVAL);
	assert_int_equal(dnsmasq_lease_parse("1 52:54:00:aa:bb 10.0.0.1 * *\n", &l), -EINVAL);
}

static void test_private_switch_created_adopted_destroyed(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "lan1", .type = SWITCH_PRIVATE };
	struct switch_info info;

	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_false(info.adopted);
	assert_string_equal(info.bridge, "cls-lan1");
	assert_true(output_has("ip -j -d link show cls-lan1", "\"info_kind\":\"bridge\""));
	assert_true(output_has("ip -j link show cls-lan1", "\"ifalias\":\"cloison-switch:lan1\""));
	assert_true(output_has("ip -j link show cls-lan1", "\"UP\""));
	assert_false(output_has("ip -j addr show cls-lan1", "\"local\""));
	assert_true(output_has("nft -j list ruleset", "{\"family\": \"bridge\", \"name\": \"cloison_lan1\""));
	assert_true(output_has("nft -j list table arp cloison_lan1", "\"drop\""));
	assert_true(output_has("nft -j list table inet cloison_lan1", "\"iifname\""));

	/* Again: adopted, and no rule doubled. */
	char *before = run("nft -s list ruleset");
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_true(info.adopted);
	char *after = run("nft -s list ruleset");
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* Its tables gone (by hand): adoption puts them back. */
	assert_int_equal(system("nft delete table inet cloison_lan1"), 0);
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_true(output_has("nft list tables", "table inet cloison_lan1"));
	/* A table of an older layout (no layout comment) is rebuilt. */
	assert_int_equal(system("nft delete table bridge cloison_lan1 && "
				"nft add table bridge cloison_lan1"), 0);
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_true(output_has("nft list table bridge cloison_lan1", "map guards"));
	assert_true(output_has("nft list table bridge cloison_lan1", "cloison-switch layout"));

	assert_int_equal(switch_destroy(sn, "lan1"), 0);
	assert_false(output_has("ip -j link", "cls-lan1"));
	assert_false(output_has("nft -j list ruleset", "cloison_lan1"));
	assert_int_equal(switch_destroy(sn, "lan1"), -ENOENT);
	assert_non_null(strstr(sn->err, "no switch \"lan1\""));
}

static void test_foreign_bridge_and_bad_names_refused(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "x", .type = SWITCH_INTERNAL };
	struct switch_info info;

	assert_int_equal(system("ip link add cls-x type bridge"), 0);
	assert_int_equal(switch_create(sn, &cfg, &info), -EEXIST);
	assert_non_null(strstr(sn->err, "not cloison's switch"));
	assert_int_equal(switch_destroy(sn, "x"), -EEXIST);
	assert_true(output_has("ip -j link", "cls-x")); /* left alone */
	cfg.name = "has-dash";
	assert_int_equal(switch_create(sn, &cfg, &info), -EINVAL);
	cfg.name = "twelvecharsX";
	assert_int_equal(switch_create(sn, &cfg, &info), -EINVAL);
	cfg.name = "e1";
	cfg.type = SWITCH_EXTERNAL;
	cfg.adapter = "nosuch0";
	assert_int_equal(switch_create(sn, &cfg, &info), -ENODEV);
	assert_non_null(strstr(sn->err, "adapter nosuch0 does not exist"));
	assert_false(output_has("ip -j link", "cls-e1"));
	assert_false(output_has("nft list tables", "cloison_e1"));
}

static void test_internal_address_and_external_adapter(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "int", .type = SWITCH_INTERNAL };
	struct switch_info info;

	assert_int_equal(ip4_prefix_parse("10.60.0.1/24", true, &cfg.addr), 0);
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_true(output_has("ip -j addr show cls-int", "\"local\":\"10.60.0.1\",\"prefixlen\":24"));

	assert_int_equal(system("ip link add uplink0 type veth peer name uplink1"), 0);
	struct switch_config ext = { .name = "ext", .type = SWITCH_EXTERNAL, .adapter = "uplink0" };
	assert_int_equal(switch_create(sn, &ext, &info), 0);
	assert_true(output_has("ip -j link show uplink0", "\"master\":\"cls-ext\""));
	/* An adapter already in a bridge is not taken. */
	struct switch_config ext2 = { .name = "ext2", .type = SWITCH_EXTERNAL, .adapter = "uplink0" };
	assert_int_equal(switch_create(sn, &ext2, &info), -EBUSY);
	assert_false(output_has("ip -j link", "cls-ext2"));
	assert_int_equal(switch_destroy(sn, "ext"), 0);
	assert_false(output_has("ip -j link show uplink0", "\"master\""));
}

static void test_external_moves_management_addresses_and_back(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "mgmt", .type = SWITCH_EXTERNAL, .adapter = "eth9",
				     .share_management = true };
	struct switch_info info;

	assert_int_equal(system("ip link add eth9 type veth peer name eth9b && ip link set eth9 up && "
				"ip link set eth9b up && ip addr add 10.62.0.5/24 dev eth9 && "
				"ip addr add 2001:db8:62::5/64 dev eth9 nodad && "
				"ip route add 10.63.0.0/16 via 10.62.0.1"), 0);
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_true(output_has("ip -j addr show cls-mgmt", "\"local\":\"10.62.0.5\",\"prefixlen\":24"));
	assert_false(output_has("ip -4 -j addr show eth9", "\"local\""));
	assert_true(output_has("ip -j route show 10.63.0.0/16", "\"dev\":\"cls-mgmt\""));
	assert_true(output_has("ip -j link show cls-mgmt", "uplink=eth9"));
	assert_true(output_has("ip -6 -j addr show cls-mgmt", "\"local\":\"2001:db8:62::5\",\"prefixlen\":64"));
	assert_false(output_has("ip -6 -j addr show eth9", "2001:db8:62::5"));
	/* Adopting moves nothing twice. */
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_true(info.adopted);
	assert_true(output_has("ip -j addr show cls-mgmt", "\"local\":\"10.62.0.5\""));
	assert_int_equal(switch_destroy(sn, "mgmt"), 0);
	assert_true(output_has("ip -j addr show eth9", "\"local\":\"10.62.0.5\",\"prefixlen\":24"));
	assert_true(output_has("ip -j route show 10.63.0.0/16", "\"dev\":\"eth9\""));
	assert_false(output_has("ip -j link show eth9", "\"master\""));
	assert_true(output_has("ip -6 -j addr show eth9", "\"local\":\"2001:db8:62::5\",\"prefixlen\":64"));

	/* An adapter that is another bridge's port: refused, and the failed
	 * create neither releases it nor touches its address. */
	assert_int_equal(system("ip link add br9 type bridge && ip link set eth9 master br9"), 0);
	assert_int_equal(switch_create(sn, &cfg, &info), -EBUSY);
	assert_true(output_has("ip -j link show eth9", "\"master\":\"br9\""));
	assert_true(output_has("ip -j addr show eth9", "\"local\":\"10.62.0.5\""));
	assert_false(output_has("ip -j link", "cls-mgmt"));
}

static void test_tap_created_guarded_removed(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "sw", .type = SWITCH_PRIVATE };
	struct switch_port_config pc;
	const uint8_t mac[6] = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 };
	struct switch_info info;
	struct rtnl_link l;
	int fd;

	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	switch_port_config_default(&pc, mac);
	pc.dhcp_guard = true;
	pc.router_guard = true;
	pc.vlan = 7;
	pc.bandwidth_max = 8000000; /* 1 MB/s */
	fd = switch_tap_create(sn, "sw", "vmtap0", &pc, 12);
	assert_true(fd >= 0);
	/* The fd is a tap the worker can adopt. */
	char name[IFNAMSIZ];
	assert_int_equal(tap_adopt_fd(fd, 12, name), 0);
	assert_string_equal(name, "vmtap0");
	close(fd);
	/* Persistent: it outlives the fd, in the bridge, up. */
	assert_int_equal(rtnl_link_get(&sn->rtnl, "vmtap0", &l), 0);
	assert_int_equal(l.master, info.ifindex);
	assert_true(output_has("ip -j -d link show vmtap0", "\"info_kind\":\"tun\""));
	assert_true(output_has("ip -j link show vmtap0", "\"master\":\"cls-sw\""));
	char *rules = run("nft -j list table bridge cloison_sw");
	assert_non_null(strstr(rules, "\"52:54:00:12:34:56\""));
	assert_non_null(strstr(rules, "nd-router-advert"));
	assert_non_null(strstr(rules, "\"vlan_7\""));
	assert_non_null(strstr(rules, "\"p_vmtap0\""));
	assert_non_null(strstr(rules, "\"limit\": {\"rate\": 1000000, \"burst\": 20000, \"per\": \"second\", \"inv\": true, \"rate_unit\": \"bytes\""));
	free(rules);
	assert_int_equal(switch_tap_create(sn, "sw", "vmtap0", &pc, 12), -EEXIST);

	/* Re-attach with other settings replaces them. */
	pc.vlan = 0;
	pc.mac_spoofing = true;
	pc.bandwidth_max = 0;
	assert_int_equal(switch_port_attach(sn, "sw", "vmtap0", &pc), 0);
	rules = run("nft -j list table bridge cloison_sw");
	assert_null(strstr(rules, "\"52:54:00:12:34:56\""));
	assert_null(strstr(rules, "\"limit\""));
	assert_null(strstr(rules, "\"vlan_7\", \"elem\""));
	free(rules);

	assert_int_equal(switch_tap_remove(sn, "sw", "vmtap0"), 0);
	assert_false(output_has("ip -j link", "vmtap0"));
	assert_false(output_has("nft -j list table bridge cloison_sw", "vmtap0"));
	assert_int_equal(switch_tap_remove(sn, "sw", "vmtap0"), -ENODEV);
	assert_int_equal(switch_port_attach(sn, "sw", "nosuch", &pc), -ENODEV);
	pc.vlan = 5000;
	assert_int_equal(switch_port_attach(sn, "sw", "lo", &pc), -EINVAL);
	pc.vlan = 0;
	pc.bandwidth_max = 100;
	assert_int_equal(switch_port_attach(sn, "sw", "lo", &pc), -EINVAL);
	assert_non_null(strstr(sn->err, "bad bandwidth_max"));
	pc.bandwidth_max = 0;
	pc.bandwidth_weight = 101;
	assert_int_equal(switch_port_attach(sn, "sw", "lo", &pc), -EINVAL);
	assert_non_null(strstr(sn->err, "bad bandwidth_weight 101"));
}

static void test_port_mirroring_table_follows_ports(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "mir", .type = SWITCH_PRIVATE };
	const uint8_t mac[6] = { 0x52, 0x54, 0, 0, 0, 1 };
	struct switch_port_config src, dst;
	struct switch_info info;
	int a, b;

	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	switch_port_config_default(&src, mac);
	switch_port_config_default(&dst, mac);
	src.mirror = SWITCH_MIRROR_SOURCE;
	dst.mirror = SWITCH_MIRROR_DESTINATION;
	a = switch_tap_create(sn, "mir", "mtap0", &src, 12);
	assert_true(a >= 0);
	/* A source with no destination yet copies nowhere: no table. */
	assert_false(output_has("nft list tables", "netdev cloison_mir"));
	b = switch_tap_create(sn, "mir", "mtap1", &dst, 12);
	assert_true(b >= 0);
	char *t = run("nft list table netdev cloison_mir");
	assert_non_null(strstr(t, "hook ingress device \"mtap0\""));
	assert_non_null(strstr(t, "hook egress device \"mtap0\""));
	assert_non_null(strstr(t, "dup to \"mtap1\""));
	free(t);
	/* The destination turned into a plain port: mirroring stops. */
	dst.mirror = SWITCH_MIRROR_NONE;
	assert_int_equal(switch_port_attach(sn, "mir", "mtap1", &dst), 0);
	assert_false(output_has("nft list tables", "netdev cloison_mir"));
	dst.mirror = SWITCH_MIRROR_DESTINATION;
	assert_int_equal(switch_port_attach(sn, "mir", "mtap1", &dst), 0);
	assert_true(output_has("nft list tables", "netdev cloison_mir"));
	assert_int_equal(switch_tap_remove(sn, "mir", "mtap0"), 0);
	assert_false(output_has("nft list tables", "netdev cloison_mir"));
	assert_false(output_has("nft list set bridge cloison_mir mirror_src", "mtap0"));
	close(a);
	close(b);
}

static void test_nat_forwards_and_subnet_choice(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "nat", .type = SWITCH_NAT };
	struct switch_info info;
	struct ip4_prefix p;
	struct in_addr vm;

	assert_int_equal(switch_subnet_choose(sn, &p), 0);
	assert_int_equal(ntohl(p.addr.s_addr), 0xc0a86400); /* 192.168.100.0: nothing in the way */
	cfg.addr = p;
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	assert_int_equal(ntohl(info.gateway.s_addr), 0xc0a86401);
	assert_true(output_has("ip -j addr show cls-nat", "\"local\":\"192.168.100.1\""));
	assert_true(output_has("nft -j list table ip cloison_nat", "\"masquerade\""));
	/* Its route now takes 192.168.100.0/24: the next choice avoids it. */
	assert_int_equal(switch_subnet_choose(sn, &p), 0);
	assert_int_equal(ntohl(p.addr.s_addr), 0xc0a86500);
	assert_int_equal(switch_subnet_check(sn, &cfg.addr), -EADDRINUSE);
	assert_non_null(strstr(sn->err, "overlaps the host's route to 192.168.100.0/24"));
	struct switch_config clash = { .name = "nat2", .type = SWITCH_NAT };
	assert_int_equal(ip4_prefix_parse("192.168.0.0/16", false, &clash.addr), 0);
	assert_int_equal(switch_create(sn, &clash, &info), -EADDRINUSE);
	assert_false(output_has("ip -j link", "cls-nat2"));

	inet_pton(AF_INET, "192.168.100.50", &vm);
	assert_int_equal(switch_nat_forward_add(sn, "nat", "tcp", 8080, vm, 80), 0);
	assert_true(output_has("nft -j list map ip cloison_nat fwd_tcp", "192.168.100.50"));
	assert_int_equal(switch_nat_forward_add(sn, "nat", "tcp", 8080, vm, 81), -EEXIST);
	assert_int_equal(switch_nat_forward_add(sn, "nat", "sctp", 1, vm, 1), -EINVAL);
	assert_int_equal(switch_nat_forward_add(sn, "nat", "udp", 0, vm, 1), -EINVAL);
	assert_int_equal(switch_nat_forward_add(sn, "nope", "udp", 53, vm, 53), -ENOENT);
	assert_int_equal(switch_nat_forward_remove(sn, "nat", "tcp", 8080), 0);
	assert_false(output_has("nft -j list map ip cloison_nat fwd_tcp", "192.168.100.50"));
	assert_int_equal(switch_nat_forward_remove(sn, "nat", "tcp", 8080), -ENOENT);
	assert_int_equal(switch_destroy(sn, "nat"), 0);
	assert_false(output_has("nft list tables", "cloison_nat"));
}

static void test_dnsmasq_started_restarted_stopped(void **state)
{
	struct switch_net *sn = *state;
	struct switch_config cfg = { .name = "dn", .type = SWITCH_NAT };
	char dir[] = "/tmp/cloison-dnsmasq-XXXXXX", leases[128], log[128], err[256];
	struct dnsmasq d = { 0 };
	struct dnsmasq_config dc = { 0 };
	struct switch_info info;

	if (access(DNSMASQ_BINARY, X_OK)) {
		fprintf(stderr, "skipping: %s is not installed (dnsmasq-base)\n", DNSMASQ_BINARY);
		skip();
	}
	assert_non_null(mkdtemp(dir));
	snprintf(leases, sizeof(leases), "%s/leases", dir);
	snprintf(log, sizeof(log), "%s/log", dir);
	assert_int_equal(ip4_prefix_parse("10.61.0.0/24", false, &cfg.addr), 0);
	assert_int_equal(switch_create(sn, &cfg, &info), 0);
	dc.bridge = "cls-dn";
	dc.subnet = cfg.addr;
	dc.leases_path = leases;
	dc.log_path = log;
	assert_int_equal(dnsmasq_start(&d, &dc, err, sizeof(err)), 0);
	assert_true(d.pid > 0);
	assert_int_equal(kill(d.pid, 0), 0);
	assert_int_equal(access(leases, F_OK), 0);
	assert_int_equal(dnsmasq_poll(&d, err, sizeof(err)), 0);
	assert_int_equal(d.restarts, 0);
	/* Killed: the supervisor's poll brings it back. */
	pid_t old = d.pid;
	kill(d.pid, SIGKILL);
	usleep(100 * 1000);
	assert_int_equal(dnsmasq_poll(&d, err, sizeof(err)), 0);
	assert_int_equal(d.restarts, 1);
	assert_int_not_equal(d.pid, old);
	assert_int_equal(kill(d.pid, 0), 0);
	assert_int_equal(dnsmasq_stop(&d), 0);
	assert_int_equal(d.pid, 0);

	/* A bridge that is not there: a clear error, no child left. */
	dc.bridge = "cls-none";
	assert_int_not_equal(dnsmasq_start(&d, &dc, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "dnsmasq exited"));
	assert_int_equal(d.pid, 0);

	struct dnsmasq_lease *v;
	size_t n;
	FILE *f = fopen(leases, "w");
	assert_non_null(f);
	fputs("0 52:54:00:aa:bb:01 10.61.0.20 vm1 *\nduid 00:01\n", f);
	fclose(f);
	assert_int_equal(dnsmasq_leases_read(leases, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(v[0].hostname, "vm1");
	free(v);
	unlink(leases);
	assert_int_equal(dnsmasq_leases_read(leases, &v, &n), 0);
	assert_int_equal(n, 0);
	unlink(log);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefix_parse_and_overlap),
		cmocka_unit_test(test_lease_parse),
		cmocka_unit_test_setup_teardown(test_private_switch_created_adopted_destroyed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_foreign_bridge_and_bad_names_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_internal_address_and_external_adapter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_external_moves_management_addresses_and_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tap_created_guarded_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_port_mirroring_table_follows_ports, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nat_forwards_and_subnet_choice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dnsmasq_started_restarted_stopped, setup, teardown),
	};

	/* A private network namespace: nothing here touches the host's. */
	have_netns = unshare(CLONE_NEWNET) == 0 && access("/dev/net/tun", R_OK | W_OK) == 0;
	if (!have_netns)
		fprintf(stderr, "skipping the switch tests: cannot create a network namespace with "
				"a tap (%s; needs root and /dev/net/tun)\n", strerror(errno));
	else if (system("ip link set lo up"))
		fprintf(stderr, "cannot set lo up in the test namespace\n");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
