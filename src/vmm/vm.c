/* The KVM VM: guest memory in one memfd, in-kernel irqchip and PIT, GSI
 * routing, irqfd/ioeventfd, the device event loop thread, and run control
 * (pause, resume, stop requests, in-place reset).
 *
 * Reset is done in place, keeping the KVM VM, its memfd and every device
 * registration (irqfds, ioeventfds, bus regions): the vCPUs are parked,
 * guest RAM is zeroed by punching the whole memfd (fast, and it gives the
 * memory back), the irqchip and PIT get their power-on state back from the
 * snapshots taken at creation, devices reset, the ACPI tables and kernel
 * are loaded again, and each vCPU gets its power-on registers. Re-creating
 * the KVM VM would instead force every device to re-register. */
#include "vmm/irq_stats.h"
#include "vmm/vm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/log.h"
#include "common/util.h"
#include "vmm/boot/acpi.h"
#include "vmm/bus/bus.h"
#include "vmm/bus/pci.h"
#include "vmm/chardev.h"
#include "vmm/control.h"
#include "vmm/cpuid.h"
#include "vmm/fail.h"
#include "vmm/hw/hw.h"
#include "vmm/layout.h"
#include "vmm/machine.h"
#include "vmm/state/vm_state.h"
#include "vmm/seccomp.h"

#define KVM_TSS_ADDR 0xfffbd000ULL
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ULL
#define GSI_LEGACY_PINS 24

/* ---- services for devices (vm.h) ---------------------------------- */

struct guest_mem *vm_guest_mem(struct vm *vm)
{
	return &vm->mem;
}

struct io_bus *vm_pio_bus(struct vm *vm)
{
	return vm->pio;
}

struct io_bus *vm_mmio_bus(struct vm *vm)
{
	return vm->mmio;
}

struct pci_bus *vm_pci_bus(struct vm *vm)
{
	return vm->pci;
}

struct virtio_devices **vm_virtio_slot(struct vm *vm)
{
	return &vm->virtio;
}

struct evloop *vm_evloop(struct vm *vm)
{
	return vm->loop;
}

unsigned vm_vcpu_count(const struct vm *vm)
{
	return vm->nvcpus;
}

int vm_set_irq_line(struct vm *vm, unsigned gsi, int level)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = level ? 1 : 0 };

	if (gsi >= GSI_LEGACY_PINS)
		return -EINVAL;
	if (level)
		vm_count_irq_line(vm, gsi);
	if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0)
		return -errno;
	return 0;
}

int vm_signal_msi(struct vm *vm, uint64_t addr, uint32_t data)
{
	struct kvm_msi msi = {
		.address_lo = (uint32_t)addr,
		.address_hi = (uint32_t)(addr >> 32),
		.data = data,
	};

	if (ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &msi) < 0)
		return -errno;
	return 0;
}

/* KVM_SET_GSI_ROUTING replaces the whole table, so the table we keep
 * always starts with the irqchip's default routes (the same ones KVM sets
 * up in KVM_CREATE_IRQCHIP) and MSI routes follow. Caller holds the lock. */
static int routes_commit(struct vm *vm)
{
	if (ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, vm->routes.table) < 0)
		return -errno;
	return 0;
}

static struct kvm_irq_routing_entry *routes_append(struct gsi_routes *r)
{
	if (r->table->nr == r->cap) {
		unsigned cap = r->cap * 2;
		struct kvm_irq_routing *t =
			realloc(r->table, sizeof(*t) + cap * sizeof(t->entries[0]));
		if (!t)
			return NULL;
		r->table = t;
		r->cap = cap;
	}
	memset(&r->table->entries[r->table->nr], 0, sizeof(r->table->entries[0]));
	return &r->table->entries[r->table->nr++];
}

static int routes_init(struct vm *vm)
{
	struct gsi_routes *r = &vm->routes;
	int max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING);

	pthread_mutex_init(&r->lock, NULL);
	r->max_gsi = max > GSI_LEGACY_PINS ? (unsigned)max : 1024;
	r->cap = 64;
	r->table = calloc(1, sizeof(*r->table) + r->cap * sizeof(r->table->entries[0]));
	if (!r->table)
		return -ENOMEM;
	for (unsigned gsi = 0; gsi < GSI_LEGACY_PINS; gsi++) {
		struct kvm_irq_routing_entry *e = routes_append(r);
		e->gsi = gsi;
		e->type = KVM_IRQ_ROUTING_IRQCHIP;
		e->u.irqchip.irqchip = KVM_IRQCHIP_IOAPIC;
		e->u.irqchip.pin = gsi;
		if (gsi < 16) {
			e = routes_append(r);
			e->gsi = gsi;
			e->type = KVM_IRQ_ROUTING_IRQCHIP;
			e->u.irqchip.irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
			e->u.irqchip.pin = gsi % 8;
		}
	}
	/* KVM_CREATE_IRQCHIP set up this very table; the first MSI route
	 * commits it. (Each commit waits for an SRCU grace period, up to a
	 * millisecond on a nested host.) */
	return 0;
}

