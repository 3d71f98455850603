/* mod_rmsync, run by Apache worker processes (the JSON API): the DB half of linking requests:
 * validate and queue them, report their state (rmsync_linkreq.h); the runner does the Graph half. */
#include <stdio.h>
#include <string.h>
#include <apr_strings.h>
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_db.h"
#include "rmsync_linkreq.h"

/* APR's formatter has no %lld: numbers go through the C library. */
static const char *i64(apr_pool_t *p, long long n)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%lld", n);
    return apr_pstrdup(p, buf);
}

static const rmsync_db_stmt_t api_stmts[] = {
    { "transfer_api_check",
      "SELECT (SELECT count(*) FROM rmsync.representatives WHERE representative_id = $1) AS known,"
      "       (SELECT sync_active FROM rmsync.representatives WHERE representative_id = $1) AS active,"
      "       (SELECT count(*) FROM crm.business_activity WHERE activity_no = $2::bigint) AS activity,"
      "       (SELECT event_id FROM rmsync.event_link WHERE activity_no = $2::bigint) AS linked_event,"
      "       (SELECT activity_no FROM rmsync.event_link"
      "         WHERE representative_id = $1 AND event_id = $3) AS event_activity", 3 },
    { "transfer_api_queue",
      "INSERT INTO rmsync.request (kind, representative_id, activity_no, payload, requested_by)"
      " VALUES ($1, $2, $3::bigint, $4::jsonb, $5) RETURNING id", 5 },
    { "transfer_api_log",
      "INSERT INTO rmsync.sync_log (level, representative_id, activity_no, event_id, action, message)"
      " VALUES ('info', $1, $2::bigint, $3, $4, $5)", 5 },
    { "transfer_api_status",
      "SELECT id, kind, representative_id, activity_no, payload->>'event_id' AS event_id, state,"
      "       result,"
      "       to_char(requested_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS requested_at,"
      "       to_char(done_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS done_at,"
      "       coalesce((SELECT p.sync_active FROM rmsync.representatives p"
      "                  WHERE p.representative_id = q.representative_id), false) AS rep_syncing"
      "  FROM rmsync.request q WHERE id = $1::bigint AND kind IN ('link', 'create_activity')", 1 },
};

static void register_api_stmts(void)
{
    static int done;
    rmsync_db_register_once(&done, api_stmts, (int)(sizeof(api_stmts) / sizeof(api_stmts[0])));
}

static void set_outcome(rmsync_transfer_outcome_t *out, int status, const char *error,
                        const char *message)
{
    out->status = status;
    out->error = error;
    out->message = message;
}

static void db_down(rmsync_db_t *db, rmsync_transfer_outcome_t *out, const char *what)
{
    rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00801)
               "linking request: %s failed: %s", what, rmsync_db_errmsg(db));
    set_outcome(out, 503, "database_unavailable", "the database is not reachable, try again");
}

static void request_submit(rmsync_db_t *db, apr_pool_t *p, const char *rep, const char *no,
                           const char *event_id, const char *user,
                           rmsync_transfer_outcome_t *out)
{
    rmsync_db_result_t *r = NULL;
    const char *s;
    cJSON *payload;

    if (!rep || !*rep || strlen(rep) > 200) {
        set_outcome(out, 422, "invalid_representative_id",
                    "representative_id must be a non-empty string");
        return;
    }
    if (!event_id || !*event_id || strlen(event_id) > RMSYNC_TRANSFER_MAX_EVENT_ID) {
        set_outcome(out, 422, "invalid_event_id",
                    "event_id must be a non-empty string of at most 512 bytes");
        return;
    }
    if (rmsync_db_exec(db, p, "transfer_api_check", RMSYNC_DB_PARAMS(rep, no, event_id), &r)
        != APR_SUCCESS || r->nrows != 1) {
        db_down(db, out, "database check");
        return;
    }
    if (!strcmp(rmsync_db_value(r, 0, 0), "0")) {
        set_outcome(out, 404, "unknown_representative",
                    "no representative with that id holds the sync permission set");
        return;
    }
    s = rmsync_db_value(r, 0, 1);
    if (!s || strcmp(s, "t")) {
        set_outcome(out, 409, "representative_not_syncing",
                    "the representative's calendar is not synced (Sync Active is off)");
        return;
    }
    if (no && !strcmp(rmsync_db_value(r, 0, 2), "0")) {
        set_outcome(out, 404, "unknown_activity", "no business activity with that number");
        return;
    }
    if (no && rmsync_db_value(r, 0, 3)) {
        set_outcome(out, 409, "activity_already_linked",
                    "the business activity is already linked to an Outlook appointment");
        return;
    }
    if ((s = rmsync_db_value(r, 0, 4)) != NULL) {
        set_outcome(out, 409, "event_already_linked",
                    apr_psprintf(p, "the appointment is already linked to business activity %s", s));
        return;
    }
    payload = rmsync_json_object(p);
    cJSON_AddStringToObject(payload, "event_id", event_id);
    if (rmsync_db_exec(db, p, "transfer_api_queue",
                       RMSYNC_DB_PARAMS(no ? "link" : "create_activity", rep, no,
                                        rmsync_json_print(p, payload), user), &r) != APR_SUCCESS
        || r->nrows != 1) {
        db_down(db, out, "queueing");
        return;
    }
    out->request_id = apr_atoi64(rmsync_db_value(r, 0, 0));
    set_outcome(out, 202, NULL, "queued");
}

