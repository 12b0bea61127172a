/* ACPI PCI hotplug registers and slot bookkeeping (see hotplug.h).
 *
 * The guest's EJECT write arrives on a vCPU thread, but a device may only
 * be torn down on the event loop's thread with the vCPUs parked (bus.c:
 * an access that already looked a region up may still call it). So the
 * write only marks the slot and pokes an eventfd; the loop calls the
 * owner's eject. Timeouts of release requests run off one timerfd, armed
 * for the earliest deadline. */
#include "vmm/bus/hotplug.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/bus/bus.h"
#include "vmm/bus/pci.h"
#include "vmm/state/record.h"
#include "vmm/vm.h"

struct hotplug_wait {
	hotplug_done_fn done; /* NULL: nobody waits */
	void *opaque;
	uint64_t deadline_ns;
};

struct hotplug {
	struct vm *vm;
	struct hotplug_owner owner;
	struct evloop *loop;
	int eject_fd, timer_fd;
	pthread_mutex_t lock; /* everything below */
	uint32_t capable;
	uint32_t present;  /* slots holding a hot-added device */
	uint32_t up, down; /* the registers */
	uint32_t ejecting; /* EJECT written, owner's eject not run yet */
	uint32_t sel;
	struct hotplug_wait waits[PCI_MAX_DEVICES];
};

static void raise_gpe(struct hotplug *hp)
{
	if (hp->owner.raise_gpe)
		hp->owner.raise_gpe(hp->owner.owner);
}

static void poke(struct hotplug *hp)
{
	uint64_t one = 1;

	if (write(hp->eject_fd, &one, sizeof(one)) < 0)
		log_debug("hotplug: cannot signal an eject: %s", strerror(errno));
}

/* ---- guest registers ---- */

static uint32_t reg_read(struct hotplug *hp, unsigned reg, uint32_t mask)
{
	uint32_t v = 0;
	bool bus0 = hp->sel == 0;

	switch (reg) {
	case HOTPLUG_REG_UP:
		v = bus0 ? hp->up : 0;
		if (bus0)
			hp->up &= ~mask; /* what was read has been seen */
		break;
	case HOTPLUG_REG_DOWN:
		v = bus0 ? hp->down : 0;
		break;
	case HOTPLUG_REG_SLOTS:
		v = bus0 ? hp->capable : 0;
		break;
	case HOTPLUG_REG_SEL:
		v = hp->sel;
		break;
	}
	return v;
}

/* The guest released the slots in bits (lock held): only hot-added
 * devices leave; a write for any other slot is ignored. */
static bool eject_write(struct hotplug *hp, uint32_t bits)
{
	uint32_t take = bits & hp->present & ~hp->ejecting;

	if (hp->sel != 0)
		return false;
	if (bits & ~take)
		log_debug("hotplug: eject of slots %#x ignored (no hot-added device)",
			  bits & ~take & ~hp->ejecting);
	hp->ejecting |= take;
	return take != 0;
}

/* Accesses are split into the 32-bit registers they touch, a byte lane
 * mask per register, so that any width and alignment works. */
void hotplug_io_read(void *opaque, uint64_t off, void *data, unsigned len)
{
	struct hotplug *hp = opaque;
	uint8_t *out = data;

	pthread_mutex_lock(&hp->lock);
	for (unsigned i = 0; i < len;) {
		uint64_t at = off + i;
		unsigned reg = (unsigned)(at & ~3ULL), lane = (unsigned)(at & 3);
		unsigned n = MIN(len - i, 4 - lane);
		uint32_t mask = (n == 4 ? 0xffffffffu : ((1u << (8 * n)) - 1)) << (8 * lane);
		uint32_t v = at < HOTPLUG_PORT_LEN ? reg_read(hp, reg, mask) : 0xffffffffu;

		for (unsigned j = 0; j < n; j++)
			out[i + j] = (uint8_t)(v >> (8 * (lane + j)));
		i += n;
	}
	pthread_mutex_unlock(&hp->lock);
}

void hotplug_io_write(void *opaque, uint64_t off, const void *data, unsigned len)
{
	struct hotplug *hp = opaque;
	const uint8_t *in = data;
	bool ejected = false;

	pthread_mutex_lock(&hp->lock);
	for (unsigned i = 0; i < len;) {
		uint64_t at = off + i;
		unsigned reg = (unsigned)(at & ~3ULL), lane = (unsigned)(at & 3);
		unsigned n = MIN(len - i, 4 - lane);
		uint32_t v = 0, mask = 0;

		for (unsigned j = 0; j < n; j++) {
			v |= (uint32_t)in[i + j] << (8 * (lane + j));
			mask |= 0xffu << (8 * (lane + j));
		}
		if (reg == HOTPLUG_REG_EJECT)
			ejected |= eject_write(hp, v);
		else if (reg == HOTPLUG_REG_SEL)
			hp->sel = (hp->sel & ~mask) | v;
		/* UP, DOWN and SLOTS are read-only; past the block, nothing */
		i += n;
	}
	pthread_mutex_unlock(&hp->lock);
	if (ejected)
		poke(hp);
}

