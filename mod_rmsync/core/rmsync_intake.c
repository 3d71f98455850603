/* mod_rmsync, run by Apache worker processes (the rmsync-webhook handler): the intake of Graph
 * change notifications: parse a POST, check clientStates against the cached subscriptions,
 * store the good items (alone or in a group statement) and wake the runner (rmsync_intake.h). */
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_hash.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_sb.h"
#include "rmsync_csrf.h"
#include "rmsync_db.h"
#include "rmsync_intake.h"
#include "rmsync_utf8.h"

/* ------------------------------------------------------------------------------------------ */
/* parsing                                                                                     */

/* A string member that is present, a JSON string, non-empty and at most max bytes;
 * optional: absent / null give APR_SUCCESS with NULL. */
static int get_str(const cJSON *item, const char *name, apr_size_t max, int optional,
                   const char **pval)
{
    const char *s = NULL;
    apr_status_t rv = optional ? rmsync_json_opt_string(item, name, &s)
                               : rmsync_json_get_string(item, name, &s);
    if (rv != APR_SUCCESS) {
        return 0;
    }
    if (s && (!*s || strlen(s) > max)) {
        return 0;
    }
    *pval = s;
    return 1;
}

/* Graph sends resource paths like "Users/{uid}/Events/{id}" (PascalCase); take the id. */
static const char *event_id_from_resource(apr_pool_t *p, const char *resource)
{
    const char *slash;

    if (!resource) {
        return NULL;
    }
    slash = strrchr(resource, '/');
    if (!slash || !slash[1] || slash == resource) {
        return NULL;
    }
    /* The segment before the id must name the events collection. */
    {
        const char *prev = slash - 1;
        while (prev > resource && *prev != '/') {
            prev--;
        }
        if (*prev == '/') {
            prev++;
        }
        if ((apr_size_t)(slash - prev) != 6 || strncasecmp(prev, "events", 6)) {
            return NULL;
        }
    }
    return apr_pstrdup(p, slash + 1);
}

static int parse_item(rmsync_notif_item_t *it, apr_pool_t *p, const cJSON *item,
                      int lifecycle_endpoint)
{
    const char *lifecycle = NULL;
    cJSON *rdata = NULL;

    if (!cJSON_IsObject(item)) {
        return 0;
    }
    memset(it, 0, sizeof(*it));
    if (!get_str(item, "subscriptionId", RMSYNC_QUEUE_MAX_ID_LEN, 0, &it->subscription_id)
        || !get_str(item, "clientState", RMSYNC_QUEUE_MAX_STATE_LEN, 1, &it->client_state)
        || !get_str(item, "tenantId", RMSYNC_QUEUE_MAX_ID_LEN, 1, &it->tenant_id)
        || !get_str(item, "resource", RMSYNC_QUEUE_MAX_ID_LEN, 1, &it->resource)
        || !get_str(item, "lifecycleEvent", 64, 1, &lifecycle)) {
        return 0;
    }
    if (lifecycle) {
        if (strcmp(lifecycle, "reauthorizationRequired") && strcmp(lifecycle, "subscriptionRemoved")
            && strcmp(lifecycle, "missed")) {
            return 0;
        }
        it->kind = RMSYNC_NOTIF_LIFECYCLE;
        it->lifecycle_event = lifecycle;
        return 1;
    }
    if (lifecycle_endpoint) {
        return 0;
    }
    it->kind = RMSYNC_NOTIF_CHANGE;
    if (!get_str(item, "changeType", 16, 0, &it->change_type)
        || (strcmp(it->change_type, "created") && strcmp(it->change_type, "updated")
            && strcmp(it->change_type, "deleted"))) {
        return 0;
    }
    /* resourceData is optional in the schema, but when present it must be an object with a
     * string id; fall back to the resource path otherwise. */
    if (rmsync_json_member(item, "resourceData")) {
        if (rmsync_json_get_object(item, "resourceData", &rdata) != APR_SUCCESS
            || !get_str(rdata, "id", RMSYNC_QUEUE_MAX_ID_LEN, 1, &it->event_id)) {
            return 0;
        }
    }
    if (!it->event_id) {
        it->event_id = event_id_from_resource(p, it->resource);
    }
    return it->event_id != NULL;
}

