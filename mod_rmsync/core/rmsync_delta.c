/* mod_rmsync, run by the sync runner: the job step "delta": delta passes, initial sync rounds
 * and their reconcile (see rmsync_delta.h). */
#include <string.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <apr_hash.h>
#include <apr_thread_proc.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"
#include "rmsync_engine.h"
#include "rmsync_calendar.h"
#include "rmsync_apply.h"
#include "rmsync_delta.h"
#include "rmsync_errors.h"
#include "rmsync_synclog.h"
#include "rmsync_http.h"

#define US_PER_DAY ((apr_time_t)86400 * APR_USEC_PER_SEC)

static const rmsync_db_stmt_t delta_stmts[] = {
    { "delta_state_ensure",
      "INSERT INTO rmsync.rep_state (representative_id) VALUES ($1) ON CONFLICT DO NOTHING", 1 },
    { "delta_state_load",
      "SELECT delta_link, round_next_link, round_kind, "
      "       (extract(epoch FROM window_start) * 1000000)::bigint AS ws, "
      "       (extract(epoch FROM window_end) * 1000000)::bigint AS we, "
      "       (last_attempt_at IS NULL "
      "        OR last_attempt_at <= now() - make_interval(secs => $2::int - 0.3)) AS due, "
      "       (round_kind IS NOT NULL AND (last_error_at IS NULL "
      "        OR last_error_at <= now() - make_interval(secs => least($2::int, 30)))) AS resume, "
      "       held_by_breaker "
      "  FROM rmsync.rep_state WHERE representative_id = $1", 2 },
    { "delta_attempt",
      "UPDATE rmsync.rep_state SET last_attempt_at = now() WHERE representative_id = $1", 1 },
    { "delta_round_start",
      "UPDATE rmsync.rep_state "
      "   SET round_kind = $2, round_next_link = NULL, round_started_at = now(), "
      "       delta_link = CASE WHEN $2 = 'initial' THEN NULL ELSE delta_link END, "
      "       window_start = CASE WHEN $2 = 'initial' "
      "           THEN 'epoch'::timestamptz + $3::bigint * interval '1 microsecond' "
      "           ELSE window_start END, "
      "       window_end = CASE WHEN $2 = 'initial' "
      "           THEN 'epoch'::timestamptz + $4::bigint * interval '1 microsecond' "
      "           ELSE window_end END, "
      "       initial_sync_requested_at = CASE WHEN $2 = 'initial' AND $5 = 'request' "
      "           THEN now() ELSE initial_sync_requested_at END, "
      "       last_attempt_at = CASE WHEN $6 THEN now() ELSE last_attempt_at END, "
      "       updated_at = now() "
      " WHERE representative_id = $1", 6 },
    { "delta_cursor",
      "UPDATE rmsync.rep_state SET round_next_link = $2, updated_at = now() "
      " WHERE representative_id = $1", 2 },
    { "delta_round_link",
      "UPDATE rmsync.rep_state SET delta_link = $2, round_next_link = NULL, updated_at = now() "
      " WHERE representative_id = $1", 2 },
    { "delta_round_finish",
      "UPDATE rmsync.rep_state SET round_kind = NULL, round_next_link = NULL, "
      "       last_success_at = now(), last_error = NULL, last_error_at = NULL, "
      "       updated_at = now() "
      " WHERE representative_id = $1", 1 },
    /* a delta round whose last page has nothing to write (an idle mailbox): its deltaLink and
     * the end of the round in one statement (no transaction around two) */
    { "delta_round_done",
      "UPDATE rmsync.rep_state SET delta_link = $2, round_kind = NULL, round_next_link = NULL, "
      "       last_success_at = now(), last_error = NULL, last_error_at = NULL, "
      "       updated_at = now() "
      " WHERE representative_id = $1", 2 },
    { "delta_round_abandon",
      "UPDATE rmsync.rep_state SET round_kind = NULL, round_next_link = NULL, updated_at = now() "
      " WHERE representative_id = $1", 1 },
    /* The id lists are unnested once, then looked up by key: "event_id = ANY
     * (string_to_array($2, ...))" splits the list again for every row a generic plan reads
     * (1.6 ms instead of 0.2 per page once the table had statistics). */
    { "delta_links_in",
      "SELECT l.event_id FROM unnest(string_to_array($2, E'\\n')) AS u(id) "
      "  JOIN rmsync.event_link l ON l.representative_id = $1 AND l.event_id = u.id", 2 },
    /* all of a representative's linked event ids, for a pass (bounded: beyond it, per page) */
    { "delta_link_ids",
      "SELECT event_id FROM rmsync.event_link WHERE representative_id = $1 LIMIT $2::int", 2 },
    { "delta_seen",
      "UPDATE rmsync.event_link l SET seen_at = now() "
      "  FROM unnest(string_to_array($2, E'\\n')) AS u(id) "
      " WHERE l.representative_id = $1 AND l.event_id = u.id", 2 },
    { "delta_unseen",
      "SELECT l.event_id FROM rmsync.event_link l "
      "  JOIN rmsync.rep_state s ON s.representative_id = l.representative_id "
      " WHERE l.representative_id = $1 AND l.gone_at IS NULL "
      "   AND (l.seen_at IS NULL OR s.round_started_at IS NULL "
      "        OR l.seen_at < s.round_started_at) "
      " ORDER BY l.activity_no", 1 },
    { "delta_fresh_links",
      "SELECT event_id FROM rmsync.event_link WHERE representative_id = $1 "
      "   AND applied_hash IS NULL AND gone_at IS NULL ORDER BY activity_no LIMIT 200", 1 },
    /* a request that cannot complete (the mailbox does not exist, access denied) ends as
     * failed with its reason instead of starting again every cycle */
    { "delta_initial_requests_failed",
      "UPDATE rmsync.request SET state = 'failed', done_at = now(), result = $2 "
      " WHERE representative_id = $1 AND kind = 'initial_sync' AND state = 'processing'", 2 },
    { "delta_initial_requests_done",
      "UPDATE rmsync.request SET state = 'done', done_at = now(), result = $2 "
      " WHERE representative_id = $1 AND kind = 'initial_sync' AND state = 'processing'", 2 },
};

