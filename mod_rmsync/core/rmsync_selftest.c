/* mod_rmsync, run by the sync runner (the requests step): the admin's connection and mailbox
 * tests (rmsync_selftest.h). Each check makes one small Graph call with the runner's client and
 * turns a failure into a reason and a fix an administrator can act on. */
#include <string.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <cjson/cJSON.h>

#include "rmsync.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"
#include "rmsync_http.h"
#include "rmsync_engine.h"
#include "rmsync_event.h"
#include "rmsync_selftest.h"

static const rmsync_db_stmt_t selftest_stmts[] = {
    { "selftest_subscription",
      "SELECT subscription_id FROM rmsync.subscription WHERE representative_id = $1", 1 },
};

apr_status_t rmsync_selftest_register(void)
{
    return rmsync_db_register(selftest_stmts,
                              (int)(sizeof(selftest_stmts) / sizeof(selftest_stmts[0])));
}

/* What to do about a failed Graph call, by its class. */
static const char *fix_for(apr_pool_t *p, const rmsync_graph_result_t *res, apr_status_t rv,
                           const char *what)
{
    const char *code = res->error_code ? res->error_code : "";

    if (rv == RMSYNC_GRAPH_AUTH || res->http_status == 401 || !strncmp(code, "AADSTS", 6)
        || !strcmp(code, "invalid_client") || !strcmp(code, "unauthorized_client")) {
        return "Check RMSyncGraphClientSecretFile (the secret may have expired or been rotated "
               "in Entra ID: create a new one and put it in the file), RMSyncGraphTenant and "
               "RMSyncGraphClientId, then reload Apache.";
    }
    if (rv == RMSYNC_GRAPH_NOTFOUND || res->http_status == 404
        || !strcmp(code, "ErrorInvalidUser") || !strcmp(code, "MailboxNotEnabledForRESTAPI")) {
        return "Check the representative's e-mail address in the CRM (the mailbox), and that "
               "the mailbox exists and is licensed for Exchange Online.";
    }
    if (rv == RMSYNC_GRAPH_FORBIDDEN || res->http_status == 403) {
        return apr_pstrcat(p, "The app lacks permission for ", what, ": grant the application "
                           "permission in Entra ID (Calendars.ReadWrite; MailboxSettings.ReadWrite "
                           "for categories and the time zone) with admin consent, and check an "
                           "Exchange application access policy that may exclude this mailbox.",
                           NULL);
    }
    if (rv == RMSYNC_GRAPH_THROTTLED || res->http_status == 429) {
        return "Nothing: Graph is throttling; the sync waits and recovers. Test again later.";
    }
    if (rv == RMSYNC_GRAPH_SERVER || res->http_status >= 500) {
        return "Nothing at first: Microsoft Graph had a server error. If it lasts, check the "
               "Microsoft 365 service health.";
    }
    if (res->http_status == 0) {
        return "Graph was not reachable: check the network, proxy, DNS and TLS trust from this "
               "server to RMSyncGraphURL / RMSyncGraphAuthorityURL.";
    }
    return "See the reason; the Graph request id identifies the call for Microsoft support.";
}

static cJSON *check(cJSON *arr, const char *name)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "name", name);
    cJSON_AddItemToArray(arr, c);
    return c;
}

static int passed(cJSON *c, const char *detail)
{
    cJSON_AddBoolToObject(c, "ok", 1);
    cJSON_AddStringToObject(c, "detail", detail ? detail : "ok");
    return 1;
}

static int failed(apr_pool_t *p, cJSON *c, apr_status_t rv, const rmsync_graph_result_t *res,
                  const char *what)
{
    const char *reason = apr_psprintf(p, "%s%s%s%s%s", rmsync_graph_strerror(p, rv),
        res->http_status ? apr_psprintf(p, " (HTTP %d", res->http_status) : "",
        res->error_code ? apr_pstrcat(p, res->http_status ? " " : " (", res->error_code, NULL)
                        : "",
        res->http_status || res->error_code ? ")" : "",
        res->error_message ? apr_pstrcat(p, ": ", res->error_message, NULL) : "");

    cJSON_AddBoolToObject(c, "ok", 0);
    cJSON_AddStringToObject(c, "reason", apr_pstrndup(p, reason, 400));
    cJSON_AddStringToObject(c, "fix", fix_for(p, res, rv, what));
    if (res->request_id) {
        cJSON_AddStringToObject(c, "graph_request_id", res->request_id);
    }
    return 0;
}

static int fail_text(cJSON *c, const char *reason, const char *fix)
{
    cJSON_AddBoolToObject(c, "ok", 0);
    cJSON_AddStringToObject(c, "reason", reason);
    cJSON_AddStringToObject(c, "fix", fix);
    return 0;
}

