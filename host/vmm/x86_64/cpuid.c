#include "cpuid.h"

#include <err.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../vm.h"

#define CPUID_MAX_ENTRIES 256
#define CPUID1_ECX_HYPERVISOR (1u << 31)
#define CPUID1_EDX_HTT (1u << 28)

struct kvm_cpuid2 *cpuid_get_supported(int kvm_fd)
{
	size_t sz = sizeof(struct kvm_cpuid2) + CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *c = calloc(1, sz);
	if (!c)
		err(VMM_EXIT_ERROR, "calloc (cpuid) failed");
	c->nent = CPUID_MAX_ENTRIES;
	if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0)
		err(VMM_EXIT_ERROR, "KVM: ioctl (GET_SUPPORTED_CPUID) failed");
	return c;
}

static unsigned order_of(unsigned n)
{
	unsigned s = 0;
	while ((1u << s) < n)
		s++;
	return s;
}

struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *sup, unsigned id, unsigned n)
{
	size_t sz = sizeof(struct kvm_cpuid2) + sup->nent * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *c = malloc(sz);
	if (!c)
		err(VMM_EXIT_ERROR, "malloc (cpuid) failed");
	memcpy(c, sup, sz);
	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		switch (e->function) {
		case 1:
			/* APIC id, logical processor count; hypervisor present. */
			e->ebx = (e->ebx & 0x0000ffffu) | ((n & 0xffu) << 16) | ((id & 0xffu) << 24);
			e->ecx |= CPUID1_ECX_HYPERVISOR;
			if (n > 1)
				e->edx |= CPUID1_EDX_HTT;
			else
				e->edx &= ~CPUID1_EDX_HTT;
			break;
		case 4:
			/* Cores per package - 1, and one thread per cache. */
			if (e->eax & 0x1f)
				e->eax = (e->eax & 0x00003fffu) | ((n - 1) << 26);
			break;
		case 6:
			/* No power-management features the VMM does not emulate. */
			e->eax = e->ebx = e->ecx = e->edx = 0;
			break;
		case 0xa:
			/* No architectural PMU: no perf counters to save and restore. */
			e->eax = e->ebx = e->ecx = e->edx = 0;
			break;
		case 0xb:
		case 0x1f:
			/* Extended topology: level 0 SMT (1 thread), level 1 core (n cores). */
			if (e->index == 0) {
				e->eax = 0;
				e->ebx = 1;
				e->ecx = (1u << 8) | 0;
			} else if (e->index == 1) {
				e->eax = order_of(n);
				e->ebx = n;
				e->ecx = (2u << 8) | 1;
			} else {
				e->eax = e->ebx = 0;
				e->ecx = e->index;
			}
			e->edx = id;
			break;
		default:
			break;
		}
	}
	return c;
}
