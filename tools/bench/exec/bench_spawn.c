/*
 * bench_spawn: what the process executor ("processpool") costs per command,
 * against a plain fork+execve+waitpid loop in the same process and run.
 *
 *   bench_spawn [--count N] [--latency M] [--workers W] [--program PATH]
 *
 * Four measurements of `/bin/true` (default N = 5000, M = 1000, W = 16):
 *  - burst: N commands submitted at once through an executor of W workers,
 *    against loops keeping W children in flight (waitpid(-1));
 *  - one at a time: submit, wait for the finished run, repeat (M times),
 *    against start+waitpid in a loop; per-run latency p50 and p99.
 * Two plain loops: fork+execve+waitpid (the classic), and posix_spawn+
 * waitpid (glibc's clone(CLONE_VFORK), what the executor itself uses). The
 * executor does more per command than either (two pipes read to EOF, a
 * pidfd, a process group, the misfire check, the hand-back to the
 * scheduler), so the posix_spawn loop is its floor; fork copies the
 * parent's page tables and is slower than both.
 *
 * Output: a table on stdout; with --tsv, "metric<TAB>executor<TAB>fork<TAB>spawn".
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "apsd/engine.h"
#include "exec.h"
#include "exec_process.h"
#include "job.h"
#include "scheduler.h"

static aps_scheduler *sched;
static const char *program = "/bin/true";

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
die(const char *what, int rc)
{
    fprintf(stderr, "bench_spawn: %s: %s\n", what, aps_strerror(rc));
    exit(1);
}

static aps__run *
new_run(unsigned n)
{
    char *argv[] = {(char *)program};
    aps_target t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TARGET_COMMAND;
    t.u.command.argv = argv;
    t.u.command.argc = 1;
    aps__run *run = calloc(1, sizeof(*run));
    if (run == NULL)
        die("run", APS_ENOMEM);
    snprintf(run->run_id, sizeof(run->run_id), "%032x", n);
    run->job_id = strdup("bench");
    run->jobstore = strdup("default");
    run->executor = strdup("bench");
    run->run_times = malloc(sizeof(aps_time));
    run->results = calloc(1, sizeof(*run->results));
    if (run->job_id == NULL || run->jobstore == NULL || run->executor == NULL ||
        run->run_times == NULL || run->results == NULL || aps__target_copy(&t, &run->target))
        die("run", APS_ENOMEM);
    run->run_times[0] = aps_time_now();
    run->n_run_times = 1;
    run->unlimited_grace = 1;
    run->sched = sched;
    return run;
}

/* Waits until `want` runs finished; frees them, counts failures. */
static size_t
reap_runs(size_t want)
{
    size_t got = 0, failed = 0;
    while (got < want) {
        pthread_mutex_lock(&sched->mu);
        aps__run *list = sched->completed;
        sched->completed = NULL;
        pthread_mutex_unlock(&sched->mu);
        if (list == NULL) {
            struct pollfd pfd = {sched->wake_fd, POLLIN, 0};
            if (poll(&pfd, 1, 1000) > 0) {
                uint64_t v;
                ssize_t n = read(sched->wake_fd, &v, sizeof(v));
                (void)n;
            }
            continue;
        }
        while (list != NULL) {
            aps__run *next = list->next;
            if (list->results[0].outcome.status != APS_RUN_SUCCEEDED) {
                if (failed++ == 0)
                    fprintf(stderr, "bench_spawn: a run failed: %s\n",
                            list->results[0].outcome.error ? list->results[0].outcome.error : "?");
            }
            aps__run_free(list);
            got++;
            list = next;
        }
    }
    return failed;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the plain loops ------------------------------------------------------- */

static char *const plain_env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};

static int use_spawn; /* the plain loops: 0 fork+execve, 1 posix_spawn */

static pid_t
plain_start(void)
{
    char *const argv[] = {(char *)program, NULL};
    if (use_spawn) {
        pid_t pid;
        int e = posix_spawn(&pid, program, NULL, NULL, argv, plain_env);
        if (e != 0) {
            fprintf(stderr, "posix_spawn: %s\n", strerror(e));
            exit(1);
        }
        return pid;
    }
    pid_t pid = fork();
    if (pid == 0) {
        execve(program, argv, plain_env);
        _exit(127);
    }
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    return pid;
}

static void
plain_wait(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench_spawn: %s failed\n", program);
        exit(1);
    }
}

/* N commands with `width` in flight; commands per second. waitpid(-1) is
 * safe here: the executors have no children while the plain loops run. */
static double
plain_burst(size_t n, unsigned width)
{
    int64_t t0 = mono_us();
    size_t started = 0, done = 0;
    unsigned running = 0;
    while (done < n) {
        while (running < width && started < n) {
            plain_start();
            started++;
            running++;
        }
        plain_wait(-1);
        running--;
        done++;
    }
    return (double)n * 1e6 / (double)(mono_us() - t0);
}

static void
plain_serial(size_t m, int64_t *lat)
{
    for (size_t i = 0; i < m; i++) {
        int64_t t0 = mono_us();
        plain_wait(plain_start());
        lat[i] = mono_us() - t0;
    }
}

/* ---- through the executor ------------------------------------------------------- */

static double
exec_burst(aps__executor *ex, size_t n, unsigned *seq)
{
    int64_t t0 = mono_us();
    for (size_t i = 0; i < n; i++) {
        int rc = ex->ops->submit(ex, new_run((*seq)++));
        if (rc != 0)
            die("submit", rc);
    }
    if (reap_runs(n) != 0)
        exit(1);
    return (double)n * 1e6 / (double)(mono_us() - t0);
}

