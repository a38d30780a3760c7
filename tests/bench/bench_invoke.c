/*
 * bench_invoke: invoke latency and throughput through a running hearthd, over
 * HTTP with libcurl and keep-alive connections. It starts nothing itself;
 * ci/bench invoke starts hearthd (and, for the comparison, a bare
 * hearth-agent), deploys the function and runs this once per engine.
 *
 * Phases, each printed with the engine label:
 *   warm     sequential invokes on one connection: p50/p99. With --agent-sock,
 *            each HTTP invoke is followed by a direct round trip to a bare
 *            hearth-agent running the same handler, so the daemon's own
 *            overhead shows as a difference and a ratio measured under the
 *            same machine noise. The handler time the agent reports
 *            (X-Hearth-Duration-Ms) is shown too.
 *   load     --conns connections in parallel (curl multi) for --seconds:
 *            invokes/s and latency under load.
 *   cold     --cold N: delete, redeploy (--package) and invoke N times: the
 *            boot path (X-Hearth-Cold-Start-Path, -Boot-Ms, -Init-Ms).
 *   restore  --restore N: let the VM idle past hearthd's keep-warm so it is
 *            suspended, then invoke: the restore path on save/restore engines.
 *   modes    --rt-function NAME (a runtime-mode twin of --function): exec mode,
 *            runtime mode and the bare agent in both modes (--agent-sock,
 *            --agent-rt-sock), interleaved, p50/p99 side by side; then where a
 *            runtime-mode invoke's time goes (HTTP layer = GET /healthz,
 *            agent frame = Ping, runtime HTTP = the rest of the bare round trip)
 *            and the targets; then the load phase on the runtime function.
 *
 * usage: bench_invoke --url URL --key KEY --tenant T --function NAME [options]
 *        (bench_invoke --help)
 */
#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <dirent.h>

#include "agent_client.h"
#include "bench_json.h"

struct opts {
	const char *url, *key, *tenant, *function, *label;
	const char *agent_sock, *agent_handler, *package, *deploy_query, *conns;
	const char *rt_function, *agent_rt_sock, *agent_rt_bootstrap;
	int iterations, cold, restore, daemon_pid;
	double seconds, warmup_s, idle_wait_s;
};

static struct opts o = {
	.label = "?", .iterations = 2000, .conns = "4", .seconds = 5, .warmup_s = 1,
	.idle_wait_s = 3,
};
static char base[1024];
static json_t *js; /* machine-readable results (bench_json.h), $HEARTH_BENCH_OUT */
static const char *sock_path;

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[(int)(p * (n - 1) + 0.5)];
}

/* CPU seconds (user + system, all threads) hearthd has used so far, or -1. */
static double daemon_cpu_s(void)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	if (!o.daemon_pid)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", o.daemon_pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds the whole machine has been busy (all CPUs, /proc/stat), or -1. */
static double machine_busy_s(void)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	int n;

	if (!f)
		return -1;
	/* cpu user nice system idle iowait irq softirq steal */
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 7)
		return -1;
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / (double)sysconf(_SC_CLK_TCK);
}

/*
 * CPU seconds used so far by the function processes of the process engine:
 * the agents (/init) and what they run (/var/task/...), found by command line.
 * Processes that exited in between are not counted (warm VMs do not exit).
 */
static double functions_cpu_s(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	double sum = 0;

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		char path[300], buf[2048], *p;
		unsigned long long ut, st;
		size_t n;
		FILE *f;

		if (atoi(de->d_name) <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		if (strcmp(buf, "/init") != 0 && strncmp(buf, "/var/task/", 10) != 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		p = strrchr(buf, ')');
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
				&st) == 2)
			sum += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	}
	closedir(d);
	return sum;
}

/* CPU seconds this process has used. */
static double self_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- one HTTP exchange ------------------------------------------------------- */

struct call {
	CURL *curl;
	struct curl_slist *hdrs;
	char url[1400];
	long status;
	size_t body_len;
	char duration_ms[32], cold[16], path[16], boot_ms[32], restore_ms[32], init_ms[32];
	bool function_error;
	double t0;
};

static size_t on_body(char *p, size_t sz, size_t n, void *arg)
{
	struct call *c = arg;

	c->body_len += sz * n;
	return sz * n;
}

