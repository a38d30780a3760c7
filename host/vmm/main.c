/*
 * main.c - hearth-vmm: command line, set-up order, the control commands and
 * the main event loop. Usage and exit codes: hearth-vmm --help.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "fileref.h"
#include "jail.h"
#include "evloop.h"
#include "seccomp_filter.h"
#include "snapshot.h"
#include "vm.h"
#include "vm_snapshot.h"
#include "vsock.h"
#include "workset.h"
#include "x86_64/boot.h"
#include "x86_64/mptable.h"

#define VSOCK_MMIO_BASE 0xd0000000ull
#define VSOCK_IRQ 5
/*
 * hearth-vmm's machine has no ACPI tables (the MP table describes its CPUs and
 * IOAPIC): saying so spares Linux the search for an RSDP and its "ACPI BIOS
 * Error" line. First on the command line, so that the user's --cmdline can
 * override it (acpi=force).
 */
#define VMM_KERNEL_PARAMS "acpi=off"

struct vmm_opts {
	const char *kernel, *initrd, *cmdline, *console, *vsock_uds, *control;
	const char *restore_state, *restore_mem, *prefetch;
	uint64_t mem_mb, vsock_cid;
	unsigned vcpus;
	bool no_verify, start_paused, no_seccomp, pool;
	/* the jail (jail.h): on with --jail-uid */
	uint64_t jail_uid, jail_gid, jail_mem_max_mb, jail_overhead_mb;
	const char *jail_root;
	bool jail_no_cgroup;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hearth-vmm --kernel FILE [options]          boot a kernel\n"
		"       hearth-vmm --restore STATE --restore-mem MEM [options]\n"
		"                                                   restore a snapshot\n"
		"       hearth-vmm --pool --control P [--mem MIB] [--vcpus N] [options]\n"
		"                                                   pre-start for one later restore\n"
		"       hearth-vmm ctl SOCKET COMMAND [ARGS]        talk to a running hearth-vmm\n"
		"boot:\n"
		"  --kernel FILE      vmlinux (ELF) or bzImage, booted by the 64-bit boot protocol\n"
		"  --initrd FILE      initial ramdisk\n"
		"  --cmdline STR      kernel command line (after " VMM_KERNEL_PARAMS ";\n"
		"                     virtio devices are appended)\n"
		"  --mem MIB          guest RAM in MiB (default 128, at most 3072)\n"
		"  --vcpus N          number of vCPUs (default 1, at most %d)\n"
		"restore:\n"
		"  --restore STATE    snapshot state file; RAM, vCPUs and devices come from it\n"
		"  --restore-mem MEM  its memory file, mapped MAP_PRIVATE (shared by clones)\n"
		"  --no-verify-memory skip the memory file's SHA-256 check (trusted store)\n"
		"  --prefetch FILE    map the pages a working-set file lists (control\n"
		"                     'workset FILE' records one) before the vCPUs run\n"
		"pool:\n"
		"  --pool             create the KVM VM, irqchip, vCPUs (--vcpus) and RAM (--mem),\n"
		"                     a vsock device (its socket too, given --vsock-socket) and\n"
		"                     the seccomp filters, then wait on the\n"
		"                     control socket for one 'restore STATE MEM [vsock=P]\n"
		"                     [console=F] [prefetch=F] [verify-memory]' of a snapshot\n"
		"                     of that shape\n"
		"both:\n"
		"  --console FILE     UART output: a file (created/truncated), '-' for stdout,\n"
		"                     or fd:N for an inherited fd (default: discard)\n"
		"  --vsock-socket P   virtio-vsock device; hybrid vsock host socket at P\n"
		"                     (host connects: 'CONNECT <port>\\n' -> 'OK <n>\\n';\n"
		"                     a guest connection to host port N goes to P_N)\n"
		"  --vsock-cid N      guest CID (default 3; a restore keeps the snapshot's)\n"
		"  --control P        control socket (status, pause, resume, snapshot, stop)\n"
		"  --start-paused     do not run the vCPUs until 'resume'\n"
		"  --no-seccomp       do not install the seccomp filters (debugging only)\n"
		"jail (as root; see jail.h):\n"
		"  --jail-uid UID     confine this VMM: open its files, then new mount, PID,\n"
		"                     IPC, UTS and network namespaces, a tmpfs root holding\n"
		"                     only the socket directories, a cgroup, rlimits, then\n"
		"                     uid UID with no capability and no_new_privs\n"
		"  --jail-gid GID     its gid (default: the uid)\n"
		"  --jail-root DIR    mount point of its root (default " JAIL_DEFAULT_ROOT ")\n"
		"  --jail-mem-overhead MIB  cgroup memory limit above guest RAM (default %u)\n"
		"  --jail-mem-max MIB the cgroup memory limit itself (overrides the above)\n"
		"  --jail-no-cgroup   no cgroup (hosts without a usable one)\n"
		"exit codes: 0 guest reset/shut down, 1 hearth-vmm error, 2 usage,\n"
		"            3 guest crashed (triple fault or emulation failure), 4 stopped,\n"
		"            5 killed by its cgroup's memory limit (jail)\n",
		VMM_MAX_VCPUS, JAIL_DEFAULT_OVERHEAD_MIB);
}

