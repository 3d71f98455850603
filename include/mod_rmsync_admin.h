/* mod_rmsync: the admin handler ("rmsync-admin"): pages, JSON API, metrics, actions. Runs in
 * the Apache worker processes.
 *
 * Files: rmsync_admin.c (entry, routing, headers, access checks, DB pool, status JSON),
 * rmsync_admin_data.c (PostgreSQL reads -> cJSON, shared by the HTML and the JSON API),
 * rmsync_admin_pages.c (HTML of the configuration and log pages), rmsync_admin_status.c
 * (status HTML, Prometheus metrics), rmsync_admin_actions.c (POST actions: CSRF +
 * same-origin, DB writes, 303). docs/admin.md describes the pages, API and metrics. The body
 * reader and the request-level same-origin and CSRF checks are in rmsync_request.c (shared
 * with the webhook and the API); the pure helpers (escaping, CSRF token, same-origin, form
 * parsing) are in the core (APR only, unit-tested).
 *
 * GET never changes anything. Everything echoed is escaped with rmsync_html_escape().
 */
#ifndef MOD_RMSYNC_ADMIN_H
#define MOD_RMSYNC_ADMIN_H

#include <httpd.h>
#include <http_config.h>
#include <cjson/cJSON.h>
#include "rmsync_settings.h"
#include "rmsync_shm.h"
#include "rmsync_db.h"

#define RMSYNC_ADMIN_HANDLER   "rmsync-admin"
#define RMSYNC_ADMIN_MAX_BODY  (16 * 1024)   /* action bodies are a few short fields */
#define RMSYNC_ADMIN_LOG_PAGE  50            /* default rows per log page */
#define RMSYNC_ADMIN_LOG_MAX   500           /* largest n= accepted */
#define RMSYNC_ADMIN_LOG_CSV_MAX 100000      /* rows in one CSV export (before= continues) */
#define RMSYNC_ADMIN_LOG_Q_MAX 200           /* longest text search */
#define RMSYNC_ADMIN_REPS_PAGE 100           /* representatives per configuration page */
#define RMSYNC_ADMIN_TZ_COOKIE "rmsync_tz"   /* the log page's time zone, remembered */

typedef struct rmsync_admin_t {
    request_rec *r;
    const rmsync_settings_t *s;
    const char *base;           /* mount prefix, e.g. "/rmsync" (no trailing '/') */
    const char *page;           /* "config", "log", "status", "metrics", "style.css", ... */
    int json;                   /* ?format=json or a .json suffix */
    int csv;                    /* ?format=csv (log page only) */
    const char *user;           /* r->user or "-" */
    const char *csrf;           /* form token for this user (empty without shm) */
    apr_table_t *args;          /* parsed, whitelisted query arguments */
    long long refresh_s;        /* status page ?refresh=N (0 = none) */
    rmsync_shm_t *shm;          /* snapshot (copy) of what this page shows, NULL when none */
    int shm_taken;              /* the snapshot was taken (once per request) */
    apr_size_t shm_bytes;       /* bytes copied from the segment (X-RMSync-Shm-Bytes) */
    rmsync_db_t *db;            /* from the per-process pool, released with the request */
    const char *db_error;       /* why the database is unavailable / the last error */
    struct rmsync_health_t *health;  /* computed once per request (rmsync_admin_health.c) */
} rmsync_admin_t;

/* ---- rmsync_admin.c ---- */
/* Registers the handler and the child_init that creates the per-process DB pool. */
void rmsync_admin_register_hooks(apr_pool_t *p);
/* Database handle for this request (NULL and a->db_error set when unavailable). */
rmsync_db_t *rmsync_admin_db(rmsync_admin_t *a);
/* Output helpers. */
int rmsync_admin_send_json(rmsync_admin_t *a, int status, cJSON *json);
int rmsync_admin_error(rmsync_admin_t *a, int status, const char *msg);
/* A cJSON tree bound to the request pool. */
cJSON *rmsync_admin_json_obj(rmsync_admin_t *a);
/* This request's shm snapshot, taken at the first call (later calls return the same copy;
 * NULL without shm): every slot in use (all), else the fixed part, the slots the health banner
 * counts (in error, held) and those of ids[0..nids). Pages copy only what they show: style.css
 * nothing, the configuration page its page of representatives, status and metrics all. */
rmsync_shm_t *rmsync_admin_snapshot(rmsync_admin_t *a, int all, const char *const *ids,
                                    int nids);
/* 1 when the runner's heartbeat in the snapshot is fresh (the status JSON and HTML). */
int rmsync_admin_runner_alive(const rmsync_shm_t *snap, apr_time_t now);

