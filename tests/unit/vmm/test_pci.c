#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "platform_vm_double.h"
#include "vmm/bus/pci.h"
#include "vmm/layout.h"

struct recorder {
	uint64_t last_off;
	uint64_t last_val;
	unsigned reads, writes;
};

static void rec_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct recorder *r = opaque;

	r->reads++;
	r->last_off = off;
	memset(data, 0x5a, len);
}

static void rec_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct recorder *r = opaque;

	r->writes++;
	r->last_off = off;
	r->last_val = 0;
	memcpy(&r->last_val, data, len);
}

static const struct io_ops rec_ops = { rec_read, rec_write };

struct fixture {
	struct vm *vm;
	struct pci_bus *bus;
	struct pci_device dev;
	struct recorder bar0, bar1, bar2;
	unsigned written_calls, written_off, written_len;
};

static void on_written(struct pci_device *dev, unsigned off, unsigned len)
{
	struct fixture *f = dev->opaque;

	f->written_calls++;
	f->written_off = off;
	f->written_len = len;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->vm = vmd_create();
	assert_int_equal(pci_bus_create(f->vm, f->vm->pio, f->vm->mmio, &f->bus), 0);
	f->vm->pci = f->bus;
	pci_device_init(&f->dev, "testdev", 0x1af4, 0x1042, 0x010000, 0x1af4, 0x1100);
	f->dev.opaque = f;
	f->dev.config_written = on_written;
	assert_int_equal(pci_device_set_bar(&f->dev, 0, PCI_BAR_MMIO32, 0x1000, &rec_ops, &f->bar0), 0);
	assert_int_equal(pci_device_set_bar(&f->dev, 1, PCI_BAR_IO, 0x20, &rec_ops, &f->bar1), 0);
	assert_int_equal(pci_device_set_bar(&f->dev, 2, PCI_BAR_MMIO64, 0x4000, &rec_ops, &f->bar2), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->dev.bus)
		pci_bus_remove_device(f->bus, &f->dev);
	pci_bus_destroy(f->bus);
	vmd_destroy(f->vm);
	free(f);
	return 0;
}

static uint32_t cf8_addr(unsigned slot, unsigned fn, unsigned reg)
{
	return 0x80000000u | slot << 11 | fn << 8 | (reg & 0xfc);
}

static uint32_t cfg_read(struct fixture *f, unsigned slot, unsigned reg, unsigned len)
{
	vmd_outl(f->vm, PORT_PCI_CONFIG_ADDR, cf8_addr(slot, 0, reg));
	if (len == 1)
		return vmd_inb(f->vm, (uint16_t)(PORT_PCI_CONFIG_DATA + (reg & 3)));
	if (len == 2)
		return vmd_inw(f->vm, (uint16_t)(PORT_PCI_CONFIG_DATA + (reg & 2)));
	return vmd_inl(f->vm, PORT_PCI_CONFIG_DATA);
}

static void cfg_write(struct fixture *f, unsigned slot, unsigned reg, unsigned len, uint32_t v)
{
	vmd_outl(f->vm, PORT_PCI_CONFIG_ADDR, cf8_addr(slot, 0, reg));
	if (len == 1)
		vmd_outb(f->vm, (uint16_t)(PORT_PCI_CONFIG_DATA + (reg & 3)), (uint8_t)v);
	else if (len == 2)
		vmd_outw(f->vm, (uint16_t)(PORT_PCI_CONFIG_DATA + (reg & 2)), (uint16_t)v);
	else
		vmd_outl(f->vm, PORT_PCI_CONFIG_DATA, v);
}

static uint64_t ecam(unsigned slot, unsigned fn, unsigned reg)
{
	return LAYOUT_PCI_ECAM_BASE + ((uint64_t)slot << 15) + ((uint64_t)fn << 12) + reg;
}

