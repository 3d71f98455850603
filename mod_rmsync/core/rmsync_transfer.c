/* mod_rmsync: CRM -> Outlook transfer, linking requests, category-driven linking.
 * See rmsync_transfer.h for the rules. */
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_event.h"
#include "rmsync_transfer.h"

/* ---- pure helpers (unit-tested) ------------------------------------------------------------ */

const char *rmsync_transfer_txn_id(apr_pool_t *p, const char *instance, long long activity_no)
{
    return apr_psprintf(p, "rmsync-%s-%lld", (instance && *instance) ? instance : "0", activity_no);
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
    return apr_psprintf(p, "%s%lld%s", apr_pstrmemdup(p, tmpl, (apr_size_t)(pct - tmpl)),
                        activity_no, pct + 2);
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
    ne->body_text = apr_psprintf(p, "CRM Business Activity %lld%s%s", a->activity_no,
                                 url ? "\n" : "", url ? url : "");
    if (s->category_name && *s->category_name) {
        ne->categories = apr_array_make(p, 1, sizeof(const char *));
        APR_ARRAY_PUSH(ne->categories, const char *) = s->category_name;
    }
    ne->transaction_id = txn_id;
    ne->activity_no = apr_psprintf(p, "%lld", a->activity_no);
    /* Graph mails an invitation to every attendee: only when the admin asked for it. */
    if (s->transfer_attendees && a->attendees && a->attendees->nelts > 0) {
        ne->attendees = a->attendees;
    }
}

/* ---- small libpq helpers ------------------------------------------------------------------- */

static apr_status_t res_cleanup(void *data)
{
    PQclear((PGresult *)data);
    return APR_SUCCESS;
}

/* PQexecParams with text params; the result is cleared with p. NULL on a connection failure. */
static PGresult *q(PGconn *c, apr_pool_t *p, const char *sql, int n, const char *const *v)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);

    if (r) {
        apr_pool_cleanup_register(p, r, res_cleanup, apr_pool_cleanup_null);
    }
    return r;
}

static int q_ok(PGresult *r)
{
    return r && (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
}

static const char *q_err(PGconn *c, PGresult *r)
{
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    return (m && *m) ? m : "database error";
}

static const char *val(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static void set_outcome(rmsync_transfer_outcome_t *out, int status, const char *error,
                        const char *message)
{
    out->status = status;
    out->error = error;
    out->message = message;
}

/* ---- linking requests: the API's DB half --------------------------------------------------- */

void rmsync_transfer_request_submit(PGconn *conn, apr_pool_t *p, const char *representative_id,
                                    long long activity_no, const char *event_id,
                                    const char *requested_by, rmsync_transfer_outcome_t *out)
{
    const char *v[5];
    const char *no = activity_no > 0 ? apr_psprintf(p, "%lld", activity_no) : NULL;
    const char *kind = activity_no > 0 ? "link" : "create_activity";
    const char *s, *linked_event, *event_activity;
    PGresult *r;
    cJSON *payload;

    memset(out, 0, sizeof(*out));
    if (!representative_id || !*representative_id || strlen(representative_id) > 200) {
        set_outcome(out, 422, "invalid_representative_id", "representative_id must be a non-empty string");
        return;
    }
    if (!event_id || !*event_id || strlen(event_id) > RMSYNC_TRANSFER_MAX_EVENT_ID) {
        set_outcome(out, 422, "invalid_event_id", "event_id must be a non-empty string of at most 512 bytes");
        return;
    }
    v[0] = representative_id;
    v[1] = no;
    v[2] = event_id;
    r = q(conn, p,
          "SELECT (SELECT count(*) FROM rmsync.representatives WHERE representative_id = $1),"
          "       (SELECT sync_active FROM rmsync.representatives WHERE representative_id = $1),"
          "       (SELECT count(*) FROM crm.business_activity WHERE activity_no = $2::bigint),"
          "       (SELECT event_id FROM rmsync.event_link WHERE activity_no = $2::bigint),"
          "       (SELECT activity_no FROM rmsync.event_link"
          "         WHERE representative_id = $1 AND event_id = $3)",
          3, v);
    if (!q_ok(r)) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00801)
                   "linking request: database check failed: %s", q_err(conn, r));
        set_outcome(out, 503, "database_unavailable", "the database is not reachable, try again");
        return;
    }
    if (!strcmp(PQgetvalue(r, 0, 0), "0")) {
        set_outcome(out, 404, "unknown_representative",
                    "no representative with that id holds the sync permission set");
        return;
    }
    s = val(r, 0, 1);
    if (!s || strcmp(s, "t")) {
        set_outcome(out, 409, "representative_not_syncing",
                    "the representative's calendar is not synced (Sync Active is off)");
        return;
    }
    if (no && !strcmp(PQgetvalue(r, 0, 2), "0")) {
        set_outcome(out, 404, "unknown_activity", "no business activity with that number");
        return;
    }
    linked_event = val(r, 0, 3);
    if (no && linked_event) {
        set_outcome(out, 409, "activity_already_linked",
                    "the business activity is already linked to an Outlook appointment");
        return;
    }
    event_activity = val(r, 0, 4);
    if (event_activity) {
        set_outcome(out, 409, "event_already_linked",
                    apr_psprintf(p, "the appointment is already linked to business activity %s",
                                 event_activity));
        return;
    }
    payload = rmsync_json_object(p);
    cJSON_AddStringToObject(payload, "event_id", event_id);
    v[0] = kind;
    v[1] = representative_id;
    v[2] = no;
    v[3] = rmsync_json_print(p, payload);
    v[4] = requested_by;
    r = q(conn, p,
          "INSERT INTO rmsync.request (kind, representative_id, activity_no, payload, requested_by)"
          " VALUES ($1, $2, $3::bigint, $4::jsonb, $5) RETURNING id",
          5, v);
    if (!q_ok(r) || PQntuples(r) != 1) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00802)
                   "linking request: cannot queue: %s", q_err(conn, r));
        set_outcome(out, 503, "database_unavailable", "the database is not reachable, try again");
        return;
    }
    out->request_id = apr_atoi64(PQgetvalue(r, 0, 0));
    set_outcome(out, 202, NULL, "queued");
}

