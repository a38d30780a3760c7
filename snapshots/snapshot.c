#include "snapshot.h"
#include "fileref.h"

#include <errno.h>
#include <fcntl.h>
#include <libfdt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROP_STATE_SHA "state-sha256"

struct snap_builder {
	void *buf;
	size_t cap;
	int err;
};

static int say(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* The sequential-write API cannot grow in place: retry with more room. */
static int grow(struct snap_builder *b)
{
	size_t ncap = b->cap * 2;
	void *nb = malloc(ncap);
	if (!nb)
		return -FDT_ERR_NOSPACE;
	int r = fdt_resize(b->buf, nb, (int)ncap);
	if (r < 0) {
		free(nb);
		return r;
	}
	free(b->buf);
	b->buf = nb;
	b->cap = ncap;
	return 0;
}

#define FDT_RETRY(b, call)                                            \
	do {                                                          \
		if ((b)->err)                                         \
			return (b)->err;                              \
		int _r;                                               \
		while ((_r = (call)) == -FDT_ERR_NOSPACE)             \
			if (grow(b) < 0 || (b)->cap > SNAP_MAX_STATE) \
				break;                                \
		if (_r < 0)                                           \
			(b)->err = _r;                                \
		return _r < 0 ? _r : 0;                               \
	} while (0)

int snap_node_begin(struct snap_builder *b, const char *name)
{
	FDT_RETRY(b, fdt_begin_node(b->buf, name));
}

int snap_prop(struct snap_builder *b, const char *name, const void *val, size_t len)
{
	FDT_RETRY(b, fdt_property(b->buf, name, val, (int)len));
}

int snap_prop_u64(struct snap_builder *b, const char *name, uint64_t v)
{
	FDT_RETRY(b, fdt_property_u64(b->buf, name, v));
}

int snap_node_end(struct snap_builder *b)
{
	FDT_RETRY(b, fdt_end_node(b->buf));
}

struct snap_builder *snap_build_begin(const struct snap_config *cfg)
{
	struct snap_builder *b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->cap = 64 * 1024;
	b->buf = malloc(b->cap);
	if (!b->buf || fdt_create(b->buf, (int)b->cap) < 0 || fdt_finish_reservemap(b->buf) < 0 ||
	    fdt_begin_node(b->buf, "") < 0) {
		snap_build_free(b);
		return NULL;
	}
	static const uint8_t zero[32];
	snap_prop(b, "magic", SNAP_MAGIC, sizeof(SNAP_MAGIC));
	uint32_t ver = cpu_to_fdt32(SNAP_VERSION), vcpus = cpu_to_fdt32(cfg->vcpus);
	snap_prop(b, "version", &ver, 4);
	snap_prop(b, PROP_STATE_SHA, zero, 32);
	snap_prop_u64(b, "mem-size", cfg->mem_size);
	snap_prop(b, "vcpus", &vcpus, 4);
	snap_prop(b, "mem-sha256", cfg->mem_sha256, 32);
	snap_prop(b, "kernel-id", cfg->kernel_id, strnlen(cfg->kernel_id, sizeof(cfg->kernel_id) - 1) + 1);
	snap_prop(b, "vmm-version", cfg->vmm_version,
		  strnlen(cfg->vmm_version, sizeof(cfg->vmm_version) - 1) + 1);
	if (b->err) {
		snap_build_free(b);
		return NULL;
	}
	return b;
}

void snap_build_free(struct snap_builder *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b);
}

static int sha256(const void *p, size_t len, uint8_t out[32])
{
	/* Hashing needs no openssl.cnf; reading it costs a millisecond of every restore. */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
	unsigned int olen = 0;
	return EVP_Digest(p, len, out, &olen, EVP_sha256(), NULL) == 1 && olen == 32 ? 0 : -1;
}

/* Digest of the blob with the state-sha256 property zeroed. blob is modified and restored. */
static int state_digest(void *blob, uint8_t out[32])
{
	int len;
	const void *cur = fdt_getprop(blob, 0, PROP_STATE_SHA, &len);
	if (!cur || len != 32)
		return -1;
	uint8_t saved[32];
	memcpy(saved, cur, 32);
	static const uint8_t zero[32];
	fdt_setprop_inplace(blob, 0, PROP_STATE_SHA, zero, 32);
	int r = sha256(blob, fdt_totalsize(blob), out);
	fdt_setprop_inplace(blob, 0, PROP_STATE_SHA, saved, 32);
	return r;
}

