/* virtio-balloon (virtio 1.x 5.5): dynamic memory's device.
 *
 * Queues, by the features the driver took: 0 inflate, 1 deflate, then the
 * statistics queue (STATS_VQ), then free page reporting (PAGE_REPORTING).
 * The host sets num_pages, how many 4 KiB pages the balloon should hold;
 * the driver inflates (sends page numbers it gives up) or deflates, and
 * writes `actual`. Every page given up, and every free range a reporting
 * driver sends, goes back to the host: its memfd range is punched (a lazy
 * restore's private mapping is dropped instead), so the worker's RSS
 * falls. A page the guest touches again reads as zeros, which is all a
 * driver may assume without PAGE_POISON.
 *
 * Guest input is untrusted: page numbers outside RAM are skipped,
 * reported ranges are trimmed to whole pages inside RAM, statistics
 * entries are read as bytes, and every queue works a budget per kick. */
#include "vmm/virtio/balloon.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/guest_mem.h"
#include "vmm/state/record.h"
#include "vmm/virtio/virtio.h"

#define BALLOON_F_STATS_VQ 1
#define BALLOON_F_DEFLATE_ON_OOM 2
#define BALLOON_F_PAGE_REPORTING 5

#define BALLOON_PAGE 4096ULL
#define BALLOON_QUEUE_SIZE 128
#define BALLOON_NQUEUES 4
#define BALLOON_BUDGET 64	   /* buffers per kick before yielding */
#define BALLOON_MAX_PFNS 4096	   /* page numbers read from one buffer */
#define BALLOON_MAX_STATS 64	   /* statistics entries read from one buffer */
#define BALLOON_STATE_VERSION 1

enum balloon_role { ROLE_NONE, ROLE_INFLATE, ROLE_DEFLATE, ROLE_STATS, ROLE_REPORT };

struct balloon {
	struct virtio_dev vdev;
	struct virtq_elem *elem;
	struct virtq_elem *stats_elem; /* the driver's statistics buffer we hold */
	bool stats_held;
	enum balloon_role role[BALLOON_NQUEUES];
	int stats_q; /* queue index of the statistics queue, -1 none */
	uint64_t ram;
	uint32_t num_pages; /* the target: pages the balloon should hold */
	uint32_t actual;    /* pages it holds, as the driver says */
	bool have_stats;
	uint64_t stats_time; /* now_ns() of the last statistics */
	uint32_t stats_present;
	uint64_t stats[BALLOON_S_NR];
	uint64_t reported, discarded;
};

static struct balloon *to_balloon(struct virtio_dev *vdev)
{
	return vdev->opaque;
}

int balloon_spec_parse(const char *spec, uint64_t ram, struct balloon_spec *s, char *err,
		       size_t errlen)
{
	uint64_t v;

	s->assigned = 0;
	if (!strcmp(spec, "on"))
		return 0;
	if (strncmp(spec, "assigned=", 9) || parse_size(spec + 9, MiB, &v)) {
		snprintf(err, errlen, "--balloon %s: expected \"on\" or \"assigned=SIZE\" (the "
			 "memory the guest starts with, e.g. assigned=512M)", spec);
		return -EINVAL;
	}
	if (v < MiB || (ram && v > ram)) {
		char have[32] = "";

		if (ram)
			snprintf(have, sizeof(have), ", %llu MiB", (unsigned long long)(ram / MiB));
		snprintf(err, errlen, "--balloon %s: the assigned memory must be 1 MiB to the "
			 "VM's memory (--memory%s)", spec, have);
		return -EINVAL;
	}
	s->assigned = v & ~(BALLOON_PAGE - 1);
	return 0;
}

/* ---- giving memory back ---------------------------------------------- */

/* Returns [gpa, gpa+len) of guest RAM to the host: whole pages of one
 * region. True when the host took them. */
static bool discard(struct balloon *b, uint64_t gpa, uint64_t len)
{
	const struct guest_mem *mem = b->vdev.mem;

	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		int ret;

		if (gpa < r->gpa || gpa - r->gpa >= r->size || len > r->size - (gpa - r->gpa))
			continue;
		if (mem->lazy)
			ret = madvise(r->hva + (gpa - r->gpa), len, MADV_DONTNEED);
		else
			ret = fallocate(mem->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)(r->memfd_off + (gpa - r->gpa)), (off_t)len);
		if (ret == 0)
			b->discarded += len;
		return ret == 0;
	}
	return false;
}

/* The same for a host address the queue code translated a guest buffer
 * to, trimmed inward to whole pages. True when anything was returned. */
