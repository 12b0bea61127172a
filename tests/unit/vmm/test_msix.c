#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform_vm_double.h"
#include "vmm/bus/pci.h"
#include "vmm/layout.h"

#define NVEC 4
#define TABLE_OFF 0x2000
#define PBA_OFF 0x3000

struct fixture {
	struct vm *vm;
	struct pci_bus *bus;
	struct pci_device dev;
	unsigned other_reads;
	uint64_t bar;
	unsigned cap;
};

/* Like virtio's BAR: MSI-X first, the device's registers otherwise. */
static void dev_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct fixture *f = opaque;

	if (pci_msix_access(&f->dev, off, data, len, false))
		return;
	f->other_reads++;
	memset(data, 0, len);
}

static void dev_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct fixture *f = opaque;

	pci_msix_access(&f->dev, off, (void *)data, len, true);
}

static const struct io_ops dev_ops = { dev_read, dev_write };

static uint32_t cfg_read(struct fixture *f, unsigned reg, unsigned len)
{
	return (uint32_t)vmd_mmio_read(f->vm, LAYOUT_PCI_ECAM_BASE + (1 << 15) + reg, len);
}

static void cfg_write(struct fixture *f, unsigned reg, unsigned len, uint32_t v)
{
	vmd_mmio_write(f->vm, LAYOUT_PCI_ECAM_BASE + (1 << 15) + reg, v, len);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->vm = vmd_create();
	assert_int_equal(pci_bus_create(f->vm, f->vm->pio, f->vm->mmio, &f->bus), 0);
	pci_device_init(&f->dev, "msixdev", 0x1af4, 0x1041, 0x020000, 0x1af4, 1);
	assert_int_equal(pci_device_set_bar(&f->dev, 0, PCI_BAR_MMIO32, 0x4000, &dev_ops, f), 0);
	assert_int_equal(pci_msix_init(&f->dev, f->vm, 0, NVEC, TABLE_OFF, PBA_OFF), 0);
	assert_int_equal(pci_bus_add_device(f->bus, &f->dev), 0);
	f->bar = f->dev.bars[0].addr;
	/* Find the capability the way a driver does. */
	for (unsigned p = cfg_read(f, 0x34, 1); p; p = cfg_read(f, p + 1, 1))
		if (cfg_read(f, p, 1) == 0x11)
			f->cap = p;
	assert_int_not_equal(f->cap, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	pci_bus_remove_device(f->bus, &f->dev);
	pthread_mutex_destroy(&f->dev.lock);
	pci_bus_destroy(f->bus);
	vmd_destroy(f->vm);
	free(f);
	return 0;
}

static uint64_t entry_gpa(struct fixture *f, unsigned v, unsigned field)
{
	return f->bar + TABLE_OFF + 16 * v + field;
}

static void program(struct fixture *f, unsigned v, uint64_t addr, uint32_t data)
{
	vmd_mmio_write(f->vm, entry_gpa(f, v, 0), (uint32_t)addr, 4);
	vmd_mmio_write(f->vm, entry_gpa(f, v, 4), (uint32_t)(addr >> 32), 4);
	vmd_mmio_write(f->vm, entry_gpa(f, v, 8), data, 4);
}

static void mask(struct fixture *f, unsigned v, bool on)
{
	vmd_mmio_write(f->vm, entry_gpa(f, v, 12), on ? 1 : 0, 4);
}

static void control(struct fixture *f, bool enable, bool fn_mask)
{
	uint16_t c = (uint16_t)cfg_read(f, f->cap + 2, 2);

	c = (uint16_t)((c & 0x3fff) | (enable ? 0x8000 : 0) | (fn_mask ? 0x4000 : 0));
	cfg_write(f, f->cap + 2, 2, c);
}

static uint64_t pba(struct fixture *f)
{
	return vmd_mmio_read(f->vm, f->bar + PBA_OFF, 8);
}

/* The route KVM would use for vector v's eventfd, or NULL if detached. */
static struct vmd_route *bound_route(struct fixture *f, unsigned v)
{
	int fd = pci_msix_vector_eventfd(&f->dev, v);
	int r = fd >= 0 ? vmd_route_of_irqfd(f->vm, fd) : -1;

	return r >= 0 ? &f->vm->routes[r] : NULL;
}

static void kick(struct fixture *f, unsigned v)
{
	uint64_t one = 1;
	int fd = pci_msix_vector_eventfd(&f->dev, v);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
}

static void test_capability_and_table_layout(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(cfg_read(f, f->cap + 2, 2), NVEC - 1);
	assert_int_equal(cfg_read(f, f->cap + 4, 4), TABLE_OFF | 0);
	assert_int_equal(cfg_read(f, f->cap + 8, 4), PBA_OFF | 0);
	/* Power-on: every vector masked, nothing pending, MSI-X off. */
	for (unsigned v = 0; v < NVEC; v++) {
		assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, v, 12), 4), 1);
		assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, v, 0), 8), 0);
	}
	assert_int_equal(pba(f), 0);
	assert_false(pci_msix_enabled(&f->dev));
	assert_int_equal(pci_msix_notify(&f->dev, 0), -EINVAL);
	/* Table entries read back; reserved control bits stay 0. */
	program(f, 2, 0xfee01000, 0x4041);
	vmd_mmio_write(f->vm, entry_gpa(f, 2, 12), 0xfffffffe, 4);
	assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, 2, 0), 4), 0xfee01000);
	assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, 2, 8), 4), 0x4041);
	assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, 2, 12), 4), 0);
	vmd_mmio_write(f->vm, entry_gpa(f, 2, 0), 0x12345678fee02000ULL, 8);
	assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, 2, 0), 8), 0x12345678fee02000ULL);
	/* The PBA is read-only; the rest of the BAR is the device's. */
	vmd_mmio_write(f->vm, f->bar + PBA_OFF, ~0ULL, 8);
	assert_int_equal(pba(f), 0);
	vmd_mmio_read(f->vm, f->bar + 0x100, 4);
	assert_int_equal(f->other_reads, 1);
	/* Only enable and function mask are writable in message control. */
	cfg_write(f, f->cap + 2, 2, 0x3fff);
	assert_int_equal(cfg_read(f, f->cap + 2, 2), NVEC - 1);
}

