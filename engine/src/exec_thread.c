/*
 * The thread-pool executor: registered C functions (APS_TARGET_FUNCTION)
 * run on a fixed set of worker threads, APScheduler's ThreadPoolExecutor.
 * Runs wait in a bounded FIFO; a worker applies the misfire rule when it
 * picks a run up, runs each of its run times in turn, and hands the run back
 * with aps__run_finished.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"

typedef struct threadpool {
    aps__executor base; /* first: the executor handle */
    pthread_mutex_t mu;
    /* Sleeping workers wait on it: one token wakes one (and one per worker
     * at shutdown). A semaphore wakes exactly one worker, where a condition
     * variable would need broadcasts (glibc 2.36 loses pthread_cond_signal
     * wakeups: sourceware bug 25847). A token is posted only for a worker
     * that sleeps (`idle`): a worker takes the next queued run itself before
     * it sleeps, so a burst of runs costs at most a wake-up per sleeping
     * worker, not one (and a futex call on each side) per run. */
    sem_t work;
    size_t idle; /* workers asleep (or going to sleep) with no token posted */
    /* Tokens posted and not yet taken: at most one at a time. The worker
     * that takes it wakes the next if runs are still queued once it has its
     * own (wake_next), so a burst wakes workers in a chain, each link only
     * while work is left. Short runs are drained by the first worker
     * before a second is up: where every queued run woke its own worker,
     * wake-ups and the sleeps after them were most of the CPU at 100,000
     * runs/s (a wake-up costs tens of microseconds in a VM). */
    size_t waking;
    aps__run **queue; /* ring of max_queue entries */
    size_t head, count;
    aps__run **running; /* max_workers slots, NULL = idle */
    pthread_t *threads;
    size_t n_threads;
    int stopping;
    /* Worker threads that have not returned, and the condition destroy
     * waits on for none: a job that shuts the scheduler down runs on a
     * worker, which tp_shutdown cannot join (itself) and detaches. */
    size_t live;
    pthread_cond_t gone;
} threadpool;

static void
set_outcome_error(aps_outcome *o, aps_run_status status, const char *msg)
{
    o->status = status;
    free(o->error);
    o->error = strdup(msg);
}

/* Runs one run time of `run` (the function target). */
static void
run_one(threadpool *tp, aps__run *run, aps__run_result *res)
{
    aps_job_fn fn = NULL;
    void *userdata = NULL;
    char msg[512];

    (void)tp;
    res->started = aps__scheduler_now(run->sched);
    res->outcome.start_time = res->started;
    if (run->target.kind != APS_TARGET_FUNCTION) {
        set_outcome_error(&res->outcome, APS_RUN_SPAWN_FAILED,
                          "executor: a threadpool executor runs function targets only");
        goto done;
    }
    if (aps__scheduler_function(run->sched, run->target.u.function.name, &fn, &userdata) != 0) {
        snprintf(msg, sizeof(msg), "no function registered as \"%s\"",
                 run->target.u.function.name);
        set_outcome_error(&res->outcome, APS_RUN_SPAWN_FAILED, msg);
        goto done;
    }
    msg[0] = '\0';
    if (fn(run->job_id, run->target.u.function.arg, res->run_time, userdata, msg,
           sizeof(msg)) == 0) {
        res->outcome.status = APS_RUN_SUCCEEDED;
    } else {
        msg[sizeof(msg) - 1] = '\0';
        set_outcome_error(&res->outcome, APS_RUN_FAILED, msg[0] ? msg : "the function failed");
    }
done:
    res->outcome.end_time = aps__scheduler_now(run->sched);
}

static void
run_all(threadpool *tp, aps__run *run)
{
    for (size_t i = 0; i < run->n_run_times; i++) {
        aps__run_result *res = &run->results[i];
        aps_time now = aps__scheduler_now(run->sched);
        res->run_time = run->run_times[i];
        if (run->cancelled) {
            res->started = now;
            set_outcome_error(&res->outcome, APS_RUN_CANCELLED, "cancelled");
            continue;
        }
        if (aps__run_is_missed(run, res->run_time, now)) {
            res->missed = 1;
            res->started = now;
            continue;
        }
        run_one(tp, run, res);
    }
}

/* Under mu: wakes a sleeping worker for the queued runs, unless one is
 * already on its way. */
static void
wake_next(threadpool *tp)
{
    if (tp->count > 0 && tp->idle > 0 && tp->waking == 0) {
        tp->idle--;
        tp->waking++;
        sem_post(&tp->work);
    }
}

