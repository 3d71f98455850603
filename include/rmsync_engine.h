/* mod_rmsync: the sync engine entry point, run inside the sync runner process.
 *
 * Contract between the runner glue (rmsync_monitor.c) and the engine (core/rmsync_engine.c):
 * the glue forks the runner from the httpd parent, resets signals, closes the listeners,
 * drops privileges (User), re-opens the shm mutex, publishes pid/start in shm
 * (rmsync_shm_runner_begin) and then calls rmsync_engine_main() once. When it returns, the
 * runner process exits. No httpd headers here or in the engine.
 */
#ifndef RMSYNC_ENGINE_H
#define RMSYNC_ENGINE_H

#include <signal.h>
#include <apr_pools.h>
#include <apr_global_mutex.h>
#include <apr_hash.h>
#include "rmsync_settings.h"
#include "rmsync_shm.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"
#include "rmsync_synclog.h"

/* Every runner upserts its node's row in rmsync.node this often; the status page calls a node
 * whose last beat is older than RMSYNC_NODE_STALE_S stopped. */
#define RMSYNC_NODE_BEAT_S  5
#define RMSYNC_NODE_STALE_S (3 * RMSYNC_NODE_BEAT_S)

typedef struct rmsync_engine_env_t {
    const rmsync_settings_t *settings;
    int tick_fd;                  /* read end of the parent's pipe (blocking): one byte per sync
                                   * cycle (RMSyncSyncCycle, ~10 s resolution); EOF = parent gone */
    rmsync_shm_t *shm;            /* this generation's segment (may be NULL: then run without) */
    apr_global_mutex_t *mutex;    /* guards shm (child-initialised), NULL with shm NULL */
    apr_uint32_t generation;      /* httpd config generation the runner belongs to */
    volatile sig_atomic_t *stop;  /* set to 1 by SIGTERM/SIGINT/SIGHUP: finish the step, return */
    const char *node_id;          /* this node in rmsync.node (host:port); NULL: no heartbeat row */
} rmsync_engine_env_t;

/* Run until *env->stop is set or tick_fd reaches EOF. Must update the heartbeat in shm at least
 * once a second (rmsync_shm_runner_heartbeat) and count the cycle bytes taken from tick_fd
 * (rmsync_shm_runner_cycles). pool lives as long as the runner; use sub-pools per step. */
apr_status_t rmsync_engine_main(rmsync_engine_env_t *env, apr_pool_t *pool);

/* ---- per-representative jobs (the engine's scheduler; core/rmsync_engine.c) -----------------
 *
 * Sync work runs in PER-REPRESENTATIVE JOBS on a pool of worker threads
 * (RMSyncGraphConcurrency <per-mailbox> <mailboxes>: <mailboxes> threads), each with its own
 * database connection. At most one job per representative runs at a time: in this process (an
 * in-memory flag) and across processes and nodes (pg_try_advisory_lock on the worker's
 * connection, released when the job ends or the connection dies). A slow or throttled mailbox
 * only ever occupies its own worker.
 *
 * A job runs the registered STEPS in table order (engine_steps[] in rmsync_engine.c):
 *   "queue"        webhook notifications for this representative   (webhook engineer)
 *   "requests"     admin requests: initial_sync, approve, retry, unlink (engine)
 *   "delta"        delta pass if due / asked for; initial sync round + reconcile (engine)
 *   ...            subscriptions, transfers, master categories    (webhook / transfer engineers)
 * To add a step: write `apr_status_t my_step(rmsync_rep_ctx_t *ctx)` in your core file, declare it
 * in your header, and add ONE line to engine_steps[] in rmsync_engine.c. A step that has work
 * outside the engine's own timers gives a pending_sql: a query without parameters returning
 * representative_id values that have work for it now; the scheduler runs it on every NOTIFY
 * whose payload matches `wake` (NULL: every NOTIFY) and every few seconds, and queues a job for
 * each id returned.
 *
 * Gates (checked by the scheduler, once per cycle): rmsync.service_state.running and the
 * SYNC_MASTER state (rmsync.master_user_state() = 'ready'); when either fails no job runs.
 * Jobs run for representatives in rmsync.representatives (holding the permission set) with
 * sync_active; a step flagged RMSYNC_STEP_INACTIVE_TOO also runs for representatives that are
 * not (or no longer) syncing, when its pending_sql names them (e.g. to delete a subscription).
 */

typedef struct rmsync_engine_t rmsync_engine_t;

