/* The PCI host bridge: bus 0 only, config space through the 0xCF8/0xCFC
 * mechanism and through ECAM, BAR placement and decoding.
 *
 * A device's config space is the byte array in struct pci_device plus a
 * per-byte write mask. BARs use the same mechanism: their mask bytes keep
 * the size bits and the type bits read-only, so the guest's all-ones
 * sizing write reads back the size mask as on hardware. After every
 * write that touches the command register or a BAR, each BAR is put where
 * its register and the decode-enable bits say (unregistered and registered
 * again on the port or MMIO bus when it moved).
 *
 * Locking: bus->lock serializes config cycles and the slot table (the
 * 0xCF8 latch is one register shared by all vCPUs, as on a real chipset);
 * dev->lock guards the device's config bytes against the device model;
 * the MSI-X table has its own lock (msix.c). config_written callbacks run
 * with none of these held. */
#include "vmm/bus/pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/bus/pci_internal.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

#define PCI_VENDOR_ID 0x00
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_CACHE_LINE 0x0c
#define PCI_LATENCY 0x0d
#define PCI_HEADER_TYPE 0x0e
#define PCI_BAR0 0x10
#define PCI_BAR_END 0x28
#define PCI_SUBSYS_VENDOR 0x2c
#define PCI_SUBSYS_ID 0x2e
#define PCI_CAP_PTR 0x34
#define PCI_INT_LINE 0x3c
#define PCI_CAP_START 0x40
#define PCI_STD_CONFIG 256

#define CMD_IO 0x0001
#define CMD_MEM 0x0002
#define STATUS_CAP_LIST 0x0010

#define BAR_IO 0x1
#define BAR_MEM64 0x4

#define IO_BAR_START 0xc000
#define IO_BAR_END 0x10000

/* Intel Q35 host bridge ids: what Linux expects to see in slot 0. */
#define HOST_BRIDGE_VENDOR 0x8086
#define HOST_BRIDGE_DEVICE 0x29c0
#define CLASS_HOST_BRIDGE 0x060000

#define CF9_RESET_CPU 0x04

struct pci_home {
	uint8_t bars[PCI_BAR_END - PCI_BAR0];
	uint8_t command[2];
};

struct pci_bus {
	struct vm *vm;
	struct io_bus *pio, *mmio;
	pthread_mutex_t lock;
	uint32_t config_addr; /* the 0xCF8 latch */
	uint8_t cf9;	      /* Intel reset control register */
	struct pci_device *slots[PCI_MAX_DEVICES];
	struct pci_home home[PCI_MAX_DEVICES];
	uint64_t mmio_next;
	uint32_t io_next;
	unsigned want_slot; /* pci_bus_want_slot, 0 = none */
	struct pci_device bridge;
};

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static void wr32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint16_t rd16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, 2);
	return v;
}

/* ---- device setup ---- */

