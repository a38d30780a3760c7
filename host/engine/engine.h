/*
 * engine.h - the one interface hearthd uses to run function VMs.
 *
 * An engine is a backend that can start a guest that runs hearth-agent and
 * hand back a connection to that agent (host/client/agent_client.h). Three
 * backends exist or are planned, split by file name:
 *   engine_libvirt.c   transient q35 domains through libvirtd + QEMU (KVM or TCG)
 *   engine_process.c   hearth-agent as a plain host process (development only:
 *                      NO isolation, refused unless explicitly allowed)
 *   engine_builtin.c   hearth-vmm microVMs, with a pool of pre-started
 *                      hearth-vmm processes for clones (vmm_pool.c)
 *
 * What differs between engines is announced by capability flags, never by
 * the engine's name: hearthd asks hearth_engine_caps() and treats every
 * engine alike. An operation an engine lacks fails with -ENOTSUP and a
 * message; it never half-works.
 *
 * Life of a VM:
 *   hearth_engine_open()           once per process; reaps leftovers of a crashed run
 *   hearth_vm_create()             boots the guest (kernel + initramfs image)
 *   hearth_vm_connect()            waits for the agent and returns a connection;
 *                                  the caller then does agent_hello(), agent_configure()...
 *   hearth_vm_pause()/_resume()    stop and continue the vCPUs (memory stays)
 *   hearth_vm_save()/_restore()    suspend to disk and back (scale to zero); the
 *                                  agent connection does not survive: connect again,
 *                                  and send agent_reseed() first
 *   hearth_vm_stats()              memory and state
 *   hearth_vm_destroy()            kills the guest and removes every domain,
 *                                  socket, console log and save file it made
 *   hearth_engine_close()
 *
 * Errors: every call returns 0 or a negative errno value and, when err is
 * not NULL, a human-readable message naming the failing step. An engine is
 * used from one thread at a time; VMs of one engine must not be used
 * concurrently from several threads either.
 */
#ifndef HEARTH_ENGINE_H
#define HEARTH_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct agent_conn;
struct hearth_engine;
struct hearth_vm;

/* Capability flags (hearth_engine_caps()). */
enum {
	/* Guest code runs inside a hardware or emulated VM, not on the host. */
	HEARTH_ENGINE_CAP_ISOLATED = 1u << 0,
	/* Boots the guest kernel + initramfs of struct hearth_vm_spec. Without it
	 * (process engine) the image is unpacked and the agent runs on the host. */
	HEARTH_ENGINE_CAP_BOOTS_KERNEL = 1u << 1,
	/* hearth_vm_pause()/hearth_vm_resume(). */
	HEARTH_ENGINE_CAP_PAUSE = 1u << 2,
	/* hearth_vm_save()/hearth_vm_restore() of the same VM (scale to zero). */
	HEARTH_ENGINE_CAP_SAVE_RESTORE = 1u << 3,
	/* One snapshot can be restored into many VMs (builtin engine); libvirt
	 * refuses to restore a save image under another name, so it lacks this. */
	HEARTH_ENGINE_CAP_CLONE = 1u << 4,
	/* Development only: hearthd must refuse the engine unless the operator
	 * sets hearth_engine_config.allow_unisolated. */
	HEARTH_ENGINE_CAP_DEV_ONLY = 1u << 5,
	/* The agent channel is vsock (else virtio-serial or a Unix socket). */
	HEARTH_ENGINE_CAP_VSOCK = 1u << 6,
};

enum hearth_engine_kind {
	HEARTH_ENGINE_LIBVIRT,
	HEARTH_ENGINE_PROCESS,
	HEARTH_ENGINE_BUILTIN, /* hearth-vmm */
};

/* Which accelerator the libvirt engine asks for. */
enum hearth_accel {
	HEARTH_ACCEL_AUTO, /* KVM if it can run stock guests, else TCG */
	HEARTH_ACCEL_KVM,
	HEARTH_ACCEL_TCG,
};

