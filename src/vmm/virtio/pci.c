/* The virtio 1.x modern PCI transport (virtio 1.x 4.1). One 32 KiB
 * memory BAR holds every structure:
 *
 *   0x0000 common configuration     0x3000 notify area (4 bytes per queue)
 *   0x1000 ISR status               0x4000 MSI-X table
 *   0x2000 device configuration     0x6000 MSI-X PBA
 *
 * Notifications arrive on one eventfd per queue, bound to the queue's
 * notify address with an ioeventfd so a kick costs no exit to user space;
 * an access that does reach us (no ioeventfd, odd width) is forwarded to
 * the same eventfd. The VM's event loop reads them and runs the device. */
#include "vmm/virtio/virtio.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/evloop.h"
#include "vmm/irq_stats.h"
#include "common/log.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

#define BAR_NUM 0
#define BAR_SIZE 0x8000
#define COMMON_OFF 0x0000
#define COMMON_LEN 0x38
#define ISR_OFF 0x1000
#define DEVCFG_OFF 0x2000
#define DEVCFG_MAX 0x1000
#define NOTIFY_OFF 0x3000
#define NOTIFY_MULT 4
#define MSIX_TABLE_OFF 0x4000
#define MSIX_PBA_OFF 0x6000

#define PCI_VENDOR_REDHAT_QUMRANET 0x1af4
#define PCI_DEVICE_VIRTIO_MODERN 0x1040
#define PCI_SUBSYS_ID_VIRTIO 0x1100 /* >= 0x40: a modern-only device */
#define PCI_REVISION_ID 0x08
#define PCI_CAP_ID_VNDR 0x09

enum {
	CAP_COMMON = 1,
	CAP_NOTIFY = 2,
	CAP_ISR = 3,
	CAP_DEVICE = 4,
	CAP_PCI_CFG = 5,
};

/* struct virtio_pci_cfg_cap (4.1.4.9): the cap, then pci_cfg_data. */
#define PCI_CFG_CAP_LEN 20
#define PCI_CFG_BAR 4	   /* cap.bar */
#define PCI_CFG_OFFSET 8   /* cap.offset */
#define PCI_CFG_LENGTH 12  /* cap.length */
#define PCI_CFG_DATA 16	   /* pci_cfg_data[4] */

/* struct virtio_pci_cap (4.1.4), plus notify_off_multiplier for notify. */
struct virtio_pci_cap {
	uint8_t cap_vndr, cap_next, cap_len, cfg_type;
	uint8_t bar, id, padding[2];
	uint32_t offset, length;
	uint32_t notify_off_multiplier;
};

/* struct virtio_pci_common_cfg field offsets (4.1.4.3). */
enum {
	CC_DFSELECT = 0,
	CC_DF = 4,
	CC_GFSELECT = 8,
	CC_GF = 12,
	CC_MSIX_CONFIG = 16,
	CC_NUM_QUEUES = 18,
	CC_STATUS = 20,
	CC_CFG_GENERATION = 21,
	CC_Q_SELECT = 22,
	CC_Q_SIZE = 24,
	CC_Q_MSIX_VECTOR = 26,
	CC_Q_ENABLE = 28,
	CC_Q_NOTIFY_OFF = 30,
	CC_Q_DESC = 32,
	CC_Q_DRIVER = 40,
	CC_Q_DEVICE = 48,
};

static unsigned nvectors(const struct virtio_dev *vdev)
{
	return vdev->nqueues + 1;
}

void virtio_dev_lock(struct virtio_dev *vdev)
{
	pthread_mutex_lock(&vdev->lock);
}

static void signal_vector(struct virtio_dev *vdev, uint16_t vec)
{
	uint64_t one = 1;
	int fd;

	if (vec == VIRTIO_MSI_NO_VECTOR || !pci_msix_enabled(&vdev->pci))
		return;
	vm_count_msi(vdev->vm);
	fd = pci_msix_vector_eventfd(&vdev->pci, vec);
	if (fd >= 0) {
		if (write(fd, &one, sizeof(one)) == sizeof(one))
			return;
	}
	pci_msix_notify(&vdev->pci, vec);
}

void virtio_dev_unlock(struct virtio_dev *vdev)
{
	uint16_t vecs[VIRTIO_MAX_QUEUES + 1];
	uint64_t pending = vdev->irq_pending;
	unsigned n = 0;

	for (unsigned i = 0; pending && i < vdev->nqueues; i++) {
		if (pending & (1ULL << i))
			vecs[n++] = vdev->queues[i].msix_vector;
	}
	if (vdev->config_irq_pending)
		vecs[n++] = vdev->msix_config;
	vdev->irq_pending = 0;
	vdev->config_irq_pending = false;
	pthread_mutex_unlock(&vdev->lock);
	for (unsigned i = 0; i < n; i++)
		signal_vector(vdev, vecs[i]);
}

