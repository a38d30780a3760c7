/*
 * image.c - function package -> deterministic, content-addressed initramfs.
 *
 * The package is first collected into a flat list of entries (paths relative
 * to the image root), validated, sorted, and only then written. Files from a
 * directory package are streamed from disk at write time; files from a
 * tarball are held in memory (bounded by max_package) because a tar stream
 * cannot be revisited in sorted order.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "image.h"
#include "image_priv.h"

#define MAX_ENTRIES 20000
#define MAX_DEPTH 64
#define MAX_MANIFEST (64 * 1024)
#define MAX_REL_PATH 3072

enum src_kind { SRC_NONE, SRC_FILE, SRC_MEM };

struct ent {
	char *path;       /* relative to the image root, no leading '/' */
	mode_t type;      /* S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR */
	mode_t perm;
	uint64_t size;
	enum src_kind src;
	char *host_path;  /* SRC_FILE */
	uint8_t *data;    /* SRC_MEM */
	char *link;       /* S_IFLNK target */
	unsigned rmajor, rminor;
};

struct ents {
	struct ent *v;
	size_t n, cap;
	uint64_t bytes;     /* package file bytes so far */
	uint64_t max_bytes;
	/*
	 * Path -> index + 1 (0 = empty), open addressing, at most half full.
	 * Every entry added looks up its path and each ancestor's, so a linear
	 * search made a 20,000-entry package (a 124 KiB upload) cost seconds of
	 * CPU in hearthd's request thread. NULL after write_cpio() sorts v.
	 */
	uint32_t *slot;
	size_t nslots;
};


static size_t path_hash(const char *p)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	while (*p)
		h = (h ^ (uint8_t)*p++) * 1099511628211ull;
	return (size_t)h;
}

static void slot_put(struct ents *e, size_t i)
{
	size_t k = path_hash(e->v[i].path) & (e->nslots - 1);

	/* An equal path takes the newer index: lookups find the last added, as before. */
	while (e->slot[k] && strcmp(e->v[e->slot[k] - 1].path, e->v[i].path))
		k = (k + 1) & (e->nslots - 1);
	e->slot[k] = (uint32_t)i + 1;
}

/* Makes room for one more entry in the index; -1 on ENOMEM. */
static int slots_reserve(struct ents *e)
{
	size_t want = e->nslots ? e->nslots : 256;
	uint32_t *s;

	while ((e->n + 1) * 2 > want)
		want *= 2;
	if (want == e->nslots)
		return 0;
	s = calloc(want, sizeof(*s));
	if (!s)
		return -1;
	free(e->slot);
	e->slot = s;
	e->nslots = want;
	for (size_t i = 0; i < e->n; i++)
		slot_put(e, i);
	return 0;
}

static void ents_free(struct ents *e)
{
	for (size_t i = 0; i < e->n; i++) {
		free(e->v[i].path);
		free(e->v[i].host_path);
		free(e->v[i].data);
		free(e->v[i].link);
	}
	free(e->v);
	free(e->slot);
	memset(e, 0, sizeof(*e));
}

static struct ent *ents_find(struct ents *e, const char *path)
{
	if (e->slot) {
		for (size_t k = path_hash(path) & (e->nslots - 1); e->slot[k];
		     k = (k + 1) & (e->nslots - 1))
			if (!strcmp(e->v[e->slot[k] - 1].path, path))
				return &e->v[e->slot[k] - 1];
		return NULL;
	}
	for (size_t i = e->n; i-- > 0;)
		if (!strcmp(e->v[i].path, path))
			return &e->v[i];
	return NULL;
}

