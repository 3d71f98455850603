/* Fuzz target: the validation-token decoding. The webhook glue decodes `validationToken` with
 * httpd's ap_unescape_urlencoded (rmsync_webhook.c): there is no core decoder for it, so this
 * fuzzes the core form/URL decoder that the admin uses for the same encoding
 * (rmsync_form_parse: '+' is a space, %XX a byte) on a query that carries a validationToken,
 * and checks the round trip: rmsync_url_escape(decoded) decodes back to the same bytes. */
#include <stdio.h>
#include <apr_tables.h>
#include "fuzz_common.h"
#include "rmsync_form.h"
#include "rmsync_escape.h"

static const char *const allowed[] = { "validationToken", NULL };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_table_t *t = NULL, *t2 = NULL;
    const char *err = NULL, *tok, *q;

    q = apr_pstrcat(fuzz_pool, "validationToken=", fuzz_str(data, size), NULL);
    if (rmsync_form_parse(fuzz_pool, q, strlen(q), allowed, 4, &t, &err) == APR_SUCCESS
        && (tok = apr_table_get(t, "validationToken")) != NULL) {
        const char *enc = rmsync_url_escape(fuzz_pool, tok);
        const char *q2 = apr_pstrcat(fuzz_pool, "validationToken=", enc, NULL);
        FUZZ_ASSERT(enc != NULL);
        FUZZ_ASSERT(strchr(enc, '&') == NULL);
        FUZZ_ASSERT(rmsync_form_parse(fuzz_pool, q2, strlen(q2), allowed, 4, &t2, &err)
                    == APR_SUCCESS);
        FUZZ_ASSERT(!strcmp(apr_table_get(t2, "validationToken"), tok));
    }
    apr_pool_clear(fuzz_pool);
    return 0;
}
