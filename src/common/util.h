/* Small helpers shared by every cloison program. */
#ifndef CLOISON_COMMON_UTIL_H
#define CLOISON_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)
#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)
#define TiB (1024ULL * GiB)

/* Parses a size such as "512", "64M", "5G", "1.5G", "4KiB" (binary units;
 * a bare number is bytes unless default_unit says otherwise, e.g. MiB for
 * --memory). Returns 0, or -EINVAL for garbage, -ERANGE for overflow. */
int parse_size(const char *s, uint64_t default_unit, uint64_t *out);

/* Formats bytes as a short human string ("1.5 GiB"); returns buf. */
char *format_size(uint64_t bytes, char *buf, size_t len);

/* Parses a whole decimal unsigned integer; 0 or -EINVAL/-ERANGE. */
int parse_u64(const char *s, uint64_t *out);

/* pread/pwrite/read/write the whole buffer, retrying on EINTR and short
 * transfers. Return 0, -errno, or -EIO on an unexpected end of file. */
int pread_full(int fd, void *buf, size_t len, off_t off);
int pwrite_full(int fd, const void *buf, size_t len, off_t off);
int read_full(int fd, void *buf, size_t len);
int write_full(int fd, const void *buf, size_t len);

/* Monotonic clock in nanoseconds. */
uint64_t now_ns(void);

/* Sets O_NONBLOCK / FD_CLOEXEC on fd; 0 or -errno. */
int fd_set_nonblock(int fd, bool on);
int fd_set_cloexec(int fd, bool on);

#endif
