/* mod_rmsync, run by the sync runner: the per-representative job step "queue" (rmsync_queue.h)
 * that processes the notifications the intake (rmsync_intake.c, worker processes) stored. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <apr_network_io.h>
#include <apr_strings.h>
#include <apr_hash.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"
#include "rmsync_queue.h"
#include "rmsync_subs_step.h"
#include "rmsync_engine.h"
#include "rmsync_apply.h"
#include "rmsync_synclog.h"

/* Items claimed per round and rounds per job (the rest waits for the next job, so one busy
 * mailbox cannot keep its worker forever). */
#define CLAIM_BATCH        50
#define MAX_ROUNDS         20
/* A failed item is retried after 2^attempts s (capped); after MAX_ATTEMPTS it is given up:
 * state 'failed', logged, and a delta pass catches up with the event's state instead. */
#define MAX_ATTEMPTS       8
#define MAX_BACKOFF_S      300

static const rmsync_db_stmt_t queue_stmts[] = {
    /* Rows a dead runner left in 'processing': we hold this representative's job lock, so no
     * live runner works on them. An equal pending twin supersedes it; else it is pending again. */
    { "queue_supersede",
      "UPDATE rmsync.notification n SET state = 'done', done_at = now(), last_error = 'superseded'"
      " WHERE n.representative_id = $1 AND n.state = 'processing'"
      "   AND EXISTS (SELECT 1 FROM rmsync.notification p"
      "                WHERE p.state = 'pending' AND p.subscription_id = n.subscription_id"
      "                  AND p.kind = n.kind AND coalesce(p.event_id, '') = coalesce(n.event_id, '')"
      "                  AND coalesce(p.lifecycle_event, '') = coalesce(n.lifecycle_event, ''))", 1 },
    { "queue_reclaim",
      "UPDATE rmsync.notification SET state = 'pending', claimed_by = NULL, claimed_at = NULL"
      " WHERE representative_id = $1 AND state = 'processing'", 1 },
    /* the peeked items ($3: ids joined by ',') that are still pending, in this round's
     * transaction (the batch) or on their own (one by one). The ids are known: found by the
     * primary key only (|| '' keeps the planner off the partial indexes): a generic plan made
     * while the table was small read every open row of the representative through
     * notification_rep_open_idx instead, a cost that grows with the backlog it is draining
     * (EXPLAIN ANALYZE, 2,000 open rows: 1.98 ms; by the key 0.15 ms) */
    { "queue_claim_ids",
      "UPDATE rmsync.notification n"
      "   SET state = 'processing', attempts = n.attempts + 1, claimed_by = $2, claimed_at = now()"
      " WHERE n.id = ANY (ARRAY (SELECT id FROM rmsync.notification"
      "                 WHERE id = ANY (string_to_array($3, ',')::bigint[])"
      "                   AND (representative_id || '') = $1 AND (state || '') = 'pending'"
      "                 FOR UPDATE SKIP LOCKED))"
      " RETURNING n.id, n.kind, n.change_type, n.lifecycle_event, n.event_id,"
      "           n.subscription_id, n.attempts", 3 },
    /* a round's items, read without a write (the Graph GETs come before the claim); also
     * the idle job's check: 'processing' rows of a dead runner come first (reclaimed) */
    { "queue_peek",
      "SELECT id, kind, change_type, event_id, state FROM rmsync.notification"
      " WHERE representative_id = $1"
      "   AND (state = 'processing' OR (state = 'pending'"
      "        AND (next_attempt_at IS NULL OR next_attempt_at <= now())))"
      " ORDER BY state = 'pending', id LIMIT $2::int", 2 },
    /* the batch's applied items closed with one statement ($2: their notes joined by '\n',
     * '' for none) */
    { "queue_done_many",
      "UPDATE rmsync.notification n SET state = 'done', done_at = now(),"
      "       last_error = nullif((string_to_array($2, E'\\n'))"
      "                    [array_position(string_to_array($1, ',')::bigint[], n.id)], '')"
      " WHERE n.id = ANY (string_to_array($1, ',')::bigint[])", 2 },
    { "queue_done",
      "UPDATE rmsync.notification SET state = 'done', done_at = now(), last_error = $2"
      " WHERE id = $1::bigint", 2 },
    /* Back to pending with a back-off, unless an equal item arrived meanwhile (then that one
     * carries the work and this one is closed). */
    { "queue_retry",
      "UPDATE rmsync.notification n"
      "   SET state = CASE WHEN EXISTS (SELECT 1 FROM rmsync.notification p"
      "                    WHERE p.state = 'pending' AND p.subscription_id = n.subscription_id"
      "                      AND p.kind = n.kind AND coalesce(p.event_id, '') = coalesce(n.event_id, '')"
      "                      AND coalesce(p.lifecycle_event, '') = coalesce(n.lifecycle_event, ''))"
      "                    THEN 'done' ELSE 'pending' END,"
      "       done_at = NULL, claimed_by = NULL, claimed_at = NULL, last_error = $2,"
      "       next_attempt_at = now() + make_interval(secs => $3::int)"
      " WHERE id = $1::bigint", 3 },
    { "queue_fail",
      "UPDATE rmsync.notification SET state = 'failed', done_at = now(), last_error = $2"
      " WHERE id = $1::bigint", 2 },
    /* Representatives that no longer sync: their items are closed, not processed. */
    { "queue_drop_rep",
      "UPDATE rmsync.notification SET state = 'done', done_at = now(),"
      "       last_error = 'representative does not sync'"
      " WHERE representative_id = $1 AND state IN ('pending', 'processing')", 1 },
    /* Closed items are kept a while for the admin (and post-mortems), then dropped: by the
     * schema's function, an index range scan of this representative's closed items (the
     * statement it replaces scanned the whole table: 2 days of items, every purge) */
    { "queue_purge", "SELECT rmsync.queue_purge($1)", 1 },
};

