/*
 * vm_snapshot.h - whole-VM snapshot create and restore for hearth-vmm, on top
 * of the snapshots/ state-file library. Each piece saves itself: x86 vCPU
 * and VM state (x86_64/vcpu_state.h), the UART, and each virtio-mmio
 * transport with its queues and device (virtio_mmio.h, vsock.h).
 *
 * Create: the caller has paused the VM (vm_pause). Guest RAM is written to
 * mem_path (zero pages left as holes) while its SHA-256 is computed; then the
 * state file is written. Both are written to a temporary name and renamed, so
 * a reader never sees a half-written snapshot.
 *
 * Restore: runs after the vCPUs and devices exist and before vm_start().
 * Guest RAM must already be the memory file mapped MAP_PRIVATE. Open vsock
 * connections are not part of a snapshot: the guest gets a transport reset.
 */
#ifndef HEARTH_VMM_VM_SNAPSHOT_H
#define HEARTH_VMM_VM_SNAPSHOT_H

#include <stddef.h>

#include "snapshot.h"
#include "vm.h"
#include "vsock.h"

int vmm_snapshot_create(struct vm *vm, struct vsock_dev *vsock, const char *kernel_id,
			const char *mem_path, const char *state_path, char *err, size_t errlen);
int vmm_snapshot_restore(struct vm *vm, struct vsock_dev *vsock, const struct snap *s, char *err,
			 size_t errlen);

#endif
