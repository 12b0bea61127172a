/* Ring-0 entry points of the test guest: the Xen PVH note and 32-bit entry,
 * the switch to long mode on static page tables, the AP trampoline, the
 * SYSCALL entry and the interrupt stubs. Everything here is emulated on
 * nested hosts (~0.6 us per instruction), so it stays short; anything that
 * loops runs in ring 3. */
#include "abi.h"

#define PTE_P 0x1
#define PTE_RW 0x2
#define PTE_US 0x4
#define PTE_PWT 0x8
#define PTE_PCD 0x10
#define PTE_PS 0x80
#define GDT_SIZE (SEL_TSS0 + 16 * GUEST_MAX_CPUS)

/* The PVH note: XEN_ELFNOTE_PHYS32_ENTRY (18), 32-bit entry address. */
	.section .note.Xen, "a"
	.p2align 2
	.long 4
	.long 8
	.long 18
	.asciz "Xen"
	.quad pvh_entry32

	.section .text.boot, "ax"
	.code32
	.global pvh_entry32
/* PVH: protected mode, paging off, flat segments, %ebx = hvm_start_info. */
pvh_entry32:
	cli
	cld
	xorl %esi, %esi
	jmp common32

/* APs arrive here from the trampoline with DS still real-mode based. */
ap_entry32:
	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl $1, %esi
common32:
	lgdt gdt_ptr
	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	ljmp $SEL_KCODE32, $1f
1:	movl %cr4, %eax
	orl $0x620, %eax /* PAE | OSFXSR | OSXMMEXCPT */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx /* EFER */
	rdmsr
	orl $0x101, %eax /* LME | SCE */
	wrmsr
	movl %cr0, %eax
	andl $~0x6000000c, %eax /* caches on, no EM, no TS */
	orl $0x80000022, %eax /* PG | NE | MP */
	movl %eax, %cr0
	ljmp $SEL_KCODE64, $entry64

	.code64
entry64:
	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	testl %esi, %esi
	jnz ap64

	movq $kstacks + KSTACK_SIZE, %rsp
	movl %ebx, %ebx
	xorl %edi, %edi
	call kernel_init_cpu
	movl %ebx, %edi /* hvm_start_info for user_main */
	movq $ustack0 + USTACK_SIZE, %rsp
	movq $user_main, %rcx
	jmp to_user

ap64:
	movl $1, %eax
	lock xaddl %eax, ap_next_index(%rip)
	movl %eax, %r12d
	movl %eax, %ecx
	incl %ecx
	imulq $KSTACK_SIZE, %rcx
	leaq kstacks(%rcx), %rsp
	movl %r12d, %edi
	call kernel_init_cpu
	movl %r12d, %edi
	movq ap_user_stacks(%rip), %rax
	movl %r12d, %ecx
	incl %ecx
	imulq $USTACK_SIZE, %rcx
	leaq (%rax,%rcx), %rsp
	movq $user_ap_main, %rcx
/* To ring 3 with iretq (not sysretq: the nested hypervisor of our CI hosts
 * mishandles SYSCALL/SYSRET, while interrupt gates work). */
to_user:
	movq %rsp, %rax
	pushq $(SEL_UDATA | 3)
	pushq %rax
	pushq $0x2 /* RFLAGS: interrupts stay off in ring 3 */
	pushq $(SEL_UCODE64 | 3)
	pushq %rcx
	iretq

/* System calls: ring 3 executes ud2 with the number in rax, args in rdi rsi
 * rdx r10; the #UD handler recognises a ud2 from ring 3, steps over it and
 * returns the result in rax. Not SYSCALL and not int $n: the nested
 * hypervisor of our CI hosts runs SYSCALL without leaving ring 3 and turns
 * int $n into #UD, while real faults are delivered properly. Runs on the
 * CPU's TSS stack. */
	.global syscall_entry
syscall_entry:
	pushq %rax
	testb $3, 16(%rsp) /* from ring 3? */
	jz 1f
	movq 8(%rsp), %rax
	cmpw $0x0b0f, (%rax) /* ud2 */
	jne 1f
	addq $2, 8(%rsp)
	popq %rax
	subq $8, %rsp /* 5 words pushed by the CPU: realign for the call */
	movq %r10, %rcx
	movq %rax, %r8
	call kernel_syscall
	addq $8, %rsp
	iretq
