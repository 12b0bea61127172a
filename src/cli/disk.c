/* `cloison disk`: create, inspect, check, convert and maintain VHDX, VHD
 * and raw images directly (no daemon), on top of the disk library. This
 * file holds the noun's dispatch, the help texts, the shared helpers and
 * the metadata verbs (create, info, check, resize, set-parent); the verbs
 * that move data (convert, merge, compact) are in disk_copy.c. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/disk_cli.h"
#include "common/guid.h"
#include "common/util.h"

#define CHECK_REPORT_LEN (64 * 1024)

struct disk_verb {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
	const char *usage;
};

static int disk_create_cmd(int argc, char **argv);
static int disk_info_cmd(int argc, char **argv);
static int disk_check_cmd(int argc, char **argv);
static int disk_resize_cmd(int argc, char **argv);
static int disk_set_parent_cmd(int argc, char **argv);

static const struct disk_verb verbs[] = {
	{ "create", disk_create_cmd, "create a new empty image (fixed, dynamic or differencing)",
	  "usage: cloison disk create FILE --size SIZE [--type fixed|dynamic|differencing]\n"
	  "                           [--block-size SIZE] [--sector-size 512|4096]\n"
	  "                           [--physical-sector-size 512|4096] [--parent PARENT]\n"
	  "                           [--format vhdx|vhd|raw] [--json]\n\n"
	  "Creates FILE. The format comes from the extension (.vhdx/.avhdx, .vhd/.avhd,\n"
	  ".raw/.img) unless --format is given. --parent makes a differencing disk whose\n"
	  "size defaults to the parent's. Refuses to overwrite an existing file.\n\n"
	  "  --size SIZE                 virtual size: bytes or with K/M/G/T (binary units)\n"
	  "  --type TYPE                 fixed, dynamic (default) or differencing; a raw\n"
	  "                              image is fixed (preallocated) unless dynamic (sparse)\n"
	  "  --block-size SIZE           VHDX 1M-256M (default 32M), VHD (default 2M)\n"
	  "  --sector-size N             logical sector size, 512 (default) or 4096 (VHDX)\n"
	  "  --physical-sector-size N    512 or 4096 (default 4096 VHDX, 512 VHD)\n"
	  "  --parent PARENT             differencing: the image this one records changes to\n"
	  "  --json                      print the new image's facts as JSON\n" },
	{ "info", disk_info_cmd, "show format, type, sizes, parent chain and allocation",
	  "usage: cloison disk info FILE [--json]\n\n"
	  "Shows the format, type, virtual and file size, block and sector sizes, disk id,\n"
	  "the parent chain (each member's path and format), how much is allocated and\n"
	  "whether a pending VHDX log was replayed (in memory: info never writes).\n"
	  "A differencing disk whose parent is missing is still shown, with the parent\n"
	  "marked missing.\n\n"
	  "  --json    machine-readable output\n" },
	{ "check", disk_check_cmd, "verify an image's metadata (exit 0 when clean)",
	  "usage: cloison disk check FILE [--repair] [--json]\n\n"
	  "Verifies headers, checksums, region and block tables, the log and the parent\n"
	  "link. Exit status 0 when clean, 1 with findings (one per line). A valid\n"
	  "pending VHDX log (normal after a crash) is checked as replayed and only noted.\n\n"
	  "  --repair  fix what can be fixed safely (e.g. replay a pending log, rewrite\n"
	  "            a damaged redundant copy); everything else is only reported\n"
	  "  --json    machine-readable output\n" },
	{ "convert", disk_cli_convert, "copy an image into another format or type",
	  "usage: cloison disk convert SRC DST [--type fixed|dynamic] [--block-size SIZE]\n"
	  "                            [--format vhdx|vhd|raw] [--progress] [--force] [--json]\n\n"
	  "Copies the content SRC shows (a differencing disk with its whole chain) into\n"
	  "a new image DST, whose format comes from its extension (.vhdx, .vhd, .raw,\n"
	  ".img). Only allocated, non-zero data is written, so dynamic and raw targets\n"
	  "stay sparse. DST is written as DST.tmp-PID and renamed at the end: when the\n"
	  "conversion fails or is interrupted nothing is left behind.\n\n"
	  "  --type TYPE        fixed or dynamic (default: SRC's type; differencing and\n"
	  "                     raw sources become dynamic; a raw DST is sparse unless fixed)\n"
	  "  --block-size SIZE  block size of a VHDX/VHD target\n"
	  "  --progress         show progress on stderr (default when stderr is a tty)\n"
	  "  --force            replace DST if it exists\n"
	  "  --json             print a JSON summary\n" },
	{ "resize", disk_resize_cmd, "grow an image, or shrink it when the tail is unused",
	  "usage: cloison disk resize FILE --size [+]SIZE\n\n"
	  "Changes the virtual size. +SIZE grows by SIZE. Shrinking is refused when the\n"
	  "part that would be cut off holds allocated data.\n" },
	{ "compact", disk_cli_compact, "give back blocks that hold only zeroes",
	  "usage: cloison disk compact FILE [--json]\n\n"
	  "Finds blocks of a dynamic or differencing image that read as all zeroes and\n"
	  "gives them back (a differencing block only when the parent's data there is\n"
	  "zero too, so the content never changes). Raw images get holes punched.\n\n"
	  "  --json    print a JSON summary\n" },
	{ "merge", disk_cli_merge, "merge a differencing disk into its parent, or flatten a chain",
	  "usage: cloison disk merge CHILD\n"
	  "       cloison disk merge CHILD --into NEW [--type fixed|dynamic] [--progress]\n\n"
	  "Without --into: writes CHILD's own data into its parent and deletes CHILD (as\n"
	  "Hyper-V's Merge-VHD does); a CHILD grown past its parent grows the parent.\n"
	  "Other differencing disks made from the same parent are invalidated by this,\n"
	  "as in Hyper-V.\n"
	  "With --into: writes the whole chain's content into the new image NEW (format\n"
	  "from its extension) and leaves the chain untouched.\n\n"
	  "  --into NEW      flatten CHILD and all its parents into NEW\n"
	  "  --type TYPE     type of NEW: fixed or dynamic (default dynamic)\n"
	  "  --block-size S  block size of NEW\n"
	  "  --progress      show progress on stderr (default when stderr is a tty)\n"
	  "  --json          print a JSON summary\n" },
	{ "set-parent", disk_set_parent_cmd, "re-point a differencing disk at its moved parent",
	  "usage: cloison disk set-parent CHILD PARENT\n\n"
	  "Records PARENT's new location in CHILD (relative and absolute locators).\n"
	  "PARENT must be the very disk CHILD was made from (its identity is checked);\n"
	  "a different disk is refused and CHILD is left unchanged.\n" },
	{ NULL, NULL, NULL, NULL },
};

static void noun_usage(FILE *f)
{
	fprintf(f, "usage: cloison disk <verb> [<args>]\n\n"
		   "Virtual hard disks: VHDX (.vhdx, .avhdx), VHD (.vhd, .avhd) and raw (.raw, .img)\n"
		   "images, fixed, dynamic or differencing. Works on files directly; no daemon.\n\n"
		   "Verbs:\n");
	for (const struct disk_verb *v = verbs; v->name; v++)
		fprintf(f, "  %-11s %s\n", v->name, v->summary);
	fprintf(f, "\nRun 'cloison disk <verb> --help' for a verb's options.\n"
		   "Sizes take binary units: 512, 64K, 10M, 1.5G, 2T.\n");
}

static const struct disk_verb *find_verb(const char *name)
{
	for (const struct disk_verb *v = verbs; v->name; v++)
		if (!strcmp(v->name, name))
			return v;
	return NULL;
}

int cli_disk(int argc, char **argv)
{
	const struct disk_verb *v;

	if (argc < 2) {
		noun_usage(stderr);
		return cli_error(CLI_EXIT_USAGE, "disk: missing verb");
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		noun_usage(stdout);
		return CLI_EXIT_OK;
	}
	if (!strcmp(argv[1], "help")) {
		if (argc < 3) {
			noun_usage(stdout);
			return CLI_EXIT_OK;
		}
		if (!find_verb(argv[2]))
			return cli_error(CLI_EXIT_USAGE, "disk: unknown verb '%s'", argv[2]);
		return disk_cli_usage(argv[2], true);
	}
	v = find_verb(argv[1]);
	if (!v) {
		noun_usage(stderr);
		return cli_error(CLI_EXIT_USAGE, "disk: unknown verb '%s'", argv[1]);
	}
	return v->run(argc - 1, argv + 1);
}

/* ---- shared helpers ---------------------------------------------------- */

