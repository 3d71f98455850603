/* mod_rmsync: apply an Outlook event's state to its linked Business Activity (Outlook -> CRM).
 *
 * Rules (DESIGN.md section 3), linked events only (rmsync.event_link):
 *  - subject -> description, start/end (UTC) -> start_time/end_time;
 *  - attendees matched by e-mail (case-insensitive) to crm.person -> activity contacts, and to
 *    representatives -> activity representatives; the main representative never changes;
 *    unmatched attendees are ignored. The attendee set is applied when it changed since the
 *    last applied state (event_link.applied_attendees); with no baseline yet (a fresh link),
 *    matched attendees are only added, nothing is removed;
 *  - event deleted -> RMSyncDeletePolicy (delete | cancel | unlink), through the mass-delete
 *    circuit breaker; isCancelled -> RMSyncCancelPolicy (cancel | delete);
 *  - only what changed is written (field by field), all writes of one event in one transaction
 *    as SYNC_MASTER; the applied content hash and changeKey are stored in event_link, so the same
 *    Outlook state applied twice writes nothing and logs nothing the second time;
 *  - unlinked events never create or change activities (the engine hands them to the unlinked
 *    hooks, e.g. the transfer engineer's category rule).
 * Every change, deletion, skip and error is written to the sync log.
 */
#ifndef RMSYNC_APPLY_H
#define RMSYNC_APPLY_H

#include <apr_pools.h>
#include <apr_errno.h>
#include "rmsync_event.h"

struct rmsync_rep_ctx_t;

typedef enum {
    RMSYNC_APPLY_UNCHANGED = 0,  /* linked; same state as applied: nothing written */
    RMSYNC_APPLY_UPDATED,        /* linked; activity (or its contacts/representatives) updated */
    RMSYNC_APPLY_CANCELLED,      /* activity marked Cancelled */
    RMSYNC_APPLY_DELETED,        /* activity deleted */
    RMSYNC_APPLY_UNLINKED,       /* link dropped (delete policy unlink) */
    RMSYNC_APPLY_NOT_LINKED,     /* event not linked: nothing done here */
    RMSYNC_APPLY_PENDING_DELETE, /* deletion recorded, waits for the breaker check / approval */
    RMSYNC_APPLY_RECHECK,        /* 404 right after created/updated: left to the next delta */
    RMSYNC_APPLY_SKIPPED,        /* bad data or a refused write: logged, nothing changed */
    RMSYNC_APPLY_IGNORED         /* nothing to do (e.g. @removed of an unlinked event) */
} rmsync_apply_result_e;

const char *rmsync_apply_result_name(rmsync_apply_result_e r);

/* Register the apply statements with the db layer (once per process; the engine does it). */
apr_status_t rmsync_apply_register(void);

/* Apply one Outlook event state, ignoring the stored applied hash (the transfer's first apply
 * and the admin's "retry"). A sparse row (ev->partial) of a linked event is completed with a
 * GET first. ev->removed entries go through rmsync_apply_removed(). request_id: the Graph
 * request id the state came from (logged), may be NULL. Runs in its own transaction, or in a
 * savepoint of the caller's open one (ctx->in_tx). Returns APR_SUCCESS unless the database
 * failed (a refused or malformed item is SKIPPED and logged, not an error). */
apr_status_t rmsync_apply_event_force(struct rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                      const char *request_id, rmsync_apply_result_e *pres);

/* Apply the full state ev of an event known to be linked (no GET, no hooks; the delta pass and
 * reconcile use it). force: ignore the stored applied hash. */
apr_status_t rmsync_apply_linked_event(struct rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                       int force, const char *request_id,
                                       rmsync_apply_result_e *pres);

/* Record that the linked event event_id is gone (event_link.gone_at); carried out by
 * rmsync_apply_flush_deletions. */
apr_status_t rmsync_apply_mark_gone(struct rmsync_rep_ctx_t *ctx, const char *event_id);

/* A delta "@removed" entry or a "deleted" notification for event_id: when the event is linked,
 * GET it to tell "moved out of the window" (found: its new state is applied) from "deleted"
 * (404: the deletion is recorded and, outside a delta round, carried out through the breaker).
 * Unlinked: IGNORED. */
apr_status_t rmsync_apply_removed(struct rmsync_rep_ctx_t *ctx, const char *event_id,
                                  rmsync_apply_result_e *pres);

/* A Graph answer that is permanent for the item (rmsync_apply_notification): retrying it
 * cannot help. */
#define RMSYNC_APPLY_EPERMANENT (APR_OS_START_USERERR + 451)

/* For the webhook queue: GET event_id and apply it. change_type is "created", "updated" or
 * "deleted". A 404 for "deleted" is a deletion (through the breaker); for "created"/"updated" it
 * is RECHECK (the event may have moved; the engine's delta is asked to run in this job).
 * Unlinked events go to the unlinked hooks. A 4xx that is permanent for this event (400 such
 * as ErrorInvalidIdMalformed, 403, and the other 4xx except 401/404/408/409/412/429, which
 * rmsync_graph maps elsewhere) returns RMSYNC_APPLY_EPERMANENT with *pdetail = "HTTP <status>
 * <Graph error code>" (the queue closes the item at once); transient Graph errors return their
 * status (the queue retries the item later); everything else is APR_SUCCESS with *pres saying
 * what was done. */
