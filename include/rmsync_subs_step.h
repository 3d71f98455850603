/* mod_rmsync: the runner's job step "subscriptions" and lifecycle-notification handling
 * (core/rmsync_subs_step.c, run by the sync runner): the engine-facing side of rmsync_subs.h.
 * No httpd headers.
 */
#ifndef RMSYNC_SUBS_STEP_H
#define RMSYNC_SUBS_STEP_H

#include <apr_errno.h>

struct rmsync_rep_ctx_t;

/* Job step "subscriptions" (flag RMSYNC_STEP_INACTIVE_TOO, pending_sql rmsync_subs_pending_sql):
 * create / renew the representative's subscription (rmsync_subs.h), or delete it when the
 * representative stopped syncing. A new subscription asks for a delta pass in the same job, so
 * run this step before "delta". */
apr_status_t rmsync_subs_step(struct rmsync_rep_ctx_t *ctx);
extern const char rmsync_subs_pending_sql[];

/* A lifecycle notification the "queue" step claimed (event reauthorizationRequired,
 * subscriptionRemoved or missed, for subscription sub_id): renew / recreate the subscription
 * and ask for a delta pass where changes may have been missed; logged in the sync log. */
apr_status_t rmsync_subs_lifecycle(struct rmsync_rep_ctx_t *ctx, const char *event,
                                   const char *sub_id);

#endif /* RMSYNC_SUBS_STEP_H */
