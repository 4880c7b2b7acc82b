/*
 * The remote-workers executor and the worker API (engine.h, "Remote
 * workers"), driven through the scheduler with an injected clock in
 * external-loop mode: the test thread runs aps_scheduler_process, so a
 * completion made on this thread is an event after the next process call.
 * Expiry is stepped with aps__executor_remote_tick; the executor's timer
 * thread polls the injected clock too, so a test that expects an expiry
 * waits for its event (whoever expired it) instead of counting ticks, and
 * one test relies on the timer thread alone.
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
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "exec.h"
#include "job.h"
#include "testutil.h"

/* Internal to exec_remote.c (not in exec.h): expires due leases now. */
int aps__executor_remote_tick(aps__executor *ex);

#define SEC INT64_C(1000000)
/* 2026-11-23T10:00:00Z */
#define T0 TU_T0
#define LEASE (30 * SEC)

/* ---- recorded events (listeners run on the test thread) ---------------------- */

#define EVENTS_MAX 8192
static aps_event *events[EVENTS_MAX];
static size_t n_events;

static void
listener(const aps_event *ev, void *userdata)
{
    (void)userdata;
    aps_event *copy = NULL;
    assert_int_equal(aps__event_copy(ev, &copy), 0);
    if (n_events < EVENTS_MAX)
        events[n_events++] = copy;
    else
        aps_event_free(copy);
}

static size_t
count_events(aps_event_type type)
{
    size_t n = 0;
    for (size_t i = 0; i < n_events; i++)
        n += events[i]->type == type;
    return n;
}

/* The last event of `type` for `run_id` (NULL: any run). */
static const aps_event *
find_event(aps_event_type type, const char *run_id)
{
    for (size_t i = n_events; i > 0; i--) {
        const aps_event *ev = events[i - 1];
        if (ev->type == type && (run_id == NULL || (ev->run_id && strcmp(ev->run_id, run_id) == 0)))
            return ev;
    }
    return NULL;
}

static size_t
count_job_events(aps_event_type type, const char *job_id)
{
    size_t n = 0;
    for (size_t i = 0; i < n_events; i++)
        n += events[i]->type == type && events[i]->job_id && strcmp(events[i]->job_id, job_id) == 0;
    return n;
}

static void
clear_events(void)
{
    for (size_t i = 0; i < n_events; i++)
        aps_event_free(events[i]);
    n_events = 0;
}

/* ---- notify ---------------------------------------------------------------------- */

static atomic_int notified;

static void
count_notify(void *userdata)
{
    atomic_fetch_add(&notified, 1);
    if (userdata != NULL)
        atomic_fetch_add((atomic_int *)userdata, 1);
}

/* ---- fixtures ---------------------------------------------------------------------- */

/* "remote" and "remote2" are workers executors sharing the queues; "small"
 * leases at most 2 runs and queues at most 3. */
