/* libFuzzer target for the ACPI PCI hotplug register block
 * (src/vmm/bus/hotplug.c), which the guest drives, interleaved with what
 * the host does to it, and for its saved-state record.
 *
 * The input is a stream of operations, one byte each plus its operands:
 *  op % 8 == 0  guest read:  u8 offset (0..0x17), u8 width (1, 2 or 4)
 *            1  guest write: u8 offset, u8 width, u32 value
 *            2  host adds a device: u8 slot
 *            3  host asks for slot's release: u8 slot, u8 timeout (ms)
 *            4  run the event loop (ejects, timeouts) a few rounds
 *            5  VM reset
 *            6  save, then restore into a second block with the same
 *               devices (must be taken), and into one without (refused
 *               unless there are none)
 *            7  restore from input bytes: u8 length, then that many
 *               payload bytes as a version-1 record
 * After each operation the harness checks what the guest and the owner
 * may rely on: UP and DOWN only name present slots, present slots are
 * hot-pluggable, the owner's eject ran only for slots the guest ejected
 * that held a device, at most one done per request. The loop is the
 * single-threaded stand-in of fuzz_loop.c. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/vmm/platform_vm_double.h"
#include "fuzz_loop.h"
#include "common/evloop.h"
#include "vmm/bus/hotplug.h"
#include "vmm/state/record.h"

#define CAPABLE 0xfffffff8u /* slots 3..31; 1 and 2 taken at boot */

struct owner {
	uint32_t present;  /* the harness's own view of the devices */
	uint32_t waiting;  /* requests whose done has not come */
};

static void owner_eject(void *opaque, unsigned slot)
{
	struct owner *o = opaque;

	if (!(o->present & (1u << slot)))
		abort(); /* torn down a slot that holds nothing */
	o->present &= ~(1u << slot);
}

static void owner_gpe(void *opaque)
{
	(void)opaque;
}

static void done(void *opaque, unsigned slot, enum hotplug_outcome outcome)
{
	struct owner *o = opaque;

	if (!(o->waiting & (1u << slot)))
		abort(); /* a second done, or one nobody asked for */
	o->waiting &= ~(1u << slot);
	if (outcome == HOTPLUG_EJECTED && (o->present & (1u << slot)))
		abort(); /* "ejected" while the owner still has it */
}

static uint32_t reg(struct hotplug *hp, unsigned off)
{
	uint32_t v = 0;

	hotplug_io_read(hp, off, &v, 4);
	return v;
}

static void check(struct hotplug *hp, struct owner *o)
{
	uint32_t present = hotplug_present_slots(hp), sel = reg(hp, HOTPLUG_REG_SEL);

	if (present & ~CAPABLE)
		abort();
	if (sel == 0) {
		/* DOWN is read-only and clears only on eject */
		if (reg(hp, HOTPLUG_REG_DOWN) & ~present)
			abort();
		if (reg(hp, HOTPLUG_REG_SLOTS) != CAPABLE)
			abort();
	}
	/* the block agrees with the owner once the loop has run */
	if ((present & ~o->present) != 0)
		abort();
}