static void test_delivery_and_masking(void **state)
{
	struct fixture *f = *state;
	struct vmd_route *r;

	/* Linux: enable with the function masked, program, unmask. */
	control(f, true, true);
	assert_true(pci_msix_enabled(&f->dev));
	program(f, 0, 0xfee00000, 0x4021);
	mask(f, 0, false);
	assert_null(bound_route(f, 0));
	assert_int_equal(pci_msix_notify(&f->dev, 0), 0); /* function masked: pending */
	assert_int_equal(f->vm->nmsi, 0);
	assert_int_equal(pba(f), 1);
	control(f, true, false);
	assert_int_equal(f->vm->nmsi, 1); /* the pending one, once */
	assert_int_equal(f->vm->msi[0].addr, 0xfee00000);
	assert_int_equal(f->vm->msi[0].data, 0x4021);
	assert_int_equal(pba(f), 0);
	r = bound_route(f, 0);
	assert_non_null(r);
	assert_int_equal(r->addr, 0xfee00000);
	assert_int_equal(r->data, 0x4021);

	/* Unmasked: notify injects now. */
	assert_int_equal(pci_msix_notify(&f->dev, 0), 0);
	assert_int_equal(f->vm->nmsi, 2);

	/* Masked: the irqfd is detached, a kick only marks it pending. */
	mask(f, 0, true);
	assert_null(bound_route(f, 0));
	kick(f, 0);
	assert_int_equal(pba(f), 1);
	assert_int_equal(f->vm->nmsi, 2);
	kick(f, 0);
	assert_int_equal(pci_msix_notify(&f->dev, 0), 0);
	assert_int_equal(pba(f), 1);
	/* Unmask: delivered exactly once, the irqfd is back. */
	mask(f, 0, false);
	assert_int_equal(f->vm->nmsi, 3);
	assert_int_equal(pba(f), 0);
	assert_non_null(bound_route(f, 0));

	/* Other vectors are independent. */
	assert_int_equal(pci_msix_notify(&f->dev, 3), 0);
	assert_int_equal(pba(f), 1ULL << 3);
	assert_int_equal(f->vm->nmsi, 3);
	assert_int_equal(pci_msix_notify(&f->dev, NVEC), -EINVAL);
}

static void test_route_follows_table(void **state)
{
	struct fixture *f = *state;
	struct vmd_route *r;

	control(f, true, false);
	program(f, 1, 0xfee00000, 0x4030);
	mask(f, 1, false);
	r = bound_route(f, 1);
	assert_non_null(r);
	/* x86 Linux moves a live vector by rewriting it unmasked. */
	program(f, 1, 0xfee02000, 0x4031);
	assert_int_equal(r->addr, 0xfee02000);
	assert_int_equal(r->data, 0x4031);
	assert_int_equal(pci_msix_notify(&f->dev, 1), 0);
	assert_int_equal(f->vm->msi[f->vm->nmsi - 1].addr, 0xfee02000);
	/* Disabling MSI-X detaches everything; notify is refused. */
	control(f, false, false);
	assert_null(bound_route(f, 1));
	assert_int_equal(pci_msix_notify(&f->dev, 1), -EINVAL);
	/* Kicks while off do not survive re-enabling. */
	kick(f, 1);
	control(f, true, false);
	assert_int_equal(pba(f), 0);
	assert_non_null(bound_route(f, 1));
}

