/* mod_rmsync: runs in the Apache worker processes (the webhook, admin and API handlers).
 * Request helpers they share: the one bounded body reader, the Content-Type and same-origin
 * checks of their POSTs, the admin CSRF token. */
#include <string.h>

#include "httpd.h"
#include "http_protocol.h"
#include "http_core.h"
#include "util_filter.h"
#include "apr_strings.h"
#include "apr_poll.h"

#include "rmsync_csrf.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_request.h"

/* APR_BRIGADE_SENTINEL's pointer arithmetic trips clang's -Wcast-align and
 * -Wnull-pointer-subtraction; the sentinel is the "bucket" whose link is the list head. */
static int at_sentinel(apr_bucket_brigade *bb, apr_bucket *b)
{
    return (void *)&b->link == (void *)&bb->list;
}

/* Copy the data buckets of bb behind buf[0..*len); 1 on EOS, 0 to read on, or an error
 * status. The buffer grows by doubling up to cap + 1 bytes. */
static int take_buckets(request_rec *r, apr_bucket_brigade *bb, apr_size_t cap, char **buf,
                        apr_size_t *size, apr_size_t *len)
{
    apr_bucket *b;

    for (b = APR_BRIGADE_FIRST(bb); !at_sentinel(bb, b); b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t n;
        if (APR_BUCKET_IS_EOS(b)) {
            return 1;
        }
        if (APR_BUCKET_IS_METADATA(b)) {
            continue;
        }
        if (apr_bucket_read(b, &data, &n, APR_BLOCK_READ) != APR_SUCCESS) {
            return HTTP_BAD_REQUEST;
        }
        if (n > cap - *len) {
            return HTTP_REQUEST_ENTITY_TOO_LARGE;
        }
        if (*len + n + 1 > *size) {
            apr_size_t nsize = *size * 2;
            char *nbuf;
            while (nsize < *len + n + 1) {
                nsize *= 2;
            }
            if (nsize > cap + 1) {
                nsize = cap + 1;
            }
            nbuf = apr_palloc(r->pool, nsize);
            memcpy(nbuf, *buf, *len);
            *buf = nbuf;
            *size = nsize;
        }
        memcpy(*buf + *len, data, n);
        *len += n;
    }
    return 0;
}

/* A body we refuse: close the connection after the answer, so the rest is never read (what
 * we did not read we do not want to read). */
static int refuse_body(request_rec *r, int status)
{
    r->connection->keepalive = AP_CONN_CLOSE;
    return status;
}

/* Wait until the client's socket is readable or the deadline passed: 0, or 408. */
static int wait_readable(apr_socket_t *sock, apr_time_t deadline)
{
    apr_interval_time_t left = deadline - apr_time_now();
    apr_pollfd_t pfd;
    apr_int32_t n = 0;
    apr_status_t rv;

    if (left <= 0) {
        return HTTP_REQUEST_TIME_OUT;
    }
    memset(&pfd, 0, sizeof(pfd));
    pfd.desc_type = APR_POLL_SOCKET;
    pfd.desc.s = sock;
    pfd.reqevents = APR_POLLIN;
    do {
        rv = apr_poll(&pfd, 1, &n, left);
    } while (APR_STATUS_IS_EINTR(rv) && (left = deadline - apr_time_now()) > 0);
    return rv == APR_SUCCESS && n > 0 ? 0 : HTTP_REQUEST_TIME_OUT;
}

int rmsync_read_body(request_rec *r, apr_size_t max, apr_interval_time_t limit, char **pbuf,
                     apr_size_t *plen)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_bucket_brigade *bb;
    apr_size_t len = 0, size = 8192;
    apr_time_t deadline = limit > 0 ? apr_time_now() + limit : 0;
    /* With a limit the reads do not block: between them we wait for the socket ourselves, up
     * to the deadline, whatever Timeout or mod_reqtimeout allow (an HTTP/2 stream has no socket
     * of its own: there only the time between reads is checked). */
    apr_socket_t *sock = limit > 0 && !r->connection->master ? ap_get_conn_socket(r->connection)
                                                             : NULL;
    char *buf;
    int done = 0;

    if (cl) {
        apr_off_t n;
        char *end;
        if (apr_strtoff(&n, cl, &end, 10) != APR_SUCCESS || *end || n < 0) {
            return refuse_body(r, HTTP_BAD_REQUEST);
        }
        if ((apr_uint64_t)n > (apr_uint64_t)max) {
            return refuse_body(r, HTTP_REQUEST_ENTITY_TOO_LARGE);
        }
        if (n > 0) {
            size = (apr_size_t)n + 1;
        }
    }
    if (size > max + 1) {
        size = max + 1;
    }
    buf = apr_palloc(r->pool, size);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    while (!done) {
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         sock ? APR_NONBLOCK_READ : APR_BLOCK_READ,
                                         HUGE_STRING_LEN);
        if (sock && (APR_STATUS_IS_EAGAIN(rv)
                     || (rv == APR_SUCCESS && at_sentinel(bb, APR_BRIGADE_FIRST(bb))))) {
            apr_brigade_cleanup(bb);
            if ((done = wait_readable(sock, deadline)) != 0) {
                break;
            }
            continue;
        }
        if (rv != APR_SUCCESS) {
            /* LimitRequestBody gives APR_ENOSPC, which maps to 413 */
            done = ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
            if (done != HTTP_REQUEST_ENTITY_TOO_LARGE) {
                done = HTTP_BAD_REQUEST;
            }
            break;
        }
        done = take_buckets(r, bb, max, &buf, &size, &len);
        apr_brigade_cleanup(bb);
        if (!done && deadline && apr_time_now() >= deadline) {
            done = HTTP_REQUEST_TIME_OUT;           /* a client trickling its body */
        }
    }
    apr_brigade_destroy(bb);
    if (done != 1) {
        return refuse_body(r, done);
    }
    buf[len] = '\0';
    *pbuf = buf;
    *plen = len;
    return OK;
}

int rmsync_request_has_type(request_rec *r, const char *type)
{
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    apr_size_t n = strlen(type);

    if (!ct) {
        return 0;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    return !strncasecmp(ct, type, n)
           && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

int rmsync_request_same_origin(request_rec *r, const char **why)
{
    const char *scheme = ap_http_scheme(r);

    return rmsync_same_origin(r->pool, apr_table_get(r->headers_in, "Origin"),
                              apr_table_get(r->headers_in, "Referer"),
                              apr_table_get(r->headers_in, "Sec-Fetch-Site"),
                              apr_table_get(r->headers_in, "Host"),
                              scheme && !strcmp(scheme, "https"), why);
}

const char *rmsync_request_csrf_token(apr_pool_t *p, const char *user)
{
    rmsync_shm_t *live = rmsync_shm_get();

    return live ? rmsync_csrf_token(p, live->csrf_secret, sizeof(live->csrf_secret), user,
                                    apr_time_now())
                : NULL;
}

int rmsync_request_csrf_ok(const char *user, const char *token)
{
    rmsync_shm_t *live = rmsync_shm_get();

    return live && token && rmsync_csrf_verify(live->csrf_secret, sizeof(live->csrf_secret),
                                               user, token, apr_time_now());
}
