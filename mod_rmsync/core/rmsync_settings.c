/* mod_rmsync, used by the parent (configuration) and the sync runner: settings defaults and pure
 * validators (see rmsync_settings.h; no httpd headers, unit-tested). */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <apr_strings.h>
#include <apr_file_io.h>
#include <apr_file_info.h>
#include <apr_lib.h>
#include <apr_uri.h>
#include <apr_network_io.h>
#include <libpq-fe.h>

#include "rmsync_settings.h"
#include "rmsync_tz.h"

/* The documented defaults, by directive; what is not named is 0 / NULL / the enum's first
 * value (no database, no credentials, no webhook URLs, no activity link, no log file). */
void rmsync_settings_defaults(rmsync_settings_t *s)
{
    *s = (rmsync_settings_t){
        .db_connect_timeout_s = 10, .db_statement_timeout_ms = 30000,
        .db_pool_max = 20, .db_pool_idle_s = 60,
        .authority_url = "https://login.microsoftonline.com",
        .graph_url = "https://graph.microsoft.com/v1.0",
        .graph_connect_timeout_s = 10, .graph_total_timeout_s = 60,
        .graph_per_mailbox = 4, .graph_parallel_mailboxes = 4,
        .graph_max_response = 8 * 1024 * 1024,
        .subscription_minutes = 4230, .max_body = 256 * 1024,
        .cycle_s = 300, .initial_sync_from = "-30d", .window_days = 365,
        .delete_policy = RMSYNC_DELETE_DELETE, .cancel_policy = RMSYNC_CANCEL_CANCEL,
        .category_name = "CRM Business Activity", .category_color = "preset7",
        .permission_set = "EXCHANGE_SYNC_USER", .master_user = "SYNC_MASTER",
        .breaker_count = 20, .breaker_percent = 50,
        .delete_settle_s = 5, .breaker_window_s = 600,
        .max_representatives = 256, .runner_stall_s = 60, .log_retention_days = 90,
        .private_policy = RMSYNC_PRIVATE_MASK, .default_tz = "Etc/UTC",
    };
}

const char *rmsync_parse_int(apr_pool_t *p, const char *arg, long min, long max, int *out)
{
    char *end = NULL;
    long v;

    if (!arg || !*arg) {
        return "a number is required";
    }
    if (apr_isspace(*arg) || (min >= 0 && (*arg == '-' || *arg == '+'))) {
        return apr_psprintf(p, "'%s' is not a number in %ld..%ld", arg, min, max);
    }
    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno || end == arg || *end) {
        return apr_psprintf(p, "'%s' is not a number in %ld..%ld", arg, min, max);
    }
    if (v < min || v > max || v > INT_MAX || v < INT_MIN) {
        return apr_psprintf(p, "%s is out of range %ld..%ld", arg, min, max);
    }
    *out = (int)v;
    return NULL;
}

const char *rmsync_parse_size(apr_pool_t *p, const char *arg, apr_size_t min, apr_size_t max,
                              apr_size_t *out)
{
    char *end = NULL;
    unsigned long long v, mult = 1;

    if (!arg || !*arg || !apr_isdigit(*arg)) {
        return apr_psprintf(p, "'%s' is not a size (bytes, or with K/M/G suffix)", arg ? arg : "");
    }
    errno = 0;
    v = strtoull(arg, &end, 10);
    if (errno || end == arg) {
        return apr_psprintf(p, "'%s' is not a size (bytes, or with K/M/G suffix)", arg);
    }
    if (*end) {
        switch (apr_toupper(*end)) {
        case 'K': mult = 1024ULL; break;
        case 'M': mult = 1024ULL * 1024; break;
        case 'G': mult = 1024ULL * 1024 * 1024; break;
        default:
            return apr_psprintf(p, "'%s' is not a size (bytes, or with K/M/G suffix)", arg);
        }
        if (end[1] && !(apr_toupper(end[1]) == 'B' && !end[2])) {
            return apr_psprintf(p, "'%s' is not a size (bytes, or with K/M/G suffix)", arg);
        }
    }
    if (v > (unsigned long long)max / mult || v * mult < min || v * mult > max) {
        return apr_psprintf(p, "%s is out of range %" APR_SIZE_T_FMT "..%" APR_SIZE_T_FMT
                            " bytes", arg, min, max);
    }
    *out = (apr_size_t)(v * mult);
    return NULL;
}