const char rmsync_queue_pending_sql[] =
    "SELECT DISTINCT representative_id FROM rmsync.notification"
    " WHERE representative_id IS NOT NULL"
    "   AND ((state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now()))"
    "        OR (state = 'processing' AND claimed_at < now() - interval '30 seconds'))";

static const char *owner_id(apr_pool_t *p)
{
    char host[APRMAXHOSTLEN + 1];

    if (apr_gethostname(host, sizeof(host), p) != APR_SUCCESS) {
        apr_cpystrn(host, "localhost", sizeof(host));
    }
    return apr_psprintf(p, "%s:%ld", host, (long)getpid());
}

typedef struct {
    const char *id, *kind, *change_type, *lifecycle_event, *event_id, *subscription_id;
    int attempts;
    apr_int64_t seq;
} claimed_t;

static int by_seq(const void *a, const void *b)
{
    const claimed_t *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static apr_status_t close_item(rmsync_rep_ctx_t *ctx, const claimed_t *c, apr_status_t rv,
                               const char *note)
{
    const char *why;
    int wait;

    if (rv == APR_SUCCESS) {
        return rmsync_db_exec(ctx->db, ctx->pool, "queue_done", RMSYNC_DB_PARAMS(c->id, note), NULL);
    }
    if (rv == RMSYNC_APPLY_EPERMANENT) {
        /* Graph's answer is final for this item: failed at once, with Graph's reason */
        why = apr_pstrcat(ctx->pool, "refused by Graph: ", note ? note : "-", NULL);
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_ERR, ctx->rep_id, 0, c->event_id,
                       "notification", NULL, RMSYNC_LOGNO(00632) "notification %s (%s) for "
                       "event %s of representative %s %s; not retried", c->kind,
                       c->change_type ? c->change_type : "-", c->event_id ? c->event_id : "-",
                       ctx->rep_id, why);
        return rmsync_db_exec(ctx->db, ctx->pool, "queue_fail", RMSYNC_DB_PARAMS(c->id, why), NULL);
    }
    why = rmsync_graph_strerror(ctx->pool, rv);
    if (c->attempts >= MAX_ATTEMPTS) {
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_ERR, ctx->rep_id, 0, c->event_id,
                       "notification", NULL, RMSYNC_LOGNO(00631) "notification %s for event %s "
                       "given up after %d attempts (%s); a delta pass picks up its state",
                       c->kind, c->event_id ? c->event_id : "-", c->attempts, why);
        rmsync_engine_want_delta(ctx);
        return rmsync_db_exec(ctx->db, ctx->pool, "queue_fail", RMSYNC_DB_PARAMS(c->id, why), NULL);
    }
    wait = 1 << (c->attempts < 9 ? c->attempts : 9);
    if (wait > MAX_BACKOFF_S) {
        wait = MAX_BACKOFF_S;
    }
    rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_WARNING, ctx->rep_id, 0, c->event_id,
                   "notification", NULL, RMSYNC_LOGNO(00630) "notification %s for event %s failed "
                   "(attempt %d of %d: %s); retried in %d s", c->kind,
                   c->event_id ? c->event_id : "-", c->attempts, MAX_ATTEMPTS, why, wait);
    return rmsync_db_exec(ctx->db, ctx->pool, "queue_retry",
                          RMSYNC_DB_PARAMS(c->id, why, apr_itoa(ctx->pool, wait)), NULL);
}

