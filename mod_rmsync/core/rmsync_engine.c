/* mod_rmsync, run by the sync runner: the sync engine: scheduler, worker threads, job steps
 * (see rmsync_engine.h).
 *
 * One control thread (this loop) and a pool of worker threads:
 *  - the control thread waits in poll() on the parent's cycle pipe, the control connection's
 *    socket (LISTEN rmsync) and a 1 s timer; it publishes the heartbeat, checks the gates
 *    (service state, SYNC_MASTER) and queues per-representative jobs: when their delta is due,
 *    when a step's pending query names them (on NOTIFY and every few seconds);
 *  - each worker has its own database connection and runs one job at a time: the steps of
 *    engine_steps[] in order for one representative, under an advisory lock.
 * A representative is never in two jobs at once (busy flag here, advisory lock across nodes).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include <apr_strings.h>
#include <apr_lib.h>
#include <apr_hash.h>
#include <apr_thread_proc.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>
#include <apr_atomic.h>
#include <curl/curl.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_engine.h"
#include "rmsync_calendar.h"
#include "rmsync_json.h"
#include "rmsync_apply.h"
#include "rmsync_delta.h"
#include "rmsync_requests.h"
#include "rmsync_queue.h"
#include "rmsync_subs_step.h"
#include "rmsync_synclog.h"
#include "rmsync_errors.h"
#include "rmsync_transfer.h"
#include "rmsync_categories.h"
#include "rmsync_calfields.h"
#include "rmsync_dbbudget.h"

/* ---- the job steps, in the order a job runs them --------------------------------------------- */
/* To add a step: one line here (name, function, pending query, NOTIFY payload, flags). */
static const rmsync_step_t engine_steps[] = {
    { "queue", rmsync_queue_step, rmsync_queue_pending_sql, "notification", RMSYNC_STEP_INACTIVE_TOO },
    { "calendar", rmsync_calendar_step, NULL, NULL, 0 },   /* issue 14: before what uses it */
    { "subscriptions", rmsync_subs_step, rmsync_subs_pending_sql, "rep_state", RMSYNC_STEP_INACTIVE_TOO },
    { "requests", rmsync_delta_requests_step, rmsync_delta_requests_sql, "request",
      RMSYNC_STEP_INACTIVE_TOO },
    /* settled deletions through the breaker (scheduled every second: engine_deletions_due) */
    { "deletions", rmsync_apply_deletions_step, NULL, NULL, 0 },
    { "timezone", rmsync_calfields_tz_step, NULL, NULL, 0 },  /* all-day events' zone */
    { "categories", rmsync_categories_step, NULL, NULL, 0 },   /* before delta: sees want_initial */
    { "delta", rmsync_delta_step, NULL, NULL, 0 },
    { "transfer", rmsync_transfer_step, RMSYNC_TRANSFER_PENDING_SQL, NULL, 0 },
};

#define N_STEPS ((int)(sizeof(engine_steps) / sizeof(engine_steps[0])))

/* Hooks for events that are not linked (the category rule): one line each. */
static rmsync_unlinked_fn *const engine_unlinked_hooks[] = {
    rmsync_transfer_unlinked_event,
    NULL
};

#define GATE_CHECK_S     2     /* gate state polled this often (logged once per cycle) */
#define PENDING_SCAN_S   5     /* step pending queries without a NOTIFY */
#define REPS_PUBLISH_S   10    /* representative list -> shm slots */
/* ... and at most this often on rep_state NOTIFYs: each representative's first job inserts its
 * row (a NOTIFY), so Sync Active for 10,000 would otherwise re-read all 10,000 per NOTIFY */
#define REPS_WAKE_MS     1000
#define STEP_WAKE_MS     1000  /* a step's pending scan on a NOTIFY other than its urgent ones */
#define ERROR_REPEAT_S   3600  /* the same representative error is logged once an hour */
#define ADMIN_LOG_COPY_S 5     /* admin actions -> RMSyncLogFile without a NOTIFY */
#define NODE_BEAT_S      RMSYNC_NODE_BEAT_S   /* this node's row in rmsync.node */
#define HOUSEKEEPING_FIRST_S  10                /* the first retention pass after the start */
#define HOUSEKEEPING_EVERY_S  86400             /* then daily */
#define HOUSEKEEPING_STEP     5000              /* rows a table per step (one step a tick) */
#define RMSYNC_KEEP_DONE      "2 days"              /* closed queue items and requests */

/* ---- statements ------------------------------------------------------------------------------ */

