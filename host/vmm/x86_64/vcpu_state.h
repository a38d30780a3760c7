/*
 * vcpu_state.h - save and restore of x86 vCPU and VM-wide KVM state for
 * snapshots (snapshots/FORMAT.md lists the properties).
 *
 * Per vCPU (node "cpu@N"): regs, sregs, xsave (or fpu), xcrs, MSRs, LAPIC,
 * vcpu events, mp_state, debugregs, and the CPUID the guest saw (a restored
 * guest must see the CPUID it probed at boot). The MSR list is derived once per
 * snapshot from KVM_GET_MSR_INDEX_LIST (which KVM builds from the CPUID it
 * supports): every MSR KVM both reads and writes back for this vCPU.
 * VM-wide (node "vm"): the PIC pair, the IOAPIC, the PIT and kvmclock.
 *
 * The VM must be paused (vm_pause) around save. Restore runs before
 * vm_start(), on freshly created vCPUs; errors name the property or ioctl.
 */
#ifndef HEARTH_VMM_X86_VCPU_STATE_H
#define HEARTH_VMM_X86_VCPU_STATE_H

#include <stddef.h>

#include "../vm.h"
#include "snapshot.h"

int x86_vm_save(struct vm *vm, struct snap_builder *b, char *err, size_t errlen);
int x86_vcpu_save(struct vcpu *c, struct snap_builder *b, char *err, size_t errlen);
int x86_vm_restore(struct vm *vm, const struct snap *s, char *err, size_t errlen);
int x86_vcpu_restore(struct vcpu *c, const struct snap *s, char *err, size_t errlen);
/* Tells each restored vCPU's kvmclock that the guest was paused (KVM_KVMCLOCK_CTRL). */
void x86_kvmclock_ctrl(struct vm *vm);

#endif
