/*
 * The scheduler's rules, driven by an injected clock in external-loop mode
 * (deterministic: no sleeps decide an outcome): misfire, coalesce,
 * max_instances and the overlap policies, pause/resume/run-now, exhausted
 * triggers, backfill, request-id replay across restart, statistics, several
 * stores, the event log's sequences, subscribers and their gap marker,
 * restart recovery, and the blocking and background modes on the real clock.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "store.h" /* aps__store_fs_type_test */
#include "testutil.h"

#define SEC INT64_C(1000000)
/* 2026-11-23T10:00:00Z */
#define T0 TU_T0

/* ---- a recording function (the clock: tu_clock of testutil.h) ------------- */

/* Calls of the test function, and a gate that can hold them. */
static pthread_mutex_t calls_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t calls_cv = PTHREAD_COND_INITIALIZER;
static aps_time calls[4096];
static size_t n_calls;
static int gate_closed;
static int running_now;

static int
record_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
          size_t error_len)
{
    (void)job_id;
    (void)userdata;
    /* Time passes before the call is counted, so before the loop looks. */
    if (arg != NULL && strcmp(arg, "advance") == 0)
        tu_clock_set(scheduled + 2 * SEC);
    pthread_mutex_lock(&calls_mu);
    running_now++;
    pthread_cond_broadcast(&calls_cv);
    while (gate_closed)
        pthread_cond_wait(&calls_cv, &calls_mu);
    if (n_calls < 4096)
        calls[n_calls++] = scheduled;
    running_now--;
    pthread_mutex_unlock(&calls_mu);
    if (arg != NULL && strcmp(arg, "fail") == 0) {
        snprintf(error, error_len, "failed on purpose");
        return 1;
    }
    return 0;
}

static void
gate(int closed)
{
    pthread_mutex_lock(&calls_mu);
    gate_closed = closed;
    pthread_cond_broadcast(&calls_cv);
    pthread_mutex_unlock(&calls_mu);
}

static size_t
calls_count(void)
{
    pthread_mutex_lock(&calls_mu);
    size_t n = n_calls;
    pthread_mutex_unlock(&calls_mu);
    return n;
}

/* ---- recorded events -------------------------------------------------------- */

static aps_event *events[16384];
static size_t n_events;

static void
listener(const aps_event *ev, void *userdata)
{
    (void)userdata;
    aps_event *copy = calloc(1, sizeof(*copy));
    assert_non_null(copy);
    copy->type = ev->type;
    copy->sequence = ev->sequence;
    copy->time = ev->time;
    copy->job_id = ev->job_id ? strdup(ev->job_id) : NULL;
    copy->message = ev->message ? strdup(ev->message) : NULL;
    if (ev->n_run_times) {
        copy->run_times = malloc(ev->n_run_times * sizeof(aps_time));
        memcpy(copy->run_times, ev->run_times, ev->n_run_times * sizeof(aps_time));
        copy->n_run_times = ev->n_run_times;
    }
    if (ev->outcome && ev->outcome->error)
        copy->run_id = strdup(ev->outcome->error); /* the error text, for assertions */
    if (n_events < 16384)
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

static const aps_event *
last_event(aps_event_type type)
{
    for (size_t i = n_events; i > 0; i--) {
        if (events[i - 1]->type == type)
            return events[i - 1];
    }
    return NULL;
}

static void
clear_events(void)
{
    for (size_t i = 0; i < n_events; i++)
        aps_event_free(events[i]);
    n_events = 0;
}

/* ---- fixtures ----------------------------------------------------------------- */

static aps_scheduler *
open_sched(const char *lmdb_dir, int start)
{
    aps_store_def stores[2] = {{"default", lmdb_dir ? "lmdb" : "memory", lmdb_dir},
                               {"volatile", "memory", NULL}};
    aps_executor_def execs[1] = {{.name = "default", .type = "threadpool", .max_workers = 4, .max_queue = 100}};
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = stores;
    cfg.n_stores = 2;
    cfg.executors = execs;
    cfg.n_executors = 1;
    cfg.clock = &tu_clock;
    cfg.no_sync = 1;
    cfg.jitter_seed = 42;
    int rc = aps_scheduler_create(&cfg, &s, &err);
    if (rc != 0)
        fail_msg("create: %s", err.msg);
    assert_int_equal(aps_scheduler_register_function(s, "record", record_fn, NULL), 0);
    assert_int_equal(aps_scheduler_add_listener(s, listener, APS_EVENT_ALL, NULL), 0);
    if (start)
        assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);
    return s;
}

/* Processes until `n` calls were made and no run is in flight, or 5 s. */
static void
settle(aps_scheduler *s, size_t want_calls)
{
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
        if (calls_count() >= want_calls) {
            /* One more pass records the completions. */
            usleep(1000);
            assert_int_equal(aps_scheduler_process(s, NULL), 0);
            aps_job *j = NULL;
            (void)j;
            return;
        }
        usleep(1000);
    }
    fail_msg("timed out waiting for %zu calls (have %zu)", want_calls, calls_count());
}

/* Processes until an event of `type` has been seen `n` times, or 5 s. */
static void
settle_events(aps_scheduler *s, aps_event_type type, size_t n)
{
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
        if (count_events(type) >= n)
            return;
        usleep(1000);
    }
    fail_msg("timed out waiting for %zu %s events (have %zu)", n, aps_event_type_name(type),
             count_events(type));
}

static int
setup(void **state)
{
    (void)state;
    tu_clock_set(T0);
    n_calls = 0;
    gate(0);
    clear_events();
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    gate(0);
    clear_events();
    return 0;
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

static aps_job_spec
func_job(const char *id, const aps_trigger_spec *trigger, const char *arg)
{
    return tu_function_job(id, trigger, "record", arg);
}

static aps_job *
add(aps_scheduler *s, const aps_job_spec *spec)
{
    aps_job *job = NULL;
    aps_error err;
    int rc = aps_job_add(s, spec, NULL, &job, &err);
    if (rc != 0)
        fail_msg("add %s: %s", spec->id ? spec->id : "(generated)", err.msg);
    return job;
}

static aps_job *
get(aps_scheduler *s, const char *id)
{
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, id, &job), 0);
    return job;
}

/* ---- tests ------------------------------------------------------------------- */

static void
test_interval_fires_on_time(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(10);
    aps_job_spec spec = func_job("tick", &t, NULL);
    aps_job *job = add(s, &spec);
    /* APScheduler: an interval without start_date starts at now + interval. */
    assert_true(job->next_run_time == T0 + 10 * SEC);
    assert_int_equal(count_events(APS_EVENT_JOB_ADDED), 0); /* listeners run in process() */
    aps_job_free(job);

    aps_time next = 0;
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next == T0 + 10 * SEC);
    assert_int_equal(count_events(APS_EVENT_JOB_ADDED), 1);
    assert_int_equal(calls_count(), 0);

    tu_clock_set(T0 + 10 * SEC);
    settle(s, 1);
    settle_events(s, APS_EVENT_JOB_EXECUTED, 1);
    assert_true(calls[0] == T0 + 10 * SEC);
    assert_int_equal(count_events(APS_EVENT_JOB_SUBMITTED), 1);
    job = get(s, "tick");
    assert_true(job->next_run_time == T0 + 20 * SEC);
    assert_int_equal(job->stats.runs, 1);
    assert_int_equal(job->running_instances, 0);
    aps_job_free(job);
    aps_scheduler_destroy(s);
}

static void
test_misfire_grace_time(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(10);
    aps_job_spec spec = func_job("late", &t, NULL);
    aps_job_free(add(s, &spec)); /* default grace: 1 s */
    /* 5 s late: more than 1 s: JOB_MISSED, not run. */
    tu_clock_set(T0 + 15 * SEC);
    settle_events(s, APS_EVENT_JOB_MISSED, 1);
    assert_int_equal(calls_count(), 0);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), 0);
    const aps_event *ev = last_event(APS_EVENT_JOB_MISSED);
    assert_int_equal(ev->n_run_times, 1);
    assert_true(ev->run_times[0] == T0 + 10 * SEC);
    aps_job *job = get(s, "late");
    assert_int_equal(job->stats.misses, 1);
    assert_true(job->next_run_time == T0 + 20 * SEC);
    aps_job_free(job);

    /* 0.5 s late with the default 1 s grace: runs. */
    tu_clock_set(T0 + 20 * SEC + SEC / 2);
    settle(s, 1);
    assert_true(calls[0] == T0 + 20 * SEC);

    /* A job with a 30 s grace runs 20 s late. */
    aps_job_spec spec2 = func_job("patient", &t, NULL);
    spec2.misfire = APS_MISFIRE_DURATION;
    spec2.misfire_grace_us = 30 * SEC;
    aps_job_free(add(s, &spec2));
    tu_clock_set(T0 + 20 * SEC + SEC / 2 + 30 * SEC);
    settle(s, 3);
    aps_scheduler_destroy(s);
}

/* A JOB_MISSED event carries the time the executor judged the run, not the
 * time the loop took its completion: the crash test saw a miss stamped
 * 0.194 s after a run time whose grace was 0.2 s. One worker runs the
 * missed run, then a run that moves the clock on before the loop looks. */
