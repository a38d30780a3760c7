/* fileref.c - see fileref.h. */
#include "fileref.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
	char *name;
	int fd;
} refs[FREF_MAX];

int fref_register(const char *name, int fd)
{
	for (int i = 0; i < FREF_MAX; i++)
		if (refs[i].name && strcmp(refs[i].name, name) == 0) {
			close(refs[i].fd);
			refs[i].fd = fd;
			return 0;
		}
	for (int i = 0; i < FREF_MAX; i++)
		if (!refs[i].name) {
			refs[i].name = strdup(name);
			if (!refs[i].name)
				return -1;
			refs[i].fd = fd;
			return 0;
		}
	return -1;
}

void fref_forget(const char *prefix)
{
	size_t n = strlen(prefix);
	for (int i = 0; i < FREF_MAX; i++)
		if (refs[i].name && strncmp(refs[i].name, prefix, n) == 0) {
			close(refs[i].fd);
			free(refs[i].name);
			refs[i].name = NULL;
			refs[i].fd = -1;
		}
}

int fref_lookup(const char *name)
{
	for (int i = 0; i < FREF_MAX; i++)
		if (refs[i].name && strcmp(refs[i].name, name) == 0)
			return refs[i].fd;
	return -1;
}

int fref_open(const char *path, int flags, unsigned mode)
{
	int fd = fref_lookup(path);
	if (fd < 0)
		return open(path, flags, mode);
	if (flags & (O_CREAT | O_TRUNC)) {
		errno = EINVAL;
		return -1;
	}
	int d = fcntl(fd, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
	if (d >= 0 && lseek(d, 0, SEEK_SET) < 0 && errno != ESPIPE) {
		int e = errno;
		close(d);
		errno = e;
		return -1;
	}
	return d;
}

int fref_create(const char *path, unsigned mode, char *tmp, size_t tmplen)
{
	int fd = fref_lookup(path);
	if (fd < 0) {
		snprintf(tmp, tmplen, "%s.tmp.%d", path, (int)getpid());
		return open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	}
	snprintf(tmp, tmplen, "%s", path);
	int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (d >= 0 && (ftruncate(d, 0) < 0 || lseek(d, 0, SEEK_SET) < 0)) {
		int e = errno;
		close(d);
		errno = e;
		return -1;
	}
	return d;
}

int fref_commit(int fd, const char *path, const char *tmp)
{
	bool passed = strcmp(tmp, path) == 0;
	if (fsync(fd) < 0) {
		fref_abandon(fd, path, tmp);
		return -1;
	}
	if (close(fd) < 0 || (!passed && rename(tmp, path) < 0)) {
		int e = errno;
		if (!passed)
			unlink(tmp);
		errno = e;
		return -1;
	}
	return 0;
}

void fref_abandon(int fd, const char *path, const char *tmp)
{
	int e = errno;
	if (fd >= 0)
		close(fd);
	if (strcmp(tmp, path) != 0)
		unlink(tmp);
	errno = e;
}

int fref_fds(int *out, int max)
{
	int n = 0;
	for (int i = 0; i < FREF_MAX && n < max; i++)
		if (refs[i].name)
			out[n++] = refs[i].fd;
	return n;
}