static void *
worker_main(void *arg)
{
    threadpool *tp = arg;
    size_t slot = 0;

    aps__run *done = NULL;

    pthread_mutex_lock(&tp->mu);
    /* Each thread owns one slot of `running`, found at start. */
    while (slot < tp->base.max_workers && tp->running[slot] != (aps__run *)tp)
        slot++;
    tp->running[slot] = NULL;
    for (;;) {
        /* Queued runs first, stopping or not (shutdown with `wait` runs
         * them; without, it emptied the queue). */
        if (tp->count == 0) {
            if (done != NULL) {
                /* Handed back before sleeping, and without the lock. */
                pthread_mutex_unlock(&tp->mu);
                aps__run_finished(done);
                done = NULL;
                pthread_mutex_lock(&tp->mu);
                continue;
            }
            if (tp->stopping)
                break;
            tp->idle++;
            pthread_mutex_unlock(&tp->mu);
            while (sem_wait(&tp->work) != 0)
                ; /* EINTR */
            pthread_mutex_lock(&tp->mu);
            if (tp->waking > 0)
                tp->waking--;
            continue;
        }
        aps__run *run = tp->queue[tp->head];
        tp->head = (tp->head + 1) % tp->base.max_queue;
        tp->count--;
        tp->running[slot] = run;
        wake_next(tp);
        pthread_mutex_unlock(&tp->mu);
        if (done != NULL) {
            aps__run_finished(done);
            done = NULL;
        }

        run_all(tp, run);

        pthread_mutex_lock(&tp->mu);
        tp->running[slot] = NULL;
        /* Handed back once the next run is taken (one lock round for
         * both), or before sleeping. */
        done = run;
    }
    tp->live--;
    pthread_cond_broadcast(&tp->gone);
    pthread_mutex_unlock(&tp->mu);
    return NULL;
}

