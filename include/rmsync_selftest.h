/* mod_rmsync: the admin's "Test connection" and "Test mailbox" checks (core/rmsync_selftest.c,
 * run by the sync runner's requests step: workers never call Graph). No httpd headers.
 *
 * The result is JSON stored in rmsync.request.result:
 *   {"ok": bool, "checks": [{"name", "ok", "detail", "reason", "fix"}]}
 * (reason and fix only on a failed check); the admin's test page renders it.
 */
#ifndef RMSYNC_SELFTEST_H
#define RMSYNC_SELFTEST_H

#include <apr_errno.h>

struct rmsync_rep_ctx_t;

/* Register the checks' prepared statements (once per process). */
apr_status_t rmsync_selftest_register(void);

/* Run the checks of kind "test_connection" (token, a mailbox call without the directory,
 * a subscription handshake with RMSyncNotificationURL) or "test_mailbox" (calendar read,
 * subscription, master-category permission, mailbox time zone) for ctx's representative.
 * *result: the JSON above (ctx->pool); *ok: every check passed. APR_SUCCESS unless the kind is
 * unknown: Graph failures are results, not errors. */
apr_status_t rmsync_selftest_run(struct rmsync_rep_ctx_t *ctx, const char *kind,
                                 const char **result, int *ok);

#endif /* RMSYNC_SELFTEST_H */
