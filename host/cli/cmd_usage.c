/*
 * hearthctl usage: metered usage from GET /v1/usage, as an aligned table,
 * hearthd's JSON (--json) or hearthd's CSV passed through (--csv).
 *
 * A tenant key sees its own usage; the admin key sees every tenant's, or one
 * tenant's with --tenant (sent as X-Hearth-Tenant). hearthd keeps usage in
 * whole hours, so a range covers every hour it touches.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "hearthctl.h"

#define MB_MS_PER_GB_S 1024000LL
/* Year 9999: far enough, and hearthd's microsecond arithmetic cannot overflow. */
#define MAX_TIME 253402300799LL

static void usage_usage(FILE *f)
{
	fprintf(f,
		"usage: hearthctl usage [--from TIME] [--to TIME] [--group-by hour|function|none]\n"
		"                       [--csv | --json]\n"
		"Metered usage: invocations, errors, cold starts, duration, billed ms, MB-ms, GB-s.\n"
		"  --from TIME     start of the range (default: the beginning)\n"
		"  --to TIME       end of the range (default: now)\n"
		"                  TIME is Unix seconds, 'now', relative to now as -N followed by\n"
		"                  s, m, h, d or w (-90m, -24h, -7d), or a UTC date YYYY-MM-DD or\n"
		"                  YYYY-MM-DDTHH:MM[:SS][Z]. Usage is kept per whole hour: a range\n"
		"                  covers every hour it touches.\n"
		"  --group-by G    hour (per function and hour), function (default), or none (one\n"
		"                  row per tenant)\n"
		"  --csv           print hearthd's CSV (with a header line)\n"
		"  --json          print hearthd's answer as JSON\n"
		"A tenant key shows its own usage. The admin key shows every tenant's, or one\n"
		"tenant's with --tenant NAME. 1 GB-s = 1,024,000 MB-ms (memory MB x billed ms).\n");
	hctl_usage_globals(f);
}

/* Parses TIME (see usage_usage()) into Unix seconds; -1 with a message when malformed. */
static long long parse_time(const char *opt, const char *s, time_t now)
{
	static const struct {
		char unit;
		long long seconds;
	} units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 }, { 'w', 604800 } };
	static const char *const formats[] = { "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S",
					       "%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M", "%Y-%m-%d" };
	char *end;
	long long n;

	if (strcmp(s, "now") == 0)
		return (long long)now;
	if (isdigit((unsigned char)s[0]) && strspn(s, "0123456789") == strlen(s)) {
		errno = 0;
		n = strtoll(s, &end, 10);
		if (!errno && n <= MAX_TIME)
			return n;
	} else if (s[0] == '-' && isdigit((unsigned char)s[1])) {
		errno = 0;
		n = strtoll(s + 1, &end, 10);
		for (size_t i = 0; !errno && i < sizeof(units) / sizeof(units[0]); i++)
			if (end[0] == units[i].unit && end[1] == '\0' &&
			    n <= (long long)now / units[i].seconds)
				return (long long)now - n * units[i].seconds;
	} else {
		for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
			struct tm tm = { 0 };
			const char *rest = strptime(s, formats[i], &tm);
			time_t t;

			if (rest && !*rest && (t = timegm(&tm)) >= 0 && t <= MAX_TIME)
				return (long long)t;
		}
	}
	fprintf(stderr,
		"hearthctl: %s wants Unix seconds, 'now', -N{s,m,h,d,w} (like -24h) or a UTC date "
		"YYYY-MM-DD[THH:MM[:SS]], got '%s'\n", opt, s);
	return -1;
}

/* MB-ms as GB-s with 6 decimals, truncated: the same figure hearthd prints. */
static void gb_s(long long mb_ms, char *buf, size_t len)
{
	long long frac = mb_ms % MB_MS_PER_GB_S * 1000000 / MB_MS_PER_GB_S;

	snprintf(buf, len, "%lld.%06lld", mb_ms / MB_MS_PER_GB_S, frac);
}

