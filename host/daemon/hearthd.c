/*
 * hearthd - the hearth daemon: HTTP API, tenants, functions, scheduler.
 *
 * Starts on embedded defaults (state in /var/lib/hearth, API on
 * 127.0.0.1:7070 and /run/hearth/hearthd.sock, engine chosen automatically);
 * every default can be overridden by a flag (hearthd --help).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "async.h"
#include "auth.h"
#include "config.h"
#include "engine.h"
#include "imagegc.h"
#include "log.h"
#include "quota.h"
#include "scheduler.h"
#include "store.h"

#ifndef HEARTH_AGENT_DEFAULT
#define HEARTH_AGENT_DEFAULT "/usr/lib/hearth/hearth-agent"
#endif
#ifndef HEARTH_UI_DEFAULT
#define HEARTH_UI_DEFAULT "/usr/share/hearth/ui"
#endif
#ifndef HEARTH_VMM_DEFAULT
#define HEARTH_VMM_DEFAULT "/usr/lib/hearth/hearth-vmm"
#endif
#ifndef HEARTH_CACHE_DIR
#define HEARTH_CACHE_DIR "/var/cache/hearth"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hearthd [options]\n"
		"  --config PATH          read options from PATH first ('key = value' per line, keys\n"
		"                         are these flags without '--'; flags given here override\n"
		"                         it; default " HEARTHD_DEFAULT_CONFIG " when it exists;\n"
		"                         'none' = no file)\n"
		"  --listen HOST:PORT     TCP address of the API (default 127.0.0.1:7070; 'none' to disable)\n"
		"  --socket PATH          Unix socket of the API (default /run/hearth/hearthd.sock)\n"
		"  --state-dir DIR        SQLite state, images, admin key (default /var/lib/hearth)\n"
		"  --store URL|PATH       the state store: a SQLite file (default STATE-DIR/hearth.db)\n"
		"                         or postgresql://... : a fleet of hosts sharing one\n"
		"                         PostgreSQL database (see docs/fleet.md)\n"
		"  --host-id ID           this host's name in a fleet, unique among live hosts\n"
		"                         (default: the hostname)\n"
		"  --run-dir DIR          per-VM sockets and logs (default /run/hearth/vms)\n"
		"  --engine NAME          auto | builtin | libvirt | process (default auto: builtin\n"
		"                         where KVM runs stock guests, else libvirt)\n"
		"  --vmm PATH             hearth-vmm for the builtin engine (default %s)\n"
		"  --builtin-kernel PATH  guest kernel for builtin VMs (default: the cached vmlinux)\n"
		"  --allow-unisolated     permit the process engine (NO isolation; development only)\n"
		"  --libvirt-uri URI      default qemu:///system\n"
		"  --kernel PATH          guest kernel (default: newest kernel-config/build result)\n"
		"  --agent PATH           hearth-agent put into images (default %s)\n"
		"  --keep-warm SECONDS    idle VM lifetime (default 600)\n"
		"  --restore-timeout-ms N a restored clone not answering within N ms is destroyed\n"
		"                         and a VM booted instead (default 5000)\n"
		"  --region NAME          the AWS region hearthd presents (default us-east-1): the\n"
		"                         AWS_REGION of runtime-mode functions, ARNs, and the\n"
		"                         Lambda API's SigV4 credential scope\n"
		"  --vmm-pool N           builtin engine: pre-started hearth-vmm processes kept idle\n"
		"                         per VM shape with a snapshot; a clone restores in one in\n"
		"                         well under a millisecond (default 2; 0: spawn each)\n"
		"  --jail on|off          jail every VM's host process (default on as root). builtin:\n"
		"                         hearth-vmm gets its own uid, namespaces, empty root, cgroup,\n"
		"                         no capability. libvirt: QEMU gets its own uid, reads only its\n"
		"                         VM's files (POSIX ACLs), a cgroup memory limit, and keeps\n"
		"                         its seccomp sandbox (off, with a warning, where libvirtd has\n"
		"                         no DAC driver or the run dir no ACLs)\n"
		"  --jail-uid-base N      first of the 65536 uids jailed VMMs and QEMUs get (2000000000)\n"
		"  --max-vms N            VMs on this host at most (default 64)\n"
		"  --host-memory-mb N     guest memory of all VMs at most (default: RAM - 1 GiB)\n"
		"  --vcpu-overcommit R    vCPUs of all VMs at most R x host CPUs (default 16)\n"
		"  --unreserved-floor N   VM slots no reservation may take (default max-vms / 10)\n"
		"  --parked-ttl SECONDS   how long an idle VM stays saved to disk on engines that\n"
		"                         can save/restore, before it is destroyed (default 86400)\n"
		"  --async-retries N      retries of a failed event (default 2)\n"
		"  --async-backoff-ms N   first retry delay, doubling (default 1000)\n"
		"  --async-max-age S      events older than this are dead-lettered (default 21600)\n"
		"  --no-server-path-deploy  refuse admin deploys from server paths\n"
		"  --max-connections N    TCP API connections at most (default 8192, lowered to fit\n"
		"                         the open-file limit with room for VMs and the Unix socket)\n"
		"  --max-connections-per-ip N  TCP API connections per client address (default 1024)\n"
		"  --unix-max-connections N    Unix socket API connections (default 1024)\n"
		"  --header-timeout S     a request header must be complete within S seconds of\n"
		"                         connecting or of the previous response (default 10)\n"
		"  --image-gc-interval S  sweep for images no version uses every S seconds (default\n"
		"                         600; also at start and after every deletion)\n"
		"  --inline-max-us N      run a warm call in the request's own thread when the\n"
		"                         function's recent calls took at most N us (default 500;\n"
		"                         0 = never: every call goes through the VM's thread)\n"
		"  --ledger-batch-ms N    invocation records are appended to a journal next to the\n"
		"                         SQLite store (durable from then on) and committed to it in\n"
		"                         batches: a batch waits up to N ms for more (default 2;\n"
		"                         0 = at once). Every read of usage or logs commits first.\n"
		"  --disk-reserve-mb N    deploys leave N MiB free on the state directory's file\n"
		"                         system, for invocation records: beyond, 507 (default: 5%%\n"
		"                         of it, at most 1024; 0 = none)\n"
		"  --ui-dir DIR           the web console's files, served at /ui/ (default %s;\n"
		"                         'none' = no console)\n"
		"  --aws-region R         the same as --region\n"
		"  --verbose              debug log lines\n",
		HEARTH_VMM_DEFAULT, HEARTH_AGENT_DEFAULT, HEARTH_UI_DEFAULT);
}

/* A flag's value: a whole number 1..10^7, or exit with a usage error. */
static int positive_arg(const char *flag, const char *v)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || *end || end == v || n < 1 || n > 10000000) {
		fprintf(stderr, "hearthd: %s wants a whole number from 1, got '%s'\n", flag, v);
		exit(2);
	}
	return (int)n;
}

