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
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent_client.h"
#include "engine_backend.h"
#include "msg.h"

struct lv_engine {
	virConnectPtr conn;
	bool vsock;
};

struct lv_vm {
	virDomainPtr dom;     /* NULL while saved or after the domain went away */
	char *sock;           /* virtio-serial channel socket (NULL with vsock) */
	char *save;           /* save file path */
	unsigned memory_mb;
	unsigned cid;         /* guest vsock CID (vsock only) */
};

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
		while ((de = readdir(d)))
			if (has_prefix(de->d_name, e->name_prefix)) {
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
	char chan[1600], *xml = NULL;
	bool kvm = !strcmp(e->accel, "kvm");

	if (xml_escape(spec->kernel, kernel, sizeof(kernel)) ||
	    xml_escape(spec->initrd, initrd, sizeof(initrd)) ||
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
		     "</domain>\n",
		     kvm ? "kvm" : "qemu", vm->name, vm->uuid, lv->memory_mb,
		     spec->vcpus ? spec->vcpus : 1, kernel, initrd,
		     vsock ? " hearth.transport=vsock" : "", extra,
		     kvm ? "<cpu mode='host-passthrough'/>" : "", log, chan) < 0)
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
	free(lv->sock);
	free(lv->save);
	free(lv);
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
	xml = lv_domain_xml(vm, spec, le->vsock);
	if (!xml) {
		rc = hearth_engine_fail(err, errlen, ENAMETOOLONG, "domain XML: a path is too long");
		goto fail;
	}
	lv->dom = virDomainCreateXML(le->conn, xml, VIR_DOMAIN_NONE);
	if (!lv->dom) {
		rc = hearth_engine_fail(err, errlen, EIO, "libvirt: starting %s: %s", vm->name,
					lv_lasterr());
		goto fail;
	}
	if (le->vsock)
		lv->cid = lv_guest_cid(lv->dom);
	free(xml);
	return 0;
fail:
	free(xml);
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

	if (virDomainRestore(le->conn, lv->save) < 0)
		return hearth_engine_fail(err, errlen, EIO, "libvirt: restoring %s: %s", vm->name,
					  lv_lasterr());
	lv->dom = virDomainLookupByName(le->conn, vm->name);
	if (!lv->dom)
		return hearth_engine_fail(err, errlen, EIO, "libvirt: %s vanished after restore: %s",
					  vm->name, lv_lasterr());
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
	lv_vm_free(lv);
	vm->priv = NULL;
	return rc;
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
	.destroy = lv_destroy,
};
