/* msr_filter.c - hides the performance-counter MSRs from the guest. See msr_filter.h. */
#include "msr_filter.h"

#include <err.h>
#include <string.h>
#include <sys/ioctl.h>

/* AMD's legacy K7 event selects and counters, and the family 15h+ "core" set. */
#define MSR_K7_EVNTSEL0 0xc0010000u
#define MSR_K7_COUNT 8
#define MSR_F15H_PERF_CTL0 0xc0010200u
#define MSR_F15H_COUNT 12

void x86_msr_filter_install(struct vm *vm)
{
	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_X86_MSR_FILTER) <= 0)
		return;
	/* A bitmap of zeros: every MSR in the range denied, for reads and writes. */
	static uint8_t deny[2];
	struct kvm_msr_filter f;
	memset(&f, 0, sizeof(f));
	f.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
	f.ranges[0] = (struct kvm_msr_filter_range){
		.flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
		.nmsrs = MSR_K7_COUNT,
		.base = MSR_K7_EVNTSEL0,
		.bitmap = deny,
	};
	f.ranges[1] = (struct kvm_msr_filter_range){
		.flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE,
		.nmsrs = MSR_F15H_COUNT,
		.base = MSR_F15H_PERF_CTL0,
		.bitmap = deny,
	};
	_Static_assert(sizeof(deny) * 8 >= MSR_K7_COUNT && sizeof(deny) * 8 >= MSR_F15H_COUNT,
		       "the deny bitmap covers both ranges");
	if (ioctl(vm->vm_fd, KVM_X86_SET_MSR_FILTER, &f) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (X86_SET_MSR_FILTER) failed");
}
