/* workset.c - record and prefetch a snapshot's working set. See workset.h. */
#include "workset.h"
#include "fileref.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libfdt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define WS_FORMAT "hearth-workset-1"
#define PAGE 4096ull
#define PAGEMAP_CHUNK 4096 /* entries read per pread */
#define WS_MAX_FILE (16u << 20)

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static long long mono_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Ranges as big-endian (first, count) pairs. */
struct ranges {
	uint64_t *v;
	size_t n, cap;
	uint64_t pages;
};

static int push_range(struct ranges *rg, uint64_t first, uint64_t count)
{
	if (rg->n == rg->cap) {
		size_t cap = rg->cap ? rg->cap * 2 : 64;
		uint64_t *v = realloc(rg->v, cap * 2 * sizeof(uint64_t));
		if (!v)
			return -1;
		rg->v = v;
		rg->cap = cap;
	}
	rg->v[2 * rg->n] = htobe64(first);
	rg->v[2 * rg->n + 1] = htobe64(count);
	rg->n++;
	rg->pages += count;
	return 0;
}

int ws_record(const struct guest_mem *m, const char *path, struct ws_result *r, char *err,
	      size_t errlen)
{
	long long t0 = mono_us();
	memset(r, 0, sizeof(*r));
	uint64_t npages = m->size / PAGE;
	int pm = fref_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC, 0); /* opened before a jail */
	if (pm < 0)
		return fail(err, errlen, "open /proc/self/pagemap: %s", strerror(errno));
	struct ranges rgs = { 0 };
	uint64_t *buf = malloc(PAGEMAP_CHUNK * sizeof(uint64_t));
	uint64_t run_start = 0, run_len = 0;
	int rc = buf ? 0 : fail(err, errlen, "out of memory");
	for (uint64_t p = 0; p < npages && rc == 0; p += PAGEMAP_CHUNK) {
		uint64_t k = npages - p < PAGEMAP_CHUNK ? npages - p : PAGEMAP_CHUNK;
		off_t off = (off_t)(((uintptr_t)m->host / PAGE + p) * sizeof(uint64_t));
		ssize_t got = pread(pm, buf, k * sizeof(uint64_t), off);
		if (got != (ssize_t)(k * sizeof(uint64_t))) {
			rc = fail(err, errlen, "reading /proc/self/pagemap: %s",
				  got < 0 ? strerror(errno) : "short read");
			break;
		}
		for (uint64_t i = 0; i < k && rc == 0; i++) {
			/* present (bit 63) or swapped (62): the page was touched */
			if ((buf[i] >> 62) != 0) {
				if (!run_len)
					run_start = p + i;
				run_len++;
			} else if (run_len) {
				if (push_range(&rgs, run_start, run_len) < 0)
					rc = fail(err, errlen, "out of memory");
				run_len = 0;
			}
		}
	}
	if (rc == 0 && run_len && push_range(&rgs, run_start, run_len) < 0)
		rc = fail(err, errlen, "out of memory");
	close(pm);
	free(buf);
	if (rc < 0) {
		free(rgs.v);
		return -1;
	}
	uint64_t *rg = rgs.v;
	size_t n = rgs.n;
	r->ranges = n;
	r->pages = rgs.pages;

	size_t fsize = 1024 + n * 16;
	void *fdt = calloc(1, fsize);
	char tmp[4200];
	if (!fdt || fdt_create_empty_tree(fdt, (int)fsize) ||
	    fdt_setprop_string(fdt, 0, "format", WS_FORMAT) ||
	    fdt_setprop_u64(fdt, 0, "mem-size", m->size) ||
	    fdt_setprop(fdt, 0, "ranges", rg ? (const void *)rg : "", (int)(n * 16)) ||
	    fdt_pack(fdt)) {
		free(rg);
		free(fdt);
		return fail(err, errlen, "building the working-set file failed");
	}
	free(rg);
	int fd = fref_create(path, 0600, tmp, sizeof(tmp)); /* a passed file, or a new tmp */
	size_t len = fdt_totalsize(fdt);
	if (fd < 0 || write(fd, fdt, len) != (ssize_t)len) {
		int e = errno;
		fref_abandon(fd, path, tmp);
		free(fdt);
		return fail(err, errlen, "writing %s: %s", tmp, strerror(e));
	}
	free(fdt);
	if (fref_commit(fd, path, tmp) < 0)
		return fail(err, errlen, "saving %s: %s", path, strerror(errno));
	r->us = mono_us() - t0;
	return 0;
}

