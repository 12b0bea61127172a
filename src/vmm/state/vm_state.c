/* A whole VM's saved state on disk (vm_state.h). */
#include "vmm/fail.h"
#include "vmm/state/vm_state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileutil.h"
#include "common/util.h"
#include "vmm/machine.h"
#include "vmm/state/kvm_state.h"
#include "vmm/state/record.h"
#include "vmm/vm_internal.h"

#define MACHINE_VERSION 1
#define STATE_NAME "state.bin"
#define MEMORY_PREFIX "memory-"
#define MEMORY_SUFFIX ".bin"
#define MEMORY_NAME_MAX 64

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t vm_state_fingerprint(const struct vm_config *cfg)
{
	char canon[256];
	int n = snprintf(canon, sizeof(canon),
			 "cloison-vm-state;vcpus=%u;memory=%" PRIu64 ";disks=%u;nets=%u;console=%d",
			 cfg->ncpus, cfg->memory, cfg->ndisks, cfg->nnets, cfg->console != NULL);

	return state_fingerprint(canon, (size_t)n);
}

static int xsave_available(const struct vm *vm)
{
	return ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
}

/* ---- guest RAM -------------------------------------------------------- */

/* Calls fn for every data extent of src (holes skipped) inside region r;
 * file offsets are memfd offsets, so the memory file and the memfd have
 * the same layout. off is the extent's offset in the region. */
static int region_extents(int src, const struct guest_mem_region *r,
			  int (*fn)(void *ctx, const struct guest_mem_region *r, off_t off,
				    size_t len),
			  void *ctx)
{
	off_t base = (off_t)r->memfd_off, end = base + (off_t)r->size, at = base;

	while (at < end) {
		off_t data = lseek(src, at, SEEK_DATA), hole;
		int ret;

		if (data < 0 && errno != ENXIO)
			return -errno;
		if (data < 0 || data >= end)
			break;
		hole = lseek(src, data, SEEK_HOLE);
		if (hole < 0)
			return -errno;
		hole = MIN(hole, end);
		ret = fn(ctx, r, data - base, (size_t)(hole - data));
		if (ret)
			return ret;
		at = hole;
	}
	return 0;
}

static int extent_out(void *ctx, const struct guest_mem_region *r, off_t off, size_t len)
{
	return pwrite_full(*(int *)ctx, r->hva + off, len, (off_t)r->memfd_off + off);
}

static int extent_in(void *ctx, const struct guest_mem_region *r, off_t off, size_t len)
{
	return pread_full(*(int *)ctx, r->hva + off, len, (off_t)r->memfd_off + off);
}

/* fn for every data extent of src in every RAM region */
static int for_each_extent(const struct guest_mem *m, int src,
			   int (*fn)(void *ctx, const struct guest_mem_region *r, off_t off,
				     size_t len),
			   int fd)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		int ret = region_extents(src, &m->regions[i], fn, &fd);

		if (ret)
			return ret;
	}
	return 0;
}

/* ---- lazily restored RAM ----
 * After a lazy restore each region is a MAP_PRIVATE mapping of the saved
 * memory file: a page the guest (or a device) has not written is the
 * file's, one it wrote is an anonymous copy. Guest data is then the file's
 * data extents plus every copied page, which /proc/self/pagemap tells
 * apart (present or swapped, and not a file page). */
#define PAGE 4096ULL
#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61)
#define PM_BATCH 4096

static int mark_extent(void *ctx, const struct guest_mem_region *r, off_t off, size_t len)
{
	uint8_t *want = ctx;

	(void)r;
	for (off_t p = off / (off_t)PAGE; p * (off_t)PAGE < off + (off_t)len; p++)
		want[p] = 1;
	return 0;
}

static int mark_copied(int pagemap, const struct guest_mem_region *r, uint8_t *want)
{
	uint64_t n = r->size / PAGE, first = (uintptr_t)r->hva / PAGE;
	uint64_t buf[PM_BATCH];

	for (uint64_t i = 0; i < n; i += PM_BATCH) {
		size_t k = (size_t)MIN((uint64_t)PM_BATCH, n - i);
		int ret = pread_full(pagemap, buf, k * sizeof(buf[0]),
				     (off_t)((first + i) * sizeof(buf[0])));
		if (ret)
			return ret;
		for (size_t j = 0; j < k; j++)
			if ((buf[j] & (PM_PRESENT | PM_SWAPPED)) && !(buf[j] & PM_FILE))
				want[i + j] = 1;
	}
	return 0;
}

