/* Unit tests for the input validator (mod_rmsync/core/rmsync_utf8.c): UTF-8 with the edge cases
 * of Markus Kuhn's UTF-8 decoder stress test (boundaries, continuation bytes, overlong forms,
 * surrogates, impossible bytes) and the JSON escape check (\u0000, lone surrogates). */
#include <check.h>
#include <string.h>
#include <stdlib.h>
#include <apr_general.h>
#include "rmsync_utf8.h"
#include "rmsync_form.h"
#include "unit_main.h"

#define OK(lit)  ck_assert_msg(rmsync_utf8_valid(lit, sizeof(lit) - 1, NULL), "valid: %s", #lit)
#define BAD(lit) ck_assert_msg(!rmsync_utf8_valid(lit, sizeof(lit) - 1, NULL), "invalid: %s", #lit)

START_TEST(valid_text)
{
    OK("");
    OK("plain ASCII ~\x7f");
    OK("M\xc3\xbcller");                                /* U+00FC */
    OK("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5");  /* Kuhn 1: Greek "kosme" */
    /* Kuhn 2.1 first of each length (except U+0000), 2.2 last of each length allowed */
    OK("\xc2\x80");
    OK("\xe0\xa0\x80");
    OK("\xf0\x90\x80\x80");
    OK("\xdf\xbf");
    OK("\xef\xbf\xbf");                                 /* U+FFFF: a noncharacter, still UTF-8 */
    OK("\xf4\x8f\xbf\xbf");                             /* U+10FFFF */
    /* Kuhn 2.3 other boundaries */
    OK("\xed\x9f\xbf");                                 /* U+D7FF */
    OK("\xee\x80\x80");                                 /* U+E000 */
    OK("\xef\xbf\xbd");                                 /* U+FFFD */
    OK("\xf0\x9f\x98\x80");                             /* emoji */
}
END_TEST

START_TEST(invalid_text)
{
    const char *why = NULL;

    /* NUL anywhere, with its reason */
    ck_assert(!rmsync_utf8_valid("A\0B", 3, &why));
    ck_assert_str_eq(why, "NUL byte in a string");
    /* Kuhn 2.1: U+0000 and the 5/6-byte forms beyond U+10FFFF */
    BAD("\xf8\x88\x80\x80\x80");
    BAD("\xfc\x84\x80\x80\x80\x80");
    BAD("\xf4\x90\x80\x80");                            /* U+110000 */
    BAD("\xf7\xbf\xbf\xbf");                            /* U+1FFFFF */
    /* Kuhn 3.1: unexpected continuation bytes */
    BAD("\x80");
    BAD("\xbf");
    BAD("a\x80\xbf\x80");
    /* Kuhn 3.2: lonely start characters */
    BAD("\xc0 ");
    BAD("\xe0 ");
    BAD("\xf0 ");
    /* Kuhn 3.3: sequences with the last continuation byte missing */
    BAD("\xc2");
    BAD("\xe0\xa0");
    BAD("\xf0\x90\x80");
    BAD("\xdf");
    BAD("\xef\xbf");
    BAD("x\xf4\x8f\xbf");
    /* Kuhn 3.5: impossible bytes */
    BAD("\xfe");
    BAD("\xff");
    BAD("\xfe\xfe\xff\xff");
    /* Kuhn 4.1/4.2: overlong forms of '/' and the largest overlong of each length */
    ck_assert(!rmsync_utf8_valid("\xc0\xaf", 2, &why));
    ck_assert_str_eq(why, "overlong UTF-8 sequence");
    BAD("\xe0\x80\xaf");
    BAD("\xf0\x80\x80\xaf");
    BAD("\xc1\xbf");
    BAD("\xe0\x9f\xbf");
    BAD("\xf0\x8f\xbf\xbf");
    /* Kuhn 4.3: overlong NUL */
    BAD("\xc0\x80");
    BAD("\xe0\x80\x80");
    BAD("\xf0\x80\x80\x80");
    /* Kuhn 5.1/5.2: single and paired UTF-16 surrogates encoded in UTF-8 */
    ck_assert(!rmsync_utf8_valid("\xed\xa0\x80", 3, &why));
    ck_assert_str_eq(why, "UTF-8 encoded surrogate");
    BAD("\xed\xad\xbf");
    BAD("\xed\xae\x80");
    BAD("\xed\xbf\xbf");
    BAD("\xed\xa0\x80\xed\xb0\x80");
    BAD("\xed\xaf\xbf\xed\xbf\xbf");
    /* a bad continuation in the middle */
    BAD("\xe2\x28\xa1");
    BAD("\xf0\x28\x8c\xbc");
    /* the admin filter of issue 12 */
    BAD("\xff\xfe");
    /* the length is honoured: a valid prefix of an invalid buffer */
    ck_assert(rmsync_utf8_valid("ab\xff", 2, NULL));
    ck_assert(rmsync_utf8_valid_str(NULL, NULL));
    ck_assert(rmsync_utf8_valid_str("ok", NULL));
    ck_assert(!rmsync_utf8_valid_str("\xc0\xaf", NULL));
}
END_TEST

