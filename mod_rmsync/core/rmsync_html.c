/* mod_rmsync: pure helpers for the admin pages (see rmsync_html.h). */
#include <stdio.h>
#include <stdarg.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include <apr_uri.h>
#include <apr_sha1.h>
#include <apr_escape.h>
#include "rmsync_html.h"

const char *rmsync_html_escape(apr_pool_t *p, const char *s)
{
    apr_size_t n = 0;
    const char *c;
    char *out, *o;

    if (!s) {
        return "";
    }
    for (c = s; *c; c++) {
        switch (*c) {
        case '&': n += 5; break;
        case '<': case '>': n += 4; break;
        case '"': case '\'': n += 6; break;
        default: n++;
        }
    }
    if (n == (apr_size_t)(c - s)) {
        return s;       /* nothing to escape */
    }
    o = out = apr_palloc(p, n + 1);
    for (c = s; *c; c++) {
        switch (*c) {
        case '&': memcpy(o, "&amp;", 5); o += 5; break;
        case '<': memcpy(o, "&lt;", 4); o += 4; break;
        case '>': memcpy(o, "&gt;", 4); o += 4; break;
        case '"': memcpy(o, "&quot;", 6); o += 6; break;
        case '\'': memcpy(o, "&#x27;", 6); o += 6; break;
        default: *o++ = *c;
        }
    }
    *o = '\0';
    return out;
}

const char *rmsync_url_escape(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *c;
    char *out, *o;

    if (!s) {
        return "";
    }
    o = out = apr_palloc(p, strlen(s) * 3 + 1);
    for (c = (const unsigned char *)s; *c; c++) {
        if (apr_isalnum(*c) || *c == '-' || *c == '_' || *c == '.' || *c == '~') {
            *o++ = (char)*c;
        }
        else {
            *o++ = '%';
            *o++ = hex[*c >> 4];
            *o++ = hex[*c & 15];
        }
    }
    *o = '\0';
    return out;
}

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
    static const char hex[] = "0123456789abcdef";
    unsigned char msg[512], mac[APR_SHA1_DIGESTSIZE];
    apr_size_t ulen, n = 0;
    int i, w;

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
    for (i = 0; i < APR_SHA1_DIGESTSIZE; i++) {
        hexout[2 * i] = hex[mac[i] >> 4];
        hexout[2 * i + 1] = hex[mac[i] & 15];
    }
    hexout[RMSYNC_CSRF_TOKEN_LEN] = '\0';
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

apr_status_t rmsync_form_parse(apr_pool_t *p, const char *body, apr_size_t len,
                               const char *const *allowed, int max_params,
                               apr_table_t **out, const char **err)
{
    apr_table_t *t = apr_table_make(p, 8);
    const char *s = body, *end = body + len;
    int count = 0;

    *out = t;
    *err = NULL;
    if (!body) {
        return APR_SUCCESS;
    }
    if (memchr(body, '\0', len)) {
        *err = "NUL byte in form data";
        return APR_EINVAL;
    }
    while (s < end) {
        const char *amp = memchr(s, '&', (apr_size_t)(end - s));
        const char *pe = amp ? amp : end, *eq;
        const char *name, *value;
        const char *const *a;

        if (pe == s) {          /* empty pair ("a=1&&b=2"): skip */
            s = pe + 1;
            continue;
        }
        if (++count > max_params) {
            *err = "too many parameters";
            return APR_EINVAL;
        }
        eq = memchr(s, '=', (apr_size_t)(pe - s));
        name = apr_pstrmemdup(p, s, (apr_size_t)((eq ? eq : pe) - s));
        value = eq ? apr_pstrmemdup(p, eq + 1, (apr_size_t)(pe - eq - 1)) : "";
        name = apr_punescape_url(p, name, NULL, NULL, 1);
        value = apr_punescape_url(p, value, NULL, NULL, 1);
        if (!name || !value) {
            *err = "bad %-escape in form data";
            return APR_EINVAL;
        }
        for (a = allowed; a && *a; a++) {
            if (!strcmp(*a, name)) {
                break;
            }
        }
        if (!a || !*a) {
            *err = apr_psprintf(p, "unknown parameter '%s'", rmsync_html_escape(p, name));
            return APR_EINVAL;
        }
        apr_table_add(t, name, value);
        s = pe + 1;
    }
    return APR_SUCCESS;
}

int rmsync_parse_int64(const char *s, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (!s || !*s || apr_isspace(*s)) {
        return 0;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        return 0;
    }
    *out = v;
    return 1;
}

