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

/* Frees dev->msix: irqfds, routes, eventfds. */
void pci_msix_free(struct pci_device *dev);

/* For a BAR declared without ops that MSI-X owns entirely; opaque = dev. */
extern const struct io_ops pci_msix_bar_ops;

#endif
