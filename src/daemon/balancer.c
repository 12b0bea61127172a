/* Dynamic memory's balancer (docs/daemon.md, "Dynamic memory").
 *
 * A dynamic-memory VM's worker boots with the VM's maximum memory and a
 * virtio-balloon holding all but the startup memory (worker.c). Every
 * balancer_interval_ms this thread asks each running one for its balloon
 * (the control socket's "balloon": what the guest has, and the statistics
 * its driver last sent), works out a target for each, and sets it:
 *
 *   demand  = total - available, from the driver's statistics (free when
 *             it sends no "available"); unknown without a driver or
 *             statistics, and then the VM keeps its target (a guest
 *             without a balloon driver has all of its maximum, which is
 *             what `vm show` says it has);
 *   want    = demand + buffer percent, within minimum and maximum;
 *   pool    = the daemon's memory_pool, or what the host has available
 *             (/proc/meminfo) less memory_reserve plus what these VMs
 *             hold now;
 *   short   = the sum of the wants less the pool: taken from the VMs in
 *             inverse proportion to their weight (weight 100 gives up half
 *             what weight 50 does), never below a VM's minimum; a VM at
 *             its minimum leaves the rest to the others.
 *
 * The worker's answers are input from a process the guest may have
 * subverted: every figure is range-checked, and a VM whose worker does not
 * answer is left out of the round. No lock is held while a worker is
 * asked; what the balancer saw is kept on the VM (mem_*) for `vm show`. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"

#define BAL_MAX_VMS 256
#define BAL_MIB (1ULL << 20)
#define BAL_TIMEOUT_S 2

struct balancer {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool stop;
};

static uint64_t clamp64(uint64_t v, uint64_t lo, uint64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

uint64_t balancer_plan(const struct balancer_vm *in, unsigned n, uint64_t pool, uint64_t *out)
{
	bool cut[BAL_MAX_VMS] = { false };
	uint64_t sum = 0, shortfall;

	if (n > BAL_MAX_VMS)
		n = BAL_MAX_VMS;
	for (unsigned i = 0; i < n; i++) {
		uint64_t want = in[i].assigned;

		if (in[i].demand)
			want = ALIGN_UP(in[i].demand + in[i].demand / 100 * in[i].buffer, BAL_MIB);
		out[i] = clamp64(want, in[i].minimum, in[i].maximum);
		sum += out[i];
	}
	if (!pool || sum <= pool)
		return sum;
	/* Water-filling: share the shortfall by inverse weight among those
	 * above their minimum; whoever would go below it stops there. */
	shortfall = sum - pool;
	while (shortfall) {
		double inv = 0, scale;
		bool capped = false;

		for (unsigned i = 0; i < n; i++)
			if (!cut[i] && out[i] > in[i].minimum)
				inv += 1.0 / (in[i].weight ? in[i].weight : 1);
		if (inv == 0)
			break; /* everyone is at the minimum: the pool is over-committed */
		scale = (double)shortfall / inv;
		for (unsigned i = 0; i < n; i++) {
			uint64_t room = out[i] - in[i].minimum, share;

			if (cut[i] || !room)
				continue;
			share = (uint64_t)(scale / (in[i].weight ? in[i].weight : 1));
			if (share >= room) {
				out[i] = in[i].minimum;
				shortfall -= room < shortfall ? room : shortfall;
				cut[i] = capped = true;
			}
		}
		if (capped)
			continue;
		for (unsigned i = 0; i < n; i++) {
			if (cut[i] || out[i] <= in[i].minimum)
				continue;
			out[i] -= (uint64_t)(scale / (in[i].weight ? in[i].weight : 1));
			out[i] = clamp64(ALIGN_DOWN(out[i], BAL_MIB), in[i].minimum, in[i].maximum);
		}
		shortfall = 0;
	}
	sum = 0;
	for (unsigned i = 0; i < n; i++)
		sum += out[i];
	return sum;
}

/* MemAvailable from /proc/meminfo, bytes; 0 when it cannot be read. */
static uint64_t host_available(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	uint64_t kib = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kib) == 1)
			break;
	fclose(f);
	return kib * 1024;
}

/* A figure from the worker's reply, or 0 when it is missing or out of
 * [0, max]. */
static uint64_t reply_u64(json_t *o, const char *key, uint64_t max)
{
	json_t *v = json_object_get(o, key);
	json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;

	return n < 0 || (uint64_t)n > max ? 0 : (uint64_t)n;
}

struct bal_entry {
	struct vm *vm;
	struct balancer_vm in;
	uint64_t memory, assigned, target, demand;
	bool answered;
};

