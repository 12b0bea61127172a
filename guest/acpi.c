/* ACPI from ring 3: RSDP -> XSDT/RSDT -> FADT (PM1 blocks, PM timer, DSDT's
 * \_S5), MADT (APIC ids), MCFG (ECAM). Works with QEMU's tables and ours.
 * The tables are below 4 GiB, which boot.S maps for ring 3. */
#include "user.h"

#define PWRBTN 0x100
#define SLP_EN (1u << 13)

static const uint8_t *phys(uint64_t a) { return (const uint8_t *)(uintptr_t)a; }

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static bool checksum_ok(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return sum == 0;
}

static uint64_t find_rsdp(uint64_t hint)
{
	if (hint && memcmp(phys(hint), "RSD PTR ", 8) == 0)
		return hint;
	for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
		if (memcmp(phys(a), "RSD PTR ", 8) == 0 && checksum_ok(phys(a), 20))
			return a;
	return 0;
}

/* A GAS in the FADT: the address when it is in I/O space. */
static uint16_t gas_io(const uint8_t *fadt, uint32_t len, uint32_t off, uint8_t *bytes)
{
	if (len < off + 12 || fadt[off] != 1)
		return 0;
	if (bytes)
		*bytes = fadt[off + 1] / 8;
	return (uint16_t)rd64(fadt + off + 4);
}

static void parse_s5(struct guest *g, const uint8_t *dsdt)
{
	uint32_t len = rd32(dsdt + 4);

	for (uint32_t i = 36; i + 12 < len; i++) {
		const uint8_t *p = dsdt + i;
		unsigned skip;

		if (memcmp(p, "_S5_", 4) != 0)
			continue;
		if (!(p[-1] == 0x08 || (p[-1] == '\\' && p[-2] == 0x08)))
			continue;
		if (p[4] != 0x12) /* PackageOp */
			continue;
		skip = (p[5] >> 6) + 1; /* PkgLength */
		p += 5 + skip + 1;	/* + NumElements */
		switch (p[0]) {
		case 0x0a: g->acpi.s5_slp_typ = p[1]; break;
		case 0x0b: g->acpi.s5_slp_typ = rd16(p + 1); break;
		case 0x00: g->acpi.s5_slp_typ = 0; break;
		case 0x01: g->acpi.s5_slp_typ = 1; break;
		default: g->acpi.s5_slp_typ = p[0]; break;
		}
		g->acpi.have_s5 = true;
		return;
	}
}

static void parse_fadt(struct guest *g, const uint8_t *t)
{
	uint32_t len = rd32(t + 4);
	struct acpi_info *a = &g->acpi;
	uint64_t dsdt = rd32(t + 40);
	uint8_t bytes = 0;

	a->smi_cmd = (uint16_t)rd32(t + 48);
	a->acpi_enable = t[52];
	a->pm1a_evt = (uint16_t)rd32(t + 56);
	a->pm1a_cnt = (uint16_t)rd32(t + 64);
	a->pm_tmr = rd32(t + 76);
	a->gpe0_blk = t[92] ? (uint16_t)rd32(t + 80) : 0; /* GPE0_BLK, if GPE0_BLK_LEN */
	a->pm1_evt_len = t[88];
	a->pm_tmr_32 = len >= 116 && (rd32(t + 112) & 0x100);
	if (!a->pm1a_evt) {
		a->pm1a_evt = gas_io(t, len, 148, &bytes);
		a->pm1_evt_len = bytes;
	}
	if (!a->pm1a_cnt)
		a->pm1a_cnt = gas_io(t, len, 172, NULL);
	if (!a->pm_tmr)
		a->pm_tmr = gas_io(t, len, 208, NULL);
	if (len >= 148 && rd64(t + 140))
		dsdt = rd64(t + 140);
	if (dsdt && memcmp(phys(dsdt), "DSDT", 4) == 0)
		parse_s5(g, phys(dsdt));
}

