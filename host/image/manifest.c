/*
 * manifest.c - parsing and validation of a function package's manifest.json.
 * The input comes from a tenant, so every field is type- and range-checked.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "image.h"
#include "image_priv.h"

#define MAX_PATH_LEN 1024
#define MAX_ARGS 256
#define MAX_ENV 1024
#define MAX_ENV_BYTES (64 * 1024)


void hearth_manifest_free(struct hearth_manifest *m)
{
	if (!m)
		return;
	free(m->handler);
	for (size_t i = 0; i < m->nargs; i++)
		free(m->args[i]);
	free(m->args);
	for (size_t i = 0; i < m->nenv; i++)
		free(m->env[i]);
	free(m->env);
	free(m->init);
	free(m->lambda_handler);
	memset(m, 0, sizeof(*m));
}

/* Guest paths: relative ones live under /var/task. No "..", no empty names. */
static char *guest_path(const char *field, const char *p, char *err, size_t errlen)
{
	size_t len = strlen(p);
	char *out;

	if (len == 0 || len > MAX_PATH_LEN) {
		seterr(err, errlen, "manifest: \"%s\" must be a path of 1..%d bytes", field,
		       MAX_PATH_LEN);
		return NULL;
	}
	for (const char *s = p; *s;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);

		if (n == 2 && s[0] == '.' && s[1] == '.') {
			seterr(err, errlen, "manifest: \"%s\" may not contain '..' (%s)", field, p);
			return NULL;
		}
		s += n;
		while (*s == '/')
			s++;
	}
	while (p[0] == '.' && p[1] == '/')
		p += 2;
	if (p[0] == '/')
		out = strdup(p);
	else if (asprintf(&out, "%s/%s", HEARTH_TASK_DIR, p) < 0)
		out = NULL;
	if (!out)
		seterr(err, errlen, "manifest: out of memory");
	return out;
}

static int get_uint(json_t *root, const char *key, uint32_t def, uint32_t lo, uint32_t hi,
		    uint32_t *out, char *err, size_t errlen)
{
	json_t *v = json_object_get(root, key);
	json_int_t n;

	if (!v) {
		*out = def;
		return 0;
	}
	if (!json_is_integer(v)) {
		seterr(err, errlen, "manifest: \"%s\" must be an integer", key);
		return -1;
	}
	n = json_integer_value(v);
	if (n < (json_int_t)lo || n > (json_int_t)hi) {
		seterr(err, errlen, "manifest: \"%s\" = %lld is out of range %u..%u", key,
		       (long long)n, lo, hi);
		return -1;
	}
	*out = (uint32_t)n;
	return 0;
}

static int env_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int valid_env_key(const char *k)
{
	if (!*k)
		return 0;
	for (const char *s = k; *s; s++) {
		if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (s != k && *s >= '0' && *s <= '9')))
			return 0;
	}
	return 1;
}

#define MAX_LAMBDA_HANDLER 128

/* "runtime": absent (0), exec (0, explicit) or one of the provided runtimes (1); -1 = bad. */
static int runtime_of(json_t *root, bool has_bootstrap, char *err, size_t errlen)
{
	static const char *const provided[] = {"provided", "provided.al2", "provided.al2023"};
	json_t *v = json_object_get(root, "runtime");
	const char *s;

	if (!v)
		return has_bootstrap ? 1 : 0;
	if (!json_is_string(v)) {
		seterr(err, errlen, "manifest: \"runtime\" must be a string");
		return -1;
	}
	s = json_string_value(v);
	if (!strcmp(s, "exec"))
		return 0;
	for (size_t i = 0; i < sizeof(provided) / sizeof(provided[0]); i++)
		if (!strcmp(s, provided[i]))
			return 1;
	seterr(err, errlen, "manifest: \"runtime\" must be \"provided\" (a custom runtime: "
	       "bootstrap), \"provided.al2\", \"provided.al2023\" or \"exec\"");
	return -1;
}

int hearth_manifest_parse(const char *json, size_t len, struct hearth_manifest *m, char *err,
			  size_t errlen)
{
	return hearth_manifest_parse_pkg(json, len, false, m, err, errlen);
}

int hearth_manifest_parse_pkg(const char *json, size_t len, bool has_bootstrap,
			      struct hearth_manifest *m, char *err, size_t errlen)
{
	static const char *const known[] = {"handler", "args",  "memory_mb", "timeout_ms",
					    "env",     "shell", "init", "runtime"};
	json_error_t jerr;
	json_t *root, *v;
	const char *key;
	size_t envbytes = 0;
	int rc = -1;

