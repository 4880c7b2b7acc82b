/*
 * A full disk under an LMDB store, in a small tmpfs mounted in a mount
 * namespace of a child process (root only; skipped where it cannot mount):
 * - the store's disk reserve: the write that finds the disk full gives the
 *   reserve back and succeeds; the store reports low space until twice the
 *   reserve is free again (a reopen in between too), then makes the
 *   reserve anew; a store opened without room for it works without, and
 *   makes it once there is room;
 * - the scheduler on it: jobs go on firing, on time, through a full disk,
 *   new jobs and backfills are refused with APS_ENOSPC and a message that
 *   says why, stored jobs can be removed, and once space is freed adds
 *   work again; everything acknowledged is there after a reopen;
 * - without a reserve, as a check of what it is for: a run cannot be
 *   committed on the full disk, so the job does not fire until space is
 *   freed.
 * The children report by exit code (cmocka's checks stay in the parent).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "apsd/engine.h"
#include "scheduler.h"
#include "store.h"
#include "testutil.h"

#define SEC INT64_C(1000000)
#define T0 TU_T0
#define SKIP_EXIT 77

/* Fails the child with exit code `code` and a line on stderr. */
#define CHECK(cond, code)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            return (code);                                                                         \
        }                                                                                          \
    } while (0)

/* Mounts a tmpfs of `size` (e.g. "8m") on `dir` (made if need be), seen by
 * this process only. 0, SKIP_EXIT without the right to, or another exit
 * code. */
static int
mount_small_disk(const char *dir, const char *size)
{
    char opts[64];

    snprintf(opts, sizeof opts, "size=%s,mode=0700", size);
    if (mkdir(dir, 0700) && errno != EEXIST)
        return 90;
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        mount("tmpfs", dir, "tmpfs", 0, opts)) {
        fprintf(stderr, "mount a tmpfs on %s: %s\n", dir, strerror(errno));
        return errno == EPERM ? SKIP_EXIT : 91;
    }
    return 0;
}

/* Writes `path` until the disk is full. 0, or -1 if it never filled. */
static int
fill_disk(const char *path)
{
    static char buf[16384];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    memset(buf, 0x5A, sizeof buf);
    for (int i = 0; i < 1 << 20; i++) {
        ssize_t n = write(fd, buf, sizeof buf);
        if (n < (ssize_t)sizeof buf) {
            close(fd);
            return n < 0 && errno != ENOSPC ? -1 : 0;
        }
    }
    close(fd);
    return -1;
}

/* Size of the file at `path`: its allocated bytes; -1 if absent. */
static long long
allocated(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_blocks * 512 : -1;
}

static void
run_child(int (*child)(const char *), const char *dir)
{
    int status;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child(dir));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == SKIP_EXIT) {
        fprintf(stderr, "skipped: cannot mount a tmpfs here (needs root)\n");
        skip();
    }
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- the store's reserve ------------------------------------------------------ */

#define RESERVE (512 << 10)

typedef struct put_arg {
    const char *id;
    const char *data;
    size_t len;
} put_arg;

static int
put_fn(aps_txn *t, void *arg)
{
    put_arg *p = arg;
    return aps__txn_job_put(t, p->id, p->data, p->len, APS_TIME_NONE);
}

static int
del_fn(aps_txn *t, void *arg)
{
    return aps__txn_job_del(t, arg);
}

/* store_child's write window (store_lmdb.c): 0, or the test's with one. */
static size_t child_window;

