/* mod_rmsync, run by the sync runner: the job step "transfer" (CRM -> Outlook transfer, the
 * runner half of linking requests) and the category rule for unlinked events (rmsync_transfer.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_event.h"
#include "rmsync_db.h"
#include "rmsync_synclog.h"
#include "rmsync_engine.h"
#include "rmsync_calendar.h"
#include "rmsync_apply.h"
#include "rmsync_categories.h"
#include "rmsync_calfields.h"
#include "rmsync_transfer.h"

/* ---- pure helpers (unit-tested) ------------------------------------------------------------ */

/* APR's formatter has no %lld: numbers go through the C library. */
static const char *i64(apr_pool_t *p, long long n)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%lld", n);
    return apr_pstrdup(p, buf);
}

const char *rmsync_transfer_txn_id(apr_pool_t *p, const char *instance, long long activity_no)
{
    return apr_psprintf(p, "rmsync-%s-%s", (instance && *instance) ? instance : "0",
                        i64(p, activity_no));
}

const char *rmsync_transfer_activity_url(apr_pool_t *p, const char *tmpl, long long activity_no)
{
    const char *pct;

    if (!tmpl || !*tmpl) {
        return NULL;
    }
    pct = strchr(tmpl, '%');
    if (!pct) {
        return tmpl;
    }
    /* exactly one "%s" and no other conversion: never hand a user template to printf */
    if (pct[1] != 's' || strchr(pct + 2, '%')) {
        return NULL;
    }
    return apr_psprintf(p, "%s%s%s", apr_pstrmemdup(p, tmpl, (apr_size_t)(pct - tmpl)),
                        i64(p, activity_no), pct + 2);
}

apr_interval_time_t rmsync_transfer_backoff(int attempts)
{
    apr_interval_time_t d = apr_time_from_sec(5);

    while (attempts-- > 1 && d < apr_time_from_sec(600)) {
        d *= 2;
    }
    return d > apr_time_from_sec(600) ? apr_time_from_sec(600) : d;
}

void rmsync_transfer_new_event(apr_pool_t *p, const rmsync_settings_t *s,
                               const rmsync_transfer_activity_t *a, const char *txn_id,
                               rmsync_graph_new_event_t *ne)
{
    const char *url = rmsync_transfer_activity_url(p, s->activity_url, a->activity_no);

    memset(ne, 0, sizeof(*ne));
    ne->subject = a->description ? a->description : "";
    ne->start = a->start;
    ne->end = a->end;
    ne->body_text = apr_psprintf(p, "CRM Business Activity %s%s%s", i64(p, a->activity_no),
                                 url ? "\n" : "", url ? url : "");
    if (s->category_name && *s->category_name) {
        ne->categories = apr_array_make(p, 1, sizeof(const char *));
        APR_ARRAY_PUSH(ne->categories, const char *) = s->category_name;
    }
    ne->transaction_id = txn_id;
    ne->activity_no = i64(p, a->activity_no);
    /* Graph mails an invitation to every attendee: only when the admin asked for it. */
    if (s->transfer_attendees && a->attendees && a->attendees->nelts > 0) {
        ne->attendees = a->attendees;
    }
}

/* ---- runner side: prepared statements ------------------------------------------------------ */

#define TRANSFER_BATCH "20"
#define REQUEST_BATCH  "20"