/* "YYYY-MM-DD", "YYYY-MM-DDTHH:MM" or "YYYY-MM-DDTHH:MM:SS" ('T' or ' '), a real UTC time. */
int rmsync_valid_utc_time(const char *s)
{
    static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    apr_size_t len, i;

    if (!s) {
        return 0;
    }
    len = strlen(s);

    if (len != 10 && len != 16 && len != 19) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        char c = s[i];
        int want_digit = !(i == 4 || i == 7 || i == 10 || i == 13 || i == 16);
        if (want_digit ? !apr_isdigit(c)
            : !((i == 4 || i == 7) ? c == '-' : i == 10 ? (c == 'T' || c == ' ') : c == ':')) {
            return 0;
        }
    }
    n = sscanf(s, "%4d-%2d-%2d", &y, &mo, &d);
    if (n != 3) {
        return 0;
    }
    if (len >= 16) {
        h = (s[11] - '0') * 10 + (s[12] - '0');
        mi = (s[14] - '0') * 10 + (s[15] - '0');
    }
    if (len == 19) {
        sec = (s[17] - '0') * 10 + (s[18] - '0');
    }
    if (y < 1970 || y > 2999 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1]
        || h > 23 || mi > 59 || sec > 59) {
        return 0;
    }
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return 0;
    }
    return 1;
}

const char *rmsync_fmt_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t e;

    if (t == 0 || apr_time_exp_gmt(&e, t) != APR_SUCCESS) {
        return "-";
    }
    return apr_psprintf(p, "%04d-%02d-%02d %02d:%02d:%02dZ", e.tm_year + 1900, e.tm_mon + 1,
                        e.tm_mday, e.tm_hour, e.tm_min, e.tm_sec);
}

const char *rmsync_fmt_iso(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t e;

    if (t == 0 || apr_time_exp_gmt(&e, t) != APR_SUCCESS) {
        return NULL;
    }
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02dZ", e.tm_year + 1900, e.tm_mon + 1,
                        e.tm_mday, e.tm_hour, e.tm_min, e.tm_sec);
}

const char *rmsync_fmt_duration(apr_pool_t *p, long long s)
{
    const char *sign = "";

    if (s < 0) {
        sign = "-";
        s = -s;
    }
    if (s < 60) {
        return apr_psprintf(p, "%s%ds", sign, (int)s);
    }
    if (s < 3600) {
        return apr_psprintf(p, "%s%dm %02ds", sign, (int)(s / 60), (int)(s % 60));
    }
    if (s < 86400) {
        return apr_psprintf(p, "%s%dh %02dm", sign, (int)(s / 3600), (int)((s % 3600) / 60));
    }
    return apr_psprintf(p, "%s%" APR_INT64_T_FMT "d %02dh", sign, (apr_int64_t)(s / 86400),
                        (int)((s % 86400) / 3600));
}

const char *rmsync_html_page_begin(apr_pool_t *p, const char *base, const char *title,
                                   const char *current)
{
    return rmsync_html_page_begin_refresh(p, base, title, current, 0);
}

const char *rmsync_html_page_begin_refresh(apr_pool_t *p, const char *base, const char *title,
                                           const char *current, int refresh_s)
{
    static const char *const pages[][2] = {
        { "config", "Configuration" }, { "log", "Sync Log" },
        { "status", "Status" }, { "metrics", "Metrics" },
    };
    const char *b = rmsync_html_escape(p, base);
    const char *nav = "";
    apr_size_t i;

    for (i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        int cur = current && !strcmp(current, pages[i][0]);
        nav = apr_pstrcat(p, nav, "<a href=\"", b, "/", pages[i][0], "\"",
                          cur ? " class=\"current\" aria-current=\"page\"" : "", ">",
                          pages[i][1], "</a>", NULL);
    }
    return apr_pstrcat(p,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        refresh_s > 0 ? apr_psprintf(p, "<meta http-equiv=\"refresh\" content=\"%d\">",
                                     refresh_s) : "",
        "<title>", rmsync_html_escape(p, title), " - mod_rmsync</title>"
        "<link rel=\"stylesheet\" href=\"", b, "/style.css\"></head>\n<body>"
        "<header class=\"top\"><span class=\"brand\">Outlook Calendar Sync</span><nav>", nav,
        "</nav></header>\n<main>\n<h1>", rmsync_html_escape(p, title), "</h1>\n", NULL);
}

const char *rmsync_html_page_end(apr_pool_t *p)
{
    (void)p;
    return "</main>\n<footer>mod_rmsync</footer>\n</body></html>\n";
}

struct rmsync_sb_t {
    apr_pool_t *p;
    apr_array_header_t *parts;
};

rmsync_sb_t *rmsync_sb_make(apr_pool_t *p)
{
    rmsync_sb_t *sb = apr_palloc(p, sizeof(*sb));
    sb->p = p;
    sb->parts = apr_array_make(p, 64, sizeof(const char *));
    return sb;
}

