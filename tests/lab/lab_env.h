/*
 * lab_env.h - what every KVM lab test program checks first: that it runs
 * inside the lab (ci/kvm-lab sets HEARTH_LAB) with a usable /dev/kvm, and
 * where the guest kernel is. Each refusal is a skip (exit 77) with its
 * reason on stdout, never a pass.
 */
#ifndef HEARTH_TESTS_LAB_ENV_H
#define HEARTH_TESTS_LAB_ENV_H

#include <stddef.h>

/* Prints "SKIP: why" and exits 77. */
void lab_skip(const char *why) __attribute__((noreturn));
/* The built guest vmlinux (static buffer), or NULL when kernel-config/build has not run. */
const char *lab_kernel(void);
/* Skips unless inside the lab with /dev/kvm; returns the guest vmlinux path (static) or skips. */
const char *lab_require(void);

#endif