static void take(char *dst, size_t len, const char *v, size_t vl)
{
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		vl--;
	snprintf(dst, len, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
#define FIELD(h, f) { h, offsetof(struct call, f), sizeof(((struct call *)0)->f) }
	static const struct {
		const char *name;
		size_t off, size;
	} want[] = {
		FIELD("X-Hearth-Duration-Ms", duration_ms),
		FIELD("X-Hearth-Cold-Start", cold),
		FIELD("X-Hearth-Cold-Start-Path", path),
		FIELD("X-Hearth-Boot-Ms", boot_ms),
		FIELD("X-Hearth-Restore-Ms", restore_ms),
		FIELD("X-Hearth-Init-Ms", init_ms),
	};
#undef FIELD
	struct call *c = arg;
	size_t len = sz * n;
	const char *colon = memchr(p, ':', len);

	if (!colon)
		return len;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		size_t nl = strlen(want[i].name);

		if ((size_t)(colon - p) == nl && strncasecmp(p, want[i].name, nl) == 0) {
			const char *v = colon + 1;

			while (*v == ' ')
				v++;
			take((char *)c + want[i].off, want[i].size, v, len - (size_t)(v - p));
		}
	}
	if ((size_t)(colon - p) == 23 && strncasecmp(p, "X-Hearth-Function-Error", 23) == 0)
		c->function_error = true;
	return len;
}

static void call_init(struct call *c, const char *method, const char *path, bool json)
{
	char line[700];

	memset(c, 0, sizeof(*c));
	c->curl = curl_easy_init();
	if (!c->curl) {
		fprintf(stderr, "bench_invoke: curl_easy_init failed\n");
		exit(1);
	}
	snprintf(c->url, sizeof(c->url), "%s%s", base, path);
	snprintf(line, sizeof(line), "Authorization: Bearer %s", o.key);
	c->hdrs = curl_slist_append(c->hdrs, line);
	if (o.tenant) {
		snprintf(line, sizeof(line), "X-Hearth-Tenant: %s", o.tenant);
		c->hdrs = curl_slist_append(c->hdrs, line);
	}
	c->hdrs = curl_slist_append(c->hdrs, "Expect:");
	c->hdrs = curl_slist_append(c->hdrs, json ? "Content-Type: application/json" :
						    "Content-Type: application/octet-stream");
	curl_easy_setopt(c->curl, CURLOPT_URL, c->url);
	if (sock_path)
		curl_easy_setopt(c->curl, CURLOPT_UNIX_SOCKET_PATH, sock_path);
	curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->hdrs);
	curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->curl, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(c->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c->curl, CURLOPT_HEADERDATA, c);
	if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, "{}");
		curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, 2L);
	}
}

static void call_reset(struct call *c)
{
	c->status = 0;
	c->body_len = 0;
	c->function_error = false;
	c->duration_ms[0] = c->cold[0] = c->path[0] = c->boot_ms[0] = c->restore_ms[0] =
		c->init_ms[0] = 0;
}

static void call_free(struct call *c)
{
	curl_slist_free_all(c->hdrs);
	curl_easy_cleanup(c->curl);
}

/* Performs the call; returns 0 on a 2xx answer without a function error. */
static int call_run(struct call *c)
{
	CURLcode cc;

	call_reset(c);
	cc = curl_easy_perform(c->curl);
	if (cc != CURLE_OK) {
		fprintf(stderr, "bench_invoke: %s: %s\n", c->url, curl_easy_strerror(cc));
		return -1;
	}
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
	if (c->status < 200 || c->status > 299 || c->function_error) {
		fprintf(stderr, "bench_invoke: %s answered %ld%s\n", c->url, c->status,
			c->function_error ? " (function error)" : "");
		return -1;
	}
	return 0;
}

/* ---- phases ------------------------------------------------------------------ */

static void line(const char *what, double *v, int n, double ops)
{
	double p50 = pct(v, n, 0.5), p99 = pct(v, n, 0.99);
	/* Under 100 samples the 99th percentile is simply the largest one: say so. */
	const char *hi = n >= 100 ? "p99" : "max";

	if (p99 >= 100000)
		printf("  %-44s p50 %9.1f ms  %s %9.1f ms", what, p50 / 1000, hi, p99 / 1000);
	else
		printf("  %-44s p50 %9.1f us  %s %9.1f us", what, p50, hi, p99);
	if (ops > 0)
		printf("  %8.0f /s", ops);
	printf("   [%s]\n", o.label);
}

