/* Saved-state records: the container every piece of a VM's state travels
 * in, to a state file (save, checkpoints) and later over the migration
 * stream.
 *
 * A state file is a header, a list of sections and a trailer:
 *
 *   header   "CLOISNST" | u32 format | u32 header size (32) |
 *            u64 configuration fingerprint | u32 sections | u32 0
 *   section  u32 type | u32 instance | u32 version | u32 length |
 *            payload[length] | zero padding to 8 bytes
 *   trailer  "END." | u32 CRC-32C of every byte before it
 *
 * All integers are little-endian. A section is one device's (or one
 * vCPU's) record: `type` says whose (STATE_SECTION_*), `instance` which
 * one (vCPU index, PCI slot), `version` the layout of its payload.
 *
 * A state file is input we do not trust: state_file_parse() checks the
 * structure (sizes, counts, CRC, duplicates) and every read through a
 * state_reader is bounds-checked, so a device's restore sees only values
 * that exist in the file and still validates each one as guest input.
 *
 * Payloads are written field by field through a state_writer, or from a
 * static field table (struct state_field) that names each field of a
 * device's plain state struct and the record version it appeared in. */
#ifndef CLOISON_VMM_STATE_RECORD_H
#define CLOISON_VMM_STATE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_MAGIC "CLOISNST"
#define STATE_FORMAT 1
/* A state file larger than this is refused before it is read: device
 * state is kilobytes per device; guest RAM lives in its own file. */
#define STATE_FILE_MAX (64u << 20)

/* Section types: one per kind of state. Numbers are part of the file
 * format; never reuse one. */
enum state_section_type {
	STATE_SECTION_MACHINE = 1, /* vCPU count, memory layout, device list */
	STATE_SECTION_VCPU = 2,	   /* instance = vCPU index */
	STATE_SECTION_CLOCK = 3,   /* TSC, kvmclock */
	STATE_SECTION_IRQCHIP = 4, /* PIC, IOAPIC */
	STATE_SECTION_PIT = 5,
	STATE_SECTION_SERIAL = 16, /* instance = port index */
	STATE_SECTION_RTC = 17,
	STATE_SECTION_I8042 = 18,
	STATE_SECTION_ACPI_PM = 19,
	STATE_SECTION_HOTPLUG = 20, /* ACPI PCI hotplug registers, hot-added slots */
	STATE_SECTION_VMGENID = 21, /* the VM Generation ID the guest saw */
	STATE_SECTION_PCI = 32,	   /* instance = slot: config space, MSI-X */
	STATE_SECTION_VIRTIO = 33, /* instance = slot: transport, queues */
	STATE_SECTION_VIRTIO_DEV = 34, /* instance = slot: device-specific */
};

/* ---- writing ---------------------------------------------------------- */

/* Builds a state file in memory. Errors (out of memory, a section left
 * open) are sticky: the put functions then do nothing and
 * state_writer_finish() returns the first error. */
struct state_writer {
	uint8_t *buf;
	size_t len, cap;
	size_t section; /* offset of the open section's header, or SIZE_MAX */
	uint32_t sections;
	int err;
};

/* Starts a file whose configuration fingerprint is `fingerprint`. */
void state_writer_init(struct state_writer *w, uint64_t fingerprint);
/* Frees the buffer; the writer may be initialised again. */
void state_writer_free(struct state_writer *w);

/* Opens a section; every put until state_end() is its payload. */
void state_begin(struct state_writer *w, uint32_t type, uint32_t instance, uint32_t version);
void state_end(struct state_writer *w);

void state_put_u8(struct state_writer *w, uint8_t v);
void state_put_u16(struct state_writer *w, uint16_t v);
void state_put_u32(struct state_writer *w, uint32_t v);
void state_put_u64(struct state_writer *w, uint64_t v);
void state_put_bytes(struct state_writer *w, const void *p, size_t n);

/* Closes the file (trailer and CRC). On success *data and *len point into the
 * writer's buffer, valid until state_writer_free(). 0 or -errno. */
int state_writer_finish(struct state_writer *w, const void **data, size_t *len);

/* state_writer_finish(), then writes the file at path so that a crash at
 * any point leaves the old file or the new one (atomic_write_file()),
 * mode 0600. 0 or -errno. */
int state_writer_save(struct state_writer *w, const char *path);

/* ---- reading ---------------------------------------------------------- */

/* A parsed state file: a view of the caller's buffer, which must outlive
 * it. */
struct state_file {
	const uint8_t *data;
	size_t len;
	uint64_t fingerprint;
	uint32_t sections;
};

