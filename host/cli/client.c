/*
 * client.c - hearthctl's side of the hearthd API; see client.h.
 */
#include "client.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define DEFAULT_SOCKET "/run/hearth/hearthd.sock"
#define DEFAULT_TCP "http://127.0.0.1:7070"
#define DEFAULT_KEY_FILE "/var/lib/hearth/admin.key"
#define MAX_KEY_LEN 512

enum { OPT_URL = 0x1001, OPT_KEY, OPT_TENANT };

struct hctl_globals hctl_g;

static struct {
	CURL *curl;
	char base[1024];     /* http://host:port, no trailing slash */
	char *sock;          /* Unix socket path, or NULL */
	char *key;           /* resolved key, or NULL */
	const char *key_src; /* where the key came from, for error hints */
	bool resolved;
} conn;

static const struct option global_opts[] = {
	{ "url", required_argument, NULL, OPT_URL },
	{ "key", required_argument, NULL, OPT_KEY },
	{ "tenant", required_argument, NULL, OPT_TENANT },
	{ "verbose", no_argument, NULL, 'v' },
};
#define NGLOBAL (sizeof(global_opts) / sizeof(global_opts[0]))

void hctl_usage_globals(FILE *f)
{
	fprintf(f,
		"global options (anywhere on the command line):\n"
		"  --url URL      hearthd endpoint: http://HOST:PORT, HOST:PORT or unix:/PATH (default\n"
		"                 $HEARTH_URL,"
		" else unix:%s if it exists, else %s)\n"
		"  --key KEY      API key, or @FILE to read it from a file (default $HEARTH_KEY, else\n"
		"                 %s when readable)\n"
		"  --tenant NAME  act for this tenant with the admin key (default $HEARTH_TENANT)\n"
		"  -v, --verbose  show requests and metering headers on stderr\n"
		"exit status: 0 ok, 1 function error or local failure, 2 usage, 3 error answer from\n"
		"hearthd, 4 hearthd unreachable\n",
		DEFAULT_SOCKET, DEFAULT_TCP, DEFAULT_KEY_FILE);
}

static bool take_global(int c)
{
	switch (c) {
	case OPT_URL: hctl_g.url = optarg; return true;
	case OPT_KEY: hctl_g.key = optarg; return true;
	case OPT_TENANT: hctl_g.tenant = optarg; return true;
	case 'v': hctl_g.verbose = true; return true;
	default: return false;
	}
}

int hctl_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts)
{
	/* The merged table is rebuilt when a different command's table comes in. */
	static const struct option *last;
	static struct option *merged;
	static char *shorts;
	int c;

	if (last != longopts || !merged) {
		size_t n = 0;

		while (longopts && longopts[n].name)
			n++;
		free(merged);
		free(shorts);
		merged = calloc(n + NGLOBAL + 1, sizeof(*merged));
		if (!merged || asprintf(&shorts, "%sv", shortopts) < 0) {
			fprintf(stderr, "hearthctl: out of memory\n");
			exit(HCTL_EXIT_FAIL);
		}
		if (n)
			memcpy(merged, longopts, n * sizeof(*merged));
		memcpy(merged + n, global_opts, sizeof(global_opts));
		last = longopts;
	}
	while ((c = getopt_long(argc, argv, shorts, merged, NULL)) != -1)
		if (!take_global(c))
			return c;
	return -1;
}

/*
 * By hand rather than with getopt: a getopt_long("+...") call here would leave
 * glibc's getopt in no-permutation mode for the command's own parsing.
 */
int hctl_leading_globals(int argc, char **argv)
{
	static const struct {
		const char *name;
		const char **dst;
	} opts[] = { { "--url", &hctl_g.url }, { "--key", &hctl_g.key }, { "--tenant", &hctl_g.tenant } };
	int i = 1;

	while (i < argc && argv[i][0] == '-' && strcmp(argv[i], "-h") && strcmp(argv[i], "--help") &&
	       strcmp(argv[i], "--version")) {
		bool known = false;

		if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
			hctl_g.verbose = true;
			i++;
			continue;
		}
		for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
			size_t n = strlen(opts[k].name);

			if (strncmp(argv[i], opts[k].name, n) == 0 && argv[i][n] == '=') {
				*opts[k].dst = argv[i] + n + 1;
				known = true;
				i++;
				break;
			}
			if (strcmp(argv[i], opts[k].name) == 0) {
				if (i + 1 >= argc) {
					fprintf(stderr, "hearthctl: %s needs a value\n", argv[i]);
					return -1;
				}
				*opts[k].dst = argv[i + 1];
				known = true;
				i += 2;
				break;
			}
		}
		if (!known) {
			fprintf(stderr, "hearthctl: unknown global option '%s'\n", argv[i]);
			return -1;
		}
	}
	return i < argc ? i : -1;
}

