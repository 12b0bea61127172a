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

#include "daemon/agent.h"
#include "daemon/cgroup.h"
#include "daemon/daemon.h"

#define MEMORY_MIN (64ULL << 20)
#define MEMORY_MAX (1ULL << 40)
#define MEMORY_DYN_MIN (32ULL << 20) /* Hyper-V's smallest minimum */
#define MEMORY_ALIGN (1ULL << 20)
#define CMDLINE_MAX 65535 /* what the worker's --cmdline takes */
#define NOTES_MAX 4096

static const char *const stop_action_names[] = { "keep-running", "shutdown", "turn-off",
						 "save" };
static const char *const start_action_names[] = { "nothing", "start" };

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* ---- configuration versions (docs/decisions.md) ----
 * Hyper-V's numbering: a VM's configuration carries the version of the
 * features it may use; a newer cloison reads older ones, never newer ones,
 * and moving a VM up is explicit (Update-VMVersion). Oldest first. */
struct vm_version {
	const char *name;
	unsigned major, minor;
	const char *description;
};

static const struct vm_version versions[] = {
	{ "5.0", 5, 0,
	  "the first configuration version: every VM made before versions existed" },
	{ "8.0", 8, 0, "adds the VM Generation ID device (ACPI, Microsoft's specification)" },
};
#define N_VERSIONS (sizeof(versions) / sizeof(versions[0]))
#define DEFAULT_VERSION (&versions[N_VERSIONS - 1])

/* The version each feature arrives with (enum vm_feature). */
static const char *const feature_versions[] = { "8.0" };

/* "M.m" with M and m in 0..255, nothing else; 0 or -EINVAL. */
static int version_parse(const char *s, unsigned *major, unsigned *minor)
{
	unsigned long v[2];
	const char *p = s;

	for (int i = 0; i < 2; i++) {
		char *end;

		if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
			return -EINVAL;
		v[i] = strtoul(p, &end, 10);
		if (v[i] > 255 || (i == 0 ? *end != '.' : *end != 0))
			return -EINVAL;
		p = end + 1;
	}
	*major = (unsigned)v[0];
	*minor = (unsigned)v[1];
	return 0;
}

static const struct vm_version *version_find(const char *v)
{
	for (size_t i = 0; i < N_VERSIONS; i++)
		if (!strcmp(versions[i].name, v))
			return &versions[i];
	return NULL;
}

static int version_cmp(const char *a, const char *b)
{
	unsigned am = 0, an = 0, bm = 0, bn = 0;

	version_parse(a, &am, &an);
	version_parse(b, &bm, &bn);
	return am != bm ? (am > bm) - (am < bm) : (an > bn) - (an < bn);
}

json_t *vm_versions_json(void)
{
	json_t *a = json_array();

	for (size_t i = 0; i < N_VERSIONS; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:b}", "name", versions[i].name,
						   "description", versions[i].description, "default",
						   &versions[i] == DEFAULT_VERSION));
	return json_pack("{s:o, s:s, s:s}", "versions", a, "default", DEFAULT_VERSION->name,
			 "oldest", versions[0].name);
}

const char *vm_version_default(void)
{
	return DEFAULT_VERSION->name;
}

static void supported_list(char *buf, size_t len)
{
	buf[0] = 0;
	for (size_t i = 0; i < N_VERSIONS; i++) {
		strncat(buf, versions[i].name, len - strlen(buf) - 1);
		if (i + 1 < N_VERSIONS)
			strncat(buf, ", ", len - strlen(buf) - 1);
	}
}

