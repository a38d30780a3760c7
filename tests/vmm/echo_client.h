/*
 * echo_client.h - drives the vsock_echo test guest through a hearth-vmm
 * hybrid vsock socket with the real host client library: connect to port 52,
 * Hello, Ping, then n_invokes Invokes whose echoed bodies are checked
 * (cmocka assertions; call from a cmocka test).
 */
#ifndef HEARTH_TEST_VMM_ECHO_CLIENT_H
#define HEARTH_TEST_VMM_ECHO_CLIENT_H

void echo_session(const char *sock, const char *tag, int n_invokes);

#endif
