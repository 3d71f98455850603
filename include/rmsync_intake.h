/* mod_rmsync: the intake of Graph change notifications, run by Apache worker processes (the
 * rmsync-webhook handler; core/rmsync_intake.c). Parse a notification POST body, check every
 * item's clientState in constant time against its subscription's secret, and store the good items
 * in ONE short statement (INSERT ... ON CONFLICT DO NOTHING on the pending-coalescing index; the
 * runner is woken by rmsync_notif_wake() after the commit, not by the table's per-row trigger);
 * subscription secrets are cached per process for a few seconds, so a POST is usually one round
 * trip. No Graph call, no sync work: the runner's "queue" step (rmsync_queue.h) processes the rows.
 * No httpd headers here: unit tests and tools link this through librmsync_core.a.
 */
#ifndef RMSYNC_INTAKE_H
#define RMSYNC_INTAKE_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_errno.h>
#include <apr_time.h>
#include "rmsync_db.h"

/* Status codes of the intake (APR user error space, offsets in our message-id range 006xx). */
#define RMSYNC_QUEUE_EJSON     (APR_OS_START_USERERR + 600) /* not valid JSON, or bad bytes:
                                                            * invalid UTF-8, NUL, \u0000, lone
                                                            * surrogate escapes */
#define RMSYNC_QUEUE_ENOVALUE  (APR_OS_START_USERERR + 601) /* no `value` array */
#define RMSYNC_QUEUE_ETOOMANY  (APR_OS_START_USERERR + 602) /* more items than we accept */
#define RMSYNC_QUEUE_EDB       (APR_OS_START_USERERR + 603) /* database unreachable / failed */
#define RMSYNC_QUEUE_EBUSY     (APR_OS_START_USERERR + 604) /* lookups saturated: retry later */

/* Limits on what one POST may carry (Graph batches up to ~100 per POST in practice). */
#define RMSYNC_QUEUE_MAX_ITEMS   1000
#define RMSYNC_QUEUE_MAX_ID_LEN   512  /* subscription ids, event ids, resource paths */
#define RMSYNC_QUEUE_MAX_STATE_LEN 255 /* clientState, Graph's documented maximum */

typedef enum {
    RMSYNC_NOTIF_CHANGE = 0,   /* created / updated / deleted of an event */
    RMSYNC_NOTIF_LIFECYCLE     /* reauthorizationRequired / subscriptionRemoved / missed */
} rmsync_notif_kind_e;

/* One well-formed item of a notification POST. Strings live in the parse pool. */
typedef struct rmsync_notif_item_t {
    rmsync_notif_kind_e kind;
    const char *subscription_id;
    const char *client_state;     /* NULL when the item carried none (it is then dropped) */
    const char *change_type;      /* created|updated|deleted (kind CHANGE), else NULL */
    const char *event_id;         /* resourceData.id, or the last segment of resource */
    const char *resource;         /* as sent, may be NULL for lifecycle items */
    const char *lifecycle_event;  /* kind LIFECYCLE, else NULL */
    const char *tenant_id;        /* may be NULL */
} rmsync_notif_item_t;

/* Result of parsing one body: well-formed items plus the count of items that were not. */
typedef struct rmsync_notif_batch_t {
    apr_array_header_t *items;    /* of rmsync_notif_item_t */
    int invalid;                  /* items dropped because a field was missing or mistyped */
} rmsync_notif_batch_t;

/* Parse a POST body of len bytes (need not be NUL-terminated). Returns APR_SUCCESS,
 * RMSYNC_QUEUE_EJSON, RMSYNC_QUEUE_ENOVALUE or RMSYNC_QUEUE_ETOOMANY. *why gets a short reason
 * (safe to send to the client: it never echoes input). lifecycle_endpoint: the item must carry
 * lifecycleEvent (a change item sent to the lifecycle URL counts as invalid). On the notification
 * endpoint, items with lifecycleEvent are accepted as lifecycle items (Graph allows one URL). */
apr_status_t rmsync_notif_parse(rmsync_notif_batch_t **pbatch, apr_pool_t *p,
                                const char *body, apr_size_t len, int lifecycle_endpoint,
                                const char **why);

/* What happened to the items of one POST. */
typedef struct rmsync_notif_result_t {
    int received;                 /* items in the body */
    int stored;                   /* new pending rows */
    int coalesced;                /* good items already pending (ON CONFLICT DO NOTHING) */
    int unknown_subscription;     /* dropped: subscriptionId not ours */
    int bad_client_state;         /* dropped: clientState missing or wrong */
    int invalid;                  /* dropped: malformed item */
    int lookups;                  /* subscription lookups this request ran (0 or 1) */
} rmsync_notif_result_t;

/* Per-process cache subscriptionId -> clientState for the intake (a mutex guards it: worker
 * threads share it). An entry younger than ttl answers without a database round trip; a
 * clientState that does not match the cached one is re-checked in the database before the item
 * is refused. Bounded (dropped whole beyond a few thousand entries); lives in p. */
typedef struct rmsync_notif_cache_t rmsync_notif_cache_t;
apr_status_t rmsync_notif_cache_create(rmsync_notif_cache_t **pcache, apr_pool_t *p,
                                       apr_interval_time_t ttl);
