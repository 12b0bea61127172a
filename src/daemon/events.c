/* The event ring: every state change becomes one numbered event that the
 * server-sent-events stream (GET /v1/events) replays to its followers. The
 * ring keeps the last EVENT_RING_SIZE events; a follower that falls further
 * behind is told how many it missed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/daemon.h"

/* The operators of the VM named name as "a\0b\0\0"; NULL if none. */
static char *audience_of(struct daemon *d, const char *name)
{
	const struct vm *vm = d->vms;
	size_t len = 1;

	while (vm && strcmp(vm->cfg.name, name))
		vm = vm->next;
	if (!vm || !vm->cfg.n_operators)
		return NULL;
	for (unsigned i = 0; i < vm->cfg.n_operators; i++)
		len += strlen(vm->cfg.operators[i]) + 1;
	char *a = malloc(len), *p = a;
	if (!a)
		return NULL; /* administrators only: never more than allowed */
	for (unsigned i = 0; i < vm->cfg.n_operators; i++) {
		size_t n = strlen(vm->cfg.operators[i]) + 1;
		memcpy(p, vm->cfg.operators[i], n);
		p += n;
	}
	*p = 0;
	return a;
}

bool events_visible(const struct event *e, const struct peer *p)
{
	if (!e->about_vm || p->admin)
		return true;
	for (const char *a = e->audience; a && *a; a += strlen(a) + 1)
		if (!strcmp(a, p->user))
			return true;
	return false;
}

void events_push_locked(struct daemon *d, const char *type, json_t *j)
{
	struct timespec ts;
	struct tm tm;
	char stamp[40];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000);

	uint64_t seq = ++d->next_seq;
	json_object_set_new(j, "seq", json_integer((json_int_t)seq));
	json_object_set_new(j, "type", json_string(type));
	json_object_set_new(j, "time", json_string(stamp));
	struct event *e = &d->ring[seq % EVENT_RING_SIZE];
	free(e->json);
	free(e->audience);
	e->seq = seq;
	e->json = json_dumps(j, JSON_COMPACT);
	const char *name = json_string_value(json_object_get(j, "vm"));
	e->about_vm = name != NULL;
	snprintf(e->vm, sizeof(e->vm), "%s", name ? name : "");
	e->audience = name ? audience_of(d, name) : NULL;
	json_decref(j);
	pthread_cond_broadcast(&d->cond);
}

void events_free_all(struct daemon *d)
{
	for (size_t i = 0; i < EVENT_RING_SIZE; i++) {
		free(d->ring[i].json);
		free(d->ring[i].audience);
		d->ring[i].json = NULL;
		d->ring[i].audience = NULL;
	}
}
