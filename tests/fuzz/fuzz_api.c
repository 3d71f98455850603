/* Fuzz target: the linking API request body (POST .../api/link and .../api/create-activity).
 * The body is read in the httpd glue (rmsync_api.c api_post), which only calls core helpers:
 * rmsync_json_parse (capped at RMSYNC_API_MAX_BODY), rmsync_json_get_string for
 * representative_id and event_id, and for activity_no rmsync_json_get_int or a digit string
 * through rmsync_parse_int64. This target runs exactly that sequence on the core helpers (the
 * glue's own lines need a request_rec); keep it in step with api_post / get_activity_no. */
#include <stdio.h>
#include "fuzz_common.h"
#include "rmsync_json.h"
#include "rmsync_form.h"

#define API_MAX_BODY 8192   /* RMSYNC_API_MAX_BODY, include/mod_rmsync_api.h (an httpd header) */
#define MAX_NO 999999999999999LL

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

static int get_activity_no(const cJSON *o, long long *pno)
{
    long long n;
    const char *sv;

    if (rmsync_json_get_int(o, "activity_no", 1, MAX_NO, &n) == APR_SUCCESS) {
        *pno = n;
        return 1;
    }
    if (rmsync_json_get_string(o, "activity_no", &sv) == APR_SUCCESS
        && rmsync_parse_int64(sv, 1, MAX_NO, &n)) {
        *pno = n;
        return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *in = NULL;
    apr_size_t errpos = 0;
    const char *rep = NULL, *event_id = NULL;
    long long no = 0;
    apr_status_t rv;

    rv = rmsync_json_parse(&in, fuzz_pool, (const char *)data, size, API_MAX_BODY, &errpos);
    if (size > API_MAX_BODY) {
        FUZZ_ASSERT(rv != APR_SUCCESS);
    }
    if (rv == APR_SUCCESS && cJSON_IsObject(in)
        && rmsync_json_get_string(in, "representative_id", &rep) == APR_SUCCESS
        && rmsync_json_get_string(in, "event_id", &event_id) == APR_SUCCESS) {
        FUZZ_ASSERT(rep && event_id);
        if (get_activity_no(in, &no)) {
            FUZZ_ASSERT(no >= 1 && no <= MAX_NO);
        }
        /* the 202 answer echoes nothing of the body; the status JSON quotes strings */
        FUZZ_ASSERT(rmsync_json_quote(fuzz_pool, rep) != NULL);
    }
    else if (rv == RMSYNC_JSON_EPARSE) {
        FUZZ_ASSERT(errpos <= size);
    }
    apr_pool_clear(fuzz_pool);
    return 0;
}