static int
store_child(const char *dir)
{
    aps_store_config cfg = {.initial_map_size = 1 << 20,
                            .no_sync = 1,
                            .reserve_bytes = RESERVE,
                            .write_window = child_window};
    char reserve[PATH_MAX + 16], ballast[PATH_MAX], id[32], buf[8192];
    aps_store *s = NULL;
    aps_store_stats st;
    aps_error err = {0, ""};
    int rc, acked = 0, at_release = -1;

    rc = mount_small_disk(dir, "4m");
    if (rc)
        return rc;
    snprintf(reserve, sizeof reserve, "%s/reserve", dir);
    snprintf(ballast, sizeof ballast, "%s/ballast", dir);
    CHECK(aps__store_open_lmdb(dir, &cfg, &s, &err) == 0, 2);
    CHECK(allocated(reserve) >= RESERVE, 3);
    CHECK(aps__store_space_low(s) == 0, 4);
    memset(buf, 0xAB, sizeof buf);
    for (int r = 0; child_window && r < 6; r++) {
        /* Rewrites under the window: the pages they free are held back. */
        for (int i = 0; i < 8; i++) {
            put_arg p = {id, buf, sizeof buf};
            snprintf(id, sizeof id, "held%d", i);
            CHECK(aps__store_write(s, put_fn, &p) == 0, 40);
        }
    }
    CHECK(fill_disk(ballast) == 0, 5);
    if (child_window) {
        /* The first write on the full disk finds room in the pages the
         * window held back, without the reserve. */
        put_arg p = {"held0", buf, sizeof buf};
        CHECK(aps__store_write(s, put_fn, &p) == 0, 41);
        CHECK(aps__store_stats(s, &st) == 0 && st.reserve_releases == 0, 42);
    }
    /* The write that finds the disk full succeeds in the reserve's space;
     * so do the next ones, until that space is gone too. */
    for (;;) {
        put_arg p = {id, buf, sizeof buf};
        snprintf(id, sizeof id, "fill%05d", acked);
        rc = aps__store_write(s, put_fn, &p);
        if (rc)
            break;
        acked++;
        CHECK(aps__store_stats(s, &st) == 0, 6);
        if (st.reserve_releases == 1 && at_release < 0)
            at_release = acked;
        CHECK(acked < 1000, 7);
    }
    fprintf(stderr, "reserve given back at write %d; disk full after %d\n", at_release, acked);
    CHECK(rc == APS_ENOSPC, 8);
    CHECK(at_release > 0, 9);
    /* With a window, the writes on the full disk went first into the pages
     * it held back (48 rewrites' worth; 72 writes here, 29 when the
     * window's pages were let go without trying them again first). */
    CHECK(!child_window || at_release >= 50, 43);
    CHECK(acked >= at_release + 10, 10); /* 512 KiB held ~60 more 8 KiB writes */
    CHECK(allocated(reserve) == 0, 11);  /* emptied: the mark of a reserve given back */
    CHECK(aps__store_stats(s, &st) == 0 && st.reserve_releases == 1 && st.space_low == 1, 12);
    CHECK(aps__store_space_low(s) == 1, 13);
    /* Reopened before space came back: low on space from the start (not a
     * store without a reserve, which would take new jobs onto the full
     * disk; sched_child shows its jobs firing after such a reopen). */
    aps__store_close(s);
    s = NULL;
    CHECK(aps__store_open_lmdb(dir, &cfg, &s, &err) == 0, 30);
    CHECK(aps__store_space_low(s) == 1, 31);
    CHECK(aps__store_stats(s, &st) == 0 && st.space_low == 1 && st.reserve_releases == 0, 32);
    CHECK(allocated(reserve) == 0, 33);
    /* Space comes back: within a second the store sees it, the reserve is
     * made again, and writes succeed. */
    unlink(ballast);
    for (int i = 0; i < 50; i++) {
        put_arg p = {"fill00000", buf, sizeof buf};
        CHECK(aps__store_write(s, del_fn, (void *)"fill00001") == 0 || i > 0, 14);
        CHECK(aps__store_write(s, put_fn, &p) == 0, 15);
        if (aps__store_space_low(s) == 0)
            break;
        usleep(50 * 1000);
    }
    CHECK(aps__store_space_low(s) == 0, 16);
    CHECK(allocated(reserve) >= RESERVE, 17);
    aps__store_close(s);
    /* Every acknowledged write is there after a reopen (all but the one
     * removed). */
    s = NULL;
    CHECK(aps__store_open_lmdb(dir, &cfg, &s, &err) == 0, 18);
    for (int i = 0; i < acked; i++) {
        void *got = NULL;
        size_t len = 0;
        snprintf(id, sizeof id, "fill%05d", i);
        rc = aps__store_job_get(s, id, &got, &len, NULL);
        CHECK(i == 1 ? rc == APS_ENOENT : rc == 0 && len == sizeof buf, 19);
        free(got);
    }
    aps__store_close(s);
    /* With no reserve configured, the mark of one given back means
     * nothing: not low on space, and the file goes. */
    s = NULL;
    CHECK(truncate(reserve, 0) == 0, 20);
    cfg.reserve_bytes = 0;
    CHECK(aps__store_open_lmdb(dir, &cfg, &s, &err) == 0, 21);
    CHECK(aps__store_space_low(s) == 0, 22);
    CHECK(aps__store_stats(s, &st) == 0 && st.space_low == 0, 23);
    CHECK(allocated(reserve) < 0, 24);
    aps__store_close(s);
    return 0;
}

