/* The shared part of the virtio fuzz targets (fuzz_virtio.h): the worker
 * stand-in and the operation interpreter.
 *
 * Operations, one opcode byte (low nibble) each, then its arguments:
 *   0 BAR write    where (see bar_off), len 1/2/4/8, value
 *   1 BAR read     where, len
 *   2 config write off (2 bytes, < 4096), len 1/2/4, value
 *   3 config read  off, len
 *   4 RAM write    gpa (2 bytes; bit 0 of the flags byte: high region), n, bytes
 *   5 descriptor   queue, index, addr/len/flags/next (small or raw forms)
 *   6 avail        queue, head: appends head to the avail ring, bumps idx
 *   7 kick         queue: a notify-area write, then the loop runs
 *   8 loop         runs the event loop (backend completions, sockets)
 *   9 driver init  features: reset, negotiate, set up every queue, DRIVER_OK
 *  10 device op    the target's own (fuzz_virtio_target.op)
 *  11 VMM          pause, resume or reset the device as the worker would,
 *                  or unplug it (destroyed; the rest of the input is unread)
 *  12 table desc   a descriptor at any low gpa (indirect tables)
 *  13 avail raw    queue, flags, idx, used_event written as the driver likes
 *  14 queue raw    queue select, size, ring addresses, enable through common cfg
 *  15 ISR/status   reads ISR and status, as a driver's interrupt handler */
#include "fuzz_virtio.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "vmm/irq_stats.h"
#include "vmm/state/record.h"
#include "vmm/virtio/virtio.h"

#define BAR_COMMON 0x0000
#define BAR_ISR 0x1000
#define BAR_DEVCFG 0x2000
#define BAR_NOTIFY 0x3000
#define BAR_SIZE 0x8000
#define RING_BASE 0x0100u  /* queue q's rings at RING_BASE + q * RING_STRIDE */
#define RING_STRIDE 0x0400u
#define MAX_OPS 512

/* ---- vm.h ---------------------------------------------------------------- */

struct guest_mem *vm_guest_mem(struct vm *vm)
{
	return &vm->mem;
}

struct evloop *vm_evloop(struct vm *vm)
{
	return vm->loop;
}

struct pci_bus *vm_pci_bus(struct vm *vm)
{
	return (struct pci_bus *)vm;
}

unsigned vm_vcpu_count(const struct vm *vm)
{
	return vm->ncpus;
}

void vm_count_msi(struct vm *vm)
{
}

int vm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, bool mmio, int eventfd, bool assign)
{
	return -ENOSYS;
}

/* ---- bus/pci.h (the bus's semantics, no bus) ------------------------------ */

struct pci_msix {
	unsigned nvec;
	unsigned delivered[VIRTIO_MAX_QUEUES + 1];
};

void pci_device_init(struct pci_device *dev, const char *name, uint16_t vendor,
		     uint16_t device, uint32_t class_code, uint16_t subsys_vendor,
		     uint16_t subsys_id)
{
	void *opaque = dev->opaque;

	memset(dev->config, 0, sizeof(dev->config));
	memset(dev->wmask, 0, sizeof(dev->wmask));
	dev->name = name;
	memcpy(dev->config, &vendor, 2);
	memcpy(dev->config + 2, &device, 2);
	dev->config[9] = (uint8_t)class_code;
	dev->config[10] = (uint8_t)(class_code >> 8);
	dev->config[11] = (uint8_t)(class_code >> 16);
	memcpy(dev->config + 0x2c, &subsys_vendor, 2);
	memcpy(dev->config + 0x2e, &subsys_id, 2);
	dev->config[6] = 0x10;
	dev->last_cap = 0;
	dev->opaque = opaque;
	pthread_mutex_init(&dev->lock, NULL);
}

int pci_device_set_bar(struct pci_device *dev, unsigned n, enum pci_bar_kind kind,
		       uint64_t size, const struct io_ops *ops, void *opaque)
{
	if (n >= PCI_NUM_BARS)
		return -EINVAL;
	dev->bars[n] = (struct pci_bar){ .kind = kind, .size = size, .ops = ops, .opaque = opaque };
	return 0;
}

