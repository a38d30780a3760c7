/*
 * test_image.c - unit tests of the image builder (label unit): real packages
 * on disk (directories and tar.gz made with libarchive), real cpio output
 * read back with libarchive, and hostile packages that must be refused.
 * Run as `test_image <case>` (one ctest test per case) or with no argument.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cmocka.h>
#include <archive.h>
#include <archive_entry.h>

#include "image.h"

static char tmp[256];
static char agent[300], busybox[300], out[300];

static void put(const char *rel, const char *text, mode_t mode)
{
	char p[1024];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", tmp, rel);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(p, mode), 0);
}

static void mkd(const char *rel)
{
	char p[1024];

	snprintf(p, sizeof(p), "%s/%s", tmp, rel);
	assert_int_equal(mkdir(p, 0755), 0);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmp, sizeof(tmp), "/tmp/hearth-image-test-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(agent, sizeof(agent), "%s/agent", tmp);
	snprintf(busybox, sizeof(busybox), "%s/busybox", tmp);
	snprintf(out, sizeof(out), "%s/out", tmp);
	put("agent", "\177ELF pretend agent", 0755);
	put("busybox", "\177ELF pretend busybox", 0755);
	mkd("pkg");
	put("pkg/manifest.json",
	    "{\"handler\": \"bin/fn\", \"memory_mb\": 256, \"timeout_ms\": 1500,"
	    " \"env\": {\"ZED\": \"z\", \"ALPHA\": \"a\"}, \"args\": [\"-v\"]}", 0644);
	mkd("pkg/bin");
	put("pkg/bin/fn", "\177ELF pretend function", 0700);
	put("pkg/data.txt", "some data\n", 0600);
	return 0;
}

static int teardown(void **state)
{
	char cmd[512];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	return system(cmd);
}

static int build(const char *pkg, struct hearth_image *img, char *err, uint64_t max)
{
	struct hearth_image_opts o = {.agent = agent, .busybox = busybox, .out_dir = out,
				      .max_package = max};
	char p[1024];

	snprintf(p, sizeof(p), "%s/%s", tmp, pkg);
	o.package = p;
	return hearth_image_build(&o, img, err, 512);
}

/* Writes a tar.gz at tmp/name from (path, type, body) triples; NULL path ends. */
struct tar_member {
	const char *path;
	mode_t type;
	const char *body;   /* file content or symlink/hardlink target */
	bool hardlink;
};

static void make_tgz(const char *name, const struct tar_member *m)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	char p[1024];

	snprintf(p, sizeof(p), "%s/%s", tmp, name);
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, p), ARCHIVE_OK);
	for (; m->path; m++) {
		archive_entry_clear(e);
		archive_entry_set_pathname(e, m->path);
		archive_entry_set_filetype(e, m->type);
		archive_entry_set_perm(e, 0755);
		if (m->hardlink)
			archive_entry_set_hardlink(e, m->body);
		else if (m->type == AE_IFLNK)
			archive_entry_set_symlink(e, m->body);
		else if (m->type == AE_IFCHR)
			archive_entry_set_rdev(e, makedev(1, 3));
		if (m->type == AE_IFREG && !m->hardlink)
			archive_entry_set_size(e, (la_int64_t)strlen(m->body));
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		if (m->type == AE_IFREG && !m->hardlink)
			assert_int_equal(archive_write_data(a, m->body, strlen(m->body)),
					 (la_ssize_t)strlen(m->body));
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	archive_entry_free(e);
}

struct seen {
	char path[128];
	mode_t type, perm;
	time_t mtime;
	dev_t rdev;
	char link[128];
	char body[128];
};

static int read_cpio(const char *path, struct seen *s, int max)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int n = 0;

	archive_read_support_format_cpio(a);
	assert_int_equal(archive_read_open_filename(a, path, 16384), ARCHIVE_OK);
	while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
		assert_true(n < max);
		snprintf(s[n].path, sizeof(s[n].path), "%s", archive_entry_pathname(e));
		s[n].type = archive_entry_filetype(e);
		s[n].perm = archive_entry_perm(e);
		s[n].mtime = archive_entry_mtime(e);
		s[n].rdev = archive_entry_rdev(e);
		if (archive_entry_symlink(e))
			snprintf(s[n].link, sizeof(s[n].link), "%s", archive_entry_symlink(e));
		la_ssize_t r = archive_read_data(a, s[n].body, sizeof(s[n].body) - 1);
		s[n].body[r > 0 ? r : 0] = '\0';
		assert_int_equal(archive_entry_uid(e), 0);
		n++;
	}
	archive_read_free(a);
	return n;
}

