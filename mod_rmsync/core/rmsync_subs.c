/* mod_rmsync, run by the sync runner: Graph subscriptions, one per active representative (see
 * rmsync_subs.h). */
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_encode.h>
#include <apr_general.h>
#include <apr_atomic.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_synclog.h"
#include "rmsync_subs.h"
#include "rmsync_http.h"

/* Renew when this share of the granted lifetime has passed (GRAPH.md 5.5: 50-75 %). */
#define RENEW_AT_SHARE      0.5
/* After a failed create / renew / delete, wait this long before the next try (the failure is in
 * the sync log with action 'subscription'; the scheduler's pending query reads the same). */
#define FAILURE_BACKOFF_S   60
#define SECRET_BYTES        32

static const rmsync_db_stmt_t subs_stmts[] = {
    { "subs_get",
      "SELECT s.subscription_id, s.client_state,"
      "       extract(epoch FROM s.expires_at)::float8 AS expires,"
      "       extract(epoch FROM coalesce(s.renewed_at, s.created_at))::float8 AS anchor,"
      "       EXISTS (SELECT 1 FROM rmsync.sync_log l"
      "                WHERE l.representative_id = $1::text AND l.action = 'subscription'"
      "                  AND l.level = 'error'"
      "                  AND l.at > now() - make_interval(secs => $2::int)) AS backoff"
      "  FROM (SELECT 1) AS one"
      "  LEFT JOIN rmsync.subscription s ON s.representative_id = $1::text", 2 },
    { "subs_put",
      "INSERT INTO rmsync.subscription (subscription_id, representative_id, client_state,"
      "                                 resource, expires_at, created_at, renewed_at)"
      " VALUES ($1, $2, $3, $4, to_timestamp($5::float8), to_timestamp($6::float8), NULL)"
      " ON CONFLICT (representative_id) DO UPDATE"
      "   SET subscription_id = EXCLUDED.subscription_id, client_state = EXCLUDED.client_state,"
      "       resource = EXCLUDED.resource, expires_at = EXCLUDED.expires_at,"
      "       created_at = EXCLUDED.created_at, renewed_at = NULL", 6 },
    { "subs_renewed",
      "UPDATE rmsync.subscription SET expires_at = to_timestamp($2::float8),"
      "       renewed_at = to_timestamp($3::float8)"
      " WHERE subscription_id = $1", 3 },
    { "subs_forget",
      "DELETE FROM rmsync.subscription WHERE subscription_id = $1", 1 },
    { "subs_of_rep",
      "SELECT subscription_id FROM rmsync.subscription WHERE representative_id = $1", 1 },
};

apr_status_t rmsync_subs_init(void)
{
    return rmsync_db_register(subs_stmts, (int)(sizeof(subs_stmts) / sizeof(subs_stmts[0])));
}

/* Graph's maximum lifetime learned from an ExtensionError (seconds; 0 = none learned). Shared by
 * the runner's worker threads, so later creations do not fail first. */
static volatile apr_uint32_t learned_max_s;

apr_status_t rmsync_subs_new_secret(apr_pool_t *p, apr_size_t nbytes, const char **secret)
{
    unsigned char buf[64];
    apr_status_t rv;

    if (nbytes == 0 || nbytes > sizeof(buf)) {
        return APR_EINVAL;
    }
    rv = apr_generate_random_bytes(buf, nbytes);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    *secret = apr_pencode_base64(p, (const char *)buf, (apr_ssize_t)nbytes,
                                 APR_ENCODE_BASE64URL, NULL);
    memset(buf, 0, sizeof(buf));
    return *secret ? APR_SUCCESS : APR_ENOMEM;
}

double rmsync_subs_parse_max_minutes(const char *message)
{
    static const char marker[] = "can only be ";
    const char *m;
    char *end;
    double v;

    if (!message || !(m = strstr(message, marker))) {
        return 0;
    }
    m += sizeof(marker) - 1;
    v = strtod(m, &end);
    if (end == m || v <= 0 || v > 100000 || strncmp(end, " minute", 7)) {
        return 0;
    }
    return v;
}

static double t2d(apr_time_t t)
{
    return (double)t / (double)APR_USEC_PER_SEC;
}

static apr_time_t d2t(const char *s)
{
    return s ? (apr_time_t)(strtod(s, NULL) * (double)APR_USEC_PER_SEC) : 0;
}

static const char *dstr(apr_pool_t *p, apr_time_t t)
{
    return apr_psprintf(p, "%.6f", t2d(t));
}

