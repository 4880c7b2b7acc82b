/*
 * The scheduler: APScheduler's BaseScheduler in C.
 *
 * Every change to a job is a write callback run inside its store's
 * transaction (group-committed by the store), reading the current record,
 * changing it, and appending the events it causes to the log in the same
 * transaction when the job lives in the log's store. API calls run their
 * writes on the caller's thread; the loop (aps_scheduler_process) runs the
 * due jobs and the finished runs. Runs are handed to executors only after
 * the commit that records them as running, so a crash never loses track of
 * a run: on the next start it is reported as interrupted, or, committed
 * ahead of its time and never handed on, run again from its job's
 * schedule (recover_interrupted).
 *
 * Write callbacks may run more than once (the LMDB store retries a batch
 * after growing its map), so they rebuild their outputs from scratch each
 * time (reset_out) and touch nothing but the transaction and their context.
 *
 * On a durable store the loop prepares its due jobs and finished runs on
 * its own thread from the records it read (due_prep), and the writer only
 * checks that a record is still the one read and makes the writes
 * prepared: the store's single writer thread was the limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "codec.h"
#include "job.h"
#include "scheduler.h"

#define US_PER_SEC INT64_C(1000000)
/* Due jobs taken per store write: one durable commit per batch. On an
 * LMDB store a full batch (a backlog) doubles the next one, up to
 * DUE_BATCH_MAX, and a batch less than half full halves it again: a
 * commit's fixed cost (its fsyncs, the B-trees' upper pages, the free list)
 * is then shared by more runs. At 100,000 jobs/s this took the loop from
 * ~40k to ~47-60k runs/s on the reference machine; on time, the batches
 * are small whatever the cap. The memory store keeps DUE_BATCH: its writes
 * run on the loop's thread, which checks its real-time budget between
 * batches (rt_busy_check). */
#define DUE_BATCH 512
#define DUE_BATCH_MAX 8192
/* Due jobs taken in one pass at most: then the runs that finished meanwhile
 * are recorded (freeing their instance slots: max_instances) before more
 * start. */
#define PASS_MAX (64 * DUE_BATCH)
/* Writes of due jobs a pass keeps on their way to a durable store
 * (due_write): three, so that the next batch is queued before the store's
 * writer is done with the one before (scanning, preparing and handing on
 * a batch takes the loop about as long as the writer takes to make it).
 * Six made no measurable difference at 100,000 runs/s. */
#define DUE_WRITES 3
/* Commit-ahead default: above this machine's fsync p99.9 under load
 * (about 30 ms at 10,000 runs/s), short enough that a crash leaves few
 * runs committed ahead unrun. */
#define COMMIT_AHEAD_US (50 * 1000)
/* How far the lead widens by default while writes are slow (store_ahead):
 * at 100,000 runs/s on this machine's shared disk the loop's writes take
 * up to ~400 ms; with a fixed 50 ms lead runs were then late by up to
 * that (p99 33 ms), with 1 s p99 was 1.9 ms. A crash costs nothing for it:
 * runs that never started come again after the restart
 * (recover_interrupted). */
#define COMMIT_AHEAD_MAX_US (1000 * 1000)
/* Run times kept for one job in one pass; beyond, they count as missed. */
#define RUN_TIMES_MAX 1000
/* Events handed to the listeners per loop pass: listeners slower than the
 * events come would otherwise hold the pass, and no job would fire. */
#define LISTENER_BATCH 1024
/* Trigger steps taken for one job in one pass (a per-second cron missed
 * for a long downtime): beyond, the job is moved to its next fire time. */
#define RUN_TIMES_ITER_MAX 1000000
/* How long a finished run may wait for a pass the loop makes anyway,
 * instead of waking it (see aps__run_finished); plus the gathering window
 * below while a store commits ahead. */
#define COMPLETION_SLACK_US 2000
/* aps_scheduler_config.pass_spacing_us's default: at 100,000 runs/s a pass
 * per due time (each arming the timer: tens of microseconds in a VM) cost
 * the loop more than the runs. */
#define PASS_SPACING_US 250
#define PASS_SPACING_MAX_US 1000000
/* Commit-ahead gathering: a store's due runs are taken once the earliest is
 * within lead - gather of its time, gather = lead / AHEAD_GATHER_DIV up to
 * AHEAD_GATHER_MAX_US, and with it all those due within the lead, so runs
 * are committed between lead - gather and the lead ahead of their time.
 * Taken as each came within the lead, they made a commit per pass: at
 * 10,000 runs/s ~600 commits/s, against ~90 gathered, with a third of the
 * bytes written and a quarter less CPU per run (tools/bench/engine,
 * lateness 10000). The cap bounds how long finished runs then wait to be
 * recorded (completion_slack_us) under a long lead. */
#define AHEAD_GATHER_DIV 4
#define AHEAD_GATHER_MAX_US (25 * 1000)
/* The adaptive lead (store_ahead, note_due_write): at most what passes
 * that last long ask for (beyond it the loop is behind, and a lead near a
 * job's interval defers its runs: the one before not yet recorded); how
 * much it grows per pass beside the loop's idle time. */
#define AHEAD_PASS_MAX_US (400 * 1000)
#define AHEAD_GROW_US (12500)
/* Disk kept free per LMDB store for a full disk (aps_scheduler_config):
 * room for the event log to reach its default retention (100,000 events of
 * ~150 bytes, pruned after that) while runs go on. */
#define DISK_RESERVE_BYTES ((size_t)32 << 20)
/* Pending runs a QUEUE_ALL job keeps. */
#define PENDING_MAX 1000
#define BACKFILL_DEFAULT 1000
#define BACKFILL_MAX 100000
#define REQ_PREFIX "req/"
#define RUN_PREFIX "run/"
#define STATE_KEY "sched/paused"

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

/* ---- clock, lookups -------------------------------------------------------- */

static aps_time
real_now(void *ctx)
{
    (void)ctx;
    return aps_time_now();
}

aps_time
aps__scheduler_now(aps_scheduler *s)
{
    return s->clock.now(s->clock.ctx);
}

