/* mod_rmsync: escaping of values put into HTML pages and URLs (core/rmsync_escape.c, used by the
 * admin pages and the API in Apache worker processes). No httpd headers; unit-tested in
 * tests/unit/test_html.c. */
#ifndef RMSYNC_ESCAPE_H
#define RMSYNC_ESCAPE_H

#include <apr_pools.h>

/* HTML-escape & < > " ' (unlike ap_escape_html, which misses '). NULL gives "". Safe in text
 * and in attributes with either quote. */
const char *rmsync_html_escape(apr_pool_t *p, const char *s);

/* Percent-encode a query/form value (space as %20, everything but unreserved chars). NULL -> "". */
const char *rmsync_url_escape(apr_pool_t *p, const char *s);

/* One CSV cell (RFC 4180 quoting when needed). A value starting with = + - @ TAB or CR gets a
 * leading ' so spreadsheets do not run it as a formula. NULL -> "". */
const char *rmsync_csv_cell(apr_pool_t *p, const char *s);

/* Backslash before \ % _ : the value matches literally inside an ILIKE pattern. NULL -> "". */
const char *rmsync_like_escape(apr_pool_t *p, const char *s);

#endif /* RMSYNC_ESCAPE_H */