void pci_device_init(struct pci_device *dev, const char *name, uint16_t vendor,
		     uint16_t device, uint32_t class_code, uint16_t subsys_vendor,
		     uint16_t subsys_id)
{
	dev->name = name;
	memset(dev->config, 0, sizeof(dev->config));
	memset(dev->wmask, 0, sizeof(dev->wmask));
	memset(dev->bars, 0, sizeof(dev->bars));
	dev->slot = 0;
	dev->last_cap = 0;
	dev->cap_end = PCI_CAP_START;
	dev->msix = NULL;
	dev->bus = NULL;
	pthread_mutex_init(&dev->lock, NULL);

	memcpy(dev->config + PCI_VENDOR_ID, &vendor, 2);
	memcpy(dev->config + PCI_VENDOR_ID + 2, &device, 2);
	dev->config[PCI_CLASS_PROG] = (uint8_t)class_code;
	dev->config[PCI_CLASS_PROG + 1] = (uint8_t)(class_code >> 8);
	dev->config[PCI_CLASS_PROG + 2] = (uint8_t)(class_code >> 16);
	memcpy(dev->config + PCI_SUBSYS_VENDOR, &subsys_vendor, 2);
	memcpy(dev->config + PCI_SUBSYS_ID, &subsys_id, 2);
	/* I/O, memory, bus master, parity, SERR, INTx disable. */
	dev->wmask[PCI_COMMAND] = 0x47;
	dev->wmask[PCI_COMMAND + 1] = 0x05;
	dev->wmask[PCI_CACHE_LINE] = 0xff;
	dev->wmask[PCI_LATENCY] = 0xff;
	dev->wmask[PCI_INT_LINE] = 0xff;
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

int pci_device_set_bar(struct pci_device *dev, unsigned n, enum pci_bar_kind kind,
		       uint64_t size, const struct io_ops *ops, void *opaque)
{
	uint64_t mask;
	uint8_t type;

	if (n >= PCI_NUM_BARS || dev->bars[n].kind != PCI_BAR_NONE || !is_pow2(size))
		return -EINVAL;
	if (n > 0 && dev->bars[n - 1].kind == PCI_BAR_MMIO64)
		return -EINVAL; /* the upper half of a 64-bit BAR */
	switch (kind) {
	case PCI_BAR_MMIO32:
		if (size < 16 || size > (1ULL << 31))
			return -EINVAL;
		type = 0;
		break;
	case PCI_BAR_MMIO64:
		if (n + 1 >= PCI_NUM_BARS || dev->bars[n + 1].kind != PCI_BAR_NONE || size < 16)
			return -EINVAL;
		type = BAR_MEM64;
		break;
	case PCI_BAR_IO:
		if (size < 4 || size > 256)
			return -EINVAL;
		type = BAR_IO;
		break;
	default:
		return -EINVAL;
	}
	dev->bars[n] = (struct pci_bar){ .kind = kind, .size = size, .ops = ops, .opaque = opaque };
	mask = ~(size - 1) & ~(uint64_t)(kind == PCI_BAR_IO ? 0x3 : 0xf);
	wr32(dev->config + PCI_BAR0 + 4 * n, type);
	wr32(dev->wmask + PCI_BAR0 + 4 * n, (uint32_t)mask);
	if (kind == PCI_BAR_MMIO64) {
		wr32(dev->config + PCI_BAR0 + 4 * (n + 1), 0);
		wr32(dev->wmask + PCI_BAR0 + 4 * (n + 1), (uint32_t)(mask >> 32));
	}
	return 0;
}

int pci_device_add_cap(struct pci_device *dev, const void *cap, unsigned len)
{
	unsigned off = ALIGN_UP(dev->cap_end ? dev->cap_end : PCI_CAP_START, 4u);

	if (len < 2 || off + len > PCI_STD_CONFIG)
		return -ENOSPC;
	memcpy(dev->config + off, cap, len);
	dev->config[off + 1] = 0;
	if (dev->last_cap)
		dev->config[dev->last_cap + 1] = (uint8_t)off;
	else
		dev->config[PCI_CAP_PTR] = (uint8_t)off;
	dev->config[PCI_STATUS] |= STATUS_CAP_LIST;
	dev->last_cap = (uint8_t)off;
	dev->cap_end = (uint16_t)(off + len);
	return (int)off;
}

/* ---- BAR decoding ---- */

static bool bar_target(const struct pci_device *dev, unsigned n, uint64_t *addr)
{
	const struct pci_bar *bar = &dev->bars[n];
	uint16_t cmd = rd16(dev->config + PCI_COMMAND);
	uint64_t a = rd32(dev->config + PCI_BAR0 + 4 * n);

	switch (bar->kind) {
	case PCI_BAR_IO:
		a &= ~0x3ULL;
		if (!(cmd & CMD_IO) || a == 0 || a + bar->size > IO_BAR_END)
			return false;
		break;
	case PCI_BAR_MMIO64:
		a |= (uint64_t)rd32(dev->config + PCI_BAR0 + 4 * (n + 1)) << 32;
		/* fall through */
	case PCI_BAR_MMIO32:
		a &= ~0xfULL;
		if (!(cmd & CMD_MEM) || a == 0 || a + bar->size < a)
			return false;
		break;
	default:
		return false;
	}
	*addr = a;
	return true;
}

static const struct io_ops *bar_ops(const struct pci_device *dev, unsigned n, void **opaque)
{
	if (dev->bars[n].ops) {
		*opaque = dev->bars[n].opaque;
		return dev->bars[n].ops;
	}
	*opaque = (void *)dev;
	return dev->msix ? &pci_msix_bar_ops : NULL;
}

/* Puts every BAR of dev where its registers say (dev->lock held). */
static void bars_update(struct pci_bus *bus, struct pci_device *dev)
{
	for (unsigned n = 0; n < PCI_NUM_BARS; n++) {
		struct pci_bar *bar = &dev->bars[n];
		struct io_bus *iob = bar->kind == PCI_BAR_IO ? bus->pio : bus->mmio;
		const struct io_ops *ops;
		uint64_t addr = 0;
		bool want = bar_target(dev, n, &addr);
		void *opaque;
		int ret;

		if (bar->kind == PCI_BAR_NONE)
			continue;
		if (bar->mapped && want && bar->addr == addr)
			continue;
		if (bar->mapped) {
			io_bus_unregister(iob, bar->addr);
			bar->mapped = false;
			bar->addr = 0;
		}
		ops = bar_ops(dev, n, &opaque);
		if (!want || !ops)
			continue;
		ret = io_bus_register(iob, addr, bar->size, ops, opaque, dev->name);
		if (ret) {
			/* Overlapping another region: the guest's mistake; the
			 * BAR decodes nothing until moved somewhere free. */
			log_debug("pci %s: BAR%u at %#llx not mapped: %s", dev->name, n,
				  (unsigned long long)addr, strerror(-ret));
			continue;
		}
		bar->mapped = true;
		bar->addr = addr;
	}
}

static void bars_unmap(struct pci_bus *bus, struct pci_device *dev)
{
	for (unsigned n = 0; n < PCI_NUM_BARS; n++) {
		struct pci_bar *bar = &dev->bars[n];

		if (!bar->mapped)
			continue;
		io_bus_unregister(bar->kind == PCI_BAR_IO ? bus->pio : bus->mmio, bar->addr);
		bar->mapped = false;
		bar->addr = 0;
	}
}

/* ---- config cycles ---- */

static bool touches(unsigned off, unsigned len, unsigned start, unsigned end)
{
	return off < end && off + len > start;
}

/* One config read of len (1..4) bytes at off of slot; all-ones when no
 * device answers. bus->lock held. */
static uint32_t config_read(struct pci_bus *bus, unsigned slot, unsigned fn, unsigned off,
			    unsigned len)
{
	struct pci_device *dev = slot < PCI_MAX_DEVICES ? bus->slots[slot] : NULL;
	uint32_t v = 0;

	if (!dev || fn != 0 || off + len > PCI_CONFIG_SIZE)
		return len >= 4 ? 0xffffffffu : (1u << (8 * len)) - 1;
	if (dev->config_before_read)
		dev->config_before_read(dev, off, len);
	pthread_mutex_lock(&dev->lock);
	memcpy(&v, dev->config + off, len);
	pthread_mutex_unlock(&dev->lock);
	return v;
}

/* One config write; returns the device if a callback is due. bus->lock held. */
static struct pci_device *config_write(struct pci_bus *bus, unsigned slot, unsigned fn,
				       unsigned off, unsigned len, uint32_t v)
{
	struct pci_device *dev = slot < PCI_MAX_DEVICES ? bus->slots[slot] : NULL;

	if (!dev || fn != 0 || off + len > PCI_CONFIG_SIZE)
		return NULL;
	pthread_mutex_lock(&dev->lock);
	for (unsigned i = 0; i < len; i++) {
		uint8_t m = dev->wmask[off + i], b = (uint8_t)(v >> (8 * i));

		dev->config[off + i] = (uint8_t)((dev->config[off + i] & ~m) | (b & m));
	}
	if (touches(off, len, PCI_COMMAND, PCI_COMMAND + 2) ||
	    touches(off, len, PCI_BAR0, PCI_BAR_END))
		bars_update(bus, dev);
	if (dev->msix)
		pci_msix_config_written(dev, off, len);
	pthread_mutex_unlock(&dev->lock);
	return dev->config_written ? dev : NULL;
}

/* 0xCF8-0xCFF: the address latch (dword accesses only), the Intel reset
 * control register at 0xCF9 (byte), and the data window at 0xCFC. */
static void cf8_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct pci_bus *bus = opaque;
	uint32_t v = 0xffffffffu;

	pthread_mutex_lock(&bus->lock);
	if (off == 0 && len == 4) {
		v = bus->config_addr;
	} else if (off == 1 && len == 1) {
		v = bus->cf9;
	} else if (off >= 4 && off + len <= 8 && len <= 4) {
		uint32_t a = bus->config_addr;
		unsigned reg = (a & 0xfc) + (unsigned)(off - 4);

		if ((a & 0x80000000u) && ((a >> 16) & 0xff) == 0)
			v = config_read(bus, (a >> 11) & 0x1f, (a >> 8) & 0x7, reg, len);
	}
	pthread_mutex_unlock(&bus->lock);
	memcpy(data, &v, MIN(len, 4u));
	if (len > 4)
		memset((uint8_t *)data + 4, 0xff, len - 4);
}

