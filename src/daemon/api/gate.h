/* The API socket's front door (gate.c): accepts connections, holds each
 * without a thread until its request head has arrived, refuses what is not
 * HTTP/1.x, too slow or over a user's connection limit, and hands the rest
 * to libmicrohttpd with MHD_add_connection. */
#ifndef CLOISON_DAEMON_API_GATE_H
#define CLOISON_DAEMON_API_GATE_H

#include <microhttpd.h>
#include <sys/types.h>

#define GATE_HEAD_TIMEOUT_S 10 /* connect to end of the request head */
#define GATE_HEAD_MAX 16384    /* request line and headers, bytes */
#define GATE_PER_UID 64	       /* connections one user may hold (root: no limit) */
#define GATE_MAX 4096	       /* connections all users together may hold */
#define GATE_ROOT_RESERVE 64   /* of those, for root and cloisond's user only */
#define GATE_FD_RESERVE 128    /* descriptors kept for everything but connections */

struct api_gate;

enum api_head_verdict { HEAD_INCOMPLETE, HEAD_COMPLETE, HEAD_BAD };

/* Checks the first len bytes a client sent: the request line must be
 * `METHOD /target HTTP/1.1` (or 1.0; METHOD of 1-16 capital letters, the
 * target printable ASCII), and no header may hold a NUL. HEAD_COMPLETE once
 * the empty line that ends the headers is in buf; HEAD_INCOMPLETE while what
 * is there can still become a valid head; HEAD_BAD as soon as it cannot
 * (so binary data is refused without waiting for a line end), with *why
 * saying what is wrong. */
enum api_head_verdict api_gate_head_check(const char *buf, size_t len, const char **why);

/* Starts the accept thread on listen_fd (made non-blocking), handing
 * connections to mhd (started with MHD_USE_NO_LISTEN_SOCKET and
 * MHD_USE_ITC). 0 or -errno; *out is the caller's until api_gate_stop. */
int api_gate_start(struct MHD_Daemon *mhd, int listen_fd, struct api_gate **out);
/* Stops the thread and closes the connections still waiting; call before
 * MHD_stop_daemon. */
void api_gate_stop(struct api_gate *g);
/* Stops if needed and frees; after MHD_stop_daemon (whose close
 * notifications still release slots). NULL is a no-op. */
void api_gate_free(struct api_gate *g);
/* Gives back the slot of a connection of uid that libmicrohttpd closed
 * (its MHD_CONNECTION_NOTIFY_CLOSED). */
void api_gate_release(struct api_gate *g, uid_t uid);

#endif
