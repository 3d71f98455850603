/* mod_rmsync: runs in the Apache worker processes (the `rmsync-webhook` handler, its
 * child_init and waker thread). Graph change and lifecycle notifications in, stored durably.
 *
 * Graph's contract (GRAPH.md §5): answer the validation handshake with the decoded token as
 * text/plain; answer a notification POST within 3 s with 2xx only once it is durably stored,
 * 5xx otherwise so Graph retries. So: read the body under our own cap, parse it bounded, check
 * each item's clientState, store the good ones in one statement (shared with the POSTs the
 * process handles at the same time), 202. Everything else (GET the event, apply) is the
 * runner's job, woken by this process's waker thread after the commit.
 */
#include <signal.h>
#include <string.h>
#include <pthread.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_filter.h"
#include "apr_strings.h"
#include "apr_atomic.h"
#include "apr_thread_proc.h"
#include "apr_thread_cond.h"
#include "apr_thread_mutex.h"
#include "apr_uri.h"
#include "ap_mpm.h"

#include "rmsync.h"
#include "rmsync_settings.h"
#include "rmsync_intake.h"
#include "rmsync_json.h"
#include "mod_rmsync_webhook.h"
#include "mod_rmsync_config.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_request.h"
#include "mod_rmsync_budget.h"
#include "rmsync_db.h"
#include "rmsync_dbbudget.h"

APLOG_USE_MODULE(rmsync);

/* Per-process pool of DB handles for the worker threads (created in child_init, never in the
 * parent; a background thread connects the first few at once, the rest connect on first use). */
static rmsync_db_pool_t *db_pool;
/* Per-process cache subscriptionId -> clientState (rmsync_intake.h). */
static rmsync_notif_cache_t *sub_cache;
/* Per-process group intake: POSTs handled at the same time share one statement and commit
 * (rmsync_intake.h; bench: at 64 connections a single-row INSERT per POST made PostgreSQL the
 * bottleneck). Whole requests, at most this many items per statement. */
static rmsync_notif_group_t *group;
#define WEBHOOK_GROUP_MAX_ITEMS      256
/* Handles of this process connecting right now, and connects finished: a wait during which a
 * connect was under way does not count as waiting for a busy pool (a cold process connects its
 * handles while the first burst waits). */
static volatile apr_uint32_t connecting;
static volatile apr_uint32_t connects_done;
/* When this process started: while it is young its pool is still filling (connects of a slow
 * database may not overlap a given wait), so its requests get the cold wait. */
static apr_time_t child_started;
#define WEBHOOK_COLD_AGE             apr_time_from_sec(10)

/* The runner's wake-up: a request that stored rows sets `wake_pending`; this process's waker
 * thread sends one NOTIFY for all rows committed before it read the flag (its own connection),
 * at most one per WEBHOOK_WAKE_INTERVAL, so a burst costs a few NOTIFYs per process, not one
 * per commit. */
static apr_thread_mutex_t *wake_mutex;
static apr_thread_cond_t *wake_cond;
static int wake_pending, wake_stop;
/* The waker also closes the pool's connections idle longer than RMSyncDatabasePool's limit
 * (every this often), so a process that gets no requests gives its slots back. */
static apr_interval_time_t reap_every;
static int warm_handles;                /* WEBHOOK_POOL_WARM, or 0 when the budget is tight */
/* While notifications arrive (the last one less than WEBHOOK_SNAPSHOT_ACTIVE ago), the waker
 * checks every WEBHOOK_SNAPSHOT_EVERY whether rmsync.subscription changed (one aggregate) and
 * then loads every subscription into the cache: an id it did not hold is unknown without a
 * query (forged ids cost nothing), and a subscription the runner just created is known within
 * about WEBHOOK_SNAPSHOT_EVERY. The rows are read in full at least every WEBHOOK_SNAPSHOT_VALID. */
static volatile apr_uint32_t last_post_sec;
#define WEBHOOK_SNAPSHOT_EVERY       apr_time_from_msec(250)
#define WEBHOOK_SNAPSHOT_MIN         apr_time_from_msec(20)
#define WEBHOOK_SNAPSHOT_VALID       apr_time_from_sec(5)
#define WEBHOOK_SNAPSHOT_ACTIVE      30

