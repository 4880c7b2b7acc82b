/*
 * The remote-workers executor ("workers"): runs of remote tasks
 * (APS_TARGET_REMOTE) wait in named queues until a worker program takes
 * them with a lease and reports the result (engine.h, "Remote workers";
 * proto/apsd/v1/workers.proto).
 *
 * Why one shared registry (a "hub") per scheduler rather than state per
 * executor: a queue name is global (a worker attaches to "q", not to an
 * executor), and complete/extend name only a run id. With one registry a
 * take looks at one FIFO and a complete at one hash table, instead of
 * walking every executor under as many locks. The first "workers" executor
 * of a scheduler creates the hub; the others find it by walking the
 * scheduler's executors (aps__scheduler_executor_at) and share it. The hub
 * is reference-counted by its executors and by attached workers, so a
 * worker handle may be detached after the scheduler is gone. The executor
 * keeps its own limits (max_queue, max_workers, lease_us) for its runs.
 *
 * Locking: one mutex guards the hub. Two things are never done under it:
 * aps__run_finished (it takes the scheduler's lock) and the workers' notify
 * callbacks (their owner may hold its own lock around engine calls, so
 * calling it under ours could deadlock). Both are collected in an `after`
 * list and run once the mutex is released.
 *
 * Leases sit in a binary min-heap by deadline, and queued runs in another
 * by the time their last run time will be missed. One timer thread per hub
 * waits for the earliest of both on a CLOCK_MONOTONIC condvar, and judges
 * it on the scheduler's clock (aps__scheduler_now), so an injected test
 * clock works: when that clock is not the real one, the thread polls it.
 * Complete and extend also judge expiry themselves, so a late call never
 * succeeds because the timer thread has not run yet.
 *
 * Costs: submit O(1) plus the queue's workers (to wake them); take O(1)
 * per run taken, plus the runs skipped (other tasks for a worker with a
 * task filter, or runs of an executor at max_workers); complete and extend
 * O(1) expected plus O(log leases); a queue name lookup walks the queues.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "exec.h"
#include "job.h"

#define US_PER_SEC INT64_C(1000000)
#define LEASE_DEFAULT_US (60 * US_PER_SEC)
#define MAX_WORKERS_DEFAULT 10
#define MAX_WORKERS_LIMIT 1000000u
#define MAX_QUEUE_DEFAULT 10000
/* Timer thread: how often an injected clock is polled, and the longest
 * sleep on the real clock (it bounds the effect of a wall-clock jump). */
#define POLL_US (20 * 1000)
#define WAIT_MAX_US US_PER_SEC
/* The scheduler clock counts as injected when it is this far from the
 * real one. */
#define INJECTED_SKEW_US (50 * 1000)
#define TABLE_INITIAL 1024
#define TOKEN_LEN 32

/* For the tests: expires the due leases now (see the bottom). */
int aps__executor_remote_tick(aps__executor *ex);

enum { RUN_QUEUED = 1, RUN_LEASED, RUN_DONE };

typedef struct hub hub;
typedef struct rqueue rqueue;
typedef struct rrun rrun;
typedef struct remote_ex remote_ex;

/* A binary min-heap of runs by `deadline` (libuv's timer heap, as an array). */
typedef struct rheap {
    rrun **v;
    size_t n, cap;
} rheap;

#define NOT_IN_HEAP SIZE_MAX

/* A run the hub knows: waiting in a queue, leased, or finished (kept as a
 * tombstone so complete and extend can answer precisely). */
struct rrun {
    char run_id[33];
    char token[33];       /* "" until leased */
    int state;            /* RUN_* */
    int completed;        /* DONE through aps_worker_complete */
    uint64_t result_hash; /* of that completion, for duplicate detection */
    aps__run *run;        /* QUEUED/LEASED; handed back when DONE */
    remote_ex *ex;        /* QUEUED/LEASED */
    rqueue *q;            /* QUEUED */
    aps_worker *w;        /* LEASED by an attached worker; NULL once detached */
    char worker_id[APS_WORKER_ID_MAX + 1]; /* who took it: outlives the handle */
    aps_time taken;
    aps_time deadline;    /* LEASED: the lease's; QUEUED: when every run
                             time will be missed (misfire_grace_time) */
    int64_t lease_us;     /* as granted at take */
    size_t heap_i;        /* index in `leases` (LEASED) or `misses` (QUEUED);
                             NOT_IN_HEAP when in neither */
    rrun *prev, *next;    /* QUEUED: queue FIFO; LEASED: worker's list;
                             DONE: tombstone FIFO */
    rrun *hnext;          /* hash chain */
};

struct rqueue {
    char name[APS_WORKER_QUEUE_MAX + 1];
    rrun *head, *tail;
    size_t n;
    aps_worker *workers; /* attached workers, linked by qprev/qnext */
    size_t n_workers;
    rqueue *next;
};

struct aps_worker {
    hub *h;
    rqueue *q;
    char *id;
    uint32_t max_in_flight, in_flight;
    char **tasks;
    size_t n_tasks;
    int64_t lease_us;
    aps_worker_notify_fn notify;
    void *userdata;
    /* notify protocol: `armed` once take/cancels were called since the last
     * notify; `listed` while on an `after` list (being notified);
     * `renotify` when a wake came while listed. */
    int armed, listed, renotify, detached;
    aps_worker *nnext;
    unsigned waiting;   /* threads blocked in take */
    pthread_cond_t cv;  /* take waits here; detach waits for !listed */
    rrun *leased;       /* LEASED runs held */
    char (*cancels)[33];
    size_t n_cancels, cap_cancels;
    aps_worker *qprev, *qnext;
};

struct remote_ex {
    aps__executor base; /* first: the executor handle */
    hub *h;
    int64_t lease_us;
    size_t n_queued, n_leased;
    int stopped;
};

struct hub {
    pthread_mutex_t mu;
    pthread_cond_t timer_cv;
    aps_scheduler *s;
    unsigned refs;        /* executors not destroyed + attached workers */
    unsigned n_live;      /* executors not shut down */
    remote_ex **execs;    /* not destroyed */
    size_t n_execs;
    rqueue *queues;
    rrun **table;         /* run id -> run, chained */
    size_t table_cap, table_n;
    rheap leases;         /* LEASED runs by lease deadline */
    rheap misses;         /* QUEUED runs with a grace limit, by the time
                             they can no longer run */
    rrun *done_head, *done_tail; /* tombstones, oldest first */
    size_t n_done;
    size_t n_workers;
    pthread_t timer;
    int have_timer, timer_stop;
};

/* What to do once the hub's mutex is released. */
typedef struct after {
    aps__run *finished; /* linked through ->next */
    aps_worker *notify; /* linked through ->nnext */
} after;

