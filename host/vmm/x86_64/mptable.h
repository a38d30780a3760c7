/*
 * mptable.h - the Intel MultiProcessor Specification 1.4 table that tells a
 * guest how many CPUs it has and how its interrupts are wired.
 *
 * hearth-vmm offers no ACPI (it passes acpi=off), so this table is the only
 * place Linux learns about the vCPUs beyond the BSP and about the IOAPIC;
 * without it an N-vCPU guest comes up with one CPU in PIC mode. Firecracker
 * described its machines the same way before it moved to ACPI.
 *
 * What it describes: one processor entry per vCPU (APIC id = vCPU index, as
 * KVM_CREATE_VCPU and the filtered CPUID give them; vCPU 0 is the BSP), one
 * ISA bus, KVM's in-kernel IOAPIC at MPTABLE_IOAPIC_ADDR with APIC id = the
 * vCPU count (the first id no CPU uses), ISA IRQ n wired to IOAPIC pin n for
 * every pin (edge, active high: KVM's default GSI routing is identity), and
 * every LAPIC's LINT0 = ExtINT (the PIC), LINT1 = NMI.
 *
 * Where: the floating pointer "_MP_" and the "PCMP" configuration table right
 * after it, at MPTABLE_ADDR, the last KiB of base memory, which Linux scans
 * and the boot e820 map (boot.h) reserves. Both checksums are filled in.
 *
 * Call once per cold boot, after the kernel is loaded and before vm_start();
 * a restore brings the table back with guest RAM. Writes go only through the
 * guest-memory accessor.
 */
#ifndef HEARTH_VMM_X86_MPTABLE_H
#define HEARTH_VMM_X86_MPTABLE_H

#include <stddef.h>

#include "../guest_mem.h"

#define MPTABLE_ADDR 0x9fc00ul
#define MPTABLE_MAX_SIZE 0x400ul /* the table must stay inside the reserved KiB */
#define MPTABLE_IOAPIC_ADDR 0xfec00000u
#define MPTABLE_LAPIC_ADDR 0xfee00000u
#define MPTABLE_IOAPIC_PINS 24 /* KVM's in-kernel IOAPIC */

/*
 * Writes the table for nvcpus (1..254) vCPUs. Returns its size in bytes, or
 * -1 with a message in errbuf when nvcpus is out of range, the table would
 * not fit in MPTABLE_MAX_SIZE, or guest RAM does not cover MPTABLE_ADDR.
 */
int x86_mptable_write(const struct guest_mem *m, unsigned nvcpus, char *errbuf, size_t errlen);

#endif
