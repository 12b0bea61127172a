/* The control socket (--control PATH): JSON lines, requests and responses
 * plus events broadcast to every client (docs/vmm.md). */
#ifndef CLOISON_VMM_CONTROL_H
#define CLOISON_VMM_CONTROL_H

#include <stddef.h>

struct vm;
struct control;

/* Checks that path can be used: 0 when it does not exist or holds a stale
 * socket; -EADDRINUSE when a live socket answers there; -EEXIST when it is
 * something else than a socket. err says which. */
int control_check_path(const char *path, char *err, size_t errlen);

/* Listens on path (replacing a stale socket) and serves clients on the
 * VM's event loop. 0 or -errno with err filled. */
int control_create(const char *path, struct vm *vm, struct control **out, char *err,
		   size_t errlen);
/* Sends line (one JSON object, no newline) to every client; any thread. */
void control_broadcast(struct control *ctl, const char *line);
/* Closes every connection and removes the socket file. NULL is fine. */
void control_destroy(struct control *ctl);

#endif
