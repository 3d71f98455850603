/* mod_rmsync, run by Apache worker processes (admin pages, webhook intake): a general string
 * builder that joins its pieces once (rmsync_sb.h). */
#include <stdarg.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include "rmsync_sb.h"

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
