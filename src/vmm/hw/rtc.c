/* MC146818 CMOS RTC at PORT_RTC (index) / PORT_RTC+1 (data).
 *
 * The clock is the host's UTC time plus an offset the guest changes by
 * writing the time registers (immediately, or all at once when it clears
 * register B's SET bit after setting it). Values are BCD or binary and
 * 12- or 24-hour as register B says. UIP reads set during the last 2.2 ms
 * of each second, as on the real part, so guests that wait for the update
 * edge find it. The rest of the 128 bytes is plain CMOS RAM, preset with
 * the memory-size bytes firmware reads.
 *
 * The update-ended, alarm and periodic events set register C's flags; an
 * enabled one raises IRQ_RTC until the guest reads register C. Flags are
 * brought up to date whenever register C is read, and a timerfd on the
 * VM's event loop fires at the next event while any interrupt is enabled
 * (Linux's rtc-cmos needs the alarm interrupt for hwclock's "wait for the
 * clock tick"). Without an event loop, flags still work by polling. */
#include "vmm/hw/hw.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/evloop.h"

#include "common/util.h"
#include "vmm/bus/bus.h"
#include "vmm/layout.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

#define CMOS_SIZE 128

enum {
	REG_SEC = 0x00,
	REG_MIN = 0x02,
	REG_HOUR = 0x04,
	REG_WDAY = 0x06,
	REG_MDAY = 0x07,
	REG_MON = 0x08,
	REG_YEAR = 0x09,
	REG_A = 0x0a,
	REG_B = 0x0b,
	REG_C = 0x0c,
	REG_D = 0x0d,
	REG_CENTURY = 0x32,
};

#define A_UIP 0x80
#define A_RATE 0x0f
#define B_SET 0x80
#define B_PIE 0x40
#define B_AIE 0x20
#define B_UIE 0x10
#define C_IRQF 0x80
#define C_PF 0x40
#define C_AF 0x20
#define C_UF 0x10
#define REG_SEC_ALARM 0x01
#define REG_MIN_ALARM 0x03
#define REG_HOUR_ALARM 0x05
#define B_BINARY 0x04
#define B_24H 0x02
#define D_VRT 0x80

/* UIP rises 244 us before the update and stays up through the update
 * cycle (1984 us at the 32.768 kHz time base). */
#define UIP_NS (244000ULL + 1984000ULL)

struct rtc {
	struct vm *vm;
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[CMOS_SIZE]; /* RAM and registers A/B; time fields unused */
	int64_t offset_s;	 /* guest time - host time */
	bool frozen;		 /* SET is on: time reads/writes go to `held` */
	struct tm held;
	uint64_t ram_below_4g, ram_above_4g;
	uint8_t flags;		 /* register C: PF/AF/UF */
	int64_t last_second;	 /* guest second the flags were brought up to */
	uint64_t next_periodic;	 /* realtime ns of the next periodic tick */
	int irq_level;
	bool paused; /* the VM is paused: no interrupt, the timer disarmed */
	struct evloop *loop;
	int timer_fd; /* -1 without an event loop */
};

/* Nanoseconds into the current wall-clock second (the guest's clock has
 * the same phase: its offset is whole seconds). */
static uint64_t now_realtime_ns_in_second(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_nsec;
}

static bool is_time_reg(unsigned reg)
{
	return reg == REG_SEC || reg == REG_MIN || reg == REG_HOUR || reg == REG_WDAY ||
	       reg == REG_MDAY || reg == REG_MON || reg == REG_YEAR || reg == REG_CENTURY;
}

static uint8_t to_bcd(unsigned v)
{
	return (uint8_t)(((v / 10) % 10) << 4 | (v % 10));
}

