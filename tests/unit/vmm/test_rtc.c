#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <pthread.h>
#include <unistd.h>

#include "common/evloop.h"
#include "platform_vm_double.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"

#define MiB (1024ULL * 1024)

struct fixture {
	struct vm *vm;
	struct rtc *r;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->vm = vmd_create();
	f->vm->ncpus = 4;
	assert_int_equal(rtc_create(f->vm, 512 * MiB, 1024 * MiB, &f->r), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	rtc_destroy(f->r);
	vmd_destroy(f->vm);
	free(f);
	return 0;
}

static uint8_t cmos_read(struct fixture *f, uint8_t reg)
{
	vmd_outb(f->vm, PORT_RTC, reg);
	return (uint8_t)vmd_inb(f->vm, PORT_RTC + 1);
}

static void cmos_write(struct fixture *f, uint8_t reg, uint8_t v)
{
	vmd_outb(f->vm, PORT_RTC, reg);
	vmd_outb(f->vm, PORT_RTC + 1, v);
}

static unsigned bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0xf);
}

/* Reads the clock as Linux's mc146818_get_time does and returns seconds
 * since the epoch. */
static time_t read_clock(struct fixture *f)
{
	bool binary = cmos_read(f, 0x0b) & 0x04, h24 = cmos_read(f, 0x0b) & 0x02;
	unsigned v[7], hour;
	const uint8_t regs[7] = { 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32 };
	struct tm tm = { 0 };

	for (unsigned i = 0; i < 7; i++) {
		uint8_t raw = cmos_read(f, regs[i]);

		if (i == 2 && !h24) {
			hour = binary ? (raw & 0x7f) : bcd(raw & 0x7f);
			hour %= 12;
			v[i] = hour + ((raw & 0x80) ? 12 : 0);
		} else {
			v[i] = binary ? raw : bcd(raw);
		}
	}
	tm.tm_sec = (int)v[0];
	tm.tm_min = (int)v[1];
	tm.tm_hour = (int)v[2];
	tm.tm_mday = (int)v[3];
	tm.tm_mon = (int)v[4] - 1;
	tm.tm_year = (int)(v[6] * 100 + v[5]) - 1900;
	return timegm(&tm);
}

static void assert_near_host(struct fixture *f, long offset)
{
	time_t before = time(NULL), t = read_clock(f), after = time(NULL);

	assert_true(t >= before + offset - 1);
	assert_true(t <= after + offset + 1);
}

static void test_host_time_all_modes(void **state)
{
	struct fixture *f = *state;

	/* Power-on: BCD, 24-hour, VRT set. */
	assert_int_equal(cmos_read(f, 0x0b) & 0x06, 0x02);
	assert_int_equal(cmos_read(f, 0x0d), 0x80);
	assert_int_equal(cmos_read(f, 0x0c) & 0x80, 0x00); /* flags, but no IRQF */
	assert_near_host(f, 0);
	cmos_write(f, 0x0b, 0x06); /* binary, 24h */
	assert_near_host(f, 0);
	cmos_write(f, 0x0b, 0x04); /* binary, 12h */
	assert_near_host(f, 0);
	cmos_write(f, 0x0b, 0x00); /* BCD, 12h */
	assert_near_host(f, 0);
	/* Day of week is 1..7, Sunday = 1. */
	{
		time_t now = time(NULL);
		struct tm tm;
		gmtime_r(&now, &tm);
		unsigned wday = bcd(cmos_read(f, 0x06));
		assert_true(wday >= 1 && wday <= 7);
		if (tm.tm_hour < 23)
			assert_int_equal(wday, tm.tm_wday + 1);
	}
}

static void test_guest_sets_time(void **state)
{
	struct fixture *f = *state;
	struct tm want = { .tm_year = 2031 - 1900, .tm_mon = 4, .tm_mday = 6,
			   .tm_hour = 19, .tm_min = 8, .tm_sec = 9 };
	time_t target = timegm(&want), now = time(NULL);

	/* SET freezes the clock; the writes land when SET clears. */
	cmos_write(f, 0x0b, 0x82);
	cmos_write(f, 0x00, 0x09);
	cmos_write(f, 0x02, 0x08);
	cmos_write(f, 0x04, 0x19);
	cmos_write(f, 0x07, 0x06);
	cmos_write(f, 0x08, 0x05);
	cmos_write(f, 0x09, 0x31);
	cmos_write(f, 0x32, 0x20);
	assert_int_equal(cmos_read(f, 0x04), 0x19);
	cmos_write(f, 0x0b, 0x02);
	assert_near_host(f, (long)(target - now));
	/* In 12-hour binary mode, 7 PM reads 0x87. */
	cmos_write(f, 0x0b, 0x04);
	assert_int_equal(cmos_read(f, 0x04), 0x87);
	/* A write without SET applies at once: midnight-ish hour 12 AM. */
	cmos_write(f, 0x04, 12);
	cmos_write(f, 0x0b, 0x06);
	assert_int_equal(cmos_read(f, 0x04), 0);
	/* Survives a reset (battery-backed), mode returns to BCD 24h. */
	rtc_reset(f->r);
	assert_int_equal(bcd(cmos_read(f, 0x09)), 31);
}

