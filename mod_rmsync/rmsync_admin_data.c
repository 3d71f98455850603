/* mod_rmsync: admin page data. PostgreSQL (the truth) and the shm snapshot (the live view)
 * read into cJSON trees, which the JSON API prints and the HTML pages render, so both always
 * show the same thing. Reads only; parameterised queries only. */
#include <stdio.h>
#include <string.h>
#include "httpd.h"
#include "http_log.h"
#include "apr_strings.h"
#include "apr_lib.h"
#include "rmsync.h"
#include "rmsync_html.h"
#include "rmsync_admin.h"

APLOG_USE_MODULE(rmsync);

#define ISO(x) "to_char((" x ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define AGE(x) "floor(extract(epoch FROM now() - (" x ")))::bigint"

static apr_status_t clear_result(void *res)
{
    PQclear(res);
    return APR_SUCCESS;
}

PGresult *rmsync_admin_query(rmsync_admin_t *a, const char *sql, int n, const char *const *v)
{
    PGconn *db = rmsync_admin_db(a);
    PGresult *res;
    ExecStatusType st;

    if (!db) {
        return NULL;
    }
    res = PQexecParams(db, sql, n, NULL, v, NULL, NULL, 0);
    st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(db);
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, a->r, RMSYNC_LOGNO(00701)
                      "admin query failed: %s", msg && *msg ? msg : "(no message)");
        a->db_error = apr_pstrdup(a->r->pool, msg && *msg ? msg : "query failed");
        if (res) {
            PQclear(res);
        }
        return NULL;
    }
    apr_pool_cleanup_register(a->r->pool, res, clear_result, apr_pool_cleanup_null);
    return res;
}

/* cJSON value of column c in row i by its type letter: s string, i integer, b boolean,
 * n integer-or-null (same as i). NULL -> JSON null. */
static void add_col(cJSON *o, const char *name, PGresult *res, int i, int c, char type)
{
    const char *v;

    if (PQgetisnull(res, i, c)) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    v = PQgetvalue(res, i, c);
    switch (type) {
    case 'b':
        cJSON_AddBoolToObject(o, name, *v == 't');
        break;
    case 'i':
        cJSON_AddNumberToObject(o, name, (double)apr_atoi64(v));
        break;
    default:
        cJSON_AddStringToObject(o, name, v);
    }
}

