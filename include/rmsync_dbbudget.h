/* mod_rmsync: the connection budget of the Apache worker processes (RMSyncDatabasePool), core
 * part (core/rmsync_dbbudget.c, APR + POSIX only, no httpd headers).
 *
 * The module's PostgreSQL connections of ALL worker processes together are bounded by one
 * number, whatever the MPM and MaxRequestWorkers: before a worker process opens a connection it
 * takes a slot of the shared segment's table (rmsync_shm_t.db_slots, one slot per connection,
 * holding the owner's pid, taken with a compare-and-swap), and gives it back when the
 * connection closes. The accounting lives in the children only: the parent zeroes the table
 * when it creates the segment and never reads it (CVE-2019-0211). A process that finds no free
 * slot reclaims the slots of owners that are gone (kill(pid, 0) == ESRCH: a child that crashed
 * or was killed before it could give its slots back), then waits for one, polling, up to the
 * caller's wait. While someone waits (db_waiting), processes close connections they release
 * instead of keeping them idle, so idle connections move to where they are needed.
 *
 * The runner does not take slots: its connections are a fixed number (one control connection
 * plus one per parallel mailbox, RMSyncGraphConcurrency) reserved out of the budget, so the
 * worker processes share `budget - runner's` slots (rmsync_dbbudget_worker_share()).
 *
 * rmsync_db.h's gate (rmsync_db_set_gate) calls take/give around every connection of a
 * process that installed it (rmsync_dbbudget_gate()). Log ids RMS00240-00249.
 */
#ifndef RMSYNC_DBBUDGET_H
#define RMSYNC_DBBUDGET_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_errno.h>

#include "rmsync_shm.h"
#include "rmsync_db.h"

/* Slots of the worker processes for a budget `total` when the runner keeps `runner` connections:
 * total - runner, at least 1, at most RMSYNC_SHM_DB_SLOTS. */
int rmsync_dbbudget_worker_share(int total, int runner);

/* The runner's connections under settings with `parallel_mailboxes` (RMSyncGraphConcurrency). */
int rmsync_dbbudget_runner_conns(int parallel_mailboxes);

/* Use shm's slot table with `slots` slots in this process (from the configuration, never from
 * the segment). Call once per process before the gate is used; shm NULL disables the budget. */
void rmsync_dbbudget_init(rmsync_shm_t *shm, int slots);

/* Take one slot for this process, waiting up to `wait` (polling every few ms). APR_SUCCESS or
 * APR_EAGAIN (all taken; counted in RMSYNC_CTR_DB_BUDGET_EXHAUSTED). */
apr_status_t rmsync_dbbudget_take(apr_interval_time_t wait);
/* Give one slot of this process back. */
void rmsync_dbbudget_give(void);
/* 1 when some process waits for a slot now (a released connection should be closed). */
int rmsync_dbbudget_pressure(void);
/* Slots this process holds now; slots taken in the whole table (for the status page). */
int rmsync_dbbudget_held(void);
int rmsync_dbbudget_in_use(void);

/* The runner, once at start: compare the budget with the server's max_connections (less its
 * reserved connections) and warn with the numbers when the module may take more than half of
 * what the CRM's own clients need too. Logs only; a failed query is ignored. */
void rmsync_dbbudget_check_server(rmsync_db_t *db, apr_pool_t *p, int budget);

/* The gate for rmsync_db_set_gate() (static storage). */
const rmsync_db_gate_t *rmsync_dbbudget_gate(void);

#endif /* RMSYNC_DBBUDGET_H */
