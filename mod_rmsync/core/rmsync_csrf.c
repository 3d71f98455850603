/* mod_rmsync, run by Apache worker processes: the admin forms' CSRF token and its shared secret
 * in the database, the admin origin and the same-origin check of state-changing POSTs, and the
 * module's one constant-time comparison (rmsync_csrf.h). */
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include <apr_uri.h>
#include <apr_sha1.h>
#include <apr_escape.h>
#include "rmsync.h"
#include "rmsync_form.h"
#include "rmsync_db.h"
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
                     const char *origin, long long window, char hexout[RMSYNC_CSRF_TOKEN_LEN + 1])
{
    unsigned char msg[1024], mac[APR_SHA1_DIGESTSIZE];
    apr_size_t ulen, olen, n = 0;
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
    if (origin && *origin) {
        /* bound to the admin origin: "origin" NUL (absent: the format of old tokens) */
        olen = strlen(origin);
        if (olen > 300) {
            olen = 300;
        }
        memcpy(msg + n, origin, olen);
        n += olen;
        msg[n++] = '\0';
    }
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
                              const char *user, const char *origin, apr_time_t now)
{
    char buf[RMSYNC_CSRF_TOKEN_LEN + 1];

    if (!secret || secret_len < RMSYNC_CSRF_SECRET_MIN) {
        return "";      /* never a usable token without a real secret */
    }
    csrf_mac(secret, secret_len, user, origin, csrf_window(now), buf);
    return apr_pstrdup(p, buf);
}

int rmsync_csrf_verify(const unsigned char *secret, apr_size_t secret_len,
                       const char *user, const char *origin, const char *token, apr_time_t now)
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
        csrf_mac(secret, secret_len, user, origin, w - i, want);
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

static int is_loopback(const char *host)
{
    return !strcmp(host, "127.0.0.1") || !strcmp(host, "localhost") || !strcmp(host, "[::1]");
}

const char *rmsync_origin_parse(apr_pool_t *p, const char *url, int with_path)
{
    apr_uri_t uri;
    const char *scheme;
    char *host, *c;
    int port;

    if (!url || !*url || apr_uri_parse(p, url, &uri) != APR_SUCCESS || !uri.scheme
        || !uri.hostname || !*uri.hostname || uri.user || uri.password) {
        return NULL;
    }
    if (!strcasecmp(uri.scheme, "http")) {
        scheme = "http";
        port = 80;
    }
    else if (!strcasecmp(uri.scheme, "https")) {
        scheme = "https";
        port = 443;
    }
    else {
        return NULL;
    }
    if (!with_path && ((uri.path && *uri.path && strcmp(uri.path, "/")) || uri.query
                       || uri.fragment)) {
        return NULL;
    }
    if (uri.port_str) {
        long long v;
        if (!rmsync_parse_int64(uri.port_str, 1, 65535, &v)) {
            return NULL;
        }
        port = (int)v;
    }
    /* apr_uri_parse strips an IPv6 literal's brackets: put them back */
    host = strchr(uri.hostname, ':') ? apr_pstrcat(p, "[", uri.hostname, "]", NULL)
                                     : apr_pstrdup(p, uri.hostname);
    for (c = host; *c; c++) {
        if ((unsigned char)*c <= ' ' || *c == '/' || *c == '@' || *c == '\\') {
            return NULL;
        }
        *c = (char)apr_tolower(*c);
    }
    return apr_psprintf(p, "%s://%s:%d", scheme, host, port);
}

/* The host part of a normalised origin ("scheme://host:port"). */
static const char *origin_host(apr_pool_t *p, const char *origin)
{
    const char *h = strstr(origin, "://"), *colon;

    h = h ? h + 3 : origin;
    colon = strrchr(h, ':');
    return colon ? apr_pstrmemdup(p, h, (apr_size_t)(colon - h)) : h;
}

