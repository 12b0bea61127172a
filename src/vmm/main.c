/* cloison-vmm: runs one VM. Parses and validates the whole command line
 * before anything starts (usage errors exit 2), then builds the VM, wires
 * COM1 and the control socket, runs it and turns the way it ended into the
 * exit status of docs/vmm.md. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/chardev.h"
#include "vmm/control.h"
#include "vmm/jail.h"
#include "vmm/seccomp.h"
#include "vmm/virtio/devices.h"
#include "vmm/vm_internal.h"

#define EXIT_USAGE 2
#define EXIT_VMM 1
#define MAX_DEVICES 16
#define NAME_MAX_LEN 128
#define MAX_CGROUPS 8 /* one per cgroup v1 controller hierarchy, or one v2 */

struct options {
	struct vm_config vm;
	char vsock_spec[512]; /* --vsock with ,host-only added under --jail */
	const char *serial;
	const char *control;
	const char *pidfile;
	int oom_score_adj; /* -1: leave it */
	const char *cgroups[MAX_CGROUPS]; /* --cgroup: joined first */
	unsigned ncgroups;
	const char *disks[MAX_DEVICES];
	const char *nets[MAX_DEVICES];
	bool check_host;
	bool json;
	bool jail;
	bool restore_memory_given; /* --restore-memory */
	bool no_sandbox;
	struct jail_config jail_cfg;
	bool help;
	bool version;
};

enum {
	OPT_KERNEL = 256,
	OPT_INITRD,
	OPT_CMDLINE,
	OPT_MEMORY,
	OPT_CPUS,
	OPT_SERIAL,
	OPT_CONTROL,
	OPT_NAME,
	OPT_DISK,
	OPT_NET,
	OPT_CONSOLE,
	OPT_VSOCK,
	OPT_BALLOON,
	OPT_NO_REBOOT,
	OPT_PAUSED,
	OPT_RESTORE,
	OPT_RESTORE_MEMORY,
	OPT_CPUID_CACHE,
	OPT_GENERATION_ID,
	OPT_PIDFILE,
	OPT_OOM_SCORE_ADJ,
	OPT_CGROUP,
	OPT_BOOT_PROTOCOL,
	OPT_CHECK_HOST,
	OPT_JSON,
	OPT_JAIL,
	OPT_NO_SANDBOX,
	OPT_JAIL_UID,
	OPT_JAIL_GID,
	OPT_CORE_DUMP,
	OPT_JAIL_DIR,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option long_options[] = {
	{ "kernel", required_argument, NULL, OPT_KERNEL },
	{ "initrd", required_argument, NULL, OPT_INITRD },
	{ "cmdline", required_argument, NULL, OPT_CMDLINE },
	{ "memory", required_argument, NULL, OPT_MEMORY },
	{ "cpus", required_argument, NULL, OPT_CPUS },
	{ "serial", required_argument, NULL, OPT_SERIAL },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "disk", required_argument, NULL, OPT_DISK },
	{ "net", required_argument, NULL, OPT_NET },
	{ "console", required_argument, NULL, OPT_CONSOLE },
	{ "vsock", required_argument, NULL, OPT_VSOCK },
	{ "balloon", required_argument, NULL, OPT_BALLOON },
	{ "no-reboot", no_argument, NULL, OPT_NO_REBOOT },
	{ "paused", no_argument, NULL, OPT_PAUSED },
	{ "restore", required_argument, NULL, OPT_RESTORE },
	{ "restore-memory", required_argument, NULL, OPT_RESTORE_MEMORY },
	{ "cpuid-cache", required_argument, NULL, OPT_CPUID_CACHE },
	{ "generation-id", required_argument, NULL, OPT_GENERATION_ID },
	{ "pidfile", required_argument, NULL, OPT_PIDFILE },
	{ "oom-score-adj", required_argument, NULL, OPT_OOM_SCORE_ADJ },
	{ "cgroup", required_argument, NULL, OPT_CGROUP },
	{ "boot-protocol", required_argument, NULL, OPT_BOOT_PROTOCOL },
	{ "check-host", no_argument, NULL, OPT_CHECK_HOST },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "jail", no_argument, NULL, OPT_JAIL },
	{ "no-sandbox", no_argument, NULL, OPT_NO_SANDBOX },
	{ "jail-uid", required_argument, NULL, OPT_JAIL_UID },
	{ "jail-gid", required_argument, NULL, OPT_JAIL_GID },
	{ "core-dump", no_argument, NULL, OPT_CORE_DUMP },
	{ "jail-dir", required_argument, NULL, OPT_JAIL_DIR },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

