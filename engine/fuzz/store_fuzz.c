/*
 * libFuzzer target for what the engine reads back from an LMDB job store:
 * the values of every database (store_lmdb.c's layout: jobs, due, events,
 * meta), decoded by store_lmdb.c (the time prefix of job and event values,
 * the schema version, the event sequence), codec.c (job records, events)
 * and scheduler.c (the run/, req/ and sched/ meta entries). A store is
 * written raw from the input, then opened by a scheduler that starts (its
 * restart recovery reads the run/ entries), makes loop passes (due jobs,
 * request-id pruning), lists, reads, pauses and resumes every job, and
 * reads the whole event log. A corrupted store must be reported (an
 * APS_E* code), never crash, hang or leak.
 *
 * Input: a flags byte, then entries, each
 *   byte     database: 0 jobs, 1 due, 2 events, 3 meta (low 2 bits)
 *   byte     key length (an empty key is skipped: LMDB refuses it)
 *   2 bytes  value length (big-endian)
 *   ...      key, then value (clamped to what is left)
 * Flags: bit 0: no schema version is added (by default meta
 * "store/schema" = 1 is written first, so the store opens unless an entry
 * replaces it).
 *
 * The store lives in a directory of /dev/shm (tmpfs), made once per
 * process and emptied per input (and removed at exit, or by the next run
 * if the process crashed). tools/fuzz builds and runs it; seeds:
 * engine/fuzz/gen_store_corpus.c.
 */
#include <dirent.h>
#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apsd/engine.h"

/* Ahead of the wall clock: the event log prunes by age on the real clock,
 * which would otherwise drop every event at once. */
#define NOW_US INT64_C(2114380800000000) /* 2037-01-01T00:00:00Z */
#define MAX_EVENTS 512
#define MAX_JOBS 256

static char dir[64];

static aps_time
fixed_now(void *ctx)
{
    (void)ctx;
    return NOW_US;
}

static const aps_clock clock_fixed = {fixed_now, NULL};

/* Removes every file of the store directory: the store's own files, and
 * any it makes besides them (its disk reserve). */
static void
empty_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[128];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%.60s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static void
cleanup(void)
{
    empty_dir();
    rmdir(dir);
}

/* Removes the store directories of fuzzer processes that died (a crash
 * exits without atexit handlers). */
static void
remove_stale(void)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    char saved[sizeof dir];
    int pid;

    if (d == NULL)
        return;
    memcpy(saved, dir, sizeof dir);
    while ((e = readdir(d)) != NULL) {
        if (sscanf(e->d_name, "apsd-store-fuzz-%d", &pid) != 1 || pid <= 0 ||
            kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(dir, sizeof dir, "/dev/shm/%.40s", e->d_name);
        cleanup();
    }
    closedir(d);
    memcpy(dir, saved, sizeof dir);
}

/* Writes the entries of the input as they are. */
static void
write_store(const uint8_t *data, size_t size, int schema)
{
    static const char *const names[] = {"jobs", "due", "events", "meta"};
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi[4];

    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
        mdb_env_set_mapsize(env, (size_t)4 << 20) ||
        mdb_env_open(env, dir, MDB_NOSYNC | MDB_NOTLS, 0600) ||
        mdb_txn_begin(env, NULL, 0, &txn))
        abort();
    for (int i = 0; i < 4; i++)
        if (mdb_dbi_open(txn, names[i], MDB_CREATE, &dbi[i]))
            abort();
    if (schema) {
        MDB_val k = {12, (void *)"store/schema"}, v = {4, (void *)"\0\0\0\1"};
        if (mdb_put(txn, dbi[3], &k, &v, 0))
            abort();
    }
    while (size >= 4) {
        size_t db = data[0] & 3, klen = data[1], vlen = (size_t)data[2] << 8 | data[3];
        MDB_val k, v;

        data += 4;
        size -= 4;
        if (klen > size)
            klen = size;
        k.mv_size = klen;
        k.mv_data = (void *)data;
        data += klen;
        size -= klen;
        if (vlen > size)
            vlen = size;
        v.mv_size = vlen;
        v.mv_data = (void *)data;
        data += vlen;
        size -= vlen;
        if (klen > 0)
            (void)mdb_put(txn, dbi[db], &k, &v, 0); /* MDB_MAP_FULL etc.: dropped */
    }
    if (mdb_txn_commit(txn))
        abort();
    mdb_env_close(env);
}