/* The lifetime to ask for: the configured one, but never more than Graph let us have. */
static apr_interval_time_t wanted_lifetime(const rmsync_subs_env_t *env)
{
    apr_interval_time_t want = apr_time_from_sec((apr_time_t)env->settings->subscription_minutes * 60);
    apr_uint32_t max = apr_atomic_read32(&learned_max_s);

    if (max && apr_time_from_sec(max) < want) {
        want = apr_time_from_sec(max);
    }
    return want;
}

/* An ExtensionError telling Graph's maximum: remember it (with a margin for clock and transit)
 * and say whether a retry with it makes sense. */
static int learn_max(const rmsync_graph_result_t *res, apr_interval_time_t asked)
{
    double m;
    apr_uint32_t s;

    if (res->status != RMSYNC_GRAPH_BADREQUEST) {
        return 0;
    }
    m = rmsync_subs_parse_max_minutes(res->error_message);
    if (m <= 0) {
        return 0;
    }
    s = (apr_uint32_t)(m * 60.0 * 0.95);
    if (s < 10) {
        s = 10;
    }
    if (apr_time_from_sec(s) >= asked) {
        return 0;
    }
    apr_atomic_set32(&learned_max_s, s);
    rmsync_log(RMSYNC_LOG_NOTICE, 0, "subscriptions: Graph allows at most %g minutes; using %u s",
               m, (unsigned)s);
    return 1;
}

static void log_failure(rmsync_subs_env_t *env, const char *what, apr_status_t rv,
                        const rmsync_graph_result_t *res)
{
    const char *why = res && res->error_code
        ? apr_psprintf(env->pool, "%s: %s", res->error_code,
                       res->error_message ? res->error_message : "")
        : rmsync_graph_strerror(env->pool, rv);

    if (rv == RMSYNC_HTTP_EABORTED) {
        /* the runner is stopping (graceful restart, service stop): nothing failed, the next
         * runner makes the call again */
        rmsync_log(RMSYNC_LOG_DEBUG, 0, "subscriptions: %s for representative %s abandoned: "
                   "stopping", what, env->rep_id ? env->rep_id : "-");
        return;
    }
    rmsync_log(RMSYNC_LOG_WARNING, 0, RMSYNC_LOGNO(00620) "subscriptions: %s for representative "
               "%s failed (HTTP %d): %s", what, env->rep_id ? env->rep_id : "-",
               res ? res->http_status : 0, why);
    if (env->synclog) {
        rmsync_synclog(env->synclog, env->db, RMSYNC_LOG_ERR, env->rep_id, 0, NULL, "subscription",
                       res ? res->request_id : NULL,
                       RMSYNC_LOGNO(00604) "%s failed (HTTP %d): %s; retried in %d s", what,
                       res ? res->http_status : 0, why, FAILURE_BACKOFF_S);
    }
}

static apr_status_t db_failed(rmsync_subs_env_t *env, apr_status_t rv, const char *what)
{
    rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00621) "subscriptions: %s for representative %s: "
               "database error [%s] %s", what, env->rep_id ? env->rep_id : "-",
               rmsync_db_sqlstate(env->db), rmsync_db_errmsg(env->db));
    return rv;
}

static apr_status_t create(rmsync_subs_env_t *env, int *out, apr_time_t *next_due)
{
    rmsync_graph_subscription_t *sub = NULL;
    rmsync_graph_result_t res;
    const char *secret = NULL;
    apr_interval_time_t life = wanted_lifetime(env);
    apr_time_t now;
    apr_status_t rv;
    int attempt;

    rv = rmsync_subs_new_secret(env->pool, SECRET_BYTES, &secret);
    if (rv != APR_SUCCESS) {
        rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00622) "subscriptions: no random bytes for a "
                   "clientState");
        return rv;
    }
    for (attempt = 0; attempt < 2; attempt++) {
        now = apr_time_now();
        memset(&res, 0, sizeof(res));
        rv = rmsync_graph_subscription_create_in(env->graph, env->pool, env->user_id,
                                                 env->calendar_id,
                                                 env->settings->notification_url,
                                              env->settings->lifecycle_url, secret, now + life,
                                              &sub, &res);
        if (rv == APR_SUCCESS || !learn_max(&res, life)) {
            break;
        }
        life = wanted_lifetime(env);
    }
    if (rv != APR_SUCCESS) {
        log_failure(env, "creating the subscription", rv, &res);
        return rv;
    }
    rv = rmsync_db_exec(env->db, env->pool, "subs_put",
                        RMSYNC_DB_PARAMS(sub->id, env->rep_id, secret, sub->resource,
                                         dstr(env->pool, sub->expiration),
                                         dstr(env->pool, now)), NULL);
    if (rv != APR_SUCCESS) {
        /* Graph has it but we could not store its secret: its notifications would all be
         * dropped. Delete it again (best effort) so the next try starts clean. */
        db_failed(env, rv, "storing the new subscription");
        rmsync_graph_subscription_delete(env->graph, env->pool, sub->id, NULL);
        return rv;
    }
    *out |= RMSYNC_SUBS_CREATED;
    if (next_due) {
        *next_due = now + (apr_interval_time_t)((double)(sub->expiration - now) * RENEW_AT_SHARE);
    }
    if (env->synclog) {
        rmsync_synclog(env->synclog, env->db, RMSYNC_LOG_INFO, env->rep_id, 0, NULL, "subscription",
                       res.request_id, "subscription %s created, expires in %d s", sub->id,
                       (int)apr_time_sec(sub->expiration - now));
    }
    return APR_SUCCESS;
}

