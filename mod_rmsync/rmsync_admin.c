/* mod_rmsync: the "rmsync-admin" handler.
 *
 * For now it serves only the status page: GET <mount>/status (small HTML) and
 * <mount>/status.json or <mount>/status?format=json (JSON). Everything comes from a snapshot of
 * the shm segment taken under the mutex and rendered after unlocking. Access control is the
 * admin's <Location> Require; RMSyncAdminRequireUser On additionally refuses anonymous requests.
 */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"

#include <apr_strings.h>
#include <cJSON.h>

#include "rmsync.h"
#include "rmsync_config.h"
#include "rmsync_shm.h"
#include "rmsync_admin.h"

APLOG_USE_MODULE(rmsync);

/* A heartbeat older than this means the runner is not alive (the engine beats every 1 s). */
#define HEARTBEAT_STALE_SEC 5

static apr_status_t json_cleanup(void *data)
{
    cJSON_Delete(data);
    return APR_SUCCESS;
}

static cJSON *json_pool_object(apr_pool_t *p)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        apr_pool_cleanup_register(p, o, json_cleanup, apr_pool_cleanup_null);
    }
    return o;
}

static const char *iso_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t e;
    if (!t) {
        return NULL;
    }
    apr_time_exp_gmt(&e, t);
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02dZ", e.tm_year + 1900, e.tm_mon + 1,
                        e.tm_mday, e.tm_hour, e.tm_min, e.tm_sec);
}

static void add_time(apr_pool_t *p, cJSON *o, const char *key, apr_time_t t)
{
    const char *v = iso_time(p, t);
    if (v) {
        cJSON_AddStringToObject(o, key, v);
    }
    else {
        cJSON_AddNullToObject(o, key);
    }
}

static int want_json(request_rec *r, const char *page)
{
    const char *ext = strrchr(page, '.');
    char *args, *tok, *state;

    if (ext && !strcmp(ext, ".json")) {
        return 1;
    }
    if (r->args) {
        args = apr_pstrdup(r->pool, r->args);
        for (tok = apr_strtok(args, "&", &state); tok; tok = apr_strtok(NULL, "&", &state)) {
            if (!strcmp(tok, "format=json")) {
                return 1;
            }
        }
    }
    return 0;
}

static int runner_alive(const rmsync_shm_t *snap, apr_time_t now)
{
    return snap->runner.pid && snap->runner.state != RMSYNC_RUNNER_STOPPED
           && snap->runner.heartbeat
           && now - snap->runner.heartbeat <= apr_time_from_sec(HEARTBEAT_STALE_SEC);
}

static cJSON *status_json(request_rec *r, const rmsync_shm_t *snap,
                          const rmsync_settings_t *st, apr_time_t now)
{
    cJSON *root = json_pool_object(r->pool), *runner, *ctr, *reps;
    double age;
    apr_uint32_t i;

    if (!root) {
        return NULL;
    }
    cJSON_AddStringToObject(root, "module", "mod_rmsync");
    cJSON_AddStringToObject(root, "version", RMSYNC_VERSION);
    add_time(r->pool, root, "time", now);
    cJSON_AddNumberToObject(root, "generation", snap->hdr.generation);
    cJSON_AddBoolToObject(root, "enabled", st->enabled);
    cJSON_AddNumberToObject(root, "sync_cycle_s", st->cycle_s);

    runner = cJSON_AddObjectToObject(root, "runner");
    if (snap->runner.pid) {
        cJSON_AddNumberToObject(runner, "pid", snap->runner.pid);
    }
    else {
        cJSON_AddNullToObject(runner, "pid");
    }
    cJSON_AddStringToObject(runner, "state", rmsync_runner_state_name(snap->runner.state));
    cJSON_AddBoolToObject(runner, "alive", runner_alive(snap, now));
    add_time(r->pool, runner, "started", snap->runner.started);
    add_time(r->pool, runner, "heartbeat", snap->runner.heartbeat);
    if (snap->runner.heartbeat) {
        age = (double)(now - snap->runner.heartbeat) / (double)APR_USEC_PER_SEC;
        cJSON_AddNumberToObject(runner, "heartbeat_age_s", age < 0 ? 0 : age);
    }
    else {
        cJSON_AddNullToObject(runner, "heartbeat_age_s");
    }
    cJSON_AddNumberToObject(runner, "heartbeat_usec", (double)snap->runner.heartbeat);
    cJSON_AddNumberToObject(runner, "cycles", (double)snap->runner.cycles);
    add_time(r->pool, runner, "last_cycle", snap->runner.last_cycle);
    cJSON_AddStringToObject(runner, "activity", snap->runner.activity);
    if (snap->runner.last_error[0]) {
        cJSON_AddStringToObject(runner, "last_error", snap->runner.last_error);
        add_time(r->pool, runner, "last_error_at", snap->runner.last_error_at);
    }
    else {
        cJSON_AddNullToObject(runner, "last_error");
    }

    ctr = cJSON_AddObjectToObject(root, "counters");
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        cJSON_AddNumberToObject(ctr, rmsync_shm_counter_name((rmsync_counter_e)i),
                                snap->counters[i]);
    }

    cJSON_AddNumberToObject(root, "representative_slots", snap->hdr.rep_capacity);
    reps = cJSON_AddArrayToObject(root, "representatives");
    for (i = 0; i < snap->rep_count; i++) {
        const rmsync_shm_rep_t *rp = &snap->reps[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(reps, o);
        cJSON_AddStringToObject(o, "representative_id", rp->representative_id);
        cJSON_AddStringToObject(o, "mailbox", rp->mailbox);
        cJSON_AddStringToObject(o, "state", rmsync_shm_rep_state_name(rp->state));
        cJSON_AddBoolToObject(o, "held", rp->held != 0);
        add_time(r->pool, o, "last_success", rp->last_success);
        cJSON_AddNumberToObject(o, "lag_ms", rp->lag_ms);
        cJSON_AddNumberToObject(o, "linked", rp->linked_count);
        add_time(r->pool, o, "subscription_expiry", rp->subscription_expiry);
        if (rp->last_error[0]) {
            cJSON_AddStringToObject(o, "last_error", rp->last_error);
            add_time(r->pool, o, "last_error_at", rp->last_error_at);
        }
        else {
            cJSON_AddNullToObject(o, "last_error");
        }
    }
    return root;
}

