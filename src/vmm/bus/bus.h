/* Range dispatch for guest I/O-port and MMIO accesses. A bus holds
 * non-overlapping [base, base+len) regions, each with an ops table. The same
 * code serves the port bus and the MMIO bus. Lookups are lock-free for
 * readers on the hot path (vCPU threads); registration takes a lock and is
 * rare (init, PCI BAR moves). */
#ifndef CLOISON_VMM_BUS_BUS_H
#define CLOISON_VMM_BUS_BUS_H

#include <stdbool.h>
#include <stdint.h>

struct io_ops {
	/* off is relative to the region's base; len is 1, 2, 4 or 8. Called on
	 * vCPU threads, possibly concurrently: a device locks what it shares.
	 * A read fills all len bytes of data (little-endian). */
	void (*read)(void *opaque, uint64_t off, void *data, unsigned len);
	void (*write)(void *opaque, uint64_t off, const void *data, unsigned len);
};

struct io_bus;

int io_bus_create(struct io_bus **out, const char *name);
void io_bus_destroy(struct io_bus *bus);

/* Adds a region; -EEXIST if it overlaps another, -EINVAL for len 0 or an
 * overflowing range. name is for logs and must outlive the registration. */
int io_bus_register(struct io_bus *bus, uint64_t base, uint64_t len,
		    const struct io_ops *ops, void *opaque, const char *name);
/* Removes the region that starts at base; -ENOENT if none. */
int io_bus_unregister(struct io_bus *bus, uint64_t base);

/* Dispatches one access. Returns true if a region handled it; for an
 * unhandled read data is filled with 0xff (what a real bus floats to). */
bool io_bus_access(struct io_bus *bus, uint64_t addr, void *data, unsigned len, bool is_write);

#endif