static void save_restore(struct vm *vm, struct hotplug *hp)
{
	struct owner o2 = { 0 };
	struct hotplug_owner ops = { owner_eject, owner_gpe, &o2 };
	struct state_writer w;
	struct state_file f;
	struct state_reader r;
	struct hotplug *other;
	const void *data;
	size_t len;
	char err[128];

	state_writer_init(&w, 1);
	hotplug_save(hp, &w);
	if (state_writer_finish(&w, &data, &len) ||
	    state_file_parse(&f, data, len, 1, err, sizeof(err)))
		abort();
	struct vm *vm2 = vmd_create();

	/* a second VM: the block's ports are taken on the first one's bus */
	if (!vm2)
		abort();
	vm2->loop = vm->loop;
	if (hotplug_create(vm2, CAPABLE, &ops, &other))
		abort();
	/* no devices: refused unless the saved block had none */
	if (state_file_find(&f, STATE_SECTION_HOTPLUG, 0, &r))
		abort();
	if (!hotplug_restore(other, &r) != !hotplug_present_slots(hp))
		abort();
	for (unsigned s = 0; s < 32; s++)
		if (hotplug_present_slots(hp) & (1u << s)) {
			if (hotplug_announce(other, s))
				abort();
			o2.present |= 1u << s;
		}
	if (state_file_find(&f, STATE_SECTION_HOTPLUG, 0, &r) || hotplug_restore(other, &r))
		abort();
	/* an eject not acted on yet is saved as the request it answered */
	if (hotplug_releasing_slots(other) != hotplug_releasing_slots(hp))
		abort();
	hotplug_destroy(other);
	vmd_destroy(vm2);
	state_writer_free(&w);
}

static void restore_bytes(struct hotplug *hp, struct fuzz_in *in)
{
	uint8_t payload[64];
	unsigned n = fin_u8(in) % sizeof(payload);
	struct state_writer w;
	struct state_file f;
	struct state_reader r;
	const void *data;
	size_t len;
	char err[128];
	uint32_t down = hotplug_releasing_slots(hp), present = hotplug_present_slots(hp);

	for (unsigned i = 0; i < n; i++)
		payload[i] = fin_u8(in);
	state_writer_init(&w, 1);
	state_begin(&w, STATE_SECTION_HOTPLUG, 0, 1);
	state_put_bytes(&w, payload, n);
	state_end(&w);
	if (state_writer_finish(&w, &data, &len) ||
	    state_file_parse(&f, data, len, 1, err, sizeof(err)) ||
	    state_file_find(&f, STATE_SECTION_HOTPLUG, 0, &r))
		abort();
	if (hotplug_restore(hp, &r) &&
	    (hotplug_releasing_slots(hp) != down || hotplug_present_slots(hp) != present))
		abort(); /* a refused record changed something */
	state_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct owner o = { 0 };
	struct hotplug_owner ops = { owner_eject, owner_gpe, &o };
	struct vm *vm = vmd_create();
	struct evloop *loop;
	struct hotplug *hp;

	if (!vm || evloop_create(&loop))
		abort();
	vm->loop = loop;
	if (hotplug_create(vm, CAPABLE, &ops, &hp))
		abort();
	for (unsigned steps = 0; in.n && steps < 256; steps++) {
		uint8_t op = fin_u8(&in) % 8;
		unsigned off, width, slot;
		uint32_t v = 0;

		switch (op) {
		case 0:
		case 1:
			off = fin_u8(&in) % (HOTPLUG_PORT_LEN + 4);
			width = 1u << (fin_u8(&in) % 3);
			if (op == 0) {
				hotplug_io_read(hp, off, &v, width);
				break;
			}
			v = (uint32_t)fin_take(&in, 4);
			hotplug_io_write(hp, off, &v, width);
			break;
		case 2:
			slot = fin_u8(&in) % 40;
			if (hotplug_announce(hp, slot) == 0) {
				if (o.present & (1u << slot))
					abort();
				o.present |= 1u << slot;
			}
			break;
		case 3:
			slot = fin_u8(&in) % 40;
			v = fin_u8(&in);
			if (hotplug_request_eject(hp, slot, v, done, &o) == 0)
				o.waiting |= 1u << slot;
			break;
		case 4:
			fuzz_loop_run(loop, 4);
			break;
		case 5:
			hotplug_reset(hp);
			break;
		case 6:
			save_restore(vm, hp);
			break;
		case 7:
			restore_bytes(hp, &in);
			break;
		}
		fuzz_loop_run(loop, 1);
		check(hp, &o);
	}
	hotplug_destroy(hp);
	evloop_destroy(loop);
	vmd_destroy(vm);
	return 0;
}
