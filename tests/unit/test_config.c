/* Unit tests for the pure settings validators (core/rmsync_settings.c). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include "rmsync.h"
#include "rmsync_settings.h"
#include "rmsync_tz.h"
#include "unit_main.h"

static apr_pool_t *p;

static void setup(void)
{
    apr_pool_create(&p, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(p);
}

START_TEST(defaults)
{
    rmsync_settings_t s;
    apr_array_header_t *w = apr_array_make(p, 2, sizeof(const char *));
    rmsync_settings_defaults(&s);
    ck_assert_int_eq(s.enabled, 0);
    ck_assert_str_eq(s.graph_url, "https://graph.microsoft.com/v1.0");
    ck_assert_str_eq(s.authority_url, "https://login.microsoftonline.com");
    ck_assert_int_eq(s.subscription_minutes, 4230);
    ck_assert_int_eq(s.graph_per_mailbox, 4);
    ck_assert_str_eq(s.permission_set, "EXCHANGE_SYNC_USER");
    ck_assert_str_eq(s.master_user, "SYNC_MASTER");
    ck_assert_int_gt(s.max_representatives, 0);
    /* the defaults must pass their own validators */
    ck_assert_ptr_null(rmsync_check_sync_from(p, s.initial_sync_from));
    ck_assert_ptr_null(rmsync_check_category_color(p, s.category_color));
    ck_assert_ptr_null(rmsync_check_category_name(p, s.category_name));
    ck_assert_ptr_null(rmsync_check_url(p, s.graph_url, RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_null(rmsync_settings_check(&s, p, w));
    ck_assert_int_eq(w->nelts, 0);
}
END_TEST

START_TEST(ints)
{
    int v = -1;
    ck_assert_ptr_null(rmsync_parse_int(p, "10", 10, 86400, &v));
    ck_assert_int_eq(v, 10);
    ck_assert_ptr_null(rmsync_parse_int(p, "86400", 10, 86400, &v));
    v = 10;
    ck_assert_ptr_nonnull(rmsync_parse_int(p, "9", 10, 86400, &v));
    ck_assert_ptr_nonnull(rmsync_parse_int(p, "86401", 10, 86400, &v));
    ck_assert_ptr_nonnull(rmsync_parse_int(p, "12x", 0, 100, &v));
    ck_assert_ptr_nonnull(rmsync_parse_int(p, "", 0, 100, &v));
    ck_assert_ptr_nonnull(rmsync_parse_int(p, " 5", 0, 100, &v));
    ck_assert_ptr_nonnull(rmsync_parse_int(p, "-5", 0, 100, &v));
    ck_assert_ptr_nonnull(rmsync_parse_int(p, "+5", 0, 100, &v));
    ck_assert_ptr_nonnull(rmsync_parse_int(p, "99999999999999999999", 0, 100, &v));
    ck_assert_int_eq(v, 10);   /* untouched on error */
    /* subscription lifetime limit: 4230 ok, 4231 not */
    ck_assert_ptr_null(rmsync_parse_int(p, "4230", 15, 4230, &v));
    ck_assert_ptr_nonnull(strstr(rmsync_parse_int(p, "4231", 15, 4230, &v), "out of range"));
}
END_TEST

START_TEST(sizes)
{
    apr_size_t v = 0;
    ck_assert_ptr_null(rmsync_parse_size(p, "262144", 1024, 16 << 20, &v));
    ck_assert_uint_eq(v, 262144);
    ck_assert_ptr_null(rmsync_parse_size(p, "512K", 1024, 16 << 20, &v));
    ck_assert_uint_eq(v, 512 * 1024);
    ck_assert_ptr_null(rmsync_parse_size(p, "2MB", 1024, 16 << 20, &v));
    ck_assert_uint_eq(v, 2 << 20);
    ck_assert_ptr_nonnull(rmsync_parse_size(p, "17M", 1024, 16 << 20, &v));
    ck_assert_ptr_nonnull(rmsync_parse_size(p, "100", 1024, 16 << 20, &v));
    ck_assert_ptr_nonnull(rmsync_parse_size(p, "1X", 1024, 16 << 20, &v));
    ck_assert_ptr_nonnull(rmsync_parse_size(p, "-1", 1024, 16 << 20, &v));
    ck_assert_ptr_nonnull(rmsync_parse_size(p, "99999999999999999999G", 1024, 16 << 20, &v));
}
END_TEST

START_TEST(urls)
{
    const char *out = NULL;
    ck_assert_ptr_null(rmsync_check_url(p, "https://graph.microsoft.com/v1.0/", RMSYNC_URL_HTTPS, &out));
    ck_assert_str_eq(out, "https://graph.microsoft.com/v1.0");
    ck_assert_ptr_null(rmsync_check_url(p, "https://127.0.0.1:8443", RMSYNC_URL_HTTPS, &out));
    ck_assert_ptr_nonnull(strstr(rmsync_check_url(p, "http://graph.microsoft.com", RMSYNC_URL_HTTPS, NULL), "https"));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "http://127.0.0.1/x", RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "ftp://example.com/", RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "graph.microsoft.com", RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "https://", RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "https://u:pw@host/", RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "https://host/#frag", RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "https://host/a b", RMSYNC_URL_HTTPS, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "", RMSYNC_URL_HTTPS, NULL));
    /* notification URLs: http only for loopback */
    ck_assert_ptr_null(rmsync_check_url(p, "http://127.0.0.1:8080/rmsync/notify", RMSYNC_URL_HTTPS_OR_LOOPBACK, NULL));
    ck_assert_ptr_null(rmsync_check_url(p, "http://localhost/rmsync/notify", RMSYNC_URL_HTTPS_OR_LOOPBACK, NULL));
    ck_assert_ptr_null(rmsync_check_url(p, "http://[::1]:81/rmsync/notify", RMSYNC_URL_HTTPS_OR_LOOPBACK, NULL));
    ck_assert_ptr_null(rmsync_check_url(p, "https://crm.example.com/rmsync/notify", RMSYNC_URL_HTTPS_OR_LOOPBACK, NULL));
    ck_assert_ptr_nonnull(strstr(rmsync_check_url(p, "http://crm.example.com/rmsync/notify", RMSYNC_URL_HTTPS_OR_LOOPBACK, NULL), "loopback"));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "http://127.0.0.1.evil.com/", RMSYNC_URL_HTTPS_OR_LOOPBACK, NULL));
    ck_assert_ptr_nonnull(rmsync_check_url(p, "http://128.0.0.1/", RMSYNC_URL_HTTPS_OR_LOOPBACK, NULL));
    ck_assert_ptr_null(rmsync_check_url(p, "http://crm.example.com/", RMSYNC_URL_HTTP_ANY, NULL));
}
END_TEST