static int get(rmsync_rep_ctx_t *ctx, cJSON *c, const char *target, const char *what,
               rmsync_graph_result_t *res)
{
    apr_status_t rv;

    memset(res, 0, sizeof(*res));
    rv = rmsync_graph_request(ctx->graph, ctx->pool, "GET", ctx->mailbox, target, NULL, res);
    return rv == APR_SUCCESS ? 1 : failed(ctx->pool, c, rv, res, what);
}

static const char *user_path(rmsync_rep_ctx_t *ctx, const char *rest)
{
    return apr_pstrcat(ctx->pool, "users/", rmsync_http_escape(ctx->pool, ctx->mailbox), rest,
                       NULL);
}

static int test_token(rmsync_rep_ctx_t *ctx, cJSON *arr)
{
    cJSON *c = check(arr, "token");
    rmsync_graph_result_t res;
    apr_status_t rv;

    memset(&res, 0, sizeof(res));
    /* force: a cached token would hide a secret rotated since it was fetched */
    rv = rmsync_graph_token(ctx->graph, ctx->pool, 1, &res);
    if (rv == APR_SUCCESS && (res.error_code || res.http_status >= 400)) {
        /* the authority refused a new token; the client goes on with the cached one until it
         * expires, which would hide a rotated secret for up to an hour */
        failed(ctx->pool, c, RMSYNC_GRAPH_AUTH, &res, "the token");
        cJSON_ReplaceItemInObject(c, "reason", cJSON_CreateString(apr_pstrcat(ctx->pool,
            cJSON_GetStringValue(cJSON_GetObjectItem(c, "reason")), " (the token fetched "
            "earlier still works until it expires; then the sync stops)", NULL)));
        return 0;
    }
    return rv == APR_SUCCESS ? passed(c, "an access token was issued")
                             : failed(ctx->pool, c, rv, &res, "the token");
}

/* A subscription made and deleted again: Graph's validation request must reach the webhook at
 * RMSyncNotificationURL and be answered. */
static int test_handshake(rmsync_rep_ctx_t *ctx, cJSON *arr)
{
    cJSON *c = check(arr, "subscription handshake");
    rmsync_graph_result_t res;
    rmsync_graph_subscription_t *sub = NULL;
    apr_status_t rv;
    char cs[33];
    unsigned char rnd[16];
    int i;

    if (!ctx->settings->notification_url) {
        return fail_text(c, "RMSyncNotificationURL is not set: no change notifications, the "
                         "sync polls every cycle.", "Set RMSyncNotificationURL to the public "
                         "https URL of <mount>/notify if notifications are wanted.");
    }
    if (apr_generate_random_bytes(rnd, sizeof(rnd)) != APR_SUCCESS) {
        return fail_text(c, "no random bytes for the test's clientState", "Try again.");
    }
    for (i = 0; i < 16; i++) {
        apr_snprintf(cs + 2 * i, 3, "%02x", rnd[i]);
    }
    memset(&res, 0, sizeof(res));
    rv = rmsync_graph_subscription_create(ctx->graph, ctx->pool, ctx->user_id,
                                          ctx->settings->notification_url, NULL, cs,
                                          apr_time_now() + apr_time_from_sec(600), &sub, &res);
    if (rv != APR_SUCCESS) {
        failed(ctx->pool, c, rv, &res, "subscriptions");
        if (res.http_status == 400) {
            /* Graph refused the URL or could not validate it (its POST to the URL failed) */
            cJSON_ReplaceItemInObject(c, "fix", cJSON_CreateString(
                "Check RMSyncNotificationURL: an https URL with a publicly trusted certificate, "
                "reachable from the internet, routed to this module's notify handler "
                "(<mount>/notify) so Graph's validation request is answered."));
        }
        return 0;
    }
    memset(&res, 0, sizeof(res));
    (void)rmsync_graph_subscription_delete(ctx->graph, ctx->pool, sub->id, &res);
    return passed(c, apr_pstrcat(ctx->pool, "Graph validated ", ctx->settings->notification_url,
                                 " (test subscription created and deleted)", NULL));
}

static int test_connection(rmsync_rep_ctx_t *ctx, cJSON *arr)
{
    rmsync_graph_result_t res;
    cJSON *c;
    int ok = test_token(ctx, arr);

    c = check(arr, "mailbox call");
    if (!ok) {
        fail_text(c, "skipped: no token", "Fix the token first.");
    }
    else if (get(ctx, c, user_path(ctx, "/calendar?$select=id,name"), "calendars", &res)) {
        passed(c, apr_pstrcat(ctx->pool, "read the default calendar of ", ctx->mailbox, NULL));
    }
    else {
        ok = 0;
    }
    if (ok) {
        ok = test_handshake(ctx, arr);
    }
    else {
        fail_text(check(arr, "subscription handshake"), "skipped: an earlier check failed",
                  "Fix the failed checks first.");
    }
    return ok;
}