static const rmsync_db_stmt_t transfer_stmts[] = {
    /* the CRM database's identity for transactionIds: created once, shared by all nodes */
    { "transfer_instance_id",
      "WITH ins AS (INSERT INTO rmsync.settings (key, value)"
      "  VALUES ('instance_id', replace(gen_random_uuid()::text, '-', ''))"
      "  ON CONFLICT (key) DO NOTHING RETURNING value)"
      " SELECT value FROM ins UNION ALL"
      " SELECT value FROM rmsync.settings WHERE key = 'instance_id' LIMIT 1", 0 },
    { "transfer_pending",
      "SELECT a.activity_no, a.description,"
      "       (extract(epoch FROM a.start_time) * 1000000)::bigint AS start_us,"
      "       (extract(epoch FROM a.end_time) * 1000000)::bigint AS end_us,"
      "       coalesce(t.attempts, 0) AS attempts"
      "  FROM crm.business_activity a"
      "  LEFT JOIN rmsync.transfer_state t ON t.activity_no = a.activity_no"
      " WHERE a.main_representative_id = $1 AND a.transfer_to_outlook"
      "   AND NOT EXISTS (SELECT 1 FROM rmsync.event_link l WHERE l.activity_no = a.activity_no)"
      "   AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= now())"
      " ORDER BY a.activity_no LIMIT $2::int", 2 },
    /* contacts and other representatives with an address, without the mailbox owner */
    { "transfer_attendees",
      "SELECT DISTINCT ON (lower(email)) email, name FROM ("
      "  SELECT p.email, p.name, 1 AS o FROM crm.business_activity_contact c"
      "    JOIN crm.person p ON p.person_id = c.person_id WHERE c.activity_no = $1::bigint"
      "  UNION ALL"
      "  SELECT r.email, r.name, 2 FROM crm.business_activity_representative x"
      "    JOIN crm.business_representative r ON r.representative_id = x.representative_id"
      "   WHERE x.activity_no = $1::bigint AND x.representative_id <> $2) a"
      " WHERE coalesce(btrim(email), '') <> ''"
      "   AND lower(email) <> coalesce((SELECT lower(email) FROM crm.business_representative"
      "                                 WHERE representative_id = $2), '')"
      " ORDER BY lower(email), o", 2 },
    { "transfer_failed",
      "INSERT INTO rmsync.transfer_state AS t (activity_no, attempts, next_attempt_at,"
      "                                        last_error, last_error_at, updated_at)"
      " VALUES ($1::bigint, 1, now() + make_interval(secs => $2::int), $3, now(), now())"
      " ON CONFLICT (activity_no) DO UPDATE SET attempts = t.attempts + 1,"
      "   next_attempt_at = EXCLUDED.next_attempt_at, last_error = EXCLUDED.last_error,"
      "   last_error_at = now(), updated_at = now()", 3 },
    { "transfer_lock_activity",
      "SELECT a.transfer_to_outlook,"
      "       EXISTS (SELECT 1 FROM rmsync.event_link l WHERE l.activity_no = a.activity_no) AS linked"
      "  FROM crm.business_activity a WHERE a.activity_no = $1::bigint FOR UPDATE", 1 },
    { "transfer_link_insert",
      "INSERT INTO rmsync.event_link (activity_no, representative_id, event_id, ical_uid,"
      "                               change_key, applied_hash, linked_via)"
      " VALUES ($1::bigint, $2, $3, $4, $5, $6, $7)", 7 },
    { "transfer_clear_flag",
      "UPDATE crm.business_activity SET transfer_to_outlook = false"
      " WHERE activity_no = $1::bigint", 1 },
    { "transfer_state_done",
      "DELETE FROM rmsync.transfer_state WHERE activity_no = $1::bigint", 1 },
    { "transfer_event_linked",
      "SELECT activity_no FROM rmsync.event_link WHERE representative_id = $1 AND event_id = $2", 2 },
    { "transfer_insert_activity",
      "INSERT INTO crm.business_activity (description, start_time, end_time, main_representative_id)"
      " VALUES ($1, timestamptz 'epoch' + $2::bigint * interval '1 microsecond',"
      "         timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4)"
      " RETURNING activity_no", 4 },
    /* issue 14: series linked through the linking API (rmsync.linked_series) */
    { "transfer_series_remember",
      "INSERT INTO rmsync.linked_series (representative_id, series_master_id) VALUES ($1, $2)"
      " ON CONFLICT DO NOTHING RETURNING 1", 2 },
    { "transfer_series_wanted",
      "SELECT 1 FROM rmsync.linked_series s"
      " WHERE s.representative_id = $1 AND s.series_master_id = $2"
      "   AND NOT EXISTS (SELECT 1 FROM rmsync.unlinked_event u"
      "                    WHERE u.representative_id = $1 AND u.event_id = $3)", 3 },
    { "transfer_req_reset",
      "UPDATE rmsync.request SET state = 'pending' WHERE state = 'processing'"
      "   AND kind IN ('link', 'create_activity') AND representative_id = $1", 1 },
    { "transfer_req_claim",
      "UPDATE rmsync.request SET state = 'processing'"
      " WHERE id IN (SELECT id FROM rmsync.request"
      "               WHERE state = 'pending' AND kind IN ('link', 'create_activity')"
      "                 AND representative_id = $1"
      "               ORDER BY id FOR UPDATE SKIP LOCKED LIMIT $2::int)"
      " RETURNING id, kind, coalesce(activity_no, 0) AS activity_no,"
      "           payload->>'event_id' AS event_id", 2 },
    { "transfer_req_finish",
      "UPDATE rmsync.request SET state = $2, done_at = now(), result = $3 WHERE id = $1::bigint", 3 },
    { "transfer_req_requeue",
      "UPDATE rmsync.request SET state = 'pending'"
      " WHERE id = $1::bigint AND state = 'processing'", 1 },
};

static void register_stmts(void)
{
    static int done;
    rmsync_db_register_once(&done, transfer_stmts,
                            (int)(sizeof(transfer_stmts) / sizeof(transfer_stmts[0])));
}

/* ---- runner side: helpers ------------------------------------------------------------------ */

static const char *usec(apr_pool_t *p, apr_time_t t)
{
    return apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)t);
}

static apr_status_t x(rmsync_rep_ctx_t *ctx, const char *name, const char *const *params,
                      rmsync_db_result_t **pres)
{
    return rmsync_db_exec(ctx->db, ctx->pool, name, params, pres);
}

static const char *dberr(rmsync_rep_ctx_t *ctx)
{
    const char *m = rmsync_db_errmsg(ctx->db);
    return (m && *m) ? m : "database error";
}

static apr_status_t begin_as_master(rmsync_rep_ctx_t *ctx)
{
    return rmsync_db_begin_as(ctx->db, ctx->settings->master_user ? ctx->settings->master_user
                                                                  : "SYNC_MASTER");
}

static const char *instance_id(rmsync_rep_ctx_t *ctx)
{
    rmsync_db_result_t *r = NULL;

    if (x(ctx, "transfer_instance_id", RMSYNC_DB_NOPARAMS, &r) != APR_SUCCESS || r->nrows < 1
        || !rmsync_db_value(r, 0, 0)) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00804)
                   "transfer: cannot read the instance id: %s", dberr(ctx));
        return NULL;
    }
    return rmsync_db_value(r, 0, 0);
}

