/* Unit tests: webhook notification parsing (rmsync_intake.c),
 * the webhook payload corpus (tests/corpus/webhook) and random mutations of it. */
#include <stdlib.h>
#include <string.h>
#include <check.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_file_io.h>

#include "rmsync.h"
#include "rmsync_intake.h"
#include "unit_main.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static apr_status_t parse(const char *body, int lifecycle, rmsync_notif_batch_t **b, const char **why)
{
    return rmsync_notif_parse(b, pool, body, strlen(body), lifecycle, why);
}

#define ITEM(b, i) (&RMSYNC_ARRAY_IDX((b)->items, (i), rmsync_notif_item_t))

START_TEST(graph_sample)
{
    const char *body =
        "{\"value\":[{\"id\":\"lsgTZMr9KwAAA\",\"subscriptionId\":\"7f105c7d\","
        "\"subscriptionExpirationDateTime\":\"2025-06-03T11:00:00.0000000Z\",\"changeType\":\"updated\","
        "\"resource\":\"Users/622eaaff/Events/AAMkAGUwNjQ4ZjIxAAA=\","
        "\"resourceData\":{\"@odata.type\":\"#Microsoft.Graph.Event\",\"id\":\"AAMkAGUwNjQ4ZjIxAAA=\"},"
        "\"clientState\":\"s3cret\",\"tenantId\":\"84bd8158\"}]}";
    rmsync_notif_batch_t *b;
    const char *why;

    ck_assert_int_eq(parse(body, 0, &b, &why), APR_SUCCESS);
    ck_assert_int_eq(b->items->nelts, 1);
    ck_assert_int_eq(b->invalid, 0);
    ck_assert_int_eq(ITEM(b, 0)->kind, RMSYNC_NOTIF_CHANGE);
    ck_assert_str_eq(ITEM(b, 0)->subscription_id, "7f105c7d");
    ck_assert_str_eq(ITEM(b, 0)->change_type, "updated");
    ck_assert_str_eq(ITEM(b, 0)->event_id, "AAMkAGUwNjQ4ZjIxAAA=");
    ck_assert_str_eq(ITEM(b, 0)->client_state, "s3cret");
    ck_assert_ptr_null(ITEM(b, 0)->lifecycle_event);
}
END_TEST

START_TEST(event_id_from_resource)
{
    const char *body = "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"deleted\","
                       "\"resource\":\"Users/u1/Events/EV1\",\"clientState\":\"x\"},"
                       "{\"subscriptionId\":\"a\",\"changeType\":\"created\","
                       "\"resource\":\"Users/u1/Messages/M1\",\"clientState\":\"x\"}]}";
    rmsync_notif_batch_t *b;
    const char *why;

    ck_assert_int_eq(parse(body, 0, &b, &why), APR_SUCCESS);
    ck_assert_int_eq(b->items->nelts, 1);
    ck_assert_int_eq(b->invalid, 1);   /* not an events resource, no resourceData */
    ck_assert_str_eq(ITEM(b, 0)->event_id, "EV1");
    ck_assert_str_eq(ITEM(b, 0)->change_type, "deleted");
}
END_TEST

START_TEST(lifecycle_items)
{
    const char *body = "{\"value\":[{\"subscriptionId\":\"a\",\"lifecycleEvent\":\"missed\","
                       "\"clientState\":\"x\",\"tenantId\":\"t\"},"
                       "{\"subscriptionId\":\"a\",\"lifecycleEvent\":\"subscriptionRemoved\"},"
                       "{\"subscriptionId\":\"a\",\"lifecycleEvent\":\"somethingElse\"},"
                       "{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resourceData\":{\"id\":\"E\"}}]}";
    rmsync_notif_batch_t *b;
    const char *why;

    ck_assert_int_eq(parse(body, 1, &b, &why), APR_SUCCESS);
    ck_assert_int_eq(b->items->nelts, 2);
    ck_assert_int_eq(b->invalid, 2);   /* unknown lifecycle event; change item on lifecycle URL */
    ck_assert_int_eq(ITEM(b, 0)->kind, RMSYNC_NOTIF_LIFECYCLE);
    ck_assert_str_eq(ITEM(b, 0)->lifecycle_event, "missed");
    ck_assert_ptr_null(ITEM(b, 1)->client_state);
    /* the notification URL accepts both kinds */
    ck_assert_int_eq(parse(body, 0, &b, &why), APR_SUCCESS);
    ck_assert_int_eq(b->items->nelts, 3);
}
END_TEST

