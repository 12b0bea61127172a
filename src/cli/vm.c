/* cloison vm: create, list, show, set, start, stop, pause, resume, restart,
 * save, discard-saved-state, export, import,
 * remove, console and watch, through cloisond's REST API. Human tables by
 * default, --json everywhere, exit codes from cli.h. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/checkpoint.h"
#include "cli/job.h"
#include "common/util.h"

struct common;

struct verb {
	const char *name;
	int (*run)(struct common *c, int argc, char **argv);
	const char *args;
	const char *summary;
	const char *help; /* verb-specific options */
};

/* Options every verb takes. */
struct common {
	const char *socket;
	bool json;
	struct client client;
	const struct verb *verb;
};

enum {
	OPT_SOCKET = 1000, OPT_JSON, OPT_KERNEL, OPT_INITRD, OPT_CMDLINE, OPT_MEMORY, OPT_CPUS,
	OPT_DISK, OPT_NET, OPT_NOTES, OPT_OPERATOR, OPT_START_ACTION, OPT_STOP_ACTION,
	OPT_START_DELAY, OPT_ADD_DISK, OPT_REMOVE_DISK, OPT_REMOVE_OPERATOR, OPT_NO_INITRD,
	OPT_NO_NET, OPT_TURN_OFF, OPT_TIMEOUT, OPT_COUNT, OPT_HELP, OPT_NO_WAIT,
	OPT_INTEGRATION, OPT_HB_INTERVAL, OPT_CPU_RESERVE, OPT_CPU_LIMIT, OPT_CPU_WEIGHT,
	OPT_DYNAMIC_MEMORY, OPT_MEMORY_MINIMUM, OPT_MEMORY_MAXIMUM, OPT_MEMORY_BUFFER,
	OPT_MEMORY_WEIGHT,
	OPT_CONFIG_VERSION,
};

#define COMMON_OPTS                                                       \
	{ "socket", required_argument, NULL, OPT_SOCKET },                \
	{ "json", no_argument, NULL, OPT_JSON },                          \
	{ "help", no_argument, NULL, OPT_HELP }


static void verb_usage(FILE *f, const struct verb *v)
{
	fprintf(f, "usage: cloison vm %s %s\n\n%s\n", v->name, v->args, v->summary);
	if (v->help && *v->help)
		fprintf(f, "\n%s", v->help);
	fprintf(f, "\n  --json          machine-readable output\n"
		   "  --socket PATH   cloisond's socket (default $CLOISON_SOCKET or %s)\n"
		   "  --help          this text\n",
		CLIENT_DEFAULT_SOCKET);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("cloison: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fprintf(stderr, "(add --help to the command for its options)\n");
	return CLI_EXIT_USAGE;
}

/* Handles the common options; returns -1 if opt was not one of them, else
 * an exit status to return (or 0 to go on). */
static int common_opt(struct common *c, int opt, bool *help)
{
	switch (opt) {
	case OPT_SOCKET: c->socket = optarg; return 0;
	case OPT_JSON: c->json = true; return 0;
	case OPT_HELP: *help = true; return 0;
	case '?': return usage_error("%s", "unknown option or missing argument");
	default: return -1;
	}
}

static void vm_path(char *out, size_t len, const char *name, const char *suffix)
{
	char esc[256];

	client_escape(name, esc, sizeof(esc));
	snprintf(out, len, "/v1/vms/%s%s", esc, suffix);
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (s) {
		puts(s);
		free(s);
	}
}

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static void format_uptime(json_t *v, char *buf, size_t len)
{
	if (!json_is_integer(v)) {
		snprintf(buf, len, "-");
		return;
	}
	unsigned long long s = (unsigned long long)json_integer_value(v) / 1000;
	if (s >= 86400)
		snprintf(buf, len, "%llud %02llu:%02llu:%02llu", s / 86400, s / 3600 % 24, s / 60 % 60,
			 s % 60);
	else
		snprintf(buf, len, "%02llu:%02llu:%02llu", s / 3600, s / 60 % 60, s % 60);
}

/* ---- body builders shared by create and set ---- */

static int net_bool(json_t *nic, const char *key, const char *v, const char *spec)
{
	if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1"))
		json_object_set_new(nic, key, json_true());
	else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0"))
		json_object_set_new(nic, key, json_false());
	else
		return usage_error("--net %s: %s must be on or off", spec, key);
	return 0;
}

#define NET_SPEC "tap=NAME|switch=SWITCH[,mac=MAC][,vlan=N][,mac_spoofing=on|off]" \
		 "[,dhcp_guard=on|off][,router_guard=on|off][,bandwidth_max=BITS]" \
		 "[,bandwidth_weight=0-100][,port_mirroring=none|source|destination]"

/* --net: tap=NAME or switch=SWITCH, then the MAC and the port settings. */
static int parse_nic_spec(json_t *nic, const char *spec)
{
	static const char *const bools[] = { "mac_spoofing", "dhcp_guard", "router_guard" };
	char tmp[256], *save = NULL;

	snprintf(tmp, sizeof(tmp), "%s", spec);
	for (char *kv = strtok_r(tmp, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '=');
		unsigned i;
		if (!v)
			return usage_error("--net %s: expected %s", spec, NET_SPEC);
		*v++ = 0;
		for (i = 0; i < 3 && strcmp(kv, bools[i]); i++)
			;
		if (i < 3) {
			if (net_bool(nic, kv, v, spec))
				return CLI_EXIT_USAGE;
		} else if (!strcmp(kv, "tap") || !strcmp(kv, "mac")) {
			json_object_set_new(nic, kv, json_string(v));
		} else if (!strcmp(kv, "switch")) {
			json_object_set_new(nic, "switch", json_string(v));
		} else if (!strcmp(kv, "port_mirroring")) {
			if (strcmp(v, "none") && strcmp(v, "source") && strcmp(v, "destination"))
				return usage_error("--net %s: port_mirroring must be none, source or "
						   "destination", spec);
			json_object_set_new(nic, kv, json_string(v));
		} else if (!strcmp(kv, "vlan") || !strcmp(kv, "bandwidth_max") ||
			   !strcmp(kv, "bandwidth_weight")) {
			char *end;
			long long n = strtoll(v, &end, 10);
			if (!*v || *end || n < 0)
				return usage_error("--net %s: %s must be a number", spec, kv);
			json_object_set_new(nic, kv, json_integer(n));
		} else {
			return usage_error("--net %s: unknown setting '%s' (expected %s)", spec, kv,
					   NET_SPEC);
		}
	}
	if (!json_object_get(nic, "tap") && !json_object_get(nic, "switch"))
		return usage_error("--net %s: expected %s", spec, NET_SPEC);
	return 0;
}

static int add_net(json_t *nics, const char *spec)
{
	json_t *nic = json_object();
	int r = parse_nic_spec(nic, spec);

	if (r) {
		json_decref(nic);
		return r;
	}
	json_array_append_new(nics, nic);
	return 0;
}

static int abs_path(const char *opt, const char *p, json_t **out)
{
	char buf[PATH_MAX];

	if (p[0] == '/') {
		*out = json_string(p);
		return 0;
	}
	if (!realpath(p, buf)) {
		cli_error(CLI_EXIT_USAGE, "%s %s: %s", opt, p, strerror(errno));
		return CLI_EXIT_USAGE;
	}
	*out = json_string(buf);
	return 0;
}

/* Applies one create/set option to body; -1 if opt is not a config option. */
/* --integration NAME=on|off: one service in the body's "integration". */
static int integration_opt(json_t *body, const char *arg)
{
	const char *eq = strchr(arg, '=');
	json_t *obj = json_object_get(body, "integration");
	char name[32];

	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(name) ||
	    (strcmp(eq + 1, "on") && strcmp(eq + 1, "off")))
		return usage_error("--integration %s: expected NAME=on or NAME=off (NAME: shutdown, "
				   "heartbeat, timesync, kvp, copy, backup)", arg);
	memcpy(name, arg, (size_t)(eq - arg));
	name[eq - arg] = 0;
	if (!obj) {
		obj = json_object();
		json_object_set_new(body, "integration", obj);
	}
	json_object_set_new(obj, name, json_boolean(!strcmp(eq + 1, "on")));
	return 0;
}

