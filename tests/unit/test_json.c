/* Unit tests: rmsync_json (pool-bound cJSON, size cap, error position, typed getters) and a
 * replay of tests/corpus through the parser. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_file_io.h>
#include "rmsync_json.h"
#include "unit_main.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static const char *corpus_dir(void)
{
    const char *d = getenv("RMSYNC_CORPUS");
    return d ? d : "tests/corpus";
}

static apr_status_t parse_s(cJSON **j, const char *s)
{
    return rmsync_json_parse(j, pool, s, strlen(s), 0, NULL);
}

START_TEST(test_parse_ok_and_bound)
{
    cJSON *j = NULL;
    const char *s = NULL;
    ck_assert_int_eq(parse_s(&j, "{\"a\": \"b\", \"n\": 3}"), APR_SUCCESS);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(rmsync_json_get_string(j, "a", &s), APR_SUCCESS);
    ck_assert_str_eq(s, "b");
    /* the tree is freed by the pool (valgrind/ASan see no leak) */
}
END_TEST

START_TEST(test_parse_not_nul_terminated)
{
    char buf[16];
    cJSON *j = NULL;
    long long n = 0;
    memcpy(buf, "{\"n\":12}XXXXXXXX", 16);   /* no NUL anywhere */
    ck_assert_int_eq(rmsync_json_parse(&j, pool, buf, 8, 0, NULL), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_get_int(j, "n", 0, 100, &n), APR_SUCCESS);
    ck_assert_int_eq(n, 12);
}
END_TEST

START_TEST(test_parse_errors_and_position)
{
    cJSON *j = NULL;
    apr_size_t pos = 999;
    const char *bad = "{\"a\": [1, 2,, 3]}";
    ck_assert_int_eq(rmsync_json_parse(&j, pool, bad, strlen(bad), 0, &pos), RMSYNC_JSON_EPARSE);
    ck_assert_ptr_null(j);
    ck_assert_uint_ge(pos, 10);
    ck_assert_uint_le(pos, 13);
    ck_assert_int_eq(rmsync_json_parse(&j, pool, "{} x", 4, 0, &pos), RMSYNC_JSON_EPARSE);
    ck_assert_uint_eq(pos, 3);
    ck_assert_int_eq(rmsync_json_parse(&j, pool, "{}  \n", 5, 0, &pos), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_parse(&j, pool, "", 0, 0, &pos), RMSYNC_JSON_EPARSE);
    ck_assert_int_eq(rmsync_json_parse(&j, pool, NULL, 0, 0, &pos), RMSYNC_JSON_EPARSE);
}
END_TEST

START_TEST(test_parse_size_cap)
{
    cJSON *j = NULL;
    const char *s = "{\"a\":\"0123456789\"}";
    ck_assert_int_eq(rmsync_json_parse(&j, pool, s, strlen(s), 10, NULL), RMSYNC_JSON_ETOOLARGE);
    ck_assert_ptr_null(j);
    ck_assert_int_eq(rmsync_json_parse(&j, pool, s, strlen(s), strlen(s), NULL), APR_SUCCESS);
}
END_TEST