START_TEST(mistyped_fields)
{
    const char *body = "{\"value\":[1, \"x\", null, {},"
                       "{\"subscriptionId\":5,\"changeType\":\"updated\",\"resourceData\":{\"id\":\"E\"}},"
                       "{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resourceData\":{\"id\":7}},"
                       "{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resourceData\":\"E\"},"
                       "{\"subscriptionId\":\"a\",\"changeType\":\"moved\",\"resourceData\":{\"id\":\"E\"}},"
                       "{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"clientState\":[],\"resourceData\":{\"id\":\"E\"}},"
                       "{\"subscriptionId\":\"\",\"changeType\":\"updated\",\"resourceData\":{\"id\":\"E\"}},"
                       "{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resourceData\":{\"id\":\"E\"}}]}";
    rmsync_notif_batch_t *b;
    const char *why;

    ck_assert_int_eq(parse(body, 0, &b, &why), APR_SUCCESS);
    ck_assert_int_eq(b->items->nelts, 1);
    ck_assert_int_eq(b->invalid, 10);
}
END_TEST

START_TEST(malformed_bodies)
{
    rmsync_notif_batch_t *b;
    const char *why;
    char *big;
    int i;

    ck_assert_int_eq(parse("{\"value\":[", 0, &b, &why), RMSYNC_QUEUE_EJSON);
    ck_assert_ptr_nonnull(why);
    ck_assert_int_eq(parse("", 0, &b, &why), RMSYNC_QUEUE_EJSON);
    ck_assert_int_eq(parse("{\"value\":[]} trailing", 0, &b, &why), RMSYNC_QUEUE_EJSON);
    ck_assert_int_eq(parse("{}", 0, &b, &why), RMSYNC_QUEUE_ENOVALUE);
    ck_assert_int_eq(parse("{\"value\":{}}", 0, &b, &why), RMSYNC_QUEUE_ENOVALUE);
    ck_assert_int_eq(parse("[]", 0, &b, &why), RMSYNC_QUEUE_ENOVALUE);
    ck_assert_int_eq(parse("{\"Value\":[]}", 0, &b, &why), RMSYNC_QUEUE_ENOVALUE);
    ck_assert_int_eq(parse("{\"value\":[]}", 0, &b, &why), APR_SUCCESS);
    ck_assert_int_eq(b->items->nelts, 0);
    /* not NUL-terminated: the parser stops at len */
    ck_assert_int_eq(rmsync_notif_parse(&b, pool, "{\"value\":[]}XXXX", 12, 0, &why), APR_SUCCESS);
    big = apr_palloc(pool, 4 * (RMSYNC_QUEUE_MAX_ITEMS + 2) + 16);
    strcpy(big, "{\"value\":[");
    for (i = 0; i <= RMSYNC_QUEUE_MAX_ITEMS; i++) {
        strcat(big, i ? ",{}" : "{}");
    }
    strcat(big, "]}");
    ck_assert_int_eq(parse(big, 0, &b, &why), RMSYNC_QUEUE_ETOOMANY);
}
END_TEST

static char *slurp(const char *rel, apr_size_t *plen)
{
    return rmsync_unit_corpus_read(pool, apr_pstrcat(pool, "webhook/", rel, NULL), plen);
}

/* Expected outcome of each corpus file on the notification URL (lifecycle_endpoint 0) and on the
 * lifecycle URL (1): status, well-formed items, malformed items. */
static const struct {
    const char *file;
    apr_status_t rv[2];
    int items[2], invalid[2];
} corpus[] = {
    { "notify_graph_sample.json",  { APR_SUCCESS, APR_SUCCESS }, { 1, 0 }, { 0, 1 } },
    { "notify_batch_mixed.json",   { APR_SUCCESS, APR_SUCCESS }, { 4, 1 }, { 1, 4 } },
    { "lifecycle_all.json",        { APR_SUCCESS, APR_SUCCESS }, { 3, 3 }, { 0, 0 } },
    { "notify_rich_encrypted.json",{ APR_SUCCESS, APR_SUCCESS }, { 1, 0 }, { 0, 1 } },
    { "notify_empty.json",         { APR_SUCCESS, APR_SUCCESS }, { 0, 0 }, { 0, 0 } },
    { "bad_items_mistyped.json",   { APR_SUCCESS, APR_SUCCESS }, { 1, 0 }, { 6, 7 } },
    { "bad_value_object.json",     { RMSYNC_QUEUE_ENOVALUE, RMSYNC_QUEUE_ENOVALUE }, { 0, 0 }, { 0, 0 } },
    { "bad_value_missing.json",    { RMSYNC_QUEUE_ENOVALUE, RMSYNC_QUEUE_ENOVALUE }, { 0, 0 }, { 0, 0 } },
    { "bad_truncated.json",        { RMSYNC_QUEUE_EJSON, RMSYNC_QUEUE_EJSON }, { 0, 0 }, { 0, 0 } },
    { "bad_two_documents.json",    { RMSYNC_QUEUE_EJSON, RMSYNC_QUEUE_EJSON }, { 0, 0 }, { 0, 0 } },
};

