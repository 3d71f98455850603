/* Unit tests for the shm layout helpers (core/rmsync_shm_layout.c). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stddef.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_pools.h>
#include <apr_global_mutex.h>
#include "rmsync_shm.h"
#include "unit_main.h"

static apr_pool_t *p;

static void setup(void)
{
    apr_pool_create(&p, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(p);
}

static rmsync_shm_t *make(int reps)
{
    apr_size_t n = rmsync_shm_size(reps);
    unsigned char csrf[RMSYNC_SHM_CSRF_LEN];
    void *mem;
    memset(csrf, 0xab, sizeof(csrf));
    ck_assert_uint_gt(n, 0);
    mem = apr_palloc(p, n);
    memset(mem, 0x5a, n);   /* init must not depend on zeroed memory */
    ck_assert_int_eq(rmsync_shm_init(mem, n, reps, 7, csrf, apr_time_from_sec(100)), APR_SUCCESS);
    return mem;
}

START_TEST(size_and_init)
{
    rmsync_shm_t *s;
    ck_assert_uint_eq(rmsync_shm_size(0), 0);
    ck_assert_uint_eq(rmsync_shm_size(-1), 0);
    ck_assert_uint_eq(rmsync_shm_size(RMSYNC_SHM_MAX_REPS_LIMIT + 1), 0);
    ck_assert_uint_eq(rmsync_shm_size(10) - rmsync_shm_size(9), sizeof(rmsync_shm_rep_t));
    ck_assert_uint_ge(rmsync_shm_size(1), sizeof(rmsync_shm_t) + sizeof(rmsync_shm_rep_t));
    s = make(10);
    ck_assert_uint_eq(s->hdr.magic, RMSYNC_SHM_MAGIC);
    ck_assert_uint_eq(s->hdr.layout_version, RMSYNC_SHM_LAYOUT_VERSION);
    ck_assert_uint_eq(s->hdr.total_size, rmsync_shm_size(10));
    ck_assert_uint_eq(s->hdr.generation, 7);
    ck_assert_uint_eq(s->hdr.rep_capacity, 10);
    ck_assert_uint_eq(s->rep_count, 0);
    ck_assert_uint_eq(s->runner.pid, 0);
    ck_assert_uint_eq(s->csrf_secret[0], 0xab);
    ck_assert_uint_eq(rmsync_shm_counter_get(s, RMSYNC_CTR_GRAPH_429), 0);
    ck_assert_int_eq(rmsync_shm_validate(s, rmsync_shm_size(10)), APR_SUCCESS);
    /* too small a buffer */
    ck_assert_int_ne(rmsync_shm_init(s, rmsync_shm_size(10) - 1, 10, 1, NULL, 0), APR_SUCCESS);
}
END_TEST

START_TEST(validate_rejects)
{
    rmsync_shm_t *s = make(4);
    apr_size_t n = rmsync_shm_size(4);
    ck_assert_int_ne(rmsync_shm_validate(s, n - 1), APR_SUCCESS);
    s->hdr.magic ^= 1;
    ck_assert_int_ne(rmsync_shm_validate(s, n), APR_SUCCESS);
    s->hdr.magic ^= 1;
    s->hdr.layout_version++;
    ck_assert_int_ne(rmsync_shm_validate(s, n), APR_SUCCESS);
    s->hdr.layout_version--;
    s->hdr.rep_capacity = 5;
    ck_assert_int_ne(rmsync_shm_validate(s, n), APR_SUCCESS);
    s->hdr.rep_capacity = 4;
    s->rep_count = 5;
    ck_assert_int_ne(rmsync_shm_validate(s, n), APR_SUCCESS);
    s->rep_count = 0;
    ck_assert_int_eq(rmsync_shm_validate(s, n), APR_SUCCESS);
    ck_assert_int_ne(rmsync_shm_validate(NULL, n), APR_SUCCESS);
}
END_TEST

