/* mod_rmsync: runs in the Apache worker processes (the admin handler). HTML of the
 * configuration and log pages, rendered from the same cJSON the JSON API prints. Every value
 * is escaped (rmsync_html_escape, which also escapes '), attributes are always double-quoted,
 * and no script or external asset is used (CSP default-src 'none'). */
#include <stdarg.h>
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

static const char *jstr(const cJSON *o, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(o, name));
}

static int jtrue(const cJSON *o, const char *name)
{
    return cJSON_IsTrue(cJSON_GetObjectItem(o, name));
}

static int jnum(const cJSON *o, const char *name, double *v)
{
    const cJSON *j = cJSON_GetObjectItem(o, name);
    if (!cJSON_IsNumber(j)) {
        return 0;
    }
    *v = j->valuedouble;
    return 1;
}

static const char *badge(apr_pool_t *p, const char *cls, const char *text)
{
    return apr_pstrcat(p, "<span class=\"badge ", cls, "\">", E(text), "</span>", NULL);
}

/* "2026-11-25 23:40:12Z" from "2026-11-25T23:40:12Z". */
static const char *human_time(apr_pool_t *p, const char *iso)
{
    char *t;
    if (!iso) {
        return NULL;
    }
    t = apr_pstrdup(p, iso);
    if (strlen(t) > 10 && t[10] == 'T') {
        t[10] = ' ';
    }
    return t;
}

/* "2026-11-25 23:40:12Z" from the ISO form, with an age when given. */
static const char *when(apr_pool_t *p, const char *iso, const cJSON *o, const char *age_field)
{
    double age;
    char *t;

    if (!iso) {
        return "<span class=\"hint\">never</span>";
    }
    t = (char *)human_time(p, iso);
    if (age_field && jnum(o, age_field, &age)) {
        return apr_pstrcat(p, "<span class=\"mono\">", E(t), "</span><br><span class=\"hint\">",
                           E(rmsync_fmt_duration(p, (long long)age)), " ago</span>", NULL);
    }
    return apr_pstrcat(p, "<span class=\"mono\">", E(t), "</span>", NULL);
}

/* A small POST form with the CSRF token: one button. fields: name/value pairs (NULL end). */
static const char *action_form(rmsync_admin_t *a, const char *page, const char *back,
                               const char *action, const char *label, const char *cls, ...)
    __attribute__((sentinel));

static const char *action_form(rmsync_admin_t *a, const char *page, const char *back,
                               const char *action, const char *label, const char *cls, ...)
{
    apr_pool_t *p = a->r->pool;
    const char *html, *name;
    va_list ap;

    html = apr_pstrcat(p, "<form class=\"inline\" method=\"post\" action=\"", E(a->base), "/",
                       E(page), "\"><input type=\"hidden\" name=\"token\" value=\"", E(a->csrf),
                       "\"><input type=\"hidden\" name=\"action\" value=\"", E(action), "\">",
                       NULL);
    if (back && *back) {
        html = apr_pstrcat(p, html, "<input type=\"hidden\" name=\"back\" value=\"", E(back),
                           "\">", NULL);
    }
    va_start(ap, cls);
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *value = va_arg(ap, const char *);
        html = apr_pstrcat(p, html, "<input type=\"hidden\" name=\"", E(name), "\" value=\"",
                           E(value), "\">", NULL);
    }
    va_end(ap);
    return apr_pstrcat(p, html, "<button type=\"submit\" data-action=\"", E(action), "\"",
                       cls ? " class=\"" : "", cls ? E(cls) : "", cls ? "\"" : "", ">",
                       E(label), "</button></form>", NULL);
}

/* Result of the last action (POST -> 303 -> GET ...?done=<code>): fixed texts only. */
static const char *flash(rmsync_admin_t *a)
{
    static const char *const msgs[][2] = {
        { "set_active", "Sync Active changed." },
        { "initial_sync", "Initial Sync requested; the sync service picks it up within seconds." },
        { "initial_sync_all", "Initial Sync for all representatives requested." },
        { "stop", "Sync service stopped. Notifications are still queued; nothing is applied "
                  "until it is started again." },
        { "start", "Sync service started." },
        { "approve", "Approval recorded; the held representative's next pass applies "
                     "the deletions." },
        { "reject", "Rejection recorded; the waiting deletions are not carried out, their "
                    "activities are kept and unlinked." },
        { "retry", "Retry requested; the event is fetched again and re-applied." },
        { "unlink", "Activity unlinked from its Outlook appointment." },
    };
    const char *done = apr_table_get(a->args, "done");
    apr_size_t i;

    if (!done) {
        return "";
    }
    for (i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        if (!strcmp(done, msgs[i][0])) {
            return apr_pstrcat(a->r->pool, "<div class=\"flash\" role=\"status\">", msgs[i][1],
                               "</div>\n", NULL);
        }
    }
    return "";
}

static const char *dl_item(apr_pool_t *p, const char *label, const char *value)
{
    return apr_pstrcat(p, "<dt>", E(label), "</dt><dd>", value ? E(value) : "-", "</dd>", NULL);
}

