/* The VM Generation ID (Microsoft's "Virtual Machine Generation ID"
 * specification): a 128-bit id in a 16-byte buffer of guest memory that
 * the DSDT's \_SB.VGEN device points at (its ADDR method), changed when the
 * VM goes on from a copy of itself (a checkpoint applied, an imported
 * copy), so that the guest reseeds its RNG and directory services notice.
 * A change is announced with GPE0 bit VMGENID_GPE, whose \_GPE._E02
 * notifies VGEN with 0x80. */
#ifndef CLOISON_VMM_HW_VMGENID_H
#define CLOISON_VMM_HW_VMGENID_H

#include <stdbool.h>
#include <stdint.h>

#include "common/guid.h"

struct guest_mem;
struct state_writer;
struct state_reader;
struct vmgenid;

/* The buffer's 16 bytes: the GUID in Microsoft's byte order (the first
 * three fields little-endian), as Hyper-V and QEMU put it there. */
#define VMGENID_SIZE 16
#define VMGENID_STATE_VERSION 1

/* Writes id into the buffer at LAYOUT_VMGENID. 0, -EINVAL (the page is not
 * guest RAM) or -ENOMEM. */
int vmgenid_create(struct guest_mem *mem, const struct guid *id, struct vmgenid **out);
/* A reset keeps the id: the buffer gets it again. */
void vmgenid_reset(struct vmgenid *g);
/* Record STATE_SECTION_VMGENID: the id the guest saw. */
void vmgenid_save(struct vmgenid *g, struct state_writer *w);
/* Reads the saved id (the guest memory, restored before, holds it). When
 * it differs from the configured one, the buffer gets the configured id
 * and *changed is set: the caller raises the GPE. 0 or -EINVAL. */
int vmgenid_restore(struct vmgenid *g, struct state_reader *r, bool *changed);
void vmgenid_id(const struct vmgenid *g, struct guid *out);
void vmgenid_destroy(struct vmgenid *g);

#endif
