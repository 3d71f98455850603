/* mod_rmsync: the Microsoft Graph client (the contract is in rmsync_graph.h).
 *
 * Runs in the sync runner process (its worker threads: delta passes, transfers, subscriptions,
 * categories) and in the drivers tests/tools/graphcheck and bench/delta_fetch; never in the
 * Apache parent or the children that serve requests. It turns one Graph operation into HTTPS
 * requests: a token from the authority, a per-mailbox concurrency slot, retries and back-off,
 * the mapping of HTTP and Graph errors to statuses, one log line per failure.
 *
 * Every wrapper (rmsync_graph_get_event, ...) describes its request once in a graph_call_t and
 * hands graph_call() a callback that maps the 2xx JSON to its output; graph_call() -> do_call()
 * is the one path to Graph, fetch_token() the one to the authority.
 */
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_atomic.h>
#include <apr_hash.h>
#include <apr_thread_mutex.h>
#include <apr_thread_cond.h>
#include <apr_date.h>
#include <apr_general.h>
#include "rmsync_log.h"
#include "rmsync_json.h"
#include "rmsync_http.h"
#include "rmsync_event.h"
#include "rmsync_graph.h"
#include "rmsync_jwt.h"

#define GRAPH_SCOPE "https://graph.microsoft.com/.default"
#define PREFER_VAL  "IdType=\"ImmutableId\", outlook.timezone=\"UTC\""
#define PREFER_HDR  "Prefer: " PREFER_VAL
#define MAX_BACKOFF_MS 30000

/* apr_array_make() aligns elts; the cast through void * tells clang's -Wcast-align so. */
#define ARRAY_IDX(a, i, type) (((type *)(void *)(a)->elts)[i])

typedef struct slot_t {
    int busy;
    apr_thread_cond_t *cond;
} slot_t;

struct rmsync_graph_t {
    apr_pool_t *pool;
    rmsync_graph_opts_t o;
    const char *token_url;
    rmsync_jwt_key_t *jwt_key;      /* certificate credentials, else NULL (client secret) */
    const char *graph_origin;       /* scheme://host[:port], lowercase */
    /* token cache */
    apr_thread_mutex_t *token_mutex;
    char *token;                    /* malloc'd, never logged */
    apr_time_t token_refresh_at;
    apr_time_t token_expires_at;
    apr_uint32_t token_gen;
    apr_thread_cond_t *token_cond;  /* signalled when a refresh ends */
    int token_refreshing;           /* one thread is asking the authority */
    apr_time_t token_fail_until;    /* after a refusal: fail fast until then */
    apr_status_t token_fail_rv;
    /* per-mailbox slots */
    apr_thread_mutex_t *slot_mutex;
    apr_pool_t *slot_pool;          /* only touched under slot_mutex */
    apr_hash_t *slots;
    rmsync_graph_stats_t st;
};

/* ---- options ------------------------------------------------------------------------------- */

/* The options of the configured directives; their defaults are the settings' (one place). */
void rmsync_graph_opts_defaults(rmsync_graph_opts_t *o)
{
    rmsync_settings_t s;

    rmsync_settings_defaults(&s);
    rmsync_graph_opts_from_settings(o, &s);
}

void rmsync_graph_opts_from_settings(rmsync_graph_opts_t *o, const rmsync_settings_t *s)
{
    *o = (rmsync_graph_opts_t){
        .authority_url = s->authority_url, .graph_url = s->graph_url, .ca_file = s->ca_file,
        .tenant = s->tenant, .client_id = s->client_id, .client_secret = s->client_secret,
        .client_cert_pem = s->client_cert_pem, .client_key_pem = s->client_key_pem,
        .connect_timeout_s = s->graph_connect_timeout_s,
        .total_timeout_s = s->graph_total_timeout_s,
        .per_mailbox = s->graph_per_mailbox, .max_response = s->graph_max_response,
        /* no directive */
        .stall_timeout_s = 30, .max_attempts = 6, .max_wait_s = 120, .backoff_base_ms = 500,
    };
}

static const char *strip_slash(apr_pool_t *p, const char *u)
{
    apr_size_t n = strlen(u);
    while (n && u[n - 1] == '/') {
        n--;
    }
    return apr_pstrmemdup(p, u, n);
}

static int is_https(const char *u)
{
    return u && !strncasecmp(u, "https://", 8) && u[8];
}

/* "https://host:port" of an https URL, lowercased. */
static const char *origin_of(apr_pool_t *p, const char *u)
{
    const char *h = u + 8, *e = h;
    char *r, *q;
    while (*e && *e != '/' && *e != '?' && *e != '#') {
        e++;
    }
    r = apr_pstrmemdup(p, u, (apr_size_t)(e - u));
    for (q = r; *q; q++) {
        if (*q >= 'A' && *q <= 'Z') *q = (char)(*q - 'A' + 'a');
    }
    return r;
}

static void drop_token(rmsync_graph_t *g);

static apr_status_t token_cleanup(void *data)
{
    drop_token((rmsync_graph_t *)data);
    return APR_SUCCESS;
}

apr_status_t rmsync_graph_create(rmsync_graph_t **pg, apr_pool_t *p, const rmsync_graph_opts_t *o)
{
    rmsync_graph_t *g;
    apr_status_t rv;
    int has_secret, has_cert;

    *pg = NULL;
    if (!is_https(o->authority_url) || !is_https(o->graph_url)) {
        rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00340)
                   "graph client: authority and Graph URLs must be https:// URLs");
        return RMSYNC_GRAPH_EINVAL;
    }
    has_secret = o->client_secret && *o->client_secret;
    has_cert = o->client_cert_pem && *o->client_cert_pem && o->client_key_pem && *o->client_key_pem;
    if (!o->tenant || !*o->tenant || !o->client_id || !*o->client_id || has_secret == has_cert) {
        rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00341)
                   "graph client: tenant, client id and exactly one credential (client secret "
                   "or certificate) are required");
        return RMSYNC_GRAPH_EINVAL;
    }
    g = apr_pcalloc(p, sizeof(*g));
    g->pool = p;
    g->o = *o;
    g->o.authority_url = strip_slash(p, o->authority_url);
    g->o.graph_url = strip_slash(p, o->graph_url);
    g->o.tenant = apr_pstrdup(p, o->tenant);
    g->o.client_id = apr_pstrdup(p, o->client_id);
    g->o.client_secret = has_secret ? apr_pstrdup(p, o->client_secret) : NULL;
    g->o.client_cert_pem = g->o.client_key_pem = NULL;    /* only the parsed key is kept */
    if (has_cert) {
        const char *err = rmsync_jwt_key_load(p, o->client_cert_pem, o->client_key_pem,
                                              &g->jwt_key);
        if (err) {
            rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00342)
                       "graph client: RMSyncGraphClientCertificate: %s", err);
            return RMSYNC_GRAPH_EINVAL;
        }
    }
    g->o.ca_file = o->ca_file && *o->ca_file ? apr_pstrdup(p, o->ca_file) : NULL;
    if (g->o.per_mailbox <= 0) g->o.per_mailbox = 4;
    if (g->o.per_mailbox > 4) g->o.per_mailbox = 4;   /* Graph's Outlook limit */
    if (g->o.max_attempts <= 0) g->o.max_attempts = 6;
    if (g->o.max_wait_s < 0) g->o.max_wait_s = 0;
    if (g->o.backoff_base_ms <= 0) g->o.backoff_base_ms = 500;
    if (!g->o.max_response) g->o.max_response = 16 * 1024 * 1024;
    g->token_url = apr_pstrcat(p, g->o.authority_url, "/", rmsync_http_escape(p, g->o.tenant),
                               "/oauth2/v2.0/token", NULL);
    g->graph_origin = origin_of(p, g->o.graph_url);
    if ((rv = apr_thread_mutex_create(&g->token_mutex, APR_THREAD_MUTEX_DEFAULT, p))
        || (rv = apr_thread_cond_create(&g->token_cond, p))
        || (rv = apr_thread_mutex_create(&g->slot_mutex, APR_THREAD_MUTEX_DEFAULT, p))
        || (rv = apr_pool_create(&g->slot_pool, p))) {
        return rv;
    }
    g->slots = apr_hash_make(g->slot_pool);
    apr_pool_cleanup_register(p, g, token_cleanup, apr_pool_cleanup_null);
    *pg = g;
    return APR_SUCCESS;
}

void rmsync_graph_get_stats(rmsync_graph_t *g, rmsync_graph_stats_t *out)
{
    apr_uint32_t *src = (apr_uint32_t *)&g->st, *dst = (apr_uint32_t *)out;
    apr_size_t i;
    for (i = 0; i < sizeof(*out) / sizeof(apr_uint32_t); i++) {
        dst[i] = apr_atomic_read32(&src[i]);
    }
}

const char *rmsync_graph_strerror(apr_pool_t *p, apr_status_t rv)
{
    switch (rv) {
    case APR_SUCCESS:              return "ok";
    case RMSYNC_GRAPH_NOTFOUND:    return "not found";
    case RMSYNC_GRAPH_RESYNC:      return "delta state expired: resync required";
    case RMSYNC_GRAPH_AUTH:        return "authentication failed";
    case RMSYNC_GRAPH_FORBIDDEN:   return "access denied";
    case RMSYNC_GRAPH_CONFLICT:    return "conflict (changed meanwhile)";
    case RMSYNC_GRAPH_THROTTLED:   return "throttled or unavailable, retries exhausted";
    case RMSYNC_GRAPH_SERVER:      return "server error, retries exhausted";
    case RMSYNC_GRAPH_BADREQUEST:  return "request rejected";
    case RMSYNC_GRAPH_BADRESPONSE: return "malformed or unexpected response";
    case RMSYNC_GRAPH_EINVAL:      return "invalid arguments";
    default:
        if (rv >= RMSYNC_HTTP_ECONNECT && rv <= RMSYNC_HTTP_EINIT) {
            return rmsync_http_strerror(rv);
        }
        return rmsync_json_strerror(p, rv);
    }
}

int rmsync_graph_is_transient(apr_status_t rv)
{
    return rv == RMSYNC_GRAPH_THROTTLED || rv == RMSYNC_GRAPH_SERVER
        || rv == RMSYNC_HTTP_ECONNECT || rv == RMSYNC_HTTP_ETIMEOUT || rv == RMSYNC_HTTP_ENET;
}

