/* cloison-netctl: the host-networking library (src/net/switch.h,
 * dnsmasq.h) behind a command line, so tests/system drives the real C code.
 * One verb per run; results as one JSON object on stdout; errors as one
 * line on stderr and exit status 1 (2 for usage). Not installed. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/dnsmasq.h"
#include "net/switch.h"

static int usage(void)
{
	fprintf(stderr,
		"usage: cloison-netctl VERB ...\n"
		"  switch-create NAME private|internal|external|nat [--addr A/LEN] [--subnet N/LEN] [--adapter IF [--allow-management-os on|off] [--uplink-bandwidth BITS]]\n"
		"  switch-remove NAME\n"
		"  port-attach NAME IF [PORTOPTS]   port-detach NAME IF\n"
		"  tap-create NAME TAP [PORTOPTS]   tap-remove NAME TAP\n"
		"  forward-add NAME tcp|udp HOSTPORT VMADDR VMPORT   forward-remove NAME tcp|udp HOSTPORT\n"
		"  subnet-choose   subnet-check N/LEN\n"
		"  dhcp-start BRIDGE N/LEN LEASES LOG [dns]   leases FILE\n"
		"PORTOPTS: --mac MAC --mac-spoofing on|off --dhcp-guard on|off --router-guard on|off --vlan N --bandwidth-max BITS\n"
		"          --bandwidth-weight 0-100\n"
		"          --mirror none|source|destination\n");
	return 2;
}

static int die(const char *msg)
{
	fprintf(stderr, "cloison-netctl: %s\n", msg);
	return 1;
}

static int parse_onoff(const char *s, bool *out)
{
	if (strcmp(s, "on") == 0)
		*out = true;
	else if (strcmp(s, "off") == 0)
		*out = false;
	else
		return -EINVAL;
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char tail;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

static int parse_port_opts(int argc, char **argv, struct switch_port_config *pc)
{
	bool have_mac = false;
	uint8_t zero[6] = { 0 };

	switch_port_config_default(pc, zero);
	for (int i = 0; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		int ret = 0;
		if (strcmp(k, "--mac") == 0) {
			ret = parse_mac(v, pc->mac);
			have_mac = true;
		} else if (strcmp(k, "--mac-spoofing") == 0) {
			ret = parse_onoff(v, &pc->mac_spoofing);
		} else if (strcmp(k, "--dhcp-guard") == 0) {
			ret = parse_onoff(v, &pc->dhcp_guard);
		} else if (strcmp(k, "--router-guard") == 0) {
			ret = parse_onoff(v, &pc->router_guard);
		} else if (strcmp(k, "--mirror") == 0) {
			if (strcmp(v, "none") == 0)
				pc->mirror = SWITCH_MIRROR_NONE;
			else if (strcmp(v, "source") == 0)
				pc->mirror = SWITCH_MIRROR_SOURCE;
			else if (strcmp(v, "destination") == 0)
				pc->mirror = SWITCH_MIRROR_DESTINATION;
			else
				ret = -EINVAL;
		} else if (strcmp(k, "--bandwidth-max") == 0) {
			pc->bandwidth_max = strtoull(v, NULL, 10);
		} else if (strcmp(k, "--bandwidth-weight") == 0) {
			pc->bandwidth_weight = (unsigned)strtoul(v, NULL, 10);
		} else if (strcmp(k, "--vlan") == 0) {
			pc->vlan = (unsigned)strtoul(v, NULL, 10);
		} else {
			ret = -EINVAL;
		}
		if (ret) {
			fprintf(stderr, "cloison-netctl: bad option %s %s\n", k, v);
			return ret;
		}
	}
	if (argc % 2) {
		fprintf(stderr, "cloison-netctl: option %s needs a value\n", argv[argc - 1]);
		return -EINVAL;
	}
	if (!pc->mac_spoofing && !have_mac) {
		fprintf(stderr, "cloison-netctl: give the adapter's --mac, or --mac-spoofing on\n");
		return -EINVAL;
	}
	return 0;
}

static int cmd_switch_create(struct switch_net *sn, int argc, char **argv)
{
	struct switch_config cfg = { .name = argv[0] };
	struct switch_info info;
	char gw[INET_ADDRSTRLEN];

	if (switch_type_parse(argv[1], &cfg.type))
		return die("bad switch type: use private, internal, external or nat");
	for (int i = 2; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--adapter") == 0)
			cfg.adapter = argv[i + 1];
		else if (strcmp(argv[i], "--allow-management-os") == 0)
			cfg.share_management = strcmp(argv[i + 1], "on") == 0;
		else if (strcmp(argv[i], "--uplink-bandwidth") == 0)
			cfg.uplink_bandwidth = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--addr") == 0 && !ip4_prefix_parse(argv[i + 1], true, &cfg.addr))
			continue;
		else if (strcmp(argv[i], "--subnet") == 0 &&
			 !ip4_prefix_parse(argv[i + 1], false, &cfg.addr))
			continue;
		else if (strcmp(argv[i], "--adapter") != 0 && strcmp(argv[i], "--allow-management-os") != 0 &&
			 strcmp(argv[i], "--uplink-bandwidth") != 0)
			return die("bad option or address (A.B.C.D/LEN; a subnet has no host bits)");
	}
	if (cfg.type == SWITCH_NAT && !cfg.addr.len && switch_subnet_choose(sn, &cfg.addr))
		return die(sn->err);
	if (switch_create(sn, &cfg, &info))
		return die(sn->err);
	if (sn->err[0])
		fprintf(stderr, "cloison-netctl: %s\n", sn->err);
	inet_ntop(AF_INET, &info.gateway, gw, sizeof(gw));
	printf("{\"bridge\":\"%s\",\"ifindex\":%d,\"adopted\":%s,\"gateway\":\"%s\"}\n", info.bridge,
	       info.ifindex, info.adopted ? "true" : "false", gw);
	return 0;
}

static int cmd_tap_create(struct switch_net *sn, int argc, char **argv)
{
	struct switch_port_config pc;
	int fd;

	if (parse_port_opts(argc - 2, argv + 2, &pc))
		return 2;
	fd = switch_tap_create(sn, argv[0], argv[1], &pc, 12);
	if (fd < 0)
		return die(sn->err);
	printf("{\"tap\":\"%s\",\"fd\":%d}\n", argv[1], fd);
	close(fd);
	return 0;
}

static int cmd_forward(struct switch_net *sn, bool add, int argc, char **argv)
{
	struct in_addr a;
	unsigned hp = (unsigned)strtoul(argv[2], NULL, 10);

	if (!add)
		return switch_nat_forward_remove(sn, argv[0], argv[1], hp) ? die(sn->err) : 0;
	if (argc < 5 || inet_pton(AF_INET, argv[3], &a) != 1)
		return die("forward-add needs NAME PROTO HOSTPORT VMADDR VMPORT");
	if (switch_nat_forward_add(sn, argv[0], argv[1], hp, a, (unsigned)strtoul(argv[4], NULL, 10)))
		return die(sn->err);
	return 0;
}

static int print_prefix(const struct ip4_prefix *p)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &p->addr, a, sizeof(a));
	printf("{\"subnet\":\"%s/%u\"}\n", a, p->len);
	return 0;
}

static int cmd_dhcp_start(int argc, char **argv)
{
	struct dnsmasq_config cfg = { .bridge = argv[0], .leases_path = argv[2], .log_path = argv[3],
				      .dns = argc == 5 };
	struct dnsmasq d = { 0 };
	char err[256];

	if (ip4_prefix_parse(argv[1], false, &cfg.subnet))
		return die("bad subnet: use A.B.C.D/LEN");
	if (dnsmasq_start(&d, &cfg, err, sizeof(err)))
		return die(err);
	/* Left running: the test stops it by pid. */
	printf("{\"pid\":%d}\n", (int)d.pid);
	return 0;
}

