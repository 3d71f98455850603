/* mod_rmsync, run by the sync runner: Outlook -> CRM apply rules for linked events (see
 * rmsync_apply.h). */
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <apr_hash.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"
#include "rmsync_engine.h"
#include "rmsync_apply.h"
#include "rmsync_synclog.h"
#include "rmsync_json.h"
#include "rmsync_calfields.h"
#include "rmsync_sb.h"

/* the percent rule of the breaker counts only for representatives with this many links */
#define BREAKER_PERCENT_MIN_LINKS 10

static const rmsync_db_stmt_t apply_stmts[] = {
    { "apply_savepoint", "SAVEPOINT rmsync_apply", 0 },
    { "apply_release", "RELEASE SAVEPOINT rmsync_apply", 0 },
    { "apply_rollback_to", "ROLLBACK TO SAVEPOINT rmsync_apply", 0 },
    { "apply_link_load",
      "SELECT l.activity_no, l.applied_hash, l.applied_attendees, l.change_key, "
      "       (l.gone_at IS NOT NULL) AS gone, a.description, "
      "       (extract(epoch FROM a.start_time) * 1000000)::bigint AS start_us, "
      "       (extract(epoch FROM a.end_time) * 1000000)::bigint AS end_us, "
      "       a.status, a.main_representative_id, l.gone_kind "
      "  FROM rmsync.event_link l "
      "  JOIN crm.business_activity a ON a.activity_no = l.activity_no "
      " WHERE l.representative_id = $1 AND l.event_id = $2", 2 },
    /* the page's links, locked in one order (activity_no) like the single lock below */
    { "apply_links_page",
      "SELECT l.activity_no, l.applied_hash, l.applied_attendees, l.change_key, "
      "       (l.gone_at IS NOT NULL) AS gone, a.description, "
      "       (extract(epoch FROM a.start_time) * 1000000)::bigint AS start_us, "
      "       (extract(epoch FROM a.end_time) * 1000000)::bigint AS end_us, "
      "       a.status, a.main_representative_id, l.gone_kind, l.event_id "
      "  FROM unnest(string_to_array($2, E'\\n')) AS u(id) "
      "  JOIN rmsync.event_link l ON l.representative_id = $1 AND l.event_id = u.id "
      "  JOIN crm.business_activity a ON a.activity_no = l.activity_no "
      " ORDER BY a.activity_no FOR UPDATE OF l, a", 2 },
    /* the writes of all linked events of a page in one statement (the page fast path): per
     * item n (activity), u: update the fields d/s/e/st; am: contacts and representatives (0
     * none, 1 add only, 2 add + drop) from the addresses k, never the main representative mr;
     * lc: store the applied state h/k/ck/iu in the link. Same conditions as the item-by-item
     * statements above; returns the attendee changes for the log. $4 = the activity numbers
     * again as an array: the planner takes jsonb_to_recordset for 100 rows and would hash-join
     * a seq scan of a small event_link (10,000 links: ~2 ms a page); = ANY keeps it on the
     * primary keys. */
    { "apply_page",
      "WITH j AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(n bigint, u boolean, "
      "      d text, s bigint, e bigint, st text, am int, k text, mr text, lc boolean, h text, "
      "      ck text, iu text)), "
      "upd AS ("
      "  UPDATE crm.business_activity a SET description = j.d, "
      "         start_time = 'epoch'::timestamptz + j.s * interval '1 microsecond', "
      "         end_time = 'epoch'::timestamptz + j.e * interval '1 microsecond', "
      "         status = j.st "
      "    FROM j WHERE a.activity_no = ANY ($4::bigint[]) AND a.activity_no = j.n AND j.u "
      "  RETURNING 1), "
      "ca AS ("
      "  INSERT INTO crm.business_activity_contact (activity_no, person_id) "
      "  SELECT j.n, p.person_id FROM j JOIN crm.person p "
      "      ON lower(p.email) = ANY (string_to_array(j.k, E'\\n')) "
      "   WHERE j.am > 0 "
      "  ON CONFLICT DO NOTHING RETURNING activity_no, person_id), "
      "cd AS ("
      "  DELETE FROM crm.business_activity_contact c USING j "
      "   WHERE j.am = 2 AND c.activity_no = j.n "
      "     AND NOT EXISTS (SELECT 1 FROM crm.person p WHERE p.person_id = c.person_id "
      "                        AND lower(p.email) = ANY (string_to_array(j.k, E'\\n'))) "
      "  RETURNING c.activity_no, c.person_id), "
      "ra AS ("
      "  INSERT INTO crm.business_activity_representative (activity_no, representative_id) "
      "  SELECT j.n, r.representative_id FROM j JOIN crm.business_representative r "
      "      ON lower(r.email) = ANY (string_to_array(j.k, E'\\n')) "
      "   WHERE j.am > 0 AND r.representative_id <> j.mr "
      "  ON CONFLICT DO NOTHING RETURNING activity_no, representative_id), "
      "rd AS ("
      "  DELETE FROM crm.business_activity_representative x USING j "
      "   WHERE j.am = 2 AND x.activity_no = j.n AND x.representative_id <> j.mr "
      "     AND NOT EXISTS (SELECT 1 FROM crm.business_representative r "
      "                      WHERE r.representative_id = x.representative_id "
      "                        AND lower(r.email) = ANY (string_to_array(j.k, E'\\n'))) "
      "  RETURNING x.activity_no, x.representative_id), "
      "ls AS ("
      "  UPDATE rmsync.event_link l SET "
      "         applied_hash = CASE WHEN j.lc THEN j.h ELSE l.applied_hash END, "
      "         applied_attendees = CASE WHEN j.lc THEN j.k ELSE l.applied_attendees END, "
      "         change_key = CASE WHEN j.lc THEN coalesce(j.ck, l.change_key) "
      "                      ELSE l.change_key END, "
      "         ical_uid = CASE WHEN j.lc THEN coalesce(j.iu, l.ical_uid) ELSE l.ical_uid END, "
      "         gone_at = CASE WHEN j.lc THEN NULL ELSE l.gone_at END, "
      "         updated_at = CASE WHEN j.lc THEN now() ELSE l.updated_at END, "
      "         seen_at = CASE WHEN $2::text IS NOT NULL THEN now() ELSE l.seen_at END "
      "    FROM j WHERE l.activity_no = ANY ($4::bigint[]) AND l.activity_no = j.n "
      "     AND (j.lc OR $2::text IS NOT NULL) RETURNING 1), "
      /* seen marks of the page's other links (an initial round: $2 lists the page's ids) */
      "sr AS ("
      "  UPDATE rmsync.event_link l SET seen_at = now() "
      "    FROM unnest(string_to_array($2, E'\\n')) AS u(id) "
      "   WHERE l.representative_id = $3 AND l.event_id = u.id "
      "     AND NOT EXISTS (SELECT 1 FROM j WHERE j.n = l.activity_no) RETURNING 1) "
      "SELECT n, k, id FROM (SELECT activity_no AS n, 1 AS k, person_id AS id FROM ca "
      "                      UNION ALL SELECT activity_no, 2, person_id FROM cd "
      "                      UNION ALL SELECT activity_no, 3, representative_id FROM ra "
      "                      UNION ALL SELECT activity_no, 4, representative_id FROM rd) x "
      " ORDER BY n, k, id", 4 },
    { "apply_link_lock",
      "SELECT 1 FROM crm.business_activity a JOIN rmsync.event_link l USING (activity_no) "
      " WHERE a.activity_no = $1::bigint FOR UPDATE", 1 },
    { "apply_link_changekey",
      "UPDATE rmsync.event_link SET change_key = $2 WHERE activity_no = $1::bigint", 2 },
    { "apply_activity_update",
      "UPDATE crm.business_activity SET description = $2, "
      "       start_time = 'epoch'::timestamptz + $3::bigint * interval '1 microsecond', "
      "       end_time = 'epoch'::timestamptz + $4::bigint * interval '1 microsecond', "
      "       status = $5 "
      " WHERE activity_no = $1::bigint", 5 },
    { "apply_activity_delete",
      "DELETE FROM crm.business_activity WHERE activity_no = $1::bigint", 1 },
    { "apply_activity_cancel",
      "UPDATE crm.business_activity SET status = 'Cancelled' WHERE activity_no = $1::bigint", 1 },
    { "apply_link_delete", "DELETE FROM rmsync.event_link WHERE activity_no = $1::bigint", 1 },
    { "apply_contacts_add",
      "INSERT INTO crm.business_activity_contact (activity_no, person_id) "
      "SELECT $1::bigint, p.person_id FROM crm.person p "
      " WHERE lower(p.email) = ANY (string_to_array($2, E'\\n')) "
      "ON CONFLICT DO NOTHING RETURNING person_id", 2 },
    { "apply_contacts_del",
      "DELETE FROM crm.business_activity_contact c WHERE c.activity_no = $1::bigint "
      "   AND NOT EXISTS (SELECT 1 FROM crm.person p WHERE p.person_id = c.person_id "
      "                      AND lower(p.email) = ANY (string_to_array($2, E'\\n'))) "
      "RETURNING person_id", 2 },
    { "apply_reps_add",
      "INSERT INTO crm.business_activity_representative (activity_no, representative_id) "
      "SELECT $1::bigint, r.representative_id FROM crm.business_representative r "
      " WHERE lower(r.email) = ANY (string_to_array($2, E'\\n')) "
      "   AND r.representative_id <> $3 "
      "ON CONFLICT DO NOTHING RETURNING representative_id", 3 },
    { "apply_reps_del",
      "DELETE FROM crm.business_activity_representative x WHERE x.activity_no = $1::bigint "
      "   AND x.representative_id <> $3 "
      "   AND NOT EXISTS (SELECT 1 FROM crm.business_representative r "
      "                    WHERE r.representative_id = x.representative_id "
      "                      AND lower(r.email) = ANY (string_to_array($2, E'\\n'))) "
      "RETURNING representative_id", 3 },
    { "apply_link_store",
      "UPDATE rmsync.event_link SET applied_hash = $2, applied_attendees = $3, "
      "       change_key = coalesce($4, change_key), ical_uid = coalesce($5, ical_uid), "
      "       gone_at = NULL, updated_at = now() "
      " WHERE activity_no = $1::bigint", 5 },
    { "apply_link_refused",
      "UPDATE rmsync.event_link SET applied_hash = $2, change_key = coalesce($3, change_key), "
      "       updated_at = now() WHERE activity_no = $1::bigint", 3 },
    /* $3: 'deleted' (404) or 'cancelled' (RMSyncCancelPolicy delete); a deletion wins */
    { "apply_mark_gone",
      "UPDATE rmsync.event_link SET gone_at = coalesce(gone_at, now()), "
      "       gone_kind = CASE WHEN gone_at IS NOT NULL AND gone_kind = 'deleted' "
      "                        THEN gone_kind ELSE $3 END, updated_at = now() "
      " WHERE representative_id = $1 AND event_id = $2", 3 },
    /* The breaker's numbers: links pending deletion (all; not covered by an approval), links,
     * the hold, and the deletions carried out in the window ($2 s) since the last Approve or
     * Reject (approved ones not counted). */
    { "apply_breaker_counts",
      "WITH s AS (SELECT coalesce(bool_or(held_by_breaker), false) AS held, "
      "                  max(breaker_approved_at) AS ap, "
      "                  greatest(now() - make_interval(secs => $2::int), "
      "                           max(breaker_approved_at), max(breaker_rejected_at)) AS since "
      "             FROM rmsync.rep_state WHERE representative_id = $1), "
      "l AS (SELECT count(*) FILTER (WHERE l.gone_at IS NOT NULL) AS pending, "
      "             count(*) FILTER (WHERE l.gone_at IS NOT NULL "
      "                                AND (s.ap IS NULL OR l.gone_at > s.ap)) AS unapproved, "
      "             count(*) AS total "
      "        FROM rmsync.event_link l, s WHERE l.representative_id = $1) "
      "SELECT l.pending, l.unapproved, l.total, s.held, "
      "       (SELECT count(*) FROM rmsync.deletion_done d WHERE d.representative_id = $1 "
      "           AND NOT d.approved AND d.done_at > s.since) AS recent "
      "  FROM l, s", 2 },
    /* before the link goes: a carried-out deletion for the window */
    { "apply_deletion_record",
      "INSERT INTO rmsync.deletion_done (representative_id, activity_no, approved) "
      "SELECT l.representative_id, l.activity_no, coalesce(l.gone_at <= s.breaker_approved_at, "
      "       false) "
      "  FROM rmsync.event_link l "
      "  LEFT JOIN rmsync.rep_state s ON s.representative_id = l.representative_id "
      " WHERE l.activity_no = $1::bigint", 1 },
    { "apply_deletion_purge",
      "DELETE FROM rmsync.deletion_done WHERE representative_id = $1 "
      "   AND done_at < now() - interval '1 day'", 1 },
    { "apply_hold",
      "INSERT INTO rmsync.rep_state (representative_id, held_by_breaker, held_reason) "
      "VALUES ($1, true, $2) ON CONFLICT (representative_id) DO UPDATE "
      "   SET held_by_breaker = true, held_reason = $2, updated_at = now()", 2 },
    { "apply_unhold",
      "UPDATE rmsync.rep_state SET held_by_breaker = false, held_reason = NULL, "
      "       updated_at = now() WHERE representative_id = $1 AND held_by_breaker", 1 },
    /* the deletions due: settled ($2 s), or covered by an approval */
    { "apply_gone_list",
      "SELECT l.event_id FROM rmsync.event_link l "
      "  LEFT JOIN rmsync.rep_state s ON s.representative_id = l.representative_id "
      " WHERE l.representative_id = $1 AND l.gone_at IS NOT NULL "
      "   AND (l.gone_at <= now() - make_interval(secs => $2::int) "
      "        OR l.gone_at <= s.breaker_approved_at) "
      " ORDER BY l.gone_at, l.activity_no", 2 },
};