/* The sync log line (a DB row inside the open transaction, if any, and the text log). */
#define TLOG(ctx, level, no, ev, action, reqid, ...) \
    rmsync_synclog((ctx)->synclog, (ctx)->db, (level), (ctx)->rep_id, (no), (ev), (action), \
                   (reqid), __VA_ARGS__)

/* ---- transfer ------------------------------------------------------------------------------ */

static apr_array_header_t *activity_attendees(rmsync_rep_ctx_t *ctx, long long no)
{
    apr_array_header_t *out = apr_array_make(ctx->pool, 4, sizeof(rmsync_attendee_t));
    rmsync_db_result_t *r = NULL;
    int i;

    if (x(ctx, "transfer_attendees", RMSYNC_DB_PARAMS(i64(ctx->pool, no), ctx->rep_id), &r)
        != APR_SUCCESS) {
        return NULL;
    }
    for (i = 0; i < r->nrows; i++) {
        rmsync_attendee_t *a = apr_array_push(out);
        char *lc, *c;
        memset(a, 0, sizeof(*a));
        a->email = rmsync_db_value(r, i, 0);
        lc = apr_pstrdup(ctx->pool, a->email);
        for (c = lc; *c; c++) {
            *c = (char)apr_tolower(*c);
        }
        a->email_lc = lc;
        a->name = rmsync_db_value(r, i, 1);
        a->type = "required";
    }
    return out;
}

/* Record a failed attempt and when to try again. */
static void transfer_failed(rmsync_rep_ctx_t *ctx, long long no, int attempts, const char *why)
{
    apr_interval_time_t d = rmsync_transfer_backoff(attempts + 1);

    x(ctx, "transfer_failed", RMSYNC_DB_PARAMS(i64(ctx->pool, no),
      apr_psprintf(ctx->pool, "%d", (int)apr_time_sec(d)), why), NULL);
}

/* Link the found/created event to activity no and clear its flag in ONE transaction, as
 * SYNC_MASTER. Returns 1 linked, 0 nothing to do (activity deleted, unflagged or linked
 * meanwhile), -1 database error (*perr). */
static int transfer_link(rmsync_rep_ctx_t *ctx, long long no, const rmsync_event_t *ev,
                         const char *how, const char *request_id, const char **perr)
{
    const char *sno = i64(ctx->pool, no);
    rmsync_db_result_t *r = NULL;

    if (begin_as_master(ctx) != APR_SUCCESS) {
        *perr = dberr(ctx);
        return -1;
    }
    if (x(ctx, "transfer_lock_activity", RMSYNC_DB_PARAMS(sno), &r) != APR_SUCCESS) {
        goto fail;
    }
    if (r->nrows != 1 || strcmp(rmsync_db_value(r, 0, 1), "f")
        || strcmp(rmsync_db_value(r, 0, 0), "t")) {
        rmsync_db_rollback(ctx->db);
        return 0;
    }
    /* The appointment shows the activity as it is: its hash is the applied state, so the
     * engine's first look at it (our own echo) writes nothing. */
    if (x(ctx, "transfer_link_insert", RMSYNC_DB_PARAMS(sno, ctx->rep_id, ev->id, ev->ical_uid,
          ev->change_key, ev->hash, "transfer"), NULL) != APR_SUCCESS
        || x(ctx, "transfer_clear_flag", RMSYNC_DB_PARAMS(sno), NULL) != APR_SUCCESS
        || x(ctx, "transfer_state_done", RMSYNC_DB_PARAMS(sno), NULL) != APR_SUCCESS) {
        goto fail;
    }
    TLOG(ctx, RMSYNC_LOG_INFO, no, ev->id, "transfer", request_id,
         "activity %s transferred to Outlook (%s) and linked", sno, how);
    if (rmsync_db_commit(ctx->db) != APR_SUCCESS) {
        *perr = dberr(ctx);
        return -1;
    }
    return 1;
fail:
    *perr = apr_pstrdup(ctx->pool, dberr(ctx));
    rmsync_db_rollback(ctx->db);
    return -1;
}

