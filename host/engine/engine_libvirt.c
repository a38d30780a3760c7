/*
 * engine_libvirt.c - VMs as transient libvirt/QEMU q35 domains.
 *
 * Each VM boots the hearth kernel and the function image directly
 * (<kernel>/<initrd>), with its console on an 8250 UART logged to a file and
 * its agent channel on virtio-serial bound to a host Unix socket, or on
 * virtio-vsock where /dev/vhost-vsock exists. Domains are transient, so a
 * domain that stops (guest power-off, crash, destroy) leaves nothing defined
 * in libvirt; the per-VM directory under run_dir holds everything else.
 *
 * Save/restore is virDomainSave/virDomainRestore of the same domain: libvirt
 * refuses to restore an image under another name or uuid, so this engine does
 * not clone (no HEARTH_ENGINE_CAP_CLONE).
 *
 * The jail (hearth_engine_config.jail; hearthd --jail on|off), the libvirt
 * counterpart of hearth-vmm's (host/vmm/jail.h):
 *   - uid: each domain's QEMU runs as a uid/gid of its own from the allocator
 *     the builtin engine uses (jail_uid.h), through a static DAC seclabel
 *     with relabel='no', so libvirt never chowns a file. The uid is given
 *     back when the VM is destroyed (it keeps it while saved).
 *   - files: QEMU opens only the kernel and the initrd by path. Both are hard
 *     links in the VM's own directory (copies where run_dir is on another
 *     file system), so QEMU never needs to search hearthd's state directory.
 *     POSIX ACL entries for that uid alone (file_acl.h) give it read on those
 *     two files, read+search on its directory and search-only on the
 *     directories above it that others may not search; all are revoked at
 *     destroy, and a crashed run's are revoked by the next (the record file
 *     jail.acl, root's, in a directory QEMU cannot write). QEMU needs write
 *     access to nothing by path: libvirtd creates the console log and the
 *     channel socket and hands QEMU the save file as an fd.
 *   - cgroup: the domain's memory hard limit is guest RAM plus an allowance
 *     for QEMU (mem_overhead_mb). It is set live on a domain started paused,
 *     not in the XML: with <memtune> in the XML libvirt also raises QEMU's
 *     RLIMIT_MEMLOCK to the limit, which fails where libvirtd lacks
 *     CAP_SYS_RESOURCE (as on the machines this was built on). A QEMU the
 *     kernel kills for that limit is reported as HEARTH_VM_OUT_OF_MEMORY,
 *     recognised by the kernel's own oom-kill record (/dev/kmsg) naming its
 *     pid and uid.
 *   - seccomp: QEMU keeps its own sandbox, which libvirt turns on by default
 *     (qemu.conf seccomp_sandbox = 1: -sandbox on with obsolete,
 *     elevateprivileges, spawn and resourcecontrol denied).
 * It needs the local system libvirtd (qemu:///system), a DAC security driver
 * there (virsh capabilities lists one even with security_driver = "none") and
 * ACLs on run_dir's file system; without them the engine says so once and
 * runs QEMU unjailed, as before. Without a cgroup memory controller, QEMU is
 * jailed without the memory limit (said once too).
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent_client.h"
#include "engine_backend.h"
#include "file_acl.h"
#include "jail_uid.h"
#include "msg.h"

struct lv_engine {
	virConnectPtr conn;
	bool vsock;
	bool jail;            /* QEMU runs under a jail uid (see the top of this file) */
	bool mem_limit;       /* jailed domains get a cgroup memory hard limit */
	uint32_t uid_base;
	uint32_t overhead_mb; /* the limit's allowance above guest RAM */
};

struct lv_vm {
	virDomainPtr dom;     /* NULL while saved or after the domain went away */
	char *sock;           /* virtio-serial channel socket (NULL with vsock) */
	char *save;           /* save file path */
	unsigned memory_mb;
	unsigned cid;         /* guest vsock CID (vsock only) */
	uint32_t uid;         /* QEMU's jail uid and gid; 0 = not jailed */
	struct file_acl_set acl;
	pid_t qemu_pid;       /* of the running domain, 0 if unknown */
	int kmsg;             /* /dev/kmsg, read from the domain's start on; -1 = none */
};

#define LV_JAIL_RECORD "jail.acl"

static const char *lv_lasterr(void)
{
	const char *m = virGetLastErrorMessage();

	return m ? m : "unknown libvirt error";
}

/* libvirt prints every error to stderr by default; we report them ourselves. */
static void lv_quiet(void *opaque, virErrorPtr e)
{
	(void)opaque;
	(void)e;
}

