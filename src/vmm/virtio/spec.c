/* Parsing of the --disk and --net specs (devices.h's checks and the
 * devices' own parsers). Kept apart from the devices so the worker can
 * check its options without linking the device model. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "common/util.h"
#include "vmm/virtio/blk.h"
#include "vmm/virtio/console.h"
#include "vmm/virtio/devices.h"
#include "vmm/virtio/net.h"

#define BLK_ID_BYTES 20

int blk_spec_parse(const char *spec, struct blk_spec *out, char *err, size_t errlen)
{
	char buf[4200], *save = NULL, *tok;

	memset(out, 0, sizeof(*out));
	if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf)) {
		snprintf(err, errlen, "--disk: the spec is too long");
		return -EINVAL;
	}
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strncmp(tok, "path=", 5)) {
			snprintf(out->path, sizeof(out->path), "%s", tok + 5);
		} else if (!strcmp(tok, "readonly") || !strcmp(tok, "ro")) {
			out->read_only = true;
		} else if (!strcmp(tok, "direct")) {
			out->direct = true;
		} else if (!strncmp(tok, "serial=", 7)) {
			if (strlen(tok + 7) > BLK_ID_BYTES) {
				snprintf(err, errlen, "--disk: serial '%s' is longer than %d bytes",
					 tok + 7, BLK_ID_BYTES);
				return -EINVAL;
			}
			snprintf(out->serial, sizeof(out->serial), "%s", tok + 7);
		} else {
			snprintf(err, errlen,
				 "--disk: unknown option '%s'; expected "
				 "path=FILE[,readonly][,serial=STR][,direct]",
				 tok);
			return -EINVAL;
		}
	}
	if (!out->path[0]) {
		snprintf(err, errlen,
			 "--disk: missing path=FILE (expected path=FILE[,readonly][,serial=STR][,direct])");
		return -EINVAL;
	}
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char end;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &end) != 6 || strlen(s) != 17)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return (mac[0] & 1) ? -EINVAL : 0; /* a multicast address cannot be a NIC's */
}

int net_spec_parse(const char *spec, struct net_spec *out, char *err, size_t errlen)
{
	static const char usage[] = "expected tap=NAME|fd=N[,mac=XX:XX:XX:XX:XX:XX]";
	char buf[256], *save = NULL, *tok;
	uint64_t fd;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf)) {
		snprintf(err, errlen, "--net: the spec is too long; %s", usage);
		return -EINVAL;
	}
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (!strncmp(tok, "tap=", 4)) {
			if (!tok[4] || strlen(tok + 4) >= IFNAMSIZ) {
				snprintf(err, errlen, "--net: tap name '%s' must be 1 to %d characters",
					 tok + 4, IFNAMSIZ - 1);
				return -EINVAL;
			}
			snprintf(out->tap, sizeof(out->tap), "%s", tok + 4);
		} else if (!strncmp(tok, "fd=", 3)) {
			if (parse_u64(tok + 3, &fd) || fd > 65535) {
				snprintf(err, errlen, "--net: fd '%s' is not a file descriptor number",
					 tok + 3);
				return -EINVAL;
			}
			out->fd = (int)fd;
		} else if (!strncmp(tok, "mac=", 4)) {
			if (parse_mac(tok + 4, out->mac)) {
				snprintf(err, errlen,
					 "--net: '%s' is not a unicast MAC address (XX:XX:XX:XX:XX:XX)",
					 tok + 4);
				return -EINVAL;
			}
			out->has_mac = true;
		} else {
			snprintf(err, errlen, "--net: unknown option '%s'; %s", tok, usage);
			return -EINVAL;
		}
	}
	if ((out->tap[0] != '\0') == (out->fd >= 0)) {
		snprintf(err, errlen, "--net: give exactly one of tap=NAME and fd=N; %s", usage);
		return -EINVAL;
	}
	return 0;
}

int virtio_disk_spec_check(const char *spec, char *err, size_t errlen)
{
	struct blk_spec s;

	return blk_spec_parse(spec, &s, err, errlen);
}

int virtio_net_spec_check(const char *spec, char *err, size_t errlen)
{
	struct net_spec s;

	return net_spec_parse(spec, &s, err, errlen);
}

int console_spec_parse(const char *spec, struct console_spec *out, char *err, size_t errlen)
{
	const char *path;

	memset(out, 0, sizeof(*out));
	if (!strncmp(spec, "unix:", 5)) {
		out->kind = CONSOLE_UNIX;
		path = spec + 5;
	} else if (!strncmp(spec, "file:", 5)) {
		out->kind = CONSOLE_FILE;
		path = spec + 5;
	} else {
		snprintf(err, errlen, "--console: '%s': expected unix:PATH or file:PATH", spec);
		return -EINVAL;
	}
	if (!*path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "--console: the path must be 1 to %zu characters",
			 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return -EINVAL;
	}
	snprintf(out->path, sizeof(out->path), "%s", path);
	return 0;
}

int virtio_console_spec_check(const char *spec, char *err, size_t errlen)
{
	struct console_spec s;

	return console_spec_parse(spec, &s, err, errlen);
}
