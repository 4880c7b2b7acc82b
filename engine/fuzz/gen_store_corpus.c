/*
 * Writes the seed corpus of store_fuzz.c: LMDB stores the engine wrote,
 * dumped in the fuzzer's input format (see store_fuzz.c), and a few
 * damaged ones. Run once after a format change:
 *   cc -std=c11 -D_GNU_SOURCE -Iengine/include -iquote engine/src \
 *     engine/fuzz/gen_store_corpus.c engine/src/\*.c -lcrypto -llmdb -lm \
 *     -lpthread -o /tmp/gen && /tmp/gen engine/fuzz/corpus/store
 * Stores:
 *   crashed  jobs of each kind, fired runs, a run started by run_now, a
 *            request id, the scheduler paused; the writer exits without
 *            shutting down (a crash): run/ entries and running lists stay
 *   clean    the same, then a clean shutdown
 *   and damaged copies of `crashed`: job values cut short, a due entry
 *   naming no job, an event cut short, a bad schema version, no schema.
 */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apsd/engine.h"

#define SEC INT64_C(1000000)
#define NOW_US INT64_C(2114380800000000) /* store_fuzz.c's clock */

static const char *outdir;

static aps_time
fixed_now(void *ctx)
{
    (void)ctx;
    return NOW_US;
}

static void
check(int rc, const char *what, const aps_error *err)
{
    if (rc != 0) {
        fprintf(stderr, "gen_store_corpus: %s: %s\n", what,
                err && err->msg[0] ? err->msg : aps_strerror(rc));
        exit(1);
    }
}

static aps_trigger_spec
trig(aps_trigger_kind k)
{
    aps_trigger_spec t;

    memset(&t, 0, sizeof t);
    t.kind = k;
    t.u.cron.start_date = t.u.cron.end_date = APS_TIME_NONE;
    if (k == APS_TRIGGER_INTERVAL)
        t.u.interval.start_date = t.u.interval.end_date = APS_TIME_NONE;
    if (k == APS_TRIGGER_DATE)
        t.u.date.run_date = APS_TIME_NONE;
    if (k == APS_TRIGGER_CALENDAR_INTERVAL)
        t.u.calendar_interval.start_date = t.u.calendar_interval.end_date = APS_TIME_NONE;
    return t;
}

/* The scheduler's work, in a child; `crash`: exit without shutting down. */
static void
populate(const char *dir, int crash)
{
    static const aps_executor_def execs[] = {
        {.name = "default", .type = "workers", .max_workers = 2},
        {.name = "workers", .type = "workers", .max_workers = 2},
    };
    aps_store_def store = {"default", "lmdb", dir};
    aps_clock clk = {fixed_now, NULL};
    aps_scheduler_config cfg;
    aps_scheduler *s = NULL;
    aps_error err = {0};
    char *argv[] = {"/bin/echo", "hi"};
    aps_label labels[] = {{"env", "prod"}};
    aps_mutation m = {.request_id = "req-1"};
    char run_id[33];

    memset(&cfg, 0, sizeof cfg);
    cfg.stores = &store;
    cfg.n_stores = 1;
    cfg.executors = execs;
    cfg.n_executors = 2;
    cfg.clock = &clk;
    cfg.jitter_seed = 1;
    cfg.no_sync = 1;
    check(aps_scheduler_create(&cfg, &s, &err), "create", &err);
    check(aps_scheduler_start(s, APS_RUN_EXTERNAL), "start", NULL);

    aps_trigger_spec cron = trig(APS_TRIGGER_CRON);
    cron.u.cron.minute = "*/5";
    cron.u.cron.timezone = "Europe/Dublin";
    aps_job_spec a = {.id = "a", .next_run_time = APS_TIME_NONE, .coalesce = -1,
                      .name = "cron job", .trigger = &cron,
                      .target = {.kind = APS_TARGET_COMMAND,
                                 .u.command = {.argv = argv, .argc = 2}},
                      .executor = "default", .labels = labels, .n_labels = 1,
                      .max_instances = 2};
    check(aps_job_add(s, &a, &m, NULL, &err), "add a", &err);

    aps_trigger_spec iv = trig(APS_TRIGGER_INTERVAL);
    iv.u.interval.seconds = 60;
    iv.u.interval.start_date = NOW_US - 150 * SEC;
    aps_job_spec r = {.id = "r", .next_run_time = APS_TIME_NONE, .coalesce = -1,
                      .trigger = &iv,
                      .target = {.kind = APS_TARGET_REMOTE,
                                 .u.remote = {.task = "app.add", .args_json = "[1,2]",
                                              .kwargs_json = "{\"k\":true}", .queue = "q"}},
                      .executor = "workers", .max_instances = 3,
                      .overlap = APS_OVERLAP_QUEUE_ALL};
    check(aps_job_add(s, &r, NULL, NULL, &err), "add r", &err);

    aps_trigger_spec dt = trig(APS_TRIGGER_DATE);
    dt.u.date.run_date = NOW_US - 10 * SEC;
    aps_job_spec d = {.id = "d", .next_run_time = APS_TIME_NONE, .coalesce = -1,
                      .trigger = &dt,
                      .target = {.kind = APS_TARGET_REMOTE, .u.remote = {.task = "once"}},
                      .executor = "workers"};
    check(aps_job_add(s, &d, NULL, NULL, &err), "add d", &err);

    aps_trigger_spec cal = trig(APS_TRIGGER_CALENDAR_INTERVAL);
    cal.u.calendar_interval.months = 1;
    cal.u.calendar_interval.hour = 3;
    aps_job_spec c = {.id = "c", .next_run_time = APS_TIME_NONE, .coalesce = -1,
                      .trigger = &cal,
                      .target = {.kind = APS_TARGET_REMOTE, .u.remote = {.task = "monthly"}},
                      .executor = "workers"};
    check(aps_job_add(s, &c, NULL, NULL, &err), "add c", &err);
    check(aps_job_pause(s, "c", NULL, NULL), "pause c", NULL);

    check(aps_scheduler_process(s, NULL), "process", NULL);
    aps_mutation rn = {.request_id = "rn"};
    check(aps_job_run_now(s, "r", &rn, run_id, NULL, &err), "run_now", &err);
    check(aps_job_run_now(s, "a", NULL, run_id, NULL, &err), "run_now a", &err);
    check(aps_scheduler_process(s, NULL), "process", NULL);
    check(aps_scheduler_pause(s), "pause", NULL);
    if (crash)
        _exit(0);
    aps_scheduler_destroy(s);
    exit(0);
}

