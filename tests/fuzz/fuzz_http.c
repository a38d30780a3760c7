/*
 * fuzz_http - hearthd's HTTP API (host/daemon/api.c) in process: the real
 * hearth_daemon library (store, auth, quota, scheduler, async queue, API on
 * libmicrohttpd) listening on a Unix socket in a temporary state directory,
 * with NO engine (nothing runs: an invoke ends in a platform error). Each
 * input is one request, sent on a fresh connection, so routing, path and
 * query decoding, header checks, JSON bodies and uploads are all reached
 * through libmicrohttpd exactly as a client reaches them.
 *
 * Input: a first line "METHOD TARGET" (no space: GET TARGET), header lines
 * up to an empty line, then the body. The harness adds the HTTP version,
 * Host, Connection: close and (unless the input has Content-Length or
 * Transfer-Encoding) a Content-Length. "@A", "@T" and "@O" are replaced by
 * the admin key, tenant fz's key and tenant other's key, so the fuzzer gets
 * past authentication.
 *
 * Checked: every request gets an HTTP response or a clean close at once
 * (only a body libmicrohttpd delimits, by Content-Length or chunked, may be
 * waited for: see exchange()); a JSON
 * response parses; tenant other never sees a byte of tenant fz's function
 * (its image digest, a random value nobody can guess); and hearthd still
 * answers /healthz afterwards (checked after every input that got no answer,
 * and every 64 inputs).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api.h"
#include "async.h"
#include "auth.h"
#include "fuzz.h"
#include "log.h"
#include "quota.h"
#include "scheduler.h"
#include "store.h"

static char dir[64], sock_path[100], admin_key[AUTH_KEY_LEN + 1], fz_key[AUTH_KEY_LEN + 1],
	other_key[AUTH_KEY_LEN + 1], secret[65];
static struct store *store;
static struct sched *sched;
static struct quota *quota;
static struct async *async;
static struct api *api;
static unsigned long runs;

struct buf {
	char *p;
	size_t n, cap;
};

static void add(struct buf *b, const void *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = (b->n + n + 1) * 2;
		char *np = realloc(b->p, cap);

		if (!np)
			abort();
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
}

/* Appends p with @A/@T/@O replaced by the keys. */
static void add_subst(struct buf *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '@' && i + 1 < n && strchr("ATO", p[i + 1])) {
			const char *k = p[i + 1] == 'A' ? admin_key : p[i + 1] == 'T' ? fz_key : other_key;

			add(b, k, strlen(k));
			i++;
			continue;
		}
		add(b, p + i, 1);
	}
}

static void fatal(const char *what)
{
	fprintf(stderr, "fuzz_http: set-up failed: %s\n", what);
	abort();
}

/* One request on a fresh connection; the response (maybe empty) goes to *resp. */
static void exchange(const char *req, size_t len, struct buf *resp, int wait_ms, bool *timed_out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t off = 0;

	if (fd < 0)
		fatal("socket");
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fatal("connect to hearthd's socket");
	while (off < len) {
		ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break; /* hearthd answered early (401, 413) and closed */
		off += (size_t)w;
	}
	/* Nothing more is coming: a body shorter than its Content-Length ends here. */
	shutdown(fd, SHUT_WR);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char chunk[16384];
		ssize_t n;
		int pr = poll(&p, 1, wait_ms);

		/*
		 * Nothing here waits on a VM, so hearthd answers at once, with one
		 * exception that is libmicrohttpd's: a body cut short by the client's
		 * half-close is sometimes noticed only at the idle timeout (its
		 * edge-triggered epoll misses the FIN that came with the data). So
		 * after wait_ms: give up on this connection, and hearthd must still
		 * answer /healthz within 10 s (a deadlock in hearthd fails that).
		 */
		if (pr == 0) {
			*timed_out = true;
			break;
		}
		if (pr < 0 && errno == EINTR) /* libFuzzer's -timeout ticks with SIGALRM */
			continue;
		assert(pr == 1);
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		add(resp, chunk, (size_t)n);
	}
	close(fd);
}

