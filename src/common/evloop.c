#include "common/evloop.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct evloop_watch {
	int fd;
	evloop_cb cb;
	void *opaque;
	bool dead;
	struct evloop_watch *next;
};

struct evloop {
	int epfd;
	int stopfd;
	pthread_mutex_t lock;
	struct evloop_watch *watches;
	struct evloop_watch *graveyard; /* freed between dispatch rounds */
	volatile int stop;
};

int evloop_create(struct evloop **out)
{
	struct evloop *loop = calloc(1, sizeof(*loop));
	struct epoll_event ev = { .events = EPOLLIN };
	int ret;

	if (!loop)
		return -ENOMEM;
	pthread_mutex_init(&loop->lock, NULL);
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		ret = -errno;
		goto err_free;
	}
	loop->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (loop->stopfd < 0) {
		ret = -errno;
		goto err_epoll;
	}
	ev.data.ptr = NULL;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->stopfd, &ev) < 0) {
		ret = -errno;
		goto err_stop;
	}
	*out = loop;
	return 0;
err_stop:
	close(loop->stopfd);
err_epoll:
	close(loop->epfd);
err_free:
	free(loop);
	return ret;
}

static void free_list(struct evloop_watch *w)
{
	while (w) {
		struct evloop_watch *next = w->next;
		free(w);
		w = next;
	}
}

void evloop_destroy(struct evloop *loop)
{
	if (!loop)
		return;
	free_list(loop->watches);
	free_list(loop->graveyard);
	close(loop->stopfd);
	close(loop->epfd);
	pthread_mutex_destroy(&loop->lock);
	free(loop);
}

int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_cb cb, void *opaque)
{
	struct evloop_watch *w = calloc(1, sizeof(*w));
	struct epoll_event ev = { .events = events };

	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->cb = cb;
	w->opaque = opaque;
	ev.data.ptr = w;
	pthread_mutex_lock(&loop->lock);
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int ret = -errno;
		pthread_mutex_unlock(&loop->lock);
		free(w);
		return ret;
	}
	w->next = loop->watches;
	loop->watches = w;
	pthread_mutex_unlock(&loop->lock);
	return 0;
}

static struct evloop_watch *find_watch(struct evloop *loop, int fd)
{
	for (struct evloop_watch *w = loop->watches; w; w = w->next)
		if (w->fd == fd && !w->dead)
			return w;
	return NULL;
}

int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events };
	int ret = 0;

	pthread_mutex_lock(&loop->lock);
	ev.data.ptr = find_watch(loop, fd);
	if (!ev.data.ptr)
		ret = -ENOENT;
	else if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
		ret = -errno;
	pthread_mutex_unlock(&loop->lock);
	return ret;
}

int evloop_del_fd(struct evloop *loop, int fd)
{
	struct evloop_watch **pp, *w;
	int ret = -ENOENT;

	pthread_mutex_lock(&loop->lock);
	for (pp = &loop->watches; (w = *pp); pp = &w->next) {
		if (w->fd != fd || w->dead)
			continue;
		epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
		/* The watch may be in the current epoll batch: keep it, marked dead. */
		w->dead = true;
		*pp = w->next;
		w->next = loop->graveyard;
		loop->graveyard = w;
		ret = 0;
		break;
	}
	pthread_mutex_unlock(&loop->lock);
	return ret;
}

/* The loop this thread is running, for evloop_is_current(). */
static __thread const struct evloop *current_loop;

bool evloop_is_current(const struct evloop *loop)
{
	return loop && current_loop == loop;
}

int evloop_run(struct evloop *loop)
{
	struct epoll_event evs[64];
	int ret = 0;

	current_loop = loop;
	while (!loop->stop) {
		int n = epoll_wait(loop->epfd, evs, 64, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct evloop_watch *w = evs[i].data.ptr;
			if (!w) {
				uint64_t v;
				if (read(loop->stopfd, &v, sizeof(v)) < 0) {
					/* nothing to do: the flag below is what counts */
				}
				continue;
			}
			if (!w->dead)
				w->cb(w->opaque, evs[i].events);
		}
		pthread_mutex_lock(&loop->lock);
		free_list(loop->graveyard);
		loop->graveyard = NULL;
		pthread_mutex_unlock(&loop->lock);
	}
	current_loop = NULL;
	return ret;
}

void evloop_stop(struct evloop *loop)
{
	uint64_t one = 1;

	loop->stop = 1;
	if (write(loop->stopfd, &one, sizeof(one)) < 0) {
		/* eventfd full: the loop is already being woken */
	}
}
