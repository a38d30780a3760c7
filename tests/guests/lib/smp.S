/*
 * AP start-up trampoline for the SMP test guest. An AP woken by INIT-SIPI
 * starts in real mode at (SIPI vector << 12); smp_start_aps() copies this
 * blob to SMP_TRAMPOLINE (0x10000) first. It goes real -> protected -> long
 * mode on the identity page tables hearth-vmm built at 0x9000 (boot.h), takes
 * a stack slot, and calls ap_main(slot).
 */
	.section .rodata
	.globl smp_trampoline, smp_trampoline_end
	.weak ap_main
	.code16
smp_trampoline:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl (tr_gdt_desc - smp_trampoline)
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $0x08, $(0x10000 + tr32 - smp_trampoline)
	.code32
tr32:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %cr4, %eax
	or $0x20, %eax
	mov %eax, %cr4
	mov $0x9000, %eax
	mov %eax, %cr3
	mov $0xc0000080, %ecx
	rdmsr
	or $0x100, %eax
	wrmsr
	mov %cr0, %eax
	or $0x80000000, %eax
	mov %eax, %cr0
	ljmp $0x10, $(0x10000 + tr64 - smp_trampoline)
	.code64
tr64:
	mov $1, %eax
	lock xadd %eax, smp_next_slot
	mov %eax, %edi
	lea 1(%rax), %rsp
	shl $12, %rsp
	add $smp_ap_stacks, %rsp
	movabs $ap_main, %rax
	call *%rax
1:	cli
	hlt
	jmp 1b
	.balign 8
tr_gdt:
	.quad 0
	.quad 0x00cf9a000000ffff  /* 0x08: 32-bit code */
	.quad 0x00af9a000000ffff  /* 0x10: 64-bit code */
	.quad 0x00cf92000000ffff  /* 0x18: data */
tr_gdt_desc:
	.word tr_gdt_desc - tr_gdt - 1
	.long 0x10000 + tr_gdt - smp_trampoline
smp_trampoline_end:

	.data
	.globl smp_next_slot
	.balign 4
smp_next_slot:
	.long 0
	.bss
	.balign 4096
	.globl smp_ap_stacks
smp_ap_stacks:
	.skip 16 * 4096
	.section .note.GNU-stack, "", @progbits
