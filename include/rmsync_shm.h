/* mod_rmsync: the shared memory segment (live view; PostgreSQL is the truth).
 *
 * One anonymous segment per generation, created by the parent in the real post_config pass,
 * protected by the global mutex "rmsync-shm" (the Mutex directive can change its mechanism).
 * The layout is fixed-size POD: no pointers, only indexes, strings are fixed char arrays that are
 * always NUL-terminated. Counters are apr_uint32_t changed with apr_atomic_* (no mutex);
 * everything else is written and read under the mutex, held only for a memcpy. Readers take a
 * snapshot of what they show (the fixed part and the slots they need, a few at a time:
 * rmsync_shm_snapshot_all / _some) and render after unlocking. After the slots, an id index
 * and "in error or held" flags let a reader find the slots it needs without reading all.
 *
 * The root parent only ever WRITES the segment (init); it never reads what children wrote
 * (the CVE-2019-0211 lesson) -- with one exception: the runner's heartbeat timestamp, read
 * atomically and only compared with the clock (rmsync_shm_runner_heartbeat_peek). A forged value
 * can at worst get the runner (a User process, which User can kill anyway) restarted or not
 * restarted; no pointer, index, size or pid from the segment is ever used by the parent.
 *
 * This header is the layout and its helpers (core/rmsync_shm_layout.c, APR only); creating the
 * segment and the mutex is httpd glue (mod_rmsync_shm.h, mod_rmsync/rmsync_shm.c).
 */
#ifndef RMSYNC_SHM_H
#define RMSYNC_SHM_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_global_mutex.h>

#define RMSYNC_SHM_MAGIC           0x524d5359u /* "RMSY" */
#define RMSYNC_SHM_LAYOUT_VERSION  4u
#define RMSYNC_SHM_MUTEX_TYPE      "rmsync-shm"
#define RMSYNC_SHM_CSRF_LEN        32
#define RMSYNC_SHM_MAX_REPS_LIMIT  10000
/* Most database connections RMSyncDatabasePool may allow (rmsync_shm_t.db_slots). */
#define RMSYNC_SHM_DB_SLOTS        1024

/* Runner state word (rmsync_shm_runner_t.state). */
typedef enum {
    RMSYNC_RUNNER_NONE = 0,     /* never started in this generation */
    RMSYNC_RUNNER_STARTING,     /* forked, setting up */
    RMSYNC_RUNNER_IDLE,         /* waiting for the next cycle / notification */
    RMSYNC_RUNNER_WORKING,      /* doing sync work */
    RMSYNC_RUNNER_PAUSED,       /* sync service stopped by an admin, or SYNC_MASTER unusable */
    RMSYNC_RUNNER_DB_DOWN,      /* waiting for the database */
    RMSYNC_RUNNER_STOPPING,     /* got SIGTERM / EOF, finishing the current step */
    RMSYNC_RUNNER_STOPPED       /* the engine returned */
} rmsync_runner_state_e;

/* Counters: index into rmsync_shm_t.counters. Add new ones before RMSYNC_CTR__COUNT and give
 * them a name in rmsync_shm_layout.c (the names are the JSON/metrics keys). */