/* ---- small helpers ------------------------------------------------------------------------- */

#define STAT_INC(g, f) apr_atomic_inc32(&(g)->st.f)

static int stopping(rmsync_graph_t *g)
{
    return g->o.stop && apr_atomic_read32(g->o.stop);
}

/* Sleep up to d, in short steps so a stop request is seen. 0 = slept fully. */
static apr_status_t nap(rmsync_graph_t *g, apr_interval_time_t d)
{
    apr_time_t until = apr_time_now() + d;
    for (;;) {
        apr_time_t now = apr_time_now();
        if (stopping(g)) {
            return RMSYNC_HTTP_EABORTED;
        }
        if (now >= until) {
            return APR_SUCCESS;
        }
        apr_sleep(until - now > apr_time_from_msec(50) ? apr_time_from_msec(50) : until - now);
    }
}

static unsigned rand_u32(void)
{
    unsigned v = 0;
    if (apr_generate_random_bytes((unsigned char *)&v, sizeof(v)) != APR_SUCCESS) {
        v = (unsigned)apr_time_now();
    }
    return v;
}

/* Exponential back-off with +-50% jitter: attempt 1 -> base. */
static apr_interval_time_t backoff(rmsync_graph_t *g, int attempt)
{
    long long ms = g->o.backoff_base_ms;
    int i;
    for (i = 1; i < attempt && ms < MAX_BACKOFF_MS; i++) {
        ms *= 2;
    }
    if (ms > MAX_BACKOFF_MS) ms = MAX_BACKOFF_MS;
    ms = ms / 2 + (long long)(rand_u32() % (unsigned)(ms + 1));
    return apr_time_from_msec(ms);
}

/* Retry-After: delta-seconds (fractions allowed) or an HTTP-date. -1 when absent/invalid. */
static apr_interval_time_t parse_retry_after(const char *v)
{
    char *end = NULL;
    double d;
    apr_time_t t;

    if (!v || !*v) {
        return -1;
    }
    d = strtod(v, &end);
    if (end != v) {
        while (*end == ' ') end++;
        if (*end == '\0') {
            if (d < 0) d = 0;
            if (d > 86400) d = 86400;
            return (apr_interval_time_t)(d * APR_USEC_PER_SEC);
        }
    }
    t = apr_date_parse_http(v);
    if (t == APR_DATE_BAD) {
        return -1;
    }
    t -= apr_time_now();
    return t > 0 ? t : 0;
}

/* The path part of a URL for log lines (no query: keeps delta tokens and filters out). */
static const char *log_target(apr_pool_t *p, const char *url)
{
    const char *q = strchr(url, '?');
    return q ? apr_pstrmemdup(p, url, (apr_size_t)(q - url)) : url;
}

/* ---- per-mailbox slots --------------------------------------------------------------------- */

static apr_status_t slot_acquire(rmsync_graph_t *g, const char *mailbox, slot_t **pslot)
{
    char key[320];
    apr_size_t i, n;
    slot_t *s;
    apr_status_t rv = APR_SUCCESS;

    *pslot = NULL;
    if (!mailbox || !*mailbox) {
        return APR_SUCCESS;
    }
    n = strlen(mailbox);
    if (n >= sizeof(key)) n = sizeof(key) - 1;
    for (i = 0; i < n; i++) {
        char c = mailbox[i];
        key[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    key[n] = '\0';
    apr_thread_mutex_lock(g->slot_mutex);
    s = apr_hash_get(g->slots, key, (apr_ssize_t)n);
    if (!s) {
        s = apr_pcalloc(g->slot_pool, sizeof(*s));
        if ((rv = apr_thread_cond_create(&s->cond, g->slot_pool)) != APR_SUCCESS) {
            apr_thread_mutex_unlock(g->slot_mutex);
            return rv;
        }
        apr_hash_set(g->slots, apr_pstrmemdup(g->slot_pool, key, n), (apr_ssize_t)n, s);
    }
    while (s->busy >= g->o.per_mailbox) {
        if (stopping(g)) {
            apr_thread_mutex_unlock(g->slot_mutex);
            return RMSYNC_HTTP_EABORTED;
        }
        /* Timed, so a stop request is noticed even if nobody signals. */
        apr_thread_cond_timedwait(s->cond, g->slot_mutex, apr_time_from_msec(200));
    }
    s->busy++;
    apr_thread_mutex_unlock(g->slot_mutex);
    *pslot = s;
    return APR_SUCCESS;
}

static void slot_release(rmsync_graph_t *g, slot_t *s)
{
    if (!s) {
        return;
    }
    apr_thread_mutex_lock(g->slot_mutex);
    s->busy--;
    apr_thread_cond_signal(s->cond);
    apr_thread_mutex_unlock(g->slot_mutex);
}

/* ---- responses ----------------------------------------------------------------------------- */

static void reset_result(rmsync_graph_result_t *res)
{
    memset(res, 0, sizeof(*res));
}

/* Fill error_code/message (and request-id if the header was missing) from a Graph error
 * envelope {"error":{"code","message","innerError":{...}}} or an OAuth error {"error": "..."}.
 * Returns the innermost code seen (for resync detection), or NULL. */
static const char *read_error(const cJSON *json, rmsync_graph_result_t *res)
{
    cJSON *err = rmsync_json_member(json, "error"), *inner;
    const char *s = NULL, *innermost = NULL;
    int depth = 0;

    if (!err) {
        return NULL;
    }
    if (cJSON_IsString(err)) {          /* OAuth: {"error": "invalid_client", ...} */
        res->error_code = err->valuestring;
        if (rmsync_json_get_string(json, "error_description", &s) == APR_SUCCESS) {
            res->error_message = s;
        }
        return res->error_code;
    }
    if (!cJSON_IsObject(err)) {
        return NULL;
    }
    if (rmsync_json_get_string(err, "code", &s) == APR_SUCCESS) {
        res->error_code = innermost = s;
    }
    if (rmsync_json_get_string(err, "message", &s) == APR_SUCCESS) {
        res->error_message = s;
    }
    inner = err;
    while (depth++ < 8) {
        cJSON *next = rmsync_json_member(inner, "innerError");
        if (!next) next = rmsync_json_member(inner, "innererror");
        if (!next || !cJSON_IsObject(next)) break;
        if (rmsync_json_get_string(next, "code", &s) == APR_SUCCESS) innermost = s;
        if (!res->request_id && rmsync_json_get_string(next, "request-id", &s) == APR_SUCCESS) {
            res->request_id = s;
        }
        inner = next;
    }
    return innermost;
}

static int code_is_resync(const char *c)
{
    return c && (!strcasecmp(c, "SyncStateNotFound") || !strcasecmp(c, "InvalidDeltaToken")
                 || !strcasecmp(c, "resyncRequired") || !strcasecmp(c, "SyncStateInvalid"));
}

/* Copy into the call pool what lives in the attempt pool. */
static const char *keep(apr_pool_t *p, const char *s)
{
    return s ? apr_pstrdup(p, s) : NULL;
}

/* The transfer settings every request shares, to Graph or to the authority. */
static void req_init(rmsync_graph_t *g, rmsync_http_req_t *req, const char *method,
                     const char *url, apr_array_header_t *hdrs, const char *body)
{
    memset(req, 0, sizeof(*req));
    req->method = method;
    req->url = url;
    req->headers = hdrs;
    req->body = body;
    req->body_len = body ? strlen(body) : 0;
    req->ca_file = g->o.ca_file;
    req->connect_timeout_s = g->o.connect_timeout_s;
    req->total_timeout_s = g->o.total_timeout_s;
    req->stall_timeout_s = g->o.stall_timeout_s;
    req->max_response = g->o.max_response;
    req->stop = g->o.stop;
}

/* ---- token --------------------------------------------------------------------------------- */

/* The AADSTS number of an OAuth error: error_codes[0], else "AADSTSnnnn" in the description. */
static const char *aadsts_code(apr_pool_t *p, const cJSON *json, const char *desc)
{
    cJSON *codes = NULL, *first;
    if (rmsync_json_get_array(json, "error_codes", &codes) == APR_SUCCESS
        && (first = cJSON_GetArrayItem(codes, 0)) && cJSON_IsNumber(first)
        && first->valuedouble >= 0 && first->valuedouble < 1e12) {
        return apr_psprintf(p, "AADSTS%" APR_INT64_T_FMT, (apr_int64_t)first->valuedouble);
    }
    if (desc && !strncmp(desc, "AADSTS", 6)) {
        apr_size_t n = 6;
        while (desc[n] >= '0' && desc[n] <= '9' && n < 20) n++;
        if (n > 6) return apr_pstrmemdup(p, desc, n);
    }
    return "no AADSTS code";
}

/* Ask the authority for a token. Called WITHOUT token_mutex (only the one refreshing thread
 * gets here); on success *ptok is malloc'd (caller installs or frees it). */
static apr_status_t fetch_token(rmsync_graph_t *g, apr_pool_t *p, rmsync_graph_result_t *res,
                                char **ptok, long long *plife)
{
    rmsync_http_req_t req;
    rmsync_http_resp_t resp;
    apr_array_header_t *hdrs = apr_array_make(p, 2, sizeof(const char *));
    const char *form, *tok = NULL, *ecode = NULL, *edesc = NULL, *aad;
    cJSON *json = NULL;
    long long expires_in = 0;
    apr_status_t rv = APR_SUCCESS;
    apr_size_t epos = 0;
    int attempt;

    form = apr_pstrcat(p, "grant_type=client_credentials&client_id=",
                       rmsync_http_escape(p, g->o.client_id),
                       "&scope=", rmsync_http_escape(p, GRAPH_SCOPE), NULL);
    if (g->jwt_key) {
        /* A fresh assertion per request: its jti is single-use and it expires in 10 min. */
        const char *assertion = NULL;
        rv = rmsync_jwt_client_assertion(p, g->jwt_key, RMSYNC_JWT_PS256, g->o.client_id,
                                         g->token_url, apr_time_now(), &assertion);
        if (rv != APR_SUCCESS) {
            STAT_INC(g, token_failures);
            rmsync_log(RMSYNC_LOG_ERR, rv, RMSYNC_LOGNO(00305)
                       "graph token request: cannot sign the client assertion with the key of "
                       "RMSyncGraphClientCertificate");
            return RMSYNC_GRAPH_AUTH;
        }
        form = apr_pstrcat(p, form, "&client_assertion_type=",
                           rmsync_http_escape(p, "urn:ietf:params:oauth:client-assertion-type:"
                                                 "jwt-bearer"),
                           "&client_assertion=", assertion, NULL);
    }
    else {
        form = apr_pstrcat(p, form, "&client_secret=",
                           rmsync_http_escape(p, g->o.client_secret), NULL);
    }
    APR_ARRAY_PUSH(hdrs, const char *) = "Content-Type: application/x-www-form-urlencoded";
    APR_ARRAY_PUSH(hdrs, const char *) = "Accept: application/json";
    req_init(g, &req, "POST", g->token_url, hdrs, form);
    req.max_response = 64 * 1024;

    for (attempt = 1; ; attempt++) {
        apr_interval_time_t wait;

        STAT_INC(g, token_requests);
        rv = rmsync_http_perform(p, &req, &resp);
        res->attempts = attempt;
        res->client_request_id = resp.sent_client_request_id;
        res->request_id = resp.request_id;
        res->http_status = resp.status;
        if (rv == APR_SUCCESS && resp.status != 429 && resp.status < 500) {
            break;
        }
        /* Transport trouble or a busy authority: a few bounded retries. */
        if (attempt >= 3 || rv == RMSYNC_HTTP_EABORTED || rv == RMSYNC_HTTP_ETLS
            || rv == RMSYNC_HTTP_EPROTO || rv == RMSYNC_HTTP_EINIT) {
            break;
        }
        wait = rv == APR_SUCCESS ? parse_retry_after(resp.retry_after) : -1;
        if (wait < 0 || wait > apr_time_from_sec(30)) {
            wait = backoff(g, attempt);
        }
        if (nap(g, wait) != APR_SUCCESS) {
            rv = RMSYNC_HTTP_EABORTED;
            break;
        }
    }
    if (rv != APR_SUCCESS) {
        STAT_INC(g, token_failures);
        rmsync_log(rv == RMSYNC_HTTP_EABORTED ? RMSYNC_LOG_DEBUG : RMSYNC_LOG_ERR, 0,
                   RMSYNC_LOGNO(00300)
                   "graph token request to %s failed: %s (%s) [client-request-id %s]",
                   g->token_url, rmsync_http_strerror(rv), resp.error ? resp.error : "",
                   resp.sent_client_request_id);
        return rv;
    }
    if (resp.body_len) {
        rmsync_json_parse(&json, p, resp.body, resp.body_len, 64 * 1024, &epos);
    }
    if (resp.status != 200) {
        STAT_INC(g, token_failures);
        if (json) {
            rmsync_json_opt_string(json, "error", &ecode);
            rmsync_json_opt_string(json, "error_description", &edesc);
        }
        res->error_code = ecode;
        res->error_message = edesc;
        aad = json ? aadsts_code(p, json, edesc) : "no AADSTS code";
        if (ecode && !strcmp(ecode, "invalid_client") && g->jwt_key) {
            rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00306)
                       "graph token request refused: certificate not accepted (invalid_client, "
                       "%s, HTTP %d) for client id %s in tenant %s: check "
                       "RMSyncGraphClientCertificate (is the certificate with SHA-1 thumbprint "
                       "%s uploaded to the app registration, and the key its own?) "
                       "[request-id %s, client-request-id %s]",
                       aad, resp.status, g->o.client_id, g->o.tenant,
                       rmsync_jwt_key_thumbprint(g->jwt_key),
                       resp.request_id ? resp.request_id : "-", resp.sent_client_request_id);
        }
        else if (ecode && !strcmp(ecode, "invalid_client")) {
            const char *what = strstr(aad, "7000222") ? "client secret expired"
                                                      : "invalid client secret";
            rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00301)
                       "graph token request refused: %s (invalid_client, %s, HTTP %d) for client "
                       "id %s in tenant %s: check RMSyncGraphClientSecretFile "
                       "[request-id %s, client-request-id %s]",
                       what, aad, resp.status, g->o.client_id, g->o.tenant,
                       resp.request_id ? resp.request_id : "-", resp.sent_client_request_id);
        }
        else {
            rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00302)
                       "graph token request refused: %s (%s, HTTP %d) for client id %s in "
                       "tenant %s [request-id %s, client-request-id %s]",
                       ecode ? ecode : "no OAuth error code", aad, resp.status, g->o.client_id,
                       g->o.tenant, resp.request_id ? resp.request_id : "-",
                       resp.sent_client_request_id);
        }
        return RMSYNC_GRAPH_AUTH;
    }
    if (!json || rmsync_json_get_string(json, "access_token", &tok) != APR_SUCCESS || !*tok) {
        STAT_INC(g, token_failures);
        rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00303)
                   "graph token response malformed (%s) [client-request-id %s]",
                   json ? "no access_token string" : "not JSON", resp.sent_client_request_id);
        return RMSYNC_GRAPH_AUTH;
    }
    if (rmsync_json_get_int(json, "expires_in", 1, 366LL * 86400, &expires_in) != APR_SUCCESS) {
        /* Old endpoints sent it as a string. */
        const char *s = NULL;
        char *end = NULL;
        if (rmsync_json_get_string(json, "expires_in", &s) == APR_SUCCESS) {
            expires_in = strtoll(s, &end, 10);
        }
        if (!s || !end || *end || expires_in <= 0 || expires_in > 366LL * 86400) {
            STAT_INC(g, token_failures);
            rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00304)
                       "graph token response has no valid expires_in [client-request-id %s]",
                       resp.sent_client_request_id);
            return RMSYNC_GRAPH_AUTH;
        }
    }
    *ptok = strdup(tok);
    if (!*ptok) {
        return APR_ENOMEM;
    }
    *plife = expires_in;
    rmsync_log(RMSYNC_LOG_DEBUG, 0, "graph token obtained, valid %" APR_INT64_T_FMT "s",
               (apr_int64_t)expires_in);
    return APR_SUCCESS;
}

