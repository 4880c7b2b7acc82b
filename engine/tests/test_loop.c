/*
 * The mechanisms that make the scheduler loop cheap per run, each checked
 * against the plain behaviour it replaces:
 * - the memory store's hash + heap index (due order, ties, rollback)
 *   against a sorted model, under random writes and failing callbacks;
 * - decoded records sharing one block with their fields (a decoded record
 *   changed through aps__jobrec_apply, encoded, decoded again);
 * - run ids drawn from a per-thread block of random bytes: a forked child
 *   never repeats its parent's;
 * - the thread pool waking only sleeping workers and taking runs in
 *   batches: every queued run runs, on time, with a gate holding them;
 * - the loop's reused buffers: a change made between two runs by another
 *   writer is what the next run sees;
 * - finished runs that do not wake the loop when it looks again soon (real
 *   clock): none is left unrecorded until a far deadline;
 * - adds that wake the loop only for a job it would otherwise take up late
 *   (real clock): each case of the decision, driven by hand; a sooner job
 *   fires on time; adds from four threads racing the passes all fire on
 *   time.
 */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "job.h"
#include "scheduler.h"
#include "store.h"
#include "testutil.h"

#define SEC INT64_C(1000000)
#define T0 TU_T0

/* ---- the memory store's due index against a model ------------------------ */

#define MODEL_JOBS 300

typedef struct model {
    aps_time next[MODEL_JOBS]; /* APS_TIME_NONE: not due; INT64_MAX: absent */
} model;

static void
job_id(int i, char out[16])
{
    /* Ids of different lengths, so ties also compare by length. */
    snprintf(out, 16, i % 3 ? "j%d" : "job-%04d", i);
}

typedef struct due_list {
    char ids[MODEL_JOBS][16];
    aps_time t[MODEL_JOBS];
    size_t n;
} due_list;

static int
due_visit(void *arg, const char *id, const void *data, size_t len, aps_time next_run)
{
    due_list *l = arg;
    (void)data;
    (void)len;
    assert_true(l->n < MODEL_JOBS);
    snprintf(l->ids[l->n], 16, "%s", id);
    l->t[l->n++] = next_run;
    return 0;
}

