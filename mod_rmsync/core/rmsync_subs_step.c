/* mod_rmsync, run by the sync runner: the per-representative job step "subscriptions" and the
 * handling of Graph's lifecycle notifications (rmsync_subs_step.h), over rmsync_subs.c. */
#include <string.h>
#include <apr_atomic.h>

#include "rmsync.h"
#include "rmsync_db.h"
#include "rmsync_subs.h"
#include "rmsync_subs_step.h"
#include "rmsync_engine.h"
#include "rmsync_calendar.h"
#include "rmsync_synclog.h"
#include "rmsync_shm.h"

/* Active representatives without a subscription or with a renewal due (only when
 * RMSyncNotificationURL is set: the runner publishes it in rmsync.settings), and subscriptions
 * of representatives that stopped syncing; minus those whose subscription call failed in the
 * last minute. One FULL JOIN: the representatives view is evaluated once per call (it was twice,
 * 10,000 rows each), the URL test runs once (an InitPlan, not a call per row). The error test is
 * NOT IN, a hashed subplan run once per call over the small partial index
 * sync_log_subs_error_idx: as NOT EXISTS, a plan cached while sync_log was still empty (the
 * start of an initial sync) re-read the whole log once per representative, 4-16 s a call at
 * 10,000. */
const char rmsync_subs_pending_sql[] =
    "SELECT coalesce(r.representative_id, s.representative_id)"
    "  FROM (SELECT representative_id FROM rmsync.representatives WHERE sync_active) r"
    "  FULL JOIN rmsync.subscription s ON s.representative_id = r.representative_id"
    " WHERE (r.representative_id IS NULL"
    "        OR ((SELECT rmsync.setting('notification_url')) IS NOT NULL"
    "            AND (s.subscription_id IS NULL OR s.expires_at IS NULL"
    "                 OR now() >= coalesce(s.renewed_at, s.created_at)"
    "                             + (s.expires_at - coalesce(s.renewed_at, s.created_at)) / 2)))"
    "   AND coalesce(r.representative_id, s.representative_id) NOT IN"
    "       (SELECT l.representative_id FROM rmsync.sync_log l"
    "         WHERE l.action = 'subscription' AND l.level = 'error'"
    "           AND l.at > now() - interval '60 seconds' AND l.representative_id IS NOT NULL)";

static void subs_env(rmsync_subs_env_t *env, rmsync_rep_ctx_t *ctx)
{
    *env = (rmsync_subs_env_t){
        .settings = ctx->settings, .graph = ctx->graph, .db = ctx->db, .synclog = ctx->synclog,
        .rep_id = ctx->rep_id, .user_id = ctx->user_id, .pool = ctx->pool,
        .calendar_id = ctx->calendar_id,
    };
}

static void count_subs(rmsync_rep_ctx_t *ctx, int out)
{
    if (ctx->shm && (out & RMSYNC_SUBS_CREATED)) {
        rmsync_shm_counter_inc(ctx->shm, RMSYNC_CTR_SUBSCRIPTIONS_CREATED);
    }
    if (ctx->shm && (out & RMSYNC_SUBS_RENEWED)) {
        rmsync_shm_counter_inc(ctx->shm, RMSYNC_CTR_SUBSCRIPTIONS_RENEWED);
    }
}

apr_status_t rmsync_subs_lifecycle(rmsync_rep_ctx_t *ctx, const char *event, const char *sub_id)
{
    rmsync_subs_env_t env;
    apr_status_t rv = APR_SUCCESS;
    int out = 0;

    subs_env(&env, ctx);
    if (!strcmp(event, "reauthorizationRequired")) {
        rv = rmsync_subs_reauthorize(&env, sub_id, &out);
    }
    else if (!strcmp(event, "subscriptionRemoved")) {
        rv = rmsync_subs_recreate(&env, sub_id, &out);
        /* Changes made while it was gone were never notified. */
        rmsync_engine_want_delta(ctx);
    }
    else if (!strcmp(event, "missed")) {
        rmsync_engine_want_delta(ctx);
    }
    if (out & RMSYNC_SUBS_CREATED) {
        rmsync_engine_want_delta(ctx);
    }
    count_subs(ctx, out);
    rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL, "lifecycle", NULL,
                   "lifecycle event %s for subscription %s%s", event, sub_id,
                   rv == APR_SUCCESS ? "" : " (handling failed, retried)");
    return rv;
}

static const rmsync_db_stmt_t url_stmts[] = {
    { "subs_url_set",
      "INSERT INTO rmsync.settings (key, value) VALUES ('notification_url', $1)"
      " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
      " WHERE rmsync.settings.value IS DISTINCT FROM EXCLUDED.value", 1 },
    { "subs_url_clear", "DELETE FROM rmsync.settings WHERE key = 'notification_url'", 0 },
};

/* Once per runner process: tell the pending query whether subscriptions are wanted at all. */
static volatile apr_uint32_t url_published;

static void publish_url(rmsync_rep_ctx_t *ctx)
{
    const char *url = ctx->settings->notification_url;
    apr_status_t rv;

    if (apr_atomic_read32(&url_published)) {
        return;
    }
    rv = rmsync_db_register(url_stmts, (int)(sizeof(url_stmts) / sizeof(url_stmts[0])));
    if (rv == APR_SUCCESS) {
        rv = url && *url
             ? rmsync_db_exec(ctx->db, ctx->pool, "subs_url_set", RMSYNC_DB_PARAMS(url), NULL)
             : rmsync_db_exec(ctx->db, ctx->pool, "subs_url_clear", RMSYNC_DB_NOPARAMS, NULL);
    }
    if (rv == APR_SUCCESS) {
        apr_atomic_set32(&url_published, 1);
    }
}

apr_status_t rmsync_subs_step(rmsync_rep_ctx_t *ctx)
{
    rmsync_subs_env_t env;
    apr_status_t rv;
    int out = 0;

    if ((rv = rmsync_subs_init()) != APR_SUCCESS) {
        return rv;
    }
    publish_url(ctx);
    subs_env(&env, ctx);
    if (ctx->active && !rmsync_calendar_ready(ctx)) {
        return APR_SUCCESS;   /* RMSyncCalendar's calendar not known yet: never the main one */
    }
    rv = ctx->active ? rmsync_subs_ensure(&env, &out, NULL) : rmsync_subs_remove(&env, &out);
    if (rv != APR_SUCCESS && !RMSYNC_DB_IS_DOWN(rv) && rv != RMSYNC_DB_ESQL
        && rv != RMSYNC_DB_ETIMEOUT) {
        rv = APR_SUCCESS;   /* a Graph failure: logged (sync log, back-off) by rmsync_subs */
    }
    if (out & RMSYNC_SUBS_CREATED) {
        /* Nothing was notified while no subscription was live: let delta catch up. */
        rmsync_engine_want_delta(ctx);
    }
    count_subs(ctx, out);
    return rv;
}
