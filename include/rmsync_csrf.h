/* mod_rmsync: the admin forms' CSRF token, the same-origin check of state-changing POSTs, and the
 * module's one constant-time comparison (core/rmsync_csrf.c; Apache worker processes). No httpd
 * headers; unit-tested in tests/unit/test_html.c. */
#ifndef RMSYNC_CSRF_H
#define RMSYNC_CSRF_H

#include <apr_pools.h>
#include <apr_time.h>

/* Constant-time comparison of n bytes: 1 when equal. The one comparison of secrets in the
 * module (CSRF tokens here, webhook clientStates in rmsync_intake.c). */
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

#endif /* RMSYNC_CSRF_H */
