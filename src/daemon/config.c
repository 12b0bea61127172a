/* VM configuration: the versioned JSON schema of `<GUID>.json` and the
 * parsing of create/set request bodies. Every field of a body is checked
 * for type and range here, once; unknown fields are refused by name. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/daemon.h"

#define MEMORY_MIN (64ULL << 20)
#define MEMORY_MAX (1ULL << 40)
#define CMDLINE_MAX 65535 /* what the worker's --cmdline takes */
#define NOTES_MAX 4096

static const char *const stop_action_names[] = { "keep-running", "shutdown", "turn-off",
						 "save" };
static const char *const start_action_names[] = { "nothing", "start" };

const char *vm_stop_action_name(enum vm_stop_action a)
{
	return stop_action_names[a];
}

const char *vm_start_action_name(enum vm_start_action a)
{
	return start_action_names[a];
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

bool vm_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > VM_NAME_MAX || name[0] == '.' || name[0] == '-')
		return false;
	/* The daemon's own files share the state directory with VM folders. */
	if (!strncmp(name, "cloisond.", 9))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

void vm_config_clear(struct vm_config *c)
{
	free(c->kernel);
	free(c->initrd);
	free(c->cmdline);
	free(c->notes);
	for (unsigned i = 0; i < c->n_disks; i++)
		free(c->disks[i].path);
	for (unsigned i = 0; i < c->n_nics; i++)
		free(c->nics[i].tap);
	for (unsigned i = 0; i < c->n_operators; i++)
		free(c->operators[i]);
	memset(c, 0, sizeof(*c));
}

static int dup_opt(char **dst, const char *src)
{
	*dst = NULL;
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : -ENOMEM;
}

