/* mod_rmsync: CRM -> Outlook transfer, linking of existing appointments, category-driven linking
 * (core/rmsync_transfer.c, run by the sync runner).
 *
 * Transfer (exactly once): an activity with crm.business_activity.transfer_to_outlook and no
 * rmsync.event_link is created in its main representative's calendar with a stable transactionId
 * ("rmsync-<instance>-<activity_no>") and the RMSYNC_EVENT_PROP_ACTIVITY extended property. Every
 * attempt first looks the event up by that property, so a create whose response was lost is found
 * and linked by the retry (and a POST that still races is answered by Graph's transactionId
 * replay). The link (linked_via 'transfer') is written in the same transaction that clears the
 * flag, as SYNC_MASTER. Failures back off in rmsync.transfer_state.
 *
 * Linking requests (rmsync.request kinds 'link' and 'create_activity', queued by the JSON API in
 * the worker processes through rmsync_linkreq.h) are executed here in the runner: the Graph GET that proves
 * the event exists in that mailbox never runs in a worker process. The outcome goes to
 * request.state/result as JSON {"status":<http-like code>,"error":...,"activity_no":...}.
 *
 * Category rule: an unlinked event that the mailbox owner organises and that carries the master
 * category gets a new activity (main representative = mailbox owner) linked via 'category'.
 */
#ifndef RMSYNC_TRANSFER_H
#define RMSYNC_TRANSFER_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include <cjson/cJSON.h>
#include "rmsync_settings.h"
#include "rmsync_db.h"
#include "rmsync_event.h"
#include "rmsync_graph.h"

/* What a transfer needs from the activity. */
typedef struct rmsync_transfer_activity_t {
    long long   activity_no;
    const char *description;
    apr_time_t  start, end;        /* UTC */
    const char *representative_id; /* main representative */
    apr_array_header_t *attendees; /* of rmsync_attendee_t (email, name): contacts and the other
                                      representatives; NULL or empty for none */
} rmsync_transfer_activity_t;

/* The stable transactionId of an activity's create: "rmsync-<instance>-<activity_no>".
 * instance identifies the CRM database (rmsync.settings 'instance_id'), so two databases syncing
 * the same mailbox never collide. */
const char *rmsync_transfer_txn_id(apr_pool_t *p, const char *instance, long long activity_no);

/* Fill the Graph create request for activity a: subject = description, a text body with the
 * activity number and (settings->activity_url) a link back, UTC start/end, the master category,
 * the transactionId and the activity-number extended property; attendees only when
 * settings->transfer_attendees (Graph mails them invitations). */
void rmsync_transfer_new_event(apr_pool_t *p, const rmsync_settings_t *s,
                               const rmsync_transfer_activity_t *a, const char *txn_id,
                               rmsync_graph_new_event_t *ne);

/* The activity URL from settings->activity_url ("%s" = activity number, at most one; no other
 * conversions), or NULL when not configured or malformed. */
const char *rmsync_transfer_activity_url(apr_pool_t *p, const char *tmpl, long long activity_no);

/* Backoff before the next transfer attempt after `attempts` failed ones: 5 s doubling to 10 min. */
apr_interval_time_t rmsync_transfer_backoff(int attempts);


/* ---- runner side: job steps and the unlinked-event hook (see rmsync_engine.h) -------------- */

struct rmsync_rep_ctx_t;

/* Job step "transfer": execute this representative's pending 'link' / 'create_activity'
 * requests, then transfer its due flagged, unlinked activities (a bounded batch per job). */
apr_status_t rmsync_transfer_step(struct rmsync_rep_ctx_t *ctx);

/* Representatives with transfer or linking work now (the step's pending_sql; run by the
 * scheduler on NOTIFY 'transfer' / 'request' and every few seconds). */
#define RMSYNC_TRANSFER_PENDING_SQL \
    "SELECT DISTINCT representative_id FROM rmsync.pending_transfer" \
    " WHERE next_attempt_at IS NULL OR next_attempt_at <= now()" \
    " UNION SELECT DISTINCT representative_id FROM rmsync.request" \
    " WHERE state = 'pending' AND kind IN ('link', 'create_activity')" \
    "   AND representative_id IS NOT NULL"

/* Unlinked-event hook (category rule): an event the mailbox owner organises that carries the
 * master category gets a new activity (main representative = mailbox owner; contacts and
 * representatives from the attendees), linked via 'category' in one transaction. Not
 * organiser, cancelled, recurring, no category: nothing. Idempotent: an already linked event
 * (repeated notification, Initial Sync) is left alone. */
apr_status_t rmsync_transfer_unlinked_event(struct rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev);

#endif /* RMSYNC_TRANSFER_H */
