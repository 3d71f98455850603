/* mod_rmsync test tool: run the sync engine (rmsync_engine_main) outside Apache.
 *
 *   engine_runner --db CONNINFO --graph URL --authority URL --tenant T --client-id C
 *                 --secret-file F [--ca FILE] [--cycle S] [--from -30d|YYYY-MM-DD]
 *                 [--window DAYS] [--workers N] [--delete-policy delete|cancel|unlink]
 *                 [--cancel-policy cancel|delete] [--breaker COUNT PERCENT] [--log-file F]
 *                 [--debug] [--master-user U] [--permission-set P]
 *
 * No shm, no parent: stops on SIGTERM/SIGINT. Used by the engine's development loop and the
 * benchmarks; the integration tests run the real runner under Apache.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "rmsync_log.h"
#include "rmsync_settings.h"
#include "rmsync_engine.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void sink(void *baton, const char *file, int line, int level, apr_status_t rv,
                 const char *msg)
{
    char err[128] = "";
    (void)baton; (void)file; (void)line;
    if (rv) apr_strerror(rv, err, sizeof(err));
    fprintf(stderr, "[engine_runner:%d] %s%s%s\n", level, msg, rv ? ": " : "", err);
}

static void usage(void)
{
    fprintf(stderr, "usage: engine_runner --db CONNINFO --graph URL --authority URL --tenant T "
                    "--client-id C --secret-file F [options] (see the source header)\n");
    exit(2);
}

int main(int argc, const char *const *argv)
{
    apr_pool_t *pool;
    rmsync_settings_t s;
    rmsync_engine_env_t env;
    struct sigaction sa;
    int pfd[2], i, debug = 0;
    const char *err;
    apr_status_t rv;

    apr_app_initialize(&argc, &argv, NULL);
    apr_pool_create(&pool, NULL);
    rmsync_settings_defaults(&s);
    s.enabled = 1;
    for (i = 1; i < argc; ++i) {
        const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage(), ""))
        if (!strcmp(a, "--db")) s.db_conninfo = NEXT();
        else if (!strcmp(a, "--graph")) s.graph_url = NEXT();
        else if (!strcmp(a, "--authority")) s.authority_url = NEXT();
        else if (!strcmp(a, "--tenant")) s.tenant = NEXT();
        else if (!strcmp(a, "--client-id")) s.client_id = NEXT();
        else if (!strcmp(a, "--secret-file")) {
            s.client_secret_file = NEXT();
            if ((err = rmsync_read_secret_file(pool, s.client_secret_file, &s.client_secret))) {
                fprintf(stderr, "engine_runner: %s\n", err);
                return 2;
            }
        }
        else if (!strcmp(a, "--ca")) s.ca_file = NEXT();
        else if (!strcmp(a, "--cycle")) s.cycle_s = atoi(NEXT());
        else if (!strcmp(a, "--from")) s.initial_sync_from = NEXT();
        else if (!strcmp(a, "--window")) s.window_days = atoi(NEXT());
        else if (!strcmp(a, "--workers")) s.graph_parallel_mailboxes = atoi(NEXT());
        else if (!strcmp(a, "--delete-policy")) {
            if ((err = rmsync_parse_delete_policy(pool, NEXT(), &s.delete_policy))) usage();
        }
        else if (!strcmp(a, "--cancel-policy")) {
            if ((err = rmsync_parse_cancel_policy(pool, NEXT(), &s.cancel_policy))) usage();
        }
        else if (!strcmp(a, "--breaker")) {
            s.breaker_count = atoi(NEXT());
            s.breaker_percent = atoi(NEXT());
        }
        else if (!strcmp(a, "--log-file")) s.log_file = NEXT();
        else if (!strcmp(a, "--debug")) { s.log_debug = 1; debug = 1; }
        else if (!strcmp(a, "--master-user")) s.master_user = NEXT();
        else if (!strcmp(a, "--permission-set")) s.permission_set = NEXT();
        else usage();
#undef NEXT
    }
    if (!s.db_conninfo || !s.tenant || !s.client_id || !s.client_secret) usage();
    rmsync_log_set_sink(sink, NULL, debug ? RMSYNC_LOG_DEBUG : RMSYNC_LOG_INFO);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (pipe(pfd) != 0) return 1;                 /* no ticks; we keep the write end: no EOF */

    memset(&env, 0, sizeof(env));
    env.settings = &s;
    env.tick_fd = pfd[0];
    env.generation = 1;
    env.stop = &stop_flag;
    rv = rmsync_engine_main(&env, pool);
    apr_pool_destroy(pool);
    apr_terminate();
    return rv == APR_SUCCESS ? 0 : 1;
}
