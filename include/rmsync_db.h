/* mod_rmsync: PostgreSQL access for the sync core (libpq + APR, no httpd headers).
 *
 * rmsync_db_t is one libpq connection with:
 *  - lazy connect and transparent reconnect: a connection found broken while idle is reset
 *    before the next statement; a failed connect is retried with a bounded backoff (250 ms
 *    doubling to 5 s; within the backoff calls fail fast with RMSYNC_DB_EDOWN, so a handler can
 *    answer 503 at once). Never reconnects inside a transaction: that returns EDOWN.
 *  - per-connection settings applied at connect: connect_timeout, statement_timeout,
 *    TimeZone UTC (timestamptz values come back as "2030-01-01 10:00:00+00"),
 *    application_name "mod_rmsync", TCP keepalives.
 *  - prepared statements only: every concern registers a static table of named statements
 *    with rmsync_db_register(); they are prepared on each (re)connect (and lazily when
 *    registered later) and executed by name.
 *  - results copied into an APR pool (NULL-aware), the PGresult freed at once.
 *  - errors: SQLSTATE + message kept on the handle (rmsync_db_sqlstate/rmsync_db_errmsg).
 *  - LISTEN with the socket fd for poll() and draining of notifications; channels are
 *    re-LISTENed after a reconnect (rmsync_db_generation() tells that one happened, so a
 *    listener rescans what it may have missed).
 *  - advisory locks keyed by text (pg_try_advisory_lock(0x524d5359, hashtext(key))).
 * A handle is used by one thread at a time. Connections belong to the process that opened
 * them: never open one in the httpd parent, never use one across fork (a handle used in
 * another pid logs RMS00205, drops its copy of the socket without touching the other
 * process's session, and connects afresh).
 *
 * rmsync_db_pool_t is a small per-process pool of handles for httpd worker threads
 * (mutex-guarded stack, bounded size, get waits up to a timeout). Create it in child_init.
 *
 * Typical use:
 *   static const rmsync_db_stmt_t stmts[] = {
 *       { "sub_exists", "SELECT 1 FROM rmsync.subscription WHERE subscription_id = $1", 1 },
 *   };
 *   rmsync_db_register(stmts, (int)(sizeof(stmts) / sizeof(stmts[0])));  // once per process
 *   rmsync_db_open(&db, p, conninfo, 5, 10000);
 *   rv = rmsync_db_exec(db, p, "sub_exists", RMSYNC_DB_PARAMS(sub_id), &res);
 *   if (RMSYNC_DB_IS_DOWN(rv)) -> 503;  else if (rv) -> rmsync_db_sqlstate(db) ...
 *   exists = res->nrows > 0;                           // values: rmsync_db_get(res, i, "col")
 *
 * Log ids RMS00200-00299. The conninfo (may hold a password) is never logged.
 */
#ifndef RMSYNC_DB_H
#define RMSYNC_DB_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include <apr_errno.h>

/* Status codes (besides APR_SUCCESS). */
#define RMSYNC_DB_EDOWN    (APR_OS_START_USERERR + 200) /* no connection / lost: answer 503, retry later */
#define RMSYNC_DB_ESQL     (APR_OS_START_USERERR + 201) /* the server refused the statement: see sqlstate */
#define RMSYNC_DB_ETIMEOUT (APR_OS_START_USERERR + 202) /* statement_timeout hit (SQLSTATE 57014) */
#define RMSYNC_DB_ENOSTMT  (APR_OS_START_USERERR + 203) /* no statement registered under that name */
#define RMSYNC_DB_IS_DOWN(rv) ((rv) == RMSYNC_DB_EDOWN)

/* Internal statement names start with "rmsync_db." — do not use that prefix. */
#define RMSYNC_DB_MAX_STMTS 512

/* Parameter list literal: RMSYNC_DB_PARAMS("a", NULL, buf) -> const char *const[]. NULL = SQL NULL. */
#define RMSYNC_DB_PARAMS(...) ((const char *const[]){ __VA_ARGS__ })
#define RMSYNC_DB_NOPARAMS    ((const char *const *)NULL)

typedef struct rmsync_db_t rmsync_db_t;
typedef struct rmsync_db_pool_t rmsync_db_pool_t;

/* One named statement. name: unique per process (use a "<concern>_" prefix); sql uses $1..$n. */
typedef struct rmsync_db_stmt_t {
    const char *name;
    const char *sql;
    int         nparams;
} rmsync_db_stmt_t;

/* A result copied into a pool. values[row * ncols + col] is NULL for SQL NULL. */
typedef struct rmsync_db_result_t {
    int          nrows;
    int          ncols;
    const char **colnames;
    const char **values;
    long         affected;   /* rows affected by INSERT/UPDATE/DELETE (also with RETURNING), else 0 */
    const char  *cmd_status; /* command tag, e.g. "UPDATE 3" */
} rmsync_db_result_t;

