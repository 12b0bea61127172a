/* Unit tests for the split virtqueue (src/vmm/virtio/queue.c) over a fake
 * guest memory: valid chains, indirect tables, event index, and every
 * malformed ring the device must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "vmm/virtio/queue.h"

#define RAM_SIZE (1 << 20)
#define HIGH_GPA 0x100000000ULL /* a second region, as above 4 GiB */
#define HIGH_SIZE (64 << 10)
#define QSIZE 16
#define DESC_GPA 0x1000
#define AVAIL_GPA 0x2000
#define USED_GPA 0x3000
#define DATA_GPA 0x10000
#define TABLE_GPA 0x8000

struct fixture {
	struct guest_mem mem;
	uint8_t *ram, *high;
	struct virtq q;
	struct virtq_elem *e;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->ram = aligned_alloc(4096, RAM_SIZE);
	f->high = aligned_alloc(4096, HIGH_SIZE);
	assert_non_null(f->ram);
	assert_non_null(f->high);
	memset(f->ram, 0, RAM_SIZE);
	memset(f->high, 0, HIGH_SIZE);
	f->mem.nregions = 2;
	f->mem.total = RAM_SIZE + HIGH_SIZE;
	f->mem.regions[0] = (struct guest_mem_region){ .gpa = 0, .size = RAM_SIZE, .hva = f->ram };
	f->mem.regions[1] =
		(struct guest_mem_region){ .gpa = HIGH_GPA, .size = HIGH_SIZE, .hva = f->high };
	virtq_init(&f->q, &f->mem, 256);
	f->q.size = QSIZE;
	f->q.desc_gpa = DESC_GPA;
	f->q.avail_gpa = AVAIL_GPA;
	f->q.used_gpa = USED_GPA;
	f->e = virtq_elem_alloc(64);
	assert_non_null(f->e);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->e);
	free(f->ram);
	free(f->high);
	free(f);
	return 0;
}

static void set_desc_at(uint8_t *table, unsigned i, uint64_t addr, uint32_t len,
			uint16_t flags, uint16_t next)
{
	struct virtq_desc d = { addr, len, flags, next };

	memcpy(table + 16 * i, &d, sizeof(d));
}

static void set_desc(struct fixture *f, unsigned i, uint64_t addr, uint32_t len,
		     uint16_t flags, uint16_t next)
{
	set_desc_at(f->ram + DESC_GPA, i, addr, len, flags, next);
}

static uint16_t rd16(struct fixture *f, uint64_t gpa)
{
	uint16_t v;

	memcpy(&v, f->ram + gpa, 2);
	return v;
}

static uint32_t rd32(struct fixture *f, uint64_t gpa)
{
	uint32_t v;

	memcpy(&v, f->ram + gpa, 4);
	return v;
}

static void wr16(struct fixture *f, uint64_t gpa, uint16_t v)
{
	memcpy(f->ram + gpa, &v, 2);
}

/* Makes head available as the driver would: ring entry, then idx. */
static void make_avail(struct fixture *f, uint16_t head)
{
	uint16_t idx = rd16(f, AVAIL_GPA + 2);

	wr16(f, AVAIL_GPA + 4 + 2 * (idx % QSIZE), head);
	wr16(f, AVAIL_GPA + 2, idx + 1);
}

static void enable(struct fixture *f, bool event_idx, bool indirect)
{
	assert_int_equal(virtq_enable(&f->q, event_idx, indirect), 0);
}

static void expect_broken(struct fixture *f, const char *words)
{
	assert_int_equal(virtq_pop(&f->q, f->e), -EIO);
	assert_non_null(strstr(f->q.error, words));
}

static void test_simple_chain(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	assert_int_equal(virtq_pop(&f->q, f->e), 0);
	set_desc(f, 3, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 5);
	set_desc(f, 5, DATA_GPA + 0x100, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 7);
	set_desc(f, 7, DATA_GPA + 0x400, 1, VIRTQ_DESC_F_WRITE, 0);
	make_avail(f, 3);
	assert_int_equal(virtq_pop(&f->q, f->e), 1);
	assert_int_equal(f->e->head, 3);
	assert_int_equal(f->e->nout, 1);
	assert_int_equal(f->e->nin, 2);
	assert_int_equal(f->e->out_len, 16);
	assert_int_equal(f->e->in_len, 513);
	assert_ptr_equal(f->e->iov[0].iov_base, f->ram + DATA_GPA);
	assert_ptr_equal(f->e->iov[1].iov_base, f->ram + DATA_GPA + 0x100);
	assert_ptr_equal(f->e->iov[2].iov_base, f->ram + DATA_GPA + 0x400);
	assert_int_equal(virtq_pop(&f->q, f->e), 0);

	virtq_push(&f->q, 3, 513);
	assert_int_equal(rd16(f, USED_GPA + 2), 1);
	assert_int_equal(rd32(f, USED_GPA + 4), 3);
	assert_int_equal(rd32(f, USED_GPA + 8), 513);
	/* Without EVENT_IDX the driver gets an interrupt unless it asked not to. */
	assert_true(virtq_should_notify(&f->q));
	wr16(f, AVAIL_GPA, VIRTQ_AVAIL_F_NO_INTERRUPT);
	assert_false(virtq_should_notify(&f->q));
}

