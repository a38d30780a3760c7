#include "guest_mem.h"
#include "fileref.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int gm_init_anon(struct guest_mem *m, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	if (size == 0 || size > GM_MAX_SIZE || (size & 0xfff))
		return -EINVAL;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	madvise(p, size, MADV_MERGEABLE);
	m->host = p;
	m->size = size;
	return 0;
}

/*
 * Maps the memory file (which must be exactly size bytes) MAP_PRIVATE, at
 * addr with MAP_FIXED when addr is set. Returns the mapping or NULL (*err).
 */
static void *map_file(const char *path, uint64_t size, void *addr, int *err)
{
	int fd = fref_open(path, O_RDONLY | O_CLOEXEC, 0);
	struct stat st;
	void *p = MAP_FAILED;

	*err = 0;
	if (fd < 0) {
		*err = -errno;
		return NULL;
	}
	if (fstat(fd, &st) < 0)
		*err = -errno;
	else if ((uint64_t)st.st_size != size)
		*err = -EINVAL;
	else if ((p = mmap(addr, size, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_NORESERVE | (addr ? MAP_FIXED : 0), fd, 0)) == MAP_FAILED)
		*err = -errno;
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

int gm_init_file(struct guest_mem *m, const char *path, uint64_t size)
{
	int e;

	memset(m, 0, sizeof(*m));
	if (size == 0 || size > GM_MAX_SIZE || (size & 0xfff))
		return -EINVAL;
	void *p = map_file(path, size, NULL, &e);
	if (!p)
		return e;
	m->host = p;
	m->size = size;
	m->file_backed = true;
	return 0;
}

int gm_map_file_fixed(struct guest_mem *m, const char *path)
{
	int e;

	if (!m->host || m->file_backed)
		return -EINVAL;
	if (!map_file(path, m->size, m->host, &e))
		return e;
	m->file_backed = true;
	return 0;
}

void gm_destroy(struct guest_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	m->host = NULL;
	m->size = 0;
}

bool gm_valid(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	/* gpa + len may wrap: compare against what is left after gpa instead. */
	return m->host && gpa <= m->size && len <= m->size - gpa;
}

void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	if (!gm_valid(m, gpa, len))
		return NULL;
	return m->host + gpa;
}

int gm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len)
{
	void *p = gm_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(dst, p, len);
	return 0;
}

int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len)
{
	void *p = gm_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	memcpy(p, src, len);
	return 0;
}
