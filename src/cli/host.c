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
	fprintf(f, "usage: cloison host info [--json] [--socket PATH]\n\n"
		   "Shows this host as cloisond sees it: virtualization support (the worker's\n"
		   "--check-host), processors, memory, the VMs by state.\n");
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
	json_t *virt = json_object_get(h, "virtualization");
	if (json_is_object(virt))
		print_virtualization(virt);
	else
		printf("Virtualization:  unknown (the worker's --check-host gave nothing)\n");
}

int cli_host(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL;
	bool json = false;
	struct client c;
	json_t *resp;
	int o, r;

	if (argc < 2 || strcmp(argv[1], "info")) {
		if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help"))) {
			usage(stdout);
			return CLI_EXIT_OK;
		}
		usage(stderr);
		return cli_error(CLI_EXIT_USAGE, "expected 'cloison host info'");
	}
	optind = 1;
	argc--;
	argv++;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'j': json = true; break;
		case 's': sock = optarg; break;
		case 'h': usage(stdout); return CLI_EXIT_OK;
		default: usage(stderr); return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cli_error(CLI_EXIT_USAGE, "'host info' takes no arguments");
	if ((r = client_init(&c, sock)) || (r = client_call(&c, "GET", "/v1/host", NULL, &resp)))
		return r;
	if (json) {
		char *s = json_dumps(resp, JSON_INDENT(2) | JSON_SORT_KEYS);
		puts(s ? s : "{}");
		free(s);
	} else {
		print_human(resp);
	}
	json_decref(resp);
	return CLI_EXIT_OK;
}