static void test_host_bridge_and_empty_slots(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(cfg_read(f, 0, 0, 4), 0x29c08086);
	assert_int_equal(vmd_mmio_read(f->vm, ecam(0, 0, 0), 4), 0x29c08086);
	assert_int_equal(cfg_read(f, 0, 0x0b, 1), 0x06); /* bridge class */
	assert_int_equal(cfg_read(f, 0, 0x0e, 1), 0x00); /* single function */
	/* Nothing in slot 1 yet, nor in function 1 of slot 0. */
	assert_int_equal(cfg_read(f, 1, 0, 4), 0xffffffff);
	assert_int_equal(cfg_read(f, 1, 0, 2), 0xffff);
	assert_int_equal(vmd_mmio_read(f->vm, ecam(1, 0, 0), 4), 0xffffffff);
	assert_int_equal(vmd_mmio_read(f->vm, ecam(0, 1, 0), 4), 0xffffffff);
	vmd_outl(f->vm, PORT_PCI_CONFIG_ADDR, 0x80000100);
	assert_int_equal(vmd_inl(f->vm, PORT_PCI_CONFIG_DATA), 0xffffffff);
	/* The enable bit and the bus number are honoured. */
	vmd_outl(f->vm, PORT_PCI_CONFIG_ADDR, 0x00000000);
	assert_int_equal(vmd_inl(f->vm, PORT_PCI_CONFIG_DATA), 0xffffffff);
	vmd_outl(f->vm, PORT_PCI_CONFIG_ADDR, 0x80010000);
	assert_int_equal(vmd_inl(f->vm, PORT_PCI_CONFIG_DATA), 0xffffffff);
	/* The latch reads back (dword only). */
	vmd_outl(f->vm, PORT_PCI_CONFIG_ADDR, 0x80000008);
	assert_int_equal(vmd_inl(f->vm, PORT_PCI_CONFIG_ADDR), 0x80000008);
	/* The bridge ignores writes to its ids. */
	cfg_write(f, 0, 0, 4, 0x12345678);
	assert_int_equal(cfg_read(f, 0, 0, 4), 0x29c08086);
}

static void test_add_device_places_bars(void **state)
{
	struct fixture *f = *state;
	uint32_t b0, b1, b2lo, b2hi;
	uint8_t v;

	assert_int_equal(pci_bus_add_device(f->bus, &f->dev), 0);
	assert_int_equal(f->dev.slot, 1);
	assert_int_equal(cfg_read(f, 1, 0, 4), 0x10421af4);
	assert_int_equal(cfg_read(f, 1, 0x2c, 4), 0x11001af4);
	assert_int_equal(cfg_read(f, 1, 0x09, 1) | cfg_read(f, 1, 0x0a, 2) << 8, 0x010000);
	assert_int_equal(cfg_read(f, 1, 0x3d, 1), 0); /* no INTx pin */
	assert_int_equal(cfg_read(f, 1, 0x04, 2) & 0x3, 0x3);
	b0 = cfg_read(f, 1, 0x10, 4);
	b1 = cfg_read(f, 1, 0x14, 4);
	b2lo = cfg_read(f, 1, 0x18, 4);
	b2hi = cfg_read(f, 1, 0x1c, 4);
	assert_true(b0 >= LAYOUT_PCI_MMIO_BASE && b0 % 0x1000 == 0);
	assert_int_equal(b1 & 1, 1);
	assert_true((b1 & ~3u) >= 0xc000 && (b1 & ~3u) % 0x20 == 0);
	assert_int_equal(b2lo & 0xf, 0x4);
	assert_int_equal((b2lo & ~0xfu) % 0x4000, 0);
	assert_int_equal(b2hi, 0);
	assert_int_equal(f->dev.bars[0].addr, b0);
	assert_true(f->dev.bars[0].mapped);

	/* Accesses reach the device at BAR-relative offsets. */
	vmd_mmio_write(f->vm, b0 + 0x10, 0xabcd, 2);
	assert_int_equal(f->bar0.last_off, 0x10);
	assert_int_equal(f->bar0.last_val, 0xabcd);
	v = (uint8_t)vmd_inb(f->vm, (uint16_t)((b1 & ~3u) + 5));
	assert_int_equal(v, 0x5a);
	assert_int_equal(f->bar1.last_off, 5);
	vmd_mmio_read(f->vm, (b2lo & ~0xfu) + 0x3ff8, 8);
	assert_int_equal(f->bar2.last_off, 0x3ff8);
}