static bool discard_hva(struct balloon *b, const void *base, size_t len)
{
	const struct guest_mem *mem = b->vdev.mem;
	const uint8_t *p = base;

	for (unsigned i = 0; i < mem->nregions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		uint64_t off, start, end;

		if (p < r->hva || (uint64_t)(p - r->hva) >= r->size ||
		    len > r->size - (uint64_t)(p - r->hva))
			continue;
		off = (uint64_t)(p - r->hva);
		start = ALIGN_UP(off, BALLOON_PAGE);
		end = (off + len) & ~(BALLOON_PAGE - 1);
		return end > start && discard(b, r->gpa + start, end - start);
	}
	return false;
}

/* Inflate: the buffer is le32 page numbers (4 KiB frames). Runs of
 * consecutive frames, up or down, are returned in one call. */
static void inflate(struct balloon *b, const struct virtq_elem *e)
{
	uint32_t pfns[256];
	uint64_t run = 0, run_len = 0;
	size_t total = e->out_len / 4, done = 0;

	if (total > BALLOON_MAX_PFNS)
		total = BALLOON_MAX_PFNS;
	while (done < total) {
		size_t n = total - done < 256 ? total - done : 256;

		n = iov_to_buf(e->iov, e->nout, done * 4, pfns, n * 4) / 4;
		if (!n)
			break;
		for (size_t i = 0; i < n; i++) {
			uint64_t gpa = (uint64_t)le32toh(pfns[i]) * BALLOON_PAGE;

			if (!guest_mem_range_ok(b->vdev.mem, gpa, BALLOON_PAGE))
				continue;
			if (run_len && gpa == run + run_len) {
				run_len += BALLOON_PAGE;
				continue;
			}
			if (run_len && gpa + BALLOON_PAGE == run) {
				run = gpa;
				run_len += BALLOON_PAGE;
				continue;
			}
			if (run_len)
				discard(b, run, run_len);
			run = gpa;
			run_len = BALLOON_PAGE;
		}
		done += n;
	}
	if (run_len)
		discard(b, run, run_len);
}

/* Free page reporting: the driver's writable segments are free ranges. */
static void report(struct balloon *b, const struct virtq_elem *e)
{
	for (unsigned i = e->nout; i < (unsigned)e->nout + e->nin; i++) {
		size_t len = e->iov[i].iov_len;

		if (discard_hva(b, e->iov[i].iov_base, len))
			b->reported += len & ~(BALLOON_PAGE - 1);
	}
}

/* Statistics: 10-byte entries, le16 tag and le64 value, packed. */
static void take_stats(struct balloon *b, const struct virtq_elem *e)
{
	size_t n = e->out_len / 10;

	if (n > BALLOON_MAX_STATS)
		n = BALLOON_MAX_STATS;
	for (size_t i = 0; i < n; i++) {
		uint8_t ent[10];
		uint16_t tag;
		uint64_t val;

		if (iov_to_buf(e->iov, e->nout, i * 10, ent, sizeof(ent)) != sizeof(ent))
			break;
		memcpy(&tag, ent, 2);
		memcpy(&val, ent + 2, 8);
		tag = le16toh(tag);
		if (tag >= BALLOON_S_NR)
			continue;
		b->stats[tag] = le64toh(val);
		b->stats_present |= 1u << tag;
	}
	b->have_stats = true;
	b->stats_time = now_ns();
}

/* Gives the held statistics buffer back: the driver refills it. */
static void release_stats(struct balloon *b)
{
	if (!b->stats_held)
		return;
	b->stats_held = false;
	virtq_push(virtio_dev_vq(&b->vdev, (unsigned)b->stats_q), b->stats_elem->head, 0);
	virtio_dev_queue_done(&b->vdev, (unsigned)b->stats_q);
}

static void balloon_queue_notify(struct virtio_dev *vdev, unsigned qidx)
{
	struct balloon *b = to_balloon(vdev);
	struct virtq *vq = virtio_dev_vq(vdev, qidx);
	enum balloon_role role = qidx < BALLOON_NQUEUES ? b->role[qidx] : ROLE_NONE;
	unsigned done = 0, pushed = 0;

	if (role == ROLE_NONE)
		return;
	/* Returning memory (fallocate) is the event loop's to do, not a
	 * vCPU's whose register write enabled the queue. */
	if ((role == ROLE_INFLATE || role == ROLE_REPORT) && !evloop_is_current(vdev->loop)) {
		virtio_dev_kick(vdev, qidx);
		return;
	}
	while (done < BALLOON_BUDGET && virtio_dev_active(vdev)) {
		struct virtq_elem *e = b->elem;
		int ret = virtq_pop(vq, e);

		if (ret < 0) {
			virtio_dev_fail(vdev, "queue %u: %s", qidx, vq->error);
			return;
		}
		if (ret == 0)
			break;
		done++;
		switch (role) {
		case ROLE_INFLATE:
			inflate(b, e);
			break;
		case ROLE_REPORT:
			report(b, e);
			break;
		case ROLE_STATS:
			/* A new buffer: the one we held goes back unread and
			 * this one is held until we want fresh figures (the
			 * held one is always the last popped, for pause). */
			if (b->stats_held) {
				virtq_push(vq, b->stats_elem->head, 0);
				pushed++;
			}
			take_stats(b, e);
			b->elem = b->stats_elem;
			b->stats_elem = e;
			b->stats_held = true;
			continue;
		default:
			break;
		}
		virtq_push(vq, e->head, 0);
		pushed++;
	}
	if (pushed)
		virtio_dev_queue_done(vdev, qidx);
	if (done == BALLOON_BUDGET && virtq_has_avail(vq))
		virtio_dev_kick(vdev, qidx);
}