static int open_console(const char *spec)
{
	if (!spec)
		return -1;
	if (strcmp(spec, "-") == 0)
		return STDOUT_FILENO;
	if (strncmp(spec, "fd:", 3) == 0) {
		char *end;
		long fd = strtol(spec + 3, &end, 10);
		if (*end || fd < 0 || fcntl((int)fd, F_GETFD) < 0)
			errx(VMM_EXIT_USAGE, "--console %s: not an open fd", spec);
		return (int)fd;
	}
	int fd = open(spec, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		err(VMM_EXIT_ERROR, "cannot open console file %s", spec);
	return fd;
}

static uint64_t parse_num(const char *s, const char *what, uint64_t min, uint64_t max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || end == s || v < min || v > max)
		errx(VMM_EXIT_USAGE, "%s: '%s' is not a number in [%llu, %llu]", what, s,
		     (unsigned long long)min, (unsigned long long)max);
	return v;
}

static void parse_args(int argc, char **argv, struct vmm_opts *o)
{
	static const struct option lo[] = {
		{ "kernel", required_argument, 0, 'k' },
		{ "initrd", required_argument, 0, 'i' },
		{ "cmdline", required_argument, 0, 'c' },
		{ "mem", required_argument, 0, 'm' },
		{ "vcpus", required_argument, 0, 'n' },
		{ "console", required_argument, 0, 's' },
		{ "vsock-socket", required_argument, 0, 'v' },
		{ "vsock-cid", required_argument, 0, 'C' },
		{ "control", required_argument, 0, 'S' },
		{ "restore", required_argument, 0, 'r' },
		{ "restore-mem", required_argument, 0, 'M' },
		{ "no-verify-memory", no_argument, 0, 'N' },
		{ "start-paused", no_argument, 0, 'P' },
		{ "no-seccomp", no_argument, 0, 'X' },
		{ "pool", no_argument, 0, 'p' },
		{ "prefetch", required_argument, 0, 'f' },
		{ "jail-uid", required_argument, 0, 'U' },
		{ "jail-gid", required_argument, 0, 'G' },
		{ "jail-root", required_argument, 0, 'R' },
		{ "jail-mem-overhead", required_argument, 0, 'O' },
		{ "jail-mem-max", required_argument, 0, 'L' },
		{ "jail-no-cgroup", no_argument, 0, 'K' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	memset(o, 0, sizeof(*o));
	o->mem_mb = 128;
	o->vcpus = 1;
	o->cmdline = "";
	o->vsock_cid = 3;
	int ch;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'k': o->kernel = optarg; break;
		case 'i': o->initrd = optarg; break;
		case 'c': o->cmdline = optarg; break;
		case 'm': o->mem_mb = parse_num(optarg, "--mem", 2, GM_MAX_SIZE >> 20); break;
		case 'n': o->vcpus = (unsigned)parse_num(optarg, "--vcpus", 1, VMM_MAX_VCPUS); break;
		case 's': o->console = optarg; break;
		case 'v': o->vsock_uds = optarg; break;
		case 'C': o->vsock_cid = parse_num(optarg, "--vsock-cid", 3, UINT32_MAX - 1); break;
		case 'S': o->control = optarg; break;
		case 'r': o->restore_state = optarg; break;
		case 'M': o->restore_mem = optarg; break;
		case 'N': o->no_verify = true; break;
		case 'P': o->start_paused = true; break;
		case 'X': o->no_seccomp = true; break;
		case 'p': o->pool = true; break;
		case 'f': o->prefetch = optarg; break;
		case 'U': o->jail_uid = parse_num(optarg, "--jail-uid", 1, UINT32_MAX - 1); break;
		case 'G': o->jail_gid = parse_num(optarg, "--jail-gid", 1, UINT32_MAX - 1); break;
		case 'R': o->jail_root = optarg; break;
		case 'O': o->jail_overhead_mb = parse_num(optarg, "--jail-mem-overhead", 0, 1 << 20); break;
		case 'L': o->jail_mem_max_mb = parse_num(optarg, "--jail-mem-max", 4, 1 << 22); break;
		case 'K': o->jail_no_cgroup = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(VMM_EXIT_USAGE);
		}
	}
	if (optind != argc)
		errx(VMM_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
	if (!o->jail_uid && (o->jail_gid || o->jail_root || o->jail_mem_max_mb || o->jail_no_cgroup))
		errx(VMM_EXIT_USAGE, "the --jail-* options go with --jail-uid");
	if (!o->jail_gid)
		o->jail_gid = o->jail_uid;
	if (!o->jail_overhead_mb)
		o->jail_overhead_mb = JAIL_DEFAULT_OVERHEAD_MIB;
	if (o->pool) {
		if (o->kernel || o->initrd || o->restore_state || o->restore_mem)
			errx(VMM_EXIT_USAGE, "--pool takes no --kernel, --initrd or --restore (the "
					     "restore command names the snapshot)");
		if (!o->control)
			errx(VMM_EXIT_USAGE, "--pool needs --control (it waits there for 'restore')");
	} else if (o->restore_state || o->restore_mem) {
		if (!o->restore_state || !o->restore_mem)
			errx(VMM_EXIT_USAGE, "--restore and --restore-mem go together");
		if (o->kernel || o->initrd)
			errx(VMM_EXIT_USAGE, "--restore does not take --kernel/--initrd");
	} else if (o->prefetch) {
		errx(VMM_EXIT_USAGE, "--prefetch goes with --restore (or the pooled 'restore')");
	} else if (!o->kernel) {
		errx(VMM_EXIT_USAGE, "--kernel (or --restore) is required (see --help)");
	}
}

static struct vm the_vm;
static struct evloop loop;
static struct ev_handler stop_h, sig_h;
static struct vsock_dev vsock;
static bool have_vsock;
static struct control ctl;
static bool loop_done;
static char kernel_id[128];
static struct timespec t_start;
/* --pool: no guest has run yet; the one 'restore' command is awaited. */
static bool pooled;

static long long us_since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)(t.tv_sec - t0->tv_sec) * 1000000 + (t.tv_nsec - t0->tv_nsec) / 1000;
}