static void drop_token(rmsync_graph_t *g)
{
    if (g->token) {
        memset(g->token, 0, strlen(g->token));
        free(g->token);
        g->token = NULL;
    }
}

/* How long a refused token request is remembered, so N threads do not each ask the authority
 * with a bad secret. */
#define TOKEN_FAIL_HOLD apr_time_from_sec(5)

/* A copy of a valid token (bearer header) in p and its generation. One thread refreshes, without
 * holding the mutex; the others keep using the old token while it is valid, else wait. */
static apr_status_t get_token(rmsync_graph_t *g, apr_pool_t *p, const char **phdr,
                              apr_uint32_t *pgen, rmsync_graph_result_t *res)
{
    apr_status_t rv = APR_SUCCESS;

    apr_thread_mutex_lock(g->token_mutex);
    for (;;) {
        apr_time_t now = apr_time_now();
        char *tok = NULL;
        long long life = 0;

        if (g->token && now < g->token_refresh_at) {
            break;                                  /* fresh */
        }
        if (g->token_refreshing) {
            if (g->token && now < g->token_expires_at) {
                break;                              /* someone refreshes; ours still works */
            }
            apr_thread_cond_timedwait(g->token_cond, g->token_mutex, apr_time_from_msec(200));
            if (stopping(g)) {
                apr_thread_mutex_unlock(g->token_mutex);
                return RMSYNC_HTTP_EABORTED;
            }
            continue;
        }
        if (now < g->token_fail_until && !(g->token && now < g->token_expires_at)) {
            rv = g->token_fail_rv;                  /* refused a moment ago: fail fast */
            apr_thread_mutex_unlock(g->token_mutex);
            return rv;
        }
        g->token_refreshing = 1;
        apr_thread_mutex_unlock(g->token_mutex);
        rv = fetch_token(g, p, res, &tok, &life);
        apr_thread_mutex_lock(g->token_mutex);
        g->token_refreshing = 0;
        apr_thread_cond_broadcast(g->token_cond);
        now = apr_time_now();
        if (rv == APR_SUCCESS) {
            /* Refresh 10% early, but never with less than a quarter of the lifetime (or a
             * minute) in hand: a request signed just before the refresh point must still
             * carry a valid token when a slow or loaded path delivers it. At most 5 min. */
            apr_interval_time_t lt = apr_time_from_sec(life), early = lt / 10;
            apr_interval_time_t floor_early = lt / 4;
            if (floor_early > apr_time_from_sec(60)) floor_early = apr_time_from_sec(60);
            if (early < floor_early) early = floor_early;
            if (early > apr_time_from_sec(300)) early = apr_time_from_sec(300);
            drop_token(g);
            g->token = tok;
            g->token_expires_at = now + lt;
            g->token_refresh_at = now + lt - early;
            g->token_gen++;
            g->token_fail_until = 0;
            STAT_INC(g, tokens_obtained);
            break;
        }
        if (rv != RMSYNC_HTTP_EABORTED) {
            g->token_fail_until = now + TOKEN_FAIL_HOLD;
            g->token_fail_rv = rv;
        }
        if (g->token && now < g->token_expires_at) {
            rv = APR_SUCCESS;                       /* early refresh failed: old one still valid */
            break;
        }
        apr_thread_mutex_unlock(g->token_mutex);
        return rv;
    }
    *phdr = apr_pstrcat(p, "Authorization: Bearer ", g->token, NULL);
    *pgen = g->token_gen;
    apr_thread_mutex_unlock(g->token_mutex);
    return APR_SUCCESS;
}

/* After a 401: the token we used is bad (expired or revoked), unless another thread already
 * replaced it. Nobody may use it any more, not even while the refresh runs. */
static void invalidate_token(rmsync_graph_t *g, apr_uint32_t gen)
{
    apr_thread_mutex_lock(g->token_mutex);
    if (g->token && g->token_gen == gen) {
        g->token_refresh_at = 0;
        g->token_expires_at = 0;
        g->token_fail_until = 0;
    }
    apr_thread_mutex_unlock(g->token_mutex);
}

apr_status_t rmsync_graph_token(rmsync_graph_t *g, apr_pool_t *p, int force,
                                rmsync_graph_result_t *res)
{
    rmsync_graph_result_t local;
    const char *hdr;
    apr_uint32_t gen;
    apr_status_t rv;

    if (!res) res = &local;
    reset_result(res);
    if (force) {
        apr_thread_mutex_lock(g->token_mutex);
        g->token_refresh_at = 0;
        g->token_fail_until = 0;
        apr_thread_mutex_unlock(g->token_mutex);
    }
    rv = get_token(g, p, &hdr, &gen, res);
    res->status = rv;
    return rv;
}

