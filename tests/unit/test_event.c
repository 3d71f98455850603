/* Unit tests: rmsync_event (Graph event JSON -> model, time parsing, content hash), replayed over
 * tests/corpus (good_*, bad_*, delta pages) plus random mutations of a good event. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_file_io.h>
#include "rmsync.h"
#include "rmsync_json.h"
#include "rmsync_event.h"
#include "unit_main.h"

static apr_pool_t *pool;

static void setup(void) { apr_pool_create(&pool, NULL); }
static void teardown(void) { apr_pool_destroy(pool); }

static cJSON *load(const char *rel)
{
    apr_size_t len;
    char *buf = rmsync_unit_corpus_read(pool, rel, &len);
    cJSON *j = NULL;
    ck_assert_msg(rmsync_json_parse(&j, pool, buf, len, 0, NULL) == APR_SUCCESS, "parse %s", rel);
    return j;
}

static rmsync_event_t *load_event(const char *rel)
{
    rmsync_event_t *ev = NULL;
    const char *err = NULL;
    apr_status_t rv = rmsync_event_parse(&ev, pool, load(rel), &err);
    ck_assert_msg(rv == APR_SUCCESS, "%s: %s", rel, err ? err : "?");
    return ev;
}

#define SEC(s) ((apr_time_t)(s) * APR_USEC_PER_SEC)

START_TEST(test_good_single)
{
    rmsync_event_t *ev = load_event("events/good_single.json");
    const rmsync_attendee_t *a;

    ck_assert_str_eq(ev->id, "AAMkAGI1AAAt9AHjAAA=");
    ck_assert_str_eq(ev->change_key, "ZlnW4RIAV06KYYwlrfNZvQAALfZeRQ==");
    ck_assert_str_eq(ev->etag, "W/\"ZlnW4RIAV06KYYwlrfNZvQAALfZeRQ==\"");
    ck_assert_str_eq(ev->ical_uid, "040000008200E00074C5B7101A82E008000000");
    ck_assert_str_eq(ev->subject, "Let's go for lunch");
    ck_assert(ev->start == SEC(1492282800));
    ck_assert(ev->end == SEC(1492290000));
    ck_assert(ev->last_modified == SEC(1492225251) + 245372);
    ck_assert_int_eq(ev->is_all_day, 0);
    ck_assert_int_eq(ev->is_cancelled, 0);
    ck_assert_int_eq(ev->is_organizer, 1);
    ck_assert_int_eq(ev->type, RMSYNC_EVENT_TYPE_SINGLE);
    ck_assert_ptr_null(ev->series_master_id);
    ck_assert_ptr_null(ev->transaction_id);
    ck_assert_str_eq(ev->organizer_email, "danas@contoso.onmicrosoft.com");
    ck_assert_str_eq(ev->organizer_name, "Dana Swope");
    ck_assert_int_eq(ev->attendees->nelts, 2);
    a = &RMSYNC_ARRAY_IDX(ev->attendees, 0, rmsync_attendee_t);
    ck_assert_str_eq(a->email, "SamanthaB@contoso.onmicrosoft.com");
    ck_assert_str_eq(a->email_lc, "samanthab@contoso.onmicrosoft.com");
    ck_assert_str_eq(a->name, "Samantha Booth");
    ck_assert_str_eq(a->type, "required");
    ck_assert_str_eq(a->response, "none");
    a = &RMSYNC_ARRAY_IDX(ev->attendees, 1, rmsync_attendee_t);
    ck_assert_str_eq(a->response, "accepted");
    ck_assert_int_eq(ev->categories->nelts, 2);
    ck_assert_str_eq(RMSYNC_ARRAY_IDX(ev->categories, 0, const char *), "CRM Business Activity");
    ck_assert_str_eq(ev->activity_no, "BA-000123");
    ck_assert_int_eq(ev->removed, 0);
    ck_assert_int_eq(ev->partial, 0);
    ck_assert_ptr_nonnull(ev->hash);
    ck_assert_uint_eq(strlen(ev->hash), 40);
}
END_TEST

START_TEST(test_hash_same_state)
{
    rmsync_event_t *a = load_event("events/good_single.json");
    rmsync_event_t *b = load_event("events/good_same_state_reordered.json");
    /* different changeKey, body, categories, attendee order/case/duplicates: same state */
    ck_assert_str_eq(a->hash, b->hash);
    ck_assert_str_eq(rmsync_event_hash(pool, a), a->hash);   /* stable */
}
END_TEST

