/*
 * bench_remote: remote dispatch round trips per second through the engine
 * API: jobs with a `remote` target fire, their runs wait in a "workers"
 * executor's queue, worker threads take them (aps_worker_take, with a
 * lease) and complete them (aps_worker_complete), and the scheduler records
 * each result (JOB_EXECUTED). A run counts when its JOB_EXECUTED reaches an
 * event subscriber (aps_subscribe, as SubscribeEvents would read it; a
 * listener may skip events when the loop falls behind its ring), so every
 * figure is end to end through the engine, without gRPC.
 *
 *   bazel run -c opt //tools/bench/remote:bench_remote -- [jobs] [rounds]
 *
 * Two measures per combination of worker threads and take batch size:
 * - fire: N one-shot jobs (memory store, misfire unlimited) become due when
 *   the scheduler starts (background mode, real clock) with the workers
 *   already attached: start to the N-th JOB_EXECUTED. Includes the
 *   scheduler's firing (job records, JOB_SUBMITTED, removal of the done
 *   jobs), so it is the rate a busy daemon could sustain;
 * - drain: the same N runs already queued (submitted before the workers
 *   attach): first take to the N-th JOB_EXECUTED, i.e. take + complete +
 *   the recording of the result.
 * The best of `rounds` (default 3) is printed. The machine has 2 cores,
 * shared by the scheduler loop and the workers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apsd/engine.h"

typedef struct bench {
    aps_scheduler *s;
    aps_subscriber *sub;
    unsigned long executed, submitted, errors;
    atomic_int stop, go;
    size_t batch;
} bench;

typedef struct worker {
    bench *b;
    aps_worker *w;
    unsigned long taken;
} worker;

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads events until *counter reaches want. */
static int
wait_for(bench *b, unsigned long *counter, unsigned long want, double limit_s)
{
    double t0 = now_s();

    while (*counter < want) {
        aps_event *ev = NULL;
        uint64_t gap = 0;
        int rc = aps_subscriber_next(b->sub, 100000, &ev, &gap);

        if (rc == APS_ENOENT) {
            if (now_s() - t0 > limit_s)
                return -1;
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "events: %s\n", aps_strerror(rc));
            return -1;
        }
        if (ev->type == APS_EVENT_JOB_EXECUTED)
            b->executed++;
        else if (ev->type == APS_EVENT_JOB_SUBMITTED)
            b->submitted++;
        else
            b->errors++;
        aps_event_free(ev);
    }
    return 0;
}

static void *
worker_main(void *arg)
{
    worker *wk = arg;
    bench *b = wk->b;
    static const aps_task_result ok = {1, "{\"ok\": true}", NULL, NULL, NULL};

    while (!atomic_load(&b->go))
        usleep(100);
    while (!atomic_load(&b->stop)) {
        aps_dispatch *d = NULL;
        size_t n = 0;

        if (aps_worker_take(wk->w, b->batch, 50000, &d, &n) != 0)
            break;
        for (size_t i = 0; i < n; i++) {
            if (aps_worker_complete(b->s, d[i].run_id, d[i].lease_token, &ok) != 0)
                fprintf(stderr, "complete failed\n");
        }
        wk->taken += n;
        aps_dispatch_free(d, n);
    }
    return NULL;
}

