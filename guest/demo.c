/* `demo`: the embedded default of `make run` (scripts/run-demo.sh). A short
 * welcome, then an interactive prompt on COM1 for a newcomer: help, facts,
 * disk, net, poweroff (docs/testguest.md). Input is polled from the UART
 * (LSR bit 0, RBR); between keystrokes the guest sleeps 2 ms in hlt
 * and keeps polling the ACPI power button. */
#include "virtio.h"

#define COM1 0x3f8
#define UART_LSR 5
#define LSR_DR 0x01
#define LINE_MAX 80
#define IDLE_NS 2000000ULL
#define DEMO_SECTOR 2048 /* 1 MiB into the disk */
#define SECTOR 512
#define VIRTIO_NET_F_MAC (1ULL << 5)
#define VIRTIO_NET_F_STATUS (1ULL << 16)
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1

static bool uart_getc(uint8_t *c)
{
	if (!(io_in8(COM1 + UART_LSR) & LSR_DR))
		return false;
	*c = io_in8(COM1);
	return true;
}

/* One line from COM1, echoed; backspace/DEL erase, Ctrl-U clears, CR or LF
 * (or CR LF) ends it. Returns its length. */
static size_t read_line(struct guest *g, char *buf, size_t max)
{
	static bool last_cr;
	size_t n = 0;
	uint8_t c;

	for (;;) {
		if (!uart_getc(&c)) {
			workloads_serve(g); /* ip=, console, dirty= keep working */
			acpi_poll_power_button(g);
			if (!workloads_busy(g))
				timer_wait_ns(g, IDLE_NS);
			continue;
		}
		if (c == '\n' && last_cr) { /* the LF of a CR LF */
			last_cr = false;
			continue;
		}
		last_cr = c == '\r';
		if (c == '\r' || c == '\n') {
			out_raw("\n", 1);
			buf[n] = 0;
			return n;
		}
		if (c == 0x08 || c == 0x7f) {
			if (n) {
				n--;
				out_raw("\b \b", 3);
			}
		} else if (c == 0x15) { /* Ctrl-U */
			while (n) {
				n--;
				out_raw("\b \b", 3);
			}
		} else if (c >= 0x20 && c < 0x7f && n < max - 1) {
			buf[n++] = (char)c;
			out_raw((const char *)&c, 1);
		}
	}
}

static void cmd_help(struct guest *g)
{
	(void)g;
	out("  help      this list\n"
	    "  facts     CPUs, memory, the e820 map and the clock this guest found\n"
	    "  disk      write a pattern to a sector of the virtio disk, read it back\n"
	    "  net       the virtio NIC's MAC address and link state\n"
	    "  poweroff  ACPI power-off (S5); the VM then exits\n");
}

static const char *e820_type(uint32_t t)
{
	switch (t) {
	case 1: return "RAM";
	case 2: return "reserved";
	case 3: return "ACPI data";
	case 4: return "ACPI NVS";
	case 5: return "bad";
	}
	return "other";
}

static void cmd_facts(struct guest *g)
{
	out("  CPUs online : %u (the MADT lists %u)\n", g->cpus_online, g->acpi.ncpus);
	out("  memory      : %lu MiB usable RAM, highest RAM at 0x%lx\n", g->mem_total >> 20, g->ram_end);
	out("  e820 map    : %u entries\n", g->n_e820);
	for (unsigned i = 0; i < g->n_e820; i++)
		out("    0x%012lx-0x%012lx %s\n", g->e820[i].addr, g->e820[i].addr + g->e820[i].size,
		    e820_type(g->e820[i].type));
	out("  clock       : TSC at %lu.%03lu MHz, timer %s\n", g->tsc_hz / 1000000,
	    g->tsc_hz / 1000 % 1000, g->tsc_deadline ? "LAPIC TSC-deadline" : "LAPIC one-shot");
	out("  ACPI        : PM1a_CNT 0x%x, S5 %s, PCI config %s\n", g->acpi.pm1a_cnt,
	    g->acpi.have_s5 ? "yes" : "no", g->acpi.have_ecam ? "ECAM (MCFG)" : "ports 0xcf8/0xcfc");
	out("  uptime      : %lu ms\n", timer_ns(g) / 1000000);
}

