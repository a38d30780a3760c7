/*
 * main.c - hearth-vmm: command line, set-up order, and the main event loop.
 * Usage and exit codes: hearth-vmm --help.
 */
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "evloop.h"
#include "vm.h"
#include "vsock.h"
#include "x86_64/boot.h"

#define VSOCK_MMIO_BASE 0xd0000000ull
#define VSOCK_IRQ 5

struct vmm_opts {
	const char *kernel, *initrd, *cmdline, *console, *vsock_uds;
	uint64_t vsock_cid;
	uint64_t mem_mb;
	unsigned vcpus;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hearth-vmm --kernel FILE [options]\n"
		"  --kernel FILE     vmlinux (ELF) or bzImage, booted by the 64-bit boot protocol\n"
		"  --initrd FILE     initial ramdisk\n"
		"  --cmdline STR     kernel command line (virtio devices are appended)\n"
		"  --mem MIB         guest RAM in MiB (default 128, at most 3072)\n"
		"  --vcpus N         number of vCPUs (default 1, at most %d)\n"
		"  --console FILE    UART output: a file (created/truncated), '-' for stdout,\n"
		"                    or fd:N for an inherited fd (default: discard)\n"
		"  --vsock-socket P  add a virtio-vsock device; hybrid vsock host socket at P\n"
		"                    (host connects: 'CONNECT <port>\\n' -> 'OK <n>\\n';\n"
		"                    guest connects to port N: P_N)\n"
		"  --vsock-cid N     guest CID (default 3)\n"
		"exit codes: 0 guest reset/shut down, 1 hearth-vmm error, 2 usage,\n"
		"            3 guest crashed (triple fault or emulation failure), 4 stopped\n",
		VMM_MAX_VCPUS);
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
		{ "kernel", required_argument, 0, 'k' }, { "initrd", required_argument, 0, 'i' },
		{ "cmdline", required_argument, 0, 'c' }, { "mem", required_argument, 0, 'm' },
		{ "vcpus", required_argument, 0, 'n' },  { "console", required_argument, 0, 's' },
		{ "vsock-socket", required_argument, 0, 'v' },
		{ "vsock-cid", required_argument, 0, 'C' },
		{ "help", no_argument, 0, 'h' },          { 0, 0, 0, 0 },
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
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(VMM_EXIT_USAGE);
		}
	}
	if (optind != argc)
		errx(VMM_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
	if (!o->kernel)
		errx(VMM_EXIT_USAGE, "--kernel is required (see --help)");
}

static struct vm the_vm;
static struct evloop loop;
static struct ev_handler stop_h, sig_h;
static struct vsock_dev vsock;
static bool loop_done;

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

static void setup_legacy_devices(struct vm *vm, int console_fd)
{
	uart_init(&vm->uart, console_fd, uart_irq, vm);
	vm->i8042.reset = guest_reset;
	vm->i8042.ctx = vm;
	if (io_bus_add(&vm->pio, UART_COM1_BASE, 8, uart_io, &vm->uart) < 0 ||
	    io_bus_add(&vm->pio, I8042_DATA_PORT, 5, i8042_io, &vm->i8042) < 0)
		errx(VMM_EXIT_ERROR, "io bus: cannot register legacy devices");
}

int main(int argc, char **argv)
{
	struct vmm_opts o;
	parse_args(argc, argv, &o);
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

	struct vm *vm = &the_vm;
	int console_fd = open_console(o.console);
	vm_open(vm, o.vcpus);
	int e = gm_init_anon(&vm->mem, o.mem_mb << 20);
	if (e < 0)
		errno = -e, err(VMM_EXIT_ERROR, "guest RAM: mmap of %llu MiB failed",
		     (unsigned long long)o.mem_mb);
	vm_map_memory(vm);
	vm_create_vcpus(vm);
	setup_legacy_devices(vm, console_fd);

	ev_init(&loop);
	static char cmdline[BOOT_CMDLINE_MAX];
	snprintf(cmdline, sizeof(cmdline), "%s", o.cmdline);
	if (o.vsock_uds) {
		vsock_init(&vsock, vm, &loop, VSOCK_MMIO_BASE, VSOCK_IRQ, o.vsock_cid, o.vsock_uds);
		if (virtio_mmio_cmdline(&vsock.t, cmdline, sizeof(cmdline)) < 0)
			errx(VMM_EXIT_USAGE, "command line too long for the device list");
	}

	char ebuf[256];
	struct boot_info bi;
	if (x86_boot_load(vm, o.kernel, o.initrd, cmdline, &bi, ebuf, sizeof(ebuf)) < 0)
		errx(VMM_EXIT_ERROR, "boot: %s", ebuf);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		x86_vcpu_boot_regs(&vm->vcpu[i], bi.entry);

	stop_h.cb = on_stop;
	sig_h.cb = on_signal;
	if (ev_add(&loop, &stop_h, vm->stop_efd, EPOLLIN) < 0 || ev_add(&loop, &sig_h, sfd, EPOLLIN) < 0)
		err(VMM_EXIT_ERROR, "epoll_ctl failed");

	vm_start(vm);
	while (!loop_done)
		ev_run_once(&loop, -1);
	vm_join(vm);
	if (o.vsock_uds)
		vsock_shutdown(&vsock);
	fprintf(stderr, "hearth-vmm: %s (exit %d)\n", vm->exit_reason, vm->exit_code);
	return vm->exit_code;
}