static int cmd_leases(const char *path)
{
	struct dnsmasq_lease *v;
	char a[INET_ADDRSTRLEN];
	size_t n;
	int ret = dnsmasq_leases_read(path, &v, &n);

	if (ret)
		return die(strerror(-ret));
	printf("{\"leases\":[");
	for (size_t i = 0; i < n; i++) {
		const uint8_t *m = v[i].mac;
		inet_ntop(AF_INET, &v[i].addr, a, sizeof(a));
		printf("%s{\"mac\":\"%02x:%02x:%02x:%02x:%02x:%02x\",\"ip\":\"%s\",\"hostname\":\"%s\","
		       "\"expiry\":%lld}",
		       i ? "," : "", m[0], m[1], m[2], m[3], m[4], m[5], a, v[i].hostname,
		       (long long)v[i].expiry);
	}
	printf("]}\n");
	free(v);
	return 0;
}

/* The verbs, each with its least argument count. */
static int dispatch(struct switch_net *sn, const char *verb, int argc, char **argv)
{
	struct switch_port_config pc;
	struct ip4_prefix p;

	if (strcmp(verb, "switch-create") == 0 && argc >= 2)
		return cmd_switch_create(sn, argc, argv);
	if (strcmp(verb, "switch-remove") == 0 && argc == 1) {
		if (switch_destroy(sn, argv[0]))
			return die(sn->err);
		if (sn->err[0])
			fprintf(stderr, "cloison-netctl: %s\n", sn->err);
		return 0;
	}
	if (strcmp(verb, "port-attach") == 0 && argc >= 2) {
		if (parse_port_opts(argc - 2, argv + 2, &pc))
			return 2;
		if (switch_port_attach(sn, argv[0], argv[1], &pc))
			return die(sn->err);
		if (sn->err[0])
			fprintf(stderr, "cloison-netctl: %s\n", sn->err);
		return 0;
	}
	if (strcmp(verb, "port-detach") == 0 && argc == 2)
		return switch_port_detach(sn, argv[0], argv[1]) ? die(sn->err) : 0;
	if (strcmp(verb, "tap-create") == 0 && argc >= 2)
		return cmd_tap_create(sn, argc, argv);
	if (strcmp(verb, "tap-remove") == 0 && argc == 2)
		return switch_tap_remove(sn, argv[0], argv[1]) ? die(sn->err) : 0;
	if (strcmp(verb, "forward-add") == 0 && argc == 5)
		return cmd_forward(sn, true, argc, argv);
	if (strcmp(verb, "forward-remove") == 0 && argc == 3)
		return cmd_forward(sn, false, argc, argv);
	if (strcmp(verb, "subnet-choose") == 0 && argc == 0)
		return switch_subnet_choose(sn, &p) ? die(sn->err) : print_prefix(&p);
	if (strcmp(verb, "subnet-check") == 0 && argc == 1) {
		if (ip4_prefix_parse(argv[0], false, &p))
			return die("bad subnet: use A.B.C.D/LEN with no host bits");
		return switch_subnet_check(sn, &p) ? die(sn->err) : print_prefix(&p);
	}
	if (strcmp(verb, "dhcp-start") == 0 && (argc == 4 || (argc == 5 && !strcmp(argv[4], "dns"))))
		return cmd_dhcp_start(argc, argv);
	if (strcmp(verb, "leases") == 0 && argc == 1)
		return cmd_leases(argv[0]);
	return usage();
}

int main(int argc, char **argv)
{
	struct switch_net sn;
	int ret;

	if (argc < 2)
		return usage();
	if (switch_net_open(&sn))
		return die(sn.err);
	ret = dispatch(&sn, argv[1], argc - 2, argv + 2);
	switch_net_close(&sn);
	return ret;
}
