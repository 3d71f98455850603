/* mod_rmsync: runs in the Apache worker processes (the admin handler's POSTs). The admin
 * actions: POST only, answered 303 to the page, or JSON for scripts.
 *
 * Checks, in order: RMSyncAdminRequireUser, same-origin (Origin/Referer against Host,
 * Sec-Fetch-Site), content type, bounded body, parameter whitelist, CSRF token (HMAC of the
 * per-generation shm secret, the user and a time window, compared in constant time). Then one
 * DB transaction does the change and writes a sync_log line naming the admin user. Work that
 * needs Graph is never done here: Initial Sync, Approve and Retry are durable rmsync.request
 * rows whose INSERT trigger NOTIFYs the runner.
 */
#include <string.h>
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"
#include "rmsync.h"
#include "rmsync_html.h"
#include "mod_rmsync_admin.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_request.h"
#include "rmsync_csrf.h"
#include "rmsync_escape.h"
#include "rmsync_form.h"

APLOG_USE_MODULE(rmsync);

static const char *const post_args[] = { "token", "action", "rep", "active", "log", "back",
                                          "format", "confirm", NULL };
static const char *const back_args_log[] = { "rep", "level", "activity", "event", "action",
                                             "from", "to", "before", "after", "n",
                                             "min_level", "q", "tz", NULL };
static const char *const back_args_config[] = { "q", "page", NULL };

typedef struct {
    int status;              /* HTTP status when the action fails (0 = success) */
    const char *msg;         /* error text, or the success message */
    const char *request_id;  /* rmsync.request id when one was queued */
} outcome_t;

static int fail(outcome_t *o, int status, const char *msg)
{
    o->status = status;
    o->msg = msg;
    return 0;
}

static const rmsync_db_stmt_t stmts[] = {
    /* by_admin: the runner copies these rows to RMSyncLogFile (rmsync_synclog_copy_admin) */
    { "admin_audit", "INSERT INTO rmsync.sync_log (level, representative_id, activity_no,"
                     " event_id, action, message, by_admin)"
                     " VALUES ('info', $1, $2::bigint, $3, $4, $5, $6)", 6 },
    { "admin_request_pending", "SELECT id FROM rmsync.request WHERE kind = $1"
                               " AND representative_id IS NOT DISTINCT FROM $2::text"
                               " AND activity_no IS NOT DISTINCT FROM $3::bigint"
                               " AND state IN ('pending', 'processing') ORDER BY id LIMIT 1", 3 },
    { "admin_request_insert", "INSERT INTO rmsync.request (kind, representative_id, activity_no,"
                              " payload, requested_by) VALUES ($1, $2, $3::bigint, $4::jsonb, $5)"
                              " RETURNING id", 5 },
    /* Test connection needs one mailbox: a syncing representative's, else any */
    { "admin_test_rep", "SELECT representative_id FROM rmsync.representatives"
                        " ORDER BY sync_active DESC, name, representative_id LIMIT 1", 0 },
    { "admin_find_rep", "SELECT name, sync_active, held_by_breaker FROM rmsync.representatives"
                        " WHERE representative_id = $1", 1 },
    { "admin_set_active", "INSERT INTO rmsync.rep_state (representative_id, sync_active)"
                          " VALUES ($1, $2::boolean) ON CONFLICT (representative_id) DO UPDATE"
                          " SET sync_active = EXCLUDED.sync_active, updated_at = now()", 2 },
    { "admin_service_set", "UPDATE rmsync.service_state SET running = $1::boolean,"
                           " changed_at = now(), changed_by = $2"
                           " WHERE id = 1 AND running IS DISTINCT FROM $1::boolean RETURNING id",
                           2 },
    { "admin_find_log", "SELECT l.representative_id, l.activity_no, l.event_id, k.event_id,"
                        " k.representative_id FROM rmsync.sync_log l"
                        " LEFT JOIN rmsync.event_link k ON k.activity_no = l.activity_no"
                        " WHERE l.id = $1::bigint", 1 },
    /* unlinked and remembered: never linked again but by an explicit link (linking API) */
    { "admin_unlink", "WITH d AS (DELETE FROM rmsync.event_link WHERE activity_no = $1::bigint"
                      "            RETURNING representative_id, event_id, activity_no),"
                      " m AS (INSERT INTO rmsync.unlinked_event (representative_id, event_id,"
                      "                                          activity_no, unlinked_by)"
                      "       SELECT representative_id, event_id, activity_no, $2 FROM d"
                      "       ON CONFLICT (representative_id, event_id) DO UPDATE SET"
                      "          activity_no = EXCLUDED.activity_no,"
                      "          unlinked_by = EXCLUDED.unlinked_by, unlinked_at = now(),"
                      "          noted_change_key = NULL)"
                      " SELECT representative_id, event_id FROM d", 2 },
};