static struct kvm_irq_routing_entry *routes_find_msi(struct gsi_routes *r, unsigned gsi)
{
	for (unsigned i = 0; i < r->table->nr; i++)
		if (r->table->entries[i].gsi == gsi &&
		    r->table->entries[i].type == KVM_IRQ_ROUTING_MSI)
			return &r->table->entries[i];
	return NULL;
}

static bool routes_gsi_used(struct gsi_routes *r, unsigned gsi)
{
	for (unsigned i = 0; i < r->table->nr; i++)
		if (r->table->entries[i].gsi == gsi)
			return true;
	return false;
}

static void set_msi(struct kvm_irq_routing_entry *e, uint64_t addr, uint32_t data)
{
	e->u.msi.address_lo = (uint32_t)addr;
	e->u.msi.address_hi = (uint32_t)(addr >> 32);
	e->u.msi.data = data;
}

int vm_msi_route_add(struct vm *vm, uint64_t addr, uint32_t data, unsigned *gsi)
{
	struct gsi_routes *r = &vm->routes;
	struct kvm_irq_routing_entry *e;
	unsigned g;
	int ret;

	pthread_mutex_lock(&r->lock);
	for (g = GSI_LEGACY_PINS; g < r->max_gsi && routes_gsi_used(r, g); g++)
		;
	if (g >= r->max_gsi) {
		ret = -ENOSPC;
		goto out;
	}
	e = routes_append(r);
	if (!e) {
		ret = -ENOMEM;
		goto out;
	}
	e->gsi = g;
	e->type = KVM_IRQ_ROUTING_MSI;
	set_msi(e, addr, data);
	ret = routes_commit(vm);
	if (ret)
		r->table->nr--;
	else
		*gsi = g;
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int vm_msi_route_update(struct vm *vm, unsigned gsi, uint64_t addr, uint32_t data)
{
	struct gsi_routes *r = &vm->routes;
	struct kvm_irq_routing_entry *e;
	int ret;

	pthread_mutex_lock(&r->lock);
	e = routes_find_msi(r, gsi);
	if (!e) {
		ret = -ENOENT;
	} else {
		set_msi(e, addr, data);
		ret = routes_commit(vm);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void vm_msi_route_remove(struct vm *vm, unsigned gsi)
{
	struct gsi_routes *r = &vm->routes;
	struct kvm_irq_routing_entry *e;

	pthread_mutex_lock(&r->lock);
	e = routes_find_msi(r, gsi);
	if (e) {
		*e = r->table->entries[--r->table->nr];
		if (routes_commit(vm))
			log_warn("could not remove the MSI route of GSI %u", gsi);
	}
	pthread_mutex_unlock(&r->lock);
}

int vm_irqfd(struct vm *vm, int eventfd, unsigned gsi, bool assign)
{
	struct kvm_irqfd irqfd = {
		.fd = (uint32_t)eventfd,
		.gsi = gsi,
		.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
	};

	if (ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0)
		return -errno;
	return 0;
}

int vm_ioeventfd(struct vm *vm, uint64_t addr, unsigned len, bool mmio, int eventfd, bool assign)
{
	struct kvm_ioeventfd io = {
		.addr = addr,
		.len = len,
		.fd = eventfd,
		.flags = (mmio ? 0 : KVM_IOEVENTFD_FLAG_PIO) |
			 (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
	};

	if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &io) < 0)
		return -errno;
	return 0;
}

/* ---- run control ---------------------------------------------------- */

static void update_want_park(struct vm *vm)
{
	atomic_store(&vm->want_park, vm->pause_requested || vm->stop_reason != VM_STOP_NONE ||
					     vm->state == VM_STATE_RESETTING ||
					     vm->state == VM_STATE_CREATED || vm->quit);
	if (!atomic_load(&vm->want_park))
		pthread_cond_broadcast(&vm->cond);
}

/* Caller holds vm->lock (thread_started changes under it). */
static void kick_all(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++)
		if (vm->vcpus[i].thread_started)
			vcpu_kick(&vm->vcpus[i]);
}

/* When requests pile up, the more final one wins: a power-off or crash
 * that arrives during an in-place reset must not be lost. */
static int stop_rank(enum vm_stop_reason r)
{
	switch (r) {
	case VM_STOP_NONE:
		return 0;
	case VM_STOP_RESET:
		return 1;
	case VM_STOP_POWEROFF:
		return 2;
	case VM_STOP_SAVED:
		return 3;
	case VM_STOP_CRASH:
		return 4;
	case VM_STOP_VMM_ERROR:
		return 5;
	}
	return 0;
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, const char *detail)
{
	pthread_mutex_lock(&vm->lock);
	if (stop_rank(reason) > stop_rank(vm->stop_reason)) {
		vm->stop_reason = reason;
		snprintf(vm->stop_detail, sizeof(vm->stop_detail), "%s", detail ? detail : "");
	}
	update_want_park(vm);
	pthread_cond_broadcast(&vm->cond);
	kick_all(vm);
	pthread_mutex_unlock(&vm->lock);
}

static unsigned threads_started(struct vm *vm)
{
	unsigned n = 0;

	for (unsigned i = 0; i < vm->nvcpus; i++)
		n += vm->vcpus[i].thread_started;
	return n;
}

void vm_park_vcpus(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	atomic_store(&vm->want_park, true);
	kick_all(vm);
	while (vm->parked < threads_started(vm))
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
}

void vm_unpark_vcpus(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	update_want_park(vm);
	pthread_mutex_unlock(&vm->lock);
}

const char *vm_state_name(enum vm_state s)
{
	switch (s) {
	case VM_STATE_CREATED:
		return "starting";
	case VM_STATE_RUNNING:
		return "running";
	case VM_STATE_PAUSED:
		return "paused";
	case VM_STATE_SHUTTING_DOWN:
		return "shutting-down";
	case VM_STATE_RESETTING:
		return "resetting";
	}
	return "unknown";
}

enum vm_state vm_get_state(struct vm *vm)
{
	enum vm_state s;

	pthread_mutex_lock(&vm->lock);
	s = vm->state;
	pthread_mutex_unlock(&vm->lock);
	return s;
}

uint64_t vm_uptime_ms(struct vm *vm)
{
	return vm->start_ns ? (now_ns() - vm->start_ns) / 1000000 : 0;
}

void vm_emit_event(struct vm *vm, const char *json)
{
	machine_emit_event(vm, json);
}

static void emit_state(struct vm *vm, enum vm_state s)
{
	char line[64];

	snprintf(line, sizeof(line), "{\"event\":\"state\",\"state\":\"%s\"}", vm_state_name(s));
	vm_emit_event(vm, line);
}

int vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_STATE_RUNNING || vm->stop_reason != VM_STOP_NONE) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	vm->pause_requested = true;
	update_want_park(vm);
	pthread_mutex_unlock(&vm->lock);
	vm_park_vcpus(vm);
	machine_pause(vm);
	pthread_mutex_lock(&vm->lock);
	vm->state = VM_STATE_PAUSED;
	pthread_mutex_unlock(&vm->lock);
	emit_state(vm, VM_STATE_PAUSED);
	return 0;
}

int vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->state != VM_STATE_PAUSED) {
		pthread_mutex_unlock(&vm->lock);
		return -EBUSY;
	}
	pthread_mutex_unlock(&vm->lock);
	machine_resume(vm);
	pthread_mutex_lock(&vm->lock);
	vm->pause_requested = false;
	vm->state = VM_STATE_RUNNING;
	update_want_park(vm);
	pthread_mutex_unlock(&vm->lock);
	emit_state(vm, VM_STATE_RUNNING);
	return 0;
}

int vm_press_power_button(struct vm *vm)
{
	int ret = machine_press_power_button(vm);

	if (ret == 0)
		vm_emit_event(vm, "{\"event\":\"power-button\"}");
	return ret;
}

/* ---- memory --------------------------------------------------------- */

static unsigned host_phys_bits(struct vm *vm)
{
	struct kvm_cpuid2 *c = vm->cpuid_supported;

	for (unsigned i = 0; i < c->nent; i++)
		if (c->entries[i].function == 0x80000008 && (c->entries[i].eax & 0xff))
			return c->entries[i].eax & 0xff;
	return 36;
}

/* The file behind guest RAM. Preferably an unnamed file on a tmpfs
 * instance of our own, mounted with huge=within_size through the new
 * mount API (fsopen/fsmount: the mount is attached to no namespace and
 * goes away with the file), so that guest RAM is backed by transparent
 * huge pages whatever the host's shmem_enabled says — Debian's default,
 * "never", would give memfds 4 KiB pages only. Huge pages matter for
 * O_DIRECT disk I/O, which pins every page of a guest buffer (1 MiB
 * sequential reads went from 718 to 1275 IOPS), and for the guest's TLB.
 * Without the privilege to create a mount, or without THP in the kernel,
 * a plain memfd. Either way it is a shmem file mapped MAP_SHARED, so it
 * can be saved, migrated and shared (DESIGN.md §4). */
