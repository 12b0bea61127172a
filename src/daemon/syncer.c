/* Durability off the daemon-wide lock. A few files are written with
 * d->lock held because what they record is decided there: a VM's
 * status.json (every state change) and the MAC pool (an address handed
 * out). They are replaced whole under the lock (atomic_replace_file, no
 * fsync: a kill -9 of cloisond cannot tear them, the page cache keeps
 * them), and this thread makes them durable against power loss a moment
 * later, fsyncing each file and its directory with no lock held. So no
 * fsync waits under d->lock, and a slow disk stalls no API request.
 *
 * The queue has its own mutex, never held while d->lock is taken. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/log.h"
#include "daemon/daemon.h"

struct syncer {
	pthread_mutex_t lock;
	pthread_cond_t cond, idle;
	pthread_t thread;
	char **paths;
	unsigned n, cap;
	bool busy, stop;
};

static void sync_one(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (fsync(fd) < 0)
			log_warn("%s: fsync: %s", path, strerror(errno));
		close(fd);
	}
	/* the rename that put it there, even if it is gone again */
	int r = fsync_parent_dir(path);
	if (r && r != -ENOENT)
		log_warn("%s: fsync of its directory: %s", path, strerror(-r));
}

static void *syncer_main(void *arg)
{
	struct syncer *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->n && !s->stop)
			pthread_cond_wait(&s->cond, &s->lock);
		if (!s->n && s->stop)
			break;
		char **paths = s->paths;
		unsigned n = s->n;
		s->paths = NULL;
		s->n = s->cap = 0;
		s->busy = true;
		pthread_mutex_unlock(&s->lock);
		for (unsigned i = 0; i < n; i++) {
			sync_one(paths[i]);
			free(paths[i]);
		}
		free(paths);
		pthread_mutex_lock(&s->lock);
		s->busy = false;
		pthread_cond_broadcast(&s->idle);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int syncer_start(struct daemon *d)
{
	struct syncer *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_cond_init(&s->idle, NULL);
	int r = pthread_create(&s->thread, NULL, syncer_main, s);
	if (r) {
		free(s);
		return -r;
	}
	d->syncer = s;
	return 0;
}

void syncer_queue(struct daemon *d, const char *path)
{
	struct syncer *s = d->syncer;

	if (!s) {
		/* no thread (a unit test, or before the start): now */
		sync_one(path);
		return;
	}
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->paths[i], path)) {
			pthread_mutex_unlock(&s->lock);
			return;
		}
	if (s->n == s->cap) {
		unsigned cap = s->cap ? 2 * s->cap : 16;
		char **p = realloc(s->paths, cap * sizeof(*p));
		if (!p) {
			pthread_mutex_unlock(&s->lock);
			sync_one(path);
			return;
		}
		s->paths = p;
		s->cap = cap;
	}
	s->paths[s->n] = strdup(path);
	if (s->paths[s->n])
		s->n++;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

void syncer_flush(struct daemon *d)
{
	struct syncer *s = d->syncer;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	while (s->n || s->busy)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

void syncer_stop(struct daemon *d)
{
	struct syncer *s = d->syncer;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	d->syncer = NULL;
	free(s->paths);
	free(s);
}
