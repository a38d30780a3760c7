/*
 * ui.h - hearthd's web console: static files under /ui/ and the small
 * read-only JSON endpoints under /v1/console/ that its pages need.
 *
 * The console's files (ui/ in the source tree, uPlot fetched pinned at build
 * time) are read into memory once by ui_open() from one directory, and only
 * the names in ui.c's table are ever served: a URL cannot name another file.
 * They carry no data, so they need no key; every byte of data comes from the
 * API with the key the user typed, under a Content-Security-Policy that lets
 * the pages load scripts, styles and data from hearthd alone and run no
 * inline script.
 *
 * /v1/console/ endpoints answer for the caller's tenant only (the admin
 * names one in X-Hearth-Tenant), except /v1/console/host, which is the
 * admin's alone. They only read.
 *
 * Call order: ui_open() before the API starts; ui_serve() and ui_api() from
 * the request handlers (any thread); ui_close() after the API stopped.
 */
#ifndef HEARTH_DAEMON_UI_H
#define HEARTH_DAEMON_UI_H

#include <stdbool.h>

#include <microhttpd.h>

#include "auth.h"
#include "scheduler.h"
#include "store.h"

struct ui;

struct ui_env {
	struct store *store;
	struct sched *sched;
	int host_capacity;     /* VM slots (max_vms) */
	int unreserved_floor;
};

/*
 * Loads the console's files from dir (NULL or missing: the console answers
 * 503 with the reason, the API is unaffected). Returns 0 or -ENOMEM.
 */
int ui_open(const char *dir, const struct ui_env *env, struct ui **out);
void ui_close(struct ui *u);

/* "/ui" or anything under "/ui/": served by ui_serve() without a key. */
bool ui_is_path(const char *url);
enum MHD_Result ui_serve(struct ui *u, struct MHD_Connection *c, const char *method,
			 const char *url);

/* "/v1/console/..." (after authentication): ui_api() answers it. */
bool ui_is_api(const char *url);
enum MHD_Result ui_api(struct ui *u, struct MHD_Connection *c, const struct principal *who,
		       const char *method, const char *url);

#endif
