/* mod_rmsync: runs in the httpd parent (pre_config, post_config) and in every child
 * (child_init). The module record and hook registration only; the glue lives in rmsync_*.c
 * (config, shm, monitor, admin*, api, webhook, request), the sync core in core/. */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "mpm_common.h"
#include "ap_mpm.h"

#include "rmsync.h"
#include "rmsync_log.h"
#include "mod_rmsync_config.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_monitor.h"
#include "mod_rmsync_admin.h"
#include "mod_rmsync_webhook.h"
#include "mod_rmsync_budget.h"

static void rmsync_register_hooks(apr_pool_t *p);

AP_DECLARE_MODULE(rmsync) = {
    STANDARD20_MODULE_STUFF,
    NULL,                       /* per-directory config: none, all directives are global */
    NULL,
    rmsync_config_create_srv,
    rmsync_config_merge_srv,
    rmsync_cmds,
    rmsync_register_hooks,
#if defined(AP_MODULE_FLAG_NONE)
    AP_MODULE_FLAG_ALWAYS_MERGE
#endif
};

static server_rec *log_server;

/* Core log sink: everything the core logs goes to the main server's error log (also in the
 * runner process, which inherits the parent's error log). */
static void log_sink(void *baton, const char *file, int line, int level, apr_status_t rv,
                     const char *msg)
{
    (void)baton;
    /* Our own status codes (APR's user error range) mean nothing to apr_strerror ("APR does not
     * understand this error code"): the message says it all. */
    if (rv >= APR_OS_START_USERERR && rv < APR_OS_START_USERERR + APR_OS_ERRSPACE_SIZE) {
        rv = 0;
    }
    ap_log_error_(file, line, APLOG_MODULE_INDEX, level, rv, log_server, "%s", msg);
}

static int rmsync_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    apr_status_t rv = rmsync_shm_pre_config(pconf);
    if (rv != APR_SUCCESS) {
        ap_log_perror(APLOG_MARK, APLOG_CRIT, rv, ptemp,
                      RMSYNC_LOGNO(00001) "cannot register the %s mutex type", RMSYNC_SHM_MUTEX_TYPE);
        return !OK;
    }
    return OK;
}

static int rmsync_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                              server_rec *s)
{
    const rmsync_settings_t *settings = rmsync_config_get(s);
    apr_uint32_t generation;
    apr_status_t rv;

    log_server = s;
    rmsync_log_set_sink(log_sink, NULL, ap_get_server_module_loglevel(s, APLOG_MODULE_INDEX));

    /* The preflight pass runs in a process that goes away: no shm, no runner there. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    generation = (apr_uint32_t)ap_state_query(AP_SQ_CONFIG_GEN);
    rmsync_config_log_warnings(ptemp, s);
    rmsync_budget_post_config(ptemp, s, settings);

    rv = rmsync_shm_post_config(pconf, s, settings, generation);
    if (rv != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;   /* logged with its id in rmsync_shm.c */
    }
    rv = rmsync_monitor_post_config(pconf, s, settings, generation);
    if (rv != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_rmsync %s initialised (generation %u)",
                 RMSYNC_VERSION, (unsigned)generation);
    return OK;
}

static void rmsync_child_init(apr_pool_t *pchild, server_rec *s)
{
    rmsync_monitor_child_init(pchild, s);
    if (rmsync_shm_child_init(pchild, s) != APR_SUCCESS) {
        /* logged; a child without the mutex must not serve (it would loop forever otherwise) */
        exit(APEXIT_CHILDFATAL);
    }
}

static void rmsync_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(rmsync_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(rmsync_config_check, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(rmsync_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(rmsync_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_monitor(rmsync_monitor_hook, NULL, NULL, APR_HOOK_MIDDLE);
    rmsync_budget_register_hooks(p);  /* connection gate + module pool (child_init, first) */
    rmsync_admin_register_hooks(p);   /* admin handler + its DB pool (child_init) */
    rmsync_webhook_register_hooks(p);
}
