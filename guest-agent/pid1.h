/*
 * pid1.h - what hearth-agent does when it is /init in a microVM.
 */
#ifndef HEARTH_AGENT_PID1_H
#define HEARTH_AGENT_PID1_H

#include <stddef.h>

/* Mounts /proc, /sys, /dev (devtmpfs), /tmp (tmpfs), routes stdio to the console, brings up lo. */
void pid1_setup(void);

/* Looks up key=value on the kernel command line; returns 0 and copies the value, or -1. */
int pid1_cmdline_get(const char *key, char *out, size_t outlen);

/* Kills everything, syncs and powers the VM off. Never returns. */
void pid1_poweroff(void) __attribute__((noreturn));

#endif
