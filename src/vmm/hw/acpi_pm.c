/* ACPI fixed hardware (the blocks the FADT points at; ports in layout.h):
 *
 *   PM1a_EVT  +0 PM1_STS (write 1 to clear)  +2 PM1_EN
 *   PM1a_CNT  SCI_EN (reads 1: no SMI_CMD, ACPI mode is fixed), SLP_TYP,
 *             SLP_EN (SLP_TYP = S5 powers the VM off)
 *   PM_TMR    32-bit free-running counter at 3.579545 MHz
 *   RESET     writing ACPI_RESET_VALUE resets the VM
 *   GPE0      +0 GPE0_STS (write 1 to clear)  +2 GPE0_EN; bit 1 is PCI
 *             hotplug (bus/hotplug.c, through acpi_pm_raise_gpe)
 *
 * All five live in one port region from PORT_ACPI_PM1A_EVT and are handled
 * a byte at a time, so any access width the guest picks works. The SCI is
 * level-triggered on IRQ_ACPI_SCI: high while an enabled status bit is set. */
#include "vmm/hw/hw.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/util.h"
#include "vmm/bus/bus.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

#define PM_BASE PORT_ACPI_PM1A_EVT
#define PM_LEN (PORT_ACPI_GPE0 + 4 - PORT_ACPI_PM1A_EVT)

#define PM1_TMR_STS (1u << 0)
#define PM1_BM_STS (1u << 4)
#define PM1_GBL_STS (1u << 5)
#define PM1_PWRBTN_STS (1u << 8)
#define PM1_SLPBTN_STS (1u << 9)
#define PM1_RTC_STS (1u << 10)
#define PM1_WAK_STS (1u << 15)
#define PM1_STS_MASK                                                                           \
	(PM1_TMR_STS | PM1_BM_STS | PM1_GBL_STS | PM1_PWRBTN_STS | PM1_SLPBTN_STS |            \
	 PM1_RTC_STS | PM1_WAK_STS)
#define PM1_EN_MASK (PM1_TMR_STS | PM1_GBL_STS | PM1_PWRBTN_STS | PM1_SLPBTN_STS | PM1_RTC_STS)

#define CNT_SCI_EN (1u << 0)
#define CNT_BM_RLD (1u << 1)
#define CNT_GBL_RLS (1u << 2)
#define CNT_SLP_TYP_SHIFT 10
#define CNT_SLP_TYP_MASK (7u << CNT_SLP_TYP_SHIFT)
#define CNT_SLP_EN (1u << 13)

#define PM_TIMER_HZ 3579545ULL

struct acpi_pm {
	struct vm *vm;
	pthread_mutex_t lock;
	uint16_t pm1_sts, pm1_en, pm1_cnt;
	uint16_t gpe0_sts, gpe0_en;
	uint64_t timer_base_ns;
	uint64_t timer_elapsed_ns; /* PM timer position, for save/restore only */
	int sci_level;
	bool paused; /* the VM is paused: the SCI is not raised */
};

static uint32_t pm_timer(const struct acpi_pm *pm)
{
	uint64_t ns = now_ns() - pm->timer_base_ns;

	/* ns * 3579545 / 1e9 without overflow for centuries of uptime. */
	return (uint32_t)((ns / 1000000000ULL) * PM_TIMER_HZ +
			  (ns % 1000000000ULL) * PM_TIMER_HZ / 1000000000ULL);
}

static void sci_update(struct acpi_pm *pm)
{
	if (pm->paused)
		return; /* resume brings the line up to date */
	int level = (pm->pm1_cnt & CNT_SCI_EN) &&
		    ((pm->pm1_sts & pm->pm1_en & PM1_EN_MASK) || (pm->gpe0_sts & pm->gpe0_en));

	if (level != pm->sci_level) {
		pm->sci_level = level;
		vm_set_irq_line(pm->vm, IRQ_ACPI_SCI, level);
	}
}

static uint8_t byte_of(uint32_t v, unsigned i)
{
	return (uint8_t)(v >> (8 * i));
}

