/*
 * seed_jobs: the brief's three jobs through the C client, built from plain
 * protobuf-c messages on the stack, then their runs as they happen.
 *
 *   seed_jobs [SECONDS]     (default 14; the daemon: $APSD_SERVER or
 *                            127.0.0.1:50051; $APSD_TOKEN if set)
 *
 *   seed-cron      cron, every 5 s      /bin/echo 定时任务
 *   seed-once      a date 12 s ahead    /bin/echo 一次性任务
 *   seed-interval  interval of 3 s      /bin/echo 循环任务
 *
 * Jobs with those ids are replaced; they are removed again at the end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apsd/client.h"

static int
add(apsc_client *c, const char *id, Apsd__V1__Trigger *trigger, char *word, apsc_error *err)
{
    Apsd__V1__AddJobRequest req = APSD__V1__ADD_JOB_REQUEST__INIT;
    Apsd__V1__Job job = APSD__V1__JOB__INIT;
    Apsd__V1__Target target = APSD__V1__TARGET__INIT;
    Apsd__V1__CommandTarget cmd = APSD__V1__COMMAND_TARGET__INIT;
    char *argv[] = {"/bin/echo", word};
    Apsd__V1__Job *added = NULL;
    char when[APSC_TIME_BUFSZ];

    cmd.n_argv = 2;
    cmd.argv = argv;
    target.kind_case = APSD__V1__TARGET__KIND_COMMAND;
    target.command = &cmd;
    job.id = (char *)id;
    job.trigger = trigger;
    job.target = &target;
    req.job = &job;
    req.replace_existing = 1;
    int rc = apsc_add_job(c, &req, &added, err); /* req is borrowed; added is ours */
    if (rc != 0)
        return rc;
    apsc_format_time(added->next_run_time->seconds, added->next_run_time->nanos, when);
    printf("added %-13s next run %s\n", added->id, when);
    apsc_free(added);
    return 0;
}

int
main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 14;
    apsc_options o = APSC_OPTIONS_INIT;
    apsc_client *c = NULL;
    apsc_stream *events = NULL;
    apsc_error err = APSC_ERROR_INIT;
    int rc;

    o.target = getenv("APSD_SERVER");
    o.token = getenv("APSD_TOKEN");
    if ((rc = apsc_client_create(&o, &c, &err)) != 0)
        goto fail;

    /* Subscribe first (from the newest sequence on), so no run is missed. */
    Apsd__V1__SubscribeEventsRequest sub = APSD__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    Apsd__V1__EventType executed = APSD__V1__EVENT_TYPE__EVENT_TYPE_JOB_EXECUTED;
    char *ids[] = {"seed-cron", "seed-once", "seed-interval"};
    sub.n_types = 1;
    sub.types = &executed;
    sub.n_job_ids = 3;
    sub.job_ids = ids;
    if ((rc = apsc_subscribe_events(c, &sub, NULL, &events, &err)) != 0)
        goto fail;

    /* cron: second "*" + "/5", i.e. every 5 s */
    Apsd__V1__Trigger t1 = APSD__V1__TRIGGER__INIT;
    Apsd__V1__CronTrigger cron = APSD__V1__CRON_TRIGGER__INIT;
    cron.second = "*/5";
    t1.kind_case = APSD__V1__TRIGGER__KIND_CRON;
    t1.cron = &cron;
    /* a date 12 s from now */
    Apsd__V1__Trigger t2 = APSD__V1__TRIGGER__INIT;
    Apsd__V1__DateTrigger date = APSD__V1__DATE_TRIGGER__INIT;
    Google__Protobuf__Timestamp once = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    once.seconds = (int64_t)time(NULL) + 12;
    date.run_date = &once;
    t2.kind_case = APSD__V1__TRIGGER__KIND_DATE;
    t2.date = &date;
    /* every 3 s */
    Apsd__V1__Trigger t3 = APSD__V1__TRIGGER__INIT;
    Apsd__V1__IntervalTrigger iv = APSD__V1__INTERVAL_TRIGGER__INIT;
    iv.seconds = 3;
    t3.kind_case = APSD__V1__TRIGGER__KIND_INTERVAL;
    t3.interval = &iv;

    if ((rc = add(c, "seed-cron", &t1, "定时任务", &err)) != 0 ||
        (rc = add(c, "seed-once", &t2, "一次性任务", &err)) != 0 ||
        (rc = add(c, "seed-interval", &t3, "循环任务", &err)) != 0)
        goto fail;

    time_t end = time(NULL) + seconds;
    while (time(NULL) < end) {
        Apsd__V1__SubscribeEventsResponse *item = NULL;
        rc = apsc_events_next(events, (int64_t)(end - time(NULL)) * 1000, &item, &err);
        if (rc == APSC_ETIMEDOUT)
            break;
        if (rc != 0)
            goto fail;
        if (item->item_case == APSD__V1__SUBSCRIBE_EVENTS_RESPONSE__ITEM_EVENT) {
            const Apsd__V1__Event *ev = item->event;
            char at[APSC_TIME_BUFSZ];
            apsc_format_time(ev->time->seconds, ev->time->nanos, at);
            printf("%s  %-13s  %.*s", at, ev->job_id, (int)ev->outcome->stdout_tail.len,
                   (const char *)ev->outcome->stdout_tail.data);
        }
        apsc_free(item);
    }
    apsc_stream_close(events);
    events = NULL;
    for (int i = 0; i < 3; i++) {
        Apsd__V1__RemoveJobRequest rm = APSD__V1__REMOVE_JOB_REQUEST__INIT;
        Apsd__V1__RemoveJobResponse *resp = NULL;
        rm.job_id = ids[i];
        /* seed-once has removed itself after its run: NOT_FOUND is fine. */
        if (apsc_remove_job(c, &rm, &resp, &err) != 0 && err.code != GRPC_STATUS_NOT_FOUND) {
            rc = APSC_ERPC;
            goto fail;
        }
        apsc_free(resp);
    }
    apsc_client_destroy(c);
    apsc_error_dispose(&err);
    return 0;

fail:
    fprintf(stderr, "seed_jobs: %s: %s\n", apsc_status_name(err.code),
            err.message ? err.message : apsc_strerror(rc));
    apsc_stream_close(events);
    apsc_client_destroy(c);
    apsc_error_dispose(&err);
    return 1;
}