static int
due_cmp(const void *a, const void *b, const char *ia, const char *ib)
{
    aps_time x = *(const aps_time *)a, y = *(const aps_time *)b;
    if (x != y)
        return x < y ? -1 : 1;
    size_t la = strlen(ia), lb = strlen(ib);
    int c = memcmp(ia, ib, la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

/* Checks the store's due scan (all, and limited), next due and count
 * against the model. */
static void
check_due(aps_store *st, const model *m, aps_time before, size_t limit)
{
    due_list got = {0}, want = {0};
    for (int i = 0; i < MODEL_JOBS; i++) {
        if (m->next[i] == INT64_MAX || m->next[i] == APS_TIME_NONE || m->next[i] > before)
            continue;
        job_id(i, want.ids[want.n]);
        want.t[want.n++] = m->next[i];
    }
    /* Insertion sort by (time, id bytes): the LMDB `due` key order. */
    for (size_t i = 1; i < want.n; i++) {
        for (size_t k = i; k > 0 && due_cmp(&want.t[k], &want.t[k - 1], want.ids[k],
                                             want.ids[k - 1]) < 0;
             k--) {
            char id[16];
            aps_time t = want.t[k];
            memcpy(id, want.ids[k], 16);
            memcpy(want.ids[k], want.ids[k - 1], 16);
            want.t[k] = want.t[k - 1];
            memcpy(want.ids[k - 1], id, 16);
            want.t[k - 1] = t;
        }
    }
    assert_int_equal(aps__store_due(st, before, limit, due_visit, &got), 0);
    size_t n = limit && want.n > limit ? limit : want.n;
    assert_int_equal(got.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(got.ids[i], want.ids[i]);
        assert_true(got.t[i] == want.t[i]);
    }
    aps_time first = APS_TIME_NONE, t;
    size_t jobs = 0, scheduled = 0, sched_want = 0, jobs_want = 0;
    for (int i = 0; i < MODEL_JOBS; i++) {
        if (m->next[i] == INT64_MAX)
            continue;
        jobs_want++;
        if (m->next[i] == APS_TIME_NONE)
            continue;
        sched_want++;
        if (first == APS_TIME_NONE || m->next[i] < first)
            first = m->next[i];
    }
    assert_int_equal(aps__store_next_due(st, &t), 0);
    assert_true(t == first);
    assert_int_equal(aps__store_counts(st, &jobs, &scheduled), 0);
    assert_int_equal(jobs, jobs_want);
    assert_int_equal(scheduled, sched_want);
}

typedef struct rand_write {
    model *m;      /* applied to a copy; the caller keeps it if committed */
    uint64_t *rng;
    int ops;
    int fail;      /* return an error at the end: everything rolls back */
} rand_write;

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int
rand_write_fn(aps_txn *t, void *arg)
{
    rand_write *w = arg;
    for (int k = 0; k < w->ops; k++) {
        int i = (int)(rnd(w->rng) % MODEL_JOBS);
        char id[16], data[64];
        job_id(i, id);
        uint64_t r = rnd(w->rng) % 10;
        if (r < 2) {
            int rc = aps__txn_job_del(t, id);
            assert_int_equal(rc, w->m->next[i] == INT64_MAX ? APS_ENOENT : 0);
            w->m->next[i] = INT64_MAX;
            continue;
        }
        /* Few distinct times: many ties. */
        aps_time next = r < 3 ? APS_TIME_NONE : T0 + (aps_time)(rnd(w->rng) % 20) * SEC;
        size_t len = (size_t)snprintf(data, sizeof(data), "%s-%llu", id,
                                      (unsigned long long)rnd(w->rng));
        assert_int_equal(aps__txn_job_put(t, id, data, len, next), 0);
        w->m->next[i] = next;
    }
    return w->fail ? APS_EIO : 0;
}

static void
test_mem_due_index_model(void **state)
{
    (void)state;
    aps_store *st = NULL;
    aps_error err;
    model m, scratch;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < MODEL_JOBS; i++)
        m.next[i] = INT64_MAX;
    assert_int_equal(aps__store_open_memory(NULL, &st, &err), 0);
    for (int round = 0; round < 400; round++) {
        scratch = m;
        rand_write w = {&scratch, &rng, 1 + (int)(rnd(&rng) % 40), rnd(&rng) % 4 == 0};
        int rc = aps__store_write(st, rand_write_fn, &w);
        if (w.fail) {
            assert_int_equal(rc, APS_EIO); /* rolled back: the model stays */
        } else {
            assert_int_equal(rc, 0);
            m = scratch;
        }
        aps_time before = T0 + (aps_time)(rnd(&rng) % 22) * SEC;
        check_due(st, &m, before, 0);
        check_due(st, &m, before, 1 + rnd(&rng) % 8);
        check_due(st, &m, INT64_MAX, 0);
    }
    aps__store_close(st);
}

/* ---- decoded records in one block ---------------------------------------- */

static void
test_decoded_record_changes(void **state)
{
    (void)state;
    aps_trigger_spec cron, kids[2], any;
    memset(&cron, 0, sizeof(cron));
    cron.kind = APS_TRIGGER_CRON;
    cron.u.cron.second = "*/5";
    cron.u.cron.start_date = APS_TIME_NONE;
    cron.u.cron.end_date = APS_TIME_NONE;
    kids[0] = cron;
    memset(&kids[1], 0, sizeof(kids[1]));
    kids[1].kind = APS_TRIGGER_INTERVAL;
    kids[1].u.interval.seconds = 7;
    kids[1].u.interval.start_date = T0;
    kids[1].u.interval.end_date = APS_TIME_NONE;
    memset(&any, 0, sizeof(any));
    any.kind = APS_TRIGGER_ANY_OF;
    any.u.combo.triggers = kids;
    any.u.combo.count = 2;
    char *argv[] = {"/bin/echo", "a long enough argument to spill out of the block", NULL};
    aps_label labels[] = {{"team", "loop"}, {"a-longer-label-key", "and.a.longer-value"}};
    aps_job_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.id = "decoded-record";
    spec.name = "a name long enough that the strings do not all fit the record's own block: "
                "the rest are allocated on their own and freed so";
    spec.trigger = &any;
    spec.target.kind = APS_TARGET_COMMAND;
    spec.target.u.command.argv = argv;
    spec.target.u.command.argc = 2;
    spec.labels = labels;
    spec.n_labels = 2;
    spec.coalesce = -1;
    spec.next_run_time = APS_TIME_NONE;

    aps__jobrec *r = NULL, *d = NULL, *d2 = NULL;
    aps_error err;
    void *buf = NULL;
    size_t len = 0;
    if (aps__jobrec_from_spec(&spec, "UTC", T0, &r, &err) != 0)
        fail_msg("from_spec: %s", err.msg);
    aps__jobrec_add_lateness(r, 1500);
    assert_int_equal(aps__jobrec_encode(r, &buf, &len), 0);
    assert_int_equal(aps__jobrec_decode(buf, len, &d), 0);
    free(buf);
    assert_non_null(d->arena);
    assert_string_equal(d->job.name, spec.name);
    /* Fields replaced on a decoded record: the old ones (in its block or
     * not) are freed once (ASan checks), the new ones are its own. */
    aps_job_spec change;
    memset(&change, 0, sizeof(change));
    change.name = "renamed";
    change.trigger = &cron;
    char *argv2[] = {"/bin/true", NULL};
    change.target.kind = APS_TARGET_COMMAND;
    change.target.u.command.argv = argv2;
    change.target.u.command.argc = 1;
    change.labels = labels;
    change.n_labels = 1;
    if (aps__jobrec_apply(d, &change,
                          APS_MODIFY_NAME | APS_MODIFY_TRIGGER | APS_MODIFY_TARGET |
                              APS_MODIFY_LABELS,
                          "UTC", T0 + SEC, &err) != 0)
        fail_msg("apply: %s", err.msg);
    aps__jobrec_add_lateness(d, 2500);
    assert_int_equal(aps__jobrec_encode(d, &buf, &len), 0);
    assert_int_equal(aps__jobrec_decode(buf, len, &d2), 0);
    free(buf);
    assert_string_equal(d2->job.name, "renamed");
    assert_int_equal(d2->job.trigger->kind, APS_TRIGGER_CRON);
    assert_string_equal(d2->job.target.u.command.argv[0], "/bin/true");
    assert_int_equal(d2->job.n_labels, 1);
    assert_int_equal(d2->n_lateness, 2);
    /* A copy of a decoded record owns everything. */
    aps__jobrec *c = NULL;
    assert_int_equal(aps__jobrec_copy(d2, &c), 0);
    assert_null(c->arena);
    aps__jobrec_free(d2);
    assert_string_equal(c->job.name, "renamed");
    aps__jobrec_free(c);
    aps__jobrec_free(d);
    aps__jobrec_free(r);
}

/* ---- run ids after fork --------------------------------------------------- */

static void
test_ids_after_fork(void **state)
{
    (void)state;
    char first[33], mine[8][33], theirs[8][33];
    int fds[2];
    /* A block is drawn here; the child must not hand out what is left. */
    assert_int_equal(aps__id_generate(first), 0);
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int i = 0; i < 8; i++) {
            if (aps__id_generate(theirs[i]) != 0)
                _exit(2);
        }
        ssize_t w = write(fds[1], theirs, sizeof(theirs));
        _exit(w == (ssize_t)sizeof(theirs) ? 0 : 3);
    }
    close(fds[1]);
    for (int i = 0; i < 8; i++)
        assert_int_equal(aps__id_generate(mine[i]), 0);
    size_t got = 0;
    while (got < sizeof(theirs)) {
        ssize_t r = read(fds[0], (char *)theirs + got, sizeof(theirs) - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(strlen(mine[i]), 32);
        assert_string_not_equal(mine[i], first);
        for (int k = 0; k < 8; k++)
            assert_string_not_equal(mine[i], theirs[k]);
    }
}

