/* Fuzz target: rmsync_json_quote (core/rmsync_json.c). Round trip: the quoted literal parses
 * with cJSON as one string equal to the input (the input up to its first NUL). */
#include <stdio.h>
#include "fuzz_common.h"
#include "rmsync_json.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = fuzz_str(data, size);
    const char *q = rmsync_json_quote(fuzz_pool, s);
    cJSON *json = NULL;
    apr_size_t pos = 0;

    FUZZ_ASSERT(q && q[0] == '"');
    FUZZ_ASSERT(rmsync_json_parse(&json, fuzz_pool, q, strlen(q), 0, &pos) == APR_SUCCESS);
    FUZZ_ASSERT(cJSON_IsString(json));
    FUZZ_ASSERT(!strcmp(cJSON_GetStringValue(json), s));
    /* inside an object too, as the status JSON uses it */
    {
        const char *o = apr_pstrcat(fuzz_pool, "{\"k\":", q, "}", NULL);
        const char *v = NULL;
        FUZZ_ASSERT(rmsync_json_parse(&json, fuzz_pool, o, strlen(o), 0, &pos) == APR_SUCCESS);
        FUZZ_ASSERT(rmsync_json_get_string(json, "k", &v) == APR_SUCCESS && !strcmp(v, s));
    }
    FUZZ_ASSERT(!strcmp(rmsync_json_quote(fuzz_pool, NULL), "null"));
    apr_pool_clear(fuzz_pool);
    return 0;
}
