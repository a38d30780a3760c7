/*
 * harness.c - starts the real hearthd for tests and talks HTTP to it (libcurl).
 * Shared by the daemon and quota suites; see harness.h.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t n = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	getsockname(fd, (struct sockaddr *)&sa, &n);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
	char **buf = ((char ***)ud)[0];
	size_t *len = ((size_t **)ud)[1];
	char *nb = realloc(*buf, *len + sz * n + 1);

	if (!nb)
		return 0;
	memcpy(nb + *len, p, sz * n);
	*len += sz * n;
	nb[*len] = 0;
	*buf = nb;
	return sz * n;
}

void resp_free(struct resp *r)
{
	free(r->body);
	free(r->hdrs);
	memset(r, 0, sizeof(*r));
}

long http_ex(struct hd *h, const char *method, const char *path, const char *key,
	     const char *tenant, const void *body, size_t len, const struct http_opts *o,
	     struct resp *r)
{
	static const struct http_opts defaults;
	CURL *c = curl_easy_init();
	struct curl_slist *hl = NULL;
	char url[8192], auth[256], th[160];
	void *bud[2] = { &r->body, &r->len }, *hud[2] = { &r->hdrs, &r->hlen };

	if (!o)
		o = &defaults;
	memset(r, 0, sizeof(*r));
	if (h->use_unix) {
		char sock[128];

		snprintf(sock, sizeof(sock), "%s/api.sock", h->dir);
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
		snprintf(url, sizeof(url), "http://localhost%s", path);
	} else {
		snprintf(url, sizeof(url), "%s%s", h->base, path);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (o->aws_sigv4)
		curl_easy_setopt(c, CURLOPT_AWS_SIGV4, o->aws_sigv4);
	if (o->userpwd)
		curl_easy_setopt(c, CURLOPT_USERPWD, o->userpwd);
	if (key) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
		hl = curl_slist_append(hl, auth);
	}
	if (tenant) {
		snprintf(th, sizeof(th), "X-Hearth-Tenant: %s", tenant);
		hl = curl_slist_append(hl, th);
	}
	for (size_t i = 0; o->hdrs && o->hdrs[i]; i++)
		hl = curl_slist_append(hl, o->hdrs[i]);
	if (!o->allow_expect)
		hl = curl_slist_append(hl, "Expect:");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, bud);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, hud);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, o->timeout_s ? o->timeout_s : 120L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	return r->status;
}

long http(struct hd *h, const char *method, const char *path, const char *key,
		 const char *tenant, const void *body, size_t len, const char *extra, struct resp *r)
{
	const char *hdrs[] = { extra, NULL };
	struct http_opts o = { .hdrs = hdrs };

	return http_ex(h, method, path, key, tenant, body, len, &o, r);
}

/* Value of a response header (static buffer), or NULL. */
const char *hdr(struct resp *r, const char *name)
{
	static char val[512];
	size_t n = strlen(name);

	for (char *p = r->hdrs; p && *p;) {
		char *eol = strstr(p, "\r\n");

		if (!eol)
			break;
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			size_t l = (size_t)(eol - (p + n + 1));

			snprintf(val, sizeof(val), "%.*s", (int)l, p + n + 1);
			char *v = val;
			while (*v == ' ')
				v++;
			return v;
		}
		p = eol + 2;
	}
	return NULL;
}

json_t *body_json(struct resp *r)
{
	json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);

	assert_non_null(j);
	return j;
}

const char *error_code(struct resp *r)
{
	static char code[64];
	json_t *j = body_json(r);

	snprintf(code, sizeof(code), "%s",
		 json_string_value(json_object_get(json_object_get(j, "error"), "code")) ?: "");
	json_decref(j);
	return code;
}