static void
test_missed_event_time_is_when_judged(void **state)
{
    (void)state;
    static const aps_executor_def execs[] = {
        {.name = "default", .type = "threadpool", .max_workers = 1}};
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err;
    memset(&cfg, 0, sizeof(cfg));
    cfg.executors = execs;
    cfg.n_executors = 1;
    cfg.clock = &tu_clock;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), 0);
    assert_int_equal(aps_scheduler_register_function(s, "record", record_fn, NULL), 0);
    assert_int_equal(aps_scheduler_add_listener(s, listener, APS_EVENT_ALL, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);

    aps_job_spec late = func_job("late", NULL, NULL); /* default grace: 1 s */
    late.next_run_time = T0 + 10 * SEC;
    aps_job_spec mover = func_job("mover", NULL, "advance");
    mover.next_run_time = T0 + 15 * SEC;
    mover.misfire = APS_MISFIRE_UNLIMITED;
    aps_job_free(add(s, &late));
    aps_job_free(add(s, &mover));
    tu_clock_set(T0 + 15 * SEC);
    /* One pass submits both; the loop looks again only after "mover". */
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    for (int i = 0; i < 5000 && calls_count() == 0; i++)
        usleep(1000);
    assert_int_equal(calls_count(), 1);
    settle_events(s, APS_EVENT_JOB_MISSED, 1);
    settle_events(s, APS_EVENT_JOB_EXECUTED, 1);
    const aps_event *ev = last_event(APS_EVENT_JOB_MISSED);
    assert_true(ev->run_times[0] == T0 + 10 * SEC);
    assert_true(ev->time == T0 + 15 * SEC);
    ev = last_event(APS_EVENT_JOB_EXECUTED);
    assert_non_null(ev);
    assert_true(ev->time == T0 + 17 * SEC);
    aps_scheduler_destroy(s);
}

static void
test_coalesce(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(1);
    aps_job_spec a = func_job("coalesced", &t, NULL);
    a.misfire = APS_MISFIRE_UNLIMITED;
    aps_job_spec b = func_job("every-one", &t, NULL);
    b.misfire = APS_MISFIRE_UNLIMITED;
    b.coalesce = 0;
    aps_job_free(add(s, &a));
    aps_job_free(add(s, &b));
    /* Ten fire times pass (T0+1 .. T0+10). */
    tu_clock_set(T0 + 10 * SEC);
    settle(s, 11);
    settle_events(s, APS_EVENT_JOB_EXECUTED, 11);
    assert_int_equal(calls_count(), 11);
    aps_job *ja = get(s, "coalesced");
    assert_int_equal(ja->stats.runs, 1);
    assert_int_equal(ja->stats.coalesced, 9);
    assert_true(ja->next_run_time == T0 + 11 * SEC);
    aps_job *jb = get(s, "every-one");
    assert_int_equal(jb->stats.runs, 10);
    assert_true(jb->next_run_time == T0 + 11 * SEC);
    aps_job_free(ja);
    aps_job_free(jb);
    /* The coalesced run carries only the latest run time. */
    for (size_t i = 0; i < n_events; i++) {
        if (events[i]->type == APS_EVENT_JOB_SUBMITTED && strcmp(events[i]->job_id, "coalesced") == 0) {
            assert_int_equal(events[i]->n_run_times, 1);
            assert_true(events[i]->run_times[0] == T0 + 10 * SEC);
        }
        if (events[i]->type == APS_EVENT_JOB_SUBMITTED && strcmp(events[i]->job_id, "every-one") == 0)
            assert_int_equal(events[i]->n_run_times, 10);
    }
    aps_scheduler_destroy(s);
}

/* A function's error longer than the stored last_error (255 bytes) is cut
 * after its last whole UTF-8 character, not in the middle of one. */
static int
long_error_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
              size_t error_len)
{
    (void)job_id;
    (void)arg;
    (void)scheduled;
    (void)userdata;
    size_t o = 0;
    for (int i = 0; i < 150 && o + 3 < error_len; i++) {
        memcpy(error + o, "\xc3\xa9", 2); /* é */
        o += 2;
    }
    error[o] = '\0';
    return 1;
}

static void
test_last_error_cut_at_a_character(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    assert_int_equal(aps_scheduler_register_function(s, "long_error", long_error_fn, NULL), 0);
    aps_trigger_spec t = interval_s(10);
    aps_job_spec keep = tu_function_job("loud2", &t, "long_error", NULL);
    aps_job_free(add(s, &keep));
    tu_clock_set(T0 + 10 * SEC);
    settle_events(s, APS_EVENT_JOB_ERROR, 1);
    aps_job *job = get(s, "loud2");
    size_t n = strlen(job->stats.last_error);
    assert_int_equal(n, 254); /* 127 whole characters of 2 bytes */
    for (size_t i = 0; i < n; i += 2)
        assert_memory_equal(job->stats.last_error + i, "\xc3\xa9", 2);
    aps_job_free(job);
    aps_scheduler_destroy(s);
}

/* A backlog longer than the loop enumerates (1,000,000 run times: a
 * per-second job after 14 days down): coalesced, the run is the latest fire
 * time, on time (APScheduler's run_times[-1]), not the last enumerated;
 * without coalesce, the run has the oldest 999 and the latest (on time:
 * it runs), and the rest is reported missed as "over N more". */
static void
test_backlog_beyond_enumeration(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(1);
    aps_job_spec a = func_job("down-long", &t, NULL); /* coalesce, 1 s grace */
    aps_job_spec b = func_job("each-one", &t, NULL);
    b.coalesce = 0;
    aps_job_free(add(s, &a));
    aps_job_free(add(s, &b));
    aps_time now = T0 + 1200000 * SEC + SEC / 2;
    tu_clock_set(now);
    settle(s, 2);
    settle_events(s, APS_EVENT_JOB_EXECUTED, 2);
    assert_true(calls[0] == T0 + 1200000 * SEC);
    assert_true(calls[1] == T0 + 1200000 * SEC);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), 2);
    aps_job *ja = get(s, "down-long");
    assert_true(ja->next_run_time == T0 + 1200001 * SEC);
    assert_int_equal(ja->stats.runs, 1);
    aps_job *jb = get(s, "each-one");
    assert_true(jb->next_run_time == T0 + 1200001 * SEC);
    assert_int_equal(jb->stats.runs, 1);
    aps_job_free(ja);
    aps_job_free(jb);
    int seen = 0;
    for (size_t i = 0; i < n_events; i++) {
        const aps_event *e = events[i];
        if (e->type != APS_EVENT_JOB_MISSED || strcmp(e->job_id, "each-one") != 0 ||
            e->message == NULL || strstr(e->message, "more run times were missed") == NULL)
            continue;
        assert_true(e->run_times[0] == T0 + 1000 * SEC); /* displaced by the latest */
        assert_non_null(strstr(e->message, "over 999000 more"));
        seen++;
    }
    assert_int_equal(seen, 1);
    aps_scheduler_destroy(s);
}

/* A due job whose trigger fails (here an all_of whose two grids never
 * meet, added with an explicit next run time, so never asked before) is
 * paused with a JOB_MODIFIED event that says why, and the other jobs of its
 * store go on firing (the failing job used to fail the whole due batch,
 * pass after pass). */
static void
test_failing_trigger_paused(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(tu_tmpdir("badtrig"), 1);
    aps_trigger_spec t = interval_s(1);
    aps_job_spec good = func_job("good", &t, NULL);
    aps_job_free(add(s, &good));
    aps_trigger_spec kids[2] = {interval_s(2), interval_s(2)};
    kids[0].u.interval.start_date = T0;
    kids[1].u.interval.start_date = T0 + SEC;
    aps_trigger_spec all;
    memset(&all, 0, sizeof(all));
    all.kind = APS_TRIGGER_ALL_OF;
    all.u.combo.triggers = kids;
    all.u.combo.count = 2;
    aps_job_spec bad = func_job("bad", &all, NULL);
    bad.next_run_time = T0 + SEC;
    aps_job_free(add(s, &bad));
    for (int i = 1; i <= 3; i++) {
        tu_clock_set(T0 + i * SEC);
        settle(s, i);
    }
    assert_int_equal(calls_count(), 3);
    aps_job *j = get(s, "bad");
    assert_true(j->paused);
    assert_true(j->next_run_time == APS_TIME_NONE);
    aps_job_free(j);
    settle_events(s, APS_EVENT_JOB_MODIFIED, 1);
    const aps_event *ev = last_event(APS_EVENT_JOB_MODIFIED);
    assert_string_equal(ev->job_id, "bad");
    assert_non_null(ev->message);
    assert_non_null(strstr(ev->message, "paused: its trigger failed"));
    assert_non_null(strstr(ev->message, "next fire time could not be computed"));
    assert_int_equal(count_events(APS_EVENT_JOB_SUBMITTED), 3); /* the good job's */
    aps_scheduler_destroy(s);
}

static void
wait_running(int n)
{
    pthread_mutex_lock(&calls_mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    while (running_now < n) {
        if (pthread_cond_timedwait(&calls_cv, &calls_mu, &ts) == ETIMEDOUT)
            break;
    }
    int have = running_now;
    pthread_mutex_unlock(&calls_mu);
    if (have < n)
        fail_msg("expected %d running, have %d", n, have);
}

static void
overlap_case(aps_overlap policy, size_t expect_runs, size_t expect_skips, int unlimited)
{
    setup(NULL);
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(1);
    aps_job_spec spec = func_job("busy", &t, NULL);
    if (unlimited)
        spec.misfire = APS_MISFIRE_UNLIMITED;
    spec.overlap = policy;
    aps_job_free(add(s, &spec));
    gate(1);
    tu_clock_set(T0 + 1 * SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    wait_running(1);
    for (int k = 2; k <= 4; k++) {
        tu_clock_set(T0 + k * SEC);
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
    }
    assert_int_equal(count_events(APS_EVENT_JOB_MAX_INSTANCES), expect_skips);
    aps_job *job = get(s, "busy");
    assert_int_equal(job->running_instances, 1);
    assert_int_equal(job->queued_runs, expect_runs - 1);
    aps_job_free(job);
    gate(0);
    settle_events(s, APS_EVENT_JOB_EXECUTED, expect_runs);
    /* Give a wrongly started extra run the chance to show. */
    for (int i = 0; i < 20; i++) {
        aps_scheduler_process(s, NULL);
        usleep(1000);
    }
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), expect_runs);
    assert_int_equal(calls_count(), expect_runs);
    job = get(s, "busy");
    assert_int_equal(job->stats.max_instance_skips, expect_skips);
    assert_int_equal(job->queued_runs, 0);
    aps_job_free(job);
    aps_scheduler_destroy(s);
    teardown(NULL);
}