static void cf8_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct pci_bus *bus = opaque;
	struct pci_device *notify = NULL;
	unsigned reg = 0;
	uint32_t v = 0;

	memcpy(&v, data, MIN(len, 4u));
	pthread_mutex_lock(&bus->lock);
	if (off == 0 && len == 4) {
		bus->config_addr = v & 0x80fffffcu;
	} else if (off == 1 && len == 1) {
		bus->cf9 = (uint8_t)(v & 0x0e);
		if (v & CF9_RESET_CPU)
			vm_request_stop(bus->vm, VM_STOP_RESET, "guest reset through port 0xCF9");
	} else if (off >= 4 && off + len <= 8 && len <= 4) {
		uint32_t a = bus->config_addr;

		reg = (a & 0xfc) + (unsigned)(off - 4);
		if ((a & 0x80000000u) && ((a >> 16) & 0xff) == 0)
			notify = config_write(bus, (a >> 11) & 0x1f, (a >> 8) & 0x7, reg, len, v);
	}
	pthread_mutex_unlock(&bus->lock);
	if (notify)
		notify->config_written(notify, reg, len);
}

static const struct io_ops cf8_ops = { .read = cf8_read, .write = cf8_write };

/* ECAM: bus 0, 32 devices x 8 functions x 4 KiB. A qword access is two
 * dword config cycles; one crossing a function's 4 KiB is dropped. */
