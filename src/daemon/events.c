/* The event ring: every state change becomes one numbered event that the
 * server-sent-events stream (GET /v1/events) replays to its followers. The
 * ring keeps the last EVENT_RING_SIZE events; a follower that falls further
 * behind is told how many it missed. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "daemon/daemon.h"

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
	e->seq = seq;
	e->json = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	pthread_cond_broadcast(&d->cond);
}

void events_free_all(struct daemon *d)
{
	for (size_t i = 0; i < EVENT_RING_SIZE; i++) {
		free(d->ring[i].json);
		d->ring[i].json = NULL;
	}
}
