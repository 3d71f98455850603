/* mod_rmsync: runs in the Apache worker processes (the admin handler). The status page (HTML
 * of the status JSON) and the Prometheus metrics, both from the shm snapshot, so they work
 * while the database is down; only the node list (rmsync.node) needs the database. */
#include <string.h>
#include "httpd.h"
#include "http_log.h"
#include "apr_strings.h"
#include "rmsync.h"
#include "rmsync_escape.h"
#include "rmsync_html.h"
#include "mod_rmsync_admin.h"
#include "rmsync_sb.h"
#include "rmsync_timefmt.h"

APLOG_USE_MODULE(rmsync);

#define E(s) rmsync_html_escape(p, (s))

static const char *row(apr_pool_t *p, const char *k, const char *v)
{
    return apr_pstrcat(p, "<dt>", E(k), "</dt><dd>", v && *v ? E(v) : "-", "</dd>", NULL);
}

/* Every node's runner (rmsync.node, via d "nodes"): a warning for each whose beat stopped. */
static void nodes_html(apr_pool_t *p, rmsync_sb_t *sb, const cJSON *nodes, const char *err)
{
    int i, n = cJSON_GetArraySize(nodes);

    for (i = 0; i < n; i++) {
        const cJSON *o = cJSON_GetArrayItem(nodes, i);
        const char *state = cJSON_GetStringValue(cJSON_GetObjectItem(o, "state"));
        /* a runner that ended normally marked its row 'stopped': listed, no warning */
        if (cJSON_IsTrue(cJSON_GetObjectItem(o, "stale"))
            && !(state && !strcmp(state, "stopped"))) {
            rmsync_sb_addv(sb, "<div class=\"flash err stale-node\">The sync runner of node ",
                E(cJSON_GetStringValue(cJSON_GetObjectItem(o, "node_id"))),
                " stopped: no heartbeat for ", E(rmsync_fmt_duration(p, (long long)
                cJSON_GetNumberValue(cJSON_GetObjectItem(o, "beat_age_s")))),
                ". The other nodes take over its mailboxes.</div>\n", NULL);
        }
    }
    rmsync_sb_addv(sb, "<h2>Nodes</h2><table id=\"nodes\"><thead><tr><th>Node</th>"
        "<th>Runner pid</th><th>Started</th><th>Last beat</th><th>State</th>"
        "<th>Working on</th></tr></thead><tbody>\n", NULL);
    if (!cJSON_IsArray(nodes)) {
        rmsync_sb_addv(sb, "<tr><td colspan=\"6\" class=\"hint\">Unknown (",
                       E(err ? err : "no database"), ").</td></tr>", NULL);
    }
    for (i = 0; i < n; i++) {
        const cJSON *o = cJSON_GetArrayItem(nodes, i);
        int stale = cJSON_IsTrue(cJSON_GetObjectItem(o, "stale"));
#define S(k) E(cJSON_GetStringValue(cJSON_GetObjectItem(o, k)))
        rmsync_sb_addv(sb, "<tr><td class=\"mono\">", S("node_id"), "</td><td class=\"num\">",
            apr_psprintf(p, "%.0f", cJSON_GetNumberValue(cJSON_GetObjectItem(o, "pid"))),
            "</td><td class=\"mono\">", S("started_at"), "</td><td class=\"mono\">",
            S("last_beat"), apr_psprintf(p, " (%.0f s ago)",
            cJSON_GetNumberValue(cJSON_GetObjectItem(o, "beat_age_s"))), "</td><td>",
            stale ? "<span class=\"badge err\">stopped</span>" : S("state"),
            "</td><td class=\"mono\">", S("working_on"), "</td></tr>\n", NULL);
#undef S
    }
    rmsync_sb_addv(sb, "</tbody></table>\n", NULL);
}

