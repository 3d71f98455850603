/* mod_rmsync: the connection budget (RMSyncDatabasePool) in httpd (mod_rmsync/rmsync_budget.c):
 * the parent's startup check (numbers only, no connection), and in every worker process the
 * gate on its connections (rmsync_dbbudget.h) and the pool the module's per-process state lives
 * in (its own allocator with a mutex: safe for the module's background thread under any MPM).
 */
#ifndef MOD_RMSYNC_BUDGET_H
#define MOD_RMSYNC_BUDGET_H

#include "httpd.h"
#include "rmsync_settings.h"
#include "rmsync_db.h"

/* Real post_config pass, in the parent: warn when the budget cannot give every worker process
 * a connection, or leaves the worker processes (almost) nothing beside the runner. */
void rmsync_budget_post_config(apr_pool_t *ptemp, server_rec *s, const rmsync_settings_t *st);
/* Register the child_init hook (runs before the admin and webhook ones). */
void rmsync_budget_register_hooks(apr_pool_t *p);
/* In a worker process after child_init: the module's pool (NULL when the module is off). */
apr_pool_t *rmsync_budget_pool(void);
/* In child_init: set a DB pool's limits (slot wait, RMSyncDatabasePool's idle limit) and
 * list it for rmsync_budget_reap(), which closes the listed pools' idle connections. */
void rmsync_budget_add_pool(rmsync_db_pool_t *dbp, apr_interval_time_t slot_wait,
                            const rmsync_settings_t *st);
int rmsync_budget_reap(void);
/* Connection slots of all worker processes together (the budget less the runner's). */
int rmsync_budget_worker_slots(const rmsync_settings_t *st);
/* 1 under a non-threaded MPM (prefork). */
int rmsync_budget_mpm_unthreaded(void);

#endif /* MOD_RMSYNC_BUDGET_H */
