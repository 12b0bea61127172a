/* A virtio 1.x device on the modern PCI transport (virtio 1.x 4.1).
 *
 * pci.c owns everything a driver sees that is not device specific: the PCI
 * header and vendor capabilities, the common configuration (feature
 * negotiation, status, queue setup), the ISR byte, the notify area (backed
 * by one ioeventfd per queue, watched on the VM's event loop) and MSI-X.
 * A device (blk.c, net.c, rng.c, console.c) supplies an ops table and its
 * config space, and works its queues from the callbacks.
 *
 * Locking: one mutex per device serializes the vCPU threads' register
 * accesses and the event-loop callbacks. Every ops callback but destroy
 * runs with it held. Interrupts requested while it is held are delivered
 * by virtio_dev_unlock(), after the mutex is dropped. */
#ifndef CLOISON_VMM_VIRTIO_VIRTIO_H
#define CLOISON_VMM_VIRTIO_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/bus/pci.h"
#include "vmm/virtio/queue.h"

/* Device ids (5) and the feature bits every device may offer (6). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_BALLOON 5

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_MSI_NO_VECTOR 0xffff
#define VIRTIO_MAX_QUEUES 64

struct vm;
struct evloop;
struct virtio_dev;

struct virtio_dev_ops {
	/* Device-specific configuration space (off from its start; the
	 * transport has checked off+len against config_len). */
	void (*config_read)(struct virtio_dev *vdev, uint32_t off, void *data, unsigned len);
	void (*config_write)(struct virtio_dev *vdev, uint32_t off, const void *data,
			     unsigned len);
	/* The driver set DRIVER_OK: features are final, enabled queues are
	 * mapped. 0, or -errno to fail the device (it goes to needs-reset). */
	int (*start)(struct virtio_dev *vdev);
	/* Queue qidx may have new buffers (a kick, or a restart). */
	void (*queue_notify)(struct virtio_dev *vdev, unsigned qidx);
	/* Stops using the queues: waits for in-flight I/O (its completions
	 * may still be pushed), then forgets per-run state. Called on device
	 * reset (status 0), a VM reset, needs-reset and destroy. Optional. */
	void (*stop)(struct virtio_dev *vdev);
	/* Quiesce (finish in-flight I/O, stop watching backend fds) and come
	 * back. Optional. */
	void (*pause)(struct virtio_dev *vdev);
	void (*resume)(struct virtio_dev *vdev);
	/* Frees the device's own state (lock not held, queues stopped). */
	void (*destroy)(struct virtio_dev *vdev);
};

struct virtio_queue {
	struct virtq vq;
	struct virtio_dev *dev;
	unsigned index;
	uint16_t msix_vector;
	int kick_fd;		/* eventfd: ioeventfd on the notify address */
	uint64_t kick_gpa;	/* where the ioeventfd is bound, 0 = not bound */
};

struct virtio_dev {
	struct pci_device pci;
	struct vm *vm;
	const struct guest_mem *mem;
	struct evloop *loop;
	char name[32];
	const struct virtio_dev_ops *ops;
	void *opaque; /* the device's state */
	pthread_mutex_t lock;

	uint64_t host_features;
	uint64_t guest_features;
	uint32_t device_feature_select, driver_feature_select;
	uint8_t status;
	uint8_t config_generation;
	uint8_t isr;
	uint16_t msix_config;
	uint16_t queue_select;
	uint32_t config_len;

	unsigned nqueues;
	struct virtio_queue queues[VIRTIO_MAX_QUEUES];
	uint64_t irq_pending; /* queue interrupts to deliver on unlock */
	bool config_irq_pending;
	bool running; /* DRIVER_OK and not broken */
	bool broken;  /* in DEVICE_NEEDS_RESET until the driver resets us */
	bool paused;
	bool attached;
	uint8_t pci_cfg_cap; /* config-space offset of the PCI_CFG capability */
};

