/* mod_rmsync, run by the sync runner: Graph event JSON -> rmsync_event_t, and the content hash
 * (see rmsync_event.h). */
#include <string.h>
#include <stdlib.h>
#include <apr_strings.h>
#include <apr_sha1.h>
#include "rmsync.h"
#include "rmsync_json.h"
#include "rmsync_event.h"

/* ---- time ---------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    long long era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return 29;
    }
    return dm[m - 1];
}

/* Read exactly n digits. */
static int digits(const char **ps, int n, int *out)
{
    int v = 0, i;
    for (i = 0; i < n; i++) {
        char c = (*ps)[i];
        if (c < '0' || c > '9') {
            return 0;
        }
        v = v * 10 + (c - '0');
    }
    *ps += n;
    *out = v;
    return 1;
}

static int tz_is_utc(const char *tz)
{
    return !tz || !*tz || !strcasecmp(tz, "UTC") || !strcasecmp(tz, "Etc/UTC")
        || !strcasecmp(tz, "GMT") || !strcasecmp(tz, "Etc/GMT") || !strcasecmp(tz, "Z")
        || !strcasecmp(tz, "Coordinated Universal Time") || !strcasecmp(tz, "tzone://Microsoft/Utc");
}

apr_status_t rmsync_event_parse_time(const char *s, const char *tz, apr_time_t *pt)
{
    int y, mo, d, h, mi, sec, usec = 0, off = 0, has_off = 0;
    long long days, secs;

    if (!s) {
        return RMSYNC_EVENT_ETIME;
    }
    if (!digits(&s, 4, &y) || *s++ != '-' || !digits(&s, 2, &mo) || *s++ != '-'
        || !digits(&s, 2, &d) || (*s != 'T' && *s != 't' && *s != ' ')) {
        return RMSYNC_EVENT_ETIME;
    }
    s++;
    if (!digits(&s, 2, &h) || *s++ != ':' || !digits(&s, 2, &mi)) {
        return RMSYNC_EVENT_ETIME;
    }
    sec = 0;
    if (*s == ':') {
        s++;
        if (!digits(&s, 2, &sec)) {
            return RMSYNC_EVENT_ETIME;
        }
        if (*s == '.' || *s == ',') {
            int n = 0;
            s++;
            if (*s < '0' || *s > '9') {
                return RMSYNC_EVENT_ETIME;
            }
            /* Graph sends 7 digits ("...00.0000000") for dateTime, fewer for timestamps. */
            while (*s >= '0' && *s <= '9') {
                if (n < 6) {
                    usec = usec * 10 + (*s - '0');
                }
                n++, s++;
                if (n > 30) {
                    return RMSYNC_EVENT_ETIME;
                }
            }
            for (; n < 6; n++) {
                usec *= 10;
            }
        }
    }
    if (*s == 'Z' || *s == 'z') {
        has_off = 1;
        s++;
    }
    else if (*s == '+' || *s == '-') {
        int sign = *s == '-' ? -1 : 1, oh, om;
        s++;
        if (!digits(&s, 2, &oh)) {
            return RMSYNC_EVENT_ETIME;
        }
        if (*s == ':') {
            s++;
        }
        if (!digits(&s, 2, &om) || oh > 23 || om > 59) {
            return RMSYNC_EVENT_ETIME;
        }
        off = sign * (oh * 3600 + om * 60);
        has_off = 1;
    }
    if (*s != '\0') {
        return RMSYNC_EVENT_ETIME;
    }
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59
        || sec > 59) {
        return RMSYNC_EVENT_ETIME;
    }
    /* Without its own offset the value is in tz; we only ever ask Graph for UTC. */
    if (!has_off && !tz_is_utc(tz)) {
        return RMSYNC_EVENT_ETIME;
    }
    days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    secs = days * 86400 + h * 3600 + mi * 60 + sec - off;
    *pt = (apr_time_t)secs * APR_USEC_PER_SEC + usec;
    return APR_SUCCESS;
}