typedef struct rmsync_db_notify_t {
    const char *channel;
    const char *payload;
    int         be_pid;      /* backend that sent it */
} rmsync_db_notify_t;

/* ---- statement registry (process-wide, thread-safe) ------------------------------------ */

/* Register n statements (the table must stay valid for the process lifetime, i.e. static).
 * Registering the same name again with the same SQL is a no-op; with other SQL it fails with
 * APR_EEXIST; more than RMSYNC_DB_MAX_STMTS fails with APR_ENOSPC. */
apr_status_t rmsync_db_register(const rmsync_db_stmt_t *stmts, int n);
/* The same for a concern that registers on every job: after the first success *done is set
 * and later calls cost one atomic read. */
apr_status_t rmsync_db_register_once(int *done, const rmsync_db_stmt_t *stmts, int n);

/* ---- connections ----------------------------------------------------------------------- */

/* Create a handle (no connection yet). connect_timeout_s <= 0: libpq's default;
 * statement_timeout_ms <= 0: none. The handle lives in a sub-pool of p; destroying p closes it. */
apr_status_t rmsync_db_open(rmsync_db_t **pdb, apr_pool_t *p, const char *conninfo,
                            int connect_timeout_s, int statement_timeout_ms);
/* Connect now if not connected (honours the backoff). APR_SUCCESS or RMSYNC_DB_EDOWN. */
apr_status_t rmsync_db_connect(rmsync_db_t *db);
/* Round trip "SELECT 1" (connects if needed). */
apr_status_t rmsync_db_ping(rmsync_db_t *db);
/* Close the connection now (the handle stays usable and reconnects on next use). */
void rmsync_db_close(rmsync_db_t *db);
/* 1 when a connection is up (as far as libpq knows). */
int rmsync_db_is_connected(rmsync_db_t *db);
/* Incremented on every successful (re)connect; 0 before the first. */
apr_uint64_t rmsync_db_generation(rmsync_db_t *db);
/* Backoff bounds for failed connects (defaults 250 ms .. 5 s); min 0 disables the backoff. */
void rmsync_db_set_backoff(rmsync_db_t *db, apr_interval_time_t min, apr_interval_time_t max);

/* A process-wide gate every connect passes (the worker processes' connection budget,
 * rmsync_dbbudget.h): take a slot (waiting up to the handle's slot wait; not APR_SUCCESS: the
 * connect fails with RMSYNC_DB_EDOWN, SQLSTATE 53300, without backoff), give it back when the
 * connection closes; pressure() says someone waits for one (pools then close what they get
 * back). NULL (the default, e.g. in the runner): no gate. Set before any connect. */
typedef struct rmsync_db_gate_t {
    apr_status_t (*take)(apr_interval_time_t wait);
    void (*give)(void);
    int (*pressure)(void);
} rmsync_db_gate_t;
void rmsync_db_set_gate(const rmsync_db_gate_t *gate);

/* ---- statements ------------------------------------------------------------------------ */

/* Execute a registered statement. params: as many strings as the statement's nparams (NULL
 * entry = SQL NULL; RMSYNC_DB_NOPARAMS for none). pres: NULL to discard rows, else the result
 * is allocated from pool p. Returns APR_SUCCESS, RMSYNC_DB_EDOWN, RMSYNC_DB_ESQL,
 * RMSYNC_DB_ETIMEOUT or RMSYNC_DB_ENOSTMT. */
apr_status_t rmsync_db_exec(rmsync_db_t *db, apr_pool_t *p, const char *name,
                            const char *const *params, rmsync_db_result_t **pres);
/* Inside a transaction: queue a registered statement whose answer nobody reads; it is sent
 * in one pipeline with the transaction's next statement or its COMMIT (one round trip for
 * all), and its failure is theirs. Outside one (or with 8 queued) it runs at once. */
apr_status_t rmsync_db_defer(rmsync_db_t *db, const char *name, const char *const *params);
/* Same, returning only the affected row count (may be NULL). */
apr_status_t rmsync_db_exec_affected(rmsync_db_t *db, const char *name,
                                     const char *const *params, long *affected);

/* Result accessors: NULL for SQL NULL or out of range. rmsync_db_col: -1 when absent. */
const char *rmsync_db_value(const rmsync_db_result_t *r, int row, int col);
int         rmsync_db_col(const rmsync_db_result_t *r, const char *name);
const char *rmsync_db_get(const rmsync_db_result_t *r, int row, const char *colname);

/* Error of the last failed call on this handle: SQLSTATE ("" when none, "08006" style for
 * connection errors) and message (never NULL, "" when none). Valid until the next call. */