static const rmsync_db_stmt_t engine_stmts[] = {
    { "engine_settings_upsert",
      "INSERT INTO rmsync.settings (key, value) VALUES ('master_user', $1), "
      "('permission_set', $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", 2 },
    { "engine_gate",
      "SELECT rmsync.master_user_state() AS master, "
      "       coalesce((SELECT running FROM rmsync.service_state WHERE id = 1), true) "
      "       AS running", 0 },
    { "engine_expand_all",
      "WITH a AS (UPDATE rmsync.request SET state = 'done', done_at = now(), "
      "                  result = 'expanded into one request per representative' "
      "            WHERE state = 'pending' AND kind = 'initial_sync_all' RETURNING requested_by) "
      "INSERT INTO rmsync.request (kind, representative_id, requested_by) "
      "SELECT 'initial_sync', r.representative_id, (SELECT max(requested_by) FROM a) "
      "  FROM rmsync.representatives r WHERE r.sync_active AND EXISTS (SELECT 1 FROM a)", 0 },
    /* due once a cycle has passed (less 0.3 s: the 1 s scan would otherwise add a second) */
    { "engine_due",
      "SELECT r.representative_id FROM rmsync.representatives r "
      "  LEFT JOIN rmsync.rep_state s ON s.representative_id = r.representative_id "
      " WHERE r.sync_active "
      "   AND (s.last_attempt_at IS NULL "
      "        OR s.last_attempt_at <= now() - make_interval(secs => $1::int - 0.3) "
      "        OR (s.round_kind IS NOT NULL AND (s.last_error_at IS NULL "
      "            OR s.last_error_at <= now() - make_interval(secs => least($1::int, 30)))))", 1 },
    /* hash joins, no per-representative subplans: at 10,000 those (the view's linked_count, a
     * subscription lookup) cost 10,000 index probes each and pushed the estimate over
     * jit_above_cost, so every call also paid for JIT compilation */
    { "engine_reps_list",
      "SELECT r.representative_id, r.mailbox, r.sync_active, r.held_by_breaker, "
      "       (extract(epoch FROM r.last_success_at) * 1000000)::bigint AS last_success, "
      "       r.last_error, (extract(epoch FROM r.last_error_at) * 1000000)::bigint AS error_at, "
      "       coalesce(l.n, 0) AS linked_count, r.round_kind, "
      "       (extract(epoch FROM s.expires_at) * 1000000)::bigint AS sub_expiry "
      "  FROM rmsync.representatives r "
      "  LEFT JOIN (SELECT representative_id, count(*) AS n FROM rmsync.event_link "
      "              GROUP BY representative_id) l ON l.representative_id = r.representative_id "
      "  LEFT JOIN rmsync.subscription s ON s.representative_id = r.representative_id "
      " ORDER BY r.representative_id", 0 },
    { "engine_rep_load",
      "SELECT b.representative_id, coalesce(v.mailbox, s.mailbox, b.email) AS mailbox, "
      "       coalesce(s.graph_user_id, v.mailbox, s.mailbox, b.email) AS user_id, "
      "       (v.representative_id IS NOT NULL AND v.sync_active) AS active, "
      "       coalesce(s.held_by_breaker, false) AS held "
      "  FROM crm.business_representative b "
      "  LEFT JOIN rmsync.representatives v ON v.representative_id = b.representative_id "
      "  LEFT JOIN rmsync.rep_state s ON s.representative_id = b.representative_id "
      " WHERE b.representative_id = $1", 1 },
    { "engine_rep_error",
      "WITH old AS (SELECT last_error, last_error_at FROM rmsync.rep_state "
      "              WHERE representative_id = $1 FOR UPDATE) "
      "UPDATE rmsync.rep_state s SET last_error = $2, last_error_at = now() FROM old "
      " WHERE s.representative_id = $1 "
      "RETURNING (old.last_error IS NOT DISTINCT FROM $2 "
      "           AND old.last_error_at > now() - make_interval(secs => $3::int)) AS repeated", 3 },
    { "engine_rep_item_error",
      "UPDATE rmsync.rep_state SET last_error = $2, last_error_at = now() "
      " WHERE representative_id = $1", 2 },
    { "engine_deletions_due", rmsync_apply_deletions_due_sql, 1 },
    /* an appointment an admin unlinked: who and when; noted once per Outlook state ($3) */
    { "engine_unlinked_memory",
      "WITH o AS (SELECT unlinked_by, unlinked_at, activity_no, noted_change_key "
      "             FROM rmsync.unlinked_event WHERE representative_id = $1 AND event_id = $2 "
      "              FOR UPDATE), "
      "u AS (UPDATE rmsync.unlinked_event e SET noted_change_key = $3 FROM o "
      "       WHERE e.representative_id = $1 AND e.event_id = $2 "
      "         AND o.noted_change_key IS DISTINCT FROM $3 RETURNING 1) "
      "SELECT o.unlinked_by, "
      "       to_char(o.unlinked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), "
      "       o.activity_no, (o.noted_change_key IS DISTINCT FROM $3) AS note FROM o", 3 },
    /* this node's heartbeat row (one statement: one DB wait at most); rows silent for a day
     * (nodes taken out of service) are dropped by whichever node beats */
    { "engine_node_beat",
      "WITH gone AS (DELETE FROM rmsync.node WHERE last_beat < now() - interval '1 day' "
      "                AND node_id <> $1) "
      "INSERT INTO rmsync.node (node_id, pid, generation, started_at, last_beat, state, "
      "                         working_on) "
      "VALUES ($1, $2::int, $3::bigint, to_timestamp($4::bigint / 1000000.0), now(), $5, $6) "
      "ON CONFLICT (node_id) DO UPDATE SET pid = EXCLUDED.pid, generation = EXCLUDED.generation, "
      "  started_at = EXCLUDED.started_at, last_beat = now(), state = EXCLUDED.state, "
      "  working_on = EXCLUDED.working_on", 6 },
    /* a runner that ends normally says so: its node is listed as stopped, without the warning
     * a silent (killed, hung) node gets */
    { "engine_node_stopped",
      "UPDATE rmsync.node SET state = 'stopped', working_on = NULL, last_beat = now() "
      " WHERE node_id = $1 AND pid = $2::int", 2 },
    { "engine_queue_depth",
      "SELECT count(*) FROM rmsync.notification WHERE state IN ('pending', 'processing')", 0 },
    /* retention: one bounded step (at most $1 rows of each table; sync log rows older than
     * $2 days), see housekeeping() */
    { "engine_housekeeping",
      "SELECT rmsync.housekeeping_step(make_interval(days => $2::int), interval '"
      RMSYNC_KEEP_DONE "', $1::int)", 2 },
};

/* ---- the engine ---------------------------------------------------------------------------- */

typedef struct rep_entry_t {
    const char *rep_id;
    int queued;
    int busy;
    int want_delta;
} rep_entry_t;

typedef struct worker_t {
    struct rmsync_engine_t *eng;
    apr_pool_t *pool;              /* own allocator: only this thread allocates from it */
    rmsync_db_t *db;
    apr_thread_t *thread;
    rmsync_delta_fetcher_t *fetcher;   /* the next delta page while this worker writes one */
    int index;
} worker_t;

typedef struct step_sql_t {
    const rmsync_step_t *step;
    const char *stmt;              /* registered statement name, or NULL */
    apr_time_t last;               /* control thread: its last scan */
    int woke;                      /* a NOTIFY for it waits for STEP_WAKE_MS (coalesced) */
} step_sql_t;

struct rmsync_engine_t {
    apr_pool_t *pool;
    rmsync_engine_env_t *env;
    const rmsync_settings_t *s;
    rmsync_graph_t *graph;
    rmsync_synclog_t *synclog;
    rmsync_db_t *ctl;
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *cond;
    apr_hash_t *reps;              /* rep_id -> rep_entry_t (under mutex) */
    apr_array_header_t *queue;     /* of rep_entry_t * (under mutex) */
    worker_t *workers;
    int nworkers;
    int running_jobs;              /* under mutex */
    int paused;                    /* under mutex: gates closed, queued jobs wait */
    volatile apr_uint32_t stop;
    apr_array_header_t *step_sqls; /* of step_sql_t */
    /* control thread only */
    int settings_done;
    int gate_ok;                   /* -1 unknown */
    int reps_woke, cat_woke;       /* a rep_state NOTIFY not acted on yet (REPS_WAKE_MS) */
    apr_time_t last_gate_check, last_gate_log, last_pending_scan, last_reps_publish, last_due;
    apr_time_t last_deletions_due, last_cat_reset, last_admin_copy, last_node_beat, started;
    apr_time_t next_housekeeping;  /* the next retention step is due */
    apr_int64_t housekeeping_removed; /* rows removed so far by this retention pass */
    char activity[128];            /* the last runner_state text (for rmsync.node) */
    rmsync_graph_stats_t gstats;
};

int rmsync_engine_has_unlinked_hooks(void)
{
    return engine_unlinked_hooks[0] != NULL;
}

/* An appointment an admin unlinked (Unlink, or Reject of a breaker hold) is never linked
 * again by a hook (the master category rule); only an explicit link (the linking API) forgets
 * it (trigger rmsync_forget_unlinked). 1: remembered (logged once per Outlook state). */
static int unlinked_by_admin(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev)
{
    const char *name = ctx->settings->category_name, *ck = ev->change_key ? ev->change_key : "";
    rmsync_db_result_t *res;
    const char *v;

    /* only what the category rule could link costs a query */
    if (!ev->id || !name || !*name || !ev->categories
        || !rmsync_categories_contains(ev->categories, name)) {
        return 0;
    }
    if (rmsync_db_exec(ctx->db, ctx->pool, "engine_unlinked_memory",
                       RMSYNC_DB_PARAMS(ctx->rep_id, ev->id, ck), &res) != APR_SUCCESS
        || res->nrows != 1) {
        return 0;
    }
    if ((v = rmsync_db_value(res, 0, 3)) && v[0] == 't') {
        v = rmsync_db_value(res, 0, 2);
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id,
                       v ? apr_atoi64(v) : 0, ev->id, "skip", NULL,
                       "not linked again: unlinked by %s at %s (only an explicit link through "
                       "the linking API links it again)", rmsync_db_value(res, 0, 0),
                       rmsync_db_value(res, 0, 1));
    }
    return 1;
}

apr_status_t rmsync_engine_unlinked_event(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev)
{
    apr_size_t i;
    apr_status_t rv = APR_SUCCESS;

    if (ev && !ev->removed && unlinked_by_admin(ctx, ev)) {
        return APR_SUCCESS;
    }
    for (i = 0; i < sizeof(engine_unlinked_hooks) / sizeof(engine_unlinked_hooks[0]); ++i) {
        if (engine_unlinked_hooks[i]) {
            apr_status_t r = engine_unlinked_hooks[i](ctx, ev);
            if (r != APR_SUCCESS && rv == APR_SUCCESS) rv = r;
        }
    }
    return rv;
}