/* Checks data[0..len) as a state file: magic, format, sizes, every section
 * inside the file, no (type, instance) twice, the CRC. When `fingerprint`
 * is not 0 it must match the file's (state from a VM with another
 * configuration is refused). 0, or -EINVAL (not a state file, or damaged),
 * -EPROTONOSUPPORT (a newer format), -ESTALE (fingerprint), with a message
 * in err a person can act on. */
int state_file_parse(struct state_file *f, const void *data, size_t len, uint64_t fingerprint,
		     char *err, size_t errlen);

/* Reads a section's payload, bounds-checked. Reading past its end, or a
 * value a caller rejects (state_reader_fail()), marks the reader bad:
 * later reads return 0 and state_reader_done() reports it. */
struct state_reader {
	const uint8_t *p;
	size_t len, off;
	uint32_t type, instance, version;
	bool bad;
};

/* Finds section (type, instance). 0 and *r set up, or -ENOENT. */
int state_file_find(const struct state_file *f, uint32_t type, uint32_t instance,
		    struct state_reader *r);
/* The i-th section (0-based, file order), for walking all of them. 0 or
 * -ENOENT past the last. */
int state_file_section(const struct state_file *f, uint32_t i, struct state_reader *r);

uint8_t state_get_u8(struct state_reader *r);
uint16_t state_get_u16(struct state_reader *r);
uint32_t state_get_u32(struct state_reader *r);
uint64_t state_get_u64(struct state_reader *r);
/* Copies n bytes; zero-fills p when they are not there. */
void state_get_bytes(struct state_reader *r, void *p, size_t n);
/* Marks the reader bad: a restore found a value it cannot take. */
void state_reader_fail(struct state_reader *r);
/* 0 when every byte was read and nothing failed, else -EINVAL. */
int state_reader_done(const struct state_reader *r);

/* ---- field tables ----------------------------------------------------- */

/* One field of a plain state struct: `size` is 1, 2, 4 or 8 for an
 * integer (count of them for an array), or 0 for `count` raw bytes.
 * `since` is the first section version that has it: reading an older
 * record leaves the field 0. The table ends with a NULL name. */
struct state_field {
	const char *name;
	size_t offset;
	uint8_t size;
	uint32_t count;
	uint32_t since;
};

#define STATE_FIELD(type, field, since_version)                                          \
	{ #field, offsetof(type, field), sizeof(((type *)0)->field), 1, since_version }
#define STATE_FIELD_ARRAY(type, field, since_version)                                    \
	{ #field, offsetof(type, field), sizeof(((type *)0)->field[0]),                    \
	  sizeof(((type *)0)->field) / sizeof(((type *)0)->field[0]), since_version }
#define STATE_FIELD_BYTES(type, field, since_version)                                    \
	{ #field, offsetof(type, field), 0, sizeof(((type *)0)->field), since_version }
#define STATE_FIELD_END { NULL, 0, 0, 0, 0 }

/* Writes every field of the struct at s (all versions: the writer always
 * writes the newest layout). */
void state_put_fields(struct state_writer *w, const struct state_field *fields, const void *s);
/* Reads the fields a record of version r->version has into s (others are
 * zeroed), then checks that nothing is left over. 0 or -EINVAL. */
int state_get_fields(struct state_reader *r, const struct state_field *fields, void *s);

/* One whole section from a field table: state_begin(), state_put_fields(),
 * state_end(). */
void state_save_fields(struct state_writer *w, uint32_t type, uint32_t instance,
		       uint32_t version, const struct state_field *fields, const void *s);

/* A device's restore from a field table, all or nothing: reads the record
 * (version 1..max_version) into a scratch copy of the live struct (size
 * bytes at live), lets check() refuse values the device cannot take, and
 * only then copies the table's fields into the live struct. Fields not in
 * the table (locks, pointers, fds) are never touched. The caller holds
 * the device's lock and re-applies what follows from the new values
 * (interrupt lines, timers). 0, or -EINVAL with the live struct as it
 * was. */
int state_restore_fields(struct state_reader *r, uint32_t max_version,
			 const struct state_field *fields, void *live, size_t size,
			 bool (*check)(const void *in));

/* Whether the byte at p is a valid bool (0 or 1): a restored bool field
 * must be checked before it is read as one. */
bool state_bool_ok(const void *p);

/* A 64-bit fingerprint of a canonical description of the configuration
 * (FNV-1a). Never 0. */
uint64_t state_fingerprint(const void *canonical, size_t len);

#endif
