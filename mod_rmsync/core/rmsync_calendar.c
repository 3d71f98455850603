/* mod_rmsync, run by the sync runner: the job step "calendar" -- which calendar of the mailbox
 * the sync covers (RMSyncCalendar, see rmsync_calendar.h). No httpd headers. */
#include <string.h>
#include <strings.h>
#include <apr_strings.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"
#include "rmsync_engine.h"
#include "rmsync_synclog.h"
#include "rmsync_subs.h"
#include "rmsync_calendar.h"

#define MAIN "main"

static const rmsync_db_stmt_t calendar_stmts[] = {
    { "calendar_row",
      "INSERT INTO rmsync.rep_state (representative_id) VALUES ($1) ON CONFLICT DO NOTHING", 1 },
    { "calendar_load",
      "SELECT s.calendar_name, s.calendar_id, "
      "       (s.delta_link IS NOT NULL OR s.round_kind IS NOT NULL OR EXISTS "
      "        (SELECT 1 FROM rmsync.subscription u "
      "          WHERE u.representative_id = s.representative_id)) AS synced "
      "  FROM rmsync.rep_state s WHERE s.representative_id = $1", 1 },
    /* $4 = 't': the configured calendar changed: an initial round and a new subscription */
    { "calendar_store",
      "UPDATE rmsync.rep_state SET calendar_name = $2, calendar_id = $3, "
      "       delta_link = CASE WHEN $4 THEN NULL ELSE delta_link END, "
      "       round_next_link = CASE WHEN $4 THEN NULL ELSE round_next_link END, "
      "       round_kind = CASE WHEN $4 THEN NULL ELSE round_kind END, "
      "       updated_at = now() "
      " WHERE representative_id = $1", 4 },
    { "calendar_subs",
      "SELECT subscription_id FROM rmsync.subscription WHERE representative_id = $1", 1 },
    { "calendar_subs_forget",
      "DELETE FROM rmsync.subscription WHERE representative_id = $1", 1 },
};

int rmsync_calendar_ready(const rmsync_rep_ctx_t *ctx)
{
    return !ctx->settings->sync_calendar || ctx->calendar_ready;
}

/* The subscription covers the old calendar: delete it at Graph (best effort; one that cannot be
 * deleted expires, and its notifications no longer match a stored clientState) and here. */
static apr_status_t drop_subscription(rmsync_rep_ctx_t *ctx)
{
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;
    int i;

    if ((rv = rmsync_db_exec(ctx->db, ctx->pool, "calendar_subs", RMSYNC_DB_PARAMS(ctx->rep_id),
                             &r)) != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; i < r->nrows; i++) {
        rmsync_graph_subscription_delete(ctx->graph, ctx->pool, rmsync_db_value(r, i, 0), NULL);
    }
    return rmsync_db_exec(ctx->db, ctx->pool, "calendar_subs_forget",
                          RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
}

apr_status_t rmsync_calendar_step(rmsync_rep_ctx_t *ctx)
{
    const char *want = ctx->settings->sync_calendar, *had, *had_id, *id = NULL, *v;
    rmsync_db_result_t *r = NULL;
    rmsync_graph_result_t res;
    apr_status_t rv;
    int changed, created = 0;

    ctx->calendar_id = NULL;
    ctx->calendar_ready = 0;
    if ((rv = rmsync_db_register(calendar_stmts, (int)(sizeof(calendar_stmts)
                                                       / sizeof(calendar_stmts[0]))))
        != APR_SUCCESS
        || (rv = rmsync_db_exec(ctx->db, ctx->pool, "calendar_row",
                                RMSYNC_DB_PARAMS(ctx->rep_id), NULL)) != APR_SUCCESS
        || (rv = rmsync_db_exec(ctx->db, ctx->pool, "calendar_load",
                                RMSYNC_DB_PARAMS(ctx->rep_id), &r)) != APR_SUCCESS) {
        return rv;
    }
    if (r->nrows != 1) {
        return APR_SUCCESS;             /* the representative is gone meanwhile */
    }
    had = rmsync_db_value(r, 0, 0);
    had_id = rmsync_db_value(r, 0, 1);
    if (!had) {
        had = MAIN;                     /* state from before RMSyncCalendar: the main calendar */
    }
    changed = want ? strcmp(had, want) != 0 : strcmp(had, MAIN) != 0;
    if (!changed && (!want || (had_id && *had_id))) {
        ctx->calendar_id = want ? had_id : NULL;
        ctx->calendar_ready = 1;
        if (!rmsync_db_value(r, 0, 0)) {
            rmsync_db_exec(ctx->db, ctx->pool, "calendar_store",
                           RMSYNC_DB_PARAMS(ctx->rep_id, MAIN, NULL, "f"), NULL);
        }
        return APR_SUCCESS;
    }
    if (want) {
        memset(&res, 0, sizeof(res));
        rv = rmsync_graph_calendar_ensure(ctx->graph, ctx->pool, ctx->user_id, want, &id,
                                          &created, &res);
        if (rv != APR_SUCCESS) {
            /* nothing of this mailbox is synced until its calendar is known: never the main
             * calendar instead (that would link and transfer in the wrong place) */
            rmsync_engine_rep_error(ctx, "calendar", NULL, res.request_id, RMSYNC_LOGNO(00455)
                                    "the sync calendar '%s' cannot be found or created: %s "
                                    "(HTTP %d%s%s); retried with the next job", want,
                                    rmsync_graph_strerror(ctx->pool, rv), res.http_status,
                                    res.error_code ? " " : "",
                                    res.error_code ? res.error_code : "");
            return APR_SUCCESS;
        }
    }
    if (changed && (rv = drop_subscription(ctx)) != APR_SUCCESS) {
        return rv;
    }
    if ((rv = rmsync_db_exec(ctx->db, ctx->pool, "calendar_store",
                             RMSYNC_DB_PARAMS(ctx->rep_id, want ? want : MAIN, id,
                                              changed ? "t" : "f"), NULL)) != APR_SUCCESS) {
        return rv;
    }
    ctx->calendar_id = id;
    ctx->calendar_ready = 1;
    if (created) {
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL, "calendar",
                       res.request_id, "calendar '%s' created in %s for the sync", want,
                       ctx->mailbox);
    }
    if (changed && (v = rmsync_db_value(r, 0, 2)) && v[0] == 't') {
        /* (a representative that never synced has nothing to redo: no line for it) */
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL, "calendar",
                       NULL, "RMSyncCalendar changed from '%s' to '%s': initial sync of the new "
                       "calendar, subscription renewed for it", had, want ? want : MAIN);
    }
    if (changed) {
        rmsync_engine_want_delta(ctx);
    }
    return APR_SUCCESS;
}
