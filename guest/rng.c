/* A ring-3 virtio-rng driver: `rng` reads entropy and checks it is not
 * obviously broken (all one value, or few distinct bytes). */
#include "virtio.h"

#define RNG_BYTES 4096

static struct virtio_dev *rng_dev(struct guest *g, unsigned n)
{
	struct virtio_dev *d;

	if (n == 0 && g->rng)
		return g->rng;
	d = mm_alloc(g, sizeof(*d), 64);
	if (!d || virtio_open(g, VIRTIO_ID_RNG, n, 0, 1, 0, d))
		return NULL;
	virtio_ready(d);
	if (n == 0)
		g->rng = d;
	return d;
}

int rng_read(struct guest *g, unsigned n, void *buf, uint32_t len, uint32_t *got)
{
	struct virtio_dev *d = rng_dev(g, n);
	uint8_t *p = buf;
	uint64_t deadline;

	*got = 0;
	if (!d)
		return -1;
	deadline = rdtsc() + 2 * g->tsc_hz;
	while (*got < len) {
		struct virtio_buf b = { (uint64_t)(uintptr_t)(p + *got), len - *got, true };
		uint32_t used = 0;

		if (virtq_add(&d->vq[0], &b, 1) < 0)
			return -1;
		virtq_kick(&d->vq[0]);
		while (virtq_get(&d->vq[0], &used) < 0) {
			if (rdtsc() > deadline)
				return -1; /* the device stopped answering */
			cpu_relax();
		}
		if (used > len - *got)
			return -1;
		*got += used;
	}
	return 0;
}

int rng_run(struct guest *g)
{
	uint8_t *buf = mm_alloc(g, RNG_BYTES, PAGE_SIZE);
	bool seen[256] = { false };
	unsigned distinct = 0;
	uint32_t got = 0;
	char hex[33];

	if (!buf)
		return -1;
	if (rng_read(g, 0, buf, RNG_BYTES, &got)) {
		out("RESULT rng_bytes=%u\n", got);
		out("RESULT rng_ok=0\n");
		return 0;
	}
	for (uint32_t i = 0; i < got; i++) {
		if (!seen[buf[i]])
			distinct++;
		seen[buf[i]] = true;
	}
	for (int i = 0; i < 16; i++)
		fmt(hex + 2 * i, 3, "%02x", buf[i]);
	out("RESULT rng_bytes=%u\n", got);
	out("RESULT rng_distinct=%u\n", distinct);
	out("RESULT rng_sample=%s\n", hex);
	out("RESULT rng_ok=%d\n", distinct > 200 ? 1 : 0);
	return 0;
}
