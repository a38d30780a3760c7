/*
 * ledger.c - the invocation ledger's journal (see ledger.h).
 */
#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_backend.h"

/* How often records held in memory (ledger_hold) are tried on file again. */
#define HOLD_RETRY_MS 200

/* One record on file, not yet committed. */
struct pending {
	struct pending *next;
	json_t *rec;
	uint64_t seq;
};

struct ledger {
	pthread_mutex_t mu;
	pthread_cond_t work; /* the writer: records came, a flush is wanted, or stop */
	pthread_cond_t done; /* ledger_sync: committed_seq moved */
	int fd[2];
	off_t size[2];
	int active;          /* the segment appends go to */
	char path[2][4300];
	struct pending *head, *tail;
	struct pending *held_head, *held_tail; /* not on file (the disk refused): in memory */
	size_t held; /* changed under mu (atomically), read without it by ledger_held */
	uint64_t added_seq;     /* the newest record on file */
	uint64_t committed_seq; /* every record up to this one is committed */
	bool flush_now, stopping, started;
	pthread_t thread;
	ledger_commit_fn commit;
	void *ctx;
	unsigned batch_us;
	struct ledger_stats st;
};

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A deadline for pthread_cond_timedwait on a CLOCK_MONOTONIC condition. */
static struct timespec deadline_in(int64_t ns)
{
	int64_t t = mono_ns() + ns;

	return (struct timespec){ .tv_sec = t / 1000000000, .tv_nsec = t % 1000000000 };
}

static void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

/*
 * Commits recs (JSON records) through the store, n at a time. 0, or the
 * store's error when a transaction failed (nothing of that batch stored).
 */
static int commit_json(struct ledger *l, json_t **recs, size_t n, const char *where)
{
	struct inv_record *r = calloc(n ? n : 1, sizeof(*r));
	uint8_t **logs = calloc(n ? n : 1, sizeof(*logs));
	int *rcs = calloc(n ? n : 1, sizeof(*rcs));
	size_t k = 0;
	int rc = -ENOMEM;

	if (!r || !logs || !rcs)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (store_record_parse(recs[i], &r[k], &logs[k])) {
			hlog_error("ledger", "%s: a malformed record is dropped", where);
			free(logs[k]);
			logs[k] = NULL;
			l->st.dropped++;
			continue;
		}
		k++;
	}
	rc = k ? l->commit(l->ctx, r, k, rcs) : 0;
	for (size_t i = 0; rc == 0 && i < k; i++) {
		if (rcs[i] == -EEXIST) /* stored before a crash, replayed now: counted once */
			continue;
		if (rcs[i]) {
			hlog_error("ledger", "invocation record %s (attempt %d) could not be stored: %s",
				   r[i].request_id, r[i].attempt, strerror(-rcs[i]));
			l->st.dropped++;
		}
	}
	for (size_t i = 0; i < k; i++)
		free(logs[i]);
out:
	free(r);
	free(logs);
	free(rcs);
	return rc;
}

/* Replays one segment file into the store, in batches. */
static int replay(struct ledger *l, int seg)
{
	enum { BATCH = 512 };
	FILE *f = fopen(l->path[seg], "r");
	json_t *recs[BATCH];
	char *line = NULL;
	size_t cap = 0, n = 0;
	ssize_t len;
	int rc = 0;

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
		json_t *j;

		if (line[len - 1] != '\n') {
			/* The last append was cut short (the process died mid-write). */
			hlog_warn("ledger", "%s: a torn last record (%zd bytes) is dropped",
				  l->path[seg], len);
			l->st.dropped++;
			break;
		}
		j = json_loadb(line, (size_t)len, 0, NULL);
		if (!j) {
			hlog_error("ledger", "%s: a line that is not JSON is dropped", l->path[seg]);
			l->st.dropped++;
			continue;
		}
		recs[n++] = j;
		if (n == BATCH) {
			rc = commit_json(l, recs, n, l->path[seg]);
			l->st.replayed += rc ? 0 : n;
			while (n)
				json_decref(recs[--n]);
		}
	}
	if (rc == 0 && n) {
		rc = commit_json(l, recs, n, l->path[seg]);
		l->st.replayed += rc ? 0 : n;
	}
	while (n)
		json_decref(recs[--n]);
	free(line);
	fclose(f);
	return rc;
}

