/*
 * guest_mem.h - the one path from hearth-vmm into guest RAM.
 *
 * Guest RAM is a single flat region at guest-physical address 0. Every guest
 * physical address that any device, loader or snapshot routine touches goes
 * through gm_ptr()/gm_read()/gm_write(): they check the whole range [gpa,
 * gpa+len) against the region with overflow-safe arithmetic and fail (NULL or
 * -EFAULT) instead of touching host memory outside it. Nothing else in
 * hearth-vmm may compute a host pointer from a guest address.
 *
 * Guest memory is shared with running vCPUs, so a guest may rewrite it at any
 * time: callers copy what they need once (gm_read) and validate the copy.
 */
#ifndef HEARTH_VMM_GUEST_MEM_H
#define HEARTH_VMM_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Guest RAM must stay below the 32-bit MMIO hole (virtio-mmio, IOAPIC, LAPIC). */
#define GM_MAX_SIZE (3ull << 30)

struct guest_mem {
	uint8_t *host;
	uint64_t size;
	bool file_backed; /* restored from a snapshot memory file, mapped MAP_PRIVATE */
};

/* Anonymous, zeroed RAM for a cold boot. Returns 0 or -errno. */
int gm_init_anon(struct guest_mem *m, uint64_t size);
/*
 * Maps a snapshot memory file MAP_PRIVATE: clones share the page cache and
 * their writes are copy-on-write, so the file never changes. The file size
 * must equal size. Returns 0 or -errno.
 */
int gm_init_file(struct guest_mem *m, const char *path, uint64_t size);
/*
 * Pooled hearth-vmm: replaces the RAM that gm_init_anon() reserved (never
 * touched by a guest) with a snapshot memory file, MAP_PRIVATE | MAP_FIXED at
 * the same host address. KVM's memslot names host addresses, so it stays
 * valid and no KVM_SET_USER_MEMORY_REGION is needed; the kernel drops the old
 * mapping's pages. The file size must equal m->size (-EINVAL otherwise, and
 * nothing changed). Returns 0 or -errno.
 */
int gm_map_file_fixed(struct guest_mem *m, const char *path);
void gm_destroy(struct guest_mem *m);

/* Host pointer for [gpa, gpa+len), or NULL if any byte lies outside RAM. */
void *gm_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Copy in/out; 0 or -EFAULT (nothing copied) if the range leaves RAM. */
int gm_read(const struct guest_mem *m, uint64_t gpa, void *dst, uint64_t len);
int gm_write(const struct guest_mem *m, uint64_t gpa, const void *src, uint64_t len);
/* Whether [gpa, gpa+len) lies inside RAM. */
bool gm_valid(const struct guest_mem *m, uint64_t gpa, uint64_t len);

#endif