void hd_start_args(struct hd *h, const char *const *extra)
{
	char state[128], run[128], sock[128], listen[64], log[128], keyf[160];
	const char *argv[40];
	int n = 0;

	snprintf(state, sizeof(state), "%s/state", h->dir);
	snprintf(run, sizeof(run), "%s/run", h->dir);
	snprintf(sock, sizeof(sock), "%s/api.sock", h->dir);
	snprintf(log, sizeof(log), "%s/hearthd.log", h->dir);
	if (!h->port)
		h->port = free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", h->port);
	snprintf(h->base, sizeof(h->base), "http://127.0.0.1:%d", h->port);
	argv[n++] = HEARTHD_BIN;
	/* Never an installed /etc/hearth/hearthd.conf (a case may name its own file later). */
	argv[n++] = "--config";
	argv[n++] = "none";
	argv[n++] = "--state-dir";
	argv[n++] = state;
	argv[n++] = "--run-dir";
	argv[n++] = run;
	argv[n++] = "--socket";
	argv[n++] = sock;
	argv[n++] = "--listen";
	argv[n++] = listen;
	argv[n++] = "--async-backoff-ms";
	argv[n++] = "100";
	argv[n++] = "--verbose";
	/* Sanitizer builds link the agent dynamically; they pass a static one here. */
	if (getenv("HEARTH_TEST_AGENT")) {
		argv[n++] = "--agent";
		argv[n++] = getenv("HEARTH_TEST_AGENT");
	}
	for (size_t i = 0; extra && extra[i]; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	h->pid = fork();
	assert_true(h->pid >= 0);
	if (h->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		dup2(fd, 2);
		dup2(fd, 1);
		if (h->nofile) {
			struct rlimit rl = { 256, h->nofile };

			setrlimit(RLIMIT_NOFILE, &rl);
		}
		execv(HEARTHD_BIN, (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 300; i++) {
		struct resp r;

		if (http(h, "GET", "/healthz", NULL, NULL, NULL, 0, NULL, &r) == 200) {
			resp_free(&r);
			break;
		}
		resp_free(&r);
		assert_int_equal(waitpid(h->pid, NULL, WNOHANG), 0); /* still starting, not dead */
		usleep(50000);
	}
	snprintf(keyf, sizeof(keyf), "%s/admin.key", state);
	FILE *f = fopen(keyf, "r");
	assert_non_null(f);
	assert_non_null(fgets(h->admin, sizeof(h->admin), f));
	fclose(f);
	h->admin[strcspn(h->admin, "\n")] = 0;
	struct stat st;
	assert_int_equal(stat(keyf, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600); /* the admin key is private */
}

const char *const process_engine[] = { "--engine", "process", "--allow-unisolated", NULL };

void hd_start(struct hd *h)
{
	hd_start_args(h, process_engine);
}

void hd_alive(struct hd *h)
{
	struct resp r;

	assert_int_equal(waitpid(h->pid, NULL, WNOHANG), 0);
	assert_int_equal(http(h, "GET", "/healthz", NULL, NULL, NULL, 0, NULL, &r), 200);
	resp_free(&r);
}

void hd_stop(struct hd *h)
{
	int st = 0;

	hd_alive(h);
	kill(h->pid, SIGTERM);
	for (int i = 0; i < 600 && waitpid(h->pid, &st, WNOHANG) == 0; i++)
		usleep(50000);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

int setup(void **state)
{
	struct hd *h = calloc(1, sizeof(*h));

	strcpy(h->dir, "/tmp/hearth-dt.XXXXXX");
	if (!mkdtemp(h->dir))
		return -1;
	*state = h;
	return 0;
}

int teardown(void **state)
{
	struct hd *h = *state;
	char cmd[128];

	if (h->pid > 0 && waitpid(h->pid, NULL, WNOHANG) == 0) {
		kill(h->pid, SIGKILL);
		waitpid(h->pid, NULL, 0);
	}
	/* A case that mounted its own state directory (test_disk_full) and failed. */
	snprintf(cmd, sizeof(cmd), "%s/state", h->dir);
	umount2(cmd, MNT_DETACH);
	if (getenv("HEARTH_KEEP_TEST_DIRS") == NULL) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", h->dir);
		if (system(cmd) != 0) {
			/* best effort */
		}
	} else {
		fprintf(stderr, "kept %s\n", h->dir);
	}
	free(h);
	return 0;
}

char *tenant_create(struct hd *h, const char *name)
{
	struct resp r;
	char body[128];
	json_t *j;
	char *key;

	snprintf(body, sizeof(body), "{\"name\": \"%s\"}", name);
	assert_int_equal(http(h, "POST", "/v1/tenants", h->admin, NULL, body, strlen(body), NULL, &r),
			 201);
	j = body_json(&r);
	key = strdup(json_string_value(json_object_get(j, "api_key")));
	assert_int_equal(strncmp(key, "hk_", 3), 0);
	json_decref(j);
	resp_free(&r);
	return key;
}

/* Packs a package directory into a tar.gz and reads it into memory. */
char *pack(struct hd *h, const char *dir, size_t *len)
{
	char out[160], cmd[512];
	FILE *f;
	char *buf;
	long n;

	snprintf(out, sizeof(out), "%s/pkg-%d.tgz", h->dir, rand());
	snprintf(cmd, sizeof(cmd), "tar -C '%s' -czf '%s' .", dir, out);
	assert_int_equal(system(cmd), 0);
	f = fopen(out, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

void deploy(struct hd *h, const char *key, const char *name, const char *dir,
		   const char *query)
{
	char path[256];
	size_t len;
	char *pkg = pack(h, dir, &len);
	struct resp r;

	snprintf(path, sizeof(path), "/v1/functions/%s%s", name, query ? query : "");
	if (http(h, "POST", path, key, NULL, pkg, len, "Content-Type: application/gzip", &r) != 201)
		fprintf(stderr, "deploy failed: %ld %s\n", r.status, r.body);
	assert_int_equal(r.status, 201);
	free(pkg);
	resp_free(&r);
}

long invoke(struct hd *h, const char *key, const char *name, const char *event,
		   const char *extra, struct resp *r)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/functions/%s/invoke", name);
	return http(h, "POST", path, key, NULL, event, strlen(event), extra, r);
}


json_t *wait_event(struct hd *h, const char *key, const char *id, const char *want)
{
	char path[128];

	snprintf(path, sizeof(path), "/v1/invocations/%s", id);
	for (int i = 0; i < 300; i++) {
		struct resp r;
		json_t *j;

		assert_int_equal(http(h, "GET", path, key, NULL, NULL, 0, NULL, &r), 200);
		j = body_json(&r);
		resp_free(&r);
		if (strcmp(json_string_value(json_object_get(j, "state")), want) == 0)
			return j;
		json_decref(j);
		usleep(50000);
	}
	fail_msg("event %s never reached state %s", id, want);
	return NULL;
}

int metric(struct hd *h, const char *name)
{
	struct resp r;
	const char *p;
	int v = -1;

	assert_int_equal(http(h, "GET", "/metrics", NULL, NULL, NULL, 0, NULL, &r), 200);
	p = strstr(r.body, name);
	while (p && p != r.body && p[-1] != '\n')
		p = strstr(p + 1, name);
	if (p)
		v = atoi(p + strlen(name) + 1);
	resp_free(&r);
	return v;
}

/* ---- bursts: many requests at once (curl multi) --------------------------------- */

static size_t par_body(char *p, size_t sz, size_t n, void *ud)
{
	struct par *r = ud;
	size_t take = sz * n;

	if (r->len + take >= sizeof(r->body))
		take = sizeof(r->body) - 1 - r->len;
	memcpy(r->body + r->len, p, take);
	r->len += take;
	r->body[r->len] = 0;
	return sz * n;
}

static size_t par_hdr(char *p, size_t sz, size_t n, void *ud)
{
	struct par *r = ud;
	size_t len = sz * n;

	if (len > 13 && strncasecmp(p, "Retry-After: ", 13) == 0)
		snprintf(r->retry_after, sizeof(r->retry_after), "%.*s", (int)(len - 15), p + 13);
	if (len > 21 && strncasecmp(p, "X-Hearth-Request-Id: ", 21) == 0)
		snprintf(r->request_id, sizeof(r->request_id), "%.*s", (int)(len - 23), p + 21);
	return len;
}

/* Sends n invocations at once and waits for all of them. */
void par_invoke_tick(struct hd *h, const char *key, const char *fn, const char *event, int n,
		     struct par *out, void (*tick)(void *), void *ctx)
{
	CURLM *m = curl_multi_init();
	CURL **e = calloc((size_t)n, sizeof(*e));
	struct curl_slist *hl = NULL;
	char auth[256], url[256];
	int running = 0;

	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
	hl = curl_slist_append(hl, auth);
	hl = curl_slist_append(hl, "Expect:");
	snprintf(url, sizeof(url), "%s/v1/functions/%s/invoke", h->base, fn);
	for (int i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		e[i] = curl_easy_init();
		curl_easy_setopt(e[i], CURLOPT_URL, url);
		curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, hl);
		curl_easy_setopt(e[i], CURLOPT_POSTFIELDS, event);
		curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, par_body);
		curl_easy_setopt(e[i], CURLOPT_WRITEDATA, &out[i]);
		curl_easy_setopt(e[i], CURLOPT_HEADERFUNCTION, par_hdr);
		curl_easy_setopt(e[i], CURLOPT_HEADERDATA, &out[i]);
		curl_easy_setopt(e[i], CURLOPT_TIMEOUT, 120L);
		curl_multi_add_handle(m, e[i]);
	}
	do {
		curl_multi_perform(m, &running);
		if (running)
			curl_multi_poll(m, NULL, 0, 100, NULL);
		if (tick)
			tick(ctx);
	} while (running > 0);
	for (int i = 0; i < n; i++) {
		curl_easy_getinfo(e[i], CURLINFO_RESPONSE_CODE, &out[i].status);
		curl_multi_remove_handle(m, e[i]);
		curl_easy_cleanup(e[i]);
	}
	curl_multi_cleanup(m);
	curl_slist_free_all(hl);
	free(e);
}

int par_count(const struct par *p, int n, long status, const char *code)
{
	int k = 0;

	for (int i = 0; i < n; i++)
		if (p[i].status == status && (!code || strstr(p[i].body, code)))
			k++;
	return k;
}


void par_invoke(struct hd *h, const char *key, const char *fn, const char *event, int n,
		struct par *out)
{
	par_invoke_tick(h, key, fn, event, n, out, NULL, NULL);
}

int vmm_procs_under(const char *dir)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d))) {
		char path[300], buf[4096];
		size_t len;
		FILE *f;

		if (atoi(de->d_name) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		for (size_t i = 0; i < len; i++)
			if (buf[i] == 0)
				buf[i] = ' ';
		buf[len] = 0;
		n += strstr(buf, "hearth-vmm") && strstr(buf, dir);
	}
	if (d)
		closedir(d);
	return n;
}

