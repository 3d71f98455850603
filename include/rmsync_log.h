/* mod_rmsync: logging from the sync core without httpd headers (the md_log idea).
 *
 * The glue installs a sink that forwards to ap_log_error(); unit tests and benchmarks install
 * their own or leave the default (stderr). Levels use the APLOG_* numbers. Every message at
 * WARNING or above starts with RMSYNC_LOGNO(nnnnn). Never pass secrets or bearer tokens.
 */
#ifndef RMSYNC_LOG_H
#define RMSYNC_LOG_H

#include <stdarg.h>
#include <apr_errno.h>
#include "rmsync.h"

#define RMSYNC_LOG_EMERG   0
#define RMSYNC_LOG_ALERT   1
#define RMSYNC_LOG_CRIT    2
#define RMSYNC_LOG_ERR     3
#define RMSYNC_LOG_WARNING 4
#define RMSYNC_LOG_NOTICE  5
#define RMSYNC_LOG_INFO    6
#define RMSYNC_LOG_DEBUG   7
#define RMSYNC_LOG_TRACE1  8

typedef void rmsync_log_sink_fn(void *baton, const char *file, int line, int level,
                                apr_status_t rv, const char *msg);

/* Install the sink and the most verbose level that reaches it. Not thread-safe: call at start. */
void rmsync_log_set_sink(rmsync_log_sink_fn *fn, void *baton, int max_level);
int  rmsync_log_is_level(int level);
void rmsync_log_printf(const char *file, int line, int level, apr_status_t rv,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define rmsync_log(level, rv, ...) \
    do { if (rmsync_log_is_level(level)) \
             rmsync_log_printf(__FILE__, __LINE__, (level), (rv), __VA_ARGS__); } while (0)

#endif /* RMSYNC_LOG_H */
