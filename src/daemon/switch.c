/* cloisond's virtual switches: the registry of the host's switches, kept
 * in <state>/switches.json (replaced atomically), their kernel objects
 * through libnetsw (src/net/), dnsmasq for the NAT switches, and the taps
 * of the VMs' switch adapters.
 *
 * At daemon start every switch is created, or adopted when its bridge is
 * there (the kernel objects outlive the daemon, so a restart with VMs
 * running rebuilds nothing that carries traffic); the ports of VMs with a
 * worker are re-attached in place (their rules replaced in one batch).
 *
 * Locking: reg->lock guards the list, the switch_net handle and dnsmasq.
 * It is taken after d->lock, never before (see daemon.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "daemon/daemon.h"
#include "net/dnsmasq.h"
#include "net/switch.h"

#define SWITCHES_SCHEMA_VERSION 1
#define VSWITCH_MAX_FORWARDS 64
#define VSWITCH_NOTES_MAX 4096
#define VNET_HDR_LEN 12 /* virtio 1.0's header, what the worker sets too */
#define SUPERVISE_INTERVAL_S 1

struct vswitch_forward {
	char proto[4];
	unsigned host_port;
	struct in_addr addr;
	unsigned vm_port;
	char vm[VM_NAME_MAX + 1]; /* "" when given as an address */
};

struct vswitch {
	char name[SWITCH_NAME_MAX + 1];
	enum switch_type type;
	char adapter[IFNAMSIZ];
	bool share_management;
	uint64_t uplink_bandwidth; /* external: bits/s weights share, 0: the adapter's speed */
	struct ip4_prefix addr; /* internal: host address (len 0: none); nat: subnet */
	char *notes;
	struct switch_info info;
	bool up;		/* its kernel objects were made or adopted */
	char problem[640];	/* why not, when !up */
	struct vswitch_forward fwd[VSWITCH_MAX_FORWARDS];
	unsigned n_fwd;
	struct dnsmasq dns;
	char leases_path[2200];
	char dns_log[2200];
	char pid_path[2200];
	struct vswitch *next;
};

struct vswitch_registry {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct switch_net sn;
	struct vswitch *list;
	char path[2200]; /* switches.json */
	char dir[2100];	 /* switches/: leases, dnsmasq logs and pids */
	pthread_t supervisor;
	bool supervising;
	bool stop;
	bool net_open;
};

static int vfail(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int vfail(char *err, size_t errlen, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return r;
}

static struct vswitch *find(struct vswitch_registry *reg, const char *name)
{
	for (struct vswitch *s = reg->list; s; s = s->next)
		if (!strcmp(s->name, name))
			return s;
	return NULL;
}

static int no_switch(const char *name, char *err, size_t errlen)
{
	return vfail(err, errlen, -ENOENT, "no switch named '%s' (see 'cloison switch list')", name);
}

static void prefix_str(const struct ip4_prefix *p, char *out, size_t len)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &p->addr, a, sizeof(a));
	snprintf(out, len, "%s/%u", a, p->len);
}

/* libnetsw's errors as the API's: bad input is 400 (-EINVAL). */
static int net_errno(int r)
{
	switch (r) {
	case -ENODEV:
	case -EADDRINUSE:
	case -EADDRNOTAVAIL:
		return -EINVAL;
	default:
		return r;
	}
}

/* ---- persistence ---- */

static json_t *switch_to_json(const struct vswitch *s)
{
	char p[32];
	json_t *j = json_pack("{s:s, s:s, s:s}", "name", s->name, "type", switch_type_name(s->type),
			      "notes", s->notes ? s->notes : "");
	json_t *fw = json_array();

	if (s->type == SWITCH_EXTERNAL) {
		json_object_set_new(j, "adapter", json_string(s->adapter));
		json_object_set_new(j, "allow_management_os", json_boolean(s->share_management));
		json_object_set_new(j, "uplink_bandwidth", json_integer((json_int_t)s->uplink_bandwidth));
	}
	if (s->type == SWITCH_INTERNAL && s->addr.len) {
		prefix_str(&s->addr, p, sizeof(p));
		json_object_set_new(j, "address", json_string(p));
	}
	if (s->type == SWITCH_NAT) {
		prefix_str(&s->addr, p, sizeof(p));
		json_object_set_new(j, "subnet", json_string(p));
	}
	for (unsigned i = 0; i < s->n_fwd; i++) {
		char a[INET_ADDRSTRLEN];
		const struct vswitch_forward *f = &s->fwd[i];
		inet_ntop(AF_INET, &f->addr, a, sizeof(a));
		json_array_append_new(fw, json_pack("{s:s, s:i, s:s, s:i, s:s*}", "proto", f->proto,
						    "host_port", (int)f->host_port, "address", a,
						    "vm_port", (int)f->vm_port, "vm",
						    f->vm[0] ? f->vm : NULL));
	}
	if (s->type == SWITCH_NAT)
		json_object_set_new(j, "forwards", fw);
	else
		json_decref(fw);
	return j;
}

static int registry_save(struct vswitch_registry *reg)
{
	json_t *arr = json_array();

	for (struct vswitch *s = reg->list; s; s = s->next)
		json_array_append_new(arr, switch_to_json(s));
	json_t *j = json_pack("{s:i, s:o}", "schema_version", SWITCHES_SCHEMA_VERSION, "switches", arr);
	char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(j);
	if (!text)
		return -ENOMEM;
	int r = atomic_write_file(reg->path, text, strlen(text), 0640);
	free(text);
	return r;
}

/* ---- parsing a switch (create body and the stored form) ---- */

static int get_prefix(json_t *v, const char *field, bool host, struct ip4_prefix *out, char *err,
		      size_t errlen)
{
	if (!json_is_string(v) || ip4_prefix_parse(json_string_value(v), host, out))
		return vfail(err, errlen, -EINVAL,
			     "field '%s' must be %s, a prefix of /8 to /30 (got %s)", field,
			     host ? "an address A.B.C.D/LEN like 10.0.0.1/24"
				  : "a subnet A.B.C.D/LEN with no host bits, like 10.0.0.0/24",
			     json_is_string(v) ? json_string_value(v) : "a non-string");
	return 0;
}