int pci_device_add_cap(struct pci_device *dev, const void *cap, unsigned len)
{
	unsigned off = dev->last_cap ? ((dev->last_cap + dev->config[dev->last_cap + 2] + 3) & ~3u)
				     : 0x40;

	if (off + len > 256)
		return -ENOSPC;
	memcpy(dev->config + off, cap, len);
	dev->config[off + 1] = 0;
	if (dev->last_cap)
		dev->config[dev->last_cap + 1] = (uint8_t)off;
	else
		dev->config[0x34] = (uint8_t)off;
	if (dev->config[off] == 0x11)
		dev->config[off + 2] = 12;
	dev->last_cap = (uint8_t)off;
	return (int)off;
}

int pci_bus_add_device(struct pci_bus *bus, struct pci_device *dev)
{
	struct vm *vm = (struct vm *)bus;

	if (vm->dev)
		return -ENOSPC;
	dev->slot = 1;
	dev->bars[0].addr = 0xc0000000ULL;
	dev->bars[0].mapped = true;
	vm->dev = dev;
	return 0;
}

void pci_bus_remove_device(struct pci_bus *bus, struct pci_device *dev)
{
	struct vm *vm = (struct vm *)bus;

	if (vm->dev == dev) {
		free(dev->msix); /* the bus owns it, as bus/msix.c's does */
		dev->msix = NULL;
		vm->dev = NULL;
	}
}

int pci_msix_init(struct pci_device *dev, struct vm *vm, unsigned bar, unsigned nvec,
		  uint32_t table_off, uint32_t pba_off)
{
	uint8_t cap[12] = { 0x11 };

	if (nvec > VIRTIO_MAX_QUEUES + 1)
		return -EINVAL;
	dev->msix = calloc(1, sizeof(*dev->msix));
	if (!dev->msix)
		return -ENOMEM;
	dev->msix->nvec = nvec;
	return pci_device_add_cap(dev, cap, sizeof(cap)) < 0 ? -ENOSPC : 0;
}

bool pci_msix_access(struct pci_device *dev, uint64_t bar_off, void *data, unsigned len,
		     bool is_write)
{
	/* The table and PBA (0x4000..0x8000) are bus/msix.c's: not ours. */
	if (bar_off >= 0x4000 && bar_off < BAR_SIZE) {
		if (!is_write)
			memset(data, 0, len);
		return true;
	}
	return false;
}

int pci_msix_notify(struct pci_device *dev, unsigned vec)
{
	/* The transport must only ask for vectors it declared. */
	if (!dev->msix || vec >= dev->msix->nvec)
		abort();
	dev->msix->delivered[vec]++;
	return 0;
}

int pci_msix_vector_eventfd(struct pci_device *dev, unsigned vec)
{
	return -1;
}

bool pci_msix_enabled(const struct pci_device *dev)
{
	return dev->msix != NULL;
}

/* ---- the driver ----------------------------------------------------------- */

static uint64_t bar_read(struct vm *vm, uint64_t off, unsigned len)
{
	struct pci_bar *bar = &vm->dev->bars[0];
	uint64_t v = 0;

	bar->ops->read(bar->opaque, off, &v, len);
	return v;
}

static void bar_write(struct vm *vm, uint64_t off, uint64_t v, unsigned len)
{
	struct pci_bar *bar = &vm->dev->bars[0];

	bar->ops->write(bar->opaque, off, &v, len);
}

/* Config cycles as bus/pci.c makes them: the read hook, then config[];
 * writes through wmask, then config_written. */
static void config_read(struct vm *vm, unsigned off, unsigned len)
{
	struct pci_device *d = vm->dev;
	uint32_t v = 0;

	if (d->config_before_read)
		d->config_before_read(d, off, len);
	pthread_mutex_lock(&d->lock);
	memcpy(&v, d->config + off, len);
	pthread_mutex_unlock(&d->lock);
}

static void config_write(struct vm *vm, unsigned off, uint32_t v, unsigned len)
{
	struct pci_device *d = vm->dev;

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < len; i++) {
		uint8_t m = d->wmask[off + i], b = (uint8_t)(v >> (8 * i));

		d->config[off + i] = (uint8_t)((d->config[off + i] & ~m) | (b & m));
	}
	pthread_mutex_unlock(&d->lock);
	if (d->config_written)
		d->config_written(d, off, len);
}