int snap_build_write(struct snap_builder *b, const char *path, char *err, size_t errlen)
{
	if (b->err)
		return say(err, errlen, "building the state file failed: %s", fdt_strerror(b->err));
	int r;
	if ((r = snap_node_end(b)) < 0)
		return say(err, errlen, "building the state file failed: %s", fdt_strerror(r));
	while ((r = fdt_finish(b->buf)) == -FDT_ERR_NOSPACE)
		if (grow(b) < 0)
			break;
	if (r < 0)
		return say(err, errlen, "finishing the state file failed: %s", fdt_strerror(r));
	uint8_t d[32];
	if (state_digest(b->buf, d) < 0)
		return say(err, errlen, "hashing the state file failed");
	fdt_setprop_inplace(b->buf, 0, PROP_STATE_SHA, d, 32);

	char tmp[4096];
	int fd = fref_create(path, 0644, tmp, sizeof(tmp)); /* a passed file, or a new tmp */
	if (fd < 0)
		return say(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
	size_t len = fdt_totalsize(b->buf), done = 0;
	while (done < len) {
		ssize_t n = write(fd, (char *)b->buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fref_abandon(fd, path, tmp);
			return say(err, errlen, "writing %s failed: %s", tmp, strerror(errno));
		}
		done += (size_t)n;
	}
	if (fref_commit(fd, path, tmp) < 0)
		return say(err, errlen, "saving %s failed: %s", path, strerror(errno));
	return 0;
}

int snap_sha256_file(const char *path, uint8_t out[32])
{
	int fd = fref_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	int r = 0;
	if (st.st_size == 0) {
		r = sha256("", 0, out);
	} else {
		void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			r = -errno;
		} else {
			r = sha256(p, (size_t)st.st_size, out) < 0 ? -EIO : 0;
			munmap(p, (size_t)st.st_size);
		}
	}
	close(fd);
	return r;
}

static const void *root_prop(const void *blob, const char *name, int *len)
{
	return fdt_getprop(blob, 0, name, len);
}