/* Escapes a string for an XML attribute or text node. */
static int xml_escape(const char *in, char *out, size_t outlen)
{
	size_t o = 0;

	for (const char *s = in; *s; s++) {
		const char *r = NULL;
		char one[2] = {*s, 0};

		switch (*s) {
		case '&': r = "&amp;"; break;
		case '<': r = "&lt;"; break;
		case '>': r = "&gt;"; break;
		case '\'': r = "&apos;"; break;
		case '"': r = "&quot;"; break;
		default: r = one; break;
		}
		size_t n = strlen(r);

		if (o + n >= outlen)
			return -1;
		memcpy(out + o, r, n);
		o += n;
	}
	out[o] = '\0';
	return 0;
}

static bool has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

/*
 * libvirtd keeps a QEMU log per domain name (<log dir>/<name>.log) after the
 * domain is gone. We can remove it only for a local daemon whose log
 * directory we know; for a remote URI the file stays on that host.
 */
static const char *lv_log_dir(const struct hearth_engine *e)
{
	if (!strcmp(e->libvirt_uri, "qemu:///system"))
		return "/var/log/libvirt/qemu";
	return NULL;
}

static void lv_remove_log(const struct hearth_engine *e, const char *name)
{
	char path[4096];
	const char *dir = lv_log_dir(e);

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/%s.log", dir, name);
	unlink(path);
}

/* Destroys (and undefines, if someone defined it) every <prefix>* domain. */
static int lv_reap(struct hearth_engine *e, struct lv_engine *le, char *err, size_t errlen)
{
	virDomainPtr *doms = NULL;
	int n = virConnectListAllDomains(le->conn, &doms, 0), reaped = 0;

	if (n < 0)
		return hearth_engine_fail(err, errlen, EIO, "libvirt: listing domains: %s",
					  lv_lasterr());
	for (int i = 0; i < n; i++) {
		const char *name = virDomainGetName(doms[i]);

		if (name && has_prefix(name, e->name_prefix)) {
			if (virDomainIsActive(doms[i]) == 1)
				virDomainDestroy(doms[i]);
			if (virDomainIsPersistent(doms[i]) == 1)
				virDomainUndefineFlags(doms[i], VIR_DOMAIN_UNDEFINE_MANAGED_SAVE);
			reaped++;
		}
		virDomainFree(doms[i]);
	}
	free(doms);
	if (reaped)
		fprintf(stderr, "hearth engine libvirt: reaped %d leftover %s* domain(s)\n", reaped,
			e->name_prefix);
	return 0;
}

/*
 * Removes <run_dir>/<prefix>* left by a crashed run (sockets, console logs,
 * save files) and libvirtd's QEMU logs of <prefix>* domains, none of which
 * is running any more after lv_reap().
 */
static void lv_reap_dirs(struct hearth_engine *e)
{
	char path[4096];
	struct dirent *de;
	const char *logs = lv_log_dir(e);
	DIR *d = opendir(e->run_dir);

	if (d) {
		uint32_t base = e->cfg.jail_uid_base ? e->cfg.jail_uid_base : HEARTH_JAIL_UID_BASE;

		while ((de = readdir(d)))
			if (has_prefix(de->d_name, e->name_prefix)) {
				/* A jailed VM's ACL entries outlive it unless revoked here. */
				snprintf(path, sizeof(path), "%s/%s/" LV_JAIL_RECORD, e->run_dir,
					 de->d_name);
				if (file_acl_revoke_record(path, base, base + HEARTH_JAIL_UIDS) == -EINVAL)
					fprintf(stderr, "hearth engine libvirt: %s: not a jail record of "
							"uids from %u; its ACL entries stay\n", path, base);
				snprintf(path, sizeof(path), "%s/%s", e->run_dir, de->d_name);
				hearth_engine_rmtree(path);
			}
		closedir(d);
	}
	d = logs ? opendir(logs) : NULL;
	if (d) {
		size_t n;

		while ((de = readdir(d)))
			if (has_prefix(de->d_name, e->name_prefix) && (n = strlen(de->d_name)) > 4 &&
			    !strcmp(de->d_name + n - 4, ".log")) {
				snprintf(path, sizeof(path), "%s/%s", logs, de->d_name);
				unlink(path);
			}
		closedir(d);
	}
}

/* Does the daemon's capabilities XML list the DAC security model? */
static bool lv_has_dac(virConnectPtr conn)
{
	char *caps = virConnectGetCapabilities(conn);
	bool dac = caps && strstr(caps, "<model>dac</model>");

	free(caps);
	return dac;
}