apr_status_t rmsync_delta_register(void)
{
    return rmsync_db_register(delta_stmts, (int)(sizeof(delta_stmts) / sizeof(delta_stmts[0])));
}

static apr_status_t q(rmsync_rep_ctx_t *ctx, apr_pool_t *p, const char *name,
                      const char *const *params, rmsync_db_result_t **pres)
{
    return rmsync_db_exec(ctx->db, p ? p : ctx->pool, name, params, pres);
}

static const char *us(apr_pool_t *p, apr_time_t t)
{
    return apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)t);
}

static int plain_id(const char *s)
{
    for (; s && *s; ++s) {
        if ((unsigned char)*s < 0x20) return 0;
    }
    return s != NULL;
}

/* ---- one page -------------------------------------------------------------------------------- */

typedef struct page_item_t {
    const rmsync_event_t *ev;     /* state to apply (NULL: gone) */
    const char *event_id;
    const char *request_id;
    int linked;
    int gone;                     /* confirmed deleted (404) */
} page_item_t;

/* Which of a page's ids are linked: from the pass's set of the representative's linked event
 * ids (read once per pass, again only when this job created a link meanwhile: links of a
 * representative are made only by the job that holds it), or, for a representative with more
 * links than LINK_IDS_MAX, with a query per page. A link removed meanwhile (admin Unlink) is
 * found missing when the page reads and locks its links, as before. */
#define LINK_IDS_MAX 20000

/* Drop the set (its own sub-pool of the job pool: a pass that re-reads it often keeps one). */
static void forget_link_ids(rmsync_rep_ctx_t *ctx)
{
    if (ctx->link_ids) {
        apr_pool_destroy(apr_hash_pool_get(ctx->link_ids));
        ctx->link_ids = NULL;
    }
}

static apr_status_t linked_ids(rmsync_rep_ctx_t *ctx, apr_pool_t *pp,
                               const apr_array_header_t *lookup, apr_hash_t *linked)
{
    rmsync_db_result_t *res;
    apr_status_t rv;
    int i;

    if (!ctx->link_ids || ctx->link_ids_at != ctx->links_made) {
        forget_link_ids(ctx);
        rv = q(ctx, NULL, "delta_link_ids",
               RMSYNC_DB_PARAMS(ctx->rep_id, apr_itoa(pp, LINK_IDS_MAX + 1)), &res);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        if (res->nrows <= LINK_IDS_MAX) {
            apr_pool_t *sp;
            apr_hash_t *h;
            apr_pool_create(&sp, ctx->pool);
            h = apr_hash_make(sp);
            for (i = 0; i < res->nrows; ++i) {
                const char *id = rmsync_db_value(res, i, 0);
                if (id) {
                    apr_hash_set(h, apr_pstrdup(sp, id), APR_HASH_KEY_STRING, "1");
                }
            }
            ctx->link_ids = h;
            ctx->link_ids_at = ctx->links_made;
        }
    }
    if (!ctx->link_ids) {
        rv = q(ctx, pp, "delta_links_in",
               RMSYNC_DB_PARAMS(ctx->rep_id, apr_array_pstrcat(pp, lookup, '\n')), &res);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        for (i = 0; i < res->nrows; ++i) {
            apr_hash_set(linked, rmsync_db_value(res, i, 0), APR_HASH_KEY_STRING, "1");
        }
        return APR_SUCCESS;
    }
    for (i = 0; i < lookup->nelts; ++i) {
        const char *id = RMSYNC_ARRAY_IDX(lookup, i, const char *);
        if (apr_hash_get(ctx->link_ids, id, APR_HASH_KEY_STRING)) {
            apr_hash_set(linked, id, APR_HASH_KEY_STRING, "1");
        }
    }
    return APR_SUCCESS;
}

/* Phase 1 (no transaction): look up which items are linked, confirm @removed and complete sparse
 * rows of linked events with a GET, hand unlinked events to the hooks. */