static void on_stop(struct ev_handler *h, uint32_t events)
{
	(void)h;
	(void)events;
	loop_done = true;
}

static void on_signal(struct ev_handler *h, uint32_t events)
{
	(void)events;
	struct signalfd_siginfo si;
	if (read(h->fd, &si, sizeof(si)) == sizeof(si))
		vm_stop(&the_vm, VMM_EXIT_STOPPED, "stopped by signal %u", si.ssi_signo);
}

static void uart_irq(void *ctx, int level)
{
	vm_set_irq(ctx, UART_COM1_IRQ, level);
}

static void guest_reset(void *ctx)
{
	vm_stop(ctx, VMM_EXIT_GUEST_STOP, "guest reset the machine (i8042)");
}

static void guest_reset_cf9(void *ctx)
{
	vm_stop(ctx, VMM_EXIT_GUEST_STOP, "guest reset the machine (port 0xcf9)");
}

static void setup_legacy_devices(struct vm *vm, int console_fd)
{
	uart_init(&vm->uart, console_fd, uart_irq, vm);
	i8042_init(&vm->i8042, guest_reset, vm);
	pci_host_init(&vm->pci, guest_reset_cf9, vm);
	if (io_bus_add(&vm->pio, UART_COM1_BASE, 8, uart_io, &vm->uart) < 0 ||
	    io_bus_add(&vm->pio, I8042_DATA_PORT, 5, i8042_io, &vm->i8042) < 0 ||
	    io_bus_add(&vm->pio, PCI_HOST_PORT, PCI_HOST_PORTS, pci_host_io, &vm->pci) < 0)
		errx(VMM_EXIT_ERROR, "io bus: cannot register legacy devices");
}