/* Decides whether this engine's QEMUs are jailed (see the top of this file). */
static int lv_jail_open(struct hearth_engine *e, struct lv_engine *le, char *err, size_t errlen)
{
	struct stat st;
	int rc;

	if (geteuid() != 0)
		return hearth_engine_fail(err, errlen, EPERM, "libvirt engine: jailing QEMU needs "
					  "root (or turn the jail off)");
	if (strcmp(e->libvirt_uri, "qemu:///system") != 0) {
		fprintf(stderr, "hearthd: libvirt engine: no jail for QEMU: it needs the local "
				"qemu:///system, not %s\n", e->libvirt_uri);
		return 0;
	}
	if (!lv_has_dac(le->conn)) {
		fprintf(stderr, "hearthd: libvirt engine: no jail for QEMU: libvirtd has no DAC "
				"security driver\n");
		return 0;
	}
	rc = file_acl_supported(e->run_dir);
	if (rc < 0) {
		fprintf(stderr, "hearthd: libvirt engine: no jail for QEMU: %s has no POSIX ACLs "
				"(%s)\n", e->run_dir, strerror(-rc));
		return 0;
	}
	le->jail = true;
	le->uid_base = e->cfg.jail_uid_base ? e->cfg.jail_uid_base : HEARTH_JAIL_UID_BASE;
	le->overhead_mb = e->cfg.mem_overhead_mb ? e->cfg.mem_overhead_mb
			  : !strcmp(e->accel, "kvm") ? HEARTH_LIBVIRT_OVERHEAD_KVM_MB
						     : HEARTH_LIBVIRT_OVERHEAD_TCG_MB;
	le->mem_limit = stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0 ||
			stat("/sys/fs/cgroup/memory/memory.limit_in_bytes", &st) == 0;
	if (!le->mem_limit)
		fprintf(stderr, "hearthd: libvirt engine: no cgroup v2 and no cgroup v1 memory "
				"controller mounted: QEMU is jailed without a memory limit\n");
	return 0;
}

static int lv_open(struct hearth_engine *e, char *err, size_t errlen)
{
	struct lv_engine *le = calloc(1, sizeof(*le));
	int rc;

	if (!le)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	virSetErrorFunc(NULL, lv_quiet);
	le->conn = virConnectOpen(e->libvirt_uri);
	if (!le->conn) {
		rc = hearth_engine_fail(err, errlen, ECONNREFUSED,
					"libvirt: cannot connect to %s: %s (is libvirtd running?)",
					e->libvirt_uri, lv_lasterr());
		free(le);
		return rc;
	}
	switch (e->cfg.accel) {
	case HEARTH_ACCEL_KVM: e->accel = "kvm"; break;
	case HEARTH_ACCEL_TCG: e->accel = "tcg"; break;
	default: e->accel = hearth_kvm_runs_stock_guests() ? "kvm" : "tcg"; break;
	}
	le->vsock = access("/dev/vhost-vsock", R_OK | W_OK) == 0;
	if (e->cfg.jail) {
		rc = lv_jail_open(e, le, err, errlen);
		if (rc < 0) {
			virConnectClose(le->conn);
			free(le);
			return rc;
		}
	}
	e->caps = HEARTH_ENGINE_CAP_ISOLATED | HEARTH_ENGINE_CAP_BOOTS_KERNEL |
		  HEARTH_ENGINE_CAP_PAUSE | HEARTH_ENGINE_CAP_SAVE_RESTORE |
		  (le->vsock ? HEARTH_ENGINE_CAP_VSOCK : 0);
	e->priv = le;
	rc = lv_reap(e, le, err, errlen);
	if (rc < 0) {
		virConnectClose(le->conn);
		free(le);
		e->priv = NULL;
		return rc;
	}
	lv_reap_dirs(e);
	return 0;
}

static void lv_close(struct hearth_engine *e)
{
	struct lv_engine *le = e->priv;

	if (!le)
		return;
	virConnectClose(le->conn);
	free(le);
}