static int host_is_loopback(apr_pool_t *p, const char *host)
{
    if (!strcasecmp(host, "localhost") || !strcasecmp(host, "localhost.")) {
        return 1;
    }
    if (!strcmp(host, "::1") || !strcmp(host, "0:0:0:0:0:0:0:1")) {
        return 1;
    }
    /* 127.0.0.0/8 in dotted-quad form only; names other than localhost are not trusted. */
    if (!strncmp(host, "127.", 4)) {
        int a, b, c, d;
        char tail;
        if (sscanf(host, "%d.%d.%d.%d%c", &a, &b, &c, &d, &tail) == 4
            && a == 127 && b >= 0 && b < 256 && c >= 0 && c < 256 && d >= 0 && d < 256) {
            return 1;
        }
    }
    (void)p;
    return 0;
}

const char *rmsync_check_url(apr_pool_t *p, const char *arg, rmsync_url_kind_e kind,
                             const char **out)
{
    apr_uri_t uri;
    const char *c;
    char *v;
    apr_size_t n;

    if (!arg || !*arg) {
        return "a URL is required";
    }
    if (strlen(arg) > 2048) {
        return "URL is longer than 2048 bytes";
    }
    for (c = arg; *c; c++) {
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) {
            return apr_psprintf(p, "'%s' contains spaces or control characters", arg);
        }
    }
    if (apr_uri_parse(p, arg, &uri) != APR_SUCCESS || !uri.scheme || !uri.hostname
        || !*uri.hostname) {
        return apr_psprintf(p, "'%s' is not an absolute URL (scheme://host/...)", arg);
    }
    if (uri.user || uri.password) {
        return apr_psprintf(p, "'%s' must not contain user:password@", arg);
    }
    if (uri.fragment) {
        return apr_psprintf(p, "'%s' must not contain a #fragment", arg);
    }
    if (uri.port_str && (!*uri.port_str || uri.port == 0)) {
        return apr_psprintf(p, "'%s' has a bad port", arg);
    }
    if (!strcasecmp(uri.scheme, "https")) {
        /* always fine */
    }
    else if (!strcasecmp(uri.scheme, "http")) {
        if (kind == RMSYNC_URL_HTTPS) {
            return apr_psprintf(p, "'%s' must use https", arg);
        }
        if (kind == RMSYNC_URL_HTTPS_OR_LOOPBACK && !host_is_loopback(p, uri.hostname)) {
            return apr_psprintf(p, "'%s' must use https (http is allowed only for loopback "
                                "hosts such as 127.0.0.1)", arg);
        }
    }
    else {
        return apr_psprintf(p, "'%s' has scheme '%s', expected https", arg, uri.scheme);
    }
    if (out) {
        v = apr_pstrdup(p, arg);
        n = strlen(v);
        while (n > 0 && v[n - 1] == '/' && v + n - 1 > strstr(v, "://") + 2) {
            v[--n] = '\0';
        }
        *out = v;
    }
    return NULL;
}

const char *rmsync_check_conninfo(apr_pool_t *p, const char *arg)
{
    char *err = NULL;
    PQconninfoOption *opts;
    const char *msg;

    if (!arg || !*arg) {
        return "a connection string is required (e.g. \"host=/run/postgresql dbname=crm\")";
    }
    opts = PQconninfoParse(arg, &err);
    if (!opts) {
        if (err) {
            apr_size_t n;
            msg = apr_pstrdup(p, err);
            PQfreemem(err);
            n = strlen(msg);
            while (n > 0 && apr_isspace(msg[n - 1])) {
                ((char *)msg)[--n] = '\0';
            }
            return apr_psprintf(p, "bad connection string: %s", msg);
        }
        return "bad connection string (out of memory?)";
    }
    PQconninfoFree(opts);
    return NULL;
}

const char *rmsync_check_readable_file(apr_pool_t *p, const char *path)
{
    apr_finfo_t fi;
    apr_file_t *f;
    apr_status_t rv;
    char buf[128];

    if (!path || !*path) {
        return "a file name is required";
    }
    rv = apr_stat(&fi, path, APR_FINFO_TYPE, p);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "cannot access '%s': %s", path, apr_strerror(rv, buf, sizeof(buf)));
    }
    if (fi.filetype != APR_REG) {
        return apr_psprintf(p, "'%s' is not a regular file", path);
    }
    rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, p);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "cannot read '%s': %s", path, apr_strerror(rv, buf, sizeof(buf)));
    }
    apr_file_close(f);
    return NULL;
}