/* Graph wants an answer within 3 s: our statements must give up well before that. */
#define WEBHOOK_STATEMENT_TIMEOUT_MS 2000
#define WEBHOOK_CONNECT_TIMEOUT_S    2      /* libpq's smallest useful connect_timeout */
#define WEBHOOK_POOL_MAX             8
#define WEBHOOK_POOL_WARM            2      /* connected in the background at child start */
#define WEBHOOK_POOL_WAIT            apr_time_from_msec(1000)
/* The most a request waits for a handle while others of its process are still connecting. */
#define WEBHOOK_POOL_WAIT_COLD       apr_time_from_msec(2500)
/* At most one NOTIFY per this interval per process: each NOTIFY is a transaction that takes
 * the global notify lock too (bench: an unthrottled waker cost about what it saved). */
#define WEBHOOK_WAKE_INTERVAL        apr_time_from_msec(10)
/* How long a subscription's clientState is trusted without asking the database. */
#define WEBHOOK_SUB_CACHE_TTL        apr_time_from_sec(5)
/* Forged traffic: an id the database did not know is not asked again for this long; at most
 * this many subscription lookups per process at once, a request waits this long for a turn. */
#define WEBHOOK_UNKNOWN_TTL          apr_time_from_sec(5)
#define WEBHOOK_MAX_LOOKUPS          2
#define WEBHOOK_LOOKUP_WAIT          apr_time_from_msec(1500)
/* How long a connect waits for a slot of the connection budget (RMSyncDatabasePool). */
#define WEBHOOK_SLOT_WAIT            apr_time_from_msec(1000)
/* The body must be in within this (Graph gives the whole POST 3 s): 408 otherwise. */
#define WEBHOOK_BODY_LIMIT           apr_time_from_sec(2)

static void count(rmsync_counter_e c, int n)
{
    rmsync_shm_t *shm = rmsync_shm_get();
    if (shm && n > 0) {
        rmsync_shm_counter_add(shm, c, (apr_uint32_t)n);
    }
}

/* Answer without reading the request body: close the connection after the answer when there
 * is one, so it is never read (ap_discard_request_body then does nothing). */
static void skip_body(request_rec *r)
{
    if (ap_request_has_body(r)) {
        r->connection->keepalive = AP_CONN_CLOSE;
    }
}

/* Send a short plain-text answer ourselves (Apache's error pages are HTML). */
static int reply(request_rec *r, int status, const char *text)
{
    r->status = status;
    ap_set_content_type(r, "text/plain; charset=utf-8");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (status >= 400) {
        /* What we did not read we do not want to read: close after answering. */
        skip_body(r);
    }
    if (!r->header_only) {
        ap_rputs(text, r);
        ap_rputs("\n", r);
    }
    return OK;
}

/* Find `validationToken` in the query and form-decode it ('+' is a space, %XX a byte).
 * Returns 0 when absent, 1 when found (*tok set), -1 when malformed (bad escape, %00) or
 * longer than RMSYNC_WEBHOOK_MAX_TOKEN decoded bytes. */
static int validation_token(request_rec *r, const char **tok, apr_size_t *toklen)
{
    static const char key[] = "validationToken=";
    const char *a = r->args, *v = NULL;
    char *out;
    apr_size_t n;

    while (a && *a) {
        if (!strncmp(a, key, sizeof(key) - 1)) {
            v = a + sizeof(key) - 1;
            break;
        }
        a = strchr(a, '&');
        a = a ? a + 1 : NULL;
    }
    if (!v) {
        return 0;
    }
    out = apr_pstrmemdup(r->pool, v, strcspn(v, "&"));
    if (ap_unescape_urlencoded(out) != OK) {
        return -1;
    }
    n = strlen(out);
    if (n > RMSYNC_WEBHOOK_MAX_TOKEN) {
        return -1;
    }
    *tok = out;
    *toklen = n;
    return 1;
}

/* Dropped items and 503s are logged at most once per burst (10 s) per process, with a count,
 * so a flood of forged POSTs or a database outage cannot flood the error log. */
static volatile apr_uint32_t drop_log_sec;
static volatile apr_uint32_t drop_suppressed;
static volatile apr_uint32_t down_log_sec;
static volatile apr_uint32_t down_suppressed;
static volatile apr_uint32_t busy_log_sec;
static volatile apr_uint32_t busy_suppressed;