static void cmd_status(struct vm *vm, char *reply, size_t len)
{
	pthread_mutex_lock(&vm->run_lock);
	const char *st = vm->stopping ? "stopping"
			 : pooled     ? "pooled"
			 : vm->paused ? "paused"
				      : "running";
	pthread_mutex_unlock(&vm->run_lock);
	pthread_mutex_lock(&vm->dev_lock);
	unsigned conns = 0;
	int failed = 0;
	if (have_vsock) {
		for (int i = 0; i < VSOCK_MAX_CONNS; i++)
			conns += vsock.conns[i].used;
		failed = (int)vsock.t.r.failed;
	}
	snprintf(reply, len,
		 "OK state=%s vcpus=%u mem_mib=%llu uptime_ms=%lld uart_tx=%llu unmapped_mmio=%llu "
		 "vsock=%s vsock_failed=%d vsock_conns=%u vsock_reset=%s",
		 st, vm->nvcpus, (unsigned long long)(vm->mem.size >> 20), us_since(&t_start) / 1000,
		 (unsigned long long)vm->uart.tx_bytes, (unsigned long long)vm->unmapped_mmio,
		 have_vsock ? "yes" : "no", failed, conns,
		 !have_vsock			  ? "none"
		 : vsock.reset_event_pending ? "waiting-for-buffer"
		 : vsock.reset_delivered	  ? "delivered"
						  : "none");
	pthread_mutex_unlock(&vm->dev_lock);
}

/* Prefetch of a working set: a failure only costs speed, so it is said and passed over. */
static long long prefetch(struct vm *vm, const char *path)
{
	struct ws_result r;
	char e[400];
	if (ws_prefetch(&vm->mem, path, &r, e, sizeof(e)) < 0) {
		fprintf(stderr, "hearth-vmm: no prefetch: %s\n", e);
		return -1;
	}
	fprintf(stderr, "hearth-vmm: prefetched %llu pages in %llu ranges (%s) in %lld us\n",
		(unsigned long long)r.pages, (unsigned long long)r.ranges, r.how, r.us);
	return r.us;
}

/* A failed pooled restore past the point of no return: say why, then exit. */
static void restore_failed(struct vm *vm, char *reply, size_t len, const char *why)
{
	snprintf(reply, len, "ERR restore failed: %s", why);
	vm_stop(vm, VMM_EXIT_ERROR, "restore failed: %s", why);
}

/*
 * restore STATE MEM [vsock=PATH] [console=FILE] [verify-memory], on a pooled
 * hearth-vmm (--pool). Everything that can refuse the snapshot (the state
 * file's checks, its shape against this process's VM, the memory file's
 * SHA-256 when asked) runs before anything changes: a refused restore leaves
 * the process pooled and reusable. After that a failure ends the process.
 */