1:	popq %rax
	pushq $0
	pushq $6
	jmp isr_common

/* Interrupt and exception stubs, 16 bytes apart: kernel.c builds the IDT
 * from isr_stubs + 16 * vector. */
	.p2align 4
	.global isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.p2align 4
	.if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	.set vec, vec + 1
	.endr

isr_common:
	pushq %rax
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	movq 72(%rsp), %rax
	cmpq $3, %rax /* #BP (SYS_INSNTEST's int3): count it and go on */
	jne 2f
	lock incq breakpoints(%rip)
	jmp 1f
2:	cmpq $32, %rax
	jb fault
	cmpq $VEC_SPURIOUS, %rax
	je 1f
	movl $LAPIC_BASE + 0xb0, %eax /* EOI */
	movl $0, (%rax)
1:	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rax
	addq $16, %rsp
	iretq
fault:
	movq %rsp, %rdi
	andq $-16, %rsp
	call kernel_fault
2:	cli
	hlt
	jmp 2b

/* The AP trampoline, copied to TRAMPOLINE_ADDR by ring 3 (smp.c). Real mode,
 * CS = TRAMPOLINE_ADDR >> 4. */
	.code16
	.global trampoline_start, trampoline_end
trampoline_start:
	cli
	cld
	movw %cs, %ax
	movw %ax, %ds
	lgdtl (tramp_gdtr - trampoline_start)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $SEL_KCODE32, $ap_entry32
	.p2align 3
tramp_gdtr:
	.word GDT_SIZE - 1
	.long gdt
trampoline_end:
	.code64

	.data
	.p2align 3
	.global ap_next_index, ap_user_stacks
ap_next_index:
	.long 1
	.long 0
ap_user_stacks: /* set by ring 3 before starting APs */
	.quad 0
gdt_ptr:
	.word GDT_SIZE - 1
	.quad gdt

	.p2align 4
	.global gdt
gdt:
	.quad 0
	.quad 0x00af9a000000ffff /* 0x08 kernel code64 */
	.quad 0x00cf92000000ffff /* 0x10 kernel data */
	.quad 0x00cffa000000ffff /* 0x18 user code32 (SYSRET base) */
	.quad 0x00cff2000000ffff /* 0x20 user data */
	.quad 0x00affa000000ffff /* 0x28 user code64 */
	.quad 0x00cf9a000000ffff /* 0x30 kernel code32 */
	.quad 0
	.fill 2 * GUEST_MAX_CPUS, 8, 0 /* TSS descriptors, filled per CPU */

/* Static page tables: the first 4 GiB identity mapped with 2 MiB pages,
 * user accessible, 3-4 GiB uncached. Ring 3 (mm.c) extends them in place
 * for RAM above 4 GiB, so every CPU uses the same CR3. The pages are user
 * writable on purpose. */
	.p2align 12
	.global pml4, pdpt0
pml4:
	.quad pdpt0 + (PTE_P | PTE_RW | PTE_US)
	.fill 511, 8, 0
pdpt0:
	.quad pd_low + (PTE_P | PTE_RW | PTE_US)
	.quad pd_low + 0x1000 + (PTE_P | PTE_RW | PTE_US)
	.quad pd_low + 0x2000 + (PTE_P | PTE_RW | PTE_US)
	.quad pd_low + 0x3000 + (PTE_P | PTE_RW | PTE_US)
	.fill 508, 8, 0
pd_low:
	i = 0
	.rept 1536
	.quad (i << 21) + (PTE_P | PTE_RW | PTE_US | PTE_PS)
	i = i + 1
	.endr
	.rept 512
	.quad (i << 21) + (PTE_P | PTE_RW | PTE_US | PTE_PS | PTE_PCD | PTE_PWT)
	i = i + 1
	.endr

	.bss
	.p2align 12
	.global kstacks, ustack0
kstacks:
	.skip KSTACK_SIZE * (GUEST_MAX_CPUS + 1)
ustack0:
	.skip USTACK_SIZE

	.section .note.GNU-stack, "", @progbits
