/*
 * The jail (label jail; host/vmm/jail.h): hearth-vmm --jail-uid confines
 * itself. Each case starts real jailed VMs (the vsock echo guest) and looks at
 * them from the host through /proc: identity and privileges, the root's
 * contents, the network, the cgroup and its limits, a guest that outgrows its
 * memory limit, files passed over the control socket, and refused options.
 * Needs root and a kernel that allows namespaces; says why and exits 77 when
 * something the jail needs is missing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <unistd.h>
#include <cmocka.h>

#include "echo_client.h"
#include "harness.h"
#include "vmm_pool.h"

#define T_MS 20000

struct jvm {
	struct vmm_run r;
	char sock[320], ctl[320], sdir[300];
	unsigned uid;
};

static void skip_because(const char *why)
{
	printf("SKIP: %s\n", why);
	fflush(stdout);
	exit(77);
}

static void need_jail(void)
{
	if (geteuid() != 0)
		skip_because("the jail needs root (hearth-vmm starts as root and drops to its uid)");
	if (access("/proc/self/ns/pid", F_OK) < 0)
		skip_because("this kernel has no PID namespaces");
}

static bool have_cgroup(void)
{
	return access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 ||
	       access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0;
}

static unsigned next_uid = 2100000000u;

/* A jailed echo VM; extra options (NULL-terminated) after the usual ones. */
static void jstart(struct jvm *v, const char *tag, const char *const *extra)
{
	vmm_run_init(&v->r, tag);
	snprintf(v->sdir, sizeof(v->sdir), "%s/s", v->r.dir);
	assert_int_equal(mkdir(v->sdir, 0700), 0);
	snprintf(v->sock, sizeof(v->sock), "%s/v.sock", v->sdir);
	snprintf(v->ctl, sizeof(v->ctl), "%s/ctl", v->sdir);
	v->uid = next_uid++;
	char uid[16];
	snprintf(uid, sizeof(uid), "%u", v->uid);
	const char *av[24] = { "--kernel", guest_path("vsock_echo.elf"), "--mem", "64",
			       "--vsock-socket", v->sock, "--control", v->ctl, "--jail-uid", uid };
	int n = 10;
	if (!have_cgroup())
		av[n++] = "--jail-no-cgroup";
	for (int i = 0; extra && extra[i]; i++)
		av[n++] = extra[i];
	av[n] = NULL;
	assert_int_equal(vmm_spawn(&v->r, av), 0);
}

/* Removes the socket directory (the jail's uid owns it) and what is in it. */
static void rm_sdir(struct jvm *v)
{
	DIR *d = opendir(v->sdir);
	struct dirent *e;
	char p[700];
	while (d && (e = readdir(d))) {
		snprintf(p, sizeof(p), "%s/%s", v->sdir, e->d_name);
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(v->sdir);
}

static void jstop(struct jvm *v)
{
	const char *r = vmm_ctl(v->ctl, "stop");
	assert_non_null(r);
	assert_string_equal(r, "OK stopping");
	assert_int_equal(vmm_wait(&v->r, T_MS), 4);
	rm_sdir(v);
	vmm_run_cleanup(&v->r);
}

/* The jailed VMM: the supervisor's (our child's) only child. */
static int vmm_pid(const struct jvm *v)
{
	char p[64], buf[64];
	snprintf(p, sizeof(p), "/proc/%d/task/%d/children", (int)v->r.pid, (int)v->r.pid);
	for (int i = 0; i < 400; i++) {
		FILE *f = fopen(p, "r");
		int pid = 0;
		if (f && fgets(buf, sizeof(buf), f))
			pid = atoi(buf);
		if (f)
			fclose(f);
		if (pid > 0)
			return pid;
		usleep(10000);
	}
	fail_msg("no jailed child of %d", (int)v->r.pid);
	return -1;
}

/* The value after "key:" in /proc/<pid>/status, whitespace collapsed. */
static char *status_field(int pid, const char *key)
{
	static char out[256];
	char p[64], line[512];
	snprintf(p, sizeof(p), "/proc/%d/status", pid);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	out[0] = 0;
	size_t kl = strlen(key);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			char *s = line + kl + 1, *o = out;
			while (*s == ' ' || *s == '\t')
				s++;
			for (; *s && *s != '\n' && o < out + sizeof(out) - 1; s++)
				*o++ = *s == '\t' ? ' ' : *s;
			*o = 0;
		}
	fclose(f);
	return out;
}

