/* mod_rmsync, used by every process (parent, Apache workers, sync runner): the shared memory
 * layout helpers (see rmsync_shm.h; APR only, unit-tested in tests/unit/test_shm.c). */
#include <stddef.h>
#include <string.h>

#include <apr_atomic.h>
#include <apr_strings.h>

#include "rmsync_shm.h"

static const char *const counter_names[RMSYNC_CTR__COUNT] = {
    "runner_starts",
    "notifications_received",
    "notifications_accepted",
    "notifications_bad_clientstate",
    "notifications_unknown_subscription",
    "notifications_malformed",
    "notification_validations",
    "lifecycle_received",
    "webhook_db_unavailable",
    "queue_depth",
    "events_applied",
    "events_deleted",
    "events_skipped",
    "events_created",
    "links_created",
    "graph_requests",
    "graph_2xx",
    "graph_4xx",
    "graph_5xx",
    "graph_429",
    "graph_transport_errors",
    "token_refreshes",
    "delta_passes",
    "delta_resyncs",
    "subscriptions_created",
    "subscriptions_renewed",
    "breaker_holds",
    "db_errors",
    "errors",
    "admin_actions",
    "webhook_store_statements",
    "db_budget_exhausted",
    "webhook_busy",
    "webhook_subscription_lookups",
};

/* Compile-time: the table has a name for every counter and the counters fit their slots. */
typedef char rmsync_ctr_names_complete[
    (sizeof(counter_names) / sizeof(counter_names[0]) == RMSYNC_CTR__COUNT
     && RMSYNC_CTR__COUNT <= RMSYNC_SHM_COUNTER_SLOTS) ? 1 : -1];

/* What each counter means, for people (the status page); the metrics keep the names above.
 * Indexed by the enum so a counter added without a label still shows (by its name); the unit
 * test in tests/unit/test_shm.c asks for a label on every counter. */