bool virtio_dev_active(const struct virtio_dev *vdev)
{
	return vdev->running && !vdev->broken && !vdev->paused;
}

void virtio_dev_queue_done(struct virtio_dev *vdev, unsigned qidx)
{
	if (virtq_should_notify(&vdev->queues[qidx].vq)) {
		vdev->isr |= 1;
		vdev->irq_pending |= 1ULL << qidx;
	}
}

void virtio_dev_config_changed(struct virtio_dev *vdev)
{
	vdev->config_generation++;
	vdev->isr |= 2;
	if (vdev->status & VIRTIO_STATUS_DRIVER_OK)
		vdev->config_irq_pending = true;
}

void virtio_dev_fail(struct virtio_dev *vdev, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (vdev->broken)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s: %s; the device needs a reset", vdev->name, msg);
	vdev->broken = true;
	vdev->running = false;
	vdev->status |= VIRTIO_STATUS_NEEDS_RESET;
	virtio_dev_config_changed(vdev);
}

/* Lock held. Back to the state of a freshly created device. */
static void device_reset(struct virtio_dev *vdev)
{
	if (vdev->ops->stop)
		vdev->ops->stop(vdev);
	for (unsigned i = 0; i < vdev->nqueues; i++) {
		virtq_reset(&vdev->queues[i].vq);
		vdev->queues[i].msix_vector = VIRTIO_MSI_NO_VECTOR;
	}
	vdev->guest_features = 0;
	vdev->device_feature_select = 0;
	vdev->driver_feature_select = 0;
	vdev->status = 0;
	vdev->isr = 0;
	vdev->msix_config = VIRTIO_MSI_NO_VECTOR;
	vdev->queue_select = 0;
	vdev->irq_pending = 0;
	vdev->config_irq_pending = false;
	vdev->running = false;
	vdev->broken = false;
}

static void notify_all_queues(struct virtio_dev *vdev)
{
	for (unsigned i = 0; i < vdev->nqueues && virtio_dev_active(vdev); i++) {
		if (vdev->queues[i].vq.enabled)
			vdev->ops->queue_notify(vdev, i);
	}
}

static void write_status(struct virtio_dev *vdev, uint8_t v)
{
	uint8_t added = v & ~vdev->status;
	int ret;

	if (v == 0) {
		device_reset(vdev);
		return;
	}
	if (added & VIRTIO_STATUS_FEATURES_OK) {
		bool ok = !(vdev->guest_features & ~vdev->host_features) &&
			  ((vdev->guest_features >> VIRTIO_F_VERSION_1) & 1);
		if (!ok)
			v &= ~VIRTIO_STATUS_FEATURES_OK; /* the driver reads it back */
	}
	if ((added & VIRTIO_STATUS_DRIVER_OK) && !(v & VIRTIO_STATUS_FEATURES_OK))
		v &= ~VIRTIO_STATUS_DRIVER_OK;
	vdev->status = v | (vdev->broken ? VIRTIO_STATUS_NEEDS_RESET : 0);
	if ((v & VIRTIO_STATUS_FAILED) && vdev->running) {
		if (vdev->ops->stop)
			vdev->ops->stop(vdev);
		vdev->running = false;
	}
	if ((added & VIRTIO_STATUS_DRIVER_OK) && (v & VIRTIO_STATUS_DRIVER_OK) &&
	    !vdev->broken && !(v & VIRTIO_STATUS_FAILED)) {
		vdev->running = true;
		ret = vdev->ops->start ? vdev->ops->start(vdev) : 0;
		if (ret) {
			virtio_dev_fail(vdev, "cannot start: %s", strerror(-ret));
			return;
		}
		notify_all_queues(vdev);
	}
}

static void enable_queue(struct virtio_dev *vdev, struct virtio_queue *q)
{
	if (q->vq.enabled)
		return;
	if (virtq_enable(&q->vq, virtio_dev_has(vdev, VIRTIO_F_EVENT_IDX),
			 virtio_dev_has(vdev, VIRTIO_F_INDIRECT_DESC)))
		virtio_dev_fail(vdev, "queue %u: %s", (unsigned)(q - vdev->queues), q->vq.error);
	else if (virtio_dev_active(vdev))
		vdev->ops->queue_notify(vdev, (unsigned)(q - vdev->queues));
}

