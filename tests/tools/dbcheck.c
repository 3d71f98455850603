/* dbcheck: drives the rmsync_db layer against a live PostgreSQL (tests/test_db_layer.py).
 *
 *   build/tools/dbcheck <check> [CONNINFO]      (CONNINFO defaults to $RMSYNC_TEST_DB)
 *
 * checks: params, defer, timeout, listen, lock, pool, fork, reconnect; bench (numbers only). Each prints "FAIL ..." lines for
 * what went wrong and "OK <check>" at the end; exit status 0 only when all held.
 * `reconnect` is interactive: it reads commands from stdin, one per line, so the test can
 * stop/start/kill the server between them:
 *   down        a statement must fail fast with RMSYNC_DB_EDOWN     -> "OK down <ms>"
 *   up          statements must work again within 15 s (reconnect, re-prepare, re-LISTEN)
 *                                                                   -> "OK up gen=<n>"
 *   txn         BEGIN as SYNC_MASTER and insert a log row           -> "OK txn"
 *   txn_lost    the open transaction must be lost: exec and COMMIT say EDOWN -> "OK txn_lost"
 *   quit
 * Exit 77 (skip) when no conninfo is given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/wait.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>

#include "rmsync.h"
#include "rmsync_db.h"
#include "rmsync_log.h"

static int failures;
static apr_pool_t *gp;
static const char *conninfo;

#define CHECK(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
    printf(__VA_ARGS__); printf("\n"); fflush(stdout); } } while (0)

static const rmsync_db_stmt_t stmts[] = {
    { "t_echo", "SELECT $1::text AS a, $2::text AS b, $3::int AS c", 3 },
    { "t_log", "INSERT INTO rmsync.sync_log (level, action, message) VALUES ('info', $1, $2) RETURNING id", 2 },
    { "t_log_touch", "UPDATE rmsync.sync_log SET message = message || '.' WHERE action = $1", 1 },
    { "t_log_count", "SELECT count(*) FROM rmsync.sync_log WHERE action = $1", 1 },
    { "t_sleep", "SELECT pg_sleep($1::float8)", 1 },
    { "t_notify", "SELECT pg_notify($1, $2)", 2 },
    { "t_request", "INSERT INTO rmsync.request (kind, requested_by) VALUES ($1, 'dbcheck')", 1 },
    { "t_linked_desc", "UPDATE crm.business_activity SET description = $2 WHERE activity_no = $1::bigint", 2 },
    { "t_linked_get", "SELECT description, modified_by FROM crm.business_activity WHERE activity_no = $1::bigint", 1 },
    { "t_missing_table", "SELECT * FROM rmsync.no_such_table", 0 },
    { "t_pid", "SELECT pg_backend_pid()", 0 },
    { "t_enqueue", "SELECT rmsync.notification_enqueue($1, 'change', 'updated', NULL, NULL, $2)", 2 },
    { "t_sync_commit", "SELECT current_setting('synchronous_commit')", 0 },
    { "t_log_last", "SELECT string_agg(message, ',' ORDER BY id) FROM rmsync.sync_log WHERE action = $1", 1 },
};

static rmsync_db_t *open_db(int stmt_timeout_ms)
{
    rmsync_db_t *db = NULL;
    apr_status_t rv = rmsync_db_open(&db, gp, conninfo, 3, stmt_timeout_ms);
    CHECK(rv == APR_SUCCESS && db, "rmsync_db_open: %d", rv);
    return db;
}

static long count_action(rmsync_db_t *db, const char *action)
{
    rmsync_db_result_t *r;
    apr_status_t rv = rmsync_db_exec(db, gp, "t_log_count", RMSYNC_DB_PARAMS(action), &r);
    CHECK(rv == APR_SUCCESS, "count: %s", rmsync_db_errmsg(db));
    return rv == APR_SUCCESS ? atol(rmsync_db_value(r, 0, 0)) : -1;
}

static void check_params(void)
{
    rmsync_db_t *db = open_db(0);
    rmsync_db_result_t *r = NULL;
    const char *tricky = "it's \"quoted\" \\ back; --comment $1 \xc3\xa9";
    apr_status_t rv;
    long n = 0;
    char action[64];

    CHECK(!rmsync_db_is_connected(db), "connected before first use");
    rv = rmsync_db_exec(db, gp, "t_echo", RMSYNC_DB_PARAMS(tricky, NULL, "42"), &r);
    CHECK(rv == APR_SUCCESS, "t_echo: %d %s", rv, rmsync_db_errmsg(db));
    if (r) {
        CHECK(r->nrows == 1 && r->ncols == 3, "shape %dx%d", r->nrows, r->ncols);
        CHECK(!strcmp(rmsync_db_value(r, 0, 0), tricky), "value a = %s", rmsync_db_value(r, 0, 0));
        CHECK(rmsync_db_value(r, 0, 1) == NULL, "NULL came back as '%s'", rmsync_db_value(r, 0, 1));
        CHECK(!strcmp(rmsync_db_get(r, 0, "c"), "42"), "c");
        CHECK(rmsync_db_col(r, "b") == 1 && rmsync_db_col(r, "zz") == -1, "col lookup");
        CHECK(rmsync_db_value(r, 1, 0) == NULL && rmsync_db_value(r, 0, 3) == NULL, "out of range");
    }
    CHECK(rmsync_db_generation(db) == 1, "generation %lu", (unsigned long)rmsync_db_generation(db));

    apr_snprintf(action, sizeof(action), "dbcheck-%d", (int)getpid());
    rv = rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, tricky), &r);
    CHECK(rv == APR_SUCCESS && r->affected == 1 && r->nrows == 1, "insert returning: %s", rmsync_db_errmsg(db));
    rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "second"), NULL);
    rv = rmsync_db_exec_affected(db, "t_log_touch", RMSYNC_DB_PARAMS(action), &n);
    CHECK(rv == APR_SUCCESS && n == 2, "affected %ld", n);

    /* errors: bad input, unknown statement, failing prepare; the handle stays usable */
    rv = rmsync_db_exec(db, gp, "t_echo", RMSYNC_DB_PARAMS("x", "y", "not-an-int"), &r);
    CHECK(rv == RMSYNC_DB_ESQL && rmsync_db_is_sqlstate(db, "22P02"), "bad int: %d %s", rv, rmsync_db_sqlstate(db));
    CHECK(*rmsync_db_errmsg(db), "no error message");
    rv = rmsync_db_exec(db, gp, "no_such_stmt", RMSYNC_DB_NOPARAMS, &r);
    CHECK(rv == RMSYNC_DB_ENOSTMT, "unknown stmt %d", rv);
    rv = rmsync_db_exec(db, gp, "t_missing_table", RMSYNC_DB_NOPARAMS, &r);
    CHECK(rv == RMSYNC_DB_ESQL && rmsync_db_is_sqlstate(db, "42P01"), "missing table %d %s", rv, rmsync_db_sqlstate(db));
    CHECK(rmsync_db_ping(db) == APR_SUCCESS && !*rmsync_db_sqlstate(db), "ping after errors");

    /* registry rules */
    {
        static const rmsync_db_stmt_t same[] = { { "t_echo", "SELECT $1::text AS a, $2::text AS b, $3::int AS c", 3 } };
        static const rmsync_db_stmt_t other[] = { { "t_echo", "SELECT 1", 0 } };
        static const rmsync_db_stmt_t late[] = { { "t_late", "SELECT $1::text || '!'", 1 } };
        CHECK(rmsync_db_register(same, 1) == APR_SUCCESS, "re-register same");
        CHECK(rmsync_db_register(other, 1) == APR_EEXIST, "re-register other sql");
        CHECK(rmsync_db_register(late, 1) == APR_SUCCESS, "late register");
        rv = rmsync_db_exec(db, gp, "t_late", RMSYNC_DB_PARAMS("late"), &r);
        CHECK(rv == APR_SUCCESS && !strcmp(rmsync_db_value(r, 0, 0), "late!"), "late statement: %s", rmsync_db_errmsg(db));
    }

    /* transactions: rollback discards, commit keeps, a failed transaction reports on COMMIT */
    CHECK(rmsync_db_begin(db) == APR_SUCCESS && rmsync_db_in_txn(db), "begin");
    CHECK(rmsync_db_begin(db) == RMSYNC_DB_ESQL, "nested begin refused");
    rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "rolled back"), NULL);
    CHECK(rmsync_db_rollback(db) == APR_SUCCESS && !rmsync_db_in_txn(db), "rollback");
    CHECK(count_action(db, action) == 2, "rollback kept the row");
    rmsync_db_begin(db);
    rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "committed"), NULL);
    CHECK(rmsync_db_commit(db) == APR_SUCCESS, "commit: %s", rmsync_db_errmsg(db));
    CHECK(count_action(db, action) == 3, "commit lost the row");
    rmsync_db_begin(db);
    rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "doomed"), NULL);
    rv = rmsync_db_exec(db, gp, "t_echo", RMSYNC_DB_PARAMS("x", "y", "zz"), NULL);
    CHECK(rv == RMSYNC_DB_ESQL, "error in txn");
    rv = rmsync_db_exec(db, gp, "t_echo", RMSYNC_DB_PARAMS("x", "y", "1"), NULL);
    CHECK(rv == RMSYNC_DB_ESQL && rmsync_db_is_sqlstate(db, "25P02"), "aborted txn: %s", rmsync_db_sqlstate(db));
    rv = rmsync_db_commit(db);
    CHECK(rv == RMSYNC_DB_ESQL && !rmsync_db_in_txn(db), "commit of failed txn: %d", rv);
    CHECK(count_action(db, action) == 3, "failed txn kept a row");
    CHECK(rmsync_db_commit(db) == RMSYNC_DB_ESQL, "commit without txn");

    /* acting CRM user: the guard refuses ALICE on a linked activity, lets SYNC_MASTER through */
    {
        const char *no = getenv("DBCHECK_LINKED_ACTIVITY");
        if (no) {
            CHECK(rmsync_db_begin_as(db, "ALICE") == APR_SUCCESS, "begin_as ALICE");
            rv = rmsync_db_exec(db, gp, "t_linked_desc", RMSYNC_DB_PARAMS(no, "by alice"), NULL);
            CHECK(rv == RMSYNC_DB_ESQL && rmsync_db_is_sqlstate(db, "RMS01"), "guard: %d %s", rv, rmsync_db_sqlstate(db));
            CHECK(strstr(rmsync_db_errmsg(db), "change them in Outlook") != NULL, "guard msg: %s", rmsync_db_errmsg(db));
            rmsync_db_rollback(db);
            CHECK(rmsync_db_begin_as(db, "SYNC_MASTER") == APR_SUCCESS, "begin_as master");
            rv = rmsync_db_exec(db, gp, "t_linked_desc", RMSYNC_DB_PARAMS(no, "by the sync"), NULL);
            CHECK(rv == APR_SUCCESS, "master update: %s", rmsync_db_errmsg(db));
            CHECK(rmsync_db_commit(db) == APR_SUCCESS, "commit master");
            rv = rmsync_db_exec(db, gp, "t_linked_get", RMSYNC_DB_PARAMS(no), &r);
            CHECK(rv == APR_SUCCESS && !strcmp(rmsync_db_value(r, 0, 0), "by the sync")
                  && !strcmp(rmsync_db_value(r, 0, 1), "SYNC_MASTER"), "after master update");
            /* the setting is transaction-local: outside, the guard applies again */
            rv = rmsync_db_exec(db, gp, "t_linked_desc", RMSYNC_DB_PARAMS(no, "no user"), NULL);
            CHECK(rv == RMSYNC_DB_ESQL && rmsync_db_is_sqlstate(db, "RMS01"), "crm.user leaked out of txn");
        }
    }
    rmsync_db_close(db);
    CHECK(!rmsync_db_is_connected(db), "close");
    CHECK(rmsync_db_ping(db) == APR_SUCCESS && rmsync_db_generation(db) == 2, "reopen after close");
}

