/*
 * Image GC below the API (label daemon): the SQLite store's collection of its
 * image directory, and the ordering imagegc.h promises between a sweep and a
 * deploy on the same host, made deterministic by holding the deploy open.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cmocka_main.h"
#include "imagegc.h"
#include "store.h"

struct env {
	char dir[64];
	char images[96];
	struct store *store;
	int64_t tenant;
};

static int env_setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	char db[128], err[256];
	struct store_options so = { 0 };

	strcpy(e->dir, "/tmp/hearth-gc.XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->images, sizeof(e->images), "%s/images", e->dir);
	mkdir(e->images, 0700);
	snprintf(db, sizeof(db), "%s/hearth.db", e->dir);
	so.image_dir = e->images;
	if (store_open_spec(db, &so, &e->store, err, sizeof(err)) ||
	    store_tenant_create(e->store, "acme", &e->tenant))
		return -1;
	*state = e;
	return 0;
}

static int env_teardown(void **state)
{
	struct env *e = *state;
	char cmd[128];

	store_close(e->store);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	if (system(cmd) != 0)
		return -1;
	free(e);
	return 0;
}

/* A 64-hex name from a letter. */
static void hash_of(char c, char sha[65])
{
	memset(sha, c, 64);
	sha[64] = 0;
}

static void put_file(struct env *e, const char *name)
{
	char p[256];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", e->images, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "image", 5), 5);
	close(fd);
}

static bool has_file(struct env *e, const char *name)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", e->images, name);
	return access(p, F_OK) == 0;
}

static bool has_image(struct env *e, const char *sha)
{
	char n[80];

	snprintf(n, sizeof(n), "%s.cpio", sha);
	return has_file(e, n);
}

static void put_image(struct env *e, const char *sha)
{
	char n[80];

	snprintf(n, sizeof(n), "%s.cpio", sha);
	put_file(e, n);
}

/* Stores a version of function name using the image sha (as a deploy does after its build). */
static void add_version(struct env *e, const char *name, const char *sha)
{
	struct fn_version v = { .tenant_id = e->tenant, .memory_mb = 128, .timeout_ms = 1000 };

	snprintf(v.name, sizeof(v.name), "%s", name);
	snprintf(v.image_sha256, sizeof(v.image_sha256), "%s", sha);
	snprintf(v.image_path, sizeof(v.image_path), "%s/%s.cpio", e->images, sha);
	snprintf(v.handler, sizeof(v.handler), "/var/task/h");
	snprintf(v.engine, sizeof(v.engine), "process");
	assert_int_equal(store_version_add(e->store, &v), 0);
}

static void drop_function(struct env *e, const char *name)
{
	int64_t *ids;
	size_t n;

	assert_int_equal(store_function_delete(e->store, e->tenant, name, &ids, &n), 0);
	free(ids);
}