#define NOFILE_IF_UNLIMITED 1048576u /* fs.nr_open's default */
#define FD_RESERVE_BASE 256u   /* SQLite, logs, the agent and engine plumbing */
#define FD_RESERVE_PER_VM 16u  /* a VM's sockets, pipes and files */

/*
 * Raises RLIMIT_NOFILE's soft limit to the hard one (which the operator sets:
 * ulimit -Hn, systemd's LimitNOFILE=), then fits the API's connection limits under it, leaving room for every VM,
 * SQLite and the Unix socket: accepting a TCP connection must never take the
 * fd a VM or the local socket needs.
 */
static int fit_connections(struct api_config *c, int max_vms)
{
	struct rlimit rl;
	rlim_t reserve, budget;

	if (c->max_conns <= 0)
		c->max_conns = API_DEFAULT_MAX_CONNS;
	if (c->max_conns_per_ip <= 0)
		c->max_conns_per_ip = API_DEFAULT_MAX_CONNS_PER_IP;
	if (c->unix_max_conns <= 0)
		c->unix_max_conns = API_DEFAULT_UNIX_MAX_CONNS;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		perror("hearthd: getrlimit(RLIMIT_NOFILE)");
		return -1;
	}
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? NOFILE_IF_UNLIMITED : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		getrlimit(RLIMIT_NOFILE, &rl);
	reserve = FD_RESERVE_BASE + FD_RESERVE_PER_VM * (rlim_t)(max_vms > 0 ? max_vms : 0);
	budget = rl.rlim_cur > reserve ? rl.rlim_cur - reserve : 0;
	if ((rlim_t)c->unix_max_conns > budget / 4)
		c->unix_max_conns = (int)(budget / 4);
	budget -= (rlim_t)c->unix_max_conns;
	if ((rlim_t)c->max_conns > budget)
		c->max_conns = (int)budget;
	if (c->max_conns_per_ip > c->max_conns)
		c->max_conns_per_ip = c->max_conns;
	if (c->max_conns < 16 || c->unix_max_conns < 4) {
		fprintf(stderr, "hearthd: the open-file limit (%llu) leaves too few fds for API"
				" connections beside %d VMs; raise it (ulimit -n) or lower --max-vms\n",
			(unsigned long long)rl.rlim_cur, max_vms);
		return -1;
	}
	hlog_info("hearthd", "open files at most %llu: TCP API connections at most %d (%d per IP),"
		  " Unix socket %d, %llu kept for VMs and state", (unsigned long long)rl.rlim_cur,
		  c->max_conns, c->max_conns_per_ip, c->unix_max_conns,
		  (unsigned long long)reserve);
	return 0;
}