int ws_prefetch(const struct guest_mem *m, const char *path, struct ws_result *r, char *err,
		size_t errlen)
{
	long long t0 = mono_us();
	memset(r, 0, sizeof(*r));
	int fd = fref_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return fail(err, errlen, "working set %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(struct fdt_header) ||
	    st.st_size > (off_t)WS_MAX_FILE) {
		close(fd);
		return fail(err, errlen, "working set %s: not a working-set file (size)", path);
	}
	void *fdt = malloc((size_t)st.st_size);
	ssize_t got = fdt ? pread(fd, fdt, (size_t)st.st_size, 0) : -1;
	close(fd);
	const char *why = NULL;
	int len = 0;
	const void *p;
	fdt64_t msize;
	if (got != st.st_size)
		why = "short read";
	/* Version 17 only: see snap_load() for libfdt 1.6.1 and older layouts. */
	else if (fdt_check_header(fdt) || fdt_totalsize(fdt) != (uint32_t)st.st_size ||
		 fdt_version(fdt) != FDT_LAST_SUPPORTED_VERSION ||
		 fdt_check_full(fdt, (size_t)st.st_size))
		why = "not a flattened device tree of its own size";
	else if (!(p = fdt_getprop(fdt, 0, "format", &len)) || len != sizeof(WS_FORMAT) ||
		 memcmp(p, WS_FORMAT, sizeof(WS_FORMAT)))
		why = "format is not " WS_FORMAT;
	/* Properties are only 4-byte aligned in the blob: copy before converting. */
	else if (!(p = fdt_getprop(fdt, 0, "mem-size", &len)) || len != 8 ||
		 (memcpy(&msize, p, 8), fdt64_to_cpu(msize)) != m->size)
		why = "recorded for another RAM size";
	else if (!(p = fdt_getprop(fdt, 0, "ranges", &len)) || len % 16)
		why = "ranges missing or not (first, count) pairs";
	if (why) {
		free(fdt);
		return fail(err, errlen, "working set %s refused: %s", path, why);
	}
	uint64_t npages = m->size / PAGE;
	size_t n = (size_t)len / 16;
	const uint8_t *b = p;
	/*
	 * Check every range before touching anything. Ascending and disjoint, as
	 * ws_record() writes them: a file repeating one range could otherwise make
	 * the restore populate the same pages over and over.
	 */
	uint64_t next = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t first, count;
		memcpy(&first, b + 16 * i, 8);
		memcpy(&count, b + 16 * i + 8, 8);
		first = be64toh(first);
		count = be64toh(count);
		if (count == 0 || first >= npages || count > npages - first) {
			free(fdt);
			return fail(err, errlen, "working set %s refused: range %zu (%llu+%llu pages) "
						 "outside guest RAM (%llu pages)",
				    path, i, (unsigned long long)first, (unsigned long long)count,
				    (unsigned long long)npages);
		}
		if (first < next) {
			free(fdt);
			return fail(err, errlen, "working set %s refused: range %zu (%llu+%llu pages) "
						 "overlaps or precedes the one before",
				    path, i, (unsigned long long)first, (unsigned long long)count);
		}
		next = first + count;
	}
	r->how = "populate-read";
	for (size_t i = 0; i < n; i++) {
		uint64_t first, count;
		memcpy(&first, b + 16 * i, 8);
		memcpy(&count, b + 16 * i + 8, 8);
		first = be64toh(first);
		count = be64toh(count);
		uint8_t *a = m->host + first * PAGE;
		size_t l = (size_t)(count * PAGE);
		if (r->how[0] == 'p' && madvise(a, l, MADV_POPULATE_READ) < 0) {
			if (errno != EINVAL) {
				free(fdt);
				return fail(err, errlen, "madvise(MADV_POPULATE_READ): %s",
					    strerror(errno));
			}
			r->how = "willneed"; /* before Linux 5.14 */
		}
		if (r->how[0] == 'w')
			madvise(a, l, MADV_WILLNEED);
		r->pages += count;
	}
	r->ranges = n;
	free(fdt);
	r->us = mono_us() - t0;
	return 0;
}
