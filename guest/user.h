/* The ring-3 side of the test guest: its state (struct guest), system-call
 * wrappers and the helpers every workload file uses. Ring 3 runs at native
 * speed on nested hosts, so all loops live here. */
#ifndef GUEST_USER_H
#define GUEST_USER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "abi.h"

#define CMDLINE_MAX 65536
#define E820_MAX 128
#define GUEST_VERSION "0.1"
#define PAGE_SIZE 4096ULL
#define GIB (1ULL << 30)

struct hvm_start_info {
	uint32_t magic; /* 0x336ec578 */
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version >= 1 */
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

struct e820_entry {
	uint64_t addr, size;
	uint32_t type;
};

/* What the ACPI tables told us (acpi.c). Port numbers are 0 when absent. */
struct acpi_info {
	uint64_t rsdp;
	uint16_t pm1a_evt, pm1a_cnt, smi_cmd;
	uint16_t gpe0_blk; /* GPE0 status (enable follows), 0 when absent */
	uint8_t pm1_evt_len, acpi_enable;
	uint32_t pm_tmr;
	bool pm_tmr_32;
	bool have_s5;
	uint16_t s5_slp_typ;
	bool have_ecam;
	uint64_t ecam_base;
	uint8_t ecam_bus_end;
	unsigned ncpus; /* enabled processors in the MADT */
	uint32_t apic_ids[GUEST_MAX_CPUS];
};

struct virtio_dev;
struct blk_dev;
struct net_dev;
struct console_dev;
struct dirty;
struct hotplug_state;
struct agent;
struct dynmem;

/* All ring-3 state of the guest. One instance, owned by main.c. */
struct guest {
	char cmdline[CMDLINE_MAX];
	size_t cmdline_len;
	struct e820_entry e820[E820_MAX];
	unsigned n_e820;
	uint64_t mem_total;
	uint64_t ram_end; /* end of the highest RAM range */
	struct acpi_info acpi;

	uint64_t tsc_hz;
	uint64_t boot_tsc;
	bool tsc_deadline;	     /* LAPIC timer in TSC-deadline mode */
	uint64_t lapic_ticks_per_ms; /* one-shot mode otherwise */
	uint64_t next_button_poll;   /* TSC of the next power-button poll */
	bool acpi_ignore;

	uint64_t heap_next, heap_end; /* bump allocator, identity mapped */
	uint64_t pci_next32, pci_next64; /* BAR windows (pci.c), 0 until used */
	uint32_t bsp_apic_id;
	volatile uint32_t cpus_online;
	/* Work for the APs (smp_run_on_aps). */
	uint64_t ap_gen;
	void (*ap_fn)(struct guest *g, uint32_t idx, void *arg);
	void *ap_arg;
	struct dirty *dirty; /* dirty=SIZE, dirty.c */

	/* Devices, opened on first use (workloads.c). */
	struct blk_dev *blk0;
	struct virtio_dev *rng;
	struct net_dev *net;
	struct console_dev *console;
	struct hotplug_state *hotplug; /* hotplug, hotplug.c */
	struct dynmem *dynmem;	       /* dynmem=, balloon.c */
	struct agent *agent;	       /* agent, agent.c */
	/* Options for the device workloads. */
	uint64_t opt_bs, opt_secs;
	unsigned opt_qd;
	uint32_t opt_ip;
	unsigned opt_prefix;
	bool opt_have_ip;
	bool opt_dhcp; /* ip=dhcp: the address (and a gateway) come from a DHCP server */
	bool net_busy, dirty_busy, console_busy, hotplug_busy, agent_busy, dynmem_busy;
	uint64_t opt_agent_hb_stop_s; /* agent_hb_stop=SECS: heartbeats unanswered after */
	bool opt_idle_poll; /* idle=poll: spin instead of hlt while serving */
	uint64_t opt_virtio_features; /* eventidx, indirect: asked of every device */
	bool opt_blk_mq;	      /* blkmq: one virtio-blk queue per CPU */

	char line[16384]; /* scratch for long RESULT lines */
};

/* --- system calls (abi.h) --- */
static inline uint64_t sys_call(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3)
{
	register uint64_t r10 __asm__("r10") = a3;
	__asm__ volatile("ud2"
			 : "+a"(nr), "+D"(a0), "+S"(a1), "+d"(a2), "+r"(r10)
			 :
			 : "rcx", "r8", "r9", "r11", "memory");
	return nr;
}

static inline void io_out8(uint16_t port, uint8_t v) { sys_call(SYS_IO, port, 1 | IO_OUT, v, 0); }
static inline void io_out16(uint16_t port, uint16_t v) { sys_call(SYS_IO, port, 2 | IO_OUT, v, 0); }
static inline void io_out32(uint16_t port, uint32_t v) { sys_call(SYS_IO, port, 4 | IO_OUT, v, 0); }
static inline uint8_t io_in8(uint16_t port) { return (uint8_t)sys_call(SYS_IO, port, 1, 0, 0); }
static inline uint16_t io_in16(uint16_t port) { return (uint16_t)sys_call(SYS_IO, port, 2, 0, 0); }
static inline uint32_t io_in32(uint16_t port) { return (uint32_t)sys_call(SYS_IO, port, 4, 0, 0); }

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* CPUID from ring 3 is not what the VM was given on a software-nested host:
 * the nested hypervisor runs ring 3 natively and its CPUID answers with the
 * outer host's features (1 GiB pages, TSC deadline, SSE4, ...). Ring 0 is
 * emulated and its CPUID reaches KVM, so ask the kernel. */
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	sys_call(SYS_CPUID, leaf, sub, (uint64_t)(uintptr_t)r, 0);
}

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }

static inline uint32_t mmio_read32(uint64_t addr) { return *(volatile uint32_t *)(uintptr_t)addr; }
static inline void mmio_write32(uint64_t addr, uint32_t v) { *(volatile uint32_t *)(uintptr_t)addr = v; }

/* --- lib.c: strings, formatting, serial output --- */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
/* vsnprintf subset: %s %c %d %u %x %p with l/ll/z and 0-padded widths. */
size_t fmt_v(char *buf, size_t len, const char *fmt, va_list ap);
size_t fmt(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Formats and writes to COM1 in one system call (lines up to 1 KiB). */
void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void out_raw(const char *s, size_t len);
/* A number: 0x-hex, bare hex, or decimal with a K/M/G/T suffix ("4G").
 * Sets *end past it; 0 and *end == s when there is none. */
uint64_t parse_size(const char *s, const char **end);
/* Decimal only; *ok false on garbage. */
uint64_t parse_dec(const char *s, size_t len, bool *ok);
bool word_is(const char *w, size_t wlen, const char *name);
bool word_has_prefix(const char *w, size_t wlen, const char *prefix);

/* --- acpi.c --- */
/* Parses RSDP/XSDT/FADT/MADT/MCFG/DSDT. 0 or -1 when no usable RSDP. */
int acpi_parse(struct guest *g, uint64_t rsdp_hint);
/* ACPI mode on, power button enabled. */
void acpi_enable_events(struct guest *g);
/* Writes SLP_TYP(S5)|SLP_EN to PM1a_CNT; prints RESULT poweroff=1 first. */
void acpi_poweroff(struct guest *g) __attribute__((noreturn));
/* Polls PWRBTN_STS (rate-limited to ~10 ms); on a press powers off unless
 * acpi=ignore (then clears it). */
void acpi_poll_power_button(struct guest *g);

/* --- mm.c --- */
/* Identity-maps RAM above 4 GiB (and up to 64 GiB of MMIO space) with
 * 1 GiB or 2 MiB pages, sets up the heap. */
int mm_init(struct guest *g);
/* Maps [start, end) (2 MiB granularity) if not mapped yet. */
int mm_map(struct guest *g, uint64_t start, uint64_t end, bool uncached);
/* Zeroed, aligned memory from the heap; NULL when exhausted. */
void *mm_alloc(struct guest *g, uint64_t size, uint64_t align);
bool mm_is_ram(const struct guest *g, uint64_t addr);
/* touch=START-END and touchlast. */
void mm_touch(struct guest *g, uint64_t start, uint64_t end);
void mm_touch_last(struct guest *g);

/* --- timer.c --- */
void timer_init(struct guest *g);
uint64_t timer_ns(const struct guest *g); /* since boot, from the TSC */
uint64_t timer_ns_to_tsc(const struct guest *g, uint64_t ns);
/* Sleeps in hlt (not spinning) for ns. */
void timer_sleep_ns(struct guest *g, uint64_t ns);
/* One hlt: returns after at most about ns, or on any interrupt (a device's
 * MSI-X wake-up) sooner. */
void timer_wait_ns(struct guest *g, uint64_t ns);
void busy_wait_us(const struct guest *g, uint64_t us);
/* pmtimer: the ACPI PM timer's rate measured against the TSC over 1 s
 * (3579545 when both are right). */
void timer_check_pm(struct guest *g);

/* --- smp.c --- */
/* Starts every AP the MADT lists; returns when they are all online or after
 * a timeout. */
void smp_start(struct guest *g);
/* Wakes every AP to run fn(g, idx, arg) (idx 1..N-1) once. */
void smp_run_on_aps(struct guest *g, void (*fn)(struct guest *g, uint32_t idx, void *arg), void *arg);
void lapic_write(unsigned reg, uint32_t v);
uint32_t lapic_read(unsigned reg);

/* --- main.c --- */
void user_main(uint32_t start_info);
void user_ap_main(uint32_t idx);

/* --- demo.c --- */
/* demo: a welcome and an interactive prompt on COM1; never returns. */
int demo_run(struct guest *g) __attribute__((noreturn));

/* --- dirty.c --- */
/* dirty=SIZE: starts dirtying SIZE bytes of RAM on every CPU. */
int dirty_start(struct guest *g, uint64_t size);
/* From the serve loop: the BSP's share (when alone) and the report. */
bool dirty_poll(struct guest *g);

/* --- hotplug.c --- */
/* hotplug / hotplug=keep: watch the VMM's ACPI PCI hotplug slots from the
 * serve loop. 0 or -1 (reason printed). */
int hotplug_start(struct guest *g, bool keep);
/* One look at GPE0: brings new functions up, releases (or keeps) the ones
 * the host asks back. True when there was an event. */
bool hotplug_poll(struct guest *g);
/* --- device workloads (workloads.c) --- */
/* Options (bs=, qd=, secs=, ip=, ...) are read before any action runs. */
bool workloads_is_option(const char *w, size_t wlen);
void workloads_option(struct guest *g, const char *w, size_t wlen);
/* Runs an action word: 0, -1 for a bad value, -2 for an unknown word.
 * Sets *keep_running when the guest must serve until powered off. */
int workloads_run(struct guest *g, const char *w, size_t wlen, bool *keep_running);
/* Starts devices that serve for as long as the guest runs (ip=). */
void workloads_start(struct guest *g, bool *keep_running);
/* One polling pass over the devices that serve (the NIC). */
void workloads_serve(struct guest *g);
bool workloads_busy(struct guest *g);	 /* work was done: do not sleep */
/* How long the serve loop may sleep before polling again (ns): short for a
 * NIC without interrupts, long when its MSI-X wakes the guest. */
uint64_t workloads_idle_ns(struct guest *g);

#endif