static const struct io_ops hotplug_ops = { .read = hotplug_io_read, .write = hotplug_io_write };

/* ---- the event loop side ---- */

/* lock held */
static void arm_timer(struct hotplug *hp)
{
	struct itimerspec its = { { 0, 0 }, { 0, 0 } };
	uint64_t first = 0, now = now_ns();

	for (unsigned s = 0; s < PCI_MAX_DEVICES; s++)
		if (hp->waits[s].done && (!first || hp->waits[s].deadline_ns < first))
			first = hp->waits[s].deadline_ns;
	if (first) {
		uint64_t in = first > now ? first - now : 1;

		its.it_value.tv_sec = (time_t)(in / 1000000000ULL);
		its.it_value.tv_nsec = (long)(in % 1000000000ULL);
	}
	timerfd_settime(hp->timer_fd, 0, &its, NULL);
}

/* Ends slot's wait (lock not held): done runs without the lock. */
static void finish(struct hotplug *hp, unsigned slot, enum hotplug_outcome outcome)
{
	struct hotplug_wait w;

	pthread_mutex_lock(&hp->lock);
	w = hp->waits[slot];
	hp->waits[slot].done = NULL;
	arm_timer(hp);
	pthread_mutex_unlock(&hp->lock);
	if (w.done)
		w.done(w.opaque, slot, outcome);
}

