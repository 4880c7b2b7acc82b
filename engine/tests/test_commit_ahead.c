/*
 * Commit-ahead (aps_scheduler_config.commit_ahead_us): with a durable LMDB
 * store, due runs are committed before their time and handed to their
 * executor at it. On the real clock (the feature needs it), with wide
 * margins: the window is 300 ms, the checks are "before the time" and
 * "not early, and not later than 150 ms".
 */
#include <errno.h>
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
#include "scheduler.h" /* the store, to make its writes slow */
#include "testutil.h"

#define MS INT64_C(1000)
#define AHEAD (300 * MS)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* When each call started, and what it was scheduled for. */
static aps_time started[64], scheduled_at[64];
static char called_arg[64][16];
static size_t n_calls;
static int64_t busy_us; /* how long each call takes */

/* When JOB_SUBMITTED was published, per run time; JOB_MAX_INSTANCES seen. */
static aps_time submitted_at[64], submitted_for[64];
static size_t n_submitted, n_skipped;

/* Runs withdrawn before their time (JOB_ERROR, CANCELLED), the last one's
 * message; JOB_ERROR of any other status; JOB_MISSED; when JOB_REMOVED
 * was last published. */
static size_t n_withdrawn, n_other_errors, n_missed;
static char withdrawn_msg[128];
static aps_time removed_at;

static int
record_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
          size_t error_len)
{
    (void)job_id;
    (void)userdata;
    (void)error;
    (void)error_len;
    aps_time now = aps_time_now();
    pthread_mutex_lock(&mu);
    if (n_calls < 64) {
        started[n_calls] = now;
        scheduled_at[n_calls] = scheduled;
        snprintf(called_arg[n_calls], sizeof(called_arg[0]), "%s", arg ? arg : "");
        n_calls++;
    }
    int64_t busy = busy_us;
    pthread_mutex_unlock(&mu);
    if (busy > 0)
        usleep((useconds_t)busy);
    return 0;
}

/* test_batches_on_their_way: runs per job "pNNNN", JOB_EXECUTED events. */
#define MANY 3000
static int many_runs[MANY];
static size_t n_executed;

static int
count_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
         size_t error_len)
{
    (void)arg;
    (void)scheduled;
    (void)userdata;
    (void)error;
    (void)error_len;
    int i = atoi(job_id + 1);
    pthread_mutex_lock(&mu);
    if (i >= 0 && i < MANY)
        many_runs[i]++;
    pthread_mutex_unlock(&mu);
    return 0;
}

static void
listener(const aps_event *ev, void *userdata)
{
    (void)userdata;
    pthread_mutex_lock(&mu);
    if (ev->type == APS_EVENT_JOB_EXECUTED)
        n_executed++;
    if (ev->type == APS_EVENT_JOB_SUBMITTED && n_submitted < 64 && ev->n_run_times > 0) {
        submitted_at[n_submitted] = aps_time_now();
        submitted_for[n_submitted] = ev->run_times[0];
        n_submitted++;
    }
    if (ev->type == APS_EVENT_JOB_MAX_INSTANCES)
        n_skipped++;
    if (ev->type == APS_EVENT_JOB_ERROR && ev->outcome != NULL &&
        ev->outcome->status == APS_RUN_CANCELLED && ev->outcome->error != NULL &&
        strncmp(ev->outcome->error, "withdrawn", 9) == 0) {
        n_withdrawn++;
        snprintf(withdrawn_msg, sizeof(withdrawn_msg), "%s", ev->outcome->error);
    } else if (ev->type == APS_EVENT_JOB_ERROR) {
        n_other_errors++;
    }
    if (ev->type == APS_EVENT_JOB_MISSED)
        n_missed++;
    if (ev->type == APS_EVENT_JOB_REMOVED)
        removed_at = aps_time_now();
    pthread_mutex_unlock(&mu);
}

static char dir[256];

static int
setup(void **state)
{
    (void)state;
    const char *base = getenv("TEST_TMPDIR");
    aps__shutdown_withdraw_test = NULL; /* a failed test may have left it */
    aps__prepared_test = NULL;
    snprintf(dir, sizeof(dir), "%s/ahead-%d", base ? base : "/tmp", (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        return -1;
    pthread_mutex_lock(&mu);
    n_calls = n_submitted = n_skipped = n_executed = 0;
    n_withdrawn = n_other_errors = n_missed = 0;
    withdrawn_msg[0] = '\0';
    removed_at = APS_TIME_NONE;
    memset(many_runs, 0, sizeof(many_runs));
    busy_us = 0;
    pthread_mutex_unlock(&mu);
    return 0;
}

/* A scheduler on a store of `type` (LMDB in `dir`), not started. */
static aps_scheduler *
open_cfg(const char *type, int64_t ahead, int64_t ahead_max, int64_t spacing)
{
    aps_store_def stores[1] = {{"default", type, strcmp(type, "memory") ? dir : NULL}};
    aps_executor_def execs[1] = {{.name = "default", .type = "threadpool", .max_workers = 4}};
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = stores;
    cfg.n_stores = 1;
    cfg.executors = execs;
    cfg.n_executors = 1;
    cfg.commit_ahead_us = ahead;
    cfg.commit_ahead_max_us = ahead_max;
    cfg.pass_spacing_us = spacing;
    if (aps_scheduler_create(&cfg, &s, &err) != 0)
        fail_msg("create: %s", err.msg);
    assert_int_equal(aps_scheduler_register_function(s, "record", record_fn, NULL), 0);
    assert_int_equal(aps_scheduler_register_function(s, "count", count_fn, NULL), 0);
    assert_int_equal(aps_scheduler_add_listener(s, listener, APS_EVENT_ALL, NULL), 0);
    return s;
}

static aps_scheduler *
open_sched_max(int64_t ahead, int64_t ahead_max)
{
    return open_cfg("lmdb", ahead, ahead_max, 0);
}

static aps_scheduler *
open_sched(int64_t ahead)
{
    return open_sched_max(ahead, -1);
}

/* open_sched(AHEAD), started in the background. */
static aps_scheduler *
started_sched(void)
{
    aps_scheduler *s = open_sched(AHEAD);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    return s;
}

static void
add_job(aps_scheduler *s, const char *id, const aps_trigger_spec *t, uint32_t max_instances)
{
    aps_job_spec j = tu_function_job(id, t, "record", NULL);
    j.max_instances = max_instances;
    tu_job_add(s, &j);
}

static size_t
wait_calls(size_t n, int64_t timeout_us)
{
    aps_time end = aps_time_now() + timeout_us;
    for (;;) {
        pthread_mutex_lock(&mu);
        size_t k = n_calls;
        pthread_mutex_unlock(&mu);
        if (k >= n || aps_time_now() > end)
            return k;
        usleep(2000);
    }
}

static void
wait_submitted(size_t n)
{
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&mu);
        size_t k = n_submitted;
        pthread_mutex_unlock(&mu);
        if (k >= n)
            return;
        usleep(1000);
    }
}

/* An interval of 500 ms from `start`, ending after `fires` fires. */
static aps_trigger_spec
every_500ms(aps_time start, int fires)
{
    aps_trigger_spec t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.microseconds = 500 * MS;
    t.u.interval.start_date = start;
    t.u.interval.end_date = start + (fires - 1) * 500 * MS + 100 * MS;
    return t;
}

/* The run is committed (JOB_SUBMITTED published) before its time, and
 * still starts at its time, not before. */
static void
test_commits_before_and_starts_on_time(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = aps_time_now() + 600 * MS;
    aps_trigger_spec d = tu_date(due);
    add_job(s, "once", &d, 1);
    assert_int_equal(wait_calls(1, 5000 * MS), 1);
    wait_submitted(1);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_submitted, 1);
    assert_true(submitted_for[0] == due);
    assert_true(submitted_at[0] < due);                /* committed ahead */
    assert_true(submitted_at[0] >= due - AHEAD - 50 * MS); /* not before the window */
    assert_true(scheduled_at[0] == due);
    assert_true(started[0] >= due);                    /* never early */
    assert_true(started[0] < due + 150 * MS);
    pthread_mutex_unlock(&mu);
    aps_scheduler_destroy(s);
}

/* Until its time, a run committed ahead is the job's next run time, as
 * APScheduler shows before it submits it, not a running instance: for a
 * date job (whose record keeps no next run time meanwhile) and an interval
 * job (whose record has the one after), through GetJob and ListJobs. From
 * its time on, the record's. */
