/*
 * Event subscribers (events.c): publish-time matching through the index
 * (job ids, several per subscriber; types), each subscriber's queue of
 * matching sequences, the fall-back to the ring and the log when the queue
 * overflows or the ring overwrote a queued sequence, the gap marker, the
 * wake-up fd (written only when a subscriber has something new), the
 * blocking wait, positions (bookmarks), and close while events are
 * published. The ground truth is an unfiltered cursor over the whole log.
 */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "apsd/engine.h"
#include "scheduler.h" /* APS__RING_SIZE: the queue never holds more */
#include "testutil.h"

#define SEC INT64_C(1000000)
#define T0 TU_T0

static int
noop_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
        size_t error_len)
{
    (void)job_id;
    (void)arg;
    (void)scheduled;
    (void)userdata;
    (void)error;
    (void)error_len;
    return 0;
}

/* A scheduler whose jobs never run (no next run time): each add, pause,
 * resume and remove is one event. lmdb_dir NULL: memory only. */
static aps_scheduler *
open_sched(const char *lmdb_dir, uint64_t event_max_count)
{
    aps_store_def stores[1] = {{"default", lmdb_dir ? "lmdb" : "memory", lmdb_dir}};
    aps_executor_def execs[1] = {{.name = "default", .type = "threadpool", .max_workers = 1}};
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = stores;
    cfg.n_stores = 1;
    cfg.executors = execs;
    cfg.n_executors = 1;
    cfg.clock = &tu_clock; /* never set here: TU_T0 */
    cfg.no_sync = 1;
    cfg.event_max_count = event_max_count;
    if (aps_scheduler_create(&cfg, &s, &err) != 0)
        fail_msg("create: %s", err.msg);
    assert_int_equal(aps_scheduler_register_function(s, "noop", noop_fn, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);
    return s;
}

static void
add_job(aps_scheduler *s, const char *id)
{
    aps_job_spec j = tu_function_job(id, NULL, "noop", NULL);
    tu_job_add(s, &j);
}

/* n JOB_ADDED events of fresh jobs "<prefix><i>". */
static void
add_jobs(aps_scheduler *s, const char *prefix, int n)
{
    static int serial;
    char id[64];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "%s%d-%d", prefix, serial, i);
        add_job(s, id);
    }
    serial++;
}

static void
pause_job(aps_scheduler *s, const char *id)
{
    aps_job *job = NULL;
    assert_int_equal(aps_job_pause(s, id, NULL, &job), 0);
    aps_job_free(job);
}

/* What a cursor delivered. */
typedef struct got {
    uint64_t seq;
    aps_event_type type;
    char job_id[64];
} got;

/* Reads until APS_ENOENT; gaps are failures unless gap_first is given
 * (then the first gap is recorded there and reading goes on). */
static size_t
drain(aps_subscriber *sub, got *out, size_t cap, uint64_t *gap_first)
{
    size_t n = 0;
    for (;;) {
        aps_event *ev = NULL;
        uint64_t gf = 0;
        int rc = aps_subscriber_next(sub, 0, &ev, &gf);
        if (rc == APS_ENOENT)
            return n;
        if (rc == APS_ERANGE && gap_first != NULL && *gap_first == 0) {
            *gap_first = gf;
            continue;
        }
        assert_int_equal(rc, 0);
        assert_true(n < cap);
        out[n].seq = ev->sequence;
        out[n].type = ev->type;
        snprintf(out[n].job_id, sizeof(out[n].job_id), "%s", ev->job_id ? ev->job_id : "");
        n++;
        aps_event_free(ev);
    }
}

/* Every event of the log after `after`, in order (the ground truth). */
static size_t
log_after(aps_scheduler *s, uint64_t after, got *out, size_t cap)
{
    aps_subscriber *all = NULL;
    assert_int_equal(aps_subscribe(s, after, APS_EVENT_ALL, NULL, &all), 0);
    size_t n = drain(all, out, cap, NULL);
    aps_subscriber_close(all);
    return n;
}

typedef struct filter {
    uint32_t mask;
    const char *ids[4];
    size_t n_ids;
} filter;

