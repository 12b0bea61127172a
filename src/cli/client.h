/* The CLI's client for cloisond's REST API: HTTP/JSON over the daemon's
 * unix socket (libcurl), plus the raw upgraded stream of `vm console` and
 * the server-sent events of `vm watch`. */
#ifndef CLOISON_CLI_CLIENT_H
#define CLOISON_CLI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>

#define CLIENT_DEFAULT_SOCKET "/run/cloison/cloisond.sock"

struct client {
	char socket[108];
};

/* Picks the socket: opt (--socket), else $CLOISON_SOCKET, else the
 * default. 0, or CLI_EXIT_USAGE after printing why. */
int client_init(struct client *c, const char *opt);

/* Sends METHOD path (e.g. "/v1/vms") with body (may be NULL; not consumed)
 * and returns a CLI exit status: CLI_EXIT_OK with *resp the parsed JSON
 * (caller decrefs), or the status matching the daemon's error after
 * printing its message (CLI_EXIT_UNAVAILABLE when the daemon cannot be
 * reached). */
int client_call(struct client *c, const char *method, const char *path, json_t *body,
		json_t **resp);

/* Follows GET path as server-sent events, calling on_event(type, data)
 * for each; on_event returns true to continue. Returns a CLI exit status. */
int client_follow(struct client *c, const char *path,
		  bool (*on_event)(const char *type, json_t *data, void *opaque), void *opaque);

/* Opens the raw socket and performs an HTTP upgrade to proto on path;
 * returns the connected fd (the stream is raw from then on) or a negative
 * CLI exit status after printing why. */
int client_upgrade(struct client *c, const char *path, const char *proto);

/* Percent-encodes a path segment (a VM name) into out. */
void client_escape(const char *in, char *out, size_t len);

#endif
