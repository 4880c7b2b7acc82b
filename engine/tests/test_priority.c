/*
 * aps_scheduler_config.loop_priority: the loop thread waits for due times
 * at SCHED_FIFO, read back from /proc (the kernel's view, not ours):
 * - background mode: the thread named aps-loop has the policy and
 *   priority asked for, and aps_scheduler_loop_priority() says so; without
 *   it, normal scheduling;
 * - blocking mode: the caller's thread runs at it and gets its own
 *   scheduling back when start returns;
 * - a backlog: the loop drops to normal priority while working through
 *   50,000 due runs, takes the priority again once it sleeps, and every
 *   run happens;
 * - the commit-ahead thread (LMDB store): the same when it hands on
 *   50,000 runs committed ahead of one fire time;
 * - refused (a child without CAP_SYS_NICE and RLIMIT_RTPRIO 0): the loop
 *   runs at normal priority, the call reports 0, jobs still fire;
 * - out of range: APS_EINVAL naming the field.
 * Parts that need the privilege are skipped, with a message, without it;
 * the backlog part under valgrind, which runs one thread at a time.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "scheduler.h"
#include "testutil.h"

#define PRIO 5

/* Runs of the "count" function (tu_count_fn). */
static int priority_test_runs;

/* The scheduling policy and real-time priority of thread `tid` of this
 * process, from /proc/self/task/TID/stat (fields 41 and 40). */
static int
thread_sched(long tid, int *policy, int *prio)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", tid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL)
        return -1;
    /* After ") " comes field 3; field 40 is the 38th token from there. */
    int field = 3;
    for (char *tok = strtok(p + 2, " "); tok != NULL; tok = strtok(NULL, " "), field++) {
        if (field == 40)
            *prio = atoi(tok);
        if (field == 41) {
            *policy = atoi(tok);
            return 0;
        }
    }
    return -1;
}

/* The id of this process's thread named `name`; -1 if none. */
static long
thread_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    long found = -1;
    struct dirent *e;
    assert_non_null(d);
    while (found < 0 && (e = readdir(d)) != NULL) {
        char path[300], comm[64] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(comm, sizeof(comm), f) != NULL) {
            comm[strcspn(comm, "\n")] = '\0';
            if (strcmp(comm, name) == 0)
                found = atol(e->d_name);
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

/* Whether this process may use SCHED_FIFO at PRIO. */
static int
may_rt(void)
{
    struct rlimit rl;
    return geteuid() == 0 || (getrlimit(RLIMIT_RTPRIO, &rl) == 0 && rl.rlim_cur >= PRIO);
}

/* A scheduler with one store and two thread pools ("default",
 * "second"); commit-ahead as
 * aps_scheduler_config.commit_ahead_us (LMDB stores only). */
static aps_scheduler *
make_in(const aps_store_def *store, int prio, int max_workers, int64_t ahead_us)
{
    aps_executor_def exec[2] = {
        {.name = "default", .type = "threadpool", .max_queue = 200000},
        {.name = "second", .type = "threadpool", .max_queue = 200000},
    };
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    exec[0].max_workers = exec[1].max_workers = (uint32_t)max_workers;
    memset(&cfg, 0, sizeof(cfg));
    cfg.stores = store;
    cfg.n_stores = 1;
    cfg.executors = exec;
    cfg.n_executors = 2;
    cfg.default_misfire = APS_MISFIRE_UNLIMITED;
    cfg.loop_priority = prio;
    cfg.commit_ahead_us = ahead_us; /* fsync on: no_sync stores commit nothing ahead */
    if (aps_scheduler_create(&cfg, &s, &err) != 0)
        fail_msg("create: %s", err.msg);
    if (aps_scheduler_register_function(s, "count", tu_count_fn, &priority_test_runs) != 0)
        fail_msg("register_function");
    return s;
}

static aps_scheduler *
make(int prio, int max_workers)
{
    static aps_store_def store = {"default", "memory", NULL};
    return make_in(&store, prio, max_workers, 0);
}

/* Adds date jobs d0..d(n-1) due at `when`. */
static void
add_dates(aps_scheduler *s, int n, aps_time when)
{
    for (int i = 0; i < n; i++) {
        char id[16];
        aps_trigger_spec t = tu_date(when);
        snprintf(id, sizeof(id), "d%d", i);
        aps_job_spec j = tu_function_job(id, &t, "count", NULL);
        tu_job_add(s, &j);
    }
}

/* Waits up to `ms` for `n` runs. */
static int
wait_runs(int n, int ms)
{
    for (int i = 0; i < ms && __atomic_load_n(&priority_test_runs, __ATOMIC_SEQ_CST) < n; i++)
        usleep(1000);
    return __atomic_load_n(&priority_test_runs, __ATOMIC_SEQ_CST) >= n;
}

static void
test_range(void **state)
{
    (void)state;
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = (aps_scheduler *)1;
    memset(&cfg, 0, sizeof(cfg));
    cfg.loop_priority = 100;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "loop_priority"));
    cfg.loop_priority = -1;
    assert_int_equal(aps_scheduler_create(&cfg, &s, &err), APS_EINVAL);
    assert_non_null(strstr(err.msg, "loop_priority"));
    assert_int_equal(aps_scheduler_loop_priority(NULL), 0);
}

