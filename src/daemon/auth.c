/* Roles. The socket is root:cloison 0660, so anyone who can connect is a
 * cloison user; the peer's SO_PEERCRED then decides what it may do:
 *  - host administrators: root, the daemon's own user, members of the admin
 *    group (default `cloison-admins`) and the users listed in cloisond.json;
 *  - VM operators: everyone else, and only on the VMs whose `operators`
 *    list names them (Hyper-V's delegated VM administration). */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/daemon.h"

static bool in_group(const char *user, gid_t primary, const char *group)
{
	struct group grp, *g = NULL;
	char buf[16384];
	gid_t groups[256];
	int n = (int)ARRAY_SIZE(groups);

	if (getgrnam_r(group, &grp, buf, sizeof(buf), &g) || !g)
		return false;
	if (getgrouplist(user, primary, groups, &n) < 0)
		return false;
	for (int i = 0; i < n; i++)
		if (groups[i] == g->gr_gid)
			return true;
	return false;
}

int auth_identify(struct daemon *d, int fd, struct peer *p)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct passwd pw, *pwp = NULL;
	char buf[16384];

	memset(p, 0, sizeof(*p));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	p->uid = cred.uid;
	p->gid = cred.gid;
	p->pid = cred.pid;
	if (!getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &pwp) && pwp)
		snprintf(p->user, sizeof(p->user), "%s", pw.pw_name);
	else
		snprintf(p->user, sizeof(p->user), "%u", (unsigned)cred.uid);

	if (cred.uid == 0 || cred.uid == geteuid()) {
		p->admin = true;
		return 0;
	}
	for (unsigned i = 0; i < d->n_admins; i++)
		if (!strcmp(d->admins[i], p->user))
			p->admin = true;
	if (!p->admin && pwp && d->admin_group[0])
		p->admin = in_group(p->user, pw.pw_gid, d->admin_group);
	return 0;
}

bool auth_may_operate(const struct peer *p, const struct vm *vm)
{
	if (p->admin)
		return true;
	for (unsigned i = 0; i < vm->cfg.n_operators; i++)
		if (!strcmp(vm->cfg.operators[i], p->user))
			return true;
	return false;
}

static int cfg_fail(char *err, size_t errlen, const char *path, const char *what)
{
	snprintf(err, errlen, "%s: %s", path, what);
	return -EINVAL;
}

int daemon_config_load(struct daemon *d, char *err, size_t errlen)
{
	json_error_t jerr;
	const char *key;
	json_t *v;

	snprintf(d->admin_group, sizeof(d->admin_group), "cloison-admins");
	snprintf(d->socket_group, sizeof(d->socket_group), "cloison");
	d->default_stop_timeout = 30;
	d->memory_reserve = 512ULL << 20;
	d->balancer_interval_ms = 1000;
	if (access(d->config_path, F_OK) < 0)
		return 0;
	json_t *j = json_load_file(d->config_path, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		snprintf(err, errlen, "%s: malformed JSON at line %d column %d: %s",
			 d->config_path, jerr.line, jerr.column, jerr.text);
		return -EINVAL;
	}
	int r = 0;
	if (!json_is_object(j)) {
		r = cfg_fail(err, errlen, d->config_path, "must be a JSON object");
		goto out;
	}
	json_object_foreach(j, key, v) {
		if (!strcmp(key, "schema_version")) {
			if (!json_is_integer(v) || json_integer_value(v) != 1)
				r = cfg_fail(err, errlen, d->config_path, "schema_version must be 1");
		} else if (!strcmp(key, "admins")) {
			size_t i;
			json_t *e;
			if (!json_is_array(v) || json_array_size(v) > DAEMON_MAX_ADMINS)
				r = cfg_fail(err, errlen, d->config_path,
					     "'admins' must be an array of at most 32 user names");
			else
				json_array_foreach(v, i, e) {
					if (!json_is_string(e)) {
						r = cfg_fail(err, errlen, d->config_path,
							     "'admins' must hold user names");
						break;
					}
					d->admins[d->n_admins++] = strdup(json_string_value(e));
				}
		} else if (!strcmp(key, "admin_group") || !strcmp(key, "socket_group")) {
			char *dst = key[0] == 'a' ? d->admin_group : d->socket_group;
			if (!json_is_string(v) || json_string_length(v) >= 64)
				r = cfg_fail(err, errlen, d->config_path,
					     "'admin_group'/'socket_group' must be group names");
			else
				snprintf(dst, 64, "%s", json_string_value(v));
		} else if (!strcmp(key, "default_stop_timeout")) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 86400)
				r = cfg_fail(err, errlen, d->config_path,
					     "'default_stop_timeout' must be 0-86400 seconds");
			else
				d->default_stop_timeout = (unsigned)json_integer_value(v);
		} else if (!strcmp(key, "memory_pool") || !strcmp(key, "memory_reserve")) {
			/* dynamic memory (balancer.c): bytes */
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    (uint64_t)json_integer_value(v) > (1ULL << 50))
				r = cfg_fail(err, errlen, d->config_path,
					     "'memory_pool'/'memory_reserve' must be bytes (0 to 2^50)");
			else
				*(key[7] == 'p' ? &d->memory_pool : &d->memory_reserve) =
					(uint64_t)json_integer_value(v);
		} else if (!strcmp(key, "balancer_interval_ms")) {
			if (!json_is_integer(v) || json_integer_value(v) < 100 ||
			    json_integer_value(v) > 60000)
				r = cfg_fail(err, errlen, d->config_path,
					     "'balancer_interval_ms' must be 100-60000 milliseconds");
			else
				d->balancer_interval_ms = (unsigned)json_integer_value(v);
		} else {
			snprintf(err, errlen,
				 "%s: unknown field '%s' (known: schema_version, admins, "
				 "admin_group, socket_group, default_stop_timeout, memory_pool, "
				 "memory_reserve, balancer_interval_ms)",
				 d->config_path, key);
			r = -EINVAL;
		}
		if (r)
			break;
	}
out:
	json_decref(j);
	return r;
}