/* ---- the call loop ------------------------------------------------------------------------- */

/* One Graph call, described once by its wrapper; graph_call() is the only way to the network. */
typedef struct graph_call_t {
    const char *method;         /* GET, POST, PATCH, DELETE */
    const char *target;         /* path under graph_url, or an absolute URL on its origin */
    const char *mailbox;        /* per-mailbox concurrency slot, or NULL */
    const cJSON *body;          /* sent as JSON, or NULL */
    const char *if_match;       /* If-Match value, or NULL */
    const char *prefer;         /* another Prefer value, e.g. odata.maxpagesize=50, or NULL */
    const char *what;           /* names the call in "unexpected response" lines */
    int idempotent;             /* safe to resend after an ambiguous failure */
    int quiet_codes;            /* 1: 404/409/412 are logged at debug level only */
    int quiet_forbidden;        /* 1: 403 at info level (the caller warns once per mailbox) */
} graph_call_t;

/* What a 2xx hands the call's callback: json is the parsed body (NULL when empty, e.g. 204). */
typedef struct graph_reply_t {
    rmsync_graph_t *g;
    apr_pool_t *p;
    const graph_call_t *call;
    rmsync_graph_result_t *res;
    const cJSON *json;
} graph_reply_t;

/* Maps the reply to the wrapper's output (baton); APR_SUCCESS, or bad_response() when the body
 * is not what the call promises, or another status (e.g. NOTFOUND for an empty search). */
typedef apr_status_t graph_on_json_fn(const graph_reply_t *r, void *baton);

static apr_status_t map_status(int st, const char *innermost, const char *code)
{
    if (code_is_resync(innermost) || code_is_resync(code) || st == 410) return RMSYNC_GRAPH_RESYNC;
    if (st == 401) return RMSYNC_GRAPH_AUTH;
    if (st == 403) return RMSYNC_GRAPH_FORBIDDEN;
    if (st == 404) return RMSYNC_GRAPH_NOTFOUND;
    if (st == 409 || st == 412) return RMSYNC_GRAPH_CONFLICT;
    if (st == 429 || st == 503 || st == 504) return RMSYNC_GRAPH_THROTTLED;
    if (st >= 500) return RMSYNC_GRAPH_SERVER;
    if (st >= 400) return RMSYNC_GRAPH_BADREQUEST;
    return RMSYNC_GRAPH_BADRESPONSE;      /* 1xx/3xx: we do not follow redirects */
}

static void count_status(rmsync_graph_t *g, int st)
{
    if (st >= 200 && st < 300) STAT_INC(g, status_2xx);
    else if (st >= 300 && st < 400) STAT_INC(g, status_3xx);
    else if (st >= 400 && st < 500) STAT_INC(g, status_4xx);
    else if (st >= 500) STAT_INC(g, status_5xx);
    if (st == 429) STAT_INC(g, throttled);
    if (st == 503 || st == 504) STAT_INC(g, unavailable);
}

static apr_status_t do_call(rmsync_graph_t *g, apr_pool_t *p, const graph_call_t *c,
                            const char *url, const char *body, rmsync_graph_result_t *res)
{
    apr_interval_time_t budget = apr_time_from_sec(g->o.max_wait_s);
    int auth_retried = 0, attempt;
    apr_status_t rv = APR_SUCCESS;
    const char *crid = rmsync_http_uuid(p);   /* one id for all attempts of this call */
    const char *what = apr_pstrcat(p, c->method, " ", log_target(p, url), NULL);

    reset_result(res);
    res->client_request_id = crid;

    for (attempt = 1; ; attempt++) {
        apr_pool_t *ap;
        rmsync_http_req_t req;
        rmsync_http_resp_t resp;
        apr_array_header_t *hdrs;
        const char *auth = NULL, *innermost = NULL;
        apr_uint32_t gen = 0;
        apr_interval_time_t wait = -1;
        slot_t *slot = NULL;
        int st, retry = 0;

        apr_pool_create(&ap, p);
        res->attempts = attempt;
        if (attempt > 1) STAT_INC(g, retries);

        if ((rv = get_token(g, ap, &auth, &gen, res)) != APR_SUCCESS) {
            res->error_code = keep(p, res->error_code);
            res->error_message = keep(p, res->error_message);
            res->request_id = keep(p, res->request_id);
            res->client_request_id = crid;
            apr_pool_destroy(ap);
            return rv;     /* RMSYNC_GRAPH_AUTH, or the transport error (TLS, connect...) */
        }
        res->attempts = attempt;      /* a token fetch reported its own attempts */
        res->http_status = 0;
        res->error_code = res->error_message = res->request_id = NULL;
        res->preference_applied = NULL;
        res->client_request_id = crid;

        hdrs = apr_array_make(ap, 8, sizeof(const char *));
        APR_ARRAY_PUSH(hdrs, const char *) = auth;
        APR_ARRAY_PUSH(hdrs, const char *) = "Accept: application/json";
        APR_ARRAY_PUSH(hdrs, const char *) = PREFER_HDR;
        if (c->prefer) {
            APR_ARRAY_PUSH(hdrs, const char *) = apr_pstrcat(ap, "Prefer: ", c->prefer, NULL);
        }
        if (body) {
            APR_ARRAY_PUSH(hdrs, const char *) = "Content-Type: application/json";
        }
        if (c->if_match) {
            APR_ARRAY_PUSH(hdrs, const char *) = apr_pstrcat(ap, "If-Match: ", c->if_match, NULL);
        }
        req_init(g, &req, c->method, url, hdrs, body);
        req.client_request_id = crid;
        req.fresh_connect = !c->idempotent;   /* no hidden resend by libcurl either */

        if ((rv = slot_acquire(g, c->mailbox, &slot)) != APR_SUCCESS) {
            apr_pool_destroy(ap);
            return rv;
        }
        STAT_INC(g, requests);
        rv = rmsync_http_perform(ap, &req, &resp);
        slot_release(g, slot);

        if (rv != APR_SUCCESS) {
            STAT_INC(g, transport_errors);
            /* Not sent at all, or sent but the answer was lost: the latter only for calls
             * that may safely run twice. */
            retry = rv == RMSYNC_HTTP_ECONNECT
                || (c->idempotent && (rv == RMSYNC_HTTP_ETIMEOUT || rv == RMSYNC_HTTP_ENET));
            wait = backoff(g, attempt);
            if (!retry || attempt >= g->o.max_attempts || wait > budget) {
                /* Stopping is not an error worth a line in the error log. */
                rmsync_log(rv == RMSYNC_HTTP_EABORTED ? RMSYNC_LOG_DEBUG : RMSYNC_LOG_ERR, 0,
                           RMSYNC_LOGNO(00310)
                           "graph %s failed after %d attempt(s): %s (%s) [client-request-id %s]",
                           what, attempt, rmsync_http_strerror(rv), resp.error ? resp.error : "",
                           crid);
                apr_pool_destroy(ap);
                return rv;
            }
        }
        else {
            cJSON *json = NULL;
            apr_size_t epos = 0;
            apr_status_t jrv = APR_SUCCESS;

            st = resp.status;
            count_status(g, st);
            res->http_status = st;
            if (resp.body_len) {
                jrv = rmsync_json_parse_pooled(&json, p, resp.body, resp.body_len,
                                               g->o.max_response, &epos);
            }
            res->json = json;
            res->request_id = keep(p, resp.request_id);
            res->preference_applied = keep(p, resp.preference_applied);
            if (json && st >= 300) {
                innermost = read_error(json, res);   /* strings live in json, i.e. in p */
            }
            if (st >= 200 && st < 300) {
                apr_pool_destroy(ap);
                if (jrv != APR_SUCCESS) {
                    STAT_INC(g, bad_responses);
                    rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00311)
                               "graph %s: HTTP %d with a malformed JSON body (%s at byte %"
                               APR_SIZE_T_FMT ") [request-id %s, client-request-id %s]",
                               what, st, rmsync_json_strerror(p, jrv), epos,
                               res->request_id ? res->request_id : "-", crid);
                    res->json = NULL;
                    return RMSYNC_GRAPH_BADRESPONSE;
                }
                return APR_SUCCESS;
            }
            if (st == 401 && !auth_retried) {
                /* Expired or revoked token: one forced refresh, then the same request again. */
                auth_retried = 1;
                STAT_INC(g, auth_retries);
                invalidate_token(g, gen);
                apr_pool_destroy(ap);
                rmsync_log(RMSYNC_LOG_INFO, 0, "graph %s: 401, refreshing the token and retrying",
                           what);
                continue;
            }
            rv = map_status(st, innermost, res->error_code);
            if (st == 429 || st == 503 || (st == 504 && c->idempotent)) {
                retry = 1;
                wait = parse_retry_after(resp.retry_after);
                if (wait < 0) {
                    wait = backoff(g, attempt);
                }
                else {
                    /* At least what the server asked for, plus a little jitter. */
                    wait += apr_time_from_msec(rand_u32() % 100);
                }
            }
            else if (st >= 500 && st != 501 && st != 505 && c->idempotent) {
                retry = 1;
                wait = backoff(g, attempt);
            }
            if (!retry || attempt >= g->o.max_attempts || wait > budget) {
                int lvl = RMSYNC_LOG_WARNING;
                if (rv == RMSYNC_GRAPH_NOTFOUND || rv == RMSYNC_GRAPH_CONFLICT) {
                    lvl = c->quiet_codes ? RMSYNC_LOG_DEBUG : RMSYNC_LOG_INFO;
                }
                else if (rv == RMSYNC_GRAPH_FORBIDDEN && c->quiet_forbidden) {
                    lvl = RMSYNC_LOG_INFO;
                }
                else if (rv == RMSYNC_GRAPH_RESYNC) {
                    lvl = RMSYNC_LOG_INFO;
                    STAT_INC(g, resyncs);
                }
                else if (rv == RMSYNC_GRAPH_AUTH || rv == RMSYNC_GRAPH_BADRESPONSE) {
                    lvl = RMSYNC_LOG_ERR;
                }
                if (rv == RMSYNC_GRAPH_BADRESPONSE) {
                    STAT_INC(g, bad_responses);
                }
                rmsync_log(lvl, 0, RMSYNC_LOGNO(00312)
                           "graph %s: HTTP %d %s%s%s after %d attempt(s) -> %s "
                           "[request-id %s, client-request-id %s]",
                           what, st, res->error_code ? res->error_code : "(no error code)",
                           retry ? ", retry budget exhausted" : "",
                           jrv != APR_SUCCESS ? ", body not JSON" : "", attempt,
                           rmsync_graph_strerror(p, rv),
                           res->request_id ? res->request_id : "-", crid);
                apr_pool_destroy(ap);
                return rv;
            }
        }
        apr_pool_destroy(ap);
        rmsync_log(RMSYNC_LOG_INFO, 0,
                   "graph %s: attempt %d got %d/%s, retrying in %" APR_TIME_T_FMT " ms "
                   "[client-request-id %s]", what, attempt, res->http_status,
                   rv != APR_SUCCESS ? rmsync_graph_strerror(p, rv) : "-",
                   (apr_time_t)apr_time_as_msec(wait), crid);
        budget -= wait;
        res->waited += wait;
        apr_atomic_add32(&g->st.wait_ms, (apr_uint32_t)apr_time_as_msec(wait));
        if (nap(g, wait) != APR_SUCCESS) {
            return RMSYNC_HTTP_EABORTED;
        }
    }
}


