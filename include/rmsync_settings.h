/* mod_rmsync: effective settings shared by the httpd glue and the sync core.
 *
 * The glue (rmsync_config.c) fills one rmsync_settings_t from the RMSync* directives;
 * the sync core (runner, engine, graph client, db) only ever reads it. No httpd types here,
 * so unit tests and benchmarks can build one by hand (rmsync_settings_defaults()).
 */
#ifndef RMSYNC_SETTINGS_H
#define RMSYNC_SETTINGS_H

#include <apr_pools.h>
#include <apr_time.h>
#include <apr_tables.h>

typedef enum {
    RMSYNC_DELETE_DELETE = 0,   /* event deleted in Outlook -> delete the activity */
    RMSYNC_DELETE_CANCEL,       /* -> mark the activity cancelled, keep the link gone */
    RMSYNC_DELETE_UNLINK        /* -> only drop the link */
} rmsync_delete_policy_e;

typedef enum {
    RMSYNC_CANCEL_CANCEL = 0,   /* isCancelled -> mark the activity cancelled */
    RMSYNC_CANCEL_DELETE        /* isCancelled -> delete the activity */
} rmsync_cancel_policy_e;

typedef enum {
    RMSYNC_PRIVATE_MASK = 0,    /* private/confidential -> neutral description, no contacts */
    RMSYNC_PRIVATE_SKIP,        /* -> no activity created or updated from it */
    RMSYNC_PRIVATE_SYNC         /* -> copied like any other appointment */
} rmsync_private_policy_e;

typedef struct rmsync_settings_t {
    int         enabled;              /* 1 when RMSyncDatabase is set: runner is started */
    /* database */
    const char *db_conninfo;          /* RMSyncDatabase */
    int         db_connect_timeout_s; /* RMSyncDatabaseTimeouts <connect-s> <statement-ms> */
    int         db_statement_timeout_ms;
    int         db_pool_max;          /* RMSyncDatabasePool <max total> [<idle seconds>]: all */
    int         db_pool_idle_s;       /* the module's connections (runner's included); idle limit */
    /* graph */
    const char *tenant;               /* RMSyncGraphTenant */
    const char *client_id;            /* RMSyncGraphClientId */
    const char *client_secret_file;   /* RMSyncGraphClientSecretFile */
    const char *client_secret;        /* contents of that file, trimmed; never logged */
    const char *client_cert_file;     /* RMSyncGraphClientCertificate <cert.pem> <key.pem> */
    const char *client_key_file;
    const char *client_cert_pem;      /* contents read at configtest (by the parent, as root) */
    const char *client_key_pem;       /* never logged */
    const char *authority_url;        /* RMSyncGraphAuthorityURL, default https://login.microsoftonline.com */
    const char *graph_url;            /* RMSyncGraphURL, default https://graph.microsoft.com/v1.0 */
    const char *ca_file;              /* RMSyncCAFile, NULL = system store */
    int         graph_connect_timeout_s; /* RMSyncGraphTimeouts <connect-s> <total-s> */
    int         graph_total_timeout_s;
    int         graph_per_mailbox;    /* RMSyncGraphConcurrency <per-mailbox 1..4> <mailboxes> */
    int         graph_parallel_mailboxes;
    apr_size_t  graph_max_response;   /* RMSyncGraphMaxResponse bytes */
    /* webhooks */
    const char *notification_url;     /* RMSyncNotificationURL (public URL of /rmsync/notify) */
    const char *lifecycle_url;        /* RMSyncLifecycleURL (public URL of /rmsync/lifecycle) */
    int         subscription_minutes; /* RMSyncSubscriptionLifetime minutes (<= 4230) */
    apr_size_t  max_body;             /* RMSyncMaxBodySize bytes for webhook bodies */
    /* sync */
    int         cycle_s;              /* RMSyncSyncCycle seconds between periodic delta passes */
    const char *initial_sync_from;    /* RMSyncInitialSyncFrom: YYYY-MM-DD or -<N>d (relative) */
    int         window_days;          /* RMSyncSyncWindowDays: days ahead of now */
    rmsync_delete_policy_e delete_policy; /* RMSyncDeletePolicy delete|cancel|unlink */
    rmsync_cancel_policy_e cancel_policy; /* RMSyncCancelPolicy cancel|delete */
    int         transfer_attendees;   /* RMSyncTransferAttendees On|Off */
    const char *category_name;        /* RMSyncMasterCategory <name> [<presetN>] */
    const char *category_color;
    const char *activity_url;         /* RMSyncActivityURL template with %s = activity no, or NULL */
    const char *permission_set;       /* RMSyncPermissionSet, default EXCHANGE_SYNC_USER */
    const char *master_user;          /* RMSyncMasterUser, default SYNC_MASTER */
    int         breaker_count;        /* RMSyncMassDeleteLimit <count> <percent> */
    int         breaker_percent;
    int         delete_settle_s;      /* RMSyncDeleteSettle <seconds> [<window seconds>]: a */
    int         breaker_window_s;     /* deletion waits settle s; the breaker counts a window */
    /* logging, admin, limits */
    const char *log_file;             /* RMSyncLogFile path or |command, NULL = none */
    int         log_debug;            /* RMSyncLogLevel info|debug */
    int         admin_require_user;   /* RMSyncAdminRequireUser On|Off */
    apr_array_header_t *admin_origins; /* RMSyncAdminOrigin: normalised "scheme://host:port"
                                       * strings (first = the one tokens are bound to); NULL =
                                       * the default built from ServerName (rmsync_request.c) */
    int         max_representatives;  /* RMSyncMaxRepresentatives: shm slots */
    int         runner_stall_s;       /* RMSyncRunnerStallTimeout seconds, 0 = Off: the parent
                                       * replaces a runner whose heartbeat is older than this */
    int         log_retention_days;   /* RMSyncLogRetention days, 0 = Off: the runner deletes
                                       * older sync log rows (and closed items) daily */
    /* calendar fields (docs/engine.md "Calendar fields") */
    rmsync_private_policy_e private_policy; /* RMSyncPrivateAppointments mask|skip|sync */
    const char *default_tz;           /* RMSyncDefaultTimeZone as IANA name (default Etc/UTC) */
    /* issue 14: the calendar the sync covers */
    const char *sync_calendar;        /* RMSyncCalendar main|"<name>": NULL = the main calendar,
                                       * else the name of a calendar found or created per mailbox */
} rmsync_settings_t;

