/*
 * fuzz_vsock.h - the input language of fuzz_vsock.c, shared with the seed
 * generator (gen_seeds.c).
 *
 * An input is a sequence of actions: one opcode byte (taken modulo
 * FV_OP_COUNT), then its operands, little-endian. Operands past the end of the
 * input read as 0. After every action the harness runs hearth-vmm's event loop
 * until it settles, as the VMM's main thread would.
 *
 * Guest RAM layout used by the harness's own driver (any action may break it):
 *   queue q (0 rx, 1 tx, 2 event): descriptor table at FV_RING(q), avail ring
 *   at FV_RING(q) + 0x1000, used ring at FV_RING(q) + 0x2000; buffers in
 *   fixed slots per descriptor index (FV_RX_BUF, FV_TX_BUF, FV_EV_BUF); large
 *   tx payloads in FV_BULK.
 */
#ifndef HEARTH_TESTS_FUZZ_VSOCK_H
#define HEARTH_TESTS_FUZZ_VSOCK_H

#define FV_RAM_SIZE (4u << 20)
#define FV_RING(q) (0x1000u + 0x3000u * (q))
#define FV_EV_BUF 0x10000u  /* + 64 * desc */
#define FV_RX_BUF 0x100000u /* + 4096 * desc */
#define FV_TX_BUF 0x200000u /* + 4096 * desc */
#define FV_BULK 0x300000u   /* 1 MiB of tx payload */
#define FV_GUEST_CID 3
#define FV_HPORT_A 1234     /* the harness listens at <uds>_1234 and <uds>_9999 */
#define FV_HPORT_B 9999

enum fv_op {
	/* u8 m (len = 1 << (m & 3); bit 2: offset is a raw u16, else & 0x1ff;
	 * bit 3: write), u16 offset, then for a write u32 (len <= 4) or u64 */
	FV_OP_MMIO,
	/* u8 register (index into the table in fuzz_vsock.c), u32 value */
	FV_OP_REG,
	/* u8 p: queue size 1 << ((p & 15) % 9); bit 4: no VERSION_1; bit 5:
	 * DRIVER_OK before the queues; bit 6: no event queue; bit 7: no rx queue */
	FV_OP_INIT,
	/* u8 n (1 + n % 16 buffers), u16 len (0: 4096), u8 f (bit 0: no notify,
	 * bit 1: header in its own descriptor) */
	FV_OP_RX_POST,
	/* u8 n (1 + n % 4), u8 len (0: 4), u8 f (bit 0: no notify, bit 1: device-readable) */
	FV_OP_EVENT_POST,
	/*
	 * A packet on the tx queue:
	 *   u8 op (op & 7; bit 7: a raw u16 op follows)
	 *   port src (guest), port dst (host)  -- a port is u8 v: v < 8 picks
	 *       FV_HPORT_A, FV_HPORT_B, the last rx packet's src, its dst, 7777,
	 *       1 << 30, 4242, 0xffffffff; v < 0xf0 is v itself; else a raw u32
	 *   u8 m: bits 0-1 hdr.len (0 exact, 1 raw u32 follows, 2 one more than
	 *       the payload, 3 zero); bit 2: raw u64 src_cid and dst_cid follow;
	 *       bit 3: raw u16 type follows; bits 4-5 layout (0 one descriptor,
	 *       1 header + payload, 2 header split at a u8 that follows, 3 payload
	 *       in two); bit 6: no notify; bit 7: a writable descriptor at the end
	 *   u8 flags
	 *   u8 c: bits 0-1 buf_alloc (256 KiB, 4096, 0, raw u32 follows);
	 *       bits 2-3 fwd_cnt (honest, 0, raw u32 follows, honest + a u16)
	 *   u16 payload length, u8 payload pattern seed
	 */
	FV_OP_TX,
	/* the driver reaps every queue's used ring */
	FV_OP_CONSUME,
	/* u8 q (q & 3; bit 7: a raw u32 follows) written to QueueNotify */
	FV_OP_NOTIFY,
	/* u32 gpa (mod RAM), u8 n (n % 65), n bytes */
	FV_OP_RAM,
	/* u8 s (queue s % 3, field s / 3 % 8: desc addr, len, flags, next, avail
	 * idx, avail ring entry, used idx, avail flags), u16 index, u64 value */
	FV_OP_POKE,
	/* port, u8 mode (0 "CONNECT <port>\n", 1 without the newline, 2 u8 % 40
	 * raw bytes, 3 the line then u8 bytes of stream) */
	FV_OP_HOST_CONNECT,
	/* u8 peer, u16 n bytes */
	FV_OP_HOST_WRITE,
	/* u8 peer: read what is there */
	FV_OP_HOST_READ,
	/* u8 peer, u8 mode (0 close, 1 shutdown write, 2 shutdown read) */
	FV_OP_HOST_CLOSE,
	/* u16 t: the clock moves 4 * t ms */
	FV_OP_TIME,
	/* a snapshot: the device's state saved to a state file and restored
	 * into it (virtio_mmio_save/_restore, vsock_after_restore) */
	FV_OP_RESTORE,
	/* the driver's interrupt handler: read InterruptStatus, ack it */
	FV_OP_ACK,
	FV_OP_COUNT
};

#endif