struct hearth_engine_config {
	enum hearth_engine_kind kind;
	/* Directory for per-VM sockets, console logs and save files. It must be
	 * short: Unix socket paths are limited to 107 bytes. NULL = /run/hearth. */
	const char *run_dir;
	/* libvirt: connection URI; NULL = qemu:///system. */
	const char *libvirt_uri;
	enum hearth_accel accel;
	/* Domain names are "<name_prefix><uuid>"; NULL = "hearth-". hearth_engine_open()
	 * destroys every domain with this prefix left over from a crashed run, so
	 * tests that share a libvirtd use their own prefix. */
	const char *name_prefix;
	/* process engine: explicit operator consent to run without isolation. */
	bool allow_unisolated;
	/* process engine: suppress the no-isolation warning on stderr (tests). */
	bool quiet;
	/* builtin engine: the hearth-vmm binary; NULL = "hearth-vmm" next to the caller. */
	const char *vmm_bin;
	/*
	 * Jail every VM's host process, each under its own uid from jail_uid_base
	 * on (0 = HEARTH_JAIL_UID_BASE; one allocator for both engines,
	 * jail_uid.h). Needs root.
	 *   builtin: hearth-vmm jails itself (host/vmm/jail.h).
	 *   libvirt: QEMU runs as that uid (a static DAC seclabel), reads only its
	 *            own VM's files (POSIX ACLs), and its domain's cgroup caps its
	 *            memory (engine_libvirt.c). Where the local libvirtd has no
	 *            DAC driver, or run_dir's file system has no ACLs, the engine
	 *            says so in one line and runs QEMU as libvirtd's qemu.conf says.
	 */
	bool jail;
	uint32_t jail_uid_base;
	/* libvirt, jailed: QEMU's allowance above guest RAM in the domain's cgroup
	 * memory limit, in MiB; 0 = HEARTH_LIBVIRT_OVERHEAD_TCG_MB or _KVM_MB. */
	uint32_t mem_overhead_mb;
};

#define HEARTH_JAIL_UID_BASE 2000000000u
#define HEARTH_JAIL_UIDS 65536u
#define HEARTH_LIBVIRT_OVERHEAD_TCG_MB 256u
#define HEARTH_LIBVIRT_OVERHEAD_KVM_MB 128u

struct hearth_vm_spec {
	const char *kernel;       /* bzImage (libvirt) or vmlinux (builtin); unused by process */
	const char *initrd;       /* the function image (host/image/image.h) */
	uint32_t memory_mb;       /* guest RAM; 0 = 128 */
	uint32_t vcpus;           /* 0 = 1 */
	const char *cmdline_extra; /* appended to the kernel command line, or NULL */
	const char *prefetch;     /* clone: a working-set file to fetch ahead (hearth_vm_workset), or NULL */
};

enum hearth_vm_state {
	HEARTH_VM_RUNNING,
	HEARTH_VM_PAUSED,
	HEARTH_VM_SAVED,     /* suspended to disk; hearth_vm_restore() brings it back */
	HEARTH_VM_STOPPED,   /* the guest exited or crashed */
	HEARTH_VM_UNKNOWN,
};

struct hearth_vm_stats {
	enum hearth_vm_state state;
	uint64_t memory_kb;      /* memory given to the guest */
	uint64_t rss_kb;         /* host memory the VM uses now (0 if unknown) */
	uint64_t cpu_time_ns;    /* guest CPU time so far (0 if unknown) */
};

const char *hearth_vm_state_name(enum hearth_vm_state s);

/*
 * Opens an engine. For libvirt this connects to libvirtd, picks the
 * accelerator and destroys leftover domains named <name_prefix>*. For the
 * process engine it refuses (-EPERM) unless cfg->allow_unisolated is set,
 * and prints a no-isolation warning.
 */
int hearth_engine_open(const struct hearth_engine_config *cfg, struct hearth_engine **out,
		       char *err, size_t errlen);
void hearth_engine_close(struct hearth_engine *e);

unsigned hearth_engine_caps(const struct hearth_engine *e);
const char *hearth_engine_name(const struct hearth_engine *e);
/* "kvm", "tcg" or "none" (process engine). */
const char *hearth_engine_accel(const struct hearth_engine *e);

/*
 * True when /dev/kvm can run a stock Linux guest: it must exist and the CPU
 * must have vmx or svm, and KVM must not be the PVM flavour (DESIGN.md:
 * PVM runs unmodified guests only through the instruction emulator).
 */
bool hearth_kvm_runs_stock_guests(void);

/* Boots a VM from spec; on success *out is running (the agent may still be starting). */
int hearth_vm_create(struct hearth_engine *e, const struct hearth_vm_spec *spec,
		     struct hearth_vm **out, char *err, size_t errlen);

/*
 * Waits up to timeout_ms for the agent's channel and connects to it. The
 * returned connection is the caller's (agent_close() it); it has not said
 * Hello yet. A VM has at most one useful connection at a time. Over
 * virtio-serial there is no connection boundary: a reply the agent sends
 * after the host closed (say, to a ping that timed out while the VM was
 * paused) arrives on the next connection. Read every reply you asked for
 * before closing.
 */
int hearth_vm_connect(struct hearth_vm *vm, int timeout_ms, struct agent_conn **out, char *err,
		      size_t errlen);