int vm_version_check(const char *v, char *err, size_t errlen)
{
	unsigned major, minor;
	char known[128];

	if (version_find(v))
		return 0;
	supported_list(known, sizeof(known));
	if (version_parse(v, &major, &minor))
		return fail(err, errlen, "'%.40s' is not a configuration version: versions look "
			    "like 8.0 (this cloisond supports %s)", v, known);
	if (version_cmp(v, DEFAULT_VERSION->name) > 0)
		return fail(err, errlen, "the VM's configuration version %s is newer than this "
			    "cloisond supports (at most %s): run the VM on a host whose cloison "
			    "supports %s, or upgrade cloison here (cloison host versions lists "
			    "what this host supports)", v, DEFAULT_VERSION->name, v);
	return fail(err, errlen, "configuration version %s is not one this cloisond knows "
		    "(it supports %s)", v, known);
}

bool vm_config_has_feature(const struct vm_config *c, enum vm_feature f)
{
	return version_cmp(c->version[0] ? c->version : VM_VERSION_OLDEST,
			   feature_versions[f]) >= 0;
}

const char *vm_feature_version(enum vm_feature f)
{
	return feature_versions[f];
}

json_t *vm_config_features_json(const struct vm_config *c)
{
	bool on = vm_config_has_feature(c, VM_FEATURE_GENERATION_ID) &&
		  !guid_is_zero(&c->generation_id);
	char why[256] = "";

	if (!on)
		snprintf(why, sizeof(why), "needs configuration version %s (this VM is %s): "
			 "cloison vm upgrade-version %s, while it is off",
			 feature_versions[VM_FEATURE_GENERATION_ID], c->version, c->name);
	return json_pack("{s:{s:b, s:s, s:s?}}", "generation_id_device", "present", on,
			 "since_version", feature_versions[VM_FEATURE_GENERATION_ID], "why",
			 on ? NULL : why);
}

int vm_config_new_generation_id(struct vm_config *c)
{
	return guid_generate(&c->generation_id);
}

int vm_config_upgrade_version(struct vm_config *c, bool *changed)
{
	*changed = version_cmp(c->version, DEFAULT_VERSION->name) < 0;
	if (*changed)
		snprintf(c->version, sizeof(c->version), "%s", DEFAULT_VERSION->name);
	if (guid_is_zero(&c->generation_id))
		return vm_config_new_generation_id(c);
	return 0;
}

const char *vm_stop_action_name(enum vm_stop_action a)
{
	return stop_action_names[a];
}

const char *vm_start_action_name(enum vm_start_action a)
{
	return start_action_names[a];
}

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
	for (unsigned i = 0; i < c->n_nics; i++) {
		free(c->nics[i].tap);
		free(c->nics[i].sw);
	}
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
	for (unsigned i = 0; i < src->n_nics; i++) {
		r |= dup_opt(&dst->nics[i].tap, src->nics[i].tap);
		r |= dup_opt(&dst->nics[i].sw, src->nics[i].sw);
	}
	for (unsigned i = 0; i < src->n_operators; i++)
		r |= dup_opt(&dst->operators[i], src->operators[i]);
	if (r) {
		vm_config_clear(dst);
		return -ENOMEM;
	}
	return 0;
}

/* Hyper-V's port mirroring modes, in enum switch_mirror's order. */
static const char *const port_mirroring_names[] = { "none", "source", "destination" };

/* A switch adapter carries its port settings; a tap adapter is as before;
 * one with neither is not connected. */
static json_t *nic_to_json(const struct vm_nic *n)
{
	json_t *j = json_pack("{s:s, s:b}", "mac", n->mac, "mac_auto", n->mac_auto);

	if (n->tap && !n->sw)
		json_object_set_new(j, "tap", json_string(n->tap));
	else if (!n->sw)
		json_object_set_new(j, "switch", json_null());
	if (!n->sw)
		return j;
	json_object_set_new(j, "switch", json_string(n->sw));
	json_object_set_new(j, "mac_spoofing", json_boolean(n->mac_spoofing));
	json_object_set_new(j, "dhcp_guard", json_boolean(n->dhcp_guard));
	json_object_set_new(j, "router_guard", json_boolean(n->router_guard));
	json_object_set_new(j, "vlan", json_integer(n->vlan));
	json_object_set_new(j, "bandwidth_max", json_integer((json_int_t)n->bandwidth_max));
	json_object_set_new(j, "bandwidth_weight", json_integer(n->bandwidth_weight));
	json_object_set_new(j, "port_mirroring",
			    json_string(port_mirroring_names[n->port_mirroring % 3]));
	return j;
}

