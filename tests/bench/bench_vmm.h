/*
 * bench_vmm.h - the pieces of `ci/bench vmm` (bench_vmm*.c) that the main
 * program strings together: child processes that never outlive the run,
 * per-mapping memory figures from /proc/<pid>/smaps, a QMP client and the
 * QEMU `-incoming` restore, and a raw KVM ioctl probe of this host.
 *
 * Times are microseconds of CLOCK_MONOTONIC (now_us() from the vmm test
 * harness). "Process start" is the instant just before fork(): it includes
 * fork, exec and dynamic linking, as an engine starting a VMM would pay.
 */
#ifndef HEARTH_BENCH_VMM_H
#define HEARTH_BENCH_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ---- child processes (bench_vmm_proc.c) ---- */

/*
 * Starts argv[0] with stdin/stdout on /dev/null, stderr on err_wr if >= 0,
 * else appended to errlog (NULL: /dev/null), and, if console_wr >= 0, that fd
 * as fd 3 (so the child can be told "--console fd:3"). The pid is registered:
 * bv_kill_all() (also run at exit and on SIGINT/SIGTERM/SIGHUP) kills
 * whatever is still alive. Returns the pid, or -1.
 */
pid_t bv_spawn(const char *const *argv, int console_wr, int err_wr, const char *errlog);
/* Sends sig, waits up to timeout_ms, then SIGKILLs; reaps and unregisters. */
void bv_stop(pid_t pid, int sig, int timeout_ms);
/* true if pid has exited (reaped and unregistered then). */
bool bv_exited(pid_t pid);
void bv_kill_all(void);
/* Installs the exit/signal clean-up; call once before the first spawn. */
void bv_proc_init(void);

/* A pipe for a child's console or stderr: rd is O_NONBLOCK, both O_CLOEXEC (bv_spawn dup2s wr). */
int bv_console_pipe(int *rd, int *wr);
/* Waits until rd is readable (the first console byte); returns now_us() then, or -1. */
long long bv_wait_readable(int rd, int timeout_ms);
/* Reads and discards what is buffered. */
void bv_drain(int rd);

/* ---- memory (bench_vmm_proc.c) ---- */

struct bv_mem {
	long long rss, pss, shared_clean, shared_dirty, private_clean, private_dirty; /* KiB */
	long long size; /* KiB of address space summed (mapping figures only) */
	int vmas;       /* mappings that matched */
};

/* Whole process, from /proc/<pid>/smaps_rollup. Returns 0 or -1. */
int bv_mem_rollup(pid_t pid, struct bv_mem *m);
/*
 * Sums the mappings of /proc/<pid>/smaps that are the guest RAM: if path is
 * set, every mapping of that file (hearth-vmm maps the snapshot memory file
 * MAP_PRIVATE, so its copy-on-write pages are counted there too); otherwise
 * every anonymous mapping of exactly size_kib (QEMU's RAM block). Returns the
 * number of mappings found (0: none), or -1.
 */
int bv_mem_mapping(pid_t pid, const char *path, long long size_kib, struct bv_mem *m);

/*
 * The largest RSS contributors of a process, grouped by mapped file (anonymous
 * mappings as "[anon]"), leaving out the mappings of skip_path: "libcrypto.so.3
 * 2828 KiB, libc.so.6 1300 KiB, ...", at most top entries. Returns 0 or -1.
 */
int bv_mem_top(pid_t pid, const char *skip_path, int top, char *out, size_t len);

/* ---- statistics and the machine (bench_vmm_proc.c) ---- */

/* Sorts v in place; *p50 and *p99 in the unit of v (nearest rank). */
void bv_pct(long long *v, int n, long long *p50, long long *p99);
/* "2 cores, AMD EPYC, Linux 6.1.0" */
void bv_machine(char *buf, size_t len);
/* "PVM (kvm_pvm module; no vmx/svm)", "kvm_intel (vmx)", ... */
void bv_kvm_flavour(char *buf, size_t len);

/* ---- a QEMU -M microvm command line (bench_qemu_argv.c; bench_vmm_qemu.c, bench_lab.c) ---- */