static const char *num_str(apr_pool_t *p, const cJSON *o, const char *name)
{
    double v;
    return jnum(o, name, &v) ? apr_psprintf(p, "%.0f", v) : NULL;
}

/* A request kind for people. */
static const char *kind_label(const char *k)
{
    static const char *const labels[][2] = {
        { "initial_sync", "Initial Sync" }, { "initial_sync_all", "Initial Sync for all" },
        { "approve", "Approve deletions" }, { "reject", "Reject deletions" },
        { "retry", "Retry event" }, { "unlink", "Unlink" },
        { "test_connection", "Test connection" }, { "test_mailbox", "Test mailbox" },
    };
    apr_size_t i;

    for (i = 0; k && i < sizeof(labels) / sizeof(labels[0]); i++) {
        if (!strcmp(k, labels[i][0])) {
            return labels[i][1];
        }
    }
    return k ? k : "?";
}

/* A request's result in one short line: a test's JSON as "3 of 4 checks passed", long text cut
 * (the whole text on hover). */
static const char *short_result(apr_pool_t *p, const char *res)
{
    cJSON *j;
    apr_size_t n;

    if (!res) {
        return "<span class=\"hint\">-</span>";
    }
    if (*res == '{' && (j = cJSON_Parse(res)) != NULL) {
        const cJSON *c, *checks = cJSON_GetObjectItem(j, "checks");
        int all = 0, ok = 0;
        const char *first_bad = NULL;
        cJSON_ArrayForEach(c, checks) {
            all++;
            if (cJSON_IsTrue(cJSON_GetObjectItem(c, "ok"))) {
                ok++;
            }
            else if (!first_bad) {
                first_bad = apr_pstrdup(p, jstr(c, "name"));
            }
        }
        cJSON_Delete(j);
        return apr_psprintf(p, "%d of %d checks passed%s%s", ok, all,
                            first_bad ? "; failed: " : "", first_bad ? E(first_bad) : "");
    }
    n = strlen(res);
    if (n <= 80) {
        return E(res);
    }
    return apr_pstrcat(p, "<span title=\"", E(res), "\">", E(apr_pstrmemdup(p, res, 72)),
                       "&hellip;</span>", NULL);
}

/* The latest requests (Initial Sync, Approve, Retry, tests, ...) and what the runner made of
 * them: kind, representative, state, age, a short result (tests link to their result page). */
static const char *requests_html(rmsync_admin_t *a, const cJSON *d)
{
    apr_pool_t *p = a->r->pool;
    const cJSON *reqs = cJSON_GetObjectItem(d, "requests"), *q;
    rmsync_sb_t *sb = rmsync_sb_make(p);

    if (cJSON_GetArraySize(reqs) == 0) {
        return "";
    }
    rmsync_sb_add(sb, "<h2>Latest requests</h2><table id=\"requests\"><thead><tr><th>Request</th>"
        "<th>Representative</th><th>State</th><th>Requested</th><th>By</th><th>Result</th>"
        "</tr></thead><tbody>");
    cJSON_ArrayForEach(q, reqs) {
        const char *st = jstr(q, "state"), *kind = jstr(q, "kind"), *id = num_str(p, q, "id");
        const char *cls = !st ? "" : !strcmp(st, "done") ? "ok" : !strcmp(st, "failed") ? "err"
                          : "warn";
        const char *act = num_str(p, q, "activity_no");
        const char *what = E(kind_label(kind));
        if (kind && !strncmp(kind, "test_", 5) && id) {
            what = apr_pstrcat(p, "<a href=\"", E(a->base), "/test?id=", E(id), "\">", what,
                               "</a>", NULL);
        }
        rmsync_sb_addv(sb, "<tr data-kind=\"", E(kind), "\"><td>", what, act ? apr_pstrcat(p, "<br><span class=\"hint\">"
                        "activity ", E(act), "</span>", NULL) : "",
                        "</td><td class=\"mono\">", E(jstr(q, "representative_id")),
                        "</td><td>", badge(p, cls, st ? st : "?"), "</td><td>",
                        when(p, jstr(q, "requested_at"), q, "age_s"), "</td><td>",
                        E(jstr(q, "requested_by")), "</td><td class=\"msg\">",
                        short_result(p, jstr(q, "result")), "</td></tr>", NULL);
    }
    rmsync_sb_add(sb, "</tbody></table>\n");
    return rmsync_sb_join(sb);
}