static int write_lazy_memory(const struct guest_mem *m, int fd)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_mem_region *r = &m->regions[i];
		uint64_t n = r->size / PAGE;
		uint8_t *want = calloc(n, 1);
		int ret;

		if (!want)
			return -ENOMEM;
		ret = region_extents(m->lazy_fd, r, mark_extent, want);
		if (!ret)
			ret = mark_copied(m->pagemap_fd, r, want);
		for (uint64_t p = 0; !ret && p < n;) {
			uint64_t q = p;

			if (!want[p]) {
				p++;
				continue;
			}
			while (q < n && want[q])
				q++;
			ret = pwrite_full(fd, r->hva + p * PAGE, (size_t)((q - p) * PAGE),
					  (off_t)(r->memfd_off + p * PAGE));
			p = q;
		}
		free(want);
		if (ret)
			return ret;
	}
	return 0;
}

static int map_regions(struct guest_mem *m, int fd, int flags)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		struct guest_mem_region *r = &m->regions[i];
		void *p = mmap(r->hva, r->size, PROT_READ | PROT_WRITE,
			       flags | MAP_FIXED | MAP_NORESERVE, fd, (off_t)r->memfd_off);

		if (p == MAP_FAILED)
			return -errno;
		if (flags & MAP_SHARED && m->huge)
			madvise(p, r->size, MADV_HUGEPAGE);
	}
	return 0;
}

int vm_state_drop_lazy(struct guest_mem *m)
{
	int ret;

	if (!m->lazy)
		return 0;
	ret = map_regions(m, m->memfd, MAP_SHARED);
	if (ret)
		return ret;
	close(m->lazy_fd);
	close(m->pagemap_fd);
	m->lazy_fd = m->pagemap_fd = -1;
	m->lazy = false;
	return 0;
}

/* A lazy restore: the regions already map the memory file fd privately
 * (setup_memory in vm.c); the guest RAM keeps fd, and /proc/self/pagemap
 * to tell the pages the guest wrote from the file's at the next save. */
static int keep_lazily(struct guest_mem *m, int *fd)
{
	int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (pagemap < 0)
		return -errno;
	m->lazy_fd = *fd;
	m->pagemap_fd = pagemap;
	m->lazy = true;
	*fd = -1;
	return 0;
}

/* Guest RAM into fd: untouched RAM (holes in the memfd) stays a hole. */
static int write_memory(const struct guest_mem *m, int fd, uint64_t *data_bytes)
{
	struct stat st;
	int ret;

	if (ftruncate(fd, (off_t)m->total) < 0)
		return -errno;
	ret = m->lazy ? write_lazy_memory(m, fd) : for_each_extent(m, m->memfd, extent_out, fd);
	if (!ret && fdatasync(fd) < 0)
		ret = -errno;
	if (!ret && fstat(fd, &st) == 0)
		*data_bytes = (uint64_t)st.st_blocks * 512;
	return ret;
}

/* The memory file back into guest RAM, its holes left as they are (the
 * VM's RAM is fresh, so zero). */
/* An eager restore: the save's data extents into the fresh memfd (its
 * holes stay holes, which read 0; nothing is loaded before a restore). */
static int read_memory(const struct guest_mem *m, int fd)
{
	return for_each_extent(m, fd, extent_in, fd);
}

/* Removes the memory files of earlier saves (any but keep). */
static void remove_stale_memory(const char *dir, const char *keep)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (strncmp(e->d_name, MEMORY_PREFIX, strlen(MEMORY_PREFIX)) || !strcmp(e->d_name, keep))
			continue;
		/* memory-<id>.bin and its .tmp, never anything else */
		if ((n > 4 && !strcmp(e->d_name + n - 4, MEMORY_SUFFIX)) ||
		    (n > 4 && !strcmp(e->d_name + n - 4, ".tmp")))
			unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
}

/* ---- save ------------------------------------------------------------- */

static void put_machine(struct state_writer *w, const struct vm *vm, const char *memory_name,
			uint32_t tsc_khz)
{
	size_t n = strlen(memory_name);

	state_begin(w, STATE_SECTION_MACHINE, 0, MACHINE_VERSION);
	state_put_u32(w, vm->nvcpus);
	state_put_u64(w, vm->mem.total);
	state_put_u32(w, vm->mem.nregions);
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		state_put_u64(w, vm->mem.regions[i].gpa);
		state_put_u64(w, vm->mem.regions[i].size);
		state_put_u64(w, vm->mem.regions[i].memfd_off);
	}
	state_put_u32(w, (uint32_t)n);
	state_put_bytes(w, memory_name, n);
	state_put_u32(w, tsc_khz);
	state_end(w);
}