static int parse_field(struct vswitch *s, const char *key, json_t *v, bool *have_mgmt,
		       char *err, size_t errlen)
{
	if (!strcmp(key, "name")) {
		if (!json_is_string(v) || json_string_length(v) > SWITCH_NAME_MAX ||
		    !json_string_length(v))
			return vfail(err, errlen, -EINVAL, "field 'name' must be 1 to %d letters, "
				     "digits or '_'", SWITCH_NAME_MAX);
		snprintf(s->name, sizeof(s->name), "%s", json_string_value(v));
		for (const char *c = s->name; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			      (*c >= '0' && *c <= '9') || *c == '_'))
				return vfail(err, errlen, -EINVAL, "bad switch name '%s': use 1 to "
					     "%d letters, digits or '_'", s->name, SWITCH_NAME_MAX);
		return 0;
	}
	if (!strcmp(key, "type")) {
		if (!json_is_string(v) || switch_type_parse(json_string_value(v), &s->type))
			return vfail(err, errlen, -EINVAL, "field 'type' must be private, "
				     "internal, external or nat");
		return 0;
	}
	if (!strcmp(key, "adapter")) {
		if (!json_is_string(v) || !json_string_length(v) ||
		    json_string_length(v) >= IFNAMSIZ)
			return vfail(err, errlen, -EINVAL, "field 'adapter' must be an interface "
				     "name of 1 to %d bytes", IFNAMSIZ - 1);
		snprintf(s->adapter, sizeof(s->adapter), "%s", json_string_value(v));
		return 0;
	}
	if (!strcmp(key, "allow_management_os")) {
		if (!json_is_boolean(v))
			return vfail(err, errlen, -EINVAL, "field 'allow_management_os' must be a boolean");
		s->share_management = json_is_true(v);
		*have_mgmt = true;
		return 0;
	}
	if (!strcmp(key, "uplink_bandwidth")) {
		json_int_t n = json_integer_value(v);
		if (!json_is_integer(v) || n < 0 || (n > 0 && n < 8000) || n > (json_int_t)4000000000000)
			return vfail(err, errlen, -EINVAL, "field 'uplink_bandwidth' must be 0 (the "
				     "adapter's speed) or 8000 to 4000000000000 bits/s");
		s->uplink_bandwidth = (uint64_t)n;
		return 0;
	}
	if (!strcmp(key, "address"))
		return get_prefix(v, "address", true, &s->addr, err, errlen);
	if (!strcmp(key, "subnet"))
		return get_prefix(v, "subnet", false, &s->addr, err, errlen);
	if (!strcmp(key, "notes")) {
		if (!json_is_string(v) || json_string_length(v) > VSWITCH_NOTES_MAX)
			return vfail(err, errlen, -EINVAL, "field 'notes' must be a string of at "
				     "most %d bytes", VSWITCH_NOTES_MAX);
		free(s->notes);
		s->notes = strdup(json_string_value(v));
		return s->notes ? 0 : -ENOMEM;
	}
	return vfail(err, errlen, -EINVAL, "unknown field '%s' (known: name, type, adapter, "
		     "allow_management_os, uplink_bandwidth, address, subnet, notes)", key);
}

/* Which fields a type takes: the others are refused, not ignored. */
static int check_type_fields(const struct vswitch *s, json_t *body, char *err, size_t errlen)
{
	static const struct {
		const char *field;
		enum switch_type type;
	} only[] = {
		{ "adapter", SWITCH_EXTERNAL },
		{ "allow_management_os", SWITCH_EXTERNAL },
		{ "uplink_bandwidth", SWITCH_EXTERNAL },
		{ "address", SWITCH_INTERNAL },
		{ "subnet", SWITCH_NAT },
	};

	if (!s->name[0])
		return vfail(err, errlen, -EINVAL, "field 'name' is required");
	if (!json_object_get(body, "type"))
		return vfail(err, errlen, -EINVAL, "field 'type' is required (private, internal, "
			     "external or nat)");
	for (unsigned i = 0; i < sizeof(only) / sizeof(only[0]); i++)
		if (json_object_get(body, only[i].field) && s->type != only[i].type)
			return vfail(err, errlen, -EINVAL, "field '%s' is for %s switches only",
				     only[i].field, switch_type_name(only[i].type));
	if (s->type == SWITCH_EXTERNAL && !s->adapter[0])
		return vfail(err, errlen, -EINVAL, "an external switch needs an adapter "
			     "(--adapter IF, a physical interface of this host)");
	return 0;
}

static int parse_forward(json_t *j, struct vswitch_forward *f)
{
	const char *proto = json_string_value(json_object_get(j, "proto"));
	const char *addr = json_string_value(json_object_get(j, "address"));
	const char *vm = json_string_value(json_object_get(j, "vm"));

	memset(f, 0, sizeof(*f));
	if (!proto || (strcmp(proto, "tcp") && strcmp(proto, "udp")) || !addr ||
	    inet_pton(AF_INET, addr, &f->addr) != 1)
		return -EINVAL;
	snprintf(f->proto, sizeof(f->proto), "%s", proto);
	f->host_port = (unsigned)json_integer_value(json_object_get(j, "host_port"));
	f->vm_port = (unsigned)json_integer_value(json_object_get(j, "vm_port"));
	if (vm)
		snprintf(f->vm, sizeof(f->vm), "%s", vm);
	return f->host_port && f->host_port < 65536 && f->vm_port && f->vm_port < 65536 ? 0 : -EINVAL;
}

static void switch_free(struct vswitch *s)
{
	if (s) {
		free(s->notes);
		free(s);
	}
}

/* ---- kernel objects and dnsmasq ---- */

static void paths_init(struct vswitch_registry *reg, struct vswitch *s)
{
	snprintf(s->leases_path, sizeof(s->leases_path), "%s/%s.leases", reg->dir, s->name);
	snprintf(s->dns_log, sizeof(s->dns_log), "%s/%s.dnsmasq.log", reg->dir, s->name);
	snprintf(s->pid_path, sizeof(s->pid_path), "%s/%s.dnsmasq.pid", reg->dir, s->name);
}

/* A dnsmasq an earlier daemon started (and could not stop: it was killed)
 * would hold the DHCP port: end it if it is still the one we recorded. */
static void end_stale_dnsmasq(const struct vswitch *s)
{
	char *text = NULL, *cmd = NULL, want[64];
	size_t len;
	pid_t pid;

	if (read_file(s->pid_path, 64, &text, &len))
		return;
	pid = (pid_t)atoi(text);
	free(text);
	unlink(s->pid_path);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (pid <= 1 || read_file(path, 65536, &cmd, &len))
		return;
	for (size_t i = 0; i + 1 < len; i++)
		if (!cmd[i])
			cmd[i] = ' ';
	snprintf(want, sizeof(want), "--interface=%s", s->info.bridge);
	if (strstr(cmd, "dnsmasq") && strstr(cmd, want)) {
		kill(pid, SIGTERM);
		for (int i = 0; i < 200 && kill(pid, 0) == 0; i++)
			usleep(10000);
		log_info("switch %s: ended the dnsmasq (pid %d) an earlier cloisond left", s->name,
			 (int)pid);
	}
	free(cmd);
}