static void
test_max_instances_and_overlap(void **state)
{
    (void)state;
    /* Runs due at T0+2, +3, +4 while the T0+1 run is held. */
    overlap_case(APS_OVERLAP_SKIP, 1, 3, 1);           /* APScheduler */
    overlap_case(APS_OVERLAP_QUEUE_ONE, 2, 2, 1);      /* one waits, two skipped */
    overlap_case(APS_OVERLAP_QUEUE_ALL, 4, 0, 1);      /* all wait, run in order */
    overlap_case(APS_OVERLAP_CANCEL_RUNNING, 2, 2, 1); /* one replaces the running one */
    /* With the default 1 s grace: a run that waited in the queue (here 2 s,
     * until T0+4) is not judged against it again (the proto's promise); it
     * was due on time. */
    overlap_case(APS_OVERLAP_QUEUE_ONE, 2, 2, 0);
    overlap_case(APS_OVERLAP_QUEUE_ALL, 4, 0, 0);
    overlap_case(APS_OVERLAP_CANCEL_RUNNING, 2, 2, 0);
}

/* Adds `id`, every second, overlap QUEUE_ALL, no misfire limit; with the
 * gate closed, its runs due at T0+1 s .. T0+n s: the first runs (held),
 * the others wait in its queue. */
static void
queued_job(aps_scheduler *s, const char *id, int n)
{
    aps_trigger_spec t = interval_s(1);
    aps_job_spec spec = func_job(id, &t, NULL);
    spec.misfire = APS_MISFIRE_UNLIMITED;
    spec.overlap = APS_OVERLAP_QUEUE_ALL;
    aps_job_free(add(s, &spec));
    gate(1);
    for (int k = 1; k <= n; k++) {
        tu_clock_set(T0 + k * SEC);
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
        if (k == 1)
            wait_running(1);
    }
}

/* A higher max_instances starts the runs queued for an instance slot at
 * once, in order, not when the running one ends. */
static void
test_modify_max_instances_starts_queued(void **state)
{
    (void)state;
    aps_error err;
    aps_scheduler *s = open_sched(NULL, 1);
    queued_job(s, "q", 3);
    aps_job *job = get(s, "q");
    assert_int_equal(job->running_instances, 1);
    assert_int_equal(job->queued_runs, 2);
    aps_job_free(job);
    aps_job_spec more;
    memset(&more, 0, sizeof(more));
    more.max_instances = 3;
    assert_int_equal(aps_job_modify(s, "q", &more, APS_MODIFY_MAX_INSTANCES, NULL, &job, &err), 0);
    assert_int_equal(job->running_instances, 3);
    assert_int_equal(job->queued_runs, 0);
    aps_job_free(job);
    wait_running(3); /* the gate still holds the first */
    gate(0);
    settle_events(s, APS_EVENT_JOB_EXECUTED, 3);
    assert_int_equal(calls_count(), 3);
    aps_time seen[3] = {calls[0], calls[1], calls[2]};
    for (int i = 0; i < 3; i++) {
        int found = 0;
        for (int k = 0; k < 3; k++)
            found += seen[k] == T0 + (i + 1) * SEC;
        assert_int_equal(found, 1);
    }
    aps_scheduler_destroy(s);
}

/* Opens the gate after 100 ms (for a shutdown that waits for the run it
 * holds). */
static void *
open_gate_later(void *arg)
{
    (void)arg;
    usleep(100000);
    gate(0);
    return NULL;
}

/* A shutdown while runs wait in a job's queue: the running one finishes,
 * the queued ones stay queued in the stored job (not started on the
 * stopped executors, to fail after SCHEDULER_SHUTDOWN), and the next
 * scheduler on the store starts them first, in order, when the job is
 * next due. A scheduler shut down does not start again (its executors are
 * gone). */
static void
test_shutdown_keeps_queued_runs(void **state)
{
    (void)state;
    char path[256];
    snprintf(path, sizeof(path), "%s", tu_tmpdir("squeued"));
    aps_scheduler *s = open_sched(path, 1);
    queued_job(s, "q", 3);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, open_gate_later, NULL), 0);
    assert_int_equal(aps_scheduler_shutdown(s, 1), 0);
    pthread_join(th, NULL);
    assert_int_equal(calls_count(), 1);
    assert_int_equal(count_events(APS_EVENT_JOB_EXECUTED), 1);
    assert_int_equal(count_events(APS_EVENT_JOB_ERROR), 0);
    aps_job *job = get(s, "q");
    assert_int_equal(job->running_instances, 0);
    assert_int_equal(job->queued_runs, 2);
    aps_job_free(job);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), APS_ESTATE);
    aps_scheduler_destroy(s);

    s = open_sched(path, 1);
    tu_clock_set(T0 + 4 * SEC);
    settle(s, 4);
    settle_events(s, APS_EVENT_JOB_EXECUTED, 4);
    assert_true(calls[1] == T0 + 2 * SEC);
    assert_true(calls[2] == T0 + 3 * SEC);
    assert_true(calls[3] == T0 + 4 * SEC);
    job = get(s, "q");
    assert_int_equal(job->queued_runs, 0);
    aps_job_free(job);
    aps_scheduler_destroy(s);
}

/* At a shutdown, a run queued in a job that will never be due again (its
 * trigger ended while the run waited) cannot wait for a next start: it
 * ends interrupted (JOB_ERROR), and the job, done, is removed. */
static void
test_shutdown_ends_queued_runs_of_ended_jobs(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(1);
    t.u.interval.end_date = T0 + 2 * SEC;
    aps_job_spec spec = func_job("ends", &t, NULL);
    spec.misfire = APS_MISFIRE_UNLIMITED;
    spec.overlap = APS_OVERLAP_QUEUE_ONE;
    aps_job_free(add(s, &spec));
    gate(1);
    tu_clock_set(T0 + 1 * SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    wait_running(1);
    tu_clock_set(T0 + 2 * SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    aps_job *job = get(s, "ends");
    assert_int_equal(job->queued_runs, 1);
    assert_true(job->next_run_time == APS_TIME_NONE);
    aps_job_free(job);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, open_gate_later, NULL), 0);
    assert_int_equal(aps_scheduler_shutdown(s, 1), 0);
    pthread_join(th, NULL);
    assert_int_equal(calls_count(), 1);
    assert_int_equal(count_events(APS_EVENT_JOB_ERROR), 1);
    const aps_event *ev = last_event(APS_EVENT_JOB_ERROR);
    assert_string_equal(ev->job_id, "ends");
    assert_true(ev->run_times[0] == T0 + 2 * SEC);
    /* (the listener keeps the outcome's error text in run_id) */
    assert_string_equal(ev->run_id,
                        "interrupted: the scheduler shut down before the queued run started");
    assert_int_equal(count_events(APS_EVENT_JOB_REMOVED), 1);
    assert_int_equal(aps_job_get(s, "ends", &job), APS_ENOENT);
    aps_scheduler_destroy(s);
}

/* RunJobNow while an instance runs follows the job's overlap policy, as a
 * scheduled run would: refused (SKIP), queued once (QUEUE_ONE, and
 * CANCEL_RUNNING, which also cancels the running one), queued each time
 * (QUEUE_ALL). */
static void
run_now_case(aps_overlap policy, int accepted)
{
    setup(NULL);
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(3600);
    aps_job_spec spec = func_job("now", &t, NULL);
    spec.overlap = policy;
    aps_job_free(add(s, &spec));
    gate(1);
    char run_id[33];
    int queued = -1, ok = 0;
    assert_int_equal(aps_job_run_now(s, "now", NULL, run_id, &queued, NULL), 0);
    assert_int_equal(queued, 0);
    wait_running(1);
    for (int i = 0; i < 3; i++) {
        aps_error err;
        int rc = aps_job_run_now(s, "now", NULL, run_id, &queued, &err);
        if (rc == 0) {
            assert_int_equal(queued, 1);
            ok++;
        } else {
            assert_int_equal(rc, APS_ESTATE);
            assert_non_null(strstr(err.msg, "max_instances"));
        }
    }
    assert_int_equal(ok, accepted);
    aps_job *job = get(s, "now");
    assert_int_equal(job->queued_runs, accepted);
    aps_job_free(job);
    gate(0);
    settle(s, 1 + (size_t)accepted);
    assert_int_equal(calls_count(), 1 + (size_t)accepted);
    aps_scheduler_destroy(s);
    teardown(NULL);
}

/* A retried RunJobNow (same request id) answers as the first call did: the
 * same run id for a run started, "queued" for a run queued, also once the
 * job is gone; and starts or queues nothing more. */
static void
test_run_now_replay(void **state)
{
    (void)state;
    setup(NULL);
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(3600);
    aps_job_spec spec = func_job("again", &t, NULL);
    spec.overlap = APS_OVERLAP_QUEUE_ALL;
    aps_job_free(add(s, &spec));
    gate(1);
    aps_mutation started = {.request_id = "now-1", .request_fingerprint = 0x71};
    aps_mutation queued_m = {.request_id = "now-2", .request_fingerprint = 0x72};
    char first[33], again[33];
    int queued = -1;
    assert_int_equal(aps_job_run_now(s, "again", &started, first, &queued, NULL), 0);
    assert_int_equal(queued, 0);
    assert_int_equal(strlen(first), 32);
    assert_int_equal(aps_job_run_now(s, "again", &started, again, &queued, NULL), 0);
    assert_string_equal(again, first);
    assert_int_equal(queued, 0);
    wait_running(1);
    assert_int_equal(aps_job_run_now(s, "again", &queued_m, again, &queued, NULL), 0);
    assert_int_equal(queued, 1);
    assert_string_equal(again, "");
    queued = -1;
    strcpy(again, "x");
    assert_int_equal(aps_job_run_now(s, "again", &queued_m, again, &queued, NULL), 0);
    assert_int_equal(queued, 1);
    assert_string_equal(again, "");
    aps_job *job = get(s, "again");
    assert_int_equal(job->queued_runs, 1); /* not queued twice */
    aps_job_free(job);
    gate(0);
    settle(s, 2);
    assert_int_equal(calls_count(), 2);
    assert_int_equal(aps_job_remove(s, "again", NULL), 0);
    assert_int_equal(aps_job_run_now(s, "again", &started, again, &queued, NULL), 0);
    assert_string_equal(again, first);
    assert_int_equal(queued, 0);
    assert_int_equal(aps_job_run_now(s, "again", &queued_m, again, &queued, NULL), 0);
    assert_int_equal(queued, 1);
    aps_scheduler_destroy(s);
    teardown(NULL);
}

