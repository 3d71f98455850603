/* mod_rmsync unit tests: the one main() every Check suite runs with (APR set up around the
 * runner; exit status = any failure). */
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

#endif /* RMSYNC_UNIT_MAIN_H */
