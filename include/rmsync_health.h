/* mod_rmsync: health at a glance (core/rmsync_health.c, APR only, unit-tested in
 * tests/unit/test_health.c). One function turns the real signals -- the runner's shm heartbeat
 * and state, its published token error, the database probe of the admin request, the
 * SYNC_MASTER and service state, breaker holds, failing subscriptions, forbidden master
 * categories, representatives in error -- into "ok" / "warning" / "error" with a list of
 * reasons, each with a code, a message and the fix. The admin glue (rmsync_admin_health.c)
 * collects the signals and renders the result as the banner on every page, status.json's
 * "health" and the rmsync_health_* metrics. Green only when every signal is green.
 */
#ifndef RMSYNC_HEALTH_H
#define RMSYNC_HEALTH_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include "rmsync_shm.h"

/* A runner heartbeat older than this is "stalled" (the engine beats at least every 1 s). */
#define RMSYNC_HEALTH_STALE_S 30

typedef enum { RMSYNC_HEALTH_OK = 0, RMSYNC_HEALTH_WARNING = 1, RMSYNC_HEALTH_ERROR = 2 }
    rmsync_health_level_e;

typedef struct rmsync_health_in_t {
    const rmsync_shm_t *shm;  /* snapshot; NULL = no shared memory (module not enabled) */
    apr_time_t now;
    int enabled;              /* RMSyncDatabase set: a runner should exist */
    int db_ok;                /* 1 reachable, 0 not, -1 not probed */
    const char *db_error;     /* why not (when db_ok == 0) */
    /* from the database; -1 / NULL = unknown (database down) */
    const char *master_state; /* "ready", "locked", "inactive", "missing" */
    int service_running;
    int held;                 /* representatives held by the breaker */
    int subs_failing;         /* representatives whose subscription failed lately */
    int categories_forbidden; /* representatives with category_state 'forbidden' */
} rmsync_health_in_t;

typedef struct rmsync_health_reason_t {
    const char *code;         /* "runner_down", "token_failing", ... */
    rmsync_health_level_e level;
    const char *message;
    const char *fix;
} rmsync_health_reason_t;

typedef struct rmsync_health_t {
    rmsync_health_level_e level;
    apr_array_header_t *reasons;   /* of rmsync_health_reason_t, the worst first */
    int db_down;                   /* 1: representative states are "unknown", never "ok" */
} rmsync_health_t;

/* Compute the health from in (allocations in p). */
rmsync_health_t *rmsync_health_compute(apr_pool_t *p, const rmsync_health_in_t *in);

/* "ok", "warning", "error". */
const char *rmsync_health_level_name(rmsync_health_level_e level);

/* Every reason code rmsync_health_compute can give, NULL-terminated (metrics, docs test). */
extern const char *const rmsync_health_codes[];

#endif /* RMSYNC_HEALTH_H */
