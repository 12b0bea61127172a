/* cloison switch: the host's virtual switches through cloisond's REST API
 * (/v1/switches): create, list, show, set, remove, NAT port forwards and
 * DHCP leases. Human output by default, --json everywhere, exit codes
 * from cli.h. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"

enum {
	OPT_SOCKET = 1000, OPT_JSON, OPT_HELP, OPT_TYPE, OPT_ADAPTER, OPT_MGMT, OPT_NO_MGMT,
	OPT_ADDRESS, OPT_SUBNET, OPT_UPLINK_BW, OPT_NOTES, OPT_FORCE, OPT_YES,
};

struct sw_opts {
	const char *socket;
	bool json, help, force, yes;
	json_t *body;
};

struct sw_verb {
	const char *name;
	int (*run)(struct sw_opts *o, int argc, char **argv);
	const char *args;
	const char *summary;
	const char *help;
};

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("cloison: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(add --help to the command for its options)\n", stderr);
	return CLI_EXIT_USAGE;
}

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (s) {
		puts(s);
		free(s);
	}
}

static void switch_path(char *out, size_t len, const char *name, const char *suffix)
{
	char esc[128];

	client_escape(name, esc, sizeof(esc));
	snprintf(out, len, "/v1/switches/%s%s", esc, suffix);
}

/* One request; prints --json or calls human(resp). */
static int call(struct sw_opts *o, const char *method, const char *path, json_t *body,
		void (*human)(json_t *, void *), void *arg)
{
	struct client c;
	json_t *resp;
	int r;

	if ((r = client_init(&c, o->socket)) || (r = client_call(&c, method, path, body, &resp)))
		return r;
	if (o->json)
		print_json(resp);
	else if (human)
		human(resp, arg);
	json_decref(resp);
	return CLI_EXIT_OK;
}

/* Parses the options of every verb into o; returns -1 to go on, or an
 * exit status. */
static int parse_opts(struct sw_opts *o, int argc, char **argv, const struct option *extra)
{
	static const struct option common[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, OPT_HELP },
	};
	struct option opts[16];
	unsigned n = 0;
	int c;

	for (unsigned i = 0; i < 3; i++)
		opts[n++] = common[i];
	for (; extra && extra->name && n < 15; extra++)
		opts[n++] = *extra;
	opts[n] = (struct option){ NULL, 0, NULL, 0 };
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case OPT_SOCKET: o->socket = optarg; break;
		case OPT_JSON: o->json = true; break;
		case OPT_HELP: o->help = true; break;
		case OPT_TYPE: json_object_set_new(o->body, "type", json_string(optarg)); break;
		case OPT_ADAPTER: json_object_set_new(o->body, "adapter", json_string(optarg)); break;
		case OPT_MGMT: json_object_set_new(o->body, "allow_management_os", json_true()); break;
		case OPT_NO_MGMT:
			json_object_set_new(o->body, "allow_management_os", json_false());
			break;
		case OPT_ADDRESS: json_object_set_new(o->body, "address", json_string(optarg)); break;
		case OPT_SUBNET: json_object_set_new(o->body, "subnet", json_string(optarg)); break;
		case OPT_UPLINK_BW: {
			char *end;
			long long v = strtoll(optarg, &end, 10);
			if (!*optarg || *end || v < 0)
				return usage_error("--uplink-bandwidth %s: give bits/s as a number", optarg);
			json_object_set_new(o->body, "uplink_bandwidth", json_integer(v));
			break;
		}
		case OPT_NOTES: json_object_set_new(o->body, "notes", json_string(optarg)); break;
		case OPT_FORCE: o->force = true; break;
		case OPT_YES: o->yes = true; break;
		default: return usage_error("%s", "unknown option or missing argument");
		}
	}
	return -1;
}

/* ---- human output ---- */

