/*
 * vm.h - one microVM: the KVM VM and vCPU fds, guest RAM, the device buses,
 * and the run control (pause, resume, stop) shared by the vCPU threads and the
 * main event loop.
 *
 * Threads: each vCPU has its own thread running KVM_RUN; the main thread runs
 * the event loop (control socket, vsock host sockets, signals). Device state
 * is touched by both, always under vm->dev_lock. Run control (pause/stop) is
 * under vm->run_lock. Lock order: run_lock is never taken while holding
 * dev_lock.
 *
 * Call order: vm_open() -> set vm->mem (gm_init_*) -> vm_map_memory() ->
 * vm_create_vcpus() -> device set-up and either boot set-up or restore ->
 * vm_start() -> ... -> vm_join().
 */
#ifndef HEARTH_VMM_VM_H
#define HEARTH_VMM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "guest_mem.h"
#include "i8042.h"
#include "io_bus.h"
#include "pci_host.h"
#include "uart.h"

/* Process exit codes of hearth-vmm (also what `status` reports). */
enum vmm_exit {
	VMM_EXIT_GUEST_STOP = 0,  /* the guest reset/powered off the machine (i8042 reset, reboot) */
	VMM_EXIT_ERROR = 1,       /* hearth-vmm failed: host set-up, bad snapshot, KVM error */
	VMM_EXIT_USAGE = 2,       /* bad command line */
	VMM_EXIT_GUEST_CRASH = 3, /* triple fault, or KVM could not emulate the guest */
	VMM_EXIT_STOPPED = 4,     /* stopped from outside: control socket `stop`, SIGTERM/SIGINT */
	VMM_EXIT_CGROUP_OOM = 5,  /* jailed: killed by its cgroup's memory limit (jail.h) */
};

#define VMM_MAX_VCPUS 16
#define VMM_MAX_VIRTIO 4

struct virtio_mmio_dev;
struct vm;

struct vcpu {
	struct vm *vm;
	int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	bool io_pending; /* the last exit was I/O that KVM completes on the next KVM_RUN */
	struct kvm_cpuid2 *cpuid;
};

struct vm {
	int kvm_fd, vm_fd;
	int run_size;
	struct guest_mem mem;
	unsigned nvcpus;
	struct vcpu vcpu[VMM_MAX_VCPUS];
	struct io_bus pio, mmio;

	pthread_mutex_t dev_lock;
	struct uart uart;
	struct i8042 i8042;
	struct pci_host pci;
	struct virtio_mmio_dev *virtio[VMM_MAX_VIRTIO];
	int nvirtio;
	uint64_t unmapped_mmio, unmapped_pio;

	pthread_mutex_t run_lock;
	pthread_cond_t run_cond;
	bool pause_req, paused;
	unsigned parked;   /* vCPU threads waiting in the pause loop */
	bool stopping;
	int exit_code;
	char exit_reason[256];
	int stop_efd;      /* eventfd, readable once the VM has stopped */
};

/*
 * Opens /dev/kvm, creates the VM and hides the PMU MSRs
 * (x86_64/msr_filter.h) while it has no vCPUs: installed later, the filter's
 * SRCU wait cost 13 ms per VM on the development host (ci/bench vmm).
 */
void vm_open(struct vm *vm, unsigned nvcpus);
/* Registers vm->mem as memory slot 0 at guest-physical 0. */
void vm_map_memory(struct vm *vm);
/*
 * Creates the in-kernel irqchip (PIC, IOAPIC, LAPIC) and PIT, then the vCPUs
 * with filtered CPUID
 * (x86_64/cpuid.h). After vm_map_memory(): a memslot
 * added once the irqchip exists costs a long kernel wait.
 */
void vm_create_vcpus(struct vm *vm);
/* Starts one thread per vCPU. */
void vm_start(struct vm *vm);
/* Asks every vCPU to stop for good; the first caller's code and reason win. */
void vm_stop(struct vm *vm, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Parks every vCPU outside KVM_RUN with its pending I/O completed; returns once all are parked. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* Joins the vCPU threads (after stop). */
void vm_join(struct vm *vm);
/* Sets an irqchip input line (GSI) level. */
void vm_set_irq(struct vm *vm, unsigned gsi, int level);
/* Names which vCPU thread is calling, or -1 (used by seccomp and logging). */
int vm_current_vcpu(void);

#endif
