/*
 * msr_filter.h - the MSRs a guest may not touch: the performance counters.
 *
 * hearth-vmm gives guests no PMU: counters would have to be saved and
 * restored with every snapshot, and a clone's counts would mean nothing. On
 * Intel, CPUID leaf 0xa already says so (cpuid.c) and Linux's perf driver
 * never touches a counter. On AMD no CPUID bit can: Linux assumes the four
 * legacy K7 counters exist on every family >= 6 CPU and probes them by
 * writing one (check_hw_exists()). KVM without a vPMU drops that write and
 * logs "Unhandled WRMSR(0xc0010007)" on the host for every VM booted. With
 * these MSRs filtered, the guest's first (exception-safe) read of them
 * faults, and Linux reports "PMU not available due to virtualization,
 * using software events only" instead, before any write.
 *
 * Call right after KVM_CREATE_VM, before the irqchip and vCPUs exist (then
 * KVM's wait for its readers is short), on both the boot and the restore path (the filter is VM state KVM does not snapshot). Filters apply
 * to the guest only: KVM_GET_MSRS/KVM_SET_MSRS from hearth-vmm are not
 * affected. Fatal (host set-up) if KVM offers the filter but refuses it;
 * nothing is done where KVM lacks KVM_CAP_X86_MSR_FILTER (before Linux 5.10).
 */
#ifndef HEARTH_VMM_X86_MSR_FILTER_H
#define HEARTH_VMM_X86_MSR_FILTER_H

#include "../vm.h"

void x86_msr_filter_install(struct vm *vm);

#endif