int disk_cli_usage(const char *verb, bool help)
{
	const struct disk_verb *v = find_verb(verb);

	if (v)
		fputs(v->usage, help ? stdout : stderr);
	return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
}

int disk_cli_usage_error(const char *verb, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "cloison: error: disk %s: ", verb);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'cloison disk %s --help' for usage.\n", verb);
	return CLI_EXIT_USAGE;
}

int disk_cli_bad_option(const char *verb, int c, char **argv)
{
	const char *opt = argv[optind - 1];

	if (c == ':')
		return disk_cli_usage_error(verb, "option '%s' needs a value", opt);
	if (optopt && (optind < 2 || strncmp(opt, "--", 2)))
		return disk_cli_usage_error(verb, "unknown option '-%c'", optopt);
	return disk_cli_usage_error(verb, "unknown option '%s'", opt);
}

int disk_cli_format_from_path(const char *path, enum disk_format *fmt)
{
	static const struct {
		const char *ext;
		enum disk_format fmt;
	} exts[] = {
		{ ".vhdx", DISK_FORMAT_VHDX }, { ".avhdx", DISK_FORMAT_VHDX },
		{ ".vhd", DISK_FORMAT_VHD },   { ".avhd", DISK_FORMAT_VHD },
		{ ".raw", DISK_FORMAT_RAW },   { ".img", DISK_FORMAT_RAW },
	};
	const char *dot = strrchr(path, '.');
	const char *slash = strrchr(path, '/');

	if (!dot || (slash && dot < slash))
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(exts); i++) {
		if (!strcasecmp(dot, exts[i].ext)) {
			*fmt = exts[i].fmt;
			return 0;
		}
	}
	return -EINVAL;
}