static int rx_submit(aps__executor *ex, aps__run *run);
static int rx_cancel(aps__executor *ex, const char *run_id);
static void rx_shutdown(aps__executor *ex, int wait);
static void rx_destroy(aps__executor *ex);
static void rx_stats(aps__executor *ex, aps_executor_info *out);

static const aps__executor_ops remote_ops = {
    .submit = rx_submit,
    .cancel = rx_cancel,
    .shutdown = rx_shutdown,
    .destroy = rx_destroy,
    .stats = rx_stats,
};

static int
set_err(aps_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
set_err(aps_error *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

static void
mono_after(int64_t us, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(us / US_PER_SEC);
    ts->tv_nsec += (long)(us % US_PER_SEC) * 1000;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static const char *
run_queue_name(const aps__run *run)
{
    const char *q = run->target.u.remote.queue;
    return q != NULL && q[0] != '\0' ? q : "default";
}

/* ---- the run table ---------------------------------------------------------- */

static size_t
id_hash(const char *id)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *id; id++) {
        h ^= (unsigned char)*id;
        h *= UINT64_C(1099511628211);
    }
    return (size_t)h;
}

static rrun *
table_find(hub *h, const char *id)
{
    for (rrun *r = h->table[id_hash(id) & (h->table_cap - 1)]; r; r = r->hnext) {
        if (strcmp(r->run_id, id) == 0)
            return r;
    }
    return NULL;
}

static void
table_insert(hub *h, rrun *r)
{
    if (h->table_n >= h->table_cap) {
        /* Grow at load 1. A failed grow is benign: chains get longer. */
        size_t cap = h->table_cap * 2;
        rrun **t = calloc(cap, sizeof(*t));
        if (t != NULL) {
            for (size_t i = 0; i < h->table_cap; i++) {
                for (rrun *x = h->table[i], *next; x; x = next) {
                    next = x->hnext;
                    size_t b = id_hash(x->run_id) & (cap - 1);
                    x->hnext = t[b];
                    t[b] = x;
                }
            }
            free(h->table);
            h->table = t;
            h->table_cap = cap;
        }
    }
    size_t b = id_hash(r->run_id) & (h->table_cap - 1);
    r->hnext = h->table[b];
    h->table[b] = r;
    h->table_n++;
}

static void
table_remove(hub *h, rrun *r)
{
    rrun **p = &h->table[id_hash(r->run_id) & (h->table_cap - 1)];
    while (*p != NULL && *p != r)
        p = &(*p)->hnext;
    if (*p == r) {
        *p = r->hnext;
        h->table_n--;
    }
}

/* ---- the deadline heaps --------------------------------------------------- */

static void
heap_set(rheap *hp, size_t i, rrun *r)
{
    hp->v[i] = r;
    r->heap_i = i;
}

static void
heap_up(rheap *hp, size_t i)
{
    rrun *r = hp->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (hp->v[parent]->deadline <= r->deadline)
            break;
        heap_set(hp, i, hp->v[parent]);
        i = parent;
    }
    heap_set(hp, i, r);
}

static void
heap_down(rheap *hp, size_t i)
{
    rrun *r = hp->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= hp->n)
            break;
        if (c + 1 < hp->n && hp->v[c + 1]->deadline < hp->v[c]->deadline)
            c++;
        if (r->deadline <= hp->v[c]->deadline)
            break;
        heap_set(hp, i, hp->v[c]);
        i = c;
    }
    heap_set(hp, i, r);
}

static int
heap_reserve(rheap *hp)
{
    if (hp->n < hp->cap)
        return 0;
    size_t cap = hp->cap ? hp->cap * 2 : 64;
    rrun **v = realloc(hp->v, cap * sizeof(*v));
    if (v == NULL)
        return APS_ENOMEM;
    hp->v = v;
    hp->cap = cap;
    return 0;
}

/* Needs heap_reserve first. Wakes the timer when `r` becomes the earliest. */
static void
heap_push(hub *h, rheap *hp, rrun *r)
{
    heap_set(hp, hp->n++, r);
    heap_up(hp, r->heap_i);
    if (r->heap_i == 0)
        pthread_cond_broadcast(&h->timer_cv);
}

static void
heap_remove(rheap *hp, rrun *r)
{
    if (r->heap_i == NOT_IN_HEAP)
        return;
    size_t i = r->heap_i;
    rrun *last = hp->v[--hp->n];
    r->heap_i = NOT_IN_HEAP;
    if (last != r) {
        heap_set(hp, i, last);
        heap_up(hp, i);
        heap_down(hp, last->heap_i);
    }
}

/* After r's deadline changed. */
static void
heap_fix(hub *h, rheap *hp, rrun *r)
{
    heap_up(hp, r->heap_i);
    heap_down(hp, r->heap_i);
    if (r->heap_i == 0)
        pthread_cond_broadcast(&h->timer_cv);
}

/* ---- queues ----------------------------------------------------------------- */

static rqueue *
queue_get(hub *h, const char *name, int create)
{
    for (rqueue *q = h->queues; q; q = q->next) {
        if (strcmp(q->name, name) == 0)
            return q;
    }
    if (!create)
        return NULL;
    rqueue *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    snprintf(q->name, sizeof(q->name), "%s", name);
    q->next = h->queues;
    h->queues = q;
    return q;
}

/* Frees a queue nobody uses, so queue names do not accumulate. */
static void
queue_gc(hub *h, rqueue *q)
{
    if (q->n > 0 || q->n_workers > 0)
        return;
    for (rqueue **p = &h->queues; *p; p = &(*p)->next) {
        if (*p == q) {
            *p = q->next;
            free(q);
            return;
        }
    }
}

static void
queue_unlink(rrun *r)
{
    rqueue *q = r->q;
    if (r->prev)
        r->prev->next = r->next;
    else
        q->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        q->tail = r->prev;
    r->prev = r->next = NULL;
    r->q = NULL;
    q->n--;
}

/* ---- workers: wake-ups and cancels ----------------------------------------- */

static int
task_ok(const aps_worker *w, const char *task)
{
    if (w->n_tasks == 0)
        return 1;
    for (size_t i = 0; i < w->n_tasks; i++) {
        if (task != NULL && strcmp(w->tasks[i], task) == 0)
            return 1;
    }
    return 0;
}

/* Wakes a worker: its blocked takes, and its notify callback (edge-
 * triggered: once per take/cancels call, see engine.h). */
static void
wake(aps_worker *w, after *a)
{
    if (w->detached)
        return;
    if (w->waiting)
        /* broadcast, not signal: glibc 2.36 can lose a signalled wakeup
         * (sourceware bug 25847). */
        pthread_cond_broadcast(&w->cv);
    if (w->notify == NULL)
        return;
    if (w->listed) {
        w->renotify = 1;
        return;
    }
    if (!w->armed)
        return;
    w->armed = 0;
    w->listed = 1;
    w->nnext = a->notify;
    a->notify = w;
}

