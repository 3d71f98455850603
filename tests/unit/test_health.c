/* Unit tests for the health computation (core/rmsync_health.c) and the error classes
 * (core/rmsync_errors.c): green only when every signal is green; each signal gives its reason;
 * every Graph / transport status the engine can report has a class with a fix. */
#include <check.h>
#include <string.h>
#include <stdlib.h>
#include <apr_general.h>
#include <apr_strings.h>
#include "rmsync.h"
#include "rmsync_shm.h"
#include "rmsync_graph.h"
#include "rmsync_http.h"
#include "rmsync_errors.h"
#include "rmsync_health.h"
#include "unit_main.h"

static apr_pool_t *pool;
static rmsync_shm_t *shm;
static apr_time_t now;

static void setup(void)
{
    apr_size_t sz;
    apr_pool_create(&pool, NULL);
    sz = rmsync_shm_size(4);
    shm = apr_pcalloc(pool, sz);
    now = apr_time_now();
    rmsync_shm_init(shm, sz, 4, 1, (const unsigned char *)"0123456789abcdef0123456789abcdef",
                    now);
    shm->runner.pid = 42;
    shm->runner.state = RMSYNC_RUNNER_IDLE;
    shm->runner.heartbeat = now - apr_time_from_sec(1);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static rmsync_health_in_t green(void)
{
    rmsync_health_in_t in;
    memset(&in, 0, sizeof(in));
    in.shm = shm;
    in.now = now;
    in.enabled = 1;
    in.db_ok = 1;
    in.master_state = "ready";
    in.service_running = 1;
    return in;
}

static int has(const rmsync_health_t *h, const char *code)
{
    int i;
    for (i = 0; i < h->reasons->nelts; i++) {
        if (!strcmp(RMSYNC_ARRAY_IDX(h->reasons, i, rmsync_health_reason_t).code, code)) {
            return 1;
        }
    }
    return 0;
}

static const rmsync_health_reason_t *reason(const rmsync_health_t *h, const char *code)
{
    int i;
    for (i = 0; i < h->reasons->nelts; i++) {
        if (!strcmp(RMSYNC_ARRAY_IDX(h->reasons, i, rmsync_health_reason_t).code, code)) {
            return &RMSYNC_ARRAY_IDX(h->reasons, i, rmsync_health_reason_t);
        }
    }
    return NULL;
}

START_TEST(all_green)
{
    rmsync_health_in_t in = green();
    rmsync_health_t *h = rmsync_health_compute(pool, &in);
    ck_assert_int_eq(h->level, RMSYNC_HEALTH_OK);
    ck_assert_int_eq(h->reasons->nelts, 0);
    ck_assert_str_eq(rmsync_health_level_name(h->level), "ok");
    ck_assert_int_eq(h->db_down, 0);
}
END_TEST

START_TEST(runner_down_and_stalled)
{
    rmsync_health_in_t in = green();
    rmsync_health_t *h;
    shm->runner.pid = 0;
    h = rmsync_health_compute(pool, &in);
    ck_assert_int_eq(h->level, RMSYNC_HEALTH_ERROR);
    ck_assert(has(h, "runner_down"));
    shm->runner.pid = 42;
    shm->runner.heartbeat = now - apr_time_from_sec(RMSYNC_HEALTH_STALE_S + 5);
    h = rmsync_health_compute(pool, &in);
    ck_assert(has(h, "runner_stalled"));
    ck_assert(!has(h, "runner_down"));
}
END_TEST

START_TEST(db_down_unknown)
{
    rmsync_health_in_t in = green();
    rmsync_health_t *h;
    in.db_ok = 0;
    in.db_error = "database unavailable";
    in.master_state = NULL;
    in.service_running = -1;
    in.held = in.subs_failing = in.categories_forbidden = -1;
    h = rmsync_health_compute(pool, &in);
    ck_assert_int_eq(h->level, RMSYNC_HEALTH_ERROR);
    ck_assert(has(h, "db_unreachable"));
    ck_assert_int_eq(h->db_down, 1);
    ck_assert(strstr(reason(h, "db_unreachable")->fix, "RMSyncDatabase"));
    /* the runner waiting for the database says the same without a probe */
    in = green();
    in.db_ok = -1;
    shm->runner.state = RMSYNC_RUNNER_DB_DOWN;
    h = rmsync_health_compute(pool, &in);
    ck_assert_int_eq(h->db_down, 1);
}
END_TEST

START_TEST(token_failing_names_directive)
{
    rmsync_health_in_t in = green();
    rmsync_health_t *h;
    const rmsync_health_reason_t *r;
    rmsync_shm_runner_token_error(shm, NULL, "AADSTS7000215 invalid_client", now);
    h = rmsync_health_compute(pool, &in);
    ck_assert_int_eq(h->level, RMSYNC_HEALTH_ERROR);
    r = reason(h, "token_failing");
    ck_assert_ptr_nonnull(r);
    ck_assert(strstr(r->message, "AADSTS7000215"));
    ck_assert(strstr(r->fix, "RMSyncGraphClientSecretFile"));
    rmsync_shm_runner_token_error(shm, NULL, "AADSTS700016 unauthorized_client", now);
    r = reason(rmsync_health_compute(pool, &in), "token_failing");
    ck_assert(strstr(r->fix, "RMSyncGraphClientId"));
    rmsync_shm_runner_token_error(shm, NULL, "AADSTS90002 invalid_request", now);
    r = reason(rmsync_health_compute(pool, &in), "token_failing");
    ck_assert(strstr(r->fix, "RMSyncGraphTenant"));
    rmsync_shm_runner_token_error(shm, NULL, "AADSTS700027 invalid_client", now);
    r = reason(rmsync_health_compute(pool, &in), "token_failing");
    ck_assert(strstr(r->fix, "RMSyncGraphClientCertificate"));
    rmsync_shm_runner_token_error(shm, NULL, NULL, now);
    ck_assert_int_eq(rmsync_health_compute(pool, &in)->level, RMSYNC_HEALTH_OK);
}
END_TEST

START_TEST(db_signals)
{
    rmsync_health_in_t in = green();
    rmsync_health_t *h;
    in.master_state = "locked";
    in.service_running = 0;
    in.held = 2;
    in.subs_failing = 1;
    in.categories_forbidden = 3;
    h = rmsync_health_compute(pool, &in);
    ck_assert_int_eq(h->level, RMSYNC_HEALTH_ERROR);
    ck_assert(has(h, "master_not_ready"));
    ck_assert(strstr(reason(h, "master_not_ready")->fix, "UpdateSyncMasterUser.sql"));
    ck_assert(has(h, "service_stopped"));
    ck_assert(has(h, "breaker_hold"));
    ck_assert(has(h, "subscriptions_failing"));
    ck_assert(has(h, "categories_forbidden"));
    /* the worst first */
    ck_assert_int_eq(RMSYNC_ARRAY_IDX(h->reasons, 0, rmsync_health_reason_t).level,
                     RMSYNC_HEALTH_ERROR);
    in = green();
    in.held = 1;
    h = rmsync_health_compute(pool, &in);
    ck_assert_int_eq(h->level, RMSYNC_HEALTH_WARNING);
    ck_assert(strstr(reason(h, "breaker_hold")->fix, "Approve"));
}
END_TEST

START_TEST(every_code_listed)
{
    /* the codes the computation gives are the ones the metrics list */
    rmsync_health_in_t in = green();
    rmsync_health_t *h;
    int i, k, found;
    shm->runner.pid = 0;
    rmsync_shm_runner_token_error(shm, NULL, "AADSTS7000215", now);
    in.db_ok = 0;
    in.master_state = "missing";
    in.service_running = 0;
    in.held = in.subs_failing = in.categories_forbidden = 1;
    h = rmsync_health_compute(pool, &in);
    for (i = 0; i < h->reasons->nelts; i++) {
        const char *c = RMSYNC_ARRAY_IDX(h->reasons, i, rmsync_health_reason_t).code;
        for (found = 0, k = 0; rmsync_health_codes[k]; k++) {
            found |= !strcmp(rmsync_health_codes[k], c);
        }
        ck_assert_msg(found, "%s not in rmsync_health_codes", c);
    }
}
END_TEST

START_TEST(error_classes)
{
    int n, i;
    const rmsync_error_class_t *t = rmsync_error_table(&n);
    ck_assert_int_gt(n, 10);
    for (i = 0; i < n; i++) {
        ck_assert(t[i].code && *t[i].code && t[i].reason && *t[i].reason && t[i].fix
                  && *t[i].fix);
        ck_assert_ptr_eq(rmsync_error_by_code(t[i].code), &t[i]);
    }
    ck_assert_str_eq(rmsync_error_classify(NULL)->code, "unknown");
    ck_assert_str_eq(rmsync_error_classify("something odd")->code, "unknown");
    ck_assert_str_eq(rmsync_error_classify(
        "RMS00420 Graph delta for nobody@x failed: not found (HTTP 404 ErrorInvalidUser)")->code,
        "mailbox_not_found");
    ck_assert(strstr(rmsync_error_classify("HTTP 404 ErrorInvalidUser")->fix, "e-mail"));
    ck_assert_str_eq(rmsync_error_classify(
        "Graph get for a@x failed: not found (HTTP 404 ErrorItemNotFound)")->code,
        "item_not_found");
    ck_assert_str_eq(rmsync_error_classify(
        "Graph delta for a@x failed: access denied (HTTP 403 ErrorAccessDenied)")->code,
        "access_denied");
    ck_assert(strstr(rmsync_error_classify("HTTP 403 ErrorAccessDenied")->fix, "RBAC"));
    ck_assert_str_eq(rmsync_error_classify(
        "Graph delta for a@x failed: authentication failed (HTTP 401 invalid_client "
        "AADSTS7000215)")->code, "aadsts7000215");
    ck_assert_str_eq(rmsync_error_classify("authentication failed")->code, "token_failed");
    ck_assert_str_eq(rmsync_error_classify("throttled or unavailable, retries exhausted")->code,
                     "throttled");
    ck_assert(strstr(rmsync_error_classify("HTTP 429")->fix, "Nothing"));
    ck_assert_str_eq(rmsync_error_classify(
        "RMS00604 create subscription failed (HTTP 400): ValidationError: x; retried in 300 s")
        ->code, "graph_bad_request");
    ck_assert_str_eq(rmsync_error_classify(
        "RMS00604 create subscription failed (HTTP 0): could not connect")->code,
        "graph_unreachable");
    ck_assert_str_eq(rmsync_error_classify(
        "master category 'CRM' not created: the application lacks the permission "
        "MailboxSettings.ReadWrite; the sync goes on")->code, "categories_forbidden");
    ck_assert_str_eq(rmsync_error_aadsts(pool, "x AADSTS700016: y"), "AADSTS700016");
    ck_assert_ptr_null(rmsync_error_aadsts(pool, "no code"));
}
END_TEST

START_TEST(every_graph_status_has_a_class)
{
    /* what rmsync_engine_graph_error can write: "Graph <action> for <mailbox> failed: <why>" */
    static const apr_status_t st[] = {
        RMSYNC_GRAPH_NOTFOUND, RMSYNC_GRAPH_AUTH, RMSYNC_GRAPH_FORBIDDEN,
        RMSYNC_GRAPH_CONFLICT, RMSYNC_GRAPH_THROTTLED, RMSYNC_GRAPH_SERVER,
        RMSYNC_GRAPH_BADREQUEST, RMSYNC_GRAPH_BADRESPONSE, RMSYNC_GRAPH_EINVAL,
        RMSYNC_HTTP_ECONNECT, RMSYNC_HTTP_ETLS, RMSYNC_HTTP_ETIMEOUT, RMSYNC_HTTP_ETOOLARGE,
        RMSYNC_HTTP_EPROTO, RMSYNC_HTTP_ENET, RMSYNC_HTTP_EINIT,
    };
    apr_size_t i;
    for (i = 0; i < sizeof(st) / sizeof(st[0]); i++) {
        const char *msg = apr_pstrcat(pool, "Graph delta for a@x failed: ",
                                      rmsync_graph_strerror(pool, st[i]), NULL);
        ck_assert_msg(strcmp(rmsync_error_classify(msg)->code, "unknown"),
                      "no error class for '%s'", msg);
    }
    ck_assert_str_eq(rmsync_error_classify("paging loop detected after 3 pages")->code,
                     "delta_paging_loop");
}
END_TEST

RMSYNC_UNIT_MAIN("health", "core", setup, teardown, 0,
                 all_green, runner_down_and_stalled, db_down_unknown,
                 token_failing_names_directive, db_signals, every_code_listed, error_classes,
                 every_graph_status_has_a_class)