const char *rmsync_read_secret_file(apr_pool_t *p, const char *path, const char **secret)
{
    apr_file_t *f;
    apr_status_t rv;
    apr_size_t len;
    char buf[128], *data, *s, *e;
    const char *err;

    if ((err = rmsync_check_readable_file(p, path)) != NULL) {
        return err;
    }
    rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, p);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "cannot read '%s': %s", path, apr_strerror(rv, buf, sizeof(buf)));
    }
    data = apr_palloc(p, 8192 + 2);
    len = 8192 + 1;
    rv = apr_file_read_full(f, data, len, &len);
    apr_file_close(f);
    if (rv != APR_SUCCESS && rv != APR_EOF) {
        return apr_psprintf(p, "cannot read '%s': %s", path, apr_strerror(rv, buf, sizeof(buf)));
    }
    if (len > 8192) {
        return apr_psprintf(p, "'%s' is larger than 8 KiB, not a client secret", path);
    }
    data[len] = '\0';
    if (strlen(data) != len) {
        return apr_psprintf(p, "'%s' contains NUL bytes", path);
    }
    for (s = data; *s && apr_isspace(*s); s++)
        ;
    for (e = s + strlen(s); e > s && apr_isspace(e[-1]); e--)
        ;
    *e = '\0';
    if (!*s) {
        return apr_psprintf(p, "'%s' is empty", path);
    }
    for (e = s; *e; e++) {
        if ((unsigned char)*e < 0x20 || *e == 0x7f) {
            return apr_psprintf(p, "'%s' holds more than one line or control characters", path);
        }
    }
    *secret = s;
    return NULL;
}

static int days_in_month(int y, int m)
{
    static const int dm[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return 29;
    }
    return dm[m - 1];
}

static int parse_ymd(const char *arg, int *y, int *m, int *d)
{
    int i;
    if (strlen(arg) != 10 || arg[4] != '-' || arg[7] != '-') {
        return 0;
    }
    for (i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && !apr_isdigit(arg[i])) {
            return 0;
        }
    }
    *y = atoi(arg);
    *m = atoi(arg + 5);
    *d = atoi(arg + 8);
    return *y >= 1970 && *y <= 2999 && *m >= 1 && *m <= 12 && *d >= 1
           && *d <= days_in_month(*y, *m);
}

static int parse_rel_days(const char *arg, int *days)
{
    apr_size_t n = strlen(arg);
    char tmp[16];
    char *end;
    long v;

    if (n < 3 || n > 8 || arg[0] != '-' || (arg[n - 1] != 'd' && arg[n - 1] != 'D')) {
        return 0;
    }
    memcpy(tmp, arg + 1, n - 2);
    tmp[n - 2] = '\0';
    if (!apr_isdigit(tmp[0])) {
        return 0;
    }
    v = strtol(tmp, &end, 10);
    if (*end || v < 0 || v > 3650) {
        return 0;
    }
    *days = (int)v;
    return 1;
}

const char *rmsync_check_sync_from(apr_pool_t *p, const char *arg)
{
    int y, m, d, days;
    if (arg && (parse_ymd(arg, &y, &m, &d) || parse_rel_days(arg, &days))) {
        return NULL;
    }
    return apr_psprintf(p, "'%s' is not a date: use YYYY-MM-DD (a real date) or -<N>d "
                        "(N days back, 0..3650)", arg ? arg : "");
}

