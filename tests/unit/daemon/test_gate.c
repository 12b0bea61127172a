/* The API socket's front door: api_gate_head_check() accepts a well-formed
 * HTTP/1.x head, waits on any prefix of one, and refuses binary data, bad
 * methods, targets and versions, and NULs at the first byte that shows it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "daemon/api/gate.h"

static enum api_head_verdict check(const char *buf, size_t len)
{
	const char *why = NULL;
	enum api_head_verdict v = api_gate_head_check(buf, len, &why);

	if (v == HEAD_BAD)
		assert_non_null(why);
	return v;
}

static void test_complete_heads(void **state)
{
	static const char *const ok[] = {
		"GET /v1/vms HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /v1/vms HTTP/1.0\r\n\r\n",
		"POST /v1/vms HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
		"\r\nDELETE /v1/vms/a%00b HTTP/1.1\nHost: x\n\n",
		"PATCH /v1/vms/x?y=z HTTP/1.1\r\nA: b\r\nC: d\r\n\r\n",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		size_t len = strlen(ok[i]);
		assert_int_equal(check(ok[i], len), HEAD_COMPLETE);
		/* Every prefix short of the end of the head is only incomplete. */
		const char *end = strstr(ok[i], "\r\n\r\n");
		size_t head = end ? (size_t)(end - ok[i]) + 3 : (size_t)(strstr(ok[i], "\n\n") - ok[i]) + 1;
		for (size_t n = 0; n < head; n++)
			if (check(ok[i], n) != HEAD_INCOMPLETE)
				fail_msg("prefix %zu of case %zu is not incomplete", n, i);
	}
}

static void test_refused_at_once(void **state)
{
	static const struct {
		const char *buf;
		size_t len;
	} bad[] = {
		{ "\x16\x03\x01\x02\x00", 5 },		/* a TLS hello: first byte */
		{ "\x00", 1 },
		{ "get / HTTP/1.1\r\n\r\n", 18 },	/* lower case */
		{ "GE\xffT / HTTP/1.1\r\n\r\n", 18 },
		{ "GET\x00 / HTTP/1.1\r\n\r\n", 18 },
		{ "garbage\r\n\r\n", 11 },
		{ "ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\n\r\n", 32 }, /* a 17-letter method */
		{ "GET  / HTTP/1.1\r\n\r\n", 19 },	/* two spaces */
		{ "GET v1 HTTP/1.1\r\n\r\n", 19 },	/* no leading '/' */
		{ "GET /a\x01 HTTP/1.1\r\n\r\n", 20 },
		{ "GET /\xc3\xa9 HTTP/1.1\r\n\r\n", 21 },	/* raw non-ASCII target */
		{ "GET / HTTP/2.0\r\n\r\n", 18 },
		{ "GET / HTTP/1.1 \r\n\r\n", 19 },
		{ "GET / HTTP/1.1\r\nA: a\x00" "b\r\n\r\n", 25 },
		{ "\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", 24 }, /* more than 4 empty-line bytes */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (check(bad[i].buf, bad[i].len) != HEAD_BAD)
			fail_msg("case %zu is not refused", i);
	/* Refused as soon as the bad byte is there, not at the line end. */
	assert_int_equal(check("\x16", 1), HEAD_BAD);
	assert_int_equal(check("GET /x\x7f", 7), HEAD_BAD);
	assert_int_equal(check("GET / HTTQ", 10), HEAD_BAD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_complete_heads),
		cmocka_unit_test(test_refused_at_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
