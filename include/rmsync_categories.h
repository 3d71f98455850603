/* mod_rmsync: the configured Outlook master category (RMSyncMasterCategory) in each mailbox.
 *
 * ensure() is idempotent: list -> match case-insensitively -> create when missing; a 409 from the
 * create (someone else made it meanwhile) re-lists and counts as success. A 403 means the app lacks
 * MailboxSettings.ReadWrite: logged ONCE per mailbox and activation as a warning naming the
 * permission, remembered in rmsync.rep_state.category_state = 'forbidden', and nothing else is
 * affected (users can still create the category by hand). States: 'unknown' (not yet done),
 * 'created', 'forbidden'. The state goes back to 'unknown' when the representative stops syncing
 * (rmsync_categories_reset_idle: Sync Active off or the permission set revoked) and when Sync
 * Active is switched on again (trigger rep_state_reactivated), so a comeback re-checks.
 */
#ifndef RMSYNC_CATEGORIES_H
#define RMSYNC_CATEGORIES_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "rmsync_graph.h"

/* In a masterCategories listing (rmsync_graph_categories_list: rmsync_graph_category_t), the
 * entry whose name equals name ignoring ASCII case; NULL when absent. */
const rmsync_graph_category_t *rmsync_categories_find(const apr_array_header_t *cats,
                                                      const char *name);

/* 1 when the string array categories (const char * elements) holds name, ignoring ASCII case. */
int rmsync_categories_contains(const apr_array_header_t *categories, const char *name);

struct rmsync_rep_ctx_t;
struct rmsync_db_t;

/* Control thread, every few seconds: category_state back to 'unknown' for every representative
 * that does not sync now (not in rmsync.representatives with sync_active), so that the next
 * activation or grant checks the mailbox again. One UPDATE; harmless to repeat or run on
 * several nodes. */
apr_status_t rmsync_categories_reset_idle(struct rmsync_db_t *db, apr_pool_t *p);

/* Job step "categories": make sure the master category exists in this mailbox. Runs the Graph
 * calls only when rep_state.category_state is 'unknown' (first activation or a comeback, or
 * never succeeded)
 * or when this job runs an Initial Sync (ctx->want_initial). 403 -> 'forbidden', warned once
 * (RMS00820) the first time; later checks that are still refused log at debug level only. */
apr_status_t rmsync_categories_step(struct rmsync_rep_ctx_t *ctx);

#endif /* RMSYNC_CATEGORIES_H */
