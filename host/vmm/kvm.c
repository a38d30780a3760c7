/* kvm.c - the KVM VM, its vCPU threads, and run control. See vm.h. */
#include "fileref.h"
#include "vm.h"

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "seccomp_filter.h"
#include "x86_64/cpuid.h"
#include "x86_64/msr_filter.h"

/* Where KVM may put its TSS: three pages just below the 4 GiB boundary's BIOS area. */
#define KVM_TSS_ADDR 0xfffbd000ul
#define UNMAPPED_LOG_LIMIT 8

static __thread int current_vcpu = -1;

int vm_current_vcpu(void)
{
	return current_vcpu;
}

static void kick_handler(int sig)
{
	(void)sig;
}

void vm_open(struct vm *vm, unsigned nvcpus)
{
	memset(vm, 0, sizeof(*vm));
	vm->nvcpus = nvcpus;
	pthread_mutex_init(&vm->dev_lock, NULL);
	pthread_mutex_init(&vm->run_lock, NULL);
	pthread_cond_init(&vm->run_cond, NULL);
	vm->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_efd < 0)
		err(VMM_EXIT_ERROR, "eventfd failed");

	vm->kvm_fd = fref_open("/dev/kvm", O_RDWR | O_CLOEXEC, 0); /* opened before a jail */
	if (vm->kvm_fd < 0)
		err(VMM_EXIT_ERROR, "KVM: open /dev/kvm failed");
	int v = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION)
		errx(VMM_EXIT_ERROR, "KVM: API version %d, want %d", v, KVM_API_VERSION);
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (CREATE_VM) failed");
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (SET_TSS_ADDR) failed");
	x86_msr_filter_install(vm);
	vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size <= 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (GET_VCPU_MMAP_SIZE) failed");

	struct sigaction sa = { .sa_handler = kick_handler };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		err(VMM_EXIT_ERROR, "sigaction (SIGUSR1) failed");
}

void vm_map_memory(struct vm *vm)
{
	struct kvm_userspace_memory_region r = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = vm->mem.size,
		.userspace_addr = (uintptr_t)vm->mem.host,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (SET_USER_MEMORY_REGION) failed");
}

/*
 * After the memslot, not before: with an in-kernel irqchip already present,
 * the first KVM_SET_USER_MEMORY_REGION waited ~7.5 ms (0.04 ms of CPU) on the
 * development hosts, against ~0.1 ms in this order (measured by ci/bench vmm).
 */
static void create_irqchip(struct vm *vm)
{
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (CREATE_IRQCHIP) failed");
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (CREATE_PIT2) failed");
}

void vm_create_vcpus(struct vm *vm)
{
	create_irqchip(vm); /* the vCPUs' LAPICs need it */
	struct kvm_cpuid2 *sup = cpuid_get_supported(vm->kvm_fd);
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		struct vcpu *c = &vm->vcpu[i];
		c->vm = vm;
		c->id = (int)i;
		c->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, i);
		if (c->fd < 0)
			err(VMM_EXIT_ERROR, "KVM: ioctl (CREATE_VCPU %u) failed", i);
		c->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
		if (c->run == MAP_FAILED)
			err(VMM_EXIT_ERROR, "KVM: mmap of vCPU %u run area failed", i);
		c->cpuid = cpuid_for_vcpu(sup, i, vm->nvcpus);
		if (ioctl(c->fd, KVM_SET_CPUID2, c->cpuid) < 0)
			err(VMM_EXIT_ERROR, "KVM: ioctl (SET_CPUID2) failed");
	}
	free(sup);
}

void vm_set_irq(struct vm *vm, unsigned gsi, int level)
{
	struct kvm_irq_level l = { .irq = gsi, .level = level };
	if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &l) < 0)
		warn("KVM: ioctl (IRQ_LINE %u) failed", gsi);
}

static void kick_all(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		struct vcpu *c = &vm->vcpu[i];
		if (!c->thread_started || c->id == current_vcpu)
			continue;
		__atomic_store_n(&c->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		pthread_kill(c->thread, SIGUSR1);
	}
}

void vm_stop(struct vm *vm, int code, const char *fmt, ...)
{
	pthread_mutex_lock(&vm->run_lock);
	if (!vm->stopping) {
		vm->stopping = true;
		vm->exit_code = code;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(vm->exit_reason, sizeof(vm->exit_reason), fmt, ap);
		va_end(ap);
		uint64_t one = 1;
		if (write(vm->stop_efd, &one, sizeof(one)) < 0)
			warn("eventfd write failed");
	}
	pthread_cond_broadcast(&vm->run_cond);
	pthread_mutex_unlock(&vm->run_lock);
	kick_all(vm);
}

void vm_pause(struct vm *vm)
{
	pthread_mutex_lock(&vm->run_lock);
	vm->pause_req = true;
	pthread_mutex_unlock(&vm->run_lock);
	kick_all(vm);
	pthread_mutex_lock(&vm->run_lock);
	unsigned running = 0;
	for (unsigned i = 0; i < vm->nvcpus; i++)
		running += vm->vcpu[i].thread_started;
	while (vm->parked < running && !vm->stopping)
		pthread_cond_wait(&vm->run_cond, &vm->run_lock);
	vm->paused = true;
	pthread_mutex_unlock(&vm->run_lock);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->run_lock);
	vm->pause_req = false;
	vm->paused = false;
	pthread_cond_broadcast(&vm->run_cond);
	pthread_mutex_unlock(&vm->run_lock);
}

