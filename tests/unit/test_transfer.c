/* Unit tests: transfer body builder and master-category helpers (pure functions). */
#include <check.h>
#include <string.h>
#include <apr_general.h>
#include <apr_strings.h>
#include "rmsync_transfer.h"
#include "rmsync_categories.h"
#include "rmsync_event.h"
#include "rmsync_json.h"

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

static rmsync_settings_t *settings(void)
{
    rmsync_settings_t *s = apr_pcalloc(pool, sizeof(*s));
    rmsync_settings_defaults(s);
    s->category_name = "CRM Business Activity";
    return s;
}

static rmsync_transfer_activity_t *activity(void)
{
    rmsync_transfer_activity_t *a = apr_pcalloc(pool, sizeof(*a));
    rmsync_transfer_attendee_t *at;

    a->activity_no = 1042;
    a->description = "Kick-off \"Q4\" <b>";
    a->start = apr_time_from_sec(1795000000);
    a->end = a->start + apr_time_from_sec(3600);
    a->representative_id = "R1";
    a->attendees = apr_array_make(pool, 2, sizeof(rmsync_transfer_attendee_t));
    at = apr_array_push(a->attendees);
    at->email = "carol@example.com";
    at->name = "Carol";
    at = apr_array_push(a->attendees);
    at->email = "bob@example.com";
    at->name = NULL;
    return a;
}

static const char *str(const cJSON *o, const char *path)
{
    const char *v = NULL;
    ck_assert_int_eq(rmsync_json_path_string(o, path, &v), APR_SUCCESS);
    return v;
}

START_TEST(txn_id_is_stable)
{
    const char *a = rmsync_transfer_txn_id(pool, "abc", 7);
    const char *b = rmsync_transfer_txn_id(pool, "abc", 7);
    ck_assert_str_eq(a, "rmsync-abc-7");
    ck_assert_str_eq(a, b);
    ck_assert_str_ne(a, rmsync_transfer_txn_id(pool, "abd", 7));
    ck_assert_str_ne(a, rmsync_transfer_txn_id(pool, "abc", 8));
}
END_TEST

START_TEST(activity_url_template)
{
    ck_assert_ptr_null(rmsync_transfer_activity_url(pool, NULL, 5));
    ck_assert_str_eq(rmsync_transfer_activity_url(pool, "https://crm/x?no=%s&y=1", 5),
                     "https://crm/x?no=5&y=1");
    ck_assert_str_eq(rmsync_transfer_activity_url(pool, "https://crm/static", 5), "https://crm/static");
    ck_assert_ptr_null(rmsync_transfer_activity_url(pool, "https://crm/%d", 5));
    ck_assert_ptr_null(rmsync_transfer_activity_url(pool, "https://crm/%s/%s", 5));
    ck_assert_ptr_null(rmsync_transfer_activity_url(pool, "https://crm/%n", 5));
}
END_TEST

START_TEST(body_without_attendees)
{
    rmsync_settings_t *s = settings();
    rmsync_transfer_activity_t *a = activity();
    cJSON *ev, *arr, *p0;

    s->transfer_attendees = 0;
    ev = rmsync_transfer_event_body(pool, s, a, "rmsync-x-1042");
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(str(ev, "subject"), "Kick-off \"Q4\" <b>");
    ck_assert_str_eq(str(ev, "start/timeZone"), "UTC");
    ck_assert_str_eq(str(ev, "start/dateTime"), rmsync_event_format_time(pool, a->start));
    ck_assert_str_eq(str(ev, "end/dateTime"), rmsync_event_format_time(pool, a->end));
    ck_assert_str_eq(str(ev, "transactionId"), "rmsync-x-1042");
    ck_assert_str_eq(str(ev, "body/contentType"), "text");
    ck_assert_ptr_nonnull(strstr(str(ev, "body/content"), "1042"));
    ck_assert_ptr_null(rmsync_json_member(ev, "attendees"));
    arr = rmsync_json_member(ev, "categories");
    ck_assert_int_eq(cJSON_GetArraySize(arr), 1);
    ck_assert_str_eq(cJSON_GetArrayItem(arr, 0)->valuestring, "CRM Business Activity");
    arr = rmsync_json_member(ev, "singleValueExtendedProperties");
    ck_assert_int_eq(cJSON_GetArraySize(arr), 1);
    p0 = cJSON_GetArrayItem(arr, 0);
    ck_assert_str_eq(str(p0, "id"), RMSYNC_EVENT_PROP_ACTIVITY);
    ck_assert_str_eq(str(p0, "value"), "1042");
}
END_TEST