static void
test_run_now_overlap(void **state)
{
    (void)state;
    run_now_case(APS_OVERLAP_SKIP, 0);
    run_now_case(APS_OVERLAP_QUEUE_ONE, 1);
    run_now_case(APS_OVERLAP_QUEUE_ALL, 3);
    run_now_case(APS_OVERLAP_CANCEL_RUNNING, 1);
}

static void
test_queue_all_runs_in_order(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    queued_job(s, "fifo", 5);
    gate(0);
    settle(s, 5);
    for (int k = 0; k < 5; k++)
        assert_true(calls[k] == T0 + (k + 1) * SEC);
    aps_scheduler_destroy(s);
}

static void
test_pause_resume_run_now_remove(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(60);
    aps_job_spec spec = func_job("p", &t, NULL);
    aps_job_free(add(s, &spec));
    aps_job *job = NULL;
    assert_int_equal(aps_job_pause(s, "p", NULL, &job), 0);
    assert_true(job->paused);
    assert_true(job->next_run_time == APS_TIME_NONE);
    aps_job_free(job);
    /* Paused: nothing fires. */
    tu_clock_set(T0 + 120 * SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_int_equal(calls_count(), 0);
    /* Resume recomputes from now: the interval counts from its start date
     * T0+60, so the next fire time not before T0+120 is T0+120 itself. */
    tu_clock_set(T0 + 130 * SEC);
    assert_int_equal(aps_job_resume(s, "p", NULL, &job), 0);
    assert_false(job->paused);
    assert_true(job->next_run_time == T0 + 180 * SEC);
    aps_job_free(job);
    tu_clock_set(T0 + 120 * SEC);
    /* Run now: one extra run at once, the schedule untouched. */
    char run_id[33] = "", first_run[33];
    int queued = -1;
    aps_time wall0 = aps_time_now() / 1000;
    assert_int_equal(aps_job_run_now(s, "p", NULL, run_id, &queued, NULL), 0);
    assert_int_equal(strlen(run_id), 32);
    assert_int_equal(queued, 0);
    /* Run ids are time-ordered by the wall clock's milliseconds (whatever
     * the scheduler's clock says), so the run index grows at its end. */
    char ms_hex[13];
    memcpy(ms_hex, run_id, 12);
    ms_hex[12] = '\0';
    aps_time run_ms = (aps_time)strtoull(ms_hex, NULL, 16);
    assert_true(run_ms >= wall0 && run_ms <= aps_time_now() / 1000);
    memcpy(first_run, run_id, sizeof(first_run));
    settle(s, 1);
    assert_true(calls[0] == T0 + 120 * SEC);
    job = get(s, "p");
    assert_true(job->next_run_time == T0 + 180 * SEC);
    assert_int_equal(job->stats.runs, 1);
    aps_job_free(job);
    /* A paused job runs now too, and stays paused. */
    assert_int_equal(aps_job_pause(s, "p", NULL, NULL), 0);
    assert_int_equal(aps_job_run_now(s, "p", NULL, run_id, &queued, NULL), 0);
    assert_true(strcmp(first_run, run_id) < 0 || memcmp(first_run, run_id, 12) == 0);
    assert_string_not_equal(first_run, run_id);
    settle(s, 2);
    job = get(s, "p");
    assert_true(job->paused);
    aps_job_free(job);
    assert_int_equal(aps_job_resume(s, "p", NULL, NULL), 0);
    assert_int_equal(aps_job_remove(s, "p", NULL), 0);
    assert_int_equal(aps_job_get(s, "p", &job), APS_ENOENT);
    assert_int_equal(aps_job_remove(s, "p", NULL), APS_ENOENT);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_int_equal(count_events(APS_EVENT_JOB_REMOVED), 1);
    assert_int_equal(count_events(APS_EVENT_JOB_MODIFIED), 4); /* pause, resume, pause, resume */
    /* A retried remove (same request id) succeeds though the job is gone. */
    aps_trigger_spec t2 = interval_s(60);
    aps_job_spec spec2 = func_job("r", &t2, NULL);
    aps_job_free(add(s, &spec2));
    aps_mutation rm = {.request_id = "rm-1"};
    assert_int_equal(aps_job_remove(s, "r", &rm), 0);
    assert_int_equal(aps_job_remove(s, "r", &rm), 0);
    aps_mutation other = {.request_id = "rm-2"};
    assert_int_equal(aps_job_remove(s, "r", &other), APS_ENOENT);
    aps_scheduler_destroy(s);
}

static void
test_date_job_runs_once_and_is_removed(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    /* The seed's one-shot job: only next_run_time, no trigger. */
    aps_job_spec spec = func_job("once", NULL, NULL);
    spec.next_run_time = T0 + 12 * SEC;
    aps_job *job = add(s, &spec);
    assert_int_equal(job->trigger->kind, APS_TRIGGER_DATE);
    assert_true(job->next_run_time == T0 + 12 * SEC);
    aps_job_free(job);
    tu_clock_set(T0 + 12 * SEC);
    settle(s, 1);
    settle_events(s, APS_EVENT_JOB_REMOVED, 1);
    assert_int_equal(aps_job_get(s, "once", &job), APS_ENOENT);
    /* JOB_REMOVED comes after JOB_SUBMITTED. */
    assert_true(last_event(APS_EVENT_JOB_REMOVED)->sequence >
                last_event(APS_EVENT_JOB_SUBMITTED)->sequence);
    aps_scheduler_destroy(s);
}

static void
test_backfill(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_CRON;
    t.u.cron.minute = "0";
    t.u.cron.start_date = t.u.cron.end_date = APS_TIME_NONE;
    aps_job_spec spec = func_job("hourly", &t, NULL);
    aps_job_free(add(s, &spec));
    size_t count = 0;
    aps_error err;
    /* Five past hours: 05:00 .. 09:00 on 2026-11-23. */
    assert_int_equal(aps_job_backfill(s, "hourly", T0 - 5 * 3600 * SEC, T0, 0, NULL, &count, &err), 0);
    assert_int_equal(count, 5);
    settle(s, 5);
    settle_events(s, APS_EVENT_JOB_EXECUTED, 5);
    for (size_t i = 0; i < 5; i++)
        assert_true(calls[i] == T0 - (int64_t)(5 - i) * 3600 * SEC);
    assert_int_equal(count_events(APS_EVENT_JOB_MISSED), 0); /* not subject to misfire */
    assert_int_equal(aps_job_backfill(s, "hourly", T0, T0 - SEC, 0, NULL, &count, &err), APS_EINVAL);
    assert_int_equal(aps_job_backfill(s, "nope", T0 - SEC, T0, 0, NULL, &count, &err), APS_ENOENT);
    aps_scheduler_destroy(s);
}

static void
test_statistics(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(1);
    aps_job_spec spec = func_job("flaky", &t, "fail");
    spec.coalesce = 0;
    spec.misfire = APS_MISFIRE_UNLIMITED;
    aps_job_free(add(s, &spec));
    /* Runs at T0+1..T0+4 all start at T0+4: lateness 3, 2, 1, 0 s. */
    tu_clock_set(T0 + 4 * SEC);
    settle(s, 4);
    settle_events(s, APS_EVENT_JOB_ERROR, 4);
    aps_job *job = get(s, "flaky");
    assert_int_equal(job->stats.runs, 4);
    assert_int_equal(job->stats.failures, 4);
    assert_int_equal(job->stats.last_status, APS_RUN_FAILED);
    assert_string_equal(job->stats.last_error, "failed on purpose");
    assert_true(job->stats.last_run_time == T0 + 4 * SEC);
    assert_int_equal(job->stats.lateness_samples, 4);
    assert_true(job->stats.lateness_max_us == 3 * SEC);
    assert_true(job->stats.lateness_p50_us >= 1 * SEC && job->stats.lateness_p50_us <= 2 * SEC);
    assert_string_equal(last_event(APS_EVENT_JOB_ERROR)->run_id, "failed on purpose");
    aps_job_free(job);
    aps_scheduler_destroy(s);
}

static void
test_validation_errors(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_error err;
    aps_trigger_spec t = interval_s(1);
    aps_job_spec spec = func_job("x", &t, NULL);
    spec.executor = "nope";
    assert_int_equal(aps_job_add(s, &spec, NULL, NULL, &err), APS_EINVAL);
    assert_string_equal(err.msg, "executor: no executor named \"nope\"");
    spec.executor = NULL;
    spec.jobstore = "nope";
    assert_int_equal(aps_job_add(s, &spec, NULL, NULL, &err), APS_EINVAL);
    assert_string_equal(err.msg, "jobstore: no job store named \"nope\"");
    spec.jobstore = NULL;
    aps_trigger_spec bad;
    memset(&bad, 0, sizeof(bad));
    bad.kind = APS_TRIGGER_CRON;
    bad.u.cron.hour = "25";
    bad.u.cron.start_date = bad.u.cron.end_date = APS_TIME_NONE;
    spec.trigger = &bad;
    assert_int_equal(aps_job_add(s, &spec, NULL, NULL, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "hour"));
    spec.trigger = &t;
    aps_job_free(add(s, &spec));
    assert_int_equal(aps_job_add(s, &spec, NULL, NULL, &err), APS_EEXIST);
    assert_string_equal(err.msg, "id: a job with id \"x\" already exists");
    /* The same id in another store is a conflict too. */
    spec.jobstore = "volatile";
    assert_int_equal(aps_job_add(s, &spec, NULL, NULL, &err), APS_EEXIST);
    /* Nothing of the failed adds is stored. */
    aps_job **jobs = NULL;
    size_t n = 0;
    assert_int_equal(aps_job_list(s, NULL, NULL, 0, &jobs, &n, NULL), 0);
    assert_int_equal(n, 1);
    aps_job_list_free(jobs, n);
    aps_scheduler_destroy(s);
}

static void
test_replace_existing(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 1);
    aps_trigger_spec t = interval_s(10), t2 = interval_s(20);
    aps_job_spec spec = func_job("r", &t, NULL);
    aps_job *first = add(s, &spec);
    tu_clock_set(T0 + 5 * SEC);
    spec.trigger = &t2;
    aps_mutation m = {.replace_existing = 1};
    aps_job *second = NULL;
    aps_error err;
    assert_int_equal(aps_job_add(s, &spec, &m, &second, &err), 0);
    assert_true(second->create_time == first->create_time);
    assert_true(second->next_run_time == T0 + 25 * SEC);
    assert_int_equal(second->trigger->u.interval.seconds, 20);
    aps_job_free(first);
    aps_job_free(second);
    aps_scheduler_destroy(s);
}

