/* mod_rmsync: runs in the Apache worker processes (under the admin handler). The linking JSON
 * API (see mod_rmsync_api.h). The DB half lives in the core (rmsync_transfer_request_submit /
 * _status); the runner does the Graph half. */
#include <string.h>
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"
#include "rmsync.h"
#include "mod_rmsync_config.h"
#include "rmsync_html.h"
#include "rmsync_json.h"
#include "mod_rmsync_admin.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_api.h"
#include "mod_rmsync_request.h"
#include "rmsync_csrf.h"
#include "rmsync_utf8.h"
#include "rmsync_form.h"
#include "rmsync_linkreq.h"
#include "rmsync_shm.h"

APLOG_USE_MODULE(rmsync);

/* APR's formatter has no %lld: its own 64-bit format. */
static const char *num(apr_pool_t *p, long long n)
{
    return apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)n);
}

static int send_json(request_rec *r, int status, const char *json)
{
    r->status = status;
    apr_table_setn(r->err_headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->err_headers_out, "X-Content-Type-Options", "nosniff");
    if (status == HTTP_SERVICE_UNAVAILABLE) {
        apr_table_setn(r->err_headers_out, "Retry-After", "10");
    }
    ap_set_content_type(r, "application/json; charset=utf-8");
    ap_rputs(json, r);
    ap_rputs("\n", r);
    return OK;
}

static int send_error(request_rec *r, int status, const char *error, const char *message)
{
    cJSON *o = rmsync_json_object(r->pool);

    cJSON_AddStringToObject(o, "error", error);
    cJSON_AddStringToObject(o, "message", message);
    cJSON_AddNumberToObject(o, "status", status);
    return send_json(r, status, rmsync_json_print(r->pool, o));
}

/* A DB handle from the admin handler's per-process pool (released with the request). */
static rmsync_db_t *api_db(request_rec *r, const rmsync_settings_t *s)
{
    rmsync_admin_t *a = apr_pcalloc(r->pool, sizeof(*a));
    rmsync_db_t *db;

    a->r = r;
    a->s = s;
    a->user = r->user ? r->user : "-";
    db = rmsync_admin_db(a);
    if (!db) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, RMSYNC_LOGNO(00830)
                      "linking API: database unavailable: %s", a->db_error ? a->db_error : "?");
    }
    return db;
}

/* activity_no: a positive integral JSON number, or a string of digits. */
static int get_activity_no(const cJSON *o, long long *pno)
{
    long long n;
    const char *sv;

    if (rmsync_json_get_int(o, "activity_no", 1, 999999999999999LL, &n) == APR_SUCCESS) {
        *pno = n;
        return 1;
    }
    if (rmsync_json_get_string(o, "activity_no", &sv) == APR_SUCCESS
        && rmsync_parse_int64(sv, 1, 999999999999999LL, &n)) {
        *pno = n;
        return 1;
    }
    return 0;
}

/* A refusal decided here (malformed call): logged like every other outcome, then answered. */
static int refuse(request_rec *r, const char *what, int status, const char *error,
                  const char *message)
{
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RMSYNC_LOGNO(00835)
                  "linking API %s refused (%d %s): %s", what, status, error, message);
    return send_error(r, status, error, message);
}

static const char *api_user(const request_rec *r)
{
    return r->user && *r->user ? r->user : "-";   /* as the admin pages' tokens */
}

/* The admin pages' HMAC CSRF token (per generation secret, user, hour), sent by the caller in
 * the X-RMSync-CSRF header: a cross-site page can neither read it nor set that header without
 * a CORS preflight, so this holds even where Origin / Sec-Fetch-Site are absent. */
static int csrf_ok(request_rec *r, const char *what)
{
    rmsync_shm_t *live = rmsync_shm_get();
    const char *token = apr_table_get(r->headers_in, RMSYNC_API_CSRF_HEADER);

    if (rmsync_request_csrf_ok(r, api_user(r), token)) {
        return 1;
    }
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RMSYNC_LOGNO(00836)
                  "linking API %s refused: %s CSRF token (header " RMSYNC_API_CSRF_HEADER ")",
                  what, !live ? "no shared memory to check the" : token ? "invalid or expired"
                                                                        : "missing");
    return 0;
}

