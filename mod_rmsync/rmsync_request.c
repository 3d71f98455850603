/* mod_rmsync: runs in the Apache worker processes (the webhook, admin and API handlers).
 * Request helpers they share: the one bounded body reader, the Content-Type and same-origin
 * checks of their POSTs, the admin CSRF token. */
#include <string.h>
#include <pthread.h>

#include "httpd.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_core.h"
#include "util_filter.h"
#include "apr_strings.h"
#include "apr_poll.h"

#include "rmsync_csrf.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_request.h"
#include "mod_rmsync_config.h"
#include "rmsync.h"
#include "rmsync_db.h"

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

/* ---- admin origin ------------------------------------------------------------------------ */

const apr_array_header_t *rmsync_request_admin_origins(request_rec *r)
{
    const rmsync_settings_t *s = rmsync_config_get(r->server);
    apr_array_header_t *o;
    const char *scheme = ap_http_scheme(r);
    int port = r->connection->local_addr ? r->connection->local_addr->port : 0;
    const char *names[] = { r->server->server_hostname, "127.0.0.1", "localhost", "[::1]" };
    int i;

    if (s->admin_origins && s->admin_origins->nelts > 0) {
        return s->admin_origins;
    }
    /* Default: the server's own name (ServerName, not the client's Host) and the loopback
     * names, with the scheme and the port the request really came in on. */
    if (!port) {
        port = r->server->port ? r->server->port : ap_default_port(r);
    }
    o = apr_array_make(r->pool, 4, sizeof(const char *));
    for (i = 0; i < 4; i++) {
        const char *n;
        if (!names[i] || !*names[i]) {
            continue;
        }
        n = rmsync_origin_parse(r->pool, apr_psprintf(r->pool, "%s://%s:%d", scheme, names[i],
                                                      port), 0);
        if (n) {
            APR_ARRAY_PUSH(o, const char *) = n;
        }
    }
    return o;
}

/* The origin the CSRF tokens are bound to: the first admin origin. */
static const char *token_origin(request_rec *r)
{
    const apr_array_header_t *o = rmsync_request_admin_origins(r);

    return o->nelts > 0 ? RMSYNC_ARRAY_IDX(o, 0, const char *) : NULL;
}

int rmsync_request_same_origin(request_rec *r, const char **why)
{
    return rmsync_same_origin(r->pool, apr_table_get(r->headers_in, "Origin"),
                              apr_table_get(r->headers_in, "Referer"),
                              apr_table_get(r->headers_in, "Sec-Fetch-Site"),
                              apr_table_get(r->headers_in, "Host"),
                              rmsync_request_admin_origins(r), why);
}

/* ---- CSRF secret ------------------------------------------------------------------------- */

/* The process's copy of the shared secrets (rmsync.csrf_secret): the period's and the previous
 * one's. Loaded by a request that has a database handle when the period changes (once a day per
 * process), retried at most every CSRF_RETRY after a failure, so a worker never waits on the
 * database for it more than once in a while. A static pthread mutex: no pool or hook needed. */
#define CSRF_RETRY apr_time_from_sec(10)
static pthread_mutex_t csrf_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct {
    long long period;              /* of cur; 0 = nothing loaded */
    unsigned char cur[RMSYNC_CSRF_SECRET_LEN], prev[RMSYNC_CSRF_SECRET_LEN];
    int have_prev;
    apr_time_t tried;              /* last failed attempt */
    int registered;
} csrf;

int rmsync_request_csrf_stale(void)
{
    apr_time_t now = apr_time_now();
    int stale;

    pthread_mutex_lock(&csrf_mutex);
    stale = csrf.period != rmsync_csrf_period(now) && now - csrf.tried >= CSRF_RETRY;
    pthread_mutex_unlock(&csrf_mutex);
    return stale;
}

