/* The MAC address pool. Like Hyper-V's 00:15:5D range, cloison hands out
 * automatic MACs from one locally administered block, 02:c1:05:xx:xx:xx,
 * picking at random and skipping addresses a VM of this host already has. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "daemon/daemon.h"

int macpool_parse(const char *s, char mac[18])
{
	unsigned b[6];
	char tail;

	if (strlen(s) != 17)
		return -EINVAL;
	for (int i = 2; i < 17; i += 3)
		if (s[i] != ':' && s[i] != '-')
			return -EINVAL;
	if (sscanf(s, "%2x%*c%2x%*c%2x%*c%2x%*c%2x%*c%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4],
		   &b[5], &tail) != 6)
		return -EINVAL;
	if (b[0] & 1)
		return -EINVAL; /* multicast */
	if (!(b[0] | b[1] | b[2] | b[3] | b[4] | b[5]))
		return -EINVAL;
	snprintf(mac, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0] & 0xffu, b[1] & 0xffu, b[2] & 0xffu,
		 b[3] & 0xffu, b[4] & 0xffu, b[5] & 0xffu);
	return 0;
}

static bool mac_in_use(struct daemon *d, const char *mac)
{
	for (struct vm *vm = d->vms; vm; vm = vm->next)
		for (unsigned i = 0; i < vm->cfg.n_nics; i++)
			if (!strcmp(vm->cfg.nics[i].mac, mac))
				return true;
	return false;
}

int macpool_allocate(struct daemon *d, char mac[18])
{
	for (int attempt = 0; attempt < 1000; attempt++) {
		unsigned char r[3];
		if (getrandom(r, sizeof(r), 0) != sizeof(r))
			return -EIO;
		snprintf(mac, 18, "02:c1:05:%02x:%02x:%02x", r[0], r[1], r[2]);
		if (!mac_in_use(d, mac))
			return 0;
	}
	return -ENOSPC;
}