static int phase_warm(void)
{
	char path[512];
	struct call c;
	struct agent_conn *ac = NULL;
	double *e2e = calloc((size_t)o.iterations, sizeof(double));
	double *agent = calloc((size_t)o.iterations, sizeof(double));
	double *handler = calloc((size_t)o.iterations, sizeof(double));
	double *diff = calloc((size_t)o.iterations, sizeof(double));
	double total = 0, t0, cpu0;
	int n = o.iterations;

	if (!e2e || !agent || !handler || !diff)
		return -1;
	snprintf(path, sizeof(path), "/v1/functions/%s/invoke", o.function);
	call_init(&c, "POST", path, false);
	if (o.agent_sock) {
		struct agent_config cfg = { .handler = o.agent_handler };

		if (agent_connect_unix(o.agent_sock, 5000, &ac) || agent_hello(ac, 5000, NULL) ||
		    agent_configure(ac, &cfg, 5000, NULL)) {
			fprintf(stderr, "bench_invoke: cannot set up the bare agent at %s\n",
				o.agent_sock);
			return -1;
		}
	}
	for (int i = 0; i < 100; i++) { /* the first may be cold; warm the path up */
		if (call_run(&c))
			return -1;
		if (ac) {
			struct agent_result r;

			if (agent_invoke(ac, "warm", "{}", 2, 0, 10000, &r) || r.status != AGENT_INVOKE_OK)
				return -1;
			agent_result_free(&r);
		}
	}
	cpu0 = daemon_cpu_s();
	for (int i = 0; i < n; i++) {
		t0 = now_us();
		if (call_run(&c))
			return -1;
		e2e[i] = now_us() - t0;
		total += e2e[i];
		if (strcmp(c.cold, "false") != 0)
			fprintf(stderr, "bench_invoke: warm invoke %d was cold\n", i);
		handler[i] = atof(c.duration_ms) * 1000;
		diff[i] = e2e[i] - handler[i];
		if (ac) {
			struct agent_result r;

			t0 = now_us();
			if (agent_invoke(ac, "bench", "{}", 2, 0, 10000, &r) ||
			    r.status != AGENT_INVOKE_OK) {
				fprintf(stderr, "bench_invoke: bare agent invoke failed\n");
				return -1;
			}
			agent[i] = now_us() - t0;
			agent_result_free(&r);
		}
	}
	if (cpu0 >= 0 && daemon_cpu_s() >= 0)
		cpu0 = daemon_cpu_s() - cpu0;
	else
		cpu0 = -1;
	printf("warm invokes, one keep-alive connection, %d sequential:\n", n);
	{
		char l[300];
		snprintf(l, sizeof(l), "warm invoke through hearthd (HTTP%s), %s",
			 sock_path ? ", Unix socket" : ", TCP", o.label);
		bj_samples(js, "warm_e2e_us", "warm", l, "us", e2e, n);
		bj_figure(js, "warm_p50_us", pct(e2e, n, 0.5), "us", l);
		if (ac) {
			bj_samples(js, "warm_bare_agent_us", "other",
				   "bare hearth-agent round trip (same handler)", "us", agent, n);
			bj_figure(js, "ratio_warm_vs_bare_agent", pct(e2e, n, 0.5) / pct(agent, n, 0.5),
				  "x", "warm p50 through hearthd / bare agent p50");
			bj_figure(js, "daemon_overhead_p50_us", pct(e2e, n, 0.5) - pct(agent, n, 0.5),
				  "us", "hearthd overhead at p50 (through hearthd - bare agent)");
		}
	}
	line("HTTP invoke through hearthd (end to end)", e2e, n, n / (total / 1e6));
	line("handler time reported by the agent", handler, n, 0);
	line("end to end minus reported handler time", diff, n, 0);
	if (ac) {
		double pe = pct(e2e, n, 0.5), pa;

		line("bare hearth-agent round trip (same handler)", agent, n, 0);
		pa = pct(agent, n, 0.5);
		printf("  daemon overhead at p50: %.1f us (end to end %.1f us = %.2fx the bare agent "
		       "round trip %.1f us)   [%s]\n",
		       pe - pa, pe, pe / pa, pa, o.label);
		agent_close(ac);
	}
	if (cpu0 >= 0)
		printf("  hearthd's own CPU time per warm invoke (all its threads; not the function "
		       "VMs): %.1f us   [%s]\n",
		       cpu0 * 1e6 / n, o.label);
	call_free(&c);
	free(e2e);
	free(agent);
	free(handler);
	free(diff);
	return 0;
}