static void
test_held_run_is_next_run_time(void **state)
{
    (void)state;
    /* A 2 s lead: committed ~2 s before its time, read well before it. */
    aps_scheduler *s = open_sched(2000 * MS);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_time due = aps_time_now() + 2500 * MS;
    aps_trigger_spec d = tu_date(due), iv;
    memset(&iv, 0, sizeof(iv));
    iv.kind = APS_TRIGGER_INTERVAL;
    iv.u.interval.seconds = 10;
    iv.u.interval.start_date = due;
    iv.u.interval.end_date = APS_TIME_NONE;
    add_job(s, "a-date", &d, 1);
    add_job(s, "b-interval", &iv, 1);
    wait_submitted(2);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_submitted, 2);
    pthread_mutex_unlock(&mu);
    aps_job *a = NULL, *b = NULL, **page = NULL;
    size_t n = 0;
    assert_int_equal(aps_job_get(s, "a-date", &a), 0);
    assert_int_equal(aps_job_get(s, "b-interval", &b), 0);
    assert_int_equal(aps_job_list(s, NULL, NULL, 10, &page, &n, NULL), 0);
    aps_store_info si;
    assert_int_equal(aps_scheduler_store_info(s, 0, &si), 0);
    assert_true(aps_time_now() < due);
    assert_int_equal(si.jobs, 2);
    assert_int_equal(si.unscheduled, 0); /* the date job is not paused */
    assert_true(si.next_run_time == due);
    assert_int_equal(n, 2);
    assert_true(a->next_run_time == due);
    assert_int_equal(a->running_instances, 0);
    assert_false(a->paused);
    assert_true(b->next_run_time == due);
    assert_int_equal(b->running_instances, 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(page[i]->next_run_time == due);
        assert_int_equal(page[i]->running_instances, 0);
    }
    aps_job_list_free(page, n);
    aps_job_free(a);
    aps_job_free(b);
    assert_int_equal(wait_calls(2, 7000 * MS), 2);
    assert_int_equal(aps_job_get(s, "b-interval", &b), 0);
    assert_true(b->next_run_time == due + 10 * 1000 * MS);
    aps_job_free(b);
    /* The date job goes once its run is handed on. */
    for (int i = 0; i < 2000 && aps_job_get(s, "a-date", &a) == 0; i++) {
        aps_job_free(a);
        usleep(1000);
    }
    assert_int_equal(aps_scheduler_store_info(s, 0, &si), 0);
    assert_int_equal(si.jobs, 1);
    assert_int_equal(si.unscheduled, 0);
    assert_true(si.next_run_time == due + 10 * 1000 * MS);
    aps_scheduler_destroy(s);
}

/* A job whose previous instance is still running is not judged early: the
 * instance finishes before the next fire time, so that run is not skipped
 * (max_instances 1), as without commit-ahead. */
static void
test_running_instance_decided_at_its_time(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(AHEAD);
    pthread_mutex_lock(&mu);
    busy_us = 300 * MS; /* runs into the next run's window, ends 200 ms before it */
    pthread_mutex_unlock(&mu);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_trigger_spec t = every_500ms(aps_time_now() + 400 * MS, 4);
    add_job(s, "busy", &t, 1);
    assert_int_equal(wait_calls(4, 6000 * MS), 4);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_skipped, 0);
    for (size_t i = 0; i < 4; i++) {
        assert_true(started[i] >= scheduled_at[i]);
        assert_true(started[i] < scheduled_at[i] + 150 * MS);
    }
    pthread_mutex_unlock(&mu);
    aps_scheduler_destroy(s);
}

/* Off (negative): the run is committed at its time, not before. */
static void
test_off(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(-1);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_time due = aps_time_now() + 400 * MS;
    aps_trigger_spec d = tu_date(due);
    add_job(s, "plain", &d, 1);
    assert_int_equal(wait_calls(1, 5000 * MS), 1);
    wait_submitted(1); /* listeners are called at the end of the loop's pass */
    pthread_mutex_lock(&mu);
    assert_int_equal(n_submitted, 1);
    assert_true(submitted_at[0] >= due);
    assert_true(started[0] >= due);
    pthread_mutex_unlock(&mu);
    aps_scheduler_destroy(s);
}

/* A disk that is slow when it matters: for each fire time T of the job, a
 * thread makes a 200 ms write of the store's from T - 100 ms, so the loop's
 * write of that run, made at T - 50 ms with a 50 ms lead, waits for it. */
typedef struct hog {
    aps_store *st;
    aps_time first, every;
    int fires;
    pthread_t th;
} hog;

static int
slow_write(aps_txn *t, void *arg)
{
    (void)t;
    (void)arg;
    usleep(200 * 1000);
    return 0;
}

static void *
hog_main(void *arg)
{
    hog *h = arg;
    for (int k = 0; k < h->fires; k++) {
        aps_time at = h->first + k * h->every - 100 * MS, now = aps_time_now();
        if (at > now)
            usleep((useconds_t)(at - now));
        assert_int_equal(aps__store_write(h->st, slow_write, NULL), 0);
    }
    return NULL;
}

/* Fires an interval job every second 4 times, with the hog if `hogged`;
 * returns the store's lead at the end and each fire's lateness. */
static void
four_fires(aps_scheduler *s, int hogged, int64_t *lead, int64_t late[4])
{
    hog h = {s->stores[0].st, aps_time_now() + 1000 * MS, 1000 * MS, 4, 0};
    aps_store_info info;

    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_trigger_spec t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.seconds = 1;
    t.u.interval.start_date = h.first;
    t.u.interval.end_date = h.first + 3500 * MS;
    add_job(s, "steady", &t, 1);
    if (hogged)
        assert_int_equal(pthread_create(&h.th, NULL, hog_main, &h), 0);
    assert_int_equal(wait_calls(4, 10000 * MS), 4);
    if (hogged)
        pthread_join(h.th, NULL);
    assert_int_equal(aps_scheduler_store_info(s, 0, &info), 0);
    *lead = info.commit_ahead_us;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < 4; i++) {
        assert_true(scheduled_at[i] == h.first + (aps_time)i * h.every);
        assert_true(started[i] >= scheduled_at[i]); /* never early */
        late[i] = started[i] - scheduled_at[i];
    }
    pthread_mutex_unlock(&mu);
    aps_scheduler_destroy(s);
}

/* aps__prepared_test: the loop takes 150 ms to prepare each batch of due
 * jobs, as a pass of many jobs on a busy machine would. */
static void
slow_prepare(aps_scheduler *s, int done)
{
    (void)s;
    if (!done)
        usleep(150 * 1000);
}

/* Four fires with a lead allowed to widen (up to 1 s), then with it fixed
 * at 50 ms, each made about 100 ms late by the hog or by slow_prepare:
 * widening, the lead learns from the first and starts the others on time;
 * fixed, every run is late. */
static void
widening_then_fixed(int hogged)
{
    void (*hook)(aps_scheduler *, int) = hogged ? NULL : slow_prepare;
    int64_t lead = 0, late[4];

    aps__prepared_test = hook;
    four_fires(open_sched_max(50 * MS, 1000 * MS), hogged, &lead, late);
    print_message("widening: lead %lld us, late %lld %lld %lld %lld us\n", (long long)lead,
                  (long long)late[0], (long long)late[1], (long long)late[2], (long long)late[3]);
    assert_true(lead >= 250 * MS);
    assert_true(lead <= 1000 * MS);
    assert_true(late[0] >= 80 * MS);
    for (size_t i = 1; i < 4; i++)
        assert_true(late[i] < 50 * MS);

    setup(NULL);
    aps__prepared_test = hook;
    four_fires(open_sched(50 * MS), hogged, &lead, late);
    aps__prepared_test = NULL;
    print_message("fixed: lead %lld us, late %lld %lld %lld %lld us\n", (long long)lead,
                  (long long)late[0], (long long)late[1], (long long)late[2], (long long)late[3]);
    assert_true(lead == 50 * MS);
    for (size_t i = 0; i < 4; i++)
        assert_true(late[i] >= 80 * MS);
}

/* Each run's write waits for the hog's 200 ms one: widening to twice the
 * slowest recent write (150 ms or more) starts all but the first on time. */
