#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm/boot/acpi.h"
#include "vmm/layout.h"

#define BUF_LEN (128 * 1024)

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

static const uint8_t *at_gpa(const uint8_t *buf, uint64_t gpa, size_t used)
{
	assert_true(gpa >= LAYOUT_ACPI_BASE);
	assert_true(gpa - LAYOUT_ACPI_BASE + 36 <= used);
	return buf + (gpa - LAYOUT_ACPI_BASE);
}

static void check_table(const uint8_t *t, const char *sig, size_t used_from_t)
{
	uint32_t len = rd32(t + 4);

	assert_memory_equal(t, sig, 4);
	assert_true(len >= 36 && len <= used_from_t);
	assert_int_equal(sum(t, len), 0);
}

struct built {
	uint8_t *buf;
	struct acpi_tables tab;
};

/* Whether the tables built next have the VM Generation ID device. */
static bool with_vmgenid;

static void build_hotplug(struct built *b, unsigned ncpus, uint32_t hotplug_slots)
{
	struct acpi_config cfg = { ncpus, 512ULL << 20, 0, hotplug_slots, with_vmgenid };

	b->buf = calloc(1, BUF_LEN);
	assert_non_null(b->buf);
	assert_int_equal(acpi_build(&cfg, b->buf, BUF_LEN, LAYOUT_ACPI_BASE, &b->tab), 0);
	assert_true(b->tab.used <= BUF_LEN);
}

static void build(struct built *b, unsigned ncpus)
{
	build_hotplug(b, ncpus, 0);
}

/* Walks RSDP -> XSDT -> FADT/MADT/MCFG -> DSDT/FACS by the guest pointers,
 * as an OS would, checking every checksum on the way; returns the number of
 * processor-local-APIC entries in the MADT. */