/* A test's result page: reloads itself (meta refresh, no script) until the runner is done. */
const char *rmsync_admin_test_html(rmsync_admin_t *a, const cJSON *d)
{
    apr_pool_t *p = a->r->pool;
    const char *st = jstr(d, "state"), *kind = jstr(d, "kind");
    int waiting = st && (!strcmp(st, "pending") || !strcmp(st, "processing"));
    const cJSON *res = cJSON_GetObjectItem(d, "result"), *c;
    rmsync_sb_t *sb = rmsync_sb_make(p);
    const char *title = apr_pstrcat(p, kind_label(kind), jstr(d, "representative_id")
                                    ? apr_pstrcat(p, ": ", jstr(d, "representative_id"), NULL)
                                    : "", NULL);

    rmsync_sb_addv(sb, rmsync_html_page_begin_refresh(p, a->base, title, "config",
                                                      waiting ? 2 : 0),
                   "<section class=\"card\" id=\"test\"><h2>", E(title), "</h2><p>",
                   badge(p, waiting ? "warn" : !strcmp(st, "done") ? "ok" : "err",
                         waiting ? "running" : !strcmp(st, "done") ? "passed" : "failed"),
                   " requested ", when(p, jstr(d, "requested_at"), d, "age_s"), "</p>", NULL);
    if (waiting) {
        rmsync_sb_addv(sb, "<p class=\"hint\">The sync runner carries out the test at its next "
                       "step (usually within seconds); this page reloads every 2 s.",
                       jtrue(d, "runner_alive") ? "" : " <strong>The runner is not running: "
                       "see the status page.</strong>", "</p>", NULL);
    }
    else if (cJSON_IsObject(res)) {
        rmsync_sb_add(sb, "<table id=\"checks\"><thead><tr><th>Check</th><th>Result</th>"
                      "<th>Details</th><th>What to do</th></tr></thead><tbody>");
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(res, "checks")) {
            int ok = jtrue(c, "ok");
            rmsync_sb_addv(sb, "<tr data-check=\"", E(jstr(c, "name")), "\"><td>",
                E(jstr(c, "name")), "</td><td>", badge(p, ok ? "ok" : "err", ok ? "ok" : "failed"),
                "</td><td class=\"msg\">", E(ok ? jstr(c, "detail") : jstr(c, "reason")),
                jstr(c, "graph_request_id") ? apr_pstrcat(p, "<br><span class=\"hint mono\">"
                    "Graph request id ", E(jstr(c, "graph_request_id")), "</span>", NULL) : "",
                "</td><td class=\"msg fix\">", ok ? "" : E(jstr(c, "fix")), "</td></tr>\n",
                NULL);
        }
        rmsync_sb_add(sb, "</tbody></table>");
    }
    else {
        rmsync_sb_addv(sb, "<p class=\"msg\">", E(jstr(d, "result_text")), "</p>", NULL);
    }
    rmsync_sb_addv(sb, "<p><a href=\"", E(a->base), "/config\">Back to the configuration</a>"
                   "</p></section>\n", rmsync_html_page_end(p), NULL);
    return rmsync_sb_join(sb);
}

/* The master category state of a configuration row; forbidden with its fix. */
static const char *category_cell(apr_pool_t *p, const cJSON *rep)
{
    const char *c = jstr(rep, "category");

    if (!c) {
        return "<span class=\"hint\">-</span>";
    }
    if (!strcmp(c, "ok")) {
        return badge(p, "ok", "ok");
    }
    if (!strcmp(c, "forbidden")) {
        return apr_pstrcat(p, badge(p, "warn", "forbidden"),
                           "<div class=\"fix\" data-error-class=\"categories_forbidden\">",
                           E(jstr(rep, "category_fix")), "</div>", NULL);
    }
    return apr_pstrcat(p, "<span class=\"hint\">", E(c), "</span>", NULL);
}

/* The configuration page's link to page n of the representatives (the search kept); html:
 * constant markup or a number. */
static const char *reps_link(rmsync_admin_t *a, const char *q, long long n, const char *html)
{
    apr_pool_t *p = a->r->pool;
    return apr_pstrcat(p, "<a href=\"", E(a->base), "/config?",
                       q ? E(apr_pstrcat(p, "q=", rmsync_url_escape(p, q), "&", NULL)) : "",
                       "page=", apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)n), "#representatives\">", html,
                       "</a>", NULL);
}

/* Search box (top only) and page links of the representatives. */
static const char *reps_pager(rmsync_admin_t *a, const cJSON *pg, int top)
{
    apr_pool_t *p = a->r->pool;
    const char *q = jstr(pg, "q"), *html;
    double total = 0, page = 1, pages = 1, per = RMSYNC_ADMIN_REPS_PAGE, active = 0;
    long long n;

    jnum(pg, "total", &total);
    jnum(pg, "page", &page);
    jnum(pg, "pages", &pages);
    jnum(pg, "per_page", &per);
    jnum(pg, "sync_active", &active);
    html = apr_psprintf(p, "<div class=\"pager\" id=\"reps-pager%s\"><span class=\"hint\">"
                        "%.0f&ndash;%.0f of %.0f%s (%.0f with Sync Active)</span> ",
                        top ? "" : "-bottom", total ? (page - 1) * per + 1 : 0,
                        page * per < total ? page * per : total, total,
                        q ? " matching" : "", active);
    if (page > 1) {
        html = apr_pstrcat(p, html, reps_link(a, q, 1, "&laquo; first"), " ",
                           reps_link(a, q, (long long)page - 1, "&lsaquo; previous"), " ",
                           NULL);
    }
    /* a few pages around this one */
    for (n = (long long)page - 3 < 1 ? 1 : (long long)page - 3;
         n <= (long long)pages && n <= (long long)page + 3; n++) {
        html = apr_pstrcat(p, html, n == (long long)page
                           ? apr_psprintf(p, "<strong>%" APR_INT64_T_FMT "</strong>", (apr_int64_t)n)
                           : reps_link(a, q, n, apr_psprintf(p, "%" APR_INT64_T_FMT, (apr_int64_t)n)), " ", NULL);
    }
    if (page < pages) {
        html = apr_pstrcat(p, html, reps_link(a, q, (long long)page + 1, "next &rsaquo;"), " ",
                           reps_link(a, q, (long long)pages, "last &raquo;"), NULL);
    }
    html = apr_pstrcat(p, html, "</div>", NULL);
    if (!top) {
        return html;
    }
    return apr_pstrcat(p, "<form class=\"filter\" method=\"get\" action=\"", E(a->base),
                       "/config#representatives\" role=\"search\"><label>Search<input "
                       "type=\"search\" name=\"q\" maxlength=\"",
                       apr_itoa(p, RMSYNC_ADMIN_LOG_Q_MAX), "\" placeholder=\"name, id or "
                       "e-mail\" value=\"", E(q ? q : ""), "\"></label> <button type=\"submit\">"
                       "Search</button>", q ? apr_pstrcat(p, " <a href=\"", E(a->base),
                       "/config#representatives\">Show all</a>", NULL) : "", "</form>", html,
                       NULL);
}

