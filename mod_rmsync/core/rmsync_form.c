/* mod_rmsync, run by Apache worker processes (admin pages, API): the bounded form / query
 * parser with a parameter whitelist, and strict integer parsing of parameters (rmsync_form.h). */
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include <apr_escape.h>
#include "rmsync_escape.h"
#include "rmsync_form.h"
#include "rmsync_utf8.h"

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
        const char *name, *value, *why;
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
        /* decoded bytes: PostgreSQL and the pages take only UTF-8, and a NUL would cut them */
        if (!rmsync_utf8_valid_str(name, &why) || !rmsync_utf8_valid_str(value, &why)) {
            *err = apr_pstrcat(p, "invalid text in form data: ", why, NULL);
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
