/* The front door of the API socket. cloisond accepts every connection
 * itself and holds it here, in one epoll thread and without a thread of its
 * own, until its request head (request line and headers) has arrived; only
 * then does libmicrohttpd (http.c) take it over. So an idle connection costs
 * a file descriptor, not a thread, and here:
 *  - a request line that is not `METHOD /target HTTP/1.x` (binary data, a
 *    TLS hello, garbage) is answered 400 and closed at once;
 *  - a head not complete GATE_HEAD_TIMEOUT_S after the connection opened is
 *    answered 408 and closed (slow or idle clients);
 *  - a head larger than GATE_HEAD_MAX is answered 431;
 *  - one user (the peer's uid from SO_PEERCRED) holds at most GATE_PER_UID
 *    connections, root and cloisond's own user excepted, so no user can
 *    crowd out another or the administrator: the next one is answered 429;
 *  - all users together hold at most GATE_MAX connections, fewer if the
 *    file descriptor limit is lower, and the last GATE_ROOT_RESERVE of them
 *    are for root and cloisond's own user only (503 beyond), so that many
 *    users together cannot lock the administrator out either.
 * The bytes of the head are only peeked at: libmicrohttpd reads them again. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/api/gate.h"

#define EPOLL_BATCH 64
#define ACCEPT_PAUSE_MS 100 /* after EMFILE: let connections close first */

struct gate_conn {
	int fd;
	uid_t uid;
	uint64_t deadline_ms;
	struct sockaddr_un addr;
	socklen_t addrlen;
	struct gate_conn *prev, *next;
};

struct uid_count {
	uid_t uid;
	unsigned n;
};

struct api_gate {
	struct MHD_Daemon *mhd;
	int listen_fd;
	int epfd;
	int stop_fd;
	uid_t self_uid;
	unsigned max_total; /* GATE_MAX, or what RLIMIT_NOFILE leaves */
	unsigned root_reserve;
	pthread_t thread;
	bool thread_running;
	uint64_t listen_resume_ms; /* 0 = accepting */

	/* The waiting connections, oldest first (gate thread only). */
	struct gate_conn *head, *tail;

	/* Connection counts, here and in libmicrohttpd: the gate thread and
	 * libmicrohttpd's notify callback both change them. */
	pthread_mutex_t lock;
	struct uid_count *counts;
	unsigned n_counts, cap_counts;
	unsigned total;

	char peek[GATE_HEAD_MAX + 1];
};

static uint64_t now_ms(void)
{
	return now_ns() / 1000000;
}

/* ---- counting (under g->lock) ---- */

static struct uid_count *count_of(struct api_gate *g, uid_t uid)
{
	for (unsigned i = 0; i < g->n_counts; i++)
		if (g->counts[i].uid == uid)
			return &g->counts[i];
	return NULL;
}

/* Takes a slot for uid: 0, -EUSERS (the user is at its limit) or -EMFILE
 * (the daemon is). */
static int count_take(struct api_gate *g, uid_t uid)
{
	bool limited = uid != 0 && uid != g->self_uid;
	int r = 0;

	pthread_mutex_lock(&g->lock);
	struct uid_count *c = count_of(g, uid);
	if (g->total >= g->max_total ||
	    (limited && g->total + g->root_reserve >= g->max_total)) {
		r = -EMFILE;
	} else if (limited && c && c->n >= GATE_PER_UID) {
		r = -EUSERS;
	} else if (!c && g->n_counts == g->cap_counts) {
		unsigned cap = g->cap_counts ? g->cap_counts * 2 : 16;
		struct uid_count *nc = realloc(g->counts, cap * sizeof(*nc));
		if (!nc) {
			r = -EMFILE;
		} else {
			g->counts = nc;
			g->cap_counts = cap;
		}
	}
	if (!r) {
		if (!c) {
			c = &g->counts[g->n_counts++];
			c->uid = uid;
			c->n = 0;
		}
		c->n++;
		g->total++;
	}
	pthread_mutex_unlock(&g->lock);
	return r;
}

void api_gate_release(struct api_gate *g, uid_t uid)
{
	pthread_mutex_lock(&g->lock);
	struct uid_count *c = count_of(g, uid);
	if (c && c->n) {
		c->n--;
		g->total--;
		if (!c->n)
			*c = g->counts[--g->n_counts];
	}
	pthread_mutex_unlock(&g->lock);
}

