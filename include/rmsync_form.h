/* mod_rmsync: the bounded application/x-www-form-urlencoded parser with a parameter whitelist
 * and strict integer parsing (core/rmsync_form.c; admin pages and API in Apache worker
 * processes). No httpd headers; unit-tested in tests/unit/test_html.c. */
#ifndef RMSYNC_FORM_H
#define RMSYNC_FORM_H

#include <apr_pools.h>
#include <apr_tables.h>

/* Parse an application/x-www-form-urlencoded body (or a query string) of len bytes into *out.
 * Every name must be in allowed (NULL-terminated); at most max_params pairs; values are
 * decoded ('+' is a space, %XX), NUL bytes, bad escapes and decoded names / values that are not
 * strict UTF-8 (rmsync_utf8.h) refused; a repeated name keeps all
 * values (apr_table_add). Returns APR_SUCCESS, or APR_EINVAL with *err set (static text or
 * pool string naming the problem). */
apr_status_t rmsync_form_parse(apr_pool_t *p, const char *body, apr_size_t len,
                               const char *const *allowed, int max_params,
                               apr_table_t **out, const char **err);

/* Strict integer parsing for parameters: whole string, base 10, within [min,max].
 * Returns 1 and *out on success, else 0. */
int rmsync_parse_int64(const char *s, long long min, long long max, long long *out);

#endif /* RMSYNC_FORM_H */