static aps_scheduler *
open_sched(int with_workers)
{
    aps_executor_def execs[4] = {
        {.name = "default", .type = "threadpool", .max_workers = 1},
        {.name = "remote", .type = "workers", .max_workers = 2000, .max_queue = 2000,
         .lease_us = LEASE},
        {.name = "remote2", .type = "workers", .max_workers = 10},
        {.name = "small", .type = "workers", .max_workers = 2, .max_queue = 3, .lease_us = LEASE},
    };
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.executors = execs;
    cfg.n_executors = with_workers ? 4 : 1;
    cfg.clock = &tu_clock;
    cfg.jitter_seed = 42;
    int rc = aps_scheduler_create(&cfg, &s, &err);
    if (rc != 0)
        fail_msg("create: %s", err.msg);
    assert_int_equal(aps_scheduler_add_listener(s, listener, APS_EVENT_ALL, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);
    return s;
}

static aps_worker *
attach(aps_scheduler *s, const char *queue, const char *id, uint32_t max_in_flight,
       int64_t lease_us)
{
    aps_worker_options o;
    aps_worker *w = NULL;
    aps_error err;
    memset(&o, 0, sizeof(o));
    o.queue = queue;
    o.worker_id = id;
    o.max_in_flight = max_in_flight;
    o.lease_us = lease_us;
    int rc = aps_worker_attach(s, &o, &w, &err);
    if (rc != 0)
        fail_msg("attach %s: %s", id, err.msg);
    return w;
}

/* A one-shot remote job due at `at`. */
static void
add_remote(aps_scheduler *s, const char *id, const char *task, const char *queue,
           const char *executor, aps_time at)
{
    aps_job_spec j;
    aps_error err;
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.target.kind = APS_TARGET_REMOTE;
    j.target.u.remote.task = (char *)task;
    j.target.u.remote.queue = (char *)queue;
    j.target.u.remote.args_json = "[1, \"two\"]";
    j.target.u.remote.kwargs_json = "{\"k\": true}";
    j.executor = executor ? executor : "remote";
    j.coalesce = -1;
    j.next_run_time = at;
    if (aps_job_add(s, &j, NULL, NULL, &err) != 0)
        fail_msg("add %s: %s", id, err.msg);
}

static aps_trigger_spec
interval_s(int64_t seconds)
{
    aps_trigger_spec t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.seconds = seconds;
    t.u.interval.start_date = APS_TIME_NONE;
    t.u.interval.end_date = APS_TIME_NONE;
    return t;
}

static void
process(aps_scheduler *s)
{
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
}

/* Expires what is due (tick) and processes until an event of `type` for
 * `job_id` shows, or 2 s. The timer thread may get there first (it polls
 * the injected clock), so the tick's count is not asserted. */
static const aps_event *
settle_job_event(aps_scheduler *s, aps_event_type type, const char *job_id)
{
    aps__executor *ex = aps__scheduler_executor(s, "remote");
    for (int i = 0; i < 2000; i++) {
        aps__executor_remote_tick(ex);
        process(s);
        for (size_t k = n_events; k > 0; k--) {
            const aps_event *ev = events[k - 1];
            if (ev->type == type && ev->job_id && strcmp(ev->job_id, job_id) == 0)
                return ev;
        }
        usleep(1000);
    }
    fail_msg("no %s event for %s", aps_event_type_name(type), job_id);
    return NULL;
}

/* Takes exactly `want` runs without waiting. */
static aps_dispatch *
take(aps_worker *w, size_t max, size_t want)
{
    aps_dispatch *d = NULL;
    size_t n = 99;
    assert_int_equal(aps_worker_take(w, max, 0, &d, &n), 0);
    if (n != want)
        fail_msg("took %zu runs, expected %zu", n, want);
    return d;
}

static const aps_task_result OK_42 = {1, "{\"x\": 42}", NULL, NULL, NULL};

static int
setup(void **state)
{
    (void)state;
    tu_clock_set(T0);
    clear_events();
    atomic_store(&notified, 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    clear_events();
    return 0;
}

/* ---- tests ----------------------------------------------------------------------- */

static void
test_complete_with_return_value(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *w = attach(s, NULL, "host-1/pid-1", 4, 0);
    add_remote(s, "job", "pkg.mod:func", NULL, NULL, T0);
    process(s);
    const aps_event *sub = find_event(APS_EVENT_JOB_SUBMITTED, NULL);
    assert_non_null(sub);

    tu_clock_set(T0 + 1 * SEC);
    aps_dispatch *d = take(w, 8, 1);
    assert_string_equal(d[0].run_id, sub->run_id);
    assert_int_equal(strlen(d[0].lease_token), 32);
    assert_string_equal(d[0].job_id, "job");
    assert_string_equal(d[0].task, "pkg.mod:func");
    assert_string_equal(d[0].args_json, "[1, \"two\"]");
    assert_string_equal(d[0].kwargs_json, "{\"k\": true}");
    assert_string_equal(d[0].queue, "default");
    assert_int_equal(d[0].n_run_times, 1);
    assert_true(d[0].run_times[0] == T0);
    assert_true(d[0].lease_us == LEASE); /* the executor's lease_us */
    assert_true(d[0].lease_deadline == T0 + 1 * SEC + LEASE);
    take(w, 8, 0); /* nothing else */

    tu_clock_set(T0 + 3 * SEC);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &OK_42), 0);
    process(s);
    const aps_event *ev = find_event(APS_EVENT_JOB_EXECUTED, d[0].run_id);
    assert_non_null(ev);
    assert_non_null(ev->outcome);
    assert_int_equal(ev->outcome->status, APS_RUN_SUCCEEDED);
    assert_string_equal(ev->outcome->return_json, "{\"x\": 42}");
    assert_null(ev->outcome->error);
    assert_true(ev->outcome->start_time == T0 + 1 * SEC); /* taken */
    assert_true(ev->outcome->end_time == T0 + 3 * SEC);   /* completed */
    assert_true(ev->run_times[0] == T0);

    /* A retry of the same complete is a no-op; another result is refused. */
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &OK_42), 0);
    aps_task_result other = {1, "43", NULL, NULL, NULL};
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &other),
                     APS_ESTATE);
    process(s);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), 1);
    assert_int_equal(count_events(APS_EVENT_JOB_ERROR), 0);
    assert_int_equal(aps_worker_extend(s, d[0].run_id, d[0].lease_token, 0, NULL, NULL),
                     APS_ESTATE);

    aps_dispatch_free(d, 1);
    aps_worker_detach(w);
    aps_scheduler_destroy(s);
}

static void
test_error_with_traceback(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *w = attach(s, "default", "w", 1, 0);
    add_remote(s, "bad", "pkg:fails", "default", NULL, T0);
    process(s);
    aps_dispatch *d = take(w, 1, 1);
    aps_task_result r = {0, NULL, "boom", "ValueError",
                         "Traceback (most recent call last):\n  ...\nValueError: boom\n"};
    tu_clock_set(T0 + 2 * SEC);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &r), 0);
    process(s);
    const aps_event *ev = find_event(APS_EVENT_JOB_ERROR, d[0].run_id);
    assert_non_null(ev);
    assert_int_equal(ev->outcome->status, APS_RUN_FAILED);
    assert_string_equal(ev->outcome->error, "boom");
    assert_string_equal(ev->outcome->traceback, r.traceback);
    assert_string_equal(ev->outcome->error_type, "ValueError");
    assert_string_equal(ev->outcome->worker_id, "w");
    assert_null(ev->outcome->return_json);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), 0);
    /* Identical error retried: no-op. */
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &r), 0);
    process(s);
    assert_int_equal(count_events(APS_EVENT_JOB_ERROR), 1);
    aps_dispatch_free(d, 1);
    aps_worker_detach(w);
    aps_scheduler_destroy(s);
}

