/* mod_rmsync: the configured master category in each mailbox (see rmsync_categories.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync_categories.h"

int rmsync_categories_color_valid(const char *color)
{
    char *end;
    long n;

    if (!color || !*color) {
        return 0;
    }
    if (!strcasecmp(color, "none")) {
        return 1;
    }
    if (strncasecmp(color, "preset", 6) || !apr_isdigit(color[6])) {
        return 0;
    }
    n = strtol(color + 6, &end, 10);
    return *end == '\0' && n >= 0 && n <= 24 && strlen(color + 6) <= 2;
}

const cJSON *rmsync_categories_find(const cJSON *listing, const char *name)
{
    const cJSON *arr = listing, *item;

    if (!name) {
        return NULL;
    }
    if (cJSON_IsObject(listing)) {
        arr = cJSON_GetObjectItemCaseSensitive(listing, "value");
    }
    if (!cJSON_IsArray(arr)) {
        return NULL;
    }
    cJSON_ArrayForEach(item, arr) {
        const cJSON *dn = cJSON_GetObjectItemCaseSensitive(item, "displayName");
        if (cJSON_IsString(dn) && dn->valuestring && !strcasecmp(dn->valuestring, name)) {
            return item;
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
