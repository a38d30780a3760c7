/*
 * file_acl.h - POSIX ACL entries that give one jail uid access to a few files
 * and directories, and take it back. The libvirt engine uses them so that a
 * domain's QEMU, running under its own uid (jail_uid.h), can read exactly its
 * own VM's kernel, image and directory (engine_libvirt.c).
 *
 * A grant adds one ACL_USER entry for the uid (or widens one that is there)
 * and recomputes the mask. A revoke deletes that uid's entry and, when no
 * named entry is left, the mask as well, so the file's mode is what it was
 * before. Each edit reads, changes and writes the whole ACL under
 * flock(LOCK_EX) on the file itself: several VMs (in this process or another
 * hearth process) that share one kernel file do not lose each other's
 * entries, as long as every writer goes through these functions.
 *
 * A grant set remembers each path it touched, in memory and in a record file
 * ("uid N", then one path a line), written before the grant it names. A run
 * that crashed leaves the record behind; the next one revokes from it
 * (file_acl_revoke_record()). The record must live where the jail uid cannot
 * write: it is a list of paths that root edits.
 *
 * Paths are absolute. Final symlinks are not followed. Not thread-safe per
 * set; distinct sets may be used from distinct threads.
 */
#ifndef HEARTH_ENGINE_FILE_ACL_H
#define HEARTH_ENGINE_FILE_ACL_H

#include <stdint.h>
#include <stdio.h>

#define FILE_ACL_MAX 24

enum { FILE_ACL_X = 1, FILE_ACL_W = 2, FILE_ACL_R = 4 };

struct file_acl_set {
	uint32_t uid;
	int n;
	char *paths[FILE_ACL_MAX];
	FILE *record;
	char *record_path;
};

/* 0 when the file system holding dir stores POSIX ACLs, else -errno (-ENOTSUP). */
int file_acl_supported(const char *dir);

/* Starts an empty set for uid whose record file is record (created 0600, must not exist). */
int file_acl_begin(struct file_acl_set *s, uint32_t uid, const char *record);

/* Gives the set's uid perms (FILE_ACL_R|W|X) on path. 0 or -errno. */
int file_acl_grant(struct file_acl_set *s, const char *path, unsigned perms);

/*
 * Makes dir reachable for the uid: every directory from / down to dir's
 * parent that "others" may not search gets a search-only (--x) entry. Search
 * without read lets the uid open a name it knows in that directory, not list
 * it; what it can open there is still up to each entry's own permissions.
 */
int file_acl_grant_path_to(struct file_acl_set *s, const char *dir);

/*
 * Takes every entry of the set back (latest first), closes and removes its
 * record, and empties the set. Carries on past failures; returns the first
 * (-errno), or 0. A set that was never begun is a no-op.
 */
int file_acl_revoke_all(struct file_acl_set *s);

/*
 * A crashed run's record: revokes its uid's entries on every path it lists
 * (paths that are gone are skipped) when the uid is within [uid_min, uid_max),
 * then removes the record. 0, or -errno when it cannot be read or is malformed.
 */
int file_acl_revoke_record(const char *record, uint32_t uid_min, uint32_t uid_max);

/* The permissions (FILE_ACL_*) of path's ACL_USER entry for uid; -ENOENT without one. */
int file_acl_get(const char *path, uint32_t uid);

/* How many ACL_USER entries path has (0 without an ACL), or -errno. */
int file_acl_users(const char *path);

#endif