static int ram_file(uint64_t size, bool *huge)
{
	char sz[32];
	int fs, mnt, fd = -1;

	*huge = false;
	fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
	if (fs >= 0) {
		snprintf(sz, sizeof(sz), "%" PRIu64, (uint64_t)ALIGN_UP(size, (uint64_t)2 << 20));
		if (fsconfig(fs, FSCONFIG_SET_STRING, "huge", "within_size", 0) == 0 &&
		    fsconfig(fs, FSCONFIG_SET_STRING, "size", sz, 0) == 0 &&
		    fsconfig(fs, FSCONFIG_SET_STRING, "mode", "0700", 0) == 0 &&
		    fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0) {
			mnt = fsmount(fs, FSMOUNT_CLOEXEC,
				      MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID);
			if (mnt >= 0) {
				fd = openat(mnt, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
				close(mnt);
			}
		}
		close(fs);
	}
	if (fd >= 0) {
		*huge = true;
		return fd;
	}
	log_debug("guest RAM: no private huge-page tmpfs (%s); using a memfd", strerror(errno));
	return memfd_create("cloison-guest", MFD_CLOEXEC);
}

/* Guest RAM's layout: below the PCI hole, and the rest from 4 GiB. */
static int memory_layout(struct vm *vm, char *err, size_t errlen)
{
	uint64_t size = vm->cfg.memory;
	uint64_t low = MIN(size, LAYOUT_LOWMEM_END);
	uint64_t top = size > low ? LAYOUT_HIGHMEM_START + (size - low) : low;
	unsigned bits = host_phys_bits(vm);
	struct guest_mem *m = &vm->mem;

	if (bits < 64 && top > 1ULL << bits)
		return vmm_fail(err, errlen, -EINVAL,
			    "--memory %" PRIu64 " MiB needs %" PRIu64 " GiB of guest-physical "
			    "space but this CPU has %u physical address bits",
			    size >> 20, top >> 30, bits);
	m->total = size;
	m->regions[0] = (struct guest_mem_region){ .gpa = 0, .size = low, .memfd_off = 0 };
	m->nregions = 1;
	if (size > low) {
		m->regions[1] = (struct guest_mem_region){
			.gpa = LAYOUT_HIGHMEM_START, .size = size - low, .memfd_off = low };
		m->nregions = 2;
	}
	return 0;
}

/* The memfd, and each region mapped and given to KVM as a memory slot:
 * the memfd's pages shared, or, with private_fd (a lazy restore's memory
 * file, vm_state.c), that file's copy-on-write. The slots are made before
 * any vCPU: with vCPUs, each change of a slot or of what backs it costs
 * KVM a flush of them all. */
static int setup_memory(struct vm *vm, int private_fd, char *err, size_t errlen)
{
	struct guest_mem *m = &vm->mem;

	m->memfd = ram_file(m->total, &m->huge);
	if (m->memfd < 0)
		return vmm_fail(err, errlen, -errno, "creating guest memory: %s", strerror(errno));
	if (ftruncate(m->memfd, (off_t)m->total) < 0)
		return vmm_fail(err, errlen, -errno, "sizing guest memory to %" PRIu64 " bytes: %s",
			    m->total, strerror(errno));
	for (unsigned i = 0; i < m->nregions; i++) {
		struct guest_mem_region *r = &m->regions[i];
		struct kvm_userspace_memory_region slot;
		int fd = private_fd >= 0 ? private_fd : m->memfd;
		void *p = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
			       (private_fd >= 0 ? MAP_PRIVATE : MAP_SHARED) | MAP_NORESERVE, fd,
			       (off_t)r->memfd_off);
		if (p == MAP_FAILED)
			return vmm_fail(err, errlen, -errno, "mapping guest memory: %s", strerror(errno));
		r->hva = p;
		if (private_fd < 0)
			madvise(p, r->size, MADV_HUGEPAGE);
		slot = (struct kvm_userspace_memory_region){
			.slot = i,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uintptr_t)p,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return vmm_fail(err, errlen, -errno, "KVM_SET_USER_MEMORY_REGION: %s",
				    strerror(errno));
	}
	return 0;
}