static char *lv_domain_xml(struct hearth_vm *vm, const struct hearth_vm_spec *spec, bool vsock)
{
	struct hearth_engine *e = vm->engine;
	struct lv_vm *lv = vm->priv;
	char kernel[1024], initrd[1024], log[1024], sock[1024], extra[1024] = "";
	char chan[1600], seclabel[200] = "", *xml = NULL;
	bool kvm = !strcmp(e->accel, "kvm");
	const char *kpath = spec->kernel, *ipath = spec->initrd;
	char kjail[1024], ijail[1024];

	if (lv->uid) {
		/* The jailed QEMU reads the links in its own directory (lv_jail_files). */
		snprintf(kjail, sizeof(kjail), "%s/kernel", vm->dir);
		snprintf(ijail, sizeof(ijail), "%s/initrd", vm->dir);
		kpath = kjail;
		ipath = ijail;
		snprintf(seclabel, sizeof(seclabel),
			 "<seclabel type='static' model='dac' relabel='no'>"
			 "<label>+%u:+%u</label></seclabel>", lv->uid, lv->uid);
	}
	if (xml_escape(kpath, kernel, sizeof(kernel)) ||
	    xml_escape(ipath, initrd, sizeof(initrd)) ||
	    xml_escape(vm->console_log, log, sizeof(log)) ||
	    (spec->cmdline_extra && xml_escape(spec->cmdline_extra, extra, sizeof(extra))))
		return NULL;
	if (vsock) {
		snprintf(chan, sizeof(chan), "<vsock model='virtio'><cid auto='yes'/></vsock>");
	} else {
		if (xml_escape(lv->sock, sock, sizeof(sock)))
			return NULL;
		snprintf(chan, sizeof(chan),
			 "<channel type='unix'><source mode='bind' path='%s'/>"
			 "<target type='virtio' name='%s'/></channel>",
			 sock, HEARTH_AGENT_SERIAL_NAME);
	}
	if (asprintf(&xml,
		     "<domain type='%s'>\n"
		     "  <name>%s</name>\n"
		     "  <uuid>%s</uuid>\n"
		     "  <memory unit='MiB'>%u</memory>\n"
		     "  <vcpu>%u</vcpu>\n"
		     "  <os>\n"
		     "    <type arch='x86_64' machine='q35'>hvm</type>\n"
		     "    <kernel>%s</kernel>\n"
		     "    <initrd>%s</initrd>\n"
		     "    <cmdline>console=ttyS0 quiet panic=-1 rdinit=/init%s %s</cmdline>\n"
		     "  </os>\n"
		     "  <features><acpi/></features>\n"
		     "  %s\n"
		     "  <clock offset='utc'/>\n"
		     "  <on_poweroff>destroy</on_poweroff>\n"
		     "  <on_reboot>destroy</on_reboot>\n"
		     "  <on_crash>destroy</on_crash>\n"
		     "  <devices>\n"
		     "    <serial type='file'><source path='%s' append='on'/><target port='0'/></serial>\n"
		     "    %s\n"
		     "    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n"
		     "    <controller type='usb' model='none'/>\n"
		     "    <memballoon model='none'/>\n"
		     "  </devices>\n"
		     "  %s\n"
		     "</domain>\n",
		     kvm ? "kvm" : "qemu", vm->name, vm->uuid, lv->memory_mb,
		     spec->vcpus ? spec->vcpus : 1, kernel, initrd,
		     vsock ? " hearth.transport=vsock" : "", extra,
		     kvm ? "<cpu mode='host-passthrough'/>" : "", log, chan, seclabel) < 0)
		return NULL;
	return xml;
}

/* Reads the CID libvirt gave the guest: <cid auto='yes' address='N'/>. */
static unsigned lv_guest_cid(virDomainPtr dom)
{
	char *xml = virDomainGetXMLDesc(dom, 0), *p;
	unsigned cid = 0;

	if (!xml)
		return 0;
	p = strstr(xml, "<vsock");
	p = p ? strstr(p, "address='") : NULL;
	if (p)
		cid = (unsigned)strtoul(p + 9, NULL, 10);
	free(xml);
	return cid;
}

static void lv_vm_free(struct lv_vm *lv)
{
	if (!lv)
		return;
	if (lv->dom)
		virDomainFree(lv->dom);
	if (lv->kmsg >= 0)
		close(lv->kmsg);
	free(lv->sock);
	free(lv->save);
	free(lv);
}