static const struct {
    const char *label, *help;
} counter_info[RMSYNC_CTR__COUNT] = {
    [RMSYNC_CTR_RUNNER_STARTS] = { "Runner starts",
        "Sync runner processes started; more than 1 means it restarted (crash or stall)." },
    [RMSYNC_CTR_NOTIFY_RECEIVED] = { "Notifications received",
        "Change notifications from Microsoft Graph received by the webhook." },
    [RMSYNC_CTR_NOTIFY_ACCEPTED] = { "Notifications queued",
        "Notifications that passed the checks and were queued for the runner." },
    [RMSYNC_CTR_NOTIFY_BAD_CLIENTSTATE] = { "Notifications with a wrong secret",
        "Dropped: their clientState did not match the subscription's (not from our "
        "subscription)." },
    [RMSYNC_CTR_NOTIFY_UNKNOWN_SUB] = { "Notifications for unknown subscriptions",
        "Dropped: the subscription is not ours any more (deleted or replaced)." },
    [RMSYNC_CTR_NOTIFY_MALFORMED] = { "Malformed webhook requests",
        "Refused with 400/413/415: not a Graph notification." },
    [RMSYNC_CTR_NOTIFY_VALIDATIONS] = { "Subscription handshakes",
        "validationToken requests answered when Graph creates a subscription." },
    [RMSYNC_CTR_LIFECYCLE_RECEIVED] = { "Lifecycle notifications",
        "Graph's subscription lifecycle events (reauthorisation, missed notifications)." },
    [RMSYNC_CTR_WEBHOOK_DB_UNAVAILABLE] = { "Webhook refused: database down",
        "Webhook requests answered 503 because PostgreSQL was unreachable; Graph retries." },
    [RMSYNC_CTR_QUEUE_DEPTH] = { "Queue depth",
        "Notifications waiting for the runner (a gauge, not a count)." },
    [RMSYNC_CTR_EVENTS_APPLIED] = { "Outlook changes applied",
        "Appointment changes written to Business Activities." },
    [RMSYNC_CTR_EVENTS_DELETED] = { "Deletions carried out",
        "Activities deleted, cancelled or unlinked because their appointment was deleted." },
    [RMSYNC_CTR_EVENTS_SKIPPED] = { "Changes that needed nothing",
        "Notifications or delta items with nothing to do (repeats, unrelated appointments)." },
    [RMSYNC_CTR_EVENTS_CREATED] = { "Activities transferred to Outlook",
        "Appointments created in Outlook for Business Activities." },
    [RMSYNC_CTR_LINKS_CREATED] = { "Links made",
        "Appointments linked to an activity (by category, transfer or the linking API)." },
    [RMSYNC_CTR_GRAPH_REQUESTS] = { "Graph requests", "HTTP requests sent to Microsoft Graph." },
    [RMSYNC_CTR_GRAPH_2XX] = { "Graph answers: success", "Graph answered 2xx." },
    [RMSYNC_CTR_GRAPH_4XX] = { "Graph answers: refused",
        "Graph answered 4xx (permissions, missing mailbox, bad request); see the log." },
    [RMSYNC_CTR_GRAPH_5XX] = { "Graph answers: server errors",
        "Graph answered 5xx; retried later, nothing to do unless it lasts." },
    [RMSYNC_CTR_GRAPH_429] = { "Graph throttling",
        "Graph answered 429 (too many requests); the runner waits as told and recovers." },
    [RMSYNC_CTR_GRAPH_TRANSPORT_ERRORS] = { "Graph not reachable",
        "Connect, TLS or timeout failures talking to Graph (network, proxy, DNS)." },
    [RMSYNC_CTR_TOKEN_REFRESHES] = { "Access tokens fetched",
        "OAuth tokens obtained from Entra ID (about one an hour is normal)." },
    [RMSYNC_CTR_DELTA_PASSES] = { "Mailbox scans",
        "Delta queries run over representatives' calendars." },
    [RMSYNC_CTR_DELTA_RESYNCS] = { "Full rescans",
        "Delta state lost or an initial sync: a mailbox was read from the start again." },
    [RMSYNC_CTR_SUBSCRIPTIONS_CREATED] = { "Subscriptions created",
        "Graph change-notification subscriptions made for mailboxes." },
    [RMSYNC_CTR_SUBSCRIPTIONS_RENEWED] = { "Subscriptions renewed",
        "Subscriptions extended before they expired." },
    [RMSYNC_CTR_BREAKER_HOLDS] = { "Mass-delete holds",
        "Times the deletion breaker held a representative; approve or reject on the "
        "configuration page." },
    [RMSYNC_CTR_DB_ERRORS] = { "Database errors", "Failed PostgreSQL statements or connects." },
    [RMSYNC_CTR_ERRORS] = { "Sync errors", "Errors written to the sync log (see the log page)." },
    [RMSYNC_CTR_ADMIN_ACTIONS] = { "Admin actions", "Actions taken on these pages." },
    [RMSYNC_CTR_WEBHOOK_STATEMENTS] = { "Webhook store statements",
        "Database statements that stored notifications (concurrent requests share one)." },
    [RMSYNC_CTR_DB_BUDGET_EXHAUSTED] = { "Database pool full",
        "Connects refused because RMSyncDatabasePool was all in use." },
    [RMSYNC_CTR_WEBHOOK_BUSY] = { "Webhook busy",
        "Webhook requests answered 503 because lookups were saturated; Graph retries." },
    [RMSYNC_CTR_WEBHOOK_LOOKUPS] = { "Webhook subscription lookups",
        "Queries for subscription ids the process's snapshot of all subscriptions could not "
        "answer; forged ids normally cost none." },
};

const char *rmsync_shm_counter_label(rmsync_counter_e c, const char **help)
{
    if ((unsigned)c >= RMSYNC_CTR__COUNT) {
        return NULL;
    }
    if (help) {
        *help = counter_info[c].help;
    }
    return counter_info[c].label ? counter_info[c].label : counter_names[c];
}

/* After the slots: the id index (open addressing, linear probing, slot + 1, 0 = empty; a
 * power of two at least twice the slots) and one bit per slot "in error or held" (what the
 * health banner counts), both kept by rmsync_shm_rep_put under the mutex. */
static apr_uint32_t index_len(apr_uint32_t cap)
{
    apr_uint32_t n = 16;
    while (n < 2 * cap) {
        n <<= 1;
    }
    return n;
}

static apr_size_t index_off(apr_uint32_t cap)
{
    return offsetof(rmsync_shm_t, reps) + (apr_size_t)cap * sizeof(rmsync_shm_rep_t);
}

