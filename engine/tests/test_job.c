/*
 * Job record tests (job.h): validation messages, the effective trigger,
 * copies, lateness statistics, modify masks, the record and event codec
 * (round trips, every truncation, bit flips, forged counts) and every
 * allocation failure.
 */
#include <pthread.h>
#include <setjmp.h> /* before cmocka.h, which needs jmp_buf */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "job.h"
#include "scheduler.h"

#define SEC INT64_C(1000000)
/* 2026-03-01T12:00:00Z */
#define NOW (INT64_C(1772366400) * SEC)

/* ---- equality --------------------------------------------------------- */

static int
str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static int
trigger_eq(const aps_trigger_spec *a, const aps_trigger_spec *b)
{
    size_t i;

    if (!a || !b)
        return a == b;
    if (a->kind != b->kind || a->jitter_us != b->jitter_us)
        return 0;
    switch (a->kind) {
    case APS_TRIGGER_CRON:
        return str_eq(a->u.cron.year, b->u.cron.year) && str_eq(a->u.cron.month, b->u.cron.month) &&
               str_eq(a->u.cron.day, b->u.cron.day) && str_eq(a->u.cron.week, b->u.cron.week) &&
               str_eq(a->u.cron.day_of_week, b->u.cron.day_of_week) &&
               str_eq(a->u.cron.hour, b->u.cron.hour) &&
               str_eq(a->u.cron.minute, b->u.cron.minute) &&
               str_eq(a->u.cron.second, b->u.cron.second) &&
               str_eq(a->u.cron.crontab, b->u.cron.crontab) &&
               a->u.cron.start_date == b->u.cron.start_date &&
               a->u.cron.end_date == b->u.cron.end_date &&
               str_eq(a->u.cron.timezone, b->u.cron.timezone);
    case APS_TRIGGER_INTERVAL:
        return a->u.interval.weeks == b->u.interval.weeks &&
               a->u.interval.days == b->u.interval.days &&
               a->u.interval.hours == b->u.interval.hours &&
               a->u.interval.minutes == b->u.interval.minutes &&
               a->u.interval.seconds == b->u.interval.seconds &&
               a->u.interval.microseconds == b->u.interval.microseconds &&
               a->u.interval.start_date == b->u.interval.start_date &&
               a->u.interval.end_date == b->u.interval.end_date &&
               str_eq(a->u.interval.timezone, b->u.interval.timezone);
    case APS_TRIGGER_DATE:
        return a->u.date.run_date == b->u.date.run_date &&
               str_eq(a->u.date.timezone, b->u.date.timezone);
    case APS_TRIGGER_CALENDAR_INTERVAL:
        return a->u.calendar_interval.years == b->u.calendar_interval.years &&
               a->u.calendar_interval.months == b->u.calendar_interval.months &&
               a->u.calendar_interval.weeks == b->u.calendar_interval.weeks &&
               a->u.calendar_interval.days == b->u.calendar_interval.days &&
               a->u.calendar_interval.hour == b->u.calendar_interval.hour &&
               a->u.calendar_interval.minute == b->u.calendar_interval.minute &&
               a->u.calendar_interval.second == b->u.calendar_interval.second &&
               a->u.calendar_interval.start_date == b->u.calendar_interval.start_date &&
               a->u.calendar_interval.end_date == b->u.calendar_interval.end_date &&
               str_eq(a->u.calendar_interval.timezone, b->u.calendar_interval.timezone);
    case APS_TRIGGER_ALL_OF:
    case APS_TRIGGER_ANY_OF:
        if (a->u.combo.count != b->u.combo.count)
            return 0;
        for (i = 0; i < a->u.combo.count; i++)
            if (!trigger_eq(&a->u.combo.triggers[i], &b->u.combo.triggers[i]))
                return 0;
        return 1;
    }
    return 0;
}

static int
strv_eq(char **a, size_t na, char **b, size_t nb)
{
    size_t i;

    if (na != nb)
        return 0;
    for (i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return 0;
    return 1;
}

static int
target_eq(const aps_target *a, const aps_target *b)
{
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case APS_TARGET_COMMAND:
        return strv_eq(a->u.command.argv, a->u.command.argc, b->u.command.argv,
                       b->u.command.argc) &&
               strv_eq(a->u.command.env, a->u.command.envc, b->u.command.env, b->u.command.envc) &&
               str_eq(a->u.command.cwd, b->u.command.cwd) &&
               a->u.command.timeout_us == b->u.command.timeout_us &&
               a->u.command.max_output == b->u.command.max_output;
    case APS_TARGET_REMOTE:
        return str_eq(a->u.remote.task, b->u.remote.task) &&
               str_eq(a->u.remote.args_json, b->u.remote.args_json) &&
               str_eq(a->u.remote.kwargs_json, b->u.remote.kwargs_json) &&
               str_eq(a->u.remote.queue, b->u.remote.queue);
    case APS_TARGET_FUNCTION:
        return str_eq(a->u.function.name, b->u.function.name) &&
               str_eq(a->u.function.arg, b->u.function.arg);
    default:
        return 1;
    }
}

static int
stats_eq(const aps_job_stats *a, const aps_job_stats *b)
{
    return a->runs == b->runs && a->failures == b->failures && a->misses == b->misses &&
           a->max_instance_skips == b->max_instance_skips && a->coalesced == b->coalesced &&
           strcmp(a->last_run_id, b->last_run_id) == 0 && a->last_run_time == b->last_run_time &&
           a->last_status == b->last_status && a->last_exit_code == b->last_exit_code &&
           strcmp(a->last_error, b->last_error) == 0 && a->lateness_p50_us == b->lateness_p50_us &&
           a->lateness_p90_us == b->lateness_p90_us && a->lateness_p99_us == b->lateness_p99_us &&
           a->lateness_max_us == b->lateness_max_us && a->lateness_samples == b->lateness_samples;
}

static int
job_eq(const aps_job *a, const aps_job *b)
{
    size_t i;

    if (!str_eq(a->id, b->id) || !str_eq(a->name, b->name) || !trigger_eq(a->trigger, b->trigger) ||
        !target_eq(&a->target, &b->target) || !str_eq(a->executor, b->executor) ||
        !str_eq(a->jobstore, b->jobstore) || a->misfire != b->misfire ||
        a->misfire_grace_us != b->misfire_grace_us || a->coalesce != b->coalesce ||
        a->max_instances != b->max_instances || a->overlap != b->overlap ||
        a->n_labels != b->n_labels || a->next_run_time != b->next_run_time ||
        a->paused != b->paused || a->create_time != b->create_time ||
        a->update_time != b->update_time || a->running_instances != b->running_instances ||
        a->queued_runs != b->queued_runs || !stats_eq(&a->stats, &b->stats))
        return 0;
    for (i = 0; i < a->n_labels; i++)
        if (!str_eq(a->labels[i].key, b->labels[i].key) ||
            !str_eq(a->labels[i].value, b->labels[i].value))
            return 0;
    return 1;
}

static int
times_eq(const aps_time *a, size_t na, const aps_time *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static int
rec_eq(const aps__jobrec *a, const aps__jobrec *b)
{
    size_t i;

    if (!job_eq(&a->job, &b->job) || a->n_running != b->n_running || a->n_pending != b->n_pending ||
        a->n_lateness != b->n_lateness || a->lateness_pos != b->lateness_pos ||
        (a->n_lateness > 0 &&
         memcmp(a->lateness, b->lateness, a->n_lateness * sizeof a->lateness[0]) != 0))
        return 0;
    for (i = 0; i < a->n_running; i++)
        if (strcmp(a->running[i].run_id, b->running[i].run_id) != 0 ||
            strcmp(a->running[i].executor, b->running[i].executor) != 0 ||
            a->running[i].started != b->running[i].started ||
            !times_eq(a->running[i].run_times, a->running[i].n_run_times, b->running[i].run_times,
                      b->running[i].n_run_times))
            return 0;
    for (i = 0; i < a->n_pending; i++)
        if (a->pending[i].backfill != b->pending[i].backfill ||
            !times_eq(a->pending[i].run_times, a->pending[i].n_run_times, b->pending[i].run_times,
                      b->pending[i].n_run_times))
            return 0;
    return 1;
}

static int
blob_eq(const void *a, size_t na, const void *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na) == 0);
}

static int
event_eq(const aps_event *a, const aps_event *b)
{
    const aps_outcome *x = a->outcome, *y = b->outcome;

    if (a->sequence != b->sequence || a->type != b->type || a->time != b->time ||
        !str_eq(a->job_id, b->job_id) || !str_eq(a->jobstore, b->jobstore) ||
        !str_eq(a->executor, b->executor) ||
        !times_eq(a->run_times, a->n_run_times, b->run_times, b->n_run_times) ||
        !str_eq(a->run_id, b->run_id) || !str_eq(a->message, b->message))
        return 0;
    if (!x || !y)
        return x == y;
    return x->status == y->status && x->has_exit_code == y->has_exit_code &&
           x->exit_code == y->exit_code && x->signal == y->signal &&
           blob_eq(x->stdout_tail, x->stdout_len, y->stdout_tail, y->stdout_len) &&
           blob_eq(x->stderr_tail, x->stderr_len, y->stderr_tail, y->stderr_len) &&
           x->stdout_truncated == y->stdout_truncated &&
           x->stderr_truncated == y->stderr_truncated && x->start_time == y->start_time &&
           x->end_time == y->end_time && str_eq(x->error, y->error) &&
           str_eq(x->traceback, y->traceback) && str_eq(x->return_json, y->return_json) &&
           str_eq(x->error_type, y->error_type) && str_eq(x->worker_id, y->worker_id);
}

/* ---- spec fixtures ---------------------------------------------------- */

static char *argv_true[] = {"/bin/true", "--flag", ""};
static char *env_ok[] = {"A=1", "EMPTY=", "X=a=b"};

static aps_trigger_spec
trig_none(aps_trigger_kind kind)
{
    aps_trigger_spec t;

    memset(&t, 0, sizeof t);
    t.kind = kind;
    switch (kind) {
    case APS_TRIGGER_CRON:
        t.u.cron.start_date = t.u.cron.end_date = APS_TIME_NONE;
        break;
    case APS_TRIGGER_INTERVAL:
        t.u.interval.start_date = t.u.interval.end_date = APS_TIME_NONE;
        break;
    case APS_TRIGGER_DATE:
        t.u.date.run_date = APS_TIME_NONE;
        break;
    case APS_TRIGGER_CALENDAR_INTERVAL:
        t.u.calendar_interval.start_date = t.u.calendar_interval.end_date = APS_TIME_NONE;
        break;
    default:
        break;
    }
    return t;
}

static aps_trigger_spec
interval_s(int64_t seconds)
{
    aps_trigger_spec t = trig_none(APS_TRIGGER_INTERVAL);

    t.u.interval.seconds = seconds;
    return t;
}

static aps_trigger_spec g_trig;

/* A valid spec: a command every 10 s. */
static aps_job_spec
base_spec(void)
{
    aps_job_spec s;

    memset(&s, 0, sizeof s);
    g_trig = interval_s(10);
    s.id = "job-1";
    s.trigger = &g_trig;
    s.target.kind = APS_TARGET_COMMAND;
    s.target.u.command.argv = argv_true;
    s.target.u.command.argc = 3;
    s.coalesce = -1;
    s.next_run_time = APS_TIME_NONE;
    return s;
}

static void
expect_error(const aps_job_spec *spec, int code, const char *msg)
{
    aps__jobrec *r = (aps__jobrec *)0x1;
    aps_error err;
    int rc;

    memset(&err, 0, sizeof err);
    rc = aps__jobrec_from_spec(spec, NULL, NOW, &r, &err);
    if (rc != code || strcmp(err.msg, msg) != 0)
        fail_msg("expected %d \"%s\", got %d \"%s\"", code, msg, rc, err.msg);
    assert_int_equal(err.code, code);
    assert_null(r);
}

static aps__jobrec *
make(const aps_job_spec *spec, const char *tz)
{
    aps__jobrec *r = NULL;
    aps_error err;
    int rc;

    memset(&err, 0, sizeof err);
    rc = aps__jobrec_from_spec(spec, tz, NOW, &r, &err);
    if (rc)
        fail_msg("from_spec: %d %s", rc, err.msg);
    assert_non_null(r);
    return r;
}

/* ---- ids and defaults ------------------------------------------------- */

