/* The test guest's SHA-256 (guest/sha256.c), built hosted: its include of
 * the guest's virtio.h is satisfied by hosted/virtio.h. */
#include "hosted/virtio.h"
#define GUEST_VIRTIO_H
#include "../guest/sha256.c"