struct virtio_dev_params {
	const char *name; /* "virtio-blk0": logs and the PCI device name */
	uint16_t device_id;
	uint32_t class_code;
	unsigned nqueues;
	uint16_t queue_size;
	uint64_t features; /* device-specific bits; VERSION_1, EVENT_IDX and
			      INDIRECT_DESC are added here */
	uint32_t config_len;
	const struct virtio_dev_ops *ops;
	void *opaque;
};

/* Builds the PCI function (header, capabilities, BAR, MSI-X with one
 * vector per queue plus one for config changes) and the queues' kick
 * eventfds. Nothing is visible to the guest yet. 0 or -errno. */
int virtio_dev_init(struct virtio_dev *vdev, struct vm *vm, const struct virtio_dev_params *p);
/* Puts the device on the VM's PCI bus and watches its kick eventfds on
 * the VM's event loop. 0 or -errno. */
int virtio_dev_attach(struct virtio_dev *vdev);
/* Undoes attach and init: stops the device (waiting for its I/O),
 * unwatches and closes its fds, takes it off the PCI bus, calls
 * ops->destroy. Call on the event loop's thread or after the loop has
 * stopped, with the vCPUs stopped: a callback of this device must not be
 * running elsewhere. */
void virtio_dev_destroy(struct virtio_dev *vdev);

void virtio_dev_lock(struct virtio_dev *vdev);
/* Drops the lock, then delivers the interrupts requested under it. */
void virtio_dev_unlock(struct virtio_dev *vdev);

static inline bool virtio_dev_has(const struct virtio_dev *vdev, unsigned bit)
{
	return (vdev->guest_features >> bit) & 1;
}

static inline struct virtq *virtio_dev_vq(struct virtio_dev *vdev, unsigned qidx)
{
	return &vdev->queues[qidx].vq;
}

/* True while the device may work its queues (DRIVER_OK, not broken, not
 * paused). Lock held. */
bool virtio_dev_active(const struct virtio_dev *vdev);

/* After pushing used buffers on queue qidx: requests the queue's
 * interrupt if the driver wants one. Lock held. */
void virtio_dev_queue_done(struct virtio_dev *vdev, unsigned qidx);

/* The driver broke the rules (malformed ring, bad request): logs one line
 * naming the device and reason, stops the device and sets
 * DEVICE_NEEDS_RESET with a configuration-change interrupt. Later calls
 * until the driver resets the device do nothing. Lock held. */
void virtio_dev_fail(struct virtio_dev *vdev, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Makes the event loop run queue qidx again soon, as if the driver had
 * kicked it (a device that stopped early to let others run). Any thread. */
void virtio_dev_kick(struct virtio_dev *vdev, unsigned qidx);

/* Announces a device configuration change (e.g. link status). Lock held. */
void virtio_dev_config_changed(struct virtio_dev *vdev);

struct state_writer;
struct state_file;

/* Saves the transport state (features, status, ISR, vectors, and every
 * queue's size, ring addresses and indexes) as the STATE_SECTION_VIRTIO
 * record of the device's PCI slot. The device must be paused: nothing in
 * flight, so the rings say everything. */
void virtio_dev_save(struct virtio_dev *vdev, struct state_writer *w);
/* Restores it into a new device of the same kind (after the PCI bus's
 * restore mapped its BAR): checks every value as a driver's write would
 * be checked, maps the rings through the same checks as a live enable,
 * and restarts the device if the driver had it running. Rings that fail
 * those checks (an address outside RAM) put the device into
 * DEVICE_NEEDS_RESET, as a driver's bad write would; a record that does
 * not fit the device is -EINVAL with err saying why. */
int virtio_dev_restore(struct virtio_dev *vdev, const struct state_file *f, char *err,
		       size_t errlen);

/* Pause/resume/reset from the VMM (not the driver). */
void virtio_dev_pause(struct virtio_dev *vdev);
void virtio_dev_resume(struct virtio_dev *vdev);
void virtio_dev_reset(struct virtio_dev *vdev);

#endif