static void print_show(json_t *s, void *arg)
{
	json_t *e;
	size_t i;

	(void)arg;
	printf("Name:          %s\n", str(s, "name"));
	printf("Type:          %s\n", str(s, "type"));
	printf("Bridge:        %s%s%s\n", str(s, "bridge"),
	       json_is_true(json_object_get(s, "up")) ? "" : " (DOWN: ", 
	       json_is_true(json_object_get(s, "up")) ? "" : str(s, "problem"));
	if (*str(s, "adapter"))
		printf("Adapter:       %s (management OS %s)\n", str(s, "adapter"),
		       json_is_true(json_object_get(s, "allow_management_os")) ? "shares it"
									: "does not use it");
	if (json_integer_value(json_object_get(s, "uplink_bandwidth")))
		printf("Uplink:        %lld bit/s shared by bandwidth weights\n",
		       (long long)json_integer_value(json_object_get(s, "uplink_bandwidth")));
	if (*str(s, "address"))
		printf("Host address:  %s\n", str(s, "address"));
	if (*str(s, "subnet"))
		printf("Subnet:        %s (gateway %s, DHCP %s)\n", str(s, "subnet"), str(s, "gateway"),
		       json_is_true(json_object_get(json_object_get(s, "dhcp"), "running"))
			       ? "running"
			       : "NOT running");
	json_array_foreach(json_object_get(s, "forwards"), i, e)
		printf("Forward:       %s host port %lld -> %s:%lld%s%s%s\n", str(e, "proto"),
		       (long long)json_integer_value(json_object_get(e, "host_port")),
		       str(e, "address"), (long long)json_integer_value(json_object_get(e, "vm_port")),
		       *str(e, "vm") ? " (VM " : "", str(e, "vm"), *str(e, "vm") ? ")" : "");
	json_array_foreach(json_object_get(s, "adapters"), i, e)
		printf("Adapter %zu:     VM %s network adapter %lld, MAC %s%s%s\n", i, str(e, "vm"),
		       (long long)json_integer_value(json_object_get(e, "adapter")), str(e, "mac"),
		       *str(e, "tap") ? ", tap " : " (VM not running)", str(e, "tap"));
	if (!json_array_size(json_object_get(s, "adapters")))
		printf("Adapters:      (none)\n");
	if (*str(s, "notes"))
		printf("Notes:         %s\n", str(s, "notes"));
}

static void print_list(json_t *arr, void *arg)
{
	json_t *s;
	size_t i;

	(void)arg;
	printf("%-12s %-9s %-16s %-19s %s\n", "NAME", "TYPE", "BRIDGE", "NETWORK", "ADAPTERS");
	json_array_foreach(arr, i, s) {
		const char *net = *str(s, "subnet") ? str(s, "subnet")
				  : *str(s, "address") ? str(s, "address")
				  : *str(s, "adapter") ? str(s, "adapter")
						       : "-";
		printf("%-12s %-9s %-16s %-19s %zu%s\n", str(s, "name"), str(s, "type"),
		       str(s, "bridge"), net, json_array_size(json_object_get(s, "adapters")),
		       json_is_true(json_object_get(s, "up")) ? "" : " (down)");
	}
	if (!json_array_size(arr))
		printf("(no switches: create one with 'cloison switch create NAME --type nat')\n");
}

static void print_done(json_t *resp, void *msg)
{
	(void)resp;
	puts(msg);
}

static void print_removed(json_t *resp, void *arg)
{
	json_t *e;
	size_t i;

	(void)arg;
	printf("Removed switch '%s'.\n", str(resp, "removed"));
	json_array_foreach(json_object_get(resp, "disconnected"), i, e)
		printf("Disconnected VM '%s' network adapter %lld.\n", str(e, "vm"),
		       (long long)json_integer_value(json_object_get(e, "adapter")));
}

static void print_forwards(json_t *arr, void *arg)
{
	json_t *e;
	size_t i;

	(void)arg;
	json_array_foreach(arr, i, e)
		printf("%s %lld -> %s:%lld%s%s\n", str(e, "proto"),
		       (long long)json_integer_value(json_object_get(e, "host_port")),
		       str(e, "address"), (long long)json_integer_value(json_object_get(e, "vm_port")),
		       *str(e, "vm") ? "  VM " : "", str(e, "vm"));
	if (!json_array_size(arr))
		printf("(no port forwards)\n");
}

