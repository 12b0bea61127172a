/* `balloon=SIZE[,free=SIZE]`: a ring-3 virtio-balloon driver that shows
 * the host getting memory back (docs/testguest.md).
 *
 *   1. fills SIZE of RAM (RESULT balloon_touched=MiB), posts its
 *      statistics buffer (refilled whenever the host hands it back);
 *   2. waits for the host to set a target (num_pages > 0), inflates that
 *      many pages of the filled region, writes `actual`
 *      (RESULT balloon_inflate_us=TIME, balloon_inflated=PAGES);
 *   3. waits for the target to go back to all of RAM, deflates them and
 *      counts pages that still hold what was written (RESULT
 *      balloon_kept=N: 0 when the host really dropped them);
 *   4. with free=SIZE and PAGE_REPORTING, fills SIZE more
 *      (RESULT balloon_free_touched=MiB), waits for the host to ask for
 *      memory again, and reports that region free instead of inflating
 *      (RESULT balloon_report_us=TIME, balloon_reported=BYTES); once the
 *      target is lifted again,
 *      RESULT balloon_report_kept=N;
 *   5. RESULT balloon_done=1, balloon_stats_updates=N.
 *
 * `dynmem=USED[,touch=SIZE]` is the resident driver the daemon's
 * balancer works with: it reports USED bytes in use (statistics total and
 * available) and, from the serve loop, inflates or deflates to whatever
 * target the host sets, from a pool of the free heap whose first SIZE
 * bytes it fills at start (so what it gives up first is resident). Prints
 * RESULT dynmem_ready=1, then RESULT dynmem_held=PAGES each time it has
 * reached a new target. */
#include "virtio.h"

#define VIRTIO_ID_BALLOON 5
#define F_STATS_VQ (1ULL << 1)
#define F_PAGE_REPORTING (1ULL << 5)

#define PFNS_PER_BUF 1024
#define REPORT_CHUNK (4ULL << 20)
#define WAIT_SECS 120

struct stat_entry {
	uint16_t tag;
	uint64_t val;
} __attribute__((packed));

struct bdrv {
	struct guest *g;
	struct virtio_dev *d;
	int stats_q, report_q; /* -1: not negotiated */
	struct stat_entry *stats;
	uint32_t *pfns;
	unsigned updates;
	uint64_t used; /* dynmem=: the memory in use it reports; 0: balloon= */
};

static void stats_fill(struct bdrv *b)
{
	b->stats[0].tag = 5; /* MEMTOT */
	b->stats[0].val = b->g->mem_total;
	b->stats[1].tag = b->used ? 6 : 4; /* AVAIL, or MEMFREE */
	b->stats[1].val = b->used ? b->g->mem_total - b->used : b->g->heap_end - b->g->heap_next;
	b->stats[2].tag = 0xbeef; /* unknown tags are the host's to skip */
	b->stats[2].val = 1;
}

static int stats_post(struct bdrv *b)
{
	struct virtio_buf buf = { (uint64_t)(uintptr_t)b->stats, 3 * sizeof(*b->stats), false };

	stats_fill(b);
	if (virtq_add(&b->d->vq[b->stats_q], &buf, 1) < 0)
		return -1;
	virtq_kick(&b->d->vq[b->stats_q]);
	return 0;
}

/* The host handed the statistics buffer back: fresh figures go out. */
static void stats_poll(struct bdrv *b)
{
	uint32_t len;

	if (b->stats_q < 0 || virtq_get(&b->d->vq[b->stats_q], &len) < 0)
		return;
	b->updates++;
	stats_post(b);
}

/* One chain on queue q, waited for (the statistics served meanwhile). */
static int post_wait(struct bdrv *b, unsigned q, const struct virtio_buf *buf)
{
	uint64_t deadline = rdtsc() + 10 * b->g->tsc_hz;
	uint32_t len;

	if (virtq_add(&b->d->vq[q], buf, 1) < 0)
		return -1;
	virtq_kick(&b->d->vq[q]);
	while (virtq_get(&b->d->vq[q], &len) < 0) {
		if (rdtsc() > deadline)
			return -1;
		stats_poll(b);
		cpu_relax();
	}
	return 0;
}

/* Waits until the host's target (num_pages) is zero or not, as wanted. */
static int wait_target(struct bdrv *b, bool nonzero, uint32_t *pages)
{
	uint64_t deadline = rdtsc() + WAIT_SECS * b->g->tsc_hz;

	for (;;) {
		*pages = virtio_cfg32(b->d, 0);
		if ((*pages != 0) == nonzero)
			return 0;
		if (rdtsc() > deadline)
			return -1;
		stats_poll(b);
		timer_sleep_ns(b->g, 1000000);
	}
}

