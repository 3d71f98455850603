/* mod_rmsync unit tests: the one main() every Check suite runs with (APR set up around the
 * runner; exit status = any failure). Each test file ends with
 *   RMSYNC_UNIT_MAIN("suite", "case", setup, teardown, timeout, test1, test2, ...)
 * (setup/teardown: the checked fixture or NULL; timeout in seconds, 0: Check's default). */
#ifndef RMSYNC_UNIT_MAIN_H
#define RMSYNC_UNIT_MAIN_H

#include <stdlib.h>
#include <check.h>
#include <apr_general.h>

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
