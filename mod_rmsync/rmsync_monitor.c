/* mod_rmsync: runs in the httpd parent (post_config forks the runner, the monitor hook
 * supervises it) and, after the fork, in the runner (runner_child_main runs the engine).
 * The sync runner process and its supervision (DESIGN.md section 2).
 *
 * The parent forks the runner in the real post_config pass. The runner resets the signal
 * handlers it inherited, closes the listeners, drops privileges and runs the engine. The
 * parent supervises it from the monitor hook (about every 10 s): a dead runner is respawned
 * (with backoff when it keeps dying quickly), a hung one (heartbeat older than
 * RMSyncRunnerStallTimeout) is sent SIGTERM, SIGKILL after a grace, and then respawned like a dead
 * one, and a cycle byte is written into the runner's pipe every RMSyncSyncCycle seconds. The hook
 * never touches network or DB, never blocks, reads from shm only the heartbeat word (atomically,
 * no mutex: a hung runner may hold it) and allocates only from a private pool. A pconf
 * pre-cleanup stops and reaps the runner, so graceful restarts replace it and stop leaves no
 * orphan; EOF on the pipe tells the runner the parent is gone.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "ap_listen.h"
#include "ap_mpm.h"
#include "mpm_common.h"

#include <apr_thread_proc.h>
#include <apr_portable.h>
#include <apr_signal.h>
#include <apr_strings.h>

#include "rmsync.h"
#include "rmsync_log.h"
#include "mod_rmsync_shm.h"
#include "rmsync_engine.h"
#include "mod_rmsync_monitor.h"

APLOG_USE_MODULE(rmsync);

#define QUICK_DEATH_SEC   10    /* a runner dying sooner than this counts as a failed start */
#define BACKOFF_MAX_SEC   300
#define STOP_WAIT_MS      5000  /* SIGTERM -> SIGKILL */
#define STALL_GRACE_SEC   10    /* stalled runner: SIGTERM -> SIGKILL (at the next hook run) */

/* Parent-side bookkeeping. Statics are reset on every restart (the DSO is reloaded). */
typedef struct runner_state_t {
    int enabled;
    pid_t parent_pid;
    server_rec *s;
    const rmsync_settings_t *settings;
    apr_uint32_t generation;
    apr_pool_t *pool;            /* private pool with its own allocator: respawn bookkeeping */
    apr_proc_t *proc;            /* current runner (in pool) */
    apr_file_t *tick_w;          /* parent's end of the pipe (non-blocking) */
    int alive;
    apr_time_t started;
    apr_time_t next_spawn;
    apr_time_t last_tick;
    int quick_deaths;
    int spawns;
    apr_time_t stall_term;       /* when a stalled runner was sent SIGTERM, 0 = not stalled */
    int stall_killed;            /* ... and SIGKILL */
} runner_state_t;

static runner_state_t R;

/* Runner-side stop flag (SIGTERM/SIGINT/SIGHUP). */
static volatile sig_atomic_t runner_stop;

static void runner_on_signal(int sig)
{
    (void)sig;
    runner_stop = 1;
}

static void set_signal(int sig, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;   /* no SA_RESTART: a signal interrupts poll() so the engine sees stop */
    sigaction(sig, &sa, NULL);
}

static void runner_child_main(apr_file_t *tick_r, apr_file_t *tick_w) __attribute__((noreturn));

/* This node's name in rmsync.node (the status page of every node lists all nodes' runners):
 * host name and the first listening port, e.g. "web1:443", so that two instances on one host
 * differ. */
static const char *runner_node_id(apr_pool_t *p)
{
    char host[APRMAXHOSTLEN + 1];
    apr_port_t port = ap_listeners && ap_listeners->bind_addr ? ap_listeners->bind_addr->port
                                                              : R.s->port;
    if (apr_gethostname(host, sizeof(host), p) != APR_SUCCESS) {
        apr_cpystrn(host, R.s->server_hostname ? R.s->server_hostname : "localhost",
                    sizeof(host));
    }
    return apr_psprintf(p, "%s:%u", host, (unsigned)port);
}

