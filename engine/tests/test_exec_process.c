/*
 * The process executor ("processpool", exec_process.c) with real processes:
 * exit codes, signals, timeouts that kill the whole process group (also
 * when it ignores SIGTERM), output tails capped exactly, spawn failures,
 * a burst of 1,000 commands through a pool of 16, the allow-list, run-as
 * and rlimits, env and cwd, misfire at start, several run times, cancel,
 * children that close or leak their pipes, shutdown with and without wait,
 * the signalfd fallback, the queue limit, and the whole path through the
 * scheduler API.
 *
 * Runs are handed to the executor directly; finished runs are taken off the
 * (unstarted) scheduler's completion list, so every field of every result
 * can be checked, and every run is seen to finish exactly once.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "exec.h"
#include "exec_process.h"
#include "job.h"
#include "scheduler.h"

#define SEC INT64_C(1000000)
#define MS INT64_C(1000)

/* ---- a scheduler that only collects finished runs --------------------------- */

static pthread_mutex_t clock_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t clock_offset; /* added to the real clock: misfire tests jump ahead */

static aps_time
clock_now(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&clock_mu);
    int64_t off = clock_offset;
    pthread_mutex_unlock(&clock_mu);
    return aps_time_now() + off;
}

static void
advance_clock(int64_t us)
{
    pthread_mutex_lock(&clock_mu);
    clock_offset += us;
    pthread_mutex_unlock(&clock_mu);
}

static const aps_clock test_clock = {clock_now, NULL};
static aps_scheduler *sched;

/* Finished runs taken off the scheduler, not yet claimed by a test. */
static aps__run *done_list[4096];
static size_t n_done;
static unsigned run_counter;

static void
collect(void)
{
    pthread_mutex_lock(&sched->mu);
    aps__run *list = sched->completed;
    sched->completed = NULL;
    pthread_mutex_unlock(&sched->mu);
    while (list != NULL) {
        aps__run *next = list->next;
        assert_true(n_done < 4096);
        done_list[n_done++] = list;
        list = next;
    }
}

static aps__run *
take(const char *run_id)
{
    collect();
    for (size_t i = 0; i < n_done; i++) {
        if (strcmp(done_list[i]->run_id, run_id) == 0) {
            aps__run *r = done_list[i];
            done_list[i] = done_list[--n_done];
            return r;
        }
    }
    return NULL;
}

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec / 1000;
}

/* Waits up to `timeout` for the run to finish; fails the test otherwise. */
static aps__run *
wait_run(const char *run_id, int64_t timeout)
{
    int64_t end = mono_us() + timeout;
    for (;;) {
        aps__run *r = take(run_id);
        if (r != NULL)
            return r;
        if (mono_us() > end)
            fail_msg("run %s did not finish within %lld ms", run_id, (long long)(timeout / MS));
        struct pollfd pfd = {sched->wake_fd, POLLIN, 0};
        if (poll(&pfd, 1, 20) > 0) {
            uint64_t v;
            ssize_t n = read(sched->wake_fd, &v, sizeof(v));
            (void)n;
        }
    }
}

static int
setup(void **state)
{
    (void)state;
    aps_scheduler_config cfg;
    aps_error err;
    memset(&cfg, 0, sizeof(cfg));
    cfg.clock = &test_clock;
    if (aps_scheduler_create(&cfg, &sched, &err) != 0)
        fail_msg("scheduler: %s", err.msg);
    clock_offset = 0;
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    collect();
    /* Every run was claimed: none finished twice or went unnoticed. */
    assert_int_equal(n_done, 0);
    aps_scheduler_destroy(sched);
    sched = NULL;
    return 0;
}

/* ---- building runs ---------------------------------------------------------- */

typedef struct cmd_opts {
    const char *const *env;
    size_t envc;
    const char *cwd;
    int64_t timeout_us;
    uint32_t max_output;
} cmd_opts;

static aps__run *
new_run_at(const aps_time *rts, size_t n, int64_t grace_us, const cmd_opts *o, const char *argv0,
           ...)
{
    const char *argv[32];
    size_t argc = 0;
    va_list ap;
    va_start(ap, argv0);
    for (const char *a = argv0; a != NULL; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);

    aps_target t;
    memset(&t, 0, sizeof(t));
    t.kind = APS_TARGET_COMMAND;
    t.u.command.argv = (char **)argv;
    t.u.command.argc = argc;
    if (o != NULL) {
        t.u.command.env = (char **)o->env;
        t.u.command.envc = o->envc;
        t.u.command.cwd = (char *)o->cwd;
        t.u.command.timeout_us = o->timeout_us;
        t.u.command.max_output = o->max_output;
    }
    aps__run *run = calloc(1, sizeof(*run));
    assert_non_null(run);
    snprintf(run->run_id, sizeof(run->run_id), "%032x", ++run_counter);
    run->job_id = strdup("job");
    run->jobstore = strdup("default");
    run->executor = strdup("proc");
    assert_int_equal(aps__target_copy(&t, &run->target), 0);
    run->run_times = malloc(n * sizeof(aps_time));
    run->results = calloc(n, sizeof(*run->results));
    memcpy(run->run_times, rts, n * sizeof(aps_time));
    run->n_run_times = n;
    run->grace_us = grace_us;
    run->sched = sched;
    return run;
}

#define new_run(o, ...) new_run_now((o), __VA_ARGS__, (const char *)NULL)
#define new_run_now(o, ...) new_run_at(&(aps_time){clock_now(NULL)}, 1, 60 * SEC, (o), __VA_ARGS__)

static aps__executor *
make_exec(aps_executor_def *def)
{
    aps__executor *ex = NULL;
    aps_error err;
    if (def->name == NULL)
        def->name = "proc";
    def->type = "processpool";
    if (aps__executor_process_create(sched, def, &ex, &err) != 0)
        fail_msg("create: %s", err.msg);
    return ex;
}

static void
drop_exec(aps__executor *ex)
{
    ex->ops->shutdown(ex, 0);
    ex->ops->destroy(ex);
}