static void test_no_routes_falls_back(void **state)
{
	struct fixture *f = *state;

	f->vm->fail_routes = -ENOSPC;
	control(f, true, false);
	program(f, 0, 0xfee00000, 0x4022);
	mask(f, 0, false);
	/* KVM refused a route: no eventfd offered, notify still works. */
	assert_int_equal(pci_msix_vector_eventfd(&f->dev, 0), -1);
	assert_int_equal(pci_msix_notify(&f->dev, 0), 0);
	assert_int_equal(f->vm->nmsi, 1);
	assert_int_equal(f->vm->msi[0].data, 0x4022);
}

static void test_reset(void **state)
{
	struct fixture *f = *state;

	control(f, true, false);
	program(f, 0, 0xfee00000, 0x4023);
	mask(f, 0, false);
	mask(f, 1, true);
	assert_int_equal(pci_msix_notify(&f->dev, 1), 0);
	assert_non_null(bound_route(f, 0));
	pci_bus_reset(f->bus);
	assert_false(pci_msix_enabled(&f->dev));
	assert_int_equal(cfg_read(f, f->cap + 2, 2), NVEC - 1);
	assert_null(bound_route(f, 0));
	assert_int_equal(pba(f), 0);
	assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, 0, 12), 4), 1);
	assert_int_equal(vmd_mmio_read(f->vm, entry_gpa(f, 0, 0), 4), 0);
}

static void test_bad_layouts(void **state)
{
	struct fixture *f = *state;
	struct pci_device d;

	pci_device_init(&d, "bad", 1, 2, 0, 0, 0);
	assert_int_equal(pci_device_set_bar(&d, 0, PCI_BAR_MMIO32, 0x1000, &dev_ops, f), 0);
	assert_int_equal(pci_device_set_bar(&d, 1, PCI_BAR_IO, 0x20, &dev_ops, f), 0);
	assert_int_equal(pci_msix_init(&d, f->vm, 1, 1, 0, 0x10), -EINVAL);  /* I/O BAR */
	assert_int_equal(pci_msix_init(&d, f->vm, 2, 1, 0, 0x10), -EINVAL);  /* no BAR */
	assert_int_equal(pci_msix_init(&d, f->vm, 0, 0, 0, 0x10), -EINVAL);  /* 0 vectors */
	assert_int_equal(pci_msix_init(&d, f->vm, 0, 4, 4, 0x800), -EINVAL); /* misaligned */
	assert_int_equal(pci_msix_init(&d, f->vm, 0, 4, 0, 0x20), -EINVAL);  /* overlap */
	assert_int_equal(pci_msix_init(&d, f->vm, 0, 256, 0, 0xff8), -EINVAL); /* past BAR */
	assert_int_equal(pci_msix_init(&d, f->vm, 0, 2049, 0, 0x800), -EINVAL);
	assert_int_equal(pci_msix_init(&d, f->vm, 0, 4, 0, 0x800), 0);
	assert_int_equal(pci_msix_init(&d, f->vm, 0, 4, 0, 0x800), -EEXIST);
	/* A BAR without ops belongs wholly to MSI-X. */
	{
		struct pci_device e;
		uint64_t base;

		pci_device_init(&e, "msix-only", 1, 3, 0, 0, 0);
		assert_int_equal(pci_device_set_bar(&e, 0, PCI_BAR_MMIO32, 0x1000, NULL, NULL), 0);
		assert_int_equal(pci_msix_init(&e, f->vm, 0, 2, 0, 0x800), 0);
		assert_int_equal(pci_bus_add_device(f->bus, &e), 0);
		base = e.bars[0].addr;
		assert_int_equal(vmd_mmio_read(f->vm, base + 12, 4), 1);
		vmd_mmio_write(f->vm, base + 8, 0x77, 4);
		assert_int_equal(vmd_mmio_read(f->vm, base + 8, 4), 0x77);
		assert_int_equal(vmd_mmio_read(f->vm, base + 0x400, 4), 0);
		pci_bus_remove_device(f->bus, &e);
		pthread_mutex_destroy(&e.lock);
	}
	pci_bus_remove_device(f->bus, &d); /* never added: frees MSI-X only */
	assert_null(d.msix);
	pthread_mutex_destroy(&d.lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_capability_and_table_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delivery_and_masking, setup, teardown),
		cmocka_unit_test_setup_teardown(test_route_follows_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_routes_falls_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_layouts, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