static void cmd_restore(struct vm *vm, int argc, char **argv, char *reply, size_t len)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!pooled) {
		snprintf(reply, len, "ERR restore: only a pooled hearth-vmm (--pool) restores on "
				     "command, once");
		return;
	}
	const char *state = argv[1], *mem = argv[2], *sock = NULL, *console = NULL, *pf = NULL;
	bool verify = false;
	for (int i = 3; i < argc; i++) {
		if (!strncmp(argv[i], "vsock=", 6) && argv[i][6])
			sock = argv[i] + 6;
		else if (!strncmp(argv[i], "console=", 8) && argv[i][8])
			console = argv[i] + 8;
		else if (!strncmp(argv[i], "prefetch=", 9) && argv[i][9])
			pf = argv[i] + 9;
		else if (!strcmp(argv[i], "verify-memory"))
			verify = true;
		else {
			snprintf(reply, len, "ERR restore: unknown argument '%.100s' (vsock=PATH, "
					     "console=FILE, prefetch=FILE, verify-memory)", argv[i]);
			return;
		}
	}
	struct snap snap;
	char e[512];
	memset(&snap, 0, sizeof(snap));
	if (snap_load(state, &snap, e, sizeof(e)) < 0) {
		snprintf(reply, len, "ERR restore refused: %s", e);
		return;
	}
	const char *why = NULL;
	if (snap.cfg.vcpus != vm->nvcpus || snap.cfg.mem_size != vm->mem.size) {
		snprintf(e, sizeof(e),
			 "the snapshot is of another shape (%u vCPUs, %llu MiB) than this pooled "
			 "process (%u vCPUs, %llu MiB)",
			 snap.cfg.vcpus, (unsigned long long)(snap.cfg.mem_size >> 20), vm->nvcpus,
			 (unsigned long long)(vm->mem.size >> 20));
		why = e;
	} else if (!snap_has_node(&snap, "/virtio@d0000000")) {
		why = "the snapshot has no vsock device (pooled processes restore vsock snapshots)";
	} else if (!sock && vsock.listen_fd < 0) {
		why = "the snapshot has a vsock device: give vsock=PATH";
	} else if (sock && vsock.listen_fd >= 0 && strcmp(sock, vsock.uds_path)) {
		snprintf(e, sizeof(e), "the vsock socket is already bound at %s (--vsock-socket)",
			 vsock.uds_path);
		why = e;
	} else if (verify && snap_check_memory(&snap, mem, e, sizeof(e)) < 0) {
		why = e;
	}
	if (why) {
		snprintf(reply, len, "ERR restore refused: %s", why);
		snap_free(&snap);
		return;
	}
	long long t_loaded = us_since(&t0);
	/* From here on the VM changes: no way back to pooled. */
	pooled = false;
	if (console) {
		/* A file passed with the command (console=@N), or a path. */
		int fd = fref_lookup(console) >= 0
				 ? fref_open(console, O_WRONLY | O_CLOEXEC, 0)
				 : open(console, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0 || dup3(fd, STDOUT_FILENO, 0) < 0 || dup3(fd, STDERR_FILENO, 0) < 0) {
			snprintf(e, sizeof(e), "console %s: %s", console, strerror(errno));
			if (fd >= 0)
				close(fd);
			snap_free(&snap);
			restore_failed(vm, reply, len, e);
			return;
		}
		close(fd);
		pthread_mutex_lock(&vm->dev_lock);
		vm->uart.out_fd = STDOUT_FILENO;
		pthread_mutex_unlock(&vm->dev_lock);
	}
	int r = gm_map_file_fixed(&vm->mem, mem);
	if (r < 0) {
		snprintf(e, sizeof(e), "mapping memory file %s: %s", mem,
			 r == -EINVAL ? "its size is not the snapshot's RAM size" : strerror(-r));
		snap_free(&snap);
		restore_failed(vm, reply, len, e);
		return;
	}
	if (pf)
		prefetch(vm, pf);
	long long t_mapped = us_since(&t0);
	snprintf(kernel_id, sizeof(kernel_id), "%s", snap.cfg.kernel_id);
	if ((vsock.listen_fd < 0 && vsock_listen(&vsock, sock, e, sizeof(e)) < 0) ||
	    vmm_snapshot_restore(vm, &vsock, &snap, e, sizeof(e)) < 0) {
		snap_free(&snap);
		restore_failed(vm, reply, len, e);
		return;
	}
	snap_free(&snap);
	/*
	 * Said before the vCPUs run: once they do, the guest's UART output goes to
	 * the same console file and would interleave with this line.
	 */
	long long us = us_since(&t0);
	fprintf(stderr, "hearth-vmm: restored %s into a pooled process (pooled %lld ms), vCPUs "
			"released %lld us after the restore command (state file read and checked "
			"%lld, memory mapped%s %lld)\n",
		state, (us_since(&t_start) - us) / 1000, us, t_loaded, pf ? " and prefetched" : "",
		t_mapped);
	vm_resume(vm);
	snprintf(reply, len, "OK restored us=%lld", us_since(&t0));
}