START_TEST(conninfo)
{
    ck_assert_ptr_null(rmsync_check_conninfo(p, "host=/tmp port=5432 dbname=crm user=rmsync"));
    ck_assert_ptr_null(rmsync_check_conninfo(p, "postgresql://rmsync@localhost:5432/crm"));
    ck_assert_ptr_nonnull(rmsync_check_conninfo(p, "host=/tmp nosuchkeyword=1"));
    ck_assert_ptr_nonnull(rmsync_check_conninfo(p, "host='unterminated"));
    ck_assert_ptr_nonnull(rmsync_check_conninfo(p, "garbage"));
    ck_assert_ptr_nonnull(rmsync_check_conninfo(p, ""));
}
END_TEST

static const char *write_tmp(const char *content, apr_size_t len)
{
    char *path = apr_pstrdup(p, "/tmp/rmsync-unit-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
    close(fd);
    return path;
}

START_TEST(secret_file)
{
    const char *secret = NULL, *path, *err;
    path = write_tmp("  s3cret-value\n", 15);
    ck_assert_ptr_null(rmsync_read_secret_file(p, path, &secret));
    ck_assert_str_eq(secret, "s3cret-value");
    unlink(path);
    path = write_tmp(" \n\t\n", 4);
    err = rmsync_read_secret_file(p, path, &secret);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "empty"));
    unlink(path);
    path = write_tmp("a\nb\n", 4);
    ck_assert_ptr_nonnull(rmsync_read_secret_file(p, path, &secret));
    unlink(path);
    err = rmsync_read_secret_file(p, "/nonexistent/secret", &secret);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/secret"));
    ck_assert_ptr_nonnull(rmsync_read_secret_file(p, "/tmp", &secret));   /* a directory */
    {
        char *big = apr_palloc(p, 9000);
        memset(big, 'x', 9000);
        path = write_tmp(big, 9000);
        ck_assert_ptr_nonnull(rmsync_read_secret_file(p, path, &secret));
        unlink(path);
    }
}
END_TEST

