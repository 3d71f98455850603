/* mod_rmsync: a small libcurl easy wrapper for the Graph client (HTTPS only).
 *
 * - curl_global_init(CURL_GLOBAL_DEFAULT) must be called once by the process before the first
 *   request (the runner at start, a unit test or tool in main), and never from several threads.
 * - One easy handle per thread, created lazily on that thread's first request and reused (keeps
 *   the TLS session and connection alive); never shared across threads and never created in a
 *   process that will fork afterwards (the Apache parent never makes requests). It is released
 *   when the thread exits, or by rmsync_http_thread_done().
 * - HTTPS only (also for redirects, which are not followed), peer and host verification always
 *   on, optional CA file, connect/total timeouts, a stall limit (less than 1 byte/s for
 *   stall_timeout_s), CURLOPT_NOSIGNAL, a response size cap enforced while receiving, an abort
 *   flag polled during the transfer, and a client-request-id (random UUID) on every request.
 * - Nothing here logs headers or bodies: bearer tokens and secrets never reach a log.
 */
#ifndef RMSYNC_HTTP_H
#define RMSYNC_HTTP_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_errno.h>

/* Transport statuses (APR user error space, our 003xx range). */
#define RMSYNC_HTTP_ECONNECT  (APR_OS_START_USERERR + 320) /* resolve/connect failed: not sent */
#define RMSYNC_HTTP_ETLS      (APR_OS_START_USERERR + 321) /* TLS handshake/verification failed */
#define RMSYNC_HTTP_ETIMEOUT  (APR_OS_START_USERERR + 322) /* timeout or stalled transfer */
#define RMSYNC_HTTP_ETOOLARGE (APR_OS_START_USERERR + 323) /* response above max_response */
#define RMSYNC_HTTP_EABORTED  (APR_OS_START_USERERR + 324) /* *stop was set */
#define RMSYNC_HTTP_EPROTO    (APR_OS_START_USERERR + 325) /* not an https:// URL */
#define RMSYNC_HTTP_ENET      (APR_OS_START_USERERR + 326) /* connection dropped, empty reply... */
#define RMSYNC_HTTP_EINIT     (APR_OS_START_USERERR + 327) /* could not set up the handle */

typedef struct rmsync_http_req_t {
    const char *method;             /* GET (default when NULL), POST, PATCH, DELETE */
    const char *url;                /* absolute https:// URL */
    apr_array_header_t *headers;    /* of const char * "Name: value", or NULL */
    const char *body;               /* request body or NULL */
    apr_size_t  body_len;
    const char *client_request_id;  /* sent as client-request-id; NULL = a new UUID */
    const char *ca_file;            /* PEM bundle to trust, NULL = system store */
    int         connect_timeout_s;  /* 0 = 10 */
    int         total_timeout_s;    /* 0 = 60 */
    int         stall_timeout_s;    /* 0 = 30 */
    apr_size_t  max_response;       /* 0 = 16 MiB */
    volatile apr_uint32_t *stop;    /* abort when non-zero (checked during the transfer) */
    int         fresh_connect;      /* 1: use a new connection. libcurl silently resends a request
                                       whose reused connection died before any answer; set this
                                       for requests that must never be sent twice (non-idempotent
                                       POSTs) */
} rmsync_http_req_t;

typedef struct rmsync_http_resp_t {
    int         status;             /* HTTP status, 0 when no response */
    char       *body;               /* NUL-terminated, owned by the pool; "" when empty */
    apr_size_t  body_len;
    const char *content_type;       /* captured response headers, NULL when absent */
    const char *request_id;
    const char *client_request_id;  /* as echoed by the server */
    const char *retry_after;
    const char *preference_applied;
    const char *location;
    const char *sent_client_request_id; /* the id we sent (log it with request_id) */
    const char *error;              /* transport error text, NULL on success */
    apr_interval_time_t elapsed;    /* wall time of the transfer */
} rmsync_http_resp_t;

/* Perform one request on this thread's handle. Returns APR_SUCCESS when an HTTP response was
 * received (whatever its status; see resp->status), else one of RMSYNC_HTTP_E*. All response
 * data lives in p. */
apr_status_t rmsync_http_perform(apr_pool_t *p, const rmsync_http_req_t *req,
                                 rmsync_http_resp_t *resp);

/* Release the calling thread's easy handle now (e.g. at the end of a unit test's main). */
void rmsync_http_thread_done(void);

/* A random (version 4) UUID, lowercase. */
const char *rmsync_http_uuid(apr_pool_t *p);

/* Percent-encode s for use as one URL path segment or one query/form value: everything except
 * RFC 3986 unreserved characters is encoded (so '/', '+', '=' in Graph ids are encoded once). */
const char *rmsync_http_escape(apr_pool_t *p, const char *s);

/* Short text for the RMSYNC_HTTP_* codes. */
const char *rmsync_http_strerror(apr_status_t rv);

#endif /* RMSYNC_HTTP_H */