static int save_cpus(struct state_writer *w, struct vm *vm, char *err, size_t errlen)
{
	uint32_t *msrs;
	size_t nmsrs;
	int xsave = xsave_available(vm), ret;

	ret = kvm_state_msr_list(vm->kvm_fd, vm->vcpus[0].fd, &msrs, &nmsrs);
	if (ret)
		return vmm_fail(err, errlen, ret, "listing the MSRs to save: %s", strerror(-ret));
	ret = kvm_state_save_vm(w, vm->vm_fd, err, errlen);
	for (unsigned i = 0; i < vm->nvcpus && !ret; i++)
		ret = kvm_state_save_vcpu(w, vm->vcpus[i].fd, i, xsave, msrs, nmsrs, err, errlen);
	free(msrs);
	return ret;
}

int vm_state_save(struct vm *vm, const char *dir, struct vm_save_stats *stats, char *err,
		  size_t errlen)
{
	char memory_name[MEMORY_NAME_MAX], path[4096], tmp[4096 + 8], state_path[4096];
	struct state_writer w;
	uint64_t id, start = mono_us();
	int fd, ret, khz;
	const void *data;
	size_t len;

	memset(stats, 0, sizeof(*stats));
	ret = mkdir_p(dir, 0700);
	if (ret)
		return vmm_fail(err, errlen, ret, "%s: cannot create: %s", dir, strerror(-ret));
	if (getrandom(&id, sizeof(id), 0) != sizeof(id))
		id = (uint64_t)start ^ ((uint64_t)getpid() << 32);
	snprintf(memory_name, sizeof(memory_name), MEMORY_PREFIX "%016" PRIx64 MEMORY_SUFFIX, id);
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, memory_name) >= sizeof(path) ||
	    (size_t)snprintf(state_path, sizeof(state_path), "%s/" STATE_NAME, dir) >=
		    sizeof(state_path))
		return vmm_fail(err, errlen, -ENAMETOOLONG, "%s: the path is too long", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return vmm_fail(err, errlen, -errno, "%s: cannot create: %s", tmp, strerror(errno));
	ret = write_memory(&vm->mem, fd, &stats->data_bytes);
	close(fd);
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (!ret)
		ret = fsync_parent_dir(path);
	if (ret) {
		unlink(tmp);
		return vmm_fail(err, errlen, ret, "%s: cannot write guest memory: %s", path,
			    strerror(-ret));
	}

	khz = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
	state_writer_init(&w, vm_state_fingerprint(&vm->cfg));
	put_machine(&w, vm, memory_name, khz > 0 ? (uint32_t)khz : 0);
	ret = save_cpus(&w, vm, err, errlen);
	if (!ret) {
		machine_save_devices(vm, &w);
		ret = state_writer_finish(&w, &data, &len);
		if (ret)
			vmm_fail(err, errlen, ret, "building the state records: %s", strerror(-ret));
	}
	/* the commit point: before it the previous save is the valid one */
	if (!ret) {
		ret = atomic_write_file(state_path, data, len, 0600);
		if (ret)
			vmm_fail(err, errlen, ret, "%s: cannot write: %s", state_path, strerror(-ret));
	}
	state_writer_free(&w);
	if (ret) {
		unlink(path);
		return ret;
	}
	remove_stale_memory(dir, memory_name);
	stats->memory_bytes = vm->mem.total;
	stats->state_bytes = len;
	stats->elapsed_us = mono_us() - start;
	return 0;
}

/* ---- restore ---------------------------------------------------------- */

/* Reads the machine record and checks it against the VM built for the
 * restore; on success *name is the memory file's name. */
static int check_machine(const struct state_file *f, const struct vm *vm, char *name,
			 uint32_t *tsc_khz, char *err, size_t errlen)
{
	struct state_reader r;
	uint32_t ncpus, nregions, n;
	uint64_t total;

	if (state_file_find(f, STATE_SECTION_MACHINE, 0, &r) || r.version != MACHINE_VERSION)
		return vmm_fail(err, errlen, -EINVAL, "the state has no machine record this build reads");
	ncpus = state_get_u32(&r);
	total = state_get_u64(&r);
	nregions = state_get_u32(&r);
	if (ncpus != vm->cfg.ncpus || total != vm->mem.total || nregions != vm->mem.nregions)
		return vmm_fail(err, errlen, -EINVAL,
			    "the state is of a VM with %u vCPUs and %" PRIu64 " MiB in %u regions; "
			    "this one has %u vCPUs and %" PRIu64 " MiB", ncpus, total >> 20, nregions,
			    vm->cfg.ncpus, vm->mem.total >> 20);
	for (unsigned i = 0; i < nregions; i++) {
		const struct guest_mem_region *m = &vm->mem.regions[i];

		if (state_get_u64(&r) != m->gpa || state_get_u64(&r) != m->size ||
		    state_get_u64(&r) != m->memfd_off)
			return vmm_fail(err, errlen, -EINVAL, "the saved memory layout differs");
	}
	n = state_get_u32(&r);
	if (n == 0 || n >= MEMORY_NAME_MAX)
		return vmm_fail(err, errlen, -EINVAL, "the machine record is damaged");
	state_get_bytes(&r, name, n);
	name[n] = 0;
	*tsc_khz = state_get_u32(&r);
	if (state_reader_done(&r) || strlen(name) != n || strchr(name, '/') ||
	    strncmp(name, MEMORY_PREFIX, strlen(MEMORY_PREFIX)))
		return vmm_fail(err, errlen, -EINVAL, "the machine record is damaged");
	return 0;
}

