/* mod_rmsync: runs in the Apache worker processes (the admin handler). The admin pages' data:
 * PostgreSQL (the truth) and the shm snapshot (the live view) read into cJSON trees, which the
 * JSON API prints and the HTML pages render, so both always show the same thing. Reads only;
 * parameterised queries only. */
#include <stddef.h>
#include <string.h>
#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "apr_strings.h"
#include "apr_lib.h"
#include "apr_atomic.h"
#include "apr_hash.h"
#include "rmsync.h"
#include "rmsync_html.h"
#include "mod_rmsync_admin.h"
#include "rmsync_form.h"
#include "rmsync_timefmt.h"
#include "rmsync_engine.h"
#include "rmsync_escape.h"
#include "rmsync_errors.h"

APLOG_USE_MODULE(rmsync);

#define ISO(x) "to_char((" x ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
#define AGE(x) "floor(extract(epoch FROM now() - (" x ")))::bigint"

/* Optional filters of the log page: $1 rep, $2 level (exactly), $3 activity, $4 event id,
 * $5 action, $6 from, $7 to ("to" as a bare date means the whole day, "HH:MM" the whole
 * minute), $10 levels (the minimum level and above, a text[]), $11 text (an ILIKE pattern over
 * the message, % and _ escaped), $12 the admin's time zone (validated against
 * pg_timezone_names): from/to are times in that zone. $8 is the paging id, $9 the limit. */
#define LOG_FILTER LOG_FILTER_MSG("l.message")
#define LOG_FILTER_MSG(msg) \
    " ($1::text IS NULL OR l.representative_id = $1)" \
    " AND ($2::text IS NULL OR l.level = $2)" \
    " AND ($3::bigint IS NULL OR l.activity_no = $3)" \
    " AND ($4::text IS NULL OR l.event_id = $4)" \
    " AND ($5::text IS NULL OR l.action = $5)" \
    " AND ($6::text IS NULL OR l.at >= ($6::timestamp AT TIME ZONE $12::text))" \
    " AND ($7::text IS NULL OR l.at < (($7::timestamp" \
    "      + CASE length($7) WHEN 10 THEN interval '1 day' WHEN 16 THEN interval '1 minute'" \
    "        ELSE interval '1 second' END) AT TIME ZONE $12::text))" \
    " AND ($10::text[] IS NULL OR l.level = ANY ($10::text[]))" \
    " AND ($11::text IS NULL OR " msg " ILIKE $11)"
/* repeat_count / first_at come with the repeated-error aggregation; to_jsonb() reads them
 * when the columns exist and gives NULL before. The page's ids are chosen first (filter, order,
 * limit) and only those rows are joined and formatted: formatting every row of a range before
 * the sort would cost more than the search. */
#define LOG_PAGE(cond, order, outer) LOG_PAGE_F(LOG_FILTER, cond, order, outer)
#define LOG_PAGE_F(filter, cond, order, outer) \
    "SELECT l.id, " ISO("l.at") ", l.level, l.representative_id, rep.name, l.activity_no," \
    "  l.event_id, l.action, l.message, l.graph_request_id," \
    "  (l.activity_no IS NOT NULL AND EXISTS (SELECT 1 FROM rmsync.event_link k" \
    "     WHERE k.activity_no = l.activity_no)) AS linked," \
    "  to_char(l.at AT TIME ZONE $12::text, 'YYYY-MM-DD HH24:MI:SS')," \
    "  (to_jsonb(l) ->> 'repeat_count')::bigint, to_jsonb(l) ->> 'first_at'" \
    " FROM (SELECT l.id FROM rmsync.sync_log l WHERE" filter cond \
    "       ORDER BY " order " LIMIT $9) s" \
    " JOIN rmsync.sync_log l ON l.id = s.id" \
    " LEFT JOIN crm.business_representative rep ON rep.representative_id = l.representative_id" \
    " ORDER BY l.id " outer
/* Text search, newest first, in steps. The planner sees how often a word occurs, not where:
 * for a word frequent in old rows only it walks the primary key back from the newest row
 * across everything newer (0.3-0.9 s at a million rows); and a trigram index scan costs
 * 60-80 ms for a phrase whose every word is in every row. So windows of ids below the cursor
 * are read in id order first (message || '' keeps the trigram index out: ~0.5 ms per 1,000
 * rows; enough for a word common lately), and only the rest of a page is searched below them,
 * kept off the primary key's order (l.id + 0) so that the trigram index finds the matches
 * wherever they are. $13 ids already read below the cursor, $14 the window's size. */
#define LOG_TOP "coalesce($8::bigint, (SELECT max(m.id) + 1 FROM rmsync.sync_log m))"
#define LOG_WINDOW 2000        /* ids read first (~1 ms) */
#define LOG_WINDOW_MORE 100000 /* read next when the first window's matches promise a page */
#define LOG_SPEC "id:i,at,level,representative_id,representative_name,activity_no:i,event_id," \
                 "action,message,graph_request_id,linked:b,at_local,repeat_count:i,first_at"

#define REPS_MATCH "($1::text IS NULL OR v.name ILIKE $1 OR v.representative_id ILIKE $1" \
                   " OR v.mailbox ILIKE $1)"

