/* mod_rmsync, run by the sync runner: the job step "requests": the admin's requests to the engine
 * in rmsync.request (initial_sync, approve, retry, unlink) for one representative
 * (rmsync_requests.h). */
#include <string.h>
#include <apr_strings.h>

#include "rmsync.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"
#include "rmsync_engine.h"
#include "rmsync_apply.h"
#include "rmsync_delta.h"
#include "rmsync_requests.h"
#include "rmsync_synclog.h"
#include "rmsync_selftest.h"

const char rmsync_delta_requests_sql[] =
    "SELECT DISTINCT representative_id FROM rmsync.request "
    " WHERE state = 'pending' AND representative_id IS NOT NULL "
    "   AND kind IN ('initial_sync', 'approve', 'reject', 'retry', 'unlink', 'test_connection',"
    "                'test_mailbox')";


static const rmsync_db_stmt_t requests_stmts[] = {
    { "delta_requests_claim",
      "UPDATE rmsync.request r SET state = 'processing', claimed_by = 'engine', "
      "       claimed_at = now() "
      " WHERE r.id IN (SELECT id FROM rmsync.request "
      "                 WHERE representative_id = $1 "
      "                   AND (state = 'pending' "
      "                        OR (state = 'processing' "
      "                            AND kind IN ('approve', 'reject', 'retry', 'unlink', "
      "                                         'test_connection', 'test_mailbox') "
      "                            AND claimed_at < now() - interval '10 minutes')) "
      "                   AND kind IN ('initial_sync', 'approve', 'reject', 'retry', 'unlink', "
      "                                'test_connection', 'test_mailbox') "
      "                 ORDER BY id FOR UPDATE SKIP LOCKED) "
      "RETURNING r.id, r.kind, r.activity_no, coalesce(r.requested_by, '-') AS requested_by, "
      "          r.payload ->> 'event_id' AS event_id", 1 },
    { "delta_request_finish",
      "UPDATE rmsync.request SET state = $2, result = $3, done_at = now() "
      " WHERE id = $1::bigint", 3 },
    { "delta_approve",
      "UPDATE rmsync.rep_state SET breaker_approved_at = now(), held_by_breaker = false, "
      "       held_reason = NULL, updated_at = now() WHERE representative_id = $1", 1 },
    { "delta_link_of_activity",
      "SELECT event_id FROM rmsync.event_link "
      " WHERE activity_no = $1::bigint AND representative_id = $2", 2 },
    /* unlinked and remembered: never linked again but by an explicit link */
    { "delta_unlink",
      "WITH d AS (DELETE FROM rmsync.event_link WHERE activity_no = $1::bigint "
      "              AND representative_id = $2 RETURNING representative_id, event_id, "
      "              activity_no), "
      "m AS (INSERT INTO rmsync.unlinked_event (representative_id, event_id, activity_no, "
      "                                        unlinked_by) "
      "      SELECT representative_id, event_id, activity_no, $3 FROM d "
      "      ON CONFLICT (representative_id, event_id) DO UPDATE SET "
      "         activity_no = EXCLUDED.activity_no, unlinked_by = EXCLUDED.unlinked_by, "
      "         unlinked_at = now(), noted_change_key = NULL) "
      "SELECT event_id FROM d", 3 },
    /* Reject of a breaker hold: the waiting deletions (not covered by an approval) are not
     * carried out; their activities are kept, unlinked and remembered as unlinked. */
    { "delta_reject",
      "WITH s AS (UPDATE rmsync.rep_state SET held_by_breaker = false, held_reason = NULL, "
      "                  breaker_rejected_at = now(), updated_at = now() "
      "            WHERE representative_id = $1 RETURNING breaker_approved_at), "
      "d AS (DELETE FROM rmsync.event_link l WHERE l.representative_id = $1 "
      "         AND l.gone_at IS NOT NULL "
      "         AND NOT coalesce(l.gone_at <= (SELECT breaker_approved_at FROM s), false) "
      "      RETURNING l.representative_id, l.event_id, l.activity_no), "
      "m AS (INSERT INTO rmsync.unlinked_event (representative_id, event_id, activity_no, "
      "                                        unlinked_by) "
      "      SELECT representative_id, event_id, activity_no, $2 FROM d "
      "      ON CONFLICT (representative_id, event_id) DO UPDATE SET "
      "         activity_no = EXCLUDED.activity_no, unlinked_by = EXCLUDED.unlinked_by, "
      "         unlinked_at = now(), noted_change_key = NULL) "
      "SELECT activity_no, event_id FROM d ORDER BY activity_no", 2 },
};

