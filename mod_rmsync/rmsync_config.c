/* mod_rmsync: runs in the httpd parent (directives, check_config, post_config warnings); the
 * children inherit the settings it builds. RMSync* directives: every value is validated when
 * read (the pure validators are in the core); an error names the directive, so `apache2 -t`
 * points at it. */
#include <stddef.h>

#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"

#include <apr_strings.h>
#include <apr_hash.h>

#include "rmsync.h"
#include "rmsync_jwt.h"
#include "mod_rmsync_config.h"
#include "rmsync_csrf.h"
#include "rmsync_shm.h"

APLOG_USE_MODULE(rmsync);

typedef struct rmsync_srv_conf_t {
    rmsync_settings_t *settings;
    apr_hash_t *seen;           /* directive name -> where it was first given ("line N of F") */
} rmsync_srv_conf_t;

void *rmsync_config_create_srv(apr_pool_t *p, server_rec *s)
{
    rmsync_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->settings = apr_pcalloc(p, sizeof(*c->settings));
    rmsync_settings_defaults(c->settings);
    c->seen = apr_hash_make(p);
    return c;
}

void *rmsync_config_merge_srv(apr_pool_t *p, void *base, void *add)
{
    /* All directives are global (main server only): virtual hosts share its settings. */
    (void)p;
    (void)add;
    return base;
}

const rmsync_settings_t *rmsync_config_get(const server_rec *s)
{
    rmsync_srv_conf_t *c = ap_get_module_config(s->module_config, &rmsync_module);
    return c->settings;
}

static rmsync_settings_t *settings_of(cmd_parms *cmd)
{
    rmsync_srv_conf_t *c = ap_get_module_config(cmd->server->module_config, &rmsync_module);
    return c->settings;
}

/* A directive given a second time is an error naming both places (else the second would
 * silently win). The first location is kept in the server config, which lives as long as one
 * reading of the configuration. */
static const char *once(cmd_parms *cmd)
{
    rmsync_srv_conf_t *c = ap_get_module_config(cmd->server->module_config, &rmsync_module);
    const ap_directive_t *d = cmd->directive;
    const char *name = cmd->cmd->name, *first;
    const char *here = apr_psprintf(cmd->pool, "line %d of %s", d ? d->line_num : 0,
                                    d && d->filename ? d->filename : "?");

    first = apr_hash_get(c->seen, name, APR_HASH_KEY_STRING);
    if (first && strcmp(first, here)) {   /* the same line again: one call per ITERATE value */
        return apr_psprintf(cmd->pool, "%s is given twice: first on %s, again on %s; keep one",
                            name, first, here);
    }
    apr_hash_set(c->seen, name, APR_HASH_KEY_STRING, here);
    return NULL;
}

/* Common prologue: global context only, each directive once. */
#define GLOBAL_ONLY_OR_RETURN(cmd) do { \
        const char *ctx_err_ = ap_check_cmd_context((cmd), GLOBAL_ONLY); \
        if (!ctx_err_) ctx_err_ = once(cmd); \
        if (ctx_err_) return ctx_err_; } while (0)

static const char *fail(cmd_parms *cmd, const char *err)
{
    return err ? apr_psprintf(cmd->pool, "%s: %s", cmd->directive->directive, err) : NULL;
}

/* One integer argument of a multi-argument directive; an error names the directive and what
 * ("RMSyncGraphTimeouts: connect timeout (seconds): ..."). */
static const char *int_arg(cmd_parms *cmd, const char *arg, const char *what, long min,
                           long max, int *out)
{
    const char *err = rmsync_parse_int(cmd->pool, arg, min, max, out);
    return err ? fail(cmd, apr_pstrcat(cmd->pool, what, ": ", err, NULL)) : NULL;
}

static const char *set_database(cmd_parms *cmd, void *dc, const char *arg)
{
    rmsync_settings_t *s = settings_of(cmd);
    const char *err;
    GLOBAL_ONLY_OR_RETURN(cmd);
    if ((err = rmsync_check_conninfo(cmd->pool, arg))) {
        return fail(cmd, err);
    }
    s->db_conninfo = apr_pstrdup(cmd->pool, arg);
    s->enabled = 1;
    return NULL;
}

