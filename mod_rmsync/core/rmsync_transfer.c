/* mod_rmsync: CRM -> Outlook transfer, linking requests, category-driven linking.
 * See rmsync_transfer.h for the rules. */
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_event.h"
#include "rmsync_transfer.h"

/* ---- pure helpers (unit-tested) ------------------------------------------------------------ */

const char *rmsync_transfer_txn_id(apr_pool_t *p, const char *instance, long long activity_no)
{
    return apr_psprintf(p, "rmsync-%s-%lld", (instance && *instance) ? instance : "0", activity_no);
}

const char *rmsync_transfer_activity_url(apr_pool_t *p, const char *tmpl, long long activity_no)
{
    const char *pct;

    if (!tmpl || !*tmpl) {
        return NULL;
    }
    pct = strchr(tmpl, '%');
    if (!pct) {
        return tmpl;
    }
    /* exactly one "%s" and no other conversion: never hand a user template to printf */
    if (pct[1] != 's' || strchr(pct + 2, '%')) {
        return NULL;
    }
    return apr_psprintf(p, "%s%lld%s", apr_pstrmemdup(p, tmpl, (apr_size_t)(pct - tmpl)),
                        activity_no, pct + 2);
}

apr_interval_time_t rmsync_transfer_backoff(int attempts)
{
    apr_interval_time_t d = apr_time_from_sec(5);

    while (attempts-- > 1 && d < apr_time_from_sec(600)) {
        d *= 2;
    }
    return d > apr_time_from_sec(600) ? apr_time_from_sec(600) : d;
}

static cJSON *dttz(const char *when)
{
    cJSON *o = cJSON_CreateObject();

    if (o) {
        cJSON_AddStringToObject(o, "dateTime", when);
        cJSON_AddStringToObject(o, "timeZone", "UTC");
    }
    return o;
}

cJSON *rmsync_transfer_event_body(apr_pool_t *p, const rmsync_settings_t *s,
                                  const rmsync_transfer_activity_t *a, const char *txn_id)
{
    cJSON *ev, *body, *cats, *props, *prop;
    const char *url, *text;

    ev = rmsync_json_object(p);
    if (!ev) {
        return NULL;
    }
    cJSON_AddStringToObject(ev, "subject", a->description ? a->description : "");
    url = rmsync_transfer_activity_url(p, s->activity_url, a->activity_no);
    text = apr_psprintf(p, "CRM Business Activity %lld%s%s", a->activity_no,
                        url ? "\n" : "", url ? url : "");
    body = cJSON_AddObjectToObject(ev, "body");
    if (body) {
        cJSON_AddStringToObject(body, "contentType", "text");
        cJSON_AddStringToObject(body, "content", text);
    }
    cJSON_AddItemToObject(ev, "start", dttz(rmsync_event_format_time(p, a->start)));
    cJSON_AddItemToObject(ev, "end", dttz(rmsync_event_format_time(p, a->end)));
    cats = cJSON_AddArrayToObject(ev, "categories");
    if (cats && s->category_name && *s->category_name) {
        cJSON_AddItemToArray(cats, cJSON_CreateString(s->category_name));
    }
    if (txn_id) {
        cJSON_AddStringToObject(ev, "transactionId", txn_id);
    }
    props = cJSON_AddArrayToObject(ev, "singleValueExtendedProperties");
    prop = cJSON_CreateObject();
    if (props && prop) {
        cJSON_AddStringToObject(prop, "id", RMSYNC_EVENT_PROP_ACTIVITY);
        cJSON_AddStringToObject(prop, "value", apr_psprintf(p, "%lld", a->activity_no));
        cJSON_AddItemToArray(props, prop);
    }
    else {
        cJSON_Delete(prop);
    }
    /* Graph mails an invitation to every attendee: only when the admin asked for it. */
    if (s->transfer_attendees && a->attendees && a->attendees->nelts > 0) {
        cJSON *arr = cJSON_AddArrayToObject(ev, "attendees");
        int i;
        for (i = 0; arr && i < a->attendees->nelts; i++) {
            const rmsync_transfer_attendee_t *at =
                &APR_ARRAY_IDX(a->attendees, i, rmsync_transfer_attendee_t);
            cJSON *o, *addr;
            if (!at->email || !*at->email) {
                continue;
            }
            o = cJSON_CreateObject();
            if (!o) {
                break;
            }
            cJSON_AddStringToObject(o, "type", "required");
            addr = cJSON_AddObjectToObject(o, "emailAddress");
            if (addr) {
                cJSON_AddStringToObject(addr, "address", at->email);
                if (at->name && *at->name) {
                    cJSON_AddStringToObject(addr, "name", at->name);
                }
            }
            cJSON_AddItemToArray(arr, o);
        }
    }
    return ev;
}