static int test_mailbox(rmsync_rep_ctx_t *ctx, cJSON *arr)
{
    rmsync_graph_result_t res;
    rmsync_graph_subscription_t *sub;
    rmsync_db_result_t *dres;
    apr_array_header_t *cats;
    apr_time_t now = apr_time_now();
    apr_status_t rv;
    cJSON *c;
    int ok = 1;

    c = check(arr, "calendar read");
    ok &= get(ctx, c, user_path(ctx, apr_pstrcat(ctx->pool, "/calendarView?startDateTime=",
              rmsync_http_escape(ctx->pool, rmsync_event_format_time_z(ctx->pool, now)),
              "&endDateTime=", rmsync_http_escape(ctx->pool, rmsync_event_format_time_z(
                  ctx->pool, now + apr_time_from_sec(86400))), "&$top=1&$select=id", NULL)),
              "calendars", &res) ? passed(c, apr_pstrcat(ctx->pool, "read the calendar of ",
                                                         ctx->mailbox, NULL)) : 0;

    c = check(arr, "subscription");
    if (rmsync_db_exec(ctx->db, ctx->pool, "selftest_subscription",
                       RMSYNC_DB_PARAMS(ctx->rep_id), &dres) != APR_SUCCESS) {
        ok = fail_text(c, apr_pstrcat(ctx->pool, "database: ", rmsync_db_errmsg(ctx->db), NULL),
                       "Check the database (status page).");
    }
    else if (dres->nrows == 0) {
        ok = fail_text(c, ctx->settings->notification_url
                       ? "no subscription yet: changes are found by polling until one is made"
                       : "no subscription: RMSyncNotificationURL is not set (polling only)",
                       ctx->settings->notification_url
                       ? "Wait one sync cycle; if it stays missing, run Test connection and see "
                         "the log for the subscription error."
                       : "Set RMSyncNotificationURL if change notifications are wanted.");
    }
    else {
        memset(&res, 0, sizeof(res));
        rv = rmsync_graph_subscription_get(ctx->graph, ctx->pool, rmsync_db_value(dres, 0, 0),
                                           &sub, &res);
        if (rv == APR_SUCCESS) {
            passed(c, apr_psprintf(ctx->pool, "Graph knows subscription %s (expires %s)",
                                   sub->id, rmsync_event_format_time_z(ctx->pool,
                                                                       sub->expiration)));
        }
        else {
            ok = failed(ctx->pool, c, rv, &res, "subscriptions");
            if (rv == RMSYNC_GRAPH_NOTFOUND) {
                cJSON_ReplaceItemInObject(c, "fix", cJSON_CreateString(
                    "Nothing: the runner makes a new subscription at its next check; Initial "
                    "Sync catches up on changes missed meanwhile."));
            }
        }
    }

    c = check(arr, "category permission");
    memset(&res, 0, sizeof(res));
    rv = rmsync_graph_categories_list(ctx->graph, ctx->pool, ctx->mailbox, &cats, &res);
    if (rv == APR_SUCCESS) {
        passed(c, apr_psprintf(ctx->pool, "master categories readable (%d)", cats->nelts));
    }
    else {
        ok = failed(ctx->pool, c, rv, &res, "the master categories (MailboxSettings.ReadWrite)");
    }

    c = check(arr, "mailbox time zone");
    if (get(ctx, c, user_path(ctx, "/mailboxSettings/timeZone"), "mailbox settings", &res)) {
        const char *tz = res.json ? cJSON_GetStringValue(cJSON_GetObjectItem(res.json, "value"))
                                  : NULL;
        passed(c, tz ? apr_pstrcat(ctx->pool, "time zone ", tz, NULL) : "no time zone set");
    }
    else {
        ok = 0;
    }
    return ok;
}

apr_status_t rmsync_selftest_run(rmsync_rep_ctx_t *ctx, const char *kind, const char **result,
                                 int *ok)
{
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "checks");
    char *txt;

    if (!strcmp(kind, "test_connection")) {
        *ok = test_connection(ctx, arr);
    }
    else if (!strcmp(kind, "test_mailbox")) {
        *ok = test_mailbox(ctx, arr);
    }
    else {
        cJSON_Delete(o);
        return APR_EINVAL;
    }
    cJSON_AddBoolToObject(o, "ok", *ok);
    cJSON_AddStringToObject(o, "mailbox", ctx->mailbox);
    txt = cJSON_PrintUnformatted(o);
    *result = apr_pstrdup(ctx->pool, txt ? txt : "{}");
    cJSON_free(txt);
    cJSON_Delete(o);
    return APR_SUCCESS;
}
