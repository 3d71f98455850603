/* mod_rmsync, used by both Apache worker processes and the sync runner: PostgreSQL access (see
 * rmsync_db.h).
 *
 * One rmsync_db_t wraps one PGconn. All statements the module runs are registered, named and
 * prepared per connection; results are copied into the caller's pool and the PGresult freed
 * at once. Connection loss is detected before a statement (idle socket readable + EOF) and
 * after one (CONNECTION_BAD, SQLSTATE class 08 or 57P0x) and turns into RMSYNC_DB_EDOWN; the
 * next use outside a transaction reconnects, honouring a bounded backoff.
 */
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <pthread.h>

#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>
#include <libpq-fe.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"

#define DB_MAX_CHANNELS 8
#define DB_MAX_DEFER    8
#define DB_LOCK_CLASS   "1380799321"   /* 0x524d5359 "RMSY": advisory lock namespace */

/* ---- statement registry ------------------------------------------------------------------ */

static pthread_mutex_t reg_mutex = PTHREAD_MUTEX_INITIALIZER;
static const rmsync_db_stmt_t *reg[RMSYNC_DB_MAX_STMTS];
static int reg_n;   /* entries are written before reg_n is published (release/acquire) */

static const rmsync_db_stmt_t internal_stmts[] = {
    { "rmsync_db.ping", "SELECT 1", 0 },
    { "rmsync_db.set_user", "SELECT set_config('crm.user', $1, true)", 1 },
    { "rmsync_db.try_lock", "SELECT pg_try_advisory_lock(" DB_LOCK_CLASS ", hashtext($1))", 1 },
    { "rmsync_db.unlock", "SELECT pg_advisory_unlock(" DB_LOCK_CLASS ", hashtext($1))", 1 },
    { "rmsync_db.try_xact_lock", "SELECT pg_try_advisory_xact_lock(" DB_LOCK_CLASS ", hashtext($1))", 1 },
};
static pthread_once_t internal_once = PTHREAD_ONCE_INIT;

static int reg_count(void)
{
    return __atomic_load_n(&reg_n, __ATOMIC_ACQUIRE);
}

apr_status_t rmsync_db_register(const rmsync_db_stmt_t *stmts, int n)
{
    apr_status_t rv = APR_SUCCESS;
    int i, j, count;

    pthread_mutex_lock(&reg_mutex);
    count = reg_n;
    for (i = 0; i < n && rv == APR_SUCCESS; i++) {
        const rmsync_db_stmt_t *s = &stmts[i];
        int dup = 0;
        if (!s->name || !*s->name || !s->sql || s->nparams < 0) {
            rv = APR_EINVAL;
            break;
        }
        for (j = 0; j < count; j++) {
            if (!strcmp(reg[j]->name, s->name)) {
                if (strcmp(reg[j]->sql, s->sql) || reg[j]->nparams != s->nparams) {
                    rmsync_log(RMSYNC_LOG_ERR, APR_EEXIST, RMSYNC_LOGNO(00206)
                               "statement '%s' registered twice with different SQL", s->name);
                    rv = APR_EEXIST;
                }
                dup = 1;
                break;
            }
        }
        if (dup) {
            continue;
        }
        if (count >= RMSYNC_DB_MAX_STMTS) {
            rv = APR_ENOSPC;
            break;
        }
        reg[count++] = s;
        __atomic_store_n(&reg_n, count, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&reg_mutex);
    return rv;
}

apr_status_t rmsync_db_register_once(int *done, const rmsync_db_stmt_t *stmts, int n)
{
    apr_status_t rv = APR_SUCCESS;

    /* registering again is a no-op, so a race between two threads is harmless */
    if (!__atomic_load_n(done, __ATOMIC_ACQUIRE)
        && (rv = rmsync_db_register(stmts, n)) == APR_SUCCESS) {
        __atomic_store_n(done, 1, __ATOMIC_RELEASE);
    }
    return rv;
}

static void register_internal(void)
{
    rmsync_db_register(internal_stmts, (int)(sizeof(internal_stmts) / sizeof(internal_stmts[0])));
}

static int reg_find(const char *name)
{
    int i, n = reg_count();
    for (i = 0; i < n; i++) {
        if (!strcmp(reg[i]->name, name)) {
            return i;
        }
    }
    return -1;
}

/* ---- the handle ------------------------------------------------------------------------- */

/* The process's connection gate (the worker processes' budget, rmsync_dbbudget.h), or NULL. */
static const rmsync_db_gate_t *db_gate;

void rmsync_db_set_gate(const rmsync_db_gate_t *gate)
{
    db_gate = gate;
}

struct rmsync_db_t {
    apr_pool_t *pool;
    const char *conninfo;
    int connect_timeout_s;
    int statement_timeout_ms;
    PGconn *conn;
    pid_t pid;                         /* process the connection belongs to */
    apr_uint64_t generation;
    int in_txn;                        /* BEGIN sent (or queued), no COMMIT/ROLLBACK yet */
    int txn_lost;                      /* the connection died inside that transaction */
    /* statements queued inside a transaction whose answers nobody reads (rmsync_db_defer,
     * the BEGIN of rmsync_db_begin_as): sent in one pipeline with the next statement that is
     * waited for, or with the COMMIT -- one round trip instead of one each */
    struct { int idx; const char *sql; const char **params; } defer[DB_MAX_DEFER];
    int ndefer;
    apr_pool_t *defer_pool;            /* their parameters; cleared when they are sent */
    unsigned char prepared[RMSYNC_DB_MAX_STMTS];
    const char *channels[DB_MAX_CHANNELS];
    int nchannels;
    PGnotify *peek;                    /* a notification seen by rmsync_db_wait, not yet handed out */
    int fatal_seen;                    /* the server sent FATAL while we were idle */
    apr_time_t next_connect;
    apr_interval_time_t backoff, backoff_min, backoff_max;
    int has_slot;                      /* holds a slot of the process's gate (connection budget) */
    apr_interval_time_t slot_wait;     /* how long a connect waits for a slot */
    apr_time_t last_used;              /* when a pool last got it back */
    char sqlstate[6];
    char errmsg[1024];
};

static void set_error(rmsync_db_t *db, const char *state, const char *msg)
{
    apr_size_t len;
    apr_cpystrn(db->sqlstate, state ? state : "", sizeof(db->sqlstate));
    apr_cpystrn(db->errmsg, msg ? msg : "", sizeof(db->errmsg));
    /* libpq messages end in a newline */
    len = strlen(db->errmsg);
    while (len > 0 && (db->errmsg[len - 1] == '\n' || db->errmsg[len - 1] == ' ')) {
        db->errmsg[--len] = '\0';
    }
}

static void clear_error(rmsync_db_t *db)
{
    db->sqlstate[0] = '\0';
    db->errmsg[0] = '\0';
}

/* Forget a connection that belongs to another process: close our copy of the socket without
 * sending Terminate (PQfinish would end the other process's session). The PGconn leaks. */
static void forget_foreign(rmsync_db_t *db)
{
    if (db->conn) {
        int fd = PQsocket(db->conn);
        if (fd >= 0) {
            close(fd);
        }
        db->conn = NULL;
    }
    db->has_slot = 0;                  /* the other process's slot: not ours to give */
    db->in_txn = db->txn_lost = 0;
    db->peek = NULL;
    db->pid = getpid();
}

/* Give the gate's slot back (the connection is closed or was never made). */
static void give_slot(rmsync_db_t *db)
{
    if (db->has_slot) {
        db->has_slot = 0;
        if (db_gate) {
            db_gate->give();
        }
    }
}

static void drop_conn(rmsync_db_t *db)
{
    if (db->conn) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    give_slot(db);
    db->ndefer = 0;             /* never sent (their pool may be gone already: cleanup) */
    if (db->in_txn) {
        db->txn_lost = 1;
    }
}

/* The session is gone (db->errmsg says why): logged, dropped; the next call reconnects. */
static apr_status_t conn_lost(rmsync_db_t *db)
{
    rmsync_log(RMSYNC_LOG_WARNING, RMSYNC_DB_EDOWN, RMSYNC_LOGNO(00201)
               "database connection lost: %s", db->errmsg);
    drop_conn(db);
    return RMSYNC_DB_EDOWN;
}

static apr_status_t db_cleanup(void *baton)
{
    rmsync_db_t *db = baton;
    if (db->pid != getpid()) {
        forget_foreign(db);
    }
    drop_conn(db);
    if (db->peek) {
        PQfreemem(db->peek);
        db->peek = NULL;
    }
    return APR_SUCCESS;
}

/* Server messages outside a statement. A FATAL one (e.g. "terminating connection due to
 * administrator command" on shutdown) arrives here while idle: the session is gone. */
static void notice_cb(void *baton, const PGresult *res)
{
    rmsync_db_t *db = baton;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC"))) {
        db->fatal_seen = 1;
    }
    rmsync_log(RMSYNC_LOG_DEBUG, APR_SUCCESS, "database notice: %s", PQresultErrorMessage(res));
}

