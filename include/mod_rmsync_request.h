/* mod_rmsync: request helpers shared by the handlers (mod_rmsync/rmsync_request.c): the one
 * bounded body reader, the Content-Type and same-origin checks of the POSTs, and the admin
 * CSRF token made and checked with the shared secret of the database. */
#ifndef MOD_RMSYNC_REQUEST_H
#define MOD_RMSYNC_REQUEST_H

#include "httpd.h"

/* Read the whole body (chunked or not) of at most max bytes into r->pool, NUL-terminated,
 * within limit (0: no limit of our own, Timeout applies per read). Returns OK,
 * HTTP_REQUEST_ENTITY_TOO_LARGE (also when Content-Length announces more, or LimitRequestBody
 * stops it), HTTP_REQUEST_TIME_OUT (the body did not arrive within limit) or HTTP_BAD_REQUEST
 * (bad Content-Length, client error while reading). On failure the connection is closed after
 * the answer: the rest is never read. */
int rmsync_read_body(request_rec *r, apr_size_t max, apr_interval_time_t limit, char **buf,
                     apr_size_t *len);

/* 1 when the Content-Type is type (case-insensitive), alone or followed by parameters. */
int rmsync_request_has_type(request_rec *r, const char *type);

/* The admin origins: RMSyncAdminOrigin's values, or by default the origins of ServerName and
 * of the loopback names (127.0.0.1, localhost, [::1]) with this request's scheme and local
 * port. The first one is the origin the CSRF tokens are bound to. */
const apr_array_header_t *rmsync_request_admin_origins(request_rec *r);

/* The same-origin check of a state-changing POST (rmsync_same_origin with this request's
 * Origin, Referer, Sec-Fetch-Site, Host and the admin origins): 1 when allowed, else 0 and
 * *why. */
int rmsync_request_same_origin(request_rec *r, const char **why);

/* The admin pages' CSRF token for user now, bound to the admin origin, made with the shared
 * secret of the database (rmsync.csrf_secret: every node and generation has the same), or
 * while that is not loaded with the generation's shm secret (NULL when neither is there); and
 * its check against all of them (0 without token). rmsync_request_csrf_stale() says that the
 * process should (re)load the shared secret: then rmsync_request_csrf_load() with a handle
 * (NULL: counts as a failed attempt; attempts are spaced by 10 s). */
struct rmsync_db_t;
int rmsync_request_csrf_stale(void);
void rmsync_request_csrf_load(request_rec *r, struct rmsync_db_t *db);
const char *rmsync_request_csrf_token(request_rec *r, const char *user);
int rmsync_request_csrf_ok(request_rec *r, const char *user, const char *token);

#endif /* MOD_RMSYNC_REQUEST_H */