#define PURGE_EVERY 12

/* This job's turn to purge: one cycle in PURGE_EVERY, a different one per representative so
 * the purges of many mailboxes do not come in the same cycle. */
static int purge_turn(const rmsync_rep_ctx_t *ctx)
{
    apr_int64_t cycle = ctx->settings->cycle_s > 0 ? ctx->settings->cycle_s : 300;
    apr_uint32_t h = 5381;
    const char *c;

    for (c = ctx->rep_id; c && *c; ++c) {
        h = h * 33u + (unsigned char)*c;
    }
    return (apr_uint32_t)((apr_time_sec(apr_time_now()) / cycle + h) % PURGE_EVERY) == 0;
}

/* One item on its own (claimed by itself; its apply and its close commit separately): the
 * lifecycle and "deleted" items (their own transactions: Graph calls, the breaker), and a
 * batch's items again when the batch's transaction failed. DB down: returned. */
static apr_status_t one_item(rmsync_rep_ctx_t *ctx, const claimed_t *c)
{
    rmsync_apply_result_e res = RMSYNC_APPLY_IGNORED;
    apr_status_t irv;
    const char *note = NULL;

    if (c->kind && !strcmp(c->kind, "lifecycle") && c->lifecycle_event) {
        irv = rmsync_subs_lifecycle(ctx, c->lifecycle_event, c->subscription_id);
    }
    else if (c->event_id && c->change_type) {
        irv = rmsync_apply_notification(ctx, c->event_id, c->change_type, &res, &note);
        /* last_error stays NULL for the normal outcomes */
        if (res == RMSYNC_APPLY_RECHECK || res == RMSYNC_APPLY_SKIPPED) {
            note = rmsync_apply_result_name(res);
        }
    }
    else {
        irv = APR_SUCCESS;
        note = "malformed item";
    }
    if (irv != APR_SUCCESS && RMSYNC_DB_IS_DOWN(irv)) {
        return irv;   /* reclaimed by the next job once the DB is back */
    }
    return close_item(ctx, c, irv, note);
}

static claimed_t *claimed_rows(apr_pool_t *p, const rmsync_db_result_t *r)
{
    claimed_t *items = apr_pcalloc(p, sizeof(*items) * (apr_size_t)(r->nrows ? r->nrows : 1));
    int i;

    for (i = 0; i < r->nrows; i++) {
        const char *a = rmsync_db_get(r, i, "attempts");
        items[i].id = rmsync_db_get(r, i, "id");
        items[i].seq = apr_atoi64(items[i].id);
        items[i].kind = rmsync_db_get(r, i, "kind");
        items[i].change_type = rmsync_db_get(r, i, "change_type");
        items[i].lifecycle_event = rmsync_db_get(r, i, "lifecycle_event");
        items[i].event_id = rmsync_db_get(r, i, "event_id");
        items[i].subscription_id = rmsync_db_get(r, i, "subscription_id");
        items[i].attempts = a ? atoi(a) : 1;
    }
    /* Arrival order, so a 'deleted' after an 'updated' of the same event ends deleted. */
    qsort(items, (apr_size_t)r->nrows, sizeof(*items), by_seq);
    return items;
}

