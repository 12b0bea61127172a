/* MSI-X for PCI devices: the capability, the vector table and the PBA in a
 * BAR, and delivery.
 *
 * A vector is "deliverable" while MSI-X is enabled, the function is not
 * masked and the vector's own mask bit is clear. A deliverable vector has
 * a KVM MSI route (a GSI) and its eventfd bound to that GSI as an irqfd,
 * so a device thread raises it with one write() and no exit. When a vector
 * stops being deliverable its irqfd is detached: writes then only count up
 * in the eventfd, which is the vector's pending state; the PBA shows it
 * (reading the PBA folds those counts into the pending bits) and the
 * interrupt is delivered once when the vector becomes deliverable again.
 * pci_msix_notify() follows the same rules for devices that call it.
 *
 * Locking: msix->lock guards the table, the PBA and the vector state; it is
 * taken inside dev->lock on config writes, never the other way round. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "vmm/bus/pci.h"
#include "vmm/bus/pci_internal.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

#define PCI_CAP_ID_MSIX 0x11
#define MSIX_CAP_LEN 12
#define MSIX_ENTRY_SIZE 16
#define MSIX_MAX_VECTORS 2048

#define CTRL_ENABLE 0x80   /* in the message control's high byte */
#define CTRL_FN_MASK 0x40

#define ENTRY_ADDR_LO 0
#define ENTRY_ADDR_HI 4
#define ENTRY_DATA 8
#define ENTRY_CTRL 12
#define ENTRY_CTRL_MASKED 0x1

struct msix_vector {
	int efd;	    /* -1 if none could be created */
	unsigned gsi;
	bool has_route;
	bool irqfd_on;
	bool irqfd_broken; /* KVM refused: the eventfd is not offered */
};

struct pci_msix {
	pthread_mutex_t lock;
	struct vm *vm;
	unsigned nvec;
	unsigned bar;
	unsigned cap_off;
	uint32_t table_off, pba_off;
	atomic_bool enabled;
	bool fn_masked;
	uint8_t *table;
	uint64_t *pba;
	struct msix_vector *vec;
};

static unsigned pba_words(unsigned nvec)
{
	return (nvec + 63) / 64;
}

static uint8_t *entry(struct pci_msix *m, unsigned v)
{
	return m->table + (size_t)v * MSIX_ENTRY_SIZE;
}

static uint64_t entry_addr(struct pci_msix *m, unsigned v)
{
	uint32_t lo, hi;

	memcpy(&lo, entry(m, v) + ENTRY_ADDR_LO, 4);
	memcpy(&hi, entry(m, v) + ENTRY_ADDR_HI, 4);
	return (uint64_t)hi << 32 | lo;
}

static uint32_t entry_data(struct pci_msix *m, unsigned v)
{
	uint32_t d;

	memcpy(&d, entry(m, v) + ENTRY_DATA, 4);
	return d;
}

static bool entry_masked(struct pci_msix *m, unsigned v)
{
	return entry(m, v)[ENTRY_CTRL] & ENTRY_CTRL_MASKED;
}

static bool deliverable(struct pci_msix *m, unsigned v)
{
	return atomic_load(&m->enabled) && !m->fn_masked && !entry_masked(m, v);
}

static bool pending(struct pci_msix *m, unsigned v)
{
	return m->pba[v / 64] & (1ULL << (v % 64));
}

static void set_pending(struct pci_msix *m, unsigned v, bool on)
{
	if (on)
		m->pba[v / 64] |= 1ULL << (v % 64);
	else
		m->pba[v / 64] &= ~(1ULL << (v % 64));
}

/* Reads (and so resets) the vector's eventfd count; true if it was set. */
static bool drain_eventfd(struct pci_msix *m, unsigned v)
{
	uint64_t count;

	if (m->vec[v].efd < 0)
		return false;
	return read(m->vec[v].efd, &count, sizeof(count)) == sizeof(count) && count > 0;
}

static void irqfd_detach(struct pci_msix *m, unsigned v)
{
	struct msix_vector *vec = &m->vec[v];

	if (!vec->irqfd_on)
		return;
	vm_irqfd(m->vm, vec->efd, vec->gsi, false);
	vec->irqfd_on = false;
}