int rmsync_same_origin(apr_pool_t *p, const char *origin, const char *referer,
                       const char *sec_fetch_site, const char *host,
                       const apr_array_header_t *allowed, const char **why)
{
    const char *url, *rhost, *norm;
    int rport, i, host_ok = 0;

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
    if (!allowed || allowed->nelts < 1) {
        *why = "no admin origin configured";
        return 0;
    }
    if (!split_hostport(p, host, &rhost, &rport)) {
        *why = "bad Host header";
        return 0;
    }
    /* DNS rebinding: a browser sends the attacker's name as Host; a loopback name can only be
     * what the client (or a proxy in front) really connected to. Ports are not compared: a
     * proxy may or may not pass them on. */
    for (i = 0; i < allowed->nelts && !host_ok; i++) {
        host_ok = !strcmp(rhost, origin_host(p, RMSYNC_ARRAY_IDX(allowed, i, const char *)));
    }
    if (!host_ok && !is_loopback(rhost)) {
        *why = "Host is not the admin origin's host (RMSyncAdminOrigin)";
        return 0;
    }
    norm = rmsync_origin_parse(p, url, origin && *origin ? 0 : 1);
    if (!norm) {
        *why = "unparsable Origin/Referer";
        return 0;
    }
    for (i = 0; i < allowed->nelts; i++) {
        if (!strcmp(norm, RMSYNC_ARRAY_IDX(allowed, i, const char *))) {
            *why = NULL;
            return 1;
        }
    }
    *why = "Origin/Referer is not the admin origin (RMSyncAdminOrigin)";
    return 0;
}

/* ---- the shared secret (rmsync.csrf_secret) ------------------------------------------------ */

/* The day's secret is made by the statement of the first node that needs it (ON CONFLICT: one
 * wins, the others read it); PostgreSQL's gen_random_uuid() is a strong random source, so the
 * secret never travels in a statement's parameters. Secrets older than two days are dropped. */
static const rmsync_db_stmt_t csrf_stmts[] = {
    { "csrf_secret",
      "WITH ins AS (INSERT INTO rmsync.csrf_secret (period, secret)"
      "             VALUES ($1::bigint, decode(replace(gen_random_uuid()::text"
      "                     || gen_random_uuid()::text, '-', ''), 'hex'))"
      "             ON CONFLICT (period) DO NOTHING RETURNING period, secret),"
      "     old AS (DELETE FROM rmsync.csrf_secret WHERE period < $1::bigint - 2)"
      " SELECT period, encode(secret, 'hex') AS secret FROM ins"
      " UNION ALL SELECT period, encode(secret, 'hex') FROM rmsync.csrf_secret"
      "           WHERE period IN ($1::bigint, $1::bigint - 1)", 1 },
};

apr_status_t rmsync_csrf_secret_init(void)
{
    return rmsync_db_register(csrf_stmts, (int)(sizeof(csrf_stmts) / sizeof(csrf_stmts[0])));
}

long long rmsync_csrf_period(apr_time_t now)
{
    return (long long)(apr_time_sec(now) / RMSYNC_CSRF_PERIOD_S);
}

apr_status_t rmsync_csrf_secret_fetch(rmsync_db_t *db, apr_pool_t *p, long long period,
                                      unsigned char cur[RMSYNC_CSRF_SECRET_LEN],
                                      unsigned char prev[RMSYNC_CSRF_SECRET_LEN], int *have_prev)
{
    rmsync_db_result_t *res;
    const char *ps = apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)period);
    int attempt, i, have_cur = 0;

    *have_prev = 0;
    /* twice: a secret inserted by another node after this statement's snapshot is invisible
     * to it (ON CONFLICT did nothing, the SELECT saw nothing); the next statement sees it */
    for (attempt = 0; attempt < 2 && !have_cur; attempt++) {
        apr_status_t rv = rmsync_db_exec(db, p, "csrf_secret", RMSYNC_DB_PARAMS(ps), &res);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        for (i = 0; i < res->nrows; i++) {
            const char *per = rmsync_db_value(res, i, 0), *hex = rmsync_db_value(res, i, 1);
            unsigned char *dst;
            apr_size_t n = 0;
            if (!per || !hex || strlen(hex) < 2 * RMSYNC_CSRF_SECRET_LEN) {
                continue;
            }
            dst = !strcmp(per, ps) ? cur : prev;
            if (apr_unescape_hex(dst, hex, 2 * RMSYNC_CSRF_SECRET_LEN, 0, &n) != APR_SUCCESS
                || n != RMSYNC_CSRF_SECRET_LEN) {
                continue;
            }
            if (dst == cur) {
                have_cur = 1;
            }
            else {
                *have_prev = 1;
            }
        }
    }
    return have_cur ? APR_SUCCESS : APR_ENOENT;
}