static void ready(struct jvm *v)
{
	assert_true(wait_for_text(v->r.console, "vsock echo guest ready", T_MS));
}

/* Uid not 0 and its own; no capability; no_new_privs; seccomp filtering; PID 1 inside. */
static void jail_identity(void **st)
{
	(void)st;
	need_jail();
	static struct jvm a, b; /* static: the teardown may reach them after a failure */
	jstart(&a, "jida", NULL);
	jstart(&b, "jidb", NULL);
	ready(&a);
	ready(&b);
	/*
	 * They work; and their main threads, which serve these connections, have
	 * installed their seccomp filters by now (after the vCPUs started).
	 */
	echo_session(a.sock, "a", 2);
	echo_session(b.sock, "b", 2);
	int pa = vmm_pid(&a), pb = vmm_pid(&b);
	char want[64];
	snprintf(want, sizeof(want), "%u %u %u %u", a.uid, a.uid, a.uid, a.uid);
	assert_string_equal(status_field(pa, "Uid"), want);
	assert_string_equal(status_field(pa, "Gid"), want);
	snprintf(want, sizeof(want), "%u %u %u %u", b.uid, b.uid, b.uid, b.uid);
	assert_string_equal(status_field(pb, "Uid"), want);
	assert_true(a.uid != b.uid && a.uid != 0);
	for (int i = 0; i < 2; i++) {
		int p = i ? pb : pa;
		assert_string_equal(status_field(p, "CapEff"), "0000000000000000");
		assert_string_equal(status_field(p, "CapPrm"), "0000000000000000");
		assert_string_equal(status_field(p, "CapBnd"), "0000000000000000");
		assert_string_equal(status_field(p, "NoNewPrivs"), "1");
		/* Sanitizer builds install no seccomp filter (and say so). */
		char *e = slurp(i ? b.r.errlog : a.r.errlog, NULL);
		if (!e || !strstr(e, "sanitizer build, seccomp filters not installed"))
			assert_string_equal(status_field(p, "Seccomp"), "2");
		free(e);
		assert_string_equal(status_field(p, "Groups"), "");
		/* PID 1 of its own namespace */
		char nspid[64];
		snprintf(nspid, sizeof(nspid), "%d 1", p);
		assert_string_equal(status_field(p, "NSpid"), nspid);
	}
	jstop(&a);
	jstop(&b);
}

/*
 * The supervisor, outside the namespaces, keeps uid 0 but only CAP_KILL, with
 * no_new_privs, a seccomp filter and no fd but stderr, its liveness pipe and
 * the cgroup's; it still forwards SIGTERM and removes the VM's cgroup.
 */