/* ---- asynchronous adds -------------------------------------------------------- */

typedef struct add_result {
    sem_t done;
    int rc;
    aps_job *job;
    char msg[256];
    pthread_t thread;
    int inner_rc; /* a synchronous write to the same store from the callback */
    aps_scheduler *s;
} add_result;

static void
add_cb(void *ud, int rc, aps_job *job, const aps_error *err)
{
    add_result *r = ud;
    r->rc = rc;
    r->job = job;
    snprintf(r->msg, sizeof r->msg, "%s", rc ? err->msg : "");
    r->thread = pthread_self();
    if (rc == 0 && r->s != NULL)
        r->inner_rc = aps_job_pause(r->s, job->id, NULL, NULL);
    sem_post(&r->done);
}

static void
add_async_wait(aps_scheduler *s, const aps_job_spec *spec, const aps_mutation *m, add_result *r)
{
    sem_init(&r->done, 0, 0);
    aps_job_add_async(s, spec, m, add_cb, r);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    assert_int_equal(sem_timedwait(&r->done, &ts), 0);
    sem_destroy(&r->done);
}

static void
test_add_async(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("async");
    aps_scheduler *s = open_sched(dir, 1);
    aps_trigger_spec t = interval_s(10);

    /* LMDB: the job is durable when the callback runs, on another thread. */
    aps_job_spec spec = func_job("a1", &t, NULL);
    add_result r;
    memset(&r, 0, sizeof r);
    add_async_wait(s, &spec, NULL, &r);
    assert_int_equal(r.rc, 0);
    assert_non_null(r.job);
    assert_string_equal(r.job->id, "a1");
    assert_true(r.job->next_run_time == T0 + 10 * SEC);
    assert_false(pthread_equal(r.thread, pthread_self()));
    aps_job_free(r.job);
    settle_events(s, APS_EVENT_JOB_ADDED, 1);
    assert_string_equal(last_event(APS_EVENT_JOB_ADDED)->job_id, "a1");

    /* The id taken: ALREADY_EXISTS through the callback; nothing changed. */
    memset(&r, 0, sizeof r);
    add_async_wait(s, &spec, NULL, &r);
    assert_int_equal(r.rc, APS_EEXIST);
    assert_null(r.job);
    assert_non_null(strstr(r.msg, "already exists"));

    /* A bad spec: the callback runs at once, on this thread. */
    aps_trigger_spec bad = interval_s(-1);
    aps_job_spec bspec = func_job("a2", &bad, NULL);
    memset(&r, 0, sizeof r);
    add_async_wait(s, &bspec, NULL, &r);
    assert_int_equal(r.rc, APS_EINVAL);
    assert_true(pthread_equal(r.thread, pthread_self()));
    assert_int_equal(aps_job_get(s, "a2", &r.job), APS_ENOENT);

    /* A request id replayed: the first result, one job. */
    aps_job_spec gspec = func_job(NULL, &t, NULL);
    aps_mutation m = {.request_id = "req-async-1"};
    add_result r1, r2;
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    add_async_wait(s, &gspec, &m, &r1);
    add_async_wait(s, &gspec, &m, &r2);
    assert_int_equal(r1.rc, 0);
    assert_int_equal(r2.rc, 0);
    assert_string_equal(r1.job->id, r2.job->id);
    aps_job_free(r1.job);
    aps_job_free(r2.job);

    /* A synchronous write to the same store from the callback is refused
     * (it would wait for the thread it runs on), not a deadlock. */
    aps_job_spec s3 = func_job("a3", &t, NULL);
    memset(&r, 0, sizeof r);
    r.s = s;
    add_async_wait(s, &s3, NULL, &r);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.inner_rc, APS_ESTATE);
    aps_job_free(r.job);

    /* The memory store, its event in the LMDB store's log: the callback
     * after that write, on its writer thread. */
    aps_job_spec mspec = func_job("m1", &t, NULL);
    mspec.jobstore = "volatile";
    memset(&r, 0, sizeof r);
    add_async_wait(s, &mspec, NULL, &r);
    assert_int_equal(r.rc, 0);
    assert_false(pthread_equal(r.thread, pthread_self()));
    aps_job_free(r.job);
    settle_events(s, APS_EVENT_JOB_ADDED, 4); /* a1, the generated one (once), a3, m1 */
    assert_string_equal(last_event(APS_EVENT_JOB_ADDED)->job_id, "m1");

    /* Durable: all there after a restart. */
    aps_scheduler_destroy(s);
    s = open_sched(dir, 0);
    aps_job *j = get(s, "a1");
    aps_job_free(j);
    j = get(s, "a3");
    aps_job_free(j);
    aps_scheduler_destroy(s);
}

static atomic_int n_async_ok, n_async_done;

static void
count_cb(void *ud, int rc, aps_job *job, const aps_error *err)
{
    (void)ud;
    (void)err;
    if (rc == 0)
        atomic_fetch_add(&n_async_ok, 1);
    atomic_fetch_add(&n_async_done, 1);
    aps_job_free(job);
}

/* Destroying the scheduler completes the adds in flight, those whose
 * event still goes from a memory store to the LMDB log included. */
static void
test_add_async_then_destroy(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("async-destroy");
    char path[256];
    snprintf(path, sizeof path, "%s", dir);
    aps_scheduler *s = open_sched(path, 1);
    aps_trigger_spec t = interval_s(10);
    char ids[100][16];
    atomic_store(&n_async_ok, 0);
    atomic_store(&n_async_done, 0);
    for (int i = 0; i < 100; i++) {
        snprintf(ids[i], sizeof ids[i], "%c%02d", i % 2 ? 'v' : 'd', i);
        aps_job_spec spec = func_job(ids[i], &t, NULL);
        spec.jobstore = i % 2 ? "volatile" : "default";
        aps_job_add_async(s, &spec, NULL, count_cb, NULL);
    }
    aps_scheduler_destroy(s);
    assert_int_equal(atomic_load(&n_async_done), 100);
    assert_int_equal(atomic_load(&n_async_ok), 100);
    s = open_sched(path, 0);
    for (int i = 0; i < 100; i += 2) {
        aps_job *j = get(s, ids[i]);
        aps_job_free(j);
    }
    uint64_t first = 0, last = 0;
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last), 0);
    assert_true(last - first + 1 >= 100); /* every JOB_ADDED is in the log */
    aps_scheduler_destroy(s);
}

