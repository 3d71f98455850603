/* mod_rmsync: the change-notification queue: intake (webhook) and processing (runner step). */
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_hash.h>
#include <apr_crypto.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_db.h"
#include "rmsync_queue.h"

/* ------------------------------------------------------------------------------------------ */
/* intake: parsing                                                                             */

int rmsync_queue_secret_equals(const char *a, const char *b)
{
    apr_size_t la, lb;

    if (!a || !b) {
        return 0;
    }
    la = strlen(a);
    lb = strlen(b);
    /* The length of a random base64url secret is not secret; the bytes are. */
    if (la != lb || la == 0) {
        return 0;
    }
    return apr_crypto_equals(a, b, la) ? 1 : 0;
}

/* A string member that is present, a JSON string, non-empty and at most max bytes;
 * optional: absent / null give APR_SUCCESS with NULL. */
static int get_str(const cJSON *item, const char *name, apr_size_t max, int optional,
                   const char **pval)
{
    const char *s = NULL;
    apr_status_t rv = optional ? rmsync_json_opt_string(item, name, &s)
                               : rmsync_json_get_string(item, name, &s);
    if (rv != APR_SUCCESS) {
        return 0;
    }
    if (s && (!*s || strlen(s) > max)) {
        return 0;
    }
    *pval = s;
    return 1;
}

/* Graph sends resource paths like "Users/{uid}/Events/{id}" (PascalCase); take the id. */
static const char *event_id_from_resource(apr_pool_t *p, const char *resource)
{
    const char *slash;

    if (!resource) {
        return NULL;
    }
    slash = strrchr(resource, '/');
    if (!slash || !slash[1] || slash == resource) {
        return NULL;
    }
    /* The segment before the id must name the events collection. */
    {
        const char *prev = slash - 1;
        while (prev > resource && *prev != '/') {
            prev--;
        }
        if (*prev == '/') {
            prev++;
        }
        if ((apr_size_t)(slash - prev) != 6 || strncasecmp(prev, "events", 6)) {
            return NULL;
        }
    }
    return apr_pstrdup(p, slash + 1);
}

static int parse_item(rmsync_notif_item_t *it, apr_pool_t *p, const cJSON *item,
                      int lifecycle_endpoint)
{
    const char *lifecycle = NULL;
    cJSON *rdata = NULL;

    if (!cJSON_IsObject(item)) {
        return 0;
    }
    memset(it, 0, sizeof(*it));
    if (!get_str(item, "subscriptionId", RMSYNC_QUEUE_MAX_ID_LEN, 0, &it->subscription_id)
        || !get_str(item, "clientState", RMSYNC_QUEUE_MAX_STATE_LEN, 1, &it->client_state)
        || !get_str(item, "tenantId", RMSYNC_QUEUE_MAX_ID_LEN, 1, &it->tenant_id)
        || !get_str(item, "resource", RMSYNC_QUEUE_MAX_ID_LEN, 1, &it->resource)
        || !get_str(item, "lifecycleEvent", 64, 1, &lifecycle)) {
        return 0;
    }
    if (lifecycle) {
        if (strcmp(lifecycle, "reauthorizationRequired") && strcmp(lifecycle, "subscriptionRemoved")
            && strcmp(lifecycle, "missed")) {
            return 0;
        }
        it->kind = RMSYNC_NOTIF_LIFECYCLE;
        it->lifecycle_event = lifecycle;
        return 1;
    }
    if (lifecycle_endpoint) {
        return 0;
    }
    it->kind = RMSYNC_NOTIF_CHANGE;
    if (!get_str(item, "changeType", 16, 0, &it->change_type)
        || (strcmp(it->change_type, "created") && strcmp(it->change_type, "updated")
            && strcmp(it->change_type, "deleted"))) {
        return 0;
    }
    /* resourceData is optional in the schema, but when present it must be an object with a
     * string id; fall back to the resource path otherwise. */
    if (rmsync_json_member(item, "resourceData")) {
        if (rmsync_json_get_object(item, "resourceData", &rdata) != APR_SUCCESS
            || !get_str(rdata, "id", RMSYNC_QUEUE_MAX_ID_LEN, 1, &it->event_id)) {
            return 0;
        }
    }
    if (!it->event_id) {
        it->event_id = event_id_from_resource(p, it->resource);
    }
    return it->event_id != NULL;
}

