/* SMP from ring 3: the LAPIC page is mapped user-accessible, so INIT-SIPI-SIPI
 * to every processor the MADT lists is sent from here; the trampoline is
 * copied below 1 MiB; each AP comes up through boot.S into user_ap_main(). */
#include "user.h"

#define LAPIC_ID 0x20
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define ICR_INIT 0x4500
#define ICR_STARTUP 0x4600

extern char trampoline_start[], trampoline_end[];
extern uint64_t ap_user_stacks;

/* The APs enter ring 3 with only their index: this is how they find the
 * guest (set once, before the first SIPI). */
static struct guest *ap_guest;

void lapic_write(unsigned reg, uint32_t v) { mmio_write32(LAPIC_BASE + reg, v); }
uint32_t lapic_read(unsigned reg) { return mmio_read32(LAPIC_BASE + reg); }

static void send_ipi(uint32_t apic_id, uint32_t icr)
{
	lapic_write(LAPIC_ICR_HI, apic_id << 24);
	lapic_write(LAPIC_ICR_LO, icr);
}

void smp_start(struct guest *g)
{
	const struct acpi_info *a = &g->acpi;
	uint32_t expected = 1;
	uint64_t deadline;
	void *stacks;

	g->bsp_apic_id = lapic_read(LAPIC_ID) >> 24;
	g->cpus_online = 1;
	if (a->ncpus <= 1)
		return;
	stacks = mm_alloc(g, (uint64_t)(a->ncpus + 1) * USTACK_SIZE, PAGE_SIZE);
	if (!stacks) {
		out("smp: no memory for AP stacks\n");
		return;
	}
	memcpy((void *)TRAMPOLINE_ADDR, trampoline_start, (size_t)(trampoline_end - trampoline_start));
	ap_user_stacks = (uint64_t)(uintptr_t)stacks;
	ap_guest = g;
	mb();
	for (unsigned i = 0; i < a->ncpus; i++) {
		if (a->apic_ids[i] == g->bsp_apic_id || a->apic_ids[i] >= 255)
			continue;
		send_ipi(a->apic_ids[i], ICR_INIT);
		expected++;
	}
	busy_wait_us(g, 10000);
	for (int round = 0; round < 2; round++) {
		for (unsigned i = 0; i < a->ncpus; i++)
			if (a->apic_ids[i] != g->bsp_apic_id && a->apic_ids[i] < 255)
				send_ipi(a->apic_ids[i], ICR_STARTUP | (TRAMPOLINE_ADDR >> 12));
		busy_wait_us(g, 200);
	}
	deadline = timer_ns(g) + 5000000000ULL;
	while (g->cpus_online < expected && timer_ns(g) < deadline)
		timer_sleep_ns(g, 1000000);
	if (g->cpus_online < expected)
		out("smp: only %u of %u CPUs came up\n", g->cpus_online, expected);
}

void smp_run_on_aps(struct guest *g, void (*fn)(struct guest *g, uint32_t idx, void *arg), void *arg)
{
	g->ap_fn = fn;
	g->ap_arg = arg;
	__atomic_fetch_add(&g->ap_gen, 1, __ATOMIC_SEQ_CST);
	/* Fixed IPI to all but self; an AP between its check and its hlt keeps
	 * it pending (IF=0 in ring 3) and wakes at once. */
	lapic_write(LAPIC_ICR_HI, 0);
	lapic_write(LAPIC_ICR_LO, 0xc0000 | VEC_WAKE);
}

void user_ap_main(uint32_t idx)
{
	struct guest *g = ap_guest;
	uint64_t seen = 0;

	__atomic_fetch_add(&g->cpus_online, 1, __ATOMIC_SEQ_CST);
	for (;;) { /* parked in hlt until smp_run_on_aps() */
		uint64_t gen = __atomic_load_n(&g->ap_gen, __ATOMIC_ACQUIRE);
		if (gen != seen) {
			seen = gen;
			g->ap_fn(g, idx, g->ap_arg);
		}
		sys_call(SYS_IDLE, 0, 0, 0, 0);
	}
}