apr_status_t rmsync_sync_from_time(const char *arg, apr_time_t now, apr_time_t *out)
{
    int y, m, d, days;
    if (arg && parse_rel_days(arg, &days)) {
        *out = now - apr_time_from_sec((apr_time_t)days * 86400);
        return APR_SUCCESS;
    }
    if (arg && parse_ymd(arg, &y, &m, &d)) {
        /* days since epoch, civil-from-days inverse (Howard Hinnant) */
        long yy = y - (m <= 2);
        long era = yy / 400;
        long yoe = yy - era * 400;
        long doy = (153L * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        long ndays = era * 146097 + doe - 719468;
        *out = apr_time_from_sec((apr_time_t)ndays * 86400);
        return APR_SUCCESS;
    }
    return APR_EINVAL;
}

const char *rmsync_parse_delete_policy(apr_pool_t *p, const char *arg, rmsync_delete_policy_e *out)
{
    if (arg && !strcasecmp(arg, "delete")) { *out = RMSYNC_DELETE_DELETE; return NULL; }
    if (arg && !strcasecmp(arg, "cancel")) { *out = RMSYNC_DELETE_CANCEL; return NULL; }
    if (arg && !strcasecmp(arg, "unlink")) { *out = RMSYNC_DELETE_UNLINK; return NULL; }
    return apr_psprintf(p, "unknown policy '%s', expected delete, cancel or unlink",
                        arg ? arg : "");
}

const char *rmsync_parse_cancel_policy(apr_pool_t *p, const char *arg, rmsync_cancel_policy_e *out)
{
    if (arg && !strcasecmp(arg, "cancel")) { *out = RMSYNC_CANCEL_CANCEL; return NULL; }
    if (arg && !strcasecmp(arg, "delete")) { *out = RMSYNC_CANCEL_DELETE; return NULL; }
    return apr_psprintf(p, "unknown policy '%s', expected cancel or delete", arg ? arg : "");
}

const char *rmsync_parse_private_policy(apr_pool_t *p, const char *arg,
                                        rmsync_private_policy_e *out)
{
    if (arg && !strcasecmp(arg, "mask")) { *out = RMSYNC_PRIVATE_MASK; return NULL; }
    if (arg && !strcasecmp(arg, "skip")) { *out = RMSYNC_PRIVATE_SKIP; return NULL; }
    if (arg && !strcasecmp(arg, "sync")) { *out = RMSYNC_PRIVATE_SYNC; return NULL; }
    return apr_psprintf(p, "unknown value '%s', expected mask, skip or sync", arg ? arg : "");
}

const char *rmsync_parse_time_zone(apr_pool_t *p, const char *arg, const char **iana)
{
    const char *z = rmsync_tz_to_iana(arg);
    if (!z) {
        return apr_psprintf(p, "unknown time zone '%s': give a Windows zone id (e.g. \"W. Europe "
                            "Standard Time\") or its IANA name (e.g. Europe/Berlin), or UTC",
                            arg ? arg : "");
    }
    *iana = z;
    return NULL;
}

const char *rmsync_parse_log_level(apr_pool_t *p, const char *arg, int *debug)
{
    if (arg && !strcasecmp(arg, "info")) { *debug = 0; return NULL; }
    if (arg && !strcasecmp(arg, "debug")) { *debug = 1; return NULL; }
    return apr_psprintf(p, "unknown level '%s', expected info or debug", arg ? arg : "");
}

const char *rmsync_check_category_color(apr_pool_t *p, const char *arg)
{
    int n;
    if (arg && !strcasecmp(arg, "none")) {
        return NULL;
    }
    if (arg && !strncasecmp(arg, "preset", 6) && arg[6]
        && !rmsync_parse_int(p, arg + 6, 0, 24, &n) && (arg[6] != '0' || !arg[7])) {
        return NULL;
    }
    return apr_psprintf(p, "unknown colour '%s', expected none or preset0..preset24",
                        arg ? arg : "");
}

const char *rmsync_check_category_name(apr_pool_t *p, const char *arg)
{
    const char *c;
    if (!arg || !*arg) {
        return "a category name is required";
    }
    if (strlen(arg) > 255) {
        return "category name is longer than 255 bytes";
    }
    for (c = arg; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            return "category name contains control characters";
        }
    }
    (void)p;
    return NULL;
}

/* issue 14: RMSyncCalendar */
const char *rmsync_check_sync_calendar(apr_pool_t *p, const char *arg, const char **out)
{
    const char *c;
    if (!arg || !*arg) {
        return "expected main or a calendar name";
    }
    if (!strcasecmp(arg, "main")) {
        *out = NULL;
        return NULL;
    }
    if (strlen(arg) > 255) {
        return "calendar name is longer than 255 bytes";
    }
    for (c = arg; *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            return "calendar name contains control characters";
        }
    }
    *out = apr_pstrdup(p, arg);
    return NULL;
}

const char *rmsync_check_name(apr_pool_t *p, const char *arg, apr_size_t max)
{
    const char *c;
    if (!arg || !*arg) {
        return "a name is required";
    }
    if (strlen(arg) > max) {
        return apr_psprintf(p, "'%.40s...' is longer than %" APR_SIZE_T_FMT " bytes", arg, max);
    }
    for (c = arg; *c; c++) {
        if (!apr_isalnum(*c) && *c != '.' && *c != '_' && *c != '-' && *c != '@') {
            return apr_psprintf(p, "'%s' contains characters other than letters, digits and "
                                "._@-", arg);
        }
    }
    return NULL;
}

const char *rmsync_check_activity_url(apr_pool_t *p, const char *arg)
{
    const char *first, *err;
    char *probe;

    if (!arg || !(first = strstr(arg, "%s")) || strstr(first + 2, "%s")) {
        return apr_psprintf(p, "'%s' must contain \"%%s\" exactly once (the activity number)",
                            arg ? arg : "");
    }
    probe = apr_pstrcat(p, apr_pstrmemdup(p, arg, (apr_size_t)(first - arg)), "1", first + 2,
                        NULL);
    if ((err = rmsync_check_url(p, probe, RMSYNC_URL_HTTP_ANY, NULL)) != NULL) {
        return apr_psprintf(p, "'%s' is not an http(s) URL template", arg);
    }
    return NULL;
}