static apr_status_t transfer_one(rmsync_rep_ctx_t *ctx, const char *instance,
                                 rmsync_transfer_activity_t *a, int attempts)
{
    rmsync_graph_result_t res;
    rmsync_graph_new_event_t ne;
    rmsync_event_t *ev = NULL;
    const char *no = i64(ctx->pool, a->activity_no), *err = NULL, *how = "found existing";
    apr_status_t rv;
    int count = 0, rc;

    /* 1. An earlier attempt may have created it and lost the answer: look it up first. */
    memset(&res, 0, sizeof(res));
    rv = rmsync_graph_find_event_by_property_in(ctx->graph, ctx->pool, ctx->user_id,
                                                ctx->calendar_id, no, &ev, &count, &res);
    if (rv == RMSYNC_GRAPH_NOTFOUND) {
        /* 2. Create it; the stable transactionId makes a racing retry harmless. */
        if (ctx->settings->transfer_attendees) {
            a->attendees = activity_attendees(ctx, a->activity_no);
        }
        rmsync_transfer_new_event(ctx->pool, ctx->settings, a,
                                  rmsync_transfer_txn_id(ctx->pool, instance, a->activity_no),
                                  &ne);
        memset(&res, 0, sizeof(res));
        ev = NULL;
        rv = rmsync_graph_create_event_in(ctx->graph, ctx->pool, ctx->user_id, ctx->calendar_id,
                                          &ne, &ev, &res);
        how = "created";
    }
    else if (rv == APR_SUCCESS && count > 1) {
        TLOG(ctx, RMSYNC_LOG_WARNING, a->activity_no, ev ? ev->id : NULL, "transfer", res.request_id,
             RMSYNC_LOGNO(00805) "%d appointments carry activity %s; linking the first", count, no);
    }
    if (rv != APR_SUCCESS || !ev) {
        const char *why = apr_psprintf(ctx->pool, "%s the appointment for activity %s failed: %s%s%s",
                                       how[0] == 'c' ? "creating" : "looking up", no,
                                       rmsync_graph_strerror(ctx->pool, rv),
                                       res.error_code ? " " : "",
                                       res.error_code ? res.error_code : "");
        transfer_failed(ctx, a->activity_no, attempts, why);
        TLOG(ctx, RMSYNC_LOG_WARNING, a->activity_no, NULL, "transfer", res.request_id,
             RMSYNC_LOGNO(00806) "%s; will retry", why);
        return rv ? rv : APR_EGENERAL;
    }
    rc = transfer_link(ctx, a->activity_no, ev, how, res.request_id, &err);
    if (rc > 0) {
        rmsync_engine_count(ctx, RMSYNC_CTR_EVENTS_CREATED, 1);
    }
    else if (rc == 0) {
        /* unflagged, deleted or linked elsewhere while Graph was busy: say so, leave it */
        TLOG(ctx, RMSYNC_LOG_INFO, a->activity_no, ev->id, "transfer", res.request_id,
             "activity %s changed meanwhile (unflagged, deleted or linked); the appointment "
             "stays unlinked", no);
    }
    if (rc < 0) {
        transfer_failed(ctx, a->activity_no, attempts, err);
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00807)
                   "transfer: linking activity %s to its appointment failed: %s", no, err);
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

static apr_status_t transfer_run(rmsync_rep_ctx_t *ctx)
{
    rmsync_db_result_t *r = NULL;
    const char *instance;
    int i;

    if (x(ctx, "transfer_pending", RMSYNC_DB_PARAMS(ctx->rep_id, TRANSFER_BATCH), &r)
        != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00808)
                   "transfer: cannot list flagged activities of %s: %s", ctx->rep_id, dberr(ctx));
        return APR_EGENERAL;
    }
    if (r->nrows == 0 || !rmsync_calendar_ready(ctx)) {
        return APR_SUCCESS;   /* RMSyncCalendar's calendar not known yet: they wait for it */
    }
    if (!(instance = instance_id(ctx))) {
        return APR_EGENERAL;
    }
    for (i = 0; i < r->nrows && !rmsync_engine_stopping(ctx); i++) {
        rmsync_transfer_activity_t a;
        memset(&a, 0, sizeof(a));
        a.activity_no = apr_atoi64(rmsync_db_value(r, i, 0));
        a.description = rmsync_db_value(r, i, 1);
        a.start = (apr_time_t)apr_atoi64(rmsync_db_value(r, i, 2));
        a.end = (apr_time_t)apr_atoi64(rmsync_db_value(r, i, 3));
        a.representative_id = ctx->rep_id;
        transfer_one(ctx, instance, &a, atoi(rmsync_db_value(r, i, 4)));
    }
    return APR_SUCCESS;
}

/* ---- activities from events (category rule, create_activity requests) --------------------- */

/* Inside an open transaction as SYNC_MASTER: insert the activity (subject, times, main
 * representative = mailbox owner) and its link, then let the engine's apply fill contacts and
 * representatives from the attendees (the one implementation of that mapping), in a savepoint
 * of this same transaction. */
static int insert_activity_from_event(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                      const char *via, long long *pno, const char **perr)
{
    rmsync_db_result_t *r = NULL;
    rmsync_apply_result_e ar;
    const rmsync_event_t *raw = ev;
    const char *sno;
    int in_tx = ctx->in_tx, skip = 0;
    apr_status_t rv;

    /* the calendar-field view (private masked, all-day local): the subject of a private
     * appointment never reaches the CRM, not even for a moment */
    if (rmsync_calfields_view(ctx, raw, &ev, &skip) != APR_SUCCESS || skip) {
        *perr = skip ? "the appointment is private (RMSyncPrivateAppointments skip)"
                     : apr_pstrdup(ctx->pool, dberr(ctx));
        return -1;
    }
    if (x(ctx, "transfer_insert_activity", RMSYNC_DB_PARAMS(ev->subject ? ev->subject : "",
          usec(ctx->pool, ev->start), usec(ctx->pool, ev->end > ev->start ? ev->end : ev->start),
          ctx->rep_id), &r) != APR_SUCCESS || r->nrows != 1) {
        *perr = apr_pstrdup(ctx->pool, dberr(ctx));
        return -1;
    }
    sno = rmsync_db_value(r, 0, 0);
    *pno = apr_atoi64(sno);
    if (x(ctx, "transfer_link_insert", RMSYNC_DB_PARAMS(sno, ctx->rep_id, ev->id, ev->ical_uid,
          ev->change_key, NULL, via), NULL) != APR_SUCCESS) {
        *perr = apr_pstrdup(ctx->pool, dberr(ctx));
        return -1;
    }
    ctx->in_tx = 1;
    rv = rmsync_apply_event_force(ctx, raw, NULL, &ar);
    ctx->in_tx = in_tx;
    if (rv != APR_SUCCESS) {
        *perr = apr_psprintf(ctx->pool, "applying the appointment failed: %s", dberr(ctx));
        return -1;
    }
    return 0;
}