apr_status_t rmsync_notif_parse(rmsync_notif_batch_t **pbatch, apr_pool_t *p,
                                const char *body, apr_size_t len, int lifecycle_endpoint,
                                const char **why)
{
    cJSON *json = NULL, *value = NULL, *item;
    rmsync_notif_batch_t *batch;
    apr_status_t rv;
    int n;

    *pbatch = NULL;
    *why = NULL;
    rv = rmsync_json_parse(&json, p, body, len, 0, NULL);
    if (rv != APR_SUCCESS) {
        *why = "malformed JSON";
        return RMSYNC_QUEUE_EJSON;
    }
    if (!cJSON_IsObject(json) || rmsync_json_get_array(json, "value", &value) != APR_SUCCESS) {
        *why = "`value` must be an array";
        return RMSYNC_QUEUE_ENOVALUE;
    }
    n = cJSON_GetArraySize(value);
    if (n > RMSYNC_QUEUE_MAX_ITEMS) {
        *why = "too many items in `value`";
        return RMSYNC_QUEUE_ETOOMANY;
    }
    batch = apr_pcalloc(p, sizeof(*batch));
    batch->items = apr_array_make(p, n > 0 ? n : 1, sizeof(rmsync_notif_item_t));
    cJSON_ArrayForEach(item, value) {
        rmsync_notif_item_t it;
        if (parse_item(&it, p, item, lifecycle_endpoint)) {
            APR_ARRAY_PUSH(batch->items, rmsync_notif_item_t) = it;
        }
        else {
            batch->invalid++;
        }
    }
    *pbatch = batch;
    return APR_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* intake: storing                                                                             */

static const rmsync_db_stmt_t intake_stmts[] = {
    { "webhook_subs_lookup",
      "SELECT subscription_id, client_state, representative_id"
      "  FROM rmsync.subscription"
      " WHERE subscription_id IN (SELECT jsonb_array_elements_text($1::jsonb))", 1 },
    /* One statement = one short transaction. A repeat of a pending item coalesces; a 'deleted'
     * that meets a pending created/updated item for the same event wins, so the runner reads a
     * 404 as the deletion it is. The table trigger NOTIFYs the runner on commit. */
    { "webhook_enqueue",
      "WITH j AS (SELECT * FROM jsonb_to_recordset($1::jsonb)"
      "             AS x(sub text, kind text, ct text, le text, res text, ev text, rep text)),"
      " ins AS (SELECT rmsync.notification_enqueue(j.sub, j.kind, j.ct, j.le, j.res, j.ev, j.rep)"
      "           AS id FROM j),"
      " upd AS (UPDATE rmsync.notification n SET change_type = 'deleted' FROM j"
      "          WHERE j.ct = 'deleted' AND n.state = 'pending' AND n.kind = 'change'"
      "            AND n.subscription_id = j.sub AND n.event_id = j.ev"
      "            AND n.change_type IS DISTINCT FROM 'deleted' RETURNING n.id)"
      " SELECT (SELECT count(id) FROM ins) AS stored, (SELECT count(*) FROM ins) AS items,"
      "        (SELECT count(*) FROM upd) AS upgraded", 1 },
};

apr_status_t rmsync_queue_intake_init(void)
{
    return rmsync_db_register(intake_stmts, (int)(sizeof(intake_stmts) / sizeof(intake_stmts[0])));
}

/* Our subscriptions named in one batch: id -> (secret, representative). */
typedef struct {
    const char *client_state;
    const char *representative_id;
} sub_info_t;

static apr_status_t db_status(apr_status_t rv)
{
    /* Anything but success means "not stored": the handler answers 503 and Graph retries. */
    return rv == APR_SUCCESS ? APR_SUCCESS : RMSYNC_QUEUE_EDB;
}

static apr_status_t lookup_subscriptions(apr_hash_t **psubs, rmsync_db_t *db, apr_pool_t *p,
                                         const apr_array_header_t *items)
{
    cJSON *ids = rmsync_json_bind(p, cJSON_CreateArray());
    apr_hash_t *seen = apr_hash_make(p), *subs = apr_hash_make(p);
    rmsync_db_result_t *res = NULL;
    const char *json;
    apr_status_t rv;
    int i;

    if (!ids) {
        return APR_ENOMEM;
    }
    for (i = 0; i < items->nelts; i++) {
        const rmsync_notif_item_t *it = &APR_ARRAY_IDX(items, i, rmsync_notif_item_t);
        if (!apr_hash_get(seen, it->subscription_id, APR_HASH_KEY_STRING)) {
            apr_hash_set(seen, it->subscription_id, APR_HASH_KEY_STRING, it);
            cJSON_AddItemToArray(ids, cJSON_CreateString(it->subscription_id));
        }
    }
    json = rmsync_json_print(p, ids);
    if (!json) {
        return APR_ENOMEM;
    }
    rv = rmsync_db_exec(db, p, "webhook_subs_lookup", RMSYNC_DB_PARAMS(json), &res);
    if (rv != APR_SUCCESS) {
        if (!RMSYNC_DB_IS_DOWN(rv)) {
            rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00601) "webhook: subscription lookup "
                       "failed: [%s] %s", rmsync_db_sqlstate(db), rmsync_db_errmsg(db));
        }
        return db_status(rv);
    }
    for (i = 0; i < res->nrows; i++) {
        sub_info_t *si = apr_pcalloc(p, sizeof(*si));
        const char *id = rmsync_db_value(res, i, 0);
        si->client_state = rmsync_db_value(res, i, 1);
        si->representative_id = rmsync_db_value(res, i, 2);
        if (id && si->client_state) {
            apr_hash_set(subs, id, APR_HASH_KEY_STRING, si);
        }
    }
    *psubs = subs;
    return APR_SUCCESS;
}

