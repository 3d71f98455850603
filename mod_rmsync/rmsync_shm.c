/* mod_rmsync: runs in the httpd parent (pre_config, post_config: creates the segment and
 * the mutex) and in every child (child_init re-opens the mutex). The shared memory segment +
 * global mutex lifecycle (mod_example_ipc pattern).
 *
 * pre_config registers the mutex type (so `Mutex <mech> rmsync-shm` works); the real
 * post_config pass creates an anonymous segment and the mutex on pconf (a fresh pair per
 * generation) and registers a pre-cleanup that tears them down before APR's own cleanups;
 * child_init re-opens the mutex in each child. The parent initialises the segment and reads
 * nothing from it afterwards but the runner's heartbeat word (monitor hook, atomically).
 */
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "util_mutex.h"

#include <apr_shm.h>
#include <apr_strings.h>
#include <apr_general.h>

#include "rmsync.h"
#include "rmsync_settings.h"
#include "mod_rmsync_shm.h"

APLOG_USE_MODULE(rmsync);

static apr_shm_t *shm_seg;
static rmsync_shm_t *shm_base;
static apr_global_mutex_t *shm_mutex;
static pid_t shm_owner;

apr_status_t rmsync_shm_pre_config(apr_pool_t *pconf)
{
    shm_seg = NULL;
    shm_base = NULL;
    shm_mutex = NULL;
    return ap_mutex_register(pconf, RMSYNC_SHM_MUTEX_TYPE, NULL, APR_LOCK_DEFAULT, 0);
}

/* Pre-cleanup: runs before APR's cleanups of the segment and the mutex on the same pool. */
static apr_status_t shm_teardown(void *data)
{
    (void)data;
    if (getpid() == shm_owner) {
        /* only the parent that created them destroys them; exiting children just forget */
        if (shm_mutex) {
            apr_global_mutex_destroy(shm_mutex);
        }
        if (shm_seg) {
            apr_shm_destroy(shm_seg);
        }
    }
    shm_mutex = NULL;
    shm_seg = NULL;
    shm_base = NULL;
    return APR_SUCCESS;
}

apr_status_t rmsync_shm_post_config(apr_pool_t *pconf, server_rec *s,
                                    const rmsync_settings_t *settings, apr_uint32_t generation)
{
    apr_status_t rv;
    apr_size_t size = rmsync_shm_size(settings->max_representatives);
    unsigned char csrf[RMSYNC_SHM_CSRF_LEN];

    if (!size) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RMSYNC_LOGNO(00010)
                     "bad shm size for RMSyncMaxRepresentatives %d",
                     settings->max_representatives);
        return APR_EINVAL;
    }
    rv = apr_shm_create(&shm_seg, size, NULL, pconf);
    if (rv == APR_ENOTIMPL) {
        /* no anonymous shm on this platform: a per-generation file in the runtime dir */
        const char *fname = ap_runtime_dir_relative(pconf,
            apr_psprintf(pconf, "rmsync-shm.%ld.%u", (long)getpid(), (unsigned)generation));
        apr_shm_remove(fname, pconf);
        rv = apr_shm_create(&shm_seg, size, fname, pconf);
    }
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RMSYNC_LOGNO(00011)
                     "cannot create the shared memory segment (%" APR_SIZE_T_FMT " bytes)", size);
        shm_seg = NULL;
        return rv;
    }
    rv = ap_global_mutex_create(&shm_mutex, NULL, RMSYNC_SHM_MUTEX_TYPE, NULL, s, pconf, 0);
    if (rv != APR_SUCCESS) {
        /* ap_global_mutex_create logged the details */
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RMSYNC_LOGNO(00012)
                     "cannot create the %s mutex", RMSYNC_SHM_MUTEX_TYPE);
        apr_shm_destroy(shm_seg);
        shm_seg = NULL;
        shm_mutex = NULL;
        return rv;
    }
    rv = apr_generate_random_bytes(csrf, sizeof(csrf));
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RMSYNC_LOGNO(00013)
                     "cannot generate the CSRF secret");
        return rv;
    }
    shm_base = apr_shm_baseaddr_get(shm_seg);
    rv = rmsync_shm_init(shm_base, apr_shm_size_get(shm_seg), settings->max_representatives,
                         generation, csrf, apr_time_now());
    memset(csrf, 0, sizeof(csrf));
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RMSYNC_LOGNO(00014)
                     "cannot initialise the shared memory segment");
        return rv;
    }
    shm_owner = getpid();
    apr_pool_pre_cleanup_register(pconf, NULL, shm_teardown);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s,
                 "shm: %" APR_SIZE_T_FMT " bytes, %d representative slots, generation %u",
                 size, settings->max_representatives, (unsigned)generation);
    return APR_SUCCESS;
}

apr_status_t rmsync_shm_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;

    if (!shm_mutex) {
        return APR_SUCCESS;
    }
    rv = apr_global_mutex_child_init(&shm_mutex, apr_global_mutex_lockfile(shm_mutex), pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RMSYNC_LOGNO(00015)
                     "cannot re-open the %s mutex in the child", RMSYNC_SHM_MUTEX_TYPE);
    }
    return rv;
}

rmsync_shm_t *rmsync_shm_get(void)
{
    return shm_base;
}

apr_global_mutex_t *rmsync_shm_mutex(void)
{
    return shm_mutex;
}
