/* mod_rmsync: runs in the httpd parent (post_config: the budget's startup check) and in every
 * worker process (child_init: the connection gate, the module's own pool). The connection
 * budget RMSyncDatabasePool in httpd (mod_rmsync_budget.h; the slot table is
 * core/rmsync_dbbudget.c).
 *
 * The parent only computes with configuration numbers: it never connects and never reads the
 * slot table the children write (it zeroes it with the rest of the segment, rmsync_shm.c).
 */

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_mpm.h"
#include "apr_allocator.h"
#include "apr_thread_mutex.h"

#include "rmsync.h"
#include "rmsync_dbbudget.h"
#include "mod_rmsync_config.h"
#include "mod_rmsync_shm.h"
#include "mod_rmsync_budget.h"

APLOG_USE_MODULE(rmsync);

static apr_pool_t *module_pool;
/* The process's DB pools (webhook, admin): the webhook's background thread reaps them all. */
#define BUDGET_MAX_POOLS 4
static rmsync_db_pool_t *pools[BUDGET_MAX_POOLS];
static int npools;

void rmsync_budget_add_pool(rmsync_db_pool_t *dbp, apr_interval_time_t slot_wait,
                            const rmsync_settings_t *st)
{
    rmsync_db_pool_set_limits(dbp, slot_wait, apr_time_from_sec(st->db_pool_idle_s));
    if (npools < BUDGET_MAX_POOLS) {
        pools[npools++] = dbp;              /* child_init only: before any thread starts */
    }
}

int rmsync_budget_reap(void)
{
    int i, n = 0;

    for (i = 0; i < npools; i++) {
        n += rmsync_db_pool_reap(pools[i]);
    }
    return n;
}

int rmsync_budget_worker_slots(const rmsync_settings_t *st)
{
    return rmsync_dbbudget_worker_share(st->db_pool_max,
                                        rmsync_dbbudget_runner_conns(st->graph_parallel_mailboxes));
}

int rmsync_budget_mpm_unthreaded(void)
{
    int threaded = 0;

    return ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) == APR_SUCCESS
           && threaded == AP_MPMQ_NOT_SUPPORTED;
}

void rmsync_budget_post_config(apr_pool_t *ptemp, server_rec *s, const rmsync_settings_t *st)
{
    int runner = rmsync_dbbudget_runner_conns(st->graph_parallel_mailboxes);
    int daemons = 0;

    (void)ptemp;
    if (!st->enabled) {
        return;
    }
    if (st->db_pool_max - runner < 2) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RMSYNC_LOGNO(00050)
                     "RMSyncDatabasePool %d: the sync runner keeps %d connection(s) (1 + %d "
                     "parallel mailboxes, RMSyncGraphConcurrency), which leaves the worker "
                     "processes (webhook, admin pages) only %d: raise it", st->db_pool_max,
                     runner, runner - 1, rmsync_budget_worker_slots(st));
    }
    if (ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons) == APR_SUCCESS && daemons > 0
        && rmsync_budget_worker_slots(st) < daemons) {
        /* Under prefork (one request per process, MaxRequestWorkers processes) sharing fewer
         * connections than processes is what the budget is for: said, not warned. */
        ap_log_error(APLOG_MARK, rmsync_budget_mpm_unthreaded() ? APLOG_NOTICE : APLOG_WARNING,
                     0, s, RMSYNC_LOGNO(00051)
                     "RMSyncDatabasePool %d: %d connection(s) for the runner, %d for up to %d "
                     "worker processes: not every process can hold a connection at once "
                     "(requests that find none free within their wait answer 503)",
                     st->db_pool_max, runner, rmsync_budget_worker_slots(st), daemons);
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "RMSyncDatabasePool: at most %d PostgreSQL "
                 "connection(s) in all (%d runner, %d worker processes), idle ones closed after "
                 "%d s", st->db_pool_max, runner, rmsync_budget_worker_slots(st),
                 st->db_pool_idle_s);
}

/* The module's per-process pool has its own allocator guarded by a mutex (the h2_mplx pattern):
 * under prefork the child pool's allocator has none, and the module's background thread
 * allocates (sub-pools, DB handles) while the request thread uses the child's allocator. */
static void budget_child_init(apr_pool_t *pchild, server_rec *s)
{
    const rmsync_settings_t *st = rmsync_config_get(s);
    apr_allocator_t *alloc = NULL;
    apr_thread_mutex_t *mutex = NULL;
    apr_status_t rv;

    module_pool = NULL;
    npools = 0;
    if (!st || !st->enabled || !st->db_conninfo) {
        return;
    }
    rmsync_dbbudget_init(rmsync_shm_get(), rmsync_budget_worker_slots(st));
    rmsync_db_set_gate(rmsync_dbbudget_gate());
    if ((rv = apr_allocator_create(&alloc)) != APR_SUCCESS
        || (rv = apr_pool_create_ex(&module_pool, pchild, NULL, alloc)) != APR_SUCCESS) {
        if (alloc) {
            apr_allocator_destroy(alloc);
        }
        module_pool = NULL;
    }
    else {
        apr_allocator_owner_set(alloc, module_pool);
        apr_pool_tag(module_pool, "rmsync_child");
        if ((rv = apr_thread_mutex_create(&mutex, APR_THREAD_MUTEX_DEFAULT, module_pool))
            == APR_SUCCESS) {
            apr_allocator_mutex_set(alloc, mutex);
        }
        else {
            apr_pool_destroy(module_pool);
            module_pool = NULL;
        }
    }
    if (!module_pool) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, RMSYNC_LOGNO(00052)
                     "cannot create the module's pool in this process; webhook and admin pages "
                     "answer 503");
    }
}

apr_pool_t *rmsync_budget_pool(void)
{
    return module_pool;
}

void rmsync_budget_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_child_init(budget_child_init, NULL, NULL, APR_HOOK_FIRST);
}
