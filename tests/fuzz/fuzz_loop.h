/* What every fuzz target of the worker and the daemon shares
 * (fuzz_loop.c): the input reader, and stand-ins for common/log.h (messages
 * formatted, then dropped unless FUZZ_VERBOSE is set in the environment)
 * and common/evloop.h (a poll(2) loop that runs only when the harness
 * says, so no thread races the input). Linking fuzz_loop.c keeps
 * libcommon's log.o and evloop.o out. */
#ifndef CLOISON_TESTS_FUZZ_LOOP_H
#define CLOISON_TESTS_FUZZ_LOOP_H

#include <stddef.h>
#include <stdint.h>

struct evloop;

/* The input as it is consumed; reads past its end give zeroes. */
struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

uint64_t fin_take(struct fuzz_in *in, unsigned bytes);
static inline uint8_t fin_u8(struct fuzz_in *in)
{
	return (uint8_t)fin_take(in, 1);
}
static inline uint16_t fin_u16(struct fuzz_in *in)
{
	return (uint16_t)fin_take(in, 2);
}

/* Dispatches ready fds on loop, up to rounds times (while any are). */
void fuzz_loop_run(struct evloop *loop, unsigned rounds);
/* How many fds loop watches. */
unsigned fuzz_loop_count(const struct evloop *loop);

/* What a loop watches (fds and their events), to compare later. */
#define FUZZ_LOOP_MAX 64
struct fuzz_loop_snap {
	unsigned n;
	int fd[FUZZ_LOOP_MAX];
	uint32_t events[FUZZ_LOOP_MAX];
};
void fuzz_loop_snapshot(const struct evloop *loop, struct fuzz_loop_snap *out);
/* Whether loop watches the same fds for the same events as when snap was
 * taken (in any order). */
int fuzz_loop_same(const struct evloop *loop, const struct fuzz_loop_snap *snap);

/* A private directory for sockets and files (made once per process). */
const char *fuzz_tmpdir(void);

#endif