typedef enum {
    RMSYNC_CTR_RUNNER_STARTS = 0,       /* runner processes started in this generation */
    RMSYNC_CTR_NOTIFY_RECEIVED,         /* notification items received by the webhook */
    RMSYNC_CTR_NOTIFY_ACCEPTED,         /* ... stored in the queue */
    RMSYNC_CTR_NOTIFY_BAD_CLIENTSTATE,  /* ... dropped: clientState mismatch */
    RMSYNC_CTR_NOTIFY_UNKNOWN_SUB,      /* ... dropped: unknown subscription */
    RMSYNC_CTR_NOTIFY_MALFORMED,        /* requests rejected as malformed (400/413/415) */
    RMSYNC_CTR_NOTIFY_VALIDATIONS,      /* validationToken handshakes answered */
    RMSYNC_CTR_LIFECYCLE_RECEIVED,      /* lifecycle notification items received */
    RMSYNC_CTR_WEBHOOK_DB_UNAVAILABLE,  /* webhook requests answered 503 (DB down) */
    RMSYNC_CTR_QUEUE_DEPTH,             /* gauge: notification queue depth, last seen by runner */
    RMSYNC_CTR_EVENTS_APPLIED,          /* Outlook changes applied to activities */
    RMSYNC_CTR_EVENTS_DELETED,          /* activities deleted / cancelled / unlinked by a delete */
    RMSYNC_CTR_EVENTS_SKIPPED,          /* changes that needed nothing (idempotent repeats etc.) */
    RMSYNC_CTR_EVENTS_CREATED,          /* activities transferred to Outlook */
    RMSYNC_CTR_LINKS_CREATED,           /* appointment <-> activity links made */
    RMSYNC_CTR_GRAPH_REQUESTS,          /* Graph HTTP requests sent */
    RMSYNC_CTR_GRAPH_2XX,
    RMSYNC_CTR_GRAPH_4XX,
    RMSYNC_CTR_GRAPH_5XX,
    RMSYNC_CTR_GRAPH_429,
    RMSYNC_CTR_GRAPH_TRANSPORT_ERRORS,  /* connect/TLS/timeout/size cap */
    RMSYNC_CTR_TOKEN_REFRESHES,
    RMSYNC_CTR_DELTA_PASSES,
    RMSYNC_CTR_DELTA_RESYNCS,           /* 410 / SyncStateNotFound / initial sync rounds */
    RMSYNC_CTR_SUBSCRIPTIONS_CREATED,
    RMSYNC_CTR_SUBSCRIPTIONS_RENEWED,
    RMSYNC_CTR_BREAKER_HOLDS,           /* mass-delete circuit breaker trips */
    RMSYNC_CTR_DB_ERRORS,
    RMSYNC_CTR_ERRORS,                  /* sync errors written to the sync log */
    RMSYNC_CTR_ADMIN_ACTIONS,
    RMSYNC_CTR_WEBHOOK_STATEMENTS,      /* statements that stored webhook items (a group's: one) */
    RMSYNC_CTR_DB_BUDGET_EXHAUSTED,     /* connects refused: RMSyncDatabasePool all taken */
    RMSYNC_CTR_WEBHOOK_BUSY,            /* webhook requests answered 503: lookups saturated */
    RMSYNC_CTR_WEBHOOK_LOOKUPS,         /* webhook subscription lookups (ids no snapshot knew) */
    RMSYNC_CTR__COUNT
} rmsync_counter_e;

#define RMSYNC_SHM_COUNTER_SLOTS 64   /* room for more counters without a layout change */

typedef struct rmsync_shm_header_t {
    apr_uint32_t magic;           /* RMSYNC_SHM_MAGIC */
    apr_uint32_t layout_version;  /* RMSYNC_SHM_LAYOUT_VERSION */
    apr_uint64_t total_size;      /* bytes of the whole segment, = rmsync_shm_size(rep_capacity) */
    apr_uint32_t generation;      /* httpd config generation that created it */
    apr_uint32_t rep_capacity;    /* number of representative slots (RMSyncMaxRepresentatives) */
    apr_time_t   created;         /* when the parent initialised it */
} rmsync_shm_header_t;

typedef struct rmsync_shm_runner_t {
    apr_uint32_t pid;             /* runner process id (written by the runner itself) */
    apr_uint32_t state;           /* rmsync_runner_state_e */
    apr_time_t   started;         /* runner start time */
    apr_time_t   heartbeat;       /* last sign of life (the engine updates it at least every 1 s) */
    apr_time_t   last_cycle;      /* when the last cycle tick was taken */
    apr_uint64_t cycles;          /* cycle ticks taken from the parent's pipe (this generation) */
    char         activity[128];   /* what it is doing now, for the status page */
    char         last_error[256]; /* last runner-level error (DB down, master user locked, ...) */
    apr_time_t   last_error_at;
    /* the last refused token request ("AADSTS7000215 invalid_client: ..."), "" while tokens
     * are obtained: the admin's health banner names the code and the directive to fix */
    char         token_error[256];
    apr_time_t   token_error_at;
} rmsync_shm_runner_t;