static int
tp_submit(aps__executor *ex, aps__run *run)
{
    threadpool *tp = (threadpool *)ex;
    int rc = 0;

    pthread_mutex_lock(&tp->mu);
    if (tp->stopping) {
        rc = APS_ESTATE;
    } else if (tp->count == tp->base.max_queue) {
        rc = APS_ELIMIT;
    } else {
        tp->queue[(tp->head + tp->count) % tp->base.max_queue] = run;
        tp->count++;
        /* Awake workers take it before they sleep. */
        wake_next(tp);
    }
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

static size_t
tp_submit_many(aps__executor *ex, aps__run **runs, size_t n)
{
    threadpool *tp = (threadpool *)ex;
    size_t k = 0;

    pthread_mutex_lock(&tp->mu);
    if (!tp->stopping) {
        for (; k < n && tp->count < tp->base.max_queue; k++) {
            tp->queue[(tp->head + tp->count) % tp->base.max_queue] = runs[k];
            tp->count++;
        }
        wake_next(tp);
    }
    pthread_mutex_unlock(&tp->mu);
    return k;
}

static int
tp_cancel(aps__executor *ex, const char *run_id)
{
    threadpool *tp = (threadpool *)ex;
    int rc = APS_ENOENT;

    /* A function cannot be interrupted safely: a running one is marked and
     * its remaining run times are skipped; a queued one finishes at once. */
    pthread_mutex_lock(&tp->mu);
    for (size_t i = 0; i < tp->count; i++) {
        aps__run *r = tp->queue[(tp->head + i) % tp->base.max_queue];
        if (strcmp(r->run_id, run_id) == 0) {
            r->cancelled = 1;
            rc = 0;
        }
    }
    for (size_t i = 0; i < tp->base.max_workers; i++) {
        aps__run *r = tp->running[i];
        /* NULL: idle; tp itself: a slot no thread has claimed yet. */
        if (r != NULL && r != (aps__run *)tp && strcmp(r->run_id, run_id) == 0) {
            r->cancelled = 1;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

static void
tp_shutdown(aps__executor *ex, int wait)
{
    threadpool *tp = (threadpool *)ex;

    pthread_mutex_lock(&tp->mu);
    if (tp->stopping && tp->n_threads == 0) {
        pthread_mutex_unlock(&tp->mu);
        return;
    }
    tp->stopping = 1;
    /* With `wait`, queued runs still run, as concurrent.futures' (and so
     * APScheduler's) shutdown(wait=True) does; else they never start and
     * finish as interrupted. */
    while (!wait && tp->count > 0) {
        aps__run *run = tp->queue[tp->head];
        tp->head = (tp->head + 1) % tp->base.max_queue;
        tp->count--;
        for (size_t i = 0; i < run->n_run_times; i++) {
            run->results[i].run_time = run->run_times[i];
            run->results[i].started = aps__scheduler_now(run->sched);
            set_outcome_error(&run->results[i].outcome, APS_RUN_INTERRUPTED,
                              "interrupted: the scheduler shut down before the run started");
        }
        pthread_mutex_unlock(&tp->mu);
        aps__run_finished(run);
        pthread_mutex_lock(&tp->mu);
    }
    if (!wait) {
        for (size_t i = 0; i < tp->base.max_workers; i++) {
            if (tp->running[i] != NULL)
                tp->running[i]->cancelled = 1;
        }
    }
    size_t n = tp->n_threads;
    for (size_t i = 0; i < n; i++)
        sem_post(&tp->work);
    tp->idle = 0;
    tp->n_threads = 0;
    pthread_mutex_unlock(&tp->mu);
    for (size_t i = 0; i < n; i++) {
        /* Called from a job (aps_scheduler_shutdown in a function): its
         * own worker ends once the job returns; destroy waits for it. */
        if (pthread_equal(tp->threads[i], pthread_self()))
            pthread_detach(tp->threads[i]);
        else
            pthread_join(tp->threads[i], NULL);
    }
}

static void
tp_destroy(aps__executor *ex)
{
    threadpool *tp = (threadpool *)ex;
    if (tp == NULL)
        return;
    tp_shutdown(ex, 0);
    pthread_mutex_lock(&tp->mu);
    while (tp->live > 0)
        pthread_cond_wait(&tp->gone, &tp->mu);
    pthread_mutex_unlock(&tp->mu);
    pthread_cond_destroy(&tp->gone);
    pthread_mutex_destroy(&tp->mu);
    sem_destroy(&tp->work);
    free(tp->queue);
    free(tp->running);
    free(tp->threads);
    free(tp);
}

static void
tp_stats(aps__executor *ex, aps_executor_info *out)
{
    threadpool *tp = (threadpool *)ex;
    uint32_t running = 0;
    pthread_mutex_lock(&tp->mu);
    for (size_t i = 0; i < tp->base.max_workers; i++)
        running += tp->running[i] != NULL && tp->running[i] != (aps__run *)tp;
    out->running = running;
    out->pending = (uint32_t)tp->count;
    pthread_mutex_unlock(&tp->mu);
    out->connected_workers = 0;
}

static const aps__executor_ops threadpool_ops = {
    .submit = tp_submit,
    .cancel = tp_cancel,
    .shutdown = tp_shutdown,
    .destroy = tp_destroy,
    .stats = tp_stats,
    .submit_many = tp_submit_many,
};

int
aps__executor_threadpool_create(aps_scheduler *s, const aps_executor_def *def,
                                aps__executor **out, aps_error *err)
{
    (void)s;
    threadpool *tp = calloc(1, sizeof(*tp));
    int rc = APS_ENOMEM;

    if (tp == NULL)
        goto fail;
    tp->base.ops = &threadpool_ops;
    snprintf(tp->base.name, sizeof(tp->base.name), "%s", def->name);
    snprintf(tp->base.type, sizeof(tp->base.type), "threadpool");
    tp->base.max_workers = def->max_workers ? def->max_workers : 10;
    tp->base.max_queue = def->max_queue ? def->max_queue : 10000;
    if (tp->base.max_workers > 1024) {
        rc = APS_EINVAL;
        if (err) {
            err->code = rc;
            snprintf(err->msg, sizeof(err->msg),
                     "executors[%s].max_workers: %u is more than 1024", def->name,
                     tp->base.max_workers);
        }
        goto fail;
    }
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->gone, NULL);
    sem_init(&tp->work, 0, 0);
    tp->queue = calloc(tp->base.max_queue, sizeof(*tp->queue));
    tp->running = calloc(tp->base.max_workers, sizeof(*tp->running));
    tp->threads = calloc(tp->base.max_workers, sizeof(*tp->threads));
    if (tp->queue == NULL || tp->running == NULL || tp->threads == NULL)
        goto fail_sync;
    pthread_mutex_lock(&tp->mu);
    for (size_t i = 0; i < tp->base.max_workers; i++) {
        /* Marks the slot a starting thread will claim. */
        tp->running[i] = (aps__run *)tp;
        if (pthread_create(&tp->threads[i], NULL, worker_main, tp) != 0) {
            tp->running[i] = NULL;
            pthread_mutex_unlock(&tp->mu);
            rc = APS_ENOMEM;
            goto fail_threads;
        }
        pthread_setname_np(tp->threads[i], "aps-pool");
        tp->n_threads++;
        tp->live++;
    }
    pthread_mutex_unlock(&tp->mu);
    *out = &tp->base;
    return 0;

fail_threads:
    tp_shutdown(&tp->base, 0);
fail_sync:
    pthread_cond_destroy(&tp->gone);
    pthread_mutex_destroy(&tp->mu);
    sem_destroy(&tp->work);
fail:
    if (tp != NULL) {
        free(tp->queue);
        free(tp->running);
        free(tp->threads);
        free(tp);
    }
    if (err && rc == APS_ENOMEM) {
        err->code = rc;
        snprintf(err->msg, sizeof(err->msg), "executors[%s]: out of memory or threads",
                 def->name);
    }
    return rc;
}