static int
wanted(const filter *f, const got *g)
{
    if (!(f->mask & APS_EVENT_MASK(g->type)))
        return 0;
    if (f->n_ids == 0)
        return 1;
    for (size_t i = 0; i < f->n_ids; i++)
        if (strcmp(f->ids[i], g->job_id) == 0)
            return 1;
    return 0;
}

/* Compares what a subscriber got with the truth filtered. */
static void
check_filtered(const filter *f, const got *truth, size_t n_truth, const got *g, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n_truth; i++) {
        if (!wanted(f, &truth[i]))
            continue;
        if (k >= n)
            fail_msg("missing event %llu (%s)", (unsigned long long)truth[i].seq,
                     truth[i].job_id);
        assert_int_equal(g[k].seq, truth[i].seq);
        assert_int_equal(g[k].type, truth[i].type);
        assert_string_equal(g[k].job_id, truth[i].job_id);
        k++;
    }
    assert_int_equal(k, n);
}

static int
readable(aps_subscriber *sub)
{
    struct pollfd pfd = {aps_subscriber_fd(sub), POLLIN, 0};
    return poll(&pfd, 1, 0);
}

static uint64_t
newest(aps_scheduler *s)
{
    uint64_t first = 0, last = 0;
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last), 0);
    return last;
}

/* ---- tests ---------------------------------------------------------------- */

static void
test_multi_id_filters(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 0);
    uint64_t start = newest(s);
    const uint32_t job_types = APS_EVENT_MASK(APS_EVENT_JOB_ADDED) |
                               APS_EVENT_MASK(APS_EVENT_JOB_MODIFIED) |
                               APS_EVENT_MASK(APS_EVENT_JOB_REMOVED);
    filter f[] = {
        {APS_EVENT_ALL, {"x", "y"}, 2},
        {APS_EVENT_ALL, {"y"}, 1},
        {APS_EVENT_MASK(APS_EVENT_JOB_ADDED), {NULL}, 0},
        {APS_EVENT_MASK(APS_EVENT_JOB_REMOVED), {"x"}, 1},
        {job_types, {"x", "x", "y", "x"}, 4}, /* duplicates: each event once */
        {APS_EVENT_MASK(APS_EVENT_SCHEDULER_PAUSED), {NULL}, 0},
        {APS_EVENT_ALL, {"nosuchjob", "x"}, 2},
    };
    enum { N = sizeof(f) / sizeof(f[0]) };
    aps_subscriber *sub[N];
    for (size_t i = 0; i < N; i++)
        assert_int_equal(aps_subscribe_ids(s, UINT64_MAX, f[i].mask, f[i].ids, f[i].n_ids, &sub[i]),
                         0);
    add_job(s, "z");
    add_job(s, "x");
    add_job(s, "y");
    add_job(s, "w");
    pause_job(s, "y");
    pause_job(s, "x");
    assert_int_equal(aps_scheduler_pause(s), 0); /* a scheduler event: no job id */
    assert_int_equal(aps_job_remove(s, "x", NULL), 0);
    assert_int_equal(aps_job_remove(s, "z", NULL), 0);

    got truth[64], g[64];
    size_t n_truth = log_after(s, start, truth, 64);
    assert_true(n_truth >= 9);
    for (size_t i = 0; i < N; i++) {
        size_t n = drain(sub[i], g, 64, NULL);
        check_filtered(&f[i], truth, n_truth, g, n);
        assert_true(n > 0);
        aps_subscriber_close(sub[i]);
    }
    /* The one-id form is the same filter. */
    aps_subscriber *one = NULL;
    assert_int_equal(aps_subscribe(s, start, APS_EVENT_ALL, "y", &one), 0);
    size_t n = drain(one, g, 64, NULL);
    check_filtered(&f[1], truth, n_truth, g, n);
    aps_subscriber_close(one);
    /* Bad arguments. */
    const char *null_id[1] = {NULL};
    assert_int_equal(aps_subscribe_ids(s, 0, 0, null_id, 1, &one), APS_EINVAL);
    assert_int_equal(aps_subscribe_ids(s, 0, 0, NULL, 2, &one), APS_EINVAL);
    aps_scheduler_destroy(s);
}