/* 1 when event_id is linked in this mailbox (*pno = its activity), 0 not, -1 error. */
static int event_linked(rmsync_rep_ctx_t *ctx, const char *event_id, long long *pno)
{
    rmsync_db_result_t *r = NULL;

    if (x(ctx, "transfer_event_linked", RMSYNC_DB_PARAMS(ctx->rep_id, event_id), &r)
        != APR_SUCCESS) {
        return -1;
    }
    if (r->nrows == 0) {
        return 0;
    }
    if (pno) {
        *pno = apr_atoi64(rmsync_db_value(r, 0, 0));
    }
    return 1;
}

/* Inside no transaction: create an activity from ev and link it (linked_via via); what names
 * the reason in the sync log. */
static apr_status_t link_new_activity(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                      const char *via, const char *what)
{
    const char *err = NULL;
    long long no = 0;
    int rc;

    if (begin_as_master(ctx) != APR_SUCCESS) {
        return APR_EGENERAL;
    }
    if ((rc = event_linked(ctx, ev->id, NULL)) != 0) {
        rmsync_db_rollback(ctx->db);     /* linked already (repeated notification) or DB error */
        return rc < 0 ? APR_EGENERAL : APR_SUCCESS;
    }
    if (insert_activity_from_event(ctx, ev, via, &no, &err) < 0) {
        rmsync_db_rollback(ctx->db);
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00810)
                   "category link: creating an activity for an appointment of %s failed: %s",
                   ctx->rep_id, err);
        TLOG(ctx, RMSYNC_LOG_ERR, 0, ev->id, "create", NULL, RMSYNC_LOGNO(00800)
             "creating an activity for the appointment %s failed: %s", what, err);
        return APR_EGENERAL;
    }
    TLOG(ctx, RMSYNC_LOG_INFO, no, ev->id, "create", NULL,
         "activity %s created from the appointment %s and linked", i64(ctx->pool, no), what);
    if (rmsync_db_commit(ctx->db) != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00809)
                   "category link: commit failed for %s: %s", ctx->rep_id, dberr(ctx));
        return APR_EGENERAL;
    }
    rmsync_engine_count(ctx, RMSYNC_CTR_LINKS_CREATED, 1);
    return APR_SUCCESS;
}

/* 1 when ev is an occurrence of a series linked through the linking API (and not an occurrence
 * an admin unlinked), 0 not, -1 error. */
static int series_wanted(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev)
{
    rmsync_db_result_t *r = NULL;

    if (!ev->series_master_id || ev->is_cancelled) {
        return 0;
    }
    if (x(ctx, "transfer_series_wanted", RMSYNC_DB_PARAMS(ctx->rep_id, ev->series_master_id,
          ev->id), &r) != APR_SUCCESS) {
        return -1;
    }
    return r->nrows > 0;
}

/* The whole event behind a sparse delta row: *full NULL with APR_SUCCESS when it is gone (404),
 * an error when it cannot be read whole. */