START_TEST(test_hash_changes)
{
    rmsync_event_t *a = load_event("events/good_single.json");
    rmsync_event_t c = *a;
    const char *h0 = a->hash;
    rmsync_attendee_t *at;

    c.subject = "Let's go for dinner";
    ck_assert_str_ne(rmsync_event_hash(pool, &c), h0);
    c = *a;
    c.start += APR_USEC_PER_SEC * 60;
    ck_assert_str_ne(rmsync_event_hash(pool, &c), h0);
    c = *a;
    c.end += 1;
    ck_assert_str_ne(rmsync_event_hash(pool, &c), h0);
    c = *a;
    c.is_cancelled = 1;
    ck_assert_str_ne(rmsync_event_hash(pool, &c), h0);
    c = *a;
    c.attendees = apr_array_copy(pool, a->attendees);
    at = apr_array_push(c.attendees);
    memset(at, 0, sizeof(*at));
    at->email = at->email_lc = "new@contoso.com";
    ck_assert_str_ne(rmsync_event_hash(pool, &c), h0);
    c = *a;
    c.attendees = apr_array_copy(pool, a->attendees);
    c.attendees->nelts = 1;
    ck_assert_str_ne(rmsync_event_hash(pool, &c), h0);
    /* subject "" and NULL are the same state; not hashing unrelated fields */
    c = *a;
    c.change_key = "other";
    c.categories = apr_array_make(pool, 1, sizeof(char *));
    c.is_organizer = 0;
    ck_assert_str_eq(rmsync_event_hash(pool, &c), h0);
    /* ambiguous concatenations differ */
    c = *a;
    c.subject = "ab";
    c.attendees = apr_array_make(pool, 1, sizeof(rmsync_attendee_t));
    {
        rmsync_event_t d = c;
        d.subject = "a";
        at = apr_array_push(c.attendees);
        memset(at, 0, sizeof(*at));
        at->email_lc = "c";
        d.attendees = apr_array_make(pool, 1, sizeof(rmsync_attendee_t));
        at = apr_array_push(d.attendees);
        memset(at, 0, sizeof(*at));
        at->email_lc = "bc";
        ck_assert_str_ne(rmsync_event_hash(pool, &c), rmsync_event_hash(pool, &d));
    }
}
END_TEST

START_TEST(test_sparse_allday_offset_removed)
{
    rmsync_event_t *ev = load_event("events/good_occurrence_sparse.json");
    ck_assert_int_eq(ev->partial, 1);
    ck_assert_ptr_null(ev->hash);
    ck_assert_int_eq(ev->type, RMSYNC_EVENT_TYPE_OCCURRENCE);
    ck_assert_str_eq(ev->series_master_id, "AAMkADQwMD_master");

    ev = load_event("events/good_allday_nulls.json");
    ck_assert_int_eq(ev->partial, 0);
    ck_assert_ptr_null(ev->subject);
    ck_assert_int_eq(ev->is_all_day, 1);
    ck_assert_int_eq(ev->is_cancelled, 1);
    ck_assert_int_eq(ev->is_organizer, 0);
    ck_assert_int_eq(ev->categories->nelts, 0);
    ck_assert_ptr_null(ev->organizer_email);
    ck_assert_int_eq(ev->type, RMSYNC_EVENT_TYPE_SERIES_MASTER);
    ck_assert_str_eq(ev->id, "AAMkAllDay+/=_-id");
    ck_assert_ptr_nonnull(ev->hash);

    ev = load_event("events/good_offset_times.json");
    ck_assert(ev->start == SEC(1795600800));
    ck_assert(ev->end == SEC(1795602600) + 500000);
    ck_assert_int_eq(ev->attendees->nelts, 1);
    ck_assert_ptr_null(RMSYNC_ARRAY_IDX(ev->attendees, 0, rmsync_attendee_t).email);
    ck_assert_int_eq(ev->type, RMSYNC_EVENT_TYPE_UNKNOWN);

    ev = load_event("events/good_removed.json");
    ck_assert_int_eq(ev->removed, 1);
    ck_assert_str_eq(ev->removed_reason, "deleted");
    ck_assert_str_eq(ev->id, "AAMkADk0removed");
    ck_assert_ptr_null(ev->hash);
}
END_TEST