/* Statements queued in a transaction (rmsync_db_defer, the BEGIN of begin_as) go in order with
 * the next statement or the COMMIT; a queued failure is theirs; a rollback drops the queue;
 * commit_async commits (and only that transaction runs with synchronous_commit off). */
static void check_defer(void)
{
    rmsync_db_t *db = open_db(0);
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;
    const char *before;
    char action[64];

    apr_snprintf(action, sizeof(action), "defer-%d", (int)getpid());
    /* outside a transaction it runs at once */
    CHECK(rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "a")) == APR_SUCCESS, "defer now");
    CHECK(count_action(db, action) == 1, "outside a transaction: not run at once");

    /* queued, then seen by the next statement of the transaction, in order */
    CHECK(rmsync_db_begin_as(db, "SYNC_MASTER") == APR_SUCCESS && rmsync_db_in_txn(db), "begin_as");
    CHECK(rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "b")) == APR_SUCCESS, "defer b");
    CHECK(rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "c")) == APR_SUCCESS, "defer c");
    rv = rmsync_db_exec(db, gp, "t_log_last", RMSYNC_DB_PARAMS(action), &r);
    CHECK(rv == APR_SUCCESS && r && !strcmp(rmsync_db_value(r, 0, 0), "a,b,c"),
          "queued rows before the next statement: %s", r ? rmsync_db_value(r, 0, 0) : "-");
    CHECK(rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "d")) == APR_SUCCESS, "defer d");
    CHECK(rmsync_db_commit(db) == APR_SUCCESS && !rmsync_db_in_txn(db), "commit: %s",
          rmsync_db_errmsg(db));
    CHECK(count_action(db, action) == 4, "a row queued before COMMIT was lost");

    /* a queued statement that fails: COMMIT reports it, nothing of the transaction stays */
    CHECK(rmsync_db_begin_as(db, "SYNC_MASTER") == APR_SUCCESS, "begin_as 2");
    rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "doomed"));
    rmsync_db_defer(db, "t_echo", RMSYNC_DB_PARAMS("x", "y", "not-an-int"));
    rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "after"));
    rv = rmsync_db_commit(db);
    CHECK(rv == RMSYNC_DB_ESQL && rmsync_db_is_sqlstate(db, "22P02") && !rmsync_db_in_txn(db),
          "queued failure on COMMIT: %d %s", rv, rmsync_db_sqlstate(db));
    CHECK(count_action(db, action) == 4, "a failed transaction kept a row");
    /* ... and on the next statement inside the transaction */
    CHECK(rmsync_db_begin_as(db, "SYNC_MASTER") == APR_SUCCESS, "begin_as 3");
    rmsync_db_defer(db, "t_echo", RMSYNC_DB_PARAMS("x", "y", "zz"));
    rv = rmsync_db_exec(db, gp, "t_log_count", RMSYNC_DB_PARAMS(action), &r);
    CHECK(rv == RMSYNC_DB_ESQL && rmsync_db_is_sqlstate(db, "22P02"), "queued failure on exec: %d %s",
          rv, rmsync_db_sqlstate(db));
    rmsync_db_rollback(db);
    CHECK(rmsync_db_ping(db) == APR_SUCCESS, "usable after a queued failure: %s", rmsync_db_errmsg(db));

    /* a rollback drops what is queued (BEGIN included: nothing reached the server) */
    CHECK(rmsync_db_begin_as(db, "SYNC_MASTER") == APR_SUCCESS, "begin_as 4");
    rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "dropped"));
    CHECK(rmsync_db_rollback(db) == APR_SUCCESS && !rmsync_db_in_txn(db), "rollback");
    CHECK(count_action(db, action) == 4, "rolled back row was written");

    /* asynchronous commit: committed, and the session's setting is as before afterwards */
    rv = rmsync_db_exec(db, gp, "t_sync_commit", RMSYNC_DB_NOPARAMS, &r);
    before = rv == APR_SUCCESS ? apr_pstrdup(gp, rmsync_db_value(r, 0, 0)) : "?";
    CHECK(rmsync_db_begin_as(db, "SYNC_MASTER") == APR_SUCCESS, "begin_as 5");
    rmsync_db_defer(db, "t_log", RMSYNC_DB_PARAMS(action, "async"));
    CHECK(rmsync_db_commit_async(db) == APR_SUCCESS, "commit_async: %s", rmsync_db_errmsg(db));
    CHECK(count_action(db, action) == 5, "async commit lost the row");
    rv = rmsync_db_exec(db, gp, "t_sync_commit", RMSYNC_DB_NOPARAMS, &r);
    CHECK(rv == APR_SUCCESS && !strcmp(rmsync_db_value(r, 0, 0), before),
          "synchronous_commit after the async commit: %s (before: %s)",
          r ? rmsync_db_value(r, 0, 0) : "-", before);
    /* without anything queued (plain BEGIN) */
    CHECK(rmsync_db_begin(db) == APR_SUCCESS, "begin");
    rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "async2"), NULL);
    CHECK(rmsync_db_commit_async(db) == APR_SUCCESS && count_action(db, action) == 6,
          "plain commit_async");
}

