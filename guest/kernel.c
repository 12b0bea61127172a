/* The ring-0 C of the test guest: per-CPU descriptor tables and MSRs, the
 * system calls and the fault report. Kept tiny because on nested hosts every
 * ring-0 instruction is emulated; ring 3 does the real work. */
#include <stddef.h>
#include <stdint.h>

#include "abi.h"
#include "kernel.h"

#define COM1 0x3f8
#define MSR_TSC_DEADLINE 0x6e0

struct tss {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));

struct idt_gate {
	uint16_t off_lo, sel;
	uint8_t ist, type;
	uint16_t off_mid;
	uint32_t off_hi, reserved;
} __attribute__((packed));

struct fault_frame {
	uint64_t r11, r10, r9, r8, rdi, rsi, rdx, rcx, rax;
	uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

/* Ring 0 has no allocator: these live in the image. */
static struct tss tss[GUEST_MAX_CPUS];
static struct idt_gate idt[256] __attribute__((aligned(16)));
static unsigned uart_fifo = 1;

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static void lapic_write(unsigned reg, uint32_t v)
{
	*(volatile uint32_t *)(uintptr_t)(LAPIC_BASE + reg) = v;
}

/* Only the vectors that can happen: exceptions, our three interrupts and
 * the spurious vector. Anything else is not present and ends as a #NP
 * fault report. (Filling all 256 costs ~2 ms of emulated ring 0.) */
static void idt_set(unsigned v, uint64_t off)
{
	idt[v].off_lo = (uint16_t)off;
	idt[v].sel = SEL_KCODE64;
	idt[v].type = 0x8e; /* present, DPL 0, interrupt gate */
	idt[v].off_mid = (uint16_t)(off >> 16);
	idt[v].off_hi = (uint32_t)(off >> 32);
}

static void idt_build(void)
{
	static const uint8_t irqs[] = { VEC_TIMER, VEC_WAKE, VEC_SPURIOUS };
	uint64_t stubs = (uint64_t)(uintptr_t)isr_stubs;

	for (unsigned v = 0; v < 32; v++)
		idt_set(v, v == VEC_SYSCALL ? (uint64_t)(uintptr_t)syscall_entry : stubs + 16 * v);
	for (unsigned i = 0; i < sizeof(irqs); i++)
		idt_set(irqs[i], stubs + 16u * irqs[i]);
}

static void uart_init(void)
{
	outb(COM1 + 1, 0x00); /* no interrupts */
	outb(COM1 + 3, 0x03); /* 8N1 */
	outb(COM1 + 2, 0x07); /* enable and clear the FIFOs */
	if ((inb(COM1 + 2) & 0xc0) == 0xc0)
		uart_fifo = 16;
}

/* Bytes to COM1, each LF as CR LF: a serial console is a terminal, and one
 * in raw mode (make run) does not return the carriage on a bare LF. */
static void uart_write(const char *buf, uint64_t len)
{
	unsigned room = 0;

	for (uint64_t i = 0; i < len; i++) {
		for (int crlf = buf[i] == '\n'; crlf >= 0; crlf--) {
			while (!room) {
				if (inb(COM1 + 5) & 0x20)
					room = uart_fifo;
			}
			outb(COM1, crlf ? '\r' : (uint8_t)buf[i]);
			room--;
		}
	}
}

void kernel_init_cpu(uint32_t idx)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
	uint64_t base = (uint64_t)(uintptr_t)&tss[idx];
	uint64_t *desc = &gdt[(SEL_TSS0 + 16 * idx) / 8];
	uint16_t sel = (uint16_t)(SEL_TSS0 + 16 * idx);

	if (idx == 0) {
		idt_build();
		uart_init();
	}
	tss[idx].rsp[0] = (uint64_t)(uintptr_t)kstacks + (uint64_t)(idx + 1) * KSTACK_SIZE;
	tss[idx].iomap_base = sizeof(struct tss);
	desc[0] = (sizeof(struct tss) - 1) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
		  ((base >> 24 & 0xff) << 56);
	desc[1] = base >> 32;
	__asm__ volatile("ltr %0" : : "r"(sel));
	__asm__ volatile("lidt %0" : : "m"(idtr));
	lapic_write(0x80, 0);			/* TPR */
	lapic_write(0xf0, 0x100 | VEC_SPURIOUS); /* software enable */
	lapic_write(0x350, 0x10000);		/* LINT0 masked: no 8259 */
}

