/* Tap devices (see tap.h). */
#include "net/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"

static int setup_fd(int fd, int vnet_hdr_len)
{
	if (ioctl(fd, TUNSETVNETHDRSZ, &vnet_hdr_len) < 0)
		return -errno;
	/* Nothing offloaded until the guest says what it accepts. */
	if (ioctl(fd, TUNSETOFFLOAD, 0UL) < 0)
		return -errno;
	return fd_set_nonblock(fd, true);
}

int tap_open(const char *name, int vnet_hdr_len, char ifname[IFNAMSIZ])
{
	struct ifreq ifr;
	int fd, ret;

	if (strlen(name) >= IFNAMSIZ)
		return -ENAMETOOLONG;
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	memcpy(ifr.ifr_name, name, strlen(name));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		ret = -errno;
		goto err;
	}
	ret = setup_fd(fd, vnet_hdr_len);
	if (ret)
		goto err;
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	ifname[IFNAMSIZ - 1] = '\0';
	return fd;
err:
	close(fd);
	return ret;
}

int tap_create_persistent(const char *name, int vnet_hdr_len, char ifname[IFNAMSIZ])
{
	int fd, ret;

	if (if_nametoindex(name))
		return -EEXIST;
	fd = tap_open(name, vnet_hdr_len, ifname);
	if (fd < 0)
		return fd;
	ret = tap_set_persist(fd, true);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

int tap_set_persist(int fd, bool on)
{
	return ioctl(fd, TUNSETPERSIST, on ? 1UL : 0UL) < 0 ? -errno : 0;
}

int tap_adopt_fd(int fd, int vnet_hdr_len, char ifname[IFNAMSIZ])
{
	struct ifreq ifr;
	int ret;

	memset(&ifr, 0, sizeof(ifr));
	if (ioctl(fd, TUNGETIFF, &ifr) < 0)
		return errno == EBADF ? -EBADF : -ENOTTY;
	if ((ifr.ifr_flags & (IFF_TAP | IFF_TUN)) != IFF_TAP || !(ifr.ifr_flags & IFF_NO_PI) ||
	    !(ifr.ifr_flags & IFF_VNET_HDR))
		return -ENOTTY;
	ret = setup_fd(fd, vnet_hdr_len);
	if (ret)
		return ret;
	ret = fd_set_cloexec(fd, true);
	if (ret)
		return ret;
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	ifname[IFNAMSIZ - 1] = '\0';
	return 0;
}

int tap_set_offload(int fd, unsigned offloads)
{
	return ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0 ? -errno : 0;
}

int tap_set_up(const char *ifname, bool up)
{
	struct ifreq ifr;
	int s, ret = 0;

	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		ret = -errno;
		goto out;
	}
	if (up)
		ifr.ifr_flags |= IFF_UP;
	else
		ifr.ifr_flags &= ~IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		ret = -errno;
out:
	close(s);
	return ret;
}
