/* The `cloison disk` verbs that move data: convert, merge (into the parent
 * or --into a new image) and compact. Copies look at the allocation map of
 * every chain member first, so unallocated space is never read, and skip
 * runs of zeroes, so dynamic and raw targets stay sparse. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/disk_cli.h"
#include "common/fileutil.h"
#include "common/util.h"

#define COPY_CHUNK (4 * MiB)	  /* one read from the source */
#define ZERO_GRANULE (64 * KiB) /* zero runs shorter than this are written anyway */

/* Set by SIGINT/SIGTERM during a copy so the copy stops and cleans up its
 * temporary file. A signal flag is the one thing that must be global. */
static volatile sig_atomic_t copy_interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	copy_interrupted = 1;
}

struct progress {
	bool on, tty;
	const char *what;
	uint64_t total, done, last_ns;
	int last_pct;
};

static void progress_init(struct progress *p, bool forced, const char *what, uint64_t total)
{
	memset(p, 0, sizeof(*p));
	p->tty = isatty(STDERR_FILENO);
	p->on = forced || p->tty;
	p->what = what;
	p->total = total;
	p->last_pct = -1;
}

static void progress_update(struct progress *p, uint64_t done)
{
	uint64_t now = now_ns();
	int pct;

	p->done = done;
	if (!p->on || !p->total)
		return;
	pct = (int)(done * 100 / p->total);
	if (pct == p->last_pct || (pct < 100 && now - p->last_ns < 100000000ULL))
		return;
	p->last_pct = pct;
	p->last_ns = now;
	if (p->tty)
		fprintf(stderr, "\r%s: %3d%%", p->what, pct);
	else
		fprintf(stderr, "%s: %d%%\n", p->what, pct);
}

static void progress_end(struct progress *p)
{
	if (p->on && p->tty && p->last_pct >= 0)
		fputc('\n', stderr);
}

static bool all_zero(const uint8_t *b, size_t len)
{
	return len == 0 || (b[0] == 0 && !memcmp(b, b + 1, len - 1));
}

/* Allocation across the chain: *alloc is true if any member holds data
 * at off; *run is how far that answer holds (at most len). */
static int chain_status(struct disk *d, uint64_t off, uint64_t len, bool *alloc, uint64_t *run)
{
	uint64_t shortest = len;

	for (struct disk *m = d; m; m = disk_parent(m)) {
		bool a;
		uint64_t r;
		int ret = disk_block_status(m, off, len, &a, &r);
		if (ret)
			return ret;
		if (!r || r > len)
			r = len;
		if (a) {
			*alloc = true;
			*run = r;
			return 0;
		}
		shortest = MIN(shortest, r);
		if (m != d && disk_size(m) <= off)
			break; /* past a smaller parent: zeroes */
	}
	*alloc = false;
	*run = shortest;
	return 0;
}

/* Writes buf[0..len) at off to dst, skipping ZERO_GRANULE-aligned runs of
 * zeroes (the target reads zeroes there already). */
static int write_nonzero(struct disk *dst, const uint8_t *buf, uint64_t len, uint64_t off,
			 uint64_t *written)
{
	uint64_t pos = 0;

	while (pos < len) {
		uint64_t g = MIN(ZERO_GRANULE - ((off + pos) % ZERO_GRANULE), len - pos);
		uint64_t start;
		if (all_zero(buf + pos, g)) {
			pos += g;
			continue;
		}
		start = pos;
		while (pos < len) {
			g = MIN(ZERO_GRANULE - ((off + pos) % ZERO_GRANULE), len - pos);
			if (all_zero(buf + pos, g))
				break;
			pos += g;
		}
		int ret = disk_pwrite(dst, buf + start, pos - start, off + start);
		if (ret)
			return ret;
		*written += pos - start;
	}
	return 0;
}

struct copy_stats {
	uint64_t read, written;
};

/* The copy is a pipeline: a reader thread walks the allocation map and
 * reads the source into a ring of chunks while the caller's thread checks
 * them for zeroes and writes them, so reading and writing overlap (on this
 * kind of host each is a system call that costs as much as the copy). */
#define COPY_SLOTS 4

