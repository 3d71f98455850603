/* mod_rmsync: the runner's job step "delta" (core/rmsync_delta.c, run by the sync runner): delta
 * passes and initial sync rounds with reconcile.
 *
 * A pass reads users/{id}/calendarView/delta over the window (RMSyncInitialSyncFrom .. now +
 * RMSyncSyncWindowDays), following nextLink. Each page is applied and the in-progress cursor
 * (rep_state.round_next_link) stored in ONE transaction, so a runner killed at any point resumes
 * where it was and applies nothing twice; the deltaLink is stored only after a complete round.
 * Graph work of a page (GET to confirm an "@removed" of a linked event, GET of a sparse row, the
 * unlinked-event hooks) is done before that transaction, never inside it.
 *
 * An initial round (no deltaLink yet, an admin's Initial Sync, 410 SyncStateNotFound / 400
 * InvalidDeltaToken, or the window's end rolled over) drops the deltaLink, marks every linked
 * event it sees (event_link.seen_at), and then reconciles: linked events not seen are confirmed
 * with a GET (404: deletion; found: its state is applied). Deletions go through the mass-delete
 * circuit breaker (rmsync_apply_flush_deletions).
 *
 * rep_state.round_kind: NULL idle; 'delta'/'initial' a round in progress (round_next_link is the
 * cursor once its first page is stored); 'initial' with a deltaLink and no cursor: the round
 * is complete and its reconcile pending.
 */
#ifndef RMSYNC_DELTA_H
#define RMSYNC_DELTA_H

#include <apr_errno.h>
#include <apr_pools.h>

struct rmsync_rep_ctx_t;

/* Page size hint sent as Prefer: odata.maxpagesize. */
#define RMSYNC_DELTA_PAGE_SIZE 50
/* Loop guard: pages per round at most (a mailbox of 100k events at 50 per page fits). */
#define RMSYNC_DELTA_MAX_PAGES 5000

apr_status_t rmsync_delta_register(void);

/* A worker's page fetcher: a thread that fetches the next delta page of a round while the
 * worker writes the current one to PostgreSQL. Owned by the worker (made once, its own libcurl
 * handle keeps the connection); a pass uses it through ctx->fetcher, or fetches in its own
 * thread when that is NULL (tools, unit tests). */
typedef struct rmsync_delta_fetcher_t rmsync_delta_fetcher_t;
apr_status_t rmsync_delta_fetcher_create(rmsync_delta_fetcher_t **pf, apr_pool_t *pool);
/* Ends the thread (after the fetch in progress, which the runner's stop flag cuts short). */
void rmsync_delta_fetcher_destroy(rmsync_delta_fetcher_t *f);

/* Job step "delta": a pass when due (RMSyncSyncCycle since the last attempt), asked for
 * (ctx->want_delta / want_initial), or a round is in progress or its reconcile pending. */
apr_status_t rmsync_delta_step(struct rmsync_rep_ctx_t *ctx);

/* One pass now (initial: start a new initial round). */
apr_status_t rmsync_delta_pass(struct rmsync_rep_ctx_t *ctx, int initial);

/* An admin's Initial Sync request (the "requests" step, inside its claiming transaction):
 * start an initial round over the current window, durably, so the next "delta" step runs it. */
apr_status_t rmsync_delta_request_initial(struct rmsync_rep_ctx_t *ctx);

#endif /* RMSYNC_DELTA_H */