static void
test_fd_is_written_only_for_matches(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 0);
    const char *ids[] = {"watched"};
    aps_subscriber *sub = NULL;
    aps_event *ev = NULL;
    assert_int_equal(aps_subscribe_ids(s, UINT64_MAX, APS_EVENT_ALL, ids, 1, &sub), 0);
    /* A poll loop may wait before its first next. */
    assert_int_equal(readable(sub), 0);
    add_jobs(s, "other", 50);
    assert_int_equal(readable(sub), 0); /* nothing it wants: not woken */
    add_job(s, "watched");
    assert_int_equal(readable(sub), 1);
    add_jobs(s, "other", 5);
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, NULL), 0);
    assert_string_equal(ev->job_id, "watched");
    aps_event_free(ev);
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, NULL), APS_ENOENT);
    assert_int_equal(readable(sub), 0); /* drained, armed again */
    pause_job(s, "watched");
    pause_job(s, "watched"); /* a second event before it reads: one wake-up */
    assert_int_equal(readable(sub), 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(aps_subscriber_next(sub, 0, &ev, NULL), 0);
        assert_int_equal(ev->type, APS_EVENT_JOB_MODIFIED);
        aps_event_free(ev);
    }
    assert_int_equal(aps_subscriber_next(sub, 0, &ev, NULL), APS_ENOENT);
    assert_int_equal(readable(sub), 0);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

static void
test_queue_overflow_falls_back_to_the_log(void **state)
{
    (void)state;
    /* A live subscriber that does not read while more events than the ring
     * holds are published: its queue overflows, the ring overwrites what it
     * held, and it reads the rest from the log, in order, then is live. */
    aps_scheduler *s = open_sched(tu_tmpdir("subs-overflow"), 0);
    uint64_t start = newest(s);
    aps_subscriber *all = NULL, *some = NULL;
    const char *ids[] = {"k", "m"};
    assert_int_equal(aps_subscribe(s, UINT64_MAX, APS_EVENT_ALL, NULL, &all), 0);
    assert_int_equal(aps_subscribe_ids(s, UINT64_MAX, APS_EVENT_ALL, ids, 2, &some), 0);
    add_job(s, "k");
    int n_events = APS__RING_SIZE * 2 + 100;
    add_jobs(s, "filler", n_events / 2);
    add_job(s, "m");
    add_jobs(s, "filler", n_events / 2);
    pause_job(s, "k");
    size_t cap = (size_t)n_events + 16;
    got *truth = calloc(cap, sizeof(*truth)), *g = calloc(cap, sizeof(*g));
    assert_non_null(truth);
    assert_non_null(g);
    size_t n_truth = log_after(s, start, truth, cap);
    assert_int_equal(n_truth, (size_t)n_events / 2 * 2 + 3);
    assert_int_equal(truth[n_truth - 1].seq, newest(s));
    uint64_t pos = 0;
    assert_int_equal(aps_subscriber_position(all, &pos), 0);
    assert_int_equal(pos, start); /* nothing read yet */
    size_t n = drain(all, g, cap, NULL);
    filter f_all = {APS_EVENT_ALL, {NULL}, 0}, f_some = {APS_EVENT_ALL, {"k", "m"}, 2};
    check_filtered(&f_all, truth, n_truth, g, n);
    n = drain(some, g, cap, NULL);
    check_filtered(&f_some, truth, n_truth, g, n);
    assert_int_equal(n, 3);
    assert_int_equal(aps_subscriber_position(some, &pos), 0);
    assert_int_equal(pos, newest(s)); /* everything examined */
    /* Live again: the next event is queued, and wakes it. */
    assert_int_equal(readable(all), 0);
    add_job(s, "after");
    assert_int_equal(readable(all), 1);
    assert_int_equal(drain(all, g, cap, NULL), 1);
    assert_string_equal(g[0].job_id, "after");
    assert_int_equal(g[0].seq, newest(s));
    aps_subscriber_close(all);
    aps_subscriber_close(some);
    free(truth);
    free(g);
    aps_scheduler_destroy(s);
}