static void write_pid(const struct vswitch *s)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)s->dns.pid);

	if (atomic_write_file(s->pid_path, buf, (size_t)n, 0640))
		log_warn("switch %s: cannot record dnsmasq's pid in %s", s->name, s->pid_path);
}

static int dns_start(struct vswitch *s, char *err, size_t errlen)
{
	struct dnsmasq_config dc = {
		.bridge = s->info.bridge,
		.subnet = s->addr,
		.leases_path = s->leases_path,
		.log_path = s->dns_log,
		.dns = true,
	};

	end_stale_dnsmasq(s);
	memset(&s->dns, 0, sizeof(s->dns));
	int r = dnsmasq_start(&s->dns, &dc, err, errlen);
	if (!r)
		write_pid(s);
	return r;
}

static void dns_stop(struct vswitch *s)
{
	if (s->type == SWITCH_NAT && s->dns.pid > 0) {
		dnsmasq_stop(&s->dns);
		unlink(s->pid_path);
	}
}

static void switch_cfg(const struct vswitch *s, struct switch_config *cfg)
{
	*cfg = (struct switch_config){
		.name = s->name,
		.type = s->type,
		.adapter = s->adapter[0] ? s->adapter : NULL,
		.share_management = s->share_management,
		.uplink_bandwidth = s->uplink_bandwidth,
		.addr = s->addr,
	};
}

/* Creates or adopts s's bridge and tables, its forwards and dnsmasq. */
static int switch_bring_up(struct vswitch_registry *reg, struct vswitch *s, char *err,
			   size_t errlen)
{
	struct switch_config cfg;
	int r;

	switch_cfg(s, &cfg);
	r = switch_create(&reg->sn, &cfg, &s->info);
	if (r)
		return vfail(err, errlen, net_errno(r), "%s", reg->sn.err);
	if (reg->sn.err[0])
		log_warn("switch %s: %s", s->name, reg->sn.err);
	for (unsigned i = 0; i < s->n_fwd; i++) {
		const struct vswitch_forward *f = &s->fwd[i];
		r = switch_nat_forward_add(&reg->sn, s->name, f->proto, f->host_port, f->addr,
					   f->vm_port);
		if (r && r != -EEXIST)
			log_warn("switch %s: forward %s %u: %s", s->name, f->proto, f->host_port,
				 reg->sn.err);
	}
	if (s->type == SWITCH_NAT && (r = dns_start(s, err, errlen))) {
		if (!s->info.adopted)
			switch_destroy(&reg->sn, s->name);
		return r;
	}
	s->up = true;
	s->problem[0] = 0;
	return 0;
}

