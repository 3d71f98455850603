/* mod_rmsync: runs in the Apache worker processes (the "rmsync-admin" handler, its
 * child_init). Routing of the Calendar Sync Configuration and Log pages, status (HTML and
 * JSON, like mod_md's md-status), Prometheus metrics, the linking API and the actions.
 *
 * Access control is Apache's (<Location /rmsync/> Require ...); on top of it, like
 * balancer-manager but stricter: GET only renders, state changes are POSTs with a CSRF token
 * and a same-origin check (rmsync_admin_actions.c), every response carries no-store, a strict
 * CSP and nosniff, query parameters are whitelisted per page, and every value is escaped.
 */
#include <string.h>
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"
#include "apr_lib.h"
#include "rmsync.h"
#include "mod_rmsync_budget.h"
#include "mod_rmsync_config.h"
#include "rmsync_html.h"
#include "mod_rmsync_admin.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_request.h"
#include "mod_rmsync_api.h"
#include "rmsync_csrf.h"
#include "rmsync_escape.h"
#include "rmsync_form.h"
#include "rmsync_timefmt.h"

APLOG_USE_MODULE(rmsync);

#define CSP "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; " \
            "frame-ancestors 'none'"

/* Query parameters each page accepts (GET); anything else is a 400. */
static const char *const args_plain[] = { "format", "done", NULL };
static const char *const args_config[] = { "format", "done", "q", "page", NULL };
static const char *const args_status[] = { "format", "refresh", NULL };
static const char *const args_log[] = { "format", "done", "rep", "level", "activity", "event",
                                        "action", "from", "to", "before", "after", "n",
                                        "min_level", "q", "tz", NULL };
static const char *const args_test[] = { "format", "id", NULL };
static const char *const args_none[] = { NULL };

static void security_headers(request_rec *r)
{
    /* err_headers_out: kept on error responses and redirects too */
    apr_table_setn(r->err_headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->err_headers_out, "Content-Security-Policy", CSP);
    apr_table_setn(r->err_headers_out, "X-Content-Type-Options", "nosniff");
    apr_table_setn(r->err_headers_out, "X-Frame-Options", "DENY");
    apr_table_setn(r->err_headers_out, "Referrer-Policy", "same-origin");
}

static apr_status_t json_cleanup(void *j)
{
    cJSON_Delete(j);
    return APR_SUCCESS;
}

cJSON *rmsync_admin_json_obj(rmsync_admin_t *a)
{
    cJSON *o = cJSON_CreateObject();
    apr_pool_cleanup_register(a->r->pool, o, json_cleanup, apr_pool_cleanup_null);
    return o;
}

/* ---- database ------------------------------------------------------------------------- */

/* Per-process pool of DB handles for the worker threads (created in child_init; connections
 * opened lazily), shared with the linking API (rmsync_api.c). Admin traffic is light: a few
 * handles, a short wait, then 503. */
#define ADMIN_POOL_MAX   8
#define ADMIN_POOL_WAIT  apr_time_from_sec(3)
#define ADMIN_SLOT_WAIT  apr_time_from_sec(2)  /* for a slot of RMSyncDatabasePool, then 503 */
static rmsync_db_pool_t *db_pool;

static void admin_child_init(apr_pool_t *pchild, server_rec *srv)
{
    const rmsync_settings_t *s = rmsync_config_get(srv);
    apr_status_t rv;

    if (!s || !s->enabled || !s->db_conninfo) {
        return;
    }
    /* the module's pool: its own allocator with a mutex (the webhook's thread reaps ours) */
    if (!(pchild = rmsync_budget_pool())) {
        return;
    }
    rv = rmsync_admin_register_statements();
    if (rv == APR_SUCCESS) {
        rv = rmsync_admin_health_register();
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_admin_register_action_statements();
    }
    if (rv == APR_SUCCESS) {
        rv = rmsync_db_pool_create(&db_pool, pchild, s->db_conninfo, s->db_connect_timeout_s,
                                   s->db_statement_timeout_ms, ADMIN_POOL_MAX);
    }
    if (rv == APR_SUCCESS) {
        rmsync_budget_add_pool(db_pool, ADMIN_SLOT_WAIT, s);
    }
    if (rv != APR_SUCCESS) {
        db_pool = NULL;
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, srv, RMSYNC_LOGNO(00705)
                     "admin: cannot set up the database pool; the pages answer 503");
    }
}