static apr_status_t forget(rmsync_subs_env_t *env, const char *sub_id)
{
    apr_status_t rv = rmsync_db_exec(env->db, env->pool, "subs_forget",
                                     RMSYNC_DB_PARAMS(sub_id), NULL);
    return rv == APR_SUCCESS ? rv : db_failed(env, rv, "forgetting a subscription");
}

/* PATCH a new expiry; 404 -> forget + create. */
static apr_status_t renew(rmsync_subs_env_t *env, const char *sub_id, int *out,
                          apr_time_t *next_due)
{
    rmsync_graph_subscription_t *sub = NULL;
    rmsync_graph_result_t res;
    apr_interval_time_t life = wanted_lifetime(env);
    apr_time_t now;
    apr_status_t rv;
    int attempt;

    for (attempt = 0; attempt < 2; attempt++) {
        now = apr_time_now();
        memset(&res, 0, sizeof(res));
        rv = rmsync_graph_subscription_renew(env->graph, env->pool, sub_id, now + life, &sub, &res);
        if (rv == APR_SUCCESS || !learn_max(&res, life)) {
            break;
        }
        life = wanted_lifetime(env);
    }
    if (rv == RMSYNC_GRAPH_NOTFOUND) {
        rmsync_log(RMSYNC_LOG_INFO, 0, "subscriptions: %s of representative %s is gone at Graph; "
                   "creating a new one", sub_id, env->rep_id);
        if ((rv = forget(env, sub_id)) != APR_SUCCESS) {
            return rv;
        }
        return create(env, out, next_due);
    }
    if (rv != APR_SUCCESS) {
        log_failure(env, "renewing the subscription", rv, &res);
        return rv;
    }
    rv = rmsync_db_exec(env->db, env->pool, "subs_renewed",
                        RMSYNC_DB_PARAMS(sub_id, dstr(env->pool, sub->expiration),
                                         dstr(env->pool, now)), NULL);
    if (rv != APR_SUCCESS) {
        return db_failed(env, rv, "storing the renewal");
    }
    *out |= RMSYNC_SUBS_RENEWED;
    if (next_due) {
        *next_due = now + (apr_interval_time_t)((double)(sub->expiration - now) * RENEW_AT_SHARE);
    }
    rmsync_log(RMSYNC_LOG_DEBUG, 0, "subscriptions: renewed %s of representative %s for %d s",
               sub_id, env->rep_id, (int)apr_time_sec(sub->expiration - now));
    return APR_SUCCESS;
}

typedef struct {
    const char *id;          /* NULL: none */
    apr_time_t expires, anchor;
    int backoff;
} current_t;

static apr_status_t current(rmsync_subs_env_t *env, current_t *cur)
{
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;
    const char *b;

    memset(cur, 0, sizeof(*cur));
    rv = rmsync_db_exec(env->db, env->pool, "subs_get",
                        RMSYNC_DB_PARAMS(env->rep_id,
                                         apr_itoa(env->pool, FAILURE_BACKOFF_S)), &r);
    if (rv != APR_SUCCESS) {
        return db_failed(env, rv, "reading the subscription");
    }
    if (r->nrows == 1) {
        cur->id = rmsync_db_value(r, 0, 0);
        cur->expires = d2t(rmsync_db_value(r, 0, 2));
        cur->anchor = d2t(rmsync_db_value(r, 0, 3));
        b = rmsync_db_value(r, 0, 4);
        cur->backoff = b && *b == 't';
    }
    return APR_SUCCESS;
}

