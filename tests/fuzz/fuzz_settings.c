/* Fuzz target: every directive value validator of core/rmsync_settings.c. The first input byte
 * picks the validator (modulo their count), the rest is the value (up to its first NUL, as
 * httpd hands directive arguments over). The secret-file reader gets the value as the file's
 * content (written to a temporary file), the path checks get it as a path (they open regular
 * files only, read-only). */
#include <stdio.h>
#include <unistd.h>
#include "fuzz_common.h"
#include "rmsync_settings.h"

static char secret_path[] = "/tmp/rmsync-fuzz-secret.XXXXXX";
static int secret_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_init();
    secret_fd = mkstemp(secret_path);
    if (secret_fd >= 0) {
        unlink(secret_path);            /* reached through /proc/self/fd below */
    }
    return 0;
}

#define N_VALIDATORS 20

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p = fuzz_pool;
    const char *v, *err = NULL, *s = NULL;
    int i = 0;
    apr_size_t z = 0;
    apr_time_t t;
    rmsync_delete_policy_e dp;
    rmsync_cancel_policy_e cp;

    if (size < 1) {
        return 0;
    }
    v = fuzz_str(data + 1, size - 1);
    switch (data[0] % N_VALIDATORS) {
    case 0:  err = rmsync_parse_int(p, v, 0, 86400, &i);
             if (!err) FUZZ_ASSERT(i >= 0 && i <= 86400);
             break;
    case 1:  err = rmsync_parse_int(p, v, -5, 5, &i);
             if (!err) FUZZ_ASSERT(i >= -5 && i <= 5);
             break;
    case 2:  err = rmsync_parse_size(p, v, 64 * 1024, 256 * 1024 * 1024, &z);
             if (!err) FUZZ_ASSERT(z >= 64 * 1024 && z <= 256 * 1024 * 1024);
             break;
    case 3:  err = rmsync_check_url(p, v, RMSYNC_URL_HTTPS, &s);
             if (!err) FUZZ_ASSERT(s && !strncasecmp(s, "https://", 8));
             break;
    case 4:  err = rmsync_check_url(p, v, RMSYNC_URL_HTTPS_OR_LOOPBACK, &s); break;
    case 5:  err = rmsync_check_url(p, v, RMSYNC_URL_HTTP_ANY, &s); break;
    case 6:  err = rmsync_check_conninfo(p, v); break;
    case 7:  err = rmsync_check_readable_file(p, v); break;
    case 8:  err = rmsync_check_sync_from(p, v);
             if (!err) FUZZ_ASSERT(rmsync_sync_from_time(v, apr_time_now(), &t) == APR_SUCCESS);
             break;
    case 9:  (void)rmsync_sync_from_time(v, apr_time_now(), &t); break;
    case 10: err = rmsync_parse_delete_policy(p, v, &dp); break;
    case 11: err = rmsync_parse_cancel_policy(p, v, &cp); break;
    case 12: err = rmsync_parse_log_level(p, v, &i); break;
    case 13: err = rmsync_check_category_color(p, v); break;
    case 14: err = rmsync_check_category_name(p, v); break;
    case 15: err = rmsync_check_name(p, v, 64); break;
    case 16: err = rmsync_check_activity_url(p, v); break;
    case 17: err = rmsync_parse_stall_timeout(p, v, &i);
             if (!err) FUZZ_ASSERT(i == 0 || (i >= RMSYNC_STALL_MIN_S && i <= RMSYNC_STALL_MAX_S));
             break;
    case 18: err = rmsync_check_log_target(p, v); break;
    case 19:
        if (secret_fd >= 0 && ftruncate(secret_fd, 0) == 0
            && pwrite(secret_fd, data + 1, size - 1, 0) == (ssize_t)(size - 1)) {
            char path[64];
            snprintf(path, sizeof(path), "/proc/self/fd/%d", secret_fd);
            err = rmsync_read_secret_file(p, path, &s);
            if (!err) FUZZ_ASSERT(s && *s);
        }
        break;
    }
    if (err) {
        FUZZ_ASSERT(*err);
    }
    apr_pool_clear(fuzz_pool);
    return 0;
}
