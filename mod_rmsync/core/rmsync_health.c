/* mod_rmsync, used by the Apache worker processes (admin pages, status.json, metrics): the
 * health computation (rmsync_health.h). Pure logic over the signals the glue collected. */
#include <string.h>
#include <apr_strings.h>
#include "rmsync.h"
#include "rmsync_errors.h"
#include "rmsync_health.h"

const char *const rmsync_health_codes[] = {
    "not_enabled", "runner_down", "runner_stalled", "db_unreachable", "token_failing",
    "master_not_ready", "service_stopped", "breaker_hold", "subscriptions_failing",
    "categories_forbidden", "representative_errors", NULL
};

const char *rmsync_health_level_name(rmsync_health_level_e level)
{
    return level == RMSYNC_HEALTH_ERROR ? "error"
         : level == RMSYNC_HEALTH_WARNING ? "warning" : "ok";
}

static void add(rmsync_health_t *h, const char *code, rmsync_health_level_e level,
                const char *message, const char *fix)
{
    rmsync_health_reason_t *r = apr_array_push(h->reasons);
    r->code = code;
    r->level = level;
    r->message = message;
    r->fix = fix;
    if (level > h->level) {
        h->level = level;
    }
}

/* A warning about n representatives (none: no warning): "<before>N representative(s)
 * [is|are]<after>". */
static void warn_reps(rmsync_health_t *h, apr_pool_t *p, const char *code, int n,
                      const char *before, int verb, const char *after, const char *fix)
{
    if (n > 0) {
        add(h, code, RMSYNC_HEALTH_WARNING,
            apr_psprintf(p, "%s%d representative%s%s", before, n,
                         n != 1 ? (verb ? "s are" : "s") : (verb ? " is" : ""), after), fix);
    }
}

static const char *fix_of(const char *code)
{
    const rmsync_error_class_t *c = rmsync_error_by_code(code);
    return c ? c->fix : "";
}

