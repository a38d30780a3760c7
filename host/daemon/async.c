/*
 * async.c - durable asynchronous invocations; see async.h.
 */
#include "async.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "metrics.h"
#include "quota.h"

struct async {
	struct async_config cfg;
	struct store *store;
	struct sched *sched;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool stopping, kicked;
	int inflight;
};

struct attempt {
	struct async *a;
	struct async_item item;
	struct invocation inv;
};

static void attempt_done(struct invocation *inv)
{
	struct attempt *at = inv->arg;
	struct async *a = at->a;
	struct inv_record rec;
	int attempts = at->item.attempts + 1;
	int64_t now = wall_us() / 1000;
	bool ok = inv->outcome == INV_OK && inv->res.status == AGENT_INVOKE_OK;
	enum async_action action;
	int64_t next = 0;
	char why[300];

	quota_release(a->cfg.quota, inv->ver.tenant_id, inv->ver.function_id, inv->ver.memory_mb,
		      inv->outcome == INV_OK ?
			      quota_mb_ms(inv->ver.memory_mb, quota_billed_ms(inv->res.duration_us)) : 0);
	if (inv->outcome != INV_OK && strcmp(inv->error_code, "ShuttingDown") == 0) {
		/* Not the event's fault: leave it "running"; the next start requeues it. */
		goto out;
	}
	api_record_invocation(a->store, inv, "event", attempts, &rec);
	snprintf(why, sizeof(why), "%s: %s", api_status_name(inv),
		 inv->outcome == INV_OK ? (inv->res.error ? inv->res.error : "") : inv->error);
	if (ok) {
		action = ASYNC_SUCCEEDED;
	} else if (attempts > a->cfg.retries) {
		action = ASYNC_DEAD;
	} else {
		next = now + (a->cfg.backoff_ms << (attempts - 1));
		action = next - at->item.created_ms > a->cfg.max_age_ms ? ASYNC_DEAD : ASYNC_RETRY;
	}
	if (action == ASYNC_DEAD && !ok && attempts <= a->cfg.retries)
		snprintf(why + strlen(why), sizeof(why) - strlen(why), " (maximum event age reached)");
	if (store_async_complete(a->store, &rec, action, attempts, next, ok ? NULL : why, now))
		hlog_error("async", "could not record the outcome of event %s", inv->request_id);
	hlog_event(ok ? "info" : "warn", "async", inv->request_id,
		   json_pack("{s:s,s:i,s:s}", "function", inv->ver.name, "attempt", attempts,
			     "outcome", action == ASYNC_SUCCEEDED ? "succeeded" :
					action == ASYNC_RETRY ? "retry" : "dead-letter"),
		   "event attempt %d: %s", attempts, ok ? "succeeded" : why);
	metrics_async(action == ASYNC_SUCCEEDED ? "succeeded" : action == ASYNC_RETRY ? "retried" :
										       "dead");
out:
	agent_result_free(&inv->res);
	fn_version_free(&inv->ver);
	async_item_free(&at->item);
	free(at);
	pthread_mutex_lock(&a->mu);
	a->inflight--;
	a->kicked = true;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->mu);
}

static void dispatch(struct async *a, struct async_item *it)
{
	struct attempt *at = calloc(1, sizeof(*at));

	if (!at || store_version_by_id(a->store, it->version_id, &at->inv.ver)) {
		/* The function was deleted while its event waited. */
		struct inv_record rec = {
			.request_id = it->request_id, .attempt = it->attempts + 1,
			.tenant_id = it->tenant_id, .version_id = it->version_id,
			.function = "(deleted)", .kind = "event", .status = "PlatformError",
			.error = "function deleted",
		};

		store_async_complete(a->store, &rec, ASYNC_DEAD, it->attempts + 1, 0,
				     "FunctionDeleted: the function was deleted", wall_us() / 1000);
		async_item_free(it);
		free(at);
		return;
	}
	{
		int retry = 0;
		enum quota_reason why = quota_admit(a->cfg.quota, it->tenant_id,
						    at->inv.ver.function_id, at->inv.ver.memory_mb,
						    &retry);

		if (why != QUOTA_OK) {
			/* Past a limit, an event waits (untried) instead of failing. */
			store_async_defer(a->store, it->request_id, wall_us() / 1000 + retry * 1000LL);
			fn_version_free(&at->inv.ver);
			async_item_free(it);
			free(at);
			return;
		}
	}
	at->a = a;
	at->item = *it;
	_Static_assert(sizeof(at->inv.request_id) == sizeof(it->request_id), "request id sizes");
	memcpy(at->inv.request_id, it->request_id, sizeof(at->inv.request_id));
	at->inv.payload = it->payload;
	at->inv.payload_len = it->payload_len;
	at->inv.async = true;
	at->inv.done = attempt_done;
	at->inv.arg = at;
	pthread_mutex_lock(&a->mu);
	a->inflight++;
	pthread_mutex_unlock(&a->mu);
	sched_submit(a->sched, &at->inv);
}

static void *dispatcher(void *arg)
{
	struct async *a = arg;

	pthread_mutex_lock(&a->mu);
	while (!a->stopping) {
		int room = a->cfg.max_inflight - a->inflight, n = 0;

		if (room > 0) {
			struct async_item items[32];

			if (room > 32)
				room = 32;
			pthread_mutex_unlock(&a->mu);
			store_async_claim(a->store, wall_us() / 1000, items, room, &n);
			for (int i = 0; i < n; i++)
				dispatch(a, &items[i]);
			pthread_mutex_lock(&a->mu);
			if (n > 0)
				continue;
		}
		if (!a->kicked && !a->stopping) {
			int64_t due = -1, wait_ms = 1000;
			struct timespec ts;

			pthread_mutex_unlock(&a->mu);
			due = store_async_next_due(a->store);
			pthread_mutex_lock(&a->mu);
			if (due >= 0) {
				wait_ms = due - wall_us() / 1000;
				if (wait_ms < 1)
					wait_ms = 1;
				if (wait_ms > 1000)
					wait_ms = 1000;
			}
			int64_t w = wall_us() + wait_ms * 1000;

			ts.tv_sec = w / 1000000;
			ts.tv_nsec = (w % 1000000) * 1000;
			if (!a->kicked)
				pthread_cond_timedwait(&a->cond, &a->mu, &ts);
		}
		a->kicked = false;
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

int async_start(const struct async_config *cfg, struct store *store, struct sched *sched,
		struct async **out)
{
	struct async *a = calloc(1, sizeof(*a));
	int n = 0;

	if (!a)
		return -ENOMEM;
	a->cfg = *cfg;
	if (a->cfg.retries < 0)
		a->cfg.retries = 2;
	if (a->cfg.backoff_ms <= 0)
		a->cfg.backoff_ms = 1000;
	if (a->cfg.max_age_ms <= 0)
		a->cfg.max_age_ms = 6 * 3600 * 1000LL;
	if (a->cfg.max_inflight <= 0)
		a->cfg.max_inflight = 64;
	a->store = store;
	a->sched = sched;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cond, NULL);
	store_async_recover(store, &n);
	if (n)
		hlog_info("async", "resuming %d event(s) interrupted by the previous run", n);
	if (pthread_create(&a->thread, NULL, dispatcher, a)) {
		free(a);
		return -EAGAIN;
	}
	*out = a;
	return 0;
}

void async_kick(struct async *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->mu);
	a->kicked = true;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->mu);
}

void async_stop(struct async *a)
{
	pthread_mutex_lock(&a->mu);
	a->stopping = true;
	pthread_cond_signal(&a->cond);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);
}

void async_free(struct async *a)
{
	free(a);
}