static int parse_format_name(const char *s, enum disk_format *fmt)
{
	if (!strcasecmp(s, "vhdx"))
		*fmt = DISK_FORMAT_VHDX;
	else if (!strcasecmp(s, "vhd") || !strcasecmp(s, "vpc"))
		*fmt = DISK_FORMAT_VHD;
	else if (!strcasecmp(s, "raw"))
		*fmt = DISK_FORMAT_RAW;
	else
		return -EINVAL;
	return 0;
}

int disk_cli_parse_type(const char *s, enum disk_type *type)
{
	if (!strcasecmp(s, "fixed"))
		*type = DISK_TYPE_FIXED;
	else if (!strcasecmp(s, "dynamic"))
		*type = DISK_TYPE_DYNAMIC;
	else if (!strcasecmp(s, "differencing"))
		*type = DISK_TYPE_DIFFERENCING;
	else
		return -EINVAL;
	return 0;
}

int disk_cli_parse_size(const char *verb, const char *opt, const char *s, uint64_t *out)
{
	int ret = parse_size(s, 1, out);

	if (ret == -ERANGE)
		return disk_cli_usage_error(verb, "%s '%s' is too large", opt, s);
	if (ret)
		return disk_cli_usage_error(verb,
					    "%s '%s' is not a size (write e.g. 512, 64K, 10M, 1.5G)",
					    opt, s);
	if (*out == 0)
		return disk_cli_usage_error(verb, "%s must be larger than zero", opt);
	return 0;
}

static int parse_sector(const char *verb, const char *opt, const char *s, uint32_t *out)
{
	if (!strcmp(s, "512"))
		*out = 512;
	else if (!strcmp(s, "4096") || !strcasecmp(s, "4K"))
		*out = 4096;
	else
		return disk_cli_usage_error(verb, "%s must be 512 or 4096, not '%s'", opt, s);
	return 0;
}

