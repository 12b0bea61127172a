/* The PCI host bridge (bus 0), config space through 0xCF8/0xCFC and ECAM,
 * BARs placed by us like firmware would (the guest may move them), and an
 * MSI-X helper for devices. */
#ifndef CLOISON_VMM_BUS_PCI_H
#define CLOISON_VMM_BUS_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vmm/bus/bus.h"

struct vm;
struct pci_bus;
struct pci_msix;

#define PCI_CONFIG_SIZE 4096 /* extended config space through ECAM */
#define PCI_NUM_BARS 6
#define PCI_MAX_DEVICES 32 /* slots on bus 0; slot 0 is the host bridge */

enum pci_bar_kind { PCI_BAR_NONE, PCI_BAR_MMIO32, PCI_BAR_MMIO64, PCI_BAR_IO };

struct pci_bar {
	enum pci_bar_kind kind;
	uint64_t size;		/* power of two, >= 16 (MMIO) or 4 (I/O) */
	uint64_t addr;		/* current guest address, 0 while unmapped */
	bool mapped;
	const struct io_ops *ops; /* off is relative to the BAR start */
	void *opaque;
};

struct pci_device {
	const char *name;
	uint8_t config[PCI_CONFIG_SIZE];
	/* Bits the guest may change, per config byte (BARs handled apart). */
	uint8_t wmask[PCI_CONFIG_SIZE];
	struct pci_bar bars[PCI_NUM_BARS];
	uint8_t slot;
	uint8_t last_cap; /* offset of the last capability, 0 = none */
	struct pci_msix *msix;
	uint16_t cap_end; /* first free config byte after the capabilities (pci.c's) */
	/* Optional: called after the guest wrote config (after the write
	 * landed in config[]). */
	void (*config_written)(struct pci_device *dev, unsigned off, unsigned len);
	/* Optional: called before the guest reads config bytes [off, off+len),
	 * to refresh what config[] holds there (the bus lock is held, the
	 * device's is not: take it to write config[]). */
	void (*config_before_read)(struct pci_device *dev, unsigned off, unsigned len);
	void *opaque; /* the device model's state */
	pthread_mutex_t lock;
	struct pci_bus *bus;
};

struct state_writer;
struct state_file;

/* Saves the bus (the 0xCF8 latch) and every device's config space and
 * MSI-X state, one STATE_SECTION_PCI record per slot (the VM is paused).
 * Restore needs the same devices in the same slots: it checks each
 * device's identity (vendor, device, class, subsystem), takes the bytes
 * the guest may write, maps the BARs where they were and rebuilds MSI-X.
 * 0, or -EINVAL / -ENOENT with err naming the slot and what differs. */
void pci_bus_save(struct pci_bus *bus, struct state_writer *w);
int pci_bus_restore(struct pci_bus *bus, const struct state_file *f, char *err, size_t errlen);

/* Creates the host bridge, registers 0xCF8-0xCFF on pio and the ECAM
 * window on mmio. 0 or -errno. */
int pci_bus_create(struct vm *vm, struct io_bus *pio, struct io_bus *mmio, struct pci_bus **out);
void pci_bus_destroy(struct pci_bus *bus);

/* Fills a type-0 header: ids, class (base<<16 | sub<<8 | prog-if),
 * subsystem ids, interrupt pin none. Call before adding BARs/caps. */
void pci_device_init(struct pci_device *dev, const char *name, uint16_t vendor,
		     uint16_t device, uint32_t class_code, uint16_t subsys_vendor,
		     uint16_t subsys_id);

/* Declares BAR n (a 64-bit BAR also uses n+1). 0 or -EINVAL. */
int pci_device_set_bar(struct pci_device *dev, unsigned n, enum pci_bar_kind kind,
		       uint64_t size, const struct io_ops *ops, void *opaque);

/* Appends a capability (cap[0] = id; cap[1], the next pointer, is filled in
 * here) at a 4-byte aligned offset in the first 256 bytes. Returns the
 * offset, or -ENOSPC. */
int pci_device_add_cap(struct pci_device *dev, const void *cap, unsigned len);

/* Puts the device in the next free slot, assigns its BARs addresses in the
 * PCI MMIO window (naturally aligned) and enables decoding for them.
 * 0 or -errno (-ENOSPC when the bus is full). */
int pci_bus_add_device(struct pci_bus *bus, struct pci_device *dev);

/* The next pci_bus_add_device puts its device in slot (when free) rather
 * than the lowest free one: a restore puts hot-added devices back where
 * they were. One-shot. */
void pci_bus_want_slot(struct pci_bus *bus, unsigned slot);

/* Slots holding a device (bit n = slot n; bit 0, the host bridge, set). */
uint32_t pci_bus_used_slots(struct pci_bus *bus);

/* What is in slot: 0 with *name (the device's, valid while it stays on
 * the bus), *vendor and *device filled, or -ENOENT. */
int pci_bus_slot_info(struct pci_bus *bus, unsigned slot, const char **name, uint16_t *vendor,
		      uint16_t *device);

/* Takes dev off the bus: unmaps its BARs, frees its MSI-X state (routes,
 * irqfds, eventfds) and frees the slot. Call before freeing dev, with the
 * vCPUs stopped or paused. */
void pci_bus_remove_device(struct pci_bus *bus, struct pci_device *dev);

/* Returns every device to its power-on configuration (in-place reboot):
 * command register and BARs as pci_bus_add_device left them, MSI-X off
 * with all vectors masked and nothing pending. Device models reset their
 * own state separately. */
void pci_bus_reset(struct pci_bus *bus);

/* MSI-X: nvec vectors, table and PBA in BAR bar at the given offsets (the
 * BAR's own ops must forward accesses in those ranges to pci_msix_access;
 * or leave the whole BAR to MSI-X). Adds the capability. 0 or -errno. */
int pci_msix_init(struct pci_device *dev, struct vm *vm, unsigned bar, unsigned nvec,
		  uint32_t table_off, uint32_t pba_off);
/* Handles a guest access to the MSI-X table/PBA; true if off was in them. */
bool pci_msix_access(struct pci_device *dev, uint64_t bar_off, void *data, unsigned len,
		     bool is_write);
/* Delivers vector vec (thread-safe): if MSI-X is enabled and the vector
 * unmasked, injects it; if masked, sets its pending bit (delivered on
 * unmask). Returns 0, or -EINVAL for vec out of range / MSI-X disabled. */
int pci_msix_notify(struct pci_device *dev, unsigned vec);
/* The eventfd that, when written, delivers vec through an irqfd (for
 * devices that signal from their own threads without taking locks). It
 * follows masking: while vec is masked the irqfd is detached and a write
 * only marks it pending. -1 if unavailable. */
int pci_msix_vector_eventfd(struct pci_device *dev, unsigned vec);
bool pci_msix_enabled(const struct pci_device *dev);

#endif