int vm_config_copy(struct vm_config *dst, const struct vm_config *src)
{
	int r = 0;

	*dst = *src;
	r |= dup_opt(&dst->kernel, src->kernel);
	r |= dup_opt(&dst->initrd, src->initrd);
	r |= dup_opt(&dst->cmdline, src->cmdline);
	r |= dup_opt(&dst->notes, src->notes);
	for (unsigned i = 0; i < src->n_disks; i++)
		r |= dup_opt(&dst->disks[i].path, src->disks[i].path);
	for (unsigned i = 0; i < src->n_nics; i++)
		r |= dup_opt(&dst->nics[i].tap, src->nics[i].tap);
	for (unsigned i = 0; i < src->n_operators; i++)
		r |= dup_opt(&dst->operators[i], src->operators[i]);
	if (r) {
		vm_config_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

json_t *vm_config_to_json(const struct vm_config *c)
{
	char idbuf[GUID_STR_LEN];
	json_t *disks = json_array(), *nics = json_array(), *ops = json_array();

	for (unsigned i = 0; i < c->n_disks; i++)
		json_array_append_new(disks, json_pack("{s:s, s:b}", "path", c->disks[i].path,
						       "readonly", c->disks[i].readonly));
	for (unsigned i = 0; i < c->n_nics; i++)
		json_array_append_new(nics, json_pack("{s:s, s:s, s:b}", "tap", c->nics[i].tap,
						      "mac", c->nics[i].mac, "mac_auto",
						      c->nics[i].mac_auto));
	for (unsigned i = 0; i < c->n_operators; i++)
		json_array_append_new(ops, json_string(c->operators[i]));
	return json_pack("{s:i, s:s, s:s, s:s, s:i, s:i, s:I, s:s, s:s?, s:s, s:o, s:o, s:s, s:i,"
			 " s:s, s:s, s:o}",
			 "schema_version", CONFIG_SCHEMA_VERSION, "id", guid_to_string(&c->id, idbuf),
			 "name", c->name, "created", c->created, "generation", (int)c->generation,
			 "cpus", (int)c->cpus, "memory", (json_int_t)c->memory, "kernel",
			 c->kernel ? c->kernel : "", "initrd", c->initrd, "cmdline",
			 c->cmdline ? c->cmdline : "", "disks", disks, "network_adapters", nics,
			 "automatic_start_action", vm_start_action_name(c->start_action),
			 "automatic_start_delay", (int)c->start_delay, "automatic_stop_action",
			 vm_stop_action_name(c->stop_action), "notes", c->notes ? c->notes : "",
			 "operators", ops);
}

/* ---- typed field readers: each names the field in its error ---- */

static int get_string(json_t *v, const char *field, size_t max, char **out, char *err,
		      size_t errlen)
{
	if (!json_is_string(v))
		return fail(err, errlen, "field '%s' must be a string", field);
	if (json_string_length(v) > max)
		return fail(err, errlen, "field '%s' is longer than %zu bytes", field, max);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fail(err, errlen, "field '%s' contains a NUL character", field);
	char *s = strdup(json_string_value(v));
	if (!s)
		return -ENOMEM;
	free(*out);
	*out = s;
	return 0;
}

static int get_uint(json_t *v, const char *field, uint64_t min, uint64_t max, uint64_t *out,
		    char *err, size_t errlen)
{
	if (!json_is_integer(v))
		return fail(err, errlen, "field '%s' must be an integer", field);
	json_int_t n = json_integer_value(v);
	if (n < 0 || (uint64_t)n < min || (uint64_t)n > max)
		return fail(err, errlen, "field '%s' must be between %llu and %llu (got %lld)",
			    field, (unsigned long long)min, (unsigned long long)max,
			    (long long)n);
	*out = (uint64_t)n;
	return 0;
}

static int get_enum(json_t *v, const char *field, const char *const *names, unsigned n,
		    unsigned *out, char *err, size_t errlen)
{
	if (json_is_string(v))
		for (unsigned i = 0; i < n; i++)
			if (!strcmp(json_string_value(v), names[i])) {
				*out = i;
				return 0;
			}
	char known[256] = "";
	for (unsigned i = 0; i < n; i++) {
		strncat(known, names[i], sizeof(known) - strlen(known) - 1);
		if (i + 1 < n)
			strncat(known, ", ", sizeof(known) - strlen(known) - 1);
	}
	return fail(err, errlen, "field '%s' must be one of: %s", field, known);
}

static int get_path(json_t *v, const char *field, char **out, char *err, size_t errlen)
{
	int r = get_string(v, field, 4000, out, err, errlen);
	if (r)
		return r;
	if ((*out)[0] != '/')
		return fail(err, errlen, "field '%s' must be an absolute path (got '%s')", field,
			    *out);
	return 0;
}

/* ---- arrays ---- */

static int parse_disk(json_t *v, unsigned idx, struct vm_disk *disk, char *err, size_t errlen)
{
	char field[64];

	memset(disk, 0, sizeof(*disk));
	snprintf(field, sizeof(field), "disks[%u]", idx);
	if (json_is_string(v))
		return get_path(v, field, &disk->path, err, errlen);
	if (!json_is_object(v))
		return fail(err, errlen, "field '%s' must be a path or an object {path, readonly}",
			    field);
	const char *key;
	json_t *val;
	json_object_foreach(v, key, val) {
		int r;
		if (!strcmp(key, "path")) {
			r = get_path(val, "disks[].path", &disk->path, err, errlen);
		} else if (!strcmp(key, "readonly")) {
			if (!json_is_boolean(val))
				return fail(err, errlen, "field '%s.readonly' must be a boolean",
					    field);
			disk->readonly = json_is_true(val);
			r = 0;
		} else {
			r = fail(err, errlen, "unknown field '%s.%s' (known: path, readonly)",
				 field, key);
		}
		if (r)
			return r;
	}
	if (!disk->path)
		return fail(err, errlen, "field '%s.path' is required", field);
	return 0;
}

static int parse_disks(json_t *v, struct vm_config *c, bool append, char *err, size_t errlen)
{
	if (!json_is_array(v))
		return fail(err, errlen, "field 'disks' must be an array");
	if (!append) {
		for (unsigned i = 0; i < c->n_disks; i++)
			free(c->disks[i].path);
		c->n_disks = 0;
	}
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e) {
		if (c->n_disks >= VM_MAX_DISKS)
			return fail(err, errlen, "a VM has at most %d disks", VM_MAX_DISKS);
		int r = parse_disk(e, (unsigned)i, &c->disks[c->n_disks], err, errlen);
		if (r) {
			free(c->disks[c->n_disks].path);
			return r;
		}
		for (unsigned k = 0; k < c->n_disks; k++)
			if (!strcmp(c->disks[k].path, c->disks[c->n_disks].path)) {
				fail(err, errlen, "disk '%s' is attached twice",
				     c->disks[k].path);
				free(c->disks[c->n_disks].path);
				return -EINVAL;
			}
		c->n_disks++;
	}
	return 0;
}

static int remove_disks(json_t *v, struct vm_config *c, char *err, size_t errlen)
{
	size_t i;
	json_t *e;

	if (!json_is_array(v))
		return fail(err, errlen, "field 'remove_disks' must be an array of paths");
	json_array_foreach(v, i, e) {
		if (!json_is_string(e))
			return fail(err, errlen, "field 'remove_disks[%zu]' must be a path", i);
		unsigned k;
		for (k = 0; k < c->n_disks; k++)
			if (!strcmp(c->disks[k].path, json_string_value(e)))
				break;
		if (k == c->n_disks)
			return fail(err, errlen, "disk '%s' is not attached to this VM",
				    json_string_value(e));
		free(c->disks[k].path);
		memmove(&c->disks[k], &c->disks[k + 1], (c->n_disks - k - 1) * sizeof(c->disks[0]));
		c->n_disks--;
	}
	return 0;
}

static bool tap_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 15)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] == '/' || s[i] == ',' || s[i] == '=' || s[i] <= ' ')
			return false;
	return true;
}

