/* mod_rmsync: the admin pages' HTML frame and stylesheet (core/rmsync_html.c; Apache worker
 * processes). No httpd headers; unit-tested in tests/unit/test_html.c. Escaping, CSRF, forms,
 * time formatting and the string builder have their own headers (rmsync_escape.h, rmsync_csrf.h,
 * rmsync_form.h, rmsync_timefmt.h, rmsync_sb.h). */
#ifndef RMSYNC_HTML_H
#define RMSYNC_HTML_H

#include <apr_pools.h>

/* Page frame: doctype, head (title, stylesheet at base/style.css), navigation with the
 * current page marked, <main>. base is the escaped-or-safe mount prefix such as "/rmsync"
 * (it is escaped here). title is escaped here. page_end closes main/body/html. */
const char *rmsync_html_page_begin(apr_pool_t *p, const char *base, const char *title,
                                   const char *current);
/* Same, with <meta http-equiv="refresh"> every refresh_s seconds when refresh_s > 0 (the
 * status page's ?refresh=N, like mod_status). */
const char *rmsync_html_page_begin_refresh(apr_pool_t *p, const char *base, const char *title,
                                           const char *current, int refresh_s);
const char *rmsync_html_page_end(apr_pool_t *p);

/* The embedded stylesheet served at <base>/style.css. */
extern const char rmsync_html_css[];

#endif /* RMSYNC_HTML_H */