apr_status_t rmsync_requests_register(void)
{
    apr_status_t rv = rmsync_selftest_register();
    if (rv != APR_SUCCESS) {
        return rv;
    }
    return rmsync_db_register(requests_stmts,
                              (int)(sizeof(requests_stmts) / sizeof(requests_stmts[0])));
}

static apr_status_t q(rmsync_rep_ctx_t *ctx, apr_pool_t *p, const char *name,
                      const char *const *params, rmsync_db_result_t **pres)
{
    return rmsync_db_exec(ctx->db, p ? p : ctx->pool, name, params, pres);
}

static apr_status_t finish_request(rmsync_rep_ctx_t *ctx, const char *id, int ok,
                                   const char *result)
{
    return q(ctx, NULL, "delta_request_finish",
             RMSYNC_DB_PARAMS(id, ok ? "done" : "failed", result), NULL);
}

static apr_status_t request_retry(rmsync_rep_ctx_t *ctx, const char *id, const char *activity,
                                  const char *event_id, const char *by)
{
    rmsync_db_result_t *res;
    rmsync_graph_result_t gres;
    rmsync_event_t *ev = NULL;
    rmsync_apply_result_e r;
    apr_status_t rv;

    if (!event_id && activity) {
        rv = q(ctx, NULL, "delta_link_of_activity", RMSYNC_DB_PARAMS(activity, ctx->rep_id), &res);
        if (rv != APR_SUCCESS) return rv;
        event_id = res->nrows ? rmsync_db_value(res, 0, 0) : NULL;
    }
    if (!event_id) {
        return finish_request(ctx, id, 0, "no linked Outlook appointment to retry");
    }
    memset(&gres, 0, sizeof(gres));
    rv = rmsync_graph_get_event(ctx->graph, ctx->pool, ctx->user_id, event_id, &ev, &gres);
    if (rv == RMSYNC_GRAPH_NOTFOUND) {
        rv = rmsync_apply_removed(ctx, event_id, &r);
    }
    else if (rv == APR_SUCCESS) {
        rv = rmsync_apply_linked_event(ctx, ev, 1, gres.request_id, &r);
    }
    else {
        return finish_request(ctx, id, 0, apr_psprintf(ctx->pool, "Graph: %s",
                                                        rmsync_graph_strerror(ctx->pool, rv)));
    }
    if (rv != APR_SUCCESS) {
        return rv;
    }
    rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id,
                   activity ? apr_atoi64(activity) : 0, event_id, "retry", gres.request_id,
                   "retry requested by %s: %s", by, rmsync_apply_result_name(r));
    return finish_request(ctx, id, r != RMSYNC_APPLY_SKIPPED, rmsync_apply_result_name(r));
}

/* Reject: one transaction (the hold ends, the links go, the log rows say which activities were
 * kept). */
static apr_status_t request_reject(rmsync_rep_ctx_t *ctx, const char *id, const char *by)
{
    rmsync_db_result_t *res;
    apr_status_t rv;
    int i;

    if ((rv = rmsync_db_begin(ctx->db)) != APR_SUCCESS) {
        return rv;
    }
    rv = q(ctx, NULL, "delta_reject", RMSYNC_DB_PARAMS(ctx->rep_id, by), &res);
    for (i = 0; rv == APR_SUCCESS && i < res->nrows; ++i) {
        rv = rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id,
                            apr_atoi64(rmsync_db_value(res, i, 0)), rmsync_db_value(res, i, 1),
                            "unlink", NULL, "activity kept and unlinked: the deletion of its "
                            "Outlook appointment was rejected by %s", by);
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL,
                            "reject", NULL, "pending deletions rejected by %s: %d activities "
                            "kept and unlinked", by, res->nrows);
    }
    if (rv == APR_SUCCESS) {
        rv = finish_request(ctx, id, 1, apr_psprintf(ctx->pool, "rejected: %d activities kept "
                                                     "and unlinked", res->nrows));
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_db_commit(ctx->db);
    }
    if (rv != APR_SUCCESS) {
        rmsync_db_rollback(ctx->db);
        return rv;
    }
    ctx->held = 0;
    return APR_SUCCESS;
}

