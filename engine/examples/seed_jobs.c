/*
 * The three jobs of the original brief, with the embeddable engine:
 *
 *   a cron job every fifth second   (APScheduler: trigger='cron', second set to "every 5")
 *   a one-shot job 12 s from now    (next_run_time=datetime.now() + 12 s)
 *   an interval job every 3 s       (trigger='interval', seconds=3)
 *
 * run by a BlockingScheduler (APS_RUN_BLOCKING) with a registered C
 * function. It prints each run and stops by itself after `seconds`
 * (default 20; the first argument changes it).
 *
 *   bazel run //engine/examples:seed_jobs -- 15
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apsd/engine.h"

static aps_scheduler *sched;
static aps_time stop_at;

/* aps_test(x): print the time and the argument, as the brief's function. */
static int
aps_test(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
         size_t error_len)
{
    char now[64], due[64];
    (void)job_id;
    (void)userdata;
    (void)error;
    (void)error_len;
    aps_time_format(aps_time_now(), NULL, now, sizeof(now));
    aps_time_format(scheduled, NULL, due, sizeof(due));
    printf("%s  %s  (due %s)\n", now, arg, due);
    fflush(stdout);
    return 0;
}

/* Stops the blocking scheduler once the demo has run long enough. */
static void
on_event(const aps_event *ev, void *userdata)
{
    (void)userdata;
    if (ev->type == APS_EVENT_JOB_EXECUTED && aps_time_now() >= stop_at)
        aps_scheduler_shutdown(sched, 0);
}

static int
add(const char *id, const aps_trigger_spec *trigger, const char *arg, aps_time next_run_time)
{
    aps_job_spec spec;
    aps_error err;
    memset(&spec, 0, sizeof(spec));
    spec.id = id;
    spec.trigger = trigger;
    spec.target.kind = APS_TARGET_FUNCTION;
    spec.target.u.function.name = "aps_test";
    spec.target.u.function.arg = (char *)arg;
    spec.coalesce = -1;
    spec.next_run_time = next_run_time;
    if (aps_job_add(sched, &spec, NULL, NULL, &err) != 0) {
        fprintf(stderr, "add_job %s: %s\n", id, err.msg);
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    aps_error err;
    aps_trigger_spec cron, interval;
    int seconds = argc > 1 ? atoi(argv[1]) : 20;

    if (aps_scheduler_create(NULL, &sched, &err) != 0) {
        fprintf(stderr, "scheduler: %s\n", err.msg);
        return 1;
    }
    aps_scheduler_register_function(sched, "aps_test", aps_test, NULL);
    aps_scheduler_add_listener(sched, on_event, APS_EVENT_MASK(APS_EVENT_JOB_EXECUTED), NULL);

    memset(&cron, 0, sizeof(cron));
    cron.kind = APS_TRIGGER_CRON;
    cron.u.cron.second = "*/5";
    cron.u.cron.start_date = cron.u.cron.end_date = APS_TIME_NONE;

    memset(&interval, 0, sizeof(interval));
    interval.kind = APS_TRIGGER_INTERVAL;
    interval.u.interval.seconds = 3;
    interval.u.interval.start_date = interval.u.interval.end_date = APS_TIME_NONE;

    aps_time now = aps_time_now();
    stop_at = now + (aps_time)seconds * 1000000;
    if (add("cron", &cron, "定时任务", APS_TIME_NONE) ||
        add("once", NULL, "一次性任务", now + 12 * 1000000) ||
        add("interval", &interval, "循环任务", APS_TIME_NONE)) {
        aps_scheduler_destroy(sched);
        return 1;
    }
    printf("started: cron second=*/5, a one-shot job in 12 s, an interval of 3 s; %d s\n",
           seconds);
    fflush(stdout);
    int rc = aps_scheduler_start(sched, APS_RUN_BLOCKING);
    aps_scheduler_destroy(sched);
    return rc == 0 ? 0 : 1;
}
