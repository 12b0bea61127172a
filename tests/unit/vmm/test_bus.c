#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "vmm/bus/bus.h"

struct recorder {
	uint64_t last_off;
	unsigned last_len;
	uint64_t last_write;
	unsigned reads, writes;
	uint8_t tag;
};

static void rec_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct recorder *r = opaque;

	r->reads++;
	r->last_off = off;
	r->last_len = len;
	memset(data, r->tag, len);
}

static void rec_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct recorder *r = opaque;

	r->writes++;
	r->last_off = off;
	r->last_len = len;
	r->last_write = 0;
	memcpy(&r->last_write, data, len);
}

static const struct io_ops rec_ops = { rec_read, rec_write };

static void test_register_overlap(void **state)
{
	struct io_bus *bus;
	struct recorder a = { .tag = 0xaa };

	assert_int_equal(io_bus_create(&bus, "t"), 0);
	assert_int_equal(io_bus_register(bus, 0x100, 0x10, &rec_ops, &a, "a"), 0);
	assert_int_equal(io_bus_register(bus, 0x100, 0x10, &rec_ops, &a, "a"), -EEXIST);
	assert_int_equal(io_bus_register(bus, 0xf8, 0x9, &rec_ops, &a, "x"), -EEXIST);
	assert_int_equal(io_bus_register(bus, 0x10f, 0x1, &rec_ops, &a, "x"), -EEXIST);
	assert_int_equal(io_bus_register(bus, 0x0, 0x1000, &rec_ops, &a, "x"), -EEXIST);
	assert_int_equal(io_bus_register(bus, 0xf8, 0x8, &rec_ops, &a, "b"), 0);
	assert_int_equal(io_bus_register(bus, 0x110, 0x8, &rec_ops, &a, "c"), 0);
	assert_int_equal(io_bus_register(bus, 0x200, 0, &rec_ops, &a, "x"), -EINVAL);
	assert_int_equal(io_bus_register(bus, UINT64_MAX - 3, 8, &rec_ops, &a, "x"), -EINVAL);
	assert_int_equal(io_bus_register(bus, UINT64_MAX - 7, 8, &rec_ops, &a, "top"), -EINVAL);
	assert_int_equal(io_bus_register(bus, UINT64_MAX - 8, 8, &rec_ops, &a, "top"), 0);
	assert_int_equal(io_bus_unregister(bus, 0x101), -ENOENT);
	assert_int_equal(io_bus_unregister(bus, 0x500), -ENOENT);
	assert_int_equal(io_bus_unregister(bus, 0x100), 0);
	assert_int_equal(io_bus_unregister(bus, 0x100), -ENOENT);
	assert_int_equal(io_bus_register(bus, 0x100, 0x10, &rec_ops, &a, "a"), 0);
	io_bus_destroy(bus);
}

static void test_dispatch(void **state)
{
	struct io_bus *bus;
	struct recorder a = { .tag = 0xaa }, b = { .tag = 0xbb };
	uint64_t v;

	assert_int_equal(io_bus_create(&bus, "t"), 0);
	assert_int_equal(io_bus_register(bus, 0x3f8, 8, &rec_ops, &a, "a"), 0);
	assert_int_equal(io_bus_register(bus, 0xe0000000, 0x100000, &rec_ops, &b, "b"), 0);

	v = 0;
	assert_true(io_bus_access(bus, 0x3fd, &v, 1, false));
	assert_int_equal(v, 0xaa);
	assert_int_equal(a.last_off, 5);
	assert_int_equal(a.last_len, 1);

	v = 0x12345678;
	assert_true(io_bus_access(bus, 0xe0000000 + 0x8004, &v, 4, true));
	assert_int_equal(b.last_off, 0x8004);
	assert_int_equal(b.last_write, 0x12345678);
	assert_int_equal(b.writes, 1);

	v = 0;
	assert_true(io_bus_access(bus, 0xe00ffff8, &v, 8, false));
	assert_int_equal(v, 0xbbbbbbbbbbbbbbbbULL);

	/* Unhandled reads float high; unhandled writes are dropped. */
	v = 0;
	assert_false(io_bus_access(bus, 0x3f7, &v, 2, false));
	assert_int_equal(v, 0xffff);
	assert_false(io_bus_access(bus, 0x400, &v, 1, true));
	/* Straddling the end of a region is not for that region. */
	v = 0;
	assert_false(io_bus_access(bus, 0x3fe, &v, 4, false));
	assert_int_equal(v, 0xffffffff);
	assert_int_equal(a.reads, 1);
	assert_false(io_bus_access(bus, UINT64_MAX - 1, &v, 4, false));
	io_bus_destroy(bus);
}