static void usage_hook(void *ctx, int64_t tenant, uint64_t mb_ms)
{
	quota_add_usage(ctx, tenant, mb_ms);
}

/* `file` (bzImage or vmlinux) of the newest complete kernel build in the cache (kernel-config/build). */
static char *find_kernel(const char *file)
{
	char dir[PATH_MAX], *best = NULL;
	time_t best_t = 0;
	DIR *d;
	struct dirent *de;

	snprintf(dir, sizeof(dir), "%s/kernel", getenv("HEARTH_CACHE_DIR") ? getenv("HEARTH_CACHE_DIR") :
		 HEARTH_CACHE_DIR);
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		char done[PATH_MAX + 300], bz[PATH_MAX + 300];
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		snprintf(done, sizeof(done), "%s/%s/done", dir, de->d_name);
		snprintf(bz, sizeof(bz), "%s/%s/%s", dir, de->d_name, file);
		if (stat(done, &st) == 0 && access(bz, R_OK) == 0 && st.st_mtime >= best_t) {
			best_t = st.st_mtime;
			free(best);
			best = strdup(bz);
		}
	}
	if (d)
		closedir(d);
	return best;
}

/*
 * The state and run directories must be hearthd's alone (owner, not group- or
 * world-writable). One hearthd per state directory and per run directory: a second one would
 * replay and empty the first one's ledger journal, and take its VMs' sockets.
 * The lock (flock on DIR/hearthd.lock, held for the process's life) goes with
 * the process, however it ends. 0, or -1 after saying who holds it.
 */