START_TEST(test_getters_types)
{
    cJSON *j = NULL, *o = NULL;
    const char *s = NULL;
    double d = 0;
    long long n = 0;
    int b = -1;
    ck_assert_int_eq(parse_s(&j, "{\"s\":\"x\",\"n\":1.5,\"i\":7,\"b\":true,\"z\":null,"
                                 "\"o\":{\"a\":{\"b\":\"deep\"}},\"arr\":[1],\"Case\":1}"), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_get_string(j, "n", &s), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_get_string(j, "missing", &s), RMSYNC_JSON_ENOENT);
    ck_assert_int_eq(rmsync_json_get_string(j, "z", &s), RMSYNC_JSON_ENULL);
    ck_assert_ptr_null(s);                             /* untouched on error */
    ck_assert_int_eq(rmsync_json_opt_string(j, "z", &s), APR_SUCCESS);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(rmsync_json_opt_string(j, "n", &s), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_get_number(j, "n", &d), APR_SUCCESS);
    ck_assert(d == 1.5);
    ck_assert_int_eq(rmsync_json_get_int(j, "n", 0, 10, &n), RMSYNC_JSON_ETYPE);  /* fractional */
    ck_assert_int_eq(rmsync_json_get_int(j, "i", 0, 5, &n), RMSYNC_JSON_ETYPE);   /* range */
    ck_assert_int_eq(rmsync_json_get_int(j, "i", 0, 10, &n), APR_SUCCESS);
    ck_assert_int_eq(n, 7);
    ck_assert_int_eq(rmsync_json_get_bool(j, "b", &b), APR_SUCCESS);
    ck_assert_int_eq(b, 1);
    ck_assert_int_eq(rmsync_json_get_bool(j, "s", &b), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_get_object(j, "arr", &o), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_get_array(j, "arr", &o), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_get_object(j, "o", &o), APR_SUCCESS);
    /* case-sensitive */
    ck_assert_int_eq(rmsync_json_get_int(j, "case", 0, 9, &n), RMSYNC_JSON_ENOENT);
    ck_assert_int_eq(rmsync_json_get_int(j, "Case", 0, 9, &n), APR_SUCCESS);
    /* getters on a non-object */
    ck_assert_int_eq(rmsync_json_get_array(j, "arr", &o), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_get_string(o->child, "x", &s), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_get_string(NULL, "x", &s), RMSYNC_JSON_ETYPE);
}
END_TEST

START_TEST(test_paths)
{
    cJSON *j = NULL, *o = NULL;
    const char *s = NULL;
    int b = 0;
    ck_assert_int_eq(parse_s(&j, "{\"o\":{\"a\":{\"b\":\"deep\",\"t\":false}},\"s\":\"x\"}"),
                     APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_path_string(j, "o/a/b", &s), APR_SUCCESS);
    ck_assert_str_eq(s, "deep");
    ck_assert_int_eq(rmsync_json_path_bool(j, "o/a/t", &b), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_path_string(j, "o/a/t", &s), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_path_string(j, "o/x/b", &s), RMSYNC_JSON_ENOENT);
    ck_assert_int_eq(rmsync_json_path_string(j, "s/b", &s), RMSYNC_JSON_ETYPE);
    ck_assert_int_eq(rmsync_json_path_object(j, "o/a", &o), APR_SUCCESS);
    ck_assert_ptr_nonnull(rmsync_json_path(j, "o/a/b"));
    ck_assert_ptr_null(rmsync_json_path(j, ""));
    ck_assert_ptr_null(rmsync_json_path(j, "o//a"));
}
END_TEST

START_TEST(test_huge_string_and_deep_nesting)
{
    apr_size_t n = 4 * 1024 * 1024, i;
    char *big = apr_palloc(pool, n + 32);
    cJSON *j = NULL;
    const char *s = NULL;
    apr_status_t rv;

    strcpy(big, "{\"subject\":\"");
    for (i = 12; i < n; i++) big[i] = 'a';
    strcpy(big + n, "\"}");
    ck_assert_int_eq(rmsync_json_parse(&j, pool, big, n + 2, 0, NULL), APR_SUCCESS);
    ck_assert_int_eq(rmsync_json_get_string(j, "subject", &s), APR_SUCCESS);
    ck_assert_uint_eq(strlen(s), n - 12);
    ck_assert_int_eq(rmsync_json_parse(&j, pool, big, n + 2, 1024 * 1024, NULL),
                     RMSYNC_JSON_ETOOLARGE);
    /* 100000 nested arrays: cJSON's nesting limit turns this into a parse error, not a crash */
    big = apr_palloc(pool, 200001);
    for (i = 0; i < 100000; i++) { big[i] = '['; big[100000 + i] = ']'; }
    rv = rmsync_json_parse(&j, pool, big, 200000, 0, NULL);
    ck_assert_int_eq(rv, RMSYNC_JSON_EPARSE);
}
END_TEST