/* Wakes the workers of `q` that could take a run of `task` (NULL: any). */
static void
wake_queue(rqueue *q, const char *task, after *a)
{
    aps_worker *w = q->workers;
    for (size_t i = 0; i < q->n_workers; i++, w = w->qnext) {
        if (w->in_flight < w->max_in_flight && (task == NULL || task_ok(w, task)))
            wake(w, a);
    }
}

static void
wake_all_with_work(hub *h, after *a)
{
    for (rqueue *q = h->queues; q; q = q->next) {
        if (q->n > 0)
            wake_queue(q, NULL, a);
    }
}

/* Lists a run the scheduler ended on its worker's cancel list. The list is
 * bounded: beyond the limit the oldest entry goes (its worker learns at
 * its next complete or extend). A failed grow is the same case. */
static void
cancel_push(aps_worker *w, const char *run_id, after *a)
{
    if (w->n_cancels == APS_WORKER_IN_FLIGHT_MAX) {
        memmove(&w->cancels[0], &w->cancels[1], (w->n_cancels - 1) * sizeof(w->cancels[0]));
        w->n_cancels--;
    }
    if (w->n_cancels == w->cap_cancels) {
        size_t cap = w->cap_cancels ? w->cap_cancels * 2 : 8;
        if (cap > APS_WORKER_IN_FLIGHT_MAX)
            cap = APS_WORKER_IN_FLIGHT_MAX;
        void *v = realloc(w->cancels, cap * sizeof(*w->cancels));
        if (v == NULL)
            goto out;
        w->cancels = v;
        w->cap_cancels = cap;
    }
    memcpy(w->cancels[w->n_cancels++], run_id, 33);
out:
    wake(w, a);
}

/* Runs the deferred work of `a` without the hub's mutex. */
static void
after_run(hub *h, after *a)
{
    while (a->finished != NULL) {
        aps__run *run = a->finished;
        a->finished = run->next;
        run->next = NULL;
        aps__run_finished(run);
    }
    while (a->notify != NULL) {
        aps_worker *list = a->notify;
        a->notify = NULL;
        /* A listed worker's nnext is stable and detach waits for it. */
        for (aps_worker *w = list; w; w = w->nnext)
            w->notify(w->userdata);
        pthread_mutex_lock(&h->mu);
        for (aps_worker *w = list, *next; w; w = next) {
            next = w->nnext;
            w->nnext = NULL;
            w->listed = 0;
            if (w->renotify) {
                /* A wake came while it was being notified: after the
                 * notify, the worker may already have taken and re-armed. */
                w->renotify = 0;
                wake(w, a);
            }
            pthread_cond_broadcast(&w->cv);
        }
        pthread_mutex_unlock(&h->mu);
    }
}

/* ---- ending runs ------------------------------------------------------------- */

static void
outcome_end(aps_outcome *o, aps_run_status status, const char *msg, aps_time start, aps_time end)
{
    o->status = status;
    free(o->error);
    /* A failed strdup leaves the status without its text: still correct. */
    o->error = msg ? strdup(msg) : NULL;
    o->start_time = start;
    o->end_time = end;
}

/* Releases a lease: heap, worker, executor slot; wakes who can now take. */
static void
lease_release(hub *h, rrun *r, after *a)
{
    heap_remove(&h->leases, r);
    aps_worker *w = r->w;
    if (w != NULL) {
        if (r->prev)
            r->prev->next = r->next;
        else
            w->leased = r->next;
        if (r->next)
            r->next->prev = r->prev;
        r->prev = r->next = NULL;
        w->in_flight--;
        if (w->q->n > 0)
            wake(w, a);
        r->w = NULL;
    }
    remote_ex *ex = r->ex;
    int was_full = ex->n_leased >= ex->base.max_workers;
    ex->n_leased--;
    if (was_full)
        wake_all_with_work(h, a); /* its runs waiting in any queue may go now */
}

/* Makes r a tombstone and queues its run for the scheduler. */
static void
retire(hub *h, rrun *r, after *a)
{
    aps__run *run = r->run;
    r->run = NULL;
    r->ex = NULL;
    r->state = RUN_DONE;
    run->next = a->finished;
    a->finished = run;
    r->prev = h->done_tail;
    r->next = NULL;
    if (h->done_tail)
        h->done_tail->next = r;
    else
        h->done_head = r;
    h->done_tail = r;
    h->n_done++;
    while (h->n_done > APS_WORKER_FINISHED_KEPT) {
        rrun *old = h->done_head;
        h->done_head = old->next;
        if (h->done_head)
            h->done_head->prev = NULL;
        else
            h->done_tail = NULL;
        h->n_done--;
        table_remove(h, old);
        free(old);
    }
}

/* Ends a queued or leased run without a worker's result: each run time not
 * judged missed gets `status` and `msg`. The queue is not freed here. */
static void
finish(hub *h, rrun *r, aps_run_status status, const char *msg, aps_time now, after *a)
{
    aps__run *run = r->run;
    if (r->state == RUN_QUEUED) {
        heap_remove(&h->misses, r);
        queue_unlink(r);
        r->ex->n_queued--;
        for (size_t i = 0; i < run->n_run_times; i++) {
            aps__run_result *res = &run->results[i];
            res->run_time = run->run_times[i];
            res->started = now;
            if (!res->missed)
                outcome_end(&res->outcome, status, msg, now, now);
        }
    } else {
        lease_release(h, r, a);
        for (size_t i = 0; i < run->n_run_times; i++) {
            if (run->results[i].missed)
                continue;
            outcome_end(&run->results[i].outcome, status, msg, r->taken, now);
            /* Which worker held it (a lease that expired, a cancel). */
            if (r->worker_id[0] && run->results[i].outcome.worker_id == NULL)
                run->results[i].outcome.worker_id = strdup(r->worker_id);
        }
    }
    retire(h, r, a);
}

/* Ends a leased run that a worker may still be running, and tells it. */
static void
end_leased(hub *h, rrun *r, aps_run_status status, const char *msg, aps_time now, after *a)
{
    if (r->w != NULL)
        cancel_push(r->w, r->run_id, a);
    finish(h, r, status, msg, now, a);
}

/* Ends the runs whose deadline has come: leases that expired, and queued
 * runs that no worker took in time (every run time missed: a take now or
 * later would find the same, and ending them frees the job's instance
 * slot instead of holding it until a worker shows up). */