static void print_leases(json_t *arr, void *arg)
{
	json_t *e;
	size_t i;

	(void)arg;
	printf("%-17s %-15s %s\n", "MAC", "ADDRESS", "HOSTNAME");
	json_array_foreach(arr, i, e)
		printf("%-17s %-15s %s\n", str(e, "mac"), str(e, "address"), str(e, "hostname"));
}

/* ---- verbs ---- */

static int args_exact(int argc, int want, const char *what)
{
	if (argc - optind != want)
		return usage_error("expected %s", what);
	return 0;
}

/* Without the management OS the host loses the adapter: say so first, and
 * on a terminal ask. */
static int confirm_give_up(struct sw_opts *o)
{
	json_t *m = json_object_get(o->body, "allow_management_os");
	char line[16];

	if (!json_is_false(m))
		return 0;
	fprintf(stderr, "cloison: warning: with --no-allow-management-os the host gives adapter "
			"'%s' up to the VMs: the host's addresses on it stop working and connections "
			"through it drop.\n",
		str(o->body, "adapter"));
	if (o->yes || !isatty(0))
		return 0;
	fprintf(stderr, "Continue? [y/N] ");
	if (!fgets(line, sizeof(line), stdin) || (line[0] != 'y' && line[0] != 'Y'))
		return cli_error(CLI_EXIT_ERROR, "nothing was changed");
	return 0;
}

static int verb_create(struct sw_opts *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "adapter", required_argument, NULL, OPT_ADAPTER },
		{ "allow-management-os", no_argument, NULL, OPT_MGMT },
		{ "no-allow-management-os", no_argument, NULL, OPT_NO_MGMT },
		{ "address", required_argument, NULL, OPT_ADDRESS },
		{ "subnet", required_argument, NULL, OPT_SUBNET },
		{ "uplink-bandwidth", required_argument, NULL, OPT_UPLINK_BW },
		{ "notes", required_argument, NULL, OPT_NOTES },
		{ "yes", no_argument, NULL, OPT_YES },
		{ NULL, 0, NULL, 0 },
	};
	int r = parse_opts(o, argc, argv, opts);

	if (r >= 0 || o->help)
		return r;
	if ((r = args_exact(argc, 1, "exactly one switch name")))
		return r;
	if (!json_object_get(o->body, "type"))
		return usage_error("%s", "--type private|internal|external|nat is required");
	if ((r = confirm_give_up(o)))
		return r;
	json_object_set_new(o->body, "name", json_string(argv[optind]));
	return call(o, "POST", "/v1/switches", o->body, print_show, NULL);
}

static int verb_list(struct sw_opts *o, int argc, char **argv)
{
	int r = parse_opts(o, argc, argv, NULL);

	if (r >= 0 || o->help)
		return r;
	if ((r = args_exact(argc, 0, "no arguments")))
		return r;
	return call(o, "GET", "/v1/switches", NULL, print_list, NULL);
}

static int verb_show(struct sw_opts *o, int argc, char **argv)
{
	char path[256];
	int r = parse_opts(o, argc, argv, NULL);

	if (r >= 0 || o->help)
		return r;
	if ((r = args_exact(argc, 1, "exactly one switch name")))
		return r;
	switch_path(path, sizeof(path), argv[optind], "");
	return call(o, "GET", path, NULL, print_show, NULL);
}

static int verb_set(struct sw_opts *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "notes", required_argument, NULL, OPT_NOTES },
		{ NULL, 0, NULL, 0 },
	};
	char path[256];
	int r = parse_opts(o, argc, argv, opts);

	if (r >= 0 || o->help)
		return r;
	if ((r = args_exact(argc, 1, "exactly one switch name")))
		return r;
	if (!json_object_size(o->body))
		return usage_error("%s", "nothing to change: give --notes TEXT");
	switch_path(path, sizeof(path), argv[optind], "");
	return call(o, "PATCH", path, o->body, print_done, "Updated the switch.");
}