static void
test_lease_expiry_frees_the_slot(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps__executor *ex = aps__scheduler_executor(s, "remote");
    assert_non_null(ex);
    aps_worker *w = attach(s, NULL, "w", 5, 5 * SEC);
    aps_trigger_spec t = interval_s(10);
    aps_job_spec j;
    memset(&j, 0, sizeof(j));
    j.id = "every10";
    j.trigger = &t;
    j.target.kind = APS_TARGET_REMOTE;
    j.target.u.remote.task = "m:f";
    j.executor = "remote";
    j.coalesce = -1;
    j.max_instances = 1;
    j.misfire = APS_MISFIRE_UNLIMITED;
    j.next_run_time = APS_TIME_NONE;
    assert_int_equal(aps_job_add(s, &j, NULL, NULL, NULL), 0);

    tu_clock_set(T0 + 10 * SEC);
    process(s);
    aps_dispatch *d = take(w, 5, 1);
    assert_true(d[0].lease_us == 5 * SEC); /* the worker's lease */
    assert_true(d[0].lease_deadline == T0 + 15 * SEC);

    tu_clock_set(T0 + 14 * SEC);
    assert_int_equal(aps__executor_remote_tick(ex), 0);
    tu_clock_set(T0 + 15 * SEC); /* the deadline: expired */
    const aps_event *ev = settle_job_event(s, APS_EVENT_JOB_ERROR, "every10");
    assert_string_equal(ev->run_id, d[0].run_id);
    assert_int_equal(ev->outcome->status, APS_RUN_LEASE_EXPIRED);
    assert_string_equal(ev->outcome->error, "lease expired");
    assert_true(ev->outcome->start_time == T0 + 10 * SEC);
    assert_non_null(ev->outcome->worker_id); /* who held the lease */
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "every10", &job), 0);
    assert_int_equal(job->running_instances, 0);
    aps_job_free(job);

    /* The worker is told to stop it; its late result is refused. */
    char(*ids)[33] = NULL;
    size_t n = 0;
    assert_int_equal(aps_worker_cancels(w, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], d[0].run_id);
    free(ids);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &OK_42), APS_ESTATE);
    assert_int_equal(aps_worker_extend(s, d[0].run_id, d[0].lease_token, 0, NULL, NULL),
                     APS_ESTATE);

    /* max_instances 1: the slot is free, so the next fire runs. */
    tu_clock_set(T0 + 20 * SEC);
    process(s);
    assert_int_equal(count_events(APS_EVENT_JOB_MAX_INSTANCES), 0);
    assert_int_equal(count_events(APS_EVENT_JOB_SUBMITTED), 2);
    aps_dispatch *d2 = take(w, 5, 1);
    assert_string_not_equal(d2[0].run_id, d[0].run_id); /* never redelivered */
    assert_true(d2[0].run_times[0] == T0 + 20 * SEC);

    /* The timer thread expires leases on its own, polling the injected
     * clock (no tick here). */
    tu_clock_set(T0 + 26 * SEC);
    for (int i = 0; i < 2000 && find_event(APS_EVENT_JOB_ERROR, d2[0].run_id) == NULL; i++) {
        usleep(1000);
        process(s);
    }
    ev = find_event(APS_EVENT_JOB_ERROR, d2[0].run_id);
    assert_non_null(ev);
    assert_int_equal(ev->outcome->status, APS_RUN_LEASE_EXPIRED);

    aps_dispatch_free(d, 1);
    aps_dispatch_free(d2, 1);
    aps_worker_detach(w);
    aps_scheduler_destroy(s);
}

/* ---- at most once: two workers racing ---------------------------------------------- */

#define RACE_RUNS 1000

typedef struct racer {
    aps_scheduler *s;
    aps_worker *w;
    atomic_int *total;
    char (*ids)[33];
    size_t n;
    int max_seen_in_flight;
    int errors;
} racer;

static void *
racer_main(void *arg)
{
    racer *r = arg;
    for (int spins = 0; atomic_load(r->total) < RACE_RUNS && spins < 100000; spins++) {
        aps_dispatch *d = NULL;
        size_t n = 0;
        if (aps_worker_take(r->w, 7, 1000, &d, &n) != 0) {
            r->errors++;
            break;
        }
        if ((int)n > r->max_seen_in_flight)
            r->max_seen_in_flight = (int)n;
        for (size_t i = 0; i < n; i++) {
            memcpy(r->ids[r->n++], d[i].run_id, 33);
            if (aps_worker_complete(r->s, d[i].run_id, d[i].lease_token, &OK_42) != 0)
                r->errors++;
        }
        atomic_fetch_add(r->total, (int)n);
        aps_dispatch_free(d, n);
    }
    return NULL;
}

