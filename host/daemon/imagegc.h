/*
 * imagegc.h - garbage collection of images no version references any more
 * (after a function or tenant was deleted, or a deploy failed after building
 * its image).
 *
 * The work is the store's (store_image_gc(): the shared copy on PostgreSQL,
 * this host's image directory on both backends); this module decides when it
 * runs, keeps this host's deploys out while it does, counts it in /metrics
 * and logs it. A sweep runs:
 *   - at start;
 *   - at once after a deletion on this host (imagegc_kick(); deletions close
 *     together share one sweep), shared store included;
 *   - on every host, within about a second after any host removed images
 *     from the shared store (store_image_gc_epoch()): its own cache only;
 *   - every interval, shared store included (what the others missed: a host
 *     that was down, a crash between a deletion and its sweep).
 *
 * A deploy writes its image file before its version exists, so a deploy
 * calls imagegc_deploy_begin() before it builds the image and
 * imagegc_deploy_end() after its version is stored (or it failed): sweeps
 * wait for deploys in progress on this host and deploys wait for a sweep.
 * Deploys on other hosts are the store's concern (store.h).
 */
#ifndef HEARTH_DAEMON_IMAGEGC_H
#define HEARTH_DAEMON_IMAGEGC_H

#include <stdbool.h>

#include "store.h"

#define IMAGEGC_DEFAULT_INTERVAL_S 600

struct imagegc;

/* Starts the collector thread (its first sweep at once). interval_s >= 1. */
int imagegc_start(struct store *store, int interval_s, struct imagegc **out);
/* Stops the thread; a sweep in progress finishes first. NULL is a no-op. */
void imagegc_stop(struct imagegc *g);

/* Around a deploy's image build and version store (shared with other deploys). NULL: no-op. */
void imagegc_deploy_begin(struct imagegc *g);
void imagegc_deploy_end(struct imagegc *g);

/* A version was deleted: sweep soon, on the collector's thread. NULL: no-op. */
void imagegc_kick(struct imagegc *g);

/* One sweep now, on the caller's thread (shared: the shared store too). */
int imagegc_run(struct imagegc *g, bool shared, struct store_image_gc *st);

#endif