static void ecam_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct pci_bus *bus = opaque;
	unsigned reg = (unsigned)(off & 0xfff);
	uint8_t *out = data;

	memset(data, 0xff, len);
	if (reg + len > PCI_CONFIG_SIZE)
		return;
	pthread_mutex_lock(&bus->lock);
	for (unsigned done = 0; done < len;) {
		unsigned chunk = MIN(len - done, 4u);
		uint32_t v = config_read(bus, (unsigned)(off >> 15) & 0x1f,
					 (unsigned)(off >> 12) & 0x7, reg + done, chunk);

		memcpy(out + done, &v, chunk);
		done += chunk;
	}
	pthread_mutex_unlock(&bus->lock);
}

static void ecam_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct pci_bus *bus = opaque;
	unsigned reg = (unsigned)(off & 0xfff);
	const uint8_t *in = data;
	struct pci_device *notify = NULL;

	if (reg + len > PCI_CONFIG_SIZE)
		return;
	pthread_mutex_lock(&bus->lock);
	for (unsigned done = 0; done < len;) {
		unsigned chunk = MIN(len - done, 4u);
		uint32_t v = 0;

		memcpy(&v, in + done, chunk);
		notify = config_write(bus, (unsigned)(off >> 15) & 0x1f,
				      (unsigned)(off >> 12) & 0x7, reg + done, chunk, v);
		done += chunk;
	}
	pthread_mutex_unlock(&bus->lock);
	if (notify)
		notify->config_written(notify, reg, len);
}

static const struct io_ops ecam_ops = { .read = ecam_read, .write = ecam_write };

/* ---- the bus ---- */