static void
test_several_stores_and_list(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(tu_tmpdir("stores"), 1);
    aps_trigger_spec t = interval_s(10);
    const char *ids[] = {"d", "a", "c", "b", "e"};
    for (int i = 0; i < 5; i++) {
        aps_job_spec spec = func_job(ids[i], &t, NULL);
        spec.jobstore = i % 2 ? "volatile" : "default";
        aps_label l = {"team", i < 2 ? "x" : "y"};
        spec.labels = &l;
        spec.n_labels = 1;
        aps_job_free(add(s, &spec));
    }
    /* Pages of two, merged over both stores in id order. */
    aps_job **jobs = NULL;
    size_t n = 0;
    char *next = NULL;
    assert_int_equal(aps_job_list(s, NULL, NULL, 2, &jobs, &n, &next), 0);
    assert_int_equal(n, 2);
    assert_string_equal(jobs[0]->id, "a");
    assert_string_equal(jobs[1]->id, "b");
    assert_string_equal(jobs[0]->jobstore, "volatile");
    assert_non_null(next);
    aps_job_list_free(jobs, n);
    char *next2 = NULL;
    assert_int_equal(aps_job_list(s, NULL, next, 2, &jobs, &n, &next2), 0);
    assert_int_equal(n, 2);
    assert_string_equal(jobs[0]->id, "c");
    assert_string_equal(jobs[1]->id, "d");
    aps_job_list_free(jobs, n);
    free(next);
    char *next3 = NULL;
    assert_int_equal(aps_job_list(s, NULL, next2, 2, &jobs, &n, &next3), 0);
    assert_int_equal(n, 1);
    assert_string_equal(jobs[0]->id, "e");
    assert_null(next3);
    aps_job_list_free(jobs, n);
    free(next2);
    /* Filters: store, label. */
    aps_label sel = {"team", "x"};
    aps_job_filter f = {"default", -1, &sel, 1};
    assert_int_equal(aps_job_list(s, &f, NULL, 10, &jobs, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_string_equal(jobs[0]->id, "d");
    aps_job_list_free(jobs, n);
    size_t removed = 0;
    assert_int_equal(aps_job_remove_all(s, "volatile", NULL, &removed), 0);
    assert_int_equal(removed, 2);
    assert_int_equal(aps_job_remove_all(s, NULL, NULL, &removed), 0);
    assert_int_equal(removed, 3);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_int_equal(count_events(APS_EVENT_ALL_JOBS_REMOVED), 2);
    aps_scheduler_destroy(s);
}

static void
test_request_id_replay_across_restart(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("replay");
    char path[256];
    snprintf(path, sizeof(path), "%s", dir);
    aps_scheduler *s = open_sched(path, 1);
    aps_job_spec spec = func_job(NULL, NULL, NULL); /* generated id */
    spec.next_run_time = T0 + 3600 * SEC;
    aps_mutation m = {.request_id = "req-1"};
    aps_job *a = NULL, *b = NULL, *c = NULL;
    aps_error err;
    assert_int_equal(aps_job_add(s, &spec, &m, &a, &err), 0);
    assert_int_equal(aps_job_add(s, &spec, &m, &b, &err), 0);
    assert_string_equal(a->id, b->id); /* the first result, not a second job */
    aps_scheduler_destroy(s);
    s = open_sched(path, 1);
    assert_int_equal(aps_job_add(s, &spec, &m, &c, &err), 0);
    assert_string_equal(a->id, c->id);
    aps_job **jobs = NULL;
    size_t n = 0;
    assert_int_equal(aps_job_list(s, NULL, NULL, 0, &jobs, &n, NULL), 0);
    assert_int_equal(n, 1);
    aps_job_list_free(jobs, n);
    /* Past the retention window (1 h), the id is forgotten. */
    tu_clock_set(T0 + 2 * 3600 * SEC);
    aps_job *d = NULL;
    assert_int_equal(aps_job_add(s, &spec, &m, &d, &err), 0);
    assert_string_not_equal(a->id, d->id);
    aps_job_free(a);
    aps_job_free(b);
    aps_job_free(c);
    aps_job_free(d);
    aps_scheduler_destroy(s);
}

/* A request id reused for a different request (another fingerprint) is an
 * error, not a replay; the same fingerprint replays, also after a restart
 * and for a job removed since; records without a fingerprint stay lenient. */
static void
test_request_id_fingerprint(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("fingerprint");
    char path[256];
    snprintf(path, sizeof(path), "%s", dir);
    aps_scheduler *s = open_sched(path, 1);
    aps_job_spec spec = func_job("fp-a", NULL, NULL);
    spec.next_run_time = T0 + 3600 * SEC;
    aps_mutation m = {.request_id = "fp-1", .request_fingerprint = 0x1111};
    aps_mutation other = {.request_id = "fp-1", .request_fingerprint = 0x2222};
    aps_mutation unchecked = {.request_id = "fp-1"};
    aps_job *a = NULL, *b = NULL;
    aps_error err;
    assert_int_equal(aps_job_add(s, &spec, &m, &a, &err), 0);
    assert_int_equal(aps_job_add(s, &spec, &m, &b, &err), 0);
    assert_string_equal(a->id, b->id);
    aps_job_free(b);
    b = NULL;
    aps_job_spec spec2 = func_job("fp-b", NULL, NULL);
    spec2.next_run_time = T0 + 3600 * SEC;
    assert_int_equal(aps_job_add(s, &spec2, &other, &b, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "request_id"));
    assert_non_null(strstr(err.msg, "different request"));
    assert_null(b);
    assert_int_equal(aps_job_get(s, "fp-b", &b), APS_ENOENT); /* nothing added */
    assert_int_equal(aps_job_add(s, &spec, &unchecked, &b, &err), 0); /* no fingerprint */
    assert_string_equal(b->id, "fp-a");
    aps_job_free(b);
    b = NULL;
    aps_scheduler_destroy(s);

    s = open_sched(path, 1);
    assert_int_equal(aps_job_add(s, &spec2, &other, &b, &err), APS_EINVAL);
    /* Mutations: a remove replays after the job is gone; a different
     * request under its id is refused, before and after. */
    aps_mutation rm = {.request_id = "fp-rm", .request_fingerprint = 7};
    aps_mutation rm_other = {.request_id = "fp-rm", .request_fingerprint = 8};
    assert_int_equal(aps_job_pause(s, "fp-a", &rm_other, NULL), 0);
    assert_int_equal(aps_job_remove(s, "fp-a", &rm), APS_EINVAL);
    assert_int_equal(aps_job_get(s, "fp-a", &b), 0); /* not removed */
    aps_job_free(b);
    aps_mutation rm2 = {.request_id = "fp-rm2", .request_fingerprint = 9};
    assert_int_equal(aps_job_remove(s, "fp-a", &rm2), 0);
    assert_int_equal(aps_job_remove(s, "fp-a", &rm2), 0); /* replay: job gone */
    rm2.request_fingerprint = 10;
    assert_int_equal(aps_job_remove(s, "fp-a", &rm2), APS_EINVAL);
    size_t removed = 0;
    aps_mutation all = {.request_id = "fp-all", .request_fingerprint = 11};
    aps_mutation all_other = {.request_id = "fp-all", .request_fingerprint = 12};
    assert_int_equal(aps_job_remove_all(s, NULL, &all, &removed), 0);
    assert_int_equal(aps_job_remove_all(s, NULL, &all_other, &removed), APS_EINVAL);
    aps_job_free(a);
    aps_scheduler_destroy(s);
}

static void
test_restart_runs_missed_jobs(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("restart");
    char path[256];
    snprintf(path, sizeof(path), "%s", dir);
    aps_scheduler *s = open_sched(path, 1);
    aps_trigger_spec t = interval_s(10);
    aps_job_spec a = func_job("coalesce-me", &t, NULL);
    a.misfire = APS_MISFIRE_UNLIMITED;
    aps_job_spec b = func_job("miss-me", &t, NULL); /* 1 s grace */
    aps_job_spec c = func_job("each-one", &t, NULL);
    c.misfire = APS_MISFIRE_UNLIMITED;
    c.coalesce = 0;
    aps_job_free(add(s, &a));
    aps_job_free(add(s, &b));
    aps_job_free(add(s, &c));
    aps_scheduler_destroy(s); /* the daemon goes down */
    clear_events();
    tu_clock_set(T0 + 55 * SEC); /* missed T0+10 .. T0+50 */
    s = open_sched(path, 1);
    settle(s, 1 + 5);
    settle_events(s, APS_EVENT_JOB_MISSED, 1);
    aps_job *ja = get(s, "coalesce-me"), *jb = get(s, "miss-me"), *jc = get(s, "each-one");
    assert_int_equal(ja->stats.runs, 1);
    assert_int_equal(ja->stats.coalesced, 4);
    assert_int_equal(jb->stats.runs, 0);
    assert_int_equal(jb->stats.misses, 1);
    assert_int_equal(jc->stats.runs, 5);
    assert_true(ja->next_run_time == T0 + 60 * SEC);
    aps_job_free(ja);
    aps_job_free(jb);
    aps_job_free(jc);
    aps_scheduler_destroy(s);
}

/* Events are stamped by the scheduler's clock, and aged by it: with a clock
 * years behind the real one, the log keeps what the retention keeps (it
 * was emptied at every write while the age was taken from the real clock),
 * and 8 days later by that clock the week-old events go. */
static void
test_event_age_by_scheduler_clock(void **state)
{
    (void)state;
    aps_time past = tu_time("2020-01-01T00:00:00Z");
    tu_clock_set(past);
    aps_scheduler *s = open_sched(tu_tmpdir("event_age"), 1);
    aps_job_spec spec = func_job(NULL, NULL, NULL);
    spec.next_run_time = past + 30 * 86400 * SEC;
    aps_job_free(add(s, &spec));
    uint64_t first = 0, last = 0;
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last), 0);
    /* executor + 2 stores + started + the add */
    assert_int_equal(first, 1);
    assert_int_equal(last, 5);
    tu_clock_set(past + 8 * 86400 * SEC);
    aps_job_free(add(s, &spec));
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last), 0);
    assert_int_equal(first, 6);
    assert_int_equal(last, 6);
    aps_scheduler_destroy(s);
}

static void
test_event_sequences_and_subscribers(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("events");
    char path[256];
    snprintf(path, sizeof(path), "%s", dir);
    aps_scheduler *s = open_sched(path, 1);
    aps_job_spec spec = func_job(NULL, NULL, NULL);
    spec.next_run_time = T0 + 3600 * SEC;
    for (int i = 0; i < 20; i++)
        aps_job_free(add(s, &spec));
    uint64_t first = 0, last = 0;
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last), 0);
    assert_int_equal(first, 1);
    /* executor + 2 stores + started = 4, then 20 adds. */
    assert_int_equal(last, 24);
    aps_scheduler_destroy(s);
    s = open_sched(path, 1);
    aps_job_free(add(s, &spec));
    uint64_t last2 = 0;
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last2), 0);
    /* shutdown + executor + 2 stores + started + add: no gap, no repeat. */
    assert_int_equal(last2, last + 6);

    /* A subscriber from the start reads the whole log in order... */
    aps_subscriber *sub = NULL;
    assert_int_equal(aps_subscribe(s, 0, APS_EVENT_ALL, NULL, &sub), 0);
    uint64_t expect = 1;
    for (;;) {
        aps_event *ev = NULL;
        int rc = aps_subscriber_next(sub, 0, &ev, NULL);
        if (rc == APS_ENOENT)
            break;
        assert_int_equal(rc, 0);
        assert_int_equal(ev->sequence, expect);
        expect++;
        aps_event_free(ev);
    }
    assert_int_equal(expect, last2 + 1);
    /* ...then live events, and its fd says so. */
    aps_job_free(add(s, &spec));
    struct pollfd pfd = {aps_subscriber_fd(sub), POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 1000), 1);
    aps_event *ev = NULL;
    assert_int_equal(aps_subscriber_next(sub, 1000000, &ev, NULL), 0);
    assert_int_equal(ev->type, APS_EVENT_JOB_ADDED);
    assert_int_equal(ev->sequence, last2 + 1);
    aps_event_free(ev);
    aps_subscriber_close(sub);

    /* A filtered subscriber: JOB_ADDED of one job only. */
    aps_job_spec one = func_job("watched", NULL, NULL);
    one.next_run_time = T0 + 3600 * SEC;
    aps_job_free(add(s, &one));
    assert_int_equal(aps_subscribe(s, 0, APS_EVENT_MASK(APS_EVENT_JOB_ADDED), "watched", &sub), 0);
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, NULL), 0);
    assert_string_equal(ev->job_id, "watched");
    aps_event_free(ev);
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, NULL), APS_ENOENT);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