/* The integration services' part of the configuration (agent.h). */
static json_t *config_to_json_with_agent(const struct vm_config *c, json_t *j)
{
	char idbuf[GUID_STR_LEN];

	json_object_set_new(j, "integration", agent_integration_json(c->integration));
	json_object_set_new(j, "heartbeat_interval", json_integer(c->heartbeat_interval));
	json_object_set_new(j, "cpu_reserve", json_integer(c->cpu_reserve));
	json_object_set_new(j, "cpu_limit", json_integer(c->cpu_limit));
	json_object_set_new(j, "cpu_weight", json_integer(c->cpu_weight));
	json_object_set_new(j, "dynamic_memory", json_boolean(c->dynamic_memory));
	json_object_set_new(j, "memory_minimum", c->memory_minimum
							 ? json_integer((json_int_t)c->memory_minimum)
							 : json_null());
	json_object_set_new(j, "memory_maximum", c->memory_maximum
							 ? json_integer((json_int_t)c->memory_maximum)
							 : json_null());
	json_object_set_new(j, "memory_buffer", json_integer(c->memory_buffer));
	json_object_set_new(j, "memory_weight", json_integer(c->memory_weight));
	json_object_set_new(j, "version", json_string(c->version[0] ? c->version
								   : VM_VERSION_OLDEST));
	json_object_set_new(j, "generation_id",
			    guid_is_zero(&c->generation_id)
				    ? json_null()
				    : json_string(guid_to_string(&c->generation_id, idbuf)));
	return j;
}

json_t *vm_config_to_json(const struct vm_config *c)
{
	char idbuf[GUID_STR_LEN];
	json_t *disks = json_array(), *nics = json_array(), *ops = json_array();

	for (unsigned i = 0; i < c->n_disks; i++)
		json_array_append_new(disks, json_pack("{s:s, s:b}", "path", c->disks[i].path,
						       "readonly", c->disks[i].readonly));
	for (unsigned i = 0; i < c->n_nics; i++)
		json_array_append_new(nics, nic_to_json(&c->nics[i]));
	for (unsigned i = 0; i < c->n_operators; i++)
		json_array_append_new(ops, json_string(c->operators[i]));
	return config_to_json_with_agent(c, json_pack("{s:i, s:s, s:s, s:s, s:i, s:i, s:I, s:s, s:s?, s:s, s:o, s:o, s:s, s:i,"
			 " s:s, s:s, s:o}",
			 "schema_version", CONFIG_SCHEMA_VERSION, "id", guid_to_string(&c->id, idbuf),
			 "name", c->name, "created", c->created, "generation", (int)c->generation,
			 "cpus", (int)c->cpus, "memory", (json_int_t)c->memory, "kernel",
			 c->kernel ? c->kernel : "", "initrd", c->initrd, "cmdline",
			 c->cmdline ? c->cmdline : "", "disks", disks, "network_adapters", nics,
			 "automatic_start_action", vm_start_action_name(c->start_action),
			 "automatic_start_delay", (int)c->start_delay, "automatic_stop_action",
			 vm_stop_action_name(c->stop_action), "notes", c->notes ? c->notes : "",
			 "operators", ops));
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

/* A switch name as libnetsw takes it: 1-11 of [A-Za-z0-9_]. */
static bool switch_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 11)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

static int nic_bool(json_t *val, unsigned idx, const char *key, bool *out, char *err,
		    size_t errlen)
{
	if (!json_is_boolean(val))
		return fail(err, errlen, "field 'network_adapters[%u].%s' must be a boolean", idx,
			    key);
	*out = json_is_true(val);
	return 0;
}