static const rmsync_db_stmt_t stmts[] = {
    { "admin_master", "SELECT identity, state FROM rmsync.master_user", 0 },
    { "admin_service", "SELECT running, " ISO("changed_at") ", changed_by"
                       " FROM rmsync.service_state WHERE id = 1", 0 },
    { "admin_isa_pending", "SELECT count(*) FROM rmsync.request WHERE kind = 'initial_sync_all'"
                           " AND state IN ('pending', 'processing')", 0 },
    /* the configuration page: one page of representatives ($1 an ILIKE pattern over name, id
     * and mailbox or NULL, $2 the page size, $3 the offset, past the end: the last page) and
     * the totals, from one read of the view; the page's ids are chosen first (the view's
     * per-row counts and the subqueries run for the page only), then joined. A row with a
     * NULL id carries the totals when no representative matches. */
    { "admin_reps",
      "WITH m AS MATERIALIZED (SELECT v.representative_id, v.name, v.sync_active,"
      "   v.category_state FROM rmsync.representatives v WHERE " REPS_MATCH "),"
      " t AS (SELECT count(*) AS n, count(*) FILTER (WHERE m.sync_active) AS act,"
      "   count(*) FILTER (WHERE m.sync_active AND m.category_state = 'forbidden') AS forb"
      "   FROM m),"
      " pg AS MATERIALIZED (SELECT m.representative_id, m.name FROM m"
      "   ORDER BY m.name, m.representative_id LIMIT $2::int"
      "   OFFSET least($3::int, (SELECT greatest(t.n - 1, 0) / $2::int * $2::int FROM t)))"
      "SELECT r.representative_id, r.name, r.mailbox, r.sync_active, r.user_enabled,"
      "  " ISO("r.last_success_at") ", " AGE("r.last_success_at") ","
      "  r.linked_count, r.last_error, " ISO("r.last_error_at") ","
      "  r.held_by_breaker, r.held_reason,"
      "  " ISO("sub.expires_at") ", floor(extract(epoch FROM sub.expires_at - now()))::bigint,"
      "  EXISTS (SELECT 1 FROM rmsync.request q WHERE q.representative_id = r.representative_id"
      "     AND q.kind = 'initial_sync' AND q.state IN ('pending', 'processing')),"
      "  EXISTS (SELECT 1 FROM rmsync.request q WHERE q.representative_id = r.representative_id"
      "     AND q.kind IN ('approve', 'reject') AND q.state IN ('pending', 'processing')),"
      "  r.round_kind, r.has_delta_link, r.category_state, t.n, t.act, t.forb"
      " FROM t LEFT JOIN (pg CROSS JOIN LATERAL"
      /* OFFSET 0: the view is read per page row by its id (an index lookup), not whole */
      "   (SELECT * FROM rmsync.representatives v"
      "     WHERE v.representative_id = pg.representative_id OFFSET 0) r"
      "   LEFT JOIN rmsync.subscription sub ON sub.representative_id = r.representative_id)"
      "  ON true"
      " ORDER BY pg.name, pg.representative_id", 3 },
    { "admin_log_page", LOG_PAGE(" AND ($8::bigint IS NULL OR l.id < $8)", "l.id DESC", "DESC"),
      12 },
    { "admin_log_page_after", LOG_PAGE(" AND l.id > $8", "l.id ASC", "ASC"), 12 },
    /* Is there more on the other side of a page read from a cursor? The page's own query
     * (one row more than a page) answers for the direction it read. The cursor row itself
     * (the edge of the page the link came from) answers at once through the primary key; only
     * when it no longer matches (purged, or a hand-made link) is the filter searched again:
     * a second trigram search would double the cost of a rare-word page. OR evaluates the
     * second InitPlan only when the first is false. $8 newest shown / the after= cursor,
     * $9 the before= cursor / oldest shown. */
    { "admin_log_newer",
      "SELECT EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE l.id = $9::bigint AND" LOG_FILTER ")"
      " OR EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE" LOG_FILTER " AND l.id > $8)", 12 },
    { "admin_log_older",
      "SELECT EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE l.id = $8 AND" LOG_FILTER ")"
      " OR EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE" LOG_FILTER " AND l.id < $9::bigint)",
      12 },
    { "admin_log_search_window",
      LOG_PAGE_F(LOG_FILTER_MSG("(l.message || '')"), " AND l.id < " LOG_TOP " - $13::bigint"
                 " AND l.id >= " LOG_TOP " - $13::bigint - $14::bigint", "l.id DESC", "DESC"),
      14 },
    { "admin_log_search_older",
      LOG_PAGE(" AND l.id + 0 < " LOG_TOP " - $13::bigint", "l.id + 0 DESC", "DESC"), 13 },
    /* from AND to: the same, read through the time index (l.id + 0 keeps the planner off the
     * primary key, whose backward walk would cross every newer row before the range) */
    { "admin_log_page_range",
      LOG_PAGE(" AND ($8::bigint IS NULL OR l.id + 0 < $8)", "l.id + 0 DESC", "DESC"), 12 },
    { "admin_log_page_after_range", LOG_PAGE(" AND l.id + 0 > $8", "l.id + 0 ASC", "ASC"), 12 },
    { "admin_log_newer_range",
      "SELECT EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE l.id = $9::bigint AND" LOG_FILTER ")"
      " OR EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE" LOG_FILTER " AND l.id + 0 > $8)",
      12 },
    { "admin_log_older_range",
      "SELECT EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE l.id = $8 AND" LOG_FILTER ")"
      " OR EXISTS (SELECT 1 FROM rmsync.sync_log l WHERE" LOG_FILTER
      " AND l.id + 0 < $9::bigint)", 12 },
    /* a zone name PostgreSQL knows (the page's tz= or the cookie, never trusted raw) */
    { "admin_test_request",
      "SELECT q.id, q.kind, q.representative_id, q.state, " ISO("q.requested_at") ","
      "  " AGE("q.requested_at") ", " ISO("q.done_at") ", q.result FROM rmsync.request q"
      " WHERE q.id = $1::bigint AND q.kind IN ('test_connection', 'test_mailbox')", 1 },
    { "admin_tz_names", "SELECT name FROM pg_timezone_names", 0 },
    { "admin_requests",
      "SELECT q.id, q.kind, q.representative_id, q.activity_no, q.requested_by,"
      "  " ISO("q.requested_at") ", " AGE("q.requested_at") ", q.state, " ISO("q.done_at") ","
      "  q.result FROM rmsync.request q ORDER BY q.id DESC LIMIT 10", 0 },
    /* every node's runner (rmsync.node heartbeat rows); stale: three beats missed */
    { "admin_nodes",
      "SELECT node_id, pid, " ISO("started_at") ", " ISO("last_beat") ", "
      "  floor(extract(epoch FROM now() - last_beat))::bigint, state, working_on,"
      "  last_beat < now() - make_interval(secs => $1::int)"
      " FROM rmsync.node ORDER BY node_id", 1 },
    { "admin_rep_names", "SELECT representative_id, name FROM crm.business_representative"
                         " ORDER BY name, representative_id LIMIT $1::int", 1 },
};

