/* mod_rmsync: Microsoft Graph client for the sync core (libcurl + cJSON, no httpd headers).
 *
 * Threading: one rmsync_graph_t per process (create it in the runner after the fork), shared by
 * all worker threads. Every call is BLOCKING and thread-safe: each thread uses its own curl
 * handle (rmsync_http.h), the access token is cached under a mutex and refreshed before expiry
 * (min(5 min, 10% of its lifetime) early) and once after a 401, and at most opts.per_mailbox
 * requests run at once per mailbox (counter + condition variable per mailbox, so a slow or
 * throttled mailbox only ever blocks callers for that mailbox). curl_global_init() must have been
 * called by the process (runner start / test main) before the first call.
 *
 * Every Graph request carries Authorization, client-request-id (UUID), and
 * `Prefer: IdType="ImmutableId", outlook.timezone="UTC"`. 429/503/504 wait Retry-After (or a
 * jittered exponential back-off when absent), other 5xx and dropped connections back off too,
 * all within opts.max_attempts and opts.max_wait_s and abortable by *opts.stop. Non-idempotent
 * POSTs are only retried when the server cannot have processed them (connect failure, 429, 503),
 * except a create with a transactionId, which Graph de-duplicates.
 *
 * Results: each call returns an apr_status_t (APR_SUCCESS, RMSYNC_GRAPH_*, or a transport
 * RMSYNC_HTTP_* code) and, when res is not NULL, fills an rmsync_graph_result_t with the HTTP
 * status, the Graph error code/message from the error envelope, request-id and client-request-id
 * (log them), and the parsed JSON bound to the call's pool. Failures are logged once here with a
 * RMS003xx id and the request ids (404 and 409/412 only at debug level: callers decide).
 *
 * Message ids: RMS00300 token request transport failure (TLS, connect, ...); RMS00301 token
 * refused: invalid/expired client secret (with the AADSTS code, never the secret); RMS00302 token
 * refused, other OAuth error; RMS00303/00304 token response malformed; RMS00310 Graph request
 * transport failure; RMS00311 2xx with malformed JSON; RMS00312 Graph error status (warning;
 * info for resync, debug for 404/409/412 on calls where that is an expected answer);
 * RMS00313 nextLink/deltaLink outside the Graph origin refused; RMS00314 2xx with wrongly typed
 * or missing fields; RMS00320 malformed item skipped in a delta page; RMS00330 several events
 * carry one activity number; RMS00340/00341 bad client options.
 */
#ifndef RMSYNC_GRAPH_H
#define RMSYNC_GRAPH_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include <cjson/cJSON.h>
#include "rmsync_settings.h"
#include "rmsync_http.h"
#include "rmsync_event.h"

/* Graph-level statuses (APR user error space, our 003xx range). Transport failures are returned
 * as the RMSYNC_HTTP_* codes of rmsync_http.h. */
#define RMSYNC_GRAPH_NOTFOUND    (APR_OS_START_USERERR + 340) /* 404 (ErrorItemNotFound, ...) */
#define RMSYNC_GRAPH_RESYNC      (APR_OS_START_USERERR + 341) /* delta state gone: 410,
                                   SyncStateNotFound, InvalidDeltaToken, resyncRequired */
#define RMSYNC_GRAPH_AUTH        (APR_OS_START_USERERR + 342) /* no token (bad secret, ...) or
                                   401 again after a refresh */
#define RMSYNC_GRAPH_FORBIDDEN   (APR_OS_START_USERERR + 343) /* 403 */
#define RMSYNC_GRAPH_CONFLICT    (APR_OS_START_USERERR + 344) /* 409 / 412 (If-Match) */
#define RMSYNC_GRAPH_THROTTLED   (APR_OS_START_USERERR + 345) /* 429/503/504 beyond the budget */
#define RMSYNC_GRAPH_SERVER      (APR_OS_START_USERERR + 346) /* other 5xx beyond the budget */
#define RMSYNC_GRAPH_BADREQUEST  (APR_OS_START_USERERR + 347) /* other 4xx */
#define RMSYNC_GRAPH_BADRESPONSE (APR_OS_START_USERERR + 348) /* malformed JSON, wrong types,
                                   missing fields, foreign nextLink, unexpected status */
