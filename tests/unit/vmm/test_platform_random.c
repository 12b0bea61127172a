/* Garbage from a guest must never crash the worker: random port and MMIO
 * accesses of every width, at every platform device's registers, the PCI
 * config mechanisms, BARs and the MSI-X table, from two vCPU-like threads at
 * once while a third feeds the UART. Runs under ASan+UBSan in make check;
 * afterwards the devices must still answer sanely. The seed is printed and
 * can be fixed with CLOISON_RANDOM_SEED to replay a failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "platform_vm_double.h"
#include "vmm/bus/pci.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"

#define ITERATIONS 200000

struct platform {
	struct vm *vm;
	struct pci_bus *pci;
	struct serial *serial;
	struct i8042 *kbd;
	struct rtc *rtc;
	struct acpi_pm *pm;
	struct pci_device dev_a, dev_b;
	atomic_ulong bar_hits;
	atomic_ulong accesses;
	atomic_bool stop;
	uint64_t seed;
};

static void sink(void *opaque, const uint8_t *buf, size_t len)
{
}

static void bar_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct platform *p = opaque;

	atomic_fetch_add(&p->bar_hits, 1);
	if (!pci_msix_access(&p->dev_a, off, data, len, false))
		memset(data, 0x11, len);
}

static void bar_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct platform *p = opaque;

	atomic_fetch_add(&p->bar_hits, 1);
	pci_msix_access(&p->dev_a, off, (void *)data, len, true);
}

static const struct io_ops bar_ops = { bar_read, bar_write };

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static const uint16_t hot_ports[] = {
	PORT_COM1, PORT_I8042_DATA, PORT_I8042_CMD, PORT_RTC, PORT_PCI_CONFIG_ADDR,
	PORT_PCI_CONFIG_DATA, PORT_ACPI_PM1A_EVT, PORT_ACPI_PM1A_CNT, PORT_ACPI_PM_TMR,
	PORT_ACPI_RESET, PORT_ACPI_GPE0, 0xc000,
};

static void one_access(struct platform *p, uint64_t *rng)
{
	uint64_t r = xorshift(rng), data = xorshift(rng), addr;
	static const unsigned lens[] = { 1, 2, 4, 8, 3 };
	unsigned len = lens[r % 5];
	bool write = (r >> 8) & 1;
	struct io_bus *bus;

	switch ((r >> 9) % 8) {
	case 0: /* anywhere in port space */
		bus = p->vm->pio;
		addr = (r >> 16) & 0xffff;
		break;
	case 1:
	case 2: /* near a device's ports */
		bus = p->vm->pio;
		addr = hot_ports[(r >> 16) % (sizeof(hot_ports) / sizeof(hot_ports[0]))] +
		       ((r >> 24) % 40);
		break;
	case 3: /* the CF8 latch, pointed at a real device most of the time */
		bus = p->vm->pio;
		addr = PORT_PCI_CONFIG_ADDR;
		len = 4;
		write = true;
		data = ((r >> 20) & 1 ? 0x80000000u : 0) | ((r >> 21) % 4) << 11 | (data & 0xff);
		if ((r >> 30) % 16 == 0)
			data = xorshift(rng);
		break;
	case 4:
	case 5: /* ECAM of slots 0-3, with their BARs and MSI-X cap */
		bus = p->vm->mmio;
		addr = LAYOUT_PCI_ECAM_BASE + (((r >> 16) % 4) << 15) + ((r >> 24) % 0x1010);
		if ((r >> 40) % 64 == 0)
			addr = LAYOUT_PCI_ECAM_BASE + ((r >> 16) % LAYOUT_PCI_ECAM_SIZE);
		break;
	case 6: /* wherever device A's BAR is now, incl. the MSI-X table */
		bus = p->vm->mmio;
		addr = p->dev_a.bars[0].addr + ((r >> 16) % 0x4100);
		break;
	default: /* the PCI window and beyond */
		bus = p->vm->mmio;
		addr = LAYOUT_PCI_MMIO_BASE + ((r >> 16) % (LAYOUT_PCI_MMIO_SIZE + 0x1000000));
		break;
	}
	if (write && addr == PORT_PCI_CONFIG_ADDR + 1 && len == 1)
		data &= ~0x04ull; /* keep 0xCF9 resets rare: they only get recorded */
	io_bus_access(bus, addr, &data, len, write);
	atomic_fetch_add(&p->accesses, 1);
}

static void *vcpu_thread(void *arg)
{
	struct platform *p = arg;
	uint64_t rng = p->seed ^ (uint64_t)(uintptr_t)pthread_self();

	if (!rng)
		rng = 1;
	for (unsigned i = 0; i < ITERATIONS && !atomic_load(&p->stop); i++)
		one_access(p, &rng);
	return NULL;
}

static void *feeder_thread(void *arg)
{
	struct platform *p = arg;
	const uint8_t junk[7] = { 'x', 0, 0xff, '\n', 0x1b, '[', 'A' };
	uint64_t one = 1;

	for (unsigned k = 0; !atomic_load(&p->stop); k++) {
		int fd = pci_msix_vector_eventfd(&p->dev_a, k % 8);

		serial_receive(p->serial, junk, sizeof(junk));
		acpi_pm_press_power_button(p->pm);
		/* Interrupts from a device thread, as virtio raises them. */
		pci_msix_notify(&p->dev_a, k % 9);
		pci_msix_notify(&p->dev_b, k % 4);
		if (fd >= 0 && write(fd, &one, sizeof(one)) != sizeof(one))
			fail_msg("eventfd write failed");
		usleep(50);
	}
	return NULL;
}

