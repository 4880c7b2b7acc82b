/*
 * bench_engine: the apsd engine end to end through its public API
 * (engine.h), real clock, background mode. tools/bench/engine/run prints
 * each figure beside APScheduler 3.9's (apscheduler_bench.py).
 *
 *   bench_engine adds SECONDS THREADS [thread|seq [DIR]]
 *       durable aps_job_add calls per second into a fresh LMDB store (fsync
 *       on) from THREADS threads, scheduler running; date jobs far in the
 *       future; ids "t<thread>-<n>" as apscheduler_bench.py's (`thread`),
 *       or "job-<n>" from one counter (`seq`, time-ordered ids).
 *       kib_per_commit: what the process wrote per commit (the pages of
 *       the commit).
 *   bench_engine lateness JOBS SECONDS WARMUP lmdb|memory [DIR]
 *       JOBS interval jobs (every second, start times spread uniformly
 *       over one second) on a no-op registered function; lateness =
 *       aps_time_now() in the function - its scheduled time, over the runs
 *       scheduled in SECONDS whole seconds after WARMUP seconds. Meanwhile
 *       a durable aps_job_add every 100 ms, timed (probe_p50_us/max_us).
 *       commits_per_s and write_kib_per_run: the store's commits, and what
 *       the process wrote per run, in the window.
 *   bench_engine loopcost JOBS ROUNDS lmdb|memory [DIR]
 *       the loop's CPU cost per run, free of timing noise: JOBS interval
 *       jobs on an injected clock moved one second per round, external
 *       mode (under callgrind, the rounds are dumped as a part of their own).
 *   bench_engine million JOBS THREADS [DIR]
 *       JOBS interval jobs (hourly) added through THREADS threads into a
 *       fresh LMDB store; its size on disk; then, in a fresh process each
 *       (`reopen`), open-to-first-fire with the page cache warm and cold.
 *   bench_engine reopen DIR warm|cold
 *       aps_scheduler_create + start until a job due at open runs.
 *   bench_engine disk ROUNDS [DIR]
 *       the disk under the store: one pwrite per page of N 4 KiB pages at
 *       scattered places, then fdatasync, against the same N pages in one
 *       contiguous pwrite + fdatasync (N = 1, 16, 64, 128; median of
 *       ROUNDS). A commit's pages are written where LMDB allocated them.
 *
 * Output: one line per figure, "<what> key=value ...", for the driver.
 * DIR is a directory on a real disk (not tmpfs): default $APS_BENCH_DIR,
 * else /var/tmp. Executors are "threadpool" with the engine's default 10
 * workers (APS_BENCH_WORKERS=N changes it for `lateness`).
 * APS_BENCH_NO_SYNC=1 turns fsync off (to see the CPU side alone),
 * APS_BENCH_AHEAD_MS=N and APS_BENCH_AHEAD_MAX_MS=N set the scheduler's
 * commit_ahead_us and commit_ahead_max_us (how far ahead of their time LMDB
 * runs are committed, and the most that widens to) and APS_BENCH_DUMP=FILE writes each
 * lateness sample (offset in the window, lateness, both in us): diagnosis
 * only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <poll.h>

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define BENCH_CALLGRIND 1
#endif
#endif

#include "apsd/engine.h"
#include "scheduler.h"
#include "store.h"

#define SEC INT64_C(1000000)
#define TMPFS_MAGIC_ 0x01021994

/* ---- helpers ---------------------------------------------------------------- */

static double
mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sleep_until(aps_time t)
{
    for (;;) {
        aps_time now = aps_time_now();
        if (now >= t)
            return;
        aps_time d = t - now;
        struct timespec ts = {(time_t)(d / SEC), (long)(d % SEC) * 1000};
        nanosleep(&ts, NULL);
    }
}

static void
die(const char *what, int rc, const aps_error *err)
{
    fprintf(stderr, "bench_engine: %s: %s%s%s\n", what, aps_strerror(rc),
            err && err->msg[0] ? ": " : "", err ? err->msg : "");
    exit(1);
}

/* Bytes this process has passed to write calls (/proc/self/io wchar: the
 * store's page writes; its few 8-byte wake-ups are noise); 0 if unreadable. */