/* Submits, waits, returns the finished run (aps__run_free it). */
static aps__run *
run_sync(aps__executor *ex, aps__run *run, int64_t timeout)
{
    char id[33];
    memcpy(id, run->run_id, sizeof(id));
    assert_int_equal(ex->ops->submit(ex, run), 0);
    return wait_run(id, timeout);
}

static aps_outcome *
out0(aps__run *r)
{
    return &r->results[0].outcome;
}

static void
assert_stdout(aps__run *r, const char *want)
{
    aps_outcome *o = out0(r);
    size_t wl = strlen(want);
    if (o->stdout_len != wl || memcmp(o->stdout_tail, want, wl) != 0)
        fail_msg("stdout: got \"%.*s\", want \"%s\" (status %d, error %s, stderr \"%.*s\")",
                 (int)o->stdout_len, o->stdout_tail ? (const char *)o->stdout_tail : "", want,
                 (int)o->status, o->error ? o->error : "(null)", (int)o->stderr_len,
                 o->stderr_tail ? (const char *)o->stderr_tail : "");
}

static void
assert_error(aps__run *r, const char *want)
{
    const char *got = out0(r)->error;
    if (got == NULL || strcmp(got, want) != 0)
        fail_msg("error: got \"%s\", want \"%s\"", got ? got : "(null)", want);
}

/* 1 if `pid` exists and is not a zombie (a reparented child may wait for
 * init to reap it). */
static int
proc_alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static int
wait_dead(pid_t pid, int64_t timeout)
{
    int64_t end = mono_us() + timeout;
    while (proc_alive(pid)) {
        if (mono_us() > end)
            return 0;
        usleep(10000);
    }
    return 1;
}

static aps__process_stats
stats(aps__executor *ex)
{
    aps__process_stats st;
    assert_int_equal(aps__executor_process_stats(ex, &st), 0);
    return st;
}

/* ---- tests ------------------------------------------------------------------------- */

static void
test_exit_codes(void **state)
{
    (void)state;
    aps_executor_def def = {0};
    aps__executor *ex = make_exec(&def);
    assert_string_equal(ex->type, "processpool");
    assert_int_equal(ex->max_workers, 10);
    assert_int_equal(ex->max_queue, 10000);

    aps_time before = clock_now(NULL);
    aps__run *r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "echo out; echo err >&2; exit 0"),
                           10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    assert_int_equal(r->results[0].missed, 0);
    assert_true(out0(r)->has_exit_code);
    assert_int_equal(out0(r)->exit_code, 0);
    assert_int_equal(out0(r)->signal, 0);
    assert_null(out0(r)->error);
    assert_stdout(r, "out\n");
    assert_int_equal(out0(r)->stderr_len, 4);
    assert_memory_equal(out0(r)->stderr_tail, "err\n", 4);
    assert_false(out0(r)->stdout_truncated);
    assert_false(out0(r)->stderr_truncated);
    assert_true(out0(r)->start_time >= before);
    assert_true(out0(r)->end_time >= out0(r)->start_time);
    assert_true(r->results[0].started == out0(r)->start_time);
    assert_true(r->results[0].run_time == r->run_times[0]);
    aps__run_free(r);

    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "exit 3"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_FAILED);
    assert_true(out0(r)->has_exit_code);
    assert_int_equal(out0(r)->exit_code, 3);
    assert_error(r, "exit status 3");
    assert_null(out0(r)->stdout_tail);
    assert_int_equal(out0(r)->stdout_len, 0);
    aps__run_free(r);

    /* argv is passed as is: no shell, no splitting. */
    r = run_sync(ex, new_run(NULL, "/bin/echo", "a  b", "$HOME", "*"), 10 * SEC);
    assert_stdout(r, "a  b $HOME *\n");
    aps__run_free(r);

    /* stdin is /dev/null: cat ends at once. */
    r = run_sync(ex, new_run(NULL, "/bin/cat"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    assert_int_equal(out0(r)->stdout_len, 0);
    aps__run_free(r);
    drop_exec(ex);
}

static void
test_signals(void **state)
{
    (void)state;
    aps_executor_def def = {0};
    aps__executor *ex = make_exec(&def);
    aps__run *r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "kill -9 $$"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_FAILED);
    assert_false(out0(r)->has_exit_code);
    assert_int_equal(out0(r)->signal, 9);
    assert_error(r, "killed by signal 9 (SIGKILL)");
    aps__run_free(r);

    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "kill -TERM $$"), 10 * SEC);
    assert_int_equal(out0(r)->signal, 15);
    assert_error(r, "killed by signal 15 (SIGTERM)");
    aps__run_free(r);

    /* Dispositions are reset: a daemon ignoring SIGPIPE must not make the
     * writer of a closed pipe spin (`yes | head` ends). */
    signal(SIGPIPE, SIG_IGN);
    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "yes | head -n 2"), 10 * SEC);
    signal(SIGPIPE, SIG_DFL);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    assert_stdout(r, "y\ny\n");
    aps__run_free(r);
    drop_exec(ex);
}

/* Reads field 22 (start time) of /proc/<pid>/stat. */
static unsigned long long
start_time_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    unsigned long long st = 0;
    const char *p = strrchr(buf, ')');
    assert_non_null(p);
    assert_int_equal(sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d "
                                   "%*d %*d %*d %*d %llu", &st), 1);
    return st;
}

/* A child leading its own process group, sleeping (a stand-in for a
 * command a crashed daemon left running), with a grandchild in its group. */
static pid_t
spawn_group_leader(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", "sleep 60 & sleep 60", (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid); /* either side may win the race */
    return pid;
}

static void
write_note(const char *dir, pid_t pid, unsigned long long start)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%d", dir, (int)pid);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%llu\n", start);
    fclose(f);
}