static void *supervise_main(void *arg)
{
	struct vswitch_registry *reg = arg;
	struct timespec ts;
	char err[512];

	pthread_mutex_lock(&reg->lock);
	while (!reg->stop) {
		for (struct vswitch *s = reg->list; s; s = s->next) {
			if (s->type != SWITCH_NAT || !s->up)
				continue;
			pid_t was = s->dns.pid;
			unsigned restarts = s->dns.restarts;
			int r = dnsmasq_poll(&s->dns, err, sizeof(err));
			if (r)
				log_error("switch %s: dnsmasq died and does not start again: %s",
					  s->name, err);
			else if (s->dns.restarts != restarts) {
				log_warn("switch %s: dnsmasq (pid %d) died; restarted as pid %d",
					 s->name, (int)was, (int)s->dns.pid);
				write_pid(s);
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += SUPERVISE_INTERVAL_S;
		pthread_cond_timedwait(&reg->cond, &reg->lock, &ts);
	}
	pthread_mutex_unlock(&reg->lock);
	return NULL;
}

/* ---- load, adopt, shut down ---- */

static int load_file(struct vswitch_registry *reg, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j, *e;
	size_t i;

	if (access(reg->path, F_OK) < 0 && errno == ENOENT)
		return 0;
	j = json_load_file(reg->path, 0, &jerr);
	if (!j)
		return vfail(err, errlen, -EINVAL, "%s: line %d: %s", reg->path, jerr.line, jerr.text);
	json_array_foreach(json_object_get(j, "switches"), i, e) {
		struct vswitch *s = calloc(1, sizeof(*s));
		bool mgmt = false;
		const char *key;
		json_t *v, *f;
		size_t k;
		int r = s ? 0 : -ENOMEM;
		json_object_foreach(e, key, v) {
			if (!r && strcmp(key, "forwards"))
				r = parse_field(s, key, v, &mgmt, err, errlen);
		}
		if (!r)
			r = check_type_fields(s, e, err, errlen);
		json_array_foreach(json_object_get(e, "forwards"), k, f) {
			if (!r && s->n_fwd < VSWITCH_MAX_FORWARDS && !parse_forward(f, &s->fwd[s->n_fwd]))
				s->n_fwd++;
		}
		if (r) {
			switch_free(s);
			json_decref(j);
			return r == -ENOMEM ? r : vfail(err, errlen, -EINVAL, "%s: switch %zu: %.400s",
							reg->path, i, err);
		}
		paths_init(reg, s);
		s->next = reg->list;
		reg->list = s;
	}
	json_decref(j);
	return 0;
}

int vswitch_load(struct daemon *d, char *err, size_t errlen)
{
	struct vswitch_registry *reg = calloc(1, sizeof(*reg));
	pthread_condattr_t ca;
	int r;

	if (!reg)
		return -ENOMEM;
	pthread_mutex_init(&reg->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&reg->cond, &ca);
	snprintf(reg->path, sizeof(reg->path), "%s/switches.json", d->state_dir);
	snprintf(reg->dir, sizeof(reg->dir), "%s/switches", d->state_dir);
	r = mkdir_p(reg->dir, 0750);
	if (!r)
		r = load_file(reg, err, errlen);
	if (r) {
		free(reg);
		return r;
	}
	r = switch_net_open(&reg->sn);
	reg->net_open = r == 0;
	if (r) {
		/* VMs on taps still work; switch operations will say why not. */
		log_error("virtual switches unavailable: %s", reg->sn.err);
		for (struct vswitch *s = reg->list; s; s = s->next)
			snprintf(s->problem, sizeof(s->problem), "%s", reg->sn.err);
	}
	for (struct vswitch *s = reg->list; !r && s; s = s->next) {
		char why[640];
		if (switch_bring_up(reg, s, why, sizeof(why))) {
			snprintf(s->problem, sizeof(s->problem), "%s", why);
			log_error("switch %s: cannot bring it up: %s", s->name, why);
		} else {
			log_info("switch %s (%s): %s %s", s->name, switch_type_name(s->type),
				 s->info.adopted ? "adopted" : "created", s->info.bridge);
		}
	}
	reg->supervising = r == 0 && pthread_create(&reg->supervisor, NULL, supervise_main, reg) == 0;
	d->switches = reg;
	return 0;
}

void vswitch_tap_name(const struct vm_config *c, unsigned idx, char out[16])
{
	char id[GUID_STR_LEN];

	guid_to_string(&c->id, id);
	snprintf(out, 16, "cl%.8s-%u", id, idx);
}

static bool link_exists(struct vswitch_registry *reg, const char *ifname)
{
	struct rtnl_link l;

	return rtnl_link_get(&reg->sn.rtnl, ifname, &l) == 0;
}

static void port_config(const struct vm_nic *n, struct switch_port_config *pc)
{
	unsigned m[6] = { 0 };
	uint8_t mac[6];

	sscanf(n->mac, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)m[i];
	switch_port_config_default(pc, mac);
	pc->mac_spoofing = n->mac_spoofing;
	pc->dhcp_guard = n->dhcp_guard;
	pc->router_guard = n->router_guard;
	pc->vlan = n->vlan;
	pc->bandwidth_max = n->bandwidth_max;
	pc->bandwidth_weight = n->bandwidth_weight;
	pc->mirror = n->port_mirroring == 1   ? SWITCH_MIRROR_SOURCE
		     : n->port_mirroring == 2 ? SWITCH_MIRROR_DESTINATION
					      : SWITCH_MIRROR_NONE;
}

static void tap_remove(struct vswitch_registry *reg, const char *sw, const char *tap)
{
	if (!link_exists(reg, tap))
		return;
	if (sw && find(reg, sw))
		switch_tap_remove(&reg->sn, sw, tap);
	else
		rtnl_link_del(&reg->sn.rtnl, tap);
}

void vswitch_adopt_ports(struct daemon *d)
{
	struct vswitch_registry *reg = d->switches;
	char tap[16];

	if (!reg)
		return;
	pthread_mutex_lock(&d->lock);
	pthread_mutex_lock(&reg->lock);
	for (struct vm *vm = d->vms; vm; vm = vm->next) {
		bool live = vm_state_has_worker(vm->state);
		for (unsigned i = 0; i < vm->cfg.n_nics; i++) {
			const struct vm_nic *n = &vm->cfg.nics[i];
			struct switch_port_config pc;
			if (n->tap)
				continue;
			vswitch_tap_name(&vm->cfg, i, tap);
			if (!live) {
				tap_remove(reg, n->sw, tap);
				continue;
			}
			if (!n->sw)
				continue; /* disconnected: its tap is on no bridge */
			port_config(n, &pc);
			if (switch_port_attach(&reg->sn, n->sw, tap, &pc))
				log_error("vm %s: adapter %u: cannot adopt port %s on switch %s: %s",
					  vm->cfg.name, i, tap, n->sw, reg->sn.err);
		}
	}
	pthread_mutex_unlock(&reg->lock);
	pthread_mutex_unlock(&d->lock);
}

void vswitch_shutdown(struct daemon *d)
{
	struct vswitch_registry *reg = d->switches;

	if (!reg)
		return;
	pthread_mutex_lock(&reg->lock);
	reg->stop = true;
	pthread_cond_broadcast(&reg->cond);
	pthread_mutex_unlock(&reg->lock);
	if (reg->supervising)
		pthread_join(reg->supervisor, NULL);
	for (struct vswitch *s = reg->list, *next; s; s = next) {
		next = s->next;
		dns_stop(s);
		switch_free(s);
	}
	if (reg->net_open)
		switch_net_close(&reg->sn);
	d->switches = NULL;
	free(reg);
}

/* ---- VM adapters ---- */

bool vswitch_exists(struct daemon *d, const char *name)
{
	struct vswitch_registry *reg = d->switches;
	bool found;

	if (!reg)
		return false;
	pthread_mutex_lock(&reg->lock);
	found = find(reg, name) != NULL;
	pthread_mutex_unlock(&reg->lock);
	return found;
}

int vswitch_check_config(struct daemon *d, const struct vm_config *c, char *err, size_t errlen)
{
	struct vswitch_registry *reg = d->switches;
	int r = 0;

	if (!reg)
		return 0;
	pthread_mutex_lock(&reg->lock);
	for (unsigned i = 0; !r && i < c->n_nics; i++)
		if (c->nics[i].sw && !find(reg, c->nics[i].sw))
			r = vfail(err, errlen, -ENOENT, "network adapter %u: no switch named '%s' "
				  "(see 'cloison switch list')", i, c->nics[i].sw);
	pthread_mutex_unlock(&reg->lock);
	return r;
}

int vswitch_vm_ports_up(struct daemon *d, struct vm_config *c, char *err, size_t errlen)
{
	struct vswitch_registry *reg = d->switches;
	char tap[16];
	unsigned i;
	int r = 0;

	if (!reg)
		return 0;
	pthread_mutex_lock(&reg->lock);
	for (i = 0; i < c->n_nics; i++) {
		struct vm_nic *n = &c->nics[i];
		struct switch_port_config pc;
		struct vswitch *s;
		if (!n->sw)
			continue;
		s = find(reg, n->sw);
		if (!s || !s->up) {
			r = s ? vfail(err, errlen, -EIO, "switch '%s' is not up: %s", n->sw, s->problem)
			      : vfail(err, errlen, -ENOENT, "network adapter %u: no switch named '%s'",
				      i, n->sw);
			break;
		}
		vswitch_tap_name(c, i, tap);
		tap_remove(reg, n->sw, tap); /* a leftover of a worker that died */
		port_config(n, &pc);
		int fd = switch_tap_create(&reg->sn, n->sw, tap, &pc, VNET_HDR_LEN);
		if (fd < 0) {
			r = vfail(err, errlen, net_errno(fd), "network adapter %u on switch '%s': %s",
				  i, n->sw, reg->sn.err);
			break;
		}
		close(fd); /* persistent: open_taps (worker.c) opens it again for the worker */
		free(n->tap);
		n->tap = strdup(tap);
		if (!n->tap) {
			r = vfail(err, errlen, -ENOMEM, "out of memory");
			i++;
			break;
		}
	}
	if (r)
		while (i-- > 0)
			if (c->nics[i].sw) {
				vswitch_tap_name(c, i, tap);
				tap_remove(reg, c->nics[i].sw, tap);
			}
	pthread_mutex_unlock(&reg->lock);
	return r;
}

void vswitch_vm_ports_release_locked(struct vm *vm)
{
	struct vswitch_registry *reg = vm->d->switches;
	char tap[16];

	if (!reg)
		return;
	pthread_mutex_lock(&reg->lock);
	for (unsigned i = 0; i < vm->cfg.n_nics; i++) {
		/* Switch adapters, and those disconnected while the VM ran (their
		 * tap stayed, on no bridge); a tap= adapter's tap is not ours. */
		if (vm->cfg.nics[i].tap)
			continue;
		vswitch_tap_name(&vm->cfg, i, tap);
		tap_remove(reg, vm->cfg.nics[i].sw, tap);
	}
	pthread_mutex_unlock(&reg->lock);
}

/* The IPv4 addresses leased to mac (lower case) on s; caller holds reg->lock. */
static json_t *leases_for(const struct vswitch *s, const char *mac)
{
	struct dnsmasq_lease *l = NULL;
	json_t *a = json_array();
	size_t n = 0;

	if (s->type != SWITCH_NAT || dnsmasq_leases_read(s->leases_path, &l, &n))
		return a;
	for (size_t i = 0; i < n; i++) {
		char m[18], ip[INET_ADDRSTRLEN];
		const uint8_t *b = l[i].mac;
		snprintf(m, sizeof(m), "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4],
			 b[5]);
		if (!strcmp(m, mac)) {
			inet_ntop(AF_INET, &l[i].addr, ip, sizeof(ip));
			json_array_append_new(a, json_string(ip));
		}
	}
	free(l);
	return a;
}

void vswitch_vm_json_locked(struct vm *vm, json_t *j)
{
	struct vswitch_registry *reg = vm->d->switches;
	json_t *nics = json_object_get(j, "network_adapters");
	bool live = vm_state_has_worker(vm->state);
	char tap[16];

	if (!reg)
		return;
	pthread_mutex_lock(&reg->lock);
	for (unsigned i = 0; i < vm->cfg.n_nics && i < json_array_size(nics); i++) {
		const struct vm_nic *n = &vm->cfg.nics[i];
		json_t *e = json_array_get(nics, i);
		if (!n->sw)
			continue;
		struct vswitch *s = find(reg, n->sw);
		json_object_set_new(e, "ip_addresses", s ? leases_for(s, n->mac) : json_array());
		vswitch_tap_name(&vm->cfg, i, tap);
		json_object_set_new(e, "tap", live ? json_string(tap) : json_null());
	}
	pthread_mutex_unlock(&reg->lock);
}

json_t *vswitch_leases_for_mac(struct daemon *d, const char *sw, const char *mac)
{
	struct vswitch_registry *reg = d->switches;
	json_t *a;

	if (!reg)
		return json_array();
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, sw);
	a = s ? leases_for(s, mac) : json_array();
	pthread_mutex_unlock(&reg->lock);
	return a;
}

/* ---- the API's operations ---- */

/* The adapters on switch name, as [{vm, adapter, mac, tap?}]; caller
 * holds d->lock. */
static json_t *adapters_locked(struct daemon *d, const char *name)
{
	json_t *a = json_array();
	char tap[16];

	for (struct vm *vm = d->vms; vm; vm = vm->next)
		for (unsigned i = 0; i < vm->cfg.n_nics; i++) {
			if (!vm->cfg.nics[i].sw || strcmp(vm->cfg.nics[i].sw, name))
				continue;
			vswitch_tap_name(&vm->cfg, i, tap);
			json_array_append_new(a, json_pack("{s:s, s:i, s:s, s:s?}", "vm", vm->cfg.name,
							   "adapter", (int)i, "mac",
							   vm->cfg.nics[i].mac, "tap",
							   vm_state_has_worker(vm->state) ? tap : NULL));
		}
	return a;
}

static json_t *show_locked(struct vswitch_registry *reg, const struct vswitch *s, json_t *adapters)
{
	json_t *j = switch_to_json(s);

	(void)reg;
	json_object_set_new(j, "bridge", json_string(s->info.bridge[0] ? s->info.bridge : ""));
	json_object_set_new(j, "up", json_boolean(s->up));
	if (!s->up)
		json_object_set_new(j, "problem", json_string(s->problem));
	json_object_set_new(j, "adapters", adapters ? adapters : json_array());
	if (s->type == SWITCH_NAT) {
		char gw[INET_ADDRSTRLEN];
		struct in_addr g = { htonl(ntohl(s->addr.addr.s_addr) + 1) };
		inet_ntop(AF_INET, &g, gw, sizeof(gw));
		json_object_set_new(j, "gateway", json_string(gw));
		json_object_set_new(j, "dhcp", json_pack("{s:b, s:i, s:i, s:s}", "running",
							 s->dns.pid > 0, "pid", (int)s->dns.pid,
							 "restarts", (int)s->dns.restarts,
							 "leases_file", s->leases_path));
	}
	return j;
}

static struct vswitch_registry *registry(struct daemon *d, char *err, size_t errlen)
{
	if (!d->switches)
		vfail(err, errlen, -EIO, "virtual switches are not available (see cloisond's log)");
	return d->switches;
}

json_t *vswitch_list_json(struct daemon *d)
{
	struct vswitch_registry *reg = d->switches;
	json_t *arr = json_array();

	if (!reg)
		return arr;
	pthread_mutex_lock(&d->lock);
	pthread_mutex_lock(&reg->lock);
	for (struct vswitch *s = reg->list; s; s = s->next)
		json_array_append_new(arr, show_locked(reg, s, adapters_locked(d, s->name)));
	pthread_mutex_unlock(&reg->lock);
	pthread_mutex_unlock(&d->lock);
	return arr;
}

int vswitch_show_json(struct daemon *d, const char *name, json_t **out, char *err, size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	int r = 0;

	if (!reg)
		return -EIO;
	pthread_mutex_lock(&d->lock);
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, name);
	if (s)
		*out = show_locked(reg, s, adapters_locked(d, name));
	else
		r = no_switch(name, err, errlen);
	pthread_mutex_unlock(&reg->lock);
	pthread_mutex_unlock(&d->lock);
	return r;
}

