/* Tap devices for virtio-net: opened by name (needs CAP_NET_ADMIN) or
 * taken over as an inherited fd, always with IFF_NO_PI and IFF_VNET_HDR so
 * every frame carries a virtio-net header (checksum and GSO offloads). */
#ifndef CLOISON_NET_TAP_H
#define CLOISON_NET_TAP_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>

/* TUNSETOFFLOAD bits, what the tap may hand us (i.e. what the guest can
 * receive): checksum left partial, TCPv4/v6 segments, ECN, UDP frags. */
#define TAP_OFFLOAD_CSUM 0x01
#define TAP_OFFLOAD_TSO4 0x02
#define TAP_OFFLOAD_TSO6 0x04
#define TAP_OFFLOAD_TSO_ECN 0x08
#define TAP_OFFLOAD_UFO 0x10

/* Opens (or creates) tap NAME with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, sets
 * the header size to vnet_hdr_len and makes the fd non-blocking and
 * close-on-exec. Returns the fd or -errno; ifname gets the kernel's name. */
int tap_open(const char *name, int vnet_hdr_len, char ifname[IFNAMSIZ]);

/* Creates tap NAME (it must not exist) as tap_open() does and makes it
 * persistent, so it outlives fd and the worker it is handed to; remove it
 * with an RTM_DELLINK (rtnl_link_del) or tap_set_persist(fd, false). Returns
 * the fd or -errno (-EEXIST: a link of that name exists). */
int tap_create_persistent(const char *name, int vnet_hdr_len, char ifname[IFNAMSIZ]);

/* Sets or clears TUNSETPERSIST on an open tap. 0 or -errno. */
int tap_set_persist(int fd, bool on);

/* Checks that fd is a tap with IFF_VNET_HDR and no packet info (a tap
 * passed in by whoever started us), sets the header size and makes it
 * non-blocking. 0 or -errno (-ENOTTY: not such a tap; -EBADF: no such fd). */
int tap_adopt_fd(int fd, int vnet_hdr_len, char ifname[IFNAMSIZ]);

/* Tells the tap which offloads the guest accepts (TAP_OFFLOAD_*). */
int tap_set_offload(int fd, unsigned offloads);

/* Brings the interface up or down (needs CAP_NET_ADMIN). 0 or -errno. */
int tap_set_up(const char *ifname, bool up);

#endif
