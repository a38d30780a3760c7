/*
 * seccomp_filter.h - hearth-vmm's syscall allowlists (libseccomp), one per thread
 * kind, each installed by the thread itself once its host resources are open
 * (KVM fds, guest RAM, sockets, console): a vCPU thread before its first
 * KVM_RUN, the main thread right after starting the vCPUs.
 *
 * vCPU threads get what exit handling needs: KVM ioctls, reads and writes on
 * open fds, Unix-socket connect for guest-initiated vsock, epoll_ctl, memory
 * management, futexes and thread kicks. The main thread additionally gets the
 * event loop, accept, and file creation/rename for snapshots. ioctl is
 * limited to KVM's ioctl type and socket() to AF_UNIX. Anything else kills the
 * process (SIGSYS), so a guest that subverts a device still cannot reach
 * other syscalls.
 *
 * Sanitizer builds skip the filters (their runtimes need ptrace, /proc and
 * more at exit); that is said on stderr.
 */
#ifndef HEARTH_VMM_SECCOMP_FILTER_H
#define HEARTH_VMM_SECCOMP_FILTER_H

/* Fatal if a filter cannot be built or loaded (host set-up failure). */
void seccomp_install_vcpu(void);
void seccomp_install_main(void);
/* The jail's supervisor (jail.h): wait, signals, stderr, and removing the cgroup. */
void seccomp_install_supervisor(void);
/* Disables all three (--no-seccomp); call before any install. */
void seccomp_disable(void);

#endif
