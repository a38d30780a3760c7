/*
 * client.h - how hearthctl talks to hearthd: global options, one libcurl
 * connection, API errors, exit codes and the progress line.
 *
 * Every subcommand that calls the API parses its options with hctl_getopt(),
 * which also accepts the global options anywhere on the command line, then
 * calls hctl_request() (or hctl_call() for JSON in, JSON out). The first
 * request resolves the endpoint and the key (see hctl_usage_globals()); the
 * connection is kept alive for the following requests of the same run.
 *
 * Output rules: results go to stdout, progress and errors to stderr. An API
 * error is printed as "hearthctl: <code>: <message>".
 */
#ifndef HEARTH_CLI_CLIENT_H
#define HEARTH_CLI_CLIENT_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* Exit statuses of every hearthctl command. */
enum {
	HCTL_EXIT_OK = 0,
	HCTL_EXIT_FAIL = 1,        /* the function failed, or a local step (packing) failed */
	HCTL_EXIT_USAGE = 2,       /* bad command line */
	HCTL_EXIT_API = 3,         /* hearthd answered with an error (HTTP 4xx/5xx) */
	HCTL_EXIT_UNREACHABLE = 4, /* no answer from hearthd (connection, transport) */
};

struct hctl_globals {
	const char *url;    /* --url, $HEARTH_URL, or the default endpoint */
	const char *key;    /* --key, $HEARTH_KEY, or the admin key file */
	const char *tenant; /* --tenant, $HEARTH_TENANT: sent as X-Hearth-Tenant */
	bool verbose;       /* -v/--verbose */
};
extern struct hctl_globals hctl_g;

/* Prints the global options' help (appended to every command's --help). */
void hctl_usage_globals(FILE *f);

/*
 * getopt_long() over the command's own options plus the global ones (--url,
 * --key, --tenant, -v/--verbose), which it consumes itself. Same return
 * values as getopt_long(); a command's long options must use vals below 0x100
 * or short letters. Call with optind = 1 before the first use.
 */
int hctl_getopt(int argc, char **argv, const char *shortopts, const struct option *longopts);
/* Consumes global options before the command name; returns the command's index or -1. */
int hctl_leading_globals(int argc, char **argv);

/* Parses a non-negative decimal integer option; -1 (with a message) if malformed. */
long long hctl_parse_count(const char *opt, const char *s, long long max);

struct hctl_header {
	char *name;
	char *value;
};

struct hctl_response {
	long status;
	char *body; /* NUL-terminated for convenience; len excludes the NUL */
	size_t len;
	struct hctl_header *headers;
	size_t nheaders;
};

struct hctl_request {
	const char *method;           /* GET, POST, PUT, DELETE */
	const char *path;             /* "/v1/..." with any query, already escaped */
	const void *body;             /* in-memory body, or ... */
	size_t body_len;
	FILE *body_file;              /* ... a body read from this file, body_file_len bytes */
	long long body_file_len;
	const char *content_type;     /* NULL: application/json when there is a body */
	const char *const *headers;   /* extra "Name: value" strings, NULL-terminated */
	bool no_tenant;               /* do not send X-Hearth-Tenant (tenant administration) */
	bool no_auth;                 /* do not send a key (health check) */
	const char *progress;         /* label of an upload progress line, or NULL */
	const char *progress_wait;    /* what hearthd does once the body is sent ("building") */
	double progress_after_s;      /* show nothing before this many seconds */
	bool progress_transient;      /* TTY only, and erased when the answer comes */
};

/*
 * Sends one request and reads the whole answer, whatever its status.
 * Returns 0 when hearthd answered; HCTL_EXIT_UNREACHABLE (message printed)
 * when it did not, HCTL_EXIT_USAGE when the endpoint or key is unusable.
 */
int hctl_request(const struct hctl_request *rq, struct hctl_response *rs);
void hctl_response_free(struct hctl_response *rs);
/* Whether a key was found (valid after the first hctl_request()). */
bool hctl_have_key(void);
/* The value of a response header (case-insensitive name), or NULL. */
const char *hctl_header(const struct hctl_response *rs, const char *name);

/* Prints an error answer as "hearthctl: <code>: <message>"; returns HCTL_EXIT_API. */
int hctl_api_error(const struct hctl_response *rs);

/*
 * JSON in, JSON out: sends body (stolen; may be NULL) and, on a 2xx answer,
 * stores the parsed answer in *out (caller decrefs; out may be NULL).
 * Returns 0 or an exit status (errors printed).
 */
int hctl_call(const char *method, const char *path, json_t *body, bool no_tenant, json_t **out);

/* Escapes one path segment (a name from the command line); caller frees. */
char *hctl_escape(const char *segment);

/* Prints j as indented JSON on stdout (for --json). */
void hctl_print_json(const json_t *j);

/* Progress on stderr: redrawn in place on a TTY, one line per step otherwise. */
bool hctl_tty(void);
void hctl_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Ends the current progress line (newline on a TTY). */
void hctl_progress_done(void);
/* Erases the current progress line instead. */
void hctl_progress_erase(void);
/* Formats a byte count as "3.1 MiB" into buf. */
const char *hctl_bytes(double n, char *buf, size_t len);

/* Formats epoch seconds (a JSON integer) as "2026-11-27 12:35:50Z"; "" if not an integer. */
const char *hctl_time(const json_t *epoch_s, char *buf, size_t len);

/* Frees the connection (at exit). */
void hctl_cleanup(void);

#endif