static void test_zero_length_descriptors_are_skipped(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, 0xdeadbeef0000ULL, 0, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA_GPA, 8, 0, 0);
	make_avail(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->e), 1);
	assert_int_equal(f->e->nout, 1);
	assert_int_equal(f->e->out_len, 8);
}

static void test_many_chains_wrap_around(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	for (unsigned round = 0; round < 3 * QSIZE; round++) {
		set_desc(f, round % QSIZE, DATA_GPA + round, 4, VIRTQ_DESC_F_WRITE, 0);
		make_avail(f, round % QSIZE);
		assert_int_equal(virtq_pop(&f->q, f->e), 1);
		assert_int_equal(f->e->head, round % QSIZE);
		virtq_push(&f->q, f->e->head, 4);
	}
	assert_int_equal(rd16(f, USED_GPA + 2), 3 * QSIZE);
}

static void test_indirect(void **state)
{
	struct fixture *f = *state;
	uint8_t *t = f->ram + TABLE_GPA;

	enable(f, false, true);
	set_desc_at(t, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
	set_desc_at(t, 2, DATA_GPA + 0x1000, 4096, VIRTQ_DESC_F_NEXT, 1);
	set_desc_at(t, 1, DATA_GPA + 0x3000, 1, VIRTQ_DESC_F_WRITE, 0);
	set_desc(f, 9, TABLE_GPA, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 9);
	assert_int_equal(virtq_pop(&f->q, f->e), 1);
	assert_int_equal(f->e->head, 9);
	assert_int_equal(f->e->nout, 2);
	assert_int_equal(f->e->nin, 1);
	assert_int_equal(f->e->out_len, 16 + 4096);
	assert_ptr_equal(f->e->iov[1].iov_base, f->ram + DATA_GPA + 0x1000);
}

static void test_indirect_in_high_region(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc_at(f->high, 0, HIGH_GPA + 0x1000, 100, 0, 0);
	set_desc(f, 0, HIGH_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->e), 1);
	assert_ptr_equal(f->e->iov[0].iov_base, f->high + 0x1000);
}

static void test_indirect_not_negotiated(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc_at(f->ram + TABLE_GPA, 0, DATA_GPA, 16, 0, 0);
	set_desc(f, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "not negotiated");
}

static void test_nested_indirect(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc_at(f->ram + TABLE_GPA, 0, TABLE_GPA + 0x100, 16, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(f, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "inside an indirect");
}

static void test_indirect_with_next(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc_at(f->ram + TABLE_GPA, 0, DATA_GPA, 16, 0, 0);
	set_desc(f, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA_GPA, 16, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "INDIRECT and NEXT");
}

static void test_indirect_not_at_head(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc_at(f->ram + TABLE_GPA, 0, DATA_GPA, 16, 0, 0);
	set_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "not at its head");
}

static void test_indirect_bad_length(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc(f, 0, TABLE_GPA, 24, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "multiple of 16");
}

static void test_indirect_empty(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc(f, 0, TABLE_GPA, 0, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "multiple of 16");
}

static void test_indirect_too_long(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc(f, 0, TABLE_GPA, 16 * (QSIZE + 1), VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "exceeds the queue size");
}

static void test_indirect_outside_ram(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc(f, 0, RAM_SIZE - 16, 32, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "outside guest RAM");
}

static void test_indirect_loop(void **state)
{
	struct fixture *f = *state;
	uint8_t *t = f->ram + TABLE_GPA;

	enable(f, false, true);
	set_desc_at(t, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc_at(t, 1, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
	set_desc(f, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "loops");
}

static void test_indirect_next_out_of_range(void **state)
{
	struct fixture *f = *state;

	enable(f, false, true);
	set_desc_at(f->ram + TABLE_GPA, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
	set_desc(f, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "out of range");
}

static void test_loop(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
	set_desc(f, 2, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
	make_avail(f, 0);
	expect_broken(f, "longer than the queue size");
}

static void test_self_loop(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 4, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, 4);
	make_avail(f, 4);
	expect_broken(f, "longer than the queue size");
}

static void test_next_out_of_range(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT, QSIZE);
	make_avail(f, 0);
	expect_broken(f, "out of range");
}

static void test_head_out_of_range(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	make_avail(f, 200);
	expect_broken(f, "names descriptor 200");
}

static void test_avail_index_jump(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	wr16(f, AVAIL_GPA + 2, QSIZE + 1);
	expect_broken(f, "jumped");
}

static void test_avail_index_garbage_backwards(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	wr16(f, AVAIL_GPA + 2, 0xfff0);
	expect_broken(f, "jumped");
}

static void test_desc_outside_ram(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, RAM_SIZE - 8, 16, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "outside guest RAM");
}

static void test_desc_address_wraps(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, UINT64_MAX - 4, 16, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "outside guest RAM");
}