static const char *advice_for(int ret)
{
	switch (ret) {
	case -ENOENT:
		return "check the path; if a parent disk was moved, point the child at it with "
		       "'cloison disk set-parent CHILD PARENT'";
	case -EEXIST:
		return "choose another name or remove the existing file first";
	case -EACCES:
	case -EPERM:
		return "check the file's permissions";
	case -EROFS:
		return "the file system is read-only";
	case -ENOSPC:
		return "free some space on the file system";
	case -EBUSY:
		return "another program has the image open";
	default:
		return NULL;
	}
}

static int status_for(int ret)
{
	switch (ret) {
	case -ENOENT:
		return CLI_EXIT_NOT_FOUND;
	case -EEXIST:
	case -EBUSY:
	case -ENOTEMPTY:
		return CLI_EXIT_CONFLICT;
	case -EACCES:
	case -EPERM:
		return CLI_EXIT_DENIED;
	default:
		return CLI_EXIT_ERROR;
	}
}

int disk_cli_fail(const char *path, int ret, const struct disk_error *err)
{
	const char *advice = advice_for(ret);

	if (err && err->msg[0])
		fprintf(stderr, "cloison: error: %s\n", err->msg);
	else
		fprintf(stderr, "cloison: error: %s: %s\n", path, strerror(-ret));
	if (advice)
		fprintf(stderr, "  (%s)\n", advice);
	return status_for(ret);
}

int disk_cli_require_file(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return cli_error(CLI_EXIT_NOT_FOUND, "%s: no such file", path);
		return cli_error(status_for(-errno), "%s: %s", path, strerror(errno));
	}
	if (S_ISDIR(st.st_mode))
		return cli_error(CLI_EXIT_ERROR, "%s: is a directory, not a disk image", path);
	return 0;
}

/* ---- info -------------------------------------------------------------- */

static const char *sz(uint64_t bytes, char *buf, size_t len)
{
	return format_size(bytes, buf, len);
}

