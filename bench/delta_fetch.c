/* delta_fetch: the initial-sync BASELINE of bench/run.sh. It only downloads what an initial sync
 * downloads -- one full calendarView/delta round per mailbox, pages of RMSYNC_DELTA_PAGE_SIZE,
 * through the core's own Graph client -- with the same number of mailboxes worked in parallel,
 * and stores nothing. The difference to the module's initial sync is the sync's own work (DB
 * writes, applies, bookkeeping).
 *
 *   delta_fetch --authority URL --graph URL --tenant T --client-id C --secret-file F
 *               [--ca-file F] [--threads N] [--per-mailbox N] --start EPOCH --end EPOCH
 *               MAILBOX...
 *
 * Prints one JSON object: {"mailboxes","pages","events","seconds","errors"}.
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
#include "rmsync_graph.h"
#include "rmsync_json.h"
#include "rmsync_delta.h"

static rmsync_graph_t *G;
static const char *const *mailboxes;
static int nmailboxes;
static volatile apr_uint32_t next_mailbox, pages, events, errors;
static apr_time_t wstart, wend;

static void *APR_THREAD_FUNC worker(apr_thread_t *t, void *data)
{
    apr_pool_t *tp;

    apr_pool_create(&tp, NULL);
    for (;;) {
        apr_uint32_t i = apr_atomic_inc32(&next_mailbox);
        const char *link = NULL;

        if ((int)i >= nmailboxes) {
            break;
        }
        for (;;) {
            rmsync_graph_delta_t *d = NULL;
            rmsync_graph_result_t res;
            apr_pool_t *pp;
            apr_status_t rv;

            apr_pool_create(&pp, tp);
            memset(&res, 0, sizeof(res));
            rv = rmsync_graph_delta_page(G, pp, mailboxes[i], link, wstart, wend,
                                         RMSYNC_DELTA_PAGE_SIZE, &d, &res);
            if (rv != APR_SUCCESS) {
                rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00900) "delta_fetch: %s: %s",
                           mailboxes[i], rmsync_graph_strerror(pp, rv));
                apr_atomic_inc32(&errors);
                apr_pool_destroy(pp);
                break;
            }
            apr_atomic_inc32(&pages);
            apr_atomic_add32(&events, (apr_uint32_t)d->events->nelts);
            if (d->delta_link) {
                apr_pool_destroy(pp);
                break;
            }
            /* the next link outlives the page's pool */
            link = apr_pstrdup(tp, d->next_link);
            apr_pool_destroy(pp);
        }
        apr_pool_clear(tp);
    }
    apr_pool_destroy(tp);
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static char *read_secret(apr_pool_t *p, const char *path)
{
    char buf[8192];
    size_t n;
    FILE *f = fopen(path, "r");

    if (!f) {
        return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return apr_pstrdup(p, buf);
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *p;
    apr_thread_t **ts;
    rmsync_graph_opts_t o;
    rmsync_graph_result_t res;
    apr_status_t rv;
    apr_time_t t0, t1;
    int i, nthreads = 4;

    apr_app_initialize(&argc, &argv, NULL);
    atexit(apr_terminate);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "delta_fetch: curl_global_init failed\n");
        return 2;
    }
    apr_pool_create(&p, NULL);
    rmsync_json_use_arenas();           /* the same client as the runner's */
    rmsync_graph_opts_defaults(&o);
    for (i = 1; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
        const char *k = argv[i] + 2, *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "delta_fetch: %s needs a value\n", argv[i]); return 2; }
        if (!strcmp(k, "authority")) o.authority_url = v;
        else if (!strcmp(k, "graph")) o.graph_url = v;
        else if (!strcmp(k, "tenant")) o.tenant = v;
        else if (!strcmp(k, "client-id")) o.client_id = v;
        else if (!strcmp(k, "secret-file")) o.client_secret = read_secret(p, v);
        else if (!strcmp(k, "ca-file")) o.ca_file = v;
        else if (!strcmp(k, "per-mailbox")) o.per_mailbox = atoi(v);
        else if (!strcmp(k, "threads")) nthreads = atoi(v);
        else if (!strcmp(k, "start")) wstart = apr_time_from_sec(atol(v));
        else if (!strcmp(k, "end")) wend = apr_time_from_sec(atol(v));
        else { fprintf(stderr, "delta_fetch: unknown option %s\n", argv[i]); return 2; }
    }
    rmsync_log_set_sink(NULL, NULL, RMSYNC_LOG_WARNING);
    mailboxes = argv + i;
    nmailboxes = argc - i;
    if (nmailboxes <= 0 || nthreads <= 0 || !wstart || wend <= wstart) {
        fprintf(stderr, "delta_fetch: need --start, --end (epoch seconds), --threads > 0 and "
                        "mailboxes\n");
        return 2;
    }
    if ((rv = rmsync_graph_create(&G, p, &o)) != APR_SUCCESS) {
        fprintf(stderr, "delta_fetch: client not created: %s\n", rmsync_graph_strerror(p, rv));
        return 2;
    }
    /* The module's runner holds a token before its rounds start: so does the baseline. */
    memset(&res, 0, sizeof(res));
    if ((rv = rmsync_graph_token(G, p, 0, &res)) != APR_SUCCESS) {
        fprintf(stderr, "delta_fetch: no token: %s\n", rmsync_graph_strerror(p, rv));
        return 2;
    }
    ts = apr_pcalloc(p, sizeof(*ts) * (apr_size_t)nthreads);
    t0 = apr_time_now();
    for (i = 0; i < nthreads; i++) {
        if (apr_thread_create(&ts[i], NULL, worker, NULL, p) != APR_SUCCESS) {
            fprintf(stderr, "delta_fetch: thread create failed\n");
            return 2;
        }
    }
    for (i = 0; i < nthreads; i++) {
        apr_status_t trv;
        apr_thread_join(&trv, ts[i]);
    }
    t1 = apr_time_now();
    printf("{\"mailboxes\": %d, \"pages\": %u, \"events\": %u, \"seconds\": %.3f, "
           "\"errors\": %u}\n", nmailboxes, apr_atomic_read32(&pages),
           apr_atomic_read32(&events), (double)(t1 - t0) / APR_USEC_PER_SEC,
           apr_atomic_read32(&errors));
    curl_global_cleanup();
    return apr_atomic_read32(&errors) ? 1 : 0;
}