static void on_eject(void *opaque, uint32_t events)
{
	struct hotplug *hp = opaque;
	uint64_t count;
	uint32_t todo;

	(void)events;
	if (read(hp->eject_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_debug("hotplug: eventfd read: %s", strerror(errno));
	pthread_mutex_lock(&hp->lock);
	todo = hp->ejecting;
	pthread_mutex_unlock(&hp->lock);
	for (unsigned s = 0; s < PCI_MAX_DEVICES; s++) {
		if (!(todo & (1u << s)))
			continue;
		hp->owner.eject(hp->owner.owner, s);
		pthread_mutex_lock(&hp->lock);
		hp->present &= ~(1u << s);
		hp->ejecting &= ~(1u << s);
		hp->down &= ~(1u << s);
		hp->up &= ~(1u << s);
		pthread_mutex_unlock(&hp->lock);
		finish(hp, s, HOTPLUG_EJECTED);
	}
}

static void on_timer(void *opaque, uint32_t events)
{
	struct hotplug *hp = opaque;
	uint64_t count, now = now_ns();

	(void)events;
	if (read(hp->timer_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_debug("hotplug: timerfd read: %s", strerror(errno));
	for (unsigned s = 0; s < PCI_MAX_DEVICES; s++) {
		bool due;

		pthread_mutex_lock(&hp->lock);
		due = hp->waits[s].done && hp->waits[s].deadline_ns <= now;
		pthread_mutex_unlock(&hp->lock);
		if (due)
			finish(hp, s, HOTPLUG_PENDING);
	}
	pthread_mutex_lock(&hp->lock);
	arm_timer(hp);
	pthread_mutex_unlock(&hp->lock);
}

/* ---- set-up and the owner's calls ---- */

int hotplug_create(struct vm *vm, uint32_t capable, const struct hotplug_owner *owner,
		   struct hotplug **out)
{
	struct hotplug *hp = calloc(1, sizeof(*hp));
	int err;

	if (!hp)
		return -ENOMEM;
	hp->vm = vm;
	hp->owner = *owner;
	hp->loop = vm_evloop(vm);
	hp->capable = capable & ~1u; /* slot 0 is the host bridge */
	pthread_mutex_init(&hp->lock, NULL);
	hp->eject_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	hp->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (hp->eject_fd < 0 || hp->timer_fd < 0) {
		err = -errno;
		goto err_fds;
	}
	err = evloop_add_fd(hp->loop, hp->eject_fd, EPOLLIN, on_eject, hp);
	if (err)
		goto err_fds;
	err = evloop_add_fd(hp->loop, hp->timer_fd, EPOLLIN, on_timer, hp);
	if (err)
		goto err_eject;
	err = io_bus_register(vm_pio_bus(vm), HOTPLUG_PORT, HOTPLUG_PORT_LEN, &hotplug_ops, hp,
			      "acpi-pcihp");
	if (err)
		goto err_timer;
	*out = hp;
	return 0;

err_timer:
	evloop_del_fd(hp->loop, hp->timer_fd);
err_eject:
	evloop_del_fd(hp->loop, hp->eject_fd);
err_fds:
	if (hp->eject_fd >= 0)
		close(hp->eject_fd);
	if (hp->timer_fd >= 0)
		close(hp->timer_fd);
	pthread_mutex_destroy(&hp->lock);
	free(hp);
	return err;
}

void hotplug_destroy(struct hotplug *hp)
{
	if (!hp)
		return;
	io_bus_unregister(vm_pio_bus(hp->vm), HOTPLUG_PORT);
	evloop_del_fd(hp->loop, hp->timer_fd);
	evloop_del_fd(hp->loop, hp->eject_fd);
	close(hp->timer_fd);
	close(hp->eject_fd);
	pthread_mutex_destroy(&hp->lock);
	free(hp);
}

uint32_t hotplug_capable_slots(const struct hotplug *hp)
{
	return hp->capable;
}

uint32_t hotplug_present_slots(struct hotplug *hp)
{
	uint32_t v;

	pthread_mutex_lock(&hp->lock);
	v = hp->present;
	pthread_mutex_unlock(&hp->lock);
	return v;
}

uint32_t hotplug_releasing_slots(struct hotplug *hp)
{
	uint32_t v;

	pthread_mutex_lock(&hp->lock);
	v = hp->down | hp->ejecting;
	pthread_mutex_unlock(&hp->lock);
	return v;
}

int hotplug_announce(struct hotplug *hp, unsigned slot)
{
	uint32_t bit = slot < PCI_MAX_DEVICES ? 1u << slot : 0;

	pthread_mutex_lock(&hp->lock);
	if (!(hp->capable & bit) || (hp->present & bit)) {
		pthread_mutex_unlock(&hp->lock);
		return -EINVAL;
	}
	hp->present |= bit;
	hp->up |= bit;
	pthread_mutex_unlock(&hp->lock);
	raise_gpe(hp);
	return 0;
}

int hotplug_request_eject(struct hotplug *hp, unsigned slot, unsigned timeout_ms,
			  hotplug_done_fn done, void *opaque)
{
	uint32_t bit = slot < PCI_MAX_DEVICES ? 1u << slot : 0;

	pthread_mutex_lock(&hp->lock);
	if (!(hp->present & bit)) {
		pthread_mutex_unlock(&hp->lock);
		return -ENOENT;
	}
	if (hp->waits[slot].done) {
		pthread_mutex_unlock(&hp->lock);
		return -EBUSY;
	}
	hp->down |= bit;
	hp->waits[slot] = (struct hotplug_wait){ done, opaque,
						 now_ns() + (uint64_t)timeout_ms * 1000000ULL };
	arm_timer(hp);
	pthread_mutex_unlock(&hp->lock);
	raise_gpe(hp); /* again, also for a repeated request: the guest may
			  have missed the first */
	return 0;
}

void hotplug_reset(struct hotplug *hp)
{
	bool eject;

	pthread_mutex_lock(&hp->lock);
	hp->up = 0;
	hp->sel = 0;
	hp->ejecting |= hp->down & hp->present;
	eject = hp->ejecting != 0;
	pthread_mutex_unlock(&hp->lock);
	if (eject)
		poke(hp);
}

/* ---- saved state ---- */

#define HOTPLUG_STATE_VERSION 1

struct hotplug_regs {
	uint32_t capable, present, up, down, sel;
};

static const struct state_field hotplug_fields[] = {
	STATE_FIELD(struct hotplug_regs, capable, 1),
	STATE_FIELD(struct hotplug_regs, present, 1),
	STATE_FIELD(struct hotplug_regs, up, 1),
	STATE_FIELD(struct hotplug_regs, down, 1),
	STATE_FIELD(struct hotplug_regs, sel, 1),
	STATE_FIELD_END,
};

void hotplug_save(struct hotplug *hp, struct state_writer *w)
{
	struct hotplug_regs r;

	pthread_mutex_lock(&hp->lock);
	/* an eject the loop has not acted on yet is saved as the request it
	 * answered: the restored guest is asked again */
	r = (struct hotplug_regs){ hp->capable, hp->present, hp->up, hp->down | hp->ejecting,
				   hp->sel };
	pthread_mutex_unlock(&hp->lock);
	state_save_fields(w, STATE_SECTION_HOTPLUG, 0, HOTPLUG_STATE_VERSION, hotplug_fields, &r);
}

int hotplug_restore(struct hotplug *hp, struct state_reader *r)
{
	struct hotplug_regs in;
	int ret;

	if (r->version < 1 || r->version > HOTPLUG_STATE_VERSION)
		return -EINVAL;
	ret = state_get_fields(r, hotplug_fields, &in);
	if (ret)
		return ret;
	pthread_mutex_lock(&hp->lock);
	if (in.capable != hp->capable || in.present != hp->present ||
	    ((in.up | in.down) & ~in.present)) {
		pthread_mutex_unlock(&hp->lock);
		return -EINVAL;
	}
	hp->up = in.up;
	hp->down = in.down;
	hp->sel = in.sel;
	pthread_mutex_unlock(&hp->lock);
	return 0;
}
