/* File helpers with crash-consistency promises. */
#ifndef CLOISON_COMMON_FILEUTIL_H
#define CLOISON_COMMON_FILEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Replaces path with exactly data[0..len) so that after a crash at any point
 * the file holds either the old or the new contents, never a mix: writes
 * "path.tmp.<pid>", fsyncs it, renames it over path and fsyncs the directory.
 * mode is used for a new file. 0 or -errno; on failure path is untouched. */
int atomic_write_file(const char *path, const void *data, size_t len, mode_t mode);
/* The same; durable false skips both fsyncs: the file is replaced whole
 * (a kill -9 cannot tear it) and made durable later by whoever fsyncs it
 * and its directory (cloisond's syncer, off its daemon-wide lock). */
int atomic_replace_file(const char *path, const void *data, size_t len, mode_t mode,
			bool durable);

/* Reads a whole file (at most max bytes) into a malloc'd, NUL-terminated
 * buffer the caller frees. 0 or -errno (-EFBIG past max). */
int read_file(const char *path, size_t max, char **data, size_t *len);

/* fsyncs the directory that contains path; 0 or -errno. */
int fsync_parent_dir(const char *path);

/* mkdir -p with mode; 0 or -errno. */
int mkdir_p(const char *path, mode_t mode);

/* Removes the directory dir and the files in it (no subdirectories), then
 * fsyncs its parent. A missing dir is 0; else 0 or -errno (what could be
 * removed is gone). */
int remove_flat_dir(const char *dir);

#endif
