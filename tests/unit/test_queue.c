/* Unit tests: webhook notification parsing and the constant-time secret compare (rmsync_queue.c). */
#include <string.h>
#include <check.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "rmsync_queue.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
    apr_terminate();
}

static apr_status_t parse(const char *body, int lifecycle, rmsync_notif_batch_t **b, const char **why)
{
    return rmsync_notif_parse(b, pool, body, strlen(body), lifecycle, why);
}

#define ITEM(b, i) (&APR_ARRAY_IDX((b)->items, (i), rmsync_notif_item_t))

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

START_TEST(secret_compare)
{
    ck_assert_int_eq(rmsync_queue_secret_equals("abc", "abc"), 1);
    ck_assert_int_eq(rmsync_queue_secret_equals("abc", "abd"), 0);
    ck_assert_int_eq(rmsync_queue_secret_equals("abc", "abcd"), 0);
    ck_assert_int_eq(rmsync_queue_secret_equals("", ""), 0);
    ck_assert_int_eq(rmsync_queue_secret_equals(NULL, "abc"), 0);
    ck_assert_int_eq(rmsync_queue_secret_equals("abc", NULL), 0);
}
END_TEST

static Suite *queue_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("parse");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, graph_sample);
    tcase_add_test(tc, event_id_from_resource);
    tcase_add_test(tc, lifecycle_items);
    tcase_add_test(tc, mistyped_fields);
    tcase_add_test(tc, malformed_bodies);
    tcase_add_test(tc, secret_compare);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(queue_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