static int usable(const rmsync_subs_env_t *env)
{
    return env->settings && env->settings->notification_url && *env->settings->notification_url
           && env->user_id && *env->user_id;
}

/* The common start of every operation: *go is 1 when webhooks are configured for this
 * mailbox and *cur holds its current subscription (or none). */
static apr_status_t begin(rmsync_subs_env_t *env, current_t *cur, int *go)
{
    apr_status_t rv;

    *go = 0;
    if (!usable(env)) {
        return APR_SUCCESS;
    }
    rv = current(env, cur);
    *go = rv == APR_SUCCESS;
    return rv;
}

apr_status_t rmsync_subs_ensure(rmsync_subs_env_t *env, int *out, apr_time_t *next_due)
{
    current_t cur;
    apr_time_t now = apr_time_now(), due;
    apr_status_t rv;
    int go;

    if (next_due) {
        *next_due = 0;
    }
    if ((rv = begin(env, &cur, &go)) != APR_SUCCESS || !go) {
        return rv;
    }
    if (!cur.id) {
        return cur.backoff ? APR_SUCCESS : create(env, out, next_due);
    }
    if (cur.expires <= now) {
        /* Expired at Graph already: it cannot be renewed. */
        if ((rv = forget(env, cur.id)) != APR_SUCCESS) {
            return rv;
        }
        return create(env, out, next_due);
    }
    due = cur.anchor + (apr_interval_time_t)((double)(cur.expires - cur.anchor) * RENEW_AT_SHARE);
    if (now < due || cur.backoff) {
        if (next_due) {
            *next_due = due;
        }
        return APR_SUCCESS;
    }
    return renew(env, cur.id, out, next_due);
}

apr_status_t rmsync_subs_reauthorize(rmsync_subs_env_t *env, const char *subscription_id,
                                     int *out)
{
    current_t cur;
    apr_status_t rv;
    int go;

    if ((rv = begin(env, &cur, &go)) != APR_SUCCESS || !go) {
        return rv;
    }
    if (!cur.id) {
        return create(env, out, NULL);
    }
    if (subscription_id && strcmp(subscription_id, cur.id)) {
        return APR_SUCCESS;   /* about a subscription we already replaced */
    }
    return renew(env, cur.id, out, NULL);
}

apr_status_t rmsync_subs_recreate(rmsync_subs_env_t *env, const char *subscription_id, int *out)
{
    current_t cur;
    apr_status_t rv;
    int go;

    if ((rv = begin(env, &cur, &go)) != APR_SUCCESS || !go) {
        return rv;
    }
    if (cur.id && subscription_id && strcmp(subscription_id, cur.id)) {
        return APR_SUCCESS;   /* an older one was removed; the current one lives */
    }
    if (cur.id) {
        /* Graph removed it; a DELETE would 404, so only forget it. */
        if ((rv = forget(env, cur.id)) != APR_SUCCESS) {
            return rv;
        }
    }
    return create(env, out, NULL);
}

apr_status_t rmsync_subs_remove(rmsync_subs_env_t *env, int *out)
{
    rmsync_db_result_t *r = NULL;
    apr_status_t rv;
    int i;

    rv = rmsync_db_exec(env->db, env->pool, "subs_of_rep", RMSYNC_DB_PARAMS(env->rep_id), &r);
    if (rv != APR_SUCCESS) {
        return db_failed(env, rv, "reading the subscription");
    }
    for (i = 0; i < r->nrows; i++) {
        const char *id = rmsync_db_value(r, i, 0);
        rmsync_graph_result_t res;

        memset(&res, 0, sizeof(res));
        rv = rmsync_graph_subscription_delete(env->graph, env->pool, id, &res);
        if (rv != APR_SUCCESS && rv != RMSYNC_GRAPH_NOTFOUND) {
            log_failure(env, "deleting the subscription", rv, &res);
            return rv;
        }
        if ((rv = forget(env, id)) != APR_SUCCESS) {
            return rv;
        }
        *out |= RMSYNC_SUBS_DELETED;
        if (env->synclog) {
            rmsync_synclog(env->synclog, env->db, RMSYNC_LOG_INFO, env->rep_id, 0, NULL,
                           "subscription", res.request_id,
                           "subscription %s deleted: the representative no longer syncs", id);
        }
    }
    return APR_SUCCESS;
}