START_TEST(test_print_and_bind)
{
    cJSON *o = rmsync_json_object(pool);
    const char *s;
    cJSON_AddStringToObject(o, "a", "b\"c");
    s = rmsync_json_print(pool, o);
    ck_assert_str_eq(s, "{\"a\":\"b\\\"c\"}");
}
END_TEST

/* Every corpus file goes through the parser; malformed/ ones must fail with a position inside
 * the input, all others must parse. */
static int replay_dir(const char *sub, int expect_ok)
{
    char path[1024];
    DIR *d;
    struct dirent *e;
    int count = 0;

    apr_snprintf(path, sizeof(path), "%s/%s", corpus_dir(), sub);
    d = opendir(path);
    ck_assert_msg(d != NULL, "corpus dir %s missing", path);
    while ((e = readdir(d)) != NULL) {
        char fp[2048];
        apr_file_t *f;
        apr_finfo_t fi;
        char *buf;
        apr_size_t len, pos = 0;
        cJSON *j = NULL;
        apr_status_t rv;

        if (!strstr(e->d_name, ".json")) continue;
        apr_snprintf(fp, sizeof(fp), "%s/%s", path, e->d_name);
        ck_assert_int_eq(apr_file_open(&f, fp, APR_FOPEN_READ, 0, pool), APR_SUCCESS);
        apr_file_info_get(&fi, APR_FINFO_SIZE, f);
        len = (apr_size_t)fi.size;
        buf = apr_palloc(pool, len + 1);
        if (len) apr_file_read_full(f, buf, len, NULL);
        apr_file_close(f);
        rv = rmsync_json_parse(&j, pool, buf, len, 1024 * 1024, &pos);
        if (expect_ok) {
            ck_assert_msg(rv == APR_SUCCESS, "%s: %s at %zu", fp, rmsync_json_strerror(pool, rv), pos);
        }
        else {
            ck_assert_msg(rv == RMSYNC_JSON_EPARSE, "%s should not parse", fp);
            ck_assert_msg(len == 0 || pos <= len, "%s: error position %zu beyond %zu", fp, pos, len);
            ck_assert_ptr_null(j);
        }
        count++;
    }
    closedir(d);
    return count;
}

START_TEST(test_corpus_replay)
{
    ck_assert_int_ge(replay_dir("events", 1), 20);
    ck_assert_int_ge(replay_dir("delta", 1), 4);
    ck_assert_int_ge(replay_dir("errors", 1), 5);
    ck_assert_int_ge(replay_dir("malformed", 0), 6);
}
END_TEST

/* Every prefix of a valid document is rejected cleanly (truncated responses). */
START_TEST(test_all_truncations)
{
    const char *doc = "{\"value\":[{\"id\":\"a\",\"start\":{\"dateTime\":\"2026-11-25T10:00:00\"},"
                      "\"n\":-1.5e3,\"t\":true,\"u\":\"\\u00e9\\n\"}],\"@odata.deltaLink\":\"x\"}";
    apr_size_t n = strlen(doc), i;
    for (i = 0; i < n; i++) {
        cJSON *j = NULL;
        apr_size_t pos = 0;
        char *copy = apr_pstrmemdup(pool, doc, i);
        ck_assert_int_eq(rmsync_json_parse(&j, pool, copy, i, 0, &pos), RMSYNC_JSON_EPARSE);
        ck_assert_uint_le(pos, i);
    }
}
END_TEST

/* Parsing into pool arenas (the runner's Graph responses): the same trees and errors as
 * rmsync_json_parse; trees made with cJSON_Create* (before or after the hooks) still go
 * through malloc/free; a failed parse frees its partial tree without touching malloc. Run
 * under ASan/valgrind with the rest of the unit tests. */