/* Where a BAR access goes: mostly where the registers are. */
static uint64_t bar_off(struct fuzz_in *in, unsigned sel)
{
	switch (sel & 7) {
	case 0:
	case 1:
		return BAR_COMMON + fin_u8(in) % 0x40;
	case 2:
		return BAR_ISR + fin_u8(in) % 8;
	case 3:
		return BAR_DEVCFG + fin_u8(in) % 0x48;
	case 4:
		return BAR_NOTIFY + fin_u8(in);
	default:
		return fin_u16(in) % BAR_SIZE;
	}
}

static void *gpa_ptr(struct vm *vm, uint64_t gpa, size_t len)
{
	return guest_mem_ptr(&vm->mem, gpa, len);
}

static uint64_t ring_base(unsigned q)
{
	return RING_BASE + (uint64_t)q * RING_STRIDE;
}

/* Writes a descriptor at gpa from the input: small addresses and lengths
 * (so chains point into RAM) or raw ones (anything at all). */
static void put_desc(struct vm *vm, uint64_t gpa, struct fuzz_in *in)
{
	uint8_t form = fin_u8(in);
	struct virtq_desc d;
	uint8_t *p;

	d.addr = (form & 1) ? fin_take(in, 8) : fin_u16(in);
	if (form & 2)
		d.addr += FV_HIGH_GPA;
	d.len = (form & 4) ? (uint32_t)fin_take(in, 4) : fin_u16(in) & 0xfff;
	d.flags = (form & 8) ? fin_u16(in) : (uint16_t)(fin_u8(in) & 7);
	d.next = (form & 16) ? fin_u16(in) : (uint16_t)(fin_u8(in) % FV_QSIZE);
	p = gpa_ptr(vm, gpa, sizeof(d));
	if (p)
		memcpy(p, &d, sizeof(d));
}

static void avail_push(struct vm *vm, unsigned q, uint16_t head)
{
	uint8_t *a = gpa_ptr(vm, ring_base(q) + 0x100, 4 + 2 * FV_QSIZE + 2);
	uint16_t idx;

	memcpy(&idx, a + 2, 2);
	memcpy(a + 4 + 2 * (idx % FV_QSIZE), &head, 2);
	idx++;
	memcpy(a + 2, &idx, 2);
}

static void cc_write(struct vm *vm, unsigned off, uint64_t v, unsigned len)
{
	bar_write(vm, BAR_COMMON + off, v, len);
}

/* What a well-behaved driver does (virtio 1.x 3.1.1), with the features
 * the input offers; queue q's rings at ring_base(q). */
