/*
 * bench_agent: warm invoke round trips to a real hearth-agent over its Unix
 * socket, with a no-op C handler, through the host client library. For
 * reference it also times a bare fork+exec+wait of the same handler in the
 * same run, so the agent's own overhead shows as a difference and a ratio.
 *
 * usage: bench_agent AGENT_BIN NOOP_HANDLER [iterations]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent_client.h"
#include "bench_json.h"

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
	int i = (int)(p * (n - 1) + 0.5);

	return v[i];
}

static void report(const char *what, double *v, int n, double total_us)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	printf("%-34s p50 %8.1f us  p99 %8.1f us  %8.0f ops/s\n", what, pct(v, n, 0.5),
	       pct(v, n, 0.99), n / (total_us / 1e6));
}

int main(int argc, char **argv)
{
	const char *agent_bin, *noop;
	int n = 2000;
	char dir[] = "/tmp/hearth-bench-agent.XXXXXX", sock[128];
	struct agent_conn *c;
	struct agent_config cfg = { 0 };
	double *lat, *raw, t0, total, total_raw, p50_agent, p50_raw;
	pid_t agent;

	if (argc < 3) {
		fprintf(stderr, "usage: bench_agent AGENT_BIN NOOP_HANDLER [iterations]\n");
		return 2;
	}
	agent_bin = argv[1];
	noop = argv[2];
	if (argc > 3)
		n = atoi(argv[3]);
	if (n < 10)
		n = 10;
	lat = calloc((size_t)n, sizeof(*lat));
	raw = calloc((size_t)n, sizeof(*raw));
	if (!mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
	agent = fork();
	if (agent == 0) {
		execl(agent_bin, "hearth-agent", "--unix", sock, (char *)NULL);
		_exit(127);
	}
	if (agent_connect_unix(sock, 5000, &c) || agent_hello(c, 5000, NULL)) {
		fprintf(stderr, "bench_agent: cannot reach the agent\n");
		return 1;
	}
	cfg.handler = noop;
	if (agent_configure(c, &cfg, 5000, NULL)) {
		fprintf(stderr, "bench_agent: configure failed: %s\n", agent_last_error(c));
		return 1;
	}
	for (int i = 0; i < 50; i++) { /* warm up page cache and allocator */
		struct agent_result r;

		if (agent_invoke(c, "warm", "{}", 2, 0, 10000, &r) || r.status != AGENT_INVOKE_OK) {
			fprintf(stderr, "bench_agent: warm-up invoke failed\n");
			return 1;
		}
		agent_result_free(&r);
	}
	/* Interleave the two measurements so machine noise hits both alike. */
	total = total_raw = 0;
	for (int i = 0; i < n; i++) {
		struct agent_result r;
		int st;
		pid_t p;

		t0 = now_us();
		if (agent_invoke(c, "bench", "{}", 2, 0, 10000, &r) || r.status != AGENT_INVOKE_OK) {
			fprintf(stderr, "bench_agent: invoke %d failed\n", i);
			return 1;
		}
		lat[i] = now_us() - t0;
		total += lat[i];
		agent_result_free(&r);

		t0 = now_us();
		p = fork();
		if (p == 0) {
			execl(noop, noop, (char *)NULL);
			_exit(127);
		}
		waitpid(p, &st, 0);
		raw[i] = now_us() - t0;
		total_raw += raw[i];
	}
	printf("hearth-agent warm invoke, no-op C handler, %d iterations, Unix socket\n", n);
	json_t *js = bj_new("agent", "hearth-agent warm invoke over a Unix socket, no-op C handler",
			    "none (hearth-agent as a host process, no VM)");
	bj_samples(js, "agent_warm_us", "warm", "agent warm invoke round trip", "us", lat, n);
	bj_samples(js, "fork_exec_us", "other", "bare fork+exec+wait (reference)", "us", raw, n);
	bj_figure(js, "agent_invokes_per_s", n / (total / 1e6), "/s", "agent invokes/s, 1 connection");
	report("agent invoke round trip", lat, n, total);
	report("bare fork+exec+wait (reference)", raw, n, total_raw);
	p50_agent = pct(lat, n, 0.5);
	p50_raw = pct(raw, n, 0.5);
	printf("agent overhead at p50: %.1f us (%.2fx bare fork/exec)\n", p50_agent - p50_raw,
	       p50_agent / p50_raw);
	bj_figure(js, "agent_p50_us", p50_agent, "us", "agent round trip p50");
	bj_figure(js, "fork_exec_p50_us", p50_raw, "us", "bare fork+exec+wait p50");
	bj_figure(js, "ratio_agent_vs_fork_exec", p50_agent / p50_raw, "x",
		  "agent p50 / bare fork+exec p50");
	if (bj_write(js) < 0)
		return 1;
	agent_shutdown(c, 5000);
	agent_close(c);
	waitpid(agent, NULL, 0);
	rmdir(dir);
	free(lat);
	free(raw);
	return 0;
}
