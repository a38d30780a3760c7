/*
 * fuzz_image - function package unpacking and the guest image build
 * (host/image/image.c: libarchive tar.gz reading, path cleaning, the
 * manifest, the handler and interpreter checks, the cpio writer). A package
 * is what a tenant uploads, so every byte is hostile.
 *
 * Input: byte 0 picks hearth_package_manifest() (bit 0) or a full
 * hearth_image_build(), and the unpacked-size cap (bit 1: 64 KiB, else
 * 4 MiB: decompression bombs stop at the cap either way); the rest is the
 * package, written to a memfd that the builder opens by path. Images go to a
 * private directory under /dev/shm and are removed after each input.
 *
 * Checked: a refusal says why; a built image lies in the output directory,
 * is named by its SHA-256, and the directory holds nothing else afterwards
 * (no partial file is left on failure). HEARTH_FUZZ_VERBOSE=1 prints each
 * outcome (to check what the seeds reach).
 */
#include <assert.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "image.h"

static char out_dir[64], agent[96];

static size_t dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	FILE *f;

	snprintf(out_dir, sizeof(out_dir), "/dev/shm/hearth-fuzz-image-XXXXXX");
	if (!mkdtemp(out_dir)) {
		snprintf(out_dir, sizeof(out_dir), "/tmp/hearth-fuzz-image-XXXXXX");
		if (!mkdtemp(out_dir))
			abort();
	}
	/* A stand-in for hearth-agent: the builder only copies it to /init. */
	snprintf(agent, sizeof(agent), "%s.agent", out_dir);
	f = fopen(agent, "w");
	if (!f || fputs("\177ELF stand-in agent\n", f) < 0 || fclose(f))
		abort();
	return 0;
}

static void __attribute__((destructor)) cleanup(void)
{
	if (out_dir[0]) {
		rmdir(out_dir);
		unlink(agent);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64], err[1024];
	int fd;

	if (size < 1)
		return 0;
	fd = memfd_create("fuzz-package.tar.gz", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	err[0] = 0;
	if (data[0] & 1) {
		struct hearth_manifest m;

		if (hearth_package_manifest(path, &m, err, sizeof(err)) == 0)
			hearth_manifest_free(&m);
		else
			assert(err[0]);
	} else {
		struct hearth_image_opts o = { .package = path, .agent = agent,
					       .busybox = agent, .out_dir = out_dir,
					       .max_package = data[0] & 2 ? 64u << 10 : 4u << 20 };
		struct hearth_image img;

		if (hearth_image_build(&o, &img, err, sizeof(err)) == 0) {
			size_t dl = strlen(out_dir);

			assert(strncmp(img.path, out_dir, dl) == 0 && img.path[dl] == '/');
			assert(strlen(img.sha256) == HEARTH_SHA256_HEX_LEN);
			assert(strstr(img.path, img.sha256));
			assert(img.manifest.handler && img.manifest.handler[0] == '/');
			assert(dir_entries(out_dir) == 1);
			unlink(img.path);
			hearth_image_free(&img);
		} else {
			assert(err[0]);
		}
		assert(dir_entries(out_dir) == 0);
	}
	if (getenv("HEARTH_FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz_image: %s\n", err[0] ? err : "built");
	close(fd);
	return 0;
}
