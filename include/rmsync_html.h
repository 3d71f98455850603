/* mod_rmsync: pure helpers for the admin pages (no httpd headers, unit-tested in
 * tests/unit/test_html.c): escapers, the CSRF token, the same-origin check, the bounded
 * form parser with a parameter whitelist, value formatting, the page frame and stylesheet.
 */
#ifndef RMSYNC_HTML_H
#define RMSYNC_HTML_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>

/* HTML-escape & < > " ' (unlike ap_escape_html, which misses '). NULL gives "". Safe in text
 * and in attributes with either quote. */
const char *rmsync_html_escape(apr_pool_t *p, const char *s);

/* Percent-encode a query/form value (space as %20, everything but unreserved chars). NULL -> "". */
const char *rmsync_url_escape(apr_pool_t *p, const char *s);

/* Constant-time comparison of n bytes: 1 when equal. */
int rmsync_ct_equals(const void *a, const void *b, apr_size_t n);

/* CSRF token = hex(HMAC-SHA1(secret, "rmsync-csrf" NUL user NUL window)), window =
 * now / RMSYNC_CSRF_WINDOW_S. A token is accepted in its own window and the next one, so it
 * lives 1-2 windows. user NULL/"" means "-". The secret is the per-generation random secret
 * in shm (at least RMSYNC_CSRF_SECRET_MIN bytes). */
#define RMSYNC_CSRF_WINDOW_S    3600
#define RMSYNC_CSRF_SECRET_MIN  16
#define RMSYNC_CSRF_TOKEN_LEN   40
const char *rmsync_csrf_token(apr_pool_t *p, const unsigned char *secret, apr_size_t secret_len,
                              const char *user, apr_time_t now);
/* 1 when token is valid for user at now (constant-time compare), 0 otherwise (also for a
 * missing or malformed token or a too short secret). */
int rmsync_csrf_verify(const unsigned char *secret, apr_size_t secret_len,
                       const char *user, const char *token, apr_time_t now);

/* Same-origin check for a state-changing POST, like balancer-manager's safe_referer but
 * stricter. host is the request's Host header ("name[:port]"), https whether the request came
 * in over TLS. Refused: Sec-Fetch-Site other than same-origin/none; an Origin (or, without
 * Origin, a Referer) whose scheme, host (case-insensitive) or port differ; neither header
 * present; Origin "null". Returns 1 when allowed; else 0 and *why (static string). */
int rmsync_same_origin(apr_pool_t *p, const char *origin, const char *referer,
                       const char *sec_fetch_site, const char *host, int https,
                       const char **why);

/* Parse an application/x-www-form-urlencoded body (or a query string) of len bytes into *out.
 * Every name must be in allowed (NULL-terminated); at most max_params pairs; values are
 * decoded ('+' is a space, %XX), NUL bytes and bad escapes refused; a repeated name keeps all
 * values (apr_table_add). Returns APR_SUCCESS, or APR_EINVAL with *err set (static text or
 * pool string naming the problem). */
apr_status_t rmsync_form_parse(apr_pool_t *p, const char *body, apr_size_t len,
                               const char *const *allowed, int max_params,
                               apr_table_t **out, const char **err);

/* Strict integer parsing for parameters: whole string, base 10, within [min,max].
 * Returns 1 and *out on success, else 0. */
int rmsync_parse_int64(const char *s, long long min, long long max, long long *out);

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

/* Page frame: doctype, head (title, stylesheet at base/style.css), navigation with the
 * current page marked, <main>. base is the escaped-or-safe mount prefix such as "/rmsync"
 * (it is escaped here). title is escaped here. page_end closes main/body/html. */
const char *rmsync_html_page_begin(apr_pool_t *p, const char *base, const char *title,
                                   const char *current);
/* Same, with <meta http-equiv="refresh"> every refresh_s seconds when refresh_s > 0 (the
 * status page's ?refresh=N, like mod_status). */
const char *rmsync_html_page_begin_refresh(apr_pool_t *p, const char *base, const char *title,
                                           const char *current, int refresh_s);
const char *rmsync_html_page_end(apr_pool_t *p);

/* A string builder: pieces are collected and joined once, so pages with thousands of rows
 * cost linear time and memory (repeated apr_pstrcat on a growing string is quadratic). */
typedef struct rmsync_sb_t rmsync_sb_t;
rmsync_sb_t *rmsync_sb_make(apr_pool_t *p);
/* Append s (NULL is ignored; s must live as long as the pool). */
void rmsync_sb_add(rmsync_sb_t *sb, const char *s);
/* Append several strings, NULL-terminated. */
void rmsync_sb_addv(rmsync_sb_t *sb, ...) __attribute__((sentinel));
/* The whole text (the builder stays usable). */
const char *rmsync_sb_join(rmsync_sb_t *sb);

/* The embedded stylesheet served at <base>/style.css. */
extern const char rmsync_html_css[];

#endif /* RMSYNC_HTML_H */
