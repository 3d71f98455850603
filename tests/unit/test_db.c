/* Unit tests for mod_rmsync/core/rmsync_db.c that need no server: the statement registry,
 * result accessors, fail-fast EDOWN with backoff against a closed port, the pool's bounds.
 * The live-server behaviour is covered by tests/test_db_layer.py (build/tools/dbcheck). */
#include <check.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <pthread.h>
#include <apr_general.h>
#include <apr_strings.h>
#include "rmsync_db.h"
#include "rmsync_log.h"
#include "unit_main.h"

static apr_pool_t *pool;

static void quiet(void *b, const char *f, int l, int level, apr_status_t rv, const char *msg) {}

static void setup(void)
{
    apr_pool_create(&pool, NULL);
    rmsync_log_set_sink(quiet, NULL, RMSYNC_LOG_DEBUG);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

/* A loopback port nobody listens on (bound then closed). */
static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

START_TEST(registry_rules)
{
    static const rmsync_db_stmt_t a[] = { { "u_one", "SELECT $1", 1 }, { "u_two", "SELECT 2", 0 } };
    static const rmsync_db_stmt_t clash[] = { { "u_one", "SELECT 1", 0 } };
    static const rmsync_db_stmt_t bad[] = { { "", "SELECT 1", 0 } };
    ck_assert_int_eq(rmsync_db_register(a, 2), APR_SUCCESS);
    ck_assert_int_eq(rmsync_db_register(a, 2), APR_SUCCESS);      /* idempotent */
    ck_assert_int_eq(rmsync_db_register(clash, 1), APR_EEXIST);
    ck_assert_int_eq(rmsync_db_register(bad, 1), APR_EINVAL);
}
END_TEST

START_TEST(unknown_statement_needs_no_server)
{
    rmsync_db_t *db;
    rmsync_db_result_t *r = (void *)1;
    ck_assert_int_eq(rmsync_db_open(&db, pool, "host=127.0.0.1 port=1 dbname=x", 1, 0), APR_SUCCESS);
    ck_assert_int_eq(rmsync_db_exec(db, pool, "u_nope", RMSYNC_DB_NOPARAMS, &r), RMSYNC_DB_ENOSTMT);
    ck_assert_ptr_null(r);
    ck_assert_str_eq(rmsync_db_sqlstate(db), "26000");
    ck_assert(!rmsync_db_is_connected(db));
}
END_TEST

START_TEST(accessors)
{
    const char *cols[] = { "a", "b" };
    const char *vals[] = { "1", NULL, "3", "4" };
    rmsync_db_result_t r = { 2, 2, cols, vals, 0, "SELECT 2" };
    ck_assert_str_eq(rmsync_db_value(&r, 0, 0), "1");
    ck_assert_ptr_null(rmsync_db_value(&r, 0, 1));
    ck_assert_str_eq(rmsync_db_get(&r, 1, "b"), "4");
    ck_assert_ptr_null(rmsync_db_get(&r, 1, "zz"));
    ck_assert_ptr_null(rmsync_db_value(&r, 2, 0));
    ck_assert_ptr_null(rmsync_db_value(&r, -1, 0));
    ck_assert_ptr_null(rmsync_db_value(NULL, 0, 0));
    ck_assert_int_eq(rmsync_db_col(&r, "b"), 1);
}
END_TEST

START_TEST(down_fast_with_backoff)
{
    rmsync_db_t *db;
    apr_time_t t0;
    char *ci = apr_psprintf(pool, "host=127.0.0.1 port=%d dbname=x user=x password=secret", closed_port());
    ck_assert_int_eq(rmsync_db_open(&db, pool, ci, 2, 1000), APR_SUCCESS);
    rmsync_db_set_backoff(db, apr_time_from_msec(200), apr_time_from_msec(400));
    t0 = apr_time_now();
    ck_assert_int_eq(rmsync_db_ping(db), RMSYNC_DB_EDOWN);
    ck_assert(apr_time_now() - t0 < apr_time_from_sec(1));
    ck_assert_str_eq(rmsync_db_sqlstate(db), "08001");
    ck_assert_ptr_null(strstr(rmsync_db_errmsg(db), "secret"));
    /* inside the backoff: no connect attempt, still EDOWN and says so */
    ck_assert_int_eq(rmsync_db_ping(db), RMSYNC_DB_EDOWN);
    ck_assert_ptr_nonnull(strstr(rmsync_db_errmsg(db), "next connect attempt"));
    ck_assert_int_eq(rmsync_db_socket(db), -1);
    ck_assert_int_eq(rmsync_db_begin(db), RMSYNC_DB_EDOWN);
    ck_assert(!rmsync_db_in_txn(db));
    ck_assert_int_eq(rmsync_db_rollback(db), APR_SUCCESS);
    ck_assert_int_eq(rmsync_db_wait(db, apr_time_from_msec(10)), RMSYNC_DB_EDOWN);
    ck_assert_int_eq((int)rmsync_db_generation(db), 0);
    /* after the backoff it tries again (and fails again, with a real libpq message) */
    apr_sleep(apr_time_from_msec(250));
    ck_assert_int_eq(rmsync_db_ping(db), RMSYNC_DB_EDOWN);
    ck_assert_ptr_null(strstr(rmsync_db_errmsg(db), "next connect attempt"));
}
END_TEST

/* A server that accepts, reads libpq's startup packet and, 300 ms later, sends the first byte
 * of an answer and nothing more: libpq waits for the rest until the connect timeout. */
static void *half_answer(void *data)
{
    int lfd = *(int *)data, fd = accept(lfd, NULL, NULL);
    char buf[512];

    if (fd >= 0) {
        (void)!read(fd, buf, sizeof(buf));
        usleep(300 * 1000);
        (void)!write(fd, "R", 1);
        usleep(3000 * 1000);            /* hold the connection past the timeout */
        close(fd);
    }
    return NULL;
}

/* The connect gives up after the configured timeout, to the millisecond. libpq's own
 * connect_timeout counts whole clock seconds: started at x.85 s with "2", a wait begun after
 * the first byte (at x+1.15) got a poll of (x+2 - (x+1)) s and gave up at x+2.15, 1.3 s in
 * (CI: the webhook's 2 s connects to a server slow to authenticate failed after 1.1 s). */
START_TEST(connect_timeout_is_exact)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    pthread_t t;
    rmsync_db_t *db;
    apr_interval_time_t took;
    apr_time_t t0;
    char *ci;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    ck_assert_int_eq(pthread_create(&t, NULL, half_answer, &fd), 0);
    ci = apr_psprintf(pool, "host=127.0.0.1 port=%d dbname=x user=x sslmode=disable",
                      ntohs(a.sin_port));
    ck_assert_int_eq(rmsync_db_open(&db, pool, ci, 2, 1000), APR_SUCCESS);
    while (apr_time_now() % APR_USEC_PER_SEC < 850000
           || apr_time_now() % APR_USEC_PER_SEC > 900000) {
        usleep(5000);                   /* start at x.85 s: where whole seconds cut short */
    }
    t0 = apr_time_now();
    ck_assert_int_eq(rmsync_db_ping(db), RMSYNC_DB_EDOWN);
    took = apr_time_now() - t0;
    ck_assert_msg(took >= apr_time_from_msec(1950) && took < apr_time_from_msec(2600),
                  "connect gave up after %d ms, not 2000", (int)apr_time_as_msec(took));
    ck_assert_ptr_nonnull(strstr(rmsync_db_errmsg(db), "timeout"));
    pthread_join(t, NULL);
    close(fd);
}
END_TEST

