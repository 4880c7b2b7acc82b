/*
 * Allocation failure injection, SQLite style: a scenario that touches every
 * part of the engine (create, add, modify, pause/resume, fire, run now,
 * list, subscribe, remove, shutdown) runs once to count its allocations,
 * then again with allocation K failing, for every K; and again with every
 * allocation from K on failing (every 7th K; under the sanitizers every 4th
 * and 28th). Each time: no crash, every call returns 0
 * or a clean error, a mutation that failed left nothing behind (checked
 * with injection paused), and once the scheduler is destroyed every block
 * the engine allocated was freed (the wrappers below count them).
 *
 * The engine's own calls to malloc/calloc/realloc/strdup/strndup/free are
 * routed here with `ld --wrap`; libraries (LMDB, OpenSSL, libc inside)
 * allocate on their own and are not counted.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);

static atomic_long n_allocs;     /* allocations attempted since reset */
static atomic_long outstanding;  /* blocks allocated and not freed */
static atomic_long fail_at;      /* 0 = never; else the allocation number */
static atomic_int fail_sticky;   /* 1: every allocation from fail_at on */
static atomic_int paused;        /* 1: injection off (for checks) */
static atomic_long n_failed;

static int
should_fail(void)
{
    long k = atomic_fetch_add(&n_allocs, 1) + 1;
    long at = atomic_load(&fail_at);
    if (atomic_load(&paused) || at == 0)
        return 0;
    if (k == at || (atomic_load(&fail_sticky) && k > at)) {
        atomic_fetch_add(&n_failed, 1);
        return 1;
    }
    return 0;
}

void *
__wrap_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    void *p = __real_malloc(n);
    if (p)
        atomic_fetch_add(&outstanding, 1);
    return p;
}

void *
__wrap_calloc(size_t n, size_t m)
{
    if (should_fail())
        return NULL;
    void *p = __real_calloc(n, m);
    if (p)
        atomic_fetch_add(&outstanding, 1);
    return p;
}

void __wrap_free(void *p);

void *
__wrap_realloc(void *old, size_t n)
{
    if (n == 0) {
        __wrap_free(old);
        return NULL;
    }
    if (should_fail())
        return NULL;
    void *p = __real_realloc(old, n);
    if (p && old == NULL)
        atomic_fetch_add(&outstanding, 1);
    return p;
}

void
__wrap_free(void *p)
{
    if (p) {
        atomic_fetch_sub(&outstanding, 1);
        __real_free(p);
    }
}

char *
__wrap_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = __wrap_malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

char *
__wrap_strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *p = __wrap_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* ---- the scenario ------------------------------------------------------------ */

#define SEC INT64_C(1000000)
#define T0 (INT64_C(1795428000) * SEC)

static _Atomic aps_time fake_now = T0;