/* The items ids (joined by ',') one by one, each claimed, applied and closed on its own. */
static apr_status_t one_by_one(rmsync_rep_ctx_t *ctx, apr_pool_t *p, const char *owner,
                               const char *ids)
{
    rmsync_db_result_t *r;
    claimed_t *items;
    apr_status_t rv;
    int i;

    rv = rmsync_db_exec(ctx->db, p, "queue_claim_ids", RMSYNC_DB_PARAMS(ctx->rep_id, owner, ids),
                        &r);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    items = claimed_rows(p, r);
    for (i = 0; i < r->nrows && rv == APR_SUCCESS; i++) {
        if (ctx->stop && *ctx->stop) {
            break;   /* the rest stays 'processing' and is reclaimed by the next job */
        }
        rv = one_item(ctx, &items[i]);
    }
    return rv;
}

/* A change item the batch takes: "created"/"updated" of an event (a GET, then the apply). */
static int batchable(const char *kind, const char *change_type, const char *event_id)
{
    return kind && !strcmp(kind, "change") && event_id && *event_id && change_type
           && (!strcmp(change_type, "created") || !strcmp(change_type, "updated"));
}

/* The batch: the events of the peeked change items ids (joined by ',') are fetched first (one GET
 * per distinct event), then ONE transaction claims the items, applies each in a savepoint and
 * closes it: an item is closed only in the commit that applied it, and a refused item is
 * rolled back to its savepoint and skipped (logged) without touching the others. Items of
 * unlinked events are closed after the commit, once their hooks ran; a deletion recorded by the
 * batch is judged by the breaker after it. Returns APR_EAGAIN when the transaction failed (the
 * caller goes one by one; nothing of the batch was kept), DB down as it is. */