apr_status_t rmsync_admin_register_statements(void)
{
    return rmsync_db_register(stmts, (int)(sizeof(stmts) / sizeof(stmts[0])));
}

rmsync_db_result_t *rmsync_admin_query(rmsync_admin_t *a, const char *name,
                                       const char *const *params)
{
    rmsync_db_t *db = rmsync_admin_db(a);
    rmsync_db_result_t *res = NULL;
    apr_status_t rv;

    if (!db) {
        return NULL;
    }
    rv = rmsync_db_exec(db, a->r->pool, name, params, &res);
    if (rv != APR_SUCCESS) {
        if (RMSYNC_DB_IS_DOWN(rv)) {
            a->db_error = "database unavailable";
        }
        else {
            a->db_error = apr_pstrdup(a->r->pool, rmsync_db_errmsg(db));
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, a->r, RMSYNC_LOGNO(00701)
                          "admin statement %s failed: [%s] %s", name, rmsync_db_sqlstate(db),
                          rmsync_db_errmsg(db));
        }
        return NULL;
    }
    return res;
}

/* cJSON value of one column by its type letter: s string, i integer, b boolean; NULL -> null. */
static void add_col(cJSON *o, const char *name, const char *v, char type)
{
    if (!v) {
        cJSON_AddNullToObject(o, name);
        return;
    }
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
static cJSON *rows_json(apr_pool_t *p, const rmsync_db_result_t *res, const char *spec)
{
    cJSON *arr = cJSON_CreateArray();
    int i;

    for (i = 0; i < res->nrows; i++) {
        cJSON *o = cJSON_CreateObject();
        char *sp = apr_pstrdup(p, spec), *last, *tok;
        int c = 0;

        for (tok = apr_strtok(sp, ",", &last); tok && c < res->ncols;
             tok = apr_strtok(NULL, ",", &last), c++) {
            char *colon = strchr(tok, ':');
            char type = 's';
            if (colon) {
                *colon = '\0';
                type = colon[1];
            }
            add_col(o, tok, rmsync_db_value(res, i, c), type);
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
    add_col(o, name, v, 's');
}

/* The effective settings shown as they are: JSON key, type (s string, i number, b boolean)
 * and the field of rmsync_settings_t, in the page's order. */
static const struct {
    const char *name;
    char type;
    apr_size_t off;
} settings_fields[] = {
    { "tenant", 's', offsetof(rmsync_settings_t, tenant) },
    { "client_id", 's', offsetof(rmsync_settings_t, client_id) },
    { "authority_url", 's', offsetof(rmsync_settings_t, authority_url) },
    { "graph_url", 's', offsetof(rmsync_settings_t, graph_url) },
    { "notification_url", 's', offsetof(rmsync_settings_t, notification_url) },
    { "sync_cycle_s", 'i', offsetof(rmsync_settings_t, cycle_s) },
    { "initial_sync_from", 's', offsetof(rmsync_settings_t, initial_sync_from) },
    { "window_days", 'i', offsetof(rmsync_settings_t, window_days) },
    { "transfer_attendees", 'b', offsetof(rmsync_settings_t, transfer_attendees) },
    { "category_name", 's', offsetof(rmsync_settings_t, category_name) },
    { "category_color", 's', offsetof(rmsync_settings_t, category_color) },
    { "permission_set", 's', offsetof(rmsync_settings_t, permission_set) },
    { "master_user", 's', offsetof(rmsync_settings_t, master_user) },
    { "mass_delete_limit_count", 'i', offsetof(rmsync_settings_t, breaker_count) },
    { "mass_delete_limit_percent", 'i', offsetof(rmsync_settings_t, breaker_percent) },
    { "delete_settle_s", 'i', offsetof(rmsync_settings_t, delete_settle_s) },
    { "mass_delete_window_s", 'i', offsetof(rmsync_settings_t, breaker_window_s) },
    { "admin_require_user", 'b', offsetof(rmsync_settings_t, admin_require_user) },
    { "log_retention_days", 'i', offsetof(rmsync_settings_t, log_retention_days) },
};

/* The effective settings; the client secret is never shown, only whether one is set. */
static cJSON *settings_json(rmsync_admin_t *a)
{
    const rmsync_settings_t *s = a->s;
    cJSON *o = cJSON_CreateObject();
    apr_size_t i;

    for (i = 0; i < sizeof(settings_fields) / sizeof(settings_fields[0]); i++) {
        const char *f = (const char *)s + settings_fields[i].off;
        if (settings_fields[i].type == 's') {
            add_str(o, settings_fields[i].name, *(const char *const *)(const void *)f);
        }
        else if (settings_fields[i].type == 'b') {
            cJSON_AddBoolToObject(o, settings_fields[i].name, *(const int *)(const void *)f);
        }
        else {
            cJSON_AddNumberToObject(o, settings_fields[i].name, *(const int *)(const void *)f);
        }
    }
    /* the derived ones */
    cJSON_AddBoolToObject(o, "client_secret_set", s->client_secret && *s->client_secret);
    add_str(o, "delete_policy", delete_policy_name(s->delete_policy));
    add_str(o, "cancel_policy", s->cancel_policy == RMSYNC_CANCEL_DELETE ? "delete" : "cancel");
    return o;
}

/* rmsync.rep_state.category_state as the page says it. */
static const char *category_label(const char *state)
{
    return !state ? "unknown" : !strcmp(state, "created") ? "ok"
           : !strcmp(state, "forbidden") ? "forbidden" : "not yet";
}

/* One page of representatives (?q= search, ?page=), their live slots, and "paging". */
static apr_status_t reps_page(rmsync_admin_t *a, cJSON *out, cJSON **preps)
{
    apr_pool_t *p = a->r->pool;
    const char *q = apr_table_get(a->args, "q"), *pat, *pg = apr_table_get(a->args, "page");
    long long page = 1, total, pages;
    rmsync_db_result_t *res;
    apr_array_header_t *ids;
    apr_hash_t *live = apr_hash_make(p);
    const rmsync_shm_t *snap;
    cJSON *reps, *o, *paging;
    apr_uint32_t k;

    if (pg && *pg && !rmsync_parse_int64(pg, 1, 1000000, &page)) {
        return APR_EINVAL;
    }
    if (q && strlen(q) > RMSYNC_ADMIN_LOG_Q_MAX) {
        return APR_EINVAL;
    }
    q = q && *q ? q : NULL;
    pat = q ? apr_pstrcat(p, "%", rmsync_like_escape(p, q), "%", NULL) : NULL;
    if (!(res = rmsync_admin_query(a, "admin_reps", RMSYNC_DB_PARAMS(pat,
              apr_itoa(p, RMSYNC_ADMIN_REPS_PAGE),
              apr_off_t_toa(p, (apr_off_t)((page - 1) * RMSYNC_ADMIN_REPS_PAGE)))))) {
        return APR_EGENERAL;
    }
    reps = rows_json(p, res,
        "representative_id,name,mailbox,sync_active:b,user_enabled:b,last_success_at,"
        "last_success_age_s:i,linked_count:i,last_error,last_error_at,held_by_breaker:b,"
        "held_reason,subscription_expires_at,subscription_expires_in_s:i,"
        "initial_sync_pending:b,approve_pending:b,round_kind,has_delta_link:b,category_state");
    *preps = reps;
    /* the totals: the last three columns of every row (one row at least) */
    total = res->nrows ? apr_atoi64(rmsync_db_value(res, 0, 19)) : 0;
    pages = total ? (total + RMSYNC_ADMIN_REPS_PAGE - 1) / RMSYNC_ADMIN_REPS_PAGE : 1;
    if (page > pages) {
        page = pages;       /* past the end (e.g. after a search): the last page, as the SQL */
    }
    if (cJSON_GetArraySize(reps) == 1 && !rmsync_db_value(res, 0, 0)) {
        cJSON_DeleteItemFromArray(reps, 0);        /* nothing matches: only the totals */
    }
    paging = cJSON_AddObjectToObject(out, "paging");
    cJSON_AddNumberToObject(paging, "total", (double)total);
    cJSON_AddNumberToObject(paging, "sync_active", res->nrows
                            ? (double)apr_atoi64(rmsync_db_value(res, 0, 20)) : 0);
    cJSON_AddNumberToObject(paging, "categories_forbidden", res->nrows
                            ? (double)apr_atoi64(rmsync_db_value(res, 0, 21)) : 0);
    cJSON_AddNumberToObject(paging, "page", (double)page);
    cJSON_AddNumberToObject(paging, "pages", (double)pages);
    cJSON_AddNumberToObject(paging, "per_page", RMSYNC_ADMIN_REPS_PAGE);
    add_str(paging, "q", q);

    ids = apr_array_make(p, RMSYNC_ADMIN_REPS_PAGE, sizeof(const char *));
    cJSON_ArrayForEach(o, reps) {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(o, "representative_id"));
        if (id) {
            *(const char **)apr_array_push(ids) = id;
        }
    }
    /* live lag and state from the runner's slots: only this page's are copied */
    snap = rmsync_admin_snapshot(a, 0, (const char *const *)(void *)ids->elts, ids->nelts);
    for (k = 0; snap && k < snap->rep_count; k++) {
        apr_hash_set(live, snap->reps[k].representative_id, APR_HASH_KEY_STRING, &snap->reps[k]);
    }
    cJSON_ArrayForEach(o, reps) {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(o, "representative_id"));
        const rmsync_shm_rep_t *sr = id ? apr_hash_get(live, id, APR_HASH_KEY_STRING) : NULL;
        const char *cs = cJSON_GetStringValue(cJSON_GetObjectItem(o, "category_state"));

        if (sr) {
            cJSON_AddNumberToObject(o, "lag_ms", sr->lag_ms);
            cJSON_AddStringToObject(o, "live_state", rmsync_shm_rep_state_name(sr->state));
        }
        else {
            cJSON_AddNullToObject(o, "lag_ms");
            cJSON_AddNullToObject(o, "live_state");
        }
        /* the master category in the mailbox, for people: ok / forbidden (with the fix) /
         * not yet (a failed attempt stays "not yet" and is retried by the next job) */
        cJSON_AddStringToObject(o, "category",
            cJSON_IsTrue(cJSON_GetObjectItem(o, "sync_active")) || (cs && strcmp(cs, "unknown"))
            ? category_label(cs) : "not synced");
        if (cs && !strcmp(cs, "forbidden")) {
            const rmsync_error_class_t *c = rmsync_error_by_code("categories_forbidden");
            cJSON_AddStringToObject(o, "category_fix", c ? c->fix : "");
        }
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_admin_config_data(rmsync_admin_t *a, cJSON *out)
{
    apr_pool_t *p = a->r->pool;
    rmsync_db_result_t *res;
    cJSON *m, *reps = NULL;
    apr_status_t rv;

    cJSON_AddItemToObject(out, "settings", settings_json(a));

    if (!(res = rmsync_admin_query(a, "admin_master", RMSYNC_DB_NOPARAMS))) {
        return APR_EGENERAL;
    }
    m = cJSON_AddObjectToObject(out, "master_user");
    if (res->nrows == 1) {
        const char *who = rmsync_db_value(res, 0, 0) ? rmsync_db_value(res, 0, 0) : "SYNC_MASTER";
        const char *st = rmsync_db_value(res, 0, 1) ? rmsync_db_value(res, 0, 1) : "missing";
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

    if (!(res = rmsync_admin_query(a, "admin_service", RMSYNC_DB_NOPARAMS))) {
        return APR_EGENERAL;
    }
    if (res->nrows == 1) {
        cJSON *sv = rows_json(p, res, "running:b,changed_at,changed_by");
        cJSON_AddItemToObject(out, "service", cJSON_DetachItemFromArray(sv, 0));
        cJSON_Delete(sv);
    }

    if (!(res = rmsync_admin_query(a, "admin_isa_pending", RMSYNC_DB_NOPARAMS))) {
        return APR_EGENERAL;
    }
    cJSON_AddBoolToObject(out, "initial_sync_all_pending",
                          apr_atoi64(rmsync_db_value(res, 0, 0)) > 0);

    if ((rv = reps_page(a, out, &reps)) != APR_SUCCESS) {
        return rv;
    }
    cJSON_AddItemToObject(out, "representatives", reps);

    /* the latest admin requests and what the runner made of them */
    if (!(res = rmsync_admin_query(a, "admin_requests", RMSYNC_DB_NOPARAMS))) {
        return APR_EGENERAL;
    }
    cJSON_AddItemToObject(out, "requests", rows_json(p, res,
        "id:i,kind,representative_id,activity_no:i,requested_by,requested_at,age_s:i,state,"
        "done_at,result"));
    return APR_SUCCESS;
}

void rmsync_admin_nodes_data(rmsync_admin_t *a, cJSON *out)
{
    rmsync_db_result_t *res = rmsync_admin_query(a, "admin_nodes", RMSYNC_DB_PARAMS(
                                  apr_itoa(a->r->pool, RMSYNC_NODE_STALE_S)));
    if (!res) {
        /* the status page works without the database: the node list is then unknown */
        cJSON_AddNullToObject(out, "nodes");
        add_str(out, "nodes_error", a->db_error ? a->db_error : "database error");
        return;
    }
    cJSON_AddItemToObject(out, "nodes", rows_json(a->r->pool, res,
        "node_id,pid:i,started_at,last_beat,beat_age_s:i,state,working_on,stale:b"));
    cJSON_AddNumberToObject(out, "node_stale_after_s", RMSYNC_NODE_STALE_S);
}

/* The log page's filter arguments, echoed in its JSON "filter" object. */
static const char *const filter_args[] = { "rep", "level", "min_level", "q", "activity", "event",
                                           "action", "from", "to", NULL };

static const char *arg(rmsync_admin_t *a, const char *name)
{
    const char *v = apr_table_get(a->args, name);
    return v && *v ? v : NULL;
}

/* min_level -> the levels it includes (constants only: they go into $10 as a text[]). */
static const char *levels_from(const char *min)
{
    return !strcmp(min, "error") ? "{error}" : !strcmp(min, "warning") ? "{warning,error}"
           : !strcmp(min, "info") ? "{info,warning,error}" : NULL;
}

/* The zone names PostgreSQL knows, read once per process (pg_timezone_names takes tens of
 * ms, too slow for every request) and kept for the process's life. Built without a lock: a
 * thread that loses the race drops its copy. */
static volatile void *tz_names;

static int tz_known(rmsync_admin_t *a, const char *tz)
{
    apr_hash_t *h = apr_atomic_casptr(&tz_names, NULL, NULL);

    if (!rmsync_tz_name_ok(tz)) {
        return 0;
    }
    if (!strcmp(tz, "UTC")) {
        return 1;
    }
    if (!h) {
        rmsync_db_result_t *res = rmsync_admin_query(a, "admin_tz_names", RMSYNC_DB_NOPARAMS);
        apr_pool_t *tp;
        int i;

        if (!res || apr_pool_create(&tp, NULL) != APR_SUCCESS) {
            return -1;
        }
        apr_pool_tag(tp, "rmsync_tz_names");
        h = apr_hash_make(tp);
        for (i = 0; i < res->nrows; i++) {
            const char *n = rmsync_db_value(res, i, 0);
            if (n && rmsync_tz_name_ok(n)) {
                apr_hash_set(h, apr_pstrdup(tp, n), APR_HASH_KEY_STRING, "");
            }
        }
        if (apr_atomic_casptr(&tz_names, h, NULL) != NULL) {
            apr_pool_destroy(tp);
            h = apr_atomic_casptr(&tz_names, NULL, NULL);
        }
    }
    return apr_hash_get(h, tz, APR_HASH_KEY_STRING) ? 1 : 0;
}

/* The cookie's zone when it names a known zone; anything else is ignored (UTC). */
static const char *tz_cookie(rmsync_admin_t *a)
{
    const char *h = apr_table_get(a->r->headers_in, "Cookie"), *c;
    char *v, *end;

    if (!h) {
        return NULL;
    }
    for (c = h; (c = strstr(c, RMSYNC_ADMIN_TZ_COOKIE "=")) != NULL; c++) {
        if (c == h || c[-1] == ' ' || c[-1] == ';') {
            break;
        }
    }
    if (!c) {
        return NULL;
    }
    v = apr_pstrdup(a->r->pool, c + sizeof(RMSYNC_ADMIN_TZ_COOKIE));
    if ((end = strchr(v, ';')) != NULL) {
        *end = '\0';
    }
    return tz_known(a, v) == 1 ? v : NULL;
}

/* A preference, not state: a year, this mount only, never sent cross-site or to scripts. */
static void remember_tz(rmsync_admin_t *a, const char *tz)
{
    const char *c, *path = *a->base ? a->base : "/";

    for (c = path; *c; c++) {
        if (!apr_isalnum(*c) && !strchr("/_.-~", *c)) {
            path = "/";
            break;
        }
    }
    apr_table_setn(a->r->headers_out, "Set-Cookie", apr_pstrcat(a->r->pool,
                   RMSYNC_ADMIN_TZ_COOKIE "=", tz, "; Path=", path,
                   "; Max-Age=31536000; SameSite=Strict; HttpOnly", NULL));
}

apr_status_t rmsync_admin_log_params(rmsync_admin_t *a, rmsync_admin_log_q_t *lq,
                                     const char **err)
{
    apr_pool_t *p = a->r->pool;
    const char *rep = arg(a, "rep"), *level = arg(a, "level"), *act = arg(a, "activity");
    const char *event = arg(a, "event"), *action = arg(a, "action"), *from = arg(a, "from");
    const char *to = arg(a, "to"), *before = arg(a, "before"), *after = arg(a, "after");
    const char *nstr = arg(a, "n"), *min = arg(a, "min_level"), *q = arg(a, "q");
    const char *tz = arg(a, "tz");
    long long num;
    int known;

    *err = NULL;
    memset(lq, 0, sizeof(*lq));
    lq->limit = RMSYNC_ADMIN_LOG_PAGE;
    if (rep && strlen(rep) > 64) { *err = "rep: too long"; return APR_EINVAL; }
    if (level && strcmp(level, "error") && strcmp(level, "warning") && strcmp(level, "info")
        && strcmp(level, "debug")) {
        *err = "level: must be error, warning, info or debug";
        return APR_EINVAL;
    }
    if (min && strcmp(min, "debug") && !levels_from(min)) {
        *err = "min_level: must be error, warning, info or debug";
        return APR_EINVAL;
    }
    if (q && strlen(q) > RMSYNC_ADMIN_LOG_Q_MAX) {
        *err = apr_psprintf(p, "q: at most %d characters", RMSYNC_ADMIN_LOG_Q_MAX);
        return APR_EINVAL;
    }
    if (act && !rmsync_parse_int64(act, 0, APR_INT64_MAX, &num)) {
        *err = "activity: not an activity number";
        return APR_EINVAL;
    }
    if (event && strlen(event) > 512) { *err = "event: too long"; return APR_EINVAL; }
    if (action && strlen(action) > 64) { *err = "action: too long"; return APR_EINVAL; }
    if (from && !rmsync_valid_utc_time(from)) {
        *err = "from: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (in the page's time zone)";
        return APR_EINVAL;
    }
    if (to && !rmsync_valid_utc_time(to)) {
        *err = "to: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (in the page's time zone)";
        return APR_EINVAL;
    }
    if (nstr && !rmsync_parse_int64(nstr, 1, RMSYNC_ADMIN_LOG_MAX, &lq->limit)) {
        *err = apr_psprintf(p, "n: a number from 1 to %d", RMSYNC_ADMIN_LOG_MAX);
        return APR_EINVAL;
    }
    if (before && after) {
        *err = "before and after: use one of them";
        return APR_EINVAL;
    }
    if (before && !rmsync_parse_int64(before, 1, APR_INT64_MAX, &num)) {
        *err = "before: not a log id";
        return APR_EINVAL;
    }
    if (after && !rmsync_parse_int64(after, 0, APR_INT64_MAX, &num)) {
        *err = "after: not a log id";
        return APR_EINVAL;
    }
    /* the zone: tz= (then remembered in a cookie), else the cookie's, else UTC */
    if (tz) {
        if ((known = tz_known(a, tz)) < 0) {
            return APR_EGENERAL;
        }
        if (!known) {
            *err = "tz: not a time zone name PostgreSQL knows (e.g. Europe/Berlin, UTC)";
            return APR_EINVAL;
        }
        lq->tz_set = 1;
        remember_tz(a, tz);
    }
    else if (!(tz = tz_cookie(a))) {
        tz = "UTC";
    }
    lq->tz = tz;
    /* default view: info and above; level= (one level exactly) or min_level= override it */
    if (!min && !level) {
        min = "info";
    }
    lq->min_level = min ? min : "debug";
    lq->after = after;
    lq->range = from && to;
    lq->params[0] = rep;
    lq->params[1] = level;
    lq->params[2] = act;
    lq->params[3] = event;
    lq->params[4] = action;
    lq->params[5] = from;
    lq->params[6] = to;
    lq->params[7] = after ? after : before;
    lq->params[8] = NULL;  /* the limit, set by the caller */
    lq->params[9] = min ? levels_from(min) : NULL;
    lq->params[10] = q ? apr_pstrcat(p, "%", rmsync_like_escape(p, q), "%", NULL) : NULL;
    lq->params[11] = tz;
    return APR_SUCCESS;
}

/* One step of a text search: its rows appended to rows; 0 when the query failed. */
static int log_search_step(rmsync_admin_t *a, const char *name, const char *const *sp,
                           cJSON *rows)
{
    rmsync_db_result_t *res = rmsync_admin_query(a, name, sp);
    cJSON *got, *o;

    if (!res) {
        return 0;
    }
    got = rows_json(a->r->pool, res, LOG_SPEC);
    while ((o = cJSON_DetachItemFromArray(got, 0)) != NULL) {
        cJSON_AddItemToArray(rows, o);
    }
    cJSON_Delete(got);
    return 1;
}

/* A text search page, newest first, up to lq->params[8] rows (see LOG_WINDOW): the first
 * window; the next, larger one only when the matches found promise to fill the page within
 * it (a walk in id order beats the trigram scan there); the rest through the index. */
static cJSON *log_search(rmsync_admin_t *a, const rmsync_admin_log_q_t *lq)
{
    apr_pool_t *p = a->r->pool;
    const char *sp[14];
    cJSON *rows = cJSON_CreateArray();
    long long want = lq->limit + 1, k;

    memcpy(sp, lq->params, sizeof(lq->params));
    sp[12] = "0";
    sp[13] = apr_psprintf(p, "%d", LOG_WINDOW);
    if (!log_search_step(a, "admin_log_search_window", sp, rows)) {
        goto fail;
    }
    sp[12] = sp[13];  /* ids read so far below the cursor */
    k = cJSON_GetArraySize(rows);
    if (k > 0 && k < want && (want - k) * LOG_WINDOW / k <= LOG_WINDOW_MORE) {
        sp[8] = apr_psprintf(p, "%d", (int)(want - k));
        sp[13] = apr_psprintf(p, "%d", LOG_WINDOW_MORE);
        if (!log_search_step(a, "admin_log_search_window", sp, rows)) {
            goto fail;
        }
        sp[12] = apr_psprintf(p, "%d", LOG_WINDOW + LOG_WINDOW_MORE);
        k = cJSON_GetArraySize(rows);
    }
    if (k < want) {
        sp[8] = apr_psprintf(p, "%d", (int)(want - k));
        if (!log_search_step(a, "admin_log_search_older", sp, rows)) {
            goto fail;
        }
    }
    return rows;
fail:
    cJSON_Delete(rows);
    return NULL;
}

apr_status_t rmsync_admin_log_data(rmsync_admin_t *a, cJSON *out, const char **err)
{
    apr_pool_t *p = a->r->pool;
    rmsync_admin_log_q_t lq;
    int i, nrows, more;
    rmsync_db_result_t *res;
    apr_status_t rv;
    cJSON *f, *rows;

    if ((rv = rmsync_admin_log_params(a, &lq, err)) != APR_SUCCESS) {
        return rv;
    }
    /* one more than a page tells whether there is more in the direction we read */
    lq.params[8] = apr_psprintf(p, "%d", (int)lq.limit + 1);
    if (lq.params[10] && !lq.after && !lq.range) {
        rows = log_search(a, &lq);
    }
    else if ((res = rmsync_admin_query(a, apr_pstrcat(p, lq.after ? "admin_log_page_after"
                                                      : "admin_log_page",
                                                      lq.range ? "_range" : "", NULL),
                                       lq.params)) != NULL) {
        rows = rows_json(p, res, LOG_SPEC);
    }
    else {
        rows = NULL;
    }
    if (!rows) {
        return APR_EGENERAL;
    }
    nrows = cJSON_GetArraySize(rows);
    more = nrows > lq.limit;
    if (more) {
        cJSON_DeleteItemFromArray(rows, nrows - 1);
        nrows--;
    }
    if (lq.after) {
        /* read oldest first just above "after": show newest first like every page */
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
        int linked = cJSON_IsTrue(cJSON_GetObjectItem(o, "linked"));
        /* Retry re-fetches an Outlook event: the logged one, or the activity's linked one */
        cJSON_AddBoolToObject(o, "can_retry", (has_rep || linked) && (has_evt || linked));
        cJSON_AddBoolToObject(o, "can_unlink", linked);
    }

    f = cJSON_AddObjectToObject(out, "filter");
    for (i = 0; filter_args[i]; i++) {
        add_str(f, filter_args[i], arg(a, filter_args[i]));
    }
    cJSON_ReplaceItemInObject(f, "min_level", cJSON_CreateString(lq.min_level));
    cJSON_AddStringToObject(out, "tz", lq.tz);
    cJSON_AddNumberToObject(out, "page_size", (double)lq.limit);
    cJSON_AddItemToObject(out, "rows", rows);

    if (nrows > 0) {
        double newest = cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(rows, 0),
                                                                 "id"));
        double oldest = cJSON_GetNumberValue(cJSON_GetObjectItem(
                            cJSON_GetArrayItem(rows, nrows - 1), "id"));
        const char *cursor = lq.params[7];
        /* the side read: the extra row; the other side: nothing newer than the first page */
        int newer = lq.after ? more : 0, older = lq.after ? 0 : more;

        if (cursor) {
            lq.params[7] = lq.after ? cursor : apr_psprintf(p, "%.0f", newest);
            lq.params[8] = lq.after ? apr_psprintf(p, "%.0f", oldest) : cursor;
            if (!(res = rmsync_admin_query(a, apr_pstrcat(p, lq.after ? "admin_log_older"
                                                          : "admin_log_newer",
                                                          lq.range ? "_range" : "", NULL),
                                           lq.params))) {
                return APR_EGENERAL;
            }
            if (lq.after) {
                older = *rmsync_db_value(res, 0, 0) == 't';
            }
            else {
                newer = *rmsync_db_value(res, 0, 0) == 't';
            }
        }
        cJSON_AddBoolToObject(out, "has_newer", newer);
        cJSON_AddBoolToObject(out, "has_older", older);
        cJSON_AddNumberToObject(out, "newest_id", newest);
        cJSON_AddNumberToObject(out, "oldest_id", oldest);
    }
    else {
        cJSON_AddBoolToObject(out, "has_newer", 0);
        cJSON_AddBoolToObject(out, "has_older", 0);
    }

    /* the filter's list of names: up to RMSYNC_ADMIN_LOG_REP_LIST; with more (10,000
     * representatives would be a 460 KB <select>) the page asks for the id as text */
    if (!(res = rmsync_admin_query(a, "admin_rep_names", RMSYNC_DB_PARAMS(
              apr_itoa(p, RMSYNC_ADMIN_LOG_REP_LIST + 1))))) {
        return APR_EGENERAL;
    }
    if (res->nrows <= RMSYNC_ADMIN_LOG_REP_LIST) {
        cJSON_AddItemToObject(out, "representatives",
                              rows_json(p, res, "representative_id,name"));
    }
    return APR_SUCCESS;
}

/* The filtered view as CSV, newest first, at most RMSYNC_ADMIN_LOG_CSV_MAX rows (paging with
 * before= continues an export). Written straight from the result, no cJSON in between. */
apr_status_t rmsync_admin_log_csv(rmsync_admin_t *a, const char **err)
{
    static const char *const head[] = { "id", "time", "time_utc", "level", "representative_id",
        "representative", "activity_no", "action", "message", "event_id", "graph_request_id",
        "repeat_count", "first_at", NULL };
    /* result columns in the order of head[] (see LOG_PAGE) */
    static const int col[] = { 0, 11, 1, 2, 3, 4, 5, 7, 8, 6, 9, 12, 13 };
    request_rec *r = a->r;
    apr_pool_t *p = r->pool;
    rmsync_admin_log_q_t lq;
    rmsync_db_result_t *res;
    apr_status_t rv;
    int i, c, n;

    if ((rv = rmsync_admin_log_params(a, &lq, err)) != APR_SUCCESS) {
        return rv;
    }
    if (lq.after) {
        *err = "after: not with format=csv (use before= to continue an export)";
        return APR_EINVAL;
    }
    lq.params[8] = apr_psprintf(p, "%d", RMSYNC_ADMIN_LOG_CSV_MAX + 1);
    if (!(res = rmsync_admin_query(a, lq.range ? "admin_log_page_range" : "admin_log_page",
                                   lq.params))) {
        return APR_EGENERAL;
    }
    n = res->nrows > RMSYNC_ADMIN_LOG_CSV_MAX ? RMSYNC_ADMIN_LOG_CSV_MAX : res->nrows;
    ap_set_content_type(r, "text/csv; charset=utf-8; header=present");
    apr_table_setn(r->headers_out, "Content-Disposition",
                   "attachment; filename=\"rmsync-log.csv\"");
    apr_table_setn(r->headers_out, "X-RMSync-Rows", apr_psprintf(p, "%d", n));
    if (res->nrows > n) {
        /* more than the bound: say so, and where to continue */
        apr_table_setn(r->headers_out, "X-RMSync-Truncated",
                       apr_pstrcat(p, "before=", rmsync_db_value(res, n - 1, 0), NULL));
    }
    for (c = 0; head[c]; c++) {
        ap_rputs(c ? "," : "", r);
        ap_rputs(head[c], r);
    }
    ap_rputs("\r\n", r);
    for (i = 0; i < n; i++) {
        apr_pool_t *rowp;
        apr_pool_create(&rowp, p);
        for (c = 0; head[c]; c++) {
            ap_rputs(c ? "," : "", r);
            ap_rputs(rmsync_csv_cell(rowp, rmsync_db_value(res, i, col[c])), r);
        }
        ap_rputs("\r\n", r);
        apr_pool_destroy(rowp);
    }
    return APR_SUCCESS;
}

/* A test request (Test connection / Test mailbox) and its result. 404 -> APR_NOTFOUND. */
apr_status_t rmsync_admin_test_data(rmsync_admin_t *a, cJSON *out, const char **err)
{
    const char *id = arg(a, "id");
    rmsync_db_result_t *res;
    long long num;
    cJSON *row, *rows, *j;
    const char *txt;

    *err = NULL;
    if (!id || !rmsync_parse_int64(id, 1, APR_INT64_MAX, &num)) {
        *err = "id: the test's request id";
        return APR_EINVAL;
    }
    if (!(res = rmsync_admin_query(a, "admin_test_request", RMSYNC_DB_PARAMS(id)))) {
        return APR_EGENERAL;
    }
    if (res->nrows != 1) {
        *err = "No such test.";
        return APR_NOTFOUND;
    }
    rows = rows_json(a->r->pool, res, "id:i,kind,representative_id,state,requested_at,age_s:i,"
                                      "done_at,result");
    row = cJSON_GetArrayItem(rows, 0);
    txt = cJSON_GetStringValue(cJSON_GetObjectItem(row, "result"));
    /* the runner's JSON (rmsync_selftest.c) as an object; anything else as text */
    if (txt && (j = cJSON_Parse(txt)) != NULL && cJSON_IsObject(j)) {
        cJSON_ReplaceItemInObject(row, "result", j);
    }
    else {
        cJSON_AddStringToObject(row, "result_text", txt ? txt : "");
        cJSON_DeleteItemFromObject(row, "result");
        cJSON_AddNullToObject(row, "result");
    }
    cJSON_AddBoolToObject(row, "runner_alive",
                          a->shm && rmsync_admin_runner_alive(a->shm, apr_time_now()));
    for (j = row->child; j; j = row->child) {
        cJSON_AddItemToObject(out, j->string, cJSON_DetachItemViaPointer(row, j));
    }
    cJSON_Delete(rows);
    return APR_SUCCESS;
}