static apr_status_t page_prepare(rmsync_rep_ctx_t *ctx, apr_pool_t *pp,
                                 const rmsync_graph_delta_t *d, const char *request_id,
                                 apr_array_header_t **pitems)
{
    apr_array_header_t *items = apr_array_make(pp, d->events->nelts + 1, sizeof(page_item_t));
    apr_array_header_t *ids = apr_array_make(pp, d->events->nelts + 1, sizeof(const char *));
    apr_hash_t *last = apr_hash_make(pp), *linked = apr_hash_make(pp);
    apr_status_t rv;
    int i;

    apr_array_header_t *lookup = apr_array_make(pp, d->events->nelts + 1, sizeof(const char *));
    apr_hash_t *masters = apr_hash_make(pp);

    /* an entity may appear several times in a page: its last row is its latest state */
    for (i = 0; i < d->events->nelts; ++i) {
        const rmsync_event_t *ev = RMSYNC_ARRAY_IDX(d->events, i, const rmsync_event_t *);
        if (!ev || !plain_id(ev->id)) continue;
        if (!apr_hash_get(last, ev->id, APR_HASH_KEY_STRING)) {
            APR_ARRAY_PUSH(ids, const char *) = ev->id;
            APR_ARRAY_PUSH(lookup, const char *) = ev->id;
        }
        apr_hash_set(last, ev->id, APR_HASH_KEY_STRING, ev);
        /* calendarView returns occurrences, never their series master: a link may point at
         * the master (GRAPH.md section 9) */
        if (ev->series_master_id && plain_id(ev->series_master_id)
            && !apr_hash_get(masters, ev->series_master_id, APR_HASH_KEY_STRING)) {
            apr_hash_set(masters, ev->series_master_id, APR_HASH_KEY_STRING, "");
            APR_ARRAY_PUSH(lookup, const char *) = ev->series_master_id;
        }
    }
    *pitems = items;
    if (ids->nelts == 0) {
        return APR_SUCCESS;
    }
    if ((rv = linked_ids(ctx, pp, lookup, linked)) != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; i < ids->nelts; ++i) {
        const char *id = RMSYNC_ARRAY_IDX(ids, i, const char *);
        const rmsync_event_t *ev = apr_hash_get(last, id, APR_HASH_KEY_STRING);
        page_item_t *it;
        const char *mv;
        int is_linked = apr_hash_get(linked, id, APR_HASH_KEY_STRING) != NULL;

        mv = ev->series_master_id ? apr_hash_get(masters, ev->series_master_id,
                                                 APR_HASH_KEY_STRING) : NULL;
        if (!is_linked && mv && !*mv
            && apr_hash_get(linked, ev->series_master_id, APR_HASH_KEY_STRING)) {
            /* an occurrence of a linked series: apply the master's state, once per page */
            rmsync_graph_result_t gres;
            rmsync_event_t *master = NULL;
            apr_hash_set(masters, ev->series_master_id, APR_HASH_KEY_STRING, "done");
            memset(&gres, 0, sizeof(gres));
            rv = rmsync_graph_get_event(ctx->graph, pp, ctx->user_id, ev->series_master_id,
                                        &master, &gres);
            it = apr_array_push(items);
            memset(it, 0, sizeof(*it));
            it->event_id = ev->series_master_id;
            it->linked = 1;
            it->request_id = gres.request_id;
            if (rv == RMSYNC_GRAPH_NOTFOUND) {
                it->gone = 1;
            }
            else if (rv == APR_SUCCESS) {
                it->ev = master;
            }
            else {
                return rv;
            }
            continue;
        }
        if (!is_linked) {
            /* unlinked events never change activities; the hooks (category rule) see them */
            /* a sparse row of an occurrence still goes to the hooks (the category rule reads
             * the occurrence): occurrences entering the window come that way */
            if (!ev->removed && (!ev->partial || ev->series_master_id)
                && rmsync_engine_has_unlinked_hooks()) {
                apr_status_t hrv = rmsync_engine_unlinked_event(ctx, ev);
                if (hrv != APR_SUCCESS && !rmsync_graph_is_transient(hrv)
                    && !RMSYNC_DB_IS_DOWN(hrv)) {
                    rmsync_log(RMSYNC_LOG_DEBUG, hrv, "rep %s: unlinked hook failed for %s",
                               ctx->rep_id, id);
                }
                else if (hrv != APR_SUCCESS) {
                    return hrv;
                }
            }
            continue;
        }
        it = apr_array_push(items);
        memset(it, 0, sizeof(*it));
        it->event_id = id;
        it->linked = 1;
        it->request_id = request_id;
        if (ev->removed || ev->partial) {
            /* "@removed" may mean moved out of the window; a sparse row lacks the fields */
            rmsync_graph_result_t gres;
            rmsync_event_t *full = NULL;
            memset(&gres, 0, sizeof(gres));
            rv = rmsync_graph_get_event(ctx->graph, pp, ctx->user_id, id, &full, &gres);
            if (rv == RMSYNC_GRAPH_NOTFOUND) {
                it->gone = 1;
                it->request_id = gres.request_id;
            }
            else if (rv == APR_SUCCESS) {
                it->ev = full;
                it->request_id = gres.request_id;
            }
            else {
                return rv;
            }
        }
        else {
            it->ev = ev;
        }
    }
    return APR_SUCCESS;
}

/* Phase 2: one transaction for the page's linked items + seen marks + the cursor. fast: the
 * items without savepoints, links and log rows with one statement each (rmsync_apply_page_*);
 * RMSYNC_APPLY_EREDO when an item failed that way (the transaction is rolled back). */