/* Absolute URL for target: a path under graph_url, or an https URL on the same origin. */
static apr_status_t make_url(rmsync_graph_t *g, apr_pool_t *p, const char *target,
                             const char **purl)
{
    if (!target || !*target) {
        return RMSYNC_GRAPH_EINVAL;
    }
    if (!strncasecmp(target, "https://", 8) || !strncasecmp(target, "http://", 7)) {
        apr_size_t n = strlen(g->graph_origin);
        /* Never send the bearer token to another host (a forged nextLink, say). */
        if (strncasecmp(target, g->graph_origin, n) != 0 || (target[n] != '/' && target[n] != '\0'
                                                            && target[n] != '?')) {
            return RMSYNC_GRAPH_BADRESPONSE;
        }
        *purl = target;
        return APR_SUCCESS;
    }
    while (*target == '/') target++;
    *purl = apr_pstrcat(p, g->o.graph_url, "/", target, NULL);
    return APR_SUCCESS;
}

/* res may be NULL. */
static apr_status_t finish(rmsync_graph_result_t *res, apr_status_t rv)
{
    if (res) {
        res->status = rv;
    }
    return rv;
}

/* Bad arguments: nothing was sent. res may be NULL. */
static apr_status_t einval(rmsync_graph_result_t *res)
{
    if (res) {
        reset_result(res);
        res->status = RMSYNC_GRAPH_EINVAL;
    }
    return RMSYNC_GRAPH_EINVAL;
}

static int given(const char *s)
{
    return s && *s;
}

/* Run the described call (retries, token, slot, error mapping: do_call) and, on a 2xx, let
 * on_json (may be NULL) map the body into baton. res (may be NULL) ends up with the status. */
static apr_status_t graph_call(rmsync_graph_t *g, apr_pool_t *p, const graph_call_t *c,
                               graph_on_json_fn *on_json, void *baton,
                               rmsync_graph_result_t *res)
{
    rmsync_graph_result_t local;
    graph_reply_t r;
    const char *url = NULL, *body = NULL;
    apr_status_t rv;

    if (!res) res = &local;
    reset_result(res);
    if ((rv = make_url(g, p, c->target, &url)) != APR_SUCCESS) {
        if (rv == RMSYNC_GRAPH_BADRESPONSE) {
            STAT_INC(g, bad_responses);
            rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00313)
                       "graph: refusing to follow a link outside %s", g->graph_origin);
        }
        return finish(res, rv);
    }
    if (c->body && !(body = rmsync_json_print(p, c->body))) {
        return finish(res, APR_ENOMEM);
    }
    if ((rv = do_call(g, p, c, url, body, res)) != APR_SUCCESS || !on_json) {
        return finish(res, rv);
    }
    r.g = g;
    r.p = p;
    r.call = c;
    r.res = res;
    r.json = res->json;
    return finish(res, on_json(&r, baton));
}

/* A 2xx whose body is not what we expected: one log line with the ids, a distinct status. */
static apr_status_t bad_response(const graph_reply_t *r, const char *why)
{
    STAT_INC(r->g, bad_responses);
    rmsync_log(RMSYNC_LOG_ERR, 0, RMSYNC_LOGNO(00314)
               "graph %s: unexpected response: %s [request-id %s, client-request-id %s]",
               r->call->what, why, r->res->request_id ? r->res->request_id : "-",
               r->res->client_request_id ? r->res->client_request_id : "-");
    return RMSYNC_GRAPH_BADRESPONSE;
}

apr_status_t rmsync_graph_request(rmsync_graph_t *g, apr_pool_t *p, const char *method,
                                  const char *mailbox, const char *target, const cJSON *body,
                                  rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = method ? method : "GET", .target = target,
                       .mailbox = mailbox, .body = body };

    c.idempotent = strcmp(c.method, "POST") != 0;
    return graph_call(g, p, &c, NULL, NULL, res);
}

static const char *user_path(apr_pool_t *p, const char *mailbox, const char *rest)
{
    return apr_pstrcat(p, "users/", rmsync_http_escape(p, mailbox), rest, NULL);
}

/* issue 14: "users/{mailbox}/calendars/{calendar_id}" plus rest, or "users/{mailbox}" plus rest
 * for the main calendar (calendar_id NULL or ""). Calendar ids contain '/', '+', '=': escaped. */
static const char *cal_path(apr_pool_t *p, const char *mailbox, const char *calendar_id,
                            const char *rest)
{
    if (!calendar_id || !*calendar_id) {
        return user_path(p, mailbox, rest);
    }
    return user_path(p, mailbox, apr_pstrcat(p, "/calendars/", rmsync_http_escape(p, calendar_id),
                                             rest, NULL));
}

/* "users/{mailbox}/events/{id}" plus rest (a query, or ""). */
static const char *event_path(apr_pool_t *p, const char *mailbox, const char *event_id,
                              const char *rest)
{
    return apr_pstrcat(p, user_path(p, mailbox, "/events/"), rmsync_http_escape(p, event_id),
                       rest, NULL);
}

/* ---- events -------------------------------------------------------------------------------- */

/* One event object (not an @removed entry) into *pev. */
static apr_status_t event_from(const graph_reply_t *r, const cJSON *json, rmsync_event_t **pev)
{
    const char *err = NULL;
    rmsync_event_t *ev = NULL;

    if (rmsync_event_parse(&ev, r->p, json, &err) != APR_SUCCESS) {
        return bad_response(r, err);
    }
    if (ev->removed) {
        return bad_response(r, "an @removed entry where an event was expected");
    }
    if (pev) *pev = ev;
    return APR_SUCCESS;
}

/* on_json: the body is the event; baton is the rmsync_event_t ** (may be NULL). */
static apr_status_t on_event(const graph_reply_t *r, void *baton)
{
    return event_from(r, r->json, baton);
}

static const char *expand_prop(apr_pool_t *p)
{
    return rmsync_http_escape(p, "singleValueExtendedProperties($filter=id eq '"
                              RMSYNC_EVENT_PROP_ACTIVITY "')");
}

static apr_status_t on_delta_page(const graph_reply_t *r, void *baton)
{
    rmsync_graph_delta_t *d;
    const char *next = NULL, *dl = NULL, *l, *u;
    cJSON *value = NULL, *it;
    apr_pool_t *p = r->p;

    if (rmsync_json_get_array(r->json, "value", &value) != APR_SUCCESS) {
        return bad_response(r, "no 'value' array");
    }
    if (rmsync_json_opt_string(r->json, "@odata.nextLink", &next) != APR_SUCCESS
        || rmsync_json_opt_string(r->json, "@odata.deltaLink", &dl) != APR_SUCCESS) {
        return bad_response(r, "nextLink/deltaLink not a string");
    }
    if (!given(next) && !given(dl)) {
        return bad_response(r, "neither nextLink nor deltaLink");
    }
    d = apr_pcalloc(p, sizeof(*d));
    d->events = apr_array_make(p, cJSON_GetArraySize(value) + 1, sizeof(rmsync_event_t *));
    d->bad_items = apr_array_make(p, 1, sizeof(const char *));
    if (given(next)) {
        d->next_link = next;    /* both present never happens; if it does, finish the round */
    }
    else {
        d->delta_link = dl;
    }
    l = d->next_link ? d->next_link : d->delta_link;
    if (make_url(r->g, p, l, &u) != APR_SUCCESS || strncasecmp(l, "https://", 8)) {
        return bad_response(r, "nextLink/deltaLink not on the Graph origin");
    }
    cJSON_ArrayForEach(it, value) {
        rmsync_event_t *ev = NULL;
        const char *err = NULL, *id = NULL;
        if (rmsync_event_parse(&ev, p, it, &err) != APR_SUCCESS) {
            rmsync_json_get_string(it, "id", &id);
            err = apr_psprintf(p, "id %s: %s", id ? id : "(none)", err);
            APR_ARRAY_PUSH(d->bad_items, const char *) = err;
            STAT_INC(r->g, bad_responses);
            rmsync_log(RMSYNC_LOG_WARNING, 0, RMSYNC_LOGNO(00320)
                       "graph delta page for %s: skipping a malformed item (%s) "
                       "[request-id %s, client-request-id %s]", r->call->mailbox, err,
                       r->res->request_id ? r->res->request_id : "-",
                       r->res->client_request_id);
            continue;
        }
        APR_ARRAY_PUSH(d->events, rmsync_event_t *) = ev;
    }
    *(rmsync_graph_delta_t **)baton = d;
    return APR_SUCCESS;
}

apr_status_t rmsync_graph_delta_page(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                     const char *link, apr_time_t start, apr_time_t end,
                                     int max_page_size, rmsync_graph_delta_t **pdelta,
                                     rmsync_graph_result_t *res)
{
    return rmsync_graph_delta_page_in(g, p, mailbox, NULL, link, start, end, max_page_size,
                                      pdelta, res);
}