/* The store's collection of its image directory (SQLite: the only copy of each image). */
static void test_gc_sqlite_store(void **state)
{
	struct env *e = *state;
	struct store_image_gc st;
	char a[65], b[65], c[65], p[300];
	struct store *bare;

	hash_of('a', a);
	hash_of('b', b);
	hash_of('c', c);
	put_image(e, a);
	put_image(e, b);
	put_image(e, c);
	add_version(e, "f", a);
	add_version(e, "g", a); /* two functions, one image */
	add_version(e, "h", b);
	/* Files that are not images by name are never touched; nor are young temporary files. */
	put_file(e, "notes.txt");
	put_file(e, "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789.cpio");
	put_file(e, ".image-young1");
	/* Nor is a symbolic link with an image's name (the directory is hearthd's alone). */
	char lname[80], link[200];

	hash_of('e', lname);
	snprintf(lname + 64, sizeof(lname) - 64, ".cpio");
	snprintf(link, sizeof(link), "%s/%s", e->images, lname);
	assert_int_equal(symlink("/dev/null", link), 0);
	assert_int_equal(store_image_gc(e->store, true, &st), 0);
	assert_int_equal(st.removed_local, 1); /* c: no version */
	assert_int_equal(st.removed_shared, 0);
	assert_int_equal(st.bytes, 5);
	assert_false(has_image(e, c));
	assert_true(has_image(e, a) && has_image(e, b));
	assert_true(has_file(e, "notes.txt") && has_file(e, ".image-young1"));
	assert_true(has_file(e, lname)); /* the link */
	assert_true(has_file(e, "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789.cpio"));
	/* One of two users gone: kept; both gone: removed. */
	drop_function(e, "f");
	assert_int_equal(store_image_gc(e->store, false, &st), 0);
	assert_int_equal(st.removed_local, 0);
	assert_true(has_image(e, a));
	drop_function(e, "g");
	assert_int_equal(store_image_gc(e->store, false, &st), 0);
	assert_int_equal(st.removed_local, 1);
	assert_false(has_image(e, a));
	assert_true(has_image(e, b));
	/* An old temporary file (a crashed build) goes. */
	snprintf(p, sizeof(p), "touch -d '1 hour ago' %s/.image-young1", e->images);
	assert_int_equal(system(p), 0);
	assert_int_equal(store_image_gc(e->store, false, &st), 0);
	assert_int_equal(st.removed_local, 1);
	assert_false(has_file(e, ".image-young1"));
	/* The image directory gone altogether: nothing to do, no error; the store works on. */
	snprintf(p, sizeof(p), "rm -rf %s", e->images);
	assert_int_equal(system(p), 0);
	assert_int_equal(store_image_gc(e->store, true, &st), 0);
	assert_int_equal(st.removed_local, 0);
	add_version(e, "k", c);
	/* A store opened without an image directory collects nothing. */
	snprintf(p, sizeof(p), "%s/bare.db", e->dir);
	assert_int_equal(store_open(p, &bare), 0);
	assert_int_equal(store_image_gc(bare, true, &st), 0);
	assert_int_equal(st.removed_local + st.removed_shared, 0);
	assert_int_equal(store_image_gc_epoch(bare), 0);
	store_close(bare);
}

struct sweep {
	struct imagegc *g;
	struct store_image_gc st;
	volatile bool done;
	pthread_t th;
};

static void *sweep_run(void *arg)
{
	struct sweep *s = arg;

	imagegc_run(s->g, true, &s->st);
	s->done = true;
	return NULL;
}

/*
 * A deploy writes its image file before its version exists: a sweep started
 * in between waits for the deploy, and then finds the image used.
 */
static void test_gc_waits_for_deploy(void **state)
{
	struct env *e = *state;
	struct imagegc *g;
	struct sweep s = { 0 };
	char d[65];

	assert_int_equal(imagegc_start(e->store, 3600, &g), 0);
	usleep(300000); /* its first sweep (at start) is over */
	hash_of('d', d);
	imagegc_deploy_begin(g);
	put_image(e, d); /* the build's output */
	s.g = g;
	assert_int_equal(pthread_create(&s.th, NULL, sweep_run, &s), 0);
	usleep(300000);
	assert_false(s.done); /* held off by the deploy */
	assert_true(has_image(e, d));
	add_version(e, "fresh", d);
	imagegc_deploy_end(g);
	pthread_join(s.th, NULL);
	assert_true(s.done);
	assert_int_equal(s.st.removed_local, 0);
	assert_true(has_image(e, d));
	/* Deleted: the kick runs a sweep on the collector's thread, which removes it. */
	drop_function(e, "fresh");
	imagegc_kick(g);
	for (int i = 0; i < 40 && has_image(e, d); i++)
		usleep(50000);
	assert_false(has_image(e, d));
	/* Deploys wait for a sweep in progress, and then proceed. */
	imagegc_deploy_begin(g);
	imagegc_deploy_end(g);
	imagegc_stop(g);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_gc_sqlite_store, env_setup, env_teardown),
		cmocka_unit_test_setup_teardown(test_gc_waits_for_deploy, env_setup, env_teardown),
	};

	return HEARTH_RUN_TESTS("daemon", tests, argc, argv);
}