/* ---- the thread pool and the loop (on tu_clock) ---------------------------- */

#define MAX_JOBS 2000

static pthread_mutex_t calls_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t calls_cv = PTHREAD_COND_INITIALIZER;
static int gate_closed, running_now;
static size_t n_calls;
static unsigned per_job[MAX_JOBS];
static char last_arg[64];

static int
count_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
         size_t error_len)
{
    (void)scheduled;
    (void)userdata;
    (void)error;
    (void)error_len;
    pthread_mutex_lock(&calls_mu);
    running_now++;
    pthread_cond_broadcast(&calls_cv);
    while (gate_closed)
        pthread_cond_wait(&calls_cv, &calls_mu);
    running_now--;
    n_calls++;
    int i = atoi(job_id + 1);
    if (i >= 0 && i < MAX_JOBS)
        per_job[i]++;
    snprintf(last_arg, sizeof(last_arg), "%s", arg ? arg : "");
    pthread_mutex_unlock(&calls_mu);
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

/* A scheduler on tu_clock in external-loop mode with one store (an LMDB
 * one without fsync) and a thread pool of `workers` queueing up to
 * `max_queue` runs; "count" registered. */
static aps_scheduler *
open_with(const aps_store_def *store, uint32_t workers, uint32_t max_queue)
{
    aps_executor_def exec = {.name = "default", .type = "threadpool", .max_workers = workers,
                             .max_queue = max_queue};
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = store;
    cfg.n_stores = 1;
    cfg.executors = &exec;
    cfg.n_executors = 1;
    cfg.clock = &tu_clock;
    cfg.no_sync = strcmp(store->type, "lmdb") == 0;
    cfg.default_misfire = APS_MISFIRE_UNLIMITED;
    int rc = aps_scheduler_create(&cfg, &s, &err);
    if (rc != 0)
        fail_msg("create: %s", err.msg);
    assert_int_equal(aps_scheduler_register_function(s, "count", count_fn, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);
    return s;
}

static aps_scheduler *
open_pool(uint32_t workers)
{
    aps_store_def store = {"default", "memory", NULL};
    return open_with(&store, workers, MAX_JOBS);
}

static void
add_interval(aps_scheduler *s, int i, const char *arg)
{
    char id[16];
    aps_trigger_spec t;
    aps_job_spec j;
    snprintf(id, sizeof(id), "j%d", i);
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.seconds = 1;
    t.u.interval.start_date = T0 + SEC;
    t.u.interval.end_date = APS_TIME_NONE;
    j = tu_function_job(id, &t, "count", arg);
    tu_job_add(s, &j);
}

static size_t
calls(void)
{
    pthread_mutex_lock(&calls_mu);
    size_t n = n_calls;
    pthread_mutex_unlock(&calls_mu);
    return n;
}

/* Processes until `want` calls were made and every run was recorded. */
static void
settle(aps_scheduler *s, size_t want)
{
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
        aps_executor_info info;
        assert_int_equal(aps_scheduler_executor_info(s, 0, &info), 0);
        aps_job *j = NULL;
        if (calls() >= want && info.running == 0 && info.pending == 0) {
            /* Recorded: a job's running instances are back to 0. */
            assert_int_equal(aps_job_get(s, "j0", &j), 0);
            uint32_t running = j->running_instances;
            aps_job_free(j);
            if (running == 0)
                return;
        }
        usleep(1000);
    }
    fail_msg("timed out: %zu of %zu calls", calls(), want);
}

static void
reset_calls(void)
{
    pthread_mutex_lock(&calls_mu);
    n_calls = 0;
    memset(per_job, 0, sizeof(per_job));
    last_arg[0] = '\0';
    pthread_mutex_unlock(&calls_mu);
    gate(0);
}

/* A burst far larger than the pool: every run runs once per second of the
 * clock, queued runs are taken by the awake workers. */
static void
test_pool_burst(void **state)
{
    (void)state;
    int jobs = getenv("APSD_SANITIZED") ? 300 : MAX_JOBS;
    reset_calls();
    tu_clock_set(T0);
    aps_scheduler *s = open_pool(3);
    for (int i = 0; i < jobs; i++)
        add_interval(s, i, NULL);
    for (int round = 1; round <= 3; round++) {
        tu_clock_set(T0 + round * SEC);
        settle(s, (size_t)jobs * (size_t)round);
        for (int i = 0; i < jobs; i++)
            assert_int_equal(per_job[i], round);
    }
    aps_scheduler_destroy(s);
}

/* Runs held by a gate: the pool runs `workers` at once, queues the rest,
 * and runs every queued one once the gate opens, with no new submission
 * to wake a worker. */
static void
test_pool_queue_drains(void **state)
{
    (void)state;
    reset_calls();
    tu_clock_set(T0);
    aps_scheduler *s = open_pool(2);
    for (int i = 0; i < 10; i++)
        add_interval(s, i, NULL);
    gate(1);
    tu_clock_set(T0 + SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    aps_executor_info info;
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&calls_mu);
        int r = running_now;
        pthread_mutex_unlock(&calls_mu);
        if (r == 2)
            break;
        usleep(1000);
    }
    assert_int_equal(aps_scheduler_executor_info(s, 0, &info), 0);
    assert_int_equal(info.running, 2);
    assert_int_equal(info.pending, 8);
    gate(0);
    settle(s, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(per_job[i], 1);
    /* Shutdown with wait runs what is queued. */
    gate(1);
    tu_clock_set(T0 + 2 * SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    gate(0);
    assert_int_equal(aps_scheduler_shutdown(s, 1), 0);
    assert_int_equal(calls(), 20);
    aps_scheduler_destroy(s);
}

/* A burst of runs that block, as many as sleeping workers: the workers
 * wake one another in a chain (each wakes the next while runs are queued),
 * so all of them are running at once, none left queued. A second burst
 * while they block waits in the queue, and runs once they are free. */
static void
test_pool_chain_wakes_every_worker(void **state)
{
    (void)state;
    enum { WORKERS = 8 };
    reset_calls();
    tu_clock_set(T0);
    aps_scheduler *s = open_pool(WORKERS);
    for (int i = 0; i < 2 * WORKERS; i++)
        add_interval(s, i, NULL);
    usleep(20000); /* every worker asleep */
    gate(1);
    tu_clock_set(T0 + SEC);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    int r = 0;
    for (int i = 0; i < 5000 && r < WORKERS; i++) {
        pthread_mutex_lock(&calls_mu);
        r = running_now;
        pthread_mutex_unlock(&calls_mu);
        if (r < WORKERS)
            usleep(1000);
    }
    assert_int_equal(r, WORKERS);
    aps_executor_info info;
    assert_int_equal(aps_scheduler_executor_info(s, 0, &info), 0);
    assert_int_equal(info.running, WORKERS);
    assert_int_equal(info.pending, WORKERS);
    gate(0);
    settle(s, 2 * WORKERS);
    for (int i = 0; i < 2 * WORKERS; i++)
        assert_int_equal(per_job[i], 1);
    aps_scheduler_destroy(s);
}

/* Another writer's change between two runs of a job is what the next run
 * sees (the loop keeps buffers from run to run, never records). */
static void
test_change_between_runs_is_seen(void **state)
{
    (void)state;
    reset_calls();
    tu_clock_set(T0);
    aps_scheduler *s = open_pool(2);
    add_interval(s, 0, "before");
    tu_clock_set(T0 + SEC);
    settle(s, 1);
    assert_string_equal(last_arg, "before");
    aps_job_spec change;
    memset(&change, 0, sizeof(change));
    change.target.kind = APS_TARGET_FUNCTION;
    change.target.u.function.name = "count";
    change.target.u.function.arg = "after";
    aps_error err;
    if (aps_job_modify(s, "j0", &change, APS_MODIFY_TARGET, NULL, NULL, &err) != 0)
        fail_msg("modify: %s", err.msg);
    tu_clock_set(T0 + 2 * SEC);
    settle(s, 2);
    assert_string_equal(last_arg, "after");
    /* And the statistics the loop keeps carried over the change. */
    aps_job *j = NULL;
    assert_int_equal(aps_job_get(s, "j0", &j), 0);
    assert_int_equal(j->stats.runs, 2);
    assert_int_equal(j->stats.lateness_samples, 2);
    aps_job_free(j);
    aps_scheduler_destroy(s);
}

/* ---- a backlog in a durable store ------------------------------------------ */

static uint64_t
store_commits(aps_scheduler *s)
{
    aps_store_stats st;
    assert_int_equal(aps__store_stats(s->stores[0].st, &st), 0);
    return st.commits;
}

static int
count_key(void *arg, const char *key, const void *data, size_t len)
{
    (void)key;
    (void)data;
    (void)len;
    (*(size_t *)arg)++;
    return 0;
}

/* Runs the loop until `want` calls were made and none is left in the
 * store's durable run index. */
static void
wait_recorded(aps_scheduler *s, size_t want)
{
    size_t open_runs = 0;
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
        open_runs = 0;
        assert_int_equal(aps__store_meta_scan(s->stores[0].st, "run/", count_key, &open_runs), 0);
        if (calls() == want && open_runs == 0)
            return;
        usleep(1000);
    }
    fail_msg("timed out: %zu of %zu calls, %zu runs not recorded", calls(), want, open_runs);
}

/* 8,000 runs due at once in an LMDB store go through in batches that
 * double while they come full (512, 1024, 2048, 4096, then the 320 left):
 * 5 commits, where batches of 512 took 16; every run is started and
 * recorded, and a pass with a few due jobs afterwards takes them as well. */
static void
test_backlog_batches_grow(void **state)
{
    (void)state;
    enum { N = 8000 };
    aps_store_def store = {"default", "lmdb", tu_tmpdir("loop_backlog")};
    tu_clock_set(T0);
    reset_calls();
    aps_scheduler *s = open_with(&store, 4, 2 * N);
    aps_trigger_spec at = tu_date(T0 + SEC);
    for (int i = 0; i < N + 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "b%05d", i);
        if (i == N)
            at.u.date.run_date = T0 + 3 * SEC; /* three for the later pass */
        aps_job_spec j = tu_function_job(id, &at, "count", NULL);
        tu_job_add(s, &j);
    }
    uint64_t c0 = store_commits(s);
    tu_clock_set(T0 + 2 * SEC);
    aps_time next = APS_TIME_NONE;
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    uint64_t commits = store_commits(s) - c0;
    print_message("%d due runs in %llu commits\n", N, (unsigned long long)commits);
    assert_int_equal(commits, 5);
    assert_true(next == T0 + 3 * SEC);
    /* Every run started, and recorded as finished (its run index entry
     * gone; each date job was removed when its run was submitted). */
    wait_recorded(s, N);
    aps_store_info info;
    assert_int_equal(aps_scheduler_store_info(s, 0, &info), 0);
    assert_int_equal(info.jobs, 3);
    tu_clock_set(T0 + 4 * SEC);
    wait_recorded(s, N + 3);
    assert_int_equal(aps_scheduler_store_info(s, 0, &info), 0);
    assert_int_equal(info.jobs, 0);
    aps_scheduler_destroy(s);
}

