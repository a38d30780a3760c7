#include "uart.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "snapshot.h"

#define IER_RDI 0x01
#define IER_THRI 0x02
#define LCR_DLAB 0x80
#define MCR_LOOP 0x10
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IIR_NONE 0x01
#define IIR_THRI 0x02

void uart_init(struct uart *u, int out_fd, uart_irq_fn irq, void *irq_ctx)
{
	memset(u, 0, sizeof(*u));
	u->out_fd = out_fd;
	u->irq = irq;
	u->irq_ctx = irq_ctx;
	u->r.mcr = 0x08; /* OUT2, as firmware leaves it */
}

static uint8_t uart_iir(const struct uart *u)
{
	uint8_t fifo = (u->r.fcr & 1) ? 0xc0 : 0;
	if ((u->r.ier & IER_THRI) && u->r.thri_pending)
		return IIR_THRI | fifo;
	return IIR_NONE | fifo;
}

void uart_sync_irq(struct uart *u)
{
	int level = (uart_iir(u) & IIR_NONE) ? 0 : 1;
	if (level != u->irq_level && u->irq) {
		u->irq_level = level;
		u->irq(u->irq_ctx, level);
	}
}

static void uart_tx(struct uart *u, uint8_t c)
{
	u->tx_bytes++;
	if (u->out_fd < 0 || (u->r.mcr & MCR_LOOP))
		return;
	/* Console output is best effort: a full pipe must not stall the vCPU forever. */
	for (int tries = 0; tries < 1000; tries++) {
		ssize_t n = write(u->out_fd, &c, 1);
		if (n == 1 || (n < 0 && errno != EINTR && errno != EAGAIN))
			return;
	}
}

static uint8_t uart_msr(const struct uart *u)
{
	if (u->r.mcr & MCR_LOOP) {
		uint8_t m = u->r.mcr, v = 0;
		if (m & 0x01) v |= 0x20; /* DTR -> DSR */
		if (m & 0x02) v |= 0x10; /* RTS -> CTS */
		if (m & 0x04) v |= 0x40; /* OUT1 -> RI */
		if (m & 0x08) v |= 0x80; /* OUT2 -> DCD */
		return v;
	}
	return 0xb0; /* DCD, DSR, CTS */
}

void uart_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct uart *u = opaque;
	bool dlab = u->r.lcr & LCR_DLAB;
	if (len != 1) {
		if (!is_write)
			memset(data, 0xff, len);
		return;
	}
	if (is_write) {
		uint8_t v = data[0];
		switch (off) {
		case 0:
			if (dlab) {
				u->r.dll = v;
			} else {
				uart_tx(u, v);
				u->r.thri_pending = 1; /* the byte left at once */
			}
			break;
		case 1:
			if (dlab) {
				u->r.dlm = v;
			} else {
				if (!(u->r.ier & IER_THRI) && (v & IER_THRI))
					u->r.thri_pending = 1;
				u->r.ier = v & 0x0f;
			}
			break;
		case 2: u->r.fcr = v & 0xc9; break;
		case 3: u->r.lcr = v; break;
		case 4: u->r.mcr = v & 0x1f; break;
		case 7: u->r.scr = v; break;
		default: break;
		}
	} else {
		uint8_t v = 0;
		switch (off) {
		case 0: v = dlab ? u->r.dll : 0; break;
		case 1: v = dlab ? u->r.dlm : u->r.ier; break;
		case 2:
			v = uart_iir(u);
			if ((v & 0x0f) == IIR_THRI)
				u->r.thri_pending = 0;
			break;
		case 3: v = u->r.lcr; break;
		case 4: v = u->r.mcr; break;
		case 5: v = LSR_THRE | LSR_TEMT; break;
		case 6: v = uart_msr(u); break;
		case 7: v = u->r.scr; break;
		default: break;
		}
		data[0] = v;
	}
	uart_sync_irq(u);
}

int uart_save(const struct uart *u, struct snap_builder *b)
{
	if (snap_node_begin(b, "uart") < 0 || snap_prop(b, "regs", &u->r, sizeof(u->r)) < 0)
		return -1;
	return snap_node_end(b);
}

int uart_restore(struct uart *u, const struct snap *s, char *err, size_t errlen)
{
	const void *p = snap_prop_get(s, "/uart", "regs", sizeof(u->r), err, errlen);
	if (!p)
		return -1;
	memcpy(&u->r, p, sizeof(u->r));
	u->irq_level = -1; /* force the line to be driven */
	uart_sync_irq(u);
	return 0;
}
