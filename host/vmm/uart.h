/*
 * uart.h - a 16550A-compatible UART (8250 family) on COM1, 0x3f8, IRQ 4.
 *
 * Transmitted bytes go to an fd (a console file, or stdout); the guest's
 * probes (scratch register, loopback, IIR) get the answers a real 16550A
 * gives, so Linux's 8250 driver binds to it. There is no input source: the
 * receive FIFO stays empty. Accessed only from vCPU threads with the VM's
 * device lock held.
 */
#ifndef HEARTH_VMM_UART_H
#define HEARTH_VMM_UART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UART_COM1_BASE 0x3f8
#define UART_COM1_IRQ 4

typedef void (*uart_irq_fn)(void *ctx, int level);

/* Register state; also what a snapshot saves (fixed layout, little-endian host). */
struct uart_regs {
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr, thri_pending;
};

struct uart {
	struct uart_regs r;
	int out_fd;         /* -1 = discard */
	uint64_t tx_bytes;
	uart_irq_fn irq;
	void *irq_ctx;
	int irq_level;
};

void uart_init(struct uart *u, int out_fd, uart_irq_fn irq, void *irq_ctx);
/* io_bus handler for the 8 ports at UART_COM1_BASE. */
void uart_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);
/* Re-evaluates the interrupt line after a restore of u->r. */
void uart_sync_irq(struct uart *u);

struct snap_builder;
struct snap;
/* Node "uart": the register file. */
int uart_save(const struct uart *u, struct snap_builder *b);
int uart_restore(struct uart *u, const struct snap *s, char *err, size_t errlen);

#endif