static void free_memory(struct vm *vm)
{
	for (unsigned i = 0; i < vm->mem.nregions; i++)
		if (vm->mem.regions[i].hva)
			munmap(vm->mem.regions[i].hva, vm->mem.regions[i].size);
	if (vm->mem.memfd > 0)
		close(vm->mem.memfd);
	if (vm->mem.lazy) {
		close(vm->mem.lazy_fd);
		close(vm->mem.pagemap_fd);
	}
}

/* ---- loading -------------------------------------------------------- */

struct mapped_file {
	const uint8_t *data;
	size_t len;
};

static int map_file(const char *path, const char *what, struct mapped_file *f, char *err,
		    size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	f->data = NULL;
	f->len = 0;
	if (fd < 0)
		return vmm_fail(err, errlen, -EINVAL, "cannot open the %s '%s': %s", what, path,
			    strerror(errno));
	if (fstat(fd, &st) < 0) {
		ret = vmm_fail(err, errlen, -EINVAL, "cannot stat the %s '%s': %s", what, path,
			   strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		ret = vmm_fail(err, errlen, -EINVAL, "the %s '%s' is not a regular file", what, path);
	} else if (st.st_size == 0) {
		ret = vmm_fail(err, errlen, -EINVAL, "the %s '%s' is empty", what, path);
	} else {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED)
			ret = vmm_fail(err, errlen, -EINVAL, "cannot read the %s '%s': %s", what, path,
				   strerror(errno));
		else {
			f->data = p;
			f->len = (size_t)st.st_size;
		}
	}
	close(fd);
	return ret;
}

static void unmap_file(struct mapped_file *f)
{
	if (f->data)
		munmap((void *)f->data, f->len);
}

/* Writes the ACPI tables and the kernel into (zeroed) guest memory. */
static int load_guest(struct vm *vm, char *err, size_t errlen)
{
	struct mapped_file kernel, initrd = { 0 };
	struct boot_input in;
	char why[256] = "";
	int ret;

	ret = machine_build_acpi(vm, err, errlen);
	if (ret)
		return ret;
	ret = map_file(vm->cfg.kernel, "kernel", &kernel, err, errlen);
	if (ret)
		return ret;
	if (vm->cfg.initrd) {
		ret = map_file(vm->cfg.initrd, "initrd", &initrd, err, errlen);
		if (ret)
			goto out;
	}
	in = (struct boot_input){
		.protocol = vm->cfg.protocol,
		.kernel = kernel.data,
		.kernel_len = kernel.len,
		.initrd = initrd.data,
		.initrd_len = initrd.len,
		.cmdline = vm->cfg.cmdline ? vm->cfg.cmdline : "",
		.e820 = &vm->e820,
		.rsdp_gpa = vm->rsdp_gpa,
	};
	ret = boot_load_kernel(&vm->mem, &in, &vm->boot, why, sizeof(why));
	if (ret)
		ret = vmm_fail(err, errlen, -EINVAL, "kernel '%s': %s", vm->cfg.kernel, why);
	else
		log_debug("loaded %s: entry 0x%" PRIx64 ", image [0x%" PRIx64 ", 0x%" PRIx64 ")%s",
			  vm->boot.format, vm->boot.rip, vm->boot.kernel_start, vm->boot.kernel_end,
			  vm->boot.initrd_gpa ? ", initrd" : "");
	unmap_file(&initrd);
out:
	unmap_file(&kernel);
	return ret;
}

/* ---- creation and teardown ------------------------------------------ */

static int open_kvm(struct vm *vm, char *err, size_t errlen)
{
	int api;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0)
		return vmm_fail(err, errlen, -errno, "cannot open /dev/kvm: %s (run --check-host)",
			    strerror(errno));
	api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION)
		return vmm_fail(err, errlen, -ENOTSUP, "KVM API version %d; cloison needs %d", api,
			    KVM_API_VERSION);
	do
		vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	while (vm->vm_fd < 0 && errno == EINTR);
	if (vm->vm_fd < 0)
		return vmm_fail(err, errlen, -errno, "KVM_CREATE_VM: %s", strerror(errno));
	return 0;
}

int vm_max_vcpus(int kvm_fd)
{
	int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);

	if (n <= 0)
		n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (n <= 0)
		n = 4;
	return MIN(n, VM_MAX_VCPUS);
}