/* 1 when this thread won the right to log now (once per 10 s), else counts n as suppressed. */
static int log_turn(volatile apr_uint32_t *last_sec, volatile apr_uint32_t *suppressed,
                    apr_uint32_t n, apr_uint32_t *more)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(apr_time_now());
    apr_uint32_t last = apr_atomic_read32(last_sec);

    if (now - last >= 10 && apr_atomic_cas32(last_sec, now, last) == last) {
        *more = apr_atomic_xchg32(suppressed, 0);
        return 1;
    }
    apr_atomic_add32(suppressed, n);
    return 0;
}

static void log_drops(request_rec *r, const rmsync_notif_result_t *res)
{
    int dropped = res->unknown_subscription + res->bad_client_state + res->invalid;
    apr_uint32_t more = 0;

    if (dropped && log_turn(&drop_log_sec, &drop_suppressed, (apr_uint32_t)dropped, &more)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RMSYNC_LOGNO(00610)
                      "webhook: dropped %d of %d notification item(s) from %s: %d unknown "
                      "subscription, %d wrong clientState, %d malformed (%u more dropped "
                      "since the last report)",
                      dropped, res->received, r->useragent_ip, res->unknown_subscription,
                      res->bad_client_state, res->invalid, more);
    }
}

/* Connect a pooled handle that is not connected yet, counted in `connecting`. */
static apr_status_t connect_handle(rmsync_db_t *db)
{
    apr_status_t rv;

    if (rmsync_db_is_connected(db)) {
        return APR_SUCCESS;
    }
    apr_atomic_inc32(&connecting);
    rv = rmsync_db_connect(db);
    apr_atomic_inc32(&connects_done);
    apr_atomic_dec32(&connecting);
    return rv;
}

/* A handle from the pool: up to WEBHOOK_POOL_WAIT for a busy pool, longer (up to
 * WEBHOOK_POOL_WAIT_COLD in all) when handles of this process were connecting meanwhile. */
static apr_status_t get_handle(rmsync_db_t **pdb)
{
    apr_time_t start = apr_time_now(), deadline = start + WEBHOOK_POOL_WAIT, now;
    apr_uint32_t done0 = apr_atomic_read32(&connects_done);
    apr_status_t rv;

    for (;;) {
        rv = rmsync_db_pool_get(db_pool, deadline - apr_time_now(), pdb);
        if (rv != APR_TIMEUP || (!apr_atomic_read32(&connecting)
                                 && apr_atomic_read32(&connects_done) == done0
                                 && start - child_started >= WEBHOOK_COLD_AGE)) {
            return rv;
        }
        now = apr_time_now();
        if (now - start >= WEBHOOK_POOL_WAIT_COLD) {
            return rv;
        }
        deadline = now + apr_time_from_msec(100);
        if (deadline > start + WEBHOOK_POOL_WAIT_COLD) {
            deadline = start + WEBHOOK_POOL_WAIT_COLD;
        }
    }
}

/* The group intake's handles: from the pool (with the cold-start wait), connected. */
static apr_status_t intake_get(rmsync_db_t **pdb, void *baton)
{
    apr_status_t rv = get_handle(pdb);

    (void)baton;
    if (rv == APR_SUCCESS && (rv = connect_handle(*pdb)) != APR_SUCCESS) {
        rmsync_db_pool_release(db_pool, *pdb);
    }
    return rv;
}

static void intake_release(rmsync_db_t *db, void *baton)
{
    (void)baton;
    rmsync_db_pool_release(db_pool, db);
}

static apr_status_t store(request_rec *r, rmsync_notif_result_t *res,
                          const rmsync_notif_batch_t *batch)
{
    apr_status_t rv;
    int statements = 0;

    if (!db_pool) {
        return RMSYNC_QUEUE_EDB;
    }
    rv = rmsync_notif_store(res, group, r->pool, batch, sub_cache, intake_get, intake_release,
                            NULL, &statements);
    count(RMSYNC_CTR_WEBHOOK_STATEMENTS, statements);
    count(RMSYNC_CTR_WEBHOOK_LOOKUPS, res->lookups);
    if (rv != APR_SUCCESS || res->stored == 0) {
        return rv;
    }
    if (wake_mutex) {
        apr_thread_mutex_lock(wake_mutex);
        wake_pending = 1;
        apr_thread_cond_signal(wake_cond);
        apr_thread_mutex_unlock(wake_mutex);
    }
    else {
        rmsync_db_t *db = NULL;             /* no waker thread: wake the runner ourselves */
        if (intake_get(&db, NULL) == APR_SUCCESS) {
            rmsync_notif_wake(db, r->pool);
            rmsync_db_pool_release(db_pool, db);
        }
    }
    return APR_SUCCESS;
}