/* Puts src into the VM's directory as dst: a hard link, or a copy across file systems. */
static int lv_stage(const char *src, const char *dst)
{
	char buf[65536];
	int in, out, rc = 0;
	ssize_t n;

	/* AT_SYMLINK_FOLLOW: a link to a symlink would send QEMU back to src's directory. */
	if (linkat(AT_FDCWD, src, AT_FDCWD, dst, AT_SYMLINK_FOLLOW) == 0)
		return 0;
	if (errno != EXDEV && errno != EPERM && errno != EMLINK)
		return -errno;
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -errno;
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0) {
		rc = -errno;
		close(in);
		return rc;
	}
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n) {
			n = -1;
			break;
		}
	if (n < 0)
		rc = errno ? -errno : -EIO;
	close(in);
	if (close(out) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

/*
 * The jailed QEMU's files: links to the kernel and the initrd in the VM's
 * directory, and ACL entries for its uid alone that let it reach and read
 * them (recorded in the directory's jail.acl for a crashed run's successor).
 */
static int lv_jail_files(struct hearth_vm *vm, const struct hearth_vm_spec *spec, char *err,
			 size_t errlen)
{
	struct lv_vm *lv = vm->priv;
	const char *src[2] = {spec->kernel, spec->initrd}, *name[2] = {"kernel", "initrd"};
	char path[4096];
	struct stat st;
	int rc;

	snprintf(path, sizeof(path), "%s/" LV_JAIL_RECORD, vm->dir);
	rc = file_acl_begin(&lv->acl, lv->uid, path);
	if (rc < 0)
		return hearth_engine_fail(err, errlen, -rc, "%s: %s", path, strerror(-rc));
	rc = file_acl_grant_path_to(&lv->acl, vm->dir);
	if (rc < 0)
		return hearth_engine_fail(err, errlen, -rc, "ACL: making %s reachable for uid %u: %s",
					  vm->dir, lv->uid, strerror(-rc));
	rc = file_acl_grant(&lv->acl, vm->dir, FILE_ACL_R | FILE_ACL_X);
	for (int i = 0; rc == 0 && i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", vm->dir, name[i]);
		rc = lv_stage(src[i], path);
		if (rc < 0)
			return hearth_engine_fail(err, errlen, -rc, "putting %s into %s: %s", src[i],
						  vm->dir, strerror(-rc));
		rc = file_acl_grant(&lv->acl, path, FILE_ACL_R);
	}
	/* Under KVM QEMU opens /dev/kvm itself (libvirt copies its ACL into QEMU's /dev). */
	if (rc == 0 && !strcmp(vm->engine->accel, "kvm") && stat("/dev/kvm", &st) == 0 &&
	    (st.st_mode & (S_IROTH | S_IWOTH)) != (S_IROTH | S_IWOTH)) {
		snprintf(path, sizeof(path), "/dev/kvm");
		rc = file_acl_grant(&lv->acl, path, FILE_ACL_R | FILE_ACL_W);
	}
	if (rc < 0)
		return hearth_engine_fail(err, errlen, -rc, "ACL: giving uid %u %s: %s", lv->uid,
					  path, strerror(-rc));
	return 0;
}

/* The pid of a running domain's QEMU (libvirtd's pid file for qemu:///system), or 0. */
static pid_t lv_qemu_pid(const char *name)
{
	char path[300];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "/run/libvirt/qemu/%s.pid", name);
	f = fopen(path, "re");
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return (pid_t)pid;
}

/*
 * A jailed domain that was started (or restored) paused: caps its memory,
 * notes its QEMU's pid, starts reading the kernel log from now on (to tell a
 * cgroup OOM kill later), and lets it run.
 */
static int lv_jail_run(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct lv_engine *le = vm->engine->priv;
	struct lv_vm *lv = vm->priv;

	if (le->mem_limit) {
		virTypedParameter p;

		memset(&p, 0, sizeof(p));
		snprintf(p.field, sizeof(p.field), "%s", VIR_DOMAIN_MEMORY_HARD_LIMIT);
		p.type = VIR_TYPED_PARAM_ULLONG;
		p.value.ul = ((unsigned long long)lv->memory_mb + le->overhead_mb) * 1024; /* KiB */
		if (virDomainSetMemoryParameters(lv->dom, &p, 1, VIR_DOMAIN_AFFECT_LIVE) < 0)
			return hearth_engine_fail(err, errlen, EIO, "libvirt: memory limit of %s: %s",
						  vm->name, lv_lasterr());
	}
	lv->qemu_pid = lv_qemu_pid(vm->name);
	if (lv->kmsg >= 0)
		close(lv->kmsg);
	lv->kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (lv->kmsg >= 0)
		lseek(lv->kmsg, 0, SEEK_END);
	if (virDomainResume(lv->dom) < 0)
		return hearth_engine_fail(err, errlen, EIO, "libvirt: running %s: %s", vm->name,
					  lv_lasterr());
	return 0;
}