int pci_bus_create(struct vm *vm, struct io_bus *pio, struct io_bus *mmio, struct pci_bus **out)
{
	struct pci_bus *bus = calloc(1, sizeof(*bus));
	int err;

	if (!bus)
		return -ENOMEM;
	err = -pthread_mutex_init(&bus->lock, NULL);
	if (err)
		goto err_free;
	bus->vm = vm;
	bus->pio = pio;
	bus->mmio = mmio;
	bus->mmio_next = LAYOUT_PCI_MMIO_BASE;
	bus->io_next = IO_BAR_START;

	pci_device_init(&bus->bridge, "host-bridge", HOST_BRIDGE_VENDOR, HOST_BRIDGE_DEVICE,
			CLASS_HOST_BRIDGE, 0, 0);
	bus->bridge.bus = bus;
	bus->slots[0] = &bus->bridge;

	err = io_bus_register(pio, PORT_PCI_CONFIG_ADDR, 8, &cf8_ops, bus, "pci-config");
	if (err)
		goto err_bridge;
	err = io_bus_register(mmio, LAYOUT_PCI_ECAM_BASE, LAYOUT_PCI_ECAM_SIZE, &ecam_ops, bus,
			      "pci-ecam");
	if (err)
		goto err_pio;
	*out = bus;
	return 0;

err_pio:
	io_bus_unregister(pio, PORT_PCI_CONFIG_ADDR);
err_bridge:
	pthread_mutex_destroy(&bus->bridge.lock);
	pthread_mutex_destroy(&bus->lock);
err_free:
	free(bus);
	return err;
}

/* Devices still on the bus belong to their models, which may already have
 * freed them (pci_bus_remove_device is how they leave): only the bus's own
 * registrations and the bridge are undone here. */
void pci_bus_destroy(struct pci_bus *bus)
{
	if (!bus)
		return;
	io_bus_unregister(bus->mmio, LAYOUT_PCI_ECAM_BASE);
	io_bus_unregister(bus->pio, PORT_PCI_CONFIG_ADDR);
	pthread_mutex_destroy(&bus->bridge.lock);
	pthread_mutex_destroy(&bus->lock);
	free(bus);
}

static int place_bars(struct pci_bus *bus, struct pci_device *dev, uint16_t *cmd)
{
	uint64_t mmio_next = bus->mmio_next;
	uint32_t io_next = bus->io_next;

	for (unsigned n = 0; n < PCI_NUM_BARS; n++) {
		struct pci_bar *bar = &dev->bars[n];
		uint64_t addr;

		if (bar->kind == PCI_BAR_IO) {
			addr = ALIGN_UP((uint64_t)io_next, bar->size);
			if (addr + bar->size > IO_BAR_END)
				return -ENOSPC;
			io_next = (uint32_t)(addr + bar->size);
			*cmd |= CMD_IO;
		} else if (bar->kind == PCI_BAR_MMIO32 || bar->kind == PCI_BAR_MMIO64) {
			addr = ALIGN_UP(mmio_next, bar->size);
			if (addr + bar->size > LAYOUT_PCI_MMIO_BASE + LAYOUT_PCI_MMIO_SIZE)
				return -ENOSPC;
			mmio_next = addr + bar->size;
			*cmd |= CMD_MEM;
		} else {
			continue;
		}
		/* Keep the type bits, put the address above them. */
		wr32(dev->config + PCI_BAR0 + 4 * n,
		     (rd32(dev->config + PCI_BAR0 + 4 * n) & (bar->kind == PCI_BAR_IO ? 0x3u : 0xfu)) |
			     (uint32_t)addr);
		if (bar->kind == PCI_BAR_MMIO64)
			wr32(dev->config + PCI_BAR0 + 4 * (n + 1), (uint32_t)(addr >> 32));
	}
	bus->mmio_next = mmio_next;
	bus->io_next = io_next;
	return 0;
}

