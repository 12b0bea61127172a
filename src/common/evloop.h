/* An epoll event loop: one thread calls evloop_run(); any thread may add or
 * remove fds and ask it to stop. Callbacks run on the loop thread. */
#ifndef CLOISON_COMMON_EVLOOP_H
#define CLOISON_COMMON_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>

struct evloop;

/* events are EPOLLIN/EPOLLOUT/... bits as returned by epoll. */
typedef void (*evloop_cb)(void *opaque, uint32_t events);

/* 0 or -errno. */
int evloop_create(struct evloop **out);
void evloop_destroy(struct evloop *loop);

/* Watches fd for events (EPOLLIN, EPOLLOUT, ...; level-triggered). One
 * registration per fd. 0 or -errno. */
int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_cb cb, void *opaque);
int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events);
/* Safe to call from a callback, including for the fd being dispatched. */
int evloop_del_fd(struct evloop *loop, int fd);

/* Runs until evloop_stop(); returns 0 or -errno. */
int evloop_run(struct evloop *loop);
/* Async-signal-safe and thread-safe. */
void evloop_stop(struct evloop *loop);
/* Whether the calling thread is inside evloop_run(loop): work that only
 * the loop's thread may do (its seccomp list) is handed to it otherwise. */
bool evloop_is_current(const struct evloop *loop);

#endif