START_TEST(dates)
{
    apr_time_t t;
    ck_assert_ptr_null(rmsync_check_sync_from(p, "2024-02-29"));
    ck_assert_ptr_null(rmsync_check_sync_from(p, "-30d"));
    ck_assert_ptr_null(rmsync_check_sync_from(p, "-0d"));
    ck_assert_ptr_nonnull(rmsync_check_sync_from(p, "2023-02-29"));
    ck_assert_ptr_nonnull(rmsync_check_sync_from(p, "2024-13-01"));
    ck_assert_ptr_nonnull(rmsync_check_sync_from(p, "2024-1-01"));
    ck_assert_ptr_nonnull(rmsync_check_sync_from(p, "yesterday"));
    ck_assert_ptr_nonnull(rmsync_check_sync_from(p, "-30"));
    ck_assert_ptr_nonnull(rmsync_check_sync_from(p, "-9999d"));
    ck_assert_ptr_nonnull(rmsync_check_sync_from(p, "30d"));
    ck_assert_int_eq(rmsync_sync_from_time("1970-01-02", 0, &t), APR_SUCCESS);
    ck_assert(t == apr_time_from_sec(86400));
    ck_assert_int_eq(rmsync_sync_from_time("2024-03-01", 0, &t), APR_SUCCESS);
    ck_assert(t == apr_time_from_sec(1709251200));
    ck_assert_int_eq(rmsync_sync_from_time("-2d", apr_time_from_sec(1000000), &t), APR_SUCCESS);
    ck_assert(t == apr_time_from_sec(1000000 - 2 * 86400));
    ck_assert_int_ne(rmsync_sync_from_time("bad", 0, &t), APR_SUCCESS);
}
END_TEST

START_TEST(calendar_fields)
{
    rmsync_private_policy_e pp;
    rmsync_settings_t s;
    const char *z = NULL;

    rmsync_settings_defaults(&s);
    ck_assert_int_eq(s.private_policy, RMSYNC_PRIVATE_MASK);
    ck_assert_str_eq(s.default_tz, "Etc/UTC");
    ck_assert_ptr_null(rmsync_parse_private_policy(p, "Skip", &pp));
    ck_assert_int_eq(pp, RMSYNC_PRIVATE_SKIP);
    ck_assert_ptr_null(rmsync_parse_private_policy(p, "sync", &pp));
    ck_assert_int_eq(pp, RMSYNC_PRIVATE_SYNC);
    ck_assert_ptr_nonnull(rmsync_parse_private_policy(p, "hide", &pp));
    ck_assert_ptr_null(rmsync_parse_time_zone(p, "W. Europe Standard Time", &z));
    ck_assert_str_eq(z, "Europe/Berlin");
    ck_assert_ptr_null(rmsync_parse_time_zone(p, "america/new_york", &z));
    ck_assert_str_eq(z, "America/New_York");
    ck_assert_ptr_null(rmsync_parse_time_zone(p, "UTC", &z));
    ck_assert_str_eq(z, "Etc/UTC");
    ck_assert_ptr_nonnull(strstr(rmsync_parse_time_zone(p, "Mars Standard Time", &z), "Mars"));
    ck_assert_str_eq(rmsync_tz_to_iana("Eastern Standard Time"), "America/New_York");
    ck_assert_str_eq(rmsync_tz_to_iana("GMT Standard Time"), "Europe/London");
    ck_assert_str_eq(rmsync_tz_to_iana("Tokyo Standard Time"), "Asia/Tokyo");
    ck_assert_ptr_null(rmsync_tz_to_iana(""));
    ck_assert_int_ge(rmsync_tz_count(), 130);
}
END_TEST

