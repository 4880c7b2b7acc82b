/*
 * Crash test of the LMDB job store: a child process adds jobs as fast as it
 * can from 4 threads and records every acknowledged id (one fixed-size
 * write(2) to an O_APPEND file after aps__store_write returned 0); the
 * parent SIGKILLs it at a random moment, reopens the store and checks that
 * every acknowledged job is there with the right bytes and that the event
 * log has no gap. 20 rounds on the same store.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

/* cmocka needs <setjmp.h>, <stdarg.h> and <stddef.h> first. */
#include <cmocka.h>

#include "store.h"

#define ROUNDS 20
#define CHILD_THREADS 4
#define REC_SIZE 64 /* one acknowledgement record: the id, NUL-padded */

static char g_dir[PATH_MAX];
static char g_acks[PATH_MAX + 16];

/* The record of a job is a pure function of its id, so the parent can
 * check the bytes without being told them. */
static size_t
job_record(const char *id, unsigned char *buf, size_t cap)
{
    uint32_t h = 2166136261u;
    size_t len;

    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    len = 100 + h % 300;
    if (len > cap)
        len = cap;
    for (size_t i = 0; i < len; i++) {
        h = h * 1103515245u + 12345u;
        buf[i] = (unsigned char)(h >> 16);
    }
    return len;
}

static aps_time
job_next(const char *id)
{
    return (aps_time)(strlen(id) * 1000003) - 5000000;
}

typedef struct add_arg {
    const char *id;
    const unsigned char *rec;
    size_t len;
} add_arg;

/* One job and one event per write: after any crash, the number of events
 * equals the number of jobs, and the sequences are 1..N. */
static int
add_fn(aps_txn *t, void *a)
{
    add_arg *x = a;
    int rc = aps__txn_job_put(t, x->id, x->rec, x->len, job_next(x->id));

    if (rc)
        return rc;
    return aps__txn_event_append(t, 0, x->id, strlen(x->id), NULL);
}

typedef struct child_ctx {
    aps_store *s;
    int round, thread, ack_fd;
} child_ctx;

static void *
child_thread(void *arg)
{
    child_ctx *c = arg;
    unsigned char rec[512];
    char ack[REC_SIZE];

    for (long i = 0;; i++) {
        add_arg x;
        int rc;

        memset(ack, 0, sizeof ack);
        snprintf(ack, sizeof ack, "r%02d-t%d-%07ld", c->round, c->thread, i);
        x.id = ack;
        x.rec = rec;
        x.len = job_record(ack, rec, sizeof rec);
        rc = aps__store_write(c->s, add_fn, &x);
        if (rc) {
            fprintf(stderr, "child: write %s: %d\n", ack, rc);
            _exit(3);
        }
        /* Acknowledged: tell the parent with one atomic append. */
        if (write(c->ack_fd, ack, sizeof ack) != (ssize_t)sizeof ack)
            _exit(4);
    }
    return NULL;
}

static void
child_main(int round)
{
    child_ctx ctx[CHILD_THREADS];
    pthread_t th[CHILD_THREADS];
    aps_store *s = NULL;
    aps_error err = {0, ""};
    int fd;

    fd = open(g_acks, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd < 0)
        _exit(5);
    /* Durable commits, as in production. */
    if (aps__store_open_lmdb(g_dir, NULL, &s, &err)) {
        fprintf(stderr, "child: open: %s\n", err.msg);
        _exit(6);
    }
    for (int i = 0; i < CHILD_THREADS; i++) {
        ctx[i] = (child_ctx){s, round, i, fd};
        if (pthread_create(&th[i], NULL, child_thread, &ctx[i]))
            _exit(7);
    }
    for (int i = 0; i < CHILD_THREADS; i++)
        pthread_join(th[i], NULL);
    _exit(8); /* unreachable: the writers never stop */
}

typedef struct ev_check {
    uint64_t expect;
    size_t n;
    int gaps;
} ev_check;

static int
ev_cb(void *arg, uint64_t seq, aps_time at, const void *data, size_t len)
{
    ev_check *c = arg;

    (void)at;
    (void)data;
    (void)len;
    if (seq != c->expect)
        c->gaps++;
    c->expect = seq + 1;
    c->n++;
    return 0;
}

/* Checks the store against every acknowledgement so far. */
static size_t
verify(aps_store *s)
{
    unsigned char want[512];
    char rec[REC_SIZE];
    size_t acked = 0, jobs = 0;
    ev_check ec = {1, 0, 0};
    uint64_t first, last;
    ssize_t got;
    int fd;

    fd = open(g_acks, O_RDONLY);
    if (fd < 0) {
        assert_int_equal(errno, ENOENT); /* killed before any ack */
        return 0;
    }
    while ((got = read(fd, rec, sizeof rec)) == (ssize_t)sizeof rec) {
        void *data = NULL;
        size_t len = 0, wlen;
        aps_time nr;
        int rc;

        rec[sizeof rec - 1] = '\0';
        wlen = job_record(rec, want, sizeof want);
        rc = aps__store_job_get(s, rec, &data, &len, &nr);
        if (rc)
            fprintf(stderr, "acknowledged job %s: %d\n", rec, rc);
        assert_int_equal(rc, 0);
        assert_int_equal(len, wlen);
        assert_memory_equal(data, want, len);
        assert_true(nr == job_next(rec));
        free(data);
        acked++;
    }
    /* A torn ack record could only come from a write(2) cut short. */
    assert_int_equal(got, 0);
    close(fd);

    assert_int_equal(aps__store_count(s, &jobs), 0);
    assert_true(jobs >= acked); /* committed but not yet acked is fine */
    assert_int_equal(aps__store_events(s, 0, 0, ev_cb, &ec), 0);
    assert_int_equal(ec.gaps, 0);
    assert_int_equal(ec.n, jobs);
    assert_int_equal(aps__store_event_bounds(s, &first, &last), 0);
    assert_true(last == jobs);
    assert_true(first == (jobs ? 1 : 0));
    return acked;
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
test_crash_rounds(void **state)
{
    const char *base = getenv("TEST_TMPDIR");
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    size_t acked = 0;
    /* Under valgrind (tools/valgrind) the child runs ~30 times slower: it
     * gets longer before the kill, or it would never acknowledge a write. */
    const char *pre = getenv("LD_PRELOAD");
    int slow = pre != NULL && strstr(pre, "vgpreload") != NULL ? 10 : 1;

    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/crashXXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_acks, sizeof g_acks, "%s.acks", g_dir);
    fprintf(stderr, "crash test: seed %u, dir %s\n", seed, g_dir);
    srand(seed);

    for (int round = 0; round < ROUNDS; round++) {
        int delay_ms = (20 + rand() % 281) * slow, status;
        struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
        aps_store *s = NULL;
        aps_error err = {0, ""};
        size_t before = acked;
        pid_t pid;

        /* The parent holds no store (and no thread) across the fork. */
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child_main(round);
        nanosleep(&ts, NULL);
        assert_int_equal(kill(pid, SIGKILL), 0);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status))
            fprintf(stderr, "round %d: child exited with %d\n", round, WEXITSTATUS(status));
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        /* The dead child's lock is gone: the store opens at once. */
        if (aps__store_open_lmdb(g_dir, NULL, &s, &err))
            fprintf(stderr, "round %d: reopen: %s\n", round, err.msg);
        assert_non_null(s);
        acked = verify(s);
        aps__store_close(s);
        fprintf(stderr, "round %2d: killed after %3d ms, %5zu acked (+%zu)\n", round, delay_ms,
                acked, acked - before);
    }
    assert_true(acked > 0);
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    remove(g_acks);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_rounds),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