long long hctl_parse_count(const char *opt, const char *s, long long max)
{
	char *end;
	long long n;

	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno || end == s || *end || n < 0 || n > max) {
		fprintf(stderr, "hearthctl: %s wants a whole number 0..%lld, got '%s'\n", opt, max, s);
		return -1;
	}
	return n;
}

/* ---- endpoint and key ---------------------------------------------------------- */

static char *read_key_file(const char *path, bool quiet)
{
	char buf[MAX_KEY_LEN + 2];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f) {
		if (!quiet)
			fprintf(stderr, "hearthctl: cannot read the key file %s: %s\n", path,
				strerror(errno));
		return NULL;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	while (n && isspace((unsigned char)buf[n - 1]))
		buf[--n] = 0;
	return strdup(buf);
}

static bool key_ok(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > MAX_KEY_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isgraph((unsigned char)k[i]))
			return false; /* no spaces or line breaks: it goes into a header */
	return true;
}

static int resolve(void)
{
	const char *url = hctl_g.url ? hctl_g.url : getenv("HEARTH_URL");
	const char *key = hctl_g.key ? hctl_g.key : getenv("HEARTH_KEY");
	struct stat st;

	if (conn.resolved)
		return 0;
	if (!url || !*url)
		url = stat(DEFAULT_SOCKET, &st) == 0 && S_ISSOCK(st.st_mode) ? "unix:" DEFAULT_SOCKET :
									       DEFAULT_TCP;
	hctl_g.url = url;
	if (strncmp(url, "unix:", 5) == 0 && url[5]) {
		conn.sock = strdup(url + 5);
		snprintf(conn.base, sizeof(conn.base), "http://localhost");
	} else if ((strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0) &&
		   strlen(url) < sizeof(conn.base)) {
		size_t n;

		snprintf(conn.base, sizeof(conn.base), "%s", url);
		n = strlen(conn.base);
		while (n && conn.base[n - 1] == '/')
			conn.base[--n] = 0;
	} else if (!strstr(url, "://") && url[0] != '/' && strchr(url, ':') &&
		   strlen(url) + 7 < sizeof(conn.base)) {
		snprintf(conn.base, sizeof(conn.base), "http://%s", url); /* HOST:PORT */
	} else {
		fprintf(stderr, "hearthctl: --url wants http://HOST:PORT or unix:/PATH, got '%s'\n", url);
		return HCTL_EXIT_USAGE;
	}
	if (key && key[0] == '@') {
		conn.key = read_key_file(key + 1, false);
		if (!conn.key)
			return HCTL_EXIT_USAGE;
		conn.key_src = key;
	} else if (key && *key) {
		conn.key = strdup(key);
		conn.key_src = hctl_g.key ? "--key" : "$HEARTH_KEY";
	} else if (access(DEFAULT_KEY_FILE, R_OK) == 0) {
		conn.key = read_key_file(DEFAULT_KEY_FILE, true);
		conn.key_src = DEFAULT_KEY_FILE;
	}
	if (conn.key && !key_ok(conn.key)) {
		fprintf(stderr, "hearthctl: the API key from %s is malformed (empty, too long or "
				"with spaces)\n", conn.key_src);
		return HCTL_EXIT_USAGE;
	}
	if (!hctl_g.tenant)
		hctl_g.tenant = getenv("HEARTH_TENANT");
	if (hctl_g.tenant && (!*hctl_g.tenant || strpbrk(hctl_g.tenant, "\r\n"))) {
		fprintf(stderr, "hearthctl: --tenant wants a tenant name\n");
		return HCTL_EXIT_USAGE;
	}
	conn.curl = curl_easy_init();
	if (!conn.curl) {
		fprintf(stderr, "hearthctl: curl_easy_init failed\n");
		return HCTL_EXIT_FAIL;
	}
	conn.resolved = true;
	return 0;
}

