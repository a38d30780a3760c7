/*
 * test_file_acl.c - the libvirt jail's per-uid ACL grants (host/engine/file_acl.h):
 * two uids on one file, the mode restored once the last entry goes, search-only
 * entries on the directories above, and a crashed run's record revoked (or
 * refused when its uid is out of range). Needs a file system with POSIX ACLs
 * under $TMPDIR (skips otherwise); as an ordinary user too (owners set ACLs).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cmocka_main.h"
#include "engine.h"
#include "file_acl.h"

#define U1 2100065000u
#define U2 2100065001u

struct fx {
	char dir[256], file[300], rec1[300], rec2[300];
};

static int setup(void **state)
{
	static struct fx f;
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	FILE *fp;

	snprintf(f.dir, sizeof(f.dir), "%s/hearth-acl-XXXXXX", tmp);
	if (!mkdtemp(f.dir))
		return -1;
	if (file_acl_supported(f.dir) < 0) {
		printf("SKIP: %s has no POSIX ACLs\n", f.dir);
		rmdir(f.dir);
		exit(77);
	}
	snprintf(f.file, sizeof(f.file), "%s/image", f.dir);
	snprintf(f.rec1, sizeof(f.rec1), "%s/rec1", f.dir);
	snprintf(f.rec2, sizeof(f.rec2), "%s/rec2", f.dir);
	fp = fopen(f.file, "w");
	if (!fp)
		return -1;
	fputs("tenant code\n", fp);
	fclose(fp);
	chmod(f.file, 0600);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[400];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	return system(cmd) == 0 ? 0 : -1;
}

static mode_t mode_of(const char *p)
{
	struct stat st;

	assert_int_equal(stat(p, &st), 0);
	return st.st_mode & 07777;
}

static void test_two_uids_then_none(void **state)
{
	struct fx *f = *state;
	struct file_acl_set a, b;

	assert_int_equal(file_acl_begin(&a, U1, f->rec1), 0);
	assert_int_equal(file_acl_begin(&b, U2, f->rec2), 0);
	assert_int_equal(file_acl_grant(&a, f->file, FILE_ACL_R), 0);
	assert_int_equal(file_acl_grant(&b, f->file, FILE_ACL_R | FILE_ACL_W), 0);
	assert_int_equal(file_acl_get(f->file, U1), FILE_ACL_R);
	assert_int_equal(file_acl_get(f->file, U2), FILE_ACL_R | FILE_ACL_W);
	assert_int_equal(file_acl_users(f->file), 2);
	/* Group bits show the mask while named entries exist. */
	assert_int_equal(mode_of(f->file), 0660);

	assert_int_equal(file_acl_revoke_all(&a), 0);
	assert_int_equal(file_acl_get(f->file, U1), -ENOENT);
	assert_int_equal(file_acl_get(f->file, U2), FILE_ACL_R | FILE_ACL_W);
	assert_int_equal(access(f->rec1, F_OK), -1); /* record removed */
	assert_int_equal(file_acl_revoke_all(&b), 0);
	assert_int_equal(file_acl_users(f->file), 0);
	assert_int_equal(mode_of(f->file), 0600); /* as before the first grant */
	assert_int_equal(file_acl_revoke_all(&b), 0); /* an emptied set is a no-op */
}

static void test_path_to_is_search_only(void **state)
{
	struct fx *f = *state;
	struct file_acl_set s;
	char a[320], b[330], c[340];

	snprintf(a, sizeof(a), "%s/a", f->dir);
	snprintf(b, sizeof(b), "%s/b", a);
	snprintf(c, sizeof(c), "%s/c", b);
	assert_int_equal(mkdir(a, 0700), 0);
	assert_int_equal(mkdir(b, 0755), 0); /* others may search: left alone */
	assert_int_equal(mkdir(c, 0700), 0);
	assert_int_equal(file_acl_begin(&s, U1, f->rec1), 0);
	assert_int_equal(file_acl_grant_path_to(&s, c), 0);
	assert_int_equal(file_acl_get(f->dir, U1), FILE_ACL_X); /* mkdtemp: 0700 */
	assert_int_equal(file_acl_get(a, U1), FILE_ACL_X);
	assert_int_equal(file_acl_get(b, U1), -ENOENT);
	assert_int_equal(file_acl_get(c, U1), -ENOENT); /* the directory itself is the caller's */
	assert_int_equal(file_acl_revoke_all(&s), 0);
	assert_int_equal(file_acl_get(a, U1), -ENOENT);
	assert_int_equal(mode_of(a), 0700);
}

/* A run that died keeps its record; the next run revokes from it, if the uid is a jail uid. */
static void test_crashed_run_record(void **state)
{
	struct fx *f = *state;
	struct file_acl_set s, dup;

	assert_int_equal(file_acl_begin(&s, U1, f->rec1), 0);
	assert_int_equal(file_acl_begin(&dup, U1, f->rec1), -EEXIST); /* never reuses a record */
	assert_int_equal(file_acl_revoke_all(&s), 0);
	assert_int_equal(file_acl_begin(&s, U1, f->rec2), 0);
	assert_int_equal(file_acl_grant(&s, f->file, FILE_ACL_R), 0);
	assert_int_equal(file_acl_grant(&s, f->dir, FILE_ACL_X), 0);
	assert_int_equal(file_acl_grant(&s, "relative/path", FILE_ACL_R), -EINVAL);
	fflush(s.record);

	/* Out of this run's uid range: refused, entries stay. */
	assert_int_equal(file_acl_revoke_record(f->rec2, U2, U2 + 10), -EINVAL);
	assert_int_equal(file_acl_get(f->file, U1), FILE_ACL_R);
	assert_int_equal(file_acl_revoke_record(f->rec2, HEARTH_JAIL_UID_BASE,
						U1 + HEARTH_JAIL_UIDS), 0);
	assert_int_equal(file_acl_get(f->file, U1), -ENOENT);
	assert_int_equal(file_acl_get(f->dir, U1), -ENOENT);
	assert_int_equal(access(f->rec2, F_OK), -1);
	assert_int_equal(mode_of(f->file), 0600);
	file_acl_revoke_all(&s); /* the "crashed" set's memory */
}

static void test_unsupported_file_system(void **state)
{
	(void)state;
	/* procfs stores no ACLs. */
	assert_true(file_acl_supported("/proc") < 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_two_uids_then_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_path_to_is_search_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crashed_run_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsupported_file_system, setup, teardown),
	};

	return HEARTH_RUN_TESTS("file_acl", tests, argc, argv);
}