static int parse_nic(json_t *v, unsigned idx, struct vm_nic *nic, char *err, size_t errlen)
{
	const char *key;
	json_t *val;

	memset(nic, 0, sizeof(*nic));
	if (!json_is_object(v))
		return fail(err, errlen, "field 'network_adapters[%u]' must be an object {tap, mac}",
			    idx);
	json_object_foreach(v, key, val) {
		int r = 0;
		if (!strcmp(key, "tap")) {
			r = get_string(val, "network_adapters[].tap", 15, &nic->tap, err, errlen);
			if (!r && !tap_name_valid(nic->tap))
				r = fail(err, errlen, "'%s' is not a valid tap device name",
					 nic->tap);
		} else if (!strcmp(key, "mac")) {
			if (json_is_null(val) || (json_is_string(val) &&
						  (!strcmp(json_string_value(val), "auto") ||
						   !json_string_length(val))))
				continue;
			if (!json_is_string(val) || macpool_parse(json_string_value(val), nic->mac))
				r = fail(err, errlen,
					 "field 'network_adapters[%u].mac' must be a unicast MAC "
					 "like 02:00:00:00:00:01 or \"auto\"",
					 idx);
		} else if (!strcmp(key, "mac_auto")) {
			continue; /* output-only; accepted so a shown config can be fed back */
		} else {
			r = fail(err, errlen, "unknown field 'network_adapters[%u].%s' (known: tap, mac)",
				 idx, key);
		}
		if (r)
			return r;
	}
	if (!nic->tap)
		return fail(err, errlen, "field 'network_adapters[%u].tap' is required", idx);
	nic->mac_auto = nic->mac[0] == 0;
	return 0;
}

static int parse_nics(json_t *v, struct vm_config *c, char *err, size_t errlen)
{
	size_t i;
	json_t *e;

	if (!json_is_array(v))
		return fail(err, errlen, "field 'network_adapters' must be an array");
	if (json_array_size(v) > VM_MAX_NICS)
		return fail(err, errlen, "a VM has at most %d network adapters", VM_MAX_NICS);
	for (unsigned k = 0; k < c->n_nics; k++)
		free(c->nics[k].tap);
	c->n_nics = 0;
	json_array_foreach(v, i, e) {
		int r = parse_nic(e, (unsigned)i, &c->nics[c->n_nics], err, errlen);
		if (r) {
			free(c->nics[c->n_nics].tap);
			return r;
		}
		c->n_nics++;
	}
	return 0;
}

static bool user_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' || s[i] == '.'))
			return false;
	return true;
}

static int find_operator(const struct vm_config *c, const char *u)
{
	for (unsigned i = 0; i < c->n_operators; i++)
		if (!strcmp(c->operators[i], u))
			return (int)i;
	return -1;
}

/* mode: 0 replace, 1 add, 2 remove */
static int parse_operators(json_t *v, const char *field, int mode, struct vm_config *c,
			   char *err, size_t errlen)
{
	size_t i;
	json_t *e;

	if (!json_is_array(v))
		return fail(err, errlen, "field '%s' must be an array of user names", field);
	json_array_foreach(v, i, e) {
		if (!json_is_string(e) || !user_name_valid(json_string_value(e)))
			return fail(err, errlen, "field '%s[%zu]' must be a user name", field, i);
	}
	if (mode == 0) {
		for (unsigned k = 0; k < c->n_operators; k++)
			free(c->operators[k]);
		c->n_operators = 0;
	}
	json_array_foreach(v, i, e) {
		const char *u = json_string_value(e);
		int at = find_operator(c, u);
		if (mode == 2) {
			if (at < 0)
				return fail(err, errlen, "'%s' is not an operator of this VM", u);
			free(c->operators[at]);
			c->operators[at] = c->operators[--c->n_operators];
			continue;
		}
		if (at >= 0)
			continue;
		if (c->n_operators >= VM_MAX_OPERATORS)
			return fail(err, errlen, "a VM has at most %d operators", VM_MAX_OPERATORS);
		if (!(c->operators[c->n_operators] = strdup(u)))
			return -ENOMEM;
		c->n_operators++;
	}
	return 0;
}