static int handle_notification(request_rec *r, const rmsync_settings_t *s, int lifecycle)
{
    rmsync_notif_batch_t *batch = NULL;
    rmsync_notif_result_t res;
    const char *why = NULL;
    char *body = NULL;
    apr_size_t len = 0;
    apr_status_t rv;
    int status;

    if (!rmsync_request_has_type(r, "application/json")) {
        count(RMSYNC_CTR_NOTIFY_MALFORMED, 1);
        return reply(r, HTTP_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
    }
    status = rmsync_read_body(r, s->max_body, WEBHOOK_BODY_LIMIT, &body, &len);
    if (status == HTTP_REQUEST_ENTITY_TOO_LARGE) {
        count(RMSYNC_CTR_NOTIFY_MALFORMED, 1);
        return reply(r, status, "request body too large");
    }
    if (status == HTTP_REQUEST_TIME_OUT) {
        count(RMSYNC_CTR_NOTIFY_MALFORMED, 1);
        return reply(r, status, "the request body did not arrive in time");
    }
    if (status != OK) {
        count(RMSYNC_CTR_NOTIFY_MALFORMED, 1);
        return reply(r, HTTP_BAD_REQUEST, "could not read the request body");
    }
    rv = rmsync_notif_parse(&batch, r->pool, body, len, lifecycle, &why);
    if (rv != APR_SUCCESS) {
        count(RMSYNC_CTR_NOTIFY_MALFORMED, 1);
        return reply(r, HTTP_BAD_REQUEST, why);
    }
    apr_atomic_set32(&last_post_sec, (apr_uint32_t)apr_time_sec(apr_time_now()));
    rv = store(r, &res, batch);
    if (rv == RMSYNC_QUEUE_EBUSY) {
        apr_uint32_t more = 0;
        if (log_turn(&busy_log_sec, &busy_suppressed, 1, &more)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RMSYNC_LOGNO(00613)
                          "webhook: subscription lookups saturated (unknown ids, %d at once per "
                          "process), answering 503 (%u more since the last report)",
                          WEBHOOK_MAX_LOOKUPS, more);
        }
        count(RMSYNC_CTR_WEBHOOK_BUSY, 1);
        apr_table_setn(r->err_headers_out, "Retry-After", "5");
        return reply(r, HTTP_SERVICE_UNAVAILABLE, "busy, retry later");
    }
    if (rv != APR_SUCCESS) {
        apr_uint32_t more = 0;
        if (log_turn(&down_log_sec, &down_suppressed, 1, &more)) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RMSYNC_LOGNO(00611)
                          "webhook: database unavailable, answering 503 so Graph retries "
                          "(%d item(s); %u more 503s since the last report)",
                          batch->items->nelts, more);
        }
        count(RMSYNC_CTR_WEBHOOK_DB_UNAVAILABLE, 1);
        apr_table_setn(r->err_headers_out, "Retry-After", "5");
        return reply(r, HTTP_SERVICE_UNAVAILABLE, "temporarily unavailable, retry later");
    }
    {
        /* pool memory: aligned (APR_ARRAY_IDX's cast trips clang's -Wcast-align) */
        const rmsync_notif_item_t *items = (const void *)batch->items->elts;
        int i, lc = 0;
        for (i = 0; i < batch->items->nelts; i++) {
            lc += items[i].kind == RMSYNC_NOTIF_LIFECYCLE;
        }
        count(RMSYNC_CTR_LIFECYCLE_RECEIVED, lc);
        count(RMSYNC_CTR_NOTIFY_RECEIVED, res.received - lc);
    }
    count(RMSYNC_CTR_NOTIFY_ACCEPTED, res.stored + res.coalesced);
    count(RMSYNC_CTR_NOTIFY_UNKNOWN_SUB, res.unknown_subscription);
    count(RMSYNC_CTR_NOTIFY_BAD_CLIENTSTATE, res.bad_client_state);
    log_drops(r, &res);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  "webhook: %d item(s): %d stored, %d coalesced, %d dropped",
                  res.received, res.stored, res.coalesced,
                  res.unknown_subscription + res.bad_client_state + res.invalid);
    return reply(r, HTTP_ACCEPTED, "accepted");
}

