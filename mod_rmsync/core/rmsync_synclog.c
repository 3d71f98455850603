/* mod_rmsync, run by the sync runner: the sync log (rmsync.sync_log rows and RMSyncLogFile; see
 * rmsync_synclog.h). */
#include <string.h>
#include <stdarg.h>
#include <apr_strings.h>
#include <apr_file_io.h>
#include <apr_file_info.h>
#include <apr_thread_proc.h>
#include <apr_thread_mutex.h>
#include <apr_time.h>
#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"
#include "rmsync_json.h"
#include "rmsync_synclog.h"

#define TEXT_LINE_MAX   8192
#define REOPEN_CHECK_US apr_time_from_sec(1)

struct rmsync_synclog_t {
    apr_pool_t *pool;             /* owns the handle; sub-pool for the file/pipe */
    apr_pool_t *fpool;            /* re-created on every reopen / respawn */
    apr_thread_mutex_t *mutex;    /* one writer at a time (worker threads) */
    const char *target;           /* RMSyncLogFile or NULL */
    int piped;
    int debug;
    apr_file_t *f;                /* open file, or the pipe to the command's stdin */
    apr_proc_t *proc;             /* the piped command */
    apr_ino_t ino;
    apr_dev_t dev;
    apr_time_t last_check;
    apr_time_t last_fail_log;     /* rate limit for "cannot open" */
};

/* The newest identical row of the last hour (same level, representative, activity, event,
 * action and message; never an admin action's) counts one more repeat. REP: the
 * representative condition (a value, or none). The level is compared as an expression: on
 * statistics older than the hour's rows (an initial sync of many representatives writes them
 * faster than autoanalyze) the planner took sync_log_level_idx and read every info row of the
 * hour (3.6 ms at 20,000 rows, per representative's "initial sync started"); this way only
 * the representative's rows are read (sync_log_rep_idx, 0.1 ms). */
#define SYNCLOG_REPEAT_SQL(REP) \
    "UPDATE rmsync.sync_log s SET repeat_count = s.repeat_count + 1, last_at = now(), " \
    "       graph_request_id = coalesce($7, s.graph_request_id) " \
    " WHERE s.id = (SELECT l.id FROM rmsync.sync_log l " \
    "                WHERE " REP \
    "                  AND l.id >= coalesce((SELECT f.id FROM rmsync.sync_log f " \
    "                                         WHERE f.at > now() - interval '1 hour' " \
    "                                         ORDER BY f.at LIMIT 1), " \
    "                                       9223372036854775807) " \
    "                  AND l.at > now() - interval '1 hour' AND (l.level || '') = $1 " \
    "                  AND l.activity_no IS NOT DISTINCT FROM $3::bigint " \
    "                  AND l.event_id IS NOT DISTINCT FROM $4 " \
    "                  AND l.action IS NOT DISTINCT FROM $5 AND l.message = $6 " \
    "                  AND l.by_admin IS NULL " \
    "                ORDER BY l.id DESC LIMIT 1) " \
    "RETURNING s.repeat_count, (extract(epoch FROM s.at) * 1000000)::bigint"

static const rmsync_db_stmt_t synclog_stmts[] = {
    { "synclog_insert",
      "INSERT INTO rmsync.sync_log (level, representative_id, activity_no, event_id, action, "
      "                             message, graph_request_id) "
      "VALUES ($1, $2, $3::bigint, $4, $5, $6, $7)", 7 },
    /* Repeats (see aggregates()): count on the newest identical row whose first time is within
     * the hour. The lower id bound (the first row of the last hour, from the at index) keeps
     * the scan to the last hour's rows of this representative (sync_log_rep_idx). Rows of
     * admin actions (by_admin) are never touched: the text-log cursor over them stays exact. */
    { "synclog_repeat_rep", SYNCLOG_REPEAT_SQL("l.representative_id = $2"), 7 },
    { "synclog_repeat_norep",
      SYNCLOG_REPEAT_SQL("l.representative_id IS NULL AND $2::text IS NULL"), 7 },
    /* a batch in one round trip, rows in the batch's order (ids ascend like single writes) */
    { "synclog_insert_many",
      "INSERT INTO rmsync.sync_log (level, representative_id, activity_no, event_id, action, "
      "                             message, graph_request_id) "
      "SELECT x.l, x.r, x.a, x.e, x.c, x.m, x.q "
      "  FROM ROWS FROM (jsonb_to_recordset($1::jsonb) "
      "                  AS (l text, r text, a bigint, e text, c text, m text, q text)) "
      "       WITH ORDINALITY AS x(l, r, a, e, c, m, q, n) "
      " ORDER BY x.n", 1 },
    /* admin actions (rows written by worker processes) -> the text log, through a cursor that
     * one runner at a time holds (SKIP LOCKED: another node's runner skips the round) */
    { "synclog_admin_cursor",
      "SELECT last_id FROM rmsync.synclog_cursor WHERE id = 1 FOR UPDATE SKIP LOCKED", 0 },
    { "synclog_admin_rows",
      "SELECT id, (extract(epoch FROM at) * 1000000)::bigint, level, representative_id, "
      "       activity_no, event_id, action, message "
      "  FROM rmsync.sync_log WHERE by_admin IS NOT NULL AND id > $1::bigint "
      " ORDER BY id LIMIT 500", 1 },
    { "synclog_admin_advance",
      "UPDATE rmsync.synclog_cursor SET last_id = $1::bigint WHERE id = 1", 1 },
};

