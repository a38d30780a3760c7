/*
 * fuzz_snapshot - the libfdt files hearth-vmm reads: the snapshot state file
 * (snapshots/snapshot.c: snap_load, snap_prop_get, snap_prop_get_var,
 * snap_has_node, with the nodes and properties hearth-vmm's restore asks for)
 * and the working-set file (host/vmm/workset.c: ws_prefetch into 1 MiB of
 * guest RAM).
 *
 * Input: byte 0 picks the file kind and, for state files, whether the
 * harness seals the state digest first (a fuzzer cannot forge SHA-256, and
 * without it every input would stop at the digest check); the rest is the
 * file, written to a memfd that the library opens by path.
 */
#include <assert.h>
#include <libfdt.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "guest_mem.h"
#include "snapshot.h"
#include "workset.h"

/* What snap_build_write does: SHA-256 of the blob with state-sha256 zeroed. */
static void seal(uint8_t *blob, size_t len)
{
	static const uint8_t zero[32];
	uint8_t d[32];
	unsigned dl = 0;
	int plen;

	/* Version 17 first, as snap_load does: libfdt 1.6.1's check crashes on older trees. */
	if (len < sizeof(struct fdt_header) || fdt_magic(blob) != FDT_MAGIC ||
	    fdt_totalsize(blob) != len || fdt_version(blob) != FDT_LAST_SUPPORTED_VERSION ||
	    fdt_check_full(blob, len) < 0 ||
	    !fdt_getprop(blob, 0, "state-sha256", &plen) || plen != 32)
		return;
	fdt_setprop_inplace(blob, 0, "state-sha256", zero, 32);
	if (EVP_Digest(blob, fdt_totalsize(blob), d, &dl, EVP_sha256(), NULL) != 1)
		abort();
	fdt_setprop_inplace(blob, 0, "state-sha256", d, 32);
}

static void query_state(const struct snap *s)
{
	static const char *const nodes[] = { "/", "/vm", "/cpu@0", "/cpu@1", "/uart",
					     "/virtio@d0000000", "/nonexistent", "", "cpu@0",
					     "/cpu@0/x", "//" };
	static const char *const props[] = { "regs", "queues", "sregs", "xsave", "msrs", "cpuid",
					     "vsock-cid", "pit", "clock", "magic", "" };
	static const size_t sizes[] = { 0, 4, 8, 40, 144, 4096 };
	char err[256];

	for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
		(void)snap_has_node(s, nodes[i]);
		for (size_t j = 0; j < sizeof(props) / sizeof(props[0]); j++) {
			size_t len = 0;
			const uint8_t *v = snap_prop_get_var(s, nodes[i], props[j], 4096, &len, err,
							     sizeof(err));

			if (v) {
				/* What it returns lies inside the blob, and every byte is readable. */
				assert(v >= (const uint8_t *)s->blob &&
				       v + len <= (const uint8_t *)s->blob + s->len);
				for (size_t k = 0; k < len; k++)
					((volatile const uint8_t *)v)[k];
			}
			v = snap_prop_get(s, nodes[i], props[j], sizes[(i + j) % 6], err, sizeof(err));
			assert(!v || (v >= (const uint8_t *)s->blob &&
				      v + sizes[(i + j) % 6] <= (const uint8_t *)s->blob + s->len));
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_mem ram;
	char path[64], err[512];
	uint8_t *file;
	int fd;

	if (size < 1)
		return 0;
	if (!ram.host && gm_init_anon(&ram, 1u << 20) < 0)
		abort();
	file = malloc(size);
	if (!file)
		return 0;
	memcpy(file, data + 1, size - 1);
	if ((data[0] & 3) == 1)
		seal(file, size - 1);
	fd = memfd_create("fuzz-snapshot", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	if (size > 1 && write(fd, file, size - 1) != (ssize_t)(size - 1))
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if ((data[0] & 3) == 2) {
		struct ws_result r;

		err[0] = 0;
		if (ws_prefetch(&ram, path, &r, err, sizeof(err)) == 0)
			assert(r.pages <= ram.size / 4096);
		else
			assert(err[0]);
	} else {
		struct snap s;

		err[0] = 0;
		if (snap_load(path, &s, err, sizeof(err)) == 0) {
			assert(s.len == size - 1 && s.version == SNAP_VERSION);
			query_state(&s);
			snap_free(&s);
		} else {
			assert(err[0]);
		}
	}
	close(fd);
	free(file);
	return 0;
}
