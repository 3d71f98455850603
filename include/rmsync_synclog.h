/* mod_rmsync: the sync log (Calendar Sync Log page + the RMSyncLogFile text log).
 *
 * Every applied change, deletion, skip (with its reason) and error of the sync goes to
 * rmsync.sync_log (level, representative, activity, event, action, message, Graph request id)
 * and, when RMSyncLogFile is set, as one line to the text log: a file path (appended; reopened
 * when logrotate moved or removed it) or "|command" (piped like Apache's piped logs: the command
 * reads the lines on stdin and is restarted when it dies). Debug lines only with
 * RMSyncLogLevel debug. Thread-safe: the runner's worker threads share one handle.
 *
 * Message ids: messages of level warning and error start with RMSYNC_LOGNO(nnnnn) so the log
 * page and tests can grep them. Never pass secrets or bearer tokens.
 */
#ifndef RMSYNC_SYNCLOG_H
#define RMSYNC_SYNCLOG_H

#include <apr_pools.h>
#include <apr_errno.h>
#include <apr_tables.h>
#include "rmsync_log.h"
#include "rmsync_settings.h"
#include "rmsync_db.h"

typedef struct rmsync_synclog_t rmsync_synclog_t;

typedef struct rmsync_synclog_entry_t {
    int         level;        /* RMSYNC_LOG_ERR | _WARNING | _INFO | _DEBUG */
    const char *rep;          /* representative id or NULL */
    long long   activity_no;  /* 0: none */
    const char *event_id;     /* Graph event id or NULL */
    const char *action;       /* short verb: update, delete, cancel, unlink, skip, hold, ... */
    const char *request_id;   /* Graph request-id or NULL */
    const char *message;
} rmsync_synclog_entry_t;

/* Open the text log named by s->log_file (NULL: none) and bind the handle to p (closed, and a
 * piped command reaped, on its cleanup). An unopenable file is logged once; the DB log works
 * regardless. */
apr_status_t rmsync_synclog_create(rmsync_synclog_t **psl, apr_pool_t *p,
                                   const rmsync_settings_t *s);

/* 1 when entries of this level are recorded at all (debug needs RMSyncLogLevel debug). */
int rmsync_synclog_wants(const rmsync_synclog_t *sl, int level);

/* Record e: a row in rmsync.sync_log through db (inside the caller's transaction when one is
 * open, so a rolled back change leaves no log line; db NULL: text log only), then the text
 * line. Returns the status of the DB insert. */
apr_status_t rmsync_synclog_write(rmsync_synclog_t *sl, rmsync_db_t *db,
                                  const rmsync_synclog_entry_t *e);

/* 1 when e is counted on an identical row of the last hour instead of inserted (errors,
 * warnings, "initial sync started"): rmsync_synclog_write updates that row's repeat_count and
 * last_at, and the text log gets a "[repeated x N since HH:MMZ]" line at the 10th, 100th, ...
 * repeat only. */
int rmsync_synclog_aggregates(const rmsync_synclog_entry_t *e);

/* printf-style convenience around rmsync_synclog_write(). */
apr_status_t rmsync_synclog(rmsync_synclog_t *sl, rmsync_db_t *db, int level,
                            const char *rep, long long activity_no, const char *event_id,
                            const char *action, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));

/* Record a batch (an array of rmsync_synclog_entry_t, in order) with ONE statement: what a
 * delta page applied goes in with the page's transaction (see rmsync_apply_page_begin). Entries
 * below the wanted level are left out. p: scratch for the statement. */
apr_status_t rmsync_synclog_write_many(rmsync_synclog_t *sl, rmsync_db_t *db, apr_pool_t *p,
                                       const apr_array_header_t *entries);
/* Text log only (e.g. when the database is unreachable). */
void rmsync_synclog_text(rmsync_synclog_t *sl, const rmsync_synclog_entry_t *e);
/* The same with the entry's own time (at > 0). */
void rmsync_synclog_text_at(rmsync_synclog_t *sl, const rmsync_synclog_entry_t *e, apr_time_t at);

/* Runner, control thread: copy the admin actions' rows (rmsync.sync_log.by_admin, written by
 * worker processes) to the text log, oldest first, each once: a cursor in
 * rmsync.synclog_cursor, locked while copying, moves with them. Returns the rows copied, 0
 * without a text log, -1 on a database error (retried on the next call). */
int rmsync_synclog_copy_admin(rmsync_synclog_t *sl, rmsync_db_t *db, apr_pool_t *p);

/* Register the sync log's statements (once per process, before the first write). */
apr_status_t rmsync_synclog_register(void);

/* "error", "warning", "info", "debug" (the sync_log.level values). */
const char *rmsync_synclog_level_name(int level);

#endif /* RMSYNC_SYNCLOG_H */