/* port is an absolute port number; timer is sampled once per access. */
static uint8_t pm_read_byte(struct acpi_pm *pm, unsigned port, uint32_t timer)
{
	switch (port) {
	case PORT_ACPI_PM1A_EVT:
	case PORT_ACPI_PM1A_EVT + 1:
		return byte_of(pm->pm1_sts, port - PORT_ACPI_PM1A_EVT);
	case PORT_ACPI_PM1A_EVT + 2:
	case PORT_ACPI_PM1A_EVT + 3:
		return byte_of(pm->pm1_en, port - PORT_ACPI_PM1A_EVT - 2);
	case PORT_ACPI_PM1A_CNT:
	case PORT_ACPI_PM1A_CNT + 1:
		/* SLP_EN and GBL_RLS are write-only: read as 0. */
		return byte_of(pm->pm1_cnt & ~(CNT_SLP_EN | CNT_GBL_RLS), port - PORT_ACPI_PM1A_CNT);
	case PORT_ACPI_PM_TMR:
	case PORT_ACPI_PM_TMR + 1:
	case PORT_ACPI_PM_TMR + 2:
	case PORT_ACPI_PM_TMR + 3:
		return byte_of(timer, port - PORT_ACPI_PM_TMR);
	case PORT_ACPI_GPE0:
	case PORT_ACPI_GPE0 + 1:
		return byte_of(pm->gpe0_sts, port - PORT_ACPI_GPE0);
	case PORT_ACPI_GPE0 + 2:
	case PORT_ACPI_GPE0 + 3:
		return byte_of(pm->gpe0_en, port - PORT_ACPI_GPE0 - 2);
	case PORT_ACPI_RESET:
		return 0;
	}
	return 0xff;
}

static uint16_t set_byte16(uint16_t v, unsigned i, uint8_t b)
{
	return (uint16_t)((v & ~(0xffu << (8 * i))) | ((unsigned)b << (8 * i)));
}

static void pm_write_cnt(struct acpi_pm *pm, unsigned i, uint8_t b)
{
	uint16_t v = set_byte16(pm->pm1_cnt, i, b);

	if (v & CNT_SLP_EN) {
		unsigned typ = (v & CNT_SLP_TYP_MASK) >> CNT_SLP_TYP_SHIFT;

		if (typ == ACPI_S5_SLP_TYP)
			vm_request_stop(pm->vm, VM_STOP_POWEROFF, "guest entered ACPI S5");
		/* Other sleep states are not offered (no \_S1-\_S4): ignored. */
	}
	/* SCI_EN stays set; SLP_EN and GBL_RLS do not latch. */
	pm->pm1_cnt = (uint16_t)((v & (CNT_BM_RLD | CNT_SLP_TYP_MASK)) | CNT_SCI_EN);
}

static void pm_write_byte(struct acpi_pm *pm, unsigned port, uint8_t b)
{
	unsigned i;

	switch (port) {
	case PORT_ACPI_PM1A_EVT:
	case PORT_ACPI_PM1A_EVT + 1:
		i = port - PORT_ACPI_PM1A_EVT;
		pm->pm1_sts &= (uint16_t)~((unsigned)b << (8 * i));
		break;
	case PORT_ACPI_PM1A_EVT + 2:
	case PORT_ACPI_PM1A_EVT + 3:
		i = port - PORT_ACPI_PM1A_EVT - 2;
		pm->pm1_en = set_byte16(pm->pm1_en, i, b) & PM1_EN_MASK;
		break;
	case PORT_ACPI_PM1A_CNT:
	case PORT_ACPI_PM1A_CNT + 1:
		pm_write_cnt(pm, port - PORT_ACPI_PM1A_CNT, b);
		break;
	case PORT_ACPI_GPE0:
	case PORT_ACPI_GPE0 + 1:
		i = port - PORT_ACPI_GPE0;
		pm->gpe0_sts &= (uint16_t)~((unsigned)b << (8 * i));
		break;
	case PORT_ACPI_GPE0 + 2:
	case PORT_ACPI_GPE0 + 3:
		pm->gpe0_en = set_byte16(pm->gpe0_en, port - PORT_ACPI_GPE0 - 2, b);
		break;
	case PORT_ACPI_RESET:
		if (b == ACPI_RESET_VALUE)
			vm_request_stop(pm->vm, VM_STOP_RESET, "guest wrote the ACPI reset register");
		break;
	default:
		break; /* the timer is read-only; holes ignore writes */
	}
}

static void pm_io_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct acpi_pm *pm = opaque;
	uint8_t *out = data;
	uint32_t timer = pm_timer(pm);

	pthread_mutex_lock(&pm->lock);
	for (unsigned i = 0; i < len; i++)
		out[i] = pm_read_byte(pm, (unsigned)(PM_BASE + off + i), timer);
	pthread_mutex_unlock(&pm->lock);
}

static void pm_io_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct acpi_pm *pm = opaque;
	const uint8_t *in = data;

	pthread_mutex_lock(&pm->lock);
	for (unsigned i = 0; i < len; i++)
		pm_write_byte(pm, (unsigned)(PM_BASE + off + i), in[i]);
	sci_update(pm);
	pthread_mutex_unlock(&pm->lock);
}

static const struct io_ops pm_ops = {
	.read = pm_io_read,
	.write = pm_io_write,
};

static void pm_power_on(struct acpi_pm *pm)
{
	pm->pm1_sts = 0;
	pm->pm1_en = 0;
	pm->pm1_cnt = CNT_SCI_EN;
	pm->gpe0_sts = 0;
	pm->gpe0_en = 0;
	pm->timer_base_ns = now_ns();
	pm->timer_elapsed_ns = 0;
}

