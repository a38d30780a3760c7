/*
 * hearthd - the hearth daemon: HTTP API, tenants, functions, scheduler.
 *
 * Starts on embedded defaults (state in /var/lib/hearth, API on
 * 127.0.0.1:7070 and /run/hearth/hearthd.sock, engine chosen automatically);
 * every default can be overridden by a flag (hearthd --help).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "async.h"
#include "auth.h"
#include "engine.h"
#include "log.h"
#include "quota.h"
#include "scheduler.h"
#include "store.h"

#ifndef HEARTH_AGENT_DEFAULT
#define HEARTH_AGENT_DEFAULT "/usr/lib/hearth/hearth-agent"
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
		"  --listen HOST:PORT     TCP address of the API (default 127.0.0.1:7070; 'none' to disable)\n"
		"  --socket PATH          Unix socket of the API (default /run/hearth/hearthd.sock)\n"
		"  --state-dir DIR        SQLite state, images, admin key (default /var/lib/hearth)\n"
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
		"  --verbose              debug log lines\n",
		HEARTH_VMM_DEFAULT, HEARTH_AGENT_DEFAULT);
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
		{ "engine", required_argument, NULL, 'e' },
		{ "allow-unisolated", no_argument, NULL, 'U' },
		{ "libvirt-uri", required_argument, NULL, 'u' },
		{ "kernel", required_argument, NULL, 'k' },
		{ "vmm", required_argument, NULL, 'V' },
		{ "builtin-kernel", required_argument, NULL, 'K' },
		{ "agent", required_argument, NULL, 'a' },
		{ "keep-warm", required_argument, NULL, 'w' },
		{ "max-vms", required_argument, NULL, 'm' },
		{ "parked-ttl", required_argument, NULL, 'P' },
		{ "host-memory-mb", required_argument, NULL, 'M' },
		{ "vcpu-overcommit", required_argument, NULL, 'O' },
		{ "unreserved-floor", required_argument, NULL, 'F' },
		{ "async-retries", required_argument, NULL, 'R' },
		{ "async-backoff-ms", required_argument, NULL, 'B' },
		{ "async-max-age", required_argument, NULL, 'A' },
		{ "no-server-path-deploy", no_argument, NULL, 'N' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen = "127.0.0.1:7070", *sock = "/run/hearth/hearthd.sock";
	const char *state_dir = "/var/lib/hearth", *run_dir = "/run/hearth/vms";
	const char *engine = "auto", *uri = NULL, *agent = HEARTH_AGENT_DEFAULT;
	char *kernel = NULL, *builtin_kernel = NULL;
	const char *vmm = HEARTH_VMM_DEFAULT;
	bool allow_unisolated = false, server_path = true;
	int overcommit = 16, unreserved_floor = -1;
	struct sched_config scfg = { .keep_warm_ms = 600000, .max_vms = 64 };
	struct async_config acfg = { .retries = 2, .backoff_ms = 1000, .max_age_ms = 21600000 };
	struct api_config apicfg = { 0 };
	struct sched_engines eng = { 0 };
	struct store *store = NULL;
	struct sched *sched = NULL;
	struct async *async = NULL;
	struct api *api = NULL;
	struct quota *quota = NULL;
	char host[256] = "", path[PATH_MAX], err[512];
	int port = 0, c, sig;
	sigset_t set;
	struct rlimit rl;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen = optarg; break;
		case 's': sock = strcmp(optarg, "none") ? optarg : NULL; break;
		case 'd': state_dir = optarg; break;
		case 'r': run_dir = optarg; break;
		case 'e': engine = optarg; break;
		case 'U': allow_unisolated = true; break;
		case 'u': uri = optarg; break;
		case 'k': kernel = strdup(optarg); break;
		case 'V': vmm = optarg; break;
		case 'K': builtin_kernel = strdup(optarg); break;
		case 'a': agent = optarg; break;
		case 'w': scfg.keep_warm_ms = atoll(optarg) * 1000; break;
		case 'm': scfg.max_vms = atoi(optarg); break;
		case 'P': scfg.parked_ttl_ms = atoll(optarg) * 1000; break;
		case 'M': scfg.host_memory_mb = atoll(optarg); break;
		case 'O': overcommit = atoi(optarg); break;
		case 'F': unreserved_floor = atoi(optarg); break;
		case 'R': acfg.retries = atoi(optarg); break;
		case 'B': acfg.backoff_ms = atoll(optarg); break;
		case 'A': acfg.max_age_ms = atoll(optarg) * 1000; break;
		case 'N': server_path = false; break;
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
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		/* Thousands of suspended connections need thousands of fds. */
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (mkdirs(state_dir, 0700) || mkdirs(run_dir, 0700)) {
		fprintf(stderr, "hearthd: cannot create %s or %s: %s\n", state_dir, run_dir,
			strerror(errno));
		return 1;
	}
	if (sock) {
		char d[PATH_MAX];

		snprintf(d, sizeof(d), "%s", sock);
		if (strrchr(d, '/') && strrchr(d, '/') != d) {
			*strrchr(d, '/') = 0;
			mkdirs(d, 0755);
		}
	}
	snprintf(path, sizeof(path), "%s/hearth.db", state_dir);
	if (store_open(path, &store))
		return 1;
	snprintf(path, sizeof(path), "%s/admin.key", state_dir);
	if (auth_bootstrap_admin(store, path))
		return 1;

	/* Engines. The builtin engine where KVM runs stock guests (or when asked). */
	if (strcmp(engine, "builtin") == 0 ||
	    (strcmp(engine, "auto") == 0 && hearth_kvm_runs_stock_guests() && access(vmm, X_OK) == 0)) {
		char bdir[PATH_MAX];
		struct hearth_engine_config ec = { .kind = HEARTH_ENGINE_BUILTIN, .run_dir = bdir,
						   .vmm_bin = vmm };

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
	acfg.quota = quota;
	sched_set_usage_hook(sched, usage_hook, quota);
	if (async_start(&acfg, store, sched, &async))
		return 1;
	apicfg.quota = quota;
	apicfg.listen_host = host[0] ? host : NULL;
	apicfg.port = port;
	apicfg.unix_path = sock;
	apicfg.state_dir = state_dir;
	apicfg.agent_bin = agent;
	apicfg.allow_server_path_deploy = server_path;
	apicfg.threads = 2;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
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
	quota_destroy(quota);
	store_close(store);
	free(kernel);
	free(builtin_kernel);
	return 0;
}