/* Takes ownership of nothing; copies path. Returns the new entry or NULL. */
static struct ent *ents_add(struct ents *e, const char *path, mode_t type, mode_t perm,
			    char *err, size_t errlen)
{
	struct ent *x;

	if (e->n >= MAX_ENTRIES) {
		seterr(err, errlen, "package has more than %d entries", MAX_ENTRIES);
		return NULL;
	}
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		struct ent *v = realloc(e->v, cap * sizeof(*v));

		if (!v) {
			seterr(err, errlen, "out of memory");
			return NULL;
		}
		e->v = v;
		e->cap = cap;
	}
	if (slots_reserve(e)) {
		seterr(err, errlen, "out of memory");
		return NULL;
	}
	x = &e->v[e->n];
	memset(x, 0, sizeof(*x));
	x->path = strdup(path);
	if (!x->path) {
		seterr(err, errlen, "out of memory");
		return NULL;
	}
	x->type = type;
	/* Normalised modes keep the image independent of the builder's umask. */
	if (type == S_IFDIR)
		x->perm = 0755;
	else if (type == S_IFREG)
		x->perm = (perm & 0111) ? 0755 : 0644;
	else if (type == S_IFLNK)
		x->perm = 0777;
	else
		x->perm = perm & 0777;
	slot_put(e, e->n);
	e->n++;
	return x;
}

/* Adds path's missing ancestors as directories ("a/b/c" -> "a", "a/b"). */
static int ents_add_parents(struct ents *e, const char *path, char *err, size_t errlen)
{
	char buf[MAX_REL_PATH + 1];
	size_t len = strlen(path);

	if (len > MAX_REL_PATH) {
		seterr(err, errlen, "path too long: %.64s...", path);
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i < len; i++) {
		struct ent *x;

		if (buf[i] != '/')
			continue;
		buf[i] = '\0';
		x = ents_find(e, buf);
		if (x && x->type != S_IFDIR) {
			seterr(err, errlen, "'%s' is used both as a file and as a directory", buf);
			return -1;
		}
		if (!x && !ents_add(e, buf, S_IFDIR, 0755, err, errlen))
			return -1;
		buf[i] = '/';
	}
	return 0;
}

/* Adds a non-directory entry; a second entry with the same path is an error. */
static struct ent *ents_add_leaf(struct ents *e, const char *path, mode_t type, mode_t perm,
				 char *err, size_t errlen)
{
	if (ents_add_parents(e, path, err, errlen))
		return NULL;
	if (ents_find(e, path)) {
		seterr(err, errlen, "duplicate entry '%s' in the image", path);
		return NULL;
	}
	return ents_add(e, path, type, perm, err, errlen);
}

static int ents_add_dir(struct ents *e, const char *path, char *err, size_t errlen)
{
	struct ent *x;

	if (ents_add_parents(e, path, err, errlen))
		return -1;
	x = ents_find(e, path);
	if (x) {
		if (x->type == S_IFDIR)
			return 0;
		seterr(err, errlen, "'%s' is used both as a file and as a directory", path);
		return -1;
	}
	return ents_add(e, path, S_IFDIR, 0755, err, errlen) ? 0 : -1;
}

