/* graphcheck: drive the rmsync Graph client against a Graph endpoint (the simulator in tests) and
 * print JSON results on stdout, so tests/test_graph_client.py can check the client's behaviour.
 *
 *   graphcheck --authority URL --graph URL --tenant T --client-id C --secret S [--ca-file F]
 *              [--per-mailbox N] [--max-attempts N] [--max-wait S] [--backoff-ms N]
 *              [--timeout S] [--connect-timeout S] [--stall S] [--max-response BYTES]
 *              [--log-level N] [--stop-after-ms N] SCENARIO [ARGS...]
 *
 * Scenarios:
 *   token                                   fetch a token
 *   user MAILBOX [N]                        N x GET users/{mailbox} (token reuse)
 *   user-wait MAILBOX N MS                  N x GET user with MS pause between calls (expiry)
 *   delta MAILBOX START END PAGESIZE [LINK] one full round (from LINK if given) to the deltaLink
 *   get-event MAILBOX ID
 *   get-events-batch MAILBOX ID...   ($batch of GETs, one after the other)
 *   create MAILBOX SUBJECT START END [TXID] [ACTIVITYNO]
 *   find MAILBOX ACTIVITYNO
 *   patch MAILBOX ID ETAG|- SUBJECT
 *   delete MAILBOX ID [ETAG]
 *   hammer MAILBOX THREADS CALLS            THREADS threads x CALLS GET users/{mailbox}/events
 *   slow-fast SLOW FAST THREADS             THREADS threads on SLOW while one thread times FAST
 *   sub-create USERID NOTIFYURL LIFEURL|- CLIENTSTATE MINUTES
 *   sub-renew ID MINUTES | sub-get ID | sub-delete ID
 *   categories MAILBOX | category-create MAILBOX NAME COLOR
 *   raw METHOD MAILBOX|- TARGET             any request, prints the parsed body
 * curl_global_init is done here, once, in main (as the runner does at start).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <apr_atomic.h>
#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_event.h"
#include "rmsync_http.h"
#include "rmsync_graph.h"

static rmsync_graph_t *G;
static volatile apr_uint32_t stop_flag;

static const char *status_name(apr_status_t rv)
{
    switch (rv) {
    case APR_SUCCESS: return "OK";
    case RMSYNC_GRAPH_NOTFOUND: return "NOTFOUND";
    case RMSYNC_GRAPH_RESYNC: return "RESYNC";
    case RMSYNC_GRAPH_AUTH: return "AUTH";
    case RMSYNC_GRAPH_FORBIDDEN: return "FORBIDDEN";
    case RMSYNC_GRAPH_CONFLICT: return "CONFLICT";
    case RMSYNC_GRAPH_THROTTLED: return "THROTTLED";
    case RMSYNC_GRAPH_SERVER: return "SERVER";
    case RMSYNC_GRAPH_BADREQUEST: return "BADREQUEST";
    case RMSYNC_GRAPH_BADRESPONSE: return "BADRESPONSE";
    case RMSYNC_GRAPH_EINVAL: return "EINVAL";
    case RMSYNC_HTTP_ECONNECT: return "ECONNECT";
    case RMSYNC_HTTP_ETLS: return "ETLS";
    case RMSYNC_HTTP_ETIMEOUT: return "ETIMEOUT";
    case RMSYNC_HTTP_ETOOLARGE: return "ETOOLARGE";
    case RMSYNC_HTTP_EABORTED: return "EABORTED";
    case RMSYNC_HTTP_EPROTO: return "EPROTO";
    case RMSYNC_HTTP_ENET: return "ENET";
    case RMSYNC_HTTP_EINIT: return "EINIT";
    default: return "OTHER";
    }
}

static double now_ms(void)
{
    return (double)apr_time_now() / 1000.0;
}

static void add_str(cJSON *o, const char *k, const char *v)
{
    if (v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static cJSON *result_json(apr_status_t rv, const rmsync_graph_result_t *res)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", status_name(rv));
    cJSON_AddNumberToObject(o, "http_status", res->http_status);
    add_str(o, "error_code", res->error_code);
    add_str(o, "error_message", res->error_message);
    add_str(o, "request_id", res->request_id);
    add_str(o, "client_request_id", res->client_request_id);
    add_str(o, "preference_applied", res->preference_applied);
    cJSON_AddNumberToObject(o, "attempts", res->attempts);
    cJSON_AddNumberToObject(o, "waited_ms", (double)apr_time_as_msec(res->waited));
    return o;
}

static cJSON *event_json(apr_pool_t *p, const rmsync_event_t *ev)
{
    cJSON *o = cJSON_CreateObject(), *a;
    int i;
    add_str(o, "id", ev->id);
    cJSON_AddBoolToObject(o, "removed", ev->removed);
    if (ev->removed) {
        add_str(o, "reason", ev->removed_reason);
        return o;
    }
    add_str(o, "subject", ev->subject);
    add_str(o, "start", ev->start ? rmsync_event_format_time_z(p, ev->start) : NULL);
    add_str(o, "end", ev->end ? rmsync_event_format_time_z(p, ev->end) : NULL);
    add_str(o, "etag", ev->etag);
    add_str(o, "change_key", ev->change_key);
    add_str(o, "hash", ev->hash);
    add_str(o, "type", rmsync_event_type_name(ev->type));
    add_str(o, "activity_no", ev->activity_no);
    add_str(o, "transaction_id", ev->transaction_id);
    add_str(o, "organizer", ev->organizer_email);
    cJSON_AddBoolToObject(o, "is_cancelled", ev->is_cancelled);
    cJSON_AddBoolToObject(o, "is_all_day", ev->is_all_day);
    cJSON_AddBoolToObject(o, "partial", ev->partial);
    a = cJSON_AddArrayToObject(o, "attendees");
    for (i = 0; i < ev->attendees->nelts; i++) {
        const char *e = RMSYNC_ARRAY_IDX(ev->attendees, i, rmsync_attendee_t).email_lc;
        cJSON_AddItemToArray(a, e ? cJSON_CreateString(e) : cJSON_CreateNull());
    }
    a = cJSON_AddArrayToObject(o, "categories");
    for (i = 0; i < ev->categories->nelts; i++) {
        cJSON_AddItemToArray(a, cJSON_CreateString(RMSYNC_ARRAY_IDX(ev->categories, i, const char *)));
    }
    return o;
}

static cJSON *stats_json(void)
{
    rmsync_graph_stats_t s;
    cJSON *o = cJSON_CreateObject();
    rmsync_graph_get_stats(G, &s);
#define N(f) cJSON_AddNumberToObject(o, #f, s.f)
    N(requests); N(status_2xx); N(status_3xx); N(status_4xx); N(status_5xx);
    N(transport_errors); N(throttled); N(unavailable); N(retries); N(auth_retries);
    N(token_requests); N(token_failures); N(bad_responses); N(resyncs); N(wait_ms);
#undef N
    return o;
}

static int emit(cJSON *out, int ok)
{
    char *s;
    cJSON_AddItemToObject(out, "stats", stats_json());
    s = cJSON_PrintUnformatted(out);
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(out);
    fflush(stdout);
    rmsync_http_thread_done();
    return ok ? 0 : 1;
}

static apr_time_t parse_t(const char *s)
{
    apr_time_t t = 0;
    if (rmsync_event_parse_time(s, NULL, &t) != APR_SUCCESS) {
        fprintf(stderr, "graphcheck: bad time '%s'\n", s);
        exit(2);
    }
    return t;
}

static void need(int argc, int n, const char *usage)
{
    if (argc < n) {
        fprintf(stderr, "graphcheck: usage: %s\n", usage);
        exit(2);
    }
}

/* ---- threaded scenarios -------------------------------------------------------------------- */

