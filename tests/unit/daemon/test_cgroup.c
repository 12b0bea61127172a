/* src/daemon/cgroup.c against fake cgroup trees in a temporary directory
 * (the kernel makes a cgroup's files at mkdir; here the test makes them):
 * which hierarchies it picks from /proc/self/cgroup's format, what it
 * writes for a limit, a weight and a memory cap on v1 and on v2, and the
 * reserve admission's arithmetic and message. The real controllers are
 * exercised by tests/system/test_daemon_cpu.py. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/cgroup.h"

static char root[PATH_MAX];

static void put(const char *rel, const char *text)
{
	char path[PATH_MAX * 2];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void dir(const char *rel)
{
	char path[PATH_MAX * 2];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	assert_int_equal(mkdir(path, 0755), 0);
}

static char *get(const char *rel)
{
	static char buf[256];
	char path[PATH_MAX * 2];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/cloison-cgroup-test-XXXXXX");
	assert_non_null(mkdtemp(root));
	return 0;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd);
}

static void test_v1_limits(void **state)
{
	struct cgroup_host h;
	struct cgroup_limits l = { .cpus = 2, .cpu_limit = 25, .cpu_weight = 50,
				   .memory_max = 300 << 20 };
	char dirs[CGROUP_DIRS][PATH_MAX], err[512], self[PATH_MAX + 16];
	unsigned n;

	dir("cpu");
	dir("cpuacct");
	dir("memory");
	dir("memory/svc");
	put("self", "4:memory:/svc\n3:cpuacct:/\n1:cpu:/\n0::/\n");
	snprintf(self, sizeof(self), "%s/self", root);
	assert_int_equal(cgroup_host_init(&h, root, self, err, sizeof(err)), 0);
	assert_int_equal(h.mode, CGROUP_V1);
	assert_int_equal(h.nbase, 3);
	/* the daemon's own memory cgroup is the parent there */
	assert_non_null(strstr(h.base[2], "/memory/svc/cloison"));

	dir("cpu/cloison/vm1");
	put("cpu/cloison/vm1/cpu.cfs_period_us", "");
	put("cpu/cloison/vm1/cpu.cfs_quota_us", "");
	put("cpu/cloison/vm1/cpu.shares", "");
	dir("cpuacct/cloison/vm1");
	put("cpuacct/cloison/vm1/cpuacct.usage", "123456789\n");
	dir("memory/svc/cloison/vm1");
	put("memory/svc/cloison/vm1/memory.limit_in_bytes", "");
	assert_int_equal(cgroup_vm_apply(&h, "vm1", &l, dirs, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(get("cpu/cloison/vm1/cpu.cfs_period_us"), "100000");
	/* 25 % of 2 vCPUs: half a CPU per period */
	assert_string_equal(get("cpu/cloison/vm1/cpu.cfs_quota_us"), "50000");
	assert_string_equal(get("cpu/cloison/vm1/cpu.shares"), "512");
	assert_string_equal(get("memory/svc/cloison/vm1/memory.limit_in_bytes"), "314572800");
	uint64_t ns = 0;
	assert_int_equal(cgroup_vm_cpu_usage(&h, "vm1", &ns), 0);
	assert_int_equal(ns, 123456789);

	/* no limit: -1 quota and no memory cap */
	l.cpu_limit = CPU_LIMIT_NONE;
	l.cpu_weight = CPU_WEIGHT_DEFAULT;
	l.memory_max = 0;
	assert_int_equal(cgroup_vm_apply(&h, "vm1", &l, dirs, &n, err, sizeof(err)), 0);
	assert_string_equal(get("cpu/cloison/vm1/cpu.cfs_quota_us"), "-1");
	assert_string_equal(get("cpu/cloison/vm1/cpu.shares"), "1024");
	assert_string_equal(get("memory/svc/cloison/vm1/memory.limit_in_bytes"), "-1");
}

static void test_v1_combined_cpu_cpuacct(void **state)
{
	struct cgroup_host h;
	char err[512], self[PATH_MAX + 16], a[PATH_MAX * 2], b[PATH_MAX * 2];

	/* Debian's hybrid layout: one cpu,cpuacct hierarchy and symlinks */
	dir("cpu,cpuacct");
	dir("memory");
	snprintf(a, sizeof(a), "%s/cpu", root);
	assert_int_equal(symlink("cpu,cpuacct", a), 0);
	snprintf(b, sizeof(b), "%s/cpuacct", root);
	assert_int_equal(symlink("cpu,cpuacct", b), 0);
	put("self", "5:memory:/\n2:cpu,cpuacct:/\n0::/init.scope\n");
	snprintf(self, sizeof(self), "%s/self", root);
	assert_int_equal(cgroup_host_init(&h, root, self, err, sizeof(err)), 0);
	assert_int_equal(h.nbase, 2);
	assert_int_equal(h.kinds[0], CGROUP_CPU | CGROUP_CPUACCT);
	assert_int_equal(h.kinds[1], CGROUP_MEMORY);
}

static void test_v2_limits(void **state)
{
	struct cgroup_host h;
	struct cgroup_limits l = { .cpus = 1, .cpu_limit = 25, .cpu_weight = 300,
				   .memory_max = 1 << 30 };
	char dirs[CGROUP_DIRS][PATH_MAX], err[512], self[PATH_MAX + 16];
	unsigned n;

	put("cgroup.controllers", "cpuset cpu io memory pids\n");
	put("cgroup.subtree_control", "");
	put("self", "0::/system.slice/cloisond.service\n");
	dir("cloison");
	put("cloison/cgroup.subtree_control", "");
	snprintf(self, sizeof(self), "%s/self", root);
	assert_int_equal(cgroup_host_init(&h, root, self, err, sizeof(err)), 0);
	assert_int_equal(h.mode, CGROUP_V2);
	assert_int_equal(h.nbase, 1);
	assert_string_equal(get("cgroup.subtree_control"), "+cpu +memory");
	assert_string_equal(get("cloison/cgroup.subtree_control"), "+cpu +memory");
	dir("cloison/vm2");
	put("cloison/vm2/cpu.max", "");
	put("cloison/vm2/cpu.weight", "");
	put("cloison/vm2/memory.max", "");
	put("cloison/vm2/cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n");
	assert_int_equal(cgroup_vm_apply(&h, "vm2", &l, dirs, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_string_equal(get("cloison/vm2/cpu.max"), "25000 100000");
	assert_string_equal(get("cloison/vm2/cpu.weight"), "300");
	assert_string_equal(get("cloison/vm2/memory.max"), "1073741824");
	uint64_t ns = 0;
	assert_int_equal(cgroup_vm_cpu_usage(&h, "vm2", &ns), 0);
	assert_int_equal(ns, 2500000);
	l.cpu_limit = CPU_LIMIT_NONE;
	l.memory_max = 0;
	assert_int_equal(cgroup_vm_apply(&h, "vm2", &l, dirs, &n, err, sizeof(err)), 0);
	assert_string_equal(get("cloison/vm2/cpu.max"), "max 100000");
	assert_string_equal(get("cloison/vm2/memory.max"), "max");
}

static void test_nothing_usable(void **state)
{
	struct cgroup_host h;
	struct cgroup_limits l = { .cpus = 1, .cpu_limit = 50, .cpu_weight = 100 };
	char dirs[CGROUP_DIRS][PATH_MAX], err[512], self[PATH_MAX + 16];
	unsigned n;

	put("self", "0::/\n");
	snprintf(self, sizeof(self), "%s/self", root);
	assert_int_not_equal(cgroup_host_init(&h, root, self, err, sizeof(err)), 0);
	assert_int_equal(h.mode, CGROUP_NONE);
	assert_non_null(strstr(err, "no cgroup v2 tree"));
	/* a limit cannot be kept without them: refused, saying so */
	assert_int_equal(cgroup_vm_apply(&h, "vm3", &l, dirs, &n, err, sizeof(err)), -EOPNOTSUPP);
	assert_non_null(strstr(err, "cannot be applied"));
	l.cpu_limit = CPU_LIMIT_NONE;
	assert_int_equal(cgroup_vm_apply(&h, "vm3", &l, dirs, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
}

static void test_reserve_admission(void **state)
{
	char err[512];

	/* 2 host CPUs: 50 % of 2 vCPUs (1 CPU) beside 1 CPU reserved fits */
	assert_int_equal(cgroup_check_reserve("cannot start", "a", 2, 50, 100, 2, err, sizeof(err)), 0);
	/* one hundredth more does not */
	assert_int_equal(cgroup_check_reserve("cannot start", "b", 2, 50, 101, 2, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "cannot start 'b'"));
	assert_non_null(strstr(err, "50% of 2 vCPUs, 1.00 CPUs"));
	assert_non_null(strstr(err, "reserves (1.01 CPUs)"));
	assert_non_null(strstr(err, "--cpu-reserve"));
	/* no reserve never counts */
	assert_int_equal(cgroup_check_reserve("cannot start", "c", 4, 0, 10000, 2, err, sizeof(err)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_v1_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_v1_combined_cpu_cpuacct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_v2_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nothing_usable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_admission, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