void rmsync_request_csrf_load(request_rec *r, rmsync_db_t *db)
{
    unsigned char cur[RMSYNC_CSRF_SECRET_LEN], prev[RMSYNC_CSRF_SECRET_LEN];
    long long period = rmsync_csrf_period(apr_time_now());
    apr_status_t rv = APR_EGENERAL;
    int have_prev = 0;

    if (db) {
        pthread_mutex_lock(&csrf_mutex);
        if (!csrf.registered) {
            csrf.registered = rmsync_csrf_secret_init() == APR_SUCCESS;
        }
        pthread_mutex_unlock(&csrf_mutex);
        rv = rmsync_csrf_secret_fetch(db, r->pool, period, cur, prev, &have_prev);
    }
    pthread_mutex_lock(&csrf_mutex);
    if (rv == APR_SUCCESS) {
        csrf.period = period;
        memcpy(csrf.cur, cur, sizeof(cur));
        memcpy(csrf.prev, prev, sizeof(prev));
        csrf.have_prev = have_prev;
    }
    else {
        csrf.tried = apr_time_now();
    }
    pthread_mutex_unlock(&csrf_mutex);
    memset(cur, 0, sizeof(cur));
    memset(prev, 0, sizeof(prev));
    if (rv != APR_SUCCESS && db) {
        /* database down: the pages say so anyway; anything else (no table?) is a warning */
        ap_log_rerror(APLOG_MARK, RMSYNC_DB_IS_DOWN(rv) ? APLOG_INFO : APLOG_WARNING, rv, r,
                      RMSYNC_LOGNO(00720)
                      "admin: could not load the shared CSRF secret from the database "
                      "(rmsync.csrf_secret: %s %s); tokens use this server's own secret for now",
                      rmsync_db_sqlstate(db) ? rmsync_db_sqlstate(db) : "-",
                      rmsync_db_errmsg(db) ? rmsync_db_errmsg(db) : "-");
    }
}

const char *rmsync_request_csrf_token(request_rec *r, const char *user)
{
    rmsync_shm_t *live = rmsync_shm_get();
    unsigned char key[RMSYNC_CSRF_SECRET_LEN];
    const char *t = NULL;
    apr_time_t now = apr_time_now();
    int shared;

    pthread_mutex_lock(&csrf_mutex);
    shared = csrf.period != 0 && csrf.period >= rmsync_csrf_period(now) - 1;
    if (shared) {
        memcpy(key, csrf.cur, sizeof(key));
    }
    pthread_mutex_unlock(&csrf_mutex);
    if (shared) {
        t = rmsync_csrf_token(r->pool, key, sizeof(key), user, token_origin(r), now);
        memset(key, 0, sizeof(key));
    }
    else if (live) {
        t = rmsync_csrf_token(r->pool, live->csrf_secret, sizeof(live->csrf_secret), user,
                              token_origin(r), now);
    }
    return t;
}

int rmsync_request_csrf_ok(request_rec *r, const char *user, const char *token)
{
    rmsync_shm_t *live = rmsync_shm_get();
    unsigned char keys[2][RMSYNC_CSRF_SECRET_LEN];
    const char *origin = token_origin(r);
    apr_time_t now = apr_time_now();
    int n = 0, ok = 0, i;

    if (!token) {
        return 0;
    }
    pthread_mutex_lock(&csrf_mutex);
    if (csrf.period != 0) {
        memcpy(keys[n++], csrf.cur, RMSYNC_CSRF_SECRET_LEN);
        if (csrf.have_prev) {
            memcpy(keys[n++], csrf.prev, RMSYNC_CSRF_SECRET_LEN);
        }
    }
    pthread_mutex_unlock(&csrf_mutex);
    /* every candidate secret is tried (the shared ones, then this generation's own) */
    for (i = 0; i < n; i++) {
        ok |= rmsync_csrf_verify(keys[i], RMSYNC_CSRF_SECRET_LEN, user, origin, token, now);
    }
    if (live) {
        ok |= rmsync_csrf_verify(live->csrf_secret, sizeof(live->csrf_secret), user, origin,
                                 token, now);
    }
    memset(keys, 0, sizeof(keys));
    return ok;
}
