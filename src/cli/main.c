/* cloison: the command-line interface. `cloison NOUN VERB [options]`. */
#include "cli/cli.h"
#include "cli/checkpoint.h"
#include "cli/job.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

static const struct cli_command commands[] = {
	{ "vm", cli_vm, "create, start, stop and manage virtual machines (needs cloisond)" },
	{ "disk", cli_disk, "create, inspect, convert and maintain VHDX/VHD/raw disks (no daemon)" },
	{ "checkpoint", cli_checkpoint, "take, list, apply, rename and remove a VM's checkpoints" },
	{ "job", cli_job, "follow and cancel cloisond's long operations (save, checkpoints)" },
	{ "host", cli_host, "show the host: virtualization support, resources, VMs" },
	{ "switch", cli_switch, "create and manage virtual switches: private, internal, external, nat" },
	{ NULL, NULL, NULL },
};

int cli_error(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("cloison: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: cloison <command> [<args>]\n\n"
		   "cloison manages virtual machines and virtual disks on this host.\n\n"
		   "Commands:\n");
	for (const struct cli_command *c = commands; c->name; c++)
		fprintf(f, "  %-8s %s\n", c->name, c->summary);
	fprintf(f, "\nRun 'cloison <command> --help' for a command's verbs and options.\n"
		   "Global: --version, --help. The daemon socket comes from --socket PATH\n"
		   "(after the noun) or $CLOISON_SOCKET (default /run/cloison/cloisond.sock).\n");
}

int main(int argc, char **argv)
{
	log_init("cloison", LOG_WARN);
	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("cloison %s\n", CLOISON_VERSION);
		return CLI_EXIT_OK;
	}
	for (const struct cli_command *c = commands; c->name; c++)
		if (!strcmp(argv[1], c->name))
			return c->run(argc - 1, argv + 1);
	usage(stderr);
	return cli_error(CLI_EXIT_USAGE, "unknown command '%s'", argv[1]);
}