static void cmd_disk(struct guest *g)
{
	static uint32_t round;
	uint8_t *wr, *rd;
	uint64_t sector = DEMO_SECTOR;
	int ws, rs;

	if (!g->blk0 && blk_open(g, 0, &g->blk0)) {
		out("  no disk: this VM has no virtio-blk device. Add one, e.g.\n"
		    "    cloison disk create demo.vhdx --size 1G\n"
		    "    cloison vm create NAME ... --disk demo.vhdx   (or cloison-vmm --disk path=demo.img)\n");
		return;
	}
	wr = mm_alloc(g, SECTOR, SECTOR);
	rd = mm_alloc(g, SECTOR, SECTOR);
	if (!wr || !rd) {
		out("  disk: out of memory\n");
		return;
	}
	if (blk_capacity(g->blk0) < (sector + 1) * SECTOR)
		sector = 0;
	round++;
	for (unsigned i = 0; i < SECTOR; i++)
		wr[i] = (uint8_t)(i * 7 + round * 31 + 1);
	fmt((char *)wr, 48, "cloison demo, round %u", round);
	memset(rd, 0, SECTOR);
	out("  disk: %lu MiB; writing %u bytes to sector %lu...\n", blk_capacity(g->blk0) >> 20, SECTOR,
	    sector);
	ws = blk_rw(g->blk0, VIRTIO_BLK_T_OUT, sector, wr, SECTOR);
	if (ws != 0) {
		out("  disk: write failed (status %d%s)\n", ws, ws == 1 ? ", I/O error or read-only" : "");
		return;
	}
	rs = blk_rw(g->blk0, VIRTIO_BLK_T_IN, sector, rd, SECTOR);
	if (rs != 0) {
		out("  disk: read failed (status %d)\n", rs);
		return;
	}
	if (memcmp(wr, rd, SECTOR)) {
		out("  disk: read back DIFFERS from what was written\n");
		out("RESULT demo_disk=bad\n");
		return;
	}
	out("  disk: read it back, all %u bytes match (\"%s\")\n", SECTOR, (const char *)rd);
	out("RESULT demo_disk=ok\n");
}

static void cmd_net(struct guest *g)
{
	static struct virtio_dev *nic;
	static bool tried;
	uint8_t mac[6];

	if (!tried) {
		tried = true;
		nic = mm_alloc(g, sizeof(*nic), 64);
		if (nic && virtio_open(g, VIRTIO_ID_NET, 0, VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS, 2, 0, nic))
			nic = NULL;
		if (nic)
			virtio_ready(nic);
	}
	if (g->net) {
		out("  net: the NIC is serving ip= (see RESULT net_mac above)\n");
		return;
	}
	if (!nic) {
		out("  no NIC: this VM has no virtio-net device (cloison vm create ... --nic ...,\n"
		    "  which needs a tap device and so privileges; make run leaves it out)\n");
		return;
	}
	if (nic->features & VIRTIO_NET_F_MAC) {
		for (unsigned i = 0; i < 6; i++)
			mac[i] = virtio_cfg8(nic, i);
		out("  net: MAC %02x:%02x:%02x:%02x:%02x:%02x\n", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
	} else {
		out("  net: the device offers no MAC address\n");
	}
	if (nic->features & VIRTIO_NET_F_STATUS)
		out("  net: link %s\n", (virtio_cfg8(nic, 6) & 1) ? "up" : "down");
	else
		out("  net: link state not reported (no VIRTIO_NET_F_STATUS): assume up\n");
}

int demo_run(struct guest *g)
{
	char line[LINE_MAX];

	out("\n"
	    "Welcome to cloison. This is its built-in test guest, running in a KVM VM:\n"
	    "%u CPU(s), %lu MiB of RAM. Type a command and press Enter; `help` lists them.\n"
	    "(Detach from the console with Ctrl-], or press the VM's power button.)\n\n",
	    g->cpus_online, g->mem_total >> 20);
	for (;;) {
		const char *w;
		size_t len;

		out_raw("cloison> ", 9);
		read_line(g, line, sizeof(line));
		w = line;
		while (*w == ' ' || *w == '\t')
			w++;
		len = strlen(w);
		while (len && (w[len - 1] == ' ' || w[len - 1] == '\t'))
			len--;
		if (!len)
			continue;
		if (word_is(w, len, "help") || word_is(w, len, "?"))
			cmd_help(g);
		else if (word_is(w, len, "facts"))
			cmd_facts(g);
		else if (word_is(w, len, "disk"))
			cmd_disk(g);
		else if (word_is(w, len, "net"))
			cmd_net(g);
		else if (word_is(w, len, "poweroff") || word_is(w, len, "exit") || word_is(w, len, "quit"))
			acpi_poweroff(g);
		else {
			line[(size_t)(w - line) + (len > 40 ? 40 : len)] = 0;
			out("  unknown command '%s': type `help` for the list\n", w);
		}
	}
}