apr_status_t rmsync_notif_parse(rmsync_notif_batch_t **pbatch, apr_pool_t *p,
                                const char *body, apr_size_t len, int lifecycle_endpoint,
                                const char **why)
{
    cJSON *json = NULL, *value = NULL, *item;
    rmsync_notif_batch_t *batch;
    apr_status_t rv;
    int n;

    *pbatch = NULL;
    *why = NULL;
    /* Bad bytes would reach PostgreSQL (which refuses them: a false "database down") and
     * \u0000 would silently cut an id: the whole body is refused before parsing. */
    if (!rmsync_json_text_valid(body, len, why)) {
        return RMSYNC_QUEUE_EJSON;
    }
    rv = rmsync_json_parse_pooled(&json, p, body, len, 0, NULL);   /* read only */
    if (rv != APR_SUCCESS) {
        *why = "malformed JSON";
        return RMSYNC_QUEUE_EJSON;
    }
    if (!cJSON_IsObject(json) || rmsync_json_get_array(json, "value", &value) != APR_SUCCESS) {
        *why = "`value` must be an array";
        return RMSYNC_QUEUE_ENOVALUE;
    }
    n = cJSON_GetArraySize(value);
    if (n > RMSYNC_QUEUE_MAX_ITEMS) {
        *why = "too many items in `value`";
        return RMSYNC_QUEUE_ETOOMANY;
    }
    batch = apr_pcalloc(p, sizeof(*batch));
    batch->items = apr_array_make(p, n > 0 ? n : 1, sizeof(rmsync_notif_item_t));
    cJSON_ArrayForEach(item, value) {
        rmsync_notif_item_t it;
        if (parse_item(&it, p, item, lifecycle_endpoint)) {
            APR_ARRAY_PUSH(batch->items, rmsync_notif_item_t) = it;
        }
        else {
            batch->invalid++;
        }
    }
    *pbatch = batch;
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* storing                                                                                     */

/* Every statement checks, in the statement that inserts, that the subscription still exists
 * (and takes its representative from it): an item checked against a cached secret of a
 * subscription deleted since is counted unknown and stored nothing, so the runner never sees
 * it. One statement = one round trip = one short transaction. A repeat of a pending item
 * coalesces (ON CONFLICT DO NOTHING on notification_pending_uq, also within one batch).
 * INTAKE_DEFER (w) sets rmsync.intake_wake = 'deferred' for the statement's transaction before
 * any row is inserted, so the table's per-row NOTIFY trigger stays quiet (its WHEN clause): a
 * NOTIFY in every commit serialises all commits on PostgreSQL's global notify lock (bench/:
 * pgbench's INSERT ran at half the rate with it). The caller wakes the runner instead, after
 * the commit, with rmsync_notif_wake() (the webhook coalesces those per process). */
#define INTAKE_DEFER \
    "w AS (SELECT set_config('rmsync.intake_wake', 'deferred', true) AS v)"
#define INTAKE_CONFLICT \
    " ON CONFLICT (subscription_id, kind, coalesce(event_id, ''), coalesce(lifecycle_event, ''))" \
    " WHERE state = 'pending' DO NOTHING"
#define INTAKE_COLUMNS \
    "INSERT INTO rmsync.notification (subscription_id, representative_id, kind, change_type," \
    " lifecycle_event, resource, event_id)"
#define INTAKE_BATCH \
    "WITH " INTAKE_DEFER "," \
    " j AS (SELECT x.sub, s.representative_id AS rep, x.kind, x.ct, x.le, x.res, x.ev, x.n" \
    "             FROM ROWS FROM (jsonb_to_recordset($1::jsonb)" \
    "                  AS (sub text, kind text, ct text, le text, res text, ev text))" \
    "                  WITH ORDINALITY AS x(sub, kind, ct, le, res, ev, n)" \
    "             JOIN rmsync.subscription s ON s.subscription_id = x.sub" \
    "             JOIN w ON w.v = 'deferred')," \
    " ins AS (" INTAKE_COLUMNS " SELECT sub, rep, kind, ct, le, res, ev FROM j ORDER BY n" \
    INTAKE_CONFLICT " RETURNING id)"

static const rmsync_db_stmt_t intake_stmts[] = {
    /* Subscriptions not (freshly) in the process cache. */
    { "webhook_subs_lookup",
      "SELECT subscription_id, client_state FROM rmsync.subscription"
      " WHERE subscription_id IN (SELECT jsonb_array_elements_text($1::jsonb))", 1 },
    /* One item that is not a deletion (the common POST): a plain INSERT, no jsonb. */
    /* (no CTE: a row back = stored; none = coalesced or the subscription is gone, which
     * webhook_sub_exists then tells apart; the WHERE runs set_config before the insert) */
    { "webhook_store1",
      INTAKE_COLUMNS " SELECT $1, s.representative_id, $2, $3, $4, $5, $6"
      "  FROM rmsync.subscription s"
      " WHERE s.subscription_id = $1"
      "   AND set_config('rmsync.intake_wake', 'deferred', true) = 'deferred'"
      INTAKE_CONFLICT " RETURNING id", 6 },
    { "webhook_sub_exists",
      "SELECT 1 FROM rmsync.subscription WHERE subscription_id = $1", 1 },
    /* A batch without a deletion. */
    { "webhook_store",
      INTAKE_BATCH
      " SELECT (SELECT count(*) FROM ins) AS stored, (SELECT count(*) FROM j) AS items,"
      "        0 AS upgraded", 1 },
    /* A batch with a deletion: a 'deleted' that meets a pending created/updated item for the
     * same event wins, so the runner reads a 404 as the deletion it is. Its conditions are
     * those of notification_pending_uq (one index probe per item, not a scan of the pending
     * backlog: a generic plan made while the queue was small once scanned every pending row). */
    { "webhook_store_del",
      INTAKE_BATCH ","
      " upd AS (UPDATE rmsync.notification n SET change_type = 'deleted' FROM j"
      "          WHERE j.ct = 'deleted' AND n.state = 'pending' AND n.kind = 'change'"
      "            AND n.subscription_id = j.sub AND coalesce(n.event_id, '') = j.ev"
      "            AND coalesce(n.lifecycle_event, '') = ''"
      "            AND n.change_type IS DISTINCT FROM 'deleted' RETURNING n.id)"
      " SELECT (SELECT count(*) FROM ins) AS stored, (SELECT count(*) FROM j) AS items,"
      "        (SELECT count(*) FROM upd) AS upgraded", 1 },
    /* The requests of a group (rmsync_notif_store): $1 rows carry r, the request's
     * index in the group; a row back per request with its items whose subscription still
     * exists. Inserted in key order, so two groups with the same pending items take their
     * index entries in the same order (no deadlock). */
    { "webhook_store_group",
      "WITH " INTAKE_DEFER ","
      " j AS (SELECT x.r, x.sub, s.representative_id AS rep, x.kind, x.ct, x.le, x.res, x.ev"
      "         FROM jsonb_to_recordset($1::jsonb)"
      "              AS x(r int, sub text, kind text, ct text, le text, res text, ev text)"
      "         JOIN rmsync.subscription s ON s.subscription_id = x.sub"
      "         JOIN w ON w.v = 'deferred'),"
      " ins AS (" INTAKE_COLUMNS " SELECT sub, rep, kind, ct, le, res, ev FROM j"
      "          ORDER BY sub, kind, ev, le" INTAKE_CONFLICT " RETURNING id)"
      " SELECT r, count(*) AS items, (SELECT count(*) FROM ins) AS stored FROM j GROUP BY r", 1 },
    /* All subscriptions (bounded): the cache's snapshot (rmsync_notif_cache_refresh). */
    { "webhook_subs_all",
      "SELECT subscription_id, client_state FROM rmsync.subscription LIMIT 20001", 0 },
    /* Whether the table changed since the last snapshot: new subscriptions raise the count or
     * the newest created_at (one small aggregate instead of reloading every row). */
    { "webhook_subs_mark",
      "SELECT count(*) || '/' || coalesce(max(created_at)::text, '') FROM rmsync.subscription", 0 },
    /* The runner's wake-up for rows stored by the statements above (after their commit). */
    { "webhook_wake", "SELECT pg_notify('rmsync', 'notification')", 0 },
};

apr_status_t rmsync_notif_wake(rmsync_db_t *db, apr_pool_t *p)
{
    return rmsync_db_exec(db, p, "webhook_wake", RMSYNC_DB_NOPARAMS, NULL);
}

apr_status_t rmsync_queue_intake_init(void)
{
    return rmsync_db_register(intake_stmts, (int)(sizeof(intake_stmts) / sizeof(intake_stmts[0])));
}

/* ---- the per-process subscription cache ---------------------------------------------------- */

/* Cached entries beyond this are dropped all at once (the cache pool is recreated): a bound on
 * memory whatever ids come and go; it refills from the database on the next misses. */
#define CACHE_MAX_ENTRIES 4096

typedef struct {
    const char *client_state;
    apr_time_t fetched;
} cache_entry_t;

/* A stale entry whose secret matches still admits an item while lookups are saturated. */
#define CACHE_STALE_MAX apr_time_from_sec(300)

struct rmsync_notif_cache_t {
    apr_pool_t *parent;
    apr_pool_t *pool;               /* entries and their strings; recreated when full */
    apr_hash_t *subs;               /* subscription id -> cache_entry_t */
    apr_pool_t *neg_pool;           /* negative entries; recreated when full */
    apr_hash_t *unknown;            /* subscription id -> apr_time_t (when found unknown) */
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *lookup_done; /* a lookup finished: a waiting request may start one */
    apr_interval_time_t ttl, neg_ttl, lookup_wait;
    int lookups, max_lookups;       /* running now / at most (0: no bound) */
    apr_time_t all_at;              /* when the last complete snapshot was taken (0: none) */
    apr_interval_time_t all_ttl;    /* a snapshot this young answers "unknown" for an id */
    apr_time_t all_full_at;         /* when the rows were last read in full */
    int all_count;                  /* how many rows that read held */
    char all_mark[64];              /* webhook_subs_mark's answer before that read */
    /* A request whose ids the snapshot lacks waits for a snapshot confirmed after it arrived
     * (a subscription created a moment ago is then known): it asks the refresher to check. */
    apr_thread_cond_t *fresh;       /* a refresh finished */
    int want_fresh;                 /* a request waits for one */
    void (*refresher)(void *);      /* wakes whoever calls rmsync_notif_cache_refresh */
    void *refresher_baton;
};

#define CACHE_SNAPSHOT_MAX 20000    /* more subscriptions than this: no snapshot */
/* How long a request waits for a snapshot newer than itself (the refresher checks at once). */
#define CACHE_FRESH_WAIT apr_time_from_msec(300)
/* How long a request waits for a first snapshot (none valid) before it looks its ids up: the
 * refresher's own connect may have to wait for a slot of RMSyncDatabasePool. */
#define CACHE_COLD_WAIT apr_time_from_msec(500)


void rmsync_notif_cache_limits(rmsync_notif_cache_t *c, apr_interval_time_t neg_ttl,
                               int max_lookups, apr_interval_time_t lookup_wait)
{
    apr_thread_mutex_lock(c->mutex);
    c->neg_ttl = neg_ttl;
    c->max_lookups = max_lookups > 0 ? max_lookups : 0;
    c->lookup_wait = lookup_wait;
    apr_thread_mutex_unlock(c->mutex);
}

apr_status_t rmsync_notif_cache_create(rmsync_notif_cache_t **pcache, apr_pool_t *p,
                                       apr_interval_time_t ttl)
{
    rmsync_notif_cache_t *c = apr_pcalloc(p, sizeof(*c));
    apr_status_t rv;

    *pcache = NULL;
    c->parent = p;
    c->ttl = ttl;
    if ((rv = apr_thread_mutex_create(&c->mutex, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&c->lookup_done, p)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&c->fresh, p)) != APR_SUCCESS
        || (rv = apr_pool_create(&c->pool, p)) != APR_SUCCESS
        || (rv = apr_pool_create(&c->neg_pool, p)) != APR_SUCCESS) {
        return rv;
    }
    apr_pool_tag(c->pool, "rmsync_notif_cache");
    apr_pool_tag(c->neg_pool, "rmsync_notif_unknown");
    c->subs = apr_hash_make(c->pool);
    c->unknown = apr_hash_make(c->neg_pool);
    *pcache = c;
    return APR_SUCCESS;
}