static void
test_queue_overflow_within_the_ring(void **state)
{
    (void)state;
    /* More than a queue holds, less than the ring: the subscriber scans
     * the ring from its oldest undelivered event. */
    aps_scheduler *s = open_sched(NULL, 0);
    uint64_t start = newest(s);
    aps_subscriber *sub = NULL;
    assert_int_equal(aps_subscribe(s, UINT64_MAX, APS_EVENT_ALL, NULL, &sub), 0);
    int n_events = APS__RING_SIZE / 2;
    add_jobs(s, "q", n_events);
    got *g = calloc((size_t)n_events * 2 + 16, sizeof(*g));
    assert_non_null(g);
    /* Part of it now, the rest later: it leaves the live mode and comes
     * back to it in between. */
    for (int i = 0; i < 10; i++) {
        aps_event *ev = NULL;
        assert_int_equal(aps_subscriber_next(sub, 0, &ev, NULL), 0);
        assert_int_equal(ev->sequence, start + 1 + (uint64_t)i);
        aps_event_free(ev);
    }
    add_jobs(s, "q", n_events);
    size_t n = drain(sub, g, (size_t)n_events * 2, NULL);
    assert_int_equal(n, (size_t)n_events * 2 - 10);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(g[i].seq, start + 11 + i);
    add_job(s, "live");
    assert_int_equal(readable(sub), 1);
    assert_int_equal(drain(sub, g, 4, NULL), 1);
    assert_int_equal(g[0].seq, newest(s));
    free(g);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

static void
test_ring_overwrites_a_queued_sequence(void **state)
{
    (void)state;
    /* A filtered subscriber whose queue is short (two sequences) but whose
     * first one left the ring before it read: that one comes from the log,
     * and the order holds. */
    aps_scheduler *s = open_sched(NULL, 0);
    const char *ids[] = {"rare"};
    aps_subscriber *sub = NULL;
    assert_int_equal(aps_subscribe_ids(s, UINT64_MAX, APS_EVENT_ALL, ids, 1, &sub), 0);
    add_job(s, "rare");
    uint64_t first = newest(s);
    add_jobs(s, "filler", APS__RING_SIZE + 10);
    pause_job(s, "rare");
    uint64_t second = newest(s);
    got g[8];
    size_t n = drain(sub, g, 8, NULL);
    assert_int_equal(n, 2);
    assert_int_equal(g[0].seq, first);
    assert_int_equal(g[0].type, APS_EVENT_JOB_ADDED);
    assert_int_equal(g[1].seq, second);
    assert_int_equal(g[1].type, APS_EVENT_JOB_MODIFIED);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

static void
test_gap_marker_after_overflow(void **state)
{
    (void)state;
    /* The log keeps 100 events: a live subscriber that does not read while
     * more than the ring is published falls behind both: a gap naming the
     * oldest retained, then every event from there, in order. */
    aps_scheduler *s = open_sched(tu_tmpdir("subs-gap"), 100);
    aps_subscriber *sub = NULL;
    assert_int_equal(aps_subscribe(s, UINT64_MAX, APS_EVENT_ALL, NULL, &sub), 0);
    add_jobs(s, "g", APS__RING_SIZE + 500);
    uint64_t first = 0, last = 0;
    assert_int_equal(aps_scheduler_event_bounds(s, &first, &last), 0);
    size_t cap = APS__RING_SIZE + 600;
    got *g = calloc(cap, sizeof(*g));
    assert_non_null(g);
    uint64_t gap_first = 0;
    size_t n = drain(sub, g, cap, &gap_first);
    assert_int_equal(gap_first, first);
    assert_int_equal(g[0].seq, first);
    for (size_t i = 1; i < n; i++)
        assert_int_equal(g[i].seq, g[i - 1].seq + 1);
    assert_int_equal(g[n - 1].seq, last);
    free(g);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

/* Deletes the log records [from, to] from the store in `dir` (closed),
 * as a prune would between a reader's look at the log's bounds and its
 * scan: a hole the reader comes upon. */
static void
cut_log(const char *dir, uint64_t from, uint64_t to)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &dbi), 0);
    for (uint64_t seq = from; seq <= to; seq++) {
        unsigned char k[8];
        for (int b = 0; b < 8; b++)
            k[b] = (unsigned char)(seq >> (56 - 8 * b));
        MDB_val key = {sizeof(k), k};
        assert_int_equal(mdb_del(txn, dbi, &key, NULL), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Records pruned after a reader read the log's bounds: the reader that
 * comes upon the hole gets a gap naming the first record after it, then
 * reads on from there (it went on past the hole without a word). */
static void
test_gap_when_pruned_during_a_read(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof(dir), "%s", tu_tmpdir("subs-hole"));
    aps_scheduler *s = open_sched(dir, 0);
    add_jobs(s, "h", 300);
    uint64_t last = newest(s);
    aps_scheduler_destroy(s);
    cut_log(dir, 10, 19);
    s = open_sched(dir, 0);
    aps_subscriber *sub = NULL;
    assert_int_equal(aps_subscribe(s, 0, APS_EVENT_MASK(APS_EVENT_JOB_ADDED), NULL, &sub), 0);
    got *g = calloc(400, sizeof(*g));
    assert_non_null(g);
    uint64_t gap_first = 0;
    size_t n = drain(sub, g, 400, &gap_first);
    assert_int_equal(gap_first, 20);
    assert_true(n >= 290);
    for (size_t i = 0; i < n; i++) {
        assert_true(g[i].seq < 10 || g[i].seq >= 20);
        if (i > 0 && g[i - 1].seq != 9)
            assert_int_equal(g[i].seq, g[i - 1].seq + 1);
    }
    assert_int_equal(g[n - 1].seq, last);
    free(g);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

/* Listeners get at most a batch of events per loop pass, so that
 * listeners slower than the events never hold the pass (and the jobs it
 * fires); the rest comes in the passes that follow at once. */
static size_t listened;

static void
count_listener(const aps_event *ev, void *userdata)
{
    (void)ev;
    (void)userdata;
    listened++;
}

static void
test_listeners_in_batches(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 0);
    listened = 0;
    assert_int_equal(
        aps_scheduler_add_listener(s, count_listener, APS_EVENT_MASK(APS_EVENT_JOB_ADDED), NULL),
        0);
    add_jobs(s, "l", 3000);
    assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_true(listened > 0 && listened <= 1024);
    struct pollfd pfd = {aps_scheduler_fd(s), POLLIN, 0};
    assert_int_equal(poll(&pfd, 1, 0), 1); /* the rest is due at once */
    for (int i = 0; i < 20 && listened < 3000; i++)
        assert_int_equal(aps_scheduler_process(s, NULL), 0);
    assert_int_equal(listened, 3000);
    aps_scheduler_destroy(s);
}

static void
test_many_subscribers_different_filters(void **state)
{
    (void)state;
    /* 300 subscribers on 40 jobs, random ids (1 to 3) and types, some
     * reading as they go, some at the end, some replaying from the start:
     * each gets exactly its events, in order. */
    enum { SUBS = 300, JOBS = 40, ROUNDS = 1500 };
    aps_scheduler *s = open_sched(NULL, 0);
    uint64_t start = newest(s);
    static char names[JOBS][16];
    for (int j = 0; j < JOBS; j++)
        snprintf(names[j], sizeof(names[j]), "job%02d", j);
    const uint32_t types[] = {APS_EVENT_MASK(APS_EVENT_JOB_ADDED),
                              APS_EVENT_MASK(APS_EVENT_JOB_MODIFIED),
                              APS_EVENT_MASK(APS_EVENT_JOB_REMOVED)};
    unsigned seed = 12345;
    filter *f = calloc(SUBS, sizeof(*f));
    aps_subscriber **sub = calloc(SUBS, sizeof(*sub));
    got **g = calloc(SUBS, sizeof(*g));
    size_t *n = calloc(SUBS, sizeof(*n));
    assert_non_null(f);
    assert_non_null(sub);
    assert_non_null(g);
    assert_non_null(n);
    for (int i = 0; i < SUBS; i++) {
        f[i].mask = 0;
        for (int t = 0; t < 3; t++)
            if (rand_r(&seed) % 2)
                f[i].mask |= types[t];
        if (f[i].mask == 0)
            f[i].mask = APS_EVENT_ALL;
        f[i].n_ids = i % 10 == 0 ? 0 : 1 + (size_t)(rand_r(&seed) % 3);
        for (size_t k = 0; k < f[i].n_ids; k++)
            f[i].ids[k] = names[rand_r(&seed) % JOBS];
        assert_int_equal(aps_subscribe_ids(s, i % 7 == 0 ? start : UINT64_MAX, f[i].mask,
                                           f[i].ids, f[i].n_ids, &sub[i]),
                         0);
        g[i] = calloc(ROUNDS + 16, sizeof(got));
        assert_non_null(g[i]);
    }
    int exists[JOBS] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        int j = rand_r(&seed) % JOBS;
        if (!exists[j]) {
            add_job(s, names[j]);
            exists[j] = 1;
        } else if (rand_r(&seed) % 3 == 0) {
            assert_int_equal(aps_job_remove(s, names[j], NULL), 0);
            exists[j] = 0;
        } else {
            pause_job(s, names[j]);
        }
        /* A third read as they go. */
        for (int i = r % 3; i < SUBS; i += 3 * 17)
            n[i] += drain(sub[i], g[i] + n[i], ROUNDS + 16 - n[i], NULL);
    }
    got *truth = calloc(ROUNDS + 16, sizeof(*truth));
    assert_non_null(truth);
    size_t n_truth = log_after(s, start, truth, ROUNDS + 16);
    assert_int_equal(n_truth, ROUNDS); /* one event per change */
    for (int i = 0; i < SUBS; i++) {
        n[i] += drain(sub[i], g[i] + n[i], ROUNDS + 16 - n[i], NULL);
        check_filtered(&f[i], truth, n_truth, g[i], n[i]);
        uint64_t pos = 0;
        assert_int_equal(aps_subscriber_position(sub[i], &pos), 0);
        assert_int_equal(pos, newest(s));
        aps_subscriber_close(sub[i]);
        free(g[i]);
    }
    free(truth);
    free(f);
    free(sub);
    free(g);
    free(n);
    aps_scheduler_destroy(s);
}

typedef struct waiter {
    aps_subscriber *sub;
    int rc;
    char job_id[32];
} waiter;

static void *
wait_main(void *arg)
{
    waiter *w = arg;
    aps_event *ev = NULL;
    w->rc = aps_subscriber_next(w->sub, 10 * SEC, &ev, NULL);
    if (w->rc == 0) {
        snprintf(w->job_id, sizeof(w->job_id), "%s", ev->job_id);
        aps_event_free(ev);
    }
    return NULL;
}

static void
test_blocking_wait(void **state)
{
    (void)state;
    aps_scheduler *s = open_sched(NULL, 0);
    const char *ids[] = {"wanted"};
    waiter w = {NULL, 1, ""};
    assert_int_equal(aps_subscribe_ids(s, UINT64_MAX, APS_EVENT_ALL, ids, 1, &w.sub), 0);
    aps_event *ev = NULL;
    assert_int_equal(aps_subscriber_next(w.sub, 20000, &ev, NULL), APS_ENOENT); /* timed out */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_main, &w), 0);
    add_jobs(s, "unwanted", 20);
    add_job(s, "wanted");
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(w.rc, 0);
    assert_string_equal(w.job_id, "wanted");
    aps_subscriber_close(w.sub);
    aps_scheduler_destroy(s);
}