static int
cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void
test_at_most_once_two_workers_race(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    char id[32];
    for (int i = 0; i < RACE_RUNS; i++) {
        snprintf(id, sizeof(id), "race-%04d", i);
        add_remote(s, id, "m:f", "race", NULL, T0);
    }
    atomic_int total = 0;
    racer r[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].s = s;
        r[i].w = attach(s, "race", i ? "racer-b" : "racer-a", 5, 0);
        r[i].total = &total;
        r[i].ids = calloc(RACE_RUNS, 33);
        assert_non_null(r[i].ids);
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
    }
    /* Submit while they race: runs arrive in batches. */
    for (int i = 0; i < 20000 && atomic_load(&total) < RACE_RUNS; i++) {
        process(s);
        usleep(100);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    /* Listeners get 1,024 events a pass at most: as many passes as that
     * takes (a few). */
    for (int i = 0; i < 50 && count_events(APS_EVENT_JOB_EXECUTED) < RACE_RUNS; i++)
        process(s);
    assert_int_equal(atomic_load(&total), RACE_RUNS);
    char(*all)[33] = calloc(RACE_RUNS, 33);
    assert_non_null(all);
    size_t k = 0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].errors, 0);
        assert_true(r[i].max_seen_in_flight <= 5);
        memcpy(all[k], r[i].ids, r[i].n * 33);
        k += r[i].n;
    }
    assert_int_equal(k, RACE_RUNS);
    qsort(all, k, 33, cmp_id);
    for (size_t i = 1; i < k; i++) {
        if (strcmp(all[i - 1], all[i]) == 0)
            fail_msg("run %s handed out twice", all[i]);
    }
    assert_int_equal(count_events(APS_EVENT_JOB_SUBMITTED), RACE_RUNS);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), RACE_RUNS);
    free(all);
    for (int i = 0; i < 2; i++) {
        free(r[i].ids);
        aps_worker_detach(r[i].w);
    }
    aps_scheduler_destroy(s);
}

static void
test_max_in_flight_and_executor_limits(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *w = attach(s, "mif", "w", 3, 0);
    char id[32];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "mif-%d", i);
        add_remote(s, id, "m:f", "mif", NULL, T0);
    }
    process(s);
    aps_dispatch *d = take(w, 10, 3);
    take(w, 10, 0); /* full */
    assert_int_equal(aps_worker_complete(s, d[1].run_id, d[1].lease_token, &OK_42), 0);
    aps_dispatch *d2 = take(w, 10, 1);
    take(w, 10, 0);
    aps_dispatch_free(d, 3);
    aps_dispatch_free(d2, 1);
    aps_worker_detach(w);

    /* Executor "small": 2 leased at once across workers, 3 queued at most
     * (the 4th submission fails as SPAWN_FAILED, queue full). */
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof(id), "small-%d", i);
        add_remote(s, id, "m:f", "sq", "small", T0);
    }
    clear_events();
    process(s); /* submits; the refused run is recorded by the next pass */
    process(s);
    const aps_event *ev = find_event(APS_EVENT_JOB_ERROR, NULL);
    assert_non_null(ev);
    assert_int_equal(ev->outcome->status, APS_RUN_SPAWN_FAILED);
    assert_non_null(strstr(ev->outcome->error, "queue full"));
    aps_worker *a = attach(s, "sq", "a", 5, 0);
    aps_worker *b = attach(s, "sq", "b", 5, 0);
    aps_dispatch *da = take(a, 5, 2);
    take(b, 5, 0); /* the executor's max_workers */
    assert_int_equal(aps_worker_complete(s, da[0].run_id, da[0].lease_token, &OK_42), 0);
    aps_dispatch *db = take(b, 5, 1);
    take(a, 5, 0);
    aps_dispatch_free(da, 2);
    aps_dispatch_free(db, 1);
    aps_worker_detach(a);
    aps_worker_detach(b);
    aps_scheduler_destroy(s);
}