struct copy_pipe {
	struct disk *src;
	uint64_t size;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	uint8_t *buf[COPY_SLOTS];
	uint64_t off[COPY_SLOTS], len[COPY_SLOTS], end[COPY_SLOTS];
	unsigned head, tail; /* filled: [tail, head) modulo COPY_SLOTS */
	bool done, stop;     /* the reader finished; the writer gave up */
	int err;	     /* the reader's error */
	uint64_t read;
};

/* Reader: each slot is a run of allocated data (len > 0) or, with len 0,
 * only how far the copy has come (end), for the progress. */
static void *copy_reader(void *arg)
{
	struct copy_pipe *p = arg;
	uint64_t off = 0, known_end = 0;
	bool alloc = false;
	int ret = 0;

	while (off < p->size && !ret) {
		uint64_t run;
		if (copy_interrupted) {
			ret = -EINTR;
			break;
		}
		/* one allocation query per extent, not per chunk: a raw file's
		 * SEEK_DATA walk costs as much as reading a chunk here */
		if (off >= known_end) {
			ret = chain_status(p->src, off, p->size - off, &alloc, &run);
			if (ret)
				break;
			known_end = off + run;
		}
		/* data in chunks; a hole in one go (nothing to read) */
		run = alloc ? MIN(COPY_CHUNK - off % COPY_CHUNK, known_end - off) : known_end - off;
		pthread_mutex_lock(&p->lock);
		while (p->head - p->tail == COPY_SLOTS && !p->stop)
			pthread_cond_wait(&p->cv, &p->lock);
		bool stop = p->stop;
		unsigned i = p->head % COPY_SLOTS;
		pthread_mutex_unlock(&p->lock);
		if (stop)
			break;
		/* the slot is the reader's until head moves past it */
		if (alloc) {
			ret = disk_pread(p->src, p->buf[i], run, off);
			if (ret)
				break;
			p->read += run;
		}
		p->off[i] = off;
		p->len[i] = alloc ? run : 0;
		p->end[i] = off + run;
		off += run;
		pthread_mutex_lock(&p->lock);
		p->head++;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_lock(&p->lock);
	p->err = ret;
	p->done = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Copies the content src shows into dst (which reads as zeroes). */
static int copy_content(struct disk *src, struct disk *dst, struct progress *prog,
			struct copy_stats *stats, const char **failed_path)
{
	struct copy_pipe p = { .src = src, .size = disk_size(src) };
	pthread_t reader;
	int ret = 0;

	*failed_path = disk_path(src);
	for (unsigned i = 0; i < COPY_SLOTS; i++)
		if (posix_memalign((void **)&p.buf[i], 4096, COPY_CHUNK)) {
			for (unsigned k = 0; k < i; k++)
				free(p.buf[k]);
			return -ENOMEM;
		}
	pthread_mutex_init(&p.lock, NULL);
	pthread_cond_init(&p.cv, NULL);
	ret = -pthread_create(&reader, NULL, copy_reader, &p);
	if (ret)
		goto out;
	for (;;) {
		pthread_mutex_lock(&p.lock);
		while (p.head == p.tail && !p.done)
			pthread_cond_wait(&p.cv, &p.lock);
		bool empty = p.head == p.tail;
		unsigned i = p.tail % COPY_SLOTS;
		pthread_mutex_unlock(&p.lock);
		if (empty)
			break; /* done, everything written */
		if (p.len[i]) {
			ret = write_nonzero(dst, p.buf[i], p.len[i], p.off[i], &stats->written);
			if (ret) {
				*failed_path = disk_path(dst);
				break;
			}
		}
		progress_update(prog, p.end[i]);
		pthread_mutex_lock(&p.lock);
		p.tail++;
		pthread_cond_broadcast(&p.cv);
		pthread_mutex_unlock(&p.lock);
	}
	pthread_mutex_lock(&p.lock);
	p.stop = true;
	pthread_cond_broadcast(&p.cv);
	pthread_mutex_unlock(&p.lock);
	pthread_join(reader, NULL);
	if (!ret && p.err) {
		ret = p.err;
		*failed_path = disk_path(src);
	}
	stats->read += p.read;
out:
	pthread_cond_destroy(&p.cv);
	pthread_mutex_destroy(&p.lock);
	for (unsigned i = 0; i < COPY_SLOTS; i++)
		free(p.buf[i]);
	return ret;
}

struct copy_target {
	const char *path;
	bool have_format;
	enum disk_format format;
	bool have_type;
	enum disk_type type;
	uint64_t block_size;
	bool progress, force, json;
};

static enum disk_type default_type(struct disk *src, enum disk_format fmt)
{
	struct disk_info in;

	if (fmt == DISK_FORMAT_RAW)
		return DISK_TYPE_DYNAMIC; /* a sparse file */
	disk_get_info(src, &in);
	if (in.format != DISK_FORMAT_RAW && in.type == DISK_TYPE_FIXED)
		return DISK_TYPE_FIXED;
	return DISK_TYPE_DYNAMIC;
}

static void block_signals(struct sigaction *old_int, struct sigaction *old_term)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_interrupt;
	sigemptyset(&sa.sa_mask);
	copy_interrupted = 0;
	sigaction(SIGINT, &sa, old_int);
	sigaction(SIGTERM, &sa, old_term);
}

static void restore_signals(const struct sigaction *old_int, const struct sigaction *old_term)
{
	sigaction(SIGINT, old_int, NULL);
	sigaction(SIGTERM, old_term, NULL);
}

static void print_copy_json(const char *verb, const char *src, const char *dst,
			    const struct copy_stats *st, struct disk *out)
{
	json_t *o = json_object();
	struct disk_info in;

	disk_get_info(out, &in);
	json_object_set_new(o, "verb", json_string(verb));
	json_object_set_new(o, "source", json_string(src));
	json_object_set_new(o, "target", json_string(dst));
	json_object_set_new(o, "format", json_string(disk_format_name(in.format)));
	json_object_set_new(o, "type", json_string(disk_type_name(in.type)));
	json_object_set_new(o, "virtual_size", json_integer((json_int_t)in.virtual_size));
	json_object_set_new(o, "bytes_read", json_integer((json_int_t)st->read));
	json_object_set_new(o, "bytes_written", json_integer((json_int_t)st->written));
	json_object_set_new(o, "file_size", json_integer((json_int_t)in.file_size));
	json_dumpf(o, stdout, JSON_INDENT(2));
	fputc('\n', stdout);
	json_decref(o);
}

/* Writes src's whole content into the new image t->path through a
 * temporary file renamed into place at the end. Returns a cli_exit status
 * (message printed). */
static int copy_to_new_image(const char *verb, struct disk *src, const struct copy_target *t)
{
	struct disk_create_opts o = { 0 };
	struct disk_error err = { { 0 } };
	struct sigaction old_int, old_term;
	struct copy_stats stats = { 0 };
	struct progress prog;
	const char *failed = t->path;
	char tmp[4096];
	struct disk *dst = NULL;
	struct stat st;
	int ret, status;

	if (!t->have_format && disk_cli_format_from_path(t->path, &o.format))
		return disk_cli_usage_error(verb,
					    "cannot tell the format of '%s' from its extension: use "
					    ".vhdx, .vhd, .raw or .img (or --format)",
					    t->path);
	if (t->have_format)
		o.format = t->format;
	o.type = t->have_type ? t->type : default_type(src, o.format);
	if (o.type == DISK_TYPE_DIFFERENCING)
		return disk_cli_usage_error(verb, "--type must be fixed or dynamic");
	if (o.format == DISK_FORMAT_RAW && t->block_size)
		return disk_cli_usage_error(verb, "a raw target has no block size");
	if (t->block_size > UINT32_MAX || (t->block_size & (t->block_size - 1)))
		return disk_cli_usage_error(verb, "--block-size must be a power of two (e.g. 2M, 32M)");
	o.block_size = (uint32_t)t->block_size;
	o.size = disk_size(src);
	/* Keep a 4096-byte-sector disk one where the target format can be;
	 * raw and VHD are 512 and take 4096-aligned writes just as well. */
	if (o.format == DISK_FORMAT_VHDX)
		o.logical_sector = disk_sector_size(src);
	if (!t->force && lstat(t->path, &st) == 0)
		return cli_error(CLI_EXIT_CONFLICT,
				 "%s: already exists; choose another name, remove it, or pass --force",
				 t->path);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-%d", t->path, (int)getpid()) >= sizeof(tmp))
		return cli_error(CLI_EXIT_USAGE, "%s: path too long", t->path);

	block_signals(&old_int, &old_term);
	ret = disk_create(tmp, &o, &err);
	if (ret) {
		restore_signals(&old_int, &old_term);
		/* err names the temporary file; say which target it was for. */
		fprintf(stderr, "cloison: error: cannot create %s\n", t->path);
		return disk_cli_fail(tmp, ret, &err);
	}
	ret = disk_open(tmp, o.format == DISK_FORMAT_RAW ? DISK_OPEN_FORMAT_RAW : 0, &dst, &err);
	if (ret) {
		status = disk_cli_fail(tmp, ret, &err);
		goto out_unlink;
	}
	if (disk_size(dst) < o.size) {
		status = cli_error(CLI_EXIT_ERROR, "%s: the %s format cannot hold %llu bytes exactly",
				   t->path, disk_format_name(o.format), (unsigned long long)o.size);
		goto out_close;
	}
	progress_init(&prog, t->progress, verb, o.size);
	ret = copy_content(src, dst, &prog, &stats, &failed);
	progress_end(&prog);
	if (!ret)
		ret = disk_flush(dst);
	if (ret == -EINTR) {
		status = cli_error(CLI_EXIT_ERROR, "%s: interrupted; nothing was written", t->path);
		goto out_close;
	}
	if (ret) {
		status = cli_error(CLI_EXIT_ERROR, "%s: %s while copying%s", failed, strerror(-ret),
				   ret == -ENOSPC ? " (free some space and retry)" : "");
		goto out_close;
	}
	if (t->json)
		print_copy_json(verb, disk_path(src), t->path, &stats, dst);
	ret = disk_close(dst);
	dst = NULL;
	if (ret) {
		status = cli_error(CLI_EXIT_ERROR, "%s: %s while finishing the image", t->path,
				   strerror(-ret));
		goto out_unlink;
	}
	if (rename(tmp, t->path) < 0) {
		status = cli_error(CLI_EXIT_ERROR, "%s: cannot rename %s into place: %s", t->path,
				   tmp, strerror(errno));
		goto out_unlink;
	}
	fsync_parent_dir(t->path);
	restore_signals(&old_int, &old_term);
	return CLI_EXIT_OK;

out_close:
	disk_close(dst);
out_unlink:
	unlink(tmp);
	restore_signals(&old_int, &old_term);
	return status;
}

/* ---- convert ----------------------------------------------------------- */

/* Options convert and merge --into share. Returns 0, or a status. */
static int parse_target_opt(const char *verb, int c, struct copy_target *t)
{
	switch (c) {
	case 't':
		if (disk_cli_parse_type(optarg, &t->type) || t->type == DISK_TYPE_DIFFERENCING)
			return disk_cli_usage_error(verb, "--type must be fixed or dynamic, not '%s'",
						    optarg);
		t->have_type = true;
		return 0;
	case 'b':
		return disk_cli_parse_size(verb, "--block-size", optarg, &t->block_size);
	case 'f':
		if (!strcasecmp(optarg, "vhdx"))
			t->format = DISK_FORMAT_VHDX;
		else if (!strcasecmp(optarg, "vhd") || !strcasecmp(optarg, "vpc"))
			t->format = DISK_FORMAT_VHD;
		else if (!strcasecmp(optarg, "raw"))
			t->format = DISK_FORMAT_RAW;
		else
			return disk_cli_usage_error(verb, "--format must be vhdx, vhd or raw, not '%s'",
						    optarg);
		t->have_format = true;
		return 0;
	case 'p':
		t->progress = true;
		return 0;
	case 'F':
		t->force = true;
		return 0;
	case 'j':
		t->json = true;
		return 0;
	default:
		return -1;
	}
}

/* Opens the source of a copy (read-only, with its chain). */
static int open_source(const char *path, struct disk **d)
{
	struct disk_error err = { { 0 } };
	int st = disk_cli_require_file(path);

	if (st)
		return st;
	st = disk_open(path, DISK_OPEN_RDONLY, d, &err);
	if (st)
		return disk_cli_fail(path, st, &err);
	return 0;
}

/* The options of a verb that writes a new image (parsed by parse_target_opt). */
#define COPY_TARGET_OPTIONS                                        \
	{ "type", required_argument, NULL, 't' },                  \
	{ "block-size", required_argument, NULL, 'b' },            \
	{ "format", required_argument, NULL, 'f' },                \
	{ "progress", no_argument, NULL, 'p' },                    \
	{ "force", no_argument, NULL, 'F' },                       \
	{ "json", no_argument, NULL, 'j' },                        \
	{ "help", no_argument, NULL, 'h' }

/* Parses the options of convert or merge (opts: COPY_TARGET_OPTIONS, plus
 * --into NEW for merge, which sets t->path) into t. Returns true when the
 * verb is done (--help, a bad option) and must exit with *status. */
static bool parse_copy_args(const char *verb, int argc, char **argv, const struct option *opts,
			    struct copy_target *t, int *status)
{
	int c, st;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			*status = disk_cli_usage(verb, true);
			return true;
		}
		if (c == 'i') {
			t->path = optarg;
			continue;
		}
		st = parse_target_opt(verb, c, t);
		if (st < 0)
			st = disk_cli_bad_option(verb, c, argv);
		if (st) {
			*status = st;
			return true;
		}
	}
	return false;
}