apr_status_t rmsync_admin_register_action_statements(void)
{
    return rmsync_db_register(stmts, (int)(sizeof(stmts) / sizeof(stmts[0])));
}

#define q(a, name, params) rmsync_admin_query((a), (name), (params))
#define V(res, row, col) rmsync_db_value((res), (row), (col))

/* The sync_log line that says who did what (inside the action's transaction). */
static int audit(rmsync_admin_t *a, const char *rep, const char *activity_no,
                 const char *event_id, const char *action, const char *msg)
{
    return q(a, "admin_audit", RMSYNC_DB_PARAMS(rep, activity_no, event_id, action,
             apr_pstrcat(a->r->pool, msg, " (admin ", a->user, ")", NULL), a->user)) != NULL;
}

/* A durable request for the runner, unless an equal one is still pending (payload-less
 * requests only: a Retry always gets its own row). */
static const char *queue_request(rmsync_admin_t *a, const char *kind, const char *rep,
                                 const char *activity_no, const char *payload, int *dup)
{
    rmsync_db_result_t *res;

    *dup = 0;
    if (!payload) {
        res = q(a, "admin_request_pending", RMSYNC_DB_PARAMS(kind, rep, activity_no));
        if (!res) {
            return NULL;
        }
        if (res->nrows > 0) {
            *dup = 1;
            return V(res, 0, 0);
        }
    }
    res = q(a, "admin_request_insert", RMSYNC_DB_PARAMS(kind, rep, activity_no, payload,
                                                        a->user));
    return res && res->nrows == 1 ? V(res, 0, 0) : NULL;
}

#define DBFAIL(o) fail((o), HTTP_SERVICE_UNAVAILABLE, "database error")

/* The one row statement name gives for key, or NULL with o set: 503 on a database error,
 * 404 with notfound when there is no such row. */
static rmsync_db_result_t *one_row(rmsync_admin_t *a, const char *name, const char *key,
                                   const char *notfound, outcome_t *o)
{
    rmsync_db_result_t *res = q(a, name, RMSYNC_DB_PARAMS(key));

    if (!res) {
        DBFAIL(o);
        return NULL;
    }
    if (res->nrows != 1) {
        fail(o, HTTP_NOT_FOUND, notfound);
        return NULL;
    }
    return res;
}

/* The representative must hold the permission set (be on the configuration page). */
static rmsync_db_result_t *find_rep(rmsync_admin_t *a, const char *rep, outcome_t *o)
{
    if (!rep || !*rep) {
        fail(o, HTTP_BAD_REQUEST, "rep: missing");
        return NULL;
    }
    return one_row(a, "admin_find_rep", rep, apr_psprintf(a->r->pool, "No representative '%s' "
                   "holds the sync permission set.", rep), o);
}

static int is_true(const char *v)
{
    return v && *v == 't';
}

static int act_set_active(rmsync_admin_t *a, apr_table_t *f, outcome_t *o)
{
    const char *rep = apr_table_get(f, "rep"), *active = apr_table_get(f, "active");
    const char *b;

    if (!active || (strcmp(active, "0") && strcmp(active, "1"))) {
        return fail(o, HTTP_BAD_REQUEST, "active: must be 0 or 1");
    }
    if (!find_rep(a, rep, o)) {
        return 0;
    }
    b = *active == '1' ? "true" : "false";
    if (!q(a, "admin_set_active", RMSYNC_DB_PARAMS(rep, b))
        || !audit(a, rep, NULL, NULL, "set_active",
                  apr_psprintf(a->r->pool, "Sync Active set to %s",
                               *active == '1' ? "Yes" : "No"))) {
        return DBFAIL(o);
    }
    o->msg = apr_psprintf(a->r->pool, "Sync Active of %s set to %s", rep, b);
    return 1;
}