static int config_opt(json_t *body, int opt, const char *arg)
{
	uint64_t n;
	json_t *v;
	int r;

	switch (opt) {
	case OPT_KERNEL:
	case OPT_INITRD:
		if ((r = abs_path(opt == OPT_KERNEL ? "--kernel" : "--initrd", arg, &v)))
			return r;
		json_object_set_new(body, opt == OPT_KERNEL ? "kernel" : "initrd", v);
		return 0;
	case OPT_NO_INITRD:
		json_object_set_new(body, "initrd", json_null());
		return 0;
	case OPT_CMDLINE:
		json_object_set_new(body, "cmdline", json_string(arg));
		return 0;
	case OPT_MEMORY:
		if (parse_size(arg, MiB, &n))
			return usage_error("--memory %s: expected a size like 512M or 2G", arg);
		json_object_set_new(body, "memory", json_integer((json_int_t)n));
		return 0;
	case OPT_CPUS:
	case OPT_START_DELAY:
		if (parse_u64(arg, &n) || n > 1000000)
			return usage_error("expected a number, got '%s'", arg);
		json_object_set_new(body, opt == OPT_CPUS ? "cpus" : "automatic_start_delay",
				    json_integer((json_int_t)n));
		return 0;
	case OPT_CONFIG_VERSION:
		/* New-VM -Version; the daemon checks it */
		json_object_set_new(body, "version", json_string(arg));
		return 0;
	case OPT_DISK:
	case OPT_ADD_DISK:
	case OPT_REMOVE_DISK: {
		const char *key = opt == OPT_DISK ? "disks"
				  : opt == OPT_ADD_DISK ? "add_disks" : "remove_disks";
		char path[PATH_MAX];
		bool ro = false;
		snprintf(path, sizeof(path), "%s", arg);
		char *comma = strrchr(path, ',');
		if (comma && !strcmp(comma, ",readonly") && opt != OPT_REMOVE_DISK) {
			*comma = 0;
			ro = true;
		}
		if ((r = abs_path("--disk", path, &v)))
			return r;
		if (!json_object_get(body, key))
			json_object_set_new(body, key, json_array());
		if (opt == OPT_REMOVE_DISK)
			json_array_append_new(json_object_get(body, key), v);
		else
			json_array_append_new(json_object_get(body, key),
					      json_pack("{s:o, s:b}", "path", v, "readonly", ro));
		return 0;
	}
	case OPT_NET:
		if (!json_object_get(body, "network_adapters"))
			json_object_set_new(body, "network_adapters", json_array());
		return add_net(json_object_get(body, "network_adapters"), arg);
	case OPT_NO_NET:
		json_object_set_new(body, "network_adapters", json_array());
		return 0;
	case OPT_NOTES:
		json_object_set_new(body, "notes", json_string(arg));
		return 0;
	case OPT_OPERATOR:
	case OPT_REMOVE_OPERATOR: {
		const char *key = opt == OPT_OPERATOR ? "add_operators" : "remove_operators";
		if (!json_object_get(body, key))
			json_object_set_new(body, key, json_array());
		json_array_append_new(json_object_get(body, key), json_string(arg));
		return 0;
	}
	case OPT_START_ACTION:
		json_object_set_new(body, "automatic_start_action", json_string(arg));
		return 0;
	case OPT_STOP_ACTION:
		json_object_set_new(body, "automatic_stop_action", json_string(arg));
		return 0;
	case OPT_INTEGRATION:
		return integration_opt(body, arg);
	case OPT_HB_INTERVAL: {
		uint64_t secs;

		if (parse_u64(arg, &secs) || secs < 1 || secs > 3600)
			return usage_error("--heartbeat-interval %s: expected seconds from 1 to 3600",
					   arg);
		json_object_set_new(body, "heartbeat_interval", json_integer((json_int_t)secs));
		return 0;
	}
	case OPT_CPU_RESERVE:
	case OPT_CPU_LIMIT:
	case OPT_CPU_WEIGHT: {
		static const char *const keys[] = { "cpu_reserve", "cpu_limit", "cpu_weight" };
		static const char *const names[] = { "--cpu-reserve", "--cpu-limit", "--cpu-weight" };
		unsigned k = (unsigned)(opt - OPT_CPU_RESERVE);
		uint64_t lo = k == 0 ? 0 : 1, hi = k == 2 ? 10000 : 100, pct;

		if (parse_u64(arg, &pct) || pct < lo || pct > hi)
			return usage_error("%s %s: expected %s from %llu to %llu", names[k], arg,
					   k == 2 ? "a relative weight" : "a percentage of the VM's vCPUs",
					   (unsigned long long)lo, (unsigned long long)hi);
		json_object_set_new(body, keys[k], json_integer((json_int_t)pct));
		return 0;
	}
	case OPT_DYNAMIC_MEMORY:
		if (strcmp(arg, "on") && strcmp(arg, "off"))
			return usage_error("--dynamic-memory %s: expected on or off", arg);
		json_object_set_new(body, "dynamic_memory", json_boolean(!strcmp(arg, "on")));
		return 0;
	case OPT_MEMORY_MINIMUM:
	case OPT_MEMORY_MAXIMUM: {
		bool min = opt == OPT_MEMORY_MINIMUM;

		if (!strcmp(arg, "startup")) {
			json_object_set_new(body, min ? "memory_minimum" : "memory_maximum",
					    json_null());
			return 0;
		}
		if (parse_size(arg, MiB, &n))
			return usage_error("%s %s: expected a size like 512M or 2G, or startup",
					   min ? "--memory-minimum" : "--memory-maximum", arg);
		json_object_set_new(body, min ? "memory_minimum" : "memory_maximum",
				    json_integer((json_int_t)n));
		return 0;
	}
	case OPT_MEMORY_BUFFER:
	case OPT_MEMORY_WEIGHT: {
		bool buf = opt == OPT_MEMORY_BUFFER;

		if (parse_u64(arg, &n) || n > (buf ? 2000 : 100) || (buf && n < 5))
			return usage_error("%s %s: expected %s", buf ? "--memory-buffer" : "--memory-weight",
					   arg, buf ? "a percentage from 5 to 2000"
						    : "a weight from 0 to 100");
		json_object_set_new(body, buf ? "memory_buffer" : "memory_weight",
				    json_integer((json_int_t)n));
		return 0;
	}
	default:
		return -1;
	}
}

#define CONFIG_OPTS                                                             \
	{ "kernel", required_argument, NULL, OPT_KERNEL },                      \
	{ "initrd", required_argument, NULL, OPT_INITRD },                      \
	{ "integration", required_argument, NULL, OPT_INTEGRATION },            \
	{ "heartbeat-interval", required_argument, NULL, OPT_HB_INTERVAL },     \
	{ "cpu-reserve", required_argument, NULL, OPT_CPU_RESERVE },            \
	{ "cpu-limit", required_argument, NULL, OPT_CPU_LIMIT },                \
	{ "cpu-weight", required_argument, NULL, OPT_CPU_WEIGHT },              \
	{ "dynamic-memory", required_argument, NULL, OPT_DYNAMIC_MEMORY },      \
	{ "memory-minimum", required_argument, NULL, OPT_MEMORY_MINIMUM },      \
	{ "memory-maximum", required_argument, NULL, OPT_MEMORY_MAXIMUM },      \
	{ "memory-buffer", required_argument, NULL, OPT_MEMORY_BUFFER },        \
	{ "memory-weight", required_argument, NULL, OPT_MEMORY_WEIGHT },        \
	{ "cmdline", required_argument, NULL, OPT_CMDLINE },                    \
	{ "memory", required_argument, NULL, OPT_MEMORY },                      \
	{ "cpus", required_argument, NULL, OPT_CPUS },                          \
	{ "net", required_argument, NULL, OPT_NET },                            \
	{ "notes", required_argument, NULL, OPT_NOTES },                        \
	{ "operator", required_argument, NULL, OPT_OPERATOR },                  \
	{ "automatic-start-action", required_argument, NULL, OPT_START_ACTION },\
	{ "automatic-start-delay", required_argument, NULL, OPT_START_DELAY },  \
	{ "automatic-stop-action", required_argument, NULL, OPT_STOP_ACTION }

