/* struct vm and struct vcpu, private to the worker core (vm.c, vcpu.c,
 * control.c, chardev.c, main.c). Devices see only vm.h. */
#ifndef CLOISON_VMM_VM_INTERNAL_H
#define CLOISON_VMM_VM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/guid.h"
#include "vmm/boot/boot.h"
#include "vmm/guest_mem.h"
#include "vmm/vm.h"

#define VM_MAX_VCPUS 255
#define VM_MIN_MEMORY (64ULL << 20)
#define VM_MAX_MEMORY (1ULL << 40)

struct control;
struct chardev;
struct serial;
struct i8042;
struct rtc;
struct acpi_pm;

enum vm_state {
	VM_STATE_CREATED,
	VM_STATE_RUNNING,
	VM_STATE_PAUSED,
	VM_STATE_SHUTTING_DOWN,
	VM_STATE_RESETTING,
};

struct vm_config {
	const char *name;
	const char *kernel;
	const char *initrd; /* NULL for none */
	const char *cmdline;
	uint64_t memory;
	unsigned ncpus;
	bool no_reboot;
	bool start_paused; /* --paused: vCPUs wait for "resume" */
	const char *restore; /* --restore DIR: the saved state to go on from */
	const char *cpuid_cache; /* --cpuid-cache FILE: KVM's supported CPUID */
	bool restore_eager;  /* --restore-memory eager: read RAM in before running */
	enum boot_protocol protocol;
	const char *const *disks; /* --disk specs, ndisks of them */
	unsigned ndisks;
	const char *const *nets;
	unsigned nnets;
	const char *console; /* --console spec, NULL for none */
	const char *vsock;   /* --vsock spec, NULL for none */
	const char *balloon; /* --balloon spec, NULL for none */
	bool has_generation_id; /* --generation-id: a VM Generation ID device */
	struct guid generation_id;
	const char *jail_dir; /* --jail-dir: the one directory a jailed worker writes */
	pid_t host_pid;	      /* in --jail: the worker's pid as the host sees it; 0 = getpid() */
};

struct vcpu {
	struct vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	unsigned reset_gen;		 /* the vm->reset_gen this vCPU was set up for */
	struct kvm_cpuid2 *cpuid;	 /* what KVM_SET_CPUID2 got */
	struct kvm_lapic_state lapic0;	 /* power-on LAPIC, for reset */
	struct kvm_xcrs xcrs0;
	bool have_xcrs;
	bool io_pending; /* last exit was PIO/MMIO: KVM completes it on re-entry */
};

struct gsi_routes {
	pthread_mutex_t lock;
	struct kvm_irq_routing *table; /* header + entries[cap] */
	unsigned cap;
	unsigned max_gsi; /* KVM_CAP_IRQ_ROUTING */
};

struct vm {
	int kvm_fd;
	int vm_fd;
	struct vm_config cfg;
	struct guest_mem mem;
	struct io_bus *pio;
	struct io_bus *mmio;
	struct pci_bus *pci;
	struct virtio_devices *virtio; /* the virtio part's (vm_virtio_slot) */
	struct evloop *loop;
	pthread_t loop_thread;
	bool loop_running;
	struct vcpu *vcpus;
	unsigned nvcpus;
	struct boot_entry boot;
	struct e820_map e820;
	uint64_t rsdp_gpa;
	struct gsi_routes routes;
	struct kvm_irqchip irqchip0[3]; /* PIC master, PIC slave, IOAPIC at power-on */
	struct kvm_pit_state2 pit0;
	struct kvm_msr_list *msr_list; /* MSRs KVM lets us save/set */
	struct kvm_cpuid2 *cpuid_supported;

	/* Run control, under lock. vCPUs park while want_park is set. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	atomic_bool want_park;
	bool pause_requested;
	bool quit;
	unsigned parked;
	unsigned reset_gen;
	enum vm_state state;
	enum vm_stop_reason stop_reason; /* first request wins, NONE = none pending */
	char stop_detail[160];
	uint64_t start_ns;
	int kick_signal;