/* ---- boot files ---- */

static const char *file_kind(mode_t m)
{
	return S_ISDIR(m)    ? "a directory"
	       : S_ISFIFO(m) ? "a FIFO"
	       : S_ISCHR(m)  ? "a character device"
	       : S_ISBLK(m)  ? "a block device"
	       : S_ISSOCK(m) ? "a socket"
			     : "not a regular file";
}

/* A boot file must be a readable regular file. It is opened O_NONBLOCK
 * so a FIFO cannot block the open, and checked with fstat on what was
 * opened. */
static int check_boot_file(const char *what, const char *path, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;
		return fail(err, errlen, "cannot read the %s '%s': %s", what, path, strerror(e));
	}
	int r = fstat(fd, &st);
	close(fd);
	if (r < 0)
		return fail(err, errlen, "cannot read the %s '%s': %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fail(err, errlen, "the %s '%s' is %s; give the path of a %s image file", what,
			    path, file_kind(st.st_mode), what);
	if (st.st_size == 0)
		return fail(err, errlen, "the %s '%s' is empty", what, path);
	return 0;
}

int vm_config_check_boot_files(const struct vm_config *c, char *err, size_t errlen)
{
	int r = check_boot_file("kernel", c->kernel, err, errlen);

	if (!r && c->initrd)
		r = check_boot_file("initrd", c->initrd, err, errlen);
	return r;
}

/* ---- the body of POST /v1/vms and PATCH /v1/vms/{vm} ---- */

/* The fields apply_field marks *hw for. */
static const char *const hardware_fields[] = {
	"cpus",	   "memory",	   "kernel",	   "initrd",	       "cmdline",
	"disks",   "add_disks",	   "remove_disks", "network_adapters",
};

bool vm_config_body_needs_off(json_t *body)
{
	for (size_t i = 0; i < sizeof(hardware_fields) / sizeof(hardware_fields[0]); i++)
		if (json_object_get(body, hardware_fields[i]))
			return true;
	return false;
}

static const char *const create_fields =
	"name, generation, cpus, memory, kernel, initrd, cmdline, disks, network_adapters, "
	"automatic_start_action, automatic_start_delay, automatic_stop_action, notes, operators";
static const char *const set_fields =
	"cpus, memory, kernel, initrd, cmdline, disks, add_disks, remove_disks, network_adapters, "
	"automatic_start_action, automatic_start_delay, automatic_stop_action, notes, operators, "
	"add_operators, remove_operators";

