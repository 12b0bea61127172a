/* dirty=SIZE: keeps SIZE bytes of RAM dirty for live-migration tests, and
 * checks that no write was lost. Each CPU owns a slice and rewrites every
 * page of it pass after pass with (page address, pass number); before each
 * write it checks the page still holds what it wrote last pass. A page that
 * went back in time (a migration that missed a dirty page) is counted in
 * RESULT dirty_errors. The APs run their slices; the BSP keeps serving and
 * reports once a second (or does all the work itself when it is alone). */
#include "user.h"

#define REPORT_NS 1000000000ULL
#define BSP_BATCH_PAGES 4096

struct dirty_slice {
	uint64_t start, end, next, pass;
	volatile uint64_t passes; /* completed */
} __attribute__((aligned(64)));

struct dirty {
	struct dirty_slice *slices;
	unsigned n;
	bool bsp_works;
	volatile uint64_t errors, first_bad;
	uint64_t next_report;
};

static void lost_write(struct dirty *d, uint64_t addr)
{
	if (__atomic_fetch_add(&d->errors, 1, __ATOMIC_RELAXED) == 0)
		d->first_bad = addr;
}

/* Up to max pages of slice s; true at the end of a pass. */
static bool dirty_some(struct dirty *d, struct dirty_slice *s, uint64_t max)
{
	for (uint64_t k = 0; k < max; k++) {
		volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)s->next;
		if (s->pass && (p[0] != s->next || p[1] != s->pass))
			lost_write(d, s->next);
		p[0] = s->next;
		p[1] = s->pass + 1;
		s->next += PAGE_SIZE;
		if (s->next >= s->end) {
			s->next = s->start;
			s->pass++;
			s->passes = s->pass;
			return true;
		}
	}
	return false;
}

static void dirty_ap(struct guest *g, uint32_t idx, void *arg)
{
	struct dirty *d = arg;

	(void)g;
	if (idx < 1 || idx > d->n)
		return;
	for (;;)
		dirty_some(d, &d->slices[idx - 1], UINT64_MAX);
}

int dirty_start(struct guest *g, uint64_t size)
{
	struct dirty *d = mm_alloc(g, sizeof(*d), 64);
	/* One slice per AP; the BSP takes the only slice when it is alone. */
	unsigned n = g->cpus_online > 1 ? g->cpus_online - 1 : 1;
	bool aps = g->cpus_online > 1;
	uint8_t *mem;
	uint64_t per;

	size &= ~(PAGE_SIZE - 1);
	if (!d || !size || !(d->slices = mm_alloc(g, sizeof(struct dirty_slice) * n, 64)))
		return -1;
	mem = mm_alloc(g, size, PAGE_SIZE);
	if (!mem) {
		out("RESULT dirty_error=not enough memory for %lu bytes\n", size);
		return -1;
	}
	d->n = n;
	per = (size / n) & ~(PAGE_SIZE - 1);
	for (unsigned i = 0; i < n; i++) {
		struct dirty_slice *s = &d->slices[i];
		s->start = s->next = (uint64_t)(uintptr_t)mem + per * i;
		s->end = i + 1 == n ? (uint64_t)(uintptr_t)mem + size : s->start + per;
	}
	d->next_report = timer_ns(g) + REPORT_NS;
	g->dirty = d;
	out("RESULT dirty_bytes=%lu\n", size);
	out("RESULT dirty_range=0x%lx-0x%lx\n", (uint64_t)(uintptr_t)mem, (uint64_t)(uintptr_t)mem + size);
	d->bsp_works = !aps;
	if (aps)
		smp_run_on_aps(g, dirty_ap, d);
	return 0;
}

bool dirty_poll(struct guest *g)
{
	struct dirty *d = g->dirty;
	uint64_t passes = 0;

	if (!d)
		return false;
	if (d->bsp_works)
		dirty_some(d, &d->slices[0], BSP_BATCH_PAGES);
	if (timer_ns(g) < d->next_report)
		return d->bsp_works;
	d->next_report += REPORT_NS;
	for (unsigned i = 0; i < d->n; i++)
		passes += d->slices[i].passes;
	out("RESULT dirty_passes=%lu\n", passes);
	if (d->errors)
		out("RESULT dirty_errors=%lu first_bad=0x%lx\n", d->errors, d->first_bad);
	return d->bsp_works;
}