static int lock_dir(const char *dir, const char *what)
{
	char path[PATH_MAX], pid[32] = "";
	struct stat st;
	int fd;

	/* Another local user who may write here could plant files hearthd trusts. */
	if (stat(dir, &st) == 0 && (st.st_uid != geteuid() || (st.st_mode & 022))) {
		fprintf(stderr, "hearthd: the %s %s must belong to uid %u and be writable by it "
				"alone (it is uid %u, mode %04o); chown it and chmod 700 it\n", what,
			dir, (unsigned)geteuid(), (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/hearthd.lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "hearthd: cannot open %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		ssize_t n = errno == EWOULDBLOCK ? pread(fd, pid, sizeof(pid) - 1, 0) : -1;

		if (n > 0)
			pid[strcspn(pid, "\n")] = 0;
		if (errno == EWOULDBLOCK || n > 0)
			fprintf(stderr, "hearthd: the %s %s is in use by another hearthd (pid %s); "
					"one hearthd per directory\n", what, dir, n > 0 ? pid : "?");
		else
			fprintf(stderr, "hearthd: cannot lock %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		fprintf(stderr, "hearthd: warning: cannot write the pid into %s\n", path);
	return 0; /* fd stays open: the lock lives as long as this process */
}

/*
 * What a killed hearthd left in the state directory: uploads being received
 * (tmp/) and images being written (images/.image-*). Nobody else writes there
 * (lock_dir). Returns how many files were removed.
 */
static int remove_leftovers(const char *state_dir)
{
	static const struct { const char *sub, *prefix; } where[] = {
		{ "tmp", "" }, { "images", ".image-" },
	};
	int removed = 0;

	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		char dir[PATH_MAX];
		DIR *d;
		struct dirent *e;

		snprintf(dir, sizeof(dir), "%s/%s", state_dir, where[i].sub);
		if (!(d = opendir(dir)))
			continue;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
			    strncmp(e->d_name, where[i].prefix, strlen(where[i].prefix)))
				continue;
			if (unlinkat(dirfd(d), e->d_name, 0) == 0)
				removed++;
		}
		closedir(d);
	}
	return removed;
}

static int mkdirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			mkdir(buf, mode);
			*p = '/';
		}
	}
	return mkdir(buf, mode) == 0 || errno == EEXIST ? 0 : -errno;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "socket", required_argument, NULL, 's' },
		{ "state-dir", required_argument, NULL, 'd' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ "store", required_argument, NULL, 'S' },
		{ "host-id", required_argument, NULL, 'H' },
		{ "engine", required_argument, NULL, 'e' },
		{ "allow-unisolated", no_argument, NULL, 'U' },
		{ "libvirt-uri", required_argument, NULL, 'u' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "vmm", required_argument, NULL, 'V' },
		{ "builtin-kernel", required_argument, NULL, 'K' },
		{ "agent", required_argument, NULL, 'a' },
		{ "keep-warm", required_argument, NULL, 'w' },
		{ "restore-timeout-ms", required_argument, NULL, 'Z' },
		{ "region", required_argument, NULL, 'g' },
		{ "max-vms", required_argument, NULL, 'm' },
		{ "vmm-pool", required_argument, NULL, 'Q' },
		{ "jail", required_argument, NULL, 'J' },
		{ "jail-uid-base", required_argument, NULL, 'j' },
		{ "parked-ttl", required_argument, NULL, 'P' },
		{ "host-memory-mb", required_argument, NULL, 'M' },
		{ "vcpu-overcommit", required_argument, NULL, 'O' },
		{ "unreserved-floor", required_argument, NULL, 'F' },
		{ "async-retries", required_argument, NULL, 'R' },
		{ "async-backoff-ms", required_argument, NULL, 'B' },
		{ "async-max-age", required_argument, NULL, 'A' },
		{ "no-server-path-deploy", no_argument, NULL, 'N' },
		{ "max-connections", required_argument, NULL, 'C' },
		{ "max-connections-per-ip", required_argument, NULL, 'I' },
		{ "unix-max-connections", required_argument, NULL, 'X' },
		{ "header-timeout", required_argument, NULL, 'T' },
		{ "image-gc-interval", required_argument, NULL, 'i' },
		{ "ledger-batch-ms", required_argument, NULL, 'L' },
		{ "inline-max-us", required_argument, NULL, 'Y' },
		{ "disk-reserve-mb", required_argument, NULL, 'D' },
		{ "ui-dir", required_argument, NULL, 'W' },
		{ "config", required_argument, NULL, 'c' },
		{ "aws-region", required_argument, NULL, 'G' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen = "127.0.0.1:7070", *sock = "/run/hearth/hearthd.sock";
	const char *state_dir = "/var/lib/hearth", *run_dir = "/run/hearth/vms";
	const char *store_spec = NULL, *host_id = NULL;
	char hostname[256], images[PATH_MAX], serr[512];
	const char *engine = "auto", *uri = NULL, *agent = HEARTH_AGENT_DEFAULT;
	char *kernel = NULL, *builtin_kernel = NULL;
	const char *vmm = HEARTH_VMM_DEFAULT, *ui_dir = HEARTH_UI_DEFAULT;
	bool allow_unisolated = false, server_path = true, jail = geteuid() == 0;
	uint32_t jail_uid_base = HEARTH_JAIL_UID_BASE;
	int overcommit = 16, unreserved_floor = -1;
	struct sched_config scfg = { .keep_warm_ms = 600000, .max_vms = 64, .vmm_pool = 2,
				   .inline_max_us = SCHED_INLINE_MAX_US };
	struct async_config acfg = { .retries = 2, .backoff_ms = 1000, .max_age_ms = 21600000 };
	struct api_config apicfg = { .disk_reserve_mb = -1 };
	struct sched_engines eng = { 0 };
	struct store *store = NULL;
	struct sched *sched = NULL;
	struct async *async = NULL;
	struct api *api = NULL;
	struct quota *quota = NULL;
	struct imagegc *imagegc = NULL;
	int gc_interval = IMAGEGC_DEFAULT_INTERVAL_S, ledger_batch_ms = 2;
	char host[256] = "", path[PATH_MAX], err[512];
	int port = 0, c, sig;
	sigset_t set;

	{
		int named;
		const char *conf = config_path(argc, argv, &named);

		if (conf && config_load(conf, opts, argc, argv, &argc, &argv, err, sizeof(err))) {
			fprintf(stderr, "hearthd: %s\n", err);
			return 2;
		}
		if (conf)
			fprintf(stderr, "hearthd: options from %s%s\n", conf,
				named ? "" : " (the default file)");
	}
	/*
	 * Before any thread exists (the store's heartbeat, the engines' pools, the
	 * scheduler, quota, image GC, async): they inherit the mask, so SIGTERM,
	 * SIGINT and SIGHUP reach only the sigwait below. A thread created with
	 * them unblocked took a SIGTERM's default action now and then: hearthd
	 * died by the signal instead of shutting down.
	 */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': break; /* read above */
		case 'l': listen = optarg; break;
		case 's': sock = strcmp(optarg, "none") ? optarg : NULL; break;
		case 'd': state_dir = optarg; break;
		case 'r': run_dir = optarg; break;
		case 'S': store_spec = optarg; break;
		case 'H': host_id = optarg; break;
		case 'e': engine = optarg; break;
		case 'U': allow_unisolated = true; break;
		case 'u': uri = optarg; break;
		case 'k': kernel = strdup(optarg); break;
		case 'V': vmm = optarg; break;
		case 'K': builtin_kernel = strdup(optarg); break;
		case 'a': agent = optarg; break;
		case 'w': scfg.keep_warm_ms = atoll(optarg) * 1000; break;
		case 'Z': scfg.restore_timeout_ms = positive_arg("--restore-timeout-ms", optarg); break;
		case 'g': /* one region for both: runtime environments and ARNs, and SigV4 */
		case 'G': scfg.region = optarg; apicfg.aws_region = optarg; break;
		case 'm': scfg.max_vms = atoi(optarg); break;
		case 'J':
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				fprintf(stderr, "hearthd: --jail takes on or off, not '%s'\n", optarg);
				return 2;
			}
			jail = !strcmp(optarg, "on");
			break;
		case 'j': {
			char *end;
			unsigned long long v;

			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || end == optarg || v < 1 ||
			    v > 0xffffffffull - HEARTH_JAIL_UIDS - 1) {
				fprintf(stderr, "hearthd: --jail-uid-base wants a uid from 1 to %u, got "
						"'%s'\n", 0xffffffffu - HEARTH_JAIL_UIDS - 1, optarg);
				return 2;
			}
			jail_uid_base = (uint32_t)v;
			break;
		}
		case 'Y':
			scfg.inline_max_us = strcmp(optarg, "0") ? positive_arg("--inline-max-us", optarg)
								: 0;
			break;
		case 'Q': scfg.vmm_pool = strcmp(optarg, "0") ? positive_arg("--vmm-pool", optarg) : 0;
			break;
		case 'P': scfg.parked_ttl_ms = atoll(optarg) * 1000; break;
		case 'M': scfg.host_memory_mb = atoll(optarg); break;
		case 'O': overcommit = atoi(optarg); break;
		case 'F': unreserved_floor = atoi(optarg); break;
		case 'R': acfg.retries = atoi(optarg); break;
		case 'B': acfg.backoff_ms = atoll(optarg); break;
		case 'A': acfg.max_age_ms = atoll(optarg) * 1000; break;
		case 'N': server_path = false; break;
		case 'C': apicfg.max_conns = positive_arg("--max-connections", optarg); break;
		case 'I': apicfg.max_conns_per_ip = positive_arg("--max-connections-per-ip", optarg); break;
		case 'X': apicfg.unix_max_conns = positive_arg("--unix-max-connections", optarg); break;
		case 'T': apicfg.header_timeout_s = positive_arg("--header-timeout", optarg); break;
		case 'i': gc_interval = positive_arg("--image-gc-interval", optarg); break;
		case 'L':
			ledger_batch_ms = strcmp(optarg, "0") ? positive_arg("--ledger-batch-ms", optarg) : 0;
			if (ledger_batch_ms > 600000) {
				fprintf(stderr, "hearthd: --ledger-batch-ms wants 0 to 600000\n");
				return 2;
			}
			break;
		case 'D':
			apicfg.disk_reserve_mb = strcmp(optarg, "0") ? positive_arg("--disk-reserve-mb",
										     optarg) : 0;
			break;
		case 'W': ui_dir = strcmp(optarg, "none") ? optarg : NULL; break;
		case 'v': hlog_set_verbose(true); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (strcmp(listen, "none") != 0 &&
	    (sscanf(listen, "%255[^:]:%d", host, &port) != 2 || port <= 0 || port > 65535)) {
		fprintf(stderr, "hearthd: --listen wants HOST:PORT, got '%s'\n", listen);
		return 2;
	}
	if (strcmp(engine, "auto") && strcmp(engine, "libvirt") && strcmp(engine, "process") &&
	    strcmp(engine, "builtin")) {
		fprintf(stderr, "hearthd: unknown engine '%s' (auto, builtin, libvirt, process)\n",
			engine);
		return 2;
	}
	if (strcmp(engine, "process") == 0 && !allow_unisolated) {
		fprintf(stderr, "hearthd: the process engine runs functions WITHOUT isolation; "
				"refusing it unless --allow-unisolated is given\n");
		return 2;
	}
	if (access(agent, X_OK) != 0) {
		fprintf(stderr, "hearthd: hearth-agent not found at %s (use --agent)\n", agent);
		return 2;
	}
	if (fit_connections(&apicfg, scfg.max_vms))
		return 1;
	if (mkdirs(state_dir, 0700) || mkdirs(run_dir, 0700)) {
		fprintf(stderr, "hearthd: cannot create %s or %s: %s\n", state_dir, run_dir,
			strerror(errno));
		return 1;
	}
	{
		struct stat a, b;
		bool same = stat(state_dir, &a) == 0 && stat(run_dir, &b) == 0 &&
			    a.st_dev == b.st_dev && a.st_ino == b.st_ino;

		if (lock_dir(state_dir, "state directory") ||
		    (!same && lock_dir(run_dir, "run directory")))
			return 1;
	}
	int left = remove_leftovers(state_dir);
	if (left)
		hlog_info("hearthd", "removed %d files a killed hearthd left in %s (uploads, "
			  "half-written images)", left, state_dir);
	if (sock) {
		char d[PATH_MAX];

		snprintf(d, sizeof(d), "%s", sock);
		if (strrchr(d, '/') && strrchr(d, '/') != d) {
			*strrchr(d, '/') = 0;
			mkdirs(d, 0755);
		}
	}
	snprintf(path, sizeof(path), "%s/hearth.db", state_dir);
	if (!host_id) {
		if (gethostname(hostname, sizeof(hostname)) != 0)
			snprintf(hostname, sizeof(hostname), "localhost");
		hostname[sizeof(hostname) - 1] = 0;
		host_id = hostname;
	}
	if (!*host_id || strlen(host_id) > 128) {
		fprintf(stderr, "hearthd: --host-id wants 1 to 128 characters\n");
		return 2;
	}
	snprintf(images, sizeof(images), "%s/images", state_dir);
	{
		/* Invocation records: a journal append per invoke, a transaction per batch. */
		struct store_options so = { .host_id = host_id, .address = listen,
					    .image_dir = images, .state_dir = state_dir,
					    .ledger_journal = true,
					    .ledger_batch_us = (unsigned)ledger_batch_ms * 1000 };

		if (store_open_spec(store_spec ? store_spec : path, &so, &store, serr, sizeof(serr))) {
			fprintf(stderr, "hearthd: store: %s\n", serr);
			return 1;
		}
	}
	if (strcmp(store_backend(store), "postgresql") == 0)
		hlog_info("hearthd", "store postgresql (fleet host %s)", host_id);
	snprintf(path, sizeof(path), "%s/admin.key", state_dir);
	if (auth_bootstrap_admin(store, path))
		return 1;

	/* Engines. The builtin engine where KVM runs stock guests (or when asked). */
	if (strcmp(engine, "builtin") == 0 ||
	    (strcmp(engine, "auto") == 0 && hearth_kvm_runs_stock_guests() && access(vmm, X_OK) == 0)) {
		char bdir[PATH_MAX];
		struct hearth_engine_config ec = { .kind = HEARTH_ENGINE_BUILTIN, .run_dir = bdir,
						   .vmm_bin = vmm, .jail = jail,
						   .jail_uid_base = jail_uid_base };

		snprintf(bdir, sizeof(bdir), "%s/vmm", run_dir);
		mkdirs(bdir, 0700);
		/* The cache holds vmlinux beside bzImage; hearth-vmm boots either. */
		if (!builtin_kernel)
			builtin_kernel = find_kernel("vmlinux");
		if (!builtin_kernel)
			builtin_kernel = find_kernel("bzImage");
		if (!builtin_kernel) {
			fprintf(stderr, "hearthd: no guest kernel for the builtin engine; run "
					"kernel-config/build or pass --builtin-kernel\n");
			return 1;
		}
		if (hearth_engine_open(&ec, &eng.builtin, err, sizeof(err))) {
			hlog_error("hearthd", "builtin engine: %s", err);
			return 1;
		}
		hlog_info("hearthd", "engine builtin (hearth-vmm %s, kernel %s)", vmm, builtin_kernel);
		eng.dflt = eng.builtin;
	}
	if (strcmp(engine, "process") != 0 && strcmp(engine, "builtin") != 0) {
		struct hearth_engine_config ec = {
			.kind = HEARTH_ENGINE_LIBVIRT, .run_dir = run_dir, .libvirt_uri = uri,
			.jail = jail, .jail_uid_base = jail_uid_base,
		};

		if (hearth_engine_open(&ec, &eng.libvirt, err, sizeof(err))) {
			hlog_error("hearthd", "libvirt engine: %s", err);
			if (!allow_unisolated)
				return 1;
		} else {
			hlog_info("hearthd", "engine libvirt (accelerator %s)",
				  hearth_engine_accel(eng.libvirt));
			if (!kernel)
				kernel = find_kernel("bzImage");
			if (!kernel) {
				fprintf(stderr, "hearthd: no guest kernel; run kernel-config/build or "
						"pass --kernel\n");
				return 1;
			}
			if (!eng.dflt)
				eng.dflt = eng.libvirt;
		}
	}
	if (allow_unisolated) {
		char pdir[PATH_MAX];
		struct hearth_engine_config ec = { .kind = HEARTH_ENGINE_PROCESS, .run_dir = pdir,
						   .allow_unisolated = true };

		snprintf(pdir, sizeof(pdir), "%s/process", run_dir);
		mkdirs(pdir, 0700);
		if (hearth_engine_open(&ec, &eng.process, err, sizeof(err))) {
			hlog_error("hearthd", "process engine: %s", err);
			return 1;
		}
		hlog_warn("hearthd", "the process engine is enabled: functions using it run "
				     "WITHOUT isolation");
		if (strcmp(engine, "process") == 0 || !eng.dflt)
			eng.dflt = eng.process;
	}
	if (overcommit < 1) {
		fprintf(stderr, "hearthd: --vcpu-overcommit must be at least 1\n");
		return 2;
	}
	scfg.vcpu_capacity = (int)sysconf(_SC_NPROCESSORS_ONLN) * overcommit;
	if (unreserved_floor < 0)
		unreserved_floor = scfg.max_vms / 10 > 0 ? scfg.max_vms / 10 : 1;
	apicfg.host_capacity = scfg.max_vms;
	apicfg.unreserved_floor = unreserved_floor;
	scfg.kernel = kernel;
	scfg.builtin_kernel = builtin_kernel;
	scfg.vmm_bin = vmm;
	snprintf(path, sizeof(path), "%s/snapshots", state_dir);
	mkdirs(path, 0700);
	char snapdir[PATH_MAX];
	snprintf(snapdir, sizeof(snapdir), "%s", path);
	scfg.snapshot_dir = snapdir;
	if (sched_create(&scfg, &eng, store, &sched))
		return 1;
	if (quota_create(store, &quota))
		return 1;
	if (imagegc_start(store, gc_interval, &imagegc))
		return 1;
	acfg.quota = quota;
	sched_set_usage_hook(sched, usage_hook, quota);
	if (async_start(&acfg, store, sched, &async))
		return 1;
	apicfg.quota = quota;
	apicfg.imagegc = imagegc;
	apicfg.listen_host = host[0] ? host : NULL;
	apicfg.port = port;
	apicfg.unix_path = sock;
	apicfg.state_dir = state_dir;
	apicfg.agent_bin = agent;
	apicfg.allow_server_path_deploy = server_path;
	apicfg.threads = 2;
	apicfg.ui_dir = ui_dir;
	if (api_start(&apicfg, store, sched, async, &api))
		return 1;
	hlog_info("hearthd", "ready (engine %s, state %s)", hearth_engine_name(eng.dflt), state_dir);
	do
		sigwait(&set, &sig);
	while (sig == SIGHUP);
	hlog_info("hearthd", "shutting down (signal %d)", sig);
	api_quiesce(api);
	async_stop(async);
	sched_destroy(sched);
	async_free(async);
	api_stop(api);
	if (eng.libvirt)
		hearth_engine_close(eng.libvirt);
	if (eng.process)
		hearth_engine_close(eng.process);
	if (eng.builtin)
		hearth_engine_close(eng.builtin);
	imagegc_stop(imagegc);
	quota_destroy(quota);
	store_close(store);
	free(kernel);
	free(builtin_kernel);
	return 0;
}