static void
test_lead_widens_while_writes_are_slow(void **state)
{
    (void)state;
    widening_then_fixed(1);
}

/* A pass that lasts longer than the lead makes its runs late though every
 * write is quick. Widening learns from the first how long the loop took
 * from when it could have taken the run to its commit (about 165 ms), and
 * takes twice that. */
static void
test_lead_widens_while_passes_are_long(void **state)
{
    (void)state;
    widening_then_fixed(0);
}

/* A job whose runs last longer than its interval (max_instances 1) has its
 * run deferred by each pass that reaches its time, and taken at that time,
 * when its last run is still on: late from when the lead could have taken
 * it, but not for want of a lead, which the passes do not widen (it had
 * grown by half at each such run: 117 ms after three). */
static void
test_lead_kept_for_deferred_runs(void **state)
{
    aps_store_info info;
    aps_trigger_spec t;

    (void)state;
    aps_scheduler *s = open_sched_max(50 * MS, 1000 * MS);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    busy_us = 1100 * MS;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.seconds = 1;
    t.u.interval.start_date = aps_time_now() + 500 * MS;
    t.u.interval.end_date = APS_TIME_NONE;
    add_job(s, "long", &t, 1);
    assert_int_equal(wait_calls(3, 8000 * MS), 3);
    assert_int_equal(aps_scheduler_store_info(s, 0, &info), 0);
    assert_int_equal(aps_scheduler_shutdown(s, 1), 0); /* the loop's fields now still */
    int64_t pass = 0;
    for (size_t k = 0; k < APS__AHEAD_WINDOW_S; k++)
        if (s->stores[0].need_pass[k] > pass)
            pass = s->stores[0].need_pass[k];
    print_message("lead %lld us, for the passes %lld us\n", (long long)info.commit_ahead_us,
                  (long long)pass);
    /* A deferred run counted asks for 2 x (50 - 12.5) ms and more; the
     * first run, taken 12.5 ms after its time came within the lead, for
     * twice that and its commit. (Not the lead itself: a slow disk may
     * widen it for its writes.) */
    assert_true(pass < 75 * MS);
    pthread_mutex_lock(&mu);
    assert_true(n_skipped >= 1); /* each other run: its instance still on */
    pthread_mutex_unlock(&mu);
    aps_scheduler_destroy(s);
}

/* Due runs are gathered: the loop takes them once the earliest is the lead
 * less 25 ms ahead (3/4 of a lead under 100 ms), with all those due within
 * the lead, so runs 5 ms apart share commits (each taken as it came within
 * the lead, each would make its own) and are still committed ahead and
 * started at their times. */
static void
test_runs_gathered_into_few_commits(void **state)
{
    (void)state;
    enum { N = 48 };
    aps_scheduler *s = open_sched(AHEAD);
    aps_store_stats st;
    char id[16];
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_time first = aps_time_now() + 1000 * MS;
    for (int i = 0; i < N; i++) {
        aps_trigger_spec d = tu_date(first + i * 5 * MS);
        snprintf(id, sizeof(id), "g%02d", i);
        add_job(s, id, &d, 1);
    }
    assert_int_equal(aps__store_stats(s->stores[0].st, &st), 0);
    uint64_t c0 = st.commits;
    assert_true(aps_time_now() < first - AHEAD); /* none taken yet */
    /* All are committed before first; the runs' ends after that have no
     * pass to share (nothing is due) and are committed one by one. */
    wait_submitted(N);
    assert_int_equal(aps__store_stats(s->stores[0].st, &st), 0);
    uint64_t commits = st.commits - c0;
    printf("gathered: %llu commits for %d runs\n", (unsigned long long)commits, N);
    assert_int_equal(wait_calls(N, 5000 * MS), N);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_submitted, N);
    for (size_t i = 0; i < N; i++) {
        /* committed between the lead less 25 ms and the lead ahead (with
         * room for the commit itself) */
        assert_true(submitted_at[i] < submitted_for[i] - AHEAD / 2);
        assert_true(submitted_at[i] >= submitted_for[i] - AHEAD - 50 * MS);
        assert_true(started[i] >= scheduled_at[i]);
        assert_true(started[i] < scheduled_at[i] + 150 * MS);
    }
    pthread_mutex_unlock(&mu);
    /* 235 ms of runs, gathered every 25 ms: about 10 commits; one per run
     * without gathering. */
    if (commits > N / 3)
        fail_msg("%llu commits for %d runs", (unsigned long long)commits, N);
    aps_scheduler_destroy(s);
}

static atomic_int adds_done, adds_failed;

static void
add_done_cb(void *userdata, int rc, aps_job *job, const aps_error *err)
{
    (void)userdata;
    (void)err;
    aps_job_free(job);
    if (rc != 0)
        atomic_fetch_add(&adds_failed, 1);
    atomic_fetch_add(&adds_done, 1);
}

/* Thousands of jobs due at once: their batches go to the store one after
 * the other, each scanned after the last job of the one before while that
 * one is still on its way. Every job runs exactly once, and is gone after
 * (a date job's only run). */
static void
test_batches_on_their_way(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(AHEAD);
    char id[16];
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_time due = aps_time_now() + 3000 * MS;
    atomic_store(&adds_done, 0);
    atomic_store(&adds_failed, 0);
    for (int i = 0; i < MANY; i++) {
        aps_trigger_spec d = tu_date(due + (i % 7) * MS);
        snprintf(id, sizeof(id), "p%04d", i);
        aps_job_spec j = tu_function_job(id, &d, "count", NULL);
        aps_job_add_async(s, &j, NULL, add_done_cb, NULL);
    }
    for (int i = 0; i < 20000 && atomic_load(&adds_done) < MANY; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&adds_done), MANY);
    assert_int_equal(atomic_load(&adds_failed), 0);
    assert_true(aps_time_now() < due - AHEAD); /* none taken yet */
    for (int i = 0; i < 30000; i++) {
        pthread_mutex_lock(&mu);
        size_t k = n_executed;
        pthread_mutex_unlock(&mu);
        if (k >= MANY)
            break;
        usleep(1000);
    }
    usleep(300 * 1000); /* time for a second run, if one were to come */
    pthread_mutex_lock(&mu);
    assert_int_equal(n_executed, MANY);
    for (int i = 0; i < MANY; i++)
        if (many_runs[i] != 1)
            fail_msg("job p%04d ran %d times", i, many_runs[i]);
    pthread_mutex_unlock(&mu);
    aps_store_info si;
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(aps_scheduler_store_info(s, 0, &si), 0);
        if (si.jobs == 0)
            break;
        usleep(1000);
    }
    assert_int_equal(si.jobs, 0);
    aps_scheduler_destroy(s);
}

/* A scheduler on a store of `type` whose loop spaces its passes by
 * `spacing` (aps_scheduler_config.pass_spacing_us), running; LMDB runs are
 * committed 300 ms ahead. */
static aps_scheduler *
open_spaced(const char *type, int64_t spacing)
{
    aps_scheduler *s = open_cfg(type, AHEAD, 0, spacing);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    return s;
}

/* Jobs a and b, b due `gap` after a; returns a's due time once both ran. */
static aps_time
run_two(aps_scheduler *s, int64_t gap)
{
    aps_time due = aps_time_now() + 400 * MS;
    aps_trigger_spec a = tu_date(due), b = tu_date(due + gap);
    add_job(s, "a", &a, 1);
    add_job(s, "b", &b, 1);
    assert_int_equal(wait_calls(2, 5000 * MS), 2);
    return due;
}

/* A run due soon after the loop's last pass waits for pass_spacing_us from
 * it (in the loop with the memory store, in the commit-ahead thread with
 * LMDB, where both runs wait committed), one due longer after is not
 * delayed; without spacing each starts at its time; a spacing over 1 s is
 * refused. The runs take 1 s: a finished run wakes the loop, and a pass
 * then would take b at once, spacing or not. */