static struct virtio_queue *selected_queue(struct virtio_dev *vdev)
{
	return vdev->queue_select < vdev->nqueues ? &vdev->queues[vdev->queue_select] : NULL;
}

/* The common configuration as the driver would read it now. */
static void common_snapshot(struct virtio_dev *vdev, uint8_t *cc)
{
	struct virtio_queue *q = selected_queue(vdev);
	uint32_t df = 0, gf = 0;
	uint16_t u16;
	uint64_t u64;

	memset(cc, 0, COMMON_LEN);
	if (vdev->device_feature_select < 2)
		df = (uint32_t)(vdev->host_features >> (32 * vdev->device_feature_select));
	if (vdev->driver_feature_select < 2)
		gf = (uint32_t)(vdev->guest_features >> (32 * vdev->driver_feature_select));
	memcpy(cc + CC_DFSELECT, &vdev->device_feature_select, 4);
	memcpy(cc + CC_DF, &df, 4);
	memcpy(cc + CC_GFSELECT, &vdev->driver_feature_select, 4);
	memcpy(cc + CC_GF, &gf, 4);
	memcpy(cc + CC_MSIX_CONFIG, &vdev->msix_config, 2);
	u16 = (uint16_t)vdev->nqueues;
	memcpy(cc + CC_NUM_QUEUES, &u16, 2);
	cc[CC_STATUS] = vdev->status;
	cc[CC_CFG_GENERATION] = vdev->config_generation;
	memcpy(cc + CC_Q_SELECT, &vdev->queue_select, 2);
	if (!q) {
		u16 = VIRTIO_MSI_NO_VECTOR;
		memcpy(cc + CC_Q_MSIX_VECTOR, &u16, 2);
		return;
	}
	memcpy(cc + CC_Q_SIZE, &q->vq.size, 2);
	memcpy(cc + CC_Q_MSIX_VECTOR, &q->msix_vector, 2);
	u16 = q->vq.enabled;
	memcpy(cc + CC_Q_ENABLE, &u16, 2);
	u16 = vdev->queue_select;
	memcpy(cc + CC_Q_NOTIFY_OFF, &u16, 2);
	u64 = q->vq.desc_gpa;
	memcpy(cc + CC_Q_DESC, &u64, 8);
	u64 = q->vq.avail_gpa;
	memcpy(cc + CC_Q_DRIVER, &u64, 8);
	u64 = q->vq.used_gpa;
	memcpy(cc + CC_Q_DEVICE, &u64, 8);
}

static bool covers(unsigned off, unsigned len, unsigned field, unsigned flen)
{
	return off < field + flen && field < off + len;
}

static uint16_t valid_vector(const struct virtio_dev *vdev, uint16_t v)
{
	return v < nvectors(vdev) ? v : VIRTIO_MSI_NO_VECTOR;
}

/* Applies a write: merge it into a snapshot, then take every field it
 * touched from the merged bytes (so 32-bit halves of 64-bit fields work). */
static void common_write(struct virtio_dev *vdev, unsigned off, const void *data, unsigned len)
{
	struct virtio_queue *q = selected_queue(vdev);
	bool q_writable = q && !q->vq.enabled;
	uint8_t cc[COMMON_LEN];
	uint32_t u32;
	uint16_t u16;

	common_snapshot(vdev, cc);
	memcpy(cc + off, data, len);
	if (covers(off, len, CC_DFSELECT, 4))
		memcpy(&vdev->device_feature_select, cc + CC_DFSELECT, 4);
	if (covers(off, len, CC_GFSELECT, 4))
		memcpy(&vdev->driver_feature_select, cc + CC_GFSELECT, 4);
	if (covers(off, len, CC_GF, 4) && vdev->driver_feature_select < 2 &&
	    !(vdev->status & VIRTIO_STATUS_FEATURES_OK)) {
		unsigned shift = 32 * vdev->driver_feature_select;
		memcpy(&u32, cc + CC_GF, 4);
		vdev->guest_features &= ~(0xffffffffULL << shift);
		vdev->guest_features |= (uint64_t)u32 << shift;
	}
	if (covers(off, len, CC_MSIX_CONFIG, 2)) {
		memcpy(&u16, cc + CC_MSIX_CONFIG, 2);
		vdev->msix_config = valid_vector(vdev, u16);
	}
	if (covers(off, len, CC_Q_SELECT, 2))
		memcpy(&vdev->queue_select, cc + CC_Q_SELECT, 2);
	if (q && covers(off, len, CC_Q_MSIX_VECTOR, 2)) {
		memcpy(&u16, cc + CC_Q_MSIX_VECTOR, 2);
		q->msix_vector = valid_vector(vdev, u16);
	}
	if (q_writable && covers(off, len, CC_Q_SIZE, 2))
		memcpy(&q->vq.size, cc + CC_Q_SIZE, 2);
	if (q_writable && covers(off, len, CC_Q_DESC, 8))
		memcpy(&q->vq.desc_gpa, cc + CC_Q_DESC, 8);
	if (q_writable && covers(off, len, CC_Q_DRIVER, 8))
		memcpy(&q->vq.avail_gpa, cc + CC_Q_DRIVER, 8);
	if (q_writable && covers(off, len, CC_Q_DEVICE, 8))
		memcpy(&q->vq.used_gpa, cc + CC_Q_DEVICE, 8);
	if (q && covers(off, len, CC_Q_ENABLE, 2)) {
		memcpy(&u16, cc + CC_Q_ENABLE, 2);
		if (u16 == 1)
			enable_queue(vdev, q);
	}
	if (covers(off, len, CC_STATUS, 1))
		write_status(vdev, cc[CC_STATUS]);
}

