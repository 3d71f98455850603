/* mod_rmsync unit tests: what the Check suites share: the corpus reader, and the one main()
 * every suite runs with (APR set up around the runner; exit status = any failure). Each test
 * file ends with
 *   RMSYNC_UNIT_MAIN("suite", "case", setup, teardown, timeout, test1, test2, ...)
 * (setup/teardown: the checked fixture or NULL; timeout in seconds, 0: Check's default). */
#ifndef RMSYNC_UNIT_MAIN_H
#define RMSYNC_UNIT_MAIN_H

#include <stdlib.h>
#include <check.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_file_io.h>

static inline int rmsync_unit_run(Suite *s)
{
    SRunner *sr;
    int failed;

    apr_initialize();
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    apr_terminate();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* The test corpus: tests/corpus, or $RMSYNC_CORPUS. */
static inline const char *rmsync_unit_corpus_dir(void)
{
    const char *d = getenv("RMSYNC_CORPUS");
    return d ? d : "tests/corpus";
}

/* The whole corpus file rel (relative to the corpus), NUL-terminated, from p; *plen its length
 * (plen may be NULL). A missing file fails the test. */
static inline char *rmsync_unit_corpus_read(apr_pool_t *p, const char *rel, apr_size_t *plen)
{
    const char *fp = apr_pstrcat(p, rmsync_unit_corpus_dir(), "/", rel, NULL);
    apr_file_t *f;
    apr_finfo_t fi;
    apr_size_t len;
    char *buf;

    ck_assert_msg(apr_file_open(&f, fp, APR_FOPEN_READ, 0, p) == APR_SUCCESS, "open %s", fp);
    ck_assert_int_eq(apr_file_info_get(&fi, APR_FINFO_SIZE, f), APR_SUCCESS);
    len = (apr_size_t)fi.size;
    buf = apr_palloc(p, len + 1);
    if (len) {
        ck_assert_int_eq(apr_file_read_full(f, buf, len, NULL), APR_SUCCESS);
    }
    buf[len] = '\0';
    apr_file_close(f);
    if (plen) {
        *plen = len;
    }
    return buf;
}

/* A suite of one test case; tests is NULL-terminated. */
static inline Suite *rmsync_unit_suite(const char *name, const char *tcase, SFun setup,
                                       SFun teardown, double timeout,
                                       const TTest *const *tests)
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create(tcase);

    if (setup || teardown) {
        tcase_add_checked_fixture(tc, setup, teardown);
    }
    if (timeout > 0) {
        tcase_set_timeout(tc, timeout);
    }
    for (; *tests; tests++) {
        tcase_add_test(tc, *tests);
    }
    suite_add_tcase(s, tc);
    return s;
}

#define RMSYNC_UNIT_MAIN(name, tcase, setup, teardown, timeout, ...) \
    int main(void) \
    { \
        const TTest *const tests_[] = { __VA_ARGS__, NULL }; \
        return rmsync_unit_run(rmsync_unit_suite(name, tcase, setup, teardown, timeout, \
                                                 tests_)); \
    }

#endif /* RMSYNC_UNIT_MAIN_H */