static apr_status_t page_apply(rmsync_rep_ctx_t *ctx, apr_pool_t *pp,
                               const rmsync_graph_delta_t *d, apr_array_header_t *items,
                               int initial, const char *request_id, int fast)
{
    apr_array_header_t *seen = apr_array_make(pp, items->nelts + 1, sizeof(const char *));
    apr_status_t rv;
    int i, seen_done = 0;

    apr_pool_t *job_pool = ctx->pool;

    if (items->nelts == 0 && d->bad_items->nelts == 0 && d->next_link) {
        /* nothing linked on this page (most pages of an initial sync): only the cursor */
        return q(ctx, pp, "delta_cursor", RMSYNC_DB_PARAMS(ctx->rep_id, d->next_link), NULL);
    }
    if (items->nelts == 0 && d->bad_items->nelts == 0 && !initial) {
        /* the last page of a delta round with nothing to write (every idle mailbox, every
         * cycle): one statement instead of a transaction of two */
        return q(ctx, pp, "delta_round_done", RMSYNC_DB_PARAMS(ctx->rep_id, d->delta_link), NULL);
    }
    if ((rv = rmsync_db_begin_as(ctx->db, ctx->settings->master_user)) != APR_SUCCESS) {
        return rv;
    }
    ctx->in_tx = 1;
    ctx->pool = pp;                     /* what the page's items allocate goes with the page */
    if (fast) {
        apr_array_header_t *ids = apr_array_make(pp, items->nelts + 1, sizeof(const char *));
        for (i = 0; i < items->nelts; ++i) {
            page_item_t *it = &RMSYNC_ARRAY_IDX(items, i, page_item_t);
            if (!it->gone) APR_ARRAY_PUSH(ids, const char *) = it->event_id;
        }
        /* an initial round's seen marks are written with the page's links */
        if ((rv = rmsync_apply_page_begin(ctx, ids, initial)) != APR_SUCCESS) goto fail;
    }
    for (i = 0; i < d->bad_items->nelts; ++i) {
        /* a Graph row with a missing or wrongly typed field: logged, not fatal */
        rv = rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_WARNING, ctx->rep_id, 0, NULL,
                            "skip", request_id, RMSYNC_LOGNO(00410) "Graph returned an event that "
                            "cannot be read, skipped: %s",
                            RMSYNC_ARRAY_IDX(d->bad_items, i, const char *));
        if (rv != APR_SUCCESS) goto fail;
    }
    for (i = 0; i < items->nelts; ++i) {
        page_item_t *it = &RMSYNC_ARRAY_IDX(items, i, page_item_t);
        rmsync_apply_result_e r;
        if (it->gone) {
            rv = rmsync_apply_mark_gone(ctx, it->event_id);
        }
        else {
            rv = rmsync_apply_linked_event(ctx, it->ev, 0, it->request_id, &r);
            APR_ARRAY_PUSH(seen, const char *) = it->event_id;
        }
        if (rv != APR_SUCCESS) goto fail;
    }
    if (fast && (rv = rmsync_apply_page_end(ctx, &seen_done)) != APR_SUCCESS) goto fail;
    if (initial && seen->nelts && !seen_done) {
        rv = q(ctx, pp, "delta_seen",
               RMSYNC_DB_PARAMS(ctx->rep_id, apr_array_pstrcat(pp, seen, '\n')), NULL);
        if (rv != APR_SUCCESS) goto fail;
    }
    /* the cursor rides with the COMMIT (rmsync_db_defer: one round trip) */
    if (d->next_link) {
        rv = rmsync_db_defer(ctx->db, "delta_cursor", RMSYNC_DB_PARAMS(ctx->rep_id, d->next_link));
    }
    else {
        rv = rmsync_db_defer(ctx->db, "delta_round_link",
                             RMSYNC_DB_PARAMS(ctx->rep_id, d->delta_link));
        if (rv == APR_SUCCESS && !initial) {
            rv = rmsync_db_defer(ctx->db, "delta_round_finish", RMSYNC_DB_PARAMS(ctx->rep_id));
        }
    }
    if (rv != APR_SUCCESS) goto fail;
    ctx->in_tx = 0;
    ctx->pool = job_pool;
    /* A page in the middle of a round commits without waiting for its WAL flush: all it
     * writes is derived from Graph, and after a crash the round resumes at the last durable
     * cursor and reads those pages again (applying is idempotent). The round's last page (the
     * deltaLink) commits durably, which flushes the earlier ones too. */
    return d->next_link ? rmsync_db_commit_async(ctx->db) : rmsync_db_commit(ctx->db);

fail:
    rmsync_apply_page_abandon(ctx);
    ctx->in_tx = 0;
    ctx->pool = job_pool;
    rmsync_db_rollback(ctx->db);
    return rv;
}

/* A page is applied in one go; only when one of its items fails (a write the CRM refuses, an
 * appointment ending before it starts) is it applied again item by item, where that item is
 * rolled back to its savepoint, logged and skipped as usual. */
static apr_status_t page_commit(rmsync_rep_ctx_t *ctx, apr_pool_t *pp,
                                const rmsync_graph_delta_t *d, apr_array_header_t *items,
                                int initial, const char *request_id)
{
    int applied = ctx->applied, deleted = ctx->deleted, errors = ctx->errors;
    apr_uint32_t lag = ctx->lag_ms;
    apr_status_t rv = page_apply(ctx, pp, d, items, initial, request_id, 1);

    if (rv == RMSYNC_APPLY_EREDO) {
        ctx->applied = applied;
        ctx->deleted = deleted;
        ctx->errors = errors;
        ctx->lag_ms = lag;
        rmsync_log(RMSYNC_LOG_DEBUG, APR_SUCCESS, "rep %s: an item of the page failed, applying "
                   "the page again item by item", ctx->rep_id);
        rv = page_apply(ctx, pp, d, items, initial, request_id, 0);
    }
    return rv;
}

/* ---- re-fetch linked events ------------------------------------------------------------------ */

/* GET each event the statement lists for this representative and apply its current state; an
 * event Graph no longer has is marked gone (the deletion policy applies on the next pass).
 * Used for reconcile after an initial round and for links that were never applied. */
