/* mod_rmsync: a string builder (core/rmsync_sb.c), a general utility used by the admin pages and
 * the webhook intake. No httpd headers. */
#ifndef RMSYNC_SB_H
#define RMSYNC_SB_H

#include <apr_pools.h>

/* A string builder: pieces are collected and joined once, so pages with thousands of rows
 * cost linear time and memory (repeated apr_pstrcat on a growing string is quadratic). */
typedef struct rmsync_sb_t rmsync_sb_t;
rmsync_sb_t *rmsync_sb_make(apr_pool_t *p);
/* Append s (NULL is ignored; s must live as long as the pool). */
void rmsync_sb_add(rmsync_sb_t *sb, const char *s);
/* Append several strings, NULL-terminated. */
void rmsync_sb_addv(rmsync_sb_t *sb, ...) __attribute__((sentinel));
/* The whole text (the builder stays usable). */
const char *rmsync_sb_join(rmsync_sb_t *sb);

#endif /* RMSYNC_SB_H */
