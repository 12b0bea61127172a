/* The virtio 1.x modern PCI transport and split virtqueues, from ring 3.
 * Every access to the device's BARs is an MMIO exit (~29 us on nested
 * hosts), so set-up is done once and the data path only touches guest RAM
 * plus one notify write per batch. */
#include "virtio.h"

/* struct virtio_pci_common_cfg offsets */
#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_NUM_QUEUES 0x12
#define CC_STATUS 0x14
#define CC_Q_SELECT 0x16
#define CC_Q_SIZE 0x18
#define CC_Q_MSIX 0x1a
#define CC_Q_ENABLE 0x1c
#define CC_Q_NOTIFY_OFF 0x1e
#define CC_Q_DESC 0x20
#define CC_Q_AVAIL 0x28
#define CC_Q_USED 0x30

#define CAP_VENDOR 0x09
#define CAP_MSIX 0x11
#define CC_MSIX_CONFIG 0x10
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

static uint8_t rd8(uint64_t a) { return *(volatile uint8_t *)(uintptr_t)a; }
static uint16_t rd16(uint64_t a) { return *(volatile uint16_t *)(uintptr_t)a; }
static void wr8(uint64_t a, uint8_t v) { *(volatile uint8_t *)(uintptr_t)a = v; }
static void wr16(uint64_t a, uint16_t v) { *(volatile uint16_t *)(uintptr_t)a = v; }

static uint64_t bar_address(struct guest *g, struct pci_addr a, unsigned bar)
{
	uint32_t lo = pci_read32(g, a, 0x10 + 4 * bar);
	uint64_t addr = lo & ~0xfULL;

	if (lo & 1)
		return 0; /* I/O BAR: not for modern capabilities */
	if (((lo >> 1) & 3) == 2 && bar < 5)
		addr |= (uint64_t)pci_read32(g, a, 0x14 + 4 * bar) << 32;
	return addr;
}

static int map_caps(struct virtio_dev *d)
{
	struct guest *g = d->g;
	uint8_t off = (uint8_t)(pci_read32(g, d->pci, 0x34) & 0xfc);

	for (int guard = 0; off && guard < 48; guard++) {
		uint32_t hdr = pci_read32(g, d->pci, off);
		unsigned cfg_type = hdr >> 24 & 0xff;

		if ((hdr & 0xff) == CAP_VENDOR && cfg_type >= CAP_COMMON && cfg_type <= CAP_DEVICE) {
			unsigned bar = pci_read32(g, d->pci, off + 4u) & 0xff;
			uint32_t offset = pci_read32(g, d->pci, off + 8u);
			uint32_t length = pci_read32(g, d->pci, off + 12u);
			uint64_t base = bar < 6 ? bar_address(g, d->pci, bar) : 0;

			if (!base)
				return -1;
			if (mm_map(g, base + offset, base + offset + length, true))
				return -1;
			switch (cfg_type) {
			case CAP_COMMON: d->common = base + offset; break;
			case CAP_NOTIFY:
				d->notify_base = base + offset;
				d->notify_mult = pci_read32(g, d->pci, off + 16u);
				break;
			case CAP_ISR: d->isr = base + offset; break;
			case CAP_DEVICE: d->device_cfg = base + offset; break;
			}
		}
		off = (uint8_t)((hdr >> 8) & 0xfc);
	}
	return d->common && d->notify_base ? 0 : -1;
}

uint8_t virtio_status(struct virtio_dev *d) { return rd8(d->common + CC_STATUS); }
uint8_t virtio_cfg8(struct virtio_dev *d, unsigned off) { return rd8(d->device_cfg + off); }
uint32_t virtio_cfg32(struct virtio_dev *d, unsigned off) { return mmio_read32(d->device_cfg + off); }

uint64_t virtio_cfg64(struct virtio_dev *d, unsigned off)
{
	return virtio_cfg32(d, off) | (uint64_t)virtio_cfg32(d, off + 4) << 32;
}

void virtio_reset(struct virtio_dev *d)
{
	wr8(d->common + CC_STATUS, 0);
	for (int i = 0; i < 100000 && virtio_status(d); i++)
		cpu_relax();
}

static void add_status(struct virtio_dev *d, uint8_t bits)
{
	wr8(d->common + CC_STATUS, (uint8_t)(virtio_status(d) | bits));
}

/* MSI-X table entry 0 -> VEC_WAKE on the BSP, function enabled. */
static bool msix_setup(struct virtio_dev *d)
{
	struct guest *g = d->g;
	uint8_t off = (uint8_t)(pci_read32(g, d->pci, 0x34) & 0xfc);

	for (int guard = 0; off && guard < 48; guard++) {
		uint32_t hdr = pci_read32(g, d->pci, off);

		if ((hdr & 0xff) == CAP_MSIX) {
			uint32_t tbl = pci_read32(g, d->pci, off + 4u);
			uint64_t base = bar_address(g, d->pci, tbl & 7);
			uint64_t entry = base + (tbl & ~7u);

			if (!base || mm_map(g, entry, entry + 16, true))
				return false;
			mmio_write32(entry, (uint32_t)LAPIC_BASE | g->bsp_apic_id << 12);
			mmio_write32(entry + 4, 0);
			mmio_write32(entry + 8, VEC_WAKE);
			mmio_write32(entry + 12, 0); /* unmasked */
			pci_write32(g, d->pci, off, (hdr & ~(1u << 30)) | 1u << 31);
			return true;
		}
		off = (uint8_t)((hdr >> 8) & 0xfc);
	}
	return false;
}