void rmsync_engine_want_delta(rmsync_rep_ctx_t *ctx)
{
    ctx->want_delta = 1;
}

int rmsync_engine_stopping(const rmsync_rep_ctx_t *ctx)
{
    int paused = 0;

    if (ctx->stop && *ctx->stop) {
        return 1;
    }
    /* The gates closed while this job ran (service stopped, SYNC_MASTER locked): stop between
     * items and steps too, so "stopped" means nothing more is applied; all steps resume. */
    if (ctx->engine) {
        apr_thread_mutex_lock(ctx->engine->mutex);
        paused = ctx->engine->paused;
        apr_thread_mutex_unlock(ctx->engine->mutex);
    }
    return paused;
}

void rmsync_engine_count(rmsync_rep_ctx_t *ctx, rmsync_counter_e c, apr_uint32_t n)
{
    if (c == RMSYNC_CTR_LINKS_CREATED) {
        ctx->links_made += n;           /* a delta pass's set of linked ids is stale now */
    }
    if (ctx->shm && n) {
        rmsync_shm_counter_add(ctx->shm, c, n);
    }
}

static apr_global_mutex_t *ctx_mutex(rmsync_rep_ctx_t *ctx)
{
    return ctx->engine ? ctx->engine->env->mutex : NULL;
}

/* The representative's shm slot as it is, or a fresh one naming it; 0 without shm. */
static int rep_slot(rmsync_rep_ctx_t *ctx, rmsync_shm_rep_t *slot)
{
    if (!ctx->shm) return 0;
    if (rmsync_shm_rep_get(ctx->shm, ctx_mutex(ctx), ctx->rep_id, slot) != APR_SUCCESS) {
        memset(slot, 0, sizeof(*slot));
        rmsync_shm_strcpy(slot->representative_id, sizeof(slot->representative_id), ctx->rep_id);
        rmsync_shm_strcpy(slot->mailbox, sizeof(slot->mailbox), ctx->mailbox);
    }
    return 1;
}

void rmsync_engine_rep_state(rmsync_rep_ctx_t *ctx, rmsync_rep_state_e state)
{
    rmsync_shm_rep_t slot;
    if (!rep_slot(ctx, &slot)) return;
    slot.state = state;
    rmsync_shm_rep_put(ctx->shm, ctx_mutex(ctx), &slot, NULL);
}

static void shm_rep_error(rmsync_rep_ctx_t *ctx, const char *msg)
{
    rmsync_shm_rep_t slot;
    if (!rep_slot(ctx, &slot)) return;
    rmsync_shm_strcpy(slot.last_error, sizeof(slot.last_error), msg);
    slot.last_error_at = apr_time_now();
    rmsync_shm_rep_put(ctx->shm, ctx_mutex(ctx), &slot, NULL);
}

void rmsync_engine_rep_error(rmsync_rep_ctx_t *ctx, const char *action, const char *event_id,
                             const char *request_id, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    rmsync_db_result_t *res = NULL;
    int repeated = 0;

    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctx->errors++;
    if (ctx->db && rmsync_db_exec(ctx->db, ctx->pool, "engine_rep_error",
                                  RMSYNC_DB_PARAMS(ctx->rep_id, msg,
                                                   apr_itoa(ctx->pool, ERROR_REPEAT_S)), &res)
                   == APR_SUCCESS
        && res->nrows == 1) {
        const char *v = rmsync_db_value(res, 0, 0);
        repeated = v && v[0] == 't';
    }
    shm_rep_error(ctx, msg);
    rmsync_engine_count(ctx, RMSYNC_CTR_ERRORS, 1);
    /* a repeat within the hour only counts on the existing log row (rmsync_synclog_write
     * aggregates identical errors: "x 30 since 08:00") */
    (void)repeated;
    rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_ERR, ctx->rep_id, 0, event_id,
                   action, request_id, "%s", msg);
}

void rmsync_engine_item_error(rmsync_rep_ctx_t *ctx, long long activity_no, const char *event_id,
                              const char *request_id, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctx->errors++;
    if (ctx->db) {
        rmsync_db_exec(ctx->db, ctx->pool, "engine_rep_item_error",
                       RMSYNC_DB_PARAMS(ctx->rep_id, msg), NULL);
    }
    shm_rep_error(ctx, msg);
    rmsync_engine_count(ctx, RMSYNC_CTR_ERRORS, 1);
    rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_ERR, ctx->rep_id, activity_no, event_id,
                   "error", request_id, "%s", msg);
}

void rmsync_engine_graph_error(rmsync_rep_ctx_t *ctx, const char *action, const char *event_id,
                               apr_status_t rv, const rmsync_graph_result_t *res)
{
    const char *aad = NULL;

    if (rv == RMSYNC_HTTP_EABORTED) {
        return;                                     /* stopping: not an error */
    }
    if (rv == RMSYNC_GRAPH_AUTH && res) {
        /* the token request was refused: the AADSTS code names the cause, and the runner
         * publishes it for the admin's health banner (cleared by the next token obtained) */
        aad = rmsync_error_aadsts(ctx->pool, res->error_message);
        if (aad || res->error_code) {
            rmsync_shm_runner_token_error(ctx->shm, ctx_mutex(ctx), apr_pstrcat(ctx->pool,
                aad ? aad : "", aad && res->error_code ? " " : "",
                res->error_code ? res->error_code : "", NULL), apr_time_now());
        }
    }
    rmsync_engine_rep_error(ctx, action, event_id, res ? res->request_id : NULL,
                            RMSYNC_LOGNO(00420) "Graph %s for %s failed: %s%s%s%s%s%s", action,
                            ctx->mailbox, rmsync_graph_strerror(ctx->pool, rv),
                            res && res->http_status ? " (HTTP " : "",
                            res && res->http_status ? apr_itoa(ctx->pool, res->http_status) : "",
                            res && res->error_code ? apr_pstrcat(ctx->pool, " ", res->error_code,
                                                                 NULL) : "",
                            aad ? apr_pstrcat(ctx->pool, " ", aad, NULL) : "",
                            res && res->http_status ? ")" : "");
}

/* ---- jobs ------------------------------------------------------------------------------------ */

static apr_status_t ctx_load(rmsync_rep_ctx_t *ctx, const char *rep_id)
{
    rmsync_db_result_t *res;
    apr_status_t rv;
    const char *v;

    rv = rmsync_db_exec(ctx->db, ctx->pool, "engine_rep_load", RMSYNC_DB_PARAMS(rep_id), &res);
    if (rv != APR_SUCCESS) return rv;
    if (res->nrows != 1) return APR_NOTFOUND;
    ctx->rep_id = rmsync_db_value(res, 0, 0);
    ctx->mailbox = rmsync_db_value(res, 0, 1) ? rmsync_db_value(res, 0, 1) : "";
    ctx->user_id = rmsync_db_value(res, 0, 2) ? rmsync_db_value(res, 0, 2) : ctx->mailbox;
    ctx->active = (v = rmsync_db_value(res, 0, 3)) && v[0] == 't' && *ctx->mailbox;
    ctx->held = (v = rmsync_db_value(res, 0, 4)) && v[0] == 't';
    return APR_SUCCESS;
}

static apr_status_t register_statements(void)
{
    apr_status_t rv;
    if ((rv = rmsync_db_register(engine_stmts,
                                 (int)(sizeof(engine_stmts) / sizeof(engine_stmts[0]))))
        != APR_SUCCESS
        || (rv = rmsync_apply_register()) != APR_SUCCESS
        || (rv = rmsync_delta_register()) != APR_SUCCESS
        || (rv = rmsync_requests_register()) != APR_SUCCESS
        || (rv = rmsync_synclog_register()) != APR_SUCCESS) {
        return rv;
    }
    return APR_SUCCESS;
}