static int phase_load(int conns)
{
	CURLM *m = curl_multi_init();
	struct call *calls = calloc((size_t)conns, sizeof(*calls));
	size_t cap = 1 << 20, n = 0;
	double *lat = malloc(cap * sizeof(double));
	double start, end, measure_from;
	char path[512];
	long errors = 0, done = 0;
	double cpu_a = -1, cpu_b = -1, mach_a = -1, mach_b = -1, self_a = -1, self_b = -1;
	double fn_a = -1, fn_b = -1;
	int running;

	if (!m || !calls || !lat)
		return -1;
	snprintf(path, sizeof(path), "/v1/functions/%s/prewarm?count=%d", o.function, conns);
	{
		struct call pw;

		call_init(&pw, "POST", path, false);
		if (call_run(&pw))
			return -1;
		call_free(&pw);
	}
	snprintf(path, sizeof(path), "/v1/functions/%s/invoke", o.function);
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conns);
	for (int i = 0; i < conns; i++) {
		call_init(&calls[i], "POST", path, false);
		calls[i].t0 = now_us();
		curl_multi_add_handle(m, calls[i].curl);
	}
	start = now_us();
	measure_from = start + o.warmup_s * 1e6; /* VMs started for the load come up first */
	end = measure_from + o.seconds * 1e6;
	for (;;) {
		CURLMsg *msg;
		int left;

		curl_multi_perform(m, &running);
		if (cpu_a < 0 && now_us() >= measure_from) {
			cpu_a = daemon_cpu_s();
			mach_a = machine_busy_s();
			self_a = self_cpu_s();
			fn_a = functions_cpu_s();
		}
		if (cpu_b < 0 && now_us() >= end) {
			cpu_b = daemon_cpu_s();
			mach_b = machine_busy_s();
			self_b = self_cpu_s();
			fn_b = functions_cpu_s();
		}
		while ((msg = curl_multi_info_read(m, &left))) {
			struct call *c = NULL;
			double t = now_us();

			if (msg->msg != CURLMSG_DONE)
				continue;
			for (int i = 0; i < conns; i++)
				if (calls[i].curl == msg->easy_handle)
					c = &calls[i];
			if (!c)
				continue;
			curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
			if (msg->data.result != CURLE_OK) {
				/* hearthd is gone or broken: stop rather than spin on refusals. */
				fprintf(stderr, "bench_invoke: load: %s\n",
					curl_easy_strerror(msg->data.result));
				errors++;
				end = t;
			} else if (c->status != 200 || c->function_error) {
				if (errors++ == 0)
					fprintf(stderr, "bench_invoke: load: HTTP %ld%s\n", c->status,
						c->function_error ? " (function error)" : "");
			}
			if (msg->data.result == CURLE_OK && c->status == 200 && !c->function_error &&
			    c->t0 >= measure_from && t <= end) {
				done++;
				if (n < cap)
					lat[n++] = t - c->t0;
			}
			curl_multi_remove_handle(m, c->curl);
			if (t < end) {
				call_reset(c);
				c->t0 = now_us();
				curl_multi_add_handle(m, c->curl);
			}
		}
		if (now_us() >= end && running == 0)
			break;
		curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	printf("load: %d keep-alive connections in parallel, %.0f s after %.0f s warm-up:\n",
	       conns, o.seconds, o.warmup_s);
	{
		char k[200], l[400];
		snprintf(k, sizeof(k), "throughput_%s", o.function);
		snprintf(l, sizeof(l), "warm invokes/s through hearthd, function %s (%s)", o.function,
			 o.rt_function && !strcmp(o.function, o.rt_function) ? "runtime mode" :
										"exec mode");
		bj_point(js, k, "throughput_vs_connections", l, "parallel keep-alive connections",
			 "invokes/s", conns, done / o.seconds);
		if (n) {
			snprintf(k, sizeof(k), "load_p50_%s", o.function);
			snprintf(l, sizeof(l), "p50 latency under load, function %s", o.function);
			bj_point(js, k, "other", l, "parallel keep-alive connections", "us", conns,
				 pct(lat, (int)n, 0.5));
		}
	}
	if (n)
		line("HTTP invoke under load", lat, (int)n, done / o.seconds);
	if (o.rt_function && !strcmp(o.function, o.rt_function))
		printf("  target: >= 5,000 warm invokes/s with a no-op runtime handler: %.0f /s, %s\n",
		       done / o.seconds, done / o.seconds >= 5000 ? "met" :
		       "MISSED (this machine's cores are shared by hearthd, the agents, the runtimes "
		       "and this client)");
	if (cpu_a >= 0 && cpu_b >= 0 && done > 0)
		printf("  hearthd's own CPU time per invoke under load: %.1f us   [%s]\n",
		       (cpu_b - cpu_a) * 1e6 / (double)done, o.label);
	if (cpu_a >= 0 && cpu_b >= 0 && mach_a >= 0 && mach_b >= 0 && done > 0) {
		double all = (mach_b - mach_a) * 1e6 / (double)done;
		double hd = (cpu_b - cpu_a) * 1e6 / (double)done;
		double me = (self_b - self_a) * 1e6 / (double)done;
		double fn = fn_a >= 0 && fn_b >= fn_a ? (fn_b - fn_a) * 1e6 / (double)done : 0;
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		printf("  machine CPU per invoke: %.1f us: hearthd %.1f, this client %.1f, agents and "
		       "their handlers or runtimes %.1f, the rest %.1f (kernel work not charged to a "
		       "process, exited processes, other users); %ld CPUs %.0f%% busy   [%s]\n", all,
		       hd, me, fn, all - hd - me - fn, ncpu,
		       100.0 * (mach_b - mach_a) / (o.seconds * (double)ncpu), o.label);
	}
	if (errors) {
		char k[64];
		printf("  errors: %ld\n", errors);
		snprintf(k, sizeof(k), "load_errors_%d_conns", conns);
		bj_figure(js, k, (double)errors, "requests", "failed requests in the load phase");
	}
	for (int i = 0; i < conns; i++)
		call_free(&calls[i]);
	curl_multi_cleanup(m);
	free(calls);
	free(lat);
	return errors ? -1 : 0;
}

