/*
 * image.h - function packages and the guest initramfs built from them.
 *
 * A function package is a directory or a .tar.gz holding the function's
 * files and, at its root, manifest.json:
 *
 *   {
 *     "handler": "bin/echo",      path inside the package (or absolute in the guest)
 *     "args": ["--flag"],         optional argv[1..]
 *     "memory_mb": 128,           guest memory, 32..65536 (default 128)
 *     "timeout_ms": 3000,         per-invocation timeout, 1..900000 (default 3000)
 *     "env": {"KEY": "value"},    optional environment
 *     "shell": true,              optional: put busybox in the image (/bin/sh)
 *     "init": "bin/setup",        optional: run once before the agent reports Ready
 *     "runtime": "provided"       optional: a Lambda custom runtime (see below)
 *   }
 *
 * Runtime mode (HandlerMode RUNTIME, guest-agent/runtime.h): with "runtime":
 * "provided" (or "provided.al2", "provided.al2023"), or with no "runtime" key
 * and a `bootstrap` file at the package root, the package's /var/task/bootstrap
 * is started once per VM and polls the Lambda Runtime API; "handler" is then
 * optional and free text, the Lambda handler setting passed as _HANDLER
 * (e.g. "index.handler"), and "init" is refused (the bootstrap initialises
 * itself). "runtime": "exec" keeps a package with a bootstrap file in exec mode.
 * Unknown keys are refused, so a typo is an error rather than a silent default.
 *
 * hearth_image_build() turns a package into a newc cpio initramfs holding:
 *   /init           hearth-agent (the guest's PID 1)
 *   /dev/console    the initial console node (the kernel opens it for /init)
 *   /dev /proc /sys /tmp  empty mount points
 *   /var/task/...   the package, manifest.json included
 *   /bin/busybox and /bin/sh -> busybox   (only with "shell": true; Debian's
 *                   busybox-static runs its applets from sh without links)
 *
 * The image is deterministic: entries sorted by path, mtime 0, uid/gid 0,
 * normalised modes (0755 when any execute bit is set, else 0644), inode
 * numbers assigned in order. The same package, agent and busybox give the
 * same bytes, and the image is stored content-addressed as
 * <out_dir>/<sha256 hex>.cpio.
 *
 * Package input is untrusted (a tenant uploads it): absolute paths, ".."
 * components, hard links, device nodes and oversized packages are refused
 * with an error message; nothing here exits or aborts on bad input.
 * The functions are reentrant; callers may build images concurrently.
 */
#ifndef HEARTH_IMAGE_H
#define HEARTH_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HEARTH_MANIFEST_NAME "manifest.json"
#define HEARTH_TASK_DIR "/var/task"
#define HEARTH_IMAGE_DEFAULT_MEMORY_MB 128u
#define HEARTH_IMAGE_DEFAULT_TIMEOUT_MS 3000u
/* Default cap on the unpacked package size (files' bytes). */
#define HEARTH_IMAGE_DEFAULT_MAX_PACKAGE (256u * 1024u * 1024u)
#define HEARTH_SHA256_HEX_LEN 64

struct hearth_manifest {
	char *handler;      /* absolute guest path, e.g. "/var/task/bin/echo" */
	char **args;        /* argv[1..]; nargs entries */
	size_t nargs;
	char **env;         /* "KEY=VALUE"; nenv entries, sorted by key */
	size_t nenv;
	uint32_t memory_mb;
	uint32_t timeout_ms;
	bool shell;
	char *init;         /* absolute guest path, or NULL */
	bool runtime;       /* runtime mode: handler is /var/task/bootstrap */
	char *lambda_handler; /* runtime mode: "handler" as given (for _HANDLER), or NULL */
};

void hearth_manifest_free(struct hearth_manifest *m);

/*
 * Parses manifest JSON text (not NUL-terminated; len bytes). The handler is
 * made absolute (relative paths are under /var/task). Returns 0, or -1 with
 * a message in err.
 */
int hearth_manifest_parse(const char *json, size_t len, struct hearth_manifest *m, char *err,
			  size_t errlen);
/* The same, told whether the package has a `bootstrap` file at its root. */
int hearth_manifest_parse_pkg(const char *json, size_t len, bool has_bootstrap,
			      struct hearth_manifest *m, char *err, size_t errlen);

struct hearth_image_opts {
	const char *package;      /* directory or .tar.gz / .tgz file */
	const char *agent;        /* hearth-agent static binary, becomes /init */
	const char *busybox;      /* busybox-static; NULL = /bin/busybox; used only with "shell" */
	const char *out_dir;      /* where <sha256>.cpio is written; created if missing */
	uint64_t max_package;     /* 0 = HEARTH_IMAGE_DEFAULT_MAX_PACKAGE */
};

struct hearth_image {
	char sha256[HEARTH_SHA256_HEX_LEN + 1];
	char *path;                   /* <out_dir>/<sha256>.cpio */
	uint64_t size;                /* bytes in the cpio */
	size_t entries;               /* cpio entries written */
	struct hearth_manifest manifest;
};

void hearth_image_free(struct hearth_image *img);

/*
 * Builds the initramfs for opts->package. On success fills *img (free with
 * hearth_image_free()) and returns 0. On failure leaves a message in err and
 * no partial file in out_dir, and returns -1 when the package is at fault, or
 * HEARTH_IMAGE_HOST_FAULT with errno set when the host is (writing out_dir
 * failed: ENOSPC, EDQUOT, EIO...; or the agent binary is unreadable).
 */
#define HEARTH_IMAGE_HOST_FAULT (-2)
int hearth_image_build(const struct hearth_image_opts *opts, struct hearth_image *img, char *err,
		       size_t errlen);

/*
 * Reads and parses the manifest of a package (directory or .tar.gz) without
 * building an image. Returns 0, or -1 with a message in err.
 */
int hearth_package_manifest(const char *package, struct hearth_manifest *m, char *err,
			    size_t errlen);

#endif