#define CONFIG_HELP                                                                          \
	"  --kernel PATH   kernel to boot directly (bzImage, vmlinux or PVH ELF)\n"             \
	"  --initrd PATH   initial ramdisk\n"                                                   \
	"  --cmdline STR   kernel command line\n"                                               \
	"  --memory SIZE   guest RAM (M is the default unit: 512, 512M, 2G; default 256M)\n"   \
	"  --cpus N        virtual processors (default 1)\n"                                    \
	"  --net tap=NAME[,mac=MAC]   a network adapter on a tap device (repeatable;\n"         \
	"                  without mac= one is allocated from the MAC pool)\n"                  \
	"  --net switch=SWITCH[,mac=MAC][,vlan=N][,mac_spoofing=on][,dhcp_guard=on]\n"          \
	"        [,router_guard=on][,bandwidth_max=BITS][,bandwidth_weight=0-100]\n"          \
	"        [,port_mirroring=none|source|destination]\n"                                 \
	"                  an adapter on a cloisond switch (bandwidth_weight: its minimum\n"   \
	"                  share of an external switch's uplink when it is busy; a\n"         \
	"                  destination port gets a copy of every frame its switch's source\n" \
	"                  ports send or receive)\n"                                         \
	"  --notes TEXT    free text\n"                                                         \
	"  --operator USER delegate the VM to USER (a VM operator; repeatable)\n"               \
	"  --automatic-start-action nothing|start    when cloisond starts\n"                    \
	"  --automatic-start-delay S                 seconds to wait before that start\n"      \
	"  --automatic-stop-action keep-running|shutdown|turn-off|save   when cloisond stops\n"  \
	"  --integration NAME=on|off   an integration service (shutdown, heartbeat,\n"         \
	"                  timesync, kvp, copy, backup; all on but copy by default)\n"          \
	"  --heartbeat-interval S   no heartbeat answer for S s: lost (default 5)\n"          \
	"  --cpu-reserve PCT   percent of its vCPUs held for the VM: a start that would\n"    \
	"                  over-commit the host's reserves is refused (default 0)\n"         \
	"  --cpu-limit PCT     percent of its vCPUs' capacity the VM may use (default 100)\n" \
	"  --cpu-weight N      its share under contention, 1-10000 (default 100)\n" \
	"  --dynamic-memory on|off   the balancer moves the guest's memory between the\n" \
	"                  minimum and the maximum by its demand (virtio-balloon; the\n" \
	"                  guest needs a balloon driver; --memory is the startup memory)\n" \
	"  --memory-minimum SIZE|startup   the least it is given (default startup)\n" \
	"  --memory-maximum SIZE|startup   the most; the guest sees this much RAM\n" \
	"                  (default startup)\n" \
	"  --memory-buffer PCT   memory added to the demand, 5-2000 (default 20)\n" \
	"  --memory-weight N     0-100 (default 50): under pressure, a VM gives up\n" \
	"                  memory in inverse proportion to its weight\n"

/* ---- verbs ---- */

static int connect_or_fail(struct common *c)
{
	return client_init(&c->client, c->socket);
}

static void print_vm_summary(json_t *vm, const char *verb)
{
	const char *reason = str(vm, "reason");
	printf("VM '%s' %s: %s%s%s%s\n", str(vm, "name"), verb, str(vm, "state"),
	       *reason ? " (" : "", reason, *reason ? ")" : "");
}

static int verb_create(struct common *c, int argc, char **argv)
{
	static const struct option opts[] = { COMMON_OPTS, CONFIG_OPTS,
					      { "disk", required_argument, NULL, OPT_DISK },
					      { "config-version", required_argument, NULL,
						OPT_CONFIG_VERSION },
					      { NULL, 0, NULL, 0 } };
	json_t *body = json_object(), *resp;
	bool help = false;
	int o, r;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if ((r = common_opt(c, o, &help)) < 0)
			r = config_opt(body, o, optarg);
		if (r > 0) {
			json_decref(body);
			return r;
		}
	}
	if (help) {
		json_decref(body);
		verb_usage(stdout, c->verb);
		return CLI_EXIT_OK;
	}
	if (optind + 1 != argc) {
		json_decref(body);
		return usage_error("%s", "expected exactly one VM name");
	}
	if (!json_object_get(body, "kernel")) {
		json_decref(body);
		return usage_error("%s", "--kernel PATH is required (direct kernel boot)");
	}
	json_object_set_new(body, "name", json_string(argv[optind]));
	/* --operator on create sets the list. */
	json_t *ops = json_object_get(body, "add_operators");
	if (ops) {
		json_object_set(body, "operators", ops);
		json_object_del(body, "add_operators");
	}
	if ((r = connect_or_fail(c)) || (r = client_call(&c->client, "POST", "/v1/vms", body, &resp))) {
		json_decref(body);
		return r;
	}
	json_decref(body);
	if (c->json)
		print_json(resp);
	else
		printf("Created VM '%s' (%s) in state %s.\n", str(resp, "name"), str(resp, "id"),
		       str(resp, "state"));
	json_decref(resp);
	return CLI_EXIT_OK;
}

/* Parses a verb that takes only the common options and n_names names. */
static int simple_args(struct common *c, int argc, char **argv, int min_names, int max_names,
		       const struct option *extra, int (*on_extra)(int o, void *), void *opaque)
{
	struct option opts[16] = { COMMON_OPTS };
	bool help = false;
	int n = 3, o, r;

	for (const struct option *e = extra; e && e->name && n < 15; e++)
		opts[n++] = *e;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if ((r = common_opt(c, o, &help)) < 0)
			r = on_extra ? on_extra(o, opaque) : usage_error("%s", "unknown option");
		if (r > 0)
			return r;
	}
	if (help) {
		verb_usage(stdout, c->verb);
		return -1;
	}
	int names = argc - optind;
	if (names < min_names || names > max_names)
		return usage_error("%s", max_names == 0   ? "this command takes no names"
					 : min_names == 0 ? "expected at most one VM name"
							  : "expected exactly one VM name");
	return connect_or_fail(c);
}

static int verb_list(struct common *c, int argc, char **argv)
{
	json_t *resp;
	size_t i;
	json_t *vm;
	int r = simple_args(c, argc, argv, 0, 0, NULL, NULL, NULL);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	if ((r = client_call(&c->client, "GET", "/v1/vms", NULL, &resp)))
		return r;
	if (c->json) {
		print_json(resp);
		json_decref(resp);
		return CLI_EXIT_OK;
	}
	size_t w = 4;
	json_array_foreach(resp, i, vm) w = MAX(w, strlen(str(vm, "name")));
	printf("%-*s  %-8s  %4s  %9s  %-11s  %s\n", (int)w, "NAME", "STATE", "CPUS", "MEMORY",
	       "UPTIME", "ID");
	json_array_foreach(resp, i, vm) {
		char mem[32], up[32];
		format_size((uint64_t)json_integer_value(json_object_get(vm, "memory")), mem,
			    sizeof(mem));
		format_uptime(json_object_get(vm, "uptime_ms"), up, sizeof(up));
		printf("%-*s  %-8s  %4lld  %9s  %-11s  %s\n", (int)w, str(vm, "name"),
		       str(vm, "state"), (long long)json_integer_value(json_object_get(vm, "cpus")),
		       mem, up, str(vm, "id"));
	}
	if (!json_array_size(resp))
		printf("(no VMs: create one with 'cloison vm create NAME --kernel PATH')\n");
	json_decref(resp);
	return CLI_EXIT_OK;
}