static void
test_pass_spacing(void **state)
{
    static const char *const types[] = {"memory", "lmdb"};
    for (size_t k = 0; k < 2; k++) {
        setup(state);
        pthread_mutex_lock(&mu);
        busy_us = 1000 * MS;
        pthread_mutex_unlock(&mu);
        aps_scheduler *s = open_spaced(types[k], 200 * MS);
        aps_time due = run_two(s, 50 * MS);
        pthread_mutex_lock(&mu);
        /* a: the pass before was 400 ms earlier (the adds), so on time. */
        assert_true(scheduled_at[0] == due && started[0] >= due);
        assert_true(started[0] < due + 150 * MS);
        assert_true(scheduled_at[1] == due + 50 * MS);
        /* b: not before a's hand-off (at due or after) plus the spacing. */
        if (started[1] < due + 200 * MS)
            fail_msg("%s: b started %lld us after a's time, spacing 200 ms", types[k],
                     (long long)(started[1] - due));
        pthread_mutex_unlock(&mu);
        aps_scheduler_destroy(s);

        setup(state);
        s = open_spaced(types[k], -1);
        due = run_two(s, 50 * MS);
        pthread_mutex_lock(&mu);
        assert_true(started[1] >= due + 50 * MS);
        if (started[1] >= due + 400 * MS)
            fail_msg("%s: b started %lld us after a's time, no spacing", types[k],
                     (long long)(started[1] - due));
        pthread_mutex_unlock(&mu);
        aps_scheduler_destroy(s);
    }
    aps_store_def store = {"default", "memory", NULL};
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.pass_spacing_us = 1000001;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), APS_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "pass_spacing_us"));
}

/* ---- changes within the lead withdraw the held run ------------------------ */

/* Adds job `id`, every 500 ms twice from `in_us` from now (`arg` for the
 * function), and waits until its first run is committed ahead
 * (JOB_SUBMITTED): held, its time not come. Returns that time. */
static aps_time
add_held(aps_scheduler *s, const char *id, const char *arg, int64_t in_us)
{
    size_t before;
    pthread_mutex_lock(&mu);
    before = n_submitted;
    pthread_mutex_unlock(&mu);
    aps_time due = aps_time_now() + in_us;
    aps_trigger_spec t = every_500ms(due, 2);
    aps_job_spec j = tu_function_job(id, &t, "record", arg);
    tu_job_add(s, &j);
    wait_submitted(before + 1);
    assert_true(aps_time_now() < due - 20 * MS); /* still held */
    return due;
}

static void
sleep_until(aps_time t)
{
    aps_time now = aps_time_now();
    if (t > now)
        usleep((useconds_t)(t - now));
}

static void
assert_withdrawn(size_t n, const char *why)
{
    pthread_mutex_lock(&mu);
    assert_int_equal(n_withdrawn, n);
    assert_int_equal(n_other_errors, 0);
    if (why != NULL)
        assert_non_null(strstr(withdrawn_msg, why));
    pthread_mutex_unlock(&mu);
}

/* Reopened, the store has no run left running: nothing is reported
 * interrupted (the run index entries went with the withdrawal). */
static void
assert_nothing_interrupted(void)
{
    aps_scheduler *s = started_sched();
    usleep(100 * 1000);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_other_errors, 0);
    pthread_mutex_unlock(&mu);
    aps_scheduler_destroy(s);
}

/* Past the run's time: nothing ran, n runs were withdrawn (`why`); the
 * scheduler destroyed, its store reopened has nothing interrupted. */
static void
end_without_runs(aps_scheduler *s, aps_time due, size_t n, const char *why)
{
    sleep_until(due + 300 * MS);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 0);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(n, why);
    aps_scheduler_destroy(s);
    assert_nothing_interrupted();
}

/* RemoveJob before the run's time: the run committed ahead never starts
 * (APScheduler would not have submitted it yet); it ends as withdrawn. */
static void
test_remove_withdraws_held_run(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = add_held(s, "gone", NULL, 600 * MS);
    assert_int_equal(aps_job_remove(s, "gone", NULL), 0);
    end_without_runs(s, due, 1, "the job was removed");
}

/* PauseJob: no run, the job stays paused with no instance running, and the
 * withdrawn run is not counted in its statistics. */
static void
test_pause_withdraws_held_run(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = add_held(s, "paused", NULL, 600 * MS);
    aps_job *job = NULL;
    assert_int_equal(aps_job_pause(s, "paused", NULL, &job), 0);
    assert_true(job->paused);
    assert_int_equal(job->running_instances, 0);
    aps_job_free(job);
    sleep_until(due + 300 * MS);
    assert_int_equal(aps_job_get(s, "paused", &job), 0);
    assert_true(job->paused);
    assert_int_equal(job->running_instances, 0);
    assert_int_equal(job->stats.runs, 0);
    assert_int_equal(job->stats.failures, 0);
    aps_job_free(job);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 0);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(1, "the job was paused");
    aps_scheduler_destroy(s);
    assert_nothing_interrupted();
}

/* ModifyJob (its argument): the run committed with the old one is
 * withdrawn, and the job runs once at that time, as modified. */
static void
test_modify_runs_modified_job_once(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = add_held(s, "changed", "old", 600 * MS);
    aps_job_spec spec = tu_function_job("changed", NULL, "record", "new");
    aps_error err;
    assert_int_equal(aps_job_modify(s, "changed", &spec, APS_MODIFY_TARGET, NULL, NULL, &err), 0);
    assert_int_equal(wait_calls(1, 3000 * MS), 1);
    sleep_until(due + 300 * MS);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 1); /* the second is due at +500 ms */
    assert_string_equal(called_arg[0], "new");
    assert_true(scheduled_at[0] == due);
    assert_true(started[0] >= due);
    assert_true(started[0] < due + 150 * MS);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(1, "the job was modified");
    aps_scheduler_destroy(s);
}

/* A started scheduler with job `id` (every 500 ms, two fires, the first
 * 600 ms from now: *start), its first run committed ahead and its time
 * 20 ms away at least. */
static aps_scheduler *
interval_held(const char *id, uint32_t max_instances, aps_time *start)
{
    aps_scheduler *s = started_sched();
    *start = aps_time_now() + 600 * MS;
    aps_trigger_spec t = every_500ms(*start, 2);
    add_job(s, id, &t, max_instances);
    wait_submitted(1);
    assert_true(aps_time_now() < *start - 20 * MS);
    return s;
}

/* ResumeJob on a job that is not paused recomputes its next run time from
 * now: the time of the run committed ahead. That run is withdrawn, so the
 * time runs once, not twice. */
static void
test_resume_does_not_run_twice(void **state)
{
    (void)state;
    aps_time start;
    aps_scheduler *s = interval_held("twice", 5, &start);
    assert_int_equal(aps_job_resume(s, "twice", NULL, NULL), 0);
    sleep_until(start + 900 * MS);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 2);
    assert_true(scheduled_at[0] == start);
    assert_true(scheduled_at[1] == start + 500 * MS);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(1, "the job was resumed");
    aps_scheduler_destroy(s);
}

/* RunJobNow before the time of a held run, max_instances 1: the run now
 * starts at once (the held run has not started, so it takes no instance
 * slot), and the held run is withdrawn and comes back at its time, judged
 * then: the run now has ended, so it runs. Three calls: now, the time, the
 * time after. */
static void
test_run_now_beside_held_run(void **state)
{
    (void)state;
    aps_time start;
    aps_scheduler *s = interval_held("now", 1, &start);
    char run_id[33] = "";
    int queued = -1;
    aps_error err;
    aps_time asked = aps_time_now();
    if (aps_job_run_now(s, "now", NULL, run_id, &queued, &err) != 0)
        fail_msg("run now: %s", err.msg);
    assert_int_equal(queued, 0);
    assert_true(run_id[0] != '\0');
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "now", &job), 0);
    assert_true(job->next_run_time == start);
    aps_job_free(job);
    assert_int_equal(wait_calls(3, 3000 * MS), 3);
    pthread_mutex_lock(&mu);
    assert_true(started[0] >= asked && started[0] < start);
    assert_true(scheduled_at[1] == start);
    assert_true(started[1] >= start);
    assert_true(scheduled_at[2] == start + 500 * MS);
    assert_int_equal(n_skipped, 0);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(1, "the job was run now");
    aps_scheduler_destroy(s);
}

/* The lead of the shutdown tests: long, so that a slow machine (ASan)
 * still shuts down well before the held run's time. */
#define LONG_AHEAD (1200 * MS)

/* Adds one-shot job `id` due 1.5 s from now to `s` (lead LONG_AHEAD),
 * waits until its run is committed ahead (held), and returns its time. */