const char *rmsync_admin_config_html(rmsync_admin_t *a, const cJSON *d)
{
    apr_pool_t *p = a->r->pool;
    const cJSON *s = cJSON_GetObjectItem(d, "settings");
    const cJSON *m = cJSON_GetObjectItem(d, "master_user");
    const cJSON *sv = cJSON_GetObjectItem(d, "service");
    const cJSON *reps = cJSON_GetObjectItem(d, "representatives");
    const cJSON *rep;
    const char *st, *cls;
    int running = jtrue(sv, "running");
    rmsync_sb_t *sb = rmsync_sb_make(p);
    /* a row's action comes back to this page of the list (actions.c whitelists it) */
    const cJSON *pg = cJSON_GetObjectItem(d, "paging");
    double pno = 1;
    const char *back = (jnum(pg, "page", &pno) && pno > 1) || jstr(pg, "q")
        ? apr_pstrcat(p, jstr(pg, "q") ? apr_pstrcat(p, "q=", rmsync_url_escape(p, jstr(pg, "q")),
                                                     "&", NULL) : "",
                      "page=", apr_psprintf(p, "%.0f", pno), NULL)
        : NULL;

    rmsync_sb_addv(sb, rmsync_html_page_begin(p, a->base, "Calendar Sync Configuration", "config"),
                   flash(a), NULL);

    /* header: effective settings (from httpd.conf; the secret is never shown) */
    rmsync_sb_addv(sb, "<section class=\"card\" id=\"settings\"><h2>Settings</h2>"
        "<dl class=\"settings\">",
        dl_item(p, "Tenant", jstr(s, "tenant")),
        dl_item(p, "Application (client) id", jstr(s, "client_id")),
        dl_item(p, "Client secret", jtrue(s, "client_secret_set") ? "set (not shown)" : "not set"),
        dl_item(p, "Sync cycle", apr_psprintf(p, "%s s", num_str(p, s, "sync_cycle_s"))),
        dl_item(p, "Initial sync from", jstr(s, "initial_sync_from")),
        dl_item(p, "Sync window", apr_psprintf(p, "%s days ahead", num_str(p, s, "window_days"))),
        dl_item(p, "Outlook delete", jstr(s, "delete_policy")),
        dl_item(p, "Outlook cancel", jstr(s, "cancel_policy")),
        dl_item(p, "Master category", apr_pstrcat(p, jstr(s, "category_name") ?
                jstr(s, "category_name") : "-", jstr(s, "category_color") ? " (" : "",
                jstr(s, "category_color") ? jstr(s, "category_color") : "",
                jstr(s, "category_color") ? ")" : "", NULL)),
        dl_item(p, "Transfer attendees", jtrue(s, "transfer_attendees") ? "yes" : "no"),
        dl_item(p, "Permission set", jstr(s, "permission_set")),
        dl_item(p, "Mass-delete limit", apr_psprintf(p, "%s activities or %s%%",
                num_str(p, s, "mass_delete_limit_count"),
                num_str(p, s, "mass_delete_limit_percent"))),
        dl_item(p, "Graph URL", jstr(s, "graph_url")),
        dl_item(p, "Notification URL", jstr(s, "notification_url")),
        "</dl></section>\n", NULL);

    /* SYNC_MASTER */
    st = jstr(m, "state");
    cls = st && !strcmp(st, "ready") ? "ok" : "err";
    rmsync_sb_addv(sb, "<section class=\"card\" id=\"master\"><h2>Sync user</h2><p>",
                    "<span class=\"mono\">", E(jstr(m, "identity")), "</span> ",
                    badge(p, cls, st ? st : "unknown"), "</p>",
                    jstr(m, "todo") ? apr_pstrcat(p, "<p class=\"hint\">", E(jstr(m, "todo")),
                                                 "</p>", NULL) : "",
                    "</section>\n", NULL);

    /* the sync service */
    rmsync_sb_addv(sb, "<section class=\"card\" id=\"service\"><h2>Sync service</h2><p>",
        running ? badge(p, "ok", "running") : badge(p, "err", "stopped"),
        jstr(sv, "changed_by") ? apr_pstrcat(p, " <span class=\"hint\">since ",
            E(jstr(sv, "changed_at")), " by ", E(jstr(sv, "changed_by")), "</span>", NULL) : "",
        NULL);
    if (a->shm) {
        const rmsync_shm_runner_t *rn = &a->shm->runner;
        apr_time_t now = apr_time_now();
        rmsync_sb_addv(sb, " &nbsp; runner ",
            badge(p, rn->state == RMSYNC_RUNNER_IDLE || rn->state == RMSYNC_RUNNER_WORKING
                     ? "ok" : "warn", rmsync_runner_state_name(rn->state)),
            rn->pid ? apr_psprintf(p, " <span class=\"hint\">pid %u, heartbeat %s ago%s%s</span>",
                                   (unsigned)rn->pid, E(rmsync_fmt_duration(p,
                                   apr_time_sec(now - rn->heartbeat))),
                                   rn->activity[0] ? ": " : "", E(rn->activity)) : "", NULL);
    }
    rmsync_sb_addv(sb, "</p>",
        running ? "" : "<p class=\"hint\">While stopped, Outlook notifications are stored "
                       "but not applied; start the service to catch up.</p>",
        "<div class=\"actions\">",
        running ? action_form(a, "config", NULL, "stop", "Stop sync service", "danger", NULL)
                : action_form(a, "config", NULL, "start", "Start sync service", "primary",
                              NULL),
        action_form(a, "config", NULL, "initial_sync_all", "Initial Sync for all", NULL, NULL),
        action_form(a, "config", NULL, "test_connection", "Test connection", NULL, NULL),
        jtrue(d, "initial_sync_all_pending") ? badge(p, "warn", "Initial Sync for all pending")
                                             : "",
        "</div></section>\n", NULL);

    /* representatives: one page of them (a search box and page links, no script) */
    rmsync_sb_addv(sb, "<h2>Representatives</h2>",
        "<p class=\"hint\">Representatives whose user holds the permission set <span "
        "class=\"mono\">", E(jstr(s, "permission_set")), "</span>. Only those with Sync Active "
        "are synced.</p>", reps_pager(a, cJSON_GetObjectItem(d, "paging"), 1),
        "<table id=\"representatives\"><thead><tr><th>Name</th><th>Mailbox</th>"
        "<th>Sync Active</th><th>Last successful sync</th><th>Lag</th>"
        "<th>Subscription expires</th><th>Linked</th><th>Master category</th>"
        "<th>Last error</th><th>Breaker</th>"
        "<th>Initial Sync</th></tr></thead><tbody>\n", NULL);
    if (cJSON_GetArraySize(reps) == 0) {
        rmsync_sb_addv(sb, "<tr><td colspan=\"11\" class=\"hint\">",
                        jstr(cJSON_GetObjectItem(d, "paging"), "q")
                        ? "No representative matches the search."
                        : "No representative holds the permission set.", "</td></tr>", NULL);
    }
    cJSON_ArrayForEach(rep, reps) {
        const char *id = jstr(rep, "representative_id");
        int active = jtrue(rep, "sync_active");
        double lag, linked, exp_in;
        const char *lagc, *subc, *errc, *brk, *init;

        lagc = jnum(rep, "lag_ms", &lag) && lag > 0
               ? E(lag < 1000 ? apr_psprintf(p, "%.0f ms", lag)
                              : rmsync_fmt_duration(p, (long long)(lag / 1000)))
               : "<span class=\"hint\">-</span>";
        if (jstr(rep, "subscription_expires_at") && jnum(rep, "subscription_expires_in_s", &exp_in)) {
            subc = apr_pstrcat(p, when(p, jstr(rep, "subscription_expires_at"), NULL, NULL),
                               "<br><span class=\"hint\">",
                               exp_in >= 0 ? apr_pstrcat(p, "in ",
                                   E(rmsync_fmt_duration(p, (long long)exp_in)), NULL)
                                           : "expired",
                               "</span>", NULL);
        }
        else {
            subc = "<span class=\"hint\">none</span>";
        }
        errc = jstr(rep, "last_error")
               ? apr_pstrcat(p, "<span class=\"badge err\">error</span> ",
                             E(jstr(rep, "last_error")), "<br>",
                             when(p, jstr(rep, "last_error_at"), NULL, NULL),
                             rmsync_admin_error_fix_html(p, jstr(rep, "last_error")), NULL)
               : "<span class=\"hint\">-</span>";
        if (jtrue(rep, "held_by_breaker")) {
            brk = apr_pstrcat(p, badge(p, "err", "held"), " ",
                              E(jstr(rep, "held_reason")), "<br>",
                              jtrue(rep, "approve_pending")
                                  ? badge(p, "warn", "decision pending")
                                  : apr_pstrcat(p, action_form(a, "config", back, "approve",
                                                "Approve", "danger", "rep", id, NULL), " ",
                                                action_form(a, "config", back, "reject",
                                                "Reject (keep and unlink)", NULL, "rep", id,
                                                NULL), NULL), NULL);
        }
        else {
            brk = "<span class=\"hint\">-</span>";
        }
        init = jtrue(rep, "initial_sync_pending")
               ? badge(p, "warn", "pending")
               : active ? action_form(a, "config", back, "initial_sync", "Initial Sync",
                                      NULL, "rep", id, NULL)
               : "<button type=\"button\" disabled title=\"Activate Sync first\">"
                 "Initial Sync</button>";
        init = apr_pstrcat(p, init, " ", action_form(a, "config", back, "test_mailbox",
                                                     "Test mailbox", NULL, "rep", id, NULL), NULL);
        rmsync_sb_addv(sb, "<tr data-rep=\"", E(id), "\"><td><strong>", E(jstr(rep, "name")),
            "</strong><br><span class=\"hint mono\">", E(id), "</span>",
            jtrue(rep, "user_enabled") ? "" : " <span class=\"badge warn\">user disabled</span>",
            "</td><td class=\"mono\">", E(jstr(rep, "mailbox")), "</td>"
            "<td class=\"sync-active\">",
            active ? badge(p, "ok", "Yes") : badge(p, "", "No"), " ",
            action_form(a, "config", back, "set_active", active ? "Deactivate" : "Activate",
                        NULL, "rep", id, "active", active ? "0" : "1", NULL),
            "</td><td>", when(p, jstr(rep, "last_success_at"), rep, "last_success_age_s"),
            "</td><td class=\"num\">", lagc, "</td><td>", subc,
            "</td><td class=\"num\">", jnum(rep, "linked_count", &linked)
                ? apr_psprintf(p, "%.0f", linked) : "0",
            "</td><td class=\"category\">", category_cell(p, rep),
            "</td><td class=\"msg\">", errc, "</td><td>", brk, "</td><td>", init,
            "</td></tr>\n", NULL);
    }
    rmsync_sb_addv(sb, "</tbody></table>\n", reps_pager(a, cJSON_GetObjectItem(d, "paging"), 0),
                    "<p class=\"hint\" id=\"lag-help\"><b>Lag</b>: for the "
                    "latest Outlook change applied, the time from the change in Outlook to the "
                    "activity written; it stays until the next change is applied. "
                    "<b>Master category</b>: the sync category in the mailbox's category list: "
                    "<i>ok</i> created or found; <i>forbidden</i> the app lacks "
                    "MailboxSettings.ReadWrite; <i>not yet</i> not checked yet, or the last "
                    "check failed and is retried with the next sync.</p>\n",
                    requests_html(a, d), rmsync_html_page_end(p),
                   NULL);
    return rmsync_sb_join(sb);
}