typedef struct churn {
    aps_scheduler *s;
    int stop;
    pthread_mutex_t mu;
} churn;

static void *
publish_main(void *arg)
{
    churn *c = arg;
    for (int i = 0; i < 100000; i++) {
        pthread_mutex_lock(&c->mu);
        int stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        add_jobs(c->s, "p", 1);
    }
    return NULL;
}

static void
test_close_while_publishing(void **state)
{
    (void)state;
    /* Subscribers open, read a little and close (some with events queued,
     * some armed, so that a publish may be writing their fd) while another
     * thread publishes: nothing is lost for those that stay, nothing
     * crashes (the sanitizer runs check the fd and memory handling). */
    aps_scheduler *s = open_sched(NULL, 0);
    uint64_t start = newest(s);
    churn c = {s, 0, PTHREAD_MUTEX_INITIALIZER};
    aps_subscriber *keeper = NULL;
    assert_int_equal(aps_subscribe(s, UINT64_MAX, APS_EVENT_ALL, NULL, &keeper), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, publish_main, &c), 0);
    size_t cap = 100000 + 16, kept = 0;
    got *g = calloc(cap, sizeof(*g));
    assert_non_null(g);
    for (int i = 0; i < 2000; i++) {
        aps_subscriber *sub = NULL;
        const char *ids[] = {"p0-0", "nosuch"};
        assert_int_equal(i % 2 ? aps_subscribe(s, UINT64_MAX, APS_EVENT_ALL, NULL, &sub)
                               : aps_subscribe_ids(s, UINT64_MAX, APS_EVENT_ALL, ids, 2, &sub),
                         0);
        if (i % 3 == 0) {
            aps_event *ev = NULL;
            if (aps_subscriber_next(sub, 0, &ev, NULL) == 0)
                aps_event_free(ev);
        }
        aps_subscriber_close(sub);
        if (i % 50 == 0)
            kept += drain(keeper, g + kept, cap - kept, NULL);
    }
    /* Under valgrind, which runs one thread at a time, the loop above may
     * end before the publisher ran at all: let it publish before stopping. */
    for (int i = 0; i < 10000 && newest(s) == start; i++)
        usleep(1000);
    pthread_mutex_lock(&c.mu);
    c.stop = 1;
    pthread_mutex_unlock(&c.mu);
    assert_int_equal(pthread_join(th, NULL), 0);
    kept += drain(keeper, g + kept, cap - kept, NULL);
    assert_true(kept > 0);
    assert_int_equal(g[0].seq, start + 1);
    for (size_t i = 1; i < kept; i++)
        assert_int_equal(g[i].seq, g[i - 1].seq + 1);
    assert_int_equal(g[kept - 1].seq, newest(s));
    free(g);
    aps_subscriber_close(keeper);
    aps_scheduler_destroy(s);
}