static aps_time
add_held_once(aps_scheduler *s, const char *id)
{
    aps_time due = aps_time_now() + 1500 * MS;
    aps_trigger_spec d = tu_date(due);
    add_job(s, id, &d, 1);
    wait_submitted(1);
    assert_true(aps_time_now() < due - 700 * MS);
    return due;
}

/* The store reopened (not started) after a shutdown withdrew job `id`'s
 * held run: the job is there, its next run time `when`, nothing running. */
static aps_scheduler *
reopened_at(const char *id, aps_time when)
{
    aps_scheduler *s = open_sched(LONG_AHEAD);
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, id, &job), 0);
    assert_true(job->next_run_time == when);
    assert_int_equal(job->running_instances, 0);
    aps_job_free(job);
    return s;
}

/* reopened_at, closed again; nothing ran. */
static void
assert_reopened_at(const char *id, aps_time when)
{
    aps_scheduler_destroy(reopened_at(id, when));
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 0);
    pthread_mutex_unlock(&mu);
}

/* Shuts down a scheduler (lead LONG_AHEAD, paused first if `paused`)
 * while one-shot job `id`'s run is held, and checks that the shutdown
 * came before its time, that nothing ran (until past that time too when
 * `paused`) and that the run was withdrawn. Returns the store reopened
 * (not started) with the job there, its next run time that time (*due). */
static aps_scheduler *
shutdown_held(const char *id, int paused, aps_time *due)
{
    aps_scheduler *s = open_sched(LONG_AHEAD);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    *due = add_held_once(s, id);
    if (paused)
        assert_int_equal(aps_scheduler_pause(s), 0);
    assert_int_equal(aps_scheduler_shutdown(s, 1), 0);
    assert_true(aps_time_now() < *due);
    if (paused)
        sleep_until(*due + 100 * MS);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 0);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(1, "the scheduler stopped first");
    aps_scheduler_destroy(s);
    return reopened_at(id, *due);
}

/* Shut down while a run waits for its time: APScheduler would not have
 * submitted it yet, so it does not start, and the shutdown does not wait
 * for its time. It is withdrawn at once ("the scheduler stopped first"),
 * its one-shot job kept with that time as its next run time; reopened in
 * time, the scheduler runs it at that time, once, and the job goes. */
static void
test_shutdown_withdraws_held_runs(void **state)
{
    (void)state;
    aps_time due;
    aps_scheduler *s = shutdown_held("held", 0, &due);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    assert_int_equal(wait_calls(1, 3000 * MS), 1);
    usleep(100 * 1000);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 1);
    assert_true(scheduled_at[0] == due);
    assert_true(started[0] >= due);
    assert_int_equal(n_other_errors, 0);
    pthread_mutex_unlock(&mu);
    aps_scheduler_destroy(s);
    s = open_sched(LONG_AHEAD);
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "held", &job), APS_ENOENT);
    aps_scheduler_destroy(s);
}

/* The same while the scheduler is paused: its held runs wait for the
 * resume, and a shutdown meanwhile withdraws them (they were handed on
 * by it, paused or not). */
static void
test_shutdown_while_paused_withdraws(void **state)
{
    (void)state;
    aps_time due;
    aps_scheduler_destroy(shutdown_held("paused", 1, &due));
}

/* The shutdown's withdrawal against a change made meanwhile: the hook
 * stops the shutdown after it took the held run back, before its write;
 * a reschedule then waits for that write (gate_enter), and applies after
 * it. Without the wait the reschedule found no held run to withdraw, and
 * the withdrawal then put the old time back over the new one. */
static sem_t gate_reached, gate_release; /* made once, in main */

/* Waits for a post on `sem`, at most 10 s (a test that failed meanwhile
 * does not hang the next). */
static int
sem_wait_10s(sem_t *sem)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    int rc;
    while ((rc = sem_timedwait(sem, &ts)) != 0 && errno == EINTR)
        ;
    return rc;
}

static void
gate_hook(aps_scheduler *s)
{
    (void)s;
    sem_post(&gate_reached);
    sem_wait_10s(&gate_release);
}

typedef struct call_thread {
    aps_scheduler *s;
    const char *id;
    aps_time when; /* reschedule: the new date */
    int rc;
    atomic_int done;
} call_thread;

static void *
shutdown_main(void *arg)
{
    call_thread *c = arg;
    c->rc = aps_scheduler_shutdown(c->s, 1);
    atomic_store(&c->done, 1);
    return NULL;
}

static void *
reschedule_main(void *arg)
{
    call_thread *c = arg;
    aps_trigger_spec d = tu_date(c->when);
    c->rc = aps_job_reschedule(c->s, c->id, &d, NULL, NULL, NULL);
    atomic_store(&c->done, 1);
    return NULL;
}

static void
test_shutdown_withdrawal_holds_changes_back(void **state)
{
    (void)state;
    pthread_t st, rt;
    aps_scheduler *s = open_sched(LONG_AHEAD);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_time due = add_held_once(s, "gated");
    aps__shutdown_withdraw_test = gate_hook;
    call_thread sc = {s, NULL, 0, -1, 0};
    call_thread rc = {s, "gated", due + 3600 * 1000 * MS, -1, 0};
    assert_int_equal(pthread_create(&st, NULL, shutdown_main, &sc), 0);
    assert_int_equal(sem_wait_10s(&gate_reached), 0);
    assert_int_equal(pthread_create(&rt, NULL, reschedule_main, &rc), 0);
    size_t waiting = 0;
    for (int i = 0; i < 5000 && waiting == 0; i++) {
        usleep(1000);
        pthread_mutex_lock(&s->mu);
        waiting = s->gate_waiting;
        pthread_mutex_unlock(&s->mu);
    }
    assert_int_equal(waiting, 1); /* held back at the gate */
    assert_int_equal(atomic_load(&rc.done), 0);
    sem_post(&gate_release);
    pthread_join(st, NULL);
    pthread_join(rt, NULL);
    aps__shutdown_withdraw_test = NULL;
    assert_int_equal(sc.rc, 0);
    assert_int_equal(rc.rc, 0);
    assert_withdrawn(1, "the scheduler stopped first");
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "gated", &job), 0);
    assert_true(job->next_run_time == rc.when);
    aps_job_free(job);
    aps_scheduler_destroy(s);
    assert_reopened_at("gated", rc.when);
}

/* The same change made on a store writer thread (an asynchronous add's
 * callback replacing the job), which cannot wait there: it is put off
 * until the withdrawal is written, then applied. Before, it went ahead of
 * the withdrawal's write, which then put the old time back over it. A
 * synchronous change made there is refused, saying why, and so is a
 * shutdown (its writes would wait for that thread). */
typedef struct chained {
    aps_scheduler *s;
    aps_time when;       /* the replacement's date */
    atomic_int first_rc; /* the plain add's result (1 before) */
    atomic_int rc;       /* the replacing add's result (1 before) */
    int pause_rc;        /* a synchronous change there: refused */
    aps_error pause_err;
    int shutdown_rc; /* a shutdown there: refused */
} chained;

static void
chained_replaced(void *userdata, int rc, aps_job *job, const aps_error *err)
{
    chained *c = userdata;
    (void)err;
    aps_job_free(job);
    atomic_store(&c->rc, rc);
}

/* A plain add's callback, on the writer thread: replaces job "gated". */
static void
chained_first(void *userdata, int rc, aps_job *job, const aps_error *err)
{
    chained *c = userdata;
    (void)err;
    aps_job_free(job);
    aps_trigger_spec d = tu_date(c->when);
    aps_job_spec j = tu_function_job("gated", &d, "record", NULL);
    aps_mutation m = {.replace_existing = 1};
    aps_job_add_async(c->s, &j, &m, chained_replaced, c);
    aps_trigger_spec later = tu_date(c->when + MS);
    c->pause_rc = aps_job_reschedule(c->s, "gated", &later, NULL, NULL, &c->pause_err);
    c->shutdown_rc = aps_scheduler_shutdown(c->s, 0);
    atomic_store(&c->first_rc, rc);
}