static void parse_madt(struct guest *g, const uint8_t *t)
{
	uint32_t len = rd32(t + 4);
	struct acpi_info *a = &g->acpi;

	for (uint32_t off = 44; off + 2 <= len;) {
		const uint8_t *e = t + off;
		uint32_t id = UINT32_MAX;

		if (e[1] < 2)
			break;
		if (e[0] == 0 && e[1] >= 8 && (rd32(e + 4) & 1))
			id = e[3];
		else if (e[0] == 9 && e[1] >= 16 && (rd32(e + 8) & 1))
			id = rd32(e + 4);
		if (id != UINT32_MAX && a->ncpus < GUEST_MAX_CPUS)
			a->apic_ids[a->ncpus++] = id;
		off += e[1];
	}
}

static void parse_mcfg(struct guest *g, const uint8_t *t)
{
	uint32_t len = rd32(t + 4);

	for (uint32_t off = 44; off + 16 <= len; off += 16) {
		if (rd16(t + off + 8) != 0)
			continue;
		g->acpi.have_ecam = true;
		g->acpi.ecam_base = rd64(t + off);
		g->acpi.ecam_bus_end = t[off + 11];
		return;
	}
}

int acpi_parse(struct guest *g, uint64_t rsdp_hint)
{
	uint64_t rsdp = find_rsdp(rsdp_hint), root;
	const uint8_t *r, *sdt;
	unsigned entry;

	if (!rsdp)
		return -1;
	g->acpi.rsdp = rsdp;
	r = phys(rsdp);
	if (r[15] >= 2 && rd64(r + 24)) {
		root = rd64(r + 24);
		entry = 8;
	} else {
		root = rd32(r + 16);
		entry = 4;
	}
	sdt = phys(root);
	for (uint32_t off = 36; off + entry <= rd32(sdt + 4); off += entry) {
		uint64_t ta = entry == 8 ? rd64(sdt + off) : rd32(sdt + off);
		const uint8_t *t = phys(ta);

		if (!ta)
			continue;
		if (memcmp(t, "FACP", 4) == 0)
			parse_fadt(g, t);
		else if (memcmp(t, "APIC", 4) == 0)
			parse_madt(g, t);
		else if (memcmp(t, "MCFG", 4) == 0)
			parse_mcfg(g, t);
	}
	if (g->acpi.pm1a_cnt)
		sys_call(SYS_SET_POWEROFF, g->acpi.pm1a_cnt,
			 (uint16_t)(((g->acpi.have_s5 ? g->acpi.s5_slp_typ : 0) & 7) << 10 | SLP_EN), 0, 0);
	return 0;
}

void acpi_enable_events(struct guest *g)
{
	struct acpi_info *a = &g->acpi;

	if (!a->pm1a_evt || !a->pm1a_cnt)
		return;
	/* No ACPI_ENABLE through SMI_CMD: we poll and need no SCI, and the SMI
	 * it raises on QEMU's PIIX4 leaves PM1a_CNT deaf to S5 on our hosts. */
	io_out16(a->pm1a_evt, PWRBTN); /* clear a stale press */
	if (a->pm1_evt_len >= 4) {
		uint16_t en = (uint16_t)(a->pm1a_evt + a->pm1_evt_len / 2);
		io_out16(en, (uint16_t)(io_in16(en) | PWRBTN));
	}
}

void acpi_poweroff(struct guest *g)
{
	struct acpi_info *a = &g->acpi;

	out("RESULT poweroff=1\n");
	if (a->pm1a_cnt) {
		uint16_t typ = a->have_s5 ? a->s5_slp_typ : 0;
		io_out16(a->pm1a_cnt, (uint16_t)((typ & 7) << 10 | SLP_EN));
		busy_wait_us(g, 2000000); /* the VMM acts asynchronously */
	}
	out("poweroff: no ACPI PM1a_CNT or it did not take; halting\n");
	for (;;)
		sys_call(SYS_HALT, 0, 0, 0, 0);
}

void acpi_poll_power_button(struct guest *g)
{
	uint64_t now = rdtsc();

	if (!g->acpi.pm1a_evt || now < g->next_button_poll)
		return;
	g->next_button_poll = now + g->tsc_hz / 100;
	if (!(io_in16(g->acpi.pm1a_evt) & PWRBTN))
		return;
	io_out16(g->acpi.pm1a_evt, PWRBTN); /* write 1 to clear */
	if (g->acpi_ignore) {
		out("power button ignored (acpi=ignore)\n");
		return;
	}
	out("RESULT power_button=1\n");
	acpi_poweroff(g);
}
