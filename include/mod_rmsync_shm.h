/* mod_rmsync: the shared memory segment's lifecycle in httpd (mod_rmsync/rmsync_shm.c): the
 * httpd parent creates the segment and its global mutex in the real post_config pass, every
 * child (worker or runner) re-opens the mutex. The layout is in rmsync_shm.h (core).
 */
#ifndef MOD_RMSYNC_SHM_H
#define MOD_RMSYNC_SHM_H

#include "httpd.h"
#include "rmsync_settings.h"
#include "rmsync_shm.h"

/* pre_config: register the mutex type (so `Mutex <mech> rmsync-shm` works). */
apr_status_t rmsync_shm_pre_config(apr_pool_t *pconf);
/* Real post_config pass only: create segment + mutex on pconf with pre-cleanup teardown. */
apr_status_t rmsync_shm_post_config(apr_pool_t *pconf, server_rec *s,
                                    const rmsync_settings_t *settings,
                                    apr_uint32_t generation);
/* In each child (worker or runner) after fork: re-open the mutex. */
apr_status_t rmsync_shm_child_init(apr_pool_t *pchild, server_rec *s);
/* Current generation's segment and mutex (NULL before post_config / when not created). */
rmsync_shm_t       *rmsync_shm_get(void);
apr_global_mutex_t *rmsync_shm_mutex(void);

#endif /* MOD_RMSYNC_SHM_H */