/* Forged traffic costs (almost) nothing: subscription ids the database did not know are
 * remembered for neg_ttl (bounded like the positive entries), so a repeat costs no query; at
 * most max_lookups subscription lookups of this process run at once, a request waits up to
 * lookup_wait for its turn, then its items are checked against cached secrets up to a few
 * minutes old when they match (the storing statement re-checks that the subscription still
 * exists), else rmsync_notif_store gives RMSYNC_QUEUE_EBUSY (the caller answers 503).
 * Defaults without this call: no negative entries, no bound. */
/* Load every subscription (when there are at most 20000) into the cache: for `valid` after it
 * an id the snapshot did not hold counts as unknown without a query. A subscription created
 * since is judged unknown until the next call sees that the table changed: each call first
 * runs one aggregate and reloads the rows only on a change or when the last full read is
 * `valid` old, so it can be called often (the webhook's background thread does, every 250 ms
 * while notifications arrive). */
/* A request whose subscription ids an older snapshot lacks calls fn(baton) to ask for a
 * refresh now and waits up to 300 ms for a snapshot confirmed after it arrived (so a
 * subscription created a moment ago is found; if none comes in time the older snapshot
 * decides); without a refresher an older snapshot is not trusted (the database is asked).
 * A request with ids the cache cannot answer while there is no valid snapshot at all (a
 * process just started, or quiet for a while) asks for one the same way and waits up to 500 ms
 * before it looks the ids up itself: a flood of forged ids reaching a cold process costs one
 * snapshot, not one lookup (and one connection of RMSyncDatabasePool) per request.
 * rmsync_notif_cache_wants_fresh() is 1 while such a request waits. */
void rmsync_notif_cache_set_refresher(rmsync_notif_cache_t *cache, void (*fn)(void *),
                                      void *baton);
int rmsync_notif_cache_wants_fresh(rmsync_notif_cache_t *cache);
apr_status_t rmsync_notif_cache_refresh(rmsync_notif_cache_t *cache, rmsync_db_t *db,
                                        apr_pool_t *p, apr_interval_time_t valid);
void rmsync_notif_cache_limits(rmsync_notif_cache_t *cache, apr_interval_time_t neg_ttl,
                               int max_lookups, apr_interval_time_t lookup_wait);

/* Group intake ("group commit"): the POSTs that a process's worker threads are handling at
 * the same time share ONE statement and commit. A request arriving while none of its process's
 * statements is running stores alone at once (no added latency at low load); the ones arriving
 * while a statement runs queue up and the next of them stores them all together (at most
 * max_items items, whole requests), each answered only after the commit that holds its items.
 * Items with a deletion are stored alone (the deletion must meet the pending item it upgrades).
 * If a shared statement fails for a reason other than the database being down, every request
 * of it is retried alone, so one bad item cannot fail the others. Lives in p. */
typedef struct rmsync_notif_group_t rmsync_notif_group_t;
apr_status_t rmsync_notif_group_create(rmsync_notif_group_t **pgroup, apr_pool_t *p,
                                       int max_items);

/* A connected handle for the intake (and its return): the caller's pool policy. */
typedef apr_status_t rmsync_notif_db_get_fn(rmsync_db_t **pdb, void *baton);
typedef void rmsync_notif_db_release_fn(rmsync_db_t *db, void *baton);

/* Check every item's clientState in constant time against its subscription (cache, else one
 * query for the batch's other subscriptions) and store the good ones in ONE statement (a
 * short autocommit transaction) that also re-checks that each subscription still exists: an
 * item of a subscription deleted while cached is counted unknown_subscription and nothing is
 * stored for it. One item without a deletion stored alone is one plain INSERT. Through group
 * (NULL: always alone) the statement is shared with the process's concurrent requests (see
 * above). Handles come from get/release, only when needed (none for a request whose
 * subscriptions are cached and whose group statement another request runs).
 * APR_SUCCESS means every counted item is durably stored or deliberately dropped;
 * RMSYNC_QUEUE_EDB means nothing can be assumed stored (the caller answers 503 so Graph
 * retries); RMSYNC_QUEUE_EBUSY: nothing stored, this process's lookups are saturated (see
 * rmsync_notif_cache_limits). Drops are counted, never stored. cache may be NULL (always ask
 * the database).
 * *pstatements is 1 when this request ran a statement that stored items (its own or its
 * group's), else 0 (for counting statements). */
apr_status_t rmsync_notif_store(rmsync_notif_result_t *result, rmsync_notif_group_t *group,
                                apr_pool_t *p, const rmsync_notif_batch_t *batch,
                                rmsync_notif_cache_t *cache, rmsync_notif_db_get_fn *get,
                                rmsync_notif_db_release_fn *release, void *baton,
                                int *pstatements);

/* Wake the runner for rows rmsync_notif_store() stored (result.stored > 0): its statements keep
 * the table's per-row NOTIFY trigger quiet, so the caller sends this NOTIFY after the commit
 * (one may stand for the rows of many POSTs: the runner scans the whole queue when woken). */
apr_status_t rmsync_notif_wake(rmsync_db_t *db, apr_pool_t *p);

/* Register the intake's prepared statements (once per process, before the first store). */
apr_status_t rmsync_queue_intake_init(void);

#endif /* RMSYNC_INTAKE_H */
