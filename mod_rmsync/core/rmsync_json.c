/* mod_rmsync, used by both Apache worker processes and the sync runner: cJSON trees bound to
 * APR pools (see rmsync_json.h). */
#include <string.h>
#include <stdlib.h>
#include <math.h> /* isfinite: a macro, no libm needed */
#include <apr_strings.h>
#include "rmsync.h"
#include "rmsync_json.h"

static apr_status_t json_cleanup(void *data)
{
    cJSON_Delete((cJSON *)data);
    return APR_SUCCESS;
}

cJSON *rmsync_json_bind(apr_pool_t *p, cJSON *json)
{
    if (json) {
        apr_pool_cleanup_register(p, json, json_cleanup, apr_pool_cleanup_null);
    }
    return json;
}

cJSON *rmsync_json_object(apr_pool_t *p)
{
    return rmsync_json_bind(p, cJSON_CreateObject());
}

/* ---- parsing into a pool arena ---------------------------------------------------------------
 * cJSON mallocs every node and string of a parsed tree and frees them one by one: for Graph's
 * delta pages (a few thousand nodes each) malloc/free were about a third of the runner's CPU
 * in the initial sync (perf). Once rmsync_json_use_arenas() installed the hooks, a tree parsed
 * by rmsync_json_parse_pooled() lives in big blocks of its pool: no per-node malloc, nothing
 * to free. The hooks only divert allocations while this thread parses into an arena; every
 * other allocation and free (trees built with cJSON_Create*, trees made before the hooks) goes
 * to malloc/free as before. A pooled tree must not be modified or have nodes moved out of it
 * (the graph client's responses are read only). */
#define ARENA_BLOCK (64 * 1024)

typedef struct json_arena_t {
    apr_pool_t *p;
    apr_size_t block;               /* size of the next block (the first: from the input) */
    char *cur, *end;
    apr_array_header_t *blocks;     /* of char *: [start, end) pairs, for arena_owns */
} json_arena_t;

static __thread json_arena_t *tls_arena;
static int arenas_on;

static int arena_owns(const json_arena_t *a, const void *ptr)
{
    const char *c = ptr;
    int i;

    for (i = 0; i + 1 < a->blocks->nelts; i += 2) {
        if (c >= RMSYNC_ARRAY_IDX(a->blocks, i, char *) && c < RMSYNC_ARRAY_IDX(a->blocks, i + 1, char *)) {
            return 1;
        }
    }
    return 0;
}

static void *arena_malloc(size_t n)
{
    json_arena_t *a = tls_arena;
    void *r;

    if (!a) {
        return malloc(n);
    }
    n = (n + 15) & ~(size_t)15;
    if ((size_t)(a->end - a->cur) < n) {
        size_t bs = n > a->block ? n : a->block;
        char *b = apr_palloc(a->p, bs);
        if (!b) {
            return NULL;
        }
        APR_ARRAY_PUSH(a->blocks, char *) = b;
        APR_ARRAY_PUSH(a->blocks, char *) = b + bs;
        a->cur = b;
        a->end = b + bs;
        a->block = ARENA_BLOCK;
    }
    r = a->cur;
    a->cur += n;
    return r;
}

/* During a pooled parse cJSON frees only the partial tree of a failed parse: arena memory. */
static void arena_free(void *ptr)
{
    json_arena_t *a = tls_arena;

    if (a && arena_owns(a, ptr)) {
        return;
    }
    free(ptr);
}