enum { COL_HOUR, COL_TENANT, COL_FUNCTION, COL_INV, COL_ERR, COL_COLD, COL_DUR, COL_BILLED,
       COL_MBMS, COL_GBS, NCOLS };
static const char *const col_names[NCOLS] = { "HOUR", "TENANT", "FUNCTION", "INVOCATIONS",
					      "ERRORS", "COLD_STARTS", "DURATION_S", "BILLED_MS",
					      "MB_MS", "GB_S" };
/* The integer columns and their JSON keys, in table order, from COL_INV on. */
static const char *const int_keys[] = { "invocations", "errors", "cold_starts", "duration_us",
					"billed_ms", "mb_ms" };
#define NINTS (sizeof(int_keys) / sizeof(int_keys[0]))

struct table {
	char (*cell)[NCOLS][48];
	size_t rows;
	int width[NCOLS];
	bool shown[NCOLS];
};

/* Fills one row from the sums in v (duration in microseconds, shown as seconds). */
static void fill_sums(char row[NCOLS][48], const long long v[NINTS])
{
	for (size_t k = 0; k < NINTS; k++)
		snprintf(row[COL_INV + k], 48, "%lld", v[k]);
	snprintf(row[COL_DUR], 48, "%lld.%03lld", v[3] / 1000000, v[3] / 1000 % 1000);
	gb_s(v[5], row[COL_GBS], 48);
}

static void print_table(const struct table *t)
{
	for (size_t r = 0; r < t->rows; r++) {
		const char *sep = "";

		for (int k = 0; k < NCOLS; k++) {
			if (!t->shown[k])
				continue;
			/* Text left-aligned, numbers right-aligned; no trailing blanks. */
			if (k <= COL_FUNCTION)
				printf("%s%-*s", sep, t->width[k], t->cell[r][k]);
			else
				printf("%s%*s", sep, t->width[k], t->cell[r][k]);
			sep = "  ";
		}
		putchar('\n');
	}
}

/* The answer of GET /v1/usage as a table, with a TOTAL row when there are several rows. */
static int print_usage(const json_t *j)
{
	const json_t *rows = json_object_get(j, "usage"), *row;
	const char *group = json_string_value(json_object_get(j, "group_by"));
	long long total[NINTS] = { 0 };
	char from[40], to[40];
	struct table t = { 0 };
	size_t i, n = json_array_size(rows);

	if (json_integer_value(json_object_get(j, "from")) == 0)
		snprintf(from, sizeof(from), "%s", "the start");
	else
		hctl_time(json_object_get(j, "from"), from, sizeof(from));
	hctl_time(json_object_get(j, "to"), to, sizeof(to));
	printf("usage from %s to %s, by %s\n", from, to, group ? group : "?");
	if (n == 0) {
		printf("no invocations in this range\n");
		return 0;
	}
	t.cell = calloc(n + 2, sizeof(*t.cell));
	if (!t.cell) {
		fprintf(stderr, "hearthctl: out of memory\n");
		return HCTL_EXIT_FAIL;
	}
	for (int k = 0; k < NCOLS; k++) {
		t.shown[k] = true;
		snprintf(t.cell[0][k], sizeof(t.cell[0][k]), "%s", col_names[k]);
	}
	t.shown[COL_HOUR] = group && strcmp(group, "hour") == 0;
	t.shown[COL_FUNCTION] = !group || strcmp(group, "none") != 0;
	json_array_foreach(rows, i, row) {
		char (*c)[48] = t.cell[i + 1];
		long long v[NINTS];
		const char *tenant = json_string_value(json_object_get(row, "tenant"));
		const char *fn = json_string_value(json_object_get(row, "function"));

		hctl_time(json_object_get(row, "hour_start"), c[COL_HOUR], 48);
		snprintf(c[COL_TENANT], 48, "%s", tenant ? tenant : "");
		snprintf(c[COL_FUNCTION], 48, "%s", fn ? fn : "");
		for (size_t k = 0; k < NINTS; k++) {
			v[k] = (long long)json_integer_value(json_object_get(row, int_keys[k]));
			total[k] += v[k];
		}
		fill_sums(c, v);
	}
	t.rows = n + 1;
	if (n > 1) {
		snprintf(t.cell[t.rows][t.shown[COL_HOUR] ? COL_HOUR : COL_TENANT], 48, "%s", "TOTAL");
		fill_sums(t.cell[t.rows], total);
		t.rows++;
	}
	for (size_t r = 0; r < t.rows; r++)
		for (int k = 0; k < NCOLS; k++) {
			int w = (int)strlen(t.cell[r][k]);

			if (w > t.width[k])
				t.width[k] = w;
		}
	print_table(&t);
	free(t.cell);
	return 0;
}

