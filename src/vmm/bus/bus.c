/* Range dispatch for the port bus and the MMIO bus.
 *
 * The regions live in a sorted, immutable array that readers find through
 * one atomic pointer (copy-on-write: a registration builds a new array and
 * swaps it in). Readers never lock. To know when an old array can be freed,
 * readers announce themselves in one of two counters chosen by the parity
 * of an epoch, for the few instructions of the binary search only (they copy
 * the region out and call the handler after leaving). A writer publishes the
 * new array, then flips the epoch twice, each time waiting for the counter
 * of the parity it left to drain: any reader that could still see the old
 * array entered before the publish and so counts in one of the two.
 *
 * Because handlers run outside the read section, a handler may itself
 * register or unregister regions (a PCI BAR move done by a config write
 * arriving through ECAM on this same bus) without deadlocking. The price:
 * after io_bus_unregister returns, an access that had already looked the
 * region up may still call its ops once; owners keep opaque alive until the
 * vCPUs are stopped. */
#include "vmm/bus/bus.h"

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

struct bus_region {
	uint64_t base;
	uint64_t len;
	const struct io_ops *ops;
	void *opaque;
	const char *name;
};

struct bus_table {
	size_t count;
	struct bus_region regions[];
};

struct io_bus {
	const char *name;
	_Atomic(struct bus_table *) table;
	atomic_uint epoch;
	atomic_ulong readers[2];
	pthread_mutex_t write_lock; /* serializes writers only */
};

static struct bus_table *table_alloc(size_t count)
{
	struct bus_table *t = calloc(1, sizeof(*t) + count * sizeof(t->regions[0]));

	if (t)
		t->count = count;
	return t;
}

int io_bus_create(struct io_bus **out, const char *name)
{
	struct io_bus *bus = calloc(1, sizeof(*bus));
	struct bus_table *empty;
	int err;

	if (!bus)
		return -ENOMEM;
	empty = table_alloc(0);
	if (!empty) {
		err = -ENOMEM;
		goto err_bus;
	}
	err = -pthread_mutex_init(&bus->write_lock, NULL);
	if (err)
		goto err_table;
	bus->name = name;
	atomic_init(&bus->table, empty);
	atomic_init(&bus->epoch, 0);
	atomic_init(&bus->readers[0], 0);
	atomic_init(&bus->readers[1], 0);
	*out = bus;
	return 0;

err_table:
	free(empty);
err_bus:
	free(bus);
	return err;
}

void io_bus_destroy(struct io_bus *bus)
{
	if (!bus)
		return;
	free(atomic_load(&bus->table));
	pthread_mutex_destroy(&bus->write_lock);
	free(bus);
}

/* Waits until no reader can still be looking at an array unpublished before
 * this call. Called with write_lock held. */
static void bus_synchronize(struct io_bus *bus)
{
	for (int phase = 0; phase < 2; phase++) {
		unsigned old = atomic_fetch_add(&bus->epoch, 1);

		while (atomic_load(&bus->readers[old & 1]) != 0)
			sched_yield();
	}
}

static void bus_publish(struct io_bus *bus, struct bus_table *next)
{
	struct bus_table *old = atomic_exchange(&bus->table, next);

	bus_synchronize(bus);
	free(old);
}

/* Index of the first region whose end is above addr (regions are sorted and
 * disjoint), i.e. the only candidate that can contain addr. */
static size_t table_search(const struct bus_table *t, uint64_t addr)
{
	size_t lo = 0, hi = t->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct bus_region *r = &t->regions[mid];

		if (addr - r->base >= r->len && addr >= r->base)
			lo = mid + 1;
		else if (addr < r->base)
			hi = mid;
		else
			return mid;
	}
	return lo;
}

int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t len, const struct io_ops *ops,
		    void *opaque, const char *name)
{
	struct bus_table *cur, *next;
	size_t pos;

	if (len == 0 || base + len < base || !ops)
		return -EINVAL;

	pthread_mutex_lock(&bus->write_lock);
	cur = atomic_load(&bus->table);
	pos = table_search(cur, base);
	/* pos is the first region ending above base: it must start at or
	 * after our end. */
	if (pos < cur->count && cur->regions[pos].base < base + len) {
		pthread_mutex_unlock(&bus->write_lock);
		return -EEXIST;
	}
	next = table_alloc(cur->count + 1);
	if (!next) {
		pthread_mutex_unlock(&bus->write_lock);
		return -ENOMEM;
	}
	memcpy(next->regions, cur->regions, pos * sizeof(cur->regions[0]));
	next->regions[pos] = (struct bus_region){ base, len, ops, opaque, name };
	memcpy(&next->regions[pos + 1], &cur->regions[pos],
	       (cur->count - pos) * sizeof(cur->regions[0]));
	bus_publish(bus, next);
	pthread_mutex_unlock(&bus->write_lock);
	return 0;
}

int io_bus_unregister(struct io_bus *bus, uint64_t base)
{
	struct bus_table *cur, *next;
	size_t pos;

	pthread_mutex_lock(&bus->write_lock);
	cur = atomic_load(&bus->table);
	pos = table_search(cur, base);
	if (pos >= cur->count || cur->regions[pos].base != base) {
		pthread_mutex_unlock(&bus->write_lock);
		return -ENOENT;
	}
	next = table_alloc(cur->count - 1);
	if (!next) {
		pthread_mutex_unlock(&bus->write_lock);
		return -ENOMEM;
	}
	memcpy(next->regions, cur->regions, pos * sizeof(cur->regions[0]));
	memcpy(&next->regions[pos], &cur->regions[pos + 1],
	       (cur->count - pos - 1) * sizeof(cur->regions[0]));
	bus_publish(bus, next);
	pthread_mutex_unlock(&bus->write_lock);
	return 0;
}

/* Copies out the region containing [addr, addr+len); false if none does
 * entirely (an access straddling a region's end is not for that region). */
static bool bus_lookup(struct io_bus *bus, uint64_t addr, unsigned len, struct bus_region *out)
{
	unsigned parity = atomic_load(&bus->epoch) & 1;
	const struct bus_table *t;
	bool found = false;
	size_t pos;

	atomic_fetch_add(&bus->readers[parity], 1);
	t = atomic_load(&bus->table);
	pos = table_search(t, addr);
	if (pos < t->count) {
		const struct bus_region *r = &t->regions[pos];
		uint64_t off = addr - r->base;

		if (addr >= r->base && off < r->len && len <= r->len - off) {
			*out = *r;
			found = true;
		}
	}
	atomic_fetch_sub(&bus->readers[parity], 1);
	return found;
}

bool io_bus_access(struct io_bus *bus, uint64_t addr, void *data, unsigned len, bool is_write)
{
	struct bus_region r;

	if (len == 0 || !bus_lookup(bus, addr, len, &r)) {
		if (!is_write)
			memset(data, 0xff, len);
		return false;
	}
	if (is_write) {
		if (r.ops->write)
			r.ops->write(r.opaque, addr - r.base, data, len);
	} else if (r.ops->read) {
		r.ops->read(r.opaque, addr - r.base, data, len);
	} else {
		memset(data, 0xff, len);
	}
	return true;
}
