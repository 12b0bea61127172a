/* The contract between the test guest's ring-0 part (boot.S, kernel.c) and
 * its ring-3 part (everything else): system-call numbers, selectors, vectors
 * and the per-CPU slots. Included from C and from assembly. */
#ifndef GUEST_ABI_H
#define GUEST_ABI_H

#define GUEST_MAX_CPUS 256
#define KSTACK_SIZE 8192   /* ring-0 stack per CPU (exceptions only) */
#define USTACK_SIZE 65536  /* ring-3 stack per CPU */

/* GDT selectors (laid out so SYSRET could be used: user data at USER_BASE+8,
 * user code at +16). */
#define SEL_KCODE64 0x08
#define SEL_KDATA 0x10
#define SEL_USER_BASE 0x18
#define SEL_UDATA 0x20
#define SEL_UCODE64 0x28
#define SEL_KCODE32 0x30
#define SEL_TSS0 0x40 /* 16 bytes per CPU */

/* Interrupt vectors (only taken inside SYS_IDLE's sti;hlt). */
#define VEC_TIMER 0x40
#define VEC_WAKE 0x41 /* IPI or MSI-X wake-up */
#define VEC_SPURIOUS 0xff

/* AP trampoline: copied below 1 MiB by ring 3; SIPI vector = page number. */
#define TRAMPOLINE_ADDR 0x8000

#define LAPIC_BASE 0xfee00000

/* System calls: ud2 from ring 3 (#UD, VEC_SYSCALL) with the number in rax,
 * arguments in rdi, rsi, rdx, r10; result in rax. (Neither SYSCALL nor
 * int $n work from ring 3 under the nested hypervisor of our CI hosts.) */
#define VEC_SYSCALL 6
#define SYS_WRITE 0	 /* (buf, len): bytes to COM1 */
#define SYS_IO 1	 /* (port, IO_* flags, value): port I/O, returns value read */
#define SYS_IDLE 2	 /* (tsc_deadline or 0): sti; hlt; cli — wakes on any interrupt */
#define SYS_FLUSH_TLB 3	 /* reloads CR3 */
#define SYS_TRIPLEFAULT 4 /* empty IDT, then a fault */
#define SYS_HALT 5	 /* cli; hlt forever */
#define SYS_WRMSR 6	 /* (msr, value) */
#define SYS_RDMSR 7	 /* (msr) */
#define SYS_INSNTEST 8	 /* runs ring-0 instruction checks, returns INSN_* bits that passed */
#define SYS_CPUID 9	 /* (leaf, subleaf, uint32_t out[4]): CPUID executed in ring 0 */
#define SYS_SET_POWEROFF 10 /* (port, value): the PM1a_CNT write that enters S5, for faults */

/* SYS_INSNTEST: instructions a software-nested host's KVM cannot emulate
 * (the VMM finishes them, src/vmm/emulate.c); on real hardware the CPU
 * runs them. Each bit is set when the instruction did what the manual says. */
#define INSN_INT3 1		/* #BP taken, back to the next instruction */
#define INSN_CMPXCHG16B_EQ 2	/* equal: stores RCX:RBX, ZF=1 */
#define INSN_CMPXCHG16B_NE 4	/* unequal: loads RDX:RAX, ZF=0, memory unchanged */
#define INSN_CMPXCHG16B_GS 8	/* GS-relative operand (per-CPU data in Linux) */
#define INSN_POPCNT 16		/* 64-bit register, 32-bit memory forms; ZF */
#define INSN_STAC_CLAC 32	/* RFLAGS.AC set and cleared */
#define INSN_FWAIT 64		/* nothing pending: falls through */
#define INSN_MXCSR 128		/* STMXCSR, LDMXCSR of a changed value, STMXCSR sees it */

#define IO_SIZE_MASK 7 /* 1, 2 or 4 bytes */
#define IO_OUT 8

#endif