/* ---- the head check ---- */

static bool is_target_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

enum api_head_verdict api_gate_head_check(const char *buf, size_t len, const char **why)
{
	static const char *const versions[] = { "HTTP/1.1", "HTTP/1.0" };
	size_t i = 0, n;

	while (i < len && i < 4 && (buf[i] == '\r' || buf[i] == '\n'))
		i++; /* RFC 9112 2.2: empty lines before a request line are ignored */
	for (n = 0; i < len && buf[i] >= 'A' && buf[i] <= 'Z'; i++, n++)
		;
	if (i == len && n <= 16)
		return HEAD_INCOMPLETE;
	if (i == len || n == 0 || n > 16 || buf[i] != ' ') {
		*why = "the request line does not start with a method (GET, POST, PATCH, DELETE) "
		       "and a space";
		return HEAD_BAD;
	}
	i++;
	if (i < len && buf[i] != '/') {
		*why = "the request target must be a path starting with '/'";
		return HEAD_BAD;
	}
	while (i < len && is_target_char((unsigned char)buf[i]))
		i++;
	if (i == len)
		return HEAD_INCOMPLETE;
	if (buf[i] != ' ') {
		*why = "the request target holds a byte that is not printable ASCII "
		       "(percent-encode it)";
		return HEAD_BAD;
	}
	i++;
	for (n = 0; n < 8 && i + n < len; n++)
		if (buf[i + n] != versions[0][n] && buf[i + n] != versions[1][n]) {
			*why = "the request line must end in HTTP/1.1 or HTTP/1.0";
			return HEAD_BAD;
		}
	if (n < 8)
		return HEAD_INCOMPLETE;
	i += 8;
	if (i < len && buf[i] == '\r')
		i++;
	if (i == len)
		return HEAD_INCOMPLETE;
	if (buf[i] != '\n') {
		*why = "the request line must end in HTTP/1.1 or HTTP/1.0 and a line end";
		return HEAD_BAD;
	}
	/* The headers: lines up to an empty one; libmicrohttpd parses them,
	 * but it keeps them as C strings, so a NUL would cut one short. */
	for (size_t line = ++i; i < len; i++) {
		if (buf[i] == 0) {
			*why = "a header holds a NUL byte";
			return HEAD_BAD;
		}
		if (buf[i] != '\n')
			continue;
		size_t ll = i - line;
		if (ll == 0 || (ll == 1 && buf[line] == '\r'))
			return HEAD_COMPLETE;
		line = i + 1;
	}
	return HEAD_INCOMPLETE;
}

/* ---- answering and closing here ---- */

static void conn_unlink(struct api_gate *g, struct gate_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		g->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	else
		g->tail = c->prev;
	c->prev = c->next = NULL;
}

/* Answers a connection the gate refuses and closes it. What the client
 * sent is read first: closing a unix socket with unread data would turn
 * the client's end of file into ECONNRESET. */
