/*
 * Writes the seed corpus of record_fuzz.c: a few encoded job records (each
 * trigger and target kind, running and pending runs, a lateness ring) and
 * events (with and without an outcome), plus JSON snippets. Run once after
 * a format change:
 *   cc -std=c11 -D_GNU_SOURCE -Iengine/include -iquote engine/src \
 *     engine/fuzz/gen_record_corpus.c engine/src/job.c engine/src/codec.c \
 *     engine/src/trigger.c engine/src/cron.c engine/src/tz.c \
 *     engine/src/timeutil.c -lcrypto -lm -o /tmp/gen && \
 *     /tmp/gen engine/fuzz/corpus/record
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apsd/engine.h"
#include "job.h"

#define SEC INT64_C(1000000)
#define NOW (INT64_C(1772366400) * SEC)

static const char *dir;

static void
put(const char *name, const void *buf, size_t len)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static aps_trigger_spec
none(aps_trigger_kind k)
{
    aps_trigger_spec t;

    memset(&t, 0, sizeof t);
    t.kind = k;
    t.u.cron.start_date = t.u.cron.end_date = APS_TIME_NONE;
    if (k == APS_TRIGGER_INTERVAL)
        t.u.interval.start_date = t.u.interval.end_date = APS_TIME_NONE;
    if (k == APS_TRIGGER_DATE)
        t.u.date.run_date = APS_TIME_NONE;
    if (k == APS_TRIGGER_CALENDAR_INTERVAL)
        t.u.calendar_interval.start_date = t.u.calendar_interval.end_date = APS_TIME_NONE;
    return t;
}

static void
record(const char *name, const aps_job_spec *s, int extras)
{
    aps__jobrec *r;
    aps_error err;
    void *buf;
    size_t len;
    int i;

    if (aps__jobrec_from_spec(s, "Europe/Paris", NOW, &r, &err)) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        exit(1);
    }
    if (extras) {
        r->running = calloc(1, sizeof *r->running);
        r->pending = calloc(2, sizeof *r->pending);
        r->running[0].run_times = malloc(2 * sizeof(aps_time));
        r->pending[0].run_times = malloc(sizeof(aps_time));
        if (!r->running || !r->pending || !r->running[0].run_times || !r->pending[0].run_times)
            exit(1);
        r->n_running = 1;
        strcpy(r->running[0].run_id, "0123456789abcdef0123456789abcdef");
        strcpy(r->running[0].executor, "default");
        r->running[0].started = NOW;
        r->running[0].run_times[0] = NOW - SEC;
        r->running[0].run_times[1] = NOW;
        r->running[0].n_run_times = 2;
        r->n_pending = 2;
        r->pending[0].run_times[0] = NOW + SEC;
        r->pending[0].n_run_times = 1;
        r->pending[1].backfill = 1;
        r->job.stats.runs = 5;
        strcpy(r->job.stats.last_error, "exit status 1");
        for (i = 0; i < extras; i++)
            aps__jobrec_add_lateness(r, i * 1000);
    }
    if (aps__jobrec_encode(r, &buf, &len))
        exit(1);
    put(name, buf, len);
    free(buf);
    aps__jobrec_free(r);
}

int
main(int argc, char **argv)
{
    static char *args[] = {"/bin/echo", "hello"};
    static char *env[] = {"LANG=C"};
    aps_trigger_spec cron = none(APS_TRIGGER_CRON), iv = none(APS_TRIGGER_INTERVAL);
    aps_trigger_spec date = none(APS_TRIGGER_DATE), cal = none(APS_TRIGGER_CALENDAR_INTERVAL);
    aps_trigger_spec kids[2], any = none(APS_TRIGGER_ANY_OF), all = none(APS_TRIGGER_ALL_OF);
    aps_label labels[2] = {{"team", "infra"}, {"tier", ""}};
    aps_job_spec s;
    aps_event ev;
    aps_outcome o;
    aps_time rts[2] = {NOW - SEC, NOW};
    void *buf;
    size_t len;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    cron.u.cron.day_of_week = "mon-fri";
    cron.u.cron.hour = "9";
    cron.u.cron.minute = "*/15";
    iv.u.interval.minutes = 5;
    cal.u.calendar_interval.months = 1;
    cal.u.calendar_interval.hour = 3;
    kids[0] = cron;
    kids[1] = iv;
    all.u.combo.triggers = kids;
    all.u.combo.count = 2;
    any.u.combo.triggers = &all;
    any.u.combo.count = 1;
    any.jitter_us = 10 * SEC;

    memset(&s, 0, sizeof s);
    s.id = "cron-command";
    s.trigger = &cron;
    s.target.kind = APS_TARGET_COMMAND;
    s.target.u.command.argv = args;
    s.target.u.command.argc = 2;
    s.target.u.command.env = env;
    s.target.u.command.envc = 1;
    s.target.u.command.cwd = "/tmp";
    s.target.u.command.timeout_us = 30 * SEC;
    s.coalesce = -1;
    s.labels = labels;
    s.n_labels = 2;
    s.next_run_time = APS_TIME_NONE;
    record("job-cron-command", &s, 3);

    s.id = "interval-remote";
    s.trigger = &iv;
    memset(&s.target, 0, sizeof s.target);
    s.target.kind = APS_TARGET_REMOTE;
    s.target.u.remote.task = "app.jobs:sync";
    s.target.u.remote.args_json = "[1, \"a\"]";
    s.target.u.remote.kwargs_json = "{\"k\": null}";
    s.misfire = APS_MISFIRE_DURATION;
    s.misfire_grace_us = 5 * SEC;
    s.n_labels = 0;
    record("job-interval-remote", &s, 130);

    s.id = "date-function";
    s.trigger = &date;
    memset(&s.target, 0, sizeof s.target);
    s.target.kind = APS_TARGET_FUNCTION;
    s.target.u.function.name = "tick";
    s.paused = 1;
    record("job-date-function", &s, 0);

    s.id = "calendar";
    s.trigger = &cal;
    s.paused = 0;
    s.next_run_time = NOW + 60 * SEC;
    record("job-calendar", &s, 0);

    s.id = "combo";
    s.trigger = &any;
    s.overlap = APS_OVERLAP_QUEUE_ALL;
    s.max_instances = 2;
    record("job-combo", &s, 1);

    memset(&ev, 0, sizeof ev);
    ev.sequence = 7;
    ev.type = APS_EVENT_JOB_SUBMITTED;
    ev.time = NOW;
    ev.job_id = "combo";
    ev.jobstore = "default";
    ev.executor = "default";
    ev.run_times = rts;
    ev.n_run_times = 2;
    ev.run_id = "0123456789abcdef0123456789abcdef";
    if (aps__event_encode(&ev, &buf, &len))
        return 1;
    put("event-submitted", buf, len);
    free(buf);

    memset(&o, 0, sizeof o);
    o.status = APS_RUN_FAILED;
    o.has_exit_code = 1;
    o.exit_code = 2;
    o.stdout_tail = "out\n";
    o.stdout_len = 4;
    o.stderr_tail = "err\0bin";
    o.stderr_len = 7;
    o.stderr_truncated = 1;
    o.start_time = NOW;
    o.end_time = NOW + SEC;
    o.error = "exit status 2";
    ev.type = APS_EVENT_JOB_ERROR;
    ev.outcome = &o;
    ev.message = "failed";
    if (aps__event_encode(&ev, &buf, &len))
        return 1;
    put("event-error", buf, len);
    free(buf);

    memset(&ev, 0, sizeof ev);
    ev.type = APS_EVENT_SCHEDULER_STARTED;
    ev.time = NOW;
    if (aps__event_encode(&ev, &buf, &len))
        return 1;
    put("event-started", buf, len);
    free(buf);

    put("json-object", "{\"a\": [1, 2.5e3, true, null, \"\\u00e9\"]}", 36);
    return 0;
}