static apr_status_t refetch_links(rmsync_rep_ctx_t *ctx, const char *stmt)
{
    rmsync_db_result_t *res;
    apr_status_t rv;
    int i;

    if ((rv = q(ctx, NULL, stmt, RMSYNC_DB_PARAMS(ctx->rep_id), &res)) != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; i < res->nrows && !rmsync_engine_stopping(ctx); ++i) {
        const char *id = rmsync_db_value(res, i, 0);
        rmsync_graph_result_t gres;
        rmsync_event_t *ev = NULL;
        rmsync_apply_result_e r;
        apr_pool_t *ip;

        apr_pool_create(&ip, ctx->pool);
        memset(&gres, 0, sizeof(gres));
        rv = rmsync_graph_get_event(ctx->graph, ip, ctx->user_id, id, &ev, &gres);
        if (rv == RMSYNC_GRAPH_NOTFOUND) {
            rv = rmsync_apply_mark_gone(ctx, id);
        }
        else if (rv == APR_SUCCESS) {
            /* linked but outside the window, missed, or never applied: apply its state */
            apr_pool_t *job_pool = ctx->pool;
            ctx->pool = ip;
            rv = rmsync_apply_linked_event(ctx, ev, 0, gres.request_id, &r);
            ctx->pool = job_pool;
        }
        else {
            rmsync_engine_graph_error(ctx, "get", id, rv, &gres);
        }
        apr_pool_destroy(ip);
        if (rv != APR_SUCCESS) {
            return rv;
        }
    }
    return APR_SUCCESS;
}

/* After an initial round: linked events the round did not see. */
static apr_status_t reconcile(rmsync_rep_ctx_t *ctx)
{
    apr_status_t rv = refetch_links(ctx, "delta_unseen");

    if (rv == APR_SUCCESS && rmsync_engine_stopping(ctx)) {
        rv = APR_EINTR;
    }
    return rv;
}

/* Links never applied yet (made by the linking API, or while the event's last change was
 * already behind the deltaLink): their event's state is applied now, whatever delta says. */
static apr_status_t apply_fresh_links(rmsync_rep_ctx_t *ctx)
{
    return refetch_links(ctx, "delta_fresh_links");
}

/* ---- the pass -------------------------------------------------------------------------------- */

typedef struct rep_state_t {
    const char *delta_link, *next_link, *kind;
    apr_time_t ws, we;
    int due, resume, held;
} rep_state_t;

static apr_status_t state_load(rmsync_rep_ctx_t *ctx, rep_state_t *st)
{
    rmsync_db_result_t *res;
    apr_status_t rv;
    const char *v, *cycle;

    memset(st, 0, sizeof(*st));
    cycle = apr_itoa(ctx->pool, ctx->settings->cycle_s > 0 ? ctx->settings->cycle_s : 1);
    if ((rv = q(ctx, NULL, "delta_state_load", RMSYNC_DB_PARAMS(ctx->rep_id, cycle), &res))
        != APR_SUCCESS) {
        return rv;
    }
    if (res->nrows == 0) {
        /* a representative's first job: its row is made once, not checked for every pass */
        if ((rv = q(ctx, NULL, "delta_state_ensure", RMSYNC_DB_PARAMS(ctx->rep_id), NULL))
            != APR_SUCCESS
            || (rv = q(ctx, NULL, "delta_state_load", RMSYNC_DB_PARAMS(ctx->rep_id, cycle),
                       &res)) != APR_SUCCESS) {
            return rv;
        }
    }
    if (res->nrows != 1) {
        return APR_EGENERAL;
    }
    st->delta_link = rmsync_db_value(res, 0, 0);
    st->next_link = rmsync_db_value(res, 0, 1);
    st->kind = rmsync_db_value(res, 0, 2);
    st->ws = (v = rmsync_db_value(res, 0, 3)) ? (apr_time_t)apr_atoi64(v) : 0;
    st->we = (v = rmsync_db_value(res, 0, 4)) ? (apr_time_t)apr_atoi64(v) : 0;
    st->due = (v = rmsync_db_value(res, 0, 5)) && v[0] == 't';
    st->resume = (v = rmsync_db_value(res, 0, 6)) && v[0] == 't';
    st->held = (v = rmsync_db_value(res, 0, 7)) && v[0] == 't';
    return APR_SUCCESS;
}

static void window_target(rmsync_rep_ctx_t *ctx, apr_time_t *ws, apr_time_t *we)
{
    apr_time_t now = apr_time_now();
    if (!ctx->settings->initial_sync_from
        || rmsync_sync_from_time(ctx->settings->initial_sync_from, now, ws) != APR_SUCCESS) {
        *ws = now - 30 * US_PER_DAY;
    }
    *we = now + (apr_time_t)(ctx->settings->window_days > 0 ? ctx->settings->window_days : 365)
                * US_PER_DAY;
}

/* A new round (recorded as the pass's attempt too: one statement for both). */
static apr_status_t round_start(rmsync_rep_ctx_t *ctx, rep_state_t *st, int initial,
                                const char *why)
{
    apr_status_t rv;
    if (initial) {
        window_target(ctx, &st->ws, &st->we);
        st->delta_link = NULL;
        rmsync_engine_count(ctx, RMSYNC_CTR_DELTA_RESYNCS, 1);
        rmsync_engine_rep_state(ctx, RMSYNC_REP_INITIAL_SYNC);
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL,
                       "initial-sync", NULL, "initial sync started (%s)", why);
    }
    st->kind = initial ? "initial" : "delta";
    st->next_link = NULL;
    rv = q(ctx, NULL, "delta_round_start",
           RMSYNC_DB_PARAMS(ctx->rep_id, st->kind, us(ctx->pool, st->ws), us(ctx->pool, st->we),
                            why, "t"), NULL);
    return rv;
}