bool hctl_have_key(void)
{
	return conn.key != NULL;
}

void hctl_cleanup(void)
{
	if (conn.curl)
		curl_easy_cleanup(conn.curl);
	free(conn.sock);
	free(conn.key);
	memset(&conn, 0, sizeof(conn));
}

char *hctl_escape(const char *segment)
{
	char *e = curl_easy_escape(NULL, segment, 0), *copy;

	if (!e) {
		fprintf(stderr, "hearthctl: out of memory\n");
		exit(HCTL_EXIT_FAIL);
	}
	copy = strdup(e);
	curl_free(e);
	return copy;
}

/* ---- progress ---------------------------------------------------------------- */

static bool progress_open;

bool hctl_tty(void)
{
	static int tty = -1;

	if (tty < 0)
		tty = isatty(STDERR_FILENO) && getenv("TERM") && strcmp(getenv("TERM"), "dumb");
	return tty;
}

void hctl_progress(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (hctl_tty()) {
		fputs("\r\033[K", stderr);
		vfprintf(stderr, fmt, ap);
		progress_open = true;
	} else {
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
	fflush(stderr);
}

void hctl_progress_erase(void)
{
	if (progress_open)
		fputs("\r\033[K", stderr);
	progress_open = false;
}

void hctl_progress_done(void)
{
	if (progress_open)
		fputc('\n', stderr);
	progress_open = false;
}

const char *hctl_bytes(double n, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB" };
	int u = 0;

	while (n >= 1024 && u < 3) {
		n /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", n, unit[u]);
	return buf;
}

struct xfer {
	const struct hctl_request *rq;
	struct timespec start, last;
	int phase; /* 0 nothing shown, 1 uploading shown, 2 waiting shown */
};

static double secs_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (now.tv_nsec - t->tv_nsec) / 1e9;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = arg;
	const struct hctl_request *rq = x->rq;
	bool tty = hctl_tty();
	char a[32], b[32] = "";

	long long body = rq->body_file ? rq->body_file_len : (long long)rq->body_len;

	if ((rq->progress_transient && !tty) || secs_since(&x->start) < rq->progress_after_s)
		return 0;
	if (body > 0 && ultotal <= 0)
		return 0; /* curl does not know the upload yet */
	if (body > 0 && ulnow < ultotal) {
		/* Redraw at most ten times a second; without a TTY say it once. */
		if (tty ? secs_since(&x->last) < 0.1 : x->phase >= 1)
			return 0;
		clock_gettime(CLOCK_MONOTONIC, &x->last);
		if (tty)
			hctl_progress("%s: uploading %s / %s (%d%%)", rq->progress,
				      hctl_bytes((double)ulnow, a, sizeof(a)),
				      hctl_bytes((double)ultotal, b, sizeof(b)),
				      (int)(ulnow * 100 / ultotal));
		else
			hctl_progress("%s: uploading %s", rq->progress,
				      hctl_bytes((double)ultotal, b, sizeof(b)));
		x->phase = 1;
		return 0;
	}
	if (dlnow > 0 || !rq->progress_wait)
		return 0;
	if (tty ? secs_since(&x->last) < 0.1 : x->phase >= 2)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &x->last);
	if (ultotal > 0)
		snprintf(a, sizeof(a), "uploaded %s; ", hctl_bytes((double)ultotal, b, sizeof(b)));
	else
		a[0] = 0;
	if (tty) {
		static const char spin[] = "|/-\\";
		double t = secs_since(&x->start);

		hctl_progress("%s: %s%s %c %.1fs", rq->progress, a, rq->progress_wait,
			      spin[(int)(t * 10) % 4], t);
	} else {
		hctl_progress("%s: %s%s", rq->progress, a, rq->progress_wait);
	}
	x->phase = 2;
	return 0;
}