static void
test_extend_lease(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps__executor *ex = aps__scheduler_executor(s, "remote");
    aps_worker *w = attach(s, NULL, "w", 1, 5 * SEC);
    add_remote(s, "long", "m:slow", NULL, NULL, T0);
    process(s);
    aps_dispatch *d = take(w, 1, 1);
    aps_time deadline = 0;
    int64_t granted = 0;
    tu_clock_set(T0 + 4 * SEC);
    assert_int_equal(aps_worker_extend(s, d[0].run_id, d[0].lease_token, 0, &deadline, &granted),
                     0);
    assert_true(deadline == T0 + 9 * SEC); /* the granted length again */
    assert_true(granted == 5 * SEC);
    tu_clock_set(T0 + 8 * SEC);
    assert_int_equal(
        aps_worker_extend(s, d[0].run_id, d[0].lease_token, 20 * SEC, &deadline, &granted), 0);
    assert_true(deadline == T0 + 28 * SEC);
    assert_true(granted == 20 * SEC);
    tu_clock_set(T0 + 20 * SEC);
    assert_int_equal(aps__executor_remote_tick(ex), 0); /* would have expired at T0+9 */
    assert_int_equal(aps_worker_extend(s, d[0].run_id, "0123456789abcdef0123456789abcdef", 0,
                                       NULL, NULL),
                     APS_EINVAL);
    assert_int_equal(aps_worker_extend(s, d[0].run_id, d[0].lease_token, -1, NULL, NULL),
                     APS_EINVAL);
    assert_int_equal(aps_worker_extend(s, "nosuchrun", d[0].lease_token, 0, NULL, NULL),
                     APS_ENOENT);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &OK_42), 0);
    process(s);
    const aps_event *ev = find_event(APS_EVENT_JOB_EXECUTED, d[0].run_id);
    assert_non_null(ev);
    assert_true(ev->outcome->end_time == T0 + 20 * SEC);
    aps_dispatch_free(d, 1);
    aps_worker_detach(w);
    aps_scheduler_destroy(s);
}

static void
test_wrong_token_and_bad_results(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *w = attach(s, NULL, "w", 1, 0);
    add_remote(s, "j", "m:f", NULL, NULL, T0);
    process(s);
    aps_dispatch *d = take(w, 1, 1);
    char wrong[33];
    memcpy(wrong, d[0].lease_token, 33);
    wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
    assert_int_equal(aps_worker_complete(s, d[0].run_id, wrong, &OK_42), APS_EINVAL);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, "short", &OK_42), APS_EINVAL);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, "", &OK_42), APS_EINVAL);
    assert_int_equal(aps_worker_complete(s, "", d[0].lease_token, &OK_42), APS_EINVAL);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, NULL), APS_EINVAL);
    assert_int_equal(aps_worker_complete(s, "0123456789abcdef0123456789abcdef", d[0].lease_token,
                                         &OK_42),
                     APS_ENOENT);
    aps_task_result not_json = {1, "{oops", NULL, NULL, NULL};
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &not_json),
                     APS_EINVAL);
    char *big = malloc(APS_WORKER_RESULT_MAX + 2);
    assert_non_null(big);
    memset(big, 'x', APS_WORKER_RESULT_MAX + 1);
    big[APS_WORKER_RESULT_MAX + 1] = '\0';
    aps_task_result huge = {0, NULL, big, NULL, NULL};
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &huge), APS_ELIMIT);
    free(big);
    process(s);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED) + count_events(APS_EVENT_JOB_ERROR),
                     0);
    /* None of that touched the lease. */
    aps_task_result none = {1, NULL, NULL, NULL, NULL};
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &none), 0);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, wrong, &none), APS_EINVAL);
    process(s);
    const aps_event *ev = find_event(APS_EVENT_JOB_EXECUTED, d[0].run_id);
    assert_non_null(ev);
    assert_string_equal(ev->outcome->return_json, "null");
    aps_dispatch_free(d, 1);
    aps_worker_detach(w);
    aps_scheduler_destroy(s);
}

static void
test_queue_isolation_and_task_filter(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *wa = attach(s, "a", "wa", 10, 0);
    aps_worker *wb = attach(s, "b", "wb", 10, 0);
    add_remote(s, "a1", "m:f", "a", NULL, T0);
    add_remote(s, "b1", "m:f", "b", NULL, T0);
    add_remote(s, "a2", "m:g", "a", "remote2", T0); /* another workers executor, same queue */
    add_remote(s, "b2", "m:f", "b", NULL, T0);
    add_remote(s, "a3", "m:only", "a", NULL, T0);
    process(s);

    /* A filtered worker on "a" sees only its task. */
    const char *tasks[] = {"m:only"};
    aps_worker_options o;
    memset(&o, 0, sizeof(o));
    o.queue = "a";
    o.worker_id = "filtered";
    o.max_in_flight = 10;
    o.tasks = tasks;
    o.n_tasks = 1;
    aps_worker *wf = NULL;
    assert_int_equal(aps_worker_attach(s, &o, &wf, NULL), 0);
    aps_dispatch *df = take(wf, 10, 1);
    assert_string_equal(df[0].job_id, "a3");

    aps_dispatch *da = take(wa, 10, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(da[i].queue, "a");
        assert_true(da[i].job_id[0] == 'a');
    }
    assert_string_equal(da[0].job_id, "a1"); /* oldest first */
    assert_string_equal(da[1].job_id, "a2");
    aps_dispatch *db = take(wb, 10, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(db[i].queue, "b");
        assert_true(db[i].job_id[0] == 'b');
    }
    take(wa, 10, 0);
    aps_dispatch_free(da, 2);
    aps_dispatch_free(db, 2);
    aps_dispatch_free(df, 1);
    aps_worker_detach(wa);
    aps_worker_detach(wb);
    aps_worker_detach(wf);
    aps_scheduler_destroy(s);
}