static void check_timeout(void)
{
    rmsync_db_t *db = open_db(300);
    apr_time_t t0 = apr_time_now();
    apr_status_t rv = rmsync_db_exec(db, gp, "t_sleep", RMSYNC_DB_PARAMS("3"), NULL);
    long ms = (long)apr_time_as_msec(apr_time_now() - t0);
    CHECK(rv == RMSYNC_DB_ETIMEOUT && rmsync_db_is_sqlstate(db, "57014"), "timeout: %d %s", rv, rmsync_db_sqlstate(db));
    CHECK(ms >= 250 && ms < 2000, "took %ld ms", ms);
    CHECK(rmsync_db_exec(db, gp, "t_sleep", RMSYNC_DB_PARAMS("0.05"), NULL) == APR_SUCCESS, "short sleep");
    CHECK(rmsync_db_generation(db) == 1, "timeout must not reconnect");
    printf("timeout after %ld ms\n", ms);
}

static int has_note(apr_array_header_t *a, const char *channel, const char *payload)
{
    int i;
    for (i = 0; i < a->nelts; i++) {
        rmsync_db_notify_t *n = &RMSYNC_ARRAY_IDX(a, i, rmsync_db_notify_t);
        if (!strcmp(n->channel, channel) && !strcmp(n->payload, payload)) {
            return 1;
        }
    }
    return 0;
}