static int apply_field(struct vm_config *c, const char *key, json_t *v, bool create,
		       bool *hw, char *err, size_t errlen)
{
	uint64_t n;
	unsigned e;
	int r;

	if (create && !strcmp(key, "name")) {
		char *name = NULL;
		r = get_string(v, "name", 1024, &name, err, errlen);
		if (!r && !vm_name_valid(name))
			r = fail(err, errlen,
				 "'%s' is not a valid VM name: use 1-64 letters, digits, '.', '_' "
				 "or '-', not starting with '.' or '-' (names 'cloisond.*' are "
				 "reserved)",
				 name);
		if (!r)
			snprintf(c->name, sizeof(c->name), "%s", name);
		free(name);
		return r;
	}
	if (create && !strcmp(key, "generation")) {
		r = get_uint(v, "generation", 1, 1, &n, err, errlen);
		c->generation = (unsigned)n;
		return r == -EINVAL ? fail(err, errlen,
					   "field 'generation' must be 1 (generation 2, UEFI, "
					   "is not supported yet)")
				    : r;
	}
	if (!strcmp(key, "cpus")) {
		*hw = true;
		r = get_uint(v, "cpus", 1, 255, &n, err, errlen);
		c->cpus = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "memory")) {
		*hw = true;
		r = get_uint(v, "memory", MEMORY_MIN, MEMORY_MAX, &n, err, errlen);
		if (!r && n % (1ULL << 20))
			return fail(err, errlen, "field 'memory' must be a multiple of 1 MiB");
		c->memory = n;
		return r;
	}
	if (!strcmp(key, "kernel")) {
		*hw = true;
		return get_path(v, "kernel", &c->kernel, err, errlen);
	}
	if (!strcmp(key, "initrd")) {
		*hw = true;
		if (json_is_null(v)) {
			free(c->initrd);
			c->initrd = NULL;
			return 0;
		}
		return get_path(v, "initrd", &c->initrd, err, errlen);
	}
	if (!strcmp(key, "cmdline")) {
		*hw = true;
		return get_string(v, "cmdline", CMDLINE_MAX, &c->cmdline, err, errlen);
	}
	if (!strcmp(key, "disks") || (!create && !strcmp(key, "add_disks"))) {
		*hw = true;
		return parse_disks(v, c, key[0] == 'a', err, errlen);
	}
	if (!create && !strcmp(key, "remove_disks")) {
		*hw = true;
		return remove_disks(v, c, err, errlen);
	}
	if (!strcmp(key, "network_adapters")) {
		*hw = true;
		return parse_nics(v, c, err, errlen);
	}
	if (!strcmp(key, "automatic_start_action")) {
		r = get_enum(v, key, start_action_names, 2, &e, err, errlen);
		c->start_action = r ? c->start_action : (enum vm_start_action)e;
		return r;
	}
	if (!strcmp(key, "automatic_start_delay")) {
		r = get_uint(v, key, 0, 3600, &n, err, errlen);
		c->start_delay = r ? c->start_delay : (unsigned)n;
		return r;
	}
	if (!strcmp(key, "automatic_stop_action")) {
		r = get_enum(v, key, stop_action_names,
			     sizeof(stop_action_names) / sizeof(stop_action_names[0]), &e, err,
			     errlen);
		c->stop_action = r ? c->stop_action : (enum vm_stop_action)e;
		return r;
	}
	if (!strcmp(key, "notes"))
		return get_string(v, "notes", NOTES_MAX, &c->notes, err, errlen);
	if (!strcmp(key, "operators"))
		return parse_operators(v, key, 0, c, err, errlen);
	if (!create && !strcmp(key, "add_operators"))
		return parse_operators(v, key, 1, c, err, errlen);
	if (!create && !strcmp(key, "remove_operators"))
		return parse_operators(v, key, 2, c, err, errlen);
	return fail(err, errlen, "unknown field '%s' (known: %s)", key,
		    create ? create_fields : set_fields);
}

int vm_config_apply_json(struct vm_config *c, json_t *body, bool create, bool *hw_changed,
			 char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	*hw_changed = false;
	if (!json_is_object(body))
		return fail(err, errlen, "the request body must be a JSON object");
	if (create) {
		c->generation = 1;
		c->cpus = 1;
		c->memory = 256ULL << 20;
	}
	json_object_foreach(body, key, v) {
		int r = apply_field(c, key, v, create, hw_changed, err, errlen);
		if (r)
			return r;
	}
	if (create && !c->name[0])
		return fail(err, errlen, "field 'name' is required");
	if (create && !c->kernel)
		return fail(err, errlen, "field 'kernel' is required (direct kernel boot)");
	if (!c->cmdline && !(c->cmdline = strdup("")))
		return -ENOMEM;
	return 0;
}

int vm_config_from_json(json_t *j, struct vm_config *c, char *err, size_t errlen)
{
	json_t *copy;
	bool hw;
	int r;

	memset(c, 0, sizeof(*c));
	if (!json_is_object(j))
		return fail(err, errlen, "not a JSON object");
	json_t *ver = json_object_get(j, "schema_version");
	if (!json_is_integer(ver) || json_integer_value(ver) != CONFIG_SCHEMA_VERSION)
		return fail(err, errlen, "unsupported schema_version (this cloisond reads %d)",
			    CONFIG_SCHEMA_VERSION);
	json_t *id = json_object_get(j, "id");
	if (!json_is_string(id) || guid_parse(json_string_value(id), &c->id))
		return fail(err, errlen, "field 'id' must be a GUID");
	json_t *created = json_object_get(j, "created");
	if (json_is_string(created))
		snprintf(c->created, sizeof(c->created), "%s", json_string_value(created));

	/* The rest has the create body's form; reuse its checks. */
	copy = json_deep_copy(j);
	if (!copy)
		return -ENOMEM;
	json_object_del(copy, "schema_version");
	json_object_del(copy, "id");
	json_object_del(copy, "created");
	r = vm_config_apply_json(c, copy, true, &hw, err, errlen);
	json_decref(copy);
	if (r)
		return r;
	for (unsigned i = 0; i < c->n_nics; i++) {
		json_t *nic = json_array_get(json_object_get(j, "network_adapters"), i);
		c->nics[i].mac_auto = json_is_true(json_object_get(nic, "mac_auto"));
	}
	return 0;
}

void vm_config_stamp(struct vm_config *c)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(c->created, sizeof(c->created), "%Y-%m-%dT%H:%M:%SZ", &tm);
}