static void refuse(int fd, unsigned status, const char *phrase, const char *code,
		   const char *msg)
{
	char body[1024], out[1400], sink[4096];

	json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	snprintf(body, sizeof(body), "%s\n", text ? text : "{}");
	free(text);
	int n = snprintf(out, sizeof(out),
			 "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
			 status, phrase, strlen(body), body);
	for (int k = 0; k < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; k++)
		;
	if (send(fd, out, (size_t)MIN(n, (int)sizeof(out) - 1), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_debug("gate: cannot answer %u: %s", status, strerror(errno));
	shutdown(fd, SHUT_WR);
	close(fd);
}

static void conn_drop(struct api_gate *g, struct gate_conn *c, unsigned status,
		      const char *phrase, const char *code, const char *msg)
{
	epoll_ctl(g->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (status)
		refuse(c->fd, status, phrase, code, msg);
	else
		close(c->fd);
	conn_unlink(g, c);
	api_gate_release(g, c->uid);
	free(c);
}

/* Gives a connection whose head arrived to libmicrohttpd, which counts it
 * from here on (api_gate_release at its end, from http.c). */
static void conn_hand_over(struct api_gate *g, struct gate_conn *c)
{
	epoll_ctl(g->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	conn_unlink(g, c);
	if (MHD_add_connection(g->mhd, c->fd, (struct sockaddr *)&c->addr, c->addrlen) != MHD_YES) {
		log_warn("http: libmicrohttpd refused a connection: %s", strerror(errno));
		api_gate_release(g, c->uid); /* it closed the socket */
	}
	free(c);
}

static void conn_examine(struct api_gate *g, struct gate_conn *c)
{
	char msg[256];
	const char *why = "malformed request head";

	ssize_t n = recv(c->fd, g->peek, sizeof(g->peek), MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_drop(g, c, 0, NULL, NULL, NULL);
		return;
	}
	switch (api_gate_head_check(g->peek, (size_t)n, &why)) {
	case HEAD_COMPLETE:
		conn_hand_over(g, c);
		return;
	case HEAD_BAD:
		snprintf(msg, sizeof(msg), "not an HTTP/1.1 request (cloisond's socket speaks "
			 "HTTP/1.1): %s", why);
		conn_drop(g, c, 400, "Bad Request", "bad-request", msg);
		return;
	case HEAD_INCOMPLETE:
		if ((size_t)n < sizeof(g->peek))
			return;
		snprintf(msg, sizeof(msg), "the request line and headers are larger than %d bytes",
			 GATE_HEAD_MAX);
		conn_drop(g, c, 431, "Request Header Fields Too Large", "too-large", msg);
		return;
	}
}

/* ---- accepting ---- */

static void accept_one(struct api_gate *g, int fd, struct sockaddr_un *addr, socklen_t addrlen)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char msg[300];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		refuse(fd, 403, "Forbidden", "forbidden",
		       "cannot identify the caller (SO_PEERCRED failed on the connection)");
		return;
	}
	int r = count_take(g, cred.uid);
	if (r == -EUSERS) {
		snprintf(msg, sizeof(msg),
			 "user %u already holds %d connections to cloisond, the limit for one "
			 "user: close some, then retry",
			 (unsigned)cred.uid, GATE_PER_UID);
		refuse(fd, 429, "Too Many Requests", "too-many-connections", msg);
		return;
	}
	if (r) {
		snprintf(msg, sizeof(msg),
			 "cloisond holds %u connections, its limit: retry in a moment",
			 g->max_total);
		refuse(fd, 503, "Service Unavailable", "too-many-connections", msg);
		return;
	}
	struct gate_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		api_gate_release(g, cred.uid);
		close(fd);
		return;
	}
	c->fd = fd;
	c->uid = cred.uid;
	c->deadline_ms = now_ms() + GATE_HEAD_TIMEOUT_S * 1000;
	c->addr = *addr;
	c->addrlen = addrlen;
	/* Edge-triggered: the bytes are only peeked at, so level-triggered
	 * would report them again and again. */
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c };
	if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		api_gate_release(g, cred.uid);
		close(fd);
		free(c);
		return;
	}
	c->prev = g->tail;
	if (g->tail)
		g->tail->next = c;
	else
		g->head = c;
	g->tail = c;
	conn_examine(g, c); /* the head may be there already */
}

static void accept_all(struct api_gate *g)
{
	for (;;) {
		struct sockaddr_un addr;
		socklen_t addrlen = sizeof(addr);
		int fd = accept4(g->listen_fd, (struct sockaddr *)&addr, &addrlen,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			accept_one(g, fd, &addr, addrlen);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* The listening socket stays readable: stop watching it
			 * for a moment rather than spin. */
			log_warn("http: cannot accept a connection: %s", strerror(errno));
			struct epoll_event ev = { .events = 0, .data.ptr = &g->listen_fd };
			epoll_ctl(g->epfd, EPOLL_CTL_MOD, g->listen_fd, &ev);
			g->listen_resume_ms = now_ms() + ACCEPT_PAUSE_MS;
		}
		return;
	}
}

static int next_timeout_ms(struct api_gate *g)
{
	uint64_t now = now_ms(), until = UINT64_MAX;

	if (g->head)
		until = g->head->deadline_ms;
	if (g->listen_resume_ms)
		until = MIN(until, g->listen_resume_ms);
	if (until == UINT64_MAX)
		return -1;
	return until <= now ? 0 : (int)MIN(until - now, 60000);
}