static int
find_store(const aps_scheduler *s, const char *name)
{
    for (size_t i = 0; i < s->n_stores; i++) {
        if (strcmp(s->stores[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}

/* Whether store `name` outlives the process: only then does the durable
 * run index (run/<id>, for "interrupted by restart") mean anything. */
static int
store_persists(const aps_scheduler *s, const char *name)
{
    int i = find_store(s, name);
    return i < 0 || strcmp(s->stores[i].type, "memory") != 0;
}

static aps__executor *
find_exec(const aps_scheduler *s, const char *name)
{
    for (size_t i = 0; i < s->n_execs; i++) {
        if (strcmp(s->execs[i].name, name) == 0)
            return s->execs[i].ex;
    }
    return NULL;
}

aps__executor *
aps__scheduler_executor(aps_scheduler *s, const char *name)
{
    return find_exec(s, name);
}

aps__executor *
aps__scheduler_executor_at(aps_scheduler *s, size_t n)
{
    return n < s->n_execs ? s->execs[n].ex : NULL;
}

/* The executor kinds, by the `type` of an aps_executor_def. */
static const struct {
    const char *type;
    aps__executor_create_fn create;
} exec_kinds[] = {
    {"threadpool", aps__executor_threadpool_create},
    {"processpool", aps__executor_process_create},
    {"workers", aps__executor_remote_create},
};

int
aps__scheduler_function(aps_scheduler *s, const char *name, aps_job_fn *fn, void **userdata)
{
    int rc = APS_ENOENT;
    pthread_rwlock_rdlock(&s->fn_lock);
    for (size_t i = 0; i < s->n_functions; i++) {
        if (strcmp(s->functions[i].name, name) == 0) {
            *fn = s->functions[i].fn;
            *userdata = s->functions[i].userdata;
            rc = 0;
            break;
        }
    }
    pthread_rwlock_unlock(&s->fn_lock);
    return rc;
}

void
aps__scheduler_wake(aps_scheduler *s)
{
    uint64_t one = 1;
    ssize_t w = write(s->wake_fd, &one, sizeof(one));
    (void)w; /* a saturated counter is still readable */
}

/* After a commit that gave a job the next run time `next`: wakes the loop,
 * unless it has settled its next pass (after reading every store: not in
 * a pass) at or before the time it would take that job up (`next` less the
 * longest commit-ahead lead); that pass reads the stores again and finds
 * it. A job without a next run time needs no pass. Waking on every add
 * made a pass with its store reads per add (test_loop: 188 passes for 201
 * adds of later jobs, 0 now). A pass in progress (on the real clock) may
 * have read the stores before this commit: it is told that time instead,
 * and settles its next pass no later (aps_scheduler_process). Woken, each
 * pass made the next under a stream of adds: a wake-up and a pass per add
 * (64 threads adding: a tenth of the process's CPU). */
static void
wake_for(aps_scheduler *s, aps_time next)
{
    int64_t lead = !__atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE) ? 0
                   : s->ahead_max_us > s->ahead_us                     ? s->ahead_max_us
                                                                       : s->ahead_us;
    int wake = next != APS_TIME_NONE;

    /* When the loop must look by (a time within the lead of the smallest
     * is at once all the same). */
    aps_time by = next < APS_TIME_NONE + 1 + lead ? APS_TIME_NONE + 1 : next - lead;
    if (wake) {
        pthread_mutex_lock(&s->mu);
        if (s->loop_next != APS_TIME_NONE && s->in_pass) {
            if (s->pass_wake == APS_TIME_NONE || by < s->pass_wake)
                s->pass_wake = by;
            wake = 0;
        } else if (s->loop_next != APS_TIME_NONE) {
            wake = by < s->loop_next;
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (wake)
        aps__scheduler_wake(s);
}

/* The job's options with the scheduler's defaults applied. */
static int
job_coalesce(const aps_scheduler *s, const aps_job *j)
{
    return j->coalesce < 0 ? s->default_coalesce : j->coalesce;
}

static uint32_t
job_max_instances(const aps_scheduler *s, const aps_job *j)
{
    return j->max_instances > 0 ? (uint32_t)j->max_instances : s->default_max_instances;
}

static aps_overlap
job_overlap(const aps_job *j)
{
    return j->overlap == APS_OVERLAP_DEFAULT ? APS_OVERLAP_SKIP : j->overlap;
}

int
aps__run_is_missed(const aps__run *run, aps_time rt, aps_time now)
{
    if (run->backfill || run->unlimited_grace)
        return 0;
    return now - rt > run->grace_us;
}

/* ---- runs ------------------------------------------------------------------ */

void
aps__run_free(aps__run *run)
{
    if (run == NULL)
        return;
    if (run->packed) {
        if (run->target.kind != APS_TARGET_FUNCTION) /* (a function's: packed) */
            aps__target_dispose(&run->target);
        for (size_t i = 0; i < run->n_run_times; i++)
            aps__outcome_dispose(&run->results[i].outcome);
        free(run);
        return;
    }
    free(run->job_id);
    free(run->jobstore);
    free(run->executor);
    aps__target_dispose(&run->target);
    if (run->results != NULL) {
        for (size_t i = 0; i < run->n_run_times; i++)
            aps__outcome_dispose(&run->results[i].outcome);
    }
    free(run->results);
    free(run->run_times);
    free(run);
}

void
aps__run_finished(aps__run *run)
{
    aps_scheduler *s = run->sched;
    pthread_mutex_lock(&s->mu);
    /* Only the first run of a batch wakes the loop: the loop drains its
     * wake-up fd before it takes the list, so a run added to a non-empty
     * list is taken by the pass its predecessor's wake-up causes. */
    int wake = s->completed == NULL;
    run->next = s->completed;
    s->completed = run;
    /* Nor does one when the loop looks again within completion_slack_us
     * (or is in a pass: loop_next is its start): that pass records it. At
     * thousands of runs per second, a wake-up per finished run was half
     * the loop's passes. The loop checks the flag when it settles its next
     * time (under this lock, so one of the two sees the other). */
    if (wake && s->loop_next != APS_TIME_NONE &&
        s->loop_next - aps__scheduler_now(s) <= s->completion_slack_us) {
        s->completion_unwoken = 1;
        wake = 0;
    }
    pthread_mutex_unlock(&s->mu);
    if (wake)
        aps__scheduler_wake(s);
}

/* A run of `rec` over run_times, to hand to the executor after the commit.
 * One allocation for the run, its results, times and strings (packed):
 * seven per run were a good part of the loop's malloc traffic. */
static int
run_new(aps_scheduler *s, const aps__jobrec *rec, const char *run_id, const aps_time *rts,
        size_t n, int backfill, aps__run **out)
{
    const aps_target *tg = &rec->job.target;
    int fn = tg->kind == APS_TARGET_FUNCTION;
    size_t idlen = strlen(rec->job.id) + 1, stlen = strlen(rec->job.jobstore) + 1;
    size_t exlen = strlen(rec->job.executor) + 1;
    size_t fnlen = fn && tg->u.function.name ? strlen(tg->u.function.name) + 1 : 0;
    size_t arglen = fn && tg->u.function.arg ? strlen(tg->u.function.arg) + 1 : 0;
    size_t size = sizeof(aps__run) + n * (sizeof(aps__run_result) + sizeof(aps_time)) + idlen +
                  stlen + exlen + fnlen + arglen;
    aps__run *run = calloc(1, size);
    if (run == NULL)
        return APS_ENOMEM;
    run->packed = 1;
    run->results = (aps__run_result *)(run + 1);
    run->run_times = (aps_time *)(run->results + n);
    run->job_id = (char *)(run->run_times + n);
    run->jobstore = run->job_id + idlen;
    run->executor = run->jobstore + stlen;
    memcpy(run->job_id, rec->job.id, idlen);
    memcpy(run->jobstore, rec->job.jobstore, stlen);
    memcpy(run->executor, rec->job.executor, exlen);
    memcpy(run->run_id, run_id, sizeof(run->run_id));
    run->sched = s;
    run->backfill = backfill;
    if (fn) {
        /* A function target's strings are packed too (see aps__run_free). */
        char *p = run->executor + exlen;
        run->target.kind = APS_TARGET_FUNCTION;
        if (fnlen > 0)
            run->target.u.function.name = memcpy(p, tg->u.function.name, fnlen);
        if (arglen > 0)
            run->target.u.function.arg = memcpy(p + fnlen, tg->u.function.arg, arglen);
    } else if (aps__target_copy(tg, &run->target) != 0) {
        aps__run_free(run);
        return APS_ENOMEM;
    }
    memcpy(run->run_times, rts, n * sizeof(aps_time));
    run->n_run_times = n;
    switch (rec->job.misfire) {
    case APS_MISFIRE_UNLIMITED:
        run->unlimited_grace = 1;
        break;
    case APS_MISFIRE_DURATION:
        run->grace_us = rec->job.misfire_grace_us;
        break;
    default:
        run->unlimited_grace = s->default_unlimited_grace;
        run->grace_us = s->default_grace_us;
        break;
    }
    *out = run;
    return 0;
}

/* ---- write contexts -------------------------------------------------------- */

/* What a write produces besides its changes: events, runs to start, runs to
 * cancel. Rebuilt on every run of the callback. */
typedef struct wout {
    aps__evlist evs;
    aps__run **runs;
    size_t n_runs, cap_runs;
    char (*cancels)[2][64]; /* [executor, run id] */
    size_t n_cancels, cap_cancels;
    size_t n_queued; /* runs already queued for their time (hold_early) */
} wout;

static void
reset_out(wout *o)
{
    aps__evlist_clear(&o->evs);
    for (size_t i = 0; i < o->n_runs; i++)
        aps__run_free(o->runs[i]);
    o->n_runs = 0;
    o->n_cancels = 0;
    o->n_queued = 0;
}

static void
free_out(wout *o)
{
    reset_out(o);
    aps__evlist_dispose(&o->evs);
    free(o->runs);
    free(o->cancels);
    memset(o, 0, sizeof(*o));
}

static int
out_event(wout *o, aps_event_type type, aps_time at, const aps_job *j, const char *run_id,
          const aps_time *rts, size_t n, aps_event **evp)
{
    aps_event *ev = NULL;
    int rc = aps__event_new(type, at, j ? j->id : NULL, j ? j->jobstore : NULL,
                            j ? j->executor : NULL, run_id, rts, n, &ev);
    if (rc != 0)
        return rc;
    rc = aps__evlist_push(&o->evs, ev);
    if (rc != 0) {
        aps_event_free(ev);
        return rc;
    }
    if (evp)
        *evp = ev;
    return 0;
}

/* An event of no job, naming a store or an executor (either NULL). */
static int
out_named_event(wout *o, aps_event_type type, aps_time at, const char *jobstore,
                const char *executor)
{
    aps_event *ev = NULL;
    int rc = aps__event_new(type, at, NULL, jobstore, executor, NULL, NULL, 0, &ev);
    if (rc == 0 && (rc = aps__evlist_push(&o->evs, ev)) != 0)
        aps_event_free(ev);
    return rc;
}

static int
out_run(wout *o, aps__run *run)
{
    if (o->n_runs == o->cap_runs) {
        size_t cap = o->cap_runs ? o->cap_runs * 2 : 8;
        aps__run **v = realloc(o->runs, cap * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        o->runs = v;
        o->cap_runs = cap;
    }
    o->runs[o->n_runs++] = run;
    return 0;
}

static int
out_cancel(wout *o, const char *executor, const char *run_id)
{
    if (o->n_cancels == o->cap_cancels) {
        size_t cap = o->cap_cancels ? o->cap_cancels * 2 : 4;
        void *v = realloc(o->cancels, cap * sizeof(*o->cancels));
        if (v == NULL)
            return APS_ENOMEM;
        o->cancels = v;
        o->cap_cancels = cap;
    }
    snprintf(o->cancels[o->n_cancels][0], sizeof(o->cancels[0][0]), "%s", executor);
    snprintf(o->cancels[o->n_cancels][1], sizeof(o->cancels[0][1]), "%s", run_id);
    o->n_cancels++;
    return 0;
}

/* Loads and decodes a job inside a transaction. */
static int
txn_load(aps_txn *t, const char *id, aps__jobrec **rec)
{
    const void *data = NULL;
    size_t len = 0;
    int rc = aps__txn_job_get(t, id, &data, &len, NULL);
    if (rc != 0)
        return rc;
    return aps__jobrec_decode(data, len, rec);
}

/* Encodes and stores a record; its next run time drives the due index. */
static int
txn_save(aps_txn *t, const aps__jobrec *rec)
{
    void *buf = NULL;
    size_t len = 0;
    int rc = aps__jobrec_encode(rec, &buf, &len);
    if (rc != 0)
        return rc;
    rc = aps__txn_job_put(t, rec->job.id, buf, len, rec->job.next_run_time);
    free(buf);
    return rc;
}

/* A request id record: 8 big-endian bytes of its time, then the job id it
 * concerned. Records that also hold the request's fingerprint set the top
 * bit of the time (times are positive) and put 8 bytes of it before the id;
 * older records have none and are not checked. A RunJobNow's record adds a
 * NUL and what it answered after the id: 'q' (queued) or '-', then the id
 * of the run it started, if any. */
#define REQ_HAS_FP 0x80u
#define REQ_ANSWER_MAX 33

/* Reads a request id record: its time, fingerprint (0: none), the job id
 * (id, idlen: not NUL-terminated) and, if `answer` is not NULL, what a
 * RunJobNow answered ("" if none). */
static int
request_parse(const void *data, size_t len, aps_time *at, uint64_t *fp, const char **id,
              size_t *idlen, char answer[REQ_ANSWER_MAX + 1])
{
    const unsigned char *b = data;
    size_t off = 8;
    uint64_t v = 0;
    if (len < 8)
        return APS_ECORRUPT;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    *fp = 0;
    if (b[0] & REQ_HAS_FP) {
        if (len < 16)
            return APS_ECORRUPT;
        v &= ~((uint64_t)REQ_HAS_FP << 56);
        for (int i = 8; i < 16; i++)
            *fp = *fp << 8 | b[i];
        off = 16;
    }
    *at = (aps_time)v;
    *id = (const char *)b + off;
    *idlen = len - off;
    const char *nul = memchr(*id, '\0', *idlen);
    size_t n = 0;
    if (nul != NULL) {
        n = *idlen - (size_t)(nul - *id) - 1;
        *idlen = (size_t)(nul - *id);
    }
    if (answer != NULL) {
        if (n > REQ_ANSWER_MAX)
            n = REQ_ANSWER_MAX;
        memcpy(answer, nul ? nul + 1 : "", n);
        answer[n] = '\0';
    }
    return 0;
}

/* Idempotency: 1 if the request id was seen within the retention window
 * (job_id gets the id it concerned, answer what a RunJobNow answered if
 * not NULL), 0 if not, APS_EINVAL if it was seen with a different request
 * fingerprint (a reused id, not a retry). */
static int
request_seen(aps_scheduler *s, aps_txn *t, const char *request_id, uint64_t fp, aps_time now,
             char *job_id, size_t job_id_len, char answer[REQ_ANSWER_MAX + 1])
{
    char key[APS_STORE_META_KEY_MAX + 1];
    const void *data = NULL;
    const char *id = NULL;
    size_t len = 0, idlen = 0;
    uint64_t seen_fp = 0;
    aps_time at = 0;

    if (request_id == NULL || request_id[0] == '\0')
        return 0;
    snprintf(key, sizeof(key), REQ_PREFIX "%s", request_id);
    if (aps__txn_meta_get(t, key, &data, &len) != 0 ||
        request_parse(data, len, &at, &seen_fp, &id, &idlen, answer) != 0)
        return 0;
    if (now - at > s->request_retention_us)
        return 0;
    if (fp != 0 && seen_fp != 0 && fp != seen_fp)
        return APS_EINVAL;
    size_t n = idlen < job_id_len - 1 ? idlen : job_id_len - 1;
    memcpy(job_id, id, n);
    job_id[n] = '\0';
    return 1;
}

static int
request_record(aps_txn *t, const char *request_id, uint64_t fp, aps_time now, const char *job_id,
               const char *answer)
{
    char key[APS_STORE_META_KEY_MAX + 1];
    unsigned char val[16 + APS__ID_MAX + 1 + REQ_ANSWER_MAX];
    size_t idlen = job_id ? strlen(job_id) : 0, off = 8;
    size_t alen = answer ? strnlen(answer, REQ_ANSWER_MAX) : 0;

    if (request_id == NULL || request_id[0] == '\0')
        return 0;
    snprintf(key, sizeof(key), REQ_PREFIX "%s", request_id);
    for (int i = 0; i < 8; i++)
        val[i] = (unsigned char)((uint64_t)now >> (56 - 8 * i));
    if (fp != 0) {
        val[0] |= REQ_HAS_FP;
        for (int i = 0; i < 8; i++)
            val[8 + i] = (unsigned char)(fp >> (56 - 8 * i));
        off = 16;
    }
    if (idlen > APS__ID_MAX)
        idlen = APS__ID_MAX;
    memcpy(val + off, job_id ? job_id : "", idlen);
    if (alen > 0) {
        val[off + idlen] = '\0';
        memcpy(val + off + idlen + 1, answer, alen);
        idlen += 1 + alen;
    }
    return aps__txn_meta_put(t, key, val, off + idlen);
}

static int
request_mismatch(aps_error *err, const char *request_id)
{
    return set_err(err, APS_EINVAL,
                   "request_id: reused with a different request (\"%.200s\" was first used, "
                   "within the retention window, for another one; a retry repeats it unchanged)",
                   request_id);
}

/* Whether a request id was recorded within the retention window, in any
 * store (outside a transaction: for retries whose job is gone); answer
 * gets what a RunJobNow answered. */
static int
request_known(aps_scheduler *s, const char *request_id, uint64_t fp, aps_time now,
              char answer[REQ_ANSWER_MAX + 1])
{
    char key[APS_STORE_META_KEY_MAX + 1];
    int known = 0;
    if (request_id == NULL || request_id[0] == '\0')
        return 0;
    snprintf(key, sizeof(key), REQ_PREFIX "%s", request_id);
    for (size_t i = 0; i < s->n_stores && known == 0; i++) {
        void *data = NULL;
        const char *id = NULL;
        size_t len = 0, idlen = 0;
        uint64_t seen_fp = 0;
        aps_time at = 0;
        if (aps__store_meta_get(s->stores[i].st, key, &data, &len) != 0)
            continue;
        if (request_parse(data, len, &at, &seen_fp, &id, &idlen, answer) == 0 &&
            now - at <= s->request_retention_us)
            known = fp != 0 && seen_fp != 0 && fp != seen_fp ? APS_EINVAL : 1;
        free(data);
    }
    return known;
}

static int
check_request_id(const char *request_id, aps_error *err)
{
    if (request_id == NULL)
        return 0;
    size_t n = strlen(request_id);
    if (n > APS_STORE_META_KEY_MAX - strlen(REQ_PREFIX))
        return set_err(err, APS_EINVAL, "request_id: longer than %zu bytes",
                       APS_STORE_META_KEY_MAX - strlen(REQ_PREFIX));
    return 0;
}

/* The durable run index: run/<run_id> -> the job id, NUL, the executor,
 * NUL, then the run times (8 bytes big-endian each), so that restart
 * recovery can report an interrupted run fully even when its job is gone
 * (a date job is removed when its run is submitted). Records of older
 * versions hold the job id alone. */
static int
put_run_index(aps_txn *t, const char *key, const aps_job *job, const aps_time *rts, size_t n)
{
    size_t idlen = strlen(job->id), exlen = strlen(job->executor);
    size_t len = idlen + 1 + exlen + 1 + 8 * n;
    unsigned char small[512]; /* a run's usual record: no allocation */
    unsigned char *v = len <= sizeof(small) ? small : malloc(len);
    if (v == NULL)
        return APS_ENOMEM;
    memcpy(v, job->id, idlen + 1);
    memcpy(v + idlen + 1, job->executor, exlen + 1);
    unsigned char *p = v + idlen + 1 + exlen + 1;
    for (size_t i = 0; i < n; i++) {
        uint64_t u = (uint64_t)rts[i];
        for (int b = 0; b < 8; b++)
            *p++ = (unsigned char)(u >> (56 - 8 * b));
    }
    int rc = aps__txn_meta_put(t, key, v, len);
    if (v != small)
        free(v);
    return rc;
}

/* The run index key of `run_id` (32 hex digits) into key (memcpy, not
 * snprintf: two per run, a measurable part of one). */
static void
run_key(char key[APS_STORE_META_KEY_MAX + 1], const char *run_id)
{
    size_t n = strnlen(run_id, APS_STORE_META_KEY_MAX - strlen(RUN_PREFIX));
    memcpy(key, RUN_PREFIX, strlen(RUN_PREFIX));
    memcpy(key + strlen(RUN_PREFIX), run_id, n);
    key[strlen(RUN_PREFIX) + n] = '\0';
}

/* Records a new running instance in rec (and the durable run index), emits
 * JOB_SUBMITTED, and queues the executor run. */
static int
start_run(aps_scheduler *s, aps_txn *t, wout *o, aps__jobrec *rec, const aps_time *rts, size_t n,
          int backfill, aps_time now)
{
    char run_id[33];
    char key[APS_STORE_META_KEY_MAX + 1];
    aps__run *run = NULL;
    int rc = aps__id_generate_ordered(run_id);
    if (rc != 0)
        return rc;
    if (!__atomic_load_n(&s->runs_made, __ATOMIC_RELAXED))
        __atomic_store_n(&s->runs_made, 1, __ATOMIC_RELEASE);
    aps__run_rec *v = realloc(rec->running, (rec->n_running + 1) * sizeof(*v));
    if (v == NULL)
        return APS_ENOMEM;
    rec->running = v;
    aps__run_rec *rr = &v[rec->n_running];
    memset(rr, 0, sizeof(*rr));
    memcpy(rr->run_id, run_id, sizeof(run_id));
    /* (memcpy: snprintf was a measurable part of a run) */
    memcpy(rr->executor, rec->job.executor, strnlen(rec->job.executor, sizeof(rr->executor) - 1));
    /* Committed ahead of its time, it is handed on at that time. */
    if (rts[0] > now)
        now = rts[0];
    rr->started = now;
    rr->run_times = malloc(n * sizeof(aps_time));
    if (rr->run_times == NULL)
        return APS_ENOMEM;
    memcpy(rr->run_times, rts, n * sizeof(aps_time));
    rr->n_run_times = n;
    rec->n_running++;

    if (store_persists(s, rec->job.jobstore)) {
        run_key(key, run_id);
        rc = put_run_index(t, key, &rec->job, rts, n);
        if (rc != 0)
            return rc;
    }
    rc = out_event(o, APS_EVENT_JOB_SUBMITTED, now, &rec->job, run_id, rts, n, NULL);
    if (rc != 0)
        return rc;
    rc = run_new(s, rec, run_id, rts, n, backfill, &run);
    if (rc != 0)
        return rc;
    rc = out_run(o, run);
    if (rc != 0)
        aps__run_free(run);
    return rc;
}

static int
push_pending(aps__jobrec *rec, const aps_time *rts, size_t n, int backfill)
{
    aps__pending *v = realloc(rec->pending, (rec->n_pending + 1) * sizeof(*v));
    if (v == NULL)
        return APS_ENOMEM;
    rec->pending = v;
    v[rec->n_pending].run_times = malloc(n * sizeof(aps_time));
    if (v[rec->n_pending].run_times == NULL)
        return APS_ENOMEM;
    memcpy(v[rec->n_pending].run_times, rts, n * sizeof(aps_time));
    v[rec->n_pending].n_run_times = n;
    v[rec->n_pending].backfill = backfill;
    rec->n_pending++;
    return 0;
}

/* Starts pending runs while instance slots are free (FIFO). */
static int
start_pending(aps_scheduler *s, aps_txn *t, wout *o, aps__jobrec *rec, aps_time now)
{
    uint32_t max = job_max_instances(s, &rec->job);
    while (rec->n_pending > 0 && rec->n_running < max) {
        aps__pending p = rec->pending[0];
        memmove(&rec->pending[0], &rec->pending[1], (rec->n_pending - 1) * sizeof(p));
        rec->n_pending--;
        int rc = start_run(s, t, o, rec, p.run_times, p.n_run_times, p.backfill, now);
        free(p.run_times);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* APScheduler's submit_job with the overlap policy: start the run, or skip
 * it (JOB_MAX_INSTANCES), or queue it, or cancel the oldest running one. */
static int
submit(aps_scheduler *s, aps_txn *t, wout *o, aps__jobrec *rec, const aps_time *rts, size_t n,
       aps_time now)
{
    uint32_t max = job_max_instances(s, &rec->job);
    /* Runs left queued by a shutdown go first, in order. */
    if (rec->n_pending > 0 && rec->n_running < max) {
        int rc = start_pending(s, t, o, rec, now);
        if (rc != 0)
            return rc;
    }
    if (rec->n_running < max && rec->n_pending == 0)
        return start_run(s, t, o, rec, rts, n, 0, now);
    /* A queued run was due on time; the wait for an instance slot is the
     * policy's, so it is not judged against misfire_grace_time again
     * (pushed as a backfill run is: exempt). */
    switch (job_overlap(&rec->job)) {
    case APS_OVERLAP_QUEUE_ONE:
        if (rec->n_pending == 0)
            return push_pending(rec, rts, n, 1);
        break;
    case APS_OVERLAP_QUEUE_ALL:
        if (rec->n_pending < PENDING_MAX)
            return push_pending(rec, rts, n, 1);
        break;
    case APS_OVERLAP_CANCEL_RUNNING:
        if (rec->n_running > 0) {
            int rc = out_cancel(o, rec->running[0].executor, rec->running[0].run_id);
            if (rc != 0)
                return rc;
        }
        if (rec->n_pending == 0)
            return push_pending(rec, rts, n, 1);
        break;
    default:
        break;
    }
    rec->job.stats.max_instance_skips++;
    return out_event(o, APS_EVENT_JOB_MAX_INSTANCES, now, &rec->job, NULL, rts, n, NULL);
}

/* ---- after a commit -------------------------------------------------------- */

/* Hands a committed run to its executor. A run its executor refuses
 * finishes at once as an error. */
static void
submit_run(aps_scheduler *s, aps__run *run)
{
    aps__executor *ex = find_exec(s, run->executor);
    int rc = ex ? ex->ops->submit(ex, run) : APS_ENOENT;
    if (rc == 0)
        return;
    char msg[160];
    if (ex == NULL)
        snprintf(msg, sizeof(msg), "no executor named \"%s\"", run->executor);
    else if (rc == APS_ELIMIT)
        snprintf(msg, sizeof(msg), "executor \"%s\": queue full (%u runs waiting)", run->executor,
                 ex->max_queue);
    else
        snprintf(msg, sizeof(msg), "executor \"%s\": %s", run->executor, aps_strerror(rc));
    for (size_t k = 0; k < run->n_run_times; k++) {
        run->results[k].run_time = run->run_times[k];
        run->results[k].started = aps__scheduler_now(s);
        run->results[k].outcome.status = APS_RUN_SPAWN_FAILED;
        run->results[k].outcome.error = strdup(msg);
    }
    aps__run_finished(run);
}

/* Before runs[0..n) are handed on: the stores record that runs up to the
 * latest of their times may have started (aps__store_handed), so that
 * after a crash those recorded as running past that time are known never
 * to have started. All stores get the same mark: a later one only makes
 * more runs count as possibly started. */
static void
handed_mark(aps_scheduler *s, aps__run **runs, size_t n)
{
    aps_time t = APS_TIME_NONE;
    for (size_t i = 0; i < n; i++) {
        if (runs[i]->n_run_times > 0 && runs[i]->run_times[0] > t)
            t = runs[i]->run_times[0];
    }
    aps_time cur = __atomic_load_n(&s->handed_max, __ATOMIC_ACQUIRE);
    if (t <= cur)
        return;
    for (size_t si = 0; si < s->n_stores; si++)
        aps__store_handed(s->stores[si].st, t);
    /* Raised only once the stores are: a caller that sees it skips them. */
    while (cur < t && !__atomic_compare_exchange_n(&s->handed_max, &cur, t, 1, __ATOMIC_RELEASE,
                                                   __ATOMIC_ACQUIRE))
        ;
}

/* A job to remove once its last run, committed ahead, is handed on. */
typedef struct aps__ended {
    char id[APS__ID_MAX + 1];
    char run_id[33];
    size_t si;
} aps__ended;

/* Before runs[0..n) are handed on: the jobs that those of them end (their
 * trigger ended with the run's commit, ahead of its time) are noted for
 * the loop to remove, now that the run is submitted as APScheduler would
 * submit it (process_ended). Out of memory, the job goes when the run
 * ends instead (done_fn). */
static void
ended_note(aps_scheduler *s, aps__run **runs, size_t n)
{
    int noted = 0;
    for (size_t i = 0; i < n; i++) {
        int si = runs[i]->ends_job ? find_store(s, runs[i]->jobstore) : -1;
        if (si < 0)
            continue;
        pthread_mutex_lock(&s->hold_mu);
        if (s->n_ended == s->cap_ended) {
            size_t cap = s->cap_ended ? s->cap_ended * 2 : 16;
            aps__ended *v = realloc(s->ended, cap * sizeof(*v));
            if (v != NULL) {
                s->ended = v;
                s->cap_ended = cap;
            }
        }
        if (s->n_ended < s->cap_ended) {
            aps__ended *e = &s->ended[s->n_ended++];
            snprintf(e->id, sizeof(e->id), "%s", runs[i]->job_id);
            memcpy(e->run_id, runs[i]->run_id, sizeof(e->run_id));
            e->si = (size_t)si;
            noted = 1;
        }
        pthread_mutex_unlock(&s->hold_mu);
    }
    if (noted)
        aps__scheduler_wake(s);
}

/* Hands committed runs to their executors, in order: runs of one executor
 * in a row go in one call where it takes several (one lock and at most a
 * wake-up per idle worker for a batch, instead of a lock and a wake-up per
 * run, fought over with the workers). */
static void
submit_runs(aps_scheduler *s, aps__run **runs, size_t n)
{
    size_t i = 0;
    handed_mark(s, runs, n);
    ended_note(s, runs, n);
    while (i < n) {
        aps__executor *ex = find_exec(s, runs[i]->executor);
        size_t j = i + 1;
        while (j < n && strcmp(runs[j]->executor, runs[i]->executor) == 0)
            j++;
        size_t k = ex != NULL && ex->ops->submit_many != NULL
                       ? ex->ops->submit_many(ex, runs + i, j - i)
                       : 0;
        for (; i + k < j; k++)
            submit_run(s, runs[i + k]); /* one by one: refused ones finish */
        i = j;
    }
}

/* ---- real-time priority of the timing threads ------------------------------- */

/* How long the loop may work through a backlog at real-time priority. */
#define RT_BUSY_US 50000

/* Thread `t` at SCHED_FIFO `prio`, or normal scheduling for 0; an errno. */
static int
rt_set(pthread_t t, int prio)
{
    struct sched_param sp;
    memset(&sp, 0, sizeof(sp));
    sp.sched_priority = prio;
    return pthread_setschedparam(t, prio > 0 ? SCHED_FIFO : SCHED_OTHER, &sp);
}

/* Asks for the configured priority for the calling thread, which is to run
 * the loop (blocking mode). */
static void
rt_loop_start(aps_scheduler *s)
{
    int got = s->loop_priority > 0 && rt_set(pthread_self(), s->loop_priority) == 0
                  ? s->loop_priority
                  : 0;
    __atomic_store_n(&s->loop_rt, got, __ATOMIC_RELEASE);
}

static void *
loop_main(void *arg);

/* Starts the loop thread (background mode), created at the configured
 * priority so that its first pass already has it; refused (EPERM), at
 * normal priority. loop_rt says which, before the thread runs. */
static int
loop_thread_create(aps_scheduler *s)
{
    if (s->loop_priority > 0) {
        pthread_attr_t a;
        struct sched_param sp;
        memset(&sp, 0, sizeof(sp));
        sp.sched_priority = s->loop_priority;
        if (pthread_attr_init(&a) == 0) {
            int ok = pthread_attr_setinheritsched(&a, PTHREAD_EXPLICIT_SCHED) == 0 &&
                     pthread_attr_setschedpolicy(&a, SCHED_FIFO) == 0 &&
                     pthread_attr_setschedparam(&a, &sp) == 0;
            __atomic_store_n(&s->loop_rt, s->loop_priority, __ATOMIC_RELEASE);
            ok = ok && pthread_create(&s->thread, &a, loop_main, s) == 0;
            pthread_attr_destroy(&a);
            if (ok)
                return 0;
        }
    }
    __atomic_store_n(&s->loop_rt, 0, __ATOMIC_RELEASE);
    return pthread_create(&s->thread, NULL, loop_main, s) != 0 ? APS_ENOMEM : 0;
}

/* Busy since it woke (loop_woke) for rt_busy_us, the loop drops to normal
 * priority until it sleeps again: waking on time needs the priority,
 * catching up a backlog must not starve other threads. Checked between the
 * batches of a pass too, so the priority is held at most about rt_busy_us
 * past its wake-up. Loop thread only (it owns loop_rt_on and loop_woke). */
static void
rt_busy_check(aps_scheduler *s)
{
    if (!s->loop_rt_on || __atomic_load_n(&s->loop_rt, __ATOMIC_ACQUIRE) == 0)
        return;
    aps_time now = aps__scheduler_now(s);
    if (now < s->loop_woke || now - s->loop_woke >= s->rt_busy_us)
        s->loop_rt_on = rt_set(pthread_self(), 0) != 0;
}

/* After a pass: `next` at or before now means the loop goes on at once
 * (busy); otherwise it sleeps, at the priority again. */
static void
rt_pace(aps_scheduler *s, int prio, aps_time next)
{
    if (next == APS_TIME_NONE || next > aps__scheduler_now(s)) {
        if (!s->loop_rt_on)
            s->loop_rt_on = rt_set(pthread_self(), prio) == 0;
        s->loop_woke = APS_TIME_NONE;
    } else {
        rt_busy_check(s);
    }
}

int
aps_scheduler_loop_priority(aps_scheduler *s)
{
    return s ? __atomic_load_n(&s->loop_rt, __ATOMIC_ACQUIRE) : 0;
}

/* ---- commit-ahead: the hold thread ------------------------------------------ */

static int
held_before(const aps__run *a, const aps__run *b)
{
    return a->run_times[0] < b->run_times[0];
}

/* A run withdrawn by a change to its job before it reached the hold
 * queue: committed in the same batch as the change, or queued by the loop
 * after the change looked (hold_withdraw). The run is kept for the change
 * when it arrives while the change's write is on its way (parked: the
 * write may fail, and give it back), dropped when it arrives after. */
typedef struct aps__tomb {
    char run_id[33];
    aps_time at;       /* the run's time: one never met is dropped after TOMB_KEEP_US */
    const void *owner; /* the change's `withdrawn` */
    int committed;     /* its write is committed */
    aps__run *parked;  /* arrived before that (not counted in n_running) */
} aps__tomb;

#define TOMB_KEEP_US (60 * US_PER_SEC)

/* hold_arrive's results. */
#define HOLD_QUEUED 0  /* waits in the queue for its time */
#define HOLD_PARKED 1  /* withdrawn, kept for the change that withdrew it */
#define HOLD_DROPPED 2 /* withdrawn by a committed change: the caller frees it */
#define HOLD_NOW 3     /* to hand on now: its time has come, or no hold thread */

/* Counts a run that ends its job into (+1) or out of (-1) its store's
 * held_ends as it enters or leaves the hold queue (hold_mu held). */
static void
held_ends_count(aps_scheduler *s, const aps__run *run, int delta)
{
    if (!run->ends_job)
        return;
    int si = find_store(s, run->jobstore);
    if (si >= 0)
        s->stores[si].held_ends += (size_t)(ssize_t)delta;
}

/* Queues a run in the heap (hold_mu held); 0, or APS_ENOMEM. *top: set
 * when it is the earliest now. */
static int
hold_insert(aps_scheduler *s, aps__run *run, int *top)
{
    if (s->n_held == s->cap_held) {
        size_t cap = s->cap_held ? s->cap_held * 2 : 256;
        aps__run **v = realloc(s->held, cap * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        s->held = v;
        s->cap_held = cap;
    }
    size_t i = s->n_held++;
    while (i > 0 && held_before(run, s->held[(i - 1) / 2])) {
        s->held[i] = s->held[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->held[i] = run;
    *top |= i == 0;
    held_ends_count(s, run, 1);
    return 0;
}

/* A committed run on its way to its executor (hold_mu held): withdrawn if
 * a tombstone names it, whatever its time; else queued while its time has
 * not come (`hold`: the hold thread runs; `now` read under hold_mu), else
 * (or out of memory) to hand on now. */
static int
hold_arrive(aps_scheduler *s, aps__run *run, int hold, aps_time now, int *top)
{
    for (size_t i = 0; i < s->n_tombs; i++) {
        aps__tomb *tb = &s->tombs[i];
        if (strcmp(tb->run_id, run->run_id) != 0)
            continue;
        if (!tb->committed) {
            tb->parked = run;
            return HOLD_PARKED;
        }
        s->tombs[i] = s->tombs[--s->n_tombs];
        return HOLD_DROPPED;
    }
    if (!hold || run->n_run_times == 0 || run->run_times[0] <= now)
        return HOLD_NOW;
    return hold_insert(s, run, top) == 0 ? HOLD_QUEUED : HOLD_NOW;
}

/* hold_arrive for runs[0..n) under one lock: those to hand on now are
 * moved to the front (returned: how many); those queued or withdrawn are
 * added to *queued and *gone (a dropped one freed). */
static size_t
hold_arrive_all(aps_scheduler *s, aps__run **runs, size_t n, size_t *queued, size_t *gone)
{
    int hold = __atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE), top = 0;
    size_t k = 0;
    pthread_mutex_lock(&s->hold_mu);
    aps_time now = aps__scheduler_now(s);
    for (size_t i = 0; i < n; i++) {
        int r = hold_arrive(s, runs[i], hold, now, &top);
        if (r == HOLD_DROPPED)
            aps__run_free(runs[i]);
        *queued += r == HOLD_QUEUED;
        *gone += r == HOLD_PARKED || r == HOLD_DROPPED;
        if (r == HOLD_NOW)
            runs[k++] = runs[i];
    }
    /* Only a new earliest run changes the hold thread's deadline. */
    if (top)
        pthread_cond_broadcast(&s->hold_cv);
    pthread_mutex_unlock(&s->hold_mu);
    return k;
}

/* Puts `run` at or below heap slot i, where it belongs (hold_mu held). */
static void
hold_sift_down(aps_scheduler *s, size_t i, aps__run *run)
{
    size_t n = s->n_held;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && held_before(s->held[c + 1], s->held[c]))
            c++;
        if (!held_before(s->held[c], run))
            break;
        s->held[i] = s->held[c];
        i = c;
    }
    s->held[i] = run;
}

/* Removes the earliest held run (hold_mu held, n_held > 0). */
static aps__run *
hold_pop(aps_scheduler *s)
{
    aps__run *top = s->held[0], *last = s->held[--s->n_held];
    if (s->n_held > 0)
        hold_sift_down(s, 0, last);
    held_ends_count(s, top, -1);
    return top;
}

/* hold_take, hold_mu held. */
static int
hold_take_locked(aps_scheduler *s, int (*match)(const aps__run *run, const void *arg),
                 const void *arg, aps__run ***out, size_t *n_out)
{
    aps__run **v = NULL;
    size_t n = 0, k = 0, j = 0;
    *out = NULL;
    *n_out = 0;
    for (size_t i = 0; i < s->n_held; i++)
        n += match(s->held[i], arg) != 0;
    if (n > 0 && (v = malloc(n * sizeof(*v))) == NULL)
        return APS_ENOMEM;
    for (size_t i = 0; n > 0 && i < s->n_held; i++) {
        if (match(s->held[i], arg)) {
            held_ends_count(s, s->held[i], -1);
            v[k++] = s->held[i];
        } else
            s->held[j++] = s->held[i];
    }
    if (n > 0) {
        s->n_held = j;
        for (size_t i = j / 2; i-- > 0;)
            hold_sift_down(s, i, s->held[i]);
    }
    *out = v;
    *n_out = k;
    return 0;
}

/* Takes the held runs (committed ahead, not handed on yet) that `match`
 * accepts out of the queue, into *out (n_out of them; the caller's array):
 * they will not start. One scan of the queue, under its lock, so a run is
 * either taken here or handed on, never both. */
static int
hold_take(aps_scheduler *s, int (*match)(const aps__run *run, const void *arg), const void *arg,
          aps__run ***out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (!__atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&s->hold_mu);
    int rc = hold_take_locked(s, match, arg, out, n_out);
    pthread_mutex_unlock(&s->hold_mu);
    return rc;
}

/* Hands each held run to its executor at its first run time. On stop it
 * hands on those whose time has come and ends, leaving the others (and
 * all of them while the scheduler is paused) to hold_stop's caller. */
static void *
hold_main(void *arg)
{
    aps_scheduler *s = arg;
    aps__run *batch[64];
    /* As the loop (rt_pace): at its priority while waiting, normal once
     * busy handing on runs for rt_busy_us. */
    int rt_on = 1;
    aps_time busy = APS_TIME_NONE;
    aps_time handed = APS_TIME_NONE; /* when runs were last handed on */
    pthread_mutex_lock(&s->hold_mu);
    for (;;) {
        int prio = __atomic_load_n(&s->loop_rt, __ATOMIC_ACQUIRE);
        if (s->n_held == 0) {
            if (s->hold_stop)
                break;
            busy = APS_TIME_NONE;
            if (prio > 0 && !rt_on)
                rt_on = rt_set(pthread_self(), prio) == 0;
            pthread_cond_wait(&s->hold_cv, &s->hold_mu);
            continue;
        }
        if (s->hold_paused && !s->hold_stop) {
            /* APScheduler submits nothing while paused: the runs wait for
             * the resume, and their executor applies misfire_grace_time. */
            pthread_cond_wait(&s->hold_cv, &s->hold_mu);
            continue;
        }
        aps_time due = s->held[0]->run_times[0], now = aps__scheduler_now(s);
        if (s->hold_stop && (s->hold_paused || due > now))
            break;
        /* Spaced as the loop's passes; a wall clock set back since the
         * last hand-off would otherwise hold runs for as long. */
        if (handed != APS_TIME_NONE && handed > now)
            handed = now;
        if (due > now && handed != APS_TIME_NONE && due - handed < s->spacing_us)
            due = handed + s->spacing_us;
        if (due > now) {
            struct timespec ts = {.tv_sec = due / US_PER_SEC,
                                  .tv_nsec = (long)(due % US_PER_SEC) * 1000};
            busy = APS_TIME_NONE;
            if (prio > 0 && !rt_on)
                rt_on = rt_set(pthread_self(), prio) == 0;
            pthread_cond_timedwait(&s->hold_cv, &s->hold_mu, &ts);
            continue;
        }
        if (busy == APS_TIME_NONE || now < busy)
            busy = now;
        else if (prio > 0 && rt_on && now - busy >= s->rt_busy_us)
            rt_on = rt_set(pthread_self(), 0) != 0;
        size_t n = 0;
        handed = now;
        while (n < 64 && s->n_held > 0 && s->held[0]->run_times[0] <= now)
            batch[n++] = hold_pop(s);
        pthread_mutex_unlock(&s->hold_mu);
        submit_runs(s, batch, n);
        pthread_mutex_lock(&s->hold_mu);
    }
    pthread_mutex_unlock(&s->hold_mu);
    return NULL;
}

static int
hold_start(aps_scheduler *s)
{
    s->hold_stop = 0;
    if (pthread_create(&s->hold_thread, NULL, hold_main, s) != 0)
        return APS_ENOMEM;
    pthread_setname_np(s->hold_thread, "aps-hold");
    /* It hands runs on at their time: the loop's priority, when allowed. */
    if (s->loop_priority > 0)
        (void)rt_set(s->hold_thread, s->loop_priority);
    __atomic_store_n(&s->hold_active, 1, __ATOMIC_RELEASE);
    return 0;
}

/* Stops the hold thread once the held runs whose time has come are handed
 * on; the others, which will not start, go to *left (n_left of them; the
 * caller's array and runs, still counted in n_running: withdraw_held). */
static void
hold_stop(aps_scheduler *s, aps__run ***left, size_t *n_left)
{
    *left = NULL;
    *n_left = 0;
    if (!s->hold_active)
        return;
    pthread_mutex_lock(&s->hold_mu);
    s->hold_stop = 1;
    pthread_cond_broadcast(&s->hold_cv);
    pthread_mutex_unlock(&s->hold_mu);
    pthread_join(s->hold_thread, NULL);
    pthread_mutex_lock(&s->hold_mu);
    /* The queue itself, so that this cannot fail for want of memory. */
    for (size_t i = 0; i < s->n_held; i++)
        held_ends_count(s, s->held[i], -1);
    *left = s->held;
    *n_left = s->n_held;
    s->held = NULL;
    s->n_held = s->cap_held = 0;
    __atomic_store_n(&s->hold_active, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->hold_mu);
}

/* Hands the runs of a committed write to their executors (those committed
 * ahead of their time to the hold thread) and publishes its events. */
static void
after_commit(aps_scheduler *s, wout *o)
{
    for (size_t i = 0; i < o->n_cancels; i++) {
        aps__executor *ex = find_exec(s, o->cancels[i][0]);
        if (ex != NULL)
            ex->ops->cancel(ex, o->cancels[i][1]);
    }
    o->n_cancels = 0;
    /* Counted before they can finish; those withdrawn meanwhile are not. */
    if (o->n_runs + o->n_queued > 0)
        __atomic_add_fetch(&s->n_running, o->n_runs + o->n_queued, __ATOMIC_RELAXED);
    o->n_queued = 0;
    size_t queued = 0, gone = 0, n = 0; /* n: the runs handed on now, in order */
    if (o->n_runs > 0)
        n = hold_arrive_all(s, o->runs, o->n_runs, &queued, &gone);
    if (gone > 0)
        __atomic_sub_fetch(&s->n_running, gone, __ATOMIC_RELAXED);
    submit_runs(s, o->runs, n);
    o->n_runs = 0;
    aps__events_publish(s, &o->evs);
}

/* After a committed write to store `si`: commits its events to the log
 * when the job store is not the log's, then hands its outputs on. */
static void
publish_out(aps_scheduler *s, size_t si, wout *o)
{
    if (si != s->log_store && o->evs.n > 0) {
        /* The change is durable; its events follow in a write of their own. */
        if (aps__events_commit(s, &o->evs) != 0)
            aps__evlist_clear(&o->evs);
    }
    after_commit(s, o);
}

/* Runs `fn` on store `si`, then publishes its outputs. */
static int
write_and_publish(aps_scheduler *s, size_t si, aps_write_fn fn, void *ctx, wout *o)
{
    int rc = aps__store_write(s->stores[si].st, fn, ctx);
    if (rc != 0) {
        reset_out(o);
        return rc;
    }
    publish_out(s, si, o);
    return 0;
}

/* Events on their way to the log's store (log_events_async). */
typedef struct logged_evs {
    aps_scheduler *s;
    aps__evlist evs;
    void (*then)(void *arg);
    void *then_arg;
} logged_evs;

static int
logged_append_fn(aps_txn *t, void *arg)
{
    logged_evs *l = arg;
    return aps__events_append(t, &l->evs);
}

static void
logged_done(void *arg, int rc)
{
    logged_evs *l = arg;
    if (rc == 0)
        aps__events_publish(l->s, &l->evs); /* takes the events */
    aps__evlist_dispose(&l->evs); /* not logged: dropped, as publish_out does */
    if (l->then != NULL)
        l->then(l->then_arg);
    free(l);
}

/* Takes the events of a committed write to a store other than the log's
 * and queues them for the log's store without waiting: they are published
 * once logged, then then(then_arg) runs (if given). 0, or APS_ENOMEM with
 * `evs` untouched (the caller commits them itself). */
static int
log_events_async(aps_scheduler *s, aps__evlist *evs, void (*then)(void *), void *then_arg)
{
    logged_evs *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return APS_ENOMEM;
    l->s = s;
    /* The events move; the encoding buffer stays with the caller's list. */
    l->evs.v = evs->v;
    l->evs.n = evs->n;
    l->evs.cap = evs->cap;
    evs->v = NULL;
    evs->n = evs->cap = 0;
    l->then = then;
    l->then_arg = then_arg;
    /* Nobody waits for the loop's own events (then == NULL): their commit
     * may be shared with the next few milliseconds' (store.h). */
    if (then == NULL)
        aps__store_write_lazy(s->stores[s->log_store].st, logged_append_fn, l, logged_done, l);
    else
        aps__store_write_async(s->stores[s->log_store].st, logged_append_fn, l, logged_done, l);
    return 0;
}

/* publish_out for the loop's own writes. The events of a store other than
 * the log's are queued for the log without waiting for their commit: the
 * next batch of due jobs is not held up by the log's fsync, and the runs of
 * those jobs (a volatile store's, which a crash loses anyway) do not wait
 * for it either. */
static void
loop_publish_out(aps_scheduler *s, size_t si, wout *o)
{
    if (si != s->log_store && o->evs.n > 0 && log_events_async(s, &o->evs, NULL, NULL) == 0) {
        after_commit(s, o);
        return;
    }
    publish_out(s, si, o);
}

/* write_and_publish for the loop's own writes (loop_publish_out). */
static int
loop_write_and_publish(aps_scheduler *s, size_t si, aps_write_fn fn, void *ctx, wout *o)
{
    int rc = aps__store_write(s->stores[si].st, fn, ctx);
    if (rc != 0) {
        reset_out(o);
        return rc;
    }
    loop_publish_out(s, si, o);
    return 0;
}

/* Appends the events when the store is the log's: same transaction. */
static int
events_in_txn(aps_scheduler *s, size_t si, aps_txn *t, wout *o)
{
    return si == s->log_store ? aps__events_append(t, &o->evs) : 0;
}

/* ---- runs withdrawn before their time ---------------------------------------- */

/* The index of run_id among rec's running instances, or rec->n_running. */
static size_t
running_find(const aps__jobrec *rec, const char *run_id)
{
    size_t i = 0;
    while (i < rec->n_running && strcmp(rec->running[i].run_id, run_id) != 0)
        i++;
    return i;
}

/* Takes run_id out of rec's running instances, if there. */
static void
running_drop(aps__jobrec *rec, const char *run_id)
{
    size_t i = running_find(rec, run_id);
    if (i == rec->n_running)
        return;
    aps__run_rec_clear(&rec->running[i]);
    memmove(&rec->running[i], &rec->running[i + 1],
            (rec->n_running - i - 1) * sizeof(rec->running[0]));
    rec->n_running--;
}

/* A change that may withdraw held runs (hold_withdraw, hold_take,
 * withdrawn_return) enters before its write and leaves once its runs are
 * settled (withdrawn_end or _return): the shutdown's withdrawal of the
 * held runs (withdraw_held) waits until none is on its way and holds new
 * ones back until its own write is done, so that a run is never judged
 * by both, nor a change judged against a run being withdrawn. On a store
 * writer thread (a completion's callback) nothing may wait, as the
 * withdrawal's write waits for that thread: there a change meets a closed
 * gate with APS_ESTATE (gate_refused), and an asynchronous add is put off
 * until the gate opens (aps_job_add_async). Returns 0 once entered. */
static int
gate_enter(aps_scheduler *s)
{
    int wait = !aps__store_on_writer();
    pthread_mutex_lock(&s->mu);
    if (s->gate_closed && wait) {
        s->gate_waiting++;
        while (s->gate_closed)
            pthread_cond_wait(&s->gate_cv, &s->mu);
        s->gate_waiting--;
    }
    int rc = s->gate_closed ? APS_ESTATE : 0;
    if (rc == 0)
        s->gate_n++;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int
gate_refused(aps_error *err)
{
    return set_err(err, APS_ESTATE,
                   "the scheduler is shutting down: a change from a job store's completion "
                   "callback may not wait for it there; make it from another thread");
}

static void
gate_leave(aps_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    if (--s->gate_n == 0 && s->gate_closed)
        pthread_cond_broadcast(&s->gate_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Runs committed ahead of their time (commit_ahead_us) and taken back
 * before it by a change to their job that APScheduler would have made
 * before submitting them: a removal, a pause, a resume, a modification.
 * Taken on the first run of the write's callback (hold_withdraw) and kept
 * if the store runs it again; after the write they are freed
 * (withdrawn_end), or queued again if it failed (withdrawn_return). */
typedef struct withdrawn {
    aps__run **runs; /* taken out of the hold queue */
    size_t n;
    struct {
        char run_id[33];
        aps_time at;
    } * ghosts; /* not in the queue yet: an aps__tomb each */
    size_t n_ghosts;
    int taken;
} withdrawn;

typedef struct job_key {
    const char *id, *jobstore;
} job_key;

static int
held_of_job(const aps__run *run, const void *arg)
{
    const job_key *k = arg;
    return strcmp(run->job_id, k->id) == 0 && strcmp(run->jobstore, k->jobstore) == 0;
}

static int
held_of_store(const aps__run *run, const void *arg)
{
    return strcmp(run->jobstore, (const char *)arg) == 0;
}

/* Withdraws rec's runs committed ahead whose time has not come, into w,
 * under hold_mu (the hold thread reads its clock and hands runs on under
 * it too, so a run is either still here or handed on before `now`): on the
 * callback's first run, those in the hold queue are taken out; on every
 * run, the others (committed in this batch before the change, or not yet
 * queued by the loop) get a tombstone, so that they are not queued when
 * they come. The store may run the callback again (a grown map, a failed
 * request in the batch); the loop's runs of this batch then have new ids:
 * the ghosts of runs no longer in rec go. (A run handed on early because
 * the queue could not grow, or before the wall clock was set back, would
 * get a tombstone too and still run: rare, and its end is then recorded
 * twice.) */
static int
hold_withdraw(aps_scheduler *s, withdrawn *w, const aps__jobrec *rec)
{
    job_key k = {rec->job.id, rec->job.jobstore};
    int rc = 0, top = 0;
    if (!__atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE)) {
        w->taken = 1; /* no commit-ahead (or shutting down: none queued now) */
        return 0;
    }
    pthread_mutex_lock(&s->hold_mu);
    aps_time now = aps__scheduler_now(s);
    if (!w->taken) {
        rc = hold_take_locked(s, held_of_job, &k, &w->runs, &w->n);
        w->taken = rc == 0;
        /* Tombstones whose run never came (see above) are not kept forever. */
        for (size_t i = 0; rc == 0 && i < s->n_tombs;) {
            if (s->tombs[i].committed && s->tombs[i].at < now - TOMB_KEEP_US)
                s->tombs[i] = s->tombs[--s->n_tombs];
            else
                i++;
        }
    }
    for (size_t i = 0; rc == 0 && i < w->n_ghosts;) {
        if (running_find(rec, w->ghosts[i].run_id) < rec->n_running) {
            i++;
            continue;
        }
        for (size_t t = 0; rc == 0 && t < s->n_tombs; t++) {
            aps__tomb *tb = &s->tombs[t];
            if (tb->owner != w || strcmp(tb->run_id, w->ghosts[i].run_id) != 0)
                continue;
            /* A run parked for a ghost gone is not withdrawn by this write:
             * queued (and counted) after all; out of memory, the write
             * fails and gives it back. */
            if (tb->parked != NULL && (rc = hold_insert(s, tb->parked, &top)) == 0)
                __atomic_add_fetch(&s->n_running, 1, __ATOMIC_RELAXED);
            if (rc == 0)
                s->tombs[t] = s->tombs[--s->n_tombs];
            break;
        }
        if (rc == 0)
            w->ghosts[i] = w->ghosts[--w->n_ghosts];
    }
    for (size_t i = 0; rc == 0 && i < rec->n_running; i++) {
        const aps__run_rec *r = &rec->running[i];
        size_t j = 0;
        if (r->started <= now)
            continue; /* started, or on its way to its executor */
        while (j < w->n && strcmp(w->runs[j]->run_id, r->run_id) != 0)
            j++;
        if (j < w->n)
            continue;
        for (j = 0; j < w->n_ghosts && strcmp(w->ghosts[j].run_id, r->run_id) != 0; j++)
            ;
        if (j < w->n_ghosts)
            continue;
        void *g = realloc(w->ghosts, (w->n_ghosts + 1) * sizeof(*w->ghosts));
        if (g == NULL) {
            rc = APS_ENOMEM;
            break;
        }
        w->ghosts = g;
        if (s->n_tombs == s->cap_tombs) {
            size_t cap = s->cap_tombs ? s->cap_tombs * 2 : 8;
            aps__tomb *v = realloc(s->tombs, cap * sizeof(*v));
            if (v == NULL) {
                rc = APS_ENOMEM;
                break;
            }
            s->tombs = v;
            s->cap_tombs = cap;
        }
        aps__tomb *tb = &s->tombs[s->n_tombs++];
        memset(tb, 0, sizeof(*tb));
        memcpy(tb->run_id, r->run_id, sizeof(tb->run_id));
        tb->at = r->started;
        tb->owner = w;
        memcpy(w->ghosts[w->n_ghosts].run_id, r->run_id, sizeof(r->run_id));
        w->ghosts[w->n_ghosts++].at = r->n_run_times > 0 ? r->run_times[0] : r->started;
    }
    if (top)
        pthread_cond_broadcast(&s->hold_cv);
    pthread_mutex_unlock(&s->hold_mu);
    return rc;
}

/* The ending of one withdrawn run in the write: out of rec's running
 * instances and the run index, and a JOB_ERROR per run time. */
static int
withdraw_one(aps_scheduler *s, aps_txn *t, wout *o, aps__jobrec *rec, const aps_job *fake,
             const char *run_id, const aps_time *rts, size_t n, aps_time now,
             const aps_outcome *out)
{
    char key[APS_STORE_META_KEY_MAX + 1];
    int rc = 0;
    if (store_persists(s, fake->jobstore)) {
        run_key(key, run_id);
        rc = aps__txn_meta_del(t, key);
        if (rc == APS_ENOENT)
            rc = 0;
    }
    for (size_t k = 0; k < n && rc == 0; k++) {
        aps_event *ev = NULL;
        rc = out_event(o, APS_EVENT_JOB_ERROR, now, fake, run_id, &rts[k], 1, &ev);
        if (rc == 0)
            rc = aps__outcome_copy(out, &ev->outcome);
    }
    if (rc == 0 && rec != NULL)
        running_drop(rec, run_id);
    return rc;
}

/* In the write: each withdrawn run leaves rec's running instances (rec is
 * NULL for a removal of all jobs) and the run index, and ends unstarted:
 * JOB_ERROR, status CANCELLED, saying why. */
static int
withdraw_in_txn(aps_scheduler *s, aps_txn *t, wout *o, const withdrawn *w, aps__jobrec *rec,
                aps_time now, const char *why)
{
    char msg[128];
    aps_outcome out;
    aps_job fake;
    int rc = 0;
    memset(&out, 0, sizeof(out));
    out.status = APS_RUN_CANCELLED;
    out.error = msg;
    snprintf(msg, sizeof(msg), "withdrawn before its time: %s", why);
    for (size_t i = 0; i < w->n && rc == 0; i++) {
        const aps__run *run = w->runs[i];
        memset(&fake, 0, sizeof(fake));
        fake.id = run->job_id;
        fake.jobstore = run->jobstore;
        fake.executor = run->executor;
        rc = withdraw_one(s, t, o, rec, &fake, run->run_id, run->run_times, run->n_run_times, now,
                          &out);
    }
    for (size_t i = 0; i < w->n_ghosts && rec != NULL && rc == 0; i++) {
        size_t k = running_find(rec, w->ghosts[i].run_id);
        if (k == rec->n_running)
            continue;
        const aps__run_rec *r = &rec->running[k];
        memset(&fake, 0, sizeof(fake));
        fake.id = rec->job.id;
        fake.jobstore = rec->job.jobstore;
        fake.executor = (char *)r->executor;
        rc = withdraw_one(s, t, o, rec, &fake, w->ghosts[i].run_id, r->run_times, r->n_run_times,
                          now, &out);
    }
    return rc;
}

/* The earliest time of w's runs; APS_TIME_NONE if none. */
static aps_time
withdrawn_first(const withdrawn *w)
{
    aps_time at = APS_TIME_NONE;
    for (size_t i = 0; i < w->n; i++) {
        if (w->runs[i]->n_run_times > 0 && (at == APS_TIME_NONE || w->runs[i]->run_times[0] < at))
            at = w->runs[i]->run_times[0];
    }
    for (size_t i = 0; i < w->n_ghosts; i++) {
        if (at == APS_TIME_NONE || w->ghosts[i].at < at)
            at = w->ghosts[i].at;
    }
    return at;
}

/* The earliest withdrawn run's time is the job's next run time again (its
 * commit had moved it on), unless the job is paused or due earlier. */
static void
withdrawn_comes_again(const withdrawn *w, aps__jobrec *rec)
{
    aps_time at = withdrawn_first(w);
    if (at != APS_TIME_NONE && !rec->job.paused &&
        (rec->job.next_run_time == APS_TIME_NONE || at < rec->job.next_run_time))
        rec->job.next_run_time = at;
}

/* w's tombstones (hold_mu held): removed, their parked runs into
 * parked[] (`parked` non-NULL: the write failed), or (NULL: committed)
 * the parked runs freed and the others kept, to drop their runs when they
 * come. Returns how many went into parked[]. */
static size_t
tombs_settle(aps_scheduler *s, const withdrawn *w, aps__run **parked)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_tombs;) {
        aps__tomb *tb = &s->tombs[i];
        if (tb->owner != w) {
            i++;
            continue;
        }
        if (parked == NULL && tb->parked == NULL) {
            tb->committed = 1;
            tb->owner = NULL;
            i++;
            continue;
        }
        if (parked != NULL && tb->parked != NULL)
            parked[n++] = tb->parked;
        else if (tb->parked != NULL)
            aps__run_free(tb->parked); /* (never counted in n_running) */
        s->tombs[i] = s->tombs[--s->n_tombs];
    }
    return n;
}

/* After the write that withdrew them: they end here, never started. */
static void
withdrawn_end(aps_scheduler *s, withdrawn *w)
{
    if (w->n_ghosts > 0) {
        pthread_mutex_lock(&s->hold_mu);
        tombs_settle(s, w, NULL);
        pthread_mutex_unlock(&s->hold_mu);
    }
    if (w->n > 0) {
        pthread_mutex_lock(&s->mu);
        __atomic_sub_fetch(&s->n_running, w->n, __ATOMIC_RELAXED);
        pthread_cond_broadcast(&s->idle_cv);
        pthread_mutex_unlock(&s->mu);
    }
    for (size_t i = 0; i < w->n; i++)
        aps__run_free(w->runs[i]);
    free(w->runs);
    free(w->ghosts);
    memset(w, 0, sizeof(*w));
}

/* After a write that failed: the runs are still committed, and go back to
 * wait for their time (handed on at once if it has come), as do those that
 * came while it was on its way. */
static void
withdrawn_return(aps_scheduler *s, withdrawn *w)
{
    size_t n = w->n, counted = w->n;
    aps__run **v = w->runs;
    if (w->n_ghosts > 0) {
        aps__run **nv = realloc(v, (w->n + w->n_ghosts) * sizeof(*v));
        pthread_mutex_lock(&s->hold_mu);
        if (nv != NULL) {
            v = nv;
            n += tombs_settle(s, w, v + w->n);
        } else {
            tombs_settle(s, w, NULL); /* out of memory: as if the change was made */
        }
        pthread_mutex_unlock(&s->hold_mu);
    }
    /* The taken runs are counted in n_running, the parked ones are not. */
    size_t queued = 0, gone = 0, k = 0;
    int hold = __atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE), top = 0;
    pthread_mutex_lock(&s->hold_mu);
    aps_time now = aps__scheduler_now(s);
    for (size_t i = 0; i < n; i++) {
        int r = hold_arrive(s, v[i], hold, now, &top);
        int was_counted = i < counted;
        if (r == HOLD_DROPPED)
            aps__run_free(v[i]);
        if (r == HOLD_PARKED || r == HOLD_DROPPED)
            gone += was_counted;
        else
            queued += !was_counted;
        if (r == HOLD_NOW)
            v[k++] = v[i];
    }
    if (top)
        pthread_cond_broadcast(&s->hold_cv);
    pthread_mutex_unlock(&s->hold_mu);
    if (queued > 0)
        __atomic_add_fetch(&s->n_running, queued, __ATOMIC_RELAXED);
    if (gone > 0)
        __atomic_sub_fetch(&s->n_running, gone, __ATOMIC_RELAXED);
    submit_runs(s, v, k);
    free(v);
    free(w->ghosts);
    memset(w, 0, sizeof(*w));
}

/* ---- lifecycle ------------------------------------------------------------- */

static int
load_state(aps_scheduler *s)
{
    void *data = NULL;
    size_t len = 0;
    int rc = aps__store_meta_get(s->stores[s->log_store].st, STATE_KEY, &data, &len);
    if (rc == APS_ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    if (len == 1 && ((unsigned char *)data)[0] == 1)
        s->state = APS_STATE_PAUSED;
    free(data);
    return 0;
}

static int
open_store(aps_scheduler *s, const aps_store_def *def, const aps_store_config *scfg,
           aps__store_slot *slot, aps_error *err)
{
    if (def->name == NULL || def->name[0] == '\0' || strlen(def->name) > APS__NAME64_MAX)
        return set_err(err, APS_EINVAL, "jobstores: a name of 1-%d bytes is required",
                       APS__NAME64_MAX);
    snprintf(slot->name, sizeof(slot->name), "%s", def->name);
    if (find_store(s, def->name) >= 0)
        return set_err(err, APS_EINVAL, "jobstores[%s]: defined twice", def->name);
    const char *type = def->type ? def->type : "memory";
    snprintf(slot->type, sizeof(slot->type), "%s", type);
    if (strcmp(type, "memory") == 0)
        return aps__store_open_memory(scfg, &slot->st, err);
    if (strcmp(type, "lmdb") == 0) {
        if (def->path == NULL || def->path[0] == '\0')
            return set_err(err, APS_EINVAL, "jobstores[%s].path: required for an lmdb store",
                           def->name);
        slot->durable = !scfg->no_sync;
        return aps__store_open_lmdb(def->path, scfg, &slot->st, err);
    }
    return set_err(err, APS_EINVAL, "jobstores[%s].type: unknown type \"%s\" (lmdb, memory)",
                   def->name, type);
}

int
aps_scheduler_create(const aps_scheduler_config *cfg, aps_scheduler **out, aps_error *err)
{
    static const aps_store_def default_store = {"default", "memory", NULL};
    static const aps_executor_def default_exec = {.name = "default", .type = "threadpool"};
    aps_scheduler_config none;
    aps_scheduler *s = NULL;
    aps_store_config scfg;
    pthread_condattr_t ca;
    int rc = APS_ENOMEM;

    if (out == NULL)
        return set_err(err, APS_EINVAL, "out: required");
    if (cfg == NULL) {
        memset(&none, 0, sizeof(none));
        cfg = &none;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return set_err(err, APS_ENOMEM, "out of memory");
    s->wake_fd = s->timer_fd = s->epoll_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->pause_mu, NULL);
    pthread_rwlock_init(&s->fn_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->sub_cv, &ca);
    pthread_cond_init(&s->idle_cv, &ca);
    pthread_cond_init(&s->gate_cv, &ca);
    pthread_mutex_init(&s->hold_mu, NULL);
    pthread_cond_init(&s->hold_cv, NULL);
    pthread_condattr_destroy(&ca);
    s->handed_max = APS_TIME_NONE;

    const char *tz = cfg->timezone ? cfg->timezone : "UTC";
    if (strlen(tz) >= sizeof(s->tz)) {
        rc = set_err(err, APS_EINVAL, "timezone: name too long");
        goto fail;
    }
    rc = aps_timezone_check(tz, err);
    if (rc != 0)
        goto fail;
    snprintf(s->tz, sizeof(s->tz), "%s", tz);
    s->default_coalesce = !cfg->default_no_coalesce;
    s->default_max_instances = cfg->default_max_instances ? cfg->default_max_instances : 1;
    s->default_unlimited_grace = cfg->default_misfire == APS_MISFIRE_UNLIMITED;
    s->default_grace_us = cfg->default_misfire == APS_MISFIRE_DURATION
                              ? cfg->default_misfire_grace_us
                              : US_PER_SEC;
    if (s->default_grace_us <= 0) {
        rc = set_err(err, APS_EINVAL, "job_defaults.misfire_grace_time: must be positive");
        goto fail;
    }
    s->clock.now = real_now;
    if (cfg->clock != NULL && cfg->clock->now != NULL)
        s->clock = *cfg->clock;
    s->request_retention_us =
        cfg->request_id_retention_us > 0 ? cfg->request_id_retention_us : 3600 * US_PER_SEC;
    s->jitter_seed = cfg->jitter_seed;
    /* Commit-ahead needs the real clock: the hold thread sleeps on it. */
    if (s->clock.now == real_now && cfg->commit_ahead_us >= 0)
        s->ahead_us = cfg->commit_ahead_us > 0 ? cfg->commit_ahead_us : COMMIT_AHEAD_US;
    s->ahead_max_us = cfg->commit_ahead_max_us > 0    ? cfg->commit_ahead_max_us
                      : cfg->commit_ahead_max_us == 0 ? COMMIT_AHEAD_MAX_US
                                                      : 0;
    if (cfg->loop_priority < 0 || cfg->loop_priority > 99) {
        rc = set_err(err, APS_EINVAL, "loop_priority: 0-99 (SCHED_FIFO), not %d",
                     cfg->loop_priority);
        goto fail;
    }
    s->loop_priority = cfg->loop_priority;
    if (cfg->pass_spacing_us > PASS_SPACING_MAX_US) {
        rc = set_err(err, APS_EINVAL,
                     "pass_spacing_us: at most %d (1 s), not %" PRId64 "; 0 = the default, 250",
                     PASS_SPACING_MAX_US, cfg->pass_spacing_us);
        goto fail;
    }
    /* An injected clock moves only when told: spacing on it would hold
     * due times back from tests that step it exactly. */
    if (s->clock.now == real_now && cfg->pass_spacing_us >= 0)
        s->spacing_us = cfg->pass_spacing_us > 0 ? cfg->pass_spacing_us : PASS_SPACING_US;
    s->rt_busy_us = RT_BUSY_US;
    s->loop_woke = APS_TIME_NONE;

    memset(&scfg, 0, sizeof(scfg));
    scfg.event_max_count = cfg->event_max_count ? cfg->event_max_count : 100000;
    scfg.event_max_age_us =
        cfg->event_max_age_us > 0 ? cfg->event_max_age_us : 7 * 86400 * US_PER_SEC;
    scfg.no_sync = cfg->no_sync;
    scfg.write_window = cfg->write_window_bytes > 0 ? (size_t)cfg->write_window_bytes : 0;
    scfg.clock = s->clock; /* events are stamped by it: aged by it too */
    scfg.reserve_bytes = cfg->disk_reserve_bytes < 0    ? 0
                         : cfg->disk_reserve_bytes == 0 ? DISK_RESERVE_BYTES
                                                        : (size_t)cfg->disk_reserve_bytes;
    s->disk_reserve_bytes = scfg.reserve_bytes;
    scfg.allow_network_fs = cfg->allow_network_fs;

    const aps_store_def *sdefs = cfg->n_stores ? cfg->stores : &default_store;
    size_t n_sdefs = cfg->n_stores ? cfg->n_stores : 1;
    s->stores = calloc(n_sdefs, sizeof(*s->stores));
    if (s->stores == NULL) {
        rc = set_err(err, APS_ENOMEM, "out of memory");
        goto fail;
    }
    s->log_store = SIZE_MAX;
    for (size_t i = 0; i < n_sdefs; i++) {
        rc = open_store(s, &sdefs[i], &scfg, &s->stores[i], err);
        if (rc != 0)
            goto fail;
        s->n_stores++;
        /* The event log lives in the first persistent store (else the first). */
        if (s->log_store == SIZE_MAX && strcmp(s->stores[i].type, "lmdb") == 0)
            s->log_store = i;
    }
    if (s->log_store == SIZE_MAX)
        s->log_store = 0;

    const aps_executor_def *edefs = cfg->n_executors ? cfg->executors : &default_exec;
    size_t n_edefs = cfg->n_executors ? cfg->n_executors : 1;
    s->execs = calloc(n_edefs, sizeof(*s->execs));
    if (s->execs == NULL) {
        rc = set_err(err, APS_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_edefs; i++) {
        const aps_executor_def *d = &edefs[i];
        if (d->name == NULL || d->name[0] == '\0' || strlen(d->name) > APS__NAME64_MAX) {
            rc = set_err(err, APS_EINVAL, "executors: a name of 1-%d bytes is required",
                         APS__NAME64_MAX);
            goto fail;
        }
        if (find_exec(s, d->name) != NULL) {
            rc = set_err(err, APS_EINVAL, "executors[%s]: defined twice", d->name);
            goto fail;
        }
        const char *type = d->type ? d->type : "threadpool";
        aps__executor_create_fn create = NULL;
        for (size_t k = 0; k < sizeof(exec_kinds) / sizeof(exec_kinds[0]); k++) {
            if (strcmp(exec_kinds[k].type, type) == 0)
                create = exec_kinds[k].create;
        }
        if (create == NULL) {
            rc = set_err(err, APS_EINVAL, "executors[%s].type: unknown type \"%s\"", d->name,
                         type);
            goto fail;
        }
        rc = create(s, d, &s->execs[i].ex, err);
        if (rc != 0)
            goto fail;
        snprintf(s->execs[i].name, sizeof(s->execs[i].name), "%s", d->name);
        s->n_execs++;
    }

    uint64_t first = 0, last = 0;
    rc = aps__store_event_bounds(s->stores[s->log_store].st, &first, &last);
    if (rc != 0) {
        set_err(err, rc, "event log: %s", aps_strerror(rc));
        goto fail;
    }
    s->ring_first = s->ring_next = last + 1;
    rc = load_state(s);
    if (rc != 0) {
        set_err(err, rc, "scheduler state: %s", aps_strerror(rc));
        goto fail;
    }
    if (s->state != APS_STATE_PAUSED)
        s->state = APS_STATE_STOPPED;

    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->timer_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
    s->timer_armed = APS_TIME_NONE;
    s->loop_next = APS_TIME_NONE; /* finished runs wake the loop until its first pass */
    s->pass_wake = APS_TIME_NONE;
    s->completion_slack_us = COMPLETION_SLACK_US;
    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->wake_fd < 0 || s->timer_fd < 0 || s->epoll_fd < 0) {
        rc = set_err(err, APS_EIO, "eventfd/timerfd/epoll: %s", strerror(errno));
        goto fail;
    }
    struct epoll_event ee = {.events = EPOLLIN};
    ee.data.fd = s->wake_fd;
    epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->wake_fd, &ee);
    ee.data.fd = s->timer_fd;
    epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, s->timer_fd, &ee);
    *out = s;
    return 0;

fail:
    aps_scheduler_destroy(s);
    return rc;
}

int
aps_scheduler_register_function(aps_scheduler *s, const char *name, aps_job_fn fn, void *userdata)
{
    if (s == NULL || name == NULL || name[0] == '\0' || fn == NULL)
        return APS_EINVAL;
    pthread_rwlock_wrlock(&s->fn_lock);
    for (size_t i = 0; i < s->n_functions; i++) {
        if (strcmp(s->functions[i].name, name) == 0) {
            s->functions[i].fn = fn;
            s->functions[i].userdata = userdata;
            pthread_rwlock_unlock(&s->fn_lock);
            return 0;
        }
    }
    aps__function *v = realloc(s->functions, (s->n_functions + 1) * sizeof(*v));
    char *copy = strdup(name);
    if (v == NULL || copy == NULL) {
        if (v != NULL)
            s->functions = v;
        free(copy);
        pthread_rwlock_unlock(&s->fn_lock);
        return APS_ENOMEM;
    }
    s->functions = v;
    v[s->n_functions++] = (aps__function){copy, fn, userdata};
    pthread_rwlock_unlock(&s->fn_lock);
    return 0;
}

aps_scheduler_state
aps_scheduler_get_state(aps_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    aps_scheduler_state st = s->started ? s->state : APS_STATE_STOPPED;
    pthread_mutex_unlock(&s->mu);
    return st;
}

int
aps_scheduler_fd(aps_scheduler *s)
{
    return s ? s->epoll_fd : -1;
}

/* ---- the scheduler-level events -------------------------------------------- */

typedef struct sched_ev_ctx {
    aps_scheduler *s;
    aps_event_type type;
    const char *name; /* executor / store name, or NULL */
    int set_paused;   /* -1 = leave, 0/1 = persist the paused state */
    const char *request_id;
    wout o;
} sched_ev_ctx;

static int
sched_ev_fn(aps_txn *t, void *arg)
{
    sched_ev_ctx *c = arg;
    aps_time now = aps__scheduler_now(c->s);
    /* JOBSTORE_* carry the store, EXECUTOR_* the executor. */
    int ex = c->type == APS_EVENT_EXECUTOR_ADDED || c->type == APS_EVENT_EXECUTOR_REMOVED;
    reset_out(&c->o);
    int rc = out_named_event(&c->o, c->type, now, ex ? NULL : c->name, ex ? c->name : NULL);
    if (rc != 0)
        return rc;
    if (c->set_paused >= 0) {
        unsigned char v = (unsigned char)c->set_paused;
        rc = aps__txn_meta_put(t, STATE_KEY, &v, 1);
        if (rc != 0)
            return rc;
    }
    return aps__events_append(t, &c->o.evs);
}

static int
sched_event(aps_scheduler *s, aps_event_type type, const char *name, int set_paused)
{
    sched_ev_ctx c;
    memset(&c, 0, sizeof(c));
    c.s = s;
    c.type = type;
    c.name = name;
    c.set_paused = set_paused;
    int rc = write_and_publish(s, s->log_store, sched_ev_fn, &c, &c.o);
    free_out(&c.o);
    return rc;
}

/* Pause and resume: the same steps, the event, the persisted flag and the
 * state they lead to aside. */
static int
pause_resume(aps_scheduler *s, int paused)
{
    if (s == NULL)
        return APS_EINVAL;
    pthread_mutex_lock(&s->pause_mu);
    pthread_mutex_lock(&s->mu);
    int running = s->started && !s->stopping;
    int change = s->state != (paused ? APS_STATE_PAUSED : APS_STATE_RUNNING);
    pthread_mutex_unlock(&s->mu);
    int rc = 0;
    /* APScheduler acts (and emits its event) only on a change of state. */
    if (!running)
        rc = APS_ESTATE; /* APScheduler: SchedulerNotRunningError */
    else if (change)
        rc = sched_event(s, paused ? APS_EVENT_SCHEDULER_PAUSED : APS_EVENT_SCHEDULER_RESUMED, NULL,
                         paused);
    if (rc == 0 && change) {
        pthread_mutex_lock(&s->mu);
        s->state = paused ? APS_STATE_PAUSED : APS_STATE_RUNNING;
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->hold_mu);
        s->hold_paused = paused;
        pthread_cond_broadcast(&s->hold_cv);
        pthread_mutex_unlock(&s->hold_mu);
        aps__scheduler_wake(s);
    }
    pthread_mutex_unlock(&s->pause_mu);
    return rc;
}

int
aps_scheduler_pause(aps_scheduler *s)
{
    return pause_resume(s, 1);
}

int
aps_scheduler_resume(aps_scheduler *s)
{
    return pause_resume(s, 0);
}

/* ---- job API ---------------------------------------------------------------- */

/* The store holding job `id`, or -1: then *rc is 0 when no store has it,
 * else the error of a store that could not be read (all its readers busy,
 * an environment being reopened), which is not "no such job". */
static int
locate(aps_scheduler *s, const char *id, int *rc)
{
    *rc = 0;
    for (size_t i = 0; i < s->n_stores; i++) {
        int r = aps__store_job_get(s->stores[i].st, id, NULL, NULL, NULL);
        if (r == 0) {
            *rc = 0;
            return (int)i;
        }
        if (r != APS_ENOENT && *rc == 0)
            *rc = r;
    }
    return -1;
}

/* A trigger compiled for the job's spec (jitter seeded from the config). */
static int
compile_trigger(aps_scheduler *s, const aps_trigger_spec *spec, aps_time now, aps_trigger **out,
                aps_error *err)
{
    int rc = aps_trigger_create(spec, s->tz, now, out, err);
    if (rc == 0 && s->jitter_seed != 0)
        aps_trigger_seed(*out, s->jitter_seed);
    return rc;
}

/* First fire time of a trigger from now (APScheduler: get_next_fire_time(None, now)). */
static int
first_fire(aps_scheduler *s, const aps_trigger_spec *spec, aps_time now, aps_time *next)
{
    aps_trigger *trig = NULL;
    int rc = compile_trigger(s, spec, now, &trig, NULL);
    if (rc != 0)
        return rc;
    rc = aps_trigger_next(trig, APS_TIME_NONE, now, next);
    aps_trigger_destroy(trig);
    return rc;
}

/* One add in flight: what add_fn writes and what the caller gets back. */
typedef struct add_ctx {
    aps_scheduler *s;
    size_t si;
    aps__jobrec *rec; /* owned */
    int replace;
    char *request_id; /* owned */
    uint64_t request_fp;
    aps_time now;
    char replay_id[APS__ID_MAX + 1];
    int replayed;
    int space_low;      /* the store gave its disk reserve back: no new job */
    aps__jobrec *saved; /* the record as written when it is not `rec` (a replace) */
    withdrawn w;        /* a replaced job's run committed ahead */
    wout o;
    aps_job_add_cb cb; /* asynchronous adds */
    void *ud;
    struct add_ctx *later; /* s->gate_later's list */
} add_ctx;

static int
add_fn(aps_txn *t, void *arg)
{
    add_ctx *c = arg;
    aps__jobrec *old = NULL, *copy = NULL;
    int rc;

    reset_out(&c->o);
    aps__jobrec_free(c->saved); /* the callback may run again (a grown map) */
    c->saved = NULL;
    c->replayed = request_seen(c->s, t, c->request_id, c->request_fp, c->now, c->replay_id,
                               sizeof(c->replay_id), NULL);
    if (c->replayed != 0)
        return c->replayed < 0 ? c->replayed : 0;
    rc = txn_load(t, c->rec->job.id, &old);
    if (rc == 0 && !c->replace) {
        aps__jobrec_free(old);
        return APS_EEXIST;
    }
    if (rc != 0 && rc != APS_ENOENT)
        return rc;
    /* Refused: a new job. A replay writes nothing new, a replacement about
     * as much as it replaces. */
    if (old == NULL && c->space_low)
        return APS_ENOSPC;
    const aps__jobrec *save = c->rec;
    if (old != NULL) {
        /* replace_existing keeps the creation time, statistics and the runs
         * in flight of the job it replaces. */
        rc = aps__jobrec_copy(c->rec, &copy);
        if (rc != 0)
            goto out;
        copy->job.create_time = old->job.create_time;
        copy->job.stats = old->job.stats;
        free(copy->lateness);
        copy->lateness = old->lateness;
        old->lateness = NULL;
        copy->n_lateness = old->n_lateness;
        copy->lateness_pos = old->lateness_pos;
        copy->running = old->running;
        copy->n_running = old->n_running;
        old->running = NULL;
        old->n_running = 0;
        save = copy;
        /* Not yet started, the old job's run is withdrawn: the new one is
         * due at that time too, and would run twice. */
        rc = hold_withdraw(c->s, &c->w, copy);
        if (rc == 0)
            rc = withdraw_in_txn(c->s, t, &c->o, &c->w, copy, c->now, "the job was replaced");
        if (rc != 0)
            goto out;
    }
    rc = txn_save(t, save);
    if (rc == 0)
        rc = out_event(&c->o, APS_EVENT_JOB_ADDED, c->now, &save->job, NULL, NULL, 0, NULL);
    if (rc == 0)
        rc = events_in_txn(c->s, c->si, t, &c->o);
    if (rc == 0)
        rc = request_record(t, c->request_id, c->request_fp, c->now, save->job.id, NULL);
    if (rc == 0 && copy != NULL) {
        c->saved = copy;
        copy = NULL;
    }
out:
    aps__jobrec_free(copy);
    aps__jobrec_free(old);
    return rc;
}

static void
add_free(add_ctx *c)
{
    if (c == NULL)
        return;
    free_out(&c->o);
    aps__jobrec_free(c->saved);
    aps__jobrec_free(c->rec);
    free(c->request_id);
    free(c);
}

/* Validates the spec and builds the record to write: everything of an add
 * that needs no write transaction. */
static int
add_prepare(aps_scheduler *s, const aps_job_spec *spec, const aps_mutation *m, add_ctx **out,
            aps_error *err)
{
    add_ctx *c = NULL;
    int rc;

    *out = NULL;
    if (s == NULL || spec == NULL)
        return set_err(err, APS_EINVAL, "job: required");
    const char *request_id = m ? m->request_id : NULL;
    rc = check_request_id(request_id, err);
    if (rc != 0)
        return rc;
    c = calloc(1, sizeof(*c));
    if (c == NULL || (request_id != NULL && (c->request_id = strdup(request_id)) == NULL)) {
        rc = set_err(err, APS_ENOMEM, "out of memory");
        goto fail;
    }
    c->s = s;
    c->replace = m ? m->replace_existing : 0;
    c->request_fp = m ? m->request_fingerprint : 0;
    c->now = aps__scheduler_now(s);
    rc = aps__jobrec_from_spec(spec, s->tz, c->now, &c->rec, err);
    if (rc != 0)
        goto fail;
    aps__jobrec *rec = c->rec;
    int si = find_store(s, rec->job.jobstore);
    if (si < 0) {
        rc = set_err(err, APS_EINVAL, "jobstore: no job store named \"%s\"", rec->job.jobstore);
        goto fail;
    }
    c->si = (size_t)si;
    c->space_low = aps__store_space_low(s->stores[si].st);
    if (find_exec(s, rec->job.executor) == NULL) {
        rc = set_err(err, APS_EINVAL, "executor: no executor named \"%s\"", rec->job.executor);
        goto fail;
    }
    /* The first run: the given next_run_time, else the trigger's first fire
     * time (a trigger that never fires gives a paused job, as APScheduler). */
    if (rec->job.paused) {
        rec->job.next_run_time = APS_TIME_NONE;
    } else if (spec->next_run_time == APS_TIME_NONE) {
        rc = first_fire(s, rec->job.trigger, c->now, &rec->job.next_run_time);
        if (rc == APS_EINVAL) {
            /* The combination search gives up rather than loop forever. */
            set_err(err, rc, "trigger: no fire time could be found (an all_of whose triggers "
                             "never coincide? PreviewTrigger shows what a trigger fires)");
            goto fail;
        }
        if (rc != 0) {
            set_err(err, rc, "trigger: %s", aps_strerror(rc));
            goto fail;
        }
        if (rec->job.next_run_time == APS_TIME_NONE)
            rec->job.paused = 1;
    }
    /* Ids are unique across stores (a store that cannot be read cannot
     * tell: an error, not "absent"). */
    for (size_t i = 0; i < s->n_stores; i++) {
        if ((int)i == si)
            continue;
        int r = aps__store_job_get(s->stores[i].st, rec->job.id, NULL, NULL, NULL);
        if (r == 0) {
            rc = set_err(err, APS_EEXIST, "id: job \"%s\" exists in job store \"%s\"",
                         rec->job.id, s->stores[i].name);
            goto fail;
        }
        if (r != APS_ENOENT) {
            rc = set_err(err, r, "job store \"%s\" could not be read (%s)", s->stores[i].name,
                         aps_strerror(r));
            goto fail;
        }
    }
    *out = c;
    return 0;
fail:
    add_free(c);
    return rc;
}

/* APS_ENOSPC: `what` is refused while store `si` has given its disk reserve
 * back (aps__store_space_low). */
static int
space_low_err(aps_scheduler *s, size_t si, const char *what, aps_error *err)
{
    size_t need = s->disk_reserve_bytes * 2;
    int mib = need >= (size_t)1 << 20;
    return set_err(err, APS_ENOSPC,
                   "job store \"%s\": no space left on its disk; its reserve was given back so "
                   "that stored jobs keep firing, and %s are refused until %zu %s are free "
                   "there (stored jobs can still be changed or removed)",
                   s->stores[si].name, what, mib ? need >> 20 : need >> 10, mib ? "MiB" : "KiB");
}

/* `rc`, a failed write to store si, with a message for the caller. */
static int
store_err(aps_scheduler *s, size_t si, int rc, aps_error *err)
{
    return set_err(err, rc, "job store \"%s\": %s", s->stores[si].name, aps_strerror(rc));
}

/* After add_fn's write returned `rc` (and its outputs were published or
 * dropped): the result for the caller. */
static int
add_finish(add_ctx *c, int rc, aps_job **out, aps_error *err)
{
    aps_scheduler *s = c->s;
    if (rc == 0)
        withdrawn_end(s, &c->w);
    else
        withdrawn_return(s, &c->w);
    if (c->replace)
        gate_leave(s);
    if (rc == APS_EINVAL && c->replayed < 0)
        return request_mismatch(err, c->request_id);
    if (rc == APS_EEXIST)
        return set_err(err, rc, "id: a job with id \"%s\" already exists", c->rec->job.id);
    if (rc == APS_ENOSPC && c->space_low)
        return space_low_err(s, c->si, "new jobs", err);
    if (rc != 0)
        return store_err(s, c->si, rc, err);
    wake_for(s, (c->saved ? c->saved : c->rec)->job.next_run_time);
    /* The job as written: it may fire and be gone before a re-read. A
     * replay answers with the job as it is now, if it still exists. */
    if (out == NULL)
        return 0;
    if (!c->replayed)
        return aps__job_from_rec(c->saved ? c->saved : c->rec, out);
    rc = aps_job_get(s, c->replay_id, out);
    if (rc == APS_ENOENT) {
        free(c->rec->job.id);
        c->rec->job.id = strdup(c->replay_id);
        rc = c->rec->job.id ? aps__job_from_rec(c->rec, out) : APS_ENOMEM;
    }
    return rc;
}

int
aps_job_add(aps_scheduler *s, const aps_job_spec *spec, const aps_mutation *m, aps_job **out,
            aps_error *err)
{
    add_ctx *c = NULL;

    if (out)
        *out = NULL;
    int rc = add_prepare(s, spec, m, &c, err);
    if (rc != 0)
        return rc;
    if (c->replace && gate_enter(s) != 0) {
        add_free(c);
        return gate_refused(err);
    }
    rc = write_and_publish(s, c->si, add_fn, c, &c->o);
    rc = add_finish(c, rc, out, err);
    add_free(c);
    return rc;
}

/* The end of an asynchronous add: its outputs handed on, the caller told. */
static void
add_complete(add_ctx *c, int rc)
{
    aps_error err = {0};
    aps_job *job = NULL;

    if (rc == 0)
        after_commit(c->s, &c->o);
    else
        reset_out(&c->o);
    rc = add_finish(c, rc, &job, &err);
    c->cb(c->ud, rc, job, &err);
    add_free(c);
}

static void
add_logged(void *arg)
{
    add_complete(arg, 0);
}

static void
add_done(void *arg, int rc)
{
    add_ctx *c = arg;
    if (rc == 0 && c->si != c->s->log_store && c->o.evs.n > 0) {
        /* The job is durable; its event goes to the log's store in a write
         * of its own, without blocking this thread either; the caller hears
         * once it is there. */
        if (log_events_async(c->s, &c->o.evs, add_logged, c) == 0)
            return;
        if (aps__events_commit(c->s, &c->o.evs) != 0)
            aps__evlist_clear(&c->o.evs); /* as publish_out: the job is durable */
    }
    add_complete(c, rc);
}

void
aps_job_add_async(aps_scheduler *s, const aps_job_spec *spec, const aps_mutation *m,
                  aps_job_add_cb cb, void *userdata)
{
    aps_error err = {0};
    add_ctx *c = NULL;

    int rc = add_prepare(s, spec, m, &c, &err);
    if (rc != 0) {
        cb(userdata, rc, NULL, &err);
        return;
    }
    c->cb = cb;
    c->ud = userdata;
    if (c->replace && gate_enter(s) != 0) {
        /* On a store writer thread while a shutdown withdraws the held
         * runs: put off until that is written (finalize), unless the gate
         * opened meanwhile. */
        pthread_mutex_lock(&s->mu);
        if (s->gate_closed) {
            add_ctx **end = &s->gate_later;
            while (*end != NULL)
                end = &(*end)->later;
            *end = c;
            pthread_mutex_unlock(&s->mu);
            return;
        }
        s->gate_n++;
        pthread_mutex_unlock(&s->mu);
    }
    aps__store_write_async(s->stores[c->si].st, add_fn, c, add_done, c);
}

/* Opens the gate (finalize) once the asynchronous adds put off while it
 * was closed are on their way, in the order they were made: those put off
 * meanwhile (by the callbacks of those) too, so that none of them comes
 * after a later change made on the same thread. */
static void
gate_open(aps_scheduler *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->gate_later != NULL) {
        add_ctx *c = s->gate_later;
        s->gate_later = NULL;
        for (add_ctx *k = c; k != NULL; k = k->later)
            s->gate_n++; /* each leaves in add_finish */
        /* Unlocked: a memory store's write completes on this thread. */
        pthread_mutex_unlock(&s->mu);
        while (c != NULL) {
            add_ctx *next = c->later;
            c->later = NULL;
            aps__store_write_async(s->stores[c->si].st, add_fn, c, add_done, c);
            c = next;
        }
        pthread_mutex_lock(&s->mu);
    }
    s->gate_closed = 0;
    pthread_cond_broadcast(&s->gate_cv);
    pthread_mutex_unlock(&s->mu);
}

/* Whether run `run_id` waits in the hold queue (its time came while the
 * scheduler is paused: it is handed on at the resume). */
static int
held_while_paused(aps_scheduler *s, const char *run_id)
{
    int found = 0;
    if (!__atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&s->hold_mu);
    for (size_t i = 0; s->hold_paused && i < s->n_held && !found; i++)
        found = strcmp(s->held[i]->run_id, run_id) == 0;
    pthread_mutex_unlock(&s->hold_mu);
    return found;
}

/* A job as read: the record's, less a run committed ahead that has not
 * been handed on (its time not come: started > now; or come while the
 * scheduler is paused). Until then it is the job's next run time, as
 * APScheduler shows before it submits the run, not a running instance. */
static int
job_as_read(aps_scheduler *s, const aps__jobrec *rec, aps_job **out)
{
    int rc = aps__job_from_rec(rec, out);
    if (rc != 0 || rec->n_running == 0)
        return rc;
    aps_job *j = *out;
    aps_time now = aps__scheduler_now(s);
    for (size_t i = 0; i < rec->n_running; i++) {
        aps_time at = rec->running[i].started;
        if (at <= now && !held_while_paused(s, rec->running[i].run_id))
            continue;
        if (j->running_instances > 0)
            j->running_instances--;
        if (j->next_run_time == APS_TIME_NONE || at < j->next_run_time)
            j->next_run_time = at;
    }
    return 0;
}

int
aps_job_get(aps_scheduler *s, const char *id, aps_job **out)
{
    if (s == NULL || id == NULL || out == NULL)
        return APS_EINVAL;
    *out = NULL;
    for (size_t i = 0; i < s->n_stores; i++) {
        void *data = NULL;
        size_t len = 0;
        int rc = aps__store_job_get(s->stores[i].st, id, &data, &len, NULL);
        if (rc == APS_ENOENT)
            continue;
        if (rc != 0)
            return rc;
        aps__jobrec *rec = NULL;
        rc = aps__jobrec_decode(data, len, &rec);
        free(data);
        if (rc != 0)
            return rc;
        rc = job_as_read(s, rec, out);
        aps__jobrec_free(rec);
        return rc;
    }
    return APS_ENOENT;
}

/* ---- listing ---------------------------------------------------------------- */

typedef struct list_ctx {
    aps_scheduler *s; /* the clock of job_as_read */
    const aps_job_filter *f;
    aps_job **jobs;
    size_t n, limit;
    char last_id[APS__ID_MAX + 1];
    int more;
    int rc;
} list_ctx;

static int
filter_match(const aps_job_filter *f, const aps_job *j)
{
    if (f == NULL)
        return 1;
    if (f->paused >= 0 && (f->paused != 0) != (j->paused != 0))
        return 0;
    for (size_t i = 0; i < f->n_labels; i++) {
        int found = 0;
        for (size_t k = 0; k < j->n_labels && !found; k++) {
            found = strcmp(j->labels[k].key, f->labels[i].key) == 0 &&
                    (f->labels[i].value == NULL ||
                     strcmp(j->labels[k].value, f->labels[i].value) == 0);
        }
        if (!found)
            return 0;
    }
    return 1;
}

static int
list_visit(void *arg, const char *id, const void *data, size_t len, aps_time next_run)
{
    list_ctx *c = arg;
    aps__jobrec *rec = NULL;
    aps_job *job = NULL;
    (void)next_run;
    snprintf(c->last_id, sizeof(c->last_id), "%s", id);
    if (c->n == c->limit) {
        c->more = 1;
        return 1;
    }
    c->rc = aps__jobrec_decode(data, len, &rec);
    if (c->rc != 0)
        return 1;
    if (filter_match(c->f, &rec->job)) {
        c->rc = job_as_read(c->s, rec, &job);
        if (c->rc == 0)
            c->jobs[c->n++] = job;
    }
    aps__jobrec_free(rec);
    return c->rc != 0;
}

/* Merges the stores in id order: each page reads up to limit+1 from every
 * store after `after_id` and keeps the smallest ids. */
int
aps_job_list(aps_scheduler *s, const aps_job_filter *f, const char *after_id, size_t limit,
             aps_job ***jobs, size_t *n, char **next_after)
{
    list_ctx c;
    int rc = 0;

    if (s == NULL || jobs == NULL || n == NULL)
        return APS_EINVAL;
    *jobs = NULL;
    *n = 0;
    if (next_after)
        *next_after = NULL;
    if (limit == 0 || limit > 10000)
        limit = limit == 0 ? 100 : 10000;
    memset(&c, 0, sizeof(c));
    c.f = f;
    c.limit = limit;
    c.jobs = calloc(limit, sizeof(aps_job *));
    if (c.jobs == NULL)
        return APS_ENOMEM;
    /* One scan per store: each yields its first `limit` matches after the
     * cursor (and whether it has more); the page is the smallest ids of
     * their union (ids are unique across stores). */
    list_ctx *per = calloc(s->n_stores, sizeof(*per));
    if (per == NULL) {
        rc = APS_ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < s->n_stores; i++) {
        if (f && f->jobstore && strcmp(f->jobstore, s->stores[i].name) != 0)
            continue;
        per[i].s = s;
        per[i].f = f;
        per[i].limit = limit;
        per[i].jobs = calloc(limit, sizeof(aps_job *));
        if (per[i].jobs == NULL) {
            rc = APS_ENOMEM;
            break;
        }
        rc = aps__store_job_list(s->stores[i].st, after_id && after_id[0] ? after_id : NULL, 0,
                                 list_visit, &per[i]);
        if (per[i].rc != 0)
            rc = per[i].rc;
        else if (rc == 1)
            rc = 0; /* the visitor stopped: the page is full */
        if (rc != 0)
            break;
    }
    size_t *pos = rc == 0 ? calloc(s->n_stores, sizeof(size_t)) : NULL;
    if (rc == 0 && pos == NULL)
        rc = APS_ENOMEM;
    while (rc == 0) {
        int best = -1;
        for (size_t i = 0; i < s->n_stores; i++) {
            if (pos[i] < per[i].n &&
                (best < 0 || strcmp(per[i].jobs[pos[i]]->id, per[best].jobs[pos[best]]->id) < 0))
                best = (int)i;
        }
        if (best < 0)
            break;
        if (c.n == limit) {
            c.more = 1;
            break;
        }
        c.jobs[c.n++] = per[best].jobs[pos[best]];
        per[best].jobs[pos[best]++] = NULL;
    }
    for (size_t i = 0; i < s->n_stores; i++) {
        /* A store that stopped at `limit` matches may hold more. */
        if (rc == 0 && per[i].more && c.n == limit)
            c.more = 1;
        aps_job_list_free(per[i].jobs, per[i].n);
    }
    free(pos);
    free(per);
    if (rc != 0)
        goto fail;
    if (c.more && next_after) {
        *next_after = strdup(c.jobs[c.n - 1]->id);
        if (*next_after == NULL) {
            rc = APS_ENOMEM;
            goto fail;
        }
    }
    *jobs = c.jobs;
    *n = c.n;
    return 0;
fail:
    aps_job_list_free(c.jobs, c.n);
    return rc;
}

/* ---- mutations of one job ---------------------------------------------------- */

typedef enum mut_kind {
    MUT_MODIFY,
    MUT_RESCHEDULE,
    MUT_PAUSE,
    MUT_RESUME,
    MUT_RUN_NOW,
    MUT_REMOVE,
    MUT_BACKFILL,
} mut_kind;

typedef struct mut_ctx {
    aps_scheduler *s;
    size_t si;
    mut_kind kind;
    const char *id;
    const char *request_id;
    uint64_t request_fp;
    aps_time now;
    /* inputs */
    const aps_job_spec *spec;
    uint32_t mask;
    const aps_trigger_spec *trigger;
    aps_time start, end;
    size_t max_runs;
    int space_low; /* backfill: the store gave its disk reserve back */
    /* outputs */
    aps_error *err;
    int replayed;
    int removed;
    aps_time next; /* the job's next run time as written (wake_for) */
    size_t count;
    char run_id[33];
    char answer[REQ_ANSWER_MAX + 1]; /* RunJobNow: request_parse's answer */
    char replay_id[APS__ID_MAX + 1];
    withdrawn w;
    wout o;
} mut_ctx;

/* Fire times of `trig` in [start, end), at most max. */
static int
fire_times(aps_trigger *trig, aps_time start, aps_time end, size_t max, aps_time **out, size_t *n)
{
    size_t cap = 0;
    aps_time t = APS_TIME_NONE, *v = NULL;
    int rc = aps_trigger_next(trig, APS_TIME_NONE, start, &t);
    *n = 0;
    while (rc == 0 && t != APS_TIME_NONE && t < end && *n < max) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            aps_time *nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                rc = APS_ENOMEM;
                break;
            }
            v = nv;
        }
        v[(*n)++] = t;
        rc = aps_trigger_next(trig, t, t, &t);
    }
    if (rc != 0) {
        free(v);
        *n = 0;
        return rc;
    }
    *out = v;
    return 0;
}

/* A replayed RunJobNow answers as its first call did (request_parse). */
static void
replay_answer(mut_ctx *c)
{
    c->count = c->answer[0] == 'q';
    snprintf(c->run_id, sizeof(c->run_id), "%s", c->answer[0] ? c->answer + 1 : "");
}

static int
mut_fn(aps_txn *t, void *arg)
{
    mut_ctx *c = arg;
    aps__jobrec *rec = NULL;
    aps_trigger *trig = NULL;
    aps_time *times = NULL;
    size_t n_times = 0;
    int rc;

    reset_out(&c->o);
    c->removed = 0;
    c->count = 0;
    c->run_id[0] = '\0';
    c->replayed = request_seen(c->s, t, c->request_id, c->request_fp, c->now, c->replay_id,
                               sizeof(c->replay_id), c->answer);
    if (c->replayed != 0) {
        replay_answer(c);
        return c->replayed < 0 ? c->replayed : 0;
    }
    rc = txn_load(t, c->id, &rec);
    if (rc != 0)
        return rc;
    aps_event_type ev = APS_EVENT_JOB_MODIFIED;

    if (c->kind == MUT_BACKFILL) {
        if (c->space_low) {
            rc = space_low_err(c->s, c->si, "backfills", c->err);
            goto out;
        }
        rc = compile_trigger(c->s, rec->job.trigger, c->now, &trig, NULL);
        if (rc == 0)
            rc = fire_times(trig, c->start, c->end, c->max_runs, &times, &n_times);
        if (rc != 0)
            goto out;
    }
    /* A run committed ahead that has not started is withdrawn: the change
     * came before its time, as if the run had not been submitted yet. (A
     * run now or a backfill too: the held run's instance slot was judged
     * without it; its time comes again and is judged then, beside the new
     * runs.) */
    /* Once runs were taken (an earlier run of this callback), always:
     * they are this write's to record. */
    if (c->w.n > 0 || c->w.n_ghosts > 0 ||
        ((c->w.taken || rec->n_running > 0) && !(c->kind == MUT_BACKFILL && n_times == 0))) {
        static const char *const why[] = {
            [MUT_MODIFY] = "the job was modified",     [MUT_RESCHEDULE] = "the job was rescheduled",
            [MUT_PAUSE] = "the job was paused",        [MUT_RESUME] = "the job was resumed",
            [MUT_REMOVE] = "the job was removed",      [MUT_RUN_NOW] = "the job was run now",
            [MUT_BACKFILL] = "the job was backfilled",
        };
        rc = hold_withdraw(c->s, &c->w, rec);
        if (rc == 0)
            rc = withdraw_in_txn(c->s, t, &c->o, &c->w, rec, c->now, why[c->kind]);
        if (rc != 0)
            goto out;
    }

    switch (c->kind) {
    case MUT_MODIFY:
        rc = aps__jobrec_apply(rec, c->spec, c->mask, c->s->tz, c->now, c->err);
        if (rc == 0 && (c->mask & APS_MODIFY_NEXT_RUN_TIME))
            rec->job.paused = rec->job.next_run_time == APS_TIME_NONE;
        /* The withdrawn run comes as modified. */
        if (rc == 0 && !(c->mask & APS_MODIFY_NEXT_RUN_TIME))
            withdrawn_comes_again(&c->w, rec);
        /* Runs queued for an instance slot take those a higher
         * max_instances frees, now rather than at a running one's end. */
        if (rc == 0 && (c->mask & APS_MODIFY_MAX_INSTANCES))
            rc = start_pending(c->s, t, &c->o, rec, c->now);
        break;
    case MUT_RESCHEDULE: {
        aps_job_spec sp;
        memset(&sp, 0, sizeof(sp));
        sp.trigger = c->trigger;
        rc = aps__jobrec_apply(rec, &sp, APS_MODIFY_TRIGGER, c->s->tz, c->now, c->err);
        if (rc == 0)
            rc = first_fire(c->s, rec->job.trigger, c->now, &rec->job.next_run_time);
        if (rc == 0)
            rec->job.paused = rec->job.next_run_time == APS_TIME_NONE;
        break;
    }
    case MUT_PAUSE:
        rec->job.next_run_time = APS_TIME_NONE;
        rec->job.paused = 1;
        break;
    case MUT_RESUME:
        rc = first_fire(c->s, rec->job.trigger, c->now, &rec->job.next_run_time);
        if (rc == 0 && rec->job.next_run_time == APS_TIME_NONE) {
            /* APScheduler: a job whose trigger is done is removed on resume. */
            ev = APS_EVENT_JOB_REMOVED;
            c->removed = 1;
        }
        rec->job.paused = 0;
        break;
    case MUT_RUN_NOW: {
        /* An extra run beside the schedule, under the rules of a scheduled
         * one (submit()): a free slot starts it; else the overlap policy
         * queues it, cancels the oldest running instance, or refuses it
         * (SKIP, or a queue that is full for the policy). */
        withdrawn_comes_again(&c->w, rec);
        size_t before = rec->n_running;
        uint32_t max = job_max_instances(c->s, &rec->job);
        aps_overlap ov = job_overlap(&rec->job);
        if (rec->n_running >= max || rec->n_pending > 0) {
            if (ov == APS_OVERLAP_SKIP ||
                ((ov == APS_OVERLAP_QUEUE_ONE || ov == APS_OVERLAP_CANCEL_RUNNING) &&
                 rec->n_pending > 0) ||
                (ov == APS_OVERLAP_QUEUE_ALL && rec->n_pending >= PENDING_MAX)) {
                rc = set_err(c->err, APS_ESTATE,
                             "job_id: \"%s\" already runs max_instances (%u) instances%s", c->id,
                             max, rec->n_pending > 0 ? " and has runs queued" : "");
                break;
            }
            if (ov == APS_OVERLAP_CANCEL_RUNNING && rec->n_running > 0) {
                rc = out_cancel(&c->o, rec->running[0].executor, rec->running[0].run_id);
                if (rc != 0)
                    break;
            }
        }
        rc = push_pending(rec, &c->now, 1, 1);
        if (rc == 0)
            rc = start_pending(c->s, t, &c->o, rec, c->now);
        if (rc == 0 && rec->n_running > before)
            memcpy(c->run_id, rec->running[rec->n_running - 1].run_id, sizeof(c->run_id));
        c->count = rec->n_pending > 0;
        break;
    }
    case MUT_REMOVE:
        ev = APS_EVENT_JOB_REMOVED;
        c->removed = 1;
        break;
    case MUT_BACKFILL:
        withdrawn_comes_again(&c->w, rec);
        for (size_t i = 0; rc == 0 && i < n_times; i++)
            rc = push_pending(rec, &times[i], 1, 1);
        if (rc == 0)
            rc = start_pending(c->s, t, &c->o, rec, c->now);
        c->count = n_times;
        break;
    }
    if (rc != 0)
        goto out;
    rec->job.update_time = c->now;
    c->next = c->removed ? APS_TIME_NONE : rec->job.next_run_time;
    rc = c->removed ? aps__txn_job_del(t, c->id) : txn_save(t, rec);
    if (rc == 0 && c->kind != MUT_BACKFILL && c->kind != MUT_RUN_NOW)
        rc = out_event(&c->o, ev, c->now, &rec->job, NULL, NULL, 0, NULL);
    if (rc == 0)
        rc = events_in_txn(c->s, c->si, t, &c->o);
    if (rc == 0 && c->kind == MUT_RUN_NOW)
        snprintf(c->answer, sizeof(c->answer), "%c%s", c->count ? 'q' : '-', c->run_id);
    if (rc == 0)
        rc = request_record(t, c->request_id, c->request_fp, c->now, c->id,
                            c->kind == MUT_RUN_NOW ? c->answer : NULL);
out:
    free(times);
    aps_trigger_destroy(trig);
    aps__jobrec_free(rec);
    return rc;
}

static int
mutate(aps_scheduler *s, mut_ctx *c, const aps_mutation *m, aps_job **out, aps_error *err)
{
    int rc;
    if (out)
        *out = NULL;
    if (s == NULL || c->id == NULL)
        return set_err(err, APS_EINVAL, "job_id: required");
    c->s = s;
    c->err = err;
    if (err != NULL) {
        /* Read after the write (did it describe its failure?): the
         * caller's struct may hold anything (valgrind: uninitialised). */
        err->code = 0;
        err->msg[0] = '\0';
    }
    c->request_id = m ? m->request_id : NULL;
    c->request_fp = m ? m->request_fingerprint : 0;
    rc = check_request_id(c->request_id, err);
    if (rc != 0)
        return rc;
    c->now = aps__scheduler_now(s);
    int si = locate(s, c->id, &rc);
    if (si < 0 && rc != 0)
        return set_err(err, rc, "job_id: the job stores could not be read (%s)", aps_strerror(rc));
    if (si < 0) {
        rc = request_known(s, c->request_id, c->request_fp, c->now, c->answer);
        if (rc < 0)
            return request_mismatch(err, c->request_id);
        if (rc > 0) {
            c->replayed = 1; /* a retry of a change to a job removed since (or by it) */
            replay_answer(c);
            return 0;
        }
    }
    if (si < 0)
        return set_err(err, APS_ENOENT, "job_id: no job with id \"%s\"", c->id);
    c->si = (size_t)si;
    c->space_low = c->kind == MUT_BACKFILL && aps__store_space_low(s->stores[si].st);
    c->next = APS_TIME_NONE;
    if (gate_enter(s) != 0)
        return gate_refused(err);
    rc = write_and_publish(s, c->si, mut_fn, c, &c->o);
    free_out(&c->o);
    if (rc == 0)
        withdrawn_end(s, &c->w);
    else
        withdrawn_return(s, &c->w);
    gate_leave(s);
    if (rc == APS_EINVAL && c->replayed < 0)
        return request_mismatch(err, c->request_id);
    if (rc == APS_ENOENT)
        return set_err(err, rc, "job_id: no job with id \"%s\"", c->id);
    if (rc != 0) {
        if (err != NULL && err->code != rc)
            store_err(s, si, rc, err);
        return rc;
    }
    /* Only for a next run time the loop would otherwise take up late (a
     * withdrawn run's time too, its next run time again): runs the change
     * started are handed on by the write, queued ones by a completion, and
     * a job paused or removed leaves at most a pass that finds nothing. A
     * pass per change made the loop's passes under a stream of changes. */
    wake_for(s, c->next);
    if (out != NULL && !c->removed) {
        rc = aps_job_get(s, c->id, out);
        if (rc == APS_ENOENT && c->replayed)
            rc = 0; /* replay of a change to a job removed since */
    }
    return rc;
}

int
aps_job_modify(aps_scheduler *s, const char *id, const aps_job_spec *spec, uint32_t mask,
               const aps_mutation *m, aps_job **out, aps_error *err)
{
    if (spec == NULL)
        return set_err(err, APS_EINVAL, "job: required");
    if (mask & APS_MODIFY_JOBSTORE)
        return set_err(err, APS_EINVAL,
                       "jobstore: cannot be changed; remove the job and add it to the other store");
    if ((mask & APS_MODIFY_EXECUTOR) && spec->executor && find_exec(s, spec->executor) == NULL)
        return set_err(err, APS_EINVAL, "executor: no executor named \"%s\"", spec->executor);
    mut_ctx c;
    memset(&c, 0, sizeof(c));
    c.kind = MUT_MODIFY;
    c.id = id;
    c.spec = spec;
    c.mask = mask;
    return mutate(s, &c, m, out, err);
}

int
aps_job_reschedule(aps_scheduler *s, const char *id, const aps_trigger_spec *trigger,
                   const aps_mutation *m, aps_job **out, aps_error *err)
{
    if (trigger == NULL)
        return set_err(err, APS_EINVAL, "trigger: required");
    mut_ctx c;
    memset(&c, 0, sizeof(c));
    c.kind = MUT_RESCHEDULE;
    c.id = id;
    c.trigger = trigger;
    return mutate(s, &c, m, out, err);
}

/* A mutation that needs nothing but the job id. */
static int
mutate_simple(aps_scheduler *s, mut_kind kind, const char *id, const aps_mutation *m,
              aps_job **out)
{
    mut_ctx c;
    memset(&c, 0, sizeof(c));
    c.kind = kind;
    c.id = id;
    return mutate(s, &c, m, out, NULL);
}

int
aps_job_pause(aps_scheduler *s, const char *id, const aps_mutation *m, aps_job **out)
{
    return mutate_simple(s, MUT_PAUSE, id, m, out);
}

int
aps_job_resume(aps_scheduler *s, const char *id, const aps_mutation *m, aps_job **out)
{
    return mutate_simple(s, MUT_RESUME, id, m, out);
}

int
aps_job_run_now(aps_scheduler *s, const char *id, const aps_mutation *m, char run_id[33],
                int *queued, aps_error *err)
{
    mut_ctx c;
    memset(&c, 0, sizeof(c));
    c.kind = MUT_RUN_NOW;
    c.id = id;
    int rc = mutate(s, &c, m, NULL, err);
    if (rc == 0 && run_id != NULL)
        memcpy(run_id, c.run_id, sizeof(c.run_id));
    if (rc == 0 && queued != NULL)
        *queued = (int)c.count;
    return rc;
}

int
aps_job_remove(aps_scheduler *s, const char *id, const aps_mutation *m)
{
    return mutate_simple(s, MUT_REMOVE, id, m, NULL);
}

int
aps_job_backfill(aps_scheduler *s, const char *id, aps_time start, aps_time end, size_t max_runs,
                 const aps_mutation *m, size_t *count, aps_error *err)
{
    if (start == APS_TIME_NONE || end == APS_TIME_NONE || end <= start)
        return set_err(err, APS_EINVAL, "end_time: must be after start_time");
    if (s != NULL && end > aps__scheduler_now(s))
        return set_err(err, APS_EINVAL, "end_time: must not be in the future");
    if (max_runs > BACKFILL_MAX)
        return set_err(err, APS_EINVAL, "max_runs: at most %d", BACKFILL_MAX);
    mut_ctx c;
    memset(&c, 0, sizeof(c));
    c.kind = MUT_BACKFILL;
    c.id = id;
    c.start = start;
    c.end = end;
    c.max_runs = max_runs ? max_runs : BACKFILL_DEFAULT;
    int rc = mutate(s, &c, m, NULL, err);
    if (rc == 0 && count)
        *count = c.count;
    return rc;
}

typedef struct remove_all_ctx {
    aps_scheduler *s;
    size_t si;
    int last; /* the last store: emits the event */
    const char *jobstore;
    const char *request_id;
    uint64_t request_fp;
    aps_time now;
    size_t removed;
    int mismatch;
    withdrawn w;
    wout o;
} remove_all_ctx;

static int
remove_all_fn(aps_txn *t, void *arg)
{
    remove_all_ctx *c = arg;
    char dummy[APS__ID_MAX + 1];
    reset_out(&c->o);
    c->removed = 0;
    if (c->si == c->s->log_store) {
        int seen =
            request_seen(c->s, t, c->request_id, c->request_fp, c->now, dummy, sizeof(dummy), NULL);
        c->mismatch = seen < 0;
        if (seen != 0)
            return seen < 0 ? seen : 0;
    }
    int rc = aps__txn_job_del_all(t, &c->removed);
    if (rc == 0 && !c->w.taken) {
        rc = hold_take(c->s, held_of_store, c->s->stores[c->si].name, &c->w.runs, &c->w.n);
        c->w.taken = rc == 0;
    }
    if (rc == 0)
        rc = withdraw_in_txn(c->s, t, &c->o, &c->w, NULL, c->now, "all jobs were removed");
    if (rc == 0 && c->last) {
        /* No job, but the store the removal was limited to. */
        rc = out_named_event(&c->o, APS_EVENT_ALL_JOBS_REMOVED, c->now, c->jobstore, NULL);
    }
    if (rc == 0)
        rc = events_in_txn(c->s, c->si, t, &c->o);
    if (rc == 0 && c->si == c->s->log_store)
        rc = request_record(t, c->request_id, c->request_fp, c->now, NULL, NULL);
    return rc;
}

int
aps_job_remove_all(aps_scheduler *s, const char *jobstore, const aps_mutation *m, size_t *removed)
{
    size_t total = 0;
    int rc = 0;
    if (s == NULL)
        return APS_EINVAL;
    if (jobstore != NULL && find_store(s, jobstore) < 0)
        return APS_ENOENT;
    size_t last = SIZE_MAX;
    for (size_t i = 0; i < s->n_stores; i++) {
        if (jobstore == NULL || strcmp(jobstore, s->stores[i].name) == 0)
            last = i;
    }
    for (size_t i = 0; i < s->n_stores && rc == 0; i++) {
        if (jobstore != NULL && strcmp(jobstore, s->stores[i].name) != 0)
            continue;
        remove_all_ctx c;
        memset(&c, 0, sizeof(c));
        c.s = s;
        c.si = i;
        c.last = i == last;
        c.jobstore = jobstore;
        c.request_id = m ? m->request_id : NULL;
        c.request_fp = m ? m->request_fingerprint : 0;
        c.now = aps__scheduler_now(s);
        rc = gate_enter(s);
        if (rc != 0)
            break;
        rc = write_and_publish(s, i, remove_all_fn, &c, &c.o);
        free_out(&c.o);
        if (rc == 0)
            withdrawn_end(s, &c.w);
        else
            withdrawn_return(s, &c.w);
        gate_leave(s);
        total += c.removed;
    }
    if (removed)
        *removed = total;
    return rc;
}

/* ---- the loop: its buffers ---------------------------------------------------- */

/* What the loop keeps from pass to pass instead of allocating per pass or
 * per record: with glibc's malloc, arrays of a batch's size allocated and
 * freed per pass (and records encoded into fresh buffers) made it
 * consolidate its free lists again and again, a good part of the loop's
 * CPU. The loop's thread's, but for `enc` (the store writer's, in write
 * callbacks) and a due_prep while its write is on its way (read by the
 * writer; the loop waits for the write before it touches it again). */
typedef struct aps__loop_state aps__loop_state;

struct aps__loop_state {
    aps__wbuf enc;   /* the loop's encoder output */
    aps__run **runs; /* take_completed's array */
    size_t cap_runs;
    aps__run **sel;  /* done_select's array */
    size_t cap_sel;
    wout o[1 + DUE_WRITES]; /* the outputs of the done (0) and due (1...) contexts */
    struct due_prep *prep[DUE_WRITES]; /* the due contexts' (durable stores) */
    struct due_prep *prep_done;        /* the finished runs' (the same) */
};

/* The loop's state, allocated with its first pass; NULL when out of memory
 * (the loop then allocates per pass, as it did). */
static aps__loop_state *
loop_state(aps_scheduler *s)
{
    if (s->loop == NULL)
        s->loop = calloc(1, sizeof(*s->loop));
    return s->loop;
}

static void prep_free(struct due_prep *p);

static void
loop_state_free(aps_scheduler *s)
{
    if (s->loop == NULL)
        return;
    for (size_t k = 0; k < sizeof(s->loop->o) / sizeof(s->loop->o[0]); k++)
        free_out(&s->loop->o[k]);
    for (size_t k = 0; k < DUE_WRITES; k++)
        prep_free(s->loop->prep[k]);
    prep_free(s->loop->prep_done);
    free(s->loop->enc.p);
    free(s->loop->runs);
    free(s->loop->sel);
    free(s->loop);
    s->loop = NULL;
}

/* Lends the kept outputs of context k (0 done, 1... due). */
static void
loop_out_take(aps_scheduler *s, int k, wout *o)
{
    if (s->loop == NULL)
        return;
    *o = s->loop->o[k];
    memset(&s->loop->o[k], 0, sizeof(s->loop->o[k]));
}

/* Takes them back emptied (or frees them without the loop's state). */
static void
loop_out_give(aps_scheduler *s, int k, wout *o)
{
    if (s->loop == NULL) {
        free_out(o);
        return;
    }
    reset_out(o);
    free_out(&s->loop->o[k]);
    s->loop->o[k] = *o;
    memset(o, 0, sizeof(*o));
}

/* txn_save through encoder buffer enc, or the loop's (enc NULL). */
static int
loop_save(aps_scheduler *s, aps__wbuf *enc, aps_txn *t, const aps__jobrec *rec)
{
    if (enc == NULL && s->loop != NULL)
        enc = &s->loop->enc;
    if (enc == NULL)
        return txn_save(t, rec);
    int rc = aps__jobrec_encode_into(rec, enc);
    if (rc != 0)
        return rc;
    return aps__txn_job_put(t, rec->job.id, enc->p, enc->len, rec->job.next_run_time);
}

/* ---- the loop: due jobs ------------------------------------------------------ */

/* The loop's trigger cache: compiled triggers by job id, valid while the
 * job's update_time is unchanged. Linear probing, grown at half load. */
static uint64_t
hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return h;
}