static double p50_of(double *v, int n)
{
	return pct(v, n, 0.5);
}

static void row(const char *what, double *a, double *b, int n)
{
	printf("  %-30s p50 %8.1f us  p99 %8.1f us", what, p50_of(a, n), pct(a, n, 0.99));
	if (b)
		printf("   p50 %8.1f us  p99 %8.1f us   %8.1f us", p50_of(b, n), pct(b, n, 0.99),
		       p50_of(a, n) - p50_of(b, n));
	printf("\n");
}

static int bare_agent(const char *sock, const char *handler, bool runtime,
		      struct agent_conn **out)
{
	struct agent_config cfg = { .handler = handler, .runtime = runtime };

	if (agent_connect_unix(sock, 5000, out) || agent_hello(*out, 5000, NULL) ||
	    agent_configure(*out, &cfg, 20000, NULL)) {
		fprintf(stderr, "bench_invoke: cannot set up the bare agent at %s\n", sock);
		return -1;
	}
	return 0;
}

static int bare_invoke(struct agent_conn *ac, double *us)
{
	struct agent_result r;
	double t0 = now_us();

	if (agent_invoke(ac, "bench", "{}", 2, 0, 10000, &r) || r.status != AGENT_INVOKE_OK) {
		fprintf(stderr, "bench_invoke: bare agent invoke failed\n");
		return -1;
	}
	*us = now_us() - t0;
	agent_result_free(&r);
	return 0;
}

/* Exec mode vs runtime mode vs the bare agent, interleaved so that noise hits all alike. */
static int phase_modes(void)
{
	enum { EX, RT, BEX, BRT, HZ, PING, NSER };
	double *v[NSER];
	char ex_path[512], rt_path[512];
	struct call cex, crt, chz;
	struct agent_conn *aex = NULL, *art = NULL;
	int n = o.iterations;

	for (int k = 0; k < NSER; k++)
		if (!(v[k] = calloc((size_t)n, sizeof(double))))
			return -1;
	snprintf(ex_path, sizeof(ex_path), "/v1/functions/%s/invoke", o.function);
	snprintf(rt_path, sizeof(rt_path), "/v1/functions/%s/invoke", o.rt_function);
	call_init(&cex, "POST", ex_path, false);
	call_init(&crt, "POST", rt_path, false);
	call_init(&chz, "GET", "/healthz", false);
	if (o.agent_sock && bare_agent(o.agent_sock, o.agent_handler, false, &aex))
		return -1;
	if (o.agent_rt_sock && bare_agent(o.agent_rt_sock, o.agent_rt_bootstrap, true, &art))
		return -1;
	/*
	 * Both modes in one run, in alternating chunks of CHUNK iterations: within
	 * a chunk, each call through hearthd is followed by the same call to the
	 * bare agent, so noise hits the pair alike. Runtime-mode samples never
	 * directly follow an exec-mode call: a fork+exec (and the exit of its
	 * process, which overlaps the next call) is not part of a runtime-mode
	 * invoke's cost, and measured right after one it added 100 us and more
	 * to the runtime-mode p50 through hearthd.
	 */
	enum { CHUNK = 50 };
	int jex = 0, jrt = 0;

	for (int i = 0; jex < n || jrt < n; i++) {
		bool warm = i < 100, do_exec = warm || ((i - 100) / CHUNK) % 2 == 0 || jrt >= n;
		double t0, dummy, *slot;

		if (!warm && jex >= n)
			do_exec = false;
		if (do_exec) {
			int j = warm ? -1 : jex++;

			t0 = now_us();
			if (call_run(&cex))
				return -1;
			if (j >= 0)
				v[EX][j] = now_us() - t0;
			if (j >= 0 && strcmp(cex.cold, "false"))
				fprintf(stderr, "bench_invoke: warm invoke %d was cold\n", j);
			slot = j >= 0 ? &v[BEX][j] : &dummy;
			if (aex && bare_invoke(aex, slot))
				return -1;
			if (!warm)
				continue;
		}
		int j = warm ? -1 : jrt++;

		t0 = now_us();
		if (call_run(&crt))
			return -1;
		if (j >= 0)
			v[RT][j] = now_us() - t0;
		if (j >= 0 && strcmp(crt.cold, "false"))
			fprintf(stderr, "bench_invoke: warm invoke %d was cold\n", j);
		slot = j >= 0 ? &v[BRT][j] : &dummy;
		if (art && bare_invoke(art, slot))
			return -1;
		t0 = now_us();
		if (call_run(&chz))
			return -1;
		if (j >= 0)
			v[HZ][j] = now_us() - t0;
		if (art) {
			struct agent_pong pg;

			t0 = now_us();
			if (agent_ping(art, 5000, &pg))
				return -1;
			if (j >= 0)
				v[PING][j] = now_us() - t0;
		}
	}
	bj_samples(js, "warm_exec_us", "warm", "warm invoke through hearthd, exec mode (fork+exec)",
		   "us", v[EX], n);
	bj_samples(js, "warm_runtime_us", "warm", "warm invoke through hearthd, runtime mode",
		   "us", v[RT], n);
	if (aex)
		bj_samples(js, "bare_exec_us", "other", "bare hearth-agent, exec mode", "us", v[BEX], n);
	if (art)
		bj_samples(js, "bare_runtime_us", "other", "bare hearth-agent, runtime mode", "us",
			   v[BRT], n);
	bj_figure(js, "ratio_exec_vs_runtime", p50_of(v[EX], n) / p50_of(v[RT], n), "x",
		  "warm p50 exec mode / runtime mode");
	printf("warm, side by side: %d sequential invokes of each, one keep-alive connection each; "
	       "each call through hearthd followed by the same call to the bare agent, the two "
	       "modes in alternating chunks of %d   [%s]\n", n, CHUNK, o.label);
	printf("  %-30s %-32s   %-32s   %s\n", "", "through hearthd (HTTP, TCP)",
	       aex || art ? "bare hearth-agent (Unix socket)" : "", aex || art ? "daemon overhead p50" : "");
	row("exec mode (fork+exec per call)", v[EX], aex ? v[BEX] : NULL, n);
	row("runtime mode (Runtime API)", v[RT], art ? v[BRT] : NULL, n);
	if (art) {
		double hz = p50_of(v[HZ], n), ping = p50_of(v[PING], n), brt = p50_of(v[BRT], n);
		double rt = p50_of(v[RT], n), over = rt - brt;

		printf("where a warm runtime-mode invoke's %.1f us go (p50s; the parts are "
		       "differences of medians, approximate):\n", rt);
		printf("  %-62s %8.1f us\n", "HTTP layer (GET /healthz on a kept-alive connection)", hz);
		printf("  %-62s %8.1f us\n", "auth, admission, scheduler, metering, agent client "
		       "(the rest of hearthd)", over - hz);
		printf("  %-62s %8.1f us\n", "agent frame (Ping round trip to the bare agent)", ping);
		printf("  %-62s %8.1f us\n", "runtime HTTP (/next answer + /response, and the runtime)",
		       brt - ping);
		printf("  target: daemon overhead <= 100 us p50: %.1f us, %s\n", over,
		       over <= 100 ? "met" : "MISSED (see the split above)");
	}
	call_free(&cex);
	call_free(&crt);
	call_free(&chz);
	agent_close(aex);
	agent_close(art);
	for (int k = 0; k < NSER; k++)
		free(v[k]);
	return 0;
}