static size_t
expire_due(hub *h, aps_time now, after *a)
{
    size_t n = 0;
    while (h->leases.n > 0 && h->leases.v[0]->deadline <= now) {
        end_leased(h, h->leases.v[0], APS_RUN_LEASE_EXPIRED, "lease expired", now, a);
        n++;
    }
    while (h->misses.n > 0 && h->misses.v[0]->deadline <= now) {
        rrun *r = h->misses.v[0];
        rqueue *q = r->q;
        for (size_t i = 0; i < r->run->n_run_times; i++)
            r->run->results[i].missed = 1;
        finish(h, r, APS_RUN_NONE, NULL, now, a);
        queue_gc(h, q);
        n++;
    }
    return n;
}

/* The earliest deadline of both heaps, or APS_TIME_NONE. */
static aps_time
next_deadline(const hub *h)
{
    aps_time t = APS_TIME_NONE;
    if (h->leases.n > 0)
        t = h->leases.v[0]->deadline;
    if (h->misses.n > 0 && (t == APS_TIME_NONE || h->misses.v[0]->deadline < t))
        t = h->misses.v[0]->deadline;
    return t;
}

/* ---- the timer thread ------------------------------------------------------------ */

static void *
timer_main(void *arg)
{
    hub *h = arg;

    pthread_mutex_lock(&h->mu);
    while (!h->timer_stop) {
        if (next_deadline(h) == APS_TIME_NONE) {
            pthread_cond_wait(&h->timer_cv, &h->mu);
            continue;
        }
        /* The clock is the user's: read it without our mutex. */
        pthread_mutex_unlock(&h->mu);
        aps_time now = aps__scheduler_now(h->s);
        aps_time real = aps_time_now();
        pthread_mutex_lock(&h->mu);
        after a = {NULL, NULL};
        if (expire_due(h, now, &a) > 0) {
            pthread_mutex_unlock(&h->mu);
            after_run(h, &a);
            pthread_mutex_lock(&h->mu);
            continue;
        }
        aps_time next = next_deadline(h);
        if (next == APS_TIME_NONE || h->timer_stop)
            continue;
        int64_t wait = next - now;
        int64_t skew = now > real ? now - real : real - now;
        if (skew > INJECTED_SKEW_US && wait > POLL_US)
            wait = POLL_US;
        if (wait > WAIT_MAX_US)
            wait = WAIT_MAX_US;
        if (wait < 1000)
            wait = 1000;
        struct timespec ts;
        mono_after(wait, &ts);
        pthread_cond_timedwait(&h->timer_cv, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* ---- the hub ------------------------------------------------------------------------ */

static hub *
hub_of(aps_scheduler *s)
{
    aps__executor *e;
    for (size_t i = 0; (e = aps__scheduler_executor_at(s, i)) != NULL; i++) {
        if (e->ops == &remote_ops)
            return ((remote_ex *)e)->h;
    }
    return NULL;
}

static void
hub_free(hub *h)
{
    if (h == NULL)
        return;
    if (h->have_timer) {
        pthread_mutex_lock(&h->mu);
        h->timer_stop = 1;
        pthread_cond_broadcast(&h->timer_cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->timer, NULL);
    }
    /* Only tombstones are left once every executor has shut down. */
    for (size_t i = 0; h->table != NULL && i < h->table_cap; i++) {
        for (rrun *r = h->table[i], *next; r; r = next) {
            next = r->hnext;
            free(r);
        }
    }
    while (h->queues != NULL) {
        rqueue *q = h->queues;
        h->queues = q->next;
        free(q);
    }
    free(h->table);
    free(h->leases.v);
    free(h->misses.v);
    free(h->execs);
    pthread_cond_destroy(&h->timer_cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static int
hub_new(aps_scheduler *s, hub **out)
{
    pthread_condattr_t ca;
    hub *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return APS_ENOMEM;
    h->s = s;
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->timer_cv, &ca);
    pthread_condattr_destroy(&ca);
    h->table_cap = TABLE_INITIAL;
    h->table = calloc(h->table_cap, sizeof(*h->table));
    if (h->table == NULL)
        goto fail;
    if (pthread_create(&h->timer, NULL, timer_main, h) != 0)
        goto fail;
    pthread_setname_np(h->timer, "aps-remote");
    h->have_timer = 1;
    *out = h;
    return 0;

fail:
    hub_free(h);
    return APS_ENOMEM;
}

/* ---- the executor ------------------------------------------------------------------- */

static int
rx_submit(aps__executor *ex, aps__run *run)
{
    remote_ex *rx = (remote_ex *)ex;
    hub *h = rx->h;
    after a = {NULL, NULL};
    int rc = 0;

    if (run->target.kind != APS_TARGET_REMOTE) {
        aps_time now = aps__scheduler_now(run->sched);
        for (size_t i = 0; i < run->n_run_times; i++) {
            run->results[i].run_time = run->run_times[i];
            run->results[i].started = now;
            outcome_end(&run->results[i].outcome, APS_RUN_SPAWN_FAILED,
                        "executor: a workers executor runs remote targets only", now, now);
        }
        aps__run_finished(run);
        return 0;
    }
    const char *qname = run_queue_name(run);
    if (strlen(qname) > APS_WORKER_QUEUE_MAX)
        return APS_EINVAL; /* job validation keeps these out */
    rrun *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return APS_ENOMEM;
    memcpy(r->run_id, run->run_id, sizeof(r->run_id));
    r->run = run;
    r->ex = rx;
    r->state = RUN_QUEUED;
    r->heap_i = NOT_IN_HEAP;

    pthread_mutex_lock(&h->mu);
    if (rx->stopped) {
        rc = APS_ESTATE;
        goto fail;
    }
    if (rx->n_queued >= rx->base.max_queue) {
        rc = APS_ELIMIT;
        goto fail;
    }
    rqueue *q = queue_get(h, qname, 1);
    if (q == NULL) {
        rc = APS_ENOMEM;
        goto fail;
    }
    table_insert(h, r);
    aps_time last = run->run_times[0];
    for (size_t i = 1; i < run->n_run_times; i++)
        last = run->run_times[i] > last ? run->run_times[i] : last;
    if (!run->backfill && !run->unlimited_grace && run->grace_us >= 0 &&
        run->grace_us < INT64_MAX - 1 - last && heap_reserve(&h->misses) == 0) {
        /* aps__run_is_missed: missed once now - run_time > grace. Without
         * memory for the heap, the run is judged when taken: benign. */
        r->deadline = last + run->grace_us + 1;
        heap_push(h, &h->misses, r);
    }
    r->q = q;
    r->prev = q->tail;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->n++;
    rx->n_queued++;
    if (q->n_workers > 0) {
        wake_queue(q, run->target.u.remote.task, &a);
        /* Rotate who is woken first: runs go to the workers in turn. */
        q->workers = q->workers->qnext;
    }
    pthread_mutex_unlock(&h->mu);
    after_run(h, &a);
    return 0;

fail:
    pthread_mutex_unlock(&h->mu);
    free(r);
    return rc;
}

static int
rx_cancel(aps__executor *ex, const char *run_id)
{
    hub *h = ((remote_ex *)ex)->h;
    after a = {NULL, NULL};
    int rc = 0;
    aps_time now = aps__scheduler_now(h->s);

    pthread_mutex_lock(&h->mu);
    rrun *r = table_find(h, run_id);
    if (r == NULL || r->state == RUN_DONE) {
        rc = APS_ENOENT;
    } else if (r->state == RUN_QUEUED) {
        rqueue *q = r->q;
        finish(h, r, APS_RUN_CANCELLED, "cancelled before a worker took it", now, &a);
        queue_gc(h, q);
    } else {
        end_leased(h, r, APS_RUN_CANCELLED, "cancelled while a worker ran it", now, &a);
    }
    pthread_mutex_unlock(&h->mu);
    after_run(h, &a);
    return rc;
}

static rrun *
first_leased_of(hub *h, remote_ex *rx)
{
    for (size_t i = 0; i < h->leases.n; i++) {
        if (h->leases.v[i]->ex == rx)
            return h->leases.v[i];
    }
    return NULL;
}

/* Ends every leased run of rx. Ending a run reorders the heap, so the runs
 * are collected first; without memory for that, each is looked up again
 * (quadratic, but a shutdown is rare). */
static void
end_all_leased(hub *h, remote_ex *rx, aps_time now, after *a)
{
    static const char msg[] = "interrupted: the scheduler shut down while a worker ran the run";
    rrun **v = malloc((h->leases.n ? h->leases.n : 1) * sizeof(*v));
    if (v != NULL) {
        size_t n = 0;
        for (size_t i = 0; i < h->leases.n; i++) {
            if (h->leases.v[i]->ex == rx)
                v[n++] = h->leases.v[i];
        }
        for (size_t i = 0; i < n; i++)
            end_leased(h, v[i], APS_RUN_INTERRUPTED, msg, now, a);
        free(v);
        return;
    }
    for (rrun *r; (r = first_leased_of(h, rx)) != NULL;)
        end_leased(h, r, APS_RUN_INTERRUPTED, msg, now, a);
}

/* Stops taking runs. Queued runs end INTERRUPTED; leased runs too, without
 * waiting even with `wait` (a worker may never come back), and their
 * workers are told. The last executor to stop stops the timer thread. */
static void
rx_shutdown(aps__executor *ex, int wait)
{
    remote_ex *rx = (remote_ex *)ex;
    hub *h = rx->h;
    after a = {NULL, NULL};
    int join = 0;
    (void)wait;

    aps_time now = aps__scheduler_now(h->s);
    pthread_mutex_lock(&h->mu);
    if (rx->stopped) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    rx->stopped = 1;
    h->n_live--;
    for (rqueue *q = h->queues, *qnext; q; q = qnext) {
        qnext = q->next;
        for (rrun *r = q->head, *next; r; r = next) {
            next = r->next;
            if (r->ex == rx)
                finish(h, r, APS_RUN_INTERRUPTED,
                       "interrupted: the scheduler shut down before a worker took the run", now,
                       &a);
        }
        queue_gc(h, q);
    }
    end_all_leased(h, rx, now, &a);
    if (h->n_live == 0) {
        /* No run will come: blocked takes return APS_ESTATE. */
        for (rqueue *q = h->queues; q; q = q->next) {
            aps_worker *w = q->workers;
            for (size_t i = 0; i < q->n_workers; i++, w = w->qnext)
                wake(w, &a);
        }
        if (h->have_timer) {
            h->timer_stop = 1;
            h->have_timer = 0;
            pthread_cond_broadcast(&h->timer_cv);
            join = 1;
        }
    }
    pthread_mutex_unlock(&h->mu);
    after_run(h, &a);
    if (join)
        pthread_join(h->timer, NULL);
}

static void
rx_destroy(aps__executor *ex)
{
    remote_ex *rx = (remote_ex *)ex;
    if (rx == NULL)
        return;
    hub *h = rx->h;
    rx_shutdown(ex, 0);
    pthread_mutex_lock(&h->mu);
    for (size_t i = 0; i < h->n_execs; i++) {
        if (h->execs[i] == rx) {
            h->execs[i] = h->execs[--h->n_execs];
            break;
        }
    }
    int last = --h->refs == 0;
    pthread_mutex_unlock(&h->mu);
    if (last)
        hub_free(h);
    free(rx);
}

static void
rx_stats(aps__executor *ex, aps_executor_info *out)
{
    remote_ex *rx = (remote_ex *)ex;
    pthread_mutex_lock(&rx->h->mu);
    out->running = (uint32_t)rx->n_leased;
    out->pending = (uint32_t)rx->n_queued;
    /* Workers attach to queues, which every workers executor serves. */
    out->connected_workers = (uint32_t)rx->h->n_workers;
    pthread_mutex_unlock(&rx->h->mu);
}

int
aps__executor_remote_create(aps_scheduler *s, const aps_executor_def *def, aps__executor **out,
                            aps_error *err)
{
    remote_ex *rx = NULL;
    hub *h = NULL;
    int fresh = 0, rc;

    if (def->lease_us < 0 || def->lease_us > APS_WORKER_LEASE_MAX_US)
        return set_err(err, APS_EINVAL,
                       "executors[%s].lease_us: %lld is out of range 0-%lld (0 = 60 s)",
                       def->name, (long long)def->lease_us, (long long)APS_WORKER_LEASE_MAX_US);
    if (def->max_workers > MAX_WORKERS_LIMIT)
        return set_err(err, APS_EINVAL, "executors[%s].max_workers: %u is more than %u",
                       def->name, def->max_workers, MAX_WORKERS_LIMIT);
    rx = calloc(1, sizeof(*rx));
    if (rx == NULL)
        goto nomem;
    rx->base.ops = &remote_ops;
    snprintf(rx->base.name, sizeof(rx->base.name), "%s", def->name);
    snprintf(rx->base.type, sizeof(rx->base.type), "workers");
    rx->base.max_workers = def->max_workers ? def->max_workers : MAX_WORKERS_DEFAULT;
    rx->base.max_queue = def->max_queue ? def->max_queue : MAX_QUEUE_DEFAULT;
    rx->lease_us = def->lease_us ? def->lease_us : LEASE_DEFAULT_US;

    /* Executors are created one by one: the earlier ones are visible. */
    h = hub_of(s);
    if (h == NULL) {
        rc = hub_new(s, &h);
        if (rc != 0)
            goto nomem;
        fresh = 1;
    }
    pthread_mutex_lock(&h->mu);
    remote_ex **v = realloc(h->execs, (h->n_execs + 1) * sizeof(*v));
    if (v == NULL) {
        pthread_mutex_unlock(&h->mu);
        goto nomem;
    }
    h->execs = v;
    h->execs[h->n_execs++] = rx;
    h->refs++;
    h->n_live++;
    pthread_mutex_unlock(&h->mu);
    rx->h = h;
    *out = &rx->base;
    return 0;

nomem:
    if (fresh)
        hub_free(h);
    free(rx);
    return set_err(err, APS_ENOMEM, "executors[%s]: out of memory or threads", def->name);
}

/* ---- workers -------------------------------------------------------------------------- */

static int
bad_chars(const char *s, int allow_space)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || (c == ' ' && !allow_space))
            return 1;
    }
    return 0;
}

static void
worker_free(aps_worker *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; i < w->n_tasks; i++)
        free(w->tasks[i]);
    free(w->tasks);
    free(w->id);
    free(w->cancels);
    pthread_cond_destroy(&w->cv);
    free(w);
}

