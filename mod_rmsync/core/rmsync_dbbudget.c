/* mod_rmsync, run by Apache worker processes (their database connections): the connection
 * budget's slot table in the shared segment (rmsync_dbbudget.h). Lock-free: one CAS per take
 * or give; a scan over at most RMSYNC_SHM_DB_SLOTS words. */
#include <errno.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <apr_atomic.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_dbbudget.h"

#define BUDGET_POLL  apr_time_from_msec(5)

static rmsync_shm_t *budget_shm;
static int budget_slots;
static volatile apr_uint32_t held;         /* slots of this process (all its threads) */

int rmsync_dbbudget_worker_share(int total, int runner)
{
    int n = total - runner;
    if (n < 1) {
        n = 1;
    }
    return n > RMSYNC_SHM_DB_SLOTS ? RMSYNC_SHM_DB_SLOTS : n;
}

int rmsync_dbbudget_runner_conns(int parallel_mailboxes)
{
    return 1 + (parallel_mailboxes > 0 ? parallel_mailboxes : 4);
}

void rmsync_dbbudget_init(rmsync_shm_t *shm, int slots)
{
    budget_shm = shm;
    budget_slots = slots < 1 ? 1 : slots > RMSYNC_SHM_DB_SLOTS ? RMSYNC_SHM_DB_SLOTS : slots;
    apr_atomic_set32(&held, 0);
}

/* One free slot set to our pid, or 0. Starts at a pid-dependent place: fewer collisions. */
static int try_take(apr_uint32_t me)
{
    volatile apr_uint32_t *t = budget_shm->db_slots;
    int i, start = (int)(me % (apr_uint32_t)budget_slots);

    for (i = 0; i < budget_slots; i++) {
        int k = (start + i) % budget_slots;
        if (apr_atomic_read32(&t[k]) == 0 && apr_atomic_cas32(&t[k], me, 0) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Free the slots whose owner is gone (crashed or killed before giving them back). The pid is
 * only compared and probed with signal 0: nothing else is derived from it. */
static int reclaim(apr_uint32_t me)
{
    volatile apr_uint32_t *t = budget_shm->db_slots;
    int i, n = 0;

    for (i = 0; i < budget_slots; i++) {
        apr_uint32_t pid = apr_atomic_read32(&t[i]);
        if (pid && pid != me && kill((pid_t)pid, 0) < 0 && errno == ESRCH
            && apr_atomic_cas32(&t[i], 0, pid) == pid) {
            n++;
        }
    }
    if (n) {
        rmsync_log(RMSYNC_LOG_NOTICE, APR_SUCCESS, RMSYNC_LOGNO(00240)
                   "database budget: reclaimed %d connection slot(s) of processes that are gone",
                   n);
    }
    return n;
}

apr_status_t rmsync_dbbudget_take(apr_interval_time_t wait)
{
    apr_uint32_t me = (apr_uint32_t)getpid();
    apr_time_t deadline;
    int waiting = 0, reclaimed = 0;

    if (!budget_shm) {
        return APR_SUCCESS;
    }
    deadline = apr_time_now() + (wait > 0 ? wait : 0);
    for (;;) {
        if (try_take(me)) {
            break;
        }
        if (!reclaimed) {
            reclaimed = 1;                  /* once per take: kill() per slot is a syscall */
            if (reclaim(me) && try_take(me)) {
                break;
            }
        }
        if (apr_time_now() >= deadline) {
            if (waiting) {
                apr_atomic_dec32(&budget_shm->db_waiting);
            }
            rmsync_shm_counter_inc(budget_shm, RMSYNC_CTR_DB_BUDGET_EXHAUSTED);
            return APR_EAGAIN;
        }
        if (!waiting) {
            waiting = 1;
            apr_atomic_inc32(&budget_shm->db_waiting);
        }
        apr_sleep(BUDGET_POLL);
    }
    if (waiting) {
        apr_atomic_dec32(&budget_shm->db_waiting);
    }
    apr_atomic_inc32(&held);
    return APR_SUCCESS;
}

void rmsync_dbbudget_give(void)
{
    volatile apr_uint32_t *t;
    apr_uint32_t me = (apr_uint32_t)getpid();
    int i;

    if (!budget_shm) {
        return;
    }
    t = budget_shm->db_slots;
    for (i = 0; i < budget_slots; i++) {
        if (apr_atomic_read32(&t[i]) == me && apr_atomic_cas32(&t[i], 0, me) == me) {
            apr_atomic_dec32(&held);
            return;
        }
    }
    /* not found: another process reclaimed it while our pid looked dead (cannot happen for a
     * live process) or the table was re-initialised; nothing to give back */
}

int rmsync_dbbudget_pressure(void)
{
    return budget_shm && apr_atomic_read32(&budget_shm->db_waiting) > 0;
}

int rmsync_dbbudget_held(void)
{
    return (int)apr_atomic_read32(&held);
}

int rmsync_dbbudget_in_use(void)
{
    int i, n = 0;

    if (!budget_shm) {
        return 0;
    }
    for (i = 0; i < budget_slots; i++) {
        n += apr_atomic_read32(&budget_shm->db_slots[i]) != 0;
    }
    return n;
}

static const rmsync_db_stmt_t budget_stmts[] = {
    { "dbbudget_max_connections",
      "SELECT current_setting('max_connections')::int"
      " - current_setting('superuser_reserved_connections')::int", 0 },
};

void rmsync_dbbudget_check_server(rmsync_db_t *db, apr_pool_t *p, int budget)
{
    rmsync_db_result_t *res = NULL;
    const char *v;
    int avail;

    if (rmsync_db_register(budget_stmts, 1) != APR_SUCCESS
        || rmsync_db_exec(db, p, "dbbudget_max_connections", RMSYNC_DB_NOPARAMS, &res)
           != APR_SUCCESS
        || !(v = rmsync_db_value(res, 0, 0))) {
        return;
    }
    avail = atoi(v);
    if (avail > 0 && budget > avail / 2) {
        rmsync_log(RMSYNC_LOG_WARNING, APR_SUCCESS, RMSYNC_LOGNO(00241)
                   "RMSyncDatabasePool %d is more than half of the %d connections PostgreSQL "
                   "gives ordinary roles (max_connections less superuser_reserved_connections): "
                   "the CRM's own clients may be refused while the module uses its budget; lower "
                   "RMSyncDatabasePool or raise max_connections", budget, avail);
    }
    else {
        rmsync_log(RMSYNC_LOG_INFO, APR_SUCCESS, "RMSyncDatabasePool %d of %d connections "
                   "PostgreSQL gives ordinary roles", budget, avail);
    }
}

static apr_status_t gate_take(apr_interval_time_t wait)
{
    return rmsync_dbbudget_take(wait);
}

static void gate_give(void)
{
    rmsync_dbbudget_give();
}

static int gate_pressure(void)
{
    return rmsync_dbbudget_pressure();
}

static const rmsync_db_gate_t gate = { gate_take, gate_give, gate_pressure };

const rmsync_db_gate_t *rmsync_dbbudget_gate(void)
{
    return &gate;
}