START_TEST(pool_bounds_without_server)
{
    rmsync_db_pool_t *dbp;
    rmsync_db_t *a, *b, *c;
    int created, idle;
    ck_assert_int_eq(rmsync_db_pool_create(&dbp, pool, "host=127.0.0.1 port=1", 1, 0, 0), APR_EINVAL);
    ck_assert_int_eq(rmsync_db_pool_create(&dbp, pool, "host=127.0.0.1 port=1", 1, 0, 2), APR_SUCCESS);
    ck_assert_int_eq(rmsync_db_pool_get(dbp, 0, &a), APR_SUCCESS);   /* lazily: no connect */
    ck_assert_int_eq(rmsync_db_pool_get(dbp, 0, &b), APR_SUCCESS);
    ck_assert_int_eq(rmsync_db_pool_get(dbp, apr_time_from_msec(20), &c), APR_TIMEUP);
    rmsync_db_pool_release(dbp, b);
    ck_assert_int_eq(rmsync_db_pool_get(dbp, 0, &c), APR_SUCCESS);
    ck_assert_ptr_eq(c, b);
    rmsync_db_pool_release(dbp, a);
    rmsync_db_pool_release(dbp, c);
    rmsync_db_pool_stats(dbp, &created, &idle);
    ck_assert_int_eq(created, 2);
    ck_assert_int_eq(idle, 2);
}
END_TEST

RMSYNC_UNIT_MAIN("rmsync_db", "core", setup, teardown, 20,
                 registry_rules, unknown_statement_needs_no_server, accessors,
                 down_fast_with_backoff, pool_bounds_without_server, connect_timeout_is_exact)