/* Queue a payload-less request for the runner, once (an equal pending one is reused), and
 * audit it; o->msg says which happened. */
static int queue_once(rmsync_admin_t *a, outcome_t *o, const char *kind, const char *rep,
                      const char *audit_msg, const char *done_msg, const char *dup_msg)
{
    int dup;

    if (!(o->request_id = queue_request(a, kind, rep, NULL, NULL, &dup))
        || (!dup && !audit(a, rep, NULL, NULL, kind, audit_msg))) {
        return DBFAIL(o);
    }
    o->msg = dup ? dup_msg : done_msg;
    return 1;
}

/* A request for one representative (Initial Sync, Approve), refused with 409 unless a flag of
 * its row is set. */
typedef struct {
    const char *kind;
    int col;                        /* admin_find_rep column: 1 sync_active, 2 held_by_breaker */
    const char *off_pre, *off_post; /* the refusal: off_pre <rep> off_post */
    const char *audit_msg, *done_msg, *dup_msg;
} rep_request_t;

static const rep_request_t req_initial_sync = {
    "initial_sync", 1, "Sync Active is off for ", ": activate it first.",
    "Initial Sync requested", "Initial Sync requested", "Initial Sync already pending"
};
static const rep_request_t req_approve = {
    "approve", 2, "", " is not held by the mass-delete breaker.",
    "Mass deletion approved; the next pass applies it", "Approved", "Approval already pending"
};
static const rep_request_t req_reject = {
    "reject", 2, "", " is not held by the mass-delete breaker.",
    "Mass deletion rejected; the activities are kept and unlinked", "Rejected",
    "Rejection already pending"
};

static int act_rep_request(rmsync_admin_t *a, apr_table_t *f, outcome_t *o,
                           const rep_request_t *k)
{
    const char *rep = apr_table_get(f, "rep");
    rmsync_db_result_t *res = find_rep(a, rep, o);

    if (!res) {
        return 0;
    }
    if (!is_true(V(res, 0, k->col))) {
        return fail(o, HTTP_CONFLICT, apr_pstrcat(a->r->pool, k->off_pre, rep, k->off_post,
                                                  NULL));
    }
    return queue_once(a, o, k->kind, rep, k->audit_msg, k->done_msg, k->dup_msg);
}

static int act_service(rmsync_admin_t *a, int run, outcome_t *o)
{
    rmsync_db_result_t *res;

    res = q(a, "admin_service_set", RMSYNC_DB_PARAMS(run ? "true" : "false", a->user));
    if (!res) {
        return DBFAIL(o);
    }
    if (res->nrows > 0
        && !audit(a, NULL, NULL, NULL, run ? "start" : "stop",
                  run ? "Sync service started" : "Sync service stopped")) {
        return DBFAIL(o);
    }
    o->msg = res->nrows > 0 ? (run ? "Sync service started" : "Sync service stopped")
                            : (run ? "Sync service already running"
                                   : "Sync service already stopped");
    return 1;
}

/* The log row a Retry/Unlink refers to: rep, activity_no, event_id, linked event, link rep. */
static rmsync_db_result_t *find_log(rmsync_admin_t *a, apr_table_t *f, outcome_t *o)
{
    const char *id = apr_table_get(f, "log");
    long long n;

    if (!id || !rmsync_parse_int64(id, 1, APR_INT64_MAX, &n)) {
        fail(o, HTTP_BAD_REQUEST, "log: not a log entry id");
        return NULL;
    }
    return one_row(a, "admin_find_log", id, "No such log entry.", o);
}

