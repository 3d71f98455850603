/* mod_rmsync, run by Apache worker processes (admin pages, API): times and durations written
 * for people and JSON, and the check of a typed-in UTC time (rmsync_timefmt.h). */
#include <stdio.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync_timefmt.h"

/* "YYYY-MM-DD", "YYYY-MM-DDTHH:MM" or "YYYY-MM-DDTHH:MM:SS" ('T' or ' '), a real UTC time. */
int rmsync_valid_utc_time(const char *s)
{
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    apr_size_t len, i;

    if (!s) {
        return 0;
    }
    len = strlen(s);

    if (len != 10 && len != 16 && len != 19) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        char c = s[i];
        int want_digit = !(i == 4 || i == 7 || i == 10 || i == 13 || i == 16);
        if (want_digit ? !apr_isdigit(c)
            : !((i == 4 || i == 7) ? c == '-' : i == 10 ? (c == 'T' || c == ' ') : c == ':')) {
            return 0;
        }
    }
    n = sscanf(s, "%4d-%2d-%2d", &y, &mo, &d);
    if (n != 3) {
        return 0;
    }
    if (len >= 16) {
        h = (s[11] - '0') * 10 + (s[12] - '0');
        mi = (s[14] - '0') * 10 + (s[15] - '0');
    }
    if (len == 19) {
        sec = (s[17] - '0') * 10 + (s[18] - '0');
    }
    if (y < 1970 || y > 2999 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1]
        || h > 23 || mi > 59 || sec > 59) {
        return 0;
    }
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return 0;
    }
    return 1;
}

const char *rmsync_fmt_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t e;

    if (t == 0 || apr_time_exp_gmt(&e, t) != APR_SUCCESS) {
        return "-";
    }
    return apr_psprintf(p, "%04d-%02d-%02d %02d:%02d:%02dZ", e.tm_year + 1900, e.tm_mon + 1,
                        e.tm_mday, e.tm_hour, e.tm_min, e.tm_sec);
}

const char *rmsync_fmt_iso(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t e;

    if (t == 0 || apr_time_exp_gmt(&e, t) != APR_SUCCESS) {
        return NULL;
    }
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02dZ", e.tm_year + 1900, e.tm_mon + 1,
                        e.tm_mday, e.tm_hour, e.tm_min, e.tm_sec);
}

const char *rmsync_fmt_duration(apr_pool_t *p, long long s)
{
    const char *sign = "";

    if (s < 0) {
        sign = "-";
        s = -s;
    }
    if (s < 60) {
        return apr_psprintf(p, "%s%ds", sign, (int)s);
    }
    if (s < 3600) {
        return apr_psprintf(p, "%s%dm %02ds", sign, (int)(s / 60), (int)(s % 60));
    }
    if (s < 86400) {
        return apr_psprintf(p, "%s%dh %02dm", sign, (int)(s / 3600), (int)((s % 3600) / 60));
    }
    return apr_psprintf(p, "%s%" APR_INT64_T_FMT "d %02dh", sign, (apr_int64_t)(s / 86400),
                        (int)((s % 86400) / 3600));
}

/* Only the shape of an IANA name; whether PostgreSQL knows it is asked in SQL
 * (pg_timezone_names), so a cookie can never inject anything but a known zone. */
int rmsync_tz_name_ok(const char *s)
{
    const char *c;

    if (!s || !*s || strlen(s) > 64 || *s == '/' || *s == '.' || strstr(s, "..")) {
        return 0;
    }
    for (c = s; *c; c++) {
        if (!apr_isalnum(*c) && *c != '/' && *c != '_' && *c != '-' && *c != '+') {
            return 0;
        }
    }
    return 1;
}
