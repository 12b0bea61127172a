/* bus/hotplug.c: the ACPI PCI hotplug registers as the guest's AML sees
 * them, the eject handshake (the owner tears down on the event loop only
 * after the guest wrote EJECT), the timeout that leaves a device the guest
 * keeps in place, reset, and saved state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/evloop.h"
#include "platform_vm_double.h"
#include "vmm/bus/hotplug.h"
#include "vmm/state/record.h"

#define UP (HOTPLUG_PORT + HOTPLUG_REG_UP)
#define DOWN (HOTPLUG_PORT + HOTPLUG_REG_DOWN)
#define EJECT (HOTPLUG_PORT + HOTPLUG_REG_EJECT)
#define SLOTS (HOTPLUG_PORT + HOTPLUG_REG_SLOTS)
#define SEL (HOTPLUG_PORT + HOTPLUG_REG_SEL)
#define CAPABLE 0xfffffff0u /* slots 4..31 */

struct fixture {
	struct vm *vm;
	struct evloop *loop;
	pthread_t thread;
	struct hotplug *hp;
	pthread_mutex_t lock;
	unsigned gpes;
	uint32_t ejected;	   /* the owner's eject ran for these slots */
	pthread_t eject_thread;	   /* where it ran */
	unsigned done_calls;
	enum hotplug_outcome last;
	unsigned last_slot;
};

static void owner_eject(void *owner, unsigned slot)
{
	struct fixture *f = owner;

	pthread_mutex_lock(&f->lock);
	f->ejected |= 1u << slot;
	f->eject_thread = pthread_self();
	pthread_mutex_unlock(&f->lock);
}

static void owner_gpe(void *owner)
{
	struct fixture *f = owner;

	pthread_mutex_lock(&f->lock);
	f->gpes++;
	pthread_mutex_unlock(&f->lock);
}

static void done(void *opaque, unsigned slot, enum hotplug_outcome outcome)
{
	struct fixture *f = opaque;

	pthread_mutex_lock(&f->lock);
	f->done_calls++;
	f->last = outcome;
	f->last_slot = slot;
	pthread_mutex_unlock(&f->lock);
}

