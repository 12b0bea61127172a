/* virtio-vsock in user space, host side on unix sockets (Firecracker's
 * "hybrid vsock"); see vsock.c. */
#ifndef CLOISON_VMM_VIRTIO_VSOCK_H
#define CLOISON_VMM_VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct virtio_dev;
struct state_writer;
struct state_file;

/* The guest's CID range: 0-2 are the hypervisor, local and host, and
 * 0xffffffff is VMADDR_CID_ANY. */
#define VSOCK_CID_MIN 3u
#define VSOCK_CID_MAX 0xfffffffeu
/* PATH_<port> must fit sun_path with the longest port (10 digits). */
#define VSOCK_PATH_MAX 96

struct vsock_spec {
	uint32_t cid;
	char path[VSOCK_PATH_MAX + 1];
	bool host_only; /* the guest's connections to the host are refused (RST) */
};

/* Parses "cid=N,socket=PATH[,host-only]". 0 or -EINVAL with err saying
 * what is wrong and what is expected. */
int vsock_spec_parse(const char *spec, struct vsock_spec *out, char *err, size_t errlen);

/* Listens on spec->path and attaches a virtio-vsock function. 0 or
 * -errno with err. */
int virtio_vsock_create(struct vm *vm, const struct vsock_spec *spec, struct virtio_dev **out,
			char *err, size_t errlen);

/* The device's own record (STATE_SECTION_VIRTIO_DEV, instance = PCI
 * slot): the guest CID. Connections are not saved: a restore closes
 * every host socket and tells the driver with a TRANSPORT_RESET event,
 * so the guest drops its connections and opens new ones. The device
 * must be paused for save. restore runs after virtio_dev_restore();
 * 0, or -EINVAL/-ENOENT with err. */
void virtio_vsock_save(struct virtio_dev *vdev, struct state_writer *w);
int virtio_vsock_restore(struct virtio_dev *vdev, const struct state_file *f, char *err,
			 size_t errlen);

#endif