/* Wait until `want` notifications were collected into all (or 3 s). */
static apr_array_header_t *collect(rmsync_db_t *db, int want)
{
    apr_array_header_t *all = apr_array_make(gp, 4, sizeof(rmsync_db_notify_t)), *got;
    apr_time_t end = apr_time_now() + apr_time_from_sec(3);
    while (all->nelts < want && apr_time_now() < end) {
        apr_status_t rv = rmsync_db_wait(db, apr_time_from_msec(500));
        if (rv == APR_SUCCESS) {
            CHECK(rmsync_db_notifications(db, gp, &got) == APR_SUCCESS, "notifications");
            apr_array_cat(all, got);
        }
        else if (rv != APR_TIMEUP) {
            CHECK(0, "wait: %d", rv);
            break;
        }
    }
    return all;
}

static void check_listen(void)
{
    rmsync_db_t *a = open_db(0), *b = open_db(0);
    apr_array_header_t *got;
    apr_time_t t0;
    apr_status_t rv;

    CHECK(rmsync_db_socket(a) == -1, "socket before connect");
    CHECK(rmsync_db_listen(a, "rmsync") == APR_SUCCESS, "listen: %s", rmsync_db_errmsg(a));
    CHECK(rmsync_db_listen(a, "odd \"chan\"") == APR_SUCCESS, "listen odd: %s", rmsync_db_errmsg(a));
    CHECK(rmsync_db_socket(a) >= 0, "socket");
    t0 = apr_time_now();
    rv = rmsync_db_wait(a, apr_time_from_msec(300));
    CHECK(rv == APR_TIMEUP, "idle wait: %d", rv);
    CHECK(apr_time_now() - t0 >= apr_time_from_msec(250), "wait returned early");

    CHECK(rmsync_db_exec(b, gp, "t_request", RMSYNC_DB_PARAMS("retry"), NULL) == APR_SUCCESS, "request insert: %s", rmsync_db_errmsg(b));
    CHECK(rmsync_db_exec(b, gp, "t_notify", RMSYNC_DB_PARAMS("rmsync", "it's 'quoted'"), NULL) == APR_SUCCESS, "notify");
    CHECK(rmsync_db_exec(b, gp, "t_notify", RMSYNC_DB_PARAMS("odd \"chan\"", "x"), NULL) == APR_SUCCESS, "notify odd");
    CHECK(rmsync_db_exec(b, gp, "t_notify", RMSYNC_DB_PARAMS("not_listened", "x"), NULL) == APR_SUCCESS, "notify other");
    got = collect(a, 3);
    CHECK(got->nelts == 3, "got %d notifications", got->nelts);
    CHECK(has_note(got, "rmsync", "request"), "trigger notification missing");
    CHECK(has_note(got, "rmsync", "it's 'quoted'"), "quoted payload missing");
    CHECK(has_note(got, "odd \"chan\"", "x"), "odd channel missing");
    /* statements on the listening handle keep the queue intact */
    rmsync_db_exec(b, gp, "t_notify", RMSYNC_DB_PARAMS("rmsync", "late"), NULL);
    apr_sleep(apr_time_from_msec(100));
    CHECK(rmsync_db_ping(a) == APR_SUCCESS, "ping on listener");
    got = collect(a, 1);
    CHECK(got->nelts == 1 && has_note(got, "rmsync", "late"), "notification across a statement");
}