void rmsync_transfer_request_submit(rmsync_db_t *db, apr_pool_t *p, const char *rep,
                                    long long activity_no, const char *event_id,
                                    const char *requested_by, rmsync_transfer_outcome_t *out)
{
    const char *no = activity_no > 0 ? i64(p, activity_no) : NULL;
    const char *kind = no ? "link" : "create_activity", *user = requested_by ? requested_by : "-";

    memset(out, 0, sizeof(*out));
    register_api_stmts();
    request_submit(db, p, rep, no, event_id, requested_by, out);
    if (out->status == 503 || out->status == 422) {
        return;                    /* nothing to log in the DB: down, or a malformed call */
    }
    /* every outcome in the Calendar Sync Log */
    rmsync_db_exec(db, p, "transfer_api_log", RMSYNC_DB_PARAMS(rep, no, event_id, kind,
        out->status == 202
        ? apr_psprintf(p, "%s request %s queued by %s", kind, i64(p, out->request_id), user)
        : apr_psprintf(p, "%s request by %s refused (%d %s): %s", kind, user, out->status,
                       out->error ? out->error : "-", out->message)), NULL);
}

int rmsync_transfer_request_status(rmsync_db_t *db, apr_pool_t *p, long long id,
                                   const char **pjson)
{
    rmsync_db_result_t *r = NULL;
    cJSON *o = rmsync_json_object(p), *res = NULL;
    const char *state, *result, *v;
    int status = 202;

    register_api_stmts();
    if (rmsync_db_exec(db, p, "transfer_api_status", RMSYNC_DB_PARAMS(i64(p, id)), &r)
        != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_ERR, APR_EGENERAL, RMSYNC_LOGNO(00803)
                   "linking request status: %s", rmsync_db_errmsg(db));
        cJSON_AddStringToObject(o, "error", "database_unavailable");
        *pjson = rmsync_json_print(p, o);
        return 503;
    }
    if (r->nrows != 1) {
        cJSON_AddStringToObject(o, "error", "unknown_request");
        cJSON_AddStringToObject(o, "message", "no linking request with that id");
        *pjson = rmsync_json_print(p, o);
        return 404;
    }
    state = rmsync_db_get(r, 0, "state");
    result = rmsync_db_get(r, 0, "result");
    cJSON_AddNumberToObject(o, "id", (double)apr_atoi64(rmsync_db_get(r, 0, "id")));
    cJSON_AddStringToObject(o, "kind", rmsync_db_get(r, 0, "kind"));
    cJSON_AddStringToObject(o, "state", state);
    v = rmsync_db_get(r, 0, "representative_id");
    cJSON_AddStringToObject(o, "representative_id", v ? v : "");
    if ((v = rmsync_db_get(r, 0, "activity_no")) != NULL) {
        cJSON_AddNumberToObject(o, "activity_no", (double)apr_atoi64(v));
    }
    if ((v = rmsync_db_get(r, 0, "event_id")) != NULL) {
        cJSON_AddStringToObject(o, "event_id", v);
    }
    cJSON_AddStringToObject(o, "requested_at", rmsync_db_get(r, 0, "requested_at"));
    if ((v = rmsync_db_get(r, 0, "done_at")) != NULL) {
        cJSON_AddStringToObject(o, "done_at", v);
    }
    if (result && *result && (res = cJSON_Parse(result)) != NULL) {
        cJSON_AddItemToObject(o, "result", res);
    }
    if (!strcmp(state, "done")) {
        status = 200;
    }
    else if (strcmp(state, "failed") && strcmp(rmsync_db_get(r, 0, "rep_syncing"), "t")) {
        /* the runner only works for syncing representatives: say why it waits */
        cJSON_AddStringToObject(o, "error", "representative_not_syncing");
        cJSON_AddStringToObject(o, "message", "waits until the representative's calendar sync "
                                "is active again");
        status = 409;
    }
    else if (!strcmp(state, "failed")) {
        const cJSON *st = res ? cJSON_GetObjectItemCaseSensitive(res, "status") : NULL;
        status = (cJSON_IsNumber(st) && st->valueint >= 400 && st->valueint < 600)
                 ? st->valueint : 500;
    }
    *pjson = rmsync_json_print(p, o);
    return status;
}