static void publish_rep_done(rmsync_rep_ctx_t *ctx, int ok)
{
    rmsync_shm_rep_t slot;
    if (!rep_slot(ctx, &slot)) return;
    rmsync_shm_strcpy(slot.mailbox, sizeof(slot.mailbox), ctx->mailbox);
    slot.held = ctx->held ? 1 : 0;
    if (!ctx->active) {
        slot.state = RMSYNC_REP_INACTIVE;
    }
    else if (ctx->held) {
        slot.state = RMSYNC_REP_HELD;
    }
    else if (ok) {
        slot.state = RMSYNC_REP_OK;
        slot.last_success = apr_time_now();
        slot.last_error[0] = '\0';
    }
    else {
        slot.state = RMSYNC_REP_ERROR;
    }
    if (ctx->lag_ms) {
        slot.lag_ms = ctx->lag_ms;
    }
    rmsync_shm_rep_put(ctx->shm, ctx_mutex(ctx), &slot, NULL);
}

/* Graph allows 4 requests at once per mailbox, counted over every client. The Graph client's
 * slots count one process only; several representatives may share a mailbox and several nodes
 * may work them. A job has at most 2 requests in flight (its call + the next delta page being
 * fetched), so a job holding one of <per-mailbox>/2 advisory locks of its mailbox keeps all
 * nodes together within the limit. Waits for a free one; NULL key: no mailbox. */
static apr_status_t mailbox_slot(rmsync_rep_ctx_t *ctx, const char **pkey)
{
    int n = (ctx->settings->graph_per_mailbox > 0 ? ctx->settings->graph_per_mailbox : 4) / 2, k, got;
    char *m;
    const char **keys;
    apr_status_t rv;

    *pkey = NULL;
    if (n < 1) {
        n = 1;
    }
    if (!ctx->mailbox || !*ctx->mailbox) {
        return APR_SUCCESS;
    }
    m = apr_pstrdup(ctx->pool, ctx->mailbox);
    for (k = 0; m[k]; k++) {
        m[k] = (char)apr_tolower(m[k]);
    }
    /* the keys once: a wait may loop for a while in the job's pool */
    keys = apr_palloc(ctx->pool, n * sizeof(*keys));
    for (k = 0; k < n; k++) {
        keys[k] = apr_psprintf(ctx->pool, "mbox:%s:%d", m, k);
    }
    while (!rmsync_engine_stopping(ctx)) {
        for (k = 0; k < n; k++) {
            if ((rv = rmsync_db_try_lock(ctx->db, keys[k], &got)) != APR_SUCCESS) {
                return rv;
            }
            if (got) {
                *pkey = keys[k];
                return APR_SUCCESS;
            }
        }
        apr_sleep(apr_time_from_msec(50));
    }
    return APR_EINTR;
}

apr_status_t rmsync_engine_run_job(rmsync_rep_ctx_t *ctx)
{
    const char *lock_key = apr_pstrcat(ctx->pool, "rep:", ctx->rep_id, NULL), *mbox_key = NULL;
    apr_status_t rv, first = APR_SUCCESS;
    int acquired = 0, released, i, errors_before = ctx->errors;

    if ((rv = rmsync_db_try_lock(ctx->db, lock_key, &acquired)) != APR_SUCCESS) {
        return rv;
    }
    if (!acquired) {
        rmsync_log(RMSYNC_LOG_DEBUG, 0, "rep %s: another runner holds it, skipped", ctx->rep_id);
        return APR_SUCCESS;
    }
    if ((rv = mailbox_slot(ctx, &mbox_key)) != APR_SUCCESS) {
        rmsync_db_unlock(ctx->db, lock_key, &released);
        return rv == APR_EINTR ? APR_SUCCESS : rv;
    }
    for (i = 0; i < N_STEPS && !rmsync_engine_stopping(ctx); ++i) {
        const rmsync_step_t *st = &engine_steps[i];
        if (!ctx->active && !(st->flags & RMSYNC_STEP_INACTIVE_TOO)) {
            continue;
        }
        rv = st->fn(ctx);
        if (rv != APR_SUCCESS && rv != APR_EINTR && rv != RMSYNC_HTTP_EABORTED) {
            if (first == APR_SUCCESS) first = rv;
            if (RMSYNC_DB_IS_DOWN(rv) || rv == RMSYNC_DB_ETIMEOUT) {
                rmsync_log(RMSYNC_LOG_WARNING, rv, RMSYNC_LOGNO(00421) "rep %s: step %s: "
                           "database unavailable (%s); the job is retried", ctx->rep_id,
                           st->name, rmsync_db_errmsg(ctx->db));
                break;
            }
            if (ctx->errors == errors_before) {
                /* the step did not say why itself */
                rmsync_engine_rep_error(ctx, st->name, NULL, NULL, RMSYNC_LOGNO(00422)
                                        "step %s failed: %s", st->name,
                                        rv == RMSYNC_DB_ESQL ? rmsync_db_errmsg(ctx->db)
                                        : rmsync_graph_strerror(ctx->pool, rv));
            }
        }
    }
    rmsync_db_rollback(ctx->db);                    /* nothing may stay open */
    if (mbox_key) rmsync_db_unlock(ctx->db, mbox_key, &released);
    rmsync_db_unlock(ctx->db, lock_key, &released);
    publish_rep_done(ctx, first == APR_SUCCESS && ctx->errors == errors_before);
    if (ctx->applied) {
        rmsync_engine_count(ctx, RMSYNC_CTR_EVENTS_APPLIED, (apr_uint32_t)ctx->applied);
    }
    return first;
}

static void worker_job(worker_t *w, rep_entry_t *e, int want_delta)
{
    rmsync_engine_t *eng = w->eng;
    rmsync_rep_ctx_t *ctx;
    apr_pool_t *jp;
    apr_status_t rv;

    apr_pool_create(&jp, w->pool);
    ctx = apr_pcalloc(jp, sizeof(*ctx));
    ctx->settings = eng->s;
    ctx->graph = eng->graph;
    ctx->db = w->db;
    ctx->pool = jp;
    ctx->synclog = eng->synclog;
    ctx->engine = eng;
    ctx->shm = eng->env->shm;
    ctx->stop = &eng->stop;
    ctx->want_delta = want_delta;
    ctx->fetcher = w->fetcher;
    rv = ctx_load(ctx, e->rep_id);
    if (rv == APR_SUCCESS) {
        rv = rmsync_engine_run_job(ctx);
    }
    else if (rv != APR_NOTFOUND) {
        rmsync_log(RMSYNC_LOG_WARNING, rv, RMSYNC_LOGNO(00423) "rep %s: cannot load the "
                   "representative: %s", e->rep_id, rmsync_db_errmsg(w->db));
    }
    if (RMSYNC_DB_IS_DOWN(rv)) {
        apr_sleep(apr_time_from_msec(500));        /* do not spin on a dead database */
    }
    apr_pool_destroy(jp);
}