static int setup_irqchip(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	int ret;

	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
		return vmm_fail(err, errlen, -errno, "KVM_SET_TSS_ADDR: %s", strerror(errno));
	{
		uint64_t addr = KVM_IDENTITY_MAP_ADDR;
		if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0)
			return vmm_fail(err, errlen, -errno, "KVM_SET_IDENTITY_MAP_ADDR: %s",
				    strerror(errno));
	}
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return vmm_fail(err, errlen, -errno, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return vmm_fail(err, errlen, -errno, "KVM_CREATE_PIT2: %s", strerror(errno));
	ret = routes_init(vm);
	if (ret)
		return vmm_fail(err, errlen, ret, "the GSI routing table: %s", strerror(-ret));
	for (unsigned i = 0; i < 3; i++) {
		vm->irqchip0[i].chip_id = i;
		if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &vm->irqchip0[i]) < 0)
			return vmm_fail(err, errlen, -errno, "KVM_GET_IRQCHIP: %s", strerror(errno));
	}
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &vm->pit0) < 0)
		return vmm_fail(err, errlen, -errno, "KVM_GET_PIT2: %s", strerror(errno));
	return 0;
}

static int get_msr_list(struct vm *vm)
{
	/* a guess that fits today's KVM (~100) in one ioctl; E2BIG says how
	 * many there are */
	uint32_t n = 512;

	for (int tries = 0; tries < 2; tries++) {
		struct kvm_msr_list *l = calloc(1, sizeof(*l) + n * sizeof(l->indices[0]));

		if (!l)
			return -ENOMEM;
		l->nmsrs = n;
		if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) == 0) {
			vm->msr_list = l;
			return 0;
		}
		int e = errno;
		n = l->nmsrs;
		free(l);
		if (e != E2BIG)
			return -e;
	}
	return -E2BIG;
}


/* Everything of vm_create after the allocation; rs is the restore's
 * (cfg.restore) once vm_state_open has read it. */
static int build(struct vm *vm, struct vm_restore *rs, char *err, size_t errlen)
{
	const struct vm_config *cfg = &vm->cfg;
	int ret, max;

	ret = open_kvm(vm, err, errlen);
	if (ret)
		return ret;
	max = vm_max_vcpus(vm->kvm_fd);
	if (cfg->ncpus < 1 || cfg->ncpus > (unsigned)max)
		return vmm_fail(err, errlen, -EINVAL,
			    "--cpus %u: this host's KVM allows 1 to %d vCPUs", cfg->ncpus, max);
	ret = cpuid_get_supported_cached(vm->kvm_fd, cfg->cpuid_cache, &vm->cpuid_supported);
	if (ret)
		return vmm_fail(err, errlen, ret, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-ret));
	ret = get_msr_list(vm);
	if (ret)
		return vmm_fail(err, errlen, ret, "KVM_GET_MSR_INDEX_LIST: %s", strerror(-ret));
	ret = memory_layout(vm, err, errlen);
	if (ret)
		return ret;
	/* --restore: state.bin is read and checked, and the memory file
	 * opened, before guest RAM is made, so that a lazy restore maps the
	 * file from the start. Everything the guest sees comes from the saved
	 * state, so the kernel is not loaded (work thrown away, and page
	 * faults on a path measured in milliseconds); a reset loads it, and
	 * the worker's start checked that it opens (main.c). */
	if (cfg->restore) {
		ret = vm_state_open(vm, cfg->restore, rs, err, errlen);
		if (ret)
			return ret;
	}
	ret = setup_memory(vm, cfg->restore && !cfg->restore_eager ? rs->mem_fd : -1, err, errlen);
	if (ret)
		return ret;
	ret = e820_build(cfg->memory, &vm->e820);
	if (ret)
		return vmm_fail(err, errlen, -EINVAL, "--memory: %" PRIu64 " bytes is not usable",
			    cfg->memory);
	ret = setup_irqchip(vm, err, errlen);
	if (ret)
		return ret;
	ret = evloop_create(&vm->loop);
	if (ret)
		return vmm_fail(err, errlen, ret, "creating the event loop: %s", strerror(-ret));
	ret = io_bus_create(&vm->pio, "pio");
	if (!ret)
		ret = io_bus_create(&vm->mmio, "mmio");
	if (ret)
		return vmm_fail(err, errlen, ret, "creating the I/O buses: %s", strerror(-ret));

	vm->vcpus = calloc(cfg->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return vmm_fail(err, errlen, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < cfg->ncpus; i++) {
		vm->vcpus[i].fd = -1;
		ret = vcpu_create(vm, i, err, errlen);
		if (ret)
			return ret;
		vm->nvcpus = i + 1;
	}
	ret = machine_create_devices(vm, err, errlen);
	if (ret)
		return ret;
	if (cfg->restore)
		return vm_state_restore(vm, rs, err, errlen);
	ret = load_guest(vm, err, errlen);
	if (ret)
		return ret;
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		ret = vcpu_reset(&vm->vcpus[i], false);
		if (ret)
			return vmm_fail(err, errlen, ret, "setting up vCPU %u: %s", i, strerror(-ret));
	}
	return 0;
}