int pci_bus_add_device(struct pci_bus *bus, struct pci_device *dev)
{
	unsigned slot;
	uint16_t cmd = 0;
	int err;

	pthread_mutex_lock(&bus->lock);
	slot = bus->want_slot;
	bus->want_slot = 0;
	if (!slot || slot >= PCI_MAX_DEVICES || bus->slots[slot])
		for (slot = 1; slot < PCI_MAX_DEVICES && bus->slots[slot]; slot++)
			;
	if (slot == PCI_MAX_DEVICES) {
		err = -ENOSPC;
		goto out;
	}
	pthread_mutex_lock(&dev->lock);
	err = place_bars(bus, dev, &cmd);
	if (!err) {
		cmd |= rd16(dev->config + PCI_COMMAND);
		memcpy(dev->config + PCI_COMMAND, &cmd, 2);
		memcpy(bus->home[slot].bars, dev->config + PCI_BAR0, sizeof(bus->home[slot].bars));
		memcpy(bus->home[slot].command, dev->config + PCI_COMMAND, 2);
		dev->slot = (uint8_t)slot;
		dev->bus = bus;
		bars_update(bus, dev);
		bus->slots[slot] = dev;
	}
	pthread_mutex_unlock(&dev->lock);
out:
	pthread_mutex_unlock(&bus->lock);
	return err;
}

void pci_bus_want_slot(struct pci_bus *bus, unsigned slot)
{
	pthread_mutex_lock(&bus->lock);
	bus->want_slot = slot;
	pthread_mutex_unlock(&bus->lock);
}

uint32_t pci_bus_used_slots(struct pci_bus *bus)
{
	uint32_t used = 0;

	pthread_mutex_lock(&bus->lock);
	for (unsigned slot = 0; slot < PCI_MAX_DEVICES; slot++)
		if (bus->slots[slot])
			used |= 1u << slot;
	pthread_mutex_unlock(&bus->lock);
	return used;
}

int pci_bus_slot_info(struct pci_bus *bus, unsigned slot, const char **name, uint16_t *vendor,
		      uint16_t *device)
{
	struct pci_device *dev;
	int ret = -ENOENT;

	pthread_mutex_lock(&bus->lock);
	dev = slot < PCI_MAX_DEVICES ? bus->slots[slot] : NULL;
	if (dev) {
		*name = dev->name;
		*vendor = rd16(dev->config + PCI_VENDOR_ID);
		*device = rd16(dev->config + PCI_VENDOR_ID + 2);
		ret = 0;
	}
	pthread_mutex_unlock(&bus->lock);
	return ret;
}

void pci_bus_remove_device(struct pci_bus *bus, struct pci_device *dev)
{
	pthread_mutex_lock(&bus->lock);
	if (dev->slot > 0 && dev->slot < PCI_MAX_DEVICES && bus->slots[dev->slot] == dev)
		bus->slots[dev->slot] = NULL;
	pthread_mutex_lock(&dev->lock);
	bars_unmap(bus, dev);
	pthread_mutex_unlock(&dev->lock);
	pthread_mutex_unlock(&bus->lock);
	pci_msix_free(dev);
	dev->bus = NULL;
}

void pci_bus_reset(struct pci_bus *bus)
{
	pthread_mutex_lock(&bus->lock);
	bus->config_addr = 0;
	bus->cf9 = 0;
	for (unsigned slot = 1; slot < PCI_MAX_DEVICES; slot++) {
		struct pci_device *dev = bus->slots[slot];

		if (!dev)
			continue;
		pthread_mutex_lock(&dev->lock);
		memcpy(dev->config + PCI_BAR0, bus->home[slot].bars, sizeof(bus->home[slot].bars));
		memcpy(dev->config + PCI_COMMAND, bus->home[slot].command, 2);
		dev->config[PCI_CACHE_LINE] = 0;
		dev->config[PCI_LATENCY] = 0;
		dev->config[PCI_INT_LINE] = 0;
		if (dev->msix)
			pci_msix_reset(dev);
		bars_update(bus, dev);
		pthread_mutex_unlock(&dev->lock);
	}
	pthread_mutex_unlock(&bus->lock);
}

/* ---- saved state ---- */

#define PCI_STATE_VERSION 1
/* The bus itself: record instance PCI_MAX_DEVICES, past every slot. */
#define BUS_INSTANCE PCI_MAX_DEVICES