START_TEST(test_pooled_parse)
{
    cJSON *before = cJSON_CreateObject(), *after, *j = NULL, *v;
    const char *doc = "{\"value\":[{\"id\":\"a\",\"n\":-1.5e3,\"u\":\"\\u00e9\"}],\"x\":null}";
    apr_size_t n = strlen(doc), i, pos = 0;
    char *big;
    long long k = 0;
    int m;

    cJSON_AddStringToObject(before, "made", "before the hooks");
    rmsync_json_use_arenas();
    after = rmsync_json_bind(pool, cJSON_CreateObject());
    cJSON_AddStringToObject(after, "made", "after the hooks");
    ck_assert_int_eq(rmsync_json_parse_pooled(&j, pool, doc, n, 0, NULL), APR_SUCCESS);
    v = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "value"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(v, "u")->valuestring, "\xc3\xa9");
    ck_assert(cJSON_GetObjectItem(v, "n")->valuedouble == -1500.0);
    for (i = 0; i < n; i++) {                 /* every truncation: a clean error */
        char *copy = apr_pstrmemdup(pool, doc, i);
        ck_assert_int_eq(rmsync_json_parse_pooled(&j, pool, copy, i, 0, &pos), RMSYNC_JSON_EPARSE);
        ck_assert_uint_le(pos, i);
    }
    ck_assert_int_eq(rmsync_json_parse_pooled(&j, pool, "{} x", 4, 0, &pos), RMSYNC_JSON_EPARSE);
    ck_assert_uint_eq(pos, 3);
    /* bigger than one 64 KiB block, and one string bigger than a block */
    big = apr_palloc(pool, 400000);
    strcpy(big, "{\"s\":\"");
    memset(big + 6, 'x', 100000);
    strcpy(big + 100006, "\",\"a\":[");
    for (m = 0; m < 5000; m++) {
        strcat(big + 100000, m ? ",{\"k\":7}" : "{\"k\":7}");
    }
    strcat(big + 100000, "]}");
    ck_assert_int_eq(rmsync_json_parse_pooled(&j, pool, big, strlen(big), 0, NULL), APR_SUCCESS);
    ck_assert_uint_eq(strlen(cJSON_GetObjectItem(j, "s")->valuestring), 100000);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "a")), 5000);
    ck_assert_int_eq(rmsync_json_get_int(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "a"), 4999),
                                         "k", 0, 10, &k), APR_SUCCESS);
    ck_assert_int_eq(k, 7);
    /* printing works without realloc; malloc'd trees are freed as before */
    ck_assert_str_eq(rmsync_json_print(pool, after), "{\"made\":\"after the hooks\"}");
    cJSON_Delete(before);
}
END_TEST

/* JSON text built without cJSON (the intake's statement rows): every string survives a parse. */
START_TEST(test_quote_round_trip)
{
    static const char *const cases[] = { "", "plain", "q\"uo\"te", "back\\slash", "tab\there",
                                         "nl\nx\r\x01\x1f", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac",
                                         "</script>", "\\\"" };
    apr_size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *doc = apr_pstrcat(pool, "{\"s\":", rmsync_json_quote(pool, cases[i]), "}", NULL);
        cJSON *j = NULL;
        const char *got = NULL;
        ck_assert_msg(rmsync_json_parse(&j, pool, doc, strlen(doc), 0, NULL) == APR_SUCCESS,
                      "not JSON: %s", doc);
        ck_assert_int_eq(rmsync_json_get_string(j, "s", &got), APR_SUCCESS);
        ck_assert_str_eq(got, cases[i]);
    }
    ck_assert_str_eq(rmsync_json_quote(pool, NULL), "null");
}
END_TEST

/* The member index answers every name exactly as the plain lookups do: small and large objects
 * (past the table's 3/4: the fallback), duplicates (first wins), null, wrong types, absent. */