/* Directives of two integers (TAKE2, or TAKE12 where an absent second keeps its value),
 * described by their cmd->info. */
typedef struct {
    const char *what[2];          /* named in errors */
    long min[2], max[2];
    apr_size_t field[2];          /* offsetof(rmsync_settings_t, <int field>) */
    const char *unordered;        /* error when the first exceeds the second (NULL: no rule) */
    int percent;                  /* the second may end in '%' */
} int_pair_t;

static int_pair_t db_timeouts = {
    { "connect timeout (seconds)", "statement timeout (milliseconds)" }, { 1, 100 },
    { 300, 3600000 }, { offsetof(rmsync_settings_t, db_connect_timeout_s),
                        offsetof(rmsync_settings_t, db_statement_timeout_ms) }, NULL, 0
};
static int_pair_t db_pool = {
    { "most connections in all", "idle seconds" }, { 2, 1 }, { RMSYNC_SHM_DB_SLOTS, 3600 },
    { offsetof(rmsync_settings_t, db_pool_max), offsetof(rmsync_settings_t, db_pool_idle_s) },
    NULL, 0
};
static int_pair_t graph_timeouts = {
    { "connect timeout (seconds)", "total timeout (seconds)" }, { 1, 1 }, { 300, 3600 },
    { offsetof(rmsync_settings_t, graph_connect_timeout_s),
      offsetof(rmsync_settings_t, graph_total_timeout_s) },
    "the connect timeout is longer than the total timeout", 0
};
static int_pair_t graph_concurrency = {
    { "requests per mailbox", "parallel mailboxes" }, { 1, 1 }, { 4, 64 },
    { offsetof(rmsync_settings_t, graph_per_mailbox),
      offsetof(rmsync_settings_t, graph_parallel_mailboxes) }, NULL, 0
};
/* RMSyncMassDeleteLimit <count> [<percent>[%]] */
static int_pair_t mass_delete = {
    { "count", "percent" }, { 1, 1 }, { 1000000, 100 },
    { offsetof(rmsync_settings_t, breaker_count), offsetof(rmsync_settings_t, breaker_percent) },
    NULL, 1
};
/* RMSyncDeleteSettle <seconds 0..300> [<window seconds 60..86400>] */
static int_pair_t delete_settle = {
    { "seconds", "window" }, { 0, 60 }, { 300, 86400 },
    { offsetof(rmsync_settings_t, delete_settle_s),
      offsetof(rmsync_settings_t, breaker_window_s) }, NULL, 0
};

static int *int_field(rmsync_settings_t *s, apr_size_t off)
{
    return (int *)(void *)((char *)s + off);   /* an int member: aligned */
}

static const char *set_int_pair(cmd_parms *cmd, void *dc, const char *a1, const char *a2)
{
    const int_pair_t *k = cmd->info;
    rmsync_settings_t *s = settings_of(cmd);
    const char *arg[2] = { a1, a2 }, *err;
    int v[2], i;
    GLOBAL_ONLY_OR_RETURN(cmd);
    if (k->percent && a2 && strlen(a2) > 1 && a2[strlen(a2) - 1] == '%') {
        arg[1] = apr_pstrmemdup(cmd->temp_pool, a2, strlen(a2) - 1);
    }
    for (i = 0; i < 2; i++) {
        v[i] = *int_field(s, k->field[i]);
        if (arg[i] && (err = int_arg(cmd, arg[i], k->what[i], k->min[i], k->max[i], &v[i]))) {
            return err;
        }
    }
    if (k->unordered && v[0] > v[1]) {
        return fail(cmd, k->unordered);
    }
    *int_field(s, k->field[0]) = v[0];
    *int_field(s, k->field[1]) = v[1];
    return NULL;
}

/* A path below ServerRoot; an error names the directive and the bad argument. */
static const char *rooted(cmd_parms *cmd, const char *arg, const char **path)
{
    *path = ap_server_root_relative(cmd->pool, arg);
    return *path ? NULL : fail(cmd, apr_psprintf(cmd->pool, "bad path '%s'", arg));
}