/* Fill s with the documented defaults (no database: enabled = 0). */
void rmsync_settings_defaults(rmsync_settings_t *s);

/* ---- pure validators (rmsync_settings.c), used by the directive handlers and unit tests ----
 * Each returns NULL when the value is good (and stores the parsed value), else an error text
 * allocated from p that says what is wrong; the glue prefixes it with the directive name. */

typedef enum {
    RMSYNC_URL_HTTPS = 0,          /* Graph endpoints: https only */
    RMSYNC_URL_HTTPS_OR_LOOPBACK,  /* public webhook URLs: https, or http to a loopback host */
    RMSYNC_URL_HTTP_ANY            /* links shown to people (activity URL): http or https */
} rmsync_url_kind_e;

/* Integer in [min, max]; rejects trailing garbage, signs where min >= 0, overflow. */
const char *rmsync_parse_int(apr_pool_t *p, const char *arg, long min, long max, int *out);
/* Byte size with optional K/M/G suffix (binary), in [min, max]. */
const char *rmsync_parse_size(apr_pool_t *p, const char *arg, apr_size_t min, apr_size_t max,
                              apr_size_t *out);
/* Absolute http(s) URL with a host, no userinfo or fragment; trailing '/' removed in *out. */
const char *rmsync_check_url(apr_pool_t *p, const char *arg, rmsync_url_kind_e kind,
                             const char **out);
/* PostgreSQL conninfo ("host=... dbname=..." or a postgresql:// URI), via PQconninfoParse. */
const char *rmsync_check_conninfo(apr_pool_t *p, const char *arg);
/* Read a secret file (at most 8 KiB), trim surrounding whitespace; empty is an error. */
const char *rmsync_read_secret_file(apr_pool_t *p, const char *path, const char **secret);
/* Regular readable file (CA bundle). */
const char *rmsync_check_readable_file(apr_pool_t *p, const char *path);
/* "YYYY-MM-DD" (a real calendar date, 1970..2999) or "-<N>d" (N days back, 0..3650). */
const char *rmsync_check_sync_from(apr_pool_t *p, const char *arg);
/* Resolve RMSyncInitialSyncFrom against now: the UTC midnight (absolute) or now - N days. */
apr_status_t rmsync_sync_from_time(const char *arg, apr_time_t now, apr_time_t *out);
const char *rmsync_parse_delete_policy(apr_pool_t *p, const char *arg, rmsync_delete_policy_e *out);
const char *rmsync_parse_cancel_policy(apr_pool_t *p, const char *arg, rmsync_cancel_policy_e *out);
const char *rmsync_parse_private_policy(apr_pool_t *p, const char *arg,
                                        rmsync_private_policy_e *out);
/* A Windows zone id or IANA name known to rmsync_tz.c (or UTC) -> its IANA name. */
const char *rmsync_parse_time_zone(apr_pool_t *p, const char *arg, const char **iana);
/* "info" -> 0, "debug" -> 1. */
const char *rmsync_parse_log_level(apr_pool_t *p, const char *arg, int *debug);
/* Outlook category colour: "none" or "preset0".."preset24". */
const char *rmsync_check_category_color(apr_pool_t *p, const char *arg);
/* Category display name: 1..255 bytes, no control characters. */
const char *rmsync_check_category_name(apr_pool_t *p, const char *arg);
/* RMSyncCalendar: "main" (case-insensitive) -> *out = NULL, else a calendar name (1..255 bytes,
 * no control characters). */
const char *rmsync_check_sync_calendar(apr_pool_t *p, const char *arg, const char **out);
/* A CRM name (permission set, user login) or a Graph tenant / client id:
 * 1..max bytes of [A-Za-z0-9._@-]. */
const char *rmsync_check_name(apr_pool_t *p, const char *arg, apr_size_t max);
/* Activity link template: http(s) URL with exactly one "%s" (the activity number). */
const char *rmsync_check_activity_url(apr_pool_t *p, const char *arg);
/* RMSyncRunnerStallTimeout: "Off" -> 0, or seconds in [RMSYNC_STALL_MIN_S, RMSYNC_STALL_MAX_S]. */
#define RMSYNC_STALL_MIN_S 5
#define RMSYNC_STALL_MAX_S 3600
const char *rmsync_parse_stall_timeout(apr_pool_t *p, const char *arg, int *out);
/* RMSyncLogRetention: Off -> 0, else days 1..3650 */
const char *rmsync_parse_log_retention(apr_pool_t *p, const char *arg, int *out);
/* Sync log target: "|command" (non-empty command) or a path whose directory exists. */
const char *rmsync_check_log_target(apr_pool_t *p, const char *arg);

/* Cross-field checks after all directives were read: returns NULL or an error text; pushes
 * "const char *" warnings (things that work but are probably not meant) onto warnings. */
const char *rmsync_settings_check(const rmsync_settings_t *s, apr_pool_t *p,
                                  apr_array_header_t *warnings);

#endif /* RMSYNC_SETTINGS_H */