/* The port settings of a switch adapter (Hyper-V's names). 1: not one. */
static int parse_nic_port(const char *key, json_t *val, unsigned idx, struct vm_nic *nic,
			  char *err, size_t errlen)
{
	uint64_t n;
	int r;

	if (!strcmp(key, "mac_spoofing"))
		return nic_bool(val, idx, key, &nic->mac_spoofing, err, errlen);
	if (!strcmp(key, "dhcp_guard"))
		return nic_bool(val, idx, key, &nic->dhcp_guard, err, errlen);
	if (!strcmp(key, "router_guard"))
		return nic_bool(val, idx, key, &nic->router_guard, err, errlen);
	if (!strcmp(key, "vlan")) {
		r = get_uint(val, "network_adapters[].vlan", 0, 4094, &n, err, errlen);
		nic->vlan = (unsigned)n;
		return r;
	}
	if (!strcmp(key, "port_mirroring")) {
		unsigned m;

		r = get_enum(val, "network_adapters[].port_mirroring", port_mirroring_names, 3, &m,
			     err, errlen);
		nic->port_mirroring = r ? 0 : m;
		return r;
	}
	if (!strcmp(key, "bandwidth_max")) {
		r = get_uint(val, "network_adapters[].bandwidth_max", 0, UINT64_C(1) << 50, &n,
			     err, errlen);
		if (!r && n && n < 8000)
			return fail(err, errlen, "field 'network_adapters[%u].bandwidth_max' must "
				    "be 0 (no cap) or at least 8000 bits/s", idx);
		nic->bandwidth_max = n;
		return r;
	}
	if (!strcmp(key, "bandwidth_weight")) {
		r = get_uint(val, "network_adapters[].bandwidth_weight", 0, 100, &n, err, errlen);
		nic->bandwidth_weight = r ? 0 : (unsigned)n;
		return r;
	}
	return 1;
}