int
aps_worker_attach(aps_scheduler *s, const aps_worker_options *opt, aps_worker **out,
                  aps_error *err)
{
    pthread_condattr_t ca;
    aps_worker *w = NULL;
    int rc;

    if (s == NULL || opt == NULL || out == NULL)
        return set_err(err, APS_EINVAL, "scheduler, options and out are required");
    *out = NULL;
    const char *queue = opt->queue && opt->queue[0] ? opt->queue : "default";
    if (strlen(queue) > APS_WORKER_QUEUE_MAX || bad_chars(queue, 0))
        return set_err(err, APS_EINVAL,
                       "queue: at most %d bytes without spaces or control characters",
                       APS_WORKER_QUEUE_MAX);
    if (opt->worker_id == NULL || opt->worker_id[0] == '\0' ||
        strlen(opt->worker_id) > APS_WORKER_ID_MAX || bad_chars(opt->worker_id, 1))
        return set_err(err, APS_EINVAL,
                       "worker_id: 1-%d bytes without control characters are required",
                       APS_WORKER_ID_MAX);
    if (opt->max_in_flight > APS_WORKER_IN_FLIGHT_MAX)
        return set_err(err, APS_EINVAL, "max_in_flight: %u is out of range 0-%d",
                       opt->max_in_flight, APS_WORKER_IN_FLIGHT_MAX);
    if (opt->lease_us < 0 || opt->lease_us > APS_WORKER_LEASE_MAX_US)
        return set_err(err, APS_EINVAL, "lease_duration: %lld us is out of range 0-%lld",
                       (long long)opt->lease_us, (long long)APS_WORKER_LEASE_MAX_US);
    if (opt->n_tasks > APS_WORKER_TASKS_MAX || (opt->n_tasks > 0 && opt->tasks == NULL))
        return set_err(err, APS_EINVAL, "tasks: at most %d task names", APS_WORKER_TASKS_MAX);
    for (size_t i = 0; i < opt->n_tasks; i++) {
        if (opt->tasks[i] == NULL || opt->tasks[i][0] == '\0')
            return set_err(err, APS_EINVAL, "tasks[%zu]: must not be empty", i);
    }
    hub *h = hub_of(s);
    if (h == NULL)
        return set_err(err, APS_ENOENT, "the scheduler has no executor of type \"workers\"");

    w = calloc(1, sizeof(*w));
    if (w == NULL)
        goto nomem;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->h = h;
    w->id = strdup(opt->worker_id);
    w->max_in_flight = opt->max_in_flight ? opt->max_in_flight : 1;
    w->lease_us = opt->lease_us;
    w->notify = opt->notify;
    w->userdata = opt->userdata;
    w->armed = 1;
    if (w->id == NULL)
        goto nomem;
    if (opt->n_tasks > 0) {
        w->tasks = calloc(opt->n_tasks, sizeof(*w->tasks));
        if (w->tasks == NULL)
            goto nomem;
        for (; w->n_tasks < opt->n_tasks; w->n_tasks++) {
            w->tasks[w->n_tasks] = strdup(opt->tasks[w->n_tasks]);
            if (w->tasks[w->n_tasks] == NULL)
                goto nomem;
        }
    }

    pthread_mutex_lock(&h->mu);
    if (h->n_live == 0) {
        rc = set_err(err, APS_ESTATE, "the \"workers\" executors have shut down");
        goto fail_locked;
    }
    if (h->n_workers >= APS_WORKERS_MAX) {
        rc = set_err(err, APS_ELIMIT, "too many workers attached (%d)", APS_WORKERS_MAX);
        goto fail_locked;
    }
    rqueue *q = queue_get(h, queue, 1);
    if (q == NULL) {
        rc = set_err(err, APS_ENOMEM, "out of memory");
        goto fail_locked;
    }
    w->q = q;
    if (q->workers == NULL) {
        w->qprev = w->qnext = w;
        q->workers = w;
    } else {
        /* Last in the rotation. */
        w->qnext = q->workers;
        w->qprev = q->workers->qprev;
        w->qprev->qnext = w;
        q->workers->qprev = w;
    }
    q->n_workers++;
    h->n_workers++;
    h->refs++;
    pthread_mutex_unlock(&h->mu);
    *out = w;
    return 0;

fail_locked:
    pthread_mutex_unlock(&h->mu);
    worker_free(w);
    return rc;
nomem:
    worker_free(w);
    return set_err(err, APS_ENOMEM, "out of memory");
}