static unsigned long long
io_write_bytes(void)
{
    unsigned long long v = 0;
    char line[128];
    FILE *f = fopen("/proc/self/io", "r");

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "wchar: %llu", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* VmRSS and VmHWM of this process, in KiB. */
static void
mem_kib(long *rss, long *hwm)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    *rss = *hwm = -1;
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *hwm = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

static double
cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static const char *
base_dir(const char *arg)
{
    if (arg != NULL)
        return arg;
    if (getenv("APS_BENCH_DIR") != NULL)
        return getenv("APS_BENCH_DIR");
    return "/var/tmp";
}

/* A fresh directory under base, refused on tmpfs (no fsync cost there). */
static void
make_dir(const char *base, const char *what, char *dir, size_t len)
{
    struct statfs sf;
    snprintf(dir, len, "%s/apsd_bench_%s_XXXXXX", base, what);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "bench_engine: mkdtemp %s: %s\n", dir, strerror(errno));
        exit(1);
    }
    if (statfs(dir, &sf) == 0 && (unsigned long)sf.f_type == TMPFS_MAGIC_) {
        fprintf(stderr, "bench_engine: %s is on tmpfs: durable figures would be meaningless; "
                        "set APS_BENCH_DIR to a directory on a disk\n", dir);
        rmdir(dir);
        exit(2);
    }
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void
rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int
noop(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
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

static aps_scheduler *
open_sched(const char *type, const char *dir, uint32_t workers, uint32_t queue,
           uint32_t max_instances, int64_t grace_us)
{
    aps_store_def store = {"default", type, dir};
    aps_executor_def exec;
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err = {0, ""};

    memset(&exec, 0, sizeof(exec));
    exec.name = "default";
    exec.type = "threadpool";
    exec.max_workers = workers;
    exec.max_queue = queue;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.executors = &exec;
    cfg.n_executors = 1;
    cfg.default_max_instances = max_instances;
    /* APS_BENCH_NO_SYNC=1: no fsync, to see the CPU side alone (diagnosis
     * only: the figures the driver prints are durable). */
    cfg.no_sync = getenv("APS_BENCH_NO_SYNC") != NULL;
    /* APS_BENCH_AHEAD_MS=N: commit-ahead of N ms (default 50; negative
     * off); APS_BENCH_AHEAD_MAX_MS=N: the most it widens to while writes
     * are slow (default: no widening). */
    if (getenv("APS_BENCH_AHEAD_MS"))
        cfg.commit_ahead_us = atoll(getenv("APS_BENCH_AHEAD_MS")) * 1000;
    if (getenv("APS_BENCH_AHEAD_MAX_MS"))
        cfg.commit_ahead_max_us = atoll(getenv("APS_BENCH_AHEAD_MAX_MS")) * 1000;
    if (grace_us > 0) {
        cfg.default_misfire = APS_MISFIRE_DURATION;
        cfg.default_misfire_grace_us = grace_us;
    }
    int rc = aps_scheduler_create(&cfg, &s, &err);
    if (rc != 0)
        die("aps_scheduler_create", rc, &err);
    return s;
}

static aps_job_spec
func_spec(const char *id, const aps_trigger_spec *trigger, const char *fn)
{
    aps_job_spec j;
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.trigger = trigger;
    j.target.kind = APS_TARGET_FUNCTION;
    j.target.u.function.name = (char *)fn;
    j.coalesce = -1;
    j.next_run_time = APS_TIME_NONE;
    return j;
}

static aps_trigger_spec
interval_spec(int64_t seconds, aps_time start)
{
    aps_trigger_spec t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.seconds = seconds;
    t.u.interval.start_date = start;
    t.u.interval.end_date = APS_TIME_NONE;
    return t;
}

static void
store_commits(aps_scheduler *s, uint64_t *commits)
{
    aps_store_stats st;
    *commits = aps__store_stats(s->stores[0].st, &st) == 0 ? st.commits : 0;
}

/* ---- adds ------------------------------------------------------------------- */

typedef struct adds_bench {
    aps_scheduler *s;
    pthread_barrier_t go;
    atomic_int stop;
    int seq;              /* ids from one counter (time-ordered) */
    atomic_ulong next_id; /* with seq */
    aps_trigger_spec far;
} adds_bench;

typedef struct adds_worker {
    adds_bench *b;
    int k;
    unsigned long n;
    pthread_t th;
} adds_worker;

static void *
adds_main(void *arg)
{
    adds_worker *w = arg;
    char id[64];
    aps_error err = {0, ""};

    pthread_barrier_wait(&w->b->go);
    while (!atomic_load_explicit(&w->b->stop, memory_order_relaxed)) {
        if (w->b->seq)
            snprintf(id, sizeof(id), "job-%012lu", atomic_fetch_add(&w->b->next_id, 1));
        else
            snprintf(id, sizeof(id), "t%d-%lu", w->k, w->n);
        aps_job_spec spec = func_spec(id, &w->b->far, "noop");
        int rc = aps_job_add(w->b->s, &spec, NULL, NULL, &err);
        if (rc != 0)
            die("aps_job_add", rc, &err);
        w->n++;
    }
    return NULL;
}

static int
cmd_adds(double seconds, int threads, const char *ids, const char *base)
{
    char dir[PATH_MAX];
    adds_bench b;
    adds_worker *w = calloc((size_t)threads, sizeof(*w));
    uint64_t c0, c1;

    make_dir(base_dir(base), "adds", dir, sizeof(dir));
    memset(&b, 0, sizeof(b));
    b.seq = strcmp(ids, "seq") == 0;
    b.s = open_sched("lmdb", dir, 0, 0, 0, 0);
    aps_scheduler_register_function(b.s, "noop", noop, NULL);
    int rc = aps_scheduler_start(b.s, APS_RUN_BACKGROUND);
    if (rc != 0)
        die("aps_scheduler_start", rc, NULL);
    memset(&b.far, 0, sizeof(b.far));
    b.far.kind = APS_TRIGGER_DATE;
    b.far.u.date.run_date = INT64_C(4102444800) * SEC; /* 2100-01-01 */
    pthread_barrier_init(&b.go, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
        w[i].b = &b;
        w[i].k = i;
        pthread_create(&w[i].th, NULL, adds_main, &w[i]);
    }
    store_commits(b.s, &c0);
    unsigned long long wb0 = io_write_bytes();
    pthread_barrier_wait(&b.go);
    double t0 = mono_s();
    while (mono_s() - t0 < seconds)
        usleep(10000);
    atomic_store(&b.stop, 1);
    unsigned long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].th, NULL);
        total += w[i].n;
    }
    double el = mono_s() - t0;
    store_commits(b.s, &c1);
    unsigned long long wb1 = io_write_bytes();
    aps_scheduler_destroy(b.s);
    rm_rf(dir);
    double commits = (double)(c1 - c0);
    printf("adds ids=%s threads=%d adds=%lu seconds=%.2f per_s=%.0f commits_per_s=%.0f "
           "per_commit=%.1f kib_per_commit=%.1f\n",
           b.seq ? "seq" : "thread", threads, total, el, (double)total / el, commits / el,
           commits > 0 ? (double)total / commits : 0.0,
           commits > 0 ? (double)(wb1 - wb0) / 1024.0 / commits : 0.0);
    free(w);
    return 0;
}