typedef struct {
    apr_pool_t *pool;
    const char *mailbox;
    int calls;
    int ok, failed, throttled;
    double max_ms, total_ms;
    apr_status_t last;
} worker_t;

static void *APR_THREAD_FUNC worker_main(apr_thread_t *t, void *data)
{
    worker_t *w = data;
    int i;
    for (i = 0; i < w->calls; i++) {
        apr_pool_t *cp;
        rmsync_graph_result_t res;
        double t0 = now_ms(), dt;
        apr_status_t rv;
        apr_pool_create(&cp, w->pool);
        rv = rmsync_graph_request(G, cp, "GET", w->mailbox,
                                  apr_pstrcat(cp, "users/", rmsync_http_escape(cp, w->mailbox),
                                              "/events?$top=5", NULL), NULL, &res);
        dt = now_ms() - t0;
        if (dt > w->max_ms) w->max_ms = dt;
        w->total_ms += dt;
        if (rv == APR_SUCCESS) w->ok++; else w->failed++;
        if (rv == RMSYNC_GRAPH_THROTTLED) w->throttled++;
        w->last = rv;
        apr_pool_destroy(cp);
    }
    /* Return instead of apr_thread_exit(): pthread_exit() skips the frame's ASan unpoisoning,
     * which ASan then reports as stack-use-after-scope at thread teardown. */
    (void)t;
    return NULL;
}