static const char *fmt_time(apr_pool_t *p, apr_time_t t, int z)
{
    apr_time_exp_t tm;

    apr_time_exp_gmt(&tm, t);
    if (z) {
        return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    }
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02d.%06d0", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_usec);
}

const char *rmsync_event_format_time(apr_pool_t *p, apr_time_t t)
{
    return fmt_time(p, t, 0);
}

const char *rmsync_event_format_time_z(apr_pool_t *p, apr_time_t t)
{
    return fmt_time(p, t, 1);
}

/* ---- parsing ------------------------------------------------------------------------------- */

typedef struct {
    apr_pool_t *p;
    const char *err;
} pctx_t;

static apr_status_t fail(pctx_t *c, const char *field, apr_status_t rv)
{
    if (!c->err) {
        c->err = apr_psprintf(c->p, "event field '%s': %s", field,
                              rmsync_json_strerror(c->p, rv));
    }
    return RMSYNC_EVENT_EINVAL;
}

/* Optional string: absent/null -> NULL; wrong type -> error. */
static apr_status_t opt_str(pctx_t *c, const cJSON *o, const char *name, const char *field,
                            const char **pv)
{
    apr_status_t rv = rmsync_json_opt_string(o, name, pv);
    return rv ? fail(c, field, rv) : APR_SUCCESS;
}

/* Optional object: absent/null -> *pv = NULL. */
static apr_status_t opt_obj(pctx_t *c, const cJSON *o, const char *name, const char *field,
                            cJSON **pv)
{
    apr_status_t rv = rmsync_json_get_object(o, name, pv);
    if (rv == RMSYNC_JSON_ENOENT || rv == RMSYNC_JSON_ENULL) {
        *pv = NULL;
        return APR_SUCCESS;
    }
    return rv ? fail(c, field, rv) : APR_SUCCESS;
}

/* The event object itself is read through its member index (rmsync_json_ix_t): ~25 names. */
static apr_status_t ix_str(pctx_t *c, const rmsync_json_ix_t *ix, const char *name,
                           const char **pv)
{
    apr_status_t rv = rmsync_json_ix_opt_string(ix, name, pv);
    return rv ? fail(c, name, rv) : APR_SUCCESS;
}

static apr_status_t ix_bool(pctx_t *c, const rmsync_json_ix_t *ix, const char *name, int *pv)
{
    apr_status_t rv = rmsync_json_ix_bool(ix, name, pv);
    if (rv == RMSYNC_JSON_ENOENT || rv == RMSYNC_JSON_ENULL) {
        *pv = 0;
        return APR_SUCCESS;
    }
    return rv ? fail(c, name, rv) : APR_SUCCESS;
}

static apr_status_t ix_obj(pctx_t *c, const rmsync_json_ix_t *ix, const char *name, cJSON **pv)
{
    apr_status_t rv = rmsync_json_ix_object(ix, name, pv);
    if (rv == RMSYNC_JSON_ENOENT || rv == RMSYNC_JSON_ENULL) {
        *pv = NULL;
        return APR_SUCCESS;
    }
    return rv ? fail(c, name, rv) : APR_SUCCESS;
}

static apr_status_t ix_arr(pctx_t *c, const rmsync_json_ix_t *ix, const char *name, cJSON **pv)
{
    apr_status_t rv = rmsync_json_ix_array(ix, name, pv);
    if (rv == RMSYNC_JSON_ENOENT || rv == RMSYNC_JSON_ENULL) {
        *pv = NULL;
        return APR_SUCCESS;
    }
    return rv ? fail(c, name, rv) : APR_SUCCESS;
}

/* dateTimeTimeZone {dateTime, timeZone}; *present = 0 when absent or null. */
static apr_status_t dtz(pctx_t *c, const rmsync_json_ix_t *ix, const char *name, apr_time_t *pt,
                        int *present)
{
    cJSON *v = NULL;
    const char *dt = NULL, *tz = NULL;
    apr_status_t rv;

    *present = 0;
    if ((rv = ix_obj(c, ix, name, &v)) != APR_SUCCESS || !v) {
        return rv;
    }
    rv = rmsync_json_get_string(v, "dateTime", &dt);
    if (rv) {
        return fail(c, apr_pstrcat(c->p, name, ".dateTime", NULL), rv);
    }
    if ((rv = opt_str(c, v, "timeZone", apr_pstrcat(c->p, name, ".timeZone", NULL), &tz))) {
        return rv;
    }
    if (rmsync_event_parse_time(dt, tz, pt) != APR_SUCCESS) {
        c->err = apr_psprintf(c->p, "event field '%s': unparseable dateTime or zone not UTC", name);
        return RMSYNC_EVENT_ETIME;
    }
    *present = 1;
    return APR_SUCCESS;
}