static int parse_nic(json_t *v, unsigned idx, struct vm_nic *nic, char *err, size_t errlen)
{
	bool unconnected = false;
	const char *key;
	json_t *val;

	memset(nic, 0, sizeof(*nic));
	if (!json_is_object(v))
		return fail(err, errlen,
			    "field 'network_adapters[%u]' must be an object {tap|switch, mac}", idx);
	json_object_foreach(v, key, val) {
		int r = 0;
		if (!strcmp(key, "tap")) {
			r = get_string(val, "network_adapters[].tap", 15, &nic->tap, err, errlen);
			if (!r && !tap_name_valid(nic->tap))
				r = fail(err, errlen, "'%s' is not a valid tap device name",
					 nic->tap);
		} else if (!strcmp(key, "switch")) {
			if (json_is_null(val)) {
				unconnected = true;
				continue;
			}
			r = get_string(val, "network_adapters[].switch", 11, &nic->sw, err, errlen);
			if (!r && !switch_name_valid(nic->sw))
				r = fail(err, errlen, "'%s' is not a valid switch name (1 to 11 "
					 "letters, digits or '_')", nic->sw);
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
		} else if ((r = parse_nic_port(key, val, idx, nic, err, errlen)) == 1) {
			r = fail(err, errlen,
				 "unknown field 'network_adapters[%u].%s' (known: tap, switch, mac, "
				 "mac_spoofing, dhcp_guard, router_guard, vlan, bandwidth_max, "
				 "bandwidth_weight, port_mirroring)",
				 idx, key);
		}
		if (r)
			return r;
	}
	if (nic->tap && nic->sw)
		return fail(err, errlen, "network_adapters[%u] names both a tap and a switch: "
			    "give one", idx);
	/* "switch": null is an adapter that is not connected (its switch was
	 * removed with --force, or `vm set --disconnect`). */
	if (!nic->tap && !nic->sw && !unconnected)
		return fail(err, errlen, "field 'network_adapters[%u].tap' is required (or "
			    "'switch': a cloisond switch)", idx);
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
	for (unsigned k = 0; k < c->n_nics; k++) {
		free(c->nics[k].tap);
		free(c->nics[k].sw);
	}
	c->n_nics = 0;
	json_array_foreach(v, i, e) {
		int r = parse_nic(e, (unsigned)i, &c->nics[c->n_nics], err, errlen);
		if (r) {
			free(c->nics[c->n_nics].tap);
			free(c->nics[c->n_nics].sw);
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
	/* the worker boots with the maximum and a balloon (balancer.c) */
	"dynamic_memory", "memory_maximum",
};

bool vm_config_body_needs_off(json_t *body)
{
	for (size_t i = 0; i < sizeof(hardware_fields) / sizeof(hardware_fields[0]); i++)
		if (json_object_get(body, hardware_fields[i]))
			return true;
	return false;
}

static const char *const create_fields =
	"name, generation, version, cpus, memory, kernel, initrd, cmdline, disks, network_adapters, "
	"automatic_start_action, automatic_start_delay, automatic_stop_action, notes, operators, "
	"integration, heartbeat_interval, cpu_reserve, cpu_limit, cpu_weight, dynamic_memory, "
	"memory_minimum, memory_maximum, memory_buffer, memory_weight";
static const char *const set_fields =
	"cpus, memory, kernel, initrd, cmdline, disks, add_disks, remove_disks, network_adapters, "
	"automatic_start_action, automatic_start_delay, automatic_stop_action, notes, operators, "
	"add_operators, remove_operators, integration, heartbeat_interval, cpu_reserve, cpu_limit, "
	"cpu_weight, dynamic_memory, memory_minimum, memory_maximum, memory_buffer, memory_weight";

/* Dynamic memory, Hyper-V's settings and ranges: minimum and maximum are
 * bytes or null (the startup memory), buffer 5-2000 percent, weight
 * 0-100. That minimum <= startup <= maximum is checked on the whole
 * configuration (apply_body). Turning it on or off and a new maximum
 * change the worker's hardware (*hw): the VM must be off. */
static int apply_memory_field(struct vm_config *c, const char *key, json_t *v, bool *hw,
			      char *err, size_t errlen)
{
	uint64_t n = 0;
	int r;

	if (!strcmp(key, "dynamic_memory")) {
		if (!json_is_boolean(v))
			return fail(err, errlen, "field 'dynamic_memory' must be true or false");
		*hw |= c->dynamic_memory != json_is_true(v);
		c->dynamic_memory = json_is_true(v);
		return 0;
	}
	if (!strcmp(key, "memory_minimum") || !strcmp(key, "memory_maximum")) {
		bool min = !strcmp(key, "memory_minimum");

		if (!json_is_null(v) &&
		    (r = get_uint(v, key, min ? MEMORY_DYN_MIN : MEMORY_MIN, MEMORY_MAX, &n, err,
				  errlen)))
			return r;
		if (!min)
			*hw |= c->memory_maximum != (n & ~(MEMORY_ALIGN - 1));
		*(min ? &c->memory_minimum : &c->memory_maximum) = n & ~(MEMORY_ALIGN - 1);
		return 0;
	}
	if (!strcmp(key, "memory_buffer")) {
		if ((r = get_uint(v, key, 5, 2000, &n, err, errlen)))
			return fail(err, errlen, "field 'memory_buffer' must be a whole percentage "
				    "from 5 to 2000 (of the demand; 20 is the default)");
		c->memory_buffer = (unsigned)n;
		return 0;
	}
	if ((r = get_uint(v, key, 0, 100, &n, err, errlen)))
		return fail(err, errlen, "field 'memory_weight' must be a whole number from 0 to "
			    "100 (50 is the default; higher keeps memory under pressure)");
	c->memory_weight = (unsigned)n;
	return 0;
}

/* cpu_reserve and cpu_limit: percent (0-100, limit 1-100); cpu_weight:
 * 1-10000. Hyper-V's ranges. */
static int apply_cpu_field(struct vm_config *c, const char *key, json_t *v, char *err,
			   size_t errlen)
{
	json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;

	if (!strcmp(key, "cpu_weight")) {
		if (n < 1 || n > CPU_WEIGHT_MAX)
			return fail(err, errlen, "field 'cpu_weight' must be a whole number from 1 "
				    "to %d (100 is the default)", CPU_WEIGHT_MAX);
		c->cpu_weight = (unsigned)n;
		return 0;
	}
	bool limit = !strcmp(key, "cpu_limit");
	if (n < (limit ? 1 : 0) || n > 100)
		return fail(err, errlen, "field '%s' must be a whole percentage from %d to 100 (of "
			    "the VM's vCPUs%s)", key, limit ? 1 : 0, limit ? "; 100 is no limit" : "");
	if (limit)
		c->cpu_limit = (unsigned)n;
	else
		c->cpu_reserve = (unsigned)n;
	return 0;
}

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
	if (create && !strcmp(key, "version")) {
		/* New-VM -Version: an older version on purpose (to move the VM
		 * to an older host); never a newer one */
		if (!json_is_string(v))
			return fail(err, errlen, "field 'version' must be a string like \"%s\"",
				    DEFAULT_VERSION->name);
		r = vm_version_check(json_string_value(v), err, errlen);
		if (!r)
			snprintf(c->version, sizeof(c->version), "%s", json_string_value(v));
		return r;
	}
	if (!create && (!strcmp(key, "version") || !strcmp(key, "generation_id")))
		return fail(err, errlen, "field '%s' cannot be set: %s", key,
			    key[0] == 'v' ? "a VM's version only goes up, with 'cloison vm "
					    "upgrade-version' while it is off"
					  : "the generation id changes by itself when a checkpoint is "
					    "applied or the VM is imported as a copy");
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
	if (!strcmp(key, "integration"))
		return agent_integration_parse(v, &c->integration, err, errlen);
	if (!strcmp(key, "heartbeat_interval")) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > AGENT_HB_MAX_S)
			return fail(err, errlen, "field 'heartbeat_interval' must be a whole number "
				    "of seconds from 1 to %d", AGENT_HB_MAX_S);
		c->heartbeat_interval = (unsigned)json_integer_value(v);
		return 0;
	}
	if (!strcmp(key, "cpu_reserve") || !strcmp(key, "cpu_limit") || !strcmp(key, "cpu_weight"))
		return apply_cpu_field(c, key, v, err, errlen);
	if (!strcmp(key, "dynamic_memory") || !strcmp(key, "memory_minimum") ||
	    !strcmp(key, "memory_maximum") || !strcmp(key, "memory_buffer") ||
	    !strcmp(key, "memory_weight"))
		return apply_memory_field(c, key, v, hw, err, errlen);
	if (!strcmp(key, "operators"))
		return parse_operators(v, key, 0, c, err, errlen);
	if (!create && !strcmp(key, "add_operators"))
		return parse_operators(v, key, 1, c, err, errlen);
	if (!create && !strcmp(key, "remove_operators"))
		return parse_operators(v, key, 2, c, err, errlen);
	return fail(err, errlen, "unknown field '%s' (known: %s)", key,
		    create ? create_fields : set_fields);
}

