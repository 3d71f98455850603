/* mod_rmsync: the sync runner process, forked by the httpd parent and supervised by the
 * monitor hook (mod_rmsync/rmsync_monitor.c). See DESIGN.md section 2. Everything here runs
 * in the httpd parent except rmsync_monitor_child_init (worker children). */
#ifndef MOD_RMSYNC_MONITOR_H
#define MOD_RMSYNC_MONITOR_H

#include "httpd.h"
#include "rmsync_settings.h"

/* Real post_config pass: fork the runner (when RMSyncDatabase is set) and register the pconf
 * pre-cleanup that stops it on graceful/restart/stop. */
apr_status_t rmsync_monitor_post_config(apr_pool_t *pconf, server_rec *s,
                                        const rmsync_settings_t *settings,
                                        apr_uint32_t generation);
/* Worker child: drop the parent's end of the runner pipe. */
void rmsync_monitor_child_init(apr_pool_t *pchild, server_rec *s);
/* ap_hook_monitor: respawn a dead runner (with backoff), stop a stalled one (no heartbeat for
 * RMSyncRunnerStallTimeout), send the cycle tick. Allocates nothing from p (pconf), reads from
 * shm only the runner's heartbeat word (one atomic load, no mutex: a hung runner may hold it;
 * only compared with the clock), never touches network or DB, never blocks. */
int rmsync_monitor_hook(apr_pool_t *p, server_rec *s);

#endif /* MOD_RMSYNC_MONITOR_H */
