/* Private to the `cloison disk` verb files (disk.c, disk_copy.c): the
 * helpers they share. Every verb returns a cli_exit status and prints its
 * own message; nothing here exits. */
#ifndef CLOISON_CLI_DISK_CLI_H
#define CLOISON_CLI_DISK_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "disk/disk.h"

/* The data-moving verbs (disk_copy.c). argv[0] is the verb. */
int disk_cli_convert(int argc, char **argv);
int disk_cli_merge(int argc, char **argv);
int disk_cli_compact(int argc, char **argv);

/* Prints the verb's usage to stdout (help) or stderr and returns
 * CLI_EXIT_OK for help, CLI_EXIT_USAGE otherwise. */
int disk_cli_usage(const char *verb, bool help);

/* Reports a usage error for verb ("cloison disk VERB: ...", then a pointer
 * to --help) and returns CLI_EXIT_USAGE. */
int disk_cli_usage_error(const char *verb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Image format named by path's extension (.vhdx/.avhdx, .vhd/.avhd,
 * .raw/.img, any case); 0 or -EINVAL. */
int disk_cli_format_from_path(const char *path, enum disk_format *fmt);

/* Parses "fixed"/"dynamic"/"differencing"; 0 or -EINVAL. */
int disk_cli_parse_type(const char *s, enum disk_type *type);

/* Parses a size option (binary units, bytes by default) for verb; on
 * garbage, zero or overflow prints a usage error naming opt and returns
 * CLI_EXIT_USAGE, else 0. */
int disk_cli_parse_size(const char *verb, const char *opt, const char *s, uint64_t *out);

/* Prints a library failure (ret = -errno, err filled by the library) for
 * path with advice, and returns the matching cli_exit status. */
int disk_cli_fail(const char *path, int ret, const struct disk_error *err);

/* Checks that path exists before an operation; prints and returns
 * CLI_EXIT_NOT_FOUND (or CLI_EXIT_ERROR) if not, else 0. */
int disk_cli_require_file(const char *path);

/* Standard getopt handling of an unexpected option character c returned by
 * getopt_long (':' missing value, '?' unknown); returns CLI_EXIT_USAGE. */
int disk_cli_bad_option(const char *verb, int c, char **argv);

#endif