static void
test_subscribe_after_a_future_sequence(void **state)
{
    (void)state;
    /* after beyond the newest: events up to it are skipped, also once it
     * is live. */
    aps_scheduler *s = open_sched(NULL, 0);
    uint64_t last = newest(s);
    aps_subscriber *sub = NULL;
    assert_int_equal(aps_subscribe(s, last + 3, APS_EVENT_ALL, NULL, &sub), 0);
    add_jobs(s, "f", 5);
    got g[8];
    size_t n = drain(sub, g, 8, NULL);
    assert_int_equal(n, 2);
    assert_int_equal(g[0].seq, last + 4);
    assert_int_equal(g[1].seq, last + 5);
    aps_subscriber_close(sub);
    aps_scheduler_destroy(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multi_id_filters),
        cmocka_unit_test(test_gap_when_pruned_during_a_read),
        cmocka_unit_test(test_listeners_in_batches),
        cmocka_unit_test(test_fd_is_written_only_for_matches),
        cmocka_unit_test(test_queue_overflow_falls_back_to_the_log),
        cmocka_unit_test(test_queue_overflow_within_the_ring),
        cmocka_unit_test(test_ring_overwrites_a_queued_sequence),
        cmocka_unit_test(test_gap_marker_after_overflow),
        cmocka_unit_test(test_many_subscribers_different_filters),
        cmocka_unit_test(test_blocking_wait),
        cmocka_unit_test(test_close_while_publishing),
        cmocka_unit_test(test_subscribe_after_a_future_sequence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
