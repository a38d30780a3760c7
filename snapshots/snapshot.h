/*
 * snapshot.h - the hearth snapshot state file (see FORMAT.md), shared by
 * hearth-vmm (writes and restores) and hearthd (inspects, content-addresses).
 *
 * A snapshot is a memory file (flat guest RAM, never modified after it is
 * written) plus this state file: a flattened device tree built with libfdt.
 * This module knows the container - magic, version, VM config, the memory
 * file's SHA-256, and a SHA-256 over the state file itself - and gives
 * checked access to named binary properties. What the properties mean is the
 * writer's business (hearth-vmm's snapshot code).
 *
 * Trust: a state file is input. snap_load() refuses anything truncated,
 * structurally broken (fdt_check_full), tampered with (state digest), of
 * another format version, or with a bad config; snap_prop() returns a
 * property only if its size is exactly what the caller expects. Every
 * failure comes with a message that says which check failed.
 */
#ifndef HEARTH_SNAPSHOT_H
#define HEARTH_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#define SNAP_MAGIC "hearth-snapshot"
#define SNAP_VERSION 1u
#define SNAP_MAX_STATE (16u << 20)

struct snap_config {
	uint64_t mem_size;
	uint32_t vcpus;
	uint8_t mem_sha256[32];
	char kernel_id[128]; /* what the VM booted (for content addressing), may be empty */
	char vmm_version[32];
};

/* ---- writing: root properties first, then nodes, in one pass ---- */

struct snap_builder;

/* Starts a state file with its header (magic, version, config). NULL on ENOMEM. */
struct snap_builder *snap_build_begin(const struct snap_config *cfg);
int snap_node_begin(struct snap_builder *b, const char *name);
int snap_prop(struct snap_builder *b, const char *name, const void *val, size_t len);
int snap_prop_u64(struct snap_builder *b, const char *name, uint64_t v);
int snap_node_end(struct snap_builder *b);
/* Finishes, seals the state digest and writes the file atomically (tmp + rename). */
int snap_build_write(struct snap_builder *b, const char *path, char *err, size_t errlen);
void snap_build_free(struct snap_builder *b);

/* SHA-256 of a whole file (OpenSSL). 0 or -errno. */
int snap_sha256_file(const char *path, uint8_t out[32]);

/* ---- reading ---- */

struct snap {
	void *blob;
	size_t len;
	struct snap_config cfg;
	uint32_t version;
};

/* Reads and validates a state file. 0, or -1 with a message in err. */
int snap_load(const char *path, struct snap *s, char *err, size_t errlen);
/* Checks that mem_path is the memory file this state was taken with (size and SHA-256). */
int snap_check_memory(const struct snap *s, const char *mem_path, char *err, size_t errlen);
/*
 * Property `prop` of node `node` ("/" for the root, "/cpu@0", ...), which
 * must be exactly `len` bytes. NULL (and err set) if missing or of another size.
 */
const void *snap_prop_get(const struct snap *s, const char *node, const char *prop, size_t len,
			  char *err, size_t errlen);
/* Like snap_prop_get but any size up to max; *len gets it. */
const void *snap_prop_get_var(const struct snap *s, const char *node, const char *prop,
			      size_t max, size_t *len, char *err, size_t errlen);
/* Whether the node exists. */
int snap_has_node(const struct snap *s, const char *node);
void snap_free(struct snap *s);

#endif