static int setup_queue(struct virtio_dev *d, uint16_t index)
{
	struct virtq *q = &d->vq[index];
	struct guest *g = d->g;
	uint16_t max;

	wr16(d->common + CC_Q_SELECT, index);
	max = rd16(d->common + CC_Q_SIZE);
	if (!max)
		return -1;
	memset(q, 0, sizeof(*q));
	q->index = index;
	q->size = max < VQ_MAX_SIZE ? max : VQ_MAX_SIZE;
	q->desc = mm_alloc(g, 16ULL * q->size, PAGE_SIZE);
	q->avail = mm_alloc(g, 6 + 2ULL * q->size, PAGE_SIZE);
	q->used = mm_alloc(g, 6 + 8ULL * q->size, PAGE_SIZE);
	if (!q->desc || !q->avail || !q->used)
		return -1;
	q->event_idx = d->features & VIRTIO_F_EVENT_IDX;
	q->indirect = d->features & VIRTIO_F_INDIRECT_DESC;
	if (q->indirect && !(q->ind = mm_alloc(g, 16ULL * VQ_IND_MAX * q->size, PAGE_SIZE)))
		return -1;
	for (uint16_t i = 0; i < q->size; i++)
		q->desc[i].next = (uint16_t)(i + 1);
	q->num_free = q->size;
	wr16(d->common + CC_Q_SIZE, q->size);
	wr16(d->common + CC_Q_MSIX, d->wake_queues >> index & 1 ? 0 : 0xffff);
	if (d->wake_queues >> index & 1 && rd16(d->common + CC_Q_MSIX) != 0)
		d->wake = false;
	mmio_write32(d->common + CC_Q_DESC, (uint32_t)(uintptr_t)q->desc);
	mmio_write32(d->common + CC_Q_DESC + 4, (uint32_t)((uint64_t)(uintptr_t)q->desc >> 32));
	mmio_write32(d->common + CC_Q_AVAIL, (uint32_t)(uintptr_t)q->avail);
	mmio_write32(d->common + CC_Q_AVAIL + 4, (uint32_t)((uint64_t)(uintptr_t)q->avail >> 32));
	mmio_write32(d->common + CC_Q_USED, (uint32_t)(uintptr_t)q->used);
	mmio_write32(d->common + CC_Q_USED + 4, (uint32_t)((uint64_t)(uintptr_t)q->used >> 32));
	q->notify_addr = d->notify_base + (uint64_t)rd16(d->common + CC_Q_NOTIFY_OFF) * d->notify_mult;
	wr16(d->common + CC_Q_ENABLE, 1);
	return 0;
}

static uint64_t read_features(struct virtio_dev *d)
{
	mmio_write32(d->common + CC_DFSELECT, 0);
	uint64_t lo = mmio_read32(d->common + CC_DF);
	mmio_write32(d->common + CC_DFSELECT, 1);
	return lo | (uint64_t)mmio_read32(d->common + CC_DF) << 32;
}

int virtio_open(struct guest *g, unsigned type, unsigned n, uint64_t wanted, unsigned nqueues,
		uint32_t wake_queues, struct virtio_dev *d)
{
	struct pci_addr addrs[VIRTIO_MAX_DEVS];
	unsigned types[VIRTIO_MAX_DEVS], found = pci_find_virtio(g, addrs, types, VIRTIO_MAX_DEVS);
	unsigned seen = 0;

	memset(d, 0, sizeof(*d));
	d->g = g;
	d->type = type;
	for (unsigned i = 0; i < found; i++) {
		if (types[i] != type)
			continue;
		if (seen++ == n) {
			d->pci = addrs[i];
			break;
		}
	}
	if (seen <= n) {
		out("virtio: no device of type %u number %u\n", type, n);
		return -1;
	}
	if (pci_assign_bars(g, d->pci) || map_caps(d)) {
		out("virtio: %02x:%02x.%x has no usable modern capabilities\n", d->pci.bus, d->pci.dev,
		    d->pci.fn);
		return -1;
	}
	virtio_reset(d);
	add_status(d, VIRTIO_STATUS_ACK);
	add_status(d, VIRTIO_STATUS_DRIVER);
	d->features = read_features(d) & (wanted | VIRTIO_F_VERSION_1 | g->opt_virtio_features);
	if (!(d->features & VIRTIO_F_VERSION_1)) {
		out("virtio: device does not offer VERSION_1\n");
		add_status(d, VIRTIO_STATUS_FAILED);
		return -1;
	}
	mmio_write32(d->common + CC_GFSELECT, 0);
	mmio_write32(d->common + CC_GF, (uint32_t)d->features);
	mmio_write32(d->common + CC_GFSELECT, 1);
	mmio_write32(d->common + CC_GF, (uint32_t)(d->features >> 32));
	add_status(d, VIRTIO_STATUS_FEATURES_OK);
	if (!(virtio_status(d) & VIRTIO_STATUS_FEATURES_OK)) {
		out("virtio: device refused our features\n");
		add_status(d, VIRTIO_STATUS_FAILED);
		return -1;
	}
	d->nqueues = nqueues;
	if (rd16(d->common + CC_NUM_QUEUES) < nqueues)
		return -1;
	if (wake_queues && msix_setup(d)) {
		d->wake = true;
		d->wake_queues = wake_queues;
		wr16(d->common + CC_MSIX_CONFIG, 0xffff);
	}
	for (unsigned i = 0; i < nqueues; i++) {
		if (setup_queue(d, (uint16_t)i)) {
			out("virtio: queue %u set-up failed\n", i);
			add_status(d, VIRTIO_STATUS_FAILED);
			return -1;
		}
	}
	return 0;
}