static int create_locked(struct vswitch_registry *reg, struct vswitch *s, char *err, size_t errlen)
{
	int r;

	if (find(reg, s->name))
		return vfail(err, errlen, -EEXIST, "a switch named '%s' exists already", s->name);
	if (s->type == SWITCH_NAT && !s->addr.len && switch_subnet_choose(&reg->sn, &s->addr))
		return vfail(err, errlen, -EINVAL, "%s", reg->sn.err);
	paths_init(reg, s);
	unlink(s->leases_path); /* a switch of the same name before this one */
	r = switch_bring_up(reg, s, err, errlen);
	if (r)
		return r;
	s->next = reg->list;
	reg->list = s;
	r = registry_save(reg);
	if (r) {
		reg->list = s->next;
		dns_stop(s);
		switch_destroy(&reg->sn, s->name);
		return vfail(err, errlen, r, "cannot write %s: %s", reg->path, strerror(-r));
	}
	log_info("switch %s (%s) created: %s", s->name, switch_type_name(s->type), s->info.bridge);
	return 0;
}

int vswitch_create_json(struct daemon *d, json_t *body, json_t **out, char *err, size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	struct vswitch *s;
	bool mgmt = false;
	const char *key;
	json_t *v;
	int r = 0;

	if (!reg)
		return -EIO;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	json_object_foreach(body, key, v) {
		if (!r)
			r = parse_field(s, key, v, &mgmt, err, errlen);
	}
	if (!r)
		r = check_type_fields(s, body, err, errlen);
	if (!mgmt)
		s->share_management = true; /* Hyper-V's default */
	if (r) {
		switch_free(s);
		return r;
	}
	pthread_mutex_lock(&reg->lock);
	r = create_locked(reg, s, err, errlen);
	if (!r)
		*out = show_locked(reg, s, json_array());
	pthread_mutex_unlock(&reg->lock);
	if (r)
		switch_free(s);
	return r;
}