void virtio_dev_kick(struct virtio_dev *vdev, unsigned qidx)
{
	uint64_t one = 1;

	if (qidx < vdev->nqueues && write(vdev->queues[qidx].kick_fd, &one, sizeof(one)) < 0)
		log_warn("%s: cannot signal queue %u: %s", vdev->name, qidx, strerror(errno));
}

static void bar_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct virtio_dev *vdev = opaque;
	uint8_t cc[COMMON_LEN];

	memset(data, 0, len);
	if (pci_msix_access(&vdev->pci, off, data, len, false))
		return;
	virtio_dev_lock(vdev);
	if (off + len <= COMMON_LEN) {
		common_snapshot(vdev, cc);
		memcpy(data, cc + off, len);
	} else if (off == ISR_OFF) {
		/* Reading the ISR acknowledges it (4.1.4.5). */
		*(uint8_t *)data = vdev->isr;
		vdev->isr = 0;
	} else if (off >= DEVCFG_OFF && off + len <= DEVCFG_OFF + vdev->config_len) {
		if (vdev->ops->config_read)
			vdev->ops->config_read(vdev, (uint32_t)(off - DEVCFG_OFF), data, len);
	}
	virtio_dev_unlock(vdev);
}

static void bar_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct virtio_dev *vdev = opaque;

	if (pci_msix_access(&vdev->pci, off, (void *)data, len, true))
		return;
	if (off >= NOTIFY_OFF && off < NOTIFY_OFF + NOTIFY_MULT * vdev->nqueues) {
		virtio_dev_kick(vdev, (unsigned)((off - NOTIFY_OFF) / NOTIFY_MULT));
		return;
	}
	virtio_dev_lock(vdev);
	if (off + len <= COMMON_LEN)
		common_write(vdev, (unsigned)off, data, len);
	else if (off >= DEVCFG_OFF && off + len <= DEVCFG_OFF + vdev->config_len &&
		 vdev->ops->config_write)
		vdev->ops->config_write(vdev, (uint32_t)(off - DEVCFG_OFF), data, len);
	virtio_dev_unlock(vdev);
}

static const struct io_ops bar_ops = {
	.read = bar_read,
	.write = bar_write,
};

/* Binds each queue's kick eventfd to its notify address where BAR 0 is
 * now, following the guest when it moves the BAR. */
static void sync_ioeventfds(struct virtio_dev *vdev)
{
	const struct pci_bar *bar = &vdev->pci.bars[BAR_NUM];
	uint64_t base = bar->mapped ? bar->addr : 0;

	for (unsigned i = 0; i < vdev->nqueues; i++) {
		struct virtio_queue *q = &vdev->queues[i];
		uint64_t want = base ? base + NOTIFY_OFF + NOTIFY_MULT * i : 0;
		int ret;

		if (q->kick_gpa == want)
			continue;
		if (q->kick_gpa)
			vm_ioeventfd(vdev->vm, q->kick_gpa, 2, true, q->kick_fd, false);
		q->kick_gpa = 0;
		if (!want)
			continue;
		ret = vm_ioeventfd(vdev->vm, want, 2, true, q->kick_fd, true);
		if (ret)
			log_debug("%s: no ioeventfd for queue %u (%s): kicks exit to user space",
				  vdev->name, i, strerror(-ret));
		else
			q->kick_gpa = want;
	}
}

/* The PCI configuration access capability (4.1.4.9): a window through
 * which a driver without BAR mappings (firmware) reaches BAR 0. The
 * driver sets cap.bar, cap.offset and cap.length (1, 2 or 4, offset
 * aligned to it); writing pci_cfg_data writes that many bytes there, and
 * reading it reads them. Anything else is ignored (4.1.4.9.1). Returns
 * the window's BAR offset and length, or false. */