static double percent(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* One image's facts as a JSON object (without the chain). */
static json_t *info_json_one(const struct disk_info *in, const char *path)
{
	char id[GUID_STR_LEN];
	json_t *o = json_object();

	json_object_set_new(o, "path", json_string(path));
	json_object_set_new(o, "format", json_string(disk_format_name(in->format)));
	json_object_set_new(o, "type", json_string(disk_type_name(in->type)));
	json_object_set_new(o, "virtual_size", json_integer((json_int_t)in->virtual_size));
	json_object_set_new(o, "file_size", json_integer((json_int_t)in->file_size));
	json_object_set_new(o, "allocated", json_integer((json_int_t)in->allocated));
	json_object_set_new(o, "allocated_percent",
			    json_real(percent(in->allocated, in->virtual_size)));
	json_object_set_new(o, "block_size", json_integer(in->block_size));
	json_object_set_new(o, "logical_sector_size", json_integer(in->logical_sector));
	json_object_set_new(o, "physical_sector_size", json_integer(in->physical_sector));
	if (in->format == DISK_FORMAT_RAW)
		json_object_set_new(o, "disk_id", json_null());
	else
		json_object_set_new(o, "disk_id", json_string(guid_to_string(&in->disk_id, id)));
	json_object_set_new(o, "log_replayed", json_boolean(in->log_replayed));
	return o;
}

static void print_info_human(const struct disk_info *in, const char *path)
{
	char a[32], b[32];

	printf("image:          %s\n", path);
	printf("format:         %s\n", disk_format_name(in->format));
	printf("type:           %s\n", disk_type_name(in->type));
	printf("virtual size:   %s (%llu bytes)\n", sz(in->virtual_size, a, sizeof(a)),
	       (unsigned long long)in->virtual_size);
	printf("file size:      %s (%llu bytes)\n", sz(in->file_size, a, sizeof(a)),
	       (unsigned long long)in->file_size);
	printf("allocated:      %s (%llu bytes, %.1f%%)\n", sz(in->allocated, a, sizeof(a)),
	       (unsigned long long)in->allocated, percent(in->allocated, in->virtual_size));
	if (in->block_size)
		printf("block size:     %s\n", sz(in->block_size, b, sizeof(b)));
	printf("sector size:    %u logical, %u physical\n", in->logical_sector,
	       in->physical_sector);
	if (in->format != DISK_FORMAT_RAW) {
		char id[GUID_STR_LEN];
		printf("disk id:        %s\n", guid_to_string(&in->disk_id, id));
	}
	if (in->format == DISK_FORMAT_VHDX)
		printf("log replayed:   %s\n", in->log_replayed ? "yes (in memory)" : "no");
}

/* Prints d (and its chain) as text or JSON. parent_error is set when d was
 * opened without its parent because the parent could not be opened. */
static void print_info(struct disk *d, bool json, const char *parent_error)
{
	struct disk_info in;
	char id[GUID_STR_LEN];

	disk_get_info(d, &in);
	if (json) {
		json_t *o = info_json_one(&in, disk_path(d));
		json_t *chain = json_array();

		if (in.has_parent) {
			json_t *p = json_object();
			json_object_set_new(p, "path", json_string(in.parent_path));
			json_object_set_new(p, "linkage",
					    json_string(guid_to_string(&in.parent_linkage, id)));
			json_object_set_new(p, "present", json_boolean(!parent_error));
			if (parent_error)
				json_object_set_new(p, "error", json_string(parent_error));
			json_object_set_new(o, "parent", p);
		} else {
			json_object_set_new(o, "parent", json_null());
		}
		for (struct disk *p = disk_parent(d); p; p = disk_parent(p)) {
			struct disk_info pin;
			disk_get_info(p, &pin);
			json_array_append_new(chain, info_json_one(&pin, disk_path(p)));
		}
		json_object_set_new(o, "chain", chain);
		json_object_set_new(o, "parent_missing", json_boolean(parent_error != NULL));
		json_dumpf(o, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(o);
		return;
	}
	print_info_human(&in, disk_path(d));
	if (!in.has_parent)
		return;
	printf("parent linkage: %s\n", guid_to_string(&in.parent_linkage, id));
	if (parent_error) {
		printf("parent:         %s (MISSING)\n", in.parent_path);
		printf("                %s\n", parent_error);
		return;
	}
	printf("parent chain:\n");
	for (struct disk *p = disk_parent(d); p; p = disk_parent(p)) {
		struct disk_info pin;
		char a[32];
		disk_get_info(p, &pin);
		printf("  %s (%s, %s, %s allocated)\n", disk_path(p), disk_format_name(pin.format),
		       disk_type_name(pin.type), sz(pin.allocated, a, sizeof(a)));
	}
}

/* Opens path read-only for inspection; when the chain cannot be opened
 * (missing or wrong parent) falls back to the image alone and returns the
 * reason in parent_error. Returns 0 or a cli_exit status (printed). */
static int open_for_inspection(const char *path, struct disk **d, struct disk_error *parent_error,
			       bool *no_parent)
{
	struct disk_error err = { { 0 } }, err2 = { { 0 } };
	int ret, ret2;

	*no_parent = false;
	ret = disk_open(path, DISK_OPEN_RDONLY, d, &err);
	if (!ret)
		return 0;
	ret2 = disk_open(path, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, d, &err2);
	if (!ret2) {
		struct disk_info in;
		disk_get_info(*d, &in);
		if (in.has_parent) {
			*parent_error = err;
			if (!parent_error->msg[0])
				snprintf(parent_error->msg, sizeof(parent_error->msg),
					 "%s: cannot open its parent: %s", path, strerror(-ret));
			*no_parent = true;
			return 0;
		}
		disk_close(*d);
		*d = NULL;
	}
	return disk_cli_fail(path, ret, &err);
}

static int disk_info_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct disk_error parent_error = { { 0 } };
	struct disk *d;
	bool json = false, no_parent;
	int c, st;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			return disk_cli_usage("info", true);
		default:
			return disk_cli_bad_option("info", c, argv);
		}
	}
	if (optind >= argc)
		return disk_cli_usage_error("info", "missing FILE");
	if (argc - optind > 1)
		return disk_cli_usage_error("info", "unexpected argument '%s'", argv[optind + 1]);
	st = disk_cli_require_file(argv[optind]);
	if (st)
		return st;
	st = open_for_inspection(argv[optind], &d, &parent_error, &no_parent);
	if (st)
		return st;
	print_info(d, json, no_parent ? parent_error.msg : NULL);
	disk_close(d);
	return CLI_EXIT_OK;
}