static void
check_rc(int rc)
{
    if (rc > 0)
        abort(); /* the engine's codes are 0 or negative */
}

static void
read_events(aps_scheduler *s)
{
    aps_subscriber *sub = NULL;
    uint64_t first = 0, last = 0;

    check_rc(aps_scheduler_event_bounds(s, &first, &last));
    if (aps_subscribe(s, 0, 0, NULL, &sub) != 0)
        return;
    for (int i = 0; i < MAX_EVENTS; i++) {
        aps_event *ev = NULL;
        uint64_t gap = 0;
        int rc = aps_subscriber_next(sub, 0, &ev, &gap);
        if (rc == APS_ERANGE)
            continue;
        check_rc(rc);
        if (rc != 0)
            break;
        (void)aps_event_type_name(ev->type);
        aps_event_free(ev);
    }
    aps_subscriber_close(sub);
}

static void
visit_jobs(aps_scheduler *s)
{
    aps_job_filter f = {.jobstore = NULL, .paused = -1};
    char *after = NULL;
    size_t seen = 0;

    do {
        aps_job **jobs = NULL;
        size_t n = 0;
        char *next = NULL;
        int rc = aps_job_list(s, &f, after, 16, &jobs, &n, &next);
        free(after);
        after = NULL;
        check_rc(rc);
        if (rc != 0)
            break;
        for (size_t i = 0; i < n; i++) {
            /* Request ids the seeds' stores hold (meta req/...): a retry
             * reads the stored record back. */
            aps_mutation m1 = {.request_id = "req-1"}, m2 = {.request_id = "rn"};
            aps_job *j = NULL;
            char run_id[33];
            if (aps_job_get(s, jobs[i]->id, &j) == 0)
                aps_job_free(j);
            j = NULL;
            check_rc(aps_job_pause(s, jobs[i]->id, &m1, &j));
            aps_job_free(j);
            j = NULL;
            check_rc(aps_job_resume(s, jobs[i]->id, &m2, &j));
            aps_job_free(j);
            check_rc(aps_job_run_now(s, jobs[i]->id, NULL, run_id, NULL, NULL));
        }
        seen += n;
        aps_job_list_free(jobs, n);
        after = next;
    } while (after != NULL && seen < MAX_JOBS);
    free(after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const aps_executor_def execs[] = {
        {.name = "default", .type = "workers", .max_workers = 2},
        {.name = "workers", .type = "workers", .max_workers = 2},
    };
    aps_store_def store = {"default", "lmdb", dir};
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err = {0};
    int rc;

    if (size < 1)
        return 0;
    if (dir[0] == '\0') {
        remove_stale();
        snprintf(dir, sizeof dir, "/dev/shm/apsd-store-fuzz-%d", (int)getpid());
        if (mkdir(dir, 0700) != 0)
            abort();
        atexit(cleanup);
    }
    empty_dir();
    write_store(data + 1, size - 1, !(data[0] & 1));

    memset(&cfg, 0, sizeof cfg);
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.executors = execs;
    cfg.n_executors = 2;
    cfg.clock = &clock_fixed;
    cfg.jitter_seed = 1;
    cfg.no_sync = 1;
    /* Small: the reserve is made anew for every input. */
    cfg.disk_reserve_bytes = 4096;
    rc = aps_scheduler_create(&cfg, &s, &err);
    check_rc(rc);
    if (rc != 0) {
        if (s != NULL || err.msg[0] == '\0')
            abort(); /* refused, and said why */
        return 0;
    }
    rc = aps_scheduler_start(s, APS_RUN_EXTERNAL);
    check_rc(rc);
    if (rc == 0) {
        aps_time next = APS_TIME_NONE;
        for (int i = 0; i < 3; i++)
            check_rc(aps_scheduler_process(s, &next));
    }
    visit_jobs(s);
    if (rc == 0)
        check_rc(aps_scheduler_process(s, NULL));
    read_events(s);
    aps_scheduler_destroy(s);
    return 0;
}
