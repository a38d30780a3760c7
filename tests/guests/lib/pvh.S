/*
 * PVH entry (Xen/QEMU "PVH boot"): lets QEMU -M microvm boot the very same
 * test guest image for the benchmark's reference numbers. hearth-vmm uses the
 * Linux 64-bit entry (_start) instead. Entered in 32-bit protected mode with
 * paging off and %ebx = struct hvm_start_info; we build identity page tables
 * for the low 4 GiB, enter long mode, fake a zero page holding the command
 * line pointer, and continue at _start like the Linux boot protocol would.
 */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* name size */
	.long 4                 /* desc size */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start32

	.text
	.code32
pvh_start32:
	cli
	mov %ebx, %esi
	movl $(pvh_pdpt + 3), pvh_pml4
	movl $(pvh_pd + 0x0003), pvh_pdpt
	movl $(pvh_pd + 0x1003), pvh_pdpt + 8
	movl $(pvh_pd + 0x2003), pvh_pdpt + 16
	movl $(pvh_pd + 0x3003), pvh_pdpt + 24
	xor %ecx, %ecx
1:	mov %ecx, %eax
	shl $21, %eax
	or $0x83, %eax
	mov %eax, pvh_pd(,%ecx,8)
	inc %ecx
	cmp $2048, %ecx
	jb 1b
	mov $pvh_pml4, %eax
	mov %eax, %cr3
	mov %cr4, %eax
	or $0x20, %eax          /* PAE */
	mov %eax, %cr4
	mov $0xc0000080, %ecx   /* EFER.LME */
	rdmsr
	or $0x100, %eax
	wrmsr
	lgdt pvh_gdt_desc
	mov %cr0, %eax
	or $0x80000001, %eax    /* PG, PE */
	mov %eax, %cr0
	ljmp $0x10, $pvh_start64

	.code64
pvh_start64:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %esi, %esi
	mov 24(%rsi), %rax      /* hvm_start_info.cmdline_paddr */
	mov %eax, pvh_zero_page + 0x228(%rip)
	lea pvh_zero_page(%rip), %rsi
	jmp _start

	.section .rodata
	.balign 8
pvh_gdt:
	.quad 0
	.quad 0
	.quad 0x00af9a000000ffff  /* 0x10: 64-bit code */
	.quad 0x00cf92000000ffff  /* 0x18: data */
pvh_gdt_desc:
	.word pvh_gdt_desc - pvh_gdt - 1
	.long pvh_gdt

	.bss
	.balign 4096
pvh_pml4:	.skip 4096
pvh_pdpt:	.skip 4096
pvh_pd:		.skip 4 * 4096
pvh_zero_page:	.skip 4096
	.section .note.GNU-stack, "", @progbits