static void control_exec(void *ctx, int argc, char **argv, char *reply, size_t len)
{
	struct vm *vm = ctx;
	const char *cmd = argv[0];
	if (!strcmp(cmd, "restore") && argc >= 3) {
		cmd_restore(vm, argc, argv, reply, len);
	} else if (pooled && strcmp(cmd, "status") && strcmp(cmd, "stop")) {
		snprintf(reply, len, "ERR pooled: no guest yet (restore STATE MEM [vsock=P] "
				     "[console=F] [verify-memory], status or stop)");
	} else if (!strcmp(cmd, "status") && argc == 1) {
		cmd_status(vm, reply, len);
	} else if (!strcmp(cmd, "pause") && argc == 1) {
		vm_pause(vm);
		snprintf(reply, len, "OK paused");
	} else if (!strcmp(cmd, "resume") && argc == 1) {
		vm_resume(vm);
		snprintf(reply, len, "OK running");
	} else if (!strcmp(cmd, "workset") && argc == 2) {
		struct ws_result r;
		char e[400];
		if (ws_record(&vm->mem, argv[1], &r, e, sizeof(e)) < 0)
			snprintf(reply, len, "ERR workset: %s", e);
		else
			snprintf(reply, len, "OK workset pages=%llu ranges=%llu us=%lld",
				 (unsigned long long)r.pages, (unsigned long long)r.ranges, r.us);
	} else if (!strcmp(cmd, "stop") && argc == 1) {
		vm_stop(vm, VMM_EXIT_STOPPED, "stopped through the control socket");
		snprintf(reply, len, "OK stopping");
	} else if (!strcmp(cmd, "snapshot") && argc == 3) {
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		bool was_paused = vm->paused;
		if (!was_paused)
			vm_pause(vm);
		char e[512];
		int rc = vmm_snapshot_create(vm, have_vsock ? &vsock : NULL, kernel_id, argv[1],
					     argv[2], e, sizeof(e));
		if (!was_paused)
			vm_resume(vm);
		if (rc < 0)
			snprintf(reply, len, "ERR snapshot failed: %s", e);
		else
			snprintf(reply, len, "OK snapshot mem=%s state=%s ms=%lld", argv[1], argv[2],
				 us_since(&t0) / 1000);
	} else {
		snprintf(reply, len,
			 "ERR unknown command or wrong arguments: '%s' (try status, pause, resume, "
			 "snapshot MEM STATE, workset FILE, stop, restore STATE MEM ...)",
			 cmd);
	}
}

static void make_kernel_id(const char *kernel)
{
	struct stat st;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s", kernel);
	int fd = fref_open(kernel, O_RDONLY | O_CLOEXEC, 0);
	int r = fd >= 0 ? fstat(fd, &st) : -1;
	if (fd >= 0)
		close(fd);
	if (r == 0)
		snprintf(kernel_id, sizeof(kernel_id), "%.100s:%lld", basename(tmp),
			 (long long)st.st_size);
}

/* The dirname of path into out (for a socket's directory). */
static const char *dir_of(const char *path, char *out, size_t n)
{
	snprintf(out, n, "%s", path);
	char *s = strrchr(out, '/');
	if (!s)
		snprintf(out, n, ".");
	else if (s == out)
		out[1] = 0;
	else
		*s = 0;
	return out;
}

/* Confines this process (jail.h): its files, its socket directories, its limits. */
static void enter_jail(const struct vmm_opts *o, uint64_t ram, int console_fd)
{
	static char dirs[JAIL_MAX_DIRS][4096];
	struct jail_cfg j;
	memset(&j, 0, sizeof(j));
	j.uid = (uid_t)o->jail_uid;
	j.gid = (gid_t)o->jail_gid;
	j.root = o->jail_root;
	const char *files[] = { o->kernel, o->initrd, o->restore_state, o->restore_mem, o->prefetch };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		if (files[i])
			j.files[j.nfiles++] = files[i];
	const char *socks[] = { o->control, o->vsock_uds };
	for (size_t i = 0; i < sizeof(socks) / sizeof(socks[0]); i++) {
		if (!socks[i])
			continue;
		char d[4096];
		dir_of(socks[i], d, sizeof(d));
		if (d[0] != '/')
			errx(VMM_EXIT_USAGE, "jail: socket paths must be absolute (%s)", socks[i]);
		bool seen = false;
		for (int k = 0; k < j.ndirs; k++)
			seen |= !strcmp(j.dirs[k], d);
		if (!seen) {
			snprintf(dirs[j.ndirs], sizeof(dirs[0]), "%s", d);
			j.dirs[j.ndirs] = dirs[j.ndirs];
			j.ndirs++;
		}
	}
	if (console_fd > STDERR_FILENO)
		j.keep[j.nkeep++] = console_fd;
	j.mem_max = o->jail_mem_max_mb ? o->jail_mem_max_mb << 20 : ram + (o->jail_overhead_mb << 20);
	j.cpus = o->vcpus;
	j.pids_max = o->vcpus + 16;
	j.no_cgroup = o->jail_no_cgroup;
	jail_enter(&j);
}