static void driver_init(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in)
{
	uint64_t features = fin_take(in, 4) | (fin_u8(in) & 0x3fULL) << 32;

	cc_write(vm, 20, 0, 1);
	cc_write(vm, 20, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
	cc_write(vm, 8, 0, 4);
	cc_write(vm, 12, features & 0xffffffff, 4);
	cc_write(vm, 8, 1, 4);
	cc_write(vm, 12, features >> 32, 4);
	cc_write(vm, 20, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK, 1);
	cc_write(vm, 16, 0, 2); /* config changes on vector 0 */
	for (unsigned q = 0; q < vdev->nqueues && ring_base(q) + 0x300 <= FV_LOW_SIZE; q++) {
		cc_write(vm, 22, q, 2);
		cc_write(vm, 24, FV_QSIZE, 2);
		cc_write(vm, 26, q + 1, 2);
		cc_write(vm, 32, ring_base(q), 8);
		cc_write(vm, 40, ring_base(q) + 0x100, 8);
		cc_write(vm, 48, ring_base(q) + 0x200, 8);
		cc_write(vm, 28, 1, 2);
	}
	cc_write(vm, 20, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
			 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK, 1);
}

static void kick(struct vm *vm, struct virtio_dev *vdev, unsigned q)
{
	bar_write(vm, BAR_NOTIFY + 4 * q, q, 2);
	fuzz_loop_run(vm->loop, 8);
}

/* false: the device is gone (unplugged). */
static bool one_op(struct vm *vm, struct virtio_dev *vdev, struct fuzz_in *in,
		   const struct fuzz_virtio_target *t)
{
	uint8_t op = fin_u8(in), sel;
	unsigned len, off, q;
	uint64_t gpa, v;

	switch (op & 15) {
	case 0:
		sel = fin_u8(in);
		off = (unsigned)bar_off(in, sel);
		len = 1u << ((sel >> 4) & 3);
		v = fin_take(in, len);
		bar_write(vm, off, v, len);
		break;
	case 1:
		sel = fin_u8(in);
		off = (unsigned)bar_off(in, sel);
		bar_read(vm, off, 1u << ((sel >> 4) & 3));
		break;
	case 2:
	case 3:
		sel = fin_u8(in);
		len = (1u << (sel & 3)) > 4 ? 4 : 1u << (sel & 3);
		off = (sel & 4) ? fin_u16(in) % PCI_CONFIG_SIZE : fin_u8(in);
		off = off + len > PCI_CONFIG_SIZE ? PCI_CONFIG_SIZE - len : off & ~(len - 1);
		if ((op & 15) == 2)
			config_write(vm, off, (uint32_t)fin_take(in, len), len);
		else
			config_read(vm, off, len);
		break;
	case 4: {
		uint8_t *p;

		sel = fin_u8(in);
		gpa = fin_u16(in) + ((sel & 1) ? FV_HIGH_GPA : 0);
		len = fin_u8(in);
		len = len > in->n ? (unsigned)in->n : len;
		p = gpa_ptr(vm, gpa, len);
		if (p)
			memcpy(p, in->p, len);
		in->p += len;
		in->n -= len;
		break;
	}
	case 5:
		q = fin_u8(in) % vdev->nqueues;
		put_desc(vm, ring_base(q) + 16 * (fin_u8(in) % FV_QSIZE), in);
		break;
	case 6:
		q = fin_u8(in) % vdev->nqueues;
		avail_push(vm, q, fin_u8(in) % (FV_QSIZE + 1)); /* FV_QSIZE: out of range */
		break;
	case 7:
		kick(vm, vdev, fin_u8(in) % (vdev->nqueues + 1)); /* +1: past the last queue */
		break;
	case 8:
		fuzz_loop_run(vm->loop, 16);
		break;
	case 9:
		driver_init(vm, vdev, in);
		break;
	case 10:
		if (t->op)
			t->op(vm, vdev, in);
		break;
	case 11:
		sel = fin_u8(in) % 4;
		if (sel == 0)
			virtio_dev_pause(vdev);
		else if (sel == 1)
			virtio_dev_resume(vdev);
		else if (sel == 2)
			virtio_dev_reset(vdev);
		else
			return false;
		break;
	case 12:
		put_desc(vm, fin_u16(in) & ~0xfULL, in);
		break;
	case 13: {
		uint8_t *a;

		q = fin_u8(in) % vdev->nqueues;
		a = gpa_ptr(vm, ring_base(q) + 0x100, 4 + 2 * FV_QSIZE + 2);
		v = fin_take(in, 6);
		memcpy(a, &v, 4);			/* flags, idx */
		memcpy(a + 4 + 2 * FV_QSIZE, (uint8_t *)&v + 4, 2); /* used_event */
		break;
	}
	case 14:
		sel = fin_u8(in);
		cc_write(vm, 22, fin_u8(in), 2);
		if (sel & 1)
			cc_write(vm, 24, fin_u16(in), 2);
		if (sel & 2)
			cc_write(vm, 32, fin_take(in, 8), 8);
		if (sel & 4)
			cc_write(vm, 40, fin_take(in, 8), 8);
		if (sel & 8)
			cc_write(vm, 48, fin_take(in, 8), 8);
		if (sel & 16)
			cc_write(vm, 28, fin_u16(in), 2);
		break;
	default:
		bar_read(vm, BAR_ISR, 1);
		bar_read(vm, BAR_COMMON + 20, 1);
		break;
	}
	return true;
}

/* ---- the devices, kept between inputs ---------------------------------- */

/* What a device is just after it was made, to hold a reset one to. */
struct dev_snap {
	uint8_t config[PCI_CONFIG_SIZE];
	uint64_t guest_features;
	uint32_t device_feature_select, driver_feature_select;
	uint8_t status, config_generation, isr;
	uint16_t msix_config, queue_select;
	uint64_t irq_pending;
	bool config_irq_pending, running, broken, paused;
	struct virtio_queue queues[VIRTIO_MAX_QUEUES];
	struct fuzz_loop_snap loop;
};

struct slot {
	struct vm vm;
	struct virtio_dev *vdev; /* NULL: none made (or it was destroyed) */
	struct dev_snap snap;
};

static struct slot slots[FV_MAX_KEYS];
static unsigned long nruns, nmade; /* FUZZ_STATS=1: printed at exit */

static void print_stats(void)
{
	fprintf(stderr, "fuzz: %lu inputs, %lu devices made\n", nruns, nmade);
}

static void snapshot(struct slot *s)
{
	struct virtio_dev *v = s->vdev;
	struct dev_snap *d = &s->snap;

	memset(d, 0, sizeof(*d));
	memcpy(d->config, v->pci.config, sizeof(d->config));
	d->guest_features = v->guest_features;
	d->device_feature_select = v->device_feature_select;
	d->driver_feature_select = v->driver_feature_select;
	d->status = v->status;
	d->config_generation = v->config_generation;
	d->isr = v->isr;
	d->msix_config = v->msix_config;
	d->queue_select = v->queue_select;
	d->irq_pending = v->irq_pending;
	d->config_irq_pending = v->config_irq_pending;
	d->running = v->running;
	d->broken = v->broken;
	d->paused = v->paused;
	memcpy(d->queues, v->queues, v->nqueues * sizeof(v->queues[0]));
	fuzz_loop_snapshot(s->vm.loop, &d->loop);
}

/* After the device's reset: what a reset must have put back is checked
 * (a difference is a bug in the reset path); what only the input's own
 * operations changed outside the device (config space, the generation
 * counter the driver reads) is put back here. */
static void check_reset(struct slot *s)
{
	struct virtio_dev *v = s->vdev;
	struct dev_snap *d = &s->snap;
	const char *what = NULL;

	if (v->guest_features != d->guest_features)
		what = "driver features";
	else if (v->device_feature_select != d->device_feature_select ||
		 v->driver_feature_select != d->driver_feature_select)
		what = "feature selects";
	else if (v->status != d->status || v->isr != d->isr)
		what = "status or ISR";
	else if (v->msix_config != d->msix_config || v->queue_select != d->queue_select)
		what = "config vector or queue select";
	else if (v->irq_pending != d->irq_pending || v->config_irq_pending != d->config_irq_pending)
		what = "pending interrupts";
	else if (v->running != d->running || v->broken != d->broken || v->paused != d->paused)
		what = "running, broken or paused";
	for (unsigned i = 0; !what && i < v->nqueues; i++)
		if (memcmp(&v->queues[i], &d->queues[i], sizeof(d->queues[i])))
			what = "a queue";
	if (what) {
		fprintf(stderr, "fuzz: a reset device differs from a new one: %s\n", what);
		abort();
	}
	pthread_mutex_lock(&v->pci.lock);
	memcpy(v->pci.config, d->config, sizeof(d->config));
	pthread_mutex_unlock(&v->pci.lock);
	v->config_generation = d->config_generation;
	if (v->pci.msix)
		memset(v->pci.msix->delivered, 0, sizeof(v->pci.msix->delivered));
}

static struct vm *vm_get(unsigned key)
{
	struct vm *vm = &slots[key].vm;

	if (!vm->low) {
		signal(SIGPIPE, SIG_IGN);
		vm->low = aligned_alloc(4096, FV_LOW_SIZE);
		vm->high = aligned_alloc(4096, FV_HIGH_SIZE);
		if (!vm->low || !vm->high || evloop_create(&vm->loop))
			abort();
		vm->mem.memfd = -1;
		vm->mem.nregions = 2;
		vm->mem.total = FV_LOW_SIZE + FV_HIGH_SIZE;
		vm->mem.regions[0] = (struct guest_mem_region){ .gpa = 0, .size = FV_LOW_SIZE,
								.hva = vm->low };
		vm->mem.regions[1] = (struct guest_mem_region){ .gpa = FV_HIGH_GPA,
								.size = FV_HIGH_SIZE,
								.hva = vm->high };
	}
	memset(vm->low, 0, FV_LOW_SIZE);
	memset(vm->high, 0, FV_HIGH_SIZE);
	vm->ncpus = 1;
	return vm;
}

/* What the worker does at exit (the loop has stopped) or at unplug. */
static void destroy(struct slot *s, unsigned key, const struct fuzz_virtio_target *t)
{
	virtio_dev_destroy(s->vdev);
	s->vdev = NULL;
	if (fuzz_loop_count(s->vm.loop)) {
		fprintf(stderr, "fuzz: %u fds still watched after destroy\n",
			fuzz_loop_count(s->vm.loop));
		abort();
	}
	if (t->cleanup)
		t->cleanup(key);
}

/* FUZZ_DIGEST=1: after each input, a hash of what the guest can see
 * (its RAM, the interrupts it got), to check that an input does the same
 * alone as after others. */
static void print_digest(struct vm *vm)
{
	static int on = -1;
	uint64_t h = 0xcbf29ce484222325ULL;

	if (on < 0)
		on = getenv("FUZZ_DIGEST") != NULL;
	if (!on)
		return;
	for (size_t i = 0; i < FV_LOW_SIZE; i++)
		h = (h ^ vm->low[i]) * 0x100000001b3ULL;
	for (size_t i = 0; i < FV_HIGH_SIZE; i++)
		h = (h ^ vm->high[i]) * 0x100000001b3ULL;
	if (vm->dev && vm->dev->msix)
		for (unsigned i = 0; i < vm->dev->msix->nvec; i++)
			h = (h ^ vm->dev->msix->delivered[i]) * 0x100000001b3ULL;
	fprintf(stderr, "fuzz digest %016llx\n", (unsigned long long)h);
}

int fuzz_virtio_save_restore(struct virtio_dev *vdev,
			     void (*save)(struct virtio_dev *, struct state_writer *),
			     int (*restore)(struct virtio_dev *, const struct state_file *, char *,
					    size_t),
			     char *err, size_t errlen)
{
	struct state_writer w;
	struct state_file f;
	const void *data;
	size_t len;
	int ret = 1;

	state_writer_init(&w, 1);
	save(vdev, &w);
	if (state_writer_finish(&w, &data, &len) == 0 &&
	    state_file_parse(&f, data, len, 1, err, errlen) == 0)
		ret = restore(vdev, &f, err, errlen);
	state_writer_free(&w);
	return ret;
}

int fuzz_virtio_run(const uint8_t *data, size_t size, const struct fuzz_virtio_target *t)
{
	struct fuzz_in in = { data, size };
	unsigned key = t->setup(&in) % FV_MAX_KEYS;
	struct slot *s = &slots[key];
	struct vm *vm = vm_get(key);
	bool kept = true;

	if (nruns++ == 0 && getenv("FUZZ_STATS"))
		atexit(print_stats);
	if (!s->vdev) {
		nmade++;
		if (t->create(vm, key, &s->vdev)) {
			s->vdev = NULL;
			if (t->cleanup)
				t->cleanup(key);
			return 0;
		}
		if (!vm->dev) {
			destroy(s, key, t);
			return 0;
		}
		snapshot(s);
	}
	if (t->begin)
		t->begin(vm, s->vdev, key);
	for (unsigned i = 0; i < MAX_OPS && in.n && kept; i++)
		kept = one_op(vm, s->vdev, &in, t);
	print_digest(vm);
	if (kept && t->end)
		kept = t->end(vm, s->vdev, key);
	if (!kept) {
		destroy(s, key, t);
		return 0;
	}
	/* The reset a driver's status write of 0 makes (the device's own
	 * path), then a resume (a reset does not unpause: the VMM does). */
	virtio_dev_reset(s->vdev);
	virtio_dev_resume(s->vdev);
	if (t->after_reset)
		t->after_reset(vm, s->vdev, key);
	for (unsigned i = 0; i < s->vdev->nqueues; i++) {
		uint64_t n;

		if (read(s->vdev->queues[i].kick_fd, &n, sizeof(n)) < 0)
			n = 0;
	}
	check_reset(s);
	/* A device that watches other fds (or the same for other events)
	 * than a new one would behave differently: make it again. */
	if (!fuzz_loop_same(vm->loop, &s->snap.loop))
		destroy(s, key, t);
	return 0;
}