apr_status_t rmsync_apply_notification(struct rmsync_rep_ctx_t *ctx, const char *event_id,
                                       const char *change_type, rmsync_apply_result_e *pres,
                                       const char **pdetail);

/* rmsync_apply_notification in two halves, for the queue's batches (rmsync_queue.c): the GET
 * (before the batch's transaction opens, so no lock is held across Graph calls), then the apply
 * of a "created"/"updated" item (inside it, ctx->in_tx: a savepoint per item). f->rv is the
 * GET's status. rmsync_apply_fetched answers like rmsync_apply_notification except that it
 * leaves NOT_LINKED (the unlinked hooks) and PENDING_DELETE (the breaker's flush) to the caller,
 * after its commit. */
typedef struct rmsync_apply_fetched_t {
    apr_status_t    rv;
    rmsync_event_t *ev;             /* when rv == APR_SUCCESS */
    int             http_status;
    const char     *error_code, *request_id;
} rmsync_apply_fetched_t;
apr_status_t rmsync_apply_fetch(struct rmsync_rep_ctx_t *ctx, const char *event_id,
                               rmsync_apply_fetched_t *f);
/* rmsync_apply_fetch of n events of the job's mailbox into fs[0..n-1]: two or more go as
 * $batch round trips of up to RMSYNC_GRAPH_BATCH_MAX GETs (rmsync_graph_get_events_batch);
 * any event the batch did not answer with 200 is fetched on its own, so fs ends exactly as n
 * calls of rmsync_apply_fetch would leave it, with fewer round trips. The events live in p. */
void rmsync_apply_fetch_many(struct rmsync_rep_ctx_t *ctx, apr_pool_t *p,
                             const char *const *event_ids, int n, rmsync_apply_fetched_t *fs);
apr_status_t rmsync_apply_fetched(struct rmsync_rep_ctx_t *ctx, const rmsync_apply_fetched_t *f,
                                  rmsync_apply_result_e *pres, const char **pdetail);

/* The mass-delete circuit breaker, then the deletions that are due. Every way a linked
 * activity is deleted or cancelled (404 of a notification, delta, reconcile or retry;
 * RMSyncCancelPolicy delete) is first recorded (event_link.gone_at, gone_kind) and judged here:
 * the pending ones not covered by an admin approval plus those carried out in the last
 * settings->breaker_window_s (since the last Approve/Reject) against RMSyncMassDeleteLimit
 * (more than breaker_count, or more than breaker_percent % of the links, percent rule only
 * with at least 10). A trip holds the representative (rep_state.held_by_breaker, held_reason,
 * logged once); nothing more is deleted until an admin approves or rejects. Otherwise the
 * deletions recorded at least settings->delete_settle_s ago (or approved) are carried out by
 * RMSyncDeletePolicy, so a burst is judged as a whole before any of it is carried out.
 * *pdeleted (may be NULL) gets the number carried out. */
apr_status_t rmsync_apply_flush_deletions(struct rmsync_rep_ctx_t *ctx, int *pdeleted);

/* The job step "deletions": rmsync_apply_flush_deletions for an active representative (the
 * engine schedules it when a recorded deletion has settled: rmsync_apply_deletions_due_sql). */
apr_status_t rmsync_apply_deletions_step(struct rmsync_rep_ctx_t *ctx);

/* Representatives (sync active, not held) with a deletion recorded at least $1 s ago. */
extern const char rmsync_apply_deletions_due_sql[];

/* A delta page in one go (inside the caller's transaction, ctx->in_tx): _begin reads and locks
 * the links of event_ids (an array of const char *) with one statement; the items given to
 * rmsync_apply_linked_event() then only queue their writes (no savepoint, no statement); _end
 * writes all of them with one statement and their sync log rows with another. When an item or
 * the page's statement fails (a refused write, bad times), RMSYNC_APPLY_EREDO comes back: the
 * caller rolls the page back, calls _abandon() and applies the page again item by item
 * (savepoints), which isolates and logs the bad item exactly as before. The counters in ctx are
 * the caller's to restore on a redo. mark_seen (an initial round): the statement of _end that
 * writes the links also sets seen_at of every link of event_ids, and *pseen says it did (0:
 * no write was needed, the caller marks them itself). */
#define RMSYNC_APPLY_EREDO (APR_OS_START_USERERR + 450)
apr_status_t rmsync_apply_page_begin(struct rmsync_rep_ctx_t *ctx,
                                     const apr_array_header_t *event_ids, int mark_seen);
apr_status_t rmsync_apply_page_end(struct rmsync_rep_ctx_t *ctx, int *pseen);
void rmsync_apply_page_abandon(struct rmsync_rep_ctx_t *ctx);

/* The sorted, de-duplicated, lowercase attendee addresses joined by '\n' (matching key and
 * event_link.applied_attendees value). "" when there are none. */
const char *rmsync_apply_attendee_key(apr_pool_t *p, const rmsync_event_t *ev);

#endif /* RMSYNC_APPLY_H */
