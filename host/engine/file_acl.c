/* file_acl.c - per-uid POSIX ACL grants with a crash record (see file_acl.h). */
#include "file_acl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acl.h>
#include <acl/libacl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The ACL_USER entry of uid in a, or NULL. */
static acl_entry_t find_user(acl_t a, uid_t uid)
{
	acl_entry_t ent;
	int w = ACL_FIRST_ENTRY;

	while (acl_get_entry(a, w, &ent) == 1) {
		acl_tag_t tag;

		w = ACL_NEXT_ENTRY;
		if (acl_get_tag_type(ent, &tag) == 0 && tag == ACL_USER) {
			uid_t *q = acl_get_qualifier(ent);
			bool match = q && *q == uid;

			acl_free(q);
			if (match)
				return ent;
		}
	}
	return NULL;
}

/* Named entries (ACL_USER, ACL_GROUP) left in a; with none, the mask can go. */
static int count_tag(acl_t a, acl_tag_t want)
{
	acl_entry_t ent;
	int w = ACL_FIRST_ENTRY, n = 0;

	while (acl_get_entry(a, w, &ent) == 1) {
		acl_tag_t tag;

		w = ACL_NEXT_ENTRY;
		if (acl_get_tag_type(ent, &tag) == 0 && tag == want)
			n++;
	}
	return n;
}

static int set_perms(acl_entry_t ent, unsigned perms)
{
	acl_permset_t ps;

	if (acl_get_permset(ent, &ps) < 0 || acl_clear_perms(ps) < 0)
		return -1;
	if ((perms & FILE_ACL_R) && acl_add_perm(ps, ACL_READ) < 0)
		return -1;
	if ((perms & FILE_ACL_W) && acl_add_perm(ps, ACL_WRITE) < 0)
		return -1;
	if ((perms & FILE_ACL_X) && acl_add_perm(ps, ACL_EXECUTE) < 0)
		return -1;
	return acl_set_permset(ent, ps);
}

/*
 * Sets uid's entry on path to perms, or deletes it (perms 0), under an
 * exclusive flock on the file: the ACL is read, changed and written whole.
 */
static int acl_edit(const char *path, uid_t uid, unsigned perms)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK), rc = 0;
	acl_t a = NULL;
	acl_entry_t ent;

	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX) < 0 || !(a = acl_get_fd(fd))) {
		rc = -errno;
		goto out;
	}
	ent = find_user(a, uid);
	if (perms) {
		if (!ent && (acl_create_entry(&a, &ent) < 0 || acl_set_tag_type(ent, ACL_USER) < 0 ||
			     acl_set_qualifier(ent, &uid) < 0)) {
			rc = -errno;
			goto out;
		}
		if (set_perms(ent, perms) < 0) {
			rc = -errno;
			goto out;
		}
	} else if (!ent) {
		goto out; /* nothing of ours */
	} else if (acl_delete_entry(a, ent) < 0) {
		rc = -errno;
		goto out;
	}
	if (count_tag(a, ACL_USER) + count_tag(a, ACL_GROUP) > 0) {
		if (acl_calc_mask(&a) < 0) {
			rc = -errno;
			goto out;
		}
	} else {
		/* Back to a minimal ACL: the kernel then keeps only the mode bits. */
		int w = ACL_FIRST_ENTRY;

		while (acl_get_entry(a, w, &ent) == 1) {
			acl_tag_t tag;

			w = ACL_NEXT_ENTRY;
			if (acl_get_tag_type(ent, &tag) == 0 && tag == ACL_MASK) {
				acl_delete_entry(a, ent);
				break;
			}
		}
	}
	if (acl_set_fd(fd, a) < 0)
		rc = -errno;
out:
	if (a)
		acl_free(a);
	close(fd); /* drops the lock */
	return rc;
}

int file_acl_supported(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
	acl_t a;

	if (fd < 0)
		return -errno;
	/* Writing back the ACL it has is a no-op that fails where ACLs are not stored. */
	a = acl_get_fd(fd);
	if (!a || acl_set_fd(fd, a) < 0)
		rc = errno == EOPNOTSUPP ? -ENOTSUP : -errno;
	if (a)
		acl_free(a);
	close(fd);
	return rc;
}