static int
cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void
test_id_generate(void **state)
{
    enum { N = 10000 };
    char(*ids)[33] = malloc(N * sizeof *ids);
    size_t i, j;

    (void)state;
    assert_non_null(ids);
    for (i = 0; i < N; i++) {
        assert_int_equal(aps__id_generate(ids[i]), 0);
        assert_int_equal(strlen(ids[i]), 32);
        for (j = 0; j < 32; j++)
            assert_non_null(strchr("0123456789abcdef", ids[i][j]));
    }
    qsort(ids, N, sizeof *ids, cmp_id);
    for (i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

/* Checks n time-ordered ids of len lowercase hex chars, each in a row of
 * `width` bytes, generated in order between the clock's before and after
 * (ms): led by the milliseconds (so they sort by creation time), unique,
 * and random after that (no two tails alike). */
static void
check_ordered_ids(char *ids, size_t n, size_t width, size_t len, aps_time before, aps_time after)
{
    char prefix[13];
    size_t i, j, same_tail = 0;

    for (i = 0; i < n; i++) {
        const char *id = ids + i * width;
        assert_int_equal(strlen(id), len);
        for (j = 0; j < len; j++)
            assert_non_null(strchr("0123456789abcdef", id[j]));
        memcpy(prefix, id, 12);
        prefix[12] = '\0';
        aps_time ms = (aps_time)strtoull(prefix, NULL, 16);
        assert_true(ms >= before && ms <= after);
        if (i > 0) {
            /* Non-decreasing time part (the clock did not step back here). */
            assert_true(memcmp(id - width, id, 12) <= 0);
            if (memcmp(id - width + 12, id + 12, len - 12) == 0)
                same_tail++;
        }
    }
    assert_int_equal(same_tail, 0);
    qsort(ids, n, width, cmp_id);
    for (i = 1; i < n; i++)
        assert_string_not_equal(ids + (i - 1) * width, ids + i * width);
}

/* Run ids: UUIDv7's layout, 32 lowercase hex. */
static void
test_id_generate_ordered(void **state)
{
    enum { N = 10000 };
    char(*ids)[33] = malloc(N * sizeof *ids);

    (void)state;
    assert_non_null(ids);
    aps_time before = aps_time_now() / 1000;
    for (size_t i = 0; i < N; i++)
        assert_int_equal(aps__id_generate_ordered(ids[i]), 0);
    check_ordered_ids(ids[0], N, sizeof *ids, 32, before, aps_time_now() / 1000);
    free(ids);
}

/* Generated job ids: 44 chars, the milliseconds then 128 random bits; in
 * creation order when sorted (so that adds append to the store's B-trees),
 * and unique, also when several threads generate them at once. */
typedef struct id_thread {
    char (*ids)[APS__JOB_ID_GEN_LEN + 1];
    size_t n;
    pthread_t th;
    int rc;
} id_thread;

static void *
job_ids_main(void *arg)
{
    id_thread *t = arg;
    for (size_t i = 0; i < t->n && t->rc == 0; i++)
        t->rc = aps__job_id_generate(t->ids[i]);
    return NULL;
}

static void
test_job_id_generate(void **state)
{
    enum { N = 10000, THREADS = 4 };
    char(*ids)[APS__JOB_ID_GEN_LEN + 1] = malloc(N * THREADS * sizeof *ids);
    id_thread t[THREADS];

    (void)state;
    assert_non_null(ids);
    aps_time before = aps_time_now() / 1000;
    for (size_t i = 0; i < N; i++)
        assert_int_equal(aps__job_id_generate(ids[i]), 0);
    aps_time after = aps_time_now() / 1000;
    check_ordered_ids(ids[0], N, sizeof *ids, APS__JOB_ID_GEN_LEN, before, after);
    /* From several threads at once (each its own block of random bytes):
     * all distinct. */
    before = aps_time_now() / 1000;
    for (size_t k = 0; k < THREADS; k++) {
        t[k] = (id_thread){.ids = ids + k * N, .n = N};
        assert_int_equal(pthread_create(&t[k].th, NULL, job_ids_main, &t[k]), 0);
    }
    for (size_t k = 0; k < THREADS; k++) {
        assert_int_equal(pthread_join(t[k].th, NULL), 0);
        assert_int_equal(t[k].rc, 0);
    }
    after = aps_time_now() / 1000;
    qsort(ids, N * THREADS, sizeof *ids, cmp_id);
    for (size_t i = 0; i < N * THREADS; i++) {
        char prefix[13];
        memcpy(prefix, ids[i], 12);
        prefix[12] = '\0';
        aps_time ms = (aps_time)strtoull(prefix, NULL, 16);
        assert_true(ms >= before && ms <= after);
        if (i > 0)
            assert_string_not_equal(ids[i - 1], ids[i]);
    }
    free(ids);
}

static void
test_defaults(void **state)
{
    aps_job_spec s = base_spec();
    aps__jobrec *r;
    size_t j;

    (void)state;
    s.id = NULL;
    r = make(&s, NULL);
    assert_int_equal(strlen(r->job.id), APS__JOB_ID_GEN_LEN);
    for (j = 0; j < APS__JOB_ID_GEN_LEN; j++)
        assert_non_null(strchr("0123456789abcdef", r->job.id[j]));
    assert_string_equal(r->job.name, r->job.id);
    assert_string_equal(r->job.executor, "default");
    assert_string_equal(r->job.jobstore, "default");
    assert_int_equal(r->job.misfire, APS_MISFIRE_DEFAULT);
    assert_int_equal(r->job.coalesce, -1);
    assert_int_equal(r->job.max_instances, 0);
    assert_int_equal(r->job.overlap, APS_OVERLAP_DEFAULT);
    assert_true(r->job.next_run_time == APS_TIME_NONE);
    assert_int_equal(r->job.paused, 0);
    assert_true(r->job.create_time == NOW && r->job.update_time == NOW);
    assert_true(r->job.stats.last_run_time == APS_TIME_NONE);
    assert_int_equal(r->job.stats.runs, 0);
    assert_int_equal(r->n_running, 0);
    assert_int_equal(r->n_pending, 0);
    assert_int_equal(r->n_lateness, 0);
    assert_int_equal(r->job.target.kind, APS_TARGET_COMMAND);
    assert_int_equal(r->job.target.u.command.argc, 3);
    assert_string_equal(r->job.target.u.command.argv[0], "/bin/true");
    assert_string_equal(r->job.target.u.command.argv[2], "");
    /* Strings are copies, not the caller's. */
    assert_ptr_not_equal(r->job.target.u.command.argv, argv_true);
    assert_ptr_not_equal(r->job.target.u.command.argv[0], argv_true[0]);
    aps__jobrec_free(r);

    /* Explicit values are kept; a remote queue defaults to "default". */
    s = base_spec();
    s.name = "";
    s.executor = "procs";
    s.jobstore = "memory";
    s.misfire = APS_MISFIRE_DURATION;
    s.misfire_grace_us = 30 * SEC;
    s.coalesce = 0;
    s.max_instances = 3;
    s.overlap = APS_OVERLAP_QUEUE_ALL;
    s.next_run_time = NOW + 5 * SEC;
    s.target.kind = APS_TARGET_REMOTE;
    memset(&s.target.u, 0, sizeof s.target.u);
    s.target.u.remote.task = "app.jobs:clean";
    r = make(&s, NULL);
    assert_string_equal(r->job.id, "job-1");
    assert_string_equal(r->job.name, "");
    assert_string_equal(r->job.executor, "procs");
    assert_string_equal(r->job.jobstore, "memory");
    assert_int_equal(r->job.misfire, APS_MISFIRE_DURATION);
    assert_true(r->job.misfire_grace_us == 30 * SEC);
    assert_int_equal(r->job.coalesce, 0);
    assert_int_equal(r->job.max_instances, 3);
    assert_int_equal(r->job.overlap, APS_OVERLAP_QUEUE_ALL);
    assert_true(r->job.next_run_time == NOW + 5 * SEC);
    assert_string_equal(r->job.target.u.remote.queue, "default");
    assert_null(r->job.target.u.remote.args_json);
    aps__jobrec_free(r);

    /* A grace time without DURATION is not kept. */
    s = base_spec();
    s.misfire = APS_MISFIRE_UNLIMITED;
    s.misfire_grace_us = 5;
    r = make(&s, NULL);
    assert_true(r->job.misfire_grace_us == 0);
    aps__jobrec_free(r);

    /* Paused: no next run time. */
    s = base_spec();
    s.paused = 1;
    r = make(&s, NULL);
    assert_int_equal(r->job.paused, 1);
    assert_true(r->job.next_run_time == APS_TIME_NONE);
    aps__jobrec_free(r);

    /* Label values: NULL becomes "". */
    {
        aps_label l[2] = {{"team", NULL}, {"tier", "gold"}};

        s = base_spec();
        s.labels = l;
        s.n_labels = 2;
        r = make(&s, NULL);
        assert_int_equal(r->job.n_labels, 2);
        assert_string_equal(r->job.labels[0].key, "team");
        assert_string_equal(r->job.labels[0].value, "");
        assert_string_equal(r->job.labels[1].value, "gold");
        aps__jobrec_free(r);
    }
}

/* ---- validation messages ---------------------------------------------- */

static void
test_errors_id_name(void **state)
{
    aps_job_spec s = base_spec();
    char long_id[202], long_name[1026];

    (void)state;
    s.id = "";
    expect_error(&s, APS_EINVAL, "id: must not be empty");
    memset(long_id, 'a', 201);
    long_id[201] = '\0';
    s.id = long_id;
    expect_error(&s, APS_EINVAL, "id: 201 bytes, at most 200 allowed");
    long_id[200] = '\0';
    {
        aps__jobrec *r = make(&s, NULL); /* 200 bytes is fine */

        aps__jobrec_free(r);
    }
    s.id = "a b";
    expect_error(&s, APS_EINVAL, "id: must not contain spaces or control characters");
    s.id = "a\tb";
    expect_error(&s, APS_EINVAL, "id: must not contain spaces or control characters");
    s.id = "a\x7f";
    expect_error(&s, APS_EINVAL, "id: must not contain spaces or control characters");
    s.id = "caf\xc3";
    expect_error(&s, APS_EINVAL, "id: not valid UTF-8");
    s.id = "\xc0\xaf"; /* overlong '/' */
    expect_error(&s, APS_EINVAL, "id: not valid UTF-8");
    s.id = "caf\xc3\xa9/\xe2\x82\xac"; /* café/€ */
    aps__jobrec_free(make(&s, NULL));

    s = base_spec();
    memset(long_name, 'n', 1025);
    long_name[1025] = '\0';
    s.name = long_name;
    expect_error(&s, APS_EINVAL, "name: 1025 bytes, at most 1024 allowed");
    s.name = "bad \xff name";
    expect_error(&s, APS_EINVAL, "name: not valid UTF-8");
    long_name[1024] = '\0';
    s.name = long_name;
    aps__jobrec_free(make(&s, NULL));
}

static void
test_errors_target(void **state)
{
    aps_job_spec s = base_spec();
    char *argv_empty0[] = {""};
    char *argv_null1[] = {"/bin/echo", NULL};
    char *env_noeq[] = {"A=1", "NOEQ"};
    char *env_nokey[] = {"=v"};
    char *env_null[] = {NULL};

    (void)state;
    s.target.kind = APS_TARGET_NONE;
    expect_error(&s, APS_EINVAL, "target: one of command, remote, function is required");
    s.target.kind = (aps_target_kind)9;
    expect_error(&s, APS_EINVAL, "target: one of command, remote, function is required");

    s = base_spec();
    s.target.u.command.argc = 0;
    expect_error(&s, APS_EINVAL, "target.command.argv: must not be empty");
    s.target.u.command.argc = 1;
    s.target.u.command.argv = NULL;
    expect_error(&s, APS_EINVAL, "target.command.argv: must not be empty");
    s.target.u.command.argv = argv_empty0;
    expect_error(&s, APS_EINVAL, "target.command.argv[0]: must not be empty");
    s.target.u.command.argv = argv_null1;
    s.target.u.command.argc = 2;
    expect_error(&s, APS_EINVAL, "target.command.argv[1]: missing");

    s = base_spec();
    s.target.u.command.env = env_noeq;
    s.target.u.command.envc = 2;
    expect_error(&s, APS_EINVAL, "target.command.env[1]: must be KEY=VALUE");
    s.target.u.command.env = env_nokey;
    s.target.u.command.envc = 1;
    expect_error(&s, APS_EINVAL, "target.command.env[0]: the key must not be empty");
    s.target.u.command.env = env_null;
    expect_error(&s, APS_EINVAL, "target.command.env[0]: missing");
    s.target.u.command.env = NULL;
    expect_error(&s, APS_EINVAL, "target.command.env: missing");
    s.target.u.command.env = env_ok;
    s.target.u.command.envc = 3;
    s.target.u.command.cwd = "relative/dir";
    expect_error(&s, APS_EINVAL, "target.command.cwd: must be an absolute path");
    s.target.u.command.cwd = "";
    expect_error(&s, APS_EINVAL, "target.command.cwd: must be an absolute path");
    s.target.u.command.cwd = "/srv";
    s.target.u.command.timeout_us = -1;
    expect_error(&s, APS_EINVAL, "target.command.timeout: must not be negative");
    s.target.u.command.timeout_us = 0;
    aps__jobrec_free(make(&s, NULL));

    s = base_spec();
    s.target.kind = APS_TARGET_REMOTE;
    memset(&s.target.u, 0, sizeof s.target.u);
    expect_error(&s, APS_EINVAL, "target.remote.task: must not be empty");
    s.target.u.remote.task = "";
    expect_error(&s, APS_EINVAL, "target.remote.task: must not be empty");
    s.target.u.remote.task = "m:f";
    s.target.u.remote.args_json = "{}";
    expect_error(&s, APS_EINVAL, "target.remote.args_json: must be a JSON array");
    s.target.u.remote.args_json = "[1, 2,]";
    expect_error(&s, APS_EINVAL,
                 "target.remote.args_json: invalid JSON at byte 6: unexpected character");
    s.target.u.remote.args_json = "[1] x";
    expect_error(
        &s, APS_EINVAL,
        "target.remote.args_json: invalid JSON at byte 4: unexpected data after the value");
    s.target.u.remote.args_json = "[1, {\"a\": [true, null]}]";
    s.target.u.remote.kwargs_json = "[]";
    expect_error(&s, APS_EINVAL, "target.remote.kwargs_json: must be a JSON object");
    s.target.u.remote.kwargs_json = "{\"a\" 1}";
    expect_error(&s, APS_EINVAL, "target.remote.kwargs_json: invalid JSON at byte 5: expected ':'");
    s.target.u.remote.kwargs_json = "{\"a\": \"\\x\"}";
    expect_error(&s, APS_EINVAL,
                 "target.remote.kwargs_json: invalid JSON at byte 7: invalid escape");
    s.target.u.remote.kwargs_json = "{\"a\": 1}";
    s.target.u.remote.queue = "";
    expect_error(&s, APS_EINVAL, "target.remote.queue: must not be empty");
    s.target.u.remote.queue = "q 1";
    expect_error(&s, APS_EINVAL,
                 "target.remote.queue: must not contain spaces or control characters");
    s.target.u.remote.queue = "gpu";
    aps__jobrec_free(make(&s, NULL));

    s = base_spec();
    s.target.kind = APS_TARGET_FUNCTION;
    memset(&s.target.u, 0, sizeof s.target.u);
    expect_error(&s, APS_EINVAL, "target.function.name: must not be empty");
    s.target.u.function.name = "";
    expect_error(&s, APS_EINVAL, "target.function.name: must not be empty");
    s.target.u.function.name = "tick";
    aps__jobrec_free(make(&s, NULL));
}

static void
test_errors_options(void **state)
{
    aps_job_spec s = base_spec();
    char long64[65];

    (void)state;
    memset(long64, 'e', 64);
    long64[64] = '\0';
    s.executor = "";
    expect_error(&s, APS_EINVAL, "executor: must not be empty");
    s.executor = long64;
    expect_error(&s, APS_EINVAL, "executor: 64 bytes, at most 63 allowed");
    s.executor = "my pool";
    expect_error(&s, APS_EINVAL, "executor: must not contain spaces or control characters");
    s = base_spec();
    s.jobstore = "";
    expect_error(&s, APS_EINVAL, "jobstore: must not be empty");
    s.jobstore = long64;
    expect_error(&s, APS_EINVAL, "jobstore: 64 bytes, at most 63 allowed");

    s = base_spec();
    s.misfire = APS_MISFIRE_DURATION;
    s.misfire_grace_us = 0;
    expect_error(&s, APS_EINVAL, "misfire_grace_time: must be positive");
    s.misfire_grace_us = -5;
    expect_error(&s, APS_EINVAL, "misfire_grace_time: must be positive");
    s.misfire = (aps_misfire_kind)7;
    expect_error(&s, APS_EINVAL, "misfire_grace_time: unknown kind 7");

    s = base_spec();
    s.coalesce = 2;
    expect_error(&s, APS_EINVAL, "coalesce: must be -1 (default), 0 or 1");
    s.coalesce = -2;
    expect_error(&s, APS_EINVAL, "coalesce: must be -1 (default), 0 or 1");

    s = base_spec();
    s.max_instances = -1;
    expect_error(&s, APS_EINVAL, "max_instances: must not be negative");

    s = base_spec();
    s.overlap = (aps_overlap)5;
    expect_error(&s, APS_EINVAL, "overlap_policy: unknown policy 5");
    s.overlap = (aps_overlap)-1;
    expect_error(&s, APS_EINVAL, "overlap_policy: unknown policy -1");

    s = base_spec();
    s.paused = 1;
    s.next_run_time = NOW;
    expect_error(&s, APS_EINVAL, "next_run_time: must not be set on a paused job");

    /* The first wrong field in struct order is the one reported. */
    s = base_spec();
    s.coalesce = 5;
    s.max_instances = -1;
    s.target.kind = APS_TARGET_NONE;
    expect_error(&s, APS_EINVAL, "target: one of command, remote, function is required");
}

static void
test_errors_labels(void **state)
{
    aps_job_spec s = base_spec();
    aps_label many[65], one[2];
    char keys[65][8];
    char long63[64], long64[65];
    size_t i;

    (void)state;
    for (i = 0; i < 65; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        many[i].key = keys[i];
        many[i].value = "v";
    }
    s.labels = many;
    s.n_labels = 65;
    expect_error(&s, APS_EINVAL, "labels: 65 given, at most 64 allowed");
    s.n_labels = 64;
    aps__jobrec_free(make(&s, NULL));
    s.labels = NULL;
    s.n_labels = 1;
    expect_error(&s, APS_EINVAL, "labels: missing");

    memset(long63, 'a', 63);
    long63[63] = '\0';
    memset(long64, 'a', 64);
    long64[64] = '\0';
    s.labels = one;
    s.n_labels = 1;
    {
        static const char *bad_keys[] = {"", "-x", ".x", "_x", "a b", "a:b", "é", NULL};
        const char *key_msg = "labels[0].key: must be 1-63 characters of [A-Za-z0-9._/-] "
                              "starting with a letter or digit";

        for (i = 0; bad_keys[i]; i++) {
            one[0].key = (char *)bad_keys[i];
            one[0].value = "v";
            expect_error(&s, APS_EINVAL, key_msg);
        }
        one[0].key = NULL;
        expect_error(&s, APS_EINVAL, key_msg);
        one[0].key = long64;
        expect_error(&s, APS_EINVAL, key_msg);
    }
    one[0].key = long63;
    one[0].value = long63;
    aps__jobrec_free(make(&s, NULL));
    one[0].key = "app.kubernetes.io/name-1_x";
    one[0].value = "-leading.dash/ok_";
    aps__jobrec_free(make(&s, NULL));
    one[0].value = long64;
    expect_error(&s, APS_EINVAL, "labels[0].value: must be 0-63 characters of [A-Za-z0-9._/-]");
    one[0].value = "a=b";
    expect_error(&s, APS_EINVAL, "labels[0].value: must be 0-63 characters of [A-Za-z0-9._/-]");
    one[0].value = "";
    one[1].key = "9lives";
    one[1].value = "x";
    s.n_labels = 2;
    aps__jobrec_free(make(&s, NULL));
    one[1].key = long63;
    one[0].key = long63;
    {
        char msg[256];

        snprintf(msg, sizeof msg, "labels[1].key: duplicate key \"%s\"", long63);
        expect_error(&s, APS_EINVAL, msg);
    }
}

static void
test_errors_trigger(void **state)
{
    aps_job_spec s = base_spec();
    aps_trigger_spec t, kids[3], deep[10], wide[65];
    size_t i;

    (void)state;
    t = trig_none(APS_TRIGGER_CRON);
    t.u.cron.hour = "25";
    s.trigger = &t;
    expect_error(&s, APS_EINVAL, "trigger.cron.hour: 25 is out of range 0-23");
    t.u.cron.hour = "1";
    t.u.cron.timezone = "Mars/Olympus_Mons";
    expect_error(&s, APS_ENOENT, "trigger.cron.timezone: unknown time zone \"Mars/Olympus_Mons\"");
    t.u.cron.timezone = "";
    expect_error(&s, APS_ENOENT, "trigger.cron.timezone: unknown time zone \"\"");
    t.u.cron.timezone = NULL;
    t.jitter_us = -1;
    expect_error(&s, APS_EINVAL, "trigger.jitter: must not be negative");

    t = trig_none((aps_trigger_kind)0);
    expect_error(&s, APS_EINVAL,
                 "trigger: one of cron, interval, date, calendar_interval, all_of, any_of is "
                 "required");

    t = interval_s(-5);
    expect_error(&s, APS_EINVAL, "trigger.interval: the interval must not be negative");
    t = trig_none(APS_TRIGGER_INTERVAL);
    t.u.interval.weeks = INT64_MAX / 2;
    expect_error(&s, APS_EINVAL, "trigger.interval.weeks: 4611686018427387903 is too large");

    t = trig_none(APS_TRIGGER_CALENDAR_INTERVAL);
    t.u.calendar_interval.days = 1;
    t.u.calendar_interval.hour = 24;
    expect_error(&s, APS_EINVAL, "trigger.calendar_interval.hour: 24 is out of range 0-23");
    t.u.calendar_interval.hour = 0;
    t.u.calendar_interval.days = 0;
    expect_error(&s, APS_EINVAL,
                 "trigger.calendar_interval: the interval must be at least 1 day long");

    /* Paths through the combining triggers. */
    kids[0] = trig_none(APS_TRIGGER_CRON);
    kids[0].u.cron.minute = "*/5";
    kids[1] = interval_s(-1);
    kids[2] = trig_none(APS_TRIGGER_DATE);
    t = trig_none(APS_TRIGGER_ANY_OF);
    t.u.combo.triggers = kids;
    t.u.combo.count = 3;
    expect_error(&s, APS_EINVAL,
                 "trigger.any_of.triggers[1].interval: the interval must not be negative");
    kids[1] = interval_s(60);
    kids[1].jitter_us = SEC;
    expect_error(&s, APS_EINVAL,
                 "trigger.any_of.triggers[1].jitter: only allowed on the outermost trigger");
    kids[1].jitter_us = 0;
    kids[2].kind = (aps_trigger_kind)42;
    expect_error(&s, APS_EINVAL,
                 "trigger.any_of.triggers[2]: one of cron, interval, date, calendar_interval, "
                 "all_of, any_of is required");
    kids[2] = trig_none(APS_TRIGGER_ALL_OF);
    expect_error(&s, APS_EINVAL, "trigger.any_of.triggers[2].all_of.triggers: must not be empty");
    {
        aps_trigger_spec inner[2];

        inner[0] = trig_none(APS_TRIGGER_CRON);
        inner[0].u.cron.day_of_week = "fooday";
        inner[1] = trig_none(APS_TRIGGER_CRON);
        kids[2].u.combo.triggers = inner;
        kids[2].u.combo.count = 2;
        expect_error(&s, APS_EINVAL,
                     "trigger.any_of.triggers[2].all_of.triggers[0].cron.day_of_week: "
                     "unknown weekday \"fooday\"");
        inner[0].u.cron.day_of_week = "mon";
        inner[1].u.cron.timezone = "No/Such_Zone";
        expect_error(&s, APS_ENOENT,
                     "trigger.any_of.triggers[2].all_of.triggers[1].cron.timezone: unknown time "
                     "zone \"No/Such_Zone\"");
        inner[1].u.cron.timezone = "Europe/Paris";
        aps__jobrec_free(make(&s, NULL));
    }

    /* Width and depth limits. */
    for (i = 0; i < 65; i++)
        wide[i] = interval_s((int64_t)i + 1);
    t = trig_none(APS_TRIGGER_ALL_OF);
    t.u.combo.triggers = wide;
    t.u.combo.count = 65;
    expect_error(&s, APS_EINVAL, "trigger.all_of.triggers: 65 given, at most 64 allowed");
    t.u.combo.count = 64;
    aps__jobrec_free(make(&s, NULL));

    /* deep[0] is the outermost; 9 combos nest 8 levels below it. */
    for (i = 0; i < 9; i++) {
        deep[i] = trig_none(i % 2 ? APS_TRIGGER_ANY_OF : APS_TRIGGER_ALL_OF);
        deep[i].u.combo.triggers = &deep[i + 1];
        deep[i].u.combo.count = 1;
    }
    deep[9] = interval_s(1);
    s.trigger = &deep[0];
    expect_error(&s, APS_EINVAL,
                 "trigger.all_of.triggers[0].any_of.triggers[0].all_of.triggers[0].any_of."
                 "triggers[0].all_of.triggers[0].any_of.triggers[0].all_of.triggers[0].any_of."
                 "triggers[0].all_of: nested more than 8 levels deep");
    s.trigger = &deep[1]; /* 8 combos: the limit */
    aps__jobrec_free(make(&s, NULL));
}

/* ---- the effective trigger -------------------------------------------- */

static void
test_effective_trigger(void **state)
{
    aps_job_spec s = base_spec();
    aps_trigger_spec kids[3], inner[2], t;
    aps__jobrec *r;
    const aps_trigger_spec *e;

    (void)state;
    /* Zones: filled at every level where none is named. */
    inner[0] = trig_none(APS_TRIGGER_DATE);
    inner[0].u.date.run_date = NOW + 3600 * SEC;
    inner[1] = trig_none(APS_TRIGGER_CALENDAR_INTERVAL);
    inner[1].u.calendar_interval.months = 1;
    inner[1].u.calendar_interval.timezone = "Asia/Tokyo";
    kids[0] = trig_none(APS_TRIGGER_CRON);
    kids[0].u.cron.hour = "9";
    kids[1] = interval_s(0); /* zero = 1 s, as APScheduler */
    kids[1].u.interval.timezone = "Europe/Paris";
    kids[2] = trig_none(APS_TRIGGER_ALL_OF);
    kids[2].u.combo.triggers = inner;
    kids[2].u.combo.count = 2;
    t = trig_none(APS_TRIGGER_ANY_OF);
    t.jitter_us = 30 * SEC;
    t.u.combo.triggers = kids;
    t.u.combo.count = 3;
    s.trigger = &t;
    r = make(&s, "America/New_York");
    e = r->job.trigger;
    assert_int_equal(e->kind, APS_TRIGGER_ANY_OF);
    assert_true(e->jitter_us == 30 * SEC);
    assert_int_equal(e->u.combo.count, 3);
    assert_string_equal(e->u.combo.triggers[0].u.cron.timezone, "America/New_York");
    assert_string_equal(e->u.combo.triggers[0].u.cron.hour, "9");
    assert_null(e->u.combo.triggers[0].u.cron.minute);
    assert_true(e->u.combo.triggers[0].u.cron.start_date == APS_TIME_NONE);
    assert_string_equal(e->u.combo.triggers[1].u.interval.timezone, "Europe/Paris");
    assert_true(e->u.combo.triggers[1].u.interval.start_date == NOW + SEC);
    assert_string_equal(e->u.combo.triggers[2].u.combo.triggers[0].u.date.timezone,
                        "America/New_York");
    assert_true(e->u.combo.triggers[2].u.combo.triggers[0].u.date.run_date == NOW + 3600 * SEC);
    assert_string_equal(e->u.combo.triggers[2].u.combo.triggers[1].u.calendar_interval.timezone,
                        "Asia/Tokyo");
    assert_true(e->u.combo.triggers[2].u.combo.triggers[1].u.calendar_interval.start_date == NOW);
    /* The caller's spec is untouched. */
    assert_null(kids[0].u.cron.timezone);
    assert_true(kids[1].u.interval.start_date == APS_TIME_NONE);
    aps__jobrec_free(r);

    /* NULL default zone = UTC; interval start = now + interval. */
    t = trig_none(APS_TRIGGER_INTERVAL);
    t.u.interval.hours = 1;
    t.u.interval.minutes = 30;
    t.u.interval.microseconds = 5;
    s.trigger = &t;
    r = make(&s, NULL);
    assert_string_equal(r->job.trigger->u.interval.timezone, "UTC");
    assert_true(r->job.trigger->u.interval.start_date == NOW + 5400 * SEC + 5);
    aps__jobrec_free(r);
    /* An explicit start is kept. */
    t.u.interval.start_date = NOW - 7 * SEC;
    r = make(&s, NULL);
    assert_true(r->job.trigger->u.interval.start_date == NOW - 7 * SEC);
    aps__jobrec_free(r);

    /* A date trigger without run_date: now. */
    t = trig_none(APS_TRIGGER_DATE);
    r = make(&s, "Europe/Berlin");
    assert_int_equal(r->job.trigger->kind, APS_TRIGGER_DATE);
    assert_true(r->job.trigger->u.date.run_date == NOW);
    assert_string_equal(r->job.trigger->u.date.timezone, "Europe/Berlin");
    aps__jobrec_free(r);

    /* No trigger: a date trigger at next_run_time, or now. */
    s.trigger = NULL;
    r = make(&s, NULL);
    assert_int_equal(r->job.trigger->kind, APS_TRIGGER_DATE);
    assert_true(r->job.trigger->u.date.run_date == NOW);
    assert_string_equal(r->job.trigger->u.date.timezone, "UTC");
    assert_true(r->job.trigger->jitter_us == 0);
    aps__jobrec_free(r);
    s.next_run_time = NOW + 42 * SEC;
    r = make(&s, "Europe/Berlin");
    assert_true(r->job.trigger->u.date.run_date == NOW + 42 * SEC);
    assert_string_equal(r->job.trigger->u.date.timezone, "Europe/Berlin");
    assert_true(r->job.next_run_time == NOW + 42 * SEC);
    aps__jobrec_free(r);

    /* A bad default zone fails where it is used. */
    s = base_spec();
    {
        aps_error err;

        r = (aps__jobrec *)0x1;
        assert_int_equal(aps__jobrec_from_spec(&s, "Bad/Zone", NOW, &r, &err), APS_ENOENT);
        assert_string_equal(err.msg, "trigger.interval.timezone: unknown time zone \"Bad/Zone\"");
        assert_null(r);
    }
}

/* ---- fixtures for the codec ------------------------------------------- */

static aps_trigger_spec
cron_full(void)
{
    aps_trigger_spec t = trig_none(APS_TRIGGER_CRON);

    t.u.cron.year = "2026-2030";
    t.u.cron.month = "jan-jun";
    t.u.cron.day = "last fri";
    t.u.cron.week = "*";
    t.u.cron.day_of_week = "mon-fri";
    t.u.cron.hour = "9-17/2";
    t.u.cron.minute = "0,30";
    t.u.cron.second = "5";
    t.u.cron.start_date = NOW - SEC;
    t.u.cron.end_date = NOW + 86400 * SEC;
    t.u.cron.timezone = "Europe/Paris";
    t.jitter_us = 7;
    return t;
}

/* A record of every trigger kind (combined) and the given target. */
static aps__jobrec *
rich_record(aps_target_kind target, int which_trigger)
{
    static char *env[] = {"LANG=C", "K=v=w"};
    static char *argv[] = {"/usr/bin/env", "a b", "\xe2\x82\xac"};
    aps_trigger_spec kids[4], inner[2], t, leaf;
    aps_label labels[3] = {{"team", "infra"}, {"tier", ""}, {"x/y.z", "1"}};
    aps_job_spec s = base_spec();
    aps__jobrec *r;
    int i;

    inner[0] = trig_none(APS_TRIGGER_CRON);
    inner[0].u.cron.crontab = "*/5 9-17 * * 1-5";
    inner[1] = trig_none(APS_TRIGGER_CALENDAR_INTERVAL);
    inner[1].u.calendar_interval.years = 1;
    inner[1].u.calendar_interval.months = 2;
    inner[1].u.calendar_interval.weeks = 3;
    inner[1].u.calendar_interval.days = 4;
    inner[1].u.calendar_interval.hour = 5;
    inner[1].u.calendar_interval.minute = 6;
    inner[1].u.calendar_interval.second = 7;
    inner[1].u.calendar_interval.end_date = NOW + 400LL * 86400 * SEC;
    kids[0] = cron_full();
    kids[0].jitter_us = 0;
    kids[1] = trig_none(APS_TRIGGER_INTERVAL);
    kids[1].u.interval.weeks = 1;
    kids[1].u.interval.days = 2;
    kids[1].u.interval.hours = 3;
    kids[1].u.interval.minutes = 4;
    kids[1].u.interval.seconds = 5;
    kids[1].u.interval.microseconds = 6;
    kids[1].u.interval.end_date = NOW + 1000 * SEC;
    kids[2] = trig_none(APS_TRIGGER_DATE);
    kids[2].u.date.run_date = NOW + 99;
    kids[2].u.date.timezone = "Asia/Kolkata";
    kids[3] = trig_none(APS_TRIGGER_ALL_OF);
    kids[3].u.combo.triggers = inner;
    kids[3].u.combo.count = 2;
    t = trig_none(APS_TRIGGER_ANY_OF);
    t.jitter_us = 250000;
    t.u.combo.triggers = kids;
    t.u.combo.count = 4;
    switch (which_trigger) {
    case 0:
        s.trigger = &t;
        break;
    case 1:
        leaf = cron_full();
        s.trigger = &leaf;
        break;
    case 2:
        leaf = kids[1];
        leaf.jitter_us = 1;
        s.trigger = &leaf;
        break;
    case 3:
        s.trigger = &kids[2];
        break;
    case 4:
        s.trigger = &inner[1];
        break;
    default:
        s.trigger = &kids[3];
        break;
    }
    s.id = "rich-\xc3\xa9";
    s.name = "A rich job: \"quotes\" and\nnewlines";
    s.executor = "procs";
    s.jobstore = "default";
    s.misfire = APS_MISFIRE_DURATION;
    s.misfire_grace_us = 15 * SEC;
    s.coalesce = 1;
    s.max_instances = 4;
    s.overlap = APS_OVERLAP_CANCEL_RUNNING;
    s.labels = labels;
    s.n_labels = 3;
    s.next_run_time = NOW + 60 * SEC;
    memset(&s.target, 0, sizeof s.target);
    s.target.kind = target;
    switch (target) {
    case APS_TARGET_COMMAND:
        s.target.u.command.argv = argv;
        s.target.u.command.argc = 3;
        s.target.u.command.env = env;
        s.target.u.command.envc = 2;
        s.target.u.command.cwd = "/var/tmp";
        s.target.u.command.timeout_us = 90 * SEC;
        s.target.u.command.max_output = 4096;
        break;
    case APS_TARGET_REMOTE:
        s.target.u.remote.task = "myapp.jobs:cleanup";
        s.target.u.remote.args_json = "[1, \"two\", {\"three\": [3.5e-1]}]";
        s.target.u.remote.kwargs_json = "{\"dry_run\": true, \"n\": null}";
        s.target.u.remote.queue = "gpu";
        break;
    default:
        s.target.u.function.name = "tick";
        s.target.u.function.arg = which_trigger ? NULL : "arg \x01 binary-ish";
        break;
    }
    r = make(&s, "America/Chicago");
    /* Engine-side state. */
    r->job.stats.runs = 1000;
    r->job.stats.failures = 3;
    r->job.stats.misses = 2;
    r->job.stats.max_instance_skips = 1;
    r->job.stats.coalesced = UINT64_MAX;
    strcpy(r->job.stats.last_run_id, "0123456789abcdef0123456789abcdef");
    r->job.stats.last_run_time = NOW - 5 * SEC;
    r->job.stats.last_status = APS_RUN_FAILED;
    r->job.stats.last_exit_code = -9;
    strcpy(r->job.stats.last_error, "killed by signal 9");
    r->running = calloc(2, sizeof *r->running);
    assert_non_null(r->running);
    r->n_running = 2;
    strcpy(r->running[0].run_id, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    strcpy(r->running[0].executor, "procs");
    r->running[0].started = NOW - SEC;
    r->running[0].run_times = malloc(3 * sizeof(aps_time));
    assert_non_null(r->running[0].run_times);
    r->running[0].n_run_times = 3;
    r->running[0].run_times[0] = NOW - 30 * SEC;
    r->running[0].run_times[1] = NOW - 20 * SEC;
    r->running[0].run_times[2] = APS_TIME_NONE;
    strcpy(r->running[1].run_id, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    memset(r->running[1].executor, 'x', 63);
    r->running[1].started = INT64_MAX;
    r->pending = calloc(3, sizeof *r->pending);
    assert_non_null(r->pending);
    r->n_pending = 3;
    r->pending[0].run_times = malloc(sizeof(aps_time));
    assert_non_null(r->pending[0].run_times);
    r->pending[0].run_times[0] = NOW;
    r->pending[0].n_run_times = 1;
    r->pending[1].backfill = 1;
    r->pending[2].run_times = malloc(2 * sizeof(aps_time));
    assert_non_null(r->pending[2].run_times);
    r->pending[2].run_times[0] = -1;
    r->pending[2].run_times[1] = INT64_MIN + 1;
    r->pending[2].n_run_times = 2;
    r->pending[2].backfill = 1;
    for (i = 0; i < 5 + which_trigger * 40; i++)
        aps__jobrec_add_lateness(r, (int64_t)i * 1000 - 2000);
    return r;
}

static aps__jobrec *
roundtrip(const aps__jobrec *r)
{
    void *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    aps__jobrec *d = NULL;

    assert_int_equal(aps__jobrec_encode(r, &buf, &len), 0);
    assert_non_null(buf);
    assert_int_equal(((unsigned char *)buf)[0], APS__JOBREC_FORMAT_V4);
    assert_int_equal(aps__jobrec_decode(buf, len, &d), 0);
    assert_non_null(d);
    /* Stable: encoding the decoded record gives the same bytes. */
    assert_int_equal(aps__jobrec_encode(d, &buf2, &len2), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf);
    free(buf2);
    return d;
}

/* ---- codec: records --------------------------------------------------- */

static void
test_record_roundtrip(void **state)
{
    static const aps_target_kind targets[] = {APS_TARGET_COMMAND, APS_TARGET_REMOTE,
                                              APS_TARGET_FUNCTION};
    size_t ti;
    int tr;

    (void)state;
    for (ti = 0; ti < 3; ti++)
        for (tr = 0; tr < 6; tr++) {
            aps__jobrec *r = rich_record(targets[ti], tr);
            aps__jobrec *d = roundtrip(r);

            /* running_instances etc. are recomputed by decode. */
            assert_int_equal(d->job.running_instances, 2);
            assert_int_equal(d->job.queued_runs, 3);
            r->job.running_instances = 2;
            r->job.queued_runs = 3;
            assert_true(rec_eq(r, d));
            aps__jobrec_free(r);
            aps__jobrec_free(d);
        }

    /* Spot checks on a decoded record, against the values set above. */
    {
        aps__jobrec *r = rich_record(APS_TARGET_COMMAND, 0);
        aps__jobrec *d = roundtrip(r);
        const aps_trigger_spec *t = d->job.trigger;

        assert_string_equal(d->job.id, "rich-\xc3\xa9");
        assert_int_equal(t->kind, APS_TRIGGER_ANY_OF);
        assert_true(t->jitter_us == 250000);
        assert_int_equal(t->u.combo.count, 4);
        assert_string_equal(t->u.combo.triggers[0].u.cron.day, "last fri");
        assert_null(t->u.combo.triggers[0].u.cron.crontab);
        assert_true(t->u.combo.triggers[1].u.interval.microseconds == 6);
        assert_true(t->u.combo.triggers[1].u.interval.start_date ==
                    NOW + (((7 + 2) * 24 + 3) * 3600 + 4 * 60 + 5) * SEC + 6);
        assert_string_equal(t->u.combo.triggers[2].u.date.timezone, "Asia/Kolkata");
        assert_string_equal(t->u.combo.triggers[3].u.combo.triggers[0].u.cron.crontab,
                            "*/5 9-17 * * 1-5");
        assert_string_equal(t->u.combo.triggers[3].u.combo.triggers[0].u.cron.timezone,
                            "America/Chicago");
        assert_int_equal(t->u.combo.triggers[3].u.combo.triggers[1].u.calendar_interval.second, 7);
        assert_string_equal(d->job.target.u.command.env[1], "K=v=w");
        assert_true(d->job.target.u.command.timeout_us == 90 * SEC);
        assert_int_equal(d->job.target.u.command.max_output, 4096);
        assert_string_equal(d->job.labels[2].key, "x/y.z");
        assert_string_equal(d->job.labels[1].value, "");
        assert_true(d->job.stats.coalesced == UINT64_MAX);
        assert_string_equal(d->job.stats.last_error, "killed by signal 9");
        assert_int_equal(d->job.stats.last_exit_code, -9);
        assert_int_equal(d->running[1].executor[62], 'x');
        assert_int_equal(strlen(d->running[1].executor), 63);
        assert_true(d->running[0].run_times[2] == APS_TIME_NONE);
        assert_null(d->running[1].run_times);
        assert_int_equal(d->pending[1].backfill, 1);
        assert_int_equal(d->pending[1].n_run_times, 0);
        assert_true(d->pending[2].run_times[1] == INT64_MIN + 1);
        assert_int_equal(d->n_lateness, 5);
        aps__jobrec_lateness_stats(d, &d->job.stats); /* computed on read, not decode */
        assert_int_equal(d->job.stats.lateness_samples, 5);
        assert_true(d->job.stats.lateness_max_us == 2000);
        aps__jobrec_free(r);
        aps__jobrec_free(d);
    }

    /* A full, wrapped ring survives too. */
    {
        aps__jobrec *r = rich_record(APS_TARGET_REMOTE, 5), *d;
        int i;

        for (i = 0; i < 300; i++)
            aps__jobrec_add_lateness(r, i);
        assert_int_equal(r->n_lateness, APS__LATENESS_WINDOW);
        d = roundtrip(r);
        assert_int_equal(d->lateness_pos, r->lateness_pos);
        assert_memory_equal(d->lateness, r->lateness, APS__LATENESS_WINDOW * sizeof r->lateness[0]);
        assert_true(stats_eq(&d->job.stats, &r->job.stats));
        aps__jobrec_free(r);
        aps__jobrec_free(d);
    }

    /* A minimal record (no labels, nothing running). */
    {
        aps_job_spec s = base_spec();
        aps__jobrec *r = make(&s, NULL), *d = roundtrip(r);

        assert_true(rec_eq(r, d));
        aps__jobrec_free(r);
        aps__jobrec_free(d);
    }
}

/* Bytes of a lateness sample in V3, from the format's definition (zigzag,
 * then 7 bits a byte), independently of the codec. */
static size_t
zigzag_len(int32_t v)
{
    uint64_t u = v < 0 ? 2 * (uint64_t)(-(int64_t)v) - 1 : 2 * (uint64_t)v;
    size_t n = 1;

    while (u >= 0x80) {
        u >>= 7;
        n++;
    }
    return n;
}

/* A record as an older format: its V3 bytes up to the samples (head), the
 * format byte replaced, then each sample in `width` little-endian bytes. */
static unsigned char *
older_record(const unsigned char *v3, size_t head, const aps__jobrec *r, uint8_t format, int width,
             size_t *len)
{
    unsigned char *b = malloc(head + (size_t)width * r->n_lateness);

    assert_non_null(b);
    memcpy(b, v3, head);
    b[0] = format;
    for (size_t i = 0; i < r->n_lateness; i++) {
        uint64_t u = (uint64_t)(int64_t)r->lateness[i];
        for (int k = 0; k < width; k++)
            b[head + (size_t)width * i + (size_t)k] = (unsigned char)(u >> (8 * k));
    }
    *len = head + (size_t)width * r->n_lateness;
    return b;
}

/* V1, V2 and V3 records (lateness samples as int64, int32, varints; fixed
 * widths elsewhere) still decode, to the same record, which V4 writes
 * shorter; encode_into a reused writer gives aps__jobrec_encode's bytes. */
static void
test_record_v1_v2_and_encode_into(void **state)
{
    aps__wbuf w = {0};
    int tr;

    (void)state;
    for (tr = 0; tr < 6; tr++) {
        aps__jobrec *r = rich_record(APS_TARGET_FUNCTION, tr);
        aps__jobrec *d = NULL;
        unsigned char *buf = NULL, *v1, *v2;
        size_t len = 0, head, i, len1, len2;

        assert_int_equal(aps__jobrec_encode(r, (void **)&buf, &len), 0);
        assert_int_equal(aps__jobrec_encode_into(r, &w), 0);
        assert_int_equal(w.len, len);
        assert_memory_equal(w.p, buf, len);
        free(buf);
        buf = NULL;
        size_t len4 = len;
        assert_int_equal(aps__jobrec_encode_format(r, APS__JOBREC_FORMAT_V3, (void **)&buf, &len),
                         0);
        assert_int_equal(buf[0], APS__JOBREC_FORMAT_V3);
        assert_true(len4 < len);
        r->job.running_instances = (uint32_t)r->n_running;
        r->job.queued_runs = (uint32_t)r->n_pending;
        assert_int_equal(aps__jobrec_decode(buf, len, &d), 0);
        assert_true(rec_eq(r, d));
        aps__jobrec_free(d);
        d = NULL;
        /* The lateness ring ends the record: u32 count, u32 position, then
         * the samples: varints in V3, 4 bytes each in V2, 8 in V1. */
        assert_true(r->n_lateness > 0);
        head = len;
        for (i = 0; i < r->n_lateness; i++)
            head -= zigzag_len(r->lateness[i]);
        v2 = older_record(buf, head, r, APS__JOBREC_FORMAT_V2, 4, &len2);
        v1 = older_record(buf, head, r, APS__JOBREC_FORMAT_V1, 8, &len1);
        r->job.running_instances = (uint32_t)r->n_running;
        r->job.queued_runs = (uint32_t)r->n_pending;
        assert_int_equal(aps__jobrec_decode(v2, len2, &d), 0);
        assert_true(rec_eq(r, d));
        aps__jobrec_free(d);
        d = NULL;
        assert_int_equal(aps__jobrec_decode(v1, len1, &d), 0);
        assert_true(rec_eq(r, d));
        /* A V1 sample beyond int32 was never written: corrupt. */
        aps__jobrec_free(d);
        d = NULL;
        v1[head + 4] = 0x01;
        assert_int_equal(aps__jobrec_decode(v1, len1, &d), APS_ECORRUPT);
        assert_null(d);
        free(v1);
        free(v2);
        free(buf);
        aps__jobrec_free(r);
    }
    free(w.p);
}

/* V3 lateness samples: exact over the whole int32 range, in 1 to 5 bytes
 * (on-time samples in 1 or 2), and a sample cut short, longer than 32 bits
 * or not in its shortest form is corrupt. */
static void
test_record_v3_samples(void **state)
{
    static const int32_t samples[] = {
        0,    -1,      1,        63,      -64,     64,        -65,       100,       8191,     -8192,
        8192, 1048575, -1048576, 1048576, 2000000, 134217727, 134217728, INT32_MAX, INT32_MIN};
    static const size_t bytes[] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5};
    aps_job_spec s = base_spec();
    aps__jobrec *r = make(&s, NULL), *d = NULL;
    unsigned char *buf = NULL, *bad;
    size_t n = sizeof samples / sizeof samples[0], len = 0, base = 0, i;

    (void)state;
    assert_int_equal(sizeof bytes / sizeof bytes[0], n);
    assert_int_equal(aps__jobrec_encode(r, (void **)&buf, &base), 0);
    free(buf);
    for (i = 0; i < n; i++)
        aps__jobrec_add_lateness(r, samples[i]);
    d = roundtrip(r);
    assert_memory_equal(d->lateness, samples, sizeof samples);
    aps__jobrec_free(d);
    d = NULL;
    assert_int_equal(aps__jobrec_encode(r, (void **)&buf, &len), 0);
    size_t want = base;
    for (i = 0; i < n; i++) {
        assert_int_equal(zigzag_len(samples[i]), bytes[i]);
        want += bytes[i];
    }
    assert_int_equal(len, want);
    free(buf);

    /* A full ring of on-time samples (under 8 ms) takes 2 bytes a sample,
     * not V2's 4. */
    aps__jobrec_free(r);
    r = make(&s, NULL);
    for (i = 0; i < 300; i++)
        aps__jobrec_add_lateness(r, 60 + (int64_t)(i * 37 % 8000));
    assert_int_equal(aps__jobrec_encode(r, (void **)&buf, &len), 0);
    /* (+ 1: the ring's count, 128, takes a second byte as a V4 varint.) */
    assert_true(len <= base + 1 + 2 * APS__LATENESS_WINDOW);
    free(buf);

    /* Forged last samples: the ring holds one sample (0, one byte). */
    aps__jobrec_free(r);
    r = make(&s, NULL);
    aps__jobrec_add_lateness(r, 0);
    assert_int_equal(aps__jobrec_encode(r, (void **)&buf, &len), 0);
    assert_int_equal(len, base + 1);
    assert_int_equal(buf[len - 1], 0x00);
    bad = malloc(len + 4);
    assert_non_null(bad);
    {
        static const unsigned char cut[] = {0x80};                          /* cut short */
        static const unsigned char overlong[] = {0x80, 0x00};               /* 0, not shortest */
        static const unsigned char wide[] = {0xff, 0xff, 0xff, 0xff, 0x1f}; /* 33 bits */
        static const unsigned char six[] = {0x80, 0x80, 0x80, 0x80, 0x80};  /* no end */
        static const unsigned char extra[] = {0x00, 0x00};                  /* a byte after it */
        static const unsigned char max[] = {0xfe, 0xff, 0xff, 0xff, 0x0f};  /* INT32_MAX */
        const struct {
            const unsigned char *b;
            size_t n;
            int rc;
        } cases[] = {{cut, sizeof cut, APS_ECORRUPT},     {overlong, sizeof overlong, APS_ECORRUPT},
                     {wide, sizeof wide, APS_ECORRUPT},   {six, sizeof six, APS_ECORRUPT},
                     {extra, sizeof extra, APS_ECORRUPT}, {max, sizeof max, 0}};

        for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            memcpy(bad, buf, len - 1);
            memcpy(bad + len - 1, cases[i].b, cases[i].n);
            assert_int_equal(aps__jobrec_decode(bad, len - 1 + cases[i].n, &d), cases[i].rc);
            if (cases[i].rc == 0) {
                assert_int_equal(d->lateness[0], INT32_MAX);
                aps__jobrec_free(d);
            } else {
                assert_null(d);
            }
            d = NULL;
        }
    }
    free(bad);
    free(buf);
    aps__jobrec_free(r);
}

static void
test_record_encode_rejects(void **state)
{
    aps_job_spec s = base_spec();
    aps__jobrec *r = make(&s, NULL);
    void *buf = (void *)0x1;
    size_t len = 7;
    char *saved;

    (void)state;
    saved = r->job.id;
    r->job.id = NULL;
    assert_int_equal(aps__jobrec_encode(r, &buf, &len), APS_EINVAL);
    assert_null(buf);
    assert_int_equal(len, 0);
    r->job.id = saved;
    saved = r->job.target.u.command.argv[1];
    r->job.target.u.command.argv[1] = NULL;
    assert_int_equal(aps__jobrec_encode(r, &buf, &len), APS_EINVAL);
    r->job.target.u.command.argv[1] = saved;
    r->lateness = calloc(APS__LATENESS_WINDOW, sizeof *r->lateness);
    assert_non_null(r->lateness);
    r->n_lateness = 3; /* ring state that the decoder would refuse */
    assert_int_equal(aps__jobrec_encode(r, &buf, &len), APS_EINVAL);
    r->lateness_pos = 3;
    assert_int_equal(aps__jobrec_encode(r, &buf, &len), 0);
    free(buf);
    aps__jobrec_free(r);
}

/* Every proper prefix of an encoding is corrupt; so is a trailing byte. */
static void
check_truncations_rec(const void *buf, size_t len)
{
    unsigned char *copy = malloc(len + 1);
    aps__jobrec *d;
    size_t n;

    assert_non_null(copy);
    memcpy(copy, buf, len);
    for (n = 0; n < len; n++) {
        /* A fresh buffer of exactly n bytes, so ASan sees any overread. */
        unsigned char *p = malloc(n ? n : 1);

        assert_non_null(p);
        memcpy(p, buf, n);
        d = (aps__jobrec *)0x1;
        assert_int_equal(aps__jobrec_decode(n ? p : NULL, n, &d), APS_ECORRUPT);
        assert_null(d);
        free(p);
    }
    copy[len] = 0;
    assert_int_equal(aps__jobrec_decode(copy, len + 1, &d), APS_ECORRUPT);
    copy[0] ^= 0xFF;
    assert_int_equal(aps__jobrec_decode(copy, len, &d), APS_ECORRUPT);
    free(copy);
}

static void
test_record_truncations(void **state)
{
    static const aps_target_kind targets[] = {APS_TARGET_COMMAND, APS_TARGET_REMOTE,
                                              APS_TARGET_FUNCTION};
    size_t ti;
    int tr;

    (void)state;
    for (ti = 0; ti < 3; ti++)
        for (tr = 0; tr < 6; tr += (ti ? 5 : 1)) {
            aps__jobrec *r = rich_record(targets[ti], tr);
            void *buf;
            size_t len;

            assert_int_equal(aps__jobrec_encode(r, &buf, &len), 0);
            check_truncations_rec(buf, len);
            free(buf);
            aps__jobrec_free(r);
        }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t
rng(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));

    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void
test_record_bitflips(void **state)
{
    aps__jobrec *r = rich_record(APS_TARGET_COMMAND, 0), *d;
    void *buf, *again;
    unsigned char *m;
    size_t len, len2, k;
    int i, ok = 0, rc;

    (void)state;
    assert_int_equal(aps__jobrec_encode(r, &buf, &len), 0);
    m = malloc(len);
    assert_non_null(m);
    for (i = 0; i < 20000; i++) {
        int flips = 1 + (int)(rng() % 4);

        memcpy(m, buf, len);
        for (k = 0; k < (size_t)flips; k++) {
            size_t bit = (size_t)(rng() % (len * 8));

            m[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        }
        rc = aps__jobrec_decode(m, len, &d);
        assert_true(rc == 0 || rc == APS_ECORRUPT);
        if (rc == 0) {
            /* Whatever decodes is a well-formed record: it re-encodes to
             * the same bytes (one encoding per value) and survives copying. */
            aps__jobrec *c;

            ok++;
            assert_int_equal(aps__jobrec_encode(d, &again, &len2), 0);
            assert_int_equal(len2, len);
            assert_memory_equal(again, m, len);
            free(again);
            assert_int_equal(aps__jobrec_copy(d, &c), 0);
            assert_true(rec_eq(c, d));
            aps__jobrec_free(c);
            aps__jobrec_free(d);
        } else {
            assert_null(d);
        }
    }
    /* Flips inside strings and times decode; the mix must hit both. */
    assert_true(ok > 0 && ok < 20000);
    free(m);
    free(buf);
    aps__jobrec_free(r);
}

/* A V4 record with `at` bytes from offset `off` replaced by `with` (n
 * bytes); *len updated. */
static unsigned char *
splice(const unsigned char *b, size_t *len, size_t off, size_t at, const unsigned char *with,
       size_t n)
{
    unsigned char *o = malloc(*len - at + n);

    assert_non_null(o);
    memcpy(o, b, off);
    memcpy(o + off, with, n);
    memcpy(o + off + n, b + off + at, *len - off - at);
    *len = *len - at + n;
    return o;
}

/* V4 varints: a length or integer cut short, not in its shortest form,
 * beyond 64 bits, beyond its field's 32 bits, and a forged length or
 * count are corrupt; the smallest and largest values round-trip. */
static void
test_record_v4_forged(void **state)
{
    static const unsigned char absent[] = {0x00};
    static const unsigned char overlong[] = {0x89, 0x00};               /* 9, in two bytes */
    static const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff, 0x0f}; /* 4 GB string */
    static const unsigned char u33[] = {0x81, 0x80, 0x80, 0x80, 0x10};  /* 2^32 + 1 */
    static const unsigned char wide[] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0x02};
    static const unsigned char endless[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                            0x80, 0x80, 0x80, 0x80, 0x01};
    aps_job_spec s = base_spec();
    aps__jobrec *r, *d = NULL;
    unsigned char *b0, *b1, *m;
    size_t len0, len1, n, i;
    void *vb;

    (void)state;
    s.id = "idnine-ch"; /* 9 bytes: its length byte is 10 */
    s.coalesce = 0;
    r = make(&s, NULL);
    assert_int_equal(aps__jobrec_encode(r, &vb, &len0), 0);
    b0 = vb;
    assert_int_equal(b0[0], APS__JOBREC_FORMAT_V4);
    assert_int_equal(b0[1], 10);
    const struct {
        const unsigned char *with;
        size_t n;
    } ids[] = {{absent, sizeof absent}, {overlong, sizeof overlong}, {huge, sizeof huge},
               {u33, sizeof u33},       {wide, sizeof wide},         {endless, sizeof endless}};
    for (i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        n = len0;
        m = splice(b0, &n, 1, 1, ids[i].with, ids[i].n);
        assert_int_equal(aps__jobrec_decode(m, n, &d), APS_ECORRUPT);
        assert_null(d);
        free(m);
    }
    /* Cut inside a varint: the id's length, continued, then the end. */
    m = malloc(2);
    assert_non_null(m);
    m[0] = APS__JOBREC_FORMAT_V4;
    m[1] = 0x8a;
    assert_int_equal(aps__jobrec_decode(m, 2, &d), APS_ECORRUPT);
    free(m);

    /* coalesce (an int32): the byte that differs from coalesce = 1's
     * record, made 2^31 (zigzag + 1 = 2^32 + 1). */
    s.coalesce = 1;
    aps__jobrec *r1 = make(&s, NULL);
    r1->job.create_time = r->job.create_time;
    r1->job.update_time = r->job.update_time;
    assert_int_equal(aps__jobrec_encode(r1, &vb, &len1), 0);
    b1 = vb;
    assert_int_equal(len1, len0);
    for (i = 0; i < len0 && b0[i] == b1[i]; i++)
        ;
    assert_true(i < len0);
    assert_int_equal(b0[i], 1); /* 0: zigzag 0, plus one */
    assert_int_equal(b1[i], 3); /* 1: zigzag 2, plus one */
    for (size_t k = i + 1; k < len0; k++)
        assert_int_equal(b0[k], b1[k]);
    n = len0;
    m = splice(b0, &n, i, 1, u33, sizeof u33);
    assert_int_equal(aps__jobrec_decode(m, n, &d), APS_ECORRUPT);
    free(m);
    /* ... and -1, the default: zigzag 1, plus one. */
    static const unsigned char minus1[] = {0x02};
    n = len0;
    m = splice(b0, &n, i, 1, minus1, 1);
    assert_int_equal(aps__jobrec_decode(m, n, &d), 0);
    assert_int_equal(d->job.coalesce, -1);
    aps__jobrec_free(d);
    d = NULL;
    free(m);
    free(b1);
    aps__jobrec_free(r1);

    /* Extremes round-trip: APS_TIME_NONE (one byte), INT64_MAX, counters
     * at UINT64_MAX. */
    r->job.next_run_time = APS_TIME_NONE;
    r->job.update_time = INT64_MAX;
    r->job.stats.runs = UINT64_MAX;
    r->job.stats.last_run_time = INT64_MIN + 1;
    r->job.stats.last_exit_code = INT32_MIN;
    d = roundtrip(r);
    assert_true(d->job.next_run_time == APS_TIME_NONE);
    assert_true(d->job.update_time == INT64_MAX);
    assert_true(d->job.stats.runs == UINT64_MAX);
    assert_true(d->job.stats.last_run_time == INT64_MIN + 1);
    assert_int_equal(d->job.stats.last_exit_code, INT32_MIN);
    aps__jobrec_free(d);
    free(b0);
    aps__jobrec_free(r);
}

/* The first place of `what` (n bytes) in b, or fails. */
static size_t
find_bytes(const unsigned char *b, size_t len, const void *what, size_t n)
{
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(b + i, what, n) == 0)
            return i;
    fail_msg("bytes not found");
    return 0;
}