apr_status_t rmsync_synclog_register(void)
{
    return rmsync_db_register(synclog_stmts,
                              (int)(sizeof(synclog_stmts) / sizeof(synclog_stmts[0])));
}

const char *rmsync_synclog_level_name(int level)
{
    if (level <= RMSYNC_LOG_ERR) return "error";
    if (level == RMSYNC_LOG_WARNING) return "warning";
    if (level <= RMSYNC_LOG_INFO) return "info";
    return "debug";
}

int rmsync_synclog_wants(const rmsync_synclog_t *sl, int level)
{
    return level < RMSYNC_LOG_DEBUG || (sl && sl->debug);
}

static void close_target(rmsync_synclog_t *sl)
{
    if (sl->f) {
        apr_file_close(sl->f);
        sl->f = NULL;
    }
    if (sl->proc) {
        apr_exit_why_e why;
        int code;
        /* the command sees EOF and ends; do not wait for a stuck one forever */
        if (apr_proc_wait(sl->proc, &code, &why, APR_NOWAIT) != APR_CHILD_DONE) {
            apr_sleep(apr_time_from_msec(50));
            if (apr_proc_wait(sl->proc, &code, &why, APR_NOWAIT) != APR_CHILD_DONE) {
                apr_proc_kill(sl->proc, SIGTERM);
                apr_proc_wait(sl->proc, &code, &why, APR_WAIT);
            }
        }
        sl->proc = NULL;
    }
    if (sl->fpool) {
        apr_pool_clear(sl->fpool);
    }
}

static void open_failed(rmsync_synclog_t *sl, apr_status_t rv, const char *what)
{
    apr_time_t now = apr_time_now();
    if (!sl->last_fail_log || now - sl->last_fail_log > apr_time_from_sec(300)) {
        sl->last_fail_log = now;
        rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00400) "sync log %s '%s' failed; "
                   "the sync log table is still written", what, sl->target);
    }
}

static apr_status_t open_target(rmsync_synclog_t *sl)
{
    apr_status_t rv;

    close_target(sl);
    if (sl->piped) {
        apr_procattr_t *attr;
        const char *argv[4];
        apr_proc_t *proc = apr_pcalloc(sl->fpool, sizeof(*proc));

        argv[0] = "/bin/sh";
        argv[1] = "-c";
        argv[2] = sl->target + 1;
        argv[3] = NULL;
        if ((rv = apr_procattr_create(&attr, sl->fpool)) != APR_SUCCESS
            || (rv = apr_procattr_io_set(attr, APR_FULL_BLOCK, APR_NO_PIPE, APR_NO_PIPE))
               != APR_SUCCESS
            || (rv = apr_procattr_cmdtype_set(attr, APR_PROGRAM)) != APR_SUCCESS
            || (rv = apr_proc_create(proc, "/bin/sh", argv, NULL, attr, sl->fpool))
               != APR_SUCCESS) {
            open_failed(sl, rv, "command");
            return rv;
        }
        sl->proc = proc;
        sl->f = proc->in;
        return APR_SUCCESS;
    }
    else {
        apr_finfo_t fi;
        rv = apr_file_open(&sl->f, sl->target,
                           APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_APPEND,
                           APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_GREAD, sl->fpool);
        if (rv != APR_SUCCESS) {
            sl->f = NULL;
            open_failed(sl, rv, "file");
            return rv;
        }
        if (apr_file_info_get(&fi, APR_FINFO_INODE | APR_FINFO_DEV, sl->f) == APR_SUCCESS) {
            sl->ino = fi.inode;
            sl->dev = fi.device;
        }
        sl->last_check = apr_time_now();
        return APR_SUCCESS;
    }
}