static int
trig_cached(aps_scheduler *s, const aps__jobrec *rec, aps_time now, aps_trigger **out,
            aps_error *err)
{
    if (s->cap_trig == 0 || s->n_trig * 2 >= s->cap_trig) {
        size_t cap = s->cap_trig ? s->cap_trig * 2 : 1024;
        aps__trig_entry *v = calloc(cap, sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        for (size_t i = 0; i < s->cap_trig; i++) {
            if (s->trig[i].id == NULL)
                continue;
            size_t k = hash_id(s->trig[i].id) & (cap - 1);
            while (v[k].id != NULL)
                k = (k + 1) & (cap - 1);
            v[k] = s->trig[i];
        }
        free(s->trig);
        s->trig = v;
        s->cap_trig = cap;
    }
    size_t k = hash_id(rec->job.id) & (s->cap_trig - 1);
    while (s->trig[k].id != NULL && strcmp(s->trig[k].id, rec->job.id) != 0)
        k = (k + 1) & (s->cap_trig - 1);
    aps__trig_entry *e = &s->trig[k];
    if (e->id != NULL && e->update_time == rec->job.update_time) {
        *out = e->trigger;
        return 0;
    }
    aps_trigger *trig = NULL;
    int rc = compile_trigger(s, rec->job.trigger, now, &trig, err);
    if (rc != 0)
        return rc;
    if (e->id == NULL) {
        e->id = strdup(rec->job.id);
        if (e->id == NULL) {
            aps_trigger_destroy(trig);
            return APS_ENOMEM;
        }
        s->n_trig++;
    } else {
        aps_trigger_destroy(e->trigger);
    }
    e->trigger = trig;
    e->update_time = rec->job.update_time;
    *out = trig;
    return 0;
}

static void
trig_cache_clear(aps_scheduler *s)
{
    for (size_t i = 0; i < s->cap_trig; i++) {
        free(s->trig[i].id);
        aps_trigger_destroy(s->trig[i].trigger);
    }
    free(s->trig);
    s->trig = NULL;
    s->n_trig = s->cap_trig = 0;
}

struct due_prep;

typedef struct due_ctx {
    aps_scheduler *s;
    size_t si;
    aps_time now;
    aps_time upto; /* now + the store's commit-ahead: due jobs up to this */
    aps_time deferred; /* earliest fire time left to its time (APS_TIME_NONE) */
    size_t processed;  /* jobs processed (not deferred) by this write */
    char (*ids)[APS__ID_MAX + 1];
    size_t n_ids;
    aps_time last_next; /* the next run time of ids[n_ids - 1] */
    /* Adaptive commit-ahead (store_ahead): since when the loop could have
     * taken the batch's runs at the earliest (seen), for jobs prepared; no
     * earlier than the last pass's start (floor, on the clock of now).
     * Jobs due at or before `reach` (the last pass's horizon; APS_TIME_NONE:
     * none) are not counted: the lead did not keep them. */
    aps_time floor, reach, seen;
    struct due_prep *prep; /* the batch as the loop prepared it, or NULL */
    aps__wbuf *enc;        /* records encoded here (loop_save); NULL: the loop's */
    /* On a store's writer thread, beside the loop's preparing the next
     * batch: the trigger cache is the loop's, so compile afresh. */
    int uncached;
    wout o;
} due_ctx;

/* Due jobs are prepared on the loop's thread (due_prepare), from the
 * records the scan read, while the store's writer commits the batch
 * before: the writer then only checks that the store still holds those
 * bytes and makes the writes prepared (due_fn). A durable store's writer
 * was the loop's limit (at 100,000 runs/s, 90% of the process's CPU on
 * that one thread, the loop's at 7%); the decoding, the rules, the
 * encoding of records and events are most of a due job's cost. A record
 * changed since the scan (a mutation, a completion recorded) is done
 * again by the writer, as before. */
enum { PREP_NONE, PREP_READ, PREP_READY, PREP_USED };

typedef struct prep_job {
    int state;         /* PREP_NONE: the writer does it all */
    size_t rec, len;   /* the record read, in due_prep.read */
    aps_time next_run; /* its next run time as read */
    size_t op0, op1;   /* its writes in the log */
    size_t ev0, ev1;   /* its events in o.evs and evb */
    size_t run0, run1; /* its runs in o.runs */
    int processed;     /* due_ctx.processed's share */
    aps_time deferred; /* due_ctx.deferred's */
} prep_job;

typedef struct prep_span {
    size_t off, len;
} prep_span;

typedef struct due_prep {
    prep_job *jobs; /* one per id of the batch (or finished run) */
    size_t n_jobs;  /* those of this batch: set by prep_read, done_prepare */
    size_t cap_jobs;
    const char **ids; /* the finished runs' job ids (done_prepare) */
    size_t cap_ids;
    aps__wbuf read;   /* the records read, one after another */
    aps_txn_log *log; /* the jobs' writes */
    wout o;           /* their events and runs; moved out as applied */
    aps__wbuf evenc;  /* their events encoded, one after another */
    prep_span *evb;   /* per event of o.evs: its bytes in evenc */
    size_t cap_evb;
    aps__wbuf enc; /* records encoded (loop_save) */
} due_prep;

/* Keeps the record of job i of the batch as the scan read it. */
static void
prep_read(due_prep *p, size_t i, const void *data, size_t len, aps_time next_run)
{
    prep_job *j = &p->jobs[i];
    j->state = PREP_NONE;
    if (i >= p->n_jobs)
        p->n_jobs = i + 1;
    size_t off = p->read.len;
    aps__w_raw(&p->read, data, len);
    if (p->read.rc != 0) {
        p->read.rc = 0; /* the writer does this one */
        return;
    }
    j->rec = off;
    j->len = len;
    j->next_run = next_run;
    j->state = PREP_READ;
}

static int
due_collect(void *arg, const char *id, const void *data, size_t len, aps_time next_run)
{
    due_ctx *c = arg;
    size_t n = strnlen(id, APS__ID_MAX);
    memcpy(c->ids[c->n_ids], id, n);
    c->ids[c->n_ids][n] = '\0';
    if (c->prep != NULL)
        prep_read(c->prep, c->n_ids, data, len, next_run);
    c->n_ids++;
    c->last_next = next_run;
    return 0;
}

/* The latest fire time of `trig` at or before `now`, given `from`, one
 * before now: the first fire time at or after now - w for w = 1 s, 2 s, ...
 * until one is at most now (or w reaches back to `from`), then steps
 * forward. For a job too far behind to enumerate its run times. */
static int
latest_fire(aps_trigger *trig, aps_time from, aps_time now, aps_time *out)
{
    aps_time best = from, t = APS_TIME_NONE;
    int rc = 0;
    for (aps_time w = US_PER_SEC; rc == 0; w *= 2) {
        aps_time lo = now - from > w ? now - w : from;
        rc = aps_trigger_next(trig, APS_TIME_NONE, lo, &t);
        if (rc == 0 && t != APS_TIME_NONE && t <= now && t > best)
            best = t;
        if (best != from || lo == from)
            break;
    }
    for (size_t i = 0; rc == 0 && i < RUN_TIMES_ITER_MAX; i++) {
        rc = aps_trigger_next(trig, best, now, &t);
        if (rc != 0 || t == APS_TIME_NONE || t > now)
            break;
        best = t;
    }
    *out = best;
    return rc;
}

/* A due job whose trigger fails for good (its zone gone from the system,
 * an all_of whose parts never meet): paused, with a JOB_MODIFIED event
 * that says why. Failing the write instead would hold up every job of its
 * store, pass after pass, since the job stays first in the due index. */
static int
trigger_failed(due_ctx *c, aps_txn *t, aps__jobrec *rec, int failed, const char *why)
{
    aps_event *ev = NULL;
    char msg[384];
    /* Only what will fail again: a bad expression or range, a zone the
     * system does not have. Anything else (out of memory, EMFILE while
     * reading a zone file) fails the write, which is retried. */
    if (failed != APS_EINVAL && failed != APS_ENOENT && failed != APS_ERANGE)
        return failed;
    rec->job.paused = 1;
    rec->job.next_run_time = APS_TIME_NONE;
    c->processed++;
    int rc = out_event(&c->o, APS_EVENT_JOB_MODIFIED, c->now, &rec->job, NULL, NULL, 0, &ev);
    if (rc != 0)
        return rc;
    snprintf(msg, sizeof(msg), "paused: its trigger failed (%s%s%.256s); modify it, then resume",
             aps_strerror(failed), why && why[0] ? ": " : "", why ? why : "");
    ev->message = strdup(msg);
    return loop_save(c->s, c->enc, t, rec);
}

/* One due job: APScheduler's _process_jobs body, with the job's trigger. */
static int
process_due_trig(due_ctx *c, aps_txn *t, aps__jobrec *rec, aps_trigger *trig)
{
    aps_scheduler *s = c->s;
    aps_time rts[RUN_TIMES_MAX];
    size_t n = 0, extra = 0, iters = 0;
    aps_time next = rec->job.next_run_time;
    aps_time last = APS_TIME_NONE;
    int rc = 0, beyond = 0; /* beyond: more run times than enumerated */
    aps__run *ahead = NULL; /* the run started, committed ahead of its time */

    /* _get_run_times(now): every fire time up to now. */
    while (next != APS_TIME_NONE && next <= c->now && iters < RUN_TIMES_ITER_MAX) {
        if (n < RUN_TIMES_MAX)
            rts[n++] = next;
        else
            extra++;
        last = next;
        iters++;
        rc = aps_trigger_next(trig, next, c->now, &next);
        if (rc != 0)
            return trigger_failed(c, t, rec, rc, "its next fire time could not be computed");
    }
    if (iters == RUN_TIMES_ITER_MAX && next != APS_TIME_NONE && next <= c->now) {
        /* Too far behind to enumerate: the rest counts as missed, and the
         * last run time is the latest at or before now (the one coalesce
         * runs), not the last one enumerated. */
        beyond = 1;
        rc = latest_fire(trig, last, c->now, &last);
        if (rc == 0)
            rc = aps_trigger_next(trig, last, c->now, &next);
        if (rc != 0)
            return trigger_failed(c, t, rec, rc, "its next fire time could not be computed");
    }
    if (n == 0 && next != APS_TIME_NONE && next > c->now && next <= c->upto) {
        if (rec->n_running > 0 || rec->n_pending > 0) {
            /* Whether it may start depends on instances that may finish
             * before its time: decide then (a completion wakes the loop). */
            if (c->deferred == APS_TIME_NONE || next < c->deferred)
                c->deferred = next;
            return 0;
        }
        /* Commit-ahead: the one next fire time, as if now were that time;
         * the hold thread hands the run on then. Later ones wait for a
         * later pass, so no run is ever started early. */
        rts[n++] = next;
        last = next;
        rc = aps_trigger_next(trig, next, next, &next);
        if (rc != 0)
            return trigger_failed(c, t, rec, rc, "its next fire time could not be computed");
    }
    c->processed++;
    if (n > 0) {
        if (job_coalesce(s, &rec->job)) {
            rec->job.stats.coalesced += n - 1 + extra;
            rts[0] = last;
            n = 1;
        } else if (extra > 0) {
            /* The latest run time (the one that may be on time) runs; the
             * one it displaces from the list counts with the missed. */
            aps_event *ev = NULL;
            aps_time dropped = rts[n - 1];
            char msg[96];
            rts[n - 1] = last;
            rec->job.stats.misses += extra;
            rc = out_event(&c->o, APS_EVENT_JOB_MISSED, c->now, &rec->job, NULL, &dropped, 1, &ev);
            if (rc != 0)
                return rc;
            snprintf(msg, sizeof(msg), "%s%zu more run times were missed", beyond ? "over " : "",
                     extra);
            ev->message = strdup(msg);
        }
        size_t before = c->o.n_runs;
        rc = submit(s, t, &c->o, rec, rts, n, c->now);
        if (rc != 0)
            return rc;
        if (c->o.n_runs > before && c->o.runs[c->o.n_runs - 1]->run_times[0] > c->now)
            ahead = c->o.runs[c->o.n_runs - 1];
    }
    rec->job.next_run_time = next;
    if (next == APS_TIME_NONE && rec->n_pending == 0 && ahead != NULL) {
        /* APScheduler removes the job once it has submitted its last run;
         * this one is submitted at its time, when it is handed on: until
         * then the job stays, so that a change before that time withdraws
         * the run, and a crash loses nothing (recover_interrupted). */
        ahead->ends_job = 1;
        return loop_save(c->s, c->enc, t, rec);
    }
    if (next == APS_TIME_NONE && rec->n_pending == 0) {
        rc = aps__txn_job_del(t, rec->job.id);
        if (rc == 0)
            rc = out_event(&c->o, APS_EVENT_JOB_REMOVED, c->now, &rec->job, NULL, NULL, 0, NULL);
        return rc;
    }
    return loop_save(c->s, c->enc, t, rec);
}

static int
process_due_job(due_ctx *c, aps_txn *t, aps__jobrec *rec)
{
    aps_trigger *trig = NULL;
    aps_error terr = {0, ""};
    int rc = c->uncached ? compile_trigger(c->s, rec->job.trigger, c->now, &trig, &terr)
                         : trig_cached(c->s, rec, c->now, &trig, &terr);
    if (rc != 0)
        return trigger_failed(c, t, rec, rc, terr.msg);
    rc = process_due_trig(c, t, rec, trig);
    if (c->uncached)
        aps_trigger_destroy(trig);
    return rc;
}

/* ---- the loop: due jobs prepared ahead (due_prep) ------------------------------ */

static void
prep_free(due_prep *p)
{
    if (p == NULL)
        return;
    free_out(&p->o);
    free(p->jobs);
    free(p->ids);
    free(p->read.p);
    aps__txn_log_free(p->log);
    free(p->evenc.p);
    free(p->evb);
    free(p->enc.p);
    free(p);
}

static due_prep *
prep_new(size_t jobs)
{
    due_prep *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->jobs = calloc(jobs, sizeof(*p->jobs));
    p->cap_jobs = jobs;
    if (p->jobs == NULL || aps__txn_log_new(&p->log) != 0) {
        prep_free(p);
        return NULL;
    }
    return p;
}

/* Empties p for the next batch (its memory kept): what due_fn did not
 * take (a record changed since the scan) is freed. */
static void
prep_reset(due_prep *p)
{
    if (p == NULL)
        return;
    reset_out(&p->o);
    aps__txn_log_reset(p->log);
    p->n_jobs = 0;
    p->read.len = 0;
    p->evenc.len = 0;
    p->evenc.rc = 0;
}

/* Encodes the events of o from ev0 on into p->evenc. */
static int
prep_encode(due_prep *p, const wout *o, size_t ev0)
{
    if (o->evs.n > p->cap_evb) {
        size_t cap = p->cap_evb ? p->cap_evb : 1024;
        while (cap < o->evs.n)
            cap *= 2;
        prep_span *v = realloc(p->evb, cap * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        p->evb = v;
        p->cap_evb = cap;
    }
    for (size_t e = ev0; e < o->evs.n; e++) {
        size_t off = p->evenc.len;
        int rc = aps__event_encode_append(o->evs.v[e], &p->evenc);
        if (rc != 0)
            return rc;
        p->evb[e] = (prep_span){off, p->evenc.len - off};
    }
    return 0;
}

/* Where a job's preparation began, to undo it (prep_end). */
typedef struct prep_mark {
    size_t cancels, enc_len;
} prep_mark;

/* Starts preparing job j into p and o (its outputs). */
static prep_mark
prep_begin(due_prep *p, const wout *o, prep_job *j)
{
    j->op0 = aps__txn_log_mark(p->log);
    j->ev0 = o->evs.n;
    j->run0 = o->n_runs;
    return (prep_mark){o->n_cancels, p->evenc.len};
}

/* Ends job j's preparation begun at m, rc its result: ready for the
 * writer to apply, or, given up (rc nonzero), undone for the writer to do
 * the job itself. */
static void
prep_end(due_prep *p, wout *o, prep_job *j, prep_mark m, int rc)
{
    /* Cancelling a running instance is not prepared (rare, and its
     * outputs are not ordered per job). */
    if (rc == 0 && o->n_cancels != m.cancels)
        rc = APS_ESTATE;
    if (rc == 0)
        rc = prep_encode(p, o, j->ev0);
    if (rc != 0) {
        aps__txn_log_rewind(p->log, j->op0);
        for (size_t e = j->ev0; e < o->evs.n; e++)
            aps_event_free(o->evs.v[e]);
        o->evs.n = j->ev0;
        for (size_t r = j->run0; r < o->n_runs; r++)
            aps__run_free(o->runs[r]);
        o->n_runs = j->run0;
        o->n_cancels = m.cancels;
        p->evenc.len = m.enc_len;
        p->evenc.rc = 0;
        return;
    }
    j->op1 = aps__txn_log_mark(p->log);
    j->ev1 = o->evs.n;
    j->run1 = o->n_runs;
    j->state = PREP_READY;
}

/* On the loop's thread, once the scan has read the batch of c: each due
 * job as due_fn would do it, its writes recorded in a log instead of made. */
static void
due_prepare(due_ctx *c)
{
    due_prep *p = c->prep;
    if (p == NULL)
        return;
    due_ctx pc;
    memset(&pc, 0, sizeof(pc));
    pc.s = c->s;
    pc.si = c->si;
    pc.now = c->now;
    pc.upto = c->upto;
    pc.enc = &p->enc;
    pc.o = p->o;
    aps_txn *t = aps__txn_log_txn(p->log);
    for (size_t i = 0; i < c->n_ids; i++) {
        prep_job *j = &p->jobs[i];
        aps__jobrec *rec = NULL;
        if (j->state != PREP_READ)
            continue;
        j->state = PREP_NONE;
        /* Not due, or not decoded: due_fn sees to it as it always did. */
        if (j->next_run == APS_TIME_NONE || j->next_run > c->upto ||
            aps__jobrec_decode(p->read.p + j->rec, j->len, &rec) != 0)
            continue;
        prep_mark m = prep_begin(p, &pc.o, j);
        pc.processed = 0;
        pc.deferred = APS_TIME_NONE;
        /* When its time came within the lead, or the last pass began. A
         * job the last pass could take (deferred: max_instances), or
         * changed (added) after its time came within the lead, tells
         * nothing of the lead. */
        aps_time seen = j->next_run - (c->upto - c->now);
        int counts =
            (c->reach == APS_TIME_NONE || j->next_run > c->reach) && rec->job.update_time <= seen;
        if (seen < c->floor)
            seen = c->floor;
        int rc = process_due_job(&pc, t, rec);
        aps__jobrec_free(rec);
        if (rc == 0 && counts && pc.processed > 0 && (c->seen == APS_TIME_NONE || seen < c->seen))
            c->seen = seen;
        j->processed = pc.processed > 0;
        j->deferred = pc.deferred;
        prep_end(p, &pc.o, j, m, rc);
    }
    p->o = pc.o;
}

/* Job i of p if it was prepared from exactly the record the store holds
 * (counted in s->prep_used or, prepared from another, prep_redone), else
 * NULL. */
static prep_job *
prep_current(aps_scheduler *s, due_prep *p, size_t i, const void *data, size_t len,
             aps_time next_run)
{
    if (p == NULL || i >= p->n_jobs || p->jobs[i].state != PREP_READY)
        return NULL;
    prep_job *j = &p->jobs[i];
    int same = j->len == len && j->next_run == next_run &&
               (len == 0 || memcmp(p->read.p + j->rec, data, len) == 0);
    __atomic_add_fetch(same ? &s->prep_used : &s->prep_redone, 1, __ATOMIC_RELAXED);
    return same ? j : NULL;
}

/* Makes the writes of prepared job j in t, and moves its outputs to o. */
static int
prep_apply(due_prep *p, aps_txn *t, prep_job *j, wout *o)
{
    /* Once: a rerun of the write (its outputs gone with it) does the job
     * afresh. */
    j->state = PREP_USED;
    int rc = aps__txn_log_replay(t, p->log, j->op0, j->op1);
    for (size_t e = j->ev0; e < j->ev1 && rc == 0; e++) {
        rc = aps__evlist_push_encoded(&o->evs, p->o.evs.v[e], p->evenc.p + p->evb[e].off,
                                      p->evb[e].len);
        if (rc == 0)
            p->o.evs.v[e] = NULL;
    }
    for (size_t r = j->run0; r < j->run1 && rc == 0; r++) {
        rc = out_run(o, p->o.runs[r]);
        if (rc == 0)
            p->o.runs[r] = NULL;
    }
    return rc;
}

static int
due_fn(aps_txn *t, void *arg)
{
    due_ctx *c = arg;
    int rc = 0;
    reset_out(&c->o);
    c->processed = 0;
    for (size_t i = 0; i < c->n_ids && rc == 0; i++) {
        aps__jobrec *rec = NULL;
        aps_time next_run = APS_TIME_NONE;
        const void *data = NULL;
        size_t len = 0;
        rc = aps__txn_job_get(t, c->ids[i], &data, &len, &next_run);
        if (rc == APS_ENOENT) {
            rc = 0; /* removed since the scan */
            continue;
        }
        if (rc != 0)
            break;
        if (next_run == APS_TIME_NONE || next_run > c->upto)
            continue; /* changed since the scan */
        prep_job *j = prep_current(c->s, c->prep, i, data, len, next_run);
        if (j != NULL) {
            rc = prep_apply(c->prep, t, j, &c->o);
            c->processed += (size_t)j->processed;
            if (j->deferred != APS_TIME_NONE &&
                (c->deferred == APS_TIME_NONE || j->deferred < c->deferred))
                c->deferred = j->deferred;
            continue;
        }
        rc = aps__jobrec_decode(data, len, &rec);
        if (rc == APS_ECORRUPT) {
            /* A record that cannot be decoded would be due forever: take
             * it out of the due index, keep its bytes for inspection. */
            const void *data = NULL;
            size_t len = 0;
            rc = aps__txn_job_get(t, c->ids[i], &data, &len, NULL);
            if (rc == 0) {
                void *copy = malloc(len ? len : 1);
                if (copy == NULL)
                    return APS_ENOMEM;
                memcpy(copy, data, len);
                rc = aps__txn_job_put(t, c->ids[i], copy, len, APS_TIME_NONE);
                free(copy);
            }
            continue;
        }
        if (rc != 0)
            break;
        rc = process_due_job(c, t, rec);
        aps__jobrec_free(rec);
    }
    if (rc == 0)
        rc = events_in_txn(c->s, c->si, t, &c->o);
    return rc;
}

/* ---- the loop: finished runs ------------------------------------------------- */

typedef struct done_ctx {
    aps_scheduler *s;
    size_t si;
    aps__run **runs;
    size_t n;
    aps_time now;
    int stopping; /* shutting down: queued runs stay queued (in the record) */
    struct due_prep *prep; /* the runs as the loop prepared them, or NULL */
    aps__wbuf *enc;        /* records encoded here; NULL: the loop's */
    wout o;
} done_ctx;

/* Ends a string cut to fit its buffer after its last whole UTF-8
 * character: the stored text stays text (a client reading a job's stats
 * would otherwise get a broken character at the end). */
static void
utf8_cut(char *s)
{
    size_t n = strlen(s), i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (n - (i - 1) < need)
        s[i - 1] = '\0';
}

static int
outcome_event(done_ctx *c, const aps__run *run, const aps__run_result *res, aps__jobrec *rec)
{
    aps_event *ev = NULL;
    aps_job fake;
    const aps_job *j = rec ? &rec->job : NULL;
    if (j == NULL) {
        memset(&fake, 0, sizeof(fake));
        fake.id = run->job_id;
        fake.jobstore = run->jobstore;
        fake.executor = run->executor;
        j = &fake;
    }
    if (res->missed) {
        if (rec) {
            rec->job.stats.misses++;
        }
        /* Stamped when the executor judged it, not when the loop took the
         * completion (a pass's batch carries its start time): the time
         * says how late the run was. */
        aps_time at = res->started > 0 ? res->started : c->now;
        return out_event(&c->o, APS_EVENT_JOB_MISSED, at, j, run->run_id, &res->run_time, 1, NULL);
    }
    int ok = res->outcome.status == APS_RUN_SUCCEEDED;
    int rc = out_event(&c->o, ok ? APS_EVENT_JOB_EXECUTED : APS_EVENT_JOB_ERROR, c->now, j,
                       run->run_id, &res->run_time, 1, &ev);
    if (rc != 0)
        return rc;
    rc = aps__outcome_copy(&res->outcome, &ev->outcome);
    if (rc != 0)
        return rc;
    if (rec) {
        aps_job_stats *st = &rec->job.stats;
        st->runs++;
        if (!ok)
            st->failures++;
        memcpy(st->last_run_id, run->run_id, sizeof(st->last_run_id));
        st->last_run_time = res->run_time;
        st->last_status = res->outcome.status;
        st->last_exit_code = res->outcome.has_exit_code ? res->outcome.exit_code
                                                        : -res->outcome.signal;
        int len = 0;
        if (res->outcome.error_type != NULL && res->outcome.error != NULL &&
            strcmp(res->outcome.error_type, res->outcome.error) != 0)
            len = snprintf(st->last_error, sizeof(st->last_error), "%s: %s",
                           res->outcome.error_type, res->outcome.error); /* as Python prints it */
        else if (res->outcome.error != NULL)
            len = snprintf(st->last_error, sizeof(st->last_error), "%s", res->outcome.error);
        else
            st->last_error[0] = '\0'; /* (snprintf was a measurable part of a run) */
        if (len >= (int)sizeof(st->last_error))
            utf8_cut(st->last_error);
        if (res->started != 0 && res->started != APS_TIME_NONE)
            aps__jobrec_add_lateness(rec, res->started - res->run_time);
    }
    return 0;
}

/* Ends the runs queued in a job that will not be due again (a date job's
 * or an exhausted trigger's runs queued by RunJobNow or Backfill) at a
 * shutdown: JOB_ERROR, interrupted, each; left queued, nothing would ever
 * start them. */
static int
drop_pending(done_ctx *c, aps__jobrec *rec)
{
    aps_outcome out;
    memset(&out, 0, sizeof(out));
    out.status = APS_RUN_INTERRUPTED;
    out.error = "interrupted: the scheduler shut down before the queued run started";
    for (size_t k = 0; k < rec->n_pending; k++) {
        aps__pending *p = &rec->pending[k];
        for (size_t i = 0; i < p->n_run_times; i++) {
            aps_event *ev = NULL;
            int rc = out_event(&c->o, APS_EVENT_JOB_ERROR, c->now, &rec->job, NULL,
                               &p->run_times[i], 1, &ev);
            if (rc == 0)
                rc = aps__outcome_copy(&out, &ev->outcome);
            if (rc != 0)
                return rc;
        }
    }
    for (size_t k = 0; k < rec->n_pending; k++)
        free(rec->pending[k].run_times);
    rec->n_pending = 0;
    return 0;
}

/* Records finished run `run` of job record rec (NULL: the job is gone). */
static int
done_rec(done_ctx *c, aps_txn *t, const aps__run *run, aps__jobrec *rec)
{
    char key[APS_STORE_META_KEY_MAX + 1];
    int rc = 0;
    if (rec != NULL)
        running_drop(rec, run->run_id);
    for (size_t i = 0; i < run->n_run_times && rc == 0; i++)
        rc = outcome_event(c, run, &run->results[i], rec);
    if (rc == 0 && store_persists(c->s, run->jobstore)) {
        run_key(key, run->run_id);
        rc = aps__txn_meta_del(t, key);
        if (rc == APS_ENOENT)
            rc = 0;
    }
    /* Not while shutting down: the executors refuse new runs then, and a
     * queued run would end as a failure to start. It waits in the record
     * for the next start (submit starts it first), unless the job has no
     * next run to bring it up again. */
    if (rc == 0 && rec != NULL && !c->stopping)
        rc = start_pending(c->s, t, &c->o, rec, c->now);
    else if (rc == 0 && rec != NULL && rec->job.next_run_time == APS_TIME_NONE && !rec->job.paused)
        rc = drop_pending(c, rec);
    if (rc == 0 && rec != NULL) {
        if (rec->job.next_run_time == APS_TIME_NONE && !rec->job.paused && rec->n_pending == 0) {
            /* The trigger was exhausted while runs waited: now it is done. */
            rc = aps__txn_job_del(t, rec->job.id);
            if (rc == 0)
                rc = out_event(&c->o, APS_EVENT_JOB_REMOVED, c->now, &rec->job, NULL, NULL, 0,
                               NULL);
        } else {
            rc = loop_save(c->s, c->enc, t, rec);
        }
    }
    return rc;
}

/* Records finished run i of c. */
static int
done_one(done_ctx *c, aps_txn *t, size_t i, const aps__run *run)
{
    aps__jobrec *rec = NULL;
    const void *data = NULL;
    size_t len = 0;
    aps_time next_run = APS_TIME_NONE;
    int rc = aps__txn_job_get(t, run->job_id, &data, &len, &next_run);
    prep_job *j = rc == 0 ? prep_current(c->s, c->prep, i, data, len, next_run) : NULL;
    if (j != NULL)
        return prep_apply(c->prep, t, j, &c->o);
    if (rc == 0)
        rc = aps__jobrec_decode(data, len, &rec);
    /* Removed meanwhile, or a record that cannot be decoded (left as it
     * is, for inspection): the run's events still count, and its run index
     * entry goes. Failing instead would fail every completion of the
     * store's pass, again and again, and no instance slot would be freed. */
    if (rc == APS_ENOENT || rc == APS_ECORRUPT)
        rc = 0;
    if (rc == 0)
        rc = done_rec(c, t, run, rec);
    aps__jobrec_free(rec);
    return rc;
}

static int
prep_read_cb(void *arg, size_t i, const void *data, size_t len, aps_time next_run)
{
    prep_read(arg, i, data, len, next_run);
    return 0;
}

/* Room for n jobs in p. */
static int
prep_reserve(due_prep *p, size_t n)
{
    if (n > p->cap_jobs) {
        prep_job *v = realloc(p->jobs, n * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        p->jobs = v;
        p->cap_jobs = n;
    }
    if (n > p->cap_ids) {
        const char **v = realloc(p->ids, n * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        p->ids = v;
        p->cap_ids = n;
    }
    return 0;
}

/* On the loop's thread, before the write that records them: the finished
 * runs of c as done_fn would record them, from their jobs' records read
 * in one snapshot of store st (see due_prep). Runs not prepared (their
 * job changed since, or gone) done_fn records as it always did. */
static void
done_prepare(done_ctx *c, aps_store *st)
{
    due_prep *p = c->prep;
    if (p == NULL || c->n == 0)
        return;
    prep_reset(p);
    if (prep_reserve(p, c->n) != 0) {
        c->prep = NULL;
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        p->ids[i] = c->runs[i]->job_id;
        p->jobs[i].state = PREP_NONE;
    }
    p->n_jobs = c->n;
    if (aps__store_jobs_get(st, p->ids, c->n, prep_read_cb, p) != 0)
        return; /* none prepared: done_fn does them all */
    done_ctx pc = *c;
    pc.prep = NULL;
    pc.enc = &p->enc;
    pc.o = p->o;
    aps_txn *t = aps__txn_log_txn(p->log);
    for (size_t i = 0; i < c->n; i++) {
        prep_job *j = &p->jobs[i];
        aps__jobrec *rec = NULL;
        if (j->state != PREP_READ)
            continue;
        j->state = PREP_NONE;
        if (aps__jobrec_decode(p->read.p + j->rec, j->len, &rec) != 0)
            continue;
        prep_mark m = prep_begin(p, &pc.o, j);
        int rc = done_rec(&pc, t, c->runs[i], rec);
        aps__jobrec_free(rec);
        j->processed = 0;
        j->deferred = APS_TIME_NONE;
        prep_end(p, &pc.o, j, m, rc);
    }
    p->o = pc.o;
}

static int
done_fn(aps_txn *t, void *arg)
{
    done_ctx *c = arg;
    int rc = 0;
    reset_out(&c->o);
    for (size_t i = 0; i < c->n && rc == 0; i++)
        rc = done_one(c, t, i, c->runs[i]);
    if (rc == 0)
        rc = events_in_txn(c->s, c->si, t, &c->o);
    return rc;
}

/* An array of at least n pointers kept in *v (grown as needed), or NULL. */
static aps__run **
ptrs_get(aps__run ***v, size_t *cap, size_t n)
{
    if (n > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < n)
            c *= 2;
        aps__run **p = realloc(*v, c * sizeof(*p));
        if (p == NULL)
            return NULL;
        *v = p;
        *cap = c;
    }
    return *v;
}

/* Finished runs taken from the executors, oldest first. */
typedef struct completions {
    aps__run *list; /* linked by `next` */
    aps__run **runs; /* the same as an array (the loop's); NULL when out of memory */
    size_t n;
} completions;

static void
take_completed(aps_scheduler *s, completions *cp)
{
    pthread_mutex_lock(&s->mu);
    aps__run *list = s->completed;
    s->completed = NULL;
    pthread_mutex_unlock(&s->mu);
    memset(cp, 0, sizeof(*cp));
    /* Oldest first, as they finished. */
    while (list) {
        aps__run *next = list->next;
        list->next = cp->list;
        cp->list = list;
        list = next;
        cp->n++;
    }
    if (cp->n == 0)
        return;
    aps__loop_state *L = loop_state(s);
    cp->runs = L ? ptrs_get(&L->runs, &L->cap_runs, cp->n) : NULL;
    size_t k = 0;
    for (aps__run *r = cp->list; r && cp->runs; r = r->next)
        cp->runs[k++] = r;
}

/* Selects the runs of `cp` whose job lives in store `si` into c->runs
 * (allocated; the caller frees it). */
static int
done_select(aps_scheduler *s, size_t si, const completions *cp, done_ctx *c)
{
    c->si = si;
    c->n = 0;
    c->runs = NULL;
    if (cp->runs == NULL)
        return cp->n > 0 ? APS_ENOMEM : 0;
    c->runs = ptrs_get(&s->loop->sel, &s->loop->cap_sel, cp->n); /* s->loop: as cp->runs */
    if (c->runs == NULL)
        return APS_ENOMEM;
    for (size_t i = 0; i < cp->n; i++) {
        if (strcmp(cp->runs[i]->jobstore, s->stores[si].name) == 0)
            c->runs[c->n++] = cp->runs[i];
    }
    return 0;
}

/* Frees the runs once recorded (or dropped when out of memory). A run
 * whose completion could not be written (a full disk) goes back on the
 * completion queue while the scheduler runs: dropped, it would leave its
 * job with an instance slot taken until a restart. */
static void
finish_completed(aps_scheduler *s, completions *cp)
{
    aps__run *rev = cp->list, *keep = NULL, *gone = NULL;
    pthread_mutex_lock(&s->mu);
    int requeue = s->started && !s->stopping;
    while (rev) {
        aps__run *next = rev->next;
        if (rev->unrecorded && requeue) {
            /* Oldest first in cp: pushed in front, newest first, as the
             * queue keeps them. */
            rev->unrecorded = 0;
            rev->next = keep;
            keep = rev;
        } else {
            rev->next = gone;
            gone = rev;
            __atomic_sub_fetch(&s->n_running, 1, __ATOMIC_RELAXED);
        }
        rev = next;
    }
    if (keep != NULL) {
        /* Older than anything that finished meanwhile: the queue's end. */
        aps__run **end = &s->completed;
        while (*end != NULL)
            end = &(*end)->next;
        *end = keep;
    }
    pthread_cond_broadcast(&s->idle_cv);
    pthread_mutex_unlock(&s->mu);
    /* Freed outside the lock: executor threads handing back finished runs
     * wait for it (hundreds of runs per pass at high rates). */
    while (gone) {
        aps__run *next = gone->next;
        aps__run_free(gone);
        gone = next;
    }
    memset(cp, 0, sizeof(*cp));
}

/* Records finished runs in store `si`; if the write fails, marks them to
 * be queued again (finish_completed). */
static int
write_done(aps_scheduler *s, size_t si, done_ctx *done)
{
    int rc = loop_write_and_publish(s, si, done_fn, done, &done->o);
    if (rc != 0) {
        for (size_t i = 0; i < done->n; i++)
            done->runs[i]->unrecorded = 1;
    }
    return rc;
}

/* Records the finished runs: one write per store. Returns how many. */
static size_t
process_completed(aps_scheduler *s)
{
    completions cp;
    take_completed(s, &cp);
    size_t n = cp.n;
    if (n == 0)
        return 0;
    done_ctx c;
    memset(&c, 0, sizeof(c));
    c.s = s;
    c.now = aps__scheduler_now(s);
    /* Read here, not in done_fn: a write callback runs on the store's
     * writer thread, which must not wait for the scheduler's lock. */
    pthread_mutex_lock(&s->mu);
    c.stopping = s->stopping || !s->started;
    pthread_mutex_unlock(&s->mu);
    loop_out_take(s, 0, &c.o);
    for (size_t si = 0; si < s->n_stores; si++) {
        if (done_select(s, si, &cp, &c) != 0)
            break;
        if (c.n > 0)
            write_done(s, si, &c);
    }
    loop_out_give(s, 0, &c.o);
    finish_completed(s, &cp);
    return n;
}

/* ---- the loop: one pass over a store ------------------------------------------ */

/* The finished runs and the first batch of due jobs of one store, in one
 * write: one durable commit instead of two per pass (but: process_store). */
typedef struct round_ctx {
    done_ctx *done;
    due_ctx *due;
} round_ctx;

static int
round_fn(aps_txn *t, void *arg)
{
    round_ctx *r = arg;
    int rc = done_fn(t, r->done);
    if (rc == 0)
        rc = due_fn(t, r->due);
    return rc;
}

/* A write of due jobs on its way (the first of a pass carries the pass's
 * finished runs, unless they go in a write of their own: done_write).
 * A durable store has up to DUE_WRITES: its writer finds
 * the next batch queued when it is done with one (and takes the batches
 * queued into one commit), while the loop hands on the runs of the one
 * before. */
typedef struct due_write {
    due_ctx c;
    round_ctx r; /* when it carries finished runs (r.done) */
    int64_t t0;  /* queued at (note_due_write) */
    int64_t t1;  /* done at, set before sem is posted */
    aps_time wall0; /* the scheduler's clock at monotonic m0: the pass's start */
    int64_t m0;
    int rc; /* its result, set before sem is posted */
    sem_t sem;
} due_write;

/* Keeps the lead that write w needed, the longest of the current second
 * (store_ahead): twice the write's own time (a disk that stays slow), and
 * twice the time from when the loop could first have taken its runs to
 * their commit, up to AHEAD_PASS_MAX_US (passes that last longer than the
 * lead make the first runs after its horizon late by the difference). */
static void
note_due_write(aps__store_slot *st, const due_write *w)
{
    int64_t write = 2 * (w->t1 - w->t0), pass = 0;
    if (w->c.seen != APS_TIME_NONE) {
        int64_t took = w->wall0 + (w->t1 - w->m0) - w->c.seen;
        pass = took < AHEAD_PASS_MAX_US / 2 ? 2 * took : AHEAD_PASS_MAX_US;
    }
    int64_t sec = w->t1 / US_PER_SEC;
    size_t k = (size_t)(sec % APS__AHEAD_WINDOW_S);
    if (st->need_sec[k] != sec) {
        st->need_sec[k] = sec;
        st->need_write[k] = st->need_pass[k] = 0;
    }
    if (write > st->need_write[k])
        st->need_write[k] = write;
    if (pass > st->need_pass[k])
        st->need_pass[k] = pass;
}

/* On the store's writer thread, as soon as a write of due runs is
 * committed: the runs committed ahead of their time go to the hold queue
 * before the writer takes its next batch, so that a change to their job in
 * that batch finds them there (hold_take) to withdraw them. */
static void
hold_early(aps_scheduler *s, wout *o)
{
    size_t gone = 0; /* withdrawn: never counted */
    if (o->n_runs > 0 && __atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE))
        o->n_runs = hold_arrive_all(s, o->runs, o->n_runs, &o->n_queued, &gone);
}

static void
due_write_done(void *arg, int rc)
{
    due_write *w = arg;
    if (rc == 0)
        hold_early(w->c.s, &w->c.o);
    w->t1 = aps__mono_us();
    w->rc = rc;
    sem_post(&w->sem);
}

/* The finished runs of a pass on their way to a durable store whose
 * writes are slow, queued before its first batch of due jobs is scanned
 * (process_store). */
typedef struct done_write {
    int flying;
    int rc;
    sem_t sem;
} done_write;

static void
done_write_done(void *arg, int rc)
{
    done_write *d = arg;
    d->rc = rc;
    sem_post(&d->sem);
}

/* The finished runs of `done` once their write ended with rc: published,
 * or written again alone (the write may have failed with others queued
 * into its commit; if it fails again, they are queued again). */
static int
done_settle(aps_scheduler *s, size_t si, done_ctx *done, int rc)
{
    if (rc != 0) {
        reset_out(&done->o);
        rc = write_done(s, si, done);
    } else {
        loop_publish_out(s, si, &done->o);
    }
    done->n = 0;
    return rc;
}

/* Waits for d, then hands its outputs on (before any of the due writes
 * queued after it: events are published in the order of their sequence). */
static int
done_write_finish(aps_scheduler *s, size_t si, done_write *d, done_ctx *done)
{
    if (!d->flying)
        return 0;
    d->flying = 0;
    while (sem_wait(&d->sem) != 0 && errno == EINTR)
        ;
    return done_settle(s, si, done, d->rc);
}

/* Queues write w on store si, carrying the finished runs `done` (or NULL). */
static void
due_write_start(aps_scheduler *s, size_t si, due_write *w, done_ctx *done)
{
    w->t0 = aps__mono_us();
    w->r.done = done;
    w->r.due = &w->c;
    if (done != NULL)
        aps__store_write_async(s->stores[si].st, round_fn, &w->r, due_write_done, w);
    else
        aps__store_write_async(s->stores[si].st, due_fn, &w->c, due_write_done, w);
}

/* Waits for write w, then hands its outputs on. */
static int
due_write_finish(aps_scheduler *s, size_t si, due_write *w, size_t *processed)
{
    while (sem_wait(&w->sem) != 0 && errno == EINTR)
        ;
    int rc = w->rc;
    done_ctx *done = w->r.done;
    w->r.done = NULL;
    /* The finished runs first: their events come first in the log. */
    int r = done != NULL ? done_settle(s, si, done, rc) : 0;
    if (rc != 0) {
        /* Again, alone: the write may have failed with others queued into
         * the same commit; and a failing due batch does not lose the
         * finished runs (written apart, first). */
        reset_out(&w->c.o);
        rc = loop_write_and_publish(s, si, due_fn, &w->c, &w->c.o);
        if (rc == 0)
            rc = r;
    } else {
        loop_publish_out(s, si, &w->c.o);
    }
    note_due_write(&s->stores[si], w);
    *processed += w->c.processed;
    return rc;
}

/* How far ahead of their time the due runs of store `si` are committed:
 * commit_ahead_us, or the longest lead a write of due jobs needed in the
 * last APS__AHEAD_WINDOW_S seconds when that is more (note_due_write), up to
 * ahead_max_us (0: no widening). A disk that stays slow (a competing
 * writer), or passes longer than the lead, would otherwise make runs late
 * by the difference. For the passes' sake it grows since the last pass by
 * AHEAD_GROW_US at most, or by the time the loop stood idle since then: a
 * lead widened at once brings all its runs into one pass, which then
 * lasts longer and widens it again (at 100,000 runs/s it went to 1 s
 * within seconds, where jobs due every second wait for their last run's
 * end to be recorded: deferred). For the loop's wake-up (!pass_start) it
 * counts the growth as done, as if the loop slept that long; if it does
 * not, its next passes grow the lead, AHEAD_GROW_US each (from 50 ms to
 * AHEAD_PASS_MAX_US, 28 passes, some with nothing to take). *slow_writes
 * (may be NULL): the writes' part alone widened it. */
static aps_time
store_ahead(aps_scheduler *s, size_t si, int pass_start, int *slow_writes)
{
    aps__store_slot *st = &s->stores[si];
    if (slow_writes != NULL)
        *slow_writes = 0;
    if (!st->durable || !__atomic_load_n(&s->hold_active, __ATOMIC_ACQUIRE))
        return 0;
    int64_t sec = aps__mono_us() / US_PER_SEC, write = 0, pass = 0;
    for (size_t k = 0; k < APS__AHEAD_WINDOW_S; k++) {
        if (st->need_sec[k] <= sec - APS__AHEAD_WINDOW_S)
            continue;
        if (st->need_write[k] > write)
            write = st->need_write[k];
        if (st->need_pass[k] > pass)
            pass = st->need_pass[k];
    }
    if (slow_writes != NULL)
        *slow_writes = write > s->ahead_us && s->ahead_max_us > s->ahead_us;
    if (pass_start && st->pass_mono > 0 && st->pass_end >= st->pass_mono) {
        int64_t idle = aps__mono_us() - st->pass_end;
        int64_t cap = st->pass_lead + (idle > AHEAD_GROW_US ? idle : AHEAD_GROW_US);
        if (pass > cap)
            pass = cap;
    }
    int64_t worst = write > pass ? write : pass;
    int64_t lead = worst < s->ahead_max_us ? worst : s->ahead_max_us;
    if (lead < s->ahead_us)
        lead = s->ahead_us;
    if (pass_start)
        __atomic_store_n(&st->lead_us, lead, __ATOMIC_RELAXED);
    return lead;
}

/* Records the finished runs of store `si` (`done`, may be empty), then runs
 * its due jobs in batches; the runs share the first batch's write. On a
 * durable store whose writes are slow (the lead widened for them: store_ahead) the
 * runs go in a write of their own queued first, so that the writer records
 * them while the loop prepares the first batch: at 100,000 runs/s p99
 * 180-248 ms against 177-337 ms carried, p50 40-58 ms against 59-131 (a
 * commit more per pass: at 10,000 runs/s, 135 commits/s against 89). Each
 * batch is scanned after the last job of the one before, which may still
 * be on its way (due_write). */
static int
process_store(aps_scheduler *s, size_t si, aps_time now, done_ctx *done, aps_time *deferred)
{
    due_write w[DUE_WRITES];
    size_t flying = 0, oldest = 0; /* writes queued, not finished; the first */
    due_write *last = NULL;        /* the batch scanned last */
    aps_store *st = s->stores[si].st;
    int rc = 0, more = 0; /* more: stopped with due jobs left */
    int carried = 0;      /* the finished runs went with a batch, or their own */
    done_write dw = {0, 0, {{0}}};
    sem_init(&dw.sem, 0, 0);
    size_t processed = 0; /* due jobs of the pass not deferred */
    /* Several writes at once where commits are flushed: a memory store's
     * write runs at once, on this thread. */
    size_t depth = s->stores[si].durable ? DUE_WRITES : 1;
    int slow_writes = 0;
    aps_time upto = now + store_ahead(s, si, 1, &slow_writes);
    aps_time wall0 = aps__scheduler_now(s);
    int64_t m0 = aps__mono_us(), prev = s->stores[si].pass_mono;
    /* The last pass's start and horizon, on the clock of now; none since
     * the loop stood still: the jobs due before this pass are not counted
     * (a backlog after a start, a resume). */
    aps_time floor = wall0, reach = wall0;
    if (prev > 0 && prev <= m0) {
        floor = wall0 - (m0 - prev);
        reach = s->stores[si].pass_more ? APS_TIME_NONE : floor + s->stores[si].pass_horizon;
    }
    s->stores[si].pass_mono = m0;
    s->stores[si].pass_end = 0;
    s->stores[si].pass_lead = upto - now;
    s->stores[si].pass_horizon = upto - wall0;
    memset(w, 0, sizeof(w));
    loop_state(s); /* NULL: buffers per pass */
    for (size_t k = 0; k < DUE_WRITES; k++) {
        w[k].c.s = s;
        w[k].c.si = si;
        w[k].c.now = now;
        w[k].c.upto = upto;
        w[k].c.deferred = APS_TIME_NONE;
        w[k].c.floor = floor;
        w[k].c.reach = reach;
        w[k].wall0 = wall0;
        w[k].m0 = m0;
        w[k].c.uncached = s->stores[si].durable;
        if (s->stores[si].durable && s->loop != NULL) {
            if (s->loop->prep[k] == NULL)
                s->loop->prep[k] = prep_new(DUE_BATCH_MAX); /* NULL: the writer does it */
            w[k].c.prep = s->loop->prep[k];
        }
        sem_init(&w[k].sem, 0, 0);
        loop_out_take(s, 1 + (int)k, &w[k].c.o);
    }
    /* The loop's own buffer: 100 KB allocated per pass made glibc
     * consolidate its free lists every time (a fifth of the loop's CPU). */
    if (s->due_ids == NULL &&
        (s->due_ids = malloc(DUE_WRITES * DUE_BATCH_MAX * sizeof(*w[0].c.ids))) == NULL) {
        rc = APS_ENOMEM;
        goto out;
    }
    for (size_t k = 0; k < DUE_WRITES; k++)
        w[k].c.ids = s->due_ids + k * DUE_BATCH_MAX;
    if (done->n > 0 && s->stores[si].durable && s->loop != NULL) {
        if (s->loop->prep_done == NULL)
            s->loop->prep_done = prep_new(DUE_BATCH);
        done->prep = s->loop->prep_done;
        done_prepare(done, st);
        if (aps__prepared_test != NULL && done->prep != NULL)
            aps__prepared_test(s, 1);
    }
    if (done->prep != NULL && done->n > 0 && slow_writes) {
        /* The lead has widened for slow writes: the writer is the limit,
         * and starts on the runs while the loop prepares the first batch.
         * Not when it widened for long passes (the loop is the limit): at
         * 100,000 runs/s, 12.1-12.5 us of CPU per run carried, p99 4.2-4.4
         * ms, against 12.5-14.9 us and 5.1-58 ms in a write of their own. */
        aps__store_write_async(st, done_fn, done, done_write_done, &dw);
        dw.flying = 1;
        carried = 1;
    }
    size_t *batch = &s->stores[si].due_batch;
    int grows = strcmp(s->stores[si].type, "memory") != 0;
    if (*batch < DUE_BATCH || *batch > DUE_BATCH_MAX || !grows)
        *batch = DUE_BATCH;
    size_t total = 0; /* due jobs taken in this pass */
    for (int rounds = 0;; rounds++) {
        if (total >= PASS_MAX) {
            more = 1; /* the rest in the next pass */
            break;
        }
        due_write *cur = &w[(oldest + flying) % DUE_WRITES];
        cur->c.n_ids = 0;
        cur->c.seen = APS_TIME_NONE;
        prep_reset(cur->c.prep);
        if (rounds > 0 && s->loop_woke != APS_TIME_NONE)
            rt_busy_check(s);
        if (last != NULL)
            rc = aps__store_due_after(st, last->c.last_next, last->c.ids[last->c.n_ids - 1], upto,
                                      *batch, due_collect, &cur->c);
        else
            rc = aps__store_due(st, upto, *batch, due_collect, &cur->c);
        if (rc < 0 || cur->c.n_ids == 0)
            break;
        size_t taken = *batch;
        total += cur->c.n_ids;
        due_prepare(&cur->c);
        if (aps__prepared_test != NULL && cur->c.prep != NULL)
            aps__prepared_test(s, 0);
        if (grows) {
            if (cur->c.n_ids == taken && taken < DUE_BATCH_MAX)
                *batch = taken * 2;
            else if (cur->c.n_ids < taken / 2 && taken > DUE_BATCH)
                *batch = taken / 2;
        }
        due_write_start(s, si, cur, done->n > 0 && !carried ? done : NULL);
        carried = 1;
        last = cur;
        flying++;
        if (flying == depth) {
            int r = done_write_finish(s, si, &dw, done);
            if (rc == 0)
                rc = r;
            r = due_write_finish(s, si, &w[oldest], &processed);
            oldest = (oldest + 1) % DUE_WRITES;
            flying--;
            if (rc == 0)
                rc = r;
        }
        /* A batch of deferred jobs only: a store that scans from the
         * first again (memory) would see them again. */
        if (depth == 1 && cur->c.processed == 0)
            break;
        if (rc != 0 || cur->c.n_ids < taken)
            break;
    }
    if (dw.flying) {
        int r = done_write_finish(s, si, &dw, done);
        if (rc == 0)
            rc = r;
    }
    for (; flying > 0; flying--) {
        int r = due_write_finish(s, si, &w[oldest], &processed);
        oldest = (oldest + 1) % DUE_WRITES;
        if (rc == 0)
            rc = r;
    }
out:
    /* With due jobs left, the next pass comes at once, not at the time of
     * a deferred one; unless every job taken was deferred (those alone
     * would be taken again and again). */
    if (more && processed == 0)
        more = 0;
    *deferred = APS_TIME_NONE;
    for (size_t k = 0; k < DUE_WRITES && !more; k++)
        if (w[k].c.deferred != APS_TIME_NONE &&
            (*deferred == APS_TIME_NONE || w[k].c.deferred < *deferred))
            *deferred = w[k].c.deferred;
    if (done->n > 0) {
        /* Nothing due: the finished runs alone. */
        int r = write_done(s, si, done);
        if (rc == 0)
            rc = r; /* retried soon, as a failed due write */
        done->n = 0;
    }
    for (size_t k = 0; k < DUE_WRITES; k++) {
        sem_destroy(&w[k].sem);
        loop_out_give(s, 1 + (int)k, &w[k].c.o);
        prep_reset(w[k].c.prep);
    }
    sem_destroy(&dw.sem);
    prep_reset(done->prep);
    done->prep = NULL;
    s->stores[si].pass_end = aps__mono_us();
    s->stores[si].pass_more = more;
    return rc;
}

/* ---- the loop: restart recovery ---------------------------------------------- */

typedef struct interrupted {
    char run_id[33];
    char job_id[APS__ID_MAX + 1];
    char *executor;      /* from the run index; NULL in older records */
    aps_time *run_times; /* the same */
    size_t n_run_times;
} interrupted;

typedef struct scan_ctx {
    interrupted *v;
    size_t n, cap;
} scan_ctx;

static int
scan_runs(void *arg, const char *key, const void *data, size_t len)
{
    scan_ctx *c = arg;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        interrupted *v = realloc(c->v, cap * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    interrupted *it = &c->v[c->n++];
    memset(it, 0, sizeof(*it));
    snprintf(it->run_id, sizeof(it->run_id), "%s", key + strlen(RUN_PREFIX));
    const unsigned char *v = data;
    const unsigned char *nul = memchr(v, 0, len);
    size_t idlen = nul ? (size_t)(nul - v) : len;
    size_t l = idlen < APS__ID_MAX ? idlen : APS__ID_MAX;
    memcpy(it->job_id, v, l);
    it->job_id[l] = '\0';
    if (nul == NULL)
        return 0; /* an older record: the job id alone */
    const unsigned char *ex = nul + 1;
    const unsigned char *nul2 = memchr(ex, 0, len - idlen - 1);
    if (nul2 == NULL)
        return 0; /* damaged: the job id is all that can be trusted */
    it->executor = strndup((const char *)ex, (size_t)(nul2 - ex));
    const unsigned char *p = nul2 + 1;
    size_t n = (len - (size_t)(p - v)) / 8;
    if (n > 0 && (it->run_times = malloc(n * sizeof(aps_time))) != NULL) {
        for (size_t i = 0; i < n; i++) {
            uint64_t u = 0;
            for (size_t b = 0; b < 8; b++)
                u = u << 8 | p[8 * i + b];
            it->run_times[i] = (aps_time)u;
        }
        it->n_run_times = n;
    }
    return 0;
}

/* Whether a run was committed ahead of its time `at`: its id carries the
 * wall clock's milliseconds when it was made (aps__id_generate_ordered). */
static int
made_before(const char *run_id, aps_time at)
{
    int64_t ms = 0;
    for (int i = 0; i < 12; i++) {
        char c = run_id[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return 0;
        ms = ms << 4 | d;
    }
    return at > ms * 1000 + 999;
}

/* Runs committed ahead that never started, back to their job's schedule
 * (restore_unstarted). */
typedef struct unstarted_ctx {
    aps_scheduler *s;
    size_t si;
    aps_time now;
    interrupted *v; /* run and job ids only */
    size_t n, cap;
    wout o;
} unstarted_ctx;

/* Each run leaves its job's running instances and the run index, ends as
 * withdrawn (JOB_ERROR, CANCELLED, not counted in the statistics), and its
 * time is the job's next run time again: the loop then runs it at that
 * time, or, past it, as APScheduler runs a time missed while it was down
 * (misfire_grace_time, coalesce). */
static int
unstarted_fn(aps_txn *t, void *arg)
{
    unstarted_ctx *c = arg;
    aps_outcome out;
    int rc = 0;
    memset(&out, 0, sizeof(out));
    out.status = APS_RUN_CANCELLED;
    out.error = "withdrawn before its time: the scheduler stopped first; the run comes again "
                "from the job's schedule";
    reset_out(&c->o);
    for (size_t i = 0; i < c->n && rc == 0; i++) {
        aps__jobrec *rec = NULL;
        size_t k = 0;
        rc = txn_load(t, c->v[i].job_id, &rec);
        if (rc == 0 && (k = running_find(rec, c->v[i].run_id)) < rec->n_running &&
            rec->running[k].n_run_times > 0) {
            const aps__run_rec *r = &rec->running[k];
            aps_time at = r->run_times[0];
            aps_job fake;
            memset(&fake, 0, sizeof(fake));
            fake.id = rec->job.id;
            fake.jobstore = rec->job.jobstore;
            fake.executor = (char *)r->executor;
            rc = withdraw_one(c->s, t, &c->o, rec, &fake, c->v[i].run_id, r->run_times,
                              r->n_run_times, c->now, &out);
            if (rc == 0 && !rec->job.paused &&
                (rec->job.next_run_time == APS_TIME_NONE || at < rec->job.next_run_time))
                rec->job.next_run_time = at;
            if (rc == 0)
                rc = txn_save(t, rec);
        } else if (rc == 0 || rc == APS_ENOENT) {
            /* Changed since it was read (the API is open before the start):
             * the run ends as the index knows it. */
            aps_job fake;
            memset(&fake, 0, sizeof(fake));
            fake.id = c->v[i].job_id;
            fake.jobstore = c->s->stores[c->si].name;
            fake.executor = c->v[i].executor ? c->v[i].executor : "";
            rc = withdraw_one(c->s, t, &c->o, NULL, &fake, c->v[i].run_id, c->v[i].run_times,
                              c->v[i].n_run_times, c->now, &out);
        }
        aps__jobrec_free(rec);
    }
    if (rc == 0)
        rc = events_in_txn(c->s, c->si, t, &c->o);
    return rc;
}

/* Whether the run `run_id` of `rec` was committed ahead and never handed
 * on (its time is past `bound`, aps__store_handed_bound). */
static int
never_started(const aps__jobrec *rec, const char *run_id, aps_time bound)
{
    size_t k = running_find(rec, run_id);
    if (k == rec->n_running || rec->running[k].n_run_times == 0)
        return 0;
    aps_time at = rec->running[k].run_times[0];
    return at > bound && made_before(run_id, at);
}

/* Moves `it` (its executor and run times too) into c. */
static int
unstarted_add(unstarted_ctx *c, interrupted *it)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        interrupted *v = realloc(c->v, cap * sizeof(*v));
        if (v == NULL)
            return APS_ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = *it;
    it->executor = NULL;
    it->run_times = NULL;
    return 0;
}

/* Runs committed ahead whose time had not come when the scheduler shut
 * down (hold_stop): APScheduler would not have submitted them, so they do
 * not start. Each is withdrawn as a restart withdraws one that never
 * started (unstarted_fn: JOB_ERROR "...the scheduler stopped first", its
 * time the job's next run time again), in one write per store. If that
 * write fails, the store still has them as committed and never handed
 * on, and the next start withdraws them from its mark of runs handed on.
 * Frees runs[0..n) and the array. */
static void
withdraw_held(aps_scheduler *s, aps__run **runs, size_t n)
{
    for (size_t si = 0; si < s->n_stores && n > 0; si++) {
        unstarted_ctx uc;
        int rc = 0;
        memset(&uc, 0, sizeof(uc));
        uc.s = s;
        uc.si = si;
        for (size_t i = 0; i < n && rc == 0; i++) {
            const aps__run *run = runs[i];
            interrupted it;
            if (strcmp(run->jobstore, s->stores[si].name) != 0)
                continue;
            memset(&it, 0, sizeof(it));
            memcpy(it.run_id, run->run_id, sizeof(it.run_id));
            snprintf(it.job_id, sizeof(it.job_id), "%s", run->job_id);
            it.executor = strdup(run->executor);
            it.run_times = malloc(run->n_run_times * sizeof(aps_time));
            it.n_run_times = run->n_run_times;
            if (it.executor == NULL || it.run_times == NULL)
                rc = APS_ENOMEM;
            else
                memcpy(it.run_times, run->run_times, run->n_run_times * sizeof(aps_time));
            if (rc == 0)
                rc = unstarted_add(&uc, &it);
            free(it.executor);
            free(it.run_times);
        }
        if (rc == 0 && uc.n > 0) {
            uc.now = aps__scheduler_now(s);
            (void)write_and_publish(s, si, unstarted_fn, &uc, &uc.o);
        }
        for (size_t i = 0; i < uc.n; i++) {
            free(uc.v[i].executor);
            free(uc.v[i].run_times);
        }
        free(uc.v);
        free_out(&uc.o);
    }
    /* Freed and uncounted as a change's withdrawn runs are. */
    withdrawn w = {.runs = runs, .n = n};
    withdrawn_end(s, &w);
}

/* Whether store si's run index is empty. */
static int
no_runs_left(void *arg, const char *key, const void *data, size_t len)
{
    (void)key;
    (void)data;
    (void)len;
    *(int *)arg = 0;
    return 1;
}

/* Ends run `it` of store si (it->executor and run times taken) as
 * interrupted by restart (aps__run_finished): its executor and run times
 * from its job's running list when `rec` (may be NULL) lists it, else from
 * the run index. */
static int
interrupt_run(aps_scheduler *s, size_t si, interrupted *it, const aps__jobrec *rec)
{
    aps__run *run = calloc(1, sizeof(*run));
    if (run == NULL)
        return APS_ENOMEM;
    run->sched = s;
    memcpy(run->run_id, it->run_id, sizeof(run->run_id));
    run->job_id = strdup(it->job_id);
    run->jobstore = strdup(s->stores[si].name);
    if (rec != NULL) {
        run->executor = strdup(rec->job.executor);
        /* The first entry of the run only (a damaged record may list it
         * twice, or without run times). */
        size_t k = running_find(rec, run->run_id), n = 0;
        if (k < rec->n_running)
            n = rec->running[k].n_run_times;
        if (n > 0 && (run->run_times = malloc(n * sizeof(aps_time))) != NULL) {
            memcpy(run->run_times, rec->running[k].run_times, n * sizeof(aps_time));
            run->n_run_times = n;
        }
    }
    if (run->n_run_times == 0 && it->n_run_times > 0) {
        /* The job is gone (or no longer lists the run): the index still
         * knows the run times. */
        run->run_times = it->run_times;
        run->n_run_times = it->n_run_times;
        it->run_times = NULL;
    }
    if (run->executor == NULL && it->executor != NULL) {
        run->executor = it->executor;
        it->executor = NULL;
    }
    if (run->executor == NULL)
        run->executor = strdup("");
    if (run->n_run_times == 0) {
        run->run_times = malloc(sizeof(aps_time));
        if (run->run_times != NULL) {
            run->run_times[0] = APS_TIME_NONE;
            run->n_run_times = 1;
        }
    }
    run->results = calloc(run->n_run_times ? run->n_run_times : 1, sizeof(*run->results));
    if (run->job_id == NULL || run->jobstore == NULL || run->executor == NULL ||
        run->run_times == NULL || run->results == NULL) {
        aps__run_free(run);
        return APS_ENOMEM;
    }
    for (size_t k = 0; k < run->n_run_times; k++) {
        run->results[k].run_time = run->run_times[k];
        run->results[k].outcome.status = APS_RUN_INTERRUPTED;
        run->results[k].outcome.error = strdup("interrupted by restart");
    }
    pthread_mutex_lock(&s->mu);
    __atomic_add_fetch(&s->n_running, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->mu);
    aps__run_finished(run);
    return 0;
}

/* Runs recorded as running when the process stopped without finishing them
 * (a crash, a kill): each becomes a JOB_ERROR "interrupted by restart", its
 * instance slot is freed, and the job keeps firing. Runs committed ahead
 * that were never handed on (their time is past the store's bound) did
 * not start: they go back to their job's schedule (unstarted_fn); if that
 * write fails (a full disk), they are reported interrupted instead, whose
 * records are retried until they can be written. */
static int
recover_interrupted(aps_scheduler *s)
{
    int rc = 0;
    for (size_t si = 0; si < s->n_stores && rc == 0; si++) {
        scan_ctx sc = {0};
        unstarted_ctx uc;
        memset(&uc, 0, sizeof(uc));
        uc.s = s;
        uc.si = si;
        aps_time bound = aps__store_handed_bound(s->stores[si].st);
        rc = aps__store_meta_scan(s->stores[si].st, RUN_PREFIX, scan_runs, &sc);
        /* Runs this process made (an API call before the start) may be
         * handed on at any moment: none is judged then. Read after the
         * scan: unset, every run it found is older than this process. */
        if (__atomic_load_n(&s->runs_made, __ATOMIC_ACQUIRE))
            bound = INT64_MAX;
        for (size_t i = 0; i < sc.n && rc == 0; i++) {
            /* The job's record, read once, tells how the run stands. */
            void *data = NULL;
            size_t len = 0;
            aps__jobrec *rec = NULL;
            if (aps__store_job_get(s->stores[si].st, sc.v[i].job_id, &data, &len, NULL) != 0 ||
                aps__jobrec_decode(data, len, &rec) != 0) {
                aps__jobrec_free(rec);
                rec = NULL;
            }
            if (rec != NULL && never_started(rec, sc.v[i].run_id, bound))
                rc = unstarted_add(&uc, &sc.v[i]);
            else
                rc = interrupt_run(s, si, &sc.v[i], rec);
            aps__jobrec_free(rec);
            free(data);
        }
        if (rc == 0 && uc.n > 0) {
            uc.now = aps__scheduler_now(s);
            if (write_and_publish(s, si, unstarted_fn, &uc, &uc.o) != 0) {
                for (size_t i = 0; i < uc.n && rc == 0; i++)
                    rc = interrupt_run(s, si, &uc.v[i], NULL);
            }
        }
        for (size_t i = 0; i < sc.n; i++) {
            free(sc.v[i].executor);
            free(sc.v[i].run_times);
        }
        free(sc.v);
        for (size_t i = 0; i < uc.n; i++) {
            free(uc.v[i].executor);
            free(uc.v[i].run_times);
        }
        free(uc.v);
        free_out(&uc.o);
    }
    if (rc == 0)
        process_completed(s);
    /* Once the index is empty the runs of the processes before are all
     * recovered, for good: only this process's hand-offs bound the next
     * recovery. (Runs left in it, the bound of those before holds on.) */
    for (size_t si = 0; si < s->n_stores && rc == 0; si++) {
        int empty = 1;
        if (aps__store_meta_scan(s->stores[si].st, RUN_PREFIX, no_runs_left, &empty) >= 0 && empty)
            aps__store_handed_recovered(s->stores[si].st);
    }
    return rc;
}

/* ---- the loop ------------------------------------------------------------------ */

static void
prune_requests(aps_scheduler *s, aps_time now);

static void
drain_fd(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0)
        ;
}

/* Arms the realtime timer for `when` (absolute); clock jumps cancel it, so
 * the loop re-evaluates at once (robust to wall-clock changes). */
static void
arm_timer(aps_scheduler *s, aps_time when)
{
    struct itimerspec its;
    /* The same future deadline as armed: one syscall per pass saved (a
     * pass per few runs at high rates). */
    if (when == s->timer_armed && when != APS_TIME_NONE && when > aps__scheduler_now(s))
        return;
    s->timer_armed = when;
    memset(&its, 0, sizeof(its));
    if (when != APS_TIME_NONE && s->clock.now == real_now) {
        if (when <= 0)
            when = 1;
        its.it_value.tv_sec = when / US_PER_SEC;
        its.it_value.tv_nsec = (long)(when % US_PER_SEC) * 1000;
    }
    timerfd_settime(s->timer_fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL);
}

/* Removes the jobs of ended_note, each unless a change gave it a next run
 * time or runs to queue, or its run is over (then done_fn removed it). */
typedef struct ended_ctx {
    aps_scheduler *s;
    size_t si;
    aps_time now;
    const aps__ended *v;
    size_t n;
    wout o;
} ended_ctx;

static int
ended_fn(aps_txn *t, void *arg)
{
    ended_ctx *c = arg;
    int rc = 0;
    reset_out(&c->o);
    for (size_t i = 0; i < c->n && rc == 0; i++) {
        aps__jobrec *rec = NULL;
        if (c->v[i].si != c->si)
            continue;
        rc = txn_load(t, c->v[i].id, &rec);
        if (rc == APS_ENOENT) {
            rc = 0;
            continue;
        }
        /* (A pause since the hand-off came after APScheduler's removal.) */
        if (rc == 0 && rec->job.next_run_time == APS_TIME_NONE && rec->n_pending == 0 &&
            running_find(rec, c->v[i].run_id) < rec->n_running) {
            rc = aps__txn_job_del(t, rec->job.id);
            if (rc == 0)
                rc =
                    out_event(&c->o, APS_EVENT_JOB_REMOVED, c->now, &rec->job, NULL, NULL, 0, NULL);
        }
        aps__jobrec_free(rec);
    }
    if (rc == 0)
        rc = events_in_txn(c->s, c->si, t, &c->o);
    return rc;
}

/* The loop's removal of the jobs ended_note noted: one write per store
 * that has some. A write that fails leaves the job to done_fn. */
static void
process_ended(aps_scheduler *s, aps_time now)
{
    pthread_mutex_lock(&s->hold_mu);
    aps__ended *v = s->ended;
    size_t n = s->n_ended;
    s->ended = NULL;
    s->n_ended = s->cap_ended = 0;
    pthread_mutex_unlock(&s->hold_mu);
    for (size_t si = 0; si < s->n_stores && n > 0; si++) {
        ended_ctx c;
        size_t k = 0;
        while (k < n && v[k].si != si)
            k++;
        if (k == n)
            continue;
        memset(&c, 0, sizeof(c));
        c.s = s;
        c.si = si;
        c.now = now;
        c.v = v;
        c.n = n;
        (void)loop_write_and_publish(s, si, ended_fn, &c, &c.o);
        free_out(&c.o);
    }
    free(v);
}

int
aps_scheduler_process(aps_scheduler *s, aps_time *next_wakeup)
{
    aps_time next = APS_TIME_NONE, gather = 0;
    int rc = 0;

    if (s == NULL)
        return APS_EINVAL;
    drain_fd(s->wake_fd);
    /* Expired, or cancelled by a clock change: arm it again in any case. */
    uint64_t v;
    if (read(s->timer_fd, &v, sizeof(v)) > 0 || errno == ECANCELED)
        s->timer_armed = APS_TIME_NONE;
    aps_time now = aps__scheduler_now(s);
    pthread_mutex_lock(&s->mu);
    int running = s->started && !s->stopping && s->state == APS_STATE_RUNNING;
    /* In a pass: runs finishing now are recorded by it or the next one (on
     * the real clock only: an injected one arms no timer). */
    s->loop_next = s->clock.now == real_now ? now : APS_TIME_NONE;
    s->in_pass = 1;
    s->passes++;
    s->completion_unwoken = 0;
    pthread_mutex_unlock(&s->mu);
    process_ended(s, now);
    if (!running) {
        process_completed(s);
        for (size_t si = 0; si < s->n_stores; si++)
            s->stores[si].pass_mono = 0; /* stands still: see process_store */
    }
    if (running) {
        /* Each store's finished runs go into its first write of the pass. */
        completions cp;
        done_ctx done;
        take_completed(s, &cp);
        memset(&done, 0, sizeof(done));
        done.s = s;
        done.now = now;
        loop_out_take(s, 0, &done.o);
        for (size_t si = 0; si < s->n_stores; si++) {
            if (done_select(s, si, &cp, &done) != 0)
                done.n = 0; /* out of memory: dropped, as process_completed does */
            int r = process_store(s, si, now, &done, &s->stores[si].deferred);
            done.runs = NULL;
            s->stores[si].failed = r != 0;
            if (r != 0)
                s->stores[si].pass_mono = 0; /* retried in a while */
            if (r != 0 && rc == 0)
                rc = r;
        }
        loop_out_give(s, 0, &done.o);
        finish_completed(s, &cp);
        for (size_t si = 0; si < s->n_stores; si++) {
            aps_time t = APS_TIME_NONE;
            /* A store whose write failed keeps its due jobs due: its next
             * pass is the retry below, not a spin on the past due time. */
            if (s->stores[si].failed)
                continue;
            if (aps__store_next_due(s->stores[si].st, &t) == 0 && t != APS_TIME_NONE) {
                aps_time lead = store_ahead(s, si, 0, NULL);
                aps_time g = lead / AHEAD_GATHER_DIV;
                if (g > AHEAD_GATHER_MAX_US)
                    g = AHEAD_GATHER_MAX_US;
                t -= lead - g;
                if (g > gather)
                    gather = g;
                /* Due now but left to their time (instances running): a
                 * completion wakes the loop, else their time does. */
                if (t <= now && s->stores[si].deferred != APS_TIME_NONE)
                    t = s->stores[si].deferred;
                if (next == APS_TIME_NONE || t < next)
                    next = t;
            }
        }
        if (rc != 0) {
            /* A store error: retry soon (APScheduler's jobstore_retry_interval). */
            aps_time retry = now + 10 * US_PER_SEC;
            if (next == APS_TIME_NONE || retry < next)
                next = retry;
        }
    }
    if (next != APS_TIME_NONE && next > now && next - now < s->spacing_us)
        next = now + s->spacing_us;
    pthread_mutex_lock(&s->mu);
    int unrecorded = s->completed != NULL;
    if (unrecorded) {
        /* Completions queued again after a failed write (or just in, and
         * then the wake-up fd brings the loop back sooner): retry soon. */
        aps_time retry = now + 10 * US_PER_SEC;
        if (next == APS_TIME_NONE || retry < next)
            next = retry;
    }
    /* Runs that finished during the pass without waking it: a pass within
     * the slack records them, else one at once. The slack covers a
     * gathering store's wait, or each finished run would cut it short. */
    s->completion_slack_us = COMPLETION_SLACK_US + gather;
    if (s->completion_unwoken && (next == APS_TIME_NONE || next - now > s->completion_slack_us))
        next = now;
    /* Jobs committed during the pass (wake_for), perhaps after it read. */
    if (s->pass_wake != APS_TIME_NONE && (next == APS_TIME_NONE || s->pass_wake < next))
        next = s->pass_wake > now ? s->pass_wake : now;
    s->pass_wake = APS_TIME_NONE;
    s->loop_next = s->clock.now == real_now ? next : APS_TIME_NONE;
    s->in_pass = 0;
    pthread_mutex_unlock(&s->mu);
    prune_requests(s, now);
    aps__events_dispatch_listeners(s, LISTENER_BATCH);
    arm_timer(s, next);
    if (next_wakeup)
        *next_wakeup = next;
    return rc;
}

static int
finalize(aps_scheduler *s, int wait);

static void *
loop_main(void *arg)
{
    aps_scheduler *s = arg;
    struct epoll_event evs[4];
    s->loop_woke = APS_TIME_NONE;
    /* Whenever loop_rt reads nonzero, start set this thread to it. */
    s->loop_rt_on = 1;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        if (s->loop_woke == APS_TIME_NONE)
            s->loop_woke = aps__scheduler_now(s);
        aps_time next = APS_TIME_NONE;
        aps_scheduler_process(s, &next);
        pthread_mutex_lock(&s->mu);
        stop = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        int prio = __atomic_load_n(&s->loop_rt, __ATOMIC_ACQUIRE);
        if (prio > 0)
            rt_pace(s, prio, next);
        int n = epoll_wait(s->epoll_fd, evs, 4, -1);
        (void)n;
    }
    return NULL;
}

int
aps_scheduler_start(aps_scheduler *s, aps_run_mode mode)
{
    if (s == NULL)
        return APS_EINVAL;
    pthread_mutex_lock(&s->mu);
    /* Shut down once, its executors are stopped for good: every run would
     * fail to start. A new scheduler takes over the stores. */
    if (s->started || s->stopping || s->shut) {
        pthread_mutex_unlock(&s->mu);
        return APS_ESTATE; /* APScheduler: SchedulerAlreadyRunningError */
    }
    s->started = 1;
    s->mode = mode;
    int paused = s->state == APS_STATE_PAUSED;
    s->hold_paused = paused; /* before a pause_resume can set it */
    s->state = paused ? APS_STATE_PAUSED : APS_STATE_RUNNING;
    pthread_mutex_unlock(&s->mu);

    int rc = recover_interrupted(s);
    for (size_t i = 0; rc == 0 && i < s->n_execs; i++)
        rc = sched_event(s, APS_EVENT_EXECUTOR_ADDED, s->execs[i].name, -1);
    for (size_t i = 0; rc == 0 && i < s->n_stores; i++)
        rc = sched_event(s, APS_EVENT_JOBSTORE_ADDED, s->stores[i].name, -1);
    if (rc == 0)
        rc = sched_event(s, APS_EVENT_SCHEDULER_STARTED, NULL, -1);
    if (rc != 0) {
        pthread_mutex_lock(&s->mu);
        s->started = 0;
        s->state = paused ? APS_STATE_PAUSED : APS_STATE_STOPPED;
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    int durable = 0;
    for (size_t i = 0; i < s->n_stores; i++)
        durable |= s->stores[i].durable;
    /* Without the hold thread (external loop, hold_start failing) due runs
     * are simply committed at their time. */
    if (mode != APS_RUN_EXTERNAL && durable && s->ahead_us > 0)
        (void)hold_start(s);
    switch (mode) {
    case APS_RUN_BLOCKING: {
        /* The caller's thread gets its own scheduling back on return. */
        struct sched_param sp;
        int policy, restore = s->loop_priority > 0 &&
                              pthread_getschedparam(pthread_self(), &policy, &sp) == 0;
        rt_loop_start(s);
        loop_main(s);
        if (restore)
            (void)pthread_setschedparam(pthread_self(), policy, &sp);
        __atomic_store_n(&s->loop_rt, 0, __ATOMIC_RELEASE);
        /* With the wait the shutdown asked for (a listener's or a job's). */
        pthread_mutex_lock(&s->mu);
        int wait = s->stop_wait;
        pthread_mutex_unlock(&s->mu);
        return finalize(s, wait);
    }
    case APS_RUN_BACKGROUND:
        if (loop_thread_create(s) != 0) {
            finalize(s, 0);
            return APS_ENOMEM;
        }
        /* Thread names: whose CPU it is in top -H, perf, /proc/PID/task. */
        pthread_setname_np(s->thread, "aps-loop");
        pthread_mutex_lock(&s->mu);
        s->have_thread = 1;
        pthread_mutex_unlock(&s->mu);
        return 0;
    case APS_RUN_EXTERNAL:
        aps__scheduler_wake(s);
        return 0;
    }
    return APS_EINVAL;
}

void (*aps__shutdown_withdraw_test)(aps_scheduler *s);
void (*aps__prepared_test)(aps_scheduler *s, int done);

/* Stops the executors and records what they finish. */
static int
finalize(aps_scheduler *s, int wait)
{
    pthread_mutex_lock(&s->mu);
    if (!s->started) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    pthread_mutex_unlock(&s->mu);
    /* Runs committed ahead whose time has not come do not start. */
    aps__run **left;
    size_t n_left;
    pthread_mutex_lock(&s->mu);
    s->gate_closed = 1;
    while (s->gate_n > 0)
        pthread_cond_wait(&s->gate_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    hold_stop(s, &left, &n_left);
    if (aps__shutdown_withdraw_test != NULL)
        aps__shutdown_withdraw_test(s);
    withdraw_held(s, left, n_left);
    gate_open(s);
    for (size_t i = 0; i < s->n_execs; i++)
        s->execs[i].ex->ops->shutdown(s->execs[i].ex, wait);
    process_completed(s);
    int rc = sched_event(s, APS_EVENT_SCHEDULER_SHUTDOWN, NULL, -1);
    aps__events_dispatch_listeners(s, 0);
    pthread_mutex_lock(&s->mu);
    s->started = 0;
    s->stopping = 0;
    pthread_cond_broadcast(&s->idle_cv); /* a destroy waiting for it */
    s->shut = 1;
    if (s->state == APS_STATE_RUNNING)
        s->state = APS_STATE_STOPPED;
    pthread_mutex_unlock(&s->mu);
    aps__events_wake_all(s);
    return rc;
}

int
aps_scheduler_shutdown(aps_scheduler *s, int wait)
{
    if (s == NULL)
        return APS_EINVAL;
    /* Its writes (the withdrawal, the last completions) would wait for the
     * thread they are asked from. */
    if (aps__store_on_writer())
        return APS_ESTATE;
    pthread_mutex_lock(&s->mu);
    if (!s->started || s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    s->stopping = 1;
    s->stop_wait = wait;
    int have_thread = s->have_thread;
    int in_loop = have_thread && pthread_equal(s->thread, pthread_self());
    aps_run_mode mode = s->mode;
    s->have_thread = 0;
    pthread_mutex_unlock(&s->mu);
    aps__scheduler_wake(s);
    if (mode == APS_RUN_BLOCKING) {
        /* The loop returns from start and finalizes on its own thread. */
        return 0;
    }
    if (have_thread) {
        if (in_loop)
            pthread_detach(s->thread);
        else
            pthread_join(s->thread, NULL);
    }
    return finalize(s, wait);
}

void
aps_scheduler_destroy(aps_scheduler *s)
{
    if (s == NULL)
        return;
    aps_scheduler_shutdown(s, 0);
    /* A shutdown under way on another thread (a job's, a blocking loop's
     * own) is waited for: it still uses the executors freed below. */
    pthread_mutex_lock(&s->mu);
    while (s->stopping)
        pthread_cond_wait(&s->idle_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < s->n_execs; i++) {
        if (s->execs[i].ex != NULL) {
            s->execs[i].ex->ops->shutdown(s->execs[i].ex, 0);
            s->execs[i].ex->ops->destroy(s->execs[i].ex);
        }
    }
    /* Gone: a queued run that a completion below starts is refused as
     * having no executor, instead of reaching freed memory. */
    for (size_t i = 0; i < s->n_execs; i++)
        s->execs[i].ex = NULL;
    /* Until no completion is left (a run handed back late), so that none
     * leaks. */
    while (process_completed(s) > 0)
        ;
    /* Closing a store completes the asynchronous adds queued on it, whose
     * events may still go to the log's store: that one closes last. */
    for (size_t i = 0; i < s->n_stores; i++)
        if (i != s->log_store)
            aps__store_close(s->stores[i].st);
    if (s->log_store < s->n_stores) /* not yet chosen when create failed */
        aps__store_close(s->stores[s->log_store].st);
    free(s->stores);
    free(s->execs);
    for (size_t i = 0; i < s->n_functions; i++)
        free(s->functions[i].name);
    free(s->functions);
    free(s->listeners);
    trig_cache_clear(s);
    aps_subscriber_close(s->listener_cursor);
    s->listener_cursor = NULL;
    aps__events_dispose(s);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    if (s->timer_fd >= 0)
        close(s->timer_fd);
    if (s->epoll_fd >= 0)
        close(s->epoll_fd);
    pthread_cond_destroy(&s->sub_cv);
    pthread_cond_destroy(&s->idle_cv);
    pthread_cond_destroy(&s->gate_cv);
    pthread_cond_destroy(&s->hold_cv);
    pthread_mutex_destroy(&s->hold_mu);
    free(s->held);
    for (size_t i = 0; i < s->n_tombs; i++)
        aps__run_free(s->tombs[i].parked); /* (each change settles its own: none) */
    free(s->tombs);
    free(s->ended);
    free(s->due_ids);
    loop_state_free(s);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->pause_mu);
    pthread_rwlock_destroy(&s->fn_lock);
    free(s);
}

/* ---- request id retention ------------------------------------------------------ */

typedef struct prune_ctx {
    aps_scheduler *s;
    aps_time now;
    char (*keys)[APS_STORE_META_KEY_MAX + 1];
    size_t n, cap;
} prune_ctx;

static int
prune_visit(void *arg, const char *key, const void *data, size_t len)
{
    prune_ctx *c = arg;
    if (len < 8)
        return 0;
    aps_time at = 0;
    uint64_t fp = 0;
    const char *id = NULL;
    size_t idlen = 0;
    if (request_parse(data, len, &at, &fp, &id, &idlen, NULL) != 0)
        at = 0; /* unreadable: prune it */
    if (c->now - at <= c->s->request_retention_us || c->n == c->cap)
        return 0;
    snprintf(c->keys[c->n++], APS_STORE_META_KEY_MAX + 1, "%s", key);
    return 0;
}

static int
prune_fn(aps_txn *t, void *arg)
{
    prune_ctx *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        int rc = aps__txn_meta_del(t, c->keys[i]);
        if (rc != 0 && rc != APS_ENOENT)
            return rc;
    }
    return 0;
}

/* Drops request ids older than the retention window, once a minute. */
static void
prune_requests(aps_scheduler *s, aps_time now)
{
    if (now - s->last_request_prune < 60 * US_PER_SEC)
        return;
    s->last_request_prune = now;
    prune_ctx c = {s, now, NULL, 0, 4096};
    c.keys = malloc(c.cap * sizeof(*c.keys));
    if (c.keys == NULL)
        return;
    for (size_t si = 0; si < s->n_stores; si++) {
        c.n = 0;
        if (aps__store_meta_scan(s->stores[si].st, REQ_PREFIX, prune_visit, &c) >= 0 && c.n > 0)
            aps__store_write(s->stores[si].st, prune_fn, &c);
    }
    free(c.keys);
}

/* ---- figures ------------------------------------------------------------------ */

int
aps_scheduler_store_info(aps_scheduler *s, size_t i, aps_store_info *out)
{
    size_t jobs = 0, scheduled = 0;
    if (s == NULL || out == NULL)
        return APS_EINVAL;
    if (i >= s->n_stores)
        return APS_ENOENT;
    memset(out, 0, sizeof(*out));
    out->name = s->stores[i].name;
    out->type = s->stores[i].type;
    int rc = aps__store_counts(s->stores[i].st, &jobs, &scheduled);
    if (rc == 0)
        rc = aps__store_next_due(s->stores[i].st, &out->next_run_time);
    if (rc != 0)
        return rc;
    /* Runs committed ahead are the next run times of their jobs until
     * their time (job_as_read): a one-shot job's is its only one, and the
     * queue's earliest may come before the due index's. */
    aps_time now = aps__scheduler_now(s);
    pthread_mutex_lock(&s->hold_mu);
    size_t ends = s->stores[i].held_ends;
    if (s->n_held > 0 && s->held[0]->n_run_times > 0 &&
        strcmp(s->held[0]->jobstore, s->stores[i].name) == 0) {
        aps_time first = s->held[0]->run_times[0];
        if (first > now && (out->next_run_time == APS_TIME_NONE || first < out->next_run_time))
            out->next_run_time = first;
    }
    pthread_mutex_unlock(&s->hold_mu);
    out->jobs = jobs;
    scheduled += ends;
    out->unscheduled = jobs > scheduled ? jobs - scheduled : 0;
    out->commit_ahead_us = __atomic_load_n(&s->stores[i].lead_us, __ATOMIC_RELAXED);
    out->low_space = aps__store_space_low(s->stores[i].st);
    return 0;
}

int
aps_scheduler_executor_info(aps_scheduler *s, size_t i, aps_executor_info *out)
{
    if (s == NULL || out == NULL)
        return APS_EINVAL;
    if (i >= s->n_execs)
        return APS_ENOENT;
    aps__executor *ex = s->execs[i].ex;
    memset(out, 0, sizeof(*out));
    out->name = s->execs[i].name;
    out->type = ex->type;
    out->max_workers = ex->max_workers;
    if (ex->ops->stats != NULL)
        ex->ops->stats(ex, out);
    return 0;
}