	/* Platform devices (hw.h) and front ends. */
	struct serial *serial;
	struct i8042 *i8042;
	struct rtc *rtc;
	struct acpi_pm *acpi_pm;
	bool have_virtio;
	struct machine_hotplug *hot; /* machine.c: ACPI PCI hotplug, hot-added devices */
	struct vmgenid *vmgenid;     /* NULL without --generation-id */
	size_t ndevices_created; /* machine.c: entries of its registry set up */
	uint64_t paused_clock;	 /* kvmclock when the VM was paused (machine.c) */
	bool clock_paused;
	struct control *control;
	struct chardev *chardev;
	int signal_fd;

	/* irq_stats.c: interrupts raised, by kind */
	atomic_uint_least64_t irq_msi;
	atomic_uint_least64_t irq_lines[24];
};

/* vm.c --------------------------------------------------------------- */

/* Creates the KVM VM, guest memory, irqchip, buses, platform devices and
 * vCPUs, and loads the kernel. Nothing runs yet. Returns 0; -EINVAL (usage:
 * bad kernel/initrd/size/vCPU count, err says which) or other -errno (host
 * failure, err says what). */
int vm_create(const struct vm_config *cfg, struct vm **out, char *err, size_t errlen);
/* Starts the event-loop thread and the vCPU threads. 0 or -errno. */
int vm_start(struct vm *vm);
/* Waits for stop requests and acts on them (in-place reset, power off,
 * crash) until the worker must exit; returns the exit status (docs/vmm.md). */
int vm_run(struct vm *vm);
/* Stops every thread and frees everything; safe on a partly created vm. */
void vm_destroy(struct vm *vm);

/* Control-socket actions (evloop thread). 0, or -EBUSY when the state does
 * not allow it (with *state telling the current one). */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
/* Presses the ACPI power button; 0 or -ENODEV without ACPI PM. */
int vm_press_power_button(struct vm *vm);
enum vm_state vm_get_state(struct vm *vm);
const char *vm_state_name(enum vm_state s);
uint64_t vm_uptime_ms(struct vm *vm);
/* The most vCPUs this host's KVM allows (capped at VM_MAX_VCPUS). */
int vm_max_vcpus(int kvm_fd);
/* Reads the signals in set through a signalfd on the event loop; cb gets
 * vm as opaque and reads vm_signal_fd(vm). 0 or -errno. */
int vm_watch_signals(struct vm *vm, const sigset_t *set, void (*cb)(void *, uint32_t));
int vm_signal_fd(struct vm *vm);
/* Broadcasts an event line (a JSON object) to control clients. */
void vm_emit_event(struct vm *vm, const char *json);

/* Parks every vCPU (waits until all are parked) / lets them run again
 * unless a pause or stop still holds them. */
void vm_park_vcpus(struct vm *vm);
void vm_unpark_vcpus(struct vm *vm);

/* vcpu.c ------------------------------------------------------------- */

/* Creates vCPU index: fd, kvm_run, CPUID, MSRs, LAPIC LVTs. 0 or -errno,
 * with err naming what failed. */
int vcpu_create(struct vm *vm, unsigned index, char *err, size_t errlen);
/* Puts the vCPU in its power-on state for vm->boot (BSP: the loader's
 * entry state; APs: waiting for INIT/SIPI); in_place for a reboot of a VM
 * that ran (the TSC keeps counting then). 0 or -errno. */
int vcpu_reset(struct vcpu *vcpu, bool in_place);
int vcpu_start_thread(struct vcpu *vcpu);
/* Interrupts KVM_RUN so the thread looks at vm->want_park. */
void vcpu_kick(struct vcpu *vcpu);
void vcpu_destroy(struct vcpu *vcpu);
/* Writes the vCPU's registers to stderr (crash report). */
void vcpu_dump_registers(struct vcpu *vcpu);
/* The calling thread's signal for kicks; installs the handler. */
int vcpu_install_kick_signal(int sig);

#endif
