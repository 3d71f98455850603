/* mod_rmsync, run by Apache worker processes: the admin forms' CSRF token, the same-origin check
 * of state-changing POSTs, and the module's one constant-time comparison (rmsync_csrf.h). */
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include <apr_uri.h>
#include <apr_sha1.h>
#include <apr_escape.h>
#include "rmsync_form.h"
#include "rmsync_csrf.h"

int rmsync_ct_equals(const void *a, const void *b, apr_size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    apr_size_t i;

    for (i = 0; i < n; i++) {
        d |= x[i] ^ y[i];
    }
    return d == 0;
}

/* HMAC-SHA1 (RFC 2104) over apr_sha1: enough for a short-lived form token and needs no
 * extra library in the module. */
static void hmac_sha1(const unsigned char *key, apr_size_t klen, const unsigned char *msg,
                      apr_size_t mlen, unsigned char out[APR_SHA1_DIGESTSIZE])
{
    unsigned char k[64], pad[64], inner[APR_SHA1_DIGESTSIZE];
    apr_sha1_ctx_t ctx;
    int i;

    memset(k, 0, sizeof(k));
    if (klen > sizeof(k)) {
        apr_sha1_init(&ctx);
        apr_sha1_update_binary(&ctx, key, (unsigned int)klen);
        apr_sha1_final(k, &ctx);
    }
    else {
        memcpy(k, key, klen);
    }
    for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
    apr_sha1_init(&ctx);
    apr_sha1_update_binary(&ctx, pad, 64);
    apr_sha1_update_binary(&ctx, msg, (unsigned int)mlen);
    apr_sha1_final(inner, &ctx);
    for (i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
    apr_sha1_init(&ctx);
    apr_sha1_update_binary(&ctx, pad, 64);
    apr_sha1_update_binary(&ctx, inner, sizeof(inner));
    apr_sha1_final(out, &ctx);
    memset(k, 0, sizeof(k));
    memset(pad, 0, sizeof(pad));
}

static void csrf_mac(const unsigned char *secret, apr_size_t slen, const char *user,
                     long long window, char hexout[RMSYNC_CSRF_TOKEN_LEN + 1])
{
    unsigned char msg[512], mac[APR_SHA1_DIGESTSIZE];
    apr_size_t ulen, n = 0;
    int w;

    if (!user || !*user) {
        user = "-";
    }
    ulen = strlen(user);
    if (ulen > 300) {
        ulen = 300;     /* bounded; user names are short, the MAC still binds the prefix */
    }
    memcpy(msg, "rmsync-csrf", 12);     /* includes the NUL separator */
    n = 12;
    memcpy(msg + n, user, ulen);
    n += ulen;
    msg[n++] = '\0';
    w = apr_snprintf((char *)msg + n, sizeof(msg) - n, "%" APR_INT64_T_FMT, (apr_int64_t)window);
    n += (apr_size_t)w;
    hmac_sha1(secret, slen, msg, n, mac);
    /* lower-case hex, NUL-terminated: RMSYNC_CSRF_TOKEN_LEN + 1 bytes */
    apr_escape_hex(hexout, mac, APR_SHA1_DIGESTSIZE, 0, NULL);
}

static long long csrf_window(apr_time_t now)
{
    return (long long)(apr_time_sec(now) / RMSYNC_CSRF_WINDOW_S);
}

const char *rmsync_csrf_token(apr_pool_t *p, const unsigned char *secret, apr_size_t secret_len,
                              const char *user, apr_time_t now)
{
    char buf[RMSYNC_CSRF_TOKEN_LEN + 1];

    if (!secret || secret_len < RMSYNC_CSRF_SECRET_MIN) {
        return "";      /* never a usable token without a real secret */
    }
    csrf_mac(secret, secret_len, user, csrf_window(now), buf);
    return apr_pstrdup(p, buf);
}

int rmsync_csrf_verify(const unsigned char *secret, apr_size_t secret_len,
                       const char *user, const char *token, apr_time_t now)
{
    char want[RMSYNC_CSRF_TOKEN_LEN + 1];
    long long w = csrf_window(now);
    int ok = 0, i;

    if (!secret || secret_len < RMSYNC_CSRF_SECRET_MIN || !token
        || strlen(token) != RMSYNC_CSRF_TOKEN_LEN) {
        return 0;
    }
    /* current window and the previous one; check both always so timing says nothing */
    for (i = 0; i < 2; i++) {
        csrf_mac(secret, secret_len, user, w - i, want);
        ok |= rmsync_ct_equals(want, token, RMSYNC_CSRF_TOKEN_LEN);
    }
    memset(want, 0, sizeof(want));
    return ok;
}

/* Split "name[:port]" (or "[v6]:port") into a lower-case host and a port (0 = none given). */
static int split_hostport(apr_pool_t *p, const char *hp, const char **host, int *port)
{
    const char *colon;
    char *h;
    long long v;

    *port = 0;
    if (!hp || !*hp) {
        return 0;
    }
    if (*hp == '[') {
        const char *end = strchr(hp, ']');
        if (!end) {
            return 0;
        }
        h = apr_pstrmemdup(p, hp, (apr_size_t)(end - hp + 1));
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] && !colon) {
            return 0;
        }
    }
    else {
        colon = strrchr(hp, ':');
        h = colon ? apr_pstrmemdup(p, hp, (apr_size_t)(colon - hp)) : apr_pstrdup(p, hp);
    }
    if (colon) {
        if (!rmsync_parse_int64(colon + 1, 1, 65535, &v)) {
            return 0;
        }
        *port = (int)v;
    }
    if (!*h) {
        return 0;
    }
    {
        char *c;
        for (c = h; *c; c++) *c = (char)apr_tolower(*c);
    }
    *host = h;
    return 1;
}