static apr_status_t read_full(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                              rmsync_event_t **full)
{
    rmsync_graph_result_t res;
    apr_status_t rv;

    memset(&res, 0, sizeof(res));
    *full = NULL;
    rv = rmsync_graph_get_event(ctx->graph, ctx->pool, ctx->user_id, ev->id, full, &res);
    if (rv == RMSYNC_GRAPH_NOTFOUND) {
        *full = NULL;
        return APR_SUCCESS;
    }
    if (rv != APR_SUCCESS || !*full || (*full)->partial) {
        *full = NULL;
        return rv ? rv : APR_EGENERAL;
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_transfer_unlinked_event(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev)
{
    const char *name = ctx->settings->category_name;
    int rc;

    if (!ev || ev->removed) {
        return APR_SUCCESS;
    }
    register_stmts();
    if (ev->partial && ev->series_master_id
        && (ev->type == RMSYNC_EVENT_TYPE_OCCURRENCE || ev->type == RMSYNC_EVENT_TYPE_EXCEPTION)) {
        /* a sparse occurrence row (no categories): read the occurrence to decide */
        rmsync_event_t *full = NULL;
        apr_status_t rv = read_full(ctx, ev, &full);
        if (rv != APR_SUCCESS || !full) {
            return rv;
        }
        ev = full;
    }
    /* an occurrence of a series the linking API linked: entering the window, or new with a
     * changed pattern (issue 14) */
    if (ev->series_master_id && (rc = series_wanted(ctx, ev)) != 0) {
        return rc < 0 ? APR_EGENERAL
             : link_new_activity(ctx, ev, "api", "(an occurrence of a linked series)");
    }
    if (!name || !*name || !rmsync_categories_contains(ev->categories, name)) {
        return APR_SUCCESS;
    }
    /* Our own transfers carry the category too: an unlinked one is either a transfer whose link
     * is still to be written (its retry finds and links it) or one an admin unlinked on purpose.
     * Neither may become a second activity. */
    if (ev->transaction_id && !strncmp(ev->transaction_id, "rmsync-", 7)) {
        return APR_SUCCESS;
    }
    /* Only the organiser's copy asks for an activity (the same meeting in an attendee's mailbox
     * must not make a second one); cancelled meetings are not taken. A series gives one activity
     * per occurrence (issue 14): its occurrences and exceptions come one by one (calendarView
     * delta, linked by their own ids); the master itself never becomes an activity. */
    if (!ev->is_organizer || ev->is_cancelled || ev->type == RMSYNC_EVENT_TYPE_SERIES_MASTER) {
        if (rmsync_synclog_wants(ctx->synclog, RMSYNC_LOG_DEBUG)) {
            TLOG(ctx, RMSYNC_LOG_DEBUG, 0, ev->id, "skip", NULL,
                 "category on an appointment that is %s: no activity created",
                 !ev->is_organizer ? "not organised by the mailbox owner"
                 : ev->is_cancelled ? "cancelled"
                 : "a series master (its occurrences each get an activity)");
        }
        return APR_SUCCESS;
    }
    if (rmsync_event_is_private(ev) && ctx->settings->private_policy == RMSYNC_PRIVATE_SKIP) {
        if (rmsync_synclog_wants(ctx->synclog, RMSYNC_LOG_DEBUG)) {
            TLOG(ctx, RMSYNC_LOG_DEBUG, 0, ev->id, "skip", NULL, "category on a private or "
                 "confidential appointment: no activity created (RMSyncPrivateAppointments skip)");
        }
        return APR_SUCCESS;
    }
    if (ev->partial || !ev->start) {
        rmsync_event_t *full = NULL;
        apr_status_t rv = read_full(ctx, ev, &full);
        return rv != APR_SUCCESS || !full ? rv : rmsync_transfer_unlinked_event(ctx, full);
    }
    return link_new_activity(ctx, ev, "category",
                             apr_psprintf(ctx->pool, "with category '%s'", name));
}

/* ---- linking requests: the runner half ----------------------------------------------------- */

static const char *result_json(apr_pool_t *p, int status, const char *error, const char *message,
                               long long no, const char *event_id)
{
    cJSON *o = rmsync_json_object(p);

    cJSON_AddNumberToObject(o, "status", status);
    if (error) {
        cJSON_AddStringToObject(o, "error", error);
    }
    if (message) {
        cJSON_AddStringToObject(o, "message", message);
    }
    if (no > 0) {
        cJSON_AddNumberToObject(o, "activity_no", (double)no);
    }
    if (event_id) {
        cJSON_AddStringToObject(o, "event_id", event_id);
    }
    return rmsync_json_print(p, o);
}

static void refuse(rmsync_rep_ctx_t *ctx, const char *id, const char *kind, long long no,
                   const char *event_id, int status, const char *error, const char *message,
                   const char *graph_request_id)
{
    x(ctx, "transfer_req_finish", RMSYNC_DB_PARAMS(id, "failed",
      result_json(ctx->pool, status, error, message, no, event_id)), NULL);
    TLOG(ctx, RMSYNC_LOG_INFO, no, event_id, kind, graph_request_id,
         "%s request %s refused (%d %s): %s", kind, id, status, error, message);
}

/* A link request's activity, locked for the transaction: 1 it exists and has no link yet;
 * 0 the request was refused (rolled back); -1 retry later (rolled back). */
static int lock_unlinked(rmsync_rep_ctx_t *ctx, const char *id, const char *kind, long long no,
                         const char *event_id, const char *graph_request_id)
{
    rmsync_db_result_t *r = NULL;
    int gone;

    if (x(ctx, "transfer_lock_activity", RMSYNC_DB_PARAMS(i64(ctx->pool, no)), &r)
        != APR_SUCCESS) {
        rmsync_db_rollback(ctx->db);
        return -1;
    }
    if (r->nrows == 1 && !strcmp(rmsync_db_value(r, 0, 1), "f")) {
        return 1;
    }
    gone = r->nrows != 1;
    rmsync_db_rollback(ctx->db);
    refuse(ctx, id, kind, no, event_id, gone ? 404 : 409,
           gone ? "unknown_activity" : "activity_already_linked",
           gone ? "no business activity with that number"
                : "the business activity is already linked to an Outlook appointment",
           graph_request_id);
    return 0;
}

/* Link activity no to the appointment, then apply the appointment's state at once (Outlook
 * owns the sync fields now), inside the request's transaction; rolled back on a failure. */
static apr_status_t link_and_apply(rmsync_rep_ctx_t *ctx, long long no, const rmsync_event_t *ev,
                                   const char *graph_request_id)
{
    rmsync_apply_result_e ar;
    apr_status_t rv;
    int in_tx = ctx->in_tx;

    rv = x(ctx, "transfer_link_insert", RMSYNC_DB_PARAMS(i64(ctx->pool, no), ctx->rep_id, ev->id,
           ev->ical_uid, ev->change_key, NULL, "link"), NULL);
    if (rv == APR_SUCCESS) {
        ctx->in_tx = 1;
        rv = rmsync_apply_event_force(ctx, ev, graph_request_id, &ar);
        ctx->in_tx = in_tx;
    }
    if (rv != APR_SUCCESS) {
        rmsync_db_rollback(ctx->db);
    }
    return rv;
}

/* Commit a request's link; 0 done, -1 retry later. */
static int linked(rmsync_rep_ctx_t *ctx)
{
    if (rmsync_db_commit(ctx->db) != APR_SUCCESS) {
        return -1;
    }
    rmsync_engine_count(ctx, RMSYNC_CTR_LINKS_CREATED, 1);
    return 0;
}

/* issue 14: a link / create_activity request given a series master id: one activity per
 * occurrence inside the sync window (a link request: the given activity takes the first one),
 * each linked to its occurrence id; the series is remembered (rmsync.linked_series), so
 * occurrences entering the window or made by a pattern change later get theirs too. */
static int run_series_request(rmsync_rep_ctx_t *ctx, const char *id, const char *kind,
                              long long no, const rmsync_event_t *master, const char *greq)
{
    rmsync_graph_result_t res;
    apr_array_header_t *occ = NULL;
    rmsync_db_result_t *r = NULL;
    apr_time_t now = apr_time_now(), ws, we;
    const char *err = NULL;
    long long first = 0;
    apr_status_t rv;
    int i, rc, n = 0, is_link = !strcmp(kind, "link");

    if (!ctx->settings->initial_sync_from
        || rmsync_sync_from_time(ctx->settings->initial_sync_from, now, &ws) != APR_SUCCESS) {
        ws = now - apr_time_from_sec(30 * 86400);
    }
    we = now + apr_time_from_sec((apr_time_t)(ctx->settings->window_days > 0
                                              ? ctx->settings->window_days : 365) * 86400);
    memset(&res, 0, sizeof(res));
    rv = rmsync_graph_list_instances(ctx->graph, ctx->pool, ctx->user_id, master->id, ws, we,
                                     &occ, &res);
    if (rv != APR_SUCCESS) {
        if (rmsync_graph_is_transient(rv)) {
            return -1;
        }
        refuse(ctx, id, kind, no, master->id, 502, "graph_error",
               apr_psprintf(ctx->pool, "reading the occurrences failed: %s",
                            rmsync_graph_strerror(ctx->pool, rv)), res.request_id);
        return 0;
    }
    if (begin_as_master(ctx) != APR_SUCCESS) {
        return -1;
    }
    if (x(ctx, "transfer_series_remember", RMSYNC_DB_PARAMS(ctx->rep_id, master->id), &r)
        != APR_SUCCESS) {
        rmsync_db_rollback(ctx->db);
        return -1;
    }
    if (r->nrows == 0) {
        rmsync_db_rollback(ctx->db);
        refuse(ctx, id, kind, no, master->id, 409, "event_already_linked",
               "the series is already linked", greq);
        return 0;
    }
    if (is_link && (rc = lock_unlinked(ctx, id, kind, no, master->id, greq)) < 1) {
        return rc;
    }
    for (i = 0; i < occ->nelts; i++) {
        const rmsync_event_t *o = RMSYNC_ARRAY_IDX(occ, i, const rmsync_event_t *);
        long long made = 0;
        if (!o || !o->id || o->is_cancelled) {
            continue;
        }
        if ((rc = event_linked(ctx, o->id, NULL)) != 0) {
            if (rc < 0) {
                rmsync_db_rollback(ctx->db);
                return -1;
            }
            continue;                    /* that occurrence was linked on its own before */
        }
        if (is_link && !first) {
            if (link_and_apply(ctx, no, o, res.request_id) != APR_SUCCESS) {
                return -1;
            }
            made = no;
        }
        else if (insert_activity_from_event(ctx, o, "api", &made, &err) < 0) {
            rmsync_db_rollback(ctx->db);
            rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00813)
                       "%s request %s (series): %s", kind, id, err);
            refuse(ctx, id, kind, 0, master->id, 500, "database_error",
                   "creating the activities failed", res.request_id);
            return 0;
        }
        if (!first) {
            first = made;
        }
        n++;
        TLOG(ctx, RMSYNC_LOG_INFO, made, o->id, made == no && is_link ? "link" : "create",
             res.request_id, "activity %s %s an occurrence of the series (request %s)",
             i64(ctx->pool, made), made == no && is_link ? "linked to" : "created from and linked to",
             id);
    }
    if (is_link && !first) {
        rmsync_db_rollback(ctx->db);
        refuse(ctx, id, kind, no, master->id, 422, "no_occurrence_in_window",
               "the series has no occurrence inside the sync window to link the activity to",
               res.request_id);
        return 0;
    }
    x(ctx, "transfer_req_finish", RMSYNC_DB_PARAMS(id, "done",
      result_json(ctx->pool, is_link ? 200 : 201, NULL,
                  apr_psprintf(ctx->pool, "series linked: %d occurrence(s) inside the sync "
                               "window, each with its activity; later ones get theirs when they "
                               "enter the window", n), first, master->id)), NULL);
    if (rmsync_db_commit(ctx->db) != APR_SUCCESS) {
        return -1;
    }
    rmsync_engine_count(ctx, RMSYNC_CTR_LINKS_CREATED, (apr_uint32_t)(n ? n : 1));
    return 0;
}

