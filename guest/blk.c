/* A ring-3 virtio-blk driver and its workloads: blkfill, blksum, blkverify,
 * blkro and blkbench (docs/testguest.md). One queue, requests of three
 * descriptors (header, data, status), polled completions. */
#include "blkrec.h"
#include "virtio.h"

#define VIRTIO_BLK_F_SIZE_MAX (1ULL << 1)
#define VIRTIO_BLK_F_SEG_MAX (1ULL << 2)
#define VIRTIO_BLK_F_RO (1ULL << 5)
#define VIRTIO_BLK_F_FLUSH (1ULL << 9)
#define VIRTIO_BLK_F_MQ (1ULL << 12)
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define SECTOR 512
#define CHUNK (1u << 20)
#define MAX_SLOTS 64
#define STATUS_PENDING 0xff

struct blk_req_hdr {
	uint32_t type, reserved;
	uint64_t sector;
};

struct blk_slot {
	struct blk_req_hdr hdr;
	volatile uint8_t status;
	bool busy;
	uint8_t *buf;
	uint32_t len;
};

/* One request queue's driver state: each queue is only ever used by one
 * CPU (queue i by CPU i in blkbench with blkmq), so none of it is shared. */
struct blk_queue_state {
	struct virtq *vq;
	struct blk_slot *slots; /* MAX_SLOTS */
	int16_t head_slot[VQ_MAX_SIZE];
};

struct blk_dev {
	struct virtio_dev v;
	uint64_t capacity; /* bytes */
	uint32_t max_io;
	unsigned nq;
	struct blk_queue_state qs[VIRTIO_MAX_QUEUES];
	struct blk_slot *slots; /* == qs[0].slots */
};

uint64_t blk_capacity(const struct blk_dev *b) { return b->capacity; }

int blk_open(struct guest *g, unsigned n, struct blk_dev **res)
{
	struct blk_dev *b = mm_alloc(g, sizeof(*b), 64);
	uint64_t want = VIRTIO_BLK_F_RO | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX;

	if (g->opt_blk_mq)
		want |= VIRTIO_BLK_F_MQ;
	if (!b || virtio_open(g, VIRTIO_ID_BLK, n, want, 1, 0, &b->v))
		return -1;
	b->nq = 1;
	if (b->v.features & VIRTIO_BLK_F_MQ) { /* blkmq: one queue per CPU */
		unsigned want_q = virtio_cfg32(&b->v, 32) >> 16; /* num_queues at 34 */
		if (want_q > g->cpus_online)
			want_q = g->cpus_online;
		if (want_q > VIRTIO_MAX_QUEUES)
			want_q = VIRTIO_MAX_QUEUES;
		while (b->nq < want_q && virtio_add_queue(&b->v, (uint16_t)b->nq) == 0)
			b->nq++;
	}
	for (unsigned i = 0; i < b->nq; i++) {
		b->qs[i].vq = &b->v.vq[i];
		b->qs[i].slots = mm_alloc(g, sizeof(struct blk_slot) * MAX_SLOTS, 64);
		if (!b->qs[i].slots)
			return -1;
	}
	b->slots = b->qs[0].slots;
	b->capacity = virtio_cfg64(&b->v, 0) * SECTOR;
	b->max_io = CHUNK;
	if (b->v.features & VIRTIO_BLK_F_SIZE_MAX) {
		uint32_t size_max = virtio_cfg32(&b->v, 8) & ~(SECTOR - 1);
		if (size_max && size_max < b->max_io)
			b->max_io = size_max;
	}
	virtio_ready(&b->v);
	out("blk%u: %lu bytes, features 0x%lx, %u queue(s) of %u, max request %u\n", n, b->capacity,
	    b->v.features, b->nq, b->v.vq[0].size, b->max_io);
	*res = b;
	return 0;
}