/* stored: c is read from a file (vm_config_from_json), whose version and
 * generation id are its own; else a create's body, which gets new ones. */
static int apply_body(struct vm_config *c, json_t *body, bool create, bool stored,
		      bool *hw_changed, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	*hw_changed = false;
	if (!json_is_object(body))
		return fail(err, errlen, "the request body must be a JSON object");
	if (create && !stored)
		snprintf(c->version, sizeof(c->version), "%s", DEFAULT_VERSION->name);
	if (create) {
		c->generation = 1;
		c->cpus = 1;
		c->memory = 256ULL << 20;
		c->integration = AGENT_SVC_DEFAULTS;
		c->heartbeat_interval = AGENT_HB_DEFAULT_S;
		c->cpu_limit = CPU_LIMIT_NONE;
		c->cpu_weight = CPU_WEIGHT_DEFAULT;
		c->memory_buffer = MEMORY_BUFFER_DEFAULT;
		c->memory_weight = MEMORY_WEIGHT_DEFAULT;
	}
	json_object_foreach(body, key, v) {
		int r = apply_field(c, key, v, create, hw_changed, err, errlen);
		if (r)
			return r;
	}
	if (create && !c->name[0])
		return fail(err, errlen, "field 'name' is required");
	/* A new VM's id, once its version (the body's "version") is known:
	 * a version without the device has none until it is upgraded. */
	if (create && !stored && vm_config_has_feature(c, VM_FEATURE_GENERATION_ID) &&
	    vm_config_new_generation_id(c))
		return fail(err, errlen, "no randomness for the VM's generation id");
	if (c->dynamic_memory && vm_config_memory_minimum(c) > c->memory)
		return fail(err, errlen, "the minimum memory (%llu MiB) cannot be above the startup "
			    "memory (%llu MiB)", (unsigned long long)(vm_config_memory_minimum(c) >> 20),
			    (unsigned long long)(c->memory >> 20));
	if (c->dynamic_memory && vm_config_memory_maximum(c) < c->memory)
		return fail(err, errlen, "the maximum memory (%llu MiB) cannot be below the startup "
			    "memory (%llu MiB)", (unsigned long long)(vm_config_memory_maximum(c) >> 20),
			    (unsigned long long)(c->memory >> 20));
	if (c->cpu_reserve > c->cpu_limit)
		return fail(err, errlen, "the CPU reserve (%u%%) cannot be above the CPU limit (%u%%)",
			    c->cpu_reserve, c->cpu_limit);
	if (create && !c->kernel)
		return fail(err, errlen, "field 'kernel' is required (direct kernel boot)");
	if (!c->cmdline && !(c->cmdline = strdup("")))
		return -ENOMEM;
	return 0;
}

