/* Lets the test guest's freestanding SHA-256 (guest/sha256.c) build in a
 * hosted program: the one declaration it takes from guest/virtio.h, with
 * libc's string functions. */
#ifndef CLOISON_AGENT_HOSTED_VIRTIO_H
#define CLOISON_AGENT_HOSTED_VIRTIO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	unsigned used;
};
void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
void sha256_final(struct sha256 *s, uint8_t out[32]);

#endif