static void test_bar_sizing(void **state)
{
	struct fixture *f = *state;
	uint32_t orig0, orig1, cmd;

	assert_int_equal(pci_bus_add_device(f->bus, &f->dev), 0);
	/* Linux's __pci_read_base: decode off, all-ones, read, restore. */
	cmd = cfg_read(f, 1, 0x04, 2);
	cfg_write(f, 1, 0x04, 2, cmd & ~3u);
	orig0 = cfg_read(f, 1, 0x10, 4);
	orig1 = cfg_read(f, 1, 0x14, 4);
	cfg_write(f, 1, 0x10, 4, 0xffffffff);
	assert_int_equal(cfg_read(f, 1, 0x10, 4), 0xfffff000);
	cfg_write(f, 1, 0x14, 4, 0xffffffff);
	assert_int_equal(cfg_read(f, 1, 0x14, 4), 0xffffffe1);
	cfg_write(f, 1, 0x18, 4, 0xffffffff);
	cfg_write(f, 1, 0x1c, 4, 0xffffffff);
	assert_int_equal(cfg_read(f, 1, 0x18, 4), 0xffffc004);
	assert_int_equal(cfg_read(f, 1, 0x1c, 4), 0xffffffff);
	/* Unused BARs and the ROM BAR size to 0. */
	cfg_write(f, 1, 0x20, 4, 0xffffffff);
	assert_int_equal(cfg_read(f, 1, 0x20, 4), 0);
	cfg_write(f, 1, 0x30, 4, 0xffffffff);
	assert_int_equal(cfg_read(f, 1, 0x30, 4), 0);
	cfg_write(f, 1, 0x10, 4, orig0);
	cfg_write(f, 1, 0x14, 4, orig1);
	cfg_write(f, 1, 0x18, 4, orig0 + 0x4000);
	cfg_write(f, 1, 0x1c, 4, 0);
	cfg_write(f, 1, 0x04, 2, cmd);
	assert_int_equal(cfg_read(f, 1, 0x10, 4), orig0);
	assert_true(f->dev.bars[0].mapped);
	assert_true(f->dev.bars[2].mapped);
	assert_int_equal(f->dev.bars[2].addr, orig0 + 0x4000);
}

static void test_bar_relocation_and_decode(void **state)
{
	struct fixture *f = *state;
	uint32_t old, new_addr = (uint32_t)LAYOUT_PCI_MMIO_BASE + 0x100000;
	uint64_t v;
	unsigned reads;

	assert_int_equal(pci_bus_add_device(f->bus, &f->dev), 0);
	old = cfg_read(f, 1, 0x10, 4);
	/* Moved with decode on: the region follows at once. */
	cfg_write(f, 1, 0x10, 4, new_addr);
	assert_int_equal(f->dev.bars[0].addr, new_addr);
	assert_true(io_bus_access(f->vm->mmio, new_addr + 4, &v, 4, false));
	assert_false(io_bus_access(f->vm->mmio, old + 4, &v, 4, false));
	/* The config_written hook saw the BAR write. */
	assert_true(f->written_calls > 0);
	assert_int_equal(f->written_off, 0x10);
	assert_int_equal(f->written_len, 4);
	/* Memory decode off: no MMIO BAR answers; I/O still does. */
	cfg_write(f, 1, 0x04, 2, 0x0001);
	assert_false(f->dev.bars[0].mapped);
	assert_int_equal(f->dev.bars[0].addr, 0);
	reads = f->bar0.reads;
	assert_false(io_bus_access(f->vm->mmio, new_addr + 4, &v, 4, false));
	assert_int_equal(f->bar0.reads, reads);
	assert_true(f->dev.bars[1].mapped);
	cfg_write(f, 1, 0x04, 2, 0x0000);
	assert_false(f->dev.bars[1].mapped);
	cfg_write(f, 1, 0x04, 2, 0x0003);
	assert_true(io_bus_access(f->vm->mmio, new_addr + 4, &v, 4, false));
	/* A byte-wise move (high byte last) ends up where the dword says. */
	cfg_write(f, 1, 0x13, 1, 0xd0);
	assert_int_equal(f->dev.bars[0].addr, (new_addr & 0x00ffffffu) | 0xd0000000u);
	/* Moving onto another BAR: refused by the bus, the BAR goes dark. */
	cfg_write(f, 1, 0x10, 4, f->dev.bars[2].addr);
	assert_false(f->dev.bars[0].mapped);
	assert_true(f->dev.bars[2].mapped);
	cfg_write(f, 1, 0x10, 4, old);
	assert_true(f->dev.bars[0].mapped);
	/* Writes of read-only header fields are dropped; writable ones stick. */
	cfg_write(f, 1, 0x00, 4, 0);
	assert_int_equal(cfg_read(f, 1, 0, 4), 0x10421af4);
	cfg_write(f, 1, 0x3c, 1, 0x0b);
	assert_int_equal(cfg_read(f, 1, 0x3c, 1), 0x0b);
	cfg_write(f, 1, 0x08, 4, 0xffffffff);
	assert_int_equal(cfg_read(f, 1, 0x08, 4), 0x01000000);
}