static void
test_store_reserve(void **state)
{
    (void)state;
    run_child(store_child, tu_tmpdir("disk_full_store"));
}

/* The same with a write window: the pages it holds back are let go when
 * the disk fills and the write tried again in them before the reserve is
 * given back; none is held while the reserve is out, so the reserve's
 * space takes as many writes. */
static void
test_store_reserve_with_window(void **state)
{
    (void)state;
    child_window = (size_t)1 << 20;
    run_child(store_child, tu_tmpdir("disk_full_window"));
    child_window = 0;
}

/* No room for the reserve at open: the store works without it (a full disk
 * fails writes, nothing is given back), and makes it once there is room. */
static int
missing_child(const char *dir)
{
    aps_store_config cfg = {.initial_map_size = 1 << 20, .no_sync = 1, .reserve_bytes = 3 << 20};
    char reserve[PATH_MAX + 16];
    aps_store *s = NULL;
    aps_store_stats st;
    aps_error err = {0, ""};
    int rc = mount_small_disk(dir, "4m");

    if (rc)
        return rc;
    snprintf(reserve, sizeof reserve, "%s/reserve", dir);
    CHECK(aps__store_open_lmdb(dir, &cfg, &s, &err) == 0, 2);
    CHECK(allocated(reserve) < 0, 3);
    CHECK(aps__store_space_low(s) == 0, 4);
    put_arg p = {"a", "x", 1};
    CHECK(aps__store_write(s, put_fn, &p) == 0, 5);
    CHECK(aps__store_stats(s, &st) == 0 && st.reserve_releases == 0 && st.space_low == 0, 6);
    /* The disk grows (a bigger tmpfs): within a second the reserve is made. */
    CHECK(mount(NULL, dir, NULL, MS_REMOUNT, "size=16m,mode=0700") == 0, 7);
    for (int i = 0; i < 40 && allocated(reserve) < 0; i++) {
        CHECK(aps__store_space_low(s) == 0, 8);
        usleep(50 * 1000);
    }
    CHECK(allocated(reserve) >= 3 << 20, 9);
    aps__store_close(s);
    return 0;
}

static void
test_store_reserve_made_when_room(void **state)
{
    (void)state;
    run_child(missing_child, tu_tmpdir("disk_full_missing"));
}

/* ---- the scheduler on a full disk -------------------------------------------- */

#define JOBS 100

/* Runs of the "count" function (tu_count_fn). */
static int n_calls;

static size_t
calls(void)
{
    return (size_t)__atomic_load_n(&n_calls, __ATOMIC_SEQ_CST);
}

static aps_scheduler *
open_sched(const char *dir, int64_t reserve)
{
    aps_store_def store = {"default", "lmdb", dir};
    aps_executor_def exec = {
        .name = "default", .type = "threadpool", .max_workers = 4, .max_queue = 10000};
    aps_scheduler_config cfg;
    aps_error err = {0, ""};
    aps_scheduler *s = NULL;

    memset(&cfg, 0, sizeof cfg);
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.executors = &exec;
    cfg.n_executors = 1;
    cfg.clock = &tu_clock;
    cfg.no_sync = 1; /* a tmpfs: nothing to sync */
    /* Bounded, so that a store that fires jobs stops growing (the reserve
     * holds the log up to this). */
    cfg.event_max_count = 1000;
    cfg.disk_reserve_bytes = reserve;
    if (aps_scheduler_create(&cfg, &s, &err) != 0) {
        fprintf(stderr, "create: %s\n", err.msg);
        return NULL;
    }
    if (aps_scheduler_register_function(s, "count", tu_count_fn, &n_calls) != 0 ||
        aps_scheduler_start(s, APS_RUN_EXTERNAL) != 0) {
        aps_scheduler_destroy(s);
        return NULL;
    }
    return s;
}

static int
add_job(aps_scheduler *s, const char *id, const aps_trigger_spec *t, aps_error *err)
{
    aps_job_spec j = tu_function_job(id, t, "count", NULL);
    return aps_job_add(s, &j, NULL, NULL, err);
}

