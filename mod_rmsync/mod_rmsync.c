/* mod_rmsync: module record and hook registration only (placeholder until the foundation lands). */
#include "httpd.h"
#include "http_config.h"
#include "rmsync.h"

static void rmsync_register_hooks(apr_pool_t *p)
{
    (void)p;
}

AP_DECLARE_MODULE(rmsync) = {
    STANDARD20_MODULE_STUFF,
    NULL, NULL, NULL, NULL, NULL,
    rmsync_register_hooks,
#if defined(AP_MODULE_FLAG_NONE)
    AP_MODULE_FLAG_ALWAYS_MERGE
#endif
};