/* ---- create ------------------------------------------------------------ */

struct create_args {
	const char *path;
	struct disk_create_opts o;
	bool have_type, have_format, json, help;
	uint64_t block_size;
};

static int create_parse(int argc, char **argv, struct create_args *a)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "type", required_argument, NULL, 't' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "sector-size", required_argument, NULL, 'l' },
		{ "logical-sector-size", required_argument, NULL, 'l' },
		{ "physical-sector-size", required_argument, NULL, 'p' },
		{ "parent", required_argument, NULL, 'P' },
		{ "format", required_argument, NULL, 'f' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, st;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		st = 0;
		switch (c) {
		case 's':
			st = disk_cli_parse_size("create", "--size", optarg, &a->o.size);
			break;
		case 't':
			if (disk_cli_parse_type(optarg, &a->o.type))
				return disk_cli_usage_error(
					"create", "--type must be fixed, dynamic or differencing, not '%s'",
					optarg);
			a->have_type = true;
			break;
		case 'b':
			st = disk_cli_parse_size("create", "--block-size", optarg, &a->block_size);
			break;
		case 'l':
			st = parse_sector("create", "--sector-size", optarg, &a->o.logical_sector);
			break;
		case 'p':
			st = parse_sector("create", "--physical-sector-size", optarg,
					  &a->o.physical_sector);
			break;
		case 'P':
			a->o.parent = optarg;
			break;
		case 'f':
			if (parse_format_name(optarg, &a->o.format))
				return disk_cli_usage_error(
					"create", "--format must be vhdx, vhd or raw, not '%s'", optarg);
			a->have_format = true;
			break;
		case 'j':
			a->json = true;
			break;
		case 'h':
			a->help = true;
			return 0;
		default:
			return disk_cli_bad_option("create", c, argv);
		}
		if (st)
			return st;
	}
	if (optind >= argc)
		return disk_cli_usage_error("create", "missing FILE");
	if (argc - optind > 1)
		return disk_cli_usage_error("create", "unexpected argument '%s'", argv[optind + 1]);
	a->path = argv[optind];
	return 0;
}

/* Checks the combination of options once they are all known. */
static int create_validate(struct create_args *a)
{
	if (!a->have_format && disk_cli_format_from_path(a->path, &a->o.format))
		return disk_cli_usage_error("create",
					    "cannot tell the format of '%s' from its extension: "
					    "use .vhdx, .avhdx, .vhd, .raw or .img (or --format)",
					    a->path);
	if (a->o.parent && !a->have_type)
		a->o.type = DISK_TYPE_DIFFERENCING;
	else if (!a->have_type)
		a->o.type = a->o.format == DISK_FORMAT_RAW ? DISK_TYPE_FIXED : DISK_TYPE_DYNAMIC;
	if (a->o.type == DISK_TYPE_DIFFERENCING && !a->o.parent)
		return disk_cli_usage_error("create", "a differencing disk needs --parent PARENT");
	if (a->o.parent && a->o.type != DISK_TYPE_DIFFERENCING)
		return disk_cli_usage_error("create", "--parent makes a differencing disk; it "
						      "cannot be combined with --type %s",
					    disk_type_name(a->o.type));
	if (!a->o.parent && !a->o.size)
		return disk_cli_usage_error("create", "missing --size SIZE");
	if (a->o.format == DISK_FORMAT_RAW) {
		if (a->o.type == DISK_TYPE_DIFFERENCING)
			return disk_cli_usage_error("create", "raw images cannot be differencing: "
							      "use .vhdx or .vhd");
		if (a->block_size)
			return disk_cli_usage_error("create", "raw images have no --block-size");
	}
	if (a->block_size) {
		if (a->block_size > UINT32_MAX || (a->block_size & (a->block_size - 1)))
			return disk_cli_usage_error("create",
						    "--block-size must be a power of two "
						    "(e.g. 1M, 2M, 32M, 256M)");
		a->o.block_size = (uint32_t)a->block_size;
	}
	if (a->o.size && a->o.size % (a->o.logical_sector ? a->o.logical_sector : 512))
		return disk_cli_usage_error("create", "--size must be a multiple of the %u-byte "
						      "sector size",
					    a->o.logical_sector ? a->o.logical_sector : 512);
	return 0;
}

