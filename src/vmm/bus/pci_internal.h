/* Between pci.c and msix.c only: the MSI-X hooks the config-space code
 * calls. Not part of the device-model contract (pci.h). */
#ifndef CLOISON_VMM_BUS_PCI_INTERNAL_H
#define CLOISON_VMM_BUS_PCI_INTERNAL_H

#include "vmm/bus/pci.h"

/* The guest wrote config bytes [off, off+len): if they touch the MSI-X
 * message control, apply enable / function-mask changes. dev->lock held. */
void pci_msix_config_written(struct pci_device *dev, unsigned off, unsigned len);

/* Power-on state: MSI-X off, every vector masked, nothing pending, irqfds
 * detached. dev->lock held. */
void pci_msix_reset(struct pci_device *dev);

/* The MSI-X table and pending bits, into the device's PCI record / back
 * from it (after config[] is restored: enable and function mask come from
 * the message control there). Routes and irqfds are rebuilt for every
 * deliverable vector, and pending ones are delivered. restore: 0, or
 * -EINVAL when the record does not fit this device's vectors (nothing
 * changed). dev->lock held. */
struct state_writer;
struct state_reader;
void pci_msix_save(struct pci_device *dev, struct state_writer *w);
int pci_msix_restore(struct pci_device *dev, struct state_reader *r);

/* Frees dev->msix: irqfds, routes, eventfds. */
void pci_msix_free(struct pci_device *dev);

/* For a BAR declared without ops that MSI-X owns entirely; opaque = dev. */
extern const struct io_ops pci_msix_bar_ops;

#endif