static void jail_supervisor_confined(void **st)
{
	(void)st;
	need_jail();
	static struct jvm a;
	jstart(&a, "jsup", NULL);
	ready(&a);
	echo_session(a.sock, "sup", 1);
	int sp = (int)a.r.pid, vp = vmm_pid(&a);
	assert_string_equal(status_field(sp, "Uid"), "0 0 0 0");
	assert_string_equal(status_field(sp, "CapEff"), "0000000000000020"); /* CAP_KILL */
	assert_string_equal(status_field(sp, "CapPrm"), "0000000000000020");
	assert_string_equal(status_field(sp, "CapInh"), "0000000000000000");
	assert_string_equal(status_field(sp, "CapBnd"), "0000000000000000");
	assert_string_equal(status_field(sp, "NoNewPrivs"), "1");
	char *e = slurp(a.r.errlog, NULL);
	if (!e || !strstr(e, "sanitizer build, seccomp filters not installed"))
		assert_string_equal(status_field(sp, "Seccomp"), "2");
	free(e);
	char fdd[64];
	snprintf(fdd, sizeof(fdd), "/proc/%d/fd", sp);
	DIR *d = opendir(fdd);
	assert_non_null(d);
	int nfd = 0;
	for (struct dirent *de; (de = readdir(d));)
		nfd += de->d_name[0] != '.';
	closedir(d);
	assert_true(nfd <= 1 + 1 + 1 + 3); /* stderr, the pipe, memory events, <= 3 parents */
	/* The VMM's cgroup, removed by the supervisor once the VMM has ended. */
	char cgp[600] = "", line[512];
	snprintf(fdd, sizeof(fdd), "/proc/%d/cgroup", vp);
	FILE *f = fopen(fdd, "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *h = strstr(line, "/hearth/vmm-");
		if (h && !cgp[0] && access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
			h[strcspn(h, "\n")] = 0;
			snprintf(cgp, sizeof(cgp), "/sys/fs/cgroup%s", strchr(line, '/'));
		}
	}
	if (f)
		fclose(f);
	if (have_cgroup() && access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0)
		assert_int_equal(access(cgp, F_OK), 0);
	assert_int_equal(kill(sp, SIGTERM), 0);
	assert_int_equal(vmm_wait(&a.r, T_MS), 4); /* forwarded: the VMM stopped on the signal */
	if (cgp[0])
		assert_int_equal(access(cgp, F_OK), -1);
	rm_sdir(&a);
	vmm_run_cleanup(&a.r);
}

/* Every path under dir (relative to root), into list; returns the count. */
static int walk(const char *root, const char *rel, char list[][300], int n, int max)
{
	char p[700];
	snprintf(p, sizeof(p), "%s%s", root, rel);
	DIR *d = opendir(p);
	if (!d)
		return n;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (n == max)
			break;
		snprintf(list[n], 300, "%s/%s", rel, e->d_name);
		char q[1000];
		snprintf(q, sizeof(q), "%s%s", root, list[n]);
		n++;
		struct stat sb;
		if (lstat(q, &sb) == 0 && S_ISDIR(sb.st_mode))
			n = walk(root, list[n - 1], list, n, max);
	}
	closedir(d);
	return n;
}

/* The root holds the socket directory (at its host path) and nothing else; it is read-only. */
static void jail_root_holds_only_sockets(void **st)
{
	(void)st;
	need_jail();
	static struct jvm a;
	jstart(&a, "jroot", NULL);
	ready(&a);
	echo_session(a.sock, "root", 1);
	int p = vmm_pid(&a);
	char root[64], list[64][300];
	snprintf(root, sizeof(root), "/proc/%d/root", p);
	int n = walk(root, "", list, 0, 64);
	for (int i = 0; i < n; i++) {
		bool ok = !strncmp(a.sdir, list[i], strlen(list[i])) &&
			  (a.sdir[strlen(list[i])] == '/' || a.sdir[strlen(list[i])] == 0);
		ok |= !strcmp(list[i], a.sock) || !strcmp(list[i], a.ctl);
		if (!ok)
			fail_msg("unexpected file in the jail's root: %s", list[i]);
	}
	assert_true(n >= 3);
	/* Mounts: the read-only tmpfs root and the socket directory, nothing more. */
	char mi[64], line[1024];
	snprintf(mi, sizeof(mi), "/proc/%d/mountinfo", p);
	FILE *f = fopen(mi, "r");
	assert_non_null(f);
	int mounts = 0;
	bool root_ro = false;
	while (fgets(line, sizeof(line), f)) {
		mounts++;
		char mp[512], opts[256];
		if (sscanf(line, "%*s %*s %*s %*s %511s %255s", mp, opts) == 2 && !strcmp(mp, "/"))
			root_ro = !strncmp(opts, "ro", 2);
	}
	fclose(f);
	assert_int_equal(mounts, 2);
	assert_true(root_ro);
	jstop(&a);
}