static int verb_remove(struct sw_opts *o, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "force", no_argument, NULL, OPT_FORCE },
		{ NULL, 0, NULL, 0 },
	};
	char path[256];
	int r = parse_opts(o, argc, argv, opts);

	if (r >= 0 || o->help)
		return r;
	if ((r = args_exact(argc, 1, "exactly one switch name")))
		return r;
	switch_path(path, sizeof(path), argv[optind], o->force ? "?force=true" : "");
	return call(o, "DELETE", path, NULL, print_removed, NULL);
}

static int verb_leases(struct sw_opts *o, int argc, char **argv)
{
	char path[256];
	int r = parse_opts(o, argc, argv, NULL);

	if (r >= 0 || o->help)
		return r;
	if ((r = args_exact(argc, 1, "exactly one switch name")))
		return r;
	switch_path(path, sizeof(path), argv[optind], "/leases");
	return call(o, "GET", path, NULL, print_leases, NULL);
}

static int parse_port(const char *s, const char *what, long *out)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (!*s || *end || v < 1 || v > 65535)
		return usage_error("%s '%s' must be a port from 1 to 65535", what, s);
	*out = v;
	return 0;
}

/* nat forward add NAME PROTO HOSTPORT VM:PORT | list NAME | remove NAME PROTO HOSTPORT */
static int verb_nat(struct sw_opts *o, int argc, char **argv)
{
	char path[256];
	long hp, vp;
	int r;

	if (argc < 3 || strcmp(argv[1], "forward"))
		return usage_error("%s", "expected 'switch nat forward add|list|remove ...'");
	const char *sub = argv[2];
	argc -= 2;
	argv += 2;
	optind = 1;
	r = parse_opts(o, argc, argv, NULL);
	if (r >= 0 || o->help)
		return r;
	int n = argc - optind;
	char **a = argv + optind;
	if (!strcmp(sub, "list")) {
		if (n != 1)
			return usage_error("%s", "expected 'switch nat forward list NAME'");
		switch_path(path, sizeof(path), a[0], "/forwards");
		return call(o, "GET", path, NULL, print_forwards, NULL);
	}
	if (!strcmp(sub, "add")) {
		if (n != 4)
			return usage_error("%s", "expected 'switch nat forward add NAME tcp|udp HOSTPORT "
						 "VM:PORT' (VM: a VM name or its IPv4 address)");
		char *colon = strrchr(a[3], ':');
		if (!colon || colon == a[3])
			return usage_error("'%s': expected VM:PORT", a[3]);
		*colon = 0;
		if ((r = parse_port(a[2], "HOSTPORT", &hp)) || (r = parse_port(colon + 1, "PORT", &vp)))
			return r;
		json_t *body = json_pack("{s:s, s:i, s:s, s:i}", "proto", a[1], "host_port", (int)hp,
					 "vm", a[3], "vm_port", (int)vp);
		switch_path(path, sizeof(path), a[0], "/forwards");
		r = call(o, "POST", path, body, print_forwards, NULL);
		json_decref(body);
		return r;
	}
	if (!strcmp(sub, "remove")) {
		char suffix[64];
		if (n != 3)
			return usage_error("%s", "expected 'switch nat forward remove NAME tcp|udp HOSTPORT'");
		if ((r = parse_port(a[2], "HOSTPORT", &hp)))
			return r;
		if (strcmp(a[1], "tcp") && strcmp(a[1], "udp"))
			return usage_error("protocol '%s': use tcp or udp", a[1]);
		snprintf(suffix, sizeof(suffix), "/forwards/%s/%ld", a[1], hp);
		switch_path(path, sizeof(path), a[0], suffix);
		return call(o, "DELETE", path, NULL, print_done, "Removed the port forward.");
	}
	return usage_error("unknown verb 'switch nat forward %s' (add, list, remove)", sub);
}

