/* mod_rmsync: the `rmsync-webhook` handler (Graph change and lifecycle notifications).
 *
 * Runs in the Apache worker processes. POST only: `?validationToken=` is echoed as text/plain;
 * a notification body is size-capped, parsed, checked item by item (clientState in constant
 * time against rmsync.subscription) and the good items are stored durably in
 * rmsync.notification before answering 202. Database down -> 503 with Retry-After so Graph
 * retries. No Graph call and no sync work in the request: the process's waker thread NOTIFYs
 * the runner after the commit.
 */
#ifndef MOD_RMSYNC_WEBHOOK_H
#define MOD_RMSYNC_WEBHOOK_H

#include "httpd.h"

#define RMSYNC_WEBHOOK_HANDLER "rmsync-webhook"

/* Longest validationToken we echo (decoded bytes); longer -> 400. */
#define RMSYNC_WEBHOOK_MAX_TOKEN 1024

/* Register the handler and the child_init that creates the per-process DB pool; called once
 * from mod_rmsync.c's register_hooks. */
void rmsync_webhook_register_hooks(apr_pool_t *p);

#endif /* MOD_RMSYNC_WEBHOOK_H */