static unsigned walk_tables(const struct built *b, unsigned expect_cpus)
{
	const uint8_t *buf = b->buf, *rsdp, *xsdt, *fadt = NULL, *madt = NULL, *mcfg = NULL;
	size_t used = b->tab.used;
	unsigned cpus = 0, ioapics = 0, isos = 0;
	bool sci_ok = false, irq0_ok = false;

	assert_true(b->tab.rsdp_gpa >= LAYOUT_ACPI_BASE && b->tab.rsdp_gpa % 16 == 0);
	assert_true(b->tab.rsdp_gpa < 0x100000);
	rsdp = buf + (b->tab.rsdp_gpa - LAYOUT_ACPI_BASE);
	assert_memory_equal(rsdp, "RSD PTR ", 8);
	assert_int_equal(rsdp[15], 2);
	assert_int_equal(sum(rsdp, 20), 0);
	assert_int_equal(rd32(rsdp + 20), 36);
	assert_int_equal(sum(rsdp, 36), 0);

	xsdt = at_gpa(buf, rd64(rsdp + 24), used);
	check_table(xsdt, "XSDT", used);
	assert_int_equal(xsdt - buf, b->tab.xsdt_off);
	for (uint32_t off = 36; off < rd32(xsdt + 4); off += 8) {
		const uint8_t *t = at_gpa(buf, rd64(xsdt + off), used);

		if (!memcmp(t, "FACP", 4))
			fadt = t;
		else if (!memcmp(t, "APIC", 4))
			madt = t;
		else if (!memcmp(t, "MCFG", 4))
			mcfg = t;
		else
			fail_msg("unexpected table in XSDT");
	}
	assert_non_null(fadt);
	assert_non_null(madt);
	assert_non_null(mcfg);

	/* FADT */
	check_table(fadt, "FACP", used);
	assert_int_equal(rd32(fadt + 4), 276);
	assert_true(fadt[8] >= 5);
	assert_int_equal(rd16(fadt + 46), IRQ_ACPI_SCI);
	assert_int_equal(rd32(fadt + 56), PORT_ACPI_PM1A_EVT);
	assert_int_equal(rd32(fadt + 64), PORT_ACPI_PM1A_CNT);
	assert_int_equal(rd32(fadt + 76), PORT_ACPI_PM_TMR);
	assert_int_equal(rd32(fadt + 80), PORT_ACPI_GPE0);
	assert_int_equal(rd32(fadt + 112) & (1u << 10), 1u << 10); /* RESET_REG_SUP */
	assert_int_equal(rd32(fadt + 112) & (1u << 4), 0);	    /* fixed power button */
	assert_int_equal(rd32(fadt + 112) & (1u << 20), 0);	    /* not hardware-reduced */
	assert_int_equal(fadt[116], 1);				    /* reset reg in I/O space */
	assert_int_equal(rd64(fadt + 120), PORT_ACPI_RESET);
	assert_int_equal(fadt[128], ACPI_RESET_VALUE);
	assert_int_equal(rd64(fadt + 140), rd32(fadt + 40));
	assert_int_equal(rd64(fadt + 132), 0); /* one FACS pointer only */
	check_table(at_gpa(buf, rd64(fadt + 140), used), "DSDT", used);
	assert_int_equal(at_gpa(buf, rd64(fadt + 140), used) - buf, b->tab.dsdt_off);
	{
		const uint8_t *facs = at_gpa(buf, rd32(fadt + 36), used);

		assert_memory_equal(facs, "FACS", 4);
		assert_int_equal(rd32(facs + 4), 64);
		assert_int_equal(rd32(fadt + 36) % 64, 0);
		assert_int_equal(facs - buf, b->tab.facs_off);
	}

	/* MADT */
	check_table(madt, "APIC", used);
	assert_int_equal(rd32(madt + 36), LAYOUT_LAPIC_BASE);
	for (uint32_t off = 44; off < rd32(madt + 4);) {
		const uint8_t *e = madt + off;

		assert_true(e[1] >= 2 && off + e[1] <= rd32(madt + 4));
		if (e[0] == 0) {
			assert_int_equal(e[3], cpus); /* APIC ids 0..n-1 in order */
			assert_int_equal(rd32(e + 4) & 1, 1);
			cpus++;
		} else if (e[0] == 1) {
			assert_int_equal(rd32(e + 4), LAYOUT_IOAPIC_BASE);
			assert_int_equal(rd32(e + 8), 0);
			ioapics++;
		} else if (e[0] == 2) {
			isos++;
			if (e[3] == 0 && rd32(e + 4) == 2)
				irq0_ok = true;
			if (e[3] == IRQ_ACPI_SCI && rd32(e + 4) == IRQ_ACPI_SCI &&
			    rd16(e + 8) == 0x0d)
				sci_ok = true;
		}
		off += e[1];
	}
	assert_int_equal(cpus, expect_cpus);
	assert_int_equal(ioapics, 1);
	assert_int_equal(isos, 2);
	assert_true(irq0_ok);
	assert_true(sci_ok);

	/* MCFG */
	check_table(mcfg, "MCFG", used);
	assert_int_equal(rd64(mcfg + 44), LAYOUT_PCI_ECAM_BASE);
	assert_int_equal(mcfg[54], 0);
	assert_int_equal(mcfg[55], 0);
	return cpus;
}

static void test_tables_for_cpu_counts(void **state)
{
	static const unsigned counts[] = { 1, 2, 4, 64, 255 };

	for (unsigned i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct built b;

		build(&b, counts[i]);
		assert_int_equal(walk_tables(&b, counts[i]), counts[i]);
		free(b.buf);
	}
}

static void test_bad_config(void **state)
{
	struct acpi_config cfg = { 0, 512ULL << 20, 0 };
	struct acpi_tables tab;
	uint8_t *buf = calloc(1, BUF_LEN);

	assert_int_equal(acpi_build(&cfg, buf, BUF_LEN, LAYOUT_ACPI_BASE, &tab), -EINVAL);
	cfg.ncpus = 256;
	assert_int_equal(acpi_build(&cfg, buf, BUF_LEN, LAYOUT_ACPI_BASE, &tab), -EINVAL);
	cfg.ncpus = 1;
	assert_int_equal(acpi_build(&cfg, buf, BUF_LEN, 0xfffff000ULL, &tab), -EINVAL);
	free(buf);
}

/* Every buffer shorter than what the tables need fails with -ENOSPC and
 * never writes past its end (the buffers are exact-size heap blocks, so
 * ASan would catch an overrun). */
