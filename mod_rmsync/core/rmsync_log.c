/* mod_rmsync, used by every process (parent, Apache workers, sync runner): the core's logging
 * sink (see rmsync_log.h). */
#include <stdio.h>
#include <apr_strings.h>
#include "rmsync_log.h"

static rmsync_log_sink_fn *sink_fn;
static void *sink_baton;
static int sink_level = RMSYNC_LOG_NOTICE;

void rmsync_log_set_sink(rmsync_log_sink_fn *fn, void *baton, int max_level)
{
    sink_fn = fn;
    sink_baton = baton;
    sink_level = max_level;
}

int rmsync_log_is_level(int level)
{
    return level <= sink_level;
}

void rmsync_log_printf(const char *file, int line, int level, apr_status_t rv,
                       const char *fmt, ...)
{
    char buf[4096];
    va_list ap;

    va_start(ap, fmt);
    apr_vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (sink_fn) {
        sink_fn(sink_baton, file, line, level, rv, buf);
    }
    else {
        char err[128] = "";
        if (rv != APR_SUCCESS) {
            apr_strerror(rv, err, sizeof(err));
        }
        fprintf(stderr, "[rmsync:%d] %s%s%s\n", level, buf, rv ? ": " : "", err);
    }
}
