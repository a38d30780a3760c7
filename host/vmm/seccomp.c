#include "seccomp_filter.h"

#include <err.h>
#include <errno.h>
#include <linux/kvm.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#include "vm.h"

#if defined(__SANITIZE_ADDRESS__)
#define HEARTH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEARTH_SANITIZED 1
#endif
#endif

static bool disabled;

void seccomp_disable(void)
{
	disabled = true;
}

static const int common_calls[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(close), SCMP_SYS(lseek),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(fcntl),
	SCMP_SYS(connect), SCMP_SYS(shutdown), SCMP_SYS(sendto), SCMP_SYS(recvfrom),
	SCMP_SYS(epoll_ctl),
	SCMP_SYS(futex), SCMP_SYS(tgkill), SCMP_SYS(getpid), SCMP_SYS(gettid),
	SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn), SCMP_SYS(restart_syscall),
	SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(brk),
	SCMP_SYS(madvise), SCMP_SYS(mprotect),
	SCMP_SYS(clock_gettime), SCMP_SYS(sched_yield), SCMP_SYS(nanosleep),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(exit), SCMP_SYS(exit_group),
};

static const int main_calls[] = {
	SCMP_SYS(epoll_wait), SCMP_SYS(epoll_pwait), SCMP_SYS(accept4),
	SCMP_SYS(openat), SCMP_SYS(ftruncate), SCMP_SYS(pwrite64), SCMP_SYS(pread64),
	SCMP_SYS(fsync), SCMP_SYS(rename), SCMP_SYS(renameat), SCMP_SYS(renameat2),
	SCMP_SYS(unlink), SCMP_SYS(unlinkat), SCMP_SYS(statx), SCMP_SYS(writev),
	SCMP_SYS(getrandom), SCMP_SYS(recvmsg), /* control commands with files (SCM_RIGHTS) */
	/* a pooled hearth-vmm's restore: the vsock socket and the console (dup3 onto 1, 2) */
	SCMP_SYS(bind), SCMP_SYS(listen), SCMP_SYS(dup3),
};

/*
 * The jail's supervisor (jail.h): it waits for the VMM, forwards signals,
 * reads the cgroup's OOM count from an fd opened before, removes the cgroup
 * through directory fds opened before, writes stderr and exits. No open, no
 * socket, no exec, no fork.
 */
static const int supervisor_calls[] = {
	SCMP_SYS(wait4), SCMP_SYS(kill), SCMP_SYS(pread64), SCMP_SYS(read), SCMP_SYS(write),
	SCMP_SYS(writev), SCMP_SYS(unlinkat), SCMP_SYS(close), SCMP_SYS(fstat),
	SCMP_SYS(newfstatat), SCMP_SYS(lseek), SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(rt_sigprocmask), SCMP_SYS(restart_syscall), SCMP_SYS(tgkill), SCMP_SYS(getpid),
	SCMP_SYS(gettid), SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(futex),
	SCMP_SYS(exit), SCMP_SYS(exit_group),
};

static void add_all(scmp_filter_ctx ctx, const int *calls, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0) < 0)
			errx(VMM_EXIT_ERROR, "seccomp: rule for syscall %d failed", calls[i]);
}

/* False when filters are off (--no-seccomp, or a sanitizer build, said once on stderr). */
static bool wanted(void)
{
	if (disabled)
		return false;
#ifdef HEARTH_SANITIZED
	static bool said;
	if (!said) {
		said = true;
		fprintf(stderr, "hearth-vmm: sanitizer build, seccomp filters not installed\n");
	}
	return false;
#else
	return true;
#endif
}

static scmp_filter_ctx new_filter(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx)
		errx(VMM_EXIT_ERROR, "seccomp: seccomp_init failed");
	return ctx;
}

static void load(scmp_filter_ctx ctx)
{
	int r = seccomp_load(ctx);
	seccomp_release(ctx);
	if (r < 0) {
		errno = -r;
		err(VMM_EXIT_ERROR, "seccomp: seccomp_load failed");
	}
}

static void install(bool main_thread)
{
	if (!wanted())
		return;
	scmp_filter_ctx ctx = new_filter();
	add_all(ctx, common_calls, sizeof(common_calls) / sizeof(common_calls[0]));
	if (main_thread)
		add_all(ctx, main_calls, sizeof(main_calls) / sizeof(main_calls[0]));
	/* Only KVM ioctls (type KVMIO); only Unix sockets. */
	if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
			     SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00, KVMIO << 8)) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
			     SCMP_A0(SCMP_CMP_EQ, AF_UNIX)) < 0)
		errx(VMM_EXIT_ERROR, "seccomp: argument rules failed");
	load(ctx);
}

void seccomp_install_supervisor(void)
{
	if (!wanted())
		return;
	scmp_filter_ctx ctx = new_filter();
	add_all(ctx, supervisor_calls, sizeof(supervisor_calls) / sizeof(supervisor_calls[0]));
	load(ctx);
}

void seccomp_install_vcpu(void)
{
	install(false);
}

void seccomp_install_main(void)
{
	install(true);
}