int rmsync_transfer_request_status(PGconn *conn, apr_pool_t *p, long long id, const char **pjson)
{
    const char *v[1];
    PGresult *r;
    cJSON *o, *res = NULL;
    const char *state, *result;
    int status;

    v[0] = apr_psprintf(p, "%lld", id);
    r = q(conn, p,
          "SELECT id, kind, representative_id, activity_no, payload->>'event_id', state, result,"
          "       to_char(requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
          "       to_char(done_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
          "  FROM rmsync.request WHERE id = $1::bigint AND kind IN ('link', 'create_activity')",
          1, v);
    o = rmsync_json_object(p);
    if (!q_ok(r)) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00803)
                   "linking request status: %s", q_err(conn, r));
        cJSON_AddStringToObject(o, "error", "database_unavailable");
        *pjson = rmsync_json_print(p, o);
        return 503;
    }
    if (PQntuples(r) != 1) {
        cJSON_AddStringToObject(o, "error", "unknown_request");
        cJSON_AddStringToObject(o, "message", "no linking request with that id");
        *pjson = rmsync_json_print(p, o);
        return 404;
    }
    state = PQgetvalue(r, 0, 5);
    result = val(r, 0, 6);
    cJSON_AddNumberToObject(o, "id", (double)apr_atoi64(PQgetvalue(r, 0, 0)));
    cJSON_AddStringToObject(o, "kind", PQgetvalue(r, 0, 1));
    cJSON_AddStringToObject(o, "state", state);
    cJSON_AddStringToObject(o, "representative_id", val(r, 0, 2) ? val(r, 0, 2) : "");
    if (val(r, 0, 3)) {
        cJSON_AddNumberToObject(o, "activity_no", (double)apr_atoi64(val(r, 0, 3)));
    }
    if (val(r, 0, 4)) {
        cJSON_AddStringToObject(o, "event_id", val(r, 0, 4));
    }
    cJSON_AddStringToObject(o, "requested_at", PQgetvalue(r, 0, 7));
    if (val(r, 0, 8)) {
        cJSON_AddStringToObject(o, "done_at", val(r, 0, 8));
    }
    status = 202;
    if (result && *result) {
        cJSON *parsed = cJSON_Parse(result);
        if (parsed) {
            res = parsed;
            cJSON_AddItemToObject(o, "result", res);
        }
    }
    if (!strcmp(state, "done")) {
        status = 200;
    }
    else if (!strcmp(state, "failed")) {
        const cJSON *st = res ? cJSON_GetObjectItemCaseSensitive(res, "status") : NULL;
        status = (cJSON_IsNumber(st) && st->valueint >= 400 && st->valueint < 600) ? st->valueint : 500;
    }
    *pjson = rmsync_json_print(p, o);
    return status;
}
