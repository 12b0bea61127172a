/* Logging for every cloison program: one line per message on stderr,
 * prefixed with the program name and the level. */
#ifndef CLOISON_COMMON_LOG_H
#define CLOISON_COMMON_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Sets the name printed before each message (default "cloison") and the
 * most verbose level printed (default LOG_INFO, or CLOISON_LOG=debug|info|warn|error). */
void log_init(const char *progname, enum log_level level);
enum log_level log_get_level(void);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
