/* The guest's tiny libc: memory and string helpers (the compiler may call
 * memcpy/memset on its own), a printf subset and number parsing. */
#include "user.h"

void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	if (d < s) {
		for (size_t i = 0; i < n; i++)
			d[i] = s[i];
	} else {
		for (size_t i = n; i > 0; i--)
			d[i - 1] = s[i - 1];
	}
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

struct fmt_out {
	char *buf;
	size_t len, pos;
};

static void put(struct fmt_out *o, char c)
{
	if (o->pos + 1 < o->len)
		o->buf[o->pos] = c;
	o->pos++;
}

static void put_num(struct fmt_out *o, uint64_t v, unsigned base, int width, char pad, bool neg)
{
	char tmp[24];
	int n = 0;

	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (neg)
		tmp[n++] = '-';
	for (int i = n; i < width; i++)
		put(o, pad);
	while (n)
		put(o, tmp[--n]);
}

size_t fmt_v(char *buf, size_t len, const char *f, va_list ap)
{
	struct fmt_out o = { buf, len, 0 };

	for (; *f; f++) {
		int width = 0, lng = 0;
		char pad = ' ';

		if (*f != '%') {
			put(&o, *f);
			continue;
		}
		f++;
		if (*f == '0') {
			pad = '0';
			f++;
		}
		while (*f >= '0' && *f <= '9')
			width = width * 10 + (*f++ - '0');
		while (*f == 'l' || *f == 'z') {
			lng++;
			f++;
		}
		switch (*f) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			int n = (int)strlen(s);
			for (int i = n; i < width; i++)
				put(&o, ' ');
			while (*s)
				put(&o, *s++);
			break;
		}
		case 'c':
			put(&o, (char)va_arg(ap, int));
			break;
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			put_num(&o, v < 0 ? (uint64_t)-v : (uint64_t)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
		case 'x': {
			uint64_t v = lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned);
			put_num(&o, v, *f == 'u' ? 10 : 16, width, pad, false);
			break;
		}
		case 'p':
			put(&o, '0');
			put(&o, 'x');
			put_num(&o, (uint64_t)(uintptr_t)va_arg(ap, void *), 16, 0, ' ', false);
			break;
		case '%':
			put(&o, '%');
			break;
		default:
			put(&o, '?');
			break;
		}
	}
	if (len)
		buf[o.pos < len ? o.pos : len - 1] = 0;
	return o.pos;
}

size_t fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, f);
	n = fmt_v(buf, len, f, ap);
	va_end(ap);
	return n;
}

void out_raw(const char *s, size_t len)
{
	sys_call(SYS_WRITE, (uint64_t)(uintptr_t)s, len, 0, 0);
}

void out(const char *f, ...)
{
	char buf[1024];
	va_list ap;
	size_t n;

	va_start(ap, f);
	n = fmt_v(buf, sizeof(buf), f, ap);
	va_end(ap);
	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	out_raw(buf, n);
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static unsigned size_shift(char c)
{
	switch (c) {
	case 'k': case 'K': return 10;
	case 'm': case 'M': return 20;
	case 'g': case 'G': return 30;
	case 't': case 'T': return 40;
	}
	return 0;
}

uint64_t parse_size(const char *s, const char **end)
{
	const char *p = s;
	uint64_t hex = 0, dec = 0;
	bool all_dec = true;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		p += 2;
		all_dec = false;
	}
	while (hex_digit(*p) >= 0) {
		hex = hex * 16 + (uint64_t)hex_digit(*p);
		if (*p >= '0' && *p <= '9')
			dec = dec * 10 + (uint64_t)(*p - '0');
		else
			all_dec = false;
		p++;
	}
	if (p == s) {
		*end = s;
		return 0;
	}
	if (all_dec && size_shift(*p)) {
		unsigned sh = size_shift(*p++);
		*end = p;
		return dec << sh;
	}
	*end = p;
	return hex;
}

uint64_t parse_dec(const char *s, size_t len, bool *ok)
{
	uint64_t v = 0;

	*ok = len > 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9') {
			*ok = false;
			return 0;
		}
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	return v;
}

bool word_is(const char *w, size_t wlen, const char *name)
{
	size_t n = strlen(name);

	return n == wlen && memcmp(w, name, n) == 0;
}

bool word_has_prefix(const char *w, size_t wlen, const char *prefix)
{
	size_t n = strlen(prefix);

	return wlen >= n && memcmp(w, prefix, n) == 0;
}