START_TEST(words)
{
    rmsync_delete_policy_e d;
    rmsync_cancel_policy_e c;
    int dbg = -1;
    ck_assert_ptr_null(rmsync_parse_delete_policy(p, "unlink", &d));
    ck_assert_int_eq(d, RMSYNC_DELETE_UNLINK);
    ck_assert_ptr_null(rmsync_parse_delete_policy(p, "Cancel", &d));
    ck_assert_int_eq(d, RMSYNC_DELETE_CANCEL);
    ck_assert_ptr_nonnull(strstr(rmsync_parse_delete_policy(p, "purge", &d), "purge"));
    ck_assert_ptr_null(rmsync_parse_cancel_policy(p, "delete", &c));
    ck_assert_int_eq(c, RMSYNC_CANCEL_DELETE);
    ck_assert_ptr_nonnull(rmsync_parse_cancel_policy(p, "unlink", &c));
    ck_assert_ptr_null(rmsync_parse_log_level(p, "debug", &dbg));
    ck_assert_int_eq(dbg, 1);
    ck_assert_ptr_nonnull(rmsync_parse_log_level(p, "trace", &dbg));
    ck_assert_ptr_null(rmsync_check_category_color(p, "preset24"));
    ck_assert_ptr_null(rmsync_check_category_color(p, "preset0"));
    ck_assert_ptr_null(rmsync_check_category_color(p, "none"));
    ck_assert_ptr_nonnull(rmsync_check_category_color(p, "preset25"));
    ck_assert_ptr_nonnull(rmsync_check_category_color(p, "preset07"));
    ck_assert_ptr_nonnull(rmsync_check_category_color(p, "preset"));
    ck_assert_ptr_nonnull(rmsync_check_category_color(p, "red"));
    ck_assert_ptr_null(rmsync_check_category_name(p, "CRM Business Activity"));
    ck_assert_ptr_nonnull(rmsync_check_category_name(p, ""));
    ck_assert_ptr_nonnull(rmsync_check_category_name(p, "a\tb"));
    ck_assert_ptr_null(rmsync_check_name(p, "EXCHANGE_SYNC_USER", 64));
    ck_assert_ptr_null(rmsync_check_name(p, "rmsync-demo-tenant", 128));
    ck_assert_ptr_nonnull(rmsync_check_name(p, "bad name", 64));
    ck_assert_ptr_nonnull(rmsync_check_name(p, "x'; drop table", 64));
    ck_assert_ptr_nonnull(rmsync_check_name(p, "", 64));
}
END_TEST

/* issue 14: RMSyncCalendar main|"<name>" */
START_TEST(sync_calendar)
{
    const char *out = "x";
    ck_assert_ptr_null(rmsync_check_sync_calendar(p, "main", &out));
    ck_assert_ptr_null(out);
    ck_assert_ptr_null(rmsync_check_sync_calendar(p, "MAIN", &out));
    ck_assert_ptr_null(out);
    ck_assert_ptr_null(rmsync_check_sync_calendar(p, "CRM", &out));
    ck_assert_str_eq(out, "CRM");
    ck_assert_ptr_nonnull(rmsync_check_sync_calendar(p, "", &out));
    ck_assert_ptr_nonnull(rmsync_check_sync_calendar(p, "a\nb", &out));
}
END_TEST

