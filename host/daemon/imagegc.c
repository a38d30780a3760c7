/*
 * imagegc.c - when image GC runs, and what it did; see imagegc.h.
 */
#include "imagegc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"
#include "scheduler.h" /* mono_us() */

/* How often the collector looks at the store's GC epoch (no I/O) and its kicks. */
#define POLL_MS 500

struct imagegc {
	struct store *store;
	/* deploys hold it shared, a sweep exclusively (writers preferred: a stream of
	 * deploys does not starve the collector) */
	pthread_rwlock_t deploys;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	pthread_t th;
	bool stopping, kicked;
	int interval_s;
};

int imagegc_run(struct imagegc *g, bool shared, struct store_image_gc *st)
{
	int64_t t0 = mono_us();
	int rc;

	pthread_rwlock_wrlock(&g->deploys);
	rc = store_image_gc(g->store, shared, st);
	pthread_rwlock_unlock(&g->deploys);
	metrics_image_gc(st->removed_shared, st->removed_local, st->kept_for_deploy, st->bytes);
	if (rc)
		hlog_warn("imagegc", "sweep stopped early: the store could not be read (%s); "
			  "nothing unknown was removed", strerror(-rc));
	if (!(st->removed_shared || st->removed_local || st->kept_for_deploy))
		return rc;
	if (strcmp(store_backend(g->store), "sqlite") == 0)
		hlog_info("imagegc", "removed %d image files no version uses (%llu bytes); %lld ms",
			  st->removed_local, (unsigned long long)st->bytes,
			  (long long)(mono_us() - t0) / 1000);
	else
		hlog_info("imagegc", "removed %d images no version uses from the shared store and %d "
			  "files from this host's cache (%llu bytes); %d kept for deploys using them "
			  "meanwhile; %lld ms", st->removed_shared, st->removed_local,
			  (unsigned long long)st->bytes, st->kept_for_deploy,
			  (long long)(mono_us() - t0) / 1000);
	return rc;
}

static void *collector(void *arg)
{
	struct imagegc *g = arg;
	int64_t last_full = 0, epoch = store_image_gc_epoch(g->store);
	bool first = true;

	pthread_mutex_lock(&g->mu);
	while (!g->stopping) {
		struct store_image_gc st;
		struct timespec ts;
		int64_t now = mono_us(), e = store_image_gc_epoch(g->store);
		bool full = first || g->kicked ||
			    now - last_full >= (int64_t)g->interval_s * 1000000;

		if (full || e != epoch) {
			g->kicked = false;
			first = false;
			pthread_mutex_unlock(&g->mu);
			/* The epoch read before the sweep: a removal during it sweeps again. */
			epoch = e;
			if (full)
				last_full = now;
			imagegc_run(g, full, &st);
			pthread_mutex_lock(&g->mu);
			continue;
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += POLL_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&g->cond, &g->mu, &ts);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

int imagegc_start(struct store *store, int interval_s, struct imagegc **out)
{
	struct imagegc *g = calloc(1, sizeof(*g));
	pthread_rwlockattr_t ra;

	if (!g)
		return -ENOMEM;
	g->store = store;
	g->interval_s = interval_s > 0 ? interval_s : IMAGEGC_DEFAULT_INTERVAL_S;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&g->deploys, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cond, NULL);
	if (pthread_create(&g->th, NULL, collector, g) != 0) {
		pthread_rwlock_destroy(&g->deploys);
		free(g);
		return -EAGAIN;
	}
	*out = g;
	return 0;
}

void imagegc_stop(struct imagegc *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	g->stopping = true;
	pthread_cond_signal(&g->cond);
	pthread_mutex_unlock(&g->mu);
	pthread_join(g->th, NULL);
	pthread_rwlock_destroy(&g->deploys);
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cond);
	free(g);
}

void imagegc_deploy_begin(struct imagegc *g)
{
	if (g)
		pthread_rwlock_rdlock(&g->deploys);
}

void imagegc_deploy_end(struct imagegc *g)
{
	if (g)
		pthread_rwlock_unlock(&g->deploys);
}

void imagegc_kick(struct imagegc *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	g->kicked = true;
	pthread_cond_signal(&g->cond);
	pthread_mutex_unlock(&g->mu);
}
