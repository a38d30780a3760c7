/*
 * hearthctl deploy NAME PACKAGE - uploads a function package to hearthd,
 * which builds its image and records a new version.
 *
 * A directory is packed into a temporary .tar.gz with libarchive first (the
 * same library the image builder reads it with); a .tar.gz is sent as is.
 * Progress on stderr: packing, upload bytes, then the wait for the build.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "client.h"
#include "hearthctl.h"

static void deploy_usage(FILE *f)
{
	fprintf(f,
		"usage: hearthctl deploy [options] NAME PACKAGE\n"
		"  NAME             function name, 1-64 of [A-Za-z0-9_-]\n"
		"  PACKAGE          a directory or a .tar.gz with manifest.json at its root\n"
		"  --memory MB      override the manifest's memory_mb\n"
		"  --timeout MS     override the manifest's timeout_ms\n"
		"  --engine E       auto | libvirt | process (as the host allows)\n"
		"  --server-path    PACKAGE is an absolute path on the hearthd host (admin only)\n"
		"  --json           print hearthd's answer as JSON\n"
		"Each deploy makes a new version; invocations use the latest unless told.\n");
	hctl_usage_globals(f);
}

struct pack_stats {
	long files;
	long long bytes;
};

/* Copies one file's data into the archive. */
static int pack_data(struct archive *disk, struct archive *out, char *err, size_t errlen)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;

	while ((r = archive_read_data_block(disk, &buf, &len, &off)) == ARCHIVE_OK) {
		if (archive_write_data(out, buf, len) != (la_ssize_t)len) {
			snprintf(err, errlen, "writing the archive: %s", archive_error_string(out));
			return -1;
		}
	}
	if (r != ARCHIVE_EOF) {
		snprintf(err, errlen, "%s", archive_error_string(disk));
		return -1;
	}
	return 0;
}

/*
 * Writes dir's contents as a gzip'ed tar to fd, with paths relative to dir
 * ("manifest.json", "bin/x"). Symlinks are stored as symlinks.
 */
static int pack_dir(const char *dir, int fd, struct pack_stats *st, char *err, size_t errlen)
{
	struct archive *disk = archive_read_disk_new(), *out = archive_write_new();
	struct archive_entry *ae = NULL;
	size_t dlen = strlen(dir);
	int rc = -1, r;

	if (!disk || !out) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	while (dlen > 1 && dir[dlen - 1] == '/')
		dlen--;
	archive_read_disk_set_symlink_physical(disk);
	archive_read_disk_set_standard_lookup(disk);
	if (archive_write_add_filter_gzip(out) != ARCHIVE_OK ||
	    archive_write_set_format_pax_restricted(out) != ARCHIVE_OK ||
	    archive_write_open_fd(out, fd) != ARCHIVE_OK) {
		snprintf(err, errlen, "%s", archive_error_string(out));
		goto out;
	}
	if (archive_read_disk_open(disk, dir) != ARCHIVE_OK) {
		snprintf(err, errlen, "%s", archive_error_string(disk));
		goto out;
	}
	for (;;) {
		const char *path, *rel;

		ae = archive_entry_new();
		if (!ae) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		r = archive_read_next_header2(disk, ae);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			snprintf(err, errlen, "%s", archive_error_string(disk));
			goto out;
		}
		archive_read_disk_descend(disk);
		path = archive_entry_pathname(ae);
		if (!path || strncmp(path, dir, dlen) != 0) {
			snprintf(err, errlen, "unexpected path '%s' under %s", path ? path : "", dir);
			goto out;
		}
		rel = path + dlen;
		while (*rel == '/')
			rel++;
		if (!*rel) { /* the directory itself */
			archive_entry_free(ae);
			continue;
		}
		archive_entry_copy_pathname(ae, rel);
		/* Who owns the files here says nothing about the function. */
		archive_entry_set_uid(ae, 0);
		archive_entry_set_gid(ae, 0);
		archive_entry_set_uname(ae, "");
		archive_entry_set_gname(ae, "");
		if (archive_write_header(out, ae) != ARCHIVE_OK) {
			snprintf(err, errlen, "%s: %s", rel, archive_error_string(out));
			goto out;
		}
		if (archive_entry_filetype(ae) == AE_IFREG) {
			if (archive_entry_size(ae) > 0 && pack_data(disk, out, err, errlen))
				goto out;
			st->files++;
			st->bytes += archive_entry_size(ae);
			if (hctl_tty()) {
				char b[32];

				hctl_progress("packing %s: %ld files, %s", dir, st->files,
					      hctl_bytes((double)st->bytes, b, sizeof(b)));
			}
		}
		archive_entry_free(ae);
	}
	if (archive_write_close(out) != ARCHIVE_OK) {
		snprintf(err, errlen, "%s", archive_error_string(out));
		goto out;
	}
	rc = 0;
out:
	archive_entry_free(ae);
	if (disk)
		archive_read_free(disk);
	if (out)
		archive_write_free(out);
	return rc;
}

/* A package file must at least look like gzip; say so before uploading it. */
static bool looks_gzip(FILE *f)
{
	unsigned char m[2];
	bool ok = fread(m, 1, 2, f) == 2 && m[0] == 0x1f && m[1] == 0x8b;

	rewind(f);
	return ok;
}