/* ---- finished runs on the real clock --------------------------------------- */

/* Recorded runs of jobs j0..j(n-1) (their statistics). */
static uint64_t
recorded_runs(aps_scheduler *s, int n)
{
    uint64_t runs = 0;
    for (int i = 0; i < n; i++) {
        char id[16];
        aps_job *j = NULL;
        snprintf(id, sizeof(id), "j%d", i);
        assert_int_equal(aps_job_get(s, id, &j), 0);
        runs += j->stats.runs;
        aps_job_free(j);
    }
    return runs;
}

/* Jobs that fire once soon, then an hour later (the loop's deadline once
 * they ran): every run is recorded soon after, not at the far deadline,
 * whether it finished during a pass or not. No listener, no call that
 * writes: nothing else wakes the loop. */
static void
test_completions_recorded_real_clock(void **state)
{
    (void)state;
    aps_store_def store = {"default", "memory", NULL};
    aps_executor_def exec = {.name = "default", .type = "threadpool", .max_workers = 4,
                             .max_queue = 10000};
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    const int n = 60;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.executors = &exec;
    cfg.n_executors = 1;
    cfg.default_misfire = APS_MISFIRE_UNLIMITED;
    if (aps_scheduler_create(&cfg, &s, &err) != 0)
        fail_msg("create: %s", err.msg);
    reset_calls();
    assert_int_equal(aps_scheduler_register_function(s, "count", count_fn, NULL), 0);
    aps_time now = aps_time_now();
    for (int i = 0; i < n; i++) {
        char id[16];
        aps_trigger_spec t;
        snprintf(id, sizeof(id), "j%d", i);
        memset(&t, 0, sizeof(t));
        t.kind = APS_TRIGGER_INTERVAL;
        t.u.interval.seconds = 3600;
        /* Spread over 0.12 s, some at the same time. */
        t.u.interval.start_date = now + 30000 + (aps_time)(i / 2) * 4000;
        t.u.interval.end_date = APS_TIME_NONE;
        aps_job_spec j = tu_function_job(id, &t, "count", NULL);
        tu_job_add(s, &j);
    }
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    uint64_t recorded = 0;
    for (int i = 0; i < 3000 && recorded < (uint64_t)n; i++) {
        usleep(1000);
        recorded = recorded_runs(s, n);
    }
    assert_int_equal(calls(), n);
    assert_int_equal(recorded, n);
    aps_scheduler_destroy(s);
}