static int act_retry(rmsync_admin_t *a, apr_table_t *f, outcome_t *o)
{
    apr_pool_t *p = a->r->pool;
    rmsync_db_result_t *res = find_log(a, f, o);
    const char *rep, *act, *evt, *payload;
    cJSON *pl;
    char *txt;
    int dup;

    if (!res) {
        return 0;
    }
    rep = V(res, 0, 0) ? V(res, 0, 0) : V(res, 0, 4);
    act = V(res, 0, 1);
    evt = V(res, 0, 2) ? V(res, 0, 2) : V(res, 0, 3);  /* the logged event, else the linked one */
    if (!rep || !evt) {
        return fail(o, HTTP_CONFLICT, "This log entry names no Outlook event to fetch again.");
    }
    pl = cJSON_CreateObject();
    cJSON_AddStringToObject(pl, "event_id", evt);
    cJSON_AddNumberToObject(pl, "log_id", (double)apr_atoi64(apr_table_get(f, "log")));
    txt = cJSON_PrintUnformatted(pl);
    payload = apr_pstrdup(p, txt ? txt : "{}");
    cJSON_free(txt);
    cJSON_Delete(pl);
    if (!(o->request_id = queue_request(a, "retry", rep, act, payload, &dup))
        || !audit(a, rep, act, evt, "retry",
                  apr_psprintf(p, "Retry of log entry %s requested", apr_table_get(f, "log")))) {
        return DBFAIL(o);
    }
    o->msg = "Retry requested";
    return 1;
}

static int act_unlink(rmsync_admin_t *a, apr_table_t *f, outcome_t *o)
{
    apr_pool_t *p = a->r->pool;
    rmsync_db_result_t *res = find_log(a, f, o);
    const char *act;

    if (!res) {
        return 0;
    }
    act = V(res, 0, 1);
    if (!act || !V(res, 0, 3)) {
        return fail(o, HTTP_CONFLICT, "The activity of this log entry is not linked.");
    }
    if (!(res = q(a, "admin_unlink", RMSYNC_DB_PARAMS(act, a->user)))) {
        return DBFAIL(o);
    }
    if (res->nrows != 1) {
        return fail(o, HTTP_CONFLICT, "The activity of this log entry is not linked.");
    }
    if (!audit(a, V(res, 0, 0), act, V(res, 0, 1), "unlink",
               apr_psprintf(p, "Activity %s unlinked from its Outlook appointment", act))) {
        return DBFAIL(o);
    }
    o->msg = apr_psprintf(p, "Activity %s unlinked", act);
    return 1;
}

/* Stop (halts everyone's sync) and Unlink ask first: without confirm=1 the HTML form gets a
 * confirmation page (a Confirm POST with the same fields, a Cancel link; no script needed),
 * a script (format=json) a 400 naming the parameter. Nothing is changed either way. */
/* Test connection / Test mailbox: a request the runner carries out with the Graph client (a
 * worker never calls Graph); its result page is test?id=. */
static int act_test(rmsync_admin_t *a, apr_table_t *f, outcome_t *o, const char *kind)
{
    const char *rep = apr_table_get(f, "rep");
    rmsync_db_result_t *res;
    int dup;

    if (!strcmp(kind, "test_connection") && (!rep || !*rep)) {
        if (!(res = q(a, "admin_test_rep", RMSYNC_DB_NOPARAMS))) {
            return DBFAIL(o);
        }
        if (res->nrows != 1) {
            return fail(o, HTTP_CONFLICT, "The connection test reads one mailbox, and no "
                        "representative holds the sync permission set.");
        }
        rep = V(res, 0, 0);
    }
    else if (!find_rep(a, rep, o)) {
        return 0;
    }
    if (!(o->request_id = queue_request(a, kind, rep, NULL, NULL, &dup))) {
        return DBFAIL(o);
    }
    if (!dup && !audit(a, rep, NULL, NULL, kind, apr_pstrcat(a->r->pool, kind, " requested",
                                                             NULL))) {
        return DBFAIL(o);
    }
    o->msg = dup ? "test already pending" : "test requested";
    return 1;
}

static int needs_confirm(const char *action)
{
    return !strcmp(action, "stop") || !strcmp(action, "unlink");
}