/* The log page's current query (filters and paging) re-encoded from the parsed, whitelisted
 * arguments, so it is safe to put into links and the actions' "back" field. */
static const char *log_query(rmsync_admin_t *a, int with_paging, const char *extra_k,
                             const char *extra_v)
{
    static const char *const keep[] = { "rep", "level", "min_level", "q", "activity", "event",
                                        "action", "from", "to", "n", "tz", "before", "after",
                                        NULL };
    apr_pool_t *p = a->r->pool;
    const char *q = "";
    int i;

    for (i = 0; keep[i]; i++) {
        const char *v = apr_table_get(a->args, keep[i]);
        if (!v || !*v || (!with_paging && (!strcmp(keep[i], "before")
                                           || !strcmp(keep[i], "after")))) {
            continue;
        }
        q = apr_pstrcat(p, q, *q ? "&" : "", keep[i], "=", rmsync_url_escape(p, v), NULL);
    }
    if (extra_k) {
        q = apr_pstrcat(p, q, *q ? "&" : "", extra_k, "=", rmsync_url_escape(p, extra_v), NULL);
    }
    return q;
}

static const char *option(apr_pool_t *p, const char *value, const char *label, const char *cur)
{
    return apr_pstrcat(p, "<option value=\"", E(value), "\"",
                       cur && !strcmp(cur, value) ? " selected" : "", ">", E(label),
                       "</option>", NULL);
}