static void test_small_buffers(void **state)
{
	struct acpi_config cfg = { 8, 512ULL << 20, 0 };
	struct built b;
	size_t need;

	build(&b, 8);
	need = b.tab.used;
	free(b.buf);
	for (size_t len = 0; len < need; len += (len < 64 ? 1 : 7)) {
		struct acpi_tables tab;
		uint8_t *buf = malloc(len ? len : 1);

		assert_int_equal(acpi_build(&cfg, buf, len, LAYOUT_ACPI_BASE, &tab), -ENOSPC);
		free(buf);
	}
	{
		struct acpi_tables tab;
		uint8_t *buf = malloc(need);

		assert_int_equal(acpi_build(&cfg, buf, need, LAYOUT_ACPI_BASE, &tab), 0);
		free(buf);
	}
}

/* ---- iasl ---- */

static bool have_iasl(void)
{
	return access("/usr/bin/iasl", X_OK) == 0;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *s;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return s;
}

/* Runs iasl with args in dir; returns its combined output; fails the test
 * on a non-zero exit. */
static char *run_iasl(const char *dir, const char *args)
{
	char cmd[1024], log[512];
	int rc;

	snprintf(log, sizeof(log), "%s/iasl.log", dir);
	snprintf(cmd, sizeof(cmd), "cd '%s' && /usr/bin/iasl %s > iasl.log 2>&1", dir, args);
	rc = system(cmd);
	if (rc != 0) {
		char *out = read_text(log);
		fprintf(stderr, "iasl %s failed (%d):\n%s\n", args, rc, out ? out : "");
		free(out);
		fail();
	}
	return read_text(log);
}

/* iasl prints "Error"/"Warning"/"Remark" lines about what it dislikes. */
static void assert_iasl_clean(const char *what, const char *out)
{
	const char *bad[] = { "Error", "Warning", "Invalid", "mismatch", "Unknown" };

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *hit = strstr(out, bad[i]);

		/* The compiler's summary line says "0 Errors, 0 Warnings": a
		 * count of exactly zero is fine, "10 Errors" is not. */
		while (hit && hit - out >= 2 && !strncmp(hit - 2, "0 ", 2) &&
		       (hit - out == 2 || !isdigit((unsigned char)hit[-3])))
			hit = strstr(hit + 1, bad[i]);
		if (hit) {
			fprintf(stderr, "iasl complains about %s:\n%s\n", what, out);
			fail();
		}
	}
}

static void disassemble(const char *dir, const char *name, const uint8_t *t, size_t len,
			char **dsl)
{
	char path[512], args[256], *out;

	snprintf(path, sizeof(path), "%s/%s.dat", dir, name);
	write_file(path, t, len);
	snprintf(args, sizeof(args), "-d %s.dat", name);
	out = run_iasl(dir, args);
	assert_iasl_clean(name, out);
	free(out);
	snprintf(path, sizeof(path), "%s/%s.dsl", dir, name);
	*dsl = read_text(path);
	assert_non_null(*dsl);
	/* The disassembler embeds its own complaints as comments. */
	assert_iasl_clean(name, *dsl);
}

/* The ACPI PCI hotplug objects acpiphp needs, for slots 3 and 31 (and
 * none for slot 2, which the command line's devices took). */
static void check_hotplug_dsl(const char *dsl)
{
	assert_non_null(strstr(dsl, "OperationRegion (PCHP, SystemIO, 0xAE00, 0x14)"));
	assert_non_null(strstr(dsl, "Field (PCHP, DWordAcc, NoLock, WriteAsZeros)"));
	assert_non_null(strstr(dsl, "Device (S03)"));
	assert_non_null(strstr(dsl, "Device (S1F)"));
	assert_null(strstr(dsl, "Device (S02)"));
	assert_non_null(strstr(dsl, "Name (_SUN, 0x1F)"));
	assert_non_null(strstr(dsl, "Name (_ADR, 0x001F0000)"));
	assert_non_null(strstr(dsl, "Method (_EJ0, 1"));
	assert_non_null(strstr(dsl, "PCEJ = 0x80000000"));
	assert_non_null(strstr(dsl, "Method (_E01, 0"));
	assert_non_null(strstr(dsl, "\\_SB.PCI0.PCNT ()"));
	assert_non_null(strstr(dsl, "Notify (S03, One)"));
	assert_non_null(strstr(dsl, "Notify (S1F, 0x03)"));
}

/* Microsoft's VM Generation ID device: its ids, ADDR returning the
 * buffer's address as two 32-bit halves, and the GPE method's Notify. */