int vswitch_set_json(struct daemon *d, const char *name, json_t *body, json_t **out, char *err,
		     size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	const char *key;
	json_t *v;
	int r = 0;

	if (!reg)
		return -EIO;
	json_object_foreach(body, key, v) {
		if (strcmp(key, "notes"))
			return vfail(err, errlen, -EINVAL, "field '%s' cannot be changed (settable: "
				     "notes; to change the type, adapter or subnet, remove the "
				     "switch and create it again)", key);
		if (!json_is_string(v) || json_string_length(v) > VSWITCH_NOTES_MAX)
			return vfail(err, errlen, -EINVAL, "field 'notes' must be a string of at "
				     "most %d bytes", VSWITCH_NOTES_MAX);
	}
	/* The file is written under reg->lock alone (no fsync under d->lock);
	 * d->lock joins only for the answer's adapters. */
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, name);
	if (!s) {
		r = no_switch(name, err, errlen);
	} else if ((v = json_object_get(body, "notes"))) {
		char *old = s->notes;
		s->notes = strdup(json_string_value(v));
		r = s->notes ? registry_save(reg) : -ENOMEM;
		if (r) {
			free(s->notes);
			s->notes = old;
			vfail(err, errlen, r, "cannot write %s: %s", reg->path, strerror(-r));
		} else {
			free(old);
		}
	}
	pthread_mutex_unlock(&reg->lock);
	if (r)
		return r;
	pthread_mutex_lock(&d->lock);
	pthread_mutex_lock(&reg->lock);
	s = find(reg, name);
	if (s)
		*out = show_locked(reg, s, adapters_locked(d, name));
	else
		r = no_switch(name, err, errlen); /* removed meanwhile */
	pthread_mutex_unlock(&reg->lock);
	pthread_mutex_unlock(&d->lock);
	return r;
}

/* Disconnects every adapter on switch name: the configuration first (it
 * says "not connected"), then the taps of running VMs go, which the guest
 * sees as its link going down. */
static int disconnect_all(struct daemon *d, const char *name, json_t *done, char *err,
			  size_t errlen)
{
	struct vm *list[256];
	unsigned n = 0;
	int r = 0;

	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm && n < 256; vm = vm->next)
		for (unsigned i = 0; i < vm->cfg.n_nics; i++)
			if (vm->cfg.nics[i].sw && !strcmp(vm->cfg.nics[i].sw, name)) {
				vm->refs++;
				list[n++] = vm;
				break;
			}
	pthread_mutex_unlock(&d->lock);
	for (unsigned k = 0; k < n; k++) {
		struct vm *vm = list[k];
		struct vm_config next;
		char tap[16];
		pthread_mutex_lock(&vm->cfg_lock);
		pthread_mutex_lock(&d->lock);
		int e = vm_config_copy(&next, &vm->cfg);
		bool live = vm_state_has_worker(vm->state);
		pthread_mutex_unlock(&d->lock);
		for (unsigned i = 0; !e && i < next.n_nics; i++) {
			if (!next.nics[i].sw || strcmp(next.nics[i].sw, name))
				continue;
			free(next.nics[i].sw);
			next.nics[i].sw = NULL;
			json_array_append_new(done, json_pack("{s:s, s:i}", "vm", vm->cfg.name,
							      "adapter", (int)i));
			if (live) {
				vswitch_tap_name(&next, i, tap);
				pthread_mutex_lock(&d->switches->lock);
				tap_remove(d->switches, name, tap);
				pthread_mutex_unlock(&d->switches->lock);
			}
		}
		if (!e)
			e = inventory_replace_config(vm, &next, err, errlen);
		vm_config_clear(&next);
		pthread_mutex_unlock(&vm->cfg_lock);
		inventory_put(d, vm);
		if (e && !r)
			r = e;
	}
	return r;
}

int vswitch_remove(struct daemon *d, const char *name, bool force, json_t **out, char *err,
		   size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	json_t *done;
	int r;

	if (!reg)
		return -EIO;
	pthread_mutex_lock(&d->lock);
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, name);
	json_t *ad = s ? adapters_locked(d, name) : NULL;
	pthread_mutex_unlock(&reg->lock);
	pthread_mutex_unlock(&d->lock);
	if (!s)
		return no_switch(name, err, errlen);
	size_t n = json_array_size(ad);
	if (n && !force) {
		json_t *first = json_array_get(ad, 0);
		vfail(err, errlen, -EBUSY, "switch '%s' has %zu network adapter%s (VM '%s' adapter "
		      "%lld%s): disconnect them (cloison vm set VM --disconnect N) or remove "
		      "with --force, which disconnects them", name, n, n == 1 ? "" : "s",
		      json_string_value(json_object_get(first, "vm")),
		      (long long)json_integer_value(json_object_get(first, "adapter")),
		      n > 1 ? ", ..." : "");
		json_decref(ad);
		return -EBUSY;
	}
	json_decref(ad);
	done = json_array();
	r = n ? disconnect_all(d, name, done, err, errlen) : 0;
	if (r) {
		json_decref(done);
		return r;
	}
	pthread_mutex_lock(&reg->lock);
	s = find(reg, name);
	if (!s) {
		r = no_switch(name, err, errlen);
	} else {
		r = s->up ? switch_destroy(&reg->sn, name) : 0;
		if (r == -ENOENT)
			r = 0; /* its bridge went away under us: nothing to undo */
		if (r) {
			vfail(err, errlen, r, "%s", reg->sn.err);
		} else {
			dns_stop(s);
			struct vswitch **pp = &reg->list;
			while (*pp != s)
				pp = &(*pp)->next;
			*pp = s->next;
			r = registry_save(reg);
			if (r)
				log_error("switch %s removed, but %s was not rewritten: %s", name,
					  reg->path, strerror(-r));
			r = 0;
			unlink(s->leases_path);
			switch_free(s);
			log_info("switch %s removed", name);
		}
	}
	pthread_mutex_unlock(&reg->lock);
	if (r)
		json_decref(done);
	else
		*out = json_pack("{s:s, s:o}", "removed", name, "disconnected", done);
	return r;
}

