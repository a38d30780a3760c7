/*
 * bench_vmm_kvm.c - what the kernel charges for the ioctls every restore
 * makes before any guest state is loaded, measured in this process, in
 * hearth-vmm's order. This is the floor under hearth-vmm's restore latency on
 * this host. It also times the one order that is slow here (a memslot added
 * once the in-kernel irqchip exists), which hearth-vmm avoids.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bench_vmm.h"
#include "harness.h"

/* Where hearth-vmm puts KVM's TSS; any free guest-physical range does. */
#define PROBE_TSS_ADDR 0xfffbd000ul

const char *const bv_kvm_step_names[BV_KVM_N] = {
	[BV_KVM_CREATE_VM] = "KVM_CREATE_VM + SET_TSS_ADDR",
	[BV_KVM_MEMSLOT] = "KVM_SET_USER_MEMORY_REGION (first memslot)",
	[BV_KVM_IRQCHIP_PIT] = "KVM_CREATE_IRQCHIP + CREATE_PIT2",
	[BV_KVM_VCPU] = "KVM_CREATE_VCPU + mmap of its run area",
	[BV_KVM_DESTROY] = "close the vCPU and VM fds (VM teardown)",
	[BV_KVM_MEMSLOT_LATE] = "first memslot if added after the irqchip instead",
};

static long long cpu_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int irqchip(int vm)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0 || ioctl(vm, KVM_CREATE_PIT2, &pit) < 0)
		return -1;
	return 0;
}

/* One VM in the given order; times the steps of hearth-vmm's order, or only the late memslot. */
static int one_vm(int kvm, void *mem, size_t mem_bytes, long run_size, bool late, long long *us,
		  long long *cpu_us)
{
	int rc = -1, vm = -1, vcpu = -1;
	void *run = MAP_FAILED;
	struct kvm_userspace_memory_region r = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = mem_bytes,
		.userspace_addr = (unsigned long)mem,
	};
	long long t = now_us(), c = cpu_now_us();
#define LAP(step)                                   \
	do {                                        \
		us[step] = now_us() - t;            \
		cpu_us[step] = cpu_now_us() - c;    \
		t = now_us();                       \
		c = cpu_now_us();                   \
	} while (0)

	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0 || ioctl(vm, KVM_SET_TSS_ADDR, PROBE_TSS_ADDR) < 0)
		goto out;
	if (late) {
		if (irqchip(vm) < 0)
			goto out;
		t = now_us();
		c = cpu_now_us();
		if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			goto out;
		LAP(BV_KVM_MEMSLOT_LATE);
		rc = 0;
		goto out;
	}
	LAP(BV_KVM_CREATE_VM);
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		goto out;
	LAP(BV_KVM_MEMSLOT);
	if (irqchip(vm) < 0)
		goto out;
	LAP(BV_KVM_IRQCHIP_PIT);
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		goto out;
	run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		goto out;
	LAP(BV_KVM_VCPU);
	munmap(run, (size_t)run_size);
	run = MAP_FAILED;
	close(vcpu);
	close(vm);
	vcpu = vm = -1;
	LAP(BV_KVM_DESTROY);
#undef LAP
	rc = 0;
out:;
	int e = errno;
	if (run != MAP_FAILED)
		munmap(run, (size_t)run_size);
	if (vcpu >= 0)
		close(vcpu);
	if (vm >= 0)
		close(vm);
	errno = e;
	return rc;
}

int bv_kvm_probe(const char *mem_file, size_t mem_bytes, long long us[BV_KVM_N],
		 long long cpu_us[BV_KVM_N])
{
	int rc = -1, e = 0, kvm = -1, mfd = -1;
	void *mem = MAP_FAILED;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	mfd = open(mem_file, O_RDONLY | O_CLOEXEC);
	if (kvm < 0 || mfd < 0)
		goto out;
	mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, mfd, 0);
	long run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mem == MAP_FAILED || run_size <= 0)
		goto out;
	if (one_vm(kvm, mem, mem_bytes, run_size, false, us, cpu_us) < 0 ||
	    one_vm(kvm, mem, mem_bytes, run_size, true, us, cpu_us) < 0)
		goto out;
	rc = 0;
out:
	e = errno;
	if (mem != MAP_FAILED)
		munmap(mem, mem_bytes);
	if (mfd >= 0)
		close(mfd);
	if (kvm >= 0)
		close(kvm);
	errno = e;
	return rc;
}