/* One adapter: its tap or switch (with its addresses), MAC and settings. */
static void show_nic(size_t i, json_t *e)
{
	json_t *ip, *sw = json_object_get(e, "switch");
	size_t k;

	if (json_is_string(sw))
		printf("Network %zu:     switch %s, MAC %s%s", i, json_string_value(sw), str(e, "mac"),
		       json_is_true(json_object_get(e, "mac_auto")) ? " (automatic)" : "");
	else if (*str(e, "tap"))
		printf("Network %zu:     tap %s, MAC %s%s", i, str(e, "tap"), str(e, "mac"),
		       json_is_true(json_object_get(e, "mac_auto")) ? " (automatic)" : "");
	else
		printf("Network %zu:     not connected, MAC %s", i, str(e, "mac"));
	if (json_integer_value(json_object_get(e, "vlan")))
		printf(", VLAN %lld", (long long)json_integer_value(json_object_get(e, "vlan")));
	if (json_integer_value(json_object_get(e, "bandwidth_max")))
		printf(", at most %lld bit/s",
		       (long long)json_integer_value(json_object_get(e, "bandwidth_max")));
	if (json_integer_value(json_object_get(e, "bandwidth_weight")))
		printf(", bandwidth weight %lld",
		       (long long)json_integer_value(json_object_get(e, "bandwidth_weight")));
	if (*str(e, "port_mirroring") && strcmp(str(e, "port_mirroring"), "none"))
		printf(", port mirroring %s", str(e, "port_mirroring"));
	json_array_foreach(json_object_get(e, "ip_addresses"), k, ip)
		printf("%s%s", k ? " " : ", IP ", json_string_value(ip));
	printf("\n");
}

/* Hyper-V Manager's integration services and networking panes. */
static void show_integration(json_t *is)
{
	const char *key;
	json_t *v, *guest = json_object_get(is, "guest");

	if (!is)
		return;
	printf("Integration:   ");
	size_t i = 0;
	json_object_foreach(json_object_get(is, "enabled"), key, v)
		if (json_is_true(v))
			printf("%s%s", i++ ? ", " : "", key);
	printf("%s\n", i ? "" : "(none)");
	printf("Heartbeat:     %s%s%s\n", str(is, "heartbeat"),
	       json_is_string(json_object_get(is, "last_heartbeat")) ? ", last " : "",
	       str(is, "last_heartbeat"));
	if (json_is_string(json_object_get(is, "agent_version")))
		printf("Agent:         %s (protocol %s)\n", str(is, "agent"), str(is, "agent_version"));
	json_object_foreach(guest, key, v)
		if (json_is_string(v))
			printf("Guest %-8s %s\n", key, json_string_value(v));
	json_object_foreach(json_object_get(guest, "ip_addresses"), key, v) {
		printf("Guest IP %-5s ", key);
		for (size_t k = 0; k < json_array_size(v); k++)
			printf("%s%s", k ? ", " : "", json_string_value(json_array_get(v, k)));
		printf("\n");
	}
	json_object_foreach(json_object_get(is, "host_kvp"), key, v)
		printf("Host KVP:      %s=%s\n", key, json_string_value(v));
}

static void show_human(json_t *vm)
{
	char mem[32], up[32];
	size_t i;
	json_t *e;

	format_size((uint64_t)json_integer_value(json_object_get(vm, "memory")), mem, sizeof(mem));
	format_uptime(json_object_get(vm, "uptime_ms"), up, sizeof(up));
	printf("Name:          %s\n", str(vm, "name"));
	printf("Id:            %s\n", str(vm, "id"));
	printf("State:         %s%s%s%s\n", str(vm, "state"), *str(vm, "reason") ? " (" : "",
	       str(vm, "reason"), *str(vm, "reason") ? ")" : "");
	if (json_is_integer(json_object_get(vm, "pid")))
		printf("Worker pid:    %lld\n", (long long)json_integer_value(json_object_get(vm, "pid")));
	printf("Uptime:        %s\n", up);
	printf("Generation:    %lld\n", (long long)json_integer_value(json_object_get(vm, "generation")));
	printf("Version:       %s\n", str(vm, "version"));
	json_t *gd = json_object_get(json_object_get(vm, "features"), "generation_id_device");
	if (json_is_true(json_object_get(gd, "present")))
		printf("Generation ID: %s\n", str(vm, "generation_id"));
	else if (gd)
		printf("Generation ID: no device: %s\n", str(gd, "why"));
	printf("Processors:    %lld (reserve %lld%%, limit %lld%%, weight %lld)\n",
	       (long long)json_integer_value(json_object_get(vm, "cpus")),
	       (long long)json_integer_value(json_object_get(vm, "cpu_reserve")),
	       (long long)json_integer_value(json_object_get(vm, "cpu_limit")),
	       (long long)json_integer_value(json_object_get(vm, "cpu_weight")));
	printf("Memory:        %s\n", mem);
	if (json_is_true(json_object_get(vm, "dynamic_memory"))) {
		char lo[32], hi[32];
		json_t *mn = json_object_get(vm, "memory_minimum"), *mx = json_object_get(vm, "memory_maximum");

		format_size(json_is_integer(mn) ? (uint64_t)json_integer_value(mn)
						 : (uint64_t)json_integer_value(json_object_get(vm, "memory")),
			    lo, sizeof(lo));
		format_size(json_is_integer(mx) ? (uint64_t)json_integer_value(mx)
						 : (uint64_t)json_integer_value(json_object_get(vm, "memory")),
			    hi, sizeof(hi));
		printf("Dynamic memory: on (minimum %s, maximum %s, buffer %lld%%, weight %lld)\n", lo,
		       hi, (long long)json_integer_value(json_object_get(vm, "memory_buffer")),
		       (long long)json_integer_value(json_object_get(vm, "memory_weight")));
		if (json_is_integer(json_object_get(vm, "memory_assigned"))) {
			char as[32], dm[32] = "unknown";

			format_size((uint64_t)json_integer_value(json_object_get(vm, "memory_assigned")),
				    as, sizeof(as));
			if (json_is_integer(json_object_get(vm, "memory_demand")))
				format_size((uint64_t)json_integer_value(
						    json_object_get(vm, "memory_demand")),
					    dm, sizeof(dm));
			printf("Assigned memory: %s\nMemory demand: %s\n", as, dm);
		}
	}
	printf("Kernel:        %s\n", str(vm, "kernel"));
	if (json_is_string(json_object_get(vm, "initrd")))
		printf("Initrd:        %s\n", str(vm, "initrd"));
	printf("Command line:  %s\n", str(vm, "cmdline"));
	json_array_foreach(json_object_get(vm, "disks"), i, e)
		printf("Disk %zu:        %s%s\n", i, str(e, "path"),
		       json_is_true(json_object_get(e, "readonly")) ? " (read-only)" : "");
	json_array_foreach(json_object_get(vm, "network_adapters"), i, e)
		show_nic(i, e);
	printf("Start action:  %s (delay %lld s)\n", str(vm, "automatic_start_action"),
	       (long long)json_integer_value(json_object_get(vm, "automatic_start_delay")));
	printf("Stop action:   %s\n", str(vm, "automatic_stop_action"));
	printf("Operators:     ");
	json_array_foreach(json_object_get(vm, "operators"), i, e)
		printf("%s%s", i ? ", " : "", json_string_value(e));
	printf("%s\n", json_array_size(json_object_get(vm, "operators")) ? "" : "(none)");
	if (*str(vm, "notes"))
		printf("Notes:         %s\n", str(vm, "notes"));
	show_integration(json_object_get(vm, "integration_services"));
	printf("Created:       %s\n", str(vm, "created"));
	printf("Configuration: %s\n", str(vm, "config_path"));
}