#define RMSYNC_GRAPH_EINVAL      (APR_OS_START_USERERR + 349) /* bad arguments to the call */

typedef struct rmsync_graph_t rmsync_graph_t;

typedef struct rmsync_graph_opts_t {
    const char *authority_url;   /* https://login.microsoftonline.com (no tenant) */
    const char *graph_url;       /* https://graph.microsoft.com/v1.0 */
    const char *tenant;
    const char *client_id;
    const char *client_secret;   /* never logged; or: */
    const char *client_cert_pem; /* certificate credentials (PEM texts): the token request */
    const char *client_key_pem;  /* carries a signed client assertion (rmsync_jwt.h) */
    const char *ca_file;         /* NULL = system store */
    int connect_timeout_s;       /* default 10 */
    int total_timeout_s;         /* per attempt; default 60 */
    int stall_timeout_s;         /* no byte for this long = stalled; default 30 */
    int per_mailbox;             /* concurrent requests per mailbox, 1..4; default 4 */
    apr_size_t max_response;     /* bytes; default RMSyncGraphMaxResponse's (8 MiB) */
    int max_attempts;            /* per call including the first; default 6 */
    int max_wait_s;              /* total back-off per call; default 120; a Retry-After beyond
                                    what is left ends the call with RMSYNC_GRAPH_THROTTLED */
    int backoff_base_ms;         /* first back-off without Retry-After; default 500 (x2 per
                                    attempt, jittered +-50%, capped at 30 s) */
    volatile apr_uint32_t *stop; /* when non-zero: transfers and waits abort (RMSYNC_HTTP_EABORTED) */
} rmsync_graph_opts_t;

/* Counters (monotonic since creation) the runner can publish. */
typedef struct rmsync_graph_stats_t {
    apr_uint32_t requests;        /* HTTP attempts to Graph (not the token endpoint) */
    apr_uint32_t status_2xx, status_3xx, status_4xx, status_5xx;
    apr_uint32_t transport_errors;
    apr_uint32_t throttled;       /* 429 responses */
    apr_uint32_t unavailable;     /* 503/504 responses */
    apr_uint32_t retries;         /* attempts after the first */
    apr_uint32_t auth_retries;    /* 401 -> refresh -> retry */
    apr_uint32_t token_requests;  /* token endpoint calls */
    apr_uint32_t token_failures;
    apr_uint32_t bad_responses;   /* RMSYNC_GRAPH_BADRESPONSE results */
    apr_uint32_t resyncs;         /* RMSYNC_GRAPH_RESYNC results */
    apr_uint32_t wait_ms;         /* total back-off slept, milliseconds */
    apr_uint32_t tokens_obtained; /* token requests that gave a token (clears the runner's
                                     published token error) */
} rmsync_graph_stats_t;

typedef struct rmsync_graph_result_t {
    apr_status_t status;          /* same as the call's return value */
    int          http_status;     /* last HTTP status, 0 when none */
    const char  *error_code;      /* error.code (or OAuth "error"), NULL when none */
    const char  *error_message;   /* error.message (or error_description) */
    const char  *request_id;      /* request-id header (or error.innerError.request-id) */
    const char  *client_request_id; /* the id we sent */
    const char  *preference_applied; /* Preference-Applied header, e.g. IdType="ImmutableId" */
    cJSON       *json;            /* parsed response body, bound to the call's pool, or NULL */
    int          attempts;
    apr_interval_time_t waited;   /* time slept in back-off */
} rmsync_graph_result_t;

/* The options from rmsync_settings_t (authority_url, graph_url, tenant, client_id,
 * client_secret or client_cert_pem/client_key_pem, ca_file, graph_*_timeout_s,
 * graph_per_mailbox, graph_max_response) and the fixed knobs; _defaults: from
 * rmsync_settings_defaults(), so the two share one set of defaults. */
void rmsync_graph_opts_defaults(rmsync_graph_opts_t *o);
void rmsync_graph_opts_from_settings(rmsync_graph_opts_t *o, const rmsync_settings_t *s);