static void *APR_THREAD_FUNC worker_main(apr_thread_t *thread, void *data)
{
    worker_t *w = data;
    rmsync_engine_t *eng = w->eng;

    for (;;) {
        rep_entry_t *e = NULL;
        int i, want_delta = 0;

        apr_thread_mutex_lock(eng->mutex);
        while (!eng->stop) {
            for (i = 0; !eng->paused && i < eng->queue->nelts; ++i) {
                rep_entry_t *c = RMSYNC_ARRAY_IDX(eng->queue, i, rep_entry_t *);
                if (!c->busy) {
                    e = c;
                    memmove(eng->queue->elts + (apr_size_t)i * sizeof(rep_entry_t *),
                            eng->queue->elts + (apr_size_t)(i + 1) * sizeof(rep_entry_t *),
                            (apr_size_t)(eng->queue->nelts - i - 1) * sizeof(rep_entry_t *));
                    --eng->queue->nelts;
                    break;
                }
            }
            if (e) break;
            apr_thread_cond_wait(eng->cond, eng->mutex);
        }
        if (!e) {
            apr_thread_mutex_unlock(eng->mutex);
            break;
        }
        e->queued = 0;
        e->busy = 1;
        want_delta = e->want_delta;
        e->want_delta = 0;
        eng->running_jobs++;
        apr_thread_mutex_unlock(eng->mutex);

        worker_job(w, e, want_delta);

        apr_thread_mutex_lock(eng->mutex);
        e->busy = 0;
        eng->running_jobs--;
        if (e->queued) {
            apr_thread_cond_broadcast(eng->cond);  /* it was asked for again meanwhile */
        }
        apr_thread_mutex_unlock(eng->mutex);
    }
    rmsync_http_thread_done();
    apr_thread_exit(thread, APR_SUCCESS);
    return NULL;
}

/* Queue a job for rep_id (control thread). */
static void enqueue(rmsync_engine_t *eng, const char *rep_id, int want_delta)
{
    rep_entry_t *e;

    apr_thread_mutex_lock(eng->mutex);
    e = apr_hash_get(eng->reps, rep_id, APR_HASH_KEY_STRING);
    if (!e) {
        e = apr_pcalloc(eng->pool, sizeof(*e));
        e->rep_id = apr_pstrdup(eng->pool, rep_id);
        apr_hash_set(eng->reps, e->rep_id, APR_HASH_KEY_STRING, e);
    }
    if (want_delta) e->want_delta = 1;
    if (!e->queued) {
        e->queued = 1;
        APR_ARRAY_PUSH(eng->queue, rep_entry_t *) = e;
        apr_thread_cond_signal(eng->cond);
    }
    apr_thread_mutex_unlock(eng->mutex);
}

/* ---- control thread ------------------------------------------------------------------------ */

static void runner_state(rmsync_engine_t *eng, int state, const char *activity)
{
    if (activity) {
        apr_cpystrn(eng->activity, activity, sizeof(eng->activity));   /* for the next beat */
    }
    rmsync_shm_runner_heartbeat(eng->env->shm, eng->env->mutex, apr_time_now(), state, activity);
}

static void publish_graph_stats(rmsync_engine_t *eng)
{
    rmsync_graph_stats_t n;
    rmsync_shm_t *shm = eng->env->shm;
    if (!shm || !eng->graph) return;
    rmsync_graph_get_stats(eng->graph, &n);
#define ADD(ctr, field) rmsync_shm_counter_add(shm, ctr, n.field - eng->gstats.field)
    ADD(RMSYNC_CTR_GRAPH_REQUESTS, requests);
    ADD(RMSYNC_CTR_GRAPH_2XX, status_2xx);
    ADD(RMSYNC_CTR_GRAPH_4XX, status_4xx);
    ADD(RMSYNC_CTR_GRAPH_5XX, status_5xx);
    ADD(RMSYNC_CTR_GRAPH_429, throttled);
    ADD(RMSYNC_CTR_GRAPH_TRANSPORT_ERRORS, transport_errors);
    ADD(RMSYNC_CTR_TOKEN_REFRESHES, token_requests);
#undef ADD
    if (n.tokens_obtained != eng->gstats.tokens_obtained) {
        /* a token was obtained since: the secret / certificate works (again) */
        rmsync_shm_runner_token_error(shm, eng->env->mutex, NULL, apr_time_now());
    }
    eng->gstats = n;
}

/* Gates: service running and SYNC_MASTER ready. Logged once per cycle while closed. */
static void check_gates(rmsync_engine_t *eng, apr_pool_t *p, apr_time_t now, int force)
{
    rmsync_db_result_t *res;
    const char *master, *why = NULL;
    int running, ok;

    if (!force && eng->gate_ok >= 0
        && now - eng->last_gate_check < apr_time_from_sec(GATE_CHECK_S)) {
        return;
    }
    eng->last_gate_check = now;
    if (rmsync_db_exec(eng->ctl, p, "engine_gate", RMSYNC_DB_NOPARAMS, &res) != APR_SUCCESS
        || res->nrows != 1) {
        return;
    }
    master = rmsync_db_value(res, 0, 0) ? rmsync_db_value(res, 0, 0) : "missing";
    running = rmsync_db_value(res, 0, 1) && rmsync_db_value(res, 0, 1)[0] == 't';
    if (!running) {
        why = "the sync service is stopped (Calendar Sync Configuration: Start)";
    }
    else if (strcmp(master, "ready")) {
        why = apr_psprintf(p, RMSYNC_LOGNO(00430) "the sync user %s is %s: no sync work is done. "
                           "%s", eng->s->master_user, master,
                           !strcmp(master, "locked")
                           ? "Run sql/manualdeploy/UpdateSyncMasterUser.sql to unlock it, then "
                             "activate the user in the CRM."
                           : !strcmp(master, "inactive")
                           ? "Activate the user in the CRM (user administration)."
                           : "Create the user (the rmsync schema install does) and run "
                             "sql/manualdeploy/UpdateSyncMasterUser.sql.");
    }
    ok = why == NULL;
    if (ok != eng->gate_ok) {
        if (ok) {
            rmsync_log(RMSYNC_LOG_NOTICE, 0, "sync runner: gates open, syncing");
            rmsync_shm_runner_error(eng->env->shm, eng->env->mutex, NULL, now);
        }
        else if (running) {
            rmsync_log(RMSYNC_LOG_WARNING, 0, "%s", why);
        }
        else {
            rmsync_log(RMSYNC_LOG_NOTICE, 0, "sync runner: %s", why);
        }
        eng->last_gate_log = 0;
    }
    if (ok != eng->gate_ok) {
        /* jobs already queued wait while the gates are closed */
        apr_thread_mutex_lock(eng->mutex);
        eng->paused = !ok;
        if (ok) apr_thread_cond_broadcast(eng->cond);
        apr_thread_mutex_unlock(eng->mutex);
    }
    eng->gate_ok = ok;
    if (!ok) {
        apr_time_t every = apr_time_from_sec(eng->s->cycle_s > 0 ? eng->s->cycle_s : 300);
        runner_state(eng, RMSYNC_RUNNER_PAUSED, running ? "paused: SYNC_MASTER not usable"
                                                        : "paused: service stopped");
        if (running && (!eng->last_gate_log || now - eng->last_gate_log >= every)) {
            /* once per cycle: the log page shows why nothing syncs */
            eng->last_gate_log = now;
            rmsync_shm_runner_error(eng->env->shm, eng->env->mutex, why, now);
            rmsync_synclog(eng->synclog, eng->ctl, RMSYNC_LOG_ERR, NULL, 0, NULL, "gate", NULL,
                           "%s", why);
        }
    }
}

static void scan_reps(rmsync_engine_t *eng, apr_pool_t *p, const char *stmt,
                      const char *const *params, int want_delta)
{
    rmsync_db_result_t *res;
    int i;
    if (rmsync_db_exec(eng->ctl, p, stmt, params, &res) != APR_SUCCESS) {
        return;
    }
    for (i = 0; i < res->nrows; ++i) {
        const char *id = rmsync_db_value(res, i, 0);
        if (id && *id) enqueue(eng, id, want_delta);
    }
}

