/*
 * guest.h - the runtime of hearth-vmm's freestanding test guests.
 *
 * These guests run under KVM's instruction emulator on PVM hosts (DESIGN.md),
 * at about a million instructions per second, and cannot take exceptions:
 * keep loops short, never fault, poll instead of relying on interrupts.
 */
#ifndef HEARTH_GUEST_H
#define HEARTH_GUEST_H

#include <stddef.h>
#include <stdint.h>

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline uint32_t mmio_read32(uint64_t a) { return *(volatile uint32_t *)a; }
static inline void mmio_write32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline void mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

void putc_uart(char c);
void puts_uart(const char *s);
void putn_uart(const char *s, size_t n);
void put_hex(uint64_t v);
void put_dec(uint64_t v);
/* Pulses the i8042 reset line: hearth-vmm ends the VM with exit code 0. */
__attribute__((noreturn)) void guest_reset(void);

/* boot_params (zero page) accessors. */
const char *bp_cmdline(const uint8_t *bp);
/* Value of "key=" on the command line (up to the next space), length in *len; NULL if absent. */
const char *cmdline_get(const char *cmdline, const char *key, size_t *len);
uint64_t parse_u64(const char *s, size_t len); /* decimal or 0x-hex; stops at a non-digit */

#endif
