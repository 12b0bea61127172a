/* Counts of the interrupts the worker raises, for the control socket's
 * `status` ("interrupts"): MSI-X messages the virtio devices signal, and
 * each legacy line's rising edges (COM1, the RTC, the i8042, the ACPI SCI).
 * Interrupts KVM makes itself (its PIT, the local APIC timers) are not
 * the worker's and not counted. A paused VM raises none: the pause test
 * compares these. */
#ifndef CLOISON_VMM_IRQ_STATS_H
#define CLOISON_VMM_IRQ_STATS_H

#include <stdint.h>

struct vm;

#define IRQ_STATS_LINES 24

struct irq_stats {
	uint64_t msi;
	uint64_t lines[IRQ_STATS_LINES];
};

/* One MSI-X message signalled (eventfd or KVM_SIGNAL_MSI). */
void vm_count_msi(struct vm *vm);
/* A legacy line driven high. */
void vm_count_irq_line(struct vm *vm, unsigned gsi);
void vm_irq_stats(struct vm *vm, struct irq_stats *out);

#endif
