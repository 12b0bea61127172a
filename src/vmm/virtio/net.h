/* virtio-net on a tap device. */
#ifndef CLOISON_VMM_VIRTIO_NET_H
#define CLOISON_VMM_VIRTIO_NET_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct virtio_dev;

struct net_spec {
	char tap[IFNAMSIZ]; /* open this tap by name, or */
	int fd;		    /* take over this tap fd (-1: none) */
	uint8_t mac[6];
	bool has_mac;
};

/* Parses "tap=NAME|fd=N[,mac=XX:XX:XX:XX:XX:XX]". 0 or -EINVAL with err. */
int net_spec_parse(const char *spec, struct net_spec *out, char *err, size_t errlen);

/* Opens the tap and attaches a virtio-net function. 0 or -errno with err. */
int virtio_net_create(struct vm *vm, const struct net_spec *spec, unsigned index,
		      struct virtio_dev **out, char *err, size_t errlen);

/* Sets or clears VIRTIO_NET_S_LINK_UP of vdev if it is the virtio-net on
 * tap TAP, and raises a config-change interrupt when it changed (the
 * daemon moves the tap between switches, or cuts it). 0; -ENODEV: not
 * that device; -EPIPE: up asked of a tap that is gone. */
int virtio_net_set_link(struct virtio_dev *vdev, const char *tap, bool up);

#endif
