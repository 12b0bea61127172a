/* virtio-rng: entropy from getrandom(). */
#ifndef CLOISON_VMM_VIRTIO_RNG_H
#define CLOISON_VMM_VIRTIO_RNG_H

#include <stddef.h>

struct vm;
struct virtio_dev;

/* Attaches a virtio-rng function. 0 or -errno with err. */
int virtio_rng_create(struct vm *vm, struct virtio_dev **out, char *err, size_t errlen);

#endif