/* Per-representative live status (slot i is for whatever representative the runner put there). */
typedef struct rmsync_shm_rep_t {
    char         representative_id[64];  /* CRM representative id, "" = free slot */
    char         mailbox[256];           /* Graph user id or UPN */
    apr_uint32_t state;                  /* engine-defined, see rmsync_shm_rep_state_name() */
    apr_uint32_t held;                   /* 1 = held by the mass-delete circuit breaker */
    apr_time_t   last_success;           /* last completed pass */
    apr_uint32_t lag_ms;                 /* Outlook change -> activity written, last seen */
    apr_uint32_t linked_count;           /* linked activities */
    apr_time_t   subscription_expiry;    /* 0 = no subscription */
    char         last_error[256];
    apr_time_t   last_error_at;
} rmsync_shm_rep_t;

typedef enum {
    RMSYNC_REP_IDLE = 0,
    RMSYNC_REP_INITIAL_SYNC,
    RMSYNC_REP_SYNCING,
    RMSYNC_REP_OK,
    RMSYNC_REP_ERROR,
    RMSYNC_REP_HELD,
    RMSYNC_REP_INACTIVE
} rmsync_rep_state_e;

typedef struct rmsync_shm_t {
    rmsync_shm_header_t hdr;
    rmsync_shm_runner_t runner;
    apr_uint32_t counters[RMSYNC_SHM_COUNTER_SLOTS];   /* apr_atomic_* only */
    unsigned char csrf_secret[RMSYNC_SHM_CSRF_LEN];    /* per generation, random */
    apr_uint32_t rep_count;                            /* slots in use: reps[0..rep_count) */
    apr_uint32_t reserved[15];
    /* The connection budget of the worker processes (core/rmsync_dbbudget.c): slot i holds the
     * pid of the process that owns one connection, 0 = free; taken and given back with CAS by
     * the children only (the parent zeroes them at init and never reads them). db_waiting:
     * children waiting for a slot now (a process that releases a handle then closes it). */
    apr_uint32_t db_slots[RMSYNC_SHM_DB_SLOTS];
    apr_uint32_t db_waiting;
    apr_uint32_t db_reserved[7];
    rmsync_shm_rep_t reps[];                           /* hdr.rep_capacity slots, then the
                                                        * id index and the flags (layout.c) */
} rmsync_shm_t;

/* ---- layout helpers (core/rmsync_shm_layout.c, APR only) ---- */

/* Bytes needed for a segment with max_reps slots; 0 when max_reps is out of range. */
apr_size_t rmsync_shm_size(int max_reps);
/* Zero and initialise mem (size bytes, at least rmsync_shm_size(max_reps)). */
apr_status_t rmsync_shm_init(void *mem, apr_size_t size, int max_reps, apr_uint32_t generation,
                             const unsigned char *csrf_secret, apr_time_t now);
/* Check that mem holds a segment of this layout and size: APR_SUCCESS or APR_EGENERAL. */
apr_status_t rmsync_shm_validate(const void *mem, apr_size_t size);

/* Snapshots (mutex may be NULL in tests). A copy's rep_count is the number of slots it holds
 * (reps[0..rep_count)), its strings are terminated; *copied (may be NULL) grows by the bytes
 * read from the segment. The mutex is held only for small memcpys (the fixed part; up to 16
 * slots at a time), so a 10,000-slot listing never blocks the runner for the whole copy. Each
 * slot is consistent (a writer replaces a slot whole under the mutex); the list is not one
 * instant: a slot may be newer than the fixed part or than an earlier slot, as if read a moment
 * later, and slots added after the fixed part was read are left out.
 *
 * The fixed part and every slot in use (status, metrics). */
apr_status_t rmsync_shm_snapshot_all(rmsync_shm_t *shm, apr_global_mutex_t *mutex,
                                     apr_pool_t *p, rmsync_shm_t **copy, apr_size_t *copied);