/* ---- adds on the real clock ------------------------------------------------ */

/* Passes the loop made; *busy: it is in one (may be NULL). */
static uint64_t
passes_busy(aps_scheduler *s, int *busy)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->passes;
    if (busy != NULL)
        *busy = s->in_pass;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static uint64_t
passes(aps_scheduler *s)
{
    return passes_busy(s, NULL);
}

/* Fire times of jobs "jN" (stamp_fn), 0 = not fired. */
static _Atomic aps_time fired_at[MAX_JOBS];

static int
stamp_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
         size_t error_len)
{
    (void)arg;
    (void)scheduled;
    (void)userdata;
    (void)error;
    (void)error_len;
    int i = atoi(job_id + 1);
    if (i >= 0 && i < MAX_JOBS)
        atomic_store(&fired_at[i], aps_time_now());
    return 0;
}

/* A scheduler on the real clock with an LMDB store (no fsync) in a new
 * directory named after `name`, a thread pool of `workers` queueing up to
 * `max_queue` runs, "count" and "stamp" registered, started in `mode`. */
static aps_scheduler *
open_real_clock(const char *name, uint32_t workers, uint32_t max_queue, aps_run_mode mode)
{
    aps_store_def store = {"default", "lmdb", tu_tmpdir(name)};
    aps_executor_def exec = {
        .name = "default", .type = "threadpool", .max_workers = workers, .max_queue = max_queue};
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.executors = &exec;
    cfg.n_executors = 1;
    cfg.no_sync = 1;
    cfg.default_misfire = APS_MISFIRE_UNLIMITED;
    if (aps_scheduler_create(&cfg, &s, &err) != 0)
        fail_msg("create: %s", err.msg);
    assert_int_equal(aps_scheduler_register_function(s, "count", count_fn, NULL), 0);
    assert_int_equal(aps_scheduler_register_function(s, "stamp", stamp_fn, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, mode), 0);
    return s;
}