/* ---- lateness --------------------------------------------------------------- */

typedef struct lat_state {
    aps_time from, to; /* scheduled times counted: [from, to) */
    int64_t *v;
    aps_time *sched_at; /* APS_BENCH_DUMP: the scheduled times too */
    size_t cap;
    atomic_size_t n;
    atomic_ulong calls;
} lat_state;

static int
lat_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
       size_t error_len)
{
    lat_state *L = userdata;
    aps_time now = aps_time_now();
    (void)job_id;
    (void)arg;
    (void)error;
    (void)error_len;
    atomic_fetch_add_explicit(&L->calls, 1, memory_order_relaxed);
    if (scheduled >= L->from && scheduled < L->to) {
        size_t i = atomic_fetch_add_explicit(&L->n, 1, memory_order_relaxed);
        if (i < L->cap) {
            L->v[i] = now - scheduled;
            if (L->sched_at)
                L->sched_at[i] = scheduled;
        }
    }
    return 0;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct lat_adder {
    aps_scheduler *s;
    long first, step, jobs;
    aps_time grid;
    pthread_t th;
} lat_adder;

static void *
lat_add_main(void *arg)
{
    lat_adder *a = arg;
    char id[32];
    aps_error err = {0, ""};
    for (long i = a->first; i < a->jobs; i += a->step) {
        /* Ids in the order of their offsets: the due jobs of one batch sit
         * side by side in the store (as time-ordered ids would). */
        snprintf(id, sizeof(id), "j%07ld", i);
        aps_trigger_spec t = interval_spec(1, a->grid + (aps_time)(i * SEC / a->jobs));
        aps_job_spec spec = func_spec(id, &t, "lat");
        int rc = aps_job_add(a->s, &spec, NULL, NULL, &err);
        if (rc != 0)
            die("aps_job_add", rc, &err);
    }
    return NULL;
}

/* A user adding a job now and then while the loop is busy: a durable
 * aps_job_add (a date job a day ahead, never due in the run) every
 * PROBE_GAP_US, timed. The figures show how long a user's write waits
 * behind the loop's batches. */
#define PROBE_GAP_US 100000
#define PROBE_MAX 4096

typedef struct add_probe {
    aps_scheduler *s;
    aps_time until;
    int64_t v[PROBE_MAX];
    size_t n;
    pthread_t th;
} add_probe;

static void *
probe_main(void *arg)
{
    add_probe *p = arg;
    char id[32];
    aps_error err = {0, ""};
    aps_trigger_spec at;
    memset(&at, 0, sizeof(at));
    at.kind = APS_TRIGGER_DATE;
    while (p->n < PROBE_MAX && aps_time_now() < p->until) {
        snprintf(id, sizeof(id), "probe-%zu", p->n);
        at.u.date.run_date = aps_time_now() + 86400 * SEC;
        aps_job_spec spec = func_spec(id, &at, "lat");
        aps_time t0 = aps_time_now();
        int rc = aps_job_add(p->s, &spec, NULL, NULL, &err);
        if (rc != 0)
            die("aps_job_add (probe)", rc, &err);
        p->v[p->n++] = aps_time_now() - t0;
        usleep(PROBE_GAP_US);
    }
    return NULL;
}

/* The allocator this process runs with (the daemon's is mimalloc; the
 * _glibc build keeps the default): mimalloc exports mi_version. */
static const char *
malloc_name(void)
{
    return dlsym(RTLD_DEFAULT, "mi_version") != NULL ? "mimalloc" : "glibc";
}

static int
cmd_lateness(long jobs, int seconds, int warmup, const char *type, const char *base)
{
    char dir[PATH_MAX];
    lat_state L;
    int threads = strcmp(type, "lmdb") == 0 ? 128 : 2;

    memset(&L, 0, sizeof(L));
    L.cap = (size_t)jobs * (size_t)seconds + 16;
    L.v = malloc(L.cap * sizeof(*L.v));
    if (L.v == NULL)
        die("malloc", APS_ENOMEM, NULL);
    if (getenv("APS_BENCH_DUMP"))
        L.sched_at = malloc(L.cap * sizeof(*L.sched_at));
    make_dir(base_dir(base), "lateness", dir, sizeof(dir));
    /* As apscheduler_bench.py: misfire_grace_time 1 h (a late run still
     * runs and shows its lateness), max_instances 1000 (no skips). */
    const char *workers = getenv("APS_BENCH_WORKERS");
    aps_scheduler *s = open_sched(type, dir, workers ? (uint32_t)atoi(workers) : 10,
                                  (uint32_t)(jobs < 10000 ? 10000 : jobs), 1000, 3600 * SEC);
    aps_scheduler_register_function(s, "lat", lat_fn, &L);
    /* Interval jobs with start times G + i/jobs s. A job added after its
     * start date first fires on its next grid point (APScheduler's rule),
     * so a slow add phase only shifts the first fires. */
    aps_time grid = aps_time_now() + 1 * SEC + (aps_time)jobs * SEC / 20000;
    grid -= grid % SEC;
    lat_adder *ad = calloc((size_t)threads, sizeof(*ad));
    double t0 = mono_s();
    for (int i = 0; i < threads; i++) {
        ad[i] = (lat_adder){s, i, threads, jobs, grid, 0};
        pthread_create(&ad[i].th, NULL, lat_add_main, &ad[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(ad[i].th, NULL);
    double add_s = mono_s() - t0;
    free(ad);
    /* The window: whole seconds of the grid, WARMUP s after the start. */
    aps_time from = aps_time_now() + (aps_time)warmup * SEC;
    if (from < grid + (aps_time)warmup * SEC)
        from = grid + (aps_time)warmup * SEC;
    from = grid + (from - grid + SEC - 1) / SEC * SEC;
    L.from = from;
    L.to = from + (aps_time)seconds * SEC;
    int rc = aps_scheduler_start(s, APS_RUN_BACKGROUND);
    if (rc != 0)
        die("aps_scheduler_start", rc, NULL);
    sleep_until(from);
    add_probe *probe = calloc(1, sizeof(*probe));
    if (probe == NULL)
        die("calloc", APS_ENOMEM, NULL);
    probe->s = s;
    probe->until = L.to;
    pthread_create(&probe->th, NULL, probe_main, probe);
    double c0 = cpu_s(), w0 = mono_s();
    unsigned long k0 = atomic_load(&L.calls);
    uint64_t commits0, commits1;
    store_commits(s, &commits0);
    unsigned long long wb0 = io_write_bytes();
    sleep_until(L.to);
    double wall = mono_s() - w0, cpu = cpu_s() - c0;
    unsigned long k1 = atomic_load(&L.calls);
    store_commits(s, &commits1);
    unsigned long long wb1 = io_write_bytes();
    pthread_join(probe->th, NULL);
    /* Runs per second in the window, and the process's CPU time per run:
     * its cost, whatever else the machine runs. */
    double rate = (double)(k1 - k0) / wall;
    double us_per_run = k1 > k0 ? cpu * 1e6 / (double)(k1 - k0) : 0.0;
    /* Late runs of the window still count: wait for them a little. */
    aps_time deadline = L.to + 5 * SEC;
    size_t expected = (size_t)jobs * (size_t)seconds;
    while (aps_time_now() < deadline && atomic_load(&L.n) < expected)
        usleep(20000);
    size_t n = atomic_load(&L.n);
    aps_scheduler_destroy(s);
    rm_rf(dir);
    if (n > L.cap)
        n = L.cap;
    if (L.sched_at != NULL) {
        FILE *f = fopen(getenv("APS_BENCH_DUMP"), "w");
        for (size_t i = 0; f && i < n; i++)
            fprintf(f, "%" PRId64 " %" PRId64 "\n", L.sched_at[i] - L.from, L.v[i]);
        if (f)
            fclose(f);
        free(L.sched_at);
    }
    qsort(L.v, n, sizeof(*L.v), cmp_i64);
    qsort(probe->v, probe->n, sizeof(*probe->v), cmp_i64);
#define PCT(q) (n ? L.v[(size_t)((double)(n - 1) * (q))] : 0)
    printf("lateness store=%s malloc=%s jobs=%ld seconds=%d runs=%zu expected=%zu p50_us=%" PRId64
           " p90_us=%" PRId64 " p99_us=%" PRId64 " p999_us=%" PRId64 " max_us=%" PRId64
           " runs_per_s=%.0f cpu_cores=%.2f cpu_us_per_run=%.1f commits_per_s=%.0f"
           " write_kib_per_run=%.2f add_s=%.1f"
           " probe_adds=%zu probe_p50_us=%" PRId64 " probe_max_us=%" PRId64 "\n",
           type, malloc_name(), jobs, seconds, n, expected, PCT(0.5), PCT(0.9), PCT(0.99),
           PCT(0.999), n ? L.v[n - 1] : 0, rate, cpu / wall, us_per_run,
           (double)(commits1 - commits0) / wall,
           k1 > k0 ? (double)(wb1 - wb0) / 1024.0 / (double)(k1 - k0) : 0.0, add_s, probe->n,
           probe->n ? probe->v[(probe->n - 1) / 2] : 0, probe->n ? probe->v[probe->n - 1] : 0);
#undef PCT
    free(probe);
    free(L.v);
    return 0;
}


/* ---- the loop's cost per run, deterministic --------------------------------- */

/* An injected clock the bench moves by hand. */
static _Atomic aps_time fake_now;

static aps_time
fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static int
count_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
         size_t error_len)
{
    (void)job_id;
    (void)arg;
    (void)scheduled;
    (void)error;
    (void)error_len;
    atomic_fetch_add_explicit((atomic_ulong *)userdata, 1, memory_order_relaxed);
    return 0;
}

/* JOBS interval jobs (every second, offsets spread over the second) on an
 * injected clock, external mode: each round moves the clock one second on
 * and calls aps_scheduler_process until every job ran once. The CPU time
 * of the rounds (all threads) per run is the loop's cost at saturation,
 * free of timing noise; under callgrind the rounds alone are counted
 * (the setup's instructions are zeroed, the rounds' dumped as a part). */
static int
cmd_loopcost(long jobs, int rounds, const char *type, const char *base)
{
    char dir[PATH_MAX];
    aps_store_def store = {"default", type, NULL};
    aps_executor_def exec;
    aps_scheduler_config cfg;
    aps_clock clock = {fake_clock, NULL};
    aps_scheduler *s = NULL;
    aps_error err = {0, ""};
    atomic_ulong calls = 0;
    const char *workers = getenv("APS_BENCH_WORKERS");

    make_dir(base_dir(base), "loopcost", dir, sizeof(dir));
    store.path = dir;
    memset(&exec, 0, sizeof(exec));
    exec.name = "default";
    exec.type = "threadpool";
    exec.max_workers = workers ? (uint32_t)atoi(workers) : 10;
    exec.max_queue = (uint32_t)(jobs < 10000 ? 10000 : jobs);
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.executors = &exec;
    cfg.n_executors = 1;
    cfg.default_max_instances = 1000;
    cfg.default_misfire = APS_MISFIRE_DURATION;
    cfg.default_misfire_grace_us = 3600 * SEC;
    cfg.clock = &clock;
    cfg.no_sync = getenv("APS_BENCH_NO_SYNC") != NULL;
    aps_time t0 = 1700000000 * SEC;
    atomic_store(&fake_now, t0 - SEC);
    int rc = aps_scheduler_create(&cfg, &s, &err);
    if (rc != 0)
        die("aps_scheduler_create", rc, &err);
    aps_scheduler_register_function(s, "count", count_fn, &calls);
    for (long i = 0; i < jobs; i++) {
        char id[32];
        snprintf(id, sizeof(id), "j%07ld", i);
        aps_trigger_spec t = interval_spec(1, t0 + (aps_time)(i * SEC / jobs));
        aps_job_spec spec = func_spec(id, &t, "count");
        rc = aps_job_add(s, &spec, NULL, NULL, &err);
        if (rc != 0)
            die("aps_job_add", rc, &err);
    }
    rc = aps_scheduler_start(s, APS_RUN_EXTERNAL);
    if (rc != 0)
        die("aps_scheduler_start", rc, NULL);
    int fd = aps_scheduler_fd(s);
    unsigned long passes = 0;
#ifdef BENCH_CALLGRIND
    CALLGRIND_ZERO_STATS;
#endif
    double c0 = cpu_s(), w0 = mono_s();
    for (int r = 0; r < rounds; r++) {
        /* Every job's run of second r is due; the next one is not. */
        atomic_store(&fake_now, t0 + (aps_time)r * SEC + SEC - 1);
        unsigned long target = (unsigned long)jobs * (unsigned long)(r + 1);
        /* Until every run ran and its completion was recorded. */
        for (;;) {
            aps_scheduler_process(s, NULL);
            passes++;
            pthread_mutex_lock(&s->mu);
            size_t unrecorded = s->n_running;
            pthread_mutex_unlock(&s->mu);
            if (atomic_load(&calls) >= target && unrecorded == 0)
                break;
            struct pollfd p = {fd, POLLIN, 0};
            poll(&p, 1, 10);
        }
    }
    double cpu = cpu_s() - c0, wall = mono_s() - w0;
#ifdef BENCH_CALLGRIND
    CALLGRIND_DUMP_STATS_AT("rounds");
#endif
    unsigned long n = atomic_load(&calls);
    aps_scheduler_destroy(s);
    rm_rf(dir);
    printf("loopcost store=%s jobs=%ld rounds=%d runs=%lu passes=%lu cpu_us_per_run=%.2f "
           "wall_us_per_run=%.2f\n",
           type, jobs, rounds, n, passes, n ? cpu * 1e6 / (double)n : 0.0,
           n ? wall * 1e6 / (double)n : 0.0);
    return 0;
}

/* ---- a million jobs ----------------------------------------------------------- */

typedef struct mil_worker {
    aps_scheduler *s;
    atomic_long *next;
    long jobs;
    aps_time base;
    pthread_t th;
} mil_worker;

static void *
mil_main(void *arg)
{
    mil_worker *w = arg;
    char id[32];
    aps_error err = {0, ""};
    for (;;) {
        long i = atomic_fetch_add(w->next, 1);
        if (i >= w->jobs)
            break;
        /* Hourly jobs spread over the hour, none due during the test. */
        snprintf(id, sizeof(id), "job-%07ld", i);
        aps_trigger_spec t = interval_spec(3600, w->base + (aps_time)(i % 3600000) * 1000);
        aps_job_spec spec = func_spec(id, &t, "noop");
        int rc = aps_job_add(w->s, &spec, NULL, NULL, &err);
        if (rc != 0)
            die("aps_job_add", rc, &err);
    }
    return NULL;
}

/* Adds the job that must fire as soon as the store is opened again. */
static void
add_due_job(aps_scheduler *s)
{
    aps_trigger_spec t;
    aps_error err = {0, ""};
    memset(&t, 0, sizeof(t));
    t.kind = APS_TRIGGER_DATE;
    t.u.date.run_date = aps_time_now();
    aps_job_spec spec = func_spec("first-fire", &t, "first");
    spec.misfire = APS_MISFIRE_UNLIMITED;
    int rc = aps_job_add(s, &spec, NULL, NULL, &err);
    if (rc != 0)
        die("aps_job_add first-fire", rc, &err);
}

static int
cmd_million(long jobs, int threads, const char *base, const char *self)
{
    char dir[PATH_MAX], path[PATH_MAX + 16];
    atomic_long next = 0;
    long rss, hwm;
    struct stat st;

    make_dir(base_dir(base), "million", dir, sizeof(dir));
    aps_scheduler *s = open_sched("lmdb", dir, 0, 0, 0, 0);
    aps_scheduler_register_function(s, "noop", noop, NULL);
    int rc = aps_scheduler_start(s, APS_RUN_BACKGROUND);
    if (rc != 0)
        die("aps_scheduler_start", rc, NULL);
    mil_worker *w = calloc((size_t)threads, sizeof(*w));
    aps_time base_t = aps_time_now() + 3600 * SEC;
    double t0 = mono_s();
    for (int i = 0; i < threads; i++) {
        w[i] = (mil_worker){s, &next, jobs, base_t, 0};
        pthread_create(&w[i].th, NULL, mil_main, &w[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(w[i].th, NULL);
    double el = mono_s() - t0;
    free(w);
    mem_kib(&rss, &hwm);
    aps_scheduler_shutdown(s, 1);
    add_due_job(s);
    aps_scheduler_destroy(s);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    if (stat(path, &st) != 0) {
        perror(path);
        return 1;
    }
    printf("million jobs=%ld threads=%d add_s=%.1f per_s=%.0f file_mb=%.1f disk_mb=%.1f "
           "bytes_per_job=%.0f add_rss_mb=%.1f add_hwm_mb=%.1f\n",
           jobs, threads, el, (double)jobs / el, (double)st.st_size / 1048576.0,
           (double)st.st_blocks * 512.0 / 1048576.0, (double)st.st_blocks * 512.0 / (double)jobs,
           (double)rss / 1024.0, (double)hwm / 1024.0);
    fflush(stdout);
    /* Each reopen in a process of its own: its memory figures are its own. */
    const char *modes[] = {"warm", "cold"};
    for (int m = 0; m < 2; m++) {
        pid_t pid = fork();
        if (pid == 0) {
            execl(self, self, "reopen", dir, modes[m], (char *)NULL);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_engine: reopen %s failed\n", modes[m]);
            rc = 1;
        }
    }
    rm_rf(dir);
    return rc;
}

typedef struct first_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    aps_time fired;
} first_state;

static int
first_fn(const char *job_id, const char *arg, aps_time scheduled, void *userdata, char *error,
         size_t error_len)
{
    first_state *f = userdata;
    aps_time now = aps_time_now();
    (void)job_id;
    (void)arg;
    (void)scheduled;
    (void)error;
    (void)error_len;
    pthread_mutex_lock(&f->mu);
    if (f->fired == 0)
        f->fired = now;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static int
cmd_reopen(const char *dir, const char *mode)
{
    char path[PATH_MAX + 16];
    aps_error err = {0, ""};
    aps_scheduler *s = NULL;
    first_state f = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    long rss, hwm;

    if (strcmp(mode, "cold") == 0) {
        /* Drop this file's pages from the page cache (clean after the
         * previous close): the open reads from the disk, as after a boot. */
        snprintf(path, sizeof(path), "%s/data.mdb", dir);
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            fdatasync(fd);
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    aps_store_def store = {"default", "lmdb", dir};
    aps_scheduler_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = &store;
    cfg.n_stores = 1;

    aps_time t0 = aps_time_now();
    int rc = aps_scheduler_create(&cfg, &s, &err);
    if (rc != 0)
        die("aps_scheduler_create", rc, &err);
    aps_scheduler_register_function(s, "first", first_fn, &f);
    aps_scheduler_register_function(s, "noop", noop, NULL);
    aps_time t_created = aps_time_now();
    rc = aps_scheduler_start(s, APS_RUN_BACKGROUND);
    if (rc != 0)
        die("aps_scheduler_start", rc, NULL);
    aps_time t_started = aps_time_now();
    pthread_mutex_lock(&f.mu);
    while (f.fired == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 30;
        if (pthread_cond_timedwait(&f.cv, &f.mu, &ts) != 0)
            break;
    }
    aps_time fired = f.fired;
    pthread_mutex_unlock(&f.mu);
    mem_kib(&rss, &hwm);
    size_t count = 0;
    aps__store_count(s->stores[0].st, &count);
    aps_scheduler_shutdown(s, 1);
    add_due_job(s); /* for the next reopen */
    aps_scheduler_destroy(s);
    if (fired == 0) {
        fprintf(stderr, "bench_engine: the due job did not fire within 30 s\n");
        return 1;
    }
    printf("reopen cache=%s jobs=%zu create_ms=%.1f start_ms=%.1f first_fire_ms=%.1f "
           "rss_mb=%.1f hwm_mb=%.1f\n",
           mode, count, (double)(t_created - t0) / 1000.0, (double)(t_started - t0) / 1000.0,
           (double)(fired - t0) / 1000.0, (double)rss / 1024.0, (double)hwm / 1024.0);
    return 0;
}

/* ---- disk ------------------------------------------------------------------- */

#define DISK_PAGE 4096
#define DISK_FILE_PAGES 65536 /* 256 MiB */

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One round: `n` pages at `pg` (scattered: one pwrite each), or from pg[0]
 * in one pwrite (contiguous), then fdatasync; its time in ms. */
static double
disk_round(int fd, const unsigned char *buf, const long *pg, int n, int contiguous)
{
    double t0 = mono_s();

    if (contiguous) {
        if (pwrite(fd, buf, (size_t)n * DISK_PAGE, (off_t)pg[0] * DISK_PAGE) !=
            (ssize_t)n * DISK_PAGE)
            return -1;
    } else {
        for (int i = 0; i < n; i++)
            if (pwrite(fd, buf, DISK_PAGE, (off_t)pg[i] * DISK_PAGE) != DISK_PAGE)
                return -1;
    }
    if (fdatasync(fd))
        return -1;
    return (mono_s() - t0) * 1000.0;
}

static int
cmd_disk(int rounds, const char *base)
{
    static const int sizes[] = {1, 16, 64, 128};
    char dir[PATH_MAX], path[PATH_MAX + 8];
    unsigned char *buf = NULL;
    double *ms[2] = {NULL, NULL};
    long pg[128];
    int fd = -1, rc = 1;

    if (rounds < 1)
        rounds = 1;
    make_dir(base_dir(base), "disk", dir, sizeof(dir));
    snprintf(path, sizeof path, "%s/pages", dir);
    buf = malloc((size_t)128 * DISK_PAGE);
    ms[0] = calloc((size_t)rounds, sizeof(double));
    ms[1] = calloc((size_t)rounds, sizeof(double));
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (buf == NULL || ms[0] == NULL || ms[1] == NULL || fd < 0)
        goto out;
    memset(buf, 0xA5, (size_t)128 * DISK_PAGE);
    /* Real blocks first: writes into holes or unwritten extents would also
     * time the file system's block allocation. */
    for (long p = 0; p < DISK_FILE_PAGES; p += 128)
        if (pwrite(fd, buf, (size_t)128 * DISK_PAGE, (off_t)p * DISK_PAGE) != 128 * DISK_PAGE)
            goto out;
    if (fdatasync(fd))
        goto out;
    srand48(1);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int n = sizes[k];

        for (int r = 0; r < rounds; r++) {
            /* n distinct pages, in ascending order as LMDB writes them */
            for (int i = 0; i < n; i++) {
                int dup;
                do {
                    pg[i] = lrand48() % DISK_FILE_PAGES;
                    dup = 0;
                    for (int j = 0; j < i; j++)
                        dup |= pg[j] == pg[i];
                } while (dup);
            }
            for (int i = 1; i < n; i++)
                for (int j = i; j > 0 && pg[j - 1] > pg[j]; j--) {
                    long t = pg[j];
                    pg[j] = pg[j - 1];
                    pg[j - 1] = t;
                }
            ms[0][r] = disk_round(fd, buf, pg, n, 0);
            pg[0] = lrand48() % (DISK_FILE_PAGES - n);
            ms[1][r] = disk_round(fd, buf, pg, n, 1);
            if (ms[0][r] < 0 || ms[1][r] < 0)
                goto out;
        }
        qsort(ms[0], (size_t)rounds, sizeof(double), cmp_double);
        qsort(ms[1], (size_t)rounds, sizeof(double), cmp_double);
        printf("disk pages=%d rounds=%d scattered_ms=%.3f contiguous_ms=%.3f\n", n, rounds,
               ms[0][rounds / 2], ms[1][rounds / 2]);
    }
    rc = 0;
out:
    if (rc)
        perror("bench_engine disk");
    if (fd >= 0)
        close(fd);
    free(buf);
    free(ms[0]);
    free(ms[1]);
    rm_rf(dir);
    return rc;
}

/* ---- main ------------------------------------------------------------------- */

static void
usage(void)
{
    fprintf(stderr, "usage: bench_engine adds SECONDS THREADS [thread|seq [DIR]]\n"
                    "       bench_engine lateness JOBS SECONDS WARMUP lmdb|memory [DIR]\n"
                    "       bench_engine loopcost JOBS ROUNDS lmdb|memory [DIR]\n"
                    "       bench_engine million JOBS THREADS [DIR]\n"
                    "       bench_engine reopen DIR warm|cold\n"
                    "       bench_engine disk ROUNDS [DIR]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        usage();
    const char *cmd = argv[1];
    if (strcmp(cmd, "adds") == 0 && argc >= 4)
        return cmd_adds(atof(argv[2]), atoi(argv[3]), argc > 4 ? argv[4] : "thread",
                        argc > 5 ? argv[5] : NULL);
    if (strcmp(cmd, "lateness") == 0 && argc >= 6)
        return cmd_lateness(atol(argv[2]), atoi(argv[3]), atoi(argv[4]), argv[5],
                            argc > 6 ? argv[6] : NULL);
    if (strcmp(cmd, "loopcost") == 0 && argc >= 5)
        return cmd_loopcost(atol(argv[2]), atoi(argv[3]), argv[4], argc > 5 ? argv[5] : NULL);
    if (strcmp(cmd, "million") == 0 && argc >= 4) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
            return 1;
        self[n] = '\0';
        return cmd_million(atol(argv[2]), atoi(argv[3]), argc > 4 ? argv[4] : NULL, self);
    }
    if (strcmp(cmd, "reopen") == 0 && argc >= 4)
        return cmd_reopen(argv[2], argv[3]);
    if (strcmp(cmd, "disk") == 0 && argc >= 3)
        return cmd_disk(atoi(argv[2]), argc > 3 ? argv[3] : NULL);
    usage();
    return 2;
}