/* Makes the vector's KVM state match the guest's view. msix->lock held. */
static void vector_sync(struct pci_msix *m, unsigned v)
{
	struct msix_vector *vec = &m->vec[v];
	int ret;

	if (!deliverable(m, v)) {
		irqfd_detach(m, v);
		return;
	}
	if (vec->efd >= 0 && !vec->has_route && !vec->irqfd_broken) {
		ret = vm_msi_route_add(m->vm, entry_addr(m, v), entry_data(m, v), &vec->gsi);
		if (ret) {
			log_debug("msix: no MSI route for vector %u: %s", v, strerror(-ret));
			vec->irqfd_broken = true;
		} else {
			vec->has_route = true;
		}
	}
	/* What came in while it was not deliverable goes out once now. */
	if (drain_eventfd(m, v))
		set_pending(m, v, true);
	if (pending(m, v)) {
		set_pending(m, v, false);
		vm_signal_msi(m->vm, entry_addr(m, v), entry_data(m, v));
	}
	if (vec->has_route && !vec->irqfd_on && !vec->irqfd_broken) {
		ret = vm_irqfd(m->vm, vec->efd, vec->gsi, true);
		if (ret) {
			log_debug("msix: no irqfd for vector %u: %s", v, strerror(-ret));
			vec->irqfd_broken = true;
		} else {
			vec->irqfd_on = true;
		}
	}
}

static void table_write(struct pci_msix *m, uint32_t off, const uint8_t *in, unsigned len)
{
	unsigned first = off / MSIX_ENTRY_SIZE, last = (off + len - 1) / MSIX_ENTRY_SIZE;

	for (unsigned i = 0; i < len; i++) {
		uint32_t o = off + i;
		unsigned field = o % MSIX_ENTRY_SIZE;
		uint8_t *e = entry(m, o / MSIX_ENTRY_SIZE);

		if (field == ENTRY_CTRL)
			e[field] = in[i] & ENTRY_CTRL_MASKED;
		else if (field < ENTRY_CTRL)
			e[field] = in[i];
		/* the rest of vector control is reserved: reads 0 */
	}
	for (unsigned v = first; v <= last && v < m->nvec; v++) {
		struct msix_vector *vec = &m->vec[v];

		/* x86 Linux rewrites address/data of live vectors when it moves
		 * an interrupt: the route follows at once. */
		if (vec->has_route)
			vm_msi_route_update(m->vm, vec->gsi, entry_addr(m, v), entry_data(m, v));
		vector_sync(m, v);
	}
}

static void pba_refresh(struct pci_msix *m)
{
	for (unsigned v = 0; v < m->nvec; v++)
		if (!deliverable(m, v) && drain_eventfd(m, v))
			set_pending(m, v, true);
}

bool pci_msix_access(struct pci_device *dev, uint64_t bar_off, void *data, unsigned len,
		     bool is_write)
{
	struct pci_msix *m = dev->msix;
	uint64_t table_end, pba_end;
	uint8_t *buf = data;

	if (!m || len == 0)
		return false;
	table_end = m->table_off + (uint64_t)m->nvec * MSIX_ENTRY_SIZE;
	pba_end = m->pba_off + (uint64_t)pba_words(m->nvec) * 8;
	if (bar_off >= m->table_off && bar_off < table_end) {
		uint32_t off = (uint32_t)(bar_off - m->table_off);
		unsigned n = (unsigned)MIN((uint64_t)len, table_end - bar_off);

		pthread_mutex_lock(&m->lock);
		if (is_write) {
			table_write(m, off, buf, n);
		} else {
			memset(buf, 0, len);
			memcpy(buf, m->table + off, n);
		}
		pthread_mutex_unlock(&m->lock);
		return true;
	}
	if (bar_off >= m->pba_off && bar_off < pba_end) {
		uint64_t off = bar_off - m->pba_off;
		unsigned n = (unsigned)MIN((uint64_t)len, pba_end - bar_off);

		if (is_write)
			return true; /* read-only */
		pthread_mutex_lock(&m->lock);
		pba_refresh(m);
		memset(buf, 0, len);
		memcpy(buf, (uint8_t *)m->pba + off, n);
		pthread_mutex_unlock(&m->lock);
		return true;
	}
	return false;
}

static void bar_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	if (!pci_msix_access(opaque, off, data, len, false))
		memset(data, 0, len);
}

static void bar_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	pci_msix_access(opaque, off, (void *)data, len, true);
}

const struct io_ops pci_msix_bar_ops = { .read = bar_read, .write = bar_write };