/* The loop's pass count once it is out of its pass and the count stays
 * put (valgrind is slow). */
static uint64_t
settled_passes(aps_scheduler *s)
{
    int busy = 1;
    uint64_t p0 = passes(s);
    for (int i = 0; i < 50; i++) {
        usleep(100 * 1000);
        uint64_t p = passes_busy(s, &busy);
        if (p == p0 && !busy && i > 0)
            break;
        p0 = p;
    }
    assert_false(busy);
    return p0;
}

/* The first call (count_fn) comes at `due`, give or take a slow machine
 * (valgrind), not in an hour; the loop made a pass since `p1`. */
static void
assert_fires_on_time(aps_scheduler *s, aps_time due, uint64_t p1)
{
    aps_time fired = APS_TIME_NONE;
    for (int i = 0; i < 5000 && fired == APS_TIME_NONE; i++) {
        if (calls() == 1)
            fired = aps_time_now();
        else
            usleep(1000);
    }
    assert_true(fired != APS_TIME_NONE);
    print_message("fired %lld us after its time\n", (long long)(fired - due));
    assert_true(fired >= due && fired - due < 3 * SEC);
    assert_true(passes(s) > p1);
}

/* Adds wake the loop only for a job it would otherwise take up late (an
 * LMDB store, commit-ahead on): 200 jobs due an hour on, and a paused one,
 * added while the loop waits for the first of them, make no pass; a job
 * due 0.2 s on, added then, fires on time (without the wake-up, in an
 * hour). */
static void
test_adds_wake_only_when_sooner(void **state)
{
    (void)state;
    char id[16];
    reset_calls();
    aps_scheduler *s = open_real_clock("loop_add_wake", 2, 100, APS_RUN_BACKGROUND);
    aps_time hour = aps_time_now() + 3600 * SEC;
    aps_trigger_spec at = tu_date(hour);
    aps_job_spec j = tu_function_job("j0", &at, "count", NULL);
    tu_job_add(s, &j); /* the loop had nothing to wait for: it wakes */
    uint64_t p0 = settled_passes(s);
    for (int i = 1; i <= 200; i++) {
        snprintf(id, sizeof(id), "j%d", i);
        at = tu_date(hour + i * SEC);
        j = tu_function_job(id, &at, "count", NULL);
        tu_job_add(s, &j);
    }
    at = tu_date(aps_time_now() + 60 * SEC);
    j = tu_function_job("j201", &at, "count", NULL);
    j.paused = 1;
    tu_job_add(s, &j);
    usleep(50 * 1000);
    uint64_t p1 = passes(s);
    print_message("passes for 201 later adds: %llu\n", (unsigned long long)(p1 - p0));
    assert_int_equal(p1 - p0, 0);
    aps_time due = aps_time_now() + 200000;
    at = tu_date(due);
    j = tu_function_job("j202", &at, "count", NULL);
    tu_job_add(s, &j);
    assert_fires_on_time(s, due, p1);
    aps_scheduler_destroy(s);
}

