/* Symbols shared between boot.S and kernel.c (ring 0 only). */
#ifndef GUEST_KERNEL_H
#define GUEST_KERNEL_H

#include <stdint.h>

struct fault_frame;

extern char isr_stubs[], syscall_entry[], kstacks[];
extern uint64_t gdt[];

/* Per-CPU setup from boot.S: TSS, IDT (built by CPU 0), SYSCALL MSRs, LAPIC
 * enable. idx is the CPU's index (0 = BSP). */
void kernel_init_cpu(uint32_t idx);
/* The SYSCALL dispatcher (see abi.h for numbers). */
uint64_t kernel_syscall(uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t nr);
/* Reports an exception on COM1 and triple-faults. */
void kernel_fault(struct fault_frame *f) __attribute__((noreturn));

#endif