static void
test_cancel_running_overlap(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    atomic_int mine = 0;
    aps_worker_options o;
    memset(&o, 0, sizeof(o));
    o.worker_id = "w";
    o.max_in_flight = 2;
    o.notify = count_notify;
    o.userdata = &mine;
    aps_worker *w = NULL;
    assert_int_equal(aps_worker_attach(s, &o, &w, NULL), 0);

    aps_trigger_spec t = interval_s(1);
    aps_job_spec j;
    memset(&j, 0, sizeof(j));
    j.id = "replace";
    j.trigger = &t;
    j.target.kind = APS_TARGET_REMOTE;
    j.target.u.remote.task = "m:f";
    j.executor = "remote";
    j.coalesce = -1;
    j.misfire = APS_MISFIRE_UNLIMITED;
    j.overlap = APS_OVERLAP_CANCEL_RUNNING;
    j.next_run_time = APS_TIME_NONE;
    assert_int_equal(aps_job_add(s, &j, NULL, NULL, NULL), 0);

    tu_clock_set(T0 + 1 * SEC);
    process(s);
    aps_dispatch *d1 = take(w, 2, 1);
    int before = atomic_load(&mine);
    tu_clock_set(T0 + 2 * SEC);
    process(s); /* the new run cancels the running one */
    process(s); /* records the cancelled run, starts the pending one */
    assert_true(atomic_load(&mine) > before); /* told about the cancel */
    char(*ids)[33] = NULL;
    size_t n = 0;
    assert_int_equal(aps_worker_cancels(w, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], d1[0].run_id);
    free(ids);
    assert_int_equal(aps_worker_cancels(w, &ids, &n), 0);
    assert_int_equal(n, 0);
    assert_null(ids);
    const aps_event *ev = find_event(APS_EVENT_JOB_ERROR, d1[0].run_id);
    assert_non_null(ev);
    assert_int_equal(ev->outcome->status, APS_RUN_CANCELLED);
    assert_int_equal(aps_worker_complete(s, d1[0].run_id, d1[0].lease_token, &OK_42),
                     APS_ESTATE);
    aps_dispatch *d2 = take(w, 2, 1);
    assert_true(d2[0].run_times[0] == T0 + 2 * SEC);
    assert_int_equal(aps_worker_complete(s, d2[0].run_id, d2[0].lease_token, &OK_42), 0);
    process(s);
    assert_non_null(find_event(APS_EVENT_JOB_EXECUTED, d2[0].run_id));
    aps_dispatch_free(d1, 1);
    aps_dispatch_free(d2, 1);
    aps_worker_detach(w);
    aps_scheduler_destroy(s);
}

typedef struct blocked_take {
    aps_worker *w;
    size_t n;
    int rc;
    aps_dispatch *d;
} blocked_take;

static void *
blocked_take_main(void *arg)
{
    blocked_take *b = arg;
    b->rc = aps_worker_take(b->w, 1, 5 * SEC, &b->d, &b->n);
    return NULL;
}

static void
test_notify_and_blocking_take(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    atomic_int mine = 0;
    aps_worker_options o;
    memset(&o, 0, sizeof(o));
    o.queue = "nq";
    o.worker_id = "notified";
    o.max_in_flight = 10;
    o.notify = count_notify;
    o.userdata = &mine;
    aps_worker *w = NULL;
    assert_int_equal(aps_worker_attach(s, &o, &w, NULL), 0);
    aps_worker *other = attach(s, "other", "o", 1, 0); /* no notify */

    add_remote(s, "n1", "m:f", "nq", NULL, T0);
    process(s);
    assert_int_equal(atomic_load(&mine), 1);
    add_remote(s, "n2", "m:f", "nq", NULL, T0);
    add_remote(s, "x1", "m:f", "other", NULL, T0); /* another queue: not for w */
    process(s);
    assert_int_equal(atomic_load(&mine), 1); /* edge-triggered: not taken yet */
    aps_dispatch *d = take(w, 10, 2);
    add_remote(s, "n3", "m:f", "nq", NULL, T0);
    process(s);
    assert_int_equal(atomic_load(&mine), 2); /* re-armed by the take */
    aps_dispatch *d3 = take(w, 10, 1);

    /* A take blocked in another thread is woken by a new run. */
    blocked_take b = {other, 0, -1, NULL};
    aps_dispatch *dx = take(other, 1, 1);
    assert_int_equal(aps_worker_complete(s, dx[0].run_id, dx[0].lease_token, &OK_42), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, blocked_take_main, &b), 0);
    usleep(20000);
    add_remote(s, "x2", "m:f", "other", NULL, T0);
    process(s);
    pthread_join(th, NULL);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.n, 1);
    assert_string_equal(b.d[0].job_id, "x2");
    /* A timed take with nothing to take returns 0 runs. */
    aps_dispatch *none = NULL;
    size_t n = 7;
    assert_int_equal(aps_worker_complete(s, b.d[0].run_id, b.d[0].lease_token, &OK_42), 0);
    assert_int_equal(aps_worker_take(other, 1, 10000, &none, &n), 0);
    assert_int_equal(n, 0);
    assert_null(none);
    assert_int_equal(aps_worker_take(other, 0, 0, &none, &n), APS_EINVAL);

    aps_dispatch_free(d, 2);
    aps_dispatch_free(d3, 1);
    aps_dispatch_free(dx, 1);
    aps_dispatch_free(b.d, 1);
    aps_worker_detach(w);
    aps_worker_detach(other);
    aps_scheduler_destroy(s);
}

