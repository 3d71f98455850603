/* mod_rmsync, run by the sync runner: the libcurl easy wrapper under the Graph client (see
 * rmsync_http.h). */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <curl/curl.h>
#include <apr_strings.h>
#include <apr_atomic.h>
#include <apr_general.h>
#include "rmsync.h"
#include "rmsync_http.h"

#define DEF_MAX_RESPONSE (16 * 1024 * 1024)

/* ---- per-thread handle --------------------------------------------------------------------- */

static pthread_key_t handle_key;
static pthread_once_t handle_once = PTHREAD_ONCE_INIT;

static void handle_destroy(void *h)
{
    if (h) {
        curl_easy_cleanup((CURL *)h);
    }
}

static void handle_key_init(void)
{
    (void)pthread_key_create(&handle_key, handle_destroy);
}

/* This thread's handle, created on first use: never shared, never made before a fork. */
static CURL *thread_handle(void)
{
    CURL *h;

    pthread_once(&handle_once, handle_key_init);
    h = pthread_getspecific(handle_key);
    if (!h) {
        h = curl_easy_init();
        if (h && pthread_setspecific(handle_key, h) != 0) {
            curl_easy_cleanup(h);
            h = NULL;
        }
    }
    else {
        curl_easy_reset(h);  /* options back to defaults; connections and TLS sessions kept */
    }
    return h;
}

void rmsync_http_thread_done(void)
{
    CURL *h;

    pthread_once(&handle_once, handle_key_init);
    h = pthread_getspecific(handle_key);
    if (h) {
        pthread_setspecific(handle_key, NULL);
        curl_easy_cleanup(h);
    }
}

/* ---- helpers ------------------------------------------------------------------------------- */

const char *rmsync_http_uuid(apr_pool_t *p)
{
    unsigned char b[16];

    if (apr_generate_random_bytes(b, sizeof(b)) != APR_SUCCESS) {
        /* Uniqueness for correlation only, not security: fall back to time + address. */
        apr_time_t t = apr_time_now();
        apr_uintptr_t a = (apr_uintptr_t)&b;
        memcpy(b, &t, sizeof(t));
        memcpy(b + 8, &a, sizeof(a) < 8 ? sizeof(a) : 8);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    return apr_psprintf(p, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                        b[12], b[13], b[14], b[15]);
}

const char *rmsync_http_escape(apr_pool_t *p, const char *s)
{
    static const char xd[] = "0123456789ABCDEF";
    apr_size_t n = strlen(s);
    char *r = apr_palloc(p, 3 * n + 1), *q = r;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
            || c == '-' || c == '.' || c == '_' || c == '~') {
            *q++ = (char)c;
        }
        else {
            *q++ = '%';
            *q++ = xd[c >> 4];
            *q++ = xd[c & 15];
        }
    }
    *q = '\0';
    return r;
}

const char *rmsync_http_strerror(apr_status_t rv)
{
    switch (rv) {
    case RMSYNC_HTTP_ECONNECT:  return "could not connect";
    case RMSYNC_HTTP_ETLS:      return "TLS handshake or certificate verification failed";
    case RMSYNC_HTTP_ETIMEOUT:  return "timed out";
    case RMSYNC_HTTP_ETOOLARGE: return "response too large";
    case RMSYNC_HTTP_EABORTED:  return "aborted (stopping)";
    case RMSYNC_HTTP_EPROTO:    return "URL is not https";
    case RMSYNC_HTTP_ENET:      return "connection failed or dropped";
    case RMSYNC_HTTP_EINIT:     return "could not initialise the HTTP client";
    default:                    return "unknown transport error";
    }
}

/* ---- transfer ------------------------------------------------------------------------------ */

typedef struct {
    apr_pool_t *p;
    rmsync_http_resp_t *resp;
    char *buf;
    apr_size_t len, cap, max;
    int too_large;
    volatile apr_uint32_t *stop;
} xfer_t;

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer_t *x = ud;
    size_t n = size * nmemb;

    if (n > x->max || x->len > x->max - n) {
        x->too_large = 1;
        return 0;       /* -> CURLE_WRITE_ERROR: stop receiving now */
    }
    if (x->len + n + 1 > x->cap) {
        apr_size_t cap = x->cap ? x->cap : 8192;
        char *nb;
        while (cap < x->len + n + 1) {
            cap *= 2;
        }
        nb = realloc(x->buf, cap);
        if (!nb) {
            return 0;
        }
        x->buf = nb;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, ptr, n);
    x->len += n;
    return n;
}

