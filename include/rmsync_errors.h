/* mod_rmsync: the error classes (core/rmsync_errors.c, APR only): every error the sync can
 * show an admin (a representative's last error, an error row of the sync log, the runner's
 * token error, a health reason) is matched to one class with a plain-language reason and what
 * to do about it. The admin pages and status.json show both next to the raw message.
 *
 * The table is THE list: docs/admin.md's "Errors and their fix" table is checked against it by
 * tests/test_errors.py (which parses rmsync_errors.c), and tests/unit/test_health.c checks that
 * every Graph/transport status the engine can report lands in a class other than "unknown".
 */
#ifndef RMSYNC_ERRORS_H
#define RMSYNC_ERRORS_H

#include <apr_pools.h>

typedef struct rmsync_error_class_t {
    const char *code;     /* stable id, e.g. "aadsts7000215", "mailbox_not_found" */
    const char *match;    /* '|'-separated substrings of the raw message (case-insensitive) */
    const char *reason;   /* what it means, one sentence */
    const char *fix;      /* what to do (the directive / Entra setting / nothing) */
} rmsync_error_class_t;

/* The class of a raw error message: the first entry one of whose substrings occurs in msg;
 * the "unknown" class when none does (never NULL). */
const rmsync_error_class_t *rmsync_error_classify(const char *msg);

/* The class with this code, NULL when there is none. */
const rmsync_error_class_t *rmsync_error_by_code(const char *code);

/* The whole table (for the docs test and the pages); *n gets its length. */
const rmsync_error_class_t *rmsync_error_table(int *n);

/* The AADSTS code in msg ("AADSTS7000215"), in p; NULL when there is none. */
const char *rmsync_error_aadsts(apr_pool_t *p, const char *msg);

#endif /* RMSYNC_ERRORS_H */