static void
test_background(void **state)
{
    (void)state;
    int policy = -1, prio = -1;
    if (!may_rt()) {
        print_message("skipped: no CAP_SYS_NICE and RLIMIT_RTPRIO < %d\n", PRIO);
        return;
    }
    aps_scheduler *s = make(PRIO, 2);
    assert_int_equal(aps_scheduler_loop_priority(s), 0); /* not started */
    priority_test_runs = 0;
    add_dates(s, 3, aps_time_now() + 200000);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    assert_int_equal(aps_scheduler_loop_priority(s), PRIO);
    long tid = thread_named("aps-loop");
    assert_true(tid > 0);
    assert_int_equal(thread_sched(tid, &policy, &prio), 0);
    assert_int_equal(policy, SCHED_FIFO);
    assert_int_equal(prio, PRIO);
    assert_true(wait_runs(3, 5000));
    /* Sleeping again after the runs: still at the priority. */
    usleep(20000);
    assert_int_equal(thread_sched(tid, &policy, &prio), 0);
    assert_int_equal(policy, SCHED_FIFO);
    aps_scheduler_destroy(s);

    /* Not asked for: normal scheduling. */
    s = make(0, 2);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    assert_int_equal(aps_scheduler_loop_priority(s), 0);
    tid = thread_named("aps-loop");
    assert_true(tid > 0);
    assert_int_equal(thread_sched(tid, &policy, &prio), 0);
    assert_int_equal(policy, SCHED_OTHER);
    assert_int_equal(prio, 0);
    aps_scheduler_destroy(s);
}

typedef struct blocking_arg {
    aps_scheduler *s;
    long tid;
    int rc, policy_after, prio_after;
} blocking_arg;