START_TEST(activity_url_and_log)
{
    ck_assert_ptr_null(rmsync_check_activity_url(p, "https://crm.example.com/activity/%s"));
    ck_assert_ptr_null(rmsync_check_activity_url(p, "http://crm.local/a?no=%s&x=%20"));
    ck_assert_ptr_nonnull(rmsync_check_activity_url(p, "https://crm.example.com/activity/"));
    ck_assert_ptr_nonnull(rmsync_check_activity_url(p, "https://crm.example.com/%s/%s"));
    ck_assert_ptr_nonnull(rmsync_check_activity_url(p, "javascript:alert(%s)"));
    ck_assert_ptr_null(rmsync_check_log_target(p, "|/usr/bin/logger -t rmsync"));
    ck_assert_ptr_nonnull(rmsync_check_log_target(p, "|   "));
    ck_assert_ptr_null(rmsync_check_log_target(p, "/tmp/rmsync-sync.log"));
    ck_assert_ptr_nonnull(rmsync_check_log_target(p, "/nonexistent-dir/sync.log"));
    ck_assert_ptr_nonnull(rmsync_check_log_target(p, "/tmp/"));
}
END_TEST

START_TEST(cross_field)
{
    rmsync_settings_t s;
    apr_array_header_t *w = apr_array_make(p, 2, sizeof(const char *));
    const char *err;

    rmsync_settings_defaults(&s);
    s.tenant = "t";
    err = rmsync_settings_check(&s, p, w);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "RMSyncGraphClientId"));
    ck_assert_ptr_nonnull(strstr(err, "RMSyncGraphClientSecretFile"));
    s.client_id = "c";
    s.client_secret = "x";
    ck_assert_ptr_null(rmsync_settings_check(&s, p, w));
    ck_assert_int_eq(w->nelts, 1);   /* credentials without database */
    s.enabled = 1;
    s.db_conninfo = "dbname=crm";
    w->nelts = 0;
    ck_assert_ptr_null(rmsync_settings_check(&s, p, w));
    ck_assert_int_eq(w->nelts, 1);   /* no notification URL */
    ck_assert_ptr_nonnull(strstr(RMSYNC_ARRAY_IDX(w, 0, const char *), "RMSyncNotificationURL"));
    s.notification_url = "https://crm.example.com/rmsync/notify";
    w->nelts = 0;
    ck_assert_ptr_null(rmsync_settings_check(&s, p, w));
    ck_assert_int_eq(w->nelts, 0);
    s.notification_url = NULL;
    s.lifecycle_url = "https://crm.example.com/rmsync/lifecycle";
    ck_assert_ptr_nonnull(rmsync_settings_check(&s, p, w));
}
END_TEST

START_TEST(stall_timeout)
{
    rmsync_settings_t s;
    const char *err;
    int v = -1;

    rmsync_settings_defaults(&s);
    ck_assert_int_eq(s.runner_stall_s, 60);
    ck_assert_ptr_null(rmsync_settings_check(&s, p, NULL));   /* 60 s > 10 s + 30 s */
    ck_assert_ptr_null(rmsync_parse_stall_timeout(p, "Off", &v));
    ck_assert_int_eq(v, 0);
    ck_assert_ptr_null(rmsync_parse_stall_timeout(p, "5", &v));
    ck_assert_int_eq(v, 5);
    ck_assert_ptr_nonnull(rmsync_parse_stall_timeout(p, "4", &v));
    ck_assert_ptr_nonnull(rmsync_parse_stall_timeout(p, "3601", &v));
    ck_assert_ptr_nonnull(rmsync_parse_stall_timeout(p, "-1", &v));
    ck_assert_ptr_nonnull(rmsync_parse_stall_timeout(p, "60s", &v));
    /* the bound must outlast one database wait of the control thread */
    s.runner_stall_s = 40;
    err = rmsync_settings_check(&s, p, NULL);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "RMSyncRunnerStallTimeout"));
    ck_assert_ptr_nonnull(strstr(err, "RMSyncDatabaseTimeouts"));
    s.db_statement_timeout_ms = 29999;
    ck_assert_ptr_null(rmsync_settings_check(&s, p, NULL));
    s.runner_stall_s = 0;                                        /* Off: no bound */
    s.db_statement_timeout_ms = 3600000;
    ck_assert_ptr_null(rmsync_settings_check(&s, p, NULL));
}
END_TEST

RMSYNC_UNIT_MAIN("config", "validators", setup, teardown, 0,
                 defaults, ints, sizes, urls, conninfo, secret_file, dates, words,
                 activity_url_and_log, cross_field, stall_timeout, calendar_fields, sync_calendar)