/* The waker thread: first connects the first WEBHOOK_POOL_WARM handles, so the first POSTs of
 * a fresh process find a connection (the child does not wait for the database), then sends
 * the runner's NOTIFY whenever requests stored rows (one for all rows committed before it read
 * the flag). A failed NOTIFY is retried; the runner also scans the queue every few seconds. */
static void warm_pool(void)
{
    rmsync_db_t *held[WEBHOOK_POOL_WARM];
    int i, n = 0;

    for (i = 0; i < warm_handles; i++) {
        if (rmsync_db_pool_get(db_pool, 0, &held[n]) != APR_SUCCESS) {
            break;                          /* the requests have them: nothing to warm */
        }
        n++;
        if (connect_handle(held[n - 1]) != APR_SUCCESS) {
            break;                          /* database down: the requests answer 503 */
        }
    }
    for (i = 0; i < n; i++) {
        rmsync_db_pool_release(db_pool, held[i]);
    }
}

/* The NOTIFY on a handle of the pool (none kept for it: one connection less per process). */
static apr_status_t wake_runner(apr_pool_t *p)
{
    rmsync_db_t *db = NULL;
    apr_status_t rv = intake_get(&db, NULL);

    if (rv == APR_SUCCESS) {
        rv = rmsync_notif_wake(db, p);
        rmsync_db_pool_release(db_pool, db);
    }
    return rv;
}

/* The intake's request for a snapshot newer than a POST (rmsync_notif_cache_set_refresher). */
static void ask_snapshot(void *baton)
{
    apr_thread_mutex_lock(wake_mutex);
    apr_thread_cond_signal(wake_cond);
    apr_thread_mutex_unlock(wake_mutex);
}

static void *APR_THREAD_FUNC waker_main(apr_thread_t *thread, void *data)
{
    apr_pool_t *p = data, *sub;
    apr_time_t last_reap = apr_time_now(), last_snapshot = 0;

    warm_pool();
    apr_pool_create(&sub, p);
    apr_thread_mutex_lock(wake_mutex);
    while (!wake_stop) {
        apr_status_t rv;
        apr_time_t now = apr_time_now();
        /* periodically while POSTs arrive, and at once (but at most every
         * WEBHOOK_SNAPSHOT_MIN) when a POST waits for a snapshot newer than itself */
        if ((now - last_snapshot >= WEBHOOK_SNAPSHOT_EVERY
             && (apr_uint32_t)apr_time_sec(now) - apr_atomic_read32(&last_post_sec)
                < WEBHOOK_SNAPSHOT_ACTIVE)
            || (now - last_snapshot >= WEBHOOK_SNAPSHOT_MIN
                && rmsync_notif_cache_wants_fresh(sub_cache))) {
            rmsync_db_t *db = NULL;
            apr_thread_mutex_unlock(wake_mutex);
            if (intake_get(&db, NULL) == APR_SUCCESS) {
                rmsync_notif_cache_refresh(sub_cache, db, sub, WEBHOOK_SNAPSHOT_VALID);
                rmsync_db_pool_release(db_pool, db);
            }
            apr_pool_clear(sub);
            last_snapshot = apr_time_now();
            apr_thread_mutex_lock(wake_mutex);
            continue;
        }
        if (now - last_reap >= reap_every) {
            apr_thread_mutex_unlock(wake_mutex);
            rmsync_budget_reap();           /* the admin pool's too */
            last_reap = apr_time_now();
            apr_thread_mutex_lock(wake_mutex);
            continue;
        }
        if (!wake_pending) {
            apr_thread_cond_timedwait(wake_cond, wake_mutex,
                                      rmsync_notif_cache_wants_fresh(sub_cache)
                                      ? WEBHOOK_SNAPSHOT_MIN : WEBHOOK_SNAPSHOT_EVERY);
            continue;
        }
        wake_pending = 0;
        apr_thread_mutex_unlock(wake_mutex);
        rv = wake_runner(sub);
        apr_pool_clear(sub);
        apr_sleep(WEBHOOK_WAKE_INTERVAL);   /* what arrives meanwhile shares the next one */
        apr_thread_mutex_lock(wake_mutex);
        if (rv != APR_SUCCESS && !wake_stop) {
            wake_pending = 1;               /* try again shortly (the DB may be back) */
            apr_thread_cond_timedwait(wake_cond, wake_mutex, apr_time_from_msec(250));
        }
    }
    apr_thread_mutex_unlock(wake_mutex);
    /* Return rather than apr_thread_exit(): pthread_exit would leave the frames' stack
     * poisoned under ASan (a false report when the thread is torn down). */
    return NULL;
}

