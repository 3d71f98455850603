/* mod_rmsync: runs in the Apache worker processes (the admin handler). Health at a glance and a
 * fix for every error: collects the signals for core/rmsync_health.c (the shm snapshot, one
 * database probe that also reads the SYNC_MASTER and service state, breaker holds, failing
 * subscriptions and forbidden master categories) once per request, and renders the result as
 * the banner of every admin page, status.json's "health" and the rmsync_health_* metrics.
 * The reason and fix of an error message come from core/rmsync_errors.c. */
#include <string.h>
#include "httpd.h"
#include "http_log.h"
#include "apr_strings.h"
#include "rmsync.h"
#include "rmsync_escape.h"
#include "rmsync_errors.h"
#include "rmsync_health.h"
#include "rmsync_sb.h"
#include "rmsync_timefmt.h"
#include "mod_rmsync_admin.h"

APLOG_USE_MODULE(rmsync);

#define E(s) rmsync_html_escape(p, (s))

static const rmsync_db_stmt_t health_stmts[] = {
    /* everything the banner needs from the database in one round trip (also the probe) */
    { "admin_health",
      "SELECT rmsync.master_user_state(), "
      "       coalesce((SELECT running FROM rmsync.service_state WHERE id = 1), true), "
      "       (SELECT count(*) FROM rmsync.rep_state WHERE held_by_breaker), "
      "       (SELECT count(*) FROM rmsync.rep_state WHERE category_state = 'forbidden'), "
      "       (SELECT count(DISTINCT e.representative_id) FROM rmsync.sync_log e "
      "         WHERE e.at > now() - interval '70 minutes' AND e.level = 'error' "
      "           AND e.action = 'subscription' "
      "           AND coalesce(e.last_at, e.at) > now() - interval '15 minutes' "
      "           AND NOT EXISTS (SELECT 1 FROM rmsync.sync_log o "
      "                            WHERE o.representative_id = e.representative_id "
      "                              AND o.id > e.id AND o.level = 'info' "
      "                              AND o.action = 'subscription'))", 0 },
    /* the repeat count and last time of log rows (the log page's rows, by id) */
    { "admin_log_repeats",
      "SELECT id, repeat_count, "
      "       to_char(last_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
      "  FROM rmsync.sync_log WHERE id = ANY (string_to_array($1, ',')::bigint[]) "
      "   AND repeat_count > 1", 1 },
};

apr_status_t rmsync_admin_health_register(void)
{
    return rmsync_db_register(health_stmts, (int)(sizeof(health_stmts) / sizeof(health_stmts[0])));
}

static int count_of(const rmsync_db_result_t *res, int col)
{
    const char *v = rmsync_db_value(res, 0, col);
    return v ? (int)apr_atoi64(v) : 0;
}

rmsync_health_t *rmsync_admin_health(rmsync_admin_t *a)
{
    rmsync_health_in_t in;
    rmsync_db_result_t *res;

    if (a->health) {
        return a->health;
    }
    memset(&in, 0, sizeof(in));
    /* the page took its snapshot already, or only the slots the banner counts */
    in.shm = rmsync_admin_snapshot(a, 0, NULL, 0);
    in.now = apr_time_now();
    in.enabled = a->s->enabled;
    in.db_ok = -1;
    in.service_running = -1;
    in.held = in.subs_failing = in.categories_forbidden = -1;
    if (a->s->enabled && a->s->db_conninfo) {
        if ((res = rmsync_admin_query(a, "admin_health", RMSYNC_DB_NOPARAMS)) && res->nrows == 1) {
            in.db_ok = 1;
            in.master_state = rmsync_db_value(res, 0, 0) ? rmsync_db_value(res, 0, 0)
                                                         : "missing";
            in.service_running = rmsync_db_value(res, 0, 1)
                                 && rmsync_db_value(res, 0, 1)[0] == 't';
            in.held = count_of(res, 2);
            in.categories_forbidden = count_of(res, 3);
            in.subs_failing = count_of(res, 4);
        }
        else {
            in.db_ok = 0;
            in.db_error = a->db_error;
        }
    }
    a->health = rmsync_health_compute(a->r->pool, &in);
    return a->health;
}

int rmsync_admin_health_db_down(rmsync_admin_t *a)
{
    return rmsync_admin_health(a)->db_down;
}

