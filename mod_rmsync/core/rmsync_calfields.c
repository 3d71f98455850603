/* mod_rmsync, run by the sync runner: calendar fields of an Outlook event as the CRM sees them,
 * and the job step that reads the mailbox owner's time zone (see rmsync_calfields.h). */
#include <pthread.h>
#include <string.h>
#include <apr_strings.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"
#include "rmsync_synclog.h"
#include "rmsync_tz.h"
#include "rmsync_calfields.h"

static const rmsync_db_stmt_t cal_stmts[] = {
    { "cal_tz_state",
      "SELECT mailbox_tz, mailbox_tz_source, "
      "       (mailbox_tz_at IS NULL OR mailbox_tz_at < now() - interval '1 day') AS stale "
      "  FROM rmsync.rep_state WHERE representative_id = $1", 1 },
    /* a zone PostgreSQL does not know would make AT TIME ZONE fail inside the page: ask AT
     * TIME ZONE itself (22023 = unknown; microseconds, where pg_timezone_names reads every
     * zone file: ~60 ms a call). The names come from rmsync_tz's table only. */
    { "cal_tz_known", "SELECT (now() AT TIME ZONE $1) IS NOT NULL", 1 },
    { "cal_tz_store",
      "UPDATE rmsync.rep_state SET mailbox_tz = $2, mailbox_tz_source = $3, "
      "       mailbox_tz_at = now() WHERE representative_id = $1", 3 },
    /* floating local dates -> the instants of local midnight in the owner's zone */
    { "cal_allday",
      "SELECT (extract(epoch FROM ($2::timestamp AT TIME ZONE z.tz)) * 1000000)::bigint, "
      "       (extract(epoch FROM ($3::timestamp AT TIME ZONE z.tz)) * 1000000)::bigint "
      "  FROM (SELECT coalesce((SELECT mailbox_tz FROM rmsync.rep_state "
      "                          WHERE representative_id = $1), $4) AS tz) z", 4 },
    { "cal_other_rep",
      "SELECT 1 FROM crm.business_representative "
      " WHERE lower(email) = $1 AND representative_id <> $2 LIMIT 1", 2 },
};

static void register_stmts(void)
{
    static int done;
    rmsync_db_register_once(&done, cal_stmts, (int)(sizeof(cal_stmts) / sizeof(cal_stmts[0])));
}

/* A zone once found known is kept for the runner's life (one statement less a mailbox);
 * unknown ones are asked again (rare, and they may get installed). */
#define TZ_KNOWN_MAX 64
static pthread_mutex_t tz_known_mutex = PTHREAD_MUTEX_INITIALIZER;
static char tz_known[TZ_KNOWN_MAX][64];
static int tz_nknown;

static int tz_known_cached(const char *iana, int add)
{
    int i, hit = 0;

    pthread_mutex_lock(&tz_known_mutex);
    for (i = 0; i < tz_nknown && !hit; i++) {
        hit = !strcmp(tz_known[i], iana);
    }
    if (!hit && add && tz_nknown < TZ_KNOWN_MAX && strlen(iana) < sizeof(tz_known[0])) {
        apr_cpystrn(tz_known[tz_nknown++], iana, sizeof(tz_known[0]));
    }
    pthread_mutex_unlock(&tz_known_mutex);
    return hit;
}

/* ---- the view ------------------------------------------------------------------------------- */

static const char *floating(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t x;

    apr_time_exp_gmt(&x, t);
    return apr_psprintf(p, "%04d-%02d-%02d %02d:%02d:%02d", x.tm_year + 1900, x.tm_mon + 1,
                        x.tm_mday, x.tm_hour, x.tm_min, x.tm_sec);
}

/* Graph returns an all-day event floating (midnight to midnight in the zone the request asked
 * for, no shift): read as UTC it is the local dates; make them local midnights in the zone. */