/* Single-value directives, described by their cmd->info: which settings field they fill and
 * how the value is checked. One handler (set_value, set_flag) reads them all. */
typedef enum {
    V_NAME,             /* rmsync_check_name(arg, max), a copy kept (const char *) */
    V_URL,              /* rmsync_check_url(arg, url), its normal form kept (const char *) */
    V_CHECKED,          /* check(arg), a copy kept (const char *) */
    V_FILE,             /* a readable file below ServerRoot, the full path kept (const char *) */
    V_PARSED_STR,       /* parse_str(arg, &field) (const char *) */
    V_PARSED_INT,       /* parse_int(arg, &field) (int) */
    V_INT,              /* rmsync_parse_int(arg, min, max) (int) */
    V_SIZE,             /* rmsync_parse_size(arg, min, max) (apr_size_t) */
    V_DELETE_POLICY, V_CANCEL_POLICY, V_PRIVATE_POLICY,     /* their enums */
    V_FLAG              /* On|Off (int) */
} value_kind_e;

typedef struct {
    value_kind_e kind;
    apr_size_t field;                   /* offsetof(rmsync_settings_t, <field>) */
    long min, max;                      /* V_INT, V_SIZE; V_NAME: max is the longest */
    rmsync_url_kind_e url;              /* V_URL */
    const char *(*check)(apr_pool_t *p, const char *arg);
    const char *(*parse_str)(apr_pool_t *p, const char *arg, const char **out);
    const char *(*parse_int)(apr_pool_t *p, const char *arg, int *out);
} value_t;

#define FIELD(f) .field = offsetof(rmsync_settings_t, f)
#define NAME(f, len)         &(value_t){ .kind = V_NAME, FIELD(f), .max = (len) }
#define URL(f, u)            &(value_t){ .kind = V_URL, FIELD(f), .url = (u) }
#define CHECKED(f, fn)       &(value_t){ .kind = V_CHECKED, FIELD(f), .check = (fn) }
#define READABLE_FILE(f)     &(value_t){ .kind = V_FILE, FIELD(f) }
#define PARSED_STR(f, fn)    &(value_t){ .kind = V_PARSED_STR, FIELD(f), .parse_str = (fn) }
#define PARSED_INT(f, fn)    &(value_t){ .kind = V_PARSED_INT, FIELD(f), .parse_int = (fn) }
#define INT(f, lo, hi)       &(value_t){ .kind = V_INT, FIELD(f), .min = (lo), .max = (hi) }
#define SIZE(f, lo, hi)      &(value_t){ .kind = V_SIZE, FIELD(f), .min = (lo), .max = (hi) }
#define POLICY(k, f)         &(value_t){ .kind = (k), FIELD(f) }
#define FLAG(f)              &(value_t){ .kind = V_FLAG, FIELD(f) }

static const char *set_value(cmd_parms *cmd, void *dc, const char *arg)
{
    const value_t *d = cmd->info;
    void *f = (char *)settings_of(cmd) + d->field;
    apr_pool_t *p = cmd->pool;
    const char *err = NULL, *v = NULL;

    GLOBAL_ONLY_OR_RETURN(cmd);
    switch (d->kind) {
    case V_NAME:
        err = rmsync_check_name(p, arg, (apr_size_t)d->max);
        v = apr_pstrdup(p, arg);
        break;
    case V_URL:
        err = rmsync_check_url(p, arg, d->url, &v);
        break;
    case V_CHECKED:
        err = d->check(p, arg);
        v = apr_pstrdup(p, arg);
        break;
    case V_FILE:
        if ((err = rooted(cmd, arg, &v))) {
            return err;
        }
        err = rmsync_check_readable_file(p, v);
        break;
    case V_PARSED_STR:
        return fail(cmd, d->parse_str(p, arg, f));
    case V_PARSED_INT:
        return fail(cmd, d->parse_int(p, arg, f));
    case V_INT:
        return fail(cmd, rmsync_parse_int(p, arg, d->min, d->max, f));
    case V_SIZE:
        return fail(cmd, rmsync_parse_size(p, arg, (apr_size_t)d->min, (apr_size_t)d->max, f));
    case V_DELETE_POLICY:
        return fail(cmd, rmsync_parse_delete_policy(p, arg, f));
    case V_CANCEL_POLICY:
        return fail(cmd, rmsync_parse_cancel_policy(p, arg, f));
    case V_PRIVATE_POLICY:
        return fail(cmd, rmsync_parse_private_policy(p, arg, f));
    case V_FLAG:        /* set_flag's */
        return fail(cmd, "takes On or Off");
    }
    if (err) {
        return fail(cmd, err);
    }
    *(const char **)f = v;      /* the string kinds: kept only when valid */
    return NULL;
}