/* Its network namespace has no interface but lo. */
static void jail_no_network(void **st)
{
	(void)st;
	need_jail();
	static struct jvm a;
	jstart(&a, "jnet", NULL);
	ready(&a);
	char p[64], line[512];
	snprintf(p, sizeof(p), "/proc/%d/net/dev", vmm_pid(&a));
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	int ifs = 0;
	while (fgets(line, sizeof(line), f)) {
		char *c = strchr(line, ':');
		if (!c || strstr(line, "|"))
			continue;
		*c = 0;
		char *name = line;
		while (*name == ' ')
			name++;
		if (strcmp(name, "lo"))
			fail_msg("interface %s in the jail", name);
		ifs++;
	}
	fclose(f);
	assert_int_equal(ifs, 1);
	/* Another namespace than ours. */
	char a_ns[128], our_ns[128];
	snprintf(p, sizeof(p), "/proc/%d/ns/net", vmm_pid(&a));
	ssize_t l1 = readlink(p, a_ns, sizeof(a_ns) - 1), l2 = readlink("/proc/self/ns/net", our_ns,
									  sizeof(our_ns) - 1);
	assert_true(l1 > 0 && l2 > 0);
	a_ns[l1] = our_ns[l2] = 0;
	assert_string_not_equal(a_ns, our_ns);
	echo_session(a.sock, "net", 1);
	jstop(&a);
}