static void *
blocking_main(void *p)
{
    blocking_arg *a = p;
    struct sched_param sp;
    __atomic_store_n(&a->tid, (long)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
    a->rc = aps_scheduler_start(a->s, APS_RUN_BLOCKING);
    pthread_getschedparam(pthread_self(), &a->policy_after, &sp);
    a->prio_after = sp.sched_priority;
    return NULL;
}

static void
test_blocking(void **state)
{
    (void)state;
    if (!may_rt()) {
        print_message("skipped: no CAP_SYS_NICE and RLIMIT_RTPRIO < %d\n", PRIO);
        return;
    }
    blocking_arg a = {.s = make(PRIO, 2), .tid = 0, .rc = -1};
    pthread_t t;
    int policy = -1, prio = -1;
    priority_test_runs = 0;
    add_dates(a.s, 2, aps_time_now() + 100000);
    assert_int_equal(pthread_create(&t, NULL, blocking_main, &a), 0);
    assert_true(wait_runs(2, 5000));
    assert_int_equal(aps_scheduler_loop_priority(a.s), PRIO);
    assert_int_equal(thread_sched(__atomic_load_n(&a.tid, __ATOMIC_SEQ_CST), &policy, &prio), 0);
    assert_int_equal(policy, SCHED_FIFO);
    assert_int_equal(prio, PRIO);
    assert_int_equal(aps_scheduler_shutdown(a.s, 1), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.policy_after, SCHED_OTHER);
    assert_int_equal(a.prio_after, 0);
    assert_int_equal(aps_scheduler_loop_priority(a.s), 0);
    aps_scheduler_destroy(a.s);
}

/* Whether a backlog test can run here, saying why not: it needs SCHED_FIFO,
 * and not valgrind, which runs one thread at a time (a SCHED_FIFO thread
 * keeps the sampling thread from running while it has the priority). */
static int
backlog_test_runs(void)
{
    if (!may_rt()) {
        print_message("skipped: no CAP_SYS_NICE and RLIMIT_RTPRIO < %d\n", PRIO);
        return 0;
    }
    const char *pre = getenv("LD_PRELOAD");
    if (pre != NULL && strstr(pre, "vgpreload") != NULL) {
        print_message("under valgrind: skipped\n");
        return 0;
    }
    return 1;
}

/* Whether thread `tid` is at SCHED_FIFO PRIO again within 5 s. */
static int
back_at_priority(long tid)
{
    int policy = -1, prio = -1;
    for (int i = 0; i < 5000; i++) {
        if (thread_sched(tid, &policy, &prio) == 0 && policy == SCHED_FIFO && prio == PRIO)
            return 1;
        usleep(1000);
    }
    return 0;
}

static void
test_backlog_drops_priority(void **state)
{
    (void)state;
    const int n = 50000;
    int policy = -1, prio = -1, saw_normal = 0, saw_rt = 0;
    if (!backlog_test_runs())
        return;
    aps_scheduler *s = make(PRIO, 4);
    priority_test_runs = 0;
    add_dates(s, n, aps_time_now());
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    long tid = thread_named("aps-loop");
    assert_true(tid > 0);
    /* Sample the loop's policy while the 50,000 due runs go through. */
    int samples = 0;
    aps_time t0 = aps_time_now();
    for (int i = 0; i < 120000 && __atomic_load_n(&priority_test_runs, __ATOMIC_SEQ_CST) < n;
         i++) {
        if (thread_sched(tid, &policy, &prio) == 0) {
            samples++;
            saw_normal |= policy == SCHED_OTHER;
            saw_rt |= policy == SCHED_FIFO;
        }
        usleep(500);
    }
    assert_int_equal(__atomic_load_n(&priority_test_runs, __ATOMIC_SEQ_CST), n);
    print_message("backlog of %d runs, %.0f ms: loop seen at normal priority %s, at SCHED_FIFO "
                  "%s (%d samples)\n",
                  n, (double)(aps_time_now() - t0) / 1000.0, saw_normal ? "yes" : "no",
                  saw_rt ? "yes" : "no", samples);
    assert_true(saw_normal);
    /* Caught up and asleep: at the priority again. */
    assert_true(back_at_priority(tid));
    aps_scheduler_destroy(s);
}

/* aps_job_add_async adds in flight, and those that failed. */
static int adds_left, adds_failed;

static void
add_done(void *userdata, int rc, aps_job *job, const aps_error *err)
{
    (void)userdata;
    (void)err;
    if (rc != 0)
        __atomic_fetch_add(&adds_failed, 1, __ATOMIC_SEQ_CST);
    aps_job_free(job);
    __atomic_fetch_sub(&adds_left, 1, __ATOMIC_SEQ_CST);
}

/* How long adding the jobs and committing their runs ahead may take. */
#if defined(__SANITIZE_ADDRESS__)
#define HOLD_LEAD_S 20
#else
#define HOLD_LEAD_S 6
#endif

/* The commit-ahead thread: N runs of an LMDB store, all committed ahead
 * of one fire time, are handed on by it at that time. It waits for that
 * time at SCHED_FIFO, drops to normal priority while it works through
 * them (busy for rt_busy_us, shortened to 2 ms here: how fast 50 ms of
 * handing on goes depends on the machine and its load), and takes the
 * priority again once it waits again; every run happens. */
static void
test_hold_backlog_drops_priority(void **state)
{
    (void)state;
    enum { N = 50000 };
    const aps_time SEC = 1000000;
    int policy = -1, prio = -1, saw_normal = 0;
    if (!backlog_test_runs())
        return;
    aps_store_def store = {"default", "lmdb", tu_tmpdir("priority_hold")};
    aps_scheduler *s = make_in(&store, PRIO, 2, 600 * SEC);
    s->rt_busy_us = 2000;
    priority_test_runs = 0;
    adds_left = N;
    adds_failed = 0;
    /* Far enough ahead for the adds and the loop's commits of every run
     * (sanitizers included); all within the commit-ahead window. */
    aps_time when = aps_time_now() + HOLD_LEAD_S * SEC;
    for (int i = 0; i < N; i++) {
        char id[16];
        aps_trigger_spec t = tu_date(when);
        snprintf(id, sizeof(id), "h%d", i);
        aps_job_spec j = tu_function_job(id, &t, "count", NULL);
        /* Runs of two executors, mixed: handed on one by one (those of one
         * executor in a row go in one call), the slower way. */
        j.executor = i % 2 ? "second" : "default";
        aps_job_add_async(s, &j, NULL, add_done, NULL);
    }
    for (int i = 0; i < 60000 && __atomic_load_n(&adds_left, __ATOMIC_SEQ_CST) > 0; i++)
        usleep(1000);
    assert_int_equal(__atomic_load_n(&adds_left, __ATOMIC_SEQ_CST), 0);
    assert_int_equal(adds_failed, 0);
    aps_time added = aps_time_now();
    assert_int_equal(aps_scheduler_start(s, APS_RUN_BACKGROUND), 0);
    long tid = thread_named("aps-hold");
    assert_true(tid > 0);
    /* Before the time: every run committed and held (none run early), the
     * thread waiting at the priority. */
    /* (Each job stays until its run is handed on, out of the due index.) */
    size_t jobs = 0, due = 0;
    for (int i = 0; i < 60000 && aps_time_now() < when - SEC; i++) {
        assert_int_equal(aps__store_counts(s->stores[0].st, &jobs, &due), 0);
        if (due == 0)
            break;
        usleep(1000);
    }
    assert_int_equal(aps__store_counts(s->stores[0].st, &jobs, &due), 0);
    if (due != 0)
        fail_msg("%zu jobs not committed ahead %.1f s after start", due,
                 (double)(aps_time_now() - added) / 1e6);
    /* Held (their runs reach the hold queue just after each commit), they
     * have their run time: none counts as paused. */
    aps_store_info info;
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(aps_scheduler_store_info(s, 0, &info), 0);
        if (info.unscheduled == 0 || aps_time_now() >= when)
            break;
        usleep(1000);
    }
    assert_int_equal(info.jobs, N);
    assert_int_equal(info.unscheduled, 0);
    assert_true(info.next_run_time == when);
    print_message("%d adds and commits ahead: %.1f s + %.1f s\n", N,
                  (double)(added + HOLD_LEAD_S * SEC - when) / 1e6,
                  (double)(aps_time_now() - added) / 1e6);
    assert_int_equal(__atomic_load_n(&priority_test_runs, __ATOMIC_SEQ_CST), 0);
    assert_int_equal(thread_sched(tid, &policy, &prio), 0);
    assert_int_equal(policy, SCHED_FIFO);
    assert_int_equal(prio, PRIO);
    /* At the time: sample the thread while it hands the runs on, from
     * above its priority: at normal priority this thread could be kept off
     * both cores by real-time threads (of tests running beside this one)
     * for just that window. */
    struct sched_param sp_rt = {.sched_priority = PRIO + 1}, sp_old;
    int old_policy = SCHED_OTHER;
    assert_int_equal(pthread_getschedparam(pthread_self(), &old_policy, &sp_old), 0);
    assert_int_equal(pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp_rt), 0);
    while (aps_time_now() < when)
        usleep(200);
    int samples = 0;
    for (int i = 0; i < 120000 && __atomic_load_n(&priority_test_runs, __ATOMIC_SEQ_CST) < N;
         i++) {
        if (thread_sched(tid, &policy, &prio) == 0) {
            samples++;
            saw_normal |= policy == SCHED_OTHER;
        }
        usleep(200);
    }
    assert_int_equal(pthread_setschedparam(pthread_self(), old_policy, &sp_old), 0);
    assert_int_equal(__atomic_load_n(&priority_test_runs, __ATOMIC_SEQ_CST), N);
    print_message("%d held runs handed on in %.0f ms: commit-ahead thread seen at normal "
                  "priority %s (%d samples)\n",
                  N, (double)(aps_time_now() - when) / 1000.0, saw_normal ? "yes" : "no", samples);
    assert_true(saw_normal);
    /* Done and waiting: at the priority again. */
    assert_true(back_at_priority(tid));
    aps_scheduler_destroy(s);
}

/* In a child without the privilege: the loop runs at normal priority. */
static int
refused_child(void)
{
    struct rlimit rl = {0, 0};
    int policy = -1, prio = -1;
    if (setrlimit(RLIMIT_RTPRIO, &rl) != 0)
        return 10;
    /* Root keeps CAP_SYS_NICE: become nobody, which drops every capability. */
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
        return 11;
    aps_scheduler *s = make(PRIO, 2);
    priority_test_runs = 0;
    add_dates(s, 2, aps_time_now() + 50000);
    if (aps_scheduler_start(s, APS_RUN_BACKGROUND) != 0)
        return 12;
    if (aps_scheduler_loop_priority(s) != 0)
        return 13;
    long tid = thread_named("aps-loop");
    if (tid <= 0 || thread_sched(tid, &policy, &prio) != 0 || policy != SCHED_OTHER)
        return 14;
    if (!wait_runs(2, 5000))
        return 15;
    aps_scheduler_destroy(s);
    return 0;
}

static void
test_refused(void **state)
{
    (void)state;
    int st = 0;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(refused_child());
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_background),
        cmocka_unit_test(test_blocking),
        cmocka_unit_test(test_backlog_drops_priority),
        cmocka_unit_test(test_hold_backlog_drops_priority),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