START_TEST(test_member_index_matches_lookup)
{
    static const int sizes[] = { 0, 1, 2, 30, 47, 48, 49, 64, 200 };
    apr_size_t si;

    for (si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        int n = sizes[si], i;
        char *doc = apr_pstrdup(pool, "{");
        cJSON *j = NULL;
        rmsync_json_ix_t ix;

        for (i = 0; i < n; i++) {
            doc = apr_psprintf(pool, "%s%s\"k%d\":%s", doc, i ? "," : "", i,
                               i % 5 == 0 ? apr_psprintf(pool, "\"v%d\"", i)
                               : i % 5 == 1 ? "null" : i % 5 == 2 ? "true"
                               : i % 5 == 3 ? "[1]" : "{\"o\":1}");
        }
        /* a duplicate of k0 with another value, and names that differ in case only */
        doc = apr_psprintf(pool, "%s%s\"k0\":\"second\",\"K0\":\"upper\",\"\":\"empty\"}", doc,
                           n ? "," : "");
        ck_assert_int_eq(parse_s(&j, doc), APR_SUCCESS);
        rmsync_json_ix_init(&ix, j);
        ck_assert_int_eq(ix.linear, n + 3 > RMSYNC_JSON_IX_SLOTS * 3 / 4);
        for (i = -1; i < n + 3; i++) {
            const char *name = i < 0 ? "" : i == n + 2 ? "K0" : apr_psprintf(pool, "k%d", i);
            const char *a = NULL, *b = NULL;
            int ba = -1, bb = -1;
            cJSON *oa = NULL, *ob = NULL;

            ck_assert_ptr_eq(rmsync_json_ix_member(&ix, name), rmsync_json_member(j, name));
            ck_assert_int_eq(rmsync_json_ix_string(&ix, name, &a),
                             rmsync_json_get_string(j, name, &b));
            ck_assert_ptr_eq(a, b);
            ck_assert_int_eq(rmsync_json_ix_opt_string(&ix, name, &a),
                             rmsync_json_opt_string(j, name, &b));
            ck_assert_ptr_eq(a, b);
            ck_assert_int_eq(rmsync_json_ix_bool(&ix, name, &ba),
                             rmsync_json_get_bool(j, name, &bb));
            ck_assert_int_eq(ba, bb);
            ck_assert_int_eq(rmsync_json_ix_array(&ix, name, &oa),
                             rmsync_json_get_array(j, name, &ob));
            ck_assert_ptr_eq(oa, ob);
            ck_assert_int_eq(rmsync_json_ix_object(&ix, name, &oa),
                             rmsync_json_get_object(j, name, &ob));
            ck_assert_ptr_eq(oa, ob);
        }
        {
            const char *v = NULL;
            ck_assert_int_eq(rmsync_json_ix_string(&ix, "k0", &v), APR_SUCCESS);
            ck_assert_str_eq(v, n ? "v0" : "second");      /* the first k0 */
            ck_assert_int_eq(rmsync_json_ix_string(&ix, "K0", &v), APR_SUCCESS);
            ck_assert_str_eq(v, "upper");
        }
    }
    {
        /* not an object: every getter says so, as the plain ones do */
        cJSON *j = NULL;
        rmsync_json_ix_t ix;
        const char *v = NULL;
        ck_assert_int_eq(parse_s(&j, "[1,2]"), APR_SUCCESS);
        rmsync_json_ix_init(&ix, j);
        ck_assert_ptr_null(rmsync_json_ix_member(&ix, "a"));
        ck_assert_int_eq(rmsync_json_ix_string(&ix, "a", &v), RMSYNC_JSON_ETYPE);
        rmsync_json_ix_init(&ix, NULL);
        ck_assert_int_eq(rmsync_json_ix_string(&ix, "a", &v), RMSYNC_JSON_ETYPE);
    }
}
END_TEST

RMSYNC_UNIT_MAIN("rmsync_json", "core", setup, teardown, 30,
                 test_parse_ok_and_bound, test_parse_not_nul_terminated,
                 test_parse_errors_and_position, test_parse_size_cap, test_getters_types,
                 test_paths, test_huge_string_and_deep_nesting, test_print_and_bind,
                 test_corpus_replay, test_all_truncations, test_pooled_parse,
                 test_quote_round_trip, test_member_index_matches_lookup)
