/* Unit tests: subscription helpers (rmsync_subs.c): clientState secrets, Graph's lifetime limit. */
#include <string.h>
#include <check.h>
#include <apr_general.h>

#include "rmsync_subs.h"
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

START_TEST(secret_is_random_base64url)
{
    const char *a = NULL, *b = NULL;
    apr_size_t i;

    ck_assert_int_eq(rmsync_subs_new_secret(pool, 32, &a), APR_SUCCESS);
    ck_assert_int_eq(rmsync_subs_new_secret(pool, 32, &b), APR_SUCCESS);
    ck_assert_uint_eq(strlen(a), 43);          /* 32 bytes, no padding */
    ck_assert_str_ne(a, b);
    for (i = 0; a[i]; i++) {
        ck_assert_msg(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]),
                      "not base64url: %c", a[i]);
    }
    ck_assert_int_eq(rmsync_subs_new_secret(pool, 0, &a), APR_EINVAL);
    ck_assert_int_eq(rmsync_subs_new_secret(pool, 65, &a), APR_EINVAL);
    ck_assert_int_eq(rmsync_subs_new_secret(pool, 64, &a), APR_SUCCESS);
    ck_assert_uint_le(strlen(a), 128);
}
END_TEST

START_TEST(max_minutes_from_graph_message)
{
    ck_assert(rmsync_subs_parse_max_minutes(
        "Subscription expiration can only be 4230 minutes in the future.") == 4230.0);
    ck_assert(rmsync_subs_parse_max_minutes(
        "Subscription expiration can only be 0.5 minutes in the future.") == 0.5);
    ck_assert(rmsync_subs_parse_max_minutes("can only be 1 minute in the future") == 1.0);
    ck_assert(rmsync_subs_parse_max_minutes(NULL) == 0);
    ck_assert(rmsync_subs_parse_max_minutes("Subscription validation request failed.") == 0);
    ck_assert(rmsync_subs_parse_max_minutes("can only be minutes") == 0);
    ck_assert(rmsync_subs_parse_max_minutes("can only be -5 minutes") == 0);
    ck_assert(rmsync_subs_parse_max_minutes("can only be 5 hours") == 0);
}
END_TEST

RMSYNC_UNIT_MAIN("subs", "helpers", setup, teardown, 0,
                 secret_is_random_base64url, max_minutes_from_graph_message)
