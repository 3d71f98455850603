/* mod_rmsync: PLACEHOLDER sync engine (the foundation's runner loop).
 *
 * It only keeps the runner's contract: heartbeat every second, count the parent's cycle ticks,
 * return on stop or EOF. The engine engineer replaces this file with the real loop, keeping the
 * rmsync_engine_main() signature from rmsync_engine.h.
 */
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "rmsync_engine.h"
#include "rmsync_log.h"

apr_status_t rmsync_engine_main(rmsync_engine_env_t *env, apr_pool_t *pool)
{
    apr_time_t last_beat = 0;
    char buf[64];

    (void)pool;
    rmsync_log(RMSYNC_LOG_INFO, 0, "runner %ld: placeholder engine started (generation %u)",
               (long)getpid(), (unsigned)env->generation);
    rmsync_shm_runner_heartbeat(env->shm, env->mutex, apr_time_now(), RMSYNC_RUNNER_IDLE,
                                "idle (placeholder engine)");
    while (!*env->stop) {
        struct pollfd pfd;
        int n;
        apr_time_t now;

        pfd.fd = env->tick_fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        n = poll(&pfd, 1, 1000);
        if (n < 0 && errno != EINTR) {
            rmsync_log(RMSYNC_LOG_ERR, APR_FROM_OS_ERROR(errno),
                       RMSYNC_LOGNO(00090) "runner: poll on the cycle pipe failed");
            return APR_FROM_OS_ERROR(errno);
        }
        now = apr_time_now();
        if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t r = read(env->tick_fd, buf, sizeof(buf));
            if (r == 0) {
                rmsync_log(RMSYNC_LOG_INFO, 0, "runner %ld: parent gone (pipe EOF), exiting",
                           (long)getpid());
                break;
            }
            if (r > 0) {
                rmsync_shm_runner_cycles(env->shm, env->mutex, (apr_uint32_t)r, now);
                rmsync_log(RMSYNC_LOG_DEBUG, 0, "runner: %d cycle tick(s)", (int)r);
                last_beat = now;
            }
            else if (errno != EINTR && errno != EAGAIN) {
                rmsync_log(RMSYNC_LOG_ERR, APR_FROM_OS_ERROR(errno),
                           RMSYNC_LOGNO(00091) "runner: read from the cycle pipe failed");
                return APR_FROM_OS_ERROR(errno);
            }
        }
        if (now - last_beat >= apr_time_from_sec(1)) {
            rmsync_shm_runner_heartbeat(env->shm, env->mutex, now, -1, NULL);
            last_beat = now;
        }
    }
    rmsync_shm_runner_heartbeat(env->shm, env->mutex, apr_time_now(), RMSYNC_RUNNER_STOPPING,
                                "stopping");
    return APR_SUCCESS;
}