static const struct sw_verb verbs[] = {
	{ "create", verb_create,
	  "NAME --type private|internal|external|nat [options]",
	  "Creates a virtual switch. private: VMs reach each other only; internal: VMs\n"
	  "and the host; external: bridged to a physical adapter; nat: internal plus a\n"
	  "subnet with masquerade, DHCP and DNS (dnsmasq) and port forwards.",
	  "  --adapter IF              external: the physical adapter to bridge\n"
	  "  --allow-management-os     external: the host keeps using the adapter (its\n"
	  "                            addresses and routes move to the switch; default)\n"
	  "  --no-allow-management-os  external: the host gives the adapter up to the VMs\n"
	  "                            (warns first; --yes skips the question)\n"
	  "  --uplink-bandwidth BITS   external: the uplink's speed in bits/s, which the\n"
	  "                            adapters' bandwidth_weight shares out (default:\n"
	  "                            the adapter's own; 1 Gbit/s if it gives none)\n"
	  "  --address A.B.C.D/LEN     internal: the host side's address\n"
	  "  --subnet A.B.C.D/LEN      nat: the subnet (default: a /24 that collides with\n"
	  "                            none of the host's routes); the host is its .1\n"
	  "  --notes TEXT              free text\n" },
	{ "list", verb_list, "", "Lists the switches.", NULL },
	{ "show", verb_show, "NAME", "Shows a switch, its adapters and forwards.", NULL },
	{ "set", verb_set, "NAME --notes TEXT", "Changes a switch's notes.",
	  "  --notes TEXT    free text\n" },
	{ "remove", verb_remove, "NAME [--force]",
	  "Removes a switch. One with network adapters on it is refused unless --force,\n"
	  "which disconnects them (running guests see their link go down).",
	  "  --force         disconnect the adapters on it\n" },
	{ "nat", verb_nat, "forward add NAME tcp|udp HOSTPORT VM:PORT | forward list NAME |\n"
			   "                        forward remove NAME tcp|udp HOSTPORT",
	  "Port forwards of a nat switch: HOSTPORT on the host's addresses goes to PORT of\n"
	  "the VM (a VM name, resolved through its DHCP lease, or an IPv4 address).",
	  NULL },
	{ "leases", verb_leases, "NAME", "Lists a nat switch's DHCP leases.", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

static void verb_usage(FILE *f, const struct sw_verb *v)
{
	fprintf(f, "usage: cloison switch %s %s\n\n%s\n", v->name, v->args, v->summary);
	if (v->help)
		fprintf(f, "\n%s", v->help);
	fprintf(f, "\n  --json          machine-readable output\n"
		   "  --socket PATH   cloisond's socket (default $CLOISON_SOCKET or %s)\n"
		   "  --help          this text\n",
		CLIENT_DEFAULT_SOCKET);
}

static void switch_usage(FILE *f)
{
	fprintf(f, "usage: cloison switch <verb> [<args>]\n\nVerbs:\n");
	for (const struct sw_verb *v = verbs; v->name; v++)
		fprintf(f, "  %-7s %s\n", v->name, v->args);
	fprintf(f, "\nSwitches are host objects: every verb needs a host administrator.\n"
		   "Every verb takes --json, --socket PATH and --help. Exit status: 0 ok,\n"
		   "1 failed, 2 usage, 3 no such switch, 4 refused (exists, has adapters),\n"
		   "5 daemon unreachable, 6 not allowed for this user.\n");
}

int cli_switch(int argc, char **argv)
{
	struct sw_opts o = { 0 };

	if (argc < 2) {
		switch_usage(stderr);
		return cli_error(CLI_EXIT_USAGE, "expected a verb after 'cloison switch'");
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		switch_usage(stdout);
		return CLI_EXIT_OK;
	}
	for (const struct sw_verb *v = verbs; v->name; v++) {
		if (strcmp(v->name, argv[1]))
			continue;
		o.body = json_object();
		optind = 1;
		opterr = 1;
		int r = v->run(&o, argc - 1, argv + 1);
		if (o.help) {
			verb_usage(stdout, v);
			r = CLI_EXIT_OK;
		}
		json_decref(o.body);
		return r;
	}
	switch_usage(stderr);
	return cli_error(CLI_EXIT_USAGE, "unknown verb 'switch %s'", argv[1]);
}
