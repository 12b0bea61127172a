/* virtio-balloon: the guest gives memory back to the host (dynamic
 * memory, docs/virtio.md). The host sets a target; the guest's driver
 * puts pages into the balloon until it holds RAM minus that target, and
 * the worker returns every page it is given, and every free page the
 * guest reports, to the host. */
#ifndef CLOISON_VMM_VIRTIO_BALLOON_H
#define CLOISON_VMM_VIRTIO_BALLOON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct virtio_dev;

/* The statistics a driver sends (virtio 1.x 5.5.6.3), by tag. */
enum balloon_stat {
	BALLOON_S_SWAP_IN = 0,
	BALLOON_S_SWAP_OUT = 1,
	BALLOON_S_MAJFLT = 2,
	BALLOON_S_MINFLT = 3,
	BALLOON_S_MEMFREE = 4,
	BALLOON_S_MEMTOT = 5,
	BALLOON_S_AVAIL = 6,
	BALLOON_S_CACHES = 7,
	BALLOON_S_HTLB_PGALLOC = 8,
	BALLOON_S_HTLB_PGFAIL = 9,
	BALLOON_S_NR = 10, /* tags past this are counted, not kept */
};

/* "--balloon on" or "--balloon assigned=SIZE": the guest starts with
 * SIZE of its RAM (the rest is the balloon's first target). */
struct balloon_spec {
	uint64_t assigned; /* bytes; 0 = all of RAM */
};

/* 0 or -EINVAL with err saying what is expected. ram is the VM's memory
 * (0: not known yet, only the syntax is checked). */
int balloon_spec_parse(const char *spec, uint64_t ram, struct balloon_spec *s, char *err,
		       size_t errlen);

int virtio_balloon_create(struct vm *vm, const struct balloon_spec *s, struct virtio_dev **out,
			  char *err, size_t errlen);

struct balloon_info {
	uint64_t memory;   /* guest RAM, bytes */
	uint64_t target;   /* what the guest should have */
	uint64_t assigned; /* what it has: RAM minus the balloon the driver reports */
	bool driver;	   /* the driver has the device running */
	bool have_stats;
	uint64_t stats_age_ns;
	uint32_t stats_present; /* bit per enum balloon_stat */
	uint64_t stats[BALLOON_S_NR];
	uint64_t reported;  /* bytes of free pages reported and returned */
	uint64_t discarded; /* bytes of guest RAM returned to the host, in all */
};

/* The device's state now; asks the driver for fresh statistics (they
 * reach the next call). Any thread. */
void virtio_balloon_info(struct virtio_dev *vdev, struct balloon_info *info);
/* A new target: the guest should have `assigned` bytes (1 MiB to RAM,
 * whole pages). 0 or -EINVAL. The driver is told by a configuration
 * interrupt. Any thread. */
int virtio_balloon_set_target(struct virtio_dev *vdev, uint64_t assigned);

/* The device's record (STATE_SECTION_VIRTIO_DEV of its slot): target,
 * what the driver holds, the counters. Restore checks them against the
 * VM's memory: -EINVAL/-ENOENT with err filled. */
struct state_writer;
struct state_file;
void virtio_balloon_save(struct virtio_dev *vdev, struct state_writer *w);
int virtio_balloon_restore(struct virtio_dev *vdev, const struct state_file *f, char *err,
			   size_t errlen);

#endif