apr_status_t rmsync_apply_register(void)
{
    return rmsync_db_register(apply_stmts, (int)(sizeof(apply_stmts) / sizeof(apply_stmts[0])));
}

const char *rmsync_apply_result_name(rmsync_apply_result_e r)
{
    switch (r) {
    case RMSYNC_APPLY_UNCHANGED:      return "unchanged";
    case RMSYNC_APPLY_UPDATED:        return "updated";
    case RMSYNC_APPLY_CANCELLED:      return "cancelled";
    case RMSYNC_APPLY_DELETED:        return "deleted";
    case RMSYNC_APPLY_UNLINKED:       return "unlinked";
    case RMSYNC_APPLY_NOT_LINKED:     return "not-linked";
    case RMSYNC_APPLY_PENDING_DELETE: return "pending-delete";
    case RMSYNC_APPLY_RECHECK:        return "recheck";
    case RMSYNC_APPLY_SKIPPED:        return "skipped";
    case RMSYNC_APPLY_IGNORED:        return "ignored";
    }
    return "?";
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int plain_address(const char *s)
{
    for (; *s; ++s) {
        if ((unsigned char)*s < 0x21 || *s == 0x7f) return 0;
    }
    return 1;
}

const char *rmsync_apply_attendee_key(apr_pool_t *p, const rmsync_event_t *ev)
{
    apr_array_header_t *v = apr_array_make(p, 8, sizeof(const char *));
    apr_array_header_t *u = apr_array_make(p, 8, sizeof(const char *));
    int i;

    for (i = 0; ev->attendees && i < ev->attendees->nelts; ++i) {
        const rmsync_attendee_t *a = &RMSYNC_ARRAY_IDX(ev->attendees, i, rmsync_attendee_t);
        if (a->email_lc && *a->email_lc && plain_address(a->email_lc)) {
            APR_ARRAY_PUSH(v, const char *) = a->email_lc;
        }
    }
    if (v->nelts == 0) {
        return "";
    }
    qsort(v->elts, (size_t)v->nelts, sizeof(const char *), cmp_str);
    for (i = 0; i < v->nelts; ++i) {
        const char *s = RMSYNC_ARRAY_IDX(v, i, const char *);
        if (i == 0 || strcmp(s, RMSYNC_ARRAY_IDX(v, i - 1, const char *))) {
            APR_ARRAY_PUSH(u, const char *) = s;
        }
    }
    return apr_array_pstrcat(p, u, '\n');
}

/* ---- statements and transactions: our own, or a savepoint in the caller's ------------------- */

static apr_status_t q(rmsync_rep_ctx_t *ctx, const char *name, const char *const *params,
                      rmsync_db_result_t **pres)
{
    return rmsync_db_exec(ctx->db, ctx->pool, name, params, pres);
}

/* The page fast path opens no savepoint: a failure redoes the whole page (RMSYNC_APPLY_EREDO). */
static apr_status_t tx_begin(rmsync_rep_ctx_t *ctx)
{
    if (ctx->page) {
        return APR_SUCCESS;
    }
    if (ctx->in_tx) {
        return q(ctx, "apply_savepoint", RMSYNC_DB_NOPARAMS, NULL);
    }
    return rmsync_db_begin_as(ctx->db, ctx->settings->master_user);
}

static apr_status_t tx_commit(rmsync_rep_ctx_t *ctx)
{
    if (ctx->page) {
        return APR_SUCCESS;
    }
    if (ctx->in_tx) {
        return q(ctx, "apply_release", RMSYNC_DB_NOPARAMS, NULL);
    }
    return rmsync_db_commit(ctx->db);
}

static void tx_rollback(rmsync_rep_ctx_t *ctx)
{
    if (ctx->page) {
        return;                         /* the caller rolls the page back */
    }
    if (ctx->in_tx) {
        if (q(ctx, "apply_rollback_to", RMSYNC_DB_NOPARAMS, NULL) == APR_SUCCESS) {
            q(ctx, "apply_release", RMSYNC_DB_NOPARAMS, NULL);
        }
    }
    else {
        rmsync_db_rollback(ctx->db);
    }
}

/* The statement was refused by the server (constraint, trigger, bad value): the item is
 * skipped and logged. Anything else (connection lost, timeout) aborts the caller. */
static int refused(apr_status_t rv)
{
    return rv == RMSYNC_DB_ESQL;
}

/* ---- the link and its activity -------------------------------------------------------------- */

typedef struct link_t {
    const char *activity_no;       /* text form */
    long long   activity;
    const char *applied_hash;      /* NULL: none */
    const char *applied_attendees; /* NULL: no baseline */
    const char *change_key;
    int         gone;
    const char *description;
    apr_time_t  start, end;
    const char *status;
    const char *main_rep;
    const char *gone_kind;         /* "deleted" | "cancelled" while gone */
} link_t;

/* A linked event whose writes wait for the page's statement (rmsync_apply_page_end). */
typedef struct pending_t {
    const link_t *l;
    const rmsync_event_t *ev;
    const char *request_id;
    apr_array_header_t *changes;  /* field changes; the attendee changes are added at the end */
    int act_changed, cancelled_now, link_changed;
} pending_t;

struct rmsync_apply_page_t {
    apr_hash_t *links;            /* event id -> link, read and locked by _begin */
    apr_hash_t *activities;       /* activity_no (text) -> pending_t: one write per activity */
    apr_array_header_t *pending;  /* pending_t *, in page order */
    cJSON *rows;                  /* apply_page's parameter rows */
    apr_array_header_t *log;      /* rmsync_synclog_entry_t, written by _end */
    const char *seen;             /* the page's event ids to mark seen ('\n'-joined) or NULL */
};

static link_t *link_from_row(apr_pool_t *p, rmsync_db_result_t *res, int r)
{
    link_t *l = apr_pcalloc(p, sizeof(*l));
    l->activity_no = rmsync_db_value(res, r, 0);
    l->activity = apr_atoi64(l->activity_no);
    l->applied_hash = rmsync_db_value(res, r, 1);
    l->applied_attendees = rmsync_db_value(res, r, 2);
    l->change_key = rmsync_db_value(res, r, 3);
    l->gone = rmsync_db_value(res, r, 4) && rmsync_db_value(res, r, 4)[0] == 't';
    l->description = rmsync_db_value(res, r, 5) ? rmsync_db_value(res, r, 5) : "";
    l->start = (apr_time_t)apr_atoi64(rmsync_db_value(res, r, 6));
    l->end = (apr_time_t)apr_atoi64(rmsync_db_value(res, r, 7));
    l->status = rmsync_db_value(res, r, 8);
    l->main_rep = rmsync_db_value(res, r, 9);
    l->gone_kind = rmsync_db_value(res, r, 10);
    return l;
}

static apr_status_t link_load(rmsync_rep_ctx_t *ctx, const char *event_id, int lock,
                              link_t **plink)
{
    rmsync_db_result_t *res;
    apr_status_t rv;
    link_t *l;

    *plink = NULL;
    if (ctx->page
        && (l = apr_hash_get(ctx->page->links, event_id, APR_HASH_KEY_STRING)) != NULL) {
        *plink = l;                     /* read and locked by rmsync_apply_page_begin */
        return APR_SUCCESS;
    }
    rv = q(ctx, "apply_link_load", RMSYNC_DB_PARAMS(ctx->rep_id, event_id), &res);
    if (rv != APR_SUCCESS || res->nrows != 1) {
        return rv;
    }
    l = link_from_row(ctx->pool, res, 0);
    *plink = l;
    if (lock) {
        rv = q(ctx, "apply_link_lock", RMSYNC_DB_PARAMS(l->activity_no), NULL);
    }
    return rv;
}

static const char *fmt_time(apr_pool_t *p, apr_time_t t)
{
    char buf[32];
    apr_size_t n;
    apr_time_exp_t x;
    apr_time_exp_gmt(&x, t);
    apr_strftime(buf, &n, sizeof(buf), "%Y-%m-%d %H:%M", &x);
    return apr_pstrcat(p, buf, "Z", NULL);
}

static const char *time_param(apr_pool_t *p, apr_time_t t)
{
    return apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)t);
}

