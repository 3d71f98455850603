/* mod_rmsync: the runner's job step "requests" (core/rmsync_requests.c, run by the sync runner):
 * the admin's requests to the engine in rmsync.request for one representative. No httpd
 * headers.
 */
#ifndef RMSYNC_REQUESTS_H
#define RMSYNC_REQUESTS_H

#include <apr_errno.h>

struct rmsync_rep_ctx_t;

/* Register the step's prepared statements (once per process; cheap to repeat). */
apr_status_t rmsync_requests_register(void);

/* Job step "requests": the admin requests of this representative (rmsync.request kinds
 * initial_sync, approve, retry, unlink). An initial_sync starts its round in the claiming
 * transaction (rmsync_delta_request_initial) and is marked done when the round completes. */
apr_status_t rmsync_delta_requests_step(struct rmsync_rep_ctx_t *ctx);

/* pending_sql of the "requests" step: representatives with pending engine requests. */
extern const char rmsync_delta_requests_sql[];

#endif /* RMSYNC_REQUESTS_H */