int hearth_vm_pause(struct hearth_vm *vm, char *err, size_t errlen);
int hearth_vm_resume(struct hearth_vm *vm, char *err, size_t errlen);
/* Suspends the VM to a file in run_dir; it then uses no CPU or guest memory. */
int hearth_vm_save(struct hearth_vm *vm, char *err, size_t errlen);
/* Brings a saved VM back, running; the save file is removed. */
int hearth_vm_restore(struct hearth_vm *vm, char *err, size_t errlen);
int hearth_vm_stats(struct hearth_vm *vm, struct hearth_vm_stats *st, char *err, size_t errlen);

/* Engine-given name ("hearth-<uuid>") and console log path (may be NULL). */
const char *hearth_vm_name(const struct hearth_vm *vm);
const char *hearth_vm_console_log(const struct hearth_vm *vm);
/*
 * For a VM that failed (did not start, crashed, its agent died): its console
 * log outlives it. hearth_vm_destroy moves it to <run_dir>/failed/<name>.
 * console.log, where the newest HEARTH_FAILED_CONSOLES are kept (the run
 * directory is the operator's; tenants never see these paths). Writes that
 * path into path (if len) for the operator's log. A failed create or clone
 * keeps its console by itself.
 */
#define HEARTH_FAILED_CONSOLES 32
void hearth_vm_keep_console(struct hearth_vm *vm, char *path, size_t len);

/*
 * Engines with HEARTH_ENGINE_CAP_CLONE (builtin): writes a snapshot of a
 * running VM to mem_path + state_path (the VM keeps running), and starts a
 * new VM from such a snapshot. Many VMs may be cloned from one snapshot at
 * once; they share its memory file copy-on-write. A clone's agent connection
 * is new: connect, then agent_reseed() before anything else.
 */
int hearth_vm_snapshot(struct hearth_vm *vm, const char *mem_path, const char *state_path,
		       char *err, size_t errlen);
/*
 * shape (memory_mb, vcpus; may be NULL) is the snapshot's VM shape: the
 * builtin engine then restores it in a pre-started process of that shape
 * when one is ready (see hearth_engine_pool_set), and spawns one otherwise.
 */
int hearth_vm_clone(struct hearth_engine *e, const char *mem_path, const char *state_path,
		    const struct hearth_vm_spec *shape, struct hearth_vm **out, char *err,
		    size_t errlen);

/*
 * Pre-started VMM processes (builtin engine; -ENOTSUP elsewhere): how many
 * idle ones to keep per VM shape. Shapes not listed get none. Thread-safe: a
 * background thread starts, checks and stops them (host/engine/vmm_pool.h).
 */
struct hearth_pool_shape {
	uint32_t memory_mb, vcpus;
	int count;
};
struct hearth_pool_stats {
	int idle;          /* ready for a restore */
	int starting;      /* started, not ready yet */
	uint64_t hits;     /* clones restored in a pooled process */
	uint64_t misses;   /* clones that found none ready (or whose process failed): spawned */
	uint64_t started;  /* pooled processes started */
	uint64_t discarded; /* pooled processes that died, failed a check or a restore */
};
/*
 * Builtin engine: records the guest pages this VM has touched since it was
 * restored (its working set, host/vmm/workset.h) to path, for later clones of
 * the same snapshot to prefetch (hearth_vm_spec.prefetch).
 */
int hearth_vm_workset(struct hearth_vm *vm, const char *path, char *err, size_t errlen);
/*
 * After a VM stopped answering: waits up to wait_ms for its VMM to end and
 * says why it ended in buf ("killed by its cgroup: ..."). Returns how it
 * ended, or HEARTH_VM_LIVES if it still runs or the engine cannot tell.
 */
enum hearth_vm_end {
	HEARTH_VM_LIVES = 0,
	HEARTH_VM_ENDED,         /* exited or killed; buf says how */
	HEARTH_VM_OUT_OF_MEMORY, /* killed by its cgroup's memory limit (jailed VMs) */
};
enum hearth_vm_end hearth_vm_exit_reason(struct hearth_vm *vm, int wait_ms, char *buf, size_t len);

int hearth_engine_pool_set(struct hearth_engine *e, const struct hearth_pool_shape *shapes, int n);
int hearth_engine_pool_stats(struct hearth_engine *e, struct hearth_pool_stats *st);

/*
 * Stops the VM if needed and removes everything it created. Frees vm even
 * when a step fails (the failure is reported, and the rest still runs).
 */
int hearth_vm_destroy(struct hearth_vm *vm, char *err, size_t errlen);

#endif