static int disk_create_cmd(int argc, char **argv)
{
	struct create_args a = { 0 };
	struct disk_error err = { { 0 } };
	struct stat st;
	int ret;

	ret = create_parse(argc, argv, &a);
	if (ret)
		return ret;
	if (a.help)
		return disk_cli_usage("create", true);
	ret = create_validate(&a);
	if (ret)
		return ret;
	if (a.o.parent) {
		ret = disk_cli_require_file(a.o.parent);
		if (ret)
			return ret;
	}
	if (lstat(a.path, &st) == 0)
		return cli_error(CLI_EXIT_CONFLICT,
				 "%s: already exists; choose another name or remove it first", a.path);
	ret = disk_create(a.path, &a.o, &err);
	if (ret)
		return disk_cli_fail(a.path, ret, &err);
	if (a.json) {
		struct disk *d;
		struct disk_error perr = { { 0 } };
		bool no_parent;
		int s = open_for_inspection(a.path, &d, &perr, &no_parent);
		if (s)
			return s;
		print_info(d, true, no_parent ? perr.msg : NULL);
		disk_close(d);
	}
	return CLI_EXIT_OK;
}

/* ---- check ------------------------------------------------------------- */

static void check_json(const char *path, int problems, const char *report, bool repair)
{
	json_t *o = json_object(), *f = json_array();
	const char *p = report;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		if (n)
			json_array_append_new(f, json_stringn(p, n));
		p += n + (nl ? 1 : 0);
	}
	json_object_set_new(o, "path", json_string(path));
	json_object_set_new(o, "clean", json_boolean(problems == 0));
	json_object_set_new(o, "problems", json_integer(problems));
	json_object_set_new(o, "repair", json_boolean(repair));
	json_object_set_new(o, "findings", f);
	json_dumpf(o, stdout, JSON_INDENT(2));
	fputc('\n', stdout);
	json_decref(o);
}

/* Appends one line to report (bounded). */
static void report_add(char *report, size_t len, const char *line)
{
	size_t used = strlen(report);

	if (used + 1 < len)
		snprintf(report + used, len - used, "%s\n", line);
}

static int disk_check_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repair", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct disk_error err = { { 0 } };
	bool json = false, repair = false;
	const char *path;
	char *report;
	int c, st, ret;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			repair = true;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			return disk_cli_usage("check", true);
		default:
			return disk_cli_bad_option("check", c, argv);
		}
	}
	if (optind >= argc)
		return disk_cli_usage_error("check", "missing FILE");
	if (argc - optind > 1)
		return disk_cli_usage_error("check", "unexpected argument '%s'", argv[optind + 1]);
	path = argv[optind];
	st = disk_cli_require_file(path);
	if (st)
		return st;
	report = calloc(1, CHECK_REPORT_LEN);
	if (!report)
		return cli_error(CLI_EXIT_ERROR, "out of memory");
	ret = disk_check(path, repair, report, CHECK_REPORT_LEN, &err);
	if (ret < 0) {
		/* Metadata too damaged to even walk: that is the finding. */
		if (json) {
			report_add(report, CHECK_REPORT_LEN, err.msg[0] ? err.msg : strerror(-ret));
			check_json(path, 1, report, repair);
			free(report);
			return CLI_EXIT_ERROR;
		}
		free(report);
		return disk_cli_fail(path, ret, &err);
	}
	if (json) {
		check_json(path, ret, report, repair);
	} else {
		fputs(report, stdout);
		if (ret)
			printf("%s: %d problem%s found\n", path, ret, ret == 1 ? "" : "s");
		else
			printf("%s: no problems found\n", path);
	}
	free(report);
	return ret ? CLI_EXIT_ERROR : CLI_EXIT_OK;
}

