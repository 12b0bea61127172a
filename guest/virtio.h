/* Ring-3 virtio 1.x over PCI (modern transport) for the test guest: PCI
 * config through ECAM (or 0xCF8 via a system call on machines without
 * MCFG), split virtqueues polled on their used rings, no interrupts. */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#include "user.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLK 2
#define VIRTIO_ID_RNG 4

#define VIRTIO_F_INDIRECT_DESC (1ULL << 28)
#define VIRTIO_F_EVENT_IDX (1ULL << 29)
#define VIRTIO_F_VERSION_1 (1ULL << 32)

#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VQ_MAX_SIZE 256
#define VIRTIO_MAX_QUEUES 16
#define VIRTIO_MAX_DEVS 8

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
#define VQ_IND_MAX 4 /* entries of the indirect table behind each descriptor */

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

struct vring_avail {
	uint16_t flags, idx;
	uint16_t ring[];
};

struct vring_used_elem {
	uint32_t id, len;
};

struct vring_used {
	uint16_t flags, idx;
	struct vring_used_elem ring[];
};

struct virtq {
	uint16_t index, size;
	volatile struct vring_desc *desc;
	volatile struct vring_avail *avail;
	volatile struct vring_used *used;
	uint16_t free_head, num_free;
	uint16_t avail_idx, last_used;
	uint16_t published; /* avail idx the device was last told about */
	bool event_idx, indirect; /* negotiated VIRTIO_F_EVENT_IDX / INDIRECT_DESC */
	volatile struct vring_desc *ind; /* VQ_IND_MAX entries per descriptor */
	uint64_t notify_addr;
	uint64_t kicks;
};

struct pci_addr {
	uint8_t bus, dev, fn;
};

struct virtio_dev {
	struct guest *g;
	struct pci_addr pci;
	unsigned type; /* VIRTIO_ID_* */
	uint64_t common, notify_base, isr, device_cfg; /* MMIO addresses */
	uint32_t notify_mult;
	uint64_t features;
	unsigned nqueues;
	bool wake; /* MSI-X wake-ups are set up */
	uint32_t wake_queues;
	struct virtq vq[VIRTIO_MAX_QUEUES];
};

struct virtio_buf {
	uint64_t addr;
	uint32_t len;
	bool device_writes;
};

/* --- pci.c --- */
uint32_t pci_read32(struct guest *g, struct pci_addr a, unsigned off);
void pci_write32(struct guest *g, struct pci_addr a, unsigned off, uint32_t v);
/* Gives every memory BAR the firmware left at 0 an address (windows in
 * pci.c) and enables memory decoding and bus mastering.
 * 0 or -1 when the 32-bit window is full. */
int pci_assign_bars(struct guest *g, struct pci_addr a);
/* Finds virtio devices on bus 0: their PCI addresses and types, in slot
 * order. Returns how many (at most max). */
unsigned pci_find_virtio(struct guest *g, struct pci_addr *out, unsigned *types, unsigned max);

/* --- virtio.c --- */
/* Finds the n-th (0-based) virtio device of the type, maps its
 * capabilities, resets it, negotiates wanted & offered features (VERSION_1
 * required) and sets up nqueues queues. Queues in the wake_queues bit mask
 * get MSI-X vector 0, which sends VEC_WAKE to the BSP: it only ends a
 * SYS_IDLE early (completions are still found by polling); d->wake says
 * whether that worked. 0 or -1 (reason printed). */
int virtio_open(struct guest *g, unsigned type, unsigned n, uint64_t wanted, unsigned nqueues,
		uint32_t wake_queues, struct virtio_dev *d);
/* Sets up one more queue (before virtio_ready). 0 or -1. */
int virtio_add_queue(struct virtio_dev *d, uint16_t index);
/* Writes DRIVER_OK. */
void virtio_ready(struct virtio_dev *d);
/* Resets the device (status 0) and waits for it. */
void virtio_reset(struct virtio_dev *d);
uint8_t virtio_status(struct virtio_dev *d);
uint8_t virtio_cfg8(struct virtio_dev *d, unsigned off);
uint32_t virtio_cfg32(struct virtio_dev *d, unsigned off);
uint64_t virtio_cfg64(struct virtio_dev *d, unsigned off);

