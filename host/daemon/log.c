/*
 * log.c - JSON log lines; see log.h.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static bool verbose;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

void hlog_set_verbose(bool v)
{
	verbose = v;
}

static void emit(const char *level, const char *component, const char *request_id, json_t *fields,
		 const char *fmt, va_list ap)
{
	char msg[2048], ts[96];
	struct timespec now;
	struct tm tm;
	json_t *o = json_object();
	char *line;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "level", json_string(level));
	json_object_set_new(o, "component", json_string(component));
	if (request_id)
		json_object_set_new(o, "request_id", json_string(request_id));
	/* msg may hold guest-produced bytes; never let invalid UTF-8 drop the line. */
	json_t *m = json_string(msg);
	json_object_set_new(o, "msg", m ? m : json_string("<non-UTF-8 message>"));
	if (fields) {
		json_object_update(o, fields);
		json_decref(fields);
	}
	line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!line)
		return;
	pthread_mutex_lock(&mu);
	fprintf(stderr, "%s\n", line);
	pthread_mutex_unlock(&mu);
	free(line);
}

void hlog_event(const char *level, const char *component, const char *request_id, json_t *fields,
		const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(level, component, request_id, fields, fmt, ap);
	va_end(ap);
}

void hlog_debug(const char *comp, const char *fmt, ...)
{
	va_list ap;

	if (!verbose)
		return;
	va_start(ap, fmt);
	emit("debug", comp, NULL, NULL, fmt, ap);
	va_end(ap);
}
