/* The MAC address pool: one per host, a range [min, max] that dynamic MACs
 * are handed out from in order, as Hyper-V does. The default follows
 * Hyper-V's scheme with a locally administered prefix (00:15:5d is
 * Microsoft's): 02:c1:05, then two bytes from the host's IPv4 address,
 * then one byte of range: 02:c1:05:HH:HH:00 - 02:c1:05:HH:HH:ff.
 *
 * A dynamic address is never handed out twice: every address handed out
 * is recorded (as merged intervals) in <state>/macpool.json, replaced
 * atomically before the address is used, and skipped from then on, even
 * after its VM is gone or the range changes. Addresses a VM already has
 * (static ones included) are skipped too. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "daemon/daemon.h"

#define MACPOOL_PREFIX 0x02c105000000ULL

int macpool_parse(const char *s, char mac[18])
{
	unsigned b[6];
	char tail;

	if (strlen(s) != 17)
		return -EINVAL;
	for (int i = 2; i < 17; i += 3)
		if (s[i] != ':' && s[i] != '-')
			return -EINVAL;
	if (sscanf(s, "%2x%*c%2x%*c%2x%*c%2x%*c%2x%*c%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4],
		   &b[5], &tail) != 6)
		return -EINVAL;
	if (b[0] & 1)
		return -EINVAL; /* multicast */
	if (!(b[0] | b[1] | b[2] | b[3] | b[4] | b[5]))
		return -EINVAL;
	snprintf(mac, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0] & 0xffu, b[1] & 0xffu, b[2] & 0xffu,
		 b[3] & 0xffu, b[4] & 0xffu, b[5] & 0xffu);
	return 0;
}

static uint64_t mac_value(const char *mac)
{
	unsigned b[6] = { 0 };
	uint64_t v = 0;

	sscanf(mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]);
	for (int i = 0; i < 6; i++)
		v = v << 8 | (b[i] & 0xff);
	return v;
}

static void mac_string(uint64_t v, char mac[18])
{
	snprintf(mac, 18, "%02x:%02x:%02x:%02x:%02x:%02x", (unsigned)(v >> 40) & 0xff,
		 (unsigned)(v >> 32) & 0xff, (unsigned)(v >> 24) & 0xff, (unsigned)(v >> 16) & 0xff,
		 (unsigned)(v >> 8) & 0xff, (unsigned)v & 0xff);
}

/* Two bytes from the host: the last two of its first global IPv4
 * address, else random ones (a host without an address yet). */
static unsigned host_bytes(void)
{
	struct ifaddrs *ifa = NULL;
	unsigned v = 0;
	bool found = false;

	if (getifaddrs(&ifa) == 0) {
		for (struct ifaddrs *i = ifa; i && !found; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
				continue;
			/* getifaddrs aligns it for its family (void *: clang's
			 * -Wcast-align in the fuzz build) */
			const struct sockaddr_in *sin = (const void *)i->ifa_addr;
			uint32_t a = ntohl(sin->sin_addr.s_addr);
			if ((a >> 24) == 127)
				continue;
			v = a & 0xffff;
			found = true;
		}
		freeifaddrs(ifa);
	}
	if (!found) {
		unsigned char r[2] = { 0 };
		if (getrandom(r, 2, 0) == 2)
			v = (unsigned)r[0] << 8 | r[1];
	}
	return v;
}

static void pool_default(struct mac_pool *p)
{
	p->min = MACPOOL_PREFIX | (uint64_t)host_bytes() << 8;
	p->max = p->min | 0xff;
	p->loaded = true;
}

static void pool_path(const struct daemon *d, char *out, size_t len)
{
	snprintf(out, len, "%s/macpool.json", d->state_dir);
}