/* Copies src_path into the new image t->path (format from its extension
 * unless --format was given) for verb. */
static int copy_into_new(const char *verb, const char *src_path, struct copy_target *t)
{
	struct disk *src;
	int st;

	if (!t->have_format && disk_cli_format_from_path(t->path, &t->format))
		return disk_cli_usage_error(verb,
					    "cannot tell the format of '%s' from its extension: use "
					    ".vhdx, .vhd, .raw or .img (or --format)",
					    t->path);
	st = open_source(src_path, &src);
	if (st)
		return st;
	st = copy_to_new_image(verb, src, t);
	disk_close(src);
	return st;
}

int disk_cli_convert(int argc, char **argv)
{
	static const struct option opts[] = {
		COPY_TARGET_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	struct copy_target t = { 0 };
	int st;

	if (parse_copy_args("convert", argc, argv, opts, &t, &st))
		return st;
	if (argc - optind < 2)
		return disk_cli_usage_error("convert", optind >= argc ? "missing SRC and DST"
								      : "missing DST");
	if (argc - optind > 2)
		return disk_cli_usage_error("convert", "unexpected argument '%s'", argv[optind + 2]);
	t.path = argv[optind + 1];
	return copy_into_new("convert", argv[optind], &t);
}

/* ---- merge ------------------------------------------------------------- */

/* Copies every run child holds itself into parent. */
static int merge_runs(struct disk *child, struct disk *parent, struct progress *prog,
		      struct copy_stats *stats)
{
	uint64_t size = disk_size(child), off = 0;
	uint8_t *buf;
	int ret = 0;

	if (posix_memalign((void **)&buf, 4096, COPY_CHUNK))
		return -ENOMEM;
	while (off < size) {
		bool alloc;
		uint64_t run, len = MIN(COPY_CHUNK - off % COPY_CHUNK, size - off);
		ret = disk_block_status(child, off, len, &alloc, &run);
		if (ret)
			break;
		if (!run || run > len)
			run = len;
		if (alloc) {
			ret = disk_pread(child, buf, run, off);
			if (!ret)
				ret = disk_pwrite(parent, buf, run, off);
			if (ret)
				break;
			stats->read += run;
			stats->written += run;
		}
		off += run;
		progress_update(prog, off);
	}
	free(buf);
	return ret;
}

/* merge CHILD: into its parent, in place; deletes CHILD on success. */
static int merge_into_parent(const char *child_path, bool progress, bool json)
{
	struct disk_error err = { { 0 } };
	struct copy_stats stats = { 0 };
	struct disk *child, *parent;
	char parent_path[4096];
	uint64_t grow_to;
	struct progress prog;
	int ret, st;

	st = open_source(child_path, &child);
	if (st)
		return st;
	if (!disk_parent(child)) {
		disk_close(child);
		return cli_error(CLI_EXIT_CONFLICT, "%s: not a differencing disk; nothing to merge",
				 child_path);
	}
	snprintf(parent_path, sizeof(parent_path), "%s", disk_path(disk_parent(child)));
	grow_to = disk_size(child) > disk_size(disk_parent(child)) ? disk_size(child) : 0;
	/* The link is verified; keep the child alone so that writing the
	 * parent does not pull stale parent data through it. */
	disk_close(child);
	ret = disk_open(child_path, DISK_OPEN_RDONLY | DISK_OPEN_NO_PARENT, &child, &err);
	if (ret)
		return disk_cli_fail(child_path, ret, &err);
	/* A child grown past its parent: the parent grows first (the merge
	 * changes the parent anyway), so the child's tail has a place. */
	if (grow_to) {
		ret = disk_resize(parent_path, grow_to, &err);
		if (ret) {
			disk_close(child);
			fprintf(stderr, "cloison: error: %s is larger than its parent and the parent "
					"cannot grow; nothing was merged\n",
				child_path);
			return disk_cli_fail(parent_path, ret, &err);
		}
	}
	ret = disk_open(parent_path, 0, &parent, &err);
	if (ret) {
		disk_close(child);
		fprintf(stderr, "cloison: error: cannot open the parent for writing; nothing was "
				"changed\n");
		return disk_cli_fail(parent_path, ret, &err);
	}
	progress_init(&prog, progress, "merge", disk_size(child));
	ret = merge_runs(child, parent, &prog, &stats);
	progress_end(&prog);
	if (!ret)
		ret = disk_flush(parent);
	st = disk_close(parent);
	if (!ret)
		ret = st;
	disk_close(child);
	if (ret)
		return cli_error(CLI_EXIT_ERROR,
				 "merging %s into %s failed: %s; %s was kept, the parent may hold "
				 "part of its data (run the merge again)",
				 child_path, parent_path, strerror(-ret), child_path);
	if (unlink(child_path) < 0)
		return cli_error(CLI_EXIT_ERROR, "%s merged into %s but could not be removed: %s",
				 child_path, parent_path, strerror(errno));
	fsync_parent_dir(child_path);
	if (json) {
		json_t *o = json_object();
		json_object_set_new(o, "verb", json_string("merge"));
		json_object_set_new(o, "source", json_string(child_path));
		json_object_set_new(o, "target", json_string(parent_path));
		json_object_set_new(o, "bytes_written", json_integer((json_int_t)stats.written));
		json_object_set_new(o, "source_removed", json_true());
		json_dumpf(o, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(o);
	}
	return CLI_EXIT_OK;
}

int disk_cli_merge(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "into", required_argument, NULL, 'i' },
		COPY_TARGET_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	struct copy_target t = { 0 };
	int st;

	if (parse_copy_args("merge", argc, argv, opts, &t, &st))
		return st;
	if (optind >= argc)
		return disk_cli_usage_error("merge", "missing CHILD");
	if (argc - optind > 1)
		return disk_cli_usage_error("merge", "unexpected argument '%s'", argv[optind + 1]);
	if (!t.path) {
		if (t.have_type || t.block_size || t.have_format || t.force)
			return disk_cli_usage_error("merge", "--type, --block-size, --format and "
							     "--force only apply with --into NEW");
		return merge_into_parent(argv[optind], t.progress, t.json);
	}
	if (!t.have_type) {
		t.have_type = true;
		t.type = DISK_TYPE_DYNAMIC;
	}
	return copy_into_new("merge", argv[optind], &t);
}

/* ---- compact ----------------------------------------------------------- */

static uint64_t disk_usage(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

/* Is [off, off+len) allocated anywhere in this image? */
static int any_allocated(struct disk *d, uint64_t off, uint64_t len, bool *any)
{
	uint64_t end = off + len;

	*any = false;
	while (off < end) {
		bool a;
		uint64_t run;
		int ret = disk_block_status(d, off, end - off, &a, &run);
		if (ret)
			return ret;
		if (a) {
			*any = true;
			return 0;
		}
		if (!run)
			return -EIO;
		off += run;
	}
	return 0;
}

struct compact_result {
	uint64_t blocks, unmapped, alloc_before, alloc_after, file_before, file_after, usage_before,
		usage_after;
};

static int compact_blocks(struct disk *d, uint64_t granule, uint8_t *buf, uint8_t *pbuf,
			  uint64_t *given_back, uint64_t *unmapped)
{
	uint64_t size = disk_size(d);
	struct disk *parent = disk_parent(d);

	for (uint64_t off = 0; off < size; off += granule) {
		uint64_t len = MIN(granule, size - off);
		bool any;
		int ret = any_allocated(d, off, len, &any);
		if (ret)
			return ret;
		if (!any)
			continue;
		ret = disk_pread(d, buf, len, off);
		if (ret)
			return ret;
		if (!all_zero(buf, len))
			continue;
		/* Discarding a differencing block exposes the parent there. */
		if (parent && off < disk_size(parent)) {
			uint64_t plen = MIN(len, disk_size(parent) - off);
			ret = disk_pread(parent, pbuf, plen, off);
			if (ret)
				return ret;
			if (!all_zero(pbuf, plen))
				continue;
		}
		ret = disk_discard(d, off, len);
		if (!ret)
			ret = any_allocated(d, off, len, &any);
		if (ret)
			return ret;
		/* discard may keep the block in the map (the contract allows
		 * it; VHD punches a hole instead): count both. */
		(*given_back)++;
		if (!any)
			(*unmapped)++;
	}
	return 0;
}

int disk_cli_compact(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct disk_error err = { { 0 } };
	struct compact_result r = { 0 };
	uint8_t *buf = NULL, *pbuf = NULL;
	struct disk_info in;
	const char *path;
	uint64_t granule;
	bool json = false;
	struct disk *d;
	int c, st, ret;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h')
			return disk_cli_usage("compact", true);
		if (c != 'j')
			return disk_cli_bad_option("compact", c, argv);
		json = true;
	}
	if (optind >= argc)
		return disk_cli_usage_error("compact", "missing FILE");
	if (argc - optind > 1)
		return disk_cli_usage_error("compact", "unexpected argument '%s'", argv[optind + 1]);
	path = argv[optind];
	st = disk_cli_require_file(path);
	if (st)
		return st;
	ret = disk_open(path, 0, &d, &err);
	if (ret)
		return disk_cli_fail(path, ret, &err);
	disk_get_info(d, &in);
	r.alloc_before = in.allocated;
	r.file_before = in.file_size;
	r.usage_before = disk_usage(path);
	if (in.format != DISK_FORMAT_RAW && in.type == DISK_TYPE_FIXED) {
		disk_close(d);
		printf("%s: a fixed image keeps all its blocks; nothing to give back (convert it "
		       "to a dynamic one instead)\n",
		       path);
		return CLI_EXIT_OK;
	}
	granule = in.block_size ? in.block_size : 1 * MiB;
	if (posix_memalign((void **)&buf, 4096, granule) ||
	    posix_memalign((void **)&pbuf, 4096, granule)) {
		ret = -ENOMEM;
		goto out;
	}
	ret = compact_blocks(d, granule, buf, pbuf, &r.blocks, &r.unmapped);
	if (!ret)
		ret = disk_flush(d);
out:
	free(buf);
	free(pbuf);
	if (!ret) {
		disk_get_info(d, &in);
		r.alloc_after = in.allocated;
	}
	st = disk_close(d);
	if (!ret)
		ret = st;
	if (ret)
		return cli_error(CLI_EXIT_ERROR, "%s: compacting failed: %s", path, strerror(-ret));
	r.usage_after = disk_usage(path);
	{
		struct stat sb;
		r.file_after = stat(path, &sb) ? 0 : (uint64_t)sb.st_size;
	}
	if (json) {
		json_t *o = json_object();
		json_object_set_new(o, "path", json_string(path));
		json_object_set_new(o, "blocks_given_back", json_integer((json_int_t)r.blocks));
		json_object_set_new(o, "blocks_unmapped", json_integer((json_int_t)r.unmapped));
		json_object_set_new(o, "block_size", json_integer((json_int_t)granule));
		json_object_set_new(o, "allocated_before", json_integer((json_int_t)r.alloc_before));
		json_object_set_new(o, "allocated_after", json_integer((json_int_t)r.alloc_after));
		json_object_set_new(o, "file_size_before", json_integer((json_int_t)r.file_before));
		json_object_set_new(o, "file_size_after", json_integer((json_int_t)r.file_after));
		json_object_set_new(o, "disk_usage_before", json_integer((json_int_t)r.usage_before));
		json_object_set_new(o, "disk_usage_after", json_integer((json_int_t)r.usage_after));
		json_dumpf(o, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(o);
	} else {
		char a[32], b[32];
		printf("%s: %llu zero block%s given back (%llu left the block table); allocated "
		       "%s -> %s",
		       path, (unsigned long long)r.blocks, r.blocks == 1 ? "" : "s",
		       (unsigned long long)r.unmapped,
		       format_size(r.alloc_before, a, sizeof(a)),
		       format_size(r.alloc_after, b, sizeof(b)));
		printf("; space used on the host %s -> %s\n",
		       format_size(r.usage_before, a, sizeof(a)),
		       format_size(r.usage_after, b, sizeof(b)));
	}
	return CLI_EXIT_OK;
}
