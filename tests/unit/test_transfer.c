/* Unit tests: transfer body builder and master-category helpers (pure functions). */
#include <check.h>
#include <string.h>
#include <apr_general.h>
#include <apr_strings.h>
#include "rmsync.h"
#include "rmsync_transfer.h"
#include "rmsync_categories.h"
#include "rmsync_event.h"
#include "rmsync_engine.h"
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
    rmsync_attendee_t *at;

    a->activity_no = 1042;
    a->description = "Kick-off \"Q4\" <b>";
    a->start = apr_time_from_sec(1795000000);
    a->end = a->start + apr_time_from_sec(3600);
    a->representative_id = "R1";
    a->attendees = apr_array_make(pool, 2, sizeof(rmsync_attendee_t));
    at = apr_array_push(a->attendees);
    memset(at, 0, sizeof(*at));
    at->email = "carol@example.com";
    at->name = "Carol";
    at = apr_array_push(a->attendees);
    memset(at, 0, sizeof(*at));
    at->email = "bob@example.com";
    return a;
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
    rmsync_graph_new_event_t ne;

    s->transfer_attendees = 0;
    rmsync_transfer_new_event(pool, s, a, "rmsync-x-1042", &ne);
    ck_assert_str_eq(ne.subject, "Kick-off \"Q4\" <b>");
    ck_assert(ne.start == a->start);
    ck_assert(ne.end == a->end);
    ck_assert_str_eq(ne.transaction_id, "rmsync-x-1042");
    ck_assert_str_eq(ne.activity_no, "1042");
    ck_assert_ptr_nonnull(strstr(ne.body_text, "1042"));
    ck_assert_ptr_null(strstr(ne.body_text, "http"));
    ck_assert_ptr_null(ne.attendees);
    ck_assert_int_eq(ne.categories->nelts, 1);
    ck_assert_str_eq(RMSYNC_ARRAY_IDX(ne.categories, 0, const char *), "CRM Business Activity");
}
END_TEST

START_TEST(body_with_attendees_and_url)
{
    rmsync_settings_t *s = settings();
    rmsync_transfer_activity_t *a = activity();
    rmsync_graph_new_event_t ne;

    s->transfer_attendees = 1;
    s->activity_url = "https://crm.example.com/ba/%s";
    rmsync_transfer_new_event(pool, s, a, "t", &ne);
    ck_assert_ptr_nonnull(strstr(ne.body_text, "https://crm.example.com/ba/1042"));
    ck_assert_ptr_nonnull(ne.attendees);
    ck_assert_int_eq(ne.attendees->nelts, 2);
    ck_assert_str_eq(RMSYNC_ARRAY_IDX(ne.attendees, 0, rmsync_attendee_t).email, "carol@example.com");
    ck_assert_str_eq(RMSYNC_ARRAY_IDX(ne.attendees, 1, rmsync_attendee_t).email, "bob@example.com");
}
END_TEST

START_TEST(body_no_category_configured)
{
    rmsync_settings_t *s = settings();
    rmsync_graph_new_event_t ne;

    s->category_name = NULL;
    rmsync_transfer_new_event(pool, s, activity(), "t", &ne);
    ck_assert(ne.categories == NULL || ne.categories->nelts == 0);
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

START_TEST(category_find_case_insensitive)
{
    apr_array_header_t *cats = apr_array_make(pool, 3, sizeof(rmsync_graph_category_t));
    rmsync_graph_category_t *c;
    const rmsync_graph_category_t *hit;

    c = apr_array_push(cats); c->id = "1"; c->name = "Red"; c->color = "preset0";
    c = apr_array_push(cats); c->id = "2"; c->name = "crm business ACTIVITY"; c->color = "preset4";
    c = apr_array_push(cats); c->id = "3"; c->name = NULL; c->color = NULL;
    hit = rmsync_categories_find(cats, "CRM Business Activity");
    ck_assert_ptr_nonnull(hit);
    ck_assert_str_eq(hit->color, "preset4");
    ck_assert_ptr_null(rmsync_categories_find(cats, "Blue"));
    ck_assert_ptr_nonnull(rmsync_categories_find(cats, "red"));
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

/* The category rule's filters decide before any DB or Graph work: with a context that has
 * neither (db, graph NULL), every event below must be passed over without touching them. */
static rmsync_event_t *ev_with(const char *category, int organizer)
{
    rmsync_event_t *ev = apr_pcalloc(pool, sizeof(*ev));

    ev->id = "AAMkEV1";
    ev->subject = "x";
    ev->start = apr_time_from_sec(1795000000);
    ev->end = ev->start + apr_time_from_sec(1800);
    ev->is_organizer = organizer;
    ev->type = RMSYNC_EVENT_TYPE_SINGLE;
    ev->attendees = apr_array_make(pool, 1, sizeof(rmsync_attendee_t));
    ev->categories = apr_array_make(pool, 1, sizeof(const char *));
    if (category) {
        APR_ARRAY_PUSH(ev->categories, const char *) = category;
    }
    return ev;
}

START_TEST(category_rule_filters)
{
    rmsync_rep_ctx_t ctx;
    rmsync_settings_t *s = settings();
    rmsync_event_t *ev;

    memset(&ctx, 0, sizeof(ctx));
    ctx.settings = s;
    ctx.rep_id = "ALICE";
    ctx.pool = pool;
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, NULL), APR_SUCCESS);
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev_with(NULL, 1)), APR_SUCCESS);
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev_with("Red", 1)), APR_SUCCESS);
    /* an attendee's copy */
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev_with("CRM Business Activity", 0)),
                     APR_SUCCESS);
    ev = ev_with("crm business activity", 1);
    ev->is_cancelled = 1;
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev), APR_SUCCESS);
    /* a cancelled occurrence (a plain occurrence is taken since issue 14: one activity each) */
    ev = ev_with("crm business activity", 1);
    ev->type = RMSYNC_EVENT_TYPE_OCCURRENCE;
    ev->is_cancelled = 1;
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev), APR_SUCCESS);
    ev = ev_with("crm business activity", 1);
    ev->type = RMSYNC_EVENT_TYPE_SERIES_MASTER;
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev), APR_SUCCESS);
    /* our own transfer */
    ev = ev_with("CRM Business Activity", 1);
    ev->transaction_id = "rmsync-0123abcd-42";
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev), APR_SUCCESS);
    ev = ev_with("CRM Business Activity", 1);
    ev->removed = 1;
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev), APR_SUCCESS);
    /* no category configured: nothing is ever taken */
    s->category_name = NULL;
    ck_assert_int_eq(rmsync_transfer_unlinked_event(&ctx, ev_with("CRM Business Activity", 1)),
                     APR_SUCCESS);
}
END_TEST

RMSYNC_UNIT_MAIN("transfer", "pure", setup, teardown, 0,
                 txn_id_is_stable, activity_url_template, body_without_attendees,
                 body_with_attendees_and_url, body_no_category_configured, backoff_grows_and_caps,
                 category_find_case_insensitive, category_contains, category_rule_filters)
