/* mod_rmsync: the sync engine entry point, run inside the sync runner process.
 *
 * Contract between the runner glue (rmsync_monitor.c) and the engine (core/rmsync_engine.c):
 * the glue forks the runner from the httpd parent, resets signals, closes the listeners,
 * drops privileges (User), re-opens the shm mutex, publishes pid/start in shm
 * (rmsync_shm_runner_begin) and then calls rmsync_engine_main() once. When it returns, the
 * runner process exits. No httpd headers here or in the engine.
 */
#ifndef RMSYNC_ENGINE_H
#define RMSYNC_ENGINE_H

#include <signal.h>
#include <apr_pools.h>
#include <apr_global_mutex.h>
#include "rmsync_settings.h"
#include "rmsync_shm.h"

typedef struct rmsync_engine_env_t {
    const rmsync_settings_t *settings;
    int tick_fd;                  /* read end of the parent's pipe (blocking): one byte per sync
                                   * cycle (RMSyncSyncCycle, ~10 s resolution); EOF = parent gone */
    rmsync_shm_t *shm;            /* this generation's segment (may be NULL: then run without) */
    apr_global_mutex_t *mutex;    /* guards shm (child-initialised), NULL with shm NULL */
    apr_uint32_t generation;      /* httpd config generation the runner belongs to */
    volatile sig_atomic_t *stop;  /* set to 1 by SIGTERM/SIGINT/SIGHUP: finish the step, return */
} rmsync_engine_env_t;

/* Run until *env->stop is set or tick_fd reaches EOF. Must update the heartbeat in shm at least
 * once a second (rmsync_shm_runner_heartbeat) and count the cycle bytes taken from tick_fd
 * (rmsync_shm_runner_cycles). pool lives as long as the runner; use sub-pools per step. */
apr_status_t rmsync_engine_main(rmsync_engine_env_t *env, apr_pool_t *pool);

#endif /* RMSYNC_ENGINE_H */