static apr_status_t all_day(rmsync_rep_ctx_t *ctx, rmsync_event_t *v)
{
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;

    rv = rmsync_db_exec(ctx->db, ctx->pool, "cal_allday",
                        RMSYNC_DB_PARAMS(ctx->rep_id, floating(ctx->pool, v->start),
                                         floating(ctx->pool, v->end),
                                         ctx->settings->default_tz), &r);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (r->nrows == 1 && rmsync_db_value(r, 0, 0) && rmsync_db_value(r, 0, 1)) {
        v->start = (apr_time_t)apr_atoi64(rmsync_db_value(r, 0, 0));
        v->end = (apr_time_t)apr_atoi64(rmsync_db_value(r, 0, 1));
    }
    return APR_SUCCESS;
}

static int has_attendee(const rmsync_event_t *ev, const char *email_lc)
{
    int i;

    for (i = 0; i < ev->attendees->nelts; i++) {
        const rmsync_attendee_t *a = &RMSYNC_ARRAY_IDX(ev->attendees, i, rmsync_attendee_t);
        if (a->email_lc && !strcmp(a->email_lc, email_lc)) {
            return 1;
        }
    }
    return 0;
}

static const char *lower(apr_pool_t *p, const char *s)
{
    char *r = apr_pstrdup(p, s), *q;

    apr_collapse_spaces(r, r);
    for (q = r; *q; q++) {
        if (*q >= 'A' && *q <= 'Z') {
            *q = (char)(*q - 'A' + 'a');
        }
    }
    return r;
}

apr_status_t rmsync_calfields_view(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                   const rmsync_event_t **pview, int *pskip)
{
    const rmsync_settings_t *s = ctx->settings;
    int private = rmsync_event_is_private(ev) && s->private_policy != RMSYNC_PRIVATE_SYNC;
    const char *org = NULL;
    rmsync_event_t *v;
    apr_status_t rv;

    *pview = ev;
    *pskip = 0;
    if (!ev || ev->removed || ev->partial) {
        return APR_SUCCESS;
    }
    if (private && s->private_policy == RMSYNC_PRIVATE_SKIP) {
        *pskip = 1;
        return APR_SUCCESS;
    }
    register_stmts();
    if (!private && !ev->is_organizer && ev->organizer_email && *ev->organizer_email) {
        org = lower(ctx->pool, ev->organizer_email);
        if (has_attendee(ev, org)) {
            org = NULL;
        }
        else {
            rmsync_db_result_t *r = NULL;
            if ((rv = rmsync_db_exec(ctx->db, ctx->pool, "cal_other_rep",
                                     RMSYNC_DB_PARAMS(org, ctx->rep_id), &r)) != APR_SUCCESS) {
                return rv;
            }
            if (r->nrows == 0) {
                org = NULL;             /* only another representative, never a contact */
            }
        }
    }
    if (!private && !ev->is_all_day && !org) {
        return APR_SUCCESS;
    }
    v = apr_pmemdup(ctx->pool, ev, sizeof(*ev));
    if (private) {
        /* the subject and the attendee list stay in Outlook; the times still sync */
        v->subject = RMSYNC_PRIVATE_DESCRIPTION;
        v->attendees = apr_array_make(ctx->pool, 1, sizeof(rmsync_attendee_t));
        v->body_preview = NULL;
    }
    if (org) {
        rmsync_attendee_t *a;
        v->attendees = apr_array_copy(ctx->pool, ev->attendees);
        a = apr_array_push(v->attendees);
        memset(a, 0, sizeof(*a));
        a->email = ev->organizer_email;
        a->email_lc = org;
        a->name = ev->organizer_name;
        a->type = "organizer";
    }
    if (ev->is_all_day && ev->start && ev->end
        && (rv = all_day(ctx, v)) != APR_SUCCESS) {
        return rv;
    }
    v->hash = rmsync_event_hash(ctx->pool, v);
    *pview = v;
    return APR_SUCCESS;
}

/* ---- the owner's time zone ------------------------------------------------------------------ */

static apr_status_t tz_store(rmsync_rep_ctx_t *ctx, const char *iana, const char *source)
{
    return rmsync_db_exec(ctx->db, ctx->pool, "cal_tz_store",
                          RMSYNC_DB_PARAMS(ctx->rep_id, iana, source), NULL);
}