static const char *lc_trim(apr_pool_t *p, const char *s)
{
    char *r, *q;
    apr_size_t n;

    while (*s == ' ' || *s == '\t') {
        s++;
    }
    n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        n--;
    }
    r = apr_pstrmemdup(p, s, n);
    for (q = r; *q; q++) {
        if (*q >= 'A' && *q <= 'Z') {
            *q = (char)(*q - 'A' + 'a');
        }
    }
    return r;
}

/* recipient {emailAddress: {address, name}} */
static apr_status_t email_address(pctx_t *c, const cJSON *o, const char *field,
                                  const char **paddr, const char **pname)
{
    cJSON *ea = NULL;
    apr_status_t rv;

    *paddr = *pname = NULL;
    if ((rv = opt_obj(c, o, "emailAddress", field, &ea)) || !ea) {
        return rv;
    }
    if ((rv = opt_str(c, ea, "address", field, paddr))
        || (rv = opt_str(c, ea, "name", field, pname))) {
        return rv;
    }
    return APR_SUCCESS;
}

/* Graph's event types by their rmsync_event_type_e value (UNKNOWN: absent or another). */
static const char *const type_names[] = {
    "unknown", "singleInstance", "occurrence", "exception", "seriesMaster"
};
#define N_TYPES ((int)(sizeof(type_names) / sizeof(type_names[0])))

static rmsync_event_type_e type_of(const char *s)
{
    int t;
    for (t = RMSYNC_EVENT_TYPE_SINGLE; s && t < N_TYPES; t++) {
        if (!strcmp(s, type_names[t])) {
            return (rmsync_event_type_e)t;
        }
    }
    return RMSYNC_EVENT_TYPE_UNKNOWN;
}

const char *rmsync_event_type_name(rmsync_event_type_e t)
{
    return (int)t > 0 && (int)t < N_TYPES ? type_names[t] : type_names[0];
}

int rmsync_event_is_private(const rmsync_event_t *ev)
{
    return ev && ev->sensitivity
           && (!strcasecmp(ev->sensitivity, "private") || !strcasecmp(ev->sensitivity, "confidential"));
}

