/*
 * workset.h - a snapshot's working set: the guest pages a restored clone
 * touches first, recorded once and fetched ahead on later restores (after
 * the REAP and FaaSnap papers).
 *
 * Recording: right after a restore nothing of guest RAM is mapped in
 * hearth-vmm's page tables; every page the guest (or a device) touches is
 * faulted in on first use. So after the first invocation, the pages present
 * in /proc/self/pagemap over guest RAM are exactly what that invocation (and
 * the restore) needed. `ws_record` writes them as page ranges.
 *
 * Prefetch: `ws_prefetch` maps those ranges before the vCPUs run, with
 * madvise(MADV_POPULATE_READ): one system call per range fills the page
 * tables from the page cache (the memory file stays MAP_PRIVATE: a read
 * populate shares the file's pages, no copy is made, so clones keep sharing
 * them), where the guest would otherwise take one fault per page, each a VM
 * exit and a host page fault. Kernels before 5.14 lack MADV_POPULATE_READ;
 * there it falls back to MADV_WILLNEED (page cache read-ahead only).
 * Why not userfaultfd: it would serve every first touch through a thread of
 * ours (and a seccomp hole for it); the pages are already in the page cache
 * after the first clone, so populating the page tables is all that is left.
 * Why not MAP_POPULATE: it populates the whole mapping, not the working set.
 *
 * File: a flattened device tree (libfdt, as the state file) with root
 * properties "format" = "hearth-workset-1", "mem-size" (u64, must equal the
 * RAM size) and "ranges" (pairs of big-endian u64: first page, page count;
 * ascending and disjoint).
 * Every range is checked against guest RAM before use; a file that does not
 * fit is refused (the restore goes on without prefetch, and says so).
 */
#ifndef HEARTH_VMM_WORKSET_H
#define HEARTH_VMM_WORKSET_H

#include <stddef.h>
#include <stdint.h>

#include "guest_mem.h"

struct ws_result {
	uint64_t pages, ranges;
	long long us;
	const char *how; /* "populate-read" or "willneed" */
};

/* Writes the pages of m present now to path (atomically). 0 or -1 (err). */
int ws_record(const struct guest_mem *m, const char *path, struct ws_result *r, char *err,
	      size_t errlen);
/* Fetches the pages listed in path into m's page tables. 0 or -1 (err). */
int ws_prefetch(const struct guest_mem *m, const char *path, struct ws_result *r, char *err,
		size_t errlen);

#endif
