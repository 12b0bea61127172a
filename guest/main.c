/* Ring-3 entry of the test guest: copies the PVH boot information, parses
 * ACPI, maps memory, brings up the APs, prints the boot facts and runs the
 * command-line words (docs/testguest.md). */
#include "user.h"

#define PVH_MAGIC 0x336ec578
#define COUNT_PERIOD_NS 100000000ULL

/* The one guest. Ring 3 has no allocator before mm_init(), and the APs need
 * to find it, so it lives in the image. */
static struct guest the_guest;

struct word_ctx {
	struct guest *g;
	const char *arg; /* after the '=' (or the end of the word) */
	size_t arg_len;
	bool keep_running;
	bool counting;
};

static int w_touch(struct word_ctx *c)
{
	const char *p = c->arg, *e;
	uint64_t start = parse_size(p, &e), end;

	if (e == p || *e != '-')
		return -1;
	p = e + 1;
	end = parse_size(p, &e);
	if (e == p || (size_t)(e - c->arg) != c->arg_len || end <= start)
		return -1;
	mm_touch(c->g, start, end);
	return 0;
}

static int w_touchlast(struct word_ctx *c)
{
	mm_touch_last(c->g);
	return 0;
}

static int w_count(struct word_ctx *c)
{
	c->counting = true;
	c->keep_running = true;
	return 0;
}

static int w_demo(struct word_ctx *c)
{
	return demo_run(c->g);
}

static int w_serve(struct word_ctx *c)
{
	if (!word_is(c->arg, c->arg_len, "serve"))
		return -1;
	c->keep_running = true;
	return 0;
}

static int w_nothing(struct word_ctx *c)
{
	(void)c;
	return 0; /* options handled before the actions run */
}

static int w_reboot(struct word_ctx *c)
{
	(void)c;
	out("reboot: 0xfe to port 0x64\n");
	io_out8(0x64, 0xfe);
	sys_call(SYS_HALT, 0, 0, 0, 0);
	return 0;
}

static int w_triplefault(struct word_ctx *c)
{
	(void)c;
	out("triplefault: empty IDT, then a #GP\n");
	sys_call(SYS_TRIPLEFAULT, 0, 0, 0, 0);
	return 0;
}

/* An unexpected exception, as a bug would raise one: a load from an address
 * no page table maps. The kernel reports RESULT fatal= and powers off. */
#define FAULT_ADDR 0x7f0000000000UL

static int w_fault(struct word_ctx *c)
{
	(void)c;
	out("fault: a load from 0x%lx, which nothing maps\n", FAULT_ADDR);
	return (int)*(volatile uint8_t *)(uintptr_t)FAULT_ADDR;
}

static int w_pmtimer(struct word_ctx *c)
{
	timer_check_pm(c->g);
	return 0;
}

static int w_device(struct word_ctx *c)
{
	return workloads_run(c->g, c->arg, c->arg_len, &c->keep_running);
}

struct word {
	const char *name; /* ends with '=' when it takes a value */
	int (*run)(struct word_ctx *c);
};

static const struct word words[] = {
	{ "touch=", w_touch },
	{ "touchlast", w_touchlast },
	{ "count", w_count },
	{ "demo", w_demo },
	{ "run=", w_serve },
	{ "acpi=", w_nothing },
	{ "reboot", w_reboot },
	{ "triplefault", w_triplefault },
	{ "fault", w_fault },
	{ "pmtimer", w_pmtimer },
	{ NULL, NULL },
};

static const struct word *word_find(const char *w, size_t len, size_t *name_len)
{
	for (const struct word *d = words; d->name; d++) {
		size_t n = strlen(d->name);
		bool takes_value = d->name[n - 1] == '=';
		if (takes_value ? word_has_prefix(w, len, d->name) : word_is(w, len, d->name)) {
			*name_len = n;
			return d;
		}
	}
	return NULL;
}

/* Calls fn for each space-separated word of the command line. */
static void for_each_word(struct guest *g, void (*fn)(struct guest *g, const char *w, size_t len, void *arg),
			  void *arg)
{
	const char *p = g->cmdline, *end = g->cmdline + g->cmdline_len;

	while (p < end) {
		const char *w;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\n'))
			p++;
		w = p;
		while (p < end && *p != ' ' && *p != '\t' && *p != '\n')
			p++;
		if (p > w)
			fn(g, w, (size_t)(p - w), arg);
	}
}

static void option_word(struct guest *g, const char *w, size_t len, void *arg)
{
	(void)arg;
	if (word_is(w, len, "acpi=ignore"))
		g->acpi_ignore = true;
	workloads_option(g, w, len);
}

static void action_word(struct guest *g, const char *w, size_t len, void *arg)
{
	struct word_ctx *c = arg;
	size_t name_len = 0;
	const struct word *d = word_find(w, len, &name_len);
	int err;

	if (d) {
		c->arg = w + name_len;
		c->arg_len = len - name_len;
		err = d->run(c);
	} else if (workloads_is_option(w, len)) {
		err = 0;
	} else {
		c->arg = w;
		c->arg_len = len;
		err = w_device(c);
	}
	if (!err)
		return;
	if (len >= sizeof(g->line))
		len = sizeof(g->line) - 1;
	memcpy(g->line, w, len);
	g->line[len] = 0;
	if (err == -2)
		out("RESULT unknown_word=%s\n", g->line);
	else
		out("RESULT bad_word=%s\n", g->line);
}