static void write_held_locked(struct ledger *l);

static void *writer_main(void *arg)
{
	struct ledger *l = arg;

	pthread_mutex_lock(&l->mu);
	for (;;) {
		struct pending *batch;
		uint64_t last;
		size_t n = 0;
		int old, rc;

		while (!l->head && !l->stopping) {
			if (!l->held_head) {
				pthread_cond_wait(&l->work, &l->mu);
				continue;
			}
			/* Records the disk refused: try them again every HOLD_RETRY_MS. */
			struct timespec ts = deadline_in((int64_t)HOLD_RETRY_MS * 1000000);
			pthread_cond_timedwait(&l->work, &l->mu, &ts);
			write_held_locked(l);
		}
		if (!l->head)
			break;
		if (l->batch_us && !l->flush_now && !l->stopping) {
			/* Let more records join this transaction. */
			struct timespec ts = deadline_in((int64_t)l->batch_us * 1000);

			while (!l->flush_now && !l->stopping &&
			       pthread_cond_timedwait(&l->work, &l->mu, &ts) != ETIMEDOUT)
				;
		}
		/* Everything on the active segment is in the list: take both, switch segments. */
		batch = l->head;
		last = l->tail->seq;
		l->head = l->tail = NULL;
		l->flush_now = false;
		old = l->active;
		l->active ^= 1;
		pthread_mutex_unlock(&l->mu);

		for (struct pending *p = batch; p; p = p->next)
			n++;
		json_t **recs = malloc(n * sizeof(*recs));
		size_t k = 0;

		for (struct pending *p = batch; recs && p; p = p->next)
			recs[k++] = p->rec;
		for (int tries = 0;; tries++) {
			rc = recs ? commit_json(l, recs, n, l->path[old]) : -ENOMEM;
			if (rc == 0)
				break;
			if (tries % 50 == 0)
				hlog_error("ledger", "%zu invocation records could not be committed (%s); "
						     "they stay in %s and are tried again", n,
					   strerror(-rc), l->path[old]);
			if (__atomic_load_n(&l->stopping, __ATOMIC_ACQUIRE) && tries >= 2)
				break; /* kept on file: the next start replays them */
			usleep(200000);
		}
		free(recs);
		if (rc == 0 && ftruncate(l->fd[old], 0) != 0)
			hlog_error("ledger", "cannot empty %s: %s (its records are replayed, and "
					     "skipped, at the next start)", l->path[old], strerror(errno));
		for (struct pending *p = batch, *nx; p; p = nx) {
			nx = p->next;
			json_decref(p->rec);
			free(p);
		}
		pthread_mutex_lock(&l->mu);
		if (rc == 0) {
			l->size[old] = 0;
			l->st.committed += n;
			l->st.batches++;
		}
		/* On a failed stop the records stay on file; waiters are released either way. */
		l->committed_seq = last;
		pthread_cond_broadcast(&l->done);
		if (rc != 0)
			break;
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

int ledger_open(const char *base, ledger_commit_fn commit, void *ctx, unsigned batch_us,
		struct ledger **out)
{
	struct ledger *l = calloc(1, sizeof(*l));
	int rc = 0;

	*out = NULL;
	if (!l)
		return -ENOMEM;
	pthread_mutex_init(&l->mu, NULL);
	cond_init_mono(&l->work);
	cond_init_mono(&l->done);
	l->commit = commit;
	l->ctx = ctx;
	l->batch_us = batch_us;
	l->fd[0] = l->fd[1] = -1;
	for (int i = 0; i < 2; i++) {
		if ((size_t)snprintf(l->path[i], sizeof(l->path[i]), "%s.%d", base, i) >=
		    sizeof(l->path[i])) {
			rc = -ENAMETOOLONG;
			goto fail;
		}
	}
	/* What an earlier run left (killed, or its store refused): into the store first. */
	for (int i = 0; i < 2 && rc == 0; i++)
		rc = replay(l, i);
	if (rc) {
		hlog_error("ledger", "the journal's records could not be committed: %s", strerror(-rc));
		goto fail;
	}
	if (l->st.replayed || l->st.dropped)
		hlog_info("ledger", "%llu invocation records recovered from the journal (%llu dropped)",
			  (unsigned long long)l->st.replayed, (unsigned long long)l->st.dropped);
	for (int i = 0; i < 2; i++) {
		l->fd[i] = open(l->path[i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (l->fd[i] < 0) {
			rc = -errno;
			goto fail;
		}
	}
	if ((rc = -pthread_create(&l->thread, NULL, writer_main, l)) != 0)
		goto fail;
	l->started = true;
	*out = l;
	return 0;
fail:
	ledger_close(l);
	return rc;
}

/* Puts p (its record on file) at the end of the writer's list. Under l->mu. */
static void enqueue_locked(struct ledger *l, struct pending *p)
{
	p->seq = ++l->added_seq;
	p->next = NULL;
	if (l->tail)
		l->tail->next = p;
	else
		l->head = p;
	l->tail = p;
	l->st.added++;
	if (p == l->head)
		pthread_cond_signal(&l->work);
}

/* rec as one journal line (its NUL made the '\n'); NULL without memory. Free it. */
static char *record_line(json_t *rec, size_t *len)
{
	char *line = json_dumps(rec, JSON_COMPACT);

	if (line) {
		*len = strlen(line);
		line[(*len)++] = '\n'; /* one write, one record */
	}
	return line;
}

/* Appends one line to the active segment, all or nothing. Under l->mu. */
static int append_locked(struct ledger *l, const char *line, size_t len)
{
	int seg = l->active, rc = 0;
	size_t off = 0;

	while (off < len) {
		ssize_t w = pwrite(l->fd[seg], line + off, len - off, l->size[seg] + (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = w < 0 ? -errno : -ENOSPC;
			/* No half record may stay: the next append would follow it. */
			if (ftruncate(l->fd[seg], l->size[seg]) != 0)
				hlog_error("ledger", "cannot cut a failed append from %s: %s",
					   l->path[seg], strerror(errno));
			break;
		}
		off += (size_t)w;
	}
	if (rc == 0)
		l->size[seg] += (off_t)len;
	return rc;
}

int ledger_add(struct ledger *l, const struct inv_record *r)
{
	json_t *j = store_record_json(r);
	struct pending *p = malloc(sizeof(*p));
	size_t len = 0;
	char *line = j ? record_line(j, &len) : NULL; /* outside the lock */
	int rc, seg;

	if (!line || !p) {
		free(line);
		free(p);
		json_decref(j);
		return -ENOMEM;
	}
	pthread_mutex_lock(&l->mu);
	seg = l->active;
	rc = append_locked(l, line, len);
	if (rc == 0) {
		p->rec = j;
		enqueue_locked(l, p);
	}
	pthread_mutex_unlock(&l->mu);
	free(line);
	if (rc) {
		hlog_error("ledger", "cannot append to %s: %s", l->path[seg], strerror(-rc));
		free(p);
		json_decref(j);
	}
	return rc;
}

int ledger_hold(struct ledger *l, const struct inv_record *r)
{
	json_t *j = store_record_json(r);
	struct pending *p = malloc(sizeof(*p));
	int rc = 0;

	if (!j || !p) {
		free(p);
		json_decref(j);
		return -ENOMEM;
	}
	p->rec = j;
	p->next = NULL;
	pthread_mutex_lock(&l->mu);
	if (l->held >= LEDGER_HOLD_MAX) {
		rc = -ENOSPC;
	} else {
		if (!l->held)
			hlog_error("ledger", "the journal and the store refuse writes: invocation "
					     "records are held in memory and written once they take them "
					     "again; new invocations are refused until then");
		if (l->held_tail)
			l->held_tail->next = p;
		else
			l->held_head = p;
		l->held_tail = p;
		__atomic_add_fetch(&l->held, 1, __ATOMIC_RELAXED);
		pthread_cond_signal(&l->work);
		p = NULL;
	}
	pthread_mutex_unlock(&l->mu);
	if (p) {
		json_decref(p->rec);
		free(p);
	}
	return rc;
}

size_t ledger_held(struct ledger *l)
{
	/* Asked before every invocation: no lock (the journal's appends take it). */
	return __atomic_load_n(&l->held, __ATOMIC_RELAXED);
}

/* Puts held records on file, oldest first, until the first refusal. Under l->mu. */
static void write_held_locked(struct ledger *l)
{
	size_t done = 0;

	while (l->held_head) {
		struct pending *p = l->held_head;
		size_t len = 0;
		char *line = record_line(p->rec, &len);
		int rc = line ? append_locked(l, line, len) : -ENOMEM;

		free(line);
		if (rc)
			break;
		l->held_head = p->next;
		if (!l->held_head)
			l->held_tail = NULL;
		__atomic_sub_fetch(&l->held, 1, __ATOMIC_RELAXED);
		done++;
		enqueue_locked(l, p);
	}
	if (done && !l->held)
		hlog_info("ledger", "the journal takes writes again: the %zu invocation records held "
				    "in memory are on file", done);
}

int ledger_sync(struct ledger *l, int timeout_ms)
{
	struct timespec ts = deadline_in((int64_t)timeout_ms * 1000000);
	uint64_t want;
	int rc = 0;

	pthread_mutex_lock(&l->mu);
	want = l->added_seq;
	if (l->committed_seq < want) {
		l->flush_now = true;
		pthread_cond_signal(&l->work);
	}
	while (l->committed_seq < want && rc == 0)
		if (pthread_cond_timedwait(&l->done, &l->mu, &ts) == ETIMEDOUT)
			rc = -ETIMEDOUT;
	pthread_mutex_unlock(&l->mu);
	return rc;
}

void ledger_close(struct ledger *l)
{
	if (!l)
		return;
	if (l->started) {
		pthread_mutex_lock(&l->mu);
		__atomic_store_n(&l->stopping, true, __ATOMIC_RELEASE);
		pthread_cond_signal(&l->work);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->thread, NULL);
	}
	if (l->held_head && l->fd[0] >= 0) {
		/* Last try; what still does not fit goes to the log, whole, rather than nowhere. */
		pthread_mutex_lock(&l->mu);
		write_held_locked(l);
		pthread_mutex_unlock(&l->mu);
		for (struct pending *p = l->held_head; p; p = p->next) {
			char *line = json_dumps(p->rec, JSON_COMPACT);

			hlog_error("ledger", "unrecorded invocation record (the disk is full; add it "
					     "to the journal by hand to bill it): %s", line ? line : "?");
			free(line);
		}
	}
	for (struct pending *p = l->held_head, *nx; p; p = nx) {
		nx = p->next;
		json_decref(p->rec);
		free(p);
	}
	for (struct pending *p = l->head, *nx; p; p = nx) {
		nx = p->next; /* left by a failed stop: still on file */
		json_decref(p->rec);
		free(p);
	}
	for (int i = 0; i < 2; i++)
		if (l->fd[i] >= 0)
			close(l->fd[i]);
	pthread_cond_destroy(&l->work);
	pthread_cond_destroy(&l->done);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

void ledger_stats(struct ledger *l, struct ledger_stats *st)
{
	pthread_mutex_lock(&l->mu);
	*st = l->st;
	pthread_mutex_unlock(&l->mu);
}