/* Queues one request on slot s of a queue (data buffer optional for flush). */
static int blk_submit_q(struct blk_queue_state *q, unsigned s, uint32_t type, uint64_t sector,
			void *buf, uint32_t len)
{
	struct blk_slot *sl = &q->slots[s];
	struct virtio_buf bufs[3];
	unsigned n = 0;
	int head;

	sl->hdr.type = type;
	sl->hdr.reserved = 0;
	sl->hdr.sector = sector;
	sl->status = STATUS_PENDING;
	bufs[n++] = (struct virtio_buf){ (uint64_t)(uintptr_t)&sl->hdr, sizeof(sl->hdr), false };
	if (len)
		bufs[n++] = (struct virtio_buf){ (uint64_t)(uintptr_t)buf, len, type == T_IN };
	bufs[n++] = (struct virtio_buf){ (uint64_t)(uintptr_t)&sl->status, 1, true };
	head = virtq_add(q->vq, bufs, n);
	if (head < 0)
		return -1;
	q->head_slot[head] = (int16_t)s;
	sl->busy = true;
	return 0;
}

/* A completed slot of the queue, or -1 when none is ready. */
static int blk_reap_q(struct blk_queue_state *q)
{
	int head = virtq_get(q->vq, NULL), s;

	if (head < 0)
		return -1;
	s = q->head_slot[head];
	q->slots[s].busy = false;
	return s;
}

static int blk_submit(struct blk_dev *b, unsigned s, uint32_t type, uint64_t sector, void *buf,
		      uint32_t len)
{
	return blk_submit_q(&b->qs[0], s, type, sector, buf, len);
}

static int blk_reap(struct blk_dev *b) { return blk_reap_q(&b->qs[0]); }

/* A device that stops answering must not hang the guest: every wait ends
 * after STALL_SECS without a completion. */
#define STALL_SECS 10

static int blk_wait(struct blk_dev *b)
{
	uint64_t deadline = rdtsc() + STALL_SECS * b->v.g->tsc_hz;
	int s;

	while ((s = blk_reap(b)) < 0) {
		if (rdtsc() > deadline)
			return -1;
		cpu_relax();
	}
	return s;
}

int blk_rw(struct blk_dev *b, uint32_t type, uint64_t sector, void *buf, uint32_t len)
{
	int s;

	if (blk_submit(b, 0, type, sector, buf, len))
		return -1;
	virtq_kick(&b->v.vq[0]);
	s = blk_wait(b);
	return s < 0 ? -1 : b->slots[s].status;
}

static struct blk_dev *first_disk(struct guest *g)
{
	if (!g->blk0 && blk_open(g, 0, &g->blk0)) {
		out("RESULT blk_error=no virtio-blk device\n");
		return NULL;
	}
	return g->blk0;
}

static int flush(struct blk_dev *b)
{
	if (!(b->v.features & VIRTIO_BLK_F_FLUSH))
		return 0;
	return blk_rw(b, T_FLUSH, 0, NULL, 0);
}

/* Runs len bytes of sequential requests of one type from the start of the
 * disk, qd in flight, calling done() in disk order for each chunk. */