static int confirm_page(rmsync_admin_t *a, apr_table_t *f, const char *action)
{
    apr_pool_t *p = a->r->pool;
    const char *question, *detail, *label, *log = apr_table_get(f, "log");
    outcome_t o = { 0, NULL, NULL };

    if (!strcmp(action, "stop")) {
        question = "Stop the sync service?";
        detail = "No representative is synced while the service is stopped (Outlook "
                 "notifications are still stored and applied after Start).";
        label = "Stop sync service";
    }
    else {
        rmsync_db_result_t *res;
        if (!rmsync_admin_db(a)) {
            return rmsync_admin_error(a, HTTP_SERVICE_UNAVAILABLE, apr_pstrcat(p,
                                      "The sync database is not reachable (", a->db_error, ").",
                                      NULL));
        }
        if (!(res = find_log(a, f, &o))) {
            return rmsync_admin_error(a, o.status, o.msg);
        }
        if (!V(res, 0, 1) || !V(res, 0, 3)) {
            return rmsync_admin_error(a, HTTP_CONFLICT, "The activity of this log entry is not "
                                      "linked.");
        }
        question = apr_psprintf(p, "Unlink activity %s from its Outlook appointment?",
                                V(res, 0, 1));
        detail = "The activity is kept; Outlook changes no longer reach it, and the appointment "
                 "is not linked again by its category or a later sync. Only an explicit link "
                 "(the linking API) links it again.";
        label = "Unlink";
    }
    a->r->status = HTTP_OK;
    ap_set_content_type(a->r, "text/html; charset=utf-8");
    ap_rputs(rmsync_admin_confirm_html(a, action, question, detail, label,
                                       apr_table_get(f, "back"), log), a->r);
    return OK;
}

/* Where the 303 goes: the page, with the log page's filters (the configuration page's search
 * and page) from "back" re-encoded after whitelisting them (never an arbitrary URL). */
static const char *redirect_to(rmsync_admin_t *a, const char *back, const char *action)
{
    apr_pool_t *p = a->r->pool;
    const char *url = apr_pstrcat(p, ap_escape_uri(p, a->base), "/", a->page, "?done=",
                                  rmsync_url_escape(p, action), NULL);
    const char *const *keep = !strcmp(a->page, "log") ? back_args_log : back_args_config;
    apr_table_t *t;
    const char *err;
    int i;

    if (back && *back
        && rmsync_form_parse(p, back, strlen(back), keep, 20, &t, &err) == APR_SUCCESS) {
        for (i = 0; keep[i]; i++) {
            const char *v = apr_table_get(t, keep[i]);
            if (v && *v) {
                url = apr_pstrcat(p, url, "&", keep[i], "=", rmsync_url_escape(p, v), NULL);
            }
        }
    }
    return url;
}