apr_status_t rmsync_db_open(rmsync_db_t **pdb, apr_pool_t *p, const char *conninfo,
                            int connect_timeout_s, int statement_timeout_ms)
{
    apr_pool_t *sub;
    rmsync_db_t *db;
    apr_status_t rv;

    *pdb = NULL;
    if (!conninfo) {
        return APR_EINVAL;
    }
    pthread_once(&internal_once, register_internal);
    if ((rv = apr_pool_create(&sub, p)) != APR_SUCCESS) {
        return rv;
    }
    apr_pool_tag(sub, "rmsync_db");
    db = apr_pcalloc(sub, sizeof(*db));
    db->pool = sub;
    db->conninfo = apr_pstrdup(sub, conninfo);
    db->connect_timeout_s = connect_timeout_s;
    db->statement_timeout_ms = statement_timeout_ms;
    db->pid = getpid();
    db->backoff_min = db->backoff = apr_time_from_msec(250);
    db->backoff_max = apr_time_from_sec(5);
    apr_pool_cleanup_register(sub, db, db_cleanup, apr_pool_cleanup_null);
    *pdb = db;
    return APR_SUCCESS;
}

void rmsync_db_set_backoff(rmsync_db_t *db, apr_interval_time_t min, apr_interval_time_t max)
{
    db->backoff_min = db->backoff = min;
    db->backoff_max = max < min ? min : max;
    db->next_connect = 0;
}

static int is_down_state(const char *state)
{
    return state && (!strncmp(state, "08", 2) || !strcmp(state, "57P01")
                     || !strcmp(state, "57P02") || !strcmp(state, "57P03"));
}