/* Child exit (pre-cleanup: before the pool's handles go): stop and join the waker. */
static apr_status_t stop_waker(void *data)
{
    apr_status_t trv;

    apr_thread_mutex_lock(wake_mutex);
    wake_stop = 1;
    apr_thread_cond_broadcast(wake_cond);
    apr_thread_mutex_unlock(wake_mutex);
    apr_thread_join(&trv, (apr_thread_t *)data);
    return APR_SUCCESS;
}

static void webhook_child_init(apr_pool_t *pchild_unused, server_rec *srv)
{
    const rmsync_settings_t *s = rmsync_config_get(srv);
    int timeout = WEBHOOK_STATEMENT_TIMEOUT_MS, connect = WEBHOOK_CONNECT_TIMEOUT_S, daemons = 0;
    /* everything of ours in the module's pool (own allocator with a mutex, any MPM) */
    apr_pool_t *pchild = rmsync_budget_pool();
    apr_status_t rv;

    (void)pchild_unused;
    child_started = apr_time_now();

    if (!s || !s->enabled || !s->db_conninfo || !pchild) {
        return;
    }
    reap_every = apr_time_from_sec(s->db_pool_idle_s) / 2;
    if (reap_every < apr_time_from_sec(1)) {
        reap_every = apr_time_from_sec(1);
    }
    /* warm connections only when the budget has them for every process */
    warm_handles = WEBHOOK_POOL_WARM;
    if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) != APR_SUCCESS || daemons < 1
        || rmsync_budget_worker_slots(s) < daemons * WEBHOOK_POOL_WARM) {
        warm_handles = 0;
    }
    if (s->db_statement_timeout_ms > 0 && s->db_statement_timeout_ms < timeout) {
        timeout = s->db_statement_timeout_ms;
    }
    if (s->db_connect_timeout_s > 0 && s->db_connect_timeout_s < connect) {
        connect = s->db_connect_timeout_s;
    }
    /* POST bodies parsed into the request pool: no malloc/free per JSON node in the workers
     * (their RSS grew with the allocator's fragments) */
    rmsync_json_use_arenas();
    rv = rmsync_queue_intake_init();
    if (rv == APR_SUCCESS) {
        rv = rmsync_notif_cache_create(&sub_cache, pchild, WEBHOOK_SUB_CACHE_TTL);
    }
    if (rv == APR_SUCCESS) {
        rmsync_notif_cache_limits(sub_cache, WEBHOOK_UNKNOWN_TTL, WEBHOOK_MAX_LOOKUPS,
                                  WEBHOOK_LOOKUP_WAIT);
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_notif_group_create(&group, pchild, WEBHOOK_GROUP_MAX_ITEMS);
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_db_pool_create(&db_pool, pchild, s->db_conninfo, connect,
                                   timeout, WEBHOOK_POOL_MAX);
    }
    if (rv != APR_SUCCESS) {
        db_pool = NULL;
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, srv, RMSYNC_LOGNO(00612)
                     "webhook: cannot set up the database pool; notifications get 503");
        return;
    }
    rmsync_budget_add_pool(db_pool, WEBHOOK_SLOT_WAIT, s);
    {
        apr_thread_t *t;
        apr_pool_t *tp;
        sigset_t all, old;
        int started = 0;
        /* The thread takes no signals: the MPM's handlers (prefork's just_die, for one) must
         * run on the thread that serves requests, never on ours. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        if (apr_pool_create(&tp, pchild) == APR_SUCCESS
            && apr_thread_mutex_create(&wake_mutex, APR_THREAD_MUTEX_DEFAULT, pchild) == APR_SUCCESS
            && apr_thread_cond_create(&wake_cond, pchild) == APR_SUCCESS
            && apr_thread_create(&t, NULL, waker_main, tp, pchild) == APR_SUCCESS) {
            /* joined before the pool's handles go (pre-cleanup: before sub-pools are destroyed) */
            apr_pool_pre_cleanup_register(pchild, t, stop_waker);
            rmsync_notif_cache_set_refresher(sub_cache, ask_snapshot, NULL);
            started = 1;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!started) {
            wake_mutex = NULL;              /* each request then wakes the runner itself */
        }
    }
}