/* Execute one claimed request. 0 done or refused, -1 retry later (transient). */
static int run_request(rmsync_rep_ctx_t *ctx, const char *id, const char *kind, long long no,
                       const char *event_id)
{
    rmsync_graph_result_t res;
    rmsync_event_t *ev = NULL;
    const char *err = NULL;
    long long other = 0;
    apr_status_t rv;
    int rc, is_link = !strcmp(kind, "link");

    if (!event_id || !*event_id || (is_link && no <= 0)) {
        refuse(ctx, id, kind, no, event_id, 422, "invalid_request",
               "event_id (and for a link activity_no) missing", NULL);
        return 0;
    }
    /* The Graph half, here in the runner: the event must exist in this mailbox. */
    memset(&res, 0, sizeof(res));
    rv = rmsync_graph_get_event(ctx->graph, ctx->pool, ctx->user_id, event_id, &ev, &res);
    if (rv == RMSYNC_GRAPH_NOTFOUND) {
        refuse(ctx, id, kind, no, event_id, 404, "unknown_event",
               "no such appointment in the representative's calendar", res.request_id);
        return 0;
    }
    if (rv == RMSYNC_GRAPH_BADREQUEST) {
        refuse(ctx, id, kind, no, event_id, 422, "invalid_event_id",
               "Graph refused the appointment id", res.request_id);
        return 0;
    }
    if (rv != APR_SUCCESS || !ev) {
        if (rmsync_graph_is_transient(rv)) {
            return -1;
        }
        refuse(ctx, id, kind, no, event_id, 502, "graph_error",
               apr_psprintf(ctx->pool, "reading the appointment failed: %s",
                            rmsync_graph_strerror(ctx->pool, rv)), res.request_id);
        return 0;
    }
    if (ev->type == RMSYNC_EVENT_TYPE_SERIES_MASTER) {
        return run_series_request(ctx, id, kind, no, ev, res.request_id);
    }
    if (begin_as_master(ctx) != APR_SUCCESS) {
        return -1;
    }
    if ((rc = event_linked(ctx, ev->id, &other)) != 0) {
        rmsync_db_rollback(ctx->db);
        if (rc < 0) {
            return -1;
        }
        refuse(ctx, id, kind, no, ev->id, 409, "event_already_linked",
               apr_psprintf(ctx->pool, "the appointment is already linked to activity %s",
                            i64(ctx->pool, other)), res.request_id);
        return 0;
    }
    if (!is_link && rmsync_event_is_private(ev)
        && ctx->settings->private_policy == RMSYNC_PRIVATE_SKIP) {
        rmsync_db_rollback(ctx->db);
        refuse(ctx, id, kind, 0, ev->id, 422, "private_appointment", "the appointment is "
               "private or confidential (RMSyncPrivateAppointments skip)", res.request_id);
        return 0;
    }
    if (!is_link) {
        if (insert_activity_from_event(ctx, ev, "api", &no, &err) < 0) {
            rmsync_db_rollback(ctx->db);
            rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00811)
                       "create_activity request %s: %s", id, err);
            refuse(ctx, id, kind, 0, ev->id, 500, "database_error", "creating the activity failed",
                   res.request_id);
            return 0;
        }
        x(ctx, "transfer_req_finish", RMSYNC_DB_PARAMS(id, "done",
          result_json(ctx->pool, 201, NULL, "activity created and linked", no, ev->id)), NULL);
        TLOG(ctx, RMSYNC_LOG_INFO, no, ev->id, "create", res.request_id,
             "activity %s created from the appointment and linked (request %s)", i64(ctx->pool, no), id);
        return linked(ctx);
    }
    if ((rc = lock_unlinked(ctx, id, kind, no, ev->id, res.request_id)) < 1) {
        return rc;
    }
    if (link_and_apply(ctx, no, ev, res.request_id) != APR_SUCCESS) {
        return -1;
    }
    x(ctx, "transfer_req_finish", RMSYNC_DB_PARAMS(id, "done",
      result_json(ctx->pool, 200, NULL, "linked", no, ev->id)), NULL);
    TLOG(ctx, RMSYNC_LOG_INFO, no, ev->id, "link", res.request_id,
         "activity %s linked to the appointment (request %s)", i64(ctx->pool, no), id);
    return linked(ctx);
}