static void publish_reps(rmsync_engine_t *eng, apr_pool_t *p)
{
    rmsync_db_result_t *res;
    rmsync_shm_t *shm = eng->env->shm;
    int i;

    if (!shm || rmsync_db_exec(eng->ctl, p, "engine_reps_list", RMSYNC_DB_NOPARAMS, &res)
                != APR_SUCCESS) {
        return;
    }
    for (i = 0; i < res->nrows; ++i) {
        rmsync_shm_rep_t slot;
        const char *id = rmsync_db_value(res, i, 0), *v;
        int active = (v = rmsync_db_value(res, i, 2)) && v[0] == 't';
        if (!id) continue;
        if (rmsync_shm_rep_get(shm, eng->env->mutex, id, &slot) != APR_SUCCESS) {
            memset(&slot, 0, sizeof(slot));
            rmsync_shm_strcpy(slot.representative_id, sizeof(slot.representative_id), id);
            slot.state = RMSYNC_REP_IDLE;
        }
        rmsync_shm_strcpy(slot.mailbox, sizeof(slot.mailbox), rmsync_db_value(res, i, 1));
        slot.held = (v = rmsync_db_value(res, i, 3)) && v[0] == 't';
        if ((v = rmsync_db_value(res, i, 4))) slot.last_success = (apr_time_t)apr_atoi64(v);
        rmsync_shm_strcpy(slot.last_error, sizeof(slot.last_error), rmsync_db_value(res, i, 5));
        slot.last_error_at = (v = rmsync_db_value(res, i, 6)) ? (apr_time_t)apr_atoi64(v) : 0;
        slot.linked_count = (v = rmsync_db_value(res, i, 7)) ? (apr_uint32_t)apr_atoi64(v) : 0;
        /* 0 = no subscription (none yet, deleted, or no RMSyncNotificationURL) */
        slot.subscription_expiry = (v = rmsync_db_value(res, i, 9)) ? (apr_time_t)apr_atoi64(v)
                                                                     : 0;
        if (!active) slot.state = RMSYNC_REP_INACTIVE;
        else if (slot.held) slot.state = RMSYNC_REP_HELD;
        else if (slot.state == RMSYNC_REP_INACTIVE) slot.state = RMSYNC_REP_IDLE;
        rmsync_shm_rep_put(shm, eng->env->mutex, &slot, NULL);
    }
}

/* This node's row in rmsync.node: state and the representatives in a job right now. Runs on
 * the control connection every NODE_BEAT_S (after the scheduler, which reconnects it). */
static void node_beat(rmsync_engine_t *eng, apr_pool_t *p, apr_time_t now)
{
    apr_hash_index_t *hi;
    apr_array_header_t *busy = apr_array_make(p, 8, sizeof(const char *));
    const char *working;

    if (!eng->env->node_id || !eng->ctl || !rmsync_db_is_connected(eng->ctl)
        || now - eng->last_node_beat < apr_time_from_sec(NODE_BEAT_S)) {
        return;
    }
    eng->last_node_beat = now;
    if (eng->mutex) {
        apr_thread_mutex_lock(eng->mutex);
        for (hi = apr_hash_first(p, eng->reps); hi; hi = apr_hash_next(hi)) {
            rep_entry_t *e = apr_hash_this_val(hi);
            if (e->busy) {
                APR_ARRAY_PUSH(busy, const char *) = apr_pstrdup(p, e->rep_id);
            }
        }
        apr_thread_mutex_unlock(eng->mutex);
    }
    working = busy->nelts ? apr_array_pstrcat(p, busy, ' ') : NULL;
    rmsync_db_exec(eng->ctl, p, "engine_node_beat",
                   RMSYNC_DB_PARAMS(eng->env->node_id, apr_itoa(p, (int)getpid()),
                                    apr_psprintf(p, "%u", (unsigned)eng->env->generation),
                                    apr_psprintf(p, "%" APR_TIME_T_FMT, eng->started),
                                    eng->activity, working), NULL);
}

/* Retention (RMSyncLogRetention <days>, default 90; Off: none): sync log rows older than the
 * days, closed queue items and requests older than RMSYNC_KEEP_DONE (failed queue items: 30
 * days) are deleted once a day (the first pass shortly after the start), in steps of
 * HOUSEKEEPING_STEP rows a table, one step a control tick: the control thread stays
 * responsive however much a first pass after an upgrade finds, and no statement runs long.
 * Several nodes may do it at once (the deletes do not conflict). */
static void housekeeping(rmsync_engine_t *eng, apr_pool_t *p, apr_time_t now)
{
    rmsync_db_result_t *res = NULL;
    const char *v;
    apr_int64_t n;

    if (eng->s->log_retention_days <= 0 || !eng->ctl || !rmsync_db_is_connected(eng->ctl)
        || now < eng->next_housekeeping) {
        return;
    }
    if (rmsync_db_exec(eng->ctl, p, "engine_housekeeping",
                       RMSYNC_DB_PARAMS(apr_itoa(p, HOUSEKEEPING_STEP),
                                        apr_itoa(p, eng->s->log_retention_days)), &res)
        != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_WARNING, 0, RMSYNC_LOGNO(00473) "sync runner: retention "
                   "(rmsync.housekeeping_step) failed: %s; retrying in an hour",
                   rmsync_db_errmsg(eng->ctl));
        eng->next_housekeeping = now + apr_time_from_sec(3600);
        return;
    }
    v = res && res->nrows > 0 ? rmsync_db_value(res, 0, 0) : NULL;
    n = v ? apr_atoi64(v) : 0;
    eng->housekeeping_removed += n;
    if (n > 0) {
        return;                     /* more may be left: the next step at the next tick */
    }
    if (eng->housekeeping_removed > 0) {
        rmsync_log(RMSYNC_LOG_INFO, 0, RMSYNC_LOGNO(00472) "sync runner: retention removed %"
                   APR_INT64_T_FMT " rows (sync log older than %d days (RMSyncLogRetention), "
                   "closed queue items and requests older than " RMSYNC_KEEP_DONE ", failed "
                   "queue items older than 30 days)",
                   eng->housekeeping_removed, eng->s->log_retention_days);
    }
    eng->housekeeping_removed = 0;
    eng->next_housekeeping = now + apr_time_from_sec(HOUSEKEEPING_EVERY_S);
}

