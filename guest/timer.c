/* Time from ring 3: the TSC, calibrated against the ACPI PM timer (or CPUID
 * 0x15/0x16/0x40000010), and sleeping in hlt with the LAPIC timer so an idle
 * guest costs the shared host nothing. */
#include "user.h"

#define PM_TIMER_HZ 3579545ULL
#define NS 1000000000ULL
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0

static uint64_t calibrate_pm_timer(const struct guest *g)
{
	uint32_t mask = g->acpi.pm_tmr_32 ? 0xffffffffu : 0xffffffu;
	uint32_t p0, p1, d = 0;
	uint64_t t0, t1;

	p0 = io_in32((uint16_t)g->acpi.pm_tmr);
	t0 = rdtsc();
	do {
		p1 = io_in32((uint16_t)g->acpi.pm_tmr);
		t1 = rdtsc();
		d = (p1 - p0) & mask;
		if (t1 - t0 > 20000000000ULL)
			return 0; /* the timer does not tick */
	} while (d < PM_TIMER_HZ / 50);
	return (t1 - t0) * PM_TIMER_HZ / d;
}

static uint64_t tsc_hz_from_cpuid(void)
{
	uint32_t r[4];

	cpuid(0x40000000, 0, r);
	if (r[0] >= 0x40000010) {
		cpuid(0x40000010, 0, r);
		if (r[0])
			return (uint64_t)r[0] * 1000;
	}
	cpuid(0, 0, r);
	if (r[0] >= 0x15) {
		cpuid(0x15, 0, r);
		if (r[0] && r[1] && r[2])
			return (uint64_t)r[2] * r[1] / r[0];
	}
	if (r[0] >= 0x16) {
		cpuid(0x16, 0, r);
		if (r[0])
			return (uint64_t)r[0] * 1000000;
	}
	return 0;
}

void busy_wait_us(const struct guest *g, uint64_t us)
{
	uint64_t end = rdtsc() + g->tsc_hz / 1000000 * us;

	while (rdtsc() < end)
		cpu_relax();
}

uint64_t timer_ns(const struct guest *g)
{
	uint64_t t = rdtsc() - g->boot_tsc;

	return t / g->tsc_hz * NS + (t % g->tsc_hz) * NS / g->tsc_hz;
}

uint64_t timer_ns_to_tsc(const struct guest *g, uint64_t ns)
{
	return ns / NS * g->tsc_hz + (ns % NS) * g->tsc_hz / NS;
}

void timer_init(struct guest *g)
{
	uint32_t r[4];
	const char *src = "pm-timer";

	g->boot_tsc = rdtsc();
	if (g->acpi.pm_tmr)
		g->tsc_hz = calibrate_pm_timer(g);
	if (!g->tsc_hz) {
		src = "cpuid";
		g->tsc_hz = tsc_hz_from_cpuid();
	}
	if (!g->tsc_hz) {
		src = "guess";
		g->tsc_hz = 2000000000ULL;
	}
	cpuid(1, 0, r);
	g->tsc_deadline = r[2] & (1u << 24);
	if (g->tsc_deadline) {
		lapic_write(LAPIC_LVT_TIMER, VEC_TIMER | (2u << 17));
	} else {
		lapic_write(LAPIC_TIMER_DIV, 0xb); /* divide by 1 */
		lapic_write(LAPIC_LVT_TIMER, VEC_TIMER);
		lapic_write(LAPIC_TIMER_INIT, 0xffffffffu);
		busy_wait_us(g, 10000);
		g->lapic_ticks_per_ms = (0xffffffffu - lapic_read(LAPIC_TIMER_CUR)) / 10;
		lapic_write(LAPIC_TIMER_INIT, 0);
		if (!g->lapic_ticks_per_ms)
			g->lapic_ticks_per_ms = 1;
	}
	out("tsc %lu Hz (%s), timer %s\n", g->tsc_hz, src,
	    g->tsc_deadline ? "tsc-deadline" : "lapic one-shot");
}

void timer_wait_ns(struct guest *g, uint64_t ns)
{
	uint64_t deadline = rdtsc() + timer_ns_to_tsc(g, ns);

	if (g->tsc_deadline) {
		sys_call(SYS_IDLE, deadline, 0, 0, 0);
	} else {
		uint64_t ticks = (ns / 1000000 + 1) * g->lapic_ticks_per_ms;
		lapic_write(LAPIC_TIMER_INIT, ticks > 0xffffffffu ? 0xffffffffu : (uint32_t)ticks);
		sys_call(SYS_IDLE, 0, 0, 0, 0);
	}
}

void timer_sleep_ns(struct guest *g, uint64_t ns)
{
	uint64_t deadline = rdtsc() + timer_ns_to_tsc(g, ns);

	for (uint64_t now = rdtsc(); now < deadline; now = rdtsc()) {
		if (g->tsc_deadline) {
			sys_call(SYS_IDLE, deadline, 0, 0, 0);
		} else {
			uint64_t left_ms = (deadline - now) * 1000 / g->tsc_hz + 1;
			uint64_t ticks = left_ms * g->lapic_ticks_per_ms;
			lapic_write(LAPIC_TIMER_INIT, ticks > 0xffffffffu ? 0xffffffffu : (uint32_t)ticks);
			sys_call(SYS_IDLE, 0, 0, 0, 0);
		}
	}
}
