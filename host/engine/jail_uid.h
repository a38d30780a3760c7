/*
 * jail_uid.h - the one allocator of jail uids in a hearthd process, shared by
 * every engine that runs its VMs' host processes under a uid of their own: the
 * builtin engine (each jailed hearth-vmm, vmm_pool.h) and the libvirt engine
 * (each domain's QEMU, engine_libvirt.c). Sharing it is what keeps a
 * hearth-vmm and a QEMU of one hearthd from ever holding the same uid.
 *
 * A jail uid is base + slot, slot < HEARTH_JAIL_UIDS (engine.h); the gid is
 * the same number. No two live holders in this process share a slot. Two
 * processes (two hearthds, or tests) must use disjoint bases: the allocator
 * knows nothing of other processes. Thread-safe.
 */
#ifndef HEARTH_ENGINE_JAIL_UID_H
#define HEARTH_ENGINE_JAIL_UID_H

#include <stdint.h>

/* A free uid from base on, marked used; 0 when every slot is taken. */
uint32_t jail_uid_get(uint32_t base);
/* Gives a uid from jail_uid_get(base) back; 0 and uids outside the range are ignored. */
void jail_uid_put(uint32_t base, uint32_t uid);

#endif