/* The scheduler: gates, then which representatives need a job. */
static void schedule(rmsync_engine_t *eng, apr_pool_t *p, apr_hash_t *woke, int tick)
{
    apr_time_t now = apr_time_now();
    int i, scan_all, cycle;

    if (!rmsync_db_is_connected(eng->ctl) && rmsync_db_connect(eng->ctl) != APR_SUCCESS) {
        runner_state(eng, RMSYNC_RUNNER_DB_DOWN, "waiting for the database");
        return;
    }
    if (!eng->settings_done) {
        if (rmsync_db_exec(eng->ctl, p, "engine_settings_upsert",
                           RMSYNC_DB_PARAMS(eng->s->master_user, eng->s->permission_set), NULL)
            != APR_SUCCESS) {
            rmsync_log(RMSYNC_LOG_WARNING, 0, RMSYNC_LOGNO(00431) "sync runner: cannot store "
                       "the configured names in rmsync.settings: %s", rmsync_db_errmsg(eng->ctl));
            runner_state(eng, RMSYNC_RUNNER_DB_DOWN, "waiting for the database");
            return;
        }
        eng->settings_done = 1;
        rmsync_dbbudget_check_server(eng->ctl, p, eng->s->db_pool_max);   /* once, logs only */
    }
    /* admin actions (written by worker processes) into the text log, also while stopped */
    if (now - eng->last_admin_copy >= apr_time_from_sec(ADMIN_LOG_COPY_S)
        || apr_hash_get(woke, "admin_log", APR_HASH_KEY_STRING)
        || apr_hash_get(woke, "*", APR_HASH_KEY_STRING)) {
        eng->last_admin_copy = now;
        rmsync_synclog_copy_admin(eng->synclog, eng->ctl, p);
    }
    if (!eng->graph) {
        runner_state(eng, RMSYNC_RUNNER_IDLE, "idle: no Graph credentials configured");
        return;
    }
    if (apr_hash_get(woke, "rep_state", APR_HASH_KEY_STRING)) {
        eng->cat_woke = eng->reps_woke = 1;
    }
    /* before the gates: a comeback while the service was stopped still re-checks categories */
    if (now - eng->last_cat_reset >= apr_time_from_sec(REPS_PUBLISH_S)
        || (eng->cat_woke && now - eng->last_cat_reset >= apr_time_from_msec(REPS_WAKE_MS))) {
        eng->last_cat_reset = now;
        eng->cat_woke = 0;
        rmsync_categories_reset_idle(eng->ctl, p);
    }
    check_gates(eng, p, now, tick || apr_hash_get(woke, "service", APR_HASH_KEY_STRING) != NULL);
    if (eng->gate_ok != 1) {
        return;
    }
    if (now - eng->last_reps_publish >= apr_time_from_sec(REPS_PUBLISH_S)
        || (eng->reps_woke && now - eng->last_reps_publish >= apr_time_from_msec(REPS_WAKE_MS))) {
        rmsync_db_result_t *res;
        eng->last_reps_publish = now;
        eng->reps_woke = 0;
        publish_reps(eng, p);
        if (eng->env->shm
            && rmsync_db_exec(eng->ctl, p, "engine_queue_depth", RMSYNC_DB_NOPARAMS, &res)
               == APR_SUCCESS && res->nrows == 1) {
            rmsync_shm_counter_set(eng->env->shm, RMSYNC_CTR_QUEUE_DEPTH,
                                   (apr_uint32_t)apr_atoi64(rmsync_db_value(res, 0, 0)));
        }
    }
    if (apr_hash_get(woke, "request", APR_HASH_KEY_STRING)) {
        rmsync_db_exec(eng->ctl, p, "engine_expand_all", RMSYNC_DB_NOPARAMS, NULL);
    }
    /* periodic delta: the due query reads every representative (10,000: ~25 ms), so it runs
     * every cycle/60 s, 1 to 5 s: a pass starts at most 5 s late on the default 300 s cycle */
    cycle = eng->s->cycle_s > 0 ? eng->s->cycle_s : 300;
    if (now - eng->last_due >= apr_time_from_sec(cycle < 60 ? 1 : cycle > 300 ? 5 : cycle / 60)
        || tick) {
        eng->last_due = now;
        scan_reps(eng, p, "engine_due", RMSYNC_DB_PARAMS(apr_itoa(p, cycle)), 0);
    }
    if (now - eng->last_deletions_due >= apr_time_from_sec(1) || tick) {
        eng->last_deletions_due = now;
        /* a settled deletion is carried out within a second, with no further notification */
        scan_reps(eng, p, "engine_deletions_due",
                  RMSYNC_DB_PARAMS(apr_itoa(p, eng->s->delete_settle_s)), 0);
    }
    scan_all = now - eng->last_pending_scan >= apr_time_from_sec(PENDING_SCAN_S);
    if (scan_all) {
        eng->last_pending_scan = now;
        rmsync_db_exec(eng->ctl, p, "engine_expand_all", RMSYNC_DB_NOPARAMS, NULL);
    }
    for (i = 0; i < eng->step_sqls->nelts; ++i) {
        step_sql_t *ss = &RMSYNC_ARRAY_IDX(eng->step_sqls, i, step_sql_t);
        int now_too = scan_all || apr_hash_get(woke, "*", APR_HASH_KEY_STRING);
        if ((ss->step->wake && apr_hash_get(woke, ss->step->wake, APR_HASH_KEY_STRING))
            || (!ss->step->wake && apr_hash_count(woke) > 0)) {
            if (ss->step->wake && (!strcmp(ss->step->wake, "notification")
                                   || !strcmp(ss->step->wake, "request"))) {
                now_too = 1;              /* Graph's notifications and admin requests: at once */
            }
            ss->woke = 1;
        }
        /* other NOTIFYs come in bursts (each representative's first job inserts its rep_state
         * row: Sync Active for 10,000 is 10,000 NOTIFYs); their scan reads every representative,
         * so it runs at most every STEP_WAKE_MS */
        if (now_too || (ss->woke && now - ss->last >= apr_time_from_msec(STEP_WAKE_MS))) {
            ss->woke = 0;
            ss->last = now;
            scan_reps(eng, p, ss->stmt, RMSYNC_DB_NOPARAMS, 0);
        }
    }
    {
        int busy;
        apr_thread_mutex_lock(eng->mutex);
        busy = eng->running_jobs;
        apr_thread_mutex_unlock(eng->mutex);
        runner_state(eng, busy ? RMSYNC_RUNNER_WORKING : RMSYNC_RUNNER_IDLE,
                     busy ? apr_psprintf(p, "syncing (%d job%s)", busy, busy == 1 ? "" : "s")
                          : "idle");
    }
}

static apr_status_t engine_init(rmsync_engine_t *eng)
{
    const rmsync_settings_t *s = eng->s;
    rmsync_graph_opts_t go;
    apr_status_t rv;
    int i;

    if ((rv = register_statements()) != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00432) "sync runner: statement registry");
        return rv;
    }
    /* the steps' pending queries become registered statements too */
    eng->step_sqls = apr_array_make(eng->pool, 8, sizeof(step_sql_t));
    for (i = 0; i < N_STEPS; ++i) {
        const rmsync_step_t *st = &engine_steps[i];
        if (st->pending_sql) {
            rmsync_db_stmt_t *stmt = apr_pcalloc(eng->pool, sizeof(*stmt));
            step_sql_t *ss = apr_array_push(eng->step_sqls);
            stmt->name = apr_psprintf(eng->pool, "engine_pending_%s", st->name);
            stmt->sql = st->pending_sql;
            stmt->nparams = 0;
            if ((rv = rmsync_db_register(stmt, 1)) != APR_SUCCESS) {
                rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00433) "sync runner: pending query "
                           "of step %s", st->name);
                return rv;
            }
            ss->step = st;
            ss->stmt = stmt->name;
        }
    }
    if ((rv = rmsync_synclog_create(&eng->synclog, eng->pool, s)) != APR_SUCCESS) {
        return rv;
    }
    rmsync_graph_opts_from_settings(&go, s);
    go.stop = &eng->stop;
    rmsync_json_use_arenas();           /* Graph's responses parsed into pools (no threads yet) */
    if (!s->tenant || !s->client_id || !(s->client_secret || s->client_key_pem)) {
        /* the configuration check already warned: keep the runner (heartbeat, status) idle */
        rmsync_log(RMSYNC_LOG_INFO, 0, "sync runner: no Graph credentials configured "
                   "(RMSyncGraphTenant, RMSyncGraphClientId, RMSyncGraphClientSecretFile): "
                   "nothing to sync");
    }
    else if ((rv = rmsync_graph_create(&eng->graph, eng->pool, &go)) != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00434) "sync runner: the Graph client "
                   "cannot be created (check RMSyncGraph* directives)");
        return rv;
    }
    if ((rv = rmsync_db_open(&eng->ctl, eng->pool, s->db_conninfo, s->db_connect_timeout_s,
                             s->db_statement_timeout_ms)) != APR_SUCCESS
        || (rv = rmsync_db_listen(eng->ctl, "rmsync")) != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_WARNING, rv, RMSYNC_LOGNO(00435) "sync runner: control connection "
                   "(LISTEN rmsync): %s; retrying", eng->ctl ? rmsync_db_errmsg(eng->ctl) : "");
        if (!eng->ctl) return rv;
    }
    if ((rv = apr_thread_mutex_create(&eng->mutex, APR_THREAD_MUTEX_DEFAULT, eng->pool))
        != APR_SUCCESS
        || (rv = apr_thread_cond_create(&eng->cond, eng->pool)) != APR_SUCCESS) {
        return rv;
    }
    eng->paused = 1;                               /* until the first gate check */
    eng->reps = apr_hash_make(eng->pool);
    eng->queue = apr_array_make(eng->pool, 16, sizeof(rep_entry_t *));
    eng->nworkers = s->graph_parallel_mailboxes > 0 ? s->graph_parallel_mailboxes : 4;
    eng->workers = apr_pcalloc(eng->pool, sizeof(worker_t) * (apr_size_t)eng->nworkers);
    for (i = 0; i < eng->nworkers; ++i) {
        worker_t *w = &eng->workers[i];
        apr_allocator_t *alloc;
        w->eng = eng;
        w->index = i;
        if ((rv = apr_allocator_create(&alloc)) != APR_SUCCESS
            || (rv = apr_pool_create_ex(&w->pool, eng->pool, NULL, alloc)) != APR_SUCCESS) {
            return rv;
        }
        apr_allocator_owner_set(alloc, w->pool);
        apr_allocator_max_free_set(alloc, 1024 * 1024);
        if ((rv = rmsync_db_open(&w->db, w->pool, s->db_conninfo, s->db_connect_timeout_s,
                                 s->db_statement_timeout_ms)) != APR_SUCCESS) {
            return rv;
        }
    }
    for (i = 0; i < eng->nworkers; ++i) {
        worker_t *w = &eng->workers[i];
        if ((rv = rmsync_delta_fetcher_create(&w->fetcher, eng->pool)) != APR_SUCCESS
            || (rv = apr_thread_create(&w->thread, NULL, worker_main, w, eng->pool))
               != APR_SUCCESS) {
            rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00436) "sync runner: worker thread");
            return rv;
        }
    }
    return APR_SUCCESS;
}