/* What the benchmarks' QEMU command lines differ in; NULL or false leaves an option out. */
struct bv_qemu_opts {
	const char *bin;
	const char *machine;           /* -M */
	const char *accel;             /* -accel */
	const char *cpu;               /* -cpu */
	int mem_mib;                   /* -m */
	const char *smp;               /* -smp */
	bool nographic;                /* -nographic */
	bool no_reboot;                /* -no-reboot */
	const char *console_id;        /* the serial console's chardev id ... */
	const char *console;           /* ... and the file it writes to */
	const char *kernel;            /* -kernel */
	const char *initrd;            /* -initrd */
	const char *append;            /* -append */
	const char *const *extra;      /* more arguments before -qmp, NULL-terminated */
	const char *qmp;               /* the QMP socket (server=on,wait=off) */
	const char *incoming;          /* a migration file to load (-incoming "exec:cat FILE") */
};

/* A command line: argv, and the strings it formatted. */
struct bv_qemu_argv {
	const char *av[64];
	char mem[16], chardev[400], serial[80], qmp[400], incoming[400];
};

/*
 * Builds, in this order: BIN -M -accel -cpu -m [-smp] -nodefaults -no-user-config
 * [-nographic] -display none [-no-reboot] -chardev file,id=ID,path=CONSOLE
 * -serial chardev:ID -kernel [-initrd] [-append] [EXTRA...] -qmp [-incoming].
 * a->av is NULL-terminated and points into a and o's strings. Returns the
 * argument count, or -1 if they do not fit.
 */
int bv_qemu_argv(const struct bv_qemu_opts *o, struct bv_qemu_argv *a);

/* ---- QEMU (bench_vmm_qemu.c) ---- */

struct bv_qemu {
	const char *bin;    /* qemu-system-x86_64 */
	const char *guest;  /* the ELF image (PVH entry) */
	int mem_mib;
	const char *accel;  /* "kvm" or "tcg", chosen by bv_qemu_prepare() */
	char version[128];  /* first line of `-version` */
	char dir[256];      /* temp dir holding the migration file */
	char mig[320];      /* the migration ("snapshot") file */
	char why_not_kvm[256];
};

/*
 * Boots the guest under QEMU -M microvm, waits for its console output, and
 * migrates it to a file (QMP `migrate exec:cat > FILE`), then restores that
 * file once to check it. Tries -accel kvm -cpu qemu64 first, then TCG; the
 * reason KVM was not used lands in why_not_kvm. Returns 0 or -1 (err set).
 */
int bv_qemu_prepare(struct bv_qemu *q, char *err, size_t errlen);
/*
 * One restore: `qemu ... -incoming "exec:cat FILE"` from process start until
 * QMP query-status says running. If mem is set, also fills the process and
 * guest-RAM figures (mem[0] rollup, mem[1] RAM mapping) after settle_ms.
 * Returns microseconds, or -1 (err set).
 */
long long bv_qemu_restore(struct bv_qemu *q, int settle_ms, struct bv_mem mem[2], char *err,
			  size_t errlen);
void bv_qemu_cleanup(struct bv_qemu *q);

/* ---- raw KVM costs on this host (bench_vmm_kvm.c) ---- */

enum {
	BV_KVM_CREATE_VM,
	BV_KVM_MEMSLOT,
	BV_KVM_IRQCHIP_PIT,
	BV_KVM_VCPU,
	BV_KVM_DESTROY,
	BV_KVM_MEMSLOT_LATE,
	BV_KVM_N
};
extern const char *const bv_kvm_step_names[BV_KVM_N];
/*
 * The ioctls of hearth-vmm's restore before any state is loaded, timed one by
 * one in this process, in its order: create the VM (+ TSS), one memslot over a
 * MAP_PRIVATE mapping of mem_file (mem_bytes), the irqchip and PIT, one vCPU;
 * closing it all. Then, on a second VM, the memslot added after the irqchip
 * (BV_KVM_MEMSLOT_LATE). us[step] gets wall-clock microseconds, cpu_us[step]
 * this thread's CPU time (user + kernel), telling work apart from waiting.
 * Returns 0 or -1 (errno set).
 */
int bv_kvm_probe(const char *mem_file, size_t mem_bytes, long long us[BV_KVM_N],
		 long long cpu_us[BV_KVM_N]);

#endif