int main(int argc, char **argv)
{
	clock_gettime(CLOCK_MONOTONIC, &t_start);
	if (argc >= 2 && !strcmp(argv[1], "ctl")) {
		if (argc < 4)
			errx(VMM_EXIT_USAGE, "usage: hearth-vmm ctl SOCKET COMMAND [ARGS]");
		return control_client_main(argv[2], argc - 3, argv + 3);
	}
	struct vmm_opts o;
	parse_args(argc, argv, &o);

	struct vm *vm = &the_vm;
	char ebuf[512];
	struct snap snap;
	memset(&snap, 0, sizeof(snap));
	long long t_loaded = 0, t_vm = 0, t_state = 0;
	if (o.restore_state) {
		if (snap_load(o.restore_state, &snap, ebuf, sizeof(ebuf)) < 0)
			errx(VMM_EXIT_ERROR, "restore refused: %s", ebuf);
		if (snap.cfg.vcpus < 1 || snap.cfg.vcpus > VMM_MAX_VCPUS ||
		    snap.cfg.mem_size < (2u << 20) || snap.cfg.mem_size > GM_MAX_SIZE ||
		    (snap.cfg.mem_size & 0xfff))
			errx(VMM_EXIT_ERROR, "restore refused: state file VM config out of range "
					     "(%u vCPUs, %llu bytes of RAM)",
			     snap.cfg.vcpus, (unsigned long long)snap.cfg.mem_size);
		if (!o.no_verify && snap_check_memory(&snap, o.restore_mem, ebuf, sizeof(ebuf)) < 0)
			errx(VMM_EXIT_ERROR, "restore refused: %s", ebuf);
		o.vcpus = snap.cfg.vcpus;
		snprintf(kernel_id, sizeof(kernel_id), "%s", snap.cfg.kernel_id);
		t_loaded = us_since(&t_start);
	} else if (o.kernel) {
		make_kernel_id(o.kernel);
	}

	int console_fd = open_console(o.console);
	if (o.no_seccomp)
		seccomp_disable(); /* before the jail: its supervisor has a filter too */
	if (o.pool) {
		/* OpenSSL's first digest loads its provider (~0.7 ms): pay it now, not in restore. */
		uint8_t d[32];
		snap_sha256_file("/dev/null", d);
	}
	if (o.jail_uid)
		enter_jail(&o, o.restore_state ? snap.cfg.mem_size : o.mem_mb << 20, console_fd);
	signal(SIGPIPE, SIG_IGN);

	/* Signals go to the event loop; vCPU threads inherit this mask and unblock only SIGUSR1. */
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	sigaddset(&ss, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	sigdelset(&ss, SIGUSR1);
	int sfd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		err(VMM_EXIT_ERROR, "signalfd failed");
	vm_open(vm, o.vcpus);
	int e = o.restore_state ? gm_init_file(&vm->mem, o.restore_mem, snap.cfg.mem_size)
				: gm_init_anon(&vm->mem, o.mem_mb << 20);
	if (e < 0) {
		errno = -e;
		if (o.restore_state)
			err(VMM_EXIT_ERROR, "restore refused: mapping memory file %s", o.restore_mem);
		err(VMM_EXIT_ERROR, "guest RAM: mmap of %llu MiB failed", (unsigned long long)o.mem_mb);
	}
	vm_map_memory(vm);
	if (o.prefetch)
		prefetch(vm, o.prefetch);
	vm_create_vcpus(vm);
	setup_legacy_devices(vm, console_fd);
	t_vm = us_since(&t_start);

	ev_init(&loop);
	static char cmdline[BOOT_CMDLINE_MAX];
	if ((size_t)snprintf(cmdline, sizeof(cmdline), "%s%s%s", VMM_KERNEL_PARAMS,
			     o.cmdline[0] ? " " : "", o.cmdline) >= sizeof(cmdline))
		errx(VMM_EXIT_USAGE, "--cmdline is too long (limit %lu bytes)", BOOT_CMDLINE_MAX - 1);
	bool snap_has_vsock = o.restore_state && snap_has_node(&snap, "/virtio@d0000000");
	if (o.restore_state && snap_has_vsock != (o.vsock_uds != NULL))
		errx(VMM_EXIT_USAGE, "restore: the snapshot %s a vsock device; %s --vsock-socket",
		     snap_has_vsock ? "has" : "has no", snap_has_vsock ? "give it" : "drop");
	if (o.pool) {
		/* The device now; its socket now (--vsock-socket) or with the restore command. */
		vsock_init(&vsock, vm, &loop, VSOCK_MMIO_BASE, VSOCK_IRQ, o.vsock_cid, o.vsock_uds);
		have_vsock = true;
	} else if (o.vsock_uds) {
		vsock_init(&vsock, vm, &loop, VSOCK_MMIO_BASE, VSOCK_IRQ, o.vsock_cid, o.vsock_uds);
		have_vsock = true;
		if (virtio_mmio_cmdline(&vsock.t, cmdline, sizeof(cmdline)) < 0)
			errx(VMM_EXIT_USAGE, "command line too long for the device list");
	}

	if (o.pool) {
		/* Nothing to load: the restore command brings memory and state. */
	} else if (o.restore_state) {
		if (vmm_snapshot_restore(vm, have_vsock ? &vsock : NULL, &snap, ebuf, sizeof(ebuf)) < 0)
			errx(VMM_EXIT_ERROR, "restore failed: %s", ebuf);
		snap_free(&snap);
		t_state = us_since(&t_start);
	} else {
		struct boot_info bi;
		if (x86_boot_load(vm, o.kernel, o.initrd, cmdline, &bi, ebuf, sizeof(ebuf)) < 0)
			errx(VMM_EXIT_ERROR, "boot: %s", ebuf);
		if (x86_mptable_write(&vm->mem, vm->nvcpus, ebuf, sizeof(ebuf)) < 0)
			errx(VMM_EXIT_ERROR, "boot: %s", ebuf);
		for (unsigned i = 0; i < vm->nvcpus; i++)
			x86_vcpu_boot_regs(&vm->vcpu[i], bi.entry);
	}

	stop_h.cb = on_stop;
	sig_h.cb = on_signal;
	if (ev_add(&loop, &stop_h, vm->stop_efd, EPOLLIN) < 0 || ev_add(&loop, &sig_h, sfd, EPOLLIN) < 0)
		err(VMM_EXIT_ERROR, "epoll_ctl failed");
	if (o.control)
		control_init(&ctl, &loop, o.control, control_exec, vm);

	if (o.start_paused || o.pool) {
		vm->pause_req = true;
		vm->paused = true;
	}
	vm_start(vm);
	seccomp_install_main();
	if (o.pool) {
		/* Every vCPU thread has its filter and is parked before 'restore' is taken. */
		vm_pause(vm);
		pooled = true;
		fprintf(stderr, "hearth-vmm: pooled (%u vCPUs, %llu MiB), ready %lld us after start\n",
			vm->nvcpus, (unsigned long long)o.mem_mb, us_since(&t_start));
	}
	if (o.restore_state)
		fprintf(stderr,
			"hearth-vmm: restored %s, vCPUs started %lld us after start "
			"(state file read and checked %lld, VM + memory + vCPUs created %lld, "
			"state restored %lld)\n",
			o.restore_state, us_since(&t_start), t_loaded, t_vm, t_state);
	while (!loop_done)
		ev_run_once(&loop, -1);
	vm_join(vm);
	if (have_vsock)
		vsock_shutdown(&vsock);
	control_shutdown(&ctl);
	fprintf(stderr, "hearth-vmm: %s (exit %d)\n", vm->exit_reason, vm->exit_code);
	return vm->exit_code;
}
