/* mod_rmsync: cJSON trees bound to APR pools, with size-capped parsing and typed getters.
 *
 * Every tree made here is owned by a pool: a cleanup on that pool calls cJSON_Delete, so callers
 * never free JSON by hand, except the read-only trees of rmsync_json_parse_pooled(), which live
 * in blocks of their pool. For those, rmsync_json_use_arenas() installs cJSON's global allocator
 * hooks once per process (cJSON_InitHooks is process-global and not thread-safe: the runner and
 * the webhook's child_init call it before their threads start); the hooks divert only the
 * allocations of a pooled parse and pass everything else to malloc/free. Lookups are
 * case-sensitive (Graph field names are), unknown
 * fields are ignored. Getters check the JSON type and return a distinct status for "absent",
 * "null" and "wrong type", so a malformed Graph response is an error, never a crash.
 */
#ifndef RMSYNC_JSON_H
#define RMSYNC_JSON_H

#include <apr_pools.h>
#include <apr_errno.h>
#include <apr_tables.h>
#include <cjson/cJSON.h>

/* Status codes (APR user error space; offsets follow our message-id range 003xx). */
#define RMSYNC_JSON_EPARSE    (APR_OS_START_USERERR + 300) /* not valid JSON */
#define RMSYNC_JSON_ETOOLARGE (APR_OS_START_USERERR + 301) /* input above the size cap */
#define RMSYNC_JSON_ENOENT    (APR_OS_START_USERERR + 302) /* member absent */
#define RMSYNC_JSON_ETYPE     (APR_OS_START_USERERR + 303) /* member has the wrong JSON type */
#define RMSYNC_JSON_ENULL     (APR_OS_START_USERERR + 304) /* member is JSON null */

/* Parse len bytes of data (need not be NUL-terminated; no trailing garbage allowed other than
 * whitespace). max_len (0 = no cap) rejects larger input before parsing. On RMSYNC_JSON_EPARSE,
 * *err_pos (if not NULL) receives the byte offset of the error. The tree is bound to p. */
apr_status_t rmsync_json_parse(cJSON **pjson, apr_pool_t *p, const char *data, apr_size_t len,
                               apr_size_t max_len, apr_size_t *err_pos);

/* rmsync_json_parse() into big blocks of p instead of one malloc per node (no cleanup to run;
 * a read-only tree: do not modify it or move its nodes into other trees). Needs the hooks of
 * rmsync_json_use_arenas(), else it is rmsync_json_parse(). */
apr_status_t rmsync_json_parse_pooled(cJSON **pjson, apr_pool_t *p, const char *data,
                                      apr_size_t len, apr_size_t max_len, apr_size_t *err_pos);

/* Install cJSON allocation hooks that serve rmsync_json_parse_pooled() (once per process,
 * before threads that use cJSON start; everything else still goes to malloc/free). */
void rmsync_json_use_arenas(void);

/* Bind an existing tree (e.g. one built with cJSON_CreateObject) to p: deleted on pool cleanup.
 * Returns json. Do not bind a tree that is a child of another tree. */
cJSON *rmsync_json_bind(apr_pool_t *p, cJSON *json);

/* New empty object bound to p (NULL only if cJSON runs out of memory). */
cJSON *rmsync_json_object(apr_pool_t *p);

/* s as a JSON string literal with its quotes ("null" for NULL), in p: for JSON text built
 * without a cJSON tree (no malloc per node). Bytes >= 0x80 pass unchanged. */
const char *rmsync_json_quote(apr_pool_t *p, const char *s);

/* Serialise unformatted into a pool string (NULL on out of memory). */
const char *rmsync_json_print(apr_pool_t *p, const cJSON *json);

/* Case-sensitive member lookup; NULL when obj is not an object or the member is absent. */
cJSON *rmsync_json_member(const cJSON *obj, const char *name);

/* Typed getters on a member of obj. Return APR_SUCCESS, RMSYNC_JSON_ENOENT, RMSYNC_JSON_ENULL or
 * RMSYNC_JSON_ETYPE (also when obj itself is not an object). Outputs are left untouched on error.
 * Strings point into the tree (valid while it lives, i.e. while its pool lives). */
apr_status_t rmsync_json_get_string(const cJSON *obj, const char *name, const char **pval);
apr_status_t rmsync_json_get_number(const cJSON *obj, const char *name, double *pval);
/* A number that is integral and within [min, max]; else RMSYNC_JSON_ETYPE. */
apr_status_t rmsync_json_get_int(const cJSON *obj, const char *name, long long min, long long max,
                                 long long *pval);
apr_status_t rmsync_json_get_bool(const cJSON *obj, const char *name, int *pval);
apr_status_t rmsync_json_get_object(const cJSON *obj, const char *name, cJSON **pval);
apr_status_t rmsync_json_get_array(const cJSON *obj, const char *name, cJSON **pval);

/* Path helpers: "a/b/c" walks objects member by member (case-sensitive), then applies the typed
 * check to the last one. Same statuses as above; an intermediate member that is not an object
 * gives RMSYNC_JSON_ETYPE. */
cJSON *rmsync_json_path(const cJSON *obj, const char *path);
apr_status_t rmsync_json_path_string(const cJSON *obj, const char *path, const char **pval);
apr_status_t rmsync_json_path_bool(const cJSON *obj, const char *path, int *pval);
apr_status_t rmsync_json_path_object(const cJSON *obj, const char *path, cJSON **pval);

/* Like rmsync_json_get_string, but absent or null give APR_SUCCESS with *pval = NULL. */
apr_status_t rmsync_json_opt_string(const cJSON *obj, const char *name, const char **pval);

/* An object read by many names: its members indexed in one pass. cJSON finds a member by a
 * strcmp scan of all members, and an event (~25 names read out of ~30 members, 100,000 events
 * in an initial sync) spent more of the runner's time there than in parsing the page. First
 * occurrence wins, as with the lookups above; objects with more members than the table holds
 * fall back to them. Build on the stack, use while the tree lives. */
#define RMSYNC_JSON_IX_SLOTS 64
typedef struct {
    const cJSON *obj;
    int linear;                     /* not an object, or too many members: plain lookups */
    struct {
        unsigned int hash;
        cJSON *item;                /* NULL: empty slot */
    } slot[RMSYNC_JSON_IX_SLOTS];
} rmsync_json_ix_t;

void rmsync_json_ix_init(rmsync_json_ix_t *ix, const cJSON *obj);
/* Same as rmsync_json_member / rmsync_json_get_* / rmsync_json_opt_string on ix->obj. */
cJSON *rmsync_json_ix_member(const rmsync_json_ix_t *ix, const char *name);
apr_status_t rmsync_json_ix_string(const rmsync_json_ix_t *ix, const char *name, const char **pval);
apr_status_t rmsync_json_ix_opt_string(const rmsync_json_ix_t *ix, const char *name,
                                       const char **pval);
apr_status_t rmsync_json_ix_bool(const rmsync_json_ix_t *ix, const char *name, int *pval);
apr_status_t rmsync_json_ix_object(const rmsync_json_ix_t *ix, const char *name, cJSON **pval);
apr_status_t rmsync_json_ix_array(const rmsync_json_ix_t *ix, const char *name, cJSON **pval);

/* Short text for the RMSYNC_JSON_* codes (falls back to apr_strerror). */
const char *rmsync_json_strerror(apr_pool_t *p, apr_status_t rv);

#endif /* RMSYNC_JSON_H */