/* cfg: one LMDB store (store, at a fresh directory `name`) on the test
 * clock, without fsync; everything else the defaults. */
static void
lmdb_config(aps_scheduler_config *cfg, aps_store_def *store, const char *name)
{
    *store = (aps_store_def){"default", "lmdb", tu_tmpdir(name)};
    memset(cfg, 0, sizeof(*cfg));
    cfg->stores = store;
    cfg->n_stores = 1;
    cfg->clock = &tu_clock;
    cfg->no_sync = 1;
}

/* allow_network_fs reaches the LMDB store: without it, a store on a network
 * file system (its type given through the store's test hook) fails
 * aps_scheduler_create with the store's message; with it, it opens. */
static void
test_network_fs_config(void **state)
{
    (void)state;
    aps_store_def store;
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err = {0, ""};
    lmdb_config(&cfg, &store, "netfs");
    aps__store_fs_type_test = 0x6969; /* NFS */
    int rc = aps_scheduler_create(&cfg, &s, &err);
    aps__store_fs_type_test = 0;
    assert_int_equal(rc, APS_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "network file system (NFS)"));
    aps__store_fs_type_test = 0x6969;
    cfg.allow_network_fs = 1;
    rc = aps_scheduler_create(&cfg, &s, &err);
    aps__store_fs_type_test = 0;
    assert_int_equal(rc, 0);
    aps_scheduler_destroy(s);
}

static void
test_subscriber_gap_marker(void **state)
{
    (void)state;
    aps_store_def store;
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err;
    lmdb_config(&cfg, &store, "gap");
    cfg.event_max_count = 10; /* keep only the newest 10 */
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), 0);
    aps_job_spec spec = func_job(NULL, NULL, NULL);
    spec.next_run_time = T0 + 3600 * SEC;
    for (int i = 0; i < 30; i++)
        aps_job_free(add(s, &spec));
    uint64_t first = 0, last = 0;
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last), 0);
    assert_int_equal(last, 30);
    assert_int_equal(first, 21);
    aps_scheduler_destroy(s);
    /* Reopened, nothing is in memory: a cursor after 5 reads the log, where
     * 6..20 were pruned: a gap marker naming 21, then 21 onwards. */
    aps_subscriber *sub = NULL;
    aps_event *ev = NULL;
    uint64_t gap_first = 0;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), 0);
    assert_int_equal(aps_subscribe(s, 5, APS_EVENT_ALL, NULL, &sub), 0);
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, &gap_first), APS_ERANGE);
    assert_int_equal(gap_first, 21);
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, &gap_first), 0);
    assert_int_equal(ev->sequence, 21);
    aps_event_free(ev);
    /* A cursor inside the retained range has no gap. */
    aps_subscriber_close(sub);
    assert_int_equal(aps_subscribe(s, 25, APS_EVENT_ALL, NULL, &sub), 0);
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, &gap_first), 0);
    assert_int_equal(ev->sequence, 26);
    aps_event_free(ev);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

static void
test_listeners_miss_nothing_in_a_burst(void **state)
{
    (void)state;
    /* More events between two loop passes than the in-memory ring holds:
     * listeners catch up from the durable log, in order. */
    aps_scheduler *s = open_sched(tu_tmpdir("burst"), 1);
    aps_job_spec spec = func_job(NULL, NULL, NULL);
    spec.next_run_time = T0 + 3600 * SEC;
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    clear_events();
    for (int i = 0; i < 9000; i++)
        aps_job_free(add(s, &spec));
    /* A pass hands listeners 1,024 events at most (the loop must go on
     * firing): the rest in the passes that follow. */
    for (int i = 0; i < 20 && count_events(APS_EVENT_JOB_ADDED) < 9000; i++)
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_int_equal(count_events(APS_EVENT_JOB_ADDED), 9000);
    for (size_t i = 1; i < n_events; i++)
        assert_int_equal(events[i]->sequence, events[i - 1]->sequence + 1);
    aps_scheduler_destroy(s);
}

static void
test_scheduler_pause_persists(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("spause");
    char path[256];
    snprintf(path, sizeof(path), "%s", dir);
    aps_scheduler *s = open_sched(path, 1);
    aps_trigger_spec t = interval_s(1);
    aps_job_spec spec = func_job("j", &t, NULL);
    spec.misfire = APS_MISFIRE_UNLIMITED;
    aps_job_free(add(s, &spec));
    /* APScheduler acts on a change of state only: resuming a running
     * scheduler, or pausing a paused one, emits nothing. */
    assert_int_equal(aps_scheduler_resume(s), 0);
    assert_int_equal(aps_scheduler_pause(s), 0);
    assert_int_equal(aps_scheduler_pause(s), 0);
    assert_int_equal(aps_scheduler_get_state(s), APS_STATE_PAUSED);
    tu_clock_set(T0 + 5 * SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_int_equal(calls_count(), 0);
    assert_int_equal(count_events(APS_EVENT_SCHEDULER_PAUSED), 1);
    assert_int_equal(count_events(APS_EVENT_SCHEDULER_RESUMED), 0);
    aps_scheduler_destroy(s);
    s = open_sched(path, 1);
    assert_int_equal(aps_scheduler_get_state(s), APS_STATE_PAUSED);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_int_equal(calls_count(), 0);
    assert_int_equal(aps_scheduler_resume(s), 0);
    assert_int_equal(aps_scheduler_resume(s), 0);
    settle(s, 1);
    assert_int_equal(count_events(APS_EVENT_SCHEDULER_RESUMED), 1);
    aps_scheduler_destroy(s);
}

static void
test_interrupted_by_restart(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("interrupted");
    char path[256];
    snprintf(path, sizeof(path), "%s", dir);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child runs a job that never finishes, reports, and is killed. */
        close(pfd[0]);
        gate(1);
        aps_scheduler *s = open_sched(path, 1);
        aps_trigger_spec t = interval_s(10);
        aps_job_spec spec = func_job("stuck", &t, NULL);
        spec.misfire = APS_MISFIRE_UNLIMITED;
        aps_job_free(add(s, &spec));
        tu_clock_set(T0 + 10 * SEC);
        aps_scheduler_process(s, NULL);
        wait_running(1);
        ssize_t w = write(pfd[1], "r", 1);
        (void)w;
        pause();
        _exit(0);
    }
    close(pfd[1]);
    char c;
    assert_int_equal(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    tu_clock_set(T0 + 12 * SEC);
    aps_scheduler *s = open_sched(path, 1);
    settle_events(s, APS_EVENT_JOB_ERROR, 1);
    const aps_event *ev = last_event(APS_EVENT_JOB_ERROR);
    assert_string_equal(ev->job_id, "stuck");
    assert_string_equal(ev->run_id, "interrupted by restart");
    aps_job *job = get(s, "stuck");
    assert_int_equal(job->running_instances, 0);
    assert_int_equal(job->stats.failures, 1);
    assert_true(job->next_run_time == T0 + 20 * SEC);
    aps_job_free(job);
    /* The job keeps firing. */
    tu_clock_set(T0 + 20 * SEC);
    settle(s, 1);
    aps_scheduler_destroy(s);
}

static int
damage_fn(aps_txn *t, void *arg)
{
    (void)arg;
    /* A record no version decodes, and a run of it in the run index (as a
     * crash leaves a started one). */
    int rc = aps__txn_job_put(t, "bad", "\x03garbage", 8, APS_TIME_NONE);
    if (rc == 0)
        rc = aps__txn_meta_put(t, "run/0123456789abcdef0123456789abcdef", "bad\0default\0", 12);
    return rc;
}

/* A job record that cannot be decoded, with a run interrupted by a
 * restart: the run is reported (JOB_ERROR with the job's id) and leaves the
 * run index, the record is left as it is, and the completions of the other
 * jobs are recorded (they all failed with it, pass after pass). */
static void
test_undecodable_record_completion(void **state)
{
    (void)state;
    const char *dir = tu_tmpdir("undecodable");
    char path[256];
    snprintf(path, sizeof(path), "%s", dir);
    aps_scheduler *s = open_sched(path, 0);
    aps_trigger_spec t = interval_s(1);
    aps_job_spec good = func_job("good", &t, NULL);
    aps_job_free(add(s, &good));
    aps_scheduler_destroy(s);
    aps_store *st = NULL;
    aps_store_config sc = {.no_sync = 1};
    aps_error err = {0, ""};
    assert_int_equal(aps__store_open_lmdb(path, &sc, &st, &err), 0);
    assert_int_equal(aps__store_write(st, damage_fn, NULL), 0);
    aps__store_close(st);

    s = open_sched(path, 1);
    for (int i = 1; i <= 3; i++) {
        tu_clock_set(T0 + i * SEC);
        settle(s, i);
    }
    settle_events(s, APS_EVENT_JOB_EXECUTED, 3);
    aps_job *j = get(s, "good");
    assert_int_equal(j->running_instances, 0);
    assert_int_equal(j->stats.runs, 3);
    aps_job_free(j);
    const aps_event *ev = last_event(APS_EVENT_JOB_ERROR);
    assert_non_null(ev);
    assert_string_equal(ev->job_id, "bad");
    aps_scheduler_destroy(s);
    assert_int_equal(aps__store_open_lmdb(path, &sc, &st, &err), 0);
    void *data = NULL;
    size_t len = 0;
    assert_int_equal(aps__store_meta_get(st, "run/0123456789abcdef0123456789abcdef", &data, &len),
                     APS_ENOENT);
    assert_int_equal(aps__store_job_get(st, "bad", &data, &len, NULL), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(data, "\x03garbage", 8);
    free(data);
    aps__store_close(st);
}

/* ---- the run modes on the real clock ------------------------------------------ */

static aps_scheduler *blocking_sched;

static void
stop_on_executed(const aps_event *ev, void *userdata)
{
    (void)userdata;
    if (ev->type == APS_EVENT_JOB_EXECUTED)
        aps_scheduler_shutdown(blocking_sched, 0);
}

static void
test_blocking_and_background_modes(void **state)
{
    (void)state;
    aps_scheduler_config cfg;
    aps_error err;
    memset(&cfg, 0, sizeof(cfg));
    /* Background: a date job 50 ms ahead fires on the loop's own thread. */
    aps_scheduler *s = NULL;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), 0);
    assert_int_equal(aps_scheduler_register_function(s, "record", record_fn, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), APS_ESTATE);
    aps_subscriber *sub = NULL;
    assert_int_equal(aps_subscribe(s, UINT64_MAX, APS_EVENT_MASK(APS_EVENT_JOB_EXECUTED), NULL, &sub), 0);
    aps_job_spec spec = func_job("soon", NULL, NULL);
    aps_time at = aps_time_now() + 50000;
    spec.next_run_time = at;
    aps_job_free(add(s, &spec));
    aps_event *ev = NULL;
    assert_int_equal(aps_subscriber_next(sub, 5 * SEC, &ev, NULL), 0);
    assert_true(ev->run_times[0] == at);
    /* Fired on time (a generous bound: tests share 2 cores with the build). */
    assert_true(ev->time - at < 250000);
    aps_event_free(ev);
    aps_subscriber_close(sub);
    assert_int_equal(aps_scheduler_shutdown(s, 1), 0);
    assert_int_equal(aps_scheduler_get_state(s), APS_STATE_STOPPED);
    aps_scheduler_destroy(s);

    /* Blocking: start returns when a listener shuts the scheduler down. */
    assert_int_equal(aps_scheduler_create(&cfg, &blocking_sched, &err), 0);
    assert_int_equal(aps_scheduler_register_function(blocking_sched, "record", record_fn, NULL), 0);
    assert_int_equal(aps_scheduler_add_listener(blocking_sched, stop_on_executed,
                                                APS_EVENT_MASK(APS_EVENT_JOB_EXECUTED), NULL), 0);
    spec.next_run_time = aps_time_now() + 20000;
    aps_job_free(add(blocking_sched, &spec));
    assert_int_equal(aps_scheduler_start(blocking_sched, APS_RUN_BLOCKING), 0);
    assert_int_equal(aps_scheduler_get_state(blocking_sched), APS_STATE_STOPPED);
    aps_scheduler_destroy(blocking_sched);
}