static apr_status_t round_finish(rmsync_rep_ctx_t *ctx, int initial)
{
    apr_status_t rv = q(ctx, NULL, "delta_round_finish", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
    if (rv == APR_SUCCESS && initial) {
        rv = q(ctx, NULL, "delta_initial_requests_done",
               RMSYNC_DB_PARAMS(ctx->rep_id, "initial sync completed"), NULL);
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL,
                       "initial-sync", NULL, "initial sync completed");
    }
    return rv;
}

/* A page that only moves the cursor (nothing linked on it, most pages of an initial sync)
 * stores it at most this often: after a crash the round resumes from the last stored page and
 * reads the pages since again, which changes nothing (applying is idempotent; an event a hook
 * linked is linked now). Pages with writes store it in their own transaction. */
#define CURSOR_SAVE_INTERVAL apr_time_from_msec(1000)

static apr_status_t save_cursor(rmsync_rep_ctx_t *ctx, const char **unsaved)
{
    apr_status_t rv = APR_SUCCESS;

    if (*unsaved) {
        rv = q(ctx, NULL, "delta_cursor", RMSYNC_DB_PARAMS(ctx->rep_id, *unsaved), NULL);
        *unsaved = NULL;
    }
    return rv;
}

/* The first page of an initial round failed for good (the mailbox does not exist, access
 * denied): the round ends and the waiting Initial Sync requests fail with the reason and the
 * fix, so the round is not resumed every 30 s; the next cycle tries once more. */