static int ents_add_host_file(struct ents *e, const char *path, const char *host, char *err,
			      size_t errlen)
{
	struct stat st;
	struct ent *x;

	if (stat(host, &st) < 0) {
		seterr(err, errlen, "%s: %s", host, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		seterr(err, errlen, "%s: not a regular file", host);
		return -1;
	}
	x = ents_add_leaf(e, path, S_IFREG, st.st_mode, err, errlen);
	if (!x)
		return -1;
	x->size = (uint64_t)st.st_size;
	x->src = SRC_FILE;
	x->host_path = strdup(host);
	if (!x->host_path) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int charge(struct ents *e, uint64_t n, char *err, size_t errlen)
{
	if (n > e->max_bytes || e->bytes + n > e->max_bytes) {
		seterr(err, errlen, "package exceeds the size limit of %llu bytes",
		       (unsigned long long)e->max_bytes);
		return -1;
	}
	e->bytes += n;
	return 0;
}

/* --- directory packages --- */

static int walk_dir(struct ents *e, const char *host, const char *rel, int depth, char *err,
		    size_t errlen)
{
	DIR *d;
	struct dirent *de;
	int rc = 0;

	if (depth > MAX_DEPTH) {
		seterr(err, errlen, "package nests deeper than %d directories", MAX_DEPTH);
		return -1;
	}
	d = opendir(host);
	if (!d) {
		seterr(err, errlen, "%s: %s", host, strerror(errno));
		return -1;
	}
	while (rc == 0 && (errno = 0, de = readdir(d))) {
		char *hp = NULL, *rp = NULL;
		struct stat st;
		struct ent *x;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (asprintf(&hp, "%s/%s", host, de->d_name) < 0) {
			hp = NULL;
			goto oom;
		}
		if (asprintf(&rp, "%s/%s", rel, de->d_name) < 0) {
			rp = NULL;
			goto oom;
		}
		if (strlen(rp) > MAX_REL_PATH) {
			seterr(err, errlen, "path too long in package: %.64s...", rp);
			rc = -1;
			goto next;
		}
		if (lstat(hp, &st) < 0) {
			seterr(err, errlen, "%s: %s", hp, strerror(errno));
			rc = -1;
		} else if (S_ISDIR(st.st_mode)) {
			rc = ents_add_dir(e, rp, err, errlen);
			if (!rc)
				rc = walk_dir(e, hp, rp, depth + 1, err, errlen);
		} else if (S_ISREG(st.st_mode)) {
			if (charge(e, (uint64_t)st.st_size, err, errlen) ||
			    !(x = ents_add_leaf(e, rp, S_IFREG, st.st_mode, err, errlen))) {
				rc = -1;
			} else {
				x->size = (uint64_t)st.st_size;
				x->src = SRC_FILE;
				x->host_path = hp;
				hp = NULL;
			}
		} else if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlink(hp, target, sizeof(target) - 1);

			if (n < 0) {
				seterr(err, errlen, "%s: readlink: %s", hp, strerror(errno));
				rc = -1;
			} else if (!(x = ents_add_leaf(e, rp, S_IFLNK, 0777, err, errlen))) {
				rc = -1;
			} else {
				target[n] = '\0';
				x->link = strdup(target);
				if (!x->link)
					goto oom;
			}
		} else {
			seterr(err, errlen, "%s: unsupported file type (only files, directories and symlinks)",
			       hp);
			rc = -1;
		}
		goto next;
oom:
		seterr(err, errlen, "out of memory");
		rc = -1;
next:
		free(hp);
		free(rp);
	}
	if (rc == 0 && errno) {
		seterr(err, errlen, "%s: readdir: %s", host, strerror(errno));
		rc = -1;
	}
	closedir(d);
	return rc;
}

/* --- tarball packages --- */

/*
 * Maps a tar member name to "var/task/<name>", refusing names that would
 * escape the package. Returns 0 and leaves *out NULL for the root itself.
 */
static int tar_member_path(const char *name, char **out, char *err, size_t errlen)
{
	char *clean = NULL;
	size_t used = 0, len = strlen(name);

	*out = NULL;
	if (name[0] == '/') {
		seterr(err, errlen, "tar member '%s' has an absolute path", name);
		return -1;
	}
	if (len > MAX_REL_PATH) {
		seterr(err, errlen, "tar member name too long: %.64s...", name);
		return -1;
	}
	clean = malloc(len + 1);
	if (!clean) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	for (const char *s = name; *s;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);

		if (n == 2 && s[0] == '.' && s[1] == '.') {
			seterr(err, errlen, "tar member '%s' contains '..'", name);
			free(clean);
			return -1;
		}
		if (n && !(n == 1 && s[0] == '.')) {
			if (used)
				clean[used++] = '/';
			memcpy(clean + used, s, n);
			used += n;
		}
		s += n;
		while (*s == '/')
			s++;
	}
	clean[used] = '\0';
	if (used && asprintf(out, "%s/%s", HEARTH_TASK_DIR + 1, clean) < 0) {
		*out = NULL;
		seterr(err, errlen, "out of memory");
		free(clean);
		return -1;
	}
	free(clean);
	return 0;
}

