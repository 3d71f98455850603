/* mod_rmsync: the calendar the sync covers in each mailbox (RMSyncCalendar main|"<name>"),
 * run by the sync runner as the job step "calendar" (before "subscriptions").
 *
 * With a name, the step finds or creates that calendar in the mailbox
 * (rmsync_graph_calendar_ensure) and keeps its id in rmsync.rep_state.calendar_id; later steps
 * use ctx->calendar_id (delta, subscription resource, transfers). rep_state.calendar_name
 * remembers which configured value the representative's state was made for: when the directive
 * changes, the step drops the delta links (the next pass is an initial round) and deletes the
 * subscription (the "subscriptions" step creates one for the new calendar). No httpd headers.
 */
#ifndef RMSYNC_CALENDAR_H
#define RMSYNC_CALENDAR_H

#include <apr_errno.h>

struct rmsync_rep_ctx_t;

/* The job step. Sets ctx->calendar_id (NULL = the main calendar) and ctx->calendar_ready (0
 * while a named calendar could not be resolved: delta, subscriptions and transfers then wait). */
apr_status_t rmsync_calendar_step(struct rmsync_rep_ctx_t *ctx);

/* 1 when the job may use the mailbox's sync calendar (the main one, or the named one resolved). */
int rmsync_calendar_ready(const struct rmsync_rep_ctx_t *ctx);

#endif