static bool pci_cfg_window(struct virtio_dev *vdev, unsigned off, unsigned len, uint32_t *bar_off,
			   unsigned *bar_len)
{
	unsigned cap = vdev->pci_cfg_cap;
	uint32_t o, l;

	if (!cap || off + len <= cap + PCI_CFG_DATA || off >= cap + PCI_CFG_CAP_LEN)
		return false;
	pthread_mutex_lock(&vdev->pci.lock);
	memcpy(&o, vdev->pci.config + cap + PCI_CFG_OFFSET, 4);
	memcpy(&l, vdev->pci.config + cap + PCI_CFG_LENGTH, 4);
	l = vdev->pci.config[cap + PCI_CFG_BAR] == BAR_NUM ? l : 0;
	pthread_mutex_unlock(&vdev->pci.lock);
	if ((l != 1 && l != 2 && l != 4) || o % l || o > BAR_SIZE - l)
		return false;
	*bar_off = o;
	*bar_len = l;
	return true;
}

static void config_before_read(struct pci_device *dev, unsigned off, unsigned len)
{
	struct virtio_dev *vdev = dev->opaque;
	uint8_t data[4] = { 0 };
	uint32_t bar_off;
	unsigned bar_len;

	if (!pci_cfg_window(vdev, off, len, &bar_off, &bar_len))
		return;
	bar_read(vdev, bar_off, data, bar_len);
	pthread_mutex_lock(&dev->lock);
	memcpy(dev->config + vdev->pci_cfg_cap + PCI_CFG_DATA, data, 4);
	pthread_mutex_unlock(&dev->lock);
}

static void config_written(struct pci_device *dev, unsigned off, unsigned len)
{
	struct virtio_dev *vdev = dev->opaque;
	uint8_t data[4];
	uint32_t bar_off;
	unsigned bar_len;

	if (pci_cfg_window(vdev, off, len, &bar_off, &bar_len)) {
		pthread_mutex_lock(&dev->lock);
		memcpy(data, dev->config + vdev->pci_cfg_cap + PCI_CFG_DATA, 4);
		pthread_mutex_unlock(&dev->lock);
		bar_write(vdev, bar_off, data, bar_len);
	}
	virtio_dev_lock(vdev);
	if (vdev->attached)
		sync_ioeventfds(vdev);
	virtio_dev_unlock(vdev);
}

static int add_pci_cfg_cap(struct virtio_dev *vdev)
{
	uint8_t cap[PCI_CFG_CAP_LEN] = { PCI_CAP_ID_VNDR, 0, PCI_CFG_CAP_LEN, CAP_PCI_CFG };
	int off = pci_device_add_cap(&vdev->pci, cap, sizeof(cap));

	if (off < 0)
		return off;
	vdev->pci_cfg_cap = (uint8_t)off;
	vdev->pci.wmask[off + PCI_CFG_BAR] = 0xff;
	memset(vdev->pci.wmask + off + PCI_CFG_OFFSET, 0xff, 4 + 4 + 4);
	return 0;
}

static int add_cap(struct virtio_dev *vdev, uint8_t type, uint32_t off, uint32_t len)
{
	struct virtio_pci_cap cap = {
		.cap_vndr = PCI_CAP_ID_VNDR,
		.cap_len = type == CAP_NOTIFY ? 20 : 16,
		.cfg_type = type,
		.bar = BAR_NUM,
		.offset = off,
		.length = len,
		.notify_off_multiplier = NOTIFY_MULT,
	};
	int ret = pci_device_add_cap(&vdev->pci, &cap, cap.cap_len);

	return ret < 0 ? ret : 0;
}