static const char *set_flag(cmd_parms *cmd, void *dc, int flag)
{
    const value_t *d = cmd->info;
    GLOBAL_ONLY_OR_RETURN(cmd);
    *(int *)(void *)((char *)settings_of(cmd) + d->field) = flag;
    return NULL;
}

static const char *set_secret_file(cmd_parms *cmd, void *dc, const char *arg)
{
    rmsync_settings_t *s = settings_of(cmd);
    const char *path, *secret = NULL, *err;
    GLOBAL_ONLY_OR_RETURN(cmd);
    if ((err = rooted(cmd, arg, &path))) {
        return err;
    }
    if ((err = rmsync_read_secret_file(cmd->pool, path, &secret))) {
        return fail(cmd, err);
    }
    s->client_secret_file = path;
    s->client_secret = secret;   /* never logged */
    return NULL;
}

static const char *set_client_cert(cmd_parms *cmd, void *dc, const char *cert,
                                   const char *key)
{
    rmsync_settings_t *s = settings_of(cmd);
    const char *cpath, *kpath, *cpem = NULL, *kpem = NULL, *err;
    GLOBAL_ONLY_OR_RETURN(cmd);
    if ((err = rooted(cmd, cert, &cpath)) || (err = rooted(cmd, key, &kpath))) {
        return err;
    }
    /* Read now, in the parent (root): the runner (User) gets the PEM texts, not the files. */
    if ((err = rmsync_jwt_read_credentials(cmd->pool, cpath, kpath, &cpem, &kpem))) {
        return fail(cmd, err);
    }
    s->client_cert_file = cpath;
    s->client_key_file = kpath;
    s->client_cert_pem = cpem;
    s->client_key_pem = kpem;    /* never logged */
    return NULL;
}

/* RMSyncAdminOrigin <origin> ...: the public origins of the admin pages (repeatable). */
static const char *set_admin_origin(cmd_parms *cmd, void *dc, const char *arg)
{
    rmsync_settings_t *st = settings_of(cmd);
    const char *o;

    GLOBAL_ONLY_OR_RETURN(cmd);
    o = rmsync_origin_parse(cmd->pool, arg, 0);
    if (!o) {
        return apr_pstrcat(cmd->pool, "RMSyncAdminOrigin: '", arg, "' is not an origin: "
                           "use scheme://host[:port] (http or https, no path)", NULL);
    }
    if (!st->admin_origins) {
        st->admin_origins = apr_array_make(cmd->pool, 2, sizeof(const char *));
    }
    APR_ARRAY_PUSH(st->admin_origins, const char *) = o;
    return NULL;
}

static const char *set_master_category(cmd_parms *cmd, void *dc, const char *name,
                                       const char *color)
{
    rmsync_settings_t *s = settings_of(cmd);
    const char *err;
    GLOBAL_ONLY_OR_RETURN(cmd);
    if ((err = rmsync_check_category_name(cmd->pool, name))) {
        return fail(cmd, err);
    }
    if (color && (err = rmsync_check_category_color(cmd->pool, color))) {
        return fail(cmd, err);
    }
    s->category_name = apr_pstrdup(cmd->pool, name);
    if (color) {
        s->category_color = apr_pstrdup(cmd->pool, color);
    }
    return NULL;
}