/* ---- requests ---------------------------------------------------------------- */

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct hctl_response *rs = arg;
	size_t add = sz * n;
	char *nb = realloc(rs->body, rs->len + add + 1);

	if (!nb)
		return 0; /* aborts the transfer */
	memcpy(nb + rs->len, p, add);
	rs->body = nb;
	rs->len += add;
	rs->body[rs->len] = 0;
	return add;
}

static void free_headers(struct hctl_response *rs)
{
	for (size_t i = 0; i < rs->nheaders; i++) {
		free(rs->headers[i].name);
		free(rs->headers[i].value);
	}
	free(rs->headers);
	rs->headers = NULL;
	rs->nheaders = 0;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
	struct hctl_response *rs = arg;
	size_t len = sz * n, nl, vl;
	const char *colon = memchr(p, ':', len);
	struct hctl_header *nh;

	if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
		free_headers(rs); /* a new status line (after "100 Continue") starts over */
		return len;
	}
	if (!colon)
		return len;
	nl = (size_t)(colon - p);
	vl = len - nl - 1;
	colon++;
	while (vl && (*colon == ' ' || *colon == '\t')) {
		colon++;
		vl--;
	}
	while (vl && (colon[vl - 1] == '\r' || colon[vl - 1] == '\n' || colon[vl - 1] == ' '))
		vl--;
	nh = realloc(rs->headers, (rs->nheaders + 1) * sizeof(*nh));
	if (!nh)
		return 0;
	rs->headers = nh;
	nh[rs->nheaders].name = strndup(p, nl);
	nh[rs->nheaders].value = strndup(colon, vl);
	if (!nh[rs->nheaders].name || !nh[rs->nheaders].value)
		return 0;
	rs->nheaders++;
	return len;
}

const char *hctl_header(const struct hctl_response *rs, const char *name)
{
	for (size_t i = 0; i < rs->nheaders; i++)
		if (strcasecmp(rs->headers[i].name, name) == 0)
			return rs->headers[i].value;
	return NULL;
}

void hctl_response_free(struct hctl_response *rs)
{
	free(rs->body);
	free_headers(rs);
	memset(rs, 0, sizeof(*rs));
}

int hctl_request(const struct hctl_request *rq, struct hctl_response *rs)
{
	struct curl_slist *hl = NULL;
	char url[2048], errbuf[CURL_ERROR_SIZE] = "", *line = NULL;
	struct xfer x = { .rq = rq };
	CURLcode cc;
	CURL *c;
	int rc;

	memset(rs, 0, sizeof(*rs));
	if ((rc = resolve()))
		return rc;
	c = conn.curl;
	curl_easy_reset(c);
	snprintf(url, sizeof(url), "%s%s", conn.base, rq->path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	if (conn.sock)
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, conn.sock);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, rq->method);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, rs);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, rs);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "hearthctl/" HEARTH_VERSION);
	if (strcmp(rq->method, "GET") && strcmp(rq->method, "DELETE")) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		if (rq->body_file) {
			curl_easy_setopt(c, CURLOPT_READDATA, rq->body_file);
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_file_len);
		} else {
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
		}
		if (asprintf(&line, "Content-Type: %s",
			     rq->content_type ? rq->content_type : "application/json") < 0)
			line = NULL;
		hl = curl_slist_append(hl, line ? line : "Content-Type: application/octet-stream");
		free(line);
		/* The answer to an upload is awaited anyway; skip the 1 s Expect wait. */
		hl = curl_slist_append(hl, "Expect:");
	}
	if (conn.key && !rq->no_auth) {
		if (asprintf(&line, "Authorization: Bearer %s", conn.key) >= 0) {
			hl = curl_slist_append(hl, line);
			free(line);
		}
	}
	if (hctl_g.tenant && !rq->no_tenant && !rq->no_auth) {
		if (asprintf(&line, "X-Hearth-Tenant: %s", hctl_g.tenant) >= 0) {
			hl = curl_slist_append(hl, line);
			free(line);
		}
	}
	for (size_t i = 0; rq->headers && rq->headers[i]; i++)
		hl = curl_slist_append(hl, rq->headers[i]);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	if (rq->progress) {
		clock_gettime(CLOCK_MONOTONIC, &x.start);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, &x);
	}
	if (hctl_g.verbose)
		fprintf(stderr, "> %s %s%s%s\n", rq->method, conn.sock ? "unix:" : "",
			conn.sock ? conn.sock : "", url + (conn.sock ? strlen(conn.base) : 0));
	cc = curl_easy_perform(c);
	curl_slist_free_all(hl);
	if (rq->progress && rq->progress_transient)
		hctl_progress_erase();
	else if (rq->progress)
		hctl_progress_done();
	if (cc != CURLE_OK) {
		fprintf(stderr, "hearthctl: no answer from hearthd at %s: %s\n", hctl_g.url,
			errbuf[0] ? errbuf : curl_easy_strerror(cc));
		if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
			fprintf(stderr, "hearthctl: is hearthd running? (set --url or $HEARTH_URL)\n");
		hctl_response_free(rs);
		return HCTL_EXIT_UNREACHABLE;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &rs->status);
	if (hctl_g.verbose)
		fprintf(stderr, "< %ld (%zu bytes)\n", rs->status, rs->len);
	if (!rs->body) {
		rs->body = strdup("");
		if (!rs->body)
			return HCTL_EXIT_FAIL;
	}
	return 0;
}