int rmsync_admin_post(rmsync_admin_t *a)
{
    request_rec *r = a->r;
    apr_pool_t *p = r->pool;
    rmsync_shm_t *live = rmsync_shm_get();
    const char *why, *err, *action, *token, *fmt, *confirm;
    char *body;
    apr_size_t len;
    apr_table_t *f;
    int status;
    outcome_t o = { 0, NULL, NULL };
    int ok;

    if (!rmsync_request_same_origin(r, &why)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RMSYNC_LOGNO(00711)
                      "admin action refused, cross-site request: %s", why);
        return rmsync_admin_error(a, HTTP_FORBIDDEN, apr_pstrcat(p, "Cross-site request "
                                  "refused: ", why, ".", NULL));
    }
    if (!rmsync_request_has_type(r, "application/x-www-form-urlencoded")) {
        return rmsync_admin_error(a, HTTP_UNSUPPORTED_MEDIA_TYPE,
                                  "Send actions as application/x-www-form-urlencoded.");
    }
    status = rmsync_read_body(r, RMSYNC_ADMIN_MAX_BODY, 0, &body, &len);
    if (status == HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return rmsync_admin_error(a, status, "Request body too large.");
    }
    if (status != OK) {
        return rmsync_admin_error(a, HTTP_BAD_REQUEST, "Could not read the request body.");
    }
    if (rmsync_form_parse(p, body, len, post_args, 10, &f, &err) != APR_SUCCESS) {
        return rmsync_admin_error(a, HTTP_BAD_REQUEST, apr_pstrcat(p, "Bad form: ", err, NULL));
    }
    fmt = apr_table_get(f, "format");
    if (fmt && !strcmp(fmt, "json")) {
        a->json = 1;
    }
    token = apr_table_get(f, "token");
    if (!rmsync_request_csrf_ok(r, a->user, token)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RMSYNC_LOGNO(00712)
                      "admin action refused: %s CSRF token", token ? "invalid or expired"
                                                                   : "missing");
        return rmsync_admin_error(a, HTTP_FORBIDDEN, "Missing or expired form token: reload "
                                  "the page and try again.");
    }
    action = apr_table_get(f, "action");
    if (!action) {
        return rmsync_admin_error(a, HTTP_BAD_REQUEST, "action: missing");
    }
    if ((confirm = apr_table_get(f, "confirm")) && strcmp(confirm, "1")) {
        return rmsync_admin_error(a, HTTP_BAD_REQUEST, "confirm: must be 1");
    }
    if (needs_confirm(action) && !confirm) {
        if (a->json) {
            return rmsync_admin_error(a, HTTP_BAD_REQUEST, apr_pstrcat(p, "confirm: ", action,
                                      " asks first; send confirm=1 to carry it out", NULL));
        }
        return confirm_page(a, f, action);
    }
    if (!rmsync_admin_db(a)) {
        return rmsync_admin_error(a, HTTP_SERVICE_UNAVAILABLE, apr_pstrcat(p,
                                  "The sync database is not reachable (", a->db_error, ").",
                                  NULL));
    }
    if (rmsync_db_begin(a->db) != APR_SUCCESS) {
        return rmsync_admin_error(a, HTTP_SERVICE_UNAVAILABLE, "The sync database is not "
                                  "reachable.");
    }
    if (!strcmp(action, "set_active")) ok = act_set_active(a, f, &o);
    else if (!strcmp(action, "initial_sync")) ok = act_rep_request(a, f, &o, &req_initial_sync);
    else if (!strcmp(action, "initial_sync_all"))
        ok = queue_once(a, &o, "initial_sync_all", NULL,
                        "Initial Sync for all representatives requested",
                        "Initial Sync for all requested", "Initial Sync for all already pending");
    else if (!strcmp(action, "stop")) ok = act_service(a, 0, &o);
    else if (!strcmp(action, "start")) ok = act_service(a, 1, &o);
    else if (!strcmp(action, "approve")) ok = act_rep_request(a, f, &o, &req_approve);
    else if (!strcmp(action, "reject")) ok = act_rep_request(a, f, &o, &req_reject);
    else if (!strcmp(action, "retry")) ok = act_retry(a, f, &o);
    else if (!strcmp(action, "unlink")) ok = act_unlink(a, f, &o);
    else if (!strcmp(action, "test_connection") || !strcmp(action, "test_mailbox"))
        ok = act_test(a, f, &o, action);
    else ok = fail(&o, HTTP_BAD_REQUEST, "action: unknown");
    if (!ok || rmsync_db_commit(a->db) != APR_SUCCESS) {
        rmsync_db_rollback(a->db);
        if (ok) {
            fail(&o, HTTP_SERVICE_UNAVAILABLE, "database error");
        }
        return rmsync_admin_error(a, o.status, o.msg);
    }
    if (live) {
        rmsync_shm_counter_inc(live, RMSYNC_CTR_ADMIN_ACTIONS);
    }
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, RMSYNC_LOGNO(00713)
                  "admin action %s by %s: %s", action, a->user, o.msg);
    if (!strncmp(action, "test_", 5) && o.request_id) {
        /* the result page to follow (HTML) or to poll (JSON: 202 + Location, like the API) */
        const char *loc = apr_pstrcat(p, ap_escape_uri(p, a->base), a->json ? "/test.json?id="
                                      : "/test?id=", o.request_id, NULL);
        apr_table_setn(r->headers_out, "Location", loc);
        if (a->json) {
            cJSON *j = rmsync_admin_json_obj(a);
            cJSON_AddBoolToObject(j, "ok", 1);
            cJSON_AddStringToObject(j, "action", action);
            cJSON_AddStringToObject(j, "message", o.msg);
            cJSON_AddNumberToObject(j, "request_id", (double)apr_atoi64(o.request_id));
            cJSON_AddStringToObject(j, "location", loc);
            return rmsync_admin_send_json(a, HTTP_ACCEPTED, j);
        }
        return HTTP_SEE_OTHER;
    }
    if (a->json) {
        cJSON *j = rmsync_admin_json_obj(a);
        cJSON_AddBoolToObject(j, "ok", 1);
        cJSON_AddStringToObject(j, "action", action);
        cJSON_AddStringToObject(j, "message", o.msg);
        if (o.request_id) {
            cJSON_AddNumberToObject(j, "request_id", (double)apr_atoi64(o.request_id));
        }
        return rmsync_admin_send_json(a, HTTP_OK, j);
    }
    apr_table_setn(r->headers_out, "Location",
                   redirect_to(a, apr_table_get(f, "back"), action));
    return HTTP_SEE_OTHER;
}
