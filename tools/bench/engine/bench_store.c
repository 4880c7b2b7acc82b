/*
 * bench_store: durable job writes per second through the LMDB job store,
 * one ~300-byte job per aps__store_write call, with 1, 16 and 64 writer
 * threads (~3 s each) on a fresh store in a temporary directory.
 *
 *   bazel run -c opt //tools/bench/engine:bench_store -- [seconds] [dir]
 *       [threads...]
 *
 * One durable commit costs ~0.5 ms on the reference machine, so one writer
 * is capped near 2k writes/s; group commit lets many writers share each
 * commit. Reference: APScheduler 3.9.1 with SQLAlchemy + SQLite, 460
 * durable adds/s (DESIGN.md).
 *
 * Two id patterns, because a copy-on-write B-tree writes whole 4 KiB pages:
 * - scattered: each writer has its own id range (like client-chosen ids or
 *   random UUIDs), so a batch of N jobs dirties ~N leaves in `jobs` and
 *   ~N in `due`: ~8 KiB written per 300-byte job;
 * - ordered: ids increase with time (like generated time-ordered ids), so a
 *   batch appends to a few leaves.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define RECORD_LEN 300
#define APSCHEDULER_DURABLE_ADDS 460.0

typedef struct bench {
    aps_store *s;
    atomic_int stop;
    int run;
    int ordered;           /* id pattern, see the top comment */
    atomic_ulong next_seq; /* ordered ids */
} bench;

typedef struct worker {
    bench *b;
    int id;
    unsigned long writes;
    int errors;
} worker;

typedef struct put_arg {
    const char *id;
    const unsigned char *rec;
} put_arg;

static int
put_fn(aps_txn *t, void *a)
{
    put_arg *p = a;

    return aps__txn_job_put(t, p->id, p->rec, RECORD_LEN, 1700000000000000);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *
worker_main(void *arg)
{
    worker *w = arg;
    unsigned char rec[RECORD_LEN];
    char id[64];

    for (size_t i = 0; i < sizeof rec; i++)
        rec[i] = (unsigned char)(i * 7 + (size_t)w->id);
    while (!atomic_load(&w->b->stop)) {
        put_arg p = {id, rec};

        if (w->b->ordered)
            snprintf(id, sizeof id, "run%d-%012lu-w%03d", w->b->run,
                     atomic_fetch_add(&w->b->next_seq, 1), w->id);
        else
            snprintf(id, sizeof id, "run%d-w%03d-%012lu", w->b->run, w->id, w->writes);
        if (aps__store_write(w->b->s, put_fn, &p))
            w->errors++;
        else
            w->writes++;
    }
    return NULL;
}

/* The disk's current cost of one small durable write (4 KiB overwrite +
 * fdatasync), in ms: the machine's disk is shared, and its latency varies
 * tenfold, so every figure is printed beside it. An LMDB commit makes two
 * such syncs (data pages, then the meta page). */
static double
sync_ms(const char *dir)
{
    char path[PATH_MAX + 16], buf[4096];
    double t0, el;
    int fd, n = 50;

    snprintf(path, sizeof path, "%s/calibrate", dir);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    memset(buf, 1, sizeof buf);
    if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf || fsync(fd)) {
        close(fd);
        return -1;
    }
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        buf[0] = (char)i;
        if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf || fdatasync(fd))
            break;
    }
    el = now_s() - t0;
    close(fd);
    unlink(path);
    return el / n * 1e3;
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

int
main(int argc, char **argv)
{
    static const int default_threads[] = {1, 16, 64};
    int threads[16];
    size_t nthreads = 0;
    double seconds = argc > 1 ? atof(argv[1]) : 3.0;
    const char *base = argc > 2 ? argv[2] : NULL;
    char dir[PATH_MAX];
    aps_store_config cfg;
    int rc = 0;

    /* APS_BENCH_NO_SYNC=1 measures the CPU side alone (no fsync). */
    memset(&cfg, 0, sizeof cfg);
    cfg.no_sync = getenv("APS_BENCH_NO_SYNC") != NULL;

    if (!base)
        base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (seconds <= 0)
        seconds = 3.0;
    for (int i = 3; i < argc && nthreads < 16; i++)
        if (atoi(argv[i]) > 0)
            threads[nthreads++] = atoi(argv[i]);
    if (!nthreads)
        for (; nthreads < 3; nthreads++)
            threads[nthreads] = default_threads[nthreads];
    snprintf(dir, sizeof dir, "%s/bench_storeXXXXXX", base);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    printf("%s job writes, %d-byte records, one job per write, %.1f s "
           "each, store in %s\n\n",
           cfg.no_sync ? "NON-durable (no_sync)" : "durable", RECORD_LEN, seconds, dir);
    printf("%10s %8s %10s %10s %11s %11s %11s %10s\n", "ids", "threads", "writes", "writes/s",
           "commits/s", "per commit", "x APSched", "sync ms");
    for (size_t k = 0; k < 2 * nthreads; k++) {
        int n = threads[k % nthreads], ordered = k >= nthreads;
        worker *w = calloc((size_t)n, sizeof *w);
        pthread_t *th = calloc((size_t)n, sizeof *th);
        aps_store_stats before, after;
        aps_error err = {0, ""};
        unsigned long total = 0;
        int errors = 0;
        bench b;
        double t0, t1, sync_before;

        if (!w || !th) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        memset(&b, 0, sizeof b);
        b.run = (int)k;
        b.ordered = ordered;
        atomic_init(&b.next_seq, 0);
        atomic_init(&b.stop, 0);
        if (aps__store_open_lmdb(dir, &cfg, &b.s, &err)) {
            fprintf(stderr, "open: %s\n", err.msg);
            return 1;
        }
        aps__store_stats(b.s, &before);
        sync_before = sync_ms(dir);
        t0 = now_s();
        for (int i = 0; i < n; i++) {
            w[i] = (worker){&b, i, 0, 0};
            pthread_create(&th[i], NULL, worker_main, &w[i]);
        }
        while (now_s() - t0 < seconds)
            usleep(10000);
        atomic_store(&b.stop, 1);
        for (int i = 0; i < n; i++) {
            pthread_join(th[i], NULL);
            total += w[i].writes;
            errors += w[i].errors;
        }
        t1 = now_s();
        aps__store_stats(b.s, &after);
        aps__store_close(b.s);
        {
            double el = t1 - t0;
            double commits = (double)(after.commits - before.commits);
            double wps = (double)total / el;

            /* disk latency: mean of before and after the run */
            double sync = (sync_before + sync_ms(dir)) / 2;

            printf("%10s %8d %10lu %10.0f %11.0f %11.1f %10.1fx %10.2f\n",
                   ordered ? "ordered" : "scattered", n, total, wps, commits / el,
                   commits > 0 ? (double)total / commits : 0.0, wps / APSCHEDULER_DURABLE_ADDS,
                   sync);
        }
        if (errors) {
            fprintf(stderr, "%d writes failed\n", errors);
            rc = 1;
        }
        free(w);
        free(th);
    }
    printf("\nsync ms: one 4 KiB overwrite + fdatasync on the same disk, "
           "around each run;\nan LMDB commit costs about two of them plus "
           "its page writes.\n");
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
