/* Attaching virtio devices to a VM from the worker's command line. Each
 * call parses its option string, creates the device, and puts it on the
 * VM's PCI bus. Return 0; -EINVAL for a malformed spec (usage error: err
 * says what is wrong and what is expected); other -errno for failures to
 * set up (err names the file/tap and the cause). */
#ifndef CLOISON_VMM_VIRTIO_DEVICES_H
#define CLOISON_VMM_VIRTIO_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;

/* Checks a spec without a VM, so main() can report usage errors before
 * starting anything: 0 or -EINVAL with err filled. */
int virtio_disk_spec_check(const char *spec, char *err, size_t errlen);
int virtio_net_spec_check(const char *spec, char *err, size_t errlen);

/* "path=FILE[,readonly][,serial=STR][,direct]" */
int virtio_add_disk(struct vm *vm, const char *spec, char *err, size_t errlen);
/* Disk index (in --disk order), the guest running, its requests answered
 * first. BLK_CHAIN_SWITCH: it goes on with the chain of the n files
 * paths/fds, top first (a new differencing child of what it had, or what a
 * merge left); the same size, VHDX and VHD only. BLK_CHAIN_SHARE: its image
 * is shared for a child to be made of it (disk_share), before a switch.
 * 0 or -errno with err filled; on failure the disk is as it was. */
enum blk_chain_op { BLK_CHAIN_SHARE, BLK_CHAIN_SWITCH };
int virtio_disk_chain(struct vm *vm, unsigned index, enum blk_chain_op op,
		      const char *const *paths, const int *fds, unsigned n, char *err, size_t errlen);
/* "tap=NAME|fd=N[,mac=XX:XX:XX:XX:XX:XX]" */
int virtio_add_net(struct vm *vm, const char *spec, char *err, size_t errlen);
/* entropy from getrandom() */
int virtio_add_rng(struct vm *vm, char *err, size_t errlen);

/* A virtio-console (one port) whose host side is "unix:PATH" (the worker
 * listens; one client at a time gets the guest's output and its input
 * goes to the guest) or "file:PATH" (output appended). Linux calls it
 * /dev/hvc0. Added by the virtio part for a --console option. */
int virtio_console_spec_check(const char *spec, char *err, size_t errlen);
int virtio_add_console(struct vm *vm, const char *spec, char *err, size_t errlen);

/* A virtio-vsock whose host side is unix sockets (vsock.c):
 * "cid=N,socket=PATH". One per VM. */
int virtio_vsock_spec_check(const char *spec, char *err, size_t errlen);
int virtio_add_vsock(struct vm *vm, const char *spec, char *err, size_t errlen);

/* A virtio-balloon (balloon.c), dynamic memory: "on" or
 * "assigned=SIZE" (the guest starts with SIZE of its RAM, the balloon
 * holding the rest). One per VM. virtio_devices_balloon: that device (for
 * the control socket's "balloon"), or NULL. */
int virtio_balloon_spec_check(const char *spec, char *err, size_t errlen);
int virtio_add_balloon(struct vm *vm, const char *spec, uint64_t memory, char *err,
		       size_t errlen);
struct virtio_dev;
struct virtio_dev *virtio_devices_balloon(struct vm *vm);

/* The link of the virtio-net on tap TAP goes up or down
 * (virtio_net_set_link). 0, -ENODEV (no NIC on that tap) or -EPIPE. */
int virtio_devices_set_link(struct vm *vm, const char *tap, bool up);

/* Quiesces every virtio device (pause) and restarts them (resume); reset
 * returns them all to the just-created state (in-place reboot). */
void virtio_devices_pause(struct vm *vm);
void virtio_devices_resume(struct vm *vm);
void virtio_devices_reset(struct vm *vm);
void virtio_devices_destroy(struct vm *vm);

/* Every virtio device's transport record (the VM is paused), and their
 * restore into the same devices of a new VM; restore stops at the first
 * device whose record does not fit (err says which). 0 or -errno. */
struct state_writer;
struct state_file;
void virtio_devices_save(struct vm *vm, struct state_writer *w);
int virtio_devices_restore(struct vm *vm, const struct state_file *f, char *err, size_t errlen);

#endif