static void engine_shutdown(rmsync_engine_t *eng)
{
    int i;
    apr_status_t trv;

    apr_atomic_set32(&eng->stop, 1);
    if (eng->mutex) {
        apr_thread_mutex_lock(eng->mutex);
        apr_thread_cond_broadcast(eng->cond);
        apr_thread_mutex_unlock(eng->mutex);
    }
    for (i = 0; eng->workers && i < eng->nworkers; ++i) {
        if (eng->workers[i].thread) {
            apr_thread_join(&trv, eng->workers[i].thread);
        }
    }
    for (i = 0; eng->workers && i < eng->nworkers; ++i) {
        rmsync_delta_fetcher_destroy(eng->workers[i].fetcher);   /* idle: its worker ended */
        if (eng->workers[i].db) rmsync_db_close(eng->workers[i].db);
    }
    if (eng->ctl) rmsync_db_close(eng->ctl);
}

apr_status_t rmsync_engine_main(rmsync_engine_env_t *env, apr_pool_t *pool)
{
    rmsync_engine_t *eng = apr_pcalloc(pool, sizeof(*eng));
    apr_pool_t *lp;
    apr_time_t last_beat = 0;
    pid_t parent = getppid();
    apr_status_t rv;
    char buf[64];

    eng->pool = pool;
    eng->env = env;
    eng->s = env->settings;
    eng->gate_ok = -1;
    eng->started = apr_time_now();
    eng->next_housekeeping = eng->started + apr_time_from_sec(HOUSEKEEPING_FIRST_S);
    signal(SIGPIPE, SIG_IGN);                       /* a dead piped log / peer: EPIPE, no death */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00437) "sync runner: curl_global_init failed");
        return APR_EGENERAL;
    }
    runner_state(eng, RMSYNC_RUNNER_STARTING, "starting");
    if ((rv = engine_init(eng)) != APR_SUCCESS) {
        engine_shutdown(eng);
        rmsync_shm_runner_error(env->shm, env->mutex, "the sync engine could not start; see the "
                                "error log", apr_time_now());
        /* keep the heartbeat and wait for the parent (no respawn storm); nothing to sync */
        while (!*env->stop) {
            struct pollfd pfd = { env->tick_fd, POLLIN, 0 };
            int n = poll(&pfd, 1, 1000);
            runner_state(eng, RMSYNC_RUNNER_PAUSED, "not started: configuration error");
            if (n > 0 && read(env->tick_fd, buf, sizeof(buf)) == 0) break;
        }
        return rv;
    }
    rmsync_log(RMSYNC_LOG_INFO, 0, "sync runner %ld: engine started, %d worker(s)",
               (long)getpid(), eng->nworkers);
    apr_pool_create(&lp, pool);

    while (!*env->stop) {
        struct pollfd pfd[2];
        apr_hash_t *woke;
        apr_time_t now;
        int n, nfd = 1, tick = 0, sock;

        apr_pool_clear(lp);
        woke = apr_hash_make(lp);
        pfd[0].fd = env->tick_fd;
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        sock = rmsync_db_socket(eng->ctl);
        if (sock >= 0) {
            pfd[1].fd = sock;
            pfd[1].events = POLLIN;
            pfd[1].revents = 0;
            nfd = 2;
        }
        n = poll(pfd, (nfds_t)nfd, 1000);
        if (n < 0 && errno != EINTR) {
            rmsync_log(RMSYNC_LOG_ERR, APR_FROM_OS_ERROR(errno),
                       RMSYNC_LOGNO(00438) "sync runner: poll failed");
            break;
        }
        if (*env->stop) break;
        now = apr_time_now();
        if (n > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = read(env->tick_fd, buf, sizeof(buf));
            if (r == 0) {
                rmsync_log(RMSYNC_LOG_INFO, 0, "sync runner %ld: parent gone, exiting",
                           (long)getpid());
                break;
            }
            if (r > 0) {
                rmsync_shm_runner_cycles(env->shm, env->mutex, (apr_uint32_t)r, now);
                tick = 1;
            }
        }
        if (nfd == 2 && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            apr_array_header_t *nts = NULL;
            if (rmsync_db_notifications(eng->ctl, lp, &nts) == APR_SUCCESS && nts) {
                int i;
                for (i = 0; i < nts->nelts; ++i) {
                    const rmsync_db_notify_t *nt = &RMSYNC_ARRAY_IDX(nts, i, rmsync_db_notify_t);
                    apr_hash_set(woke, nt->payload ? nt->payload : "", APR_HASH_KEY_STRING, "1");
                }
            }
            else {
                apr_hash_set(woke, "*", APR_HASH_KEY_STRING, "1"); /* reconnected: rescan */
            }
        }
        schedule(eng, lp, woke, tick);
        node_beat(eng, lp, now);
        housekeeping(eng, lp, now);
        publish_graph_stats(eng);
        if (now - last_beat >= apr_time_from_msec(500)) {
            rmsync_shm_runner_heartbeat(env->shm, env->mutex, apr_time_now(), -1, NULL);
            last_beat = now;
        }
    }
    runner_state(eng, RMSYNC_RUNNER_STOPPING, "stopping");
    /* an ordered stop only: when the parent died (kill -9, crash; we were re-parented) the
     * node is gone and its row must go silent, so the other nodes warn about it */
    if (env->node_id && getppid() == parent && eng->ctl && rmsync_db_is_connected(eng->ctl)) {
        apr_pool_clear(lp);
        rmsync_db_exec(eng->ctl, lp, "engine_node_stopped",
                       RMSYNC_DB_PARAMS(env->node_id, apr_itoa(lp, (int)getpid())), NULL);
    }
    engine_shutdown(eng);
    return APR_SUCCESS;
}