int snap_load(const char *path, struct snap *s, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	int fd = fref_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return say(err, errlen, "cannot open state file %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SNAP_MAX_STATE) {
		close(fd);
		return say(err, errlen, "state file %s: not a regular file of at most %u bytes", path,
			   SNAP_MAX_STATE);
	}
	size_t len = (size_t)st.st_size;
	void *blob = malloc(len ? len : 1);
	size_t done = 0;
	while (blob && done < len) {
		ssize_t n = read(fd, (char *)blob + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	if (!blob || done != len) {
		free(blob);
		return say(err, errlen, "state file %s: read failed", path);
	}
	int r = -1;
	if (len < sizeof(struct fdt_header) || fdt_magic(blob) != FDT_MAGIC) {
		say(err, errlen, "state file %s: not a hearth snapshot (no FDT header)", path);
		goto out;
	}
	if (fdt_totalsize(blob) != len) {
		say(err, errlen, "state file %s: truncated or padded (%zu bytes, header says %u)",
		    path, len, fdt_totalsize(blob));
		goto out;
	}
	/*
	 * Only the layout libfdt writes (version 17). Older layouts name nodes by
	 * full path, and libfdt 1.6.1's fdt_check_full() dereferences NULL on a
	 * root node without a '/' in such a tree.
	 */
	if (fdt_version(blob) != FDT_LAST_SUPPORTED_VERSION) {
		say(err, errlen, "state file %s: device tree version %u, not %u", path,
		    fdt_version(blob), FDT_LAST_SUPPORTED_VERSION);
		goto out;
	}
	int fr = fdt_check_full(blob, len);
	if (fr < 0) {
		say(err, errlen, "state file %s: corrupt (libfdt: %s)", path, fdt_strerror(fr));
		goto out;
	}
	int plen;
	const char *magic = root_prop(blob, "magic", &plen);
	if (!magic || plen != sizeof(SNAP_MAGIC) || memcmp(magic, SNAP_MAGIC, sizeof(SNAP_MAGIC))) {
		say(err, errlen, "state file %s: not a hearth snapshot (bad magic)", path);
		goto out;
	}
	const void *ver = root_prop(blob, "version", &plen);
	if (!ver || plen != 4) {
		say(err, errlen, "state file %s: no format version", path);
		goto out;
	}
	fdt32_t ver32;
	memcpy(&ver32, ver, 4);
	s->version = fdt32_to_cpu(ver32);
	if (s->version != SNAP_VERSION) {
		say(err, errlen, "state file %s: format version %u, this build reads only version %u",
		    path, s->version, SNAP_VERSION);
		goto out;
	}
	const uint8_t *want = root_prop(blob, PROP_STATE_SHA, &plen);
	uint8_t got[32];
	if (!want || plen != 32 || state_digest(blob, got) < 0 || memcmp(want, got, 32)) {
		say(err, errlen, "state file %s: state digest mismatch (tampered or damaged)", path);
		goto out;
	}
	/* Properties are only 4-byte aligned in the blob: copy before converting. */
	int mslen, nvlen;
	const void *ms = root_prop(blob, "mem-size", &mslen);
	const void *nv = root_prop(blob, "vcpus", &nvlen);
	const uint8_t *msha = root_prop(blob, "mem-sha256", &plen);
	if (!ms || mslen != 8 || !nv || nvlen != 4 || !msha || plen != 32) {
		say(err, errlen, "state file %s: VM config incomplete", path);
		goto out;
	}
	fdt64_t ms64;
	fdt32_t nv32;
	memcpy(&ms64, ms, 8);
	memcpy(&nv32, nv, 4);
	s->cfg.mem_size = fdt64_to_cpu(ms64);
	s->cfg.vcpus = fdt32_to_cpu(nv32);
	memcpy(s->cfg.mem_sha256, msha, 32);
	const char *kid = root_prop(blob, "kernel-id", &plen);
	if (kid && plen > 0 && kid[plen - 1] == 0)
		snprintf(s->cfg.kernel_id, sizeof(s->cfg.kernel_id), "%s", kid);
	const char *vv = root_prop(blob, "vmm-version", &plen);
	if (vv && plen > 0 && vv[plen - 1] == 0)
		snprintf(s->cfg.vmm_version, sizeof(s->cfg.vmm_version), "%s", vv);
	s->blob = blob;
	s->len = len;
	blob = NULL;
	r = 0;
out:
	free(blob);
	return r;
}

int snap_check_memory(const struct snap *s, const char *mem_path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(mem_path, &st) < 0)
		return say(err, errlen, "memory file %s: %s", mem_path, strerror(errno));
	if ((uint64_t)st.st_size != s->cfg.mem_size)
		return say(err, errlen, "memory file %s is %lld bytes, the state file says %llu",
			   mem_path, (long long)st.st_size, (unsigned long long)s->cfg.mem_size);
	uint8_t d[32];
	int r = snap_sha256_file(mem_path, d);
	if (r < 0)
		return say(err, errlen, "memory file %s: hashing failed: %s", mem_path, strerror(-r));
	if (memcmp(d, s->cfg.mem_sha256, 32))
		return say(err, errlen, "memory file %s does not match the state file (SHA-256 differs)",
			   mem_path);
	return 0;
}

const void *snap_prop_get_var(const struct snap *s, const char *node, const char *prop,
			      size_t max, size_t *len, char *err, size_t errlen)
{
	int off = fdt_path_offset(s->blob, node);
	if (off < 0) {
		say(err, errlen, "state file: node %s missing", node);
		return NULL;
	}
	int plen;
	const void *v = fdt_getprop(s->blob, off, prop, &plen);
	if (!v) {
		say(err, errlen, "state file: %s/%s missing", node, prop);
		return NULL;
	}
	if (plen < 0 || (size_t)plen > max) {
		say(err, errlen, "state file: %s/%s is %d bytes, at most %zu allowed", node, prop, plen,
		    max);
		return NULL;
	}
	*len = (size_t)plen;
	return v;
}

const void *snap_prop_get(const struct snap *s, const char *node, const char *prop, size_t len,
			  char *err, size_t errlen)
{
	size_t got;
	const void *v = snap_prop_get_var(s, node, prop, len, &got, err, errlen);
	if (v && got != len) {
		say(err, errlen, "state file: %s/%s is %zu bytes, expected %zu", node, prop, got, len);
		return NULL;
	}
	return v;
}

int snap_has_node(const struct snap *s, const char *node)
{
	return fdt_path_offset(s->blob, node) >= 0;
}

void snap_free(struct snap *s)
{
	free(s->blob);
	memset(s, 0, sizeof(*s));
}