static void capture(xfer_t *x, const char *name, apr_size_t nlen, const char *val, apr_size_t vlen)
{
    rmsync_http_resp_t *r = x->resp;
    const char *v;

#define HDR_IS(s) (nlen == sizeof(s) - 1 && !strncasecmp(name, s, nlen))
    if (!(HDR_IS("request-id") || HDR_IS("client-request-id") || HDR_IS("retry-after")
          || HDR_IS("preference-applied") || HDR_IS("content-type") || HDR_IS("location"))) {
        return;
    }
    v = apr_pstrmemdup(x->p, val, vlen);
    if (HDR_IS("request-id")) r->request_id = v;
    else if (HDR_IS("client-request-id")) r->client_request_id = v;
    else if (HDR_IS("retry-after")) r->retry_after = v;
    else if (HDR_IS("preference-applied")) {
        /* Several Preference-Applied headers may arrive: keep them all. */
        r->preference_applied = r->preference_applied
            ? apr_pstrcat(x->p, r->preference_applied, ", ", v, NULL) : v;
    }
    else if (HDR_IS("content-type")) r->content_type = v;
    else if (HDR_IS("location")) r->location = v;
#undef HDR_IS
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    xfer_t *x = ud;
    size_t n = size * nmemb, nlen, vs, ve;
    const char *colon;

    if (n >= 5 && !strncmp(ptr, "HTTP/", 5)) {
        /* A new response (after 100 Continue, say): forget earlier headers. */
        rmsync_http_resp_t *r = x->resp;
        r->request_id = r->client_request_id = r->retry_after = NULL;
        r->preference_applied = r->content_type = r->location = NULL;
        return n;
    }
    colon = memchr(ptr, ':', n);
    if (!colon) {
        return n;
    }
    nlen = (size_t)(colon - ptr);
    vs = nlen + 1;
    while (vs < n && (ptr[vs] == ' ' || ptr[vs] == '\t')) {
        vs++;
    }
    ve = n;
    while (ve > vs && (ptr[ve - 1] == '\r' || ptr[ve - 1] == '\n' || ptr[ve - 1] == ' '
                       || ptr[ve - 1] == '\t')) {
        ve--;
    }
    capture(x, ptr, nlen, ptr + vs, ve - vs);
    return n;
}

static int on_progress(void *ud, curl_off_t dlt, curl_off_t dln, curl_off_t ult, curl_off_t uln)
{
    xfer_t *x = ud;
    (void)dlt; (void)dln; (void)ult; (void)uln;
    return (x->stop && apr_atomic_read32(x->stop)) ? 1 : 0;
}

static apr_status_t free_buf(void *data)
{
    free(data);
    return APR_SUCCESS;
}

static apr_status_t map_curl(CURLcode cc, const xfer_t *x)
{
    switch (cc) {
    case CURLE_OK:
        return APR_SUCCESS;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return RMSYNC_HTTP_ECONNECT;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return RMSYNC_HTTP_ETLS;
    case CURLE_OPERATION_TIMEDOUT:
        return RMSYNC_HTTP_ETIMEOUT;
    case CURLE_FILESIZE_EXCEEDED:
        return RMSYNC_HTTP_ETOOLARGE;
    case CURLE_WRITE_ERROR:
        return x->too_large ? RMSYNC_HTTP_ETOOLARGE : RMSYNC_HTTP_ENET;
    case CURLE_ABORTED_BY_CALLBACK:
        return RMSYNC_HTTP_EABORTED;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return RMSYNC_HTTP_EPROTO;
    default:
        return RMSYNC_HTTP_ENET;
    }
}

#define SETOPT(h, o, v) do { if (curl_easy_setopt((h), (o), (v)) != CURLE_OK) goto setup_failed; } while (0)