static int blk_stream(struct guest *g, struct blk_dev *b, uint32_t type, unsigned qd,
		      void (*prepare)(uint8_t *buf, uint32_t len, uint64_t off, void *arg),
		      int (*done)(const uint8_t *buf, uint32_t len, uint64_t off, void *arg), void *arg)
{
	uint64_t chunks = (b->capacity + b->max_io - 1) / b->max_io, submitted = 0, finished = 0;
	bool ready[MAX_SLOTS] = { false };
	uint64_t deadline = rdtsc() + STALL_SECS * g->tsc_hz;
	int err = 0;

	for (unsigned s = 0; s < qd; s++)
		if (!b->slots[s].buf && !(b->slots[s].buf = mm_alloc(g, CHUNK, PAGE_SIZE)))
			return -1;
	while (finished < chunks) {
		bool queued = false;
		int s;

		while (submitted < chunks && submitted - finished < qd) {
			uint64_t off = submitted * b->max_io;
			uint32_t len = (uint32_t)(b->capacity - off < b->max_io ? b->capacity - off : b->max_io);
			unsigned slot = (unsigned)(submitted % qd);
			if (prepare)
				prepare(b->slots[slot].buf, len, off, arg);
			b->slots[slot].len = len;
			if (blk_submit(b, slot, type, off / SECTOR, b->slots[slot].buf, len))
				return -1;
			submitted++;
			queued = true;
		}
		if (queued)
			virtq_kick(&b->v.vq[0]);
		while ((s = blk_reap(b)) >= 0) {
			ready[s] = true;
			deadline = rdtsc() + STALL_SECS * g->tsc_hz;
		}
		s = (int)(finished % qd);
		if (!ready[s]) {
			if (rdtsc() > deadline) {
				out("RESULT blk_error=no completion for %d s\n", STALL_SECS);
				return -1;
			}
			cpu_relax();
			continue;
		}
		ready[s] = false;
		if (b->slots[s].status != 0 && !err) {
			out("RESULT blk_io_status=%u offset=%lu\n", b->slots[s].status, finished * b->max_io);
			err = -1;
		}
		if (done && !err)
			err = done(b->slots[s].buf, b->slots[s].len, finished * b->max_io, arg);
		finished++;
	}
	return err;
}

static void fill_value(uint8_t *buf, uint32_t len, uint64_t off, void *arg)
{
	(void)off;
	memset(buf, *(const uint8_t *)arg, len);
}

int blk_fill(struct guest *g, uint8_t value)
{
	struct blk_dev *b = first_disk(g);
	int err, fl;

	if (!b)
		return -1;
	err = blk_stream(g, b, T_OUT, 4, fill_value, NULL, &value);
	fl = flush(b);
	out("RESULT blk_capacity=%lu\n", b->capacity);
	out("RESULT blk_flush_status=%d\n", fl);
	out("RESULT blkfill=%s\n", err || fl ? "error" : "ok");
	return 0;
}

static int hash_chunk(const uint8_t *buf, uint32_t len, uint64_t off, void *arg)
{
	(void)off;
	sha256_update(arg, buf, len);
	return 0;
}

int blk_sum(struct guest *g)
{
	struct blk_dev *b = first_disk(g);
	struct sha256 sha;
	uint8_t digest[32];
	char hex[65];

	if (!b)
		return -1;
	sha256_init(&sha);
	if (blk_stream(g, b, T_IN, 4, NULL, hash_chunk, &sha)) {
		out("RESULT blksum=error\n");
		return 0;
	}
	sha256_final(&sha, digest);
	for (int i = 0; i < 32; i++)
		fmt(hex + 2 * i, 3, "%02x", digest[i]);
	out("RESULT blk_capacity=%lu\n", b->capacity);
	out("RESULT blk_sha256=%s\n", hex);
	return 0;
}

static uint64_t sector_word(uint64_t off, unsigned i) { return (off / SECTOR) * 0x100000001b3ULL ^ i ^ 0xc10150; }

static void fill_pattern(uint8_t *buf, uint32_t len, uint64_t off, void *arg)
{
	uint64_t *w = (void *)buf; /* page-aligned buffers */
	(void)arg;
	for (uint32_t i = 0; i < len / 8; i++)
		w[i] = sector_word(off + (uint64_t)i * 8, i % 64);
}

static int check_pattern(const uint8_t *buf, uint32_t len, uint64_t off, void *arg)
{
	const uint64_t *w = (const void *)buf;
	uint64_t *bad = arg;

	for (uint32_t i = 0; i < len / 8; i++) {
		if (w[i] != sector_word(off + (uint64_t)i * 8, i % 64)) {
			*bad = off + (uint64_t)i * 8;
			return -1;
		}
	}
	return 0;
}