static long long metric_vms(void)
{
	struct call c;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	long long v = -1;

	call_init(&c, "GET", "/metrics", false);
	curl_easy_setopt(c.curl, CURLOPT_WRITEFUNCTION, NULL);
	curl_easy_setopt(c.curl, CURLOPT_WRITEDATA, f);
	if (call_run(&c) == 0) {
		fflush(f);
		for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
			if (strncmp(l, "hearth_vms ", 11) == 0)
				v = atoll(l + 11);
	}
	fclose(f);
	free(buf);
	call_free(&c);
	return v;
}

static void cold_report(const char *what, double *e2e, double *vm, double *init, int n,
			const char *vm_what)
{
	printf("%s, %d runs:\n", what, n);
	line("first invoke, end to end", e2e, n, 0);
	line(vm_what, vm, n, 0);
	line("init step (X-Hearth-Init-Ms)", init, n, 0);
}

static int phase_cold(void)
{
	char fpath[512], ipath[512], dpath[700];
	double *e2e = calloc((size_t)o.cold, sizeof(double));
	double *boot = calloc((size_t)o.cold, sizeof(double));
	double *init = calloc((size_t)o.cold, sizeof(double));
	double *deploy = calloc((size_t)o.cold, sizeof(double));
	FILE *pkg;
	struct stat st;
	int n = 0;

	if (!e2e || !boot || !init || !deploy)
		return -1;
	snprintf(fpath, sizeof(fpath), "/v1/functions/%s", o.function);
	snprintf(ipath, sizeof(ipath), "/v1/functions/%s/invoke", o.function);
	snprintf(dpath, sizeof(dpath), "/v1/functions/%s%s%s", o.function,
		 o.deploy_query ? "?" : "", o.deploy_query ? o.deploy_query : "");
	for (int i = 0; i < o.cold; i++) {
		struct call del, dep, inv;
		double t0;

		pkg = fopen(o.package, "rb");
		if (!pkg || fstat(fileno(pkg), &st)) {
			perror(o.package);
			return -1;
		}
		call_init(&del, "DELETE", fpath, false);
		if (call_run(&del))
			return -1;
		call_free(&del);
		call_init(&dep, "POST", dpath, false);
		curl_easy_setopt(dep.curl, CURLOPT_POSTFIELDS, NULL);
		curl_easy_setopt(dep.curl, CURLOPT_READDATA, pkg);
		curl_easy_setopt(dep.curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)st.st_size);
		dep.hdrs = curl_slist_append(dep.hdrs, "Content-Type: application/gzip");
		curl_easy_setopt(dep.curl, CURLOPT_HTTPHEADER, dep.hdrs);
		t0 = now_us();
		if (call_run(&dep))
			return -1;
		deploy[n] = now_us() - t0;
		call_free(&dep);
		fclose(pkg);
		call_init(&inv, "POST", ipath, false);
		t0 = now_us();
		if (call_run(&inv))
			return -1;
		e2e[n] = now_us() - t0;
		if (strcmp(inv.cold, "true") || strcmp(inv.path, "boot")) {
			fprintf(stderr, "bench_invoke: invoke after redeploy was not a boot cold start "
					"(cold %s, path %s)\n", inv.cold, inv.path);
			return -1;
		}
		boot[n] = atof(inv.boot_ms) * 1000;
		init[n] = atof(inv.init_ms) * 1000;
		n++;
		call_free(&inv);
	}
	bj_samples(js, "cold_boot_vm_us", "boot", "VM boot to Ready (X-Hearth-Boot-Ms)", "us", boot, n);
	bj_samples(js, "cold_boot_e2e_us", "other", "first invoke after redeploy (boot path), end to end",
		   "us", e2e, n);
	cold_report("cold start, boot path (delete + redeploy, then invoke)", e2e, boot, init, n,
		    "VM boot to Ready (X-Hearth-Boot-Ms)");
	line("deploy (upload + image build), for reference", deploy, n, 0);
	free(e2e);
	free(boot);
	free(init);
	free(deploy);
	return 0;
}

