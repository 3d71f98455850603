/* Fuzz target: the Graph event parser (rmsync_event_parse, core/rmsync_event.c) on any JSON
 * value, and the content hash of every event it accepts; also the dateTime parser it uses. */
#include <stdio.h>
#include "fuzz_common.h"
#include "rmsync_json.h"
#include "rmsync_event.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *json = NULL;
    rmsync_event_t *ev = NULL;
    const char *err = NULL;
    apr_time_t t;

    if (rmsync_json_parse(&json, fuzz_pool, (const char *)data, size, 0, NULL) == APR_SUCCESS) {
        if (rmsync_event_parse(&ev, fuzz_pool, json, &err) == APR_SUCCESS) {
            FUZZ_ASSERT(ev && ev->id && ev->attendees && ev->categories);
            if (!ev->removed) {
                const char *h = rmsync_event_hash(fuzz_pool, ev);
                FUZZ_ASSERT(h && strlen(h) > 0);
                FUZZ_ASSERT(!strcmp(h, rmsync_event_hash(fuzz_pool, ev)));   /* stable */
            }
        }
        else {
            FUZZ_ASSERT(ev == NULL && err != NULL);
        }
    }
    /* the raw input as a dateTime (with and without a zone) */
    {
        const char *s = fuzz_str(data, size);
        if (rmsync_event_parse_time(s, NULL, &t) == APR_SUCCESS) {
            FUZZ_ASSERT(rmsync_event_format_time(fuzz_pool, t) != NULL);
        }
        (void)rmsync_event_parse_time(s, "UTC", &t);
    }
    apr_pool_clear(fuzz_pool);
    return 0;
}