/* V4 leaves out a name that is the id and an executor or store called
 * "default", and packs a run id of 32 lowercase hex digits into 16 bytes;
 * each value written out the long way is corrupt (one encoding per
 * value); other names and run ids are strings. */
static void
test_record_v4_usual_values(void **state)
{
    static const char hex[] = "0123456789abcdef0123456789abcdef";
    static const unsigned char packed[] = {0x22, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                           0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    aps_job_spec s = base_spec();
    aps__jobrec *r, *d = NULL;
    unsigned char *b, *m;
    size_t len, n, at;
    void *vb;

    (void)state;
    s.id = "idnine-ch";
    s.executor = "dflt";
    r = make(&s, NULL);
    snprintf(r->job.stats.last_run_id, sizeof r->job.stats.last_run_id, "%s", hex);
    d = roundtrip(r);
    assert_string_equal(d->job.name, "idnine-ch");
    assert_string_equal(d->job.jobstore, "default");
    assert_string_equal(d->job.stats.last_run_id, hex);
    aps__jobrec_free(d);
    d = NULL;
    assert_int_equal(aps__jobrec_encode(r, &vb, &len), 0);
    b = vb;
    assert_int_equal(b[11], 0x00); /* the name: absent, after format, id */
    at = find_bytes(b, len, packed, sizeof packed);

    /* The name written out: corrupt. */
    n = len;
    m = splice(b, &n, 11, 1, (const unsigned char *)"\x0aidnine-ch", 10);
    assert_int_equal(aps__jobrec_decode(m, n, &d), APS_ECORRUPT);
    assert_null(d);
    free(m);
    /* The run id as 32 characters: corrupt; in capitals: a string. */
    char text[34];
    text[0] = 0x21;
    memcpy(text + 1, hex, 32);
    n = len;
    m = splice(b, &n, at, sizeof packed, (const unsigned char *)text, 33);
    assert_int_equal(aps__jobrec_decode(m, n, &d), APS_ECORRUPT);
    for (size_t i = 1; i < 33; i++)
        if (text[i] >= 'a')
            m[at + i] = (unsigned char)(text[i] - 'a' + 'A');
    assert_int_equal(aps__jobrec_decode(m, n, &d), 0);
    assert_string_equal(d->job.stats.last_run_id, "0123456789ABCDEF0123456789ABCDEF");
    aps__jobrec_free(d);
    d = NULL;
    free(m);
    /* The executor "dflt" made absent: "default"; "default" written out:
     * corrupt. */
    at = find_bytes(b, len,
                    "\x05"
                    "dflt",
                    5);
    n = len;
    m = splice(b, &n, at, 5, (const unsigned char *)"\x00", 1);
    assert_int_equal(aps__jobrec_decode(m, n, &d), 0);
    assert_string_equal(d->job.executor, "default");
    aps__jobrec_free(d);
    d = NULL;
    free(m);
    n = len;
    m = splice(b, &n, at, 5,
               (const unsigned char *)"\x08"
                                      "default",
               8);
    assert_int_equal(aps__jobrec_decode(m, n, &d), APS_ECORRUPT);
    free(m);
    /* The store after it, left out: "default" written out is corrupt. */
    assert_int_equal(b[at + 5], 0x00);
    n = len;
    m = splice(b, &n, at + 5, 1,
               (const unsigned char *)"\x08"
                                      "default",
               8);
    assert_int_equal(aps__jobrec_decode(m, n, &d), APS_ECORRUPT);
    free(m);
    free(b);

    /* A running run's executor: "default" left out after its packed id;
     * written out, corrupt; another name, a string. */
    r->running = calloc(1, sizeof *r->running);
    assert_non_null(r->running);
    r->n_running = 1;
    snprintf(r->running[0].run_id, sizeof r->running[0].run_id, "%s", hex);
    snprintf(r->running[0].executor, sizeof r->running[0].executor, "default");
    r->running[0].started = 5;
    r->job.stats.last_run_id[0] = '\0';
    d = roundtrip(r);
    assert_string_equal(d->running[0].executor, "default");
    aps__jobrec_free(d);
    d = NULL;
    assert_int_equal(aps__jobrec_encode(r, &vb, &len), 0);
    b = vb;
    at = find_bytes(b, len, packed, sizeof packed) + sizeof packed;
    assert_int_equal(b[at], 0x00);
    n = len;
    m = splice(b, &n, at, 1,
               (const unsigned char *)"\x08"
                                      "default",
               8);
    assert_int_equal(aps__jobrec_decode(m, n, &d), APS_ECORRUPT);
    free(m);
    n = len;
    m = splice(b, &n, at, 1, (const unsigned char *)"\x06other", 6);
    assert_int_equal(aps__jobrec_decode(m, n, &d), 0);
    assert_string_equal(d->running[0].executor, "other");
    aps__jobrec_free(d);
    free(m);
    free(b);
    aps__jobrec_free(r);
}

/* Forged counts and lengths are refused without allocating for them (V3
 * records, fixed widths; test_record_v4_forged: varints). */
static void
test_record_forged(void **state)
{
    aps_job_spec s = base_spec();
    aps__jobrec *r = make(&s, NULL), *d;
    unsigned char *buf;
    size_t len, i;
    void *vb;

    (void)state;
    assert_int_equal(aps__jobrec_encode_format(r, APS__JOBREC_FORMAT_V3, &vb, &len), 0);
    buf = vb;
    /* The id's length prefix is at offset 1. */
    buf[1] = buf[2] = buf[3] = buf[4] = 0xFF; /* NULL marker: id required */
    assert_int_equal(aps__jobrec_decode(buf, len, &d), APS_ECORRUPT);
    buf[1] = 0xFE; /* 4 GB string */
    assert_int_equal(aps__jobrec_decode(buf, len, &d), APS_ECORRUPT);
    free(buf);

    /* The argv count: find it after the 1-byte target kind. */
    assert_int_equal(aps__jobrec_encode_format(r, APS__JOBREC_FORMAT_V3, &vb, &len), 0);
    buf = vb;
    for (i = 0; i + 4 <= len; i++)
        if (buf[i] == APS_TARGET_COMMAND && buf[i + 1] == 3 && buf[i + 2] == 0 && buf[i + 3] == 0 &&
            buf[i + 4] == 0)
            break;
    assert_true(i + 4 < len);
    buf[i + 1] = 0xFF;
    buf[i + 2] = 0xFF;
    buf[i + 3] = 0xFF;
    buf[i + 4] = 0x7F;
    assert_int_equal(aps__jobrec_decode(buf, len, &d), APS_ECORRUPT);
    /* An embedded NUL in a string is corrupt too. */
    buf[i + 1] = 3;
    buf[i + 2] = buf[i + 3] = buf[i + 4] = 0;
    assert_int_equal(aps__jobrec_decode(buf, len, &d), 0);
    aps__jobrec_free(d);
    buf[i + 5 + 4] = '\0'; /* first byte of argv[0] */
    assert_int_equal(aps__jobrec_decode(buf, len, &d), APS_ECORRUPT);
    free(buf);
    aps__jobrec_free(r);

    /* Trigger nesting: a date trigger under k all_of levels, spliced into
     * a valid encoding; the decoder accepts depth 16 and refuses 17. */
    {
        aps_job_spec ds = base_spec();
        aps__jobrec *dr;
        unsigned char *enc, *full;
        size_t elen, off, k, fl;

        ds.trigger = NULL;
        dr = make(&ds, NULL);
        assert_int_equal(aps__jobrec_encode_format(dr, APS__JOBREC_FORMAT_V3, &vb, &elen), 0);
        enc = vb;
        off = 1 + 4 + strlen(dr->job.id) + 4 + strlen(dr->job.name);
        assert_int_equal(enc[off], APS_TRIGGER_DATE);
        for (k = APS__CODEC_MAX_DEPTH; k <= APS__CODEC_MAX_DEPTH + 1; k++) {
            full = malloc(elen + k * 13);
            assert_non_null(full);
            memcpy(full, enc, off);
            fl = off;
            for (i = 0; i < k; i++) {
                full[fl++] = APS_TRIGGER_ALL_OF;
                memset(full + fl, 0, 8); /* jitter */
                fl += 8;
                memcpy(full + fl, "\x01\x00\x00\x00", 4); /* one child */
                fl += 4;
            }
            memcpy(full + fl, enc + off, elen - off);
            fl += elen - off;
            if (k == APS__CODEC_MAX_DEPTH) {
                const aps_trigger_spec *t;

                assert_int_equal(aps__jobrec_decode(full, fl, &d), 0);
                for (t = d->job.trigger, i = 0; t->kind == APS_TRIGGER_ALL_OF; i++)
                    t = &t->u.combo.triggers[0];
                assert_int_equal(i, k);
                assert_int_equal(t->kind, APS_TRIGGER_DATE);
                aps__jobrec_free(d);
            } else {
                assert_int_equal(aps__jobrec_decode(full, fl, &d), APS_ECORRUPT);
            }
            free(full);
        }
        free(enc);
        aps__jobrec_free(dr);
    }
}

/* ---- codec: events ---------------------------------------------------- */

static aps_event *
sample_event(int with_outcome)
{
    static const unsigned char out_bytes[] = {'o', 'k', 0, 0xFF, '\n', 0x80};
    static const unsigned char err_bytes[] = {0, 0, 0};
    aps_event ev;
    aps_outcome o;
    aps_time rt[3] = {NOW - 20 * SEC, NOW - 10 * SEC, NOW};
    aps_event *copy;

    memset(&ev, 0, sizeof ev);
    memset(&o, 0, sizeof o);
    ev.sequence = UINT64_MAX - 1;
    ev.type = with_outcome ? APS_EVENT_JOB_ERROR : APS_EVENT_JOB_SUBMITTED;
    ev.time = NOW;
    ev.job_id = "job-1";
    ev.jobstore = "default";
    ev.executor = "procs";
    ev.run_times = rt;
    ev.n_run_times = 3;
    ev.run_id = "0123456789abcdef0123456789abcdef";
    ev.message = "coalesced 3 runs";
    if (with_outcome) {
        o.status = APS_RUN_TIMED_OUT;
        o.has_exit_code = 1;
        o.exit_code = -15;
        o.signal = 15;
        o.stdout_tail = (void *)out_bytes;
        o.stdout_len = sizeof out_bytes;
        o.stderr_tail = (void *)err_bytes;
        o.stderr_len = sizeof err_bytes;
        o.stdout_truncated = 1;
        o.start_time = NOW - 5 * SEC;
        o.end_time = NOW;
        o.error = "timed out after 5 s";
        o.traceback = "Traceback (most recent call last):\n  ...";
        o.return_json = "{\"x\": 1}";
        o.error_type = "TimeoutError";
        o.worker_id = "worker-7";
        ev.outcome = &o;
    }
    assert_int_equal(aps__event_copy(&ev, &copy), 0);
    assert_true(event_eq(&ev, copy));
    return copy;
}

static aps_event *
event_roundtrip(const aps_event *ev)
{
    void *buf, *buf2;
    size_t len, len2;
    aps_event *d = NULL;

    assert_int_equal(aps__event_encode(ev, &buf, &len), 0);
    assert_int_equal(((unsigned char *)buf)[0], APS__EVENT_FORMAT_V3);
    assert_int_equal(aps__event_decode(buf, len, &d), 0);
    assert_int_equal(aps__event_encode(d, &buf2, &len2), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(buf, buf2, len);
    free(buf);
    free(buf2);
    /* V2 (fixed widths) still decodes, to the same event, and is longer. */
    aps_event *v2 = NULL;
    assert_int_equal(aps__event_encode_format(ev, APS__EVENT_FORMAT_V2, &buf, &len2), 0);
    assert_int_equal(((unsigned char *)buf)[0], APS__EVENT_FORMAT_V2);
    assert_true(len < len2);
    assert_int_equal(aps__event_decode(buf, len2, &v2), 0);
    assert_true(event_eq(d, v2));
    aps_event_free(v2);
    if (ev->outcome == NULL) {
        /* Without an outcome V2 adds nothing: a V1 record of before is the
         * same bytes under the old format byte, and still decodes. */
        aps_event *v1 = NULL;
        ((unsigned char *)buf)[0] = APS__EVENT_FORMAT_V1;
        assert_int_equal(aps__event_decode(buf, len2, &v1), 0);
        assert_true(event_eq(d, v1));
        aps_event_free(v1);
    }
    free(buf);
    return d;
}

static void
check_truncations_event(const void *buf, size_t len)
{
    unsigned char *copy = malloc(len + 1);
    aps_event *d;
    size_t n;

    assert_non_null(copy);
    memcpy(copy, buf, len);
    for (n = 0; n < len; n++) {
        unsigned char *p = malloc(n ? n : 1);

        assert_non_null(p);
        memcpy(p, buf, n);
        d = (aps_event *)0x1;
        assert_int_equal(aps__event_decode(p, n, &d), APS_ECORRUPT);
        assert_null(d);
        free(p);
    }
    copy[len] = 'x';
    assert_int_equal(aps__event_decode(copy, len + 1, &d), APS_ECORRUPT);
    copy[0] = APS__JOBREC_FORMAT_V1; /* a record is not an event */
    assert_int_equal(aps__event_decode(copy, len, &d), APS_ECORRUPT);
    free(copy);
}

/* The engine's own events are one allocation each (aps__event_new); a
 * copy of one is an ordinary event; both encode alike and free cleanly
 * (ASan and valgrind check the frees). */
static void
test_event_packed(void **state)
{
    aps_time rts[3] = {1000000, 2000000, 3000000};
    aps_event *ev = NULL, *copy = NULL, *bare = NULL;
    void *b1, *b2;
    size_t l1, l2;

    (void)state;
    assert_int_equal(aps__event_new(APS_EVENT_JOB_SUBMITTED, 42, "job-1", "default", "pool",
                                    "run-7", rts, 3, &ev),
                     0);
    assert_true(ev->packed);
    assert_string_equal(ev->job_id, "job-1");
    assert_string_equal(ev->jobstore, "default");
    assert_string_equal(ev->executor, "pool");
    assert_string_equal(ev->run_id, "run-7");
    assert_int_equal(ev->n_run_times, 3);
    assert_memory_equal(ev->run_times, rts, sizeof(rts));
    assert_int_equal(ev->time, 42);
    /* Fields the engine sets afterwards stay separately owned. */
    ev->message = strdup("why");
    assert_non_null(ev->message);
    assert_int_equal(aps__event_copy(ev, &copy), 0);
    assert_false(copy->packed);
    assert_true(event_eq(ev, copy));
    assert_int_equal(aps__event_encode(ev, &b1, &l1), 0);
    assert_int_equal(aps__event_encode(copy, &b2, &l2), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    free(b1);
    free(b2);
    aps_event_free(ev);
    aps_event_free(copy);
    /* Absent strings and no run times: NULLs, nothing packed for them. */
    assert_int_equal(
        aps__event_new(APS_EVENT_SCHEDULER_STARTED, 1, NULL, NULL, NULL, NULL, NULL, 0, &bare), 0);
    assert_null(bare->job_id);
    assert_null(bare->jobstore);
    assert_null(bare->executor);
    assert_null(bare->run_id);
    assert_null(bare->run_times);
    assert_int_equal(bare->n_run_times, 0);
    aps_event_free(bare);
}

static void
test_event_codec(void **state)
{
    aps_event *ev, *d, scheduler_ev;
    void *buf;
    size_t len;
    int with, i, rc;

    (void)state;
    for (with = 0; with < 2; with++) {
        ev = sample_event(with);
        d = event_roundtrip(ev);
        assert_true(event_eq(ev, d));
        if (with) {
            assert_int_equal(d->outcome->stdout_len, 6);
            assert_memory_equal(d->outcome->stdout_tail, "ok\0\xff\n\x80", 6);
            assert_int_equal(d->outcome->stderr_len, 3);
            assert_memory_equal(d->outcome->stderr_tail, "\0\0\0", 3);
            assert_int_equal(d->outcome->status, APS_RUN_TIMED_OUT);
            assert_int_equal(d->outcome->exit_code, -15);
        } else {
            assert_null(d->outcome);
        }
        assert_int_equal(aps__event_encode(ev, &buf, &len), 0);
        check_truncations_event(buf, len);
        /* Bit flips never crash and whatever decodes re-encodes. */
        for (i = 0; i < 5000; i++) {
            unsigned char *m = malloc(len);
            size_t bit = (size_t)(rng() % (len * 8));
            aps_event *x;

            assert_non_null(m);
            memcpy(m, buf, len);
            m[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            rc = aps__event_decode(m, len, &x);
            assert_true(rc == 0 || rc == APS_ECORRUPT);
            if (rc == 0) {
                void *b2;
                size_t l2;

                assert_int_equal(aps__event_encode(x, &b2, &l2), 0);
                assert_int_equal(l2, len);
                assert_memory_equal(b2, m, len);
                free(b2);
                aps_event_free(x);
            }
            free(m);
        }
        free(buf);
        aps_event_free(ev);
        aps_event_free(d);
    }

    /* A scheduler event: no job, no run times; empty tails become NULL. */
    memset(&scheduler_ev, 0, sizeof scheduler_ev);
    scheduler_ev.type = APS_EVENT_SCHEDULER_STARTED;
    scheduler_ev.time = -1;
    d = event_roundtrip(&scheduler_ev);
    assert_true(event_eq(&scheduler_ev, d));
    assert_null(d->job_id);
    assert_null(d->run_times);
    aps_event_free(d);
    {
        aps_outcome o;

        memset(&o, 0, sizeof o);
        o.status = APS_RUN_SUCCEEDED;
        o.stdout_tail = (void *)"";
        o.stdout_len = 0;
        scheduler_ev.type = APS_EVENT_JOB_EXECUTED;
        scheduler_ev.outcome = &o;
        d = event_roundtrip(&scheduler_ev);
        assert_non_null(d->outcome);
        assert_null(d->outcome->stdout_tail);
        assert_int_equal(d->outcome->stdout_len, 0);
        aps_event_free(d);
        /* A length without bytes, a bad type or status: refused. */
        o.stdout_tail = NULL;
        o.stdout_len = 3;
        assert_int_equal(aps__event_encode(&scheduler_ev, &buf, &len), APS_EINVAL);
        assert_null(buf);
        o.stdout_len = 0;
        o.status = (aps_run_status)99;
        assert_int_equal(aps__event_encode(&scheduler_ev, &buf, &len), APS_EINVAL);
        o.status = APS_RUN_NONE;
        scheduler_ev.type = (aps_event_type)0;
        assert_int_equal(aps__event_encode(&scheduler_ev, &buf, &len), APS_EINVAL);
    }
}

/* V3 events pack a run id of 32 lowercase hex digits into 16 bytes; the
 * same digits as a string are corrupt (one encoding per value); other run
 * ids, of any length, are strings; none is absent. The peek reads a V3
 * event's type and job id. */
static void
test_event_v3_run_ids(void **state)
{
    static const unsigned char packed[] = {0x01, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                           0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    static const char *const others[] = {NULL,
                                         "",
                                         "run-1",
                                         "0123456789ABCDEF0123456789ABCDEF",
                                         "0123456789abcdef0123456789abcdef0", /* 33: code 35 */
                                         "0123456789abcdef0123456789abcde"};
    aps_event *ev = sample_event(0), *d = NULL;
    unsigned char *b, *m;
    size_t len, n, at;
    void *vb;
    aps_event_type type;
    const char *jid;
    size_t jlen;

    (void)state;
    assert_int_equal(aps__event_encode(ev, &vb, &len), 0);
    b = vb;
    at = find_bytes(b, len, packed, sizeof packed);
    assert_int_equal(aps__event_peek(b, len, &type, &jid, &jlen), 0);
    assert_int_equal(type, ev->type);
    assert_int_equal(jlen, strlen(ev->job_id));
    assert_memory_equal(jid, ev->job_id, jlen);
    /* The digits as a string (length 32, plus 2): corrupt. */
    unsigned char text[33];
    text[0] = 34;
    memcpy(text + 1, ev->run_id, 32);
    n = len;
    m = splice(b, &n, at, sizeof packed, text, sizeof text);
    assert_int_equal(aps__event_decode(m, n, &d), APS_ECORRUPT);
    assert_null(d);
    free(m);
    free(b);
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        char *keep = ev->run_id;
        ev->run_id = (char *)others[i];
        d = event_roundtrip(ev);
        if (others[i] == NULL)
            assert_null(d->run_id);
        else
            assert_string_equal(d->run_id, others[i]);
        aps_event_free(d);
        ev->run_id = keep;
    }
    aps_event_free(ev);
}

static void
test_event_names(void **state)
{
    static const char *const names[] = {
        NULL,
        "SCHEDULER_STARTED",
        "SCHEDULER_SHUTDOWN",
        "SCHEDULER_PAUSED",
        "SCHEDULER_RESUMED",
        "EXECUTOR_ADDED",
        "EXECUTOR_REMOVED",
        "JOBSTORE_ADDED",
        "JOBSTORE_REMOVED",
        "ALL_JOBS_REMOVED",
        "JOB_ADDED",
        "JOB_REMOVED",
        "JOB_MODIFIED",
        "JOB_EXECUTED",
        "JOB_ERROR",
        "JOB_MISSED",
        "JOB_SUBMITTED",
        "JOB_MAX_INSTANCES",
    };
    int t;

    (void)state;
    for (t = 1; t <= 17; t++)
        assert_string_equal(aps_event_type_name((aps_event_type)t), names[t]);
    assert_string_equal(aps_event_type_name((aps_event_type)0), "UNKNOWN");
    assert_string_equal(aps_event_type_name((aps_event_type)18), "UNKNOWN");
    assert_string_equal(aps_event_type_name((aps_event_type)-3), "UNKNOWN");
    aps_event_free(NULL);
    aps_job_free(NULL);
    aps_job_list_free(NULL, 3);
    aps__jobrec_free(NULL);
    aps__trigger_spec_free(NULL);
}

/* ---- lateness --------------------------------------------------------- */

/* A sample, then the percentiles as a read computes them. */
static void
add_lat(aps__jobrec *r, int64_t us)
{
    aps__jobrec_add_lateness(r, us);
    aps__jobrec_lateness_stats(r, &r->job.stats);
}

static void
test_percentiles(void **state)
{
    aps_job_spec s = base_spec();
    aps__jobrec *r = make(&s, NULL);
    aps_job *j;
    int i;

    (void)state;
    aps__jobrec_lateness_stats(r, &r->job.stats);
    assert_int_equal(r->job.stats.lateness_samples, 0);
    assert_true(r->job.stats.lateness_p50_us == 0 && r->job.stats.lateness_max_us == 0);

    add_lat(r, 42);
    assert_int_equal(r->job.stats.lateness_samples, 1);
    assert_true(r->job.stats.lateness_p50_us == 42 && r->job.stats.lateness_p90_us == 42 &&
                r->job.stats.lateness_p99_us == 42 && r->job.stats.lateness_max_us == 42);

    /* 1..10 added in a scrambled order: p50 = 5th, p90 = 9th, p99 = 10th. */
    r->n_lateness = r->lateness_pos = 0;
    for (i = 0; i < 10; i++)
        add_lat(r, ((i * 7) % 10 + 1) * 1000);
    assert_int_equal(r->job.stats.lateness_samples, 10);
    assert_true(r->job.stats.lateness_p50_us == 5000);
    assert_true(r->job.stats.lateness_p90_us == 9000);
    assert_true(r->job.stats.lateness_p99_us == 10000);
    assert_true(r->job.stats.lateness_max_us == 10000);

    /* 1..100: exact ranks. */
    r->n_lateness = r->lateness_pos = 0;
    for (i = 100; i >= 1; i--)
        add_lat(r, i);
    assert_true(r->job.stats.lateness_p50_us == 50);
    assert_true(r->job.stats.lateness_p90_us == 90);
    assert_true(r->job.stats.lateness_p99_us == 99);
    assert_true(r->job.stats.lateness_max_us == 100);

    /* The ring keeps the last 128 of 1..200 (73..200): ranks 64, 116, 127. */
    r->n_lateness = r->lateness_pos = 0;
    for (i = 1; i <= 200; i++)
        add_lat(r, i);
    assert_int_equal(r->n_lateness, 128);
    assert_int_equal(r->lateness_pos, 200 % 128);
    assert_int_equal(r->job.stats.lateness_samples, 128);
    assert_true(r->job.stats.lateness_p50_us == 136);
    assert_true(r->job.stats.lateness_p90_us == 188);
    assert_true(r->job.stats.lateness_p99_us == 199);
    assert_true(r->job.stats.lateness_max_us == 200);

    /* Negative lateness (early runs) sorts below zero. */
    r->n_lateness = r->lateness_pos = 0;
    add_lat(r, -5);
    add_lat(r, INT64_MIN);
    add_lat(r, INT64_MAX);
    assert_true(r->job.stats.lateness_p50_us == -5);
    assert_true(r->job.stats.lateness_max_us == INT32_MAX);

    /* The public copy carries the counts and the percentiles. */
    r->n_lateness = r->lateness_pos = 0;
    for (i = 1; i <= 200; i++)
        add_lat(r, i);
    memset(&r->job.stats.lateness_p50_us, 0, sizeof r->job.stats.lateness_p50_us);
    r->running = calloc(1, sizeof *r->running);
    assert_non_null(r->running);
    r->n_running = 1;
    r->pending = calloc(2, sizeof *r->pending);
    assert_non_null(r->pending);
    r->n_pending = 2;
    assert_int_equal(aps__job_from_rec(r, &j), 0);
    assert_int_equal(j->running_instances, 1);
    assert_int_equal(j->queued_runs, 2);
    assert_true(j->stats.lateness_p50_us == 136);
    assert_true(j->stats.lateness_p99_us == 199);
    assert_int_equal(j->stats.lateness_samples, 128);
    assert_string_equal(j->id, "job-1");
    assert_true(trigger_eq(j->trigger, r->job.trigger));
    assert_ptr_not_equal(j->trigger, r->job.trigger);
    {
        aps_job **list = calloc(2, sizeof *list);

        assert_non_null(list);
        list[0] = j;
        assert_int_equal(aps__job_copy(j, &list[1]), 0);
        assert_true(job_eq(list[0], list[1]));
        aps_job_list_free(list, 2);
    }
    aps__jobrec_free(r);
}

/* ---- copies ----------------------------------------------------------- */

static void
test_copies(void **state)
{
    aps__jobrec *r = rich_record(APS_TARGET_COMMAND, 0), *c;
    aps_trigger_spec *t;

    (void)state;
    assert_int_equal(aps__jobrec_copy(r, &c), 0);
    assert_true(rec_eq(r, c));
    assert_ptr_not_equal(c->job.trigger, r->job.trigger);
    assert_ptr_not_equal(c->job.trigger->u.combo.triggers, r->job.trigger->u.combo.triggers);
    assert_ptr_not_equal(c->running[0].run_times, r->running[0].run_times);
    aps__jobrec_free(c);

    assert_int_equal(aps__trigger_spec_copy(r->job.trigger, &t), 0);
    assert_true(trigger_eq(t, r->job.trigger));
    aps__trigger_spec_free(t);
    {
        aps_target tg;

        assert_int_equal(aps__target_copy(&r->job.target, &tg), 0);
        assert_true(target_eq(&tg, &r->job.target));
        assert_ptr_not_equal(tg.u.command.argv, r->job.target.u.command.argv);
        aps__target_dispose(&tg);
        assert_int_equal(tg.kind, APS_TARGET_NONE);
        assert_null(tg.u.command.argv);
    }
    {
        aps_event *ev = sample_event(1);
        aps_outcome *o;
        aps_event wrap;

        assert_int_equal(aps__outcome_copy(ev->outcome, &o), 0);
        assert_ptr_not_equal(o->stdout_tail, ev->outcome->stdout_tail);
        memset(&wrap, 0, sizeof wrap);
        wrap.sequence = ev->sequence;
        wrap.type = ev->type;
        wrap.time = ev->time;
        wrap.job_id = ev->job_id;
        wrap.jobstore = ev->jobstore;
        wrap.executor = ev->executor;
        wrap.run_times = ev->run_times;
        wrap.n_run_times = ev->n_run_times;
        wrap.run_id = ev->run_id;
        wrap.message = ev->message;
        wrap.outcome = o;
        assert_true(event_eq(&wrap, ev));
        free(o->stdout_tail);
        free(o->stderr_tail);
        free(o->error);
        free(o->traceback);
        free(o->return_json);
        free(o->error_type);
        free(o->worker_id);
        free(o);
        aps_event_free(ev);
    }
    {
        aps_trigger_spec bad = trig_none((aps_trigger_kind)77);

        t = (aps_trigger_spec *)0x1;
        assert_int_equal(aps__trigger_spec_copy(&bad, &t), APS_EINVAL);
        assert_null(t);
    }
    aps__jobrec_free(r);
}

/* ---- apply ------------------------------------------------------------ */

static void
assert_unchanged(const aps__jobrec *r, const void *before, size_t len)
{
    void *now_buf;
    size_t now_len;

    assert_int_equal(aps__jobrec_encode(r, &now_buf, &now_len), 0);
    assert_int_equal(now_len, len);
    assert_memory_equal(now_buf, before, len);
    free(now_buf);
}

static void
test_apply(void **state)
{
    aps_job_spec s = base_spec(), m;
    aps__jobrec *r;
    aps_error err;
    void *before;
    size_t blen;
    aps_time later = NOW + 3600 * SEC;
    aps_label labels[1] = {{"env", "prod"}};
    aps_trigger_spec cron;
    static char *argv2[] = {"/bin/sleep", "5"};

    (void)state;
    s.paused = 1;
    r = make(&s, NULL);
    memset(&m, 0, sizeof m);
    m.next_run_time = APS_TIME_NONE;

    /* NAME: a new name; NULL = the id. */
    m.name = "renamed";
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_NAME, NULL, later, &err), 0);
    assert_string_equal(r->job.name, "renamed");
    assert_true(r->job.update_time == later && r->job.create_time == NOW);
    m.name = NULL;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_NAME, NULL, later, &err), 0);
    assert_string_equal(r->job.name, "job-1");

    /* TRIGGER: the effective trigger with the given zone and time. */
    cron = trig_none(APS_TRIGGER_CRON);
    cron.u.cron.minute = "*/15";
    m.trigger = &cron;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_TRIGGER, "Europe/Rome", later, &err), 0);
    assert_int_equal(r->job.trigger->kind, APS_TRIGGER_CRON);
    assert_string_equal(r->job.trigger->u.cron.timezone, "Europe/Rome");
    assert_string_equal(r->job.trigger->u.cron.minute, "*/15");
    assert_int_equal(r->job.paused, 1); /* a new trigger does not resume */
    {
        aps_trigger_spec iv = interval_s(30);

        m.trigger = &iv;
        assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_TRIGGER, NULL, later, &err), 0);
        assert_true(r->job.trigger->u.interval.start_date == later + 30 * SEC);
    }

    /* TARGET */
    m.target.kind = APS_TARGET_COMMAND;
    m.target.u.command.argv = argv2;
    m.target.u.command.argc = 2;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_TARGET, NULL, later, &err), 0);
    assert_string_equal(r->job.target.u.command.argv[0], "/bin/sleep");
    assert_int_equal(r->job.target.u.command.argc, 2);

    /* EXECUTOR and JOBSTORE: NULL = "default". */
    m.executor = "other";
    m.jobstore = "memory";
    assert_int_equal(
        aps__jobrec_apply(r, &m, APS_MODIFY_EXECUTOR | APS_MODIFY_JOBSTORE, NULL, later, &err), 0);
    assert_string_equal(r->job.executor, "other");
    assert_string_equal(r->job.jobstore, "memory");
    m.executor = NULL;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_EXECUTOR, NULL, later, &err), 0);
    assert_string_equal(r->job.executor, "default");
    assert_string_equal(r->job.jobstore, "memory");

    /* MISFIRE, COALESCE, MAX_INSTANCES, OVERLAP */
    m.misfire = APS_MISFIRE_UNLIMITED;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_MISFIRE, NULL, later, &err), 0);
    assert_int_equal(r->job.misfire, APS_MISFIRE_UNLIMITED);
    m.coalesce = 0;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_COALESCE, NULL, later, &err), 0);
    assert_int_equal(r->job.coalesce, 0);
    m.max_instances = 7;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_MAX_INSTANCES, NULL, later, &err), 0);
    assert_int_equal(r->job.max_instances, 7);
    m.overlap = APS_OVERLAP_QUEUE_ONE;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_OVERLAP, NULL, later, &err), 0);
    assert_int_equal(r->job.overlap, APS_OVERLAP_QUEUE_ONE);

    /* LABELS: replaced as a whole, also by none. */
    m.labels = labels;
    m.n_labels = 1;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_LABELS, NULL, later, &err), 0);
    assert_int_equal(r->job.n_labels, 1);
    assert_string_equal(r->job.labels[0].value, "prod");
    m.labels = NULL;
    m.n_labels = 0;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_LABELS, NULL, later, &err), 0);
    assert_int_equal(r->job.n_labels, 0);
    assert_null(r->job.labels);

    /* NEXT_RUN_TIME resumes a paused job; unset is refused. */
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_NEXT_RUN_TIME, NULL, later, &err),
                     APS_EINVAL);
    assert_string_equal(err.msg, "next_run_time: must be set (pause the job to clear it)");
    m.next_run_time = later + SEC;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_NEXT_RUN_TIME, NULL, later + 1, &err), 0);
    assert_int_equal(r->job.paused, 0);
    assert_true(r->job.next_run_time == later + SEC);
    assert_true(r->job.update_time == later + 1);

    /* Failures change nothing: a bad field among good ones, a bad mask. */
    assert_int_equal(aps__jobrec_encode(r, &before, &blen), 0);
    m.name = "would change";
    m.max_instances = -3;
    assert_int_equal(
        aps__jobrec_apply(r, &m, APS_MODIFY_NAME | APS_MODIFY_MAX_INSTANCES, NULL, NOW, &err),
        APS_EINVAL);
    assert_string_equal(err.msg, "max_instances: must not be negative");
    assert_unchanged(r, before, blen);
    assert_int_equal(aps__jobrec_apply(r, &m, 1u << 20, NULL, NOW, &err), APS_EINVAL);
    assert_string_equal(err.msg, "mask: unknown field bits 0x100000");
    assert_unchanged(r, before, blen);
    m.trigger = NULL;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_TRIGGER, NULL, NOW, &err), APS_EINVAL);
    assert_string_equal(err.msg, "trigger: required");
    cron.u.cron.minute = "61";
    m.trigger = &cron;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_TRIGGER, NULL, NOW, &err), APS_EINVAL);
    assert_string_equal(err.msg, "trigger.cron.minute: 61 is out of range 0-59");
    cron.u.cron.minute = "1";
    cron.u.cron.timezone = "Nowhere/Land";
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_TRIGGER, NULL, NOW, &err), APS_ENOENT);
    m.target.kind = APS_TARGET_NONE;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_TARGET, NULL, NOW, &err), APS_EINVAL);
    assert_string_equal(err.msg, "target: one of command, remote, function is required");
    m.executor = "a b";
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_EXECUTOR, NULL, NOW, &err), APS_EINVAL);
    m.misfire = APS_MISFIRE_DURATION;
    m.misfire_grace_us = 0;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_MISFIRE, NULL, NOW, &err), APS_EINVAL);
    m.coalesce = 3;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_COALESCE, NULL, NOW, &err), APS_EINVAL);
    m.overlap = (aps_overlap)9;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_OVERLAP, NULL, NOW, &err), APS_EINVAL);
    m.labels = labels;
    m.n_labels = 99;
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_LABELS, NULL, NOW, &err), APS_EINVAL);
    m.name = "\xff";
    assert_int_equal(aps__jobrec_apply(r, &m, APS_MODIFY_NAME, NULL, NOW, &err), APS_EINVAL);
    assert_unchanged(r, before, blen);
    /* An empty mask only touches update_time. */
    assert_int_equal(aps__jobrec_apply(r, &m, 0, NULL, NOW + 99, &err), 0);
    assert_true(r->job.update_time == NOW + 99);
    free(before);
    aps__jobrec_free(r);
}

