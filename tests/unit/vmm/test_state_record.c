/* The saved-state container (src/vmm/state/record.c): round trips, field
 * tables across record versions, and every kind of damage refused with an
 * error instead of a crash or a wrong value. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/crc32c.h"
#include "common/fileutil.h"
#include "vmm/state/record.h"

#define FP 0x1234abcd5678ef00ULL

struct dev_state {
	uint8_t lcr;
	uint16_t divisor;
	uint32_t flags;
	uint64_t base;
	uint32_t regs[4];
	uint8_t fifo[5];
	uint64_t added_in_v2;
};

static const struct state_field dev_fields_v1[] = {
	STATE_FIELD(struct dev_state, lcr, 1),
	STATE_FIELD(struct dev_state, divisor, 1),
	STATE_FIELD(struct dev_state, flags, 1),
	STATE_FIELD(struct dev_state, base, 1),
	STATE_FIELD_ARRAY(struct dev_state, regs, 1),
	STATE_FIELD_BYTES(struct dev_state, fifo, 1),
	STATE_FIELD_END,
};

static const struct state_field dev_fields[] = {
	STATE_FIELD(struct dev_state, lcr, 1),
	STATE_FIELD(struct dev_state, divisor, 1),
	STATE_FIELD(struct dev_state, flags, 1),
	STATE_FIELD(struct dev_state, base, 1),
	STATE_FIELD_ARRAY(struct dev_state, regs, 1),
	STATE_FIELD_BYTES(struct dev_state, fifo, 1),
	STATE_FIELD(struct dev_state, added_in_v2, 2),
	STATE_FIELD_END,
};

static const struct dev_state sample = {
	.lcr = 0x83, .divisor = 12, .flags = 0xdeadbeef, .base = 0x1122334455667788ULL,
	.regs = { 1, 2, 3, 0xffffffff }, .fifo = "abcd", .added_in_v2 = 42,
};

/* A file with a machine section, two vCPU sections (odd payload sizes, so
 * padding is exercised) and one device section from the field table. */
static void build(struct state_writer *w, const void **data, size_t *len)
{
	state_writer_init(w, FP);
	state_begin(w, STATE_SECTION_MACHINE, 0, 1);
	state_put_u32(w, 2);
	state_put_u64(w, 256ULL << 20);
	state_end(w);
	for (uint32_t cpu = 0; cpu < 2; cpu++) {
		state_begin(w, STATE_SECTION_VCPU, cpu, 1);
		state_put_u64(w, 0xfff0 + cpu);
		state_put_u8(w, 7);
		state_put_u16(w, 0xbeef);
		state_end(w);
	}
	state_begin(w, STATE_SECTION_SERIAL, 0, 2);
	state_put_fields(w, dev_fields, &sample);
	state_end(w);
	assert_int_equal(state_writer_finish(w, data, len), 0);
	assert_int_equal(*len % 8, 0);
}

static void test_round_trip(void **state)
{
	struct state_writer w;
	struct state_file f;
	struct state_reader r;
	struct dev_state got;
	const void *data;
	size_t len;
	char err[256] = "";

	build(&w, &data, &len);
	assert_int_equal(state_file_parse(&f, data, len, FP, err, sizeof(err)), 0);
	assert_int_equal(f.sections, 4);
	assert_true(f.fingerprint == FP);

	assert_int_equal(state_file_find(&f, STATE_SECTION_MACHINE, 0, &r), 0);
	assert_int_equal(state_get_u32(&r), 2);
	assert_true(state_get_u64(&r) == 256ULL << 20);
	assert_int_equal(state_reader_done(&r), 0);

	assert_int_equal(state_file_find(&f, STATE_SECTION_VCPU, 1, &r), 0);
	assert_int_equal(r.instance, 1);
	assert_true(state_get_u64(&r) == 0xfff1);
	assert_int_equal(state_get_u8(&r), 7);
	assert_int_equal(state_get_u16(&r), 0xbeef);
	assert_int_equal(state_reader_done(&r), 0);
	assert_int_equal(state_file_find(&f, STATE_SECTION_VCPU, 2, &r), -ENOENT);

	assert_int_equal(state_file_find(&f, STATE_SECTION_SERIAL, 0, &r), 0);
	assert_int_equal(r.version, 2);
	memset(&got, 0x55, sizeof(got));
	assert_int_equal(state_get_fields(&r, dev_fields, &got), 0);
	assert_int_equal(got.lcr, sample.lcr);
	assert_int_equal(got.divisor, sample.divisor);
	assert_int_equal(got.flags, sample.flags);
	assert_true(got.base == sample.base);
	assert_memory_equal(got.regs, sample.regs, sizeof(got.regs));
	assert_memory_equal(got.fifo, sample.fifo, sizeof(got.fifo));
	assert_true(got.added_in_v2 == 42);

	/* sections in file order */
	for (uint32_t i = 0; i < 4; i++)
		assert_int_equal(state_file_section(&f, i, &r), 0);
	assert_int_equal(r.type, STATE_SECTION_SERIAL);
	assert_int_equal(state_file_section(&f, 4, &r), -ENOENT);
	state_writer_free(&w);
}

