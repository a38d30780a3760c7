/*
 * cpuid.h - the CPUID a vCPU sees: KVM's supported set, filtered.
 *
 * The guest must know it is virtualized (hypervisor bit) and see a topology
 * that matches the vCPUs it really has (APIC ids 0..n-1, one core each, one
 * package), or Linux's SMP bring-up disagrees with the MADT/MP table.
 */
#ifndef HEARTH_VMM_X86_CPUID_H
#define HEARTH_VMM_X86_CPUID_H

#include <linux/kvm.h>

/* KVM_GET_SUPPORTED_CPUID; malloc'ed; fatal on failure (host set-up). */
struct kvm_cpuid2 *cpuid_get_supported(int kvm_fd);
/* A filtered, malloc'ed copy for vCPU `id` of `n`. */
struct kvm_cpuid2 *cpuid_for_vcpu(const struct kvm_cpuid2 *sup, unsigned id, unsigned n);

#endif