START_TEST(body_with_attendees_and_url)
{
    rmsync_settings_t *s = settings();
    rmsync_transfer_activity_t *a = activity();
    cJSON *ev, *arr;

    s->transfer_attendees = 1;
    s->activity_url = "https://crm.example.com/ba/%s";
    ev = rmsync_transfer_event_body(pool, s, a, "t");
    ck_assert_ptr_nonnull(strstr(str(ev, "body/content"), "https://crm.example.com/ba/1042"));
    arr = rmsync_json_member(ev, "attendees");
    ck_assert_int_eq(cJSON_GetArraySize(arr), 2);
    ck_assert_str_eq(str(cJSON_GetArrayItem(arr, 0), "emailAddress/address"), "carol@example.com");
    ck_assert_str_eq(str(cJSON_GetArrayItem(arr, 0), "emailAddress/name"), "Carol");
    ck_assert_str_eq(str(cJSON_GetArrayItem(arr, 1), "emailAddress/address"), "bob@example.com");
    ck_assert_str_eq(str(cJSON_GetArrayItem(arr, 1), "type"), "required");
}
END_TEST

START_TEST(body_no_category_configured)
{
    rmsync_settings_t *s = settings();
    cJSON *ev;

    s->category_name = NULL;
    ev = rmsync_transfer_event_body(pool, s, activity(), "t");
    ck_assert_int_eq(cJSON_GetArraySize(rmsync_json_member(ev, "categories")), 0);
}
END_TEST

START_TEST(backoff_grows_and_caps)
{
    ck_assert(rmsync_transfer_backoff(1) == apr_time_from_sec(5));
    ck_assert(rmsync_transfer_backoff(2) == apr_time_from_sec(10));
    ck_assert(rmsync_transfer_backoff(3) == apr_time_from_sec(20));
    ck_assert(rmsync_transfer_backoff(50) == apr_time_from_sec(600));
}
END_TEST

START_TEST(category_colour)
{
    ck_assert(rmsync_categories_color_valid("preset0"));
    ck_assert(rmsync_categories_color_valid("Preset24"));
    ck_assert(rmsync_categories_color_valid("none"));
    ck_assert(!rmsync_categories_color_valid("preset25"));
    ck_assert(!rmsync_categories_color_valid("preset"));
    ck_assert(!rmsync_categories_color_valid("preset1x"));
    ck_assert(!rmsync_categories_color_valid("preset007"));
    ck_assert(!rmsync_categories_color_valid(""));
    ck_assert(!rmsync_categories_color_valid(NULL));
}
END_TEST

START_TEST(category_find_case_insensitive)
{
    cJSON *j;
    const char *txt = "{\"value\":[{\"displayName\":\"Red\",\"color\":\"preset0\"},"
                      "{\"displayName\":\"crm business ACTIVITY\",\"color\":\"preset4\"},"
                      "{\"displayName\":5}]}";
    const cJSON *hit;

    ck_assert_int_eq(rmsync_json_parse(&j, pool, txt, strlen(txt), 0, NULL), APR_SUCCESS);
    hit = rmsync_categories_find(j, "CRM Business Activity");
    ck_assert_ptr_nonnull(hit);
    ck_assert_str_eq(str(hit, "color"), "preset4");
    ck_assert_ptr_null(rmsync_categories_find(j, "Blue"));
    ck_assert_ptr_nonnull(rmsync_categories_find(rmsync_json_member(j, "value"), "red"));
    ck_assert_ptr_null(rmsync_categories_find(NULL, "red"));
}
END_TEST

START_TEST(category_contains)
{
    apr_array_header_t *c = apr_array_make(pool, 2, sizeof(const char *));

    ck_assert(!rmsync_categories_contains(c, "CRM Business Activity"));
    APR_ARRAY_PUSH(c, const char *) = "Red";
    APR_ARRAY_PUSH(c, const char *) = "crm business activity";
    ck_assert(rmsync_categories_contains(c, "CRM Business Activity"));
    ck_assert(!rmsync_categories_contains(c, "CRM"));
    ck_assert(!rmsync_categories_contains(c, ""));
    ck_assert(!rmsync_categories_contains(NULL, "Red"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("transfer");
    TCase *tc = tcase_create("pure");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, txn_id_is_stable);
    tcase_add_test(tc, activity_url_template);
    tcase_add_test(tc, body_without_attendees);
    tcase_add_test(tc, body_with_attendees_and_url);
    tcase_add_test(tc, body_no_category_configured);
    tcase_add_test(tc, backoff_grows_and_caps);
    tcase_add_test(tc, category_colour);
    tcase_add_test(tc, category_find_case_insensitive);
    tcase_add_test(tc, category_contains);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
