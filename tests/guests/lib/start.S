/* Entered by the Linux 64-bit boot protocol: long mode, identity paging, %rsi = boot_params. */
	.section .text.head, "ax"
	.globl _head
_head:
	.fill 0x200, 1, 0x90
	.globl _start
_start:
	cli
	lea guest_stack_top(%rip), %rsp
	mov %rsi, %rdi
	call guest_main
	call guest_reset
1:	hlt
	jmp 1b

	.bss
	.balign 16
guest_stack:
	.skip 16384
	.globl guest_stack_top
guest_stack_top:
	.section .note.GNU-stack, "", @progbits
