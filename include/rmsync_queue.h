/* mod_rmsync: the runner's job step "queue" (core/rmsync_queue.c): processes the change
 * notifications the intake (rmsync_intake.h, Apache worker processes) stored in
 * rmsync.notification: claim pending rows, GET the event, hand it to the engine's apply
 * function, mark done; failures back off and retry. No httpd headers.
 */
#ifndef RMSYNC_QUEUE_H
#define RMSYNC_QUEUE_H

#include <apr_errno.h>

struct rmsync_rep_ctx_t;

/* Job step "queue" (engine step table; flag RMSYNC_STEP_INACTIVE_TOO, wake "notification",
 * pending_sql rmsync_queue_pending_sql): reclaim items a dead runner left 'processing', then
 * claim this representative's due items (FOR UPDATE SKIP LOCKED) in arrival order: change items
 * go to rmsync_apply_notification (GET + apply; 404 handled there), lifecycle items renew /
 * recreate the subscription and ask for a delta; done items are marked done, failures retried
 * with back-off (next_attempt_at) and logged, given up after a few attempts (delta catches up).
 * For a representative that no longer syncs its items are closed unprocessed. */
apr_status_t rmsync_queue_step(struct rmsync_rep_ctx_t *ctx);
extern const char rmsync_queue_pending_sql[];

#endif /* RMSYNC_QUEUE_H */