static void check_vmgenid_dsl(const char *dsl)
{
	const char *dev = strstr(dsl, "Device (VGEN)"), *addr;

	assert_non_null(dev);
	assert_non_null(strstr(dev, "Name (_HID, \"CLSN0001\")"));
	assert_non_null(strstr(dev, "Name (_CID, \"VM_Gen_Counter\")"));
	assert_non_null(strstr(dev, "Name (_DDN, \"VM_Gen_Counter\")"));
	addr = strstr(dev, "Method (ADDR, 0");
	assert_non_null(addr);
	assert_non_null(strstr(addr, "0x000DF000"));
	assert_non_null(strstr(dsl, "Method (_E02, 0"));
	assert_non_null(strstr(dsl, "Notify (\\_SB.VGEN, 0x80)"));
}

static void iasl_check(unsigned ncpus, uint32_t hotplug_slots)
{
	char dir[] = "/tmp/cloison-acpi-XXXXXX", cmd[600];
	const char *names[] = { "xsdt", "facp", "facs", "apic", "mcfg", "dsdt" };
	struct built b;
	size_t offs[6];
	char *dsl, *out;

	build_hotplug(&b, ncpus, hotplug_slots);
	offs[0] = b.tab.xsdt_off;
	offs[1] = b.tab.fadt_off;
	offs[2] = b.tab.facs_off;
	offs[3] = b.tab.madt_off;
	offs[4] = b.tab.mcfg_off;
	offs[5] = b.tab.dsdt_off;
	assert_non_null(mkdtemp(dir));

	/* The RSDP has no standard header, so iasl -d cannot load it from a
	 * file; walk_tables() checks it (signature, revision, both checksums,
	 * the XSDT pointer). */
	for (unsigned i = 0; i < 6; i++) {
		const uint8_t *t = b.buf + offs[i];

		disassemble(dir, names[i], t, rd32(t + 4), &dsl);
		if (!strcmp(names[i], "dsdt")) {
			assert_non_null(strstr(dsl, "PNP0A08"));
			assert_non_null(strstr(dsl, "PNP0A03"));
			assert_non_null(strstr(dsl, "PNP0501"));
			assert_non_null(strstr(dsl, "PNP0C0C"));
			assert_non_null(strstr(dsl, "_S5_"));
			assert_non_null(strstr(dsl, "_PRT"));
			assert_non_null(strstr(dsl, "0x0CF7"));
			assert_non_null(strstr(dsl, "0xC0000000"));
			assert_non_null(strstr(dsl, "0xDFFFFFFF"));
			assert_non_null(strstr(dsl, "0x03F8,"));
			assert_non_null(strstr(dsl, "IRQNoFlags ()"));
			assert_non_null(strstr(strstr(dsl, "IRQNoFlags ()"), "{4}"));
			assert_non_null(strstr(dsl, "0xE0000000,         // Address Base"));
			if (hotplug_slots)
				check_hotplug_dsl(dsl);
			else
				assert_null(strstr(dsl, "PCHP"));
			if (with_vmgenid)
				check_vmgenid_dsl(dsl);
			else
				assert_null(strstr(dsl, "VGEN"));
		}
		if (!strcmp(names[i], "apic")) {
			char needle[64];

			snprintf(needle, sizeof(needle), "Local Apic ID : %02X", ncpus - 1);
			assert_non_null(strstr(dsl, needle));
		}
		free(dsl);
	}
	/* The disassembled DSDT compiles back without complaint. */
	out = run_iasl(dir, "-p dsdt2 dsdt.dsl");
	assert_iasl_clean("dsdt recompile", out);
	free(out);

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(b.buf);
}

static void test_iasl_disassembles(void **state)
{
	if (!have_iasl())
		skip(); /* host lacks acpica-tools: scripts/deps.sh installs it */
	iasl_check(1, 0);
	iasl_check(4, 0xfffffff8u);
	iasl_check(255, 0);
}

static void test_iasl_vmgenid(void **state)
{
	if (!have_iasl())
		skip(); /* host lacks acpica-tools: scripts/deps.sh installs it */
	with_vmgenid = true;
	iasl_check(1, 0);	    /* alone: \_GPE has only _E02 */
	iasl_check(2, 0xfffffff8u); /* with hotplug's _E01 */
	with_vmgenid = false;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tables_for_cpu_counts),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_small_buffers),
		cmocka_unit_test(test_iasl_disassembles),
		cmocka_unit_test(test_iasl_vmgenid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