static int api_post(request_rec *r, const rmsync_settings_t *s, const char *base, int is_link)
{
    const char *what = is_link ? "link" : "create-activity";
    const char *why, *rep = NULL, *event_id = NULL;
    char *body;
    apr_size_t len, errpos = 0;
    rmsync_transfer_outcome_t out;
    long long no = 0;
    cJSON *in, *o;
    rmsync_db_t *db;
    int status;

    if (s->admin_require_user && !r->user) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RMSYNC_LOGNO(00831)
                      "linking API %s refused: no authenticated user (RMSyncAdminRequireUser On)",
                      what);
        return send_error(r, HTTP_FORBIDDEN, "authentication_required",
                          "an authenticated user is required (RMSyncAdminRequireUser On)");
    }
    /* A browser always sends Origin (or Sec-Fetch-Site) on a POST: it must be our own origin.
     * Scripts without them are fine: the JSON content type already rules out plain forms. */
    if (apr_table_get(r->headers_in, "Origin") || apr_table_get(r->headers_in, "Sec-Fetch-Site")) {
        if (!rmsync_request_same_origin(r, &why)) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RMSYNC_LOGNO(00832)
                          "linking API %s refused, cross-site request: %s", what, why);
            return send_error(r, HTTP_FORBIDDEN, "cross_site", "cross-site request refused");
        }
    }
    if (!csrf_ok(r, what)) {
        int missing = !apr_table_get(r->headers_in, RMSYNC_API_CSRF_HEADER);
        return send_error(r, HTTP_FORBIDDEN, missing ? "csrf_token_missing" : "csrf_token_invalid",
                          apr_pstrcat(r->pool, missing ? "no" : "invalid or expired",
                                      " CSRF token: send the csrf_token from GET ",
                                      base, "/api/csrf (or ", base, "/status.json) in the "
                                      RMSYNC_API_CSRF_HEADER " request header; tokens last 1-2 "
                                      "hours and change on a graceful restart", NULL));
    }
    if (!rmsync_request_has_type(r, "application/json")) {
        return refuse(r, what, HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                          "send the request as application/json");
    }
    status = rmsync_read_body(r, RMSYNC_API_MAX_BODY, 0, &body, &len);
    if (status == HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return refuse(r, what, status, "too_large", "request body too large");
    }
    if (status != OK) {
        return refuse(r, what, HTTP_BAD_REQUEST, "bad_body", "could not read the request body");
    }
    if (!rmsync_json_text_valid(body, len, &why)) {
        return refuse(r, what, HTTP_BAD_REQUEST, "bad_text", why);
    }
    if (rmsync_json_parse(&in, r->pool, body, len, RMSYNC_API_MAX_BODY, &errpos) != APR_SUCCESS
        || !cJSON_IsObject(in)) {
        return refuse(r, what, HTTP_BAD_REQUEST, "bad_json", "the body is not a JSON object");
    }
    if (rmsync_json_get_string(in, "representative_id", &rep) != APR_SUCCESS) {
        return refuse(r, what, HTTP_UNPROCESSABLE_ENTITY, "invalid_representative_id",
                          "representative_id: a string is required");
    }
    if (rmsync_json_get_string(in, "event_id", &event_id) != APR_SUCCESS) {
        return refuse(r, what, HTTP_UNPROCESSABLE_ENTITY, "invalid_event_id",
                          "event_id: a string is required");
    }
    if (is_link && !get_activity_no(in, &no)) {
        return refuse(r, what, HTTP_UNPROCESSABLE_ENTITY, "invalid_activity_no",
                          "activity_no: a positive integer is required");
    }
    if (!(db = api_db(r, s))) {
        return send_error(r, HTTP_SERVICE_UNAVAILABLE, "database_unavailable",
                          "the sync database is not reachable, try again");
    }
    rmsync_transfer_request_submit(db, r->pool, rep, no, event_id, r->user, &out);
    if (out.status != HTTP_ACCEPTED) {
        /* every outcome is logged (the sync log has the row, this is the request's trace) */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RMSYNC_LOGNO(00833)
                      "linking API %s refused (%d %s): %s", what, out.status,
                      out.error ? out.error : "-", out.message);
        return send_error(r, out.status, out.error ? out.error : "error", out.message);
    }
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RMSYNC_LOGNO(00834)
                  "linking API %s queued as request %s", what, num(r->pool, out.request_id));
    {
        const char *loc = apr_psprintf(r->pool, "%s/api/request/%s", ap_escape_uri(r->pool, base),
                                       num(r->pool, out.request_id));
        apr_table_setn(r->headers_out, "Location", loc);
        o = rmsync_json_object(r->pool);
        cJSON_AddNumberToObject(o, "request_id", (double)out.request_id);
        cJSON_AddStringToObject(o, "state", "pending");
        cJSON_AddStringToObject(o, "kind", is_link ? "link" : "create_activity");
        cJSON_AddStringToObject(o, "status_url", loc);
    }
    return send_json(r, HTTP_ACCEPTED, rmsync_json_print(r->pool, o));
}