static int phase_restore(void)
{
	char ipath[512];
	double *e2e = calloc((size_t)o.restore, sizeof(double));
	double *rest = calloc((size_t)o.restore, sizeof(double));
	double *init = calloc((size_t)o.restore, sizeof(double));
	int n = 0;

	if (!e2e || !rest || !init)
		return -1;
	snprintf(ipath, sizeof(ipath), "/v1/functions/%s/invoke", o.function);
	for (int i = 0; i < o.restore; i++) {
		struct call inv;
		double t0, waited = now_us();

		call_init(&inv, "POST", ipath, false);
		if (call_run(&inv)) /* a VM exists and is idle after this */
			return -1;
		/* Keep-warm expires, the VM is saved and stops counting as alive. */
		while (metric_vms() > 0) {
			if (now_us() - waited > 600e6) {
				fprintf(stderr, "bench_invoke: VMs never went idle; is keep-warm short?\n");
				return -1;
			}
			usleep(200000);
		}
		usleep((useconds_t)(o.idle_wait_s * 1e6)); /* let the save finish */
		t0 = now_us();
		if (call_run(&inv))
			return -1;
		e2e[n] = now_us() - t0;
		if (strcmp(inv.cold, "true") || strcmp(inv.path, "restore")) {
			fprintf(stderr, "bench_invoke: invoke after keep-warm was not a restore "
					"(cold %s, path %s)\n", inv.cold, inv.path);
			call_free(&inv);
			continue;
		}
		rest[n] = atof(inv.restore_ms) * 1000;
		init[n] = atof(inv.init_ms[0] ? inv.init_ms : "0") * 1000;
		n++;
		call_free(&inv);
	}
	bj_samples(js, "cold_restore_vm_us", "restore", "restore to running (X-Hearth-Restore-Ms)",
		   "us", rest, n);
	bj_samples(js, "cold_restore_e2e_us", "other",
		   "first invoke after keep-warm (restore path), end to end", "us", e2e, n);
	if (n)
		cold_report("cold start, restore path (VM suspended after keep-warm, then invoke)",
			    e2e, rest, init, n, "restore to running (X-Hearth-Restore-Ms)");
	free(e2e);
	free(rest);
	free(init);
	return n == o.restore ? 0 : -1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_invoke --url URL --key KEY --function NAME [options]\n"
		"  --url URL              http://HOST:PORT or unix:/PATH of hearthd\n"
		"  --key KEY --tenant T   API key (admin key + tenant, or a tenant key)\n"
		"  --label TEXT           engine/accelerator printed with every figure\n"
		"  --iterations N         warm sequential invokes (default 2000)\n"
		"  --agent-sock PATH --agent-handler PATH   a bare hearth-agent for comparison\n"
		"  --conns C[,C...] --seconds S --warmup S   load phase per connection count\n"
		"                                            (default 4, 5, 1; 0 skips it)\n"
		"  --cold N --package TGZ [--deploy-query Q] boot-path cold starts by redeploying\n"
		"  --restore N [--idle-wait S]               restore-path cold starts after keep-warm\n"
		"  --daemon-pid PID       report hearthd's CPU time per warm invoke\n"
		"  --rt-function NAME     a runtime-mode twin of --function: exec vs runtime side by\n"
		"                         side, the time split, and the load phase on it\n"
		"  --agent-rt-sock PATH --agent-rt-bootstrap PATH  a bare agent in runtime mode\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "url", required_argument, NULL, 'u' },      { "key", required_argument, NULL, 'k' },
		{ "tenant", required_argument, NULL, 't' },   { "function", required_argument, NULL, 'f' },
		{ "label", required_argument, NULL, 'l' },    { "iterations", required_argument, NULL, 'n' },
		{ "agent-sock", required_argument, NULL, 'a' },
		{ "agent-handler", required_argument, NULL, 'H' },
		{ "conns", required_argument, NULL, 'c' },    { "seconds", required_argument, NULL, 's' },
		{ "warmup", required_argument, NULL, 'w' },   { "cold", required_argument, NULL, 'C' },
		{ "package", required_argument, NULL, 'p' },  { "deploy-query", required_argument, NULL, 'q' },
		{ "restore", required_argument, NULL, 'R' },  { "idle-wait", required_argument, NULL, 'i' },
		{ "daemon-pid", required_argument, NULL, 'P' },
		{ "rt-function", required_argument, NULL, 'T' },
		{ "agent-rt-sock", required_argument, NULL, 'x' },
		{ "agent-rt-bootstrap", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
	};
	int c, rc = 0;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'u': o.url = optarg; break;
		case 'k': o.key = optarg; break;
		case 't': o.tenant = optarg; break;
		case 'f': o.function = optarg; break;
		case 'l': o.label = optarg; break;
		case 'n': o.iterations = atoi(optarg); break;
		case 'a': o.agent_sock = optarg; break;
		case 'H': o.agent_handler = optarg; break;
		case 'c': o.conns = optarg; break;
		case 's': o.seconds = atof(optarg); break;
		case 'w': o.warmup_s = atof(optarg); break;
		case 'C': o.cold = atoi(optarg); break;
		case 'p': o.package = optarg; break;
		case 'q': o.deploy_query = optarg; break;
		case 'R': o.restore = atoi(optarg); break;
		case 'i': o.idle_wait_s = atof(optarg); break;
		case 'P': o.daemon_pid = atoi(optarg); break;
		case 'T': o.rt_function = optarg; break;
		case 'x': o.agent_rt_sock = optarg; break;
		case 'B': o.agent_rt_bootstrap = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!o.url || !o.key || !o.function || (o.agent_sock && !o.agent_handler) ||
	    (o.cold && !o.package) || o.iterations < 10 || o.seconds <= 0 ||
	    (o.agent_rt_sock && (!o.agent_rt_bootstrap || !o.rt_function))) {
		usage(stderr);
		return 2;
	}
	if (strncmp(o.url, "unix:", 5) == 0) {
		sock_path = o.url + 5;
		snprintf(base, sizeof(base), "http://localhost");
	} else {
		snprintf(base, sizeof(base), "%s", o.url);
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	js = bj_new("invoke", o.label, o.label);
	bj_set(js, "transport", sock_path ? "HTTP over hearthd's Unix socket" : "HTTP over TCP");
	if (o.rt_function) {
		/* Side by side, then the runtime function under load. */
		if (phase_modes())
			rc = 1;
		o.function = o.rt_function;
		for (const char *p = o.conns; !rc && p && *p;
		     p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
			if (atoi(p) > 0 && phase_load(atoi(p)))
				rc = 1;
		curl_global_cleanup();
		if (bj_write(js) < 0)
			rc = 1;
		return rc;
	}
	if (phase_warm())
		rc = 1;
	/* One load run per connection count in the comma-separated --conns list. */
	for (const char *p = o.conns; !rc && p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (atoi(p) > 0 && phase_load(atoi(p)))
			rc = 1;
	if (!rc && o.cold > 0 && phase_cold())
		rc = 1;
	if (!rc && o.restore > 0 && phase_restore())
		rc = 1;
	curl_global_cleanup();
	if (rc)
		bj_set(js, "status", "incomplete: a phase failed (see the benchmark's output); later phases did not run");
	if (bj_write(js) < 0)
		rc = 1;
	return rc;
}