const char *rmsync_db_sqlstate(rmsync_db_t *db);
const char *rmsync_db_errmsg(rmsync_db_t *db);
/* 1 when the last error had this SQLSTATE (e.g. "23505" unique violation, "RMS01" guard). */
int rmsync_db_is_sqlstate(rmsync_db_t *db, const char *sqlstate);

/* ---- transactions ---------------------------------------------------------------------- */

apr_status_t rmsync_db_begin(rmsync_db_t *db);
/* BEGIN and make `crm_user` the acting CRM user for this transaction
 * (set_config('crm.user', crm_user, true)): the sync writes BAs as SYNC_MASTER this way.
 * Both are queued (rmsync_db_defer) and go with the transaction's first statement. */
apr_status_t rmsync_db_begin_as(rmsync_db_t *db, const char *crm_user);
/* COMMIT. A transaction that had failed is rolled back and COMMIT returns RMSYNC_DB_ESQL. */
apr_status_t rmsync_db_commit(rmsync_db_t *db);
/* COMMIT without waiting for the WAL flush (SET LOCAL synchronous_commit = off): only for
 * writes that are derived from Graph and read again after a crash (a delta page with its
 * cursor); a later durable commit on any connection makes it durable too. */
apr_status_t rmsync_db_commit_async(rmsync_db_t *db);
/* ROLLBACK (harmless when no transaction is open; never fails on a dead connection). */
apr_status_t rmsync_db_rollback(rmsync_db_t *db);
int rmsync_db_in_txn(rmsync_db_t *db);

/* ---- LISTEN / NOTIFY ------------------------------------------------------------------- */

/* LISTEN on channel (remembered and re-issued after reconnects; up to 8 channels). */
apr_status_t rmsync_db_listen(rmsync_db_t *db, const char *channel);
/* Socket to poll() for readability, -1 when not connected. It changes on reconnect. */
int rmsync_db_socket(rmsync_db_t *db);
/* Wait up to timeout for input (notifications): APR_SUCCESS when something arrived (or some
 * are already queued), APR_TIMEUP, RMSYNC_DB_EDOWN. Connects first if needed. */
apr_status_t rmsync_db_wait(rmsync_db_t *db, apr_interval_time_t timeout);
/* Read what arrived (non-blocking) and return the queued notifications as an array of
 * rmsync_db_notify_t allocated from p (possibly empty). RMSYNC_DB_EDOWN when the connection
 * broke: reconnect (rmsync_db_connect) and rescan, notifications may have been missed. */
apr_status_t rmsync_db_notifications(rmsync_db_t *db, apr_pool_t *p, apr_array_header_t **out);

/* ---- advisory locks (session level unless noted) -------------------------------------- */

/* Try to take the lock named key; *acquired = 1 when this session holds it now (re-entrant:
 * PostgreSQL counts, so unlock as often as locked). Lost with the connection: compare
 * rmsync_db_generation() before relying on a lock taken earlier. */
apr_status_t rmsync_db_try_lock(rmsync_db_t *db, const char *key, int *acquired);
apr_status_t rmsync_db_unlock(rmsync_db_t *db, const char *key, int *released);
/* Transaction-level variant (released at COMMIT/ROLLBACK); call inside a transaction. */
apr_status_t rmsync_db_try_xact_lock(rmsync_db_t *db, const char *key, int *acquired);

/* ---- per-process pool for worker threads ---------------------------------------------- */

/* Create a pool of at most max handles (connections opened lazily on first use). */
apr_status_t rmsync_db_pool_create(rmsync_db_pool_t **pdbp, apr_pool_t *p, const char *conninfo,
                                   int connect_timeout_s, int statement_timeout_ms, int max);
/* Take a handle for exclusive use; waits up to `wait` for one to be released, then APR_TIMEUP.
 * The handle is not necessarily connected: the next statement connects it (or says EDOWN). */
apr_status_t rmsync_db_pool_get(rmsync_db_pool_t *dbp, apr_interval_time_t wait, rmsync_db_t **pdb);
/* Give it back; an open transaction is rolled back first. */
void rmsync_db_pool_release(rmsync_db_pool_t *dbp, rmsync_db_t *db);
/* How long a connect of its handles waits for a slot of the gate, and after how long unused an
 * idle handle's connection is closed (0: never; checked on every get and by
 * rmsync_db_pool_reap, which returns how many it closed). Released handles are closed at once
 * while the gate reports pressure. */
void rmsync_db_pool_set_limits(rmsync_db_pool_t *dbp, apr_interval_time_t slot_wait,
                               apr_interval_time_t idle_max);
int rmsync_db_pool_reap(rmsync_db_pool_t *dbp);
/* Handles created so far / currently idle (for status pages and tests). */
void rmsync_db_pool_stats(rmsync_db_pool_t *dbp, int *created, int *idle);

#endif /* RMSYNC_DB_H */
