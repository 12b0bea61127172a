/* cloison vm: create, list, show, set, start, stop, pause, resume, restart,
 * save, discard-saved-state,
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
	OPT_NO_NET, OPT_TURN_OFF, OPT_TIMEOUT, OPT_COUNT, OPT_HELP,
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

static int add_net(json_t *nics, const char *spec)
{
	char tmp[256], *save = NULL;
	json_t *nic = json_object();

	snprintf(tmp, sizeof(tmp), "%s", spec);
	for (char *kv = strtok_r(tmp, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		if (!strncmp(kv, "tap=", 4))
			json_object_set_new(nic, "tap", json_string(kv + 4));
		else if (!strncmp(kv, "mac=", 4))
			json_object_set_new(nic, "mac", json_string(kv + 4));
		else {
			json_decref(nic);
			return usage_error("--net %s: expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX]", spec);
		}
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
	default:
		return -1;
	}
}

#define CONFIG_OPTS                                                             \
	{ "kernel", required_argument, NULL, OPT_KERNEL },                      \
	{ "initrd", required_argument, NULL, OPT_INITRD },                      \
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
	"  --notes TEXT    free text\n"                                                         \
	"  --operator USER delegate the VM to USER (a VM operator; repeatable)\n"               \
	"  --automatic-start-action nothing|start    when cloisond starts\n"                    \
	"  --automatic-start-delay S                 seconds to wait before that start\n"      \
	"  --automatic-stop-action keep-running|shutdown|turn-off|save   when cloisond stops\n"

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
	printf("Processors:    %lld\n", (long long)json_integer_value(json_object_get(vm, "cpus")));
	printf("Memory:        %s\n", mem);
	printf("Kernel:        %s\n", str(vm, "kernel"));
	if (json_is_string(json_object_get(vm, "initrd")))
		printf("Initrd:        %s\n", str(vm, "initrd"));
	printf("Command line:  %s\n", str(vm, "cmdline"));
	json_array_foreach(json_object_get(vm, "disks"), i, e)
		printf("Disk %zu:        %s%s\n", i, str(e, "path"),
		       json_is_true(json_object_get(e, "readonly")) ? " (read-only)" : "");
	json_array_foreach(json_object_get(vm, "network_adapters"), i, e)
		printf("Network %zu:     tap %s, MAC %s%s\n", i, str(e, "tap"), str(e, "mac"),
		       json_is_true(json_object_get(e, "mac_auto")) ? " (automatic)" : "");
	printf("Start action:  %s (delay %lld s)\n", str(vm, "automatic_start_action"),
	       (long long)json_integer_value(json_object_get(vm, "automatic_start_delay")));
	printf("Stop action:   %s\n", str(vm, "automatic_stop_action"));
	printf("Operators:     ");
	json_array_foreach(json_object_get(vm, "operators"), i, e)
		printf("%s%s", i ? ", " : "", json_string_value(e));
	printf("%s\n", json_array_size(json_object_get(vm, "operators")) ? "" : "(none)");
	if (*str(vm, "notes"))
		printf("Notes:         %s\n", str(vm, "notes"));
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

static int verb_set(struct common *c, int argc, char **argv)
{
	static const struct option opts[] = {
		COMMON_OPTS, CONFIG_OPTS,
		{ "add-disk", required_argument, NULL, OPT_ADD_DISK },
		{ "remove-disk", required_argument, NULL, OPT_REMOVE_DISK },
		{ "remove-operator", required_argument, NULL, OPT_REMOVE_OPERATOR },
		{ "no-initrd", no_argument, NULL, OPT_NO_INITRD },
		{ "no-net", no_argument, NULL, OPT_NO_NET },
		{ NULL, 0, NULL, 0 },
	};
	json_t *body = json_object(), *resp;
	char path[512];
	bool help = false;
	int o, r = 0;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if ((r = common_opt(c, o, &help)) < 0)
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
	if (!json_object_size(body)) {
		r = usage_error("%s", "nothing to change: give at least one option");
		goto out;
	}
	vm_path(path, sizeof(path), argv[optind], "");
	if ((r = connect_or_fail(c)) || (r = client_call(&c->client, "PATCH", path, body, &resp)))
		goto out;
	if (c->json)
		print_json(resp);
	else
		printf("Updated VM '%s'.\n", str(resp, "name"));
	json_decref(resp);
out:
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
ACTION_VERB(verb_save, "/save", "saved, now")

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

static const struct verb verbs[] = {
	{ "create", verb_create, "NAME --kernel PATH [options]",
	  "Creates a VM (off) in cloisond's inventory.",
	  CONFIG_HELP "  --disk FILE[,readonly]   attach a VHDX, VHD or raw disk (repeatable, in order)\n" },
	{ "list", verb_list, "", "Lists the VMs you may see, with their state.", NULL },
	{ "show", verb_show, "NAME", "Shows a VM's configuration and state.", NULL },
	{ "set", verb_set, "NAME [options]",
	  "Changes a VM's settings. Processors, memory, boot files, disks and network\n"
	  "adapters need the VM off; notes, operators and automatic actions do not.",
	  CONFIG_HELP "  --add-disk FILE[,readonly]  attach a disk\n"
		      "  --remove-disk FILE   detach a disk (the file is kept)\n"
		      "  --remove-operator USER   withdraw a delegation\n"
		      "  --no-initrd          boot without an initrd\n"
		      "  --no-net             remove every network adapter\n" },
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
	{ "save", verb_save, "NAME",
	  "Saves a running or paused VM's memory and devices and ends its worker (state\n"
	  "saved); 'vm start' goes on from there.", NULL },
	{ "discard-saved-state", verb_discard_saved, "NAME",
	  "Drops a saved VM's saved state: the VM is off, and its next start boots.", NULL },
	{ "remove", verb_remove, "NAME",
	  "Removes an off (or saved) VM from the inventory, with its saved state. Its\n"
	  "virtual disks are never deleted.", NULL },
	{ "console", verb_console, "NAME",
	  "Attaches to a running VM's serial console (detach with Ctrl-]). Without a\n"
	  "terminal, input is read from stdin and output is shown until the VM stops.", NULL },
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