static void expire(struct api_gate *g)
{
	uint64_t now = now_ms();
	char msg[200];

	snprintf(msg, sizeof(msg),
		 "the request line and headers did not arrive within %d seconds of connecting",
		 GATE_HEAD_TIMEOUT_S);
	while (g->head && g->head->deadline_ms <= now)
		conn_drop(g, g->head, 408, "Request Timeout", "timeout", msg);
	if (g->listen_resume_ms && g->listen_resume_ms <= now) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &g->listen_fd };
		epoll_ctl(g->epfd, EPOLL_CTL_MOD, g->listen_fd, &ev);
		g->listen_resume_ms = 0;
	}
}

static void *gate_main(void *arg)
{
	struct api_gate *g = arg;
	struct epoll_event evs[EPOLL_BATCH];

	for (;;) {
		int n = epoll_wait(g->epfd, evs, EPOLL_BATCH, next_timeout_ms(g));
		if (n < 0 && errno != EINTR) {
			log_error("http: epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == &g->stop_fd)
				return NULL;
			if (evs[i].data.ptr == &g->listen_fd)
				accept_all(g);
			else
				conn_examine(g, evs[i].data.ptr);
		}
		expire(g);
	}
	return NULL;
}

/* How many connections the descriptor limit allows: the soft limit is
 * raised towards the hard one first (a service manager's default soft
 * limit, often 1,024, is far below GATE_MAX), and GATE_FD_RESERVE stay for
 * the daemon's own files and its workers' sockets. */
static unsigned connection_budget(void)
{
	struct rlimit rl;
	rlim_t want = GATE_MAX + GATE_FD_RESERVE;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return GATE_MAX;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		struct rlimit up = rl;
		up.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : MIN(want, rl.rlim_max);
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return GATE_MAX;
	unsigned budget = rl.rlim_cur > 2 * GATE_FD_RESERVE ? (unsigned)(rl.rlim_cur - GATE_FD_RESERVE)
							  : (unsigned)(rl.rlim_cur / 2);
	log_warn("http: the file descriptor limit (%llu) allows %u API connections, not %d "
		 "(raise LimitNOFILE)", (unsigned long long)rl.rlim_cur, budget, GATE_MAX);
	return budget;
}

int api_gate_start(struct MHD_Daemon *mhd, int listen_fd, struct api_gate **out)
{
	struct api_gate *g = calloc(1, sizeof(*g));
	int r;

	if (!g)
		return -ENOMEM;
	g->epfd = -1;
	g->mhd = mhd;
	g->listen_fd = listen_fd;
	g->self_uid = geteuid();
	g->max_total = connection_budget();
	g->root_reserve = MIN(GATE_ROOT_RESERVE, g->max_total / 4);
	g->stop_fd = -1;
	pthread_mutex_init(&g->lock, NULL);
	g->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (g->epfd < 0) {
		r = -errno;
		goto fail;
	}
	g->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->stop_fd < 0 || fd_set_nonblock(listen_fd, true)) {
		r = -errno;
		goto fail;
	}
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &g->listen_fd };
	struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &g->stop_fd };
	if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, listen_fd, &lev) < 0 ||
	    epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->stop_fd, &sev) < 0) {
		r = -errno;
		goto fail;
	}
	r = -pthread_create(&g->thread, NULL, gate_main, g);
	if (r)
		goto fail;
	g->thread_running = true;
	*out = g;
	return 0;
fail:
	api_gate_free(g);
	return r;
}

void api_gate_stop(struct api_gate *g)
{
	if (!g)
		return;
	if (g->thread_running) {
		uint64_t one = 1;
		if (write(g->stop_fd, &one, sizeof(one)) < 0)
			log_warn("http: cannot stop the accept thread: %s", strerror(errno));
		pthread_join(g->thread, NULL);
	}
	g->thread_running = false;
	while (g->head)
		conn_drop(g, g->head, 0, NULL, NULL, NULL);
}

void api_gate_free(struct api_gate *g)
{
	if (!g)
		return;
	api_gate_stop(g);
	if (g->stop_fd >= 0)
		close(g->stop_fd);
	if (g->epfd >= 0)
		close(g->epfd);
	pthread_mutex_destroy(&g->lock);
	free(g->counts);
	free(g);
}