/* Create the client; strings are copied into p, which must outlive all calls. Returns
 * RMSYNC_GRAPH_EINVAL when a URL is not https, tenant/client id are missing, not exactly one
 * credential (secret, or certificate + key) is given, or the certificate cannot be loaded. */
apr_status_t rmsync_graph_create(rmsync_graph_t **pg, apr_pool_t *p, const rmsync_graph_opts_t *o);

void rmsync_graph_get_stats(rmsync_graph_t *g, rmsync_graph_stats_t *out);

/* Make sure a valid token is cached (fetching one if needed); force = drop the cached one first.
 * RMSYNC_GRAPH_AUTH with res->error_code = the OAuth error when the authority refuses. */
apr_status_t rmsync_graph_token(rmsync_graph_t *g, apr_pool_t *p, int force,
                                rmsync_graph_result_t *res);

/* Short text for RMSYNC_GRAPH_*, RMSYNC_HTTP_* and RMSYNC_JSON_* codes. */
const char *rmsync_graph_strerror(apr_pool_t *p, apr_status_t rv);
/* 1 when trying the same call later may succeed (throttled, 5xx, timeouts, connection errors). */
int rmsync_graph_is_transient(apr_status_t rv);

/* Generic call: method "GET"/"POST"/"PATCH"/"DELETE"; target is a path relative to graph_url
 * ("users/x/events") or an absolute URL on graph_url's origin; mailbox (may be NULL) selects the
 * per-mailbox concurrency slot; body may be NULL. Success = any 2xx; res->json holds the body. */
apr_status_t rmsync_graph_request(rmsync_graph_t *g, apr_pool_t *p, const char *method,
                                  const char *mailbox, const char *target, const cJSON *body,
                                  rmsync_graph_result_t *res);

/* ---- events -------------------------------------------------------------------------------- */

typedef struct rmsync_graph_delta_t {
    apr_array_header_t *events;     /* of rmsync_event_t *, in page order; removed ones have
                                       ev->removed = 1 (may repeat; may lie outside the window) */
    apr_array_header_t *bad_items;  /* of const char *: one message per item that failed to parse
                                       ("id ...: event field 'subject': wrong type"), logged */
    const char *next_link;          /* more pages in this round: pass it as link next time */
    const char *delta_link;         /* round complete: store it, pass it next time */
} rmsync_graph_delta_t;

/* One page of users/{mailbox}/calendarView/delta. link == NULL starts a round over
 * [start, end) (UTC); otherwise link (a stored nextLink/deltaLink) is fetched verbatim, start/end
 * ignored. max_page_size > 0 sends Prefer: odata.maxpagesize. Exactly one of next_link/delta_link
 * is set on success. RMSYNC_GRAPH_RESYNC: drop the stored link and start a new round. */
apr_status_t rmsync_graph_delta_page(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                     const char *link, apr_time_t start, apr_time_t end,
                                     int max_page_size, rmsync_graph_delta_t **pdelta,
                                     rmsync_graph_result_t *res);

/* issue 14: the same for a calendar of the mailbox: users/{mailbox}/calendars/{calendar_id}/...
 * (calendar_id NULL or "" = the main calendar, as the functions without _in). */
apr_status_t rmsync_graph_delta_page_in(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                        const char *calendar_id, const char *link,
                                        apr_time_t start, apr_time_t end, int max_page_size,
                                        rmsync_graph_delta_t **pdelta,
                                        rmsync_graph_result_t *res);

/* GET users/{mailbox}/events/{id} (with the activity-number extended property expanded).
 * 404 -> RMSYNC_GRAPH_NOTFOUND. */
apr_status_t rmsync_graph_get_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                    const char *event_id, rmsync_event_t **pev,
                                    rmsync_graph_result_t *res);

/* The events of several notifications of one mailbox in one round trip: POST $batch with one
 * GET users/{mailbox}/events/{id} per id (at most RMSYNC_GRAPH_BATCH_MAX, Graph's limit), run
 * one after the other. evs[i] is the event of event_ids[i] when its inner answer was 200, else
 * NULL (404, 429, 424 after a failed one, ...: the caller GETs those on their own, with the
 * client's usual retries). APR_SUCCESS when the batch itself was answered. */