/* Every events/bad_*.json is rejected with a message, every good_*.json accepted. */
START_TEST(test_corpus_events)
{
    char path[1024];
    DIR *d;
    struct dirent *e;
    int good = 0, bad = 0;

    apr_snprintf(path, sizeof(path), "%s/events", rmsync_unit_corpus_dir());
    d = opendir(path);
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        char rel[512];
        rmsync_event_t *ev = NULL;
        const char *err = NULL;
        apr_status_t rv;
        if (!strstr(e->d_name, ".json")) continue;
        apr_snprintf(rel, sizeof(rel), "events/%s", e->d_name);
        rv = rmsync_event_parse(&ev, pool, load(rel), &err);
        if (!strncmp(e->d_name, "good_", 5)) {
            ck_assert_msg(rv == APR_SUCCESS, "%s: %s", rel, err ? err : "?");
            good++;
        }
        else {
            ck_assert_msg(rv == RMSYNC_EVENT_EINVAL || rv == RMSYNC_EVENT_ETIME,
                          "%s accepted", rel);
            ck_assert_ptr_null(ev);
            ck_assert_msg(err && *err, "%s: no error message", rel);
            bad++;
        }
    }
    closedir(d);
    ck_assert_int_ge(good, 6);
    ck_assert_int_ge(bad, 18);
}
END_TEST

START_TEST(test_bad_messages_name_fields)
{
    rmsync_event_t *ev = NULL;
    const char *err = NULL;
    rmsync_event_parse(&ev, pool, load("events/bad_subject_number.json"), &err);
    ck_assert_ptr_nonnull(strstr(err, "subject"));
    rmsync_event_parse(&ev, pool, load("events/bad_attendee_address_number.json"), &err);
    ck_assert_ptr_nonnull(strstr(err, "attendees"));
    rmsync_event_parse(&ev, pool, load("events/bad_zone_not_utc.json"), &err);
    ck_assert_ptr_nonnull(strstr(err, "start"));
    rmsync_event_parse(&ev, pool, load("events/bad_missing_id.json"), &err);
    ck_assert_ptr_nonnull(strstr(err, "'id'"));
    ck_assert_int_eq(rmsync_event_parse(&ev, pool, NULL, &err), RMSYNC_EVENT_EINVAL);
}
END_TEST

/* A delta page: items parsed one by one, bad ones reported, links typed. */
static void page_counts(const char *rel, int *ok, int *removed, int *bad, const char **next,
                        const char **dl)
{
    cJSON *j = load(rel), *value = NULL, *it;
    *ok = *removed = *bad = 0;
    ck_assert_int_eq(rmsync_json_get_array(j, "value", &value), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_opt_string(j, "@odata.nextLink", next), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_opt_string(j, "@odata.deltaLink", dl), APR_SUCCESS);
    cJSON_ArrayForEach(it, value) {
        rmsync_event_t *ev = NULL;
        const char *err = NULL;
        if (rmsync_event_parse(&ev, pool, it, &err) == APR_SUCCESS) {
            if (ev->removed) (*removed)++; else (*ok)++;
        }
        else {
            ck_assert_ptr_nonnull(err);
            (*bad)++;
        }
    }
}

START_TEST(test_corpus_delta_pages)
{
    int ok, rm, bad;
    const char *next, *dl;
    cJSON *v = NULL;

    page_counts("delta/page_first_next.json", &ok, &rm, &bad, &next, &dl);
    ck_assert_int_eq(ok, 2); ck_assert_int_eq(rm, 0); ck_assert_int_eq(bad, 0);
    ck_assert_ptr_nonnull(next); ck_assert_ptr_null(dl);
    page_counts("delta/page_empty_next.json", &ok, &rm, &bad, &next, &dl);
    ck_assert_int_eq(ok + rm + bad, 0);
    ck_assert_ptr_nonnull(next);
    page_counts("delta/page_last_removed.json", &ok, &rm, &bad, &next, &dl);
    ck_assert_int_eq(ok, 1); ck_assert_int_eq(rm, 2); ck_assert_int_eq(bad, 0);
    ck_assert_ptr_null(next); ck_assert_ptr_nonnull(dl);
    page_counts("delta/page_mixed_bad.json", &ok, &rm, &bad, &next, &dl);
    ck_assert_int_eq(ok, 1); ck_assert_int_eq(rm, 1); ck_assert_int_eq(bad, 4);
    ck_assert_int_eq(rmsync_json_get_array(load("delta/page_value_not_array.json"), "value", &v),
                     RMSYNC_JSON_ETYPE);
}
END_TEST