void
aps_worker_detach(aps_worker *w)
{
    if (w == NULL)
        return;
    hub *h = w->h;
    pthread_mutex_lock(&h->mu);
    rqueue *q = w->q;
    if (q->n_workers == 1) {
        q->workers = NULL;
    } else {
        w->qprev->qnext = w->qnext;
        w->qnext->qprev = w->qprev;
        if (q->workers == w)
            q->workers = w->qnext;
    }
    q->n_workers--;
    /* Its runs keep their leases, held by nobody. */
    for (rrun *r = w->leased, *next; r; r = next) {
        next = r->next;
        r->w = NULL;
        r->prev = r->next = NULL;
    }
    w->leased = NULL;
    w->detached = 1;
    while (w->listed)
        pthread_cond_wait(&w->cv, &h->mu);
    queue_gc(h, q);
    h->n_workers--;
    int last = --h->refs == 0;
    pthread_mutex_unlock(&h->mu);
    worker_free(w);
    if (last)
        hub_free(h);
}

static void
dispatch_dispose(aps_dispatch *d)
{
    free(d->job_id);
    free(d->task);
    free(d->args_json);
    free(d->kwargs_json);
    free(d->queue);
    free(d->run_times);
    memset(d, 0, sizeof(*d));
}

void
aps_dispatch_free(aps_dispatch *d, size_t n)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        dispatch_dispose(&d[i]);
    free(d);
}