/* Rows of res as an array of objects; spec is "name:type,name:type,..." in column order. */
static cJSON *rows_json(apr_pool_t *p, PGresult *res, const char *spec)
{
    cJSON *arr = cJSON_CreateArray();
    int i, ncols = PQnfields(res);

    for (i = 0; i < PQntuples(res); i++) {
        cJSON *o = cJSON_CreateObject();
        char *sp = apr_pstrdup(p, spec), *last, *tok;
        int c = 0;

        for (tok = apr_strtok(sp, ",", &last); tok && c < ncols;
             tok = apr_strtok(NULL, ",", &last), c++) {
            char *colon = strchr(tok, ':');
            char type = 's';
            if (colon) {
                *colon = '\0';
                type = colon[1];
            }
            add_col(o, tok, res, i, c, type);
        }
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static const char *delete_policy_name(rmsync_delete_policy_e d)
{
    return d == RMSYNC_DELETE_CANCEL ? "cancel" : d == RMSYNC_DELETE_UNLINK ? "unlink" : "delete";
}

static void add_str(cJSON *o, const char *name, const char *v)
{
    if (v) {
        cJSON_AddStringToObject(o, name, v);
    }
    else {
        cJSON_AddNullToObject(o, name);
    }
}

/* The effective settings; the client secret is never shown, only whether one is set. */
static cJSON *settings_json(rmsync_admin_t *a)
{
    const rmsync_settings_t *s = a->s;
    cJSON *o = cJSON_CreateObject();

    add_str(o, "tenant", s->tenant);
    add_str(o, "client_id", s->client_id);
    cJSON_AddBoolToObject(o, "client_secret_set", s->client_secret && *s->client_secret);
    add_str(o, "authority_url", s->authority_url);
    add_str(o, "graph_url", s->graph_url);
    add_str(o, "notification_url", s->notification_url);
    cJSON_AddNumberToObject(o, "sync_cycle_s", s->cycle_s);
    add_str(o, "initial_sync_from", s->initial_sync_from);
    cJSON_AddNumberToObject(o, "window_days", s->window_days);
    add_str(o, "delete_policy", delete_policy_name(s->delete_policy));
    add_str(o, "cancel_policy", s->cancel_policy == RMSYNC_CANCEL_DELETE ? "delete" : "cancel");
    cJSON_AddBoolToObject(o, "transfer_attendees", s->transfer_attendees);
    add_str(o, "category_name", s->category_name);
    add_str(o, "category_color", s->category_color);
    add_str(o, "permission_set", s->permission_set);
    add_str(o, "master_user", s->master_user);
    cJSON_AddNumberToObject(o, "mass_delete_limit_count", s->breaker_count);
    cJSON_AddNumberToObject(o, "mass_delete_limit_percent", s->breaker_percent);
    cJSON_AddBoolToObject(o, "admin_require_user", s->admin_require_user);
    return o;
}

apr_status_t rmsync_admin_config_data(rmsync_admin_t *a, cJSON *out)
{
    apr_pool_t *p = a->r->pool;
    PGresult *res;
    cJSON *m, *reps;
    int i;

    cJSON_AddItemToObject(out, "settings", settings_json(a));

    res = rmsync_admin_query(a, "SELECT identity, state FROM rmsync.master_user", 0, NULL);
    if (!res) {
        return APR_EGENERAL;
    }
    m = cJSON_AddObjectToObject(out, "master_user");
    if (PQntuples(res) == 1) {
        const char *who = PQgetisnull(res, 0, 0) ? "SYNC_MASTER" : PQgetvalue(res, 0, 0);
        const char *st = PQgetvalue(res, 0, 1);
        const char *todo = NULL;
        add_str(m, "identity", who);
        add_str(m, "state", st);
        if (!strcmp(st, "locked")) {
            todo = apr_psprintf(p, "%s is locked: run sql/manualdeploy/UpdateSyncMasterUser.sql, "
                                "then activate the user. Until then nothing is synced.", who);
        }
        else if (!strcmp(st, "inactive")) {
            todo = apr_psprintf(p, "%s is inactive: activate the user (sql/manualdeploy/"
                                "ActivateSyncMasterUser.sql or the CRM's user administration). "
                                "Until then nothing is synced.", who);
        }
        else if (!strcmp(st, "missing")) {
            todo = apr_psprintf(p, "The sync user %s does not exist: apply "
                                "sql/rmsync/rmsync_schema.sql (it creates the user), then unlock "
                                "and activate it.", who);
        }
        add_str(m, "todo", todo);
    }

    res = rmsync_admin_query(a, "SELECT running, " ISO("changed_at") ", changed_by"
                             " FROM rmsync.service_state WHERE id = 1", 0, NULL);
    if (!res) {
        return APR_EGENERAL;
    }
    if (PQntuples(res) == 1) {
        cJSON *sv = rows_json(p, res, "running:b,changed_at,changed_by");
        cJSON_AddItemToObject(out, "service", cJSON_DetachItemFromArray(sv, 0));
        cJSON_Delete(sv);
    }

    res = rmsync_admin_query(a,
        "SELECT count(*) FROM rmsync.request WHERE kind = 'initial_sync_all'"
        " AND state IN ('pending', 'processing')", 0, NULL);
    if (!res) {
        return APR_EGENERAL;
    }
    cJSON_AddBoolToObject(out, "initial_sync_all_pending", apr_atoi64(PQgetvalue(res, 0, 0)) > 0);

    res = rmsync_admin_query(a,
        "SELECT r.representative_id, r.name, r.mailbox, r.sync_active, r.user_enabled,"
        "  " ISO("r.last_success_at") ", " AGE("r.last_success_at") ","
        "  r.linked_count, r.last_error, " ISO("r.last_error_at") ","
        "  r.held_by_breaker, r.held_reason,"
        "  " ISO("sub.expires_at") ", floor(extract(epoch FROM sub.expires_at - now()))::bigint,"
        "  (SELECT count(*) FROM rmsync.request q WHERE q.representative_id = r.representative_id"
        "     AND q.kind = 'initial_sync' AND q.state IN ('pending', 'processing')) > 0,"
        "  (SELECT count(*) FROM rmsync.request q WHERE q.representative_id = r.representative_id"
        "     AND q.kind = 'approve' AND q.state IN ('pending', 'processing')) > 0,"
        "  r.round_kind, r.has_delta_link, r.category_state"
        " FROM rmsync.representatives r"
        " LEFT JOIN rmsync.subscription sub ON sub.representative_id = r.representative_id"
        " ORDER BY r.name, r.representative_id", 0, NULL);
    if (!res) {
        return APR_EGENERAL;
    }
    reps = rows_json(p, res,
        "representative_id,name,mailbox,sync_active:b,user_enabled:b,last_success_at,"
        "last_success_age_s:i,linked_count:i,last_error,last_error_at,held_by_breaker:b,"
        "held_reason,subscription_expires_at,subscription_expires_in_s:i,"
        "initial_sync_pending:b,approve_pending:b,round_kind,has_delta_link:b,category_state");
    /* live lag from the runner's shm slots */
    for (i = 0; i < cJSON_GetArraySize(reps); i++) {
        cJSON *o = cJSON_GetArrayItem(reps, i);
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(o, "representative_id"));
        apr_uint32_t k;
        int found = 0;

        for (k = 0; a->shm && id && k < a->shm->rep_count && k < a->shm->hdr.rep_capacity; k++) {
            const rmsync_shm_rep_t *sr = &a->shm->reps[k];
            if (!strcmp(sr->representative_id, id)) {
                cJSON_AddNumberToObject(o, "lag_ms", sr->lag_ms);
                cJSON_AddStringToObject(o, "live_state", rmsync_shm_rep_state_name(sr->state));
                found = 1;
                break;
            }
        }
        if (!found) {
            cJSON_AddNullToObject(o, "lag_ms");
            cJSON_AddNullToObject(o, "live_state");
        }
    }
    cJSON_AddItemToObject(out, "representatives", reps);
    return APR_SUCCESS;
}

/* "YYYY-MM-DD", "YYYY-MM-DDTHH:MM" or "YYYY-MM-DDTHH:MM:SS" ('T' or ' '), a real UTC time. */
static int valid_time(const char *s)
{
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    apr_size_t len = strlen(s), i;

    if (len != 10 && len != 16 && len != 19) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        char c = s[i];
        int want_digit = !(i == 4 || i == 7 || i == 10 || i == 13 || i == 16);
        if (want_digit ? !apr_isdigit(c)
            : !((i == 4 || i == 7) ? c == '-' : i == 10 ? (c == 'T' || c == ' ') : c == ':')) {
            return 0;
        }
    }
    n = sscanf(s, "%4d-%2d-%2d", &y, &mo, &d);
    if (n != 3) {
        return 0;
    }
    if (len >= 16) {
        h = (s[11] - '0') * 10 + (s[12] - '0');
        mi = (s[14] - '0') * 10 + (s[15] - '0');
    }
    if (len == 19) {
        sec = (s[17] - '0') * 10 + (s[18] - '0');
    }
    if (y < 1970 || y > 2999 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1]
        || h > 23 || mi > 59 || sec > 59) {
        return 0;
    }
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return 0;
    }
    return 1;
}