static int pool_save(struct daemon *d, const struct mac_pool *p)
{
	char path[2200], a[18], b[18];
	json_t *iv;

	if (!d->state_dir[0])
		return 0; /* no state directory (unit tests): memory only */
	iv = json_array();
	for (unsigned i = 0; i < p->n_handed; i++) {
		mac_string(p->handed[i][0], a);
		mac_string(p->handed[i][1], b);
		json_array_append_new(iv, json_pack("[s, s]", a, b));
	}
	mac_string(p->min, a);
	mac_string(p->max, b);
	json_t *j = json_pack("{s:s, s:s, s:o}", "min", a, "max", b, "handed_out", iv);
	char *text = json_dumps(j, JSON_INDENT(2));
	json_decref(j);
	if (!text)
		return -ENOMEM;
	pool_path(d, path, sizeof(path));
	/* Under d->lock: replaced whole now (a kill -9 keeps it), durable a
	 * moment later (syncer.c). After a power loss in between, the
	 * configurations that carry the address still mark it in use. */
	int r = atomic_replace_file(path, text, strlen(text), 0640, false);
	if (!r)
		syncer_queue(d, path);
	free(text);
	return r;
}

int macpool_load(struct daemon *d, char *err, size_t errlen)
{
	struct mac_pool *p = &d->macpool;
	char path[2200];
	json_error_t jerr;
	json_t *j, *e;
	size_t i;

	pool_path(d, path, sizeof(path));
	if (access(path, F_OK) < 0) {
		pool_default(p);
		return pool_save(d, p);
	}
	j = json_load_file(path, 0, &jerr);
	if (!j) {
		snprintf(err, errlen, "%s: line %d: %s", path, jerr.line, jerr.text);
		return -EINVAL;
	}
	const char *mn = json_string_value(json_object_get(j, "min"));
	const char *mx = json_string_value(json_object_get(j, "max"));
	char a[18], b[18];
	if (!mn || !mx || macpool_parse(mn, a) || macpool_parse(mx, b)) {
		json_decref(j);
		snprintf(err, errlen, "%s: 'min' and 'max' must be MAC addresses", path);
		return -EINVAL;
	}
	p->min = mac_value(a);
	p->max = mac_value(b);
	p->n_handed = 0;
	json_array_foreach(json_object_get(j, "handed_out"), i, e) {
		const char *x = json_string_value(json_array_get(e, 0));
		const char *y = json_string_value(json_array_get(e, 1));
		if (x && y && p->n_handed < MACPOOL_INTERVALS) {
			p->handed[p->n_handed][0] = mac_value(x);
			p->handed[p->n_handed][1] = mac_value(y);
			p->n_handed++;
		}
	}
	json_decref(j);
	p->loaded = true;
	return 0;
}

/* The end of the handed-out interval holding v, or 0 when none does. */
static uint64_t handed_end(const struct mac_pool *p, uint64_t v)
{
	for (unsigned i = 0; i < p->n_handed; i++)
		if (v >= p->handed[i][0] && v <= p->handed[i][1])
			return p->handed[i][1];
	return 0;
}

static bool mac_in_use(struct daemon *d, const char *mac)
{
	for (struct vm *vm = d->vms; vm; vm = vm->next)
		for (unsigned i = 0; i < vm->cfg.n_nics; i++)
			if (!strcmp(vm->cfg.nics[i].mac, mac))
				return true;
	return false;
}

/* Records v as handed out: grows an adjacent interval or adds one (the
 * oldest is merged into its neighbour when the table is full, which can
 * only skip more addresses, never fewer). */
static void record(struct mac_pool *p, uint64_t v)
{
	for (unsigned i = 0; i < p->n_handed; i++) {
		if (p->handed[i][1] + 1 == v) {
			p->handed[i][1] = v;
			return;
		}
		if (p->handed[i][0] == v + 1) {
			p->handed[i][0] = v;
			return;
		}
	}
	if (p->n_handed == MACPOOL_INTERVALS) {
		p->handed[1][0] = p->handed[0][0] < p->handed[1][0] ? p->handed[0][0] : p->handed[1][0];
		p->handed[1][1] = p->handed[0][1] > p->handed[1][1] ? p->handed[0][1] : p->handed[1][1];
		memmove(&p->handed[0], &p->handed[1], (MACPOOL_INTERVALS - 1) * sizeof(p->handed[0]));
		p->n_handed--;
	}
	p->handed[p->n_handed][0] = p->handed[p->n_handed][1] = v;
	p->n_handed++;
}