/* Fills a dispatch for `r` (its `live` run times not missed at `now`). */
static int
dispatch_fill(aps_dispatch *d, const rrun *r, const char *queue, size_t live, aps_time now,
              int64_t lease_us)
{
    const aps__run *run = r->run;
    const aps_target *t = &run->target;

    memset(d, 0, sizeof(*d));
    memcpy(d->run_id, r->run_id, sizeof(d->run_id));
    if (aps__id_generate(d->lease_token) != 0)
        return APS_EIO;
    d->job_id = strdup(run->job_id);
    d->task = strdup(t->u.remote.task ? t->u.remote.task : "");
    d->args_json = strdup(t->u.remote.args_json ? t->u.remote.args_json : "[]");
    d->kwargs_json = strdup(t->u.remote.kwargs_json ? t->u.remote.kwargs_json : "{}");
    d->queue = strdup(queue);
    d->run_times = malloc(live * sizeof(aps_time));
    if (d->job_id == NULL || d->task == NULL || d->args_json == NULL ||
        d->kwargs_json == NULL || d->queue == NULL || d->run_times == NULL) {
        dispatch_dispose(d);
        return APS_ENOMEM;
    }
    for (size_t i = 0; i < run->n_run_times; i++) {
        if (!aps__run_is_missed(run, run->run_times[i], now))
            d->run_times[d->n_run_times++] = run->run_times[i];
    }
    d->lease_us = lease_us;
    d->lease_deadline = now + lease_us;
    return 0;
}

static int
any_exec_free(const hub *h)
{
    for (size_t i = 0; i < h->n_execs; i++) {
        const remote_ex *rx = h->execs[i];
        if (!rx->stopped && rx->n_leased < rx->base.max_workers)
            return 1;
    }
    return 0;
}

/* Leases up to `max` runs of w's queue to w, oldest first. */
static int
take_some(hub *h, aps_worker *w, size_t max, aps_time now, aps_dispatch *v, size_t *got,
          after *a)
{
    rqueue *q = w->q;
    if (!any_exec_free(h))
        return 0;
    for (rrun *r = q->head, *next; r && *got < max && w->in_flight < w->max_in_flight;
         r = next) {
        next = r->next;
        aps__run *run = r->run;
        remote_ex *ex = r->ex;
        if (!task_ok(w, run->target.u.remote.task) || ex->n_leased >= ex->base.max_workers)
            continue;
        /* The misfire rule, now that the run starts. */
        size_t live = 0;
        for (size_t i = 0; i < run->n_run_times; i++)
            live += !aps__run_is_missed(run, run->run_times[i], now);
        if (live == 0) {
            for (size_t i = 0; i < run->n_run_times; i++)
                run->results[i].missed = 1;
            finish(h, r, APS_RUN_NONE, NULL, now, a);
            continue;
        }
        int64_t lease = w->lease_us ? w->lease_us : ex->lease_us;
        int rc = heap_reserve(&h->leases);
        if (rc == 0)
            rc = dispatch_fill(&v[*got], r, q->name, live, now, lease);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < run->n_run_times; i++) {
            aps__run_result *res = &run->results[i];
            res->run_time = run->run_times[i];
            res->started = now;
            res->missed = aps__run_is_missed(run, run->run_times[i], now);
        }
        heap_remove(&h->misses, r);
        queue_unlink(r);
        ex->n_queued--;
        r->state = RUN_LEASED;
        memcpy(r->token, v[*got].lease_token, sizeof(r->token));
        r->taken = now;
        snprintf(r->worker_id, sizeof(r->worker_id), "%s", w->id);
        r->deadline = v[*got].lease_deadline;
        r->lease_us = lease;
        r->w = w;
        r->prev = NULL;
        r->next = w->leased;
        if (w->leased)
            w->leased->prev = r;
        w->leased = r;
        w->in_flight++;
        ex->n_leased++;
        heap_push(h, &h->leases, r);
        (*got)++;
    }
    return 0;
}

int
aps_worker_take(aps_worker *w, size_t max, int64_t timeout_us, aps_dispatch **out, size_t *n)
{
    struct timespec until;
    after a = {NULL, NULL};
    size_t got = 0;
    int rc = 0, have_until = 0;

    if (w == NULL || out == NULL || n == NULL || max == 0)
        return APS_EINVAL;
    *out = NULL;
    *n = 0;
    hub *h = w->h;
    if (max > w->max_in_flight)
        max = w->max_in_flight; /* it can never hold more */
    aps_dispatch *v = calloc(max, sizeof(*v));
    if (v == NULL)
        return APS_ENOMEM;

    pthread_mutex_lock(&h->mu);
    w->armed = 1;
    for (;;) {
        if (h->n_live == 0) {
            rc = APS_ESTATE;
            break;
        }
        rc = take_some(h, w, max, aps__scheduler_now(h->s), v, &got, &a);
        if (rc != 0 || got > 0 || timeout_us == 0)
            break;
        w->waiting++;
        if (timeout_us < 0) {
            pthread_cond_wait(&w->cv, &h->mu);
        } else {
            if (!have_until) {
                mono_after(timeout_us, &until);
                have_until = 1;
            }
            if (pthread_cond_timedwait(&w->cv, &h->mu, &until) == ETIMEDOUT)
                timeout_us = 0; /* one last look, then return */
        }
        w->waiting--;
    }
    pthread_mutex_unlock(&h->mu);
    after_run(h, &a);
    if (got == 0) {
        free(v);
        return rc;
    }
    /* Runs already leased are handed out even if a later one failed. */
    *out = v;
    *n = got;
    return 0;
}