static int read_tar(struct ents *e, const char *file, char *err, size_t errlen)
{
	struct archive *a = archive_read_new();
	struct archive_entry *ae;
	int r, rc = -1;

	if (!a) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_none(a);
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, file, 64 * 1024) != ARCHIVE_OK) {
		seterr(err, errlen, "%s: %s", file, archive_error_string(a));
		goto out;
	}
	while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
		const char *name = archive_entry_pathname(ae);
		mode_t type = archive_entry_filetype(ae);
		char *path = NULL;
		struct ent *x;

		if (!name) {
			seterr(err, errlen, "%s: tar member without a name", file);
			goto out;
		}
		if (archive_entry_hardlink(ae)) {
			seterr(err, errlen, "tar member '%s' is a hard link (not supported)", name);
			goto out;
		}
		if (tar_member_path(name, &path, err, errlen))
			goto out;
		if (!path) {
			if (type != AE_IFDIR) {
				seterr(err, errlen, "tar member '%s' names the package root", name);
				goto out;
			}
			continue;
		}
		if (type == AE_IFDIR) {
			r = ents_add_dir(e, path, err, errlen);
			free(path);
			if (r)
				goto out;
			continue;
		}
		if (type == AE_IFLNK) {
			const char *t = archive_entry_symlink(ae);

			x = t ? ents_add_leaf(e, path, S_IFLNK, 0777, err, errlen) : NULL;
			free(path);
			if (!t)
				seterr(err, errlen, "tar member '%s': symlink without a target", name);
			if (!x)
				goto out;
			x->link = strdup(t);
			if (!x->link) {
				seterr(err, errlen, "out of memory");
				goto out;
			}
			continue;
		}
		if (type != AE_IFREG) {
			seterr(err, errlen,
			       "tar member '%s': unsupported type (only files, directories and symlinks)",
			       name);
			free(path);
			goto out;
		}
		x = ents_add_leaf(e, path, S_IFREG, archive_entry_perm(ae), err, errlen);
		free(path);
		if (!x)
			goto out;
		/* Read in chunks and charge as we go: the header's size may lie. */
		{
			size_t cap = 0;
			uint8_t buf[64 * 1024];
			la_ssize_t n;

			while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
				if (charge(e, (uint64_t)n, err, errlen))
					goto out;
				if (x->size + (uint64_t)n > cap) {
					size_t ncap = cap ? cap * 2 : 64 * 1024;
					uint8_t *d;

					while (ncap < x->size + (uint64_t)n)
						ncap *= 2;
					d = realloc(x->data, ncap);
					if (!d) {
						seterr(err, errlen, "out of memory");
						goto out;
					}
					x->data = d;
					cap = ncap;
				}
				memcpy(x->data + x->size, buf, (size_t)n);
				x->size += (uint64_t)n;
			}
			if (n < 0) {
				seterr(err, errlen, "%s: member '%s': %s", file, name,
				       archive_error_string(a));
				goto out;
			}
			x->src = SRC_MEM;
		}
	}
	if (r != ARCHIVE_EOF) {
		seterr(err, errlen, "%s: %s", file, archive_error_string(a));
		goto out;
	}
	rc = 0;
out:
	archive_read_free(a);
	return rc;
}

static int collect_package(struct ents *e, const char *package, char *err, size_t errlen)
{
	struct stat st;

	if (stat(package, &st) < 0) {
		seterr(err, errlen, "package %s: %s", package, strerror(errno));
		return -1;
	}
	if (ents_add_dir(e, HEARTH_TASK_DIR + 1, err, errlen))
		return -1;
	if (S_ISDIR(st.st_mode))
		return walk_dir(e, package, HEARTH_TASK_DIR + 1, 0, err, errlen);
	if (S_ISREG(st.st_mode))
		return read_tar(e, package, err, errlen);
	seterr(err, errlen, "package %s: neither a directory nor a tar.gz file", package);
	return -1;
}

