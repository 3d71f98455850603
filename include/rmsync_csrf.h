/* mod_rmsync: the admin forms' CSRF token, the same-origin check of state-changing POSTs, and the
 * module's one constant-time comparison, the CSRF secret shared through the database
 * (core/rmsync_csrf.c; Apache worker processes). No httpd
 * headers; unit-tested in tests/unit/test_html.c. */
#ifndef RMSYNC_CSRF_H
#define RMSYNC_CSRF_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_tables.h>

/* Constant-time comparison of n bytes: 1 when equal. The one comparison of secrets in the
 * module (CSRF tokens here, webhook clientStates in rmsync_intake.c). */
int rmsync_ct_equals(const void *a, const void *b, apr_size_t n);

/* CSRF token = hex(HMAC-SHA1(secret, "rmsync-csrf" NUL user NUL [origin NUL] window)), window =
 * now / RMSYNC_CSRF_WINDOW_S. A token is accepted in its own window and the next one, so it
 * lives 1-2 windows. user NULL/"" means "-"; origin is the admin origin the token is bound to
 * (NULL/"": none). The secret is the day's shared secret from the database
 * (rmsync_csrf_secret_fetch; the previous day's verifies too), or without a database the
 * per-generation random secret in shm (at least RMSYNC_CSRF_SECRET_MIN bytes). */
#define RMSYNC_CSRF_WINDOW_S    3600
#define RMSYNC_CSRF_SECRET_MIN  16
#define RMSYNC_CSRF_TOKEN_LEN   40
const char *rmsync_csrf_token(apr_pool_t *p, const unsigned char *secret, apr_size_t secret_len,
                              const char *user, const char *origin, apr_time_t now);
/* 1 when token is valid for user and origin at now (constant-time compare), 0 otherwise (also
 * for a missing or malformed token or a too short secret). */
int rmsync_csrf_verify(const unsigned char *secret, apr_size_t secret_len,
                       const char *user, const char *origin, const char *token, apr_time_t now);

/* An origin "scheme://host[:port]" (http or https; no user info; with_path 0: nothing after
 * the authority but an optional "/", as the Origin header and RMSyncAdminOrigin; 1: any path,
 * as a Referer) normalised to "scheme://host:port": lower case, explicit port, IPv6 literal in
 * brackets. NULL when it is not one. */
const char *rmsync_origin_parse(apr_pool_t *p, const char *url, int with_path);

/* Same-origin check for a state-changing POST, like balancer-manager's safe_referer but
 * stricter. allowed: the admin origins (normalised, rmsync_origin_parse); host is the request's
 * Host header ("name[:port]"). Refused: Sec-Fetch-Site other than same-origin/none; a Host
 * whose name is neither an allowed origin's host nor a loopback name (127.0.0.1, localhost,
 * [::1]) -- DNS rebinding; an Origin (or, without Origin, a Referer's scheme://host:port) that
 * is not one of allowed; neither header present; Origin "null". Returns 1 when allowed; else 0
 * and *why (static string). */
int rmsync_same_origin(apr_pool_t *p, const char *origin, const char *referer,
                       const char *sec_fetch_site, const char *host,
                       const apr_array_header_t *allowed, const char **why);

/* The shared secret: table rmsync.csrf_secret, one random secret of RMSYNC_CSRF_SECRET_LEN
 * bytes per period (RMSYNC_CSRF_PERIOD_S, a UTC day), made by the first node that asks for
 * it. rmsync_csrf_secret_init registers the statement (once per process);
 * rmsync_csrf_secret_fetch gets (making it when missing) the period's secret into cur and the
 * previous period's, when there is one, into prev. APR_SUCCESS, a database status, or
 * APR_ENOENT. */
#define RMSYNC_CSRF_SECRET_LEN  32
#define RMSYNC_CSRF_PERIOD_S    86400
struct rmsync_db_t;
apr_status_t rmsync_csrf_secret_init(void);
long long rmsync_csrf_period(apr_time_t now);
apr_status_t rmsync_csrf_secret_fetch(struct rmsync_db_t *db, apr_pool_t *p, long long period,
                                      unsigned char cur[RMSYNC_CSRF_SECRET_LEN],
                                      unsigned char prev[RMSYNC_CSRF_SECRET_LEN],
                                      int *have_prev);

#endif /* RMSYNC_CSRF_H */