static unsigned from_bcd(uint8_t v)
{
	return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t encode(const struct rtc *r, unsigned v)
{
	return (r->cmos[REG_B] & B_BINARY) ? (uint8_t)v : to_bcd(v);
}

static unsigned decode(const struct rtc *r, uint8_t v)
{
	return (r->cmos[REG_B] & B_BINARY) ? v : from_bcd(v);
}

/* UTC calendar arithmetic of our own (days from 1970-01-01 in the
 * proleptic Gregorian calendar, H. Hinnant's algorithms): glibc's
 * gmtime_r and timegm read /etc/localtime the first time, six system
 * calls on a restore's path, and a jailed worker has no /etc. */
static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era, yoe, doy;

	y -= m <= 2;
	era = floor_div(y, 400);
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

void rtc_utc_from_unix(int64_t t, struct tm *tm)
{
	int64_t days = floor_div(t, 86400), secs = t - days * 86400;
	int64_t z = days + 719468, era = floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	unsigned m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	int64_t y = yoe + era * 400 + (m <= 2);

	memset(tm, 0, sizeof(*tm));
	tm->tm_sec = (int)(secs % 60);
	tm->tm_min = (int)(secs / 60 % 60);
	tm->tm_hour = (int)(secs / 3600);
	tm->tm_mday = (int)(doy - (153 * mp + 2) / 5 + 1);
	tm->tm_mon = (int)m - 1;
	tm->tm_year = (int)(y - 1900);
	tm->tm_wday = (int)(days - floor_div(days + 4, 7) * 7 + 4); /* 1970-01-01: Thursday */
	tm->tm_yday = (int)(days - days_from_civil(y, 1, 1));
}

int64_t rtc_unix_from_utc(const struct tm *tm)
{
	/* fields out of range carry over, as timegm's do */
	int64_t mon = tm->tm_mon, y = (int64_t)tm->tm_year + 1900 + floor_div(mon, 12);

	mon -= floor_div(mon, 12) * 12;
	return (days_from_civil(y, (unsigned)mon + 1, 1) + tm->tm_mday - 1) * 86400 +
	       (int64_t)tm->tm_hour * 3600 + (int64_t)tm->tm_min * 60 + tm->tm_sec;
}

static void guest_now(const struct rtc *r, struct tm *tm)
{
	rtc_utc_from_unix((int64_t)time(NULL) + r->offset_s, tm);
}

static uint8_t read_time_field(const struct rtc *r, const struct tm *tm, unsigned reg)
{
	unsigned hour;
	uint8_t pm;

	switch (reg) {
	case REG_SEC:
		return encode(r, (unsigned)tm->tm_sec);
	case REG_MIN:
		return encode(r, (unsigned)tm->tm_min);
	case REG_HOUR:
		if (r->cmos[REG_B] & B_24H)
			return encode(r, (unsigned)tm->tm_hour);
		hour = (unsigned)tm->tm_hour % 12;
		pm = tm->tm_hour >= 12 ? 0x80 : 0;
		return (uint8_t)(encode(r, hour ? hour : 12) | pm);
	case REG_WDAY:
		return encode(r, (unsigned)tm->tm_wday + 1);
	case REG_MDAY:
		return encode(r, (unsigned)tm->tm_mday);
	case REG_MON:
		return encode(r, (unsigned)tm->tm_mon + 1);
	case REG_YEAR:
		return encode(r, (unsigned)(tm->tm_year + 1900) % 100);
	case REG_CENTURY:
		return encode(r, (unsigned)(tm->tm_year + 1900) / 100);
	}
	return 0;
}

/* Applies a guest write of one time field to tm. Out-of-range values are
 * stored as given; rtc_unix_from_utc carries them over later, as good as
 * any answer. */
static void write_time_field(const struct rtc *r, struct tm *tm, unsigned reg, uint8_t v)
{
	unsigned hour;

	switch (reg) {
	case REG_SEC:
		tm->tm_sec = (int)decode(r, v);
		break;
	case REG_MIN:
		tm->tm_min = (int)decode(r, v);
		break;
	case REG_HOUR:
		if (r->cmos[REG_B] & B_24H) {
			tm->tm_hour = (int)decode(r, v);
		} else {
			hour = decode(r, v & 0x7f) % 12;
			tm->tm_hour = (int)(hour + ((v & 0x80) ? 12 : 0));
		}
		break;
	case REG_WDAY:
		break; /* derived from the date */
	case REG_MDAY:
		tm->tm_mday = (int)decode(r, v);
		break;
	case REG_MON:
		tm->tm_mon = (int)decode(r, v) - 1;
		break;
	case REG_YEAR:
		tm->tm_year = (tm->tm_year + 1900) / 100 * 100 + (int)(decode(r, v) % 100) - 1900;
		break;
	case REG_CENTURY:
		tm->tm_year = (int)(decode(r, v) % 100) * 100 + (tm->tm_year + 1900) % 100 - 1900;
		break;
	}
}

static void set_guest_time(struct rtc *r, struct tm *tm)
{
	r->offset_s = rtc_unix_from_utc(tm) - (int64_t)time(NULL);
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The periodic rate from register A's rate bits (32.768 kHz time base):
 * period in ns, 0 when off. */
static uint64_t periodic_ns(const struct rtc *r)
{
	unsigned rate = r->cmos[REG_A] & A_RATE;

	if (rate == 0)
		return 0;
	if (rate <= 2)
		rate += 7; /* rates 1 and 2 alias 8 and 9 */
	return (1000000000ULL << (rate - 1)) / 32768;
}

static bool alarm_field_matches(const struct rtc *r, const struct tm *tm, unsigned alarm,
				unsigned reg)
{
	uint8_t a = r->cmos[alarm];

	return (a & 0xc0) == 0xc0 || a == read_time_field(r, tm, reg); /* 0xC0+: any */
}

/* Brings register C's flags up to now. */
static void rtc_catch_up(struct rtc *r)
{
	uint64_t now = realtime_ns(), period = periodic_ns(r);
	int64_t second = (int64_t)(now / 1000000000ULL) + r->offset_s;
	struct tm tm;

	if (!r->frozen && second != r->last_second) {
		r->flags |= C_UF;
		rtc_utc_from_unix(second, &tm);
		if (alarm_field_matches(r, &tm, REG_SEC_ALARM, REG_SEC) &&
		    alarm_field_matches(r, &tm, REG_MIN_ALARM, REG_MIN) &&
		    alarm_field_matches(r, &tm, REG_HOUR_ALARM, REG_HOUR))
			r->flags |= C_AF;
		r->last_second = second;
	}
	if (period && now >= r->next_periodic) {
		r->flags |= C_PF;
		r->next_periodic = now - now % period + period;
	}
}

static uint8_t enabled_flags(const struct rtc *r)
{
	uint8_t b = r->cmos[REG_B];

	return r->flags & (((b & B_PIE) ? C_PF : 0) | ((b & B_AIE) ? C_AF : 0) |
			   ((b & B_UIE) ? C_UF : 0));
}

static void rtc_irq_update(struct rtc *r)
{
	int level = enabled_flags(r) != 0;

	if (r->paused)
		return; /* resume brings the line up to date */
	if (level != r->irq_level) {
		r->irq_level = level;
		vm_set_irq_line(r->vm, IRQ_RTC, level);
	}
}

/* Arms the timer for the next event an enabled interrupt waits for. */
static void rtc_arm(struct rtc *r)
{
	struct itimerspec its = { 0 };
	uint8_t b = r->cmos[REG_B];
	uint64_t now, next = 0, period = periodic_ns(r);

	if (r->timer_fd < 0)
		return;
	if (r->paused) {
		timerfd_settime(r->timer_fd, 0, &its, NULL); /* all zero: disarmed */
		return;
	}
	now = realtime_ns();
	if (b & (B_UIE | B_AIE))
		next = now - now % 1000000000ULL + 1000000000ULL;
	if ((b & B_PIE) && period) {
		uint64_t tick = r->next_periodic > now ? r->next_periodic
						       : now - now % period + period;
		if (!next || tick < next)
			next = tick;
	}
	its.it_value.tv_sec = (time_t)(next / 1000000000ULL);
	its.it_value.tv_nsec = (long)(next % 1000000000ULL);
	timerfd_settime(r->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void rtc_timer_fired(void *opaque, uint32_t events)
{
	struct rtc *r = opaque;
	uint64_t expirations;

	if (read(r->timer_fd, &expirations, sizeof(expirations)) < 0)
		return; /* spurious wakeup (EAGAIN) */
	pthread_mutex_lock(&r->lock);
	rtc_catch_up(r);
	rtc_irq_update(r);
	rtc_arm(r);
	pthread_mutex_unlock(&r->lock);
}

static uint8_t rtc_read_reg(struct rtc *r, unsigned reg)
{
	struct tm tm;
	uint8_t v;

	if (is_time_reg(reg)) {
		if (r->frozen)
			return read_time_field(r, &r->held, reg);
		guest_now(r, &tm);
		return read_time_field(r, &tm, reg);
	}
	switch (reg) {
	case REG_A:
		if (!r->frozen && now_realtime_ns_in_second() >= 1000000000ULL - UIP_NS)
			return r->cmos[REG_A] | A_UIP;
		return r->cmos[REG_A] & (uint8_t)~A_UIP;
	case REG_C:
		/* Reading C acknowledges: the flags clear, the IRQ drops. */
		rtc_catch_up(r);
		v = r->flags | (enabled_flags(r) ? C_IRQF : 0);
		r->flags = 0;
		rtc_irq_update(r);
		return v;
	case REG_D:
		return D_VRT;
	}
	return r->cmos[reg];
}

static void rtc_write_reg(struct rtc *r, unsigned reg, uint8_t v)
{
	struct tm tm;

	if (is_time_reg(reg)) {
		if (r->frozen) {
			write_time_field(r, &r->held, reg, v);
		} else {
			guest_now(r, &tm);
			write_time_field(r, &tm, reg, v);
			set_guest_time(r, &tm);
		}
		return;
	}
	switch (reg) {
	case REG_A:
		r->cmos[REG_A] = v & 0x7f; /* UIP is read-only */
		rtc_arm(r);
		break;
	case REG_B:
		if ((v & B_SET) && !r->frozen) {
			guest_now(r, &r->held);
			r->frozen = true;
		} else if (!(v & B_SET) && r->frozen) {
			r->frozen = false;
			set_guest_time(r, &r->held);
		}
		rtc_catch_up(r); /* events before the change count under the old mode */
		r->cmos[REG_B] = v;
		rtc_irq_update(r);
		rtc_arm(r);
		break;
	case REG_C:
	case REG_D:
		break; /* read-only */
	default:
		r->cmos[reg] = v;
		break;
	}
}

static void rtc_io_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct rtc *r = opaque;
	uint8_t *out = data;

	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < len; i++) {
		/* The index port is write-only and floats high. */
		out[i] = (off + i == 1) ? rtc_read_reg(r, r->index) : 0xff;
	}
	pthread_mutex_unlock(&r->lock);
}

static void rtc_io_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct rtc *r = opaque;
	const uint8_t *in = data;

	pthread_mutex_lock(&r->lock);
	for (unsigned i = 0; i < len; i++) {
		if (off + i == 0)
			r->index = in[i] & 0x7f; /* bit 7 masks NMI: nothing to mask */
		else
			rtc_write_reg(r, r->index, in[i]);
	}
	pthread_mutex_unlock(&r->lock);
}

static const struct io_ops rtc_ops = {
	.read = rtc_io_read,
	.write = rtc_io_write,
};

static void put_cmos16(uint8_t *cmos, unsigned reg, uint64_t v)
{
	if (v > 0xffff)
		v = 0xffff;
	cmos[reg] = (uint8_t)v;
	cmos[reg + 1] = (uint8_t)(v >> 8);
}

/* The memory-size bytes BIOSes (SeaBIOS among them) read, in QEMU's
 * layout, and the standard checksum over 0x10-0x2d. */
static void rtc_fill_cmos(struct rtc *r)
{
	uint8_t *c = r->cmos;
	uint64_t above_1m = r->ram_below_4g > MiB ? r->ram_below_4g - MiB : 0;
	uint64_t above_16m = r->ram_below_4g > 16 * MiB ? r->ram_below_4g - 16 * MiB : 0;
	uint64_t high = r->ram_above_4g / (64 * KiB);
	unsigned ncpus = vm_vcpu_count(r->vm);
	unsigned sum = 0;

	memset(c, 0, CMOS_SIZE);
	c[REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate */
	c[REG_B] = B_24H;
	put_cmos16(c, 0x15, 640);		  /* base memory, KiB */
	put_cmos16(c, 0x17, above_1m / KiB);	  /* extended memory, KiB */
	put_cmos16(c, 0x30, above_1m / KiB);	  /* (again, POST's copy) */
	put_cmos16(c, 0x34, above_16m / (64 * KiB)); /* above 16 MiB, 64 KiB units */
	c[0x5b] = (uint8_t)high;		  /* above 4 GiB, 64 KiB units */
	c[0x5c] = (uint8_t)(high >> 8);
	c[0x5d] = (uint8_t)(high >> 16);
	c[0x5f] = (uint8_t)(ncpus ? ncpus - 1 : 0); /* SeaBIOS: CPUs - 1 */
	for (unsigned i = 0x10; i <= 0x2d; i++)
		sum += c[i];
	c[0x2e] = (uint8_t)(sum >> 8);
	c[0x2f] = (uint8_t)sum;
}

static void rtc_power_on(struct rtc *r)
{
	r->index = 0;
	r->frozen = false;
	rtc_fill_cmos(r);
	r->flags = 0;
	r->last_second = (int64_t)(realtime_ns() / 1000000000ULL) + r->offset_s;
	r->next_periodic = 0;
	rtc_irq_update(r);
	rtc_arm(r);
	/* The guest's clock setting survives a reset, as a battery would
	 * keep it. */
}

int rtc_create(struct vm *vm, uint64_t ram_below_4g, uint64_t ram_above_4g, struct rtc **out)
{
	struct rtc *r = calloc(1, sizeof(*r));
	int err;

	if (!r)
		return -ENOMEM;
	err = -pthread_mutex_init(&r->lock, NULL);
	if (err)
		goto err_free;
	r->vm = vm;
	r->ram_below_4g = ram_below_4g;
	r->ram_above_4g = ram_above_4g;
	r->timer_fd = -1;
	r->loop = vm_evloop(vm);
	if (r->loop) {
		r->timer_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
		if (r->timer_fd < 0) {
			err = -errno;
			goto err_lock;
		}
		err = evloop_add_fd(r->loop, r->timer_fd, EPOLLIN, rtc_timer_fired, r);
		if (err)
			goto err_timer;
	}
	rtc_power_on(r);
	err = io_bus_register(vm_pio_bus(vm), PORT_RTC, 2, &rtc_ops, r, "rtc");
	if (err)
		goto err_loop;
	*out = r;
	return 0;

err_loop:
	if (r->loop)
		evloop_del_fd(r->loop, r->timer_fd);
err_timer:
	if (r->timer_fd >= 0)
		close(r->timer_fd);
err_lock:
	pthread_mutex_destroy(&r->lock);
err_free:
	free(r);
	return err;
}

void rtc_reset(struct rtc *r)
{
	pthread_mutex_lock(&r->lock);
	rtc_power_on(r);
	pthread_mutex_unlock(&r->lock);
}

void rtc_pause(struct rtc *r)
{
	pthread_mutex_lock(&r->lock);
	r->paused = true;
	rtc_arm(r);
	pthread_mutex_unlock(&r->lock);
}

/* What the clock did meanwhile shows as flags (update-ended, alarm), as
 * on a machine that was suspended; the periodic tick starts again. */
void rtc_resume(struct rtc *r)
{
	pthread_mutex_lock(&r->lock);
	r->paused = false;
	r->next_periodic = 0;
	rtc_catch_up(r);
	rtc_irq_update(r);
	rtc_arm(r);
	pthread_mutex_unlock(&r->lock);
}

#define RTC_STATE_VERSION 1

/* The guest's clock is host time plus offset_s, so a restored RTC shows
 * the time of the restore, as a battery-backed clock would after the
 * machine was off; the periodic timer is re-armed from now. */
static const struct state_field rtc_fields[] = {
	STATE_FIELD(struct rtc, index, 1),
	STATE_FIELD_BYTES(struct rtc, cmos, 1),
	STATE_FIELD(struct rtc, offset_s, 1),
	STATE_FIELD(struct rtc, frozen, 1),
	STATE_FIELD(struct rtc, held.tm_sec, 1),
	STATE_FIELD(struct rtc, held.tm_min, 1),
	STATE_FIELD(struct rtc, held.tm_hour, 1),
	STATE_FIELD(struct rtc, held.tm_mday, 1),
	STATE_FIELD(struct rtc, held.tm_mon, 1),
	STATE_FIELD(struct rtc, held.tm_year, 1),
	STATE_FIELD(struct rtc, held.tm_wday, 1),
	STATE_FIELD(struct rtc, flags, 1),
	STATE_FIELD(struct rtc, last_second, 1),
	STATE_FIELD_END,
};

static bool rtc_state_ok(const void *p)
{
	const struct rtc *in = p;
	const struct tm *t = &in->held;

	/* 10,000 years either way covers any clock a guest can set */
	return in->index < CMOS_SIZE && state_bool_ok(&in->frozen) &&
	       !(in->flags & ~0x70u) &&
	       in->offset_s > -315569520000LL && in->offset_s < 315569520000LL &&
	       t->tm_sec >= 0 && t->tm_sec <= 60 && t->tm_min >= 0 && t->tm_min < 60 &&
	       t->tm_hour >= 0 && t->tm_hour < 24 && t->tm_mday >= 0 && t->tm_mday <= 31 &&
	       t->tm_mon >= 0 && t->tm_mon < 12 && t->tm_wday >= 0 && t->tm_wday < 7 &&
	       t->tm_year > -10000 && t->tm_year < 10000;
}

void rtc_save(struct rtc *r, struct state_writer *w, uint32_t instance)
{
	pthread_mutex_lock(&r->lock);
	state_save_fields(w, STATE_SECTION_RTC, instance, RTC_STATE_VERSION, rtc_fields, r);
	pthread_mutex_unlock(&r->lock);
}

int rtc_restore(struct rtc *r, struct state_reader *rd)
{
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = state_restore_fields(rd, RTC_STATE_VERSION, rtc_fields, r, sizeof(*r),
				   rtc_state_ok);
	if (!ret) {
		r->next_periodic = 0;
		r->irq_level = -1; /* drive the line again (see serial_restore) */
		rtc_catch_up(r);
		rtc_irq_update(r);
		rtc_arm(r);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void rtc_destroy(struct rtc *r)
{
	if (!r)
		return;
	io_bus_unregister(vm_pio_bus(r->vm), PORT_RTC);
	if (r->timer_fd >= 0) {
		evloop_del_fd(r->loop, r->timer_fd);
		close(r->timer_fd);
	}
	pthread_mutex_destroy(&r->lock);
	free(r);
}