	memset(m, 0, sizeof(*m));
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		seterr(err, errlen, "manifest: invalid JSON at line %d column %d: %s", jerr.line,
		       jerr.column, jerr.text);
		return -1;
	}
	if (!json_is_object(root)) {
		seterr(err, errlen, "manifest: the top level must be a JSON object");
		goto out;
	}
	json_object_foreach(root, key, v) {
		size_t i;

		for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (!strcmp(key, known[i]))
				break;
		if (i == sizeof(known) / sizeof(known[0])) {
			seterr(err, errlen, "manifest: unknown key \"%s\"", key);
			goto out;
		}
	}

	int rtm = runtime_of(root, has_bootstrap, err, errlen);

	if (rtm < 0)
		goto out;
	m->runtime = rtm == 1;
	v = json_object_get(root, "handler");
	if (m->runtime) {
		/* The Lambda handler setting: free text for the runtime, kept printable. */
		if (v && (!json_is_string(v) || json_string_length(v) > MAX_LAMBDA_HANDLER ||
			  strlen(json_string_value(v)) != json_string_length(v))) {
			seterr(err, errlen, "manifest: \"handler\" must be a string of at most %d "
			       "bytes in runtime mode", MAX_LAMBDA_HANDLER);
			goto out;
		}
		for (const char *c = v ? json_string_value(v) : ""; *c; c++) {
			if ((unsigned char)*c < 0x20 || *c == 0x7f) {
				seterr(err, errlen, "manifest: \"handler\" contains a control character");
				goto out;
			}
		}
		if (json_object_get(root, "init")) {
			seterr(err, errlen, "manifest: \"init\" is not used in runtime mode: the "
			       "bootstrap initialises itself before its first /next");
			goto out;
		}
		m->lambda_handler = strdup(v ? json_string_value(v) : "");
		m->handler = strdup(HEARTH_TASK_DIR "/bootstrap");
		if (!m->lambda_handler || !m->handler)
			goto oom;
		goto handler_done;
	}
	if (!json_is_string(v)) {
		seterr(err, errlen, "manifest: \"handler\" (a string) is required");
		goto out;
	}
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		seterr(err, errlen, "manifest: \"handler\" contains a NUL byte");
		goto out;
	}
	m->handler = guest_path("handler", json_string_value(v), err, errlen);
	if (!m->handler)
		goto out;
handler_done:

	v = json_object_get(root, "init");
	if (v) {
		if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
			seterr(err, errlen, "manifest: \"init\" must be a string");
			goto out;
		}
		m->init = guest_path("init", json_string_value(v), err, errlen);
		if (!m->init)
			goto out;
	}

	if (get_uint(root, "memory_mb", HEARTH_IMAGE_DEFAULT_MEMORY_MB, 32, 65536, &m->memory_mb,
		     err, errlen) ||
	    get_uint(root, "timeout_ms", HEARTH_IMAGE_DEFAULT_TIMEOUT_MS, 1, 900000,
		     &m->timeout_ms, err, errlen))
		goto out;

	v = json_object_get(root, "shell");
	if (v && !json_is_boolean(v)) {
		seterr(err, errlen, "manifest: \"shell\" must be true or false");
		goto out;
	}
	m->shell = v && json_is_true(v);

	v = json_object_get(root, "args");
	if (v) {
		size_t n = json_is_array(v) ? json_array_size(v) : 0;

		if (!json_is_array(v) || n > MAX_ARGS) {
			seterr(err, errlen, "manifest: \"args\" must be an array of at most %d strings",
			       MAX_ARGS);
			goto out;
		}
		m->args = calloc(n ? n : 1, sizeof(char *));
		if (!m->args)
			goto oom;
		for (size_t i = 0; i < n; i++) {
			json_t *a = json_array_get(v, i);

			if (!json_is_string(a) ||
			    strlen(json_string_value(a)) != json_string_length(a)) {
				seterr(err, errlen, "manifest: \"args\"[%zu] must be a string", i);
				goto out;
			}
			m->args[i] = strdup(json_string_value(a));
			if (!m->args[i])
				goto oom;
			m->nargs++;
		}
	}

	v = json_object_get(root, "env");
	if (v) {
		json_t *val;
		size_t n = json_is_object(v) ? json_object_size(v) : 0;

		if (!json_is_object(v) || n > MAX_ENV) {
			seterr(err, errlen, "manifest: \"env\" must be an object of at most %d strings",
			       MAX_ENV);
			goto out;
		}
		m->env = calloc(n ? n : 1, sizeof(char *));
		if (!m->env)
			goto oom;
		json_object_foreach(v, key, val) {
			if (!valid_env_key(key)) {
				seterr(err, errlen, "manifest: env key \"%s\" is not a valid name", key);
				goto out;
			}
			if (!json_is_string(val) ||
			    strlen(json_string_value(val)) != json_string_length(val)) {
				seterr(err, errlen, "manifest: env \"%s\" must be a string", key);
				goto out;
			}
			if (asprintf(&m->env[m->nenv], "%s=%s", key, json_string_value(val)) < 0) {
				m->env[m->nenv] = NULL;
				goto oom;
			}
			envbytes += strlen(m->env[m->nenv]) + 1;
			m->nenv++;
			if (envbytes > MAX_ENV_BYTES) {
				seterr(err, errlen, "manifest: \"env\" exceeds %d bytes", MAX_ENV_BYTES);
				goto out;
			}
		}
		qsort(m->env, m->nenv, sizeof(char *), env_cmp);
	}
	rc = 0;
	goto out;
oom:
	seterr(err, errlen, "manifest: out of memory");
out:
	json_decref(root);
	if (rc)
		hearth_manifest_free(m);
	return rc;
}