static void serve(struct guest *g, bool counting)
{
	uint64_t count = 0, next = timer_ns(g) + COUNT_PERIOD_NS;

	out("serving until powered off\n");
	for (;;) {
		workloads_serve(g);
		acpi_poll_power_button(g);
		if (counting && timer_ns(g) >= next) {
			uint64_t now = timer_ns(g);
			out("RESULT count=%lu\n", ++count);
			next += COUNT_PERIOD_NS;
			if (next <= now) /* after a pause: no burst to catch up */
				next = now + COUNT_PERIOD_NS;
		}
		if (!workloads_busy(g)) {
			uint64_t ns = workloads_idle_ns(g), now = timer_ns(g);
			if (counting && next > now && next - now < ns)
				ns = next - now;
			if (ns)
				timer_wait_ns(g, ns);
			else
				cpu_relax();
		}
	}
}

static void copy_boot_info(struct guest *g, const struct hvm_start_info *si)
{
	const struct hvm_memmap_entry *mm = (const void *)(uintptr_t)si->memmap_paddr;
	const char *cl = (const char *)(uintptr_t)si->cmdline_paddr;

	if (cl)
		while (g->cmdline_len < CMDLINE_MAX - 1 && cl[g->cmdline_len])
			g->cmdline_len++;
	memcpy(g->cmdline, cl, g->cmdline_len);
	if (si->version < 1 || !si->memmap_paddr)
		return;
	for (uint32_t i = 0; i < si->memmap_entries && g->n_e820 < E820_MAX; i++) {
		struct e820_entry *e = &g->e820[g->n_e820++];
		e->addr = mm[i].addr;
		e->size = mm[i].size;
		e->type = mm[i].type;
		if (e->type == 1) {
			g->mem_total += e->size;
			if (e->addr + e->size > g->ram_end)
				g->ram_end = e->addr + e->size;
		}
	}
}

static void print_boot_facts(struct guest *g)
{
	size_t n = 0;

	out_raw("RESULT cmdline=", 15);
	out_raw(g->cmdline, g->cmdline_len);
	out_raw("\n", 1);
	n += fmt(g->line + n, sizeof(g->line) - n, "RESULT e820=");
	for (unsigned i = 0; i < g->n_e820 && n < sizeof(g->line); i++)
		n += fmt(g->line + n, sizeof(g->line) - n, "%s0x%lx-0x%lx:%u", i ? "," : "",
			 g->e820[i].addr, g->e820[i].addr + g->e820[i].size, g->e820[i].type);
	if (n < sizeof(g->line))
		n += fmt(g->line + n, sizeof(g->line) - n, "\n");
	out_raw(g->line, n < sizeof(g->line) ? n : sizeof(g->line) - 1);
	out("RESULT mem_total=%lu\n", g->mem_total);
}

void user_main(uint32_t start_info)
{
	struct guest *g = &the_guest;
	const struct hvm_start_info *si = (const void *)(uintptr_t)start_info;
	struct word_ctx ctx = { .g = g };

	out("cloison-testguest " GUEST_VERSION " (PVH)\n");
	if (si->magic != PVH_MAGIC) {
		out("bad hvm_start_info magic 0x%x\n", si->magic);
		sys_call(SYS_HALT, 0, 0, 0, 0);
	}
	copy_boot_info(g, si);
	if (acpi_parse(g, si->rsdp_paddr))
		out("no ACPI RSDP found\n");
	out("acpi: rsdp 0x%lx pm1a_evt 0x%x pm1a_cnt 0x%x pm_tmr 0x%x s5 %d/%u ecam 0x%lx cpus %u\n",
	    g->acpi.rsdp, g->acpi.pm1a_evt, g->acpi.pm1a_cnt, g->acpi.pm_tmr, g->acpi.have_s5,
	    g->acpi.s5_slp_typ, g->acpi.ecam_base, g->acpi.ncpus);
	if (mm_init(g)) {
		out("mm: cannot map memory (e820 has no RAM after the image?)\n");
		sys_call(SYS_HALT, 0, 0, 0, 0);
	}
	io_out8(0x21, 0xff); /* mask both 8259s: we take no ISA interrupts */
	io_out8(0xa1, 0xff);
	timer_init(g);
	acpi_enable_events(g);
	print_boot_facts(g);
	smp_start(g);
	out("RESULT cpus_online=%u\n", g->cpus_online);
	out("RESULT boot=ok\n");

	for_each_word(g, option_word, NULL);
	workloads_start(g, &ctx.keep_running);
	for_each_word(g, action_word, &ctx);
	if (ctx.keep_running)
		serve(g, ctx.counting);
	acpi_poweroff(g);
}