const char *rmsync_check_log_target(apr_pool_t *p, const char *arg)
{
    apr_finfo_t fi;
    const char *slash;
    char *dir;

    if (!arg || !*arg) {
        return "a file name or |command is required";
    }
    if (arg[0] == '|') {
        const char *c = arg + 1;
        while (*c && apr_isspace(*c)) {
            c++;
        }
        return *c ? NULL : "the piped log command after '|' is empty";
    }
    slash = strrchr(arg, '/');
    if (!slash) {
        return NULL;
    }
    dir = apr_pstrmemdup(p, arg, slash == arg ? 1 : (apr_size_t)(slash - arg));
    if (apr_stat(&fi, dir, APR_FINFO_TYPE, p) != APR_SUCCESS || fi.filetype != APR_DIR) {
        return apr_psprintf(p, "directory '%s' does not exist", dir);
    }
    if (!slash[1]) {
        return apr_psprintf(p, "'%s' names a directory, not a file", arg);
    }
    return NULL;
}

const char *rmsync_parse_stall_timeout(apr_pool_t *p, const char *arg, int *out)
{
    if (!strcasecmp(arg, "off")) {
        *out = 0;
        return NULL;
    }
    return rmsync_parse_int(p, arg, RMSYNC_STALL_MIN_S, RMSYNC_STALL_MAX_S, out);
}

const char *rmsync_parse_log_retention(apr_pool_t *p, const char *arg, int *out)
{
    if (!strcasecmp(arg, "off")) {
        *out = 0;
        return NULL;
    }
    return rmsync_parse_int(p, arg, 1, 3650, out);
}

const char *rmsync_settings_check(const rmsync_settings_t *s, apr_pool_t *p,
                                  apr_array_header_t *warnings)
{
    int have_tenant = s->tenant != NULL, have_id = s->client_id != NULL;
    int have_secret = s->client_secret != NULL, have_cert = s->client_key_pem != NULL;

    if (have_secret && have_cert) {
        return "RMSyncGraphClientSecretFile and RMSyncGraphClientCertificate are both set: "
               "configure exactly one Graph credential";
    }
    if ((have_tenant || have_id || have_secret || have_cert)
        && !(have_tenant && have_id && (have_secret || have_cert))) {
        return apr_psprintf(p, "RMSyncGraphTenant, RMSyncGraphClientId and "
                            "RMSyncGraphClientSecretFile or RMSyncGraphClientCertificate must be "
                            "set together (missing:%s%s%s)",
                            have_tenant ? "" : " RMSyncGraphTenant",
                            have_id ? "" : " RMSyncGraphClientId",
                            have_secret || have_cert ? ""
                            : " RMSyncGraphClientSecretFile or RMSyncGraphClientCertificate");
    }
    if (s->lifecycle_url && !s->notification_url) {
        return "RMSyncLifecycleURL is set but RMSyncNotificationURL is not";
    }
    if (s->graph_connect_timeout_s > s->graph_total_timeout_s) {
        return "RMSyncGraphTimeouts: the connect timeout is longer than the total timeout";
    }
    /* The runner's control thread waits on the database (connect, then one statement) between
     * two heartbeats: a bound shorter than that would kill a runner that is only waiting. */
    if (s->runner_stall_s > 0 && (apr_int64_t)s->runner_stall_s * 1000
                                 <= (apr_int64_t)s->db_connect_timeout_s * 1000
                                    + s->db_statement_timeout_ms) {
        return apr_psprintf(p, "RMSyncRunnerStallTimeout (%d s) must be longer than one database "
                            "wait of the runner (RMSyncDatabaseTimeouts: %d s connect + %d ms "
                            "statement)", s->runner_stall_s, s->db_connect_timeout_s,
                            s->db_statement_timeout_ms);
    }
    if (warnings) {
        if (!s->enabled && have_tenant) {
            APR_ARRAY_PUSH(warnings, const char *) =
                "Graph credentials are set but RMSyncDatabase is not: no sync runner is started";
        }
        if (s->enabled && have_tenant && !s->notification_url) {
            APR_ARRAY_PUSH(warnings, const char *) =
                "RMSyncNotificationURL is not set: no webhook subscriptions, changes arrive "
                "only with the periodic delta pass (RMSyncSyncCycle)";
        }
    }
    return NULL;
}
