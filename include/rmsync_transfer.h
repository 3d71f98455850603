/* mod_rmsync: CRM -> Outlook transfer, linking of existing appointments, category-driven linking.
 *
 * Transfer (exactly once): an activity with crm.business_activity.transfer_to_outlook and no
 * rmsync.event_link is created in its main representative's calendar with a stable transactionId
 * ("rmsync-<instance>-<activity_no>") and the RMSYNC_EVENT_PROP_ACTIVITY extended property. Every
 * attempt first looks the event up by that property, so a create whose response was lost is found
 * and linked by the retry (and a POST that still races is answered by Graph's transactionId
 * replay). The link (linked_via 'transfer') is written in the same transaction that clears the
 * flag, as SYNC_MASTER. Failures back off in rmsync.transfer_state.
 *
 * Linking requests (rmsync.request kinds 'link' and 'create_activity', written by the JSON API in
 * the admin handler, see rmsync_api.h) are executed here in the runner: the Graph GET that proves
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

/* One attendee to invite (only with settings->transfer_attendees). */
typedef struct rmsync_transfer_attendee_t {
    const char *email;
    const char *name;      /* or NULL */
} rmsync_transfer_attendee_t;

/* What a transfer needs from the activity. */
typedef struct rmsync_transfer_activity_t {
    long long   activity_no;
    const char *description;
    apr_time_t  start, end;        /* UTC */
    const char *representative_id; /* main representative */
    apr_array_header_t *attendees; /* of rmsync_transfer_attendee_t; may be NULL */
} rmsync_transfer_activity_t;

/* The stable transactionId of an activity's create: "rmsync-<instance>-<activity_no>".
 * instance identifies the CRM database (rmsync.settings 'instance_id'), so two databases syncing
 * the same mailbox never collide. Graph allows any string; we stay well below 100 chars. */
const char *rmsync_transfer_txn_id(apr_pool_t *p, const char *instance, long long activity_no);

/* The POST body for the create: subject, text body (activity number and, with
 * settings->activity_url, a link back), UTC start/end, the master category, transactionId, the
 * activity-number extended property, and attendees only when settings->transfer_attendees. The
 * tree is bound to p. */
cJSON *rmsync_transfer_event_body(apr_pool_t *p, const rmsync_settings_t *s,
                                  const rmsync_transfer_activity_t *a, const char *txn_id);

/* The activity URL from settings->activity_url ("%s" = activity number, at most one; no other
 * conversions), or NULL when not configured or malformed. */
const char *rmsync_transfer_activity_url(apr_pool_t *p, const char *tmpl, long long activity_no);

/* Backoff before the next transfer attempt after `attempts` failed ones: 5 s doubling to 10 min. */
apr_interval_time_t rmsync_transfer_backoff(int attempts);

#endif /* RMSYNC_TRANSFER_H */