static const char *text_input(apr_pool_t *p, const char *name, const char *label,
                              const char *cur, const char *type, const char *ph)
{
    return apr_pstrcat(p, "<label>", E(label), "<input type=\"", type, "\" name=\"", name,
                       "\" value=\"", E(cur), "\"", ph ? " placeholder=\"" : "", ph ? E(ph) : "",
                       ph ? "\"" : "", "></label>", NULL);
}

/* The activity number, linked to the CRM when RMSyncActivityURL is set (%s = the number;
 * the directive is validated at configtest, the number is digits only). */
static const char *activity_cell(rmsync_admin_t *a, const char *act)
{
    apr_pool_t *p = a->r->pool;
    const char *tpl = a->s->activity_url, *pct;

    if (!act) {
        return "";
    }
    if (!tpl || !(pct = strstr(tpl, "%s"))) {
        return E(act);
    }
    return apr_pstrcat(p, "<a href=\"", E(apr_pstrcat(p, apr_pstrmemdup(p, tpl,
                       (apr_size_t)(pct - tpl)), rmsync_url_escape(p, act), pct + 2, NULL)),
                       "\" rel=\"noopener noreferrer\">", E(act), "</a>", NULL);
}

/* A long Outlook event id shortened to its head and tail; the full id is in the title (hover)
 * and, without script, one click away in a <details> where it can be selected and copied. */