/* Sends the page numbers of [base, base + n pages) on queue q. */
static int send_pfns(struct bdrv *b, unsigned q, uint64_t base, uint64_t n)
{
	for (uint64_t done = 0; done < n;) {
		unsigned k = n - done < PFNS_PER_BUF ? (unsigned)(n - done) : PFNS_PER_BUF;
		struct virtio_buf buf = { (uint64_t)(uintptr_t)b->pfns, k * 4, false };

		for (unsigned i = 0; i < k; i++)
			b->pfns[i] = (uint32_t)((base >> 12) + done + i);
		if (post_wait(b, q, &buf))
			return -1;
		done += k;
	}
	return 0;
}

static void fill(uint64_t base, uint64_t size)
{
	for (uint64_t a = base; a < base + size; a += PAGE_SIZE)
		*(volatile uint64_t *)(uintptr_t)a = a | 1;
}

/* Pages of [base, base+size) that still hold what fill() wrote. */
static uint64_t kept(uint64_t base, uint64_t size)
{
	uint64_t n = 0;

	for (uint64_t a = base; a < base + size; a += PAGE_SIZE)
		n += *(volatile uint64_t *)(uintptr_t)a == (a | 1);
	return n;
}

static int report_free(struct bdrv *b, uint64_t size)
{
	uint8_t *region = mm_alloc(b->g, size, REPORT_CHUNK);
	uint64_t base = (uint64_t)(uintptr_t)region, sent = 0;
	uint32_t pages;

	if (!region) {
		out("RESULT balloon_error=no memory for free=%llu\n", (unsigned long long)size);
		return 0;
	}
	fill(base, size);
	out("RESULT balloon_free_touched=%llu\n", (unsigned long long)(size >> 20));
	if (wait_target(b, true, &pages)) {
		out("RESULT balloon_error=no second target\n");
		return 0;
	}
	uint64_t t0 = rdtsc();

	while (sent < size) {
		uint64_t n = size - sent < REPORT_CHUNK ? size - sent : REPORT_CHUNK;
		struct virtio_buf buf = { base + sent, (uint32_t)n, true };

		if (post_wait(b, (unsigned)b->report_q, &buf)) {
			out("RESULT balloon_error=report not answered\n");
			return 0;
		}
		sent += n;
	}
	out("RESULT balloon_report_us=%llu\n",
	    (unsigned long long)((rdtsc() - t0) * 1000000 / b->g->tsc_hz));
	out("RESULT balloon_reported=%llu\n", (unsigned long long)sent);
	/* reading the pages back brings them in again: only once the host
	 * has looked (it lifts the target) */
	if (wait_target(b, false, &pages)) {
		out("RESULT balloon_error=target not lifted\n");
		return 0;
	}
	out("RESULT balloon_report_kept=%llu\n", (unsigned long long)kept(base, size));
	return 0;
}

static int open_balloon(struct bdrv *b, uint64_t wanted);

int balloon_run(struct guest *g, const char *arg, size_t len)
{
	struct virtio_dev *d = mm_alloc(g, sizeof(*d), 64);
	struct bdrv b = { .g = g, .d = d, .stats_q = -1, .report_q = -1 };
	uint64_t size, free_size = 0, npages;
	const char *end;
	uint8_t *region;
	uint32_t target;
	uint64_t t0, t1;

	size = parse_size(arg, &end);
	if (end < arg + len && end + 6 <= arg + len && !memcmp(end, ",free=", 6))
		free_size = parse_size(end + 6, &end);
	if (end != arg + len || !size)
		return -1;
	b.stats = mm_alloc(g, 64, 64);
	b.pfns = mm_alloc(g, PFNS_PER_BUF * 4, PAGE_SIZE);
	region = mm_alloc(g, size, PAGE_SIZE);
	if (!d || !b.stats || !b.pfns || !region) {
		out("RESULT balloon_error=no memory for %llu bytes\n", (unsigned long long)size);
		return 0;
	}
	if (open_balloon(&b, F_STATS_VQ | F_PAGE_REPORTING)) {
		out("RESULT balloon_error=no device\n");
		return 0;
	}
	out("RESULT balloon_features=%s%s\n", b.stats_q >= 0 ? "stats" : "",
	    b.report_q >= 0 ? ",reporting" : "");

	fill((uint64_t)(uintptr_t)region, size);
	out("RESULT balloon_touched=%llu\n", (unsigned long long)(size >> 20));
	if (wait_target(&b, true, &target)) {
		out("RESULT balloon_error=no target\n");
		return 0;
	}
	npages = target < size / PAGE_SIZE ? target : size / PAGE_SIZE;
	t0 = rdtsc();
	if (send_pfns(&b, 0, (uint64_t)(uintptr_t)region, npages)) {
		out("RESULT balloon_error=inflate not answered\n");
		return 0;
	}
	t1 = rdtsc();
	mmio_write32(d->device_cfg + 4, (uint32_t)npages);
	out("RESULT balloon_inflate_us=%llu\n",
	    (unsigned long long)((t1 - t0) * 1000000 / g->tsc_hz));
	out("RESULT balloon_inflated=%llu\n", (unsigned long long)npages);

	if (wait_target(&b, false, &target)) {
		out("RESULT balloon_error=target not lifted\n");
		return 0;
	}
	if (send_pfns(&b, 1, (uint64_t)(uintptr_t)region, npages)) {
		out("RESULT balloon_error=deflate not answered\n");
		return 0;
	}
	mmio_write32(d->device_cfg + 4, 0);
	out("RESULT balloon_deflated=%llu\n", (unsigned long long)npages);
	out("RESULT balloon_kept=%llu\n",
	    (unsigned long long)kept((uint64_t)(uintptr_t)region, npages * PAGE_SIZE));

	if (free_size && b.report_q >= 0)
		report_free(&b, free_size);
	out("RESULT balloon_stats_updates=%u\n", b.updates);
	out("RESULT balloon_done=1\n");
	return 0;
}

