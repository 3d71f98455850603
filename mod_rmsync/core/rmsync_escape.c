/* mod_rmsync, run by Apache worker processes (admin pages, API): HTML and URL escaping of
 * values put into pages and links (rmsync_escape.h). */
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync_escape.h"

/* Hand-written: APR's apr_pescape_entity() leaves the single quote alone, and a value put in a
 * single-quoted attribute must not end it. */
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

/* Hand-written: APR's apr_pescape_urlencoded() writes a space as '+' and leaves '*' alone, and
 * apr_pescape_path_segment() leaves sub-delimiters such as '&', '=' and '+' alone; a query value
 * needs everything but the RFC 3986 unreserved characters encoded. */
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

/* RFC 4180: quoted when it holds a comma, quote, CR or LF (quotes doubled). A cell a spreadsheet
 * would read as a formula (= + - @, or a leading TAB/CR) gets a leading apostrophe first, so an
 * exported log message can never run as a formula (OWASP "CSV injection"). */
const char *rmsync_csv_cell(apr_pool_t *p, const char *s)
{
    const char *c;
    char *out, *o;
    int quote = 0;

    if (!s) {
        return "";
    }
    if (*s == '=' || *s == '+' || *s == '-' || *s == '@' || *s == '\t' || *s == '\r') {
        s = apr_pstrcat(p, "'", s, NULL);
    }
    for (c = s; *c && !quote; c++) {
        quote = *c == ',' || *c == '"' || *c == '\r' || *c == '\n';
    }
    if (!quote) {
        return s;
    }
    o = out = apr_palloc(p, strlen(s) * 2 + 3);
    *o++ = '"';
    for (c = s; *c; c++) {
        if (*c == '"') {
            *o++ = '"';
        }
        *o++ = *c;
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

/* For "col ILIKE pattern" with PostgreSQL's default escape character (backslash). */
const char *rmsync_like_escape(apr_pool_t *p, const char *s)
{
    const char *c;
    char *out, *o;

    if (!s) {
        return "";
    }
    o = out = apr_palloc(p, strlen(s) * 2 + 1);
    for (c = s; *c; c++) {
        if (*c == '\\' || *c == '%' || *c == '_') {
            *o++ = '\\';
        }
        *o++ = *c;
    }
    *o = '\0';
    return out;
}