int pci_msix_notify(struct pci_device *dev, unsigned vec)
{
	struct pci_msix *m = dev->msix;
	int ret = 0;

	if (!m)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	if (vec >= m->nvec || !atomic_load(&m->enabled))
		ret = -EINVAL;
	else if (deliverable(m, vec))
		ret = vm_signal_msi(m->vm, entry_addr(m, vec), entry_data(m, vec));
	else
		set_pending(m, vec, true);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int pci_msix_vector_eventfd(struct pci_device *dev, unsigned vec)
{
	struct pci_msix *m = dev->msix;
	int fd = -1;

	if (!m || vec >= m->nvec)
		return -1;
	pthread_mutex_lock(&m->lock);
	if (!m->vec[vec].irqfd_broken)
		fd = m->vec[vec].efd;
	pthread_mutex_unlock(&m->lock);
	return fd;
}

bool pci_msix_enabled(const struct pci_device *dev)
{
	return dev->msix && atomic_load(&dev->msix->enabled);
}

void pci_msix_config_written(struct pci_device *dev, unsigned off, unsigned len)
{
	struct pci_msix *m = dev->msix;
	unsigned ctrl = m->cap_off + 3; /* high byte of message control */
	bool was_enabled, enable, fn_masked;

	if (off > ctrl || off + len <= ctrl)
		return;
	enable = dev->config[ctrl] & CTRL_ENABLE;
	fn_masked = dev->config[ctrl] & CTRL_FN_MASK;
	pthread_mutex_lock(&m->lock);
	was_enabled = atomic_load(&m->enabled);
	if (enable && !was_enabled) {
		/* Nothing carries over from while MSI-X was off. */
		for (unsigned v = 0; v < m->nvec; v++)
			drain_eventfd(m, v);
		memset(m->pba, 0, pba_words(m->nvec) * 8);
	}
	atomic_store(&m->enabled, enable);
	m->fn_masked = fn_masked;
	for (unsigned v = 0; v < m->nvec; v++)
		vector_sync(m, v);
	pthread_mutex_unlock(&m->lock);
}

static void msix_power_on(struct pci_msix *m)
{
	atomic_store(&m->enabled, false);
	m->fn_masked = false;
	memset(m->table, 0, (size_t)m->nvec * MSIX_ENTRY_SIZE);
	for (unsigned v = 0; v < m->nvec; v++) {
		entry(m, v)[ENTRY_CTRL] = ENTRY_CTRL_MASKED;
		irqfd_detach(m, v);
		drain_eventfd(m, v);
	}
	memset(m->pba, 0, pba_words(m->nvec) * 8);
}

void pci_msix_reset(struct pci_device *dev)
{
	struct pci_msix *m = dev->msix;

	dev->config[m->cap_off + 3] &= (uint8_t)~(CTRL_ENABLE | CTRL_FN_MASK);
	pthread_mutex_lock(&m->lock);
	msix_power_on(m);
	pthread_mutex_unlock(&m->lock);
}

void pci_msix_save(struct pci_device *dev, struct state_writer *w)
{
	struct pci_msix *m = dev->msix;

	pthread_mutex_lock(&m->lock);
	/* A signal that came in while the vector was masked is pending
	 * state; one already handed to KVM through the irqfd is KVM's. */
	for (unsigned v = 0; v < m->nvec; v++)
		if (!m->vec[v].irqfd_on && drain_eventfd(m, v))
			set_pending(m, v, true);
	state_put_u32(w, m->nvec);
	state_put_bytes(w, m->table, (size_t)m->nvec * MSIX_ENTRY_SIZE);
	for (unsigned i = 0; i < pba_words(m->nvec); i++)
		state_put_u64(w, m->pba[i]);
	pthread_mutex_unlock(&m->lock);
}

int pci_msix_restore(struct pci_device *dev, struct state_reader *r)
{
	struct pci_msix *m = dev->msix;
	size_t table_len = (size_t)m->nvec * MSIX_ENTRY_SIZE;
	unsigned ctrl = m->cap_off + 3;
	uint8_t *table;
	uint64_t pba[(MSIX_MAX_VECTORS + 63) / 64];

	if (state_get_u32(r) != m->nvec)
		return -EINVAL;
	table = malloc(table_len);
	if (!table)
		return -ENOMEM;
	state_get_bytes(r, table, table_len);
	for (unsigned i = 0; i < pba_words(m->nvec); i++)
		pba[i] = state_get_u64(r);
	if (r->bad) {
		free(table);
		return -EINVAL;
	}
	pthread_mutex_lock(&m->lock);
	memcpy(m->table, table, table_len);
	memcpy(m->pba, pba, pba_words(m->nvec) * 8);
	/* bits past the last vector are reserved */
	if (m->nvec % 64)
		m->pba[m->nvec / 64] &= (1ULL << (m->nvec % 64)) - 1;
	atomic_store(&m->enabled, (dev->config[ctrl] & CTRL_ENABLE) != 0);
	m->fn_masked = (dev->config[ctrl] & CTRL_FN_MASK) != 0;
	for (unsigned v = 0; v < m->nvec; v++)
		vector_sync(m, v);
	pthread_mutex_unlock(&m->lock);
	free(table);
	return 0;
}

void pci_msix_free(struct pci_device *dev)
{
	struct pci_msix *m = dev->msix;

	if (!m)
		return;
	for (unsigned v = 0; v < m->nvec; v++) {
		irqfd_detach(m, v);
		if (m->vec[v].has_route)
			vm_msi_route_remove(m->vm, m->vec[v].gsi);
		if (m->vec[v].efd >= 0)
			close(m->vec[v].efd);
	}
	pthread_mutex_destroy(&m->lock);
	free(m->vec);
	free(m->pba);
	free(m->table);
	free(m);
	dev->msix = NULL;
}

static int msix_check_layout(const struct pci_device *dev, unsigned bar, unsigned nvec,
			     uint32_t table_off, uint32_t pba_off)
{
	const struct pci_bar *b;
	uint64_t table_end, pba_end;

	if (dev->msix)
		return -EEXIST;
	if (bar >= PCI_NUM_BARS || nvec == 0 || nvec > MSIX_MAX_VECTORS)
		return -EINVAL;
	b = &dev->bars[bar];
	if (b->kind != PCI_BAR_MMIO32 && b->kind != PCI_BAR_MMIO64)
		return -EINVAL;
	if ((table_off & 7) || (pba_off & 7))
		return -EINVAL;
	table_end = table_off + (uint64_t)nvec * MSIX_ENTRY_SIZE;
	pba_end = pba_off + (uint64_t)pba_words(nvec) * 8;
	if (table_end > b->size || pba_end > b->size)
		return -EINVAL;
	if (table_off < pba_end && pba_off < table_end)
		return -EINVAL;
	return 0;
}

int pci_msix_init(struct pci_device *dev, struct vm *vm, unsigned bar, unsigned nvec,
		  uint32_t table_off, uint32_t pba_off)
{
	uint8_t cap[MSIX_CAP_LEN] = { PCI_CAP_ID_MSIX, 0 };
	uint16_t ctrl = (uint16_t)(nvec - 1);
	uint32_t tbl = table_off | bar, pba = pba_off | bar;
	struct pci_msix *m;
	int off, err;

	err = msix_check_layout(dev, bar, nvec, table_off, pba_off);
	if (err)
		return err;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->table = calloc(nvec, MSIX_ENTRY_SIZE);
	m->pba = calloc(pba_words(nvec), 8);
	m->vec = calloc(nvec, sizeof(m->vec[0]));
	err = -ENOMEM;
	if (!m->table || !m->pba || !m->vec)
		goto err_free;
	err = -pthread_mutex_init(&m->lock, NULL);
	if (err)
		goto err_free;
	m->vm = vm;
	m->nvec = nvec;
	m->bar = bar;
	m->table_off = table_off;
	m->pba_off = pba_off;
	for (unsigned v = 0; v < nvec; v++) {
		/* Without an eventfd the vector still works by pci_msix_notify. */
		m->vec[v].efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	}

	memcpy(cap + 2, &ctrl, 2);
	memcpy(cap + 4, &tbl, 4);
	memcpy(cap + 8, &pba, 4);
	off = pci_device_add_cap(dev, cap, sizeof(cap));
	if (off < 0) {
		err = off;
		goto err_fds;
	}
	m->cap_off = (unsigned)off;
	dev->wmask[off + 3] = CTRL_ENABLE | CTRL_FN_MASK;
	msix_power_on(m);
	dev->msix = m;
	return 0;

err_fds:
	for (unsigned v = 0; v < nvec; v++)
		if (m->vec[v].efd >= 0)
			close(m->vec[v].efd);
	pthread_mutex_destroy(&m->lock);
err_free:
	free(m->vec);
	free(m->pba);
	free(m->table);
	free(m);
	return err;
}