apr_status_t rmsync_graph_delta_page_in(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                        const char *calendar_id, const char *link,
                                        apr_time_t start, apr_time_t end, int max_page_size,
                                        rmsync_graph_delta_t **pdelta,
                                        rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1,
                       .what = "calendarView/delta" };

    *pdelta = NULL;
    if (!given(mailbox) || (!link && end <= start)) {
        return einval(res);
    }
    /* A stored link is fetched verbatim: its tokens encode the window and options. */
    c.target = link ? link : apr_pstrcat(p, cal_path(p, mailbox, calendar_id,
                                                     "/calendarView/delta"),
                                         "?startDateTime=",
                                         rmsync_http_escape(p, rmsync_event_format_time_z(p, start)),
                                         "&endDateTime=",
                                         rmsync_http_escape(p, rmsync_event_format_time_z(p, end)),
                                         NULL);
    if (max_page_size > 0) {
        c.prefer = apr_psprintf(p, "odata.maxpagesize=%d", max_page_size);
    }
    return graph_call(g, p, &c, on_delta_page, pdelta, res);
}

apr_status_t rmsync_graph_get_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                    const char *event_id, rmsync_event_t **pev,
                                    rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1, .quiet_codes = 1,
                       .what = "GET event" };

    *pev = NULL;
    if (!given(mailbox) || !given(event_id)) {
        return einval(res);
    }
    c.target = event_path(p, mailbox, event_id, apr_pstrcat(p, "?$expand=", expand_prop(p), NULL));
    return graph_call(g, p, &c, on_event, pev, res);
}

/* on_json of a $batch of event GETs: each inner 200 whose body is an event into evs[id]; any
 * other inner answer (404, 429, a 424 after one of them, ...) leaves its slot NULL. */
typedef struct {
    int n;
    rmsync_event_t **evs;
} batch_events_t;

static apr_status_t on_batch_events(const graph_reply_t *r, void *baton)
{
    batch_events_t *b = baton;
    cJSON *responses = NULL, *it;

    if (rmsync_json_get_array(r->json, "responses", &responses) != APR_SUCCESS) {
        return bad_response(r, "no 'responses' array");
    }
    cJSON_ArrayForEach(it, responses) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "status");
        const cJSON *body = cJSON_GetObjectItemCaseSensitive(it, "body");
        rmsync_event_t *ev = NULL;
        const char *err = NULL;
        char *end = NULL;
        long k;

        if (!cJSON_IsString(id) || !id->valuestring || !cJSON_IsNumber(st)) {
            continue;
        }
        k = strtol(id->valuestring, &end, 10);
        if (end == id->valuestring || *end || k < 0 || k >= b->n || b->evs[k]
            || st->valuedouble != 200 || !cJSON_IsObject(body)) {
            continue;
        }
        if (rmsync_event_parse(&ev, r->p, body, &err) == APR_SUCCESS && !ev->removed) {
            b->evs[k] = ev;
        }
    }
    return APR_SUCCESS;
}

apr_status_t rmsync_graph_get_events_batch(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                           const char *const *event_ids, int n,
                                           rmsync_event_t **evs, rmsync_graph_result_t *res)
{
    /* sequential (dependsOn the previous one): the batch is one request in flight on the
     * mailbox, as the job's single GET was, so the per-mailbox slots and the cross-node
     * advisory locks (at most 2 in flight per job) still hold; Outlook would run up to 4 of
     * a batch's requests at once otherwise (GRAPH.md 7.3) */
    graph_call_t c = { .method = "POST", .target = "$batch", .mailbox = mailbox,
                       .idempotent = 1, .quiet_codes = 1, .what = "$batch of event GETs" };
    batch_events_t b;
    cJSON *body, *reqs;
    const char *q;
    int i;

    if (!given(mailbox) || !evs || !event_ids || n < 1 || n > RMSYNC_GRAPH_BATCH_MAX) {
        return einval(res);
    }
    for (i = 0; i < n; i++) {
        evs[i] = NULL;
    }
    body = rmsync_json_object(p);
    reqs = cJSON_AddArrayToObject(body, "requests");
    q = apr_pstrcat(p, "?$expand=", expand_prop(p), NULL);
    for (i = 0; i < n; i++) {
        cJSON *o, *h;

        if (!given(event_ids[i])) {
            return einval(res);
        }
        o = cJSON_CreateObject();
        cJSON_AddItemToArray(reqs, o);
        cJSON_AddStringToObject(o, "id", apr_itoa(p, i));
        cJSON_AddStringToObject(o, "method", "GET");
        cJSON_AddStringToObject(o, "url",
                                apr_pstrcat(p, "/", event_path(p, mailbox, event_ids[i], q), NULL));
        h = cJSON_AddObjectToObject(o, "headers");
        cJSON_AddStringToObject(h, "Prefer", PREFER_VAL);     /* inner requests need their own */
        if (i > 0) {
            cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "dependsOn"),
                                 cJSON_CreateString(apr_itoa(p, i - 1)));
        }
    }
    b.n = n;
    b.evs = evs;
    c.body = body;
    return graph_call(g, p, &c, on_batch_events, &b, res);
}

static cJSON *dtz_json(apr_pool_t *p, apr_time_t t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dateTime", rmsync_event_format_time(p, t));
    cJSON_AddStringToObject(o, "timeZone", "UTC");
    return o;
}

/* The POST body of a new event. */
static cJSON *new_event_json(apr_pool_t *p, const rmsync_graph_new_event_t *ne)
{
    cJSON *body = rmsync_json_object(p), *arr, *o;
    int i;

    cJSON_AddStringToObject(body, "subject", ne->subject);
    if (ne->body_text) {
        o = cJSON_AddObjectToObject(body, "body");
        cJSON_AddStringToObject(o, "contentType", "text");
        cJSON_AddStringToObject(o, "content", ne->body_text);
    }
    cJSON_AddItemToObject(body, "start", dtz_json(p, ne->start));
    cJSON_AddItemToObject(body, "end", dtz_json(p, ne->end));
    cJSON_AddBoolToObject(body, "isAllDay", ne->is_all_day ? 1 : 0);
    if (ne->location) {
        o = cJSON_AddObjectToObject(body, "location");
        cJSON_AddStringToObject(o, "displayName", ne->location);
    }
    if (ne->attendees && ne->attendees->nelts) {
        arr = cJSON_AddArrayToObject(body, "attendees");
        for (i = 0; i < ne->attendees->nelts; i++) {
            const rmsync_attendee_t *a = &ARRAY_IDX(ne->attendees, i, rmsync_attendee_t);
            cJSON *at, *ea;
            if (!a->email) continue;
            at = cJSON_CreateObject();
            ea = cJSON_AddObjectToObject(at, "emailAddress");
            cJSON_AddStringToObject(ea, "address", a->email);
            if (a->name) cJSON_AddStringToObject(ea, "name", a->name);
            cJSON_AddStringToObject(at, "type", a->type ? a->type : "required");
            cJSON_AddItemToArray(arr, at);
        }
    }
    if (ne->categories && ne->categories->nelts) {
        arr = cJSON_AddArrayToObject(body, "categories");
        for (i = 0; i < ne->categories->nelts; i++) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(ARRAY_IDX(ne->categories, i,
                                                                   const char *)));
        }
    }
    if (ne->transaction_id) {
        cJSON_AddStringToObject(body, "transactionId", ne->transaction_id);
    }
    if (ne->activity_no) {
        arr = cJSON_AddArrayToObject(body, "singleValueExtendedProperties");
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", RMSYNC_EVENT_PROP_ACTIVITY);
        cJSON_AddStringToObject(o, "value", ne->activity_no);
        cJSON_AddItemToArray(arr, o);
    }
    return body;
}

apr_status_t rmsync_graph_create_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                       const rmsync_graph_new_event_t *ne, rmsync_event_t **pev,
                                       rmsync_graph_result_t *res)
{
    return rmsync_graph_create_event_in(g, p, mailbox, NULL, ne, pev, res);
}

apr_status_t rmsync_graph_create_event_in(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          const char *calendar_id,
                                          const rmsync_graph_new_event_t *ne,
                                          rmsync_event_t **pev, rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = "POST", .mailbox = mailbox, .what = "POST event" };

    if (pev) *pev = NULL;
    if (!given(mailbox) || !ne || !ne->subject || ne->end < ne->start) {
        return einval(res);
    }
    c.target = cal_path(p, mailbox, calendar_id, "/events");
    c.body = new_event_json(p, ne);
    c.idempotent = ne->transaction_id != NULL;   /* Graph de-duplicates by transactionId */
    return graph_call(g, p, &c, on_event, pev, res);
}

/* OData string literal: single quotes doubled. */
static const char *odata_quote(apr_pool_t *p, const char *s)
{
    apr_size_t n = 0;
    const char *q;
    char *r, *w;
    for (q = s; *q; q++) n += *q == '\'' ? 2 : 1;
    r = w = apr_palloc(p, n + 1);
    for (q = s; *q; q++) {
        *w++ = *q;
        if (*q == '\'') *w++ = '\'';
    }
    *w = '\0';
    return r;
}

typedef struct find_baton_t {
    const char *activity_no;
    rmsync_event_t **pev;
    int *pcount;
} find_baton_t;

static apr_status_t on_found(const graph_reply_t *r, void *baton)
{
    find_baton_t *fb = baton;
    cJSON *value = NULL;
    int n;

    if (rmsync_json_get_array(r->json, "value", &value) != APR_SUCCESS) {
        return bad_response(r, "no 'value' array");
    }
    n = cJSON_GetArraySize(value);
    if (fb->pcount) *fb->pcount = n;
    if (n == 0) {
        return RMSYNC_GRAPH_NOTFOUND;
    }
    if (n > 1) {
        rmsync_log(RMSYNC_LOG_WARNING, 0, RMSYNC_LOGNO(00330)
                   "graph: %d events in %s carry activity number %s; using the first "
                   "[request-id %s]", n, r->call->mailbox, fb->activity_no,
                   r->res->request_id ? r->res->request_id : "-");
    }
    return event_from(r, cJSON_GetArrayItem(value, 0), fb->pev);
}

apr_status_t rmsync_graph_find_event_by_property(rmsync_graph_t *g, apr_pool_t *p,
                                                 const char *mailbox, const char *activity_no,
                                                 rmsync_event_t **pev, int *pcount,
                                                 rmsync_graph_result_t *res)
{
    return rmsync_graph_find_event_by_property_in(g, p, mailbox, NULL, activity_no, pev, pcount,
                                                  res);
}