/* One measurement: returns runs/s, or a negative value on failure. */
static double
run_once(size_t jobs, int n_workers, size_t batch, int drain)
{
    aps_executor_def ex = {.name = "remote", .type = "workers", .max_workers = 100000,
                           .max_queue = (uint32_t)jobs, .lease_us = 60 * 1000000LL};
    aps_scheduler_config cfg;
    aps_error err;
    bench b;
    worker wk[16];
    pthread_t th[16];
    double rate = -1, t0;
    char id[32];

    memset(&b, 0, sizeof b);
    memset(&cfg, 0, sizeof cfg);
    cfg.executors = &ex;
    cfg.n_executors = 1;
    cfg.event_max_count = 4 * jobs + 1000; /* the subscriber must not lag past it */
    b.batch = batch;
    if (aps_scheduler_create(&cfg, &b.s, &err) != 0) {
        fprintf(stderr, "create: %s\n", err.msg);
        return -1;
    }
    if (aps_subscribe(b.s, UINT64_MAX,
                      APS_EVENT_MASK(APS_EVENT_JOB_EXECUTED) |
                          APS_EVENT_MASK(APS_EVENT_JOB_SUBMITTED) |
                          APS_EVENT_MASK(APS_EVENT_JOB_ERROR) |
                          APS_EVENT_MASK(APS_EVENT_JOB_MISSED),
                      NULL, &b.sub) != 0) {
        fprintf(stderr, "subscribe failed\n");
        aps_scheduler_destroy(b.s);
        return -1;
    }
    aps_time due = aps_time_now();
    for (size_t i = 0; i < jobs; i++) {
        aps_job_spec j;

        memset(&j, 0, sizeof j);
        snprintf(id, sizeof id, "job-%06zu", i);
        j.id = id;
        j.target.kind = APS_TARGET_REMOTE;
        j.target.u.remote.task = "bench.tasks:noop";
        j.target.u.remote.args_json = "[1, 2, 3]";
        j.executor = "remote";
        j.coalesce = -1;
        j.misfire = APS_MISFIRE_UNLIMITED;
        j.next_run_time = due;
        if (aps_job_add(b.s, &j, NULL, NULL, &err) != 0) {
            fprintf(stderr, "add: %s\n", err.msg);
            goto out;
        }
    }
    for (int i = 0; i < n_workers; i++) {
        aps_worker_options o;

        memset(&o, 0, sizeof o);
        snprintf(id, sizeof id, "bench-%d", i);
        o.worker_id = id;
        o.max_in_flight = (uint32_t)batch;
        wk[i].b = &b;
        wk[i].taken = 0;
        if (aps_worker_attach(b.s, &o, &wk[i].w, &err) != 0) {
            fprintf(stderr, "attach: %s\n", err.msg);
            goto out;
        }
        pthread_create(&th[i], NULL, worker_main, &wk[i]);
    }
    if (drain) {
        aps_scheduler_start(b.s, APS_RUN_BACKGROUND);
        if (wait_for(&b, &b.submitted, jobs, 60) != 0)
            goto stop;
        t0 = now_s();
        atomic_store(&b.go, 1);
    } else {
        atomic_store(&b.go, 1);
        t0 = now_s();
        aps_scheduler_start(b.s, APS_RUN_BACKGROUND);
    }
    if (wait_for(&b, &b.executed, jobs, 120) == 0)
        rate = (double)jobs / (now_s() - t0);
stop:
    atomic_store(&b.stop, 1);
    atomic_store(&b.go, 1);
    for (int i = 0; i < n_workers; i++) {
        pthread_join(th[i], NULL);
        aps_worker_detach(wk[i].w);
    }
    if (b.errors != 0) {
        fprintf(stderr, "%lu runs failed or were missed\n", b.errors);
        rate = -1;
    }
out:
    aps_subscriber_close(b.sub);
    aps_scheduler_destroy(b.s);
    return rate;
}

int
main(int argc, char **argv)
{
    static const int workers[] = {1, 4};
    static const size_t batches[] = {1, 16, 64};
    size_t jobs = argc > 1 ? (size_t)atol(argv[1]) : 20000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;

    if (jobs == 0 || rounds <= 0) {
        fprintf(stderr, "usage: bench_remote [jobs] [rounds]\n");
        return 2;
    }
    printf("bench_remote: %zu one-shot remote jobs, memory store, best of %d\n", jobs, rounds);
    printf("%-8s %-6s %14s %14s\n", "workers", "batch", "fire runs/s", "drain runs/s");
    for (size_t wi = 0; wi < sizeof workers / sizeof workers[0]; wi++) {
        for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
            double best[2] = {-1, -1};
            for (int mode = 0; mode < 2; mode++) {
                for (int r = 0; r < rounds; r++) {
                    double v = run_once(jobs, workers[wi], batches[bi], mode);
                    if (v < 0) {
                        fprintf(stderr, "a round failed\n");
                        return 1;
                    }
                    if (v > best[mode])
                        best[mode] = v;
                }
            }
            printf("%-8d %-6zu %14.0f %14.0f\n", workers[wi], batches[bi], best[0], best[1]);
            fflush(stdout);
        }
    }
    return 0;
}