static int api_status(request_rec *r, const rmsync_settings_t *s, const char *idstr)
{
    const char *json = NULL;
    long long id;
    rmsync_db_t *db;
    int status;

    if (!rmsync_parse_int64(idstr, 1, 999999999999999LL, &id)) {
        return send_error(r, HTTP_NOT_FOUND, "unknown_request", "no linking request with that id");
    }
    if (!(db = api_db(r, s))) {
        return send_error(r, HTTP_SERVICE_UNAVAILABLE, "database_unavailable",
                          "the sync database is not reachable, try again");
    }
    status = rmsync_transfer_request_status(db, r->pool, id, &json);
    return send_json(r, status, json);
}

/* GET <base>/api/csrf: the token for this user, for the X-RMSync-CSRF header of the POSTs. */
static int api_csrf(request_rec *r)
{
    const char *token = rmsync_request_csrf_token(r, api_user(r));
    cJSON *o;

    if (!token) {
        return send_error(r, HTTP_SERVICE_UNAVAILABLE, "no_shared_memory",
                          "the module's shared memory is not available");
    }
    o = rmsync_json_object(r->pool);
    cJSON_AddStringToObject(o, "csrf_token", token);
    cJSON_AddStringToObject(o, "header", RMSYNC_API_CSRF_HEADER);
    cJSON_AddStringToObject(o, "user", api_user(r));
    cJSON_AddNumberToObject(o, "valid_for_s", RMSYNC_CSRF_WINDOW_S);   /* at least */
    return send_json(r, HTTP_OK, rmsync_json_print(r->pool, o));
}

int rmsync_api_handler(request_rec *r, const char *base, const char *path)
{
    const rmsync_settings_t *s = rmsync_config_get(r->server);
    int is_link = !strcmp(path, "link"), is_create = !strcmp(path, "create-activity");

    if (r->args && *r->args) {
        return send_error(r, HTTP_BAD_REQUEST, "bad_query", "the API takes no query parameters");
    }
    if (is_link || is_create) {
        if (r->method_number != M_POST) {
            r->allowed = AP_METHOD_BIT << M_POST;
            apr_table_setn(r->err_headers_out, "Allow", "POST");
            return send_error(r, HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "use POST");
        }
        return api_post(r, s, base, is_link);
    }
    if (!strcmp(path, "csrf")) {
        if (r->method_number != M_GET) {
            r->allowed = AP_METHOD_BIT << M_GET;
            apr_table_setn(r->err_headers_out, "Allow", "GET");
            return send_error(r, HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
        }
        return api_csrf(r);
    }
    if (!strncmp(path, "request/", 8)) {
        if (r->method_number != M_GET) {
            r->allowed = AP_METHOD_BIT << M_GET;
            apr_table_setn(r->err_headers_out, "Allow", "GET");
            return send_error(r, HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
        }
        return api_status(r, s, path + 8);
    }
    return send_error(r, HTTP_NOT_FOUND, "not_found", "no such API endpoint");
}
