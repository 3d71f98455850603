/* mod_rmsync, run by the sync runner: the configured master category in each mailbox (see
 * rmsync_categories.h). */
#include <string.h>
#include <strings.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_db.h"
#include "rmsync_synclog.h"
#include "rmsync_engine.h"
#include "rmsync_categories.h"

const rmsync_graph_category_t *rmsync_categories_find(const apr_array_header_t *cats,
                                                      const char *name)
{
    int i;

    if (!cats || !name) {
        return NULL;
    }
    for (i = 0; i < cats->nelts; i++) {
        const rmsync_graph_category_t *c = &RMSYNC_ARRAY_IDX(cats, i, rmsync_graph_category_t);
        if (c->name && !strcasecmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}

int rmsync_categories_contains(const apr_array_header_t *categories, const char *name)
{
    int i;

    if (!categories || !name || !*name) {
        return 0;
    }
    for (i = 0; i < categories->nelts; i++) {
        const char *c = RMSYNC_ARRAY_IDX(categories, i, const char *);
        if (c && !strcasecmp(c, name)) {
            return 1;
        }
    }
    return 0;
}

/* ---- the job step -------------------------------------------------------------------------- */

static const rmsync_db_stmt_t cat_stmts[] = {
    { "categories_state",
      "SELECT coalesce((SELECT category_state FROM rmsync.rep_state"
      "                  WHERE representative_id = $1), 'unknown')", 1 },
    { "categories_set_state",
      "INSERT INTO rmsync.rep_state (representative_id, category_state) VALUES ($1, $2)"
      " ON CONFLICT (representative_id) DO UPDATE SET category_state = EXCLUDED.category_state,"
      "   updated_at = now()"
      " WHERE rep_state.category_state IS DISTINCT FROM EXCLUDED.category_state", 2 },
    /* representatives that do not sync now (Sync Active off, or the permission set revoked)
     * are checked again when they come back */
    { "categories_reset_idle",
      "UPDATE rmsync.rep_state s SET category_state = 'unknown', updated_at = now()"
      " WHERE s.category_state <> 'unknown'"
      "   AND NOT EXISTS (SELECT 1 FROM rmsync.representatives r"
      "                    WHERE r.representative_id = s.representative_id AND r.sync_active)", 0 },
};

static void register_stmts(void)
{
    static int done;
    rmsync_db_register_once(&done, cat_stmts, (int)(sizeof(cat_stmts) / sizeof(cat_stmts[0])));
}

static void set_state(rmsync_rep_ctx_t *ctx, const char *state)
{
    rmsync_db_exec(ctx->db, ctx->pool, "categories_set_state",
                   RMSYNC_DB_PARAMS(ctx->rep_id, state), NULL);
}

static void forbidden(rmsync_rep_ctx_t *ctx, const char *old, const rmsync_graph_result_t *res)
{
    if (strcmp(old, "forbidden")) {
        /* once per mailbox and activation: only on the change of state */
        rmsync_log(RMSYNC_LOG_WARNING, 0, RMSYNC_LOGNO(00820)
                   "master category '%s' cannot be created in the mailbox of %s: the application "
                   "lacks the Graph permission MailboxSettings.ReadWrite (403); the sync goes on, "
                   "users can create the category by hand", ctx->settings->category_name,
                   ctx->rep_id);
        rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_WARNING, ctx->rep_id, 0, NULL,
                       "category", res ? res->request_id : NULL, RMSYNC_LOGNO(00802)
                       "master category '%s' not created: the application lacks the permission "
                       "MailboxSettings.ReadWrite; the sync goes on", ctx->settings->category_name);
        set_state(ctx, "forbidden");
    }
    else {
        rmsync_log(RMSYNC_LOG_DEBUG, 0, "master category of %s: still no MailboxSettings.ReadWrite",
                   ctx->rep_id);
    }
}

/* A Graph call of the step failed: a 403 is remembered (forbidden); anything else (transient or
 * odd) leaves the state as it is, tried again in a later job. The job step itself goes on. */
static apr_status_t graph_failed(rmsync_rep_ctx_t *ctx, const char *state, const char *what,
                                 apr_status_t rv, const rmsync_graph_result_t *res)
{
    if (rv == RMSYNC_GRAPH_FORBIDDEN) {
        forbidden(ctx, state, res);
    }
    else {
        rmsync_log(RMSYNC_LOG_INFO, rv, "master category of %s: %s failed (%s), will retry",
                   ctx->rep_id, what, rmsync_graph_strerror(ctx->pool, rv));
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_categories_reset_idle(rmsync_db_t *db, apr_pool_t *p)
{
    if (!db) {
        return APR_EINVAL;
    }
    register_stmts();
    return rmsync_db_exec(db, p, "categories_reset_idle", RMSYNC_DB_NOPARAMS, NULL);
}

apr_status_t rmsync_categories_step(rmsync_rep_ctx_t *ctx)
{
    const rmsync_settings_t *s = ctx->settings;
    rmsync_db_result_t *r = NULL;
    rmsync_graph_result_t res;
    apr_array_header_t *cats = NULL;
    const char *state;
    apr_status_t rv;
    int created = 0;

    if (!s->category_name || !*s->category_name) {
        return APR_SUCCESS;
    }
    register_stmts();
    if (rmsync_db_exec(ctx->db, ctx->pool, "categories_state", RMSYNC_DB_PARAMS(ctx->rep_id), &r)
        != APR_SUCCESS || r->nrows != 1) {
        return APR_EGENERAL;
    }
    state = rmsync_db_value(r, 0, 0);
    if (strcmp(state, "unknown") && !ctx->want_initial) {
        return APR_SUCCESS;
    }
    memset(&res, 0, sizeof(res));
    rv = rmsync_graph_categories_list(ctx->graph, ctx->pool, ctx->user_id, &cats, &res);
    if (rv != APR_SUCCESS) {
        return graph_failed(ctx, state, "listing", rv, &res);
    }
    if (!rmsync_categories_find(cats, s->category_name)) {
        memset(&res, 0, sizeof(res));
        rv = rmsync_graph_category_create(ctx->graph, ctx->pool, ctx->user_id, s->category_name,
                                          s->category_color, &created, &res);
        if (rv != APR_SUCCESS) {
            return graph_failed(ctx, state, "create", rv, &res);
        }
        if (created) {
            rmsync_synclog(ctx->synclog, ctx->db, RMSYNC_LOG_INFO, ctx->rep_id, 0, NULL, "category",
                           res.request_id, "master category '%s' created in the mailbox",
                           s->category_name);
        }
    }
    set_state(ctx, "created");
    return APR_SUCCESS;
}