static apr_status_t batch(rmsync_rep_ctx_t *ctx, apr_pool_t *p, const char *owner,
                          const char *ids, apr_hash_t *peeked)
{
    apr_array_header_t *done_ids = apr_array_make(p, 16, sizeof(const char *));
    apr_array_header_t *notes = apr_array_make(p, 16, sizeof(const char *));
    apr_array_header_t *later = apr_array_make(p, 4, sizeof(claimed_t *));
    apr_hash_t *fetched = apr_hash_make(p);
    apr_array_header_t *evs = apr_array_make(p, 16, sizeof(const char *));
    int applied = ctx->applied, errors = ctx->errors, flush = 0, i;
    apr_uint32_t lag_ms = ctx->lag_ms;
    rmsync_db_result_t *r;
    claimed_t *items;
    apr_status_t rv;
    char *ids_copy = apr_pstrdup(p, ids), *last, *tok;

    /* the GETs, outside any transaction: the round's distinct events, several in one $batch
     * round trip (a backlog of a mailbox's changes is drained with a round trip per 20 of
     * them instead of one each) */
    for (tok = apr_strtok(ids_copy, ",", &last); tok; tok = apr_strtok(NULL, ",", &last)) {
        const char *ev = apr_hash_get(peeked, tok, APR_HASH_KEY_STRING);
        if (ev && !apr_hash_get(fetched, ev, APR_HASH_KEY_STRING)) {
            apr_hash_set(fetched, ev, APR_HASH_KEY_STRING, ev);
            APR_ARRAY_PUSH(evs, const char *) = ev;
        }
    }
    if (ctx->stop && *ctx->stop) {
        return APR_SUCCESS;             /* nothing claimed yet: the next job */
    }
    if (evs->nelts > 0) {
        rmsync_apply_fetched_t *fs = apr_pcalloc(p, sizeof(*fs) * (apr_size_t)evs->nelts);
        rmsync_apply_fetch_many(ctx, p, (const char *const *)(void *)evs->elts, evs->nelts,
                                fs);
        for (i = 0; i < evs->nelts; i++) {
            apr_hash_set(fetched, RMSYNC_ARRAY_IDX(evs, i, const char *), APR_HASH_KEY_STRING,
                         &fs[i]);
        }
    }

    if ((rv = rmsync_db_begin_as(ctx->db, ctx->settings->master_user)) != APR_SUCCESS) {
        return RMSYNC_DB_IS_DOWN(rv) ? rv : APR_EAGAIN;
    }
    ctx->in_tx = 1;
    rv = rmsync_db_exec(ctx->db, p, "queue_claim_ids", RMSYNC_DB_PARAMS(ctx->rep_id, owner, ids),
                        &r);
    items = rv == APR_SUCCESS ? claimed_rows(p, r) : NULL;
    for (i = 0; rv == APR_SUCCESS && i < r->nrows; i++) {
        claimed_t *c = &items[i];
        rmsync_apply_fetched_t *f = apr_hash_get(fetched, c->event_id, APR_HASH_KEY_STRING);
        rmsync_apply_result_e res = RMSYNC_APPLY_IGNORED;
        const char *note = NULL;
        apr_status_t irv;

        if (!f) {
            rv = APR_EAGAIN;            /* not one of ours (cannot happen): one by one */
            break;
        }
        irv = rmsync_apply_fetched(ctx, f, &res, &note);
        if (irv >= RMSYNC_DB_EDOWN && irv <= RMSYNC_DB_ENOSTMT) {
            rv = irv;                   /* the transaction is lost: all of it again */
            break;
        }
        if (irv == APR_SUCCESS && res == RMSYNC_APPLY_NOT_LINKED) {
            APR_ARRAY_PUSH(later, claimed_t *) = c;     /* hooks after the commit */
            continue;
        }
        if (irv == APR_SUCCESS) {
            flush |= res == RMSYNC_APPLY_PENDING_DELETE;
            if (res == RMSYNC_APPLY_RECHECK || res == RMSYNC_APPLY_SKIPPED) {
                note = rmsync_apply_result_name(res);
            }
            APR_ARRAY_PUSH(done_ids, const char *) = c->id;
            APR_ARRAY_PUSH(notes, const char *) = note ? note : "";
            continue;
        }
        rv = close_item(ctx, c, irv, note);             /* retry or fail, in the batch */
    }
    if (rv == APR_SUCCESS && done_ids->nelts > 0) {
        rv = rmsync_db_exec(ctx->db, p, "queue_done_many",
                            RMSYNC_DB_PARAMS(apr_array_pstrcat(p, done_ids, ','),
                                             apr_array_pstrcat(p, notes, '\n')), NULL);
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_db_commit(ctx->db);
    }
    else {
        rmsync_db_rollback(ctx->db);
    }
    ctx->in_tx = 0;
    if (rv != APR_SUCCESS) {
        /* nothing of it was kept: neither its counters */
        ctx->applied = applied;
        ctx->errors = errors;
        ctx->lag_ms = lag_ms;
        return RMSYNC_DB_IS_DOWN(rv) ? rv : APR_EAGAIN;
    }
    for (i = 0; i < later->nelts && rv == APR_SUCCESS; i++) {
        claimed_t *c = RMSYNC_ARRAY_IDX(later, i, claimed_t *);
        rmsync_apply_fetched_t *f = apr_hash_get(fetched, c->event_id, APR_HASH_KEY_STRING);
        apr_status_t irv = rmsync_engine_unlinked_event(ctx, f->ev);
        if (irv != APR_SUCCESS && RMSYNC_DB_IS_DOWN(irv)) {
            return irv;
        }
        rv = close_item(ctx, c, irv, NULL);
    }
    if (rv == APR_SUCCESS && flush && !ctx->in_round) {
        rv = rmsync_apply_flush_deletions(ctx, NULL);    /* judged now, carried out when due */
    }
    return rv;
}

