/* GUIDs as Microsoft stores them (VHDX, VHD's UUID fields are big-endian
 * though -- see guid_from_be/guid_to_be): the first three fields
 * little-endian, the last 8 bytes as they are. */
#ifndef CLOISON_COMMON_GUID_H
#define CLOISON_COMMON_GUID_H

#include <stdbool.h>
#include <stdint.h>

struct guid {
	uint32_t data1;
	uint16_t data2;
	uint16_t data3;
	uint8_t data4[8];
};

#define GUID_STR_LEN 37 /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" + NUL */

/* A random (version 4) GUID from getrandom(); 0 or -errno. */
int guid_generate(struct guid *g);

/* Canonical lower-case text form, no braces. Returns buf. */
char *guid_to_string(const struct guid *g, char buf[GUID_STR_LEN]);

/* Accepts the canonical form with or without braces, any case; 0 or -EINVAL. */
int guid_parse(const char *s, struct guid *g);

bool guid_equal(const struct guid *a, const struct guid *b);
bool guid_is_zero(const struct guid *g);

/* The 16-byte on-disk forms: "le" is Microsoft's mixed-endian layout (VHDX),
 * "be" is RFC 4122 byte order (VHD's unique id). */
void guid_from_le(struct guid *g, const uint8_t raw[16]);
void guid_to_le(const struct guid *g, uint8_t raw[16]);
void guid_from_be(struct guid *g, const uint8_t raw[16]);
void guid_to_be(const struct guid *g, uint8_t raw[16]);

#endif
