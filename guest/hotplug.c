/* `hotplug` and `hotplug=keep` (docs/testguest.md): the guest side of
 * cloison's ACPI PCI hotplug (src/vmm/bus/hotplug.h), done the way an
 * OS's acpiphp does it, minus the AML: the GPE0 status bit the VMM sets
 * is polled from the serve loop (the test guest takes no SCI), then the
 * UP bitmap (read clears) says which slots got a device and DOWN which
 * ones the host wants back. A new disk is brought up and written and read
 * back, a new NIC serves ip= (when the guest has no NIC yet); a device
 * asked back is reset and its slot's bit written to EJECT, as _EJ0 does
 * (`hotplug=keep` never lets go, for the host's "pending" path). */
#include "virtio.h"

#define HP_PORT 0xae00 /* cloison's register block (the DSDT's PCHP region) */
#define HP_UP 0x00
#define HP_DOWN 0x04
#define HP_EJECT 0x08
#define HP_SLOTS 0x0c
#define HP_GPE_BIT 1 /* \_GPE._E01 */

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define HP_TEST_BYTES 4096

struct hotplug_state {
	bool keep;	  /* hotplug=keep: never release */
	uint32_t slots;	  /* hot-pluggable, from the SLOTS register */
	uint32_t kept;	  /* release requests refused (printed once each) */
	struct blk_dev *blk[32];
	bool net[32];	  /* slot's NIC is g->net */
	uint8_t *buf, *back;
};

static uint16_t slot_vendor(struct guest *g, unsigned slot)
{
	struct pci_addr a = { 0, (uint8_t)slot, 0 };

	return (uint16_t)pci_read32(g, a, 0);
}

/* The virtio type of slot's function, 0 when it is not virtio. */
static unsigned slot_virtio_type(struct guest *g, unsigned slot, unsigned *index)
{
	struct pci_addr addrs[32];
	unsigned types[32], n = pci_find_virtio(g, addrs, types, 32), type = 0;

	for (unsigned i = 0; i < n; i++)
		if (addrs[i].dev == slot)
			type = types[i];
	*index = 0;
	for (unsigned i = 0; i < n; i++)
		if (types[i] == type && addrs[i].dev < slot)
			(*index)++;
	return type;
}

/* The new disk: sector 0.. gets a text naming the slot, flushed, read
 * back; the host finds the same bytes in the image. */
static void disk_added(struct guest *g, struct hotplug_state *h, unsigned slot, unsigned index)
{
	struct blk_dev *b;
	int ws, fs, rs;
	size_t n = 0;

	if (blk_open(g, index, &b)) {
		out("RESULT hotplug_blk=slot:%u,error:open\n", slot);
		return;
	}
	h->blk[slot] = b;
	while (n < HP_TEST_BYTES) {
		char line[64];
		size_t len = fmt(line, sizeof(line), "cloison hotplug slot %u\n", slot);

		for (size_t i = 0; i < len && n < HP_TEST_BYTES; i++)
			h->buf[n++] = (uint8_t)line[i];
	}
	memset(h->back, 0, HP_TEST_BYTES);
	ws = blk_rw(b, BLK_T_OUT, 0, h->buf, HP_TEST_BYTES);
	fs = blk_rw(b, BLK_T_FLUSH, 0, NULL, 0);
	rs = blk_rw(b, BLK_T_IN, 0, h->back, HP_TEST_BYTES);
	out("RESULT hotplug_blk=slot:%u,%s,write:%d,flush:%d,read:%d\n", slot,
	    !ws && !fs && !rs && !memcmp(h->buf, h->back, HP_TEST_BYTES) ? "ok" : "bad", ws, fs, rs);
}

static void slot_added(struct guest *g, struct hotplug_state *h, unsigned slot)
{
	unsigned index, type = slot_virtio_type(g, slot, &index);
	const char *kind = type == VIRTIO_ID_BLK ? "blk" : type == VIRTIO_ID_NET ? "net" : "other";

	out("RESULT hotplug_add=slot:%u,kind:%s\n", slot, kind);
	if (type == VIRTIO_ID_BLK) {
		disk_added(g, h, slot, index);
	} else if (type == VIRTIO_ID_NET && g->opt_have_ip && !g->net && index == 0) {
		if (net_start(g, g->opt_ip, g->opt_prefix, &g->net) == 0)
			h->net[slot] = true;
		out("RESULT hotplug_net=slot:%u,%s\n", slot, g->net ? "up" : "error");
	}
}

/* Stops using slot's device, ejects it, and watches the function go. */
static void slot_release(struct guest *g, struct hotplug_state *h, unsigned slot)
{
	uint64_t until;

	if (h->keep) {
		if (!(h->kept & (1u << slot)))
			out("RESULT hotplug_keep=slot:%u\n", slot);
		h->kept |= 1u << slot;
		return;
	}
	if (h->blk[slot])
		virtio_reset(blk_virtio(h->blk[slot]));
	if (h->net[slot] && g->net) {
		net_stop(g->net);
		g->net = NULL;
	}
	h->blk[slot] = NULL;
	h->net[slot] = false;
	out("RESULT hotplug_release=slot:%u\n", slot);
	io_out32(HP_PORT + HP_EJECT, 1u << slot);
	/* the VMM tears the device down on its own thread: give it a moment */
	until = timer_ns(g) + 2000000000ULL;
	while (slot_vendor(g, slot) != 0xffff && timer_ns(g) < until)
		timer_sleep_ns(g, 1000000);
	out("RESULT hotplug_gone=slot:%u,vendor:0x%x\n", slot, slot_vendor(g, slot));
}

int hotplug_start(struct guest *g, bool keep)
{
	struct hotplug_state *h;

	if (g->hotplug)
		return 0;
	if (!g->acpi.gpe0_blk) {
		out("RESULT hotplug_error=no GPE0 block in the FADT\n");
		return -1;
	}
	h = mm_alloc(g, sizeof(*h), 64);
	if (!h || !(h->buf = mm_alloc(g, HP_TEST_BYTES, 4096)) ||
	    !(h->back = mm_alloc(g, HP_TEST_BYTES, 4096))) {
		out("RESULT hotplug_error=out of memory\n");
		return -1;
	}
	h->keep = keep;
	h->slots = io_in32(HP_PORT + HP_SLOTS);
	g->hotplug = h;
	out("RESULT hotplug_slots=0x%x\n", h->slots);
	out("RESULT hotplug_ready=%s\n", keep ? "keep" : "release");
	return 0;
}

bool hotplug_poll(struct guest *g)
{
	struct hotplug_state *h = g->hotplug;
	uint16_t gpe_sts;
	uint32_t up, down;

	if (!h)
		return false;
	gpe_sts = io_in16(g->acpi.gpe0_blk);
	if (!(gpe_sts & (1u << HP_GPE_BIT)))
		return false;
	io_out16(g->acpi.gpe0_blk, 1u << HP_GPE_BIT); /* write 1 to clear, before reading */
	up = io_in32(HP_PORT + HP_UP);
	down = io_in32(HP_PORT + HP_DOWN);
	out("hotplug: GPE, up 0x%x down 0x%x\n", up, down);
	for (unsigned s = 1; s < 32; s++)
		if (up & (1u << s))
			slot_added(g, h, s);
	for (unsigned s = 1; s < 32; s++)
		if (down & (1u << s))
			slot_release(g, h, s);
	return true;
}