/* ---- JSON ------------------------------------------------------------- */

static void
test_json(void **state)
{
    static const struct {
        const char *text;
        char top;
    } good[] = {
        {"[]", '['},
        {" [ ] ", '['},
        {"{}", '{'},
        {"{\"a\":{\"b\":[1,-2.5e+3,0,0.0,1E9,true,false,null,\"\\u00e9\\n\\\"\"]}}", '{'},
        {"\"caf\xc3\xa9 \xf0\x9f\x98\x80\"", '"'},
        {"-0", '-'},
        {"null", 'n'},
        {"\t\r\n12\n", '1'},
    };
    static const struct {
        const char *text;
        size_t where;
        const char *why;
    } bad[] = {
        {"", 0, "unexpected end of input"},
        {"   ", 3, "unexpected end of input"},
        {"[", 1, "unexpected end of input"},
        {"[1,]", 3, "unexpected character"},
        {"[1 2]", 3, "expected ',' or ']'"},
        {"{\"a\":1,}", 7, "expected a string key"},
        {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"},
        {"{a:1}", 1, "expected a string key"},
        {"01", 1, "unexpected data after the value"},
        {"1.", 2, "invalid number"},
        {"-", 1, "invalid number"},
        {"1e", 2, "invalid number"},
        {"+1", 0, "unexpected character"},
        {"tru", 0, "unexpected character"},
        {"nul", 0, "unexpected character"},
        {"\"abc", 4, "unterminated string"},
        {"\"a\x01\"", 2, "control character in string"},
        {"\"\\u12g4\"", 1, "invalid \\u escape"},
        {"\"\\q\"", 1, "invalid escape"},
        {"\"\xc3\x28\"", 1, "invalid UTF-8"},
        {"\"\xed\xa0\x80\"", 1, "invalid UTF-8"}, /* a UTF-8 encoded surrogate */
        {"[] []", 3, "unexpected data after the value"},
        {"NaN", 0, "unexpected character"},
    };
    char deep[200];
    size_t i, where;
    const char *why;
    char top;

    (void)state;
    for (i = 0; i < sizeof good / sizeof good[0]; i++) {
        top = 0;
        if (aps__json_check(good[i].text, strlen(good[i].text), &top, &where, &why) != 0)
            fail_msg("\"%s\" rejected at %zu: %s", good[i].text, where, why);
        assert_int_equal(top, good[i].top);
    }
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        where = 999;
        why = NULL;
        assert_int_equal(aps__json_check(bad[i].text, strlen(bad[i].text), &top, &where, &why),
                         APS_EINVAL);
        if (where != bad[i].where || strcmp(why, bad[i].why) != 0)
            fail_msg("\"%s\": got %zu %s", bad[i].text, where, why);
    }
    /* An embedded NUL (len beyond strlen) is not JSON. */
    assert_int_equal(aps__json_check("[1]\0", 4, NULL, NULL, NULL), APS_EINVAL);
    /* Depth: 64 levels are fine, 65 are not. */
    memset(deep, '[', 64);
    memset(deep + 64, ']', 64);
    assert_int_equal(aps__json_check(deep, 128, &top, NULL, NULL), 0);
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    assert_int_equal(aps__json_check(deep, 130, &top, &where, &why), APS_EINVAL);
    assert_string_equal(why, "nested too deeply");
    assert_int_equal(where, 64);
}