static void
test_detach_then_complete(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *w = attach(s, NULL, "stream-1", 2, 0);
    add_remote(s, "d1", "m:f", NULL, NULL, T0);
    add_remote(s, "d2", "m:f", NULL, NULL, T0);
    process(s);
    aps_dispatch *d = take(w, 2, 2);
    aps_worker_detach(w); /* the stream ended; the leases stay */
    process(s);
    assert_int_equal(count_events(APS_EVENT_JOB_ERROR), 0);
    /* The same worker reconnected: extend and complete by run id. */
    aps_worker *w2 = attach(s, NULL, "stream-1", 2, 0);
    take(w2, 2, 0);
    tu_clock_set(T0 + 10 * SEC);
    assert_int_equal(aps_worker_extend(s, d[0].run_id, d[0].lease_token, 0, NULL, NULL), 0);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &OK_42), 0);
    aps_task_result r = {0, NULL, "gone", NULL, NULL};
    assert_int_equal(aps_worker_complete(s, d[1].run_id, d[1].lease_token, &r), 0);
    process(s);
    assert_non_null(find_event(APS_EVENT_JOB_EXECUTED, d[0].run_id));
    const aps_event *ev = find_event(APS_EVENT_JOB_ERROR, d[1].run_id);
    assert_non_null(ev);
    assert_string_equal(ev->outcome->error, "gone");
    aps_dispatch_free(d, 2);
    aps_worker_detach(w2);
    aps_scheduler_destroy(s);
}

static void
test_misfire_when_taken_late(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *w = attach(s, NULL, "late", 5, 0);
    /* Default grace: 1 s. Due at T0, nobody takes it until T0+3 s. */
    add_remote(s, "late", "m:f", NULL, NULL, T0);
    process(s);
    assert_int_equal(count_events(APS_EVENT_JOB_SUBMITTED), 1);
    tu_clock_set(T0 + 3 * SEC);
    take(w, 5, 0); /* missed: never dispatched */
    process(s);
    const aps_event *ev = find_event(APS_EVENT_JOB_MISSED, NULL);
    assert_non_null(ev);
    assert_true(ev->run_times[0] == T0);
    assert_int_equal(count_events(APS_EVENT_JOB_ERROR), 0);
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "late", &job), APS_ENOENT); /* a date job: done */

    /* Without coalescing, a run carries several run times; those too late
     * when it is taken are missed, the rest are dispatched together. */
    clear_events();
    aps_trigger_spec t = interval_s(1);
    aps_job_spec j;
    memset(&j, 0, sizeof(j));
    j.id = "behind";
    j.trigger = &t;
    j.target.kind = APS_TARGET_REMOTE;
    j.target.u.remote.task = "m:f";
    j.executor = "remote";
    j.coalesce = 0;
    j.misfire = APS_MISFIRE_DURATION;
    j.misfire_grace_us = 5 * SEC;
    j.next_run_time = APS_TIME_NONE;
    assert_int_equal(aps_job_add(s, &j, NULL, NULL, NULL), 0); /* first fire T0+4 */
    tu_clock_set(T0 + 11 * SEC);
    process(s); /* one run: T0+4 .. T0+11 */
    tu_clock_set(T0 + 12 * SEC);
    aps_dispatch *d = take(w, 5, 1);
    /* Missed: T0+4..T0+6 (more than 5 s late at T0+12). */
    assert_int_equal(d[0].n_run_times, 5);
    assert_true(d[0].run_times[0] == T0 + 7 * SEC);
    assert_true(d[0].run_times[4] == T0 + 11 * SEC);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &OK_42), 0);
    process(s);
    assert_int_equal(count_events(APS_EVENT_JOB_MISSED), 3);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), 5);
    aps_dispatch_free(d, 1);

    /* A queue nobody serves: once its last run time is too late, the run
     * ends as missed by itself and frees the job's instance slot. */
    aps__executor *ex = aps__scheduler_executor(s, "remote");
    aps_trigger_spec t5 = interval_s(5);
    j.id = "unserved";
    j.trigger = &t5;
    j.target.u.remote.queue = "nobody";
    j.coalesce = -1;
    j.misfire_grace_us = 2 * SEC;
    assert_int_equal(aps_job_add(s, &j, NULL, NULL, NULL), 0); /* first fire T0+17 */
    tu_clock_set(T0 + 17 * SEC);
    process(s);
    assert_int_equal(count_job_events(APS_EVENT_JOB_SUBMITTED, "unserved"), 1);
    tu_clock_set(T0 + 19 * SEC); /* exactly the grace: not yet missed */
    aps__executor_remote_tick(ex);
    process(s);
    assert_int_equal(count_job_events(APS_EVENT_JOB_MISSED, "unserved"), 0);
    tu_clock_set(T0 + 19 * SEC + 1);
    ev = settle_job_event(s, APS_EVENT_JOB_MISSED, "unserved");
    assert_true(ev->run_times[0] == T0 + 17 * SEC);
    assert_int_equal(aps_job_get(s, "unserved", &job), 0);
    assert_int_equal(job->running_instances, 0);
    aps_job_free(job);
    tu_clock_set(T0 + 22 * SEC);
    process(s);
    assert_int_equal(count_job_events(APS_EVENT_JOB_SUBMITTED, "unserved"), 2);
    assert_int_equal(count_job_events(APS_EVENT_JOB_MAX_INSTANCES, "unserved"), 0);
    aps_worker_detach(w);
    aps_scheduler_destroy(s);
}