/* Everything a fresh session needs: settings, prepared statements, LISTENs. */
static apr_status_t setup_session(rmsync_db_t *db)
{
    char sql[160];
    PGresult *res;
    int i, n;

    apr_snprintf(sql, sizeof(sql), "SET TIME ZONE 'UTC'; SET statement_timeout = %d",
                 db->statement_timeout_ms > 0 ? db->statement_timeout_ms : 0);
    res = PQexec(db->conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        set_error(db, PQresultErrorField(res, PG_DIAG_SQLSTATE), PQerrorMessage(db->conn));
        PQclear(res);
        rmsync_log(RMSYNC_LOG_ERR, RMSYNC_DB_EDOWN, RMSYNC_LOGNO(00204)
                   "database session setup failed: %s", db->errmsg);
        return RMSYNC_DB_EDOWN;
    }
    PQclear(res);

    memset(db->prepared, 0, sizeof(db->prepared));
    n = reg_count();
    for (i = 0; i < n; i++) {
        res = PQprepare(db->conn, reg[i]->name, reg[i]->sql, reg[i]->nparams, NULL);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
            db->prepared[i] = 1;
        }
        else if (PQstatus(db->conn) == CONNECTION_BAD) {
            set_error(db, "08006", PQerrorMessage(db->conn));
            PQclear(res);
            return RMSYNC_DB_EDOWN;
        }
        else {
            /* the statement stays unprepared: its exec retries and reports the error */
            rmsync_log(RMSYNC_LOG_ERR, RMSYNC_DB_ESQL, RMSYNC_LOGNO(00203)
                       "preparing statement '%s' failed: %s", reg[i]->name,
                       PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        }
        PQclear(res);
    }

    for (i = 0; i < db->nchannels; i++) {
        char *ident = PQescapeIdentifier(db->conn, db->channels[i], strlen(db->channels[i]));
        if (!ident) {
            set_error(db, "08006", PQerrorMessage(db->conn));
            return RMSYNC_DB_EDOWN;
        }
        apr_snprintf(sql, sizeof(sql), "LISTEN %s", ident);
        PQfreemem(ident);
        res = PQexec(db->conn, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            set_error(db, PQresultErrorField(res, PG_DIAG_SQLSTATE), PQerrorMessage(db->conn));
            PQclear(res);
            rmsync_log(RMSYNC_LOG_ERR, RMSYNC_DB_EDOWN, RMSYNC_LOGNO(00208)
                       "LISTEN %s failed: %s", db->channels[i], db->errmsg);
            return RMSYNC_DB_EDOWN;
        }
        PQclear(res);
    }
    return APR_SUCCESS;
}

/* A connection that looks fine to libpq may have been closed by the server while idle
 * (restart, crash, idle timeout): its socket is then readable. Consume and check. */
static void check_idle(rmsync_db_t *db)
{
    struct pollfd pfd;
    int i, lost = 0;
    if (!db->conn || db->in_txn) {
        return;
    }
    if (PQstatus(db->conn) != CONNECTION_OK) {
        drop_conn(db);
        return;
    }
    pfd.fd = PQsocket(db->conn);
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (pfd.fd < 0) {
        drop_conn(db);
        return;
    }
    /* the FATAL message and the EOF may take separate reads */
    for (i = 0; i < 4 && !db->fatal_seen && poll(&pfd, 1, 0) > 0; i++) {
        if (!PQconsumeInput(db->conn) || PQstatus(db->conn) != CONNECTION_OK) {
            lost = 1;
            break;
        }
    }
    if (lost || db->fatal_seen) {
        set_error(db, "08006", lost ? PQerrorMessage(db->conn) : "server closed the session");
        conn_lost(db);
    }
}

/* PQconnectdbParams with a timeout kept to the millisecond: libpq's own connect_timeout counts
 * whole seconds from time() (a "2" can expire 1.0x s after the start, while a slow server is
 * still letting the session in). timeout_s <= 0: no limit. The caller checks PQstatus. */
static PGconn *connect_within(const char *const *keys, const char *const *vals, int timeout_s,
                              int *timed_out)
{
    apr_time_t deadline = apr_time_now() + apr_time_from_sec(timeout_s);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    PGconn *conn;

    *timed_out = 0;
    if (timeout_s <= 0) {
        return PQconnectdbParams(keys, vals, 1);
    }
    conn = PQconnectStartParams(keys, vals, 1);
    if (!conn || PQstatus(conn) == CONNECTION_BAD) {
        return conn;
    }
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd pfd;
        apr_interval_time_t left = deadline - apr_time_now();
        int rc;

        if (left <= 0) {
            *timed_out = 1;
            break;
        }
        pfd.fd = PQsocket(conn);
        pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
        pfd.revents = 0;
        rc = poll(&pfd, 1, (int)((left + 999) / 1000));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc < 0) {
            break;                          /* not connected: the caller reports it */
        }
        if (rc == 0) {
            continue;                       /* the deadline check above ends it */
        }
        st = PQconnectPoll(conn);
    }
    if (*timed_out) {
        PQfinish(conn);                     /* the caller sees NULL + timed_out */
        return NULL;
    }
    return conn;
}

apr_status_t rmsync_db_connect(rmsync_db_t *db)
{
    const char *keys[12], *vals[12];
    apr_time_t now;
    int k = 0, timed_out = 0;
    apr_status_t rv;

    if (db->pid != getpid()) {
        rmsync_log(RMSYNC_LOG_WARNING, APR_EGENERAL, RMSYNC_LOGNO(00205)
                   "database handle inherited across fork: dropping the parent's connection");
        forget_foreign(db);
    }
    check_idle(db);
    if (db->conn) {
        return APR_SUCCESS;
    }
    if (db->in_txn) {
        set_error(db, "08006", "database connection lost inside a transaction");
        return RMSYNC_DB_EDOWN;
    }
    now = apr_time_now();
    if (db->next_connect && now < db->next_connect) {
        char msg[96];
        apr_snprintf(msg, sizeof(msg), "database unavailable (next connect attempt in %d ms)",
                     (int)apr_time_as_msec(db->next_connect - now));
        set_error(db, "08001", msg);
        return RMSYNC_DB_EDOWN;
    }

    /* A slot of the connection budget first: none within slot_wait is "unavailable" for the
     * caller (503), but no database failure: no backoff, no warning per refused connect. */
    if (db_gate && !db->has_slot) {
        if (db_gate->take(db->slot_wait) != APR_SUCCESS) {
            set_error(db, "53300", "database connection budget (RMSyncDatabasePool) exhausted");
            return RMSYNC_DB_EDOWN;
        }
        db->has_slot = 1;
    }

    keys[k] = "dbname"; vals[k++] = db->conninfo;            /* expanded: conninfo or URI */
    keys[k] = "fallback_application_name"; vals[k++] = "mod_rmsync";
    keys[k] = "keepalives"; vals[k++] = "1";
    keys[k] = "keepalives_idle"; vals[k++] = "30";
    keys[k] = "keepalives_interval"; vals[k++] = "10";
    keys[k] = "keepalives_count"; vals[k++] = "3";
    keys[k] = NULL; vals[k] = NULL;

    db->conn = connect_within(keys, vals, db->connect_timeout_s, &timed_out);
    if (!db->conn || PQstatus(db->conn) != CONNECTION_OK) {
        set_error(db, "08001", timed_out ? "connection timeout expired"
                               : db->conn ? PQerrorMessage(db->conn) : "out of memory");
        rmsync_log(RMSYNC_LOG_WARNING, RMSYNC_DB_EDOWN, RMSYNC_LOGNO(00200)
                   "database connect failed (next try in %d ms): %s",
                   (int)apr_time_as_msec(db->backoff), db->errmsg);
        if (db->conn) {
            PQfinish(db->conn);
            db->conn = NULL;
        }
        give_slot(db);
        if (db->backoff > 0) {
            db->next_connect = apr_time_now() + db->backoff;
            db->backoff = db->backoff * 2 > db->backoff_max ? db->backoff_max : db->backoff * 2;
        }
        return RMSYNC_DB_EDOWN;
    }
    db->fatal_seen = 0;
    PQsetNoticeReceiver(db->conn, notice_cb, db);
    if ((rv = setup_session(db)) != APR_SUCCESS) {
        drop_conn(db);
        return rv;
    }
    db->backoff = db->backoff_min;
    db->next_connect = 0;
    db->generation++;
    clear_error(db);
    if (db->generation > 1) {
        rmsync_log(RMSYNC_LOG_NOTICE, APR_SUCCESS, RMSYNC_LOGNO(00202)
                   "database connection re-established");
    }
    return APR_SUCCESS;
}