static void status_html(request_rec *r, const rmsync_shm_t *snap, const rmsync_settings_t *st,
                        apr_time_t now)
{
    apr_uint32_t i;
    const char *hb = iso_time(r->pool, snap->runner.heartbeat);

    ap_set_content_type(r, "text/html; charset=utf-8");
    apr_table_setn(r->headers_out, "Content-Security-Policy",
                   "default-src 'none'; frame-ancestors 'none'");
    if (r->header_only) {
        return;
    }
    ap_rputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
             "<title>Calendar Sync status</title></head><body>\n"
             "<h1>Calendar Sync status</h1>\n<table>\n", r);
    ap_rprintf(r, "<tr><th>Generation</th><td>%u</td></tr>\n", (unsigned)snap->hdr.generation);
    ap_rprintf(r, "<tr><th>Sync enabled</th><td>%s</td></tr>\n", st->enabled ? "yes" : "no");
    ap_rprintf(r, "<tr><th>Runner</th><td>%s (pid %u, %s)</td></tr>\n",
               runner_alive(snap, now) ? "alive" : "not running", (unsigned)snap->runner.pid,
               rmsync_runner_state_name(snap->runner.state));
    ap_rprintf(r, "<tr><th>Heartbeat</th><td>%s</td></tr>\n", hb ? hb : "never");
    ap_rprintf(r, "<tr><th>Cycles</th><td>%" APR_UINT64_T_FMT "</td></tr>\n",
               snap->runner.cycles);
    ap_rprintf(r, "<tr><th>Activity</th><td>%s</td></tr>\n",
               ap_escape_html(r->pool, snap->runner.activity));
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        ap_rprintf(r, "<tr><th>%s</th><td>%u</td></tr>\n",
                   rmsync_shm_counter_name((rmsync_counter_e)i), (unsigned)snap->counters[i]);
    }
    ap_rputs("</table>\n<p><a href=\"status.json\">JSON</a></p>\n</body></html>\n", r);
}

static int handle_status(request_rec *r, const char *page)
{
    const rmsync_settings_t *st = rmsync_config_get(r->server);
    rmsync_shm_t *shm = rmsync_shm_get(), *snap = NULL;
    apr_time_t now = apr_time_now();
    apr_status_t rv;

    if (!shm || (rv = rmsync_shm_snapshot(shm, rmsync_shm_mutex(), r->pool, &snap))
        != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RMSYNC_LOGNO(00050)
                      "status: shared memory not available");
        return HTTP_SERVICE_UNAVAILABLE;
    }
    if (want_json(r, page)) {
        cJSON *root = status_json(r, snap, st, now);
        char *out;
        if (!root || !(out = cJSON_PrintUnformatted(root))) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        ap_set_content_type(r, "application/json");
        if (!r->header_only) {
            ap_rputs(out, r);
            ap_rputs("\n", r);
        }
        cJSON_free(out);
        return OK;
    }
    status_html(r, snap, st, now);
    return OK;
}

int rmsync_admin_handler(request_rec *r)
{
    const rmsync_settings_t *st;
    const char *page;

    if (!r->handler || strcmp(r->handler, RMSYNC_ADMIN_HANDLER)) {
        return DECLINED;
    }
    st = rmsync_config_get(r->server);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    if (st->admin_require_user && !r->user) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RMSYNC_LOGNO(00051)
                      "admin request without an authenticated user refused "
                      "(RMSyncAdminRequireUser On)");
        return HTTP_FORBIDDEN;
    }
    page = strrchr(r->uri, '/');
    page = page ? page + 1 : r->uri;
    if (!strcmp(page, "status") || !strcmp(page, "status.json")) {
        r->allowed = (AP_METHOD_BIT << M_GET);
        if (r->method_number != M_GET) {
            return HTTP_METHOD_NOT_ALLOWED;
        }
        return handle_status(r, page);
    }
    return HTTP_NOT_FOUND;
}
