/* Fuzz target: a Graph delta page (users/{mb}/calendarView/delta), parsed as rmsync_graph.c's
 * on_delta_page does it (that function is static and needs an HTTP reply): the body as JSON,
 * its `value` array, @odata.nextLink / @odata.deltaLink, then rmsync_event_parse on every row,
 * which covers "@removed" entries and sparse rows (only some members present). */
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
    cJSON *json = NULL, *value = NULL, *it;
    const char *next = NULL, *dl = NULL;

    if (rmsync_json_parse(&json, fuzz_pool, (const char *)data, size, 0, NULL) != APR_SUCCESS
        || rmsync_json_get_array(json, "value", &value) != APR_SUCCESS) {
        goto done;
    }
    (void)rmsync_json_opt_string(json, "@odata.nextLink", &next);
    (void)rmsync_json_opt_string(json, "@odata.deltaLink", &dl);
    cJSON_ArrayForEach(it, value) {
        rmsync_event_t *ev = NULL;
        const char *err = NULL, *id = NULL;
        if (rmsync_event_parse(&ev, fuzz_pool, it, &err) != APR_SUCCESS) {
            FUZZ_ASSERT(ev == NULL && err);
            rmsync_json_get_string(it, "id", &id);
            err = apr_psprintf(fuzz_pool, "id %s: %s", id ? id : "(none)", err);
            continue;
        }
        FUZZ_ASSERT(ev->id);
        if (ev->removed) {
            FUZZ_ASSERT(ev->hash == NULL);
        }
        else {
            FUZZ_ASSERT(rmsync_event_hash(fuzz_pool, ev) != NULL);
        }
    }
done:
    apr_pool_clear(fuzz_pool);
    return 0;
}