#define RMSYNC_GRAPH_BATCH_MAX 20
apr_status_t rmsync_graph_get_events_batch(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                           const char *const *event_ids, int n,
                                           rmsync_event_t **evs, rmsync_graph_result_t *res);

typedef struct rmsync_graph_new_event_t {
    const char *subject;            /* required */
    apr_time_t  start, end;         /* required, UTC */
    int         is_all_day;
    const char *body_text;          /* plain-text body or NULL */
    const char *location;           /* location display name or NULL */
    apr_array_header_t *attendees;  /* of rmsync_attendee_t (email, name, type) or NULL */
    apr_array_header_t *categories; /* of const char * or NULL */
    const char *transaction_id;     /* idempotency key (recommended; makes retries safe) */
    const char *activity_no;        /* stored in RMSYNC_EVENT_PROP_ACTIVITY, or NULL */
} rmsync_graph_new_event_t;

/* POST users/{mailbox}/events -> the created event (201; a transactionId replay returns the
 * existing one). After an ambiguous failure, look it up with find_event_by_property first. */
apr_status_t rmsync_graph_create_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                       const rmsync_graph_new_event_t *ne, rmsync_event_t **pev,
                                       rmsync_graph_result_t *res);

/* The event in mailbox whose RMSYNC_EVENT_PROP_ACTIVITY equals activity_no ($filter=
 * singleValueExtendedProperties/Any(...) with $expand). None -> RMSYNC_GRAPH_NOTFOUND; several
 * -> the first, *pcount (if not NULL) says how many. */
apr_status_t rmsync_graph_find_event_by_property(rmsync_graph_t *g, apr_pool_t *p,
                                                 const char *mailbox, const char *activity_no,
                                                 rmsync_event_t **pev, int *pcount,
                                                 rmsync_graph_result_t *res);

apr_status_t rmsync_graph_create_event_in(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          const char *calendar_id,
                                          const rmsync_graph_new_event_t *ne,
                                          rmsync_event_t **pev, rmsync_graph_result_t *res);
apr_status_t rmsync_graph_find_event_by_property_in(rmsync_graph_t *g, apr_pool_t *p,
                                                    const char *mailbox, const char *calendar_id,
                                                    const char *activity_no,
                                                    rmsync_event_t **pev, int *pcount,
                                                    rmsync_graph_result_t *res);

/* issue 14: the id of mailbox's calendar named name (case-insensitively): GET
 * users/{mailbox}/calendars?$filter=name eq '...', POST users/{mailbox}/calendars when there is
 * none (*pcreated = 1), a 409 ErrorFolderExists reads the list again. */
apr_status_t rmsync_graph_calendar_ensure(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          const char *name, const char **pid, int *pcreated,
                                          rmsync_graph_result_t *res);

/* issue 14: GET users/{mailbox}/events/{master_id}/instances over [start, end): the
 * occurrences and exceptions of a series (of rmsync_event_t *), following nextLinks (20 pages
 * at most). */
apr_status_t rmsync_graph_list_instances(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                         const char *master_id, apr_time_t start, apr_time_t end,
                                         apr_array_header_t **pevents,
                                         rmsync_graph_result_t *res);

/* PATCH users/{mailbox}/events/{id} with the partial event in patch; if_match (an etag, or NULL)
 * is sent as If-Match: a stale one gives RMSYNC_GRAPH_CONFLICT. *pev (may be NULL) = new state. */
apr_status_t rmsync_graph_patch_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                      const char *event_id, const char *if_match,
                                      const cJSON *patch, rmsync_event_t **pev,
                                      rmsync_graph_result_t *res);

/* DELETE users/{mailbox}/events/{id} (If-Match when given). 404 -> RMSYNC_GRAPH_NOTFOUND. */
apr_status_t rmsync_graph_delete_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                       const char *event_id, const char *if_match,
                                       rmsync_graph_result_t *res);

/* ---- subscriptions ------------------------------------------------------------------------- */