rmsync_health_t *rmsync_health_compute(apr_pool_t *p, const rmsync_health_in_t *in)
{
    rmsync_health_t *h = apr_pcalloc(p, sizeof(*h));
    const rmsync_shm_t *shm = in->shm;
    apr_uint32_t i;
    int rep_errors = 0;

    h->reasons = apr_array_make(p, 8, sizeof(rmsync_health_reason_t));
    if (!in->enabled || !shm) {
        add(h, "not_enabled", RMSYNC_HEALTH_ERROR,
            "The sync is not enabled on this server: no runner is started.",
            "Set RMSyncDatabase (and the Graph directives) in the server configuration and "
            "restart Apache.");
        h->db_down = in->db_ok == 0;
        return h;
    }

    /* the runner: the parent restarts a dead or stalled one; until then nothing syncs */
    if (!shm->runner.pid || !shm->runner.heartbeat
        || shm->runner.state == RMSYNC_RUNNER_STOPPED) {
        add(h, "runner_down", RMSYNC_HEALTH_ERROR,
            "The sync runner is not running: nothing is synchronised.",
            "Apache restarts it within a few seconds; if it stays down, see the Apache "
            "ErrorLog (RMS0090x) for why it exits.");
    }
    else if (in->now - shm->runner.heartbeat > apr_time_from_sec(RMSYNC_HEALTH_STALE_S)) {
        add(h, "runner_stalled", RMSYNC_HEALTH_ERROR,
            apr_psprintf(p, "The sync runner has not shown a sign of life for %" APR_TIME_T_FMT
                         " s (last: %s).", apr_time_sec(in->now - shm->runner.heartbeat),
                         shm->runner.activity[0] ? shm->runner.activity : "-"),
            "Apache replaces a stalled runner by itself; if it recurs, see the Apache "
            "ErrorLog.");
    }

    /* the database: probed by this request, or seen down by the runner */
    if (in->db_ok == 0 || shm->runner.state == RMSYNC_RUNNER_DB_DOWN) {
        const rmsync_error_class_t *c = rmsync_error_by_code("database_unavailable");
        h->db_down = 1;
        add(h, "db_unreachable", RMSYNC_HEALTH_ERROR,
            apr_pstrcat(p, "The sync database is not reachable",
                        in->db_error ? apr_pstrcat(p, " (", in->db_error, ")", NULL) : "",
                        ": representative states below are unknown.", NULL),
            c ? c->fix : "");
    }

    /* the token: the runner publishes the last refused token request */
    if (shm->runner.token_error[0]) {
        const rmsync_error_class_t *c = rmsync_error_classify(shm->runner.token_error);
        const char *aad = rmsync_error_aadsts(p, shm->runner.token_error);
        if (!strncmp(c->code, "aadsts", 6) || !strcmp(c->code, "unknown")) {
            /* an AADSTS class names the directive */
        }
        else if (strcmp(c->code, "token_unreachable")) {
            c = rmsync_error_by_code("token_failed");
        }
        add(h, "token_failing", RMSYNC_HEALTH_ERROR,
            apr_pstrcat(p, "Microsoft Graph token failing",
                        aad ? apr_pstrcat(p, " (", aad, ")", NULL) : "", ": ", c->reason,
                        NULL),
            c->fix);
    }

    if (in->master_state && strcmp(in->master_state, "ready")) {
        const rmsync_error_class_t *c = rmsync_error_by_code("master_not_ready");
        add(h, "master_not_ready", RMSYNC_HEALTH_ERROR,
            apr_pstrcat(p, "The CRM sync user (SYNC_MASTER) is ", in->master_state,
                        ": no sync work is done.", NULL),
            !strcmp(in->master_state, "inactive")
            ? "Activate the user in the CRM (user administration)." : c->fix);
    }
    if (in->service_running == 0) {
        add(h, "service_stopped", RMSYNC_HEALTH_WARNING,
            "The sync service is stopped by an admin: notifications are kept, nothing is "
            "applied.", "Calendar Sync Configuration: Start.");
    }
    warn_reps(h, p, "breaker_hold", in->held, "", 1, " held by the mass-delete breaker: their "
              "deletions wait for a decision.", fix_of("breaker_hold"));
    warn_reps(h, p, "subscriptions_failing", in->subs_failing, "Change notifications failing for ",
              0, " (changes arrive only with each cycle's delta pass).",
              fix_of("subscription_failed"));
    warn_reps(h, p, "categories_forbidden", in->categories_forbidden,
              "Master categories forbidden for ", 0, ": the sync category is not created in "
              "their mailbox.", fix_of("categories_forbidden"));

    /* representatives in error (shm slots); held ones are counted above */
    for (i = 0; i < shm->rep_count && i < shm->hdr.rep_capacity; i++) {
        if (shm->reps[i].representative_id[0] && shm->reps[i].state == RMSYNC_REP_ERROR) {
            rep_errors++;
        }
    }
    if (!h->db_down) {
        warn_reps(h, p, "representative_errors", rep_errors, "", 1, " in error (see the row for "
                  "the reason and the fix).", "Follow the fix shown next to each representative's "
                  "error.");
    }
    if (in->held < 0) {
        /* the database is unknown: the live slots still say who is held */
        int held = 0;
        for (i = 0; i < shm->rep_count && i < shm->hdr.rep_capacity; i++) {
            held += shm->reps[i].representative_id[0] && shm->reps[i].held;
        }
        warn_reps(h, p, "breaker_hold", held, "", 1, " held by the mass-delete breaker.",
                  fix_of("breaker_hold"));
    }

    /* the worst first (stable: insertion order within a level) */
    {
        apr_array_header_t *sorted = apr_array_make(p, h->reasons->nelts,
                                                    sizeof(rmsync_health_reason_t));
        int lvl, k;
        for (lvl = RMSYNC_HEALTH_ERROR; lvl >= RMSYNC_HEALTH_OK; lvl--) {
            for (k = 0; k < h->reasons->nelts; k++) {
                rmsync_health_reason_t *r =
                    &RMSYNC_ARRAY_IDX(h->reasons, k, rmsync_health_reason_t);
                if ((int)r->level == lvl) {
                    *(rmsync_health_reason_t *)apr_array_push(sorted) = *r;
                }
            }
        }
        h->reasons = sorted;
    }
    return h;
}