static void runner_child_main(apr_file_t *tick_r, apr_file_t *tick_w)
{
    static const int reset[] = { SIGTERM, SIGHUP, SIGUSR1, SIGINT, SIGWINCH, SIGPIPE,
                                 SIGCHLD, SIGALRM };
    rmsync_engine_env_t env;
    apr_pool_t *pool;
    apr_os_file_t fd;
    const char *node_id;
    sigset_t none;
    apr_status_t rv;
    size_t i;

    /* 1. The parent's signal handlers must not run here (its restart logic would misfire). */
    for (i = 0; i < sizeof(reset) / sizeof(reset[0]); i++) {
        set_signal(reset[i], SIG_DFL);
    }
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    runner_stop = 0;
    set_signal(SIGTERM, runner_on_signal);
    set_signal(SIGINT, runner_on_signal);
    set_signal(SIGHUP, runner_on_signal);
    set_signal(SIGUSR1, SIG_IGN);   /* graceful signals meant for httpd children */
    set_signal(SIGWINCH, SIG_IGN);
    set_signal(SIGPIPE, SIG_IGN);

#ifdef __linux__
    /* visible as the process name (ps -o comm, /proc/PID/comm): admins and tests find it */
    prctl(PR_SET_NAME, "rmsync-runner", 0, 0, 0);
#endif
    /* 2. Our end of the pipe only; no listening sockets. */
    apr_file_close(tick_w);

    apr_pool_create(&pool, NULL);
    apr_pool_tag(pool, "rmsync_runner");
    node_id = runner_node_id(pool);       /* before the listeners go: it names their port */
    ap_close_listeners();

    /* 3. Run as User/Group. */
    if (ap_run_drop_privileges(pool, R.s)) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, R.s, RMSYNC_LOGNO(00030)
                     "runner: cannot drop privileges, exiting");
        _exit(APEXIT_CHILDFATAL);
    }
#ifdef __linux__
    /* Belt and braces for "parent gone": besides EOF on the pipe (which another process
     * forked later by the parent could keep open), ask the kernel for SIGTERM when the parent
     * dies. Set after the uid change, which clears it; then check we did not miss it. */
    prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
    if (getppid() != R.parent_pid) {
        _exit(0);
    }
#endif
    if (rmsync_shm_child_init(pool, R.s) != APR_SUCCESS) {
        _exit(APEXIT_CHILDFATAL);
    }
    rmsync_shm_runner_begin(rmsync_shm_get(), rmsync_shm_mutex(), (apr_uint32_t)getpid(),
                            apr_time_now());
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, R.s, "runner %ld started (uid %ld, generation %u)",
                 (long)getpid(), (long)getuid(), (unsigned)R.generation);

    apr_os_file_get(&fd, tick_r);
    memset(&env, 0, sizeof(env));
    env.settings = R.settings;
    env.tick_fd = fd;
    env.shm = rmsync_shm_get();
    env.mutex = env.shm ? rmsync_shm_mutex() : NULL;
    env.generation = R.generation;
    env.stop = &runner_stop;
    env.node_id = node_id;

    rv = rmsync_engine_main(&env, pool);
    rmsync_shm_runner_heartbeat(env.shm, env.mutex, apr_time_now(), RMSYNC_RUNNER_STOPPED,
                                "stopped");
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, R.s, RMSYNC_LOGNO(00031)
                     "runner %ld: engine failed, exiting", (long)getpid());
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, R.s, "runner %ld exiting", (long)getpid());
    }
    /* _exit: never run the parent's pool cleanups / atexit handlers in this process. */
    _exit(rv == APR_SUCCESS ? 0 : 1);
}

/* Called by the MPM (from its reaping loop) about the runner. */
static void runner_maintenance(int reason, void *data, int status)
{
    apr_proc_t *proc = data;
    apr_time_t now;
    pid_t pid = proc->pid;
    int mpm_state = 0;

    switch (reason) {
    case APR_OC_REASON_DEATH:
    case APR_OC_REASON_LOST:
        apr_proc_other_child_unregister(data);
        if (!R.alive || proc != R.proc) {
            return;
        }
        now = apr_time_now();
        R.alive = 0;
        R.proc = NULL;
        if (now - R.started < apr_time_from_sec(QUICK_DEATH_SEC)) {
            R.quick_deaths++;
        }
        else {
            R.quick_deaths = 0;
        }
        /* first quick death: retry at once; then 10, 20, 40 ... 300 s */
        if (R.quick_deaths <= 1) {
            R.next_spawn = now;
        }
        else {
            int shift = R.quick_deaths - 2 > 5 ? 5 : R.quick_deaths - 2;
            int delay = 10 << shift;
            R.next_spawn = now + apr_time_from_sec(delay > BACKOFF_MAX_SEC ? BACKOFF_MAX_SEC
                                                                            : delay);
        }
        if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) == APR_SUCCESS
            && mpm_state == AP_MPMQ_STOPPING) {
            /* shutting down / restarting (prefork signals the whole process group) */
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, R.s, "runner %ld ended during shutdown",
                         (long)pid);
        }
        else if (reason == APR_OC_REASON_LOST) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, R.s, RMSYNC_LOGNO(00032)
                         "runner %ld lost, will respawn", (long)pid);
        }
        else if (WIFSIGNALED(status)) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, R.s, RMSYNC_LOGNO(00033)
                         "runner %ld killed by signal %d, will respawn in %ld s", (long)pid,
                         WTERMSIG(status), (long)apr_time_sec(R.next_spawn - now));
        }
        else {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, R.s, RMSYNC_LOGNO(00034)
                         "runner %ld exited with status %d, will respawn in %ld s", (long)pid,
                         WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                         (long)apr_time_sec(R.next_spawn - now));
        }
        break;
    default:
        /* RESTART / RUNNING / UNWRITABLE / UNREGISTER: the pconf pre-cleanup handles stops */
        break;
    }
}