/* Reads up to max bytes of a file entry's content (for the manifest and shebang checks). */
static int ent_read(const struct ent *x, size_t max, char **out, size_t *len, char *err,
		    size_t errlen)
{
	size_t n = x->size < max ? (size_t)x->size : max;
	char *buf = malloc(n + 1);

	if (!buf) {
		seterr(err, errlen, "out of memory");
		return -1;
	}
	if (x->src == SRC_MEM) {
		if (n)
			memcpy(buf, x->data, n);
	} else {
		int fd = open(x->host_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		ssize_t got = fd < 0 ? -1 : pread(fd, buf, n, 0);

		if (fd >= 0)
			close(fd);
		if (got < 0) {
			seterr(err, errlen, "%s: %s", x->host_path, strerror(errno));
			free(buf);
			return -1;
		}
		n = (size_t)got;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

static int load_manifest(struct ents *e, struct hearth_manifest *m, char *err, size_t errlen)
{
	char path[64], *text;
	size_t len;
	struct ent *x;
	int rc;

	snprintf(path, sizeof(path), "%s/%s", HEARTH_TASK_DIR + 1, HEARTH_MANIFEST_NAME);
	x = ents_find(e, path);
	if (!x || x->type != S_IFREG) {
		seterr(err, errlen, "package has no %s at its root", HEARTH_MANIFEST_NAME);
		return -1;
	}
	if (x->size > MAX_MANIFEST) {
		seterr(err, errlen, "%s is larger than %d bytes", HEARTH_MANIFEST_NAME,
		       MAX_MANIFEST);
		return -1;
	}
	if (ent_read(x, MAX_MANIFEST, &text, &len, err, errlen))
		return -1;
	snprintf(path, sizeof(path), "%s/bootstrap", HEARTH_TASK_DIR + 1);
	x = ents_find(e, path);
	rc = hearth_manifest_parse_pkg(text, len, x && x->type == S_IFREG, m, err, errlen);
	free(text);
	return rc;
}

/* The handler must be an executable file in the image, and its interpreter too. */
static int check_executable(struct ents *e, const char *field, const char *guest, char *err,
			    size_t errlen)
{
	struct ent *x = ents_find(e, guest + 1);
	char *head, *interp, *end;
	size_t len;

	if (!x) {
		seterr(err, errlen, "%s %s is not in the image", field, guest);
		return -1;
	}
	if (x->type != S_IFREG) {
		seterr(err, errlen, "%s %s is not a regular file", field, guest);
		return -1;
	}
	if (!(x->perm & 0100)) {
		seterr(err, errlen, "%s %s is not executable (chmod +x it)", field, guest);
		return -1;
	}
	if (ent_read(x, 256, &head, &len, err, errlen))
		return -1;
	if (len < 2 || head[0] != '#' || head[1] != '!') {
		free(head);
		return 0;
	}
	interp = head + 2;
	while (*interp == ' ' || *interp == '\t')
		interp++;
	end = interp + strcspn(interp, " \t\r\n");
	*end = '\0';
	if (interp[0] != '/' || !ents_find(e, interp + 1)) {
		seterr(err, errlen, "%s %s needs interpreter '%s', which is not in the image%s",
		       field, guest, interp,
		       !strcmp(interp, "/bin/sh") ? " (set \"shell\": true in the manifest)" : "");
		free(head);
		return -1;
	}
	free(head);
	return 0;
}

/* --- writing --- */

struct sink {
	int fd;
	EVP_MD_CTX *md;
	uint64_t bytes;
	int err;
};

static la_ssize_t sink_write(struct archive *a, void *opaque, const void *buf, size_t len)
{
	struct sink *s = opaque;
	const uint8_t *p = buf;
	size_t left = len;

	while (left) {
		ssize_t n = write(s->fd, p, left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			s->err = errno;
			archive_set_error(a, errno, "write: %s", strerror(errno));
			return -1;
		}
		p += n;
		left -= (size_t)n;
	}
	if (EVP_DigestUpdate(s->md, buf, len) != 1) {
		archive_set_error(a, EIO, "EVP_DigestUpdate failed");
		return -1;
	}
	s->bytes += len;
	return (la_ssize_t)len;
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ent *)a)->path, ((const struct ent *)b)->path);
}

