/* The inventory on disk: the layout of DESIGN.md §5, reloading, skipping
 * broken files, restoring crashed state, and remove keeping disks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "daemon/daemon.h"

static struct daemon *new_daemon(const char *dir)
{
	struct daemon *d = calloc(1, sizeof(*d));

	snprintf(d->state_dir, sizeof(d->state_dir), "%s", dir);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	return d;
}

static void free_daemon(struct daemon *d)
{
	inventory_free_all(d);
	events_free_all(d);
	free(d);
}

static struct vm *create(struct daemon *d, const char *name)
{
	struct vm_config c = { 0 };
	char err[256], body[256];
	struct vm *vm;
	bool hw;

	snprintf(body, sizeof(body), "{\"name\":\"%s\",\"kernel\":\"/k\",\"notes\":\"n-%s\"}", name, name);
	json_t *j = json_loads(body, 0, NULL);
	assert_int_equal(vm_config_apply_json(&c, j, true, &hw, err, sizeof(err)), 0);
	json_decref(j);
	assert_int_equal(inventory_create(d, &c, &vm, err, sizeof(err)), 0);
	return vm;
}

/* Whether dir + "/" + rel (+ suffix) exists. */
static bool exists3(const char *dir, const char *rel, const char *suffix)
{
	char p[4400];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s%s", dir, rel, suffix);
	return stat(p, &st) == 0;
}

static void test_layout_reload_remove(void **state)
{
	char dir[] = "/tmp/cloison-inv-XXXXXX", id[GUID_STR_LEN], path[4400];
	char err[256];

	assert_non_null(mkdtemp(dir));
	struct daemon *d = new_daemon(dir);
	struct vm *vm = create(d, "alpha");
	guid_to_string(&vm->cfg.id, id);
	char idjson[64];
	snprintf(idjson, sizeof(idjson), "%s.json", id);
	assert_true(exists3(dir, "alpha/Virtual Machines/", idjson));
	assert_true(exists3(dir, "alpha/Virtual Hard Disks", ""));
	inventory_put(d, vm);
	vm = create(d, "beta");
	inventory_put(d, vm);
	struct vm_config dup = { 0 };
	snprintf(dup.name, sizeof(dup.name), "alpha");
	dup.kernel = strdup("/k");
	assert_int_equal(inventory_create(d, &dup, &vm, err, sizeof(err)), -EEXIST);
	vm_config_clear(&dup);

	/* beta crashed before the daemon went away; gamma is garbage; a torn
	 * temporary file is ignored. */
	vm = inventory_get(d, "beta");
	pthread_mutex_lock(&d->lock);
	vm_set_state_locked(vm, VM_CRASHED, "the guest crashed: test");
	pthread_mutex_unlock(&d->lock);
	inventory_put(d, vm);
	snprintf(path, sizeof(path), "%s/gamma/Virtual Machines", dir);
	assert_int_equal(mkdir_p(path, 0750), 0);
	snprintf(path, sizeof(path), "%s/gamma/Virtual Machines/%s.json", dir, id);
	assert_int_equal(atomic_write_file(path, "{\"schema_version\":", 18, 0640), 0);
	snprintf(path, sizeof(path), "%s/alpha/Virtual Machines/%s.json.tmp.123", dir, id);
	assert_int_equal(atomic_write_file(path, "{", 1, 0640), 0);
	free_daemon(d);

	d = new_daemon(dir);
	assert_int_equal(inventory_load(d), 0);
	vm_recover_all(d);
	vm = inventory_get(d, "alpha");
	assert_non_null(vm);
	assert_int_equal(vm->state, VM_OFF);
	assert_string_equal(vm->cfg.notes, "n-alpha");
	inventory_put(d, vm);
	assert_non_null((vm = inventory_get(d, id))); /* by GUID too */
	inventory_put(d, vm);
	vm = inventory_get(d, "beta");
	assert_int_equal(vm->state, VM_CRASHED);
	assert_string_equal(vm->reason, "the guest crashed: test");
	inventory_put(d, vm);
	assert_null(inventory_get(d, "gamma"));

	/* Remove keeps disks (and so the VM folder that holds them). */
	vm = inventory_get(d, "alpha");
	snprintf(path, sizeof(path), "%s/alpha/Virtual Hard Disks/a.vhdx", dir);
	assert_int_equal(atomic_write_file(path, "disk", 4, 0640), 0);
	assert_int_equal(inventory_remove(d, vm), 0);
	inventory_put(d, vm);
	assert_null(inventory_get(d, "alpha"));
	assert_false(exists3(dir, "alpha/Virtual Machines/", idjson));
	assert_true(exists3(dir, "alpha/Virtual Hard Disks/a.vhdx", ""));
	free_daemon(d);

	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

/* A worker that is gone at start with no exit record: crashed, unless the
 * last daemon was turning it off (it killed it, as asked): off. */
static void dead_worker(enum vm_state was, const char *reason, enum vm_state want,
			const char *want_reason)
{
	char dir[] = "/tmp/cloison-inv-XXXXXX", path[4400];

	assert_non_null(mkdtemp(dir));
	struct daemon *d = new_daemon(dir);
	struct vm *vm = create(d, "ghost");
	pthread_mutex_lock(&d->lock);
	vm->state = was;
	snprintf(vm->reason, sizeof(vm->reason), "%s", reason);
	inventory_save_status(vm);
	pthread_mutex_unlock(&d->lock);
	/* A worker record for a pid that is certainly not a live worker. */
	snprintf(path, sizeof(path), "%s/worker.json", vm->rundir);
	assert_int_equal(atomic_write_file(path, "{\"pid\":999999,\"starttime\":1}", 28, 0640), 0);
	inventory_put(d, vm);
	free_daemon(d);

	d = new_daemon(dir);
	assert_int_equal(inventory_load(d), 0);
	vm_recover_all(d);
	vm = inventory_get(d, "ghost");
	assert_int_equal(vm->state, want);
	assert_non_null(strstr(vm->reason, want_reason));
	inventory_put(d, vm);
	free_daemon(d);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_adoption_of_a_dead_worker(void **state)
{
	dead_worker(VM_RUNNING, "", VM_CRASHED, "while cloisond was not running");
	dead_worker(VM_STOPPING, "shutting down (ACPI power button)", VM_CRASHED,
		    "while cloisond was not running");
	dead_worker(VM_STOPPING, "turning off", VM_OFF, "turned off (the worker ended");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_reload_remove),
		cmocka_unit_test(test_adoption_of_a_dead_worker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
