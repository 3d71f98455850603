/* mod_rmsync, run by Apache worker processes (webhook intake, admin form / query parser,
 * linking API): strict UTF-8 and JSON-escape validation of input from outside (rmsync_utf8.h). */
#include <apr.h>
#include "rmsync_utf8.h"

int rmsync_utf8_valid(const char *str, apr_size_t len, const char **why)
{
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    const char *dummy;

    if (!why) {
        why = &dummy;
    }
    while (s < end) {
        unsigned char c = *s;
        apr_uint32_t cp, min;
        int n, i;

        if (c < 0x80) {
            if (!c) {
                *why = "NUL byte in a string";
                return 0;
            }
            s++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {           /* 0xc0, 0xc1: always overlong */
            n = 1; cp = c & 0x1f; min = 0x80;
        }
        else if ((c & 0xf0) == 0xe0) {
            n = 2; cp = c & 0x0f; min = 0x800;
        }
        else if (c >= 0xf0 && c <= 0xf4) {      /* 0xf5..0xff: beyond U+10FFFF or not UTF-8 */
            n = 3; cp = c & 0x07; min = 0x10000;
        }
        else {
            *why = c == 0xc0 || c == 0xc1 ? "overlong UTF-8 sequence" : "invalid UTF-8 byte";
            return 0;
        }
        if ((apr_size_t)(end - s) < (apr_size_t)n + 1) {
            *why = "truncated UTF-8 sequence";
            return 0;
        }
        for (i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80) {
                *why = "truncated UTF-8 sequence";
                return 0;
            }
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        if (cp < min) {
            *why = "overlong UTF-8 sequence";
            return 0;
        }
        if (cp >= 0xd800 && cp <= 0xdfff) {
            *why = "UTF-8 encoded surrogate";
            return 0;
        }
        if (cp > 0x10ffff) {
            *why = "code point beyond U+10FFFF";
            return 0;
        }
        s += n + 1;
    }
    return 1;
}

int rmsync_utf8_valid_str(const char *s, const char **why)
{
    apr_size_t n = 0;

    if (!s) {
        return 1;
    }
    while (s[n]) {
        n++;
    }
    return rmsync_utf8_valid(s, n, why);
}

/* The value of the 4 hex digits at s (s has at least 4 bytes), or -1. */
static long hex4(const char *s)
{
    long v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        int c = (unsigned char)s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

int rmsync_json_text_valid(const char *s, apr_size_t len, const char **why)
{
    apr_size_t i = 0;
    const char *dummy;

    if (!why) {
        why = &dummy;
    }
    if (!rmsync_utf8_valid(s, len, why)) {
        return 0;
    }
    while (i < len) {
        long v;

        if (s[i] != '\\') {
            i++;
            continue;
        }
        if (i + 1 >= len) {
            return 1;                   /* a dangling backslash: the parser refuses it */
        }
        if (s[i + 1] != 'u') {
            i += 2;                     /* \" \\ \/ \n ...: the escaped char is not a backslash */
            continue;
        }
        if (i + 6 > len || (v = hex4(s + i + 2)) < 0) {
            return 1;                   /* bad escape: the parser refuses it */
        }
        if (v == 0) {
            *why = "\\u0000 (NUL) in a JSON string";
            return 0;
        }
        if (v >= 0xdc00 && v <= 0xdfff) {
            *why = "lone surrogate escape in a JSON string";
            return 0;
        }
        if (v >= 0xd800 && v <= 0xdbff) {
            long lo;
            if (i + 12 > len || s[i + 6] != '\\' || s[i + 7] != 'u'
                || (lo = hex4(s + i + 8)) < 0xdc00 || lo > 0xdfff) {
                *why = "lone surrogate escape in a JSON string";
                return 0;
            }
            i += 12;
            continue;
        }
        i += 6;
    }
    return 1;
}