static int build_pci(struct virtio_dev *vdev, const struct virtio_dev_params *p)
{
	int ret;

	pci_device_init(&vdev->pci, vdev->name, PCI_VENDOR_REDHAT_QUMRANET,
			PCI_DEVICE_VIRTIO_MODERN + p->device_id, p->class_code,
			PCI_VENDOR_REDHAT_QUMRANET, PCI_SUBSYS_ID_VIRTIO);
	vdev->pci.config[8] = PCI_REVISION_ID; /* >= 1: modern only (4.1.2.1) */
	vdev->pci.opaque = vdev;
	vdev->pci.config_written = config_written;
	vdev->pci.config_before_read = config_before_read;
	ret = pci_device_set_bar(&vdev->pci, BAR_NUM, PCI_BAR_MMIO32, BAR_SIZE, &bar_ops, vdev);
	if (ret)
		return ret;
	if ((ret = add_cap(vdev, CAP_COMMON, COMMON_OFF, COMMON_LEN)) ||
	    (ret = add_cap(vdev, CAP_ISR, ISR_OFF, 1)) ||
	    (ret = add_cap(vdev, CAP_NOTIFY, NOTIFY_OFF, NOTIFY_MULT * vdev->nqueues)))
		return ret;
	if (vdev->config_len && (ret = add_cap(vdev, CAP_DEVICE, DEVCFG_OFF, vdev->config_len)))
		return ret;
	if ((ret = add_pci_cfg_cap(vdev)))
		return ret;
	return pci_msix_init(&vdev->pci, vdev->vm, BAR_NUM, nvectors(vdev), MSIX_TABLE_OFF,
			     MSIX_PBA_OFF);
}

int virtio_dev_init(struct virtio_dev *vdev, struct vm *vm, const struct virtio_dev_params *p)
{
	unsigned i;
	int ret;

	if (p->nqueues == 0 || p->nqueues > VIRTIO_MAX_QUEUES || p->config_len > DEVCFG_MAX ||
	    p->queue_size == 0 || (p->queue_size & (p->queue_size - 1)))
		return -EINVAL;
	memset(vdev, 0, sizeof(*vdev));
	vdev->vm = vm;
	vdev->mem = vm_guest_mem(vm);
	vdev->loop = vm_evloop(vm);
	snprintf(vdev->name, sizeof(vdev->name), "%s", p->name);
	vdev->ops = p->ops;
	vdev->opaque = p->opaque;
	vdev->host_features = p->features | (1ULL << VIRTIO_F_VERSION_1) |
			      (1ULL << VIRTIO_F_EVENT_IDX) | (1ULL << VIRTIO_F_INDIRECT_DESC);
	vdev->config_len = p->config_len;
	vdev->nqueues = p->nqueues;
	pthread_mutex_init(&vdev->lock, NULL);
	for (i = 0; i < p->nqueues; i++) {
		virtq_init(&vdev->queues[i].vq, vdev->mem, p->queue_size);
		vdev->queues[i].msix_vector = VIRTIO_MSI_NO_VECTOR;
		vdev->queues[i].dev = vdev;
		vdev->queues[i].index = i;
		vdev->queues[i].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (vdev->queues[i].kick_fd < 0) {
			ret = -errno;
			goto err_fds;
		}
	}
	vdev->msix_config = VIRTIO_MSI_NO_VECTOR;
	ret = build_pci(vdev, p);
	if (ret)
		goto err_fds;
	return 0;
err_fds:
	while (i-- > 0)
		close(vdev->queues[i].kick_fd);
	pthread_mutex_destroy(&vdev->lock);
	return ret;
}

