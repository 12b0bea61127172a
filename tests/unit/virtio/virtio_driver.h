/* A minimal virtio 1.x PCI driver for the unit tests: finds the
 * capabilities, negotiates features, sets up split queues in the double's
 * guest RAM, posts chains, kicks and waits for used buffers. */
#ifndef CLOISON_TESTS_VIRTIO_DRIVER_H
#define CLOISON_TESTS_VIRTIO_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio_double.h"

#define VDRV_QSIZE 16
#define VDRV_MAX_Q 4

struct vdrv_seg {
	uint64_t gpa;
	uint32_t len;
	bool writable;
};

struct vdrv_queue {
	uint64_t desc, avail, used;
	uint16_t avail_idx;
	uint16_t used_seen;
	uint16_t next_desc;
};

struct vdrv {
	struct vm *vm;
	unsigned dev;
	uint32_t common, isr, devcfg, notify, notify_mult;
	uint64_t features;
	struct vdrv_queue q[VDRV_MAX_Q];
};

/* Reads the capabilities of device dev. */
void vdrv_attach(struct vdrv *d, struct vm *vm, unsigned dev);
uint64_t vdrv_device_features(struct vdrv *d);
/* Resets, negotiates features (returns the status read back after
 * FEATURES_OK), sets up nq queues of VDRV_QSIZE with vector i+1 each
 * and, if FEATURES_OK stuck, sets DRIVER_OK. */
uint8_t vdrv_init(struct vdrv *d, uint64_t features, unsigned nq);
uint8_t vdrv_status(struct vdrv *d);
void vdrv_set_status(struct vdrv *d, uint8_t s);
uint64_t vdrv_cfg_read(struct vdrv *d, uint32_t off, unsigned len);
/* Posts a chain (direct, or through an indirect table at table_gpa when
 * table_gpa != 0), returns its head; kick rings the doorbell. */
uint16_t vdrv_post(struct vdrv *d, unsigned q, const struct vdrv_seg *segs, unsigned n,
		   uint64_t table_gpa);
/* Writes raw descriptor i of queue q and makes head available. */
void vdrv_raw_desc(struct vdrv *d, unsigned q, uint16_t i, uint64_t addr, uint32_t len,
		   uint16_t flags, uint16_t next);
void vdrv_raw_avail(struct vdrv *d, unsigned q, uint16_t head);
void vdrv_kick(struct vdrv *d, unsigned q);
/* Waits up to ms for the next used element; true with id/len. */
bool vdrv_wait_used(struct vdrv *d, unsigned q, unsigned ms, uint32_t *id, uint32_t *len);
/* Waits up to ms for a status bit. */
bool vdrv_wait_status(struct vdrv *d, uint8_t bit, unsigned ms);
void *vdrv_ptr(struct vdrv *d, uint64_t gpa);

#endif