/* A job that shuts its scheduler down (engine.h allows it): the pool cannot
 * join the job's own worker, which ends once the job returns; destroy
 * waits for it, and its run is recorded (freed the pool under it). */
static aps_scheduler *self_stop_sched;

static int
self_stop_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
             size_t error_len)
{
    (void)job_id;
    (void)arg;
    (void)scheduled;
    (void)userdata;
    (void)error;
    (void)error_len;
    aps_scheduler_shutdown(self_stop_sched, 1);
    usleep(50000); /* still running when the caller goes on to destroy */
    record_fn(job_id, arg, scheduled, userdata, error, error_len);
    return 0;
}

static void
test_job_shuts_scheduler_down(void **state)
{
    (void)state;
    aps_scheduler_config cfg;
    aps_error err;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(aps_scheduler_create(&cfg, &self_stop_sched, &err), 0);
    assert_int_equal(aps_scheduler_register_function(self_stop_sched, "stop", self_stop_fn, NULL),
                     0);
    assert_int_equal(aps_scheduler_start(self_stop_sched, APS_RUN_BACKGROUND), 0);
    aps_job_spec spec = tu_function_job("stopper", NULL, "stop", NULL);
    spec.next_run_time = aps_time_now() + 20000;
    aps_job_free(add(self_stop_sched, &spec));
    for (int i = 0; i < 500 && aps_scheduler_get_state(self_stop_sched) != APS_STATE_STOPPED; i++)
        usleep(10000);
    assert_int_equal(aps_scheduler_get_state(self_stop_sched), APS_STATE_STOPPED);
    aps_scheduler_destroy(self_stop_sched); /* waits for the job's worker */
    assert_int_equal(calls_count(), 1);
}

/* Blocking mode: a shutdown without wait (here from a listener) does not
 * wait for a running command: start returns at once, the run ends
 * interrupted (it waited for the whole command). */
static void
stop_on_submitted(const aps_event *ev, void *userdata)
{
    (void)userdata;
    if (ev->type == APS_EVENT_JOB_SUBMITTED)
        aps_scheduler_shutdown(blocking_sched, 0);
}

static void
test_blocking_shutdown_without_wait(void **state)
{
    (void)state;
    static const aps_executor_def execs[] = {{.name = "default", .type = "processpool"}};
    aps_scheduler_config cfg;
    aps_error err;
    memset(&cfg, 0, sizeof(cfg));
    cfg.executors = execs;
    cfg.n_executors = 1;
    assert_int_equal(aps_scheduler_create(&cfg, &blocking_sched, &err), 0);
    assert_int_equal(aps_scheduler_add_listener(blocking_sched, stop_on_submitted,
                                                APS_EVENT_MASK(APS_EVENT_JOB_SUBMITTED), NULL),
                     0);
    aps_subscriber *sub = NULL;
    assert_int_equal(
        aps_subscribe(blocking_sched, 0, APS_EVENT_MASK(APS_EVENT_JOB_ERROR), NULL, &sub), 0);
    char *argv[] = {"/bin/sleep", "30", NULL};
    aps_job_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.id = "long";
    spec.target.kind = APS_TARGET_COMMAND;
    spec.target.u.command.argv = argv;
    spec.target.u.command.argc = 2;
    spec.next_run_time = aps_time_now() + 20000;
    aps_job_free(add(blocking_sched, &spec));
    aps_time t0 = aps_time_now();
    assert_int_equal(aps_scheduler_start(blocking_sched, APS_RUN_BLOCKING), 0);
    assert_true(aps_time_now() - t0 < 10 * SEC);
    aps_event *ev = NULL;
    assert_int_equal(aps_subscriber_next(sub, 5 * SEC, &ev, NULL), 0);
    assert_string_equal(ev->job_id, "long");
    assert_int_equal(ev->outcome->status, APS_RUN_INTERRUPTED);
    aps_event_free(ev);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(blocking_sched);
}

static void
test_external_loop_fd(void **state)
{
    (void)state;
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), 0);
    assert_int_equal(aps_scheduler_register_function(s, "record", record_fn, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);
    aps_job_spec spec = func_job("ext", NULL, NULL);
    spec.next_run_time = aps_time_now() + 30000;
    aps_job_free(add(s, &spec));
    /* Drive it the way an epoll/libuv program would: poll the fd. */
    struct pollfd pfd = {aps_scheduler_fd(s), POLLIN, 0};
    for (int i = 0; i < 200 && calls_count() == 0; i++) {
        aps_time next = APS_TIME_NONE;
        assert_int_equal(aps_scheduler_process(s, &next), 0);
        poll(&pfd, 1, 50);
    }
    assert_int_equal(calls_count(), 1);
    aps_scheduler_destroy(s);
}

/* Found by service/fuzz/request_fuzz.c: destroying a scheduler while runs
 * wait for an instance slot (queued behind a running one) handed a queued
 * run to an executor already freed (a use after free, reported by ASan
 * and tools/valgrind). Each queued run must end, refused, and none leak. */
static void
test_destroy_with_queued_runs(void **state)
{
    (void)state;
    static const aps_executor_def execs[] = {{.name = "workers", .type = "workers", .max_workers = 1}};
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err;
    aps_trigger_spec t;
    size_t count = 0;

    memset(&cfg, 0, sizeof(cfg));
    cfg.executors = execs;
    cfg.n_executors = 1;
    cfg.clock = &tu_clock;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_CRON;
    t.u.cron.minute = "0";
    t.u.cron.start_date = t.u.cron.end_date = APS_TIME_NONE;
    aps_job_spec spec = {.id = "r", .trigger = &t, .executor = "workers", .coalesce = -1,
                         .max_instances = 1, .overlap = APS_OVERLAP_QUEUE_ALL,
                         .next_run_time = APS_TIME_NONE};
    spec.target.kind = APS_TARGET_REMOTE;
    spec.target.u.remote.task = "t";
    assert_int_equal(aps_job_add(s, &spec, NULL, NULL, &err), 0);
    /* One run takes the slot (no worker takes it), four wait. */
    assert_int_equal(aps_job_backfill(s, "r", T0 - 5 * 3600 * SEC, T0, 0, NULL, &count, &err), 0);
    assert_int_equal(count, 5);
    aps_scheduler_destroy(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_interval_fires_on_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misfire_grace_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missed_event_time_is_when_judged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coalesce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_error_cut_at_a_character, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backlog_beyond_enumeration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_trigger_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_instances_and_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_keeps_queued_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_modify_max_instances_starts_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_ends_queued_runs_of_ended_jobs, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_all_runs_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_run_now_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_date_job_runs_once_and_is_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backfill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statistics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_existing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_async_then_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_several_stores_and_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id_replay_across_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_id_fingerprint, setup, teardown),
        cmocka_unit_test(test_run_now_overlap),
        cmocka_unit_test(test_run_now_replay),
        cmocka_unit_test_setup_teardown(test_restart_runs_missed_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_age_by_scheduler_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_sequences_and_subscribers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscriber_gap_marker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_network_fs_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listeners_miss_nothing_in_a_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scheduler_pause_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_by_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable_record_completion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blocking_and_background_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_job_shuts_scheduler_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blocking_shutdown_without_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_external_loop_fd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_with_queued_runs, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
