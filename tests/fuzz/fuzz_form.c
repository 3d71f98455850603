/* Fuzz target: the admin form / query parser (rmsync_form_parse, core/rmsync_form.c) with the
 * admin's whitelists and caps (the log page's query, 20 pairs: rmsync_admin.c args_log; the
 * POST form, 10 pairs: rmsync_admin_actions.c post_args), and the strict integer parser applied
 * to every value it returns (as the admin pages do with rep ids, n, before/after). */
#include <stdio.h>
#include <apr_tables.h>
#include "fuzz_common.h"
#include "rmsync_form.h"

static const char *const args_log[] = { "format", "done", "rep", "level", "activity", "event",
                                        "action", "from", "to", "before", "after", "n", NULL };
static const char *const post_args[] = { "token", "action", "rep", "active", "log", "back",
                                         "format", NULL };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

static void one(const uint8_t *data, size_t size, const char *const *allowed, int max)
{
    apr_table_t *t = NULL;
    const char *err = NULL;
    apr_status_t rv;

    rv = rmsync_form_parse(fuzz_pool, (const char *)data, size, allowed, max, &t, &err);
    FUZZ_ASSERT(t != NULL);
    if (rv == APR_SUCCESS) {
        const apr_array_header_t *a = apr_table_elts(t);
        int i;
        FUZZ_ASSERT(err == NULL && a->nelts <= max);
        for (i = 0; i < a->nelts; i++) {
            const apr_table_entry_t *e = &((const apr_table_entry_t *)a->elts)[i];
            long long n;
            FUZZ_ASSERT(e->key && e->val);
            if (rmsync_parse_int64(e->val, -1000000, 1000000, &n)) {
                FUZZ_ASSERT(n >= -1000000 && n <= 1000000);
            }
        }
    }
    else {
        FUZZ_ASSERT(err != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_table_t *t = NULL;
    const char *err = NULL;

    one(data, size, args_log, 20);
    one(data, size, post_args, 10);
    /* no whitelist: every name refused (unless the input has no pairs) */
    (void)rmsync_form_parse(fuzz_pool, (const char *)data, size, NULL, 1000, &t, &err);
    apr_pool_clear(fuzz_pool);
    return 0;
}