START_TEST(counters)
{
    rmsync_shm_t *s = make(2);
    int i;
    rmsync_shm_counter_inc(s, RMSYNC_CTR_GRAPH_2XX);
    rmsync_shm_counter_add(s, RMSYNC_CTR_GRAPH_2XX, 41);
    rmsync_shm_counter_set(s, RMSYNC_CTR_QUEUE_DEPTH, 9);
    rmsync_shm_counter_inc(s, RMSYNC_CTR__COUNT);   /* out of range: ignored */
    rmsync_shm_counter_inc(NULL, RMSYNC_CTR_ERRORS);
    ck_assert_uint_eq(rmsync_shm_counter_get(s, RMSYNC_CTR_GRAPH_2XX), 42);
    ck_assert_uint_eq(rmsync_shm_counter_get(s, RMSYNC_CTR_QUEUE_DEPTH), 9);
    ck_assert(rmsync_shm_counter_is_gauge(RMSYNC_CTR_QUEUE_DEPTH));
    ck_assert(!rmsync_shm_counter_is_gauge(RMSYNC_CTR_GRAPH_2XX));
    ck_assert_ptr_null(rmsync_shm_counter_name(RMSYNC_CTR__COUNT));
    /* every counter has a distinct metrics-safe name */
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        const char *n = rmsync_shm_counter_name((rmsync_counter_e)i), *c;
        int j;
        ck_assert_ptr_nonnull(n);
        for (c = n; *c; c++) {
            ck_assert((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_');
        }
        for (j = 0; j < i; j++) {
            ck_assert_str_ne(n, rmsync_shm_counter_name((rmsync_counter_e)j));
        }
    }
    /* every counter has a label and a one-line help for the status page */
    for (i = 0; i < RMSYNC_CTR__COUNT; i++) {
        const char *help = NULL, *l = rmsync_shm_counter_label((rmsync_counter_e)i, &help);
        ck_assert_msg(help && l && strcmp(l, rmsync_shm_counter_name((rmsync_counter_e)i)),
                      "counter %s has no label/help in rmsync_shm_layout.c",
                      rmsync_shm_counter_name((rmsync_counter_e)i));
    }
    ck_assert_ptr_null(rmsync_shm_counter_label(RMSYNC_CTR__COUNT, NULL));
    ck_assert_str_eq(rmsync_runner_state_name(RMSYNC_RUNNER_IDLE), "idle");
    ck_assert_str_eq(rmsync_runner_state_name(999), "unknown");
}
END_TEST

START_TEST(runner_and_snapshot)
{
    rmsync_shm_t *s = make(3), *c = NULL;
    rmsync_shm_runner_begin(s, NULL, 4242, apr_time_from_sec(200));
    rmsync_shm_runner_heartbeat(s, NULL, apr_time_from_sec(201), RMSYNC_RUNNER_IDLE, "waiting");
    rmsync_shm_runner_cycles(s, NULL, 3, apr_time_from_sec(202));
    rmsync_shm_runner_error(s, NULL, "database down", apr_time_from_sec(203));
    ck_assert_int_eq(rmsync_shm_snapshot(s, NULL, p, &c), APR_SUCCESS);
    ck_assert_ptr_ne(c, s);
    ck_assert_uint_eq(c->runner.pid, 4242);
    ck_assert_uint_eq(c->runner.state, RMSYNC_RUNNER_IDLE);
    ck_assert(c->runner.heartbeat == apr_time_from_sec(202));
    /* the parent's lock-free read sees the same word */
    ck_assert(rmsync_shm_runner_heartbeat_peek(s) == apr_time_from_sec(202));
    ck_assert(rmsync_shm_runner_heartbeat_peek(NULL) == 0);
    ck_assert(c->runner.started == apr_time_from_sec(200));
    ck_assert_uint_eq(c->runner.cycles, 3);
    ck_assert_str_eq(c->runner.activity, "waiting");
    ck_assert_str_eq(c->runner.last_error, "database down");
    ck_assert_uint_eq(c->counters[RMSYNC_CTR_RUNNER_STARTS], 1);
    /* the snapshot is a copy: later writes do not show in it */
    rmsync_shm_runner_cycles(s, NULL, 1, apr_time_from_sec(204));
    ck_assert_uint_eq(c->runner.cycles, 3);
    /* a corrupted header is refused */
    s->hdr.magic = 0;
    ck_assert_int_ne(rmsync_shm_snapshot(s, NULL, p, &c), APR_SUCCESS);
    ck_assert_ptr_null(c);
}
END_TEST

START_TEST(strings_terminated)
{
    rmsync_shm_t *s = make(2), *c;
    char longs[1000];
    memset(longs, 'y', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    rmsync_shm_runner_heartbeat(s, NULL, 1, -1, longs);
    ck_assert_uint_eq(strlen(s->runner.activity), sizeof(s->runner.activity) - 1);
    /* a writer that forgot the terminator: the snapshot still terminates */
    memset(s->runner.last_error, 'z', sizeof(s->runner.last_error));
    ck_assert_int_eq(rmsync_shm_snapshot(s, NULL, p, &c), APR_SUCCESS);
    ck_assert_uint_eq(strlen(c->runner.last_error), sizeof(c->runner.last_error) - 1);
}
END_TEST

START_TEST(reps)
{
    rmsync_shm_t *s = make(2);
    rmsync_shm_rep_t r, out;
    int idx = -1;

    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, &idx), APR_EINVAL);   /* empty id */
    rmsync_shm_strcpy(r.representative_id, sizeof(r.representative_id), "REP1");
    rmsync_shm_strcpy(r.mailbox, sizeof(r.mailbox), "anna@example.com");
    r.state = RMSYNC_REP_OK;
    r.linked_count = 5;
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, &idx), APR_SUCCESS);
    ck_assert_int_eq(idx, 0);
    r.linked_count = 6;   /* replace by id */
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, &idx), APR_SUCCESS);
    ck_assert_int_eq(idx, 0);
    ck_assert_uint_eq(s->rep_count, 1);
    rmsync_shm_strcpy(r.representative_id, sizeof(r.representative_id), "REP2");
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, &idx), APR_SUCCESS);
    ck_assert_int_eq(idx, 1);
    rmsync_shm_strcpy(r.representative_id, sizeof(r.representative_id), "REP3");
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, &idx), APR_ENOSPC);
    ck_assert_int_eq(rmsync_shm_rep_get(s, NULL, "REP1", &out), APR_SUCCESS);
    ck_assert_uint_eq(out.linked_count, 6);
    ck_assert_str_eq(out.mailbox, "anna@example.com");
    ck_assert_int_eq(rmsync_shm_rep_get(s, NULL, "REP9", &out), APR_NOTFOUND);
    rmsync_shm_rep_clear(s, NULL);
    ck_assert_uint_eq(s->rep_count, 0);
    ck_assert_int_eq(rmsync_shm_rep_get(s, NULL, "REP1", &out), APR_NOTFOUND);
}
END_TEST

