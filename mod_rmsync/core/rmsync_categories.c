/* mod_rmsync: the configured master category in each mailbox (see rmsync_categories.h). */
#include <string.h>
#include <strings.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync_categories.h"

const rmsync_graph_category_t *rmsync_categories_find(const apr_array_header_t *cats,
                                                      const char *name)
{
    int i;

    if (!cats || !name) {
        return NULL;
    }
    for (i = 0; i < cats->nelts; i++) {
        const rmsync_graph_category_t *c = &APR_ARRAY_IDX(cats, i, rmsync_graph_category_t);
        if (c->name && !strcasecmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}

int rmsync_categories_contains(const apr_array_header_t *categories, const char *name)
{
    int i;

    if (!categories || !name || !*name) {
        return 0;
    }
    for (i = 0; i < categories->nelts; i++) {
        const char *c = APR_ARRAY_IDX(categories, i, const char *);
        if (c && !strcasecmp(c, name)) {
            return 1;
        }
    }
    return 0;
}