typedef struct rmsync_rep_ctx_t {
    /* who */
    const char *rep_id;           /* crm.business_representative.representative_id */
    const char *mailbox;          /* the representative's mailbox (rep_state.mailbox or e-mail) */
    const char *user_id;          /* Graph users/{user_id}: graph_user_id if known, else mailbox */
    int         active;           /* 1: holds the permission set and sync_active */
    int         held;             /* 1: held by the mass-delete breaker (no deletions, no delta) */
    /* with what */
    const rmsync_settings_t *settings;
    rmsync_graph_t *graph;        /* the runner's client (thread-safe) */
    rmsync_db_t    *db;           /* this worker's own connection (not shared) */
    apr_pool_t     *pool;         /* per-job pool, destroyed when the job ends */
    rmsync_synclog_t *synclog;    /* the sync log (rmsync.sync_log + RMSyncLogFile) */
    rmsync_engine_t  *engine;
    rmsync_shm_t     *shm;        /* may be NULL (tools, unit tests) */
    volatile apr_uint32_t *stop;  /* non-zero: the runner is stopping; finish the current item */
    /* set by steps for later steps of the same job */
    int want_delta;               /* run a delta pass in this job (notification 404, 'missed') */
    int want_initial;             /* run an initial sync round in this job */
    int in_tx;                    /* the engine has a transaction open on db (apply: savepoints) */
    int in_round;                 /* inside a delta pass: deletions wait for its end (breaker) */
    /* a delta page applied in one go (rmsync_apply_page_begin/_end, rmsync_apply.c): links
     * read and locked with one statement, the writes of all its linked events with one, their
     * sync log rows with one; a failure makes the caller redo the page item by item */
    struct rmsync_apply_page_t *page;
    /* links this job created (rmsync_engine_count of RMSYNC_CTR_LINKS_CREATED), and the delta
     * pass's set of this representative's linked event ids read when links_made was
     * link_ids_at (rmsync_delta.c: one query per pass instead of one per page) */
    apr_uint32_t links_made, link_ids_at;
    apr_hash_t *link_ids;
    /* the worker's delta page fetcher (rmsync_delta.h), NULL: pages fetched in this thread */
    struct rmsync_delta_fetcher_t *fetcher;
    /* issue 14: the sync calendar (rmsync_calendar.c, step "calendar"): its Graph id, NULL =
     * the main calendar; calendar_ready 0 while RMSyncCalendar names one not resolved yet */
    const char *calendar_id;
    int calendar_ready;
    /* results of this job (published into the shm slot) */
    int applied, deleted, errors;
    apr_uint32_t lag_ms;          /* Outlook change -> activity written, last applied change */
} rmsync_rep_ctx_t;

/* A job step. Return APR_SUCCESS, or an error status (logged by the engine with the step name;
 * the following steps still run unless *ctx->stop is set). Allocate from ctx->pool. */
typedef apr_status_t rmsync_step_fn(rmsync_rep_ctx_t *ctx);

#define RMSYNC_STEP_INACTIVE_TOO 0x01  /* also run for representatives that do not sync */

typedef struct rmsync_step_t {
    const char     *name;         /* for logs: "queue", "delta", "subscriptions", ... */
    rmsync_step_fn *fn;
    const char     *pending_sql;  /* NULL or: SELECT representative_id ... (no parameters) */
    const char     *wake;         /* NOTIFY payload that runs pending_sql, NULL = any */
    int             flags;        /* RMSYNC_STEP_* */
} rmsync_step_t;

/* Called for an event that is not linked (seen in delta or a notification): hands it to the
 * unlinked-event hooks (engine_unlinked_hooks[] in rmsync_engine.c, e.g. the transfer engineer's
 * category rule). Never called inside the engine's open transaction. */
typedef apr_status_t rmsync_unlinked_fn(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev);
apr_status_t rmsync_engine_unlinked_event(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev);
int rmsync_engine_has_unlinked_hooks(void);

/* Ask for a delta pass in this job (e.g. a 404 after a created/updated notification, a
 * lifecycle 'missed' or 'subscriptionRemoved'). */
void rmsync_engine_want_delta(rmsync_rep_ctx_t *ctx);

/* Record an error of this representative's sync (rep_state.last_error, shm slot, sync log and
 * RMSyncLogFile). The same message again within an hour is not logged again (a Graph outage
 * does not flood the log). fmt should start with RMSYNC_LOGNO(nnnnn). */
void rmsync_engine_rep_error(rmsync_rep_ctx_t *ctx, const char *action, const char *event_id,
                             const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* An error about one activity / event (a refused write, an unreadable event): always logged. */
void rmsync_engine_item_error(rmsync_rep_ctx_t *ctx, long long activity_no, const char *event_id,
                              const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* A failed Graph call (rv, res from rmsync_graph_*) as a representative error. */
void rmsync_engine_graph_error(rmsync_rep_ctx_t *ctx, const char *action, const char *event_id,
                               apr_status_t rv, const rmsync_graph_result_t *res);

/* Shm helpers usable from steps (no-ops without shm). */
void rmsync_engine_count(rmsync_rep_ctx_t *ctx, rmsync_counter_e c, apr_uint32_t n);
void rmsync_engine_rep_state(rmsync_rep_ctx_t *ctx, rmsync_rep_state_e state);
/* 1 when the runner is stopping or the gates closed (service stopped, SYNC_MASTER not
 * usable): finish the current item and return; the work resumes in a later job. */
int rmsync_engine_stopping(const rmsync_rep_ctx_t *ctx);

/* Run one job for rep_id now on ctx's connection (all steps, advisory lock). Tools and tests. */
apr_status_t rmsync_engine_run_job(rmsync_rep_ctx_t *ctx);

#endif /* RMSYNC_ENGINE_H */
