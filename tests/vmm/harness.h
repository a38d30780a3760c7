/*
 * harness.h - runs hearth-vmm as a child process for the vmm tests and the
 * benchmark: console and stderr captured to files in a per-test temp dir,
 * a hard timeout (the child is killed and the test fails, never hangs).
 */
#ifndef HEARTH_TEST_VMM_HARNESS_H
#define HEARTH_TEST_VMM_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct vmm_run {
	pid_t pid;
	char dir[256];      /* private temp dir for this run */
	char console[300];  /* console file */
	char errlog[300];   /* stderr file */
	int status;         /* exit code, or 128+signal, or -1 on timeout */
};

/* Creates a fresh temp dir (removed by vmm_run_cleanup). */
void vmm_run_init(struct vmm_run *r, const char *tag);
/* Path of a built test guest ("hello.elf"). */
const char *guest_path(const char *name);
const char *vmm_bin(void);
/*
 * Starts hearth-vmm with --console <dir>/console plus argv (NULL-terminated).
 * Returns 0 or -1.
 */
int vmm_spawn(struct vmm_run *r, const char *const *argv);
/* Waits up to timeout_ms; returns the exit code (or -1 after killing it on timeout). */
int vmm_wait(struct vmm_run *r, int timeout_ms);
/* Has it exited (without waiting)? If so, r->status holds its exit code. */
bool vmm_exited(struct vmm_run *r);
/* spawn + wait. */
int vmm_run_sync(struct vmm_run *r, const char *const *argv, int timeout_ms);
/* malloc'ed, NUL-terminated file contents ("" if missing). */
char *slurp(const char *path, size_t *len);
/* Polls until the file contains needle or timeout; returns true if found. */
bool wait_for_text(const char *path, const char *needle, int timeout_ms);
void vmm_run_cleanup(struct vmm_run *r);
/*
 * cmocka teardown: kills and cleans up every run still registered (a failed
 * assertion longjmps past the test's own cleanup; no VM may outlive its test).
 */
int vmm_teardown(void **state);
long long now_us(void);
/*
 * Sends one command to a hearth-vmm control socket (retrying the connect
 * for up to 10 s while it does not exist yet) and returns the reply line
 * (static buffer), or NULL when the socket cannot be reached.
 */
const char *vmm_ctl(const char *path, const char *cmd);

#endif