static void check_lock(void)
{
    rmsync_db_t *a = open_db(0), *b = open_db(0);
    int got = -1;

    CHECK(rmsync_db_try_lock(a, "rep:ALICE", &got) == APR_SUCCESS && got == 1, "a lock");
    CHECK(rmsync_db_try_lock(b, "rep:ALICE", &got) == APR_SUCCESS && got == 0, "b must not get it");
    CHECK(rmsync_db_try_lock(b, "rep:BOB", &got) == APR_SUCCESS && got == 1, "b other key");
    CHECK(rmsync_db_unlock(b, "rep:ALICE", &got) == APR_SUCCESS && got == 0, "b unlock not held");
    CHECK(rmsync_db_unlock(a, "rep:ALICE", &got) == APR_SUCCESS && got == 1, "a unlock");
    CHECK(rmsync_db_try_lock(b, "rep:ALICE", &got) == APR_SUCCESS && got == 1, "b after release");
    /* closing the session frees its locks */
    rmsync_db_close(b);
    {   /* the server releases them when the backend has exited: asynchronous, give it 2 s */
        apr_time_t end = apr_time_now() + apr_time_from_sec(2);
        while (rmsync_db_try_lock(a, "rep:ALICE", &got) == APR_SUCCESS && !got && apr_time_now() < end) {
            apr_sleep(apr_time_from_msec(20));
        }
    }
    CHECK(got == 1, "a after b closed");
    CHECK(rmsync_db_try_lock(a, "rep:ALICE", &got) == APR_SUCCESS && got == 1, "re-entrant");
    /* transaction-level */
    CHECK(rmsync_db_try_xact_lock(b, "x", &got) == RMSYNC_DB_ESQL, "xact lock outside txn");
    rmsync_db_begin(b);
    CHECK(rmsync_db_try_xact_lock(b, "x", &got) == APR_SUCCESS && got == 1, "xact lock");
    CHECK(rmsync_db_try_lock(a, "x", &got) == APR_SUCCESS && got == 0, "xact lock held");
    rmsync_db_commit(b);
    CHECK(rmsync_db_try_lock(a, "x", &got) == APR_SUCCESS && got == 1, "xact lock released at commit");
}

