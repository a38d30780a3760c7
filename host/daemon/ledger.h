/*
 * ledger.h - the invocation ledger's journal: records are made durable on
 * this host with one append to a file, and committed to the store in batches
 * by a thread of their own.
 *
 * Why: committing each invocation record to SQLite as it is made (a write
 * transaction: about 20 system calls, and the store's lock) was the largest
 * cost per warm invoke in hearthd. An append survives the same failures as
 * that commit did (the store runs synchronous=NORMAL: a process that is killed
 * loses nothing, a power cut may), so callers get the same guarantee for one
 * write(2), and many records share one transaction.
 *
 * Layout: two segment files, <base>.0 and <base>.1, one line of JSON per
 * record (store_record_json). Appends go to the active segment; the writer
 * takes everything appended so far, makes the other segment active, commits
 * the batch in one transaction, then empties the segment it took. At open,
 * both segments are replayed first. Replay is idempotent: a record whose
 * (request_id, attempt) is already stored is skipped whole (its usage is not
 * counted twice), so a crash between a commit and the emptying costs nothing.
 * A torn last line (the process killed mid-append) is dropped with a log line.
 *
 * Readers of what records feed (usage, logs, deletions) call ledger_sync
 * first, so a caller reads its own writes.
 */
#ifndef HEARTH_LEDGER_H
#define HEARTH_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct ledger;

/*
 * The store side: commit n records in one transaction. rcs[i] gets each
 * record's outcome (-EEXIST: already stored). Returns 0, or -errno when the
 * transaction failed as a whole (then nothing was stored; the batch is tried
 * again later).
 */
typedef int (*ledger_commit_fn)(void *ctx, const struct inv_record *r, size_t n, int *rcs);

/*
 * Opens (creating) the two segments under base and replays what they hold
 * through commit before returning. batch_us: how long the writer waits for
 * more records after the first of a batch (0: commits at once).
 */
int ledger_open(const char *base, ledger_commit_fn commit, void *ctx, unsigned batch_us,
		struct ledger **out);
/* Appends one record. 0 once it is on file; -errno if it could not be written. */
int ledger_add(struct ledger *l, const struct inv_record *r);
/*
 * A record that neither the journal nor the store would take (a full disk):
 * held in memory, put on file by the writer as soon as the journal takes
 * writes again (tried every 200 ms), and at close written to the log whole if
 * it never does. -ENOSPC when LEDGER_HOLD_MAX are held already. While any is
 * held, hearthd refuses new invocations (ledger_held), so at most the calls
 * that were running when the disk filled are held.
 */
#define LEDGER_HOLD_MAX 65536
int ledger_hold(struct ledger *l, const struct inv_record *r);
/* How many records are held in memory. */
size_t ledger_held(struct ledger *l);
/*
 * Waits until every record added before the call is committed (or the store
 * has refused for timeout_ms). 0, or -ETIMEDOUT.
 */
int ledger_sync(struct ledger *l, int timeout_ms);
/* Commits what is pending, stops the writer and closes the files. */
void ledger_close(struct ledger *l);

struct ledger_stats {
	uint64_t added, committed, batches, replayed, dropped;
};
void ledger_stats(struct ledger *l, struct ledger_stats *st);

#endif