static void check_health(void)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	struct buf r = { 0 };
	bool slow = false;

	exchange(req, sizeof(req) - 1, &r, 10000, &slow);
	assert(!slow && r.n > 12 && strncmp(r.p, "HTTP/1.1 200", 12) == 0);
	free(r.p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sched_config scfg = { .max_vms = 4, .keep_warm_ms = 1000 };
	struct sched_engines eng = { 0 };
	struct async_config acfg = { .retries = 1, .backoff_ms = 10, .max_age_ms = 1000 };
	struct api_config cfg = { 0 };
	struct fn_version v = { 0 };
	/* The daemon keeps pointers to these. */
	static char path[256], snapdir[256], agent[256];
	char key_id[17];
	int64_t fz, other;
	FILE *f;

	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "/dev/shm/hearth-fuzz-http-XXXXXX");
	if (!mkdtemp(dir)) {
		snprintf(dir, sizeof(dir), "/tmp/hearth-fuzz-http-XXXXXX");
		if (!mkdtemp(dir))
			fatal("mkdtemp");
	}
	snprintf(path, sizeof(path), "%s/hearth.db", dir);
	if (store_open(path, &store))
		fatal("store_open");
	snprintf(path, sizeof(path), "%s/admin.key", dir);
	if (auth_bootstrap_admin(store, path))
		fatal("auth_bootstrap_admin");
	f = fopen(path, "r");
	if (!f || !fgets(admin_key, sizeof(admin_key), f))
		fatal("reading admin.key");
	fclose(f);
	admin_key[strcspn(admin_key, "\r\n")] = 0;
	if (store_tenant_create(store, "fz", &fz) || auth_key_create(store, fz, fz_key, key_id) ||
	    store_tenant_create(store, "other", &other) ||
	    auth_key_create(store, other, other_key, key_id))
		fatal("tenants");
	/* A function of fz's whose image digest is the secret tenant other must never see. */
	{
		FILE *r = fopen("/dev/urandom", "r");
		unsigned char b[32];

		if (!r || fread(b, 1, 32, r) != 32)
			fatal("urandom");
		fclose(r);
		for (int i = 0; i < 32; i++)
			sprintf(secret + 2 * i, "%02x", b[i]);
	}
	v.tenant_id = fz;
	snprintf(v.name, sizeof(v.name), "hello");
	snprintf(v.image_sha256, sizeof(v.image_sha256), "%s", secret);
	snprintf(v.image_path, sizeof(v.image_path), "%s/images/%s.cpio", dir, secret);
	snprintf(v.handler, sizeof(v.handler), "/var/task/bin/handler");
	snprintf(v.engine, sizeof(v.engine), "auto");
	v.args_json = "[]";
	v.env_json = "{}";
	v.memory_mb = 128;
	v.timeout_ms = 1000;
	if (store_version_add(store, &v))
		fatal("store_version_add");
	snprintf(snapdir, sizeof(snapdir), "%s/snapshots", dir);
	mkdir(snapdir, 0700);
	scfg.snapshot_dir = snapdir;
	if (sched_create(&scfg, &eng, store, &sched) || quota_create(store, &quota))
		fatal("scheduler");
	acfg.quota = quota;
	if (async_start(&acfg, store, sched, &async))
		fatal("async_start");
	/* The image builder copies the agent into images; any file will do. */
	snprintf(agent, sizeof(agent), "%s/agent", dir);
	f = fopen(agent, "w");
	if (!f || fputs("\177ELF stand-in agent\n", f) < 0 || fclose(f))
		fatal("agent stand-in");
	snprintf(sock_path, sizeof(sock_path), "%s/api.sock", dir);
	cfg.unix_path = sock_path;
	cfg.state_dir = dir;
	cfg.agent_bin = agent;
	cfg.busybox = agent;
	cfg.allow_server_path_deploy = false;
	cfg.quota = quota;
	cfg.host_capacity = 4;
	cfg.unreserved_floor = 1;
	cfg.threads = 2;
	cfg.max_package = 1u << 20;
	if (api_start(&cfg, store, sched, async, &api))
		fatal("api_start");
	/* Request logs would drown libFuzzer's output; -close_fd_mask=2 hides them. */
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* The state directory goes with the process (it lives in /dev/shm: RAM). */
static void __attribute__((destructor)) cleanup(void)
{
	if (dir[0])
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static bool has_header(const char *h, size_t n, const char *name)
{
	size_t l = strlen(name);

	for (size_t i = 0; i + l <= n; i++)
		if ((i == 0 || h[i - 1] == '\n') && strncasecmp(h + i, name, l) == 0)
			return true;
	return false;
}

/* Whether the one Transfer-Encoding header says exactly "chunked". */
static bool chunked_only(const char *h, size_t n)
{
	static const char name[] = "transfer-encoding:";
	const char *v = NULL;
	size_t count = 0;

	for (size_t i = 0; i + sizeof(name) - 1 <= n; i++)
		if ((i == 0 || h[i - 1] == '\n') && strncasecmp(h + i, name, sizeof(name) - 1) == 0) {
			v = h + i + sizeof(name) - 1;
			count++;
		}
	if (count != 1)
		return false;
	while (v < h + n && (*v == ' ' || *v == '\t'))
		v++;
	if ((size_t)(h + n - v) < 7 || strncasecmp(v, "chunked", 7))
		return false;
	for (v += 7; v < h + n && *v != '\n'; v++)
		if (*v != ' ' && *v != '\t' && *v != '\r')
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data, *end = in + size;
	const char *nl = memchr(in, '\n', size), *hdr, *hend, *body;
	struct buf req = { 0 }, resp = { 0 };
	size_t llen = nl ? (size_t)(nl - in) : size;
	bool by_other, may_wait, slow = false;

	/* Request line. */
	if (!memchr(in, ' ', llen))
		add(&req, "GET ", 4);
	add_subst(&req, in, llen);
	add(&req, " HTTP/1.1\r\nHost: hearth\r\nConnection: close\r\n", 44);
	/* Headers: up to an empty line. */
	hdr = nl ? nl + 1 : end;
	hend = hdr;
	while (hend < end && *hend != '\n') {
		const char *e = memchr(hend, '\n', (size_t)(end - hend));

		add_subst(&req, hend, e ? (size_t)(e - hend) : (size_t)(end - hend));
		add(&req, "\r\n", 2);
		hend = e ? e + 1 : end;
	}
	body = hend < end ? hend + 1 : end;
	if (!has_header(hdr, (size_t)(hend - hdr), "content-length:") &&
	    !has_header(hdr, (size_t)(hend - hdr), "transfer-encoding:")) {
		char cl[48];
		int n = snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", (size_t)(end - body));

		add(&req, cl, (size_t)n);
	}
	add(&req, "\r\n", 2);
	add_subst(&req, body, (size_t)(end - body));
	/* Bodies libmicrohttpd delimits itself, and so may wait for (see exchange()). */
	may_wait = has_header(hdr, (size_t)(hend - hdr), "content-length:") ||
		   chunked_only(hdr, (size_t)(hend - hdr));
	by_other = strstr(req.p, other_key) && !strstr(req.p, admin_key) && !strstr(req.p, fz_key);

	exchange(req.p, req.n, &resp, 500, &slow);
	if (slow && !may_wait) {
		/*
		 * Once more before believing it: on a loaded machine (this harness runs at
		 * SCHED_IDLE beside builds) 500 ms can pass without hearthd being scheduled.
		 * A request hearthd really waits on is slow every time.
		 */
		resp.n = 0;
		if (resp.p)
			resp.p[0] = 0;
		slow = false;
		exchange(req.p, req.n, &resp, 500, &slow);
	}
	/* Any other request is answered at once (a body it cannot delimit is refused). */
	assert(!slow || may_wait);
	if (resp.n) {
		const char *sep = strstr(resp.p, "\r\n\r\n");

		/* An HTTP response: a status line, and a JSON body that parses. */
		assert(strncmp(resp.p, "HTTP/1.", 7) == 0);
		/* (An answer to HEAD has the headers of one with a body, and no body.) */
		if (sep && strncmp(req.p, "HEAD ", 5) != 0 &&
		    has_header(resp.p, (size_t)(sep - resp.p), "content-type: application/json")) {
			json_error_t je;
			size_t blen = resp.n - (size_t)(sep + 4 - resp.p);
			/*
			 * libmicrohttpd takes a header line that starts with NUL for the
			 * header's end and reads the rest as another request, so such a
			 * request may get a second answer after the first (hearthd refuses
			 * a NUL it can see, in a field, with 400 and closes; this one it
			 * cannot see). Only then: the first answer's body, by its length.
			 */
			const char *he = memmem(req.p, req.n, "\r\n\r\n", 4);

			if (he && memchr(req.p, 0, (size_t)(he - req.p))) {
				const char *cl = memmem(resp.p, (size_t)(sep - resp.p), "Content-Length: ", 16);

				if (cl && strtoul(cl + 16, NULL, 10) < blen)
					blen = strtoul(cl + 16, NULL, 10);
			}
			/* Payloads may hold NUL, which JSON carries as \u0000: valid, and allowed. */
			json_t *j = json_loadb(sep + 4, blen, JSON_ALLOW_NUL, &je);

			if (!j)
				fprintf(stderr, "fuzz_http: JSON answer does not parse (%s at %d):\n%.*s\n",
					je.text, je.position, (int)(resp.n < 4096 ? resp.n : 4096), resp.p);
			assert(j);
			json_decref(j);
		}
		/* Tenant isolation: nothing of fz's reaches other (unless other sent it). */
		if (by_other && !memmem(req.p, req.n, secret, 64))
			assert(!memmem(resp.p, resp.n, secret, 64));
	}
	if (!resp.n || ++runs % 64 == 0)
		check_health();
	free(req.p);
	free(resp.p);
	return 0;
}