/* The queues' roles follow the features the driver accepted. */
static int balloon_start(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);
	unsigned q = 2;

	memset(b->role, 0, sizeof(b->role));
	b->role[0] = ROLE_INFLATE;
	b->role[1] = ROLE_DEFLATE;
	b->stats_q = -1;
	b->stats_held = false;
	if (virtio_dev_has(vdev, BALLOON_F_STATS_VQ)) {
		b->stats_q = (int)q;
		b->role[q++] = ROLE_STATS;
	}
	if (virtio_dev_has(vdev, BALLOON_F_PAGE_REPORTING))
		b->role[q++] = ROLE_REPORT;
	return 0;
}

static void balloon_stop(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);

	b->stats_held = false; /* the rings are gone with the driver */
	b->actual = 0;
}

/* The held statistics buffer goes back on the ring unconsumed, so that a
 * save sees it available and the restored device takes it again. */
static void balloon_pause(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);

	if (b->stats_held) {
		virtq_unpop(virtio_dev_vq(vdev, (unsigned)b->stats_q));
		b->stats_held = false;
	}
}

static void balloon_config_read(struct virtio_dev *vdev, uint32_t off, void *data, unsigned len)
{
	struct balloon *b = to_balloon(vdev);
	uint32_t cfg[2] = { htole32(b->num_pages), htole32(b->actual) };

	if (off <= sizeof(cfg) && len <= sizeof(cfg) - off)
		memcpy(data, (uint8_t *)cfg + off, len);
}

static void balloon_config_write(struct virtio_dev *vdev, uint32_t off, const void *data,
				 unsigned len)
{
	struct balloon *b = to_balloon(vdev);
	uint32_t actual = htole32(b->actual);

	/* num_pages is the host's; only actual (offset 4) is the driver's */
	if (off < 4 || off > 8 || len > 8 - off)
		return;
	memcpy((uint8_t *)&actual + (off - 4), data, len);
	/* a driver cannot hold more than the VM has (the saved record and
	 * every figure derived from it rely on that) */
	b->actual = le32toh(actual);
	if (b->actual > b->ram / BALLOON_PAGE)
		b->actual = (uint32_t)(b->ram / BALLOON_PAGE);
}

static void balloon_destroy(struct virtio_dev *vdev)
{
	struct balloon *b = to_balloon(vdev);

	free(b->elem);
	free(b->stats_elem);
	free(b);
}

static const struct virtio_dev_ops balloon_ops = {
	.config_read = balloon_config_read,
	.config_write = balloon_config_write,
	.start = balloon_start,
	.queue_notify = balloon_queue_notify,
	.stop = balloon_stop,
	.pause = balloon_pause,
	.destroy = balloon_destroy,
};

static uint32_t target_pages(uint64_t ram, uint64_t assigned)
{
	return assigned && assigned < ram ? (uint32_t)((ram - assigned) / BALLOON_PAGE) : 0;
}