static const struct seen *find(const struct seen *s, int n, const char *path)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(s[i].path, path))
			return &s[i];
	return NULL;
}

static void test_layout(void **state)
{
	struct hearth_image img;
	struct seen s[64];
	char err[512];
	const struct seen *x;
	int n;

	(void)state;
	assert_int_equal(build("pkg", &img, err, 0), 0);
	assert_int_equal(strlen(img.sha256), 64);
	assert_non_null(strstr(img.path, img.sha256));
	assert_string_equal(img.manifest.handler, "/var/task/bin/fn");
	assert_int_equal(img.manifest.memory_mb, 256);
	assert_int_equal(img.manifest.timeout_ms, 1500);
	assert_int_equal(img.manifest.nenv, 2);
	assert_string_equal(img.manifest.env[0], "ALPHA=a"); /* sorted */
	assert_string_equal(img.manifest.args[0], "-v");
	assert_false(img.manifest.shell);

	n = read_cpio(img.path, s, 64);
	assert_int_equal((size_t)n, img.entries);
	for (int i = 1; i < n; i++) /* sorted, so parents come first */
		assert_true(strcmp(s[i - 1].path, s[i].path) < 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(s[i].mtime, 0);
	x = find(s, n, "init");
	assert_non_null(x);
	assert_int_equal(x->perm, 0755);
	assert_string_equal(x->body, "\177ELF pretend agent");
	x = find(s, n, "dev/console");
	assert_non_null(x);
	assert_int_equal(x->type, AE_IFCHR);
	assert_int_equal(major(x->rdev), 5);
	assert_int_equal(minor(x->rdev), 1);
	x = find(s, n, "var/task/bin/fn");
	assert_non_null(x);
	assert_int_equal(x->perm, 0755); /* 0700 normalised */
	x = find(s, n, "var/task/data.txt");
	assert_non_null(x);
	assert_int_equal(x->perm, 0644); /* 0600 normalised */
	assert_string_equal(x->body, "some data\n");
	assert_non_null(find(s, n, "var/task/manifest.json"));
	assert_non_null(find(s, n, "proc"));
	assert_non_null(find(s, n, "tmp"));
	assert_null(find(s, n, "bin/sh")); /* no shell asked for */
	hearth_image_free(&img);
}

/* Same input, same bytes: whether rebuilt, or read from a tar.gz instead of a directory. */
static void test_deterministic(void **state)
{
	struct hearth_image a, b, c;
	char err[512], cmd[1024];

	(void)state;
	assert_int_equal(build("pkg", &a, err, 0), 0);
	sleep(1); /* mtimes of the inputs must not matter */
	put("pkg/data.txt", "some data\n", 0644);
	assert_int_equal(build("pkg", &b, err, 0), 0);
	assert_string_equal(a.sha256, b.sha256);
	snprintf(cmd, sizeof(cmd), "tar -C '%s/pkg' -czf '%s/pkg.tar.gz' .", tmp, tmp);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(build("pkg.tar.gz", &c, err, 0), 0);
	assert_string_equal(a.sha256, c.sha256);
	/* A different package gives a different address. */
	put("pkg/data.txt", "other data\n", 0644);
	hearth_image_free(&b);
	assert_int_equal(build("pkg", &b, err, 0), 0);
	assert_string_not_equal(a.sha256, b.sha256);
	hearth_image_free(&a);
	hearth_image_free(&b);
	hearth_image_free(&c);
}

static void test_shell(void **state)
{
	struct hearth_image img;
	struct seen s[64];
	char err[512];
	const struct seen *x;
	int n;

	(void)state;
	put("pkg/manifest.json", "{\"handler\": \"run.sh\"}", 0644);
	put("pkg/run.sh", "#!/bin/sh\necho hi\n", 0755);
	/* A /bin/sh script without "shell": refused, with the fix in the message. */
	assert_int_equal(build("pkg", &img, err, 0), -1);
	assert_non_null(strstr(err, "\"shell\": true"));
	put("pkg/manifest.json", "{\"handler\": \"run.sh\", \"shell\": true}", 0644);
	assert_int_equal(build("pkg", &img, err, 0), 0);
	n = read_cpio(img.path, s, 64);
	x = find(s, n, "bin/busybox");
	assert_non_null(x);
	assert_string_equal(x->body, "\177ELF pretend busybox");
	x = find(s, n, "bin/sh");
	assert_non_null(x);
	assert_int_equal(x->type, AE_IFLNK);
	assert_string_equal(x->link, "busybox");
	hearth_image_free(&img);
}

static void expect_refused(const char *pkg, const char *needle, uint64_t max)
{
	struct hearth_image img;
	char err[512] = "";
	char cmd[512];
	FILE *p;
	char line[256];

	assert_int_equal(build(pkg, &img, err, max), -1);
	if (!strstr(err, needle))
		fail_msg("error '%s' does not mention '%s'", err, needle);
	/* No partial image left behind. */
	snprintf(cmd, sizeof(cmd), "ls -A '%s' 2>/dev/null | grep -c '^\\.image-' || true", out);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(line, sizeof(line), p));
	pclose(p);
	assert_int_equal(atoi(line), 0);
}

