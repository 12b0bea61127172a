/* The cloison CLI: one file per noun (disk.c, vm.c, host.c), each
 * exporting one entry point listed in main.c's table. */
#ifndef CLOISON_CLI_CLI_H
#define CLOISON_CLI_CLI_H

#include <stdbool.h>

/* Exit statuses scripts can rely on (documented in docs/cli.md). */
enum cli_exit {
	CLI_EXIT_OK = 0,
	CLI_EXIT_ERROR = 1,	  /* the operation failed; the message says why */
	CLI_EXIT_USAGE = 2,	  /* bad command line; nothing was done */
	CLI_EXIT_NOT_FOUND = 3,	  /* no such VM / disk / switch */
	CLI_EXIT_CONFLICT = 4,	  /* refused in the current state (e.g. start a running VM) */
	CLI_EXIT_UNAVAILABLE = 5, /* the daemon is not reachable */
	CLI_EXIT_DENIED = 6,	  /* not allowed for this user */
};

struct cli_command {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the noun */
	const char *summary;
};

/* Nouns. */
int cli_disk(int argc, char **argv);
int cli_vm(int argc, char **argv);
int cli_host(int argc, char **argv);
int cli_switch(int argc, char **argv);

/* Prints "cloison: error: <msg>" to stderr; returns status for
 * `return cli_error(CLI_EXIT_USAGE, "...")`. */
int cli_error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