START_TEST(corpus_replay)
{
    int i, lc;

    for (i = 0; i < (int)(sizeof(corpus) / sizeof(corpus[0])); i++) {
        apr_size_t len;
        char *buf = slurp(corpus[i].file, &len);
        for (lc = 0; lc < 2; lc++) {
            rmsync_notif_batch_t *b = NULL;
            const char *why = NULL;
            apr_status_t rv = rmsync_notif_parse(&b, pool, buf, len, lc, &why);
            ck_assert_msg(rv == corpus[i].rv[lc], "%s (lifecycle %d): status %d", corpus[i].file,
                          lc, rv);
            if (rv != APR_SUCCESS) {
                ck_assert_ptr_nonnull(why);
                ck_assert_ptr_null(b);
                continue;
            }
            ck_assert_msg(b->items->nelts == corpus[i].items[lc] && b->invalid == corpus[i].invalid[lc],
                          "%s (lifecycle %d): %d items, %d invalid", corpus[i].file, lc,
                          b->items->nelts, b->invalid);
        }
    }
}
END_TEST

/* Random byte mutations of the corpus: whatever the parser says must be consistent and nothing
 * may crash or read out of bounds (the buffer is not NUL-terminated; run under ASan/valgrind). */
START_TEST(mutations)
{
    const char *files[] = { "notify_batch_mixed.json", "notify_graph_sample.json", "lifecycle_all.json" };
    unsigned seed = 4242;
    int f, i, parsed = 0;

    for (f = 0; f < 3; f++) {
        apr_size_t len;
        char *orig = slurp(files[f], &len);
        for (i = 0; i < 2000; i++) {
            static const char repl[] = "{}[]\":,0aZ \\tn-.e\x01\xff";
            apr_pool_t *sp;
            rmsync_notif_batch_t *b = NULL;
            const char *why = NULL;
            apr_status_t rv;
            char *buf;
            int k, nmut, n;

            apr_pool_create(&sp, pool);
            buf = apr_palloc(sp, len);          /* exactly len bytes: no terminator to lean on */
            memcpy(buf, orig, len);
            seed = seed * 1103515245u + 12345u;
            nmut = 1 + (int)((seed >> 16) % 4);
            for (k = 0; k < nmut; k++) {
                seed = seed * 1103515245u + 12345u;
                buf[(seed >> 8) % len] = repl[(seed >> 20) % (sizeof(repl) - 1)];
            }
            seed = seed * 1103515245u + 12345u;
            n = (int)((seed >> 10) % (len + 1));   /* and sometimes a truncation */
            rv = rmsync_notif_parse(&b, sp, buf, (i % 5) ? len : (apr_size_t)n, i & 1, &why);
            if (rv == APR_SUCCESS) {
                int j;
                parsed++;
                ck_assert_ptr_nonnull(b);
                for (j = 0; j < b->items->nelts; j++) {
                    const rmsync_notif_item_t *it = ITEM(b, j);
                    ck_assert(it->subscription_id && *it->subscription_id);
                    ck_assert(it->kind == RMSYNC_NOTIF_LIFECYCLE ? it->lifecycle_event != NULL
                                                                 : it->event_id && it->change_type);
                }
            }
            else {
                ck_assert(rv == RMSYNC_QUEUE_EJSON || rv == RMSYNC_QUEUE_ENOVALUE);
                ck_assert_ptr_nonnull(why);
            }
            apr_pool_destroy(sp);
        }
    }
    ck_assert_int_gt(parsed, 100);   /* the mutations also exercised the item checks */
}
END_TEST

START_TEST(deep_nesting_and_long_strings)
{
    rmsync_notif_batch_t *b;
    const char *why;
    apr_size_t n = 200000, i;
    char *deep = apr_palloc(pool, n + 16), *longid;

    /* far beyond cJSON's nesting limit: refused, no stack overflow */
    strcpy(deep, "{\"value\":");
    for (i = strlen(deep); i < n; i++) {
        deep[i] = '[';
    }
    ck_assert_int_eq(rmsync_notif_parse(&b, pool, deep, n, 0, &why), RMSYNC_QUEUE_EJSON);
    /* an id above the cap makes the item malformed, not the batch */
    longid = apr_palloc(pool, RMSYNC_QUEUE_MAX_ID_LEN + 2);
    memset(longid, 'x', RMSYNC_QUEUE_MAX_ID_LEN + 1);
    longid[RMSYNC_QUEUE_MAX_ID_LEN + 1] = '\0';
    deep = apr_psprintf(pool, "{\"value\":[{\"subscriptionId\":\"%s\",\"changeType\":\"updated\","
                        "\"resourceData\":{\"id\":\"E\"}},{\"subscriptionId\":\"a\",\"changeType\":"
                        "\"updated\",\"resourceData\":{\"id\":\"%s\"}}]}", longid, longid);
    ck_assert_int_eq(parse(deep, 0, &b, &why), APR_SUCCESS);
    ck_assert_int_eq(b->items->nelts, 0);
    ck_assert_int_eq(b->invalid, 2);
}
END_TEST

RMSYNC_UNIT_MAIN("intake", "parse", setup, teardown, 60,
                 graph_sample, event_id_from_resource, lifecycle_items, mistyped_fields,
                 malformed_bodies, corpus_replay, mutations, deep_nesting_and_long_strings)