static uint64_t sys_io(uint64_t port, uint64_t flags, uint64_t value)
{
	uint16_t p = (uint16_t)port;

	switch (flags) {
	case 1 | IO_OUT:
		outb(p, (uint8_t)value);
		return 0;
	case 2 | IO_OUT:
		__asm__ volatile("outw %0, %1" : : "a"((uint16_t)value), "Nd"(p));
		return 0;
	case 4 | IO_OUT:
		__asm__ volatile("outl %0, %1" : : "a"((uint32_t)value), "Nd"(p));
		return 0;
	case 1:
		return inb(p);
	case 2: {
		uint16_t v;
		__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p));
		return v;
	}
	case 4: {
		uint32_t v;
		__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p));
		return v;
	}
	}
	return (uint64_t)-1;
}

static __attribute__((noreturn)) void triple_fault(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty = { 0, 0 };

	/* A non-canonical load raises #GP, which with no IDT escalates to a
	 * triple fault. (Not int3: KVM's emulator, which runs ring 0 on nested
	 * hosts, fails on it instead of faulting.) */
	__asm__ volatile("lidt %0; movabsq 0x8000000000000000, %%rax" : : "m"(empty) : "rax");
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* Where an unexpected fault powers the VM off (SYS_SET_POWEROFF, from the
 * FADT once ring 3 has parsed it); before that a fault triple-faults. */
static uint16_t poweroff_port, poweroff_value;

/* #BPs seen (boot.S counts them and returns). */
volatile uint64_t breakpoints;

static void cpuid0(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

typedef unsigned __int128 u128;

static uint64_t cx16(u128 *cell, uint64_t *lo, uint64_t *hi, uint64_t nlo, uint64_t nhi)
{
	uint8_t z;

	__asm__ volatile("lock cmpxchg16b %1; setz %0"
			 : "=q"(z), "+m"(*cell), "+a"(*lo), "+d"(*hi)
			 : "b"(nlo), "c"(nhi) : "memory", "cc");
	return z;
}

/* SYS_INSNTEST (abi.h). Runs only what this CPU claims to have. */
static uint64_t insn_test(void)
{
	static u128 cell __attribute__((aligned(16)));
	static volatile uint32_t word = 0xf00000f1;
	uint64_t ok = 0, before = breakpoints, after = 0, lo, hi, v, gsbase;
	uint32_t l1[4], l7[4];

	cpuid0(1, 0, l1);
	cpuid0(7, 0, l7);

	__asm__ volatile("int3; movq $1, %0" : "=r"(after) : : "memory");
	if (breakpoints == before + 1 && after == 1)
		ok |= INSN_INT3;

	if (l1[2] & (1u << 13)) { /* CX16 */
		cell = (u128)0x1111 << 64 | 0x2222;
		lo = 0x2222, hi = 0x1111;
		if (cx16(&cell, &lo, &hi, 0x3333, 0x4444) && cell == ((u128)0x4444 << 64 | 0x3333))
			ok |= INSN_CMPXCHG16B_EQ;
		lo = 1, hi = 2;
		if (!cx16(&cell, &lo, &hi, 5, 6) && lo == 0x3333 && hi == 0x4444 &&
		    cell == ((u128)0x4444 << 64 | 0x3333))
			ok |= INSN_CMPXCHG16B_NE;
		/* The same through GS, with GS's base at the cell and a zero
		 * offset register, as Linux's this_cpu_cmpxchg_double does. */
		gsbase = rdmsr(0xc0000101);
		wrmsr(0xc0000101, (uint64_t)(uintptr_t)&cell);
		lo = 0x3333, hi = 0x4444;
		{
			uint8_t z;
			uint64_t zero = 0;

			__asm__ volatile("cmpxchg16b %%gs:(%5); setz %0"
					 : "=q"(z), "+a"(lo), "+d"(hi)
					 : "b"(7ULL), "c"(8ULL), "r"(zero) : "memory", "cc");
			wrmsr(0xc0000101, gsbase);
			if (z && cell == ((u128)8 << 64 | 7))
				ok |= INSN_CMPXCHG16B_GS;
		}
	}
	if (l1[2] & (1u << 23)) { /* POPCNT */
		uint64_t r1, r2;
		uint8_t z1, z2;

		v = 0xff00ff00ff00ff01ULL;
		__asm__ volatile("popcnt %2, %0; setz %1" : "=r"(r1), "=q"(z1) : "r"(v) : "cc");
		__asm__ volatile("popcntl %2, %k0; setz %1" : "=r"(r2), "=q"(z2) : "m"(word) : "cc");
		if (r1 == 33 && !z1 && r2 == 9 && !z2)
			ok |= INSN_POPCNT;
	}
	{
		uint64_t after_wait = 0;

		__asm__ volatile("fninit; fwait; movq $1, %0" : "=r"(after_wait) : : "memory");
		if (after_wait == 1)
			ok |= INSN_FWAIT;
	}
	{
		uint32_t saved = 0, changed, seen = 0;

		__asm__ volatile("stmxcsr %0" : "=m"(saved));
		changed = saved ^ (1u << 15); /* flush-to-zero */
		__asm__ volatile("ldmxcsr %1; stmxcsr %0; ldmxcsr %2"
				 : "=m"(seen) : "m"(changed), "m"(saved));
		if (seen == changed && (saved & 0x1f80) == 0x1f80)
			ok |= INSN_MXCSR;
	}
	if (l7[1] & (1u << 20)) { /* SMAP: STAC/CLAC */
		uint64_t set, clear;

		__asm__ volatile("stac; pushfq; popq %0; clac; pushfq; popq %1"
				 : "=r"(set), "=r"(clear) : : "memory", "cc");
		if ((set & (1u << 18)) && !(clear & (1u << 18)))
			ok |= INSN_STAC_CLAC;
	}
	return ok;
}

uint64_t kernel_syscall(uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t nr)
{
	(void)a3;
	switch (nr) {
	case SYS_WRITE:
		uart_write((const char *)(uintptr_t)a0, a1);
		return 0;
	case SYS_IO:
		return sys_io(a0, a1, a2);
	case SYS_IDLE:
		if (a0)
			wrmsr(MSR_TSC_DEADLINE, a0);
		__asm__ volatile("sti; hlt; cli" ::: "memory");
		return 0;
	case SYS_FLUSH_TLB: {
		uint64_t cr3;
		__asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
		return 0;
	}
	case SYS_TRIPLEFAULT:
		triple_fault();
	case SYS_HALT:
		for (;;)
			__asm__ volatile("cli; hlt");
	case SYS_WRMSR:
		wrmsr((uint32_t)a0, a1);
		return 0;
	case SYS_RDMSR:
		return rdmsr((uint32_t)a0);
	case SYS_INSNTEST:
		return insn_test();
	case SYS_SET_POWEROFF:
		poweroff_port = (uint16_t)a0;
		poweroff_value = (uint16_t)a1;
		return 0;
	case SYS_CPUID:
		cpuid0((uint32_t)a0, (uint32_t)a1, (uint32_t *)(uintptr_t)a2);
		return 0;
	}
	return (uint64_t)-1;
}

static char *put_hex(char *p, const char *label, uint64_t v)
{
	while (*label)
		*p++ = *label++;
	*p++ = '0';
	*p++ = 'x';
	for (int s = 60; s >= 0; s -= 4)
		*p++ = "0123456789abcdef"[(v >> s) & 0xf];
	return p;
}

/* An unexpected exception: one RESULT fatal= line with the vector, error
 * code and addresses on COM1 (tests stop at once on it instead of waiting
 * for results that will not come), then ACPI S5. The VMM or QEMU sees a
 * power-off; with no PM1a_CNT known yet, a triple fault ends the run. */
void kernel_fault(struct fault_frame *f)
{
	char line[256], *p = line;
	uint64_t cr2;
	static const char tag[] = "RESULT fatal=";

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	for (const char *t = tag; *t; t++)
		*p++ = *t;
	p = put_hex(p, "vector:", f->vector);
	p = put_hex(p, " error=", f->error);
	p = put_hex(p, " rip=", f->rip);
	p = put_hex(p, " cs=", f->cs);
	p = put_hex(p, " rsp=", f->rsp);
	p = put_hex(p, " cr2=", cr2);
	*p++ = '\n';
	uart_write(line, (uint64_t)(p - line));
	if (poweroff_port) {
		__asm__ volatile("outw %0, %1" : : "a"(poweroff_value), "Nd"(poweroff_port));
		for (unsigned long i = 0; i < 1000000000UL; i++)
			__asm__ volatile("pause");
	}
	triple_fault();
}
