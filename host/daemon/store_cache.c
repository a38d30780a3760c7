/*
 * store_cache.c - this host's image directory, as both store backends' image
 * GC sees it (store_backend.h): which images it holds, and their removal.
 */
#include "store_backend.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* A temporary file younger than this may belong to a build or fetch in progress. */
#define TMP_GRACE_S 600

static bool is_hash(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* "<64 hex>.cpio" */
static bool image_name(const char *name)
{
	return strlen(name) == 69 && strcmp(name + 64, ".cpio") == 0 && is_hash(name, 64);
}

/* ".image-XXXXXX" (image.c) or ".<64 hex>.<pid>.tmp" (store_pg.c) */
static bool temp_name(const char *name)
{
	size_t n = strlen(name);

	return strncmp(name, ".image-", 7) == 0 ||
	       (n > 70 && name[0] == '.' && is_hash(name + 1, 64) && name[65] == '.' &&
		strcmp(name + n - 4, ".tmp") == 0);
}

int store_cache_list(const char *dir, struct cache_file **files, size_t *n, int *removed,
		     uint64_t *bytes)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;
	time_t now = time(NULL);

	*files = NULL;
	*n = 0;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		struct stat st;

		if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
			continue;
		if (temp_name(e->d_name)) {
			if (now - st.st_mtime > TMP_GRACE_S && unlinkat(dirfd(d), e->d_name, 0) == 0) {
				hlog_info("imagegc", "removed %s/%s, left by a crashed build or fetch",
					  dir, e->d_name);
				(*removed)++;
				*bytes += (uint64_t)st.st_size;
			}
			continue;
		}
		if (!image_name(e->d_name))
			continue;
		if (*n == cap) {
			struct cache_file *nf = realloc(*files, (cap = cap ? cap * 2 : 16) * sizeof(*nf));

			if (!nf) {
				closedir(d);
				free(*files);
				*files = NULL;
				*n = 0;
				return -ENOMEM;
			}
			*files = nf;
		}
		memcpy((*files)[*n].sha256, e->d_name, 64);
		(*files)[*n].sha256[64] = 0;
		(*files)[*n].bytes = (uint64_t)st.st_size;
		(*n)++;
	}
	closedir(d);
	return 0;
}

int store_cache_remove(const char *dir, const char *sha256)
{
	char path[600];

	if (strlen(sha256) != 64 || !is_hash(sha256, 64))
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/%s.cpio", dir, sha256);
	return unlink(path) == 0 ? 0 : -errno;
}