static const char *event_id_cell(apr_pool_t *p, const char *id)
{
    apr_size_t n;

    if (!id) {
        return "";
    }
    n = strlen(id);
    if (n <= 24) {
        return apr_pstrcat(p, "<span class=\"mono\" title=\"Outlook event id\">", E(id),
                           "</span>", NULL);
    }
    return apr_pstrcat(p, "<details class=\"evid\"><summary class=\"mono\" title=\"", E(id),
                       "\">", E(apr_pstrmemdup(p, id, 10)), "&hellip;", E(id + n - 8),
                       "</summary><code class=\"mono\" data-copy=\"event\">", E(id),
                       "</code></details>", NULL);
}

/* The time in the page's zone; UTC on hover. */
static const char *time_cell(apr_pool_t *p, const cJSON *row)
{
    const char *loc = jstr(row, "at_local"), *utc = jstr(row, "at");

    return apr_pstrcat(p, "<time datetime=\"", E(utc), "\" title=\"UTC: ",
                       E(human_time(p, utc)), "\">", E(loc ? loc : human_time(p, utc)),
                       "</time>", NULL);
}

/* "x 30 since 08:00" when the row stands for repeated errors (columns of the aggregation). */
static const char *repeat_note(apr_pool_t *p, const cJSON *row)
{
    double n;

    if (!jnum(row, "repeat_count", &n) || n <= 1) {
        return "";
    }
    return apr_pstrcat(p, " <span class=\"badge\" title=\"repeated; first at ",
                       E(human_time(p, jstr(row, "first_at"))), "\">&times; ",
                       apr_psprintf(p, "%.0f", n), "</span>", NULL);
}