START_TEST(test_error_envelopes)
{
    const char *code = NULL;
    cJSON *j = load("errors/sync_state_not_found.json");
    ck_assert_int_eq(rmsync_json_path_string(j, "error/code", &code), APR_SUCCESS);
    ck_assert_str_eq(code, "SyncStateNotFound");
    j = load("errors/item_not_found.json");
    ck_assert_int_eq(rmsync_json_path_string(j, "error/innerError/request-id", &code), APR_SUCCESS);
    ck_assert_str_eq(code, "93b6f17e-c05d-4f45-ad2a-6665c708d8a0");
    j = load("errors/oauth_invalid_client.json");
    ck_assert_int_eq(rmsync_json_get_string(j, "error", &code), APR_SUCCESS);
    ck_assert_str_eq(code, "invalid_client");
    j = load("errors/error_code_wrong_type.json");
    ck_assert_int_eq(rmsync_json_path_string(j, "error/code", &code), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_path_string(j, "error/innerError/request-id", &code),
                     RMSYNC_JSON_ETYPE);
}
END_TEST

START_TEST(test_time_parse)
{
    apr_time_t t = 0;
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T10:00:00.0000000", "UTC", &t), APR_SUCCESS);
    ck_assert(t == SEC(1795600800));
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T10:00:00.1234567", NULL, &t), APR_SUCCESS);
    ck_assert(t == SEC(1795600800) + 123456);
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T10:00", "UTC", &t), APR_SUCCESS);
    ck_assert(t == SEC(1795600800));
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T12:00:00+02:00", "Whatever", &t),
                     APR_SUCCESS);
    ck_assert(t == SEC(1795600800));
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T05:00:00-0500", NULL, &t), APR_SUCCESS);
    ck_assert(t == SEC(1795600800));
    ck_assert_int_eq(rmsync_event_parse_time("2000-02-29T23:59:59Z", NULL, &t), APR_SUCCESS);
    ck_assert(t == SEC(951868799));
    ck_assert_int_eq(rmsync_event_parse_time("0001-01-01T00:00:00Z", NULL, &t), APR_SUCCESS);
    ck_assert(t == SEC(-62135596800LL));
    ck_assert_int_eq(rmsync_event_parse_time("1970-01-01T00:00:00.0000000", "Etc/UTC", &t),
                     APR_SUCCESS);
    ck_assert(t == 0);
    /* rejected */
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T10:00:00", "Pacific Standard Time", &t),
                     RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time("2001-02-29T00:00:00", NULL, &t), RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25", NULL, &t), RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T24:00:00", NULL, &t), RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T10:00:00.", NULL, &t), RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time("2026-11-25T10:00:00Zjunk", NULL, &t),
                     RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time("", NULL, &t), RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time(NULL, NULL, &t), RMSYNC_EVENT_ETIME);
    ck_assert_int_eq(rmsync_event_parse_time("+026-11-25T10:00:00", NULL, &t), RMSYNC_EVENT_ETIME);
}
END_TEST

START_TEST(test_time_format_roundtrip)
{
    apr_time_t t = SEC(1795600800) + 123456, back = 0;
    const char *s = rmsync_event_format_time(pool, t);
    ck_assert_str_eq(s, "2026-11-25T10:00:00.1234560");
    ck_assert_int_eq(rmsync_event_parse_time(s, "UTC", &back), APR_SUCCESS);
    ck_assert(back == t);
    ck_assert_str_eq(rmsync_event_format_time_z(pool, t), "2026-11-25T10:00:00Z");
}
END_TEST

/* Random byte mutations of a good event and of a delta page: whatever parses as JSON goes
 * through the event parser; nothing may crash (run under ASan/valgrind for the full check). */