/* Posts a chain (device-readable buffers first); head id, or -1 when the
 * queue has too few free descriptors. With INDIRECT_DESC negotiated a chain
 * of 2..VQ_IND_MAX buffers takes one descriptor pointing at its table.
 * Does not notify. */
int virtq_add(struct virtq *q, const struct virtio_buf *bufs, unsigned n);
/* Publishes what virtq_add posted and notifies the device unless it asked
 * not to be (VRING_USED_F_NO_NOTIFY, or avail_event with EVENT_IDX). */
void virtq_kick(struct virtq *q);
/* A finished chain: its head id (and *len written by the device), or -1. */
int virtq_get(struct virtq *q, uint32_t *len);

/* --- devices --- */
struct blk_dev;
int blk_open(struct guest *g, unsigned n, struct blk_dev **res);
uint64_t blk_capacity(const struct blk_dev *b); /* bytes */
int blk_fill(struct guest *g, uint8_t value);
int blk_sum(struct guest *g);
int blk_verify(struct guest *g);
int blk_readonly_check(struct guest *g);
int blk_bench(struct guest *g, const char *mode, uint64_t bs, unsigned qd, uint64_t secs);
int blk_records(struct guest *g, uint64_t seed, unsigned every, unsigned qd);
/* For hostile.c, which writes descriptors by hand. */
struct virtq *blk_queue(struct blk_dev *b);
struct virtio_dev *blk_virtio(struct blk_dev *b);
/* One synchronous request: VIRTIO_BLK_T_*; returns the status byte or -1. */
int blk_rw(struct blk_dev *b, uint32_t type, uint64_t sector, void *buf, uint32_t len);

int rng_read(struct guest *g, unsigned n, void *buf, uint32_t len, uint32_t *got);
int rng_run(struct guest *g);
/* balloon=SIZE[,free=SIZE] (balloon.c); 0, or -1 for a malformed word. */
int balloon_run(struct guest *g, const char *arg, size_t len);
/* dynmem=USED[,touch=SIZE] (balloon.c): the resident driver; poll from the
 * serve loop (true: it moved pages). */
int dynmem_start(struct guest *g, const char *arg, size_t len);
bool dynmem_poll(struct guest *g);

struct net_dev;
int net_start(struct guest *g, uint32_t ip, unsigned prefix, struct net_dev **res);
/* True when the NIC's receive queue wakes the guest through MSI-X. */
bool net_wakes(const struct net_dev *n);
/* One polling pass; true if a packet was handled. */
bool net_poll(struct net_dev *n);
/* netbench=PEER: ping, UDP round trips and a UDP flood toward PEER's
 * ip= server, for secs each (docs/testguest.md). */
int net_bench(struct net_dev *n, uint32_t peer, uint64_t secs);
/* netflood=PEER: UDP to PEER:9 as fast as the ring takes it, for secs. */
int net_flood(struct net_dev *n, uint32_t peer, uint64_t secs);
/* netsend=KIND: 5 frames that a switch port's guards judge (honest, spoof,
 * dhcpoffer, ra); 0, or -1 for an unknown KIND. */
int net_send_test(struct net_dev *n, const char *kind, size_t len);
/* Resets the NIC (hot remove): it is not used again. */
void net_stop(struct net_dev *n);

/* `hostile=DEV` (blk, net, rng, console, vsock, balloon): target[0..len) names DEV.
 * 0, or -1 for an unknown DEV or no memory. */
int hostile_run(struct guest *g, const char *target, size_t len);

struct console_dev;
/* `console`: greets the host side of the first virtio-console, then echoes. */
int console_start(struct guest *g, struct console_dev **res);
bool console_wakes(const struct console_dev *c);
bool console_poll(struct console_dev *c);

/* --- sha256.c --- */
struct sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	unsigned used;
};
void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);
void sha256_final(struct sha256 *s, uint8_t out[32]);

#endif