static int admin_handler(request_rec *r);

void rmsync_admin_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_child_init(admin_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(admin_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

static apr_status_t db_release(void *data)
{
    rmsync_admin_t *a = data;
    if (a->db) {
        rmsync_db_pool_release(db_pool, a->db);   /* rolls back an open transaction */
        a->db = NULL;
    }
    return APR_SUCCESS;
}

rmsync_db_t *rmsync_admin_db(rmsync_admin_t *a)
{
    apr_status_t rv;

    if (a->db || a->db_error) {
        return a->db;
    }
    if (!db_pool) {
        a->db_error = a->s->db_conninfo ? "no database pool in this process"
                                        : "no database configured (RMSyncDatabase)";
        return NULL;
    }
    rv = rmsync_db_pool_get(db_pool, ADMIN_POOL_WAIT, &a->db);
    if (rv != APR_SUCCESS) {
        a->db = NULL;
        a->db_error = "all database connections busy";
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, a->r, RMSYNC_LOGNO(00702)
                      "admin: no database handle free within %d s",
                      (int)apr_time_sec(ADMIN_POOL_WAIT));
        return NULL;
    }
    apr_pool_cleanup_register(a->r->pool, a, db_release, apr_pool_cleanup_null);
    return a->db;
}

/* ---- shared memory -------------------------------------------------------------------- */

rmsync_shm_t *rmsync_admin_snapshot(rmsync_admin_t *a, int all, const char *const *ids,
                                    int nids)
{
    rmsync_shm_t *live = rmsync_shm_get();

    if (!a->shm_taken) {
        a->shm_taken = 1;
        if (live && all) {
            rmsync_shm_snapshot_all(live, rmsync_shm_mutex(), a->r->pool, &a->shm,
                                    &a->shm_bytes);
        }
        else if (live) {
            rmsync_shm_snapshot_some(live, rmsync_shm_mutex(), a->r->pool, ids, nids, &a->shm,
                                     &a->shm_bytes);
        }
    }
    return a->shm;
}

/* What this request read from shm (the benchmark's figure; before the body is sent). */
static void shm_header(rmsync_admin_t *a)
{
    apr_table_setn(a->r->headers_out, "X-RMSync-Shm-Bytes",
                   apr_psprintf(a->r->pool, "%" APR_SIZE_T_FMT, a->shm_bytes));
}

/* ---- output --------------------------------------------------------------------------- */

int rmsync_admin_send_json(rmsync_admin_t *a, int status, cJSON *json)
{
    char *txt = cJSON_Print(json);

    a->r->status = status;
    ap_set_content_type(a->r, "application/json; charset=utf-8");
    shm_header(a);
    if (txt) {
        ap_rputs(txt, a->r);
        ap_rputs("\n", a->r);
        cJSON_free(txt);
    }
    return OK;
}

static int send_html(rmsync_admin_t *a, int status, const char *html)
{
    /* the health banner of every page, under its title */
    const char *h1 = strstr(html, "</h1>\n");
    /* before the first byte: the banner may take the snapshot, which the header counts */
    const char *banner = h1 ? rmsync_admin_health_banner(a) : NULL;

    a->r->status = status;
    ap_set_content_type(a->r, "text/html; charset=utf-8");
    shm_header(a);
    if (h1) {
        ap_rwrite(html, (int)(h1 + 6 - html), a->r);
        ap_rputs(banner, a->r);
        html = h1 + 6;
    }
    ap_rputs(html, a->r);
    return OK;
}

int rmsync_admin_error(rmsync_admin_t *a, int status, const char *msg)
{
    apr_pool_t *p = a->r->pool;

    if (status == HTTP_SERVICE_UNAVAILABLE) {
        apr_table_setn(a->r->err_headers_out, "Retry-After", "10");
    }
    if (a->json) {
        cJSON *o = rmsync_admin_json_obj(a);
        cJSON_AddStringToObject(o, "error", msg);
        cJSON_AddNumberToObject(o, "status", status);
        return rmsync_admin_send_json(a, status, o);
    }
    return send_html(a, status, apr_pstrcat(p,
        rmsync_html_page_begin(p, a->base, apr_psprintf(p, "Error %d", status), NULL),
        "<div class=\"flash err\" role=\"alert\">", rmsync_html_escape(p, msg), "</div>"
        "<p><a href=\"", rmsync_html_escape(p, a->base), "/config\">Back to the configuration"
        "</a> &middot; <a href=\"", rmsync_html_escape(p, a->base), "/log\">Sync log</a></p>",
        rmsync_html_page_end(p), NULL));
}

/* ---- status (JSON keys are the foundation's contract; tests rely on them) ---------- */

/* A heartbeat older than this means the runner is not alive (the engine beats every 1 s). */
#define HEARTBEAT_STALE_SEC 5

static void add_time(cJSON *o, apr_pool_t *p, const char *name, apr_time_t t)
{
    const char *iso = rmsync_fmt_iso(p, t);
    if (iso) {
        cJSON_AddStringToObject(o, name, iso);
    }
    else {
        cJSON_AddNullToObject(o, name);
    }
}

int rmsync_admin_runner_alive(const rmsync_shm_t *snap, apr_time_t now)
{
    return snap->runner.pid && snap->runner.state != RMSYNC_RUNNER_STOPPED
           && snap->runner.heartbeat
           && now - snap->runner.heartbeat <= apr_time_from_sec(HEARTBEAT_STALE_SEC);
}

/* The status JSON, from the shm snapshot (a->shm must be set). */
static void status_data(rmsync_admin_t *a, cJSON *root)
{
    apr_pool_t *p = a->r->pool;
    const rmsync_shm_t *snap = a->shm;
    apr_time_t now = apr_time_now();
    cJSON *runner, *ctr, *reps;
    double age;
    apr_uint32_t i;

    int db_down = rmsync_admin_health_db_down(a);

    rmsync_admin_health_json(a, root);
    cJSON_AddStringToObject(root, "module", "mod_rmsync");
    cJSON_AddStringToObject(root, "version", RMSYNC_VERSION);
    add_time(root, p, "time", now);
    cJSON_AddNumberToObject(root, "generation", snap->hdr.generation);
    cJSON_AddBoolToObject(root, "enabled", a->s->enabled);
    cJSON_AddNumberToObject(root, "sync_cycle_s", a->s->cycle_s);

    runner = cJSON_AddObjectToObject(root, "runner");
    if (snap->runner.pid) {
        cJSON_AddNumberToObject(runner, "pid", snap->runner.pid);
    }
    else {
        cJSON_AddNullToObject(runner, "pid");
    }
    cJSON_AddStringToObject(runner, "state", rmsync_runner_state_name(snap->runner.state));
    cJSON_AddBoolToObject(runner, "alive", rmsync_admin_runner_alive(snap, now));
    add_time(runner, p, "started", snap->runner.started);
    add_time(runner, p, "heartbeat", snap->runner.heartbeat);
    if (snap->runner.heartbeat) {
        age = (double)(now - snap->runner.heartbeat) / (double)APR_USEC_PER_SEC;
        cJSON_AddNumberToObject(runner, "heartbeat_age_s", age < 0 ? 0 : age);
    }
    else {
        cJSON_AddNullToObject(runner, "heartbeat_age_s");
    }
    cJSON_AddNumberToObject(runner, "heartbeat_usec", (double)snap->runner.heartbeat);
    cJSON_AddNumberToObject(runner, "cycles", (double)snap->runner.cycles);
    add_time(runner, p, "last_cycle", snap->runner.last_cycle);
    cJSON_AddStringToObject(runner, "activity", snap->runner.activity);
    if (snap->runner.last_error[0]) {
        cJSON_AddStringToObject(runner, "last_error", snap->runner.last_error);
        add_time(runner, p, "last_error_at", snap->runner.last_error_at);
    }
    else {
        cJSON_AddNullToObject(runner, "last_error");
    }
    if (snap->runner.token_error[0]) {
        cJSON_AddStringToObject(runner, "token_error", snap->runner.token_error);
        add_time(runner, p, "token_error_at", snap->runner.token_error_at);
        rmsync_admin_error_fix_json(runner, snap->runner.token_error);
    }
    else {
        cJSON_AddNullToObject(runner, "token_error");
    }

    cJSON_AddNumberToObject(root, "queue_depth",
                            rmsync_shm_counter_get(snap, RMSYNC_CTR_QUEUE_DEPTH));
    ctr = cJSON_AddObjectToObject(root, "counters");
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        const char *name = rmsync_shm_counter_name((rmsync_counter_e)i);
        if (name) {
            cJSON_AddNumberToObject(ctr, name, snap->counters[i]);
        }
    }

    cJSON_AddNumberToObject(root, "representative_slots", snap->hdr.rep_capacity);
    reps = cJSON_AddArrayToObject(root, "representatives");
    for (i = 0; i < snap->rep_count && i < snap->hdr.rep_capacity; i++) {
        const rmsync_shm_rep_t *rp = &snap->reps[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(reps, o);
        cJSON_AddStringToObject(o, "representative_id", rp->representative_id);
        cJSON_AddStringToObject(o, "mailbox", rp->mailbox);
        /* the database is down: the slot's "ok" is no longer known to be true */
        cJSON_AddStringToObject(o, "state",
                                db_down && rp->state == RMSYNC_REP_OK
                                ? "unknown" : rmsync_shm_rep_state_name(rp->state));
        cJSON_AddBoolToObject(o, "held", rp->held != 0);
        add_time(o, p, "last_success", rp->last_success);
        cJSON_AddNumberToObject(o, "lag_ms", rp->lag_ms);
        cJSON_AddNumberToObject(o, "linked", rp->linked_count);
        add_time(o, p, "subscription_expiry", rp->subscription_expiry);
        if (rp->last_error[0]) {
            cJSON_AddStringToObject(o, "last_error", rp->last_error);
            add_time(o, p, "last_error_at", rp->last_error_at);
            rmsync_admin_error_fix_json(o, rp->last_error);
        }
        else {
            cJSON_AddNullToObject(o, "last_error");
        }
    }
}

/* ---- routing -------------------------------------------------------------------------- */

static int wants_json(request_rec *r)
{
    const char *acc = apr_table_get(r->headers_in, "Accept");
    return acc && !strncasecmp(acc, "application/json", 16);
}

static int render_get(rmsync_admin_t *a)
{
    request_rec *r = a->r;
    apr_pool_t *p = r->pool;
    cJSON *d;

    if (!strcmp(a->page, "style.css")) {
        ap_set_content_type(r, "text/css; charset=utf-8");
        shm_header(a);
        ap_rputs(rmsync_html_css, r);
        return OK;
    }
    if (!strcmp(a->page, "metrics")) {
        const char *txt = rmsync_admin_metrics_text(a);
        ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
        shm_header(a);
        ap_rputs(txt, r);
        return OK;
    }
    d = rmsync_admin_json_obj(a);
    if (!strcmp(a->page, "status")) {
        if (!a->shm) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RMSYNC_LOGNO(00703)
                          "status: shared memory not available");
            return rmsync_admin_error(a, HTTP_SERVICE_UNAVAILABLE,
                                      "Shared memory not available.");
        }
        status_data(a, d);
        rmsync_admin_nodes_data(a, d);
        cJSON_AddStringToObject(d, "csrf_token", a->csrf);   /* for scripts' actions */
        return a->json ? rmsync_admin_send_json(a, HTTP_OK, d)
                       : send_html(a, HTTP_OK, rmsync_admin_status_html(a, d));
    }
    if (!strcmp(a->page, "config")) {
        apr_status_t rv = rmsync_admin_config_data(a, d);
        if (rv == APR_EINVAL) {
            return rmsync_admin_error(a, HTTP_BAD_REQUEST, apr_psprintf(p,
                "page: a number from 1; q: at most %d characters", RMSYNC_ADMIN_LOG_Q_MAX));
        }
        if (rv != APR_SUCCESS) {
            return rmsync_admin_error(a, HTTP_SERVICE_UNAVAILABLE, apr_pstrcat(p,
                "The sync database is not reachable (", a->db_error ? a->db_error : "error",
                "). The status page still shows the runner's live state.", NULL));
        }
        cJSON_AddStringToObject(d, "csrf_token", a->csrf);
        cJSON_AddStringToObject(d, "user", a->user);
        return a->json ? rmsync_admin_send_json(a, HTTP_OK, d)
                       : send_html(a, HTTP_OK, rmsync_admin_config_html(a, d));
    }
    if (!strcmp(a->page, "log")) {
        const char *err = NULL;
        apr_status_t rv = a->csv ? rmsync_admin_log_csv(a, &err)
                                 : rmsync_admin_log_data(a, d, &err);
        if (rv == APR_EINVAL) {
            return rmsync_admin_error(a, HTTP_BAD_REQUEST, err);
        }
        if (rv != APR_SUCCESS) {
            return rmsync_admin_error(a, HTTP_SERVICE_UNAVAILABLE, apr_pstrcat(p,
                "The sync database is not reachable (", a->db_error ? a->db_error : "error",
                ").", NULL));
        }
        if (a->csv) {
            return OK;
        }
        rmsync_admin_log_annotate(a, d);     /* reason + fix of errors, repeat counts */
        cJSON_AddStringToObject(d, "csrf_token", a->csrf);
        return a->json ? rmsync_admin_send_json(a, HTTP_OK, d)
                       : send_html(a, HTTP_OK, rmsync_admin_log_html(a, d));
    }
    if (!strcmp(a->page, "test")) {
        const char *err = NULL;
        apr_status_t rv = rmsync_admin_test_data(a, d, &err);
        if (rv == APR_EINVAL || rv == APR_NOTFOUND) {
            return rmsync_admin_error(a, rv == APR_EINVAL ? HTTP_BAD_REQUEST : HTTP_NOT_FOUND,
                                      err);
        }
        if (rv != APR_SUCCESS) {
            return rmsync_admin_error(a, HTTP_SERVICE_UNAVAILABLE, apr_pstrcat(p,
                "The sync database is not reachable (", a->db_error ? a->db_error : "error",
                ").", NULL));
        }
        return a->json ? rmsync_admin_send_json(a, HTTP_OK, d)
                       : send_html(a, HTTP_OK, rmsync_admin_test_html(a, d));
    }
    return rmsync_admin_error(a, HTTP_NOT_FOUND, "No such admin page.");
}