/* Reads a number from <cgroup dir of pid for ctrl>/file; -1 if absent. */
static long long cg_value(int pid, const char *ctrl, const char *file)
{
	char p[600], line[512], path[400] = "";
	bool v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
	snprintf(p, sizeof(p), "/proc/%d/cgroup", pid);
	FILE *f = fopen(p, "r");
	while (f && fgets(line, sizeof(line), f)) {
		char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
		if (!b)
			continue;
		*b = 0;
		if ((v2 && a + 1 == b) || (!v2 && strstr(a + 1, ctrl))) {
			b[1 + strcspn(b + 1, "\n")] = 0;
			snprintf(path, sizeof(path), "%s", b + 1);
		}
	}
	if (f)
		fclose(f);
	snprintf(p, sizeof(p), "/sys/fs/cgroup%s%s%s/%s", v2 ? "" : "/", v2 ? "" : ctrl, path, file);
	f = fopen(p, "r");
	if (!f)
		return -1;
	long long v = -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* Its own cgroup with memory = RAM + overhead, a CPU quota of its vCPUs, a pids limit. */
static void jail_cgroup_limits(void **st)
{
	(void)st;
	need_jail();
	if (!have_cgroup())
		skip_because("no cgroup v2 and no cgroup v1 memory controller mounted here");
	bool v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
	static struct jvm a;
	const char *ex[] = { "--jail-mem-overhead", "40", NULL };
	jstart(&a, "jcg", ex);
	ready(&a);
	int p = vmm_pid(&a);
	assert_int_equal(cg_value(p, "memory", v2 ? "memory.max" : "memory.limit_in_bytes"),
			 (64 + 40) << 20);
	assert_int_equal(cg_value(p, "pids", "pids.max"), 1 + 16);
	if (v2)
		assert_int_equal(cg_value(p, "cpu", "cpu.max"), 100000);
	else
		assert_int_equal(cg_value(p, "cpu", "cpu.cfs_quota_us"), 100000);
	/* The supervisor is outside it, the VMM inside. */
	char sp[64], vp[64];
	snprintf(sp, sizeof(sp), "/proc/%d/cgroup", (int)a.r.pid);
	snprintf(vp, sizeof(vp), "/proc/%d/cgroup", p);
	char *s1 = slurp(sp, NULL), *s2 = slurp(vp, NULL);
	assert_non_null(strstr(s2, "/hearth/vmm-"));
	assert_null(strstr(s1, "/hearth/vmm-"));
	free(s1);
	free(s2);
	echo_session(a.sock, "cg", 1);
	jstop(&a);
}

/* A guest that outgrows its memory limit is killed and reported; another VM goes on. */
static void jail_memory_limit_kills(void **st)
{
	(void)st;
	need_jail();
	if (!have_cgroup())
		skip_because("no cgroup v2 and no cgroup v1 memory controller mounted here");
	static struct jvm ok, big;
	jstart(&ok, "jok", NULL);
	ready(&ok);
	/* 64 MiB of RAM, a 20 MiB limit, and a guest that fills 28 MiB at boot. */
	const char *ex[] = { "--jail-mem-max", "20", "--cmdline", "hearth.touch_mib=28", NULL };
	jstart(&big, "jbig", ex);
	int rc = vmm_wait(&big.r, 60000);
	char *err = slurp(big.r.errlog, NULL);
	if (rc != 5)
		fprintf(stderr, "exit %d; stderr:\n%s\n", rc, err ? err : "");
	assert_int_equal(rc, 5);
	assert_non_null(err);
	assert_non_null(strstr(err, "killed by its cgroup: memory limit of 20 MiB"));
	free(err);
	rm_sdir(&big);
	vmm_run_cleanup(&big.r);
	/* The other VM never noticed. */
	echo_session(ok.sock, "survivor", 3);
	jstop(&ok);
}

/* Sends cmd with fds over the control socket (the engine's client); the reply line. */
static const char *ctl_fds(const char *path, const char *cmd, const int *fds, int n)
{
	static char reply[1100];
	assert_int_equal(vmm_ctl_cmd_fds(path, cmd, fds, n, 60000, reply, sizeof(reply)), 0);
	return reply;
}

/*
 * A jailed VM snapshots into files hearthd-style passed open (it cannot create
 * them itself), and a jailed pooled VMM restores from passed files; a restore
 * naming host paths is refused (the jail opens nothing) and the process stays
 * pooled.
 */
static void jail_passed_files(void **st)
{
	(void)st;
	need_jail();
	static struct jvm src, pool;
	jstart(&src, "jsrc", NULL);
	ready(&src);
	echo_session(src.sock, "src", 1);
	char mem[400], state[400];
	snprintf(mem, sizeof(mem), "%s/snap.mem", src.r.dir);
	snprintf(state, sizeof(state), "%s/snap.state", src.r.dir);
	/* By path: the jailed VMM cannot create files outside its socket directory. */
	char cmd[1000];
	snprintf(cmd, sizeof(cmd), "snapshot %s %s", mem, state);
	const char *r = vmm_ctl(src.ctl, cmd);
	assert_non_null(r);
	assert_true(!strncmp(r, "ERR", 3));
	int w[2] = { open(mem, O_WRONLY | O_CREAT | O_EXCL, 0600),
		     open(state, O_WRONLY | O_CREAT | O_EXCL, 0600) };
	assert_true(w[0] >= 0 && w[1] >= 0);
	r = ctl_fds(src.ctl, "snapshot @0 @1", w, 2);
	if (strncmp(r, "OK snapshot", 11))
		fail_msg("snapshot with passed files: %s", r);
	close(w[0]);
	close(w[1]);
	echo_session(src.sock, "src-after", 1);

	/* A pooled jailed process. */
	vmm_run_init(&pool.r, "jpool");
	snprintf(pool.sdir, sizeof(pool.sdir), "%s/s", pool.r.dir);
	assert_int_equal(mkdir(pool.sdir, 0700), 0);
	snprintf(pool.sock, sizeof(pool.sock), "%s/v.sock", pool.sdir);
	snprintf(pool.ctl, sizeof(pool.ctl), "%s/ctl", pool.sdir);
	char uid[16];
	snprintf(uid, sizeof(uid), "%u", next_uid++);
	const char *av[] = { "--pool", "--mem", "64", "--control", pool.ctl, "--vsock-socket",
			     pool.sock, "--jail-uid", uid, have_cgroup() ? NULL : "--jail-no-cgroup",
			     NULL };
	assert_int_equal(vmm_spawn(&pool.r, av), 0);
	r = vmm_ctl(pool.ctl, "status");
	assert_non_null(r);
	assert_non_null(strstr(r, "state=pooled"));
	snprintf(cmd, sizeof(cmd), "restore %s %s", state, mem);
	r = vmm_ctl(pool.ctl, cmd);
	assert_non_null(r);
	if (!strstr(r, "ERR restore refused") || !strstr(r, "cannot open"))
		fail_msg("a restore by host path in the jail: %s", r);
	r = vmm_ctl(pool.ctl, "status");
	assert_non_null(strstr(r, "state=pooled"));
	char console[400];
	snprintf(console, sizeof(console), "%s/restored.console", pool.r.dir);
	int f[3] = { open(state, O_RDONLY), open(mem, O_RDONLY),
		     open(console, O_WRONLY | O_CREAT | O_APPEND, 0600) };
	r = ctl_fds(pool.ctl, "restore @0 @1 console=@2", f, 3);
	for (int i = 0; i < 3; i++)
		close(f[i]);
	if (strncmp(r, "OK restored", 11))
		fail_msg("pooled restore with passed files: %s", r);
	echo_session(pool.sock, "pooled", 2);
	assert_true(wait_for_text(console, "restored @0 into a pooled process", T_MS));
	jstop(&pool);
	jstop(&src);
}

/* Bad jail options are refused with a message, and a good VM starts after them. */
static void jail_bad_options(void **st)
{
	(void)st;
	need_jail();
	struct vmm_run r;
	static const char *const bad[][8] = {
		{ "--kernel", NULL, "--jail-uid", "0", NULL },
		{ "--kernel", NULL, "--jail-root", "/tmp/x", NULL },
		{ "--kernel", NULL, "--vsock-socket", "rel/v.sock", "--jail-uid", "2100999000", NULL },
		{ "--kernel", NULL, "--jail-uid", "2100999001", "--jail-mem-max", "1", NULL },
	};
	static const char *const why[] = { "--jail-uid", "go with --jail-uid", "must be absolute",
					   "--jail-mem-max" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *av[8];
		memcpy(av, bad[i], sizeof(av));
		av[1] = guest_path("vsock_echo.elf");
		vmm_run_init(&r, "jbad");
		assert_int_equal(vmm_run_sync(&r, av, T_MS), 2);
		char *e = slurp(r.errlog, NULL);
		if (!e || !strstr(e, why[i]))
			fail_msg("case %zu: want '%s' in: %s", i, why[i], e ? e : "(nothing)");
		free(e);
		vmm_run_cleanup(&r);
	}
	static struct jvm a;
	jstart(&a, "jafter", NULL);
	ready(&a);
	echo_session(a.sock, "after", 1);
	jstop(&a);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest all[] = {
		cmocka_unit_test_teardown(jail_identity, vmm_teardown),
		cmocka_unit_test_teardown(jail_supervisor_confined, vmm_teardown),
		cmocka_unit_test_teardown(jail_root_holds_only_sockets, vmm_teardown),
		cmocka_unit_test_teardown(jail_no_network, vmm_teardown),
		cmocka_unit_test_teardown(jail_cgroup_limits, vmm_teardown),
		cmocka_unit_test_teardown(jail_memory_limit_kills, vmm_teardown),
		cmocka_unit_test_teardown(jail_passed_files, vmm_teardown),
		cmocka_unit_test_teardown(jail_bad_options, vmm_teardown),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(all, NULL, NULL);
}