static void
exec_serial(aps__executor *ex, size_t m, int64_t *lat, unsigned *seq)
{
    for (size_t i = 0; i < m; i++) {
        int64_t t0 = mono_us();
        int rc = ex->ops->submit(ex, new_run((*seq)++));
        if (rc != 0)
            die("submit", rc);
        if (reap_runs(1) != 0)
            exit(1);
        lat[i] = mono_us() - t0;
    }
}

/* The ratios are the executor's figure over each plain loop's: for rates
 * above 1 is faster, for times above 1 is slower. */
static void
row(int tsv, const char *metric, double exec, double fork_, double spawn, const char *unit)
{
    if (tsv) {
        printf("%s\t%.1f\t%.1f\t%.1f\n", metric, exec, fork_, spawn);
        return;
    }
    printf("%-32s %10.0f %10.0f %10.0f %-6s %8.2fx %8.2fx\n", metric, exec, fork_, spawn, unit,
           fork_ > 0 ? exec / fork_ : 0, spawn > 0 ? exec / spawn : 0);
}

int
main(int argc, char **argv)
{
    size_t n = 5000, m = 1000;
    unsigned workers = 16;
    int tsv = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
            n = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--latency") == 0 && i + 1 < argc)
            m = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc)
            workers = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--program") == 0 && i + 1 < argc)
            program = argv[++i];
        else if (strcmp(argv[i], "--tsv") == 0)
            tsv = 1;
        else {
            fprintf(stderr, "usage: bench_spawn [--count N] [--latency M] [--workers W] "
                            "[--program PATH] [--tsv]\n");
            return 2;
        }
    }
    if (n == 0 || m == 0 || workers == 0)
        return 2;

    aps_scheduler_config cfg;
    aps_error err;
    memset(&cfg, 0, sizeof(cfg));
    int rc = aps_scheduler_create(&cfg, &sched, &err);
    if (rc != 0)
        die(err.msg, rc);
    aps_executor_def def = {.name = "bench", .type = "processpool", .max_workers = workers,
                            .max_queue = (uint32_t)n};
    aps__executor *ex = NULL;
    rc = aps__executor_process_create(sched, &def, &ex, &err);
    if (rc != 0)
        die(err.msg, rc);
    aps__executor *ex1 = NULL;
    aps_executor_def def1 = def;
    def1.name = "bench1";
    def1.max_workers = 1;
    rc = aps__executor_process_create(sched, &def1, &ex1, &err);
    if (rc != 0)
        die(err.msg, rc);

    unsigned seq = 0;
    int64_t *lat[3];
    for (int k = 0; k < 3; k++) {
        lat[k] = malloc(m * sizeof(*lat[k]));
        if (lat[k] == NULL)
            die("latency", APS_ENOMEM);
    }

    /* Warm every path (page cache, allocator) first. */
    exec_burst(ex, workers * 4, &seq);
    plain_burst(workers * 4, workers);
    use_spawn = 1;
    plain_burst(workers * 4, workers);

    /* [0] executor, [1] fork+execve, [2] posix_spawn */
    double burst[3], serial[3], p50[3], p99[3];
    burst[0] = exec_burst(ex, n, &seq);
    use_spawn = 0;
    burst[1] = plain_burst(n, workers);
    use_spawn = 1;
    burst[2] = plain_burst(n, workers);
    exec_serial(ex1, m, lat[0], &seq);
    use_spawn = 0;
    plain_serial(m, lat[1]);
    use_spawn = 1;
    plain_serial(m, lat[2]);
    for (int k = 0; k < 3; k++) {
        int64_t sum = 0;
        for (size_t i = 0; i < m; i++)
            sum += lat[k][i];
        serial[k] = (double)m * 1e6 / (double)sum;
        qsort(lat[k], m, sizeof(*lat[k]), cmp_i64);
        p50[k] = (double)lat[k][m / 2];
        p99[k] = (double)lat[k][m * 99 / 100];
    }
    aps__process_stats st;
    aps__executor_process_stats(ex, &st);

    if (!tsv) {
        printf("%s through the process executor (reaper %s) vs fork+execve+waitpid\n",
               program, st.reaper == APS__REAP_PIDFD ? "pidfd" : "signalfd");
        printf("%-32s %10s %10s %10s %-6s %9s %9s\n", "metric", "executor", "fork+exec",
               "spawn", "unit", "vs fork", "vs spawn");
        printf("%-32s %10s %10s %10s %-6s %9s %9s\n", "--------------------------------",
               "----------", "----------", "----------", "------", "---------", "---------");
    }
    char label[64];
    snprintf(label, sizeof(label), "burst of %zu, %u in flight", n, workers);
    row(tsv, label, burst[0], burst[1], burst[2], "cmd/s");
    row(tsv, "one at a time", serial[0], serial[1], serial[2], "cmd/s");
    row(tsv, "one at a time, latency p50", p50[0], p50[1], p50[2], "us");
    row(tsv, "one at a time, latency p99", p99[0], p99[1], p99[2], "us");
    if (!tsv) {
        printf("\nend-to-end overhead per run (one at a time, p50): %+.0f us vs fork+exec+waitpid, "
               "%+.0f us vs posix_spawn+waitpid; peak children %u of %u\n",
               p50[0] - p50[1], p50[0] - p50[2], st.peak_children, workers);
    }

    ex->ops->shutdown(ex, 1);
    ex->ops->destroy(ex);
    ex1->ops->shutdown(ex1, 1);
    ex1->ops->destroy(ex1);
    aps_scheduler_destroy(sched);
    for (int k = 0; k < 3; k++)
        free(lat[k]);
    return 0;
}
