/* Memory from ring 3: extends boot.S's identity map above 4 GiB (the
 * page-table pages are user writable on purpose), a bump allocator whose
 * addresses are also DMA addresses, and the touch workloads. */
#include "user.h"

#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_US 0x4ULL
#define PTE_PWT 0x8ULL
#define PTE_PCD 0x10ULL
#define PTE_PS 0x80ULL
#define PTE_ADDR 0x000ffffffffff000ULL
#define MIB2 (2ULL << 20)
#define MMIO_MAP_END (64 * GIB)

extern uint64_t pml4[512];
extern char _end[];

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
static uint64_t *table(uint64_t entry) { return (uint64_t *)(uintptr_t)(entry & PTE_ADDR); }

bool mm_is_ram(const struct guest *g, uint64_t addr)
{
	for (unsigned i = 0; i < g->n_e820; i++)
		if (g->e820[i].type == 1 && addr >= g->e820[i].addr &&
		    addr - g->e820[i].addr < g->e820[i].size)
			return true;
	return false;
}

void *mm_alloc(struct guest *g, uint64_t size, uint64_t align)
{
	uint64_t a = align_up(g->heap_next, align ? align : 16);

	if (a + size > g->heap_end || a + size < a)
		return NULL;
	g->heap_next = a + size;
	memset((void *)(uintptr_t)a, 0, size);
	return (void *)(uintptr_t)a;
}

static uint64_t *next_table(struct guest *g, uint64_t *entry)
{
	if (!(*entry & PTE_P)) {
		void *t = mm_alloc(g, PAGE_SIZE, PAGE_SIZE);
		if (!t)
			return NULL;
		*entry = (uint64_t)(uintptr_t)t | PTE_P | PTE_RW | PTE_US;
	}
	return table(*entry);
}

static bool have_1g_pages(void)
{
	uint32_t r[4];

	cpuid(0x80000000, 0, r);
	if (r[0] < 0x80000001)
		return false;
	cpuid(0x80000001, 0, r);
	return r[3] & (1u << 26);
}

int mm_map(struct guest *g, uint64_t start, uint64_t end, bool uncached)
{
	uint64_t flags = PTE_P | PTE_RW | PTE_US | PTE_PS | (uncached ? PTE_PCD | PTE_PWT : 0);
	bool big = have_1g_pages();

	for (uint64_t a = start & ~(MIB2 - 1); a < end;) {
		uint64_t *pdpt = next_table(g, &pml4[a >> 39 & 511]), *pdpte, *pd;

		if (!pdpt)
			return -1;
		pdpte = &pdpt[a >> 30 & 511];
		if (!(*pdpte & PTE_P) && big && !(a & (GIB - 1))) {
			*pdpte = a | flags;
			a += GIB;
			continue;
		}
		if (*pdpte & PTE_PS) {
			a = align_up(a + 1, GIB);
			continue;
		}
		pd = next_table(g, pdpte);
		if (!pd)
			return -1;
		if (!(pd[a >> 21 & 511] & PTE_P))
			pd[a >> 21 & 511] = a | flags;
		a += MIB2;
	}
	sys_call(SYS_FLUSH_TLB, 0, 0, 0, 0);
	return 0;
}

int mm_init(struct guest *g)
{
	uint64_t heap = align_up((uint64_t)(uintptr_t)_end, MIB2);

	for (unsigned i = 0; i < g->n_e820; i++) {
		const struct e820_entry *e = &g->e820[i];
		if (e->type == 1 && heap >= e->addr && heap < e->addr + e->size) {
			g->heap_next = heap;
			g->heap_end = e->addr + e->size;
		}
	}
	if (!g->heap_end)
		return -1;
	if (g->ram_end > 4 * GIB && mm_map(g, 4 * GIB, g->ram_end, false))
		return -1;
	return mm_map(g, align_up(g->ram_end > 4 * GIB ? g->ram_end : 4 * GIB, MIB2),
		      MMIO_MAP_END, true);
}

static uint64_t pattern(uint64_t addr) { return addr * 0x9e3779b97f4a7c15ULL ^ 0x5a5a5a5a5a5a5a5aULL; }

static bool touchable(const struct guest *g, uint64_t addr)
{
	return addr >= g->heap_next && mm_is_ram(g, addr) && mm_is_ram(g, addr + PAGE_SIZE - 1);
}

void mm_touch(struct guest *g, uint64_t start, uint64_t end)
{
	uint64_t pages = 0, skipped = 0, first_bad = 0;
	bool ok = true;

	start &= ~(PAGE_SIZE - 1);
	if (end > g->ram_end)
		end = g->ram_end;
	for (uint64_t a = start; a < end; a += PAGE_SIZE) {
		volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)a;
		if (!touchable(g, a)) {
			skipped++;
			continue;
		}
		p[0] = pattern(a);
		p[511] = ~pattern(a);
		pages++;
	}
	for (uint64_t a = start; a < end && ok; a += PAGE_SIZE) {
		volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)a;
		if (touchable(g, a) && (p[0] != pattern(a) || p[511] != ~pattern(a))) {
			ok = false;
			first_bad = a;
		}
	}
	out("RESULT touch_pages=%lu\n", pages);
	if (skipped)
		out("RESULT touch_skipped=%lu\n", skipped);
	if (ok)
		out("RESULT touch_ok=1\n");
	else
		out("RESULT touch_ok=0 first_bad=0x%lx\n", first_bad);
}

void mm_touch_last(struct guest *g)
{
	uint64_t a = g->ram_end - PAGE_SIZE;
	volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)a;
	bool ok = true;

	out("RESULT last_page=0x%lx\n", a);
	for (unsigned i = 0; i < 512; i++)
		p[i] = pattern(a + i * 8);
	for (unsigned i = 0; i < 512; i++)
		if (p[i] != pattern(a + i * 8))
			ok = false;
	out("RESULT touch_ok=%d\n", ok ? 1 : 0);
}