static int verb_show(struct common *c, int argc, char **argv)
{
	char path[512];
	json_t *resp;
	int r = simple_args(c, argc, argv, 1, 1, NULL, NULL, NULL);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	vm_path(path, sizeof(path), argv[optind], "");
	if ((r = client_call(&c->client, "GET", path, NULL, &resp)))
		return r;
	if (c->json)
		print_json(resp);
	else
		show_human(resp);
	json_decref(resp);
	return CLI_EXIT_OK;
}

enum { OPT_CONNECT = 1900, OPT_DISCONNECT };

/* --connect N=SWITCH / --disconnect N, collected as [N, "SWITCH"|null]. */
static int connect_opt(json_t *moves, bool connect, const char *arg)
{
	char *end;
	unsigned long n = strtoul(arg, &end, 10);

	if (end == arg || (connect ? *end != '=' || !end[1] : *end != 0))
		return usage_error(connect ? "--connect %s: expected N=SWITCH (N: the adapter's "
					     "number in 'vm show')"
					   : "--disconnect %s: expected N, the adapter's number",
				   arg);
	json_array_append_new(moves, json_pack("[i, s?]", (int)n, connect ? end + 1 : NULL));
	return 0;
}

/* Connects or disconnects each adapter of moves, in order, on a running
 * VM too (its guest sees the link go down and up); *resp: the last VM. */
static int run_moves(struct common *c, const char *name, json_t *moves, json_t **resp)
{
	char path[512], suffix[64];
	json_t *m;
	size_t i;
	int r = CLI_EXIT_OK;

	*resp = NULL;
	json_array_foreach(moves, i, m) {
		json_t *body = json_pack("{s:O}", "switch", json_array_get(m, 1));
		snprintf(suffix, sizeof(suffix), "/network-adapters/%lld/connect",
			 (long long)json_integer_value(json_array_get(m, 0)));
		vm_path(path, sizeof(path), name, suffix);
		json_decref(*resp);
		*resp = NULL;
		r = client_call(&c->client, "POST", path, body, resp);
		json_decref(body);
		if (r)
			break;
	}
	return r;
}

static int verb_set(struct common *c, int argc, char **argv)
{
	static const struct option opts[] = {
		COMMON_OPTS, CONFIG_OPTS,
		{ "add-disk", required_argument, NULL, OPT_ADD_DISK },
		{ "remove-disk", required_argument, NULL, OPT_REMOVE_DISK },
		{ "remove-operator", required_argument, NULL, OPT_REMOVE_OPERATOR },
		{ "no-initrd", no_argument, NULL, OPT_NO_INITRD },
		{ "no-net", no_argument, NULL, OPT_NO_NET },
		{ "connect", required_argument, NULL, OPT_CONNECT },
		{ "disconnect", required_argument, NULL, OPT_DISCONNECT },
		{ NULL, 0, NULL, 0 },
	};
	json_t *body = json_object(), *resp, *moves = json_array();
	char path[512];
	bool help = false;
	int o, r = 0;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == OPT_CONNECT || o == OPT_DISCONNECT)
			r = connect_opt(moves, o == OPT_CONNECT, optarg);
		else if ((r = common_opt(c, o, &help)) < 0)
			r = config_opt(body, o, optarg);
		if (r > 0)
			goto out;
	}
	r = CLI_EXIT_OK;
	if (help) {
		verb_usage(stdout, c->verb);
		goto out;
	}
	if (optind + 1 != argc) {
		r = usage_error("%s", "expected exactly one VM name");
		goto out;
	}
	if (!json_object_size(body) && !json_array_size(moves)) {
		r = usage_error("%s", "nothing to change: give at least one option");
		goto out;
	}
	if ((r = connect_or_fail(c)))
		goto out;
	if (json_array_size(moves)) {
		if ((r = run_moves(c, argv[optind], moves, &resp)))
			goto out;
		if (json_object_size(body))
			json_decref(resp);
	}
	vm_path(path, sizeof(path), argv[optind], "");
	if (json_object_size(body) &&
	    (r = client_call(&c->client, "PATCH", path, body, &resp)))
		goto out;
	if (c->json)
		print_json(resp);
	else
		printf("Updated VM '%s'.\n", str(resp, "name"));
	json_decref(resp);
out:
	json_decref(moves);
	json_decref(body);
	return r;
}

static int do_action(struct common *c, const char *name, const char *action, json_t *body,
		     const char *done)
{
	char path[512];
	json_t *resp;
	int r;

	vm_path(path, sizeof(path), name, action);
	if ((r = client_call(&c->client, "POST", path, body ? body : NULL, &resp)))
		return r;
	if (c->json)
		print_json(resp);
	else
		print_vm_summary(resp, done);
	json_decref(resp);
	return CLI_EXIT_OK;
}

#define ACTION_VERB(fn, action, done)                                          \
	static int fn(struct common *c, int argc, char **argv)                 \
	{                                                                      \
		int r = simple_args(c, argc, argv, 1, 1, NULL, NULL, NULL);    \
		if (r)                                                         \
			return r < 0 ? CLI_EXIT_OK : r;                        \
		return do_action(c, argv[optind], action, NULL, done);         \
	}

ACTION_VERB(verb_start, "/start", "started, now")
ACTION_VERB(verb_pause, "/pause", "paused, now")
ACTION_VERB(verb_resume, "/resume", "resumed, now")
ACTION_VERB(verb_restart, "/restart", "restarted, now")

static int no_wait_opt(int o, void *opaque)
{
	if (o != OPT_NO_WAIT)
		return usage_error("%s", "unknown option");
	*(bool *)opaque = true;
	return 0;
}

/* Runs a job the daemon starts with POST suffix on VM name: follows it
 * (a progress bar on a terminal), then prints the VM as the verb's result;
 * with --no-wait prints the job's id (its JSON with --json) at once. */
static int run_vm_job(struct common *c, const char *name, const char *suffix, json_t *body,
		      bool no_wait, const char *done)
{
	char path[512];
	json_t *job, *resp;
	int r;

	vm_path(path, sizeof(path), name, suffix);
	if ((r = cli_job_start(&c->client, "POST", path, body, &job)))
		return r;
	if (no_wait) {
		if (c->json)
			print_json(job);
		else
			printf("%s\n", str(job, "id"));
		json_decref(job);
		return CLI_EXIT_OK;
	}
	r = cli_job_follow(&c->client, str(job, "id"), false, NULL);
	if (r == CLI_EXIT_OK) {
		vm_path(path, sizeof(path), name, "");
		r = client_call(&c->client, "GET", path, NULL, &resp);
		if (r == CLI_EXIT_OK) {
			json_object_set_new(resp, "job", json_string(str(job, "id")));
			if (c->json)
				print_json(resp);
			else
				print_vm_summary(resp, done);
			json_decref(resp);
		}
	}
	json_decref(job);
	return r;
}

static int verb_save(struct common *c, int argc, char **argv)
{
	static const struct option extra[] = { { "no-wait", no_argument, NULL, OPT_NO_WAIT },
					       { NULL, 0, NULL, 0 } };
	bool no_wait = false;
	int r = simple_args(c, argc, argv, 1, 1, extra, no_wait_opt, &no_wait);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	return run_vm_job(c, argv[optind], "/save", NULL, no_wait, "saved, now");
}

/* `vm checkpoint VERB NAME ...` is `checkpoint VERB NAME ...`, and `vm
 * checkpoint NAME [--name CP]` is `checkpoint create NAME ...` (a VM named
 * like a verb: `vm checkpoint create NAME`). */