/* Our subscriptions named in one batch: id -> secret, in the request pool (the statement that
 * stores takes the representative from the subscription row itself). */
typedef struct {
    const char *client_state;
} sub_info_t;

/* A cached entry for id younger than max_age, copied into p; NULL when absent or older. */
static sub_info_t *cache_get(rmsync_notif_cache_t *c, apr_pool_t *p, const char *id,
                             apr_interval_time_t max_age)
{
    const cache_entry_t *e;
    sub_info_t *si = NULL;

    apr_thread_mutex_lock(c->mutex);
    e = c->subs ? apr_hash_get(c->subs, id, APR_HASH_KEY_STRING) : NULL;
    if (e && apr_time_now() - e->fetched < (max_age ? max_age : c->ttl)) {
        si = apr_palloc(p, sizeof(*si));
        si->client_state = apr_pstrdup(p, e->client_state);
    }
    apr_thread_mutex_unlock(c->mutex);
    return si;
}

static int same(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

static void cache_put(rmsync_notif_cache_t *c, const char *id, const sub_info_t *si,
                      apr_time_t fetched)
{
    cache_entry_t *e;

    apr_thread_mutex_lock(c->mutex);
    e = c->subs ? apr_hash_get(c->subs, id, APR_HASH_KEY_STRING) : NULL;
    if (!e && c->subs && apr_hash_count(c->subs) >= CACHE_MAX_ENTRIES) {
        apr_pool_destroy(c->pool);
        if (apr_pool_create(&c->pool, c->parent) != APR_SUCCESS) {
            c->pool = NULL;
        }
        c->subs = c->pool ? apr_hash_make(c->pool) : NULL;
    }
    if (!c->subs) {
        apr_thread_mutex_unlock(c->mutex);
        return;
    }
    if (!e) {
        e = apr_pcalloc(c->pool, sizeof(*e));
        apr_hash_set(c->subs, apr_pstrdup(c->pool, id), APR_HASH_KEY_STRING, e);
    }
    /* A refresh usually finds the same secret: allocate only for a change, so a long-lived
     * process does not grow by one copy per TTL. */
    if (!same(e->client_state, si->client_state)) {
        e->client_state = apr_pstrdup(c->pool, si->client_state);
    }
    e->fetched = fetched;
    apr_thread_mutex_unlock(c->mutex);
}

static void cache_forget(rmsync_notif_cache_t *c, const char *id)
{
    apr_thread_mutex_lock(c->mutex);
    if (c->subs) {
        apr_hash_set(c->subs, id, APR_HASH_KEY_STRING, NULL);
    }
    apr_thread_mutex_unlock(c->mutex);
}

/* Remember that the database did not know id (when negative entries are on). */
static void unknown_put(rmsync_notif_cache_t *c, const char *id, apr_time_t now)
{
    apr_time_t *t;

    apr_thread_mutex_lock(c->mutex);
    if (c->neg_ttl > 0 && c->unknown) {
        if (apr_hash_count(c->unknown) >= CACHE_MAX_ENTRIES) {
            apr_pool_destroy(c->neg_pool);
            c->unknown = apr_pool_create(&c->neg_pool, c->parent) == APR_SUCCESS
                         ? apr_hash_make(c->neg_pool) : NULL;
        }
        if (c->unknown) {
            t = apr_hash_get(c->unknown, id, APR_HASH_KEY_STRING);
            if (!t) {
                t = apr_palloc(c->neg_pool, sizeof(*t));
                apr_hash_set(c->unknown, apr_pstrdup(c->neg_pool, id), APR_HASH_KEY_STRING, t);
            }
            *t = now;
        }
    }
    apr_thread_mutex_unlock(c->mutex);
}

/* 1 when id was found unknown less than neg_ttl ago, or a snapshot of all subscriptions
 * confirmed at or after `since` did not hold it (positive entries are looked at first). An
 * older snapshot that lacks id answers 1 and sets *stale when stale is given (the caller then
 * waits for a newer one, cache_await); without stale it is not trusted. */
static int unknown_get(rmsync_notif_cache_t *c, const char *id, apr_time_t since, int *stale)
{
    const apr_time_t *t;
    int hit = 0;

    apr_thread_mutex_lock(c->mutex);
    if (c->all_at && apr_time_now() - c->all_at < c->all_ttl
        && (!c->subs || !apr_hash_get(c->subs, id, APR_HASH_KEY_STRING))
        && (c->all_at >= since || (stale && c->refresher))) {
        hit = 1;
        if (c->all_at < since) {
            *stale = 1;
        }
    }
    else if (c->neg_ttl > 0 && c->unknown
        && (t = apr_hash_get(c->unknown, id, APR_HASH_KEY_STRING)) != NULL) {
        hit = apr_time_now() - *t < c->neg_ttl;
    }
    apr_thread_mutex_unlock(c->mutex);
    return hit;
}

void rmsync_notif_cache_set_refresher(rmsync_notif_cache_t *c, void (*fn)(void *), void *baton)
{
    apr_thread_mutex_lock(c->mutex);
    c->refresher = fn;
    c->refresher_baton = baton;
    apr_thread_mutex_unlock(c->mutex);
}

int rmsync_notif_cache_wants_fresh(rmsync_notif_cache_t *c)
{
    int want;

    apr_thread_mutex_lock(c->mutex);
    want = c->want_fresh;
    apr_thread_mutex_unlock(c->mutex);
    return want;
}

/* 1 when a refresher could give a snapshot but none is valid now (cold or quiet process).
 * A table too large for a snapshot (the last full read did not fit) never gets one. */
static int cache_cold(rmsync_notif_cache_t *c)
{
    int cold;

    apr_thread_mutex_lock(c->mutex);
    cold = c->refresher && (!c->all_at || apr_time_now() - c->all_at >= c->all_ttl)
           && !(c->all_full_at && c->all_count > CACHE_SNAPSHOT_MAX);
    apr_thread_mutex_unlock(c->mutex);
    return cold;
}

/* Wait (until deadline) for a snapshot confirmed at or after `since`: 1 when there is one. */
static int cache_await(rmsync_notif_cache_t *c, apr_time_t since, apr_time_t deadline)
{
    void (*fn)(void *);
    void *baton;
    apr_time_t now;
    int ok;

    apr_thread_mutex_lock(c->mutex);
    c->want_fresh = 1;
    fn = c->refresher;
    baton = c->refresher_baton;
    apr_thread_mutex_unlock(c->mutex);
    if (fn) {
        fn(baton);
    }
    apr_thread_mutex_lock(c->mutex);
    while (c->all_at < since && (now = apr_time_now()) < deadline) {
        c->want_fresh = 1;
        apr_thread_cond_timedwait(c->fresh, c->mutex, deadline - now);
    }
    ok = c->all_at >= since;
    apr_thread_mutex_unlock(c->mutex);
    return ok;
}

/* A turn to run a subscription lookup (at most max_lookups at once): 1 when taken; else 0
 * after one wait (until a lookup finished or the deadline): the caller looks at the cache
 * again (the lookup that finished may have brought its subscriptions: a cold burst for one
 * subscription costs one lookup, not one per request) and tries again until the deadline. */
static int lookup_try(rmsync_notif_cache_t *c, apr_time_t deadline)
{
    int ok = 0;

    apr_thread_mutex_lock(c->mutex);
    if (c->max_lookups && c->lookups >= c->max_lookups) {
        apr_interval_time_t left = deadline - apr_time_now();
        if (left > 0) {
            apr_thread_cond_timedwait(c->lookup_done, c->mutex, left);
        }
    }
    if (!c->max_lookups || c->lookups < c->max_lookups) {
        c->lookups++;
        ok = 1;
    }
    apr_thread_mutex_unlock(c->mutex);
    return ok;
}

static void lookup_leave(rmsync_notif_cache_t *c)
{
    apr_thread_mutex_lock(c->mutex);
    c->lookups--;
    apr_thread_cond_signal(c->lookup_done);
    apr_thread_mutex_unlock(c->mutex);
}

apr_status_t rmsync_notif_cache_refresh(rmsync_notif_cache_t *c, rmsync_db_t *db, apr_pool_t *p,
                                        apr_interval_time_t valid)
{
    rmsync_db_result_t *res = NULL;
    apr_time_t now = apr_time_now();
    const char *mark;
    apr_status_t rv;
    int i, same;

    /* The mark is read before the rows, so a change between the two shows at the next call.
     * Unchanged (and the cache still holds the rows): the snapshot stays complete, no reload;
     * the rows are read in full at least every `valid` anyway. */
    rv = rmsync_db_exec(db, p, "webhook_subs_mark", RMSYNC_DB_NOPARAMS, &res);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    mark = res->nrows == 1 ? rmsync_db_value(res, 0, 0) : NULL;
    apr_thread_mutex_lock(c->mutex);
    same = mark && c->all_at && !strcmp(mark, c->all_mark) && now - c->all_full_at < valid
           && c->subs && (int)apr_hash_count(c->subs) >= c->all_count;
    if (same) {
        c->all_at = now;
        c->want_fresh = 0;
        apr_thread_cond_broadcast(c->fresh);
    }
    apr_thread_mutex_unlock(c->mutex);
    if (same) {
        return APR_SUCCESS;
    }
    rv = rmsync_db_exec(db, p, "webhook_subs_all", RMSYNC_DB_NOPARAMS, &res);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    for (i = 0; i < res->nrows && res->nrows <= CACHE_SNAPSHOT_MAX; i++) {
        sub_info_t si;
        const char *id = rmsync_db_value(res, i, 0);
        si.client_state = rmsync_db_value(res, i, 1);
        if (id && si.client_state) {
            cache_put(c, id, &si, now);
        }
    }
    apr_thread_mutex_lock(c->mutex);
    /* complete only when it fitted (and the positive cache was not dropped while filling) */
    c->all_at = res->nrows <= CACHE_SNAPSHOT_MAX && c->subs
                && (int)apr_hash_count(c->subs) >= res->nrows ? now : 0;
    c->all_ttl = valid;
    c->all_full_at = now;
    c->all_count = res->nrows;
    apr_cpystrn(c->all_mark, mark ? mark : "", sizeof(c->all_mark));
    c->want_fresh = 0;
    apr_thread_cond_broadcast(c->fresh);
    apr_thread_mutex_unlock(c->mutex);
    return APR_SUCCESS;
}

static apr_status_t db_status(apr_status_t rv)
{
    /* Anything but success means "not stored": the handler answers 503 and Graph retries. */
    return rv == APR_SUCCESS ? APR_SUCCESS : RMSYNC_QUEUE_EDB;
}

/* Read the subscriptions of ids (an array of const char *) from the database into subs (and
 * the cache); ids not found are removed from subs and the cache. */
static apr_status_t lookup_subscriptions(apr_hash_t *subs, rmsync_notif_cache_t *cache,
                                         rmsync_db_t *db, apr_pool_t *p,
                                         const apr_array_header_t *ids)
{
    cJSON *arr = rmsync_json_bind(p, cJSON_CreateArray());
    rmsync_db_result_t *res = NULL;
    apr_time_t now = apr_time_now();
    const char *json;
    apr_status_t rv;
    int i;

    if (!arr) {
        return APR_ENOMEM;
    }
    for (i = 0; i < ids->nelts; i++) {
        const char *id = RMSYNC_ARRAY_IDX(ids, i, const char *);
        cJSON_AddItemToArray(arr, cJSON_CreateString(id));
        apr_hash_set(subs, id, APR_HASH_KEY_STRING, NULL);
    }
    json = rmsync_json_print(p, arr);
    if (!json) {
        return APR_ENOMEM;
    }
    rv = rmsync_db_exec(db, p, "webhook_subs_lookup", RMSYNC_DB_PARAMS(json), &res);
    if (rv != APR_SUCCESS) {
        if (!RMSYNC_DB_IS_DOWN(rv)) {
            rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00601) "webhook: subscription lookup "
                       "failed: [%s] %s", rmsync_db_sqlstate(db), rmsync_db_errmsg(db));
        }
        return db_status(rv);
    }
    for (i = 0; i < res->nrows; i++) {
        sub_info_t *si = apr_pcalloc(p, sizeof(*si));
        const char *id = rmsync_db_value(res, i, 0);
        si->client_state = rmsync_db_value(res, i, 1);
        if (id && si->client_state) {
            apr_hash_set(subs, id, APR_HASH_KEY_STRING, si);
            if (cache) {
                cache_put(cache, id, si, now);
            }
        }
    }
    if (cache) {
        for (i = 0; i < ids->nelts; i++) {
            const char *id = RMSYNC_ARRAY_IDX(ids, i, const char *);
            if (!apr_hash_get(subs, id, APR_HASH_KEY_STRING)) {
                cache_forget(cache, id);
                unknown_put(cache, id, now);
            }
        }
    }
    return APR_SUCCESS;
}