int blk_verify(struct guest *g)
{
	struct blk_dev *b = first_disk(g);
	uint64_t bad = 0;
	int err;

	if (!b)
		return -1;
	err = blk_stream(g, b, T_OUT, 4, fill_pattern, NULL, NULL);
	if (!err)
		err = flush(b);
	if (!err)
		err = blk_stream(g, b, T_IN, 4, NULL, check_pattern, &bad);
	if (err && bad)
		out("RESULT blkverify=bad offset=%lu\n", bad);
	else
		out("RESULT blkverify=%s\n", err ? "error" : "ok");
	return 0;
}

int blk_readonly_check(struct guest *g)
{
	struct blk_dev *b = first_disk(g);
	uint8_t *buf;
	int rd, wr;

	if (!b || !(buf = mm_alloc(g, PAGE_SIZE, PAGE_SIZE)))
		return -1;
	out("RESULT blk_readonly=%d\n", (b->v.features & VIRTIO_BLK_F_RO) ? 1 : 0);
	rd = blk_rw(b, T_IN, 0, buf, SECTOR);
	out("RESULT blk_read_status=%d\n", rd);
	/* Writes back what it read, so a writable disk is left unchanged. */
	wr = blk_rw(b, T_OUT, 0, buf, SECTOR);
	out("RESULT blk_write_status=%d\n", wr);
	return 0;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct bench {
	struct blk_dev *b;
	bool rnd;
	uint32_t type;
	uint64_t bs, blocks, start, end, stall;
	unsigned qd;
	struct {
		uint64_t ops, bytes, errors;
		bool stalled;
	} res[VIRTIO_MAX_QUEUES];
	volatile uint32_t done;
};

/* Keeps qd requests in flight on queue qi until b->end; runs on CPU qi. */
static void bench_queue(struct bench *p, unsigned qi)
{
	struct blk_queue_state *q = &p->b->qs[qi];
	uint64_t seq = p->blocks / p->b->nq * qi, seed = (rdtsc() ^ (qi + 1) * 0x9e3779b97f4a7c15ULL) | 1;
	unsigned inflight = 0;

	for (;;) {
		bool queued = false, stop = rdtsc() >= p->end;
		int s;

		for (unsigned k = 0; !stop && k < p->qd; k++) {
			uint64_t blk;
			if (q->slots[k].busy)
				continue;
			blk = p->rnd ? xorshift(&seed) % p->blocks : seq++ % p->blocks;
			if (blk_submit_q(q, k, p->type, blk * p->bs / SECTOR, q->slots[k].buf, (uint32_t)p->bs))
				break;
			inflight++;
			queued = true;
		}
		if (queued)
			virtq_kick(q->vq);
		if (stop && rdtsc() > p->end + p->stall) {
			p->res[qi].stalled = true;
			break;
		}
		while ((s = blk_reap_q(q)) >= 0) {
			inflight--;
			if (q->slots[s].status)
				p->res[qi].errors++;
			p->res[qi].ops++;
			p->res[qi].bytes += p->bs;
		}
		if (stop && !inflight)
			break;
	}
	__atomic_fetch_add(&p->done, 1, __ATOMIC_RELEASE);
}

static void bench_ap(struct guest *g, uint32_t idx, void *arg)
{
	struct bench *p = arg;

	(void)g;
	if (idx < p->b->nq)
		bench_queue(p, idx);
}

int blk_bench(struct guest *g, const char *mode, uint64_t bs, unsigned qd, uint64_t secs)
{
	struct blk_dev *b = first_disk(g);
	struct bench *p;
	uint64_t ops = 0, bytes = 0, errors = 0, kicks = 0, t1, ns;
	bool stalled = false;

	if (!b || !(p = mm_alloc(g, sizeof(*p), 64)))
		return -1;
	if (bs < SECTOR || bs % SECTOR || bs > b->max_io) {
		out("RESULT blk_error=bs must be a multiple of 512 up to %u\n", b->max_io);
		return -1;
	}
	if (qd < 1)
		qd = 1;
	if (qd > MAX_SLOTS || qd > b->v.vq[0].size / 3u)
		qd = b->v.vq[0].size / 3u < MAX_SLOTS ? b->v.vq[0].size / 3u : MAX_SLOTS;
	p->b = b;
	p->rnd = mode[0] == 'r' && mode[1] == 'a';
	p->type = mode[3] == 'w' || mode[4] == 'w' ? T_OUT : T_IN;
	p->bs = bs;
	p->qd = qd;
	p->blocks = b->capacity / bs;
	p->stall = STALL_SECS * g->tsc_hz;
	if (!p->blocks)
		return -1;
	/* Buffers first: the allocator is the BSP's alone. */
	for (unsigned qi = 0; qi < b->nq; qi++) {
		for (unsigned s = 0; s < qd; s++) {
			struct blk_slot *sl = &b->qs[qi].slots[s];
			if (!sl->buf && !(sl->buf = mm_alloc(g, CHUNK, PAGE_SIZE)))
				return -1;
			memset(sl->buf, 0xa5, bs);
		}
	}
	p->start = rdtsc();
	p->end = p->start + secs * g->tsc_hz;
	if (b->nq > 1)
		smp_run_on_aps(g, bench_ap, p);
	bench_queue(p, 0);
	while (__atomic_load_n(&p->done, __ATOMIC_ACQUIRE) < b->nq && rdtsc() < p->end + 2 * p->stall)
		cpu_relax();
	t1 = rdtsc();
	for (unsigned qi = 0; qi < b->nq; qi++) {
		ops += p->res[qi].ops;
		bytes += p->res[qi].bytes;
		errors += p->res[qi].errors;
		kicks += b->v.vq[qi].kicks;
		stalled |= p->res[qi].stalled;
	}
	if (stalled || p->done < b->nq)
		out("RESULT blk_error=no completion for %d s\n", STALL_SECS);
	ns = (t1 - p->start) / g->tsc_hz * 1000000000ULL +
	     (t1 - p->start) % g->tsc_hz * 1000000000ULL / g->tsc_hz;
	out("RESULT blk_mode=%s\n", mode);
	out("RESULT blk_bs=%lu\n", bs);
	out("RESULT blk_qd=%u\n", qd);
	out("RESULT blk_queues=%u\n", b->nq);
	out("RESULT blk_ops=%lu\n", ops);
	out("RESULT blk_bytes=%lu\n", bytes);
	out("RESULT blk_ns=%lu\n", ns);
	out("RESULT blk_iops=%lu\n", ns ? ops * 1000000000UL / ns : 0);
	out("RESULT blk_mbps=%lu\n", ns ? bytes * 1000UL / ns : 0);
	out("RESULT blk_errors=%lu\n", errors);
	out("RESULT blk_kicks=%lu\n", kicks);
	return 0;
}

struct virtq *blk_queue(struct blk_dev *b) { return &b->v.vq[0]; }
struct virtio_dev *blk_virtio(struct blk_dev *b) { return &b->v; }

/* ---- blkrec: numbered, checksummed records for crash trials (blkrec.h) ---- */

static void rec_fill(const struct rec_layout *l, uint64_t i, uint64_t off, uint8_t *buf,
		     uint32_t len)
{
	for (uint32_t s = 0; s < len; s += REC_SECTOR)
		rec_sector(l, i, off + s, buf + s);
}

struct rec_run {
	struct blk_dev *b;
	struct rec_layout l;
	uint64_t next, acked, flushed_at, flush_snapshot;
	uint64_t *slot_rec; /* record in flight in slot s */
	bool *done;
	bool flush_busy;
	unsigned qd, every, inflight;
};

static int rec_submit(struct rec_run *r, unsigned s)
{
	uint64_t off;
	uint32_t len;

	rec_place(&r->l, r->next, &off, &len);
	rec_fill(&r->l, r->next, off, r->b->slots[s].buf, len);
	if (blk_submit(r->b, s, T_OUT, off / SECTOR, r->b->slots[s].buf, len))
		return -1;
	r->slot_rec[s] = r->next++;
	r->inflight++;
	return 0;
}

/* One completion: a record, or the flush in slot qd, which makes every
 * record completed before it was sent durable. */
static int rec_complete(struct rec_run *r, int s)
{
	if (r->b->slots[s].status) {
		out("RESULT blkrec=error status=%u %s=%lu\n", r->b->slots[s].status,
		    (unsigned)s == r->qd ? "flush_after" : "record",
		    (unsigned)s == r->qd ? r->flush_snapshot : r->slot_rec[s]);
		return -1;
	}
	if ((unsigned)s == r->qd) {
		r->flush_busy = false;
		r->flushed_at = r->flush_snapshot;
		out("RESULT flushed=%lu\n", r->flushed_at);
		return 0;
	}
	r->done[r->slot_rec[s]] = true;
	r->inflight--;
	while (r->acked < r->next && r->done[r->acked])
		r->acked++;
	return 0;
}

/* Writes every record in order, qd in flight, and after every `every`
 * completed records sends a flush while later writes stay in flight;
 * prints RESULT flushed=<n> when a flush covering records [0, n) is done. */
static int rec_run_all(struct guest *g, struct rec_run *r)
{
	uint64_t deadline = rdtsc() + STALL_SECS * g->tsc_hz;

	while (r->flushed_at < r->l.slots) {
		bool queued = false;
		int s;

		for (unsigned k = 0; k < r->qd && r->next < r->l.slots; k++) {
			if (r->b->slots[k].busy)
				continue;
			if (rec_submit(r, k))
				return -1;
			queued = true;
		}
		if (!r->flush_busy && r->acked > r->flushed_at &&
		    (r->acked - r->flushed_at >= r->every || r->acked == r->l.slots)) {
			r->flush_snapshot = r->acked;
			if (blk_submit(r->b, r->qd, T_FLUSH, 0, NULL, 0))
				return -1;
			r->flush_busy = queued = true;
		}
		if (queued)
			virtq_kick(&r->b->v.vq[0]);
		while ((s = blk_reap(r->b)) >= 0) {
			if (rec_complete(r, s))
				return -1;
			deadline = rdtsc() + STALL_SECS * g->tsc_hz;
		}
		if (rdtsc() > deadline) {
			out("RESULT blkrec=error no completion for %d s\n", STALL_SECS);
			return -1;
		}
		cpu_relax();
	}
	return 0;
}

int blk_records(struct guest *g, uint64_t seed, unsigned every, unsigned qd)
{
	struct blk_dev *b = first_disk(g);
	struct rec_run *r;

	if (!b || !(r = mm_alloc(g, sizeof(*r), 64)))
		return -1;
	if (!(b->v.features & VIRTIO_BLK_F_FLUSH) || (b->v.features & VIRTIO_BLK_F_RO)) {
		out("RESULT blkrec=error the disk must be writable and offer flush\n");
		return 0;
	}
	r->b = b;
	r->every = every ? every : 1;
	r->qd = qd < 1 ? 1 : qd > MAX_SLOTS - 1 ? MAX_SLOTS - 1 : qd;
	if (r->qd > b->v.vq[0].size / 3u - 1)
		r->qd = b->v.vq[0].size / 3u - 1;
	rec_layout_init(&r->l, seed, b->capacity);
	if (!r->l.slots || REC_MAX > b->max_io) {
		out("RESULT blkrec=error the disk needs at least %u bytes and %u-byte requests\n",
		    REC_SLOT, REC_MAX);
		return 0;
	}
	r->slot_rec = mm_alloc(g, sizeof(uint64_t) * MAX_SLOTS, 64);
	r->done = mm_alloc(g, r->l.slots, 64);
	if (!r->slot_rec || !r->done)
		return -1;
	memset(r->done, 0, r->l.slots);
	for (unsigned s = 0; s < r->qd; s++)
		if (!b->slots[s].buf && !(b->slots[s].buf = mm_alloc(g, CHUNK, PAGE_SIZE)))
			return -1;
	out("RESULT blkrec_records=%lu\n", r->l.slots);
	if (rec_run_all(g, r) == 0)
		out("RESULT blkrec=ok\n");
	return 0;
}
