/* Fuzz target: the webhook notification body parser (rmsync_notif_parse, core/rmsync_intake.c)
 * in both modes (notification URL and lifecycle URL), on the pooled-JSON path the workers use. */
#include <stdio.h>
#include "fuzz_common.h"
#include "rmsync_json.h"
#include "rmsync_intake.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    rmsync_json_use_arenas();   /* as the Apache workers do (child_init) */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int lifecycle;

    for (lifecycle = 0; lifecycle <= 1; lifecycle++) {
        rmsync_notif_batch_t *b = NULL;
        const char *why = NULL;
        apr_status_t rv = rmsync_notif_parse(&b, fuzz_pool, (const char *)data, size, lifecycle, &why);
        if (rv == APR_SUCCESS) {
            int i;
            FUZZ_ASSERT(b && b->items && b->invalid >= 0);
            FUZZ_ASSERT(b->items->nelts <= RMSYNC_QUEUE_MAX_ITEMS);
            for (i = 0; i < b->items->nelts; i++) {
                const rmsync_notif_item_t *it = &((const rmsync_notif_item_t *)b->items->elts)[i];
                FUZZ_ASSERT(it->subscription_id);
                FUZZ_ASSERT(strlen(it->subscription_id) <= RMSYNC_QUEUE_MAX_ID_LEN);
                if (it->kind == RMSYNC_NOTIF_CHANGE) {
                    FUZZ_ASSERT(it->change_type && it->event_id);
                }
                else {
                    FUZZ_ASSERT(it->lifecycle_event);
                }
            }
        }
        else {
            FUZZ_ASSERT(why != NULL);
        }
    }
    apr_pool_clear(fuzz_pool);
    return 0;
}