void rmsync_json_use_arenas(void)
{
    cJSON_Hooks h;

    h.malloc_fn = arena_malloc;
    h.free_fn = arena_free;
    cJSON_InitHooks(&h);
    arenas_on = 1;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static apr_status_t parse(cJSON **pjson, apr_pool_t *p, const char *data, apr_size_t len,
                          apr_size_t max_len, apr_size_t *err_pos, json_arena_t *arena)
{
    const char *end = NULL;
    cJSON *json;

    *pjson = NULL;
    if (err_pos) {
        *err_pos = 0;
    }
    if (max_len && len > max_len) {
        return RMSYNC_JSON_ETOOLARGE;
    }
    if (!data || len == 0) {
        return RMSYNC_JSON_EPARSE;
    }
    /* The Opts variant reports the error position through return_parse_end; cJSON_GetErrorPtr
     * reads a process-global and is not thread-safe. */
    tls_arena = arena;
    json = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    tls_arena = NULL;
    if (!json) {
        if (err_pos && end && end >= data) {
            *err_pos = (apr_size_t)(end - data);
        }
        return RMSYNC_JSON_EPARSE;
    }
    /* Only whitespace (or a stray NUL terminator) may follow the value. */
    if (end) {
        const char *lim = data + len;
        const char *q = end;
        while (q < lim && (is_ws(*q) || *q == '\0')) {
            q++;
        }
        if (q < lim) {
            if (!arena) {
                cJSON_Delete(json);         /* an arena's tree goes with its pool */
            }
            if (err_pos) {
                *err_pos = (apr_size_t)(q - data);
            }
            return RMSYNC_JSON_EPARSE;
        }
    }
    *pjson = arena ? json : rmsync_json_bind(p, json);
    return APR_SUCCESS;
}

apr_status_t rmsync_json_parse(cJSON **pjson, apr_pool_t *p, const char *data, apr_size_t len,
                               apr_size_t max_len, apr_size_t *err_pos)
{
    return parse(pjson, p, data, len, max_len, err_pos, NULL);
}

apr_status_t rmsync_json_parse_pooled(cJSON **pjson, apr_pool_t *p, const char *data,
                                      apr_size_t len, apr_size_t max_len, apr_size_t *err_pos)
{
    json_arena_t *a;

    if (!arenas_on) {
        return parse(pjson, p, data, len, max_len, err_pos, NULL);
    }
    a = apr_pcalloc(p, sizeof(*a));
    a->p = p;
    /* a parsed tree takes a few times its text: a small POST body needs no 64 KiB block */
    a->block = len < ARENA_BLOCK / 8 ? (len * 8 < 4096 ? 4096 : len * 8) : ARENA_BLOCK;
    a->blocks = apr_array_make(p, 16, sizeof(char *));
    return parse(pjson, p, data, len, max_len, err_pos, a);
}

const char *rmsync_json_quote(apr_pool_t *p, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *c;
    apr_size_t n = 2;
    char *out, *o;

    if (!s) {
        return "null";
    }
    for (c = (const unsigned char *)s; *c; c++) {
        n += (*c == '"' || *c == '\\') ? 2 : *c < 0x20 ? 6 : 1;
    }
    o = out = apr_palloc(p, n + 1);
    *o++ = '"';
    for (c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            *o++ = '\\';
            *o++ = (char)*c;
        }
        else if (*c < 0x20) {
            *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[*c >> 4];
            *o++ = hex[*c & 15];
        }
        else {
            *o++ = (char)*c;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

const char *rmsync_json_print(apr_pool_t *p, const cJSON *json)
{
    char *s = cJSON_PrintUnformatted(json);
    char *r;

    if (!s) {
        return NULL;
    }
    r = apr_pstrdup(p, s);
    cJSON_free(s);
    return r;
}

cJSON *rmsync_json_member(const cJSON *obj, const char *name)
{
    if (!obj || !cJSON_IsObject(obj) || !name) {
        return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(obj, name);
}

/* Common lookup: the member, or a status saying why there is none. */
static apr_status_t lookup(const cJSON *obj, const char *name, cJSON **pitem)
{
    cJSON *item;

    if (!obj || !cJSON_IsObject(obj)) {
        return RMSYNC_JSON_ETYPE;
    }
    item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!item) {
        return RMSYNC_JSON_ENOENT;
    }
    if (cJSON_IsNull(item)) {
        return RMSYNC_JSON_ENULL;
    }
    *pitem = item;
    return APR_SUCCESS;
}

/* Walk "a/b/c": returns the status of the walk and the final (non-null) item. */
static apr_status_t walk(const cJSON *obj, const char *path, cJSON **pitem)
{
    const char *seg = path;
    const cJSON *cur = obj;

    if (!path || !*path) {
        return RMSYNC_JSON_ENOENT;
    }
    for (;;) {
        const char *slash = strchr(seg, '/');
        apr_size_t n = slash ? (apr_size_t)(slash - seg) : strlen(seg);
        char name[256];
        cJSON *item = NULL;
        apr_status_t rv;

        if (n == 0 || n >= sizeof(name)) {
            return RMSYNC_JSON_ENOENT;
        }
        memcpy(name, seg, n);
        name[n] = '\0';
        rv = lookup(cur, name, &item);
        if (rv) {
            return rv;
        }
        if (!slash) {
            *pitem = item;
            return APR_SUCCESS;
        }
        cur = item;
        seg = slash + 1;
    }
}

typedef enum { J_STRING, J_NUMBER, J_BOOL, J_OBJECT, J_ARRAY } jtype_e;

/* Check item's type and store its value in *out (nothing stored on an error). */
static apr_status_t typed(cJSON *item, jtype_e type, void *out)
{
    switch (type) {
    case J_STRING:
        if (!cJSON_IsString(item) || !item->valuestring) {
            return RMSYNC_JSON_ETYPE;
        }
        *(const char **)out = item->valuestring;
        break;
    case J_NUMBER:
        if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble)) {
            return RMSYNC_JSON_ETYPE;
        }
        *(double *)out = item->valuedouble;
        break;
    case J_BOOL:
        if (!cJSON_IsBool(item)) {
            return RMSYNC_JSON_ETYPE;
        }
        *(int *)out = cJSON_IsTrue(item) ? 1 : 0;
        break;
    case J_OBJECT:
    case J_ARRAY:
        if (type == J_OBJECT ? !cJSON_IsObject(item) : !cJSON_IsArray(item)) {
            return RMSYNC_JSON_ETYPE;
        }
        *(cJSON **)out = item;
        break;
    }
    return APR_SUCCESS;
}

/* The one accessor behind get_* (key: a member name) and path_* (key: "a/b/c"): find the item,
 * check its type, store its value in *out (nothing stored on an error). */
static apr_status_t fetch(const cJSON *obj, const char *key, int is_path, jtype_e type, void *out)
{
    cJSON *item = NULL;
    apr_status_t rv = is_path ? walk(obj, key, &item) : lookup(obj, key, &item);

    return rv ? rv : typed(item, type, out);
}

apr_status_t rmsync_json_get_string(const cJSON *obj, const char *name, const char **pval)
{
    return fetch(obj, name, 0, J_STRING, pval);
}

apr_status_t rmsync_json_opt_string(const cJSON *obj, const char *name, const char **pval)
{
    apr_status_t rv = rmsync_json_get_string(obj, name, pval);
    if (rv == RMSYNC_JSON_ENOENT || rv == RMSYNC_JSON_ENULL) {
        *pval = NULL;
        return APR_SUCCESS;
    }
    return rv;
}

apr_status_t rmsync_json_get_number(const cJSON *obj, const char *name, double *pval)
{
    return fetch(obj, name, 0, J_NUMBER, pval);
}

apr_status_t rmsync_json_get_int(const cJSON *obj, const char *name, long long min, long long max,
                                 long long *pval)
{
    double d = 0;
    apr_status_t rv = rmsync_json_get_number(obj, name, &d);
    if (rv) {
        return rv;
    }
    /* Range first, so the cast below is defined; then integral. */
    if (d < (double)min || d > (double)max || (double)(long long)d != d) {
        return RMSYNC_JSON_ETYPE;
    }
    *pval = (long long)d;
    return APR_SUCCESS;
}

apr_status_t rmsync_json_get_bool(const cJSON *obj, const char *name, int *pval)
{
    return fetch(obj, name, 0, J_BOOL, pval);
}

apr_status_t rmsync_json_get_object(const cJSON *obj, const char *name, cJSON **pval)
{
    return fetch(obj, name, 0, J_OBJECT, pval);
}

apr_status_t rmsync_json_get_array(const cJSON *obj, const char *name, cJSON **pval)
{
    return fetch(obj, name, 0, J_ARRAY, pval);
}

/* ---- member index ---------------------------------------------------------------------------- */

static unsigned int ix_hash(const char *s)
{
    unsigned int h = 2166136261u;               /* FNV-1a */
    while (*s) {
        h = (h ^ (unsigned char)*s++) * 16777619u;
    }
    return h;
}

/* The slot holding name (hash h), or the empty slot where it would go (the table is never
 * full: rmsync_json_ix_init keeps it at most 3/4 used). */
static unsigned int ix_probe(const rmsync_json_ix_t *ix, unsigned int h, const char *name)
{
    unsigned int k = h % RMSYNC_JSON_IX_SLOTS;

    while (ix->slot[k].item
           && !(ix->slot[k].hash == h && !strcmp(ix->slot[k].item->string, name))) {
        k = (k + 1) % RMSYNC_JSON_IX_SLOTS;
    }
    return k;
}

void rmsync_json_ix_init(rmsync_json_ix_t *ix, const cJSON *obj)
{
    const cJSON *it;
    int n = 0;

    memset(ix, 0, sizeof(*ix));
    ix->obj = obj;
    if (!obj || !cJSON_IsObject(obj)) {
        ix->linear = 1;
        return;
    }
    for (it = obj->child; it; it = it->next) {
        unsigned int h, k;

        /* at most 3/4 full, so that probes stay short and always end at an empty slot */
        if (!it->string || ++n > RMSYNC_JSON_IX_SLOTS * 3 / 4) {
            memset(ix->slot, 0, sizeof(ix->slot));
            ix->linear = 1;
            return;
        }
        h = ix_hash(it->string);
        k = ix_probe(ix, h, it->string);
        if (!ix->slot[k].item) {                /* else a duplicate name: the first stays */
            ix->slot[k].hash = h;
            ix->slot[k].item = (cJSON *)it;
        }
    }
}

cJSON *rmsync_json_ix_member(const rmsync_json_ix_t *ix, const char *name)
{
    unsigned int h;

    if (ix->linear) {
        return rmsync_json_member(ix->obj, name);
    }
    if (!name) {
        return NULL;
    }
    h = ix_hash(name);
    return ix->slot[ix_probe(ix, h, name)].item;
}

static apr_status_t ix_fetch(const rmsync_json_ix_t *ix, const char *name, jtype_e type, void *out)
{
    cJSON *item;

    if (ix->linear) {
        return fetch(ix->obj, name, 0, type, out);
    }
    if (!(item = rmsync_json_ix_member(ix, name))) {
        return RMSYNC_JSON_ENOENT;
    }
    if (cJSON_IsNull(item)) {
        return RMSYNC_JSON_ENULL;
    }
    return typed(item, type, out);
}

apr_status_t rmsync_json_ix_string(const rmsync_json_ix_t *ix, const char *name, const char **pval)
{
    return ix_fetch(ix, name, J_STRING, pval);
}

apr_status_t rmsync_json_ix_opt_string(const rmsync_json_ix_t *ix, const char *name,
                                       const char **pval)
{
    apr_status_t rv = ix_fetch(ix, name, J_STRING, pval);
    if (rv == RMSYNC_JSON_ENOENT || rv == RMSYNC_JSON_ENULL) {
        *pval = NULL;
        return APR_SUCCESS;
    }
    return rv;
}

apr_status_t rmsync_json_ix_bool(const rmsync_json_ix_t *ix, const char *name, int *pval)
{
    return ix_fetch(ix, name, J_BOOL, pval);
}

apr_status_t rmsync_json_ix_object(const rmsync_json_ix_t *ix, const char *name, cJSON **pval)
{
    return ix_fetch(ix, name, J_OBJECT, pval);
}

apr_status_t rmsync_json_ix_array(const rmsync_json_ix_t *ix, const char *name, cJSON **pval)
{
    return ix_fetch(ix, name, J_ARRAY, pval);
}

cJSON *rmsync_json_path(const cJSON *obj, const char *path)
{
    cJSON *item = NULL;
    return walk(obj, path, &item) == APR_SUCCESS ? item : NULL;
}

apr_status_t rmsync_json_path_string(const cJSON *obj, const char *path, const char **pval)
{
    return fetch(obj, path, 1, J_STRING, pval);
}

apr_status_t rmsync_json_path_bool(const cJSON *obj, const char *path, int *pval)
{
    return fetch(obj, path, 1, J_BOOL, pval);
}

apr_status_t rmsync_json_path_object(const cJSON *obj, const char *path, cJSON **pval)
{
    return fetch(obj, path, 1, J_OBJECT, pval);
}

const char *rmsync_json_strerror(apr_pool_t *p, apr_status_t rv)
{
    char buf[256];

    switch (rv) {
    case RMSYNC_JSON_EPARSE:    return "malformed JSON";
    case RMSYNC_JSON_ETOOLARGE: return "JSON document too large";
    case RMSYNC_JSON_ENOENT:    return "JSON member missing";
    case RMSYNC_JSON_ETYPE:     return "JSON member has the wrong type";
    case RMSYNC_JSON_ENULL:     return "JSON member is null";
    default:
        return apr_pstrdup(p, apr_strerror(rv, buf, sizeof(buf)));
    }
}