/* Gives the jail back: the ACL entries and (domain gone) the uid. */
static int lv_jail_release(struct hearth_vm *vm, bool domain_gone, char *err, size_t errlen)
{
	struct lv_engine *le = vm->engine->priv;
	struct lv_vm *lv = vm->priv;
	int rc = 0;

	if (!lv->uid)
		return 0;
	rc = file_acl_revoke_all(&lv->acl);
	if (rc < 0)
		rc = hearth_engine_fail(err, errlen, -rc, "ACL: revoking uid %u's entries: %s",
					lv->uid, strerror(-rc));
	/* A QEMU that may still run keeps its uid: no other VM may get it. */
	if (domain_gone) {
		jail_uid_put(le->uid_base, lv->uid);
		lv->uid = 0;
	}
	return rc;
}

/*
 * Did the kernel kill this VM's QEMU for its cgroup's memory limit? Its
 * oom-kill record names the victim's pid and uid; only records logged since
 * the domain started are read, and the uid is this VM's alone meanwhile.
 */
static bool lv_oom_killed(struct lv_vm *lv)
{
	char rec[8192], uid[32], pid[32];
	bool hit = false;
	ssize_t n;

	snprintf(uid, sizeof(uid), ",uid=%u", lv->uid);
	snprintf(pid, sizeof(pid), ",pid=%d,", (int)lv->qemu_pid);
	for (;;) {
		n = read(lv->kmsg, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue; /* records were overwritten before we read them: go on */
		if (n <= 0)
			break;
		rec[n] = '\0';
		const char *m = strstr(rec, "oom-kill:"), *u = m ? strstr(m, uid) : NULL;

		if (u && strstr(m, "CONSTRAINT_MEMCG") && (u[strlen(uid)] < '0' || u[strlen(uid)] > '9') &&
		    (lv->qemu_pid <= 0 || strstr(m, pid)))
			hit = true;
	}
	return hit;
}

static int lv_create(struct hearth_vm *vm, const struct hearth_vm_spec *spec, char *err,
		     size_t errlen)
{
	struct lv_engine *le = vm->engine->priv;
	struct lv_vm *lv = calloc(1, sizeof(*lv));
	char *xml = NULL;
	int rc;

	if (!lv)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	vm->priv = lv;
	lv->kmsg = -1;
	lv->memory_mb = spec->memory_mb ? spec->memory_mb : 128;
	if (access(spec->kernel, R_OK) < 0) {
		rc = hearth_engine_fail(err, errlen, errno, "kernel %s: %s", spec->kernel,
					strerror(errno));
		goto fail;
	}
	if (access(spec->initrd, R_OK) < 0) {
		rc = hearth_engine_fail(err, errlen, errno, "image %s: %s", spec->initrd,
					strerror(errno));
		goto fail;
	}
	if (asprintf(&vm->console_log, "%s/console.log", vm->dir) < 0 ||
	    asprintf(&lv->save, "%s/save.img", vm->dir) < 0 ||
	    (!le->vsock && asprintf(&lv->sock, "%s/agent.sock", vm->dir) < 0)) {
		rc = hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
		goto fail;
	}
	if (le->jail) {
		lv->uid = jail_uid_get(le->uid_base);
		if (!lv->uid) {
			rc = hearth_engine_fail(err, errlen, EAGAIN, "no free jail uid");
			goto fail;
		}
		rc = lv_jail_files(vm, spec, err, errlen);
		if (rc < 0)
			goto fail;
	}
	xml = lv_domain_xml(vm, spec, le->vsock);
	if (!xml) {
		rc = hearth_engine_fail(err, errlen, ENAMETOOLONG, "domain XML: a path is too long");
		goto fail;
	}
	/* Jailed domains start paused: their memory limit is set before the guest runs. */
	lv->dom = virDomainCreateXML(le->conn, xml,
				     lv->uid ? VIR_DOMAIN_START_PAUSED : VIR_DOMAIN_NONE);
	if (!lv->dom) {
		rc = hearth_engine_fail(err, errlen, EIO, "libvirt: starting %s: %s", vm->name,
					lv_lasterr());
		goto fail;
	}
	if (lv->uid && (rc = lv_jail_run(vm, err, errlen)) < 0) {
		virDomainDestroy(lv->dom);
		goto fail;
	}
	if (le->vsock)
		lv->cid = lv_guest_cid(lv->dom);
	free(xml);
	return 0;
fail:
	free(xml);
	lv_jail_release(vm, true, NULL, 0);
	lv_vm_free(lv);
	vm->priv = NULL;
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int lv_connect_vsock(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out,
			    char *err, size_t errlen)
{
	struct lv_vm *lv = vm->priv;
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_port = HEARTH_AGENT_VSOCK_PORT};
	int fd, e;

	if (!lv->cid)
		return hearth_engine_fail(err, errlen, EIO, "%s: no guest vsock CID", vm->name);
	sa.svm_cid = lv->cid;
	for (;;) {
		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return hearth_engine_fail(err, errlen, errno, "socket(AF_VSOCK): %s",
						  strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		e = errno;
		close(fd);
		if (deadline >= 0 && now_ms() >= deadline)
			return hearth_engine_fail(err, errlen, e, "%s: vsock %u:%u: %s", vm->name,
						  lv->cid, HEARTH_AGENT_VSOCK_PORT, strerror(e));
		usleep(20000);
	}
	*out = agent_conn_from_fd(fd);
	if (!*out)
		return hearth_engine_fail(err, errlen, ENOMEM, "out of memory");
	return 0;
}

static int lv_connect(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out, char *err,
		      size_t errlen)
{
	struct lv_vm *lv = vm->priv;
	int rc;

	if (!lv->sock)
		return lv_connect_vsock(vm, timeout_ms, out, err, errlen);
	rc = agent_connect_unix(lv->sock, timeout_ms, out);
	if (rc < 0)
		return hearth_engine_fail(err, errlen, errno ? errno : EIO,
					  "%s: connecting to the agent channel %s: %s", vm->name,
					  lv->sock, agent_strerror(rc));
	return 0;
}

static int lv_pause(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct lv_vm *lv = vm->priv;

	if (virDomainSuspend(lv->dom) < 0)
		return hearth_engine_fail(err, errlen, EIO, "libvirt: pausing %s: %s", vm->name,
					  lv_lasterr());
	return 0;
}

static int lv_resume(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct lv_vm *lv = vm->priv;

	if (virDomainResume(lv->dom) < 0)
		return hearth_engine_fail(err, errlen, EIO, "libvirt: resuming %s: %s", vm->name,
					  lv_lasterr());
	return 0;
}

static int lv_save(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct lv_vm *lv = vm->priv;

	if (virDomainSave(lv->dom, lv->save) < 0) {
		int rc = hearth_engine_fail(err, errlen, EIO, "libvirt: saving %s: %s", vm->name,
					    lv_lasterr());

		unlink(lv->save);
		return rc;
	}
	virDomainFree(lv->dom);
	lv->dom = NULL;
	/* QEMU is gone; the restored one binds the channel socket afresh. */
	if (lv->sock)
		unlink(lv->sock);
	return 0;
}

static int lv_restore(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct lv_engine *le = vm->engine->priv;
	struct lv_vm *lv = vm->priv;

	if (lv->uid) {
		/*
		 * The saved XML carries the live memory limit, which libvirt would also
		 * turn into RLIMIT_MEMLOCK (see the top of this file): restore without
		 * it, paused, and set it again live.
		 */
		char *xml = virDomainSaveImageGetXMLDesc(le->conn, lv->save, 0), *a, *b;
		int r;

		if (!xml)
			return hearth_engine_fail(err, errlen, EIO, "libvirt: reading %s: %s",
						  lv->save, lv_lasterr());
		if ((a = strstr(xml, "<memtune>")) && (b = strstr(a, "</memtune>")))
			memmove(a, b + strlen("</memtune>"), strlen(b + strlen("</memtune>")) + 1);
		r = virDomainRestoreFlags(le->conn, lv->save, xml, VIR_DOMAIN_SAVE_PAUSED);
		free(xml);
		if (r < 0)
			return hearth_engine_fail(err, errlen, EIO, "libvirt: restoring %s: %s",
						  vm->name, lv_lasterr());
	} else if (virDomainRestore(le->conn, lv->save) < 0) {
		return hearth_engine_fail(err, errlen, EIO, "libvirt: restoring %s: %s", vm->name,
					  lv_lasterr());
	}
	lv->dom = virDomainLookupByName(le->conn, vm->name);
	if (!lv->dom)
		return hearth_engine_fail(err, errlen, EIO, "libvirt: %s vanished after restore: %s",
					  vm->name, lv_lasterr());
	if (lv->uid) {
		int rc = lv_jail_run(vm, err, errlen);

		if (rc < 0) {
			/* Back to saved: the save file is still there for another try. */
			virDomainDestroy(lv->dom);
			virDomainFree(lv->dom);
			lv->dom = NULL;
			return rc;
		}
	}
	unlink(lv->save);
	if (le->vsock)
		lv->cid = lv_guest_cid(lv->dom);
	return 0;
}

static int lv_stats(struct hearth_vm *vm, struct hearth_vm_stats *st, char *err, size_t errlen)
{
	struct lv_vm *lv = vm->priv;
	virDomainMemoryStatStruct ms[VIR_DOMAIN_MEMORY_STAT_NR];
	virDomainInfo info;
	int n;

	st->memory_kb = (uint64_t)lv->memory_mb * 1024;
	if (vm->state == HEARTH_VM_SAVED)
		return 0;
	if (!lv->dom || virDomainGetInfo(lv->dom, &info) < 0) {
		/* A transient domain that powered off or crashed no longer exists. */
		st->state = vm->state = HEARTH_VM_STOPPED;
		return 0;
	}
	switch (info.state) {
	case VIR_DOMAIN_RUNNING:
	case VIR_DOMAIN_BLOCKED: st->state = HEARTH_VM_RUNNING; break;
	case VIR_DOMAIN_PAUSED: st->state = HEARTH_VM_PAUSED; break;
	case VIR_DOMAIN_SHUTDOWN:
	case VIR_DOMAIN_SHUTOFF:
	case VIR_DOMAIN_CRASHED: st->state = HEARTH_VM_STOPPED; break;
	default: st->state = HEARTH_VM_UNKNOWN; break;
	}
	vm->state = st->state;
	st->memory_kb = info.maxMem;
	st->cpu_time_ns = info.cpuTime;
	n = virDomainMemoryStats(lv->dom, ms, VIR_DOMAIN_MEMORY_STAT_NR, 0);
	for (int i = 0; i < n; i++)
		if (ms[i].tag == VIR_DOMAIN_MEMORY_STAT_RSS)
			st->rss_kb = ms[i].val;
	(void)err;
	(void)errlen;
	return 0;
}

static int lv_destroy(struct hearth_vm *vm, char *err, size_t errlen)
{
	struct lv_engine *le = vm->engine->priv;
	struct lv_vm *lv = vm->priv;
	virDomainPtr dom;
	int rc = 0;

	if (!lv)
		return 0;
	/* Look the domain up by name: the handle may be stale after a guest power-off. */
	dom = virDomainLookupByName(le->conn, vm->name);
	if (dom) {
		if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0 &&
		    virDomainIsActive(dom) == 1)
			rc = hearth_engine_fail(err, errlen, EIO, "libvirt: destroying %s: %s",
						vm->name, lv_lasterr());
		if (virDomainIsPersistent(dom) == 1)
			virDomainUndefine(dom);
		virDomainFree(dom);
	}
	if (rc == 0)
		lv_remove_log(vm->engine, vm->name);
	/* The first failure's message stays in err. */
	if (lv_jail_release(vm, rc == 0, rc == 0 ? err : NULL, errlen) < 0 && rc == 0)
		rc = -EIO;
	lv_vm_free(lv);
	vm->priv = NULL;
	return rc;
}

static enum hearth_vm_end lv_exit_reason(struct hearth_vm *vm, int wait_ms, char *buf, size_t len)
{
	struct lv_engine *le = vm->engine->priv;
	struct lv_vm *lv = vm->priv;
	int64_t deadline = now_ms() + wait_ms;

	if (!lv || vm->state == HEARTH_VM_SAVED)
		return HEARTH_VM_LIVES;
	for (;;) {
		virDomainPtr d = virDomainLookupByName(le->conn, vm->name);
		int active = d ? virDomainIsActive(d) : 0;

		if (d)
			virDomainFree(d);
		else if (virGetLastErrorCode() != VIR_ERR_NO_DOMAIN)
			return HEARTH_VM_LIVES; /* libvirtd cannot say */
		if (active != 1)
			break;
		if (now_ms() >= deadline)
			return HEARTH_VM_LIVES;
		usleep(20000);
	}
	vm->state = HEARTH_VM_STOPPED;
	if (lv->uid && lv->kmsg >= 0 && lv_oom_killed(lv)) {
		snprintf(buf, len, "QEMU was killed by its cgroup: the domain reached its memory "
				   "limit (guest RAM %u MiB plus %u MiB for QEMU)", lv->memory_mb,
			 ((struct lv_engine *)vm->engine->priv)->overhead_mb);
		return HEARTH_VM_OUT_OF_MEMORY;
	}
	snprintf(buf, len, "the domain is gone: the guest powered off or crashed, or QEMU died");
	return HEARTH_VM_ENDED;
}

const struct hearth_engine_ops hearth_engine_libvirt_ops = {
	.name = "libvirt",
	.open = lv_open,
	.close = lv_close,
	.create = lv_create,
	.connect = lv_connect,
	.pause = lv_pause,
	.resume = lv_resume,
	.save = lv_save,
	.restore = lv_restore,
	.stats = lv_stats,
	.exit_reason = lv_exit_reason,
	.destroy = lv_destroy,
};