apr_status_t rmsync_admin_log_data(rmsync_admin_t *a, cJSON *out, const char **err)
{
    apr_pool_t *p = a->r->pool;
    const char *v[16];
    const char *where = "", *sql;
    const char *rep = apr_table_get(a->args, "rep");
    const char *level = apr_table_get(a->args, "level");
    const char *act = apr_table_get(a->args, "activity");
    const char *event = apr_table_get(a->args, "event");
    const char *action = apr_table_get(a->args, "action");
    const char *from = apr_table_get(a->args, "from");
    const char *to = apr_table_get(a->args, "to");
    const char *before = apr_table_get(a->args, "before");
    const char *after = apr_table_get(a->args, "after");
    const char *nstr = apr_table_get(a->args, "n");
    long long num, limit = RMSYNC_ADMIN_LOG_PAGE;
    int n = 0, newer_first, i, nrows;
    PGresult *res;
    cJSON *f, *rows, *reps;

    *err = NULL;
#define ADD_COND(cond, val) do { v[n++] = (val); \
        where = apr_psprintf(p, "%s AND " cond, where, n); } while (0)
    if (rep && *rep) {
        if (strlen(rep) > 64) { *err = "rep: too long"; return APR_EINVAL; }
        ADD_COND("l.representative_id = $%d", rep);
    }
    if (level && *level) {
        if (strcmp(level, "error") && strcmp(level, "warning") && strcmp(level, "info")
            && strcmp(level, "debug")) {
            *err = "level: must be error, warning, info or debug";
            return APR_EINVAL;
        }
        ADD_COND("l.level = $%d", level);
    }
    if (act && *act) {
        if (!rmsync_parse_int64(act, 0, APR_INT64_MAX, &num)) {
            *err = "activity: not an activity number";
            return APR_EINVAL;
        }
        ADD_COND("l.activity_no = $%d::bigint", act);
    }
    if (event && *event) {
        if (strlen(event) > 512) { *err = "event: too long"; return APR_EINVAL; }
        ADD_COND("l.event_id = $%d", event);
    }
    if (action && *action) {
        if (strlen(action) > 64) { *err = "action: too long"; return APR_EINVAL; }
        ADD_COND("l.action = $%d", action);
    }
    if (from && *from) {
        if (!valid_time(from)) {
            *err = "from: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)";
            return APR_EINVAL;
        }
        ADD_COND("l.at >= ($%d::timestamp AT TIME ZONE 'UTC')", from);
    }
    if (to && *to) {
        if (!valid_time(to)) {
            *err = "to: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)";
            return APR_EINVAL;
        }
        /* a bare date means the whole day */
        if (strlen(to) == 10) {
            ADD_COND("l.at < ($%d::timestamp AT TIME ZONE 'UTC') + interval '1 day'", to);
        }
        else {
            ADD_COND("l.at <= ($%d::timestamp AT TIME ZONE 'UTC')", to);
        }
    }
    if (nstr && *nstr) {
        if (!rmsync_parse_int64(nstr, 1, RMSYNC_ADMIN_LOG_MAX, &limit)) {
            *err = apr_psprintf(p, "n: a number from 1 to %d", RMSYNC_ADMIN_LOG_MAX);
            return APR_EINVAL;
        }
    }
    if (before && *before && after && *after) {
        *err = "before and after: use one of them";
        return APR_EINVAL;
    }
    newer_first = 1;
    if (before && *before) {
        if (!rmsync_parse_int64(before, 1, APR_INT64_MAX, &num)) {
            *err = "before: not a log id";
            return APR_EINVAL;
        }
        ADD_COND("l.id < $%d::bigint", before);
    }
    else if (after && *after) {
        if (!rmsync_parse_int64(after, 0, APR_INT64_MAX, &num)) {
            *err = "after: not a log id";
            return APR_EINVAL;
        }
        ADD_COND("l.id > $%d::bigint", after);
        newer_first = 0;        /* the page just above "after": oldest first, then reversed */
    }