/* Apply the attendee rules; appends "+contact X" / "-representative Y" to changes. */
static apr_status_t apply_attendees(rmsync_rep_ctx_t *ctx, const link_t *l, const char *key,
                                    int full, apr_array_header_t *changes)
{
    static const struct { const char *stmt; const char *label; int only_full; } ops[] = {
        { "apply_contacts_add", "+contact ", 0 },
        { "apply_contacts_del", "-contact ", 1 },
        { "apply_reps_add", "+representative ", 0 },
        { "apply_reps_del", "-representative ", 1 },
    };
    apr_size_t i;
    int r;

    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); ++i) {
        rmsync_db_result_t *res;
        apr_status_t rv;
        const char *const *pv = (i < 2) ? RMSYNC_DB_PARAMS(l->activity_no, key)
                                        : RMSYNC_DB_PARAMS(l->activity_no, key, l->main_rep);
        if (ops[i].only_full && !full) {
            continue;
        }
        if ((rv = q(ctx, ops[i].stmt, pv, &res)) != APR_SUCCESS) {
            return rv;
        }
        for (r = 0; r < res->nrows; ++r) {
            APR_ARRAY_PUSH(changes, const char *) =
                apr_pstrcat(ctx->pool, ops[i].label, rmsync_db_value(res, r, 0), NULL);
        }
    }
    return APR_SUCCESS;
}