int rmsync_same_origin(apr_pool_t *p, const char *origin, const char *referer,
                       const char *sec_fetch_site, const char *host, int https,
                       const char **why)
{
    const char *url, *rhost, *uhost;
    int rport, uport, want_port;
    apr_uri_t uri;
    char *c;

    if (sec_fetch_site && strcasecmp(sec_fetch_site, "same-origin")
        && strcasecmp(sec_fetch_site, "none")) {
        *why = "Sec-Fetch-Site is not same-origin";
        return 0;
    }
    url = (origin && *origin) ? origin : referer;
    if (!url || !*url) {
        *why = "neither Origin nor Referer present";
        return 0;
    }
    if (!strcmp(url, "null")) {
        *why = "Origin is null";
        return 0;
    }
    if (!split_hostport(p, host, &rhost, &rport)) {
        *why = "bad Host header";
        return 0;
    }
    if (apr_uri_parse(p, url, &uri) != APR_SUCCESS || !uri.scheme || !uri.hostname) {
        *why = "unparsable Origin/Referer";
        return 0;
    }
    if (strcasecmp(uri.scheme, https ? "https" : "http")) {
        *why = "Origin/Referer scheme differs";
        return 0;
    }
    uhost = apr_pstrdup(p, uri.hostname);
    for (c = (char *)uhost; *c; c++) *c = (char)apr_tolower(*c);
    /* apr_uri_parse strips the brackets of an IPv6 literal; the Host header keeps them */
    if (*rhost == '[') {
        rhost = apr_pstrmemdup(p, rhost + 1, strlen(rhost) - 2);
    }
    if (strcmp(uhost, rhost)) {
        *why = "Origin/Referer host differs";
        return 0;
    }
    want_port = rport ? rport : (https ? 443 : 80);
    uport = uri.port_str ? uri.port : (https ? 443 : 80);
    if (uport != want_port) {
        *why = "Origin/Referer port differs";
        return 0;
    }
    *why = NULL;
    return 1;
}