static void test_cf8_and_ecam_agree(void **state)
{
	struct fixture *f = *state;
	uint8_t cap[8] = { 0x09, 0, 8, 1, 2, 3, 4, 5 };

	assert_int_equal(pci_device_add_cap(&f->dev, cap, sizeof(cap)), 0x40);
	assert_int_equal(pci_bus_add_device(f->bus, &f->dev), 0);
	for (unsigned slot = 0; slot < 3; slot++) {
		for (unsigned reg = 0; reg < 256; reg += 4) {
			uint32_t a = cfg_read(f, slot, reg, 4);

			assert_int_equal(vmd_mmio_read(f->vm, ecam(slot, 0, reg), 4), a);
			for (unsigned i = 0; i < 4; i++)
				assert_int_equal(vmd_mmio_read(f->vm, ecam(slot, 0, reg + i), 1),
						 (a >> (8 * i)) & 0xff);
			assert_int_equal(cfg_read(f, slot, reg + 2, 2), a >> 16);
			assert_int_equal(cfg_read(f, slot, reg + 3, 1), a >> 24);
		}
	}
	/* Written one way, read the other. */
	vmd_mmio_write(f->vm, ecam(1, 0, 0x3c), 0x0e, 1);
	assert_int_equal(cfg_read(f, 1, 0x3c, 1), 0x0e);
	cfg_write(f, 1, 0x0c, 1, 0x10);
	assert_int_equal(vmd_mmio_read(f->vm, ecam(1, 0, 0x0c), 1), 0x10);
	/* Extended config space exists through ECAM only, and is empty. */
	assert_int_equal(vmd_mmio_read(f->vm, ecam(1, 0, 0x100), 4), 0);
	assert_int_equal(vmd_mmio_read(f->vm, ecam(1, 0, 0xffc), 4), 0);
	/* A qword ECAM read is two dword cycles. */
	assert_int_equal(vmd_mmio_read(f->vm, ecam(1, 0, 0), 8),
			 (uint64_t)cfg_read(f, 1, 4, 4) << 32 | cfg_read(f, 1, 0, 4));
}

static void test_capability_chain(void **state)
{
	struct fixture *f = *state;
	uint8_t vndr[16] = { 0x09, 0xee, 16 }, pm[8] = { 0x01, 0, 0x03, 0x00 };
	uint8_t big[200] = { 0x09 };
	unsigned ids[4], n = 0, ptr;
	int a, b;

	assert_int_equal(cfg_read(f, 0, 0x06, 2) & 0x10, 0); /* bridge: none */
	a = pci_device_add_cap(&f->dev, vndr, sizeof(vndr));
	b = pci_device_add_cap(&f->dev, pm, 6); /* odd length: next is realigned */
	assert_int_equal(a, 0x40);
	assert_int_equal(b, 0x50);
	assert_int_equal(pci_device_add_cap(&f->dev, vndr, sizeof(vndr)), 0x58);
	assert_int_equal(pci_device_add_cap(&f->dev, big, sizeof(big)), -ENOSPC);
	assert_int_equal(pci_bus_add_device(f->bus, &f->dev), 0);
	assert_int_equal(cfg_read(f, 1, 0x06, 2) & 0x10, 0x10);
	for (ptr = cfg_read(f, 1, 0x34, 1); ptr && n < 4; ptr = cfg_read(f, 1, ptr + 1, 1)) {
		assert_int_equal(ptr % 4, 0);
		ids[n++] = cfg_read(f, 1, ptr, 1);
	}
	assert_int_equal(n, 3);
	assert_int_equal(ids[0], 0x09);
	assert_int_equal(ids[1], 0x01);
	assert_int_equal(ids[2], 0x09);
	/* The caller's next pointer was replaced; the body is intact. */
	assert_int_equal(cfg_read(f, 1, 0x42, 1), 16);
	/* Capability bodies are read-only unless a device opens them. */
	cfg_write(f, 1, 0x42, 1, 0x77);
	assert_int_equal(cfg_read(f, 1, 0x42, 1), 16);
}

