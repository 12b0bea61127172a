/* Interrupt counters (irq_stats.h). Relaxed atomics: the counts are read
 * for reporting, never to order anything. */
#include "vmm/irq_stats.h"

#include <stdatomic.h>

#include "vmm/vm_internal.h"

void vm_count_msi(struct vm *vm)
{
	atomic_fetch_add_explicit(&vm->irq_msi, 1, memory_order_relaxed);
}

void vm_count_irq_line(struct vm *vm, unsigned gsi)
{
	if (gsi < IRQ_STATS_LINES)
		atomic_fetch_add_explicit(&vm->irq_lines[gsi], 1, memory_order_relaxed);
}

void vm_irq_stats(struct vm *vm, struct irq_stats *out)
{
	out->msi = atomic_load_explicit(&vm->irq_msi, memory_order_relaxed);
	for (unsigned i = 0; i < IRQ_STATS_LINES; i++)
		out->lines[i] = atomic_load_explicit(&vm->irq_lines[i], memory_order_relaxed);
}
