/* The worker's error convention in one call: fill err (what failed and
 * why, for the user) and return ret (0 or -errno). */
#ifndef CLOISON_VMM_FAIL_H
#define CLOISON_VMM_FAIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline int vmm_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static inline int vmm_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ret;
}

#endif