/* Finds the address of VM vm's adapter on switch s from dnsmasq's leases.
 * Takes d->lock, so the caller must not hold reg->lock. */
static int vm_address(struct daemon *d, const char *sw, const char *vmname, struct in_addr *out,
		      char *err, size_t errlen)
{
	char macs[VM_MAX_NICS][18];
	unsigned n = 0;
	struct vm *vm = inventory_get(d, vmname);

	if (!vm)
		return vfail(err, errlen, -ENOENT, "no VM named '%s' (give the VM's name or its "
			     "IPv4 address)", vmname);
	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < vm->cfg.n_nics; i++)
		if (vm->cfg.nics[i].sw && !strcmp(vm->cfg.nics[i].sw, sw))
			snprintf(macs[n++], 18, "%s", vm->cfg.nics[i].mac);
	pthread_mutex_unlock(&d->lock);
	inventory_put(d, vm);
	if (!n)
		return vfail(err, errlen, -EINVAL, "VM '%s' has no network adapter on switch '%s'",
			     vmname, sw);
	for (unsigned i = 0; i < n; i++) {
		json_t *a = vswitch_leases_for_mac(d, sw, macs[i]);
		const char *ip = json_string_value(json_array_get(a, 0));
		int ok = ip && inet_pton(AF_INET, ip, out) == 1;
		json_decref(a);
		if (ok)
			return 0;
	}
	return vfail(err, errlen, -EINVAL, "VM '%s' has no DHCP lease on switch '%s' (its guest "
		     "has not asked for an address): give its IPv4 address instead", vmname, sw);
}

static int parse_port(json_t *v, const char *field, unsigned *out, char *err, size_t errlen)
{
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
		return vfail(err, errlen, -EINVAL, "field '%s' must be a port from 1 to 65535", field);
	*out = (unsigned)json_integer_value(v);
	return 0;
}

int vswitch_forward_add(struct daemon *d, const char *name, json_t *body, json_t **out, char *err,
			size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	struct vswitch_forward f = { .proto = "" };
	const char *key, *proto, *vm;
	json_t *v;
	int r = 0;

	if (!reg)
		return -EIO;
	json_object_foreach(body, key, v) {
		if (strcmp(key, "proto") && strcmp(key, "host_port") && strcmp(key, "vm") &&
		    strcmp(key, "vm_port"))
			return vfail(err, errlen, -EINVAL, "unknown field '%s' (known: proto, "
				     "host_port, vm, vm_port)", key);
	}
	proto = json_string_value(json_object_get(body, "proto"));
	vm = json_string_value(json_object_get(body, "vm"));
	if (!proto || (strcmp(proto, "tcp") && strcmp(proto, "udp")))
		return vfail(err, errlen, -EINVAL, "field 'proto' must be tcp or udp");
	if (!vm || !*vm || strlen(vm) > VM_NAME_MAX)
		return vfail(err, errlen, -EINVAL, "field 'vm' must be a VM name or an IPv4 address");
	snprintf(f.proto, sizeof(f.proto), "%s", proto);
	if ((r = parse_port(json_object_get(body, "host_port"), "host_port", &f.host_port, err,
			    errlen)) ||
	    (r = parse_port(json_object_get(body, "vm_port"), "vm_port", &f.vm_port, err, errlen)))
		return r;
	if (inet_pton(AF_INET, vm, &f.addr) != 1) {
		snprintf(f.vm, sizeof(f.vm), "%s", vm);
		pthread_mutex_lock(&reg->lock);
		struct vswitch *s = find(reg, name);
		bool nat = s && s->type == SWITCH_NAT;
		pthread_mutex_unlock(&reg->lock);
		if (!s)
			return no_switch(name, err, errlen);
		if (nat && (r = vm_address(d, name, vm, &f.addr, err, errlen)))
			return r;
	}
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, name);
	if (!s) {
		r = no_switch(name, err, errlen);
	} else if (s->type != SWITCH_NAT) {
		r = vfail(err, errlen, -EINVAL, "switch '%s' is %s: port forwards are for nat "
			  "switches", name, switch_type_name(s->type));
	} else if (s->n_fwd == VSWITCH_MAX_FORWARDS) {
		r = vfail(err, errlen, -ENOSPC, "switch '%s' has %d forwards, the most it takes",
			  name, VSWITCH_MAX_FORWARDS);
	} else if ((r = switch_nat_forward_add(&reg->sn, name, f.proto, f.host_port, f.addr,
					       f.vm_port))) {
		vfail(err, errlen, r, "%s", reg->sn.err);
	} else {
		s->fwd[s->n_fwd++] = f;
		r = registry_save(reg);
		if (r) {
			s->n_fwd--;
			switch_nat_forward_remove(&reg->sn, name, f.proto, f.host_port);
			vfail(err, errlen, r, "cannot write %s: %s", reg->path, strerror(-r));
		} else {
			json_t *j = switch_to_json(s);
			*out = json_incref(json_object_get(j, "forwards"));
			json_decref(j);
		}
	}
	pthread_mutex_unlock(&reg->lock);
	return r;
}

int vswitch_forward_remove(struct daemon *d, const char *name, const char *proto,
			   const char *port, char *err, size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	char *end;
	long p = strtol(port, &end, 10);
	int r = 0;
	unsigned i;

	if (!reg)
		return -EIO;
	if ((strcmp(proto, "tcp") && strcmp(proto, "udp")) || *end || p < 1 || p > 65535)
		return vfail(err, errlen, -EINVAL, "a forward is named by tcp|udp and a host port "
			     "from 1 to 65535");
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, name);
	if (!s) {
		r = no_switch(name, err, errlen);
		goto out;
	}
	for (i = 0; i < s->n_fwd; i++)
		if (!strcmp(s->fwd[i].proto, proto) && s->fwd[i].host_port == (unsigned)p)
			break;
	if (i == s->n_fwd) {
		r = vfail(err, errlen, -ENOENT, "switch '%s' has no %s forward of host port %ld",
			  name, proto, p);
		goto out;
	}
	r = switch_nat_forward_remove(&reg->sn, name, proto, (unsigned)p);
	if (r && r != -ENOENT) {
		vfail(err, errlen, r, "%s", reg->sn.err);
		goto out;
	}
	memmove(&s->fwd[i], &s->fwd[i + 1], (s->n_fwd - i - 1) * sizeof(s->fwd[0]));
	s->n_fwd--;
	r = registry_save(reg);
	if (r)
		vfail(err, errlen, r, "forward removed, but %s was not rewritten: %s", reg->path,
		      strerror(-r));