int cmd_deploy(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "memory", required_argument, NULL, 'm' },
		{ "timeout", required_argument, NULL, 't' },
		{ "engine", required_argument, NULL, 'e' },
		{ "server-path", no_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long long memory = -1, timeout = -1;
	const char *engine = NULL, *name, *package;
	bool json = false, server_path = false;
	char tmp[PATH_MAX] = "", path[1024], err[512], q[128] = "", sz[32];
	struct hctl_request rq = { .method = "POST" };
	struct hctl_response rs;
	struct stat st;
	FILE *f = NULL;
	json_t *out = NULL;
	char *ne = NULL, *ee = NULL, *body = NULL;
	int c, rc = HCTL_EXIT_FAIL;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "m:t:e:Sjh", longopts)) != -1) {
		switch (c) {
		case 'm':
			if ((memory = hctl_parse_count("--memory", optarg, 1 << 20)) < 0)
				return HCTL_EXIT_USAGE;
			break;
		case 't':
			if ((timeout = hctl_parse_count("--timeout", optarg, INT_MAX)) < 0)
				return HCTL_EXIT_USAGE;
			break;
		case 'e': engine = optarg; break;
		case 'S': server_path = true; break;
		case 'j': json = true; break;
		case 'h': deploy_usage(stdout); return 0;
		default: deploy_usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	if (optind != argc - 2) {
		deploy_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	name = argv[optind];
	package = argv[optind + 1];
	ne = hctl_escape(name);
	if (memory >= 0 || timeout >= 0 || engine) {
		size_t n = 0;

		if (memory >= 0)
			n += (size_t)snprintf(q + n, sizeof(q) - n, "%smemory_mb=%lld", n ? "&" : "?",
					      memory);
		if (timeout >= 0)
			n += (size_t)snprintf(q + n, sizeof(q) - n, "%stimeout_ms=%lld", n ? "&" : "?",
					      timeout);
		if (engine) {
			ee = hctl_escape(engine);
			snprintf(q + n, sizeof(q) - n, "%sengine=%s", n ? "&" : "?", ee);
		}
	}
	snprintf(path, sizeof(path), "/v1/functions/%s%s", ne, q);
	rq.path = path;
	rq.progress = name;
	rq.progress_wait = "hearthd is building the image";

	if (server_path) {
		json_t *j = json_pack("{s:s}", "path", package);

		if (package[0] != '/') {
			fprintf(stderr, "hearthctl: --server-path wants an absolute path\n");
			rc = HCTL_EXIT_USAGE;
			goto out;
		}
		body = json_dumps(j, JSON_COMPACT);
		json_decref(j);
		rq.body = body;
		rq.body_len = body ? strlen(body) : 0;
		rq.content_type = "application/json";
		hctl_progress("%s: hearthd is building the image from %s", name, package);
	} else if (stat(package, &st) != 0) {
		fprintf(stderr, "hearthctl: %s: %s\n", package, strerror(errno));
		goto out;
	} else if (S_ISDIR(st.st_mode)) {
		struct pack_stats ps = { 0 };
		const char *td = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
		int fd;

		snprintf(tmp, sizeof(tmp), "%s/hearthctl-XXXXXX.tar.gz", td);
		fd = mkstemps(tmp, 7);
		if (fd < 0) {
			fprintf(stderr, "hearthctl: cannot create a temporary file in %s: %s\n", td,
				strerror(errno));
			tmp[0] = 0;
			goto out;
		}
		if (!hctl_tty())
			hctl_progress("%s: packing %s", name, package);
		if (pack_dir(package, fd, &ps, err, sizeof(err))) {
			hctl_progress_done();
			fprintf(stderr, "hearthctl: packing %s: %s\n", package, err);
			close(fd);
			goto out;
		}
		close(fd);
		if (hctl_tty())
			hctl_progress("%s: packed %s: %ld files, %s", name, package, ps.files,
				      hctl_bytes((double)ps.bytes, sz, sizeof(sz)));
		hctl_progress_done();
		package = tmp;
	} else if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "hearthctl: %s is neither a directory nor a .tar.gz file\n", package);
		goto out;
	}
	if (!server_path) {
		f = fopen(package, "rb");
		if (!f || fstat(fileno(f), &st) != 0) {
			fprintf(stderr, "hearthctl: %s: %s\n", package, strerror(errno));
			goto out;
		}
		if (!looks_gzip(f)) {
			fprintf(stderr, "hearthctl: %s is not a gzip file; a package is a directory "
					"or a .tar.gz\n", package);
			goto out;
		}
		rq.body_file = f;
		rq.body_file_len = st.st_size;
		rq.content_type = "application/gzip";
	}
	if ((rc = hctl_request(&rq, &rs)))
		goto out;
	if (rs.status != 201) {
		rc = hctl_api_error(&rs);
		hctl_response_free(&rs);
		goto out;
	}
	out = json_loadb(rs.body, rs.len, 0, NULL);
	hctl_response_free(&rs);
	if (!out) {
		fprintf(stderr, "hearthctl: hearthd sent malformed JSON\n");
		rc = HCTL_EXIT_API;
		goto out;
	}
	if (json) {
		hctl_print_json(out);
	} else {
		printf("deployed %s version %lld (image %.12s, %s, %lld MB, timeout %lld ms, engine %s)\n",
		       name, (long long)json_integer_value(json_object_get(out, "version")),
		       json_string_value(json_object_get(out, "image_sha256")),
		       hctl_bytes((double)json_integer_value(json_object_get(out, "image_bytes")), sz,
				  sizeof(sz)),
		       (long long)json_integer_value(json_object_get(out, "memory_mb")),
		       (long long)json_integer_value(json_object_get(out, "timeout_ms")),
		       json_string_value(json_object_get(out, "engine")));
	}
	rc = 0;
out:
	json_decref(out);
	if (f)
		fclose(f);
	if (tmp[0])
		unlink(tmp);
	free(ne);
	free(ee);
	free(body);
	return rc;
}