static const char *set_log_file(cmd_parms *cmd, void *dc, const char *arg)
{
    const char *v = arg, *err;
    GLOBAL_ONLY_OR_RETURN(cmd);
    if (arg && *arg && arg[0] != '|' && (err = rooted(cmd, arg, &v))) {
        return err;
    }
    if ((err = rmsync_check_log_target(cmd->pool, v))) {
        return fail(cmd, err);
    }
    settings_of(cmd)->log_file = apr_pstrdup(cmd->pool, v);
    return NULL;
}

const command_rec rmsync_cmds[] = {
    AP_INIT_TAKE1("RMSyncDatabase", set_database, NULL, RSRC_CONF,
                  "PostgreSQL conninfo of the CRM database (enables the sync runner)"),
    AP_INIT_TAKE2("RMSyncDatabaseTimeouts", set_int_pair, &db_timeouts, RSRC_CONF,
                  "<connect-seconds> <statement-milliseconds>"),
    AP_INIT_TAKE12("RMSyncDatabasePool", set_int_pair, &db_pool, RSRC_CONF,
                   "most PostgreSQL connections of the module in all processes, and the seconds "
                   "after which an idle one is closed (default 20 60)"),
    AP_INIT_TAKE1("RMSyncGraphTenant", set_value, NAME(tenant, 128), RSRC_CONF,
                  "Entra ID tenant id or domain"),
    AP_INIT_TAKE1("RMSyncGraphClientId", set_value, NAME(client_id, 128), RSRC_CONF,
                  "application (client) id"),
    AP_INIT_TAKE1("RMSyncGraphClientSecretFile", set_secret_file, NULL, RSRC_CONF,
                  "file holding the client secret"),
    AP_INIT_TAKE2("RMSyncGraphClientCertificate", set_client_cert, NULL, RSRC_CONF,
                  "<cert.pem> <key.pem>: certificate credentials (instead of a client secret)"),
    AP_INIT_TAKE1("RMSyncGraphAuthorityURL", set_value, URL(authority_url, RMSYNC_URL_HTTPS),
                  RSRC_CONF, "token authority base URL (https)"),
    AP_INIT_TAKE1("RMSyncGraphURL", set_value, URL(graph_url, RMSYNC_URL_HTTPS), RSRC_CONF,
                  "Microsoft Graph base URL (https)"),
    AP_INIT_TAKE1("RMSyncCAFile", set_value, READABLE_FILE(ca_file), RSRC_CONF,
                  "CA bundle to verify Graph and the authority (default: system store)"),
    AP_INIT_TAKE2("RMSyncGraphTimeouts", set_int_pair, &graph_timeouts, RSRC_CONF,
                  "<connect-seconds> <total-seconds> for Graph requests"),
    AP_INIT_TAKE12("RMSyncGraphConcurrency", set_int_pair, &graph_concurrency, RSRC_CONF,
                   "<requests-per-mailbox 1..4> [<parallel-mailboxes>]"),
    AP_INIT_TAKE1("RMSyncGraphMaxResponse", set_value,
                  SIZE(graph_max_response, 64 * 1024, 256 * 1024 * 1024), RSRC_CONF,
                  "largest Graph response body accepted (bytes, K/M suffix)"),
    AP_INIT_TAKE1("RMSyncNotificationURL", set_value,
                  URL(notification_url, RMSYNC_URL_HTTPS_OR_LOOPBACK), RSRC_CONF,
                  "public https URL of /rmsync/notify"),
    AP_INIT_TAKE1("RMSyncLifecycleURL", set_value,
                  URL(lifecycle_url, RMSYNC_URL_HTTPS_OR_LOOPBACK), RSRC_CONF,
                  "public https URL of /rmsync/lifecycle"),
    /* Graph refuses more than 4230 minutes for Outlook resources. */
    AP_INIT_TAKE1("RMSyncSubscriptionLifetime", set_value, INT(subscription_minutes, 15, 4230),
                  RSRC_CONF, "subscription lifetime in minutes (15..4230)"),
    AP_INIT_TAKE1("RMSyncMaxBodySize", set_value, SIZE(max_body, 1024, 16 * 1024 * 1024),
                  RSRC_CONF, "largest webhook request body (bytes, K/M suffix)"),
    /* The engine keeps its own 1 s timer (the monitor hook's ~10 s tick is only a clock):
     * short cycles work, and the tests use them. */
    AP_INIT_TAKE1("RMSyncSyncCycle", set_value, INT(cycle_s, 1, 86400), RSRC_CONF,
                  "seconds between periodic delta passes (1..86400)"),
    AP_INIT_TAKE1("RMSyncInitialSyncFrom", set_value,
                  CHECKED(initial_sync_from, rmsync_check_sync_from), RSRC_CONF,
                  "start of the sync window: YYYY-MM-DD or -<N>d"),
    AP_INIT_TAKE1("RMSyncSyncWindowDays", set_value, INT(window_days, 1, 1825), RSRC_CONF,
                  "days ahead of now in the sync window (1..1825)"),
    AP_INIT_TAKE1("RMSyncDeletePolicy", set_value, POLICY(V_DELETE_POLICY, delete_policy),
                  RSRC_CONF, "event deleted in Outlook: delete | cancel | unlink"),
    AP_INIT_TAKE1("RMSyncCancelPolicy", set_value, POLICY(V_CANCEL_POLICY, cancel_policy),
                  RSRC_CONF, "event cancelled in Outlook: cancel | delete"),
    AP_INIT_TAKE1("RMSyncPrivateAppointments", set_value,
                  POLICY(V_PRIVATE_POLICY, private_policy), RSRC_CONF,
                  "private/confidential appointments: mask | skip | sync"),
    AP_INIT_TAKE1("RMSyncDefaultTimeZone", set_value,
                  PARSED_STR(default_tz, rmsync_parse_time_zone), RSRC_CONF,
                  "zone of all-day events when the mailbox's cannot be read (Windows or IANA)"),
    AP_INIT_FLAG("RMSyncTransferAttendees", set_flag, FLAG(transfer_attendees), RSRC_CONF,
                 "On: add the activity's contacts as attendees on transfer (sends invitations)"),
    AP_INIT_TAKE12("RMSyncMasterCategory", set_master_category, NULL, RSRC_CONF,
                   "\"<name>\" [none|preset0..preset24]"),
    /* issue 14 */
    AP_INIT_TAKE1("RMSyncCalendar", set_value,
                  PARSED_STR(sync_calendar, rmsync_check_sync_calendar), RSRC_CONF,
                  "main (default) or \"<name>\": the calendar the sync covers in each mailbox"),
    AP_INIT_TAKE1("RMSyncActivityURL", set_value,
                  CHECKED(activity_url, rmsync_check_activity_url), RSRC_CONF,
                  "link to an activity in the CRM, %s = activity number"),
    AP_INIT_TAKE1("RMSyncPermissionSet", set_value, NAME(permission_set, 64), RSRC_CONF,
                  "CRM permission set that marks representatives to sync"),
    AP_INIT_TAKE1("RMSyncMasterUser", set_value, NAME(master_user, 64), RSRC_CONF,
                  "CRM user the sync writes as"),
    AP_INIT_TAKE12("RMSyncMassDeleteLimit", set_int_pair, &mass_delete, RSRC_CONF,
                   "<count> [<percent>]: hold a representative when a pass would delete more"),
    AP_INIT_TAKE12("RMSyncDeleteSettle", set_int_pair, &delete_settle, RSRC_CONF,
                   "<seconds> [<window seconds>]: delay before an Outlook deletion is carried "
                   "out, and the mass-delete breaker's window"),
    AP_INIT_TAKE1("RMSyncLogFile", set_log_file, NULL, RSRC_CONF,
                  "sync log file, or |piped command"),
    AP_INIT_TAKE1("RMSyncLogLevel", set_value, PARSED_INT(log_debug, rmsync_parse_log_level),
                  RSRC_CONF, "sync log detail: info | debug"),
    AP_INIT_FLAG("RMSyncAdminRequireUser", set_flag, FLAG(admin_require_user), RSRC_CONF,
                 "On: admin pages refuse requests without an authenticated user"),
    AP_INIT_ITERATE("RMSyncAdminOrigin", set_admin_origin, NULL, RSRC_CONF,
                    "scheme://host[:port] ...: the public origin(s) of the admin pages that "
                    "POSTs must come from (default: ServerName's and loopback's)"),
    AP_INIT_TAKE1("RMSyncMaxRepresentatives", set_value, INT(max_representatives, 1, 10000),
                  RSRC_CONF, "representative slots in shared memory (1..10000)"),
    AP_INIT_TAKE1("RMSyncRunnerStallTimeout", set_value,
                  PARSED_INT(runner_stall_s, rmsync_parse_stall_timeout), RSRC_CONF,
                  "seconds without a runner heartbeat before the parent replaces it (5..3600), "
                  "or Off"),
    AP_INIT_TAKE1("RMSyncLogRetention", set_value,
                  PARSED_INT(log_retention_days, rmsync_parse_log_retention), RSRC_CONF,
                  "days the sync log is kept (1..3650, default 90): the runner deletes older "
                  "rows daily; or Off"),
    { NULL, { NULL }, NULL, 0, RAW_ARGS, NULL }
};

