/* bench_json.c - see bench_json.h. */
#include "bench_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

void bj_cpuinfo(const char *field, char *out, size_t len)
{
	char line[8192];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(out, len, "?");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, field, strlen(field)) == 0) {
			char *c = strchr(line, ':');
			if (c) {
				c++;
				while (*c == ' ' || *c == '\t')
					c++;
				c[strcspn(c, "\n")] = 0;
				snprintf(out, len, "%s", c);
			}
			break;
		}
	}
	fclose(f);
}

static const char *kvm_flavour(char *buf, size_t len)
{
	char flags[8192];
	const char *hw;

	if (access("/dev/kvm", F_OK) != 0)
		return "no /dev/kvm";
	bj_cpuinfo("flags", flags, sizeof(flags));
	hw = strstr(flags, " vmx") ? "vmx" : strstr(flags, " svm") ? "svm" : "no vmx/svm";
	if (access("/sys/module/kvm_pvm", F_OK) == 0)
		snprintf(buf, len, "PVM (kvm_pvm, %s)", hw);
	else if (access("/sys/module/kvm_intel", F_OK) == 0)
		snprintf(buf, len, "kvm_intel (%s)", hw);
	else if (access("/sys/module/kvm_amd", F_OK) == 0)
		snprintf(buf, len, "kvm_amd (%s)", hw);
	else
		snprintf(buf, len, "KVM, unknown module (%s)", hw);
	return buf;
}

json_t *bj_new(const char *bench, const char *label, const char *engine)
{
	char date[32], model[256], kvm[128];
	struct utsname u;
	time_t t = time(NULL);
	struct tm tm;
	json_t *r;

	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	bj_cpuinfo("model name", model, sizeof(model));
	if (uname(&u) < 0)
		snprintf(u.release, sizeof(u.release), "?");
	r = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:I, s:s, s:s}, s:s, s:{}, s:{}, s:{}}",
		      "schema", "hearth-bench/1", "bench", bench, "label", label ? label : bench,
		      "date", date, "machine", "cpu", model, "cores",
		      (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "kernel", u.release, "kvm",
		      kvm_flavour(kvm, sizeof(kvm)), "engine", engine ? engine : "?", "samples",
		      "series", "figures");
	if (!r)
		fprintf(stderr, "bench_json: cannot build the report object\n");
	return r;
}

void bj_set(json_t *r, const char *key, const char *value)
{
	if (r && value)
		json_object_set_new(r, key, json_string(value));
}

void bj_machine_set(json_t *r, const char *key, const char *value)
{
	if (r && value)
		json_object_set_new(json_object_get(r, "machine"), key, json_string(value));
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double rank(const double *s, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	return s[i];
}

void bj_samples(json_t *r, const char *key, const char *kind, const char *label, const char *unit,
		const double *v, int n)
{
	json_t *vals, *o;
	double *s;
	int m = 0;

	if (!r || n <= 0)
		return;
	s = malloc((size_t)n * sizeof(*s));
	vals = json_array();
	if (!s || !vals) {
		free(s);
		json_decref(vals);
		return;
	}
	for (int i = 0; i < n; i++) { /* JSON has no NaN or infinity: such samples are left out */
		if (!isfinite(v[i]))
			continue;
		s[m++] = v[i];
		json_array_append_new(vals, json_real(v[i]));
	}
	if (m == 0) {
		free(s);
		json_decref(vals);
		return;
	}
	qsort(s, (size_t)m, sizeof(*s), cmpd);
	o = json_pack("{s:s, s:s, s:s, s:i, s:f, s:f, s:f, s:f, s:f, s:o}", "kind", kind, "label",
		      label, "unit", unit, "n", m, "p50", rank(s, m, 0.5), "p90", rank(s, m, 0.9),
		      "p99", rank(s, m, 0.99), "min", s[0], "max", s[m - 1], "values", vals);
	free(s);
	if (o)
		json_object_set_new(json_object_get(r, "samples"), key, o);
}

void bj_samples_ll(json_t *r, const char *key, const char *kind, const char *label,
		   const char *unit, const long long *v, int n)
{
	double *d;

	if (!r || n <= 0)
		return;
	d = malloc((size_t)n * sizeof(*d));
	if (!d)
		return;
	for (int i = 0; i < n; i++)
		d[i] = (double)v[i];
	bj_samples(r, key, kind, label, unit, d, n);
	free(d);
}

void bj_point(json_t *r, const char *key, const char *kind, const char *label, const char *x_axis,
	      const char *y_axis, double x, double y)
{
	json_t *series, *s;

	if (!r || !isfinite(x) || !isfinite(y))
		return;
	series = json_object_get(r, "series");
	s = json_object_get(series, key);
	if (!s) {
		s = json_pack("{s:s, s:s, s:s, s:s, s:[]}", "kind", kind, "label", label, "x",
			      x_axis, "y", y_axis, "points");
		if (!s)
			return;
		json_object_set_new(series, key, s);
	}
	json_array_append_new(json_object_get(s, "points"), json_pack("[f, f]", x, y));
}

void bj_figure(json_t *r, const char *key, double value, const char *unit, const char *label)
{
	if (r && isfinite(value)) /* a ratio over a zero median has no figure */
		json_object_set_new(json_object_get(r, "figures"), key,
				    json_pack("{s:f, s:s, s:s}", "value", value, "unit", unit,
					      "label", label));
}

int bj_write(json_t *r)
{
	const char *path = getenv("HEARTH_BENCH_OUT");
	int rc = 0;

	if (!r)
		return path && *path ? -1 : 0;
	if (path && *path) {
		if (json_dump_file(r, path, JSON_INDENT(1) | JSON_REAL_PRECISION(10)) < 0) {
			fprintf(stderr, "bench_json: cannot write %s\n", path);
			rc = -1;
		} else {
			fprintf(stderr, "results (JSON): %s\n", path);
		}
	}
	json_decref(r);
	return rc;
}
