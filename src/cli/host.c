/* cloison host info: what cloisond reports about this host -- the worker's
 * --check-host facts (KVM, hardware or nested virtualization), resources
 * and how many VMs are in which state. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "common/util.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: cloison host info [--json] [--socket PATH]\n"
		   "       cloison host versions [--json] [--socket PATH]\n"
		   "       cloison host set --mac-range MIN-MAX [--json] [--socket PATH]\n\n"
		   "info shows this host as cloisond sees it: virtualization support (the\n"
		   "worker's --check-host), processors, memory, the VMs by state, the MAC pool.\n"
		   "set --mac-range sets the range automatic MACs come from (like\n"
		   "02:c1:05:01:02:00-02:c1:05:01:02:ff; host administrators only). An address\n"
		   "handed out once is never handed out again.\n"
		   "versions lists the VM configuration versions this host supports (Hyper-V's\n"
		   "Get-VMHostSupportedVersion): new VMs get the default one, older ones are\n"
		   "read, and 'cloison vm upgrade-version NAME' moves a VM up.\n");
}

/* The worker's --check-host facts as a few readable lines; --json has them all. */
static void print_virtualization(json_t *v)
{
	json_t *caps = json_object_get(v, "capabilities"), *c;
	const char *warning = json_string_value(json_object_get(v, "warning"));
	size_t i, ok = 0, total = json_array_size(caps);

	printf("Virtualization:  KVM API %lld, up to %lld vCPUs per VM; %s\n",
	       (long long)json_integer_value(json_object_get(v, "api_version")),
	       (long long)json_integer_value(json_object_get(v, "max_vcpus")),
	       json_is_true(json_object_get(v, "hardware_virtualization"))
		       ? "hardware virtualization"
		       : "no hardware virtualization (software-assisted nested hypervisor)");
	json_array_foreach(caps, i, c) {
		if (json_is_true(json_object_get(c, "ok")))
			ok++;
		else
			printf("                 missing %s capability %s\n",
			       json_is_true(json_object_get(c, "required")) ? "required" : "optional",
			       json_string_value(json_object_get(c, "name")));
	}
	printf("KVM features:    %zu of %zu present\n", ok, total);
	printf("Can run VMs:     %s\n", json_is_true(json_object_get(v, "can_run")) ? "yes" : "NO");
	if (warning)
		printf("Warning:         %s\n", warning);
}

static void print_human(json_t *h)
{
	json_t *res = json_object_get(h, "resources"), *vms = json_object_get(h, "vms");
	char a[32], b[32], c2[32];

	printf("Host:            %s (Linux %s)\n", json_string_value(json_object_get(h, "hostname")),
	       json_string_value(json_object_get(h, "kernel")));
	printf("cloisond:        %s, state in %s\n",
	       json_string_value(json_object_get(h, "cloisond_version")),
	       json_string_value(json_object_get(h, "state_dir")));
	printf("Processors:      %lld (%lld vCPUs assigned to running VMs)\n",
	       (long long)json_integer_value(json_object_get(res, "cpus")),
	       (long long)json_integer_value(json_object_get(res, "vcpus_assigned_to_vms")));
	format_size((uint64_t)json_integer_value(json_object_get(res, "memory_total")), a, sizeof(a));
	format_size((uint64_t)json_integer_value(json_object_get(res, "memory_available")), b,
		    sizeof(b));
	format_size((uint64_t)json_integer_value(json_object_get(res, "memory_assigned_to_vms")), c2,
		    sizeof(c2));
	printf("Memory:          %s total, %s available, %s assigned to running VMs\n", a, b, c2);
	format_size((uint64_t)json_integer_value(json_object_get(res, "state_dir_free")), a, sizeof(a));
	printf("State dir free:  %s\n", a);
	printf("VMs:             %lld (running %lld, paused %lld, off %lld, crashed %lld)\n",
	       (long long)json_integer_value(json_object_get(vms, "total")),
	       (long long)json_integer_value(json_object_get(vms, "running")),
	       (long long)json_integer_value(json_object_get(vms, "paused")),
	       (long long)json_integer_value(json_object_get(vms, "off")),
	       (long long)json_integer_value(json_object_get(vms, "crashed")));
	json_t *sb = json_object_get(h, "sandbox");
	if (json_is_true(json_object_get(sb, "enabled")))
		printf("Sandbox:         on (each worker: own uid, namespaces, seccomp, no "
		       "capabilities)\n");
	else if (sb)
		printf("Sandbox:         OFF (%s)\n", json_string_value(json_object_get(sb, "why")));
	json_t *pool = json_object_get(h, "mac_pool");
	if (json_is_object(pool))
		printf("MAC pool:        %s - %s (%lld never handed out)\n",
		       json_string_value(json_object_get(pool, "min")),
		       json_string_value(json_object_get(pool, "max")),
		       (long long)json_integer_value(json_object_get(pool, "remaining")));
	json_t *virt = json_object_get(h, "virtualization");
	if (json_is_object(virt))
		print_virtualization(virt);
	else
		printf("Virtualization:  unknown (the worker's --check-host gave nothing)\n");
}

static void print_versions(json_t *v)
{
	json_t *e;
	size_t i;

	printf("%-8s %-8s %s\n", "VERSION", "DEFAULT", "DESCRIPTION");
	json_array_foreach(json_object_get(v, "versions"), i, e)
		printf("%-8s %-8s %s\n", json_string_value(json_object_get(e, "name")),
		       json_is_true(json_object_get(e, "default")) ? "yes" : "",
		       json_string_value(json_object_get(e, "description")));
}

int cli_host(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "mac-range", required_argument, NULL, 'm' },
		{ NULL, 0, NULL, 0 },
	};
	const char *range = NULL;
	const char *sock = NULL;
	bool json = false;
	struct client c;
	json_t *resp;
	int o, r;

	bool set = argc >= 2 && !strcmp(argv[1], "set");
	bool versions = argc >= 2 && !strcmp(argv[1], "versions");
	if (argc < 2 || (strcmp(argv[1], "info") && !set && !versions)) {
		if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))) {
			usage(stdout);
			return CLI_EXIT_OK;
		}
		usage(stderr);
		return cli_error(CLI_EXIT_USAGE, "expected 'cloison host info', 'cloison host "
				 "versions' or 'cloison host set'");
	}
	optind = 1;
	argc--;
	argv++;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'j': json = true; break;
		case 's': sock = optarg; break;
		case 'm': range = optarg; break;
		case 'h': usage(stdout); return CLI_EXIT_OK;
		default: usage(stderr); return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_error(CLI_EXIT_USAGE, "'host %s' takes no arguments", argv[0]);
	if (set != (range != NULL))
		return cli_error(CLI_EXIT_USAGE, set ? "'host set' needs --mac-range MIN-MAX"
						     : "--mac-range goes with 'host set'");
	json_t *body = set ? json_pack("{s:s}", "mac_range", range) : NULL;
	r = client_init(&c, sock);
	if (!r)
		r = client_call(&c, set ? "PATCH" : "GET", versions ? "/v1/host/versions" : "/v1/host",
				body, &resp);
	json_decref(body);
	if (r)
		return r;
	if (json) {
		char *s = json_dumps(resp, JSON_INDENT(2) | JSON_SORT_KEYS);
		puts(s ? s : "{}");
		free(s);
	} else if (versions) {
		print_versions(resp);
	} else {
		print_human(resp);
	}
	json_decref(resp);
	return CLI_EXIT_OK;
}