/* 10,000 slots: the id index finds each one, a full snapshot holds every slot in use, a partial
 * one only the asked-for ids and the slots in error or held (flags follow each put). */
START_TEST(index_and_partial_snapshots)
{
    rmsync_shm_t *s = make(RMSYNC_SHM_MAX_REPS_LIMIT), *c = NULL;
    rmsync_shm_rep_t r, out;
    const char *ids[] = { "R9999", "R0", "nobody", "R17", "" };
    apr_size_t bytes = 0, all = 0;
    int i, idx;

    memset(&r, 0, sizeof(r));
    for (i = 0; i < RMSYNC_SHM_MAX_REPS_LIMIT; i++) {
        apr_snprintf(r.representative_id, sizeof(r.representative_id), "R%d", i);
        r.state = i == 17 || i == 42 ? RMSYNC_REP_ERROR : RMSYNC_REP_OK;
        r.held = i == 500;
        r.linked_count = (apr_uint32_t)i;
        ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, &idx), APR_SUCCESS);
        ck_assert_int_eq(idx, i);
    }
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, &idx), APR_SUCCESS);   /* replace */
    ck_assert_uint_eq(s->rep_count, RMSYNC_SHM_MAX_REPS_LIMIT);
    for (i = 0; i < RMSYNC_SHM_MAX_REPS_LIMIT; i += 997) {
        char id[16];
        apr_snprintf(id, sizeof(id), "R%d", i);
        ck_assert_int_eq(rmsync_shm_rep_get(s, NULL, id, &out), APR_SUCCESS);
        ck_assert_uint_eq(out.linked_count, (apr_uint32_t)i);
    }
    ck_assert_int_eq(rmsync_shm_snapshot_all(s, NULL, p, &c, &all), APR_SUCCESS);
    ck_assert_uint_eq(c->rep_count, RMSYNC_SHM_MAX_REPS_LIMIT);
    ck_assert_str_eq(c->reps[9999].representative_id, "R9999");
    ck_assert_uint_eq(all, offsetof(rmsync_shm_t, reps)
                           + RMSYNC_SHM_MAX_REPS_LIMIT * sizeof(rmsync_shm_rep_t));
    /* the ids asked for, plus R17, R42 (error) and R500 (held); R17 once */
    ck_assert_int_eq(rmsync_shm_snapshot_some(s, NULL, p, ids, 5, &c, &bytes), APR_SUCCESS);
    ck_assert_uint_eq(c->rep_count, 5);
    {
        int seen = 0;
        for (i = 0; i < (int)c->rep_count; i++) {
            const char *id = c->reps[i].representative_id;
            seen |= (!strcmp(id, "R9999")) | (!strcmp(id, "R0")) << 1
                    | (!strcmp(id, "R17")) << 2 | (!strcmp(id, "R42")) << 3
                    | (!strcmp(id, "R500")) << 4;
        }
        ck_assert_int_eq(seen, 31);
    }
    ck_assert_uint_lt(bytes, all / 100);            /* a few slots, not 6 MB */
    /* no ids: the flagged slots only; an error cleared drops out */
    r.state = RMSYNC_REP_OK;
    r.held = 0;
    apr_snprintf(r.representative_id, sizeof(r.representative_id), "R42");
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, NULL), APR_SUCCESS);
    ck_assert_int_eq(rmsync_shm_snapshot_some(s, NULL, p, NULL, 0, &c, NULL), APR_SUCCESS);
    ck_assert_uint_eq(c->rep_count, 2);
    ck_assert_uint_eq(c->counters[RMSYNC_CTR_RUNNER_STARTS], 0);
    /* after a clear the index is empty too */
    rmsync_shm_rep_clear(s, NULL);
    ck_assert_int_eq(rmsync_shm_rep_get(s, NULL, "R17", &out), APR_NOTFOUND);
    ck_assert_int_eq(rmsync_shm_snapshot_some(s, NULL, p, ids, 5, &c, NULL), APR_SUCCESS);
    ck_assert_uint_eq(c->rep_count, 0);
    /* a damaged index entry only misses: it never yields another representative's slot */
    ck_assert_int_eq(rmsync_shm_rep_put(s, NULL, &r, NULL), APR_SUCCESS);
    {
        /* every index entry (after the slots, before the flags) -> slot 0, or out of range */
        apr_uint32_t *ix = (apr_uint32_t *)(void *)((char *)s + offsetof(rmsync_shm_t, reps)
                            + RMSYNC_SHM_MAX_REPS_LIMIT * sizeof(rmsync_shm_rep_t));
        for (i = 0; i < 16384; i++) {
            ix[i] = i % 2 ? 1 : 0xffffffffu;
        }
    }
    ck_assert_int_eq(rmsync_shm_rep_get(s, NULL, "R42", &out), APR_SUCCESS);
    ck_assert_int_eq(rmsync_shm_rep_get(s, NULL, "R43", &out), APR_NOTFOUND);
    ck_assert_int_eq(rmsync_shm_snapshot_some(s, NULL, p, ids, 5, &c, NULL), APR_SUCCESS);
    ck_assert_uint_eq(c->rep_count, 0);
}
END_TEST