int vm_create(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	struct vm_restore rs;
	int ret;

	if (!vm)
		return vmm_fail(err, errlen, -ENOMEM, "out of memory");
	vm->cfg = *cfg;
	vm->kvm_fd = vm->vm_fd = vm->mem.memfd = vm->signal_fd = -1;
	vm->mem.lazy_fd = vm->mem.pagemap_fd = -1;
	vm->kick_signal = SIGUSR1;
	vm->state = VM_STATE_CREATED;
	atomic_init(&vm->want_park, true); /* vCPU threads start parked */
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	*out = vm;
	vm_state_init(&rs);
	ret = build(vm, &rs, err, errlen);
	vm_state_close(&rs);
	return ret;
}

int vm_watch_signals(struct vm *vm, const sigset_t *set, void (*cb)(void *, uint32_t))
{
	int ret;

	vm->signal_fd = signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (vm->signal_fd < 0)
		return -errno;
	ret = evloop_add_fd(vm->loop, vm->signal_fd, EPOLLIN, cb, vm);
	return ret;
}

int vm_signal_fd(struct vm *vm)
{
	return vm->signal_fd;
}

static void *loop_thread(void *arg)
{
	struct vm *vm = arg;
	int ret = seccomp_thread_enter(SECCOMP_THREAD_EVLOOP);

	if (ret)
		vm_request_stop(vm, VM_STOP_VMM_ERROR, "cannot install the event loop's filter");
	else
		ret = evloop_run(vm->loop);

	if (ret)
		vm_request_stop(vm, VM_STOP_VMM_ERROR, "the device event loop failed");
	return NULL;
}

int vm_start(struct vm *vm)
{
	int ret = vcpu_install_kick_signal(vm->kick_signal);

	if (ret)
		return ret;
	/* vCPU threads start parked (state CREATED); the event loop, which
	 * serves the control socket, starts last so that no request sees a
	 * half-started VM. */
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		ret = vcpu_start_thread(&vm->vcpus[i]);
		if (ret)
			return ret;
	}
	vm->start_ns = now_ns();
	/* --paused: the same state a "pause" leaves, so "resume" needs nothing
	 * special; devices are quiesced the same way too. */
	if (vm->cfg.start_paused)
		machine_pause(vm);
	pthread_mutex_lock(&vm->lock);
	vm->pause_requested = vm->cfg.start_paused;
	vm->state = vm->cfg.start_paused ? VM_STATE_PAUSED : VM_STATE_RUNNING;
	update_want_park(vm);
	pthread_mutex_unlock(&vm->lock);
	ret = pthread_create(&vm->loop_thread, NULL, loop_thread, vm);
	if (ret)
		return -ret;
	vm->loop_running = true;
	return 0;
}

/* In-place reset (see the top of the file). vCPUs are parked. */
static int reset_in_place(struct vm *vm)
{
	char err[512];
	int ret;

	machine_pause(vm);
	/* a lazily restored VM's RAM goes back to its own memfd */
	ret = vm_state_drop_lazy(&vm->mem);
	if (ret) {
		log_error("reset: cannot map guest memory back: %s", strerror(-ret));
		return ret;
	}
	if (fallocate(vm->mem.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		      (off_t)vm->mem.total) < 0) {
		for (unsigned i = 0; i < vm->mem.nregions; i++)
			memset(vm->mem.regions[i].hva, 0, vm->mem.regions[i].size);
	}
	for (unsigned i = 0; i < 3; i++)
		if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &vm->irqchip0[i]) < 0)
			return -errno;
	if (ioctl(vm->vm_fd, KVM_SET_PIT2, &vm->pit0) < 0)
		return -errno;
	machine_reset_devices(vm);
	ret = load_guest(vm, err, sizeof(err));
	if (ret) {
		log_error("reset: %s", err);
		return ret;
	}
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		ret = vcpu_reset(&vm->vcpus[i], true);
		if (ret)
			return ret;
	}
	machine_resume(vm);
	return 0;
}