const char *rmsync_admin_status_html(rmsync_admin_t *a, const cJSON *d)
{
    apr_pool_t *p = a->r->pool;
    const rmsync_shm_t *shm = a->shm;
    apr_time_t now = apr_time_now();
    rmsync_sb_t *sb = rmsync_sb_make(p);
    int db_down = rmsync_admin_health_db_down(a);
    apr_uint32_t i;

    rmsync_sb_add(sb, rmsync_html_page_begin_refresh(p, a->base, "Calendar Sync status",
                                                     "status", (int)a->refresh_s));
    if (!a->s->enabled) {
        rmsync_sb_addv(sb, "<div class=\"flash err\">The sync is not enabled on this server "
                        "(RMSyncDatabase is not set): no runner is started.</div>", NULL);
    }
    rmsync_sb_addv(sb, "<section class=\"card\" id=\"runner\"><h2>Sync runner</h2>"
        "<dl class=\"settings\">",
        row(p, "State", apr_pstrcat(p, rmsync_runner_state_name(shm->runner.state),
            rmsync_admin_runner_alive(shm, now) ? " (alive)" : " (not running)", NULL)),
        row(p, "Process id", shm->runner.pid ? apr_psprintf(p, "%u", (unsigned)shm->runner.pid)
                                             : NULL),
        row(p, "Heartbeat", shm->runner.heartbeat
            ? apr_psprintf(p, "%s (%s ago)", rmsync_fmt_time(p, shm->runner.heartbeat),
                           rmsync_fmt_duration(p, apr_time_sec(now - shm->runner.heartbeat)))
            : NULL),
        row(p, "Started", shm->runner.started ? rmsync_fmt_time(p, shm->runner.started) : NULL),
        row(p, "Generation", apr_psprintf(p, "%u", (unsigned)shm->hdr.generation)),
        row(p, "Cycles", apr_psprintf(p, "%" APR_UINT64_T_FMT, shm->runner.cycles)),
        row(p, "Last cycle", shm->runner.last_cycle ? rmsync_fmt_time(p, shm->runner.last_cycle)
                                                    : NULL),
        row(p, "Queue depth", apr_psprintf(p, "%u", (unsigned)rmsync_shm_counter_get(
                                                        shm, RMSYNC_CTR_QUEUE_DEPTH))),
        row(p, "Doing", shm->runner.activity),
        row(p, "Last error", shm->runner.last_error[0]
            ? apr_psprintf(p, "%s (%s)", shm->runner.last_error,
                           rmsync_fmt_time(p, shm->runner.last_error_at)) : NULL),
        row(p, "Token error", shm->runner.token_error[0]
            ? apr_psprintf(p, "%s (%s)", shm->runner.token_error,
                           rmsync_fmt_time(p, shm->runner.token_error_at)) : NULL),
        "</dl>", rmsync_admin_error_fix_html(p, shm->runner.token_error),
        "</section>\n", NULL);

    nodes_html(p, sb, cJSON_GetObjectItem(d, "nodes"),
               cJSON_GetStringValue(cJSON_GetObjectItem(d, "nodes_error")));
    rmsync_sb_addv(sb, "<h2>Representatives (live)</h2><table id=\"live\"><thead><tr>"
        "<th>Representative</th><th>Mailbox</th><th>State</th><th>Last success</th>"
        "<th>Lag</th><th>Linked</th><th>Subscription expiry</th><th>Last error</th></tr>"
        "</thead><tbody>\n", NULL);
    if (shm->rep_count == 0) {
        rmsync_sb_addv(sb, "<tr><td colspan=\"8\" class=\"hint\">The runner has not "
                        "published any representative yet.</td></tr>", NULL);
    }
    for (i = 0; i < shm->rep_count && i < shm->hdr.rep_capacity; i++) {
        const rmsync_shm_rep_t *sr = &shm->reps[i];
        if (!sr->representative_id[0]) {
            continue;
        }
        rmsync_sb_addv(sb, "<tr><td class=\"mono\">", E(sr->representative_id),
            "</td><td class=\"mono\">", E(sr->mailbox), "</td><td>",
            sr->held ? "<span class=\"badge err\">held</span> " : "",
            db_down && sr->state == RMSYNC_REP_OK
            ? "<span class=\"badge warn\" title=\"the database is not reachable\">unknown"
              "</span>" : E(rmsync_shm_rep_state_name(sr->state)), "</td><td class=\"mono\">",
            E(rmsync_fmt_time(p, sr->last_success)), "</td><td class=\"num\">",
            sr->lag_ms ? apr_psprintf(p, "%u ms", (unsigned)sr->lag_ms) : "-",
            "</td><td class=\"num\">", apr_psprintf(p, "%u", (unsigned)sr->linked_count),
            "</td><td class=\"mono\">", E(rmsync_fmt_time(p, sr->subscription_expiry)),
            "</td><td class=\"msg\">", E(sr->last_error),
            rmsync_admin_error_fix_html(p, sr->last_error), "</td></tr>\n", NULL);
    }
    /* what the live columns mean; then the counters with labels, help and since when */
    rmsync_sb_addv(sb, "</tbody></table>\n<p class=\"hint\" id=\"live-help\"><b>Lag</b>: for the "
        "latest Outlook change the runner applied, the time from the change in Outlook "
        "(its lastModifiedDateTime) to the activity written in the CRM. It keeps that value "
        "until the next change is applied, so a quiet mailbox shows its last change's lag. "
        "<b>Last success</b>: the last completed pass over the mailbox. <b>Linked</b>: "
        "appointments linked to activities. <b>Subscription expiry</b>: when Graph's "
        "change-notification subscription ends unless renewed (renewed before).</p>\n"
        "<h2>Counters</h2><p class=\"hint\" id=\"counters-since\">Counted since ",
        shm->hdr.created ? E(rmsync_fmt_time(p, shm->hdr.created)) : "-",
        shm->hdr.created ? apr_pstrcat(p, " (", E(rmsync_fmt_duration(p,
            apr_time_sec(now - shm->hdr.created))), " ago)", NULL) : "",
        ": the start of this server generation. Apache restarts, also graceful ones, start "
        "them again at 0. Metric names (Prometheus <code>rmsync_&lt;name&gt;_total</code>) "
        "are in the last column.</p>"
        "<table id=\"counters\"><thead><tr><th>Counter</th><th>Value</th><th>What it counts"
        "</th><th>Metric name</th></tr></thead><tbody>\n", NULL);
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        const char *help = NULL, *name = rmsync_shm_counter_name((rmsync_counter_e)i);
        const char *label = rmsync_shm_counter_label((rmsync_counter_e)i, &help);
        if (name) {
            rmsync_sb_addv(sb, "<tr data-counter=\"", E(name), "\"><td>", E(label),
                           "</td><td class=\"num\">",
                           apr_psprintf(p, "%u", (unsigned)rmsync_shm_counter_get(
                                            shm, (rmsync_counter_e)i)),
                           "</td><td class=\"hint\">", E(help), "</td><td class=\"mono\">",
                           E(name), "</td></tr>\n", NULL);
        }
    }
    rmsync_sb_addv(sb, "</tbody></table>", NULL);
    /* the HTML reads the snapshot directly (d is the same data as JSON), the nodes from d */
    rmsync_sb_addv(sb, "\n<p class=\"hint\">JSON: <a href=\"", E(a->base),
                       "/status?format=json\">status?format=json</a> &middot; Prometheus: <a "
                       "href=\"", E(a->base), "/metrics\">metrics</a></p>",
                       rmsync_html_page_end(p), NULL);
    return rmsync_sb_join(sb);
}