void rmsync_sb_add(rmsync_sb_t *sb, const char *s)
{
    if (s && *s) {
        APR_ARRAY_PUSH(sb->parts, const char *) = s;
    }
}

void rmsync_sb_addv(rmsync_sb_t *sb, ...)
{
    const char *s;
    va_list ap;

    va_start(ap, sb);
    while ((s = va_arg(ap, const char *)) != NULL) {
        rmsync_sb_add(sb, s);
    }
    va_end(ap);
}

const char *rmsync_sb_join(rmsync_sb_t *sb)
{
    return apr_array_pstrcat(sb->p, sb->parts, 0);
}

const char rmsync_html_css[] =
    ":root{--fg:#1d2430;--muted:#5b6675;--line:#d8dee6;--bg:#f5f7fa;--card:#fff;"
    "--accent:#0f5fa8;--ok:#1d7a3a;--warn:#a85f00;--err:#b42318;}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    "color:var(--fg);background:var(--bg)}\n"
    "header.top{display:flex;align-items:center;gap:24px;padding:10px 24px;background:#17324d;"
    "color:#fff}\n"
    "header.top .brand{font-weight:600;font-size:15px}\n"
    "header.top nav a{color:#c9d8e8;text-decoration:none;margin-right:18px;padding:4px 0}\n"
    "header.top nav a.current{color:#fff;border-bottom:2px solid #fff}\n"
    "main{padding:16px 24px;max-width:1500px}\n"
    "h1{font-size:20px;margin:4px 0 14px}\n"
    "h2{font-size:16px;margin:22px 0 8px}\n"
    "section.card h2{margin-top:0}\n"
    "section.card{background:var(--card);border:1px solid var(--line);border-radius:6px;"
    "padding:12px 16px;margin-bottom:14px}\n"
    "dl.settings{display:grid;grid-template-columns:max-content 1fr max-content 1fr;"
    "gap:4px 16px;margin:0}\n"
    "dl.settings dt{color:var(--muted)}\n"
    "dl.settings dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;"
    "overflow-wrap:anywhere}\n"
    "dl.counters{grid-template-columns:repeat(3,max-content 1fr)}\n"
    "dl.counters dd{text-align:right;padding-right:24px}\n"
    "table{border-collapse:collapse;width:100%;background:var(--card);"
    "border:1px solid var(--line)}\n"
    "th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);"
    "vertical-align:top}\n"
    "th{background:#eef2f6;font-weight:600;white-space:nowrap}\n"
    "tr:hover td{background:#f9fbfd}\n"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "td.msg{max-width:520px;word-break:break-word}\n"
    "td.mono,span.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}\n"
    ".badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;"
    "font-weight:600;background:#e6e9ee;color:var(--muted)}\n"
    ".badge.ok{background:#e3f4e8;color:var(--ok)}\n"
    ".badge.warn{background:#fdf0dc;color:var(--warn)}\n"
    ".badge.err{background:#fde8e6;color:var(--err)}\n"
    ".hint{color:var(--muted);margin:6px 0 0}\n"
    ".flash{padding:8px 12px;border-radius:6px;margin-bottom:12px;background:#e8f1fb;"
    "border:1px solid #bcd5ef}\n"
    ".flash.err{background:#fde8e6;border-color:#f3b8b2}\n"
    "form.inline{display:inline;margin:0}\n"
    ".actions{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin-top:8px}\n"
    "button{font:inherit;font-size:13px;padding:3px 10px;border:1px solid #9fb3c8;"
    "border-radius:4px;background:#fff;color:var(--accent);cursor:pointer;white-space:nowrap}\n"
    "button:hover{background:#eef5fc}\n"
    "button:disabled{opacity:.45;cursor:not-allowed;background:#fff}\n"
    "button.primary{background:var(--accent);border-color:var(--accent);color:#fff}\n"
    "button.danger{color:var(--err);border-color:#e3a59f}\n"
    "form.filter{display:flex;gap:10px;flex-wrap:wrap;align-items:flex-end;margin-bottom:12px}\n"
    "form.filter label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}\n"
    "input,select{font:inherit;font-size:13px;padding:3px 6px;border:1px solid #b8c4d0;"
    "border-radius:4px}\n"
    "select{max-width:240px}\n"
    "td.when{white-space:nowrap}\n"
    ".pager{margin:10px 0;display:flex;gap:14px;align-items:center}\n"
    ".pager a{color:var(--accent)}\n"
    "a{color:var(--accent)}\n"
    "footer{padding:12px 24px;color:var(--muted);font-size:12px}\n";