/* A clientState against a subscription's secret: the length of a random base64url secret is
 * not secret (checked first, plainly), its bytes are (rmsync_ct_equals). Missing or empty never
 * matches. */
static int secret_matches(const char *a, const char *b)
{
    apr_size_t la, lb;

    if (!a || !b) {
        return 0;
    }
    la = strlen(a);
    lb = strlen(b);
    if (la != lb || la == 0) {
        return 0;
    }
    return rmsync_ct_equals(a, b, la);
}

/* The subscription of every item from the cache when fresh and the item's clientState matches
 * it; the others (a mismatch against a cached secret included) are listed in *pask for one
 * database query (lookup_subscriptions) before any item is refused. */
static void resolve_cached(apr_hash_t **psubs, apr_array_header_t **pask,
                           rmsync_notif_cache_t *cache, apr_pool_t *p,
                           const apr_array_header_t *items, apr_time_t since, int *stale)
{
    apr_hash_t *subs = apr_hash_make(p), *asked = apr_hash_make(p);
    apr_array_header_t *ask = apr_array_make(p, 4, sizeof(const char *));
    int i;

    for (i = 0; i < items->nelts; i++) {
        const rmsync_notif_item_t *it = &RMSYNC_ARRAY_IDX(items, i, rmsync_notif_item_t);
        const char *id = it->subscription_id;
        sub_info_t *si;

        if (apr_hash_get(asked, id, APR_HASH_KEY_STRING)) {
            continue;
        }
        si = apr_hash_get(subs, id, APR_HASH_KEY_STRING);
        if (!si && cache && (si = cache_get(cache, p, id, 0)) != NULL) {
            apr_hash_set(subs, id, APR_HASH_KEY_STRING, si);
        }
        if (!si && cache && unknown_get(cache, id, since, stale)) {
            apr_hash_set(asked, id, APR_HASH_KEY_STRING, id);   /* unknown: no query */
            continue;
        }
        if (!si || !secret_matches(it->client_state, si->client_state)) {
            apr_hash_set(subs, id, APR_HASH_KEY_STRING, NULL);
            apr_hash_set(asked, id, APR_HASH_KEY_STRING, id);
            APR_ARRAY_PUSH(ask, const char *) = id;
        }
    }
    *psubs = subs;
    *pask = ask;
}