/* Changes to jobs wake the loop only for a next run time it would
 * otherwise take up late, as adds do: 50 jobs due an hour on modified,
 * rescheduled later, paused, resumed and removed make no pass; one
 * rescheduled to 0.2 s on fires on time. */
static void
test_changes_wake_only_when_sooner(void **state)
{
    (void)state;
    char id[16];
    aps_error err;
    reset_calls();
    aps_scheduler *s = open_real_clock("loop_change_wake", 2, 100, APS_RUN_BACKGROUND);
    aps_time hour = aps_time_now() + 3600 * SEC;
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "j%d", i);
        aps_trigger_spec at = tu_date(hour + i * SEC);
        aps_job_spec j = tu_function_job(id, &at, "count", NULL);
        tu_job_add(s, &j);
    }
    uint64_t p0 = settled_passes(s);
    aps_job_spec named;
    memset(&named, 0, sizeof(named));
    named.name = "renamed";
    aps_trigger_spec later = tu_date(hour + 7200 * SEC);
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "j%d", i);
        switch (i % 5) {
        case 0:
            assert_int_equal(aps_job_modify(s, id, &named, APS_MODIFY_NAME, NULL, NULL, &err), 0);
            break;
        case 1:
            assert_int_equal(aps_job_reschedule(s, id, &later, NULL, NULL, &err), 0);
            break;
        case 2:
            assert_int_equal(aps_job_pause(s, id, NULL, NULL), 0);
            break;
        case 3:
            assert_int_equal(aps_job_pause(s, id, NULL, NULL), 0);
            assert_int_equal(aps_job_resume(s, id, NULL, NULL), 0);
            break;
        default:
            assert_int_equal(aps_job_remove(s, id, NULL), 0);
        }
    }
    usleep(50 * 1000);
    uint64_t p1 = passes(s);
    print_message("passes for 60 changes of later jobs: %llu\n", (unsigned long long)(p1 - p0));
    assert_int_equal(p1 - p0, 0);
    aps_time due = aps_time_now() + 200000;
    aps_trigger_spec soon = tu_date(due);
    assert_int_equal(aps_job_reschedule(s, "j0", &soon, NULL, NULL, &err), 0);
    assert_fires_on_time(s, due, p1);
    aps_scheduler_destroy(s);
}

/* 1 if the loop's wake-up fd was written since the last pass. */
static int
woken(aps_scheduler *s)
{
    struct pollfd p = {.fd = s->wake_fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void
add_at(aps_scheduler *s, const char *id, aps_time when, int paused)
{
    aps_trigger_spec at = tu_date(when);
    aps_job_spec j = tu_function_job(id, &at, "count", NULL);
    j.paused = paused;
    tu_job_add(s, &j);
}

/* Each case of an add's wake-up (real clock, the loop driven by hand): the
 * loop waiting for nothing, or for a job due before the new one (less the
 * commit-ahead lead: none in external mode), or in a pass (which may have
 * read the stores before the add's commit: it is told the job's time
 * instead), or the new job sooner; a paused job. */
static void
test_add_wake_cases(void **state)
{
    (void)state;
    aps_time next = APS_TIME_NONE, now = aps_time_now();
    aps_scheduler *s = open_real_clock("loop_add_cases", 1, 10, APS_RUN_EXTERNAL);
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next == APS_TIME_NONE);
    assert_false(woken(s));
    /* Waiting for nothing: any job wakes it. */
    add_at(s, "j0", now + 3600 * SEC, 0);
    assert_true(woken(s));
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next != APS_TIME_NONE && next <= now + 3600 * SEC && next > now + 3599 * SEC);
    /* A later job, a paused one, one due just after the settled pass:
     * that pass finds them. */
    add_at(s, "j1", now + 7200 * SEC, 0);
    add_at(s, "j2", now + 60 * SEC, 1);
    add_at(s, "j3", next + 50000, 0);
    assert_false(woken(s));
    /* In a pass: it may have read the stores before this commit. No
     * wake-up (under a stream of adds, each pass would make the next):
     * the pass settles its next time no later than the job's. */
    pthread_mutex_lock(&s->mu);
    s->in_pass = 1;
    s->loop_next = aps_time_now();
    pthread_mutex_unlock(&s->mu);
    add_at(s, "j4", now + 10800 * SEC, 0);
    assert_false(woken(s));
    aps_time settled = next;
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next == settled);
    pthread_mutex_lock(&s->mu);
    s->in_pass = 1;
    s->loop_next = aps_time_now();
    pthread_mutex_unlock(&s->mu);
    add_at(s, "j4b", next - 20000, 0);
    add_at(s, "j4c", now + 10800 * SEC, 0);
    assert_false(woken(s));
    /* Told the earliest (the pass may have read before either commit). */
    pthread_mutex_lock(&s->mu);
    assert_true(s->pass_wake == settled - 20000);
    pthread_mutex_unlock(&s->mu);
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next <= settled - 20000 && next > settled - 30000);
    assert_false(woken(s));
    /* A job committed after the pass read the stores, which it did not
     * find: the time it was told is its next pass all the same. */
    aps_time told = next - 40000;
    pthread_mutex_lock(&s->mu);
    s->pass_wake = told;
    pthread_mutex_unlock(&s->mu);
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next == told);
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next == told + 40000);
    /* Sooner than the settled pass: woken. */
    add_at(s, "j5", next - 10000, 0);
    assert_true(woken(s));
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    add_at(s, "j6", now + 10 * SEC, 0);
    assert_true(woken(s));
    assert_int_equal(aps_scheduler_process(s, &next), 0);
    assert_true(next <= now + 10 * SEC && next > now + 9 * SEC);
    aps_scheduler_destroy(s);
}