struct dynmem {
	struct bdrv b;
	uint64_t base, npages, held;
	uint32_t last_target;
	bool reported;
};

/* The device with its statistics queue (no reporting); 0 or -1. */
static int open_balloon(struct bdrv *b, uint64_t wanted)
{
	unsigned q = 2;

	if (virtio_open(b->g, VIRTIO_ID_BALLOON, 0, wanted, 2, 0, b->d))
		return -1;
	if (b->d->features & F_STATS_VQ)
		b->stats_q = (int)q++;
	if (b->d->features & F_PAGE_REPORTING)
		b->report_q = (int)q++;
	for (unsigned i = 2; i < q; i++)
		if (virtio_add_queue(b->d, (uint16_t)i))
			return -1;
	virtio_ready(b->d);
	return b->stats_q >= 0 ? stats_post(b) : 0;
}

int dynmem_start(struct guest *g, const char *arg, size_t len)
{
	struct dynmem *m = mm_alloc(g, sizeof(*m), 64);
	uint64_t used, touch = 0, pool;
	const char *end;

	used = parse_size(arg, &end);
	if (end + 7 <= arg + len && !memcmp(end, ",touch=", 7))
		touch = parse_size(end + 7, &end);
	if (end != arg + len || !used || !m)
		return -1;
	m->b = (struct bdrv){ .g = g, .stats_q = -1, .report_q = -1, .used = used };
	m->b.d = mm_alloc(g, sizeof(*m->b.d), 64);
	m->b.stats = mm_alloc(g, 64, 64);
	m->b.pfns = mm_alloc(g, PFNS_PER_BUF * 4, PAGE_SIZE);
	/* the pool: the free heap but 16 MiB for the guest's own needs */
	pool = g->heap_end - ((g->heap_next + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1));
	if (!m->b.d || !m->b.stats || !m->b.pfns)
		return -1;
	pool = pool > (16ULL << 20) ? pool - (16ULL << 20) : 0;
	pool &= ~(uint64_t)(PAGE_SIZE - 1);
	/* taken from the heap without mm_alloc's zeroing: fresh RAM is zero,
	 * and only the touch= part is to be resident */
	m->base = (g->heap_next + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1);
	g->heap_next = m->base + pool;
	if (!m->b.d || !m->b.stats || !m->b.pfns || !m->base || open_balloon(&m->b, F_STATS_VQ)) {
		out("RESULT dynmem_error=no balloon device or no memory\n");
		return 0;
	}
	m->npages = pool / PAGE_SIZE;
	if (touch > pool)
		touch = pool;
	fill(m->base, touch);
	g->dynmem = m;
	out("RESULT dynmem_ready=1\n");
	return 0;
}

#define DYNMEM_STEP 16384 /* pages moved per poll (64 MiB) */

bool dynmem_poll(struct guest *g)
{
	struct dynmem *m = g->dynmem;
	uint32_t target;
	uint64_t want, k;

	if (!m)
		return false;
	stats_poll(&m->b);
	target = virtio_cfg32(m->b.d, 0);
	if (target != m->last_target) {
		m->last_target = target;
		m->reported = false;
	}
	want = target < m->npages ? target : m->npages;
	if (m->held < want) {
		k = want - m->held < DYNMEM_STEP ? want - m->held : DYNMEM_STEP;
		if (send_pfns(&m->b, 0, m->base + m->held * PAGE_SIZE, k))
			return false;
		m->held += k;
	} else if (m->held > want) {
		k = m->held - want < DYNMEM_STEP ? m->held - want : DYNMEM_STEP;
		if (send_pfns(&m->b, 1, m->base + (m->held - k) * PAGE_SIZE, k))
			return false;
		m->held -= k;
	} else {
		if (!m->reported) {
			m->reported = true;
			out("RESULT dynmem_held=%llu\n", (unsigned long long)m->held);
		}
		return false;
	}
	mmio_write32(m->b.d->device_cfg + 4, (uint32_t)m->held);
	return true;
}
