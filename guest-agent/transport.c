/*
 * transport.c - listeners for hearth-agent; see transport.h.
 */
#include "transport.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

int transport_find_serial(const char *name, char *out, size_t outlen)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *de;
	int rc = -ENOENT;

	if (!d)
		return rc;
	while ((de = readdir(d))) {
		char path[512], buf[128] = "";
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f))
			buf[strcspn(buf, "\n")] = 0;
		fclose(f);
		if (strcmp(buf, name) == 0) {
			snprintf(out, outlen, "/dev/%s", de->d_name);
			rc = 0;
			break;
		}
	}
	closedir(d);
	return rc;
}

int transport_open(struct transport *t)
{
	int fd;

	t->listen_fd = -1;
	if (t->kind == TRANSPORT_SERIAL)
		return access(t->path, R_OK | W_OK) == 0 ? 0 : -errno;
	if (t->kind == TRANSPORT_UNIX) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };

		if (strlen(t->path) >= sizeof(sa.sun_path))
			return -ENAMETOOLONG;
		strcpy(sa.sun_path, t->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -errno;
		unlink(t->path);
		/* Only the host user may talk to the agent. */
		mode_t old = umask(0077);
		int b = bind(fd, (struct sockaddr *)&sa, sizeof(sa));

		umask(old);
		if (b < 0 || listen(fd, 8) < 0) {
			int e = errno;

			close(fd);
			return -e;
		}
	} else {
		struct sockaddr_vm sa = {
			.svm_family = AF_VSOCK,
			.svm_cid = VMADDR_CID_ANY,
			.svm_port = t->port,
		};

		fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return -errno;
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
			int e = errno;

			close(fd);
			return -e;
		}
	}
	t->listen_fd = fd;
	return 0;
}

int transport_accept(struct transport *t)
{
	int fd;

	if (t->kind == TRANSPORT_SERIAL) {
		fd = open(t->path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		return fd < 0 ? -errno : fd;
	}
	fd = accept4(t->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

void transport_close(struct transport *t)
{
	if (t->listen_fd >= 0)
		close(t->listen_fd);
	t->listen_fd = -1;
	if (t->kind == TRANSPORT_UNIX)
		unlink(t->path);
}