typedef struct { rmsync_db_pool_t *dbp; int errors; int iterations; } worker_t;

static void *APR_THREAD_FUNC pool_worker(apr_thread_t *t, void *baton)
{
    worker_t *w = baton;
    int i;
    for (i = 0; i < w->iterations; i++) {
        rmsync_db_t *db = NULL;
        if (rmsync_db_pool_get(w->dbp, apr_time_from_sec(10), &db) != APR_SUCCESS
            || rmsync_db_ping(db) != APR_SUCCESS) {
            w->errors++;
        }
        rmsync_db_pool_release(w->dbp, db);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static void *APR_THREAD_FUNC delayed_release(apr_thread_t *t, void *baton)
{
    void **args = baton;
    apr_sleep(apr_time_from_msec(200));
    rmsync_db_pool_release(args[0], args[1]);
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static void check_pool(void)
{
    rmsync_db_pool_t *dbp;
    rmsync_db_t *a, *b, *c = NULL;
    apr_thread_t *th[8];
    worker_t w[8];
    apr_time_t t0;
    apr_status_t rv, trv;
    int created, idle, i, errors = 0;
    void *args[2];
    char action[64];

    CHECK(rmsync_db_pool_create(&dbp, gp, conninfo, 3, 0, 2) == APR_SUCCESS, "pool create");
    CHECK(rmsync_db_pool_get(dbp, 0, &a) == APR_SUCCESS, "get a");
    CHECK(rmsync_db_pool_get(dbp, 0, &b) == APR_SUCCESS && a != b, "get b");
    t0 = apr_time_now();
    rv = rmsync_db_pool_get(dbp, apr_time_from_msec(150), &c);
    CHECK(rv == APR_TIMEUP && !c, "third get must time out: %d", rv);
    CHECK(apr_time_now() - t0 >= apr_time_from_msec(140), "timed out too early");
    CHECK(rmsync_db_ping(a) == APR_SUCCESS && rmsync_db_ping(b) == APR_SUCCESS, "pings");

    /* a waiter gets the handle another thread releases */
    args[0] = dbp;
    args[1] = a;
    apr_thread_create(&th[0], NULL, delayed_release, args, gp);
    rv = rmsync_db_pool_get(dbp, apr_time_from_sec(3), &c);
    CHECK(rv == APR_SUCCESS && c == a, "waiter: %d", rv);
    apr_thread_join(&trv, th[0]);

    /* a handle released inside a transaction is rolled back */
    apr_snprintf(action, sizeof(action), "pool-%d", (int)getpid());
    rmsync_db_begin(c);
    rmsync_db_exec(c, gp, "t_log", RMSYNC_DB_PARAMS(action, "never"), NULL);
    rmsync_db_pool_release(dbp, c);
    CHECK(rmsync_db_pool_get(dbp, 0, &c) == APR_SUCCESS && !rmsync_db_in_txn(c), "released txn");
    CHECK(count_action(c, action) == 0, "release committed the transaction");
    rmsync_db_pool_release(dbp, c);
    rmsync_db_pool_release(dbp, b);
    rmsync_db_pool_stats(dbp, &created, &idle);
    CHECK(created == 2 && idle == 2, "stats %d %d", created, idle);

    /* 8 threads x 40 get/ping/release on 2 handles */
    for (i = 0; i < 8; i++) {
        w[i].dbp = dbp;
        w[i].errors = 0;
        w[i].iterations = 40;
        apr_thread_create(&th[i], NULL, pool_worker, &w[i], gp);
    }
    for (i = 0; i < 8; i++) {
        apr_thread_join(&trv, th[i]);
        errors += w[i].errors;
    }
    rmsync_db_pool_stats(dbp, &created, &idle);
    CHECK(errors == 0 && created == 2 && idle == 2, "threads: errors %d created %d idle %d", errors, created, idle);
}

static const char *backend_pid(rmsync_db_t *db)
{
    rmsync_db_result_t *r;
    if (rmsync_db_exec(db, gp, "t_pid", RMSYNC_DB_NOPARAMS, &r) != APR_SUCCESS) {
        return "?";
    }
    return rmsync_db_value(r, 0, 0);
}

/* A handle inherited across fork: the child must not use (or terminate) the parent's session. */
static void check_fork(void)
{
    rmsync_db_t *db = open_db(0);
    const char *pid0;
    pid_t child;
    int status = -1;

    CHECK(rmsync_db_ping(db) == APR_SUCCESS, "ping");
    pid0 = backend_pid(db);
    fflush(stdout);
    child = fork();
    if (child == 0) {
        const char *pid1 = backend_pid(db);
        int bad = !strcmp(pid1, "?") || !strcmp(pid1, pid0) || rmsync_db_generation(db) != 2;
        printf("child backend %s (parent's %s) gen %lu\n", pid1, pid0, (unsigned long)rmsync_db_generation(db));
        fflush(stdout);
        rmsync_db_close(db);
        _exit(bad ? 1 : 0);
    }
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    CHECK(!strcmp(backend_pid(db), pid0) && rmsync_db_generation(db) == 1,
          "parent's session disturbed by the child");
}

typedef struct { rmsync_db_pool_t *dbp; int n; int errors; int base; } bench_t;

static void *APR_THREAD_FUNC bench_worker(apr_thread_t *t, void *baton)
{
    bench_t *b = baton;
    char ev[32];
    int i;
    for (i = 0; i < b->n; i++) {
        rmsync_db_t *db = NULL;
        apr_snprintf(ev, sizeof(ev), "bench-%d-%d", b->base, i);
        if (rmsync_db_pool_get(b->dbp, apr_time_from_sec(10), &db) != APR_SUCCESS
            || rmsync_db_exec(db, NULL, "t_enqueue", RMSYNC_DB_PARAMS("bench-sub", ev), NULL) != APR_SUCCESS) {
            b->errors++;
        }
        rmsync_db_pool_release(b->dbp, db);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

/* Throughput of the webhook's durable insert through the pool: 1 and 4 threads. */
static void check_bench(void)
{
    int threads[] = { 1, 4 }, k, i, n = 2000;
    for (k = 0; k < 2; k++) {
        rmsync_db_pool_t *dbp;
        rmsync_db_t *warm[4];
        apr_thread_t *th[4];
        bench_t b[4];
        apr_status_t trv;
        apr_time_t t0;
        double secs;
        int errors = 0, per = n / threads[k];

        rmsync_db_pool_create(&dbp, gp, conninfo, 3, 0, threads[k]);
        for (i = 0; i < threads[k]; i++) {          /* connect outside the timing */
            rmsync_db_pool_get(dbp, 0, &warm[i]);
            CHECK(rmsync_db_ping(warm[i]) == APR_SUCCESS, "warm up");
        }
        for (i = 0; i < threads[k]; i++) {
            rmsync_db_pool_release(dbp, warm[i]);
        }
        t0 = apr_time_now();
        for (i = 0; i < threads[k]; i++) {
            b[i].dbp = dbp;
            b[i].n = per;
            b[i].errors = 0;
            b[i].base = k * 100 + i;
            apr_thread_create(&th[i], NULL, bench_worker, &b[i], gp);
        }
        for (i = 0; i < threads[k]; i++) {
            apr_thread_join(&trv, th[i]);
            errors += b[i].errors;
        }
        secs = (double)(apr_time_now() - t0) / APR_USEC_PER_SEC;
        CHECK(errors == 0, "%d errors", errors);
        printf("bench enqueue threads=%d n=%d %.0f/s %.3f ms/insert\n", threads[k], per * threads[k],
               per * threads[k] / secs, secs * 1000.0 / (per * threads[k]));
    }
}

static int read_cmd(char *buf, size_t len)
{
    if (!fgets(buf, (int)len, stdin)) {
        return 0;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    return 1;
}

static void check_reconnect(void)
{
    rmsync_db_t *db = open_db(0);
    char cmd[64], action[64];
    rmsync_db_result_t *r;
    apr_status_t rv;

    rmsync_db_set_backoff(db, apr_time_from_msec(50), apr_time_from_msec(400));
    apr_snprintf(action, sizeof(action), "reconnect-%d", (int)getpid());
    CHECK(rmsync_db_listen(db, "rmsync") == APR_SUCCESS, "listen");
    printf("READY\n");
    fflush(stdout);
    while (read_cmd(cmd, sizeof(cmd)) && strcmp(cmd, "quit")) {
        if (!strcmp(cmd, "down")) {
            apr_time_t t0 = apr_time_now();
            rv = rmsync_db_exec(db, gp, "t_echo", RMSYNC_DB_PARAMS("a", "b", "1"), NULL);
            CHECK(RMSYNC_DB_IS_DOWN(rv), "down: got %d (%s)", rv, rmsync_db_errmsg(db));
            rv = rmsync_db_exec(db, gp, "t_echo", RMSYNC_DB_PARAMS("a", "b", "1"), NULL);
            CHECK(RMSYNC_DB_IS_DOWN(rv), "down again: got %d", rv);
            CHECK(!rmsync_db_is_connected(db) && rmsync_db_socket(db) == -1, "still connected");
            printf("OK down %ld\n", (long)apr_time_as_msec(apr_time_now() - t0));
        }
        else if (!strcmp(cmd, "up")) {
            apr_time_t end = apr_time_now() + apr_time_from_sec(15);
            apr_uint64_t gen0 = rmsync_db_generation(db);
            rmsync_db_t *other = open_db(0);
            apr_array_header_t *got = NULL;
            int tries = 0;
            do {
                rv = rmsync_db_exec(db, gp, "t_echo", RMSYNC_DB_PARAMS("a", NULL, "7"), &r);
                tries++;
                if (rv != APR_SUCCESS) {
                    apr_sleep(apr_time_from_msec(100));
                }
            } while (RMSYNC_DB_IS_DOWN(rv) && apr_time_now() < end);
            CHECK(rv == APR_SUCCESS && !strcmp(rmsync_db_value(r, 0, 2), "7"), "up: %d %s", rv, rmsync_db_errmsg(db));
            CHECK(rmsync_db_generation(db) > gen0, "generation did not move");
            /* LISTEN was re-issued on the new session */
            rmsync_db_exec(other, gp, "t_notify", RMSYNC_DB_PARAMS("rmsync", "after-restart"), NULL);
            if (rmsync_db_wait(db, apr_time_from_sec(3)) == APR_SUCCESS) {
                rmsync_db_notifications(db, gp, &got);
            }
            CHECK(got && has_note(got, "rmsync", "after-restart"), "no notification after reconnect");
            printf("OK up gen=%lu tries=%d\n", (unsigned long)rmsync_db_generation(db), tries);
        }
        else if (!strcmp(cmd, "txn")) {
            CHECK(rmsync_db_begin_as(db, "SYNC_MASTER") == APR_SUCCESS, "begin_as");
            CHECK(rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "in txn"), NULL) == APR_SUCCESS, "insert");
            printf("OK txn\n");
        }
        else if (!strcmp(cmd, "txn_lost")) {
            apr_time_t end = apr_time_now() + apr_time_from_sec(15);
            rv = rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "after loss"), NULL);
            CHECK(RMSYNC_DB_IS_DOWN(rv), "exec in lost txn: %d", rv);
            rv = rmsync_db_exec(db, gp, "t_log", RMSYNC_DB_PARAMS(action, "after loss 2"), NULL);
            CHECK(RMSYNC_DB_IS_DOWN(rv), "exec in lost txn must not reconnect: %d", rv);
            CHECK(rmsync_db_commit(db) == RMSYNC_DB_EDOWN && !rmsync_db_in_txn(db), "commit of lost txn");
            do {
                rv = rmsync_db_ping(db);
                if (rv != APR_SUCCESS) {
                    apr_sleep(apr_time_from_msec(100));
                }
            } while (rv != APR_SUCCESS && apr_time_now() < end);
            CHECK(rv == APR_SUCCESS, "reconnect after lost txn");
            CHECK(count_action(db, action) == 0, "lost transaction left rows");
            printf("OK txn_lost\n");
        }
        else {
            CHECK(0, "unknown command '%s'", cmd);
        }
        fflush(stdout);
    }
}

int main(int argc, const char *const *argv)
{
    const char *check = argc > 1 ? argv[1] : "";

    conninfo = argc > 2 ? argv[2] : getenv("RMSYNC_TEST_DB");
    if (!conninfo || !*conninfo) {
        printf("SKIP dbcheck: no conninfo (argument or RMSYNC_TEST_DB)\n");
        return 77;
    }
    apr_app_initialize(&argc, &argv, NULL);
    apr_pool_create(&gp, NULL);
    rmsync_log_set_sink(NULL, NULL, getenv("DBCHECK_DEBUG") ? RMSYNC_LOG_DEBUG : RMSYNC_LOG_WARNING);
    if (rmsync_db_register(stmts, (int)(sizeof(stmts) / sizeof(stmts[0]))) != APR_SUCCESS) {
        printf("FAIL register\n");
        return 1;
    }
    if (!strcmp(check, "params")) check_params();
    else if (!strcmp(check, "timeout")) check_timeout();
    else if (!strcmp(check, "defer")) check_defer();
    else if (!strcmp(check, "listen")) check_listen();
    else if (!strcmp(check, "lock")) check_lock();
    else if (!strcmp(check, "pool")) check_pool();
    else if (!strcmp(check, "fork")) check_fork();
    else if (!strcmp(check, "bench")) check_bench();
    else if (!strcmp(check, "reconnect")) check_reconnect();
    else {
        printf("usage: dbcheck params|defer|timeout|listen|lock|pool|fork|reconnect|bench [CONNINFO]\n");
        return 2;
    }
    if (!failures) {
        printf("OK %s\n", check);
    }
    fflush(stdout);
    apr_pool_destroy(gp);
    apr_terminate();
    return failures ? 1 : 0;
}