static int admin_handler(request_rec *r)
{
    rmsync_admin_t *a;
    const char *slash, *err;
    const char *const *allowed;
    char *page;
    apr_size_t plen;

    if (!r->handler || strcmp(r->handler, RMSYNC_ADMIN_HANDLER)) {
        return DECLINED;
    }
    a = apr_pcalloc(r->pool, sizeof(*a));
    a->r = r;
    a->s = rmsync_config_get(r->server);
    a->user = r->user && *r->user ? r->user : "-";
    security_headers(r);

    if (a->s->admin_require_user && !r->user) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RMSYNC_LOGNO(00704)
                      "admin request without an authenticated user refused "
                      "(RMSyncAdminRequireUser On)");
        return HTTP_FORBIDDEN;
    }

    /* the CSRF secret shared by all nodes: (re)loaded once a day per process */
    if (rmsync_request_csrf_stale()) {
        rmsync_request_csrf_load(r, rmsync_admin_db(a));
    }

    /* <base>/<page>[.json]; the base is wherever the admin <Location> is mounted */
    slash = strrchr(r->uri, '/');
    if (!slash) {
        return HTTP_NOT_FOUND;
    }
    a->base = apr_pstrmemdup(r->pool, r->uri, (apr_size_t)(slash - r->uri));
    page = apr_pstrdup(r->pool, slash + 1);
    {
        const char *api = strstr(r->uri, "/api/");
        if (api) {
            return rmsync_api_handler(r, apr_pstrmemdup(r->pool, r->uri,
                                                        (apr_size_t)(api - r->uri)), api + 5);
        }
    }
    plen = strlen(page);
    if (plen > 5 && !strcmp(page + plen - 5, ".json")) {
        page[plen - 5] = '\0';
        a->json = 1;
    }
    a->page = page;
    if (!*page) {
        /* the mount point itself: go to the configuration page */
        apr_table_setn(r->headers_out, "Location",
                       apr_pstrcat(r->pool, ap_escape_uri(r->pool, a->base), "/config", NULL));
        return HTTP_MOVED_TEMPORARILY;
    }
    if (strcmp(page, "config") && strcmp(page, "log") && strcmp(page, "status")
        && strcmp(page, "metrics") && strcmp(page, "style.css") && strcmp(page, "test")) {
        return rmsync_admin_error(a, HTTP_NOT_FOUND, "No such admin page.");
    }

    /* whitelisted query parameters */
    allowed = !strcmp(page, "log") ? args_log : !strcmp(page, "status") ? args_status
              : !strcmp(page, "test") ? args_test : !strcmp(page, "config") ? args_config
              : (!strcmp(page, "metrics") || !strcmp(page, "style.css")) ? args_none : args_plain;
    if (rmsync_form_parse(r->pool, r->args, r->args ? strlen(r->args) : 0, allowed, 20,
                          &a->args, &err) != APR_SUCCESS) {
        return rmsync_admin_error(a, HTTP_BAD_REQUEST, apr_pstrcat(r->pool,
                                  "Bad query: ", err, NULL));
    }
    {
        const char *fmt = apr_table_get(a->args, "format");
        if (fmt && !strcmp(fmt, "json")) {
            a->json = 1;
        }
        else if (fmt && !strcmp(fmt, "csv") && !strcmp(page, "log")) {
            a->csv = 1;
        }
        else if (fmt && strcmp(fmt, "html")) {
            return rmsync_admin_error(a, HTTP_BAD_REQUEST, "format: use json or html");
        }
        else if (!fmt && wants_json(r)) {
            a->json = 1;
        }
    }
    if (apr_table_get(a->args, "refresh")
        && !rmsync_parse_int64(apr_table_get(a->args, "refresh"), 1, 3600, &a->refresh_s)) {
        return rmsync_admin_error(a, HTTP_BAD_REQUEST, "refresh: seconds from 1 to 3600");
    }

    /* copy from shm only what the page shows: style.css nothing; status and metrics every
     * slot in use; the configuration page its page of slots (rmsync_admin_config_data);
     * the others the slots the health banner counts */
    if (!strcmp(page, "status") || !strcmp(page, "metrics")) {
        rmsync_admin_snapshot(a, 1, NULL, 0);
    }
    else if (strcmp(page, "style.css") && (strcmp(page, "config") || r->method_number != M_GET)) {
        rmsync_admin_snapshot(a, 0, NULL, 0);
    }
    a->csrf = rmsync_request_csrf_token(r, a->user);
    if (!a->csrf) {
        a->csrf = "";
    }

    if (r->method_number == M_POST && (!strcmp(page, "config") || !strcmp(page, "log"))) {
        return rmsync_admin_post(a);
    }
    if (r->method_number != M_GET) {
        r->allowed = (AP_METHOD_BIT << M_GET)
                     | ((!strcmp(page, "config") || !strcmp(page, "log"))
                        ? (AP_METHOD_BIT << M_POST) : 0);
        return HTTP_METHOD_NOT_ALLOWED;
    }
    return render_get(a);
}