int vm_config_apply_json(struct vm_config *c, json_t *body, bool create, bool *hw_changed,
			 char *err, size_t errlen)
{
	return apply_body(c, body, create, false, hw_changed, err, errlen);
}

/* A stored configuration's version (none: the oldest) and generation id
 * (none, or zero: none yet; a version that has the device gets one). */
static int version_from_json(json_t *j, struct vm_config *c, char *err, size_t errlen)
{
	json_t *ver = json_object_get(j, "version"), *gid = json_object_get(j, "generation_id");
	int r;

	if (!ver) {
		snprintf(c->version, sizeof(c->version), "%s", VM_VERSION_OLDEST);
	} else if (!json_is_string(ver)) {
		return fail(err, errlen, "field 'version' must be a string like \"%s\"",
			    VM_VERSION_OLDEST);
	} else {
		if ((r = vm_version_check(json_string_value(ver), err, errlen)))
			return r;
		snprintf(c->version, sizeof(c->version), "%s", json_string_value(ver));
	}
	memset(&c->generation_id, 0, sizeof(c->generation_id));
	if (gid && !json_is_null(gid) &&
	    (!json_is_string(gid) || guid_parse(json_string_value(gid), &c->generation_id)))
		return fail(err, errlen, "field 'generation_id' must be a GUID or null");
	if (guid_is_zero(&c->generation_id) && vm_config_has_feature(c, VM_FEATURE_GENERATION_ID) &&
	    vm_config_new_generation_id(c))
		return fail(err, errlen, "no randomness for the VM's generation id");
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
	/* The version first: a newer configuration is refused for what it is,
	 * not for a field this build does not know. */
	if ((r = version_from_json(j, c, err, errlen)))
		return r;

	/* The rest has the create body's form; reuse its checks. */
	copy = json_deep_copy(j);
	if (!copy)
		return -ENOMEM;
	json_object_del(copy, "schema_version");
	json_object_del(copy, "id");
	json_object_del(copy, "created");
	json_object_del(copy, "version");
	json_object_del(copy, "generation_id");
	r = apply_body(c, copy, true, true, &hw, err, errlen);
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