/* Returns false when the vCPU must exit for good. */
static bool vcpu_park_if_asked(struct vcpu *c)
{
	struct vm *vm = c->vm;
	pthread_mutex_lock(&vm->run_lock);
	bool want_pause = vm->pause_req && !vm->stopping;
	pthread_mutex_unlock(&vm->run_lock);
	if (want_pause && c->io_pending) {
		/* Let KVM finish the instruction that exited, so saved state is consistent. */
		__atomic_store_n(&c->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		ioctl(c->fd, KVM_RUN, 0);
		c->io_pending = false;
	}
	pthread_mutex_lock(&vm->run_lock);
	if (vm->pause_req && !vm->stopping) {
		vm->parked++;
		pthread_cond_broadcast(&vm->run_cond);
		while (vm->pause_req && !vm->stopping)
			pthread_cond_wait(&vm->run_cond, &vm->run_lock);
		vm->parked--;
	}
	bool go = !vm->stopping;
	__atomic_store_n(&c->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&vm->run_lock);
	return go;
}

static void log_unmapped(struct vm *vm, const char *what, uint64_t addr, uint32_t len,
			 bool is_write, uint64_t count)
{
	if (count <= UNMAPPED_LOG_LIMIT)
		fprintf(stderr, "hearth-vmm: guest %s %u bytes at unmapped %s 0x%llx%s\n",
			is_write ? "wrote" : "read", len, what, (unsigned long long)addr,
			count == UNMAPPED_LOG_LIMIT ? " (further ones counted, not logged)" : "");
	(void)vm;
}

static void handle_pio(struct vcpu *c)
{
	struct vm *vm = c->vm;
	struct kvm_run *r = c->run;
	uint8_t *data = (uint8_t *)r + r->io.data_offset;
	bool wr = r->io.direction == KVM_EXIT_IO_OUT;
	pthread_mutex_lock(&vm->dev_lock);
	for (uint32_t i = 0; i < r->io.count; i++, data += r->io.size) {
		if (!io_bus_dispatch(&vm->pio, r->io.port, data, r->io.size, wr)) {
			/* Linux probes many legacy ports; absent hardware floats high. */
			if (!wr)
				memset(data, 0xff, r->io.size);
			vm->unmapped_pio++;
		}
	}
	pthread_mutex_unlock(&vm->dev_lock);
}

static void handle_mmio(struct vcpu *c)
{
	struct vm *vm = c->vm;
	struct kvm_run *r = c->run;
	uint32_t len = r->mmio.len;
	if (len > sizeof(r->mmio.data))
		len = sizeof(r->mmio.data);
	pthread_mutex_lock(&vm->dev_lock);
	if (!io_bus_dispatch(&vm->mmio, r->mmio.phys_addr, r->mmio.data, len, r->mmio.is_write)) {
		uint64_t n = ++vm->unmapped_mmio;
		if (!r->mmio.is_write)
			memset(r->mmio.data, 0xff, len);
		log_unmapped(vm, "MMIO", r->mmio.phys_addr, len, r->mmio.is_write, n);
	}
	pthread_mutex_unlock(&vm->dev_lock);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *c = arg;
	struct vm *vm = c->vm;
	current_vcpu = c->id;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	seccomp_install_vcpu();

	while (vcpu_park_if_asked(c)) {
		int rc = ioctl(c->fd, KVM_RUN, 0);
		c->io_pending = false;
		if (rc < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			vm_stop(vm, VMM_EXIT_ERROR, "KVM_RUN on vCPU %d failed: %s", c->id,
				strerror(errno));
			break;
		}
		struct kvm_run *r = c->run;
		switch (r->exit_reason) {
		case KVM_EXIT_IO:
			handle_pio(c);
			c->io_pending = true;
			break;
		case KVM_EXIT_MMIO:
			handle_mmio(c);
			c->io_pending = true;
			break;
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_HLT:
			vm_stop(vm, VMM_EXIT_GUEST_STOP, "vCPU %d halted", c->id);
			break;
		case KVM_EXIT_SHUTDOWN:
			vm_stop(vm, VMM_EXIT_GUEST_CRASH, "guest crashed: triple fault on vCPU %d",
				c->id);
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			vm_stop(vm, VMM_EXIT_GUEST_CRASH,
				"guest crashed: KVM internal error on vCPU %d (suberror %u%s)", c->id,
				r->internal.suberror,
				r->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
					? ": instruction emulation failed"
					: "");
			break;
		case KVM_EXIT_FAIL_ENTRY:
			vm_stop(vm, VMM_EXIT_GUEST_CRASH,
				"guest crashed: VM entry failed on vCPU %d (reason 0x%llx)", c->id,
				(unsigned long long)r->fail_entry.hardware_entry_failure_reason);
			break;
		case KVM_EXIT_SYSTEM_EVENT:
			if (r->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN ||
			    r->system_event.type == KVM_SYSTEM_EVENT_RESET)
				vm_stop(vm, VMM_EXIT_GUEST_STOP, "guest requested %s",
					r->system_event.type == KVM_SYSTEM_EVENT_RESET ? "reset"
											: "shutdown");
			else
				vm_stop(vm, VMM_EXIT_GUEST_CRASH, "guest crashed: system event %u",
					r->system_event.type);
			break;
		default:
			vm_stop(vm, VMM_EXIT_ERROR, "unhandled KVM exit %u on vCPU %d",
				r->exit_reason, c->id);
			break;
		}
	}
	return NULL;
}

void vm_start(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		struct vcpu *c = &vm->vcpu[i];
		int e = pthread_create(&c->thread, NULL, vcpu_thread, c);
		if (e)
			errno = e, err(VMM_EXIT_ERROR, "pthread_create (vCPU %u) failed", i);
		c->thread_started = true;
	}
}

void vm_join(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvcpus; i++)
		if (vm->vcpu[i].thread_started) {
			pthread_join(vm->vcpu[i].thread, NULL);
			vm->vcpu[i].thread_started = false;
		}
}