void pci_bus_save(struct pci_bus *bus, struct state_writer *w)
{
	pthread_mutex_lock(&bus->lock);
	state_begin(w, STATE_SECTION_PCI, BUS_INSTANCE, PCI_STATE_VERSION);
	state_put_u32(w, bus->config_addr);
	state_put_u8(w, bus->cf9);
	state_end(w);
	for (unsigned slot = 1; slot < PCI_MAX_DEVICES; slot++) {
		struct pci_device *dev = bus->slots[slot];

		if (!dev)
			continue;
		pthread_mutex_lock(&dev->lock);
		state_begin(w, STATE_SECTION_PCI, slot, PCI_STATE_VERSION);
		state_put_bytes(w, dev->config, PCI_CONFIG_SIZE);
		state_put_u8(w, dev->msix != NULL);
		if (dev->msix)
			pci_msix_save(dev, w);
		state_end(w);
		pthread_mutex_unlock(&dev->lock);
	}
	pthread_mutex_unlock(&bus->lock);
}

/* The bytes that say which device this is: a record whose identity
 * differs belongs to another device. */
static bool same_identity(const uint8_t *a, const uint8_t *b)
{
	return !memcmp(a + PCI_VENDOR_ID, b + PCI_VENDOR_ID, 4) &&
	       !memcmp(a + PCI_REVISION, b + PCI_REVISION, 4) &&
	       !memcmp(a + PCI_SUBSYS_VENDOR, b + PCI_SUBSYS_VENDOR, 4) &&
	       a[PCI_HEADER_TYPE] == b[PCI_HEADER_TYPE];
}

static int restore_device(struct pci_bus *bus, struct pci_device *dev, struct state_reader *r,
			  char *err, size_t errlen)
{
	uint8_t config[PCI_CONFIG_SIZE];
	uint8_t has_msix;
	int ret = 0;

	state_get_bytes(r, config, sizeof(config));
	has_msix = state_get_u8(r);
	if (r->bad || r->version != PCI_STATE_VERSION || has_msix != (dev->msix != NULL)) {
		snprintf(err, errlen, "PCI slot %u (%s): the record does not fit the device",
			 dev->slot, dev->name);
		return -EINVAL;
	}
	if (!same_identity(config, dev->config)) {
		snprintf(err, errlen, "PCI slot %u: the state is of another device than %s",
			 dev->slot, dev->name);
		return -EINVAL;
	}
	pthread_mutex_lock(&dev->lock);
	/* Only what the guest could have written; read-only bytes stay as
	 * this build made them. */
	for (unsigned i = 0; i < PCI_CONFIG_SIZE; i++)
		dev->config[i] = (uint8_t)((dev->config[i] & ~dev->wmask[i]) |
					   (config[i] & dev->wmask[i]));
	if (dev->msix)
		ret = pci_msix_restore(dev, r);
	if (!ret && state_reader_done(r))
		ret = -EINVAL;
	if (!ret)
		bars_update(bus, dev);
	pthread_mutex_unlock(&dev->lock);
	if (ret)
		snprintf(err, errlen, "PCI slot %u (%s): the MSI-X state does not fit the device",
			 dev->slot, dev->name);
	return ret;
}

int pci_bus_restore(struct pci_bus *bus, const struct state_file *f, char *err, size_t errlen)
{
	struct state_reader r;
	int ret = 0;

	if (state_file_find(f, STATE_SECTION_PCI, BUS_INSTANCE, &r)) {
		snprintf(err, errlen, "the state has no PCI bus record");
		return -ENOENT;
	}
	pthread_mutex_lock(&bus->lock);
	bus->config_addr = state_get_u32(&r);
	bus->cf9 = state_get_u8(&r) & ~CF9_RESET_CPU;
	if (state_reader_done(&r)) {
		snprintf(err, errlen, "the PCI bus record does not hold together");
		ret = -EINVAL;
	}
	for (unsigned slot = 1; slot < PCI_MAX_DEVICES && !ret; slot++) {
		struct pci_device *dev = bus->slots[slot];
		bool saved = state_file_find(f, STATE_SECTION_PCI, slot, &r) == 0;

		if (!dev && !saved)
			continue;
		if (!dev || !saved) {
			snprintf(err, errlen, "PCI slot %u: %s", slot,
				 dev ? "the state has no record for this VM's device there"
				     : "the state has a device this VM does not have");
			ret = -ENOENT;
			break;
		}
		ret = restore_device(bus, dev, &r, err, errlen);
	}
	pthread_mutex_unlock(&bus->lock);
	return ret;
}