typedef struct race_adder {
    aps_scheduler *s;
    int k;
    aps_time due[MAX_JOBS];
    pthread_t th;
} race_adder;

#define RACE_THREADS 4
#define RACE_SOON 150 /* per thread, each with a later one in between */

/* Adds jobs due 20-300 ms on (every other one added for an hour on, then
 * rescheduled to that time), each followed by one due an hour on, with
 * pauses of 0-2 ms: adds and changes land before, during and after the
 * loop's passes. */
static void *
race_add_main(void *arg)
{
    race_adder *a = arg;
    unsigned seed = (unsigned)a->k * 7919u + 1;
    char id[16];
    for (int n = 0; n < RACE_SOON; n++) {
        int i = a->k * RACE_SOON + n;
        aps_time due = aps_time_now() + 20000 + (aps_time)(rand_r(&seed) % 280000);
        aps_trigger_spec at = tu_date(due);
        snprintf(id, sizeof(id), "j%d", i);
        if (n % 2 == 0) {
            aps_job_spec j = tu_function_job(id, &at, "stamp", NULL);
            tu_job_add(a->s, &j);
        } else {
            /* Added for later, then brought sooner: a change's wake-up. */
            aps_error err;
            aps_trigger_spec later = tu_date(aps_time_now() + 3600 * SEC);
            aps_job_spec j = tu_function_job(id, &later, "stamp", NULL);
            tu_job_add(a->s, &j);
            if (aps_job_reschedule(a->s, id, &at, NULL, NULL, &err) != 0)
                fail_msg("reschedule %s: %s", id, err.msg);
        }
        a->due[i] = due;
        at = tu_date(aps_time_now() + 3600 * SEC);
        snprintf(id, sizeof(id), "j%d", 1000 + i);
        aps_job_spec j = tu_function_job(id, &at, "stamp", NULL);
        tu_job_add(a->s, &j);
        usleep((useconds_t)(rand_r(&seed) % 2000));
    }
    return NULL;
}

/* Adds and changes from four threads racing the loop's passes (real
 * clock): every job due soon fires at its time, none waits for the
 * hour-away ones' pass. */
static void
test_adds_racing_passes(void **state)
{
    (void)state;
    static race_adder ad[RACE_THREADS];
    const int n = RACE_THREADS * RACE_SOON;
    for (int i = 0; i < MAX_JOBS; i++)
        atomic_store(&fired_at[i], 0);
    aps_scheduler *s = open_real_clock("loop_add_race", 4, 10000, APS_RUN_BACKGROUND);
    for (int k = 0; k < RACE_THREADS; k++) {
        ad[k].s = s;
        ad[k].k = k;
        assert_int_equal(pthread_create(&ad[k].th, NULL, race_add_main, &ad[k]), 0);
    }
    for (int k = 0; k < RACE_THREADS; k++)
        pthread_join(ad[k].th, NULL);
    int fired = 0;
    for (int w = 0; w < 1000 && fired < n; w++) {
        usleep(10 * 1000);
        fired = 0;
        for (int i = 0; i < n; i++)
            fired += atomic_load(&fired_at[i]) != 0;
    }
    aps_time worst = 0;
    for (int i = 0; i < n; i++) {
        aps_time due = ad[i / RACE_SOON].due[i], at = atomic_load(&fired_at[i]);
        if (at == 0)
            fail_msg("j%d, due %lld, did not fire", i, (long long)due);
        assert_true(at >= due);
        if (at - due > worst)
            worst = at - due;
    }
    print_message("%d jobs due soon: latest fired %lld us after its time\n", n, (long long)worst);
    /* Late by a missed wake-up would be late by up to the next add's pass,
     * or an hour for the last ones; a slow machine (valgrind) is not. */
    assert_true(worst < 3 * SEC);
    for (int i = 1000; i < 1000 + n; i++)
        assert_int_equal(atomic_load(&fired_at[i]), 0);
    aps_scheduler_destroy(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mem_due_index_model),
        cmocka_unit_test(test_decoded_record_changes),
        cmocka_unit_test(test_ids_after_fork),
        cmocka_unit_test(test_pool_burst),
        cmocka_unit_test(test_pool_queue_drains),
        cmocka_unit_test(test_pool_chain_wakes_every_worker),
        cmocka_unit_test(test_change_between_runs_is_seen),
        cmocka_unit_test(test_backlog_batches_grow),
        cmocka_unit_test(test_completions_recorded_real_clock),
        cmocka_unit_test(test_adds_wake_only_when_sooner),
        cmocka_unit_test(test_add_wake_cases),
        cmocka_unit_test(test_changes_wake_only_when_sooner),
        cmocka_unit_test(test_adds_racing_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