apr_status_t rmsync_graph_find_event_by_property_in(rmsync_graph_t *g, apr_pool_t *p,
                                                    const char *mailbox, const char *calendar_id,
                                                    const char *activity_no,
                                                    rmsync_event_t **pev, int *pcount,
                                                    rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1,
                       .what = "GET events by property" };
    find_baton_t fb = { activity_no, pev, pcount };
    const char *filter;

    *pev = NULL;
    if (pcount) *pcount = 0;
    if (!given(mailbox) || !given(activity_no)) {
        return einval(res);
    }
    filter = apr_pstrcat(p, "singleValueExtendedProperties/Any(ep: ep/id eq '",
                         RMSYNC_EVENT_PROP_ACTIVITY, "' and ep/value eq '",
                         odata_quote(p, activity_no), "')", NULL);
    c.target = cal_path(p, mailbox, calendar_id,
                        apr_pstrcat(p, "/events?$filter=", rmsync_http_escape(p, filter),
                                    "&$expand=", expand_prop(p), NULL));
    return graph_call(g, p, &c, on_found, &fb, res);
}

/* on_json for PATCH: some servers answer 204 without a body. */
static apr_status_t on_patched(const graph_reply_t *r, void *baton)
{
    return r->json ? event_from(r, r->json, baton) : APR_SUCCESS;
}

apr_status_t rmsync_graph_patch_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                      const char *event_id, const char *if_match,
                                      const cJSON *patch, rmsync_event_t **pev,
                                      rmsync_graph_result_t *res)
{
    /* idempotent: a PATCH with the same body converges */
    graph_call_t c = { .method = "PATCH", .mailbox = mailbox, .body = patch,
                       .if_match = if_match, .idempotent = 1, .quiet_codes = 1,
                       .what = "PATCH event" };

    if (pev) *pev = NULL;
    if (!given(mailbox) || !given(event_id) || !patch || !cJSON_IsObject(patch)) {
        return einval(res);
    }
    c.target = event_path(p, mailbox, event_id, "");
    return graph_call(g, p, &c, on_patched, pev, res);
}

apr_status_t rmsync_graph_delete_event(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                       const char *event_id, const char *if_match,
                                       rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = "DELETE", .mailbox = mailbox, .if_match = if_match,
                       .idempotent = 1, .quiet_codes = 1 };

    if (!given(mailbox) || !given(event_id)) {
        return einval(res);
    }
    c.target = event_path(p, mailbox, event_id, "");
    return graph_call(g, p, &c, NULL, NULL, res);
}

/* ---- subscriptions ------------------------------------------------------------------------- */

/* on_json: the body is a subscription; baton is the rmsync_graph_subscription_t ** (or NULL). */
static apr_status_t on_subscription(const graph_reply_t *r, void *baton)
{
    rmsync_graph_subscription_t *s = apr_pcalloc(r->p, sizeof(*s));
    const char *exp = NULL;
    const cJSON *j = r->json;

    if (rmsync_json_get_string(j, "id", &s->id) != APR_SUCCESS || !*s->id) {
        return bad_response(r, "subscription without an id string");
    }
    if (rmsync_json_opt_string(j, "resource", &s->resource)
        || rmsync_json_opt_string(j, "changeType", &s->change_type)
        || rmsync_json_opt_string(j, "notificationUrl", &s->notification_url)
        || rmsync_json_opt_string(j, "lifecycleNotificationUrl", &s->lifecycle_url)
        || rmsync_json_opt_string(j, "clientState", &s->client_state)
        || rmsync_json_get_string(j, "expirationDateTime", &exp)) {
        return bad_response(r, "subscription field missing or wrongly typed");
    }
    if (rmsync_event_parse_time(exp, NULL, &s->expiration) != APR_SUCCESS) {
        return bad_response(r, "unparseable expirationDateTime");
    }
    if (baton) *(rmsync_graph_subscription_t **)baton = s;
    return APR_SUCCESS;
}

static const char *exp_str(apr_pool_t *p, apr_time_t t)
{
    /* Graph wants UTC with an explicit Z. */
    return apr_pstrcat(p, apr_pstrndup(p, rmsync_event_format_time(p, t), 27), "Z", NULL);
}

apr_status_t rmsync_graph_subscription_create(rmsync_graph_t *g, apr_pool_t *p,
                                              const char *user_id, const char *notification_url,
                                              const char *lifecycle_url, const char *client_state,
                                              apr_time_t expiration,
                                              rmsync_graph_subscription_t **psub,
                                              rmsync_graph_result_t *res)
{
    return rmsync_graph_subscription_create_in(g, p, user_id, NULL, notification_url,
                                               lifecycle_url, client_state, expiration, psub,
                                               res);
}

apr_status_t rmsync_graph_subscription_create_in(rmsync_graph_t *g, apr_pool_t *p,
                                                 const char *user_id, const char *calendar_id,
                                                 const char *notification_url,
                                                 const char *lifecycle_url,
                                                 const char *client_state,
                                                 apr_time_t expiration,
                                                 rmsync_graph_subscription_t **psub,
                                                 rmsync_graph_result_t *res)
{
    /* not idempotent: a blind resend could create a duplicate subscription */
    graph_call_t c = { .method = "POST", .target = "subscriptions", .mailbox = user_id,
                       .what = "POST subscriptions" };
    cJSON *body;

    if (psub) *psub = NULL;
    if (!given(user_id) || !given(notification_url) || !given(client_state)
        || strlen(client_state) > 128) {
        return einval(res);
    }
    c.body = body = rmsync_json_object(p);
    cJSON_AddStringToObject(body, "changeType", "created,updated,deleted");
    cJSON_AddStringToObject(body, "notificationUrl", notification_url);
    if (given(lifecycle_url)) {
        cJSON_AddStringToObject(body, "lifecycleNotificationUrl", lifecycle_url);
    }
    cJSON_AddStringToObject(body, "resource", rmsync_graph_subscription_resource(p, user_id,
                                                                                 calendar_id));
    cJSON_AddStringToObject(body, "expirationDateTime", exp_str(p, expiration));
    cJSON_AddStringToObject(body, "clientState", client_state);
    cJSON_AddStringToObject(body, "latestSupportedTlsVersion", "v1_2");
    return graph_call(g, p, &c, on_subscription, psub, res);
}

const char *rmsync_graph_subscription_resource(apr_pool_t *p, const char *user_id,
                                               const char *calendar_id)
{
    if (!calendar_id || !*calendar_id) {
        return apr_pstrcat(p, "users/", user_id, "/events", NULL);
    }
    return apr_pstrcat(p, "users/", user_id, "/calendars/", rmsync_http_escape(p, calendar_id),
                       "/events", NULL);
}

/* GET, PATCH (renew, with body) or DELETE subscriptions/{id}: 404 is the caller's business. */
static apr_status_t subscription_call(rmsync_graph_t *g, apr_pool_t *p, const char *method,
                                      const char *what, const char *sub_id, cJSON *body,
                                      rmsync_graph_subscription_t **psub,
                                      rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = method, .body = body, .what = what, .idempotent = 1,
                       .quiet_codes = 1 };

    if (psub) *psub = NULL;
    if (!given(sub_id)) {
        return einval(res);
    }
    c.target = apr_pstrcat(p, "subscriptions/", rmsync_http_escape(p, sub_id), NULL);
    /* GET and PATCH answer the subscription: checked even when the caller does not want it */
    return graph_call(g, p, &c, strcmp(method, "DELETE") ? on_subscription : NULL, psub,
                      res);
}

apr_status_t rmsync_graph_subscription_renew(rmsync_graph_t *g, apr_pool_t *p, const char *sub_id,
                                             apr_time_t expiration,
                                             rmsync_graph_subscription_t **psub,
                                             rmsync_graph_result_t *res)
{
    cJSON *body = rmsync_json_object(p);

    cJSON_AddStringToObject(body, "expirationDateTime", exp_str(p, expiration));
    return subscription_call(g, p, "PATCH", "PATCH subscription", sub_id, body, psub, res);
}

apr_status_t rmsync_graph_subscription_get(rmsync_graph_t *g, apr_pool_t *p, const char *sub_id,
                                           rmsync_graph_subscription_t **psub,
                                           rmsync_graph_result_t *res)
{
    return subscription_call(g, p, "GET", "GET subscription", sub_id, NULL, psub, res);
}

apr_status_t rmsync_graph_subscription_delete(rmsync_graph_t *g, apr_pool_t *p, const char *sub_id,
                                              rmsync_graph_result_t *res)
{
    return subscription_call(g, p, "DELETE", NULL, sub_id, NULL, NULL, res);
}

/* ---- master categories, users -------------------------------------------------------------- */

static apr_status_t on_categories(const graph_reply_t *r, void *baton)
{
    apr_array_header_t *cats;
    cJSON *value = NULL, *it;

    if (rmsync_json_get_array(r->json, "value", &value) != APR_SUCCESS) {
        return bad_response(r, "no 'value' array");
    }
    cats = apr_array_make(r->p, cJSON_GetArraySize(value) + 1, sizeof(rmsync_graph_category_t));
    cJSON_ArrayForEach(it, value) {
        rmsync_graph_category_t *cat = apr_array_push(cats);
        memset(cat, 0, sizeof(*cat));
        if (rmsync_json_get_string(it, "displayName", &cat->name) != APR_SUCCESS
            || rmsync_json_opt_string(it, "id", &cat->id) != APR_SUCCESS
            || rmsync_json_opt_string(it, "color", &cat->color) != APR_SUCCESS) {
            return bad_response(r, "category without a displayName string");
        }
    }
    *(apr_array_header_t **)baton = cats;
    return APR_SUCCESS;
}

apr_status_t rmsync_graph_categories_list(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          apr_array_header_t **pcats, rmsync_graph_result_t *res)
{
    /* quiet_forbidden: no MailboxSettings permission, rmsync_categories warns once */
    graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1,
                       .quiet_forbidden = 1, .what = "GET masterCategories" };

    *pcats = NULL;
    if (!given(mailbox)) {
        return einval(res);
    }
    c.target = user_path(p, mailbox, "/outlook/masterCategories");
    return graph_call(g, p, &c, on_categories, pcats, res);
}

