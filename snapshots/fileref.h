/*
 * fileref.h - names that stand for files opened elsewhere.
 *
 * A jailed hearth-vmm (host/vmm/jail.h) cannot open host paths: its root is
 * an empty tmpfs and it runs as an unprivileged uid. The files it needs are
 * opened for it instead, before it drops its privileges (the files named on
 * its command line) or by hearthd, which passes them over the control socket
 * (SCM_RIGHTS) with the command that names them "@0", "@1", ... Every place
 * that opens a snapshot, memory, kernel or working-set file goes through
 * fref_open(), so the same code serves paths and passed files.
 *
 * Reading a registered name gives a dup() rewound to offset 0; writing one
 * (fref_lookup) writes into the passed file directly, without the usual
 * temporary name and rename, which the sender does on its side.
 * Single-threaded: the main thread registers and uses names.
 */
#ifndef HEARTH_FILEREF_H
#define HEARTH_FILEREF_H

#include <stdbool.h>
#include <stddef.h>

#define FREF_MAX 16

/* Makes name stand for fd (taken over; closed by fref_forget). 0, or -1 when full. */
int fref_register(const char *name, int fd);
/* Forgets every name starting with prefix ("" for all) and closes their fds. */
void fref_forget(const char *prefix);
/* The fd registered under name (still owned by the table), or -1. */
int fref_lookup(const char *name);
/* open(2), or for a registered name a dup of its fd at offset 0 (flags must not create). */
int fref_open(const char *path, int flags, unsigned mode);
/*
 * Writers that replace a file whole (snapshot memory and state, working
 * sets): fref_create() gives the fd to write into: for a passed name a dup of
 * its fd, emptied and at offset 0 (tmp = path); else a new file path.tmp.PID
 * with mode (tmp = that name). -1 with errno on failure. Once written,
 * fref_commit() fsyncs and closes it and renames tmp to path (a passed file
 * is its sender's to rename); fref_abandon() closes it and removes tmp. Both
 * take the fd and leave errno set on failure.
 */
int fref_create(const char *path, unsigned mode, char *tmp, size_t tmplen);
int fref_commit(int fd, const char *path, const char *tmp);
void fref_abandon(int fd, const char *path, const char *tmp);

/* The registered fds (up to max), for a caller that closes every other fd. */
int fref_fds(int *out, int max);

#endif