static void
make_store(const char *dir, int crash)
{
    pid_t pid = fork();
    int st;

    if (pid < 0)
        exit(1);
    if (pid == 0)
        populate(dir, crash);
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        exit(1);
}

/* Damage applied while dumping. */
enum { NONE, CUT_JOBS, CUT_EVENT, BAD_SCHEMA, NO_SCHEMA };

static void
put_entry(FILE *f, int db, const void *k, size_t klen, const void *v, size_t vlen)
{
    unsigned char h[4] = {(unsigned char)db, (unsigned char)klen, (unsigned char)(vlen >> 8),
                          (unsigned char)vlen};
    if (klen > 255 || vlen > 65535)
        return;
    fwrite(h, 1, 4, f);
    fwrite(k, 1, klen, f);
    fwrite(v, 1, vlen, f);
}

static void
dump(const char *dir, const char *name, unsigned flags, int damage, int orphan)
{
    static const char *const names[] = {"jobs", "due", "events", "meta"};
    char path[4096];
    MDB_env *env;
    MDB_txn *txn;
    FILE *f;
    int cut_event = damage == CUT_EVENT;

    snprintf(path, sizeof path, "%s/%s", outdir, name);
    f = fopen(path, "wb");
    if (f == NULL || mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
        mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) {
        perror(path);
        exit(1);
    }
    fputc((int)flags, f);
    for (int db = 0; db < 4; db++) {
        MDB_dbi dbi;
        MDB_cursor *cur;
        MDB_val k, v;
        if (mdb_dbi_open(txn, names[db], 0, &dbi) || mdb_cursor_open(txn, dbi, &cur))
            exit(1);
        for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            size_t vlen = v.mv_size;
            if (db == 0 && damage == CUT_JOBS)
                vlen /= 2;
            if (db == 2 && cut_event) {
                vlen = vlen > 20 ? 20 : vlen;
                cut_event = 0;
            }
            if (db == 3 && k.mv_size == 12 && memcmp(k.mv_data, "store/schema", 12) == 0) {
                if (damage == BAD_SCHEMA)
                    put_entry(f, db, k.mv_data, k.mv_size, "\0\0\0\x09", 4);
                if (damage == BAD_SCHEMA || damage == NO_SCHEMA)
                    continue;
            }
            put_entry(f, db, k.mv_data, k.mv_size, v.mv_data, vlen);
        }
        mdb_cursor_close(cur);
    }
    if (orphan) /* a due entry whose job is gone */
        put_entry(f, 1, "\x80\x06\x54\x4c\x1b\x0d\x00\x00zz", 10, "", 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    if (fclose(f) != 0)
        exit(1);
}

static void
rm_store(const char *dir)
{
    char p[4096];
    const char *files[] = {"data.mdb", "lock.mdb", "apsd.lock"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

int
main(int argc, char **argv)
{
    char crashed[] = "/tmp/gen-store-XXXXXX", clean[] = "/tmp/gen-store-XXXXXX";
    FILE *f;
    char path[4096];

    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    mkdir(outdir, 0755);
    if (mkdtemp(crashed) == NULL || mkdtemp(clean) == NULL)
        return 1;
    make_store(crashed, 1);
    make_store(clean, 0);
    dump(crashed, "crashed", 0, NONE, 0);
    dump(clean, "clean", 0, NONE, 0);
    dump(crashed, "damaged-cut-jobs", 0, CUT_JOBS, 0);
    dump(crashed, "damaged-cut-event", 0, CUT_EVENT, 0);
    dump(crashed, "damaged-orphan-due", 0, NONE, 1);
    dump(crashed, "damaged-schema-9", 1, BAD_SCHEMA, 0);
    dump(crashed, "damaged-no-schema", 1, NO_SCHEMA, 0);
    snprintf(path, sizeof path, "%s/empty", outdir);
    f = fopen(path, "wb");
    if (f == NULL || fputc(0, f) == EOF || fclose(f) != 0)
        return 1;
    rm_store(crashed);
    rm_store(clean);
    return 0;
}
