#include "vm_snapshot.h"
#include "fileref.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "x86_64/vcpu_state.h"

#define CHUNK (64u * 1024u)

static bool all_zero(const uint8_t *p, size_t n)
{
	static const uint8_t zero[CHUNK];
	return memcmp(p, zero, n) == 0;
}

static int write_memory(struct vm *vm, const char *path, uint8_t sha[32], char *err, size_t errlen)
{
	char tmp[4096];
	int fd = fref_create(path, 0644, tmp, sizeof(tmp)); /* a passed file, or a new tmp */
	if (fd < 0) {
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int rc = -1;
	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		snprintf(err, errlen, "SHA-256 init failed");
		goto out;
	}
	if (ftruncate(fd, (off_t)vm->mem.size) < 0) {
		snprintf(err, errlen, "ftruncate %s failed: %s", tmp, strerror(errno));
		goto out;
	}
	for (uint64_t off = 0; off < vm->mem.size; off += CHUNK) {
		size_t n = vm->mem.size - off < CHUNK ? (size_t)(vm->mem.size - off) : CHUNK;
		const uint8_t *p = gm_ptr(&vm->mem, off, n);
		EVP_DigestUpdate(md, p, n);
		if (all_zero(p, n))
			continue; /* leave a hole: the file was sized with ftruncate */
		for (size_t done = 0; done < n;) {
			ssize_t w = pwrite(fd, p + done, n - done, (off_t)(off + done));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				snprintf(err, errlen, "writing %s failed: %s", tmp, strerror(errno));
				goto out;
			}
			done += (size_t)w;
		}
	}
	unsigned int l = 0;
	if (EVP_DigestFinal_ex(md, sha, &l) != 1 || l != 32) {
		snprintf(err, errlen, "SHA-256 failed");
		goto out;
	}
	rc = fref_commit(fd, path, tmp);
	fd = -1;
	if (rc < 0)
		snprintf(err, errlen, "saving %s failed: %s", path, strerror(errno));
out:
	EVP_MD_CTX_free(md);
	if (rc < 0 && fd >= 0)
		fref_abandon(fd, path, tmp);
	return rc;
}

int vmm_snapshot_create(struct vm *vm, struct vsock_dev *vsock, const char *kernel_id,
			const char *mem_path, const char *state_path, char *err, size_t errlen)
{
	struct snap_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.mem_size = vm->mem.size;
	cfg.vcpus = vm->nvcpus;
	snprintf(cfg.kernel_id, sizeof(cfg.kernel_id), "%s", kernel_id ? kernel_id : "");
	snprintf(cfg.vmm_version, sizeof(cfg.vmm_version), "%s", HEARTH_VERSION);
	if (write_memory(vm, mem_path, cfg.mem_sha256, err, errlen) < 0)
		return -1;

	struct snap_builder *b = snap_build_begin(&cfg);
	if (!b) {
		snprintf(err, errlen, "out of memory building the state file");
		return -1;
	}
	int rc = -1;
	if (x86_vm_save(vm, b, err, errlen) < 0)
		goto out;
	for (unsigned i = 0; i < vm->nvcpus; i++)
		if (x86_vcpu_save(&vm->vcpu[i], b, err, errlen) < 0)
			goto out;
	pthread_mutex_lock(&vm->dev_lock);
	int dr = uart_save(&vm->uart, b);
	if (dr == 0 && vsock)
		dr = virtio_mmio_save(&vsock->t, b);
	pthread_mutex_unlock(&vm->dev_lock);
	if (dr < 0) {
		snprintf(err, errlen, "building device state failed");
		goto out;
	}
	rc = snap_build_write(b, state_path, err, errlen);
out:
	snap_build_free(b);
	return rc;
}

int vmm_snapshot_restore(struct vm *vm, struct vsock_dev *vsock, const struct snap *s, char *err,
			 size_t errlen)
{
	if (x86_vm_restore(vm, s, err, errlen) < 0)
		return -1;
	for (unsigned i = 0; i < vm->nvcpus; i++)
		if (x86_vcpu_restore(&vm->vcpu[i], s, err, errlen) < 0)
			return -1;
	pthread_mutex_lock(&vm->dev_lock);
	int rc = uart_restore(&vm->uart, s, err, errlen);
	if (rc == 0 && vsock) {
		rc = virtio_mmio_restore(&vsock->t, s, err, errlen);
		if (rc == 0)
			vsock_after_restore(vsock);
	}
	pthread_mutex_unlock(&vm->dev_lock);
	if (rc < 0)
		return -1;
	x86_kvmclock_ctrl(vm);
	return 0;
}