void rmsync_db_close(rmsync_db_t *db)
{
    if (db->pid != getpid()) {
        forget_foreign(db);
    }
    drop_conn(db);
    db->in_txn = db->txn_lost = 0;
}

int rmsync_db_is_connected(rmsync_db_t *db)
{
    return db->conn && db->pid == getpid() && PQstatus(db->conn) == CONNECTION_OK;
}

apr_uint64_t rmsync_db_generation(rmsync_db_t *db)
{
    return db->generation;
}

/* Ready to send a statement: connected, not in a lost transaction. */
static apr_status_t ensure(rmsync_db_t *db)
{
    if (db->txn_lost) {
        set_error(db, "08006", "database connection lost inside a transaction");
        return RMSYNC_DB_EDOWN;
    }
    return rmsync_db_connect(db);
}

/* Turn a PGresult into a status (and a copied result); always clears res. */
static apr_status_t take_result(rmsync_db_t *db, PGresult *res, apr_pool_t *p,
                                rmsync_db_result_t **pres)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (pres) {
            rmsync_db_result_t *r = apr_pcalloc(p, sizeof(*r));
            const char *tag = PQcmdTuples(res);
            int i, j;
            r->nrows = PQntuples(res);
            r->ncols = PQnfields(res);
            r->affected = (tag && *tag) ? atol(tag) : 0;
            r->cmd_status = apr_pstrdup(p, PQcmdStatus(res));
            r->colnames = apr_pcalloc(p, sizeof(char *) * (apr_size_t)(r->ncols + 1));
            for (j = 0; j < r->ncols; j++) {
                r->colnames[j] = apr_pstrdup(p, PQfname(res, j));
            }
            r->values = apr_pcalloc(p, sizeof(char *) * ((apr_size_t)r->nrows * (apr_size_t)r->ncols + 1));
            for (i = 0; i < r->nrows; i++) {
                for (j = 0; j < r->ncols; j++) {
                    if (!PQgetisnull(res, i, j)) {
                        r->values[i * r->ncols + j] =
                            apr_pstrmemdup(p, PQgetvalue(res, i, j), (apr_size_t)PQgetlength(res, i, j));
                    }
                }
            }
            *pres = r;
        }
        PQclear(res);
        clear_error(db);
        return APR_SUCCESS;
    }
    else {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        int down = PQstatus(db->conn) != CONNECTION_OK || is_down_state(state);

        set_error(db, state ? state : (down ? "08006" : ""), msg ? msg : PQerrorMessage(db->conn));
        if (res) {
            PQclear(res);
        }
        if (down) {
            return conn_lost(db);
        }
        rmsync_log(RMSYNC_LOG_DEBUG, RMSYNC_DB_ESQL, "statement failed: %s %s", db->sqlstate, db->errmsg);
        return !strcmp(db->sqlstate, "57014") ? RMSYNC_DB_ETIMEOUT : RMSYNC_DB_ESQL;
    }
}

static apr_status_t simple(rmsync_db_t *db, const char *sql)
{
    apr_status_t rv = ensure(db);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    return take_result(db, PQexec(db->conn, sql), NULL, NULL);
}

/* Prepare statement idx on this connection if it is not yet (a round trip, once). */
static apr_status_t prepare_idx(rmsync_db_t *db, int idx)
{
    apr_status_t rv;

    if (db->prepared[idx]) {
        return APR_SUCCESS;
    }
    /* registered after connect, or its prepare failed then: (re)try now */
    rv = take_result(db, PQprepare(db->conn, reg[idx]->name, reg[idx]->sql,
                                   reg[idx]->nparams, NULL), NULL, NULL);
    if (rv == APR_SUCCESS) {
        db->prepared[idx] = 1;
    }
    return rv;
}

/* Queue a parameterless SQL text (BEGIN, SET LOCAL); 0 when the queue is full. */
static int defer_sql(rmsync_db_t *db, const char *sql)
{
    if (db->ndefer >= DB_MAX_DEFER) {
        return 0;
    }
    db->defer[db->ndefer].idx = -1;
    db->defer[db->ndefer].sql = sql;
    db->defer[db->ndefer].params = NULL;
    db->ndefer++;
    return 1;
}

static void defer_clear(rmsync_db_t *db)
{
    db->ndefer = 0;
    if (db->defer_pool) {
        apr_pool_clear(db->defer_pool);
    }
}

/* Send the queued statements, then `last` (a registered statement idx >= 0 with params, or
 * the SQL text `last_sql` without parameters) in one pipeline and read every answer. The
 * first failure is the result (the server skips the rest up to the sync point); otherwise
 * last's result goes to *pres. */