/* The webhook URLs have no file behind them: skip core's directory and file walk (a stat per
 * path segment and an .htaccess open per directory on every POST, measured with strace; about
 * a tenth of an Apache worker's CPU under load), as mod_proxy does for proxied URLs.
 * map_to_storage runs with the server's default per-dir config, so the <Location>'s SetHandler
 * is read earlier, in translate_name (after the first location walk), which never translates
 * anything itself. <Location> sections (the handler, Require) still apply: they are walked
 * again after map_to_storage. */
static int webhook_translate_name(request_rec *r)
{
    core_dir_config *d = ap_get_core_module_config(r->per_dir_config);
    const char *handler, *err = NULL;

    if (d && d->expr_handler) {
        handler = ap_expr_str_exec(r, d->expr_handler, &err);
        if (!err && handler && !strcmp(handler, RMSYNC_WEBHOOK_HANDLER)) {
            r->handler = RMSYNC_WEBHOOK_HANDLER;   /* core's fixup sets the same again */
        }
    }
    return DECLINED;
}

static int webhook_map_to_storage(request_rec *r)
{
    return r->handler && !strcmp(r->handler, RMSYNC_WEBHOOK_HANDLER) ? OK : DECLINED;
}

static int webhook_handler(request_rec *r);

void rmsync_webhook_register_hooks(apr_pool_t *p)
{
    ap_hook_child_init(webhook_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(webhook_translate_name, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_map_to_storage(webhook_map_to_storage, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(webhook_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

static int webhook_handler(request_rec *r)
{
    const rmsync_settings_t *s;
    const char *tok = NULL;
    apr_size_t toklen = 0;
    int lifecycle, found;

    if (!r->handler || strcmp(r->handler, RMSYNC_WEBHOOK_HANDLER)) {
        return DECLINED;
    }
    r->allowed = (AP_METHOD_BIT << M_POST);
    if (r->method_number != M_POST) {
        apr_table_setn(r->headers_out, "Allow", "POST");
        return reply(r, HTTP_METHOD_NOT_ALLOWED, "only POST is allowed here");
    }
    found = validation_token(r, &tok, &toklen);
    if (found < 0) {
        return reply(r, HTTP_BAD_REQUEST, "invalid validationToken");
    }
    if (found > 0) {
        /* The handshake: echo the decoded token as plain text, store nothing. Its body (Graph
         * sends none) is not read: discarding could mean reading up to LimitRequestBody. */
        skip_body(r);
        count(RMSYNC_CTR_NOTIFY_VALIDATIONS, 1);
        r->status = HTTP_OK;
        ap_set_content_type(r, "text/plain; charset=utf-8");
        apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
        apr_table_setn(r->headers_out, "Cache-Control", "no-store");
        ap_set_content_length(r, (apr_off_t)toklen);
        if (!r->header_only) {
            ap_rwrite(tok, (int)toklen, r);
        }
        return OK;
    }
    s = rmsync_config_get(r->server);
    if (!s || !s->enabled) {
        apr_table_setn(r->err_headers_out, "Retry-After", "60");
        return reply(r, HTTP_SERVICE_UNAVAILABLE, "synchronisation is not configured");
    }
    /* The item decides its kind (Graph may use one URL for both); on the lifecycle URL's own
     * path we additionally refuse change items. */
    lifecycle = 0;
    if (s->lifecycle_url && r->uri) {
        apr_uri_t u;
        if (apr_uri_parse(r->pool, s->lifecycle_url, &u) == APR_SUCCESS && u.path
            && !strcmp(u.path, r->uri)) {
            lifecycle = 1;
        }
    }
    return handle_notification(r, s, lifecycle);
}