static void
test_shutdown_withdrawal_puts_off_writer_thread_add(void **state)
{
    (void)state;
    pthread_t st;
    aps_scheduler *s = open_sched(LONG_AHEAD);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    aps_time due = add_held_once(s, "gated");
    aps__shutdown_withdraw_test = gate_hook;
    call_thread sc = {s, NULL, 0, -1, 0};
    chained c = {s, due + 3600 * 1000 * MS, 1, 1, 0, {0, ""}, 0};
    assert_int_equal(pthread_create(&st, NULL, shutdown_main, &sc), 0);
    assert_int_equal(sem_wait_10s(&gate_reached), 0);
    aps_trigger_spec far = tu_date(due + 7200 * 1000 * MS);
    aps_job_spec other = tu_function_job("other", &far, "record", NULL);
    aps_job_add_async(s, &other, NULL, chained_first, &c);
    for (int i = 0; i < 5000 && atomic_load(&c.first_rc) == 1; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&c.first_rc), 0);
    assert_int_equal(c.pause_rc, APS_ESTATE);
    assert_non_null(strstr(c.pause_err.msg, "shutting down"));
    assert_int_equal(c.shutdown_rc, APS_ESTATE);
    usleep(100 * 1000);
    assert_int_equal(atomic_load(&c.rc), 1); /* put off */
    sem_post(&gate_release);
    pthread_join(st, NULL);
    for (int i = 0; i < 5000 && atomic_load(&c.rc) == 1; i++)
        usleep(1000);
    aps__shutdown_withdraw_test = NULL;
    assert_int_equal(sc.rc, 0);
    assert_int_equal(atomic_load(&c.rc), 0);
    assert_withdrawn(1, "the scheduler stopped first");
    aps_scheduler_destroy(s);
    assert_reopened_at("gated", c.when);
}

/* Backfill before the time of a held run, max_instances 1: as RunJobNow,
 * the held run is withdrawn (it takes no instance slot before its time),
 * so the backfilled runs start at once, one after the other, and the held
 * time comes back, judged then: they have ended, so it runs. Before, they
 * queued behind the held run until its time had come and gone. A range
 * without a fire time withdraws nothing. */
static void
test_backfill_beside_held_run(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    /* Every second from 1.4 s ago: two times past, the next 0.6 s on. */
    aps_time now = aps_time_now(), start = now + 600 * MS;
    aps_trigger_spec t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.seconds = 1;
    t.u.interval.start_date = start - 2000 * MS;
    t.u.interval.end_date = start + 1100 * MS;
    add_job(s, "bf", &t, 1);
    wait_submitted(1);
    assert_true(aps_time_now() < start - 20 * MS);
    size_t count = 1;
    aps_error err;
    /* A range without a fire time leaves the held run alone. */
    if (aps_job_backfill(s, "bf", start - 2900 * MS, start - 2100 * MS, 0, NULL, &count, &err))
        fail_msg("backfill: %s", err.msg);
    assert_int_equal(count, 0);
    for (int i = 0; i < 100; i++) {
        usleep(1000); /* listeners are called on the loop's thread */
        assert_withdrawn(0, NULL);
    }
    if (aps_job_backfill(s, "bf", start - 2500 * MS, aps_time_now(), 0, NULL, &count, &err) != 0)
        fail_msg("backfill: %s", err.msg);
    assert_int_equal(count, 2);
    assert_int_equal(wait_calls(4, 3000 * MS), 4);
    pthread_mutex_lock(&mu);
    assert_true(scheduled_at[0] == start - 2000 * MS);
    assert_true(scheduled_at[1] == start - 1000 * MS);
    assert_true(started[0] < start && started[1] < start);
    assert_true(scheduled_at[2] == start);
    assert_true(started[2] >= start);
    assert_true(scheduled_at[3] == start + 1000 * MS);
    assert_int_equal(n_skipped, 0);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(1, "the job was backfilled");
    aps_scheduler_destroy(s);
}

/* add_job(replace_existing) before the run's time: the replaced job's run
 * is withdrawn, the new job runs at that time once. */
static void
test_replace_runs_once(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = add_held(s, "same", "old", 600 * MS);
    aps_trigger_spec t = every_500ms(due, 2);
    aps_job_spec j = tu_function_job("same", &t, "record", "new");
    aps_mutation m = {.replace_existing = 1};
    aps_error err;
    assert_int_equal(aps_job_add(s, &j, &m, NULL, &err), 0);
    sleep_until(due + 300 * MS);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 1);
    assert_string_equal(called_arg[0], "new");
    assert_true(scheduled_at[0] == due);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(1, "the job was replaced");
    aps_scheduler_destroy(s);
}

/* RemoveAllJobs: every held run of the store is withdrawn. */
static void
test_remove_all_withdraws_held_runs(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = aps_time_now() + 600 * MS;
    aps_trigger_spec t = every_500ms(due, 2);
    aps_job_spec a = tu_function_job("a", &t, "record", NULL);
    aps_job_spec b = tu_function_job("b", &t, "record", NULL);
    tu_job_add(s, &a);
    tu_job_add(s, &b);
    wait_submitted(2);
    assert_true(aps_time_now() < due - 20 * MS);
    size_t removed = 0;
    assert_int_equal(aps_job_remove_all(s, NULL, NULL, &removed), 0);
    assert_int_equal(removed, 2);
    end_without_runs(s, due, 2, "all jobs were removed");
}

/* A gate on the store's writer: a write that waits until released, so
 * that the writes queued meanwhile share the next commit. */
static atomic_int gate_open;

static int
gate_write(aps_txn *t, void *arg)
{
    (void)t;
    (void)arg;
    for (int i = 0; i < 5000 && !atomic_load(&gate_open); i++)
        usleep(1000);
    return 0;
}

static void
gate_done(void *arg, int rc)
{
    (void)arg;
    (void)rc;
}

typedef struct remover {
    aps_scheduler *s;
    const char *id;
    int rc;
} remover;

static void *
remove_main(void *arg)
{
    remover *r = arg;
    r->rc = aps_job_remove(r->s, r->id, NULL);
    return NULL;
}

static atomic_int replaced_rc;

static void
replaced(void *userdata, int rc, aps_job *job, const aps_error *err)
{
    (void)userdata;
    (void)err;
    aps_job_free(job);
    atomic_store(&replaced_rc, rc);
}

/* The changes in the same commit as the runs: the loop's write of the runs
 * queued behind a held-up writer, a RemoveJob and a replacing asynchronous
 * add (the daemon's AddJob) queued after it. The runs reach the hold queue
 * only after that commit, and are withdrawn all the same: no run of the
 * removed job, one of the replacement. */
static void
test_changes_in_the_runs_commit(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = aps_time_now() + 800 * MS;
    aps_trigger_spec t = every_500ms(due, 2);
    aps_job_spec gone = tu_function_job("gone", &t, "record", "gone");
    aps_job_spec old = tu_function_job("same", &t, "record", "old");
    tu_job_add(s, &gone);
    tu_job_add(s, &old);
    sleep_until(due - 400 * MS);
    atomic_store(&gate_open, 0);
    aps__store_write_async(s->stores[0].st, gate_write, NULL, gate_done, NULL);
    sleep_until(due - 150 * MS); /* the runs' write is queued at due - 225 ms */
    pthread_mutex_lock(&mu);
    assert_int_equal(n_submitted, 0); /* not committed yet */
    pthread_mutex_unlock(&mu);
    remover r = {s, "gone", 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, remove_main, &r), 0);
    /* One fire: no run of it is left committed ahead at the destroy (a
     * held run handed to an executor shutting down ends as an error). */
    aps_trigger_spec once = every_500ms(due, 1);
    aps_job_spec repl = tu_function_job("same", &once, "record", "new");
    aps_mutation m = {.replace_existing = 1};
    atomic_store(&replaced_rc, 1);
    aps_job_add_async(s, &repl, &m, replaced, NULL);
    usleep(20 * 1000);
    atomic_store(&gate_open, 1);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    for (int i = 0; i < 2000 && atomic_load(&replaced_rc) == 1; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&replaced_rc), 0);
    sleep_until(due + 300 * MS);
    pthread_mutex_lock(&mu);
    assert_true(n_submitted >= 3); /* the two withdrawn, the replacement's */
    assert_int_equal(n_calls, 1);
    assert_string_equal(called_arg[0], "new");
    assert_true(scheduled_at[0] == due);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(2, NULL);
    aps_scheduler_destroy(s);
    assert_nothing_interrupted();
}

/* A change written before the run's time, in a commit that ends after
 * it (a slow write in the same batch): the run reaches the hold queue with
 * its time come, and is withdrawn all the same. */