/* The same without counting. */
apr_status_t rmsync_shm_snapshot(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_pool_t *p,
                                 rmsync_shm_t **copy);
/* The fixed part, the slots "in error or held" (what the health banner counts; found by their
 * flags, not by reading every slot) and the slots of ids[0..nids) (found by the id index; may
 * be NULL / 0): the pages that show some representatives or none. */
apr_status_t rmsync_shm_snapshot_some(rmsync_shm_t *shm, apr_global_mutex_t *mutex,
                                      apr_pool_t *p, const char *const *ids, int nids,
                                      rmsync_shm_t **copy, apr_size_t *copied);

/* Counters (no mutex). */
void         rmsync_shm_counter_inc(rmsync_shm_t *shm, rmsync_counter_e c);
void         rmsync_shm_counter_add(rmsync_shm_t *shm, rmsync_counter_e c, apr_uint32_t n);
void         rmsync_shm_counter_set(rmsync_shm_t *shm, rmsync_counter_e c, apr_uint32_t v);
apr_uint32_t rmsync_shm_counter_get(const rmsync_shm_t *shm, rmsync_counter_e c);
const char  *rmsync_shm_counter_name(rmsync_counter_e c);  /* NULL when out of range */
/* A counter's label for people (its name when it has none) and, in *help (may be NULL when
 * unlabelled), one line on what it counts; NULL when out of range. */
const char  *rmsync_shm_counter_label(rmsync_counter_e c, const char **help);
int          rmsync_shm_counter_is_gauge(rmsync_counter_e c);
const char  *rmsync_runner_state_name(apr_uint32_t state);
const char  *rmsync_shm_rep_state_name(apr_uint32_t state);

/* Runner publishing (under the mutex; shm NULL = no-op so the engine runs without shm too). */
void rmsync_shm_runner_begin(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_uint32_t pid,
                             apr_time_t now);
/* state < 0 leaves the state unchanged; activity NULL leaves it unchanged. */
void rmsync_shm_runner_heartbeat(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_time_t now,
                                 int state, const char *activity);
void rmsync_shm_runner_cycles(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_uint32_t n,
                              apr_time_t now);
/* The runner's last heartbeat, read WITHOUT the mutex (one atomic 64-bit load): for the parent's
 * stall check in the monitor hook, which must never block on a lock a hung runner may hold.
 * The value is only compared with the clock; nothing else written by a child is trusted. */
apr_time_t rmsync_shm_runner_heartbeat_peek(rmsync_shm_t *shm);
/* msg NULL clears the error. */
void rmsync_shm_runner_error(rmsync_shm_t *shm, apr_global_mutex_t *mutex, const char *msg,
                             apr_time_t now);

/* The last token error (msg NULL or "" clears it; health banner, status.json). */
void rmsync_shm_runner_token_error(rmsync_shm_t *shm, apr_global_mutex_t *mutex, const char *msg,
                                   apr_time_t now);

/* Representatives: put (insert or replace by representative_id) one slot's content.
 * APR_ENOSPC when all slots are taken, APR_EINVAL on an empty id. *index gets the slot. */
apr_status_t rmsync_shm_rep_put(rmsync_shm_t *shm, apr_global_mutex_t *mutex,
                                const rmsync_shm_rep_t *rep, int *index);
/* Copy one slot out by representative id: APR_SUCCESS or APR_NOTFOUND. */
apr_status_t rmsync_shm_rep_get(rmsync_shm_t *shm, apr_global_mutex_t *mutex, const char *id,
                                rmsync_shm_rep_t *out);
/* Remove all slots (e.g. before re-publishing the representative list). */
void rmsync_shm_rep_clear(rmsync_shm_t *shm, apr_global_mutex_t *mutex);

/* Copy a string into a fixed field, truncating, always NUL-terminated. */
void rmsync_shm_strcpy(char *dst, apr_size_t size, const char *src);

#endif /* RMSYNC_SHM_H */
