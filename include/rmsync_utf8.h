/* mod_rmsync: strict UTF-8 validation of every string that comes from outside
 * (core/rmsync_utf8.c; Apache worker processes: the webhook intake, the admin form / query
 * parser, the linking API). PostgreSQL refuses invalid UTF-8 (which the module would report as a
 * database failure) and a NUL byte silently cuts a C string: both are refused at the edge, with
 * 400 and a short reason. No httpd headers; unit-tested in tests/unit/test_utf8.c. */
#ifndef RMSYNC_UTF8_H
#define RMSYNC_UTF8_H

#include <apr_pools.h>

/* 1 when s[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates
 * U+D800-DFFF, nothing above U+10FFFF, no truncated sequence) without a NUL byte; else 0 and
 * *why (static text, never echoes input; why may be NULL). */
int rmsync_utf8_valid(const char *s, apr_size_t len, const char **why);

/* rmsync_utf8_valid over a NUL-terminated string (NULL is valid). */
int rmsync_utf8_valid_str(const char *s, const char **why);

/* The raw text of a JSON document before parsing: rmsync_utf8_valid, and no \u escape that
 * would decode to NUL (\u0000 cuts the decoded C string) or to a lone surrogate (a high one
 * not followed by a low one, or a low one alone). A backslash outside strings is invalid JSON
 * anyway; the parser refuses it. 1 when acceptable, else 0 and *why. */
int rmsync_json_text_valid(const char *s, apr_size_t len, const char **why);

#endif /* RMSYNC_UTF8_H */