int acpi_pm_create(struct vm *vm, struct acpi_pm **out)
{
	struct acpi_pm *pm = calloc(1, sizeof(*pm));
	int err;

	if (!pm)
		return -ENOMEM;
	err = -pthread_mutex_init(&pm->lock, NULL);
	if (err)
		goto err_free;
	pm->vm = vm;
	pm_power_on(pm);
	err = io_bus_register(vm_pio_bus(vm), PM_BASE, PM_LEN, &pm_ops, pm, "acpi-pm");
	if (err)
		goto err_lock;
	*out = pm;
	return 0;

err_lock:
	pthread_mutex_destroy(&pm->lock);
err_free:
	free(pm);
	return err;
}

void acpi_pm_press_power_button(struct acpi_pm *pm)
{
	pthread_mutex_lock(&pm->lock);
	pm->pm1_sts |= PM1_PWRBTN_STS;
	sci_update(pm);
	pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_raise_gpe(struct acpi_pm *pm, unsigned bit)
{
	if (bit >= 16)
		return;
	pthread_mutex_lock(&pm->lock);
	pm->gpe0_sts |= (uint16_t)(1u << bit);
	sci_update(pm);
	pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_reset(struct acpi_pm *pm)
{
	pthread_mutex_lock(&pm->lock);
	pm_power_on(pm);
	sci_update(pm);
	pthread_mutex_unlock(&pm->lock);
}

/* The PM timer stops with the VM and goes on from the same count, as
 * kvmclock does (machine.c). */
void acpi_pm_pause(struct acpi_pm *pm)
{
	pthread_mutex_lock(&pm->lock);
	if (!pm->paused)
		pm->timer_elapsed_ns = now_ns() - pm->timer_base_ns;
	pm->paused = true;
	pthread_mutex_unlock(&pm->lock);
}

void acpi_pm_resume(struct acpi_pm *pm)
{
	pthread_mutex_lock(&pm->lock);
	if (pm->paused)
		pm->timer_base_ns = now_ns() - pm->timer_elapsed_ns;
	pm->paused = false;
	sci_update(pm);
	pthread_mutex_unlock(&pm->lock);
}

#define ACPI_PM_STATE_VERSION 1

/* The PM timer is saved as its position and continues from there: guest
 * time does not pass while the VM is saved (kvmclock is restored the
 * same way). */
static const struct state_field acpi_pm_fields[] = {
	STATE_FIELD(struct acpi_pm, pm1_sts, 1),
	STATE_FIELD(struct acpi_pm, pm1_en, 1),
	STATE_FIELD(struct acpi_pm, pm1_cnt, 1),
	STATE_FIELD(struct acpi_pm, gpe0_sts, 1),
	STATE_FIELD(struct acpi_pm, gpe0_en, 1),
	STATE_FIELD(struct acpi_pm, timer_elapsed_ns, 1),
	STATE_FIELD_END,
};

static bool acpi_pm_state_ok(const void *p)
{
	const struct acpi_pm *in = p;

	/* a sleep request is acted on when written, never left pending */
	return !(in->pm1_sts & ~PM1_STS_MASK) && !(in->pm1_en & ~PM1_EN_MASK) &&
	       !(in->pm1_cnt & CNT_SLP_EN) &&
	       in->timer_elapsed_ns < (1ULL << 62);
}

void acpi_pm_save(struct acpi_pm *pm, struct state_writer *w, uint32_t instance)
{
	pthread_mutex_lock(&pm->lock);
	if (!pm->paused)
		pm->timer_elapsed_ns = now_ns() - pm->timer_base_ns;
	state_save_fields(w, STATE_SECTION_ACPI_PM, instance, ACPI_PM_STATE_VERSION,
			  acpi_pm_fields, pm);
	pthread_mutex_unlock(&pm->lock);
}

int acpi_pm_restore(struct acpi_pm *pm, struct state_reader *r)
{
	int ret;

	pthread_mutex_lock(&pm->lock);
	ret = state_restore_fields(r, ACPI_PM_STATE_VERSION, acpi_pm_fields, pm, sizeof(*pm),
				   acpi_pm_state_ok);
	if (!ret) {
		pm->timer_base_ns = now_ns() - pm->timer_elapsed_ns;
		pm->sci_level = -1; /* drive the line again (see serial_restore) */
		sci_update(pm);
	}
	pthread_mutex_unlock(&pm->lock);
	return ret;
}

void acpi_pm_destroy(struct acpi_pm *pm)
{
	if (!pm)
		return;
	io_bus_unregister(vm_pio_bus(pm->vm), PM_BASE);
	pthread_mutex_destroy(&pm->lock);
	free(pm);
}
