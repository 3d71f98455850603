/* mod_rmsync: times and durations written for people and JSON, and the check of a typed-in UTC
 * time (core/rmsync_timefmt.c; admin pages and API in Apache worker processes). No httpd
 * headers; unit-tested in tests/unit/test_html.c. */
#ifndef RMSYNC_TIMEFMT_H
#define RMSYNC_TIMEFMT_H

#include <apr_pools.h>
#include <apr_time.h>

/* 1 when s is "YYYY-MM-DD", "YYYY-MM-DDTHH:MM" or "YYYY-MM-DDTHH:MM:SS" ('T' or ' ') naming a
 * real time (1970..2999, leap years checked); used for the log page's UTC time filter. */
int rmsync_valid_utc_time(const char *s);

/* "2026-11-25 23:40:12Z" (UTC), or "-" for 0. */
const char *rmsync_fmt_time(apr_pool_t *p, apr_time_t t);
/* ISO 8601 "2026-11-25T23:40:12Z", or NULL for 0 (for JSON). */
const char *rmsync_fmt_iso(apr_pool_t *p, apr_time_t t);
/* Short human duration: "45s", "12m 03s", "3h 07m", "2d 04h"; negative -> "-12m 03s"
 * style with a leading minus. */
const char *rmsync_fmt_duration(apr_pool_t *p, long long seconds);

/* 1 when s looks like an IANA time zone name ("Europe/Berlin", "UTC", "Etc/GMT+1"): 1..64
 * characters of [A-Za-z0-9/_+-], no leading '/', no "..". PostgreSQL decides if it exists. */
int rmsync_tz_name_ok(const char *s);

#endif /* RMSYNC_TIMEFMT_H */