/* ---- errors: reason and fix ---- */

const char *rmsync_admin_error_fix_html(apr_pool_t *p, const char *msg)
{
    const rmsync_error_class_t *c;
    if (!msg || !*msg) {
        return "";
    }
    c = rmsync_error_classify(msg);
    return apr_pstrcat(p, "<div class=\"fix\" data-error-class=\"", E(c->code), "\"><b>",
                       E(c->reason), "</b> What to do: ", E(c->fix), "</div>", NULL);
}

void rmsync_admin_error_fix_json(cJSON *o, const char *msg)
{
    const rmsync_error_class_t *c;
    if (!msg || !*msg) {
        return;
    }
    c = rmsync_error_classify(msg);
    cJSON_AddStringToObject(o, "error_class", c->code);
    cJSON_AddStringToObject(o, "error_reason", c->reason);
    cJSON_AddStringToObject(o, "error_fix", c->fix);
}

void rmsync_admin_log_annotate(rmsync_admin_t *a, cJSON *d)
{
    cJSON *rows = cJSON_GetObjectItem(d, "rows"), *o;
    rmsync_sb_t *ids = rmsync_sb_make(a->r->pool);
    rmsync_db_result_t *res;
    int i, n = 0;

    cJSON_ArrayForEach(o, rows) {
        const char *lvl = cJSON_GetStringValue(cJSON_GetObjectItem(o, "level"));
        cJSON *id = cJSON_GetObjectItem(o, "id");
        if (lvl && (!strcmp(lvl, "error") || !strcmp(lvl, "warning"))) {
            rmsync_admin_error_fix_json(o, cJSON_GetStringValue(cJSON_GetObjectItem(o,
                                                                                  "message")));
        }
        if (!cJSON_GetObjectItem(o, "repeat_count")) {
            cJSON_AddNumberToObject(o, "repeat_count", 1);
        }
        if (cJSON_IsNumber(id)) {
            rmsync_sb_addv(ids, n++ ? "," : "", apr_psprintf(a->r->pool, "%.0f",
                                                              cJSON_GetNumberValue(id)), NULL);
        }
    }
    if (!n || !(res = rmsync_admin_query(a, "admin_log_repeats",
                                         RMSYNC_DB_PARAMS(rmsync_sb_join(ids))))) {
        return;
    }
    for (i = 0; i < res->nrows; i++) {
        double id = (double)apr_atoi64(rmsync_db_value(res, i, 0));
        cJSON_ArrayForEach(o, rows) {
            if (cJSON_GetNumberValue(cJSON_GetObjectItem(o, "id")) == id) {
                cJSON_ReplaceItemInObject(o, "repeat_count", cJSON_CreateNumber(
                    (double)apr_atoi64(rmsync_db_value(res, i, 1))));
                if (rmsync_db_value(res, i, 2)) {
                    cJSON_AddStringToObject(o, "last_at", rmsync_db_value(res, i, 2));
                }
                break;
            }
        }
    }
}

const char *rmsync_admin_log_row_note_html(apr_pool_t *p, const cJSON *row)
{
    double n = cJSON_GetNumberValue(cJSON_GetObjectItem(row, "repeat_count"));
    const char *at = cJSON_GetStringValue(cJSON_GetObjectItem(row, "at"));
    const char *last = cJSON_GetStringValue(cJSON_GetObjectItem(row, "last_at"));
    const char *fix = cJSON_GetStringValue(cJSON_GetObjectItem(row, "error_fix"));
    const char *reason = cJSON_GetStringValue(cJSON_GetObjectItem(row, "error_reason"));
    const char *cls = cJSON_GetStringValue(cJSON_GetObjectItem(row, "error_class"));
    const char *out = "";

    if (n > 1) {
        /* "x 30 since 08:00" (the row's first time, UTC; the last one on hover) */
        const char *since = at && strlen(at) >= 16 ? apr_pstrndup(p, at + 11, 5) : "?";
        out = apr_pstrcat(p, "<span class=\"badge repeat\" title=\"first ", E(at ? at : "-"),
                          ", last ", E(last ? last : "-"), "\">&times; ",
                          apr_psprintf(p, "%.0f", n), " since ", E(since), "</span> ", NULL);
    }
    if (fix && reason) {
        out = apr_pstrcat(p, out, "<div class=\"fix\" data-error-class=\"", E(cls ? cls : ""),
                          "\"><b>", E(reason), "</b> What to do: ", E(fix), "</div>", NULL);
    }
    return out;
}