/* ---- rmsync_admin_data.c ---- */
/* The admin's prepared statements (registered once per process in child_init). */
apr_status_t rmsync_admin_register_statements(void);
/* Run the prepared statement name; NULL (a->db_error set, logged with an id unless the DB is
 * simply down) when it fails. The result lives in the request pool. */
rmsync_db_result_t *rmsync_admin_query(rmsync_admin_t *a, const char *name,
                                       const char *const *params);
/* Configuration page data: settings, master user, service, one page of representatives
 * (?q= search, ?page=; bad ones APR_EINVAL) with their live slots and "paging". */
apr_status_t rmsync_admin_config_data(rmsync_admin_t *a, cJSON *out);
/* "nodes": every node's runner from rmsync.node (null and "nodes_error" without the DB). */
void rmsync_admin_nodes_data(rmsync_admin_t *a, cJSON *out);
/* The log page's parsed filter: the 12 parameters of the log statements. */
typedef struct {
    const char *params[12];
    const char *tz;             /* the zone times are shown and filters read in */
    int tz_set;                 /* tz= given (and valid): remember it in the cookie */
    const char *min_level;      /* effective minimum level ("info" by default) */
    const char *after;
    int range;                  /* from and to: read through the time index */
    long long limit;
} rmsync_admin_log_q_t;
/* Parse and check the log filter in a->args (the zone: tz=, else the cookie when PostgreSQL
 * knows it, else UTC). Bad filter -> APR_EINVAL and *err; DB down -> APR_EGENERAL. */
apr_status_t rmsync_admin_log_params(rmsync_admin_t *a, rmsync_admin_log_q_t *lq,
                                     const char **err);
/* Log page data for the filter in a->args: rows, paging. Bad filter -> APR_EINVAL, *err. */
apr_status_t rmsync_admin_log_data(rmsync_admin_t *a, cJSON *out, const char **err);
/* The filtered log as a CSV attachment (writes the response). */
apr_status_t rmsync_admin_log_csv(rmsync_admin_t *a, const char **err);

/* A test request (?id=) and its parsed result; bad id APR_EINVAL, none APR_NOTFOUND. */
apr_status_t rmsync_admin_test_data(rmsync_admin_t *a, cJSON *out, const char **err);

/* ---- rmsync_admin_pages.c ---- */
/* The result page of Test connection / Test mailbox (meta refresh while it runs). */
const char *rmsync_admin_test_html(rmsync_admin_t *a, const cJSON *d);
const char *rmsync_admin_config_html(rmsync_admin_t *a, const cJSON *d);
const char *rmsync_admin_log_html(rmsync_admin_t *a, const cJSON *d);
/* The confirmation page of an action that asks first (Stop, Unlink): question, detail, a
 * Confirm button (POST of action with confirm=1, back and log) and a Cancel link. */
const char *rmsync_admin_confirm_html(rmsync_admin_t *a, const char *action, const char *question,
                                      const char *detail, const char *label, const char *back,
                                      const char *log);
const char *rmsync_admin_status_html(rmsync_admin_t *a, const cJSON *d);
const char *rmsync_admin_metrics_text(rmsync_admin_t *a);

/* ---- rmsync_admin_health.c (health banner, status.json "health", metrics; error fixes) ---- */
apr_status_t rmsync_admin_health_register(void);
/* The health of this request (computed once: shm snapshot + one database probe). */
struct rmsync_health_t *rmsync_admin_health(rmsync_admin_t *a);
/* 1 when the database is unreachable: no representative may be shown as "ok". */
int rmsync_admin_health_db_down(rmsync_admin_t *a);
/* The banner every page shows under its title. */
const char *rmsync_admin_health_banner(rmsync_admin_t *a);
void rmsync_admin_health_json(rmsync_admin_t *a, cJSON *root);
const char *rmsync_admin_health_metrics(rmsync_admin_t *a);
/* Reason and fix of a raw error message: HTML block ("" for none) / JSON fields
 * error_class, error_reason, error_fix. */
const char *rmsync_admin_error_fix_html(apr_pool_t *p, const char *msg);
void rmsync_admin_error_fix_json(cJSON *o, const char *msg);
/* Log rows: error_class/reason/fix of error and warning rows, repeat_count and last_at. */
void rmsync_admin_log_annotate(rmsync_admin_t *a, cJSON *d);
/* "x 30 since 08:00" and the fix of an annotated log row ("" when neither). */
const char *rmsync_admin_log_row_note_html(apr_pool_t *p, const cJSON *row);

/* ---- rmsync_admin_actions.c ---- */
apr_status_t rmsync_admin_register_action_statements(void);
int rmsync_admin_post(rmsync_admin_t *a);

#endif /* MOD_RMSYNC_ADMIN_H */