static apr_status_t flush_with(rmsync_db_t *db, int last, const char *last_sql,
                               const char *const *params, apr_pool_t *p,
                               rmsync_db_result_t **pres, PGresult **plast)
{
    apr_status_t rv = APR_SUCCESS, first = APR_SUCCESS;
    int i, n = db->ndefer + 1, sent = 0;
    PGresult *res;

    if ((rv = ensure(db)) != APR_SUCCESS) {
        defer_clear(db);
        return rv;
    }
    for (i = 0; i < db->ndefer; i++) {
        if (db->defer[i].idx >= 0 && (rv = prepare_idx(db, db->defer[i].idx)) != APR_SUCCESS) {
            defer_clear(db);
            return rv;
        }
    }
    if (last >= 0 && (rv = prepare_idx(db, last)) != APR_SUCCESS) {
        defer_clear(db);
        return rv;
    }
    if (!PQenterPipelineMode(db->conn)) {
        set_error(db, "08006", PQerrorMessage(db->conn));
        defer_clear(db);
        return conn_lost(db);
    }
    for (i = 0; i < n; i++) {
        int idx = i < db->ndefer ? db->defer[i].idx : last;
        const char *sql = i < db->ndefer ? db->defer[i].sql : last_sql;
        const char *const *pv = i < db->ndefer ? (const char *const *)db->defer[i].params
                                               : params;
        int ok = idx >= 0 ? PQsendQueryPrepared(db->conn, reg[idx]->name, reg[idx]->nparams,
                                                reg[idx]->nparams ? pv : NULL, NULL, NULL, 0)
                          : PQsendQueryParams(db->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
        if (!ok) {
            break;
        }
        sent++;
    }
    defer_clear(db);
    if (sent < n || !PQpipelineSync(db->conn)) {
        set_error(db, "08006", PQerrorMessage(db->conn));
        return conn_lost(db);
    }
    /* one result (then NULL) per query, then the sync point */
    for (i = 0; i < n; i++) {
        PGresult *r, *got = NULL;
        while ((r = PQgetResult(db->conn)) != NULL) {
            if (!got) got = r; else PQclear(r);
        }
        if (!got) {
            set_error(db, "08006", PQerrorMessage(db->conn));
            return conn_lost(db);
        }
        if (first != APR_SUCCESS || PQresultStatus(got) == PGRES_PIPELINE_ABORTED) {
            PQclear(got);
            continue;
        }
        if (i == n - 1 && plast) {
            *plast = got;               /* the caller reads the answer (COMMIT) */
            continue;
        }
        rv = take_result(db, got, p, i == n - 1 ? pres : NULL);
        if (rv != APR_SUCCESS) {
            first = rv;
            if (!db->conn) {
                return first;           /* the session is gone (already dropped) */
            }
        }
    }
    res = PQgetResult(db->conn);        /* PGRES_PIPELINE_SYNC */
    if (!res || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        if (res) PQclear(res);
        if (plast && *plast) { PQclear(*plast); *plast = NULL; }
        set_error(db, "08006", "pipeline out of step");
        return conn_lost(db);
    }
    PQclear(res);
    if (!PQexitPipelineMode(db->conn)) {
        if (plast && *plast) { PQclear(*plast); *plast = NULL; }
        set_error(db, "08006", PQerrorMessage(db->conn));
        return conn_lost(db);
    }
    if (first != APR_SUCCESS && plast && *plast) {
        PQclear(*plast);
        *plast = NULL;
    }
    return first;
}

apr_status_t rmsync_db_defer(rmsync_db_t *db, const char *name, const char *const *params)
{
    int idx, i;

    if (!db->in_txn || db->ndefer >= DB_MAX_DEFER) {
        return rmsync_db_exec(db, NULL, name, params, NULL);   /* nothing to ride along */
    }
    if ((idx = reg_find(name)) < 0) {
        char msg[256];
        apr_snprintf(msg, sizeof(msg), "no statement registered as '%s'", name);
        set_error(db, "26000", msg);
        return RMSYNC_DB_ENOSTMT;
    }
    if (!db->defer_pool && apr_pool_create(&db->defer_pool, db->pool) != APR_SUCCESS) {
        return rmsync_db_exec(db, NULL, name, params, NULL);
    }
    db->defer[db->ndefer].idx = idx;
    db->defer[db->ndefer].sql = NULL;
    db->defer[db->ndefer].params = apr_pcalloc(db->defer_pool,
                                               sizeof(char *) * (apr_size_t)(reg[idx]->nparams + 1));
    for (i = 0; i < reg[idx]->nparams; i++) {
        db->defer[db->ndefer].params[i] = params[i] ? apr_pstrdup(db->defer_pool, params[i])
                                                    : NULL;
    }
    db->ndefer++;
    return APR_SUCCESS;
}

apr_status_t rmsync_db_exec(rmsync_db_t *db, apr_pool_t *p, const char *name,
                            const char *const *params, rmsync_db_result_t **pres)
{
    apr_status_t rv;
    int idx;

    if (pres) {
        *pres = NULL;
    }
    if ((idx = reg_find(name)) < 0) {
        char msg[256];
        apr_snprintf(msg, sizeof(msg), "no statement registered as '%s'", name);
        set_error(db, "26000", msg);
        return RMSYNC_DB_ENOSTMT;
    }
    if (db->ndefer > 0) {
        return flush_with(db, idx, NULL, params, p, pres, NULL);
    }
    if ((rv = ensure(db)) != APR_SUCCESS) {
        return rv;
    }
    if ((rv = prepare_idx(db, idx)) != APR_SUCCESS) {
        return rv;
    }
    return take_result(db, PQexecPrepared(db->conn, reg[idx]->name, reg[idx]->nparams,
                                          reg[idx]->nparams ? params : NULL, NULL, NULL, 0),
                       p, pres);
}

apr_status_t rmsync_db_exec_affected(rmsync_db_t *db, const char *name,
                                     const char *const *params, long *affected)
{
    apr_pool_t *tmp;
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;

    if (affected) {
        *affected = 0;
    }
    if ((rv = apr_pool_create(&tmp, db->pool)) != APR_SUCCESS) {
        return rv;
    }
    rv = rmsync_db_exec(db, tmp, name, params, &r);
    if (rv == APR_SUCCESS && affected) {
        *affected = r->affected;
    }
    apr_pool_destroy(tmp);
    return rv;
}

apr_status_t rmsync_db_ping(rmsync_db_t *db)
{
    return rmsync_db_exec(db, NULL, "rmsync_db.ping", RMSYNC_DB_NOPARAMS, NULL);
}

const char *rmsync_db_value(const rmsync_db_result_t *r, int row, int col)
{
    if (!r || row < 0 || col < 0 || row >= r->nrows || col >= r->ncols) {
        return NULL;
    }
    return r->values[row * r->ncols + col];
}

int rmsync_db_col(const rmsync_db_result_t *r, const char *name)
{
    int j;
    for (j = 0; r && name && j < r->ncols; j++) {
        if (!strcmp(r->colnames[j], name)) {
            return j;
        }
    }
    return -1;
}

const char *rmsync_db_get(const rmsync_db_result_t *r, int row, const char *colname)
{
    return rmsync_db_value(r, row, rmsync_db_col(r, colname));
}

const char *rmsync_db_sqlstate(rmsync_db_t *db)
{
    return db->sqlstate;
}

const char *rmsync_db_errmsg(rmsync_db_t *db)
{
    return db->errmsg;
}

int rmsync_db_is_sqlstate(rmsync_db_t *db, const char *sqlstate)
{
    return sqlstate && !strcmp(db->sqlstate, sqlstate);
}

/* ---- transactions ----------------------------------------------------------------------- */

apr_status_t rmsync_db_begin(rmsync_db_t *db)
{
    apr_status_t rv;
    if (db->in_txn) {
        set_error(db, "25001", "a transaction is already open on this handle");
        return RMSYNC_DB_ESQL;
    }
    if ((rv = simple(db, "BEGIN")) == APR_SUCCESS) {
        db->in_txn = 1;
        db->txn_lost = 0;
    }
    return rv;
}

apr_status_t rmsync_db_begin_as(rmsync_db_t *db, const char *crm_user)
{
    apr_status_t rv;
    if (!crm_user || !*crm_user) {
        return APR_EINVAL;
    }
    if (db->in_txn) {
        set_error(db, "25001", "a transaction is already open on this handle");
        return RMSYNC_DB_ESQL;
    }
    if ((rv = ensure(db)) != APR_SUCCESS) {
        return rv;
    }
    /* BEGIN and the user go with the transaction's first statement (one round trip); a
     * failure of either is that statement's failure */
    db->in_txn = 1;
    db->txn_lost = 0;
    defer_clear(db);
    defer_sql(db, "BEGIN");
    return rmsync_db_defer(db, "rmsync_db.set_user", RMSYNC_DB_PARAMS(crm_user));
}

static apr_status_t commit(rmsync_db_t *db, int async)
{
    PGresult *res;
    apr_status_t rv;
    int rolled_back;

    if (!db->in_txn) {
        set_error(db, "25P01", "no transaction is open on this handle");
        return RMSYNC_DB_ESQL;
    }
    if (db->txn_lost || !db->conn) {
        db->in_txn = db->txn_lost = 0;
        set_error(db, "08006", "database connection lost inside a transaction");
        return RMSYNC_DB_EDOWN;
    }
    if (db->ndefer > 0) {
        res = NULL;
        if (async) {
            defer_sql(db, "SET LOCAL synchronous_commit = off");   /* no room: durable */
        }
        rv = flush_with(db, -1, "COMMIT", NULL, NULL, NULL, &res);
        if (rv != APR_SUCCESS) {
            /* a queued statement failed: the transaction is aborted, COMMIT was not run */
            apr_status_t frv = rv;
            char state[6], msg[sizeof(db->errmsg)];
            apr_cpystrn(state, db->sqlstate, sizeof(state));
            apr_cpystrn(msg, db->errmsg, sizeof(msg));
            rmsync_db_rollback(db);
            set_error(db, state, msg);
            return frv;
        }
    }
    else {
        res = PQexec(db->conn, async ? "SET LOCAL synchronous_commit = off; COMMIT" : "COMMIT");
    }
    rolled_back = res && PQresultStatus(res) == PGRES_COMMAND_OK
                  && !strcmp(PQcmdStatus(res), "ROLLBACK");
    db->in_txn = 0;
    rv = take_result(db, res, NULL, NULL);
    db->txn_lost = 0;
    if (rv == APR_SUCCESS && rolled_back) {
        set_error(db, "40000", "the transaction had failed and was rolled back");
        return RMSYNC_DB_ESQL;
    }
    return rv;
}

apr_status_t rmsync_db_commit(rmsync_db_t *db)
{
    return commit(db, 0);
}

apr_status_t rmsync_db_commit_async(rmsync_db_t *db)
{
    return commit(db, 1);
}

apr_status_t rmsync_db_rollback(rmsync_db_t *db)
{
    int begun;

    if (!db->in_txn) {
        return APR_SUCCESS;
    }
    /* a BEGIN still queued never reached the server: nothing to roll back there */
    begun = !(db->ndefer > 0 && db->defer[0].idx == -1 && !strcmp(db->defer[0].sql, "BEGIN"));
    defer_clear(db);
    db->in_txn = 0;
    if (!begun) {
        db->txn_lost = 0;
        return APR_SUCCESS;
    }
    if (db->txn_lost || !db->conn) {
        db->txn_lost = 0;
        return APR_SUCCESS;    /* the server rolled it back when the session ended */
    }
    if (take_result(db, PQexec(db->conn, "ROLLBACK"), NULL, NULL) != APR_SUCCESS) {
        drop_conn(db);         /* unknown session state: start afresh */
        db->txn_lost = 0;
    }
    return APR_SUCCESS;
}

int rmsync_db_in_txn(rmsync_db_t *db)
{
    return db->in_txn;
}

/* ---- LISTEN / NOTIFY -------------------------------------------------------------------- */

apr_status_t rmsync_db_listen(rmsync_db_t *db, const char *channel)
{
    apr_status_t rv;
    char *ident, *sql;
    int i;

    if (!channel || !*channel) {
        return APR_EINVAL;
    }
    for (i = 0; i < db->nchannels; i++) {
        if (!strcmp(db->channels[i], channel)) {
            return rmsync_db_connect(db);
        }
    }
    if (db->nchannels >= DB_MAX_CHANNELS) {
        return APR_ENOSPC;
    }
    db->channels[db->nchannels++] = apr_pstrdup(db->pool, channel);
    if (!db->conn || db->pid != getpid()) {
        return ensure(db);          /* a new session LISTENs on every channel */
    }
    if ((rv = ensure(db)) != APR_SUCCESS) {
        return rv;
    }
    if (!(ident = PQescapeIdentifier(db->conn, channel, strlen(channel)))) {
        set_error(db, "22023", PQerrorMessage(db->conn));
        return RMSYNC_DB_ESQL;
    }
    sql = malloc(strlen(ident) + 8);
    if (!sql) {
        PQfreemem(ident);
        return APR_ENOMEM;
    }
    memcpy(sql, "LISTEN ", 7);
    strcpy(sql + 7, ident);
    PQfreemem(ident);
    rv = simple(db, sql);
    free(sql);
    return rv;
}

int rmsync_db_socket(rmsync_db_t *db)
{
    return rmsync_db_is_connected(db) ? PQsocket(db->conn) : -1;
}

apr_status_t rmsync_db_wait(rmsync_db_t *db, apr_interval_time_t timeout)
{
    struct pollfd pfd;
    apr_status_t rv;
    int n, ms;

    if (db->peek) {
        return APR_SUCCESS;
    }
    if ((rv = ensure(db)) != APR_SUCCESS) {
        return rv;
    }
    if (!PQconsumeInput(db->conn)) {
        set_error(db, "08006", PQerrorMessage(db->conn));
        drop_conn(db);
        return RMSYNC_DB_EDOWN;
    }
    if ((db->peek = PQnotifies(db->conn)) != NULL) {
        return APR_SUCCESS;
    }
    pfd.fd = PQsocket(db->conn);
    pfd.events = POLLIN;
    pfd.revents = 0;
    ms = timeout < 0 ? -1 : (int)apr_time_as_msec(timeout + 999);
    n = poll(&pfd, 1, ms);
    if (n < 0) {
        return APR_FROM_OS_ERROR(errno);
    }
    if (n == 0) {
        return APR_TIMEUP;
    }
    if (!PQconsumeInput(db->conn) || PQstatus(db->conn) != CONNECTION_OK) {
        set_error(db, "08006", PQerrorMessage(db->conn));
        return conn_lost(db);
    }
    db->peek = PQnotifies(db->conn);
    return APR_SUCCESS;
}

static void push_notify(apr_array_header_t *arr, apr_pool_t *p, PGnotify *n)
{
    rmsync_db_notify_t *e = apr_array_push(arr);
    e->channel = apr_pstrdup(p, n->relname);
    e->payload = apr_pstrdup(p, n->extra ? n->extra : "");
    e->be_pid = n->be_pid;
    PQfreemem(n);
}

apr_status_t rmsync_db_notifications(rmsync_db_t *db, apr_pool_t *p, apr_array_header_t **out)
{
    apr_array_header_t *arr = apr_array_make(p, 4, sizeof(rmsync_db_notify_t));
    PGnotify *n;
    int ok = 1;

    *out = arr;
    if (db->peek) {
        push_notify(arr, p, db->peek);
        db->peek = NULL;
    }
    if (!db->conn || db->pid != getpid()) {
        set_error(db, "08003", "not connected");
        return RMSYNC_DB_EDOWN;
    }
    ok = PQconsumeInput(db->conn) && PQstatus(db->conn) == CONNECTION_OK;
    while ((n = PQnotifies(db->conn)) != NULL) {
        push_notify(arr, p, n);
    }
    if (!ok) {
        set_error(db, "08006", PQerrorMessage(db->conn));
        return conn_lost(db);
    }
    return APR_SUCCESS;
}

/* ---- advisory locks --------------------------------------------------------------------- */

static apr_status_t lock_call(rmsync_db_t *db, const char *stmt, const char *key, int *flag)
{
    apr_pool_t *tmp;
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;
    const char *v;

    if (flag) {
        *flag = 0;
    }
    if (!key) {
        return APR_EINVAL;
    }
    if ((rv = apr_pool_create(&tmp, db->pool)) != APR_SUCCESS) {
        return rv;
    }
    rv = rmsync_db_exec(db, tmp, stmt, RMSYNC_DB_PARAMS(key), &r);
    if (rv == APR_SUCCESS && flag) {
        v = rmsync_db_value(r, 0, 0);
        *flag = v && v[0] == 't';
    }
    apr_pool_destroy(tmp);
    return rv;
}

apr_status_t rmsync_db_try_lock(rmsync_db_t *db, const char *key, int *acquired)
{
    return lock_call(db, "rmsync_db.try_lock", key, acquired);
}

apr_status_t rmsync_db_unlock(rmsync_db_t *db, const char *key, int *released)
{
    return lock_call(db, "rmsync_db.unlock", key, released);
}

apr_status_t rmsync_db_try_xact_lock(rmsync_db_t *db, const char *key, int *acquired)
{
    if (!db->in_txn) {
        set_error(db, "25P01", "transaction-level lock outside a transaction");
        return RMSYNC_DB_ESQL;
    }
    return lock_call(db, "rmsync_db.try_xact_lock", key, acquired);
}

/* ---- per-process pool ------------------------------------------------------------------- */

struct rmsync_db_pool_t {
    apr_pool_t *pool;
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *cond;
    const char *conninfo;
    int connect_timeout_s, statement_timeout_ms;
    int max, created, nidle;
    rmsync_db_t **idle;      /* LIFO: the warmest connection is reused first */
    apr_interval_time_t slot_wait;   /* given to the handles it creates */
    apr_interval_time_t idle_max;    /* connections idle longer are closed; 0 = never */
};

void rmsync_db_pool_set_limits(rmsync_db_pool_t *dbp, apr_interval_time_t slot_wait,
                               apr_interval_time_t idle_max)
{
    apr_thread_mutex_lock(dbp->mutex);
    dbp->slot_wait = slot_wait;
    dbp->idle_max = idle_max;
    apr_thread_mutex_unlock(dbp->mutex);
}

/* Close the idle handles' connections unused for longer than idle_max (under the mutex; a
 * Terminate message each, no wait). The handles stay in the pool and reconnect when used. */
static int reap_locked(rmsync_db_pool_t *dbp, apr_time_t now)
{
    int i, n = 0;

    if (dbp->idle_max <= 0) {
        return 0;
    }
    for (i = 0; i < dbp->nidle; i++) {
        rmsync_db_t *db = dbp->idle[i];
        if (db->conn && now - db->last_used > dbp->idle_max) {
            rmsync_db_close(db);
            n++;
        }
    }
    return n;
}

int rmsync_db_pool_reap(rmsync_db_pool_t *dbp)
{
    int n;

    apr_thread_mutex_lock(dbp->mutex);
    n = reap_locked(dbp, apr_time_now());
    apr_thread_mutex_unlock(dbp->mutex);
    return n;
}

/* Pop an idle handle, a connected one when there is one (the stack also holds handles whose
 * connection was reaped or never made: taking one of those would cost a connect and a slot). */
static rmsync_db_t *pop_idle(rmsync_db_pool_t *dbp)
{
    int i;

    for (i = dbp->nidle - 1; i >= 0; i--) {
        if (dbp->idle[i]->conn) {
            rmsync_db_t *db = dbp->idle[i];
            dbp->idle[i] = dbp->idle[dbp->nidle - 1];
            dbp->idle[dbp->nidle - 1] = db;
            break;
        }
    }
    return dbp->idle[--dbp->nidle];
}

apr_status_t rmsync_db_pool_create(rmsync_db_pool_t **pdbp, apr_pool_t *p, const char *conninfo,
                                   int connect_timeout_s, int statement_timeout_ms, int max)
{
    rmsync_db_pool_t *dbp;
    apr_status_t rv;

    *pdbp = NULL;
    if (!conninfo || max < 1) {
        return APR_EINVAL;
    }
    dbp = apr_pcalloc(p, sizeof(*dbp));
    dbp->pool = p;
    dbp->conninfo = apr_pstrdup(p, conninfo);
    dbp->connect_timeout_s = connect_timeout_s;
    dbp->statement_timeout_ms = statement_timeout_ms;
    dbp->max = max;
    dbp->idle = apr_pcalloc(p, sizeof(rmsync_db_t *) * (apr_size_t)max);
    if ((rv = apr_thread_mutex_create(&dbp->mutex, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&dbp->cond, p)) != APR_SUCCESS) {
        return rv;
    }
    *pdbp = dbp;
    return APR_SUCCESS;
}

apr_status_t rmsync_db_pool_get(rmsync_db_pool_t *dbp, apr_interval_time_t wait, rmsync_db_t **pdb)
{
    apr_time_t deadline = apr_time_now() + (wait > 0 ? wait : 0);
    apr_status_t rv = APR_SUCCESS;

    *pdb = NULL;
    apr_thread_mutex_lock(dbp->mutex);
    while (dbp->nidle == 0 && dbp->created >= dbp->max) {
        apr_time_t left = deadline - apr_time_now();
        if (left <= 0) {
            rv = APR_TIMEUP;
            break;
        }
        rv = apr_thread_cond_timedwait(dbp->cond, dbp->mutex, left);
        if (rv != APR_SUCCESS && rv != APR_TIMEUP) {
            break;
        }
        rv = APR_SUCCESS;
    }
    if (rv == APR_SUCCESS) {
        reap_locked(dbp, apr_time_now());
        if (dbp->nidle > 0) {
            *pdb = pop_idle(dbp);
        }
        else if ((rv = rmsync_db_open(pdb, dbp->pool, dbp->conninfo, dbp->connect_timeout_s,
                                      dbp->statement_timeout_ms)) == APR_SUCCESS) {
            dbp->created++;
        }
        if (*pdb) {
            (*pdb)->slot_wait = dbp->slot_wait;
        }
    }
    apr_thread_mutex_unlock(dbp->mutex);
    return rv;
}

void rmsync_db_pool_release(rmsync_db_pool_t *dbp, rmsync_db_t *db)
{
    if (!db) {
        return;
    }
    if (db->in_txn) {
        rmsync_log(RMSYNC_LOG_WARNING, APR_SUCCESS, RMSYNC_LOGNO(00209)
                   "database handle released inside a transaction: rolled back");
        rmsync_db_rollback(db);
    }
    clear_error(db);
    /* Someone (any process) waits for a slot of the budget: hand ours over rather than keep
     * it idle here. */
    if (db_gate && db->conn && db_gate->pressure()) {
        rmsync_db_close(db);
    }
    db->last_used = apr_time_now();
    apr_thread_mutex_lock(dbp->mutex);
    if (dbp->nidle < dbp->max) {
        dbp->idle[dbp->nidle++] = db;
    }
    apr_thread_cond_signal(dbp->cond);
    apr_thread_mutex_unlock(dbp->mutex);
}

void rmsync_db_pool_stats(rmsync_db_pool_t *dbp, int *created, int *idle)
{
    apr_thread_mutex_lock(dbp->mutex);
    if (created) {
        *created = dbp->created;
    }
    if (idle) {
        *idle = dbp->nidle;
    }
    apr_thread_mutex_unlock(dbp->mutex);
}