static void test_uip_is_seen(void **state)
{
	struct fixture *f = *state;
	struct timespec start, now;
	bool seen = false;

	/* Every read bracketed by host clock samples on the same side of the
	 * UIP window must agree with it; at least one must land inside. */
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		struct timespec t0, t1;
		uint8_t a;
		bool in0, in1;

		clock_gettime(CLOCK_REALTIME, &t0);
		a = cmos_read(f, 0x0a);
		clock_gettime(CLOCK_REALTIME, &t1);
		in0 = t0.tv_nsec >= 1000000000L - 2228000L;
		in1 = t1.tv_nsec >= 1000000000L - 2228000L;
		if (t0.tv_sec == t1.tv_sec && in0 && in1) {
			assert_int_equal(a & 0x80, 0x80);
			seen = true;
		} else if (t0.tv_sec == t1.tv_sec && !in0 && !in1) {
			assert_int_equal(a & 0x80, 0);
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (!seen && now.tv_sec - start.tv_sec < 20);
	assert_true(seen);
	assert_int_equal(cmos_read(f, 0x0a) & 0x7f, 0x26);
	cmos_write(f, 0x0a, 0xa6); /* UIP is read-only */
	assert_int_equal(cmos_read(f, 0x0a) & 0x7f, 0x26);
}

static void test_memory_bytes_and_ram(void **state)
{
	struct fixture *f = *state;
	unsigned sum = 0;

	assert_int_equal(cmos_read(f, 0x15) | cmos_read(f, 0x16) << 8, 640);
	/* 511 MiB above 1 MiB does not fit 16 bits of KiB: capped. */
	assert_int_equal(cmos_read(f, 0x30) | cmos_read(f, 0x31) << 8, 0xffff);
	assert_int_equal(cmos_read(f, 0x34) | cmos_read(f, 0x35) << 8, (512 - 16) * 16);
	assert_int_equal(cmos_read(f, 0x5b) | cmos_read(f, 0x5c) << 8 | cmos_read(f, 0x5d) << 16,
			 1024 * 16);
	assert_int_equal(cmos_read(f, 0x5f), 3);
	for (uint8_t i = 0x10; i <= 0x2d; i++)
		sum += cmos_read(f, i);
	assert_int_equal(cmos_read(f, 0x2e) << 8 | cmos_read(f, 0x2f), sum & 0xffff);
	/* Plain RAM; index bit 7 (NMI mask) does not change the register. */
	cmos_write(f, 0x40, 0x5a);
	assert_int_equal(cmos_read(f, 0x40), 0x5a);
	assert_int_equal(cmos_read(f, 0xc0), 0x5a);
	cmos_write(f, 0x7f, 0xa5);
	assert_int_equal(cmos_read(f, 0x7f), 0xa5);
	/* C and D are read-only; the index port reads high. */
	cmos_write(f, 0x0d, 0x00);
	assert_int_equal(cmos_read(f, 0x0d), 0x80);
	assert_int_equal(vmd_inb(f->vm, PORT_RTC), 0xff);
}

/* With the VM's event loop running, enabled events raise IRQ 8 until the
 * guest reads register C. */
struct loop_fixture {
	struct vm *vm;
	struct rtc *r;
	struct evloop *loop;
	pthread_t thread;
};

static void *loop_main(void *arg)
{
	evloop_run(arg);
	return NULL;
}

static bool wait_rises(struct vm *vm, unsigned n, unsigned ms)
{
	for (unsigned i = 0; i < ms; i++) {
		unsigned rises;

		pthread_mutex_lock(&vm->lock);
		rises = vm->irq_rises[IRQ_RTC];
		pthread_mutex_unlock(&vm->lock);
		if (rises >= n)
			return true;
		usleep(1000);
	}
	return false;
}

static uint8_t locked_read(struct fixture *f, uint8_t reg)
{
	return cmos_read(f, reg);
}

static void test_interrupts(void **state)
{
	struct fixture fx;
	struct evloop *loop;
	pthread_t th;
	uint8_t c;

	fx.vm = vmd_create();
	assert_int_equal(evloop_create(&loop), 0);
	fx.vm->loop = loop;
	assert_int_equal(pthread_create(&th, NULL, loop_main, loop), 0);
	assert_int_equal(rtc_create(fx.vm, 256 * MiB, 0, &fx.r), 0);

	/* Nothing enabled: no interrupt, but UF is seen by polling C. */
	usleep(1100 * 1000);
	assert_int_equal(fx.vm->irq_rises[IRQ_RTC], 0);
	c = locked_read(&fx, 0x0c);
	assert_int_equal(c & 0x90, 0x10);

	/* Update-ended interrupt: once a second, held until C is read. */
	cmos_write(&fx, 0x0b, 0x12);
	assert_true(wait_rises(fx.vm, 1, 2500));
	c = locked_read(&fx, 0x0c);
	assert_int_equal(c & 0x90, 0x90);
	assert_int_equal(fx.vm->irq_level[IRQ_RTC], 0);
	assert_true(wait_rises(fx.vm, 2, 2500));
	locked_read(&fx, 0x0c);

	/* Alarm with every field "don't care": AF every second. */
	cmos_write(&fx, 0x01, 0xc0);
	cmos_write(&fx, 0x03, 0xc0);
	cmos_write(&fx, 0x05, 0xc0);
	cmos_write(&fx, 0x0b, 0x22);
	locked_read(&fx, 0x0c);
	assert_true(wait_rises(fx.vm, 3, 2500));
	c = locked_read(&fx, 0x0c);
	assert_int_equal(c & 0xa0, 0xa0);

	/* Periodic at 2 Hz (rate 15). */
	cmos_write(&fx, 0x0a, 0x2f);
	cmos_write(&fx, 0x0b, 0x42);
	locked_read(&fx, 0x0c);
	assert_true(wait_rises(fx.vm, 4, 1500));
	c = locked_read(&fx, 0x0c);
	assert_int_equal(c & 0xc0, 0xc0);

	/* All off: quiet again. */
	cmos_write(&fx, 0x0b, 0x02);
	locked_read(&fx, 0x0c);
	{
		unsigned before = fx.vm->irq_rises[IRQ_RTC];
		usleep(1200 * 1000);
		assert_int_equal(fx.vm->irq_rises[IRQ_RTC], before);
	}
	rtc_destroy(fx.r);
	evloop_stop(loop);
	pthread_join(th, NULL);
	evloop_destroy(loop);
	vmd_destroy(fx.vm);
}

/* The RTC's own calendar agrees with glibc's gmtime_r and timegm: every
 * day from 1600 to 2400 and every boundary around it, and timegm's carry
 * of out-of-range fields (what a guest may write). */
static void test_calendar_matches_libc(void **state)
{
	static const int64_t edges[] = { 0, -1, 1, 86399, 86400, -86400, -86401, 951782400,
					 951868799, 4107542400, -2208988800, 253402300799 };
	(void)state;
	for (int64_t day = -135140; day <= 157054; day++) {
		for (int64_t k = 0; k < 2; k++) {
			time_t t = (time_t)(day * 86400 + k * 86399);
			struct tm a, b;

			assert_non_null(gmtime_r(&t, &a));
			rtc_utc_from_unix((int64_t)t, &b);
			assert_int_equal(a.tm_year, b.tm_year);
			assert_int_equal(a.tm_mon, b.tm_mon);
			assert_int_equal(a.tm_mday, b.tm_mday);
			assert_int_equal(a.tm_hour, b.tm_hour);
			assert_int_equal(a.tm_min, b.tm_min);
			assert_int_equal(a.tm_sec, b.tm_sec);
			assert_int_equal(a.tm_wday, b.tm_wday);
			assert_int_equal(a.tm_yday, b.tm_yday);
			assert_int_equal(rtc_unix_from_utc(&b), (int64_t)t);
		}
	}
	for (unsigned i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
		time_t t = (time_t)edges[i];
		struct tm a, b;

		gmtime_r(&t, &a);
		rtc_utc_from_unix(edges[i], &b);
		assert_int_equal(a.tm_mday, b.tm_mday);
		assert_int_equal(rtc_unix_from_utc(&b), edges[i]);
	}
	/* out of range: month 13, day 0, hour 25, minute 61, second 99, the
	 * BCD garbage a guest can write */
	for (int mon = -14; mon <= 26; mon += 5)
		for (int mday = 0; mday <= 40; mday += 8) {
			struct tm a = { .tm_year = 2026 - 1900, .tm_mon = mon, .tm_mday = mday,
					.tm_hour = 25, .tm_min = 61, .tm_sec = 99 };
			struct tm b = a;

			assert_int_equal(rtc_unix_from_utc(&b), (int64_t)timegm(&a));
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_host_time_all_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guest_sets_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uip_is_seen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_bytes_and_ram, setup, teardown),
		cmocka_unit_test(test_interrupts),
		cmocka_unit_test(test_calendar_matches_libc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