/* Lookups saturated: every item whose subscription is not resolved yet must match a cached
 * secret up to CACHE_STALE_MAX old (the storing statement re-checks that it still exists).
 * 1 when all did, else 0 (nothing can be decided without the database). */
static int resolve_stale(apr_hash_t *subs, rmsync_notif_cache_t *cache, apr_pool_t *p,
                         const apr_array_header_t *items)
{
    int i;

    for (i = 0; i < items->nelts; i++) {
        const rmsync_notif_item_t *it = &RMSYNC_ARRAY_IDX(items, i, rmsync_notif_item_t);
        sub_info_t *si = apr_hash_get(subs, it->subscription_id, APR_HASH_KEY_STRING);
        if (si || unknown_get(cache, it->subscription_id, 0, NULL)) {
            continue;
        }
        si = cache_get(cache, p, it->subscription_id, CACHE_STALE_MAX);
        if (!si || !secret_matches(it->client_state, si->client_state)) {
            return 0;
        }
        apr_hash_set(subs, it->subscription_id, APR_HASH_KEY_STRING, si);
    }
    return 1;
}

/* The items whose clientState matches their subscription's, into good (room for every item);
 * the others counted in result. Returns the number of good items. */
static int classify(rmsync_notif_result_t *result, const rmsync_notif_item_t **good,
                    int *pdeletions, apr_hash_t *subs, const apr_array_header_t *items)
{
    int i, ngood = 0, deletions = 0;

    for (i = 0; i < items->nelts; i++) {
        const rmsync_notif_item_t *it = &RMSYNC_ARRAY_IDX(items, i, rmsync_notif_item_t);
        const sub_info_t *si = apr_hash_get(subs, it->subscription_id, APR_HASH_KEY_STRING);

        if (!si) {
            result->unknown_subscription++;
        }
        else if (!secret_matches(it->client_state, si->client_state)) {
            result->bad_client_state++;
        }
        else {
            deletions += it->change_type && !strcmp(it->change_type, "deleted");
            good[ngood++] = it;
        }
    }
    *pdeletions = deletions;
    return ngood;
}

