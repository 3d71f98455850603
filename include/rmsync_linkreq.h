/* mod_rmsync: the DB half of linking requests (core/rmsync_linkreq.c, run by Apache worker
 * processes for the JSON API, rmsync_api.h): validate and queue rmsync.request rows of kind
 * 'link' / 'create_activity' and report their state. No Graph call: the runner's "transfer"
 * step (rmsync_transfer.h) does the Graph half. No httpd headers.
 */
#ifndef RMSYNC_LINKREQ_H
#define RMSYNC_LINKREQ_H

#include <apr_pools.h>
#include "rmsync_db.h"

#define RMSYNC_TRANSFER_MAX_EVENT_ID 512   /* Graph ids are ~150 chars; refuse anything absurd */

typedef struct rmsync_transfer_outcome_t {
    int         status;       /* HTTP status for the answer: 202, 400, 404, 409, 422, 503 */
    const char *error;        /* machine-readable code ("activity_already_linked", ...) or NULL */
    const char *message;      /* one sentence for people (never echoes secrets) */
    long long   request_id;   /* with 202: the queued rmsync.request id */
} rmsync_transfer_outcome_t;

/* Validate what the DB can tell (representative syncing, activity exists and is unlinked, event
 * not linked yet in that mailbox) and queue an rmsync.request of kind "link" (activity_no > 0)
 * or "create_activity" (activity_no == 0) for the runner, which does the Graph GET. The insert
 * NOTIFYs the runner. requested_by: the admin user or NULL. */
void rmsync_transfer_request_submit(rmsync_db_t *db, apr_pool_t *p, const char *representative_id,
                                    long long activity_no, const char *event_id,
                                    const char *requested_by, rmsync_transfer_outcome_t *out);

/* The state of request id as a JSON object (into *pjson) and the HTTP status to answer:
 * 202 while pending/processing, 200 when done, the outcome's status (404/409/422/502) when it
 * failed, 404 when there is no such link/create_activity request, 503 when the DB failed. */
int rmsync_transfer_request_status(rmsync_db_t *db, apr_pool_t *p, long long id, const char **pjson);

#endif /* RMSYNC_LINKREQ_H */