static int open_memory(struct vm *vm, const char *dir, const char *name,
		       struct vm_restore *rs, char *err, size_t errlen)
{
	struct stat st;
	int fd;

	if ((size_t)snprintf(rs->mem_path, sizeof(rs->mem_path), "%s/%s", dir, name) >=
	    sizeof(rs->mem_path))
		return vmm_fail(err, errlen, -ENAMETOOLONG, "%s: the path is too long", dir);
	fd = open(rs->mem_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return vmm_fail(err, errlen, -errno, "%s: %s", rs->mem_path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != vm->mem.total) {
		close(fd);
		return vmm_fail(err, errlen, -EINVAL, "%s: not the memory of this save (%lld bytes, "
			    "the VM has %" PRIu64 ")", rs->mem_path, (long long)st.st_size,
			    vm->mem.total);
	}
	rs->mem_fd = fd;
	return 0;
}

void vm_state_init(struct vm_restore *rs)
{
	memset(rs, 0, sizeof(*rs));
	rs->mem_fd = -1;
}

void vm_state_close(struct vm_restore *rs)
{
	free(rs->data);
	if (rs->mem_fd >= 0)
		close(rs->mem_fd);
	vm_state_init(rs);
}

/* a state that does not fit is bad data, not a bad command line */
static int bad_data(int ret)
{
	return ret == -EINVAL ? -EBADMSG : ret;
}

int vm_state_open(struct vm *vm, const char *dir, struct vm_restore *rs, char *err,
		  size_t errlen)
{
	char path[4096], name[MEMORY_NAME_MAX];
	size_t len;
	int ret;

	if ((size_t)snprintf(path, sizeof(path), "%s/" STATE_NAME, dir) >= sizeof(path))
		return vmm_fail(err, errlen, -ENAMETOOLONG, "%s: the path is too long", dir);
	ret = read_file(path, STATE_FILE_MAX, &rs->data, &len);
	if (ret)
		return vmm_fail(err, errlen, ret, "%s: %s", path, ret == -EFBIG ?
			    "larger than any state file" : strerror(-ret));
	ret = state_file_parse(&rs->f, rs->data, len, vm_state_fingerprint(&vm->cfg), err, errlen);
	if (!ret)
		ret = check_machine(&rs->f, vm, name, &rs->tsc_khz, err, errlen);
	if (!ret)
		ret = open_memory(vm, dir, name, rs, err, errlen);
	return bad_data(ret);
}

int vm_state_restore(struct vm *vm, struct vm_restore *rs, char *err, size_t errlen)
{
	int xsave = xsave_available(vm), ret;

	ret = vm->cfg.restore_eager ? read_memory(&vm->mem, rs->mem_fd)
				    : keep_lazily(&vm->mem, &rs->mem_fd);
	if (ret)
		return vmm_fail(err, errlen, ret, "%s: cannot %s: %s", rs->mem_path,
			    vm->cfg.restore_eager ? "read" : "map", strerror(-ret));
	ret = kvm_state_restore_vm(&rs->f, vm->vm_fd, err, errlen);
	for (unsigned i = 0; i < vm->nvcpus && !ret; i++) {
		/* the guest's TSC runs at the saved rate if KVM can scale it */
		if (rs->tsc_khz && ioctl(vm->vcpus[i].fd, KVM_GET_TSC_KHZ, 0) != (int)rs->tsc_khz &&
		    ioctl(vm->vcpus[i].fd, KVM_SET_TSC_KHZ, rs->tsc_khz) < 0)
			ret = vmm_fail(err, errlen, -errno, "the state's TSC runs at %u kHz and this "
				   "host cannot scale to it: %s", rs->tsc_khz, strerror(errno));
		if (!ret)
			ret = kvm_state_restore_vcpu(&rs->f, vm->vcpus[i].fd, i, xsave, err, errlen);
	}
	if (!ret)
		ret = machine_restore_devices(vm, &rs->f, err, errlen);
	return bad_data(ret);
}