static int verb_checkpoint(struct common *c, int argc, char **argv)
{
	char *args[64] = { "checkpoint", "create" };
	int n = 2, first = 1;

	if (argc > 2 && cli_checkpoint_is_verb(argv[1]) && argv[2][0] != '-') {
		args[1] = argv[1];
		first = 2;
	}
	for (int i = first; i < argc && n < 63; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	return cli_checkpoint(n, args);
}

static int verb_discard_saved(struct common *c, int argc, char **argv)
{
	char path[512];
	json_t *resp;
	int r = simple_args(c, argc, argv, 1, 1, NULL, NULL, NULL);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	vm_path(path, sizeof(path), argv[optind], "/saved-state");
	if ((r = client_call(&c->client, "DELETE", path, NULL, &resp)))
		return r;
	if (c->json)
		print_json(resp);
	else
		print_vm_summary(resp, "discarded its saved state, now");
	json_decref(resp);
	return CLI_EXIT_OK;
}

struct stop_args {
	bool turn_off;
	long timeout;
};

static int stop_opt(int o, void *opaque)
{
	struct stop_args *a = opaque;
	uint64_t n;

	if (o == OPT_TURN_OFF) {
		a->turn_off = true;
		return 0;
	}
	if (o == OPT_TIMEOUT) {
		if (parse_u64(optarg, &n) || n > 86400)
			return usage_error("--timeout %s: expected seconds (0-86400)", optarg);
		a->timeout = (long)n;
		return 0;
	}
	return usage_error("%s", "unknown option");
}

static int verb_stop(struct common *c, int argc, char **argv)
{
	static const struct option extra[] = {
		{ "turn-off", no_argument, NULL, OPT_TURN_OFF },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ NULL, 0, NULL, 0 },
	};
	struct stop_args a = { .timeout = -1 };
	int r = simple_args(c, argc, argv, 1, 1, extra, stop_opt, &a);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	json_t *body = json_pack("{s:b}", "turn_off", a.turn_off);
	if (a.timeout >= 0)
		json_object_set_new(body, "timeout", json_integer(a.timeout));
	char path[512];
	json_t *resp;
	vm_path(path, sizeof(path), argv[optind], "/stop");
	r = client_call(&c->client, "POST", path, body, &resp);
	json_decref(body);
	if (r)
		return r;
	if (c->json) {
		print_json(resp);
	} else if (a.turn_off) {
		print_vm_summary(resp, "turned off, now");
	} else {
		print_vm_summary(resp, json_is_true(json_object_get(resp, "turned_off"))
					       ? "did not shut down in time and was turned off, now"
					       : "shut down, now");
	}
	json_decref(resp);
	return CLI_EXIT_OK;
}

/* ---- upgrade-version (Update-VMVersion) ---- */

enum { OPT_YES = 1950 };

static int yes_opt(int o, void *opaque)
{
	if (o != OPT_YES)
		return usage_error("%s", "unknown option");
	*(bool *)opaque = true;
	return 0;
}

/* Irreversible: said first, and on a terminal asked (unless --yes), as
 * Hyper-V's manager asks; without a terminal the command goes on. */
static int verb_upgrade_version(struct common *c, int argc, char **argv)
{
	static const struct option extra[] = { { "yes", no_argument, NULL, OPT_YES },
					       { NULL, 0, NULL, 0 } };
	char path[512], line[16];
	bool yes = false;
	json_t *resp;
	int r = simple_args(c, argc, argv, 1, 1, extra, yes_opt, &yes);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	if (!c->json)
		fprintf(stderr, "cloison: warning: upgrading VM '%s' to this host's configuration "
				"version cannot be undone: the VM can then no longer be imported or "
				"run on a host whose cloison does not support that version.\n",
			argv[optind]);
	if (!yes && isatty(0)) {
		fprintf(stderr, "Upgrade? [y/N] ");
		if (!fgets(line, sizeof(line), stdin) || (line[0] != 'y' && line[0] != 'Y'))
			return cli_error(CLI_EXIT_ERROR, "nothing was changed");
	}
	vm_path(path, sizeof(path), argv[optind], "/upgrade-version");
	if ((r = client_call(&c->client, "POST", path, NULL, &resp)))
		return r;
	if (c->json)
		print_json(resp);
	else if (json_is_true(json_object_get(resp, "upgraded")))
		printf("VM '%s' upgraded from configuration version %s to %s.\n", argv[optind],
		       str(resp, "previous_version"), str(resp, "version"));
	else
		printf("VM '%s' is at configuration version %s already, this host's default.\n",
		       argv[optind], str(resp, "version"));
	json_decref(resp);
	return CLI_EXIT_OK;
}

static int verb_remove(struct common *c, int argc, char **argv)
{
	char path[512];
	json_t *resp, *e;
	size_t i;
	int r = simple_args(c, argc, argv, 1, 1, NULL, NULL, NULL);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	vm_path(path, sizeof(path), argv[optind], "");
	if ((r = client_call(&c->client, "DELETE", path, NULL, &resp)))
		return r;
	if (c->json) {
		print_json(resp);
	} else {
		printf("Removed VM '%s'.\n", argv[optind]);
		json_array_foreach(json_object_get(resp, "disks_kept"), i, e)
			printf("Kept its disk %s\n", json_string_value(e));
	}
	json_decref(resp);
	return CLI_EXIT_OK;
}

/* ---- watch ---- */

struct watch {
	bool json;
	long count; /* events left, -1 = forever */
};

static bool on_event(const char *type, json_t *data, void *opaque)
{
	struct watch *w = opaque;

	if (w->json) {
		char *s = json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS);
		if (s)
			puts(s);
		free(s);
	} else if (!strcmp(type, "state")) {
		const char *reason = str(data, "reason");
		printf("%s  %-20s %-8s -> %-8s%s%s\n", str(data, "time"), str(data, "vm"),
		       str(data, "previous"), str(data, "state"), *reason ? "  " : "", reason);
	} else {
		printf("%s  %-20s %s\n", str(data, "time"), str(data, "vm"), type);
	}
	fflush(stdout);
	return w->count < 0 || --w->count > 0;
}

static int watch_opt(int o, void *opaque)
{
	struct watch *w = opaque;
	uint64_t n;

	if (o != OPT_COUNT)
		return usage_error("%s", "unknown option");
	if (parse_u64(optarg, &n) || n == 0)
		return usage_error("--count %s: expected a positive number", optarg);
	w->count = (long)n;
	return 0;
}

static int verb_watch(struct common *c, int argc, char **argv)
{
	static const struct option extra[] = { { "count", required_argument, NULL, OPT_COUNT },
					       { NULL, 0, NULL, 0 } };
	struct watch w = { .count = -1 };
	char path[512] = "/v1/events";
	int r = simple_args(c, argc, argv, 0, 1, extra, watch_opt, &w);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	w.json = c->json;
	if (optind < argc) {
		char esc[256];
		client_escape(argv[optind], esc, sizeof(esc));
		snprintf(path, sizeof(path), "/v1/events?vm=%s", esc);
	}
	return client_follow(&c->client, path, on_event, &w);
}

/* ---- console ---- */