static void test_many_regions_sorted(void **state)
{
	struct io_bus *bus;
	struct recorder r[64];

	assert_int_equal(io_bus_create(&bus, "t"), 0);
	/* Register in a scrambled order; every lookup must find its own. */
	for (unsigned i = 0; i < 64; i++) {
		unsigned k = (i * 37) % 64;
		r[k] = (struct recorder){ .tag = (uint8_t)k };
		assert_int_equal(io_bus_register(bus, 0x1000 + k * 0x20, 0x10, &rec_ops, &r[k], "r"), 0);
	}
	for (unsigned k = 0; k < 64; k++) {
		uint8_t v = 0xee;
		assert_true(io_bus_access(bus, 0x1000 + k * 0x20 + 0xf, &v, 1, false));
		assert_int_equal(v, k);
		assert_false(io_bus_access(bus, 0x1000 + k * 0x20 + 0x10, &v, 1, false));
		assert_int_equal(v, 0xff);
	}
	for (unsigned k = 0; k < 64; k += 2)
		assert_int_equal(io_bus_unregister(bus, 0x1000 + k * 0x20), 0);
	for (unsigned k = 0; k < 64; k++) {
		uint8_t v;
		assert_int_equal(io_bus_access(bus, 0x1000 + k * 0x20, &v, 1, false), k % 2 == 1);
	}
	io_bus_destroy(bus);
}

/* A handler that re-registers a region on its own bus (what a PCI BAR move
 * through ECAM does) must not deadlock. */
struct self_mover {
	struct io_bus *bus;
	uint64_t where;
};

static void mover_write(void *opaque, uint64_t off, const void *data, unsigned len);
static const struct io_ops mover_ops = { NULL, mover_write };
static struct recorder moved = { .tag = 0x55 };

static void mover_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct self_mover *m = opaque;
	uint32_t to;

	memcpy(&to, data, 4);
	if (m->where)
		assert_int_equal(io_bus_unregister(m->bus, m->where), 0);
	assert_int_equal(io_bus_register(m->bus, to, 0x100, &rec_ops, &moved, "moved"), 0);
	m->where = to;
}

static void test_reentrant_register(void **state)
{
	struct io_bus *bus;
	struct self_mover m = { 0 };
	uint32_t to = 0x10000;
	uint8_t v;

	assert_int_equal(io_bus_create(&bus, "t"), 0);
	m.bus = bus;
	assert_int_equal(io_bus_register(bus, 0, 4, &mover_ops, &m, "mover"), 0);
	assert_true(io_bus_access(bus, 0, &to, 4, true));
	assert_true(io_bus_access(bus, 0x10010, &v, 1, false));
	assert_int_equal(v, 0x55);
	to = 0x20000;
	assert_true(io_bus_access(bus, 0, &to, 4, true));
	assert_false(io_bus_access(bus, 0x10010, &v, 1, false));
	assert_true(io_bus_access(bus, 0x200ff, &v, 1, false));
	/* A read of a write-only region floats high but is handled. */
	assert_true(io_bus_access(bus, 0, &v, 1, false));
	assert_int_equal(v, 0xff);
	io_bus_destroy(bus);
}

/* Readers on several threads while a writer adds and removes regions: the
 * fixed regions must always answer, and (under ASan) no reader may touch a
 * freed table. */
struct stress {
	struct io_bus *bus;
	atomic_bool stop;
	atomic_ulong errors;
	atomic_ulong lookups;
};

static const uint8_t fixed_tags[4] = { 1, 2, 3, 4 };

static void fixed_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	memset(data, *(const uint8_t *)opaque, len);
}

static const struct io_ops fixed_ops = { fixed_read, NULL };

static void *reader_thread(void *arg)
{
	struct stress *s = arg;
	unsigned i = 0;

	while (!atomic_load(&s->stop)) {
		unsigned k = i++ % 4;
		uint8_t v = 0;

		if (!io_bus_access(s->bus, 0x1000 * (k + 1) + 3, &v, 1, false) || v != k + 1)
			atomic_fetch_add(&s->errors, 1);
		atomic_fetch_add(&s->lookups, 1);
	}
	return NULL;
}

static void test_concurrent_readers(void **state)
{
	struct stress s = { 0 };
	pthread_t th[3];
	struct recorder dyn = { .tag = 9 };

	assert_int_equal(io_bus_create(&s.bus, "t"), 0);
	for (unsigned k = 0; k < 4; k++)
		assert_int_equal(io_bus_register(s.bus, 0x1000 * (k + 1), 0x10, &fixed_ops,
						 (void *)&fixed_tags[k], "fixed"),
				 0);
	for (unsigned t = 0; t < 3; t++)
		assert_int_equal(pthread_create(&th[t], NULL, reader_thread, &s), 0);
	/* On a loaded host the readers may start late: make sure they run
	 * before and during the writes. */
	while (atomic_load(&s.lookups) < 1000)
		sched_yield();
	for (unsigned i = 0; i < 2000 || atomic_load(&s.lookups) < 100000; i++) {
		uint64_t base = 0x1800 + (i % 3) * 0x1000;
		assert_int_equal(io_bus_register(s.bus, base, 0x10, &rec_ops, &dyn, "dyn"), 0);
		assert_int_equal(io_bus_unregister(s.bus, base), 0);
	}
	atomic_store(&s.stop, true);
	for (unsigned t = 0; t < 3; t++)
		pthread_join(th[t], NULL);
	assert_int_equal(atomic_load(&s.errors), 0);
	assert_true(atomic_load(&s.lookups) > 0);
	io_bus_destroy(s.bus);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register_overlap),
		cmocka_unit_test(test_dispatch),
		cmocka_unit_test(test_many_regions_sorted),
		cmocka_unit_test(test_reentrant_register),
		cmocka_unit_test(test_concurrent_readers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