/* ---- rendering ---- */

const char *rmsync_admin_health_banner(rmsync_admin_t *a)
{
    apr_pool_t *p = a->r->pool;
    rmsync_health_t *h = rmsync_admin_health(a);
    rmsync_sb_t *sb = rmsync_sb_make(p);
    const char *lvl = rmsync_health_level_name(h->level);
    int i;

    if (h->level == RMSYNC_HEALTH_OK) {
        return "<div class=\"health ok\" id=\"health\" role=\"status\" data-health=\"ok\">"
               "<b>Healthy</b>: the runner is alive, the database and the Microsoft Graph "
               "token work, and no representative needs attention.</div>\n";
    }
    rmsync_sb_addv(sb, "<div class=\"health ", lvl, "\" id=\"health\" role=\"alert\" "
                   "data-health=\"", lvl, "\"><b>",
                   h->level == RMSYNC_HEALTH_ERROR ? "Not working" : "Needs attention",
                   "</b><ul>", NULL);
    for (i = 0; i < h->reasons->nelts; i++) {
        const rmsync_health_reason_t *r = &RMSYNC_ARRAY_IDX(h->reasons, i,
                                                            rmsync_health_reason_t);
        rmsync_sb_addv(sb, "<li data-code=\"", E(r->code), "\" class=\"",
                       rmsync_health_level_name(r->level), "\">", E(r->message),
                       r->fix && *r->fix ? " <span class=\"fixhint\">What to do: " : "",
                       r->fix && *r->fix ? E(r->fix) : "", r->fix && *r->fix ? "</span>" : "",
                       "</li>", NULL);
    }
    rmsync_sb_addv(sb, "</ul></div>\n", NULL);
    return rmsync_sb_join(sb);
}

void rmsync_admin_health_json(rmsync_admin_t *a, cJSON *root)
{
    rmsync_health_t *h = rmsync_admin_health(a);
    cJSON *o = cJSON_AddObjectToObject(root, "health"), *arr;
    int i;

    cJSON_AddStringToObject(o, "status", rmsync_health_level_name(h->level));
    cJSON_AddBoolToObject(o, "database_reachable", !h->db_down);
    arr = cJSON_AddArrayToObject(o, "reasons");
    for (i = 0; i < h->reasons->nelts; i++) {
        const rmsync_health_reason_t *r = &RMSYNC_ARRAY_IDX(h->reasons, i,
                                                            rmsync_health_reason_t);
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, x);
        cJSON_AddStringToObject(x, "code", r->code);
        cJSON_AddStringToObject(x, "severity", rmsync_health_level_name(r->level));
        cJSON_AddStringToObject(x, "message", r->message);
        cJSON_AddStringToObject(x, "fix", r->fix ? r->fix : "");
    }
}

const char *rmsync_admin_health_metrics(rmsync_admin_t *a)
{
    apr_pool_t *p = a->r->pool;
    rmsync_health_t *h = rmsync_admin_health(a);
    rmsync_sb_t *sb = rmsync_sb_make(p);
    int i, k;

    rmsync_sb_addv(sb,
        "# HELP rmsync_health_status Overall health: 0 ok, 1 warning, 2 error (the admin "
        "banner).\n# TYPE rmsync_health_status gauge\nrmsync_health_status ",
        apr_itoa(p, (int)h->level), "\n"
        "# HELP rmsync_health_reason 1 for each health reason present (0 otherwise).\n"
        "# TYPE rmsync_health_reason gauge\n", NULL);
    for (k = 0; rmsync_health_codes[k]; k++) {
        int on = 0;
        for (i = 0; i < h->reasons->nelts; i++) {
            on |= !strcmp(RMSYNC_ARRAY_IDX(h->reasons, i, rmsync_health_reason_t).code,
                          rmsync_health_codes[k]);
        }
        rmsync_sb_addv(sb, "rmsync_health_reason{code=\"", rmsync_health_codes[k], "\"} ",
                       on ? "1" : "0", "\n", NULL);
    }
    return rmsync_sb_join(sb);
}