int virtio_add_queue(struct virtio_dev *d, uint16_t index)
{
	if (index >= VIRTIO_MAX_QUEUES || rd16(d->common + CC_NUM_QUEUES) <= index ||
	    setup_queue(d, index))
		return -1;
	if (index >= d->nqueues)
		d->nqueues = index + 1u;
	return 0;
}

void virtio_ready(struct virtio_dev *d)
{
	add_status(d, VIRTIO_STATUS_DRIVER_OK);
}

static void fill_desc(volatile struct vring_desc *d, const struct virtio_buf *b, bool more,
		      uint16_t next)
{
	d->addr = b->addr;
	d->len = b->len;
	d->flags = (uint16_t)((b->device_writes ? VRING_DESC_F_WRITE : 0) | (more ? VRING_DESC_F_NEXT : 0));
	d->next = next;
}

static void publish(struct virtq *q, uint16_t head)
{
	q->avail->ring[q->avail_idx % q->size] = head;
	q->avail_idx++;
}

int virtq_add(struct virtq *q, const struct virtio_buf *bufs, unsigned n)
{
	uint16_t head = q->free_head, i = head;

	if (!n || q->num_free < (q->indirect && n > 1 && n <= VQ_IND_MAX ? 1 : n))
		return -1;
	if (q->indirect && n > 1 && n <= VQ_IND_MAX) {
		volatile struct vring_desc *t = &q->ind[(unsigned)head * VQ_IND_MAX];
		for (unsigned k = 0; k < n; k++)
			fill_desc(&t[k], &bufs[k], k + 1 < n, (uint16_t)(k + 1));
		q->free_head = q->desc[head].next;
		q->desc[head].addr = (uint64_t)(uintptr_t)t;
		q->desc[head].len = 16 * n;
		q->desc[head].flags = VRING_DESC_F_INDIRECT;
		q->num_free--;
		publish(q, head);
		return head;
	}
	for (unsigned k = 0; k < n; k++) {
		uint16_t next = q->desc[i].next; /* the free list's link */
		fill_desc(&q->desc[i], &bufs[k], k + 1 < n, next);
		i = next;
	}
	q->free_head = i;
	q->num_free = (uint16_t)(q->num_free - n);
	publish(q, head);
	return head;
}

void virtq_kick(struct virtq *q)
{
	uint16_t old = q->published, now = q->avail_idx;
	bool notify;

	barrier();
	q->avail->idx = now;
	q->published = now;
	mb();
	if (q->event_idx) {
		uint16_t event = *(volatile uint16_t *)&q->used->ring[q->size];
		notify = (uint16_t)(now - event - 1) < (uint16_t)(now - old);
	} else {
		notify = !(q->used->flags & 1);
	}
	if (notify) {
		wr16(q->notify_addr, q->index);
		q->kicks++;
	}
}

int virtq_get(struct virtq *q, uint32_t *len)
{
	uint16_t head, i, n = 1;

	if (q->last_used == q->used->idx)
		return -1;
	barrier();
	head = (uint16_t)q->used->ring[q->last_used % q->size].id;
	if (len)
		*len = q->used->ring[q->last_used % q->size].len;
	q->last_used++;
	if (head >= q->size)
		return -1;
	for (i = head; (q->desc[i].flags & VRING_DESC_F_NEXT) && n < q->size; n++)
		i = q->desc[i].next;
	q->desc[i].next = q->free_head;
	q->free_head = head;
	q->num_free = (uint16_t)(q->num_free + n);
	if (q->event_idx) /* used_event: interrupt (MSI-X wake) on the next one */
		*(volatile uint16_t *)&q->avail->ring[q->size] = q->last_used;
	return head;
}
