/* mod_rmsync: Graph subscriptions, one per active representative (runner side).
 *
 * A subscription on users/{id}/events (created,updated,deleted) is created with a fresh random
 * clientState (32 random bytes, base64url) stored in rmsync.subscription together with Graph's
 * id and expiry; renewed at half its lifetime; recreated when Graph says it is gone (404 on
 * renew, lifecycle subscriptionRemoved); deleted at Graph and in the DB when the representative
 * stops syncing. Each creation asks for a delta pass: notifications for changes made while no
 * subscription was live are never sent, and delta catches them.
 *
 * Graph refuses expirations beyond its maximum lifetime (400 ExtensionError "Subscription
 * expiration can only be N minutes in the future."): we retry once with that maximum, and later
 * renewals keep the lifetime Graph granted. No httpd headers.
 */
#ifndef RMSYNC_SUBS_H
#define RMSYNC_SUBS_H

#include <apr_pools.h>
#include <apr_time.h>
#include "rmsync_settings.h"
#include "rmsync_db.h"
#include "rmsync_graph.h"

struct rmsync_synclog_t;

/* What the subscription code needs about one representative (filled by the engine step). */
typedef struct rmsync_subs_env_t {
    const rmsync_settings_t *settings;
    rmsync_graph_t *graph;
    rmsync_db_t *db;                  /* the worker's connection, no transaction open */
    struct rmsync_synclog_t *synclog; /* may be NULL */
    const char *rep_id;               /* CRM representative id */
    const char *user_id;              /* Graph user id (or UPN) of the mailbox */
    apr_pool_t *pool;                 /* per-step pool */
    const char *calendar_id;          /* issue 14: the sync calendar's id, NULL = main */
} rmsync_subs_env_t;

/* Outcome flags of one call (OR-ed into *out by the functions below). */
#define RMSYNC_SUBS_CREATED      0x01   /* a new subscription was made: run a delta pass */
#define RMSYNC_SUBS_RENEWED      0x02
#define RMSYNC_SUBS_DELETED      0x04

/* Register the prepared statements (once per process; cheap to repeat). */
apr_status_t rmsync_subs_init(void);

/* Make sure the representative has a live subscription: create it when missing, renew it when
 * half its lifetime has passed, recreate it when Graph no longer knows it. *next_due (may be
 * NULL) gets the time the next renewal is due (0 when unknown). Does nothing (APR_SUCCESS) when
 * RMSyncNotificationURL is not set. */
apr_status_t rmsync_subs_ensure(rmsync_subs_env_t *env, int *out, apr_time_t *next_due);

/* Lifecycle reauthorizationRequired: renew now (renewing reauthorizes), recreate on 404. */
apr_status_t rmsync_subs_reauthorize(rmsync_subs_env_t *env, const char *subscription_id,
                                     int *out);

/* Lifecycle subscriptionRemoved: forget it and create a new one (the caller runs a delta). */
apr_status_t rmsync_subs_recreate(rmsync_subs_env_t *env, const char *subscription_id, int *out);

/* The representative no longer syncs (sync_active false, grant removed): DELETE its
 * subscription at Graph (404 = already gone), then forget it. */
apr_status_t rmsync_subs_remove(rmsync_subs_env_t *env, int *out);

/* base64url (no padding) of `nbytes` random bytes from apr_generate_random_bytes, in p. */
apr_status_t rmsync_subs_new_secret(apr_pool_t *p, apr_size_t nbytes, const char **secret);

/* The maximum lifetime in minutes from Graph's ExtensionError message, or 0 when absent. */
double rmsync_subs_parse_max_minutes(const char *message);

#endif /* RMSYNC_SUBS_H */