apr_status_t rmsync_queue_step(rmsync_rep_ctx_t *ctx)
{
    const char *owner = owner_id(ctx->pool);
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;
    int round, i, reclaimed = 0;

    if ((rv = rmsync_db_register(queue_stmts, (int)(sizeof(queue_stmts) / sizeof(queue_stmts[0]))))
        != APR_SUCCESS) {
        return rv;
    }
    if (!ctx->active) {
        return rmsync_db_exec(ctx->db, ctx->pool, "queue_drop_rep",
                              RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
    }
    for (round = 0; round < MAX_ROUNDS && !(ctx->stop && *ctx->stop); round++) {
        apr_array_header_t *b_ids, *o_ids;
        apr_hash_t *peeked;
        apr_pool_t *p;
        int n;

        apr_pool_create(&p, ctx->pool);
        rv = rmsync_db_exec(ctx->db, p, "queue_peek",
                            RMSYNC_DB_PARAMS(ctx->rep_id, apr_itoa(p, CLAIM_BATCH)), &r);
        if (rv != APR_SUCCESS) {
            apr_pool_destroy(p);
            return rv;
        }
        if (r->nrows > 0 && !strcmp(rmsync_db_get(r, 0, "state"), "processing")) {
            /* Rows a dead runner left in 'processing' (they come first): we hold this
             * representative's job lock, so no live runner works on them. An equal pending
             * twin supersedes it; else it is pending again. Then peek again. */
            apr_pool_destroy(p);
            if (reclaimed++
                || (rv = rmsync_db_exec(ctx->db, ctx->pool, "queue_supersede",
                                        RMSYNC_DB_PARAMS(ctx->rep_id), NULL)) != APR_SUCCESS
                || (rv = rmsync_db_exec(ctx->db, ctx->pool, "queue_reclaim",
                                        RMSYNC_DB_PARAMS(ctx->rep_id), NULL)) != APR_SUCCESS) {
                return rv;
            }
            round--;
            continue;
        }
        if (r->nrows == 0) {
            apr_pool_destroy(p);
            if (round == 0) {
                /* nothing queued: the closed items are purged in one job of PURGE_EVERY per
                 * mailbox (about hourly at RMSyncSyncCycle 300), not in every idle job */
                if (purge_turn(ctx)) {
                    rv = rmsync_db_exec(ctx->db, ctx->pool, "queue_purge",
                                        RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
                }
                return rv;
            }
            break;
        }
        n = r->nrows;
        b_ids = apr_array_make(p, n, sizeof(const char *));
        o_ids = apr_array_make(p, n, sizeof(const char *));
        peeked = apr_hash_make(p);
        for (i = 0; i < n; i++) {
            const char *id = rmsync_db_get(r, i, "id"), *ev = rmsync_db_get(r, i, "event_id");
            if (batchable(rmsync_db_get(r, i, "kind"), rmsync_db_get(r, i, "change_type"), ev)) {
                APR_ARRAY_PUSH(b_ids, const char *) = id;
                apr_hash_set(peeked, id, APR_HASH_KEY_STRING, ev);
            }
            else {
                APR_ARRAY_PUSH(o_ids, const char *) = id;
            }
        }
        rv = APR_SUCCESS;
        if (b_ids->nelts > 0) {
            const char *ids = apr_array_pstrcat(p, b_ids, ',');
            rv = batch(ctx, p, owner, ids, peeked);
            if (rv == APR_EAGAIN) {
                /* the batch's transaction failed: its items one by one, each on its own */
                rv = one_by_one(ctx, p, owner, ids);
            }
        }
        if (rv == APR_SUCCESS && o_ids->nelts > 0) {
            rv = one_by_one(ctx, p, owner, apr_array_pstrcat(p, o_ids, ','));
        }
        apr_pool_destroy(p);
        if (rv != APR_SUCCESS || n < CLAIM_BATCH) {
            break;
        }
    }
    if (rv == APR_SUCCESS && purge_turn(ctx)) {
        rv = rmsync_db_exec(ctx->db, ctx->pool, "queue_purge", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
    }
    return rv;
}