/* ---- allocation failures ---------------------------------------------- */

/* Runs `op` with the Nth allocation failing for N = 1, 2, ... until it
 * succeeds; each failure must be APS_ENOMEM (leaks show under ASan). */
#define OOM_LOOP(op, on_success)                                                                   \
    do {                                                                                           \
        unsigned long n_;                                                                          \
        int rc_;                                                                                   \
        for (n_ = 1;; n_++) {                                                                      \
            aps__job_alloc_fail_at = n_;                                                           \
            rc_ = (op);                                                                            \
            aps__job_alloc_fail_at = 0;                                                            \
            if (rc_ == 0) {                                                                        \
                on_success;                                                                        \
                break;                                                                             \
            }                                                                                      \
            if (rc_ != APS_ENOMEM)                                                                 \
                fail_msg("%s: allocation %lu: rc %d", #op, n_, rc_);                               \
            assert_true(n_ < 100000);                                                              \
        }                                                                                          \
        assert_true(n_ > 1);                                                                       \
    } while (0)

static void
test_oom(void **state)
{
    aps__jobrec *r = rich_record(APS_TARGET_COMMAND, 0), *x = NULL;
    aps_job_spec s = base_spec(), m;
    aps_event *ev = sample_event(1), *ex = NULL;
    aps_trigger_spec kids[2], t, *tc = NULL;
    aps_job *j = NULL;
    aps_error err;
    void *buf = NULL, *ebuf;
    size_t len = 0, elen;
    static char *env[] = {"A=1", "B=2"};
    aps_label labels[2] = {{"a", "1"}, {"b", NULL}};

    (void)state;
    kids[0] = trig_none(APS_TRIGGER_CRON);
    kids[0].u.cron.hour = "1";
    kids[1] = interval_s(5);
    t = trig_none(APS_TRIGGER_ALL_OF);
    t.u.combo.triggers = kids;
    t.u.combo.count = 2;
    s.trigger = &t;
    s.id = NULL;
    s.target.u.command.env = env;
    s.target.u.command.envc = 2;
    s.target.u.command.cwd = "/";
    s.labels = labels;
    s.n_labels = 2;
    OOM_LOOP(aps__jobrec_from_spec(&s, "Europe/Paris", NOW, &x, &err), aps__jobrec_free(x));
    OOM_LOOP(aps__jobrec_copy(r, &x), (assert_true(rec_eq(r, x)), aps__jobrec_free(x)));
    OOM_LOOP(aps__job_from_rec(r, &j), aps_job_free(j));
    OOM_LOOP(aps__trigger_spec_copy(r->job.trigger, &tc), aps__trigger_spec_free(tc));
    OOM_LOOP(aps__jobrec_encode(r, &buf, &len), (void)0);
    OOM_LOOP(aps__jobrec_decode(buf, len, &x),
             (r->job.running_instances = 2, r->job.queued_runs = 3, assert_true(rec_eq(r, x)),
              aps__jobrec_free(x)));
    {
        aps_target tg;
        aps_outcome *oc;

        OOM_LOOP(aps__target_copy(&r->job.target, &tg),
                 (assert_true(target_eq(&tg, &r->job.target)), aps__target_dispose(&tg)));
        OOM_LOOP(aps__outcome_copy(ev->outcome, &oc),
                 (free(oc->stdout_tail), free(oc->stderr_tail), free(oc->error),
                  free(oc->traceback), free(oc->return_json), free(oc->error_type),
                  free(oc->worker_id), free(oc)));
    }
    OOM_LOOP(aps__event_copy(ev, &ex), (assert_true(event_eq(ev, ex)), aps_event_free(ex)));
    OOM_LOOP(aps__event_encode(ev, &ebuf, &elen), (void)0);
    OOM_LOOP(aps__event_decode(ebuf, elen, &ex),
             (assert_true(event_eq(ev, ex)), aps_event_free(ex)));
    free(ebuf);

    /* apply: a failed allocation leaves the record as it was. */
    memset(&m, 0, sizeof m);
    m.name = "new name";
    m.trigger = &t;
    m.target = s.target;
    m.labels = labels;
    m.n_labels = 2;
    m.next_run_time = NOW;
    {
        unsigned long n;
        int rc;

        for (n = 1;; n++) {
            aps__job_alloc_fail_at = n;
            rc = aps__jobrec_apply(r, &m,
                                   APS_MODIFY_NAME | APS_MODIFY_TRIGGER | APS_MODIFY_TARGET |
                                       APS_MODIFY_LABELS | APS_MODIFY_EXECUTOR,
                                   NULL, NOW + 1, &err);
            aps__job_alloc_fail_at = 0;
            if (rc == 0)
                break;
            assert_int_equal(rc, APS_ENOMEM);
            assert_string_equal(err.msg, "out of memory");
            assert_unchanged(r, buf, len);
        }
        assert_true(n > 1);
        assert_string_equal(r->job.name, "new name");
    }
    free(buf);
    aps_event_free(ev);
    aps__jobrec_free(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_generate),
        cmocka_unit_test(test_id_generate_ordered),
        cmocka_unit_test(test_job_id_generate),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors_id_name),
        cmocka_unit_test(test_errors_target),
        cmocka_unit_test(test_errors_options),
        cmocka_unit_test(test_errors_labels),
        cmocka_unit_test(test_errors_trigger),
        cmocka_unit_test(test_effective_trigger),
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test(test_record_v1_v2_and_encode_into),
        cmocka_unit_test(test_record_v3_samples),
        cmocka_unit_test(test_record_encode_rejects),
        cmocka_unit_test(test_record_truncations),
        cmocka_unit_test(test_record_v4_forged),
        cmocka_unit_test(test_record_v4_usual_values),
        cmocka_unit_test(test_record_bitflips),
        cmocka_unit_test(test_record_forged),
        cmocka_unit_test(test_event_codec),
        cmocka_unit_test(test_event_packed),
        cmocka_unit_test(test_event_v3_run_ids),
        cmocka_unit_test(test_event_names),
        cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_copies),
        cmocka_unit_test(test_apply),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_oom),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