#undef ADD_COND

    sql = apr_psprintf(p,
        "SELECT l.id, " ISO("l.at") ", l.level, l.representative_id, rep.name, l.activity_no,"
        "  l.event_id, l.action, l.message, l.graph_request_id,"
        "  (l.activity_no IS NOT NULL AND EXISTS (SELECT 1 FROM rmsync.event_link k"
        "     WHERE k.activity_no = l.activity_no)) AS linked"
        " FROM rmsync.sync_log l"
        " LEFT JOIN crm.business_representative rep ON rep.representative_id = l.representative_id"
        " WHERE true%s ORDER BY l.id %s LIMIT %d",
        where, newer_first ? "DESC" : "ASC", (int)limit + 1);
    res = rmsync_admin_query(a, sql, n, v);
    if (!res) {
        return APR_EGENERAL;
    }
    rows = rows_json(p, res, "id:i,at,level,representative_id,representative_name,"
                             "activity_no:i,event_id,action,message,graph_request_id,linked:b");
    nrows = cJSON_GetArraySize(rows);
    if (nrows > limit) {
        /* one more than a page: there is more in the direction we read */
        cJSON_DeleteItemFromArray(rows, nrows - 1);
        nrows--;
    }
    if (!newer_first) {
        cJSON *rev = cJSON_CreateArray();
        while (cJSON_GetArraySize(rows) > 0) {
            cJSON_AddItemToArray(rev, cJSON_DetachItemFromArray(rows,
                                                                cJSON_GetArraySize(rows) - 1));
        }
        cJSON_Delete(rows);
        rows = rev;
    }
    for (i = 0; i < nrows; i++) {
        cJSON *o = cJSON_GetArrayItem(rows, i);
        int has_rep = cJSON_IsString(cJSON_GetObjectItem(o, "representative_id"));
        int has_evt = cJSON_IsString(cJSON_GetObjectItem(o, "event_id"));
        int has_act = cJSON_IsNumber(cJSON_GetObjectItem(o, "activity_no"));
        cJSON_AddBoolToObject(o, "can_retry", has_rep && (has_evt || has_act));
        cJSON_AddBoolToObject(o, "can_unlink",
                              cJSON_IsTrue(cJSON_GetObjectItem(o, "linked")));
    }

    f = cJSON_AddObjectToObject(out, "filter");
    add_str(f, "rep", rep && *rep ? rep : NULL);
    add_str(f, "level", level && *level ? level : NULL);
    add_str(f, "activity", act && *act ? act : NULL);
    add_str(f, "event", event && *event ? event : NULL);
    add_str(f, "action", action && *action ? action : NULL);
    add_str(f, "from", from && *from ? from : NULL);
    add_str(f, "to", to && *to ? to : NULL);
    cJSON_AddNumberToObject(out, "page_size", (double)limit);
    cJSON_AddItemToObject(out, "rows", rows);

    /* Is there anything newer / older than this page (same filter)? */
    if (nrows > 0) {
        const char *newest = apr_psprintf(p, "%.0f", cJSON_GetNumberValue(
            cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0), "id")));
        const char *oldest = apr_psprintf(p, "%.0f", cJSON_GetNumberValue(
            cJSON_GetObjectItem(cJSON_GetArrayItem(rows, nrows - 1), "id")));
        int base_n = n - ((before && *before) || (after && *after) ? 1 : 0);
        const char *bw = where;
        /* drop the paging condition (always the last one added) */
        if (base_n != n) {
            const char *cut = strstr(where, (before && *before) ? " AND l.id < $" : " AND l.id > $");
            bw = apr_pstrmemdup(p, where, (apr_size_t)(cut - where));
        }
        for (i = 0; i < 2; i++) {
            const char *vv[16];
            int k;
            for (k = 0; k < base_n; k++) vv[k] = v[k];
            vv[base_n] = i == 0 ? newest : oldest;
            res = rmsync_admin_query(a, apr_psprintf(p,
                "SELECT EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE true%s AND l.id %s $%d::bigint)",
                bw, i == 0 ? ">" : "<", base_n + 1), base_n + 1, vv);
            if (!res) {
                return APR_EGENERAL;
            }
            cJSON_AddBoolToObject(out, i == 0 ? "has_newer" : "has_older",
                                  *PQgetvalue(res, 0, 0) == 't');
        }
        cJSON_AddNumberToObject(out, "newest_id", apr_atoi64(newest));
        cJSON_AddNumberToObject(out, "oldest_id", apr_atoi64(oldest));
    }
    else {
        cJSON_AddBoolToObject(out, "has_newer", 0);
        cJSON_AddBoolToObject(out, "has_older", 0);
    }

    res = rmsync_admin_query(a, "SELECT representative_id, name FROM crm.business_representative"
                                " ORDER BY name, representative_id", 0, NULL);
    if (!res) {
        return APR_EGENERAL;
    }
    reps = rows_json(p, res, "representative_id,name");
    cJSON_AddItemToObject(out, "representatives", reps);
    return APR_SUCCESS;
}