int file_acl_begin(struct file_acl_set *s, uint32_t uid, const char *record)
{
	int fd;

	memset(s, 0, sizeof(*s));
	s->uid = uid;
	if (!(s->record_path = strdup(record)))
		return -ENOMEM;
	fd = open(record, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || !(s->record = fdopen(fd, "w"))) {
		int e = errno;

		if (fd >= 0) {
			close(fd);
			unlink(record);
		}
		free(s->record_path);
		s->record_path = NULL;
		return -e;
	}
	fprintf(s->record, "uid %u\n", uid);
	return fflush(s->record) == 0 ? 0 : -errno;
}

int file_acl_grant(struct file_acl_set *s, const char *path, unsigned perms)
{
	bool known = false;

	if (path[0] != '/' || strchr(path, '\n'))
		return -EINVAL;
	for (int i = 0; i < s->n; i++)
		known = known || !strcmp(s->paths[i], path);
	if (!known) {
		if (s->n == FILE_ACL_MAX)
			return -E2BIG;
		if (!(s->paths[s->n] = strdup(path)))
			return -ENOMEM;
		s->n++;
		/* Recorded before it exists: a crash in between only makes a revoke find nothing. */
		if (fprintf(s->record, "%s\n", path) < 0 || fflush(s->record) != 0)
			return -EIO;
	}
	return acl_edit(path, (uid_t)s->uid, perms);
}

int file_acl_grant_path_to(struct file_acl_set *s, const char *dir)
{
	char real[PATH_MAX], *slash;
	struct stat st;
	int rc;

	if (!realpath(dir, real))
		return -errno;
	/* Every ancestor of dir, top down, excluding dir itself. */
	for (slash = strchr(real + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (stat(real, &st) < 0)
			return -errno;
		if (!(st.st_mode & S_IXOTH) && (rc = file_acl_grant(s, real, FILE_ACL_X)) < 0)
			return rc;
		*slash = '/';
	}
	return 0;
}

int file_acl_revoke_all(struct file_acl_set *s)
{
	int rc = 0;

	for (int i = s->n - 1; i >= 0; i--) {
		int r = acl_edit(s->paths[i], (uid_t)s->uid, 0);

		if (r < 0 && r != -ENOENT && rc == 0)
			rc = r;
		free(s->paths[i]);
	}
	if (s->record)
		fclose(s->record);
	if (s->record_path)
		unlink(s->record_path);
	free(s->record_path);
	memset(s, 0, sizeof(*s));
	return rc;
}

int file_acl_revoke_record(const char *record, uint32_t uid_min, uint32_t uid_max)
{
	int fd = open(record, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), rc = 0;
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
	char line[PATH_MAX + 2];
	unsigned uid;

	if (!f) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		return rc;
	}
	if (!fgets(line, sizeof(line), f) || sscanf(line, "uid %u", &uid) != 1 || uid < uid_min ||
	    uid >= uid_max) {
		fclose(f);
		return -EINVAL;
	}
	while (fgets(line, sizeof(line), f)) {
		int r;

		line[strcspn(line, "\n")] = '\0';
		if (line[0] != '/')
			continue;
		r = acl_edit(line, (uid_t)uid, 0);
		if (r < 0 && r != -ENOENT && rc == 0)
			rc = r;
	}
	fclose(f);
	unlink(record);
	return rc;
}

int file_acl_get(const char *path, uint32_t uid)
{
	acl_t a = acl_get_file(path, ACL_TYPE_ACCESS);
	acl_entry_t ent;
	acl_permset_t ps;
	int perms = -ENOENT;

	if (!a)
		return -errno;
	ent = find_user(a, (uid_t)uid);
	if (ent && acl_get_permset(ent, &ps) == 0)
		perms = (acl_get_perm(ps, ACL_READ) == 1 ? FILE_ACL_R : 0) |
			(acl_get_perm(ps, ACL_WRITE) == 1 ? FILE_ACL_W : 0) |
			(acl_get_perm(ps, ACL_EXECUTE) == 1 ? FILE_ACL_X : 0);
	acl_free(a);
	return perms;
}

int file_acl_users(const char *path)
{
	acl_t a = acl_get_file(path, ACL_TYPE_ACCESS);
	int n;

	if (!a)
		return -errno;
	n = count_tag(a, ACL_USER);
	acl_free(a);
	return n;
}
