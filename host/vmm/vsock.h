/*
 * vsock.h - virtio-vsock (device id 19) with its data path in user space,
 * and Firecracker's "hybrid vsock" on the host side.
 *
 * Host side:
 *  - host-initiated: a client connects to the Unix socket uds_path and writes
 *    "CONNECT <port>\n"; the device sends the guest a connection request for
 *    that port; when the guest accepts, the client reads "OK <n>\n" (n = the
 *    host-side port of this connection) and from then on the socket carries
 *    the stream. A refused or malformed request closes the client socket. A
 *    client that has not sent its whole line, or whose request the guest has
 *    not answered, within HALF_OPEN_MS (vsock.c) loses its slot to the next
 *    client that needs one: idle clients cannot lock the device out.
 *  - guest-initiated: a guest connection to host CID 2, port P is connected
 *    to the Unix socket "<uds_path>_<P>"; if nothing listens there the guest
 *    gets a reset.
 *
 * Guest side: stream sockets only, credit-based flow control both ways (the
 * device never buffers more than it advertised; a guest that overruns its
 * credit has that connection reset). Malformed packets or chains fail the
 * device (virtio_mmio.h); they never reach a host socket.
 *
 * Threads: the main thread owns the host sockets' readiness (evloop.h);
 * vCPU threads run queue notifications. Both call in with the VM's device
 * lock held.
 *
 * Snapshots: only the guest CID is device state worth saving; host sockets
 * cannot be. After a restore vsock_after_restore() resets every connection
 * and posts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, as the virtio spec asks after
 * migration; the listening socket is the new VM's own uds_path. Host
 * connections wait (in the listen backlog) until the guest has handled the
 * event, which it shows by handing an event buffer back: a connection
 * established earlier would be reset with the stale ones (seen with Linux
 * guests, whose event work runs late).
 */
#ifndef HEARTH_VMM_VSOCK_H
#define HEARTH_VMM_VSOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "evloop.h"
#include "virtio_mmio.h"

#define VSOCK_HOST_CID 2
#define VSOCK_MAX_CONNS 32
#define VSOCK_MAX_PENDING 8
/* What we advertise as our receive buffer per connection (guest -> host). */
#define VSOCK_BUF_ALLOC (256u * 1024u)
/* Largest payload in one packet, either direction. */
#define VSOCK_MAX_PKT (64u * 1024u)

struct vsock_dev;

struct vsock_conn {
	struct vsock_dev *dev;
	bool used;
	bool established;
	bool host_initiated;
	int fd;
	struct ev_handler h;
	uint32_t host_port, guest_port;
	int64_t since_ms;    /* host-initiated: when the request went to the guest */
	/* flow control */
	uint32_t peer_buf_alloc, peer_fwd_cnt; /* the guest's receive window */
	uint32_t rx_cnt;     /* bytes sent to the guest */
	uint32_t fwd_cnt;    /* guest bytes written to the host socket */
	uint32_t fwd_cnt_announced;
	bool rx_blocked;     /* EPOLLIN off: no guest credit or rx buffers */
	/* guest -> host bytes the socket did not take yet (bounded by VSOCK_BUF_ALLOC) */
	uint8_t *tx;
	uint32_t tx_len, tx_cap;
};

struct vsock_pending {
	bool used;
	int fd;
	struct ev_handler h;
	struct vsock_dev *dev;
	char line[32];
	unsigned len;
	int64_t since_ms;    /* accepted at */
};

#define VSOCK_CTRLQ 64

struct vsock_hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port;
	uint32_t len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

struct vsock_dev {
	struct virtio_mmio_dev t;
	struct vm *vm;
	struct evloop *loop;
	uint64_t guest_cid;
	char uds_path[108];
	int listen_fd;
	struct ev_handler listen_h;
	struct vsock_pending pending[VSOCK_MAX_PENDING];
	struct vsock_conn conns[VSOCK_MAX_CONNS];
	struct vsock_hdr ctrlq[VSOCK_CTRLQ]; /* control packets waiting for rx buffers */
	unsigned nctrl;
	uint32_t next_host_port;
	/* After a restore, host connections wait while either holds (see above). */
	bool reset_event_pending; /* a transport reset waits for an event buffer */
	bool reset_delivered;     /* ... was delivered; the guest has not handed a buffer back yet */
	uint64_t stat_rx_bytes, stat_tx_bytes, stat_conns;
};

/*
 * Sets up the device at MMIO base/irq and the hybrid socket at uds_path
 * (unlinked first; fatal on host failures). Must run before vm_start().
 */
void vsock_init(struct vsock_dev *d, struct vm *vm, struct evloop *loop, uint64_t base,
		unsigned irq, uint64_t guest_cid, const char *uds_path);
/*
 * The hybrid socket alone, for a device set up without one (a pooled
 * hearth-vmm learns its path with the restore command). Returns 0, or -1 with
 * the reason in err.
 */
int vsock_listen(struct vsock_dev *d, const char *uds_path, char *err, size_t errlen);
/* Resets all connections and queues a transport-reset event (see above). Device lock held. */
void vsock_after_restore(struct vsock_dev *d);
/* Closes every socket and unlinks uds_path (at exit). */
void vsock_shutdown(struct vsock_dev *d);

#endif