static void emit_exit(struct vm *vm, const char *reason, int status, const char *detail)
{
	char line[512];

	if (detail && *detail)
		snprintf(line, sizeof(line),
			 "{\"event\":\"exit\",\"reason\":\"%s\",\"status\":%d,\"detail\":\"%s\"}",
			 reason, status, detail);
	else
		snprintf(line, sizeof(line), "{\"event\":\"exit\",\"reason\":\"%s\",\"status\":%d}",
			 reason, status);
	vm_emit_event(vm, line);
}

int vm_run(struct vm *vm)
{
	for (;;) {
		enum vm_stop_reason reason;
		char detail[sizeof(vm->stop_detail)];
		char line[128];
		int ret;

		pthread_mutex_lock(&vm->lock);
		while (vm->stop_reason == VM_STOP_NONE)
			pthread_cond_wait(&vm->cond, &vm->lock);
		reason = vm->stop_reason;
		memcpy(detail, vm->stop_detail, sizeof(detail));
		if (reason == VM_STOP_POWEROFF)
			vm->state = VM_STATE_SHUTTING_DOWN;
		pthread_mutex_unlock(&vm->lock);
		vm_park_vcpus(vm);

		switch (reason) {
		case VM_STOP_POWEROFF:
			emit_state(vm, VM_STATE_SHUTTING_DOWN);
			emit_exit(vm, "poweroff", 0, NULL);
			return 0;
		case VM_STOP_SAVED:
			emit_exit(vm, "saved", 5, NULL);
			return 5;
		case VM_STOP_CRASH:
			log_error("the guest crashed: %s", detail);
			emit_exit(vm, "crash", 4, detail);
			return 4;
		case VM_STOP_VMM_ERROR:
		case VM_STOP_NONE:
			log_error("%s", detail);
			emit_exit(vm, "error", 1, detail);
			return 1;
		case VM_STOP_RESET:
			break;
		}
		snprintf(line, sizeof(line), "{\"event\":\"reset\",\"reason\":\"%s\"}",
			 strcmp(detail, "control") ? "guest" : "control");
		vm_emit_event(vm, line);
		if (vm->cfg.no_reboot) {
			emit_exit(vm, "reset", 3, NULL);
			return 3;
		}
		pthread_mutex_lock(&vm->lock);
		vm->state = VM_STATE_RESETTING;
		pthread_mutex_unlock(&vm->lock);
		emit_state(vm, VM_STATE_RESETTING);
		ret = reset_in_place(vm);
		if (ret) {
			snprintf(detail, sizeof(detail), "in-place reset failed: %s", strerror(-ret));
			log_error("%s", detail);
			emit_exit(vm, "error", 1, detail);
			return 1;
		}
		pthread_mutex_lock(&vm->lock);
		if (vm->stop_reason == VM_STOP_RESET) {
			vm->stop_reason = VM_STOP_NONE;
			vm->stop_detail[0] = 0;
		} /* else a power-off or crash came meanwhile: handled next round */
		vm->pause_requested = false;
		vm->state = VM_STATE_RUNNING;
		vm->reset_gen++;
		update_want_park(vm);
		pthread_mutex_unlock(&vm->lock);
		emit_state(vm, VM_STATE_RUNNING);
	}
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	pthread_mutex_lock(&vm->lock);
	vm->quit = true;
	update_want_park(vm);
	pthread_cond_broadcast(&vm->cond);
	kick_all(vm);
	pthread_mutex_unlock(&vm->lock);
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		if (!vm->vcpus[i].thread_started)
			continue;
		pthread_join(vm->vcpus[i].thread, NULL);
		/* Under the lock: a late stop request must not signal it. */
		pthread_mutex_lock(&vm->lock);
		vm->vcpus[i].thread_started = false;
		pthread_mutex_unlock(&vm->lock);
	}
	if (vm->loop_running) {
		evloop_stop(vm->loop);
		pthread_join(vm->loop_thread, NULL);
	}
	control_destroy(vm->control);
	chardev_destroy(vm->chardev);
	if (vm->signal_fd >= 0)
		close(vm->signal_fd);
	machine_destroy_devices(vm);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	free(vm->vcpus);
	if (vm->pio)
		io_bus_destroy(vm->pio);
	if (vm->mmio)
		io_bus_destroy(vm->mmio);
	evloop_destroy(vm->loop);
	free(vm->routes.table);
	free(vm->msr_list);
	free(vm->cpuid_supported);
	free_memory(vm);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	pthread_mutex_destroy(&vm->lock);
	pthread_cond_destroy(&vm->cond);
	free(vm);
}