int cmd_usage(int argc, char **argv)
{
	enum { OPT_FROM = 'f', OPT_TO = 't', OPT_GROUP = 'g', OPT_CSV = 'c', OPT_JSON = 'j' };
	static const struct option longopts[] = {
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		{ "group-by", required_argument, NULL, OPT_GROUP },
		{ "csv", no_argument, NULL, OPT_CSV },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long long from = -1, to = -1;
	const char *group = "function";
	bool csv = false, json = false;
	time_t now = time(NULL);
	char path[256];
	int c, rc;

	optind = 1;
	while ((c = hctl_getopt(argc, argv, "h", longopts)) != -1) {
		switch (c) {
		case OPT_FROM:
			if ((from = parse_time("--from", optarg, now)) < 0)
				return HCTL_EXIT_USAGE;
			break;
		case OPT_TO:
			if ((to = parse_time("--to", optarg, now)) < 0)
				return HCTL_EXIT_USAGE;
			break;
		case OPT_GROUP:
			group = optarg;
			if (strcmp(group, "hour") && strcmp(group, "function") && strcmp(group, "none")) {
				fprintf(stderr, "hearthctl: --group-by wants hour, function or none, got '%s'\n",
					group);
				return HCTL_EXIT_USAGE;
			}
			break;
		case OPT_CSV: csv = true; break;
		case OPT_JSON: json = true; break;
		case 'h': usage_usage(stdout); return 0;
		default: usage_usage(stderr); return HCTL_EXIT_USAGE;
		}
	}
	if (optind != argc || (csv && json)) {
		if (csv && json)
			fprintf(stderr, "hearthctl: usage takes --csv or --json, not both\n");
		usage_usage(stderr);
		return HCTL_EXIT_USAGE;
	}
	if (from >= 0 && from > (to >= 0 ? to : (long long)now)) {
		fprintf(stderr, "hearthctl: --from (%lld) is after --to (%lld)\n", from,
			to >= 0 ? to : (long long)now);
		return HCTL_EXIT_USAGE;
	}
	rc = snprintf(path, sizeof(path), "/v1/usage?group_by=%s&format=%s", group,
		      csv ? "csv" : "json");
	if (from >= 0)
		rc += snprintf(path + rc, sizeof(path) - (size_t)rc, "&from=%lld", from);
	if (to >= 0)
		snprintf(path + rc, sizeof(path) - (size_t)rc, "&to=%lld", to);

	if (csv) {
		struct hctl_request rq = { .method = "GET", .path = path };
		struct hctl_response rs;

		if ((rc = hctl_request(&rq, &rs)))
			return rc;
		if (rs.status < 200 || rs.status > 299)
			rc = hctl_api_error(&rs);
		else if (fwrite(rs.body, 1, rs.len, stdout) != rs.len)
			rc = HCTL_EXIT_FAIL;
		hctl_response_free(&rs);
		return rc;
	}
	json_t *out;

	if ((rc = hctl_call("GET", path, NULL, false, &out)))
		return rc;
	if (json)
		hctl_print_json(out);
	else
		rc = print_usage(out);
	json_decref(out);
	return rc;
}