static apr_status_t requests_run(rmsync_rep_ctx_t *ctx)
{
    rmsync_db_result_t *r = NULL;
    int i;

    /* We hold this representative's lease: a 'processing' row of ours is from a dead runner. */
    x(ctx, "transfer_req_reset", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
    if (x(ctx, "transfer_req_claim", RMSYNC_DB_PARAMS(ctx->rep_id, REQUEST_BATCH), &r)
        != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00812)
                   "linking requests of %s: cannot claim: %s", ctx->rep_id, dberr(ctx));
        return APR_EGENERAL;
    }
    for (i = 0; i < r->nrows; i++) {
        const char *id = rmsync_db_value(r, i, 0);
        if (run_request(ctx, id, rmsync_db_value(r, i, 1), apr_atoi64(rmsync_db_value(r, i, 2)),
                        rmsync_db_value(r, i, 3)) < 0) {
            /* transient (Graph throttled, DB hiccup): back to the queue for the next job */
            x(ctx, "transfer_req_requeue", RMSYNC_DB_PARAMS(id), NULL);
        }
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_transfer_step(rmsync_rep_ctx_t *ctx)
{
    apr_status_t rv1, rv2;

    register_stmts();
    rv1 = requests_run(ctx);
    rv2 = transfer_run(ctx);
    return rv1 ? rv1 : rv2;
}