/* ---- resize ------------------------------------------------------------ */

static int disk_resize_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct disk_error err = { { 0 } };
	const char *path, *size_arg = NULL;
	uint64_t size, cur;
	struct disk *d;
	bool grow_by;
	int c, st, ret;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			size_arg = optarg;
			break;
		case 'h':
			return disk_cli_usage("resize", true);
		default:
			return disk_cli_bad_option("resize", c, argv);
		}
	}
	if (optind >= argc)
		return disk_cli_usage_error("resize", "missing FILE");
	if (argc - optind > 1)
		return disk_cli_usage_error("resize", "unexpected argument '%s'", argv[optind + 1]);
	if (!size_arg)
		return disk_cli_usage_error("resize", "missing --size SIZE");
	path = argv[optind];
	grow_by = size_arg[0] == '+';
	st = disk_cli_parse_size("resize", "--size", size_arg + grow_by, &size);
	if (st)
		return st;
	st = disk_cli_require_file(path);
	if (st)
		return st;
	ret = disk_open(path, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &d, &err);
	if (ret)
		return disk_cli_fail(path, ret, &err);
	cur = disk_size(d);
	if (size % disk_sector_size(d)) {
		uint32_t sec = disk_sector_size(d);
		disk_close(d);
		return disk_cli_usage_error("resize", "--size must be a multiple of %s's %u-byte "
						      "sectors",
					    path, sec);
	}
	disk_close(d);
	if (grow_by) {
		if (size > UINT64_MAX - cur)
			return disk_cli_usage_error("resize", "--size +%s is too large", size_arg + 1);
		size += cur;
	}
	if (size == cur) {
		printf("%s: already %llu bytes; nothing to do\n", path, (unsigned long long)cur);
		return CLI_EXIT_OK;
	}
	ret = disk_resize(path, size, &err);
	if (ret == -ENOTEMPTY) {
		if (err.msg[0])
			fprintf(stderr, "cloison: error: %s\n", err.msg);
		else
			fprintf(stderr, "cloison: error: %s: cannot shrink to %llu bytes: the part "
					"past that holds data\n",
				path, (unsigned long long)size);
		fprintf(stderr, "  (nothing was changed; run 'cloison disk compact %s' if that part "
				"is all zeroes, or choose a larger size)\n",
			path);
		return CLI_EXIT_CONFLICT;
	}
	if (ret)
		return disk_cli_fail(path, ret, &err);
	return CLI_EXIT_OK;
}

/* ---- set-parent -------------------------------------------------------- */

static int disk_set_parent_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct disk_error err = { { 0 } };
	int c, st, ret;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h')
			return disk_cli_usage("set-parent", true);
		return disk_cli_bad_option("set-parent", c, argv);
	}
	if (argc - optind < 2)
		return disk_cli_usage_error("set-parent", optind >= argc ? "missing CHILD and PARENT"
									 : "missing PARENT");
	if (argc - optind > 2)
		return disk_cli_usage_error("set-parent", "unexpected argument '%s'",
					    argv[optind + 2]);
	st = disk_cli_require_file(argv[optind]);
	if (!st)
		st = disk_cli_require_file(argv[optind + 1]);
	if (st)
		return st;
	ret = disk_set_parent(argv[optind], argv[optind + 1], &err);
	if (ret == -EINVAL && err.msg[0]) {
		fprintf(stderr, "cloison: error: %s\n", err.msg);
		fprintf(stderr, "  (nothing was changed; give the disk %s was made from)\n",
			argv[optind]);
		return CLI_EXIT_CONFLICT;
	}
	if (ret)
		return disk_cli_fail(argv[optind], ret, &err);
	return CLI_EXIT_OK;
}