static void
test_withdrawn_run_arriving_late(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time due = aps_time_now() + 800 * MS;
    aps_trigger_spec t = every_500ms(due, 2);
    aps_job_spec late = tu_function_job("late", &t, "record", NULL);
    tu_job_add(s, &late);
    sleep_until(due - 400 * MS);
    atomic_store(&gate_open, 0);
    aps__store_write_async(s->stores[0].st, gate_write, NULL, gate_done, NULL);
    sleep_until(due - 150 * MS);
    remover r = {s, "late", 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, remove_main, &r), 0);
    usleep(20 * 1000);
    aps__store_write_async(s->stores[0].st, slow_write, NULL, gate_done, NULL); /* 200 ms */
    atomic_store(&gate_open, 1);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    assert_true(aps_time_now() > due); /* the commit ended after the run's time */
    end_without_runs(s, due, 1, "the job was removed");
}

/* The scheduler paused before a held run's time: it waits for the resume
 * (APScheduler submits nothing while paused), then its executor applies
 * misfire_grace_time: within it the run starts late, beyond it is missed. */
static void
test_scheduler_pause_holds_runs(void **state)
{
    (void)state;
    aps_scheduler *s = started_sched();
    aps_time now = aps_time_now(), due = now + 600 * MS;
    aps_trigger_spec d = tu_date(due);
    aps_job_spec late = tu_function_job("late", &d, "record", NULL);
    late.misfire = APS_MISFIRE_UNLIMITED;
    aps_job_spec tight = tu_function_job("tight", &d, "record", NULL);
    tight.misfire = APS_MISFIRE_DURATION;
    tight.misfire_grace_us = 100 * MS;
    tu_job_add(s, &late);
    tu_job_add(s, &tight);
    wait_submitted(2);
    assert_true(aps_time_now() < due - 20 * MS);
    assert_int_equal(aps_scheduler_pause(s), 0);
    sleep_until(due + 300 * MS);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 0);
    pthread_mutex_unlock(&mu);
    /* Not submitted: its time (past) is the job's next run time. */
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "late", &job), 0);
    assert_true(job->next_run_time == due);
    assert_int_equal(job->running_instances, 0);
    aps_job_free(job);
    aps_time resumed = aps_time_now();
    assert_int_equal(aps_scheduler_resume(s), 0);
    assert_int_equal(wait_calls(1, 3000 * MS), 1);
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&mu);
        size_t k = n_missed;
        pthread_mutex_unlock(&mu);
        if (k > 0)
            break;
        usleep(1000);
    }
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 1);
    assert_true(started[0] >= resumed);
    assert_int_equal(n_missed, 1);
    pthread_mutex_unlock(&mu);
    assert_withdrawn(0, NULL);
    aps_scheduler_destroy(s);
}

/* A started scheduler with a one-shot job "once" due 600 ms from now,
 * its run committed ahead (*due: its time). */
static aps_scheduler *
one_shot_held(aps_time *due)
{
    aps_scheduler *s = started_sched();
    *due = aps_time_now() + 600 * MS;
    aps_trigger_spec d = tu_date(*due);
    add_job(s, "once", &d, 1);
    wait_submitted(1);
    return s;
}

/* A one-shot job whose run is committed ahead stays until that run is
 * handed on at its time (APScheduler removes it once it has submitted
 * it): a RemoveJob before then finds it and withdraws the run. */
static void
test_one_shot_job_goes_at_its_time(void **state)
{
    (void)state;
    aps_time due;
    aps_scheduler *s = one_shot_held(&due);
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "once", &job), 0); /* committed, its time not come */
    assert_true(aps_time_now() < due);
    assert_int_equal(job->running_instances, 0); /* not started: its next run */
    assert_true(job->next_run_time == due);
    aps_job_free(job);
    assert_int_equal(wait_calls(1, 3000 * MS), 1);
    for (int i = 0; i < 2000 && aps_job_get(s, "once", &job) == 0; i++) {
        aps_job_free(job);
        usleep(1000);
    }
    assert_int_equal(aps_job_get(s, "once", &job), APS_ENOENT);
    aps_time removed = APS_TIME_NONE; /* (published just after the commit) */
    for (int i = 0; i < 2000 && removed == APS_TIME_NONE; i++) {
        pthread_mutex_lock(&mu);
        removed = removed_at;
        pthread_mutex_unlock(&mu);
        usleep(1000);
    }
    if (removed == APS_TIME_NONE || removed < due)
        fail_msg("JOB_REMOVED at %lld, its run's time %lld", (long long)removed, (long long)due);
    assert_withdrawn(0, NULL);
    aps_scheduler_destroy(s);
}

static void
test_remove_withdraws_one_shot_run(void **state)
{
    (void)state;
    aps_time due;
    aps_scheduler *s = one_shot_held(&due);
    assert_true(aps_time_now() < due - 20 * MS);
    assert_int_equal(aps_job_remove(s, "once", NULL), 0);
    end_without_runs(s, due, 1, "the job was removed");
}

/* ---- a crash with runs committed ahead -------------------------------------- */

#define BOOT_A "11111111-1111-4111-8111-111111111111"
#define BOOT_B "22222222-2222-4222-8222-222222222222"

/* A child process, on boot `boot` (NULL: this machine's), adds job `id`
 * (every 500 ms twice, from 600 ms from now; `once`: a one-shot job then)
 * and is killed once its first run is committed ahead, or, with `started`,
 * once that run has started (it then lasts 5 s). Returns that run's time. */
static aps_time
crash_with(const char *boot, const char *id, int started, int once)
{
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        aps__store_boot_id_test = boot;
        pthread_mutex_lock(&mu);
        n_calls = n_submitted = 0;
        busy_us = started ? 5000 * MS : 0;
        pthread_mutex_unlock(&mu);
        aps_scheduler *s = open_sched(AHEAD);
        if (aps_scheduler_start(s, APS_RUN_BACKGROUND) != 0)
            _exit(1);
        aps_time due = aps_time_now() + 600 * MS;
        aps_trigger_spec t = once ? tu_date(due) : every_500ms(due, 2);
        aps_job_spec j = tu_function_job(id, &t, "record", NULL);
        if (aps_job_add(s, &j, NULL, NULL, NULL) != 0)
            _exit(1);
        wait_submitted(1);
        if (started && wait_calls(1, 3000 * MS) != 1)
            _exit(1);
        pthread_mutex_lock(&mu);
        aps_time at = n_submitted > 0 ? submitted_for[0] : 0;
        pthread_mutex_unlock(&mu);
        ssize_t w = write(pfd[1], &at, sizeof(at));
        (void)w;
        pause();
        _exit(0);
    }
    close(pfd[1]);
    aps_time at = 0;
    assert_int_equal(read(pfd[0], &at, sizeof(at)), (ssize_t)sizeof(at));
    close(pfd[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_true(at > 0);
    return at;
}

static aps_time
crash_with_run(const char *boot, const char *id, int started)
{
    return crash_with(boot, id, started, 0);
}

/* Reopens the store on boot `boot` and waits until job `id`'s runs from
 * `at` on are over: `calls` ran, the first scheduled at `first`. */
static void
reopen_and_run(const char *boot, aps_time first, size_t calls)
{
    aps__store_boot_id_test = boot;
    aps_scheduler *s = started_sched();
    assert_int_equal(wait_calls(calls, 3000 * MS), calls);
    sleep_until(first + 800 * MS);
    aps_scheduler_destroy(s);
    aps__store_boot_id_test = NULL;
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, calls);
    assert_true(scheduled_at[0] == first);
    assert_true(started[0] >= first);
    pthread_mutex_unlock(&mu);
}

/* Killed before the time of a run committed ahead: the run never started
 * (its time is past the store's mark of runs handed on), so after the
 * restart it is withdrawn and comes again from the schedule, on time:
 * nothing is lost, nothing is reported interrupted. */
static void
test_crash_before_its_time(void **state)
{
    (void)state;
    aps_time at = crash_with_run(NULL, "crash", 0);
    assert_true(aps_time_now() < at);
    reopen_and_run(NULL, at, 2);
    assert_withdrawn(1, "the scheduler stopped first");
    pthread_mutex_lock(&mu);
    assert_true(scheduled_at[1] == at + 500 * MS);
    pthread_mutex_unlock(&mu);
}

/* The same for a one-shot job: it stays until its run is handed on, so
 * the restart finds it and runs it at its time. */