static aps_time
clock_now(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static const aps_clock fake_clock = {clock_now, NULL};

static int
noop(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
     size_t error_len)
{
    (void)job_id;
    (void)arg;
    (void)scheduled;
    (void)userdata;
    (void)error;
    (void)error_len;
    return 0;
}

static void
listener(const aps_event *ev, void *userdata)
{
    (void)ev;
    (void)userdata;
}

/* A call's result: success or a clean error code. */
static void
check_rc(int rc, const char *what)
{
    if (rc != 0 && rc != APS_ENOMEM && rc != APS_EIO && rc != APS_ENOENT)
        fail_msg("%s: unexpected %d (%s)", what, rc, aps_strerror(rc));
}

static int
exists(aps_scheduler *s, const char *id)
{
    aps_job *j = NULL;
    atomic_store(&paused, 1);
    int rc = aps_job_get(s, id, &j);
    atomic_store(&paused, 0);
    aps_job_free(j);
    return rc == 0;
}

static char *
name_of(aps_scheduler *s, const char *id)
{
    aps_job *j = NULL;
    static char name[64];
    atomic_store(&paused, 1);
    name[0] = '\0';
    if (aps_job_get(s, id, &j) == 0 && j->name)
        snprintf(name, sizeof(name), "%s", j->name);
    aps_job_free(j);
    atomic_store(&paused, 0);
    return name;
}

static aps_job_spec
job(const char *id, const aps_trigger_spec *t)
{
    aps_job_spec j;
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.name = "first";
    j.trigger = t;
    j.target.kind = APS_TARGET_FUNCTION;
    j.target.u.function.name = "noop";
    j.coalesce = -1;
    j.next_run_time = APS_TIME_NONE;
    return j;
}

static void
process_for(aps_scheduler *s, int passes)
{
    for (int i = 0; i < passes; i++) {
        aps_time next = APS_TIME_NONE;
        check_rc(aps_scheduler_process(s, &next), "process");
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

static void
scenario(const char *lmdb_dir)
{
    aps_store_def stores[2] = {{"default", lmdb_dir ? "lmdb" : "memory", lmdb_dir},
                               {"other", "memory", NULL}};
    aps_executor_def execs[1] = {{.name = "default", .type = "threadpool", .max_workers = 2}};
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = stores;
    cfg.n_stores = 2;
    cfg.executors = execs;
    cfg.n_executors = 1;
    cfg.clock = &fake_clock;
    cfg.no_sync = 1;
    cfg.jitter_seed = 1;
    atomic_store(&fake_now, T0);

    int rc = aps_scheduler_create(&cfg, &s, &err);
    check_rc(rc, "create");
    if (rc != 0) {
        assert_null(s);
        return;
    }
    if (aps_scheduler_register_function(s, "noop", noop, NULL) != 0 ||
        aps_scheduler_add_listener(s, listener, APS_EVENT_ALL, NULL) != 0 ||
        aps_scheduler_start(s, APS_RUN_EXTERNAL) != 0) {
        aps_scheduler_destroy(s);
        return;
    }

    aps_trigger_spec every10 = {.kind = APS_TRIGGER_INTERVAL};
    every10.u.interval.seconds = 10;
    every10.u.interval.start_date = every10.u.interval.end_date = APS_TIME_NONE;
    aps_trigger_spec cron = {.kind = APS_TRIGGER_CRON};
    cron.u.cron.second = "*/5";
    cron.u.cron.start_date = cron.u.cron.end_date = APS_TIME_NONE;

    /* Adds: all or nothing. */
    aps_job_spec a = job("a", &every10);
    rc = aps_job_add(s, &a, NULL, NULL, &err);
    check_rc(rc, "add a");
    assert_int_equal(exists(s, "a"), rc == 0);
    aps_job_spec b = job(NULL, &cron);
    b.jobstore = "other";
    aps_job *bj = NULL;
    aps_mutation m = {.request_id = "req-b", .request_fingerprint = 5};
    check_rc(aps_job_add(s, &b, &m, &bj, &err), "add b");
    aps_job_free(bj);

    /* Modify: all or nothing. */
    if (exists(s, "a")) {
        aps_job_spec mod = job("a", &every10);
        mod.name = "second";
        rc = aps_job_modify(s, "a", &mod, APS_MODIFY_NAME, NULL, NULL, &err);
        check_rc(rc, "modify");
        assert_string_equal(name_of(s, "a"), rc == 0 ? "second" : "first");
        check_rc(aps_job_pause(s, "a", NULL, NULL), "pause");
        check_rc(aps_job_resume(s, "a", NULL, NULL), "resume");
    }

    /* Fire: the interval at T0+10 s, the cron every 5 s. */
    atomic_store(&fake_now, T0 + 10 * SEC);
    process_for(s, 4);
    char run_id[33];
    int queued = 0;
    rc = aps_job_run_now(s, "a", NULL, run_id, &queued, &err);
    if (rc != APS_ESTATE)
        check_rc(rc, "run now");
    atomic_store(&fake_now, T0 + 20 * SEC);
    process_for(s, 4);

    aps_job **jobs = NULL;
    size_t n = 0;
    char *next = NULL;
    if (aps_job_list(s, NULL, NULL, 10, &jobs, &n, &next) == 0) {
        aps_job_list_free(jobs, n);
        free(next);
    }
    aps_subscriber *sub = NULL;
    if (aps_subscribe(s, 0, APS_EVENT_ALL, NULL, &sub) == 0) {
        for (int i = 0; i < 8; i++) {
            aps_event *ev = NULL;
            uint64_t gap = 0;
            if (aps_subscriber_next(sub, 0, &ev, &gap) != 0 || ev == NULL)
                break;
            aps_event_free(ev);
        }
        aps_subscriber_close(sub);
    }

    /* Remove: all or nothing. */
    if (exists(s, "a")) {
        rc = aps_job_remove(s, "a", NULL);
        check_rc(rc, "remove");
        assert_int_equal(exists(s, "a"), rc != 0);
    }
    size_t removed = 0;
    check_rc(aps_job_remove_all(s, NULL, NULL, &removed), "remove all");
    check_rc(aps_scheduler_shutdown(s, 1), "shutdown");
    aps_scheduler_destroy(s);
}

static char dirbuf[256];

static const char *
fresh_dir(void)
{
    const char *base = getenv("TEST_TMPDIR");
    char cmd[320];
    snprintf(dirbuf, sizeof(dirbuf), "%s/oom-%d", base ? base : "/tmp", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dirbuf);
    atomic_store(&paused, 1);
    int rc = system(cmd);
    atomic_store(&paused, 0);
    assert_int_equal(rc, 0);
    return dirbuf;
}

/* Runs the scenario with injection at every allocation (one-shot, then
 * sticky at every 7th), checking that nothing leaks each time. */
static void
sweep(int lmdb)
{
    atomic_store(&fail_at, 0);
    atomic_store(&n_allocs, 0);
    long before = atomic_load(&outstanding);
    scenario(lmdb ? fresh_dir() : NULL);
    long total = atomic_load(&n_allocs);
    assert_int_equal(atomic_load(&outstanding), before);
    assert_true(total > 100);
    long runs = 0, failed = 0;
    /* Under the sanitizers (ten times slower), every 4th point suffices. */
    long stride = getenv("APSD_SANITIZED") ? 4 : 1;
    for (int sticky = 0; sticky <= 1; sticky++) {
        for (long k = 1; k <= total + 20; k += sticky ? 7 * stride : stride) {
            atomic_store(&fail_sticky, sticky);
            atomic_store(&n_allocs, 0);
            atomic_store(&n_failed, 0);
            atomic_store(&fail_at, k);
            before = atomic_load(&outstanding);
            scenario(lmdb ? fresh_dir() : NULL);
            atomic_store(&fail_at, 0);
            if (atomic_load(&outstanding) != before)
                fail_msg("%s store, allocation %ld failing%s: %ld blocks leaked",
                         lmdb ? "lmdb" : "memory", k, sticky ? " (and every later one)" : "",
                         atomic_load(&outstanding) - before);
            runs++;
            failed += atomic_load(&n_failed) > 0;
        }
    }
    printf("alloc-failure: %s store: %ld allocations in the scenario, %ld runs, %ld with a "
           "failed allocation, no leak, no crash\n",
           lmdb ? "lmdb" : "memory", total, runs, failed);
}

static void
test_memory_store(void **state)
{
    (void)state;
    sweep(0);
}

static void
test_lmdb_store(void **state)
{
    (void)state;
    sweep(1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_store),
        cmocka_unit_test(test_lmdb_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