/* The mailbox zone cannot be used: RMSyncDefaultTimeZone from now on; said once (when the
 * source becomes 'default', not on every daily re-read). */
static apr_status_t tz_fallback(rmsync_rep_ctx_t *ctx, const char *old_source, const char *why,
                                const char *request_id)
{
    if (!old_source || strcmp(old_source, "default")) {
        rmsync_log(RMSYNC_LOG_NOTICE, 0, RMSYNC_LOGNO(00470)
                   "time zone of %s: %s; all-day events use RMSyncDefaultTimeZone (%s)",
                   ctx->rep_id, why, ctx->settings->default_tz);
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_WARNING, ctx->rep_id, 0, NULL,
                       "timezone", request_id, RMSYNC_LOGNO(00471) "mailbox time zone: %s; "
                       "all-day events use RMSyncDefaultTimeZone (%s)", why,
                       ctx->settings->default_tz);
    }
    return tz_store(ctx, NULL, "default");
}

apr_status_t rmsync_calfields_tz_step(rmsync_rep_ctx_t *ctx)
{
    rmsync_db_result_t *r = NULL;
    rmsync_graph_result_t res;
    const char *name = NULL, *iana, *old_source;
    apr_status_t rv;

    register_stmts();
    if ((rv = rmsync_db_exec(ctx->db, ctx->pool, "cal_tz_state", RMSYNC_DB_PARAMS(ctx->rep_id),
                             &r)) != APR_SUCCESS) {
        return rv;
    }
    if (r->nrows != 1) {
        return APR_SUCCESS;
    }
    old_source = rmsync_db_value(r, 0, 1);
    if (rmsync_db_value(r, 0, 2)[0] != 't' && !ctx->want_initial) {
        return APR_SUCCESS;
    }
    memset(&res, 0, sizeof(res));
    rv = rmsync_graph_mailbox_timezone(ctx->graph, ctx->pool, ctx->user_id, &name, &res);
    if (rv == RMSYNC_GRAPH_FORBIDDEN) {
        return tz_fallback(ctx, old_source, "the application lacks the permission "
                           "MailboxSettings.Read (403)", res.request_id);
    }
    if (rv == RMSYNC_GRAPH_NOTFOUND || rv == RMSYNC_GRAPH_BADREQUEST) {
        return tz_fallback(ctx, old_source, apr_psprintf(ctx->pool, "Graph answered HTTP %d %s",
                           res.http_status, res.error_code ? res.error_code : ""),
                           res.request_id);
    }
    if (rv != APR_SUCCESS) {
        /* transient: keep what we have and read it again in a later job */
        rmsync_log(RMSYNC_LOG_INFO, rv, "time zone of %s: reading it failed (%s), will retry",
                   ctx->rep_id, rmsync_graph_strerror(ctx->pool, rv));
        return APR_SUCCESS;
    }
    if (!name) {
        return tz_fallback(ctx, old_source, "the mailbox has no time zone set", res.request_id);
    }
    if (!(iana = rmsync_tz_to_iana(name))) {
        return tz_fallback(ctx, old_source, apr_psprintf(ctx->pool, "unknown zone '%s'", name),
                           res.request_id);
    }
    if (!tz_known_cached(iana, 0)) {
        rv = rmsync_db_exec(ctx->db, ctx->pool, "cal_tz_known", RMSYNC_DB_PARAMS(iana), &r);
        if (rv != APR_SUCCESS && !(rv == RMSYNC_DB_ESQL
                                   && rmsync_db_is_sqlstate(ctx->db, "22023"))) {
            return rv;
        }
        if (rv != APR_SUCCESS || r->nrows != 1 || rmsync_db_value(r, 0, 0)[0] != 't') {
            return tz_fallback(ctx, old_source, apr_psprintf(ctx->pool, "zone '%s' (%s) unknown "
                               "to PostgreSQL", name, iana), res.request_id);
        }
        tz_known_cached(iana, 1);
    }
    rmsync_log(RMSYNC_LOG_DEBUG, 0, "time zone of %s: %s (%s)", ctx->rep_id, name, iana);
    return tz_store(ctx, iana, "mailbox");
}
