/* Host facts for GET /v1/host: what the worker's --check-host says about
 * KVM on this machine (asked once, then cached), the host's resources and
 * how many VMs are in which state. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "daemon/daemon.h"

extern char **environ;

/* Runs `cloison-vmm --check-host --json` and parses its output. */
static json_t *check_host(const char *vmm)
{
	char *argv[] = { (char *)vmm, "--check-host", "--json", NULL };
	posix_spawn_file_actions_t fa;
	int pipefd[2];
	pid_t pid;
	char buf[65536];
	size_t len = 0;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	int r = posix_spawn(&pid, vmm, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	if (r) {
		close(pipefd[0]);
		return json_pack("{s:s}", "error", strerror(r));
	}
	for (;;) {
		ssize_t n = read(pipefd[0], buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			break;
	}
	close(pipefd[0]);
	int ws = 0;
	waitpid(pid, &ws, 0);
	json_t *j = json_loadb(buf, len, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return json_pack("{s:s, s:i}", "error",
				 "the worker's --check-host --json output is not a JSON object",
				 "exit_status", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
	}
	json_object_set_new(j, "exit_status", json_integer(WIFEXITED(ws) ? WEXITSTATUS(ws) : -1));
	return j;
}

void host_meminfo(uint64_t *total, uint64_t *avail)
{
	char line[256];
	unsigned long long v;
	FILE *f = fopen("/proc/meminfo", "re");

	*total = *avail = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
			*total = v * 1024;
		else if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
			*avail = v * 1024;
	}
	fclose(f);
}

json_t *host_vm_counts(struct daemon *d, const struct peer *only, uint64_t *assigned,
		       unsigned *vcpus)
{
	static const char *const states[] = { "off", "starting", "running", "paused",
					      "stopping", "crashed", "saving", "saved" };
	unsigned counts[ARRAY_SIZE(states)] = { 0 }, n = 0;
	json_t *vmc;

	*assigned = 0;
	*vcpus = 0;
	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm; vm = vm->next) {
		if (only && !auth_may_operate(only, vm))
			continue;
		n++;
		if ((size_t)vm->state < ARRAY_SIZE(states))
			counts[vm->state]++;
		if (vm_state_has_worker(vm->state)) {
			*assigned += vm->cfg.memory;
			*vcpus += vm->cfg.cpus;
		}
	}
	pthread_mutex_unlock(&d->lock);
	vmc = json_object();
	json_object_set_new(vmc, "total", json_integer(n));
	for (size_t i = 0; i < ARRAY_SIZE(states); i++)
		json_object_set_new(vmc, states[i], json_integer(counts[i]));
	return vmc;
}

json_t *host_info_json(struct daemon *d)
{
	uint64_t assigned, total, avail;
	unsigned vcpus;
	struct utsname un;
	struct statvfs sv;

	json_t *kvm = check_host(d->vmm_path);
	json_t *vmc = host_vm_counts(d, NULL, &assigned, &vcpus);

	host_meminfo(&total, &avail);
	uname(&un);
	uint64_t disk_free = statvfs(d->state_dir, &sv) == 0 ? (uint64_t)sv.f_bavail * sv.f_frsize : 0;
	json_t *sandbox = d->no_sandbox
		? json_pack("{s:b, s:s}", "enabled", 0, "why", "cloisond runs with --no-sandbox: "
			    "workers run as root with every capability and system call")
		: json_pack("{s:b, s:s, s:[sssss], s:b, s:b}", "enabled", 1, "uids",
			    "one per running VM, from 900000", "namespaces", "mnt", "pid", "ipc",
			    "uts", "net", "seccomp", 1, "no_new_privs", 1);
	return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:o, s:o, s:o,"
			 " s:{s:i, s:I, s:I, s:I, s:i, s:I}}",
			 "hostname", un.nodename, "kernel", un.release, "cloisond_version",
			 CLOISON_VERSION, "cloisond_pid", (int)getpid(), "state_dir", d->state_dir, "worker", d->vmm_path,
			 "virtualization", kvm ? kvm : json_null(), "sandbox", sandbox, "vms", vmc,
			 "resources",
			 "cpus", (int)sysconf(_SC_NPROCESSORS_ONLN), "memory_total",
			 (json_int_t)total, "memory_available", (json_int_t)avail,
			 "memory_assigned_to_vms", (json_int_t)assigned, "vcpus_assigned_to_vms",
			 (int)vcpus, "state_dir_free", (json_int_t)disk_free);
}