static void
test_shutdown_interrupts_and_detach_after_destroy(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    atomic_int mine = 0;
    aps_worker_options o;
    memset(&o, 0, sizeof(o));
    o.worker_id = "w";
    o.max_in_flight = 1;
    o.notify = count_notify;
    o.userdata = &mine;
    aps_worker *w = NULL;
    assert_int_equal(aps_worker_attach(s, &o, &w, NULL), 0);
    add_remote(s, "s1", "m:f", NULL, NULL, T0);
    add_remote(s, "s2", "m:f", NULL, NULL, T0);
    process(s);
    aps_dispatch *d = take(w, 1, 1); /* s1 leased, s2 queued */
    int before = atomic_load(&mine);
    assert_int_equal(aps_scheduler_shutdown(s, 1), 0); /* does not wait for workers */
    assert_int_equal(count_events(APS_EVENT_JOB_ERROR), 2);
    for (size_t i = 0; i < n_events; i++) {
        if (events[i]->type == APS_EVENT_JOB_ERROR)
            assert_int_equal(events[i]->outcome->status, APS_RUN_INTERRUPTED);
    }
    assert_true(atomic_load(&mine) > before);
    char(*ids)[33] = NULL;
    size_t n = 0;
    assert_int_equal(aps_worker_cancels(w, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], d[0].run_id);
    free(ids);
    aps_dispatch *none = NULL;
    assert_int_equal(aps_worker_take(w, 1, -1, &none, &n), APS_ESTATE);
    assert_int_equal(aps_worker_complete(s, d[0].run_id, d[0].lease_token, &OK_42), APS_ESTATE);
    aps_worker *late = NULL;
    aps_worker_options lo = {.worker_id = "late"};
    assert_int_equal(aps_worker_attach(s, &lo, &late, NULL), APS_ESTATE);
    aps_scheduler_destroy(s);
    aps_worker_detach(w); /* the handle outlives the scheduler */
    aps_dispatch_free(d, 1);
}

static void
test_attach_validation(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(1);
    aps_worker *w = NULL;
    aps_error err;
    aps_worker_options o;
    memset(&o, 0, sizeof(o));
    assert_int_equal(aps_worker_attach(s, &o, &w, &err), APS_EINVAL); /* no worker_id */
    assert_non_null(strstr(err.msg, "worker_id"));
    o.worker_id = "w";
    o.queue = "has space";
    assert_int_equal(aps_worker_attach(s, &o, &w, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "queue"));
    o.queue = NULL;
    o.max_in_flight = APS_WORKER_IN_FLIGHT_MAX + 1;
    assert_int_equal(aps_worker_attach(s, &o, &w, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "max_in_flight"));
    o.max_in_flight = 0;
    o.lease_us = -1;
    assert_int_equal(aps_worker_attach(s, &o, &w, &err), APS_EINVAL);
    o.lease_us = 0;
    const char *empty[] = {""};
    o.tasks = empty;
    o.n_tasks = 1;
    assert_int_equal(aps_worker_attach(s, &o, &w, &err), APS_EINVAL);
    assert_null(w);
    aps_scheduler_destroy(s);

    s = open_sched(0); /* no workers executor */
    memset(&o, 0, sizeof(o));
    o.worker_id = "w";
    assert_int_equal(aps_worker_attach(s, &o, &w, &err), APS_ENOENT);
    assert_int_equal(aps_worker_complete(s, "0123456789abcdef0123456789abcdef",
                                         "0123456789abcdef0123456789abcdef", &OK_42),
                     APS_ENOENT);
    aps_scheduler_destroy(s);

    /* Executor settings are checked at create. */
    aps_executor_def bad = {.name = "r", .type = "workers", .lease_us = -5};
    aps_scheduler_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.executors = &bad;
    cfg.n_executors = 1;
    s = NULL;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "lease_us"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_complete_with_return_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_with_traceback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_expiry_frees_the_slot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_at_most_once_two_workers_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_in_flight_and_executor_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extend_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_token_and_bad_results, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_isolation_and_task_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_running_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_and_blocking_take, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach_then_complete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misfire_when_taken_late, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_interrupts_and_detach_after_destroy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_attach_validation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