static apr_status_t parse_body(pctx_t *c, rmsync_event_t *ev, const rmsync_json_ix_t *o)
{
    cJSON *v = NULL, *it;
    const char *lm = NULL;
    apr_status_t rv;
    int has_start, has_end;

    if ((rv = ix_str(c, o, "changeKey", &ev->change_key))
        || (rv = ix_str(c, o, "@odata.etag", &ev->etag))
        || (rv = ix_str(c, o, "iCalUId", &ev->ical_uid))
        || (rv = ix_str(c, o, "subject", &ev->subject))
        || (rv = ix_str(c, o, "type", &ev->type_str))
        || (rv = ix_str(c, o, "seriesMasterId", &ev->series_master_id))
        || (rv = ix_str(c, o, "transactionId", &ev->transaction_id))
        || (rv = ix_str(c, o, "bodyPreview", &ev->body_preview))
        || (rv = ix_str(c, o, "webLink", &ev->web_link))
        || (rv = ix_str(c, o, "sensitivity", &ev->sensitivity))
        || (rv = ix_str(c, o, "lastModifiedDateTime", &lm))
        || (rv = ix_bool(c, o, "isAllDay", &ev->is_all_day))
        || (rv = ix_bool(c, o, "isCancelled", &ev->is_cancelled))
        || (rv = ix_bool(c, o, "isOrganizer", &ev->is_organizer))) {
        return rv;
    }
    ev->type = type_of(ev->type_str);
    if (lm && rmsync_event_parse_time(lm, NULL, &ev->last_modified) != APR_SUCCESS) {
        c->err = "event field 'lastModifiedDateTime': unparseable timestamp";
        return RMSYNC_EVENT_ETIME;
    }
    if ((rv = dtz(c, o, "start", &ev->start, &has_start))
        || (rv = dtz(c, o, "end", &ev->end, &has_end))) {
        return rv;
    }
    ev->partial = !has_start || !has_end || !rmsync_json_ix_member(o, "subject");

    if ((rv = ix_obj(c, o, "organizer", &v))) {
        return rv;
    }
    if (v && (rv = email_address(c, v, "organizer.emailAddress", &ev->organizer_email,
                                 &ev->organizer_name))) {
        return rv;
    }

    if ((rv = ix_arr(c, o, "attendees", &v))) {
        return rv;
    }
    cJSON_ArrayForEach(it, v) {
        rmsync_attendee_t *a;
        cJSON *st = NULL;

        if (!cJSON_IsObject(it)) {
            return fail(c, "attendees[]", RMSYNC_JSON_ETYPE);
        }
        a = apr_array_push(ev->attendees);
        memset(a, 0, sizeof(*a));
        if ((rv = email_address(c, it, "attendees[].emailAddress", &a->email, &a->name))
            || (rv = opt_str(c, it, "type", "attendees[].type", &a->type))
            || (rv = opt_obj(c, it, "status", "attendees[].status", &st))
            || (st && (rv = opt_str(c, st, "response", "attendees[].status.response",
                                    &a->response)))) {
            return rv;
        }
        a->email_lc = a->email ? lc_trim(c->p, a->email) : NULL;
    }

    if ((rv = ix_arr(c, o, "categories", &v))) {
        return rv;
    }
    cJSON_ArrayForEach(it, v) {
        if (!cJSON_IsString(it) || !it->valuestring) {
            return fail(c, "categories[]", RMSYNC_JSON_ETYPE);
        }
        APR_ARRAY_PUSH(ev->categories, const char *) = it->valuestring;
    }

    if ((rv = ix_arr(c, o, "singleValueExtendedProperties", &v))) {
        return rv;
    }
    cJSON_ArrayForEach(it, v) {
        const char *pid = NULL, *pval = NULL;
        if (!cJSON_IsObject(it)) {
            return fail(c, "singleValueExtendedProperties[]", RMSYNC_JSON_ETYPE);
        }
        if ((rv = opt_str(c, it, "id", "singleValueExtendedProperties[].id", &pid))
            || (rv = opt_str(c, it, "value", "singleValueExtendedProperties[].value", &pval))) {
            return rv;
        }
        /* Exchange may normalise the GUID's case. */
        if (pid && pval && !strcasecmp(pid, RMSYNC_EVENT_PROP_ACTIVITY)) {
            ev->activity_no = pval;
        }
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_event_parse(rmsync_event_t **pev, apr_pool_t *p, const cJSON *json,
                                const char **perr)
{
    pctx_t c = { p, NULL };
    rmsync_event_t *ev;
    cJSON *removed = NULL;
    rmsync_json_ix_t ix;
    apr_status_t rv;

    *pev = NULL;
    if (perr) {
        *perr = NULL;
    }
    if (!json || !cJSON_IsObject(json)) {
        if (perr) {
            *perr = "event is not a JSON object";
        }
        return RMSYNC_EVENT_EINVAL;
    }
    ev = apr_pcalloc(p, sizeof(*ev));
    ev->attendees = apr_array_make(p, 4, sizeof(rmsync_attendee_t));
    ev->categories = apr_array_make(p, 2, sizeof(const char *));

    rmsync_json_ix_init(&ix, json);
    rv = rmsync_json_ix_string(&ix, "id", &ev->id);
    if (rv == APR_SUCCESS && !*ev->id) {
        rv = RMSYNC_JSON_ETYPE;
    }
    if (rv) {
        fail(&c, "id", rv);
        rv = RMSYNC_EVENT_EINVAL;
        goto out;
    }
    if ((rv = ix_obj(&c, &ix, "@removed", &removed))) {
        goto out;
    }
    if (rmsync_json_ix_member(&ix, "@removed")) {
        /* "@removed": null is not a removal marker we know; "@removed": {} is. */
        if (!removed) {
            rv = fail(&c, "@removed", RMSYNC_JSON_ENULL);
            goto out;
        }
        ev->removed = 1;
        if ((rv = opt_str(&c, removed, "reason", "@removed.reason", &ev->removed_reason))) {
            goto out;
        }
        if (!ev->removed_reason) {
            ev->removed_reason = "deleted";
        }
        *pev = ev;
        return APR_SUCCESS;
    }
    if ((rv = parse_body(&c, ev, &ix)) != APR_SUCCESS) {
        goto out;
    }
    ev->hash = ev->partial ? NULL : rmsync_event_hash(p, ev);
    *pev = ev;
    return APR_SUCCESS;
out:
    if (perr) {
        *perr = c.err ? c.err : "malformed event";
    }
    return rv;
}

/* ---- hash ---------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Length-prefixed fields make the encoding unambiguous. */
static void h_str(apr_sha1_ctx_t *ctx, char tag, const char *s)
{
    char hdr[32];
    apr_size_t n = s ? strlen(s) : 0;
    int hl = apr_snprintf(hdr, sizeof(hdr), "%c%" APR_SIZE_T_FMT ":", tag, n);
    apr_sha1_update_binary(ctx, (const unsigned char *)hdr, (unsigned int)hl);
    if (n) {
        apr_sha1_update_binary(ctx, (const unsigned char *)s, (unsigned int)n);
    }
}

static void h_int(apr_sha1_ctx_t *ctx, char tag, long long v)
{
    char buf[40];
    /* APR's formatter has no %lld: use its int64 format. */
    int n = apr_snprintf(buf, sizeof(buf), "%c%" APR_INT64_T_FMT ";", tag, (apr_int64_t)v);
    apr_sha1_update_binary(ctx, (const unsigned char *)buf, (unsigned int)n);
}

const char *rmsync_event_hash(apr_pool_t *p, const rmsync_event_t *ev)
{
    apr_sha1_ctx_t ctx;
    unsigned char dg[APR_SHA1_DIGESTSIZE];
    const char **emails;
    char *hex;
    int i, n = 0, out = 0;
    static const char xd[] = "0123456789abcdef";

    emails = apr_palloc(p, sizeof(char *) * (ev->attendees->nelts + 1));
    for (i = 0; i < ev->attendees->nelts; i++) {
        const rmsync_attendee_t *a = &RMSYNC_ARRAY_IDX(ev->attendees, i, rmsync_attendee_t);
        if (a->email_lc && *a->email_lc) {
            emails[n++] = a->email_lc;
        }
    }
    qsort(emails, (size_t)n, sizeof(char *), cmp_str);

    apr_sha1_init(&ctx);
    apr_sha1_update_binary(&ctx, (const unsigned char *)"rmsync-event-v1;", 16);
    h_str(&ctx, 's', ev->subject);
    h_int(&ctx, 'b', (long long)ev->start);
    h_int(&ctx, 'e', (long long)ev->end);
    h_int(&ctx, 'c', ev->is_cancelled ? 1 : 0);
    for (i = 0; i < n; i++) {
        if (i > 0 && !strcmp(emails[i], emails[i - 1])) {
            continue;   /* the same person listed twice is the same state */
        }
        out++;
        h_str(&ctx, 'a', emails[i]);
    }
    h_int(&ctx, 'n', out);
    apr_sha1_final(dg, &ctx);
    hex = apr_palloc(p, 2 * APR_SHA1_DIGESTSIZE + 1);
    for (i = 0; i < APR_SHA1_DIGESTSIZE; i++) {
        hex[2 * i] = xd[dg[i] >> 4];
        hex[2 * i + 1] = xd[dg[i] & 15];
    }
    hex[2 * APR_SHA1_DIGESTSIZE] = '\0';
    return hex;
}
