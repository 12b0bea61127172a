/* Saved-state records (record.h): a bounds-checked container for device
 * and vCPU state. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/fileutil.h"
#include "vmm/fail.h"
#include "vmm/state/record.h"

#define HEADER_SIZE 32
#define SECTION_HEADER 16
#define TRAILER_SIZE 8
#define TRAILER_MAGIC "END."
/* A file with more sections than this is not one we wrote: a VM has at
 * most a few hundred devices and vCPUs. */
#define MAX_SECTIONS 4096

static void le_store(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le_load(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* ---- writing ---------------------------------------------------------- */

static uint8_t *reserve(struct state_writer *w, size_t n)
{
	if (w->err)
		return NULL;
	if (n > STATE_FILE_MAX || w->len > STATE_FILE_MAX - n) {
		w->err = -EFBIG;
		return NULL;
	}
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		uint8_t *b;

		while (cap < w->len + n)
			cap *= 2;
		b = realloc(w->buf, cap);
		if (!b) {
			w->err = -ENOMEM;
			return NULL;
		}
		w->buf = b;
		w->cap = cap;
	}
	w->len += n;
	return w->buf + w->len - n;
}

static void put_le(struct state_writer *w, uint64_t v, size_t n)
{
	uint8_t *p = reserve(w, n);

	if (p)
		le_store(p, v, n);
}

void state_writer_init(struct state_writer *w, uint64_t fingerprint)
{
	uint8_t *h;

	memset(w, 0, sizeof(*w));
	w->section = SIZE_MAX;
	h = reserve(w, HEADER_SIZE);
	if (!h)
		return;
	memset(h, 0, HEADER_SIZE);
	memcpy(h, STATE_MAGIC, 8);
	le_store(h + 8, STATE_FORMAT, 4);
	le_store(h + 12, HEADER_SIZE, 4);
	le_store(h + 16, fingerprint, 8);
}

void state_writer_free(struct state_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
	w->section = SIZE_MAX;
}

void state_begin(struct state_writer *w, uint32_t type, uint32_t instance, uint32_t version)
{
	if (!w->err && w->section != SIZE_MAX)
		w->err = -EINVAL; /* the previous section was not ended */
	if (!w->err && w->sections >= MAX_SECTIONS)
		w->err = -E2BIG;
	if (w->err)
		return;
	w->section = w->len;
	put_le(w, type, 4);
	put_le(w, instance, 4);
	put_le(w, version, 4);
	put_le(w, 0, 4); /* length, filled in by state_end() */
}

void state_end(struct state_writer *w)
{
	size_t payload, pad;

	if (!w->err && w->section == SIZE_MAX)
		w->err = -EINVAL;
	if (w->err)
		return;
	payload = w->len - w->section - SECTION_HEADER;
	if (payload > UINT32_MAX) {
		w->err = -EFBIG;
		return;
	}
	le_store(w->buf + w->section + 12, payload, 4);
	pad = (8 - payload % 8) % 8;
	for (size_t i = 0; i < pad; i++)
		put_le(w, 0, 1);
	w->section = SIZE_MAX;
	w->sections++;
}

void state_put_u8(struct state_writer *w, uint8_t v)
{
	put_le(w, v, 1);
}

void state_put_u16(struct state_writer *w, uint16_t v)
{
	put_le(w, v, 2);
}

void state_put_u32(struct state_writer *w, uint32_t v)
{
	put_le(w, v, 4);
}

void state_put_u64(struct state_writer *w, uint64_t v)
{
	put_le(w, v, 8);
}

void state_put_bytes(struct state_writer *w, const void *p, size_t n)
{
	uint8_t *d = reserve(w, n);

	if (d && n)
		memcpy(d, p, n);
}

int state_writer_finish(struct state_writer *w, const void **data, size_t *len)
{
	uint8_t *t;

	if (!w->err && w->section != SIZE_MAX)
		w->err = -EINVAL;
	if (w->err)
		return w->err;
	le_store(w->buf + 24, w->sections, 4);
	t = reserve(w, TRAILER_SIZE);
	if (!t)
		return w->err;
	memcpy(t, TRAILER_MAGIC, 4);
	le_store(t + 4, crc32c(0, w->buf, w->len - 4), 4);
	*data = w->buf;
	*len = w->len;
	/* finished: any further put is a caller bug */
	w->err = -EALREADY;
	return 0;
}

int state_writer_save(struct state_writer *w, const char *path)
{
	const void *data;
	size_t len;
	int ret = state_writer_finish(w, &data, &len);

	if (ret)
		return ret;
	return atomic_write_file(path, data, len, 0600);
}

/* ---- reading ---------------------------------------------------------- */

/* Walks the sections from the start: every section header and payload,
 * padding included, lies before body_end (where the trailer starts), and
 * the last one ends exactly there. */
static int walk_sections(const uint8_t *d, size_t body_end, uint32_t count, char *err,
			 size_t errlen)
{
	size_t off = HEADER_SIZE;

	for (uint32_t i = 0; i < count; i++) {
		uint64_t len, padded;

		if (body_end - off < SECTION_HEADER)
			return vmm_fail(err, errlen, -EINVAL, "section %u of %u is cut off", i + 1,
					  count);
		len = le_load(d + off + 12, 4);
		padded = (len + 7) & ~7ULL;
		if (padded > body_end - off - SECTION_HEADER)
			return vmm_fail(err, errlen, -EINVAL,
					  "section %u (type %u) says %llu bytes; the file has %zu "
					  "left", i + 1, (unsigned)le_load(d + off, 4),
					  (unsigned long long)len, body_end - off - SECTION_HEADER);
		for (uint64_t p = len; p < padded; p++)
			if (d[off + SECTION_HEADER + p])
				return vmm_fail(err, errlen, -EINVAL,
						  "section %u has non-zero padding", i + 1);
		/* (type, instance) names one record: a second is a forgery */
		for (size_t o = HEADER_SIZE; o < off;
		     o += SECTION_HEADER + ((le_load(d + o + 12, 4) + 7) & ~7ULL))
			if (!memcmp(d + o, d + off, 8))
				return vmm_fail(err, errlen, -EINVAL,
						  "section type %u instance %u appears twice",
						  (unsigned)le_load(d + off, 4),
						  (unsigned)le_load(d + off + 4, 4));
		off += SECTION_HEADER + padded;
	}
	if (off != body_end)
		return vmm_fail(err, errlen, -EINVAL,
				  "%zu bytes after the last section, before the trailer",
				  body_end - off);
	return 0;
}

int state_file_parse(struct state_file *f, const void *data, size_t len, uint64_t fingerprint,
		     char *err, size_t errlen)
{
	const uint8_t *d = data;
	uint32_t format, count;
	uint64_t fp;
	int ret;

	memset(f, 0, sizeof(*f));
	if (len < HEADER_SIZE + TRAILER_SIZE || memcmp(d, STATE_MAGIC, 8))
		return vmm_fail(err, errlen, -EINVAL, "not a cloison state file");
	if (len > STATE_FILE_MAX)
		return vmm_fail(err, errlen, -EINVAL, "%zu bytes is larger than any state file "
				  "(at most %u)", len, STATE_FILE_MAX);
	format = (uint32_t)le_load(d + 8, 4);
	if (format > STATE_FORMAT)
		return vmm_fail(err, errlen, -EPROTONOSUPPORT,
				  "state file format %u is newer than this build reads (%u): "
				  "restore it with a newer cloison", format, STATE_FORMAT);
	if (format < 1 || le_load(d + 12, 4) != HEADER_SIZE || le_load(d + 28, 4))
		return vmm_fail(err, errlen, -EINVAL, "damaged state file header");
	if (memcmp(d + len - TRAILER_SIZE, TRAILER_MAGIC, 4))
		return vmm_fail(err, errlen, -EINVAL,
				  "the state file is cut short (no end marker)");
	if ((uint32_t)le_load(d + len - 4, 4) != crc32c(0, d, len - 4))
		return vmm_fail(err, errlen, -EINVAL,
				  "the state file is damaged (CRC-32C mismatch)");
	count = (uint32_t)le_load(d + 24, 4);
	if (count > MAX_SECTIONS)
		return vmm_fail(err, errlen, -EINVAL, "%u sections is more than any VM has",
				  count);
	ret = walk_sections(d, len - TRAILER_SIZE, count, err, errlen);
	if (ret)
		return ret;
	fp = le_load(d + 16, 8);
	if (fingerprint && fp != fingerprint)
		return vmm_fail(err, errlen, -ESTALE,
				  "the state was saved by a VM with another configuration "
				  "(fingerprint %016llx, this VM's is %016llx)",
				  (unsigned long long)fp, (unsigned long long)fingerprint);
	f->data = d;
	f->len = len;
	f->fingerprint = fp;
	f->sections = count;
	return 0;
}

static void reader_at(const struct state_file *f, size_t off, struct state_reader *r)
{
	memset(r, 0, sizeof(*r));
	r->type = (uint32_t)le_load(f->data + off, 4);
	r->instance = (uint32_t)le_load(f->data + off + 4, 4);
	r->version = (uint32_t)le_load(f->data + off + 8, 4);
	r->len = (size_t)le_load(f->data + off + 12, 4);
	r->p = f->data + off + SECTION_HEADER;
}

/* Offset of the next section's header after the one at off (parse has
 * checked every length). */
static size_t next_section(const struct state_file *f, size_t off)
{
	return off + SECTION_HEADER + ((le_load(f->data + off + 12, 4) + 7) & ~7ULL);
}

int state_file_section(const struct state_file *f, uint32_t i, struct state_reader *r)
{
	size_t off = HEADER_SIZE;

	if (i >= f->sections)
		return -ENOENT;
	while (i--)
		off = next_section(f, off);
	reader_at(f, off, r);
	return 0;
}

int state_file_find(const struct state_file *f, uint32_t type, uint32_t instance,
		    struct state_reader *r)
{
	size_t off = HEADER_SIZE;

	for (uint32_t i = 0; i < f->sections; i++, off = next_section(f, off)) {
		if (le_load(f->data + off, 4) == type && le_load(f->data + off + 4, 4) == instance) {
			reader_at(f, off, r);
			return 0;
		}
	}
	return -ENOENT;
}

static uint64_t get_le(struct state_reader *r, size_t n)
{
	uint64_t v;

	if (r->bad || r->len - r->off < n) {
		r->bad = true;
		return 0;
	}
	v = le_load(r->p + r->off, n);
	r->off += n;
	return v;
}

uint8_t state_get_u8(struct state_reader *r)
{
	return (uint8_t)get_le(r, 1);
}

uint16_t state_get_u16(struct state_reader *r)
{
	return (uint16_t)get_le(r, 2);
}

uint32_t state_get_u32(struct state_reader *r)
{
	return (uint32_t)get_le(r, 4);
}

uint64_t state_get_u64(struct state_reader *r)
{
	return get_le(r, 8);
}

void state_get_bytes(struct state_reader *r, void *p, size_t n)
{
	if (r->bad || r->len - r->off < n) {
		r->bad = true;
		memset(p, 0, n);
		return;
	}
	memcpy(p, r->p + r->off, n);
	r->off += n;
}

void state_reader_fail(struct state_reader *r)
{
	r->bad = true;
}

int state_reader_done(const struct state_reader *r)
{
	return !r->bad && r->off == r->len ? 0 : -EINVAL;
}

/* ---- field tables ----------------------------------------------------- */

static void put_int(struct state_writer *w, const uint8_t *p, uint8_t size)
{
	uint64_t v = 0;

	/* the struct holds native integers; the file little-endian ones */
	switch (size) {
	case 1: v = *p; break;
	case 2: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
	case 4: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
	case 8: memcpy(&v, p, 8); break;
	default: w->err = w->err ? w->err : -EINVAL; return;
	}
	put_le(w, v, size);
}

static void get_int(struct state_reader *r, uint8_t *p, uint8_t size)
{
	uint64_t v = get_le(r, size);

	switch (size) {
	case 1: *p = (uint8_t)v; break;
	case 2: { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
	case 4: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
	case 8: memcpy(p, &v, 8); break;
	default: r->bad = true; break;
	}
}

void state_put_fields(struct state_writer *w, const struct state_field *fields, const void *s)
{
	const uint8_t *base = s;

	for (const struct state_field *f = fields; f->name; f++) {
		if (!f->size) {
			state_put_bytes(w, base + f->offset, f->count);
			continue;
		}
		for (uint32_t i = 0; i < f->count; i++)
			put_int(w, base + f->offset + (size_t)i * f->size, f->size);
	}
}

int state_get_fields(struct state_reader *r, const struct state_field *fields, void *s)
{
	uint8_t *base = s;

	for (const struct state_field *f = fields; f->name; f++) {
		size_t bytes = f->size ? (size_t)f->size * f->count : f->count;

		if (r->version < f->since) {
			memset(base + f->offset, 0, bytes);
			continue;
		}
		if (!f->size) {
			state_get_bytes(r, base + f->offset, f->count);
			continue;
		}
		for (uint32_t i = 0; i < f->count; i++)
			get_int(r, base + f->offset + (size_t)i * f->size, f->size);
	}
	return state_reader_done(r);
}

void state_save_fields(struct state_writer *w, uint32_t type, uint32_t instance,
		       uint32_t version, const struct state_field *fields, const void *s)
{
	state_begin(w, type, instance, version);
	state_put_fields(w, fields, s);
	state_end(w);
}

int state_restore_fields(struct state_reader *r, uint32_t max_version,
			 const struct state_field *fields, void *live, size_t size,
			 bool (*check)(const void *in))
{
	uint8_t *in;
	int ret = -EINVAL;

	if (r->version < 1 || r->version > max_version)
		return -EINVAL;
	in = malloc(size);
	if (!in)
		return -ENOMEM;
	memcpy(in, live, size);
	if (state_get_fields(r, fields, in) == 0 && (!check || check(in))) {
		for (const struct state_field *f = fields; f->name; f++)
			memcpy((uint8_t *)live + f->offset, in + f->offset,
			       f->size ? (size_t)f->size * f->count : f->count);
		ret = 0;
	}
	free(in);
	return ret;
}

bool state_bool_ok(const void *p)
{
	uint8_t v;

	memcpy(&v, p, 1);
	return v <= 1;
}

uint64_t state_fingerprint(const void *canonical, size_t len)
{
	const uint8_t *p = canonical;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h ? h : 1;
}