const char *rmsync_admin_log_html(rmsync_admin_t *a, const cJSON *d)
{
    apr_pool_t *p = a->r->pool;
    const cJSON *f = cJSON_GetObjectItem(d, "filter");
    const cJSON *rows = cJSON_GetObjectItem(d, "rows");
    const cJSON *reps = cJSON_GetObjectItem(d, "representatives");
    const cJSON *row;
    const char *back, *lvl = jstr(f, "level"), *pager, *tz, *minl;
    rmsync_sb_t *sb = rmsync_sb_make(p), *sel = rmsync_sb_make(p);
    double newest, oldest;

    rmsync_sb_addv(sb, rmsync_html_page_begin(p, a->base, "Calendar Sync Log", "log"), flash(a),
                   NULL);

    /* filter (GET) */
    rmsync_sb_add(sel, option(p, "", "all", jstr(f, "rep")));
    cJSON_ArrayForEach(row, reps) {
        rmsync_sb_add(sel, option(p, jstr(row, "representative_id"),
                                  jstr(row, "name") ? jstr(row, "name")
                                                    : jstr(row, "representative_id"),
                                  jstr(f, "rep")));
    }
    tz = jstr(d, "tz") ? jstr(d, "tz") : "UTC";
    minl = jstr(f, "min_level");
    rmsync_sb_addv(sb, "<form class=\"filter\" method=\"get\" action=\"", E(a->base),
        "/log\"><label>Representative<select name=\"rep\">", rmsync_sb_join(sel),
        "</select></label>"
        "<label>Level<select name=\"min_level\">",
        option(p, "info", "info and above", minl), option(p, "warning", "warning and above", minl),
        option(p, "error", "errors only", minl), option(p, "debug", "everything (debug)", minl),
        "</select></label>",
        lvl ? apr_pstrcat(p, "<input type=\"hidden\" name=\"level\" value=\"", E(lvl), "\">",
                          NULL) : "",
        text_input(p, "q", "Text", jstr(f, "q"), "search", "subject or message"),
        text_input(p, "activity", "Activity no", jstr(f, "activity"), "text", NULL),
        text_input(p, "event", "Outlook event id", jstr(f, "event"), "text", NULL),
        text_input(p, "action", "Action", jstr(f, "action"), "text", NULL),
        text_input(p, "from", apr_pstrcat(p, "From (", tz, ")", NULL), jstr(f, "from"), "text",
                   "YYYY-MM-DD[THH:MM]"),
        text_input(p, "to", apr_pstrcat(p, "To (", tz, ")", NULL), jstr(f, "to"), "text",
                   "YYYY-MM-DD[THH:MM]"),
        text_input(p, "tz", "Time zone", tz, "text", "Europe/Berlin"),
        "<button type=\"submit\" class=\"primary\">Filter</button> <a href=\"", E(a->base),
        "/log\">Reset</a> <a href=\"", E(a->base), "/log?",
        E(log_query(a, 0, "format", "csv")), "\" download data-action=\"csv\">Export CSV</a>"
        " <span class=\"hint\">(this filter, newest first, at most ",
        apr_psprintf(p, "%d", RMSYNC_ADMIN_LOG_CSV_MAX), " rows)</span></form>\n"
        "<p class=\"hint\">Times in ", E(tz), " (UTC on hover; the time zone is remembered in a "
        "cookie). From/To are read in that zone.</p>\n", NULL);

    back = log_query(a, 1, NULL, NULL);
    rmsync_sb_addv(sb, "<table id=\"log\"><thead><tr><th>Time (", E(tz), ")</th><th>Level</th>"
                    "<th>Representative</th><th>Activity</th><th>Action</th><th>Message</th>"
                    "<th>Graph request id</th><th></th></tr></thead><tbody>\n", NULL);
    if (cJSON_GetArraySize(rows) == 0) {
        rmsync_sb_addv(sb, "<tr><td colspan=\"8\" class=\"hint\">No log entries match."
                        "</td></tr>", NULL);
    }
    cJSON_ArrayForEach(row, rows) {
        const char *level = jstr(row, "level"), *id = num_str(p, row, "id");
        const char *act = num_str(p, row, "activity_no"), *acts = "";
        const char *lc = !level ? "" : !strcmp(level, "error") ? "err"
                         : !strcmp(level, "warning") ? "warn" : !strcmp(level, "info") ? "ok"
                         : "";
        const char *repc = jstr(row, "representative_id")
            ? apr_pstrcat(p, E(jstr(row, "representative_name") ? jstr(row, "representative_name")
                                                               : jstr(row, "representative_id")),
                          "<br><span class=\"hint mono\">", E(jstr(row, "representative_id")),
                          "</span>", NULL)
            : "<span class=\"hint\">-</span>";
        const char *evt = jstr(row, "event_id")
            ? apr_pstrcat(p, "<br>", event_id_cell(p, jstr(row, "event_id")), NULL) : "";

        if (jtrue(row, "can_retry")) {
            acts = action_form(a, "log", back, "retry", "Retry", NULL, "log", id, NULL);
        }
        if (jtrue(row, "can_unlink")) {
            acts = apr_pstrcat(p, acts, " ", action_form(a, "log", back, "unlink", "Unlink",
                                                         "danger", "log", id, NULL), NULL);
        }
        rmsync_sb_addv(sb, "<tr data-log=\"", E(id), "\"><td class=\"mono when\">",
            time_cell(p, row), "</td><td>", badge(p, lc, level ? level : "?"),
            repeat_note(p, row), "</td><td>", repc,
            "</td><td class=\"num\">", activity_cell(a, act), "</td><td>",
            E(jstr(row, "action")),
            "</td><td class=\"msg\">", E(jstr(row, "message")),
            rmsync_admin_log_row_note_html(p, row), evt,
            "</td><td class=\"mono\">", E(jstr(row, "graph_request_id")), "</td><td>", acts,
            "</td></tr>\n", NULL);
    }
    rmsync_sb_addv(sb, "</tbody></table>\n", NULL);

    pager = "";
    if (jtrue(d, "has_newer") && jnum(d, "newest_id", &newest)) {
        pager = apr_pstrcat(p, "<a href=\"", E(a->base), "/log?", E(log_query(a, 0, NULL, NULL)),
                            "\">&laquo; Newest</a><a href=\"", E(a->base), "/log?",
                            E(log_query(a, 0, "after", apr_psprintf(p, "%.0f", newest))),
                            "\">&lsaquo; Newer</a>", NULL);
    }
    if (jtrue(d, "has_older") && jnum(d, "oldest_id", &oldest)) {
        pager = apr_pstrcat(p, pager, "<a href=\"", E(a->base), "/log?",
                            E(log_query(a, 0, "before", apr_psprintf(p, "%.0f", oldest))),
                            "\">Older &rsaquo;</a>", NULL);
    }
    rmsync_sb_addv(sb, "<div class=\"pager\">", pager, "</div>\n", rmsync_html_page_end(p),
                   NULL);
    return rmsync_sb_join(sb);
}

const char *rmsync_admin_confirm_html(rmsync_admin_t *a, const char *action, const char *question,
                                      const char *detail, const char *label, const char *back,
                                      const char *log)
{
    apr_pool_t *p = a->r->pool;
    const char *page = strcmp(action, "unlink") ? "config" : "log";

    return apr_pstrcat(p, rmsync_html_page_begin(p, a->base, question, page),
        "<section class=\"card\" id=\"confirm\"><h2>", E(question), "</h2><p>", E(detail),
        "</p><div class=\"actions\">",
        log ? action_form(a, page, back, action, label, "danger", "confirm", "1", "log", log,
                          NULL)
            : action_form(a, page, back, action, label, "danger", "confirm", "1", NULL),
        " <a href=\"", E(a->base), "/", page, "\" data-action=\"cancel\">Cancel</a>",
        "</div></section>\n", rmsync_html_page_end(p), NULL);
}