static void fail_initial(rmsync_rep_ctx_t *ctx, apr_status_t rv, const rmsync_graph_result_t *g)
{
    const char *raw = apr_psprintf(ctx->pool, "%s (HTTP %d %s)",
                                   rmsync_graph_strerror(ctx->pool, rv), g->http_status,
                                   g->error_code ? g->error_code : "");
    const rmsync_error_class_t *c = rmsync_error_classify(raw);

    q(ctx, NULL, "delta_round_abandon", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
    q(ctx, NULL, "delta_initial_requests_failed",
      RMSYNC_DB_PARAMS(ctx->rep_id, apr_pstrcat(ctx->pool, "failed: ", raw, ": ", c->reason,
                                                " ", c->fix, NULL)), NULL);
}

/* ---- the next page, fetched while the current one is written ------------------------------ */

/* One request at a time: the worker asks (FETCH_ASKED) and later collects the answer
 * (FETCH_DONE -> FETCH_IDLE); between the two only the fetcher thread touches the request's
 * pool and result. */
enum { FETCH_IDLE, FETCH_ASKED, FETCH_DONE };

struct rmsync_delta_fetcher_t {
    apr_thread_t *thread;
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *cond;
    int state, quit;                     /* under mutex */
    /* two allocators, one page each in turn: the fetcher thread allocates the next page from
     * one while the worker writes (and then frees) the current page from the other; kept
     * across pages so their memory is reused, not taken from malloc again for every page */
    apr_allocator_t *alloc[2];
    int turn;
    rmsync_graph_t *graph;
    apr_pool_t *pool;                    /* the page's pool */
    const char *user_id, *calendar_id, *link;
    apr_time_t ws, we;
    rmsync_graph_delta_t *d;
    rmsync_graph_result_t res;
    apr_status_t rv;
};

static void *APR_THREAD_FUNC fetcher_main(apr_thread_t *thread, void *data)
{
    rmsync_delta_fetcher_t *f = data;

    apr_thread_mutex_lock(f->mutex);
    for (;;) {
        while (!f->quit && f->state != FETCH_ASKED) {
            apr_thread_cond_wait(f->cond, f->mutex);
        }
        if (f->quit) {
            break;
        }
        apr_thread_mutex_unlock(f->mutex);
        memset(&f->res, 0, sizeof(f->res));
        f->d = NULL;
        f->rv = rmsync_graph_delta_page_in(f->graph, f->pool, f->user_id, f->calendar_id,
                                           f->link, f->ws, f->we, RMSYNC_DELTA_PAGE_SIZE,
                                           &f->d, &f->res);
        apr_thread_mutex_lock(f->mutex);
        f->state = FETCH_DONE;
        apr_thread_cond_broadcast(f->cond);
    }
    apr_thread_mutex_unlock(f->mutex);
    rmsync_http_thread_done();
    apr_thread_exit(thread, APR_SUCCESS);
    return NULL;
}

apr_status_t rmsync_delta_fetcher_create(rmsync_delta_fetcher_t **pf, apr_pool_t *pool)
{
    rmsync_delta_fetcher_t *f = apr_pcalloc(pool, sizeof(*f));
    apr_status_t rv;
    int i;

    *pf = NULL;
    for (i = 0; i < 2; ++i) {
        if ((rv = apr_allocator_create(&f->alloc[i])) != APR_SUCCESS) {
            return rv;
        }
        apr_allocator_max_free_set(f->alloc[i], 1024 * 1024);
    }
    if ((rv = apr_thread_mutex_create(&f->mutex, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&f->cond, pool)) != APR_SUCCESS
        || (rv = apr_thread_create(&f->thread, NULL, fetcher_main, f, pool)) != APR_SUCCESS) {
        return rv;
    }
    *pf = f;
    return APR_SUCCESS;
}

void rmsync_delta_fetcher_destroy(rmsync_delta_fetcher_t *f)
{
    apr_status_t trv;

    if (!f) {
        return;
    }
    apr_thread_mutex_lock(f->mutex);
    f->quit = 1;
    apr_thread_cond_broadcast(f->cond);
    apr_thread_mutex_unlock(f->mutex);
    apr_thread_join(&trv, f->thread);
    apr_allocator_destroy(f->alloc[0]);   /* the pages' pools went with their jobs */
    apr_allocator_destroy(f->alloc[1]);
}

/* Ask the fetcher for the page at link; returns the page's pool (a child of the job pool with
 * the fetcher's allocator of this turn: the fetcher thread allocates from it while this thread
 * allocates from the job pool and frees the last page, of the other turn), which the caller
 * destroys after the page is committed, before the next fetch_start; NULL: no fetcher. */
static apr_pool_t *fetch_start(rmsync_rep_ctx_t *ctx, const rep_state_t *st, const char *link)
{
    rmsync_delta_fetcher_t *f = ctx->fetcher;
    apr_pool_t *np;

    if (!f || apr_pool_create_ex(&np, ctx->pool, NULL, f->alloc[f->turn]) != APR_SUCCESS) {
        return NULL;
    }
    f->turn ^= 1;
    apr_thread_mutex_lock(f->mutex);
    f->graph = ctx->graph;
    f->pool = np;
    f->user_id = ctx->user_id;
    f->calendar_id = ctx->calendar_id;
    f->link = link;
    f->ws = st->ws;
    f->we = st->we;
    f->state = FETCH_ASKED;
    apr_thread_cond_broadcast(f->cond);
    apr_thread_mutex_unlock(f->mutex);
    return np;
}

/* The answer to fetch_start (waits for it); its memory is in the page's pool. */
static apr_status_t fetch_wait(rmsync_rep_ctx_t *ctx, rmsync_graph_delta_t **pd,
                               rmsync_graph_result_t *gres)
{
    rmsync_delta_fetcher_t *f = ctx->fetcher;

    apr_thread_mutex_lock(f->mutex);
    while (f->state == FETCH_ASKED) {
        apr_thread_cond_wait(f->cond, f->mutex);
    }
    f->state = FETCH_IDLE;
    *pd = f->d;
    *gres = f->res;
    f->pool = NULL;
    apr_thread_mutex_unlock(f->mutex);
    return f->rv;
}

/* A pass that ends early: the page being fetched is waited for and dropped. */
static void fetch_drop(rmsync_rep_ctx_t *ctx, apr_pool_t **np)
{
    rmsync_graph_delta_t *d;
    rmsync_graph_result_t gres;

    if (*np) {
        fetch_wait(ctx, &d, &gres);
        apr_pool_destroy(*np);
        *np = NULL;
    }
}

static apr_status_t run_pass(rmsync_rep_ctx_t *ctx, rep_state_t *st, int force_initial)
{
    apr_hash_t *links_seen = apr_hash_make(ctx->pool);
    apr_pool_t *npp = NULL;          /* the next page's pool while the fetcher reads it */
    apr_time_t tws, twe, saved_at = apr_time_now();
    const char *link = NULL, *unsaved = NULL;
    apr_status_t rv;
    int initial, resyncs = 0, pages = 0;

    window_target(ctx, &tws, &twe);
    if (force_initial) {
        rv = round_start(ctx, st, 1, "request");
    }
    else if (st->kind && !strcmp(st->kind, "initial") && !st->next_link && st->delta_link) {
        if ((rv = q(ctx, NULL, "delta_attempt", RMSYNC_DB_PARAMS(ctx->rep_id), NULL))
            != APR_SUCCESS) {
            return rv;
        }
        goto reconcile_pending;
    }
    else if (st->kind && st->next_link) {
        rv = q(ctx, NULL, "delta_attempt", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
        link = st->next_link;                        /* resume the round in progress */
        rmsync_engine_rep_state(ctx, !strcmp(st->kind, "initial") ? RMSYNC_REP_INITIAL_SYNC
                                                                   : RMSYNC_REP_SYNCING);
    }
    else if (!st->delta_link) {
        rv = round_start(ctx, st, 1, (st->kind && !strcmp(st->kind, "initial"))
                                     ? "request" : "first sync");
    }
    else if (st->we && st->we < twe - US_PER_DAY) {
        rv = round_start(ctx, st, 1, "the sync window moved on");
    }
    else {
        rv = round_start(ctx, st, 0, "cycle");
        link = st->delta_link;
        rmsync_engine_rep_state(ctx, RMSYNC_REP_SYNCING);
    }
    if (rv != APR_SUCCESS) {
        return rv;
    }
    initial = !strcmp(st->kind, "initial");

    for (;;) {
        rmsync_graph_delta_t *d = NULL;
        rmsync_graph_result_t gres;
        apr_array_header_t *items;
        apr_pool_t *pp;

        if (rmsync_engine_stopping(ctx)) {
            fetch_drop(ctx, &npp);
            save_cursor(ctx, &unsaved);
            return APR_EINTR;                         /* the cursor is stored: resumes later */
        }
        if (npp) {
            pp = npp;                                 /* fetched while the last page was written */
            npp = NULL;
            rv = fetch_wait(ctx, &d, &gres);
        }
        else {
            apr_pool_create(&pp, ctx->pool);
            memset(&gres, 0, sizeof(gres));
            rv = rmsync_graph_delta_page_in(ctx->graph, pp, ctx->user_id, ctx->calendar_id,
                                            link, st->ws, st->we, RMSYNC_DELTA_PAGE_SIZE, &d,
                                            &gres);
        }
        if (rv == RMSYNC_GRAPH_RESYNC && resyncs++ == 0) {
            /* 410 SyncStateNotFound / InvalidDeltaToken: a full round + reconcile */
            rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL, "resync",
                           gres.request_id, "Graph no longer knows the delta state (HTTP %d %s); "
                           "running a full resync", gres.http_status,
                           gres.error_code ? gres.error_code : "");
            apr_pool_destroy(pp);
            if ((rv = round_start(ctx, st, 1, "delta state expired")) != APR_SUCCESS) {
                return rv;
            }
            initial = 1;
            link = NULL;
            unsaved = NULL;                           /* the new round's state is stored */
            apr_hash_clear(links_seen);
            pages = 0;
            continue;
        }
        if (rv != APR_SUCCESS) {
            rmsync_engine_graph_error(ctx, "delta", NULL, rv, &gres);
            save_cursor(ctx, &unsaved);              /* the pages before this one are done */
            if (initial && !link && (rv == RMSYNC_GRAPH_NOTFOUND || rv == RMSYNC_GRAPH_FORBIDDEN
                                     || rv == RMSYNC_GRAPH_BADREQUEST)) {
                fail_initial(ctx, rv, &gres);
            }
            apr_pool_destroy(pp);
            return rv;
        }
        if (++pages > RMSYNC_DELTA_MAX_PAGES
            || (d->next_link && apr_hash_get(links_seen, d->next_link, APR_HASH_KEY_STRING))) {
            /* loop guard: the same page link again, or endless paging */
            rmsync_engine_item_error(ctx, 0, NULL, gres.request_id, RMSYNC_LOGNO(00411) "delta "
                                     "paging loop detected after %d pages; the round is "
                                     "abandoned and starts over next cycle", pages);
            q(ctx, NULL, "delta_round_abandon", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
            apr_pool_destroy(pp);
            return APR_EGENERAL;
        }
        if (d->next_link) {
            apr_hash_set(links_seen, apr_pstrdup(ctx->pool, d->next_link), APR_HASH_KEY_STRING,
                         "1");
        }
        link = d->next_link ? apr_pstrdup(ctx->pool, d->next_link) : NULL;
        if (link) {
            npp = fetch_start(ctx, st, link);         /* the next page while this one is written */
        }
        rv = page_prepare(ctx, pp, d, gres.request_id, &items);
        if (rv == APR_SUCCESS && items->nelts == 0 && d->bad_items->nelts == 0 && link
            && apr_time_now() - saved_at < CURSOR_SAVE_INTERVAL) {
            unsaved = link;                          /* a cursor-only page: stored later */
        }
        else if (rv == APR_SUCCESS) {
            rv = page_commit(ctx, pp, d, items, initial, gres.request_id);
            if (rv == APR_SUCCESS) {
                unsaved = NULL;                      /* stored with the page */
                saved_at = apr_time_now();
            }
        }
        if (rv != APR_SUCCESS) {
            fetch_drop(ctx, &npp);
            save_cursor(ctx, &unsaved);              /* the pages before this one are done */
            apr_pool_destroy(pp);
            return rv;
        }
        apr_pool_destroy(pp);
        if (!link) {
            break;                                   /* deltaLink stored */
        }
    }
    rmsync_engine_count(ctx, RMSYNC_CTR_DELTA_PASSES, 1);
    if (!initial) {
        return APR_SUCCESS;                          /* finished in the last page's transaction */
    }

reconcile_pending:
    if ((rv = reconcile(ctx)) != APR_SUCCESS) {
        return rv;
    }
    return round_finish(ctx, 1);
}

static apr_status_t delta_pass(rmsync_rep_ctx_t *ctx, rep_state_t *st, int initial)
{
    apr_status_t rv;
    int n;

    forget_link_ids(ctx);               /* read afresh for this pass */
    ctx->in_round = 1;
    /* deletions recorded by an earlier, interrupted pass first */
    rv = rmsync_apply_flush_deletions(ctx, &n);
    if (rv == APR_SUCCESS) {
        rv = run_pass(ctx, st, initial);
    }
    ctx->in_round = 0;
    if (rv == APR_SUCCESS) {
        rv = apply_fresh_links(ctx);
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_apply_flush_deletions(ctx, &n);
    }
    return rv;
}

apr_status_t rmsync_delta_pass(rmsync_rep_ctx_t *ctx, int initial)
{
    rep_state_t st;
    apr_status_t rv;

    if ((rv = state_load(ctx, &st)) != APR_SUCCESS) {
        return rv;
    }
    return delta_pass(ctx, &st, initial);
}

apr_status_t rmsync_delta_step(rmsync_rep_ctx_t *ctx)
{
    rep_state_t st;
    apr_status_t rv;

    if (!ctx->active || !rmsync_calendar_ready(ctx)) {
        return APR_SUCCESS;   /* RMSyncCalendar's calendar not known yet: never the main one */
    }
    if ((rv = state_load(ctx, &st)) != APR_SUCCESS) {
        return rv;
    }
    if (!(ctx->want_initial || ctx->want_delta || st.due || st.resume)) {
        return APR_SUCCESS;
    }
    rv = delta_pass(ctx, &st, 0);                 /* the state just read, not read again */
    ctx->want_delta = ctx->want_initial = 0;
    return rv;
}

apr_status_t rmsync_delta_request_initial(rmsync_rep_ctx_t *ctx)
{
    apr_time_t ws, we;
    apr_status_t rv;

    window_target(ctx, &ws, &we);
    if ((rv = q(ctx, NULL, "delta_state_ensure", RMSYNC_DB_PARAMS(ctx->rep_id), NULL))
        == APR_SUCCESS) {
        rv = q(ctx, NULL, "delta_round_start",
               RMSYNC_DB_PARAMS(ctx->rep_id, "initial", us(ctx->pool, ws), us(ctx->pool, we),
                                "request", "f"), NULL);
    }
    return rv;
}