static apr_uint32_t *index_of(rmsync_shm_t *shm)
{
    return (apr_uint32_t *)(void *)((char *)shm + index_off(shm->hdr.rep_capacity));
}

static apr_uint32_t *flags_of(rmsync_shm_t *shm)
{
    return index_of(shm) + index_len(shm->hdr.rep_capacity);
}

#define FLAG_WORDS(cap) (((cap) + 31) / 32)

apr_size_t rmsync_shm_size(int max_reps)
{
    if (max_reps < 1 || max_reps > RMSYNC_SHM_MAX_REPS_LIMIT) {
        return 0;
    }
    return index_off((apr_uint32_t)max_reps)
           + (apr_size_t)(index_len((apr_uint32_t)max_reps) + FLAG_WORDS(max_reps))
             * sizeof(apr_uint32_t);
}

apr_status_t rmsync_shm_init(void *mem, apr_size_t size, int max_reps, apr_uint32_t generation,
                             const unsigned char *csrf_secret, apr_time_t now)
{
    rmsync_shm_t *shm = mem;
    apr_size_t need = rmsync_shm_size(max_reps);

    if (!mem || !need || size < need) {
        return APR_EINVAL;
    }
    memset(mem, 0, need);
    shm->hdr.magic = RMSYNC_SHM_MAGIC;
    shm->hdr.layout_version = RMSYNC_SHM_LAYOUT_VERSION;
    shm->hdr.total_size = need;
    shm->hdr.generation = generation;
    shm->hdr.rep_capacity = (apr_uint32_t)max_reps;
    shm->hdr.created = now;
    shm->runner.state = RMSYNC_RUNNER_NONE;
    if (csrf_secret) {
        memcpy(shm->csrf_secret, csrf_secret, RMSYNC_SHM_CSRF_LEN);
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_shm_validate(const void *mem, apr_size_t size)
{
    const rmsync_shm_t *shm = mem;

    if (!mem || size < offsetof(rmsync_shm_t, reps)) {
        return APR_EGENERAL;
    }
    if (shm->hdr.magic != RMSYNC_SHM_MAGIC || shm->hdr.layout_version != RMSYNC_SHM_LAYOUT_VERSION) {
        return APR_EGENERAL;
    }
    if (shm->hdr.rep_capacity < 1 || shm->hdr.rep_capacity > RMSYNC_SHM_MAX_REPS_LIMIT
        || shm->hdr.total_size != rmsync_shm_size((int)shm->hdr.rep_capacity)
        || shm->hdr.total_size > size) {
        return APR_EGENERAL;
    }
    if (shm->rep_count > shm->hdr.rep_capacity) {
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

static apr_status_t lock(apr_global_mutex_t *mutex)
{
    return mutex ? apr_global_mutex_lock(mutex) : APR_SUCCESS;
}

/* The heartbeat is also read without the mutex (rmsync_shm_runner_heartbeat_peek): one aligned
 * 64-bit word, written and read atomically. */
static void set_heartbeat(rmsync_shm_t *shm, apr_time_t now)
{
    apr_atomic_set64((volatile apr_uint64_t *)&shm->runner.heartbeat, (apr_uint64_t)now);
}

apr_time_t rmsync_shm_runner_heartbeat_peek(rmsync_shm_t *shm)
{
    if (!shm) {
        return 0;
    }
    return (apr_time_t)apr_atomic_read64((volatile apr_uint64_t *)&shm->runner.heartbeat);
}

static void unlock(apr_global_mutex_t *mutex)
{
    if (mutex) {
        apr_global_mutex_unlock(mutex);
    }
}

/* Terminate a copied slot's strings: never trust shared memory to hold terminated strings. */
static void rep_terminate(rmsync_shm_rep_t *r)
{
    r->representative_id[sizeof(r->representative_id) - 1] = '\0';
    r->mailbox[sizeof(r->mailbox) - 1] = '\0';
    r->last_error[sizeof(r->last_error) - 1] = '\0';
}

/* A copied fixed part: its count in range, its strings terminated. */
static void head_terminate(rmsync_shm_t *c)
{
    if (c->rep_count > c->hdr.rep_capacity) {
        c->rep_count = c->hdr.rep_capacity;
    }
    c->runner.activity[sizeof(c->runner.activity) - 1] = '\0';
    c->runner.last_error[sizeof(c->runner.last_error) - 1] = '\0';
    c->runner.token_error[sizeof(c->runner.token_error) - 1] = '\0';
}

/* The fixed part (everything before the slots) under the mutex, into c; the counters are
 * re-read atomically (they are changed without the mutex). */
static apr_status_t copy_head(rmsync_shm_t *shm, apr_global_mutex_t *mutex, rmsync_shm_t *c)
{
    apr_status_t rv;
    int i;

    if ((rv = lock(mutex)) != APR_SUCCESS) {
        return rv;
    }
    memcpy(c, shm, offsetof(rmsync_shm_t, reps));
    unlock(mutex);
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        c->counters[i] = apr_atomic_read32(&shm->counters[i]);
    }
    head_terminate(c);
    return APR_SUCCESS;
}

static apr_status_t check_live(rmsync_shm_t *shm)
{
    /* the size comes from the header the parent wrote; validate it before trusting it */
    apr_size_t size = shm ? rmsync_shm_size((int)shm->hdr.rep_capacity) : 0;
    if (!shm) {
        return APR_EINVAL;
    }
    return size && rmsync_shm_validate(shm, size) == APR_SUCCESS ? APR_SUCCESS : APR_EGENERAL;
}

/* Slots copied per hold of the mutex: about 10 KB, a few microseconds. */
#define SCAN_CHUNK 16

static rmsync_shm_t *new_copy(apr_pool_t *p, const rmsync_shm_t *head, apr_uint32_t nslots)
{
    rmsync_shm_t *c = apr_palloc(p, offsetof(rmsync_shm_t, reps)
                                    + (apr_size_t)nslots * sizeof(rmsync_shm_rep_t));
    memcpy(c, head, offsetof(rmsync_shm_t, reps));
    c->rep_count = 0;
    return c;
}

apr_status_t rmsync_shm_snapshot_all(rmsync_shm_t *shm, apr_global_mutex_t *mutex,
                                     apr_pool_t *p, rmsync_shm_t **copy, apr_size_t *copied)
{
    apr_status_t rv;
    rmsync_shm_t head, *c;
    apr_uint32_t n, i, k, got = 0;
    apr_size_t bytes = offsetof(rmsync_shm_t, reps);

    *copy = NULL;
    if ((rv = check_live(shm)) != APR_SUCCESS || (rv = copy_head(shm, mutex, &head))) {
        return rv;
    }
    /* the slots in use when the head was copied; slots added later are newer than it */
    n = head.rep_count;
    c = new_copy(p, &head, n);
    for (i = 0; i < n; i += k) {
        apr_uint32_t live, want = n - i < SCAN_CHUNK ? n - i : SCAN_CHUNK, j;

        if ((rv = lock(mutex)) != APR_SUCCESS) {
            return rv;
        }
        /* the list may have been cleared and refilled since: copy what is there now */
        live = shm->rep_count < shm->hdr.rep_capacity ? shm->rep_count : shm->hdr.rep_capacity;
        k = live > i ? (live - i < want ? live - i : want) : 0;
        memcpy(&c->reps[got], &shm->reps[i], (apr_size_t)k * sizeof(rmsync_shm_rep_t));
        unlock(mutex);
        if (!k) {
            break;
        }
        for (j = 0; j < k; j++) {
            rep_terminate(&c->reps[got + j]);
        }
        got += k;
        bytes += (apr_size_t)k * sizeof(rmsync_shm_rep_t);
    }
    c->rep_count = got;
    if (copied) {
        *copied += bytes;
    }
    *copy = c;
    return APR_SUCCESS;
}

apr_status_t rmsync_shm_snapshot(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_pool_t *p,
                                 rmsync_shm_t **copy)
{
    return rmsync_shm_snapshot_all(shm, mutex, p, copy, NULL);
}

static apr_uint32_t find_rep(rmsync_shm_t *shm, const char *id, apr_uint32_t *pn,
                             apr_uint32_t *pfree);

apr_status_t rmsync_shm_snapshot_some(rmsync_shm_t *shm, apr_global_mutex_t *mutex,
                                      apr_pool_t *p, const char *const *ids, int nids,
                                      rmsync_shm_t **copy, apr_size_t *copied)
{
    apr_status_t rv;
    rmsync_shm_t head, *c;
    apr_uint32_t flags[FLAG_WORDS(RMSYNC_SHM_MAX_REPS_LIMIT)];
    apr_uint32_t n, w, words, i, j, k, cap;
    apr_array_header_t *want;
    apr_size_t bytes = offsetof(rmsync_shm_t, reps);

    *copy = NULL;
    if ((rv = check_live(shm)) != APR_SUCCESS) {
        return rv;
    }
    cap = shm->hdr.rep_capacity;
    words = FLAG_WORDS(cap);
    /* the fixed part and the flags together: the flagged slots of that moment */
    if ((rv = lock(mutex)) != APR_SUCCESS) {
        return rv;
    }
    memcpy(&head, shm, offsetof(rmsync_shm_t, reps));
    memcpy(flags, flags_of(shm), words * sizeof(apr_uint32_t));
    unlock(mutex);
    bytes += words * sizeof(apr_uint32_t);
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        head.counters[i] = apr_atomic_read32(&shm->counters[i]);
    }
    head_terminate(&head);
    n = head.rep_count;

    /* which slots: the flagged ones (by index), then the asked-for ids (found under the mutex,
     * below); at most every slot in use */
    want = apr_array_make(p, 16, sizeof(apr_uint32_t));
    for (w = 0; w < words; w++) {
        for (j = 0; flags[w] && j < 32; j++) {
            if (flags[w] & (1u << j) && w * 32 + j < n) {
                *(apr_uint32_t *)apr_array_push(want) = w * 32 + j;
            }
        }
    }
    c = new_copy(p, &head, (apr_uint32_t)want->nelts + (ids && nids > 0 ? (apr_uint32_t)nids : 0));
    /* flagged slots, SCAN_CHUNK per hold of the mutex */
    for (i = 0; i < (apr_uint32_t)want->nelts; i += SCAN_CHUNK) {
        if ((rv = lock(mutex)) != APR_SUCCESS) {
            return rv;
        }
        for (k = i; k < (apr_uint32_t)want->nelts && k < i + SCAN_CHUNK; k++) {
            apr_uint32_t s = ((apr_uint32_t *)(void *)want->elts)[k];
            if (s < shm->rep_count && s < cap) {
                memcpy(&c->reps[c->rep_count++], &shm->reps[s], sizeof(rmsync_shm_rep_t));
                bytes += sizeof(rmsync_shm_rep_t);
            }
        }
        unlock(mutex);
    }
    /* the asked-for ids that are not among them, looked up in the index */
    for (i = 0; ids && i < (apr_uint32_t)(nids > 0 ? nids : 0); i += SCAN_CHUNK) {
        if ((rv = lock(mutex)) != APR_SUCCESS) {
            return rv;
        }
        for (k = i; k < (apr_uint32_t)nids && k < i + SCAN_CHUNK; k++) {
            apr_uint32_t s, m;
            if (!ids[k] || !*ids[k]) {
                continue;
            }
            s = find_rep(shm, ids[k], &m, NULL);
            /* not copied above already (by the flags read with the fixed part) */
            if (s < m && !(s < n && (flags[s / 32] & (1u << (s % 32))))) {
                memcpy(&c->reps[c->rep_count++], &shm->reps[s], sizeof(rmsync_shm_rep_t));
                bytes += sizeof(rmsync_shm_rep_t);
            }
        }
        unlock(mutex);
    }
    for (i = 0; i < c->rep_count; i++) {
        rep_terminate(&c->reps[i]);
    }
    if (copied) {
        *copied += bytes;
    }
    *copy = c;
    return APR_SUCCESS;
}

void rmsync_shm_counter_inc(rmsync_shm_t *shm, rmsync_counter_e c)
{
    if (shm && (unsigned)c < RMSYNC_CTR__COUNT) {
        apr_atomic_inc32(&shm->counters[c]);
    }
}

void rmsync_shm_counter_add(rmsync_shm_t *shm, rmsync_counter_e c, apr_uint32_t n)
{
    if (shm && (unsigned)c < RMSYNC_CTR__COUNT) {
        apr_atomic_add32(&shm->counters[c], n);
    }
}

void rmsync_shm_counter_set(rmsync_shm_t *shm, rmsync_counter_e c, apr_uint32_t v)
{
    if (shm && (unsigned)c < RMSYNC_CTR__COUNT) {
        apr_atomic_set32(&shm->counters[c], v);
    }
}

apr_uint32_t rmsync_shm_counter_get(const rmsync_shm_t *shm, rmsync_counter_e c)
{
    if (!shm || (unsigned)c >= RMSYNC_CTR__COUNT) {
        return 0;
    }
    return apr_atomic_read32((volatile apr_uint32_t *)&shm->counters[c]);
}

const char *rmsync_shm_counter_name(rmsync_counter_e c)
{
    return (unsigned)c < RMSYNC_CTR__COUNT ? counter_names[c] : NULL;
}

int rmsync_shm_counter_is_gauge(rmsync_counter_e c)
{
    return c == RMSYNC_CTR_QUEUE_DEPTH;
}

const char *rmsync_runner_state_name(apr_uint32_t state)
{
    static const char *const names[] = { "none", "starting", "idle", "working", "paused",
                                         "db_down", "stopping", "stopped" };
    return state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

const char *rmsync_shm_rep_state_name(apr_uint32_t state)
{
    static const char *const names[] = { "idle", "initial_sync", "syncing", "ok", "error",
                                         "held", "inactive" };
    return state < sizeof(names) / sizeof(names[0]) ? names[state] : "unknown";
}

void rmsync_shm_strcpy(char *dst, apr_size_t size, const char *src)
{
    if (size) {
        apr_cpystrn(dst, src ? src : "", size);
    }
}

void rmsync_shm_runner_begin(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_uint32_t pid,
                             apr_time_t now)
{
    if (!shm || lock(mutex) != APR_SUCCESS) {
        return;
    }
    shm->runner.pid = pid;
    shm->runner.state = RMSYNC_RUNNER_STARTING;
    shm->runner.started = now;
    set_heartbeat(shm, now);
    rmsync_shm_strcpy(shm->runner.activity, sizeof(shm->runner.activity), "starting");
    unlock(mutex);
    rmsync_shm_counter_inc(shm, RMSYNC_CTR_RUNNER_STARTS);
}

void rmsync_shm_runner_heartbeat(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_time_t now,
                                 int state, const char *activity)
{
    if (!shm || lock(mutex) != APR_SUCCESS) {
        return;
    }
    set_heartbeat(shm, now);
    if (state >= 0) {
        shm->runner.state = (apr_uint32_t)state;
    }
    if (activity) {
        rmsync_shm_strcpy(shm->runner.activity, sizeof(shm->runner.activity), activity);
    }
    unlock(mutex);
}

void rmsync_shm_runner_cycles(rmsync_shm_t *shm, apr_global_mutex_t *mutex, apr_uint32_t n,
                              apr_time_t now)
{
    if (!shm || lock(mutex) != APR_SUCCESS) {
        return;
    }
    shm->runner.cycles += n;
    shm->runner.last_cycle = now;
    set_heartbeat(shm, now);
    unlock(mutex);
}

/* The runner's last error texts: the message and when (0 when cleared by NULL or ""). */
static void runner_text(apr_global_mutex_t *mutex, char *buf, apr_size_t size, apr_time_t *at,
                        const char *msg, apr_time_t now)
{
    if (lock(mutex) != APR_SUCCESS) {
        return;
    }
    rmsync_shm_strcpy(buf, size, msg);
    *at = msg && *msg ? now : 0;
    unlock(mutex);
}

void rmsync_shm_runner_error(rmsync_shm_t *shm, apr_global_mutex_t *mutex, const char *msg,
                             apr_time_t now)
{
    if (shm) {
        runner_text(mutex, shm->runner.last_error, sizeof(shm->runner.last_error),
                    &shm->runner.last_error_at, msg, now);
    }
}

void rmsync_shm_runner_token_error(rmsync_shm_t *shm, apr_global_mutex_t *mutex, const char *msg,
                                   apr_time_t now)
{
    if (shm) {
        runner_text(mutex, shm->runner.token_error, sizeof(shm->runner.token_error),
                    &shm->runner.token_error_at, msg, now);
    }
}

static apr_uint32_t id_hash(const char *id)
{
    apr_uint32_t h = 2166136261u;                 /* FNV-1a */
    apr_size_t i;
    for (i = 0; i < sizeof(((rmsync_shm_rep_t *)0)->representative_id) && id[i]; i++) {
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    }
    return h;
}

/* The slot of representative id (under the mutex), found through the index: its slot, or *pn
 * (the slots in use) when there is none; then *pfree (may be NULL) gets the index entry where
 * it would go (the index length when the index is full or damaged). Every entry is checked
 * against the slot's id, so a damaged index can only miss, never point elsewhere. */
static apr_uint32_t find_rep(rmsync_shm_t *shm, const char *id, apr_uint32_t *pn,
                             apr_uint32_t *pfree)
{
    apr_uint32_t n = shm->rep_count, len = index_len(shm->hdr.rep_capacity);
    apr_uint32_t *idx = index_of(shm), h = id_hash(id) & (len - 1), probes;

    if (n > shm->hdr.rep_capacity) {
        n = shm->hdr.rep_capacity;
    }
    *pn = n;
    if (pfree) {
        *pfree = len;
    }
    for (probes = 0; probes < len; probes++, h = (h + 1) & (len - 1)) {
        apr_uint32_t e = idx[h];
        if (!e) {
            if (pfree) {
                *pfree = h;
            }
            break;
        }
        if (e - 1 < n && !strncmp(shm->reps[e - 1].representative_id, id,
                                  sizeof(shm->reps[e - 1].representative_id))) {
            return e - 1;
        }
    }
    return n;
}

static void set_flag(rmsync_shm_t *shm, apr_uint32_t i, int on)
{
    apr_uint32_t *f = flags_of(shm);
    f[i / 32] = on ? f[i / 32] | (1u << (i % 32)) : f[i / 32] & ~(1u << (i % 32));
}

apr_status_t rmsync_shm_rep_put(rmsync_shm_t *shm, apr_global_mutex_t *mutex,
                                const rmsync_shm_rep_t *rep, int *index)
{
    apr_status_t rv;
    apr_uint32_t i, n, slot;

    if (!shm || !rep || !rep->representative_id[0]
        || !memchr(rep->representative_id, '\0', sizeof(rep->representative_id))) {
        return APR_EINVAL;
    }
    if ((rv = lock(mutex)) != APR_SUCCESS) {
        return rv;
    }
    i = find_rep(shm, rep->representative_id, &n, &slot);
    if (i == n) {
        if (n >= shm->hdr.rep_capacity || slot >= index_len(shm->hdr.rep_capacity)) {
            unlock(mutex);
            return APR_ENOSPC;
        }
        shm->rep_count = n + 1;
        index_of(shm)[slot] = i + 1;
    }
    set_flag(shm, i, rep->state == RMSYNC_REP_ERROR || rep->held);
    memcpy(&shm->reps[i], rep, sizeof(*rep));
    shm->reps[i].mailbox[sizeof(rep->mailbox) - 1] = '\0';
    shm->reps[i].last_error[sizeof(rep->last_error) - 1] = '\0';
    unlock(mutex);
    if (index) {
        *index = (int)i;
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_shm_rep_get(rmsync_shm_t *shm, apr_global_mutex_t *mutex, const char *id,
                                rmsync_shm_rep_t *out)
{
    apr_status_t rv;
    apr_uint32_t i, n;

    if (!shm || !id || !*id) {
        return APR_EINVAL;
    }
    if ((rv = lock(mutex)) != APR_SUCCESS) {
        return rv;
    }
    i = find_rep(shm, id, &n, NULL);
    if (i == n) {
        unlock(mutex);
        return APR_NOTFOUND;
    }
    memcpy(out, &shm->reps[i], sizeof(*out));
    unlock(mutex);
    rep_terminate(out);
    return APR_SUCCESS;
}

void rmsync_shm_rep_clear(rmsync_shm_t *shm, apr_global_mutex_t *mutex)
{
    if (!shm || lock(mutex) != APR_SUCCESS) {
        return;
    }
    if (rmsync_shm_size((int)shm->hdr.rep_capacity)) {
        memset(shm->reps, 0, rmsync_shm_size((int)shm->hdr.rep_capacity)
                             - offsetof(rmsync_shm_t, reps));      /* slots, index, flags */
    }
    shm->rep_count = 0;
    unlock(mutex);
}
