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

typedef enum {
    RMSYNC_DELETE_DELETE = 0,   /* event deleted in Outlook -> delete the activity */
    RMSYNC_DELETE_CANCEL,       /* -> mark the activity cancelled, keep the link gone */
    RMSYNC_DELETE_UNLINK        /* -> only drop the link */
} rmsync_delete_policy_e;

typedef enum {
    RMSYNC_CANCEL_CANCEL = 0,   /* isCancelled -> mark the activity cancelled */
    RMSYNC_CANCEL_DELETE        /* isCancelled -> delete the activity */
} rmsync_cancel_policy_e;

typedef struct rmsync_settings_t {
    int         enabled;              /* 1 when RMSyncDatabase is set: runner is started */
    /* database */
    const char *db_conninfo;          /* RMSyncDatabase */
    int         db_connect_timeout_s; /* RMSyncDatabaseTimeouts <connect-s> <statement-ms> */
    int         db_statement_timeout_ms;
    /* graph */
    const char *tenant;               /* RMSyncGraphTenant */
    const char *client_id;            /* RMSyncGraphClientId */
    const char *client_secret_file;   /* RMSyncGraphClientSecretFile */
    const char *client_secret;        /* contents of that file, trimmed; never logged */
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
    /* logging, admin, limits */
    const char *log_file;             /* RMSyncLogFile path or |command, NULL = none */
    int         log_debug;            /* RMSyncLogLevel info|debug */
    int         admin_require_user;   /* RMSyncAdminRequireUser On|Off */
    int         max_representatives;  /* RMSyncMaxRepresentatives: shm slots */
} rmsync_settings_t;

/* Fill s with the documented defaults (no database: enabled = 0). */
void rmsync_settings_defaults(rmsync_settings_t *s);

#endif /* RMSYNC_SETTINGS_H */