static apr_status_t runner_spawn(void)
{
    apr_file_t *tick_r, *tick_w;
    apr_proc_t *proc;
    apr_status_t rv;

    /* drop the previous runner's pipe and registration; keeps memory flat across respawns */
    apr_pool_clear(R.pool);
    R.tick_w = NULL;
    R.proc = NULL;

    /* read end blocking (runner), write end non-blocking (parent never blocks on it) */
    rv = apr_file_pipe_create_ex(&tick_r, &tick_w, APR_READ_BLOCK, R.pool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, R.s, RMSYNC_LOGNO(00035)
                     "cannot create the runner pipe");
        return rv;
    }
    proc = apr_pcalloc(R.pool, sizeof(*proc));
    rv = apr_proc_fork(proc, R.pool);
    if (rv == APR_INCHILD) {
        runner_child_main(tick_r, tick_w);   /* never returns */
    }
    if (rv != APR_INPARENT) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, R.s, RMSYNC_LOGNO(00036)
                     "cannot fork the sync runner");
        apr_file_close(tick_r);
        apr_file_close(tick_w);
        return rv;
    }
    apr_file_close(tick_r);
    R.tick_w = tick_w;
    R.proc = proc;
    R.alive = 1;
    R.started = apr_time_now();
    R.last_tick = R.started;
    R.stall_term = 0;
    R.stall_killed = 0;
    R.spawns++;
    apr_proc_other_child_register(proc, runner_maintenance, proc, NULL, R.pool);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, R.s, "forked sync runner %ld (spawn %d)",
                 (long)proc->pid, R.spawns);
    return APR_SUCCESS;
}

/* pconf pre-cleanup: stop and reap the runner (graceful, restart, stop). */
static apr_status_t runner_stop_cleanup(void *data)
{
    pid_t pid;
    int status, waited = 0;

    (void)data;
    if (getpid() != R.parent_pid) {
        return APR_SUCCESS;   /* an exiting child running pconf cleanups: not ours to stop */
    }
    R.enabled = 0;
    if (!R.alive || !R.proc) {
        return APR_SUCCESS;
    }
    pid = R.proc->pid;
    apr_proc_other_child_unregister(R.proc);
    R.alive = 0;
    R.proc = NULL;
    if (R.tick_w) {
        apr_file_close(R.tick_w);   /* EOF for the runner, in case it misses the signal */
        R.tick_w = NULL;
    }
    kill(pid, SIGTERM);
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid || (w < 0 && errno != EINTR)) {
            break;        /* reaped, or already reaped by the MPM (ECHILD) */
        }
        if (waited >= STOP_WAIT_MS) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, R.s, RMSYNC_LOGNO(00037)
                         "runner %ld did not stop within %d ms, killing it", (long)pid,
                         STOP_WAIT_MS);
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            break;
        }
        apr_sleep(apr_time_from_msec(20));
        waited += 20;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, R.s, "sync runner %ld stopped after %d ms",
                 (long)pid, waited);
    return APR_SUCCESS;
}

apr_status_t rmsync_monitor_post_config(apr_pool_t *pconf, server_rec *s,
                                        const rmsync_settings_t *settings,
                                        apr_uint32_t generation)
{
    apr_allocator_t *alloc;
    apr_status_t rv;

    memset(&R, 0, sizeof(R));
    R.s = s;
    R.settings = settings;
    R.generation = generation;
    R.parent_pid = getpid();
    if (!settings->enabled) {
        return APR_SUCCESS;   /* notice logged by rmsync_config_log_warnings() */
    }
    if ((rv = apr_allocator_create(&alloc)) != APR_SUCCESS
        || (rv = apr_pool_create_ex(&R.pool, pconf, NULL, alloc)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s, RMSYNC_LOGNO(00038)
                     "cannot create the runner pool");
        return rv;
    }
    apr_allocator_owner_set(alloc, R.pool);
    apr_allocator_max_free_set(alloc, 64 * 1024);
    apr_pool_tag(R.pool, "rmsync_supervisor");
    /* registered after the shm teardown, so it runs before it (pre-cleanups are LIFO) */
    apr_pool_pre_cleanup_register(pconf, NULL, runner_stop_cleanup);
    R.enabled = 1;
    rv = runner_spawn();
    if (rv != APR_SUCCESS) {
        /* not fatal: the monitor hook retries */
        R.quick_deaths = 1;
        R.next_spawn = apr_time_now() + apr_time_from_sec(10);
    }
    return APR_SUCCESS;
}