int hctl_api_error(const struct hctl_response *rs)
{
	json_t *j = json_loadb(rs->body ? rs->body : "", rs->len, 0, NULL);
	const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
	const char *msg =
		json_string_value(json_object_get(json_object_get(j, "error"), "message"));

	const char *rid =
		json_string_value(json_object_get(json_object_get(j, "error"), "request_id"));
	const char *retry = hctl_header(rs, "Retry-After");

	if (code && msg) {
		fprintf(stderr, "hearthctl: %s: %s%s%s%s\n", code, msg, rid ? " (request " : "",
			rid ? rid : "", rid ? ")" : "");
	} else {
		int n = (int)strcspn(rs->body ? rs->body : "", "\n");

		fprintf(stderr, "hearthctl: HTTP %ld from hearthd%s%.*s\n", rs->status,
			n ? ": " : "", n > 200 ? 200 : n, rs->body ? rs->body : "");
	}
	if (retry)
		fprintf(stderr, "hearthctl: hearthd asks to retry after %s s\n", retry);
	if (rs->status == 401)
		fprintf(stderr, "hearthctl: %s\n",
			conn.key ? "the key was refused (check --key or $HEARTH_KEY)" :
				   "no API key given (--key, $HEARTH_KEY, or a readable "
				   DEFAULT_KEY_FILE ")");
	json_decref(j);
	return HCTL_EXIT_API;
}

int hctl_call(const char *method, const char *path, json_t *body, bool no_tenant, json_t **out)
{
	struct hctl_request rq = { .method = method, .path = path, .no_tenant = no_tenant };
	struct hctl_response rs;
	char *text = NULL;
	json_error_t je;
	int rc;

	if (out)
		*out = NULL;
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		json_decref(body);
		if (!text) {
			fprintf(stderr, "hearthctl: cannot encode the request\n");
			return HCTL_EXIT_FAIL;
		}
		rq.body = text;
		rq.body_len = strlen(text);
	}
	rc = hctl_request(&rq, &rs);
	free(text);
	if (rc)
		return rc;
	if (rs.status < 200 || rs.status > 299) {
		rc = hctl_api_error(&rs);
		hctl_response_free(&rs);
		return rc;
	}
	if (out) {
		*out = json_loadb(rs.body, rs.len, JSON_ALLOW_NUL, &je);
		if (!*out) {
			fprintf(stderr, "hearthctl: hearthd sent malformed JSON: %s\n", je.text);
			rc = HCTL_EXIT_API;
		}
	}
	hctl_response_free(&rs);
	return rc;
}

void hctl_print_json(const json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	putchar('\n');
}

const char *hctl_time(const json_t *epoch_s, char *buf, size_t len)
{
	time_t t = (time_t)json_integer_value(epoch_s);
	struct tm tm;

	if (!json_is_integer(epoch_s) || !gmtime_r(&t, &tm) ||
	    !strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm))
		snprintf(buf, len, "%s", "");
	return buf;
}