out:
	pthread_mutex_unlock(&reg->lock);
	return r;
}

int vswitch_forwards_json(struct daemon *d, const char *name, json_t **out, char *err,
			  size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	int r = 0;

	if (!reg)
		return -EIO;
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, name);
	if (!s) {
		r = no_switch(name, err, errlen);
	} else {
		json_t *j = switch_to_json(s);
		json_t *f = json_object_get(j, "forwards");
		*out = f ? json_incref(f) : json_array();
		json_decref(j);
	}
	pthread_mutex_unlock(&reg->lock);
	return r;
}

int vswitch_leases_json(struct daemon *d, const char *name, json_t **out, char *err,
			size_t errlen)
{
	struct vswitch_registry *reg = registry(d, err, errlen);
	struct dnsmasq_lease *l = NULL;
	size_t n = 0;
	int r = 0;

	if (!reg)
		return -EIO;
	pthread_mutex_lock(&reg->lock);
	struct vswitch *s = find(reg, name);
	if (!s)
		r = no_switch(name, err, errlen);
	else if (s->type != SWITCH_NAT)
		r = vfail(err, errlen, -EINVAL, "switch '%s' is %s: only nat switches lease "
			  "addresses", name, switch_type_name(s->type));
	else
		r = dnsmasq_leases_read(s->leases_path, &l, &n);
	pthread_mutex_unlock(&reg->lock);
	if (r)
		return r;
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		char m[18], ip[INET_ADDRSTRLEN];
		const uint8_t *b = l[i].mac;
		snprintf(m, sizeof(m), "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4],
			 b[5]);
		inet_ntop(AF_INET, &l[i].addr, ip, sizeof(ip));
		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:I}", "mac", m, "address", ip,
						   "hostname", l[i].hostname, "expiry",
						   (json_int_t)l[i].expiry));
	}
	free(l);
	*out = a;
	return 0;
}

/* ---- moving a running VM's adapter ---- */

static int set_link(struct vm *vm, const char *tap, bool up, char *err, size_t errlen)
{
	json_t *args = json_pack("{s:s, s:b}", "tap", tap, "up", up);
	int r = worker_command_args(vm, "set-link", args, 5, NULL, err, errlen);

	json_decref(args);
	return r;
}

/* The kernel side of a move: the link goes down, the tap leaves its old
 * switch and joins the new one (if any), and the link comes back up. A
 * failed attach puts the tap back where it was. */
static int move_port(struct vm *vm, const struct vm_nic *n, const char *tap, const char *to,
		     char *err, size_t errlen)
{
	struct vswitch_registry *reg = vm->d->switches;
	struct switch_port_config pc;
	int r;

	pthread_mutex_lock(&reg->lock);
	bool have = link_exists(reg, tap);
	pthread_mutex_unlock(&reg->lock);
	if (!have)
		return vfail(err, errlen, -EBUSY, "the adapter has no tap (%s): it was not connected "
			     "when the VM started; connect it while the VM is off", tap);
	if ((r = set_link(vm, tap, false, err, errlen)))
		return r;
	port_config(n, &pc);
	pthread_mutex_lock(&reg->lock);
	if (n->sw && find(reg, n->sw))
		switch_port_detach(&reg->sn, n->sw, tap);
	r = to ? switch_port_attach(&reg->sn, to, tap, &pc) : 0;
	if (r) {
		vfail(err, errlen, net_errno(r), "%s", reg->sn.err);
		if (n->sw && find(reg, n->sw) && !switch_port_attach(&reg->sn, n->sw, tap, &pc))
			to = n->sw; /* back on the old switch: its link goes up again */
		else
			to = NULL;
	}
	pthread_mutex_unlock(&reg->lock);
	if (to) {
		char e2[256];
		if (set_link(vm, tap, true, r ? e2 : err, r ? sizeof(e2) : errlen) && !r)
			r = -EIO;
	}
	return r;
}

int vswitch_vm_connect(struct vm *vm, unsigned idx, const char *sw, char *err, size_t errlen)
{
	struct daemon *d = vm->d;
	struct vswitch_registry *reg = registry(d, err, errlen);
	struct vm_config next;
	char tap[16];
	bool live;
	int r;

	if (!reg)
		return -EIO;
	pthread_mutex_lock(&vm->op_lock);
	pthread_mutex_lock(&vm->cfg_lock);
	pthread_mutex_lock(&d->lock);
	r = vm->removed ? -ENOENT : vm_config_copy(&next, &vm->cfg);
	live = vm_state_has_worker(vm->state);
	pthread_mutex_unlock(&d->lock);
	if (r) {
		vfail(err, errlen, r, "VM '%s' was removed", vm->cfg.name);
		goto unlock;
	}
	struct vm_nic *n = idx < next.n_nics ? &next.nics[idx] : NULL;
	if (!n)
		r = vfail(err, errlen, -ENOENT, "VM '%s' has no network adapter %u (it has %u)",
			  next.name, idx, next.n_nics);
	else if (n->tap)
		r = vfail(err, errlen, -EINVAL, "network adapter %u of VM '%s' is on tap %s, not a "
			  "switch: change it while the VM is off (vm set --net)", idx, next.name, n->tap);
	if (!r && sw) {
		pthread_mutex_lock(&reg->lock);
		if (!find(reg, sw))
			r = no_switch(sw, err, errlen);
		pthread_mutex_unlock(&reg->lock);
	}
	if (r || (n->sw && sw && !strcmp(n->sw, sw)) || (!n->sw && !sw))
		goto out; /* an error, or already so */
	vswitch_tap_name(&next, idx, tap);
	if (live && (r = move_port(vm, n, tap, sw, err, errlen)))
		goto out;
	free(n->sw);
	n->sw = sw ? strdup(sw) : NULL;
	if (sw && !n->sw)
		r = vfail(err, errlen, -ENOMEM, "out of memory");
	else
		r = inventory_replace_config(vm, &next, err, errlen);
	if (!r)
		log_info("vm %s: network adapter %u %s%s", vm->cfg.name, idx,
			 sw ? "connected to switch " : "disconnected", sw ? sw : "");
out:
	vm_config_clear(&next);
unlock:
	pthread_mutex_unlock(&vm->cfg_lock);
	pthread_mutex_unlock(&vm->op_lock);
	return r;
}