START_TEST(test_mutations)
{
    const char *files[] = { "events/good_single.json", "delta/page_last_removed.json" };
    unsigned seed = 12345;
    int f, i, parsed = 0, events_ok = 0;

    for (f = 0; f < 2; f++) {
        apr_size_t len;
        char *orig = rmsync_unit_corpus_read(pool, files[f], &len);
        for (i = 0; i < 1500; i++) {
            apr_pool_t *sp;
            char *buf;
            cJSON *j = NULL, *it, *value = NULL;
            int k, nmut;
            apr_pool_create(&sp, pool);
            buf = apr_pmemdup(sp, orig, len + 1);
            seed = seed * 1103515245u + 12345u;
            nmut = 1 + (int)((seed >> 16) % 4);
            for (k = 0; k < nmut; k++) {
                static const char repl[] = "{}[]\":,0aZ \\tn-.e";
                seed = seed * 1103515245u + 12345u;
                buf[(seed >> 8) % len] = repl[(seed >> 20) % (sizeof(repl) - 1)];
            }
            if (rmsync_json_parse(&j, sp, buf, len, 0, NULL) == APR_SUCCESS) {
                rmsync_event_t *ev = NULL;
                const char *err = NULL;
                parsed++;
                if (rmsync_event_parse(&ev, sp, j, &err) == APR_SUCCESS) {
                    events_ok++;
                    if (!ev->removed && !ev->partial) ck_assert_ptr_nonnull(ev->hash);
                }
                else {
                    ck_assert_ptr_nonnull(err);
                }
                if (rmsync_json_get_array(j, "value", &value) == APR_SUCCESS) {
                    cJSON_ArrayForEach(it, value) {
                        rmsync_event_parse(&ev, sp, it, &err);
                    }
                }
            }
            apr_pool_destroy(sp);
        }
    }
    ck_assert_int_gt(parsed, 100);   /* the mutations exercise the event parser too */
}
END_TEST

START_TEST(test_huge_subject)
{
    apr_size_t n = 2 * 1024 * 1024;
    char *s = apr_palloc(pool, n + 200), *q;
    cJSON *j = NULL;
    rmsync_event_t *ev = NULL;
    q = s + apr_snprintf(s, 200, "{\"id\":\"x\",\"start\":{\"dateTime\":\"2026-11-25T10:00:00\","
                         "\"timeZone\":\"UTC\"},\"end\":{\"dateTime\":\"2026-11-25T11:00:00\","
                         "\"timeZone\":\"UTC\"},\"subject\":\"");
    memset(q, 'x', n);
    strcpy(q + n, "\"}");
    ck_assert_int_eq(rmsync_json_parse(&j, pool, s, strlen(s), 0, NULL), APR_SUCCESS);
    ck_assert_int_eq(rmsync_event_parse(&ev, pool, j, NULL), APR_SUCCESS);
    ck_assert_uint_eq(strlen(ev->subject), n);
    ck_assert_ptr_nonnull(ev->hash);
}
END_TEST

START_TEST(test_sensitivity)
{
    static const struct { const char *json; int priv; } cases[] = {
        { "{\"id\":\"a\",\"sensitivity\":\"private\"}", 1 },
        { "{\"id\":\"a\",\"sensitivity\":\"Confidential\"}", 1 },
        { "{\"id\":\"a\",\"sensitivity\":\"personal\"}", 0 },
        { "{\"id\":\"a\",\"sensitivity\":\"normal\"}", 0 },
        { "{\"id\":\"a\"}", 0 },
    };
    apr_size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *j = NULL;
        rmsync_event_t *ev = NULL;
        ck_assert_int_eq(rmsync_json_parse(&j, pool, cases[i].json, strlen(cases[i].json), 0,
                                           NULL), APR_SUCCESS);
        ck_assert_int_eq(rmsync_event_parse(&ev, pool, j, NULL), APR_SUCCESS);
        ck_assert_int_eq(rmsync_event_is_private(ev), cases[i].priv);
    }
    {
        /* a wrongly typed sensitivity is an error naming the field */
        const char *bad = "{\"id\":\"a\",\"sensitivity\":3}", *err = NULL;
        cJSON *j = NULL;
        rmsync_event_t *ev = NULL;
        ck_assert_int_eq(rmsync_json_parse(&j, pool, bad, strlen(bad), 0, NULL), APR_SUCCESS);
        ck_assert_int_ne(rmsync_event_parse(&ev, pool, j, &err), APR_SUCCESS);
        ck_assert_ptr_nonnull(strstr(err, "sensitivity"));
    }
}
END_TEST

RMSYNC_UNIT_MAIN("rmsync_event", "core", setup, teardown, 60,
                 test_good_single, test_hash_same_state, test_hash_changes,
                 test_sparse_allday_offset_removed, test_corpus_events,
                 test_bad_messages_name_fields, test_corpus_delta_pages, test_error_envelopes,
                 test_time_parse, test_time_format_roundtrip, test_mutations, test_huge_subject,
                 test_sensitivity)
