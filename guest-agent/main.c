/* cloison-agent: the guest side of cloison's integration services for
 * Linux (docs/agent.md). Listens on AF_VSOCK port 5300 and serves the
 * host's connections one at a time (a new one is taken once the old one
 * ends: the host connects again after a restore).
 *
 *   cloison-agent [--port N] [--kvp-dir DIR] [--freeze MOUNTPOINT]...
 *                 [--shutdown-command CMD] [--fd N]
 *
 * --fd N serves an already connected socket (no vsock), once. */
#include <errno.h>
#include <getopt.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

static int set_clock(void *opaque, uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	(void)opaque;
	return clock_settime(CLOCK_REALTIME, &ts) ? -errno : 0;
}

static void do_shutdown(void *opaque)
{
	const char *cmd = opaque;

	fprintf(stderr, "cloison-agent: the host asks for a shutdown: %s\n", cmd);
	if (system(cmd) != 0)
		fprintf(stderr, "cloison-agent: '%s' failed\n", cmd);
}

static int usage(FILE *f, int status)
{
	fprintf(f, "usage: cloison-agent [--port N] [--kvp-dir DIR] [--freeze MOUNTPOINT]...\n"
		   "                     [--shutdown-command CMD] [--fd N]\n"
		   "Serves cloison's integration services over vsock (docs/agent.md).\n");
	return status;
}

static int listen_vsock(unsigned port)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
				  .svm_port = port };
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4)) {
		fprintf(stderr, "cloison-agent: vsock port %u: %s (is this a cloison guest with "
			"virtio-vsock?)\n", port, strerror(errno));
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "port", required_argument, NULL, 'p' },
		{ "kvp-dir", required_argument, NULL, 'k' },
		{ "freeze", required_argument, NULL, 'z' },
		{ "shutdown-command", required_argument, NULL, 's' },
		{ "fd", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct agent_config cfg = { .kvp_dir = "/var/lib/cloison-agent/kvp", .freeze_all = true };
	char *shutdown_cmd = "systemctl poweroff";
	unsigned port = AGENT_PORT, nfreeze = 0;
	int o, fd = -1, lfd;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end;
		unsigned long v;

		switch (o) {
		case 'p':
		case 'f':
			v = strtoul(optarg, &end, 10);
			if (*end || !*optarg || v > (o == 'p' ? 0xffffffffUL : 1024)) {
				fprintf(stderr, "cloison-agent: --%s %s: not a number\n",
					o == 'p' ? "port" : "fd", optarg);
				return usage(stderr, 2);
			}
			if (o == 'p')
				port = (unsigned)v;
			else
				fd = (int)v;
			break;
		case 'k':
			cfg.kvp_dir = optarg;
			break;
		case 'z':
			if (nfreeze == AGENT_MAX_FREEZE - 1) {
				fprintf(stderr, "cloison-agent: at most %d --freeze\n",
					AGENT_MAX_FREEZE - 1);
				return 2;
			}
			cfg.freeze[nfreeze++] = optarg;
			break;
		case 's':
			shutdown_cmd = optarg;
			break;
		case 'h':
			return usage(stdout, 0);
		default:
			return usage(stderr, 2);
		}
	}
	if (optind != argc)
		return usage(stderr, 2);
	cfg.ops = (struct agent_ops){ set_clock, do_shutdown, shutdown_cmd };
	mkdir(cfg.kvp_dir, 0755);
	if (fd >= 0)
		return agent_serve(&cfg, fd) < 0 ? 1 : 0;
	lfd = listen_vsock(port);
	if (lfd < 0)
		return 1;
	for (;;) {
		int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0)
			continue;
		o = agent_serve(&cfg, c);
		close(c);
		if (o == 1)
			return 0; /* shutting down */
	}
}
