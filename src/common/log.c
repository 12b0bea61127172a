#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The one piece of process-wide state: set once in main() before threads. */
static struct {
	const char *progname;
	enum log_level level;
} log_cfg = { "cloison", LOG_INFO };

static enum log_level level_from_env(enum log_level dflt)
{
	const char *s = getenv("CLOISON_LOG");

	if (!s)
		return dflt;
	if (!strcmp(s, "debug"))
		return LOG_DEBUG;
	if (!strcmp(s, "info"))
		return LOG_INFO;
	if (!strcmp(s, "warn"))
		return LOG_WARN;
	if (!strcmp(s, "error"))
		return LOG_ERROR;
	return dflt;
}

void log_init(const char *progname, enum log_level level)
{
	log_cfg.progname = progname;
	log_cfg.level = level_from_env(level);
}

enum log_level log_get_level(void)
{
	return log_cfg.level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[2048];
	va_list ap;
	int n;

	if (level > log_cfg.level)
		return;
	n = snprintf(line, sizeof(line), "%s: %s: ", log_cfg.progname, names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One fputs per line so lines from different threads do not interleave. */
	n = (int)strlen(line);
	if (n < (int)sizeof(line) - 1)
		strcat(line, "\n");
	fputs(line, stderr);
}
