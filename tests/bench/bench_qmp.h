/*
 * bench_qmp.h - a minimal QMP client for the benchmarks that drive QEMU
 * (bench_vmm_qemu.c, bench_lab.c): connect to QEMU's `-qmp unix:PATH,server=on,
 * wait=off` socket as soon as it exists, negotiate capabilities, send one
 * command at a time and take its "return" member, skipping events. QMP replies
 * are JSON lines, parsed with jansson. Times are deadlines in now_us() terms.
 */
#ifndef HEARTH_BENCH_QMP_H
#define HEARTH_BENCH_QMP_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

struct qmp {
	int fd;
	char buf[65536];
	size_t len;
};

/* Connects (polling every 100 us while QEMU `pid` lives). Returns 0 or -1. */
int qmp_connect(struct qmp *q, const char *path, pid_t pid, long long deadline);
/* The next JSON line from QEMU, parsed; NULL on timeout, EOF or bad JSON. */
json_t *qmp_read(struct qmp *q, long long deadline);
/* Sends one command; returns its "return" member (a new reference), or NULL with err set. */
json_t *qmp_cmd(struct qmp *q, const char *cmd, long long deadline, char *err, size_t errlen);
/* qmp_connect + greeting + qmp_capabilities. Returns 0 or -1 (err set). */
int qmp_open(struct qmp *q, const char *path, pid_t pid, long long deadline, char *err,
	     size_t errlen);
void qmp_close(struct qmp *q);

#endif