static const char *kind_name(const rmsync_notif_item_t *it)
{
    return it->kind == RMSYNC_NOTIF_LIFECYCLE ? "lifecycle" : "change";
}

/* One row of the batch statements' parameter (r >= 0: the request's index in a group),
 * written as JSON text into the pool: the intake builds no cJSON tree (no malloc per node in
 * the worker processes). */
static void add_row(rmsync_sb_t *sb, apr_pool_t *p, const rmsync_notif_item_t *it, int r,
                    int first)
{
    rmsync_sb_addv(sb, first ? "{" : ",{", NULL);
    if (r >= 0) {
        rmsync_sb_addv(sb, "\"r\":", apr_itoa(p, r), ",", NULL);
    }
    rmsync_sb_addv(sb, "\"sub\":", rmsync_json_quote(p, it->subscription_id),
                   ",\"kind\":", rmsync_json_quote(p, kind_name(it)),
                   ",\"ct\":", rmsync_json_quote(p, it->change_type),
                   ",\"le\":", rmsync_json_quote(p, it->lifecycle_event),
                   ",\"res\":", rmsync_json_quote(p, it->resource),
                   ",\"ev\":", rmsync_json_quote(p, it->event_id), "}", NULL);
}

static const char *rows_json(apr_pool_t *p, const rmsync_notif_item_t *const *good, int n)
{
    rmsync_sb_t *sb = rmsync_sb_make(p);
    int i;

    rmsync_sb_add(sb, "[");
    for (i = 0; i < n; i++) {
        add_row(sb, p, good[i], -1, i == 0);
    }
    rmsync_sb_add(sb, "]");
    return rmsync_sb_join(sb);
}

