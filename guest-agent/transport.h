/*
 * transport.h - where hearth-agent listens for the host.
 *
 * Socket transports (Unix, AF_VSOCK) have a listening fd and accept one host
 * connection at a time; a newer connection replaces an older one (after a
 * snapshot restore the host reconnects while the guest may not yet have seen
 * the old connection die). The virtio-serial transport is a character device
 * that is "connected" whenever it is open; it is reopened after a hangup.
 */
#ifndef HEARTH_AGENT_TRANSPORT_H
#define HEARTH_AGENT_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

enum transport_kind { TRANSPORT_UNIX, TRANSPORT_VSOCK, TRANSPORT_SERIAL };

struct transport {
	enum transport_kind kind;
	char path[256];     /* Unix socket path or serial device */
	uint32_t port;      /* vsock port */
	int listen_fd;      /* -1 for serial */
};

/* Sets up the listener (or checks the device). Returns 0 or -errno. */
int transport_open(struct transport *t);

/* Accepts a pending connection (socket) or opens the device (serial). Returns an fd or -errno. */
int transport_accept(struct transport *t);

/* Finds the virtio-serial device named name; writes "/dev/vportNpM" to out. Returns 0 or -ENOENT. */
int transport_find_serial(const char *name, char *out, size_t outlen);

void transport_close(struct transport *t);

#endif