void rmsync_monitor_child_init(apr_pool_t *pchild, server_rec *s)
{
    (void)pchild;
    (void)s;
    if (getpid() == R.parent_pid) {
        return;   /* -X / one_process: the "child" is the parent itself, keep the pipe */
    }
    /* Worker children must not hold the write end: the runner's EOF means "parent gone". */
    if (R.tick_w) {
        apr_file_close(R.tick_w);
        R.tick_w = NULL;
    }
    R.enabled = 0;
    R.alive = 0;
    R.proc = NULL;
}

/* A runner alive but without a heartbeat for RMSyncRunnerStallTimeout (deadlock, endless loop,
 * SIGSTOP): SIGTERM now (plus SIGCONT, so a stopped one can act on it), SIGKILL at the first
 * hook run STALL_GRACE_SEC later. The MPM's reaping then reports its death and the usual
 * respawn follows. Never waits: this runs in the MPM's main loop. */
static void check_stall(apr_time_t now)
{
    apr_time_t beat, last;
    pid_t pid;

    if (R.settings->runner_stall_s <= 0 || !R.proc) {
        return;
    }
    pid = R.proc->pid;   /* our own record from fork(), never a pid from shm */
    if (R.stall_term) {
        if (!R.stall_killed && now - R.stall_term >= apr_time_from_sec(STALL_GRACE_SEC)) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, R.s, RMSYNC_LOGNO(00041)
                         "stalled runner %ld did not stop %ld s after SIGTERM, killing it",
                         (long)pid, (long)apr_time_sec(now - R.stall_term));
            kill(pid, SIGKILL);
            R.stall_killed = 1;
        }
        return;
    }
    beat = rmsync_shm_runner_heartbeat_peek(rmsync_shm_get());
    /* a beat from before this runner started (its predecessor's) counts as its start */
    last = beat > R.started ? beat : R.started;
    if (now - last <= apr_time_from_sec(R.settings->runner_stall_s)) {
        return;
    }
    ap_log_error(APLOG_MARK, APLOG_ERR, 0, R.s, RMSYNC_LOGNO(00040)
                 "runner %ld stalled: no heartbeat for %ld s (RMSyncRunnerStallTimeout %d s); "
                 "stopping it (SIGTERM, SIGKILL after %d s) to start a new one", (long)pid,
                 (long)apr_time_sec(now - last), R.settings->runner_stall_s, STALL_GRACE_SEC);
    kill(pid, SIGTERM);
    kill(pid, SIGCONT);
    R.stall_term = now;
}

int rmsync_monitor_hook(apr_pool_t *p, server_rec *s)
{
    apr_time_t now;
    int mpm_state = 0;

    (void)p;   /* pconf: never allocate from it here */
    (void)s;
    if (!R.enabled || getpid() != R.parent_pid) {
        return DECLINED;
    }
    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) == APR_SUCCESS
        && mpm_state == AP_MPMQ_STOPPING) {
        return DECLINED;
    }
    now = apr_time_now();
    if (!R.alive) {
        if (now >= R.next_spawn) {
            ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, R.s, RMSYNC_LOGNO(00039)
                         "respawning the sync runner");
            if (runner_spawn() != APR_SUCCESS) {
                R.quick_deaths++;
                R.next_spawn = now + apr_time_from_sec(30);
            }
        }
        return OK;
    }
    check_stall(now);
    if (R.tick_w && now - R.last_tick >= apr_time_from_sec(R.settings->cycle_s)) {
        apr_os_file_t fd;
        ssize_t n;
        apr_os_file_get(&fd, R.tick_w);
        n = write(fd, "c", 1);   /* non-blocking; a full pipe just loses a tick */
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            ap_log_error(APLOG_MARK, APLOG_DEBUG, APR_FROM_OS_ERROR(errno), R.s,
                         "cannot write the cycle tick");
        }
        R.last_tick = now;
    }
    return OK;
}