static int
count_entries(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "exit $(ls -A '%s' | wc -l)", dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The pids of running commands are noted under state_dir/<executor> while
 * they run; a new executor stops those a crashed predecessor left running,
 * and only those (a reused pid, a stale or unreadable note is left alone). */
static void
test_leftover_commands_stopped(void **state)
{
    (void)state;
    char base[256], dir[300];
    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(base, sizeof base, "%s/notes-%d", tmp ? tmp : "/tmp", (int)getpid());
    snprintf(dir, sizeof dir, "%s/proc", base);

    /* While a command runs, its pid is noted; once it ended, not. */
    aps_executor_def def = {.state_dir = base};
    aps__executor *ex = make_exec(&def);
    aps__run *r = new_run(NULL, "/bin/sh", "-c", "sleep 0.5");
    char id[33];
    memcpy(id, r->run_id, sizeof id);
    assert_int_equal(ex->ops->submit(ex, r), 0);
    int64_t end = mono_us() + 3 * SEC;
    while (count_entries(dir) != 1 && mono_us() < end)
        usleep(10000);
    assert_int_equal(count_entries(dir), 1);
    r = wait_run(id, 5 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    aps__run_free(r);
    assert_int_equal(count_entries(dir), 0);
    drop_exec(ex);

    /* Left behind by a "crash": a live group leader with its true start
     * time, one whose start time does not match (its pid was reused), and
     * notes that are not ours. */
    pid_t victim = spawn_group_leader();
    pid_t other = spawn_group_leader();
    usleep(100000); /* the shells start their sleeps */
    write_note(dir, victim, start_time_of(victim));
    write_note(dir, other, start_time_of(other) + 1);
    char junk[400];
    snprintf(junk, sizeof junk, "%s/not-a-pid", dir);
    FILE *f = fopen(junk, "w");
    fclose(f);
    write_note(dir, 999999, 1);

    ex = make_exec(&def);
    aps_executor_info info;
    memset(&info, 0, sizeof info);
    ex->ops->stats(ex, &info);
    assert_int_equal(info.stopped_leftovers, 1);
    int st = 0;
    assert_int_equal(waitpid(victim, &st, 0), victim);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_true(proc_alive(other));
    /* Every note that named a pid is gone; the stray file stays. */
    assert_int_equal(count_entries(dir), 1);
    drop_exec(ex);

    kill(-other, SIGKILL);
    waitpid(other, NULL, 0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    assert_int_equal(system(cmd), 0);
}

static void
test_timeout_kills_the_group(void **state)
{
    (void)state;
    aps_executor_def def = {.kill_grace_us = 1 * SEC};
    aps__executor *ex = make_exec(&def);
    cmd_opts o = {.timeout_us = 1 * SEC};

    /* The shell and the sleep it started in the background both go. */
    int64_t t0 = mono_us();
    aps__run *r = run_sync(ex, new_run(&o, "/bin/sh", "-c", "sleep 60 & echo $!; sleep 60"),
                           5 * SEC);
    int64_t took = mono_us() - t0;
    assert_true(took >= 1 * SEC);
    assert_true(took < 2500 * MS);
    assert_int_equal(out0(r)->status, APS_RUN_TIMED_OUT);
    assert_error(r, "timed out after 1s");
    assert_int_equal(out0(r)->signal, SIGTERM);
    pid_t bg = (pid_t)atoi((const char *)out0(r)->stdout_tail);
    assert_true(bg > 1);
    assert_true(wait_dead(bg, 1 * SEC));
    aps__run_free(r);

    /* A group that ignores SIGTERM is SIGKILLed after the grace. */
    t0 = mono_us();
    r = run_sync(ex, new_run(&o, "/bin/sh", "-c",
                             "trap '' TERM; sleep 60 & echo $!; while :; do sleep 0.05; done"),
                 6 * SEC);
    took = mono_us() - t0;
    assert_true(took >= 2 * SEC);
    assert_true(took < 3500 * MS);
    assert_int_equal(out0(r)->status, APS_RUN_TIMED_OUT);
    assert_int_equal(out0(r)->signal, SIGKILL);
    bg = (pid_t)atoi((const char *)out0(r)->stdout_tail);
    assert_true(bg > 1);
    assert_true(wait_dead(bg, 1 * SEC));
    aps__run_free(r);

    /* Sub-second timeouts are reported as such; a flood is cut and capped. */
    cmd_opts flood = {.timeout_us = 300 * MS, .max_output = 1000};
    r = run_sync(ex, new_run(&flood, "/usr/bin/yes"), 5 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_TIMED_OUT);
    assert_error(r, "timed out after 300ms");
    assert_int_equal(out0(r)->stdout_len, 1000);
    assert_true(out0(r)->stdout_truncated);
    aps__run_free(r);

    /* A timeout past the clock's range is none (it overflowed into the
     * past: killed at once). */
    cmd_opts huge = {.timeout_us = INT64_MAX};
    r = run_sync(ex, new_run(&huge, "/bin/sh", "-c", "sleep 0.2; echo done"), 5 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    assert_stdout(r, "done\n");
    aps__run_free(r);
    drop_exec(ex);

    /* The kill grace is bounded (a day): now + it must not overflow. */
    aps_executor_def long_grace = {.name = "g", .type = "processpool", .kill_grace_us = INT64_MAX};
    aps_error err;
    aps__executor *none = NULL;
    assert_int_equal(aps__executor_process_create(sched, &long_grace, &none, &err), APS_EINVAL);
    assert_string_equal(err.msg, "executors[g].kill_grace: must be 0 to 86400 seconds");
}

static void
test_output_tail_is_exact(void **state)
{
    (void)state;
    aps_executor_def def = {0};
    aps__executor *ex = make_exec(&def);
    cmd_opts o = {.max_output = 1000};
    aps__run *r = run_sync(ex, new_run(&o, "/bin/sh", "-c",
                                       "seq 1 200000; head -c 1000000 /dev/zero | tr '\\0' e >&2"),
                           30 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);

    /* The last 1000 bytes of `seq 1 200000`, exactly. */
    size_t cap = 2 * 1000 * 1000, len = 0;
    char *all = malloc(cap);
    assert_non_null(all);
    for (int i = 1; i <= 200000; i++)
        len += (size_t)snprintf(all + len, cap - len, "%d\n", i);
    assert_int_equal(out0(r)->stdout_len, 1000);
    assert_memory_equal(out0(r)->stdout_tail, all + len - 1000, 1000);
    assert_true(out0(r)->stdout_truncated);
    free(all);

    assert_int_equal(out0(r)->stderr_len, 1000);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(((const char *)out0(r)->stderr_tail)[i], 'e');
    assert_true(out0(r)->stderr_truncated);
    aps__run_free(r);

    /* Exactly the cap is not truncated; one byte more is. */
    r = run_sync(ex, new_run(&o, "/bin/sh", "-c", "head -c 1000 /dev/zero"), 10 * SEC);
    assert_int_equal(out0(r)->stdout_len, 1000);
    assert_false(out0(r)->stdout_truncated);
    aps__run_free(r);
    r = run_sync(ex, new_run(&o, "/bin/sh", "-c", "head -c 1001 /dev/zero"), 10 * SEC);
    assert_int_equal(out0(r)->stdout_len, 1000);
    assert_true(out0(r)->stdout_truncated);
    aps__run_free(r);
    drop_exec(ex);

    /* The executor's default cap, and its limit on what a job may ask. */
    aps_executor_def d2 = {.max_output = 500, .max_output_limit = 2000};
    ex = make_exec(&d2);
    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "seq 1 10000"), 10 * SEC);
    assert_int_equal(out0(r)->stdout_len, 500);
    aps__run_free(r);
    cmd_opts big = {.max_output = 5000};
    r = run_sync(ex, new_run(&big, "/bin/sh", "-c", "seq 1 10000"), 10 * SEC);
    assert_int_equal(out0(r)->stdout_len, 2000);
    aps__run_free(r);
    drop_exec(ex);

    /* A limit below the 64 KiB default lowers the default. */
    aps_executor_def d3 = {.max_output_limit = 100};
    ex = make_exec(&d3);
    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "seq 1 10000"), 10 * SEC);
    assert_int_equal(out0(r)->stdout_len, 100);
    aps__run_free(r);
    drop_exec(ex);

    aps_executor_def bad = {.name = "bad", .type = "processpool", .max_output = 3000,
                            .max_output_limit = 2000};
    aps_error err;
    aps__executor *none = NULL;
    assert_int_equal(aps__executor_process_create(sched, &bad, &none, &err), APS_EINVAL);
    assert_string_equal(err.msg, "executors[bad].max_output: 3000 is more than max_output_limit 2000");
    assert_null(none);
}