static int verb_console(struct common *c, int argc, char **argv)
{
	struct termios saved, raw;
	char path[512], buf[16384];
	bool tty, stdin_open = true;
	int r = simple_args(c, argc, argv, 1, 1, NULL, NULL, NULL);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	vm_path(path, sizeof(path), argv[optind], "/console");
	int fd = client_upgrade(&c->client, path, "cloison-console");
	if (fd < 0)
		return -fd;
	tty = isatty(0) && tcgetattr(0, &saved) == 0;
	if (tty) {
		fprintf(stderr, "Connected to the console of '%s'. Detach with Ctrl-].\r\n",
			argv[optind]);
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(0, TCSANOW, &raw);
	}
	for (;;) {
		struct pollfd p[2] = { { .fd = stdin_open ? 0 : -1, .events = POLLIN },
				       { .fd = fd, .events = POLLIN } };
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents) {
			ssize_t n = read(fd, buf, sizeof(buf));
			if (n <= 0)
				break;
			if (write_full(1, buf, (size_t)n))
				break;
		}
		if (p[0].revents) {
			ssize_t n = read(0, buf, sizeof(buf));
			if (n <= 0) {
				/* End of input: keep showing output until the VM stops. */
				stdin_open = false;
				continue;
			}
			if (tty && memchr(buf, 0x1d, (size_t)n))
				break; /* Ctrl-] */
			if (write_full(fd, buf, (size_t)n))
				break;
		}
	}
	if (tty) {
		tcsetattr(0, TCSANOW, &saved);
		fprintf(stderr, "\nDetached from '%s'.\n", argv[optind]);
	}
	close(fd);
	return CLI_EXIT_OK;
}

/* vm kvp set NAME KEY VALUE: a host-to-guest key-value pair. */
static int verb_kvp(struct common *c, int argc, char **argv)
{
	int r = simple_args(c, argc, argv, 0, 4, NULL, NULL, NULL);
	json_t *body;

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	if (argc - optind != 4 || strcmp(argv[optind], "set"))
		return usage_error("%s", "expected: vm kvp set NAME KEY VALUE");
	body = json_pack("{s:s, s:s}", "key", argv[optind + 2], "value", argv[optind + 3]);
	r = do_action(c, argv[optind + 1], "/kvp", body, "has the key-value pair, now");
	json_decref(body);
	return r;
}

/* vm copy-file NAME SRC DEST: a host file into the running guest. */
static int verb_copy_file(struct common *c, int argc, char **argv)
{
	int r = simple_args(c, argc, argv, 0, 3, NULL, NULL, NULL);
	char *src;
	json_t *body;

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	if (argc - optind != 3)
		return usage_error("%s", "expected: vm copy-file NAME SRC DEST");
	src = realpath(argv[optind + 1], NULL);
	if (!src)
		return cli_error(CLI_EXIT_USAGE, "%s: %s", argv[optind + 1], strerror(errno));
	body = json_pack("{s:s, s:s}", "source", src, "destination", argv[optind + 2]);
	free(src);
	r = do_action(c, argv[optind], "/copy-file", body, "has the file, now");
	json_decref(body);
	return r;
}

/* Follows an export or import job (or with --no-wait prints its id), then
 * prints its result; with --json as JSON lines: each progress event, then
 * the finished job. */