/* Store the good items (their subscriptions checked) in one statement on db. */
static apr_status_t store_good(rmsync_notif_result_t *result, rmsync_db_t *db, apr_pool_t *p,
                               const rmsync_notif_item_t *const *good, int ngood, int deletions,
                               rmsync_notif_cache_t *cache)
{
    rmsync_db_result_t *res = NULL;
    const char *json, *v, *stmt;
    apr_status_t rv;
    int i, items;

    if (ngood == 1 && !deletions) {
        const rmsync_notif_item_t *one = good[0];
        stmt = "webhook_store1";
        rv = rmsync_db_exec(db, p, stmt,
                            RMSYNC_DB_PARAMS(one->subscription_id, kind_name(one), one->change_type,
                                             one->lifecycle_event, one->resource, one->event_id),
                            &res);
        if (rv == APR_SUCCESS && res->nrows == 1) {
            result->stored = 1;
            return APR_SUCCESS;
        }
        if (rv == APR_SUCCESS && res->nrows == 0) {
            /* coalesced with a pending twin, or the subscription was deleted meanwhile */
            rv = rmsync_db_exec(db, p, "webhook_sub_exists", RMSYNC_DB_PARAMS(one->subscription_id),
                                &res);
            if (rv == APR_SUCCESS) {
                if (res->nrows > 0) {
                    result->coalesced = 1;
                }
                else {
                    result->unknown_subscription++;
                    if (cache) {
                        cache_forget(cache, one->subscription_id);
                    }
                }
                return APR_SUCCESS;
            }
        }
        if (rv == APR_SUCCESS) {
            rv = RMSYNC_QUEUE_EDB;      /* more than one row: cannot happen */
        }
        if (!RMSYNC_DB_IS_DOWN(rv)) {
            rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00602) "webhook: storing 1 notification "
                       "failed: [%s] %s", rmsync_db_sqlstate(db), rmsync_db_errmsg(db));
        }
        return RMSYNC_QUEUE_EDB;
    }
    else {
        stmt = deletions ? "webhook_store_del" : "webhook_store";
        if (!(json = rows_json(p, good, ngood))) {
            return APR_ENOMEM;
        }
        rv = rmsync_db_exec(db, p, stmt, RMSYNC_DB_PARAMS(json), &res);
    }
    if (rv != APR_SUCCESS || res->nrows != 1) {
        if (rv != APR_SUCCESS && !RMSYNC_DB_IS_DOWN(rv)) {
            rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00600) "webhook: storing %d notification(s) "
                       "failed: [%s] %s", ngood, rmsync_db_sqlstate(db), rmsync_db_errmsg(db));
        }
        return RMSYNC_QUEUE_EDB;
    }
    v = rmsync_db_value(res, 0, 0);
    result->stored = v ? atoi(v) : 0;
    v = rmsync_db_value(res, 0, 1);
    items = v ? atoi(v) : 0;
    result->coalesced = items - result->stored;
    /* Items whose subscription was deleted since it was cached: nothing stored, not ours. */
    if (items < ngood) {
        result->unknown_subscription += ngood - items;
        if (cache) {
            for (i = 0; i < ngood; i++) {
                cache_forget(cache, good[i]->subscription_id);
            }
        }
    }
    return APR_SUCCESS;
}

/* ---- group intake ------------------------------------------------------------------------- */

/* One request waiting in (or led through) a group. Lives on its thread's stack: the thread
 * waits until done. The leader writes the results, then sets done under the mutex. */
typedef struct group_member_t {
    struct group_member_t *next;
    const rmsync_notif_item_t *const *good;
    int ngood;
    int done;
    int solo;                       /* the shared statement failed: store alone */
    apr_status_t rv;
    int items;                      /* good items whose subscription still existed */
    int stored;                     /* of them, new rows (the group's count, handed out) */
} group_member_t;

struct rmsync_notif_group_t {
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *cond;        /* broadcast when a statement finished */
    group_member_t *head, *tail;    /* waiting, in arrival order */
    int leading;                    /* a statement of this group is running */
    int max_items;
};

apr_status_t rmsync_notif_group_create(rmsync_notif_group_t **pgroup, apr_pool_t *p,
                                       int max_items)
{
    rmsync_notif_group_t *g = apr_pcalloc(p, sizeof(*g));
    apr_status_t rv;

    *pgroup = NULL;
    g->max_items = max_items > 0 ? max_items : 1;
    if ((rv = apr_thread_mutex_create(&g->mutex, APR_THREAD_MUTEX_DEFAULT, p)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&g->cond, p)) != APR_SUCCESS) {
        return rv;
    }
    *pgroup = g;
    return APR_SUCCESS;
}

/* Hand out the group's new rows to its requests (stored + coalesced = items for each; which
 * request's item was the new row cannot be told apart, and only the sum is counted). */
static void share_stored(group_member_t *first, int n, int stored)
{
    group_member_t *m;
    int i;

    for (m = first, i = 0; i < n; m = m->next, i++) {
        m->stored = stored < m->items ? stored : m->items;
        stored -= m->stored;
    }
}

/* The leader's statement for the n requests from first (called without the mutex). */
static void group_store(group_member_t *first, int n, apr_pool_t *p,
                        rmsync_notif_cache_t *cache, rmsync_notif_db_get_fn *get,
                        rmsync_notif_db_release_fn *release, void *baton)
{
    rmsync_db_result_t *res = NULL;
    rmsync_db_t *db = NULL;
    rmsync_sb_t *sb = rmsync_sb_make(p);
    group_member_t *m, **members;
    apr_status_t rv;
    int i, k, stored = 0, any = 0;

    if ((rv = get(&db, baton)) != APR_SUCCESS) {
        for (m = first, i = 0; i < n; m = m->next, i++) {
            m->rv = RMSYNC_QUEUE_EDB;
        }
        return;
    }
    if (n == 1) {
        /* alone: the request's own statement (one item: the plain INSERT) */
        rmsync_notif_result_t r;
        memset(&r, 0, sizeof(r));
        first->rv = store_good(&r, db, p, first->good, first->ngood, 0, cache);
        first->items = r.stored + r.coalesced;
        first->stored = r.stored;
        release(db, baton);
        return;
    }
    members = apr_palloc(p, sizeof(*members) * (apr_size_t)n);
    rmsync_sb_add(sb, "[");
    for (m = first, i = 0; i < n; m = m->next, i++) {
        members[i] = m;
        for (k = 0; k < m->ngood; k++) {
            add_row(sb, p, m->good[k], i, !any++);
        }
    }
    rmsync_sb_add(sb, "]");
    rv = rmsync_db_exec(db, p, "webhook_store_group", RMSYNC_DB_PARAMS(rmsync_sb_join(sb)), &res);
    if (rv != APR_SUCCESS) {
        int down = RMSYNC_DB_IS_DOWN(rv);
        if (!down) {
            rmsync_log(RMSYNC_LOG_WARNING, rv, RMSYNC_LOGNO(00603) "webhook: storing the "
                       "notifications of %d requests together failed ([%s] %s): each is "
                       "stored alone", n, rmsync_db_sqlstate(db), rmsync_db_errmsg(db));
        }
        release(db, baton);
        for (m = first, i = 0; i < n; m = m->next, i++) {
            m->solo = !down;
            m->rv = down ? RMSYNC_QUEUE_EDB : APR_SUCCESS;
        }
        return;
    }
    release(db, baton);
    for (i = 0; i < res->nrows; i++) {
        const char *r = rmsync_db_value(res, i, 0), *c = rmsync_db_value(res, i, 1);
        const char *st = rmsync_db_value(res, i, 2);
        int idx = r ? atoi(r) : -1;
        stored = st ? atoi(st) : 0;
        if (idx >= 0 && idx < n) {
            members[idx]->items = c ? atoi(c) : 0;
        }
    }
    share_stored(first, n, stored);
}