static void
test_spawn_failures(void **state)
{
    (void)state;
    aps_executor_def def = {0};
    aps__executor *ex = make_exec(&def);
    aps__run *r = run_sync(ex, new_run(NULL, "/nope"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    assert_error(r, "/nope: no such file or directory");
    assert_false(out0(r)->has_exit_code);
    assert_true(out0(r)->end_time >= out0(r)->start_time);
    aps__run_free(r);

    r = run_sync(ex, new_run(NULL, "no-such-command-xyz"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    assert_error(r, "no-such-command-xyz: not found in PATH");
    aps__run_free(r);

    char file[256];
    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(file, sizeof(file), "%s/not-executable-%d", tmp ? tmp : "/tmp", (int)getpid());
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\necho hi\n", f);
    fclose(f);
    chmod(file, 0644);
    char want[300];
    r = run_sync(ex, new_run(NULL, file), 10 * SEC);
    snprintf(want, sizeof(want), "%s: permission denied", file);
    assert_error(r, want);
    aps__run_free(r);
    /* Once executable it runs (a script: the kernel reads the #! line). */
    chmod(file, 0755);
    r = run_sync(ex, new_run(NULL, file), 10 * SEC);
    assert_stdout(r, "hi\n");
    aps__run_free(r);
    unlink(file);

    r = run_sync(ex, new_run(NULL, "/tmp"), 10 * SEC);
    assert_error(r, "/tmp: is a directory");
    aps__run_free(r);

    cmd_opts o = {.cwd = "/nonexistent-dir"};
    r = run_sync(ex, new_run(&o, "/bin/true"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    assert_error(r, "cwd /nonexistent-dir: no such file or directory");
    aps__run_free(r);

    /* A function target is not this executor's. */
    aps__run *fr = new_run(NULL, "/bin/true");
    aps__target_dispose(&fr->target);
    fr->target.kind = APS_TARGET_FUNCTION;
    fr->target.u.function.name = strdup("f");
    r = run_sync(ex, fr, 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    assert_error(r, "executor \"proc\": a processpool executor runs command targets only");
    aps__run_free(r);

    aps__process_stats st = stats(ex);
    assert_int_equal(st.spawn_failed, 6);
    assert_int_equal(st.spawned, 1);
    drop_exec(ex);
}

static void
test_burst_of_1000(void **state)
{
    (void)state;
    aps_executor_def def = {.max_workers = 16};
    aps__executor *ex = make_exec(&def);
    enum { N = 1000 };
    char (*ids)[33] = calloc(N, sizeof(*ids));
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        aps__run *r = new_run(NULL, "/bin/true");
        r->unlimited_grace = 1; /* slow hosts (valgrind) must not turn runs into misses */
        memcpy(ids[i], r->run_id, 33);
        assert_int_equal(ex->ops->submit(ex, r), 0);
    }
    for (int i = 0; i < N; i++) {
        aps__run *r = wait_run(ids[i], 120 * SEC);
        assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
        aps__run_free(r);
    }
    aps__process_stats st = stats(ex);
    print_message("burst: %d runs, peak %u children (pool 16), reaper %s\n", N, st.peak_children,
                  st.reaper == APS__REAP_PIDFD ? "pidfd" : "signalfd");
    assert_true(st.peak_children <= 16);
    assert_true(st.peak_children >= 1);
    assert_int_equal(st.spawned, N);
    assert_int_equal(st.children, 0);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    free(ids);
    drop_exec(ex);
}

static void
test_allow_list(void **state)
{
    (void)state;
    /* /bin/true is /usr/bin/true on merged-/usr systems: both canonical. */
    const char *allow[] = {"/bin/true", "/usr/lib/"};
    aps_executor_def def = {.allow = allow, .n_allow = 2};
    aps__executor *ex = make_exec(&def);
    aps__run *r = run_sync(ex, new_run(NULL, "/bin/true"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    aps__run_free(r);
    r = run_sync(ex, new_run(NULL, "true"), 10 * SEC); /* through PATH */
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    aps__run_free(r);

    char real[4096], want[4200];
    assert_non_null(realpath("/bin/sh", real));
    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "echo no"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    if (strcmp(real, "/bin/sh") == 0)
        snprintf(want, sizeof(want), "/bin/sh: not on the allow-list");
    else
        snprintf(want, sizeof(want), "/bin/sh (%s): not on the allow-list", real);
    assert_error(r, want);
    assert_null(out0(r)->stdout_tail);
    aps__run_free(r);
    /* A path through a symlinked or dotted directory is judged by its target. */
    r = run_sync(ex, new_run(NULL, "/usr/bin/../bin/sh", "-c", "echo no"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    aps__run_free(r);
    /* A directory entry admits the files directly in it, not deeper ones
     * (/usr/lib/ does not admit /usr/lib/x/y). */
    char deep[4200];
    snprintf(deep, sizeof(deep), "%s/apsd-allow-XXXXXX", "/usr/lib");
    int made = mkdtemp(deep) != NULL;
    if (made) {
        char prog[4300];
        snprintf(prog, sizeof(prog), "%s/true", deep);
        char copy[4400];
        snprintf(copy, sizeof(copy), "cp /bin/true %s", prog);
        assert_int_equal(system(copy), 0);
        r = run_sync(ex, new_run(NULL, prog), 10 * SEC);
        assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
        aps__run_free(r);
        unlink(prog);
        rmdir(deep);
    }
    /* With an allow-list, a job sets only the environment keys allowed:
     * none here, so LD_PRELOAD (or any other) is refused. */
    const char *preload[] = {"LD_PRELOAD=/tmp/x.so"};
    cmd_opts po = {.env = preload, .envc = 1};
    r = run_sync(ex, new_run(&po, "/bin/true"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    assert_error(r, "env LD_PRELOAD: not on the environment allow-list (with a command "
                    "allow-list, a job sets only the keys allowed)");
    aps__run_free(r);
    drop_exec(ex);
    /* Keys allowed exactly or by prefix. */
    const char *keys[] = {"TZ", "LC_*"};
    aps_executor_def with_env = {.allow = allow, .n_allow = 2, .allow_env = keys, .n_allow_env = 2};
    ex = make_exec(&with_env);
    const char *ok_env[] = {"TZ=UTC", "LC_ALL=C"};
    cmd_opts oo = {.env = ok_env, .envc = 2};
    r = run_sync(ex, new_run(&oo, "/bin/true"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    aps__run_free(r);
    const char *bad_env[] = {"TZX=1"};
    cmd_opts bo = {.env = bad_env, .envc = 1};
    r = run_sync(ex, new_run(&bo, "/bin/true"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SPAWN_FAILED);
    aps__run_free(r);
    drop_exec(ex);

    const char *rel[] = {"bin/true"};
    aps_executor_def bad = {.name = "bad", .type = "processpool", .allow = rel, .n_allow = 1};
    aps_error err;
    aps__executor *none = NULL;
    assert_int_equal(aps__executor_process_create(sched, &bad, &none, &err), APS_EINVAL);
    assert_string_equal(err.msg, "executors[bad].allow[0]: must be an absolute path");
}

static void
test_run_as_and_rlimits(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("SKIPPED run-as: the test is not running as root, so it cannot switch "
                      "to user \"nobody\"\n");
        skip();
    }
    aps_executor_def def = {.run_as_user = "nobody"};
    aps__executor *ex = make_exec(&def);
    aps__run *r = run_sync(ex, new_run(NULL, "/usr/bin/id", "-u"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
    assert_stdout(r, "65534\n");
    aps__run_free(r);
    r = run_sync(ex, new_run(NULL, "id", "-G"), 10 * SEC);
    assert_stdout(r, "65534\n"); /* nogroup only: root's groups are gone */
    aps__run_free(r);
    /* Files only root may write stay out of reach. */
    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "echo x > /etc/apsd-run-as-test"), 10 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_FAILED);
    aps__run_free(r);
    assert_int_equal(access("/etc/apsd-run-as-test", F_OK), -1);
    drop_exec(ex);

    aps_executor_def d2 = {.run_as_user = "nobody", .run_as_group = "daemon",
                           .rlimit_nofile = 64, .rlimit_cpu_s = 7,
                           .rlimit_as = UINT64_C(1) << 30};
    ex = make_exec(&d2);
    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "id -u; id -g; ulimit -t; ulimit -v; ulimit -n"),
                 10 * SEC);
    const char *pre = getenv("LD_PRELOAD");
    if (pre != NULL && strstr(pre, "vgpreload") != NULL) {
        /* valgrind emulates RLIMIT_NOFILE inside itself: the exec'd child
         * gets the real one. The rest must hold. */
        print_message("under valgrind: RLIMIT_NOFILE not checked\n");
        const char *want = "65534\n1\n7\n1048576\n";
        assert_true(out0(r)->stdout_len > strlen(want));
        assert_memory_equal(out0(r)->stdout_tail, want, strlen(want));
    } else {
        assert_stdout(r, "65534\n1\n7\n1048576\n64\n");
    }
    aps__run_free(r);
    /* A failure between fork and exec is reported like a posix_spawn one. */
    r = run_sync(ex, new_run(NULL, "/nope"), 10 * SEC);
    assert_error(r, "/nope: no such file or directory");
    aps__run_free(r);
    drop_exec(ex);

    aps_executor_def bad = {.name = "bad", .type = "processpool", .run_as_user = "no-such-user-x"};
    aps_error err;
    aps__executor *none = NULL;
    assert_int_equal(aps__executor_process_create(sched, &bad, &none, &err), APS_EINVAL);
    assert_string_equal(err.msg, "executors[bad].run_as_user: unknown user \"no-such-user-x\"");
    aps_executor_def badg = {.name = "bad",
                             .type = "processpool",
                             .run_as_user = "nobody",
                             .run_as_group = "no-such-group-x"};
    assert_int_equal(aps__executor_process_create(sched, &badg, &none, &err), APS_EINVAL);
    assert_string_equal(err.msg, "executors[bad].run_as_group: unknown group \"no-such-group-x\"");
    /* A group alone would keep the daemon's user (root, every capability). */
    aps_executor_def alone = {.name = "bad", .type = "processpool", .run_as_group = "nogroup"};
    assert_int_equal(aps__executor_process_create(sched, &alone, &none, &err), APS_EINVAL);
    assert_string_equal(err.msg, "executors[bad].run_as_group: needs run_as_user too (a group "
                                 "alone leaves commands running as the daemon's user)");
}

static void
test_env_and_cwd(void **state)
{
    (void)state;
    aps_executor_def def = {0};
    aps__executor *ex = make_exec(&def);
    const char *env[] = {"FOO=bar", "EMPTY="};
    cmd_opts o = {.env = env, .envc = 2, .cwd = "/tmp"};
    /* "sh" is found through the child's PATH. */
    aps__run *r = run_sync(ex, new_run(&o, "sh", "-c",
                                       "echo \"$FOO|${EMPTY-unset}|$PATH|$(pwd)|${HOME-nohome}\""),
                           10 * SEC);
    assert_stdout(r, "bar||/usr/local/bin:/usr/bin:/bin|/tmp|nohome\n");
    aps__run_free(r);
    /* Only the base env and the job's: nothing of the daemon's leaks. */
    r = run_sync(ex, new_run(NULL, "/usr/bin/env"), 10 * SEC);
    assert_stdout(r, "PATH=/usr/local/bin:/usr/bin:/bin\n");
    aps__run_free(r);
    r = run_sync(ex, new_run(NULL, "/bin/pwd"), 10 * SEC);
    assert_stdout(r, "/\n");
    aps__run_free(r);
    /* A relative argv[0] is relative to the child's cwd. */
    cmd_opts rel = {.cwd = "/usr"};
    r = run_sync(ex, new_run(&rel, "bin/echo", "rel"), 10 * SEC);
    assert_stdout(r, "rel\n");
    aps__run_free(r);
    drop_exec(ex);

    const char *base[] = {"PATH=/bin:/usr/bin", "HOME=/root", "FOO=base"};
    aps_executor_def d2 = {.base_env = base, .n_base_env = 3, .cwd = "/usr"};
    ex = make_exec(&d2);
    const char *over[] = {"FOO=job", "FOO=last"};
    cmd_opts o2 = {.env = over, .envc = 2};
    r = run_sync(ex, new_run(&o2, "/usr/bin/env"), 10 * SEC);
    assert_stdout(r, "PATH=/bin:/usr/bin\nHOME=/root\nFOO=last\n");
    aps__run_free(r);
    r = run_sync(ex, new_run(NULL, "pwd"), 10 * SEC);
    assert_stdout(r, "/usr\n");
    aps__run_free(r);
    drop_exec(ex);
}

static void
wait_children(aps__executor *ex, uint32_t n)
{
    int64_t end = mono_us() + 10 * SEC;
    while (stats(ex).children != n) {
        if (mono_us() > end)
            fail_msg("never reached %u children", n);
        usleep(2000);
    }
}

static void
test_misfire_and_run_times(void **state)
{
    (void)state;
    aps_executor_def def = {.max_workers = 1};
    aps__executor *ex = make_exec(&def);
    aps__run *a = new_run(NULL, "/bin/sleep", "0.3");
    aps_time due = clock_now(NULL);
    aps__run *b = new_run_at(&due, 1, 1 * SEC, NULL, "/bin/echo", "late", (const char *)NULL);
    char ida[33], idb[33];
    memcpy(ida, a->run_id, 33);
    memcpy(idb, b->run_id, 33);
    assert_int_equal(ex->ops->submit(ex, a), 0);
    wait_children(ex, 1);
    assert_int_equal(ex->ops->submit(ex, b), 0);
    assert_int_equal(stats(ex).queued, 1);
    /* b waits for the slot past its grace: judged when it starts. */
    advance_clock(10 * SEC);
    a = wait_run(ida, 10 * SEC);
    b = wait_run(idb, 10 * SEC);
    assert_int_equal(out0(a)->status, APS_RUN_SUCCEEDED);
    assert_int_equal(b->results[0].missed, 1);
    assert_true(b->results[0].run_time == due);
    assert_true(b->results[0].started - due >= 10 * SEC);
    assert_int_equal(out0(b)->status, APS_RUN_NONE);
    assert_null(out0(b)->stdout_tail);
    aps__run_free(a);
    aps__run_free(b);
    assert_int_equal(stats(ex).spawned, 1);

    /* Several run times (coalesce off): the command runs once per run time
     * still within the grace, in order; a backfill ignores the grace. */
    aps_time now = clock_now(NULL);
    aps_time rts[3] = {now - 10 * SEC, now - 200 * MS, now};
    aps__run *c = new_run_at(rts, 3, 1 * SEC, NULL, "/bin/sh", "-c", "echo run",
                             (const char *)NULL);
    c = run_sync(ex, c, 10 * SEC);
    assert_int_equal(c->results[0].missed, 1);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(c->results[i].missed, 0);
        assert_true(c->results[i].run_time == rts[i]);
        assert_int_equal(c->results[i].outcome.status, APS_RUN_SUCCEEDED);
        assert_int_equal(c->results[i].outcome.stdout_len, 4);
    }
    assert_true(c->results[2].started >= c->results[1].outcome.end_time);
    aps__run_free(c);

    aps__run *d = new_run_at(rts, 3, 1 * SEC, NULL, "/bin/true", (const char *)NULL);
    d->backfill = 1;
    d = run_sync(ex, d, 10 * SEC);
    for (int i = 0; i < 3; i++)
        assert_int_equal(d->results[i].outcome.status, APS_RUN_SUCCEEDED);
    aps__run_free(d);
    drop_exec(ex);
}

static void
test_cancel(void **state)
{
    (void)state;
    aps_executor_def def = {.max_workers = 1};
    aps__executor *ex = make_exec(&def);
    aps__run *a = new_run(NULL, "/bin/sleep", "60");
    aps__run *b = new_run(NULL, "/bin/echo", "never");
    char ida[33], idb[33];
    memcpy(ida, a->run_id, 33);
    memcpy(idb, b->run_id, 33);
    assert_int_equal(ex->ops->submit(ex, a), 0);
    wait_children(ex, 1);
    assert_int_equal(ex->ops->submit(ex, b), 0);

    /* Queued: out of the FIFO at once, never started. */
    assert_int_equal(ex->ops->cancel(ex, idb), 0);
    b = wait_run(idb, 1 * SEC);
    assert_int_equal(out0(b)->status, APS_RUN_CANCELLED);
    assert_null(out0(b)->stdout_tail);
    aps__run_free(b);

    /* Running: SIGTERM to its group. */
    int64_t t0 = mono_us();
    assert_int_equal(ex->ops->cancel(ex, ida), 0);
    a = wait_run(ida, 5 * SEC);
    assert_true(mono_us() - t0 < 1 * SEC);
    assert_int_equal(out0(a)->status, APS_RUN_CANCELLED);
    assert_error(a, "cancelled");
    assert_int_equal(out0(a)->signal, SIGTERM);
    aps__run_free(a);

    assert_int_equal(ex->ops->cancel(ex, "00000000000000000000000000000000"), APS_ENOENT);
    assert_int_equal(ex->ops->cancel(ex, ida), APS_ENOENT); /* finished: unknown now */

    /* A cancelled run with several run times runs none of the rest. */
    aps_time now = clock_now(NULL);
    aps_time rts[3] = {now, now, now};
    aps__run *c = new_run_at(rts, 3, 60 * SEC, NULL, "/bin/sleep", "60", (const char *)NULL);
    char idc[33];
    memcpy(idc, c->run_id, 33);
    assert_int_equal(ex->ops->submit(ex, c), 0);
    wait_children(ex, 1);
    assert_int_equal(ex->ops->cancel(ex, idc), 0);
    c = wait_run(idc, 5 * SEC);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c->results[i].outcome.status, APS_RUN_CANCELLED);
    assert_int_equal(stats(ex).spawned, 2);
    aps__run_free(c);
    drop_exec(ex);
}

static void
test_pipes_closed_early_or_leaked(void **state)
{
    (void)state;
    aps_executor_def def = {0};
    aps__executor *ex = make_exec(&def);

    /* A grandchild keeps stdout open for 30 s: the run ends anyway, soon
     * after the child, with what was written. */
    int64_t t0 = mono_us();
    aps__run *r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "sleep 30 & echo $!; exit 5"),
                           5 * SEC);
    assert_true(mono_us() - t0 < 1500 * MS);
    assert_int_equal(out0(r)->status, APS_RUN_FAILED);
    assert_error(r, "exit status 5");
    pid_t gc = (pid_t)atoi((const char *)out0(r)->stdout_tail);
    assert_true(gc > 1);
    /* Not a terminated run: the grandchild is left alone. */
    assert_true(proc_alive(gc));
    kill(gc, SIGKILL);
    assert_true(wait_dead(gc, 2 * SEC));
    aps__run_free(r);

    /* The child closes both pipes and keeps running: its exit still counts. */
    t0 = mono_us();
    r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "echo before; exec >&- 2>&-; sleep 0.3; exit 4"),
                 5 * SEC);
    assert_true(mono_us() - t0 >= 300 * MS);
    assert_error(r, "exit status 4");
    assert_stdout(r, "before\n");
    aps__run_free(r);
    drop_exec(ex);
}

static void
test_shutdown(void **state)
{
    (void)state;
    /* Without wait: the running child's group is terminated, queued runs
     * never start. */
    aps_executor_def def = {.max_workers = 1, .kill_grace_us = 1 * SEC};
    aps__executor *ex = make_exec(&def);
    aps__run *a = new_run(NULL, "/bin/sh", "-c", "sleep 60 & echo $!; sleep 60");
    aps__run *b = new_run(NULL, "/bin/echo", "never");
    char ida[33], idb[33];
    memcpy(ida, a->run_id, 33);
    memcpy(idb, b->run_id, 33);
    assert_int_equal(ex->ops->submit(ex, a), 0);
    wait_children(ex, 1);
    assert_int_equal(ex->ops->submit(ex, b), 0);
    usleep(100000); /* let the shell start its background sleep */
    int64_t t0 = mono_us();
    ex->ops->shutdown(ex, 0);
    assert_true(mono_us() - t0 < 1 * SEC);
    a = wait_run(ida, 1 * SEC);
    b = wait_run(idb, 1 * SEC);
    assert_int_equal(out0(a)->status, APS_RUN_INTERRUPTED);
    assert_int_equal(out0(a)->signal, SIGTERM);
    pid_t bg = (pid_t)atoi((const char *)out0(a)->stdout_tail);
    assert_true(bg > 1);
    assert_true(wait_dead(bg, 1 * SEC));
    assert_int_equal(out0(b)->status, APS_RUN_INTERRUPTED);
    assert_error(b, "interrupted: the scheduler shut down before the run started");
    aps__run_free(a);
    aps__run_free(b);
    aps__run *late = new_run(NULL, "/bin/true");
    assert_int_equal(ex->ops->submit(ex, late), APS_ESTATE);
    aps__run_free(late); /* refused: still the caller's */
    ex->ops->shutdown(ex, 0); /* idempotent */
    ex->ops->destroy(ex);

    /* With wait: the running child finishes normally, and the queued run
     * still runs after it (concurrent.futures' shutdown(wait=True)); new
     * runs are refused meanwhile. */
    ex = make_exec(&def);
    a = new_run(NULL, "/bin/sh", "-c", "sleep 0.3; echo done");
    b = new_run(NULL, "/bin/echo", "queued");
    memcpy(ida, a->run_id, 33);
    memcpy(idb, b->run_id, 33);
    assert_int_equal(ex->ops->submit(ex, a), 0);
    wait_children(ex, 1);
    assert_int_equal(ex->ops->submit(ex, b), 0);
    ex->ops->shutdown(ex, 1);
    late = new_run(NULL, "/bin/true");
    assert_int_equal(ex->ops->submit(ex, late), APS_ESTATE);
    aps__run_free(late);
    a = wait_run(ida, 1 * SEC);
    b = wait_run(idb, 1 * SEC);
    assert_int_equal(out0(a)->status, APS_RUN_SUCCEEDED);
    assert_stdout(a, "done\n");
    assert_int_equal(out0(b)->status, APS_RUN_SUCCEEDED);
    assert_stdout(b, "queued\n");
    aps__run_free(a);
    aps__run_free(b);
    ex->ops->destroy(ex);
}

static void
test_queue_limit(void **state)
{
    (void)state;
    aps_executor_def def = {.max_workers = 1, .max_queue = 2};
    aps__executor *ex = make_exec(&def);
    aps__run *runs[3];
    char ids[3][33];
    for (int i = 0; i < 3; i++) {
        runs[i] = new_run(NULL, "/bin/sleep", "60");
        memcpy(ids[i], runs[i]->run_id, 33);
        assert_int_equal(ex->ops->submit(ex, runs[i]), 0);
    }
    aps__run *extra = new_run(NULL, "/bin/true");
    assert_int_equal(ex->ops->submit(ex, extra), APS_ELIMIT);
    aps__run_free(extra); /* refused: still the caller's */
    ex->ops->shutdown(ex, 0);
    for (int i = 0; i < 3; i++) {
        aps__run *r = wait_run(ids[i], 5 * SEC);
        assert_int_equal(out0(r)->status, APS_RUN_INTERRUPTED);
        aps__run_free(r);
    }
    ex->ops->destroy(ex);
}

static void
test_signalfd_fallback(void **state)
{
    (void)state;
    aps__executor_process_force_signalfd(1);
    aps_executor_def def = {.max_workers = 8};
    aps__executor *ex = make_exec(&def);
    aps__executor_process_force_signalfd(0);
    assert_int_equal(stats(ex).reaper, APS__REAP_SIGNALFD);

    aps__run *r = run_sync(ex, new_run(NULL, "/bin/sh", "-c", "echo fb; exit 3"), 10 * SEC);
    assert_error(r, "exit status 3");
    assert_stdout(r, "fb\n");
    aps__run_free(r);
    char ids[50][33];
    for (int i = 0; i < 50; i++) {
        aps__run *x = new_run(NULL, "/bin/true");
        memcpy(ids[i], x->run_id, 33);
        assert_int_equal(ex->ops->submit(ex, x), 0);
    }
    for (int i = 0; i < 50; i++) {
        r = wait_run(ids[i], 30 * SEC);
        assert_int_equal(out0(r)->status, APS_RUN_SUCCEEDED);
        aps__run_free(r);
    }
    cmd_opts o = {.timeout_us = 200 * MS};
    r = run_sync(ex, new_run(&o, "/bin/sleep", "60"), 5 * SEC);
    assert_int_equal(out0(r)->status, APS_RUN_TIMED_OUT);
    aps__run_free(r);
    assert_true(stats(ex).peak_children <= 8);
    drop_exec(ex);
}

/* ---- through the scheduler API ----------------------------------------------------- */

static char e2e_stdout[256];
static char e2e_error[256];
static int e2e_executed, e2e_errors;
static int32_t e2e_exit;

static void
e2e_listener(const aps_event *ev, void *userdata)
{
    (void)userdata;
    if (ev->outcome == NULL)
        return;
    if (ev->type == APS_EVENT_JOB_EXECUTED) {
        e2e_executed++;
        snprintf(e2e_stdout, sizeof(e2e_stdout), "%.*s", (int)ev->outcome->stdout_len,
                 ev->outcome->stdout_tail ? (const char *)ev->outcome->stdout_tail : "");
    } else if (ev->type == APS_EVENT_JOB_ERROR) {
        e2e_errors++;
        e2e_exit = ev->outcome->exit_code;
        snprintf(e2e_error, sizeof(e2e_error), "%s", ev->outcome->error ? ev->outcome->error : "");
    }
}

static void
test_through_the_scheduler(void **state)
{
    (void)state;
    aps_executor_def execs[2] = {
        {.name = "default", .type = "processpool", .max_workers = 4},
        {.name = "fn", .type = "threadpool"},
    };
    aps_scheduler_config cfg;
    aps_error err;
    aps_scheduler *s = NULL;
    memset(&cfg, 0, sizeof(cfg));
    cfg.executors = execs;
    cfg.n_executors = 2;
    if (aps_scheduler_create(&cfg, &s, &err) != 0)
        fail_msg("create: %s", err.msg);
    assert_int_equal(aps_scheduler_add_listener(s, e2e_listener, APS_EVENT_ALL, NULL), 0);
    assert_int_equal(aps_scheduler_start(s, APS_RUN_EXTERNAL), 0);

    char *ok_argv[] = {"/bin/sh", "-c", "echo hello $((1+2))"};
    char *bad_argv[] = {"/bin/sh", "-c", "echo oops >&2; exit 7"};
    aps_job_spec spec;
    memset(&spec, 0, sizeof(spec));
    spec.id = "hello";
    spec.target.kind = APS_TARGET_COMMAND;
    spec.target.u.command.argv = ok_argv;
    spec.target.u.command.argc = 3;
    spec.coalesce = -1;
    spec.misfire = APS_MISFIRE_UNLIMITED; /* valgrind may be slower than the 1 s default */
    spec.next_run_time = aps_time_now();
    if (aps_job_add(s, &spec, NULL, NULL, &err) != 0)
        fail_msg("add: %s", err.msg);
    spec.id = "broken";
    spec.target.u.command.argv = bad_argv;
    if (aps_job_add(s, &spec, NULL, NULL, &err) != 0)
        fail_msg("add: %s", err.msg);

    struct pollfd pfd = {aps_scheduler_fd(s), POLLIN, 0};
    int64_t end = mono_us() + 10 * SEC;
    while ((e2e_executed < 1 || e2e_errors < 1) && mono_us() < end) {
        aps_time next = APS_TIME_NONE;
        assert_int_equal(aps_scheduler_process(s, &next), 0);
        poll(&pfd, 1, 20);
    }
    assert_int_equal(e2e_executed, 1);
    assert_int_equal(e2e_errors, 1);
    assert_string_equal(e2e_stdout, "hello 3\n");
    assert_string_equal(e2e_error, "exit status 7");
    assert_int_equal(e2e_exit, 7);

    aps_scheduler_destroy(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exit_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_kills_the_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leftover_commands_stopped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_tail_is_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawn_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_burst_of_1000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allow_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_as_and_rlimits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_and_cwd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_misfire_and_run_times, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipes_closed_early_or_leaked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signalfd_fallback, setup, teardown),
        cmocka_unit_test(test_through_the_scheduler),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