apr_status_t rmsync_http_perform(apr_pool_t *p, const rmsync_http_req_t *req,
                                 rmsync_http_resp_t *resp)
{
    CURL *h;
    struct curl_slist *hdrs = NULL, *tmp;
    char errbuf[CURL_ERROR_SIZE];
    xfer_t x;
    CURLcode cc;
    long code = 0;
    const char *method = req->method ? req->method : "GET";
    apr_time_t t0 = apr_time_now();
    apr_status_t rv;
    int i;

    memset(resp, 0, sizeof(*resp));
    resp->body = "";
    resp->sent_client_request_id = req->client_request_id ? req->client_request_id
                                                          : rmsync_http_uuid(p);
    if (!req->url || strncasecmp(req->url, "https://", 8) != 0) {
        resp->error = "only https:// URLs are allowed";
        return RMSYNC_HTTP_EPROTO;
    }
    if (req->stop && apr_atomic_read32(req->stop)) {
        resp->error = "stopping";
        return RMSYNC_HTTP_EABORTED;
    }
    h = thread_handle();
    if (!h) {
        resp->error = "curl_easy_init failed";
        return RMSYNC_HTTP_EINIT;
    }
    memset(&x, 0, sizeof(x));
    x.p = p;
    x.resp = resp;
    x.max = req->max_response ? req->max_response : DEF_MAX_RESPONSE;
    x.stop = req->stop;
    errbuf[0] = '\0';

#define ADDH(s) do { tmp = curl_slist_append(hdrs, (s)); if (!tmp) goto setup_failed; hdrs = tmp; } while (0)
    if (req->headers) {
        for (i = 0; i < req->headers->nelts; i++) {
            ADDH(RMSYNC_ARRAY_IDX(req->headers, i, const char *));
        }
    }
    ADDH(apr_pstrcat(p, "client-request-id: ", resp->sent_client_request_id, NULL));
    ADDH("Expect:");   /* no 100-continue round trip */
#undef ADDH

    SETOPT(h, CURLOPT_URL, req->url);
    SETOPT(h, CURLOPT_PROTOCOLS_STR, "https");
    SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(h, CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (req->ca_file && *req->ca_file) {
        SETOPT(h, CURLOPT_CAINFO, req->ca_file);
    }
    SETOPT(h, CURLOPT_NOSIGNAL, 1L);
    if (req->fresh_connect) {
        SETOPT(h, CURLOPT_FRESH_CONNECT, 1L);
    }
    SETOPT(h, CURLOPT_CONNECTTIMEOUT, (long)(req->connect_timeout_s > 0 ? req->connect_timeout_s : 10));
    SETOPT(h, CURLOPT_TIMEOUT, (long)(req->total_timeout_s > 0 ? req->total_timeout_s : 60));
    SETOPT(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(h, CURLOPT_LOW_SPEED_TIME, (long)(req->stall_timeout_s > 0 ? req->stall_timeout_s : 30));
    SETOPT(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x.max);
    SETOPT(h, CURLOPT_ACCEPT_ENCODING, "");
    SETOPT(h, CURLOPT_USERAGENT, "mod_rmsync");
    SETOPT(h, CURLOPT_HTTPHEADER, hdrs);
    SETOPT(h, CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(h, CURLOPT_WRITEDATA, &x);
    SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(h, CURLOPT_HEADERDATA, &x);
    SETOPT(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    SETOPT(h, CURLOPT_XFERINFODATA, &x);
    SETOPT(h, CURLOPT_NOPROGRESS, 0L);
    SETOPT(h, CURLOPT_ERRORBUFFER, errbuf);

    if (!strcmp(method, "GET")) {
        SETOPT(h, CURLOPT_HTTPGET, 1L);
    }
    else {
        if (!strcmp(method, "POST")) {
            SETOPT(h, CURLOPT_POST, 1L);
        }
        else {
            SETOPT(h, CURLOPT_CUSTOMREQUEST, method);
        }
        if (req->body || !strcmp(method, "POST") || !strcmp(method, "PATCH")) {
            SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
            SETOPT(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        }
    }

    cc = curl_easy_perform(h);
    rv = map_curl(cc, &x);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    /* The handle keeps pointers to our headers/buffers: drop them before they go away. */
    curl_easy_reset(h);
    curl_slist_free_all(hdrs);
    resp->elapsed = apr_time_now() - t0;

    if (x.buf) {
        x.buf[x.len] = '\0';
        apr_pool_cleanup_register(p, x.buf, free_buf, apr_pool_cleanup_null);
        resp->body = x.buf;
        resp->body_len = x.len;
    }
    if (rv != APR_SUCCESS) {
        resp->status = 0;
        resp->error = apr_pstrdup(p, errbuf[0] ? errbuf : curl_easy_strerror(cc));
        return rv;
    }
    resp->status = (int)code;
    return APR_SUCCESS;

setup_failed:
    curl_easy_reset(h);
    curl_slist_free_all(hdrs);
    free(x.buf);
    resp->error = "could not set up the request";
    return RMSYNC_HTTP_EINIT;
}