/* Whether name is among mailbox's master categories (case-insensitively). */
static int category_listed(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                           const char *name)
{
    apr_array_header_t *cats = NULL;
    int i;

    if (rmsync_graph_categories_list(g, p, mailbox, &cats, NULL) != APR_SUCCESS) {
        return 0;
    }
    for (i = 0; i < cats->nelts; i++) {
        if (!strcasecmp(ARRAY_IDX(cats, i, rmsync_graph_category_t).name, name)) {
            return 1;
        }
    }
    return 0;
}

/* The arguments of a find-or-create call (category, calendar): *pcreated cleared; 0 when the
 * mailbox or the name is missing. */
static int create_args(const char *mailbox, const char *name, int *pcreated)
{
    if (pcreated) *pcreated = 0;
    return given(mailbox) && given(name);
}

/* The create half of a find-or-create: POST body to the mailbox's path; *pcreated set when
 * Graph made it. */
static apr_status_t create_named(rmsync_graph_t *g, apr_pool_t *p, graph_call_t *c,
                                 const char *path, cJSON *body, graph_on_json_fn *on_json,
                                 void *baton, int *pcreated, rmsync_graph_result_t *res)
{
    apr_status_t rv;

    c->target = user_path(p, c->mailbox, path);
    c->body = body;
    rv = graph_call(g, p, c, on_json, baton, res);
    if (rv == APR_SUCCESS && pcreated) {
        *pcreated = 1;
    }
    return rv;
}

apr_status_t rmsync_graph_category_create(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          const char *name, const char *color, int *pcreated,
                                          rmsync_graph_result_t *res)
{
    /* idempotent: a duplicate create is a 409, which we treat as success */
    graph_call_t c = { .method = "POST", .mailbox = mailbox, .idempotent = 1,
                       .quiet_codes = 1, .quiet_forbidden = 1 };
    cJSON *body = rmsync_json_object(p);
    apr_status_t rv;

    if (!create_args(mailbox, name, pcreated)) {
        return einval(res);
    }
    cJSON_AddStringToObject(body, "displayName", name);
    cJSON_AddStringToObject(body, "color", given(color) ? color : "none");
    rv = create_named(g, p, &c, "/outlook/masterCategories", body, NULL, NULL, pcreated, res);
    /* Exists already: a 409, or the undocumented duplicate-name 400 (re-list to tell). */
    if (rv == RMSYNC_GRAPH_CONFLICT
        || (rv == RMSYNC_GRAPH_BADREQUEST && category_listed(g, p, mailbox, name))) {
        return finish(res, APR_SUCCESS);
    }
    return rv;
}

static apr_status_t on_user(const graph_reply_t *r, void *baton)
{
    rmsync_graph_user_t *u = apr_pcalloc(r->p, sizeof(*u));

    if (rmsync_json_get_string(r->json, "id", &u->id) != APR_SUCCESS || !*u->id
        || rmsync_json_opt_string(r->json, "mail", &u->mail) != APR_SUCCESS
        || rmsync_json_opt_string(r->json, "userPrincipalName", &u->upn) != APR_SUCCESS) {
        return bad_response(r, "user without an id string");
    }
    *(rmsync_graph_user_t **)baton = u;
    return APR_SUCCESS;
}

apr_status_t rmsync_graph_get_user(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                   rmsync_graph_user_t **puser, rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1, .quiet_codes = 1,
                       .what = "GET user" };

    *puser = NULL;
    if (!given(mailbox)) {
        return einval(res);
    }
    c.target = user_path(p, mailbox, "?$select=id,mail,userPrincipalName");
    return graph_call(g, p, &c, on_user, puser, res);
}

/* ---- mailbox settings ------------------------------------------------------------------------ */

static apr_status_t on_timezone(const graph_reply_t *r, void *baton)
{
    const char *tz = NULL;

    if (!r->json || rmsync_json_opt_string(r->json, "value", &tz) != APR_SUCCESS) {
        return bad_response(r, "no 'value' string");
    }
    *(const char **)baton = (tz && *tz) ? tz : NULL;
    return APR_SUCCESS;
}

apr_status_t rmsync_graph_mailbox_timezone(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                           const char **ptz, rmsync_graph_result_t *res)
{
    /* quiet_forbidden: without MailboxSettings.Read the caller falls back and logs once */
    graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1, .quiet_codes = 1,
                       .quiet_forbidden = 1, .what = "GET mailboxSettings/timeZone" };

    *ptz = NULL;
    if (!given(mailbox)) {
        return einval(res);
    }
    c.target = user_path(p, mailbox, "/mailboxSettings/timeZone");
    return graph_call(g, p, &c, on_timezone, ptz, res);
}

/* ---- calendars (issue 14: RMSyncCalendar) ------------------------------------------------ */

typedef struct calendar_baton_t {
    const char *name;
    const char **pid;
} calendar_baton_t;

/* The first calendar of "value" named b->name (case-insensitively, as Outlook compares). */
static apr_status_t on_calendars(const graph_reply_t *r, void *baton)
{
    calendar_baton_t *b = baton;
    cJSON *value = NULL, *it;

    if (rmsync_json_get_array(r->json, "value", &value) != APR_SUCCESS) {
        return bad_response(r, "no 'value' array");
    }
    cJSON_ArrayForEach(it, value) {
        const char *id = NULL, *name = NULL;
        if (rmsync_json_get_string(it, "id", &id) != APR_SUCCESS
            || rmsync_json_opt_string(it, "name", &name) != APR_SUCCESS) {
            return bad_response(r, "calendar without an id string");
        }
        if (name && *id && !strcasecmp(name, b->name)) {
            *b->pid = id;
            return APR_SUCCESS;
        }
    }
    return APR_SUCCESS;
}

static apr_status_t on_calendar(const graph_reply_t *r, void *baton)
{
    const char *id = NULL;

    if (rmsync_json_get_string(r->json, "id", &id) != APR_SUCCESS || !*id) {
        return bad_response(r, "calendar without an id string");
    }
    *(const char **)baton = id;
    return APR_SUCCESS;
}

static apr_status_t calendar_find(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                  const char *name, const char **pid, rmsync_graph_result_t *res)
{
    graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1, .quiet_codes = 1,
                       .what = "GET calendars" };
    calendar_baton_t b = { name, pid };
    const char *filter = apr_pstrcat(p, "name eq '", odata_quote(p, name), "'", NULL);

    c.target = user_path(p, mailbox, apr_pstrcat(p, "/calendars?$filter=",
                                                 rmsync_http_escape(p, filter), NULL));
    return graph_call(g, p, &c, on_calendars, &b, res);
}

apr_status_t rmsync_graph_calendar_ensure(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                          const char *name, const char **pid, int *pcreated,
                                          rmsync_graph_result_t *res)
{
    /* not idempotent: a blind resend may meet its own calendar (409, handled below) */
    graph_call_t c = { .method = "POST", .mailbox = mailbox, .quiet_codes = 1,
                       .what = "POST calendars" };
    cJSON *body = rmsync_json_object(p);
    apr_status_t rv;

    *pid = NULL;
    if (!create_args(mailbox, name, pcreated)) {
        return einval(res);
    }
    rv = calendar_find(g, p, mailbox, name, pid, res);
    if (rv != APR_SUCCESS && rv != RMSYNC_GRAPH_NOTFOUND) {
        return rv;
    }
    if (*pid) {
        return APR_SUCCESS;
    }
    cJSON_AddStringToObject(body, "name", name);
    rv = create_named(g, p, &c, "/calendars", body, on_calendar, pid, pcreated, res);
    if (rv == RMSYNC_GRAPH_CONFLICT) {
        /* ErrorFolderExists: made meanwhile (another node, a lost answer): read it again */
        rv = calendar_find(g, p, mailbox, name, pid, res);
        if (rv == APR_SUCCESS && !*pid) {
            rv = RMSYNC_GRAPH_NOTFOUND;
        }
    }
    return rv;
}

/* ---- occurrences of a series (issue 14: linking API given a series master) ---------------- */

typedef struct instances_baton_t {
    apr_array_header_t *events;
    const char *next;
} instances_baton_t;

static apr_status_t on_instances(const graph_reply_t *r, void *baton)
{
    instances_baton_t *b = baton;
    cJSON *value = NULL, *it;

    b->next = NULL;
    if (rmsync_json_get_array(r->json, "value", &value) != APR_SUCCESS
        || rmsync_json_opt_string(r->json, "@odata.nextLink", &b->next) != APR_SUCCESS) {
        return bad_response(r, "no 'value' array");
    }
    cJSON_ArrayForEach(it, value) {
        rmsync_event_t *ev = NULL;
        apr_status_t rv = event_from(r, it, &ev);
        if (rv != APR_SUCCESS) {
            return rv;
        }
        APR_ARRAY_PUSH(b->events, rmsync_event_t *) = ev;
    }
    return APR_SUCCESS;
}

#define INSTANCES_MAX_PAGES 20

apr_status_t rmsync_graph_list_instances(rmsync_graph_t *g, apr_pool_t *p, const char *mailbox,
                                         const char *master_id, apr_time_t start, apr_time_t end,
                                         apr_array_header_t **pevents,
                                         rmsync_graph_result_t *res)
{
    instances_baton_t b;
    apr_status_t rv;
    int pages;

    *pevents = NULL;
    if (!given(mailbox) || !given(master_id) || end <= start) {
        return einval(res);
    }
    b.events = apr_array_make(p, 16, sizeof(rmsync_event_t *));
    b.next = event_path(p, mailbox, master_id, apr_pstrcat(p, "/instances?startDateTime=",
                        rmsync_http_escape(p, rmsync_event_format_time_z(p, start)),
                        "&endDateTime=", rmsync_http_escape(p, rmsync_event_format_time_z(p, end)),
                        "&$top=100&$expand=", expand_prop(p), NULL));
    for (pages = 0; b.next && pages < INSTANCES_MAX_PAGES; pages++) {
        graph_call_t c = { .method = "GET", .mailbox = mailbox, .idempotent = 1,
                           .quiet_codes = 1, .what = "GET instances" };
        c.target = b.next;
        if ((rv = graph_call(g, p, &c, on_instances, &b, res)) != APR_SUCCESS) {
            return rv;
        }
    }
    *pevents = b.events;
    return APR_SUCCESS;
}