static void test_bad_manifests(void **state)
{
	static const struct {
		const char *json, *needle;
	} bad[] = {
		{"not json", "invalid JSON"},
		{"[1]", "JSON object"},
		{"{}", "\"handler\""},
		{"{\"handler\": 7}", "\"handler\""},
		{"{\"handler\": \"bin/fn\", \"memory\": 1}", "unknown key \"memory\""},
		{"{\"handler\": \"bin/fn\", \"memory_mb\": 1}", "out of range"},
		{"{\"handler\": \"bin/fn\", \"memory_mb\": \"big\"}", "integer"},
		{"{\"handler\": \"bin/fn\", \"timeout_ms\": 0}", "out of range"},
		{"{\"handler\": \"bin/fn\", \"env\": {\"A B\": \"x\"}}", "not a valid name"},
		{"{\"handler\": \"bin/fn\", \"env\": {\"A\": 1}}", "must be a string"},
		{"{\"handler\": \"bin/fn\", \"shell\": \"yes\"}", "true or false"},
		{"{\"handler\": \"../../etc/passwd\"}", "'..'"},
		{"{\"handler\": \"missing\"}", "not in the image"},
		{"{\"handler\": \"data.txt\"}", "not executable"},
		{"{\"handler\": \"bin\"}", "not a regular file"},
		{"{\"handler\": \"bin/fn\", \"handler\": \"bin/fn\"}", "invalid JSON"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put("pkg/manifest.json", bad[i].json, 0644);
		expect_refused("pkg", bad[i].needle, 0);
	}
	unlink(strcat(strcpy((char[512]){0}, tmp), "/pkg/manifest.json"));
	expect_refused("pkg", "no manifest.json", 0);
	expect_refused("no-such-package", "No such file", 0);
}

/* Runtime mode: "runtime": "provided", or a bootstrap file, selects it. */
static void test_runtime_mode(void **state)
{
	struct hearth_image img;
	char err[512];

	(void)state;
	mkd("rpkg");
	put("rpkg/bootstrap", "\177ELF pretend runtime", 0755);
	/* A bootstrap at the root and no "runtime": runtime mode; "handler" is free text. */
	put("rpkg/manifest.json", "{\"handler\": \"index.handler\"}", 0644);
	assert_int_equal(build("rpkg", &img, err, 0), 0);
	assert_true(img.manifest.runtime);
	assert_string_equal(img.manifest.handler, "/var/task/bootstrap");
	assert_string_equal(img.manifest.lambda_handler, "index.handler");
	hearth_image_free(&img);
	put("rpkg/manifest.json", "{\"runtime\": \"provided.al2023\"}", 0644);
	assert_int_equal(build("rpkg", &img, err, 0), 0);
	assert_true(img.manifest.runtime);
	assert_string_equal(img.manifest.lambda_handler, "");
	hearth_image_free(&img);
	/* "exec" keeps exec mode even with a bootstrap file. */
	put("rpkg/manifest.json", "{\"runtime\": \"exec\", \"handler\": \"bootstrap\"}", 0644);
	assert_int_equal(build("rpkg", &img, err, 0), 0);
	assert_false(img.manifest.runtime);
	hearth_image_free(&img);
	put("rpkg/manifest.json", "{\"runtime\": \"python3.12\"}", 0644);
	expect_refused("rpkg", "\"runtime\" must be \"provided\"", 0);
	put("rpkg/manifest.json", "{\"runtime\": \"provided\", \"init\": \"bootstrap\"}", 0644);
	expect_refused("rpkg", "not used in runtime mode", 0);
	put("rpkg/manifest.json", "{\"runtime\": \"provided\", \"handler\": \"a\\nb\"}", 0644);
	expect_refused("rpkg", "control character", 0);
	/* "provided" without a bootstrap: the image check names it. */
	put("pkg/manifest.json", "{\"runtime\": \"provided\"}", 0644);
	expect_refused("pkg", "/var/task/bootstrap is not in the image", 0);
	put("rpkg/bootstrap", "not executable", 0644);
	put("rpkg/manifest.json", "{\"runtime\": \"provided\"}", 0644);
	expect_refused("rpkg", "not executable", 0);
}

static void test_hostile_tars(void **state)
{
	static const char manifest[] = "{\"handler\": \"fn\"}";
	const struct tar_member dotdot[] = {{"manifest.json", AE_IFREG, manifest, false},
					    {"fn", AE_IFREG, "x", false},
					    {"../escape", AE_IFREG, "x", false},
					    {NULL, 0, NULL, false}};
	const struct tar_member absolute[] = {{"manifest.json", AE_IFREG, manifest, false},
					      {"/etc/evil", AE_IFREG, "x", false},
					      {NULL, 0, NULL, false}};
	const struct tar_member hardlink[] = {{"manifest.json", AE_IFREG, manifest, false},
					      {"fn", AE_IFREG, "x", false},
					      {"fn2", AE_IFREG, "fn", true},
					      {NULL, 0, NULL, false}};
	const struct tar_member device[] = {{"manifest.json", AE_IFREG, manifest, false},
					    {"null", AE_IFCHR, NULL, false},
					    {NULL, 0, NULL, false}};
	const struct tar_member dup[] = {{"manifest.json", AE_IFREG, manifest, false},
					 {"fn", AE_IFREG, "x", false},
					 {"./fn", AE_IFREG, "y", false},
					 {NULL, 0, NULL, false}};
	const struct tar_member ok[] = {{"./", AE_IFDIR, NULL, false},
					{"./manifest.json", AE_IFREG, manifest, false},
					{"./fn", AE_IFREG, "#!/nonexistent/interp\n", false},
					{"./link", AE_IFLNK, "/etc/passwd", false},
					{NULL, 0, NULL, false}};
	struct hearth_image img;
	char err[512];

	(void)state;
	make_tgz("dotdot.tgz", dotdot);
	expect_refused("dotdot.tgz", "'..'", 0);
	make_tgz("abs.tgz", absolute);
	expect_refused("abs.tgz", "absolute", 0);
	make_tgz("hard.tgz", hardlink);
	expect_refused("hard.tgz", "hard link", 0);
	make_tgz("dev.tgz", device);
	expect_refused("dev.tgz", "unsupported type", 0);
	make_tgz("dup.tgz", dup);
	expect_refused("dup.tgz", "duplicate", 0);
	/* A symlink is kept as a symlink (it only resolves inside the guest). */
	make_tgz("ok.tgz", ok);
	expect_refused("ok.tgz", "interpreter '/nonexistent/interp'", 0);
	put("garbage.tgz", "this is not a tarball", 0644);
	expect_refused("garbage.tgz", "garbage.tgz", 0);
	/* Size limits hold for tarballs and directories. */
	expect_refused("pkg", "size limit", 8);
	make_tgz("dotdot.tgz", ok);
	expect_refused("dotdot.tgz", "size limit", 16);
	(void)img;
	(void)err;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deterministic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shell, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_manifests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_runtime_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_tars, setup, teardown),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