/* logrotate moved or removed the file: open the path anew (one stat per line: cheap, and no
 * line goes to the rotated file) */
static void check_reopen(rmsync_synclog_t *sl)
{
    apr_time_t now = apr_time_now();
    apr_finfo_t fi;

    if (sl->piped) {
        return;
    }
    if (!sl->f && sl->last_check && now - sl->last_check < REOPEN_CHECK_US) {
        return;                           /* it could not be opened a moment ago */
    }
    sl->last_check = now;
    if (!sl->f) {
        open_target(sl);
        return;
    }
    if (apr_stat(&fi, sl->target, APR_FINFO_INODE | APR_FINFO_DEV, sl->fpool) != APR_SUCCESS
        || fi.inode != sl->ino || fi.device != sl->dev) {
        open_target(sl);
    }
}

static apr_status_t synclog_cleanup(void *baton)
{
    rmsync_synclog_t *sl = baton;
    close_target(sl);
    return APR_SUCCESS;
}

apr_status_t rmsync_synclog_create(rmsync_synclog_t **psl, apr_pool_t *p,
                                   const rmsync_settings_t *s)
{
    rmsync_synclog_t *sl = apr_pcalloc(p, sizeof(*sl));
    apr_status_t rv;

    sl->pool = p;
    sl->debug = s->log_debug;
    if ((rv = apr_thread_mutex_create(&sl->mutex, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS
        || (rv = apr_pool_create(&sl->fpool, p)) != APR_SUCCESS) {
        return rv;
    }
    apr_pool_tag(sl->fpool, "rmsync_synclog");
    if (s->log_file && *s->log_file) {
        sl->target = apr_pstrdup(p, s->log_file);
        sl->piped = sl->target[0] == '|';
        open_target(sl);
    }
    apr_pool_cleanup_register(p, sl, synclog_cleanup, apr_pool_cleanup_null);
    *psl = sl;
    return APR_SUCCESS;
}

/* Append s to buf (at *len, capacity cap), escaping control characters so one entry stays one
 * line and nothing can forge another line. */
static void put_escaped(char *buf, apr_size_t *len, apr_size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; s && *s && *len + 5 < cap; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') { buf[(*len)++] = '\\'; buf[(*len)++] = 'n'; }
        else if (c == '\r') { buf[(*len)++] = '\\'; buf[(*len)++] = 'r'; }
        else if (c == '\t') { buf[(*len)++] = '\\'; buf[(*len)++] = 't'; }
        else if (c == '\\') { buf[(*len)++] = '\\'; buf[(*len)++] = '\\'; }
        else if (c < 0x20 || c == 0x7f) {
            buf[(*len)++] = '\\'; buf[(*len)++] = 'x';
            buf[(*len)++] = hex[c >> 4]; buf[(*len)++] = hex[c & 15];
        }
        else buf[(*len)++] = (char)c;
    }
}

static void put_field(char *buf, apr_size_t *len, apr_size_t cap, const char *name,
                      const char *val)
{
    if (!val || !*val) {
        return;
    }
    put_escaped(buf, len, cap, " ");
    put_escaped(buf, len, cap, name);
    put_escaped(buf, len, cap, "=");
    put_escaped(buf, len, cap, val);
}

void rmsync_synclog_text(rmsync_synclog_t *sl, const rmsync_synclog_entry_t *e)
{
    rmsync_synclog_text_at(sl, e, 0);
}

void rmsync_synclog_text_at(rmsync_synclog_t *sl, const rmsync_synclog_entry_t *e, apr_time_t at)
{
    char buf[TEXT_LINE_MAX], ts[APR_RFC822_DATE_LEN + 8], num[32];
    apr_size_t len = 0, tl;
    apr_time_exp_t xt;
    apr_status_t rv;

    if (!sl || !sl->target || !rmsync_synclog_wants(sl, e->level)) {
        return;
    }
    apr_time_exp_gmt(&xt, at > 0 ? at : apr_time_now());
    apr_strftime(ts, &tl, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &xt);
    len = (apr_size_t)apr_snprintf(buf, sizeof(buf), "%s.%03dZ [%s]", ts,
                                   xt.tm_usec / 1000, rmsync_synclog_level_name(e->level));
    put_field(buf, &len, sizeof(buf), "rep", e->rep);
    if (e->activity_no) {
        apr_snprintf(num, sizeof(num), "%" APR_INT64_T_FMT, (apr_int64_t)e->activity_no);
        put_field(buf, &len, sizeof(buf), "activity", num);
    }
    put_field(buf, &len, sizeof(buf), "event", e->event_id);
    put_field(buf, &len, sizeof(buf), "action", e->action);
    put_field(buf, &len, sizeof(buf), "request-id", e->request_id);
    put_escaped(buf, &len, sizeof(buf), " ");
    put_escaped(buf, &len, sizeof(buf), e->message);
    buf[len++] = '\n';

    apr_thread_mutex_lock(sl->mutex);
    check_reopen(sl);
    if (sl->f) {
        rv = apr_file_write_full(sl->f, buf, len, NULL);
        if (rv != APR_SUCCESS && sl->piped) {
            /* the command died (EPIPE): restart it and write the line again, once */
            if (open_target(sl) == APR_SUCCESS) {
                rv = apr_file_write_full(sl->f, buf, len, NULL);
            }
        }
        else if (rv != APR_SUCCESS) {
            open_failed(sl, rv, "write to");
            sl->last_check = 0;
        }
    }
    apr_thread_mutex_unlock(sl->mutex);
}

int rmsync_synclog_aggregates(const rmsync_synclog_entry_t *e)
{
    /* errors and warnings; and the "initial sync started" of a round that keeps failing */
    return e->level <= RMSYNC_LOG_WARNING
           || (e->action && !strcmp(e->action, "initial-sync") && e->message
               && !strncmp(e->message, "initial sync started", 20));
}

/* Text lines of a repeated row: at the 10th, 100th, 1000th ... repeat, one line saying so
 * (the text log stays bounded; the table row has the exact count). */
static int repeat_line_due(long long n)
{
    while (n >= 10 && n % 10 == 0) n /= 10;
    return n == 1;
}

apr_status_t rmsync_synclog_write(rmsync_synclog_t *sl, rmsync_db_t *db,
                                  const rmsync_synclog_entry_t *e)
{
    apr_status_t rv = APR_SUCCESS;
    long long repeats = 0;
    apr_time_t first = 0;

    if (!rmsync_synclog_wants(sl, e->level)) {
        return APR_SUCCESS;
    }
    if (db) {
        char num[32];
        const char *act = NULL;
        if (e->activity_no) {
            apr_snprintf(num, sizeof(num), "%" APR_INT64_T_FMT, (apr_int64_t)e->activity_no);
            act = num;
        }
        apr_pool_t *tp;
        /* an unmanaged scratch pool: writers are worker threads, sl->pool is shared */
        if ((rv = apr_pool_create_unmanaged_ex(&tp, NULL, NULL)) == APR_SUCCESS) {
            rmsync_db_result_t *res = NULL;
            const char *const *params =
                RMSYNC_DB_PARAMS(rmsync_synclog_level_name(e->level), e->rep, act,
                                 e->event_id, e->action, e->message, e->request_id);
            if (rmsync_synclog_aggregates(e)) {
                rv = rmsync_db_exec(db, tp, e->rep ? "synclog_repeat_rep" : "synclog_repeat_norep",
                                    params, &res);
                if (rv == APR_SUCCESS && res->nrows == 1) {
                    repeats = apr_atoi64(rmsync_db_value(res, 0, 0));
                    first = (apr_time_t)apr_atoi64(rmsync_db_value(res, 0, 1));
                }
            }
            if (rv == APR_SUCCESS && !repeats) {
                rv = rmsync_db_exec(db, tp, "synclog_insert", params, NULL);
            }
            apr_pool_destroy(tp);
        }
    }
    if (repeats) {
        if (repeat_line_due(repeats)) {
            char msg[4096];
            apr_time_exp_t xt;
            rmsync_synclog_entry_t r = *e;
            apr_time_exp_gmt(&xt, first);
            apr_snprintf(msg, sizeof(msg), "%s [repeated x %lld since %02d:%02dZ]",
                         e->message ? e->message : "", repeats, xt.tm_hour, xt.tm_min);
            r.message = msg;
            rmsync_synclog_text(sl, &r);
        }
        return rv;
    }
    rmsync_synclog_text(sl, e);
    return rv;
}

apr_status_t rmsync_synclog(rmsync_synclog_t *sl, rmsync_db_t *db, int level,
                            const char *rep, long long activity_no, const char *event_id,
                            const char *action, const char *request_id, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    rmsync_synclog_entry_t e;

    if (!rmsync_synclog_wants(sl, level)) {
        return APR_SUCCESS;
    }
    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    e.level = level;
    e.rep = rep;
    e.activity_no = activity_no;
    e.event_id = event_id;
    e.action = action;
    e.request_id = request_id;
    e.message = msg;
    return rmsync_synclog_write(sl, db, &e);
}

apr_status_t rmsync_synclog_write_many(rmsync_synclog_t *sl, rmsync_db_t *db, apr_pool_t *p,
                                       const apr_array_header_t *entries)
{
    apr_status_t rv = APR_SUCCESS;
    cJSON *arr;
    int i, n = 0;

    if (!entries || entries->nelts == 0) {
        return APR_SUCCESS;
    }
    if (db) {
        if (!(arr = rmsync_json_bind(p, cJSON_CreateArray()))) {
            return APR_ENOMEM;
        }
        for (i = 0; i < entries->nelts; ++i) {
            const rmsync_synclog_entry_t *e = &RMSYNC_ARRAY_IDX(entries, i, rmsync_synclog_entry_t);
            cJSON *o;
            if (!rmsync_synclog_wants(sl, e->level)) continue;
            if (!(o = cJSON_CreateObject())) {
                return APR_ENOMEM;
            }
            cJSON_AddItemToArray(arr, o);
            cJSON_AddStringToObject(o, "l", rmsync_synclog_level_name(e->level));
            if (e->rep) cJSON_AddStringToObject(o, "r", e->rep);
            if (e->activity_no) {
                /* as text: a double would round activity numbers above 2^53 */
                cJSON_AddStringToObject(o, "a", apr_psprintf(p, "%" APR_INT64_T_FMT,
                                                             (apr_int64_t)e->activity_no));
            }
            if (e->event_id) cJSON_AddStringToObject(o, "e", e->event_id);
            if (e->action) cJSON_AddStringToObject(o, "c", e->action);
            cJSON_AddStringToObject(o, "m", e->message ? e->message : "");
            if (e->request_id) cJSON_AddStringToObject(o, "q", e->request_id);
            n++;
        }
        if (n > 0) {
            const char *json = rmsync_json_print(p, arr);
            if (!json) {
                return APR_ENOMEM;
            }
            /* inside the page's transaction: with its COMMIT (rmsync_db_defer) */
            rv = rmsync_db_defer(db, "synclog_insert_many", RMSYNC_DB_PARAMS(json));
        }
    }
    for (i = 0; i < entries->nelts; ++i) {
        rmsync_synclog_text(sl, &RMSYNC_ARRAY_IDX(entries, i, rmsync_synclog_entry_t));
    }
    return rv;
}

static int level_of(const char *name)
{
    if (!name || !strcmp(name, "info")) return RMSYNC_LOG_INFO;
    if (!strcmp(name, "error")) return RMSYNC_LOG_ERR;
    if (!strcmp(name, "warning")) return RMSYNC_LOG_WARNING;
    return RMSYNC_LOG_DEBUG;
}

int rmsync_synclog_copy_admin(rmsync_synclog_t *sl, rmsync_db_t *db, apr_pool_t *p)
{
    rmsync_db_result_t *res;
    const char *last = NULL;
    int i, n = 0;

    if (!sl || !sl->target || !db || !rmsync_db_is_connected(db)) {
        return 0;                     /* no text log here: another node's runner copies them */
    }
    if (rmsync_db_begin(db) != APR_SUCCESS) {
        return -1;
    }
    if (rmsync_db_exec(db, p, "synclog_admin_cursor", RMSYNC_DB_NOPARAMS, &res) != APR_SUCCESS
        || res->nrows != 1
        || rmsync_db_exec(db, p, "synclog_admin_rows",
                          RMSYNC_DB_PARAMS(rmsync_db_value(res, 0, 0)), &res) != APR_SUCCESS) {
        rmsync_db_rollback(db);
        return -1;
    }
    for (i = 0; i < res->nrows; ++i) {
        rmsync_synclog_entry_t e;
        const char *v;
        memset(&e, 0, sizeof(e));
        e.level = level_of(rmsync_db_value(res, i, 2));
        e.rep = rmsync_db_value(res, i, 3);
        e.activity_no = (v = rmsync_db_value(res, i, 4)) ? apr_atoi64(v) : 0;
        e.event_id = rmsync_db_value(res, i, 5);
        e.action = rmsync_db_value(res, i, 6);
        e.message = rmsync_db_value(res, i, 7);
        rmsync_synclog_text_at(sl, &e, (apr_time_t)apr_atoi64(rmsync_db_value(res, i, 1)));
        last = rmsync_db_value(res, i, 0);
        n++;
    }
    /* written before the cursor moves: a runner killed in between writes them again (once) */
    if ((last && rmsync_db_exec(db, p, "synclog_admin_advance", RMSYNC_DB_PARAMS(last), NULL)
                 != APR_SUCCESS)
        || rmsync_db_commit(db) != APR_SUCCESS) {
        rmsync_db_rollback(db);
        return -1;
    }
    return n;
}