static void usage(FILE *f)
{
	fputs("usage: cloison-vmm --kernel PATH [--initrd PATH] [--cmdline STR] [--memory SIZE]\n"
	      "                   [--cpus N] [--serial stdio|file:PATH|unix:PATH|pty|none]\n"
	      "                   [--control PATH] [--name NAME] [--no-reboot] [--pidfile PATH]\n"
	      "                   [--paused] [--restore DIR [--restore-memory lazy|eager]]\n"
	      "                   [--generation-id GUID] [--cpuid-cache FILE]\n"
	      "                   [--boot-protocol auto|linux|pvh]\n"
	      "                   [--disk path=FILE[,readonly][,serial=STR][,direct]]...\n"
	      "                   [--net tap=NAME|fd=N[,mac=XX:XX:XX:XX:XX:XX]]...\n"
	      "                   [--console unix:PATH|file:PATH]\n"
	      "                   [--vsock cid=N,socket=PATH[,host-only]]\n"
	      "                   [--balloon on|assigned=SIZE]\n"
	      "                   [--jail [--jail-uid UID] [--jail-gid GID] [--jail-dir DIR]\n"
	      "                           [--core-dump] | --no-sandbox]\n"
	      "       cloison-vmm --check-host [--json]\n"
	      "       cloison-vmm --help | --version\n"
	      "\n"
	      "Runs one virtual machine on KVM.\n"
	      "\n"
	      "  --kernel PATH    Linux bzImage, vmlinux ELF or PVH ELF (picked by content)\n"
	      "  --initrd PATH    initial ramdisk\n"
	      "  --cmdline STR    kernel command line (at most 64 KiB)\n"
	      "  --memory SIZE    guest RAM, 64M to 1T (default 256M; a bare number is MiB)\n"
	      "  --cpus N         vCPUs, 1 to 255 (default 1; the host's KVM may allow fewer)\n"
	      "  --serial WHERE   COM1: stdio (default), file:PATH, unix:PATH, pty or none\n"
	      "                   (on a terminal, Ctrl-A x powers the VM off)\n"
	      "  --control PATH   control socket (JSON lines: status, pause, resume,\n"
	      "                   shutdown, poweroff, reset, save, balloon, ...)\n"
	      "  --name NAME      name for logs and status\n"
	      "  --disk SPEC      virtio-blk disk (raw, VHDX or VHD), repeatable\n"
	      "  --net SPEC       virtio-net NIC on a tap device, repeatable\n"
	      "  --console SPEC   virtio-console (Linux: /dev/hvc0): unix:PATH (the worker\n"
	      "                   listens; one client at a time) or file:PATH (output appended)\n"
	      "  --vsock cid=N,socket=PATH\n"
	      "                   virtio-vsock, guest CID N (3 to 4294967294); the host side\n"
	      "                   is unix sockets: connect to PATH and send \"CONNECT <port>\\n\"\n"
	      "                   to reach a guest port; the guest's connections to host\n"
	      "                   port P go to PATH_P (,host-only: refused; --jail implies it)\n"
	      "  --balloon on|assigned=SIZE\n"
	      "                   virtio-balloon (dynamic memory): the guest starts with SIZE\n"
	      "                   of its --memory (on: all of it); the control socket's\n"
	      "                   \"balloon\" reads and sets the target, pages the guest\n"
	      "                   gives up or reports free go back to the host\n"
	      "  --no-reboot      exit with status 3 when the guest resets\n"
	      "  --pidfile PATH   write the worker's pid there once the VM runs\n"
	      "  --oom-score-adj N  the worker's /proc/self/oom_score_adj (0 to 1000), set\n"
	      "                   first, so the --jail worker the supervisor forks has it\n"
	      "  --cgroup DIR     join the cgroup DIR (its cgroup.procs) first, so that the\n"
	      "                   --jail worker and every thread are in it; once per v1\n"
	      "                   controller hierarchy (up to 8), once for cgroup v2\n"
	      "  --paused         create the VM but keep its vCPUs stopped until \"resume\"\n"
	      "                   on the control socket (needs --control)\n"
	      "  --restore DIR    go on from the state a control \"save\" wrote into DIR;\n"
	      "                   give the VM's other options as when it was saved\n"
	      "  --restore-memory lazy|eager\n"
	      "                   lazy (the default): guest RAM maps the saved memory file\n"
	      "                   copy-on-write and pages come in as the guest touches\n"
	      "                   them; eager: all of it is read in before the guest runs.\n"
	      "                   The file must stay unchanged while the VM runs (a later\n"
	      "                   save writes a new one)\n"
	      "  --cpuid-cache FILE\n"
	      "                   keep KVM's supported CPUID in FILE and take it from there\n"
	      "                   while FILE was made for this /dev/kvm and kernel (asking\n"
	      "                   KVM costs ~1 ms on a nested host); a FILE that does not\n"
	      "                   match is replaced\n"
	      "  --generation-id GUID\n"
	      "                   a VM Generation ID device (ACPI \\_SB.VGEN) holding GUID;\n"
	      "                   with --restore, a GUID other than the saved one is written\n"
	      "                   for the guest and announced to it (GPE 2, Notify 0x80)\n"
	      "  --boot-protocol auto|linux|pvh\n"
	      "                   how to enter the kernel (auto: PVH when the ELF has the\n"
	      "                   note, else the Linux 64-bit boot protocol)\n"
	      "  --jail           run sandboxed (docs/sandbox.md): PID 1 of new PID, mount,\n"
	      "                   IPC, UTS and network namespaces, an empty root, an\n"
	      "                   unprivileged uid, no capabilities, seccomp allow-lists\n"
	      "  --jail-uid UID, --jail-gid GID\n"
	      "                   the sandbox's uid and gid (default 900000)\n"
	      "  --jail-dir DIR   in the sandbox, the one host directory the worker may write:\n"
	      "                   bind-mounted read-write at the same path; \"save\" writes\n"
	      "                   its state files there (owned by the sandbox's uid)\n"
	      "  --core-dump      in the sandbox, still allow a core dump (it holds guest RAM)\n"
	      "  --no-sandbox     run without the sandbox (for debugging; logged loudly)\n"
	      "  --check-host     report whether this host can run cloison (--json for JSON)\n"
	      "\n"
	      "Exit status: 0 guest powered off, 1 VMM error, 2 usage error, 3 guest reset\n"
	      "with --no-reboot, 4 guest crash, 5 saved (control \"save\").\n",
	      f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("cloison-vmm: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(see cloison-vmm --help)\n", stderr);
	return -EINVAL;
}

static int parse_memory(const char *s, uint64_t *out)
{
	uint64_t v;
	int ret = parse_size(s, MiB, &v);

	if (ret == -ERANGE || (ret == 0 && v > VM_MAX_MEMORY))
		return usage_error("--memory %s: too large; at most 1T (1 TiB)", s);
	if (ret)
		return usage_error("--memory %s: not a size; expected e.g. 512 (MiB), 512M or 4G", s);
	if (v < VM_MIN_MEMORY)
		return usage_error("--memory %s: too small; at least 64M", s);
	if (!IS_ALIGNED(v, 4096))
		return usage_error("--memory %s: not a whole number of 4 KiB pages", s);
	*out = v;
	return 0;
}

static int parse_cpus(const char *s, unsigned *out)
{
	uint64_t v;

	if (parse_u64(s, &v) || v < 1 || v > VM_MAX_VCPUS)
		return usage_error("--cpus %s: expected a whole number from 1 to %d", s,
				   VM_MAX_VCPUS);
	*out = (unsigned)v;
	return 0;
}

static int check_device_spec(const char *opt, const char *spec)
{
	char err[256] = "";
	int ret;

	if (!strcmp(opt, "--disk"))
		ret = virtio_disk_spec_check(spec, err, sizeof(err));
	else if (!strcmp(opt, "--net"))
		ret = virtio_net_spec_check(spec, err, sizeof(err));
	else if (!strcmp(opt, "--vsock"))
		ret = virtio_vsock_spec_check(spec, err, sizeof(err));
	else if (!strcmp(opt, "--balloon"))
		ret = virtio_balloon_spec_check(spec, err, sizeof(err));
	else
		ret = virtio_console_spec_check(spec, err, sizeof(err));

	if (ret && strstr(err, opt))
		return usage_error("%s", err);
	if (ret)
		return usage_error("%s %s: %s", opt, spec, err);
	return 0;
}

/* Whether the comma-separated spec has the word tok. */
static bool has_token(const char *spec, const char *tok)
{
	size_t n = strlen(tok);

	for (const char *p = spec; p; p = strchr(p, ','), p = p ? p + 1 : NULL)
		if (!strncmp(p, tok, n) && (p[n] == ',' || !p[n]))
			return true;
	return false;
}

static int set_once(const char **slot, const char *opt, const char *val)
{
	if (*slot)
		return usage_error("%s given twice", opt);
	*slot = val;
	return 0;
}

static int parse_one(struct options *o, int c, const char *arg)
{
	char err[256];

	switch (c) {
	case OPT_KERNEL:
		if (!*arg)
			return usage_error("--kernel: the path is empty");
		return set_once(&o->vm.kernel, "--kernel", arg);
	case OPT_INITRD:
		if (!*arg)
			return usage_error("--initrd: the path is empty");
		return set_once(&o->vm.initrd, "--initrd", arg);
	case OPT_CMDLINE:
		if (strlen(arg) >= 64 * 1024)
			return usage_error("--cmdline: %zu bytes; at most 65535", strlen(arg));
		return set_once(&o->vm.cmdline, "--cmdline", arg);
	case OPT_MEMORY:
		return parse_memory(arg, &o->vm.memory);
	case OPT_CPUS:
		return parse_cpus(arg, &o->vm.ncpus);
	case OPT_SERIAL:
		if (chardev_spec_check(arg, err, sizeof(err)))
			return usage_error("%s", err);
		o->serial = arg;
		return 0;
	case OPT_CONTROL:
		if (!*arg)
			return usage_error("--control: the path is empty");
		return set_once(&o->control, "--control", arg);
	case OPT_NAME:
		if (!*arg || strlen(arg) > NAME_MAX_LEN)
			return usage_error("--name: expected 1 to %d characters", NAME_MAX_LEN);
		for (const char *p = arg; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
				return usage_error("--name: control characters, quotes and "
						   "backslashes are not allowed");
		return set_once(&o->vm.name, "--name", arg);
	case OPT_DISK:
		if (o->vm.ndisks == MAX_DEVICES)
			return usage_error("--disk: at most %d disks", MAX_DEVICES);
		o->disks[o->vm.ndisks++] = arg;
		return check_device_spec("--disk", arg);
	case OPT_NET:
		if (o->vm.nnets == MAX_DEVICES)
			return usage_error("--net: at most %d NICs", MAX_DEVICES);
		o->nets[o->vm.nnets++] = arg;
		return check_device_spec("--net", arg);
	case OPT_CONSOLE:
		if (o->vm.console)
			return usage_error("--console given twice");
		o->vm.console = arg;
		return check_device_spec("--console", arg);
	case OPT_VSOCK:
		if (o->vm.vsock)
			return usage_error("--vsock given twice");
		o->vm.vsock = arg;
		return check_device_spec("--vsock", arg);
	case OPT_BALLOON:
		if (o->vm.balloon)
			return usage_error("--balloon given twice");
		o->vm.balloon = arg;
		return check_device_spec("--balloon", arg);
	case OPT_NO_REBOOT:
		o->vm.no_reboot = true;
		return 0;
	case OPT_PAUSED:
		o->vm.start_paused = true;
		return 0;
	case OPT_RESTORE:
		if (!*arg)
			return usage_error("--restore: the directory is empty");
		return set_once(&o->vm.restore, "--restore", arg);
	case OPT_RESTORE_MEMORY:
		if (strcmp(arg, "lazy") && strcmp(arg, "eager"))
			return usage_error("--restore-memory %s: expected lazy or eager", arg);
		o->vm.restore_eager = !strcmp(arg, "eager");
		o->restore_memory_given = true;
		return 0;
	case OPT_CPUID_CACHE:
		if (!*arg)
			return usage_error("--cpuid-cache: the path is empty");
		return set_once(&o->vm.cpuid_cache, "--cpuid-cache", arg);
	case OPT_GENERATION_ID:
		if (o->vm.has_generation_id)
			return usage_error("--generation-id given twice");
		if (guid_parse(arg, &o->vm.generation_id) || guid_is_zero(&o->vm.generation_id))
			return usage_error("--generation-id %s: expected a non-zero GUID like "
					   "1b4e28ba-2fa1-11d2-883f-0016d3cca427", arg);
		o->vm.has_generation_id = true;
		return 0;
	case OPT_CGROUP:
		if (arg[0] != '/')
			return usage_error("--cgroup %s: give the cgroup's absolute directory "
					   "(e.g. /sys/fs/cgroup/cpu/cloison/VM)", arg);
		if (o->ncgroups == MAX_CGROUPS)
			return usage_error("--cgroup: at most %d", MAX_CGROUPS);
		o->cgroups[o->ncgroups++] = arg;
		return 0;
	case OPT_OOM_SCORE_ADJ: {
		uint64_t v;
		if (parse_u64(arg, &v) || v > 1000)
			return usage_error("--oom-score-adj %s: expected 0 to 1000 (a worker is never "
					   "scored below the host's other processes)", arg);
		o->oom_score_adj = (int)v;
		return 0;
	}
	case OPT_PIDFILE:
		if (!*arg)
			return usage_error("--pidfile: the path is empty");
		return set_once(&o->pidfile, "--pidfile", arg);
	case OPT_BOOT_PROTOCOL:
		if (!strcmp(arg, "auto"))
			o->vm.protocol = BOOT_PROTO_AUTO;
		else if (!strcmp(arg, "linux"))
			o->vm.protocol = BOOT_PROTO_LINUX;
		else if (!strcmp(arg, "pvh"))
			o->vm.protocol = BOOT_PROTO_PVH;
		else
			return usage_error("--boot-protocol %s: expected auto, linux or pvh", arg);
		return 0;
	case OPT_CHECK_HOST:
		o->check_host = true;
		return 0;
	case OPT_JSON:
		o->json = true;
		return 0;
	case OPT_JAIL:
		o->jail = true;
		return 0;
	case OPT_NO_SANDBOX:
		o->no_sandbox = true;
		return 0;
	case OPT_JAIL_UID:
	case OPT_JAIL_GID: {
		uint64_t v;
		if (parse_u64(arg, &v) || v == 0 || v >= UINT32_MAX)
			return usage_error("%s %s: expected a number from 1 to 4294967294 (not 0: "
					   "the sandbox runs unprivileged)",
					   c == OPT_JAIL_UID ? "--jail-uid" : "--jail-gid", arg);
		if (c == OPT_JAIL_UID)
			o->jail_cfg.uid = (uid_t)v;
		else
			o->jail_cfg.gid = (gid_t)v;
		return 0;
	}
	case OPT_CORE_DUMP:
		o->jail_cfg.core_dump = true;
		return 0;
	case OPT_JAIL_DIR:
		if (arg[0] != '/' || strlen(arg) >= PATH_MAX)
			return usage_error("--jail-dir %s: expected an absolute directory path", arg);
		o->jail_cfg.dir = arg;
		return 0;
	case OPT_HELP:
		o->help = true;
		return 0;
	case OPT_VERSION:
		o->version = true;
		return 0;
	default:
		return usage_error("unknown option");
	}
}

static int parse_options(int argc, char **argv, struct options *o)
{
	int c, ret;

	memset(o, 0, sizeof(*o));
	o->vm.memory = 256 * MiB;
	o->vm.ncpus = 1;
	o->vm.cmdline = NULL;
	o->serial = "stdio";
	o->vm.disks = o->disks;
	o->vm.nets = o->nets;
	o->jail_cfg.uid = JAIL_DEFAULT_UID;
	o->jail_cfg.sync_fd = -1;
	o->jail_cfg.gid = JAIL_DEFAULT_GID;
	o->oom_score_adj = -1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		if (c == '?') {
			if (optopt)
				return usage_error("option '%s' needs a value", argv[optind - 1]);
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
		if (c == ':')
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		ret = parse_one(o, c, optarg);
		if (ret)
			return ret;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s' (options start with --)", argv[optind]);
	if (o->help || o->version)
		return 0;
	if (o->json && !o->check_host)
		return usage_error("--json goes with --check-host");
	if (o->check_host)
		return 0;
	if (!o->vm.kernel)
		return usage_error("--kernel PATH is required");
	if (o->vm.start_paused && !o->control)
		return usage_error("--paused needs --control PATH: \"resume\" there starts the vCPUs");
	if (o->restore_memory_given && !o->vm.restore)
		return usage_error("--restore-memory goes with --restore DIR");
	if (o->jail && o->no_sandbox)
		return usage_error("--jail and --no-sandbox exclude each other");
	if (o->jail && o->vm.vsock && !has_token(o->vm.vsock, "host-only")) {
		/* The sandbox's filter has no socket() or connect(): the guest's
		 * connections to the host are refused rather than fatal. */
		if (snprintf(o->vsock_spec, sizeof(o->vsock_spec), "%s,host-only", o->vm.vsock) >=
		    (int)sizeof(o->vsock_spec))
			return usage_error("--vsock: the spec is too long");
		o->vm.vsock = o->vsock_spec;
	}
	if (!o->jail && (o->jail_cfg.uid != JAIL_DEFAULT_UID ||
			 o->jail_cfg.gid != JAIL_DEFAULT_GID || o->jail_cfg.core_dump ||
			 o->jail_cfg.dir))
		return usage_error("--jail-uid, --jail-gid, --jail-dir and --core-dump go with "
				   "--jail");
	if (!o->vm.cmdline)
		o->vm.cmdline = "";
	if (!o->vm.name)
		o->vm.name = "cloison";
	return 0;
}

/* ---- --check-host --------------------------------------------------- */

struct cap_check {
	const char *name;
	int cap;
	bool required;
};

static const struct cap_check caps[] = {
	{ "KVM_CAP_USER_MEMORY", KVM_CAP_USER_MEMORY, true },
	{ "KVM_CAP_SET_TSS_ADDR", KVM_CAP_SET_TSS_ADDR, true },
	{ "KVM_CAP_SET_IDENTITY_MAP_ADDR", KVM_CAP_SET_IDENTITY_MAP_ADDR, true },
	{ "KVM_CAP_IRQCHIP", KVM_CAP_IRQCHIP, true },
	{ "KVM_CAP_PIT2", KVM_CAP_PIT2, true },
	{ "KVM_CAP_EXT_CPUID", KVM_CAP_EXT_CPUID, true },
	{ "KVM_CAP_MP_STATE", KVM_CAP_MP_STATE, true },
	{ "KVM_CAP_IRQ_ROUTING", KVM_CAP_IRQ_ROUTING, true },
	{ "KVM_CAP_IRQFD", KVM_CAP_IRQFD, true },
	{ "KVM_CAP_IOEVENTFD", KVM_CAP_IOEVENTFD, true },
	{ "KVM_CAP_SIGNAL_MSI", KVM_CAP_SIGNAL_MSI, true },
	{ "KVM_CAP_IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT, true },
	{ "KVM_CAP_VCPU_EVENTS", KVM_CAP_VCPU_EVENTS, true },
	{ "KVM_CAP_XCRS", KVM_CAP_XCRS, false },
	{ "KVM_CAP_TSC_DEADLINE_TIMER", KVM_CAP_TSC_DEADLINE_TIMER, false },
	{ "KVM_CAP_IOEVENTFD_ANY_LENGTH", KVM_CAP_IOEVENTFD_ANY_LENGTH, false },
};

/* "hardware" when the CPU flags show VT-x/AMD-V, else "software-nested". */
static bool cpu_has_flag(const char *flag)
{
	char *data = NULL, *line;
	size_t len;
	bool found = false;

	if (read_file("/proc/cpuinfo", 64 << 20, &data, &len))
		return false;
	line = strstr(data, "\nflags");
	if (line) {
		char *end = strchr(line + 1, '\n');
		char pat[32];
		if (end)
			*end = 0;
		snprintf(pat, sizeof(pat), " %s", flag);
		for (char *p = strstr(line, pat); p; p = strstr(p + 1, pat))
			if (p[strlen(pat)] == ' ' || p[strlen(pat)] == 0) {
				found = true;
				break;
			}
	}
	free(data);
	return found;
}

static int check_host(bool as_json)
{
	const char *warning = NULL;
	json_t *root = json_object(), *jcaps = json_array();
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int kvm_errno = errno, api = -1, max_vcpus = 0, rec_vcpus = 0;
	bool hw = cpu_has_flag("vmx") || cpu_has_flag("svm");
	bool nested = cpu_has_flag("hypervisor");
	bool ok = fd >= 0;

	if (fd >= 0) {
		api = ioctl(fd, KVM_GET_API_VERSION, 0);
		ok = api == KVM_API_VERSION;
		max_vcpus = vm_max_vcpus(fd);
		rec_vcpus = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	}
	for (unsigned i = 0; i < ARRAY_SIZE(caps); i++) {
		bool have = fd >= 0 && ioctl(fd, KVM_CHECK_EXTENSION, caps[i].cap) > 0;
		if (caps[i].required && !have)
			ok = false;
		json_array_append_new(jcaps, json_pack("{s:s, s:b, s:b}", "name", caps[i].name,
						       "ok", have, "required", caps[i].required));
	}
	if (fd >= 0 && !hw)
		warning = "this CPU has no hardware virtualization (VT-x/AMD-V) visible: KVM runs "
			  "on a software-assisted nested hypervisor, so guest kernels will run "
			  "very slowly (ring-0 code is emulated)";
	if (as_json) {
		char *s;
		json_object_set_new(root, "kvm_device", json_pack("{s:s, s:b, s:s?}", "path",
			"/dev/kvm", "ok", fd >= 0, "error", fd >= 0 ? NULL : strerror(kvm_errno)));
		json_object_set_new(root, "api_version", json_integer(api));
		json_object_set_new(root, "capabilities", jcaps);
		json_object_set_new(root, "max_vcpus", json_integer(max_vcpus));
		json_object_set_new(root, "recommended_vcpus", json_integer(rec_vcpus));
		json_object_set_new(root, "hardware_virtualization", json_boolean(hw));
		json_object_set_new(root, "virtualization",
				    json_string(hw ? "hardware" : nested ? "software-nested"
									 : "none"));
		json_object_set_new(root, "warning", warning ? json_string(warning) : json_null());
		json_object_set_new(root, "can_run", json_boolean(ok));
		s = json_dumps(root, JSON_INDENT(2));
		puts(s);
		free(s);
	} else {
		size_t n;
		if (fd >= 0)
			printf("/dev/kvm: ok\n");
		else
			printf("/dev/kvm: missing (%s)\n", strerror(kvm_errno));
		if (fd >= 0)
			printf("KVM API version: %d (%s)\n", api,
			       api == KVM_API_VERSION ? "ok" : "unsupported");
		n = json_array_size(jcaps);
		for (size_t i = 0; i < n; i++) {
			json_t *c = json_array_get(jcaps, i);
			printf("%-30s %s%s\n", json_string_value(json_object_get(c, "name")),
			       json_is_true(json_object_get(c, "ok")) ? "ok" : "missing",
			       json_is_true(json_object_get(c, "required")) ? "" : " (optional)");
		}
		if (fd >= 0)
			printf("max vCPUs: %d (recommended %d)\n", max_vcpus, rec_vcpus);
		printf("virtualization: %s\n",
		       hw ? "hardware (VT-x/AMD-V)"
			  : nested ? "software-assisted nested hypervisor (no VT-x/AMD-V visible)"
				   : "none visible");
		if (warning)
			printf("warning: %s\n", warning);
		printf("result: %s\n", ok ? "cloison can run on this host"
					  : "cloison cannot run on this host");
		json_decref(jcaps);
	}
	json_decref(root);
	if (fd >= 0)
		close(fd);
	return ok ? 0 : EXIT_VMM;
}

/* ---- running -------------------------------------------------------- */

/* Termination signals are caught from the very start, by a handler that
 * writes the signal number to a pipe the event loop reads (async-signal
 * safe, unlike asking the VM to stop). Being caught rather than blocked,
 * they also interrupt a set-up step that blocks (open() of a FIFO named as
 * --serial file:PATH): the step fails with EINTR and the worker exits. The
 * handler needs these two process-wide values; nothing else does. */
static volatile sig_atomic_t stop_signal;
static int signal_pipe_w = -1;

static void on_stop_signal(int sig)
{
	unsigned char b = (unsigned char)sig;
	int saved = errno;

	stop_signal = sig;
	if (signal_pipe_w >= 0 && write(signal_pipe_w, &b, 1) < 0) {
		/* the pipe is full: a stop is already on its way */
	}
	errno = saved;
}

static const int stop_signals[] = { SIGTERM, SIGINT, SIGHUP };

/* Installs on_stop_signal (no SA_RESTART) and creates the pipe; *read_fd
 * gets its read end. 0 or -errno. */
static int catch_stop_signals(int *read_fd)
{
	struct sigaction sa;
	int p[2];

	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	*read_fd = p[0];
	signal_pipe_w = p[1];
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	for (unsigned i = 0; i < ARRAY_SIZE(stop_signals); i++)
		if (sigaction(stop_signals[i], &sa, NULL) < 0)
			return -errno;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

/* Blocks (or unblocks) the stop signals in the calling thread; threads
 * created meanwhile inherit the mask, so only the main thread takes them. */
static void mask_stop_signals(int how)
{
	sigset_t set;

	sigemptyset(&set);
	for (unsigned i = 0; i < ARRAY_SIZE(stop_signals); i++)
		sigaddset(&set, stop_signals[i]);
	pthread_sigmask(how, &set, NULL);
}

struct signal_watch {
	struct vm *vm;
	int fd;
};

static void on_signal(void *opaque, uint32_t events)
{
	struct signal_watch *w = opaque;
	unsigned char b;
	char detail[64];

	(void)events;
	if (read(w->fd, &b, 1) != 1)
		return;
	snprintf(detail, sizeof(detail), "stopped by signal %s", strsignal(b));
	vm_request_stop(w->vm, VM_STOP_VMM_ERROR, detail);
}

/* Refuses a kernel or initrd that is not a regular file before vm.c maps
 * it: opened O_NONBLOCK so that a FIFO cannot block the open. Usage error
 * (-EINVAL) with the reason on stderr, or 0. */
static int check_boot_file(const char *opt, const char *what, const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return usage_error("cannot open the %s '%s': %s", what, path, strerror(errno));
	if (fstat(fd, &st) < 0)
		ret = usage_error("cannot stat the %s '%s': %s", what, path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		ret = usage_error("%s %s is %s, not a regular file", opt, path,
				  S_ISFIFO(st.st_mode)  ? "a FIFO"
				  : S_ISDIR(st.st_mode) ? "a directory"
				  : S_ISCHR(st.st_mode) ? "a character device"
				  : S_ISBLK(st.st_mode) ? "a block device"
				  : S_ISSOCK(st.st_mode) ? "a socket"
							 : "a special file");
	close(fd);
	return ret;
}

static int write_pidfile(const char *path)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());

	return atomic_write_file(path, buf, (size_t)n, 0644);
}

/* path made absolute against the working directory, symbolic links left
 * as they are (the jail mounts the file under the name vm.c opens). The
 * result lives until the process exits; NULL with errno on failure. */
static const char *absolute_path(const char *path)
{
	char cwd[PATH_MAX], *out;

	if (path[0] == '/')
		return path;
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	if (asprintf(&out, "%s/%s", cwd, path) < 0)
		return NULL;
	return out;
}

static int setup_failed(const char *err, int ret)
{
	if (stop_signal)
		fprintf(stderr, "cloison-vmm: error: stopped by signal %s during set-up\n",
			strsignal(stop_signal));
	else
		fprintf(stderr, "cloison-vmm: error: %s\n", err[0] ? err : strerror(-ret));
	return EXIT_VMM;
}

/* When main() began: restore timing. */
static uint64_t start_ns;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int run_vm(struct options *o)
{
	char err[1024] = "";
	struct vm *vm = NULL;
	struct signal_watch sigw = { .fd = -1 };
	int ret, status, ready_fd = -1;

	if (o->control) {
		ret = control_check_path(o->control, err, sizeof(err));
		if (ret) {
			fprintf(stderr, "cloison-vmm: error: %s\n", err);
			return ret == -EINVAL ? EXIT_USAGE : EXIT_VMM;
		}
	}
	if (check_boot_file("--kernel", "kernel", o->vm.kernel) ||
	    (o->vm.initrd && check_boot_file("--initrd", "initrd", o->vm.initrd)))
		return EXIT_USAGE;
	for (unsigned i = 0; i < o->ncgroups; i++) {
		char path[PATH_MAX];
		int fd = -1;
		bool ok = snprintf(path, sizeof(path), "%s/cgroup.procs", o->cgroups[i]) <
				  (int)sizeof(path) &&
			  (fd = open(path, O_WRONLY | O_CLOEXEC)) >= 0 && write(fd, "0", 1) == 1;
		int e = errno;
		if (fd >= 0)
			close(fd);
		if (!ok) {
			fprintf(stderr, "cloison-vmm: error: --cgroup %s: cannot join it (%s): the "
				"directory must be a cgroup the caller may move processes into\n",
				o->cgroups[i], strerror(e));
			return EXIT_USAGE;
		}
	}
	if (o->oom_score_adj >= 0) {
		char v[16];
		int n = snprintf(v, sizeof(v), "%d", o->oom_score_adj);
		int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, v, (size_t)n) != n)
			fprintf(stderr, "cloison-vmm: warning: --oom-score-adj %d: %s\n",
				o->oom_score_adj, strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	if (o->no_sandbox)
		fprintf(stderr, "cloison-vmm: WARNING: --no-sandbox: this worker runs as uid %d with "
			"every capability and system call; a guest that breaks a device model owns "
			"the host\n", (int)getuid());
	if (o->jail) {
		pid_t pid = jail_fork(&ready_fd, err, sizeof(err));
		if (pid < 0) {
			fprintf(stderr, "cloison-vmm: error: %s\n", err);
			return EXIT_VMM;
		}
		if (pid > 0) {
			const char *sockets[3];
			unsigned n = 0;
			if (o->control)
				sockets[n++] = o->control;
			if (!strncmp(o->serial, "unix:", 5))
				sockets[n++] = o->serial + 5;
			if (o->vm.console && !strncmp(o->vm.console, "unix:", 5))
				sockets[n++] = o->vm.console + 5;
			return jail_supervise(pid, ready_fd, o->pidfile, sockets, n);
		}
		/* A reset reopens the kernel and initrd by name after the
		 * pivot, where the old working directory is gone. */
		o->vm.kernel = o->jail_cfg.keep[o->jail_cfg.nkeep++] = absolute_path(o->vm.kernel);
		if (o->vm.initrd)
			o->vm.initrd = o->jail_cfg.keep[o->jail_cfg.nkeep++] =
				absolute_path(o->vm.initrd);
		if (!o->vm.kernel || (o->jail_cfg.nkeep == 2 && !o->vm.initrd)) {
			fprintf(stderr, "cloison-vmm: error: --jail: %s\n", strerror(errno));
			return EXIT_VMM;
		}
		o->jail_cfg.ncpus = o->vm.ncpus;
		o->vm.jail_dir = o->jail_cfg.dir;
		o->jail_cfg.sync_fd = ready_fd;
		o->vm.host_pid = jail_host_pid;
	}
	/* jansson seeds its hash function on first use, from /dev/urandom,
	 * which the jail has not: seed it now, with one getrandom() instead
	 * of its open, read and close. */
	{
		size_t seed = 0;

		if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
			seed = 0; /* jansson's own way, then */
		json_object_seed(seed);
	}
	ret = catch_stop_signals(&sigw.fd);
	if (ret) {
		fprintf(stderr, "cloison-vmm: error: catching signals: %s\n", strerror(-ret));
		return EXIT_VMM;
	}

	ret = vm_create(&o->vm, &vm, err, sizeof(err));
	if (ret) {
		status = ret == -EINVAL && !stop_signal ? EXIT_USAGE : setup_failed(err, ret);
		if (status == EXIT_USAGE)
			fprintf(stderr, "cloison-vmm: error: %s\n", err);
		goto out;
	}
	sigw.vm = vm;
	ret = evloop_add_fd(vm->loop, sigw.fd, EPOLLIN, on_signal, &sigw);
	if (!ret)
		ret = chardev_create(o->serial, vm, &vm->chardev, err, sizeof(err));
	if (!ret && o->control)
		ret = control_create(o->control, vm, &vm->control, err, sizeof(err));
	if (!ret && o->jail)
		ret = jail_enter(&o->jail_cfg, err, sizeof(err));
	if (ret) {
		status = setup_failed(err, ret);
		goto out;
	}
	/* The threads vm_start creates inherit a mask without the stop
	 * signals, so the main thread takes them. */
	mask_stop_signals(SIG_BLOCK);
	ret = vm_start(vm);
	mask_stop_signals(SIG_UNBLOCK);
	if (ret) {
		fprintf(stderr, "cloison-vmm: error: starting the VM: %s\n", strerror(-ret));
		status = EXIT_VMM;
		goto out;
	}
	/* how long a restore took to a running guest (bench/state.py reads it) */
	if (o->vm.restore && !o->vm.start_paused)
		log_info("restored: the guest runs %.2f ms after the worker's start (%s memory)",
			 (double)(mono_ns() - start_ns) / 1e6, o->vm.restore_eager ? "eager" : "lazy");
	if (seccomp_thread_enter(SECCOMP_THREAD_MAIN)) {
		vm_request_stop(vm, VM_STOP_VMM_ERROR, "cannot install the main thread's filter");
	} else if (o->jail) {
		jail_report_running(ready_fd);
		ready_fd = -1;
	} else if (o->pidfile) {
		ret = write_pidfile(o->pidfile);
		if (ret) {
			fprintf(stderr, "cloison-vmm: error: --pidfile %s: %s\n", o->pidfile,
				strerror(-ret));
			status = EXIT_VMM;
			goto out;
		}
	}
	status = vm_run(vm);
out:
	vm_destroy(vm);
	if (o->pidfile && !o->jail && status != EXIT_USAGE)
		unlink(o->pidfile);
	return status;
}

int main(int argc, char **argv)
{
	struct options o;

	start_ns = mono_ns();
	log_init("cloison-vmm", LOG_INFO);
	if (parse_options(argc, argv, &o))
		return EXIT_USAGE;
	if (o.help) {
		usage(stdout);
		return 0;
	}
	if (o.version) {
		printf("cloison-vmm %s\n", CLOISON_VERSION);
		return 0;
	}
	if (o.check_host)
		return check_host(o.json);
	return run_vm(&o);
}