static void build(struct platform *p)
{
	p->vm = vmd_create();
	p->vm->ncpus = 2;
	assert_int_equal(pci_bus_create(p->vm, p->vm->pio, p->vm->mmio, &p->pci), 0);
	assert_int_equal(serial_create(p->vm, PORT_COM1, IRQ_COM1, &p->serial), 0);
	serial_set_output(p->serial, sink, NULL);
	assert_int_equal(i8042_create(p->vm, &p->kbd), 0);
	assert_int_equal(rtc_create(p->vm, 256ULL << 20, 0, &p->rtc), 0);
	assert_int_equal(acpi_pm_create(p->vm, &p->pm), 0);

	pci_device_init(&p->dev_a, "rand-a", 0x1af4, 0x1041, 0x020000, 0x1af4, 1);
	assert_int_equal(pci_device_set_bar(&p->dev_a, 0, PCI_BAR_MMIO32, 0x4000, &bar_ops, p), 0);
	assert_int_equal(pci_device_set_bar(&p->dev_a, 1, PCI_BAR_IO, 0x40, &bar_ops, p), 0);
	assert_int_equal(pci_msix_init(&p->dev_a, p->vm, 0, 8, 0x2000, 0x3000), 0);
	assert_int_equal(pci_bus_add_device(p->pci, &p->dev_a), 0);
	pci_device_init(&p->dev_b, "rand-b", 0x1af4, 0x1042, 0x010000, 0x1af4, 2);
	assert_int_equal(pci_device_set_bar(&p->dev_b, 0, PCI_BAR_MMIO64, 0x1000, NULL, NULL), 0);
	assert_int_equal(pci_msix_init(&p->dev_b, p->vm, 0, 3, 0, 0x800), 0);
	assert_int_equal(pci_bus_add_device(p->pci, &p->dev_b), 0);
}

static void tear_down(struct platform *p)
{
	pci_bus_remove_device(p->pci, &p->dev_b);
	pci_bus_remove_device(p->pci, &p->dev_a);
	pthread_mutex_destroy(&p->dev_a.lock);
	pthread_mutex_destroy(&p->dev_b.lock);
	acpi_pm_destroy(p->pm);
	rtc_destroy(p->rtc);
	i8042_destroy(p->kbd);
	serial_destroy(p->serial);
	pci_bus_destroy(p->pci);
	vmd_destroy(p->vm);
}

/* After the storm (and a machine reset, as the worker does on reboot) the
 * devices still behave. */
static void check_sane(struct platform *p)
{
	struct vm *vm = p->vm;
	uint64_t v = 0;

	serial_reset(p->serial);
	i8042_reset(p->kbd);
	rtc_reset(p->rtc);
	acpi_pm_reset(p->pm);
	pci_bus_reset(p->pci);

	assert_int_equal(vmd_inb(vm, PORT_COM1 + 5) & 0x60, 0x60);
	vmd_outb(vm, PORT_I8042_CMD, 0xaa);
	assert_int_equal(vmd_inb(vm, PORT_I8042_DATA), 0x55);
	vmd_outb(vm, PORT_RTC, 0x0d);
	assert_int_equal(vmd_inb(vm, PORT_RTC + 1), 0x80);
	assert_int_equal(vmd_inw(vm, PORT_ACPI_PM1A_EVT + 2), 0);
	assert_int_equal(vmd_mmio_read(vm, LAYOUT_PCI_ECAM_BASE, 4), 0x29c08086);
	assert_int_equal(vmd_mmio_read(vm, LAYOUT_PCI_ECAM_BASE + (1 << 15), 4), 0x10411af4);
	assert_true(p->dev_a.bars[0].mapped);
	assert_true(io_bus_access(vm->mmio, p->dev_a.bars[0].addr + 0x200c, &v, 4, false));
	assert_int_equal(v & 1, 1); /* MSI-X vectors masked again */
	assert_false(pci_msix_enabled(&p->dev_a));
	/* Only the stops a guest may ask for were requested. */
	assert_true(vm->stop == VM_STOP_NONE || vm->stop == VM_STOP_RESET ||
		    vm->stop == VM_STOP_POWEROFF);
}

static void test_random_accesses(void **state)
{
	struct platform p;
	pthread_t vcpu[2], feeder;
	const char *env = getenv("CLOISON_RANDOM_SEED");

	memset(&p, 0, sizeof(p));
	p.seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
	if (!p.seed)
		p.seed = 1;
	fprintf(stderr, "random platform test: CLOISON_RANDOM_SEED=%#llx\n",
		(unsigned long long)p.seed);
	build(&p);
	assert_int_equal(pthread_create(&feeder, NULL, feeder_thread, &p), 0);
	for (unsigned i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&vcpu[i], NULL, vcpu_thread, &p), 0);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(vcpu[i], NULL);
	atomic_store(&p.stop, true);
	pthread_join(feeder, NULL);
	/* The storm did reach the devices. */
	fprintf(stderr, "%lu accesses, %lu to device A's BARs, %u MSIs, %u stop requests\n",
		atomic_load(&p.accesses), atomic_load(&p.bar_hits), p.vm->nmsi, p.vm->nstops);
	assert_int_equal(atomic_load(&p.accesses), 2 * ITERATIONS);
	assert_true(atomic_load(&p.bar_hits) > 0);
	check_sane(&p);
	tear_down(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_accesses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