static void
test_crash_before_one_shot_time(void **state)
{
    (void)state;
    aps_time at = crash_with(NULL, "once", 0, 1);
    assert_true(aps_time_now() < at);
    reopen_and_run(NULL, at, 1);
    assert_withdrawn(1, "the scheduler stopped first");
    aps_scheduler *s = open_sched(AHEAD);
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "once", &job), APS_ENOENT);
    aps_scheduler_destroy(s);
}

/* Killed while the run runs: it was handed on (the mark covers it), so it
 * is reported interrupted and not run again; the next one runs. */
static void
test_crash_after_its_start(void **state)
{
    (void)state;
    aps_time at = crash_with_run(NULL, "crash", 1);
    reopen_and_run(NULL, at + 500 * MS, 1);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_withdrawn, 0);
    assert_int_equal(n_other_errors, 1); /* interrupted by restart */
    pthread_mutex_unlock(&mu);
}

/* After a machine restart the mark may be lost: a run committed ahead is
 * reported interrupted, as one that started would be. Once that is
 * recovered, the new boot's own marks count: the next crash before a
 * run's time loses nothing. */
static void
test_crash_then_machine_restart(void **state)
{
    (void)state;
    aps_time at = crash_with_run(BOOT_A, "before", 0);
    reopen_and_run(BOOT_B, at + 500 * MS, 1);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_withdrawn, 0);
    assert_int_equal(n_other_errors, 1);
    n_calls = n_other_errors = 0;
    pthread_mutex_unlock(&mu);

    at = crash_with_run(BOOT_B, "after", 0);
    reopen_and_run(BOOT_B, at, 2);
    assert_withdrawn(1, "the scheduler stopped first");
}

/* ---- due jobs and finished runs prepared on the loop's thread ---------------- */

/* aps__prepared_test: once the loop has prepared the phase asked for
 * (0 due jobs, 1 finished runs), job "prep" is changed, once, as another
 * thread could change it before the store's writer makes the batch. */
static int prep_phase = -1;
static int prep_changed = -1; /* aps_job_modify's result */

static void
prep_hook(aps_scheduler *s, int done)
{
    if (done != __atomic_load_n(&prep_phase, __ATOMIC_ACQUIRE))
        return;
    __atomic_store_n(&prep_phase, -1, __ATOMIC_RELEASE);
    aps_job_spec spec = tu_function_job("prep", NULL, "record", done ? "old" : "new");
    spec.name = "renamed";
    aps_error err;
    int rc = aps_job_modify(s, "prep", &spec, done ? APS_MODIFY_NAME : APS_MODIFY_TARGET, NULL,
                            NULL, &err);
    __atomic_store_n(&prep_changed, rc, __ATOMIC_RELEASE);
}

static aps_scheduler *
prep_sched(int phase, aps_time *due)
{
    prep_changed = -1;
    prep_phase = phase;
    aps__prepared_test = prep_hook;
    aps_scheduler *s = started_sched();
    *due = aps_time_now() + 600 * MS;
    aps_trigger_spec t = every_500ms(*due, 2);
    aps_job_spec j = tu_function_job("prep", &t, "record", "old");
    tu_job_add(s, &j);
    return s;
}

/* Waits for the first run, then until `until`: the change was made, and
 * the writer did again what the loop had prepared. */
static void
prep_changed_after_run(aps_scheduler *s, aps_time until)
{
    assert_int_equal(wait_calls(1, 3000 * MS), 1);
    sleep_until(until);
    assert_int_equal(__atomic_load_n(&prep_changed, __ATOMIC_ACQUIRE), 0);
    assert_true(__atomic_load_n(&s->prep_redone, __ATOMIC_RELAXED) >= 1);
}

/* A due job changed after the loop prepared it (its target, here) is done
 * again by the writer from the record as changed: the run takes the new
 * target, and the record keeps it. Made as prepared, the run would have
 * taken the old one and the write put the old record back. */
static void
test_prepared_due_job_changed(void **state)
{
    (void)state;
    aps_time due;
    aps_scheduler *s = prep_sched(0, &due);
    prep_changed_after_run(s, due + 200 * MS);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 1);
    assert_string_equal(called_arg[0], "new");
    assert_true(scheduled_at[0] == due);
    assert_true(started[0] >= due);
    pthread_mutex_unlock(&mu);
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "prep", &job), 0);
    assert_string_equal(job->target.u.function.arg, "new");
    assert_true(job->next_run_time == due + 500 * MS);
    aps_job_free(job);
    aps__prepared_test = NULL;
    aps_scheduler_destroy(s);
}

/* The same for a finished run: the job renamed after the loop prepared
 * the run's record is recorded from the record as renamed (the name
 * stays, the run counts, its instance slot is free). */
static void
test_prepared_finished_run_job_changed(void **state)
{
    (void)state;
    aps_time due;
    aps_scheduler *s = prep_sched(1, &due);
    prep_changed_after_run(s, due + 300 * MS);
    /* The run's due write went as prepared. */
    assert_true(__atomic_load_n(&s->prep_used, __ATOMIC_RELAXED) >= 1);
    aps_job *job = NULL;
    assert_int_equal(aps_job_get(s, "prep", &job), 0);
    assert_string_equal(job->name, "renamed");
    assert_int_equal(job->stats.runs, 1);
    assert_int_equal(job->running_instances, 0);
    assert_true(job->next_run_time == due + 500 * MS);
    aps_job_free(job);
    pthread_mutex_lock(&mu);
    assert_int_equal(n_calls, 1);
    assert_int_equal(n_executed, 1);
    pthread_mutex_unlock(&mu);
    aps__prepared_test = NULL;
    aps_scheduler_destroy(s);
}

int
main(void)
{
    sem_init(&gate_reached, 0, 0);
    sem_init(&gate_release, 0, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_commits_before_and_starts_on_time, setup),
        cmocka_unit_test_setup(test_held_run_is_next_run_time, setup),
        cmocka_unit_test_setup(test_run_now_beside_held_run, setup),
        cmocka_unit_test_setup(test_backfill_beside_held_run, setup),
        cmocka_unit_test_setup(test_running_instance_decided_at_its_time, setup),
        cmocka_unit_test_setup(test_shutdown_withdraws_held_runs, setup),
        cmocka_unit_test_setup(test_shutdown_while_paused_withdraws, setup),
        cmocka_unit_test_setup(test_shutdown_withdrawal_holds_changes_back, setup),
        cmocka_unit_test_setup(test_shutdown_withdrawal_puts_off_writer_thread_add, setup),
        cmocka_unit_test_setup(test_off, setup),
        cmocka_unit_test_setup(test_lead_widens_while_writes_are_slow, setup),
        cmocka_unit_test_setup(test_lead_widens_while_passes_are_long, setup),
        cmocka_unit_test_setup(test_lead_kept_for_deferred_runs, setup),
        cmocka_unit_test_setup(test_runs_gathered_into_few_commits, setup),
        cmocka_unit_test_setup(test_batches_on_their_way, setup),
        cmocka_unit_test_setup(test_pass_spacing, setup),
        cmocka_unit_test_setup(test_remove_withdraws_held_run, setup),
        cmocka_unit_test_setup(test_pause_withdraws_held_run, setup),
        cmocka_unit_test_setup(test_modify_runs_modified_job_once, setup),
        cmocka_unit_test_setup(test_resume_does_not_run_twice, setup),
        cmocka_unit_test_setup(test_replace_runs_once, setup),
        cmocka_unit_test_setup(test_remove_all_withdraws_held_runs, setup),
        cmocka_unit_test_setup(test_one_shot_job_goes_at_its_time, setup),
        cmocka_unit_test_setup(test_remove_withdraws_one_shot_run, setup),
        cmocka_unit_test_setup(test_crash_before_its_time, setup),
        cmocka_unit_test_setup(test_crash_before_one_shot_time, setup),
        cmocka_unit_test_setup(test_crash_after_its_start, setup),
        cmocka_unit_test_setup(test_crash_then_machine_restart, setup),
        cmocka_unit_test_setup(test_scheduler_pause_holds_runs, setup),
        cmocka_unit_test_setup(test_changes_in_the_runs_commit, setup),
        cmocka_unit_test_setup(test_withdrawn_run_arriving_late, setup),
        cmocka_unit_test_setup(test_prepared_due_job_changed, setup),
        cmocka_unit_test_setup(test_prepared_finished_run_job_changed, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