static int run_workers(apr_pool_t *p, worker_t *ws, int n, apr_thread_t **ts)
{
    int i;
    for (i = 0; i < n; i++) {
        apr_pool_create(&ws[i].pool, p);   /* made here: pools are not shared across threads */
        if (apr_thread_create(&ts[i], NULL, worker_main, &ws[i], p) != APR_SUCCESS) {
            return 0;
        }
    }
    return 1;
}

static void join_workers(worker_t *ws, int n, apr_thread_t **ts, cJSON *arr)
{
    int i;
    apr_status_t trv;
    for (i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        apr_thread_join(&trv, ts[i]);
        cJSON_AddNumberToObject(o, "ok", ws[i].ok);
        cJSON_AddNumberToObject(o, "failed", ws[i].failed);
        cJSON_AddNumberToObject(o, "throttled", ws[i].throttled);
        cJSON_AddNumberToObject(o, "max_ms", ws[i].max_ms);
        cJSON_AddNumberToObject(o, "total_ms", ws[i].total_ms);
        cJSON_AddStringToObject(o, "last", status_name(ws[i].last));
        cJSON_AddItemToArray(arr, o);
    }
}

static void *APR_THREAD_FUNC stopper_main(apr_thread_t *t, void *data)
{
    apr_sleep(apr_time_from_msec(*(int *)data));
    apr_atomic_set32(&stop_flag, 1);
    (void)t;
    return NULL;
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(int argc, const char *const *argv)
{
    apr_pool_t *p;
    rmsync_graph_opts_t o;
    rmsync_graph_result_t res;
    apr_status_t rv;
    cJSON *out;
    const char *sc;
    int i, log_level = RMSYNC_LOG_INFO, stop_after = 0;
    double t0;

    apr_app_initialize(&argc, &argv, NULL);
    atexit(apr_terminate);
    /* Once per process, before any thread runs a request (what the runner does at start). */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "graphcheck: curl_global_init failed\n");
        return 2;
    }
    apr_pool_create(&p, NULL);
    rmsync_graph_opts_defaults(&o);
    o.stop = &stop_flag;
    for (i = 1; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
        const char *k = argv[i] + 2, *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "graphcheck: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(k, "authority")) o.authority_url = v;
        else if (!strcmp(k, "graph")) o.graph_url = v;
        else if (!strcmp(k, "tenant")) o.tenant = v;
        else if (!strcmp(k, "client-id")) o.client_id = v;
        else if (!strcmp(k, "secret")) o.client_secret = v;
        else if (!strcmp(k, "ca-file")) o.ca_file = v;
        else if (!strcmp(k, "per-mailbox")) o.per_mailbox = atoi(v);
        else if (!strcmp(k, "max-attempts")) o.max_attempts = atoi(v);
        else if (!strcmp(k, "max-wait")) o.max_wait_s = atoi(v);
        else if (!strcmp(k, "backoff-ms")) o.backoff_base_ms = atoi(v);
        else if (!strcmp(k, "timeout")) o.total_timeout_s = atoi(v);
        else if (!strcmp(k, "connect-timeout")) o.connect_timeout_s = atoi(v);
        else if (!strcmp(k, "stall")) o.stall_timeout_s = atoi(v);
        else if (!strcmp(k, "max-response")) o.max_response = (apr_size_t)atol(v);
        else if (!strcmp(k, "log-level")) log_level = atoi(v);
        else if (!strcmp(k, "stop-after-ms")) stop_after = atoi(v);
        else { fprintf(stderr, "graphcheck: unknown option %s\n", argv[i]); return 2; }
    }
    rmsync_log_set_sink(NULL, NULL, log_level);
    if (i >= argc) {
        fprintf(stderr, "graphcheck: no scenario (see the comment at the top of graphcheck.c)\n");
        return 2;
    }
    if ((rv = rmsync_graph_create(&G, p, &o)) != APR_SUCCESS) {
        fprintf(stderr, "graphcheck: client not created: %s\n", rmsync_graph_strerror(p, rv));
        return 2;
    }
    if (stop_after > 0) {
        apr_thread_t *st;
        static int ms;
        ms = stop_after;
        apr_thread_create(&st, NULL, stopper_main, &ms, p);
        apr_thread_detach(st);
    }
    sc = argv[i];
    argv += i + 1;
    argc -= i + 1;
    t0 = now_ms();

    if (!strcmp(sc, "token")) {
        rv = rmsync_graph_token(G, p, 0, &res);
        out = result_json(rv, &res);
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "user") || !strcmp(sc, "user-wait")) {
        int n = 1, pause = 0, ok = 0;
        cJSON *arr;
        need(argc, 1, "user MAILBOX [N] | user-wait MAILBOX N MS");
        if (argc > 1) n = atoi(argv[1]);
        if (argc > 2) pause = atoi(argv[2]);
        out = cJSON_CreateObject();
        arr = cJSON_AddArrayToObject(out, "calls");
        for (i = 0; i < n; i++) {
            apr_pool_t *cp;
            rmsync_graph_user_t *u = NULL;
            cJSON *r;
            apr_pool_create(&cp, p);
            rv = rmsync_graph_get_user(G, cp, argv[0], &u, &res);
            r = result_json(rv, &res);
            if (u) {
                add_str(r, "id", u->id);
                add_str(r, "mail", u->mail);
                add_str(r, "upn", u->upn);
            }
            cJSON_AddItemToArray(arr, r);
            ok += rv == APR_SUCCESS;
            apr_pool_destroy(cp);
            if (pause && i + 1 < n) apr_sleep(apr_time_from_msec(pause));
        }
        cJSON_AddNumberToObject(out, "ok", ok);
        return emit(out, ok == n);
    }
    if (!strcmp(sc, "delta")) {
        const char *link;
        apr_time_t s, e;
        int ps, pages = 0;
        cJSON *evs;
        need(argc, 4, "delta MAILBOX START END PAGESIZE [LINK]");
        s = parse_t(argv[1]);
        e = parse_t(argv[2]);
        ps = atoi(argv[3]);
        link = argc > 4 ? argv[4] : NULL;
        out = cJSON_CreateObject();
        evs = cJSON_AddArrayToObject(out, "events");
        for (;;) {
            rmsync_graph_delta_t *d = NULL;
            rv = rmsync_graph_delta_page(G, p, argv[0], link, s, e, ps, &d, &res);
            if (rv != APR_SUCCESS) break;
            pages++;
            for (i = 0; i < d->events->nelts; i++) {
                cJSON_AddItemToArray(evs, event_json(p, RMSYNC_ARRAY_IDX(d->events, i,
                                                                      rmsync_event_t *)));
            }
            if (d->bad_items->nelts) {
                cJSON *b = cJSON_GetObjectItem(out, "bad_items");
                if (!b) b = cJSON_AddArrayToObject(out, "bad_items");
                for (i = 0; i < d->bad_items->nelts; i++) {
                    cJSON_AddItemToArray(b, cJSON_CreateString(RMSYNC_ARRAY_IDX(d->bad_items, i,
                                                                             const char *)));
                }
            }
            if (d->delta_link) {
                cJSON_AddStringToObject(out, "delta_link", d->delta_link);
                break;
            }
            link = d->next_link;
            if (pages > 1000) { rv = RMSYNC_GRAPH_BADRESPONSE; break; }   /* loop guard */
        }
        cJSON_AddNumberToObject(out, "pages", pages);
        cJSON_AddItemToObject(out, "result", result_json(rv, &res));
        cJSON_AddStringToObject(out, "status", status_name(rv));
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "get-event")) {
        rmsync_event_t *ev = NULL;
        need(argc, 2, "get-event MAILBOX ID");
        rv = rmsync_graph_get_event(G, p, argv[0], argv[1], &ev, &res);
        out = result_json(rv, &res);
        if (ev) cJSON_AddItemToObject(out, "event", event_json(p, ev));
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "get-events-batch")) {
        rmsync_event_t *evs[RMSYNC_GRAPH_BATCH_MAX + 1];
        cJSON *arr;
        int k, n = argc - 1;
        need(argc, 2, "get-events-batch MAILBOX ID...");
        rv = rmsync_graph_get_events_batch(G, p, argv[0], (const char *const *)argv + 1, n, evs,
                                           &res);
        out = result_json(rv, &res);
        arr = cJSON_AddArrayToObject(out, "events");
        for (k = 0; rv == APR_SUCCESS && k < n; k++) {
            cJSON_AddItemToArray(arr, evs[k] ? event_json(p, evs[k]) : cJSON_CreateNull());
        }
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "create")) {
        rmsync_graph_new_event_t ne;
        rmsync_event_t *ev = NULL;
        need(argc, 4, "create MAILBOX SUBJECT START END [TXID] [ACTIVITYNO]");
        memset(&ne, 0, sizeof(ne));
        ne.subject = argv[1];
        ne.start = parse_t(argv[2]);
        ne.end = parse_t(argv[3]);
        ne.transaction_id = argc > 4 && *argv[4] ? argv[4] : NULL;
        ne.activity_no = argc > 5 && *argv[5] ? argv[5] : NULL;
        ne.body_text = "created by graphcheck";
        rv = rmsync_graph_create_event(G, p, argv[0], &ne, &ev, &res);
        out = result_json(rv, &res);
        if (ev) cJSON_AddItemToObject(out, "event", event_json(p, ev));
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "find")) {
        rmsync_event_t *ev = NULL;
        int count = 0;
        need(argc, 2, "find MAILBOX ACTIVITYNO");
        rv = rmsync_graph_find_event_by_property(G, p, argv[0], argv[1], &ev, &count, &res);
        out = result_json(rv, &res);
        cJSON_AddNumberToObject(out, "count", count);
        if (ev) cJSON_AddItemToObject(out, "event", event_json(p, ev));
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "patch")) {
        rmsync_event_t *ev = NULL;
        cJSON *patch;
        need(argc, 4, "patch MAILBOX ID ETAG|- SUBJECT");
        patch = rmsync_json_object(p);
        cJSON_AddStringToObject(patch, "subject", argv[3]);
        rv = rmsync_graph_patch_event(G, p, argv[0], argv[1], strcmp(argv[2], "-") ? argv[2] : NULL,
                                      patch, &ev, &res);
        out = result_json(rv, &res);
        if (ev) cJSON_AddItemToObject(out, "event", event_json(p, ev));
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "delete")) {
        need(argc, 2, "delete MAILBOX ID [ETAG]");
        rv = rmsync_graph_delete_event(G, p, argv[0], argv[1], argc > 2 ? argv[2] : NULL, &res);
        return emit(result_json(rv, &res), rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "hammer")) {
        int n, calls;
        worker_t *ws;
        apr_thread_t **ts;
        cJSON *arr;
        need(argc, 3, "hammer MAILBOX THREADS CALLS");
        n = atoi(argv[1]);
        calls = atoi(argv[2]);
        if (n < 1 || n > 64) n = 1;
        ws = apr_pcalloc(p, sizeof(*ws) * n);
        ts = apr_pcalloc(p, sizeof(*ts) * n);
        for (i = 0; i < n; i++) { ws[i].mailbox = argv[0]; ws[i].calls = calls; }
        /* one token first, so the threads measure the Graph calls */
        rmsync_graph_token(G, p, 0, NULL);
        out = cJSON_CreateObject();
        if (!run_workers(p, ws, n, ts)) return 2;
        arr = cJSON_AddArrayToObject(out, "threads");
        join_workers(ws, n, ts, arr);
        {
            int ok = 0;
            for (i = 0; i < n; i++) ok += ws[i].ok;
            cJSON_AddNumberToObject(out, "ok", ok);
            cJSON_AddNumberToObject(out, "elapsed_ms", now_ms() - t0);
            return emit(out, ok == n * calls);
        }
    }
    if (!strcmp(sc, "slow-fast")) {
        int n;
        worker_t *ws, fast;
        apr_thread_t **ts, *ft;
        apr_status_t trv;
        cJSON *arr;
        need(argc, 3, "slow-fast SLOW FAST THREADS");
        n = atoi(argv[2]);
        if (n < 1 || n > 32) n = 4;
        ws = apr_pcalloc(p, sizeof(*ws) * n);
        ts = apr_pcalloc(p, sizeof(*ts) * n);
        for (i = 0; i < n; i++) { ws[i].mailbox = argv[0]; ws[i].calls = 2; }
        rmsync_graph_token(G, p, 0, NULL);
        out = cJSON_CreateObject();
        if (!run_workers(p, ws, n, ts)) return 2;
        apr_sleep(apr_time_from_msec(200));   /* the slow mailbox is now saturated */
        memset(&fast, 0, sizeof(fast));
        fast.mailbox = argv[1];
        fast.calls = 3;
        apr_pool_create(&fast.pool, p);
        apr_thread_create(&ft, NULL, worker_main, &fast, p);
        apr_thread_join(&trv, ft);
        cJSON_AddNumberToObject(out, "fast_done_ms", now_ms() - t0);
        cJSON_AddNumberToObject(out, "fast_max_ms", fast.max_ms);
        cJSON_AddNumberToObject(out, "fast_ok", fast.ok);
        arr = cJSON_AddArrayToObject(out, "slow_threads");
        join_workers(ws, n, ts, arr);
        cJSON_AddNumberToObject(out, "slow_done_ms", now_ms() - t0);
        return emit(out, fast.ok == 3);
    }
    if (!strcmp(sc, "sub-create") || !strcmp(sc, "sub-renew") || !strcmp(sc, "sub-get")
        || !strcmp(sc, "sub-delete")) {
        rmsync_graph_subscription_t *sub = NULL;
        if (!strcmp(sc, "sub-create")) {
            need(argc, 5, "sub-create USERID NOTIFYURL LIFEURL|- CLIENTSTATE MINUTES");
            rv = rmsync_graph_subscription_create(G, p, argv[0], argv[1],
                                                  strcmp(argv[2], "-") ? argv[2] : NULL, argv[3],
                                                  apr_time_now() + apr_time_from_sec(60 * atoi(argv[4])),
                                                  &sub, &res);
        }
        else if (!strcmp(sc, "sub-renew")) {
            need(argc, 2, "sub-renew ID MINUTES");
            rv = rmsync_graph_subscription_renew(G, p, argv[0],
                                                 apr_time_now() + apr_time_from_sec(60 * atoi(argv[1])),
                                                 &sub, &res);
        }
        else if (!strcmp(sc, "sub-get")) {
            need(argc, 1, "sub-get ID");
            rv = rmsync_graph_subscription_get(G, p, argv[0], &sub, &res);
        }
        else {
            need(argc, 1, "sub-delete ID");
            rv = rmsync_graph_subscription_delete(G, p, argv[0], &res);
        }
        out = result_json(rv, &res);
        if (sub) {
            cJSON *s = cJSON_AddObjectToObject(out, "subscription");
            add_str(s, "id", sub->id);
            add_str(s, "resource", sub->resource);
            add_str(s, "change_type", sub->change_type);
            add_str(s, "notification_url", sub->notification_url);
            add_str(s, "lifecycle_url", sub->lifecycle_url);
            add_str(s, "client_state", sub->client_state);
            cJSON_AddNumberToObject(s, "expires_in_s",
                                    (double)apr_time_sec(sub->expiration - apr_time_now()));
        }
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "categories")) {
        apr_array_header_t *cats = NULL;
        need(argc, 1, "categories MAILBOX");
        rv = rmsync_graph_categories_list(G, p, argv[0], &cats, &res);
        out = result_json(rv, &res);
        if (cats) {
            cJSON *a = cJSON_AddArrayToObject(out, "categories");
            for (i = 0; i < cats->nelts; i++) {
                rmsync_graph_category_t *c = &RMSYNC_ARRAY_IDX(cats, i, rmsync_graph_category_t);
                cJSON *co = cJSON_CreateObject();
                add_str(co, "name", c->name);
                add_str(co, "color", c->color);
                add_str(co, "id", c->id);
                cJSON_AddItemToArray(a, co);
            }
        }
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "category-create")) {
        int created = 0;
        need(argc, 3, "category-create MAILBOX NAME COLOR");
        rv = rmsync_graph_category_create(G, p, argv[0], argv[1], argv[2], &created, &res);
        out = result_json(rv, &res);
        cJSON_AddBoolToObject(out, "created", created);
        return emit(out, rv == APR_SUCCESS);
    }
    if (!strcmp(sc, "raw")) {
        need(argc, 3, "raw METHOD MAILBOX|- TARGET");
        rv = rmsync_graph_request(G, p, argv[0], strcmp(argv[1], "-") ? argv[1] : NULL, argv[2],
                                  NULL, &res);
        out = result_json(rv, &res);
        if (res.json) cJSON_AddItemToObject(out, "body", cJSON_Duplicate(res.json, 1));
        return emit(out, rv == APR_SUCCESS);
    }
    fprintf(stderr, "graphcheck: unknown scenario %s\n", sc);
    return 2;
}