/* ---- Prometheus text format (version 0.0.4) ---- */

/* Label value: backslash, double quote and newline escaped. */
static const char *label(apr_pool_t *p, const char *s)
{
    char *out = apr_palloc(p, strlen(s) * 2 + 1), *o = out;
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') { *o++ = '\\'; *o++ = *s; }
        else if (*s == '\n') { *o++ = '\\'; *o++ = 'n'; }
        else *o++ = *s;
    }
    *o = '\0';
    return out;
}

/* Counters that belong to a labelled family; the rest are emitted one metric each. */
static const struct {
    rmsync_counter_e c;
    const char *family, *lname, *lvalue;
} families[] = {
    { RMSYNC_CTR_NOTIFY_BAD_CLIENTSTATE, "rmsync_notifications_rejected_total", "reason",
      "bad_clientstate" },
    { RMSYNC_CTR_NOTIFY_UNKNOWN_SUB, "rmsync_notifications_rejected_total", "reason",
      "unknown_subscription" },
    { RMSYNC_CTR_NOTIFY_MALFORMED, "rmsync_notifications_rejected_total", "reason",
      "malformed" },
    { RMSYNC_CTR_WEBHOOK_DB_UNAVAILABLE, "rmsync_notifications_rejected_total", "reason",
      "db_unavailable" },
    { RMSYNC_CTR_EVENTS_APPLIED, "rmsync_events_total", "action", "applied" },
    { RMSYNC_CTR_EVENTS_DELETED, "rmsync_events_total", "action", "deleted" },
    { RMSYNC_CTR_EVENTS_SKIPPED, "rmsync_events_total", "action", "skipped" },
    { RMSYNC_CTR_EVENTS_CREATED, "rmsync_events_total", "action", "transferred" },
    { RMSYNC_CTR_LINKS_CREATED, "rmsync_events_total", "action", "linked" },
    { RMSYNC_CTR_GRAPH_2XX, "rmsync_graph_responses_total", "status", "2xx" },
    { RMSYNC_CTR_GRAPH_4XX, "rmsync_graph_responses_total", "status", "4xx" },
    { RMSYNC_CTR_GRAPH_5XX, "rmsync_graph_responses_total", "status", "5xx" },
    { RMSYNC_CTR_GRAPH_TRANSPORT_ERRORS, "rmsync_graph_responses_total", "status",
      "transport_error" },
};