static void test_desc_in_the_hole(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, HIGH_GPA - 0x1000, 0x100, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "outside guest RAM");
}

static void test_desc_spanning_regions(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, HIGH_GPA + HIGH_SIZE - 8, 16, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "outside guest RAM");
}

static void test_readable_after_writable(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, DATA_GPA, 16, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	set_desc(f, 1, DATA_GPA, 16, 0, 0);
	make_avail(f, 0);
	expect_broken(f, "readable descriptor after a writable");
}

static void test_too_many_segments(void **state)
{
	struct fixture *f = *state;
	uint8_t *t = f->ram + TABLE_GPA;

	free(f->e);
	f->e = virtq_elem_alloc(4);
	enable(f, false, true);
	for (unsigned i = 0; i < 8; i++)
		set_desc_at(t, i, DATA_GPA, 16, i < 7 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
	set_desc(f, 0, TABLE_GPA, 8 * 16, VIRTQ_DESC_F_INDIRECT, 0);
	make_avail(f, 0);
	expect_broken(f, "more than 4 segments");
}

static void test_enable_checks(void **state)
{
	struct fixture *f = *state;

	f->q.size = 12;
	assert_int_equal(virtq_enable(&f->q, false, false), -EINVAL);
	assert_non_null(strstr(f->q.error, "power of two"));
	assert_int_equal(virtq_pop(&f->q, f->e), 0); /* disabled: nothing */
	f->q.size = 512; /* over the device's maximum (256) */
	assert_int_equal(virtq_enable(&f->q, false, false), -EINVAL);
	f->q.size = QSIZE;
	f->q.desc_gpa = DESC_GPA + 8;
	assert_int_equal(virtq_enable(&f->q, false, false), -EINVAL);
	assert_non_null(strstr(f->q.error, "aligned"));
	f->q.desc_gpa = DESC_GPA;
	f->q.used_gpa = RAM_SIZE - 64;
	assert_int_equal(virtq_enable(&f->q, false, false), -EINVAL);
	assert_non_null(strstr(f->q.error, "used ring"));
	f->q.used_gpa = USED_GPA + 2;
	assert_int_equal(virtq_enable(&f->q, false, false), -EINVAL);
	f->q.used_gpa = USED_GPA;
	f->q.avail_gpa = 0x7fffffffffffffffULL;
	assert_int_equal(virtq_enable(&f->q, false, false), -EINVAL);
	f->q.avail_gpa = AVAIL_GPA;
	assert_int_equal(virtq_enable(&f->q, false, false), 0);
	assert_true(f->q.enabled);
}

static void test_event_idx(void **state)
{
	struct fixture *f = *state;
	uint64_t used_event_gpa = AVAIL_GPA + 4 + 2 * QSIZE;
	uint64_t avail_event_gpa = USED_GPA + 4 + 8 * QSIZE;

	enable(f, true, false);
	/* An empty pop asks to be kicked for the next buffer. */
	wr16(f, avail_event_gpa, 0x5555);
	assert_int_equal(virtq_pop(&f->q, f->e), 0);
	assert_int_equal(rd16(f, avail_event_gpa), 0);
	for (unsigned i = 0; i < 4; i++) {
		set_desc(f, i, DATA_GPA, 4, VIRTQ_DESC_F_WRITE, 0);
		make_avail(f, i);
	}
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(virtq_pop(&f->q, f->e), 1);
	assert_int_equal(rd16(f, avail_event_gpa), 4);

	/* The first push always notifies (nothing signalled yet). */
	virtq_push(&f->q, 0, 4);
	assert_true(virtq_should_notify(&f->q));
	/* The driver wants to hear when used idx passes 2 (used_event 2). */
	wr16(f, used_event_gpa, 2);
	virtq_push(&f->q, 1, 4); /* used idx 2: event 2 not yet crossed */
	assert_false(virtq_should_notify(&f->q));
	virtq_push(&f->q, 2, 4); /* used idx 3: crossed 2 */
	assert_true(virtq_should_notify(&f->q));
	virtq_push(&f->q, 3, 4); /* used idx 4: already told */
	assert_false(virtq_should_notify(&f->q));
}

static void test_notify_suppression(void **state)
{
	struct fixture *f = *state;
	uint64_t avail_event_gpa = USED_GPA + 4 + 8 * QSIZE;

	enable(f, false, false);
	virtq_set_notify(&f->q, false);
	assert_int_equal(rd16(f, USED_GPA), VIRTQ_USED_F_NO_NOTIFY);
	virtq_set_notify(&f->q, true);
	assert_int_equal(rd16(f, USED_GPA), 0);

	/* With EVENT_IDX, "off" freezes avail_event where it was. */
	virtq_reset(&f->q);
	f->q.size = QSIZE;
	f->q.desc_gpa = DESC_GPA;
	f->q.avail_gpa = AVAIL_GPA;
	f->q.used_gpa = USED_GPA;
	enable(f, true, false);
	virtq_set_notify(&f->q, false);
	for (unsigned i = 0; i < 3; i++) {
		set_desc(f, i, DATA_GPA, 4, VIRTQ_DESC_F_WRITE, 0);
		make_avail(f, i);
		assert_int_equal(virtq_pop(&f->q, f->e), 1);
	}
	assert_int_equal(virtq_pop(&f->q, f->e), 0);
	assert_int_equal(rd16(f, avail_event_gpa), 0);
	virtq_set_notify(&f->q, true);
	assert_int_equal(rd16(f, avail_event_gpa), 3);
	assert_false(virtq_has_avail(&f->q));
}

static void test_unpop(void **state)
{
	struct fixture *f = *state;

	enable(f, true, false);
	set_desc(f, 2, DATA_GPA, 64, VIRTQ_DESC_F_WRITE, 0);
	make_avail(f, 2);
	assert_int_equal(virtq_pop(&f->q, f->e), 1);
	virtq_unpop(&f->q);
	assert_true(virtq_has_avail(&f->q));
	assert_int_equal(virtq_pop(&f->q, f->e), 1);
	assert_int_equal(f->e->head, 2);
	assert_false(virtq_has_avail(&f->q));
}

static void test_reset(void **state)
{
	struct fixture *f = *state;

	enable(f, false, false);
	set_desc(f, 0, DATA_GPA, 4, 0, 0);
	make_avail(f, 0);
	assert_int_equal(virtq_pop(&f->q, f->e), 1);
	virtq_reset(&f->q);
	assert_false(f->q.enabled);
	assert_int_equal(f->q.size, 256);
	assert_int_equal(f->q.last_avail, 0);
	virtq_push(&f->q, 0, 4); /* ignored while disabled */
	assert_int_equal(rd16(f, USED_GPA + 2), 0);
}

static void test_iov_helpers(void **state)
{
	uint8_t a[5] = "abcde", b[3] = "fgh", out[8] = { 0 };
	struct iovec iov[2] = { { a, 5 }, { b, 3 } }, dst[2];

	(void)state;
	assert_int_equal(iov_to_buf(iov, 2, 3, out, 4), 4);
	assert_memory_equal(out, "defg", 4);
	assert_int_equal(iov_to_buf(iov, 2, 7, out, 4), 1);
	assert_int_equal(iov_from_buf(iov, 2, 4, "XYZ", 3), 3);
	assert_memory_equal(a, "abcdX", 5);
	assert_memory_equal(b, "YZh", 3);
	assert_int_equal(iov_slice(iov, 2, 2, 5, dst, 2), 2);
	assert_ptr_equal(dst[0].iov_base, a + 2);
	assert_int_equal(dst[0].iov_len, 3);
	assert_int_equal(dst[1].iov_len, 2);
	assert_int_equal(iov_slice(iov, 2, 2, 7, dst, 2), -1); /* short */
	assert_int_equal(iov_slice(iov, 2, 0, 8, dst, 1), -1); /* no room */
	assert_int_equal(iov_slice(iov, 2, 8, 0, dst, 2), 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_simple_chain),
		T(test_zero_length_descriptors_are_skipped),
		T(test_many_chains_wrap_around),
		T(test_indirect),
		T(test_indirect_in_high_region),
		T(test_indirect_not_negotiated),
		T(test_nested_indirect),
		T(test_indirect_with_next),
		T(test_indirect_not_at_head),
		T(test_indirect_bad_length),
		T(test_indirect_empty),
		T(test_indirect_too_long),
		T(test_indirect_outside_ram),
		T(test_indirect_loop),
		T(test_indirect_next_out_of_range),
		T(test_loop),
		T(test_self_loop),
		T(test_next_out_of_range),
		T(test_head_out_of_range),
		T(test_avail_index_jump),
		T(test_avail_index_garbage_backwards),
		T(test_desc_outside_ram),
		T(test_desc_address_wraps),
		T(test_desc_in_the_hole),
		T(test_desc_spanning_regions),
		T(test_readable_after_writable),
		T(test_too_many_segments),
		T(test_enable_checks),
		T(test_event_idx),
		T(test_notify_suppression),
		T(test_unpop),
		T(test_reset),
		T(test_iov_helpers),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
