/* virtio-rng (virtio 1.x 5.4): one request queue whose writable buffers
 * we fill from getrandom(). The kernel's pool does not block once
 * initialized; a guest asking for megabytes is served in slices so one
 * greedy request cannot hold the event loop. */
#include "vmm/virtio/rng.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"
#include "vmm/virtio/virtio.h"

#define RNG_QUEUE_SIZE 64
#define RNG_MAX_PER_BUFFER (64 * 1024) /* bytes given per request at most */
#define RNG_BUDGET 64		       /* requests per kick before yielding */

struct rng {
	struct virtio_dev vdev;
	struct virtq_elem *elem;
};

static uint32_t fill(const struct virtq_elem *e)
{
	uint32_t done = 0;

	for (unsigned i = e->nout; i < (unsigned)e->nout + e->nin && done < RNG_MAX_PER_BUFFER;
	     i++) {
		size_t want = e->iov[i].iov_len;
		ssize_t got;

		if (want > RNG_MAX_PER_BUFFER - done)
			want = RNG_MAX_PER_BUFFER - done;
		got = getrandom(e->iov[i].iov_base, want, GRND_NONBLOCK);
		if (got <= 0)
			break;
		done += (uint32_t)got;
		if ((size_t)got < want)
			break;
	}
	return done;
}

static void rng_queue_notify(struct virtio_dev *vdev, unsigned qidx)
{
	struct rng *r = vdev->opaque;
	struct virtq *vq = virtio_dev_vq(vdev, 0);
	unsigned done = 0;

	while (done < RNG_BUDGET && virtio_dev_active(vdev)) {
		int ret = virtq_pop(vq, r->elem);

		if (ret < 0) {
			virtio_dev_fail(vdev, "request queue: %s", vq->error);
			break;
		}
		if (ret == 0)
			break;
		virtq_push(vq, r->elem->head, fill(r->elem));
		done++;
	}
	if (done)
		virtio_dev_queue_done(vdev, 0);
	/* More waiting: come back through the kick eventfd after others ran. */
	if (done == RNG_BUDGET && virtq_has_avail(vq))
		virtio_dev_kick(vdev, 0);
}

static void rng_destroy(struct virtio_dev *vdev)
{
	struct rng *r = vdev->opaque;

	free(r->elem);
	free(r);
}

static const struct virtio_dev_ops rng_ops = {
	.queue_notify = rng_queue_notify,
	.destroy = rng_destroy,
};

int virtio_rng_create(struct vm *vm, struct virtio_dev **out, char *err, size_t errlen)
{
	struct virtio_dev_params p = {
		.name = "virtio-rng0",
		.device_id = VIRTIO_ID_RNG,
		.class_code = 0x00ff00, /* unclassified */
		.nqueues = 1,
		.queue_size = RNG_QUEUE_SIZE,
		.ops = &rng_ops,
	};
	struct rng *r;
	int ret;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->elem = virtq_elem_alloc(RNG_QUEUE_SIZE);
	if (!r->elem) {
		free(r);
		return -ENOMEM;
	}
	p.opaque = r;
	ret = virtio_dev_init(&r->vdev, vm, &p);
	if (ret) {
		snprintf(err, errlen, "virtio-rng: cannot create the PCI function: %s",
			 strerror(-ret));
		free(r->elem);
		free(r);
		return ret;
	}
	ret = virtio_dev_attach(&r->vdev);
	if (ret) {
		snprintf(err, errlen, "virtio-rng: cannot attach: %s", strerror(-ret));
		virtio_dev_destroy(&r->vdev);
		return ret;
	}
	*out = &r->vdev;
	return 0;
}