static int write_entry_data(struct archive *a, const struct ent *x, char *err, size_t errlen)
{
	uint8_t buf[64 * 1024];
	uint64_t left = x->size;
	struct stat st;
	int fd;

	if (x->src == SRC_MEM) {
		if (x->size && archive_write_data(a, x->data, (size_t)x->size) != (la_ssize_t)x->size)
			goto aerr;
		return 0;
	}
	fd = open(x->host_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		seterr(err, errlen, "%s: %s", x->host_path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != x->size) {
		seterr(err, errlen, "%s changed while the image was being built", x->host_path);
		close(fd);
		return -1;
	}
	while (left) {
		ssize_t n = read(fd, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			seterr(err, errlen, "%s: %s", x->host_path,
			       n < 0 ? strerror(errno) : "file shrank while being read");
			close(fd);
			return -1;
		}
		if (archive_write_data(a, buf, (size_t)n) != n) {
			close(fd);
			goto aerr;
		}
		left -= (uint64_t)n;
	}
	close(fd);
	return 0;
aerr:
	seterr(err, errlen, "writing %s: %s", x->path, archive_error_string(a));
	return -1;
}

static int write_cpio(struct ents *e, int fd, struct hearth_image *img, int *werr, char *err,
		      size_t errlen)
{
	struct sink s = {.fd = fd};
	struct archive *a = NULL;
	struct archive_entry *ae = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int rc = -1;

	s.md = EVP_MD_CTX_new();
	if (!s.md || EVP_DigestInit_ex(s.md, EVP_sha256(), NULL) != 1) {
		seterr(err, errlen, "EVP_DigestInit_ex(sha256) failed");
		goto out;
	}
	a = archive_write_new();
	ae = archive_entry_new();
	if (!a || !ae) {
		seterr(err, errlen, "out of memory");
		goto out;
	}
	if (archive_write_set_format_cpio_newc(a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(a) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(a, 512) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open(a, &s, NULL, sink_write, NULL) != ARCHIVE_OK) {
		seterr(err, errlen, "cpio writer: %s", archive_error_string(a));
		goto out;
	}
	qsort(e->v, e->n, sizeof(e->v[0]), ent_cmp);
	free(e->slot); /* indices changed; nothing is looked up from here on */
	e->slot = NULL;
	e->nslots = 0;
	for (size_t i = 0; i < e->n; i++) {
		const struct ent *x = &e->v[i];

		archive_entry_clear(ae);
		archive_entry_set_pathname(ae, x->path);
		archive_entry_set_filetype(ae, x->type);
		archive_entry_set_perm(ae, x->perm);
		archive_entry_set_uid(ae, 0);
		archive_entry_set_gid(ae, 0);
		archive_entry_set_mtime(ae, 0, 0);
		archive_entry_set_ino64(ae, (la_int64_t)(i + 1));
		archive_entry_set_nlink(ae, x->type == S_IFDIR ? 2 : 1);
		archive_entry_set_dev(ae, 0);
		if (x->type == S_IFCHR)
			archive_entry_set_rdev(ae, makedev(x->rmajor, x->rminor));
		if (x->type == S_IFLNK)
			archive_entry_set_symlink(ae, x->link);
		archive_entry_set_size(ae, x->type == S_IFREG ? (la_int64_t)x->size : 0);
		if (archive_write_header(a, ae) != ARCHIVE_OK) {
			seterr(err, errlen, "cpio header for %s: %s", x->path,
			       archive_error_string(a));
			goto out;
		}
		if (x->type == S_IFREG && write_entry_data(a, x, err, errlen))
			goto out;
	}
	if (archive_write_close(a) != ARCHIVE_OK) {
		seterr(err, errlen, "cpio writer: %s", archive_error_string(a));
		goto out;
	}
	if (EVP_DigestFinal_ex(s.md, md, &mdlen) != 1 || mdlen != 32) {
		seterr(err, errlen, "EVP_DigestFinal_ex failed");
		goto out;
	}
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(img->sha256 + 2 * i, 3, "%02x", md[i]);
	img->size = s.bytes;
	img->entries = e->n;
	rc = 0;
out:
	if (a)
		archive_write_free(a);
	archive_entry_free(ae);
	EVP_MD_CTX_free(s.md);
	*werr = s.err;
	return rc;
}

static int mkdir_p(const char *dir, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(buf)) {
		seterr(err, errlen, "bad output directory '%s'", dir);
		return -1;
	}
	memcpy(buf, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
			seterr(err, errlen, "mkdir %s: %s", buf, strerror(errno));
			return -1;
		}
		buf[i] = i == len ? '\0' : '/';
	}
	return 0;
}

