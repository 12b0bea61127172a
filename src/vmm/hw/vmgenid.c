/* VM Generation ID: see vmgenid.h. The device has no registers: its state
 * is the 16 bytes of guest memory the DSDT names (boot/acpi.c) and the GPE
 * bit a change raises (hw/acpi_pm.c). */
#include "vmm/hw/vmgenid.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/guest_mem.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"

struct vmgenid {
	struct guest_mem *mem;
	struct guid id;
};

static void write_id(struct vmgenid *g)
{
	uint8_t *p = guest_mem_ptr(g->mem, LAYOUT_VMGENID, VMGENID_SIZE);

	if (p)
		guid_to_le(&g->id, p);
}

int vmgenid_create(struct guest_mem *mem, const struct guid *id, struct vmgenid **out)
{
	struct vmgenid *g;

	if (!guest_mem_ptr(mem, LAYOUT_VMGENID, VMGENID_SIZE))
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->mem = mem;
	g->id = *id;
	write_id(g);
	*out = g;
	return 0;
}

void vmgenid_reset(struct vmgenid *g)
{
	write_id(g);
}

void vmgenid_save(struct vmgenid *g, struct state_writer *w)
{
	uint8_t raw[VMGENID_SIZE];

	guid_to_le(&g->id, raw);
	state_begin(w, STATE_SECTION_VMGENID, 0, VMGENID_STATE_VERSION);
	state_put_bytes(w, raw, sizeof(raw));
	state_end(w);
}

int vmgenid_restore(struct vmgenid *g, struct state_reader *r, bool *changed)
{
	uint8_t raw[VMGENID_SIZE];
	struct guid saved;

	*changed = false;
	if (r->version < 1 || r->version > VMGENID_STATE_VERSION)
		return -EINVAL;
	state_get_bytes(r, raw, sizeof(raw));
	if (state_reader_done(r))
		return -EINVAL;
	guid_from_le(&saved, raw);
	if (!guid_equal(&saved, &g->id)) {
		write_id(g);
		*changed = true;
	}
	return 0;
}

void vmgenid_id(const struct vmgenid *g, struct guid *out)
{
	*out = g->id;
}

void vmgenid_destroy(struct vmgenid *g)
{
	free(g);
}