int rmsync_config_check(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    const char *err = rmsync_settings_check(rmsync_config_get(s), ptemp, NULL);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, NULL,
                     RMSYNC_LOGNO(00002) "configuration error: %s", err);
        return !OK;
    }
    return OK;
}

/* Entra ID refuses an expired certificate: say so at every start, and a month ahead. */
#define CERT_WARN_DAYS 30

static void cert_expiry_warning(apr_pool_t *ptemp, server_rec *s, const rmsync_settings_t *st)
{
    rmsync_jwt_key_t *k = NULL;
    char date[APR_RFC822_DATE_LEN];
    apr_time_t na, now = apr_time_now();

    if (rmsync_jwt_key_load(ptemp, st->client_cert_pem, st->client_key_pem, &k) || !k) {
        return;     /* checked when the directive was read */
    }
    na = rmsync_jwt_key_not_after(k);
    apr_rfc822_date(date, na);
    if (na <= now) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RMSYNC_LOGNO(00006)
                     "RMSyncGraphClientCertificate: the certificate '%s' (SHA-1 thumbprint %s) "
                     "expired on %s: Microsoft Entra ID refuses it, no token can be obtained; "
                     "upload a new certificate to the app registration and configure it",
                     st->client_cert_file, rmsync_jwt_key_thumbprint(k), date);
    }
    else if (na - now < apr_time_from_sec(CERT_WARN_DAYS * 86400)) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RMSYNC_LOGNO(00007)
                     "RMSyncGraphClientCertificate: the certificate '%s' (SHA-1 thumbprint %s) "
                     "expires on %s (in %d days): upload its successor to the app registration "
                     "and configure it before then", st->client_cert_file,
                     rmsync_jwt_key_thumbprint(k), date,
                     (int)((na - now) / apr_time_from_sec(86400)));
    }
}

void rmsync_config_log_warnings(apr_pool_t *ptemp, server_rec *s)
{
    const rmsync_settings_t *st = rmsync_config_get(s);
    apr_array_header_t *w = apr_array_make(ptemp, 4, sizeof(const char *));
    const char **msgs;
    int i;

    (void)rmsync_settings_check(st, ptemp, w);
    msgs = (const char **)(void *)w->elts;   /* pool memory: aligned (clang -Wcast-align) */
    for (i = 0; i < w->nelts; i++) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RMSYNC_LOGNO(00003) "%s", msgs[i]);
    }
    if (st->client_key_pem) {
        cert_expiry_warning(ptemp, s, st);
    }
    if (st->enabled && !st->tenant) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, RMSYNC_LOGNO(00005)
                     "no Graph credentials (RMSyncGraphTenant, RMSyncGraphClientId, "
                     "RMSyncGraphClientSecretFile or RMSyncGraphClientCertificate): the sync "
                     "runner has no mailbox access");
    }
    if (!st->enabled) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, s, RMSYNC_LOGNO(00004)
                     "RMSyncDatabase is not set: the sync runner is not started");
    }
}