int virtio_balloon_create(struct vm *vm, const struct balloon_spec *s, struct virtio_dev **out,
			  char *err, size_t errlen)
{
	struct virtio_dev_params p = {
		.name = "virtio-balloon0",
		.device_id = VIRTIO_ID_BALLOON,
		.class_code = 0x00ff00, /* unclassified */
		.nqueues = BALLOON_NQUEUES,
		.queue_size = BALLOON_QUEUE_SIZE,
		.features = (1ULL << BALLOON_F_STATS_VQ) | (1ULL << BALLOON_F_DEFLATE_ON_OOM) |
			    (1ULL << BALLOON_F_PAGE_REPORTING),
		.config_len = 8,
		.ops = &balloon_ops,
	};
	struct balloon *b;
	int ret;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->elem = virtq_elem_alloc(BALLOON_QUEUE_SIZE);
	b->stats_elem = virtq_elem_alloc(BALLOON_QUEUE_SIZE);
	if (!b->elem || !b->stats_elem) {
		free(b->elem);
		free(b->stats_elem);
		free(b);
		return -ENOMEM;
	}
	b->stats_q = -1;
	p.opaque = b;
	ret = virtio_dev_init(&b->vdev, vm, &p);
	if (ret) {
		snprintf(err, errlen, "virtio-balloon: cannot create the PCI function: %s",
			 strerror(-ret));
		free(b->elem);
		free(b->stats_elem);
		free(b);
		return ret;
	}
	b->ram = b->vdev.mem->total;
	if (s->assigned > b->ram) {
		snprintf(err, errlen, "--balloon: the assigned memory is more than the VM's %llu "
			 "MiB", (unsigned long long)(b->ram / MiB));
		virtio_dev_destroy(&b->vdev);
		return -EINVAL;
	}
	b->num_pages = target_pages(b->ram, s->assigned);
	ret = virtio_dev_attach(&b->vdev);
	if (ret) {
		snprintf(err, errlen, "virtio-balloon: cannot attach: %s", strerror(-ret));
		virtio_dev_destroy(&b->vdev);
		return ret;
	}
	*out = &b->vdev;
	return 0;
}

void virtio_balloon_info(struct virtio_dev *vdev, struct balloon_info *info)
{
	struct balloon *b = to_balloon(vdev);
	uint64_t held;

	memset(info, 0, sizeof(*info));
	virtio_dev_lock(vdev);
	held = (uint64_t)b->actual * BALLOON_PAGE;
	info->memory = b->ram;
	info->target = b->ram - (uint64_t)b->num_pages * BALLOON_PAGE;
	info->assigned = held < b->ram ? b->ram - held : 0;
	info->driver = virtio_dev_active(vdev);
	info->have_stats = b->have_stats;
	info->stats_age_ns = b->have_stats ? now_ns() - b->stats_time : 0;
	info->stats_present = b->stats_present;
	memcpy(info->stats, b->stats, sizeof(info->stats));
	info->reported = b->reported;
	info->discarded = b->discarded;
	if (info->driver)
		release_stats(b);
	virtio_dev_unlock(vdev);
}

int virtio_balloon_set_target(struct virtio_dev *vdev, uint64_t assigned)
{
	struct balloon *b = to_balloon(vdev);

	if (assigned < MiB || assigned > b->ram)
		return -EINVAL;
	virtio_dev_lock(vdev);
	b->num_pages = target_pages(b->ram, assigned & ~(BALLOON_PAGE - 1));
	virtio_dev_config_changed(vdev);
	virtio_dev_unlock(vdev);
	return 0;
}

/* ---- saved state ------------------------------------------------------ */

void virtio_balloon_save(struct virtio_dev *vdev, struct state_writer *w)
{
	struct balloon *b = to_balloon(vdev);

	virtio_dev_lock(vdev);
	state_begin(w, STATE_SECTION_VIRTIO_DEV, vdev->pci.slot, BALLOON_STATE_VERSION);
	state_put_u32(w, b->num_pages);
	state_put_u32(w, b->actual);
	state_put_u64(w, b->reported);
	state_put_u64(w, b->discarded);
	state_end(w);
	virtio_dev_unlock(vdev);
}

int virtio_balloon_restore(struct virtio_dev *vdev, const struct state_file *f, char *err,
			   size_t errlen)
{
	struct balloon *b = to_balloon(vdev);
	uint64_t pages = b->ram / BALLOON_PAGE, reported, discarded;
	struct state_reader r;
	uint32_t num_pages, actual;

	if (state_file_find(f, STATE_SECTION_VIRTIO_DEV, vdev->pci.slot, &r)) {
		snprintf(err, errlen, "%s: the state has no balloon record for it", vdev->name);
		return -ENOENT;
	}
	num_pages = state_get_u32(&r);
	actual = state_get_u32(&r);
	reported = state_get_u64(&r);
	discarded = state_get_u64(&r);
	if (state_reader_done(&r) || r.version != BALLOON_STATE_VERSION) {
		snprintf(err, errlen, "%s: the saved balloon record has the wrong length or "
			 "version", vdev->name);
		return -EINVAL;
	}
	if (num_pages >= pages || actual > pages) {
		snprintf(err, errlen, "%s: the saved balloon (target %u pages, %u held) does not "
			 "fit the VM's %llu pages", vdev->name, num_pages, actual,
			 (unsigned long long)pages);
		return -EINVAL;
	}
	virtio_dev_lock(vdev);
	b->num_pages = num_pages;
	b->actual = actual;
	b->reported = reported;
	b->discarded = discarded;
	virtio_dev_unlock(vdev);
	return 0;
}
