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

/* One PM-timer read and the TSC at that moment: the read is a system call
 * plus an I/O exit and the vCPU may be descheduled in it on a loaded host,
 * so of a few tries the one with the tightest TSC bracket is kept. */
static void pm_sample(uint16_t port, uint32_t *pm, uint64_t *tsc)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 5; i++) {
		uint64_t a = rdtsc();
		uint32_t v = io_in32(port);
		uint64_t b = rdtsc();
		if (b - a < best) {
			best = b - a;
			*pm = v;
			*tsc = a + (b - a) / 2;
		}
	}
}

/* 10 ms of PM timer (3.579545 MHz) against the TSC; 0 if it does not tick. */
static uint64_t calibrate_pm_once(const struct guest *g)
{
	uint32_t mask = g->acpi.pm_tmr_32 ? 0xffffffffu : 0xffffffu;
	uint16_t port = (uint16_t)g->acpi.pm_tmr;
	uint32_t p0 = 0, p1 = 0, d;
	uint64_t t0 = 0, t1 = 0, start = rdtsc();

	pm_sample(port, &p0, &t0);
	do {
		p1 = io_in32(port);
		d = (p1 - p0) & mask;
		if (rdtsc() - start > 20000000000ULL)
			return 0;
	} while (d < PM_TIMER_HZ / 100);
	pm_sample(port, &p1, &t1);
	d = (p1 - p0) & mask;
	return d ? (t1 - t0) * PM_TIMER_HZ / d : 0;
}

/* The median of three calibrations. */
static uint64_t calibrate_pm_timer(const struct guest *g)
{
	uint64_t v[3], tmp;

	for (int i = 0; i < 3; i++)
		if (!(v[i] = calibrate_pm_once(g)))
			return 0;
	for (int i = 0; i < 3; i++)
		for (int j = i + 1; j < 3; j++)
			if (v[j] < v[i]) {
				tmp = v[i];
				v[i] = v[j];
				v[j] = tmp;
			}
	return v[1];
}

/* KVM's pvclock says exactly how the TSC converts to nanoseconds: enable it
 * for a moment (MSR_KVM_SYSTEM_TIME_NEW) and read mul/shift. 0 without it. */
static uint64_t tsc_hz_kvmclock(struct guest *g)
{
	struct pvclock {
		uint32_t version, pad0;
		uint64_t tsc_timestamp, system_time;
		uint32_t mul;
		int8_t shift;
		uint8_t flags, pad[2];
	} volatile *pv;
	uint32_t r[4];
	uint64_t hz;

	cpuid(0x40000000, 0, r);
	if (r[1] != 0x4b4d564b || r[0] < 0x40000001) /* "KVMKVMKVM" */
		return 0;
	cpuid(0x40000001, 0, r);
	if (!(r[0] & (1u << 3))) /* KVM_FEATURE_CLOCKSOURCE2 */
		return 0;
	pv = mm_alloc(g, sizeof(*pv), 64);
	if (!pv)
		return 0;
	sys_call(SYS_WRMSR, 0x4b564d01, (uint64_t)(uintptr_t)pv | 1, 0, 0);
	for (int i = 0; i < 1000000 && (!pv->mul || (pv->version & 1)); i++)
		cpu_relax();
	sys_call(SYS_WRMSR, 0x4b564d01, 0, 0, 0);
	if (!pv->mul)
		return 0;
	hz = (1000000000ULL << 32) / pv->mul;
	return pv->shift >= 0 ? hz >> pv->shift : hz << -pv->shift;
}

/* The exact TSC frequency when the hypervisor (0x40000010) or the CPU
 * (0x15 with a crystal frequency) states it; else 0. */
static uint64_t tsc_hz_exact(void)
{
	uint32_t r[4], max;

	cpuid(0x40000000, 0, r);
	if (r[0] >= 0x40000010 && r[0] < 0x40000100) {
		cpuid(0x40000010, 0, r);
		if (r[0])
			return (uint64_t)r[0] * 1000;
	}
	cpuid(0, 0, r);
	max = r[0];
	if (max >= 0x15) {
		cpuid(0x15, 0, r);
		if (r[0] && r[1] && r[2])
			return (uint64_t)r[2] * r[1] / r[0];
	}
	return 0;
}

/* CPUID 0x16's base frequency: close to the TSC's, not exact. */
static uint64_t tsc_hz_base(void)
{
	uint32_t r[4];

	cpuid(0, 0, r);
	if (r[0] < 0x16)
		return 0;
	cpuid(0x16, 0, r);
	return (uint64_t)r[0] * 1000000;
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
	const char *src = "kvmclock";

	g->boot_tsc = rdtsc();
	g->tsc_hz = tsc_hz_kvmclock(g);
	if (!g->tsc_hz) {
		src = "cpuid";
		g->tsc_hz = tsc_hz_exact();
	}
	if (!g->tsc_hz && g->acpi.pm_tmr) {
		src = "pm-timer";
		g->tsc_hz = calibrate_pm_timer(g);
	}
	if (!g->tsc_hz) {
		src = "cpuid 0x16";
		g->tsc_hz = tsc_hz_base();
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

void timer_check_pm(struct guest *g)
{
	uint32_t mask = g->acpi.pm_tmr_32 ? 0xffffffffu : 0xffffffu;
	uint16_t port = (uint16_t)g->acpi.pm_tmr;
	uint64_t ticks = 0, t0 = 0, t1 = 0, end;
	uint32_t prev = 0, now = 0;

	if (!port) {
		out("RESULT pm_timer_hz=0\n");
		return;
	}
	out("RESULT pm_calibrated_tsc_hz=%lu\n", calibrate_pm_once(g));
	pm_sample(port, &prev, &t0);
	end = t0 + g->tsc_hz;
	do { /* sum the deltas: a 24-bit timer wraps every 4.7 s */
		now = io_in32(port);
		ticks += (now - prev) & mask;
		prev = now;
	} while (rdtsc() < end);
	pm_sample(port, &now, &t1);
	ticks += (now - prev) & mask;
	out("RESULT pm_timer_hz=%lu\n", ticks * g->tsc_hz / (t1 - t0));
}