static const char *help_of(const char *family)
{
    if (!strcmp(family, "rmsync_notifications_rejected_total"))
        return "Webhook notification items or requests rejected, by reason.";
    if (!strcmp(family, "rmsync_events_total"))
        return "Outlook events handled by the sync, by action.";
    if (!strcmp(family, "rmsync_graph_responses_total"))
        return "Microsoft Graph responses, by status class.";
    return "";
}

const char *rmsync_admin_metrics_text(rmsync_admin_t *a)
{
    apr_pool_t *p = a->r->pool;
    const rmsync_shm_t *shm = a->shm;
    apr_time_t now = apr_time_now();
    const char *done_fam = "|";
    rmsync_sb_t *t = rmsync_sb_make(p);
    apr_size_t f, g;
    apr_uint32_t i;

    if (!shm) {
        return "# mod_rmsync: no shared memory (module not enabled on this server)\n"
               "rmsync_up 0\n";
    }
    /* labelled families first, each with one HELP/TYPE */
    for (f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
        const char *fam = families[f].family;
        if (strstr(done_fam, apr_pstrcat(p, "|", fam, "|", NULL))) {
            continue;
        }
        done_fam = apr_pstrcat(p, done_fam, fam, "|", NULL);
        rmsync_sb_addv(t, "# HELP ", fam, " ", help_of(fam), "\n# TYPE ", fam, " counter\n",
                        NULL);
        for (g = f; g < sizeof(families) / sizeof(families[0]); g++) {
            if (!strcmp(families[g].family, fam)) {
                rmsync_sb_addv(t, fam, "{", families[g].lname, "=\"", families[g].lvalue,
                                "\"} ", apr_psprintf(p, "%u", (unsigned)rmsync_shm_counter_get(
                                                         shm, families[g].c)), "\n", NULL);
            }
        }
    }
    /* every other counter: rmsync_<name>_total, gauges rmsync_<name> */
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        const char *name = rmsync_shm_counter_name((rmsync_counter_e)i), *m;
        int gauge = rmsync_shm_counter_is_gauge((rmsync_counter_e)i);
        int in_family = 0;
        for (f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
            in_family |= families[f].c == (rmsync_counter_e)i;
        }
        if (!name || in_family) {
            continue;
        }
        m = apr_pstrcat(p, "rmsync_", name, gauge ? "" : "_total", NULL);
        rmsync_sb_addv(t, "# TYPE ", m, gauge ? " gauge\n" : " counter\n", m, " ",
                        apr_psprintf(p, "%u", (unsigned)rmsync_shm_counter_get(
                                         shm, (rmsync_counter_e)i)), "\n", NULL);
    }
    /* the runner */
    rmsync_sb_addv(t,
        "# HELP rmsync_runner_up 1 when the sync runner's heartbeat is less than 30 s old.\n"
        "# TYPE rmsync_runner_up gauge\nrmsync_runner_up ",
        shm->runner.heartbeat && now - shm->runner.heartbeat < apr_time_from_sec(30) ? "1" : "0",
        "\n# TYPE rmsync_runner_heartbeat_age_seconds gauge\n"
        "rmsync_runner_heartbeat_age_seconds ",
        shm->runner.heartbeat ? apr_psprintf(p, "%.3f", (double)(now - shm->runner.heartbeat)
                                                        / APR_USEC_PER_SEC) : "NaN",
        "\n# TYPE rmsync_runner_cycles_total counter\nrmsync_runner_cycles_total ",
        apr_psprintf(p, "%" APR_UINT64_T_FMT, shm->runner.cycles), "\n",
        "# TYPE rmsync_generation gauge\nrmsync_generation ",
        apr_psprintf(p, "%u", (unsigned)shm->hdr.generation), "\n", NULL);

    rmsync_sb_add(t, rmsync_admin_health_metrics(a));

    /* per representative (live slots) */
    {
        rmsync_sb_t *lag = rmsync_sb_make(p), *since = rmsync_sb_make(p);
        rmsync_sb_t *sub = rmsync_sb_make(p), *held = rmsync_sb_make(p);
        for (i = 0; i < shm->rep_count && i < shm->hdr.rep_capacity; i++) {
            const rmsync_shm_rep_t *sr = &shm->reps[i];
            const char *l;
            if (!sr->representative_id[0]) {
                continue;
            }
            l = apr_pstrcat(p, "{representative=\"", label(p, sr->representative_id), "\"} ",
                            NULL);
            rmsync_sb_addv(lag, "rmsync_sync_lag_seconds", l,
                           apr_psprintf(p, "%.3f", sr->lag_ms / 1000.0), "\n", NULL);
            if (sr->last_success) {
                rmsync_sb_addv(since, "rmsync_seconds_since_last_success", l,
                               apr_psprintf(p, "%.0f", (double)apr_time_sec(
                                                now - sr->last_success)), "\n", NULL);
            }
            if (sr->subscription_expiry) {
                rmsync_sb_addv(sub, "rmsync_subscription_seconds_to_expiry", l,
                               apr_psprintf(p, "%.0f", (double)(sr->subscription_expiry - now)
                                                       / APR_USEC_PER_SEC), "\n", NULL);
            }
            rmsync_sb_addv(held, "rmsync_representative_held", l, sr->held ? "1" : "0", "\n",
                           NULL);
        }
        rmsync_sb_addv(t,
            "# HELP rmsync_sync_lag_seconds Last seen Outlook change -> activity written delay.\n"
            "# TYPE rmsync_sync_lag_seconds gauge\n", rmsync_sb_join(lag),
            "# HELP rmsync_seconds_since_last_success Seconds since the representative's last "
            "completed pass.\n# TYPE rmsync_seconds_since_last_success gauge\n",
            rmsync_sb_join(since),
            "# HELP rmsync_subscription_seconds_to_expiry Seconds until the Graph subscription "
            "expires.\n# TYPE rmsync_subscription_seconds_to_expiry gauge\n", rmsync_sb_join(sub),
            "# HELP rmsync_representative_held 1 when held by the mass-delete breaker.\n"
            "# TYPE rmsync_representative_held gauge\n", rmsync_sb_join(held), NULL);
    }
    return rmsync_sb_join(t);
}
