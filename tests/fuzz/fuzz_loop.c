/* The stand-ins of fuzz_loop.h. */
#include "fuzz_loop.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/evloop.h"
#include "common/log.h"

uint64_t fin_take(struct fuzz_in *in, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes && in->n; i++, in->p++, in->n--)
		v |= (uint64_t)*in->p << (8 * i);
	return v;
}

/* ---- common/log.h: formatted (so a bad format still shows), dropped --- */

static int verbose = -1;

void log_init(const char *progname, enum log_level level)
{
}

enum log_level log_get_level(void)
{
	return LOG_DEBUG;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (verbose < 0)
		verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (verbose)
		fprintf(stderr, "fuzz log %d: %s\n", (int)level, line);
}

/* ---- common/evloop.h: poll(2), run on demand -------------------------- */

#define LOOP_MAX FUZZ_LOOP_MAX

struct evloop {
	struct {
		int fd;
		uint32_t events;
		evloop_cb cb;
		void *opaque;
	} w[LOOP_MAX];
	unsigned n;
};

int evloop_create(struct evloop **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void evloop_destroy(struct evloop *loop)
{
	free(loop);
}

static int find_fd(struct evloop *loop, int fd)
{
	for (unsigned i = 0; i < loop->n; i++)
		if (loop->w[i].fd == fd)
			return (int)i;
	return -1;
}

int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_cb cb, void *opaque)
{
	if (fd < 0)
		return -EBADF;
	if (find_fd(loop, fd) >= 0)
		return -EEXIST;
	if (loop->n == LOOP_MAX)
		return -ENOSPC;
	loop->w[loop->n].fd = fd;
	loop->w[loop->n].events = events;
	loop->w[loop->n].cb = cb;
	loop->w[loop->n].opaque = opaque;
	loop->n++;
	return 0;
}

int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events)
{
	int i = find_fd(loop, fd);

	if (i < 0)
		return -ENOENT;
	loop->w[i].events = events;
	return 0;
}

int evloop_del_fd(struct evloop *loop, int fd)
{
	int i = find_fd(loop, fd);

	if (i < 0)
		return -ENOENT;
	loop->w[i] = loop->w[--loop->n];
	return 0;
}

int evloop_run(struct evloop *loop)
{
	return -ENOSYS; /* nothing here runs the loop on a thread */
}

void evloop_stop(struct evloop *loop)
{
}

/* The loop fuzz_loop_run is dispatching, for evloop_is_current(). */
static const struct evloop *running;

bool evloop_is_current(const struct evloop *loop)
{
	return loop && running == loop;
}

void fuzz_loop_run(struct evloop *loop, unsigned rounds)
{
	const struct evloop *outer = running;

	running = loop;
	for (unsigned r = 0; r < rounds; r++) {
		struct pollfd pfd[LOOP_MAX];
		unsigned n = loop->n;
		bool any = false;

		for (unsigned i = 0; i < n; i++)
			pfd[i] = (struct pollfd){ .fd = loop->w[i].fd,
						  .events = (short)(loop->w[i].events &
								    (EPOLLIN | EPOLLOUT)) };
		if (poll(pfd, n, 0) <= 0)
			break;
		/* A callback may add or remove watches: look each fd up again. */
		for (unsigned i = 0; i < n; i++) {
			int at;

			if (!pfd[i].revents)
				continue;
			at = find_fd(loop, pfd[i].fd);
			if (at < 0)
				continue;
			any = true;
			loop->w[at].cb(loop->w[at].opaque, (uint32_t)pfd[i].revents);
		}
		if (!any)
			break;
	}
	running = outer;
}

unsigned fuzz_loop_count(const struct evloop *loop)
{
	return loop->n;
}

void fuzz_loop_snapshot(const struct evloop *loop, struct fuzz_loop_snap *out)
{
	out->n = loop->n;
	for (unsigned i = 0; i < loop->n; i++) {
		out->fd[i] = loop->w[i].fd;
		out->events[i] = loop->w[i].events;
	}
}

int fuzz_loop_same(const struct evloop *loop, const struct fuzz_loop_snap *snap)
{
	if (loop->n != snap->n)
		return 0;
	for (unsigned i = 0; i < snap->n; i++) {
		int at = find_fd((struct evloop *)loop, snap->fd[i]);

		if (at < 0 || loop->w[at].events != snap->events[i])
			return 0;
	}
	return 1;
}

const char *fuzz_tmpdir(void)
{
	static char dir[64];

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/cloison-fuzz-XXXXXX");
		if (!mkdtemp(dir))
			abort();
	}
	return dir;
}