int
aps_worker_cancels(aps_worker *w, char (**run_ids)[33], size_t *n)
{
    if (w == NULL || run_ids == NULL || n == NULL)
        return APS_EINVAL;
    hub *h = w->h;
    pthread_mutex_lock(&h->mu);
    w->armed = 1;
    /* The list itself is handed over: nothing to allocate, nothing to fail. */
    *n = w->n_cancels;
    *run_ids = w->n_cancels ? w->cancels : NULL;
    if (w->n_cancels) {
        w->cancels = NULL;
        w->n_cancels = w->cap_cancels = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return 0;
}

/* ---- complete, extend ------------------------------------------------------------------- */

static int
token_ok(const rrun *r, const char *token)
{
    /* Constant time: the token is the worker's proof of the lease. */
    return r->token[0] != '\0' && strlen(token) == TOKEN_LEN &&
           CRYPTO_memcmp(r->token, token, TOKEN_LEN) == 0;
}

static uint64_t
hash_str(uint64_t h, const char *s)
{
    h ^= s ? 1 : 2; /* NULL and "" differ */
    h *= UINT64_C(1099511628211);
    for (; s && *s; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    h ^= 0; /* the terminator separates fields */
    h *= UINT64_C(1099511628211);
    return h;
}

/* Identifies a result for a retried complete. A hash, not a copy: another
 * result colliding is a 2^-64 chance, and would only turn an APS_ESTATE
 * into a no-op. */
static uint64_t
result_hash(const aps_task_result *r)
{
    uint64_t h = UINT64_C(1469598103934665603);
    h = hash_str(h, r->ok ? "ok" : "error");
    if (r->ok)
        return hash_str(h, r->return_json ? r->return_json : "null");
    h = hash_str(h, r->error);
    h = hash_str(h, r->error_type);
    return hash_str(h, r->traceback);
}

/* The outcome's error text: the exception's message (str(exception)); its
 * type goes to error_type. Without a message, the type stands in. */
static char *
error_text(const aps_task_result *r)
{
    const char *type = r->error_type && r->error_type[0] ? r->error_type : NULL;
    const char *msg = r->error && r->error[0] ? r->error : NULL;
    return strdup(msg ? msg : type ? type : "the task failed");
}

static int
outcome_build(aps_outcome *o, const aps_task_result *r, aps_time start, aps_time end,
              const char *worker_id)
{
    memset(o, 0, sizeof(*o));
    o->start_time = start;
    o->end_time = end;
    if (worker_id != NULL && (o->worker_id = strdup(worker_id)) == NULL)
        return APS_ENOMEM;
    if (r->ok) {
        o->status = APS_RUN_SUCCEEDED;
        o->return_json = strdup(r->return_json ? r->return_json : "null");
        if (o->return_json == NULL) {
            aps__outcome_dispose(o);
            return APS_ENOMEM;
        }
        return 0;
    }
    o->status = APS_RUN_FAILED;
    o->error = error_text(r);
    if (r->traceback != NULL)
        o->traceback = strdup(r->traceback);
    if (r->error_type != NULL && r->error_type[0])
        o->error_type = strdup(r->error_type);
    if (o->error == NULL || (r->traceback != NULL && o->traceback == NULL) ||
        (r->error_type != NULL && r->error_type[0] && o->error_type == NULL)) {
        aps__outcome_dispose(o);
        return APS_ENOMEM;
    }
    return 0;
}

static int
check_ids(const char *run_id, const char *token)
{
    return run_id == NULL || run_id[0] == '\0' || token == NULL || token[0] == '\0'
               ? APS_EINVAL
               : 0;
}

int
aps_worker_complete(aps_scheduler *s, const char *run_id, const char *lease_token,
                    const aps_task_result *r)
{
    after a = {NULL, NULL};
    aps_outcome *built = NULL;
    int rc;

    if (s == NULL || r == NULL || check_ids(run_id, lease_token) != 0)
        return APS_EINVAL;
    size_t bytes = 0;
    const char *fields[] = {r->return_json, r->error, r->error_type, r->traceback};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        bytes += fields[i] ? strlen(fields[i]) : 0;
    if (bytes > APS_WORKER_RESULT_MAX)
        return APS_ELIMIT;
    if (r->ok && r->return_json != NULL &&
        aps__json_check(r->return_json, strlen(r->return_json), NULL, NULL, NULL) != 0)
        return APS_EINVAL;
    hub *h = hub_of(s);
    if (h == NULL)
        return APS_ENOENT;
    uint64_t hash = result_hash(r);
    aps_time now = aps__scheduler_now(s);

    pthread_mutex_lock(&h->mu);
    rrun *x = table_find(h, run_id);
    if (x == NULL) {
        rc = APS_ENOENT;
    } else if (!token_ok(x, lease_token)) {
        rc = APS_EINVAL;
    } else if (x->state == RUN_DONE) {
        rc = x->completed && x->result_hash == hash ? 0 : APS_ESTATE;
    } else if (now >= x->deadline) {
        /* Expired, the timer thread just has not seen it yet. */
        end_leased(h, x, APS_RUN_LEASE_EXPIRED, "lease expired", now, &a);
        rc = APS_ESTATE;
    } else {
        /* Build every outcome before changing anything. */
        aps__run *run = x->run;
        built = calloc(run->n_run_times, sizeof(*built));
        rc = built ? 0 : APS_ENOMEM;
        size_t k = 0;
        for (; rc == 0 && k < run->n_run_times; k++) {
            if (!run->results[k].missed)
                rc = outcome_build(&built[k], r, x->taken, now,
                                   x->worker_id[0] ? x->worker_id : NULL);
        }
        if (rc != 0) {
            for (size_t i = 0; built && i < k; i++)
                aps__outcome_dispose(&built[i]);
        } else {
            for (size_t i = 0; i < run->n_run_times; i++) {
                if (!run->results[i].missed) {
                    aps__outcome_dispose(&run->results[i].outcome);
                    run->results[i].outcome = built[i];
                }
            }
            lease_release(h, x, &a);
            x->completed = 1;
            x->result_hash = hash;
            retire(h, x, &a);
        }
    }
    pthread_mutex_unlock(&h->mu);
    free(built);
    after_run(h, &a);
    return rc;
}

int
aps_worker_extend(aps_scheduler *s, const char *run_id, const char *lease_token,
                  int64_t extend_us, aps_time *deadline, int64_t *granted_us)
{
    after a = {NULL, NULL};
    int rc = 0;

    if (s == NULL || check_ids(run_id, lease_token) != 0 || extend_us < 0 ||
        extend_us > APS_WORKER_LEASE_MAX_US)
        return APS_EINVAL;
    hub *h = hub_of(s);
    if (h == NULL)
        return APS_ENOENT;
    aps_time now = aps__scheduler_now(s);

    pthread_mutex_lock(&h->mu);
    rrun *x = table_find(h, run_id);
    if (x == NULL) {
        rc = APS_ENOENT;
    } else if (!token_ok(x, lease_token)) {
        rc = APS_EINVAL;
    } else if (x->state == RUN_DONE) {
        rc = APS_ESTATE;
    } else if (now >= x->deadline) {
        end_leased(h, x, APS_RUN_LEASE_EXPIRED, "lease expired", now, &a);
        rc = APS_ESTATE;
    } else {
        int64_t len = extend_us ? extend_us : x->lease_us;
        x->deadline = now + len;
        heap_fix(h, &h->leases, x);
        if (deadline)
            *deadline = x->deadline;
        if (granted_us)
            *granted_us = len;
    }
    pthread_mutex_unlock(&h->mu);
    after_run(h, &a);
    return rc;
}

/* Expires the due leases at once on the scheduler's clock, as the timer
 * thread would, and returns how many. Not in exec.h: for tests that step
 * an injected clock and want no polling delay. */
int
aps__executor_remote_tick(aps__executor *ex)
{
    hub *h = ((remote_ex *)ex)->h;
    after a = {NULL, NULL};
    aps_time now = aps__scheduler_now(h->s);
    pthread_mutex_lock(&h->mu);
    size_t n = expire_due(h, now, &a);
    pthread_mutex_unlock(&h->mu);
    after_run(h, &a);
    return (int)n;
}