apr_status_t rmsync_delta_requests_step(rmsync_rep_ctx_t *ctx)
{
    rmsync_db_result_t *res;
    apr_status_t rv;
    int i;

    if ((rv = rmsync_db_begin(ctx->db)) != APR_SUCCESS) {
        return rv;
    }
    if ((rv = q(ctx, NULL, "delta_requests_claim", RMSYNC_DB_PARAMS(ctx->rep_id), &res))
        != APR_SUCCESS) {
        rmsync_db_rollback(ctx->db);
        return rv;
    }
    /* an initial sync request starts its round in the claiming transaction: durable */
    for (i = 0; i < res->nrows; ++i) {
        if (!strcmp(rmsync_db_get(res, i, "kind"), "initial_sync") && ctx->active) {
            if ((rv = rmsync_delta_request_initial(ctx)) != APR_SUCCESS) {
                rmsync_db_rollback(ctx->db);
                return rv;
            }
            ctx->want_initial = 1;
            break;
        }
    }
    if ((rv = rmsync_db_commit(ctx->db)) != APR_SUCCESS) {
        return rv;
    }
    if (ctx->want_initial) {
        rmsync_engine_count(ctx, RMSYNC_CTR_DELTA_RESYNCS, 1);
        rmsync_engine_rep_state(ctx, RMSYNC_REP_INITIAL_SYNC);
    }

    for (i = 0; i < res->nrows && rv == APR_SUCCESS; ++i) {
        const char *id = rmsync_db_get(res, i, "id");
        const char *kind = rmsync_db_get(res, i, "kind");
        const char *activity = rmsync_db_get(res, i, "activity_no");
        const char *by = rmsync_db_get(res, i, "requested_by");
        const char *event_id = rmsync_db_get(res, i, "event_id");

        if (!strncmp(kind, "test_", 5)) {
            /* the admin's test buttons: also for a representative that does not sync yet */
            const char *result = NULL;
            int ok = 0;
            if (rmsync_selftest_run(ctx, kind, &result, &ok) == APR_SUCCESS) {
                rv = finish_request(ctx, id, ok, result);
            }
        }
        else if (!ctx->active) {
            rv = finish_request(ctx, id, 0, "the representative does not sync (no permission "
                                "set or Sync Active off)");
        }
        else if (!strcmp(kind, "initial_sync")) {
            rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL,
                           "initial-sync", NULL, "initial sync requested by %s", by);
            /* marked done when the round completes (rmsync.request stays 'processing') */
        }
        else if (!strcmp(kind, "approve")) {
            if ((rv = q(ctx, NULL, "delta_approve", RMSYNC_DB_PARAMS(ctx->rep_id), NULL))
                == APR_SUCCESS) {
                ctx->held = 0;
                rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL,
                               "approve", NULL, "pending deletions approved by %s", by);
                rv = finish_request(ctx, id, 1, "approved");
                if (rv == APR_SUCCESS) {
                    int n = 0;
                    rv = rmsync_apply_flush_deletions(ctx, &n);
                }
            }
        }
        else if (!strcmp(kind, "reject")) {
            rv = request_reject(ctx, id, by);
        }
        else if (!strcmp(kind, "retry")) {
            rv = request_retry(ctx, id, activity, event_id, by);
        }
        else if (!strcmp(kind, "unlink")) {
            rmsync_db_result_t *ur;
            if (!activity) {
                rv = finish_request(ctx, id, 0, "unlink needs an activity number");
                continue;
            }
            rv = q(ctx, NULL, "delta_unlink", RMSYNC_DB_PARAMS(activity, ctx->rep_id, by), &ur);
            if (rv == APR_SUCCESS) {
                if (ur->nrows) {
                    rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id,
                                   apr_atoi64(activity), rmsync_db_value(ur, 0, 0), "unlink",
                                   NULL, "activity unlinked from its Outlook appointment by %s",
                                   by);
                }
                rv = finish_request(ctx, id, ur->nrows > 0,
                                    ur->nrows ? "unlinked" : "the activity was not linked");
            }
        }
    }
    return rv;
}
