#include "common/guid.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

int guid_generate(struct guid *g)
{
	uint8_t raw[16];
	size_t got = 0;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	raw[6] = (uint8_t)((raw[6] & 0x0f) | 0x40); /* version 4 */
	raw[8] = (uint8_t)((raw[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	guid_from_be(g, raw);
	return 0;
}

char *guid_to_string(const struct guid *g, char buf[GUID_STR_LEN])
{
	snprintf(buf, GUID_STR_LEN, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 g->data1, g->data2, g->data3, g->data4[0], g->data4[1], g->data4[2],
		 g->data4[3], g->data4[4], g->data4[5], g->data4[6], g->data4[7]);
	return buf;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int guid_parse(const char *s, struct guid *g)
{
	uint8_t raw[16];
	size_t len = strlen(s);
	int nib = 0;

	if (len == 38 && s[0] == '{' && s[37] == '}') {
		s++;
		len -= 2;
	}
	if (len != 36)
		return -EINVAL;
	for (size_t i = 0; i < 36; i++) {
		int v;
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			continue;
		}
		v = hexval(s[i]);
		if (v < 0)
			return -EINVAL;
		if (nib % 2 == 0)
			raw[nib / 2] = (uint8_t)(v << 4);
		else
			raw[nib / 2] |= (uint8_t)v;
		nib++;
	}
	guid_from_be(g, raw);
	return 0;
}

bool guid_equal(const struct guid *a, const struct guid *b)
{
	return a->data1 == b->data1 && a->data2 == b->data2 && a->data3 == b->data3 &&
	       !memcmp(a->data4, b->data4, 8);
}

bool guid_is_zero(const struct guid *g)
{
	static const struct guid zero;

	return guid_equal(g, &zero);
}

void guid_from_le(struct guid *g, const uint8_t r[16])
{
	g->data1 = (uint32_t)r[0] | (uint32_t)r[1] << 8 | (uint32_t)r[2] << 16 | (uint32_t)r[3] << 24;
	g->data2 = (uint16_t)(r[4] | r[5] << 8);
	g->data3 = (uint16_t)(r[6] | r[7] << 8);
	memcpy(g->data4, r + 8, 8);
}

void guid_to_le(const struct guid *g, uint8_t r[16])
{
	r[0] = (uint8_t)g->data1;
	r[1] = (uint8_t)(g->data1 >> 8);
	r[2] = (uint8_t)(g->data1 >> 16);
	r[3] = (uint8_t)(g->data1 >> 24);
	r[4] = (uint8_t)g->data2;
	r[5] = (uint8_t)(g->data2 >> 8);
	r[6] = (uint8_t)g->data3;
	r[7] = (uint8_t)(g->data3 >> 8);
	memcpy(r + 8, g->data4, 8);
}

void guid_from_be(struct guid *g, const uint8_t r[16])
{
	g->data1 = (uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 | (uint32_t)r[2] << 8 | (uint32_t)r[3];
	g->data2 = (uint16_t)(r[4] << 8 | r[5]);
	g->data3 = (uint16_t)(r[6] << 8 | r[7]);
	memcpy(g->data4, r + 8, 8);
}

void guid_to_be(const struct guid *g, uint8_t r[16])
{
	r[0] = (uint8_t)(g->data1 >> 24);
	r[1] = (uint8_t)(g->data1 >> 16);
	r[2] = (uint8_t)(g->data1 >> 8);
	r[3] = (uint8_t)g->data1;
	r[4] = (uint8_t)(g->data2 >> 8);
	r[5] = (uint8_t)g->data2;
	r[6] = (uint8_t)(g->data3 >> 8);
	r[7] = (uint8_t)g->data3;
	memcpy(r + 8, g->data4, 8);
}