static void on_kick(struct virtio_dev *vdev, unsigned qidx)
{
	uint64_t n;

	if (read(vdev->queues[qidx].kick_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		return;
	virtio_dev_lock(vdev);
	if (virtio_dev_active(vdev) && vdev->queues[qidx].vq.enabled)
		vdev->ops->queue_notify(vdev, qidx);
	virtio_dev_unlock(vdev);
}

static void kick_cb(void *opaque, uint32_t events)
{
	struct virtio_queue *q = opaque;

	on_kick(q->dev, q->index);
}

int virtio_dev_attach(struct virtio_dev *vdev)
{
	unsigned i;
	int ret;

	for (i = 0; i < vdev->nqueues; i++) {
		ret = evloop_add_fd(vdev->loop, vdev->queues[i].kick_fd, EPOLLIN, kick_cb,
				    &vdev->queues[i]);
		if (ret)
			goto err_watch;
	}
	ret = pci_bus_add_device(vm_pci_bus(vdev->vm), &vdev->pci);
	if (ret)
		goto err_watch;
	virtio_dev_lock(vdev);
	vdev->attached = true;
	sync_ioeventfds(vdev);
	virtio_dev_unlock(vdev);
	return 0;
err_watch:
	while (i-- > 0)
		evloop_del_fd(vdev->loop, vdev->queues[i].kick_fd);
	return ret;
}

void virtio_dev_destroy(struct virtio_dev *vdev)
{
	virtio_dev_lock(vdev);
	for (unsigned i = 0; i < vdev->nqueues; i++) {
		struct virtio_queue *q = &vdev->queues[i];

		if (q->kick_gpa)
			vm_ioeventfd(vdev->vm, q->kick_gpa, 2, true, q->kick_fd, false);
		q->kick_gpa = 0;
		if (vdev->attached)
			evloop_del_fd(vdev->loop, q->kick_fd);
	}
	/* Even a stopped or broken device may have I/O in flight. */
	if (vdev->ops->stop)
		vdev->ops->stop(vdev);
	vdev->running = false;
	vdev->irq_pending = 0;
	vdev->config_irq_pending = false;
	virtio_dev_unlock(vdev);
	if (vdev->attached)
		pci_bus_remove_device(vm_pci_bus(vdev->vm), &vdev->pci);
	vdev->attached = false;
	for (unsigned i = 0; i < vdev->nqueues; i++)
		close(vdev->queues[i].kick_fd);
	pthread_mutex_destroy(&vdev->lock);
	if (vdev->ops->destroy)
		vdev->ops->destroy(vdev); /* frees vdev with the device */
}

void virtio_dev_pause(struct virtio_dev *vdev)
{
	virtio_dev_lock(vdev);
	if (!vdev->paused) {
		vdev->paused = true;
		if (vdev->ops->pause)
			vdev->ops->pause(vdev);
	}
	virtio_dev_unlock(vdev);
}

void virtio_dev_resume(struct virtio_dev *vdev)
{
	virtio_dev_lock(vdev);
	if (vdev->paused) {
		vdev->paused = false;
		if (vdev->ops->resume)
			vdev->ops->resume(vdev);
		/* Kicks that came while paused were read and dropped. */
		notify_all_queues(vdev);
	}
	virtio_dev_unlock(vdev);
}

void virtio_dev_reset(struct virtio_dev *vdev)
{
	virtio_dev_lock(vdev);
	device_reset(vdev);
	virtio_dev_unlock(vdev);
}

/* ---- saved state ---- */

#define VIRTIO_STATE_VERSION 1
#define KNOWN_STATUS                                                                     \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK |     \
	 VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)

void virtio_dev_save(struct virtio_dev *vdev, struct state_writer *w)
{
	virtio_dev_lock(vdev);
	state_begin(w, STATE_SECTION_VIRTIO, vdev->pci.slot, VIRTIO_STATE_VERSION);
	state_put_u64(w, vdev->host_features);
	state_put_u64(w, vdev->guest_features);
	state_put_u32(w, vdev->device_feature_select);
	state_put_u32(w, vdev->driver_feature_select);
	state_put_u8(w, vdev->status);
	state_put_u8(w, vdev->config_generation);
	state_put_u8(w, vdev->isr);
	state_put_u8(w, vdev->broken);
	state_put_u16(w, vdev->msix_config);
	state_put_u16(w, vdev->queue_select);
	state_put_u32(w, vdev->nqueues);
	for (unsigned i = 0; i < vdev->nqueues; i++) {
		const struct virtio_queue *q = &vdev->queues[i];

		state_put_u16(w, q->msix_vector);
		state_put_u16(w, q->vq.size);
		state_put_u8(w, q->vq.enabled);
		state_put_u64(w, q->vq.desc_gpa);
		state_put_u64(w, q->vq.avail_gpa);
		state_put_u64(w, q->vq.used_gpa);
		state_put_u16(w, q->vq.last_avail);
		state_put_u16(w, q->vq.used_idx);
		state_put_u16(w, q->vq.signalled_used);
		state_put_u8(w, q->vq.signalled_valid);
		state_put_u8(w, q->vq.no_notify);
	}
	state_end(w);
	virtio_dev_unlock(vdev);
}

struct saved_queue {
	uint16_t msix_vector, size;
	uint8_t enabled, signalled_valid, no_notify;
	uint64_t desc, avail, used;
	uint16_t last_avail, used_idx, signalled_used;
};

struct saved_transport {
	uint64_t host_features, guest_features;
	uint32_t dfs, drfs, nqueues;
	uint8_t status, generation, isr, broken;
	uint16_t msix_config, queue_select;
	struct saved_queue q[VIRTIO_MAX_QUEUES];
};

/* Reads the record and checks it against this device; 0 or -EINVAL
 * with err saying what does not fit. */
static int read_transport(struct virtio_dev *vdev, struct state_reader *r,
			  struct saved_transport *t, char *err, size_t errlen)
{
	const char *why = NULL;

	t->host_features = state_get_u64(r);
	t->guest_features = state_get_u64(r);
	t->dfs = state_get_u32(r);
	t->drfs = state_get_u32(r);
	t->status = state_get_u8(r);
	t->generation = state_get_u8(r);
	t->isr = state_get_u8(r);
	t->broken = state_get_u8(r);
	t->msix_config = state_get_u16(r);
	t->queue_select = state_get_u16(r);
	t->nqueues = state_get_u32(r);
	if (t->nqueues != vdev->nqueues)
		state_reader_fail(r);
	for (unsigned i = 0; i < vdev->nqueues && !r->bad; i++) {
		struct saved_queue *q = &t->q[i];

		q->msix_vector = state_get_u16(r);
		q->size = state_get_u16(r);
		q->enabled = state_get_u8(r);
		q->desc = state_get_u64(r);
		q->avail = state_get_u64(r);
		q->used = state_get_u64(r);
		q->last_avail = state_get_u16(r);
		q->used_idx = state_get_u16(r);
		q->signalled_used = state_get_u16(r);
		q->signalled_valid = state_get_u8(r);
		q->no_notify = state_get_u8(r);
		if (q->enabled > 1 || q->signalled_valid > 1 || q->no_notify > 1 ||
		    (q->msix_vector != VIRTIO_MSI_NO_VECTOR && q->msix_vector >= nvectors(vdev)))
			why = "a queue's flags or interrupt vector";
		else if (q->size > vdev->queues[i].vq.max_size || (q->size & (q->size - 1)))
			why = "a queue size the device does not offer";
	}
	if (state_reader_done(r) || r->version != VIRTIO_STATE_VERSION)
		why = "the record's length or version";
	else if (t->host_features != vdev->host_features)
		why = "the offered features (another device model)";
	else if (t->guest_features & ~t->host_features)
		why = "accepted features that were never offered";
	else if ((t->status & ~KNOWN_STATUS) || t->isr > 3 || t->broken > 1)
		why = "the status or ISR";
	else if (t->msix_config != VIRTIO_MSI_NO_VECTOR && t->msix_config >= nvectors(vdev))
		why = "the configuration interrupt vector";
	if (!why)
		return 0;
	snprintf(err, errlen, "%s (PCI slot %u): the saved state does not fit: %s", vdev->name,
		 vdev->pci.slot, why);
	return -EINVAL;
}

int virtio_dev_restore(struct virtio_dev *vdev, const struct state_file *f, char *err,
		       size_t errlen)
{
	struct saved_transport *t;
	struct state_reader r;
	int ret;

	if (state_file_find(f, STATE_SECTION_VIRTIO, vdev->pci.slot, &r)) {
		snprintf(err, errlen, "%s: the state has no record for it", vdev->name);
		return -ENOENT;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	ret = read_transport(vdev, &r, t, err, errlen);
	if (ret) {
		free(t);
		return ret;
	}
	virtio_dev_lock(vdev);
	device_reset(vdev);
	vdev->guest_features = t->guest_features;
	vdev->device_feature_select = t->dfs;
	vdev->driver_feature_select = t->drfs;
	vdev->status = t->status;
	vdev->config_generation = t->generation;
	vdev->isr = t->isr;
	vdev->msix_config = t->msix_config;
	vdev->queue_select = t->queue_select;
	for (unsigned i = 0; i < vdev->nqueues; i++) {
		struct virtio_queue *q = &vdev->queues[i];
		const struct saved_queue *s = &t->q[i];

		q->msix_vector = s->msix_vector;
		q->vq.size = s->size;
		q->vq.desc_gpa = s->desc;
		q->vq.avail_gpa = s->avail;
		q->vq.used_gpa = s->used;
		if (!s->enabled || vdev->broken)
			continue;
		/* the same checks as the driver's queue_enable write */
		if (virtq_enable(&q->vq, virtio_dev_has(vdev, VIRTIO_F_EVENT_IDX),
				 virtio_dev_has(vdev, VIRTIO_F_INDIRECT_DESC))) {
			virtio_dev_fail(vdev, "restored queue %u: %s", i, q->vq.error);
			continue;
		}
		q->vq.last_avail = s->last_avail;
		q->vq.used_idx = s->used_idx;
		q->vq.signalled_used = s->signalled_used;
		q->vq.signalled_valid = s->signalled_valid;
		q->vq.no_notify = s->no_notify;
	}
	if (t->broken && !vdev->broken)
		virtio_dev_fail(vdev, "it needed a reset when it was saved");
	sync_ioeventfds(vdev);
	if ((vdev->status & VIRTIO_STATUS_DRIVER_OK) && !vdev->broken &&
	    !(vdev->status & VIRTIO_STATUS_FAILED)) {
		vdev->running = true;
		ret = vdev->ops->start ? vdev->ops->start(vdev) : 0;
		if (ret)
			virtio_dev_fail(vdev, "cannot start after restore: %s", strerror(-ret));
		else
			notify_all_queues(vdev);
	}
	virtio_dev_unlock(vdev);
	free(t);
	return 0;
}