static aps_trigger_spec
every_second(void)
{
    aps_trigger_spec t;
    memset(&t, 0, sizeof t);
    t.kind = APS_TRIGGER_INTERVAL;
    t.u.interval.seconds = 1;
    t.u.interval.start_date = T0 + SEC;
    t.u.interval.end_date = APS_TIME_NONE;
    return t;
}

/* Moves the clock to second `sec` after T0 and runs the loop until `want`
 * calls were made and every run was recorded (none running or queued),
 * for at most `wait_ms`. 1 if they were. */
static int
fire_second(aps_scheduler *s, int sec, size_t want, int wait_ms)
{
    tu_clock_set(T0 + sec * SEC);
    for (int i = 0; i < wait_ms; i++) {
        aps_executor_info info;
        if (aps_scheduler_process(s, NULL) != 0 || aps_scheduler_executor_info(s, 0, &info) != 0)
            return 0;
        if (calls() >= want && info.running == 0 && info.pending == 0 && s->n_running == 0)
            return 1;
        usleep(1000);
    }
    return 0;
}

static int
low_space(aps_scheduler *s)
{
    aps_store_info info;
    return aps_scheduler_store_info(s, 0, &info) == 0 ? info.low_space : -1;
}

/* An 8 MB disk for a scheduler: its store, another file, the reserve. */
typedef struct small_disk {
    char store[PATH_MAX];
    char ballast[PATH_MAX];
    char reserve[PATH_MAX + 16];
} small_disk;

/* Mounts an 8 MB tmpfs on `dir` and opens a scheduler with its store there
 * (a `reserve` of that many bytes, or none: -1), with JOBS jobs firing
 * every second from T0 + 1 s. 0, or an exit code. */
static int
open_small_disk(const char *dir, int64_t reserve, small_disk *d, aps_scheduler **out)
{
    aps_error err = {0, ""};
    char id[32];
    int rc = mount_small_disk(dir, "8m");

    if (rc)
        return rc;
    snprintf(d->store, sizeof d->store, "%s/store", dir);
    snprintf(d->ballast, sizeof d->ballast, "%s/ballast", dir);
    snprintf(d->reserve, sizeof d->reserve, "%s/reserve", d->store);
    tu_clock_set(T0);
    aps_scheduler *s = open_sched(d->store, reserve);
    CHECK(s != NULL, 2);
    *out = s;
    CHECK(reserve > 0 ? allocated(d->reserve) >= reserve : allocated(d->reserve) < 0, 3);
    aps_trigger_spec t = every_second();
    for (int i = 0; i < JOBS; i++) {
        snprintf(id, sizeof id, "j%d", i);
        CHECK(add_job(s, id, &t, &err) == 0, 4);
    }
    return 0;
}

