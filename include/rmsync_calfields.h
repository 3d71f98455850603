/* mod_rmsync: calendar fields of an Outlook event as the CRM sees them (docs/engine.md
 * "Calendar fields"): private/confidential appointments (RMSyncPrivateAppointments), all-day
 * events in the mailbox owner's time zone (mailboxSettings/timeZone, RMSyncDefaultTimeZone),
 * and the organizer as an activity representative. */
#ifndef RMSYNC_CALFIELDS_H
#define RMSYNC_CALFIELDS_H

#include "rmsync_engine.h"
#include "rmsync_event.h"

/* The description a masked private appointment gets. */
#define RMSYNC_PRIVATE_DESCRIPTION "Private appointment"

/* The event as the apply rules and the category rule must use it: *pview is ev itself or a copy
 * (pool ctx->pool) with the subject masked and the attendees dropped (private, mask), all-day
 * times moved to local midnight of the owner's zone, the organizer added to the attendees when
 * it is another representative (and the owner is not the organizer); its hash is recomputed.
 * *pskip = 1: private with RMSyncPrivateAppointments skip (no activity from it). Runs inside
 * the caller's transaction (reads the database only, never Graph). */
apr_status_t rmsync_calfields_view(rmsync_rep_ctx_t *ctx, const rmsync_event_t *ev,
                                   const rmsync_event_t **pview, int *pskip);

/* Job step "timezone": reads the owner's mailboxSettings/timeZone once a day (and on an initial
 * sync) into rep_state.mailbox_tz; when it cannot be read, RMSyncDefaultTimeZone is used and
 * one line logged when that starts. */
apr_status_t rmsync_calfields_tz_step(rmsync_rep_ctx_t *ctx);

#endif /* RMSYNC_CALFIELDS_H */