void set_limits(struct hd *h, const char *tenant, const char *json)
{
	struct resp r;
	char path[128];

	snprintf(path, sizeof(path), "/v1/tenants/%s/limits", tenant);
	if (http(h, "PUT", path, h->admin, NULL, json, strlen(json), NULL, &r) != 200)
		fprintf(stderr, "limits: %ld %s\n", r.status, r.body);
	assert_int_equal(r.status, 200);
	resp_free(&r);
}

static void *deploy_job_run(void *arg)
{
	struct deploy_job *d = arg;
	char path[160];
	struct resp r;

	usleep((useconds_t)d->delay_ms * 1000);
	snprintf(path, sizeof(path), "/v1/functions/%s", d->name);
	d->status = http(d->h, "POST", path, d->key, NULL, d->pkg, d->len,
			 "Content-Type: application/gzip", &r);
	if (d->status != 201)
		fprintf(stderr, "deploy of %s: %ld %.*s\n", d->name, d->status, (int)r.len, r.body);
	resp_free(&r);
	return NULL;
}

void deploy_job_start(struct deploy_job *d)
{
	if (pthread_create(&d->th, NULL, deploy_job_run, d) != 0) {
		fprintf(stderr, "deploy_job_start: pthread_create failed\n");
		abort();
	}
}

long deploy_job_wait(struct deploy_job *d)
{
	pthread_join(d->th, NULL);
	return d->status;
}