void hearth_image_free(struct hearth_image *img)
{
	if (!img)
		return;
	free(img->path);
	hearth_manifest_free(&img->manifest);
	memset(img, 0, sizeof(*img));
}

int hearth_package_manifest(const char *package, struct hearth_manifest *m, char *err,
			    size_t errlen)
{
	struct ents e = {.max_bytes = HEARTH_IMAGE_DEFAULT_MAX_PACKAGE};
	int rc;

	memset(m, 0, sizeof(*m));
	rc = collect_package(&e, package, err, errlen);
	if (!rc)
		rc = load_manifest(&e, m, err, errlen);
	ents_free(&e);
	return rc;
}

int hearth_image_build(const struct hearth_image_opts *opts, struct hearth_image *img, char *err,
		       size_t errlen)
{
	static const char *const mount_points[] = {"dev", "proc", "sys", "tmp", "var", "bin"};
	struct ents e = {0};
	char *tmp = NULL;
	int fd = -1, rc = -1, host_errno = 0, werr = 0;
	struct ent *x;

	memset(img, 0, sizeof(*img));
	if (!opts || !opts->package || !opts->agent || !opts->out_dir) {
		seterr(err, errlen, "package, agent and out_dir are required");
		return -1;
	}
	e.max_bytes = opts->max_package ? opts->max_package : HEARTH_IMAGE_DEFAULT_MAX_PACKAGE;

	if (collect_package(&e, opts->package, err, errlen) ||
	    load_manifest(&e, &img->manifest, err, errlen))
		goto out;

	for (size_t i = 0; i < sizeof(mount_points) / sizeof(mount_points[0]); i++)
		if (!(i == 5 && !img->manifest.shell) &&
		    ents_add_dir(&e, mount_points[i], err, errlen))
			goto out;
	if (ents_add_host_file(&e, "init", opts->agent, err, errlen)) {
		host_errno = errno ? errno : EIO; /* hearthd's own agent binary */
		goto out;
	}
	x = ents_add_leaf(&e, "dev/console", S_IFCHR, 0600, err, errlen);
	if (!x)
		goto out;
	x->rmajor = 5;
	x->rminor = 1;
	if (img->manifest.shell) {
		if (ents_add_host_file(&e, "bin/busybox",
				       opts->busybox ? opts->busybox : "/bin/busybox", err, errlen))
			goto out;
		x = ents_add_leaf(&e, "bin/sh", S_IFLNK, 0777, err, errlen);
		if (!x || !(x->link = strdup("busybox"))) {
			if (x)
				seterr(err, errlen, "out of memory");
			goto out;
		}
	}
	if (check_executable(&e, "handler", img->manifest.handler, err, errlen) ||
	    (img->manifest.init &&
	     check_executable(&e, "init", img->manifest.init, err, errlen)))
		goto out;

	/* From here on, a failure is the host's (its disk), not the package's. */
	if (mkdir_p(opts->out_dir, err, errlen)) {
		host_errno = errno;
		goto out;
	}
	if (asprintf(&tmp, "%s/.image-XXXXXX", opts->out_dir) < 0) {
		tmp = NULL;
		seterr(err, errlen, "out of memory");
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		host_errno = errno;
		seterr(err, errlen, "mkstemp in %s: %s", opts->out_dir, strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	if (write_cpio(&e, fd, img, &werr, err, errlen)) {
		host_errno = werr; /* 0: reading the package failed */
		goto out;
	}
	if (fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
		host_errno = errno;
		seterr(err, errlen, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (asprintf(&img->path, "%s/%s.cpio", opts->out_dir, img->sha256) < 0) {
		img->path = NULL;
		seterr(err, errlen, "out of memory");
		goto out;
	}
	/* Same content, same name: replacing an existing image is harmless. */
	if (rename(tmp, img->path) < 0) {
		host_errno = errno;
		seterr(err, errlen, "rename to %s: %s", img->path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	ents_free(&e);
	if (rc)
		hearth_image_free(img);
	if (rc && host_errno) {
		errno = host_errno;
		return HEARTH_IMAGE_HOST_FAULT;
	}
	return rc;
}