/* A sync log row of an applied item: written now, or with the page (fast path). */
static apr_status_t slog(rmsync_rep_ctx_t *ctx, int level, long long activity,
                         const char *event_id, const char *action, const char *request_id,
                         const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static apr_status_t slog(rmsync_rep_ctx_t *ctx, int level, long long activity,
                         const char *event_id, const char *action, const char *request_id,
                         const char *fmt, ...)
{
    rmsync_synclog_entry_t *e;
    va_list ap;
    const char *msg;

    if (!rmsync_synclog_wants(ctx->synclog, level)) {
        return APR_SUCCESS;
    }
    va_start(ap, fmt);
    msg = apr_pvsprintf(ctx->pool, fmt, ap);
    va_end(ap);
    if (ctx->page) {
        e = apr_array_push(ctx->page->log);
        e->level = level;
        e->rep = ctx->rep_id;
        e->activity_no = activity;
        e->event_id = event_id;
        e->action = action;
        e->request_id = request_id;
        e->message = msg;
        return APR_SUCCESS;
    }
    return rmsync_synclog(ctx->synclog, ctx->db, level, ctx->rep_id, activity, event_id, action,
                          request_id, "%s", msg);
}

static apr_status_t delete_activity(rmsync_rep_ctx_t *ctx, const link_t *l, const char *event_id,
                                    const char *request_id, const char *why)
{
    apr_status_t rv = q(ctx, "apply_activity_delete", RMSYNC_DB_PARAMS(l->activity_no), NULL);
    if (rv == APR_SUCCESS) {
        rv = slog(ctx, RMSYNC_LOG_INFO, l->activity, event_id, "delete", request_id,
                  "activity deleted: %s", why);
    }
    return rv;
}

/* rv failed inside tx: roll back; if the server refused the statement, log and skip the item
 * (APR_SUCCESS, SKIPPED), otherwise return rv (connection trouble: the caller stops). */
static apr_status_t item_failed(rmsync_rep_ctx_t *ctx, apr_status_t rv, long long activity,
                                const char *event_id, const char *request_id, const char *err,
                                rmsync_apply_result_e *pres)
{
    const char *dbmsg;
    if (ctx->page) {
        /* no savepoint to return to: the caller redoes the page item by item, which logs this */
        return RMSYNC_APPLY_EREDO;
    }
    dbmsg = apr_pstrdup(ctx->pool, rmsync_db_errmsg(ctx->db));
    tx_rollback(ctx);
    if (!refused(rv) && rv != APR_EINVAL) {
        return rv;
    }
    if (!err) {
        err = apr_psprintf(ctx->pool, RMSYNC_LOGNO(00402) "applying the Outlook change to "
                           "activity %" APR_INT64_T_FMT " failed: %s", (apr_int64_t)activity,
                           dbmsg);
    }
    rmsync_engine_item_error(ctx, activity, event_id, request_id, "%s", err);
    *pres = RMSYNC_APPLY_SKIPPED;
    return APR_SUCCESS;
}

/* A refused Outlook state of a linked event: logged once; remembered as "refused:<hash>" so the
 * same state is not retried (and logged) on every pass, only when the event changes again. */
static apr_status_t linked_failed(rmsync_rep_ctx_t *ctx, apr_status_t rv, const link_t *l,
                                  const rmsync_event_t *ev, const char *hash,
                                  const char *request_id, const char *err,
                                  rmsync_apply_result_e *pres)
{
    rv = item_failed(ctx, rv, l->activity, ev->id, request_id, err, pres);
    if (rv == APR_SUCCESS) {
        rv = q(ctx, "apply_link_refused",
               RMSYNC_DB_PARAMS(l->activity_no, apr_pstrcat(ctx->pool, "refused:", hash, NULL),
                                ev->change_key), NULL);
    }
    return rv;
}

/* The page fast path: queue the item's writes for the page's one statement. */
static apr_status_t page_queue(rmsync_rep_ctx_t *ctx, const link_t *l, const rmsync_event_t *ev,
                               const char *request_id, int act_changed, int cancelled_now,
                               const char *subject, const char *new_status, int att_mode,
                               const char *key, int link_changed, const char *hash,
                               apr_array_header_t *changes)
{
    struct rmsync_apply_page_t *pg = ctx->page;
    apr_time_t st = ev->start ? ev->start : l->start, en = ev->end ? ev->end : l->end;
    pending_t *pd;
    cJSON *o;

    if (apr_hash_get(pg->activities, l->activity_no, APR_HASH_KEY_STRING)) {
        return RMSYNC_APPLY_EREDO;      /* two states for one activity: item by item */
    }
    if (!(o = cJSON_CreateObject())) {
        return APR_ENOMEM;
    }
    cJSON_AddItemToArray(pg->rows, o);
    /* numbers as text: jsonb -> bigint without a trip through double */
    cJSON_AddStringToObject(o, "n", l->activity_no);
    cJSON_AddBoolToObject(o, "u", act_changed);
    cJSON_AddStringToObject(o, "d", subject);
    cJSON_AddStringToObject(o, "s", time_param(ctx->pool, st));
    cJSON_AddStringToObject(o, "e", time_param(ctx->pool, en));
    if (new_status) cJSON_AddStringToObject(o, "st", new_status);
    cJSON_AddNumberToObject(o, "am", att_mode);
    cJSON_AddStringToObject(o, "k", key);
    if (l->main_rep) cJSON_AddStringToObject(o, "mr", l->main_rep);
    cJSON_AddBoolToObject(o, "lc", link_changed);
    cJSON_AddStringToObject(o, "h", hash);
    if (ev->change_key) cJSON_AddStringToObject(o, "ck", ev->change_key);
    if (ev->ical_uid) cJSON_AddStringToObject(o, "iu", ev->ical_uid);

    pd = apr_pcalloc(ctx->pool, sizeof(*pd));
    pd->l = l;
    pd->ev = ev;
    pd->request_id = request_id;
    pd->changes = changes;
    pd->act_changed = act_changed;
    pd->cancelled_now = cancelled_now;
    pd->link_changed = link_changed;
    APR_ARRAY_PUSH(pg->pending, pending_t *) = pd;
    apr_hash_set(pg->activities, l->activity_no, APR_HASH_KEY_STRING, pd);
    return APR_SUCCESS;
}

/* After the writes: the sync log line and the job's counters (both paths). */
static apr_status_t item_done(rmsync_rep_ctx_t *ctx, const link_t *l, const rmsync_event_t *ev,
                              const char *request_id, apr_array_header_t *changes,
                              int act_changed, int cancelled_now, int link_changed)
{
    apr_status_t rv = APR_SUCCESS;
    if (act_changed) {
        rv = slog(ctx, RMSYNC_LOG_INFO, l->activity, ev->id, cancelled_now ? "cancel" : "update",
                  request_id, "activity updated from Outlook: %s",
                  apr_array_pstrcat(ctx->pool, changes, ';'));
    }
    else if (link_changed && rmsync_synclog_wants(ctx->synclog, RMSYNC_LOG_DEBUG)) {
        rv = slog(ctx, RMSYNC_LOG_DEBUG, l->activity, ev->id, "skip", request_id,
                  "the Outlook change touches no sync field of the activity");
    }
    return rv;
}

static void item_counted(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev)
{
    ctx->applied++;
    if (ev->last_modified > 0) {
        /* Outlook change -> activity written (the status page's lag) */
        apr_time_t lag = apr_time_now() - ev->last_modified;
        ctx->lag_ms = lag > 0 ? (apr_uint32_t)apr_time_as_msec(lag) : 0;
    }
}

/* RMSyncPrivateAppointments skip: the linked activity stays as it was; said once per Outlook
 * state (remembered as "private:<hash>", like a refused state). */
static apr_status_t private_skipped(rmsync_rep_ctx_t *ctx, const link_t *l,
                                    const rmsync_event_t *ev, const char *hash,
                                    const char *request_id, rmsync_apply_result_e *pres)
{
    const char *mark = apr_pstrcat(ctx->pool, "private:", hash, NULL);
    apr_status_t rv = APR_SUCCESS;

    *pres = RMSYNC_APPLY_UNCHANGED;
    if (!l->applied_hash || strcmp(l->applied_hash, mark)) {
        rv = q(ctx, "apply_link_refused", RMSYNC_DB_PARAMS(l->activity_no, mark, ev->change_key),
               NULL);
        if (rv == APR_SUCCESS) {
            rv = slog(ctx, RMSYNC_LOG_INFO, l->activity, ev->id, "skip", request_id,
                      "the appointment is private or confidential (RMSyncPrivateAppointments "
                      "skip): activity left as it was");
        }
        *pres = RMSYNC_APPLY_SKIPPED;
    }
    if (rv == APR_SUCCESS) {
        rv = tx_commit(ctx);
    }
    if (rv != APR_SUCCESS) {
        return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
    }
    return APR_SUCCESS;
}

static apr_status_t apply_linked(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev_in, int force,
                                 const char *request_id, rmsync_apply_result_e *pres)
{
    const rmsync_settings_t *s = ctx->settings;
    apr_array_header_t *changes = apr_array_make(ctx->pool, 8, sizeof(const char *));
    const rmsync_event_t *ev = ev_in;
    const char *hash, *key, *subject, *new_status;
    link_t *l = NULL;
    apr_status_t rv;
    int act_changed = 0, att_mode, link_changed, cancelled_now = 0, skip = 0, masked;

    *pres = RMSYNC_APPLY_SKIPPED;
    if ((rv = tx_begin(ctx)) != APR_SUCCESS) {
        return rv;
    }
    if ((rv = link_load(ctx, ev->id, 1, &l)) != APR_SUCCESS) {
        return item_failed(ctx, rv, 0, ev->id, request_id, NULL, pres);
    }
    if (!l) {
        tx_rollback(ctx);
        *pres = RMSYNC_APPLY_NOT_LINKED;
        return APR_SUCCESS;
    }
    /* what the CRM may see of it: private masked, all-day in the owner's zone, the organizer */
    if ((rv = rmsync_calfields_view(ctx, ev_in, &ev, &skip)) != APR_SUCCESS) {
        return item_failed(ctx, rv, l->activity, ev_in->id, request_id, NULL, pres);
    }
    hash = ev->hash ? ev->hash : rmsync_event_hash(ctx->pool, ev);
    if (skip) {
        return private_skipped(ctx, l, ev, hash, request_id, pres);
    }
    /* masked (private): the attendee list is not the CRM's business, the contacts and
     * representatives the activity has stay as they are, and so does the baseline */
    masked = rmsync_event_is_private(ev_in) && s->private_policy == RMSYNC_PRIVATE_MASK;
    key = masked ? (l->applied_attendees ? l->applied_attendees : "")
                 : rmsync_apply_attendee_key(ctx->pool, ev);
    subject = ev->subject ? ev->subject : "";
    if (!force && !l->gone && l->applied_hash
        && (!strcmp(l->applied_hash, hash)
            || (!strncmp(l->applied_hash, "refused:", 8) && !strcmp(l->applied_hash + 8, hash)))) {
        /* the same Outlook state as last applied: write nothing, log nothing */
        if (ev->change_key && (!l->change_key || strcmp(ev->change_key, l->change_key))) {
            rv = q(ctx, "apply_link_changekey", RMSYNC_DB_PARAMS(l->activity_no, ev->change_key),
                   NULL);
        }
        if (rv == APR_SUCCESS) {
            rv = tx_commit(ctx);
        }
        if (rv != APR_SUCCESS) {
            return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
        }
        *pres = RMSYNC_APPLY_UNCHANGED;
        return APR_SUCCESS;
    }

    if (ev->is_cancelled && s->cancel_policy == RMSYNC_CANCEL_DELETE) {
        /* a deletion like any other: it waits for the settling delay and the breaker */
        rv = q(ctx, "apply_mark_gone", RMSYNC_DB_PARAMS(ctx->rep_id, ev->id, "cancelled"), NULL);
        if (rv == APR_SUCCESS) {
            rv = tx_commit(ctx);
        }
        if (rv != APR_SUCCESS) {
            return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
        }
        *pres = RMSYNC_APPLY_PENDING_DELETE;
        return APR_SUCCESS;
    }

    /* field by field */
    new_status = l->status;
    if (strcmp(subject, l->description)) {
        /* masked: the old description may be the subject that just turned private */
        APR_ARRAY_PUSH(changes, const char *) = masked
            ? apr_psprintf(ctx->pool, "description masked -> '%s' (private appointment)", subject)
            : apr_psprintf(ctx->pool, "description '%s' -> '%s'", l->description, subject);
        act_changed = 1;
    }
    if (ev->start && ev->start != l->start) {
        APR_ARRAY_PUSH(changes, const char *) = apr_psprintf(ctx->pool, "start %s -> %s",
            fmt_time(ctx->pool, l->start), fmt_time(ctx->pool, ev->start));
        act_changed = 1;
    }
    if (ev->end && ev->end != l->end) {
        APR_ARRAY_PUSH(changes, const char *) = apr_psprintf(ctx->pool, "end %s -> %s",
            fmt_time(ctx->pool, l->end), fmt_time(ctx->pool, ev->end));
        act_changed = 1;
    }
    if (ev->is_cancelled && l->status && strcmp(l->status, "Cancelled")) {
        new_status = "Cancelled";
        cancelled_now = 1;
        APR_ARRAY_PUSH(changes, const char *) =
            apr_psprintf(ctx->pool, "status %s -> Cancelled (cancelled in Outlook)", l->status);
        act_changed = 1;
    }
    if (act_changed) {
        apr_time_t st = ev->start ? ev->start : l->start, en = ev->end ? ev->end : l->end;
        if (en < st) {
            return linked_failed(ctx, APR_EINVAL, l, ev, hash, request_id,
                               apr_psprintf(ctx->pool, RMSYNC_LOGNO(00401) "the appointment ends "
                                            "(%s) before it starts (%s); activity %"
                                            APR_INT64_T_FMT " left unchanged",
                                            fmt_time(ctx->pool, en), fmt_time(ctx->pool, st),
                                            (apr_int64_t)l->activity), pres);
        }
        if (!ctx->page) {
            rv = q(ctx, "apply_activity_update",
                   RMSYNC_DB_PARAMS(l->activity_no, subject, time_param(ctx->pool, st),
                                    time_param(ctx->pool, en), new_status), NULL);
            if (rv != APR_SUCCESS) {
                return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
            }
        }
    }

    /* attendees: when the set changed since the last applied state; no baseline: add only */
    if (masked) att_mode = 0;
    else if (!l->applied_attendees) att_mode = 1;
    else if (force || strcmp(key, l->applied_attendees)) att_mode = 2;
    else att_mode = 0;
    link_changed = !l->applied_hash || strcmp(l->applied_hash, hash) || l->gone
                   || !l->applied_attendees || strcmp(l->applied_attendees, key)
                   || (ev->change_key && (!l->change_key || strcmp(ev->change_key, l->change_key)));
    if (ctx->page) {
        /* written, logged and counted with the page (rmsync_apply_page_end) */
        if (act_changed || att_mode || link_changed) {
            rv = page_queue(ctx, l, ev, request_id, act_changed, cancelled_now, subject,
                            new_status, att_mode, key, link_changed, hash, changes);
            if (rv != APR_SUCCESS) {
                return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
            }
        }
        *pres = act_changed ? (cancelled_now ? RMSYNC_APPLY_CANCELLED : RMSYNC_APPLY_UPDATED)
                            : RMSYNC_APPLY_UNCHANGED;
        return APR_SUCCESS;
    }
    if (att_mode) {
        int before = changes->nelts;
        if ((rv = apply_attendees(ctx, l, key, att_mode == 2, changes)) != APR_SUCCESS) {
            return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
        }
        if (changes->nelts > before) {
            act_changed = 1;
        }
    }

    if (link_changed) {
        rv = q(ctx, "apply_link_store",
               RMSYNC_DB_PARAMS(l->activity_no, hash, key, ev->change_key, ev->ical_uid), NULL);
        if (rv != APR_SUCCESS) {
            return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
        }
    }
    rv = item_done(ctx, l, ev, request_id, changes, act_changed, cancelled_now, link_changed);
    if (rv == APR_SUCCESS) {
        rv = tx_commit(ctx);
    }
    if (rv != APR_SUCCESS) {
        return linked_failed(ctx, rv, l, ev, hash, request_id, NULL, pres);
    }
    if (act_changed) {
        item_counted(ctx, ev);
        *pres = cancelled_now ? RMSYNC_APPLY_CANCELLED : RMSYNC_APPLY_UPDATED;
    }
    else {
        *pres = RMSYNC_APPLY_UNCHANGED;
    }
    return APR_SUCCESS;
}

/* ---- entry points ---------------------------------------------------------------------------- */

static apr_status_t get_event(rmsync_rep_ctx_t *ctx, const char *event_id, rmsync_event_t **pev,
                              rmsync_graph_result_t *res)
{
    memset(res, 0, sizeof(*res));
    return rmsync_graph_get_event(ctx->graph, ctx->pool, ctx->user_id, event_id, pev, res);
}

apr_status_t rmsync_apply_linked_event(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                       int force, const char *request_id,
                                       rmsync_apply_result_e *pres)
{
    return apply_linked(ctx, ev, force, request_id, pres);
}

apr_status_t rmsync_apply_event_force(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                      const char *request_id, rmsync_apply_result_e *pres)
{
    rmsync_graph_result_t gres;
    rmsync_event_t *full;
    apr_status_t rv;
    link_t *l;

    if (ev->removed) {
        return rmsync_apply_removed(ctx, ev->id, pres);
    }
    if (ev->partial) {
        /* a sparse (occurrence) row: only a linked event is worth a GET, never inside a tx */
        *pres = RMSYNC_APPLY_SKIPPED;
        if (ctx->in_tx) {
            return APR_SUCCESS;
        }
        if ((rv = link_load(ctx, ev->id, 0, &l)) != APR_SUCCESS) {
            return rv;
        }
        if (!l) {
            *pres = RMSYNC_APPLY_NOT_LINKED;
            return APR_SUCCESS;
        }
        rv = get_event(ctx, ev->id, &full, &gres);
        if (rv == RMSYNC_GRAPH_NOTFOUND) {
            return rmsync_apply_removed(ctx, ev->id, pres);
        }
        if (rv != APR_SUCCESS) {
            return rv;
        }
        ev = full;
        request_id = gres.request_id;
    }
    return apply_linked(ctx, ev, 1, request_id, pres);
}

apr_status_t rmsync_apply_mark_gone(rmsync_rep_ctx_t *ctx, const char *event_id)
{
    return q(ctx, "apply_mark_gone", RMSYNC_DB_PARAMS(ctx->rep_id, event_id, "deleted"), NULL);
}

static rmsync_apply_result_e policy_result(const rmsync_settings_t *s)
{
    return s->delete_policy == RMSYNC_DELETE_DELETE ? RMSYNC_APPLY_DELETED
         : s->delete_policy == RMSYNC_DELETE_CANCEL ? RMSYNC_APPLY_CANCELLED
         : RMSYNC_APPLY_UNLINKED;
}

apr_status_t rmsync_apply_removed(rmsync_rep_ctx_t *ctx, const char *event_id,
                                  rmsync_apply_result_e *pres)
{
    rmsync_graph_result_t gres;
    rmsync_event_t *ev;
    link_t *l;
    apr_status_t rv;
    int n = 0;

    *pres = RMSYNC_APPLY_IGNORED;
    if ((rv = link_load(ctx, event_id, 0, &l)) != APR_SUCCESS || !l) {
        return rv;
    }
    if (ctx->in_tx) {
        /* inside the delta pass's transaction the pass has already confirmed the removal */
        if ((rv = rmsync_apply_mark_gone(ctx, event_id)) == APR_SUCCESS) {
            *pres = RMSYNC_APPLY_PENDING_DELETE;
        }
        return rv;
    }
    /* a delta @removed may mean "moved out of the window": ask Graph */
    rv = get_event(ctx, event_id, &ev, &gres);
    if (rv == APR_SUCCESS) {
        return apply_linked(ctx, ev, 0, gres.request_id, pres);
    }
    if (rv != RMSYNC_GRAPH_NOTFOUND) {
        return rv;
    }
    if ((rv = rmsync_apply_mark_gone(ctx, event_id)) != APR_SUCCESS) {
        return rv;
    }
    *pres = RMSYNC_APPLY_PENDING_DELETE;
    if (!ctx->in_round) {
        if ((rv = rmsync_apply_flush_deletions(ctx, &n)) != APR_SUCCESS) {
            return rv;
        }
        if (n > 0) {
            *pres = policy_result(ctx->settings);
        }
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_apply_fetch(rmsync_rep_ctx_t *ctx, const char *event_id,
                               rmsync_apply_fetched_t *f)
{
    rmsync_graph_result_t gres;

    memset(f, 0, sizeof(*f));
    if (!event_id || !*event_id) {
        return f->rv = APR_EINVAL;
    }
    f->rv = get_event(ctx, event_id, &f->ev, &gres);
    f->http_status = gres.http_status;
    f->error_code = gres.error_code;
    f->request_id = gres.request_id;
    return f->rv;
}

void rmsync_apply_fetch_many(rmsync_rep_ctx_t *ctx, apr_pool_t *p, const char *const *event_ids,
                             int n, rmsync_apply_fetched_t *fs)
{
    int i, k, m;

    for (i = 0; i < n; i += m) {
        rmsync_event_t *evs[RMSYNC_GRAPH_BATCH_MAX];
        rmsync_graph_result_t gres;

        m = n - i < RMSYNC_GRAPH_BATCH_MAX ? n - i : RMSYNC_GRAPH_BATCH_MAX;
        memset(&gres, 0, sizeof(gres));
        if (m < 2 || rmsync_graph_get_events_batch(ctx->graph, p, ctx->user_id, event_ids + i, m,
                                                   evs, &gres) != APR_SUCCESS) {
            memset(evs, 0, sizeof(evs));
        }
        for (k = 0; k < m; k++) {
            rmsync_apply_fetched_t *f = &fs[i + k];

            if (evs[k]) {
                memset(f, 0, sizeof(*f));
                f->ev = evs[k];
                f->http_status = 200;
                f->request_id = gres.request_id;
                f->rv = APR_SUCCESS;
            }
            else {
                /* not in the batch's answer as an event: on its own, as before */
                rmsync_apply_fetch(ctx, event_ids[i + k], f);
            }
        }
    }
}

apr_status_t rmsync_apply_fetched(rmsync_rep_ctx_t *ctx, const rmsync_apply_fetched_t *f,
                                  rmsync_apply_result_e *pres, const char **pdetail)
{
    *pres = RMSYNC_APPLY_IGNORED;
    *pdetail = NULL;
    if (f->rv == RMSYNC_GRAPH_NOTFOUND) {
        /* created/updated and already gone: moved or racing; the delta decides, not a delete */
        rmsync_engine_want_delta(ctx);
        *pres = RMSYNC_APPLY_RECHECK;
        return APR_SUCCESS;
    }
    if (f->rv == RMSYNC_GRAPH_BADREQUEST || f->rv == RMSYNC_GRAPH_FORBIDDEN) {
        /* Graph refuses this item itself (a malformed id, no access to it): the same answer
         * would come on every retry (the retryable 4xx -- 401, 408, 409, 412, 429 -- are mapped
         * to other statuses or retried inside the Graph client) */
        *pdetail = apr_psprintf(ctx->pool, "HTTP %d %s", f->http_status,
                                f->error_code ? f->error_code : "(no error code)");
        return RMSYNC_APPLY_EPERMANENT;
    }
    if (f->rv != APR_SUCCESS) {
        return f->rv;
    }
    if (f->ev->type == RMSYNC_EVENT_TYPE_SERIES_MASTER) {
        /* Graph notifies only the master for a moved, edited, deleted occurrence or a new
         * pattern (GRAPH.md 9.3): the occurrences' changes come with a delta pass (issue 14) */
        rmsync_engine_want_delta(ctx);
    }
    return apply_linked(ctx, f->ev, 0, f->request_id, pres);
}

apr_status_t rmsync_apply_notification(rmsync_rep_ctx_t *ctx, const char *event_id,
                                       const char *change_type, rmsync_apply_result_e *pres,
                                       const char **pdetail)
{
    rmsync_apply_fetched_t f;
    apr_status_t rv;

    *pres = RMSYNC_APPLY_IGNORED;
    *pdetail = NULL;
    rv = rmsync_apply_fetch(ctx, event_id, &f);
    if (rv == APR_EINVAL) {
        return rv;
    }
    if (rv == RMSYNC_GRAPH_NOTFOUND && change_type && !strcmp(change_type, "deleted")) {
        rv = rmsync_apply_removed(ctx, event_id, pres);
        if (rv == APR_SUCCESS && *pres == RMSYNC_APPLY_IGNORED) {
            /* not linked, maybe a series master: its linked occurrences go with it (issue 14) */
            rmsync_engine_want_delta(ctx);
        }
        return rv;
    }
    rv = rmsync_apply_fetched(ctx, &f, pres, pdetail);
    if (rv == APR_SUCCESS && *pres == RMSYNC_APPLY_NOT_LINKED) {
        rv = rmsync_engine_unlinked_event(ctx, f.ev);
    }
    else if (rv == APR_SUCCESS && *pres == RMSYNC_APPLY_PENDING_DELETE && !ctx->in_round) {
        rv = rmsync_apply_flush_deletions(ctx, NULL);    /* judged now, carried out when due */
    }
    return rv;
}

/* ---- deletions and the mass-delete circuit breaker ------------------------------------------- */

/* RMSyncDeletePolicy cancel|unlink: the activity stays in the CRM (cancelled, or as it is);
 * only its link goes. */
static apr_status_t keep_unlinked(rmsync_rep_ctx_t *ctx, const link_t *l, const char *event_id,
                                  int cancel, const char *why)
{
    const char *policy = cancel ? "cancel" : "unlink";
    apr_status_t rv = APR_SUCCESS;

    if (cancel) {
        rv = q(ctx, "apply_activity_cancel", RMSYNC_DB_PARAMS(l->activity_no), NULL);
    }
    if (rv == APR_SUCCESS) {
        rv = q(ctx, "apply_link_delete", RMSYNC_DB_PARAMS(l->activity_no), NULL);
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, l->activity,
                            event_id, policy, NULL, "activity %s: %s (RMSyncDeletePolicy %s)",
                            cancel ? "cancelled and unlinked" : "unlinked and kept", why, policy);
    }
    return rv;
}

static apr_status_t carry_out(rmsync_rep_ctx_t *ctx, const char *event_id, int *pdone)
{
    const rmsync_settings_t *s = ctx->settings;
    static const char why[] = "the appointment was deleted in Outlook";
    rmsync_apply_result_e dummy;
    apr_status_t rv;
    link_t *l;

    *pdone = 0;
    if ((rv = rmsync_db_begin_as(ctx->db, s->master_user)) != APR_SUCCESS) {
        return rv;
    }
    if ((rv = link_load(ctx, event_id, 1, &l)) != APR_SUCCESS) {
        return item_failed(ctx, rv, 0, event_id, NULL, NULL, &dummy);
    }
    if (!l || !l->gone) {
        rmsync_db_rollback(ctx->db);
        return APR_SUCCESS;
    }
    /* counted for the breaker's window before the link goes with the activity */
    if ((rv = q(ctx, "apply_deletion_record", RMSYNC_DB_PARAMS(l->activity_no), NULL))
        != APR_SUCCESS) {
        return item_failed(ctx, rv, l->activity, event_id, NULL, NULL, &dummy);
    }
    if (l->gone_kind && !strcmp(l->gone_kind, "cancelled")) {
        rv = delete_activity(ctx, l, event_id, NULL, "the appointment was cancelled in Outlook "
                             "(RMSyncCancelPolicy delete)");
    }
    else switch (s->delete_policy) {
    case RMSYNC_DELETE_DELETE:
        rv = delete_activity(ctx, l, event_id, NULL, why);
        break;
    case RMSYNC_DELETE_CANCEL:
    case RMSYNC_DELETE_UNLINK:
        rv = keep_unlinked(ctx, l, event_id, s->delete_policy == RMSYNC_DELETE_CANCEL, why);
        break;
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_db_commit(ctx->db);
    }
    if (rv != APR_SUCCESS) {
        return item_failed(ctx, rv, l->activity, event_id, NULL,
                           apr_psprintf(ctx->pool, RMSYNC_LOGNO(00404) "carrying out the "
                                        "deletion of activity %" APR_INT64_T_FMT " failed: %s",
                                        (apr_int64_t)l->activity,
                                        rmsync_db_errmsg(ctx->db)), &dummy);
    }
    ctx->deleted++;
    *pdone = 1;
    return APR_SUCCESS;
}

/* The breaker's rule: judged = pending deletions not covered by an approval + deletions
 * carried out in the window; base = links + those carried out (the links the window began
 * with). More than count, or (with enough links) more than percent % of base, trips it. */
static int breaker_trips(const rmsync_settings_t *s, long long judged, long long base)
{
    return (s->breaker_count > 0 && judged > s->breaker_count)
           || (s->breaker_percent > 0 && s->breaker_percent < 100
               && base >= BREAKER_PERCENT_MIN_LINKS
               && judged * 100 > (long long)s->breaker_percent * base);
}

apr_status_t rmsync_apply_flush_deletions(rmsync_rep_ctx_t *ctx, int *pdeleted)
{
    const rmsync_settings_t *s = ctx->settings;
    rmsync_db_result_t *res;
    apr_status_t rv;
    long long pending, unapproved, total, recent;
    int i, done = 0, held;

    if (pdeleted) *pdeleted = 0;
    rv = q(ctx, "apply_breaker_counts",
           RMSYNC_DB_PARAMS(ctx->rep_id, apr_itoa(ctx->pool, s->breaker_window_s)), &res);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    pending = apr_atoi64(rmsync_db_value(res, 0, 0));
    unapproved = apr_atoi64(rmsync_db_value(res, 0, 1));
    total = apr_atoi64(rmsync_db_value(res, 0, 2));
    held = rmsync_db_value(res, 0, 3) && rmsync_db_value(res, 0, 3)[0] == 't';
    recent = apr_atoi64(rmsync_db_value(res, 0, 4));
    ctx->held = held;
    if (pending == 0) {
        return APR_SUCCESS;
    }
    if (unapproved > 0 && breaker_trips(s, unapproved + recent, total + recent)) {
        ctx->held = 1;
        if (!held) {
            const char *why = apr_psprintf(ctx->pool,
                RMSYNC_LOGNO(00403) "mass-delete circuit breaker: Outlook deletions would remove "
                "%" APR_INT64_T_FMT " of %" APR_INT64_T_FMT " linked activities%s "
                "(RMSyncMassDeleteLimit: more than %d, or more than %d%%); nothing more deleted, "
                "representative held until an admin approves or rejects on the Calendar Sync "
                "Configuration page", (apr_int64_t)(unapproved + recent),
                (apr_int64_t)(total + recent),
                recent ? apr_psprintf(ctx->pool, " (%" APR_INT64_T_FMT " of them already "
                                      "carried out in the last %d min)", (apr_int64_t)recent,
                                      (s->breaker_window_s + 59) / 60) : "",
                s->breaker_count, s->breaker_percent);
            if ((rv = q(ctx, "apply_hold", RMSYNC_DB_PARAMS(ctx->rep_id, why), NULL))
                != APR_SUCCESS) {
                return rv;
            }
            rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_ERR, ctx->rep_id, 0, NULL, "hold",
                           NULL, "%s", why);
            rmsync_log(RMSYNC_LOG_WARNING, 0, "representative %s: %s", ctx->rep_id, why);
            rmsync_engine_count(ctx, RMSYNC_CTR_BREAKER_HOLDS, 1);
        }
        return APR_SUCCESS;
    }
    if (held && unapproved > 0) {
        return APR_SUCCESS;             /* a hold ends only by an admin's Approve or Reject */
    }

    rv = q(ctx, "apply_gone_list",
           RMSYNC_DB_PARAMS(ctx->rep_id, apr_itoa(ctx->pool, s->delete_settle_s)), &res);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; i < res->nrows && !rmsync_engine_stopping(ctx); ++i) {
        int one;
        if ((rv = carry_out(ctx, rmsync_db_value(res, i, 0), &one)) != APR_SUCCESS) {
            break;
        }
        done += one;
    }
    if (pdeleted) *pdeleted = done;
    if (done) {
        rmsync_engine_count(ctx, RMSYNC_CTR_EVENTS_DELETED, (apr_uint32_t)done);
        if (rv == APR_SUCCESS) {
            rv = q(ctx, "apply_deletion_purge", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
        }
    }
    if (rv == APR_SUCCESS && held) {
        rv = q(ctx, "apply_unhold", RMSYNC_DB_PARAMS(ctx->rep_id), NULL);
        ctx->held = 0;
    }
    return rv;
}

const char rmsync_apply_deletions_due_sql[] =
    "SELECT DISTINCT l.representative_id FROM rmsync.event_link l "
    "  JOIN rmsync.representatives r ON r.representative_id = l.representative_id "
    " WHERE l.gone_at IS NOT NULL AND l.gone_at <= now() - make_interval(secs => $1::int) "
    "   AND r.sync_active AND NOT r.held_by_breaker";

apr_status_t rmsync_apply_deletions_step(rmsync_rep_ctx_t *ctx)
{
    if (!ctx->active) {
        return APR_SUCCESS;
    }
    return rmsync_apply_flush_deletions(ctx, NULL);
}

/* ---- a delta page in one go ------------------------------------------------------------------ */

apr_status_t rmsync_apply_page_begin(rmsync_rep_ctx_t *ctx, const apr_array_header_t *event_ids,
                                     int mark_seen)
{
    struct rmsync_apply_page_t *pg = apr_pcalloc(ctx->pool, sizeof(*pg));
    rmsync_db_result_t *res;
    const char *ids;
    apr_status_t rv;
    int r;

    pg->links = apr_hash_make(ctx->pool);
    pg->activities = apr_hash_make(ctx->pool);
    pg->pending = apr_array_make(ctx->pool, 16, sizeof(pending_t *));
    pg->log = apr_array_make(ctx->pool, 16, sizeof(rmsync_synclog_entry_t));
    if (!(pg->rows = rmsync_json_bind(ctx->pool, cJSON_CreateArray()))) {
        return APR_ENOMEM;
    }
    ctx->page = pg;
    if (!event_ids || event_ids->nelts == 0) {
        return APR_SUCCESS;
    }
    ids = apr_array_pstrcat(ctx->pool, event_ids, '\n');
    pg->seen = mark_seen ? ids : NULL;
    rv = q(ctx, "apply_links_page", RMSYNC_DB_PARAMS(ctx->rep_id, ids), &res);
    if (rv != APR_SUCCESS) {
        rmsync_apply_page_abandon(ctx);
        return rv;
    }
    for (r = 0; r < res->nrows; ++r) {
        apr_hash_set(pg->links, rmsync_db_value(res, r, 11), APR_HASH_KEY_STRING,
                     link_from_row(ctx->pool, res, r));
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_apply_page_end(rmsync_rep_ctx_t *ctx, int *pseen)
{
    static const char *const labels[] = { "+contact ", "-contact ", "+representative ",
                                          "-representative " };
    struct rmsync_apply_page_t *pg = ctx->page;
    apr_status_t rv = APR_SUCCESS;
    int i;

    *pseen = 0;
    if (!pg) {
        return APR_SUCCESS;
    }
    if (pg->pending->nelts > 0) {
        rmsync_db_result_t *res;
        rmsync_sb_t *nos = rmsync_sb_make(ctx->pool);   /* the activity numbers: $4 */
        const char *json = rmsync_json_print(ctx->pool, pg->rows);
        if (!json) {
            return APR_ENOMEM;
        }
        for (i = 0; i < pg->pending->nelts; ++i) {
            rmsync_sb_addv(nos, i ? "," : "{",
                           RMSYNC_ARRAY_IDX(pg->pending, i, pending_t *)->l->activity_no, NULL);
        }
        rmsync_sb_add(nos, "}");
        rv = q(ctx, "apply_page", RMSYNC_DB_PARAMS(json, pg->seen, ctx->rep_id,
                                                   rmsync_sb_join(nos)), &res);
        if (rv != APR_SUCCESS) {
            /* which item the server refused is for the item-by-item redo to find and log */
            return refused(rv) ? RMSYNC_APPLY_EREDO : rv;
        }
        *pseen = pg->seen != NULL;
        for (i = 0; i < res->nrows; ++i) {
            pending_t *pd = apr_hash_get(pg->activities, rmsync_db_value(res, i, 0),
                                         APR_HASH_KEY_STRING);
            int k = atoi(rmsync_db_value(res, i, 1));
            if (pd && k >= 1 && k <= 4) {
                APR_ARRAY_PUSH(pd->changes, const char *) =
                    apr_pstrcat(ctx->pool, labels[k - 1], rmsync_db_value(res, i, 2), NULL);
                pd->act_changed = 1;
            }
        }
        for (i = 0; i < pg->pending->nelts && rv == APR_SUCCESS; ++i) {
            pending_t *pd = RMSYNC_ARRAY_IDX(pg->pending, i, pending_t *);
            rv = item_done(ctx, pd->l, pd->ev, pd->request_id, pd->changes, pd->act_changed,
                           pd->cancelled_now, pd->link_changed);
            if (pd->act_changed) {
                item_counted(ctx, pd->ev);
            }
        }
    }
    if (rv == APR_SUCCESS && pg->log->nelts > 0) {
        rv = rmsync_synclog_write_many(ctx->synclog, ctx->db, ctx->pool, pg->log);
    }
    rmsync_apply_page_abandon(ctx);
    return rv;
}

void rmsync_apply_page_abandon(rmsync_rep_ctx_t *ctx)
{
    ctx->page = NULL;
}