static void add_str(cJSON *obj, const char *name, const char *val)
{
    if (val) {
        cJSON_AddStringToObject(obj, name, val);
    }
    else {
        cJSON_AddNullToObject(obj, name);
    }
}

apr_status_t rmsync_notif_store(rmsync_notif_result_t *result, rmsync_db_t *db, apr_pool_t *p,
                                const rmsync_notif_batch_t *batch)
{
    apr_hash_t *subs = NULL;
    rmsync_db_result_t *res = NULL;
    cJSON *rows;
    const char *json, *v;
    apr_status_t rv;
    int i, good = 0;

    memset(result, 0, sizeof(*result));
    result->received = batch->items->nelts + batch->invalid;
    result->invalid = batch->invalid;
    if (batch->items->nelts == 0) {
        return APR_SUCCESS;
    }
    rv = lookup_subscriptions(&subs, db, p, batch->items);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    rows = rmsync_json_bind(p, cJSON_CreateArray());
    if (!rows) {
        return APR_ENOMEM;
    }
    for (i = 0; i < batch->items->nelts; i++) {
        const rmsync_notif_item_t *it = &APR_ARRAY_IDX(batch->items, i, rmsync_notif_item_t);
        const sub_info_t *si = apr_hash_get(subs, it->subscription_id, APR_HASH_KEY_STRING);
        cJSON *row;

        if (!si) {
            result->unknown_subscription++;
            continue;
        }
        if (!rmsync_queue_secret_equals(it->client_state, si->client_state)) {
            result->bad_client_state++;
            continue;
        }
        row = cJSON_CreateObject();
        if (!row) {
            return APR_ENOMEM;
        }
        cJSON_AddItemToArray(rows, row);
        add_str(row, "sub", it->subscription_id);
        add_str(row, "kind", it->kind == RMSYNC_NOTIF_LIFECYCLE ? "lifecycle" : "change");
        add_str(row, "ct", it->change_type);
        add_str(row, "le", it->lifecycle_event);
        add_str(row, "res", it->resource);
        add_str(row, "ev", it->event_id);
        add_str(row, "rep", si->representative_id);
        good++;
    }
    if (good == 0) {
        return APR_SUCCESS;
    }
    json = rmsync_json_print(p, rows);
    if (!json) {
        return APR_ENOMEM;
    }
    rv = rmsync_db_exec(db, p, "webhook_enqueue", RMSYNC_DB_PARAMS(json), &res);
    if (rv != APR_SUCCESS || res->nrows != 1) {
        if (rv != APR_SUCCESS && !RMSYNC_DB_IS_DOWN(rv)) {
            rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00602) "webhook: storing %d notification(s) "
                       "failed: [%s] %s", good, rmsync_db_sqlstate(db), rmsync_db_errmsg(db));
        }
        return RMSYNC_QUEUE_EDB;
    }
    v = rmsync_db_value(res, 0, 0);
    result->stored = v ? atoi(v) : 0;
    v = rmsync_db_value(res, 0, 1);
    result->coalesced = (v ? atoi(v) : 0) - result->stored;
    return APR_SUCCESS;
}
