/* Unix stream sockets the worker listens on (--serial unix:, --control,
 * --console unix:) and the non-blocking send they all use. */
#ifndef CLOISON_VMM_UNIXSOCK_H
#define CLOISON_VMM_UNIXSOCK_H

#include <stdbool.h>
#include <stddef.h>

/* Binds and listens on path (non-blocking, close-on-exec). A stale socket
 * there (nobody accepts) is replaced; a live one is -EADDRINUSE, anything
 * else at path -EEXIST, a path too long for sun_path -ENAMETOOLONG.
 * Returns the fd or -errno. */
int unixsock_listen(const char *path, int backlog);

/* Sends all of buf without blocking and without SIGPIPE; false when the
 * peer is gone or its buffer is full (the caller drops it). */
bool unixsock_send_all(int fd, const void *buf, size_t len);

#endif