static void *loop_main(void *arg)
{
	evloop_run(arg);
	return NULL;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct hotplug_owner owner = { owner_eject, owner_gpe, f };

	pthread_mutex_init(&f->lock, NULL);
	f->vm = vmd_create();
	assert_int_equal(evloop_create(&f->loop), 0);
	f->vm->loop = f->loop;
	assert_int_equal(pthread_create(&f->thread, NULL, loop_main, f->loop), 0);
	assert_int_equal(hotplug_create(f->vm, CAPABLE | 1u, &owner, &f->hp), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	hotplug_destroy(f->hp);
	evloop_stop(f->loop);
	pthread_join(f->thread, NULL);
	evloop_destroy(f->loop);
	vmd_destroy(f->vm);
	pthread_mutex_destroy(&f->lock);
	free(f);
	return 0;
}

/* Waits up to ms for cond(f) */
static bool wait_for(struct fixture *f, bool (*cond)(struct fixture *f), unsigned ms)
{
	for (unsigned i = 0; i < ms; i++) {
		bool ok;

		pthread_mutex_lock(&f->lock);
		ok = cond(f);
		pthread_mutex_unlock(&f->lock);
		if (ok)
			return true;
		usleep(1000);
	}
	return false;
}

static bool one_done(struct fixture *f)
{
	return f->done_calls >= 1;
}

static bool slot5_ejected(struct fixture *f)
{
	return f->ejected & (1u << 5);
}

static void test_registers(void **state)
{
	struct fixture *f = *state;

	/* slot 0 (the host bridge) is never hot-pluggable */
	assert_int_equal(hotplug_capable_slots(f->hp), CAPABLE);
	assert_int_equal(vmd_inl(f->vm, SLOTS), CAPABLE);
	assert_int_equal(vmd_inl(f->vm, UP), 0);
	assert_int_equal(vmd_inl(f->vm, DOWN), 0);

	assert_int_equal(hotplug_announce(f->hp, 5), 0);
	assert_int_equal(f->gpes, 1);
	assert_int_equal(hotplug_present_slots(f->hp), 1u << 5);
	/* read clears: the second read sees nothing new */
	assert_int_equal(vmd_inl(f->vm, UP), 1u << 5);
	assert_int_equal(vmd_inl(f->vm, UP), 0);

	/* a byte read clears only its lane */
	assert_int_equal(hotplug_announce(f->hp, 6), 0);
	assert_int_equal(hotplug_announce(f->hp, 9), 0);
	assert_int_equal(vmd_inb(f->vm, UP + 1), 1u << 1);
	assert_int_equal(vmd_inl(f->vm, UP), 1u << 6);

	/* slots that cannot take a device, or already hold one */
	assert_int_equal(hotplug_announce(f->hp, 2), -EINVAL);
	assert_int_equal(hotplug_announce(f->hp, 0), -EINVAL);
	assert_int_equal(hotplug_announce(f->hp, 5), -EINVAL);
	assert_int_equal(hotplug_announce(f->hp, 32), -EINVAL);
	assert_int_equal(hotplug_announce(f->hp, 1000), -EINVAL);

	/* UP, DOWN and SLOTS ignore writes; past the block reads float */
	vmd_outl(f->vm, SLOTS, 0);
	vmd_outl(f->vm, DOWN, 0xffffffffu);
	assert_int_equal(vmd_inl(f->vm, SLOTS), CAPABLE);
	assert_int_equal(vmd_inl(f->vm, DOWN), 0);

	/* another bus: nothing there, and EJECT does nothing */
	vmd_outl(f->vm, SEL, 1);
	assert_int_equal(vmd_inl(f->vm, SEL), 1);
	assert_int_equal(vmd_inl(f->vm, SLOTS), 0);
	vmd_outl(f->vm, EJECT, 1u << 5);
	usleep(20000);
	assert_int_equal(f->ejected, 0);
	vmd_outl(f->vm, SEL, 0);
}

static void test_eject_handshake(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(hotplug_request_eject(f->hp, 5, 10000, done, f), -ENOENT);
	assert_int_equal(hotplug_announce(f->hp, 5), 0);
	assert_int_equal(hotplug_request_eject(f->hp, 5, 10000, done, f), 0);
	assert_int_equal(f->gpes, 2);
	assert_int_equal(vmd_inl(f->vm, DOWN), 1u << 5);
	assert_int_equal(hotplug_releasing_slots(f->hp), 1u << 5);
	/* one waiter per slot */
	assert_int_equal(hotplug_request_eject(f->hp, 5, 10000, done, f), -EBUSY);

	/* an eject of a slot with no hot-added device is ignored */
	vmd_outl(f->vm, EJECT, 1u << 7);
	usleep(20000);
	assert_int_equal(f->ejected, 0);
	assert_int_equal(f->done_calls, 0);

	/* _EJ0: the owner tears down on the loop thread, then done */
	vmd_outl(f->vm, EJECT, 1u << 5);
	assert_true(wait_for(f, one_done, 2000));
	assert_int_equal(f->ejected, 1u << 5);
	assert_true(pthread_equal(f->eject_thread, f->thread));
	assert_int_equal(f->last, HOTPLUG_EJECTED);
	assert_int_equal(f->last_slot, 5);
	assert_int_equal(vmd_inl(f->vm, DOWN), 0);
	assert_int_equal(hotplug_present_slots(f->hp), 0);
	/* the slot takes a device again */
	assert_int_equal(hotplug_announce(f->hp, 5), 0);
}

static void test_guest_keeps_device(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(hotplug_announce(f->hp, 5), 0);
	assert_int_equal(hotplug_request_eject(f->hp, 5, 50, done, f), 0);
	assert_true(wait_for(f, one_done, 2000));
	assert_int_equal(f->last, HOTPLUG_PENDING);
	/* nothing torn down; the request is still up for the guest */
	assert_int_equal(f->ejected, 0);
	assert_int_equal(hotplug_present_slots(f->hp), 1u << 5);
	assert_int_equal(vmd_inl(f->vm, DOWN), 1u << 5);
	/* a late eject still removes it, without a second done */
	vmd_outw(f->vm, EJECT, 1u << 5);
	assert_true(wait_for(f, slot5_ejected, 2000));
	usleep(20000);
	assert_int_equal(f->done_calls, 1);
	assert_int_equal(vmd_inl(f->vm, DOWN), 0);
}

static void test_reset_takes_the_release_as_given(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(hotplug_announce(f->hp, 5), 0);
	assert_int_equal(hotplug_announce(f->hp, 6), 0);
	vmd_outl(f->vm, SEL, 3);
	assert_int_equal(hotplug_request_eject(f->hp, 5, 10000, done, f), 0);
	hotplug_reset(f->hp);
	assert_true(wait_for(f, one_done, 2000));
	assert_int_equal(f->ejected, 1u << 5); /* slot 6 was not asked for */
	assert_int_equal(hotplug_present_slots(f->hp), 1u << 6);
	assert_int_equal(vmd_inl(f->vm, SEL), 0);
	assert_int_equal(vmd_inl(f->vm, UP), 0);
}

static void test_saved_state(void **state)
{
	struct fixture *f = *state, *g;
	struct state_writer w;
	struct state_file file;
	struct state_reader r;
	const void *data;
	size_t len;
	char err[128];

	assert_int_equal(hotplug_announce(f->hp, 5), 0);
	assert_int_equal(hotplug_announce(f->hp, 8), 0);
	assert_int_equal(vmd_inl(f->vm, UP), (1u << 5) | (1u << 8));
	assert_int_equal(hotplug_announce(f->hp, 9), 0);
	assert_int_equal(hotplug_request_eject(f->hp, 8, 10000, done, f), 0);

	state_writer_init(&w, 1);
	hotplug_save(f->hp, &w);
	assert_int_equal(state_writer_finish(&w, &data, &len), 0);
	assert_int_equal(state_file_parse(&file, data, len, 1, err, sizeof(err)), 0);

	/* a VM without those devices refuses the record */
	setup((void **)&g);
	assert_int_equal(state_file_find(&file, STATE_SECTION_HOTPLUG, 0, &r), 0);
	assert_int_equal(hotplug_restore(g->hp, &r), -EINVAL);
	assert_int_equal(vmd_inl(g->vm, DOWN), 0);

	/* with them it takes UP and DOWN as saved */
	assert_int_equal(hotplug_announce(g->hp, 5), 0);
	assert_int_equal(hotplug_announce(g->hp, 8), 0);
	assert_int_equal(hotplug_announce(g->hp, 9), 0);
	assert_int_equal(state_file_find(&file, STATE_SECTION_HOTPLUG, 0, &r), 0);
	assert_int_equal(hotplug_restore(g->hp, &r), 0);
	assert_int_equal(vmd_inl(g->vm, UP), 1u << 9);
	assert_int_equal(vmd_inl(g->vm, DOWN), 1u << 8);
	teardown((void **)&g);
	state_writer_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_registers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eject_handshake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guest_keeps_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_takes_the_release_as_given, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_saved_state, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