/* A version-1 record read by a table that knows version 2: the new field
 * is 0, everything else arrives. A reader that reads less than the record
 * holds, or more, fails. */
static void test_field_versions(void **state)
{
	struct state_writer w;
	struct state_file f;
	struct state_reader r;
	struct dev_state got;
	const void *data;
	size_t len;

	state_writer_init(&w, FP);
	state_begin(&w, STATE_SECTION_SERIAL, 0, 1);
	state_put_fields(&w, dev_fields_v1, &sample);
	state_end(&w);
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	assert_int_equal(state_file_parse(&f, data, len, 0, NULL, 0), 0);

	assert_int_equal(state_file_find(&f, STATE_SECTION_SERIAL, 0, &r), 0);
	memset(&got, 0x55, sizeof(got));
	assert_int_equal(state_get_fields(&r, dev_fields, &got), 0);
	assert_true(got.base == sample.base);
	assert_true(got.added_in_v2 == 0);

	/* the record claims version 2 but lacks the v2 field: overrun */
	assert_int_equal(state_file_find(&f, STATE_SECTION_SERIAL, 0, &r), 0);
	r.version = 2;
	assert_int_equal(state_get_fields(&r, dev_fields, &got), -EINVAL);

	/* reading less than is there is refused too */
	assert_int_equal(state_file_find(&f, STATE_SECTION_SERIAL, 0, &r), 0);
	(void)state_get_u8(&r);
	assert_int_equal(state_reader_done(&r), -EINVAL);

	/* past the end: zeros, and the reader is bad from then on */
	assert_int_equal(state_file_find(&f, STATE_SECTION_SERIAL, 0, &r), 0);
	uint8_t big[256];
	state_get_bytes(&r, big, sizeof(big));
	assert_int_equal(big[0], 0);
	assert_int_equal(state_get_u32(&r), 0);
	assert_true(r.bad);
	state_writer_free(&w);
}

static void test_writer_misuse(void **state)
{
	struct state_writer w;
	const void *data;
	size_t len;

	/* a section left open */
	state_writer_init(&w, FP);
	state_begin(&w, STATE_SECTION_RTC, 0, 1);
	state_put_u8(&w, 1);
	assert_int_equal(state_writer_finish(&w, &data, &len), -EINVAL);
	state_writer_free(&w);

	/* nested sections */
	state_writer_init(&w, FP);
	state_begin(&w, STATE_SECTION_RTC, 0, 1);
	state_begin(&w, STATE_SECTION_PIT, 0, 1);
	state_end(&w);
	assert_int_equal(state_writer_finish(&w, &data, &len), -EINVAL);
	state_writer_free(&w);

	/* end without begin */
	state_writer_init(&w, FP);
	state_end(&w);
	assert_int_equal(state_writer_finish(&w, &data, &len), -EINVAL);
	state_writer_free(&w);

	/* an empty file (no sections) is valid */
	state_writer_init(&w, FP);
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	struct state_file f;
	assert_int_equal(state_file_parse(&f, data, len, FP, NULL, 0), 0);
	assert_int_equal(f.sections, 0);
	state_writer_free(&w);
}

static void expect_refused(const uint8_t *d, size_t len, uint64_t fp, int want,
			   const char *words)
{
	struct state_file f;
	char err[256] = "";

	assert_int_equal(state_file_parse(&f, d, len, fp, err, sizeof(err)), want);
	if (words && !strstr(err, words))
		fail_msg("expected \"%s\" in \"%s\"", words, err);
}

/* Recomputes the CRC after a deliberate change, so that the structural
 * checks are what refuse it. */