static int
sched_child(const char *dir)
{
    aps_error err = {0, ""};
    aps_store_stats st;
    aps_scheduler *s = NULL;
    aps_job *j = NULL;
    small_disk d;
    int rc = open_small_disk(dir, 1 << 20, &d, &s);

    if (rc)
        return rc;
    aps_trigger_spec t = every_second();
    aps_trigger_spec later = tu_date(T0 + 86400 * SEC);
    CHECK(add_job(s, "victim", &later, &err) == 0, 5);
    CHECK(low_space(s) == 0, 6);

    CHECK(fill_disk(d.ballast) == 0, 7);
    /* Every second's runs fire: those whose commit finds the disk full use
     * the reserve's space, and the bounded event log then keeps the store
     * from growing out of it. */
    int sec;
    for (sec = 1; sec <= 40; sec++) {
        if (!fire_second(s, sec, (size_t)sec * JOBS, 10000)) {
            fprintf(stderr, "second %d: %zu calls of %d\n", sec, calls(), sec * JOBS);
            return 8;
        }
    }
    CHECK(aps__store_stats(s->stores[0].st, &st) == 0, 9);
    fprintf(stderr, "reserve releases %llu, low space %d\n",
            (unsigned long long)st.reserve_releases, low_space(s));
    CHECK(st.reserve_releases == 1, 10);
    CHECK(low_space(s) == 1, 11);
    CHECK(allocated(d.reserve) == 0, 12); /* emptied: the mark of it given back */

    /* New jobs and backfills are refused, and say why; removes and the
     * other changes of stored jobs work. */
    rc = add_job(s, "new", &t, &err);
    fprintf(stderr, "add: %s\n", err.msg);
    CHECK(rc == APS_ENOSPC, 13);
    CHECK(strstr(err.msg, "no space left on its disk") != NULL &&
              strstr(err.msg, "until 2 MiB") != NULL,
          14);
    rc = aps_job_backfill(s, "j0", T0 - 10 * SEC, T0, 0, NULL, NULL, &err);
    CHECK(rc == APS_ENOSPC && strstr(err.msg, "no space left on its disk") != NULL, 15);
    CHECK(aps_job_remove(s, "victim", NULL) == 0, 16);
    CHECK(aps_job_pause(s, "j1", NULL, NULL) == 0, 17);
    CHECK(aps_job_resume(s, "j1", NULL, NULL) == 0, 18);
    size_t done = calls();
    CHECK(fire_second(s, sec, done + JOBS, 10000), 19);
    sec++;

    /* Restarted before space came back: low on space at once, new jobs
     * refused, and the jobs go on firing. */
    aps_scheduler_destroy(s);
    s = open_sched(d.store, 1 << 20);
    CHECK(s != NULL, 40);
    CHECK(low_space(s) == 1, 41);
    CHECK(add_job(s, "new", &t, &err) == APS_ENOSPC, 42);
    for (int k = 0; k < 3; k++, sec++)
        CHECK(fire_second(s, sec, calls() + JOBS, 10000), 43);
    CHECK(low_space(s) == 1, 44);

    /* Space is freed: within a second the store makes its reserve again
     * and new jobs are taken. */
    unlink(d.ballast);
    for (int i = 0; i < 40 && low_space(s) != 0; i++)
        usleep(50 * 1000);
    CHECK(low_space(s) == 0, 20);
    CHECK(allocated(d.reserve) >= 1 << 20, 21);
    CHECK(add_job(s, "new", &t, &err) == 0, 22);
    aps_scheduler_destroy(s);

    /* What was acknowledged is there after a reopen. */
    s = open_sched(d.store, 1 << 20);
    CHECK(s != NULL, 23);
    CHECK(aps_job_get(s, "new", &j) == 0, 24);
    aps_job_free(j);
    CHECK(aps_job_get(s, "victim", &j) == APS_ENOENT, 25);
    CHECK(aps_job_get(s, "j99", &j) == 0, 26);
    CHECK(j->stats.runs == (uint64_t)sec - 1, 27);
    aps_job_free(j);
    aps_scheduler_destroy(s);
    return 0;
}

static void
test_jobs_fire_on_full_disk(void **state)
{
    (void)state;
    run_child(sched_child, tu_tmpdir("disk_full_sched"));
}

/* The same without a reserve: the run cannot be committed, the job does not
 * fire while the disk is full, and does once space is freed. */
static int
no_reserve_child(const char *dir)
{
    aps_scheduler *s = NULL;
    small_disk d;
    int rc = open_small_disk(dir, -1, &d, &s);

    if (rc)
        return rc;
    CHECK(fill_disk(d.ballast) == 0, 5);
    int stuck = 0;
    for (int sec = 1; sec <= 40 && !stuck; sec++)
        stuck = !fire_second(s, sec, (size_t)sec * JOBS, 300);
    fprintf(stderr, "stuck: %d, %zu calls\n", stuck, calls());
    CHECK(stuck, 6);
    CHECK(low_space(s) == 0, 7); /* no reserve: nothing to report */
    size_t before = calls();
    unlink(d.ballast);
    int fired = 0;
    for (int i = 0; i < 5000 && !fired; i++) {
        CHECK(aps_scheduler_process(s, NULL) == 0, 8);
        fired = calls() > before;
        usleep(1000);
    }
    CHECK(fired, 9);
    aps_scheduler_destroy(s);
    return 0;
}

static void
test_without_reserve_jobs_stop(void **state)
{
    (void)state;
    run_child(no_reserve_child, tu_tmpdir("disk_full_none"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_reserve),
        cmocka_unit_test(test_store_reserve_with_window),
        cmocka_unit_test(test_store_reserve_made_when_room),
        cmocka_unit_test(test_jobs_fire_on_full_disk),
        cmocka_unit_test(test_without_reserve_jobs_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