/* Asks one worker; fills e from its reply. */
static void ask(struct bal_entry *e)
{
	json_t *res = NULL, *stats;
	char err[256];
	uint64_t total, avail = 0;

	if (worker_command_args(e->vm, "balloon", NULL, BAL_TIMEOUT_S, &res, err, sizeof(err))) {
		log_debug("vm %s: balloon: %s", e->vm->cfg.name, err);
		return;
	}
	e->memory = reply_u64(res, "memory", 1ULL << 50);
	e->assigned = reply_u64(res, "assigned", e->memory);
	e->target = reply_u64(res, "target", e->memory);
	/* without a demand to go by, the target stays */
	e->in.assigned = e->target;
	stats = json_object_get(res, "stats");
	total = reply_u64(stats, "total", e->memory);
	if (json_object_get(stats, "available"))
		avail = reply_u64(stats, "available", total);
	else if (json_object_get(stats, "free"))
		avail = reply_u64(stats, "free", total);
	else
		total = 0; /* nothing to tell the demand by */
	if (json_is_true(json_object_get(res, "driver")) && total)
		e->demand = total - avail;
	e->in.demand = e->demand;
	e->answered = e->memory != 0;
	json_decref(res);
}

static void set_target(struct bal_entry *e, uint64_t target)
{
	json_t *args = json_pack("{s:I}", "assigned", (json_int_t)target), *res = NULL;
	char err[256];

	if (worker_command_args(e->vm, "balloon", args, BAL_TIMEOUT_S, &res, err, sizeof(err)))
		log_warn("vm %s: cannot set its memory target to %" PRIu64 " MiB: %s",
			 e->vm->cfg.name, target >> 20, err);
	else
		log_debug("vm %s: memory target %" PRIu64 " MiB (demand %" PRIu64 " MiB)",
			  e->vm->cfg.name, target >> 20, e->demand >> 20);
	json_decref(args);
	json_decref(res);
}

static void round_once(struct daemon *d)
{
	static struct bal_entry e[BAL_MAX_VMS];
	uint64_t out[BAL_MAX_VMS], held = 0, pool, reserve;
	unsigned n = 0, k = 0;

	pthread_mutex_lock(&d->lock);
	for (struct vm *vm = d->vms; vm && n < BAL_MAX_VMS; vm = vm->next) {
		if (vm->removed || vm->state != VM_RUNNING || !vm->cfg.dynamic_memory)
			continue;
		vm->refs++;
		e[n] = (struct bal_entry){
			.vm = vm,
			.in = { .minimum = vm_config_memory_minimum(&vm->cfg),
				.maximum = vm_config_memory_maximum(&vm->cfg),
				.buffer = vm->cfg.memory_buffer,
				.weight = vm->cfg.memory_weight },
		};
		n++;
	}
	pool = d->memory_pool;
	reserve = d->memory_reserve;
	pthread_mutex_unlock(&d->lock);

	for (unsigned i = 0; i < n; i++) {
		ask(&e[i]);
		/* a worker that booted with another maximum (changed while it
		 * ran) is held to what it has */
		if (e[i].answered && e[i].in.maximum > e[i].memory)
			e[i].in.maximum = e[i].memory;
		if (e[i].answered && e[i].in.minimum > e[i].in.maximum)
			e[i].in.minimum = e[i].in.maximum;
		if (e[i].answered) {
			held += e[i].assigned;
			if (k != i) {
				struct bal_entry t = e[k];
				e[k] = e[i];
				e[i] = t;
			}
			k++;
		}
	}
	if (!pool) {
		uint64_t avail = host_available();

		pool = avail + held > reserve ? avail + held - reserve : 1;
	}
	struct balancer_vm in[BAL_MAX_VMS];
	for (unsigned i = 0; i < k; i++)
		in[i] = e[i].in;
	balancer_plan(in, k, pool, out);
	for (unsigned i = 0; i < k; i++)
		if (out[i] + BAL_MIB <= e[i].target || out[i] >= e[i].target + BAL_MIB)
			set_target(&e[i], out[i]);

	pthread_mutex_lock(&d->lock);
	for (unsigned i = 0; i < n; i++) {
		struct vm *vm = e[i].vm;

		vm->mem_known = i < k;
		if (i < k) {
			vm->mem_assigned = e[i].assigned;
			vm->mem_demand = e[i].demand;
			vm->mem_target = out[i];
		}
	}
	pthread_mutex_unlock(&d->lock);
	for (unsigned i = 0; i < n; i++)
		inventory_put(d, e[i].vm);
}

static void *balancer_main(void *arg)
{
	struct daemon *d = arg;
	struct balancer *b = d->balancer;

	pthread_mutex_lock(&b->lock);
	while (!b->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += d->balancer_interval_ms / 1000;
		ts.tv_nsec += (long)(d->balancer_interval_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&b->cond, &b->lock, &ts);
		if (b->stop)
			break;
		pthread_mutex_unlock(&b->lock);
		round_once(d);
		pthread_mutex_lock(&b->lock);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

int balancer_start(struct daemon *d)
{
	struct balancer *b = calloc(1, sizeof(*b));
	int r;

	if (!b)
		return -ENOMEM;
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->cond, NULL);
	d->balancer = b;
	r = pthread_create(&b->thread, NULL, balancer_main, d);
	if (r) {
		d->balancer = NULL;
		free(b);
		return -r;
	}
	return 0;
}

void balancer_stop(struct daemon *d)
{
	struct balancer *b = d->balancer;

	if (!b)
		return;
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&b->lock);
	pthread_join(b->thread, NULL);
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	d->balancer = NULL;
	free(b);
}