static void fix_crc(uint8_t *d, size_t len)
{
	uint32_t c = crc32c(0, d, len - 4);

	for (int i = 0; i < 4; i++)
		d[len - 4 + i] = (uint8_t)(c >> (8 * i));
}

static void test_damage_refused(void **state)
{
	struct state_writer w;
	const void *data;
	size_t len;
	uint8_t *d;

	build(&w, &data, &len);
	d = malloc(len);
	assert_non_null(d);

	/* every truncation */
	for (size_t cut = 0; cut < len; cut++)
		expect_refused(data, cut, FP, -EINVAL, NULL);
	/* every single bit flip anywhere: the CRC (or the magic) catches it */
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(d, data, len);
			d[i] ^= (uint8_t)(1u << bit);
			struct state_file f;
			assert_int_not_equal(state_file_parse(&f, d, len, FP, NULL, 0), 0);
		}
	}
	memcpy(d, data, len);
	expect_refused(d, len, FP + 1, -ESTALE, "another configuration");
	/* fingerprint 0: the caller does not check it */
	expect_refused(d, len, 0, 0, NULL);

	/* a newer format */
	memcpy(d, data, len);
	d[8] = STATE_FORMAT + 1;
	fix_crc(d, len);
	expect_refused(d, len, FP, -EPROTONOSUPPORT, "newer cloison");

	/* a section length running past the end */
	memcpy(d, data, len);
	d[32 + 12] = 0xf0;
	d[32 + 13] = 0xff;
	fix_crc(d, len);
	expect_refused(d, len, FP, -EINVAL, "the file has");

	/* more sections counted than present, and fewer */
	memcpy(d, data, len);
	d[24] = 5;
	fix_crc(d, len);
	expect_refused(d, len, FP, -EINVAL, "cut off");
	memcpy(d, data, len);
	d[24] = 3;
	fix_crc(d, len);
	expect_refused(d, len, FP, -EINVAL, "after the last section");
	memcpy(d, data, len);
	d[24] = 0xff;
	d[25] = 0xff;
	fix_crc(d, len);
	expect_refused(d, len, FP, -EINVAL, "more than any VM");

	/* the same (type, instance) twice: vCPU 1 renamed vCPU 0 */
	memcpy(d, data, len);
	size_t vcpu1 = 32 + 16 + 16 + (16 + 16);
	assert_int_equal(d[vcpu1], STATE_SECTION_VCPU);
	assert_int_equal(d[vcpu1 + 4], 1);
	d[vcpu1 + 4] = 0;
	fix_crc(d, len);
	expect_refused(d, len, FP, -EINVAL, "appears twice");

	/* non-zero padding (the machine section has 12 bytes: 4 of padding) */
	memcpy(d, data, len);
	d[32 + 16 + 12] = 1;
	fix_crc(d, len);
	expect_refused(d, len, FP, -EINVAL, "padding");

	/* not a state file at all, and no end marker */
	expect_refused((const uint8_t *)"hello", 5, FP, -EINVAL, "not a cloison state file");
	memcpy(d, data, len);
	memcpy(d + len - 8, "XXXX", 4);
	expect_refused(d, len, FP, -EINVAL, "cut short");
	free(d);
	state_writer_free(&w);
}

static void test_save_to_file(void **state)
{
	struct state_writer w;
	struct state_file f;
	char dir[] = "/tmp/state-record.XXXXXX", path[64];
	char *data;
	size_t len;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state.bin", dir);
	state_writer_init(&w, FP);
	state_begin(&w, STATE_SECTION_PIT, 0, 1);
	state_put_u32(&w, 99);
	state_end(&w);
	assert_int_equal(state_writer_save(&w, path), 0);
	state_writer_free(&w);
	assert_int_equal(read_file(path, STATE_FILE_MAX, &data, &len), 0);
	assert_int_equal(state_file_parse(&f, data, len, FP, NULL, 0), 0);
	assert_int_equal(f.sections, 1);
	free(data);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

static void test_fingerprint(void **state)
{
	assert_true(state_fingerprint("a", 1) != state_fingerprint("b", 1));
	assert_true(state_fingerprint("", 0) != 0);
	assert_true(state_fingerprint("vcpus=2", 7) == state_fingerprint("vcpus=2", 7));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_field_versions),
		cmocka_unit_test(test_writer_misuse), cmocka_unit_test(test_damage_refused),
		cmocka_unit_test(test_save_to_file),  cmocka_unit_test(test_fingerprint),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