apr_status_t rmsync_notif_store(rmsync_notif_result_t *result, rmsync_notif_group_t *g,
                                apr_pool_t *p, const rmsync_notif_batch_t *batch,
                                rmsync_notif_cache_t *cache, rmsync_notif_db_get_fn *get,
                                rmsync_notif_db_release_fn *release, void *baton,
                                int *pstatements)
{
    apr_array_header_t *ask;
    apr_hash_t *subs;
    const rmsync_notif_item_t **good;
    group_member_t me;
    rmsync_db_t *db;
    apr_status_t rv;
    apr_time_t since;
    int i, ngood, deletions, ran = 0, stale = 0;

    *pstatements = 0;
    memset(result, 0, sizeof(*result));
    result->received = batch->items->nelts + batch->invalid;
    result->invalid = batch->invalid;
    if (batch->items->nelts == 0) {
        return APR_SUCCESS;
    }
    since = apr_time_now();
    resolve_cached(&subs, &ask, cache, p, batch->items, since, &stale);
    if (stale) {
        /* The snapshot that called an id unknown is older than this request: wait briefly for
         * one taken after it arrived. When none comes in time (the process is overloaded, most
         * likely by forged traffic) the older snapshot decides: asking the database for every
         * forged id is what the snapshot is there to prevent. */
        (void)cache_await(cache, since, since + CACHE_FRESH_WAIT);
        since = 0;
        resolve_cached(&subs, &ask, cache, p, batch->items, since, NULL);
    }
    else if (ask->nelts && cache && cache_cold(cache)
             && cache_await(cache, since, since + CACHE_COLD_WAIT)) {
        /* no snapshot yet: one for the process (the refresher's) rather than a lookup per
         * request; ids it lacks are unknown (it was taken after this request arrived) */
        resolve_cached(&subs, &ask, cache, p, batch->items, since, NULL);
    }
    if (ask->nelts && cache) {
        apr_time_t deadline = apr_time_now() + cache->lookup_wait;
        int turn;
        while (!(turn = lookup_try(cache, deadline)) && apr_time_now() < deadline) {
            resolve_cached(&subs, &ask, cache, p, batch->items, since, NULL);
            if (!ask->nelts) {
                break;
            }
        }
        if (!turn && ask->nelts && !resolve_stale(subs, cache, p, batch->items)) {
            /* saturated (a flood of forged ids, usually) and nothing matches a recent secret */
            return RMSYNC_QUEUE_EBUSY;
        }
        if (turn && !ask->nelts) {
            lookup_leave(cache);
        }
        else if (turn) {
            if ((rv = get(&db, baton)) == APR_SUCCESS) {
                rv = lookup_subscriptions(subs, cache, db, p, ask);
                result->lookups = 1;
                release(db, baton);
            }
            lookup_leave(cache);
            if (rv != APR_SUCCESS) {
                return db_status(rv);
            }
        }
    }
    else if (ask->nelts) {
        if ((rv = get(&db, baton)) == APR_SUCCESS) {
            rv = lookup_subscriptions(subs, cache, db, p, ask);
            result->lookups = 1;
            release(db, baton);
        }
        if (rv != APR_SUCCESS) {
            return db_status(rv);
        }
    }
    good = apr_palloc(p, sizeof(*good) * (apr_size_t)batch->items->nelts);
    ngood = classify(result, good, &deletions, subs, batch->items);
    if (ngood == 0) {
        return APR_SUCCESS;
    }
    if (deletions || !g) {
        if ((rv = get(&db, baton)) != APR_SUCCESS) {
            return RMSYNC_QUEUE_EDB;
        }
        rv = store_good(result, db, p, good, ngood, deletions, cache);
        release(db, baton);
        *pstatements = 1;
        return rv;
    }

    memset(&me, 0, sizeof(me));
    me.good = good;
    me.ngood = ngood;
    apr_thread_mutex_lock(g->mutex);
    if (g->tail) {
        g->tail->next = &me;
    }
    else {
        g->head = &me;
    }
    g->tail = &me;
    while (!me.done) {
        group_member_t *first, *last, *m;
        int n, items;
        if (g->leading) {
            apr_thread_cond_wait(g->cond, g->mutex);
            continue;
        }
        /* Lead: take whole requests from the head, up to max_items items (at least one). */
        g->leading = 1;
        first = last = g->head;
        n = 1;
        items = first->ngood;
        while (last->next && items + last->next->ngood <= g->max_items) {
            last = last->next;
            items += last->ngood;
            n++;
        }
        g->head = last->next;
        if (!g->head) {
            g->tail = NULL;
        }
        last->next = NULL;
        apr_thread_mutex_unlock(g->mutex);

        group_store(first, n, p, cache, get, release, baton);
        ran = 1;

        apr_thread_mutex_lock(g->mutex);
        for (m = first; m; m = m->next) {
            m->done = 1;
        }
        g->leading = 0;
        apr_thread_cond_broadcast(g->cond);
    }
    apr_thread_mutex_unlock(g->mutex);

    *pstatements = ran;
    if (me.solo) {
        if ((rv = get(&db, baton)) != APR_SUCCESS) {
            return RMSYNC_QUEUE_EDB;
        }
        rv = store_good(result, db, p, good, ngood, 0, cache);
        release(db, baton);
        *pstatements = 1;
        return rv;
    }
    if (me.rv != APR_SUCCESS) {
        return RMSYNC_QUEUE_EDB;
    }
    result->stored = me.stored;
    result->coalesced = me.items - me.stored;
    /* Items whose subscription was deleted since it was cached: nothing stored, not ours. */
    if (me.items < ngood) {
        result->unknown_subscription += ngood - me.items;
        if (cache) {
            for (i = 0; i < ngood; i++) {
                cache_forget(cache, good[i]->subscription_id);
            }
        }
    }
    return APR_SUCCESS;
}