#define JOK(lit)  ck_assert_msg(rmsync_json_text_valid(lit, sizeof(lit) - 1, NULL), "ok: %s", lit)
#define JBAD(lit) ck_assert_msg(!rmsync_json_text_valid(lit, sizeof(lit) - 1, NULL), "bad: %s", lit)

START_TEST(json_escapes)
{
    const char *why = NULL;

    JOK("{\"a\":\"plain\"}");
    JOK("{\"a\":\"\\u00fc \\u20ac \\n \\\" \\\\ \\/\"}");
    JOK("{\"a\":\"\\ud83d\\ude00\"}");                  /* a proper pair */
    JOK("{\"a\":\"\\\\u0000\"}");                        /* an escaped backslash, then text */
    JOK("{\"a\":\"\\\\\\u0041\"}");
    JOK("{\"a\":\"\\u0001\"}");
    ck_assert(!rmsync_json_text_valid("{\"a\":\"A\\u0000B\"}", 16, &why));
    ck_assert_str_eq(why, "\\u0000 (NUL) in a JSON string");
    JBAD("{\"a\":\"\\\\\\u0000\"}");                    /* \\ then \u0000 */
    ck_assert(!rmsync_json_text_valid("{\"a\":\"\\ud800\"}", 14, &why));
    ck_assert_str_eq(why, "lone surrogate escape in a JSON string");
    JBAD("{\"a\":\"\\uD800x\"}");
    JBAD("{\"a\":\"\\udbff\\u0041\"}");
    JBAD("{\"a\":\"\\udc00\"}");
    JBAD("{\"a\":\"\\ude00\\ud83d\"}");                 /* reversed pair */
    JBAD("{\"a\":\"\\ud800\\ud800\"}");
    JBAD("{\"a\":\"\\ud800");                            /* truncated at the end */
    JBAD("{\"a\":\"\xc0\xaf\"}");                        /* raw bytes are checked too */
    ck_assert(!rmsync_json_text_valid("{\"a\":\"A\0B\"}", 11, NULL));
    /* a malformed escape is left to the JSON parser */
    JOK("{\"a\":\"\\uzzzz\"}");
    JOK("\\");
}
END_TEST

/* The form / query parser (rmsync_form.c) refuses what the validator refuses, after decoding. */
START_TEST(form_values)
{
    static const char *const allowed[] = { "event", "q", NULL };
    apr_pool_t *p;
    apr_table_t *t;
    const char *err;

    apr_initialize();
    apr_pool_create(&p, NULL);
    ck_assert_int_eq(rmsync_form_parse(p, "event=M%C3%BCller", 17, allowed, 5, &t, &err),
                     APR_SUCCESS);
    ck_assert_int_ne(rmsync_form_parse(p, "event=%ff%fe", 12, allowed, 5, &t, &err), APR_SUCCESS);
    ck_assert_ptr_nonnull(strstr(err, "UTF-8"));
    ck_assert_int_ne(rmsync_form_parse(p, "event=%c0%af", 12, allowed, 5, &t, &err), APR_SUCCESS);
    ck_assert_int_ne(rmsync_form_parse(p, "event=%ed%a0%80", 15, allowed, 5, &t, &err),
                     APR_SUCCESS);
    ck_assert_int_ne(rmsync_form_parse(p, "event=A%00B", 11, allowed, 5, &t, &err), APR_SUCCESS);
    ck_assert_int_ne(rmsync_form_parse(p, "q=1&%ff=2", 9, allowed, 5, &t, &err), APR_SUCCESS);
    ck_assert_int_ne(rmsync_form_parse(p, "event=\xff", 7, allowed, 5, &t, &err), APR_SUCCESS);
    apr_pool_destroy(p);
    apr_terminate();
}
END_TEST

RMSYNC_UNIT_MAIN("utf8", "core", NULL, NULL, 0,
                 valid_text, invalid_text, json_escapes, form_values)