static int run_file_job(struct common *c, const char *path, json_t *body, bool no_wait,
			bool export)
{
	json_t *job, *final = NULL;
	int r = cli_job_start(&c->client, "POST", path, body, &job);

	if (r)
		return r;
	if (no_wait) {
		if (c->json)
			print_json(job);
		else
			printf("%s\n", str(job, "id"));
		json_decref(job);
		return CLI_EXIT_OK;
	}
	r = cli_job_follow(&c->client, str(job, "id"), c->json, &final);
	if (r == CLI_EXIT_OK) {
		json_t *res = json_object_get(final, "result");
		char *line = c->json ? json_dumps(final, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		if (c->json) /* JSON lines: the progress events, then the finished job */
			printf("%s\n", line ? line : "{}");
		else if (export)
			printf("VM '%s' exported to %s%s\n", str(final, "vm"), str(res, "path"),
			       json_is_true(json_object_get(res, "saved_state"))
				       ? " (with its saved state)" : "");
		else {
			printf("VM '%s' imported (%s), id %s\n", str(res, "vm"), str(res, "mode"),
			       str(res, "id"));
			size_t k;
			json_t *w;
			json_array_foreach(json_object_get(res, "warnings"), k, w)
				fprintf(stderr, "cloison: warning: %s\n", json_string_value(w));
		}
		free(line);
	}
	json_decref(final);
	json_decref(job);
	return r;
}

/* vm export NAME DIR: the VM's configuration, disks and saved state into
 * DIR/NAME. */
static int verb_export(struct common *c, int argc, char **argv)
{
	static const struct option extra[] = { { "no-wait", no_argument, NULL, OPT_NO_WAIT },
					       { NULL, 0, NULL, 0 } };
	bool no_wait = false;
	char path[512];
	int r = simple_args(c, argc, argv, 2, 2, extra, no_wait_opt, &no_wait);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	char *dir = realpath(argv[optind + 1], NULL);
	if (!dir)
		return cli_error(CLI_EXIT_USAGE, "export folder '%s': %s (make it first)",
				 argv[optind + 1], strerror(errno));
	json_t *body = json_pack("{s:s}", "dir", dir);
	free(dir);
	vm_path(path, sizeof(path), argv[optind], "/export");
	r = run_file_job(c, path, body, no_wait, true);
	json_decref(body);
	return r;
}

struct import_opts {
	const char *mode, *name, *vhd_dir;
	bool no_wait;
	int modes;
};

enum { OPT_IMPORT_REGISTER = 2000, OPT_IMPORT_RESTORE, OPT_IMPORT_COPY, OPT_IMPORT_NAME,
       OPT_IMPORT_VHD_DIR };

static int import_opt(int o, void *opaque)
{
	struct import_opts *io = opaque;

	switch (o) {
	case OPT_NO_WAIT: io->no_wait = true; return 0;
	case OPT_IMPORT_REGISTER: io->mode = "register"; io->modes++; return 0;
	case OPT_IMPORT_RESTORE: io->mode = "restore"; io->modes++; return 0;
	case OPT_IMPORT_COPY: io->mode = "copy"; io->modes++; return 0;
	case OPT_IMPORT_NAME: io->name = optarg; return 0;
	case OPT_IMPORT_VHD_DIR: io->vhd_dir = optarg; return 0;
	default: return usage_error("%s", "unknown option");
	}
}

/* vm import DIR [--register|--restore|--copy]: Hyper-V's three import
 * types. */
static int verb_import(struct common *c, int argc, char **argv)
{
	static const struct option extra[] = {
		{ "no-wait", no_argument, NULL, OPT_NO_WAIT },
		{ "register", no_argument, NULL, OPT_IMPORT_REGISTER },
		{ "restore", no_argument, NULL, OPT_IMPORT_RESTORE },
		{ "copy", no_argument, NULL, OPT_IMPORT_COPY },
		{ "name", required_argument, NULL, OPT_IMPORT_NAME },
		{ "vhd-dir", required_argument, NULL, OPT_IMPORT_VHD_DIR },
		{ NULL, 0, NULL, 0 },
	};
	struct import_opts io = { .mode = "register" };
	int r = simple_args(c, argc, argv, 1, 1, extra, import_opt, &io);

	if (r)
		return r < 0 ? CLI_EXIT_OK : r;
	if (io.modes > 1)
		return usage_error("%s", "give one of --register, --restore and --copy");
	char *dir = realpath(argv[optind], NULL);
	if (!dir)
		return cli_error(CLI_EXIT_NOT_FOUND, "import folder '%s': %s", argv[optind],
				 strerror(errno));
	char *vd = io.vhd_dir ? realpath(io.vhd_dir, NULL) : NULL;
	if (io.vhd_dir && !vd) {
		free(dir);
		return cli_error(CLI_EXIT_USAGE, "--vhd-dir '%s': %s (make it first)", io.vhd_dir,
				 strerror(errno));
	}
	json_t *body = json_pack("{s:s, s:s}", "path", dir, "mode", io.mode);
	if (io.name)
		json_object_set_new(body, "name", json_string(io.name));
	if (vd)
		json_object_set_new(body, "vhd_dir", json_string(vd));
	free(dir);
	free(vd);
	r = run_file_job(c, "/v1/vms/import", body, io.no_wait, false);
	json_decref(body);
	return r;
}

static const struct verb verbs[] = {
	{ "create", verb_create, "NAME --kernel PATH [options]",
	  "Creates a VM (off) in cloisond's inventory.",
	  CONFIG_HELP "  --disk FILE[,readonly]   attach a VHDX, VHD or raw disk (repeatable, in order)\n"
		      "  --config-version V  an older configuration version than this host's\n"
		      "                  default (Hyper-V's New-VM -Version), for a VM that must\n"
		      "                  also run on older hosts; 'cloison host versions' lists them\n" },
	{ "list", verb_list, "", "Lists the VMs you may see, with their state.", NULL },
	{ "show", verb_show, "NAME", "Shows a VM's configuration and state.", NULL },
	{ "set", verb_set, "NAME [options]",
	  "Changes a VM's settings. Processors, memory, boot files, disks and network\n"
	  "adapters need the VM off; notes, operators and automatic actions do not.",
	  CONFIG_HELP "  --add-disk FILE[,readonly]  attach a disk\n"
		      "  --remove-disk FILE   detach a disk (the file is kept)\n"
		      "  --remove-operator USER   withdraw a delegation\n"
		      "  --no-initrd          boot without an initrd\n"
		      "  --no-net             remove every network adapter\n"
		      "  --connect N=SWITCH   move adapter N to a switch (the VM may run: its\n"
		      "                       guest sees the link go down and up)\n"
		      "  --disconnect N       cut adapter N from its switch (link down)\n" },
	{ "start", verb_start, "NAME",
	  "Starts a VM and waits until it runs; a saved VM goes on from its saved state.",
	  NULL },
	{ "stop", verb_stop, "NAME [--turn-off] [--timeout S]",
	  "Shuts a VM down through the ACPI power button and waits; if the guest has not\n"
	  "powered off after the timeout (default 30 s) the VM is turned off.",
	  "  --turn-off      turn the VM off at once (like pulling the plug)\n"
	  "  --timeout S     seconds to wait for the guest before turning it off\n" },
	{ "pause", verb_pause, "NAME", "Pauses a running VM (its vCPUs stop).", NULL },
	{ "resume", verb_resume, "NAME", "Resumes a paused VM.", NULL },
	{ "restart", verb_restart, "NAME", "Resets a running VM (a hard reset).", NULL },
	{ "save", verb_save, "NAME [--no-wait]",
	  "Saves a running or paused VM's memory and devices and ends its worker (state\n"
	  "saved); 'vm start' goes on from there. The save is a job: its progress is\n"
	  "shown on a terminal ('cloison job' follows it too).",
	  "  --no-wait       print the job's id and return at once\n" },
	{ "checkpoint", verb_checkpoint,
	  "[create|list|apply|rename|remove|settings] NAME [CP] [...]",
	  "Takes a checkpoint of a VM (Checkpoint-VM): 'vm checkpoint NAME [--name CP]'.\n"
	  "With a verb it is 'cloison checkpoint VERB NAME ...' (see 'cloison checkpoint\n"
	  "--help'): list [--tree], apply CP [--checkpoint-first], rename CP NEW,\n"
	  "remove CP [--subtree], settings.", NULL },
	{ "export", verb_export, "NAME DIR [--no-wait]",
	  "Exports a VM into DIR/NAME (Hyper-V's Export-VM): its configuration\n"
	  "(Virtual Machines/<GUID>.json), every disk with its whole differencing chain\n"
	  "(Virtual Hard Disks/, holes kept) and its saved state. The export is a job;\n"
	  "it is written under a temporary name and renamed when whole. An off or saved\n"
	  "VM is not changed (a start waits until the export is done). A running VM is\n"
	  "exported from a temporary checkpoint and keeps running (a production one is\n"
	  "split live; a standard one, without a guest agent, saves and restores the VM\n"
	  "and exports its memory too: the import is saved and goes on from there); the\n"
	  "checkpoint is merged back live.",
	  "  --no-wait   print the job's id and return at once ('cloison job wait ID')\n" },
	{ "import", verb_import, "DIR [--register|--restore|--copy] [--name NEW] [--vhd-dir D]",
	  "Imports the VM exported in DIR (DIR/Virtual Machines/<GUID>.json), Hyper-V's\n"
	  "three ways: --register (the default) uses the files where they are and keeps\n"
	  "the id; --restore copies them into cloisond's store and keeps the id; --copy\n"
	  "copies them with a new id, new MAC addresses and a new VM Generation ID\n"
	  "(import one export many times). A saved VM's state comes along: 'vm start'\n"
	  "goes on from it. Refused,\n"
	  "with nothing made, when the id or name is taken, a disk or parent is missing\n"
	  "or the configuration does not parse.",
	  "  --name NEW    the imported VM's name (default: the exported one's)\n"
	  "  --vhd-dir D   (restore, copy) put the disks in D, not in the VM's folder\n"
	  "  --no-wait     print the job's id and return at once\n" },
	{ "discard-saved-state", verb_discard_saved, "NAME",
	  "Drops a saved VM's saved state: the VM is off, and its next start boots.", NULL },
	{ "upgrade-version", verb_upgrade_version, "NAME [--yes]",
	  "Moves an off VM to this host's default configuration version (Hyper-V's\n"
	  "Update-VMVersion), so it gets the features of that version (the VM\n"
	  "Generation ID device from 8.0; 'cloison host versions' lists them). This\n"
	  "cannot be undone: a VM at a newer version is refused by hosts whose cloison\n"
	  "does not support it. Refused unless the VM is off.",
	  "  --yes           do not ask on a terminal\n" },
	{ "remove", verb_remove, "NAME",
	  "Removes an off (or saved) VM from the inventory, with its saved state. Its\n"
	  "virtual disks are never deleted.", NULL },
	{ "console", verb_console, "NAME",
	  "Attaches to a running VM's serial console (detach with Ctrl-]). Without a\n"
	  "terminal, input is read from stdin and output is shown until the VM stops.", NULL },
	{ "kvp", verb_kvp, "set NAME KEY VALUE",
	  "Gives a running guest a key-value pair through its agent (data exchange).\n"
	  "Keys are at most 255 bytes without '=', values at most 2047 bytes.", NULL },
	{ "copy-file", verb_copy_file, "NAME SRC DEST",
	  "Copies a host file into a running guest through its agent (guest services;\n"
	  "off by default: vm set NAME --integration copy=on). Administrators only.", NULL },
	{ "watch", verb_watch, "[NAME] [--count N]",
	  "Follows state changes live (all VMs, or one).",
	  "  --count N       exit after N events\n" },
	{ NULL, NULL, NULL, NULL, NULL },
};

static void vm_usage(FILE *f)
{
	fprintf(f, "usage: cloison vm <verb> [<args>]\n\nVerbs:\n");
	for (const struct verb *v = verbs; v->name; v++)
		fprintf(f, "  %-8s %s\n", v->name, v->args);
	fprintf(f, "\nEvery verb takes --json, --socket PATH and --help.\n"
		   "Exit status: 0 ok, 1 failed, 2 usage, 3 no such VM, 4 refused in the current\n"
		   "state, 5 daemon unreachable, 6 not allowed for this user.\n");
}

int cli_vm(int argc, char **argv)
{
	struct common c = { 0 };

	if (argc < 2) {
		vm_usage(stderr);
		return cli_error(CLI_EXIT_USAGE, "expected a verb after 'cloison vm'");
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		vm_usage(stdout);
		return CLI_EXIT_OK;
	}
	for (const struct verb *v = verbs; v->name; v++) {
		if (strcmp(v->name, argv[1]))
			continue;
		c.verb = v;
		optind = 1;
		opterr = 1;
		return v->run(&c, argc - 1, argv + 1);
	}
	vm_usage(stderr);
	return cli_error(CLI_EXIT_USAGE, "unknown verb 'vm %s'", argv[1]);
}