static void test_bad_bars_and_full_bus(void **state)
{
	struct fixture *f = *state;
	static struct pci_device many[PCI_MAX_DEVICES];
	struct pci_device d;
	unsigned added = 0;
	int ret = 0;

	pci_device_init(&d, "bad", 1, 2, 0, 0, 0);
	assert_int_equal(pci_device_set_bar(&d, 6, PCI_BAR_MMIO32, 0x1000, &rec_ops, NULL), -EINVAL);
	assert_int_equal(pci_device_set_bar(&d, 0, PCI_BAR_MMIO32, 0x1001, &rec_ops, NULL), -EINVAL);
	assert_int_equal(pci_device_set_bar(&d, 0, PCI_BAR_MMIO32, 8, &rec_ops, NULL), -EINVAL);
	assert_int_equal(pci_device_set_bar(&d, 0, PCI_BAR_IO, 512, &rec_ops, NULL), -EINVAL);
	assert_int_equal(pci_device_set_bar(&d, 5, PCI_BAR_MMIO64, 0x1000, &rec_ops, NULL), -EINVAL);
	assert_int_equal(pci_device_set_bar(&d, 0, PCI_BAR_MMIO64, 0x1000, &rec_ops, NULL), 0);
	assert_int_equal(pci_device_set_bar(&d, 1, PCI_BAR_MMIO32, 0x1000, &rec_ops, NULL), -EINVAL);
	assert_int_equal(pci_device_set_bar(&d, 0, PCI_BAR_MMIO32, 0x1000, &rec_ops, NULL), -EINVAL);
	pthread_mutex_destroy(&d.lock);

	/* 31 free slots, then -ENOSPC. */
	for (unsigned i = 0; i < PCI_MAX_DEVICES; i++) {
		pci_device_init(&many[i], "many", 1, (uint16_t)i, 0, 0, 0);
		assert_int_equal(pci_device_set_bar(&many[i], 0, PCI_BAR_MMIO32, 0x1000, &rec_ops,
						    &f->bar0), 0);
		ret = pci_bus_add_device(f->bus, &many[i]);
		if (ret)
			break;
		added++;
	}
	assert_int_equal(added, PCI_MAX_DEVICES - 1);
	assert_int_equal(ret, -ENOSPC);
	for (unsigned i = 0; i < added; i++)
		pci_bus_remove_device(f->bus, &many[i]);
	for (unsigned i = 0; i < PCI_MAX_DEVICES; i++)
		pthread_mutex_destroy(&many[i].lock);
	assert_int_equal(cfg_read(f, 1, 0, 4), 0xffffffff);
	/* A BAR bigger than the MMIO window left does not fit. */
	pci_device_init(&d, "huge", 1, 2, 0, 0, 0);
	assert_int_equal(pci_device_set_bar(&d, 0, PCI_BAR_MMIO64, LAYOUT_PCI_MMIO_SIZE * 2,
					    &rec_ops, NULL), 0);
	assert_int_equal(pci_bus_add_device(f->bus, &d), -ENOSPC);
	pthread_mutex_destroy(&d.lock);
}

static void test_reset_and_remove(void **state)
{
	struct fixture *f = *state;
	uint32_t home;
	uint64_t v;

	assert_int_equal(pci_bus_add_device(f->bus, &f->dev), 0);
	home = cfg_read(f, 1, 0x10, 4);
	cfg_write(f, 1, 0x10, 4, home + 0x10000);
	cfg_write(f, 1, 0x3c, 1, 5);
	pci_bus_reset(f->bus);
	assert_int_equal(cfg_read(f, 1, 0x10, 4), home);
	assert_int_equal(cfg_read(f, 1, 0x3c, 1), 0);
	assert_int_equal(f->dev.bars[0].addr, home);
	/* 0xCF9: a byte write with RST_CPU requests a reset. */
	vmd_outb(f->vm, PORT_PCI_CONFIG_ADDR + 1, 0x02);
	assert_int_equal(f->vm->nstops, 0);
	vmd_outb(f->vm, PORT_PCI_CONFIG_ADDR + 1, 0x06);
	assert_int_equal(f->vm->nstops, 1);
	assert_int_equal(f->vm->stop, VM_STOP_RESET);
	pci_bus_remove_device(f->bus, &f->dev);
	assert_false(io_bus_access(f->vm->mmio, home, &v, 4, false));
	assert_int_equal(cfg_read(f, 1, 0, 4), 0xffffffff);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_bridge_and_empty_slots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_device_places_bars, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_sizing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bar_relocation_and_decode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cf8_and_ecam_agree, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capability_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_bars_and_full_bus, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_and_remove, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
