/* mod_rmsync: the Outlook event model, parsed from Graph JSON, and its content hash.
 *
 * rmsync_event_parse() type-checks every field it reads: a wrongly typed field is an error that
 * names the field, never a crash; unknown fields are ignored. Only "id" is required, so the sparse
 * occurrence rows calendarView/delta sometimes returns parse (ev->partial says so; GET the event
 * for its full state). All times are apr_time_t (microseconds since the epoch, UTC); the client
 * asks Graph for UTC (Prefer: outlook.timezone="UTC"), other zones are rejected unless the
 * dateTime carries its own offset.
 */
#ifndef RMSYNC_EVENT_H
#define RMSYNC_EVENT_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include <cjson/cJSON.h>

/* Status codes (APR user error space, our 003xx range). */
#define RMSYNC_EVENT_EINVAL (APR_OS_START_USERERR + 310) /* malformed / wrongly typed event JSON */
#define RMSYNC_EVENT_ETIME  (APR_OS_START_USERERR + 311) /* unparseable dateTime / unsupported zone */

/* The fixed single-value extended property that holds the CRM activity number on an event. */
#define RMSYNC_EVENT_PROP_ACTIVITY \
    "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name RMSyncActivityNo"

typedef enum {
    RMSYNC_EVENT_TYPE_UNKNOWN = 0,    /* absent or a value we do not know */
    RMSYNC_EVENT_TYPE_SINGLE,         /* singleInstance */
    RMSYNC_EVENT_TYPE_OCCURRENCE,     /* occurrence */
    RMSYNC_EVENT_TYPE_EXCEPTION,      /* exception */
    RMSYNC_EVENT_TYPE_SERIES_MASTER   /* seriesMaster */
} rmsync_event_type_e;

typedef struct rmsync_attendee_t {
    const char *email;     /* as Graph sent it (may be NULL: attendee without address) */
    const char *email_lc;  /* trimmed, ASCII-lowercased; for matching (NULL with email) */
    const char *name;      /* display name or NULL */
    const char *type;      /* required | optional | resource, or NULL */
    const char *response;  /* status.response: none | accepted | ..., or NULL */
} rmsync_attendee_t;

typedef struct rmsync_event_t {
    const char *id;                 /* always set (immutable id with our Prefer header) */
    const char *change_key;         /* changeKey or NULL */
    const char *etag;               /* @odata.etag (W/"...") or NULL: use for If-Match */
    const char *ical_uid;           /* iCalUId or NULL */
    const char *subject;            /* NULL when absent/null */
    apr_time_t  start, end;         /* UTC; 0 when absent (then partial = 1) */
    int         is_all_day;
    int         is_cancelled;
    int         is_organizer;
    const char *organizer_email;    /* organizer.emailAddress.address or NULL */
    const char *organizer_name;
    apr_array_header_t *attendees;  /* of rmsync_attendee_t, never NULL */
    apr_array_header_t *categories; /* of const char *, never NULL */
    rmsync_event_type_e type;
    const char *type_str;           /* the raw "type" value or NULL */
    const char *series_master_id;   /* or NULL */
    apr_time_t  last_modified;      /* lastModifiedDateTime, 0 when absent */
    const char *transaction_id;     /* or NULL */
    const char *activity_no;        /* RMSYNC_EVENT_PROP_ACTIVITY value when expanded, or NULL */
    const char *body_preview;       /* bodyPreview or NULL */
    const char *web_link;           /* webLink or NULL */
    const char *sensitivity;        /* normal | personal | private | confidential, or NULL */
    int         removed;            /* 1 for a delta "@removed" entry: only id and reason set */
    const char *removed_reason;     /* "deleted" / "changed" / ... */
    int         partial;            /* 1 when subject/start/end were not all present */
    const char *hash;               /* rmsync_event_hash() of this event (NULL for removed) */
} rmsync_event_t;

/* Parse one Graph event object (also a delta "@removed" entry) into p. On error returns
 * RMSYNC_EVENT_EINVAL / RMSYNC_EVENT_ETIME and, if perr is not NULL, a message naming the field;
 * *pev is then NULL. */
apr_status_t rmsync_event_parse(rmsync_event_t **pev, apr_pool_t *p, const cJSON *json,
                                const char **perr);

/* Stable content hash (hex SHA-1, "v1" scheme) of the sync-relevant fields: subject, start,
 * end, sorted de-duplicated lowercase attendee e-mails, isCancelled. Same Outlook state -> same
 * hash, whatever the attendee order, e-mail case, changeKey or unrelated fields. */
const char *rmsync_event_hash(apr_pool_t *p, const rmsync_event_t *ev);

/* Graph dateTime ("2026-11-25T10:00:00.0000000", fractional digits optional, optional "Z" or
 * "+hh:mm"/"-hh:mm" offset) in zone tz (NULL, "UTC", "Etc/UTC", "GMT", "Coordinated Universal
 * Time" or "tzone://Microsoft/Utc" = UTC; another zone is accepted only if the string carries an
 * offset) -> apr_time_t. Returns APR_SUCCESS or RMSYNC_EVENT_ETIME. */
apr_status_t rmsync_event_parse_time(const char *s, const char *tz, apr_time_t *pt);

/* Format t as "YYYY-MM-DDThh:mm:ss.fffffff" (Graph dateTime, zone given separately), and as
 * "YYYY-MM-DDThh:mm:ssZ" (query parameters such as startDateTime). */
const char *rmsync_event_format_time(apr_pool_t *p, apr_time_t t);
const char *rmsync_event_format_time_z(apr_pool_t *p, apr_time_t t);

const char *rmsync_event_type_name(rmsync_event_type_e t);

/* 1 when sensitivity is private or confidential (personal is not: Outlook shows a personal
 * item to delegates, so it is no secret). */
int rmsync_event_is_private(const rmsync_event_t *ev);

#endif /* RMSYNC_EVENT_H */