int macpool_allocate(struct daemon *d, char mac[18])
{
	struct mac_pool *p = &d->macpool;

	if (!p->loaded)
		pool_default(p);
	for (uint64_t v = p->min; v <= p->max; v++) {
		uint64_t end = handed_end(p, v);
		if (end) {
			v = end;
			continue;
		}
		mac_string(v, mac);
		if (mac_in_use(d, mac))
			continue;
		struct mac_pool next = *p;
		record(&next, v);
		int r = pool_save(d, &next);
		if (r) {
			log_error("cannot record MAC %s as handed out: %s", mac, strerror(-r));
			mac[0] = 0;
			return -EIO;
		}
		*p = next;
		return 0;
	}
	mac[0] = 0;
	return -ENOSPC;
}

void macpool_exhausted(struct daemon *d, char *err, size_t errlen)
{
	char a[18], b[18];

	mac_string(d->macpool.min, a);
	mac_string(d->macpool.max, b);
	snprintf(err, errlen, "the MAC address pool %s-%s is exhausted (every dynamic address in it "
		 "has been handed out once): give the adapter a static mac=, or a new range with "
		 "'cloison host set --mac-range MIN-MAX'", a, b);
}

/* Counts the addresses of [min, max] not handed out yet. */
static uint64_t remaining(const struct mac_pool *p)
{
	uint64_t n = p->max - p->min + 1;

	for (unsigned i = 0; i < p->n_handed; i++) {
		uint64_t lo = p->handed[i][0] > p->min ? p->handed[i][0] : p->min;
		uint64_t hi = p->handed[i][1] < p->max ? p->handed[i][1] : p->max;
		if (lo <= hi)
			n -= hi - lo + 1;
	}
	return n;
}

json_t *macpool_json_locked(struct daemon *d)
{
	struct mac_pool *p = &d->macpool;
	char a[18], b[18];

	if (!p->loaded)
		pool_default(p);
	mac_string(p->min, a);
	mac_string(p->max, b);
	return json_pack("{s:s, s:s, s:I}", "min", a, "max", b, "remaining",
			 (json_int_t)remaining(p));
}

int macpool_set_range(struct daemon *d, const char *range, char *err, size_t errlen)
{
	char a[18], b[18], lo[18], hi[18];
	const char *dash = strchr(range, '-');

	if (dash && strlen(range) == 35 && range[17] == '-') {
		memcpy(lo, range, 17);
		lo[17] = 0;
		snprintf(hi, sizeof(hi), "%s", range + 18);
	} else {
		lo[0] = hi[0] = 0;
	}
	if (!lo[0] || macpool_parse(lo, a) || macpool_parse(hi, b)) {
		snprintf(err, errlen, "bad MAC range '%s': use MIN-MAX with two unicast MACs, like "
			 "02:c1:05:01:02:00-02:c1:05:01:02:ff", range);
		return -EINVAL;
	}
	uint64_t mn = mac_value(a), mx = mac_value(b);
	if (mn > mx || (mn >> 24) != (mx >> 24)) {
		snprintf(err, errlen, "bad MAC range '%s': MIN must not be above MAX, and both must "
			 "share their first three bytes (the prefix)", range);
		return -EINVAL;
	}
	pthread_mutex_lock(&d->lock);
	struct mac_pool next = d->macpool;
	if (!next.loaded)
		pool_default(&next);
	next.min = mn;
	next.max = mx;
	int r = pool_save(d, &next);
	if (r)
		snprintf(err, errlen, "cannot write the MAC pool to the state directory: %s",
			 strerror(-r));
	else
		d->macpool = next;
	pthread_mutex_unlock(&d->lock);
	return r;
}