typedef struct rmsync_graph_subscription_t {
    const char *id;
    const char *resource;
    const char *change_type;
    const char *notification_url;
    const char *lifecycle_url;      /* or NULL */
    const char *client_state;       /* or NULL (Graph may not echo it) */
    apr_time_t  expiration;
} rmsync_graph_subscription_t;

/* POST subscriptions: changeType created,updated,deleted on users/{user_id}/events.
 * lifecycle_url may be NULL. */
apr_status_t rmsync_graph_subscription_create(rmsync_graph_t *g, apr_pool_t *p,
                                              const char *user_id, const char *notification_url,
                                              const char *lifecycle_url, const char *client_state,
                                              apr_time_t expiration,
                                              rmsync_graph_subscription_t **psub,
                                              rmsync_graph_result_t *res);
/* issue 14: the same for a calendar (resource users/{id}/calendars/{escaped id}/events). */
apr_status_t rmsync_graph_subscription_create_in(rmsync_graph_t *g, apr_pool_t *p,
                                                 const char *user_id, const char *calendar_id,
                                                 const char *notification_url,
                                                 const char *lifecycle_url,
                                                 const char *client_state,
                                                 apr_time_t expiration,
                                                 rmsync_graph_subscription_t **psub,
                                                 rmsync_graph_result_t *res);
/* The subscription resource for user_id and calendar_id (NULL/"" = main calendar). */
const char *rmsync_graph_subscription_resource(apr_pool_t *p, const char *user_id,
                                               const char *calendar_id);
/* PATCH subscriptions/{id} {expirationDateTime}; 404 -> RMSYNC_GRAPH_NOTFOUND (recreate). */
apr_status_t rmsync_graph_subscription_renew(rmsync_graph_t *g, apr_pool_t *p, const char *sub_id,
                                             apr_time_t expiration,
                                             rmsync_graph_subscription_t **psub,
                                             rmsync_graph_result_t *res);
apr_status_t rmsync_graph_subscription_get(rmsync_graph_t *g, apr_pool_t *p, const char *sub_id,
                                           rmsync_graph_subscription_t **psub,
                                           rmsync_graph_result_t *res);
/* DELETE subscriptions/{id}; 404 -> RMSYNC_GRAPH_NOTFOUND (already gone). */
apr_status_t rmsync_graph_subscription_delete(rmsync_graph_t *g, apr_pool_t *p, const char *sub_id,
                                              rmsync_graph_result_t *res);

/* ---- master categories, users -------------------------------------------------------------- */

typedef struct rmsync_graph_category_t {
    const char *id, *name, *color;
} rmsync_graph_category_t;

/* GET users/{mailbox}/outlook/masterCategories -> array of rmsync_graph_category_t.
 * 403 (no MailboxSettings permission) -> RMSYNC_GRAPH_FORBIDDEN, logged at info level only: the
 * caller (rmsync_categories) warns once per mailbox. */
apr_status_t rmsync_graph_categories_list(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          apr_array_header_t **pcats, rmsync_graph_result_t *res);

/* POST users/{mailbox}/outlook/masterCategories {displayName, color}. Already there (409, or
 * another 4xx with the name found on re-listing, case-insensitively) is success with *pcreated
 * = 0. color NULL = "none". */
apr_status_t rmsync_graph_category_create(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          const char *name, const char *color, int *pcreated,
                                          rmsync_graph_result_t *res);

typedef struct rmsync_graph_user_t {
    const char *id, *mail, *upn;
} rmsync_graph_user_t;

/* GET users/{mailbox}?$select=id,mail,userPrincipalName. 404 -> RMSYNC_GRAPH_NOTFOUND. */
apr_status_t rmsync_graph_get_user(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                   rmsync_graph_user_t **puser, rmsync_graph_result_t *res);

/* GET users/{mailbox}/mailboxSettings/timeZone (MailboxSettings.Read) -> *ptz: the mailbox's zone
 * name as Outlook stores it (usually a Windows id, e.g. "W. Europe Standard Time"), NULL when
 * never set. 403 -> RMSYNC_GRAPH_FORBIDDEN at info level only (the caller logs once). */
apr_status_t rmsync_graph_mailbox_timezone(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                           const char **ptz, rmsync_graph_result_t *res);

#endif /* RMSYNC_GRAPH_H */
