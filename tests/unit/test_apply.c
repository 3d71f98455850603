/* Unit tests of the apply rules' pure parts (attendee matching key, result names). The database
 * side is covered end to end by tests/test_engine_*.py. */
#include <check.h>
#include <string.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "rmsync_json.h"
#include "rmsync_event.h"
#include "rmsync_apply.h"
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

static rmsync_event_t *event(const char *json)
{
    cJSON *j;
    rmsync_event_t *ev = NULL;
    const char *err = NULL;
    ck_assert_int_eq(rmsync_json_parse(&j, pool, json, strlen(json), 0, NULL), APR_SUCCESS);
    ck_assert_msg(rmsync_event_parse(&ev, pool, j, &err) == APR_SUCCESS, "%s", err ? err : "");
    return ev;
}

#define EV(att) "{\"id\":\"A1\",\"subject\":\"s\"," \
    "\"start\":{\"dateTime\":\"2030-01-01T10:00:00.0000000\",\"timeZone\":\"UTC\"}," \
    "\"end\":{\"dateTime\":\"2030-01-01T11:00:00.0000000\",\"timeZone\":\"UTC\"}," \
    "\"attendees\":[" att "]}"
#define AT(addr) "{\"type\":\"required\",\"emailAddress\":{\"address\":\"" addr "\"}}"

START_TEST(key_sorted_lowercase_unique)
{
    rmsync_event_t *ev = event(EV(AT("Bob@Demo.test") "," AT("ann@example.com") ","
                                  AT("BOB@demo.test") "," AT(" carl@x.test ")));
    ck_assert_str_eq(rmsync_apply_attendee_key(pool, ev),
                     "ann@example.com\nbob@demo.test\ncarl@x.test");
}
END_TEST

START_TEST(key_order_independent)
{
    rmsync_event_t *a = event(EV(AT("x@a.test") "," AT("y@a.test")));
    rmsync_event_t *b = event(EV(AT("Y@A.TEST") "," AT("x@a.test")));
    ck_assert_str_eq(rmsync_apply_attendee_key(pool, a), rmsync_apply_attendee_key(pool, b));
}
END_TEST

START_TEST(key_empty_and_unusable)
{
    rmsync_event_t *none = event(EV(""));
    /* an attendee without an address, or one with a control character, never matches */
    rmsync_event_t *odd = event(EV("{\"type\":\"required\",\"emailAddress\":{\"name\":\"N\"}},"
                                   AT("a\\u0001b@x.test")));
    ck_assert_str_eq(rmsync_apply_attendee_key(pool, none), "");
    ck_assert_str_eq(rmsync_apply_attendee_key(pool, odd), "");
}
END_TEST

START_TEST(result_names)
{
    ck_assert_str_eq(rmsync_apply_result_name(RMSYNC_APPLY_UNCHANGED), "unchanged");
    ck_assert_str_eq(rmsync_apply_result_name(RMSYNC_APPLY_PENDING_DELETE), "pending-delete");
    ck_assert_str_eq(rmsync_apply_result_name(RMSYNC_APPLY_RECHECK), "recheck");
    ck_assert_str_eq(rmsync_apply_result_name((rmsync_apply_result_e)99), "?");
}
END_TEST

RMSYNC_UNIT_MAIN("apply", "apply", setup, teardown, 0,
                 key_sorted_lowercase_unique, key_order_independent, key_empty_and_unusable,
                 result_names)