/* Two processes hammer a counter (atomic) and a mutex-guarded field: no lost updates. */
START_TEST(cross_process)
{
    apr_size_t n = rmsync_shm_size(2);
    rmsync_shm_t *s = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    apr_global_mutex_t *m;
    pid_t kid;
    int i, st;

    ck_assert_ptr_ne(s, MAP_FAILED);
    ck_assert_int_eq(rmsync_shm_init(s, n, 2, 1, NULL, 0), APR_SUCCESS);
    ck_assert_int_eq(apr_global_mutex_create(&m, NULL, APR_LOCK_DEFAULT, p), APR_SUCCESS);
    kid = fork();
    ck_assert_int_ge(kid, 0);
    for (i = 0; i < 20000; i++) {
        rmsync_shm_counter_inc(s, RMSYNC_CTR_EVENTS_APPLIED);
        rmsync_shm_runner_cycles(s, m, 1, i);
    }
    if (kid == 0) {
        _exit(0);
    }
    waitpid(kid, &st, 0);
    ck_assert_uint_eq(rmsync_shm_counter_get(s, RMSYNC_CTR_EVENTS_APPLIED), 40000);
    ck_assert_uint_eq(s->runner.cycles, 40000);
    munmap(s, n);
}
END_TEST

RMSYNC_UNIT_MAIN("shm", "layout", setup, teardown, 0,
                 size_and_init, validate_rejects, counters, runner_and_snapshot,
                 strings_terminated, reps, index_and_partial_snapshots, cross_process)
